/*
 * vr-failover.h: unplanned failover, its completion and cancel, and test failover, on the
 * replica host
 *
 * Hyper-V Replica's failover family on the standby domain (vr-standby.h) and the recovery
 * points (vr-replica-store.h) of a relationship this host replicates. docs/failover.md is
 * the operator's runbook.
 *
 * Unplanned failover (vr_failover_start(), test false), when the primary is lost:
 *   1. the sink refuses every further cycle of the relationship (409) and aborts a cycle
 *      being received, before its commit (vr_replica_sink_fence()): the latest published
 *      point of each disk is complete and stays the latest;
 *   2. the point is chosen: "latest" is the newest cycle every disk has (the cycles of one
 *      cut are crash-consistent across disks), or a cycle the caller names;
 *   3. on each disk, a throwaway qcow2 overlay of that point is made at the standby's disk
 *      path, <disk dir>/failover.qcow2, owned by libvirt's QEMU user (the DAC base label in
 *      the host's capabilities); the point and the images it is based on are made readable,
 *      never writable, by QEMU's group (mode 0640, group of the DAC label) and the
 *      relationship's and disk's directories traversable by it (0710);
 *   4. the standby's definition: marker state "failed-over" at the next epoch, and
 *      <seclabel model='dac' relabel='no'/> on each disk source, so that libvirt's DAC
 *      driver leaves the backing chain alone (libvirt 9.0 would chown every image of the
 *      chain to QEMU's user, 0600, and never restore the backing images: the points would
 *      stay writable by QEMU); each interface on this host's network for it, or left
 *      unconnected with a warning (vr-failover-net.h);
 *   5. the state database: epoch + 1, state "FailedOver", the failover in the
 *      relationship's config ({"failover": {...}});
 *   6. the standby starts (virDomainCreate). A failure at any step undoes the steps before;
 *   7. failover TCP/IP, when configured (vr-failover-net.h): never a failure of the failover.
 * The answer's "network" member says how each interface was connected and what failover
 * TCP/IP did.
 * vr_failover_complete() then keeps, on each disk, only the chosen point and the points its
 * image is based on (the running domain reads them), removing every other point; until then
 * vr_failover_cancel() destroys the standby, removes the overlays, puts the marker back to
 * "replica" at the old epoch and allows cycles again: every point is intact.
 *
 * Test failover (vr_failover_start(), test true), while replication goes on: a copy of the
 * standby, named "<standby>-test", with a UUID of its own (libvirt's), marker state "test",
 * each disk on an overlay of its own (<disk dir>/test-failover.qcow2), each interface on the
 * configured test network (or, without one or when it is not an active network here, an
 * unconnected tap with its link down: the guest keeps its NICs and reaches nothing). The
 * chosen point is held in each store (vr_replica_store_hold()): retention keeps it and its
 * chain while the copy runs.
 * vr_failover_cancel() with test destroys and undefines the copy and removes its overlays.
 * Recovery points are never written, by either kind.
 *
 * Errors are VR_FAILOVER_ERROR. Called from the daemon's main context only (the sink's
 * thread): the steps block on qemu-img and libvirt meanwhile, and no cycle is applied
 * between them.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <gio/gio.h>
#include <glib.h>
#include <json-c/json.h>
#include <libvirt/libvirt.h>

#include "vr-authz.h"
#include "vr-config.h"
#include "vr-replica-sink.h"
#include "vr-state.h"

G_BEGIN_DECLS

#define VR_FAILOVER_ERROR (vr_failover_error_quark())
GQuark vr_failover_error_quark(void);

typedef enum {
    VR_FAILOVER_ERROR_NOT_FOUND, /* no such relationship (API: 404 unknown-domain) */
    VR_FAILOVER_ERROR_NO_POINT,  /* no such recovery point on every disk (404 unknown-point) */
    VR_FAILOVER_ERROR_CONFLICT,  /* the relationship's state does not allow it (named) */
    VR_FAILOVER_ERROR_INVALID,   /* a bad argument (a point that is not a cycle number) */
    VR_FAILOVER_ERROR_FAILED,    /* libvirt, qemu-img, a store or the state failed */
    VR_FAILOVER_ERROR_BUSY,      /* a reverse set-up of the relationship runs (409 busy) */
} VrFailoverErrorCode;

/* The relationship states a failover sets (VrStateRelationship.state). */
#define VR_FAILOVER_STATE_FAILED_OVER "FailedOver"
#define VR_FAILOVER_STATE_REPLICATING "Replicating"
/* The standby marker's states besides VR_STANDBY_STATE_REPLICA. */
#define VR_FAILOVER_MARKER_FAILED_OVER "failed-over"
#define VR_FAILOVER_MARKER_TEST        "test"
/* The guard of a domain whose reverse set-up runs (the scheduler's VR_SCHEDULER_MARKER_OLD_PRIMARY:
 * the hook refuses to start it). */
#define VR_FAILOVER_MARKER_OLD_PRIMARY "old-primary"
/* Overlay names in a disk's directory. */
#define VR_FAILOVER_OVERLAY      "failover.qcow2"
#define VR_FAILOVER_TEST_OVERLAY "test-failover.qcow2"

typedef struct {
    VrState *state;      /* borrowed; outlives the object */
    VrReplicaSink *sink; /* borrowed; outlives the object */
    VrAuthz *authz;      /* the storage root of a relationship's primary; borrowed */
    virConnectPtr conn;  /* the replica's libvirt; borrowed */
    /* The libvirt network of a test failover's interfaces; NULL: none connected. */
    const char *test_network;
    /* Network maps and failover TCP/IP (vr-failover-net.h); borrowed; NULL: none. */
    const VrConfig *config;
} VrFailoverConfig;

typedef struct _VrFailover VrFailover;

/*
 * First reconciles, for every replica relationship, its standby and test copy in libvirt
 * with its row (a crash between a define and the state's write: failpoints
 * failover-overlays, failover-defined, failover-recorded, failover-cancel-defined,
 * failover-test-defined, failover-test-started, failover-test-cancel-undefined): forward
 * when the domain runs or its overlays are whole, else back, each at warning
 * (docs/failover.md, "Crash and restart"); never a standby the hook lets start while the
 * row receives. Then holds again
 * the points of the test failovers the state database records (they survive a daemon
 * restart), and resumes the failover TCP/IP pushes that were pending at the last stop
 * (vr_failover_net_resume()). A relationship whose standby or stores cannot be found is
 * skipped (debug message). Call it before the receiver runs. (transfer full)
 */
VrFailover *vr_failover_new(const VrFailoverConfig *config);
void vr_failover_free(VrFailover *failover);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrFailover, vr_failover_free)

/*
 * Fail over @name (a relationship id, the primary's domain name or the standby's name) to
 * @point (NULL or "latest": the newest cycle every disk has; else a cycle number), or with
 * @test, start a test copy (see above). The result (transfer full): {"relationship",
 * "domain" (the domain started), "point", "epoch", "state", "test"}.
 */
json_object *vr_failover_start(VrFailover *failover, const char *name, const char *point, bool test,
                               GError **error);

/*
 * The planned failover of @relationship (its id), asked by its primary after its final
 * cycle (docs/failover.md, "Planned failover"): the zero-data-loss check, then the failover
 * of vr_failover_start() to that cycle. Every disk's latest recovery point must be cycle
 * @cycle of epoch @epoch, made by the stream whose digest @digests names ({"vda": "<64 hex
 * digits>", ...}, every disk of the standby and no other), and the relationship must be at
 * @epoch: else CONFLICT ("the replica does not hold the final state: ..."), nothing done.
 * The failover is recorded as planned ({"failover": {"planned": true, ...}}). Asked again
 * after it succeeded (the primary's retry after a lost answer), the same answer. The result
 * is vr_failover_start()'s with "planned": true. With @track_bitmap (reverse replication),
 * each failover overlay gets that persistent bitmap (empty, recording) before the standby
 * starts, so its writes are tracked from the first one. (transfer full)
 */
json_object *vr_failover_start_planned(VrFailover *failover, const char *relationship,
                                       uint64_t cycle, uint64_t epoch, json_object *digests,
                                       const char *track_bitmap, GError **error);

/*
 * Reverse replication after a planned failover away, on the old primary (docs/failover.md):
 * the shut-off domain @domain becomes the standby of @relationship, replicated from @peer
 * (the new primary's certificate identity, authorized here). Each disk's store beneath the
 * peer's storage root gets point @cycle of @epoch: a copy of the domain's own closed image
 * (vr_replica_store_seed_cycle_cancellable()), or, on a failback, when the disk is that
 * store's failover overlay (this host was the replica and failed over), the overlay itself,
 * adopted without a copy (vr_replica_store_adopt(), with the digest @digests gives the disk:
 * @digest_disks names the disks in its order; both may be NULL). Then the domain is
 * redefined as the standby (same name and UUID, disks on the stores' failover overlay paths,
 * marker "replica" at @epoch: the hook refuses to start it), and the relationship is
 * recorded with the replica role at @epoch. The result: {"relationship", "standby", "point",
 * "epoch"}. (transfer full)
 *
 * The copies (whole disks: minutes for big ones) run in a worker thread; the checks before
 * them and everything after them run on the calling (main) context, where @callback gets
 * the result. Meanwhile the sink takes none of the relationship's cycles (one being
 * received is aborted: fenced, unfenced at the end or left as it was before on a failure;
 * a new one is answered 503 busy: vr_replica_sink_set_busy()) and each seeded store is the
 * worker's alone (its directory's flock). One set-up per relationship at a time: another one
 * meanwhile fails at once with BUSY, and so does any once vr_failover_reverse_stop() began.
 * Its intent is recorded first (a failure to record it fails the request), then the domain
 * is guarded (marker VR_FAILOVER_MARKER_OLD_PRIMARY: the hook refuses to start it). A store
 * that holds points already is CONFLICT (never a base taken from an older image), except a
 * seed of this same set-up that a stop interrupted while its image is still unchanged.
 * After the copies, a domain that runs or a row that changed (disabled, failed over) is
 * CONFLICT. A failure ends the set-up for good (the domain's marker of before back, the
 * intent removed), but a cancel by vr_failover_reverse_stop() (G_IO_ERROR_CANCELLED) keeps
 * both for the next start. Its arguments are copied: they need not outlive the call.
 * Called from the main context only.
 */
void vr_failover_reverse_adopt_async(VrFailover *failover, const char *relationship,
                                     const char *domain, const char *peer, uint64_t cycle,
                                     uint64_t epoch, const char *const *digest_disks,
                                     const GArray *digests, GAsyncReadyCallback callback,
                                     gpointer user_data);
json_object *vr_failover_reverse_adopt_finish(VrFailover *failover, GAsyncResult *result,
                                              GError **error);

/* A resumed reverse set-up of @relationship ended well (vr_failover_reverse_resume()). */
typedef void (*VrFailoverResumedFunc)(const char *relationship, gpointer user_data);

/*
 * At the daemon's start, after the receiver and the scheduler exist but before the main
 * loop runs: each reverse set-up that a stop interrupted is run again from its intent (the
 * state database, kind "reverse": written by vr_failover_reverse_adopt_async() before the
 * first disk, removed when the set-up ended well) with the same arguments. Every step is
 * idempotent: a disk already seeded (its only point is the cycle and epoch asked, and its
 * image's identity is still the one the intent records) or adopted
 * (vr_replica_store_adopt() finishes an adoption after its commit point) is skipped, the
 * standby's definition and the row are written again. @func runs on the main context for
 * each set-up that ended well (the daemon's scheduler lets go of the relationship); a
 * failure is logged and its intent removed (as a request answered with an error), a cancel
 * keeps it for the next start; an intent older than the relationship's epoch is dropped.
 * Returns how many set-ups were started.
 */
guint vr_failover_reverse_resume(VrFailover *failover, VrFailoverResumedFunc func,
                                 gpointer user_data);

/* Whether a reverse set-up of @relationship runs (@failover may be NULL: no). */
bool vr_failover_reverse_running(VrFailover *failover, const char *relationship);

/*
 * Cancel every reverse set-up under way and wait until each has ended (the daemon stops):
 * a copy that runs is killed and removed; the disks seeded before it keep their point (a
 * copy of their image as it was), nothing else is published; each request fails with
 * G_IO_ERROR_CANCELLED (its callback runs from here), and the next start resumes the set-up
 * (its intent and the domain's guard stay: vr_failover_reverse_resume()). From the call on,
 * a new set-up fails at once (BUSY); one that starts from a callback meanwhile is cancelled
 * too. The wait is short: the worker stops at its next step (a failpoint
 * "seed-copied:sleep" may hold it that long). Acquires and iterates the main context;
 * NULL-safe. vr_failover_free() does it too.
 */
void vr_failover_reverse_stop(VrFailover *failover);

/*
 * vr_failover_start() with the failover TCP/IP of the request, @interfaces ({"MAC":
 * {"ipv4": ..., ...}}, vr_failover_net_parse_request()), over the configuration's for those
 * MACs. A bad @interfaces is INVALID before anything is done.
 */
json_object *vr_failover_start_with_interfaces(VrFailover *failover, const char *name,
                                               const char *point, bool test,
                                               json_object *interfaces, GError **error);

/* Keep only the failover's point and its chain on every disk; the state stays FailedOver. */
json_object *vr_failover_complete(VrFailover *failover, const char *name, GError **error);

/* Cancel the failover (or, with @test, the test failover) of @name, as above. */
json_object *vr_failover_cancel(VrFailover *failover, const char *name, bool test, GError **error);

/* The API's error code of @error ("unknown-domain", "wrong-state", ...) and its status. */
const char *vr_failover_error_code(const GError *error, guint *status);

G_END_DECLS
