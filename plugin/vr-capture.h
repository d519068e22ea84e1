/*
 * vr-capture.h: change capture on the primary
 *
 * One replication cycle of a domain, on top of a connected VrQmpClient
 * (research/qemu-bitmaps.md §1.3, docs/capture.md):
 *
 *   begin   health check; for every disk a fleece qcow2 backed by the live node; an NBD
 *           server; ONE transaction across all disks: blockdev-backup sync=none first, then
 *           the new persistent bitmap B(k), and (incremental) a frozen disabled copy of
 *           B(a) on the fleece node; an export of each fleece with that copy
 *   spool   for each disk, read the changed extents of the point-in-time view over NBD
 *           (libnbd, several requests in flight) into a spool file (vr-spool.h)
 *   end     tear everything down: exports, NBD server, jobs, fleece nodes, fd sets, files.
 *           Runs on success and on every failure path (vr_capture_cycle_free() calls it).
 *
 * Bitmaps are never cleared or disabled. B(a) stays until the replica acknowledges a later
 * cycle: vr_capture_ack() then removes every older bitmap in one transaction.
 *
 * Names: bitmaps "vr-<rel>-<cycle, 10 digits>"; everything else of a cycle starts with
 * "vr-<rel>-" too (fleece nodes, jobs, exports, fd sets), so a crashed agent's leftovers
 * are found by prefix (vr_capture_reconcile()).
 *
 * Threading: synchronous, on the thread that owns the client's context (vr-qmp-client.h).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vr-qmp-client.h"
#include "vr-sender.h"
#include "vr-spool.h"

G_BEGIN_DECLS

#define VR_CAPTURE_ERROR (vr_capture_error_quark())
GQuark vr_capture_error_quark(void);

typedef enum {
    /* Tracking is broken: missing or inconsistent bitmap, moved active layer, new size. */
    VR_CAPTURE_ERROR_RESYNC_REQUIRED,
    /* Not now: libvirt's own NBD server runs (backup, migration). Retry later. */
    VR_CAPTURE_ERROR_DEFERRED,
    /* The disk cannot be tracked (not qcow2: persistent bitmaps need qcow2 v3). */
    VR_CAPTURE_ERROR_UNSUPPORTED,
    /* The fleece reached its budget: the guest overwrote more than it may hold; the cycle is
     * torn down and can be retried from the same base. */
    VR_CAPTURE_ERROR_BUDGET,
    /* A freeze may have taken effect and no thaw could be confirmed: the guest may still be
     * frozen. Alert an administrator; the cycle is torn down. */
    VR_CAPTURE_ERROR_GUEST_FROZEN,
    /* Anything else; the cycle is torn down and can be retried from the same base. */
    VR_CAPTURE_ERROR_FAILED,
} VrCaptureErrorCode;

/* One disk of a domain, as the caller resolved it (vr_qmp_disk_resolve() under libvirt). */
typedef struct {
    const char *target;    /* "vda": [a-z0-9]{1,31}, the export and spool name */
    const char *node_name; /* the tracked format node: "libvirt-1-format" */
    const char *qdev;      /* the device's query-block qdev, or NULL to skip that check */
    uint64_t virtual_size; /* what the replica has; a change needs a resync */
} VrCaptureDisk;

typedef enum {
    /* Pass the fleece image and the NBD socket as file descriptors (add-fd, getfd): for
     * QEMU under libvirt, where DAC and AppArmor labels would block paths. Without it,
     * QEMU opens them by path (qemu-storage-daemon has neither command). */
    VR_CAPTURE_PASS_FDS = 1 << 0,
} VrCaptureFlags;

typedef struct _VrCapture VrCapture;

/* A relationship id has at most this many characters; with the disk target it makes QEMU
 * node names, which QEMU limits to 31 characters. */
#define VR_CAPTURE_RELATIONSHIP_MAX 12

/*
 * Capture for relationship @relationship ([a-z0-9]{1,12}) of the domain with
 * @domain_uuid, through @client (a reference is taken). Fleece images and the NBD socket go
 * into @workdir, which must exist on local storage. @client may be NULL for a domain that
 * does not run: such a capture only names bitmaps and reads attached cycles
 * (vr_capture_cycle_attach()). (transfer full)
 */
VrCapture *vr_capture_new(VrQmpClient *client, const char *relationship,
                          const uint8_t domain_uuid[16], const char *workdir, VrCaptureFlags flags,
                          GError **error);
void vr_capture_free(VrCapture *capture);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrCapture, vr_capture_free)

/*
 * The space the fleece images of one cycle may take on local storage, shared evenly among
 * its disks (0: no limit, the default). Copy-before-write copies every cluster the guest
 * overwrites during the cycle into the fleece, and a full fleece fails the guest's writes:
 * a write threshold on each fleece aborts the cycle cleanly before that. Each fleece needs
 * at least 1 MiB (its own metadata takes some).
 */
void vr_capture_set_fleece_budget(VrCapture *capture, uint64_t bytes);

/* Requests in flight while reading a disk (default 8), and the size of each (1 MiB; a
 * multiple of 64 KiB). */
void vr_capture_set_read_queue(VrCapture *capture, guint depth, guint request_size);

/* The bitmap name of @cycle. (transfer full) */
char *vr_capture_bitmap_name(VrCapture *capture, uint64_t cycle);

/* The same name without a capture: B(@cycle) of @relationship. (transfer full) */
char *vr_capture_relationship_bitmap_name(const char *relationship, uint64_t cycle);

/*
 * The health check a cycle starts with, for cycle @base of every disk: B(@base) exists, is
 * persistent, recording and consistent; the node is qcow2 with the expected virtual size;
 * the device (qdev) writes through the node. Fails with VR_CAPTURE_ERROR_RESYNC_REQUIRED
 * naming the disk and the reason, or VR_CAPTURE_ERROR_UNSUPPORTED.
 */
bool vr_capture_check(VrCapture *capture, const VrCaptureDisk *disks, guint n_disks, uint64_t base,
                      GError **error);

/*
 * Application consistency: the guest's file systems frozen around the cut, through its
 * guest agent (vr-guest-agent.h under libvirt). Both members are required.
 */
typedef struct {
    /*
     * Freeze within @timeout_ms; true when the guest reports its file systems frozen. On
     * failure, *@maybe_frozen says whether the guest may freeze anyway (a timeout: the
     * agent may still be at it) or certainly did not (no agent connected).
     */
    bool (*freeze)(gpointer data, guint timeout_ms, bool *maybe_frozen, GError **error);
    /*
     * Thaw, retrying until the guest confirms it is thawed. Called after every freeze that
     * succeeded or may have: a freeze that completes late must not leave the guest frozen.
     */
    bool (*thaw)(gpointer data, GError **error);
} VrCaptureFreezer;

/*
 * Freeze the guest around each cut with @freezer (NULL: crash-consistent cuts only). A
 * freeze that fails or times out does not fail the cycle: the cut is then crash-consistent
 * and vr_capture_cycle_get_freeze_error() says why.
 */
void vr_capture_set_freezer(VrCapture *capture, const VrCaptureFreezer *freezer, gpointer data,
                            guint timeout_ms);

typedef struct _VrCaptureCycle VrCaptureCycle;

/*
 * Cut cycle @cycle of @n_disks disks: incremental from @base (its bitmap B(@base) is the
 * delta), or full when @base is 0 (allocated extents only; this also starts tracking).
 * On failure everything begun is torn down. (transfer full)
 */
VrCaptureCycle *vr_capture_cycle_begin(VrCapture *capture, const VrCaptureDisk *disks,
                                       guint n_disks, uint64_t base, uint64_t cycle,
                                       GError **error);

/*
 * A cycle of a domain that does not run (its final cycle after a shutdown: vr-primary.h),
 * read from its closed images: the caller exports each of @disks read-only under its target
 * name on the NBD server at @socket, with B(@base) itself as its bitmap (qemu-nbd -B,
 * vr_qemu_nbd_start_shared()). Nothing is set up in QEMU and the cycle's end tears nothing
 * down; vr_capture_cycle_spool() reads the dirty extents of B(@base) as for a cut. The
 * bitmaps (B(@cycle), the release of older ones) are the caller's. (transfer full)
 */
VrCaptureCycle *vr_capture_cycle_attach(VrCapture *capture, const VrCaptureDisk *disks,
                                        guint n_disks, uint64_t base, uint64_t cycle,
                                        const char *socket, GError **error);

/*
 * Read disk @index of the cycle into a spool at @path (see vr-spool.h); @totals may be
 * NULL. All-zero blocks become ZERO records.
 */
bool vr_capture_cycle_spool(VrCaptureCycle *cycle, guint index, const char *path,
                            VrSpoolTotals *totals, GError **error);

/*
 * Resynchronization without a full copy, for a cycle begun without a base: compare the
 * 64 KiB blocks of the point-in-time view of disk @index with the replica's hash list at
 * @hashes (vr-hashlist.h), and spool only the blocks that differ (VR_SPOOL_FLAG_RESYNC).
 * Holes are compared without reading them.
 */
bool vr_capture_cycle_spool_resync(VrCaptureCycle *cycle, guint index, const char *hashes,
                                   const char *path, VrSpoolTotals *totals, GError **error);

/*
 * Write the spools that follow as the wire streams vr_ship_encode() would make of them, for
 * relationship @relationship at @epoch (vr-ship.h, VrShipIdentity): the path given to
 * vr_capture_cycle_spool() and vr_capture_cycle_spool_resync() is then the stream's, and
 * their @totals count its records. This saves the encoding pass (read the spool, write the
 * stream, sync it again): the records are encoded as they are read.
 */
void vr_capture_cycle_set_stream(VrCaptureCycle *cycle, const char *relationship, uint64_t epoch);

/*
 * The stream of the next spool (with vr_capture_cycle_set_stream()) is uploaded while it is
 * written: its writer tells @feed (borrowed) as vr_ship_writer_set_feed() says. For that
 * spool only; a spool that fails before its stream exists leaves @feed untouched (the caller
 * fails it).
 */
void vr_capture_cycle_set_feed(VrCaptureCycle *cycle, VrSenderFeed *feed);

/*
 * Progress of a spool: called on the spooling thread after each chunk taken, with the disk
 * offset reached (extents come in ascending order), the disk's virtual size, and the bytes
 * taken so far (zero extents included).
 */
typedef void (*VrCaptureProgress)(uint64_t offset, uint64_t size, uint64_t bytes, gpointer data);

/* Call @progress (NULL: none) during the spools of @cycle that follow. */
void vr_capture_cycle_set_progress(VrCaptureCycle *cycle, VrCaptureProgress progress,
                                   gpointer data);

/* Whether the cut was taken with the guest's file systems frozen (its spools carry
 * VR_SPOOL_FLAG_APP_CONSISTENT). */
bool vr_capture_cycle_is_app_consistent(VrCaptureCycle *cycle);

/* Why a freeze was tried and failed, or NULL. (transfer none) */
const GError *vr_capture_cycle_get_freeze_error(VrCaptureCycle *cycle);

/* The unix socket of the cycle's NBD server: each disk is exported under its target name,
 * read-only, until the cycle ends. (transfer none) */
const char *vr_capture_cycle_get_nbd_socket(VrCaptureCycle *cycle);

/* Tear the cycle down now. Idempotent; errors are logged at debug level and skipped. */
void vr_capture_cycle_end(VrCaptureCycle *cycle);

/* End (if not yet) and free. NULL-safe. */
void vr_capture_cycle_free(VrCaptureCycle *cycle);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrCaptureCycle, vr_capture_cycle_free)

/*
 * The replica has durably applied @cycle: remove every bitmap of this relationship older
 * than B(@cycle) from every disk, in one transaction.
 */
bool vr_capture_ack(VrCapture *capture, const VrCaptureDisk *disks, guint n_disks, uint64_t cycle,
                    GError **error);

/*
 * Remove what a crashed agent left of this relationship: exports, the NBD server when only
 * our exports use it, jobs, fleece nodes, fd sets and files in the work directory. Our
 * bitmaps stay: which one is B(a) is the caller's knowledge (vr_capture_ack()).
 */
bool vr_capture_reconcile(VrCapture *capture, GError **error);

G_END_DECLS
