/*
 * vr-qmp-error.h: the error domain of the QMP client
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <glib.h>
#include <json-c/json.h>

G_BEGIN_DECLS

#define VR_QMP_ERROR (vr_qmp_error_quark())

typedef enum {
    /* The peer broke the protocol: malformed or oversized JSON, bad greeting, bad reply. */
    VR_QMP_ERROR_PROTOCOL,
    /* QEMU answered with an error; vr_qmp_error_get_class() and _get_desc() tell which. */
    VR_QMP_ERROR_COMMAND,
    /* No reply or event within the timeout. */
    VR_QMP_ERROR_TIMEOUT,
    /* The channel is closed: EOF from QEMU, QEMU gone, domain stopped, or closed by us. */
    VR_QMP_ERROR_CLOSED,
    /* The transport failed: connect, read or write error, libvirt API error. */
    VR_QMP_ERROR_CHANNEL,
    /* A reply did not have the shape a typed helper expects. */
    VR_QMP_ERROR_UNEXPECTED,
    /* A disk or node could not be resolved or is not what replication needs. */
    VR_QMP_ERROR_NOT_FOUND,
} VrQmpErrorCode;

GQuark vr_qmp_error_quark(void);

/*
 * QEMU's error class (e.g. "GenericError", "DeviceNotFound") and description of a
 * VR_QMP_ERROR_COMMAND error; NULL for any other error. (transfer none)
 */
const char *vr_qmp_error_get_class(const GError *error);
const char *vr_qmp_error_get_desc(const GError *error);

/*
 * Build a VR_QMP_ERROR_COMMAND error from the "error" member of a QMP reply
 * ({"class": ..., "desc": ...}) for command @command. A member of the wrong shape
 * gives a VR_QMP_ERROR_PROTOCOL error instead. (transfer full)
 */
GError *vr_qmp_error_new_from_reply(const char *command, json_object *error_member);

G_END_DECLS
