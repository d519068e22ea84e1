/*
 * test-qmp-libvirt.c: the QMP client through a real libvirtd (qemu:///system)
 *
 * Each test defines and starts (paused, TCG, no OS) a domain named with the test prefix,
 * so run-isolated.sh can remove it if the test dies.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/libvirt.h>

#include "vr-qmp-block.h"
#include "vr-qmp-disk.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-transaction.h"
#include "vr-test-util.h"

#define DISK_SIZE (64 * 1024 * 1024)

typedef struct {
    GMainContext *context;
    char *image;
    virConnectPtr conn;
    virDomainPtr domain;
    VrQmpClient *client;
    VrQmpDiskNode *vda;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autoptr(GError) error = NULL;
    g_autofree char *name = g_strdup_printf("%s-%u", vr_test_prefix(), serial++);
    g_autofree char *image_name = g_strdup_printf("%s.qcow2", name);
    g_autofree char *xml = NULL;
    g_autofree char *live = NULL;

    if (vr_test_skip_without("qemu-img"))
        return;
    fx->conn = vr_test_libvirt_connect();
    if (fx->conn == NULL)
        return;

    fx->image = vr_test_path(image_name);
    vr_test_qcow2_create(fx->image, "64M");
    /* TCG and paused: no guest code runs, and KVM quirks of the host play no part. */
    xml = g_strdup_printf("<domain type='qemu'>"
                          "  <name>%s</name>"
                          "  <memory unit='MiB'>64</memory>"
                          "  <os><type arch='x86_64' machine='q35'>hvm</type></os>"
                          "  <devices>"
                          "    <disk type='file' device='disk'>"
                          "      <driver name='qemu' type='qcow2'%s/>"
                          "      <source file='%s'/>"
                          "      <target dev='vda' bus='virtio'/>"
                          "    </disk>"
                          "    <memballoon model='none'/>"
                          "  </devices>"
                          "</domain>",
                          name, data != NULL ? " copy_on_read='on'" : "", fx->image);
    fx->domain = virDomainDefineXML(fx->conn, xml);
    g_assert_nonnull(fx->domain);
    g_assert_cmpint(virDomainCreateWithFlags(fx->domain, VIR_DOMAIN_START_PAUSED), ==, 0);

    /* libvirt's event thread owns the global default context: the client gets its own. */
    fx->context = g_main_context_new();
    g_main_context_push_thread_default(fx->context);
    fx->client = vr_qmp_client_new(vr_qmp_channel_libvirt_new(fx->domain));
    vr_qmp_client_connect(fx->client, NULL, &error);
    g_assert_no_error(error);

    live = virDomainGetXMLDesc(fx->domain, 0);
    g_assert_nonnull(live);
    fx->vda = vr_qmp_disk_resolve(fx->client, live, "vda", &error);
    g_assert_no_error(error);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    if (fx->client != NULL)
        vr_qmp_client_close(fx->client);
    g_clear_object(&fx->client);
    g_clear_pointer(&fx->vda, vr_qmp_disk_node_free);
    vr_test_libvirt_teardown(&fx->context, &fx->domain, &fx->conn);
    if (fx->image != NULL)
        unlink(fx->image);
    g_free(fx->image);
}

/* A guest write through the virtio-blk device's BlockBackend. */
static void
guest_write(Fixture *fx, const char *io)
{
    vr_test_hmp_qemu_io(fx->client, fx->vda->qdev, io);
}

static void
test_resolve(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *expected = NULL;
    g_autofree char *live = NULL;
    g_autoptr(VrQmpDiskNode) missing = NULL;

    if (fx->client == NULL)
        return;
    expected = g_strdup_printf("libvirt-%u-format", fx->vda->index);
    g_assert_cmpstr(fx->vda->node_name, ==, expected);
    g_assert_cmpstr(fx->vda->top_node, ==, expected);
    g_assert_cmpstr(fx->vda->format, ==, "qcow2");
    g_assert_cmpstr(fx->vda->source, ==, fx->image);
    g_assert_cmpuint(fx->vda->virtual_size, ==, DISK_SIZE);
    g_assert_true(g_str_has_suffix(fx->vda->qdev, "/virtio-backend"));

    live = virDomainGetXMLDesc(fx->domain, 0);
    missing = vr_qmp_disk_resolve(fx->client, live, "vdz", &error);
    g_assert_null(missing);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_NOT_FOUND);
    g_assert_nonnull(strstr(error->message, "vdz"));
}

/* With copy_on_read='on', libvirt puts a copy-on-read filter above the format node. */
static void
test_resolve_copy_on_read(Fixture *fx, gconstpointer data)
{
    g_autofree char *expected = NULL;

    if (fx->client == NULL)
        return;
    expected = g_strdup_printf("libvirt-%u-format", fx->vda->index);
    g_assert_cmpstr(fx->vda->node_name, ==, expected);
    g_assert_cmpstr(fx->vda->top_node, ==, "libvirt-CoR-vda");
}

static void
test_bitmap_hmp_write(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrQmpBitmapInfo) info = NULL;
    bool ok;

    if (fx->client == NULL)
        return;
    ok = vr_qmp_bitmap_add(fx->client, fx->vda->node_name, "vr-test-1", true, false, 0, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    info = vr_qmp_query_bitmap(fx->client, fx->vda->node_name, "vr-test-1", &error);
    g_assert_no_error(error);
    g_assert_true(info->persistent);
    g_assert_true(info->recording);
    g_assert_cmpuint(info->granularity, ==, 65536);
    g_assert_cmpuint(info->count, ==, 0);

    guest_write(fx, "write -P 0xab 1M 64k");
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, fx->vda->node_name, "vr-test-1"), ==, 65536);
    guest_write(fx, "write -P 0xcd 8M 4k");
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, fx->vda->node_name, "vr-test-1"), ==,
                     2 * 65536);
    /* The same granule again: no growth. */
    guest_write(fx, "write -P 0xef 1M 4k");
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, fx->vda->node_name, "vr-test-1"), ==,
                     2 * 65536);
}

static void
test_command_error(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) ret = NULL;

    if (fx->client == NULL)
        return;
    ret = vr_qmp_client_execute(fx->client, "no-such-command", NULL, &error);
    g_assert_null(ret);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND);
    g_assert_cmpstr(vr_qmp_error_get_class(error), ==, "CommandNotFound");
    g_clear_error(&error);

    /* The channel still works after an error, and ids still match. */
    ret = vr_qmp_client_execute(fx->client, "query-jobs", NULL, &error);
    g_assert_no_error(error);
    g_assert_true(json_object_is_type(ret, json_type_array));
}

static void
test_fd_passing(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *fleece = vr_test_path("fleece.qcow2");
    g_autofree char *filename = NULL;
    g_autoptr(GPtrArray) nodes = NULL;
    g_autoptr(VrQmpTransaction) tx = vr_qmp_transaction_new();
    g_autoptr(VrQmpEventWatch) watch = NULL;
    g_autoptr(json_object) event = NULL;
    VrQmpBlockNode *node;
    int64_t fdset = -1;
    bool ok;
    int fd;

    if (fx->client == NULL)
        return;
    /* Root-owned and 0600: QEMU (libvirt-qemu) could never open it by name. */
    vr_test_qcow2_create(fleece, "64M");
    g_assert_no_errno(chmod(fleece, 0600));
    fd = open(fleece, O_RDWR | O_CLOEXEC);
    g_assert_no_errno(fd);
    ok = vr_qmp_add_fd(fx->client, fd, -1, "vr-test-fleece", &fdset, &error);
    close(fd);
    g_assert_no_error(error);
    g_assert_true(ok);
    g_assert_cmpint(fdset, >=, 0);

    filename = g_strdup_printf("/dev/fdset/%" G_GINT64_FORMAT, fdset);
    ok = vr_qmp_blockdev_add_qcow2(fx->client, "vr-fleece", filename, fx->vda->node_name, false,
                                   &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    nodes = vr_qmp_query_named_block_nodes(fx->client, &error);
    g_assert_no_error(error);
    node = vr_qmp_block_nodes_find(nodes, "vr-fleece");
    g_assert_nonnull(node);
    g_assert_cmpstr(node->drv, ==, "qcow2");
    g_assert_cmpuint(node->virtual_size, ==, DISK_SIZE);

    /* Use it: the fleece cut over the libvirt channel, and its end as a libvirt event. */
    vr_qmp_transaction_add_blockdev_backup(tx, "vr-job", fx->vda->node_name, "vr-fleece", "none");
    vr_qmp_transaction_add_bitmap_add(tx, fx->vda->node_name, "vr-2", true, false, 65536);
    ok = vr_qmp_transaction_execute(fx->client, tx, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    /* A guest write after the cut copies the old cluster into our fd-passed image. */
    guest_write(fx, "write -P 0x11 4M 64k");
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, fx->vda->node_name, "vr-2"), ==, 65536);

    watch = vr_qmp_event_watch_new(fx->client, "BLOCK_JOB_CANCELLED", "device", "vr-job");
    ok = vr_qmp_block_job_cancel(fx->client, "vr-job", false, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    event = vr_qmp_event_watch_wait(watch, 10000, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vr_json_get_string(event, "event"), ==, "BLOCK_JOB_CANCELLED");
    g_assert_nonnull(vr_json_get_object(event, "timestamp"));

    ok = vr_qmp_job_dismiss(fx->client, "vr-job", &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    ok = vr_qmp_blockdev_del(fx->client, "vr-fleece", &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    ok = vr_qmp_remove_fd(fx->client, fdset, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
}

static void
test_domain_stopped(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) ret = NULL;

    if (fx->client == NULL)
        return;
    g_assert_cmpint(virDomainDestroy(fx->domain), ==, 0);
    ret = vr_qmp_client_execute(fx->client, "query-block", NULL, &error);
    g_assert_null(ret);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED);
    g_assert_false(vr_qmp_client_is_connected(fx->client));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/qmp/libvirt/resolve", test_resolve);
    g_test_add("/qmp/libvirt/resolve-copy-on-read", Fixture, "cor", fixture_setup,
               test_resolve_copy_on_read, fixture_teardown);
    ADD("/qmp/libvirt/bitmap-hmp-write", test_bitmap_hmp_write);
    ADD("/qmp/libvirt/command-error", test_command_error);
    ADD("/qmp/libvirt/fd-passing", test_fd_passing);
    ADD("/qmp/libvirt/domain-stopped", test_domain_stopped);
#undef ADD

    return g_test_run();
}
