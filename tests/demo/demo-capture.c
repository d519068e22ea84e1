/*
 * demo-capture.c: two replication cycles of a running QEMU, shown step by step
 *
 * A QEMU with a 256 MiB qcow2 disk and no guest OS; "guest" writes go through HMP qemu-io
 * on the virtio-blk device. Cycle 1 copies what is allocated; cycle 2 only what changed,
 * while the guest overwrites data during the read (the spool keeps the data as it was at
 * the cut). Each spool is applied to a raw replica, which qemu-img compare then finds
 * identical to QEMU's point-in-time view. Run by `./run demo`; it cleans up after itself.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <unistd.h>

#include "vr-capture.h"
#include "vr-qmp-block.h"
#include "vr-qmp-json.h"
#include "vr-spool.h"
#include "vr-test-util.h"

#define SIZE    (256 * 1024 * 1024)
#define BACKEND "/machine/peripheral/vda/virtio-backend"

static void step(const char *format, ...) G_GNUC_PRINTF(1, 2);

static void
step(const char *format, ...)
{
    va_list args;

    va_start(args, format);
    printf("\n== ");
    vprintf(format, args);
    printf("\n");
    va_end(args);
    fflush(stdout);
}

static void
guest(VrQmpClient *client, const char *io)
{
    printf("   guest: %s\n", io);
    vr_test_hmp_qemu_io(client, BACKEND, io);
}

static void
check(bool ok, GError *error)
{
    if (!ok) {
        fprintf(stderr, "demo-capture: %s\n", error != NULL ? error->message : "failed");
        exit(1);
    }
}

/* Apply @spool to the raw file @replica; print what it held. */
static void
apply(const char *spool, const char *replica)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrSpoolReader) reader = vr_spool_reader_open(spool, &error);
    g_autofree uint8_t *zero = g_malloc0(VR_SPOOL_MAX_RECORD);
    VrSpoolTotals totals = { 0 };
    VrSpoolRecord rec;
    int fd = open(replica, O_WRONLY | O_CLOEXEC);

    check(reader != NULL && fd >= 0, error);
    while (vr_spool_reader_next(reader, &rec, &totals, &error)) {
        const void *src = rec.data != NULL ? rec.data : zero;

        for (uint64_t done = 0; done < rec.length;) {
            uint64_t n = MIN(rec.length - done, (uint64_t)VR_SPOOL_MAX_RECORD);

            check(pwrite(fd, rec.data != NULL ? (const uint8_t *)src + done : zero, n,
                         rec.offset + done) == (ssize_t)n,
                  NULL);
            done += n;
        }
    }
    check(error == NULL, error);
    close(fd);
    printf("   spool: %" PRIu64 " records, %.1f KiB of data, %.1f KiB of zeroes (checked: "
           "every record checksum and the stream digest)\n",
           totals.records, totals.data_bytes / 1024.0, totals.zero_bytes / 1024.0);
}

static void
show_bitmaps(VrQmpClient *client)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) nodes = vr_qmp_query_named_block_nodes(client, &error);
    VrQmpBlockNode *node;

    check(nodes != NULL, error);
    node = vr_qmp_block_nodes_find(nodes, "disk0");
    for (guint i = 0; node != NULL && i < node->bitmaps->len; i++) {
        VrQmpBitmapInfo *b = g_ptr_array_index(node->bitmaps, i);

        printf("   bitmap %s: persistent=%d recording=%d dirty=%" PRIu64 " bytes\n", b->name,
               b->persistent, b->recording, b->count);
    }
}

static void
cycle(VrCapture *capture, VrQmpClient *client, uint64_t base, uint64_t n, const char *spool,
      const char *replica, bool overwrite)
{
    g_autoptr(GError) error = NULL;
    VrCaptureDisk disk = { "vda", "disk0", BACKEND, SIZE };
    g_autoptr(VrCaptureCycle) c = vr_capture_cycle_begin(capture, &disk, 1, base, n, &error);
    g_autofree char *uri = NULL;
    g_autofree char *out = NULL;

    check(c != NULL, error);
    {
        g_autofree char *new_bitmap = vr_capture_bitmap_name(capture, n);
        g_autofree char *base_bitmap = vr_capture_bitmap_name(capture, base);

        if (base == 0)
            printf("   cut: one QMP transaction: blockdev-backup sync=none, new bitmap %s\n",
                   new_bitmap);
        else
            printf("   cut: one QMP transaction: blockdev-backup sync=none, new bitmap %s, a "
                   "frozen copy of %s to read\n",
                   new_bitmap, base_bitmap);
    }
    if (overwrite)
        guest(client, "write -P 0xee 64M 64k");
    check(vr_capture_cycle_spool(c, 0, spool, NULL, &error), error);
    apply(spool, replica);
    uri = g_strdup_printf("nbd+unix:///vda?socket=%s", vr_capture_cycle_get_nbd_socket(c));
    {
        const char *argv[] = {
            "qemu-img", "compare", "-f", "raw", "-F", "raw", replica, uri, NULL
        };

        out = vr_test_run(argv);
    }
    printf("   qemu-img compare replica vs QEMU's point-in-time view: %s", out);
    vr_capture_cycle_end(c);
    printf("   teardown: export, NBD server, job, fleece node and file removed\n");
}

int
main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *image = vr_test_path("demo.qcow2");
    g_autofree char *replica = vr_test_path("replica.raw");
    g_autofree char *qmp = vr_test_path("qmp.sock");
    g_autofree char *work = vr_test_path("work");
    g_autofree char *spool1 = vr_test_path("cycle1.spool");
    g_autofree char *spool2 = vr_test_path("cycle2.spool");
    g_autofree char *version = NULL;
    g_autoptr(VrTestProcess) qemu = NULL;
    g_autoptr(VrQmpClient) client = NULL;
    g_autoptr(VrCapture) capture = NULL;
    static const uint8_t uuid[16] = { 0xde, 0x30 };
    VrCaptureDisk disk = { "vda", "disk0", BACKEND, SIZE };
    int fd;

    step("a QEMU with a 256 MiB qcow2 disk and no guest OS (%s)", vr_test_accel());
    vr_test_qcow2_create(image, "256M");
    fd = open(replica, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    check(fd >= 0 && ftruncate(fd, SIZE) == 0, NULL);
    close(fd);
    g_mkdir_with_parents(work, 0755);
    {
        const char *images[] = { image, NULL };

        qemu = vr_test_qemu_start(qmp, images, false);
    }
    client = vr_test_connect_unix(qmp);
    version = vr_json_to_string(vr_json_get_object(vr_qmp_client_get_version(client), "qemu"));
    printf("   QMP connected: QEMU %s\n", version);
    capture = vr_capture_new(client, "demo", uuid, work, VR_CAPTURE_PASS_FDS, &error);
    check(capture != NULL, error);

    step("the guest writes some data");
    guest(client, "write -P 0x11 0 1M");
    guest(client, "write -P 0x22 64M 256k");

    step("cycle 1 (full): starts tracking, copies what is allocated into a spool");
    cycle(capture, client, 0, 1, spool1, replica, false);
    show_bitmaps(client);

    step("the guest changes 3 places, one of them to zeroes");
    guest(client, "write -P 0x33 4k 4k");
    guest(client, "write -P 0x44 128M 64k");
    guest(client, "write -z 64M 64k");

    step("cycle 2 (incremental from 1): only the changed 64 KiB blocks; during the read the "
         "guest overwrites one of them, and the spool keeps it as it was at the cut");
    cycle(capture, client, 1, 2, spool2, replica, true);
    show_bitmaps(client);

    step("the replica applied cycle 2 durably: the primary releases bitmap 1");
    check(vr_capture_ack(capture, &disk, 1, 2, &error), error);
    show_bitmaps(client);

    step("done: the next cycle will read what bitmap 2 recorded since cycle 2's cut");
    vr_qmp_client_close(client);
    return 0;
}
