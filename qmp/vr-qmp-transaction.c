/*
 * vr-qmp-transaction.c: a builder for the QMP transaction command
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-transaction.h"

struct _VrQmpTransaction {
    json_object *actions; /* array of {"type": ..., "data": {...}} */
};

VrQmpTransaction *
vr_qmp_transaction_new(void)
{
    VrQmpTransaction *transaction = g_new0(VrQmpTransaction, 1);

    transaction->actions = json_object_new_array();
    return transaction;
}

void
vr_qmp_transaction_free(VrQmpTransaction *transaction)
{
    if (transaction == NULL)
        return;
    json_object_put(transaction->actions);
    g_free(transaction);
}

void
vr_qmp_transaction_add(VrQmpTransaction *transaction, const char *type, json_object *data)
{
    json_object *action = json_object_new_object();

    json_object_object_add(action, "type", json_object_new_string(type));
    json_object_object_add(action, "data", data);
    json_object_array_add(transaction->actions, action);
}

void
vr_qmp_transaction_add_blockdev_backup(VrQmpTransaction *transaction, const char *job_id,
                                       const char *device, const char *target, const char *sync)
{
    vr_qmp_transaction_add(transaction, "blockdev-backup",
                           vr_qmp_args_blockdev_backup(job_id, device, target, sync));
}

void
vr_qmp_transaction_add_bitmap_add(VrQmpTransaction *transaction, const char *node, const char *name,
                                  bool persistent, bool disabled, uint32_t granularity)
{
    vr_qmp_transaction_add(transaction, "block-dirty-bitmap-add",
                           vr_qmp_args_bitmap_add(node, name, persistent, disabled, granularity));
}

void
vr_qmp_transaction_add_bitmap_remove(VrQmpTransaction *transaction, const char *node,
                                     const char *name)
{
    vr_qmp_transaction_add(transaction, "block-dirty-bitmap-remove",
                           vr_qmp_args_bitmap_remove(node, name));
}

void
vr_qmp_transaction_add_bitmap_merge(VrQmpTransaction *transaction, const char *node,
                                    const char *target, const VrQmpBitmapRef *sources,
                                    guint n_sources)
{
    vr_qmp_transaction_add(transaction, "block-dirty-bitmap-merge",
                           vr_qmp_args_bitmap_merge(node, target, sources, n_sources));
}

guint
vr_qmp_transaction_get_length(VrQmpTransaction *transaction)
{
    return json_object_array_length(transaction->actions);
}

json_object *
vr_qmp_transaction_to_arguments(VrQmpTransaction *transaction)
{
    json_object *args = json_object_new_object();
    json_object *copy = NULL;

    /* A deep copy: the builder stays usable, and the command owns what it sends. */
    json_object_deep_copy(transaction->actions, &copy, NULL);
    json_object_object_add(args, "actions", copy);
    return args;
}

bool
vr_qmp_transaction_execute(VrQmpClient *client, VrQmpTransaction *transaction, GError **error)
{
    g_autoptr(json_object) ret = NULL;

    if (vr_qmp_transaction_get_length(transaction) == 0) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                            "empty QMP transaction");
        return false;
    }
    ret = vr_qmp_client_execute(client, "transaction", vr_qmp_transaction_to_arguments(transaction),
                                error);
    return ret != NULL;
}
