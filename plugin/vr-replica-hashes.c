/*
 * vr-replica-hashes.c: the hash list of the latest recovery point of a disk, on the replica
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <libnbd.h>

#include "vr-hashlist.h"
#include "vr-qemu-nbd.h"
#include "vr-replica-hashes.h"

/* Reads in flight and their size: 8 MiB of buffers keep qemu-nbd and the disk busy. */
#define VR_HASHES_DEPTH       8
#define VR_HASHES_READ_BLOCKS 16 /* 1 MiB */
/* One block-status request; the server may answer for less. NBD lengths are 32-bit. */
#define VR_HASHES_STATUS_SPAN   ((uint64_t)1 << 30)
#define VR_HASHES_START_TIMEOUT (30 * G_USEC_PER_SEC)
#define VR_HASHES_STOP_TIMEOUT  (10 * G_USEC_PER_SEC)

typedef struct {
    uint64_t offset;
    uint64_t length;
    bool zero;
} VrHashesExtent;

/* A run of blocks in the order of the list: zeroes (no buffer) or one read in flight. */
typedef struct {
    uint64_t offset;
    uint64_t length;
    uint8_t *buf; /* NULL for zeroes */
    int64_t cookie;
} VrHashesRun;

typedef struct {
    VrReplicaPoint point;
    char *image;
    char *tmpdir;
    char *socket;
    char *pid_file;
    VrQemuNbd nbd_server; /* qemu-nbd, pid 0 when not running */
    struct nbd_handle *nbd;
    VrHashlistWriter *writer;
    GArray *extents; /* VrHashesExtent, in order, from the block before the next one on */
    uint64_t extents_end;
    GQueue runs; /* VrHashesRun, oldest first */
    guint in_flight;
    uint8_t zero_digest[VR_HASHLIST_DIGEST_SIZE]; /* of a whole block of zeroes */
    VrReplicaHashesStats stats;
} VrHashesJob;

static void
vr_hashes_run_free(VrHashesRun *run)
{
    g_free(run->buf);
    g_free(run);
}

/*
 * Export the image read-only on a socket in a private temporary directory (a crash leaves
 * nothing in the store's directory), and wait until qemu-nbd writes its pid file: it does
 * so only once it listens.
 */
static bool
vr_hashes_nbd_start(VrHashesJob *job, GError **error)
{
    g_autoptr(GError) local = NULL;

    job->tmpdir = g_dir_make_tmp("vr-hashes-XXXXXX", &local);
    if (job->tmpdir == NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot make a directory for the socket of qemu-nbd: %s", local->message);
        return false;
    }
    job->socket = g_build_filename(job->tmpdir, "nbd.sock", NULL);
    job->pid_file = g_build_filename(job->tmpdir, "nbd.pid", NULL);
    if (strlen(job->socket) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "the socket path '%s' is too long (use a shorter TMPDIR)", job->socket);
        return false;
    }
    /* cache=none: one pass over a published image that nothing reads soon after; it does
     * not fill the page cache (docs/replica-store.md, Hash lists, has figures). */
    return vr_qemu_nbd_start(&job->nbd_server, job->image, job->image, job->socket, job->pid_file,
                             true, VR_HASHES_START_TIMEOUT, error);
}

/* Stop qemu-nbd (SIGTERM, then SIGKILL), reap it, remove its directory. Never fails: the
 * export was read-only. */
static void
vr_hashes_nbd_stop(VrHashesJob *job)
{
    vr_qemu_nbd_stop(&job->nbd_server, job->image, SIGTERM, VR_HASHES_STOP_TIMEOUT, NULL);
    if (job->tmpdir != NULL) {
        g_unlink(job->socket);
        g_unlink(job->pid_file);
        g_rmdir(job->tmpdir);
    }
}

/* A libnbd failure, with its message. */
static bool
vr_hashes_nbd_error(GError **error, const char *what, VrHashesJob *job)
{
    const char *msg = nbd_get_error();

    g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED, "%s '%s': %s", what,
                job->image, msg != NULL ? msg : g_strerror(nbd_get_errno()));
    return false;
}

static bool
vr_hashes_nbd_connect(VrHashesJob *job, GError **error)
{
    int64_t size;

    job->nbd = nbd_create();
    if (job->nbd == NULL)
        return vr_hashes_nbd_error(error, "cannot create an NBD handle for", job);
    if (nbd_add_meta_context(job->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) < 0)
        return vr_hashes_nbd_error(error, "cannot ask for block status of", job);
    if (nbd_connect_unix(job->nbd, job->socket) < 0)
        return vr_hashes_nbd_error(error, "cannot connect to the export of", job);
    size = nbd_get_size(job->nbd);
    if (size < 0)
        return vr_hashes_nbd_error(error, "cannot get the size of", job);
    if ((uint64_t)size != job->point.virtual_size) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "the export of '%s' has %" PRId64 " bytes, not the point's %" PRIu64,
                    job->image, size, job->point.virtual_size);
        return false;
    }
    if (nbd_can_meta_context(job->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "the export of '%s' has no block status (base:allocation)", job->image);
        return false;
    }
    return true;
}

/* ---- block status ----------------------------------------------------------------- */

typedef struct {
    VrHashesJob *job;
    uint64_t offset; /* where the next extent of the reply starts */
} VrHashesStatus;

/* Called by libnbd during nbd_block_status(): no nbd_* calls here. */
static int
vr_hashes_extent(void *user_data, const char *metacontext, uint64_t offset, uint32_t *entries,
                 size_t nr_entries, int *error)
{
    VrHashesStatus *status = user_data;
    VrHashesJob *job = status->job;

    if (strcmp(metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
        return 0;
    status->offset = offset;
    for (size_t i = 0; i + 1 < nr_entries; i += 2) {
        VrHashesExtent extent = { status->offset, entries[i],
                                  (entries[i + 1] & LIBNBD_STATE_ZERO) };

        /* Past the end of the disk: nothing of ours (a server should not send it). */
        if (extent.length == 0 || extent.offset >= job->point.virtual_size)
            break;
        extent.length = MIN(extent.length, job->point.virtual_size - extent.offset);
        g_array_append_val(job->extents, extent);
        status->offset += extent.length;
    }
    return 0;
}

/* Make the extents cover up to @end (at most the disk's size), asking from where they end. */
static bool
vr_hashes_extents_cover(VrHashesJob *job, uint64_t end, GError **error)
{
    while (job->extents_end < end) {
        VrHashesStatus status = { job, job->extents_end };
        uint64_t count = MIN(VR_HASHES_STATUS_SPAN, job->point.virtual_size - job->extents_end);
        nbd_extent_callback cb = { .callback = vr_hashes_extent, .user_data = &status };

        job->stats.status_calls++;
        if (nbd_block_status(job->nbd, count, job->extents_end, cb, 0) < 0)
            return vr_hashes_nbd_error(error, "cannot get the block status of", job);
        if (status.offset <= job->extents_end) {
            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                        "the export of '%s' gave no block status at offset %" PRIu64, job->image,
                        job->extents_end);
            return false;
        }
        job->extents_end = status.offset;
    }
    return true;
}

/*
 * Is the block at @offset (@length bytes) all zeroes by block status? Extents that end
 * at or before @offset are dropped: blocks are asked for in order.
 */
static bool
vr_hashes_block_is_zero(VrHashesJob *job, uint64_t offset, uint64_t length, bool *zero,
                        GError **error)
{
    guint drop = 0;

    if (!vr_hashes_extents_cover(job, offset + length, error))
        return false;
    while (drop < job->extents->len) {
        const VrHashesExtent *e = &g_array_index(job->extents, VrHashesExtent, drop);

        if (e->offset + e->length > offset)
            break;
        drop++;
    }
    if (drop > 0)
        g_array_remove_range(job->extents, 0, drop);
    *zero = true;
    for (guint i = 0; i < job->extents->len; i++) {
        const VrHashesExtent *e = &g_array_index(job->extents, VrHashesExtent, i);

        if (e->offset >= offset + length)
            break;
        if (!e->zero) {
            *zero = false;
            break;
        }
    }
    return true;
}

/* ---- hashing ---------------------------------------------------------------------- */

static uint64_t
vr_hashes_block_length(VrHashesJob *job, uint64_t offset)
{
    return MIN((uint64_t)VR_HASHLIST_BLOCK_SIZE, job->point.virtual_size - offset);
}

/* Append the entries of the run at the head of the queue (its read has completed). */
static bool
vr_hashes_emit(VrHashesJob *job, VrHashesRun *run, GError **error)
{
    uint8_t digest[VR_HASHLIST_DIGEST_SIZE];

    for (uint64_t at = 0; at < run->length; at += VR_HASHLIST_BLOCK_SIZE) {
        uint64_t len = MIN((uint64_t)VR_HASHLIST_BLOCK_SIZE, run->length - at);
        const uint8_t *entry = digest;

        if (run->buf != NULL) {
            vr_hashlist_digest(run->buf + at, len, digest);
        } else if (len == VR_HASHLIST_BLOCK_SIZE) {
            entry = job->zero_digest;
        } else {
            /* The short last block: hashed over its own length, once. */
            g_autofree uint8_t *zeroes = g_malloc0(len);

            vr_hashlist_digest(zeroes, len, digest);
        }
        if (!vr_hashlist_writer_add(job->writer, entry, error))
            return false;
    }
    return true;
}

/* Wait for the read at the head of the queue, then write out every finished run. */
static bool
vr_hashes_drain(VrHashesJob *job, bool wait, GError **error)
{
    VrHashesRun *run;

    while ((run = g_queue_peek_head(&job->runs)) != NULL) {
        if (run->buf != NULL) {
            int r;

            while ((r = nbd_aio_command_completed(job->nbd, run->cookie)) == 0) {
                if (!wait)
                    return true;
                if (nbd_poll(job->nbd, -1) < 0)
                    return vr_hashes_nbd_error(error, "cannot read", job);
            }
            job->in_flight--;
            if (r < 0) {
                const char *msg = nbd_get_error();

                g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                            "cannot read %" PRIu64 " bytes at offset %" PRIu64 " of '%s': %s",
                            run->length, run->offset, job->image,
                            msg != NULL ? msg : g_strerror(nbd_get_errno()));
                return false;
            }
        }
        g_queue_pop_head(&job->runs);
        if (!vr_hashes_emit(job, run, error)) {
            vr_hashes_run_free(run);
            return false;
        }
        vr_hashes_run_free(run);
        if (wait && job->in_flight < VR_HASHES_DEPTH)
            return true;
    }
    return true;
}

static bool
vr_hashes_compute(VrHashesJob *job, GError **error)
{
    uint64_t size = job->point.virtual_size;
    uint64_t offset = 0;
    g_autofree uint8_t *zeroes = g_malloc0(VR_HASHLIST_BLOCK_SIZE);

    vr_hashlist_digest(zeroes, VR_HASHLIST_BLOCK_SIZE, job->zero_digest);
    while (offset < size) {
        VrHashesRun *run;
        bool zero;
        uint64_t len = vr_hashes_block_length(job, offset);
        guint blocks = 1;

        if (!vr_hashes_block_is_zero(job, offset, len, &zero, error))
            return false;
        /* Extend the run with the blocks of the same kind that follow; a read is 1 MiB at
         * most, zeroes run as far as the extents already known say. */
        while (offset + len < size &&
               (!zero ? blocks < VR_HASHES_READ_BLOCKS : offset + len < job->extents_end)) {
            uint64_t next_len = vr_hashes_block_length(job, offset + len);
            bool next_zero;

            if (!vr_hashes_block_is_zero(job, offset + len, next_len, &next_zero, error))
                return false;
            if (next_zero != zero)
                break;
            len += next_len;
            blocks++;
        }
        run = g_new0(VrHashesRun, 1);
        run->offset = offset;
        run->length = len;
        if (zero) {
            job->stats.zero_bytes += len;
        } else {
            while (job->in_flight >= VR_HASHES_DEPTH) {
                if (!vr_hashes_drain(job, true, error)) {
                    vr_hashes_run_free(run);
                    return false;
                }
            }
            run->buf = g_malloc(len);
            /* One chunk (DF): an I/O error comes back as EIO (vr-qemu-nbd.h). */
            run->cookie = vr_nbd_aio_pread(job->nbd, run->buf, len, offset);
            if (run->cookie < 0) {
                vr_hashes_run_free(run);
                return vr_hashes_nbd_error(error, "cannot read", job);
            }
            job->in_flight++;
            job->stats.read_bytes += len;
            job->stats.read_requests++;
        }
        g_queue_push_tail(&job->runs, run);
        offset += len;
        /* Write out what is done without waiting, so zero runs do not pile up. */
        if (!vr_hashes_drain(job, false, error))
            return false;
    }
    while (!g_queue_is_empty(&job->runs)) {
        if (!vr_hashes_drain(job, true, error))
            return false;
    }
    return true;
}

static void
vr_hashes_job_clear(VrHashesJob *job)
{
    /* Closing retires every read still in flight before the buffers go. */
    if (job->nbd != NULL) {
        nbd_shutdown(job->nbd, 0);
        g_clear_pointer(&job->nbd, nbd_close);
    }
    g_queue_clear_full(&job->runs, (GDestroyNotify)vr_hashes_run_free);
    vr_hashes_nbd_stop(job);
    g_clear_pointer(&job->writer, vr_hashlist_writer_free);
    g_clear_pointer(&job->extents, g_array_unref);
    g_free(job->image);
    g_free(job->tmpdir);
    g_free(job->socket);
    g_free(job->pid_file);
}

bool
vr_replica_hashes_write_stats(VrReplicaStore *store, const char *path, uint64_t *cycle_out,
                              VrReplicaHashesStats *stats, GError **error)
{
    VrHashesJob job = { 0 };
    gint64 start = g_get_monotonic_time();
    guint n_points = 0;
    bool ok = false;

    vr_replica_store_points(store, &n_points);
    if (n_points == 0) {
        g_set_error_literal(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                            "no recovery point to hash");
        return false;
    }
    job.nbd_server = (VrQemuNbd)VR_QEMU_NBD_INIT;
    job.extents = g_array_new(FALSE, FALSE, sizeof(VrHashesExtent));
    g_queue_init(&job.runs);
    job.image = vr_replica_store_latest_image(store, &job.point, error);
    if (job.image == NULL)
        goto out;
    job.writer = vr_hashlist_writer_new(path, job.point.virtual_size, error);
    if (job.writer == NULL)
        goto out;
    if (!vr_hashes_nbd_start(&job, error) || !vr_hashes_nbd_connect(&job, error) ||
        !vr_hashes_compute(&job, error)) {
        g_prefix_error(error, "cannot hash cycle %" PRIu64 ": ", job.point.cycle);
        goto out;
    }
    if (!vr_hashlist_writer_finish(job.writer, error))
        goto out;
    g_debug("hashed cycle %" PRIu64 " of '%s' (%" PRIu64 " bytes) into '%s' in %" PRId64
            " ms: %" PRIu64 " bytes read in %" PRIu64 " requests, %" PRIu64 " zero bytes, %" PRIu64
            " block-status requests",
            job.point.cycle, job.image, job.point.virtual_size, path,
            (g_get_monotonic_time() - start) / 1000, job.stats.read_bytes, job.stats.read_requests,
            job.stats.zero_bytes, job.stats.status_calls);
    *cycle_out = job.point.cycle;
    if (stats != NULL)
        *stats = job.stats;
    ok = true;
out:
    vr_hashes_job_clear(&job);
    return ok;
}

bool
vr_replica_hashes_write(VrReplicaStore *store, const char *path, uint64_t *cycle_out,
                        GError **error)
{
    return vr_replica_hashes_write_stats(store, path, cycle_out, NULL, error);
}
