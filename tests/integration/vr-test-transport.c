/*
 * vr-test-transport.c: an upload, a hash list fetch or a domain XML, by a VrSender in a thread
 * of its own
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-test-transport.h"

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

    if (sender != NULL)
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
