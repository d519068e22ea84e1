/*
 * vr-qmp-client.h: an asynchronous QMP client
 *
 * The client speaks QMP over a channel (vr-qmp-channel.h): it negotiates capabilities,
 * gives every command an id and matches the reply to it, applies a timeout and a
 * GCancellable per command, turns QEMU error replies into VR_QMP_ERROR_COMMAND errors, and
 * delivers events to subscribers and to event watches.
 *
 * Threading: a client belongs to the GMainContext that was thread-default when it was
 * created. Every function must be called from the thread that runs that context. The
 * synchronous variants iterate that context until they finish, so they are meant for a
 * worker thread that owns a context of its own (a capture cycle, a test), not for a daemon's
 * main loop. With the libvirt channel's event thread running, the global default context
 * belongs to that thread: use a context of your own (see vr_qmp_libvirt_event_loop_start()).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <gio/gio.h>
#include <gio/gunixfdlist.h>
#include <json-c/json.h>

#include "vr-qmp-channel.h"

G_BEGIN_DECLS

#define VR_QMP_DEFAULT_TIMEOUT_MS 30000

#define VR_QMP_TYPE_CLIENT        (vr_qmp_client_get_type())
G_DECLARE_FINAL_TYPE(VrQmpClient, vr_qmp_client, VR_QMP, CLIENT, GObject)

/*
 * A client over @channel (transfer full), bound to the thread-default main context.
 * Nothing is sent before vr_qmp_client_connect().
 */
VrQmpClient *vr_qmp_client_new(VrQmpChannel *channel);

/* The timeout of commands given a timeout of 0, and of the greeting. */
void vr_qmp_client_set_default_timeout(VrQmpClient *client, guint timeout_ms);

/*
 * Open the channel, read the greeting and negotiate capabilities (unix channel), then ask
 * query-version. On failure the client is closed.
 */
void vr_qmp_client_connect_async(VrQmpClient *client, GCancellable *cancellable,
                                 GAsyncReadyCallback callback, gpointer user_data);
bool vr_qmp_client_connect_finish(VrQmpClient *client, GAsyncResult *result, GError **error);
bool vr_qmp_client_connect(VrQmpClient *client, GCancellable *cancellable, GError **error);

/*
 * Close the channel. Commands in flight fail with VR_QMP_ERROR_CLOSED, so do waiting event
 * watches. Idempotent.
 */
void vr_qmp_client_close(VrQmpClient *client);

bool vr_qmp_client_is_connected(VrQmpClient *client);

/* The peer, for messages: a socket path or a domain name. (transfer none) */
const char *vr_qmp_client_get_peer(VrQmpClient *client);

/* QEMU's version as answered by query-version at connect, or NULL before. (transfer none) */
json_object *vr_qmp_client_get_version(VrQmpClient *client);

/*
 * Send @command with @arguments (transfer full, nullable) and, when @fds is non-NULL,
 * copies of its file descriptors (QEMU takes them with getfd or add-fd). @timeout_ms = 0
 * means the default timeout. A timed-out or cancelled command is not recalled: QEMU may
 * still run it, and its late reply is dropped.
 */
void vr_qmp_client_execute_async(VrQmpClient *client, const char *command, json_object *arguments,
                                 GUnixFDList *fds, guint timeout_ms, GCancellable *cancellable,
                                 GAsyncReadyCallback callback, gpointer user_data);
/* The "return" member of the reply. (transfer full) */
json_object *vr_qmp_client_execute_finish(VrQmpClient *client, GAsyncResult *result,
                                          GError **error);

/* Synchronous forms; see the threading note above. (transfer full) */
json_object *vr_qmp_client_execute(VrQmpClient *client, const char *command, json_object *arguments,
                                   GError **error);
json_object *vr_qmp_client_execute_full(VrQmpClient *client, const char *command,
                                        json_object *arguments, GUnixFDList *fds, guint timeout_ms,
                                        GCancellable *cancellable, GError **error);

/*
 * Called for every event named @event (any event when NULL). @data is the event's "data"
 * member or an empty object; @message the whole event. (transfer none)
 */
typedef void (*VrQmpEventFunc)(VrQmpClient *client, const char *event, json_object *data,
                               json_object *message, gpointer user_data);

/* Returns a subscription id > 0 for vr_qmp_client_unsubscribe(). */
guint vr_qmp_client_subscribe(VrQmpClient *client, const char *event, VrQmpEventFunc func,
                              gpointer user_data, GDestroyNotify destroy);
void vr_qmp_client_unsubscribe(VrQmpClient *client, guint subscription);

/*
 * An event watch collects the events named @event whose data member @key is the string
 * @value (or every such event when @key is NULL) from the moment it is created. Create it
 * before sending the command that causes the event, then wait: nothing is missed.
 */
typedef struct _VrQmpEventWatch VrQmpEventWatch;

VrQmpEventWatch *vr_qmp_event_watch_new(VrQmpClient *client, const char *event, const char *key,
                                        const char *value);
void vr_qmp_event_watch_free(VrQmpEventWatch *watch);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpEventWatch, vr_qmp_event_watch_free)

/*
 * The first collected event not yet returned: its whole message (transfer full). Fails
 * with VR_QMP_ERROR_TIMEOUT after @timeout_ms (0: the client's default), with
 * G_IO_ERROR_CANCELLED, or with VR_QMP_ERROR_CLOSED. One wait at a time per watch.
 */
void vr_qmp_event_watch_wait_async(VrQmpEventWatch *watch, guint timeout_ms,
                                   GCancellable *cancellable, GAsyncReadyCallback callback,
                                   gpointer user_data);
json_object *vr_qmp_event_watch_wait_finish(VrQmpEventWatch *watch, GAsyncResult *result,
                                            GError **error);
json_object *vr_qmp_event_watch_wait(VrQmpEventWatch *watch, guint timeout_ms,
                                     GCancellable *cancellable, GError **error);

/*
 * Without waiting: dispatch what the client's context has ready, then return the first
 * collected event not yet returned, or NULL. For a loop that does blocking work of its own
 * (reading NBD) and checks for an event between steps. (transfer full)
 */
json_object *vr_qmp_event_watch_poll(VrQmpEventWatch *watch);

G_END_DECLS
