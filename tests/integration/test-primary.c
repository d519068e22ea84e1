/*
 * test-primary.c: whole primary cycles (vr_primary_run_cycle()) of a libvirt domain into a
 * real replica store, over mutual TLS
 *
 * A running libvirt domain without OS (KVM, or TCG with VR_TEST_ACCEL=tcg) with qcow2 disks;
 * guest writes go through HMP qemu-io on its devices, and a byte array per disk is the naive
 * model of what the guest sees, a set of granules the model of what changed since the last
 * published cycle. The replica, a VrReceiver with the replica sink over a storage root of its
 * own (the test PKI of make-pki.sh, "replica.example"), runs on 127.0.0.1 in a thread of its
 * own; the cycle runs on the test's thread, as the daemon runs it in a worker, with a
 * VrSender as primary1 (client-ok). The guest is quiet during a cycle, so the model at the
 * cut is the model at the call. After every published cycle the replica's latest point
 * equals the model (qemu-img compare) and its digest the one the cycle reports, only the
 * latest bitmap is left in QEMU, and the work directory is empty; an incremental cycle
 * carries exactly the dirty granules.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <libvirt/libvirt.h>

#include "vr-primary.h"
#include "vr-qmp-block.h"
#include "vr-qmp-disk.h"
#include "vr-qmp-json.h"
#include "vr-receiver.h"
#include "vr-replica-sink.h"
#include "vr-test-replica.h"
#include "vr-test-transport.h"
#include "vr-test-util.h"
#include "vr-wire.h"

#define MiB          (1024 * 1024)
#define DISK_SIZE    (64 * MiB)
#define GRANULARITY  65536
#define N_GRANULES   (DISK_SIZE / GRANULARITY)
#define MAX_DISKS    2
#define RELATIONSHIP "p1"

static char *pki;          /* where make-pki.sh wrote the PKI, or NULL */
static char *pki_skip_why; /* why every test skips */

typedef struct {
    char target[8];
    char *image;
    char node[32];          /* libvirt-N-format, from the live XML */
    char qdev[128];         /* where HMP qemu-io writes */
    uint8_t *model;         /* what the guest sees now */
    bool dirty[N_GRANULES]; /* written since the last published cycle */
} Disk;

typedef struct {
    char *dir;
    char *workdir; /* the primary's */
    guint n_disks;
    Disk disks[MAX_DISKS];

    /* the replica, in its thread: its storage root <dir>/replica, no work directory */
    VrTestReplica r;
    GThread *replica;
    GMainContext *replica_context;
    GMainLoop *replica_loop;
    GMutex lock;
    GCond cond;
    bool replica_ready;

    /* the primary */
    VrSender *sender;
    virConnectPtr conn;    /* the primary's */
    GMainContext *context; /* the test's QMP client's */
    /*
     * The test's own connection: libvirt refuses a second QMP event callback of the same
     * function for the same domain on one connection ("event callback already tracked").
     */
    virConnectPtr test_conn;
    virDomainPtr domain; /* on test_conn */
    char *name;
    VrQmpClient *client;
} Fixture;

/* ---- the replica ---------------------------------------------------------------------- */

static char *
pki_path(const char *name)
{
    return g_build_filename(pki, name, NULL);
}

static gpointer
replica_main(gpointer data)
{
    Fixture *fx = data;

    /* The receiver and the sink run on this thread's context; qemu-nbd dies with the thread. */
    g_main_context_push_thread_default(fx->replica_context);
    vr_test_replica_start(&fx->r, pki, NULL, 1024 * MiB);

    g_mutex_lock(&fx->lock);
    fx->replica_ready = true;
    g_cond_signal(&fx->cond);
    g_mutex_unlock(&fx->lock);

    g_main_loop_run(fx->replica_loop);
    /* As a replica that stops: the receiver aborts what it holds, then the stores close. */
    vr_test_replica_stop(&fx->r);
    g_main_context_pop_thread_default(fx->replica_context);
    return NULL;
}

static void
replica_start(Fixture *fx)
{
    fx->replica_context = g_main_context_new();
    fx->replica_loop = g_main_loop_new(fx->replica_context, FALSE);
    fx->replica_ready = false;
    fx->replica = g_thread_new("replica", replica_main, fx);
    g_mutex_lock(&fx->lock);
    while (!fx->replica_ready)
        g_cond_wait(&fx->cond, &fx->lock);
    g_mutex_unlock(&fx->lock);
}

/* Stop the replica (from any thread but its own); an upload in progress is cut off. */
static void
replica_stop(Fixture *fx)
{
    if (fx->replica == NULL)
        return;
    g_main_loop_quit(fx->replica_loop);
    g_thread_join(g_steal_pointer(&fx->replica));
    g_clear_pointer(&fx->replica_loop, g_main_loop_unref);
    g_clear_pointer(&fx->replica_context, g_main_context_unref);
}

/* The sender to replica.example at 127.0.0.1, as primary1: two attempts, short backoff. */
static void
sender_new(Fixture *fx)
{
    g_autofree char *cert = pki_path("client-ok.pem");
    g_autofree char *key = pki_path("client-ok-key.pem");
    g_autoptr(GInetAddress) loopback = g_inet_address_new_from_string("127.0.0.1");
    g_autoptr(GError) error = NULL;

    fx->sender = vr_sender_new(
        &(VrSenderConfig){
            .server_name = "replica.example",
            .port = fx->r.port,
            .connect_address = loopback,
            .cert_file = cert,
            .key_file = key,
            .policy = fx->r.server_policy,
            .max_attempts = 2,
            .backoff_min_ms = 20,
            .backoff_max_ms = 200,
            .io_timeout_s = 10,
        },
        &error);
    g_assert_no_error(error);
}

/* ---- the domain ----------------------------------------------------------------------- */

static void domain_boot(Fixture *fx);

static void
domain_start(Fixture *fx)
{
    g_autoptr(GString) xml = g_string_new(NULL);

    g_string_append_printf(xml,
                           "<domain type='%s'><name>%s</name><memory unit='MiB'>64</memory>"
                           "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>",
                           g_str_equal(vr_test_accel(), "kvm") ? "kvm" : "qemu", fx->name);
    for (guint i = 0; i < fx->n_disks; i++) {
        g_string_append_printf(xml,
                               "<disk type='file' device='disk'>"
                               "<driver name='qemu' type='qcow2' discard='unmap'/>"
                               "<source file='%s'/><target dev='%s' bus='virtio'/></disk>",
                               fx->disks[i].image, fx->disks[i].target);
    }
    g_string_append(xml, "<memballoon model='none'/></devices></domain>");
    g_test_message("domain '%s' with %u disks (%s)", fx->name, fx->n_disks, vr_test_accel());
    fx->domain = virDomainDefineXML(fx->test_conn, xml->str);
    g_assert_nonnull(fx->domain);
    domain_boot(fx);
}

/* Start the defined domain, and connect the test's QMP client to it. */
static void
domain_boot(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *live = NULL;

    g_assert_cmpint(virDomainCreate(fx->domain), ==, 0);

    /* The test's own QMP client, for the guest's writes and for looking at bitmaps. */
    if (fx->context == NULL) {
        fx->context = g_main_context_new();
        g_main_context_push_thread_default(fx->context);
    }
    fx->client = vr_qmp_client_new(vr_qmp_channel_libvirt_new(fx->domain));
    vr_qmp_client_connect(fx->client, NULL, &error);
    g_assert_no_error(error);
    live = virDomainGetXMLDesc(fx->domain, 0);
    for (guint i = 0; i < fx->n_disks; i++) {
        g_autoptr(VrQmpDiskNode) node =
            vr_qmp_disk_resolve(fx->client, live, fx->disks[i].target, &error);

        g_assert_no_error(error);
        g_strlcpy(fx->disks[i].node, node->node_name, sizeof(fx->disks[i].node));
        g_strlcpy(fx->disks[i].qdev, node->qdev, sizeof(fx->disks[i].qdev));
    }
}

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *name = NULL;

    fx->test_conn = vr_test_replica_connect(pki, pki_skip_why);
    if (fx->test_conn == NULL)
        return;
    fx->conn = vr_test_libvirt_connect();
    g_assert_nonnull(fx->conn);
    fx->n_disks = data != NULL ? GPOINTER_TO_UINT(data) : 1;
    fx->name = g_strdup_printf("%s-pri%u", vr_test_prefix(), serial++);
    fx->dir = vr_test_path(fx->name);
    fx->r.root = g_build_filename(fx->dir, "replica", NULL);
    fx->workdir = g_build_filename(fx->dir, "work", NULL);
    g_assert_no_errno(g_mkdir_with_parents(fx->r.root, 0700));
    g_assert_no_errno(g_mkdir_with_parents(fx->workdir, 0700));
    g_assert_no_errno(chmod(fx->dir, 0755));
    for (guint i = 0; i < fx->n_disks; i++) {
        Disk *d = &fx->disks[i];

        g_snprintf(d->target, sizeof(d->target), "vd%c", 'a' + i);
        name = g_strdup_printf("%s.qcow2", d->target);
        d->image = g_build_filename(fx->dir, name, NULL);
        g_clear_pointer(&name, g_free);
        vr_test_qcow2_create(d->image, "64M");
        d->model = g_malloc0(DISK_SIZE);
    }

    g_mutex_init(&fx->lock);
    g_cond_init(&fx->cond);
    vr_test_replica_init(&fx->r, pki);
    replica_start(fx);
    sender_new(fx);
    domain_start(fx);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    if (fx->client != NULL)
        vr_qmp_client_close(fx->client);
    g_clear_object(&fx->client);
    vr_test_libvirt_teardown(&fx->context, &fx->domain, &fx->test_conn);
    g_clear_pointer(&fx->conn, virConnectClose);
    replica_stop(fx);
    g_clear_pointer(&fx->sender, vr_sender_free);
    vr_test_replica_clear(&fx->r);
    if (fx->dir != NULL) {
        g_mutex_clear(&fx->lock);
        g_cond_clear(&fx->cond);
    }
    for (guint i = 0; i < fx->n_disks; i++) {
        g_free(fx->disks[i].image);
        g_free(fx->disks[i].model);
    }
    g_free(fx->name);
    g_free(fx->dir);
    g_free(fx->workdir);
}

/* ---- the guest and its model ---------------------------------------------------------- */

static void
mark_dirty(Disk *d, uint64_t offset, uint64_t len)
{
    for (uint64_t g = offset / GRANULARITY; g <= (offset + len - 1) / GRANULARITY; g++)
        d->dirty[g] = true;
}

static void
guest_io(Fixture *fx, guint disk, const char *io)
{
    vr_test_hmp_qemu_io(fx->client, fx->disks[disk].qdev, io);
}

static void
guest_write(Fixture *fx, guint disk, uint64_t offset, uint64_t len, uint8_t pattern)
{
    g_autofree char *io =
        g_strdup_printf("write -P 0x%02x %" PRIu64 " %" PRIu64, pattern, offset, len);

    guest_io(fx, disk, io);
    memset(fx->disks[disk].model + offset, pattern, len);
    mark_dirty(&fx->disks[disk], offset, len);
}

/* Incompressible bytes (zstd cannot shrink the stream), from a file QEMU reads. */
static void
guest_write_random(Fixture *fx, guint disk, uint64_t offset, uint64_t len)
{
    g_autofree char *path = g_build_filename(fx->dir, "random.bin", NULL);
    g_autofree uint8_t *buf = g_malloc(len);
    g_autofree char *io = NULL;
    g_autoptr(GError) error = NULL;

    for (uint64_t i = 0; i < len; i += 4) {
        guint32 v = g_test_rand_int();

        memcpy(buf + i, &v, MIN(4, len - i));
    }
    g_assert_true(g_file_set_contents(path, (const char *)buf, (gssize)len, &error));
    g_assert_no_error(error);
    g_assert_no_errno(chmod(path, 0644)); /* QEMU runs as libvirt-qemu */
    io = g_strdup_printf("write -s %s %" PRIu64 " %" PRIu64, path, offset, len);
    guest_io(fx, disk, io);
    memcpy(fx->disks[disk].model + offset, buf, len);
    mark_dirty(&fx->disks[disk], offset, len);
    g_unlink(path);
}

static void
guest_zero(Fixture *fx, guint disk, uint64_t offset, uint64_t len)
{
    g_autofree char *io = g_strdup_printf("write -z %" PRIu64 " %" PRIu64, offset, len);

    guest_io(fx, disk, io);
    memset(fx->disks[disk].model + offset, 0, len);
    mark_dirty(&fx->disks[disk], offset, len);
}

/* A discard of whole clusters (qcow2 drops partial ones): they read as zeroes. */
static void
guest_discard(Fixture *fx, guint disk, uint64_t offset, uint64_t len)
{
    g_autofree char *io = g_strdup_printf("discard %" PRIu64 " %" PRIu64, offset, len);

    g_assert_cmpuint(offset % GRANULARITY, ==, 0);
    g_assert_cmpuint(len % GRANULARITY, ==, 0);
    guest_io(fx, disk, io);
    memset(fx->disks[disk].model + offset, 0, len);
    mark_dirty(&fx->disks[disk], offset, len);
}

/* The bytes of every granule changed since the last published cycle, over @disks disks. */
static uint64_t
dirty_bytes(Fixture *fx)
{
    uint64_t n = 0;

    for (guint i = 0; i < fx->n_disks; i++) {
        for (guint g = 0; g < N_GRANULES; g++)
            n += fx->disks[i].dirty[g] ? GRANULARITY : 0;
    }
    return n;
}

static void
published(Fixture *fx)
{
    for (guint i = 0; i < fx->n_disks; i++)
        memset(fx->disks[i].dirty, 0, sizeof(fx->disks[i].dirty));
}

/* ---- cycles --------------------------------------------------------------------------- */

typedef struct {
    uint64_t epoch; /* 0: 1 */
    bool allow_resync;
    bool app_consistent;
    VrPrimaryProgressFunc progress;
    gpointer progress_data;
    GCancellable *cancellable;
    const char *const *disks; /* NULL: every disk of the fixture */
    const char *domain;       /* NULL: the fixture's */
    bool resync;              /* VrPrimaryConfig.resync: resynchronize whatever the tracking */
} CycleOptions;

static bool
run_cycle_with(Fixture *fx, const CycleOptions *opt, uint64_t base, uint64_t target,
               VrPrimaryResult *result, GError **error)
{
    const char *disks[MAX_DISKS + 1] = { NULL };
    VrPrimaryConfig config = {
        .conn = fx->conn,
        .domain = opt->domain != NULL ? opt->domain : fx->name,
        .relationship = RELATIONSHIP,
        .epoch = opt->epoch != 0 ? opt->epoch : 1,
        .disks = opt->disks != NULL ? opt->disks : disks,
        .workdir = fx->workdir,
        .sender = fx->sender,
        .allow_resync = opt->allow_resync,
        .resync = opt->resync,
        .app_consistent = opt->app_consistent,
    };
    bool ok;

    for (guint i = 0; i < fx->n_disks; i++)
        disks[i] = fx->disks[i].target;
    ok = vr_primary_run_cycle(&config, base, target, opt->progress, opt->progress_data,
                              opt->cancellable, result, error);
    if (ok) {
        g_test_message("cycle %" PRIu64 " from %" PRIu64 ": flags %u, %" PRIu64 " bytes, %" PRIu64
                       " stream bytes, cut after %" PRId64 " ms, done after %" PRId64 " ms",
                       target, base, result->flags, result->bytes, result->wire_bytes,
                       result->cut_ms - result->started_ms,
                       result->finished_ms - result->started_ms);
    } else {
        g_test_message("cycle %" PRIu64 " from %" PRIu64 ": %s", target, base, (*error)->message);
    }
    return ok;
}

/* A cycle that must succeed; its result (clear it). */
static void
run_cycle_ok(Fixture *fx, const CycleOptions *opt, uint64_t base, uint64_t target,
             VrPrimaryResult *result)
{
    g_autoptr(GError) error = NULL;
    bool ok = run_cycle_with(fx, opt, base, target, result, &error);

    g_assert_no_error(error);
    g_assert_true(ok);
    g_assert_cmpuint(result->cycle, ==, target);
    g_assert_cmpuint(result->digests->len, ==,
                     opt->disks != NULL ? g_strv_length((char **)opt->disks) : fx->n_disks);
    g_assert_cmpint(result->started_ms, <=, result->cut_ms);
    g_assert_cmpint(result->cut_ms, <=, result->finished_ms);
    g_assert_cmpuint(result->wire_bytes, >, 0);
}

/* ---- what the replica and the primary hold ------------------------------------------- */

static char *
disk_dir(Fixture *fx, guint disk)
{
    return g_build_filename(fx->r.root, RELATIONSHIP, fx->disks[disk].target, NULL);
}

/* The manifest's points of @disk: "1 2 3", "" for none; @digest gets the latest's digest. */
static char *
manifest_cycles(Fixture *fx, guint disk, char **digest)
{
    g_autofree char *dir = disk_dir(fx, disk);

    return vr_test_manifest_cycles(dir, digest);
}

static void
assert_cycles(Fixture *fx, guint disk, const char *expected)
{
    g_autofree char *cycles = manifest_cycles(fx, disk, NULL);

    g_assert_cmpstr(cycles, ==, expected);
}

/* Point @cycle of @disk equals @model, byte for byte. */
static void
assert_point_is(Fixture *fx, guint disk, uint64_t cycle, const uint8_t *model)
{
    g_autofree char *dir = disk_dir(fx, disk);
    g_autofree char *name = g_strdup_printf("rp-%" PRIu64 ".qcow2", cycle);
    g_autofree char *image = g_build_filename(dir, name, NULL);
    g_autofree char *raw = g_build_filename(fx->dir, "model.raw", NULL);
    g_autoptr(GError) error = NULL;
    const char *argv[] = { "qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, raw, NULL };

    g_assert_true(g_file_set_contents(raw, (const char *)model, DISK_SIZE, &error));
    g_assert_no_error(error);
    g_free(vr_test_run(argv));
    g_unlink(raw);
}

/*
 * After cycle @result->cycle was published: every disk's latest point is that cycle, equal
 * to the model, with the digest the cycle reports.
 */
static void
assert_published(Fixture *fx, const VrPrimaryResult *result)
{
    for (guint i = 0; i < fx->n_disks; i++) {
        g_autofree char *digest = NULL;
        g_autofree char *cycles = manifest_cycles(fx, i, &digest);
        g_autofree char *want = NULL;
        g_autofree char *last = g_strdup_printf("%" PRIu64, result->cycle);

        g_assert_true(g_str_has_suffix(cycles, last));
        want = g_malloc0(2 * VR_WIRE_DIGEST_SIZE + 1);
        for (guint j = 0; j < VR_WIRE_DIGEST_SIZE; j++) {
            g_snprintf(want + 2 * j, 3, "%02x",
                       g_array_index(result->digests, uint8_t, i * VR_WIRE_DIGEST_SIZE + j));
        }
        g_assert_cmpstr(digest, ==, want);
        assert_point_is(fx, i, result->cycle, fx->disks[i].model);
    }
}

static int
compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Our bitmaps on @disk's node, by cycle: "1 2", "" for none. */
static char *
bitmaps(Fixture *fx, guint disk)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) nodes = vr_qmp_query_named_block_nodes(fx->client, &error);
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    g_autoptr(GString) cycles = g_string_new(NULL);
    const char *prefix = "vr-" RELATIONSHIP "-";
    VrQmpBlockNode *node;

    g_assert_no_error(error);
    node = vr_qmp_block_nodes_find(nodes, fx->disks[disk].node);
    g_assert_nonnull(node);
    for (guint i = 0; i < node->bitmaps->len; i++) {
        VrQmpBitmapInfo *b = g_ptr_array_index(node->bitmaps, i);

        if (b->name != NULL && g_str_has_prefix(b->name, prefix))
            g_ptr_array_add(names, b->name);
    }
    g_ptr_array_sort(names, compare_names);
    for (guint i = 0; i < names->len; i++) {
        const char *name = (const char *)g_ptr_array_index(names, i) + strlen(prefix);
        guint64 cycle = 0;

        g_assert_true(g_ascii_string_to_unsigned(name, 10, 1, G_MAXUINT64, &cycle, NULL));
        g_string_append_printf(cycles, "%s%" G_GUINT64_FORMAT, i > 0 ? " " : "", cycle);
    }
    return g_string_free(g_steal_pointer(&cycles), FALSE);
}

static void
assert_bitmaps(Fixture *fx, const char *expected)
{
    for (guint i = 0; i < fx->n_disks; i++) {
        g_autofree char *got = bitmaps(fx, i);

        g_assert_cmpstr(got, ==, expected);
    }
}

/* Nothing of a cycle is left: no file in the work directory, nothing of ours in QEMU. */
static void
assert_clean(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *files = vr_test_list_dir(fx->workdir);
    g_autoptr(GPtrArray) exports = vr_qmp_query_block_exports(fx->client, &error);
    g_autoptr(GPtrArray) jobs = vr_qmp_query_jobs(fx->client, &error);
    g_autoptr(GPtrArray) nodes = vr_qmp_query_named_block_nodes(fx->client, &error);
    g_autoptr(json_object) fdsets = vr_qmp_client_execute(fx->client, "query-fdsets", NULL, &error);

    g_assert_no_error(error);
    g_assert_cmpstr(files, ==, "");
    g_assert_cmpuint(exports->len, ==, 0);
    g_assert_cmpuint(jobs->len, ==, 0);
    for (guint i = 0; i < nodes->len; i++) {
        const char *n = ((VrQmpBlockNode *)g_ptr_array_index(nodes, i))->node_name;

        if (g_str_has_prefix(n, "vr-"))
            g_error("node '%s' left behind", n);
    }
    g_assert_cmpuint(json_object_array_length(fdsets), ==, 0);
}

/* A published cycle: the replica, QEMU and the work directory as they must be. */
static void
assert_cycle(Fixture *fx, const VrPrimaryResult *result)
{
    g_autofree char *latest = g_strdup_printf("%" PRIu64, result->cycle);

    assert_published(fx, result);
    assert_bitmaps(fx, latest);
    assert_clean(fx);
}

/* ---- tests ---------------------------------------------------------------------------- */

/*
 * FULL, then an incremental cycle of writes, then one of zero writes and discards (app-
 * consistent asked, but no agent runs: crash-consistent), then one with nothing to send.
 */
static void
test_cycles(Fixture *fx, gconstpointer data)
{
    CycleOptions opt = { 0 };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x11);
    guest_write_random(fx, 0, 8 * MiB, 2 * MiB);
    guest_write(fx, 0, 40 * MiB + 4096, 4096, 0x22);
    guest_write(fx, 0, DISK_SIZE - GRANULARITY, GRANULARITY, 0x23);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    g_assert_cmpuint(r.flags, ==, VR_WIRE_FLAG_FULL);
    /* what is allocated: at least what was written, far from the whole disk */
    g_assert_cmpuint(r.bytes, >=, 3 * MiB + 4096 + GRANULARITY);
    g_assert_cmpuint(r.bytes, <, 8 * MiB);
    assert_cycle(fx, &r);
    assert_cycles(fx, 0, "1");
    published(fx);
    vr_primary_result_clear(&r);

    guest_write(fx, 0, GRANULARITY, GRANULARITY, 0x33);
    guest_write(fx, 0, 10 * MiB + 512, 100 * 1024, 0x44); /* across two granules */
    guest_zero(fx, 0, 8 * MiB, GRANULARITY);              /* zeroes over random data */
    guest_write_random(fx, 0, 30 * MiB, 256 * 1024);
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_assert_cmpuint(r.flags, ==, 0);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, (1 + 2 + 1 + 4) * GRANULARITY);
    assert_cycle(fx, &r);
    assert_cycles(fx, 0, "1 2");
    published(fx);
    vr_primary_result_clear(&r);

    guest_zero(fx, 0, 0, 128 * 1024);
    guest_discard(fx, 0, 8 * MiB + GRANULARITY, MiB);
    guest_zero(fx, 0, 30 * MiB + 4096, 4096);        /* a part of a granule */
    guest_discard(fx, 0, 50 * MiB, 2 * GRANULARITY); /* never written */
    opt.app_consistent = true;
    run_cycle_ok(fx, &opt, 2, 3, &r);
    g_assert_cmpuint(r.flags, ==, 0); /* no guest agent: crash-consistent */
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, (2 + 16 + 1 + 2) * GRANULARITY);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    opt.app_consistent = false;
    run_cycle_ok(fx, &opt, 3, 4, &r);
    g_assert_cmpuint(r.bytes, ==, 0);
    assert_cycle(fx, &r);
    assert_cycles(fx, 0, "1 2 3 4");
    vr_primary_result_clear(&r);
}

/* Two disks, one cut: both points published under the same cycle number. */
static void
test_two_disks(Fixture *fx, gconstpointer data)
{
    CycleOptions opt = { 0 };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x51);
    guest_write(fx, 1, 4 * MiB, 512 * 1024, 0x52);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    g_assert_cmpuint(r.flags, ==, VR_WIRE_FLAG_FULL);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write(fx, 0, 2 * MiB, GRANULARITY, 0x53);
    guest_write_random(fx, 1, 20 * MiB, 3 * GRANULARITY);
    guest_zero(fx, 1, 4 * MiB, GRANULARITY);
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, 5 * GRANULARITY);
    assert_cycle(fx, &r);
    assert_cycles(fx, 0, "1 2");
    assert_cycles(fx, 1, "1 2");
    g_assert_true(memcmp(&g_array_index(r.digests, uint8_t, 0),
                         &g_array_index(r.digests, uint8_t, VR_WIRE_DIGEST_SIZE),
                         VR_WIRE_DIGEST_SIZE) != 0);
    vr_primary_result_clear(&r);
}

/* A cycle refused by the replica (an epoch older than its points') changes nothing. */
static void
test_stale_epoch(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    CycleOptions opt = { .epoch = 2 };
    VrPrimaryResult r = { 0 };
    g_autofree char *left = NULL;

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x61);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write(fx, 0, 16 * MiB, 2 * GRANULARITY, 0x62);
    opt.epoch = 1;
    g_assert_false(run_cycle_with(fx, &opt, 1, 2, &r, &error));
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, "stale epoch 1"));
    g_assert_null(r.digests); /* untouched */
    /* B(1) is still the base (B(2) of the refused cut is replaced by the next try). */
    left = bitmaps(fx, 0);
    g_assert_true(g_str_has_prefix(left, "1"));
    assert_clean(fx);
    assert_cycles(fx, 0, "1");

    opt.epoch = 2;
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, 2 * GRANULARITY);
    assert_cycle(fx, &r);
    vr_primary_result_clear(&r);
}

/*
 * The most of the disk the read took (phase read), whatever else happens. Each report of
 * the read (one a chunk taken, about 1 MiB here) waits 30 ms on the reading thread: a read
 * of 48 MiB then takes well over a second, so the replica's refusal comes back while it runs
 * however fast the emulated disk is.
 */
static void
read_extent_progress(const VrPrimaryProgress *progress, gpointer user_data)
{
    uint64_t *most = user_data;

    if (progress->phase == VR_PRIMARY_PHASE_READ && progress->bytes > 0) {
        *most = MAX(*most, progress->bytes);
        g_usleep(30000);
    }
}

/*
 * The replica refuses the upload (a stale epoch) while the disk is read: the read stops
 * too, at once, instead of reading the whole disk with the fleece alive; the error is the
 * upload's (the root cause), not the stopped read's; the next try from the same base works.
 */
static void
test_upload_refused_stops_read(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    uint64_t most = 0;
    CycleOptions opt = { .epoch = 2 };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x63);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write_random(fx, 0, 8 * MiB, 48 * MiB);
    opt.epoch = 1;
    opt.progress = read_extent_progress;
    opt.progress_data = &most;
    g_assert_false(run_cycle_with(fx, &opt, 1, 2, &r, &error));
    g_test_message("read %" G_GUINT64_FORMAT " of 48 MiB before the cycle failed: %s", most,
                   error->message);
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, "upload of disk 'vda'"));
    g_assert_nonnull(strstr(error->message, "stale epoch 1"));
    g_assert_cmpuint(most, <, 24 * MiB);
    assert_clean(fx);
    assert_cycles(fx, 0, "1");
    {
        g_autofree char *left = bitmaps(fx, 0);

        g_assert_true(g_str_has_prefix(left, "1"));
    }

    opt = (CycleOptions){ .epoch = 2 };
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, 48 * MiB);
    assert_cycle(fx, &r);
    vr_primary_result_clear(&r);
}

static void cancel(gpointer data);

/* Progress: once @after bytes of the stream numbered @stream (from 0) went out, @func. */
typedef struct {
    Fixture *fx;
    guint stream; /* the stream to interrupt */
    uint64_t after;
    void (*func)(gpointer data);
    gpointer data;
    guint streams; /* streams seen complete */
    bool fired;
} Interrupt;

static void
interrupt_progress(const VrPrimaryProgress *progress, gpointer user_data)
{
    Interrupt *in = user_data;
    uint64_t offset = progress->done;
    uint64_t total = progress->total;

    if (progress->phase != VR_PRIMARY_PHASE_SEND || total == 0)
        return;

    if (!in->fired && in->streams == in->stream && offset >= in->after && offset < total) {
        g_test_message("interrupting stream %u at %" PRIu64 " of %" PRIu64 " bytes", in->stream,
                       offset, total);
        in->fired = true;
        in->func(in->data);
    }
    if (offset == total)
        in->streams++;
}

static void
stop_replica(gpointer data)
{
    replica_stop(data);
}

/*
 * The upload of a disk's stream overlaps its read: while the capture still reads the disk,
 * the stream's first megabytes have gone out (phase send, with the read not done) and the
 * replica's receiver is reading the PUT's body; the point is right, and done reaches total
 * only at the very end of each stream.
 */
typedef struct {
    Fixture *fx;
    uint64_t sent_during_read; /* the most sent while the same disk was still being read */
    guint receiving;           /* bodies the receiver read then (vr_receiver_get_load()) */
    guint ends;                /* reports with done == total (a stream complete) */
    bool send_before_read_end;
} Overlap;

static void
overlap_progress(const VrPrimaryProgress *progress, gpointer user_data)
{
    Overlap *o = user_data;

    if (progress->phase != VR_PRIMARY_PHASE_SEND)
        return;
    g_assert_cmpuint(progress->done, <=, progress->total);
    if (progress->total > 0 && progress->done == progress->total)
        o->ends++;
    if (progress->read_total > 0 && progress->read_done < progress->read_total &&
        progress->done > o->sent_during_read) {
        guint active = 0, queued = 0;

        o->send_before_read_end = true;
        o->sent_during_read = progress->done;
        /* the receiver runs in its own thread: a snapshot of two counters */
        vr_receiver_get_load(o->fx->r.receiver, &active, &queued);
        o->receiving = MAX(o->receiving, active);
    }
}

static void
test_overlap(Fixture *fx, gconstpointer data)
{
    Overlap o = { fx };
    CycleOptions opt = { .progress = overlap_progress, .progress_data = &o };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x61);
    run_cycle_ok(fx, &(CycleOptions){ 0 }, 0, 1, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write_random(fx, 0, 8 * MiB, 48 * MiB);
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_test_message("sent while the disk was read: %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                   " stream bytes; the receiver was reading %u bodies then",
                   o.sent_during_read, r.wire_bytes, o.receiving);
    g_assert_true(o.send_before_read_end);
    g_assert_cmpuint(o.sent_during_read, >=, MiB);
    g_assert_cmpuint(o.receiving, ==, 1);
    g_assert_cmpuint(o.ends, ==, 1);
    g_assert_cmpuint(r.bytes, ==, 48 * MiB);
    assert_cycle(fx, &r);
    assert_clean(fx);
    vr_primary_result_clear(&r);
}

/* The replica goes away in the middle of the upload: nothing is lost, the retry works. */
static void
test_upload_fails(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    Interrupt in = { fx, 0, MiB, stop_replica, fx };
    CycleOptions opt = { .progress = interrupt_progress, .progress_data = &in };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x71);
    run_cycle_ok(fx, &(CycleOptions){ 0 }, 0, 1, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write_random(fx, 0, 16 * MiB, 8 * MiB);
    guest_write(fx, 0, 0, GRANULARITY, 0x72);
    g_assert_false(run_cycle_with(fx, &opt, 1, 2, &r, &error));
    g_assert_true(in.fired);
    /* The replica is gone (its port refuses): unreachable, a missed cycle for the daemon. */
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_UNREACHABLE);
    g_assert_nonnull(strstr(error->message, "upload of disk 'vda'"));
    assert_cycles(fx, 0, "1");
    {
        g_autofree char *left = bitmaps(fx, 0);

        g_assert_true(g_str_has_prefix(left, "1"));
    }
    assert_clean(fx);

    /* The replica is back: the same cycle from the same base. */
    replica_start(fx);
    run_cycle_ok(fx, &(CycleOptions){ 0 }, 1, 2, &r);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, 8 * MiB + GRANULARITY);
    g_assert_cmpuint(r.wire_bytes, >, 8 * MiB);
    assert_cycle(fx, &r);
    vr_primary_result_clear(&r);
}

static void
remove_bitmap(Fixture *fx, guint disk, uint64_t cycle)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *name = g_strdup_printf("vr-%s-%010" PRIu64, RELATIONSHIP, cycle);

    g_assert_true(vr_qmp_bitmap_remove(fx->client, fx->disks[disk].node, name, &error));
    g_assert_no_error(error);
}

/*
 * Tracking lost (the base bitmap removed behind our back): an error without allow_resync;
 * with it, a resync against the replica's hash list that sends only the blocks that differ,
 * and incremental cycles from its bitmap on.
 */
static void
test_resync(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    CycleOptions opt = { 0 };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, 2 * MiB, 0x81);
    guest_write_random(fx, 0, 12 * MiB, MiB);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);
    guest_write(fx, 0, 4 * MiB, 4 * GRANULARITY, 0x82);
    run_cycle_ok(fx, &opt, 1, 2, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    /* Written since cycle 2: 5 granules, one of them to zeroes. */
    guest_write(fx, 0, GRANULARITY, GRANULARITY, 0x83);
    guest_write(fx, 0, 4 * MiB + 4096, 4096, 0x84);
    guest_zero(fx, 0, 12 * MiB, GRANULARITY);
    guest_write(fx, 0, 33 * MiB, 2 * GRANULARITY, 0x85);
    remove_bitmap(fx, 0, 2);

    g_assert_false(run_cycle_with(fx, &opt, 2, 3, &r, &error));
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_RESYNC_REQUIRED);
    g_assert_nonnull(strstr(error->message, "missing"));
    g_clear_error(&error);
    assert_clean(fx);
    assert_cycles(fx, 0, "1 2");

    opt.allow_resync = true;
    run_cycle_ok(fx, &opt, 2, 3, &r);
    g_assert_cmpuint(r.flags, ==, VR_WIRE_FLAG_RESYNC);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, 5 * GRANULARITY);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write(fx, 0, 60 * MiB, GRANULARITY, 0x86);
    run_cycle_ok(fx, &opt, 3, 4, &r);
    g_assert_cmpuint(r.flags, ==, 0);
    g_assert_cmpuint(r.bytes, ==, GRANULARITY);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    /* A resync asked for (replica-resync) with the tracking intact: the hash comparison
     * sends the 2 granules written since, nothing else; incremental cycles go on after it. */
    guest_write(fx, 0, 40 * MiB, 2 * GRANULARITY, 0x87);
    opt.resync = true;
    run_cycle_ok(fx, &opt, 4, 5, &r);
    g_assert_cmpuint(r.flags, ==, VR_WIRE_FLAG_RESYNC);
    g_assert_cmpuint(r.bytes, ==, 2 * GRANULARITY);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);
    opt.resync = false;
    run_cycle_ok(fx, &opt, 5, 6, &r);
    g_assert_cmpuint(r.flags, ==, 0);
    g_assert_cmpuint(r.bytes, ==, 0);
    vr_primary_result_clear(&r);
}

/*
 * One disk published, the other's upload cut off: the cycle failed. Its retry finds the
 * first disk published by the failed run (a replay: the replica keeps that earlier cut), and
 * the writes between the two cuts must still reach the replica with the next cycle.
 */
static void
test_partial(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree uint8_t *first_cut = g_malloc(DISK_SIZE);
    Interrupt in = { fx, 1, 256 * 1024, stop_replica, fx };
    CycleOptions opt = { .progress = interrupt_progress, .progress_data = &in };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x91);
    guest_write(fx, 1, 0, MiB, 0x92);
    run_cycle_ok(fx, &(CycleOptions){ 0 }, 0, 1, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write(fx, 0, 5 * MiB, GRANULARITY, 0x93);
    guest_write_random(fx, 1, 8 * MiB, 2 * MiB);
    memcpy(first_cut, fx->disks[0].model, DISK_SIZE);
    g_assert_false(run_cycle_with(fx, &opt, 1, 2, &r, &error));
    g_assert_true(in.fired);
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_UNREACHABLE);
    g_assert_nonnull(strstr(error->message, "upload of disk 'vdb'"));
    assert_cycles(fx, 0, "1 2");
    assert_cycles(fx, 1, "1");
    assert_clean(fx);

    /* Between the two cuts. */
    guest_write(fx, 0, 7 * MiB, GRANULARITY, 0x94);
    guest_write(fx, 0, 5 * MiB, 4096, 0x95);
    replica_start(fx);
    run_cycle_ok(fx, &(CycleOptions){ 0 }, 1, 2, &r);
    assert_cycles(fx, 0, "1 2");
    assert_cycles(fx, 1, "1 2");
    assert_point_is(fx, 0, 2, first_cut); /* the earlier cut, kept */
    assert_point_is(fx, 1, 2, fx->disks[1].model);
    /* vda's digest is the replica's business: this run did not send that stream */
    for (guint j = 0; j < VR_WIRE_DIGEST_SIZE; j++)
        g_assert_cmpuint(g_array_index(r.digests, uint8_t, j), ==, 0);
    assert_bitmaps(fx, "2");
    assert_clean(fx);
    published(fx);
    vr_primary_result_clear(&r);

    run_cycle_ok(fx, &(CycleOptions){ 0 }, 2, 3, &r);
    /* a superset: what B(1) recorded on vda (2 granules), nothing on vdb */
    g_assert_cmpuint(r.bytes, ==, 2 * GRANULARITY);
    assert_cycle(fx, &r);
    vr_primary_result_clear(&r);
}

/*
 * test_partial_read()'s progress: Interrupt's, with the reported read of disk 1 slowed to
 * 150 ms a report (about 7 s for its 48 MiB): the upload of disk 1, which fires the cancel,
 * starts in that time after the replica published disk 0, on a loaded machine too (at 30 ms
 * a report, a slow replica let the read end first once). @most is how far disk 1's read got:
 * the bytes its reports took, and the offset the upload's reports carry while they hold the
 * read's back.
 */
typedef struct {
    Interrupt in;
    uint64_t most; /* of disk 1 read */
} PartialRead;

static void
partial_read_progress(const VrPrimaryProgress *progress, gpointer user_data)
{
    PartialRead *p = user_data;

    if (progress->disk == 1 && progress->phase == VR_PRIMARY_PHASE_SEND)
        p->most = MAX(p->most, progress->read_done);
    if (progress->disk == 1 && progress->phase == VR_PRIMARY_PHASE_READ && progress->bytes > 0) {
        p->most = MAX(p->most, progress->bytes);
        g_usleep(150000);
    }
    interrupt_progress(progress, &p->in);
}

/*
 * As test_partial, but the cycle stops in the read of the second disk (cancelled while its
 * upload follows the read) after the first disk was published: the retry from the same base
 * finds the first disk published (a replay) and keeps that earlier cut, B(base) was kept,
 * and the writes between the two cuts reach the replica with the next cycle.
 */
static void
test_partial_read(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autofree uint8_t *first_cut = g_malloc(DISK_SIZE);
    PartialRead p = { .in = { fx, 1, 0, cancel, cancellable } };
    CycleOptions opt = { .progress = partial_read_progress,
                         .progress_data = &p,
                         .cancellable = cancellable };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x96);
    guest_write(fx, 1, 0, MiB, 0x97);
    run_cycle_ok(fx, &(CycleOptions){ 0 }, 0, 1, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write(fx, 0, 5 * MiB, GRANULARITY, 0x98);
    guest_write_random(fx, 1, 8 * MiB, 48 * MiB);
    memcpy(first_cut, fx->disks[0].model, DISK_SIZE);
    g_assert_false(run_cycle_with(fx, &opt, 1, 2, &r, &error));
    g_assert_true(p.in.fired);
    g_test_message("stopped after %" G_GUINT64_FORMAT " bytes of vdb read: %s", p.most,
                   error->message);
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED);
    g_assert_nonnull(strstr(error->message, "disk 'vdb'"));
    g_assert_cmpuint(p.most, <, 24 * MiB); /* stopped in the read (48 MiB, from 8 MiB) */
    assert_cycles(fx, 0, "1 2");
    assert_cycles(fx, 1, "1");
    assert_clean(fx);
    for (guint i = 0; i < 2; i++) {
        g_autofree char *left = bitmaps(fx, i);

        g_assert_true(g_str_has_prefix(left, "1")); /* B(base) is kept */
    }

    /* Between the two cuts. */
    guest_write(fx, 0, 7 * MiB, GRANULARITY, 0x99);
    run_cycle_ok(fx, &(CycleOptions){ 0 }, 1, 2, &r);
    assert_cycles(fx, 0, "1 2");
    assert_cycles(fx, 1, "1 2");
    assert_point_is(fx, 0, 2, first_cut); /* the earlier cut, kept */
    assert_point_is(fx, 1, 2, fx->disks[1].model);
    assert_bitmaps(fx, "2");
    assert_clean(fx);
    published(fx);
    vr_primary_result_clear(&r);

    run_cycle_ok(fx, &(CycleOptions){ 0 }, 2, 3, &r);
    /* a superset: what B(1) recorded on vda (2 granules), nothing on vdb */
    g_assert_cmpuint(r.bytes, ==, 2 * GRANULARITY);
    assert_cycle(fx, &r);
    vr_primary_result_clear(&r);
}

/*
 * A disk added to the relationship after its first cycle has no bitmap: the resync compares
 * the disk the replica has and sends the new one whole (the replica has no point of it).
 */
static void
test_resync_new_disk(Fixture *fx, gconstpointer data)
{
    static const char *const first[] = { "vda", NULL };
    CycleOptions opt = { .disks = first };
    VrPrimaryResult r = { 0 };

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0xb1);
    guest_write(fx, 1, 3 * MiB, MiB, 0xb2);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    assert_cycles(fx, 0, "1");
    assert_cycles(fx, 1, "");
    assert_point_is(fx, 0, 1, fx->disks[0].model);
    memset(fx->disks[0].dirty, 0, sizeof(fx->disks[0].dirty));
    vr_primary_result_clear(&r);

    guest_write(fx, 0, 2 * MiB, GRANULARITY, 0xb3);
    guest_write(fx, 1, 6 * MiB, GRANULARITY, 0xb4);
    opt = (CycleOptions){ .allow_resync = true };
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_assert_cmpuint(r.flags, ==, VR_WIRE_FLAG_RESYNC);
    /* vda: the one block that differs; vdb: what is allocated, whole */
    g_assert_cmpuint(r.bytes, ==, GRANULARITY + MiB + GRANULARITY);
    assert_cycle(fx, &r);
    assert_cycles(fx, 0, "1 2");
    assert_cycles(fx, 1, "2");
    vr_primary_result_clear(&r);
}

/* ---- the final cycle of a shut-off domain --------------------------------------------- */

/* Shut the domain off: virsh destroy (SIGTERM: QEMU closes its images cleanly), or a kill -9
 * of QEMU (its persistent bitmaps are not written). */
static void
domain_stop(Fixture *fx, bool kill_qemu)
{
    vr_qmp_client_close(fx->client);
    g_clear_object(&fx->client);
    while (g_main_context_iteration(fx->context, FALSE))
        ;
    if (kill_qemu) {
        g_autofree char *path = g_strdup_printf("/run/libvirt/qemu/%s.pid", fx->name);
        g_autofree char *text = NULL;
        g_autoptr(GError) error = NULL;
        guint64 pid = 0;

        g_assert_true(g_file_get_contents(path, &text, NULL, &error));
        g_assert_no_error(error);
        g_assert_true(g_ascii_string_to_unsigned(g_strstrip(text), 10, 2, G_MAXINT, &pid, NULL));
        g_test_message("kill -9 of QEMU %" G_GUINT64_FORMAT, pid);
        g_assert_no_errno(kill((pid_t)pid, SIGKILL));
        for (guint i = 0; i < 500 && virDomainIsActive(fx->domain) != 0; i++)
            g_usleep(20000);
    } else {
        g_assert_cmpint(virDomainDestroy(fx->domain), ==, 0);
    }
    g_assert_cmpint(virDomainIsActive(fx->domain), ==, 0);
    if (kill_qemu) {
        /* What QEMU had not flushed (qcow2 metadata of new clusters, so their data) is
         * lost: the model becomes what the images hold now. */
        for (guint i = 0; i < fx->n_disks; i++) {
            g_autofree char *raw = g_build_filename(fx->dir, "model.raw", NULL);
            const char *argv[] = { "qemu-img", "convert",          "-U", "-f", "qcow2", "-O",
                                   "raw",      fx->disks[i].image, raw,  NULL };
            g_autoptr(GError) error = NULL;
            g_autofree char *bytes = NULL;
            gsize len = 0;

            g_free(vr_test_run(argv));
            g_assert_true(g_file_get_contents(raw, &bytes, &len, &error));
            g_assert_no_error(error);
            g_assert_cmpuint(len, ==, DISK_SIZE);
            memcpy(fx->disks[i].model, bytes, DISK_SIZE);
            g_unlink(raw);
        }
    }
}

/* Our bitmaps in @disk's closed image, by cycle, each with its flags: "1:auto 2:auto". */
static char *
image_bitmaps(Fixture *fx, guint disk)
{
    const char *argv[] = { "qemu-img", "info",  "--output=json",       "--force-share",
                           "-f",       "qcow2", fx->disks[disk].image, NULL };
    g_autofree char *text = vr_test_run(argv);
    g_autoptr(json_object) info = json_tokener_parse(text);
    json_object *data = vr_json_get_object(vr_json_get_object(info, "format-specific"), "data");
    json_object *list = vr_json_get_array(data, "bitmaps");
    g_autoptr(GPtrArray) items = g_ptr_array_new_with_free_func(g_free);
    const char *prefix = "vr-" RELATIONSHIP "-";

    for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
        json_object *b = json_object_array_get_idx(list, i);
        const char *name = vr_json_get_string(b, "name");
        json_object *flags = vr_json_get_array(b, "flags");
        g_autoptr(GString) item = g_string_new(NULL);
        guint64 cycle = 0;

        if (name == NULL || !g_str_has_prefix(name, prefix))
            continue;
        g_assert_true(
            g_ascii_string_to_unsigned(name + strlen(prefix), 10, 1, G_MAXUINT64, &cycle, NULL));
        g_string_append_printf(item, "%" G_GUINT64_FORMAT ":", cycle);
        for (size_t j = 0; flags != NULL && j < json_object_array_length(flags); j++) {
            g_string_append_printf(item, "%s%s", j > 0 ? "," : "",
                                   json_object_get_string(json_object_array_get_idx(flags, j)));
        }
        g_ptr_array_add(items, g_string_free(g_steal_pointer(&item), FALSE));
    }
    g_ptr_array_sort(items, compare_names);
    g_ptr_array_add(items, NULL);
    return g_strjoinv(" ", (char **)items->pdata);
}

static void
assert_image_bitmaps(Fixture *fx, const char *expected)
{
    for (guint i = 0; i < fx->n_disks; i++) {
        g_autofree char *got = image_bitmaps(fx, i);

        g_assert_cmpstr(got, ==, expected);
    }
}

static bool
run_offline(Fixture *fx, uint64_t base, uint64_t target, VrPrimaryProgressFunc progress,
            gpointer progress_data, VrPrimaryResult *result, GError **error)
{
    const char *disks[MAX_DISKS + 1] = { NULL };
    VrPrimaryConfig config = {
        .conn = fx->conn,
        .domain = fx->name,
        .relationship = RELATIONSHIP,
        .epoch = 1,
        .disks = disks,
        .workdir = fx->workdir,
        .sender = fx->sender,
    };
    bool ok;

    for (guint i = 0; i < fx->n_disks; i++)
        disks[i] = fx->disks[i].target;
    ok = vr_primary_run_offline_cycle(&config, base, target, progress, progress_data, NULL, result,
                                      error);
    if (ok) {
        g_test_message("final cycle %" PRIu64 " from %" PRIu64 ": %" PRIu64 " bytes, %" PRIu64
                       " stream bytes, done after %" PRId64 " ms",
                       target, base, result->bytes, result->wire_bytes,
                       result->finished_ms - result->started_ms);
    } else {
        g_test_message("final cycle %" PRIu64 " from %" PRIu64 ": %s", target, base,
                       (*error)->message);
    }
    return ok;
}

/* Nothing of the final cycle is left: no file in the work directory, no qemu-nbd. */
static void
assert_offline_clean(Fixture *fx)
{
    g_autofree char *files = vr_test_list_dir(fx->workdir);

    g_assert_cmpstr(files, ==, "");
    vr_test_assert_no_process("qemu-nbd", fx->workdir);
}

/*
 * A domain shut off cleanly (virsh destroy: SIGTERM, QEMU writes its bitmaps): its final
 * cycle sends what was written since the last cycle, from the closed images, and moves the
 * images' bitmaps on; started again, the domain's next online cycle builds on it.
 */
static void
test_offline(Fixture *fx, gconstpointer data)
{
    CycleOptions opt = { 0 };
    VrPrimaryResult r = { 0 };
    g_autoptr(GError) error = NULL;

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x51);
    guest_write(fx, 1, 4 * MiB, MiB, 0x52);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    guest_write(fx, 0, 3 * MiB, GRANULARITY, 0x53);
    guest_write_random(fx, 0, 20 * MiB, 3 * GRANULARITY);
    guest_write(fx, 1, 4 * MiB, GRANULARITY, 0x54);
    guest_zero(fx, 1, 4 * MiB + GRANULARITY, GRANULARITY);
    /* No online cycle after these writes: only the final cycle can carry them. */
    domain_stop(fx, false);
    /* The clean close wrote B(1): recording ("auto"), not in use. */
    assert_image_bitmaps(fx, "1:auto");

    g_assert_true(run_offline(fx, 1, 2, NULL, NULL, &r, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(r.cycle, ==, 2);
    g_assert_cmpuint(r.flags, ==, 0);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, (1 + 3 + 1 + 1) * GRANULARITY);
    g_assert_cmpint(r.cut_ms, <=, r.started_ms);
    assert_published(fx, &r);
    assert_offline_clean(fx);
    assert_cycles(fx, 0, "1 2");
    assert_cycles(fx, 1, "1 2");
    /* B(2) empty and recording, B(1) released. */
    assert_image_bitmaps(fx, "2:auto");
    published(fx);
    vr_primary_result_clear(&r);

    /* Started again: QEMU tracks from B(2), and the next online cycle builds on cycle 2. */
    domain_boot(fx);
    assert_bitmaps(fx, "2");
    guest_write(fx, 0, 9 * MiB, GRANULARITY, 0x55);
    guest_write(fx, 1, 0, 2 * GRANULARITY, 0x56);
    run_cycle_ok(fx, &opt, 2, 3, &r);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    g_assert_cmpuint(r.bytes, ==, 3 * GRANULARITY);
    assert_cycle(fx, &r);
    assert_cycles(fx, 0, "1 2 3");
    vr_primary_result_clear(&r);
}

/*
 * QEMU killed (kill -9): the bitmaps QEMU made since it started are not in the image, those
 * it loaded stay "in-use". Either way the final cycle reports that the tracking is lost
 * (RESYNC_REQUIRED) and sends nothing; the next online cycle resynchronizes.
 */
static void
test_offline_unclean(Fixture *fx, gconstpointer data)
{
    CycleOptions opt = { .allow_resync = true };
    VrPrimaryResult r = { 0 };
    g_autoptr(GError) error = NULL;

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x61);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    /* B(1) was made by this QEMU: only in its memory. */
    guest_write(fx, 0, 2 * MiB, GRANULARITY, 0x62);
    domain_stop(fx, true);
    assert_image_bitmaps(fx, "");
    g_assert_false(run_offline(fx, 1, 2, NULL, NULL, &r, &error));
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_RESYNC_REQUIRED);
    g_assert_nonnull(strstr(error->message, "is missing"));
    g_clear_error(&error);
    assert_cycles(fx, 0, "1");
    assert_offline_clean(fx);

    /* Online again: the resync, then a clean stop writes B(2); QEMU loads it at the next
     * start and marks it "in-use" in the image; a kill leaves it so. */
    domain_boot(fx);
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_assert_cmpuint(r.flags, ==, VR_WIRE_FLAG_RESYNC);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);
    domain_stop(fx, false);
    assert_image_bitmaps(fx, "2:auto");
    domain_boot(fx);
    guest_write(fx, 0, 5 * MiB, GRANULARITY, 0x63);
    domain_stop(fx, true);
    assert_image_bitmaps(fx, "2:in-use,auto");
    g_assert_false(run_offline(fx, 2, 3, NULL, NULL, &r, &error));
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_RESYNC_REQUIRED);
    g_assert_nonnull(strstr(error->message, "in use"));
    g_clear_error(&error);
    assert_cycles(fx, 0, "1 2");
    assert_image_bitmaps(fx, "2:in-use,auto");
    assert_offline_clean(fx);

    /* QEMU loads it as inconsistent: the online cycle resynchronizes. */
    domain_boot(fx);
    run_cycle_ok(fx, &opt, 2, 3, &r);
    g_assert_cmpuint(r.flags, ==, VR_WIRE_FLAG_RESYNC);
    assert_cycle(fx, &r);
    vr_primary_result_clear(&r);
}

typedef struct {
    Fixture *fx;
    VrPrimaryPhase phase; /* start the domain when the final cycle first reports this */
    bool started;
} StartDuring;

/* An administrator starts the domain while its final cycle runs: the start must go through
 * (no lock of ours in its way: domain_boot() asserts it). */
static void
start_during(const VrPrimaryProgress *progress, gpointer user_data)
{
    StartDuring *sd = user_data;

    if (sd->started || progress->phase != sd->phase)
        return;
    sd->started = true;
    g_test_message("starting the domain during the final cycle's %s",
                   vr_primary_phase_name(progress->phase));
    domain_boot(sd->fx);
}

/*
 * Started while the final cycle reads the images: the start is not blocked, nothing is
 * published, no bitmap is touched; the next online cycle is the same cycle from the same
 * base, and holds every write.
 */
static void
test_offline_start_read(Fixture *fx, gconstpointer data)
{
    CycleOptions opt = { 0 };
    VrPrimaryResult r = { 0 };
    StartDuring sd = { fx, VR_PRIMARY_PHASE_READ, false };
    g_autoptr(GError) error = NULL;

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x71);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    published(fx);
    vr_primary_result_clear(&r);
    guest_write(fx, 0, 8 * MiB, 4 * MiB, 0x72);
    domain_stop(fx, false);

    g_assert_false(run_offline(fx, 1, 2, start_during, &sd, &r, &error));
    g_assert_true(sd.started);
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED);
    g_assert_nonnull(strstr(error->message, "nothing sent"));
    g_clear_error(&error);
    g_assert_cmpint(virDomainIsActive(fx->domain), ==, 1);
    assert_cycles(fx, 0, "1");
    assert_bitmaps(fx, "1");
    assert_offline_clean(fx);

    guest_write(fx, 0, 9 * MiB, GRANULARITY, 0x73);
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    assert_cycle(fx, &r);
    vr_primary_result_clear(&r);
}

/*
 * Started while the final cycle sends: the point it sends is the images as QEMU left them,
 * and the replica publishes it, but the bitmaps cannot move on (the domain runs): the cycle
 * fails. The next online cycle is cycle 2 from base 1 again: the replica answers it as
 * published, and the cycle merges B(1) into its B(2), so that cycle 3 from 2 carries
 * everything written since the shutdown.
 */
static void
test_offline_start_send(Fixture *fx, gconstpointer data)
{
    CycleOptions opt = { 0 };
    VrPrimaryResult r = { 0 };
    StartDuring sd = { fx, VR_PRIMARY_PHASE_SEND, false };
    g_autoptr(GError) error = NULL;
    g_autofree uint8_t *at_stop = NULL;

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0x81);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    published(fx);
    vr_primary_result_clear(&r);
    guest_write(fx, 0, 8 * MiB, MiB, 0x82);
    domain_stop(fx, false);
    at_stop = g_memdup2(fx->disks[0].model, DISK_SIZE);

    g_assert_false(run_offline(fx, 1, 2, start_during, &sd, &r, &error));
    g_assert_true(sd.started);
    g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED);
    g_assert_nonnull(strstr(error->message, "published, but the bitmaps stay at cycle 1"));
    g_clear_error(&error);
    g_assert_cmpint(virDomainIsActive(fx->domain), ==, 1);
    /* The replica's point 2 is the disk as it was shut off. */
    assert_cycles(fx, 0, "1 2");
    assert_point_is(fx, 0, 2, at_stop);
    assert_bitmaps(fx, "1");
    assert_offline_clean(fx);

    guest_write(fx, 0, 8 * MiB + GRANULARITY, GRANULARITY, 0x83);
    guest_write(fx, 0, 30 * MiB, GRANULARITY, 0x84);
    run_cycle_ok(fx, &opt, 1, 2, &r);
    assert_cycles(fx, 0, "1 2");
    assert_bitmaps(fx, "2");
    vr_primary_result_clear(&r);
    guest_write(fx, 0, 40 * MiB, GRANULARITY, 0x85);
    run_cycle_ok(fx, &opt, 2, 3, &r);
    /* A superset of what changed since the shutdown: B(1)'s granules and the new one. */
    g_assert_cmpuint(r.bytes, >=, 3 * GRANULARITY);
    assert_cycle(fx, &r);
    assert_cycles(fx, 0, "1 2 3");
    vr_primary_result_clear(&r);
}

static void
cancel(gpointer data)
{
    g_cancellable_cancel(data);
}

/* Cancellation, and what is not a replicable domain or disk. */
static void
test_errors(Fixture *fx, gconstpointer data)
{
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    Interrupt in = { fx, 0, 64 * 1024, cancel, cancellable };
    CycleOptions opt = { .cancellable = cancellable };
    VrPrimaryResult r = { 0 };
    static const char *const no_such_disk[] = { "vdz", NULL };
    g_autofree char *files = NULL;

    if (fx->client == NULL)
        return;
    guest_write(fx, 0, 0, MiB, 0xa1);

    /* cancelled before it starts */
    g_cancellable_cancel(cancellable);
    {
        g_autoptr(GError) error = NULL;

        g_assert_false(run_cycle_with(fx, &opt, 0, 1, &r, &error));
        g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED);
    }
    g_cancellable_reset(cancellable);
    run_cycle_ok(fx, &opt, 0, 1, &r);
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    /* cancelled during the upload */
    guest_write_random(fx, 0, 20 * MiB, 2 * MiB);
    opt.progress = interrupt_progress;
    opt.progress_data = &in;
    {
        g_autoptr(GError) error = NULL;
        g_autofree char *left = NULL;

        g_assert_false(run_cycle_with(fx, &opt, 1, 2, &r, &error));
        g_assert_true(in.fired);
        g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED);
        left = bitmaps(fx, 0);
        g_assert_true(g_str_has_prefix(left, "1"));
        assert_clean(fx);
        assert_cycles(fx, 0, "1");
    }
    g_cancellable_reset(cancellable);
    run_cycle_ok(fx, &opt, 1, 2, &r);
    g_assert_cmpuint(r.bytes, ==, dirty_bytes(fx));
    assert_cycle(fx, &r);
    published(fx);
    vr_primary_result_clear(&r);

    /* no such disk, no such domain, a domain that is not running */
    {
        g_autoptr(GError) error = NULL;

        g_assert_false(
            run_cycle_with(fx, &(CycleOptions){ .disks = no_such_disk }, 2, 3, &r, &error));
        g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN);
        g_assert_nonnull(strstr(error->message, "'vdz'"));
        g_clear_error(&error);
        g_assert_false(run_cycle_with(fx, &(CycleOptions){ .domain = "vrtest-no-such-domain" }, 2,
                                      3, &r, &error));
        g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN);
        g_clear_error(&error);
        assert_clean(fx);

        vr_qmp_client_close(fx->client);
        g_assert_cmpint(virDomainDestroy(fx->domain), ==, 0);
        g_assert_false(run_cycle_with(fx, &(CycleOptions){ 0 }, 2, 3, &r, &error));
        g_assert_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_DOMAIN);
        g_assert_nonnull(strstr(error->message, "not running"));
        files = vr_test_list_dir(fx->workdir);
        g_assert_cmpstr(files, ==, "");
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    pki = vr_test_make_pki(&pki_skip_why);

#define ADD(path, func, disks)                                                          \
    g_test_add("/primary/" path, Fixture, GUINT_TO_POINTER(disks), fixture_setup, func, \
               fixture_teardown)
    ADD("cycles", test_cycles, 1);
    ADD("two-disks", test_two_disks, 2);
    ADD("stale-epoch", test_stale_epoch, 1);
    ADD("upload-fails", test_upload_fails, 1);
    ADD("overlap", test_overlap, 1);
    ADD("upload-refused", test_upload_refused_stops_read, 1);
    ADD("resync", test_resync, 1);
    ADD("resync-new-disk", test_resync_new_disk, 2);
    ADD("partial", test_partial, 2);
    ADD("partial-read", test_partial_read, 2);
    ADD("errors", test_errors, 1);
    ADD("offline/final", test_offline, 2);
    ADD("offline/unclean", test_offline_unclean, 1);
    ADD("offline/start-during-read", test_offline_start_read, 1);
    ADD("offline/start-during-send", test_offline_start_send, 1);
#undef ADD

    return vr_test_run_pki(pki, pki_skip_why);
}
