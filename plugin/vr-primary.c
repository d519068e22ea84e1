/*
 * vr-primary.c: one replication cycle of a libvirt domain, on the primary
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <xxhash.h>

#include "vr-capture.h"
#include "vr-endian.h"
#include "vr-export.h"
#include "vr-guest-agent.h"
#include "vr-hashlist.h"
#include "vr-primary.h"
#include "vr-qemu-nbd.h"
#include "vr-qmp-block.h"
#include "vr-qmp-channel.h"
#include "vr-qmp-client.h"
#include "vr-qmp-disk.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-ship.h"
#include "vr-spool.h"
#include "vr-wire.h"

GQuark
vr_primary_error_quark(void)
{
    return g_quark_from_static_string("vr-primary-error-quark");
}

/* How long the guest agent may take to freeze the guest's file systems. */
#define VR_PRIMARY_FREEZE_TIMEOUT_MS 10000

/* The END record at the end of every stream: its header and the stream digest. */
#define VR_PRIMARY_END_SIZE (VR_WIRE_HEADER_SIZE + VR_WIRE_DIGEST_SIZE)

/* The files a cycle makes in the work directory, by suffix; each may also end in ".part". */
static const char *const vr_primary_suffixes[] = { ".spool", ".stream", ".hashes" };

typedef struct {
    VrSenderStats stats;
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
    /* The replica had published this stream's cycle before this run sent a byte of it. */
    bool replayed;
    char *hashes;        /* the replica's hash list (resync), or NULL */
    bool resync_whole;   /* resync, but the replica cannot compare: spool what is allocated */
    VrShipTotals totals; /* of its stream, once read */
} VrPrimaryDisk;

/* Everything one run of vr_primary_run_cycle() holds, undone by vr_primary_run_clear(). */
typedef struct {
    const VrPrimaryConfig *config;
    uint64_t base;
    uint64_t target;
    VrPrimaryProgressFunc progress;
    gpointer progress_data;
    VrPrimaryProgress where; /* what @progress was told last */
    GCancellable *cancellable;

    virDomainPtr domain;
    uint8_t uuid[VIR_UUID_BUFLEN];
    VrQmpClient *client;
    VrCapture *capture;
    VrCaptureCycle *cycle;
    char *prefix;     /* "vr-<relationship>-": our files in the work directory */
    GPtrArray *nodes; /* VrQmpDiskNode, in config->disks order */
    GArray *disks;    /* VrCaptureDisk, borrowing from @nodes */
    VrPrimaryDisk *state;
    guint n_disks;
    VrExport *export; /* the initial copy goes to external media, or NULL */

    bool resync;
    bool app_consistent;
    uint64_t bytes;
    uint64_t wire_bytes;
    int64_t cut_ms;
    int64_t finished_ms;
} VrPrimaryRun;

static int64_t
vr_primary_now_ms(void)
{
    return g_get_real_time() / 1000;
}

void
vr_primary_result_clear(VrPrimaryResult *result)
{
    if (result == NULL)
        return;
    g_clear_pointer(&result->digests, g_array_unref);
    memset(result, 0, sizeof(*result));
}

/* ---- progress ------------------------------------------------------------------------- */

const char *
vr_primary_phase_name(VrPrimaryPhase phase)
{
    switch (phase) {
    case VR_PRIMARY_PHASE_CUT:
        return "cut";
    case VR_PRIMARY_PHASE_READ:
        return "read";
    case VR_PRIMARY_PHASE_SEND:
        return "send";
    }
    return "cut";
}

double
vr_primary_progress_read_fraction(const VrPrimaryProgress *progress)
{
    if (progress->phase != VR_PRIMARY_PHASE_SEND || progress->read_total == 0)
        return progress->phase == VR_PRIMARY_PHASE_SEND ? 1.0 : 0.0;
    return MIN((double)progress->read_done / (double)progress->read_total, 1.0);
}

/*
 * Each disk weighs the same, and within it each of its two passes: the read (encoded into
 * the stream as it goes) and the send take about as long as each other on a fast link
 * (docs/bench-cycle.md). The cut counts for nothing.
 */
double
vr_primary_progress_fraction(const VrPrimaryProgress *progress)
{
    double within;

    if (progress->phase == VR_PRIMARY_PHASE_CUT || progress->n_disks == 0)
        return 0.0;
    within = progress->total > 0 ? MIN((double)progress->done / (double)progress->total, 1.0) : 0.0;
    if (progress->phase == VR_PRIMARY_PHASE_SEND && progress->read_total > 0) {
        /*
         * The upload follows the read of the same disk: what is sent is a part of what is
         * written so far, itself the read's part of the stream.
         */
        double read = vr_primary_progress_read_fraction(progress);

        within = (read + read * within) / 2.0;
    } else {
        within = ((progress->phase == VR_PRIMARY_PHASE_SEND ? 1.0 : 0.0) + within) / 2.0;
    }
    return MIN(((double)progress->disk + within) / (double)progress->n_disks, 1.0);
}

static void
vr_primary_report(VrPrimaryRun *run, VrPrimaryPhase phase, guint disk, uint64_t done,
                  uint64_t total, uint64_t bytes)
{
    if (run->progress == NULL)
        return;
    run->where = (VrPrimaryProgress){
        .phase = phase,
        .disk = disk,
        .n_disks = run->n_disks,
        .done = done,
        .total = total,
        .bytes = bytes,
    };
    run->progress(&run->where, run->progress_data);
}

static void
vr_primary_on_read(uint64_t offset, uint64_t size, uint64_t bytes, gpointer data)
{
    VrPrimaryRun *run = data;

    vr_primary_report(run, VR_PRIMARY_PHASE_READ, run->where.disk, offset, size, bytes);
}

static void
vr_primary_on_send(uint64_t offset, uint64_t total, gpointer data)
{
    VrPrimaryRun *run = data;

    vr_primary_report(run, VR_PRIMARY_PHASE_SEND, run->where.disk, offset, total, offset);
}

/* ---- files ------------------------------------------------------------------------- */

/* "<workdir>/vr-<rel>-<disk>-<cycle><suffix>" (transfer full) */
static char *
vr_primary_file(VrPrimaryRun *run, guint index, const char *suffix)
{
    g_autofree char *name = g_strdup_printf("%s%s-%" PRIu64 "%s", run->prefix,
                                            run->config->disks[index], run->target, suffix);

    return g_build_filename(run->config->workdir, name, NULL);
}

/*
 * Remove the spools, streams and hash lists of this relationship from the work directory,
 * finished or ".part": this run's on every path, and a crashed predecessor's at the start.
 * One cycle of a relationship runs at a time, so they are never another run's. The capture's
 * own files (fleece images, the NBD socket) are vr_capture_*'s.
 */
static void
vr_primary_sweep(VrPrimaryRun *run)
{
    g_autoptr(GDir) dir = g_dir_open(run->config->workdir, 0, NULL);
    const char *name;

    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
        bool ours = false;

        if (!g_str_has_prefix(name, run->prefix))
            continue;
        for (guint i = 0; i < G_N_ELEMENTS(vr_primary_suffixes); i++) {
            g_autofree char *part = g_strconcat(vr_primary_suffixes[i], ".part", NULL);

            ours = ours || g_str_has_suffix(name, vr_primary_suffixes[i]) ||
                   g_str_has_suffix(name, part);
        }
        if (ours) {
            g_autofree char *path = g_build_filename(run->config->workdir, name, NULL);

            if (g_unlink(path) < 0 && errno != ENOENT)
                g_debug("cannot remove '%s': %s", path, g_strerror(errno));
        }
    }
}

/*
 * The stream digest of the stream at @path, from its END record (the last 96 bytes), which
 * must agree with what vr_ship_encode() reported in @totals and carry a valid checksum. The
 * stream is not read again for it: its records were checked as they were encoded.
 */
static bool
vr_primary_stream_digest(const char *path, const VrShipTotals *totals,
                         uint8_t digest[VR_WIRE_DIGEST_SIZE], GError **error)
{
    uint8_t end[VR_PRIMARY_END_SIZE];
    uint8_t checked[32 + VR_WIRE_DIGEST_SIZE];
    XXH128_canonical_t checksum;
    struct stat st;
    ssize_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0 || fstat(fd, &st) < 0 ||
        (st.st_size >= (off_t)sizeof(end) &&
         (got = pread(fd, end, sizeof(end), st.st_size - (off_t)sizeof(end))) < 0)) {
        int errsv = errno;

        if (fd >= 0)
            close(fd);
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv),
                    "cannot read the END record of '%s': %s", path, g_strerror(errsv));
        return false;
    }
    close(fd);
    if (got == (ssize_t)sizeof(end)) {
        /* The record checksum: XXH3-128 over header bytes 0..31 and the payload. */
        memcpy(checked, end, 32);
        memcpy(checked + 32, end + VR_WIRE_HEADER_SIZE, VR_WIRE_DIGEST_SIZE);
        XXH128_canonicalFromHash(&checksum, XXH3_128bits(checked, sizeof(checked)));
    }
    if (got != (ssize_t)sizeof(end) || vr_get_u32(end) != VR_WIRE_MAGIC ||
        end[4] != VR_WIRE_RECORD_END || end[5] != VR_WIRE_ENCODING_RAW ||
        vr_get_u32(end + 8) != VR_WIRE_DIGEST_SIZE || vr_get_u64(end + 12) != totals->records ||
        vr_get_u64(end + 20) != totals->data_bytes ||
        memcmp(end + 32, checksum.digest, sizeof(checksum.digest)) != 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "'%s' does not end with the END record it was encoded with", path);
        return false;
    }
    memcpy(digest, end + VR_WIRE_HEADER_SIZE, VR_WIRE_DIGEST_SIZE);
    return true;
}

/* ---- errors ------------------------------------------------------------------------ */

static bool vr_primary_libvirt_error(GError **error, VrPrimaryErrorCode code, const char *format,
                                     ...) G_GNUC_PRINTF(3, 4);

/* @format's message, then libvirt's last error. */
static bool
vr_primary_libvirt_error(GError **error, VrPrimaryErrorCode code, const char *format, ...)
{
    g_autofree char *what = NULL;
    va_list args;

    va_start(args, format);
    what = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, VR_PRIMARY_ERROR, code, "%s: %s", what, virGetLastErrorMessage());
    return false;
}

/* The code of a failure @cause of @run (see vr-primary.h and docs/primary.md). */
static VrPrimaryErrorCode
vr_primary_error_code(VrPrimaryRun *run, const GError *cause)
{
    if (g_error_matches(cause, G_IO_ERROR, G_IO_ERROR_CANCELLED))
        return VR_PRIMARY_ERROR_CANCELLED;
    if (cause->domain == VR_PRIMARY_ERROR)
        return (VrPrimaryErrorCode)cause->code;
    /* The base went on external media: until the replica imported it, it has no base. */
    if (run->config->base_exported &&
        g_error_matches(cause, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT))
        return VR_PRIMARY_ERROR_AWAITING_IMPORT;
    if (g_error_matches(cause, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_UNSUPPORTED) ||
        g_error_matches(cause, VR_QMP_ERROR, VR_QMP_ERROR_NOT_FOUND))
        return VR_PRIMARY_ERROR_DOMAIN;
    if (g_error_matches(cause, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED) &&
        !run->config->allow_resync)
        return VR_PRIMARY_ERROR_RESYNC_REQUIRED;
    /* 507 (the replica's storage is full) is not a refusal: the next cycle tries again and
     * replication resumes once there is room. */
    if (cause->domain == VR_SENDER_ERROR &&
        (cause->code == VR_SENDER_ERROR_REFUSED || cause->code == VR_SENDER_ERROR_CONFLICT ||
         cause->code == VR_SENDER_ERROR_CERTIFICATE))
        return VR_PRIMARY_ERROR_REFUSED;
    if (g_error_matches(cause, VR_SENDER_ERROR, VR_SENDER_ERROR_UNREACHABLE))
        return VR_PRIMARY_ERROR_UNREACHABLE;
    /* Whatever broke (QMP closed, a job gone), a domain that stopped meanwhile is the cause. */
    if (run->domain != NULL && virDomainIsActive(run->domain) == 0)
        return VR_PRIMARY_ERROR_DOMAIN;
    return VR_PRIMARY_ERROR_FAILED;
}

/* ---- the steps --------------------------------------------------------------------- */

static bool
vr_primary_cancelled(VrPrimaryRun *run, GError **error)
{
    return g_cancellable_set_error_if_cancelled(run->cancellable, error);
}

/* The domain and its UUID, which must be running (@running) or shut off (else). */
static bool
vr_primary_open_domain(VrPrimaryRun *run, bool running, GError **error)
{
    const VrPrimaryConfig *config = run->config;
    int active;

    run->domain = virDomainLookupByName(config->conn, config->domain);
    if (run->domain == NULL)
        return vr_primary_libvirt_error(error, VR_PRIMARY_ERROR_DOMAIN, "cannot find domain '%s'",
                                        config->domain);
    active = virDomainIsActive(run->domain);
    if (active < 0)
        return vr_primary_libvirt_error(error, VR_PRIMARY_ERROR_FAILED,
                                        "cannot get the state of domain '%s'", config->domain);
    if (active == 0 && running) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN, "domain '%s' is not running",
                    config->domain);
        return false;
    }
    if (active == 1 && !running) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN,
                    "domain '%s' is running: its cycles are cut through QEMU", config->domain);
        return false;
    }
    if (virDomainGetUUID(run->domain, run->uuid) < 0)
        return vr_primary_libvirt_error(error, VR_PRIMARY_ERROR_FAILED,
                                        "cannot get the UUID of domain '%s'", config->domain);
    return true;
}

/* The running domain, its QMP monitor through libvirt, and each disk's node, resolved now. */
static bool
vr_primary_connect(VrPrimaryRun *run, GError **error)
{
    const VrPrimaryConfig *config = run->config;
    g_autofree char *xml = NULL;

    if (!vr_primary_open_domain(run, true, error))
        return false;

    run->client = vr_qmp_client_new(vr_qmp_channel_libvirt_new(run->domain));
    if (!vr_qmp_client_connect(run->client, run->cancellable, error)) {
        g_prefix_error(error, "cannot reach the QMP monitor of '%s': ", config->domain);
        return false;
    }

    /* The live XML of now: node names change with snapshots and restarts. */
    xml = virDomainGetXMLDesc(run->domain, 0);
    if (xml == NULL)
        return vr_primary_libvirt_error(error, VR_PRIMARY_ERROR_FAILED,
                                        "cannot get the live XML of domain '%s'", config->domain);
    run->nodes = g_ptr_array_new_with_free_func((GDestroyNotify)vr_qmp_disk_node_free);
    run->disks = g_array_new(FALSE, TRUE, sizeof(VrCaptureDisk));
    for (guint i = 0; i < run->n_disks; i++) {
        VrQmpDiskNode *node = vr_qmp_disk_resolve(run->client, xml, config->disks[i], error);
        VrCaptureDisk disk;

        if (node == NULL)
            return false; /* the message names the disk */
        g_ptr_array_add(run->nodes, node);
        disk = (VrCaptureDisk){ node->target, node->node_name, node->qdev, node->virtual_size };
        g_array_append_val(run->disks, disk);
    }
    return true;
}

/*
 * Tracking was lost: fetch the replica's hash list of every disk's latest point, against
 * which the resync cycle spools only the blocks that differ. A disk the replica has no point
 * of, or whose size changed since, is spooled whole (what is allocated) instead.
 */
static bool
vr_primary_fetch_hashes(VrPrimaryRun *run, GError **error)
{
    for (guint i = 0; i < run->n_disks; i++) {
        const VrCaptureDisk *disk = &g_array_index(run->disks, VrCaptureDisk, i);
        VrPrimaryDisk *state = &run->state[i];
        g_autofree char *path = vr_primary_file(run, i, ".hashes");
        g_autoptr(VrHashlistReader) reader = NULL;
        g_autoptr(GError) local = NULL;
        uint64_t cycle = 0;
        uint64_t epoch = 0;

        if (vr_primary_cancelled(run, error))
            return false;
        if (!vr_sender_fetch_hashes(run->config->sender, run->config->relationship, disk->target,
                                    path, &cycle, &epoch, &local)) {
            if (g_error_matches(local, VR_SENDER_ERROR, VR_SENDER_ERROR_NOT_FOUND)) {
                g_debug("resync of '%s': the replica has no point of disk '%s' (%s): sending "
                        "it whole",
                        run->config->domain, disk->target, local->message);
                state->resync_whole = true;
                continue;
            }
            g_propagate_prefixed_error(
                error, g_steal_pointer(&local),
                "cannot fetch the replica's hash list of disk '%s': ", disk->target);
            return false;
        }
        /* cycle == target: an earlier run of this resync published the disk (a replay). */
        if (epoch > run->config->epoch || cycle > run->target) {
            g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_REFUSED,
                        "the replica's latest point of disk '%s' is cycle %" PRIu64
                        " of epoch %" PRIu64 ": a resync as cycle %" PRIu64 " of epoch %" PRIu64
                        " cannot follow it",
                        disk->target, cycle, epoch, run->target, run->config->epoch);
            return false;
        }
        reader = vr_hashlist_reader_open(path, error);
        if (reader == NULL)
            return false;
        if (vr_hashlist_reader_get_virtual_size(reader) != disk->virtual_size) {
            g_debug("resync of '%s': disk '%s' is %" PRIu64 " bytes, the replica's point %" PRIu64
                    ": sending it whole",
                    run->config->domain, disk->target, disk->virtual_size,
                    vr_hashlist_reader_get_virtual_size(reader));
            state->resync_whole = true;
            continue;
        }
        state->hashes = g_steal_pointer(&path);
    }
    return true;
}

/*
 * Before a cut from base 0 (a full copy or a resync) tracking starts afresh: every bitmap of
 * this relationship on the disks goes first. One left by an earlier relationship of the same
 * domain (disabled, then enabled again) would clash with the new cycle numbers, and one left
 * by lost tracking follows nothing any more.
 */
static bool
vr_primary_forget_bitmaps(VrPrimaryRun *run, GError **error)
{
    const VrCaptureDisk *disks = (const VrCaptureDisk *)run->disks->data;

    if (!vr_capture_ack(run->capture, disks, run->n_disks, G_MAXUINT64, error)) {
        g_prefix_error(error, "cannot remove the relationship's old bitmaps: ");
        return false;
    }
    return true;
}

/* The cut: incremental from the base; a resync when asked, or when tracking was lost and a
 * resync is allowed. */
static bool
vr_primary_cut(VrPrimaryRun *run, GError **error)
{
    const VrCaptureDisk *disks = (const VrCaptureDisk *)run->disks->data;
    g_autoptr(GError) local = NULL;

    if (run->config->resync) {
        /* Asked for (replica-resync, an initial copy "existing"): whatever the tracking says. */
        run->resync = true;
        if (!vr_primary_fetch_hashes(run, error) || vr_primary_cancelled(run, error) ||
            !vr_primary_forget_bitmaps(run, error))
            return false;
        run->cycle =
            vr_capture_cycle_begin(run->capture, disks, run->n_disks, 0, run->target, error);
        if (run->cycle == NULL) {
            g_prefix_error(error, "resync: ");
            return false;
        }
    } else {
        if (run->base == 0 && !vr_primary_forget_bitmaps(run, error))
            return false;
        run->cycle = vr_capture_cycle_begin(run->capture, disks, run->n_disks, run->base,
                                            run->target, &local);
    }
    if (run->cycle == NULL) {
        if (run->base == 0 || !run->config->allow_resync ||
            !g_error_matches(local, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED)) {
            g_propagate_error(error, g_steal_pointer(&local));
            return false;
        }
        g_debug("cycle %" PRIu64 " of '%s' becomes a resync: %s", run->target, run->config->domain,
                local->message);
        run->resync = true;
        if (!vr_primary_fetch_hashes(run, error) || vr_primary_cancelled(run, error) ||
            !vr_primary_forget_bitmaps(run, error))
            return false;
        run->cycle =
            vr_capture_cycle_begin(run->capture, disks, run->n_disks, 0, run->target, error);
        if (run->cycle == NULL) {
            g_prefix_error(error, "resync: ");
            return false;
        }
    }
    run->cut_ms = vr_primary_now_ms();
    run->app_consistent = vr_capture_cycle_is_app_consistent(run->cycle);
    if (run->config->app_consistent && !run->app_consistent) {
        const GError *why = vr_capture_cycle_get_freeze_error(run->cycle);

        /* Handled here: the cut is crash-consistent, and the result's flags say so. */
        g_info("cycle %" PRIu64 " of '%s' is crash-consistent: %s", run->target,
               run->config->domain, why != NULL ? why->message : "the guest was not frozen");
    }
    return true;
}

/* Where disk @index's wire stream goes: the export directory, or the work directory. */
static char *
vr_primary_stream_path(VrPrimaryRun *run, guint index)
{
    return run->export != NULL ? vr_export_stream_path(run->export, index)
                               : vr_primary_file(run, index, ".stream");
}

/*
 * Read disk @index of @cycle into its wire stream: the records are encoded as they are read
 * (vr_capture_cycle_set_stream()), so the stream file is the local copy the design's spool
 * is, checksummed record by record, and no second pass re-reads and re-writes it.
 */
static bool
vr_primary_read_disk_with(VrPrimaryRun *run, VrCaptureCycle *cycle, guint cycle_index, guint index,
                          VrCaptureProgress on_read, gpointer on_read_data, GError **error)
{
    VrPrimaryDisk *state = &run->state[index];
    g_autofree char *stream = vr_primary_stream_path(run, index);
    VrSpoolTotals totals;
    struct stat st;
    bool ok;

    vr_capture_cycle_set_stream(cycle, run->config->relationship, run->config->epoch);
    if (on_read != NULL)
        vr_capture_cycle_set_progress(cycle, on_read, on_read_data);
    if (run->resync && !state->resync_whole)
        ok = vr_capture_cycle_spool_resync(cycle, cycle_index, state->hashes, stream, &totals,
                                           error);
    else
        ok = vr_capture_cycle_spool(cycle, cycle_index, stream, &totals, error);
    if (!ok)
        return false;
    if (stat(stream, &st) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "cannot stat '%s': %s", stream,
                    g_strerror(errno));
        return false;
    }
    state->totals = (VrShipTotals){
        .records = totals.records,
        .data_bytes = totals.data_bytes,
        .zero_bytes = totals.zero_bytes,
        .stream_bytes = (uint64_t)st.st_size,
    };
    return vr_primary_stream_digest(stream, &state->totals, state->digest, error);
}

/* As vr_primary_read_disk_with(), reporting the read (phase read). */
static bool
vr_primary_read_disk(VrPrimaryRun *run, VrCaptureCycle *cycle, guint cycle_index, guint index,
                     GError **error)
{
    vr_primary_report(run, VR_PRIMARY_PHASE_READ, index, 0, 0, 0);
    return vr_primary_read_disk_with(run, cycle, cycle_index, index,
                                     run->progress != NULL ? vr_primary_on_read : NULL, run, error);
}

/* Read every disk's changes into its stream, then tear the fleece down at once. */
static bool
vr_primary_spool(VrPrimaryRun *run, GError **error)
{
    for (guint i = 0; i < run->n_disks; i++) {
        if (vr_primary_cancelled(run, error))
            return false;
        if (!vr_primary_read_disk(run, run->cycle, i, i, error)) {
            g_prefix_error(error, "cannot read disk '%s': ", run->config->disks[i]);
            return false;
        }
    }
    vr_capture_cycle_end(run->cycle);
    return true;
}

/* Disk @index's stream was uploaded: account for it. */
static void
vr_primary_shipped(VrPrimaryRun *run, guint index)
{
    VrPrimaryDisk *state = &run->state[index];
    const VrShipTotals *totals = &state->totals;

    /*
     * Committed before this run sent a byte: by an earlier run of this same cycle that
     * failed after the replica published it (a lost 204, another disk that failed). The
     * replica's point is that earlier cut, not this one.
     */
    state->replayed = state->stats.already_committed && state->stats.body_bytes == 0;
    run->bytes += totals->data_bytes + totals->zero_bytes;
    run->wire_bytes += totals->stream_bytes;
    g_debug("cycle %" PRIu64 " of '%s', disk '%s': %" PRIu64 " bytes in %" PRIu64
            " stream bytes, %u requests%s",
            run->target, run->config->domain, run->config->disks[index],
            totals->data_bytes + totals->zero_bytes, totals->stream_bytes, state->stats.requests,
            state->replayed ? ", published by an earlier run" : "");
}

/* ---- the read and the upload, overlapped ---------------------------------------------- */

/* What failed first in vr_primary_pipeline(): its error is the run's. */
enum {
    VR_PRIMARY_FIRST_NONE,
    VR_PRIMARY_FIRST_READ,
    VR_PRIMARY_FIRST_UPLOAD,
};

/*
 * The upload thread of vr_primary_pipeline(): each disk's stream in disk order, each while
 * the read writes it (vr_sender_upload_feed()), the next only once the replica published
 * the one before. Progress is reported from both threads, one report at a time (@lock):
 * the read's until the upload of the disk has begun, then the upload's, which carry the
 * read of the same disk as far as it got.
 */
typedef struct {
    VrPrimaryRun *run;
    VrSenderFeed **feeds; /* one per disk */
    GCancellable *reads;  /* stops the read (its writes, vr_sender_feed_check()) */
    GError *error;        /* the first failure of the upload */
    gint done;            /* the thread is finished */
    gint failed;          /* @error is set */
    gint first;           /* VR_PRIMARY_FIRST_*, set once (atomic) */
    GMutex lock;          /* the reports, and what follows */
    guint disk;           /* being uploaded (n_disks: none any more) */
    bool started;         /* a byte of disk @disk went out */
    guint reading;        /* the disk being read (n_disks: none any more) */
    uint64_t read_done;   /* its offset reached */
    uint64_t read_total;  /* its virtual size */
} VrPrimaryUploader;

/* Upload thread: the upload's progress, with the read of the same disk (docs/api.md). */
static void
vr_primary_uploader_on_send(uint64_t offset, uint64_t total, gpointer data)
{
    VrPrimaryUploader *up = data;
    VrPrimaryRun *run = up->run;
    bool complete = false;
    uint64_t written = vr_sender_feed_get_size(up->feeds[up->disk], &complete);

    g_mutex_lock(&up->lock);
    up->started = true;
    run->where = (VrPrimaryProgress){
        .phase = VR_PRIMARY_PHASE_SEND,
        .disk = up->disk,
        .n_disks = run->n_disks,
        .done = offset,
        /*
         * The stream's size, or while it is written what is known of it: the bytes written
         * so far and the END record still to come. So done reaches total only at the end.
         */
        .total = complete ? written : MAX(written, total) + VR_PRIMARY_END_SIZE,
        .bytes = offset,
        .read_done = up->reading == up->disk ? up->read_done : 0,
        .read_total = up->reading == up->disk ? up->read_total : 0,
    };
    if (run->progress != NULL)
        run->progress(&run->where, run->progress_data);
    g_mutex_unlock(&up->lock);
}

/* Reading thread: the read's progress, reported while the upload of its disk has not begun. */
static void
vr_primary_uploader_on_read(uint64_t offset, uint64_t size, uint64_t bytes, gpointer data)
{
    VrPrimaryUploader *up = data;
    VrPrimaryRun *run = up->run;

    g_mutex_lock(&up->lock);
    up->read_done = offset;
    up->read_total = size;
    if (!(up->started && up->disk < run->n_disks) && run->progress != NULL)
        vr_primary_report(run, VR_PRIMARY_PHASE_READ, up->reading, offset, size, bytes);
    g_mutex_unlock(&up->lock);
}

/* The run's cancellable fired: so does the reads' (vr_primary_pipeline()). */
static void
vr_primary_cancel_reads(GCancellable *cancellable, gpointer data)
{
    g_cancellable_cancel(data);
}

static gpointer
vr_primary_uploader_run(gpointer data)
{
    VrPrimaryUploader *up = data;
    VrPrimaryRun *run = up->run;

    for (guint i = 0; i < run->n_disks; i++) {
        g_mutex_lock(&up->lock);
        up->disk = i;
        up->started = false;
        g_mutex_unlock(&up->lock);
        if (!vr_sender_upload_feed(run->config->sender, up->feeds[i], vr_primary_uploader_on_send,
                                   up, &run->state[i].stats, run->cancellable, &up->error)) {
            g_prefix_error(&up->error, "upload of disk '%s': ", run->config->disks[i]);
            g_atomic_int_set(&up->failed, 1);
            /*
             * The root cause, unless a read failed first (its feed failed this upload); the
             * read that runs stops now rather than read the rest of its disk for nothing.
             */
            g_atomic_int_compare_and_exchange(&up->first, VR_PRIMARY_FIRST_NONE,
                                              VR_PRIMARY_FIRST_UPLOAD);
            g_cancellable_cancel(up->reads);
            break;
        }
        g_debug("cycle %" PRIu64 " of '%s': disk '%s' published", run->target, run->config->domain,
                run->config->disks[i]);
    }
    g_mutex_lock(&up->lock);
    up->disk = run->n_disks;
    g_mutex_unlock(&up->lock);
    g_atomic_int_set(&up->done, 1);
    return NULL;
}

/*
 * Read every disk into its stream, as vr_primary_spool() does, while a thread uploads each
 * stream as it is written, as vr_primary_ship() does after it: the cycle takes about the
 * longer of the two passes rather than their sum (docs/bench-cycle.md). The order of the
 * uploads is the disks' order, and the cycle is done only when the replica published every
 * disk, as before. A read that fails stops the upload before the stream's END record (the
 * replica publishes nothing of it); an upload that fails stops the read at once (its own
 * cancellable, which the run's also fires, makes the stream's next write fail). The error is
 * the first failure's: the other one follows from it.
 */
static bool
vr_primary_pipeline(VrPrimaryRun *run, GError **error)
{
    g_autofree VrSenderFeed **feeds = g_new0(VrSenderFeed *, run->n_disks);
    g_autoptr(GCancellable) reads = g_cancellable_new();
    VrPrimaryUploader up = { .run = run, .feeds = feeds, .reads = reads };
    g_autoptr(GError) local = NULL;
    GThread *thread;
    gulong chained = 0;
    bool ok = true;

    g_mutex_init(&up.lock);
    /* at once if the run is cancelled already */
    if (run->cancellable != NULL) {
        chained = g_cancellable_connect(run->cancellable, G_CALLBACK(vr_primary_cancel_reads),
                                        reads, NULL);
    }
    for (guint i = 0; i < run->n_disks; i++) {
        feeds[i] = vr_sender_feed_new();
        vr_sender_feed_set_cancellable(feeds[i], reads);
    }
    thread = g_thread_new("vr-upload", vr_primary_uploader_run, &up);
    for (guint i = 0; i < run->n_disks; i++) {
        if (g_atomic_int_get(&up.failed)) {
            ok = false;
            break;
        }
        if (vr_primary_cancelled(run, &local)) {
            ok = false;
            break;
        }
        g_mutex_lock(&up.lock);
        up.reading = i;
        up.read_done = up.read_total = 0;
        g_mutex_unlock(&up.lock);
        vr_primary_uploader_on_read(0, 0, 0, &up);
        vr_capture_cycle_set_feed(run->cycle, feeds[i]);
        ok = vr_primary_read_disk_with(run, run->cycle, i, i, vr_primary_uploader_on_read, &up,
                                       &local);
        vr_capture_cycle_set_feed(run->cycle, NULL);
        if (!ok) {
            g_prefix_error(&local, "cannot read disk '%s': ", run->config->disks[i]);
            break;
        }
    }
    if (local != NULL)
        g_atomic_int_compare_and_exchange(&up.first, VR_PRIMARY_FIRST_NONE, VR_PRIMARY_FIRST_READ);
    g_mutex_lock(&up.lock);
    up.reading = run->n_disks;
    g_mutex_unlock(&up.lock);
    if (ok) {
        vr_capture_cycle_end(run->cycle);
    } else {
        /* the upload stops before any END record it has not sent: nothing more is published */
        for (guint i = 0; i < run->n_disks; i++)
            vr_sender_feed_fail(feeds[i]);
    }
    g_thread_join(thread);
    g_cancellable_disconnect(run->cancellable, chained);
    g_mutex_clear(&up.lock);
    for (guint i = 0; i < run->n_disks; i++) {
        g_autofree char *stream = vr_primary_stream_path(run, i);

        vr_sender_feed_free(feeds[i]);
        g_unlink(stream);
    }
    /*
     * What failed first: a read (then the upload stopped because the read failed its feed),
     * or the upload (then the read that ran stopped, or the reads stopped at the next disk).
     */
    if (local != NULL && g_atomic_int_get(&up.first) == VR_PRIMARY_FIRST_READ) {
        g_clear_error(&up.error);
        g_propagate_error(error, g_steal_pointer(&local));
        return false;
    }
    if (up.error != NULL) {
        g_propagate_error(error, up.error);
        return false;
    }
    for (guint i = 0; i < run->n_disks; i++)
        vr_primary_shipped(run, i);
    run->finished_ms = vr_primary_now_ms();
    return true;
}

/* Upload each disk's stream (or leave it in the export); each file goes once it is used. */
static bool
vr_primary_ship(VrPrimaryRun *run, GError **error)
{
    for (guint i = 0; i < run->n_disks; i++) {
        VrPrimaryDisk *state = &run->state[i];
        g_autofree char *stream = vr_primary_stream_path(run, i);
        const VrShipTotals totals = state->totals;
        bool ok;

        if (vr_primary_cancelled(run, error))
            return false;
        if (run->export != NULL) {
            /* Exported: the stream stays in the export directory, nothing is sent. */
            vr_export_set_disk(run->export, i, totals.stream_bytes, state->digest);
            run->bytes += totals.data_bytes + totals.zero_bytes;
            run->wire_bytes += totals.stream_bytes;
            continue;
        }
        vr_primary_report(run, VR_PRIMARY_PHASE_SEND, i, 0, totals.stream_bytes, 0);
        ok = vr_sender_upload_file(run->config->sender, stream,
                                   run->progress != NULL ? vr_primary_on_send : NULL, run,
                                   &state->stats, run->cancellable, error);
        g_unlink(stream);
        if (!ok) {
            g_prefix_error(error, "upload of disk '%s': ", run->config->disks[i]);
            return false;
        }
        vr_primary_shipped(run, i);
    }
    run->finished_ms = vr_primary_now_ms();
    return true;
}

/*
 * A disk whose point the replica had from an earlier cut of this cycle: the writes between
 * that cut and ours are in neither that point nor our B(target) (recreated at our cut). B(base)
 * has them all: merge it into B(target), so the next cycle resends a superset. Without a base
 * (a full or resync cycle) nothing covers them: remove B(target), and the next cycle is a resync.
 * On failure B(base) stays (no ack), and a retry of this cycle comes back here.
 */
static bool
vr_primary_fix_replays(VrPrimaryRun *run, GError **error)
{
    g_autofree char *target = vr_capture_bitmap_name(run->capture, run->target);
    g_autofree char *base = vr_capture_bitmap_name(run->capture, run->base);
    uint64_t from = run->resync ? 0 : run->base;

    for (guint i = 0; i < run->n_disks; i++) {
        const VrCaptureDisk *disk = &g_array_index(run->disks, VrCaptureDisk, i);
        VrQmpBitmapRef source = { disk->node_name, base };
        bool ok;

        if (!run->state[i].replayed)
            continue;
        memset(run->state[i].digest, 0, VR_WIRE_DIGEST_SIZE);
        if (from != 0) {
            ok = vr_qmp_bitmap_merge(run->client, disk->node_name, target, &source, 1, error);
        } else {
            g_warning("cycle %" PRIu64 " of '%s': the replica published disk '%s' from an "
                      "earlier cut; its next cycle will need a resynchronization",
                      run->target, run->config->domain, disk->target);
            ok = vr_qmp_bitmap_remove(run->client, disk->node_name, target, error);
        }
        if (!ok) {
            g_prefix_error(
                error, "disk '%s' was published by an earlier run of this cycle: ", disk->target);
            return false;
        }
    }
    return true;
}

/*
 * The initial copy on external media: every stream is in the export directory; the
 * manifest (with the domain's inactive XML, as the replica gets it over the network) makes
 * the export complete. From here the cycle counts as acknowledged.
 */
static bool
vr_primary_export_commit(VrPrimaryRun *run, GError **error)
{
    const VrPrimaryConfig *config = run->config;
    g_autofree char *xml =
        virDomainGetXMLDesc(run->domain, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    char uuid[VIR_UUID_STRING_BUFLEN];

    if (xml == NULL || virDomainGetUUIDString(run->domain, uuid) < 0)
        return vr_primary_libvirt_error(error, VR_PRIMARY_ERROR_FAILED,
                                        "cannot read domain '%s' for the export", config->domain);
    if (!vr_export_commit(run->export,
                          &(VrExportInfo){
                              .primary = config->export_identity,
                              .domain_name = config->domain,
                              .domain_uuid = uuid,
                              .domain_xml = xml,
                              .epoch = config->epoch,
                              .cycle = run->target,
                              .flags = VR_WIRE_FLAG_FULL |
                                       (run->app_consistent ? VR_WIRE_FLAG_APP_CONSISTENT : 0),
                          },
                          error)) {
        g_prefix_error(error, "cannot write the export's manifest: ");
        return false;
    }
    run->finished_ms = vr_primary_now_ms();
    return true;
}

static bool
vr_primary_run(VrPrimaryRun *run, GError **error)
{
    const VrPrimaryConfig *config = run->config;
    g_autoptr(GError) local = NULL;

    if (vr_primary_cancelled(run, error) || !vr_primary_connect(run, error) ||
        vr_primary_cancelled(run, error))
        return false;

    run->capture = vr_capture_new(run->client, config->relationship, run->uuid, config->workdir,
                                  VR_CAPTURE_PASS_FDS, error);
    if (run->capture == NULL)
        return false;
    if (config->app_consistent) {
        vr_capture_set_freezer(run->capture, &vr_guest_agent_freezer, run->domain,
                               VR_PRIMARY_FREEZE_TIMEOUT_MS);
    }
    /* What a crashed predecessor left: QEMU objects and fleeces, then spools and streams. */
    if (!vr_capture_reconcile(run->capture, error)) {
        g_prefix_error(error, "cannot remove what an earlier cycle left: ");
        return false;
    }
    vr_primary_sweep(run);
    if (config->export_dir != NULL) {
        run->export = vr_export_new(config->export_dir, config->relationship, config->disks, error);
        if (run->export == NULL)
            return false;
    }

    vr_primary_report(run, VR_PRIMARY_PHASE_CUT, 0, 0, 0, 0);
    if (vr_primary_cancelled(run, error) || !vr_primary_cut(run, error))
        return false;
    if (run->export != NULL) {
        /* the initial copy on external media: nothing is uploaded */
        if (!vr_primary_spool(run, error) || !vr_primary_ship(run, error))
            return false;
    } else if (!vr_primary_pipeline(run, error)) {
        return false;
    }

    if (run->export != NULL && !vr_primary_export_commit(run, error))
        return false;
    /* Every disk is published: the cycle is done, whatever follows (no more cancellation). */
    if (!vr_primary_fix_replays(run, error))
        return false;
    if (!vr_capture_ack(run->capture, (const VrCaptureDisk *)run->disks->data, run->n_disks,
                        run->target, &local)) {
        /* Harmless: the next cycle's ack removes these bitmaps too. */
        g_warning("cycle %" PRIu64 " of '%s': %s", run->target, config->domain, local->message);
    }
    return true;
}

/* What every run (online or of a shut-off domain) starts with; vr_primary_run_clear() undoes it. */
static void
vr_primary_run_init(VrPrimaryRun *run, const VrPrimaryConfig *config, uint64_t base_cycle,
                    uint64_t target_cycle, VrPrimaryProgressFunc progress, gpointer progress_data,
                    GCancellable *cancellable)
{
    run->config = config;
    run->base = base_cycle;
    run->target = target_cycle;
    run->progress = progress;
    run->progress_data = progress_data;
    run->cancellable = cancellable;
    run->n_disks = g_strv_length((char **)config->disks);
    run->state = g_new0(VrPrimaryDisk, run->n_disks);
    run->prefix = g_strdup_printf("vr-%s-", config->relationship);
}

static void
vr_primary_run_clear(VrPrimaryRun *run)
{
    g_clear_pointer(&run->cycle, vr_capture_cycle_free);
    g_clear_pointer(&run->export, vr_export_free);
    if (run->prefix != NULL)
        vr_primary_sweep(run);
    g_clear_pointer(&run->capture, vr_capture_free);
    if (run->client != NULL)
        vr_qmp_client_close(run->client);
    g_clear_object(&run->client);
    g_clear_pointer(&run->disks, g_array_unref);
    g_clear_pointer(&run->nodes, g_ptr_array_unref);
    for (guint i = 0; run->state != NULL && i < run->n_disks; i++)
        g_free(run->state[i].hashes);
    g_clear_pointer(&run->state, g_free);
    g_clear_pointer(&run->domain, virDomainFree);
    g_clear_pointer(&run->prefix, g_free);
}

/* @result of a cycle @run did. */
static void
vr_primary_result_fill(VrPrimaryRun *run, int64_t started_ms, VrPrimaryResult *result)
{
    memset(result, 0, sizeof(*result));
    result->cycle = run->target;
    result->flags = run->resync ? VR_WIRE_FLAG_RESYNC : run->base == 0 ? VR_WIRE_FLAG_FULL : 0;
    if (run->app_consistent)
        result->flags |= VR_WIRE_FLAG_APP_CONSISTENT;
    result->bytes = run->bytes;
    result->wire_bytes = run->wire_bytes;
    result->started_ms = started_ms;
    result->cut_ms = run->cut_ms;
    result->finished_ms = run->finished_ms;
    result->digests = g_array_sized_new(FALSE, TRUE, VR_WIRE_DIGEST_SIZE, run->n_disks);
    for (guint i = 0; i < run->n_disks; i++)
        g_array_append_vals(result->digests, run->state[i].digest, 1);
}

bool
vr_primary_run_cycle(const VrPrimaryConfig *config, uint64_t base_cycle, uint64_t target_cycle,
                     VrPrimaryProgressFunc progress, gpointer progress_data,
                     GCancellable *cancellable, VrPrimaryResult *result, GError **error)
{
    g_autoptr(GMainContext) context = NULL;
    g_autoptr(GError) local = NULL;
    VrPrimaryRun run = { 0 };
    int64_t started_ms = vr_primary_now_ms();
    bool ok;

    g_return_val_if_fail(config != NULL && result != NULL, false);
    g_return_val_if_fail(config->conn != NULL && config->domain != NULL, false);
    g_return_val_if_fail(config->relationship != NULL && config->workdir != NULL, false);
    g_return_val_if_fail(config->sender != NULL && config->disks != NULL, false);
    g_return_val_if_fail(config->disks[0] != NULL, false);

    if (config->export_dir != NULL && (base_cycle != 0 || config->resync)) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED,
                    "cycle %" PRIu64 " of '%s': only a full copy is exported", target_cycle,
                    config->domain);
        return false;
    }
    if (target_cycle <= base_cycle) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED,
                    "cycle %" PRIu64 " of '%s' does not come after its base %" PRIu64, target_cycle,
                    config->domain, base_cycle);
        return false;
    }
    vr_primary_run_init(&run, config, base_cycle, target_cycle, progress, progress_data,
                        cancellable);

    /* The QMP client iterates a context of its own on this thread (vr-qmp-client.h). */
    context = g_main_context_new();
    g_main_context_push_thread_default(context);
    ok = vr_primary_run(&run, &local);
    if (!ok) {
        g_set_error(error, VR_PRIMARY_ERROR, vr_primary_error_code(&run, local),
                    "cycle %" PRIu64 " of '%s': %s", target_cycle, config->domain, local->message);
    } else {
        vr_primary_result_fill(&run, started_ms, result);
    }
    vr_primary_run_clear(&run);
    /* Deliveries from libvirt's event thread still queued for the closed client. */
    while (g_main_context_iteration(context, FALSE))
        ;
    g_main_context_pop_thread_default(context);
    return ok;
}

/* ---- the final cycle of a shut-off domain ------------------------------------------ */

/* How long qemu-nbd may take to export a closed image, and to exit. */
#define VR_PRIMARY_QEMU_NBD_TIMEOUT (10 * G_USEC_PER_SEC)

/* One disk's closed image, for the final cycle. */
typedef struct {
    char *image;         /* the qcow2 file, from the inactive XML */
    uint64_t size;       /* its virtual size (qemu-img info) */
    struct stat before;  /* the image when the cycle began (see vr_primary_offline_unchanged) */
    bool has_target;     /* B(target) is in the image: an earlier try of this cycle left it */
    GPtrArray *released; /* our bitmaps before B(target), removed once it is added */
} VrPrimaryImage;

static void
vr_primary_images_free(VrPrimaryImage *images, guint n)
{
    for (guint i = 0; images != NULL && i < n; i++) {
        g_free(images[i].image);
        g_clear_pointer(&images[i].released, g_ptr_array_unref);
    }
    g_free(images);
}

/* The source file of disk @target in the inactive domain XML @xml: it must be a qcow2 file. */
static char *
vr_primary_offline_source(const char *xml, const char *target, GError **error)
{
    xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                                  XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlNodePtr root = doc != NULL ? xmlDocGetRootElement(doc) : NULL;
    char *source = NULL;
    bool found = false;

    for (xmlNodePtr devices = root != NULL ? root->children : NULL; devices != NULL;
         devices = devices->next) {
        if (devices->type != XML_ELEMENT_NODE || !xmlStrEqual(devices->name, BAD_CAST "devices"))
            continue;
        for (xmlNodePtr disk = devices->children; disk != NULL && !found; disk = disk->next) {
            g_autofree char *type = NULL;
            g_autofree char *format = NULL;
            g_autofree char *file = NULL;
            g_autofree char *dev = NULL;

            if (disk->type != XML_ELEMENT_NODE || !xmlStrEqual(disk->name, BAD_CAST "disk"))
                continue;
            for (xmlNodePtr c = disk->children; c != NULL; c = c->next) {
                xmlChar *v;

                if (c->type != XML_ELEMENT_NODE)
                    continue;
                if (xmlStrEqual(c->name, BAD_CAST "target") &&
                    (v = xmlGetProp(c, BAD_CAST "dev")) != NULL) {
                    g_free(dev);
                    dev = g_strdup((const char *)v);
                    xmlFree(v);
                } else if (xmlStrEqual(c->name, BAD_CAST "driver") &&
                           (v = xmlGetProp(c, BAD_CAST "type")) != NULL) {
                    g_free(format);
                    format = g_strdup((const char *)v);
                    xmlFree(v);
                } else if (xmlStrEqual(c->name, BAD_CAST "source") &&
                           (v = xmlGetProp(c, BAD_CAST "file")) != NULL) {
                    g_free(file);
                    file = g_strdup((const char *)v);
                    xmlFree(v);
                }
            }
            if (g_strcmp0(dev, target) != 0)
                continue;
            found = true;
            {
                xmlChar *v = xmlGetProp(disk, BAD_CAST "type");

                type = g_strdup(v != NULL ? (const char *)v : "file");
                xmlFree(v);
            }
            if (g_strcmp0(type, "file") != 0 || file == NULL) {
                g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN,
                            "disk '%s' is not an image file (type '%s')", target,
                            type != NULL ? type : "?");
            } else if (g_strcmp0(format, "qcow2") != 0) {
                g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN,
                            "disk '%s' is '%s', not qcow2", target,
                            format != NULL ? format : "raw");
            } else {
                source = g_steal_pointer(&file);
            }
        }
    }
    if (doc == NULL) {
        g_set_error_literal(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED,
                            "the inactive domain XML does not parse");
    } else if (!found) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN, "the domain has no disk '%s'",
                    target);
    }
    if (doc != NULL)
        xmlFreeDoc(doc);
    return source;
}

/* Run qemu-img with @argv; its stdout in *@out when @out is not NULL. */
static bool
vr_primary_qemu_img(const char *const *argv, char **out, GError **error)
{
    g_autofree char *stdout_text = NULL;
    g_autofree char *stderr_text = NULL;
    g_autoptr(GError) local = NULL;
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, vr_qemu_child_setup,
                      GINT_TO_POINTER(getpid()), &stdout_text, &stderr_text, &status, &local)) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED, "cannot run qemu-img: %s",
                    local->message);
        return false;
    }
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_autofree char *line = vr_qemu_one_line(stderr_text);

        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED, "qemu-img %s: %s", argv[1],
                    line);
        return false;
    }
    if (out != NULL)
        *out = g_steal_pointer(&stdout_text);
    return true;
}

/* The cycle of one of our bitmap names, or 0 when @name is not ours (vr-capture.h names). */
static uint64_t
vr_primary_bitmap_cycle(VrPrimaryRun *run, const char *name)
{
    guint64 cycle = 0;

    if (name == NULL || !g_str_has_prefix(name, run->prefix))
        return 0;
    name += strlen(run->prefix);
    if (strlen(name) != 10 || !g_ascii_string_to_unsigned(name, 10, 1, G_MAXUINT64, &cycle, NULL))
        return 0;
    return cycle;
}

static bool vr_primary_offline_resync(GError **error, const char *target, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static bool
vr_primary_offline_resync(GError **error, const char *target, const char *format, ...)
{
    g_autofree char *why = NULL;
    va_list args;

    va_start(args, format);
    why = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_RESYNC_REQUIRED,
                "disk '%s' needs a resynchronization: %s", target, why);
    return false;
}

/*
 * The health check of a closed image, as vr_capture_check() does it online: B(base) is in
 * the image, recording ("auto"), not "in-use" (a bitmap QEMU loaded stays "in-use" in the
 * file until QEMU closes the image cleanly: after a kill -9 or a crash it stays so, and
 * QEMU would load it as inconsistent), with our granularity. qemu-img info runs with
 * --force-share: it takes no lock, so it never holds up a start of the domain.
 */
static bool
vr_primary_offline_inspect(VrPrimaryRun *run, guint index, VrPrimaryImage *img, GError **error)
{
    const char *target = run->config->disks[index];
    const char *argv[] = { "qemu-img", "info",  "--output=json", "--force-share",
                           "-f",       "qcow2", img->image,      NULL };
    g_autofree char *text = NULL;
    g_autofree char *base = vr_capture_bitmap_name(run->capture, run->base);
    g_autoptr(json_object) info = NULL;
    json_object *data;
    json_object *list;
    json_object *found = NULL;
    json_object *flags;
    bool in_use = false;
    bool recording = false;
    uint64_t granularity = 0;

    if (!vr_primary_qemu_img(argv, &text, error)) {
        g_prefix_error(error, "disk '%s': ", target);
        return false;
    }
    info = json_tokener_parse(text);
    if (info == NULL || !vr_json_get_uint64(info, "virtual-size", &img->size)) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED,
                    "disk '%s': qemu-img info gave no virtual size for '%s'", target, img->image);
        return false;
    }
    data = vr_json_get_object(vr_json_get_object(info, "format-specific"), "data");
    if (vr_json_get_bool(data, "corrupt", false)) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED,
                    "disk '%s': image '%s' is marked corrupt", target, img->image);
        return false;
    }
    list = vr_json_get_array(data, "bitmaps");
    img->released = g_ptr_array_new_with_free_func(g_free);
    for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
        json_object *b = json_object_array_get_idx(list, i);
        const char *name = vr_json_get_string(b, "name");
        uint64_t cycle = vr_primary_bitmap_cycle(run, name);

        if (cycle == run->base)
            found = b;
        if (cycle == run->target)
            img->has_target = true;
        else if (cycle != 0 && cycle < run->target)
            g_ptr_array_add(img->released, g_strdup(name));
    }
    if (found == NULL) {
        return vr_primary_offline_resync(error, target,
                                         "bitmap '%s' is missing from '%s' (QEMU was killed or "
                                         "crashed before it closed the image, or the image was "
                                         "replaced)",
                                         base, img->image);
    }
    flags = vr_json_get_array(found, "flags");
    for (size_t i = 0; flags != NULL && i < json_object_array_length(flags); i++) {
        const char *flag = json_object_get_string(json_object_array_get_idx(flags, i));

        in_use = in_use || g_strcmp0(flag, "in-use") == 0;
        recording = recording || g_strcmp0(flag, "auto") == 0;
    }
    vr_json_get_uint64(found, "granularity", &granularity);
    if (in_use) {
        return vr_primary_offline_resync(error, target,
                                         "bitmap '%s' is in use in '%s' (QEMU did not close the "
                                         "image cleanly: killed or crashed)",
                                         base, img->image);
    }
    if (!recording)
        return vr_primary_offline_resync(error, target, "bitmap '%s' is not recording", base);
    if (granularity != 65536) {
        return vr_primary_offline_resync(
            error, target, "bitmap '%s' has granularity %" PRIu64 ", not 65536", base, granularity);
    }
    return true;
}

/*
 * Whether @a and @b are the same file, not written since. Not the change time: libvirt
 * gives the image back to its owner (chown) after the domain stopped, maybe while the final
 * cycle already reads it, and labels it again at a start, before QEMU opens it.
 */
static bool
vr_primary_stat_same(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

/*
 * The domain is still shut off and no image changed since the cycle began. QEMU rewrites
 * the header of an image with persistent bitmaps as soon as it opens it (their "in-use"
 * flag), so a domain that started, even for a moment, changed its images' mtime (verified
 * with QEMU 7.2: an open and a quit without a write do); so does any other writer. Fails with
 * VR_PRIMARY_ERROR_CANCELLED.
 */
static bool
vr_primary_offline_unchanged(VrPrimaryRun *run, const VrPrimaryImage *images, GError **error)
{
    if (virDomainIsActive(run->domain) != 0) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED,
                    "domain '%s' started during its final cycle", run->config->domain);
        return false;
    }
    for (guint i = 0; i < run->n_disks; i++) {
        struct stat now;

        if (stat(images[i].image, &now) < 0 || !vr_primary_stat_same(&now, &images[i].before)) {
            g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED,
                        "image '%s' of disk '%s' changed during the final cycle (the domain "
                        "started, or another program wrote it)",
                        images[i].image, run->config->disks[i]);
            return false;
        }
    }
    return true;
}

/* The shut-off domain, its UUID, and each disk's image, stat and health. */
static bool
vr_primary_offline_open(VrPrimaryRun *run, VrPrimaryImage *images, GError **error)
{
    const VrPrimaryConfig *config = run->config;
    g_autofree char *xml = NULL;

    if (!vr_primary_open_domain(run, false, error))
        return false;
    xml = virDomainGetXMLDesc(run->domain, VIR_DOMAIN_XML_INACTIVE);
    if (xml == NULL)
        return vr_primary_libvirt_error(error, VR_PRIMARY_ERROR_FAILED,
                                        "cannot get the XML of domain '%s'", config->domain);
    run->capture = vr_capture_new(NULL, config->relationship, run->uuid, config->workdir, 0, error);
    if (run->capture == NULL)
        return false;
    for (guint i = 0; i < run->n_disks; i++) {
        VrPrimaryImage *img = &images[i];

        img->image = vr_primary_offline_source(xml, config->disks[i], error);
        if (img->image == NULL)
            return false;
        /* Before the health check: a start after this shows as a change. */
        if (stat(img->image, &img->before) < 0) {
            int errsv = errno;

            g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN,
                        "cannot find image '%s' of disk '%s': %s", img->image, config->disks[i],
                        g_strerror(errsv));
            return false;
        }
        if (!vr_primary_offline_inspect(run, i, img, error))
            return false;
        /* The point in time this cycle holds: when QEMU last wrote the images (closed them). */
        run->cut_ms = MAX(run->cut_ms, (int64_t)img->before.st_mtim.tv_sec * 1000 +
                                           img->before.st_mtim.tv_nsec / 1000000);
    }
    return true;
}

/*
 * Read every disk's changes since B(base) into its stream, with the same reader as a cut
 * (vr_primary_read_disk() of an attached cycle), from qemu-nbd serving the closed image
 * with B(base) (vr_qemu_nbd_start_shared(): no lock, so a start is never refused; the reads
 * are checked afterwards instead).
 */
static bool
vr_primary_offline_read(VrPrimaryRun *run, VrPrimaryImage *images, GError **error)
{
    g_autofree char *bitmap = vr_capture_bitmap_name(run->capture, run->base);
    g_autofree char *socket_name = g_strconcat(run->prefix, "offline.sock", NULL);
    g_autofree char *pid_name = g_strconcat(run->prefix, "offline.pid", NULL);
    g_autofree char *socket = g_build_filename(run->config->workdir, socket_name, NULL);
    g_autofree char *pid_file = g_build_filename(run->config->workdir, pid_name, NULL);

    for (guint i = 0; i < run->n_disks; i++) {
        const char *target = run->config->disks[i];
        VrCaptureDisk disk = { target, NULL, NULL, images[i].size };
        VrQemuNbd nbd = VR_QEMU_NBD_INIT;
        g_autoptr(VrCaptureCycle) cycle = NULL;
        bool ok;

        if (vr_primary_cancelled(run, error))
            return false;
        g_unlink(socket);
        g_unlink(pid_file);
        if (!vr_qemu_nbd_start_shared(&nbd, images[i].image, target, bitmap, socket, pid_file,
                                      VR_PRIMARY_QEMU_NBD_TIMEOUT, error)) {
            g_prefix_error(error, "cannot export disk '%s': ", target);
            return false;
        }
        cycle =
            vr_capture_cycle_attach(run->capture, &disk, 1, run->base, run->target, socket, error);
        ok = cycle != NULL && vr_primary_read_disk(run, cycle, 0, i, error);
        g_clear_pointer(&cycle, vr_capture_cycle_free);
        ok = vr_qemu_nbd_stop(&nbd, images[i].image, SIGTERM, VR_PRIMARY_QEMU_NBD_TIMEOUT,
                              ok ? error : NULL) &&
             ok;
        g_unlink(socket);
        g_unlink(pid_file);
        if (!ok) {
            g_prefix_error(error, "cannot read disk '%s': ", target);
            return false;
        }
    }
    return true;
}

/*
 * Every disk is published: the images' bitmaps move on as vr_capture_ack() moves them
 * online. B(target) is added to each image (empty: the image is what the replica now holds;
 * persistent and recording, so QEMU tracks from it when the domain starts), then the older
 * ones go. A disk the replica had from an earlier try of this cycle gets B(base) merged into
 * B(target) (the writes since that try are in B(base) only), as vr_primary_fix_replays()
 * does online. qemu-img bitmap needs the image's write lock: right before each call the
 * domain must still be off and the images untouched; a start that comes in between finds
 * the lock taken for the few milliseconds qemu-img holds it (docs/primary.md, "The final
 * cycle"), and a qemu-img that finds QEMU's lock fails the step cleanly.
 */
static bool
vr_primary_offline_advance(VrPrimaryRun *run, VrPrimaryImage *images, GError **error)
{
    g_autofree char *target = vr_capture_bitmap_name(run->capture, run->target);
    g_autofree char *base = vr_capture_bitmap_name(run->capture, run->base);

    for (guint i = 0; i < run->n_disks; i++) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        VrPrimaryImage *img = &images[i];

        if (vr_primary_cancelled(run, error) || !vr_primary_offline_unchanged(run, images, error))
            return false;
        g_ptr_array_add(argv, "qemu-img");
        g_ptr_array_add(argv, "bitmap");
        if (img->has_target)
            g_ptr_array_add(argv, "--remove"); /* an earlier try's: it follows nothing */
        g_ptr_array_add(argv, "--add");
        g_ptr_array_add(argv, "--granularity=65536");
        if (run->state[i].replayed) {
            g_ptr_array_add(argv, "--merge");
            g_ptr_array_add(argv, base);
            memset(run->state[i].digest, 0, VR_WIRE_DIGEST_SIZE);
        }
        g_ptr_array_add(argv, "-f");
        g_ptr_array_add(argv, "qcow2");
        g_ptr_array_add(argv, img->image);
        g_ptr_array_add(argv, target);
        g_ptr_array_add(argv, NULL);
        if (!vr_primary_qemu_img((const char *const *)argv->pdata, NULL, error)) {
            g_prefix_error(error, "cannot add bitmap '%s' to disk '%s': ", target,
                           run->config->disks[i]);
            return false;
        }
        /* Our own write: the next checks compare with the image as it is now. */
        if (stat(img->image, &img->before) < 0)
            memset(&img->before, 0, sizeof(img->before));
    }
    for (guint i = 0; i < run->n_disks; i++) {
        for (guint j = 0; j < images[i].released->len; j++) {
            const char *name = g_ptr_array_index(images[i].released, j);
            const char *argv[] = { "qemu-img", "bitmap",        "--remove", "-f",
                                   "qcow2",    images[i].image, name,       NULL };
            g_autoptr(GError) local = NULL;

            /* Harmless when it fails: the next cycle's acknowledgement removes it too. */
            if (!vr_primary_offline_unchanged(run, images, &local) ||
                !vr_primary_qemu_img(argv, NULL, &local)) {
                g_warning("cycle %" PRIu64 " of '%s': bitmap '%s' of disk '%s' stays: %s",
                          run->target, run->config->domain, name, run->config->disks[i],
                          local->message);
                return true;
            }
            if (stat(images[i].image, &images[i].before) < 0)
                memset(&images[i].before, 0, sizeof(images[i].before));
        }
    }
    return true;
}

static bool
vr_primary_offline(VrPrimaryRun *run, VrPrimaryImage *images, GError **error)
{
    if (vr_primary_cancelled(run, error) || !vr_primary_offline_open(run, images, error))
        return false;
    vr_primary_sweep(run);
    if (!vr_primary_offline_read(run, images, error))
        return false;
    /* What was read is the images as QEMU left them only if nothing opened them since. */
    if (!vr_primary_offline_unchanged(run, images, error)) {
        g_prefix_error(error, "nothing sent: ");
        return false;
    }
    if (!vr_primary_ship(run, error))
        return false;
    if (!vr_primary_offline_advance(run, images, error)) {
        g_prefix_error(error, "published, but the bitmaps stay at cycle %" PRIu64 ": ", run->base);
        return false;
    }
    return true;
}

bool
vr_primary_run_offline_cycle(const VrPrimaryConfig *config, uint64_t base_cycle,
                             uint64_t target_cycle, VrPrimaryProgressFunc progress,
                             gpointer progress_data, GCancellable *cancellable,
                             VrPrimaryResult *result, GError **error)
{
    g_autoptr(GError) local = NULL;
    VrPrimaryRun run = { 0 };
    VrPrimaryImage *images;
    int64_t started_ms = vr_primary_now_ms();
    bool ok;

    g_return_val_if_fail(config != NULL && result != NULL, false);
    g_return_val_if_fail(config->conn != NULL && config->domain != NULL, false);
    g_return_val_if_fail(config->relationship != NULL && config->workdir != NULL, false);
    g_return_val_if_fail(config->sender != NULL && config->disks != NULL, false);
    g_return_val_if_fail(config->disks[0] != NULL, false);

    if (base_cycle == 0 || target_cycle <= base_cycle) {
        g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED,
                    "the final cycle %" PRIu64 " of '%s' needs a base before it (a shut-off "
                    "domain has no full or resync cycle)",
                    target_cycle, config->domain);
        return false;
    }
    vr_primary_run_init(&run, config, base_cycle, target_cycle, progress, progress_data,
                        cancellable);
    images = g_new0(VrPrimaryImage, run.n_disks);

    vr_primary_report(&run, VR_PRIMARY_PHASE_CUT, 0, 0, 0, 0);
    ok = vr_primary_offline(&run, images, &local);
    if (!ok) {
        VrPrimaryErrorCode code;

        /* A domain that started meanwhile explains whatever failed (an image "in-use", a
         * lock): the final cycle was cut short, the tracking is not lost. */
        if (run.domain != NULL && virDomainIsActive(run.domain) == 1) {
            code = VR_PRIMARY_ERROR_CANCELLED;
        } else {
            /* Shut off is this domain's normal state here, not a cause. */
            g_clear_pointer(&run.domain, virDomainFree);
            code = vr_primary_error_code(&run, local);
        }
        g_set_error(error, VR_PRIMARY_ERROR, code, "final cycle %" PRIu64 " of '%s': %s",
                    target_cycle, config->domain, local->message);
    } else {
        vr_primary_result_fill(&run, started_ms, result);
    }
    vr_primary_images_free(images, run.n_disks);
    vr_primary_run_clear(&run);
    return ok;
}
