/*
 * vr-qmp-message.c: what a QMP message from QEMU is
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-message.h"

bool
vr_qmp_message_classify(json_object *message, VrQmpMessageKind *kind, const char **id,
                        GError **error)
{
    json_object *member = NULL;

    if (!json_object_is_type(message, json_type_object)) {
        g_set_error_literal(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                            "QMP message is not a JSON object");
        return false;
    }

    if (json_object_object_get_ex(message, "QMP", &member)) {
        json_object *version = vr_json_get_object(member, "version");

        if (version == NULL || vr_json_get_array(member, "capabilities") == NULL) {
            g_set_error_literal(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                                "QMP greeting lacks 'version' or 'capabilities'");
            return false;
        }
        *kind = VR_QMP_MESSAGE_GREETING;
        *id = NULL;
        return true;
    }

    if (json_object_object_get_ex(message, "event", &member)) {
        json_object *data = NULL;

        if (!json_object_is_type(member, json_type_string)) {
            g_set_error_literal(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                                "QMP event name is not a string");
            return false;
        }
        if (json_object_object_get_ex(message, "data", &data) &&
            !json_object_is_type(data, json_type_object)) {
            g_set_error(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                        "data of QMP event '%s' is not an object", json_object_get_string(member));
            return false;
        }
        *kind = VR_QMP_MESSAGE_EVENT;
        *id = NULL;
        return true;
    }

    if (json_object_object_get_ex(message, "return", &member)) {
        *kind = VR_QMP_MESSAGE_RETURN;
    } else if (json_object_object_get_ex(message, "error", &member)) {
        if (vr_json_get_string(member, "class") == NULL ||
            vr_json_get_string(member, "desc") == NULL) {
            g_set_error_literal(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                                "QMP error reply lacks a string 'class' or 'desc'");
            return false;
        }
        *kind = VR_QMP_MESSAGE_ERROR;
    } else {
        g_set_error_literal(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                            "QMP message is neither a greeting, a reply nor an event");
        return false;
    }
    *id = vr_json_get_string(message, "id");
    return true;
}
