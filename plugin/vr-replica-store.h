/*
 * vr-replica-store.h: the recovery points of one replicated disk, on the replica
 *
 * One directory per disk of a relationship (the caller opens it beneath the storage root:
 * vr_authz_open_beneath()), holding:
 *
 *   rp-<cycle>.qcow2   one image per published recovery point: for a FULL stream a fresh
 *                      image of its own, for any other an overlay backed by the point
 *                      before it (by a relative name, so the directory can move); a
 *                      published point is never written again
 *   manifest.json      the commit point: the published points, oldest first, each with its
 *                      cycle, epoch, virtual size, flags and publication time
 *   .apply-<cycle>.sock, .apply-<cycle>.pid
 *                      the socket and pid file of the qemu-nbd of a running apply
 *
 * The oldest listed point is always an image of its own (retention merges older ones into
 * it: vr_replica_store_retain()).
 *
 * A stream (vr-wire.h) is applied into a new image, created with qemu-img: a fresh image,
 * never an old one, for FULL; an overlay of the latest point for an incremental cycle, and
 * for RESYNC too (a resync carries only the blocks that differ from the hash list of the
 * latest point, so it is applied on top of that point). A larger virtual size is given to
 * the new image when it is created: the disk grows before anything is written. The image
 * is exported writable by a qemu-nbd of its own on a unix socket in the directory and
 * written with libnbd: DATA with several aio writes in flight, ZERO as write-zeroes.
 * Commit: flush, stop qemu-nbd (SIGTERM, wait), fsync the image and the directory, then
 * write manifest.json.tmp, fsync it, rename it over manifest.json and fsync the directory:
 * that rename is the commit point. A crash before it leaves an image no manifest names:
 * vr_replica_store_open() removes it (and any manifest.json.tmp), and the primary sends the
 * cycle again. docs/replica-store.md has the whole sequence and its failpoints.
 *
 * Not thread-safe: one store, one caller thread. One apply at a time per store, and one
 * store per directory (an flock on it). qemu-img and qemu-nbd get SIGKILL when the thread
 * that started them exits (PR_SET_PDEATHSIG): the thread that begins an apply must live
 * until the apply ends.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <gio/gio.h>
#include <glib.h>

#include "vr-wire.h"

G_BEGIN_DECLS

#define VR_REPLICA_STORE_ERROR (vr_replica_store_error_quark())
GQuark vr_replica_store_error_quark(void);

typedef enum {
    VR_REPLICA_STORE_ERROR_CONFLICT, /* a base this store does not hold, a stale epoch, a
                                      * cycle already published, a shrinking incremental
                                      * cycle (names both cycles) */
    VR_REPLICA_STORE_ERROR_CORRUPT,  /* the manifest does not parse or names missing files */
    VR_REPLICA_STORE_ERROR_NO_SPACE, /* ENOSPC while applying or publishing */
    VR_REPLICA_STORE_ERROR_BUSY,     /* an apply is already running on this store, or
                                      * another store has the directory open */
    VR_REPLICA_STORE_ERROR_FAILED,   /* qemu-img, qemu-nbd or libnbd failed (their message),
                                      * a record outside the disk, any other I/O error */
} VrReplicaStoreErrorCode;

/*
 * One published recovery point. @digest is the stream digest of the cycle that made it
 * (its END record: vr-wire.h); @chain identifies the point's contents by their history:
 * SHA-256 of the chain of the point it was applied on (32 zero bytes for FULL) followed by
 * @digest. Two points with the same chain hold the same bytes, and the primary, which keeps
 * the digests of the cycles it sent, computes the same chain without reading a disk
 * (docs/replica-store.md, "Point digests").
 */
#define VR_REPLICA_CHAIN_SIZE 32

typedef struct {
    uint64_t cycle;
    uint64_t epoch;
    uint64_t virtual_size;
    uint32_t flags;    /* VrWireFlags of the stream that made it */
    int64_t published; /* wall-clock seconds since the epoch */
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
    uint8_t chain[VR_REPLICA_CHAIN_SIZE];
} VrReplicaPoint;

/* @chain of a point made by a stream with @digest on a point with @base_chain (NULL: none,
 * for FULL). */
/*
 * @len bytes as lower-case hexadecimal into @hex (room for 2 * @len + 1: NUL-terminated),
 * as the manifest, the state database's intents and the failover markers write digests.
 */
void vr_replica_hex_encode(const uint8_t *bytes, size_t len, char *hex);

/*
 * @hex_len characters at @hex, exactly 2 * @len lower-case hexadecimal digits, into @bytes;
 * false (@bytes undefined) for anything else.
 */
bool vr_replica_hex_decode(const char *hex, size_t hex_len, uint8_t *bytes, size_t len);

void vr_replica_point_chain(const uint8_t *base_chain, const uint8_t digest[VR_WIRE_DIGEST_SIZE],
                            uint8_t chain_out[VR_REPLICA_CHAIN_SIZE]);

typedef struct _VrReplicaStore VrReplicaStore;

/*
 * Open the store in the existing directory @dir: lock it, read the manifest (none: an empty
 * store), finish a merge it records as begun (vr_replica_store_retain(); its failure fails
 * the open) and remove what no published point names (images of interrupted applies,
 * manifest.json.tmp, sockets and pid files; a qemu-nbd left running is killed first).
 * Nothing else is removed, and nothing at all when the manifest is CORRUPT. (transfer full)
 */
VrReplicaStore *vr_replica_store_open(const char *dir, GError **error);
/* NULL-safe. End any apply of @store first. */
void vr_replica_store_free(VrReplicaStore *store);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrReplicaStore, vr_replica_store_free)

/* The published points, oldest first (transfer none; valid until the next commit or
 * retain). */
const VrReplicaPoint *vr_replica_store_points(VrReplicaStore *store, guint *n_points);

/* The image of published point @cycle, or NULL when there is none. (transfer full) */
char *vr_replica_store_image_path(VrReplicaStore *store, uint64_t cycle);

/*
 * The latest published point (copied to @point) and its image, for a reader that runs to
 * completion on the caller's thread (vr_replica_hashes_write()): no apply can begin or
 * retention run until it returns. BUSY while an apply runs (its overlay is not yet a
 * point), CONFLICT when the store holds no point. (transfer full)
 */
char *vr_replica_store_latest_image(VrReplicaStore *store, VrReplicaPoint *point, GError **error);

/*
 * Would a stream of @epoch from @base_cycle (0: FULL or RESYNC) to @target_cycle fit? An
 * epoch lower than the latest point's, a target cycle not after it, or a base cycle other
 * than the latest point is a CONFLICT naming both cycles. For a receiver that decides
 * before it has the stream's BEGIN record; vr_replica_store_begin() checks the same.
 */
bool vr_replica_store_check(VrReplicaStore *store, uint64_t epoch, uint64_t base_cycle,
                            uint64_t target_cycle, GError **error);

typedef struct _VrReplicaApply VrReplicaApply;

/*
 * Start applying the stream of @identity: create the image and start its qemu-nbd. FULL
 * needs nothing before it; RESYNC needs a point (the latest, whose hashes it was compared
 * with); an incremental cycle needs @identity->base_cycle to be the latest point and no
 * smaller virtual size. Conflicts as in vr_replica_store_check(); BUSY while another apply
 * runs. (transfer full: end it with _commit() or _abort())
 */
VrReplicaApply *vr_replica_store_begin(VrReplicaStore *store, const VrWireIdentity *identity,
                                       GError **error);

/*
 * One verified record of the stream, queued with others in flight: DATA and ZERO are
 * written (the record's bytes are copied), BEGIN is ignored, END gives the stream digest
 * and must come last. A failed write may show only at a later call or at commit; after any
 * failure every call fails with the same error.
 */
bool vr_replica_apply_record(VrReplicaApply *apply, const VrWireRecord *record, GError **error);

/*
 * Make the new point durable and publish it (see above); FAILED when END was not applied
 * (an incomplete stream is never published). On failure nothing is published
 * and the apply is aborted; @apply is freed either way. The one exception: when only the
 * directory sync after the rename fails, the manifest names the point (it is listed) and
 * the error says so; the caller must not acknowledge the cycle.
 */
bool vr_replica_apply_commit(VrReplicaApply *apply, GError **error);

/* Stop qemu-nbd, remove the unpublished image; @apply is freed. NULL-safe. */
void vr_replica_apply_abort(VrReplicaApply *apply);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrReplicaApply, vr_replica_apply_abort)

/* Additional recovery points a store may keep besides the latest (Hyper-V's limit). */
#define VR_REPLICA_STORE_KEEP_MAX 24

/*
 * Retention: keep the latest point and at most @keep (0..VR_REPLICA_STORE_KEEP_MAX) more,
 * oldest removed first. A removed point followed by an image of its own just goes;
 * otherwise the next point's overlay is committed into the removed point's image (qemu-img
 * commit), which then takes the next point's name: the next point becomes an image of its own, and
 * every point that stays listed reads as its cycle at every step. The manifest records the merge
 * before the oldest image is written; a merge a crash interrupted is finished by
 * vr_replica_store_open(), or by the next call, which first finishes one that failed.
 * Sequence and failpoints: docs/replica-store.md, Retention. BUSY while an apply runs;
 * FAILED for a @keep above the limit or a qemu-img failure (its message), NO_SPACE for
 * ENOSPC. Blocks for the qemu-img runs (a commit copies the next point's data).
 */
bool vr_replica_store_retain(VrReplicaStore *store, guint keep, GError **error);

/*
 * Retention with spacing, like Hyper-V's hourly recovery points: time is cut into slots of
 * @interval_s seconds of publication time (3600: hours; 0: every point is a slot of its
 * own, which is vr_replica_store_retain()). Besides the latest point, each earlier slot
 * keeps one point: its newest APP_CONSISTENT point if it has one, else its newest point;
 * the slot of the latest point keeps only the latest, and its newest APP_CONSISTENT point
 * when the latest is not one. Of those, the newest @keep stay. Every other point is
 * removed, oldest first, each merged into the point after it (or just removed when that
 * point is an image of its own), with the crash-safe merge of vr_replica_store_retain().
 * Errors as there.
 */
bool vr_replica_store_retain_spaced(VrReplicaStore *store, guint keep, guint interval_s,
                                    GError **error);

/*
 * The selection above, for @n_points points oldest first: @remove[i] is set for each
 * point to remove. Pure (no I/O), for tests and for showing an administrator what a
 * setting would keep.
 */
void vr_replica_retention_select(const VrReplicaPoint *points, guint n_points, guint keep,
                                 guint interval_s, bool *remove);

/*
 * Hold point @cycle: retention (vr_replica_store_retain_spaced()) keeps it and every point
 * its image is based on (its chain down to an image of its own) until it is released, e.g.
 * while a test failover's domain reads them through an overlay of its own. Holds are counted
 * and live in memory (the holder takes them again after a restart). CONFLICT when the store
 * has no such point.
 */
bool vr_replica_store_hold(VrReplicaStore *store, uint64_t cycle, GError **error);

/* Release one hold of @cycle (nothing when there is none). */
void vr_replica_store_release(VrReplicaStore *store, uint64_t cycle);

/*
 * The oldest point of the chain of point @cycle (*@first_out): the point whose image is the
 * base of @cycle's backing chain (an image of its own; @cycle itself when it is one). Every
 * point from *@first_out to @cycle is needed to read @cycle. CONFLICT when there is no such
 * point.
 */
bool vr_replica_store_chain(VrReplicaStore *store, uint64_t cycle, uint64_t *first_out,
                            GError **error);

/*
 * Keep only point @cycle and the points of its chain (vr_replica_store_chain()), e.g. when a
 * failover to @cycle is completed: every other point is unlisted (manifest first: the commit
 * point) and its image removed. Points after @cycle back nothing @cycle needs, and points
 * before its chain belong to an older chain. BUSY while an apply runs, CONFLICT when there
 * is no such point.
 */
bool vr_replica_store_keep_chain(VrReplicaStore *store, uint64_t cycle, GError **error);

/* The cycle number of a seeded point. */
#define VR_REPLICA_STORE_SEED_CYCLE 1

/*
 * Seed an empty store from an existing copy of the disk on the replica (Hyper-V's "use an
 * existing virtual machine on the replica server as the initial copy"): @image (@format
 * "raw" or "qcow2"; only read) is copied into a fresh image (qemu-img convert: zero blocks
 * stay unallocated), made durable and published as cycle VR_REPLICA_STORE_SEED_CYCLE of
 * @epoch, an image of its own (flags FULL). Its digest names this seeding, not its bytes
 * (no stream made it). The primary then fetches the hash list of this point and sends a
 * RESYNC stream of only the blocks that differ (docs/replica-store.md, "Seeding").
 * CONFLICT unless the store is empty; on any failure nothing is published and the copy is
 * removed. @cycle_out (optional) gets the cycle.
 */
bool vr_replica_store_seed(VrReplicaStore *store, const char *image, const char *format,
                           uint64_t epoch, uint64_t *cycle_out, GError **error);

/*
 * vr_replica_store_seed() as cycle @cycle (> 0) instead: the reverse replication after a
 * planned failover seeds the old primary's store with its own closed disk as the final
 * cycle both sides hold (docs/failover.md), so the first reverse cycle is an incremental
 * on it.
 */
bool vr_replica_store_seed_cycle(VrReplicaStore *store, const char *image, const char *format,
                                 uint64_t epoch, uint64_t cycle, uint64_t *cycle_out,
                                 GError **error);

/*
 * vr_replica_store_seed_cycle() that @cancellable (NULL: none) stops: qemu-img gets SIGKILL
 * and the copy is removed, or, once copied, the seed stops before the next slow step (the
 * fsyncs) or before the publication, its commit point; the error is then
 * G_IO_ERROR_CANCELLED and the store is as before, empty. Failpoint "seed-copied": the copy
 * is written, neither durable nor listed. For a worker thread: the store is used by that one
 * thread until this returns (nothing else may use it meanwhile), and the thread lives until
 * then (qemu-img dies with it).
 */
bool vr_replica_store_seed_cycle_cancellable(VrReplicaStore *store, const char *image,
                                             const char *format, uint64_t epoch, uint64_t cycle,
                                             GCancellable *cancellable, uint64_t *cycle_out,
                                             GError **error);

/*
 * Publish @name, a file in the store's directory, as point @cycle of @epoch without a copy:
 * a qcow2 overlay backed by a listed point by its relative name (rp-<base>.qcow2), e.g. the
 * failover overlay a domain ran on, adopted when that domain's host becomes the replica
 * again (failback with reverse replication, docs/failover.md). Points not in the chain of
 * its base go first (vr_replica_store_keep_chain(): points after the base, an older chain),
 * then: fsync @name, link it as rp-<cycle>.qcow2 (a second name: the open's sweep removes an
 * image no manifest lists, and @name must survive a crash until the commit), fsync the
 * directory, failpoint "adopt-link", the manifest with the point (failpoints "adopt-tmp",
 * "adopt": the commit point), the image made root's and 0600, failpoint "adopt-unlink",
 * @name removed, fsync the directory. @digest (NULL: a digest naming this adoption) is the
 * stream digest of the cycle that left the disk in this state; the chain follows from the
 * base's as for an applied cycle. Called again after a crash that came after the commit
 * point, it finishes (the image's owner, @name removed). CONFLICT for an image that is not
 * such an overlay, a base the store does not hold, a cycle not after the base, an epoch below
 * the base's or a smaller size; BUSY while an apply runs.
 */
bool vr_replica_store_adopt(VrReplicaStore *store, const char *name, uint64_t epoch, uint64_t cycle,
                            const uint8_t *digest, GError **error);

/*
 * Import a stream kept in the file @path (vr-wire.h), e.g. an initial copy the primary
 * exported for offline transport: decoded and verified as it is read (1 MiB at a time),
 * applied, and published only when the whole stream verified (END, nothing after it); on
 * any failure nothing is published and the partial image is removed. The same rules as an
 * apply from the network (a FULL stream into a fresh image, an incremental one on the
 * latest point). @target_out (optional) gets the published cycle.
 */
bool vr_replica_store_import(VrReplicaStore *store, const char *path, uint64_t *target_out,
                             GError **error);

G_END_DECLS
