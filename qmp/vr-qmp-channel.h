/*
 * vr-qmp-channel.h: how QMP messages reach QEMU
 *
 * A channel moves commands to QEMU and messages (replies, events) back. The client on top
 * (vr-qmp-client.h) matches ids, runs timeouts and dispatches events, the same way for
 * every channel. Two channels exist, chosen by constructor:
 *
 *   unix     a QMP unix socket of plain QEMU or qemu-storage-daemon; file descriptors
 *            travel with the command as SCM_RIGHTS
 *   libvirt  virDomainQemuMonitorCommandWithFiles() for commands and
 *            virConnectDomainQemuMonitorEventRegister() for events
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <gio/gio.h>
#include <json-c/json.h>
#include <libvirt/libvirt.h>

G_BEGIN_DECLS

typedef struct _VrQmpChannel VrQmpChannel;

/*
 * Where a channel delivers what it receives. Both functions are called in the client's
 * GMainContext, never in another thread.
 */
typedef struct {
    /* One reply, event or greeting. (transfer full) */
    void (*message)(json_object *message, gpointer user_data);
    /* Command @id could not be sent, but the channel lives on. (transfer none) */
    void (*failed)(const char *id, const GError *error, gpointer user_data);
    /* The channel is dead; nothing more will be delivered. (transfer none) */
    void (*closed)(const GError *error, gpointer user_data);
} VrQmpChannelSink;

typedef struct {
    const char *name;
    /*
     * True when the client must wait for a greeting and negotiate capabilities
     * (qmp_capabilities) after open; false when someone else did (libvirt).
     */
    bool negotiates;
    /* Start the channel; when negotiates, the greeting arrives through the sink. */
    void (*open_async)(VrQmpChannel *channel, GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data);
    bool (*open_finish)(VrQmpChannel *channel, GAsyncResult *result, GError **error);
    /*
     * Queue @command, a complete QMP command object carrying "id" = @id, with copies of
     * @fds. Commands reach QEMU in the order they were queued. The reply comes through the
     * sink with the same id. (transfer none)
     */
    bool (*send)(VrQmpChannel *channel, json_object *command, const char *id, GUnixFDList *fds,
                 GError **error);
    /* Stop delivering; idempotent. No sink function is called after it returns. */
    void (*close)(VrQmpChannel *channel);
    /* Release the channel; close() has run. */
    void (*free)(VrQmpChannel *channel);
} VrQmpChannelOps;

/* The common head of every channel. */
struct _VrQmpChannel {
    const VrQmpChannelOps *ops;
    GMainContext *context; /* the client's, set by vr_qmp_channel_attach() */
    VrQmpChannelSink sink;
    gpointer sink_data;
    /* Human-readable peer, for messages: a socket path or a domain name. */
    char *peer;
};

/* Called by the client before open: where to deliver, and in which context. */
void vr_qmp_channel_attach(VrQmpChannel *channel, GMainContext *context,
                           const VrQmpChannelSink *sink, gpointer sink_data);

void vr_qmp_channel_free(VrQmpChannel *channel);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpChannel, vr_qmp_channel_free)

/* A channel over the QMP unix socket at @path. (transfer full) */
VrQmpChannel *vr_qmp_channel_unix_new(const char *path);

/*
 * A channel through libvirt's QEMU passthrough for the running domain @domain. Events
 * need a libvirt event loop: call vr_qmp_libvirt_event_loop_start() before opening the
 * connection of @domain. The channel keeps a reference to @domain. (transfer full)
 */
VrQmpChannel *vr_qmp_channel_libvirt_new(virDomainPtr domain);

/*
 * Register libvirt's default event implementation and run it in a thread of its own, once
 * per process; later calls only report the result of the first. libvirt's event loop is
 * process-wide by libvirt's design, so this is the one global of the library.
 *
 * libvirt 9.0 implements that loop on GLib: the thread iterates the global default
 * GMainContext. Clients must then be created under a thread-default context of their own
 * (g_main_context_push_thread_default()), never the global default one. A program that
 * runs the global default context itself may instead call virEventRegisterDefaultImpl()
 * and skip this function: its own loop then dispatches libvirt's events.
 */
bool vr_qmp_libvirt_event_loop_start(GError **error);

G_END_DECLS
