/*
 * vr-qmp-error.c: the error domain of the QMP client
 *
 * QEMU's class and desc travel inside the GError as extended error data, so a caller can
 * branch on the class ("DeviceNotFound") without parsing the message.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"

typedef struct {
    char *qemu_class;
    char *desc;
} VrQmpErrorPrivate;

static void
vr_qmp_error_private_init(VrQmpErrorPrivate *priv)
{
    priv->qemu_class = NULL;
    priv->desc = NULL;
}

static void
vr_qmp_error_private_copy(const VrQmpErrorPrivate *src, VrQmpErrorPrivate *dest)
{
    dest->qemu_class = g_strdup(src->qemu_class);
    dest->desc = g_strdup(src->desc);
}

static void
vr_qmp_error_private_clear(VrQmpErrorPrivate *priv)
{
    g_clear_pointer(&priv->qemu_class, g_free);
    g_clear_pointer(&priv->desc, g_free);
}

G_DEFINE_EXTENDED_ERROR(VrQmpError, vr_qmp_error)

const char *
vr_qmp_error_get_class(const GError *error)
{
    VrQmpErrorPrivate *priv;

    if (!g_error_matches(error, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND))
        return NULL;
    priv = vr_qmp_error_get_private(error);
    return priv != NULL ? priv->qemu_class : NULL;
}

const char *
vr_qmp_error_get_desc(const GError *error)
{
    VrQmpErrorPrivate *priv;

    if (!g_error_matches(error, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND))
        return NULL;
    priv = vr_qmp_error_get_private(error);
    return priv != NULL ? priv->desc : NULL;
}

GError *
vr_qmp_error_new_from_reply(const char *command, json_object *error_member)
{
    const char *qemu_class = vr_json_get_string(error_member, "class");
    const char *desc = vr_json_get_string(error_member, "desc");
    VrQmpErrorPrivate *priv;
    GError *error;

    if (qemu_class == NULL || desc == NULL) {
        return g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                           "error reply to '%s' lacks a string 'class' or 'desc'", command);
    }
    error = g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_COMMAND, "'%s' failed: %s (%s)", command, desc,
                        qemu_class);
    priv = vr_qmp_error_get_private(error);
    priv->qemu_class = g_strdup(qemu_class);
    priv->desc = g_strdup(desc);
    return error;
}
