/*
 * vr-qmp-channel-libvirt.c: QMP through libvirt's QEMU passthrough
 *
 * Commands go through virDomainQemuMonitorCommandWithFiles(), which blocks, so they run on
 * one worker thread per channel, in the order they were queued (an add-fd must reach QEMU
 * before the blockdev-add that uses its fd set). Events come from
 * virConnectDomainQemuMonitorEventRegister() on libvirt's event thread. Both are handed to
 * the client's GMainContext; nothing reaches the client from another thread.
 *
 * libvirt numbers the commands itself and refuses a command that carries an "id", so the
 * id is taken off before the call and put back on the reply.
 *
 * Every call taints the domain "custom-monitor" in libvirt's eyes (docs/qmp.md).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <unistd.h>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include "vr-qmp-channel.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"

typedef enum {
    VR_QMP_LIBVIRT_WORK_OPEN,
    VR_QMP_LIBVIRT_WORK_COMMAND,
    VR_QMP_LIBVIRT_WORK_STOP,
} VrQmpLibvirtWorkKind;

typedef struct {
    VrQmpLibvirtWorkKind kind;
    GTask *task; /* OPEN */
    char *id;    /* COMMAND */
    char *text;  /* COMMAND, without id */
    GArray *fds; /* COMMAND: int, owned copies */
} VrQmpLibvirtWork;

typedef struct {
    VrQmpChannel parent;
    gint ref;
    virConnectPtr conn;
    virDomainPtr domain;
    GAsyncQueue *queue; /* VrQmpLibvirtWork */
    GThread *thread;
    gint closed;        /* atomic: set by close(), read by every thread */
    int event_callback; /* -1 when not registered; owned by the worker thread */
} VrQmpChannelLibvirt;

/* Something for the client, carried into its context. */
typedef struct {
    VrQmpChannelLibvirt *chan; /* a reference */
    json_object *message;      /* or */
    char *failed_id;           /* with error: this command failed, or without: */
    GError *error;             /* the channel died */
} VrQmpLibvirtDelivery;

static VrQmpChannelLibvirt *
vr_qmp_libvirt_ref(VrQmpChannelLibvirt *chan)
{
    g_atomic_int_inc(&chan->ref);
    return chan;
}

static void
vr_qmp_libvirt_work_free(VrQmpLibvirtWork *work)
{
    if (work->fds != NULL) {
        for (guint i = 0; i < work->fds->len; i++)
            close(g_array_index(work->fds, int, i));
        g_array_unref(work->fds);
    }
    g_clear_object(&work->task);
    g_free(work->id);
    g_free(work->text);
    g_free(work);
}

static void
vr_qmp_libvirt_unref(gpointer data)
{
    VrQmpChannelLibvirt *chan = data;

    if (!g_atomic_int_dec_and_test(&chan->ref))
        return;
    if (chan->queue != NULL) {
        VrQmpLibvirtWork *work;

        while ((work = g_async_queue_try_pop(chan->queue)) != NULL)
            vr_qmp_libvirt_work_free(work);
        g_async_queue_unref(chan->queue);
    }
    virDomainFree(chan->domain);
    virConnectClose(chan->conn);
    g_clear_pointer(&chan->parent.context, g_main_context_unref);
    g_free(chan->parent.peer);
    g_free(chan);
}

static bool
vr_qmp_libvirt_is_closed(VrQmpChannelLibvirt *chan)
{
    return g_atomic_int_get(&chan->closed) != 0;
}

static gboolean
vr_qmp_libvirt_deliver_cb(gpointer data)
{
    VrQmpLibvirtDelivery *delivery = data;
    VrQmpChannelLibvirt *chan = delivery->chan;

    if (vr_qmp_libvirt_is_closed(chan))
        return G_SOURCE_REMOVE;
    if (delivery->failed_id != NULL) {
        chan->parent.sink.failed(delivery->failed_id, delivery->error, chan->parent.sink_data);
    } else if (delivery->error != NULL) {
        g_atomic_int_set(&chan->closed, 1);
        chan->parent.sink.closed(delivery->error, chan->parent.sink_data);
    } else {
        chan->parent.sink.message(g_steal_pointer(&delivery->message), chan->parent.sink_data);
    }
    return G_SOURCE_REMOVE;
}

static void
vr_qmp_libvirt_delivery_free(gpointer data)
{
    VrQmpLibvirtDelivery *delivery = data;

    if (delivery->message != NULL)
        json_object_put(delivery->message);
    g_clear_error(&delivery->error);
    g_free(delivery->failed_id);
    vr_qmp_libvirt_unref(delivery->chan);
    g_free(delivery);
}

/*
 * From any thread: hand @message, or @error (transfer full) to the client's context: the
 * failure of command @failed_id when it is non-NULL, else the death of the channel.
 */
static void
vr_qmp_libvirt_deliver(VrQmpChannelLibvirt *chan, json_object *message, const char *failed_id,
                       GError *error)
{
    VrQmpLibvirtDelivery *delivery = g_new0(VrQmpLibvirtDelivery, 1);
    GSource *source = g_idle_source_new();

    delivery->chan = vr_qmp_libvirt_ref(chan);
    delivery->message = message;
    delivery->failed_id = g_strdup(failed_id);
    delivery->error = error;
    g_source_set_priority(source, G_PRIORITY_DEFAULT);
    g_source_set_callback(source, vr_qmp_libvirt_deliver_cb, delivery,
                          vr_qmp_libvirt_delivery_free);
    g_source_attach(source, chan->parent.context);
    g_source_unref(source);
}

/*
 * The error libvirt left in this thread, as a GError: CLOSED when the domain or the
 * connection is gone, CHANNEL otherwise (then @alive is set, if non-NULL).
 */
static GError *
vr_qmp_libvirt_last_error(VrQmpChannelLibvirt *chan, const char *what, bool *alive)
{
    virError err = { 0 };
    g_autofree char *message = NULL;
    VrQmpErrorCode code = VR_QMP_ERROR_CHANNEL;

    /* Copy it first: the next libvirt call (virDomainIsActive) resets it. */
    if (virCopyLastError(&err) >= 0 && err.message != NULL)
        message = g_strdup(err.message);
    virResetError(&err);
    if (virConnectIsAlive(chan->conn) != 1 || virDomainIsActive(chan->domain) != 1)
        code = VR_QMP_ERROR_CLOSED;
    if (alive != NULL)
        *alive = code != VR_QMP_ERROR_CLOSED;
    return g_error_new(VR_QMP_ERROR, code, "%s for domain '%s': %s", what, chan->parent.peer,
                       message != NULL ? message : "unknown error");
}

/* Called on libvirt's event thread. */
static void
vr_qmp_libvirt_event_cb(virConnectPtr conn, virDomainPtr domain, const char *event,
                        long long seconds, unsigned int micros, const char *details, void *opaque)
{
    VrQmpChannelLibvirt *chan = opaque;
    json_object *message;
    json_object *timestamp;
    json_object *data = NULL;

    if (vr_qmp_libvirt_is_closed(chan))
        return;
    if (details != NULL) {
        data = json_tokener_parse(details);
        if (data != NULL && !json_object_is_type(data, json_type_object))
            g_clear_pointer(&data, json_object_put);
    }
    /* Rebuild the event as QEMU sent it, so both channels deliver the same thing. */
    message = json_object_new_object();
    json_object_object_add(message, "event", json_object_new_string(event));
    json_object_object_add(message, "data", data != NULL ? data : json_object_new_object());
    timestamp = json_object_new_object();
    json_object_object_add(timestamp, "seconds", json_object_new_int64(seconds));
    json_object_object_add(timestamp, "microseconds", json_object_new_int64(micros));
    json_object_object_add(message, "timestamp", timestamp);
    vr_qmp_libvirt_deliver(chan, message, NULL, NULL);
}

static void
vr_qmp_libvirt_run_open(VrQmpChannelLibvirt *chan, GTask *task)
{
    int active = virDomainIsActive(chan->domain);

    if (active < 0) {
        g_task_return_error(task, vr_qmp_libvirt_last_error(chan, "cannot query state", NULL));
        return;
    }
    if (active == 0) {
        g_task_return_new_error(task, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED,
                                "domain '%s' is not running", chan->parent.peer);
        return;
    }
    chan->event_callback = virConnectDomainQemuMonitorEventRegister(
        chan->conn, chan->domain, NULL, vr_qmp_libvirt_event_cb, vr_qmp_libvirt_ref(chan),
        vr_qmp_libvirt_unref, 0);
    if (chan->event_callback < 0) {
        vr_qmp_libvirt_unref(chan);
        g_task_return_error(
            task, vr_qmp_libvirt_last_error(chan, "cannot subscribe to QMP events", NULL));
        return;
    }
    g_task_return_boolean(task, TRUE);
}

static void
vr_qmp_libvirt_run_command(VrQmpChannelLibvirt *chan, VrQmpLibvirtWork *work)
{
    g_autofree char *reply = NULL;
    g_autoptr(json_object) message = NULL;
    enum json_tokener_error jerr;
    int *fds = work->fds != NULL ? (int *)work->fds->data : NULL;
    unsigned int n_fds = work->fds != NULL ? work->fds->len : 0;

    if (virDomainQemuMonitorCommandWithFiles(chan->domain, work->text, n_fds, fds, NULL, NULL,
                                             &reply, 0) < 0) {
        bool alive = false;
        GError *error = vr_qmp_libvirt_last_error(chan, "QMP passthrough", &alive);

        /* A refusal of this call (a libvirt job timeout, say) fails the command only. */
        vr_qmp_libvirt_deliver(chan, NULL, alive ? work->id : NULL, error);
        return;
    }
    /* A QEMU error reply is a successful call: it comes back as {"error": ...}. */
    message = json_tokener_parse_verbose(reply, &jerr);
    if (message == NULL || !json_object_is_type(message, json_type_object)) {
        vr_qmp_libvirt_deliver(chan, NULL, NULL,
                               g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL,
                                           "libvirt passed a reply that is not a JSON object "
                                           "for domain '%s'",
                                           chan->parent.peer));
        return;
    }
    json_object_object_del(message, "id");
    json_object_object_add(message, "id", json_object_new_string(work->id));
    vr_qmp_libvirt_deliver(chan, g_steal_pointer(&message), NULL, NULL);
}

static gpointer
vr_qmp_libvirt_thread(gpointer data)
{
    VrQmpChannelLibvirt *chan = data; /* the thread's own reference */

    for (;;) {
        VrQmpLibvirtWork *work = g_async_queue_pop(chan->queue);
        VrQmpLibvirtWorkKind kind = work->kind;

        switch (kind) {
        case VR_QMP_LIBVIRT_WORK_OPEN:
            vr_qmp_libvirt_run_open(chan, work->task);
            break;
        case VR_QMP_LIBVIRT_WORK_COMMAND:
            /* Commands queued before a close are dropped, not sent. */
            if (!vr_qmp_libvirt_is_closed(chan))
                vr_qmp_libvirt_run_command(chan, work);
            break;
        case VR_QMP_LIBVIRT_WORK_STOP:
            if (chan->event_callback >= 0) {
                virConnectDomainQemuMonitorEventDeregister(chan->conn, chan->event_callback);
                chan->event_callback = -1;
            }
            break;
        }
        vr_qmp_libvirt_work_free(work);
        if (kind == VR_QMP_LIBVIRT_WORK_STOP)
            break;
    }
    vr_qmp_libvirt_unref(chan);
    return NULL;
}

static void
vr_qmp_libvirt_open_async(VrQmpChannel *channel, GCancellable *cancellable,
                          GAsyncReadyCallback callback, gpointer user_data)
{
    VrQmpChannelLibvirt *chan = (VrQmpChannelLibvirt *)channel;
    VrQmpLibvirtWork *work = g_new0(VrQmpLibvirtWork, 1);

    work->kind = VR_QMP_LIBVIRT_WORK_OPEN;
    work->task = g_task_new(NULL, cancellable, callback, user_data);
    g_task_set_source_tag(work->task, vr_qmp_libvirt_open_async);
    chan->thread = g_thread_new("vr-qmp-libvirt", vr_qmp_libvirt_thread, vr_qmp_libvirt_ref(chan));
    g_async_queue_push(chan->queue, work);
}

static bool
vr_qmp_libvirt_open_finish(VrQmpChannel *channel, GAsyncResult *result, GError **error)
{
    return g_task_propagate_boolean(G_TASK(result), error);
}

static bool
vr_qmp_libvirt_send(VrQmpChannel *channel, json_object *command, const char *id, GUnixFDList *fds,
                    GError **error)
{
    VrQmpChannelLibvirt *chan = (VrQmpChannelLibvirt *)channel;
    g_autoptr(json_object) copy = NULL;
    VrQmpLibvirtWork *work;
    int n_fds = fds != NULL ? g_unix_fd_list_get_length(fds) : 0;

    if (vr_qmp_libvirt_is_closed(chan) || chan->thread == NULL) {
        g_set_error(error, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED,
                    "QMP channel of domain '%s' is closed", chan->parent.peer);
        return false;
    }
    /* libvirt 9.0 passes at most one descriptor with a command. */
    if (n_fds > 1) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                    "libvirt passes at most one file descriptor per command, not %d", n_fds);
        return false;
    }
    json_object_deep_copy(command, &copy, NULL);
    json_object_object_del(copy, "id");

    work = g_new0(VrQmpLibvirtWork, 1);
    work->kind = VR_QMP_LIBVIRT_WORK_COMMAND;
    work->id = g_strdup(id);
    work->text = g_strdup(json_object_to_json_string_ext(copy, JSON_C_TO_STRING_PLAIN));
    if (n_fds > 0) {
        int fd = g_unix_fd_list_get(fds, 0, error);

        if (fd < 0) {
            vr_qmp_libvirt_work_free(work);
            return false;
        }
        work->fds = g_array_new(FALSE, FALSE, sizeof(int));
        g_array_append_val(work->fds, fd);
    }
    g_async_queue_push(chan->queue, work);
    return true;
}

static void
vr_qmp_libvirt_close(VrQmpChannel *channel)
{
    VrQmpChannelLibvirt *chan = (VrQmpChannelLibvirt *)channel;
    VrQmpLibvirtWork *work;

    if (!g_atomic_int_compare_and_exchange(&chan->closed, 0, 1) && chan->thread == NULL)
        return;
    if (chan->thread == NULL)
        return;
    /* The worker deregisters the events and ends; a libvirt call in progress finishes. */
    work = g_new0(VrQmpLibvirtWork, 1);
    work->kind = VR_QMP_LIBVIRT_WORK_STOP;
    g_async_queue_push(chan->queue, work);
    g_thread_unref(g_steal_pointer(&chan->thread));
}

static void
vr_qmp_libvirt_free(VrQmpChannel *channel)
{
    vr_qmp_libvirt_unref(channel);
}

static const VrQmpChannelOps vr_qmp_channel_libvirt_ops = {
    .name = "libvirt",
    .negotiates = false,
    .open_async = vr_qmp_libvirt_open_async,
    .open_finish = vr_qmp_libvirt_open_finish,
    .send = vr_qmp_libvirt_send,
    .close = vr_qmp_libvirt_close,
    .free = vr_qmp_libvirt_free,
};

VrQmpChannel *
vr_qmp_channel_libvirt_new(virDomainPtr domain)
{
    VrQmpChannelLibvirt *chan = g_new0(VrQmpChannelLibvirt, 1);

    chan->parent.ops = &vr_qmp_channel_libvirt_ops;
    chan->parent.peer = g_strdup(virDomainGetName(domain));
    chan->ref = 1;
    chan->conn = virDomainGetConnect(domain);
    virConnectRef(chan->conn);
    chan->domain = domain;
    virDomainRef(domain);
    chan->queue = g_async_queue_new();
    chan->event_callback = -1;
    return &chan->parent;
}

static gpointer
vr_qmp_libvirt_event_thread(gpointer data)
{
    for (;;) {
        if (virEventRunDefaultImpl() < 0)
            g_usleep(G_USEC_PER_SEC / 10);
    }
    return NULL;
}

static gpointer
vr_qmp_libvirt_event_loop_init(gpointer data)
{
    if (virEventRegisterDefaultImpl() < 0) {
        virErrorPtr err = virGetLastError();

        return g_strdup_printf("cannot register libvirt's event loop: %s",
                               err != NULL && err->message != NULL ? err->message
                                                                   : "unknown error");
    }
    g_thread_unref(g_thread_new("vr-libvirt-events", vr_qmp_libvirt_event_thread, NULL));
    return NULL;
}

bool
vr_qmp_libvirt_event_loop_start(GError **error)
{
    static GOnce once = G_ONCE_INIT;
    const char *failure = g_once(&once, vr_qmp_libvirt_event_loop_init, NULL);

    if (failure != NULL) {
        g_set_error_literal(error, VR_QMP_ERROR, VR_QMP_ERROR_CHANNEL, failure);
        return false;
    }
    return true;
}
