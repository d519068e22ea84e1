/*
 * vr-qmp-transaction.h: a builder for the QMP transaction command
 *
 * QEMU runs the actions of one transaction atomically: when one fails, every action is
 * rolled back. Replication cuts a cycle for all disks of a domain in one transaction
 * (crash-consistent across disks), blockdev-backup first (research/qemu-bitmaps.md §1.3).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include "vr-qmp-block.h"

G_BEGIN_DECLS

typedef struct _VrQmpTransaction VrQmpTransaction;

VrQmpTransaction *vr_qmp_transaction_new(void);
void vr_qmp_transaction_free(VrQmpTransaction *transaction);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpTransaction, vr_qmp_transaction_free)

/* Append an action of @type with @data (transfer full). */
void vr_qmp_transaction_add(VrQmpTransaction *transaction, const char *type, json_object *data);

void vr_qmp_transaction_add_blockdev_backup(VrQmpTransaction *transaction, const char *job_id,
                                            const char *device, const char *target,
                                            const char *sync);
void vr_qmp_transaction_add_bitmap_add(VrQmpTransaction *transaction, const char *node,
                                       const char *name, bool persistent, bool disabled,
                                       uint32_t granularity);
void vr_qmp_transaction_add_bitmap_remove(VrQmpTransaction *transaction, const char *node,
                                          const char *name);
void vr_qmp_transaction_add_bitmap_merge(VrQmpTransaction *transaction, const char *node,
                                         const char *target, const VrQmpBitmapRef *sources,
                                         guint n_sources);

guint vr_qmp_transaction_get_length(VrQmpTransaction *transaction);

/* The arguments of the command: {"actions": [...]}. (transfer full) */
json_object *vr_qmp_transaction_to_arguments(VrQmpTransaction *transaction);

bool vr_qmp_transaction_execute(VrQmpClient *client, VrQmpTransaction *transaction, GError **error);

G_END_DECLS
