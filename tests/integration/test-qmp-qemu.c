/*
 * test-qmp-qemu.c: the QMP client against a real qemu-system-x86_64 (-S, no guest OS)
 *
 * A virtio-blk device on a qcow2 image; guest writes through HMP qemu-io on the device's
 * BlockBackend (research/qemu-bitmaps.md §5.3); file descriptors passed with SCM_RIGHTS.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "vr-qmp-block.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-test-util.h"

#define BACKEND "/machine/peripheral/vda/virtio-backend"

typedef struct {
    char *dir;
    VrTestProcess *qemu;
    VrQmpClient *client;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *name = g_strdup_printf("qemu%u", serial++);
    g_autofree char *image = NULL;
    g_autofree char *qmp = NULL;

    if (vr_test_skip_without("qemu-system-x86_64") || vr_test_skip_without("qemu-img"))
        return;
    fx->dir = vr_test_path(name);
    g_assert_no_errno(g_mkdir_with_parents(fx->dir, 0755));
    image = g_build_filename(fx->dir, "disk.qcow2", NULL);
    qmp = g_build_filename(fx->dir, "qmp.sock", NULL);
    vr_test_qcow2_create(image, "64M");

    {
        const char *images[] = { image, NULL };

        fx->qemu = vr_test_qemu_start(qmp, images, true);
    }
    fx->client = vr_test_connect_unix(qmp);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    if (fx->client != NULL)
        vr_qmp_client_close(fx->client);
    g_clear_object(&fx->client);
    g_clear_pointer(&fx->qemu, vr_test_process_free);
    g_free(fx->dir);
}

static void
hmp_write(Fixture *fx, const char *io)
{
    vr_test_hmp_qemu_io(fx->client, BACKEND, io);
}

static void
test_query_block(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) devices = NULL;
    VrQmpBlockDevice *device;

    if (fx->client == NULL)
        return;
    devices = vr_qmp_query_block(fx->client, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(devices->len, ==, 1);
    device = g_ptr_array_index(devices, 0);
    /* -blockdev: no legacy drive name; virtio-blk reports its backend child's QOM path. */
    g_assert_cmpstr(device->device, ==, "");
    g_assert_cmpstr(device->qdev, ==, BACKEND);
    g_assert_nonnull(device->inserted);
    g_assert_cmpstr(device->inserted->node_name, ==, "disk0");
    g_assert_cmpstr(device->inserted->drv, ==, "qcow2");
    g_assert_cmpuint(device->inserted->virtual_size, ==, 64 * 1024 * 1024);
}

static void
test_hmp_write_dirty(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    bool ok;

    if (fx->client == NULL)
        return;
    ok = vr_qmp_bitmap_add(fx->client, "disk0", "vr-test", true, false, 0, &error);
    g_assert_no_error(error);
    g_assert_true(ok);

    hmp_write(fx, "write -P 0xab 1M 64k");
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, "disk0", "vr-test"), ==, 65536);
    /* Write-zeroes and discard are recorded too (§7 item 13). */
    hmp_write(fx, "write -z 16M 64k");
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, "disk0", "vr-test"), ==, 2 * 65536);
    hmp_write(fx, "discard 32M 64k");
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, "disk0", "vr-test"), ==, 3 * 65536);
}

static void
test_add_fd_blockdev(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *image = g_build_filename(fx->dir != NULL ? fx->dir : "", "fd.qcow2", NULL);
    g_autofree char *filename = NULL;
    g_autoptr(GPtrArray) nodes = NULL;
    VrQmpBlockNode *node;
    int64_t fdset = -1;
    bool ok;
    int fd;

    if (fx->client == NULL)
        return;
    vr_test_qcow2_create(image, "32M");
    fd = open(image, O_RDWR | O_CLOEXEC);
    g_assert_no_errno(fd);
    ok = vr_qmp_add_fd(fx->client, fd, -1, "vr-test", &fdset, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    /* QEMU has its own copy: ours can go, and the unlinked file stays reachable by fd. */
    close(fd);
    g_assert_no_errno(unlink(image));

    filename = g_strdup_printf("/dev/fdset/%" G_GINT64_FORMAT, fdset);
    ok = vr_qmp_blockdev_add_qcow2(fx->client, "vr-fd", filename, NULL, false, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    nodes = vr_qmp_query_named_block_nodes(fx->client, &error);
    g_assert_no_error(error);
    node = vr_qmp_block_nodes_find(nodes, "vr-fd");
    g_assert_nonnull(node);
    g_assert_cmpuint(node->virtual_size, ==, 32 * 1024 * 1024);

    /* The threshold helper on a node of ours. */
    ok = vr_qmp_block_set_write_threshold(fx->client, "vr-fd", 1024 * 1024, &error);
    g_assert_no_error(error);
    g_assert_true(ok);

    ok = vr_qmp_blockdev_del(fx->client, "vr-fd", &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    ok = vr_qmp_remove_fd(fx->client, fdset, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
}

static int
listen_unix(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_no_errno(fd);
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_no_errno(bind(fd, (struct sockaddr *)&addr, sizeof(addr)));
    g_assert_no_errno(listen(fd, 4));
    return fd;
}

static void
test_getfd_nbd_server(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *sock = NULL;
    g_autofree char *uri = NULL;
    g_autofree char *out = NULL;
    const char *bitmaps[] = { "vr-frozen", NULL };
    bool ok;
    int fd;

    if (fx->client == NULL || vr_test_skip_without("nbdinfo"))
        return;
    /* A listening socket we made, handed over: QEMU never needs the path. */
    sock = g_build_filename(fx->dir, "nbd.sock", NULL);
    fd = listen_unix(sock);
    ok = vr_qmp_getfd(fx->client, fd, "vr-nbd", &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_true(ok);
    ok = vr_qmp_nbd_server_start_fd(fx->client, "vr-nbd", &error);
    g_assert_no_error(error);
    g_assert_true(ok);

    ok = vr_qmp_bitmap_add(fx->client, "disk0", "vr-frozen", false, true, 65536, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    ok = vr_qmp_block_export_add_nbd(fx->client, "vr-exp", "disk0", "vda", false, bitmaps, &error);
    g_assert_no_error(error);
    g_assert_true(ok);

    /* A real NBD client sees the export and the bitmap's meta context. */
    uri = g_strdup_printf("nbd+unix:///vda?socket=%s", sock);
    {
        const char *argv[] = { "nbdinfo", "--list", "--json", uri, NULL };

        out = vr_test_run(argv);
    }
    g_assert_nonnull(strstr(out, "\"export-name\": \"vda\""));
    g_assert_nonnull(strstr(out, "qemu:dirty-bitmap:vr-frozen"));

    /* An exported bitmap is busy. */
    {
        g_autoptr(VrQmpBitmapInfo) info =
            vr_qmp_query_bitmap(fx->client, "disk0", "vr-frozen", &error);

        g_assert_no_error(error);
        g_assert_true(info->busy);
    }

    ok = vr_qmp_block_export_del(fx->client, "vr-exp", true, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    ok = vr_qmp_nbd_server_stop(fx->client, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    /* Stopped: a second stop is QEMU's error. */
    ok = vr_qmp_nbd_server_stop(fx->client, &error);
    g_assert_false(ok);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/qmp/qemu/query-block", test_query_block);
    ADD("/qmp/qemu/hmp-write-dirty", test_hmp_write_dirty);
    ADD("/qmp/qemu/add-fd-blockdev", test_add_fd_blockdev);
    ADD("/qmp/qemu/getfd-nbd-server", test_getfd_nbd_server);
#undef ADD

    return g_test_run();
}
