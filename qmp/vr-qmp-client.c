/*
 * vr-qmp-client.c: an asynchronous QMP client
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-qmp-client.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-message.h"

typedef enum {
    VR_QMP_CLIENT_NEW,
    VR_QMP_CLIENT_OPENING,  /* channel opening, or waiting for the greeting */
    VR_QMP_CLIENT_STARTING, /* qmp_capabilities and query-version in flight */
    VR_QMP_CLIENT_READY,
    VR_QMP_CLIENT_CLOSED,
} VrQmpClientState;

/* One command waiting for its reply. */
typedef struct {
    VrQmpClient *client; /* not a reference: the client owns the pending table */
    char *id;
    char *command;
    GTask *task;
    GSource *timeout_source;
    GSource *cancel_source;
} VrQmpPending;

typedef struct {
    guint id;
    char *event;
    VrQmpEventFunc func;
    gpointer user_data;
    GDestroyNotify destroy;
} VrQmpSubscription;

struct _VrQmpEventWatch {
    VrQmpClient *client; /* a reference */
    guint subscription;
    char *event;
    char *key;
    char *value;
    GQueue events; /* json_object *, whole messages */
    GTask *waiter;
    GSource *timeout_source;
    GSource *cancel_source;
};

struct _VrQmpClient {
    GObject parent_instance;

    VrQmpChannel *channel;
    GMainContext *context;
    VrQmpClientState state;
    GError *close_error;
    guint default_timeout_ms;
    guint64 next_id;
    GHashTable *pending; /* id -> VrQmpPending, owned */
    GPtrArray *subscriptions;
    guint next_subscription;
    json_object *version;

    /* The connect in progress. */
    GTask *connect_task;
    GSource *connect_timeout;
    GSource *connect_cancel;
};

G_DEFINE_TYPE(VrQmpClient, vr_qmp_client, G_TYPE_OBJECT)

enum {
    SIGNAL_CLOSED,
    N_SIGNALS,
};

static guint signals[N_SIGNALS];

static void vr_qmp_client_fail(VrQmpClient *client, GError *error);
static void vr_qmp_event_watch_finish_wait(VrQmpEventWatch *watch, json_object *message,
                                           GError *error);

static void
vr_qmp_subscription_free(gpointer data)
{
    VrQmpSubscription *sub = data;

    if (sub->destroy != NULL)
        sub->destroy(sub->user_data);
    g_free(sub->event);
    g_free(sub);
}

static void
vr_qmp_source_destroy(GSource **source)
{
    if (*source == NULL)
        return;
    g_source_destroy(*source);
    g_clear_pointer(source, g_source_unref);
}

static void
vr_qmp_pending_free(gpointer data)
{
    VrQmpPending *pending = data;

    vr_qmp_source_destroy(&pending->timeout_source);
    vr_qmp_source_destroy(&pending->cancel_source);
    g_clear_object(&pending->task);
    g_free(pending->command);
    g_free(pending->id);
    g_free(pending);
}

/*
 * Take @id out of the pending table and complete its task with @result (transfer full) or
 * @error (transfer full). The table entry is gone before the callback can run.
 */
static void
vr_qmp_pending_complete(VrQmpClient *client, const char *id, json_object *result, GError *error)
{
    VrQmpPending *pending = NULL;
    g_autoptr(GTask) task = NULL;

    if (!g_hash_table_steal_extended(client->pending, id, NULL, (gpointer *)&pending)) {
        if (result != NULL)
            json_object_put(result);
        if (error != NULL)
            g_error_free(error);
        return;
    }
    task = g_steal_pointer(&pending->task);
    vr_qmp_pending_free(pending);

    if (error != NULL)
        g_task_return_error(task, error);
    else
        g_task_return_pointer(task, result, vr_json_free);
}

static gboolean
vr_qmp_pending_timeout_cb(gpointer user_data)
{
    VrQmpPending *pending = user_data;
    GError *error;

    error = g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_TIMEOUT,
                        "no reply to '%s' from '%s' within the timeout", pending->command,
                        pending->client->channel->peer);
    g_debug("command %s ('%s') timed out", pending->id, pending->command);
    /* The source is being dispatched: let the dispatch drop it, not the pending's free. */
    g_clear_pointer(&pending->timeout_source, g_source_unref);
    vr_qmp_pending_complete(pending->client, pending->id, NULL, error);
    return G_SOURCE_REMOVE;
}

static gboolean
vr_qmp_pending_cancelled_cb(GCancellable *cancellable, gpointer user_data)
{
    VrQmpPending *pending = user_data;
    GError *error = NULL;

    g_cancellable_set_error_if_cancelled(cancellable, &error);
    g_clear_pointer(&pending->cancel_source, g_source_unref);
    vr_qmp_pending_complete(pending->client, pending->id, NULL, error);
    return G_SOURCE_REMOVE;
}

static void
vr_qmp_client_dispatch_event(VrQmpClient *client, json_object *message)
{
    const char *name = vr_json_get_string(message, "event");
    json_object *data = vr_json_get_object(message, "data");
    g_autoptr(json_object) empty = NULL;
    g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(guint));

    if (data == NULL)
        data = empty = json_object_new_object();

    /* A callback may unsubscribe anyone: walk a snapshot of the ids, look each up again. */
    for (guint i = 0; i < client->subscriptions->len; i++) {
        VrQmpSubscription *sub = g_ptr_array_index(client->subscriptions, i);

        g_array_append_val(ids, sub->id);
    }
    for (guint i = 0; i < ids->len; i++) {
        guint id = g_array_index(ids, guint, i);

        for (guint j = 0; j < client->subscriptions->len; j++) {
            VrQmpSubscription *sub = g_ptr_array_index(client->subscriptions, j);

            if (sub->id != id)
                continue;
            if (sub->event == NULL || g_str_equal(sub->event, name))
                sub->func(client, name, data, message, sub->user_data);
            break;
        }
    }
}

static void vr_qmp_client_start_negotiation(VrQmpClient *client);

/* For work started after the client closed: always VR_QMP_ERROR_CLOSED, with the cause. */
static GError *
vr_qmp_client_closed_error(VrQmpClient *client)
{
    if (g_error_matches(client->close_error, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED))
        return g_error_copy(client->close_error);
    return g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_CLOSED, "QMP client of '%s' is closed: %s",
                       client->channel->peer, client->close_error->message);
}

static void
vr_qmp_client_sink_message(json_object *message, gpointer user_data)
{
    g_autoptr(VrQmpClient) client = g_object_ref(VR_QMP_CLIENT(user_data));
    g_autoptr(json_object) owned = message;
    g_autoptr(GError) error = NULL;
    VrQmpMessageKind kind;
    const char *id = NULL;

    if (client->state == VR_QMP_CLIENT_CLOSED)
        return;
    if (!vr_qmp_message_classify(message, &kind, &id, &error)) {
        vr_qmp_client_fail(client, g_steal_pointer(&error));
        return;
    }

    switch (kind) {
    case VR_QMP_MESSAGE_GREETING:
        if (client->state != VR_QMP_CLIENT_OPENING || !client->channel->ops->negotiates) {
            vr_qmp_client_fail(client, g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                                                   "unexpected QMP greeting from '%s'",
                                                   client->channel->peer));
            return;
        }
        vr_qmp_client_start_negotiation(client);
        return;
    case VR_QMP_MESSAGE_EVENT:
        if (client->state == VR_QMP_CLIENT_OPENING && client->channel->ops->negotiates) {
            vr_qmp_client_fail(client, g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                                                   "QMP event before the greeting from '%s'",
                                                   client->channel->peer));
            return;
        }
        vr_qmp_client_dispatch_event(client, message);
        return;
    case VR_QMP_MESSAGE_RETURN:
    case VR_QMP_MESSAGE_ERROR:
        break;
    }

    if (id == NULL) {
        /* QEMU answers without an id only when it could not parse what it got. */
        json_object *err = vr_json_get_object(message, "error");
        const char *desc = vr_json_get_string(err, "desc");

        vr_qmp_client_fail(client,
                           g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                                       "reply without id from '%s': %s", client->channel->peer,
                                       desc != NULL ? desc : "no description"));
        return;
    }

    if (kind == VR_QMP_MESSAGE_RETURN) {
        json_object *ret = NULL;

        json_object_object_get_ex(message, "return", &ret);
        vr_qmp_pending_complete(client, id, json_object_get(ret), NULL);
    } else {
        VrQmpPending *pending = g_hash_table_lookup(client->pending, id);

        if (pending == NULL) {
            g_debug("dropping late error reply %s", id);
            return;
        }
        vr_qmp_pending_complete(
            client, id, NULL,
            vr_qmp_error_new_from_reply(pending->command, vr_json_get_object(message, "error")));
    }
}

static void
vr_qmp_client_sink_closed(const GError *error, gpointer user_data)
{
    VrQmpClient *client = VR_QMP_CLIENT(user_data);

    vr_qmp_client_fail(client, g_error_copy(error));
}

static void
vr_qmp_client_sink_failed(const char *id, const GError *error, gpointer user_data)
{
    VrQmpClient *client = VR_QMP_CLIENT(user_data);

    vr_qmp_pending_complete(client, id, NULL, g_error_copy(error));
}

static const VrQmpChannelSink vr_qmp_client_sink = {
    .message = vr_qmp_client_sink_message,
    .failed = vr_qmp_client_sink_failed,
    .closed = vr_qmp_client_sink_closed,
};

/*
 * Move to the closed state: close the channel, fail everything in flight with @error
 * (transfer full), and emit "closed" once.
 */
static void
vr_qmp_client_fail(VrQmpClient *client, GError *error)
{
    g_autoptr(VrQmpClient) self = g_object_ref(client);
    g_autoptr(GList) ids = NULL;
    g_autoptr(GTask) connect_task = NULL;

    if (client->state == VR_QMP_CLIENT_CLOSED) {
        g_error_free(error);
        return;
    }
    g_debug("closing QMP client of '%s': %s", client->channel->peer, error->message);
    client->state = VR_QMP_CLIENT_CLOSED;
    client->close_error = error;
    client->channel->ops->close(client->channel);

    ids = g_hash_table_get_keys(client->pending);
    for (GList *l = ids; l != NULL; l = l->next) {
        g_autofree char *id = g_strdup(l->data);

        vr_qmp_pending_complete(client, id, NULL, g_error_copy(client->close_error));
    }

    vr_qmp_source_destroy(&client->connect_timeout);
    vr_qmp_source_destroy(&client->connect_cancel);
    connect_task = g_steal_pointer(&client->connect_task);
    if (connect_task != NULL)
        g_task_return_error(connect_task, g_error_copy(client->close_error));

    g_signal_emit(client, signals[SIGNAL_CLOSED], 0, client->close_error);
}

static void
vr_qmp_client_finalize(GObject *object)
{
    VrQmpClient *client = VR_QMP_CLIENT(object);

    if (client->state != VR_QMP_CLIENT_CLOSED && client->channel != NULL)
        client->channel->ops->close(client->channel);
    g_assert(client->connect_task == NULL);
    g_hash_table_unref(client->pending);
    g_ptr_array_unref(client->subscriptions);
    vr_qmp_channel_free(client->channel);
    g_clear_pointer(&client->version, json_object_put);
    g_clear_error(&client->close_error);
    g_main_context_unref(client->context);

    G_OBJECT_CLASS(vr_qmp_client_parent_class)->finalize(object);
}

static void
vr_qmp_client_dispose(GObject *object)
{
    VrQmpClient *client = VR_QMP_CLIENT(object);

    /* Pending commands hold no reference on the client: fail them before it goes. */
    if (client->state != VR_QMP_CLIENT_CLOSED && client->state != VR_QMP_CLIENT_NEW) {
        vr_qmp_client_fail(
            client, g_error_new_literal(VR_QMP_ERROR, VR_QMP_ERROR_CLOSED, "QMP client disposed"));
    }
    G_OBJECT_CLASS(vr_qmp_client_parent_class)->dispose(object);
}

static void
vr_qmp_client_class_init(VrQmpClientClass *klass)
{
    GObjectClass *object_class = G_OBJECT_CLASS(klass);

    object_class->dispose = vr_qmp_client_dispose;
    object_class->finalize = vr_qmp_client_finalize;

    /*
     * VrQmpClient::closed:
     * @error: why (a GError, transfer none)
     *
     * The channel closed, or the client was closed. Emitted once.
     */
    signals[SIGNAL_CLOSED] = g_signal_new("closed", G_TYPE_FROM_CLASS(klass), G_SIGNAL_RUN_LAST, 0,
                                          NULL, NULL, NULL, G_TYPE_NONE, 1, G_TYPE_ERROR);
}

static void
vr_qmp_client_init(VrQmpClient *client)
{
    client->pending = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, vr_qmp_pending_free);
    client->subscriptions = g_ptr_array_new_with_free_func(vr_qmp_subscription_free);
    client->default_timeout_ms = VR_QMP_DEFAULT_TIMEOUT_MS;
    client->next_subscription = 1;
    client->next_id = 1;
}

VrQmpClient *
vr_qmp_client_new(VrQmpChannel *channel)
{
    VrQmpClient *client = g_object_new(VR_QMP_TYPE_CLIENT, NULL);

    client->channel = channel;
    client->context = g_main_context_ref_thread_default();
    vr_qmp_channel_attach(channel, client->context, &vr_qmp_client_sink, client);
    return client;
}

void
vr_qmp_client_set_default_timeout(VrQmpClient *client, guint timeout_ms)
{
    g_return_if_fail(VR_QMP_IS_CLIENT(client));
    g_return_if_fail(timeout_ms > 0);

    client->default_timeout_ms = timeout_ms;
}

bool
vr_qmp_client_is_connected(VrQmpClient *client)
{
    g_return_val_if_fail(VR_QMP_IS_CLIENT(client), false);

    return client->state == VR_QMP_CLIENT_READY;
}

const char *
vr_qmp_client_get_peer(VrQmpClient *client)
{
    g_return_val_if_fail(VR_QMP_IS_CLIENT(client), NULL);

    return client->channel->peer;
}

json_object *
vr_qmp_client_get_version(VrQmpClient *client)
{
    g_return_val_if_fail(VR_QMP_IS_CLIENT(client), NULL);

    return client->version;
}

/* ---- commands ---------------------------------------------------------------------- */

static void
vr_qmp_client_send(VrQmpClient *client, const char *command, json_object *arguments,
                   GUnixFDList *fds, guint timeout_ms, GCancellable *cancellable, GTask *task)
{
    g_autoptr(json_object) owned_args = arguments;
    g_autoptr(json_object) msg = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *id = NULL;
    VrQmpPending *pending;

    if (client->state == VR_QMP_CLIENT_CLOSED) {
        g_task_return_error(task, vr_qmp_client_closed_error(client));
        g_object_unref(task);
        return;
    }
    if (arguments != NULL && !json_object_is_type(arguments, json_type_object)) {
        g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                                "arguments of '%s' are not a JSON object", command);
        g_object_unref(task);
        return;
    }

    pending = g_new0(VrQmpPending, 1);
    pending->client = client;
    pending->id = g_strdup_printf("vr-%" G_GUINT64_FORMAT, client->next_id++);
    pending->command = g_strdup(command);
    pending->task = task;

    msg = json_object_new_object();
    json_object_object_add(msg, "execute", json_object_new_string(command));
    if (arguments != NULL)
        json_object_object_add(msg, "arguments", g_steal_pointer(&owned_args));
    json_object_object_add(msg, "id", json_object_new_string(pending->id));

    g_hash_table_insert(client->pending, pending->id, pending);

    pending->timeout_source =
        g_timeout_source_new(timeout_ms != 0 ? timeout_ms : client->default_timeout_ms);
    g_source_set_callback(pending->timeout_source, vr_qmp_pending_timeout_cb, pending, NULL);
    g_source_attach(pending->timeout_source, client->context);
    if (cancellable != NULL) {
        pending->cancel_source = g_cancellable_source_new(cancellable);
        g_source_set_callback(pending->cancel_source, G_SOURCE_FUNC(vr_qmp_pending_cancelled_cb),
                              pending, NULL);
        g_source_attach(pending->cancel_source, client->context);
    }

    g_debug("-> %s %s", client->channel->peer, json_object_to_json_string(msg));
    /* A failing send may close the client, which completes and frees @pending: keep its id. */
    id = g_strdup(pending->id);
    if (!client->channel->ops->send(client->channel, msg, id, fds, &error)) {
        g_prefix_error(&error, "cannot send '%s' to '%s': ", command, client->channel->peer);
        vr_qmp_pending_complete(client, id, NULL, g_steal_pointer(&error));
    }
}

void
vr_qmp_client_execute_async(VrQmpClient *client, const char *command, json_object *arguments,
                            GUnixFDList *fds, guint timeout_ms, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data)
{
    GTask *task;

    g_return_if_fail(VR_QMP_IS_CLIENT(client));
    g_return_if_fail(command != NULL);

    task = g_task_new(client, cancellable, callback, user_data);
    g_task_set_source_tag(task, vr_qmp_client_execute_async);
    g_task_set_task_data(task, g_strdup(command), g_free);
    if (client->state != VR_QMP_CLIENT_READY && client->state != VR_QMP_CLIENT_CLOSED) {
        if (arguments != NULL)
            json_object_put(arguments);
        g_task_return_new_error(task, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED,
                                "QMP client of '%s' is not connected", client->channel->peer);
        g_object_unref(task);
        return;
    }
    vr_qmp_client_send(client, command, arguments, fds, timeout_ms, cancellable, task);
}

json_object *
vr_qmp_client_execute_finish(VrQmpClient *client, GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, client), NULL);

    return g_task_propagate_pointer(G_TASK(result), error);
}

/* State of a synchronous call: the async result it waits for. */
typedef struct {
    GAsyncResult *result;
} VrQmpSync;

static void
vr_qmp_sync_done_cb(GObject *source, GAsyncResult *result, gpointer user_data)
{
    VrQmpSync *sync = user_data;

    sync->result = g_object_ref(result);
}

/*
 * Take @context for a synchronous call, before anything is started: a call from a thread
 * that does not own the client's context is a programming error, refused cleanly.
 */
static bool
vr_qmp_sync_begin(GMainContext *context, GError **error)
{
    if (g_main_context_acquire(context)) {
        /* GTask completes in the thread-default context of its creation: make it ours. */
        g_main_context_push_thread_default(context);
        return true;
    }
    g_critical("synchronous QMP call from a thread that does not own the client's context");
    g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                        "synchronous QMP call from a thread that does not own the client's "
                        "context");
    return false;
}

/* Iterate @context until @sync has its result, then give the context back. */
static void
vr_qmp_sync_wait(GMainContext *context, VrQmpSync *sync)
{
    while (sync->result == NULL)
        g_main_context_iteration(context, TRUE);
    g_main_context_pop_thread_default(context);
    g_main_context_release(context);
}

json_object *
vr_qmp_client_execute_full(VrQmpClient *client, const char *command, json_object *arguments,
                           GUnixFDList *fds, guint timeout_ms, GCancellable *cancellable,
                           GError **error)
{
    VrQmpSync sync = { NULL };
    json_object *ret;

    g_return_val_if_fail(VR_QMP_IS_CLIENT(client), NULL);

    if (!vr_qmp_sync_begin(client->context, error)) {
        if (arguments != NULL)
            json_object_put(arguments);
        return NULL;
    }
    vr_qmp_client_execute_async(client, command, arguments, fds, timeout_ms, cancellable,
                                vr_qmp_sync_done_cb, &sync);
    vr_qmp_sync_wait(client->context, &sync);
    ret = vr_qmp_client_execute_finish(client, sync.result, error);
    g_object_unref(sync.result);
    return ret;
}

json_object *
vr_qmp_client_execute(VrQmpClient *client, const char *command, json_object *arguments,
                      GError **error)
{
    return vr_qmp_client_execute_full(client, command, arguments, NULL, 0, NULL, error);
}

/* ---- connect ----------------------------------------------------------------------- */

static void
vr_qmp_client_connect_complete(VrQmpClient *client)
{
    g_autoptr(GTask) task = g_steal_pointer(&client->connect_task);

    vr_qmp_source_destroy(&client->connect_timeout);
    vr_qmp_source_destroy(&client->connect_cancel);
    client->state = VR_QMP_CLIENT_READY;
    g_task_return_boolean(task, TRUE);
}

static void
vr_qmp_client_version_cb(GObject *source, GAsyncResult *result, gpointer user_data)
{
    VrQmpClient *client = VR_QMP_CLIENT(source);
    g_autoptr(GError) error = NULL;
    json_object *version;

    version = vr_qmp_client_execute_finish(client, result, &error);
    if (version == NULL) {
        g_prefix_error(&error, "query-version at connect: ");
        vr_qmp_client_fail(client, g_steal_pointer(&error));
        return;
    }
    client->version = version;
    if (client->connect_task != NULL)
        vr_qmp_client_connect_complete(client);
}

static void
vr_qmp_client_query_version(VrQmpClient *client)
{
    GTask *task = g_task_new(client, NULL, vr_qmp_client_version_cb, NULL);

    vr_qmp_client_send(client, "query-version", NULL, NULL, 0, NULL, task);
}

static void
vr_qmp_client_capabilities_cb(GObject *source, GAsyncResult *result, gpointer user_data)
{
    VrQmpClient *client = VR_QMP_CLIENT(source);
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) ret = NULL;

    ret = vr_qmp_client_execute_finish(client, result, &error);
    if (ret == NULL) {
        g_prefix_error(&error, "capabilities negotiation with '%s': ", client->channel->peer);
        vr_qmp_client_fail(client, g_steal_pointer(&error));
        return;
    }
    vr_qmp_client_query_version(client);
}

static void
vr_qmp_client_start_negotiation(VrQmpClient *client)
{
    GTask *task = g_task_new(client, NULL, vr_qmp_client_capabilities_cb, NULL);

    client->state = VR_QMP_CLIENT_STARTING;
    vr_qmp_client_send(client, "qmp_capabilities", NULL, NULL, 0, NULL, task);
}

static void
vr_qmp_client_open_cb(GObject *source, GAsyncResult *result, gpointer user_data)
{
    g_autoptr(VrQmpClient) client = VR_QMP_CLIENT(user_data);
    g_autoptr(GError) error = NULL;

    if (client->state != VR_QMP_CLIENT_OPENING)
        return; /* timed out or closed meanwhile */
    if (!client->channel->ops->open_finish(client->channel, result, &error)) {
        vr_qmp_client_fail(client, g_steal_pointer(&error));
        return;
    }
    if (!client->channel->ops->negotiates) {
        client->state = VR_QMP_CLIENT_STARTING;
        vr_qmp_client_query_version(client);
    }
    /* Otherwise the greeting, when it arrives, goes on with vr_qmp_client_start_negotiation. */
}

static gboolean
vr_qmp_client_connect_timeout_cb(gpointer user_data)
{
    VrQmpClient *client = user_data;

    g_clear_pointer(&client->connect_timeout, g_source_unref);
    vr_qmp_client_fail(client, g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_TIMEOUT,
                                           "no QMP greeting from '%s' within the timeout",
                                           client->channel->peer));
    return G_SOURCE_REMOVE;
}

static gboolean
vr_qmp_client_connect_cancelled_cb(GCancellable *cancellable, gpointer user_data)
{
    VrQmpClient *client = user_data;
    GError *error = NULL;

    g_clear_pointer(&client->connect_cancel, g_source_unref);
    g_cancellable_set_error_if_cancelled(cancellable, &error);
    vr_qmp_client_fail(client, error);
    return G_SOURCE_REMOVE;
}

void
vr_qmp_client_connect_async(VrQmpClient *client, GCancellable *cancellable,
                            GAsyncReadyCallback callback, gpointer user_data)
{
    GTask *task;

    g_return_if_fail(VR_QMP_IS_CLIENT(client));

    task = g_task_new(client, cancellable, callback, user_data);
    g_task_set_source_tag(task, vr_qmp_client_connect_async);
    if (client->state != VR_QMP_CLIENT_NEW) {
        g_task_return_new_error(task, G_IO_ERROR, G_IO_ERROR_FAILED,
                                "QMP client of '%s' was already connected", client->channel->peer);
        g_object_unref(task);
        return;
    }
    client->state = VR_QMP_CLIENT_OPENING;
    client->connect_task = task;
    client->connect_timeout = g_timeout_source_new(client->default_timeout_ms);
    g_source_set_callback(client->connect_timeout, vr_qmp_client_connect_timeout_cb, client, NULL);
    g_source_attach(client->connect_timeout, client->context);
    if (cancellable != NULL) {
        client->connect_cancel = g_cancellable_source_new(cancellable);
        g_source_set_callback(client->connect_cancel,
                              G_SOURCE_FUNC(vr_qmp_client_connect_cancelled_cb), client, NULL);
        g_source_attach(client->connect_cancel, client->context);
    }
    client->channel->ops->open_async(client->channel, cancellable, vr_qmp_client_open_cb,
                                     g_object_ref(client));
}

bool
vr_qmp_client_connect_finish(VrQmpClient *client, GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, client), false);

    return g_task_propagate_boolean(G_TASK(result), error);
}

bool
vr_qmp_client_connect(VrQmpClient *client, GCancellable *cancellable, GError **error)
{
    VrQmpSync sync = { NULL };
    bool ok;

    g_return_val_if_fail(VR_QMP_IS_CLIENT(client), false);

    if (!vr_qmp_sync_begin(client->context, error))
        return false;
    vr_qmp_client_connect_async(client, cancellable, vr_qmp_sync_done_cb, &sync);
    vr_qmp_sync_wait(client->context, &sync);
    ok = vr_qmp_client_connect_finish(client, sync.result, error);
    g_object_unref(sync.result);
    return ok;
}

void
vr_qmp_client_close(VrQmpClient *client)
{
    g_return_if_fail(VR_QMP_IS_CLIENT(client));

    if (client->state == VR_QMP_CLIENT_NEW) {
        client->state = VR_QMP_CLIENT_CLOSED;
        client->close_error =
            g_error_new_literal(VR_QMP_ERROR, VR_QMP_ERROR_CLOSED, "QMP client closed");
        client->channel->ops->close(client->channel);
        return;
    }
    vr_qmp_client_fail(client, g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_CLOSED,
                                           "QMP client of '%s' closed", client->channel->peer));
}

/* ---- events ------------------------------------------------------------------------ */

guint
vr_qmp_client_subscribe(VrQmpClient *client, const char *event, VrQmpEventFunc func,
                        gpointer user_data, GDestroyNotify destroy)
{
    VrQmpSubscription *sub;

    g_return_val_if_fail(VR_QMP_IS_CLIENT(client), 0);
    g_return_val_if_fail(func != NULL, 0);

    sub = g_new0(VrQmpSubscription, 1);
    sub->id = client->next_subscription++;
    sub->event = g_strdup(event);
    sub->func = func;
    sub->user_data = user_data;
    sub->destroy = destroy;
    g_ptr_array_add(client->subscriptions, sub);
    return sub->id;
}

void
vr_qmp_client_unsubscribe(VrQmpClient *client, guint subscription)
{
    g_return_if_fail(VR_QMP_IS_CLIENT(client));

    for (guint i = 0; i < client->subscriptions->len; i++) {
        VrQmpSubscription *sub = g_ptr_array_index(client->subscriptions, i);

        if (sub->id == subscription) {
            g_ptr_array_remove_index(client->subscriptions, i);
            return;
        }
    }
}

static void
vr_qmp_event_watch_event_cb(VrQmpClient *client, const char *event, json_object *data,
                            json_object *message, gpointer user_data)
{
    VrQmpEventWatch *watch = user_data;

    if (watch->key != NULL) {
        const char *value = vr_json_get_string(data, watch->key);

        if (value == NULL || !g_str_equal(value, watch->value))
            return;
    }
    if (watch->waiter != NULL)
        vr_qmp_event_watch_finish_wait(watch, json_object_get(message), NULL);
    else
        g_queue_push_tail(&watch->events, json_object_get(message));
}

static void
vr_qmp_event_watch_closed_cb(VrQmpClient *client, GError *error, gpointer user_data)
{
    VrQmpEventWatch *watch = user_data;

    if (watch->waiter != NULL)
        vr_qmp_event_watch_finish_wait(watch, NULL, g_error_copy(error));
}

VrQmpEventWatch *
vr_qmp_event_watch_new(VrQmpClient *client, const char *event, const char *key, const char *value)
{
    VrQmpEventWatch *watch;

    g_return_val_if_fail(VR_QMP_IS_CLIENT(client), NULL);
    g_return_val_if_fail(event != NULL, NULL);
    g_return_val_if_fail((key == NULL) == (value == NULL), NULL);

    watch = g_new0(VrQmpEventWatch, 1);
    watch->client = g_object_ref(client);
    watch->event = g_strdup(event);
    watch->key = g_strdup(key);
    watch->value = g_strdup(value);
    g_queue_init(&watch->events);
    watch->subscription =
        vr_qmp_client_subscribe(client, event, vr_qmp_event_watch_event_cb, watch, NULL);
    g_signal_connect(client, "closed", G_CALLBACK(vr_qmp_event_watch_closed_cb), watch);
    return watch;
}

void
vr_qmp_event_watch_free(VrQmpEventWatch *watch)
{
    if (watch == NULL)
        return;
    if (watch->waiter != NULL) {
        vr_qmp_event_watch_finish_wait(
            watch, NULL,
            g_error_new_literal(G_IO_ERROR, G_IO_ERROR_CANCELLED, "event watch freed"));
    }
    vr_qmp_client_unsubscribe(watch->client, watch->subscription);
    g_signal_handlers_disconnect_by_data(watch->client, watch);
    g_queue_clear_full(&watch->events, vr_json_free);
    g_object_unref(watch->client);
    g_free(watch->event);
    g_free(watch->key);
    g_free(watch->value);
    g_free(watch);
}

/* Complete the waiting task with @message or @error (one of them, transfer full). */
static void
vr_qmp_event_watch_finish_wait(VrQmpEventWatch *watch, json_object *message, GError *error)
{
    g_autoptr(GTask) task = g_steal_pointer(&watch->waiter);

    vr_qmp_source_destroy(&watch->timeout_source);
    vr_qmp_source_destroy(&watch->cancel_source);
    if (error != NULL)
        g_task_return_error(task, error);
    else
        g_task_return_pointer(task, message, vr_json_free);
}

static gboolean
vr_qmp_event_watch_timeout_cb(gpointer user_data)
{
    VrQmpEventWatch *watch = user_data;

    g_clear_pointer(&watch->timeout_source, g_source_unref);
    vr_qmp_event_watch_finish_wait(watch, NULL,
                                   g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_TIMEOUT,
                                               "no event '%s' from '%s' within the timeout",
                                               watch->event, watch->client->channel->peer));
    return G_SOURCE_REMOVE;
}

static gboolean
vr_qmp_event_watch_cancelled_cb(GCancellable *cancellable, gpointer user_data)
{
    VrQmpEventWatch *watch = user_data;
    GError *error = NULL;

    g_cancellable_set_error_if_cancelled(cancellable, &error);
    g_clear_pointer(&watch->cancel_source, g_source_unref);
    vr_qmp_event_watch_finish_wait(watch, NULL, error);
    return G_SOURCE_REMOVE;
}

void
vr_qmp_event_watch_wait_async(VrQmpEventWatch *watch, guint timeout_ms, GCancellable *cancellable,
                              GAsyncReadyCallback callback, gpointer user_data)
{
    VrQmpClient *client;
    GTask *task;

    g_return_if_fail(watch != NULL);
    g_return_if_fail(watch->waiter == NULL);

    client = watch->client;
    task = g_task_new(client, cancellable, callback, user_data);
    g_task_set_source_tag(task, vr_qmp_event_watch_wait_async);

    if (!g_queue_is_empty(&watch->events)) {
        g_task_return_pointer(task, g_queue_pop_head(&watch->events), vr_json_free);
        g_object_unref(task);
        return;
    }
    if (client->state == VR_QMP_CLIENT_CLOSED) {
        g_task_return_error(task, vr_qmp_client_closed_error(client));
        g_object_unref(task);
        return;
    }
    watch->waiter = task;
    watch->timeout_source =
        g_timeout_source_new(timeout_ms != 0 ? timeout_ms : client->default_timeout_ms);
    g_source_set_callback(watch->timeout_source, vr_qmp_event_watch_timeout_cb, watch, NULL);
    g_source_attach(watch->timeout_source, client->context);
    if (cancellable != NULL) {
        watch->cancel_source = g_cancellable_source_new(cancellable);
        g_source_set_callback(watch->cancel_source, G_SOURCE_FUNC(vr_qmp_event_watch_cancelled_cb),
                              watch, NULL);
        g_source_attach(watch->cancel_source, client->context);
    }
}

json_object *
vr_qmp_event_watch_wait_finish(VrQmpEventWatch *watch, GAsyncResult *result, GError **error)
{
    g_return_val_if_fail(g_task_is_valid(result, watch->client), NULL);

    return g_task_propagate_pointer(G_TASK(result), error);
}

json_object *
vr_qmp_event_watch_wait(VrQmpEventWatch *watch, guint timeout_ms, GCancellable *cancellable,
                        GError **error)
{
    VrQmpSync sync = { NULL };
    json_object *message;

    g_return_val_if_fail(watch != NULL, NULL);

    if (!vr_qmp_sync_begin(watch->client->context, error))
        return NULL;
    vr_qmp_event_watch_wait_async(watch, timeout_ms, cancellable, vr_qmp_sync_done_cb, &sync);
    vr_qmp_sync_wait(watch->client->context, &sync);
    message = vr_qmp_event_watch_wait_finish(watch, sync.result, error);
    g_object_unref(sync.result);
    return message;
}

json_object *
vr_qmp_event_watch_poll(VrQmpEventWatch *watch)
{
    GMainContext *context;

    g_return_val_if_fail(watch != NULL, NULL);

    context = watch->client->context;
    if (g_main_context_acquire(context)) {
        while (g_main_context_iteration(context, FALSE))
            ;
        g_main_context_release(context);
    }
    return g_queue_pop_head(&watch->events);
}
