/*
 * vr-test-replica.h: the replica's side of a test, as a daemon runs it: a storage root, the
 * replica sink behind a receiver of the test PKI on 127.0.0.1, a state database
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include <libvirt/libvirt.h>

#include "vr-authz.h"
#include "vr-receiver.h"
#include "vr-replica-sink.h"
#include "vr-state.h"
#include "vr-tls-policy.h"

/* Part of a test's fixture; zeroed before vr_test_replica_init(). */
typedef struct {
    char *root;                 /* the storage root */
    char *work;                 /* or NULL: streams, images, the state database, outside root */
    VrTlsPolicy *client_policy; /* the receiver's, for its clients (the primaries) */
    VrTlsPolicy *server_policy; /* the primaries', for replica.example */
    VrAuthz *authz;             /* the receiver's and the sink's (a test may replace it) */
    VrState *state;             /* or NULL: the sink records nothing */
    VrReplicaSink *sink;        /* while started */
    VrReceiver *receiver;       /* while started */
    guint16 port;               /* the receiver's; kept across restarts unless a test resets it */
} VrTestReplica;

/*
 * Skip the current test (and return true) when the replica's side cannot run: no test PKI or
 * TLS backend (vr_test_skip_without_tls() of @pki and @skip_why), no qemu-img or qemu-nbd
 * (the sink's stores use both).
 */
bool vr_test_replica_skip(const char *pki, const char *skip_why);

/*
 * vr_test_replica_skip(), then vr_test_libvirt_connect() for a replica that defines standbys:
 * qemu:///system, or NULL when the current test was skipped. (transfer full)
 */
virConnectPtr vr_test_replica_connect(const char *pki, const char *skip_why);

/*
 * With @r's root made (and its work directory, when it has one): the two policies of
 * vr_test_policies_new() from the test PKI in @pki, and an allow-any authorization over the
 * root (trust group "a"). Asserts success.
 */
void vr_test_replica_init(VrTestReplica *r, const char *pki);

/* Open (or create) @r's state database <work>/state.db, for the next start. Asserts success. */
void vr_test_replica_open_state(VrTestReplica *r);

/*
 * Start the replica's side, as a daemon does: a replica sink over @r's authz in which every
 * point counts (point interval 0: the hourly default would merge the points a test
 * publishes), recording into @r's state when it has one and defining standbys in
 * @standby_conn ("%n-replica") unless it is NULL, behind a receiver of
 * vr_test_receiver_new() with @max_body_size on @r's port (0: any free one; then set). On
 * the caller's thread-default main context. Asserts success.
 */
void vr_test_replica_start(VrTestReplica *r, const char *pki, virConnectPtr standby_conn,
                           uint64_t max_body_size);

/*
 * Stop it as a replica daemon stops: the receiver aborts what it holds, then the sink closes
 * its stores. Nothing when it is not started.
 */
void vr_test_replica_stop(VrTestReplica *r);

/*
 * The published cycles in the manifest of the replica store @disk_dir: "1 2 3", "" for none
 * (or no manifest yet). With @digest, the latest point's digest in *@digest (NULL when there
 * is none). (transfer full)
 */
char *vr_test_manifest_cycles(const char *disk_dir, char **digest);

/* Stop it, then free all of @r (its files stay) and zero it. */
void vr_test_replica_clear(VrTestReplica *r);
