/*
 * vr-replica-sink.h: the replica role's receiver sink, over the replica store
 *
 * The VrReceiverSink (vr-receiver.h) that applies every verified stream into the recovery
 * points of its disk (vr-replica-store.h). A disk lives in its own directory beneath the
 * storage root of the primary that writes it (vr-authz.h):
 *
 *   <storage root>/<relationship>/owner        the relationship's trust group, one line,
 *                                              written at its first stream (or domain XML)
 *   <storage root>/<relationship>/domain.xml   the primary's domain XML (mode 0600)
 *   <storage root>/<relationship>/<disk>/      the disk's replica store (mode 0700)
 *
 * Directories are made and opened beneath the storage root one component at a time, never
 * through a symlink. A primary writes only to relationships of its own trust group (else
 * 403). One VrReplicaStore stays open per disk directory for the sink's lifetime, and one
 * stream per disk is applied at a time (another one gets 409).
 *
 * With a state database, begin() and domain() also check the relationship's row (keyed by
 * the id alone): a row of role primary is 409, a replica row that names neither the peer nor
 * the peer's storage root is another primary's relationship, 403 (docs/replica-store.md,
 * "Trust groups").
 *
 * begin() decides before any body byte: trust group, then the store's check, so a replay of
 * a published cycle (same epoch, base and target) is answered 204 and a wrong base 409. The
 * store's apply begins at the stream's BEGIN record, which brings the identity; store errors
 * become receiver errors: CONFLICT and BUSY 409, NO_SPACE 507. docs/replica-store.md ("The
 * replica sink") has the layout, the rules and the status of every error.
 *
 * hashes() (GET /v1/hashes/{relationship}/{disk}) serves the hash list of the disk's latest
 * point (vr-replica-hashes.h) to a primary of the relationship's trust group (else 403);
 * nothing is made for it but the list: an unknown relationship or disk, or a disk without a
 * point, is 404. The list is made once per point, as <disk dir>/hashes-<cycle>, on the
 * receiver's thread (blocking it meanwhile), reused by later requests and removed once a
 * newer point is published. While an apply runs on the disk, a list not made yet cannot be
 * (503: the client tries again).
 *
 * domain() (PUT /v1/domains/{relationship}) checks the primary's domain XML (it must give a
 * standby: vr-standby.h; else 400) and the trust group as begin() does, and stores it as
 * <relationship>/domain.xml (tmp, fsync, rename, directory fsync). With a standby configured
 * (vr_replica_sink_set_standby()), the sink defines the standby domain from it, never
 * starting it, once the relationship has a published point: after the commit of a cycle
 * when the XML is there, or at the PUT when a point is; again whenever the XML or the epoch
 * changed. The standby's disks are <relationship>/<target>/failover.qcow2, files only a
 * failover creates (the guard). A failed define fails neither the cycle nor the PUT: see
 * vr_replica_sink_get_standby_error().
 *
 * Called from the receiver's thread only, which must live while an apply runs (qemu-nbd
 * gets SIGKILL when the thread that started it exits). Not thread-safe.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <glib.h>
#include <json-c/json.h>
#include <libvirt/libvirt.h>

#include "vr-authz.h"
#include "vr-receiver.h"
#include "vr-replica-store.h"
#include "vr-state.h"

G_BEGIN_DECLS

typedef struct _VrReplicaSink VrReplicaSink;

/*
 * A sink storing beneath the storage roots @authz gives (borrowed: it outlives the sink).
 * Fails when qemu-img or qemu-nbd is not on PATH. (transfer full)
 */
VrReplicaSink *vr_replica_sink_new(VrAuthz *authz, GError **error);

/*
 * Keep the latest recovery point plus @keep more (0..24, VR_REPLICA_STORE_KEEP_MAX; default
 * 4, Hyper-V's additional recovery points): after every published cycle the store merges
 * its oldest points away (vr_replica_store_retain()). A failed merge does not fail the
 * cycle, which is published: the next cycle's retention finishes it, and
 * vr_replica_sink_get_retention_error() tells what failed.
 */
void vr_replica_sink_set_recovery_points(VrReplicaSink *sink, guint keep);

/* The last retention failure, or NULL when the last retention succeeded. (transfer none) */
const GError *vr_replica_sink_get_retention_error(VrReplicaSink *sink);

/*
 * Space the additional recovery points: one per slot of @seconds of publication time
 * (default 3600: Hyper-V's hourly points; 0: the newest points, whatever their times), an
 * application-consistent point preferred in its slot (vr_replica_store_retain_spaced()).
 */
void vr_replica_sink_set_point_interval(VrReplicaSink *sink, guint seconds);

/*
 * Record into @state (borrowed; it outlives the sink; NULL: none) every cycle a stream
 * published (with its flags, times and bytes) or that failed after its BEGIN, the
 * relationship (role replica, made at its first stream, its epoch and primary kept up to
 * date), and after each publish the disk's recovery points, mirrored from the manifest
 * (vr-state.h). The manifest stays the commit point: a state failure fails no cycle; it
 * is kept for vr_replica_sink_get_state_error() and the next cycle mirrors again.
 */
void vr_replica_sink_set_state(VrReplicaSink *sink, VrState *state);

/* The last failure to record into the state database, or NULL. (transfer none) */
const GError *vr_replica_sink_get_state_error(VrReplicaSink *sink);

/*
 * Define the standby domain of every relationship in @conn (borrowed: it outlives the sink;
 * NULL: no standby, the default) from the primary's domain XML, with @name_rule (NULL: the
 * primary's name and UUID, for a replica host of its own; "%n-replica" when primary and
 * replica share one libvirtd) and @network_map (primary network -> replica network;
 * borrowed, may be NULL). The marker names the relationship, the primary (its certificate
 * identity as primary-host) and the epoch of the relationship's latest point. Call it
 * before the receiver runs.
 */
void vr_replica_sink_set_standby(VrReplicaSink *sink, virConnectPtr conn, const char *name_rule,
                                 GHashTable *network_map);

/*
 * The last failure to define a standby (or to read the domain XML it is defined from), or
 * NULL when the last define succeeded. (transfer none)
 */
const GError *vr_replica_sink_get_standby_error(VrReplicaSink *sink);

/*
 * Close every store. The receiver using the sink must be freed first (it aborts the streams
 * still open). NULL-safe.
 */
void vr_replica_sink_free(VrReplicaSink *sink);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrReplicaSink, vr_replica_sink_free)

/*
 * Failover (vr-failover.h): refuse every cycle of @relationship from now on (409, which a
 * primary treats as refused, not retried), until vr_replica_sink_unfence(). A cycle of it
 * being received now is aborted at once, before its commit: its image is removed, nothing is
 * published, and its later records fail with the same 409. So the latest published point of
 * each disk, which the failover takes next, is complete and stays the latest. Independently
 * of this, begin() refuses a relationship whose state in the state database is "FailedOver"
 * (after a restart too) and a cycle whose epoch is older than the relationship's.
 */
void vr_replica_sink_fence(VrReplicaSink *sink, const char *relationship);
void vr_replica_sink_unfence(VrReplicaSink *sink, const char *relationship);

/* Whether vr_replica_sink_fence() refuses @relationship now. */
bool vr_replica_sink_is_fenced(VrReplicaSink *sink, const char *relationship);

/*
 * Reverse replication (vr_failover_reverse_adopt_async()): while this host's stores of
 * @relationship are set up (@busy), every cycle of it is answered VR_RECEIVER_ERROR_BUSY
 * (503 with Retry-After: the new primary's upload waits and tries again, no failure counted)
 * before any other check, the fence's 409 included; then the checks as before.
 */
void vr_replica_sink_set_busy(VrReplicaSink *sink, const char *relationship, bool busy);

/*
 * The store of disk @disk of @relationship beneath the storage root @root (names as on the
 * wire), opened once and kept as a stream's is (the same object the sink applies into). It
 * must exist: nothing is made (VR_RECEIVER_ERROR_NOT_FOUND). For a local administrator's
 * operation (failover): no trust group is checked. (transfer none: valid while the sink is)
 */
VrReplicaStore *vr_replica_sink_get_store(VrReplicaSink *sink, const char *root,
                                          const char *relationship, const char *disk,
                                          GError **error);

/*
 * A planned failover asked by the primary (POST /v1/failover/{relationship}, docs/failover.md):
 * the sink checks that the peer may write @relationship (its trust group, as for a cycle; a
 * relationship without an owner is NOT_FOUND) and that the body is one JSON object, then
 * hands it to this function, which runs the failover and returns the answer (transfer full),
 * or NULL and an error of VR_RECEIVER_ERROR whose code gives the status (CONFLICT 409, ...).
 * The daemon owns the failover: the sink knows it only through this function.
 */
typedef json_object *(*VrReplicaSinkFailoverFunc)(const char *relationship, const char *peer_name,
                                                  json_object *request, gpointer user_data,
                                                  GError **error);

/* Set the function above (NULL: none; the request is answered 501). */
void vr_replica_sink_set_failover_handler(VrReplicaSink *sink, VrReplicaSinkFailoverFunc func,
                                          gpointer user_data);

/* The callbacks, for VrReceiverConfig.sink; sink_data is the VrReplicaSink. (transfer none) */
const VrReceiverSink *vr_replica_sink_get_sink(void);

G_END_DECLS
