/*
 * vr-capture.c: change capture on the primary
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <libnbd.h>

#include "vr-capture.h"

#include "vr-ship.h"
#include "vr-hashlist.h"
#include "vr-qemu-nbd.h"
#include "vr-qmp-block.h"
#include "vr-qmp-disk.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-transaction.h"

GQuark
vr_capture_error_quark(void)
{
    return g_quark_from_static_string("vr-capture-error-quark");
}

#define VR_CAPTURE_GRANULARITY   65536
#define VR_CAPTURE_DEFAULT_DEPTH 8
#define VR_CAPTURE_DEFAULT_CHUNK (1024 * 1024)
#define VR_CAPTURE_EVENT_TIMEOUT 10000 /* ms, for job and export teardown events */
#define VR_CAPTURE_FROZEN        "frozen"
/* QEMU node names have at most 31 characters; the longest of ours is the fleece's protocol
 * node "vr-<rel>-fl-<target>-file". */
#define VR_CAPTURE_NODE_NAME_MAX 31
#define VR_CAPTURE_MIN_FLEECE    (1024 * 1024)
/* The extent map is read a window at a time (a multiple of every block size used). */
#define VR_CAPTURE_WINDOW ((uint64_t)1 << 30)

typedef struct nbd_handle VrNbdHandle;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrNbdHandle, nbd_close)

struct _VrCapture {
    VrQmpClient *client;
    char *prefix; /* "vr-<rel>-" */
    char *workdir;
    uint8_t uuid[16];
    VrCaptureFlags flags;
    guint depth;
    guint chunk;
    uint64_t budget;
    const VrCaptureFreezer *freezer;
    gpointer freezer_data;
    guint freeze_timeout_ms;
};

/* What one disk of a cycle has set up, so that teardown undoes exactly that. */
typedef struct {
    VrCaptureDisk disk;
    char *target;
    char *node_name;
    char *fleece_path;
    char *fleece_node;
    char *job_id;
    char *export_id;
    int64_t fdset; /* -1: none */
} VrCaptureCycleDisk;

struct _VrCaptureCycle {
    VrCapture *capture; /* not a reference: the capture outlives its cycles */
    uint64_t base;
    uint64_t cycle;
    uint32_t granularity;
    char *socket_path;
    bool socket_created;
    bool server_started;
    bool server_maybe_started; /* the start's answer was lost (timeout, closed) */
    bool ended;
    GPtrArray *disks;           /* VrCaptureCycleDisk */
    VrQmpEventWatch *threshold; /* BLOCK_WRITE_THRESHOLD, when there is a budget */
    VrQmpEventWatch *jobs;      /* JOB_STATUS_CHANGE */
    /* Attached (vr_capture_cycle_attach()): the caller serves the exports; the dirty extents
     * are those of this bitmap, B(base) itself. NULL: ours, with the frozen copy. */
    char *attached_bitmap;
    bool app_consistent;
    GError *freeze_error;
    /* Progress of the spool that runs (vr_capture_cycle_set_progress()). */
    VrCaptureProgress progress;
    gpointer progress_data;
    uint64_t progress_size;  /* the virtual size of the disk being read */
    uint64_t progress_bytes; /* bytes of it taken so far, zero extents included */
    /* Spools are written as wire streams directly (vr_capture_cycle_set_stream()). */
    char *stream_relationship; /* NULL: spools (vr-spool.h) */
    uint64_t stream_epoch;
    VrSenderFeed *stream_feed; /* follows the next stream (vr_capture_cycle_set_feed()), or NULL */
};

/* ---- names -------------------------------------------------------------------------- */

static bool
vr_capture_name_valid(const char *name, gsize max)
{
    gsize len = strlen(name);

    if (len == 0 || len > max)
        return false;
    for (const char *c = name; *c != '\0'; c++) {
        if (!g_ascii_islower(*c) && !g_ascii_isdigit(*c))
            return false;
    }
    return true;
}

char *
vr_capture_bitmap_name(VrCapture *capture, uint64_t cycle)
{
    return g_strdup_printf("%s%010" PRIu64, capture->prefix, cycle);
}

char *
vr_capture_relationship_bitmap_name(const char *relationship, uint64_t cycle)
{
    return g_strdup_printf("vr-%s-%010" PRIu64, relationship, cycle);
}

/* The cycle of one of our bitmap names, or 0 when @name is not ours. */
static uint64_t
vr_capture_bitmap_cycle(VrCapture *capture, const char *name)
{
    guint64 cycle = 0;

    if (name == NULL || !g_str_has_prefix(name, capture->prefix))
        return 0;
    name += strlen(capture->prefix);
    if (strlen(name) != 10 || !g_ascii_string_to_unsigned(name, 10, 1, G_MAXUINT64, &cycle, NULL))
        return 0;
    return cycle;
}

/* ---- life --------------------------------------------------------------------------- */

VrCapture *
vr_capture_new(VrQmpClient *client, const char *relationship, const uint8_t domain_uuid[16],
               const char *workdir, VrCaptureFlags flags, GError **error)
{
    VrCapture *capture;

    if (!vr_capture_name_valid(relationship, VR_CAPTURE_RELATIONSHIP_MAX)) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "relationship id '%s' is not [a-z0-9]{1,%d}", relationship,
                    VR_CAPTURE_RELATIONSHIP_MAX);
        return NULL;
    }
    if (!g_file_test(workdir, G_FILE_TEST_IS_DIR)) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "work directory '%s' does not exist", workdir);
        return NULL;
    }
    capture = g_new0(VrCapture, 1);
    capture->client = client != NULL ? g_object_ref(client) : NULL;
    capture->prefix = g_strdup_printf("vr-%s-", relationship);
    capture->workdir = g_strdup(workdir);
    memcpy(capture->uuid, domain_uuid, 16);
    capture->flags = flags;
    capture->depth = VR_CAPTURE_DEFAULT_DEPTH;
    capture->chunk = VR_CAPTURE_DEFAULT_CHUNK;
    return capture;
}

void
vr_capture_free(VrCapture *capture)
{
    if (capture == NULL)
        return;
    g_clear_object(&capture->client);
    g_free(capture->prefix);
    g_free(capture->workdir);
    g_free(capture);
}

void
vr_capture_set_freezer(VrCapture *capture, const VrCaptureFreezer *freezer, gpointer data,
                       guint timeout_ms)
{
    g_return_if_fail(freezer == NULL || (freezer->freeze != NULL && freezer->thaw != NULL));

    capture->freezer = freezer;
    capture->freezer_data = data;
    capture->freeze_timeout_ms = timeout_ms;
}

void
vr_capture_set_fleece_budget(VrCapture *capture, uint64_t bytes)
{
    capture->budget = bytes;
}

void
vr_capture_set_read_queue(VrCapture *capture, guint depth, guint request_size)
{
    g_return_if_fail(depth > 0 && depth <= 64);
    /* Whole hash-list blocks per request (resync hashes each block whole). */
    g_return_if_fail(request_size >= VR_HASHLIST_BLOCK_SIZE &&
                     request_size <= VR_SPOOL_MAX_RECORD &&
                     request_size % VR_HASHLIST_BLOCK_SIZE == 0);

    capture->depth = depth;
    capture->chunk = request_size;
}

/* ---- health ------------------------------------------------------------------------- */

static bool vr_capture_resync(GError **error, const char *target, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static bool
vr_capture_resync(GError **error, const char *target, const char *format, ...)
{
    g_autofree char *why = NULL;
    va_list args;

    va_start(args, format);
    why = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED,
                "disk '%s' needs a resynchronization: %s", target, why);
    return false;
}

/* The checks that do not depend on a base bitmap: the node, its format and size, qdev. */
static bool
vr_capture_check_disk(const VrCaptureDisk *disk, GPtrArray *nodes, GPtrArray *devices,
                      VrQmpBlockNode **out_node, GError **error)
{
    VrQmpBlockNode *node = vr_qmp_block_nodes_find(nodes, disk->node_name);

    if (node == NULL)
        return vr_capture_resync(error, disk->target, "node '%s' is gone", disk->node_name);
    if (g_strcmp0(node->drv, "qcow2") != 0) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_UNSUPPORTED,
                    "disk '%s' is '%s', not qcow2: persistent dirty bitmaps need a qcow2 (v3) "
                    "image; convert it with qemu-img convert -O qcow2",
                    disk->target, node->drv);
        return false;
    }
    if (node->virtual_size != disk->virtual_size) {
        return vr_capture_resync(error, disk->target,
                                 "its size changed from %" PRIu64 " to %" PRIu64 " bytes",
                                 disk->virtual_size, node->virtual_size);
    }
    if (disk->qdev != NULL) {
        VrQmpBlockNode *top = NULL;

        for (guint i = 0; i < devices->len; i++) {
            VrQmpBlockDevice *d = g_ptr_array_index(devices, i);

            if (g_strcmp0(d->qdev, disk->qdev) == 0 && d->inserted != NULL)
                top = vr_qmp_block_nodes_find(nodes, d->inserted->node_name);
        }
        if (top == NULL)
            return vr_capture_resync(error, disk->target, "device '%s' is gone", disk->qdev);
        if (top != node && !vr_qmp_block_node_is_filter_over(top, node)) {
            return vr_capture_resync(error, disk->target,
                                     "the device writes through '%s', not the tracked '%s' "
                                     "(an external snapshot or a block job moved it)",
                                     top->node_name, node->node_name);
        }
    }
    *out_node = node;
    return true;
}

bool
vr_capture_check(VrCapture *capture, const VrCaptureDisk *disks, guint n_disks, uint64_t base,
                 GError **error)
{
    g_autoptr(GPtrArray) nodes = NULL;
    g_autoptr(GPtrArray) devices = NULL;
    g_autofree char *name = vr_capture_bitmap_name(capture, base);

    g_return_val_if_fail(capture->client != NULL, false);
    nodes = vr_qmp_query_named_block_nodes(capture->client, error);
    if (nodes == NULL)
        return false;
    devices = vr_qmp_query_block(capture->client, error);
    if (devices == NULL)
        return false;
    for (guint i = 0; i < n_disks; i++) {
        VrQmpBlockNode *node = NULL;
        VrQmpBitmapInfo *bitmap;

        if (!vr_capture_check_disk(&disks[i], nodes, devices, &node, error))
            return false;
        if (base == 0)
            continue;
        bitmap = vr_qmp_block_node_find_bitmap(node, name);
        if (bitmap == NULL) {
            return vr_capture_resync(error, disks[i].target,
                                     "bitmap '%s' is missing (QEMU crashed or was killed, or "
                                     "the image was replaced)",
                                     name);
        }
        if (bitmap->busy) {
            g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_DEFERRED,
                        "cycle deferred: bitmap '%s' of disk '%s' is in use by another "
                        "operation (an export or a migration)",
                        name, disks[i].target);
            return false;
        }
        if (bitmap->inconsistent) {
            return vr_capture_resync(error, disks[i].target,
                                     "bitmap '%s' is inconsistent (QEMU did not close the "
                                     "image cleanly)",
                                     name);
        }
        if (!bitmap->persistent || !bitmap->recording) {
            return vr_capture_resync(error, disks[i].target,
                                     "bitmap '%s' is not persistent and recording", name);
        }
        if (bitmap->granularity != VR_CAPTURE_GRANULARITY) {
            return vr_capture_resync(error, disks[i].target,
                                     "bitmap '%s' has granularity %u, not %u", name,
                                     bitmap->granularity, VR_CAPTURE_GRANULARITY);
        }
    }
    return true;
}

/* ---- teardown ----------------------------------------------------------------------- */

static void
vr_capture_cycle_disk_free(gpointer data)
{
    VrCaptureCycleDisk *d = data;

    g_free(d->target);
    g_free(d->node_name);
    g_free(d->fleece_path);
    g_free(d->fleece_node);
    g_free(d->job_id);
    g_free(d->export_id);
    g_free(d);
}

/* Log and drop a teardown error: teardown goes on, and "not found" is expected after a
 * crash or a partial begin. */
static void
vr_capture_skip(GError **error, const char *what)
{
    if (*error != NULL)
        g_debug("capture teardown: %s: %s", what, (*error)->message);
    g_clear_error(error);
}

static void
vr_capture_remove_export(VrCapture *capture, const char *id)
{
    g_autoptr(VrQmpEventWatch) watch = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) event = NULL;

    watch = vr_qmp_event_watch_new(capture->client, "BLOCK_EXPORT_DELETED", "id", id);
    if (!vr_qmp_block_export_del(capture->client, id, true, &error)) {
        vr_capture_skip(&error, id);
        return;
    }
    /* The id is only free once the export is gone: wait for it. */
    event = vr_qmp_event_watch_wait(watch, VR_CAPTURE_EVENT_TIMEOUT, NULL, &error);
    vr_capture_skip(&error, id);
}

static void
vr_capture_remove_job(VrCapture *capture, const char *id)
{
    g_autoptr(VrQmpEventWatch) watch = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) event = NULL;

    watch = vr_qmp_event_watch_new(capture->client, "BLOCK_JOB_CANCELLED", "device", id);
    if (vr_qmp_block_job_cancel(capture->client, id, true, &error)) {
        event = vr_qmp_event_watch_wait(watch, VR_CAPTURE_EVENT_TIMEOUT, NULL, &error);
        vr_capture_skip(&error, id);
    } else {
        /* Already concluded (or gone): dismiss is all that is left. */
        vr_capture_skip(&error, id);
    }
    if (!vr_qmp_job_dismiss(capture->client, id, &error))
        vr_capture_skip(&error, id);
}

static void
vr_capture_remove_node(VrCapture *capture, const char *node_name)
{
    g_autoptr(GError) error = NULL;

    if (!vr_qmp_blockdev_del(capture->client, node_name, &error))
        vr_capture_skip(&error, node_name);
}

void
vr_capture_cycle_set_stream(VrCaptureCycle *cycle, const char *relationship, uint64_t epoch)
{
    g_free(cycle->stream_relationship);
    cycle->stream_relationship = g_strdup(relationship);
    cycle->stream_epoch = epoch;
}

void
vr_capture_cycle_set_feed(VrCaptureCycle *cycle, VrSenderFeed *feed)
{
    cycle->stream_feed = feed;
}

void
vr_capture_cycle_set_progress(VrCaptureCycle *cycle, VrCaptureProgress progress, gpointer data)
{
    cycle->progress = progress;
    cycle->progress_data = data;
}

bool
vr_capture_cycle_is_app_consistent(VrCaptureCycle *cycle)
{
    return cycle->app_consistent;
}

const GError *
vr_capture_cycle_get_freeze_error(VrCaptureCycle *cycle)
{
    return cycle->freeze_error;
}

const char *
vr_capture_cycle_get_nbd_socket(VrCaptureCycle *cycle)
{
    return cycle->socket_path;
}

void
vr_capture_cycle_end(VrCaptureCycle *cycle)
{
    VrCapture *capture = cycle->capture;
    g_autoptr(GError) error = NULL;

    if (cycle->ended)
        return;
    cycle->ended = true;
    if (cycle->attached_bitmap != NULL)
        return; /* nothing of it is ours to tear down */

    /*
     * Everything this cycle's names stand for, whatever QMP confirmed: a command that timed
     * out may still have run in QEMU, and "not found" is skipped anyway. Exports first: they
     * hold the fleece nodes and the NBD server busy.
     */
    for (guint i = 0; i < cycle->disks->len; i++) {
        VrCaptureCycleDisk *d = g_ptr_array_index(cycle->disks, i);

        vr_capture_remove_export(capture, d->export_id);
    }
    if (cycle->server_started || cycle->server_maybe_started) {
        if (vr_qmp_nbd_server_stop(capture->client, &error))
            cycle->server_started = cycle->server_maybe_started = false;
        else
            vr_capture_skip(&error, "nbd-server-stop");
    }
    /* Then the jobs (ending the copy-before-write), then the nodes. */
    for (guint i = 0; i < cycle->disks->len; i++) {
        VrCaptureCycleDisk *d = g_ptr_array_index(cycle->disks, i);

        vr_capture_remove_job(capture, d->job_id);
    }
    for (guint i = 0; i < cycle->disks->len; i++) {
        VrCaptureCycleDisk *d = g_ptr_array_index(cycle->disks, i);

        vr_capture_remove_node(capture, d->fleece_node);
        if (d->fdset >= 0 && !vr_qmp_remove_fd(capture->client, d->fdset, &error))
            vr_capture_skip(&error, "remove-fd");
        if (d->fleece_path != NULL)
            g_unlink(d->fleece_path);
    }
    /* A server that would not stop keeps its socket: reconciliation finds it by it. */
    if (cycle->socket_created && !cycle->server_started && !cycle->server_maybe_started)
        g_unlink(cycle->socket_path);
}

void
vr_capture_cycle_free(VrCaptureCycle *cycle)
{
    if (cycle == NULL)
        return;
    vr_capture_cycle_end(cycle);
    g_clear_pointer(&cycle->threshold, vr_qmp_event_watch_free);
    g_clear_pointer(&cycle->jobs, vr_qmp_event_watch_free);
    g_clear_error(&cycle->freeze_error);
    g_ptr_array_unref(cycle->disks);
    g_free(cycle->socket_path);
    g_free(cycle->attached_bitmap);
    g_free(cycle->stream_relationship);
    g_free(cycle);
}

/* ---- begin -------------------------------------------------------------------------- */

/* qemu-img create -f qcow2 @path @size: the fleece, empty, no backing in its header. */
static bool
vr_capture_create_image(const char *path, uint64_t size, GError **error)
{
    g_autofree char *size_arg = g_strdup_printf("%" PRIu64, size);
    const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", path, size_arg, NULL };
    g_autofree char *err = NULL;
    int status = 0;

    g_unlink(path);
    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                      NULL, NULL, NULL, &err, &status, error) ||
        !g_spawn_check_wait_status(status, error)) {
        g_prefix_error(error, "cannot create fleece image '%s': %s ", path, err != NULL ? err : "");
        return false;
    }
    /* It receives the guest's old blocks: nobody else may read it. */
    if (chmod(path, 0600) < 0) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "cannot restrict fleece image '%s': %s", path, g_strerror(errno));
        return false;
    }
    return true;
}

static bool
vr_capture_add_fleece(VrCaptureCycle *cycle, VrCaptureCycleDisk *d, GError **error)
{
    VrCapture *capture = cycle->capture;
    g_autofree char *filename = NULL;

    if (!vr_capture_create_image(d->fleece_path, d->disk.virtual_size, error))
        return false;
    if (capture->flags & VR_CAPTURE_PASS_FDS) {
        g_autofree char *opaque = g_strconcat(capture->prefix, d->target, NULL);
        int fd = open(d->fleece_path, O_RDWR | O_CLOEXEC);
        bool ok;

        if (fd < 0) {
            g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                        "cannot open fleece image '%s': %s", d->fleece_path, g_strerror(errno));
            return false;
        }
        ok = vr_qmp_add_fd(capture->client, fd, -1, opaque, &d->fdset, error);
        close(fd);
        if (!ok)
            return false;
        filename = g_strdup_printf("/dev/fdset/%" G_GINT64_FORMAT, d->fdset);
    } else {
        filename = g_strdup(d->fleece_path);
    }
    if (!vr_qmp_blockdev_add_qcow2(capture->client, d->fleece_node, filename, d->node_name, false,
                                   error))
        return false;
    if (capture->budget != 0) {
        /* On the protocol node: its write offsets follow the image file's growth. */
        g_autofree char *file_node = g_strconcat(d->fleece_node, "-file", NULL);

        if (!vr_qmp_block_set_write_threshold(capture->client, file_node,
                                              capture->budget / cycle->disks->len, error))
            return false;
    }
    return true;
}

/*
 * Checked between reads: a fleece of @cycle that crossed its share of the budget, or a
 * fleece job that ended (cancelled or failed by someone else) while its export is read,
 * which would turn the point-in-time view into the live disk.
 */
static bool
vr_capture_cycle_events_ok(VrCaptureCycle *cycle, GError **error)
{
    json_object *event;

    while (cycle->threshold != NULL && (event = vr_qmp_event_watch_poll(cycle->threshold))) {
        g_autoptr(json_object) owned = event;
        json_object *data = vr_json_get_object(event, "data");
        const char *node = vr_json_get_string(data, "node-name");
        uint64_t threshold = 0;
        bool ours = false;

        /* Someone else's threshold (libvirt's domblkthreshold, say) is not our budget. */
        for (guint i = 0; i < cycle->disks->len && node != NULL; i++) {
            VrCaptureCycleDisk *d = g_ptr_array_index(cycle->disks, i);

            ours = ours || (g_str_has_prefix(node, d->fleece_node) &&
                            g_str_equal(node + strlen(d->fleece_node), "-file"));
        }
        if (!ours)
            continue;
        vr_json_get_uint64(data, "write-threshold", &threshold);
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_BUDGET,
                    "cycle %" PRIu64 " aborted: fleece node '%s' reached its budget of %" PRIu64
                    " bytes (the guest overwrote more during the cycle than the fleece may hold)",
                    cycle->cycle, node, threshold);
        return false;
    }
    while (cycle->jobs != NULL && (event = vr_qmp_event_watch_poll(cycle->jobs))) {
        g_autoptr(json_object) owned = event;
        json_object *data = vr_json_get_object(event, "data");
        const char *id = vr_json_get_string(data, "id");
        const char *status = vr_json_get_string(data, "status");

        if (id == NULL || status == NULL || !g_str_has_prefix(id, cycle->capture->prefix))
            continue;
        if (g_str_equal(status, "aborting") || g_str_equal(status, "concluded") ||
            g_str_equal(status, "null")) {
            g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                        "cycle %" PRIu64 " aborted: fleece job '%s' ended during the read "
                        "(status '%s'): the point-in-time view is gone",
                        cycle->cycle, id, status);
            return false;
        }
    }
    return true;
}

/* Whether something (QEMU, after a crash of ours) still listens on our socket at @path. */
static bool
vr_capture_socket_accepts(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    bool accepts;
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path) || !g_file_test(path, G_FILE_TEST_EXISTS))
        return false;
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    accepts = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0;
    close(fd);
    return accepts;
}

static int
vr_capture_listen(const char *path, GError **error)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "socket path '%s' is too long", path);
        return -1;
    }
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_unlink(path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 8) < 0) {
        int errsv = errno;

        if (fd >= 0)
            close(fd);
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED, "cannot listen on '%s': %s",
                    path, g_strerror(errsv));
        return -1;
    }
    return fd;
}

/*
 * An NBD server already runs. QEMU has one per process: when it serves exports that are not
 * ours, it is libvirt's (a backup or a storage migration), and breaking it is not ours to do.
 */
static bool
vr_capture_server_busy(VrCapture *capture, GError **error)
{
    g_autoptr(GPtrArray) exports = vr_qmp_query_block_exports(capture->client, NULL);
    g_autoptr(GString) others = g_string_new(NULL);

    for (guint i = 0; exports != NULL && i < exports->len; i++) {
        VrQmpExportInfo *e = g_ptr_array_index(exports, i);

        if (!g_str_has_prefix(e->id, capture->prefix))
            g_string_append_printf(others, "%s'%s'", others->len > 0 ? ", " : "", e->id);
    }
    g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_DEFERRED,
                "cycle deferred: QEMU's NBD server is in use by someone else (exports: %s), "
                "such as a libvirt backup job",
                others->len > 0 ? others->str : "none yet");
    return false;
}

static bool
vr_capture_start_server(VrCaptureCycle *cycle, GError **error)
{
    VrCapture *capture = cycle->capture;
    g_autoptr(GError) local = NULL;
    bool ok;

    /*
     * QEMU still listening on our socket is our own server, left by a cycle whose teardown
     * could not stop it: stop it now (only then is the socket file removed).
     */
    if (vr_capture_socket_accepts(cycle->socket_path)) {
        if (!vr_qmp_nbd_server_stop(capture->client, &local))
            vr_capture_skip(&local, "nbd-server-stop of our leftover server");
    }
    if (capture->flags & VR_CAPTURE_PASS_FDS) {
        g_autofree char *fdname = g_strconcat(capture->prefix, "nbd", NULL);
        int fd = vr_capture_listen(cycle->socket_path, error);

        if (fd < 0)
            return false;
        cycle->socket_created = true;
        ok = vr_qmp_getfd(capture->client, fd, fdname, error);
        close(fd);
        if (!ok)
            return false;
        ok = vr_qmp_nbd_server_start_fd(capture->client, fdname, &local);
        if (!ok) {
            g_autoptr(GError) ignored = NULL;

            vr_qmp_closefd(capture->client, fdname, &ignored);
        }
    } else {
        ok = vr_qmp_nbd_server_start_unix(capture->client, cycle->socket_path, &local);
        cycle->socket_created = ok;
    }
    if (!ok) {
        const char *desc = vr_qmp_error_get_desc(local);

        /* No answer: it may run. Teardown stops it, and keeps the socket until it did. */
        if (!g_error_matches(local, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND))
            cycle->server_maybe_started = true;
        if (desc != NULL && strstr(desc, "already running") != NULL)
            return vr_capture_server_busy(capture, error);
        g_propagate_error(error, g_steal_pointer(&local));
        return false;
    }
    cycle->server_started = true;
    return true;
}

VrCaptureCycle *
vr_capture_cycle_begin(VrCapture *capture, const VrCaptureDisk *disks, guint n_disks, uint64_t base,
                       uint64_t cycle_number, GError **error)
{
    g_autoptr(VrCaptureCycle) cycle = NULL;
    g_autoptr(VrQmpTransaction) tx = vr_qmp_transaction_new();
    g_autofree char *new_bitmap = vr_capture_bitmap_name(capture, cycle_number);
    g_autofree char *base_bitmap = base != 0 ? vr_capture_bitmap_name(capture, base) : NULL;
    g_autofree char *frozen_bitmap = g_strconcat(capture->prefix, VR_CAPTURE_FROZEN, NULL);
    g_autoptr(GPtrArray) nodes = NULL;
    g_autoptr(GError) cut_error = NULL;
    bool maybe_frozen = false;
    bool frozen = false;
    bool cut;

    g_return_val_if_fail(capture->client != NULL, NULL);
    if (n_disks == 0 || cycle_number <= base) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "a cycle needs disks and a number after its base");
        return NULL;
    }
    for (guint i = 0; i < n_disks; i++) {
        gsize other = strlen(capture->prefix) + strlen("fl-") + strlen("-file");

        if (!vr_capture_name_valid(disks[i].target, VR_CAPTURE_NODE_NAME_MAX - other)) {
            g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                        "disk target '%s' is not [a-z0-9]{1,%" G_GSIZE_FORMAT "}: QEMU node "
                        "names are made of it and the relationship id",
                        disks[i].target, (gsize)(VR_CAPTURE_NODE_NAME_MAX - other));
            return NULL;
        }
        for (guint j = 0; j < i; j++) {
            if (g_str_equal(disks[i].target, disks[j].target)) {
                g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                            "disk '%s' is listed twice", disks[i].target);
                return NULL;
            }
        }
    }
    if (capture->budget != 0 && capture->budget / n_disks < VR_CAPTURE_MIN_FLEECE) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "a fleece budget of %" PRIu64 " bytes leaves less than 1 MiB to each of "
                    "the %u fleeces",
                    capture->budget, n_disks);
        return NULL;
    }
    if (!vr_capture_check(capture, disks, n_disks, base, error))
        return NULL;

    cycle = g_new0(VrCaptureCycle, 1);
    cycle->capture = capture;
    cycle->base = base;
    cycle->cycle = cycle_number;
    cycle->granularity = VR_CAPTURE_GRANULARITY;
    cycle->socket_path = g_strdup_printf("%s/%snbd.sock", capture->workdir, capture->prefix);
    cycle->disks = g_ptr_array_new_with_free_func(vr_capture_cycle_disk_free);
    for (guint i = 0; i < n_disks; i++) {
        VrCaptureCycleDisk *d = g_new0(VrCaptureCycleDisk, 1);

        d->target = g_strdup(disks[i].target);
        d->node_name = g_strdup(disks[i].node_name);
        d->disk = disks[i];
        d->disk.target = d->target;
        d->disk.node_name = d->node_name;
        d->disk.qdev = NULL;
        d->fleece_path =
            g_strdup_printf("%s/%sfleece-%s.qcow2", capture->workdir, capture->prefix, d->target);
        d->fleece_node = g_strdup_printf("%sfl-%s", capture->prefix, d->target);
        d->job_id = g_strdup_printf("%sjob-%s", capture->prefix, d->target);
        d->export_id = g_strdup_printf("%sexp-%s", capture->prefix, d->target);
        d->fdset = -1;
        g_ptr_array_add(cycle->disks, d);
    }

    if (capture->budget != 0) {
        cycle->threshold =
            vr_qmp_event_watch_new(capture->client, "BLOCK_WRITE_THRESHOLD", NULL, NULL);
    }
    cycle->jobs = vr_qmp_event_watch_new(capture->client, "JOB_STATUS_CHANGE", NULL, NULL);
    for (guint i = 0; i < n_disks; i++) {
        if (!vr_capture_add_fleece(cycle, g_ptr_array_index(cycle->disks, i), error))
            goto fail;
    }
    if (!vr_capture_start_server(cycle, error))
        goto fail;

    /*
     * A failed earlier try of this same cycle left B(k): remove it first (QEMU checks a
     * transaction's additions against the state before its removals). k > a, so this is
     * never B(a).
     */
    nodes = vr_qmp_query_named_block_nodes(capture->client, error);
    if (nodes == NULL)
        goto fail;
    for (guint i = 0; i < n_disks; i++) {
        VrCaptureCycleDisk *d = g_ptr_array_index(cycle->disks, i);
        VrQmpBlockNode *node = vr_qmp_block_nodes_find(nodes, d->node_name);

        if (node != NULL && vr_qmp_block_node_find_bitmap(node, new_bitmap) != NULL &&
            !vr_qmp_bitmap_remove(capture->client, d->node_name, new_bitmap, error))
            goto fail;
    }

    /*
     * The cut: every blockdev-backup first, so the sources stay drained while the bitmap
     * actions run (research/qemu-bitmaps.md §1.3), then per disk B(k) and the frozen copy.
     */
    for (guint i = 0; i < n_disks; i++) {
        VrCaptureCycleDisk *d = g_ptr_array_index(cycle->disks, i);

        vr_qmp_transaction_add_blockdev_backup(tx, d->job_id, d->node_name, d->fleece_node, "none");
    }
    for (guint i = 0; i < n_disks; i++) {
        VrCaptureCycleDisk *d = g_ptr_array_index(cycle->disks, i);

        vr_qmp_transaction_add_bitmap_add(tx, d->node_name, new_bitmap, true, false,
                                          cycle->granularity);
        if (base != 0) {
            VrQmpBitmapRef src = { d->node_name, base_bitmap };

            vr_qmp_transaction_add_bitmap_add(tx, d->fleece_node, frozen_bitmap, false, true,
                                              cycle->granularity);
            vr_qmp_transaction_add_bitmap_merge(tx, d->fleece_node, frozen_bitmap, &src, 1);
        }
    }
    /* Freeze as late as possible: only the transaction runs while the guest is frozen. */
    if (capture->freezer != NULL) {
        frozen = capture->freezer->freeze(capture->freezer_data, capture->freeze_timeout_ms,
                                          &maybe_frozen, &cycle->freeze_error);
        if (!frozen && cycle->freeze_error == NULL) {
            cycle->freeze_error = g_error_new_literal(VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                                                      "the guest did not freeze");
        }
    }
    cut = vr_qmp_transaction_execute(capture->client, tx, &cut_error);
    if (frozen || maybe_frozen) {
        g_autoptr(GError) thaw_error = NULL;

        /* Also after a failed freeze that may have taken effect late in the guest. */
        if (!capture->freezer->thaw(capture->freezer_data, &thaw_error)) {
            g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_GUEST_FROZEN,
                        "cycle %" PRIu64 ": the guest may still be frozen: %s", cycle_number,
                        thaw_error->message);
            goto fail;
        }
    }
    if (!cut) {
        g_propagate_prefixed_error(error, g_steal_pointer(&cut_error), "cut of cycle %" PRIu64 ": ",
                                   cycle_number);
        goto fail;
    }
    cycle->app_consistent = frozen;
    for (guint i = 0; i < n_disks; i++) {
        VrCaptureCycleDisk *d = g_ptr_array_index(cycle->disks, i);
        const char *bitmaps[] = { frozen_bitmap, NULL };

        if (!vr_qmp_block_export_add_nbd(capture->client, d->export_id, d->fleece_node, d->target,
                                         false, base != 0 ? bitmaps : NULL, error))
            goto fail;
    }
    return g_steal_pointer(&cycle);

fail:
    /* Keep the first error; the rollback's own errors are only logged. */
    vr_capture_cycle_end(cycle);
    if (error != NULL && *error != NULL && (*error)->domain != VR_CAPTURE_ERROR) {
        GError *inner = *error;

        *error = g_error_new(VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED, "%s", inner->message);
        g_error_free(inner);
    }
    return NULL;
}

VrCaptureCycle *
vr_capture_cycle_attach(VrCapture *capture, const VrCaptureDisk *disks, guint n_disks,
                        uint64_t base, uint64_t cycle_number, const char *socket, GError **error)
{
    VrCaptureCycle *cycle;

    if (n_disks == 0 || base == 0 || cycle_number <= base) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "an attached cycle needs disks, a base and a number after it");
        return NULL;
    }
    cycle = g_new0(VrCaptureCycle, 1);
    cycle->capture = capture;
    cycle->base = base;
    cycle->cycle = cycle_number;
    cycle->granularity = VR_CAPTURE_GRANULARITY;
    cycle->socket_path = g_strdup(socket);
    cycle->attached_bitmap = vr_capture_bitmap_name(capture, base);
    cycle->disks = g_ptr_array_new_with_free_func(vr_capture_cycle_disk_free);
    for (guint i = 0; i < n_disks; i++) {
        VrCaptureCycleDisk *d = g_new0(VrCaptureCycleDisk, 1);

        d->target = g_strdup(disks[i].target);
        d->node_name = g_strdup(disks[i].node_name);
        d->disk = disks[i];
        d->disk.target = d->target;
        d->disk.node_name = d->node_name;
        d->disk.qdev = NULL;
        d->fdset = -1;
        g_ptr_array_add(cycle->disks, d);
    }
    return cycle;
}

/* ---- reading ------------------------------------------------------------------------ */

typedef struct {
    uint64_t offset;
    uint64_t length;
    bool zero; /* reads as zeroes (a hole, or base:allocation ZERO): no need to read */
} VrCaptureExtent;

typedef enum {
    VR_CAPTURE_MAP_DIRTY,     /* the frozen bitmap's dirty extents */
    VR_CAPTURE_MAP_ALLOCATED, /* allocated extents; holes left out (a fresh replica image) */
    VR_CAPTURE_MAP_ALL,       /* every extent; holes as zero extents (resync) */
} VrCaptureMapMode;

typedef struct {
    GArray *extents; /* VrCaptureExtent, in order, merged */
    uint64_t next;   /* where the last reply ended */
    uint64_t end;    /* the end of the window being mapped: extents are clipped to it */
    VrCaptureMapMode mode;
    const char *context;
} VrCaptureMap;

static void
vr_capture_extents_push(GArray *extents, uint64_t offset, uint64_t length, bool zero)
{
    if (extents->len > 0) {
        VrCaptureExtent *last = &g_array_index(extents, VrCaptureExtent, extents->len - 1);

        if (last->offset + last->length == offset && last->zero == zero) {
            last->length += length;
            return;
        }
    }
    g_array_append_val(extents, ((VrCaptureExtent){ offset, length, zero }));
}

static int
vr_capture_extent_cb(void *user_data, const char *context, uint64_t offset, uint32_t *entries,
                     size_t n_entries, int *error)
{
    VrCaptureMap *map = user_data;

    if (strcmp(context, map->context) != 0)
        return 0;
    for (size_t i = 0; i + 1 < n_entries && offset < map->end; i += 2) {
        /* A server may answer past the range asked: keep to the window. */
        uint64_t length = MIN((uint64_t)entries[i], map->end - offset);
        uint32_t flags = entries[i + 1];

        switch (map->mode) {
        case VR_CAPTURE_MAP_DIRTY:
            if (flags & 1) /* NBD_STATE_DIRTY */
                vr_capture_extents_push(map->extents, offset, length, false);
            break;
        case VR_CAPTURE_MAP_ALLOCATED:
            if (!(flags & LIBNBD_STATE_HOLE))
                vr_capture_extents_push(map->extents, offset, length,
                                        (flags & LIBNBD_STATE_ZERO) != 0);
            break;
        case VR_CAPTURE_MAP_ALL:
            vr_capture_extents_push(map->extents, offset, length,
                                    (flags & (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)) != 0);
            break;
        }
        offset += length;
    }
    /* A reply may cover less than was asked: the caller goes on from here. */
    map->next = offset;
    return 0;
}

/*
 * Whole blocks of @block bytes: a block with any data in it is read whole, the rest are
 * zero extents. Covers [@start, @size) (@start a multiple of @block). (transfer full)
 */
static GArray *
vr_capture_extents_align(GArray *in, uint64_t start, uint64_t size, uint32_t block)
{
    GArray *out = g_array_new(FALSE, FALSE, sizeof(VrCaptureExtent));
    uint64_t done = start;

    for (guint i = 0; i < in->len; i++) {
        VrCaptureExtent *e = &g_array_index(in, VrCaptureExtent, i);
        uint64_t first;
        uint64_t end;

        if (e->zero)
            continue;
        first = e->offset / block * block;
        end = MIN((e->offset + e->length + block - 1) / block * block, size);
        first = MAX(first, done);
        if (end <= first)
            continue;
        if (first > done)
            vr_capture_extents_push(out, done, first - done, true);
        vr_capture_extents_push(out, first, end - first, false);
        done = end;
    }
    if (done < size)
        vr_capture_extents_push(out, done, size - done, true);
    return out;
}

static bool
vr_capture_nbd_error(GError **error, const char *what)
{
    g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED, "%s: %s", what,
                nbd_get_error() != NULL ? nbd_get_error() : "unknown NBD error");
    return false;
}

static bool
vr_capture_is_zero(const uint8_t *buf, size_t len)
{
    /* The first 16 bytes against zero, then the buffer against itself shifted by 16. */
    static const uint8_t zero[16];

    if (len <= 16)
        return memcmp(buf, zero, len) == 0;
    return memcmp(buf, zero, 16) == 0 && memcmp(buf, buf + 16, len - 16) == 0;
}

/*
 * Takes the disk in order, a chunk at a time: @len bytes at @offset, read into @buf, or
 * known to be zeroes when @buf is NULL.
 */
typedef bool (*VrCaptureChunkFunc)(uint64_t offset, const uint8_t *buf, size_t len, gpointer data,
                                   GError **error);

/* Where the changes of a disk go: a spool, or a wire stream (one of the two is set). */
typedef struct {
    VrSpoolWriter *spool;
    VrShipWriter *stream;
} VrCaptureWriter;

static bool
vr_capture_writer_data(VrCaptureWriter *writer, uint64_t offset, const uint8_t *data, size_t len,
                       GError **error)
{
    return writer->stream != NULL
               ? vr_ship_writer_add_data(writer->stream, offset, data, len, error)
               : vr_spool_writer_add_data(writer->spool, offset, data, len, error);
}

static bool
vr_capture_writer_zero(VrCaptureWriter *writer, uint64_t offset, uint64_t len, GError **error)
{
    return writer->stream != NULL ? vr_ship_writer_add_zero(writer->stream, offset, len, error)
                                  : vr_spool_writer_add_zero(writer->spool, offset, len, error);
}

/* Unfinished, what it made is removed. */
static void
vr_capture_writer_clear(VrCaptureWriter *writer)
{
    g_clear_pointer(&writer->spool, vr_spool_writer_free);
    g_clear_pointer(&writer->stream, vr_ship_writer_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VrCaptureWriter, vr_capture_writer_clear)

typedef struct {
    VrCaptureWriter *writer;
    uint32_t block;
} VrCaptureSpoolSink;

/* Spool a chunk: runs of all-zero blocks become ZERO records. */
static bool
vr_capture_spool_chunk(uint64_t offset, const uint8_t *buf, size_t len, gpointer data,
                       GError **error)
{
    VrCaptureSpoolSink *sink = data;
    uint32_t block = sink->block;
    size_t start = 0;

    if (buf == NULL)
        return vr_capture_writer_zero(sink->writer, offset, len, error);
    while (start < len) {
        size_t first = MIN(block - (offset + start) % block, len - start);
        bool zero = vr_capture_is_zero(buf + start, first);
        size_t end = start + first;

        while (end < len) {
            size_t n = MIN(block, len - end);

            if (vr_capture_is_zero(buf + end, n) != zero)
                break;
            end += n;
        }
        if (zero ? !vr_capture_writer_zero(sink->writer, offset + start, end - start, error)
                 : !vr_capture_writer_data(sink->writer, offset + start, buf + start, end - start,
                                           error))
            return false;
        start = end;
    }
    return true;
}

typedef struct {
    VrCaptureWriter *writer;
    VrHashlistReader *remote;
    uint8_t zero_digest[VR_HASHLIST_DIGEST_SIZE]; /* of a whole zero block */
    uint8_t *zeroes;                              /* a zero block, for a short last one */
} VrCaptureResyncSink;

/* Compare a chunk block by block with the replica's hashes; spool the blocks that differ. */
static bool
vr_capture_resync_chunk(uint64_t offset, const uint8_t *buf, size_t len, gpointer data,
                        GError **error)
{
    VrCaptureResyncSink *sink = data;

    /* Chunks are whole blocks (vr_capture_extents_align), bar the end of the disk. */
    for (size_t at = 0; at < len; at += VR_HASHLIST_BLOCK_SIZE) {
        size_t n = MIN((size_t)VR_HASHLIST_BLOCK_SIZE, len - at);
        uint8_t local[VR_HASHLIST_DIGEST_SIZE];
        uint8_t remote[VR_HASHLIST_DIGEST_SIZE];
        bool zero = buf == NULL || vr_capture_is_zero(buf + at, n);

        if (!vr_hashlist_reader_get(sink->remote, (offset + at) / VR_HASHLIST_BLOCK_SIZE, remote,
                                    error))
            return false;
        if (zero && n == VR_HASHLIST_BLOCK_SIZE)
            memcpy(local, sink->zero_digest, sizeof(local));
        else
            vr_hashlist_digest(zero ? sink->zeroes : buf + at, n, local);
        if (memcmp(local, remote, sizeof(local)) == 0)
            continue;
        if (zero ? !vr_capture_writer_zero(sink->writer, offset + at, n, error)
                 : !vr_capture_writer_data(sink->writer, offset + at, buf + at, n, error))
            return false;
    }
    return true;
}

typedef struct {
    uint8_t *buf;
    uint64_t offset;
    size_t length;
    int64_t cookie; /* -1: a zero extent, nothing read */
} VrCaptureSlot;

/*
 * Read the extents in order with up to depth requests in flight: requests complete in any
 * order, but @func takes them in order, so the oldest is waited for first.
 */
static bool
vr_capture_read_extents(VrCaptureCycle *cycle, struct nbd_handle *nbd, GArray *extents,
                        VrCaptureChunkFunc func, gpointer data, GError **error)
{
    VrCapture *capture = cycle->capture;
    g_autofree VrCaptureSlot *slots = g_new0(VrCaptureSlot, capture->depth);
    guint head = 0;
    guint tail = 0;
    guint used = 0;
    guint ext = 0;
    uint64_t pos = extents->len > 0 ? g_array_index(extents, VrCaptureExtent, 0).offset : 0;
    bool ok = true;

    for (guint i = 0; i < capture->depth; i++)
        slots[i].buf = g_malloc(capture->chunk);

    while (ok && (used > 0 || ext < extents->len)) {
        /* Fill the queue; zero extents need no read but keep their place in the order. */
        while (used < capture->depth && ext < extents->len) {
            VrCaptureExtent *e = &g_array_index(extents, VrCaptureExtent, ext);
            VrCaptureSlot *s = &slots[tail];

            s->offset = pos;
            s->length = MIN(e->offset + e->length - pos, (uint64_t)capture->chunk);
            s->cookie = -1;
            if (!e->zero) {
                /* One chunk (DF): an I/O error comes back as EIO (vr-qemu-nbd.h). */
                s->cookie = vr_nbd_aio_pread(nbd, s->buf, s->length, s->offset);
                if (s->cookie < 0) {
                    ok = vr_capture_nbd_error(error, "cannot queue an NBD read");
                    break;
                }
            }
            pos += s->length;
            if (pos == e->offset + e->length && ++ext < extents->len)
                pos = g_array_index(extents, VrCaptureExtent, ext).offset;
            tail = (tail + 1) % capture->depth;
            used++;
        }
        if (!ok || used == 0)
            break;
        /* Take the oldest. */
        {
            VrCaptureSlot *s = &slots[head];

            if (s->cookie < 0) {
                ok = func(s->offset, NULL, s->length, data, error);
            } else {
                int done;

                while ((done = nbd_aio_command_completed(nbd, s->cookie)) == 0) {
                    if (nbd_poll(nbd, -1) < 0)
                        break;
                }
                if (done != 1)
                    ok = vr_capture_nbd_error(error, "NBD read failed");
                else
                    ok = func(s->offset, s->buf, s->length, data, error);
            }
            if (ok && cycle->progress != NULL) {
                cycle->progress_bytes += s->length;
                cycle->progress(s->offset + s->length, cycle->progress_size, cycle->progress_bytes,
                                cycle->progress_data);
            }
            head = (head + 1) % capture->depth;
            used--;
        }
        if (ok)
            ok = vr_capture_cycle_events_ok(cycle, error);
    }
    /* On failure, let the requests still in flight finish before their buffers go. */
    while (nbd_aio_in_flight(nbd) > 0) {
        if (nbd_poll(nbd, -1) < 0)
            break;
    }
    for (guint i = 0; i < capture->depth; i++)
        g_free(slots[i].buf);
    return ok;
}

/* Connect to the fleece export of @d with meta context @context. */
static struct nbd_handle *
vr_capture_connect_export(VrCaptureCycle *cycle, VrCaptureCycleDisk *d, const char *context,
                          GError **error)
{
    g_autoptr(VrNbdHandle) nbd = NULL;
    int64_t size;

    if (cycle->ended) {
        g_set_error_literal(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                            "the cycle has ended");
        return NULL;
    }
    nbd = nbd_create();
    if (nbd == NULL) {
        vr_capture_nbd_error(error, "cannot create an NBD handle");
        return NULL;
    }
    if (nbd_set_export_name(nbd, d->target) < 0 || nbd_add_meta_context(nbd, context) < 0 ||
        nbd_connect_unix(nbd, cycle->socket_path) < 0) {
        vr_capture_nbd_error(error, "cannot connect to the fleece export");
        return NULL;
    }
    if (nbd_can_meta_context(nbd, context) != 1) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "the export of disk '%s' does not offer '%s'", d->target, context);
        return NULL;
    }
    size = nbd_get_size(nbd);
    if (size < 0 || (uint64_t)size != d->disk.virtual_size) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "the export of disk '%s' has size %" PRId64 ", not %" PRIu64, d->target, size,
                    d->disk.virtual_size);
        return NULL;
    }
    return g_steal_pointer(&nbd);
}

/*
 * Map [@start, @end) of the export into @extents (emptied first) per @mode. Windows keep
 * the map's memory bounded whatever the disk size: one window at most 1 GiB (NBD's 32-bit
 * lengths), so at most 16 Ki extents of 64 KiB.
 */
static bool
vr_capture_map_window(struct nbd_handle *nbd, const char *context, VrCaptureMapMode mode,
                      uint64_t start, uint64_t end, GArray *extents, GError **error)
{
    VrCaptureMap map = { extents, start, end, mode, context };

    g_array_set_size(extents, 0);
    for (uint64_t off = start; off < end;) {
        map.next = off;
        if (nbd_block_status(
                nbd, end - off, off,
                (nbd_extent_callback){ .callback = vr_capture_extent_cb, .user_data = &map },
                0) < 0)
            return vr_capture_nbd_error(error, "cannot read the block status");
        if (map.next <= off) {
            g_set_error_literal(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                                "the NBD server answered a block status without progress");
            return false;
        }
        off = map.next;
    }
    return true;
}

/* Open @writer on @path: a spool, or the wire stream the spool would become. */
static bool
vr_capture_spool_new(VrCaptureCycle *cycle, VrCaptureCycleDisk *d, uint32_t flags, const char *path,
                     VrCaptureWriter *writer, GError **error)
{
    VrSpoolHeader header = { 0 };

    memcpy(header.domain_uuid, cycle->capture->uuid, 16);
    g_strlcpy(header.disk, d->target, sizeof(header.disk));
    header.virtual_size = d->disk.virtual_size;
    header.granularity = cycle->granularity;
    header.flags = flags | (cycle->app_consistent ? VR_SPOOL_FLAG_APP_CONSISTENT : 0);
    header.base_cycle = cycle->base;
    header.cycle = cycle->cycle;
    if (cycle->stream_relationship != NULL) {
        VrShipIdentity id = { cycle->stream_relationship, cycle->stream_epoch };
        VrSenderFeed *feed = g_steal_pointer(&cycle->stream_feed); /* this stream's only */

        writer->stream = vr_ship_writer_new(path, &header, &id, error);
        return writer->stream != NULL &&
               (feed == NULL || vr_ship_writer_set_feed(writer->stream, feed, error));
    }
    writer->spool = vr_spool_writer_new(path, &header, error);
    return writer->spool != NULL;
}

/* After the reads: the budget once more (a spool taken while the fleece overflowed is not
 * trusted), then the spool is made durable. */
static bool
vr_capture_spool_finish(VrCaptureCycle *cycle, struct nbd_handle *nbd, VrCaptureWriter *writer,
                        VrSpoolTotals *totals, GError **error)
{
    VrShipTotals stream_totals;

    nbd_shutdown(nbd, 0);
    if (!vr_capture_cycle_events_ok(cycle, error))
        return false;
    if (writer->spool != NULL)
        return vr_spool_writer_finish(writer->spool, totals, error);
    if (!vr_ship_writer_finish(writer->stream, &stream_totals, error))
        return false;
    if (totals != NULL)
        *totals = (VrSpoolTotals){ stream_totals.records, stream_totals.data_bytes,
                                   stream_totals.zero_bytes };
    return true;
}

bool
vr_capture_cycle_spool(VrCaptureCycle *cycle, guint index, const char *path, VrSpoolTotals *totals,
                       GError **error)
{
    VrCaptureCycleDisk *d;
    g_autoptr(VrNbdHandle) nbd = NULL;
    g_auto(VrCaptureWriter) writer = { 0 };
    g_autoptr(GArray) extents = g_array_new(FALSE, FALSE, sizeof(VrCaptureExtent));
    g_autofree char *context = NULL;
    VrCaptureSpoolSink sink = { NULL, cycle->granularity };

    g_return_val_if_fail(index < cycle->disks->len, false);
    d = g_ptr_array_index(cycle->disks, index);
    cycle->progress_size = d->disk.virtual_size;
    cycle->progress_bytes = 0;
    if (cycle->base == 0)
        context = g_strdup(LIBNBD_CONTEXT_BASE_ALLOCATION);
    else if (cycle->attached_bitmap != NULL)
        context = g_strdup_printf("qemu:dirty-bitmap:%s", cycle->attached_bitmap);
    else
        context =
            g_strdup_printf("qemu:dirty-bitmap:%s%s", cycle->capture->prefix, VR_CAPTURE_FROZEN);
    nbd = vr_capture_connect_export(cycle, d, context, error);
    if (nbd == NULL)
        return false;
    if (!vr_capture_spool_new(cycle, d, cycle->base == 0 ? VR_SPOOL_FLAG_FULL : 0, path, &writer,
                              error))
        return false;
    sink.writer = &writer;
    for (uint64_t w = 0; w < d->disk.virtual_size; w += VR_CAPTURE_WINDOW) {
        uint64_t end = MIN(d->disk.virtual_size, w + VR_CAPTURE_WINDOW);

        if (!vr_capture_map_window(
                nbd, context, cycle->base == 0 ? VR_CAPTURE_MAP_ALLOCATED : VR_CAPTURE_MAP_DIRTY, w,
                end, extents, error) ||
            !vr_capture_read_extents(cycle, nbd, extents, vr_capture_spool_chunk, &sink, error))
            return false;
    }
    return vr_capture_spool_finish(cycle, nbd, &writer, totals, error);
}

bool
vr_capture_cycle_spool_resync(VrCaptureCycle *cycle, guint index, const char *hashes,
                              const char *path, VrSpoolTotals *totals, GError **error)
{
    VrCaptureCycleDisk *d;
    g_autoptr(VrNbdHandle) nbd = NULL;
    g_auto(VrCaptureWriter) writer = { 0 };
    g_autoptr(VrHashlistReader) remote = NULL;
    g_autoptr(GArray) extents = g_array_new(FALSE, FALSE, sizeof(VrCaptureExtent));
    g_autofree uint8_t *zeroes = NULL;
    VrCaptureResyncSink sink = { 0 };

    g_return_val_if_fail(index < cycle->disks->len, false);
    d = g_ptr_array_index(cycle->disks, index);
    cycle->progress_size = d->disk.virtual_size;
    cycle->progress_bytes = 0;
    if (cycle->base != 0) {
        g_set_error_literal(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                            "a resync reads a cycle begun without a base");
        return false;
    }
    remote = vr_hashlist_reader_open(hashes, error);
    if (remote == NULL)
        return false;
    if (vr_hashlist_reader_get_virtual_size(remote) != d->disk.virtual_size) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "the replica's hash list of disk '%s' is for %" PRIu64 " bytes, not %" PRIu64,
                    d->target, vr_hashlist_reader_get_virtual_size(remote), d->disk.virtual_size);
        return false;
    }
    nbd = vr_capture_connect_export(cycle, d, LIBNBD_CONTEXT_BASE_ALLOCATION, error);
    if (nbd == NULL)
        return false;
    if (!vr_capture_spool_new(cycle, d, VR_SPOOL_FLAG_RESYNC, path, &writer, error))
        return false;
    zeroes = g_malloc0(VR_HASHLIST_BLOCK_SIZE);
    sink.writer = &writer;
    sink.remote = remote;
    sink.zeroes = zeroes;
    vr_hashlist_digest(zeroes, VR_HASHLIST_BLOCK_SIZE, sink.zero_digest);
    for (uint64_t w = 0; w < d->disk.virtual_size; w += VR_CAPTURE_WINDOW) {
        uint64_t end = MIN(d->disk.virtual_size, w + VR_CAPTURE_WINDOW);
        g_autoptr(GArray) blocks = NULL;

        if (!vr_capture_map_window(nbd, LIBNBD_CONTEXT_BASE_ALLOCATION, VR_CAPTURE_MAP_ALL, w, end,
                                   extents, error))
            return false;
        /* Whole blocks, so that each is hashed whole; holes are compared without a read. */
        blocks = vr_capture_extents_align(extents, w, end, VR_HASHLIST_BLOCK_SIZE);
        if (!vr_capture_read_extents(cycle, nbd, blocks, vr_capture_resync_chunk, &sink, error))
            return false;
    }
    return vr_capture_spool_finish(cycle, nbd, &writer, totals, error);
}

/* ---- after the cycle ---------------------------------------------------------------- */

bool
vr_capture_ack(VrCapture *capture, const VrCaptureDisk *disks, guint n_disks, uint64_t cycle,
               GError **error)
{
    g_autoptr(GPtrArray) nodes = NULL;
    g_autoptr(VrQmpTransaction) tx = vr_qmp_transaction_new();

    g_return_val_if_fail(capture->client != NULL, false);
    nodes = vr_qmp_query_named_block_nodes(capture->client, error);
    if (nodes == NULL)
        return false;
    for (guint i = 0; i < n_disks; i++) {
        VrQmpBlockNode *node = vr_qmp_block_nodes_find(nodes, disks[i].node_name);

        if (node == NULL)
            continue;
        for (guint j = 0; j < node->bitmaps->len; j++) {
            VrQmpBitmapInfo *b = g_ptr_array_index(node->bitmaps, j);
            uint64_t n = vr_capture_bitmap_cycle(capture, b->name);

            if (n != 0 && n < cycle)
                vr_qmp_transaction_add_bitmap_remove(tx, node->node_name, b->name);
        }
    }
    if (vr_qmp_transaction_get_length(tx) == 0)
        return true;
    if (!vr_qmp_transaction_execute(capture->client, tx, error)) {
        g_prefix_error(error, "cannot release bitmaps before cycle %" PRIu64 ": ", cycle);
        return false;
    }
    return true;
}

/* Remove the fd sets whose descriptors carry our prefix as their opaque string. */
static bool
vr_capture_remove_fdsets(VrCapture *capture, GError **error)
{
    g_autoptr(json_object) sets =
        vr_qmp_client_execute(capture->client, "query-fdsets", NULL, error);

    if (sets == NULL)
        return false;
    for (size_t i = 0;
         json_object_is_type(sets, json_type_array) && i < json_object_array_length(sets); i++) {
        json_object *set = json_object_array_get_idx(sets, i);
        json_object *fds = vr_json_get_array(set, "fds");
        int64_t id = -1;
        bool ours = false;

        for (size_t j = 0; fds != NULL && j < json_object_array_length(fds); j++) {
            const char *opaque = vr_json_get_string(json_object_array_get_idx(fds, j), "opaque");

            ours = ours || (opaque != NULL && g_str_has_prefix(opaque, capture->prefix));
        }
        if (ours && vr_json_get_int64(set, "fdset-id", &id)) {
            g_autoptr(GError) local = NULL;

            if (!vr_qmp_remove_fd(capture->client, id, &local))
                vr_capture_skip(&local, "remove-fd");
        }
    }
    return true;
}

bool
vr_capture_reconcile(VrCapture *capture, GError **error)
{
    g_autoptr(GPtrArray) exports = vr_qmp_query_block_exports(capture->client, error);
    g_autoptr(GPtrArray) jobs = NULL;
    g_autoptr(GPtrArray) nodes = NULL;
    g_autoptr(GDir) dir = NULL;
    g_autofree char *socket_path = NULL;
    g_autoptr(GError) local = NULL;
    bool others = false;
    bool ours = false;
    bool listening;
    const char *name;

    if (exports == NULL)
        return false;
    for (guint i = 0; i < exports->len; i++) {
        VrQmpExportInfo *e = g_ptr_array_index(exports, i);

        if (g_str_has_prefix(e->id, capture->prefix)) {
            vr_capture_remove_export(capture, e->id);
            ours = true;
        } else {
            others = true;
        }
    }
    /*
     * The NBD server is ours when it served our exports, or when our socket is still there
     * (we remove it at every teardown); never when it serves someone else's.
     */
    socket_path = g_strdup_printf("%s/%snbd.sock", capture->workdir, capture->prefix);
    listening = vr_capture_socket_accepts(socket_path);
    if (!others && (ours || listening)) {
        if (vr_qmp_nbd_server_stop(capture->client, &local))
            listening = false;
        else
            vr_capture_skip(&local, "nbd-server-stop");
    }
    if (!listening)
        g_unlink(socket_path);

    jobs = vr_qmp_query_jobs(capture->client, error);
    if (jobs == NULL)
        return false;
    for (guint i = 0; i < jobs->len; i++) {
        VrQmpJobInfo *j = g_ptr_array_index(jobs, i);

        if (g_str_has_prefix(j->id, capture->prefix))
            vr_capture_remove_job(capture, j->id);
    }
    nodes = vr_qmp_query_named_block_nodes(capture->client, error);
    if (nodes == NULL)
        return false;
    for (guint i = 0; i < nodes->len; i++) {
        VrQmpBlockNode *n = g_ptr_array_index(nodes, i);

        /* The fleece's protocol node ("-file") goes with it. */
        if (g_str_has_prefix(n->node_name, capture->prefix) &&
            !g_str_has_suffix(n->node_name, "-file"))
            vr_capture_remove_node(capture, n->node_name);
    }
    if (capture->flags & VR_CAPTURE_PASS_FDS) {
        g_autofree char *fdname = g_strconcat(capture->prefix, "nbd", NULL);

        if (!vr_qmp_closefd(capture->client, fdname, &local))
            vr_capture_skip(&local, "closefd");
        if (!vr_capture_remove_fdsets(capture, &local))
            vr_capture_skip(&local, "query-fdsets");
    }
    dir = g_dir_open(capture->workdir, 0, NULL);
    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
        if (g_str_has_prefix(name, capture->prefix) && g_str_has_suffix(name, ".qcow2")) {
            g_autofree char *path = g_build_filename(capture->workdir, name, NULL);

            g_unlink(path);
        }
    }
    return true;
}
