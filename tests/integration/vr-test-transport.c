/*
 * vr-test-transport.c: an upload, a hash list fetch or a domain XML, by a VrSender in a thread
 * of its own
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include "vr-test-transport.h"
#include "vr-wire.h"

VrTlsPolicy *
vr_test_policy_new(const char *pki, const char *crl, bool check_revocation, const char *server_name)
{
    g_autofree char *ca = g_build_filename(pki, "ca.pem", NULL);
    g_autoptr(GError) error = NULL;
    VrTlsPolicy *policy = vr_tls_policy_new(
        &(VrTlsPolicyConfig){
            .ca_file = ca,
            .crl_file = check_revocation ? crl : NULL,
            .check_revocation = check_revocation,
            .peer_role = server_name != NULL ? VR_TLS_PEER_SERVER : VR_TLS_PEER_CLIENT,
            .server_name = server_name,
        },
        &error);

    g_assert_no_error(error);
    return policy;
}

bool
vr_test_skip_without_tls(const char *pki, const char *skip_why)
{
    if (pki == NULL) {
        g_test_skip(skip_why);
        return true;
    }
    if (!g_tls_backend_supports_tls(g_tls_backend_get_default())) {
        g_test_skip("no GIO TLS backend (glib-networking)");
        return true;
    }
    return false;
}

void
vr_test_policies_new(const char *pki, VrTlsPolicy **client, VrTlsPolicy **server)
{
    g_autofree char *crl = g_build_filename(pki, "crl.pem", NULL);

    *client = vr_test_policy_new(pki, crl, true, NULL);
    *server = vr_test_policy_new(pki, crl, true, "replica.example");
}

VrReceiver *
vr_test_receiver_new(const char *pki, const VrReceiverConfig *config, guint16 *port)
{
    g_autofree char *cert = g_build_filename(pki, "server-ok.pem", NULL);
    g_autofree char *key = g_build_filename(pki, "server-ok-key.pem", NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GInetAddress) loopback = g_inet_address_new_from_string("127.0.0.1");
    g_autoptr(GSocketAddress) address = g_inet_socket_address_new(loopback, *port);
    VrReceiverConfig cfg = *config;
    VrReceiver *receiver;
    GSList *uris;

    cfg.cert_file = cert;
    cfg.key_file = key;
    cfg.address = G_INET_SOCKET_ADDRESS(address);
    receiver = vr_receiver_new(&cfg, &error);
    g_assert_no_error(error);
    uris = vr_receiver_get_uris(receiver);
    g_assert_nonnull(uris);
    g_assert_cmpstr(g_uri_get_scheme(uris->data), ==, "https");
    g_assert_cmpint(g_uri_get_port(uris->data), >, 0);
    *port = (guint16)g_uri_get_port(uris->data);
    g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
    return receiver;
}

/* A sender to replica.example as @client_cert, connecting to @connect (NULL: 127.0.0.1). */
static VrSender *
vr_test_sender_new(const char *pki, const char *client_cert, VrTlsPolicy *policy,
                   GInetAddress *connect, guint16 port, VrRateLimit *limit, guint max_attempts,
                   guint io_timeout_s, GError **error)
{
    g_autofree char *cert = g_strdup_printf("%s/%s.pem", pki, client_cert);
    g_autofree char *key = g_strdup_printf("%s/%s-key.pem", pki, client_cert);
    g_autoptr(GInetAddress) loopback = g_inet_address_new_from_string("127.0.0.1");
    VrRateLimit *limits[1] = { limit };

    return vr_sender_new(
        &(VrSenderConfig){
            .server_name = "replica.example",
            .port = port,
            .connect_address = connect != NULL ? connect : loopback,
            .cert_file = cert,
            .key_file = key,
            .policy = policy,
            .limits = limits,
            .n_limits = 1,
            .max_attempts = max_attempts != 0 ? max_attempts : 3,
            .backoff_min_ms = 20,
            .backoff_max_ms = 200,
            .io_timeout_s = io_timeout_s != 0 ? io_timeout_s : 10,
        },
        error);
}

gpointer
vr_test_upload_run(gpointer data)
{
    VrTestUpload *up = data;
    g_autoptr(VrSender) sender =
        vr_test_sender_new(up->pki, up->client_cert, up->policy, up->connect, up->port, up->limit,
                           up->max_attempts, up->io_timeout_s, &up->error);

    if (sender != NULL && up->feed != NULL)
        up->ok = vr_sender_upload_feed(sender, up->feed, NULL, NULL, &up->stats, NULL, &up->error);
    else if (sender != NULL)
        up->ok = vr_sender_upload_file(sender, up->path, NULL, NULL, &up->stats, NULL, &up->error);
    g_atomic_int_set(&up->done, 1);
    g_main_context_wakeup(NULL);
    return NULL;
}

bool
vr_test_upload_wait(VrTestUpload *up, GThread *thread)
{
    while (!g_atomic_int_get(&up->done))
        g_main_context_iteration(NULL, TRUE);
    g_thread_join(thread);
    g_test_message("upload of %s as %s: %s; %u requests, %u resumes (last at %" G_GUINT64_FORMAT
                   "), %u busy, %" G_GUINT64_FORMAT
                   " body bytes for a stream of %" G_GUINT64_FORMAT,
                   up->path, up->client_cert, up->ok ? "ok" : up->error->message,
                   up->stats.requests, up->stats.resumes, up->stats.resumed_at, up->stats.busy,
                   up->stats.body_bytes, up->stats.stream_bytes);
    return up->ok;
}

bool
vr_test_upload(const char *pki, const char *client_cert, VrTlsPolicy *policy, guint16 port,
               const char *path, guint max_attempts, VrSenderStats *stats, GError **error)
{
    VrTestUpload send = {
        .pki = pki,
        .client_cert = client_cert,
        .policy = policy,
        .port = port,
        .path = path,
        .max_attempts = max_attempts,
    };
    bool ok = vr_test_upload_wait(&send, g_thread_new("sender", vr_test_upload_run, &send));

    if (stats != NULL)
        *stats = send.stats;
    if (send.error != NULL)
        g_propagate_error(error, send.error);
    return ok;
}

char *
vr_test_cycle_file(const char *dir, uint64_t epoch, uint64_t base, uint64_t target, guint blocks,
                   uint64_t virtual_size)
{
    enum {
        BLOCK = 65536
    };
    g_autofree char *name = g_strdup_printf("r1-%" G_GUINT64_FORMAT "-%u.vrw", target, blocks);
    char *path = g_build_filename(dir, name, NULL);
    g_autofree uint8_t *data = g_malloc(BLOCK);
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autoptr(VrWireEncoder) encoder = NULL;
    g_autoptr(GError) error = NULL;
    VrWireIdentity id = { 0 };

    id.kind = VR_WIRE_KIND_CYCLE;
    g_strlcpy(id.relationship, "r1", sizeof(id.relationship));
    g_strlcpy(id.disk, "vda", sizeof(id.disk));
    memset(id.domain_uuid, 0x3f, sizeof(id.domain_uuid));
    id.epoch = epoch;
    id.base_cycle = base;
    id.target_cycle = target;
    id.virtual_size = virtual_size;
    id.granularity = BLOCK;
    id.flags = base == 0 ? VR_WIRE_FLAG_FULL : 0;
    memset(data, (int)target, BLOCK);
    encoder = vr_wire_encoder_new(&id, &error);
    g_assert_no_error(error);
    g_assert_true(vr_wire_encoder_begin(encoder, out, &error));
    for (guint b = 0; b < blocks; b++) {
        if (b == 1) {
            g_autoptr(GRand) rand = g_rand_new_with_seed((guint32)target);

            for (guint i = 0; i < BLOCK; i += 4) {
                guint32 v = g_rand_int(rand);

                memcpy(data + i, &v, 4);
            }
        }
        g_assert_true(vr_wire_encoder_add_data(encoder, (target + b) * BLOCK % virtual_size, data,
                                               BLOCK, out, &error));
    }
    g_assert_true(vr_wire_encoder_end(encoder, out, &error));
    g_assert_no_error(error);
    g_assert_true(g_file_set_contents(path, (const char *)out->data, out->len, &error));
    g_assert_no_error(error);
    return path;
}

gpointer
vr_test_fetch_run(gpointer data)
{
    VrTestFetch *fetch = data;
    g_autoptr(VrSender) sender =
        vr_test_sender_new(fetch->pki, fetch->client_cert, fetch->policy, NULL, fetch->port, NULL,
                           fetch->max_attempts, fetch->io_timeout_s, &fetch->error);

    if (sender != NULL) {
        fetch->ok = vr_sender_fetch_hashes(sender, fetch->relationship, fetch->disk, fetch->path,
                                           &fetch->cycle, &fetch->epoch, &fetch->error);
    }
    g_atomic_int_set(&fetch->done, 1);
    g_main_context_wakeup(NULL);
    return NULL;
}

bool
vr_test_fetch_hashes(const char *pki, const char *client_cert, VrTlsPolicy *policy, guint16 port,
                     const char *relationship, const char *disk, const char *path, uint64_t *cycle,
                     uint64_t *epoch, GError **error)
{
    VrTestFetch f = {
        .pki = pki,
        .client_cert = client_cert,
        .policy = policy,
        .port = port,
        .relationship = relationship,
        .disk = disk,
        .path = path,
    };
    bool ok = vr_test_fetch_wait(&f, g_thread_new("fetch", vr_test_fetch_run, &f));

    if (!ok) {
        g_propagate_error(error, f.error);
        return false;
    }
    *cycle = f.cycle;
    *epoch = f.epoch;
    return true;
}

bool
vr_test_fetch_wait(VrTestFetch *fetch, GThread *thread)
{
    while (!g_atomic_int_get(&fetch->done))
        g_main_context_iteration(NULL, TRUE);
    g_thread_join(thread);
    if (fetch->ok) {
        g_test_message(
            "hash list of '%s' '%s' as %s: cycle %" G_GUINT64_FORMAT ", epoch %" G_GUINT64_FORMAT,
            fetch->relationship, fetch->disk, fetch->client_cert, fetch->cycle, fetch->epoch);
    } else {
        g_test_message("hash list of '%s' '%s' as %s: %s", fetch->relationship, fetch->disk,
                       fetch->client_cert, fetch->error->message);
    }
    return fetch->ok;
}

gpointer
vr_test_domain_run(gpointer data)
{
    VrTestDomain *put = data;
    g_autoptr(VrSender) sender =
        vr_test_sender_new(put->pki, put->client_cert, put->policy, NULL, put->port, NULL,
                           put->max_attempts, 0, &put->error);

    if (sender != NULL)
        put->ok = vr_sender_put_domain(sender, put->relationship, put->xml, &put->error);
    g_atomic_int_set(&put->done, 1);
    g_main_context_wakeup(NULL);
    return NULL;
}

bool
vr_test_domain_wait(VrTestDomain *put, GThread *thread)
{
    while (!g_atomic_int_get(&put->done))
        g_main_context_iteration(NULL, TRUE);
    g_thread_join(thread);
    g_test_message("domain XML of '%s' as %s: %s", put->relationship, put->client_cert,
                   put->ok ? "ok" : put->error->message);
    return put->ok;
}

bool
vr_test_put_domain(const char *pki, const char *client_cert, VrTlsPolicy *policy, guint16 port,
                   const char *relationship, const char *xml, GError **error)
{
    VrTestDomain put = {
        .pki = pki,
        .client_cert = client_cert,
        .policy = policy,
        .port = port,
        .relationship = relationship,
        .xml = xml,
    };
    bool ok = vr_test_domain_wait(&put, g_thread_new("domain", vr_test_domain_run, &put));

    if (put.error != NULL)
        g_propagate_error(error, put.error);
    return ok;
}
