/*
 * test-failover.c: unplanned failover, completion and cancel, and test failover (vr-failover.h)
 * with a real libvirtd and real QEMU (TCG is enough: the domains have no OS)
 *
 * Each test runs a VrReceiver on 127.0.0.1 (the test PKI of make-pki.sh) with the replica
 * sink over a storage root of its own (mode 0711: QEMU's user must pass it), a state
 * database, and the standby on qemu:///system with the naming rule "%n-replica", as a
 * replica daemon runs them. The primary is a domain defined (never started) with the test
 * prefix, so run-isolated.sh removes it, its standby and the test copy if the test dies.
 * Cycles of its disk vda go through the receiver: cycle k writes 64 KiB of byte k at offset
 * k * 64 KiB. The failover calls run on the receiver's thread, as in the daemon.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include "vr-failover.h"
#include "vr-qmp-json.h"
#include "vr-receiver.h"
#include "vr-replica-sink.h"
#include "vr-sender.h"
#include "vr-standby.h"
#include "vr-state.h"
#include "vr-test-replica.h"
#include "vr-test-transport.h"
#include "vr-test-util.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virDomainFree)

#define MiB       (1024 * 1024)
#define DISK_SIZE (16 * MiB)
#define BLOCK     65536

static char *pki;
static char *pki_skip_why;

typedef struct {
    VrTestReplica r; /* with a state database, its standby in conn */
    VrFailover *failover;
    virConnectPtr conn;
    char *name;            /* the primary */
    char *standby_name;    /* <name>-replica */
    char *copy_name;       /* <name>-replica-test */
    char *disk_dir;        /* <root>/r1/vda */
    virNetworkPtr network; /* <name>-net: isolated, transient, the primary's network */
    GPtrArray *domains;
} Fixture;

/* The replica's side, as a daemon starts it: sink, receiver (a new port), failover. */
static void
replica_start(Fixture *fx)
{
    fx->r.port = 0;
    vr_test_replica_start(&fx->r, pki, fx->conn, 256 * MiB);
    fx->failover = vr_failover_new(&(VrFailoverConfig){
        .state = fx->r.state,
        .sink = fx->r.sink,
        .authz = fx->r.authz,
        .conn = fx->conn,
    });
}

/* A daemon's stop: nothing of the sink, the stores or the failover stays in memory. */
static void
replica_stop(Fixture *fx)
{
    g_clear_pointer(&fx->failover, vr_failover_free);
    vr_test_replica_stop(&fx->r);
}

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *image = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *iface = NULL;
    g_autoptr(GError) error = NULL;

    fx->domains = g_ptr_array_new_with_free_func(g_free);
    fx->conn = vr_test_replica_connect(pki, pki_skip_why);
    if (fx->conn == NULL)
        return;

    /* QEMU's user passes the storage root (docs/failover.md), never lists it. */
    vr_test_dirs(serial, 0711, &fx->r.root, &fx->r.work);
    fx->disk_dir = g_build_filename(fx->r.root, "r1", "vda", NULL);

    fx->name = g_strdup_printf("%s-%u", vr_test_prefix(), serial++);
    fx->standby_name = g_strdup_printf("%s-replica", fx->name);
    fx->copy_name = g_strdup_printf("%s-replica-test", fx->name);
    g_ptr_array_add(fx->domains, g_strdup(fx->copy_name));
    g_ptr_array_add(fx->domains, g_strdup(fx->standby_name));
    g_ptr_array_add(fx->domains, g_strdup(fx->name));
    image = g_build_filename(fx->r.work, "vda.qcow2", NULL);
    vr_test_qcow2_create(image, "16M");
    /*
     * The primary's network, on the replica too (the standby uses it; the test copy must
     * not): isolated, no address, transient.
     */
    xml = g_strdup_printf("<network><name>%s-net</name></network>", fx->name);
    fx->network = virNetworkCreateXML(fx->conn, xml);
    if (fx->network == NULL)
        g_error("cannot create network '%s-net': %s", fx->name, virGetLastErrorMessage());
    iface = g_strdup_printf("<interface type='network'>"
                            "  <mac address='52:54:00:12:34:56'/>"
                            "  <source network='%s-net'/>"
                            "  <model type='virtio'/>"
                            "</interface>",
                            fx->name);
    virDomainFree(vr_test_domain_define(fx->conn, fx->name, image, iface));

    vr_test_replica_init(&fx->r, pki);
    vr_test_replica_open_state(&fx->r);

    replica_start(fx);

    /* The primary's XML, which defines the standby at the first point. */
    {
        g_autoptr(virDomain) dom = virDomainLookupByName(fx->conn, fx->name);
        g_autofree char *primary_xml =
            virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);

        g_assert_true(vr_test_put_domain(pki, "client-ok", fx->r.server_policy, fx->r.port, "r1",
                                         primary_xml, &error));
        g_assert_no_error(error);
    }
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    replica_stop(fx);
    if (fx->conn != NULL)
        vr_test_domains_undefine(fx->conn, fx->domains);
    if (fx->network != NULL) {
        virNetworkDestroy(fx->network);
        virNetworkFree(fx->network);
    }
    g_clear_pointer(&fx->conn, virConnectClose);
    g_clear_pointer(&fx->domains, g_ptr_array_unref);
    vr_test_replica_clear(&fx->r);
    g_free(fx->name);
    g_free(fx->standby_name);
    g_free(fx->copy_name);
    g_free(fx->disk_dir);
}

/* ---- the primary's side --------------------------------------------------------------- */

/*
 * The stream of cycle @target of r1's vda at @epoch on @base (0: FULL): @blocks blocks of
 * byte @target from offset @target * 64 KiB, in a file. (transfer full: its path)
 */
static char *
make_cycle(Fixture *fx, uint64_t epoch, uint64_t base, uint64_t target, guint blocks)
{
    return vr_test_cycle_file(fx->r.work, epoch, base, target, blocks, DISK_SIZE);
}

/* Upload cycle @target (one block) at @epoch; its outcome (the error in *@error_out). */
static bool
upload(Fixture *fx, uint64_t epoch, uint64_t base, uint64_t target, GError **error_out)
{
    g_autofree char *path = make_cycle(fx, epoch, base, target, 1);

    return vr_test_upload(pki, "client-ok", fx->r.server_policy, fx->r.port, path, 1, NULL,
                          error_out);
}

static void
upload_ok(Fixture *fx, uint64_t base, uint64_t target)
{
    g_autoptr(GError) error = NULL;

    g_assert_true(upload(fx, 1, base, target, &error));
    g_assert_no_error(error);
}

/* A cycle that must be refused with 409, naming @why. */
static void
upload_refused(Fixture *fx, uint64_t epoch, uint64_t base, uint64_t target, const char *why)
{
    g_autoptr(GError) error = NULL;

    g_assert_false(upload(fx, epoch, base, target, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT);
    if (strstr(error->message, why) == NULL)
        g_error("'%s' does not say '%s'", error->message, why);
}

/* ---- what the replica holds ----------------------------------------------------------- */

static char *
disk_file(Fixture *fx, const char *name)
{
    return g_build_filename(fx->disk_dir, name, NULL);
}

static char *
point_file(Fixture *fx, uint64_t cycle)
{
    g_autofree char *name = g_strdup_printf("rp-%" G_GUINT64_FORMAT ".qcow2", cycle);

    return disk_file(fx, name);
}

/* SHA-256 of a file's bytes. (transfer full) */
static char *
file_sha256(const char *path)
{
    g_autofree char *contents = NULL;
    g_autoptr(GError) error = NULL;
    gsize len = 0;

    g_assert_true(g_file_get_contents(path, &contents, &len, &error));
    g_assert_no_error(error);
    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)contents, len);
}

/* The cycles of the store's points, "1 2 3". (transfer full) */
static char *
points(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    VrReplicaStore *store = vr_replica_sink_get_store(fx->r.sink, fx->r.root, "r1", "vda", &error);
    g_autoptr(GString) out = g_string_new(NULL);
    const VrReplicaPoint *p;
    guint n;

    g_assert_no_error(error);
    p = vr_replica_store_points(store, &n);
    for (guint i = 0; i < n; i++)
        g_string_append_printf(out, "%s%" G_GUINT64_FORMAT, i > 0 ? " " : "", p[i].cycle);
    return g_string_free(g_steal_pointer(&out), FALSE);
}

/* qemu-img compare (-U: QEMU has the overlay open) of @overlay with point @cycle. */
static void
assert_equals_point(Fixture *fx, const char *overlay, uint64_t cycle)
{
    g_autofree char *point = point_file(fx, cycle);
    const char *argv[] = { "qemu-img", "compare", "-U",    "-f",  "qcow2",
                           "-F",       "qcow2",   overlay, point, NULL };
    g_autofree char *out = vr_test_run(argv);

    g_assert_nonnull(strstr(out, "Images are identical"));
}

static virDomainPtr
domain(Fixture *fx, const char *name)
{
    virDomainPtr dom = virDomainLookupByName(fx->conn, name);

    if (dom == NULL)
        g_error("no domain '%s': %s", name, virGetLastErrorMessage());
    return dom;
}

static bool
active(Fixture *fx, const char *name)
{
    g_autoptr(virDomain) dom = virDomainLookupByName(fx->conn, name);

    return dom != NULL && virDomainIsActive(dom) == 1;
}

/* The marker of domain @name: its state and epoch. */
static void
assert_marker(Fixture *fx, const char *name, const char *state, uint64_t epoch)
{
    g_autoptr(virDomain) dom = domain(fx, name);
    g_autoptr(VrStandbyInfo) info = vr_standby_info_get(dom);

    g_assert_nonnull(info);
    g_assert_cmpstr(info->relationship, ==, "r1");
    g_assert_cmpstr(info->state, ==, state);
    g_assert_cmpuint(info->epoch, ==, epoch);
}

static void
assert_relationship(Fixture *fx, const char *state, uint64_t epoch)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrStateRelationship) rel = vr_state_relationship_get(fx->r.state, "r1", &error);

    g_assert_no_error(error);
    g_assert_cmpstr(rel->state, ==, state);
    g_assert_cmpuint(rel->epoch, ==, epoch);
}

/* HMP qemu-io on the running domain @name's vda (reads verify their pattern). (transfer full) */
static char *
qemu_io(Fixture *fx, const char *name, const char *io)
{
    g_autoptr(virDomain) dom = domain(fx, name);
    g_autofree char *cmd =
        g_strdup_printf("qemu-io -d /machine/peripheral/virtio-disk0/virtio-backend \"%s\"", io);
    char *reply = NULL;

    if (virDomainQemuMonitorCommand(dom, cmd, &reply, VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP) < 0)
        g_error("qemu-io on '%s': %s", name, virGetLastErrorMessage());
    return reply;
}

/* The guest of @name reads byte @k at block @k for each cycle @k up to @upto, zeroes after. */
static void
assert_guest_reads(Fixture *fx, const char *name, uint64_t upto)
{
    for (uint64_t k = 1; k <= upto + 1; k++) {
        g_autofree char *io = g_strdup_printf("read -P %u %" G_GUINT64_FORMAT " %d",
                                              k <= upto ? (unsigned)k : 0, k * BLOCK, BLOCK);
        g_autofree char *reply = qemu_io(fx, name, io);

        if (strstr(reply, "verification failed") != NULL || strstr(reply, "error") != NULL)
            g_error("'%s' in '%s': %s", io, name, reply);
    }
}

static json_object *
failover_ok(Fixture *fx, const char *name, const char *point, bool test)
{
    g_autoptr(GError) error = NULL;
    json_object *result = vr_failover_start(fx->failover, name, point, test, &error);

    g_assert_no_error(error);
    g_assert_nonnull(result);
    return result;
}

/* ---- tests ---------------------------------------------------------------------------- */

/*
 * Test failover while replication goes on: the copy runs with its own name and UUID, its
 * interface unconnected, its disk reads the point and takes writes; after a restart of the
 * replica's side cycle 4 applies, and retention (keep 0) keeps the held point; cancel removes the
 * copy and its overlay, the point file is unchanged, and the next cycle's retention removes the
 * point.
 */
static void
test_test_failover(Fixture *fx, gconstpointer data)
{
    g_autofree char *overlay = NULL;
    g_autofree char *rp3 = NULL;
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *list = NULL;
    g_autofree char *reply = NULL;
    g_autoptr(json_object) result = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(virDomain) standby = NULL;
    g_autoptr(virDomain) copy = NULL;
    char uuid1[VIR_UUID_STRING_BUFLEN], uuid2[VIR_UUID_STRING_BUFLEN];
    struct stat st;

    if (fx->conn == NULL)
        return;
    vr_replica_sink_set_recovery_points(fx->r.sink, 2);
    upload_ok(fx, 0, 1);
    upload_ok(fx, 1, 2);
    upload_ok(fx, 2, 3);
    rp3 = point_file(fx, 3);
    before = file_sha256(rp3);

    result = failover_ok(fx, fx->standby_name, "latest", true);
    g_assert_cmpstr(json_object_get_string(json_object_object_get(result, "domain")), ==,
                    fx->copy_name);
    g_assert_cmpuint(json_object_get_uint64(json_object_object_get(result, "point")), ==, 3);
    g_assert_true(active(fx, fx->copy_name));
    g_assert_false(active(fx, fx->standby_name));
    assert_marker(fx, fx->copy_name, VR_FAILOVER_MARKER_TEST, 1);
    assert_relationship(fx, "Replicating", 1);
    standby = domain(fx, fx->standby_name);
    copy = domain(fx, fx->copy_name);
    g_assert_cmpint(virDomainGetUUIDString(standby, uuid1), ==, 0);
    g_assert_cmpint(virDomainGetUUIDString(copy, uuid2), ==, 0);
    g_assert_cmpstr(uuid1, !=, uuid2);
    xml = virDomainGetXMLDesc(copy, 0);
    g_assert_nonnull(strstr(xml, "<interface type='ethernet'>"));
    g_assert_nonnull(strstr(xml, "<link state='down'/>"));
    g_assert_nonnull(strstr(xml, VR_FAILOVER_TEST_OVERLAY));
    /* A second test failover, or an unplanned one, waits for this one's cancel. */
    g_assert_null(vr_failover_start(fx->failover, "r1", NULL, true, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_CONFLICT);
    g_clear_error(&error);
    g_assert_null(vr_failover_start(fx->failover, "r1", NULL, false, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_CONFLICT);
    g_clear_error(&error);

    /* The copy reads point 3 and writes its own overlay. */
    overlay = disk_file(fx, VR_FAILOVER_TEST_OVERLAY);
    assert_equals_point(fx, overlay, 3);
    assert_guest_reads(fx, fx->copy_name, 3);
    reply = qemu_io(fx, fx->copy_name, "write -P 0xee 0 64k");
    g_assert_null(strstr(reply, "error"));
    /* The point is QEMU's to read, never to write. */
    g_assert_no_errno(stat(rp3, &st));
    g_assert_cmpuint(st.st_uid, ==, 0);
    g_assert_cmpuint(st.st_mode & 0777, ==, 0640);

    /* A daemon restart: the test failover's point is held again. */
    replica_stop(fx);
    replica_start(fx);
    /* Replication goes on: cycle 4 applies; retention keeps 3 (held) and its chain. */
    vr_replica_sink_set_recovery_points(fx->r.sink, 0);
    upload_ok(fx, 3, 4);
    g_assert_null(vr_replica_sink_get_retention_error(fx->r.sink));
    list = points(fx);
    g_assert_cmpstr(list, ==, "1 2 3 4");

    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, fx->copy_name, true, &error);
    g_assert_no_error(error);
    g_assert_null(virDomainLookupByName(fx->conn, fx->copy_name));
    g_assert_false(g_file_test(overlay, G_FILE_TEST_EXISTS));
    after = file_sha256(rp3);
    g_assert_cmpstr(before, ==, after);
    /* Cancelled: nothing to cancel any more. */
    g_assert_null(vr_failover_cancel(fx->failover, "r1", true, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_CONFLICT);
    g_clear_error(&error);

    /* Released: the next cycle's retention keeps the latest alone. */
    upload_ok(fx, 4, 5);
    g_clear_pointer(&list, g_free);
    list = points(fx);
    g_assert_cmpstr(list, ==, "5");
}

/*
 * Unplanned failover to the latest point, then to an older one: the standby runs on an
 * overlay equal to that point; cycles are refused (409) while failed over; cancel goes
 * back to replica with every point intact and cycles accepted; complete discards the
 * points outside the chosen point's chain and cannot be cancelled.
 */
static void
test_unplanned(Fixture *fx, gconstpointer data)
{
    g_autofree char *overlay = NULL;
    char *sums[4] = { NULL };
    g_autofree char *list = NULL;
    g_autoptr(json_object) result = NULL;
    g_autoptr(GError) error = NULL;
    struct stat st;

    if (fx->conn == NULL)
        return;
    vr_replica_sink_set_recovery_points(fx->r.sink, 4);
    upload_ok(fx, 0, 1);
    upload_ok(fx, 1, 2);
    upload_ok(fx, 2, 3);
    for (uint64_t k = 1; k <= 3; k++) {
        g_autofree char *path = point_file(fx, k);

        sums[k] = file_sha256(path);
    }
    overlay = disk_file(fx, VR_FAILOVER_OVERLAY);

    /* Errors first: unknown relationship, unknown point, a point that is no number. */
    g_assert_null(vr_failover_start(fx->failover, "nosuch", NULL, false, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_assert_null(vr_failover_start(fx->failover, "r1", "9", false, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_NO_POINT);
    g_clear_error(&error);
    g_assert_null(vr_failover_start(fx->failover, "r1", "x", false, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_INVALID);
    g_clear_error(&error);
    g_assert_null(vr_failover_complete(fx->failover, "r1", &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_CONFLICT);
    g_clear_error(&error);
    g_assert_false(g_file_test(overlay, G_FILE_TEST_EXISTS));
    /* A refused failover left cycles accepted. */
    upload_ok(fx, 3, 4);

    /* To the latest point (4), by the primary's domain name. */
    result = failover_ok(fx, fx->name, NULL, false);
    g_assert_cmpuint(json_object_get_uint64(json_object_object_get(result, "point")), ==, 4);
    g_assert_cmpuint(json_object_get_uint64(json_object_object_get(result, "epoch")), ==, 2);
    g_assert_true(active(fx, fx->standby_name));
    assert_marker(fx, fx->standby_name, VR_FAILOVER_MARKER_FAILED_OVER, 2);
    assert_relationship(fx, VR_FAILOVER_STATE_FAILED_OVER, 2);
    assert_equals_point(fx, overlay, 4);
    assert_guest_reads(fx, fx->standby_name, 4);
    g_assert_no_errno(stat(overlay, &st));
    g_assert_cmpuint(st.st_uid, !=, 0); /* QEMU's user (libvirt-qemu on Debian) */
    /* The primary is refused; after a restart (no fence in memory) by the state. */
    upload_refused(fx, 1, 4, 5, "failed over");
    /* Its domain XML too: the running standby is not redefined from the old primary's. */
    {
        g_autoptr(virDomain) dom = virDomainLookupByName(fx->conn, fx->name);
        g_autofree char *primary_xml =
            virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);

        g_assert_false(vr_test_put_domain(pki, "client-ok", fx->r.server_policy, fx->r.port, "r1",
                                          primary_xml, &error));
        g_assert_nonnull(error);
        g_assert_nonnull(strstr(error->message, "its domain XML is refused"));
        g_clear_error(&error);
    }
    vr_replica_sink_unfence(fx->r.sink, "r1");
    upload_refused(fx, 1, 4, 5, "in state FailedOver");
    vr_replica_sink_fence(fx->r.sink, "r1");
    g_assert_null(vr_failover_start(fx->failover, "r1", NULL, false, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_CONFLICT);
    g_clear_error(&error);

    /* Cancel: back to replica at epoch 1, every point as it was. */
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, "r1", false, &error);
    g_assert_no_error(error);
    g_assert_false(active(fx, fx->standby_name));
    g_assert_false(g_file_test(overlay, G_FILE_TEST_EXISTS));
    assert_marker(fx, fx->standby_name, VR_STANDBY_STATE_REPLICA, 1);
    assert_relationship(fx, "Replicating", 1);
    for (uint64_t k = 1; k <= 3; k++) {
        g_autofree char *path = point_file(fx, k);
        g_autofree char *sum = file_sha256(path);

        g_assert_cmpstr(sum, ==, sums[k]);
    }
    list = points(fx);
    g_assert_cmpstr(list, ==, "1 2 3 4");
    upload_ok(fx, 4, 5);

    /*
     * To an older point (2), by the standby's name, through a failover whose authorization
     * table lost the primary's entry meanwhile (the worst day: the lost primary is no longer
     * trusted): the storage root recorded with the relationship still leads to its points.
     * Then complete.
     */
    {
        g_autoptr(VrAuthz) none = vr_authz_new_table();
        VrFailover *trusted = g_steal_pointer(&fx->failover);

        fx->failover = vr_failover_new(&(VrFailoverConfig){
            .state = fx->r.state,
            .sink = fx->r.sink,
            .authz = none,
            .conn = fx->conn,
        });
        g_clear_pointer(&result, json_object_put);
        result = failover_ok(fx, fx->standby_name, "2", false);
        vr_failover_free(fx->failover);
        fx->failover = trusted;
    }
    g_assert_true(active(fx, fx->standby_name));
    assert_equals_point(fx, overlay, 2);
    assert_guest_reads(fx, fx->standby_name, 2);
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_complete(fx->failover, "r1", &error);
    g_assert_no_error(error);
    g_clear_pointer(&list, g_free);
    list = points(fx);
    g_assert_cmpstr(list, ==, "1 2"); /* 2 and the point it is based on */
    for (uint64_t k = 3; k <= 5; k++) {
        g_autofree char *path = point_file(fx, k);

        g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    }
    g_assert_true(active(fx, fx->standby_name));
    assert_guest_reads(fx, fx->standby_name, 2);
    assert_relationship(fx, VR_FAILOVER_STATE_FAILED_OVER, 2);
    g_assert_null(vr_failover_cancel(fx->failover, "r1", false, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "completed"));
    g_clear_error(&error);
    upload_refused(fx, 1, 5, 6, "failed over");
    /* A stale epoch, even once the relationship replicates again (reverse replication). */
    {
        g_autoptr(VrStateRelationship) rel = vr_state_relationship_get(fx->r.state, "r1", &error);

        g_assert_no_error(error);
        g_free(rel->state);
        rel->state = g_strdup("Replicating");
        g_assert_true(vr_state_relationship_put(fx->r.state, rel, &error));
        g_assert_no_error(error);
        vr_replica_sink_unfence(fx->r.sink, "r1");
        upload_refused(fx, 1, 2, 6, "older than the relationship's epoch 2");
    }
    for (guint k = 0; k < G_N_ELEMENTS(sums); k++)
        g_free(sums[k]);
}

/*
 * A failover while cycle 3 is being applied (a slow upload: 4 MiB at 1 MiB/s): the apply
 * is aborted before its commit, the standby starts on point 2, nothing of cycle 3 is left,
 * and the upload ends refused.
 */
static void
test_during_apply(Fixture *fx, gconstpointer data)
{
    g_autofree char *path = NULL;
    g_autofree char *image3 = NULL;
    g_autofree char *overlay = NULL;
    g_autofree char *list = NULL;
    g_autoptr(json_object) result = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(VrRateLimit) limit = vr_rate_limit_new(1 * MiB, 64 * 1024);
    VrTestUpload send = { 0 };
    GThread *thread;
    gint64 deadline;

    if (fx->conn == NULL)
        return;
    upload_ok(fx, 0, 1);
    upload_ok(fx, 1, 2);
    path = make_cycle(fx, 1, 2, 3, 64);
    send = (VrTestUpload){
        .pki = pki,
        .client_cert = "client-ok",
        .policy = fx->r.server_policy,
        .port = fx->r.port,
        .path = path,
        .limit = limit,
        .max_attempts = 1,
    };
    image3 = point_file(fx, 3);
    thread = g_thread_new("sender", vr_test_upload_run, &send);
    /* Until the apply of cycle 3 has its image (its BEGIN was applied). */
    deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (!g_file_test(image3, G_FILE_TEST_EXISTS) && g_get_monotonic_time() < deadline)
        if (!g_main_context_iteration(NULL, FALSE))
            g_usleep(1000);
    g_assert_true(g_file_test(image3, G_FILE_TEST_EXISTS));
    g_assert_false(g_atomic_int_get(&send.done));

    result = failover_ok(fx, "r1", "latest", false);
    g_assert_cmpuint(json_object_get_uint64(json_object_object_get(result, "point")), ==, 2);
    g_assert_false(g_file_test(image3, G_FILE_TEST_EXISTS));
    g_assert_true(active(fx, fx->standby_name));
    overlay = disk_file(fx, VR_FAILOVER_OVERLAY);
    assert_equals_point(fx, overlay, 2);
    assert_guest_reads(fx, fx->standby_name, 2);

    /* Refused (409) or cut off by the refusal, depending on how much it had sent. */
    g_assert_false(vr_test_upload_wait(&send, thread));
    g_clear_error(&send.error);
    upload_refused(fx, 1, 2, 3, "failed over");
    list = points(fx);
    g_assert_cmpstr(list, ==, "1 2");
    g_assert_false(g_file_test(image3, G_FILE_TEST_EXISTS));

    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, "r1", false, &error);
    g_assert_no_error(error);
    upload_ok(fx, 2, 3);
}

int
main(int argc, char **argv)
{
    vr_test_init(&argc, &argv);
    pki = vr_test_make_pki(&pki_skip_why);

#define ADD(path, func) \
    g_test_add("/failover/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("test", test_test_failover);
    ADD("unplanned", test_unplanned);
    ADD("during-apply", test_during_apply);
#undef ADD

    return vr_test_run_pki(pki, pki_skip_why);
}
