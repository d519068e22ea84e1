/*
 * bench-capture.c: time one incremental capture cycle, and nbdcopy over the same extents
 *
 *   bench-capture --workdir DIR --size BYTES --dirty-blocks N [--nbdcopy] [--seed S]
 *
 * A qemu-storage-daemon serves a fresh (sparse) qcow2 disk. Cycle 1 (full) starts tracking;
 * then N distinct random 64 KiB blocks of random (incompressible) data are written through
 * a writable NBD export, as a guest would. Cycle 2 is timed from the cut to a durable spool
 * and the teardown. With --nbdcopy, the disk itself (holding exactly those N blocks) is then
 * exported read-only and nbdcopy copies its allocated extents into a local file: the same
 * bytes, from the same kind of export, in the same run. The page cache is dropped before
 * each timed step when the kernel lets us. Output: key=value lines; tests/bench/capture
 * runs this and prints the ratios.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <libnbd.h>

#include "vr-capture.h"
#include "vr-qmp-block.h"

#define BLOCK 65536

static char *opt_workdir;
static gint64 opt_size;
static gint opt_blocks = 3276;
static gboolean opt_nbdcopy;
static gint opt_seed = 1;
static gint opt_depth;

static GOptionEntry options[] = {
    { "workdir", 0, 0, G_OPTION_ARG_FILENAME, &opt_workdir, "Scratch directory", "DIR" },
    { "size", 0, 0, G_OPTION_ARG_INT64, &opt_size, "Virtual disk size in bytes", "BYTES" },
    { "dirty-blocks", 0, 0, G_OPTION_ARG_INT, &opt_blocks, "64 KiB blocks to dirty", "N" },
    { "nbdcopy", 0, 0, G_OPTION_ARG_NONE, &opt_nbdcopy, "Also time nbdcopy", NULL },
    { "seed", 0, 0, G_OPTION_ARG_INT, &opt_seed, "Random seed", "S" },
    { "depth", 0, 0, G_OPTION_ARG_INT, &opt_depth, "NBD requests in flight", "N" },
    { NULL },
};

static void
die(const char *what, GError *error)
{
    g_printerr("bench-capture: %s: %s\n", what, error != NULL ? error->message : "failed");
    exit(1);
}

static void
child_setup(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* Drop the page cache so that both timed readers start cold; false if not allowed. */
static bool
drop_caches(void)
{
    FILE *f;

    sync();
    f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f == NULL)
        return false;
    fputs("3\n", f);
    return fclose(f) == 0;
}

static void
run(const char *const *argv)
{
    g_autoptr(GError) error = NULL;
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                      &status, &error) ||
        !g_spawn_check_wait_status(status, &error))
        die(argv[0], error);
}

/* One cycle; the time of its phases goes to @phases (cut, spool, teardown), if non-NULL. */
static void
cycle(VrCapture *capture, const VrCaptureDisk *disk, uint64_t base, uint64_t n, const char *spool,
      VrSpoolTotals *totals, double *phases)
{
    g_autoptr(GError) error = NULL;
    gint64 t0 = g_get_monotonic_time();
    g_autoptr(VrCaptureCycle) c = vr_capture_cycle_begin(capture, disk, 1, base, n, &error);
    gint64 t1 = g_get_monotonic_time();
    gint64 t2;

    if (c == NULL)
        die("cut", error);
    if (!vr_capture_cycle_spool(c, 0, spool, totals, &error))
        die("spool", error);
    t2 = g_get_monotonic_time();
    vr_capture_cycle_end(c);
    if (phases != NULL) {
        phases[0] = (t1 - t0) / 1e6;
        phases[1] = (t2 - t1) / 1e6;
        phases[2] = (g_get_monotonic_time() - t2) / 1e6;
    }
}

/* The guest: N distinct random blocks of random data, through a writable export. */
static void
dirty(VrQmpClient *client, const char *sock)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GRand) rand = g_rand_new_with_seed(opt_seed);
    g_autofree uint8_t *buf = g_malloc(BLOCK);
    g_autoptr(GHashTable) used = g_hash_table_new(g_direct_hash, g_direct_equal);
    uint64_t nblocks = (uint64_t)opt_size / BLOCK;
    struct nbd_handle *nbd;

    if (!vr_qmp_nbd_server_start_unix(client, sock, &error) ||
        !vr_qmp_block_export_add_nbd(client, "guest", "disk0", "guest", true, NULL, &error))
        die("guest export", error);
    nbd = nbd_create();
    if (nbd == NULL || nbd_set_export_name(nbd, "guest") < 0 || nbd_connect_unix(nbd, sock) < 0)
        die(nbd_get_error(), NULL);
    for (int i = 0; i < opt_blocks;) {
        uint64_t b = (uint64_t)g_rand_int_range(rand, 0, (gint32)MIN(nblocks, G_MAXINT32));

        if (g_hash_table_contains(used, GSIZE_TO_POINTER(b + 1)))
            continue;
        g_hash_table_add(used, GSIZE_TO_POINTER(b + 1));
        for (int j = 0; j < BLOCK; j += 4)
            *(guint32 *)(buf + j) = g_rand_int(rand);
        if (nbd_pwrite(nbd, buf, BLOCK, b * BLOCK, 0) < 0)
            die(nbd_get_error(), NULL);
        i++;
    }
    if (nbd_flush(nbd, 0) < 0)
        die(nbd_get_error(), NULL);
    nbd_shutdown(nbd, 0);
    nbd_close(nbd);
    if (!vr_qmp_block_export_del(client, "guest", true, &error))
        die("guest export", error);
    /* The export goes away asynchronously; the server stops once it has. */
    for (int tries = 0; tries < 100; tries++) {
        g_autoptr(GPtrArray) exports = vr_qmp_query_block_exports(client, &error);

        if (exports == NULL)
            die("query-block-exports", error);
        if (exports->len == 0)
            break;
        g_usleep(10000);
    }
    if (!vr_qmp_nbd_server_stop(client, &error))
        die("nbd-server-stop", error);
}

int
main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GOptionContext) ctx = g_option_context_new("- time a capture cycle");
    g_autofree char *image = NULL;
    g_autofree char *qmp = NULL;
    g_autofree char *sock = NULL;
    g_autofree char *blockdev = NULL;
    g_autofree char *chardev = NULL;
    g_autofree char *size = NULL;
    g_autofree char *spool1 = NULL;
    g_autofree char *spool2 = NULL;
    g_autoptr(VrQmpClient) client = NULL;
    g_autoptr(VrCapture) capture = NULL;
    static const uint8_t uuid[16] = { 1 };
    VrSpoolTotals totals = { 0 };
    VrCaptureDisk disk = { "vda", "disk0", NULL, 0 };
    double phases[3] = { 0 };
    GPid pid;
    gint64 t0;
    gint64 t1;
    bool cold;

    g_option_context_add_main_entries(ctx, options, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &error))
        die("options", error);
    if (opt_workdir == NULL || opt_size <= 0 || opt_size % BLOCK != 0 || opt_blocks <= 0 ||
        (gint64)opt_blocks * BLOCK > opt_size)
        die("options", g_error_new_literal(G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                                           "--workdir, --size (a multiple of 64 KiB) and "
                                           "--dirty-blocks (fitting the disk) are needed"));
    image = g_build_filename(opt_workdir, "disk.qcow2", NULL);
    qmp = g_build_filename(opt_workdir, "qmp.sock", NULL);
    sock = g_build_filename(opt_workdir, "guest.sock", NULL);
    spool1 = g_build_filename(opt_workdir, "cycle1.spool", NULL);
    spool2 = g_build_filename(opt_workdir, "cycle2.spool", NULL);
    size = g_strdup_printf("%" G_GINT64_FORMAT, opt_size);
    g_unlink(image);
    g_unlink(spool1);
    g_unlink(spool2);
    run((const char *const[]){ "qemu-img", "create", "-q", "-f", "qcow2", image, size, NULL });

    blockdev =
        g_strdup_printf("driver=file,node-name=disk0-file,filename=%s,cache.direct=on", image);
    chardev = g_strdup_printf("socket,id=m0,path=%s,server=on,wait=off", qmp);
    {
        const char *qsd[] = { "qemu-storage-daemon",
                              "--blockdev",
                              blockdev,
                              "--blockdev",
                              "driver=qcow2,node-name=disk0,file=disk0-file",
                              "--chardev",
                              chardev,
                              "--monitor",
                              "chardev=m0",
                              NULL };

        g_unlink(qmp);
        if (!g_spawn_async(NULL, (char **)qsd, NULL,
                           G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, child_setup, NULL, &pid,
                           &error))
            die("qemu-storage-daemon", error);
    }
    for (int i = 0; i < 500 && !g_file_test(qmp, G_FILE_TEST_EXISTS); i++)
        g_usleep(10000);
    client = vr_qmp_client_new(vr_qmp_channel_unix_new(qmp));
    if (!vr_qmp_client_connect(client, NULL, &error))
        die("QMP", error);
    capture = vr_capture_new(client, "bench", uuid, opt_workdir, 0, &error);
    if (capture == NULL)
        die("capture", error);
    disk.virtual_size = opt_size;
    if (opt_depth > 0)
        vr_capture_set_read_queue(capture, opt_depth, 1024 * 1024);

    cycle(capture, &disk, 0, 1, spool1, &totals, NULL);
    dirty(client, sock);

    cold = drop_caches();
    t0 = g_get_monotonic_time();
    cycle(capture, &disk, 1, 2, spool2, &totals, phases);
    t1 = g_get_monotonic_time();
    if (totals.data_bytes + totals.zero_bytes != (uint64_t)opt_blocks * BLOCK)
        die("check",
            g_error_new(G_IO_ERROR, G_IO_ERROR_FAILED,
                        "the spool covers %" PRIu64 " bytes, not the %" PRIu64 " written",
                        totals.data_bytes + totals.zero_bytes, (uint64_t)opt_blocks * BLOCK));
    printf("size=%" G_GINT64_FORMAT "\ndirty_bytes=%" PRIu64 "\ncache=%s\n", opt_size,
           totals.data_bytes, cold ? "cold" : "warm");
    printf("capture_seconds=%.3f\ncut_seconds=%.3f\nspool_seconds=%.3f\nteardown_seconds=%.3f\n",
           (t1 - t0) / 1e6, phases[0], phases[1], phases[2]);

    if (opt_nbdcopy) {
        g_autofree char *uri = g_strdup_printf("nbd+unix:///disk?socket=%s", sock);
        g_autofree char *out = g_build_filename(opt_workdir, "nbdcopy.raw", NULL);
        int fd;

        if (!vr_qmp_nbd_server_start_unix(client, sock, &error) ||
            !vr_qmp_block_export_add_nbd(client, "disk", "disk0", "disk", false, NULL, &error))
            die("export", error);
        /* A sparse target of the disk's size, as the spool is a file too. */
        g_unlink(out);
        fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || ftruncate(fd, opt_size) < 0)
            die("nbdcopy target", NULL);
        close(fd);
        drop_caches();
        t0 = g_get_monotonic_time();
        run((const char *const[]){ "nbdcopy", "--destination-is-zero", "--flush", uri, out, NULL });
        t1 = g_get_monotonic_time();
        printf("nbdcopy_seconds=%.3f\n", (t1 - t0) / 1e6);
        g_unlink(out);
    }
    vr_qmp_client_close(client);
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    g_unlink(image);
    g_unlink(spool1);
    g_unlink(spool2);
    return 0;
}
