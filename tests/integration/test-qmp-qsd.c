/*
 * test-qmp-qsd.c: the QMP client against a real qemu-storage-daemon
 *
 * The daemon serves a qcow2 image as node "disk0" with a writable NBD export "guest", which
 * stands in for guest writes (research/qemu-bitmaps.md §5.2).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <signal.h>

#include "vr-qmp-block.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-transaction.h"
#include "vr-test-util.h"

typedef struct {
    char *dir;
    char *image;
    char *qmp;
    char *nbd;
    VrTestProcess *qsd;
    VrQmpClient *client;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *name = g_strdup_printf("qsd%u", serial++);
    g_autofree char *blockdev_file = NULL;
    g_autofree char *nbd_addr = NULL;
    g_autofree char *chardev = NULL;

    if (vr_test_skip_without("qemu-storage-daemon") || vr_test_skip_without("qemu-img"))
        return;

    fx->dir = vr_test_path(name);
    g_assert_no_errno(g_mkdir_with_parents(fx->dir, 0755));
    fx->image = g_build_filename(fx->dir, "disk.qcow2", NULL);
    fx->qmp = g_build_filename(fx->dir, "qmp.sock", NULL);
    fx->nbd = g_build_filename(fx->dir, "nbd.sock", NULL);
    vr_test_qcow2_create(fx->image, "64M");

    blockdev_file = g_strdup_printf("driver=file,node-name=disk0-file,filename=%s", fx->image);
    nbd_addr = g_strdup_printf("addr.type=unix,addr.path=%s", fx->nbd);
    chardev = g_strdup_printf("socket,id=m0,path=%s,server=on,wait=off", fx->qmp);
    {
        const char *argv[] = { "qemu-storage-daemon",
                               "--blockdev",
                               blockdev_file,
                               "--blockdev",
                               "driver=qcow2,node-name=disk0,file=disk0-file",
                               "--nbd-server",
                               nbd_addr,
                               "--export",
                               "type=nbd,id=guest,node-name=disk0,name=guest,writable=on",
                               "--chardev",
                               chardev,
                               "--monitor",
                               "chardev=m0",
                               NULL };

        fx->qsd = vr_test_process_start(argv, fx->qmp);
    }
    fx->client = vr_test_connect_unix(fx->qmp);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    if (fx->client != NULL)
        vr_qmp_client_close(fx->client);
    g_clear_object(&fx->client);
    g_clear_pointer(&fx->qsd, vr_test_process_free);
    g_free(fx->dir);
    g_free(fx->image);
    g_free(fx->qmp);
    g_free(fx->nbd);
}

/* A guest write: qemu-io through the daemon's writable NBD export. */
static void
guest_write(Fixture *fx, const char *command)
{
    g_autofree char *uri = g_strdup_printf("nbd+unix:///guest?socket=%s", fx->nbd);
    const char *argv[] = { "qemu-io", "-f", "raw", "-c", command, uri, NULL };
    g_autofree char *out = vr_test_run(argv);
}

static void
test_capabilities(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) ret = NULL;
    json_object *version;
    json_object *qemu;
    int64_t major = 0;

    if (fx->client == NULL)
        return;
    version = vr_qmp_client_get_version(fx->client);
    qemu = vr_json_get_object(version, "qemu");
    g_assert_true(vr_json_get_int64(qemu, "major", &major));
    g_assert_cmpint(major, >=, 7);

    /* Negotiated: a command that exists only after qmp_capabilities works. */
    ret = vr_qmp_client_execute(fx->client, "query-block-exports", NULL, &error);
    g_assert_no_error(error);
    g_assert_true(json_object_is_type(ret, json_type_array));
    g_assert_cmpuint(json_object_array_length(ret), ==, 1);

    /* An unknown command becomes a command error with QEMU's class. */
    g_clear_pointer(&ret, json_object_put);
    ret = vr_qmp_client_execute(fx->client, "no-such-command", NULL, &error);
    g_assert_null(ret);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND);
    g_assert_cmpstr(vr_qmp_error_get_class(error), ==, "CommandNotFound");
    g_assert_nonnull(strstr(vr_qmp_error_get_desc(error), "no-such-command"));
}

static void
test_bitmap_roundtrip(Fixture *fx, gconstpointer data)
{
    bool ok;
    g_autoptr(GError) error = NULL;
    g_autoptr(VrQmpBitmapInfo) info = NULL;

    if (fx->client == NULL)
        return;
    ok = vr_qmp_bitmap_add(fx->client, "disk0", "vr-test-1", true, false, 65536, &error);
    g_assert_no_error(error);
    g_assert_true(ok);

    info = vr_qmp_query_bitmap(fx->client, "disk0", "vr-test-1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(info->name, ==, "vr-test-1");
    g_assert_cmpuint(info->granularity, ==, 65536);
    g_assert_cmpuint(info->count, ==, 0);
    g_assert_true(info->persistent);
    g_assert_true(info->recording);
    g_assert_false(info->busy);
    g_assert_false(info->inconsistent);

    /* 4 KiB written dirties one 64 KiB granule; a write across a boundary dirties two. */
    guest_write(fx, "write -P 0x22 1M 4k");
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, "disk0", "vr-test-1"), ==, 65536);
    guest_write(fx, "write -P 0x33 8160k 128k"); /* granules 127, 128, 129 */
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, "disk0", "vr-test-1"), ==, 65536 + 3 * 65536);

    ok = vr_qmp_bitmap_remove(fx->client, "disk0", "vr-test-1", &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    g_clear_pointer(&info, vr_qmp_bitmap_info_free);
    info = vr_qmp_query_bitmap(fx->client, "disk0", "vr-test-1", &error);
    g_assert_null(info);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_NOT_FOUND);
    g_clear_error(&error);

    /* Removing it again is QEMU's error, with its class and description. */
    g_assert_false(vr_qmp_bitmap_remove(fx->client, "disk0", "vr-test-1", &error));
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND);
    g_assert_cmpstr(vr_qmp_error_get_class(error), ==, "GenericError");
    g_assert_nonnull(strstr(vr_qmp_error_get_desc(error), "vr-test-1"));
}

static void
test_transaction_rollback(Fixture *fx, gconstpointer data)
{
    bool ok;
    g_autoptr(GError) error = NULL;
    g_autoptr(VrQmpTransaction) tx = vr_qmp_transaction_new();
    g_autoptr(VrQmpTransaction) good = vr_qmp_transaction_new();
    g_autoptr(GPtrArray) nodes = NULL;
    VrQmpBitmapRef src = { "disk0", "vr-a" };

    if (fx->client == NULL)
        return;
    /* Two valid actions, then one on a node that does not exist: none may remain. */
    vr_qmp_transaction_add_bitmap_add(tx, "disk0", "vr-a", true, false, 65536);
    vr_qmp_transaction_add_bitmap_add(tx, "disk0", "vr-b", false, true, 65536);
    vr_qmp_transaction_add_bitmap_add(tx, "no-such-node", "vr-c", true, false, 65536);
    g_assert_false(vr_qmp_transaction_execute(fx->client, tx, &error));
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND);
    g_clear_error(&error);

    nodes = vr_qmp_query_named_block_nodes(fx->client, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vr_qmp_block_nodes_find(nodes, "disk0")->bitmaps->len, ==, 0);

    /* The same builder API commits a valid transaction, merge included. */
    vr_qmp_transaction_add_bitmap_add(good, "disk0", "vr-a", true, false, 65536);
    vr_qmp_transaction_add_bitmap_add(good, "disk0", "vr-b", false, true, 65536);
    vr_qmp_transaction_add_bitmap_merge(good, "disk0", "vr-b", &src, 1);
    ok = vr_qmp_transaction_execute(fx->client, good, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    g_clear_pointer(&nodes, g_ptr_array_unref);
    nodes = vr_qmp_query_named_block_nodes(fx->client, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vr_qmp_block_nodes_find(nodes, "disk0")->bitmaps->len, ==, 2);
    g_assert_false(
        vr_qmp_block_node_find_bitmap(vr_qmp_block_nodes_find(nodes, "disk0"), "vr-b")->recording);
}

static void
test_events(Fixture *fx, gconstpointer data)
{
    bool ok;
    g_autoptr(GError) error = NULL;
    g_autofree char *fleece = g_build_filename(fx->dir, "fleece.qcow2", NULL);
    g_autoptr(VrQmpEventWatch) cancelled = NULL;
    g_autoptr(VrQmpEventWatch) deleted = NULL;
    g_autoptr(VrQmpTransaction) tx = vr_qmp_transaction_new();
    g_autoptr(json_object) event = NULL;
    g_autoptr(GPtrArray) jobs = NULL;
    const char *bitmaps[] = { "vr-frozen", NULL };

    if (fx->client == NULL)
        return;
    /* The cut of research/qemu-bitmaps.md §1.3, on one disk. */
    vr_test_qcow2_create(fleece, "64M");
    ok = vr_qmp_bitmap_add(fx->client, "disk0", "vr-1", true, false, 65536, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    guest_write(fx, "write -P 0x44 2M 64k");
    ok = vr_qmp_blockdev_add_qcow2(fx->client, "vr-fleece", fleece, "disk0", false, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    vr_qmp_transaction_add_blockdev_backup(tx, "vr-job", "disk0", "vr-fleece", "none");
    vr_qmp_transaction_add_bitmap_add(tx, "disk0", "vr-2", true, false, 65536);
    vr_qmp_transaction_add_bitmap_add(tx, "vr-fleece", "vr-frozen", false, true, 65536);
    vr_qmp_transaction_add_bitmap_merge(tx, "vr-fleece", "vr-frozen",
                                        &(VrQmpBitmapRef){ "disk0", "vr-1" }, 1);
    ok = vr_qmp_transaction_execute(fx->client, tx, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    g_assert_cmpuint(vr_test_bitmap_count(fx->client, "vr-fleece", "vr-frozen"), ==, 65536);

    /* An export of the fleece with the frozen bitmap, then its deletion, awaited. */
    ok = vr_qmp_block_export_add_nbd(fx->client, "vr-exp", "vr-fleece", "fleece", false, bitmaps,
                                     &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    deleted = vr_qmp_event_watch_new(fx->client, "BLOCK_EXPORT_DELETED", "id", "vr-exp");
    ok = vr_qmp_block_export_del(fx->client, "vr-exp", true, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    event = vr_qmp_event_watch_wait(deleted, 5000, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vr_json_get_string(event, "event"), ==, "BLOCK_EXPORT_DELETED");
    g_clear_pointer(&event, json_object_put);

    /* Cancel the fleece job and wait for its event, as teardown will. */
    cancelled = vr_qmp_event_watch_new(fx->client, "BLOCK_JOB_CANCELLED", "device", "vr-job");
    ok = vr_qmp_block_job_cancel(fx->client, "vr-job", false, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    event = vr_qmp_event_watch_wait(cancelled, 5000, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(vr_json_get_string(vr_json_get_object(event, "data"), "type"), ==, "backup");

    jobs = vr_qmp_query_jobs(fx->client, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(jobs->len, ==, 1);
    g_assert_cmpstr(((VrQmpJobInfo *)g_ptr_array_index(jobs, 0))->status, ==, "concluded");
    ok = vr_qmp_job_dismiss(fx->client, "vr-job", &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    ok = vr_qmp_blockdev_del(fx->client, "vr-fleece", &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    /* Its protocol node was created inline, so it went with it. */
    {
        g_autoptr(GPtrArray) nodes = vr_qmp_query_named_block_nodes(fx->client, &error);

        g_assert_no_error(error);
        g_assert_null(vr_qmp_block_nodes_find(nodes, "vr-fleece"));
        g_assert_null(vr_qmp_block_nodes_find(nodes, "vr-fleece-file"));
    }

    /* A watch with nothing coming times out. */
    g_clear_pointer(&event, json_object_put);
    event = vr_qmp_event_watch_wait(cancelled, 200, NULL, &error);
    g_assert_null(event);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_TIMEOUT);
}

static void
test_timeout(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) ret = NULL;

    if (fx->client == NULL)
        return;
    /* A stopped QEMU answers nothing. */
    vr_test_process_signal(fx->qsd, SIGSTOP);
    ret = vr_qmp_client_execute_full(fx->client, "query-block-exports", NULL, NULL, 300, NULL,
                                     &error);
    g_assert_null(ret);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_TIMEOUT);
    g_clear_error(&error);
    g_assert_true(vr_qmp_client_is_connected(fx->client));

    /* Resumed, it answers the stale command (dropped) and the next one (matched by id). */
    vr_test_process_signal(fx->qsd, SIGCONT);
    ret = vr_qmp_client_execute(fx->client, "query-jobs", NULL, &error);
    g_assert_no_error(error);
    g_assert_true(json_object_is_type(ret, json_type_array));
}

static void
test_cancel(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autoptr(json_object) ret = NULL;

    if (fx->client == NULL)
        return;
    vr_test_process_signal(fx->qsd, SIGSTOP);
    g_cancellable_cancel(cancellable);
    ret = vr_qmp_client_execute_full(fx->client, "query-jobs", NULL, NULL, 10000, cancellable,
                                     &error);
    g_assert_null(ret);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    vr_test_process_signal(fx->qsd, SIGCONT);
}

static void
connect_cancelled_cb(GObject *source, GAsyncResult *result, gpointer user_data)
{
    GError **error = user_data;

    g_assert_false(vr_qmp_client_connect_finish(VR_QMP_CLIENT(source), result, error));
}

static gboolean
cancel_cb(gpointer user_data)
{
    g_cancellable_cancel(user_data);
    return G_SOURCE_REMOVE;
}

static void
test_connect_cancelled(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrQmpClient) client = NULL;
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autoptr(GError) later = NULL;
    g_autoptr(json_object) ret = NULL;
    GError *error = NULL;

    if (fx->client == NULL)
        return;
    /* The fixture's client holds QEMU's one monitor connection: free it, stop QEMU. */
    vr_qmp_client_close(fx->client);
    g_clear_object(&fx->client);
    vr_test_process_signal(fx->qsd, SIGSTOP);

    /* No greeting comes; the cancellable ends the wait, and the client is closed. */
    client = vr_qmp_client_new(vr_qmp_channel_unix_new(fx->qmp));
    vr_qmp_client_connect_async(client, cancellable, connect_cancelled_cb, &error);
    g_timeout_add(100, cancel_cb, cancellable);
    while (error == NULL)
        g_main_context_iteration(NULL, TRUE);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    g_clear_error(&error);
    g_assert_false(vr_qmp_client_is_connected(client));
    ret = vr_qmp_client_execute(client, "query-jobs", NULL, &later);
    g_assert_null(ret);
    g_assert_error(later, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED);
    vr_test_process_signal(fx->qsd, SIGCONT);
}

static void
killed_cb(GObject *source, GAsyncResult *result, gpointer user_data)
{
    GError **error = user_data;
    g_autoptr(json_object) ret = vr_qmp_client_execute_finish(VR_QMP_CLIENT(source), result, error);

    g_assert_null(ret);
    g_assert_nonnull(*error);
}

static gboolean
kill_cb(gpointer user_data)
{
    Fixture *fx = user_data;

    vr_test_process_signal(fx->qsd, SIGKILL);
    return G_SOURCE_REMOVE;
}

static void
test_killed(Fixture *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(GError) later = NULL;
    g_autoptr(json_object) ret = NULL;
    gint64 start;

    if (fx->client == NULL)
        return;
    /* A command in flight when QEMU dies fails at once with a clean error. */
    vr_test_process_signal(fx->qsd, SIGSTOP);
    vr_qmp_client_execute_async(fx->client, "query-named-block-nodes", NULL, NULL, 20000, NULL,
                                killed_cb, &error);
    g_timeout_add(100, kill_cb, fx);
    start = g_get_monotonic_time();
    while (error == NULL)
        g_main_context_iteration(NULL, TRUE);
    g_assert_cmpint(g_get_monotonic_time() - start, <, 5 * G_USEC_PER_SEC);
    g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED);
    g_clear_error(&error);
    g_assert_false(vr_qmp_client_is_connected(fx->client));

    /* Later commands fail without waiting. */
    ret = vr_qmp_client_execute(fx->client, "query-jobs", NULL, &later);
    g_assert_null(ret);
    g_assert_error(later, VR_QMP_ERROR, VR_QMP_ERROR_CLOSED);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/qmp/qsd/capabilities", test_capabilities);
    ADD("/qmp/qsd/bitmap/roundtrip", test_bitmap_roundtrip);
    ADD("/qmp/qsd/transaction/rollback", test_transaction_rollback);
    ADD("/qmp/qsd/events/fleece", test_events);
    ADD("/qmp/qsd/timeout", test_timeout);
    ADD("/qmp/qsd/cancel", test_cancel);
    ADD("/qmp/qsd/killed", test_killed);
    ADD("/qmp/qsd/connect-cancelled", test_connect_cancelled);
#undef ADD

    return g_test_run();
}
