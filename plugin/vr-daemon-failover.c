/*
 * vr-daemon-failover.c: the failover requests of virt-replicad's local API (replica role)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include "vr-daemon-failover.h"
#include "vr-capture.h"
#include "vr-receiver.h"

#include "vr-daemon-api.h"
#include "vr-failpoint.h"
#include "vr-qmp-json.h"

/* The request body: one JSON object, or nothing (then {}). NULL: answered 400. */
static json_object *
vr_daemon_failover_request(SoupServerMessage *msg)
{
    if (soup_server_message_get_request_body(msg)->length == 0)
        return json_object_new_object();
    return vr_daemon_request_json(msg);
}

/*
 * The answer to a planned failover with reverse replication that this host did already
 * (final cycle @cycle of @epoch): the relationship is its primary one, adopted, at the
 * next epoch, its last cycle @cycle. NULL otherwise. (transfer full)
 */
static json_object *
vr_daemon_failover_adopted(VrDaemonPlanned *planned, const char *relationship, uint64_t cycle,
                           uint64_t epoch)
{
    g_autoptr(VrStateRelationship) rel =
        vr_state_relationship_get(planned->state, relationship, NULL);
    g_autoptr(json_object) config = NULL;
    json_object *result, *value;
    VrStateStats stats;

    if (rel == NULL || rel->role != VR_STATE_ROLE_PRIMARY || rel->epoch != epoch + 1 ||
        (config = json_tokener_parse(rel->config)) == NULL ||
        !json_object_object_get_ex(config, "reverse", &value) || !json_object_get_boolean(value) ||
        !vr_state_stats(planned->state, relationship, 0, &stats, NULL) ||
        stats.last_ok_cycle != cycle)
        return NULL;
    result = json_object_new_object();
    json_object_object_add(result, "relationship", json_object_new_string(relationship));
    json_object_object_add(result, "domain", json_object_new_string(rel->domain_name));
    json_object_object_add(result, "point", json_object_new_uint64(cycle));
    json_object_object_add(result, "epoch", json_object_new_uint64(rel->epoch));
    json_object_object_add(result, "state", json_object_new_string("FailedOver"));
    json_object_object_add(result, "planned", json_object_new_boolean(true));
    json_object_object_add(result, "test", json_object_new_boolean(false));
    if (planned->identity != NULL)
        json_object_object_add(result, "identity", json_object_new_string(planned->identity));
    return result;
}

/*
 * After the planned failover with reverse replication on this host: the relationship's row
 * becomes the primary role's (the standby is its domain, the old primary its replica, the
 * final cycle @cycle its acknowledged one) and the scheduler adopts it.
 */
static bool
vr_daemon_failover_adopt(VrDaemonPlanned *planned, const char *relationship, json_object *reverse,
                         json_object *result, json_object *digests, uint64_t cycle,
                         const char *state_name, GError **error)
{
    g_autoptr(json_object) config = json_object_new_object();
    json_object *disks = json_object_new_array();
    g_autoptr(VrStateRelationship) old = NULL;
    const char *domain = vr_json_get_string(result, "domain");
    json_object *value;
    VrStateStats stats;
    virDomainPtr dom;
    char uuid[VIR_UUID_STRING_BUFLEN] = "";

    json_object_object_add(config, "server",
                           json_object_new_string(vr_json_get_string(reverse, "server")));
    if (json_object_object_get_ex(reverse, "port", &value))
        json_object_object_add(config, "port", json_object_get(value));
    if (vr_json_get_string(reverse, "address") != NULL)
        json_object_object_add(config, "address",
                               json_object_new_string(vr_json_get_string(reverse, "address")));
    if (json_object_object_get_ex(reverse, "frequency", &value))
        json_object_object_add(config, "frequency", json_object_get(value));
    json_object_object_foreach (digests, key, digest) {
        (void)digest;
        json_object_array_add(disks, json_object_new_string(key));
    }
    json_object_object_add(config, "disks", disks);
    json_object_object_add(config, "reverse", json_object_new_boolean(true));
    old = vr_state_relationship_get(planned->state, relationship, error);
    if (old == NULL)
        return false;
    dom = domain != NULL ? virDomainLookupByName(planned->conn, domain) : NULL;
    if (dom != NULL) {
        virDomainGetUUIDString(dom, uuid);
        virDomainFree(dom);
    }
    {
        VrStateRelationship rel = {
            .id = (char *)relationship,
            .role = VR_STATE_ROLE_PRIMARY,
            .domain_name = (char *)domain,
            .domain_uuid = uuid[0] != '\0' ? uuid : old->domain_uuid,
            .peer = (char *)vr_json_get_string(reverse, "server"),
            .epoch = (uint64_t)json_object_get_int64(json_object_object_get(result, "epoch")),
            .state = (char *)state_name,
            .config = (char *)json_object_to_json_string_ext(config, JSON_C_TO_STRING_PLAIN),
        };

        if (domain == NULL || !vr_state_relationship_put(planned->state, &rel, error))
            return false;
    }
    /* The final cycle is the acknowledged one the first reverse cycle builds on. */
    if (!vr_state_stats(planned->state, relationship, 0, &stats, error))
        goto rollback;
    if (stats.last_ok_cycle != cycle) {
        VrStateCycle row = { .cycle = cycle, .result = VR_STATE_CYCLE_OK };

        row.started_ms = row.finished_ms = g_get_real_time() / 1000;
        if (!vr_state_cycle_add(planned->state, relationship, &row, error))
            goto rollback;
    }
    if (!vr_scheduler_adopt(planned->scheduler, relationship, error))
        goto rollback;
    return true;

rollback:
    /* Back to the replica role's row on every failure: the failover's cancel expects it. */
    if (!vr_state_relationship_put(planned->state, old, NULL))
        g_warning("relationship '%s': cannot restore its replica row after a failed reverse "
                  "set-up",
                  relationship);
    return false;
}

/* The reverse set-up of the scheduler's planned failover ended: its boolean task. */
static void
vr_daemon_failover_reverse_done(GObject *source, GAsyncResult *result, gpointer data)
{
    GTask *task = data;
    g_autoptr(GError) error = NULL;
    json_object *answer = vr_failover_reverse_adopt_finish(NULL, result, &error);

    if (answer == NULL)
        g_task_return_error(task, g_steal_pointer(&error));
    else
        g_task_return_boolean(task, TRUE);
    json_object_put(answer);
    g_object_unref(task);
}

void
vr_daemon_failover_reverse(const VrSchedulerReverse *reverse, gpointer user_data,
                           GAsyncReadyCallback callback, gpointer callback_data)
{
    VrDaemonPlanned *planned = user_data;
    GTask *task = g_task_new(NULL, NULL, callback, callback_data);

    if (planned->failover == NULL) {
        g_task_return_new_error(task, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_FAILED,
                                "this host has no replica role with libvirt");
        g_object_unref(task);
        return;
    }
    vr_failover_reverse_adopt_async(planned->failover, reverse->relationship, reverse->domain,
                                    reverse->peer, reverse->cycle, reverse->epoch, reverse->disks,
                                    reverse->digests, vr_daemon_failover_reverse_done, task);
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
                        char **point_out, bool *test_out, json_object **interfaces_out)
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
        } else if (strcmp(key, "interfaces") == 0 && takes_point) {
            /* Failover TCP/IP by MAC (vr-failover-net.h); checked by the failover. */
            *interfaces_out = value;
        } else if (strcmp(key, "test") == 0 && takes_test) {
            if (json_object_is_type(value, json_type_boolean))
                *test_out = json_object_get_boolean(value);
            else
                problem = g_strdup("\"test\" is true or false");
        } else {
            problem = g_strdup_printf("%s takes no member '%s'", action, key);
        }
        if (problem != NULL) {
            vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", "%s", problem);
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
    json_object *interfaces = NULL; /* borrowed from @request */
    bool test = false;

    if (failover == NULL) {
        vr_daemon_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "no-replica-role", "%s",
                              "failover needs the replica role and libvirt on this host");
        return;
    }
    request = vr_daemon_failover_request(msg);
    if (request == NULL ||
        !vr_daemon_failover_args(msg, request, action, &point, &test, &interfaces))
        return;
    if (strcmp(action, "failover") == 0 && interfaces != NULL)
        result = vr_failover_start_with_interfaces(failover, name, point, test, interfaces, &error);
    else if (strcmp(action, "failover") == 0)
        result = vr_failover_start(failover, name, point, test, &error);
    else if (strcmp(action, "failover-complete") == 0)
        result = vr_failover_complete(failover, name, &error);
    else
        result = vr_failover_cancel(failover, name, test, &error);
    if (result == NULL) {
        guint status;
        const char *code = vr_failover_error_code(error, &status);

        g_warning("%s of '%s': %s", action, name, error->message);
        vr_daemon_reply_error(msg, status, code, "%s", error->message);
        return;
    }
    vr_daemon_reply_json(msg, SOUP_STATUS_OK, result);
}

json_object *
vr_daemon_failover_planned(const char *relationship, const char *peer_name, json_object *request,
                           gpointer user_data, GError **error)
{
    VrDaemonPlanned *planned = user_data;
    VrFailover *failover = planned->failover;
    g_autoptr(GError) local = NULL;
    json_object *cycle = NULL, *epoch = NULL, *digests = NULL, *reverse = NULL;
    g_autofree char *bitmap = NULL;
    json_object *result;
    VrReceiverErrorCode code;

    json_object_object_foreach (request, key, value) {
        (void)value;
        if (strcmp(key, "cycle") != 0 && strcmp(key, "epoch") != 0 && strcmp(key, "digests") != 0 &&
            strcmp(key, "reverse") != 0) {
            g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_INVALID,
                        "a failover request takes no member '%s'", key);
            return NULL;
        }
    }
    if (!json_object_object_get_ex(request, "cycle", &cycle) ||
        !json_object_is_type(cycle, json_type_int) || json_object_get_int64(cycle) <= 0 ||
        !json_object_object_get_ex(request, "epoch", &epoch) ||
        !json_object_is_type(epoch, json_type_int) || json_object_get_int64(epoch) <= 0 ||
        !json_object_object_get_ex(request, "digests", &digests) ||
        !json_object_is_type(digests, json_type_object)) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_INVALID,
                    "a failover request has a positive \"cycle\" and \"epoch\" and an object "
                    "\"digests\"");
        return NULL;
    }
    if (json_object_object_get_ex(request, "reverse", &reverse)) {
        if (!json_object_is_type(reverse, json_type_object) ||
            vr_json_get_string(reverse, "server") == NULL) {
            g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_INVALID,
                        "\"reverse\" is an object with the old primary's \"server\"");
            return NULL;
        }
        if (planned->scheduler == NULL) {
            g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                        "this replica host has no primary role (libvirt): no reverse "
                        "replication");
            return NULL;
        }
        bitmap = vr_capture_relationship_bitmap_name(relationship,
                                                     (uint64_t)json_object_get_int64(cycle));
        /* A repeated request (its answer was lost): the relationship is ours already. */
        result = vr_daemon_failover_adopted(planned, relationship,
                                            (uint64_t)json_object_get_int64(cycle),
                                            (uint64_t)json_object_get_int64(epoch));
        if (result != NULL)
            return result;
    }
    g_info("planned failover of '%s' asked by '%s': final cycle %" G_GINT64_FORMAT
           " of epoch %" G_GINT64_FORMAT "%s",
           relationship, peer_name, json_object_get_int64(cycle), json_object_get_int64(epoch),
           reverse != NULL ? ", then reverse replication" : "");
    result =
        vr_failover_start_planned(failover, relationship, (uint64_t)json_object_get_int64(cycle),
                                  (uint64_t)json_object_get_int64(epoch), digests, bitmap, &local);
    if (result != NULL && reverse != NULL &&
        !vr_daemon_failover_adopt(planned, relationship, reverse, result, digests,
                                  (uint64_t)json_object_get_int64(cycle), "Replicating", &local)) {
        g_autoptr(GError) undo = NULL;
        json_object *undone = vr_failover_cancel(failover, relationship, false, &undo);

        json_object_put(result);
        result = NULL;
        if (undone == NULL) {
            /* Not "undone": the primary must keep its domain guarded (a 500 is no refusal). */
            g_warning("planned failover of '%s': cannot undo it: %s", relationship, undo->message);
            g_prefix_error(&local,
                           "reverse replication could not be set up, and the failover could "
                           "not be undone (%s): the standby may run on this host: ",
                           undo->message);
        } else {
            json_object_put(undone);
            g_prefix_error(&local, "reverse replication could not be set up (the failover was "
                                   "undone): ");
        }
        local->domain = VR_FAILOVER_ERROR;
        local->code = VR_FAILOVER_ERROR_FAILED;
    }
    if (result != NULL) {
        if (planned->identity != NULL)
            json_object_object_add(result, "identity", json_object_new_string(planned->identity));
        /* Failed over, and the answer not sent yet: the primary learns nothing (tests). */
        vr_failpoint("failover-answer");
        return result;
    }
    g_warning("planned failover of '%s': %s", relationship, local->message);
    switch (local->domain == VR_FAILOVER_ERROR ? (VrFailoverErrorCode)local->code
                                               : VR_FAILOVER_ERROR_FAILED) {
    case VR_FAILOVER_ERROR_NOT_FOUND:
        code = VR_RECEIVER_ERROR_NOT_FOUND;
        break;
    case VR_FAILOVER_ERROR_NO_POINT:
    case VR_FAILOVER_ERROR_CONFLICT:
        code = VR_RECEIVER_ERROR_CONFLICT;
        break;
    case VR_FAILOVER_ERROR_INVALID:
        code = VR_RECEIVER_ERROR_INVALID;
        break;
    default:
        /* Not a receiver code: 500, and the primary does not retry (the failover was undone). */
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "%s", local->message);
        return NULL;
    }
    g_set_error(error, VR_RECEIVER_ERROR, code, "%s", local->message);
    return NULL;
}

/* ---- replica-reverse after an unplanned failover ------------------------------------------ */

static json_object *vr_daemon_failover_reverse_failed(GError **error, VrFailoverErrorCode code,
                                                      const char *format, ...) G_GNUC_PRINTF(3, 4);

static json_object *
vr_daemon_failover_reverse_failed(GError **error, VrFailoverErrorCode code, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    g_propagate_error(error, g_error_new_valist(VR_FAILOVER_ERROR, code, format, args));
    va_end(args);
    return NULL;
}

/*
 * The failed-over host: its relationship becomes the primary role's, replicating to the old
 * primary's replica role given in @request ({"server", "port", "address"}); the first cycle
 * is a hash resynchronization (the old primary's disk is not known to hold any point).
 */
static json_object *
vr_daemon_failover_reverse_here(VrDaemonPlanned *planned, VrStateRelationship *rel,
                                json_object *request, GError **error)
{
    g_autoptr(json_object) config = json_tokener_parse(rel->config != NULL ? rel->config : "{}");
    g_autoptr(json_object) result = json_object_new_object();
    g_autoptr(json_object) disks = json_object_new_object();
    g_autoptr(GPtrArray) names = NULL;
    g_autoptr(GError) local = NULL;
    json_object *record = NULL, *value;
    VrStateStats stats;

    if (g_strcmp0(rel->state, VR_FAILOVER_STATE_FAILED_OVER) != 0 || config == NULL ||
        !json_object_object_get_ex(config, "failover", &record))
        return vr_daemon_failover_reverse_failed(
            error, VR_FAILOVER_ERROR_CONFLICT,
            "relationship '%s' is in state %s, not FailedOver: replica-reverse follows a "
            "failover",
            rel->id, rel->state);
    if (planned->scheduler == NULL)
        return vr_daemon_failover_reverse_failed(error, VR_FAILOVER_ERROR_CONFLICT,
                                                 "this host has no primary role (libvirt)");
    if (vr_json_get_string(request, "server") == NULL)
        return vr_daemon_failover_reverse_failed(
            error, VR_FAILOVER_ERROR_INVALID,
            "'server' (the old primary's replica role: its DNS name) is required");
    names = vr_state_disk_list(planned->state, rel->id, error);
    if (names == NULL || !vr_state_stats(planned->state, rel->id, 0, &stats, error))
        return NULL;
    for (guint i = 0; i < names->len; i++)
        json_object_object_add(disks, names->pdata[i], NULL);
    json_object_object_add(result, "domain",
                           json_object_new_string(vr_json_get_string(record, "domain")));
    json_object_object_add(result, "epoch", json_object_new_uint64(rel->epoch));
    if (!json_object_object_get_ex(record, "domain", &value) || names->len == 0)
        return vr_daemon_failover_reverse_failed(error, VR_FAILOVER_ERROR_FAILED,
                                                 "relationship '%s' has no failed-over domain "
                                                 "or no disk",
                                                 rel->id);
    if (!vr_daemon_failover_adopt(planned, rel->id, request, result, disks,
                                  MAX(stats.last_ok_cycle, 1), "ResynchronizationRequired", &local))
        return vr_daemon_failover_reverse_failed(error, VR_FAILOVER_ERROR_FAILED, "%s",
                                                 local->message);
    g_info("relationship '%s': reversed after an unplanned failover: '%s' replicates to '%s', "
           "a hash resynchronization first",
           rel->id, vr_json_get_string(record, "domain"), vr_json_get_string(request, "server"));
    json_object_object_add(result, "relationship", json_object_new_string(rel->id));
    json_object_object_add(result, "role", json_object_new_string("primary"));
    json_object_object_add(result, "state", json_object_new_string("ResynchronizationRequired"));
    return g_steal_pointer(&result);
}

/* A request of replica-reverse --accept whose copies run: what its end needs. */
typedef struct {
    VrDaemonPlanned *planned;
    char *relationship;
} VrDaemonAccept;

/* The old primary's reverse set-up ended: the scheduler lets go, the request's answer. */
static void
vr_daemon_failover_accept_done(GObject *source, GAsyncResult *result, gpointer data)
{
    GTask *task = data;
    VrDaemonAccept *accept = g_task_get_task_data(task);
    GError *error = NULL;
    json_object *answer = vr_failover_reverse_adopt_finish(NULL, result, &error);

    if (answer == NULL) {
        g_task_return_error(task, error);
        g_object_unref(task);
        return;
    }
    if (accept->planned->scheduler != NULL)
        vr_scheduler_forget(accept->planned->scheduler, accept->relationship);
    json_object_object_add(answer, "role", json_object_new_string("replica"));
    json_object_object_add(answer, "state", json_object_new_string("Replicating"));
    g_task_return_pointer(task, answer, vr_json_free);
    g_object_unref(task);
}

static void
vr_daemon_accept_free(gpointer data)
{
    VrDaemonAccept *accept = data;

    g_free(accept->relationship);
    g_free(accept);
}

/*
 * The old primary, back: its relationship becomes the replica role's, its disk the seed.
 * Ends @task (its copies run in the background), or false with @error, @task untouched.
 */
static bool
vr_daemon_failover_reverse_accept(VrDaemonPlanned *planned, VrStateRelationship *rel,
                                  json_object *request, GTask *task, GError **error)
{
    VrDaemonAccept *accept;
    g_autofree char *peer = NULL;
    uint64_t epoch = rel->epoch;

    if (planned->failover == NULL) {
        vr_daemon_failover_reverse_failed(
            error, VR_FAILOVER_ERROR_CONFLICT,
            "this host has no replica role: the old primary becomes the replica");
        return false;
    }
    if (planned->scheduler != NULL && vr_scheduler_is_running(planned->scheduler, rel->id)) {
        vr_daemon_failover_reverse_failed(error, VR_FAILOVER_ERROR_CONFLICT,
                                          "a cycle of '%s' runs: try again when it ended", rel->id);
        return false;
    }
    /* The new primary's certificate identity: by default the name this host sent to. */
    peer = g_strdup(vr_json_get_string(request, "primary") != NULL
                        ? vr_json_get_string(request, "primary")
                        : rel->peer);
    accept = g_new0(VrDaemonAccept, 1);
    accept->planned = planned;
    accept->relationship = g_strdup(rel->id);
    g_task_set_task_data(task, accept, vr_daemon_accept_free);
    vr_failover_reverse_adopt_async(planned->failover, rel->id, rel->domain_name, peer,
                                    VR_REPLICA_STORE_SEED_CYCLE, epoch, NULL, NULL,
                                    vr_daemon_failover_accept_done, task);
    return true;
}

/* Whether @name is the domain @rel failed over to (its standby on this host). */
static bool
vr_daemon_failover_is_standby(const VrStateRelationship *rel, const char *name)
{
    g_autoptr(json_object) config = json_tokener_parse(rel->config != NULL ? rel->config : "{}");
    json_object *record = NULL;

    return config != NULL && json_object_object_get_ex(config, "failover", &record) &&
           g_strcmp0(vr_json_get_string(record, "domain"), name) == 0;
}

/* The synchronous part of vr_daemon_failover_reverse_request_async(): NULL with @error
 * when it failed, or the answer, or NULL without error when @task goes on (--accept). */
static json_object *
vr_daemon_failover_reverse_dispatch(VrDaemonPlanned *planned, const char *name,
                                    json_object *request, GTask *task, GError **error)
{
    g_autoptr(GPtrArray) list = vr_state_relationship_list(planned->state, error);
    json_object *accept = NULL;

    if (list == NULL)
        return NULL;
    json_object_object_foreach (request, key, value) {
        if (strcmp(key, "server") != 0 && strcmp(key, "port") != 0 && strcmp(key, "address") != 0 &&
            strcmp(key, "accept") != 0 && strcmp(key, "primary") != 0 &&
            strcmp(key, "frequency") != 0)
            return vr_daemon_failover_reverse_failed(error, VR_FAILOVER_ERROR_INVALID,
                                                     "reverse takes no member '%s'", key);
        if (strcmp(key, "accept") == 0)
            accept = value;
    }
    for (guint i = 0; i < list->len; i++) {
        VrStateRelationship *rel = list->pdata[i];

        if (strcmp(rel->id, name) != 0 && g_strcmp0(rel->domain_name, name) != 0 &&
            !vr_daemon_failover_is_standby(rel, name))
            continue;
        if (accept != NULL && json_object_get_boolean(accept)) {
            if (rel->role != VR_STATE_ROLE_PRIMARY)
                return vr_daemon_failover_reverse_failed(
                    error, VR_FAILOVER_ERROR_CONFLICT,
                    "'%s' is not replicated from this host: --accept is for the old primary", name);
            /* NULL either way: @error set, or the set-up ends @task later. */
            vr_daemon_failover_reverse_accept(planned, rel, request, task, error);
            return NULL;
        }
        if (rel->role != VR_STATE_ROLE_REPLICA)
            return vr_daemon_failover_reverse_failed(
                error, VR_FAILOVER_ERROR_CONFLICT,
                "'%s' is replicated from this host: on the old primary, replica-reverse takes "
                "--accept (after the other host failed over)",
                name);
        return vr_daemon_failover_reverse_here(planned, rel, request, error);
    }
    return vr_daemon_failover_reverse_failed(error, VR_FAILOVER_ERROR_NOT_FOUND,
                                             "no replication of '%s' on this host", name);
}

void
vr_daemon_failover_reverse_request_async(VrDaemonPlanned *planned, const char *name,
                                         json_object *request, GAsyncReadyCallback callback,
                                         gpointer user_data)
{
    GTask *task = g_task_new(NULL, NULL, callback, user_data);
    GError *error = NULL;
    json_object *result = vr_daemon_failover_reverse_dispatch(planned, name, request, task, &error);

    if (result != NULL)
        g_task_return_pointer(task, result, vr_json_free);
    else if (error != NULL)
        g_task_return_error(task, error);
    else
        return; /* the reverse set-up's end returns it */
    g_object_unref(task);
}

json_object *
vr_daemon_failover_reverse_request_finish(GAsyncResult *result, GError **error)
{
    return g_task_propagate_pointer(G_TASK(result), error);
}

/* ---- reverse set-ups resumed at start ------------------------------------------------------ */

/* A resumed set-up ended well: the relationship's row is the replica role's now. */
static void
vr_daemon_failover_resumed(const char *relationship, gpointer user_data)
{
    VrDaemonPlanned *planned = user_data;

    if (planned->scheduler != NULL)
        vr_scheduler_forget(planned->scheduler, relationship);
}

void
vr_daemon_failover_resume(VrDaemonPlanned *planned)
{
    if (planned->failover != NULL)
        vr_failover_reverse_resume(planned->failover, vr_daemon_failover_resumed, planned);
}
