/*
 * vr-daemon.c: virt-replicad, one per host, both roles
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-daemon.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixsocketaddress.h>
#include <libsoup/soup.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "vr-daemon-api.h"
#include "vr-daemon-import.h"
#include "vr-daemon-auth.h"
#include "vr-daemon-failover.h"
#include "vr-failover.h"
#include "vr-failover-net.h"
#include "vr-net.h"
#include "vr-qmp-channel.h"
#include "vr-qmp-json.h"
#include "vr-receiver.h"
#include "vr-replica-sink.h"
#include "vr-scheduler.h"
#include "vr-state.h"
#include "vr-tls-policy.h"

G_DEFINE_QUARK(vr - daemon - error - quark, vr_daemon_error)

#define VR_DAEMON_API_PREFIX "/v1/"
/* A request body of the local API (a hook's notification, a command) is small. */
#define VR_DAEMON_API_MAX_BODY (64 * 1024)

struct _VrDaemon {
    bool stopping; /* vr_daemon_free() began: answers to paused API requests are dropped */
    VrConfig *config;
    VrState *state;
    GMainLoop *loop;
    gint64 started; /* wall-clock seconds */

    /* The local API. */
    SoupServer *api;
    char *socket_path; /* removed at the end, when it is ours */

    /* libvirt: the primary role's domains, the replica's networks and standby domains. */
    virConnectPtr conn;

    /* The primary role (NULL without a libvirt connection). */
    VrScheduler *scheduler;

    /* The replica role. */
    VrTlsPolicy *client_policy;
    VrAuthz *authz;
    VrReplicaSink *sink;
    VrDaemonImports *imports; /* POST /v1/imports */
    VrReceiver *receiver;
    VrFailover *failover;    /* NULL without libvirt */
    VrDaemonPlanned planned; /* the planned failover's handlers (both roles) */
    char *replica_address;
    guint16 replica_port;
};

/* ---- JSON replies --------------------------------------------------------------------- */

void
vr_daemon_reply_json(SoupServerMessage *msg, guint status, json_object *body)
{
    const char *text = json_object_to_json_string_ext(
        body, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED | JSON_C_TO_STRING_NOSLASHESCAPE);

    soup_server_message_set_status(msg, status, NULL);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, text, strlen(text));
}

/* {"error": {"code": @code, "message": ...}}: @code is stable, the message is for people. */
void
vr_daemon_reply_error(SoupServerMessage *msg, guint status, const char *code, const char *fmt, ...)
{
    g_autoptr(json_object) body = json_object_new_object();
    json_object *error = json_object_new_object();
    g_autofree char *message = NULL;
    va_list args;

    va_start(args, fmt);
    message = g_strdup_vprintf(fmt, args);
    va_end(args);
    json_object_object_add(error, "code", json_object_new_string(code));
    json_object_object_add(error, "message", json_object_new_string(message));
    json_object_object_add(body, "error", error);
    vr_daemon_reply_json(msg, status, body);
}

/* ---- relationships and statistics ------------------------------------------------------- */

static const char *
vr_daemon_role_name(VrStateRole role)
{
    return role == VR_STATE_ROLE_PRIMARY ? "primary" : "replica";
}

/*
 * Health from the cycles of the monitoring interval (on the replica: the cycles it
 * received): Critical when cycles failed and none succeeded, Warning when a cycle failed
 * or was missed, else Normal. The primary's RPO-based rules come with its scheduler.
 */
static const char *
vr_daemon_health(const VrStateStats *stats)
{
    if (stats->cycles_failed > 0 && stats->cycles_ok == 0)
        return "Critical";
    if (stats->cycles_failed > 0 || stats->cycles_missed > 0)
        return "Warning";
    return "Normal";
}

/* The health of @rel: the scheduler's RPO rules on the primary, the received cycles' else. */
static const char *
vr_daemon_relationship_health(VrDaemon *daemon, const VrStateRelationship *rel,
                              const VrStateStats *stats)
{
    if (rel->role == VR_STATE_ROLE_PRIMARY && daemon->scheduler != NULL)
        return vr_scheduler_health(daemon->scheduler, rel, stats);
    return vr_daemon_health(stats);
}

static json_object *
vr_daemon_stats_json(const VrStateStats *stats)
{
    json_object *obj = json_object_new_object();

    json_object_object_add(obj, "cycles_ok", json_object_new_uint64(stats->cycles_ok));
    json_object_object_add(obj, "cycles_missed", json_object_new_uint64(stats->cycles_missed));
    json_object_object_add(obj, "cycles_failed", json_object_new_uint64(stats->cycles_failed));
    json_object_object_add(obj, "avg_bytes", json_object_new_uint64(stats->avg_bytes));
    json_object_object_add(obj, "max_bytes", json_object_new_uint64(stats->max_bytes));
    json_object_object_add(obj, "avg_latency_ms", json_object_new_uint64(stats->avg_latency_ms));
    json_object_object_add(obj, "max_latency_ms", json_object_new_uint64(stats->max_latency_ms));
    json_object_object_add(obj, "resyncs", json_object_new_uint64(stats->resyncs));
    return obj;
}

static int64_t
vr_daemon_window_start_ms(VrDaemon *daemon)
{
    return g_get_real_time() / 1000 - (int64_t)daemon->config->daemon.monitoring_interval * 1000;
}

/* The status of one relationship (docs/api.md, "Relationship status"). */
static json_object *
vr_daemon_relationship_json(VrDaemon *daemon, const VrStateRelationship *rel, GError **error)
{
    g_autoptr(json_object) obj = json_object_new_object();
    json_object *last;
    VrStateStats stats;

    if (!vr_state_stats(daemon->state, rel->id, vr_daemon_window_start_ms(daemon), &stats, error))
        return NULL;
    json_object_object_add(obj, "id", json_object_new_string(rel->id));
    json_object_object_add(obj, "role", json_object_new_string(vr_daemon_role_name(rel->role)));
    json_object_object_add(obj, "domain", json_object_new_string(rel->domain_name));
    json_object_object_add(obj, "uuid", json_object_new_string(rel->domain_uuid));
    json_object_object_add(obj, "peer", json_object_new_string(rel->peer));
    json_object_object_add(obj, "epoch", json_object_new_uint64(rel->epoch));
    json_object_object_add(obj, "state", json_object_new_string(rel->state));
    json_object_object_add(
        obj, "health", json_object_new_string(vr_daemon_relationship_health(daemon, rel, &stats)));
    if (rel->role == VR_STATE_ROLE_PRIMARY && daemon->scheduler != NULL) {
        int64_t pending = vr_scheduler_pending_bytes(daemon->scheduler, rel->id);

        json_object_object_add(
            obj, "cycle_running",
            json_object_new_boolean(vr_scheduler_is_running(daemon->scheduler, rel->id)));
        json_object_object_add(obj, "progress",
                               vr_scheduler_progress_json(daemon->scheduler, rel->id));
        json_object_object_add(obj, "pending_bytes",
                               pending >= 0 ? json_object_new_int64(pending) : NULL);
    }
    if (stats.last_ok_ms > 0) {
        last = json_object_new_object();
        json_object_object_add(last, "seq", json_object_new_uint64(stats.last_ok_cycle));
        json_object_object_add(last, "time_ms", json_object_new_int64(stats.last_ok_ms));
        json_object_object_add(obj, "last_cycle", last);
        json_object_object_add(
            obj, "rpo_seconds",
            json_object_new_int64(MAX(g_get_real_time() / 1000 - stats.last_ok_ms, 0) / 1000));
    } else {
        json_object_object_add(obj, "last_cycle", NULL);
        json_object_object_add(obj, "rpo_seconds", NULL);
    }
    json_object_object_add(obj, "stats", vr_daemon_stats_json(&stats));
    if (rel->role == VR_STATE_ROLE_REPLICA)
        json_object_object_add(obj, "failover_network", vr_failover_net_status(rel->config));
    json_object_object_add(obj, "monitoring_interval_s",
                           json_object_new_uint64(daemon->config->daemon.monitoring_interval));
    return g_steal_pointer(&obj);
}

/* One recovery point for the API: the figures an administrator picks a point by. */
static json_object *
vr_daemon_point_json(const VrReplicaPoint *point)
{
    json_object *item = json_object_new_object();
    char chain[VR_REPLICA_CHAIN_SIZE * 2 + 1];

    for (guint b = 0; b < VR_REPLICA_CHAIN_SIZE; b++)
        g_snprintf(chain + b * 2, 3, "%02x", point->chain[b]);
    json_object_object_add(item, "cycle", json_object_new_uint64(point->cycle));
    json_object_object_add(item, "epoch", json_object_new_uint64(point->epoch));
    json_object_object_add(item, "published", json_object_new_int64(point->published));
    json_object_object_add(item, "virtual_size", json_object_new_uint64(point->virtual_size));
    json_object_object_add(
        item, "app_consistent",
        json_object_new_boolean((point->flags & VR_WIRE_FLAG_APP_CONSISTENT) != 0));
    json_object_object_add(item, "chain", json_object_new_string(chain));
    return item;
}

/* The recovery points of every disk of a relationship, from the state's mirror. */
static json_object *
vr_daemon_points_json(VrDaemon *daemon, const VrStateRelationship *rel, GError **error)
{
    g_autoptr(json_object) disks = json_object_new_object();
    g_autoptr(GPtrArray) names = vr_state_disk_list(daemon->state, rel->id, error);

    if (names == NULL)
        return NULL;
    for (guint i = 0; i < names->len; i++) {
        const char *disk = names->pdata[i];
        g_autoptr(GArray) points = vr_state_points_list(daemon->state, rel->id, disk, error);
        json_object *list;

        if (points == NULL)
            return NULL;
        list = json_object_new_array();
        for (guint p = 0; p < points->len; p++)
            json_object_array_add(list,
                                  vr_daemon_point_json(&g_array_index(points, VrReplicaPoint, p)));
        json_object_object_add(disks, disk, list);
    }
    return g_steal_pointer(&disks);
}

/* ---- the local API ------------------------------------------------------------------- */

static void
vr_daemon_get_daemon(VrDaemon *daemon, SoupServerMessage *msg)
{
    g_autoptr(json_object) body = json_object_new_object();
    json_object *roles = json_object_new_object();

    json_object_object_add(body, "version", json_object_new_string(PACKAGE_VERSION));
    json_object_object_add(body, "pid", json_object_new_int64(getpid()));
    json_object_object_add(body, "started", json_object_new_int64(daemon->started));
    json_object_object_add(body, "state_dir",
                           json_object_new_string(daemon->config->daemon.state_dir));
    json_object_object_add(roles, "primary", json_object_new_boolean(daemon->scheduler != NULL));
    json_object_object_add(roles, "replica", json_object_new_boolean(daemon->receiver != NULL));
    json_object_object_add(body, "roles", roles);
    if (daemon->receiver != NULL) {
        json_object *replica = json_object_new_object();

        json_object_object_add(replica, "address", json_object_new_string(daemon->replica_address));
        json_object_object_add(replica, "port", json_object_new_int(daemon->replica_port));
        json_object_object_add(body, "replica", replica);
    }
    vr_daemon_reply_json(msg, SOUP_STATUS_OK, body);
}

static void
vr_daemon_get_relationships(VrDaemon *daemon, SoupServerMessage *msg)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) list = vr_state_relationship_list(daemon->state, &error);
    g_autoptr(json_object) body = json_object_new_object();
    json_object *array = json_object_new_array();

    json_object_object_add(body, "relationships", array);
    if (list == NULL) {
        vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                              error->message);
        return;
    }
    for (guint i = 0; i < list->len; i++) {
        json_object *item = vr_daemon_relationship_json(daemon, list->pdata[i], &error);

        if (item == NULL) {
            vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                                  error->message);
            return;
        }
        json_object_array_add(array, item);
    }
    vr_daemon_reply_json(msg, SOUP_STATUS_OK, body);
}

/* A relationship by its id or by its domain's name. */
static VrStateRelationship *
vr_daemon_find(VrDaemon *daemon, const char *name, GError **error)
{
    g_autoptr(GPtrArray) list = vr_state_relationship_list(daemon->state, error);

    if (list == NULL)
        return NULL;
    for (guint i = 0; i < list->len; i++) {
        VrStateRelationship *rel = list->pdata[i];

        if (strcmp(rel->id, name) == 0 || strcmp(rel->domain_name, name) == 0)
            return g_ptr_array_steal_index(list, i);
    }
    g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND,
                "no replication of '%s' on this host", name);
    return NULL;
}

static void
vr_daemon_get_relationship(VrDaemon *daemon, SoupServerMessage *msg, const char *name,
                           bool points_only)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrStateRelationship) rel = vr_daemon_find(daemon, name, &error);
    g_autoptr(json_object) body = NULL;
    json_object *points;

    if (rel == NULL) {
        if (g_error_matches(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND))
            vr_daemon_reply_error(msg, SOUP_STATUS_NOT_FOUND, "unknown-domain", "%s",
                                  error->message);
        else
            vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                                  error->message);
        return;
    }
    body =
        points_only ? json_object_new_object() : vr_daemon_relationship_json(daemon, rel, &error);
    points = body != NULL ? vr_daemon_points_json(daemon, rel, &error) : NULL;
    if (points == NULL) {
        vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                              error->message);
        return;
    }
    json_object_object_add(body, "recovery_points", points);
    vr_daemon_reply_json(msg, SOUP_STATUS_OK, body);
}

/*
 * POST /v1/hooks/qemu: the libvirt hook's notification (docs/hook.md). Answered at once;
 * the hook never waits for what the daemon makes of it.
 */
static void
vr_daemon_post_hook(VrDaemon *daemon, SoupServerMessage *msg)
{
    SoupMessageBody *request = soup_server_message_get_request_body(msg);
    g_autoptr(GBytes) bytes = soup_message_body_flatten(request);
    g_autoptr(json_object) event = NULL;
    g_autoptr(json_object) body = json_object_new_object();
    json_tokener *tok = json_tokener_new();
    const char *domain;
    const char *operation;
    gsize len = 0;
    const char *data = g_bytes_get_data(bytes, &len);

    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    event = json_tokener_parse_ex(tok, data != NULL ? data : "", (int)len);
    json_tokener_free(tok);
    domain = event != NULL ? vr_json_get_string(event, "domain") : NULL;
    operation = event != NULL ? vr_json_get_string(event, "operation") : NULL;
    if (domain == NULL || operation == NULL) {
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                              "a hook notification is a JSON object with 'domain' and "
                              "'operation'");
        return;
    }
    g_info("libvirt hook: domain '%s' %s %s", domain, operation,
           vr_json_get_string(event, "sub_operation") != NULL
               ? vr_json_get_string(event, "sub_operation")
               : "");
    if (daemon->scheduler != NULL)
        vr_scheduler_notify(daemon->scheduler, domain, operation);
    json_object_object_add(body, "accepted", json_object_new_boolean(TRUE));
    vr_daemon_reply_json(msg, SOUP_STATUS_ACCEPTED, body);
}

/* The request body as a JSON object, or NULL after a 400 reply. (transfer full) */
json_object *
vr_daemon_request_json(SoupServerMessage *msg)
{
    g_autoptr(GBytes) bytes = soup_message_body_flatten(soup_server_message_get_request_body(msg));
    json_tokener *tok = json_tokener_new();
    json_object *obj;
    gsize len = 0;
    const char *data = g_bytes_get_data(bytes, &len);

    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    obj = json_tokener_parse_ex(tok, data != NULL ? data : "", (int)len);
    if (obj != NULL &&
        (json_tokener_get_parse_end(tok) != len || !json_object_is_type(obj, json_type_object))) {
        json_object_put(obj);
        obj = NULL;
    }
    json_tokener_free(tok);
    if (obj == NULL)
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                              "the request body is not one JSON object");
    return obj;
}

/* A scheduler error as the API's: its code and status. */
static void
vr_daemon_reply_scheduler_error(SoupServerMessage *msg, const GError *error)
{
    static const struct {
        int code;
        guint status;
    } statuses[] = {
        { VR_SCHEDULER_ERROR_INVALID, SOUP_STATUS_BAD_REQUEST },
        { VR_SCHEDULER_ERROR_UNKNOWN_DOMAIN, SOUP_STATUS_NOT_FOUND },
        { VR_SCHEDULER_ERROR_ALREADY_ENABLED, SOUP_STATUS_CONFLICT },
        { VR_SCHEDULER_ERROR_BUSY, SOUP_STATUS_CONFLICT },
        { VR_SCHEDULER_ERROR_UNSUPPORTED, SOUP_STATUS_UNPROCESSABLE_ENTITY },
        { VR_SCHEDULER_ERROR_CYCLE_FAILED, SOUP_STATUS_BAD_GATEWAY },
        { VR_SCHEDULER_ERROR_SHUTDOWN_TIMEOUT, SOUP_STATUS_CONFLICT },
        { VR_SCHEDULER_ERROR_REFUSED, SOUP_STATUS_CONFLICT },
    };
    guint status = SOUP_STATUS_INTERNAL_SERVER_ERROR;

    for (guint i = 0; error->domain == VR_SCHEDULER_ERROR && i < G_N_ELEMENTS(statuses); i++) {
        if (statuses[i].code == error->code)
            status = statuses[i].status;
    }
    vr_daemon_reply_error(msg, status, vr_scheduler_error_code(error), "%s", error->message);
}

static bool
vr_daemon_primary_role(VrDaemon *daemon, SoupServerMessage *msg)
{
    if (daemon->scheduler != NULL)
        return true;
    vr_daemon_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "no-primary-role",
                          "the primary role is off: libvirt at '%s' cannot be reached",
                          daemon->config->daemon.libvirt_uri);
    return false;
}

/* POST /v1/relationships: replica-enable. */
static void
vr_daemon_post_relationship(VrDaemon *daemon, SoupServerMessage *msg)
{
    g_autoptr(json_object) request = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *id = NULL;

    if (!vr_daemon_primary_role(daemon, msg) || (request = vr_daemon_request_json(msg)) == NULL)
        return;
    if (!vr_scheduler_enable(daemon->scheduler, request, &id, &error)) {
        vr_daemon_reply_scheduler_error(msg, error);
        return;
    }
    vr_daemon_get_relationship(daemon, msg, id, false);
    if (soup_server_message_get_status(msg) == SOUP_STATUS_OK)
        soup_server_message_set_status(msg, SOUP_STATUS_CREATED, NULL);
}

/*
 * Whether the relationship @name is becoming the replica here (the reverse set-up copies
 * its disks): then @msg is answered 409 busy, no @what: a cycle would read the seed's image,
 * a disable or planned failover would be undone by the set-up's end.
 */
static bool
vr_daemon_reverse_busy(VrDaemon *daemon, SoupServerMessage *msg, const char *name, const char *what)
{
    g_autoptr(VrStateRelationship) rel = vr_daemon_find(daemon, name, NULL);

    if (rel == NULL || !vr_failover_reverse_running(daemon->failover, rel->id))
        return false;
    vr_daemon_reply_error(msg, SOUP_STATUS_CONFLICT, "busy",
                          "'%s' is becoming the replica of its relationship (its disks are "
                          "being copied): no %s",
                          name, what);
    return true;
}

/* The scheduler's VrSchedulerReversingFunc: no cycle of a relationship being reversed. */
static bool
vr_daemon_reversing(const char *id, gpointer user_data)
{
    VrDaemon *daemon = user_data;

    return vr_failover_reverse_running(daemon->failover, id);
}

static void
vr_daemon_delete_relationship(VrDaemon *daemon, SoupServerMessage *msg, const char *name)
{
    g_autoptr(GError) error = NULL;

    if (!vr_daemon_primary_role(daemon, msg) ||
        vr_daemon_reverse_busy(daemon, msg, name, "disable"))
        return;
    if (!vr_scheduler_disable(daemon->scheduler, name, &error)) {
        vr_daemon_reply_scheduler_error(msg, error);
        return;
    }
    soup_server_message_set_status(msg, SOUP_STATUS_NO_CONTENT, NULL);
}

typedef struct {
    VrDaemon *daemon;
    SoupServerMessage *msg;
} VrDaemonSync;

/* The answer of a paused request whose work ended: @body, or @error (both may be NULL when
 * the daemon stops: the API server goes next, the client sees its connection closed). */
static void
vr_daemon_sync_answer(VrDaemonSync *sync, json_object *body, const GError *error)
{
    if (!sync->daemon->stopping) {
        if (body != NULL)
            vr_daemon_reply_json(sync->msg, SOUP_STATUS_OK, body);
        else
            vr_daemon_reply_scheduler_error(sync->msg, error);
        soup_server_message_unpause(sync->msg);
    }
    g_object_unref(sync->msg);
    g_free(sync);
}

static void
vr_daemon_sync_done(GObject *source, GAsyncResult *result, gpointer data)
{
    g_autoptr(GError) error = NULL;
    /* No scheduler needed (it may be gone already). */
    g_autoptr(json_object) body = vr_scheduler_sync_finish(NULL, result, &error);

    vr_daemon_sync_answer(data, body, error);
}

static void
vr_daemon_post_action(VrDaemon *daemon, SoupServerMessage *msg, const char *name,
                      const char *action)
{
    g_autoptr(GError) error = NULL;

    /* The old primary becomes the replica (its disks are copied): no cycle of it meanwhile,
     * else the scheduler could not let go of it at the end. */
    if (!vr_daemon_primary_role(daemon, msg) || vr_daemon_reverse_busy(daemon, msg, name, action))
        return;
    if (strcmp(action, "sync") == 0) {
        VrDaemonSync *sync = g_new0(VrDaemonSync, 1);

        /* The answer waits for the replica's acknowledgement. */
        sync->daemon = daemon;
        sync->msg = g_object_ref(msg);
        soup_server_message_pause(msg);
        vr_scheduler_sync_async(daemon->scheduler, name, NULL, vr_daemon_sync_done, sync);
        return;
    }
    if (!vr_scheduler_action(daemon->scheduler, name, action, &error)) {
        vr_daemon_reply_scheduler_error(msg, error);
        return;
    }
    vr_daemon_get_relationship(daemon, msg, name, false);
}

static void
vr_daemon_planned_done(GObject *source, GAsyncResult *result, gpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) body = vr_scheduler_planned_failover_finish(NULL, result, &error);

    vr_daemon_sync_answer(data, body, error);
}

/*
 * POST /v1/relationships/{x}/planned-failover (docs/api.md): answered when the failover is
 * done or failed, as sync is; the CLI shows the final cycle's progress meanwhile.
 */
static void
vr_daemon_post_planned_failover(VrDaemon *daemon, SoupServerMessage *msg, const char *name)
{
    g_autoptr(json_object) request = NULL;
    SoupMessageBody *body = soup_server_message_get_request_body(msg);
    VrDaemonSync *sync;

    if (!vr_daemon_primary_role(daemon, msg) ||
        vr_daemon_reverse_busy(daemon, msg, name, "planned failover"))
        return;
    if (body->length == 0)
        request = json_object_new_object();
    else if ((request = vr_daemon_request_json(msg)) == NULL)
        return;
    /* Reverse replication: where the new primary reaches this host's replica role. */
    json_object_object_del(request, "reverse_peer");
    if (daemon->receiver != NULL && daemon->config->replica.server_name != NULL) {
        json_object *peer = json_object_new_object();

        json_object_object_add(peer, "server",
                               json_object_new_string(daemon->config->replica.server_name));
        json_object_object_add(peer, "port", json_object_new_int(daemon->replica_port));
        json_object_object_add(peer, "address", json_object_new_string(daemon->replica_address));
        json_object_object_add(request, "reverse_peer", peer);
    }
    sync = g_new0(VrDaemonSync, 1);
    sync->daemon = daemon;
    sync->msg = g_object_ref(msg);
    soup_server_message_pause(msg);
    vr_scheduler_planned_failover_async(daemon->scheduler, name, request, vr_daemon_planned_done,
                                        sync);
}

/* The end of a paused replica-reverse request (the seed copies of --accept ran meanwhile). */
static void
vr_daemon_reverse_done(GObject *source, GAsyncResult *result, gpointer data)
{
    VrDaemonSync *sync = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) body = vr_daemon_failover_reverse_request_finish(result, &error);
    const char *name = g_object_get_data(G_OBJECT(sync->msg), "vr-reverse-name");

    if (body == NULL)
        g_warning("reverse of '%s': %s", name, error->message);
    /* The daemon stops: the API server goes next, the client sees its connection closed. */
    if (!sync->daemon->stopping) {
        if (body != NULL) {
            vr_daemon_reply_json(sync->msg, SOUP_STATUS_OK, body);
        } else {
            guint status;
            const char *code = vr_failover_error_code(error, &status);

            vr_daemon_reply_error(sync->msg, status, code, "%s", error->message);
        }
        soup_server_message_unpause(sync->msg);
    }
    g_object_unref(sync->msg);
    g_free(sync);
}

/*
 * POST /v1/relationships/{x}/reverse: replica-reverse (vr-daemon-failover.h), answered when
 * it is done: --accept copies every disk first, in the background.
 */
static void
vr_daemon_post_reverse(VrDaemon *daemon, SoupServerMessage *msg, const char *name)
{
    g_autoptr(json_object) request = NULL;
    VrDaemonSync *sync;

    if ((request = vr_daemon_request_json(msg)) == NULL)
        return;
    /* No new set-up once the daemon stops: nothing would wait for its copies to end. */
    if (daemon->stopping) {
        vr_daemon_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "busy",
                              "the daemon stops: try again when it runs again");
        return;
    }
    sync = g_new0(VrDaemonSync, 1);
    sync->daemon = daemon;
    sync->msg = g_object_ref(msg);
    g_object_set_data_full(G_OBJECT(msg), "vr-reverse-name", g_strdup(name), g_free);
    soup_server_message_pause(msg);
    vr_daemon_failover_reverse_request_async(&daemon->planned, name, request,
                                             vr_daemon_reverse_done, sync);
}

/* POST /v1/imports: replica-import (vr-daemon-import.h). */
static void
vr_daemon_post_import(VrDaemon *daemon, SoupServerMessage *msg)
{
    g_autoptr(json_object) request = NULL;

    if (daemon->sink == NULL) {
        vr_daemon_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "no-replica-role",
                              "the replica role is off ([replica] enabled in virt-replica.conf)");
        return;
    }
    if ((request = vr_daemon_request_json(msg)) == NULL)
        return;
    vr_daemon_imports_post(daemon->imports, msg, request);
}

/* One Prometheus sample line with labels. */
static void
vr_daemon_metric(GString *out, const char *name, const VrStateRelationship *rel,
                 const char *extra_label, const char *extra_value, double value)
{
    g_string_append_printf(out, "%s{relationship=\"%s\",domain=\"%s\",role=\"%s\"", name, rel->id,
                           rel->domain_name, vr_daemon_role_name(rel->role));
    if (extra_label != NULL)
        g_string_append_printf(out, ",%s=\"%s\"", extra_label, extra_value);
    g_string_append_printf(out, "} %.17g\n", value);
}

static void
vr_daemon_help(GString *out, const char *name, const char *type, const char *help)
{
    g_string_append_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* GET /metrics: the health figures in Prometheus text format (docs/api.md, "Metrics"). */
static void
vr_daemon_get_metrics(VrDaemon *daemon, SoupServerMessage *msg)
{
    static const char *const healths[] = { "Normal", "Warning", "Critical" };
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) list = vr_state_relationship_list(daemon->state, &error);
    g_autoptr(GArray) stats = g_array_new(FALSE, TRUE, sizeof(VrStateStats));
    g_autoptr(GString) out = g_string_new(NULL);
    gsize len;
    char *text;

    if (list == NULL) {
        vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                              error->message);
        return;
    }
    g_array_set_size(stats, list->len);
    for (guint i = 0; i < list->len; i++) {
        VrStateRelationship *rel = list->pdata[i];

        if (!vr_state_stats(daemon->state, rel->id, vr_daemon_window_start_ms(daemon),
                            &g_array_index(stats, VrStateStats, i), &error)) {
            vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                                  error->message);
            return;
        }
    }
    vr_daemon_help(out, "virt_replica_up", "gauge", "1 while virt-replicad answers.");
    g_string_append(out, "virt_replica_up 1\n");
#define EACH(metric, type, help, label, label_value, expr)                  \
    do {                                                                    \
        vr_daemon_help(out, metric, type, help);                            \
        for (guint i = 0; i < list->len; i++) {                             \
            const VrStateRelationship *rel = list->pdata[i];                \
            const VrStateStats *s = &g_array_index(stats, VrStateStats, i); \
            (void)s;                                                        \
            vr_daemon_metric(out, metric, rel, label, label_value, (expr)); \
        }                                                                   \
    } while (0)
    EACH("virt_replica_cycles_ok", "gauge", "Successful cycles in the monitoring interval.", NULL,
         NULL, (double)s->cycles_ok);
    EACH("virt_replica_cycles_failed", "gauge", "Failed cycles in the monitoring interval.", NULL,
         NULL, (double)s->cycles_failed);
    EACH("virt_replica_cycles_missed", "gauge", "Missed cycles in the monitoring interval.", NULL,
         NULL, (double)s->cycles_missed);
    EACH("virt_replica_resyncs", "gauge", "Resynchronizations in the monitoring interval.", NULL,
         NULL, (double)s->resyncs);
    EACH("virt_replica_cycle_bytes_avg", "gauge",
         "Average disk bytes of a successful cycle in the monitoring interval.", NULL, NULL,
         (double)s->avg_bytes);
    EACH("virt_replica_cycle_bytes_max", "gauge",
         "Largest successful cycle in the monitoring interval, in disk bytes.", NULL, NULL,
         (double)s->max_bytes);
    EACH("virt_replica_cycle_latency_seconds_avg", "gauge",
         "Average duration of a successful cycle in the monitoring interval.", NULL, NULL,
         (double)s->avg_latency_ms / 1000.0);
    EACH("virt_replica_cycle_latency_seconds_max", "gauge",
         "Longest successful cycle in the monitoring interval.", NULL, NULL,
         (double)s->max_latency_ms / 1000.0);
    EACH("virt_replica_last_success_timestamp_seconds", "gauge",
         "When the last successful cycle finished (0: never).", NULL, NULL,
         (double)s->last_ok_ms / 1000.0);
    EACH("virt_replica_epoch", "gauge", "The relationship's epoch (failovers so far + 1).", NULL,
         NULL, (double)rel->epoch);
    for (guint h = 0; h < G_N_ELEMENTS(healths); h++) {
        if (h == 0)
            vr_daemon_help(out, "virt_replica_health", "gauge",
                           "1 for the relationship's health (Normal, Warning, Critical).");
        for (guint i = 0; i < list->len; i++) {
            const VrStateStats *s = &g_array_index(stats, VrStateStats, i);

            vr_daemon_metric(
                out, "virt_replica_health", list->pdata[i], "health", healths[h],
                strcmp(vr_daemon_relationship_health(daemon, list->pdata[i], s), healths[h]) == 0
                    ? 1
                    : 0);
        }
    }
    /* Only where it is known: a missing sample is Prometheus' "unknown". */
    vr_daemon_help(out, "virt_replica_pending_bytes", "gauge",
                   "Bytes written since the last acknowledged cycle (primary).");
    for (guint i = 0; i < list->len && daemon->scheduler != NULL; i++) {
        const VrStateRelationship *rel = list->pdata[i];
        int64_t pending = rel->role == VR_STATE_ROLE_PRIMARY
                              ? vr_scheduler_pending_bytes(daemon->scheduler, rel->id)
                              : -1;

        if (pending >= 0)
            vr_daemon_metric(out, "virt_replica_pending_bytes", rel, NULL, NULL, (double)pending);
    }
#undef EACH
    len = out->len;
    text = g_string_free(g_steal_pointer(&out), FALSE);
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    soup_server_message_set_response(msg, "text/plain; version=0.0.4", SOUP_MEMORY_TAKE, text, len);
}

static void
vr_daemon_api_handler(SoupServer *server, SoupServerMessage *msg, const char *path,
                      GHashTable *query, gpointer user_data)
{
    VrDaemon *daemon = user_data;
    const char *method = soup_server_message_get_method(msg);
    bool get = strcmp(method, SOUP_METHOD_GET) == 0;
    bool post = strcmp(method, SOUP_METHOD_POST) == 0;
    g_auto(GStrv) parts = NULL;
    guint n;

    if (strcmp(path, "/metrics") == 0) {
        if (get)
            vr_daemon_get_metrics(daemon, msg);
        else
            vr_daemon_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method",
                                  "/metrics is read with GET");
        return;
    }
    if (!g_str_has_prefix(path, VR_DAEMON_API_PREFIX)) {
        vr_daemon_reply_error(msg, SOUP_STATUS_NOT_FOUND, "not-found", "no resource '%s'", path);
        return;
    }
    parts = g_strsplit(path + strlen(VR_DAEMON_API_PREFIX), "/", -1);
    n = g_strv_length(parts);
    if (n == 1 && strcmp(parts[0], "daemon") == 0 && get) {
        vr_daemon_get_daemon(daemon, msg);
    } else if (n == 1 && strcmp(parts[0], "relationships") == 0 && get) {
        vr_daemon_get_relationships(daemon, msg);
    } else if (n == 2 && strcmp(parts[0], "relationships") == 0 && parts[1][0] != '\0' && get) {
        vr_daemon_get_relationship(daemon, msg, parts[1], false);
    } else if (n == 3 && strcmp(parts[0], "relationships") == 0 && parts[1][0] != '\0' &&
               strcmp(parts[2], "recovery-points") == 0 && get) {
        vr_daemon_get_relationship(daemon, msg, parts[1], true);
    } else if (n == 1 && strcmp(parts[0], "relationships") == 0 && post) {
        vr_daemon_post_relationship(daemon, msg);
    } else if (n == 2 && strcmp(parts[0], "relationships") == 0 && parts[1][0] != '\0' &&
               strcmp(method, SOUP_METHOD_DELETE) == 0) {
        vr_daemon_delete_relationship(daemon, msg, parts[1]);
    } else if (n == 3 && strcmp(parts[0], "relationships") == 0 && parts[1][0] != '\0' && post &&
               (strcmp(parts[2], "sync") == 0 || strcmp(parts[2], "suspend") == 0 ||
                strcmp(parts[2], "resume") == 0 || strcmp(parts[2], "resync") == 0)) {
        vr_daemon_post_action(daemon, msg, parts[1], parts[2]);
    } else if (n == 3 && strcmp(parts[0], "relationships") == 0 && parts[1][0] != '\0' && post &&
               strcmp(parts[2], "planned-failover") == 0) {
        vr_daemon_post_planned_failover(daemon, msg, parts[1]);
    } else if (n == 3 && strcmp(parts[0], "relationships") == 0 && parts[1][0] != '\0' && post &&
               strcmp(parts[2], "reverse") == 0) {
        vr_daemon_post_reverse(daemon, msg, parts[1]);
    } else if (n == 3 && strcmp(parts[0], "relationships") == 0 && parts[1][0] != '\0' && post &&
               vr_daemon_failover_is_action(parts[2])) {
        vr_daemon_failover_post(daemon->failover, msg, parts[1], parts[2]);
    } else if (n == 2 && strcmp(parts[0], "hooks") == 0 && strcmp(parts[1], "qemu") == 0 && post) {
        vr_daemon_post_hook(daemon, msg);
    } else if (n == 1 && strcmp(parts[0], "imports") == 0 && post) {
        vr_daemon_post_import(daemon, msg);
    } else if (!vr_daemon_auth_route(&(VrDaemonReplica){ daemon->config, daemon->state,
                                                         daemon->authz, daemon->replica_address,
                                                         daemon->replica_port },
                                     msg, method, parts, n)) {
        /* Not the replica role's resources either (vr-daemon-auth.c). */
        vr_daemon_reply_error(msg, SOUP_STATUS_NOT_FOUND, "not-found", "no resource %s %s", method,
                              path);
    }
}

/* Refuse request bodies above the API's limit before they are read. */
static void
vr_daemon_api_request_started(SoupServer *server, SoupServerMessage *msg, gpointer user_data)
{
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
    goffset length = soup_message_headers_get_content_length(headers);

    if (length > VR_DAEMON_API_MAX_BODY) {
        soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
        vr_daemon_reply_error(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too-large",
                              "a request body of the local API is at most %d bytes",
                              VR_DAEMON_API_MAX_BODY);
    }
}

/*
 * The API socket: another daemon answering on it is an error; a socket nobody answers on
 * is a leftover of a crash and goes. Created 0600 (umask around bind: no window where
 * others may connect), 0660 with the configured group.
 */
static GSocket *
vr_daemon_api_socket(VrDaemon *daemon, GError **error)
{
    const char *path = daemon->config->daemon.socket;
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(path);
    g_autoptr(GSocket) sock = NULL;
    g_autofree char *dir = g_path_get_dirname(path);
    const char *group = daemon->config->daemon.socket_group;
    mode_t old_mask;
    bool bound;

    if (g_mkdir_with_parents(dir, 0755) < 0) {
        int errsv = errno;

        g_set_error(error, VR_DAEMON_ERROR, VR_DAEMON_ERROR_FAILED,
                    "cannot make the socket directory '%s': %s", dir, g_strerror(errsv));
        return NULL;
    }
    if (g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_autoptr(GSocket) probe =
            g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, 0, NULL);

        if (probe != NULL && g_socket_connect(probe, address, NULL, NULL)) {
            g_set_error(error, VR_DAEMON_ERROR, VR_DAEMON_ERROR_RUNNING,
                        "another virt-replicad answers on '%s'", path);
            return NULL;
        }
        g_debug("removing the stale socket '%s'", path);
        unlink(path);
    }
    sock = g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, 0, error);
    if (sock == NULL)
        return NULL;
    old_mask = umask(group != NULL ? 0117 : 0177);
    bound = g_socket_bind(sock, address, FALSE, error);
    umask(old_mask);
    if (!bound) {
        g_prefix_error(error, "cannot listen on '%s': ", path);
        return NULL;
    }
    daemon->socket_path = g_strdup(path);
    if (group != NULL) {
        struct group *gr = getgrnam(group);

        if (gr == NULL || chown(path, (uid_t)-1, gr->gr_gid) < 0) {
            g_set_error(error, VR_DAEMON_ERROR, VR_DAEMON_ERROR_FAILED,
                        "cannot give the socket '%s' to group '%s'", path, group);
            return NULL;
        }
    }
    g_socket_set_listen_backlog(sock, 32);
    if (!g_socket_listen(sock, error))
        return NULL;
    return g_steal_pointer(&sock);
}

static bool
vr_daemon_api_start(VrDaemon *daemon, GError **error)
{
    g_autoptr(GSocket) sock = vr_daemon_api_socket(daemon, error);

    if (sock == NULL)
        return false;
    daemon->api = soup_server_new("server-header", "virt-replicad", NULL);
    g_signal_connect(daemon->api, "request-started", G_CALLBACK(vr_daemon_api_request_started),
                     daemon);
    soup_server_add_handler(daemon->api, NULL, vr_daemon_api_handler, daemon, NULL);
    if (!soup_server_listen_socket(daemon->api, sock, 0, error)) {
        g_prefix_error(error, "cannot serve the API on '%s': ", daemon->socket_path);
        return false;
    }
    return true;
}

/* ---- the replica role ------------------------------------------------------------------ */

static void
vr_daemon_refused(const char *address, const char *reason, gpointer user_data)
{
    g_warning("replica: refused %s: %s", address, reason);
}

static bool
vr_daemon_replica_start(VrDaemon *daemon, GError **error)
{
    const VrConfig *config = daemon->config;
    g_autoptr(GInetAddress) address = NULL;
    g_autoptr(GSocketAddress) listen = NULL;
    GSList *uris;

    if (g_str_has_prefix(config->replica.listen, "network:") && daemon->conn == NULL) {
        g_set_error(error, VR_DAEMON_ERROR, VR_DAEMON_ERROR_FAILED,
                    "[replica] listen names a libvirt network, and libvirt at '%s' cannot be "
                    "reached",
                    config->daemon.libvirt_uri);
        return false;
    }
    address = vr_net_resolve(config->replica.listen, daemon->conn, G_SOCKET_FAMILY_INVALID, error);
    if (address == NULL) {
        g_prefix_error(error, "[replica] listen: ");
        return false;
    }
    if (!config->certificates.check_revocation)
        g_warning("replica: certificate revocation is not checked ([certificates] "
                  "check-revocation = false): a revoked primary is accepted");
    daemon->client_policy = vr_tls_policy_new(
        &(VrTlsPolicyConfig){
            .ca_file = config->certificates.ca,
            .crl_file = config->certificates.crl,
            .check_revocation = config->certificates.check_revocation,
            .peer_role = VR_TLS_PEER_CLIENT,
        },
        error);
    if (daemon->client_policy == NULL)
        return false;
    daemon->authz = vr_config_new_authz(config, error);
    /* Then the entries added through the API, kept in the state database. */
    if (daemon->authz == NULL || !vr_daemon_auth_load(config, daemon->state, daemon->authz, error))
        return false;
    daemon->sink = vr_replica_sink_new(daemon->authz, error);
    if (daemon->sink == NULL)
        return false;
    vr_replica_sink_set_recovery_points(daemon->sink, config->primary.default_recovery_points);
    vr_replica_sink_set_point_interval(daemon->sink, config->replica.point_interval);
    vr_replica_sink_set_state(daemon->sink, daemon->state);
    daemon->imports = vr_daemon_imports_new(daemon->authz, daemon->sink);
    /* The standby domains, defined (never started) in this host's libvirt. */
    if (daemon->conn != NULL) {
        vr_replica_sink_set_standby(daemon->sink, daemon->conn, config->replica.standby_name_rule,
                                    config->network_map);
        /* Failover of the standby domains (vr-failover.h). */
        daemon->failover = vr_failover_new(&(VrFailoverConfig){
            .state = daemon->state,
            .sink = daemon->sink,
            .authz = daemon->authz,
            .conn = daemon->conn,
            .test_network = config->replica.test_network,
            .config = config,
        });
        /* A planned failover asked by a primary (POST /v1/failover/...): the daemon's. */
        vr_replica_sink_set_failover_handler(daemon->sink, vr_daemon_failover_planned,
                                             &daemon->planned);
    } else
        g_warning("replica: no standby domains: libvirt at '%s' cannot be reached",
                  config->daemon.libvirt_uri);
    listen = g_inet_socket_address_new(address, (guint16)config->replica.port);
    daemon->receiver = vr_receiver_new(
        &(VrReceiverConfig){
            .cert_file = config->certificates.cert,
            .key_file = config->certificates.key,
            .policy = daemon->client_policy,
            .authz = daemon->authz,
            .address = G_INET_SOCKET_ADDRESS(listen),
            .max_body_size = config->replica.max_body_size,
            .sink = vr_replica_sink_get_sink(),
            .sink_data = daemon->sink,
            .max_active = config->daemon.max_active_transfers,
            .refused = vr_daemon_refused,
        },
        error);
    if (daemon->receiver == NULL)
        return false;
    uris = vr_receiver_get_uris(daemon->receiver);
    daemon->replica_port = (guint16)g_uri_get_port(uris->data);
    g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
    daemon->replica_address = g_inet_address_to_string(address);
    g_info("replica: listening on %s port %u", daemon->replica_address, daemon->replica_port);
    return true;
}

/* ---- lifecycle ------------------------------------------------------------------------- */

/*
 * The libvirt connection, with libvirt's event loop running for QMP events. Without it the
 * primary role is off (said once) and the replica role still runs.
 */
static void
vr_daemon_libvirt_open(VrDaemon *daemon)
{
    g_autoptr(GError) local = NULL;
    const char *uri = daemon->config->daemon.libvirt_uri;

    if (!vr_qmp_libvirt_event_loop_start(&local)) {
        g_warning("primary role off: libvirt's event loop: %s", local->message);
        return;
    }
    daemon->conn = virConnectOpen(uri);
    if (daemon->conn == NULL)
        g_warning("primary role off: cannot connect to libvirt at '%s': %s", uri,
                  virGetLastErrorMessage());
}

VrDaemon *
vr_daemon_new(VrConfig *config, GError **error)
{
    g_autoptr(VrDaemon) daemon = g_new0(VrDaemon, 1);
    g_autofree char *db = NULL;

    daemon->config = config;
    daemon->started = g_get_real_time() / G_USEC_PER_SEC;
    daemon->loop = g_main_loop_new(g_main_context_get_thread_default(), FALSE);
    if (g_mkdir_with_parents(config->daemon.state_dir, 0700) < 0) {
        int errsv = errno;

        g_set_error(error, VR_DAEMON_ERROR, VR_DAEMON_ERROR_FAILED,
                    "cannot make the state directory '%s': %s", config->daemon.state_dir,
                    g_strerror(errsv));
        return NULL;
    }
    db = g_build_filename(config->daemon.state_dir, "state.db", NULL);
    daemon->state = vr_state_open(db, error);
    if (daemon->state == NULL)
        return NULL;
    if (!vr_daemon_api_start(daemon, error))
        return NULL;
    vr_daemon_libvirt_open(daemon);
    if (daemon->conn != NULL) {
        daemon->scheduler = vr_scheduler_new(config, daemon->state, daemon->conn, error);
        if (daemon->scheduler == NULL)
            return NULL;
    }
    if (config->replica.enabled && !vr_daemon_replica_start(daemon, error))
        return NULL;
    /* Planned failover: this host as the old primary becomes the replica (--reverse), or as
     * the replica adopts the relationship as its primary. */
    daemon->planned.failover = daemon->failover;
    daemon->planned.scheduler = daemon->scheduler;
    daemon->planned.state = daemon->state;
    daemon->planned.conn = daemon->conn;
    if (config->certificates.cert != NULL) {
        g_autoptr(GTlsCertificate) cert =
            g_tls_certificate_new_from_file(config->certificates.cert, NULL);

        if (cert != NULL)
            daemon->planned.identity = vr_tls_policy_peer_name_gtls(cert, NULL);
    }
    if (daemon->scheduler != NULL)
        vr_scheduler_set_reverse_handler(daemon->scheduler, vr_daemon_failover_reverse,
                                         &daemon->planned);
    if (daemon->scheduler != NULL)
        vr_scheduler_set_reversing_func(daemon->scheduler, vr_daemon_reversing, daemon);
    /* Reverse set-ups a stop interrupted end once the loop runs (vr-daemon-failover.h). */
    vr_daemon_failover_resume(&daemon->planned);
    g_info("started: API on '%s', state in '%s'%s", daemon->socket_path, db,
           daemon->receiver != NULL ? ", replica role on" : "");
    return g_steal_pointer(&daemon);
}

void
vr_daemon_run(VrDaemon *daemon)
{
    g_main_loop_run(daemon->loop);
}

void
vr_daemon_quit(VrDaemon *daemon)
{
    g_main_loop_quit(daemon->loop);
}

guint16
vr_daemon_get_replica_port(VrDaemon *daemon)
{
    return daemon->replica_port;
}

void
vr_daemon_free(VrDaemon *daemon)
{
    GMainContext *context;
    bool owner;

    if (daemon == NULL)
        return;
    /*
     * Own the daemon's context while it is taken apart: once its loop stopped, another
     * thread that iterates the global default context (a library waiting on it) could
     * otherwise dispatch our sources, a cycle's completion among them, meanwhile.
     */
    context = g_main_loop_get_context(daemon->loop);
    owner = g_main_context_acquire(context);
    daemon->stopping = true;
    /* Before the context is iterated below: a running import is aborted, not finished. */
    g_clear_pointer(&daemon->imports, vr_daemon_imports_free);
    /* The reverse set-ups' copies are killed, their ends run now (a planned failover's in
     * the scheduler among them), while everything they use is still here. */
    vr_failover_reverse_stop(daemon->failover);
    /* Running cycles end (their teardown runs) before anything they use goes; the waiting
     * syncs' callbacks run now, while the daemon is still here. */
    g_clear_pointer(&daemon->scheduler, vr_scheduler_free);
    /* A set-up's end that runs from here on must not reach the freed scheduler. */
    daemon->planned.scheduler = NULL;
    while (g_main_context_iteration(context, FALSE))
        ;
    /* The receiver first: it aborts its transfers into the sink's stores. */
    g_clear_pointer(&daemon->receiver, vr_receiver_free);
    g_clear_pointer(&daemon->failover, vr_failover_free);
    g_clear_pointer(&daemon->sink, vr_replica_sink_free);
    g_clear_pointer(&daemon->authz, vr_authz_free);
    g_clear_pointer(&daemon->client_policy, vr_tls_policy_free);
    if (daemon->api != NULL) {
        soup_server_disconnect(daemon->api);
        g_clear_object(&daemon->api);
    }
    if (daemon->socket_path != NULL)
        unlink(daemon->socket_path);
    g_free(daemon->socket_path);
    g_free(daemon->planned.identity);
    g_free(daemon->replica_address);
    if (daemon->conn != NULL)
        virConnectClose(daemon->conn);
    g_clear_pointer(&daemon->state, vr_state_free);
    if (owner)
        g_main_context_release(context);
    g_clear_pointer(&daemon->loop, g_main_loop_unref);
    vr_config_free(daemon->config);
    g_free(daemon);
}
