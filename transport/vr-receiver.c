/*
 * vr-receiver.c: the replica's HTTPS receive endpoint
 *
 * libsoup 3.2 calls, per request: request-started (the first request of a connection comes
 * before the TLS handshake, so its accept-certificate handler runs the policy in the
 * handshake), the early handler once the headers are read (route, policy again, sizes), then
 * got-chunk for every piece of the body (fed to the decoder; accumulation is off, so no
 * chunk outlives its signal), then the handler once the body is complete (finish, commit,
 * reply). A status set in the early handler is sent at once only to a client that sent
 * "Expect: 100-continue"; otherwise libsoup reads (here: drains) the declared body first.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-receiver.h"

#include <string.h>

#include <libsoup/soup.h>

#define VR_RECEIVER_PREFIX "/v1/cycles/"

struct _VrReceiver {
    SoupServer *server;
    VrTlsPolicy *policy; /* borrowed */
    uint64_t max_body_size;
    const VrReceiverSink *sink; /* borrowed */
    gpointer sink_data;
};

/* One PUT request: attached to its SoupServerMessage, freed with it. */
typedef struct {
    VrReceiver *receiver;
    /* the receiver's sink, kept here: a message can outlive a freed receiver */
    const VrReceiverSink *sink;
    gpointer sink_data;
    char relationship[VR_WIRE_RELATIONSHIP_MAX + 1];
    char disk[VR_WIRE_DISK_MAX + 1];
    char *peer_name;
    VrWireDecoder *decoder;
    gpointer handle; /* the sink's, from begin until commit or the abort callback */
    GError *error;   /* the first failure; nothing more is fed after it */
    guint status;    /* the reply for @error */
} VrReceiverTransfer;

static void
vr_receiver_transfer_abort(VrReceiverTransfer *transfer)
{
    if (transfer->handle == NULL)
        return;
    transfer->sink->abort(g_steal_pointer(&transfer->handle));
}

static void
vr_receiver_transfer_free(VrReceiverTransfer *transfer)
{
    if (transfer == NULL)
        return;
    /* A client that went away mid-body: its transfer never reached the handler. */
    vr_receiver_transfer_abort(transfer);
    g_free(transfer->peer_name);
    vr_wire_decoder_free(transfer->decoder);
    g_clear_error(&transfer->error);
    g_free(transfer);
}

/* Record the first failure of @transfer and drop what the sink received. */
static void
vr_receiver_transfer_fail(VrReceiverTransfer *transfer, guint status, GError *error)
{
    if (transfer->error != NULL) {
        g_error_free(error);
        return;
    }
    transfer->error = error;
    transfer->status = status;
    vr_receiver_transfer_abort(transfer);
}

/* Reply @status with a one-line text/plain body. */
static void
vr_receiver_reply(SoupServerMessage *msg, guint status, const char *message)
{
    g_autofree char *line = g_strdup_printf("%s\n", message);

    g_debug("reply %u: %s", status, message);
    soup_server_message_set_status(msg, status, NULL);
    soup_server_message_set_response(msg, "text/plain; charset=utf-8", SOUP_MEMORY_COPY, line,
                                     strlen(line));
}

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

/* Split "/v1/cycles/{relationship}/{disk}"; nothing is built from the parts but names. */
static bool
vr_receiver_parse_path(const char *path, VrReceiverTransfer *transfer, GError **error)
{
    size_t rel_len, disk_len;
    const char *rel, *disk;

    if (!g_str_has_prefix(path, VR_RECEIVER_PREFIX)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "no such resource: the path is not /v1/cycles/{relationship}/{disk}");
        return false;
    }
    rel = path + strlen(VR_RECEIVER_PREFIX);
    rel_len = vr_receiver_component(rel, VR_WIRE_RELATIONSHIP_MAX);
    if (rel_len == 0 || rel[rel_len] != '/') {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "invalid relationship in the path: [a-z0-9]{1,16} expected");
        return false;
    }
    disk = rel + rel_len + 1;
    disk_len = vr_receiver_component(disk, VR_WIRE_DISK_MAX);
    if (disk_len == 0 || disk[disk_len] != '\0') {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "invalid disk in the path: [a-z0-9]{1,31} expected");
        return false;
    }
    memcpy(transfer->relationship, rel, rel_len);
    transfer->relationship[rel_len] = '\0';
    memcpy(transfer->disk, disk, disk_len);
    transfer->disk[disk_len] = '\0';
    return true;
}

/* The decoder's callback: BEGIN opens the sink's transfer, the rest goes to record(). */
static bool
vr_receiver_on_record(const VrWireRecord *record, gpointer user_data, GError **error)
{
    VrReceiverTransfer *transfer = user_data;
    const VrReceiverSink *sink = transfer->sink;

    if (record->type == VR_WIRE_RECORD_BEGIN) {
        if (strcmp(record->identity->relationship, transfer->relationship) != 0 ||
            strcmp(record->identity->disk, transfer->disk) != 0) {
            g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                        "the stream is for relationship '%s' disk '%s', the URL for '%s' '%s'",
                        record->identity->relationship, record->identity->disk,
                        transfer->relationship, transfer->disk);
            return false;
        }
        transfer->handle =
            sink->begin(record->identity, transfer->peer_name, transfer->sink_data, error);
        if (transfer->handle == NULL) {
            transfer->status = SOUP_STATUS_INTERNAL_SERVER_ERROR;
            return false;
        }
        return true;
    }
    g_assert(transfer->handle != NULL);
    if (!sink->record(transfer->handle, record, error)) {
        transfer->status = SOUP_STATUS_INTERNAL_SERVER_ERROR;
        return false;
    }
    return true;
}

static void
vr_receiver_on_got_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer user_data)
{
    VrReceiverTransfer *transfer = user_data;
    GError *error = NULL;
    gsize len = 0;
    const void *data = g_bytes_get_data(chunk, &len);

    if (transfer->error != NULL)
        return; /* the rest of a failed body is read and dropped */
    if (!vr_wire_decoder_feed(transfer->decoder, data, len, vr_receiver_on_record, transfer,
                              &error)) {
        /* status: 500 when the sink failed (set in the callback), else the stream is bad */
        vr_receiver_transfer_fail(
            transfer, transfer->status != 0 ? transfer->status : SOUP_STATUS_BAD_REQUEST, error);
    }
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
        g_debug("client certificate refused in the handshake: %s", error->message);
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
    g_signal_connect(msg, "accept-certificate", G_CALLBACK(vr_receiver_on_accept_certificate),
                     user_data);
}

/* Headers are in: route, policy, size; then stream the body into a decoder. */
static void
vr_receiver_early_handler(SoupServer *server, SoupServerMessage *msg, const char *path,
                          GHashTable *query, gpointer user_data)
{
    VrReceiver *receiver = user_data;
    SoupMessageHeaders *headers = soup_server_message_get_request_headers(msg);
    g_autoptr(GError) error = NULL;
    g_autofree char *peer_name = NULL;
    g_autofree char *reason = NULL;
    VrReceiverTransfer *transfer = NULL;
    GTlsCertificate *peer = vr_receiver_peer_certificate(msg);
    goffset length;

    /*
     * Before any decision: libsoup 3.2 reads the whole declared body even after an early
     * handler set a status (unless the client sent "Expect: 100-continue"); a rejected body
     * must be drained, never buffered.
     */
    soup_message_body_set_accumulate(soup_server_message_get_request_body(msg), FALSE);
    if (strcmp(soup_server_message_get_method(msg), SOUP_METHOD_PUT) != 0) {
        soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow", "PUT");
        vr_receiver_reply(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "only PUT is allowed");
        return;
    }
    /* Per request: a CRL reloaded since the handshake cuts off a live connection. */
    if (!vr_tls_policy_check_gtls(receiver->policy, peer, &error)) {
        reason = g_strdup_printf("client certificate refused: %s", error->message);
        vr_receiver_reply(msg, SOUP_STATUS_FORBIDDEN, reason);
        return;
    }
    peer_name = vr_tls_policy_peer_name_gtls(peer, &error);
    if (peer_name == NULL) {
        reason = g_strdup_printf("client certificate refused: %s", error->message);
        vr_receiver_reply(msg, SOUP_STATUS_FORBIDDEN, reason);
        return;
    }

    if (g_uri_get_query(soup_server_message_get_uri(msg)) != NULL) {
        vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, "a query is not allowed");
        return;
    }
    transfer = g_new0(VrReceiverTransfer, 1);
    transfer->receiver = receiver;
    transfer->sink = receiver->sink;
    transfer->sink_data = receiver->sink_data;
    if (!vr_receiver_parse_path(path, transfer, &error)) {
        vr_receiver_transfer_free(transfer);
        vr_receiver_reply(msg, SOUP_STATUS_BAD_REQUEST, error->message);
        return;
    }
    if (soup_message_headers_get_encoding(headers) != SOUP_ENCODING_CONTENT_LENGTH) {
        vr_receiver_transfer_free(transfer);
        vr_receiver_reply(msg, SOUP_STATUS_LENGTH_REQUIRED, "a Content-Length is required");
        return;
    }
    length = soup_message_headers_get_content_length(headers);
    if (length < 0 || (guint64)length > receiver->max_body_size) {
        vr_receiver_transfer_free(transfer);
        reason = g_strdup_printf("the body of %" G_GINT64_FORMAT
                                 " bytes is larger than the limit of %" G_GUINT64_FORMAT,
                                 (gint64)length, receiver->max_body_size);
        vr_receiver_reply(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, reason);
        return;
    }

    transfer->peer_name = g_steal_pointer(&peer_name);
    transfer->decoder = vr_wire_decoder_new();
    g_object_set_data_full(G_OBJECT(msg), "vr-receiver-transfer", transfer,
                           (GDestroyNotify)vr_receiver_transfer_free);
    g_signal_connect(msg, "got-chunk", G_CALLBACK(vr_receiver_on_got_chunk), transfer);
}

/* The body is complete: finish, commit, reply. */
static void
vr_receiver_handler(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                    gpointer user_data)
{
    VrReceiverTransfer *transfer = g_object_get_data(G_OBJECT(msg), "vr-receiver-transfer");
    const VrReceiverSink *sink;
    GError *error = NULL;

    if (soup_server_message_get_status(msg) != 0)
        return; /* replied by the early handler */
    g_assert(transfer != NULL);
    sink = transfer->sink;

    if (transfer->error == NULL) {
        if (!vr_wire_decoder_finish(transfer->decoder, &error))
            vr_receiver_transfer_fail(transfer, SOUP_STATUS_BAD_REQUEST, error);
    }
    if (transfer->error == NULL) {
        g_assert(transfer->handle != NULL);
        if (!sink->commit(transfer->handle, &error))
            vr_receiver_transfer_fail(transfer, SOUP_STATUS_INTERNAL_SERVER_ERROR, error);
        else
            transfer->handle = NULL; /* committed: ended */
    }
    if (transfer->error != NULL) {
        vr_receiver_reply(msg, transfer->status, transfer->error->message);
        return;
    }
    soup_server_message_set_status(msg, SOUP_STATUS_NO_CONTENT, NULL);
}

VrReceiver *
vr_receiver_new(const VrReceiverConfig *config, GError **error)
{
    g_autoptr(GTlsCertificate) cert = NULL;
    g_autoptr(SoupServer) server = NULL;
    VrReceiver *receiver;

    g_assert(config->policy != NULL && config->sink != NULL && config->address != NULL);
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
        g_prefix_error(error, "failed to listen: ");
        return NULL;
    }

    receiver = g_new0(VrReceiver, 1);
    receiver->server = g_steal_pointer(&server);
    receiver->policy = config->policy;
    receiver->max_body_size = config->max_body_size;
    receiver->sink = config->sink;
    receiver->sink_data = config->sink_data;
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
vr_receiver_free(VrReceiver *receiver)
{
    if (receiver == NULL)
        return;
    soup_server_disconnect(receiver->server);
    g_object_unref(receiver->server);
    g_free(receiver);
}
