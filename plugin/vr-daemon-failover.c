/*
 * vr-daemon-failover.c: the failover requests of virt-replicad's local API (replica role)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include "vr-daemon-failover.h"
#include "vr-qmp-json.h"

static void
vr_daemon_failover_reply(SoupServerMessage *msg, guint status, json_object *body)
{
    const char *text = json_object_to_json_string_ext(
        body, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);

    soup_server_message_set_status(msg, status, NULL);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, text, strlen(text));
}

/* {"error": {"code": @code, "message": @message}}, as every error of the API. */
static void
vr_daemon_failover_error(SoupServerMessage *msg, guint status, const char *code,
                         const char *message)
{
    g_autoptr(json_object) body = json_object_new_object();
    json_object *error = json_object_new_object();

    json_object_object_add(error, "code", json_object_new_string(code));
    json_object_object_add(error, "message", json_object_new_string(message));
    json_object_object_add(body, "error", error);
    vr_daemon_failover_reply(msg, status, body);
}

/* The request body: one JSON object, or nothing (then {}). NULL: answered 400. */
static json_object *
vr_daemon_failover_request(SoupServerMessage *msg)
{
    SoupMessageBody *body = soup_server_message_get_request_body(msg);
    g_autoptr(GBytes) bytes = soup_message_body_flatten(body);
    gsize len = 0;
    const char *data = g_bytes_get_data(bytes, &len);
    json_tokener *tok;
    json_object *obj;

    if (len == 0)
        return json_object_new_object();
    tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    obj = json_tokener_parse_ex(tok, data, (int)len);
    if (obj != NULL &&
        (json_tokener_get_parse_end(tok) != len || !json_object_is_type(obj, json_type_object))) {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    if (obj == NULL)
        vr_daemon_failover_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                                 "the request body is not one JSON object");
    return obj;
}

bool
vr_daemon_failover_is_action(const char *action)
{
    return strcmp(action, "failover") == 0 || strcmp(action, "failover-complete") == 0 ||
           strcmp(action, "failover-cancel") == 0;
}

/*
 * The members of @request: only those @action takes, of their types ("point": a positive
 * integer or "latest", "test": a boolean). False: answered 400.
 */
static bool
vr_daemon_failover_args(SoupServerMessage *msg, json_object *request, const char *action,
                        char **point_out, bool *test_out)
{
    bool takes_point = strcmp(action, "failover") == 0;
    bool takes_test = strcmp(action, "failover-complete") != 0;

    json_object_object_foreach (request, key, value) {
        g_autofree char *problem = NULL;

        if (strcmp(key, "point") == 0 && takes_point) {
            if (json_object_is_type(value, json_type_int) && json_object_get_int64(value) > 0)
                *point_out =
                    g_strdup_printf("%" G_GUINT64_FORMAT, (guint64)json_object_get_uint64(value));
            else if (json_object_is_type(value, json_type_string) &&
                     strcmp(json_object_get_string(value), "latest") == 0)
                *point_out = g_strdup("latest");
            else
                problem = g_strdup("\"point\" is a cycle number or \"latest\"");
        } else if (strcmp(key, "test") == 0 && takes_test) {
            if (json_object_is_type(value, json_type_boolean))
                *test_out = json_object_get_boolean(value);
            else
                problem = g_strdup("\"test\" is true or false");
        } else {
            problem = g_strdup_printf("%s takes no member '%s'", action, key);
        }
        if (problem != NULL) {
            vr_daemon_failover_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", problem);
            return false;
        }
    }
    return true;
}

void
vr_daemon_failover_post(VrFailover *failover, SoupServerMessage *msg, const char *name,
                        const char *action)
{
    g_autoptr(json_object) request = NULL;
    g_autoptr(json_object) result = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *point = NULL;
    bool test = false;

    if (failover == NULL) {
        vr_daemon_failover_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "no-replica-role",
                                 "failover needs the replica role and libvirt on this host");
        return;
    }
    request = vr_daemon_failover_request(msg);
    if (request == NULL || !vr_daemon_failover_args(msg, request, action, &point, &test))
        return;
    if (strcmp(action, "failover") == 0)
        result = vr_failover_start(failover, name, point, test, &error);
    else if (strcmp(action, "failover-complete") == 0)
        result = vr_failover_complete(failover, name, &error);
    else
        result = vr_failover_cancel(failover, name, test, &error);
    if (result == NULL) {
        guint status;
        const char *code = vr_failover_error_code(error, &status);

        g_warning("%s of '%s': %s", action, name, error->message);
        vr_daemon_failover_error(msg, status, code, error->message);
        return;
    }
    vr_daemon_failover_reply(msg, SOUP_STATUS_OK, result);
}
