/*
 * vr-primary.h: one replication cycle of a libvirt domain, on the primary
 *
 * Everything one cycle does, start to end, synchronously on the calling thread but for the
 * uploads, which run in a thread of their own beside the reads (the daemon runs a cycle in a
 * worker thread per relationship, one cycle at a time):
 *
 *   1. connect to the domain's QMP monitor through libvirt (vr_qmp_channel_libvirt_new),
 *      resolve every replicated disk (its target dev) to its QEMU node from the live XML
 *      (vr_qmp_disk_resolve), never cached across cycles;
 *   2. cut: vr_capture_cycle_begin() with base @base_cycle (0: FULL) and the new cycle
 *      @target_cycle; a health check that says the tracking was lost (RESYNC_REQUIRED)
 *      turns the cycle into a resynchronization when @allow_resync: fetch the replica's
 *      hash list of every disk (vr_sender_fetch_hashes) and cut with base 0, reading
 *      only the blocks that differ (vr_capture_cycle_spool_resync);
 *   3. read every disk into its wire stream in @workdir, the records encoded as they are
 *      read (vr_capture_cycle_set_stream(): the stream is the cycle's local copy, with
 *      the spool's rules, and no second pass re-encodes it), then end the cycle at once
 *      (fleece torn down);
 *   4. upload each stream (vr_sender), in disk order, while step 3 writes it (an upload
 *      thread follows each stream file as it grows: vr_sender_upload_feed()); only when the
 *      replica acknowledged every disk (204: published) is the cycle done;
 *      with @export_dir (the initial copy on external media, vr-export.h) the streams and a
 *      manifest are written there instead, and the cycle is done once the manifest is;
 *   5. acknowledge: vr_capture_ack() removes the bitmaps older than B(@target_cycle);
 *   6. remove the cycle's streams.
 *
 * A failure at any step leaves B(@base_cycle) in place and removes the cycle's files: the
 * next cycle is cut from the same base again (a superset). An upload that the replica
 * answers as already published counts as acknowledged (a replay after a lost 204).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <libvirt/libvirt.h>

#include "vr-sender.h"

G_BEGIN_DECLS

#define VR_PRIMARY_ERROR (vr_primary_error_quark())
GQuark vr_primary_error_quark(void);

typedef enum {
    VR_PRIMARY_ERROR_FAILED,          /* any step failed: the message names it */
    VR_PRIMARY_ERROR_RESYNC_REQUIRED, /* tracking lost and @allow_resync was false */
    VR_PRIMARY_ERROR_DOMAIN,          /* the domain is gone, not running, or a disk is
                                       * not replicable (not qcow2, no such target) */
    VR_PRIMARY_ERROR_REFUSED,         /* the replica refused (403, 409 stale epoch, a
                                       * certificate): retrying will not help by itself */
    VR_PRIMARY_ERROR_UNREACHABLE,     /* the replica could not be reached (every attempt
                                       * failed): the cycle is missed, the next one retries */
    VR_PRIMARY_ERROR_CANCELLED,       /* @cancellable was cancelled (shutdown) */
    VR_PRIMARY_ERROR_AWAITING_IMPORT, /* @base_exported, and the replica answered 409: it has
                                       * not imported the exported base yet */
} VrPrimaryErrorCode;

typedef struct {
    virConnectPtr conn;       /* borrowed; thread-safe as libvirt connections are */
    const char *domain;       /* the domain's name */
    const char *relationship; /* [a-z0-9]{1,12} (QEMU node name limits, vr-capture.h) */
    uint64_t epoch;           /* the relationship's epoch */
    const char *const *disks; /* the target devs to replicate ("vda", ...), NULL-terminated */
    const char *workdir;      /* local storage for fleece images, spools and streams */
    VrSender *sender;         /* borrowed: the replica, with its TLS policy and limits */
    bool allow_resync;        /* a lost tracking becomes a hash resync, not an error */
    bool resync;              /* resynchronize now, whatever the tracking says: @base_cycle
                               * is ignored; the cycle is cut with base 0 and sends only the
                               * blocks that differ from the replica's hash lists (replica-
                               * resync, or the initial copy "existing" on the replica) */
    bool app_consistent;      /* freeze the guest's file systems around the cut (agent) */
    /*
     * The initial copy on external media (vr-export.h): with base 0, the cycle's streams
     * and a manifest are written to @export_dir instead of being uploaded, and the cycle
     * ends as if the replica had acknowledged it (its bitmaps advance). @export_identity
     * is this host's certificate identity, for the manifest.
     */
    const char *export_dir;
    const char *export_identity;
    bool base_exported; /* the base cycle was exported: the replica may not have it yet */
} VrPrimaryConfig;

/* What one cycle did, for the state database and the status. */
typedef struct {
    uint64_t cycle;      /* the target cycle that was acknowledged */
    uint32_t flags;      /* VrWireFlags: FULL, RESYNC, APP_CONSISTENT */
    uint64_t bytes;      /* disk bytes carried, every disk (DATA and ZERO) */
    uint64_t wire_bytes; /* stream bytes sent (after compression) */
    int64_t started_ms;  /* wall clock: before the cut */
    int64_t cut_ms;      /* the cut (the point in time the cycle holds) */
    int64_t finished_ms; /* the last acknowledgement */
    /* For each disk, in @disks order: the stream digest the replica verified (it names the
     * point's contents with the chain: vr_replica_point_chain()). */
    GArray *digests; /* of uint8_t[32]; free with g_array_unref */
} VrPrimaryResult;

void vr_primary_result_clear(VrPrimaryResult *result);

/*
 * Where a cycle is: each disk is read (into its wire stream) and sent; the upload of a disk
 * follows its read as the stream is written, so SEND may come while the disk is still read.
 */
typedef enum {
    VR_PRIMARY_PHASE_CUT,  /* connect, check the tracking, fetch hash lists, cut */
    VR_PRIMARY_PHASE_READ, /* read disk @disk into its wire stream */
    VR_PRIMARY_PHASE_SEND, /* upload that stream */
} VrPrimaryPhase;

typedef struct {
    VrPrimaryPhase phase;
    guint disk; /* index in the config's disks */
    guint n_disks;
    uint64_t done;  /* READ: the disk offset reached; SEND: stream bytes sent */
    uint64_t total; /* READ: the disk's virtual size; SEND: the stream's size */
    uint64_t bytes; /* READ: disk bytes taken so far (zeroes too); SEND: as @done */
    /*
     * SEND while the same disk is still being read (the upload follows the read): the read's
     * disk offset reached and the disk's virtual size; @total is then the stream written so
     * far. Both 0 once that read is done (or when nothing overlaps).
     */
    uint64_t read_done;
    uint64_t read_total;
} VrPrimaryProgress;

/*
 * Called often (after each chunk): keep it cheap. From the cycle's thread, or during the
 * reads and uploads of an online cycle from its upload thread too, never two at a time.
 */
typedef void (*VrPrimaryProgressFunc)(const VrPrimaryProgress *progress, gpointer user_data);

/* The fraction of the whole cycle that @progress stands for, in [0, 1]. */
double vr_primary_progress_fraction(const VrPrimaryProgress *progress);
/*
 * In phase send, how far the read of the same disk is, in [0, 1] (1: read, or not followed);
 * 0 in the other phases.
 */
double vr_primary_progress_read_fraction(const VrPrimaryProgress *progress);

/* "cut", "read", "send" (docs/api.md). */
const char *vr_primary_phase_name(VrPrimaryPhase phase);

/*
 * Run cycle @target_cycle of @config's domain from @base_cycle (0: a full copy of what is
 * allocated). @progress (may be NULL) is called from this thread as the cycle goes on.
 * On success @result is filled (clear it with vr_primary_result_clear()).
 */
bool vr_primary_run_cycle(const VrPrimaryConfig *config, uint64_t base_cycle, uint64_t target_cycle,
                          VrPrimaryProgressFunc progress, gpointer progress_data,
                          GCancellable *cancellable, VrPrimaryResult *result, GError **error);

/*
 * The final cycle of a domain that was shut off (docs/primary.md, "The final cycle"): cycle
 * @target_cycle from @base_cycle (> 0: it needs the last acknowledged cycle) read from the
 * closed qcow2 images themselves, so that the replica holds the disks as the domain left
 * them. Without QEMU:
 *
 *   1. the domain must be shut off; each disk's image from its inactive XML (a qcow2 file);
 *      qemu-img info --force-share checks B(@base_cycle) in the image as the online health
 *      check does: present, recording, not "in-use" (QEMU killed or crashed: the image was
 *      not closed cleanly) -> VR_PRIMARY_ERROR_RESYNC_REQUIRED;
 *   2. each image is exported read-only by qemu-nbd with B(@base_cycle) and no lock
 *      (vr_qemu_nbd_start_shared()), its dirty extents spooled by the reader of online cycles;
 *   3. the domain must still be off and no image written since step 1 (their mtime: QEMU
 *      rewrites the header at once when it opens them): else nothing is sent
 *      (VR_PRIMARY_ERROR_CANCELLED);
 *   4. ship, as online;
 *   5. with every disk published, B(@target_cycle) is added to each image (empty,
 *      persistent, recording: qemu-img bitmap) and the older bitmaps removed, so the next
 *      online cycle builds on @target_cycle. Only with the domain still off and the images
 *      untouched; otherwise the cycle fails (CANCELLED when the domain started) with
 *      B(@base_cycle) in place.
 *
 * When the cycle fails after the replica published it (step 5), the next cycle, online, is
 * @target_cycle from @base_cycle again: the replica answers it as already published, and
 * that cycle merges B(@base_cycle) into its B(@target_cycle) (vr_primary_fix_replays), so
 * the one after resends a superset of everything since. Deltas carry absolute contents.
 * @cancellable cancels it at any step up to the bitmaps of step 5 (the domain is starting).
 */
bool vr_primary_run_offline_cycle(const VrPrimaryConfig *config, uint64_t base_cycle,
                                  uint64_t target_cycle, VrPrimaryProgressFunc progress,
                                  gpointer progress_data, GCancellable *cancellable,
                                  VrPrimaryResult *result, GError **error);

G_END_DECLS
