/*
 * vr-qmp-channel-unix.c: QMP over a unix socket (QEMU's -qmp, qemu-storage-daemon's
 * --monitor)
 *
 * The socket is non-blocking and driven by sources in the client's context: reads feed the
 * framing parser, writes drain a queue. File descriptors for getfd and add-fd travel as
 * SCM_RIGHTS with the first byte of their command, which is how QEMU expects them.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>
#include <unistd.h>

#include <gio/gunixfdmessage.h>
#include <gio/gunixsocketaddress.h>

#include "vr-qmp-channel.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-parser.h"

#define VR_QMP_UNIX_READ_SIZE 65536

typedef struct {
    GBytes *data;
    gsize offset;
    GUnixFDList *fds; /* sent with the first byte, then dropped */
} VrQmpUnixOut;

typedef struct {
    VrQmpChannel parent;
    /* The owner holds one reference; a dispatch in progress holds another. */
    gint ref;
    char *path;
    GSocket *socket;
    GSource *read_source;
    GSource *write_source;
    VrQmpParser *parser;
    GQueue out;
    bool closed;
} VrQmpChannelUnix;

static void
vr_qmp_unix_out_free(gpointer data)
{
    VrQmpUnixOut *out = data;

    g_bytes_unref(out->data);
    g_clear_object(&out->fds);
    g_free(out);
}

static VrQmpChannelUnix *
vr_qmp_unix_ref(VrQmpChannelUnix *chan)
{
    g_atomic_int_inc(&chan->ref);
    return chan;
}

static void
vr_qmp_unix_unref(VrQmpChannelUnix *chan)
{
    if (!g_atomic_int_dec_and_test(&chan->ref))
        return;
    g_assert(chan->closed);
    vr_qmp_parser_free(chan->parser);
    g_clear_object(&chan->socket);
    g_clear_pointer(&chan->parent.context, g_main_context_unref);
    g_free(chan->parent.peer);
    g_free(chan->path);
    g_free(chan);
}

static void
vr_qmp_unix_teardown(VrQmpChannelUnix *chan)
{
    if (chan->closed)
        return;
    chan->closed = true;
    if (chan->read_source != NULL) {
        g_source_destroy(chan->read_source);
        g_clear_pointer(&chan->read_source, g_source_unref);
    }
    if (chan->write_source != NULL) {
        g_source_destroy(chan->write_source);
        g_clear_pointer(&chan->write_source, g_source_unref);
    }
    if (chan->socket != NULL)
        g_socket_close(chan->socket, NULL);
    g_queue_clear_full(&chan->out, vr_qmp_unix_out_free);
}

/* The connection is gone: tear down, then tell the client why (transfer full). */
static void
vr_qmp_unix_report_closed(VrQmpChannelUnix *chan, GError *error)
{
    if (chan->closed) {
        g_error_free(error);
        return;
    }
    vr_qmp_unix_teardown(chan);
    chan->parent.sink.closed(error, chan->parent.sink_data);
    g_error_free(error);
}

/* The peer went away (reset, broken pipe) rather than the socket failing. */
static VrQmpErrorCode
vr_qmp_unix_error_code(const GError *error)
{
    if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED) ||
        g_error_matches(error, G_IO_ERROR, G_IO_ERROR_BROKEN_PIPE))
        return VR_QMP_ERROR_CLOSED;
    return VR_QMP_ERROR_CHANNEL;
}

static void
vr_qmp_unix_deliver(json_object *message, gpointer user_data)
{
    VrQmpChannelUnix *chan = user_data;

    /* A message delivered before may have closed us; drop the rest of the read. */
    if (chan->closed) {
        json_object_put(message);
        return;
    }
    chan->parent.sink.message(message, chan->parent.sink_data);
}

static gboolean
vr_qmp_unix_read_cb(GSocket *socket, GIOCondition condition, gpointer user_data)
{
    VrQmpChannelUnix *chan = vr_qmp_unix_ref(user_data);
    g_autoptr(GError) error = NULL;
    char buf[VR_QMP_UNIX_READ_SIZE];
    gssize n;

    n = g_socket_receive(socket, buf, sizeof(buf), NULL, &error);
    if (n < 0) {
        if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
            vr_qmp_unix_report_closed(chan, g_error_new(VR_QMP_ERROR, vr_qmp_unix_error_code(error),
                                                        "cannot read from QMP socket '%s': %s",
                                                        chan->path, error->message));
        }
    } else if (n == 0) {
        if (!vr_qmp_parser_finish(chan->parser, &error)) {
            vr_qmp_unix_report_closed(chan, g_steal_pointer(&error));
        } else {
            vr_qmp_unix_report_closed(chan, g_error_new(VR_QMP_ERROR, VR_QMP_ERROR_CLOSED,
                                                        "QMP peer '%s' closed the connection",
                                                        chan->path));
        }
    } else if (!vr_qmp_parser_feed(chan->parser, buf, n, vr_qmp_unix_deliver, chan, &error)) {
        g_prefix_error(&error, "from '%s': ", chan->path);
        vr_qmp_unix_report_closed(chan, g_steal_pointer(&error));
    }

    vr_qmp_unix_unref(chan);
    return G_SOURCE_CONTINUE; /* when closed, the source is already destroyed */
}

static gboolean vr_qmp_unix_write_cb(GSocket *socket, GIOCondition condition, gpointer user_data);

/* Write as much of the queue as the socket takes now. */
static bool
vr_qmp_unix_flush(VrQmpChannelUnix *chan, GError **error)
{
    while (!g_queue_is_empty(&chan->out)) {
        VrQmpUnixOut *out = g_queue_peek_head(&chan->out);
        gsize size;
        const char *data = g_bytes_get_data(out->data, &size);
        g_autoptr(GError) local = NULL;
        gssize n;

        if (out->fds != NULL) {
            GOutputVector vec = { data + out->offset, size - out->offset };
            GSocketControlMessage *msg = g_unix_fd_message_new_with_fd_list(out->fds);

            n = g_socket_send_message(chan->socket, NULL, &vec, 1, &msg, 1, G_SOCKET_MSG_NONE, NULL,
                                      &local);
            g_object_unref(msg);
            if (n > 0)
                g_clear_object(&out->fds);
        } else {
            n = g_socket_send(chan->socket, data + out->offset, size - out->offset, NULL, &local);
        }
        if (n < 0) {
            if (g_error_matches(local, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
                break;
            g_set_error(error, VR_QMP_ERROR, vr_qmp_unix_error_code(local),
                        "cannot write to QMP socket '%s': %s", chan->path, local->message);
            return false;
        }
        out->offset += n;
        if (out->offset == size)
            vr_qmp_unix_out_free(g_queue_pop_head(&chan->out));
    }

    if (g_queue_is_empty(&chan->out)) {
        if (chan->write_source != NULL) {
            g_source_destroy(chan->write_source);
            g_clear_pointer(&chan->write_source, g_source_unref);
        }
    } else if (chan->write_source == NULL) {
        chan->write_source = g_socket_create_source(chan->socket, G_IO_OUT, NULL);
        g_source_set_callback(chan->write_source, G_SOURCE_FUNC(vr_qmp_unix_write_cb), chan, NULL);
        g_source_attach(chan->write_source, chan->parent.context);
    }
    return true;
}

static gboolean
vr_qmp_unix_write_cb(GSocket *socket, GIOCondition condition, gpointer user_data)
{
    VrQmpChannelUnix *chan = vr_qmp_unix_ref(user_data);
    GError *error = NULL;

    if (!vr_qmp_unix_flush(chan, &error))
        vr_qmp_unix_report_closed(chan, error);
    vr_qmp_unix_unref(chan);
    return G_SOURCE_CONTINUE; /* flush destroys the source once the queue is empty */
}

static void
vr_qmp_unix_open_async(VrQmpChannel *channel, GCancellable *cancellable,
                       GAsyncReadyCallback callback, gpointer user_data)
{
    VrQmpChannelUnix *chan = (VrQmpChannelUnix *)channel;
    g_autoptr(GTask) task = g_task_new(NULL, cancellable, callback, user_data);
    g_autoptr(GSocketAddress) address = g_unix_socket_address_new(chan->path);
    g_autoptr(GError) error = NULL;

    g_task_set_source_tag(task, vr_qmp_unix_open_async);
    chan->socket =
        g_socket_new(G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_DEFAULT, &error);
    if (chan->socket == NULL) {
        g_task_return_new_error(task, VR_QMP_ERROR, VR_QMP_ERROR_CHANNEL,
                                "cannot create a socket for '%s': %s", chan->path, error->message);
        return;
    }
    /*
     * A local connect completes or fails at once (a full backlog is reported as an error,
     * which is the right answer for a QMP socket that already has a client).
     */
    if (!g_socket_connect(chan->socket, address, cancellable, &error)) {
        g_task_return_new_error(task, VR_QMP_ERROR, VR_QMP_ERROR_CHANNEL,
                                "cannot connect to QMP socket '%s': %s", chan->path,
                                error->message);
        return;
    }
    g_socket_set_blocking(chan->socket, FALSE);
    chan->read_source = g_socket_create_source(chan->socket, G_IO_IN | G_IO_HUP | G_IO_ERR, NULL);
    g_source_set_callback(chan->read_source, G_SOURCE_FUNC(vr_qmp_unix_read_cb), chan, NULL);
    g_source_attach(chan->read_source, channel->context);
    g_task_return_boolean(task, TRUE);
}

static bool
vr_qmp_unix_open_finish(VrQmpChannel *channel, GAsyncResult *result, GError **error)
{
    return g_task_propagate_boolean(G_TASK(result), error);
}

static bool
vr_qmp_unix_send(VrQmpChannel *channel, json_object *command, const char *id, GUnixFDList *fds,
                 GError **error)
{
    VrQmpChannelUnix *chan = (VrQmpChannelUnix *)channel;
    g_autofree char *text = NULL;
    GError *local = NULL;
    VrQmpUnixOut *out;
    gsize len;

    if (chan->closed || chan->socket == NULL) {
        g_set_error(error, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED, "QMP socket '%s' is closed",
                    chan->path);
        return false;
    }
    text = g_strconcat(json_object_to_json_string_ext(command, JSON_C_TO_STRING_PLAIN), "\n", NULL);
    len = strlen(text);
    out = g_new0(VrQmpUnixOut, 1);
    out->data = g_bytes_new_take(g_steal_pointer(&text), len);
    if (fds != NULL && g_unix_fd_list_get_length(fds) > 0) {
        /* Copies, so the caller may close its descriptors as soon as we return. */
        out->fds = g_unix_fd_list_new_from_array(NULL, 0);
        for (int i = 0; i < g_unix_fd_list_get_length(fds); i++) {
            int fd = g_unix_fd_list_get(fds, i, error);

            if (fd < 0 || g_unix_fd_list_append(out->fds, fd, error) < 0) {
                if (fd >= 0)
                    close(fd);
                vr_qmp_unix_out_free(out);
                return false;
            }
            close(fd);
        }
    }
    g_queue_push_tail(&chan->out, out);
    if (!vr_qmp_unix_flush(chan, &local)) {
        /* Half a command may be out: nothing after it can be framed. Close, as elsewhere. */
        vr_qmp_unix_report_closed(chan, g_error_copy(local));
        g_propagate_error(error, local);
        return false;
    }
    return true;
}

static void
vr_qmp_unix_close(VrQmpChannel *channel)
{
    vr_qmp_unix_teardown((VrQmpChannelUnix *)channel);
}

static void
vr_qmp_unix_free(VrQmpChannel *channel)
{
    vr_qmp_unix_unref((VrQmpChannelUnix *)channel);
}

static const VrQmpChannelOps vr_qmp_channel_unix_ops = {
    .name = "unix",
    .negotiates = true,
    .open_async = vr_qmp_unix_open_async,
    .open_finish = vr_qmp_unix_open_finish,
    .send = vr_qmp_unix_send,
    .close = vr_qmp_unix_close,
    .free = vr_qmp_unix_free,
};

VrQmpChannel *
vr_qmp_channel_unix_new(const char *path)
{
    VrQmpChannelUnix *chan = g_new0(VrQmpChannelUnix, 1);

    chan->parent.ops = &vr_qmp_channel_unix_ops;
    chan->parent.peer = g_strdup(path);
    chan->ref = 1;
    chan->path = g_strdup(path);
    chan->parser = vr_qmp_parser_new(VR_QMP_PARSER_DEFAULT_MAX_MESSAGE);
    g_queue_init(&chan->out);
    return &chan->parent;
}
