/*
 * vr-sender.c: the primary's HTTPS upload client
 *
 * One upload is a loop of attempts, each on a SoupSession of its own main context (pushed
 * as the thread's default for the call): PUT the stream from the offset the receiver
 * holds, and after a failure that may pass (a dropped connection, a timeout, 5xx) wait,
 * HEAD for the offset, and PUT the rest. The body is a GInputStream over the file that
 * reads at most VR_SENDER_BLOCK bytes per call at the offset it stands at, taking tokens
 * from the bandwidth limits first: memory stays a few blocks, whatever the stream's size.
 * A stream still being written (VrSenderFeed) is sent as a chunked body of unknown length:
 * the body reads what is written and waits for more until the writer completes the stream.
 *
 * Never through a proxy: the replication network is direct (and libproxy's lookup can stall
 * a thread on WPAD).
 *
 * A hash list is fetched the same way (the same session options, TLS and retries): GET, the
 * body read in blocks into a .part file, renamed once complete. So is a domain XML sent: one
 * PUT of a small body from memory.
 *
 * The replica's certificate: the connection gets no CA database, so glib-networking reports
 * every certificate as unknown and our policy decides in accept-certificate; and after the
 * handshake the policy runs again on the peer certificate (a resumed TLS session skips
 * accept-certificate in glib-networking).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-sender.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libsoup/soup.h>

#include "vr-wire.h"

#define VR_SENDER_BLOCK      (256 * 1024)
#define VR_SENDER_REASON_MAX 512
/* 503 answers an upload waits through, Retry-After each (about an hour at 30 s) */
#define VR_SENDER_MAX_BUSY 120

G_DEFINE_QUARK(vr - sender - error - quark, vr_sender_error)

struct _VrSender {
    char *server_name;
    guint16 port;
    GSocketConnectable *remote; /* the replica's replication address, or NULL */
    GSocketAddress *local;      /* the source address, or NULL */
    GTlsCertificate *cert;
    VrTlsPolicy *policy;
    VrRateLimit **limits;
    guint n_limits;
    guint max_attempts;
    guint backoff_min_ms;
    guint backoff_max_ms;
    guint io_timeout_s;
};

/* ---- a stream file being written --------------------------------------------------------- */

struct _VrSenderFeed {
    GMutex lock;
    GCond cond;         /* signalled at every change */
    int fd;             /* -1 until attached */
    uint64_t size;      /* bytes written, all final */
    bool complete;      /* @size is the stream's size */
    bool failed;        /* the writer gave up */
    GCancellable *stop; /* the reading side's (vr_sender_feed_set_cancellable()), or NULL */
};

VrSenderFeed *
vr_sender_feed_new(void)
{
    VrSenderFeed *feed = g_new0(VrSenderFeed, 1);

    g_mutex_init(&feed->lock);
    g_cond_init(&feed->cond);
    feed->fd = -1;
    return feed;
}

void
vr_sender_feed_free(VrSenderFeed *feed)
{
    if (feed == NULL)
        return;
    if (feed->fd >= 0)
        close(feed->fd);
    g_clear_object(&feed->stop);
    g_mutex_clear(&feed->lock);
    g_cond_clear(&feed->cond);
    g_free(feed);
}

bool
vr_sender_feed_attach(VrSenderFeed *feed, int fd, GError **error)
{
    /* the same file, readable whatever @fd's mode (a writer's is often write-only) */
    g_autofree char *self = g_strdup_printf("/proc/self/fd/%d", fd);
    int copy = open(self, O_RDONLY | O_CLOEXEC);

    if (copy < 0) {
        int errsv = errno;

        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv),
                    "cannot open the stream file for reading: %s", g_strerror(errsv));
        return false;
    }
    g_mutex_lock(&feed->lock);
    g_assert(feed->fd < 0);
    feed->fd = copy;
    g_cond_broadcast(&feed->cond);
    g_mutex_unlock(&feed->lock);
    return true;
}

void
vr_sender_feed_grow(VrSenderFeed *feed, uint64_t size)
{
    g_mutex_lock(&feed->lock);
    feed->size = MAX(feed->size, size);
    g_cond_broadcast(&feed->cond);
    g_mutex_unlock(&feed->lock);
}

void
vr_sender_feed_complete(VrSenderFeed *feed)
{
    g_mutex_lock(&feed->lock);
    feed->complete = true;
    g_cond_broadcast(&feed->cond);
    g_mutex_unlock(&feed->lock);
}

void
vr_sender_feed_fail(VrSenderFeed *feed)
{
    g_mutex_lock(&feed->lock);
    feed->failed = true;
    g_cond_broadcast(&feed->cond);
    g_mutex_unlock(&feed->lock);
}

void
vr_sender_feed_set_cancellable(VrSenderFeed *feed, GCancellable *cancellable)
{
    g_mutex_lock(&feed->lock);
    g_set_object(&feed->stop, cancellable);
    g_mutex_unlock(&feed->lock);
}

bool
vr_sender_feed_check(VrSenderFeed *feed, GError **error)
{
    bool stopped;

    g_mutex_lock(&feed->lock);
    stopped = feed->stop != NULL && g_cancellable_is_cancelled(feed->stop);
    g_mutex_unlock(&feed->lock);
    if (stopped) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "the stream's upload stopped");
        return false;
    }
    return true;
}

/*
 * The one reading of the writer's state: the bytes written so far; *@complete: the writer
 * completed the stream and did not give up, so that is its size; returns false when the
 * writer gave up (*@complete is false then).
 */
static bool
vr_sender_feed_state(VrSenderFeed *feed, uint64_t *size, bool *complete)
{
    bool failed;

    g_mutex_lock(&feed->lock);
    *size = feed->size;
    failed = feed->failed;
    *complete = feed->complete && !failed;
    g_mutex_unlock(&feed->lock);
    return !failed;
}

bool
vr_sender_feed_is_complete(VrSenderFeed *feed)
{
    uint64_t size;
    bool complete;

    vr_sender_feed_state(feed, &size, &complete);
    return complete;
}

uint64_t
vr_sender_feed_get_size(VrSenderFeed *feed, bool *complete)
{
    uint64_t size;

    vr_sender_feed_state(feed, &size, complete);
    return size;
}

/* As vr_sender_feed_state(), with an error when the writer gave up. */
static bool
vr_sender_feed_peek(VrSenderFeed *feed, uint64_t *size, bool *complete, GError **error)
{
    if (!vr_sender_feed_state(feed, size, complete)) {
        g_set_error_literal(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID,
                            "the stream's writer gave up");
        return false;
    }
    return true;
}

/* @cancellable fired: wake the waits of the feed @data (vr_sender_feed_wait()). */
static void
vr_sender_feed_on_cancelled(GCancellable *cancellable, gpointer data)
{
    VrSenderFeed *feed = data;

    g_mutex_lock(&feed->lock);
    g_cond_broadcast(&feed->cond);
    g_mutex_unlock(&feed->lock);
}

/*
 * Wait until more than @beyond bytes are written or the stream is complete (a writer that
 * gives up, or @cancellable, fail it); then as vr_sender_feed_peek(). Woken by the writer or
 * by @cancellable's signal (under the lock, so no wakeup is lost between the check and the
 * wait), never by polling.
 */
static bool
vr_sender_feed_wait(VrSenderFeed *feed, uint64_t beyond, GCancellable *cancellable, uint64_t *size,
                    bool *complete, GError **error)
{
    /* before the lock: the handler runs at once, taking it, when @cancellable has fired */
    gulong handler = cancellable != NULL
                         ? g_cancellable_connect(
                               cancellable, G_CALLBACK(vr_sender_feed_on_cancelled), feed, NULL)
                         : 0;

    g_mutex_lock(&feed->lock);
    while (!feed->failed && !feed->complete && feed->size <= beyond &&
           !g_cancellable_is_cancelled(cancellable))
        g_cond_wait(&feed->cond, &feed->lock);
    g_mutex_unlock(&feed->lock);
    /* after the lock: it waits for a handler that runs */
    g_cancellable_disconnect(cancellable, handler);
    if (g_cancellable_set_error_if_cancelled(cancellable, error))
        return false;
    return vr_sender_feed_peek(feed, size, complete, error);
}

/* ---- the request body: a file from an offset, throttled --------------------------------- */

/*
 * A pollable GInputStream over the stream file from an offset: libsoup splices it into the
 * connection, 8 KiB per read, which come from a buffer of one block (VR_SENDER_BLOCK) read
 * from the file at once. The bandwidth limits are asked before each block; when they say
 * wait, a blocking read sleeps, and a non-blocking one says so (the stream's source is a
 * timer); the block is read then without asking again.
 */
typedef struct {
    GInputStream parent;
    int fd;             /* borrowed */
    uint64_t pos;       /* the next byte of the file to send */
    uint64_t length;    /* the file's size */
    VrSender *sender;   /* for the limits */
    uint64_t granted;   /* bytes the limits granted and not handed out yet */
    int64_t ready_at;   /* monotonic time they may go at */
    uint8_t *buf;       /* VR_SENDER_BLOCK bytes */
    uint64_t buf_start; /* the file offset of buf[0] */
    size_t buf_len;     /* bytes in buf */
    VrSenderProgress progress;
    gpointer progress_data;
    uint64_t *sent; /* counts every byte handed out */
    /*
     * A stream being written (NULL: a complete file): @length is what is written so far, and
     * the body ends (chunked) when the writer completed the stream and all of it went out.
     */
    VrSenderFeed *feed;
    bool eof; /* the whole stream went out */
} VrSenderBody;

typedef struct {
    GInputStreamClass parent_class;
} VrSenderBodyClass;

static GType vr_sender_body_get_type(void);
static void vr_sender_body_pollable_init(GPollableInputStreamInterface *iface);
G_DEFINE_TYPE_WITH_CODE(VrSenderBody, vr_sender_body, G_TYPE_INPUT_STREAM,
                        G_IMPLEMENT_INTERFACE(G_TYPE_POLLABLE_INPUT_STREAM,
                                              vr_sender_body_pollable_init))

/* Sleep @us microseconds, or less when @cancellable fires: false then. */
static bool
vr_sender_sleep(int64_t us, GCancellable *cancellable, GError **error)
{
    int64_t until = g_get_monotonic_time() + us;
    int64_t now;

    while ((now = g_get_monotonic_time()) < until) {
        if (g_cancellable_set_error_if_cancelled(cancellable, error))
            return false;
        g_usleep(MIN(until - now, 50000));
    }
    return !g_cancellable_set_error_if_cancelled(cancellable, error);
}

/* Bytes of the buffer not handed out yet. */
static size_t
vr_sender_body_buffered(const VrSenderBody *body)
{
    uint64_t end = body->buf_start + body->buf_len;

    return body->pos >= body->buf_start && body->pos < end ? (size_t)(end - body->pos) : 0;
}

/*
 * Ask the limits for the next @count bytes to hand out (unless granted already): how long
 * until they may go (0: now). Per read, not per buffer: a slow rate spaces libsoup's small
 * writes evenly instead of leaving the connection silent for a whole block.
 */
static int64_t
vr_sender_body_grant(VrSenderBody *body, gsize count)
{
    int64_t now = g_get_monotonic_time();

    if (body->granted == 0) {
        uint64_t n = MIN(count, body->length - body->pos);

        body->ready_at =
            now + vr_rate_limit_reserve(body->sender->limits, body->sender->n_limits, n, now);
        body->granted = n;
    }
    return MAX(body->ready_at - now, 0);
}

/* Hand out at most @count granted bytes, reading the next block first when none is left. */
static gssize
vr_sender_body_pread(VrSenderBody *body, void *buffer, gsize count, GError **error)
{
    ssize_t got = 0;
    size_t n;

    if (vr_sender_body_buffered(body) == 0) {
        do {
            got = pread(body->fd, body->buf, MIN(VR_SENDER_BLOCK, body->length - body->pos),
                        (off_t)body->pos);
        } while (got < 0 && errno == EINTR);
        if (got > 0) {
            body->buf_start = body->pos;
            body->buf_len = (size_t)got;
        }
    } else {
        got = 1; /* bytes are buffered */
    }
    if (got < 0) {
        int errsv = errno;

        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv),
                    "failed to read the stream at offset %" G_GUINT64_FORMAT ": %s", body->pos,
                    g_strerror(errsv));
        return -1;
    }
    if (got == 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                    "the stream file shrank: it ends at %" G_GUINT64_FORMAT
                    ", not %" G_GUINT64_FORMAT,
                    body->pos, body->length);
        return -1;
    }
    n = MIN(MIN(count, body->granted), vr_sender_body_buffered(body));
    memcpy(buffer, body->buf + (body->pos - body->buf_start), n);
    body->granted -= n;
    body->pos += n;
    *body->sent += n;
    if (body->progress != NULL)
        body->progress(body->pos, body->length, body->progress_data);
    return (gssize)n;
}

/*
 * A stream being written, all of what is written sent: wait for more (@block) or say what
 * is: 1 more is written, 0 the stream is complete and sent, -1 @error (WOULD_BLOCK when
 * !@block and nothing more is written yet).
 */
static int
vr_sender_body_follow(VrSenderBody *body, bool block, GCancellable *cancellable, GError **error)
{
    bool complete = false;
    uint64_t size;

    if (block ? !vr_sender_feed_wait(body->feed, body->pos, cancellable, &size, &complete, error)
              : !vr_sender_feed_peek(body->feed, &size, &complete, error))
        return -1;
    body->length = MAX(body->length, size);
    if (body->pos < body->length)
        return 1;
    if (complete) {
        body->eof = true;
        return 0;
    }
    g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "the stream is being written");
    return -1;
}

static gssize
vr_sender_body_read(GInputStream *stream, void *buffer, gsize count, GCancellable *cancellable,
                    GError **error)
{
    VrSenderBody *body = (VrSenderBody *)stream;
    int64_t wait;
    int more;

    if (count == 0)
        return 0;
    if (body->feed != NULL && body->pos >= body->length &&
        (more = vr_sender_body_follow(body, true, cancellable, error)) <= 0)
        return more;
    if (body->pos >= body->length)
        return 0;
    wait = vr_sender_body_grant(body, count);
    if (wait > 0 && !vr_sender_sleep(wait, cancellable, error))
        return -1;
    return vr_sender_body_pread(body, buffer, count, error);
}

static gssize
vr_sender_body_read_nonblocking(GPollableInputStream *stream, void *buffer, gsize count,
                                GError **error)
{
    VrSenderBody *body = (VrSenderBody *)stream;
    int more;

    if (count == 0)
        return 0;
    if (body->feed != NULL && body->pos >= body->length &&
        (more = vr_sender_body_follow(body, false, NULL, error)) <= 0)
        return more;
    if (body->pos >= body->length)
        return 0;
    if (vr_sender_body_grant(body, count) > 0) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "rate limited");
        return -1;
    }
    return vr_sender_body_pread(body, buffer, count, error);
}

static gboolean
vr_sender_body_is_readable(GPollableInputStream *stream)
{
    VrSenderBody *body = (VrSenderBody *)stream;

    if (body->feed != NULL && body->pos >= body->length) {
        bool complete;

        /* all of what is written went out: readable once there is more, or the end */
        return vr_sender_feed_get_size(body->feed, &complete) > body->pos || complete;
    }
    return body->granted == 0 || body->ready_at <= g_get_monotonic_time();
}

static GSource *
vr_sender_body_create_source(GPollableInputStream *stream, GCancellable *cancellable)
{
    VrSenderBody *body = (VrSenderBody *)stream;
    g_autoptr(GSource) base = g_pollable_source_new(G_OBJECT(stream));

    /*
     * A file is always readable: the source fires at once, or when the limits allow; a stream
     * being written is looked at again every 10 ms while all of it went out.
     */
    if (body->feed != NULL && body->pos >= body->length)
        g_source_set_ready_time(base, g_get_monotonic_time() + 10000);
    else
        g_source_set_ready_time(base, vr_sender_body_is_readable(stream) ? 0 : body->ready_at);
    return g_pollable_source_new_full(stream, base, cancellable);
}

static gboolean
vr_sender_body_can_poll(GPollableInputStream *stream)
{
    return TRUE;
}

static void
vr_sender_body_pollable_init(GPollableInputStreamInterface *iface)
{
    iface->can_poll = vr_sender_body_can_poll;
    iface->is_readable = vr_sender_body_is_readable;
    iface->create_source = vr_sender_body_create_source;
    iface->read_nonblocking = vr_sender_body_read_nonblocking;
}

static gboolean
vr_sender_body_close(GInputStream *stream, GCancellable *cancellable, GError **error)
{
    return TRUE; /* the fd belongs to the upload */
}

static void
vr_sender_body_finalize(GObject *object)
{
    g_free(((VrSenderBody *)object)->buf);
    G_OBJECT_CLASS(vr_sender_body_parent_class)->finalize(object);
}

static void
vr_sender_body_class_init(VrSenderBodyClass *klass)
{
    GInputStreamClass *stream_class = G_INPUT_STREAM_CLASS(klass);

    G_OBJECT_CLASS(klass)->finalize = vr_sender_body_finalize;
    stream_class->read_fn = vr_sender_body_read;
    stream_class->close_fn = vr_sender_body_close;
}

static void
vr_sender_body_init(VrSenderBody *body)
{
    body->buf = g_malloc(VR_SENDER_BLOCK);
}

/* ---- one upload ------------------------------------------------------------------------- */

/* One upload; a hash list fetch uses it too (without fd, length, progress). */
typedef struct {
    VrSender *sender;
    int fd;
    uint64_t length;    /* a stream being written: what is written so far, until complete */
    VrSenderFeed *feed; /* the stream is being written, or NULL */
    bool whole;         /* the receiver takes no chunked body (411): wait for the whole stream */
    char *uri;
    VrSenderProgress progress;
    gpointer progress_data;
    VrSenderStats *stats;
    GCancellable *cancellable;
    GError *tls_error; /* why the policy refused the replica in this attempt */
    guint retry_after; /* the last reply's Retry-After, seconds (0: none) */
} VrSenderUpload;

/* The policy on the replica's certificate: in the handshake, and after it. */
static gboolean
vr_sender_on_accept_certificate(GTlsConnection *conn, GTlsCertificate *peer,
                                GTlsCertificateFlags errors, gpointer user_data)
{
    VrSenderUpload *upload = user_data;
    g_autoptr(GError) error = NULL;

    if (vr_tls_policy_check_gtls(upload->sender->policy, peer, &error))
        return TRUE;
    if (upload->tls_error == NULL)
        upload->tls_error = g_steal_pointer(&error);
    return FALSE;
}

static void
vr_sender_on_network_event(SoupMessage *msg, GSocketClientEvent event, GIOStream *connection,
                           gpointer user_data)
{
    VrSenderUpload *upload = user_data;
    g_autoptr(GError) error = NULL;
    GTlsCertificate *peer;

    if (!G_IS_TLS_CONNECTION(connection))
        return;
    switch (event) {
    case G_SOCKET_CLIENT_TLS_HANDSHAKING:
        /* No CA database: every certificate reaches accept-certificate, the policy decides. */
        g_tls_connection_set_database(G_TLS_CONNECTION(connection), NULL);
        /*
         * The client certificate up front: with none, glib-networking asks libsoup's
         * GTlsInteraction, which answers on a context the synchronous handshake does not
         * iterate (a deadlock in libsoup 3.2's soup_session_send()).
         */
        g_tls_connection_set_certificate(G_TLS_CONNECTION(connection), upload->sender->cert);
        g_signal_connect(connection, "accept-certificate",
                         G_CALLBACK(vr_sender_on_accept_certificate), upload);
        break;
    case G_SOCKET_CLIENT_TLS_HANDSHAKED:
        peer = g_tls_connection_get_peer_certificate(G_TLS_CONNECTION(connection));
        if (peer == NULL) {
            g_set_error(&error, G_TLS_ERROR, G_TLS_ERROR_BAD_CERTIFICATE,
                        "the replica sent no certificate");
        } else if (vr_tls_policy_check_gtls(upload->sender->policy, peer, &error)) {
            break;
        }
        if (upload->tls_error == NULL)
            upload->tls_error = g_steal_pointer(&error);
        /* fails the request; the upload stops because tls_error is set */
        g_io_stream_close(connection, NULL, NULL);
        break;
    default:
        break;
    }
}

static SoupMessage *
vr_sender_message_new(VrSenderUpload *upload, const char *method)
{
    SoupMessage *msg = soup_message_new(method, upload->uri);

    /* Never resent behind our back: every attempt is ours, with the offset it is for. */
    soup_message_add_flags(msg, SOUP_MESSAGE_NO_REDIRECT);
    g_signal_connect(msg, "network-event", G_CALLBACK(vr_sender_on_network_event), upload);
    return msg;
}

/* A decimal header of the reply; false when absent or not a number. */
static bool
vr_sender_reply_u64(SoupMessage *msg, const char *name, uint64_t *value)
{
    const char *text = soup_message_headers_get_one(soup_message_get_response_headers(msg), name);
    char *end = NULL;

    if (text == NULL || !g_ascii_isdigit(text[0]))
        return false;
    errno = 0;
    *value = g_ascii_strtoull(text, &end, 10);
    return errno == 0 && *end == '\0';
}

/*
 * Close @reply without reading what is left of it, and drop the connection: libsoup 3.2's
 * close would read on, for the I/O timeout, from a connection that cannot carry another
 * request. A cancelled close still marks the stream closed.
 */
static void
vr_sender_reply_drop(SoupSession *session, GInputStream *reply)
{
    g_autoptr(GCancellable) now = g_cancellable_new();

    g_cancellable_cancel(now);
    g_input_stream_close(reply, now, NULL);
    soup_session_abort(session);
}

/* The reply's Retry-After, for a 503. */
static void
vr_sender_note_retry_after(VrSenderUpload *upload, SoupMessage *msg)
{
    const char *after =
        soup_message_headers_get_one(soup_message_get_response_headers(msg), "Retry-After");

    upload->retry_after = after != NULL ? (guint)MIN(g_ascii_strtoull(after, NULL, 10), 300) : 0;
}

/*
 * Read at most VR_SENDER_REASON_MAX bytes of @reply: its first line, and close it. @early:
 * answered before (all of) the request body, so the connection is dropped.
 */
static char *
vr_sender_read_reason(VrSenderUpload *upload, SoupSession *session, GInputStream *reply, bool early,
                      GError **error)
{
    char buf[VR_SENDER_REASON_MAX + 1];
    gsize got = 0;
    char *nl;

    if (!g_input_stream_read_all(reply, buf, VR_SENDER_REASON_MAX, &got, upload->cancellable,
                                 error))
        return NULL;
    if (early)
        vr_sender_reply_drop(session, reply);
    else
        g_input_stream_close(reply, NULL, NULL);
    buf[got] = '\0';
    nl = strchr(buf, '\n');
    if (nl != NULL)
        *nl = '\0';
    return g_strdup(buf);
}

/*
 * Send @msg and read at most VR_SENDER_REASON_MAX bytes of the reply: its first line.
 * Synchronous: libsoup then writes the body with a blocking splice in this thread, without
 * a main loop iteration per 8 KiB piece.
 */
static char *
vr_sender_send(VrSenderUpload *upload, SoupSession *session, SoupMessage *msg,
               const VrSenderBody *body, GError **error)
{
    g_autoptr(GInputStream) reply = NULL;

    reply = soup_session_send(session, msg, upload->cancellable, error);
    if (reply == NULL)
        return NULL;
    vr_sender_note_retry_after(upload, msg);
    return vr_sender_read_reason(
        upload, session, reply,
        body != NULL && (body->feed != NULL ? !body->eof : body->pos < body->length), error);
}

typedef enum {
    VR_SENDER_DONE,   /* committed */
    VR_SENDER_AGAIN,  /* go on from the offset now known, at once */
    VR_SENDER_RETRY,  /* a failure that may pass: wait, ask for the offset, go on */
    VR_SENDER_BUSY,   /* 503: the replica's transfer slots are busy; wait, try again */
    VR_SENDER_FAILED, /* final: @error */
} VrSenderOutcome;

/* Where the receiver stands: the offset to go on from (0: start over). */
static VrSenderOutcome
vr_sender_probe(VrSenderUpload *upload, SoupSession *session, uint64_t *offset, GError **error)
{
    g_autoptr(SoupMessage) msg = vr_sender_message_new(upload, SOUP_METHOD_HEAD);
    g_autofree char *reason = vr_sender_send(upload, session, msg, NULL, error);
    const char *state;
    guint status;

    if (reason == NULL)
        return VR_SENDER_RETRY;
    status = soup_message_get_status(msg);
    if (status == SOUP_STATUS_NOT_FOUND) {
        *offset = 0;
        return VR_SENDER_AGAIN;
    }
    if (status == SOUP_STATUS_INSUFFICIENT_STORAGE) {
        /* an upload the receiver refused in its body for want of space: as a PUT's 507 */
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_NO_SPACE,
                    "the replica is out of space: %s",
                    reason[0] != '\0' ? reason : soup_message_get_reason_phrase(msg));
        return VR_SENDER_FAILED;
    }
    if (status != SOUP_STATUS_OK) {
        bool later = SOUP_STATUS_IS_SERVER_ERROR(status);

        g_set_error(error, VR_SENDER_ERROR,
                    later ? VR_SENDER_ERROR_UNREACHABLE : VR_SENDER_ERROR_REFUSED, "HEAD %s: %u %s",
                    upload->uri, status,
                    reason[0] != '\0' ? reason : soup_message_get_reason_phrase(msg));
        if (status == SOUP_STATUS_SERVICE_UNAVAILABLE)
            return VR_SENDER_BUSY;
        return later ? VR_SENDER_RETRY : VR_SENDER_FAILED;
    }
    state = soup_message_headers_get_one(soup_message_get_response_headers(msg), "VR-State");
    if (g_strcmp0(state, "committed") == 0) {
        upload->stats->already_committed = true;
        return VR_SENDER_DONE;
    }
    if (upload->feed != NULL) {
        bool complete;

        if (!vr_sender_feed_peek(upload->feed, &upload->length, &complete, error))
            return VR_SENDER_FAILED;
    }
    if (!vr_sender_reply_u64(msg, "VR-Offset", offset) || *offset > upload->length)
        *offset = 0;
    return VR_SENDER_AGAIN;
}

/* PUT the stream from @offset; on a conflict about the offset, @offset becomes the right one. */
static VrSenderOutcome
vr_sender_put(VrSenderUpload *upload, SoupSession *session, uint64_t *offset, GError **error)
{
    g_autoptr(SoupMessage) msg = vr_sender_message_new(upload, SOUP_METHOD_PUT);
    g_autoptr(GInputStream) stream = g_object_new(vr_sender_body_get_type(), NULL);
    VrSenderBody *body = (VrSenderBody *)stream;
    SoupMessageHeaders *headers = soup_message_get_request_headers(msg);
    g_autofree char *reason = NULL;
    char text[24];
    uint64_t at;
    guint status;
    bool growing = false;

    if (upload->feed != NULL) {
        bool complete;

        if (upload->whole ? !vr_sender_feed_wait(upload->feed, G_MAXUINT64, upload->cancellable,
                                                 &upload->length, &complete, error)
                          : !vr_sender_feed_peek(upload->feed, &upload->length, &complete, error))
            return VR_SENDER_FAILED;
        growing = !complete;
        if (complete)
            upload->stats->stream_bytes = upload->length;
    }
    body->feed = growing ? upload->feed : NULL;
    body->fd = upload->fd;
    body->pos = *offset;
    body->length = upload->length;
    body->sender = upload->sender;
    body->progress = upload->progress;
    body->progress_data = upload->progress_data;
    body->sent = &upload->stats->body_bytes;
    g_snprintf(text, sizeof(text), "%" G_GUINT64_FORMAT, *offset);
    soup_message_headers_replace(headers, "VR-Offset", text);
    g_snprintf(text, sizeof(text), "%" G_GUINT64_FORMAT, upload->length);
    /* Being written: its length is unknown, the body chunked; the END record ends the stream. */
    soup_message_headers_replace(headers, "VR-Length", growing ? "unknown" : text);
    soup_message_headers_set_expectations(headers, SOUP_EXPECTATION_CONTINUE);
    soup_message_set_request_body(msg, "application/vnd.virt-replica.stream", stream,
                                  growing ? -1 : (gssize)(upload->length - *offset));
    if (growing)
        soup_message_headers_set_encoding(headers, SOUP_ENCODING_CHUNKED);
    upload->stats->requests++;
    if (*offset > 0) {
        upload->stats->resumes++;
        upload->stats->resumed_at = *offset;
    }
    g_debug("PUT %s from offset %" G_GUINT64_FORMAT "%s", upload->uri, *offset,
            growing ? " while it is written" : "");

    reason = vr_sender_send(upload, session, msg, body, error);
    if (growing)
        upload->length = MAX(upload->length, body->length);
    if (reason == NULL)
        return VR_SENDER_RETRY;
    status = soup_message_get_status(msg);
    switch (status) {
    case SOUP_STATUS_NO_CONTENT:
        if (*offset == 0 && body->pos == *offset && upload->length > 0)
            upload->stats->already_committed = true; /* answered before the body */
        return VR_SENDER_DONE;
    case SOUP_STATUS_ACCEPTED:
        if (!vr_sender_reply_u64(msg, "VR-Offset", &at) || at > upload->length)
            break;
        *offset = at;
        return VR_SENDER_AGAIN;
    case SOUP_STATUS_CONFLICT:
        if (vr_sender_reply_u64(msg, "VR-Offset", &at) && at <= upload->length) {
            g_debug("the receiver holds %" G_GUINT64_FORMAT " bytes: %s", at, reason);
            *offset = at;
            return VR_SENDER_AGAIN;
        }
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT, "the replica refused %s: %s",
                    upload->uri, reason);
        return VR_SENDER_FAILED;
    case SOUP_STATUS_INSUFFICIENT_STORAGE:
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_NO_SPACE,
                    "the replica is out of space: %s", reason);
        return VR_SENDER_FAILED;
    case SOUP_STATUS_LENGTH_REQUIRED:
        if (!growing)
            break;
        /* A replica from before streams of unknown length: send it whole once it is written. */
        g_debug("%s takes no chunked body: the stream goes once it is complete", upload->uri);
        upload->whole = true;
        return VR_SENDER_AGAIN;
    default:
        break;
    }
    if (SOUP_STATUS_IS_SERVER_ERROR(status)) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_UNREACHABLE,
                    "the replica failed: %u %s", status, reason);
        return status == SOUP_STATUS_SERVICE_UNAVAILABLE ? VR_SENDER_BUSY : VR_SENDER_RETRY;
    }
    g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED, "the replica refused %s: %u %s",
                upload->uri, status,
                reason[0] != '\0' ? reason : soup_message_get_reason_phrase(msg));
    return VR_SENDER_FAILED;
}

/* The wait after a 503 with Retry-After @seconds (none: 5 s), with a random quarter on top. */
static int64_t
vr_sender_retry_after_us(guint seconds)
{
    int64_t us = (int64_t)(seconds != 0 ? seconds : 5) * G_USEC_PER_SEC;

    return us + (int64_t)(g_random_double() * (double)us / 4);
}

/* The wait before retry @n (1, 2, ...): exponential, capped, with half of it random. */
static int64_t
vr_sender_backoff_us(VrSender *sender, guint n)
{
    uint64_t ms = sender->backoff_min_ms;

    for (guint i = 1; i < n && ms < sender->backoff_max_ms; i++)
        ms *= 2;
    ms = MIN(ms, sender->backoff_max_ms);
    return (int64_t)(ms * 500) + (int64_t)(g_random_double() * (double)(ms * 500));
}

static bool
vr_sender_ignore_record(const VrWireRecord *record, gpointer user_data, GError **error)
{
    return true;
}

/* The BEGIN record of the stream in @fd: the identity, for the URL. */
static bool
vr_sender_read_identity(int fd, uint64_t length, VrWireIdentity *identity, GError **error)
{
    uint8_t head[VR_WIRE_HEADER_SIZE + VR_WIRE_IDENTITY_SIZE];
    g_autoptr(VrWireDecoder) decoder = vr_wire_decoder_new();
    g_autoptr(GError) local = NULL;
    const VrWireIdentity *begin;
    ssize_t got;

    if (length < sizeof(head)) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID,
                    "%" G_GUINT64_FORMAT " bytes are too short for a stream", length);
        return false;
    }
    got = pread(fd, head, sizeof(head), 0);
    if (got != (ssize_t)sizeof(head)) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID,
                    "failed to read the stream's BEGIN record: %s",
                    got < 0 ? g_strerror(errno) : "short read");
        return false;
    }
    if (!vr_wire_decoder_feed(decoder, head, sizeof(head), vr_sender_ignore_record, NULL, &local) ||
        (begin = vr_wire_decoder_get_identity(decoder)) == NULL) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID, "not a stream: %s",
                    local != NULL ? local->message : "no BEGIN record");
        return false;
    }
    *identity = *begin;
    return true;
}

/* A session of the thread-default main context: the replica's address, ours, no proxy. */
static SoupSession *
vr_sender_session_new(VrSender *sender)
{
    return soup_session_new_with_options(
        "timeout", sender->io_timeout_s, "idle-timeout", sender->io_timeout_s, "remote-connectable",
        sender->remote, "local-address", sender->local, "user-agent", "virt-replica",
        "max-conns-per-host", 1, "proxy-resolver", NULL, NULL);
}

/*
 * The attempts of @upload (its fd, length or feed, progress and stats set) of the stream
 * @identity names, until it is committed or a final error.
 */
static bool
vr_sender_upload_run(VrSender *sender, VrSenderUpload *upload, const VrWireIdentity *identity,
                     GError **error)
{
    g_autoptr(GMainContext) context = g_main_context_new();
    g_autoptr(SoupSession) session = NULL;
    g_autoptr(GError) last = NULL;
    GCancellable *cancellable = upload->cancellable;
    VrSenderStats *stats = upload->stats;
    uint64_t offset = 0;
    uint64_t reached = 0; /* the furthest offset the receiver confirmed */
    guint failures = 0;
    guint busy = 0;
    bool probe = false;
    bool ok = false;

    upload->sender = sender;
    upload->uri =
        g_strdup_printf("https://%s:%u/v1/cycles/%s/%s/%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT
                        "/%" G_GUINT64_FORMAT,
                        sender->server_name, sender->port, identity->relationship, identity->disk,
                        identity->epoch, identity->base_cycle, identity->target_cycle);

    g_main_context_push_thread_default(context);
    session = vr_sender_session_new(sender);
    for (guint requests = 0; requests < sender->max_attempts * 2;) {
        VrSenderOutcome outcome;

        g_clear_error(&last);
        requests++;
        if (probe)
            outcome = vr_sender_probe(upload, session, &offset, &last);
        else
            outcome = vr_sender_put(upload, session, &offset, &last);
        if (upload->tls_error != NULL) {
            g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CERTIFICATE,
                        "the certificate of replica %s was refused: %s", sender->server_name,
                        upload->tls_error->message);
            goto out;
        }
        if (g_cancellable_set_error_if_cancelled(cancellable, error))
            goto out;
        switch (outcome) {
        case VR_SENDER_DONE:
            if (upload->feed != NULL) {
                bool complete = false;

                /* a stream being written is complete once the receiver committed it */
                if (vr_sender_feed_peek(upload->feed, &upload->length, &complete, NULL) && complete)
                    stats->stream_bytes = upload->length;
            }
            ok = true;
            goto out;
        case VR_SENDER_AGAIN:
            if (offset > reached) {
                /*
                 * The receiver holds more than before the last failure: the budget is for
                 * failures in a row, so that a long upload (a stream sent while a slow read
                 * writes it) that loses its connection a few times, moving on each time, goes
                 * on.
                 */
                reached = offset;
                failures = 0;
                requests = 0;
            }
            probe = false;
            continue;
        case VR_SENDER_FAILED:
            g_propagate_error(error, g_steal_pointer(&last));
            goto out;
        case VR_SENDER_BUSY:
            /* not a failure: the replica queues; wait as it says, a bounded number of times */
            if (++busy > VR_SENDER_MAX_BUSY)
                break;
            stats->busy++;
            requests--;
            g_debug("the replica is busy (%u): %s", busy, last->message);
            if (!vr_sender_sleep(vr_sender_retry_after_us(upload->retry_after), cancellable, error))
                goto out;
            continue;
        case VR_SENDER_RETRY:
            break;
        }
        if (upload->feed != NULL) {
            uint64_t size;
            bool complete;

            /* the writer gave up (what failed the body): there is nothing to retry */
            if (!vr_sender_feed_peek(upload->feed, &size, &complete, error))
                goto out;
        }
        failures++;
        g_debug("attempt %u of %s failed: %s", failures, upload->uri, last->message);
        if (failures >= sender->max_attempts)
            break;
        if (!vr_sender_sleep(vr_sender_backoff_us(sender, failures), cancellable, error))
            goto out;
        probe = true;
        /* a fresh connection: the old one may be half dead */
        soup_session_abort(session);
    }
    g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_UNREACHABLE,
                "failed to upload to %s after %u failed attempts; the last: %s", upload->uri,
                failures, last != NULL ? last->message : "too many conflicting offsets");

out:
    g_clear_object(&session);
    g_main_context_pop_thread_default(context);
    g_clear_error(&upload->tls_error);
    g_clear_pointer(&upload->uri, g_free);
    return ok;
}

/*
 * The setup both uploads share: the stream in @fd (borrowed; the file @path, for errors, or
 * NULL), @length bytes of it written so far (all of it without @feed), named by its BEGIN
 * record; then the attempts.
 */
static bool
vr_sender_upload_fd(VrSender *sender, int fd, const char *path, uint64_t length, VrSenderFeed *feed,
                    VrSenderProgress progress, gpointer progress_data, VrSenderStats *stats,
                    GCancellable *cancellable, GError **error)
{
    VrWireIdentity identity;
    VrSenderUpload upload = {
        .fd = fd,
        .length = length,
        .feed = feed,
        .progress = progress,
        .progress_data = progress_data,
        .stats = stats,
        .cancellable = cancellable,
    };

    if (!vr_sender_read_identity(fd, length, &identity, error)) {
        if (path != NULL)
            g_prefix_error(error, "'%s': ", path);
        return false;
    }
    return vr_sender_upload_run(sender, &upload, &identity, error);
}

bool
vr_sender_upload_file(VrSender *sender, const char *path, VrSenderProgress progress,
                      gpointer progress_data, VrSenderStats *stats, GCancellable *cancellable,
                      GError **error)
{
    VrSenderStats local_stats;
    struct stat st;
    bool ok;
    int fd;

    if (stats == NULL)
        stats = &local_stats;
    memset(stats, 0, sizeof(*stats));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        int errsv = errno;

        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv), "failed to open '%s': %s",
                    path, g_strerror(errsv));
        if (fd >= 0)
            close(fd);
        return false;
    }
    stats->stream_bytes = (uint64_t)st.st_size;
    ok = vr_sender_upload_fd(sender, fd, path, (uint64_t)st.st_size, NULL, progress, progress_data,
                             stats, cancellable, error);
    close(fd);
    return ok;
}

bool
vr_sender_upload_feed(VrSender *sender, VrSenderFeed *feed, VrSenderProgress progress,
                      gpointer progress_data, VrSenderStats *stats, GCancellable *cancellable,
                      GError **error)
{
    VrSenderStats local_stats;
    uint64_t length;
    bool complete;
    int fd;

    if (stats == NULL)
        stats = &local_stats;
    memset(stats, 0, sizeof(*stats));
    /* The BEGIN record names the resource: wait for it (and so for the file). */
    if (!vr_sender_feed_wait(feed, VR_WIRE_HEADER_SIZE + VR_WIRE_IDENTITY_SIZE - 1, cancellable,
                             &length, &complete, error))
        return false;
    g_mutex_lock(&feed->lock);
    fd = feed->fd;
    g_mutex_unlock(&feed->lock);
    if (fd < 0) {
        g_set_error_literal(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID,
                            "the stream's writer completed it without a file");
        return false;
    }
    if (complete)
        stats->stream_bytes = length;
    return vr_sender_upload_fd(sender, fd, NULL, length, feed, progress, progress_data, stats,
                               cancellable, error);
}

/* ---- hash lists ------------------------------------------------------------------------- */

/*
 * The header of a hash list (the format of plugin/vr-hashlist.h), checked with the rules of
 * vr_hashlist_reader_open(): transport/ is below plugin/ and does not link it.
 */
#define VR_SENDER_HASHLIST_MAGIC   "VRHASH1\n"
#define VR_SENDER_HASHLIST_VERSION 1
#define VR_SENDER_HASHLIST_HEADER  64
#define VR_SENDER_HASHLIST_BLOCK   65536
#define VR_SENDER_HASHLIST_SHA256  1
#define VR_SENDER_HASHLIST_DIGEST  32

static uint32_t
vr_sender_le32(const uint8_t *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof(v));
    return GUINT32_FROM_LE(v);
}

static uint64_t
vr_sender_le64(const uint8_t *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return GUINT64_FROM_LE(v);
}

/* Is @header the header of a hash list of exactly @length bytes? */
static bool
vr_sender_hashlist_check(const uint8_t *header, uint64_t length, GError **error)
{
    uint64_t size = vr_sender_le64(header + 16);
    uint64_t count = vr_sender_le64(header + 32);
    const char *problem = NULL;

    if (memcmp(header, VR_SENDER_HASHLIST_MAGIC, 8) != 0)
        problem = "it does not start like one";
    else if (vr_sender_le32(header + 8) != VR_SENDER_HASHLIST_VERSION ||
             vr_sender_le32(header + 12) != VR_SENDER_HASHLIST_HEADER ||
             vr_sender_le32(header + 24) != VR_SENDER_HASHLIST_BLOCK ||
             vr_sender_le32(header + 28) != VR_SENDER_HASHLIST_SHA256)
        problem = "its header is of a version this one does not take";
    else if (size == 0 || size > (uint64_t)G_MAXINT64 ||
             count != size / VR_SENDER_HASHLIST_BLOCK + (size % VR_SENDER_HASHLIST_BLOCK != 0))
        problem = "its entry count does not fit its disk size";
    for (guint i = 40; problem == NULL && i < VR_SENDER_HASHLIST_HEADER; i++) {
        if (header[i] != 0)
            problem = "reserved header bytes are not zero";
    }
    if (problem != NULL) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID,
                    "the replica sent something that is not a hash list: %s", problem);
        return false;
    }
    if (length != VR_SENDER_HASHLIST_HEADER + count * VR_SENDER_HASHLIST_DIGEST) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID,
                    "the replica sent a hash list of %" G_GUINT64_FORMAT
                    " entries in %" G_GUINT64_FORMAT " bytes, not %" G_GUINT64_FORMAT,
                    count, length, VR_SENDER_HASHLIST_HEADER + count * VR_SENDER_HASHLIST_DIGEST);
        return false;
    }
    return true;
}

static bool
vr_sender_write_all(int fd, const uint8_t *buf, size_t len, const char *path, GError **error)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int errsv = errno;

            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv), "cannot write '%s': %s",
                        path, g_strerror(errsv));
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/*
 * Read @want bytes of @reply into @buf: RETRY when the connection fails or ends before
 * (the Content-Length promised more).
 */
static VrSenderOutcome
vr_sender_read_body(VrSenderUpload *call, GInputStream *reply, uint8_t *buf, gsize want,
                    uint64_t at, uint64_t length, GError **error)
{
    gsize got = 0;

    if (!g_input_stream_read_all(reply, buf, want, &got, call->cancellable, error))
        return VR_SENDER_RETRY;
    if (got < want) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_PARTIAL_INPUT,
                    "the hash list from %s ended after %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                    " bytes",
                    call->uri, at + got, length);
        return VR_SENDER_RETRY;
    }
    return VR_SENDER_DONE;
}

/* A 200 of GET: the body into @part, whose header is checked before the rest is read. */
static VrSenderOutcome
vr_sender_receive_hashes(VrSenderUpload *call, SoupSession *session, SoupMessage *msg,
                         GInputStream *reply, const char *part, uint64_t *cycle, uint64_t *epoch,
                         GError **error)
{
    SoupMessageHeaders *headers = soup_message_get_response_headers(msg);
    g_autofree uint8_t *buf = NULL;
    VrSenderOutcome outcome = VR_SENDER_FAILED;
    uint64_t length, at = 0;
    int fd;

    if (!vr_sender_reply_u64(msg, "VR-Cycle", cycle) || *cycle == 0 ||
        !vr_sender_reply_u64(msg, "VR-Epoch", epoch) ||
        soup_message_headers_get_encoding(headers) != SOUP_ENCODING_CONTENT_LENGTH ||
        soup_message_headers_get_content_length(headers) < VR_SENDER_HASHLIST_HEADER) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID,
                    "the reply of the replica to %s lacks a VR-Cycle, a VR-Epoch or a "
                    "Content-Length of a hash list",
                    call->uri);
        vr_sender_reply_drop(session, reply);
        return VR_SENDER_FAILED;
    }
    length = (uint64_t)soup_message_headers_get_content_length(headers);
    fd = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int errsv = errno;

        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv), "cannot create '%s': %s", part,
                    g_strerror(errsv));
        vr_sender_reply_drop(session, reply);
        return VR_SENDER_FAILED;
    }
    buf = g_malloc(VR_SENDER_BLOCK);
    outcome = vr_sender_read_body(call, reply, buf, VR_SENDER_HASHLIST_HEADER, 0, length, error);
    if (outcome == VR_SENDER_DONE && !vr_sender_hashlist_check(buf, length, error))
        outcome = VR_SENDER_FAILED;
    if (outcome == VR_SENDER_DONE &&
        !vr_sender_write_all(fd, buf, VR_SENDER_HASHLIST_HEADER, part, error))
        outcome = VR_SENDER_FAILED;
    at = VR_SENDER_HASHLIST_HEADER;
    while (outcome == VR_SENDER_DONE && at < length) {
        gsize want = (gsize)MIN(VR_SENDER_BLOCK, length - at);

        outcome = vr_sender_read_body(call, reply, buf, want, at, length, error);
        if (outcome == VR_SENDER_DONE && !vr_sender_write_all(fd, buf, want, part, error))
            outcome = VR_SENDER_FAILED;
        at += want;
    }
    if (outcome == VR_SENDER_DONE && fsync(fd) < 0) {
        int errsv = errno;

        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv), "cannot sync '%s': %s", part,
                    g_strerror(errsv));
        outcome = VR_SENDER_FAILED;
    }
    if (close(fd) < 0 && outcome == VR_SENDER_DONE) {
        int errsv = errno;

        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv), "cannot close '%s': %s", part,
                    g_strerror(errsv));
        outcome = VR_SENDER_FAILED;
    }
    if (outcome == VR_SENDER_DONE)
        g_input_stream_close(reply, NULL, NULL);
    else
        vr_sender_reply_drop(session, reply);
    return outcome;
}

/* One GET of the hash list into @part. */
static VrSenderOutcome
vr_sender_get_hashes(VrSenderUpload *call, SoupSession *session, const char *part, uint64_t *cycle,
                     uint64_t *epoch, GError **error)
{
    g_autoptr(SoupMessage) msg = vr_sender_message_new(call, SOUP_METHOD_GET);
    g_autoptr(GInputStream) reply = NULL;
    g_autofree char *reason = NULL;
    guint status;

    call->stats->requests++;
    g_debug("GET %s", call->uri);
    reply = soup_session_send(session, msg, call->cancellable, error);
    if (reply == NULL)
        return VR_SENDER_RETRY;
    status = soup_message_get_status(msg);
    if (status == SOUP_STATUS_OK)
        return vr_sender_receive_hashes(call, session, msg, reply, part, cycle, epoch, error);
    vr_sender_note_retry_after(call, msg);
    reason = vr_sender_read_reason(call, session, reply, false, error);
    if (reason == NULL)
        return VR_SENDER_RETRY;
    if (reason[0] == '\0') {
        g_free(reason);
        reason = g_strdup(soup_message_get_reason_phrase(msg));
    }
    if (status == SOUP_STATUS_NOT_FOUND) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_NOT_FOUND,
                    "the replica has no hash list at %s: %s", call->uri, reason);
        return VR_SENDER_FAILED;
    }
    if (SOUP_STATUS_IS_SERVER_ERROR(status) && status != SOUP_STATUS_NOT_IMPLEMENTED) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_UNREACHABLE,
                    "the replica failed: %u %s", status, reason);
        return status == SOUP_STATUS_SERVICE_UNAVAILABLE ? VR_SENDER_BUSY : VR_SENDER_RETRY;
    }
    g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED, "the replica refused %s: %u %s",
                call->uri, status, reason);
    return VR_SENDER_FAILED;
}

/* Rename @part to @path and sync the directory: the list is durable under its name. */
static bool
vr_sender_publish(const char *part, const char *path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);
    int errsv;
    int fd;

    if (rename(part, path) < 0) {
        errsv = errno;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv),
                    "cannot rename '%s' to '%s': %s", part, path, g_strerror(errsv));
        return false;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) < 0) {
        errsv = errno;
        if (fd >= 0)
            close(fd);
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv),
                    "cannot sync directory '%s': %s", dir, g_strerror(errsv));
        return false;
    }
    close(fd);
    return true;
}

/* One attempt of a call: a request and its reply, with the outcome. */
typedef VrSenderOutcome (*VrSenderAttempt)(VrSenderUpload *call, SoupSession *session,
                                           gpointer data, GError **error);

/*
 * Run @attempt until it is DONE or fails for good, with the upload's rules for a call of one
 * request (a hash list, a domain XML): a RETRY waits a backoff and takes a fresh connection,
 * at most max_attempts times; a BUSY waits its Retry-After, at most VR_SENDER_MAX_BUSY
 * times; a certificate the policy refuses is final. @what names the call in the error
 * ("fetch", "send"). In a main context of its own, blocking the thread.
 */
static bool
vr_sender_call(VrSenderUpload *call, const char *what, VrSenderAttempt attempt, gpointer data,
               GError **error)
{
    VrSender *sender = call->sender;
    g_autoptr(GMainContext) context = g_main_context_new();
    g_autoptr(SoupSession) session = NULL;
    g_autoptr(GError) last = NULL;
    guint failures = 0;
    guint busy = 0;
    bool ok = false;

    g_main_context_push_thread_default(context);
    session = vr_sender_session_new(sender);
    for (;;) {
        VrSenderOutcome outcome;

        g_clear_error(&last);
        outcome = attempt(call, session, data, &last);
        if (call->tls_error != NULL) {
            g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CERTIFICATE,
                        "the certificate of replica %s was refused: %s", sender->server_name,
                        call->tls_error->message);
            goto out;
        }
        switch (outcome) {
        case VR_SENDER_DONE:
            ok = true;
            goto out;
        case VR_SENDER_AGAIN: /* not an outcome of a call of one request */
        case VR_SENDER_FAILED:
            g_propagate_error(error, g_steal_pointer(&last));
            goto out;
        case VR_SENDER_BUSY:
            if (++busy > VR_SENDER_MAX_BUSY)
                break;
            g_debug("the replica is busy (%u): %s", busy, last->message);
            g_usleep((gulong)vr_sender_retry_after_us(call->retry_after));
            continue;
        case VR_SENDER_RETRY:
            break;
        }
        failures++;
        g_debug("attempt %u of %s failed: %s", failures, call->uri, last->message);
        if (failures >= sender->max_attempts || busy > VR_SENDER_MAX_BUSY)
            break;
        g_usleep((gulong)vr_sender_backoff_us(sender, failures));
        soup_session_abort(session); /* a fresh connection: the old one may be half dead */
    }
    g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_UNREACHABLE,
                "failed to %s %s after %u failed attempts; the last: %s", what, call->uri, failures,
                last->message);

out:
    g_clear_object(&session);
    g_main_context_pop_thread_default(context);
    g_clear_error(&call->tls_error);
    return ok;
}

typedef struct {
    const char *part;
    uint64_t cycle;
    uint64_t epoch;
} VrSenderFetch;

static VrSenderOutcome
vr_sender_fetch_attempt(VrSenderUpload *call, SoupSession *session, gpointer data, GError **error)
{
    VrSenderFetch *fetch = data;

    return vr_sender_get_hashes(call, session, fetch->part, &fetch->cycle, &fetch->epoch, error);
}

bool
vr_sender_fetch_hashes(VrSender *sender, const char *relationship, const char *disk,
                       const char *path, uint64_t *cycle_out, uint64_t *epoch_out, GError **error)
{
    g_autofree char *rel = g_uri_escape_string(relationship, NULL, FALSE);
    g_autofree char *dsk = g_uri_escape_string(disk, NULL, FALSE);
    g_autofree char *part = g_strconcat(path, ".part", NULL);
    VrSenderStats stats = { 0 };
    VrSenderUpload call = { 0 };
    VrSenderFetch fetch = { part, 0, 0 };
    bool ok;

    /* The names go as they are, escaped: the receiver is the one that checks them (400). */
    call.sender = sender;
    call.fd = -1;
    call.stats = &stats;
    call.uri = g_strdup_printf("https://%s:%u/v1/hashes/%s/%s", sender->server_name, sender->port,
                               rel, dsk);
    ok = vr_sender_call(&call, "fetch", vr_sender_fetch_attempt, &fetch, error) &&
         vr_sender_publish(part, path, error);
    if (!ok)
        unlink(part);
    g_free(call.uri);
    if (ok) {
        *cycle_out = fetch.cycle;
        *epoch_out = fetch.epoch;
    }
    return ok;
}

/* ---- the domain XML --------------------------------------------------------------------- */

static void
vr_sender_on_wrote_body(SoupMessage *msg, gpointer user_data)
{
    *(bool *)user_data = true;
}

/*
 * The outcome of a non-success @status of a small request (the domain XML, a failover)
 * besides 409, which each request words itself: 404, 507, a 5xx that may pass (retried; a
 * 500 too unless @final_500), or a refusal.
 */
static VrSenderOutcome
vr_sender_refused(VrSenderUpload *call, guint status, const char *reason, bool final_500,
                  GError **error)
{
    switch (status) {
    case SOUP_STATUS_NOT_FOUND:
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_NOT_FOUND,
                    "the replica refused %s: 404 %s", call->uri, reason);
        return VR_SENDER_FAILED;
    case SOUP_STATUS_INSUFFICIENT_STORAGE:
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_NO_SPACE,
                    "the replica is out of space: %s", reason);
        return VR_SENDER_FAILED;
    default:
        break;
    }
    if (SOUP_STATUS_IS_SERVER_ERROR(status) && status != SOUP_STATUS_NOT_IMPLEMENTED &&
        (!final_500 || status != SOUP_STATUS_INTERNAL_SERVER_ERROR)) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_UNREACHABLE,
                    "the replica failed: %u %s", status, reason);
        return status == SOUP_STATUS_SERVICE_UNAVAILABLE ? VR_SENDER_BUSY : VR_SENDER_RETRY;
    }
    g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED, "the replica refused %s: %u %s",
                call->uri, status, reason);
    return VR_SENDER_FAILED;
}

/* One PUT of the domain XML (@data, a GBytes). */
static VrSenderOutcome
vr_sender_put_domain_attempt(VrSenderUpload *call, SoupSession *session, gpointer data,
                             GError **error)
{
    g_autoptr(SoupMessage) msg = vr_sender_message_new(call, SOUP_METHOD_PUT);
    g_autoptr(GInputStream) reply = NULL;
    g_autofree char *reason = NULL;
    bool sent = false;
    guint status;

    soup_message_headers_set_expectations(soup_message_get_request_headers(msg),
                                          SOUP_EXPECTATION_CONTINUE);
    soup_message_set_request_body_from_bytes(msg, "application/xml", data);
    g_signal_connect(msg, "wrote-body", G_CALLBACK(vr_sender_on_wrote_body), &sent);
    call->stats->requests++;
    g_debug("PUT %s", call->uri);
    reply = soup_session_send(session, msg, call->cancellable, error);
    if (reply == NULL)
        return VR_SENDER_RETRY;
    vr_sender_note_retry_after(call, msg);
    /* Refused before the body (100-continue): that connection is dropped, not read on. */
    reason = vr_sender_read_reason(call, session, reply, !sent, error);
    if (reason == NULL)
        return VR_SENDER_RETRY;
    status = soup_message_get_status(msg);
    if (reason[0] == '\0') {
        g_free(reason);
        reason = g_strdup(soup_message_get_reason_phrase(msg));
    }
    switch (status) {
    case SOUP_STATUS_NO_CONTENT:
    case SOUP_STATUS_OK:
        return VR_SENDER_DONE;
    case SOUP_STATUS_CONFLICT:
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT, "the replica refused %s: %s",
                    call->uri, reason);
        return VR_SENDER_FAILED;
    default:
        return vr_sender_refused(call, status, reason, false, error);
    }
}

bool
vr_sender_put_domain(VrSender *sender, const char *relationship, const char *xml, GError **error)
{
    g_autofree char *rel = g_uri_escape_string(relationship, NULL, FALSE);
    g_autoptr(GBytes) body = g_bytes_new(xml, strlen(xml));
    VrSenderStats stats = { 0 };
    VrSenderUpload call = { 0 };
    bool ok;

    /* The name goes as it is, escaped: the receiver is the one that checks it (400). */
    call.sender = sender;
    call.fd = -1;
    call.stats = &stats;
    call.uri =
        g_strdup_printf("https://%s:%u/v1/domains/%s", sender->server_name, sender->port, rel);
    ok = vr_sender_call(&call, "send the domain XML to", vr_sender_put_domain_attempt, body, error);
    g_free(call.uri);
    return ok;
}

/* ---- a planned failover ------------------------------------------------------------------ */

/* The largest answer to a failover request that is read. */
#define VR_SENDER_FAILOVER_REPLY_MAX (64 * 1024)

typedef struct {
    GBytes *body;
    char *reply; /* the 200 answer */
} VrSenderFailover;

/* One POST of a planned failover; a 200 answer is read whole (it is small). */
static VrSenderOutcome
vr_sender_post_failover_attempt(VrSenderUpload *call, SoupSession *session, gpointer data,
                                GError **error)
{
    VrSenderFailover *failover = data;
    g_autoptr(SoupMessage) msg = vr_sender_message_new(call, SOUP_METHOD_POST);
    g_autoptr(GInputStream) reply = NULL;
    g_autofree char *reason = NULL;
    g_autofree char *buf = NULL;
    gsize got = 0;
    guint status;

    soup_message_set_request_body_from_bytes(msg, "application/json", failover->body);
    call->stats->requests++;
    g_debug("POST %s", call->uri);
    reply = soup_session_send(session, msg, call->cancellable, error);
    if (reply == NULL)
        return VR_SENDER_RETRY;
    vr_sender_note_retry_after(call, msg);
    status = soup_message_get_status(msg);
    if (status == SOUP_STATUS_OK) {
        buf = g_malloc(VR_SENDER_FAILOVER_REPLY_MAX + 1);
        if (!g_input_stream_read_all(reply, buf, VR_SENDER_FAILOVER_REPLY_MAX, &got,
                                     call->cancellable, error))
            return VR_SENDER_RETRY;
        g_input_stream_close(reply, NULL, NULL);
        buf[got] = '\0';
        g_free(failover->reply);
        failover->reply = g_steal_pointer(&buf);
        return VR_SENDER_DONE;
    }
    reason = vr_sender_read_reason(call, session, reply, false, error);
    if (reason == NULL)
        return VR_SENDER_RETRY;
    if (reason[0] == '\0') {
        g_free(reason);
        reason = g_strdup(soup_message_get_reason_phrase(msg));
    }
    switch (status) {
    case SOUP_STATUS_CONFLICT:
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT, "%s", reason);
        return VR_SENDER_FAILED;
    default:
        /* A 500 is the failover's own failure (undone on the replica): final, not retried. */
        return vr_sender_refused(call, status, reason, true, error);
    }
}

bool
vr_sender_post_failover(VrSender *sender, const char *relationship, const char *json,
                        char **reply_out, GError **error)
{
    g_autofree char *rel = g_uri_escape_string(relationship, NULL, FALSE);
    VrSenderFailover failover = { g_bytes_new(json, strlen(json)), NULL };
    VrSenderStats stats = { 0 };
    VrSenderUpload call = { 0 };
    bool ok;

    call.sender = sender;
    call.fd = -1;
    call.stats = &stats;
    call.uri =
        g_strdup_printf("https://%s:%u/v1/failover/%s", sender->server_name, sender->port, rel);
    ok = vr_sender_call(&call, "ask for the failover at", vr_sender_post_failover_attempt,
                        &failover, error);
    g_free(call.uri);
    g_bytes_unref(failover.body);
    if (ok)
        *reply_out = g_steal_pointer(&failover.reply);
    g_free(failover.reply);
    return ok;
}

/* ---- the sender ------------------------------------------------------------------------- */

VrSender *
vr_sender_new(const VrSenderConfig *config, GError **error)
{
    g_autoptr(VrSender) sender = g_new0(VrSender, 1);

    g_assert(config->policy != NULL);
    if (config->server_name == NULL || config->server_name[0] == '\0' || config->port == 0) {
        g_set_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_INVALID,
                    "the replica's server name and port are required");
        return NULL;
    }
    if (!vr_tls_check_key_file(config->key_file, error))
        return NULL;
    sender->cert = g_tls_certificate_new_from_files(config->cert_file, config->key_file, error);
    if (sender->cert == NULL) {
        g_prefix_error(error, "failed to load the client certificate '%s': ", config->cert_file);
        return NULL;
    }
    sender->server_name = g_strdup(config->server_name);
    sender->port = config->port;
    if (config->connect_address != NULL) {
        sender->remote =
            G_SOCKET_CONNECTABLE(g_inet_socket_address_new(config->connect_address, config->port));
    }
    if (config->local_address != NULL)
        sender->local = g_inet_socket_address_new(config->local_address, 0);
    sender->policy = config->policy;
    sender->n_limits = config->n_limits;
    sender->limits = g_memdup2(config->limits, sizeof(VrRateLimit *) * config->n_limits);
    sender->max_attempts = config->max_attempts != 0 ? config->max_attempts : 8;
    sender->backoff_min_ms = config->backoff_min_ms != 0 ? config->backoff_min_ms : 500;
    sender->backoff_max_ms = config->backoff_max_ms != 0 ? config->backoff_max_ms : 30000;
    sender->backoff_max_ms = MAX(sender->backoff_max_ms, sender->backoff_min_ms);
    sender->io_timeout_s = config->io_timeout_s != 0 ? config->io_timeout_s : 60;
    return g_steal_pointer(&sender);
}

void
vr_sender_free(VrSender *sender)
{
    if (sender == NULL)
        return;
    g_free(sender->server_name);
    g_clear_object(&sender->remote);
    g_clear_object(&sender->local);
    g_clear_object(&sender->cert);
    g_free(sender->limits);
    g_free(sender);
}
