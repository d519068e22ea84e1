/*
 * vr-qmp-message.h: what a QMP message from QEMU is
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>
#include <json-c/json.h>

G_BEGIN_DECLS

typedef enum {
    VR_QMP_MESSAGE_GREETING, /* {"QMP": {"version": ..., "capabilities": [...]}} */
    VR_QMP_MESSAGE_RETURN,   /* {"return": ..., "id": ...} */
    VR_QMP_MESSAGE_ERROR,    /* {"error": {"class": ..., "desc": ...}, "id": ...} */
    VR_QMP_MESSAGE_EVENT,    /* {"event": NAME, "data": {...}, "timestamp": {...}} */
} VrQmpMessageKind;

/*
 * Classify @message and check its shape. A reply's "id" is returned in @id when it is a
 * string (transfer none), else NULL: QEMU omits the id when it could not parse a command.
 * Fails with VR_QMP_ERROR_PROTOCOL on anything else.
 */
bool vr_qmp_message_classify(json_object *message, VrQmpMessageKind *kind, const char **id,
                             GError **error);

G_END_DECLS
