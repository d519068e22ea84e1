/*
 * vr-receiver.c: the replica's HTTPS receive endpoint
 *
 * libsoup 3.2 calls, per request: request-started (the first request of a connection comes
 * before the TLS handshake, so its accept-certificate handler runs the policy in the
 * handshake), the early handler once the headers are read (route, policy again,
 * authorization, sizes, offsets, the sink's begin(), a turn among max_active), then
 * got-chunk for every piece of the body (fed to the upload's decoder; accumulation is off,
 * so no chunk outlives its signal), then the handler once the body is complete (finish,
 * commit, reply). A status set in the early handler is sent at once only to a client that
 * sent "Expect: 100-continue"; otherwise libsoup reads (here: drains) the declared body
 * first.
 *
 * A stream sent while it is written comes as a chunked body with "VR-Length: unknown": its
 * END record ends it, its size is checked as the bytes come (413 in the middle of the body),
 * and a reply before the end of a chunked body is written on the connection taken from
 * libsoup (vr_receiver_cut_later()), which is then closed, since libsoup would otherwise read
 * the whole body first and a chunked one need not end.
 *
 * An upload (one stream, keyed by the URL) outlives its requests: a request that ends early
 * (the connection dropped) leaves it open for resume_timeout_s, and the next PUT that starts
 * at the offset it reached continues it with the same decoder and sink handle. A committed
 * upload is remembered as long, so a repeated request gets its 204 again.
 *
 * GET of a hash list is answered in the early handler: the sink's hashes() names a file,
 * which is sent from its descriptor a few pieces ahead of libsoup's writes (wrote-chunk),
 * with accumulation off, so memory does not follow the list's size.
 *
 * PUT of a domain XML is small (VR_RECEIVER_DOMAIN_MAX at most): got-chunk appends its body
 * to a buffer of the declared Content-Length (accumulation stays off), and the handler hands
 * the whole of it to the sink's domain(). It takes no turn. POST of a planned failover is
 * collected the same way (VR_RECEIVER_FAILOVER_MAX at most) and goes to the sink's failover().
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-receiver.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libsoup/soup.h>

#define VR_RECEIVER_PREFIX          "/v1/cycles/"
#define VR_RECEIVER_HASHES_PREFIX   "/v1/hashes/"
#define VR_RECEIVER_DOMAINS_PREFIX  "/v1/domains/"
#define VR_RECEIVER_FAILOVER_PREFIX "/v1/failover/"
#define VR_RECEIVER_HEADER_OFFSET   "VR-Offset"
#define VR_RECEIVER_HEADER_LENGTH   "VR-Length"
#define VR_RECEIVER_HEADER_STATE    "VR-State"
#define VR_RECEIVER_HEADER_CYCLE    "VR-Cycle"
#define VR_RECEIVER_HEADER_EPOCH    "VR-Epoch"
/* VR-Length of a stream sent while it is written: it ends with its END record. */
#define VR_RECEIVER_LENGTH_UNKNOWN "unknown"
/* The reply of a request whose upload a later request (a resend, a resume) continues. */
#define VR_RECEIVER_TAKEN_OVER "a later request took this upload over: this one was dropped"
/* A hash list goes out in pieces of this size, at most this many read ahead of the socket. */
#define VR_RECEIVER_HASHES_CHUNK (256 * 1024)
#define VR_RECEIVER_HASHES_AHEAD 2

G_DEFINE_QUARK(vr - receiver - error - quark, vr_receiver_error)

typedef struct _VrReceiverUpload VrReceiverUpload;
typedef struct _VrReceiverTransfer VrReceiverTransfer;

struct _VrReceiver {
    SoupServer *server;
    VrTlsPolicy *policy; /* borrowed */
    VrAuthz *authz;      /* borrowed */
    uint64_t max_body_size;
    const VrReceiverSink *sink; /* borrowed */
    gpointer sink_data;
    guint max_active;
    guint io_timeout_s;
    guint resume_timeout_s;
    VrReceiverRefusedFunc refused;
    gpointer refused_data;
    GMainContext *context;
    GHashTable *uploads; /* "rel/disk/epoch/base/target" -> VrReceiverUpload (owned) */
    guint active;        /* transfers holding a turn */
    GQueue waiting;      /* VrReceiverTransfer, paused until a turn frees */
    guint queue_timeout_s;
    guint max_open_uploads;
    guint open_uploads;    /* uploads not committed yet, with or without a request */
    guint refused_uploads; /* uploads kept only to tell HEAD why they were refused */
    guint lingering;       /* connections read and dropped before they close */
    GList *lingers;        /* VrReceiverLinger, for vr_receiver_free() */
    GList *cuts;           /* GSource: cut replies not written yet (vr_receiver_cut_later()) */
    bool closed;           /* vr_receiver_free() ran; transfers still hold a reference */
};

/* One stream, across the requests that upload it. */
struct _VrReceiverUpload {
    VrReceiver *receiver;
    char *id; /* the key in receiver->uploads */
    VrReceiverKey key;
    char *peer;        /* the primary that started it: only it may continue it */
    uint64_t length;   /* the stream's size (VR-Length), once known */
    bool length_known; /* false: "VR-Length: unknown", the stream ends with its END record */
    uint64_t offset;   /* stream bytes fed to the decoder so far */
    VrWireDecoder *decoder;
    gpointer handle; /* the sink's, from begin until commit or abort */
    bool committed;
    /*
     * Refused during a body (413: a stream of unknown length grew past max_body_size): the
     * status and reason a HEAD or a PUT past offset 0 gets, so that a sender whose connection
     * was cut learns why; a PUT at offset 0 starts the stream again.
     */
    guint refused;
    char *refused_reason;
    VrReceiverTransfer *owner; /* the request feeding it now, or NULL */
    GSource *expiry;           /* while no request owns it */
    int64_t released;          /* monotonic time it lost its request (for eviction) */
};

/* One request: attached to its SoupServerMessage, freed with it. */
struct _VrReceiverTransfer {
    VrReceiver *receiver; /* a reference: a message can outlive vr_receiver_free() */
    SoupServerMessage *msg;
    VrReceiverUpload *upload; /* NULL when it ended, failed or another request took over */
    bool has_turn;
    bool waiting;
    GSource *wait_timeout; /* while waiting */
    GError *error;         /* the first failure; nothing more is fed after it */
    guint status;          /* the reply for @error */
    bool chunked;          /* a body of unknown length: after a failure, drained up to a bound */
    uint64_t received;     /* body bytes of this request */
    bool cut;              /* its reply is being sent on a connection taken from libsoup */
};

static void vr_receiver_next_turn(VrReceiver *receiver);
static void vr_receiver_unref(VrReceiver *receiver);
static void vr_receiver_cut_later(VrReceiver *receiver, SoupServerMessage *msg);

/* ---- errors and replies ----------------------------------------------------------------- */

/* The HTTP status for a failure of the sink or of the stream. */
static guint
vr_receiver_status_for(const GError *error)
{
    if (error->domain == VR_RECEIVER_ERROR) {
        switch ((VrReceiverErrorCode)error->code) {
        case VR_RECEIVER_ERROR_FORBIDDEN:
            return SOUP_STATUS_FORBIDDEN;
        case VR_RECEIVER_ERROR_CONFLICT:
            return SOUP_STATUS_CONFLICT;
        case VR_RECEIVER_ERROR_NO_SPACE:
            return SOUP_STATUS_INSUFFICIENT_STORAGE;
        case VR_RECEIVER_ERROR_COMMITTED:
            return SOUP_STATUS_NO_CONTENT;
        case VR_RECEIVER_ERROR_NOT_FOUND:
            return SOUP_STATUS_NOT_FOUND;
        case VR_RECEIVER_ERROR_BUSY:
            return SOUP_STATUS_SERVICE_UNAVAILABLE;
        case VR_RECEIVER_ERROR_INVALID:
            return SOUP_STATUS_BAD_REQUEST;
        }
    }
    if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_NO_SPACE))
        return SOUP_STATUS_INSUFFICIENT_STORAGE;
    if (g_error_matches(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN))
        return SOUP_STATUS_FORBIDDEN;
    if (g_error_matches(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_INVALID) ||
        error->domain == VR_WIRE_ERROR)
        return SOUP_STATUS_BAD_REQUEST;
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
}

/*
 * The reason of a 413: a stream of @offset + @len bytes (@at_least: of unknown length, that
 * many so far) passes the maximum stream size. (transfer full)
 */
static char *
vr_receiver_too_large(const VrReceiver *receiver, uint64_t offset, uint64_t len, bool at_least)
{
    uint64_t size = offset > G_MAXUINT64 - len ? G_MAXUINT64 : offset + len;

    return g_strdup_printf("the stream of %s%" G_GUINT64_FORMAT
                           " bytes is larger than the limit of %" G_GUINT64_FORMAT,
                           at_least ? "at least " : "", size, receiver->max_body_size);
}

/* Reply @status with a one-line text/plain body; a 503 says when to try again. */
static void
vr_receiver_reply(SoupServerMessage *msg, guint status, const char *message)
{
    g_autofree char *line = g_strdup_printf("%s\n", message);

    g_debug("reply %u: %s", status, message);
    if (status == SOUP_STATUS_SERVICE_UNAVAILABLE) {
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After",
                                     "5");
    }
    soup_server_message_set_status(msg, status, NULL);
    soup_server_message_set_response(msg, "text/plain; charset=utf-8", SOUP_MEMORY_COPY, line,
                                     strlen(line));
}

static void
vr_receiver_set_header_u64(SoupServerMessage *msg, const char *name, uint64_t value)
{
    char text[24];

    g_snprintf(text, sizeof(text), "%" G_GUINT64_FORMAT, value);
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), name, text);
}

/*
 * Where an upload stands: VR-Offset, VR-Length (the number, or "unknown" while a stream sent
 * without a length has not reached its END) and VR-State on @msg's reply.
 */
static void
vr_receiver_set_upload_headers(SoupServerMessage *msg, const VrReceiverUpload *upload)
{
    vr_receiver_set_header_u64(msg, VR_RECEIVER_HEADER_OFFSET, upload->offset);
    if (upload->length_known) {
        vr_receiver_set_header_u64(msg, VR_RECEIVER_HEADER_LENGTH, upload->length);
    } else {
        soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                     VR_RECEIVER_HEADER_LENGTH, VR_RECEIVER_LENGTH_UNKNOWN);
    }
    soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                 VR_RECEIVER_HEADER_STATE,
                                 upload->committed ? "committed" : "receiving");
}

/* ---- uploads ---------------------------------------------------------------------------- */

/*
 * @transfer no longer feeds its upload: a later request continues the stream, or starts it
 * again. A body of declared length is read and dropped to its end, then answered 409; a
 * chunked one need not end, so it is answered 409 now and its connection cut, rather than
 * read and dropped, holding a turn, for as long as its sender sends (not after a failure of
 * its own, which is answered already, nor once the receiver is freed).
 */
static void
vr_receiver_transfer_detach(VrReceiverTransfer *transfer)
{
    transfer->upload = NULL;
    if (!transfer->chunked || transfer->cut || transfer->error != NULL ||
        transfer->receiver->closed)
        return;
    transfer->cut = true;
    vr_receiver_reply(transfer->msg, SOUP_STATUS_CONFLICT, VR_RECEIVER_TAKEN_OVER);
    vr_receiver_cut_later(transfer->receiver, transfer->msg);
}

static void
vr_receiver_upload_abort(VrReceiverUpload *upload)
{
    if (upload->handle != NULL)
        upload->receiver->sink->abort(g_steal_pointer(&upload->handle));
}

/* Abort what @upload holds, detach its request, forget it. */
static void
vr_receiver_upload_drop(VrReceiverUpload *upload)
{
    VrReceiver *receiver = upload->receiver;

    g_debug("upload %s dropped at %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " bytes%s",
            upload->id, upload->offset, upload->length, upload->committed ? " (committed)" : "");
    if (upload->owner != NULL)
        vr_receiver_transfer_detach(upload->owner);
    vr_receiver_upload_abort(upload);
    if (upload->expiry != NULL) {
        g_source_destroy(upload->expiry);
        g_source_unref(upload->expiry);
    }
    vr_wire_decoder_free(upload->decoder);
    if (!upload->committed && upload->refused == 0)
        receiver->open_uploads--;
    if (upload->refused != 0)
        receiver->refused_uploads--;
    g_hash_table_remove(receiver->uploads, upload->id); /* frees the id */
    g_free(upload->refused_reason);
    g_free(upload->peer);
    g_free(upload);
}

static gboolean
vr_receiver_upload_expired(gpointer data)
{
    VrReceiverUpload *upload = data;

    g_clear_pointer(&upload->expiry, g_source_unref);
    vr_receiver_upload_drop(upload);
    return G_SOURCE_REMOVE;
}

/* No request owns @upload any more: keep it for resume_timeout_s. */
static void
vr_receiver_upload_release(VrReceiverUpload *upload)
{
    upload->owner = NULL;
    upload->released = g_get_monotonic_time();
    g_assert(upload->expiry == NULL);
    upload->expiry = g_timeout_source_new_seconds(upload->receiver->resume_timeout_s);
    g_source_set_callback(upload->expiry, vr_receiver_upload_expired, upload, NULL);
    g_source_attach(upload->expiry, upload->receiver->context);
}

/* @transfer's request now feeds @upload. */
static void
vr_receiver_upload_take(VrReceiverUpload *upload, VrReceiverTransfer *transfer)
{
    if (upload->owner != NULL) {
        /* A connection that died unnoticed, or a resent request: the newer one wins. */
        g_debug("upload %s: an older request is detached", upload->id);
        vr_receiver_transfer_detach(upload->owner);
    }
    if (upload->expiry != NULL) {
        g_source_destroy(upload->expiry);
        g_clear_pointer(&upload->expiry, g_source_unref);
    }
    upload->owner = transfer;
    transfer->upload = upload;
}

/* ---- transfers (requests) --------------------------------------------------------------- */

static void
vr_receiver_transfer_free(VrReceiverTransfer *transfer)
{
    VrReceiver *receiver = transfer->receiver;

    /* A request that ended before its body did (the client went away): keep the upload. */
    if (transfer->upload != NULL) {
        if (!receiver->closed)
            vr_receiver_upload_release(transfer->upload);
        else
            transfer->upload->owner = NULL;
    }
    if (transfer->waiting)
        g_queue_remove(&receiver->waiting, transfer);
    if (transfer->wait_timeout != NULL) {
        g_source_destroy(transfer->wait_timeout);
        g_source_unref(transfer->wait_timeout);
    }
    if (transfer->has_turn) {
        receiver->active--;
        if (!receiver->closed)
            vr_receiver_next_turn(receiver);
    }
    g_clear_error(&transfer->error);
    vr_receiver_unref(receiver);
    g_free(transfer);
}

/* Record the first failure of @transfer; its upload is dropped (nothing is committed). */
static void
vr_receiver_transfer_fail(VrReceiverTransfer *transfer, guint status, GError *error)
{
    if (transfer->error != NULL) {
        g_error_free(error);
        return;
    }
    transfer->error = error;
    transfer->status = status;
    if (transfer->upload != NULL)
        vr_receiver_upload_drop(transfer->upload);
}

/*
 * After a reply on a connection taken from libsoup: what the client still sends is read and
 * dropped for a while before the connection closes ("lingering close"), since closing a
 * socket that has unread bytes resets it, and the client then loses the reply it has not
 * read yet. Bounded: VR_RECEIVER_LINGER_BYTES or VR_RECEIVER_LINGER_S, whichever comes first.
 */
#define VR_RECEIVER_LINGER_BYTES (1024 * 1024)
#define VR_RECEIVER_LINGER_S     2
/* At most this many at once: beyond, a connection is closed at once (its reply may be lost). */
#define VR_RECEIVER_LINGER_MAX 16

typedef struct {
    VrReceiver *receiver; /* a reference */
    GIOStream *stream;
    GCancellable *cancel; /* by the timer */
    GSource *timer;
    uint64_t drained;
    uint8_t buf[16384];
} VrReceiverLinger;

static gboolean
vr_receiver_linger_expired(gpointer data)
{
    VrReceiverLinger *linger = data;

    g_cancellable_cancel(linger->cancel);
    return G_SOURCE_REMOVE;
}

static void
vr_receiver_linger_read(GObject *source, GAsyncResult *result, gpointer data)
{
    VrReceiverLinger *linger = data;
    gssize n = g_input_stream_read_finish(G_INPUT_STREAM(source), result, NULL);

    if (n > 0 && linger->drained + (uint64_t)n < VR_RECEIVER_LINGER_BYTES &&
        !g_cancellable_is_cancelled(linger->cancel)) {
        linger->drained += (uint64_t)n;
        g_input_stream_read_async(G_INPUT_STREAM(source), linger->buf, sizeof(linger->buf),
                                  G_PRIORITY_DEFAULT, linger->cancel, vr_receiver_linger_read,
                                  linger);
        return;
    }
    g_source_destroy(linger->timer);
    g_source_unref(linger->timer);
    g_io_stream_close(linger->stream, NULL, NULL);
    g_object_unref(linger->stream);
    g_object_unref(linger->cancel);
    linger->receiver->lingering--;
    linger->receiver->lingers = g_list_remove(linger->receiver->lingers, linger);
    vr_receiver_unref(linger->receiver);
    g_free(linger);
}

/* Read and drop what the client of @stream (transfer full) still sends, a while; then close. */
static void
vr_receiver_linger(VrReceiver *receiver, GIOStream *stream)
{
    VrReceiverLinger *linger;

    if (receiver->lingering >= VR_RECEIVER_LINGER_MAX) {
        /* many refused chunked requests at once: their connections are not worth more */
        g_debug("%u connections linger already: this one is closed at once", receiver->lingering);
        g_io_stream_close(stream, NULL, NULL);
        g_object_unref(stream);
        return;
    }
    linger = g_new0(VrReceiverLinger, 1);
    linger->receiver = g_rc_box_acquire(receiver);
    receiver->lingering++;
    receiver->lingers = g_list_prepend(receiver->lingers, linger);
    linger->stream = stream;
    linger->cancel = g_cancellable_new();
    linger->timer = g_timeout_source_new_seconds(VR_RECEIVER_LINGER_S);
    g_source_set_callback(linger->timer, vr_receiver_linger_expired, linger, NULL);
    g_source_attach(linger->timer, receiver->context);
    g_input_stream_read_async(g_io_stream_get_input_stream(stream), linger->buf,
                              sizeof(linger->buf), G_PRIORITY_DEFAULT, linger->cancel,
                              vr_receiver_linger_read, linger);
}

/* Append "Name: value\r\n" to @data (a GString). */
static void
vr_receiver_cut_header(const char *name, const char *value, gpointer data)
{
    g_string_append_printf(data, "%s: %s\r\n", name, value);
}

/* A reply to send on a connection taken from libsoup (vr_receiver_cut_later()). */
typedef struct {
    VrReceiver *receiver; /* a reference */
    SoupServerMessage *msg;
    GSource *idle;
} VrReceiverCut;

/* The idle of @data is gone (it ran, or vr_receiver_free() destroyed it). */
static void
vr_receiver_cut_free(gpointer data)
{
    VrReceiverCut *cut = data;

    cut->receiver->cuts = g_list_remove(cut->receiver->cuts, cut->idle);
    g_source_unref(cut->idle);
    g_object_unref(cut->msg);
    vr_receiver_unref(cut->receiver);
    g_free(cut);
}

/* A cut reply being written: then the lingering close. */
typedef struct {
    VrReceiver *receiver; /* a reference */
    GIOStream *stream;
    GBytes *reply;
} VrReceiverCutWrite;

static void
vr_receiver_cut_written(GObject *source, GAsyncResult *result, gpointer data)
{
    VrReceiverCutWrite *write = data;
    g_autoptr(GError) error = NULL;

    if (!g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), result, NULL, &error))
        g_debug("the cut reply was not written: %s", error->message);
    if (error == NULL && !write->receiver->closed) {
        vr_receiver_linger(write->receiver, write->stream);
    } else {
        g_io_stream_close(write->stream, NULL, NULL);
        g_object_unref(write->stream);
    }
    g_bytes_unref(write->reply);
    vr_receiver_unref(write->receiver);
    g_free(write);
}

/*
 * The reply of @data's message (its status, response headers and text body) is written on
 * the connection taken from libsoup, which is then closed after a lingering read, without
 * reading any more of the request's body: libsoup 3.2 answers a request only after its whole
 * body, and a chunked body has no end the receiver knows of. The write is asynchronous: a
 * client that does not read blocks nothing (the socket's I/O timeout ends it).
 */
static gboolean
vr_receiver_cut(gpointer data)
{
    VrReceiverCut *cut = data;
    SoupServerMessage *msg = cut->msg;
    SoupMessageBody *body = soup_server_message_get_response_body(msg);
    g_autoptr(GBytes) text = soup_message_body_flatten(body);
    g_autoptr(GString) reply = g_string_new(NULL);
    guint status = soup_server_message_get_status(msg);
    GIOStream *stream;

    g_string_append_printf(reply, "HTTP/1.1 %u %s\r\n", status, soup_status_get_phrase(status));
    soup_message_headers_remove(soup_server_message_get_response_headers(msg), "Content-Length");
    soup_message_headers_remove(soup_server_message_get_response_headers(msg), "Connection");
    soup_message_headers_foreach(soup_server_message_get_response_headers(msg),
                                 vr_receiver_cut_header, reply);
    g_string_append_printf(reply,
                           "Content-Length: %" G_GSIZE_FORMAT "\r\nConnection: close\r\n\r\n",
                           g_bytes_get_size(text));
    g_string_append_len(reply, g_bytes_get_data(text, NULL), (gssize)g_bytes_get_size(text));
    g_debug("reply %u, the request body cut", status);
    /* frees a transfer with the message's io: its turn goes to the next request */
    stream = soup_server_message_steal_connection(msg);
    if (stream != NULL) {
        VrReceiverCutWrite *write = g_new0(VrReceiverCutWrite, 1);

        write->receiver = g_rc_box_acquire(cut->receiver);
        write->stream = stream;
        write->reply = g_string_free_to_bytes(g_steal_pointer(&reply));
        g_output_stream_write_all_async(g_io_stream_get_output_stream(stream),
                                        g_bytes_get_data(write->reply, NULL),
                                        g_bytes_get_size(write->reply), G_PRIORITY_DEFAULT, NULL,
                                        vr_receiver_cut_written, write);
    }
    return G_SOURCE_REMOVE; /* vr_receiver_cut_free() */
}

/*
 * Send @msg's reply (already set) now and close the connection, from an idle of @receiver's
 * context: not from got-chunk or a handler itself, whose caller (libsoup's read loop) still
 * uses the message's io after them. The message is paused meanwhile, so no more body is read.
 */
static void
vr_receiver_cut_later(VrReceiver *receiver, SoupServerMessage *msg)
{
    VrReceiverCut *cut = g_new0(VrReceiverCut, 1);

    cut->receiver = g_rc_box_acquire(receiver);
    cut->msg = g_object_ref(msg);
    cut->idle = g_idle_source_new();
    soup_server_message_pause(msg);
    g_source_set_callback(cut->idle, vr_receiver_cut, cut, vr_receiver_cut_free);
    receiver->cuts = g_list_prepend(receiver->cuts, cut->idle);
    g_source_attach(cut->idle, receiver->context);
}

/*
 * @transfer's chunked body failed (its stream of unknown length passed the maximum size, the
 * sink failed, the stream is invalid): refuse it with @status now, in the middle of its body.
 * The upload is aborted but remembered as refused for resume_timeout_s, so that HEAD tells a
 * sender whose connection was cut why (507 and 4xx are final there); the body is not read any
 * further, since it need not end and the sender would read and send all of it for nothing.
 */
static void
vr_receiver_transfer_refuse(VrReceiverTransfer *transfer, guint status, GError *error)
{
    VrReceiverUpload *upload = transfer->upload;
    VrReceiver *receiver = transfer->receiver;

    /*
     * Kept refused entries are bounded as open uploads are (max_open_uploads): beyond, the
     * one refused longest ago is forgotten (its sender's HEAD then gets 404).
     */
    if (receiver->refused_uploads >= receiver->max_open_uploads) {
        VrReceiverUpload *oldest = NULL;
        GHashTableIter iter;
        gpointer value;

        g_hash_table_iter_init(&iter, receiver->uploads);
        while (g_hash_table_iter_next(&iter, NULL, &value)) {
            VrReceiverUpload *other = value;

            if (other->refused != 0 && (oldest == NULL || other->released < oldest->released))
                oldest = other;
        }
        if (oldest != NULL)
            vr_receiver_upload_drop(oldest);
    }
    transfer->error = error;
    transfer->status = status;
    vr_receiver_upload_abort(upload);
    g_clear_pointer(&upload->decoder, vr_wire_decoder_free);
    upload->refused = status;
    upload->refused_reason = g_strdup(error->message);
    upload->receiver->open_uploads--;
    upload->receiver->refused_uploads++;
    transfer->upload = NULL;
    vr_receiver_upload_release(upload);
    transfer->cut = true;
    vr_receiver_reply(transfer->msg, status, error->message);
    vr_receiver_cut_later(transfer->receiver, transfer->msg);
}

/*
 * @transfer (with its upload) failed in the middle of its body: a body of declared length is
 * read to its end and then answered (vr_receiver_transfer_fail()); a chunked one is refused
 * at once (vr_receiver_transfer_refuse()).
 */
static void
vr_receiver_transfer_stop(VrReceiverTransfer *transfer, guint status, GError *error)
{
    if (transfer->chunked && !transfer->cut && transfer->upload != NULL)
        vr_receiver_transfer_refuse(transfer, status, error);
    else
        vr_receiver_transfer_fail(transfer, status, error);
}

/* A turn to read a body frees: wake the oldest waiting request. */
static void
vr_receiver_next_turn(VrReceiver *receiver)
{
    VrReceiverTransfer *next;

    if (receiver->active >= receiver->max_active)
        return;
    next = g_queue_pop_head(&receiver->waiting);
    if (next == NULL)
        return;
    next->waiting = false;
    if (next->wait_timeout != NULL) {
        g_source_destroy(next->wait_timeout);
        g_clear_pointer(&next->wait_timeout, g_source_unref);
    }
    next->has_turn = true;
    receiver->active++;
    g_debug("a waiting request gets its turn (%u active, %u waiting)", receiver->active,
            receiver->waiting.length);
    soup_server_message_unpause(next->msg);
}

/* ---- the path --------------------------------------------------------------------------- */

/* [a-z0-9]{1,max} ending at '/' or NUL: the length, or 0. */
static size_t
vr_receiver_component(const char *s, size_t max)
{
    size_t n = 0;

    while (s[n] != '\0' && s[n] != '/') {
        if (!g_ascii_islower(s[n]) && !g_ascii_isdigit(s[n]))
            return 0;
        n++;
    }
    return n <= max ? n : 0;
}

/* A decimal uint64 without sign, leading zero (but "0") or excess, ending at '/' or NUL. */
static size_t
vr_receiver_number(const char *s, uint64_t *value)
{
    uint64_t v = 0;
    size_t n = 0;

    while (g_ascii_isdigit(s[n])) {
        unsigned digit = (unsigned)(s[n] - '0');

        if (n == 1 && s[0] == '0')
            return 0;
        if (v > (G_MAXUINT64 - digit) / 10)
            return 0;
        v = v * 10 + digit;
        n++;
    }
    if (n == 0 || (s[n] != '\0' && s[n] != '/'))
        return 0;
    *value = v;
    return n;
}

/*
 * The name at *@p ([a-z0-9]{1,@max}) into @out, followed by @end ('/' or '\0'); *@p moves
 * past the '/'. Else INVALID_ARGUMENT naming @what.
 */
static bool
vr_receiver_take_name(const char **p, size_t max, char end, const char *what, char *out,
                      GError **error)
{
    size_t n = vr_receiver_component(*p, max);

    if (n == 0 || (*p)[n] != end) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "invalid %s in the path: [a-z0-9]{1,%zu} expected%s", what, max,
                    end == '\0' ? ", and nothing after it" : "");
        return false;
    }
    memcpy(out, *p, n);
    *p += end == '\0' ? n : n + 1;
    return true;
}

/*
 * Split "/v1/cycles/{relationship}/{disk}/{epoch}/{base}/{target}"; nothing is built from
 * the parts but the upload's key.
 */
static bool
vr_receiver_parse_path(const char *path, VrReceiverKey *key, GError **error)
{
    static const char *const numbers[] = { "epoch", "base cycle", "target cycle" };
    uint64_t *values[] = { &key->epoch, &key->base_cycle, &key->target_cycle };
    const char *p;
    size_t n;

    memset(key, 0, sizeof(*key));
    if (!g_str_has_prefix(path, VR_RECEIVER_PREFIX)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "no such resource: the path is not "
                    "/v1/cycles/{relationship}/{disk}/{epoch}/{base}/{target}, "
                    "/v1/hashes/{relationship}/{disk} or /v1/domains/{relationship}");
        return false;
    }
    p = path + strlen(VR_RECEIVER_PREFIX);
    if (!vr_receiver_take_name(&p, VR_WIRE_RELATIONSHIP_MAX, '/', "relationship", key->relationship,
                               error) ||
        !vr_receiver_take_name(&p, VR_WIRE_DISK_MAX, '/', "disk", key->disk, error))
        return false;
    for (size_t i = 0; i < G_N_ELEMENTS(numbers); i++) {
        n = vr_receiver_number(p, values[i]);
        if (n == 0 || p[n] != (i + 1 < G_N_ELEMENTS(numbers) ? '/' : '\0')) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "invalid %s in the path: a decimal number expected", numbers[i]);
            return false;
        }
        p += n + 1;
    }
    if (key->target_cycle <= key->base_cycle) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "the target cycle %" G_GUINT64_FORMAT
                    " in the path is not after the base cycle %" G_GUINT64_FORMAT,
                    key->target_cycle, key->base_cycle);
        return false;
    }
    return true;
}

/* Split "/v1/hashes/{relationship}/{disk}" into @key's names (its numbers stay 0). */
static bool
vr_receiver_parse_hashes_path(const char *path, VrReceiverKey *key, GError **error)
{
    const char *p = path + strlen(VR_RECEIVER_HASHES_PREFIX);

    g_assert(g_str_has_prefix(path, VR_RECEIVER_HASHES_PREFIX));
    memset(key, 0, sizeof(*key));
    return vr_receiver_take_name(&p, VR_WIRE_RELATIONSHIP_MAX, '/', "relationship",
                                 key->relationship, error) &&
           vr_receiver_take_name(&p, VR_WIRE_DISK_MAX, '\0', "disk", key->disk, error);
}

/*
 * Split "/v1/domains/{relationship}" (or "/v1/failover/{relationship}": @prefix) into @key's
 * relationship (the rest of @key stays 0).
 */
static bool
vr_receiver_parse_domain_path(const char *path, const char *prefix, VrReceiverKey *key,
                              GError **error)
{
    const char *p = path + strlen(prefix);

    g_assert(g_str_has_prefix(path, prefix));
    memset(key, 0, sizeof(*key));
    return vr_receiver_take_name(&p, VR_WIRE_RELATIONSHIP_MAX, '\0', "relationship",
                                 key->relationship, error);
}

static char *
vr_receiver_key_id(const VrReceiverKey *key)
{
    return g_strdup_printf("%s/%s/%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT,
                           key->relationship, key->disk, key->epoch, key->base_cycle,
                           key->target_cycle);
}

/* An optional (absent: @fallback) or required decimal header. */
static bool
vr_receiver_header_u64(SoupMessageHeaders *headers, const char *name, bool required,
                       uint64_t fallback, uint64_t *value, GError **error)
{
    const char *text = soup_message_headers_get_one(headers, name);

    if (text == NULL) {
        if (required) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "a %s header is required",
                        name);
            return false;
        }
        *value = fallback;
        return true;
    }
    if (vr_receiver_number(text, value) == 0 || strchr(text, '/') != NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "the %s header is not a decimal number", name);
        return false;
    }
    return true;
}

/* ---- the stream ------------------------------------------------------------------------- */

/* The decoder's callback: BEGIN must match the URL's key; every record goes to the sink. */
static bool
vr_receiver_on_record(const VrWireRecord *record, gpointer user_data, GError **error)
{
    VrReceiverUpload *upload = user_data;
    const VrReceiverKey *key = &upload->key;

    if (record->type == VR_WIRE_RECORD_BEGIN) {
        const VrWireIdentity *identity = record->identity;

        if (strcmp(identity->relationship, key->relationship) != 0 ||
            strcmp(identity->disk, key->disk) != 0 || identity->epoch != key->epoch ||
            identity->base_cycle != key->base_cycle ||
            identity->target_cycle != key->target_cycle) {
            g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                        "the stream is relationship '%s' disk '%s' epoch %" G_GUINT64_FORMAT
                        " cycles %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT
                        ", the URL names '%s' '%s' epoch %" G_GUINT64_FORMAT
                        " cycles %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT,
                        identity->relationship, identity->disk, identity->epoch,
                        identity->base_cycle, identity->target_cycle, key->relationship, key->disk,
                        key->epoch, key->base_cycle, key->target_cycle);
            return false;
        }
    }
    return upload->receiver->sink->record(upload->handle, record, error);
}

static void
vr_receiver_on_got_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer user_data)
{
    VrReceiverTransfer *transfer = user_data;
    VrReceiverUpload *upload = transfer->upload;
    GError *error = NULL;
    gsize len = 0;
    const void *data = g_bytes_get_data(chunk, &len);

    transfer->received += len;
    if (transfer->error != NULL || upload == NULL) {
        /*
         * The rest of a failed or superseded body of declared length is read and dropped. A
         * chunked one was cut when it failed or was taken over (vr_receiver_transfer_stop(),
         * vr_receiver_upload_take()); should any come before the cut, it stops at the
         * maximum stream size as well.
         */
        if (transfer->chunked && !transfer->cut &&
            transfer->received > transfer->receiver->max_body_size) {
            transfer->cut = true;
            if (transfer->error != NULL)
                vr_receiver_reply(msg, transfer->status, transfer->error->message);
            else
                vr_receiver_reply(msg, SOUP_STATUS_CONFLICT, VR_RECEIVER_TAKEN_OVER);
            vr_receiver_cut_later(transfer->receiver, msg);
        }
        return;
    }
    if (!upload->length_known && (len > upload->receiver->max_body_size ||
                                  upload->offset > upload->receiver->max_body_size - len)) {
        g_autofree char *reason =
            vr_receiver_too_large(upload->receiver, upload->offset, len, true);

        g_set_error_literal(&error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE, reason);
        vr_receiver_transfer_refuse(transfer, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, error);
        return;
    }
    if (upload->length_known && len > upload->length - upload->offset) {
        /* a chunked body continuing a stream whose length is declared */
        g_set_error(&error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "the body goes past the stream's length of %" G_GUINT64_FORMAT " bytes",
                    upload->length);
        vr_receiver_transfer_stop(transfer, SOUP_STATUS_BAD_REQUEST, error);
        return;
    }
    if (!vr_wire_decoder_feed(upload->decoder, data, len, vr_receiver_on_record, upload, &error)) {
        vr_receiver_transfer_stop(transfer, vr_receiver_status_for(error), error);
        return;
    }
    upload->offset += len;
}

/* ---- TLS -------------------------------------------------------------------------------- */

/* Tell the refused callback about a client of @msg refused for @reason. */
static void
vr_receiver_refused(VrReceiver *receiver, SoupServerMessage *msg, const char *reason)
{
    GSocketAddress *remote = soup_server_message_get_remote_address(msg);
    g_autofree char *address = NULL;

    g_debug("client refused: %s", reason);
    if (receiver->refused == NULL)
        return;
    if (remote != NULL && G_IS_INET_SOCKET_ADDRESS(remote)) {
        address = g_inet_address_to_string(
            g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(remote)));
    }
    receiver->refused(address != NULL ? address : "unknown", reason, receiver->refused_data);
}

/*
 * The client's certificate for @msg (transfer none; NULL when there is none). libsoup 3.2
 * sets a message's peer certificate from the socket's notify::tls-certificate, which fires
 * once, during the handshake: only the first request of a connection has it, later ones on
 * the same connection get NULL (and the first one may be a request libsoup refused itself,
 * which never reaches the handlers). So accept-certificate keeps the certificate it
 * accepted on the connection's GSocket, for the per-request check.
 */
static GTlsCertificate *
vr_receiver_peer_certificate(SoupServerMessage *msg)
{
    GTlsCertificate *cert = soup_server_message_get_tls_peer_certificate(msg);
    GSocket *socket = soup_server_message_get_socket(msg);

    if (cert != NULL || socket == NULL)
        return cert;
    return g_object_get_data(G_OBJECT(socket), "vr-receiver-peer-certificate");
}

static gboolean
vr_receiver_on_accept_certificate(SoupServerMessage *msg, GTlsCertificate *peer,
                                  GTlsCertificateFlags errors, gpointer user_data)
{
    VrReceiver *receiver = user_data;
    g_autoptr(GError) error = NULL;
    GSocket *socket;

    /* @errors come from glib-networking without a CA database: the policy decides alone. */
    if (!vr_tls_policy_check_gtls(receiver->policy, peer, &error)) {
        g_autofree char *reason =
            g_strdup_printf("client certificate refused in the handshake: %s", error->message);

        vr_receiver_refused(receiver, msg, reason);
        return FALSE;
    }
    socket = soup_server_message_get_socket(msg);
    if (socket != NULL) {
        g_object_set_data_full(G_OBJECT(socket), "vr-receiver-peer-certificate", g_object_ref(peer),
                               g_object_unref);
    }
    return TRUE;
}

static void
vr_receiver_on_request_started(SoupServer *server, SoupServerMessage *msg, gpointer user_data)
{
    VrReceiver *receiver = user_data;
    GSocket *socket = soup_server_message_get_socket(msg);

    /*
     * Before anything can answer: libsoup refuses some requests itself (an absolute URI,
     * for one) before any handler runs, and then reads their whole declared body; with
     * accumulation on, into memory.
     */
    soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
    /* A connection silent for io_timeout_s fails its pending read or write, and closes. */
    if (socket != NULL)
        g_socket_set_timeout(socket, receiver->io_timeout_s);
    g_signal_connect(msg, "accept-certificate", G_CALLBACK(vr_receiver_on_accept_certificate),
                     user_data);
}

/* ---- hash lists ------------------------------------------------------------------------- */

/* A hash list being sent: its file, read a few pieces ahead of the socket. */
typedef struct {
    int fd;
    uint64_t length;
    uint64_t queued; /* bytes appended to the response body */
    guint ahead;     /* pieces appended and not written yet */
    bool done;       /* the body is complete, or cut off */
} VrReceiverHashes;

static void
vr_receiver_hashes_free(VrReceiverHashes *hashes)
{
    close(hashes->fd);
    g_free(hashes);
}

/*
 * Append pieces of the file until VR_RECEIVER_HASHES_AHEAD of them wait for the socket, and
 * complete the body after the last one. A read that fails (the disk, or a sink that rewrote
 * the file) cannot change the status any more: the connection is shut down, so the client
 * gets less than the Content-Length and fails.
 */
static void
vr_receiver_hashes_fill(SoupServerMessage *msg, VrReceiverHashes *hashes)
{
    SoupMessageBody *body = soup_server_message_get_response_body(msg);

    while (!hashes->done && hashes->ahead < VR_RECEIVER_HASHES_AHEAD) {
        g_autoptr(GBytes) piece = NULL;
        size_t want, have = 0;
        uint8_t *buf;
        ssize_t got = 0;

        if (hashes->queued == hashes->length) {
            soup_message_body_complete(body);
            hashes->done = true;
            break;
        }
        want = (size_t)MIN(VR_RECEIVER_HASHES_CHUNK, hashes->length - hashes->queued);
        buf = g_malloc(want);
        while (have < want) {
            got = pread(hashes->fd, buf + have, want - have, (off_t)(hashes->queued + have));
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0)
                break;
            have += (size_t)got;
        }
        if (have < want) {
            GSocket *socket = soup_server_message_get_socket(msg);

            g_debug("hash list: cannot read %zu bytes at %" G_GUINT64_FORMAT ": %s", want,
                    hashes->queued, got < 0 ? g_strerror(errno) : "the file is shorter");
            g_free(buf);
            if (socket != NULL)
                g_socket_shutdown(socket, TRUE, TRUE, NULL);
            soup_message_body_complete(body);
            hashes->done = true;
            break;
        }
        piece = g_bytes_new_take(buf, want);
        soup_message_body_append_bytes(body, piece);
        hashes->queued += want;
        hashes->ahead++;
    }
}

static void
vr_receiver_hashes_on_wrote_chunk(SoupServerMessage *msg, gpointer user_data)
{
    VrReceiverHashes *hashes = user_data;

    g_assert(hashes->ahead > 0);
    hashes->ahead--;
    vr_receiver_hashes_fill(msg, hashes);
}

/*
 * GET a hash list: the sink names the file of the disk's latest point; 200 with its bytes,
 * VR-Cycle and VR-Epoch. The file is opened here and read through its descriptor only.
 */
static void
vr_receiver_get_hashes(VrReceiver *receiver, SoupServerMessage *msg, const VrReceiverKey *key,
                       const VrReceiverPeer *peer)
{
    SoupMessageHeaders *headers = soup_server_message_get_response_headers(msg);
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    g_autofree char *reason = NULL;
    VrReceiverHashes *hashes;
    uint64_t cycle = 0;
    uint64_t epoch = 0;
    struct stat st;
    int fd;

    if (receiver->sink->hashes == NULL) {
        vr_receiver_reply(msg, SOUP_STATUS_NOT_IMPLEMENTED,
                          "this replica does not serve hash lists");
        return;
    }
    if (!receiver->sink->hashes(key->relationship, key->disk, peer, receiver->sink_data, &path,
                                &cycle, &epoch, &error)) {
        vr_receiver_reply(msg, vr_receiver_status_for(error), error->message);
        return;
    }
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        int errsv = errno;

        reason = g_strdup_printf("cannot open the hash list '%s': %s", path, g_strerror(errsv));
    } else if (!S_ISREG(st.st_mode) || st.st_size <= 0) {
        reason = g_strdup_printf("the hash list '%s' is not a regular file with data", path);
    }
    if (reason != NULL) {
        if (fd >= 0)
            close(fd);
        vr_receiver_reply(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, reason);
        return;
    }
    hashes = g_new0(VrReceiverHashes, 1);
    hashes->fd = fd;
    hashes->length = (uint64_t)st.st_size;
    g_object_set_data_full(G_OBJECT(msg), "vr-receiver-hashes", hashes,
                           (GDestroyNotify)vr_receiver_hashes_free);
    g_debug("hash list of disk '%s' of relationship '%s' for '%s': cycle %" G_GUINT64_FORMAT
            ", epoch %" G_GUINT64_FORMAT ", %" G_GUINT64_FORMAT " bytes from '%s'",
            key->disk, key->relationship, peer->name, cycle, epoch, hashes->length, path);
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    soup_message_headers_set_content_type(headers, "application/vnd.virt-replica.hashlist", NULL);
    soup_message_headers_set_content_length(headers, (goffset)hashes->length);
    vr_receiver_set_header_u64(msg, VR_RECEIVER_HEADER_CYCLE, cycle);
    vr_receiver_set_header_u64(msg, VR_RECEIVER_HEADER_EPOCH, epoch);
    /* Each piece is dropped once written: memory stays VR_RECEIVER_HASHES_AHEAD pieces. */
    soup_message_body_set_accumulate(soup_server_message_get_response_body(msg), FALSE);
    g_signal_connect(msg, "wrote-chunk", G_CALLBACK(vr_receiver_hashes_on_wrote_chunk), hashes);
    vr_receiver_hashes_fill(msg, hashes);
}

/* ---- domain XML ------------------------------------------------------------------------ */

/*
 * PUT of a domain XML (or POST of a planned failover: @failover): its body, collected up to
 * the Content-Length it declared.
 */
typedef struct {
    VrReceiver *receiver; /* a reference: a message can outlive vr_receiver_free() */
    bool failover;
    VrReceiverKey key; /* the relationship only */
    char *peer_name;
    char *storage_root;
    char *group;
    GByteArray *body;
    gsize expected;
    bool overflow; /* more bytes came than declared: never kept */
} VrReceiverDomain;

static void
vr_receiver_domain_free(VrReceiverDomain *domain)
{
    g_byte_array_unref(domain->body);
    g_free(domain->peer_name);
    g_free(domain->storage_root);
    g_free(domain->group);
    vr_receiver_unref(domain->receiver);
    g_free(domain);
}

static void
vr_receiver_domain_on_got_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer user_data)
{
    VrReceiverDomain *domain = user_data;
    gsize len = 0;
    const guint8 *data = g_bytes_get_data(chunk, &len);

    /* libsoup reads no more than the Content-Length; checked anyway, the buffer is bounded. */
    if (domain->overflow || len > domain->expected - domain->body->len) {
        domain->overflow = true;
        return;
    }
    g_byte_array_append(domain->body, data, (guint)len);
}

/*
 * PUT /v1/domains/{relationship}, headers in: a sink that takes domains, a Content-Length
 * of 1 to VR_RECEIVER_DOMAIN_MAX bytes, an XML media type. The body is then collected by
 * got-chunk, without a turn (it is small and goes to no store).
 */
static void
vr_receiver_put_domain(VrReceiver *receiver, SoupServerMessage *msg, const VrReceiverKey *key,
                       const VrReceiverPeer *peer, bool failover)
{
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
    g_autofree char *reason = NULL;
    VrReceiverDomain *domain;
    const char *what = failover ? "a failover request" : "a domain XML";
    const char *media = failover ? "application/json" : "application/xml";
    goffset limit = failover ? VR_RECEIVER_FAILOVER_MAX : VR_RECEIVER_DOMAIN_MAX;
    const char *type;
    goffset body;

    if ((failover ? (void *)receiver->sink->failover : (void *)receiver->sink->domain) == NULL) {
        vr_receiver_reply(msg, SOUP_STATUS_NOT_IMPLEMENTED,
                          failover ? "this replica does not take planned failovers"
                                   : "this replica does not take domain definitions");
        return;
    }
    if (soup_message_headers_get_encoding(headers) != SOUP_ENCODING_CONTENT_LENGTH) {
        vr_receiver_reply(msg, SOUP_STATUS_LENGTH_REQUIRED, "a Content-Length is required");
        return;
    }
    body = soup_message_headers_get_content_length(headers);
    if (body > limit) {
        reason = g_strdup_printf("%s of %" G_GINT64_FORMAT " bytes is larger than the limit of "
                                 "%" G_GINT64_FORMAT,
                                 what, (gint64)body, (gint64)limit);
        vr_receiver_reply(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, reason);
        return;
    }
    type = soup_message_headers_get_content_type(headers, NULL);
    if (type == NULL || g_ascii_strcasecmp(type, media) != 0) {
        reason = g_strdup_printf("%s is sent as %s", what, media);
        vr_receiver_reply(msg, SOUP_STATUS_UNSUPPORTED_MEDIA_TYPE, reason);
        return;
    }
    if (body <= 0) {
        vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST,
                          failover ? "the failover request is empty" : "the domain XML is empty");
        return;
    }
    domain = g_new0(VrReceiverDomain, 1);
    domain->receiver = g_rc_box_acquire(receiver);
    domain->failover = failover;
    domain->key = *key;
    domain->peer_name = g_strdup(peer->name);
    domain->storage_root = g_strdup(peer->storage_root);
    domain->group = g_strdup(peer->group);
    domain->expected = (gsize)body;
    domain->body = g_byte_array_sized_new((guint)body + 1);
    g_object_set_data_full(G_OBJECT(msg), "vr-receiver-domain", domain,
                           (GDestroyNotify)vr_receiver_domain_free);
    g_signal_connect(msg, "got-chunk", G_CALLBACK(vr_receiver_domain_on_got_chunk), domain);
}

/* The body of a domain XML is in: the sink's domain(), then 204 or its error's status. */
static void
vr_receiver_domain_finish(VrReceiverDomain *domain, SoupServerMessage *msg)
{
    VrReceiver *receiver = domain->receiver;
    VrReceiverPeer peer = { domain->peer_name, domain->storage_root, domain->group };
    g_autoptr(GError) error = NULL;

    if (receiver->closed) {
        vr_receiver_reply(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "the replica is shutting down");
        return;
    }
    if (domain->overflow || domain->body->len != domain->expected) {
        vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST,
                          "the body does not match its Content-Length");
        return;
    }
    g_byte_array_append(domain->body, (const guint8 *)"", 1); /* a NUL after the XML */
    if (domain->failover) {
        g_autofree char *reply = NULL;

        if (!receiver->sink->failover(domain->key.relationship, &peer,
                                      (const char *)domain->body->data, domain->expected,
                                      receiver->sink_data, &reply, &error)) {
            vr_receiver_reply(msg, vr_receiver_status_for(error), error->message);
            return;
        }
        soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
        soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_TAKE,
                                         g_steal_pointer(&reply), strlen(reply));
        return;
    }
    if (!receiver->sink->domain(domain->key.relationship, &peer, (const char *)domain->body->data,
                                domain->expected, receiver->sink_data, &error)) {
        vr_receiver_reply(msg, vr_receiver_status_for(error), error->message);
        return;
    }
    g_debug("domain XML of relationship '%s' from '%s': %" G_GSIZE_FORMAT " bytes",
            domain->key.relationship, domain->peer_name, domain->expected);
    soup_server_message_set_status(msg, SOUP_STATUS_NO_CONTENT, NULL);
}

/* ---- handlers --------------------------------------------------------------------------- */

/* HEAD: how much of the stream the receiver holds. */
static void
vr_receiver_head(VrReceiver *receiver, SoupServerMessage *msg, const VrReceiverKey *key,
                 const char *peer)
{
    g_autofree char *id = vr_receiver_key_id(key);
    VrReceiverUpload *upload = g_hash_table_lookup(receiver->uploads, id);

    /* another primary's upload is none of this one's business */
    if (upload == NULL || strcmp(upload->peer, peer) != 0) {
        vr_receiver_reply(msg, SOUP_STATUS_NOT_FOUND, "no upload of this stream is open");
        return;
    }
    if (upload->refused != 0) {
        vr_receiver_reply(msg, upload->refused, upload->refused_reason);
        return;
    }
    vr_receiver_set_upload_headers(msg, upload);
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
}

/* 503 with Retry-After: the client tries again later, without counting a failure. */
static void
vr_receiver_reply_busy(SoupServerMessage *msg, const char *reason)
{
    vr_receiver_reply(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, reason);
}

/*
 * Room for one more open upload of @peer: under max_open_uploads, or after dropping the
 * peer's own interrupted upload that waited longest (another primary's are never touched).
 */
static bool
vr_receiver_make_room(VrReceiver *receiver, const char *peer)
{
    VrReceiverUpload *oldest = NULL;
    GHashTableIter iter;
    gpointer value;

    if (receiver->open_uploads < receiver->max_open_uploads)
        return true;
    g_hash_table_iter_init(&iter, receiver->uploads);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        VrReceiverUpload *upload = value;

        if (upload->committed || upload->refused != 0 || upload->owner != NULL ||
            strcmp(upload->peer, peer) != 0)
            continue;
        if (oldest == NULL || upload->released < oldest->released)
            oldest = upload;
    }
    if (oldest == NULL)
        return false;
    vr_receiver_upload_drop(oldest);
    return true;
}

/* A request waited queue_timeout_s for a turn: 503, and its upload waits for a resume. */
static gboolean
vr_receiver_wait_expired(gpointer data)
{
    VrReceiverTransfer *transfer = data;
    VrReceiver *receiver = transfer->receiver;

    g_clear_pointer(&transfer->wait_timeout, g_source_unref);
    g_queue_remove(&receiver->waiting, transfer);
    transfer->waiting = false;
    if (transfer->upload != NULL) {
        VrReceiverUpload *upload = g_steal_pointer(&transfer->upload);

        vr_receiver_upload_release(upload);
    }
    vr_receiver_reply_busy(transfer->msg, "every transfer slot of this replica is busy");
    if (transfer->chunked && (soup_message_headers_get_expectations(
                                  soup_server_message_get_request_headers(transfer->msg)) &
                              SOUP_EXPECTATION_CONTINUE) == 0) {
        /*
         * Without "Expect: 100-continue" libsoup would read the whole body before the 503,
         * without a turn, and a chunked body need not end: the reply goes out now, cut.
         */
        transfer->cut = true;
        vr_receiver_cut_later(receiver, transfer->msg);
    } else {
        soup_server_message_unpause(transfer->msg);
    }
    return G_SOURCE_REMOVE;
}

/*
 * A PUT declaring @length (@unknown: "VR-Length: unknown") names another stream than
 * @upload: only when both lengths are known; a stream sent while it was written and resumed
 * with its length (or the reverse) is the same stream, and an offset that differs is told as
 * the receiver's offset, not as a restart.
 */
static bool
vr_receiver_length_differs(const VrReceiverUpload *upload, bool unknown, uint64_t length)
{
    return !unknown && upload->length_known && upload->length != length;
}

/*
 * PUT, headers in: find or start the upload, check the offset, then read the body now or
 * when a turn frees. Returns the transfer, or NULL when @msg got its reply.
 */
static VrReceiverTransfer *
vr_receiver_put(VrReceiver *receiver, SoupServerMessage *msg, const VrReceiverKey *key,
                const VrReceiverPeer *peer)
{
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
    g_autoptr(GError) error = NULL;
    g_autofree char *id = vr_receiver_key_id(key);
    g_autofree char *reason = NULL;
    VrReceiverUpload *upload = g_hash_table_lookup(receiver->uploads, id);
    VrReceiverTransfer *transfer;
    SoupEncoding encoding = soup_message_headers_get_encoding(headers);
    /* "VR-Length: unknown": the stream is sent while it is written; its END record ends it */
    bool unknown = g_strcmp0(soup_message_headers_get_one(headers, VR_RECEIVER_HEADER_LENGTH),
                             VR_RECEIVER_LENGTH_UNKNOWN) == 0;
    uint64_t offset, length = 0;
    goffset body = -1;
    gpointer handle;

    if (encoding != SOUP_ENCODING_CONTENT_LENGTH &&
        !(encoding == SOUP_ENCODING_CHUNKED && unknown)) {
        vr_receiver_reply(msg, SOUP_STATUS_LENGTH_REQUIRED,
                          "a Content-Length is required (a chunked body only with VR-Length: "
                          "unknown)");
        return NULL;
    }
    if (encoding == SOUP_ENCODING_CONTENT_LENGTH)
        body = soup_message_headers_get_content_length(headers);
    if ((!unknown &&
         !vr_receiver_header_u64(headers, VR_RECEIVER_HEADER_LENGTH, true, 0, &length, &error)) ||
        !vr_receiver_header_u64(headers, VR_RECEIVER_HEADER_OFFSET, false, 0, &offset, &error)) {
        vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, error->message);
        return NULL;
    }
    /*
     * The size: declared, or for a stream of unknown length checked as the bytes come (a
     * declared body that cannot fit, at once).
     */
    if (unknown ? offset > receiver->max_body_size ||
                      (body > 0 && (uint64_t)body > receiver->max_body_size - offset)
                : length > receiver->max_body_size) {
        reason = unknown ? vr_receiver_too_large(receiver, offset, (uint64_t)MAX(body, 0), true)
                         : vr_receiver_too_large(receiver, 0, length, false);
        vr_receiver_reply(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, reason);
        return NULL;
    }
    if (!unknown && (body < 0 || offset > length || (uint64_t)body > length - offset)) {
        reason = g_strdup_printf("a body of %" G_GINT64_FORMAT " bytes at offset %" G_GUINT64_FORMAT
                                 " does not fit in a stream of %" G_GUINT64_FORMAT " bytes",
                                 (gint64)body, offset, length);
        vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, reason);
        return NULL;
    }

    if (upload != NULL && strcmp(upload->peer, peer->name) != 0) {
        /* Only the primary that started an upload continues it, or starts it again. */
        vr_receiver_reply(msg, offset == 0 ? SOUP_STATUS_CONFLICT : SOUP_STATUS_FORBIDDEN,
                          "another primary is uploading this stream");
        return NULL;
    }
    if (upload != NULL && upload->refused != 0 && offset != 0) {
        /* Refused during an earlier body: the sender whose connection was cut learns why. */
        vr_receiver_reply(msg, upload->refused, upload->refused_reason);
        return NULL;
    }
    if (upload != NULL && upload->committed) {
        /* A repeated request of a committed stream: done already (idempotent). */
        vr_receiver_set_upload_headers(msg, upload);
        soup_server_message_set_status(msg, SOUP_STATUS_NO_CONTENT, NULL);
        return NULL;
    }
    if (offset == 0) {
        /* A stream starts (again): whatever an older upload of it held goes. */
        if (upload != NULL)
            vr_receiver_upload_drop(upload);
        if (!vr_receiver_make_room(receiver, peer->name)) {
            vr_receiver_reply_busy(msg, "too many uploads are open on this replica");
            return NULL;
        }
        handle = receiver->sink->begin(key, peer, receiver->sink_data, &error);
        if (handle == NULL) {
            guint status = vr_receiver_status_for(error);

            if (status == SOUP_STATUS_NO_CONTENT) {
                soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                             VR_RECEIVER_HEADER_STATE, "committed");
                soup_server_message_set_status(msg, status, NULL);
            } else {
                vr_receiver_reply(msg, status, error->message);
            }
            return NULL;
        }
        upload = g_new0(VrReceiverUpload, 1);
        upload->receiver = receiver;
        upload->id = g_steal_pointer(&id);
        upload->key = *key;
        upload->peer = g_strdup(peer->name);
        upload->length = length;
        upload->length_known = !unknown;
        upload->decoder = vr_wire_decoder_new();
        upload->handle = handle;
        g_hash_table_insert(receiver->uploads, upload->id, upload);
        receiver->open_uploads++;
    } else if (upload == NULL || upload->offset != offset ||
               vr_receiver_length_differs(upload, unknown, length)) {
        if (upload == NULL) {
            reason = g_strdup_printf("no upload of this stream is open: start at offset 0");
            soup_message_headers_replace(soup_server_message_get_response_headers(msg),
                                         VR_RECEIVER_HEADER_OFFSET, "0");
        } else if (vr_receiver_length_differs(upload, unknown, length)) {
            reason = g_strdup_printf("the open upload of this stream is %" G_GUINT64_FORMAT
                                     " bytes long, not %" G_GUINT64_FORMAT ": start at offset 0",
                                     upload->length, length);
            vr_receiver_set_header_u64(msg, VR_RECEIVER_HEADER_OFFSET, 0);
        } else {
            reason = g_strdup_printf("the upload of this stream is at offset %" G_GUINT64_FORMAT
                                     ", not %" G_GUINT64_FORMAT,
                                     upload->offset, offset);
            vr_receiver_set_upload_headers(msg, upload);
        }
        vr_receiver_reply(msg, SOUP_STATUS_CONFLICT, reason);
        return NULL;
    } else if (!unknown && !upload->length_known) {
        /* A stream sent while it was written, resumed once complete: its length is known now. */
        upload->length = length;
        upload->length_known = true;
    }

    transfer = g_new0(VrReceiverTransfer, 1);
    transfer->receiver = g_rc_box_acquire(receiver);
    transfer->msg = msg;
    transfer->chunked = encoding == SOUP_ENCODING_CHUNKED;
    vr_receiver_upload_take(upload, transfer);
    g_object_set_data_full(G_OBJECT(msg), "vr-receiver-transfer", transfer,
                           (GDestroyNotify)vr_receiver_transfer_free);
    if (receiver->active < receiver->max_active) {
        transfer->has_turn = true;
        receiver->active++;
    } else {
        /*
         * Wait unread (and unanswered: a client sending "Expect: 100-continue" waits too),
         * for queue_timeout_s at most: then 503, before the client's own I/O timeout.
         */
        g_debug("upload %s waits for a turn (%u active)", upload->id, receiver->active);
        transfer->waiting = true;
        g_queue_push_tail(&receiver->waiting, transfer);
        transfer->wait_timeout = g_timeout_source_new_seconds(receiver->queue_timeout_s);
        g_source_set_callback(transfer->wait_timeout, vr_receiver_wait_expired, transfer, NULL);
        g_source_attach(transfer->wait_timeout, receiver->context);
        soup_server_message_pause(msg);
    }
    return transfer;
}

/* Headers are in: method, policy, authorization, route; then the resource's method. */
static void
vr_receiver_route(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                  gpointer user_data)
{
    VrReceiver *receiver = user_data;
    g_autoptr(GError) error = NULL;
    g_autofree char *peer_name = NULL;
    g_autofree char *storage_root = NULL;
    g_autofree char *group = NULL;
    g_autofree char *reason = NULL;
    GTlsCertificate *peer = vr_receiver_peer_certificate(msg);
    const char *method = soup_server_message_get_method(msg);
    VrReceiverPeer who = { 0 };
    VrReceiverKey key;
    VrReceiverTransfer *transfer;

    /*
     * Before any decision: libsoup 3.2 reads the whole declared body even after an early
     * handler set a status (unless the client sent "Expect: 100-continue"); a rejected body
     * must be drained, never buffered.
     */
    soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
    if (strcmp(method, SOUP_METHOD_PUT) != 0 && strcmp(method, SOUP_METHOD_HEAD) != 0 &&
        strcmp(method, SOUP_METHOD_GET) != 0 && strcmp(method, SOUP_METHOD_POST) != 0) {
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                     "GET, PUT, HEAD, POST");
        vr_receiver_reply(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                          "only GET, PUT, HEAD and POST are allowed");
        return;
    }
    /* Per request: a CRL reloaded since the handshake cuts off a live connection. */
    if (!vr_tls_policy_check_gtls(receiver->policy, peer, &error) ||
        (peer_name = vr_tls_policy_peer_name_gtls(peer, &error)) == NULL) {
        reason = g_strdup_printf("client certificate refused: %s", error->message);
        vr_receiver_refused(receiver, msg, reason);
        vr_receiver_reply(msg, SOUP_STATUS_FORBIDDEN, reason);
        return;
    }
    who.name = peer_name;
    /* Copies: the daemon may remove the entry meanwhile (vr_authz_remove()). */
    if (!vr_authz_lookup(receiver->authz, peer_name, &storage_root, &group, &error)) {
        vr_receiver_refused(receiver, msg, error->message);
        vr_receiver_reply(msg, SOUP_STATUS_FORBIDDEN, error->message);
        return;
    }
    who.storage_root = storage_root;
    who.group = group;
    if (g_uri_get_query(soup_server_message_get_uri(msg)) != NULL) {
        vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, "a query is not allowed");
        return;
    }
    if (g_str_has_prefix(path, VR_RECEIVER_HASHES_PREFIX)) {
        if (!vr_receiver_parse_hashes_path(path, &key, &error)) {
            vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, error->message);
        } else if (strcmp(method, SOUP_METHOD_GET) != 0) {
            soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                         "GET");
            vr_receiver_reply(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                              "a hash list is only read (GET)");
        } else if (soup_message_headers_get_encoding(
                       soup_server_message_get_request_headers(msg)) == SOUP_ENCODING_CHUNKED) {
            vr_receiver_reply(msg, SOUP_STATUS_LENGTH_REQUIRED,
                              "a chunked body is not taken here: a Content-Length is required");
        } else {
            vr_receiver_get_hashes(receiver, msg, &key, &who);
        }
        return;
    }
    if (g_str_has_prefix(path, VR_RECEIVER_DOMAINS_PREFIX)) {
        if (!vr_receiver_parse_domain_path(path, VR_RECEIVER_DOMAINS_PREFIX, &key, &error)) {
            vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, error->message);
        } else if (strcmp(method, SOUP_METHOD_PUT) != 0) {
            soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                         "PUT");
            vr_receiver_reply(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                              "a domain XML is only written (PUT)");
        } else {
            vr_receiver_put_domain(receiver, msg, &key, &who, false);
        }
        return;
    }
    if (g_str_has_prefix(path, VR_RECEIVER_FAILOVER_PREFIX)) {
        if (!vr_receiver_parse_domain_path(path, VR_RECEIVER_FAILOVER_PREFIX, &key, &error)) {
            vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, error->message);
        } else if (strcmp(method, SOUP_METHOD_POST) != 0) {
            soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                         "POST");
            vr_receiver_reply(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                              "a planned failover is asked with POST");
        } else {
            vr_receiver_put_domain(receiver, msg, &key, &who, true);
        }
        return;
    }
    if (strcmp(method, SOUP_METHOD_POST) == 0) {
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                     "GET, PUT, HEAD");
        vr_receiver_reply(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                          "POST is only for /v1/failover/{relationship}");
        return;
    }
    if (!vr_receiver_parse_path(path, &key, &error)) {
        vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, error->message);
        return;
    }
    if (strcmp(method, SOUP_METHOD_GET) == 0) {
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow",
                                     "PUT, HEAD");
        vr_receiver_reply(msg, SOUP_STATUS_METHOD_NOT_ALLOWED,
                          "a stream is written (PUT) or asked about (HEAD), never read");
        return;
    }
    if (strcmp(method, SOUP_METHOD_HEAD) == 0) {
        vr_receiver_head(receiver, msg, &key, who.name);
        return;
    }
    transfer = vr_receiver_put(receiver, msg, &key, &who);
    if (transfer != NULL)
        g_signal_connect(msg, "got-chunk", G_CALLBACK(vr_receiver_on_got_chunk), transfer);
}

/*
 * The early handler: route the request; a reply it got before a chunked body (a refusal) is
 * sent at once and the connection closed, unless the client waits for "100 Continue" (then
 * libsoup answers before the body, which is never sent): libsoup would otherwise read the
 * whole body first, and a chunked one need not end.
 */
static void
vr_receiver_early_handler(SoupServer *server, SoupServerMessage *msg, const char *path,
                          GHashTable *query, gpointer user_data)
{
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);

    vr_receiver_route(server, msg, path, query, user_data);
    if (soup_server_message_get_status(msg) != 0 &&
        soup_message_headers_get_encoding(headers) == SOUP_ENCODING_CHUNKED &&
        (soup_message_headers_get_expectations(headers) & SOUP_EXPECTATION_CONTINUE) == 0)
        vr_receiver_cut_later(user_data, msg);
}

/* The body is complete: finish and commit the upload, or say where it stands; or a domain XML. */
static void
vr_receiver_handler(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                    gpointer user_data)
{
    VrReceiverTransfer *transfer = g_object_get_data(G_OBJECT(msg), "vr-receiver-transfer");
    VrReceiverDomain *domain = g_object_get_data(G_OBJECT(msg), "vr-receiver-domain");
    VrReceiverUpload *upload;
    GError *error = NULL;

    if (soup_server_message_get_status(msg) != 0)
        return; /* replied by the early handler */
    if (domain != NULL) {
        vr_receiver_domain_finish(domain, msg);
        return;
    }
    g_assert(transfer != NULL);
    if (transfer->has_turn) {
        /* The body is read: the turn goes to the next request now. */
        transfer->has_turn = false;
        transfer->receiver->active--;
        vr_receiver_next_turn(transfer->receiver);
    }
    if (transfer->error != NULL) {
        vr_receiver_reply(msg, transfer->status, transfer->error->message);
        return;
    }
    upload = transfer->upload;
    if (upload == NULL) {
        vr_receiver_reply(msg, SOUP_STATUS_CONFLICT, VR_RECEIVER_TAKEN_OVER);
        return;
    }
    if (upload->length_known ? upload->offset < upload->length
                             : !vr_wire_decoder_is_done(upload->decoder)) {
        /*
         * A part of the stream (of a stream without a length: a body that ended before its
         * END record, which publishes nothing): the next request continues from here.
         */
        transfer->upload = NULL;
        vr_receiver_upload_release(upload);
        vr_receiver_set_upload_headers(msg, upload);
        soup_server_message_set_status(msg, SOUP_STATUS_ACCEPTED, NULL);
        return;
    }
    if (!upload->length_known) {
        /* END arrived and ended the body: the stream's length is known at last. */
        upload->length = upload->offset;
        upload->length_known = true;
    }
    if (!vr_wire_decoder_finish(upload->decoder, &error) ||
        !upload->receiver->sink->commit(upload->handle, &error)) {
        vr_receiver_transfer_fail(transfer, vr_receiver_status_for(error), error);
        vr_receiver_reply(msg, transfer->status, transfer->error->message);
        return;
    }
    upload->handle = NULL; /* committed: ended */
    upload->committed = true;
    g_clear_pointer(&upload->decoder, vr_wire_decoder_free);
    transfer->upload = NULL;
    vr_receiver_upload_release(upload); /* remembered a while, for repeated requests */
    vr_receiver_set_upload_headers(msg, upload);
    soup_server_message_set_status(msg, SOUP_STATUS_NO_CONTENT, NULL);
}

static void
vr_receiver_clear(VrReceiver *receiver)
{
    g_hash_table_unref(receiver->uploads);
    g_main_context_unref(receiver->context);
}

static void
vr_receiver_unref(VrReceiver *receiver)
{
    g_rc_box_release_full(receiver, (GDestroyNotify)vr_receiver_clear);
}

VrReceiver *
vr_receiver_new(const VrReceiverConfig *config, GError **error)
{
    g_autoptr(GTlsCertificate) cert = NULL;
    g_autoptr(SoupServer) server = NULL;
    VrReceiver *receiver;

    g_assert(config->policy != NULL && config->authz != NULL && config->sink != NULL &&
             config->address != NULL);
    g_assert(config->sink->begin != NULL && config->sink->record != NULL &&
             config->sink->commit != NULL && config->sink->abort != NULL);

    cert = g_tls_certificate_new_from_files(config->cert_file, config->key_file, error);
    if (cert == NULL) {
        g_prefix_error(error, "failed to load the server certificate '%s': ", config->cert_file);
        return NULL;
    }
    server = soup_server_new("tls-certificate", cert, "tls-auth-mode",
                             G_TLS_AUTHENTICATION_REQUIRED, "server-header", NULL, NULL);
    if (!soup_server_listen(server, G_SOCKET_ADDRESS(config->address), SOUP_SERVER_LISTEN_HTTPS,
                            error)) {
        g_autofree char *where =
            g_inet_address_to_string(g_inet_socket_address_get_address(config->address));

        g_prefix_error(error, "failed to listen on %s port %u: ", where,
                       g_inet_socket_address_get_port(config->address));
        return NULL;
    }

    receiver = g_rc_box_new0(VrReceiver);
    receiver->server = g_steal_pointer(&server);
    receiver->policy = config->policy;
    receiver->authz = config->authz;
    receiver->max_body_size = config->max_body_size;
    receiver->sink = config->sink;
    receiver->sink_data = config->sink_data;
    receiver->max_active = config->max_active != 0 ? config->max_active : 4;
    receiver->io_timeout_s = config->io_timeout_s != 0 ? config->io_timeout_s : 60;
    receiver->resume_timeout_s = config->resume_timeout_s != 0 ? config->resume_timeout_s : 600;
    receiver->queue_timeout_s = config->queue_timeout_s != 0 ? config->queue_timeout_s : 30;
    receiver->max_open_uploads =
        config->max_open_uploads != 0 ? config->max_open_uploads : 8 * receiver->max_active;
    receiver->refused = config->refused;
    receiver->refused_data = config->refused_data;
    receiver->context = g_main_context_ref_thread_default();
    receiver->uploads = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_queue_init(&receiver->waiting);
    g_signal_connect(receiver->server, "request-started",
                     G_CALLBACK(vr_receiver_on_request_started), receiver);
    soup_server_add_early_handler(receiver->server, NULL, vr_receiver_early_handler, receiver,
                                  NULL);
    soup_server_add_handler(receiver->server, NULL, vr_receiver_handler, receiver, NULL);
    return receiver;
}

GSList *
vr_receiver_get_uris(VrReceiver *receiver)
{
    return soup_server_get_uris(receiver->server);
}

void
vr_receiver_get_load(VrReceiver *receiver, guint *active, guint *queued)
{
    *active = receiver->active;
    *queued = receiver->waiting.length;
}

void
vr_receiver_free(VrReceiver *receiver)
{
    GHashTableIter iter;
    gpointer value;

    if (receiver == NULL)
        return;
    receiver->closed = true;
    /*
     * Replies not cut yet are dropped with their messages (the server goes below); lingering
     * connections close at their next iteration rather than after their timer. A cut reply
     * being written completes, or fails, on the context and is then closed.
     */
    while (receiver->cuts != NULL)
        g_source_destroy(receiver->cuts->data); /* vr_receiver_cut_free() unlinks it */
    for (GList *l = receiver->lingers; l != NULL; l = l->next)
        g_cancellable_cancel(((VrReceiverLinger *)l->data)->cancel);
    /* Every upload, open or interrupted, is aborted; requests still alive drop their part. */
    while (g_hash_table_size(receiver->uploads) > 0) {
        g_hash_table_iter_init(&iter, receiver->uploads);
        g_hash_table_iter_next(&iter, NULL, &value);
        vr_receiver_upload_drop(value);
    }
    g_signal_handlers_disconnect_by_data(receiver->server, receiver);
    soup_server_disconnect(receiver->server);
    g_clear_object(&receiver->server);
    vr_receiver_unref(receiver);
}
