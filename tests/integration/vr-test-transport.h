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
#include "vr-receiver.h"
#include "vr-sender.h"
#include "vr-tls-policy.h"

/*
 * A certificate policy of the test PKI in @pki: for clients (@server_name NULL) or for the
 * replica named @server_name; @crl (a path) unless @check_revocation is false. Asserts
 * success. (transfer full)
 */
VrTlsPolicy *vr_test_policy_new(const char *pki, const char *crl, bool check_revocation,
                                const char *server_name);

/*
 * Skip the current test (and return true) when there is no test PKI (@pki NULL: make-pki.sh
 * said why in @skip_why) or GIO has no TLS backend (glib-networking).
 */
bool vr_test_skip_without_tls(const char *pki, const char *skip_why);

/*
 * The two policies of a replica test, both checking <pki>/crl.pem: *@client the replica's
 * (its clients, the primaries), *@server the primary's (the replica, replica.example).
 * Asserts success. (transfer full: both)
 */
void vr_test_policies_new(const char *pki, VrTlsPolicy **client, VrTlsPolicy **server);

/*
 * A receiver as replica.example (server-ok of the test PKI in @pki) on 127.0.0.1, port *@port
 * (0: any free one), with the other fields of @config (its cert_file, key_file and address
 * are replaced). Asserts that it started and listens on https; its port in *@port, so that
 * a restart with the same *@port is found by a sender's retry. (transfer full)
 */
VrReceiver *vr_test_receiver_new(const char *pki, const VrReceiverConfig *config, guint16 *port);

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
    VrSenderFeed *feed; /* or NULL; else the stream is uploaded while it is written */
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

/*
 * Upload the stream file @path as @client_cert (a PKI name) to replica.example at
 * 127.0.0.1:@port, checked with @policy, in a thread while the default main context runs
 * here (the receiver's); @max_attempts 0: 3. Its ok; the sender's counters in *@stats (may
 * be NULL), the error in *@error (may be NULL).
 */
bool vr_test_upload(const char *pki, const char *client_cert, VrTlsPolicy *policy, guint16 port,
                    const char *path, guint max_attempts, VrSenderStats *stats, GError **error);

/*
 * The stream file of cycle @target of r1's disk vda (domain UUID bytes 0x3f) at @epoch on
 * @base (0: FULL), @virtual_size bytes, granularity 64 KiB: @blocks DATA records of 64 KiB,
 * block b at offset (@target + b) * 64 KiB modulo @virtual_size, the first all byte @target,
 * the others one block of random bytes seeded by @target (zstd cannot shrink a slow stream).
 * Written as
 * <@dir>/r1-<target>-<blocks>.vrw. (transfer full: its path)
 */
char *vr_test_cycle_file(const char *dir, uint64_t epoch, uint64_t base, uint64_t target,
                         guint blocks, uint64_t virtual_size);

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

/*
 * vr_sender_fetch_hashes() of @relationship's @disk into @path as @client_cert (a PKI name)
 * from replica.example at 127.0.0.1:@port, checked with @policy, in a thread while the
 * default main context runs here (the receiver's). Its ok: then the list's cycle and epoch
 * in *@cycle and *@epoch (untouched otherwise), else the error in *@error (may be NULL).
 */
bool vr_test_fetch_hashes(const char *pki, const char *client_cert, VrTlsPolicy *policy,
                          guint16 port, const char *relationship, const char *disk,
                          const char *path, uint64_t *cycle, uint64_t *epoch, GError **error);

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

/*
 * vr_sender_put_domain() of @xml for @relationship as @client_cert (a PKI name) to
 * replica.example at 127.0.0.1:@port, checked with @policy, in a thread while the default
 * main context runs here (the receiver's). Its ok; the error in *@error (may be NULL).
 */
bool vr_test_put_domain(const char *pki, const char *client_cert, VrTlsPolicy *policy, guint16 port,
                        const char *relationship, const char *xml, GError **error);
