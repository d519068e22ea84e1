/*
 * vr-test-transport.h: an upload, a hash list fetch or a domain XML, by a VrSender in a
 * thread of its own, while the test's receiver runs on the default main context
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <gio/gio.h>

#include "vr-rate-limit.h"
#include "vr-sender.h"
#include "vr-tls-policy.h"

/*
 * A certificate policy of the test PKI in @pki: for clients (@server_name NULL) or for the
 * replica named @server_name; @crl (a path) unless @check_revocation is false. Asserts
 * success. (transfer full)
 */
VrTlsPolicy *vr_test_policy_new(const char *pki, const char *crl, bool check_revocation,
                                const char *server_name);

typedef struct {
    /* in */
    const char *pki;         /* the directory make-pki.sh wrote */
    const char *client_cert; /* a PKI name: <pki>/<name>.pem and <name>-key.pem */
    VrTlsPolicy *policy;     /* the replica's (peer role server, replica.example) */
    GInetAddress *connect;   /* NULL: 127.0.0.1 */
    guint16 port;
    VrRateLimit *limit; /* or NULL */
    guint max_attempts; /* 0: 3 */
    guint io_timeout_s; /* 0: 10 */
    const char *path;   /* the stream file */
    /* out */
    VrSenderStats stats;
    GError *error;
    bool ok;
    gint done;
} VrTestUpload;

/* The thread function: upload @data (a VrTestUpload) to replica.example. */
gpointer vr_test_upload_run(gpointer data);

/* Iterate the default main context until @upload's @thread is done, join it: its ok. */
bool vr_test_upload_wait(VrTestUpload *upload, GThread *thread);

typedef struct {
    /* in */
    const char *pki;         /* the directory make-pki.sh wrote */
    const char *client_cert; /* a PKI name: <pki>/<name>.pem and <name>-key.pem */
    VrTlsPolicy *policy;     /* the replica's (peer role server, replica.example) */
    guint16 port;
    guint max_attempts; /* 0: 3 */
    guint io_timeout_s; /* 0: 10 */
    const char *relationship;
    const char *disk;
    const char *path; /* where the list goes */
    /* out */
    uint64_t cycle;
    uint64_t epoch;
    GError *error;
    bool ok;
    gint done;
} VrTestFetch;

/* The thread function: vr_sender_fetch_hashes() of @data (a VrTestFetch) from replica.example. */
gpointer vr_test_fetch_run(gpointer data);

/* Iterate the default main context until @fetch's @thread is done, join it: its ok. */
bool vr_test_fetch_wait(VrTestFetch *fetch, GThread *thread);

typedef struct {
    /* in */
    const char *pki;         /* the directory make-pki.sh wrote */
    const char *client_cert; /* a PKI name: <pki>/<name>.pem and <name>-key.pem */
    VrTlsPolicy *policy;     /* the replica's (peer role server, replica.example) */
    guint16 port;
    guint max_attempts; /* 0: 3 */
    const char *relationship;
    const char *xml;
    /* out */
    GError *error;
    bool ok;
    gint done;
} VrTestDomain;

/* The thread function: vr_sender_put_domain() of @data (a VrTestDomain) to replica.example. */
gpointer vr_test_domain_run(gpointer data);

/* Iterate the default main context until @put's @thread is done, join it: its ok. */
bool vr_test_domain_wait(VrTestDomain *put, GThread *thread);
