/*
 * test-capture.c: change capture against a real qemu-system-x86_64 (no guest OS)
 *
 * Guest writes go through HMP qemu-io on the virtio-blk devices; a byte array per disk is
 * the naive model of what the guest sees, and a set of granules the model of what changed.
 * Each cycle's spool is applied to a raw replica file, which must then equal the model as
 * it was at the cut.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <signal.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <libvirt/libvirt.h>

#include "vr-capture.h"
#include "vr-guest-agent.h"
#include "vr-hashlist.h"
#include "vr-qmp-block.h"
#include "vr-qmp-disk.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-spool.h"
#include "vr-test-util.h"

#define DISK_SIZE   (64 * 1024 * 1024)
#define GRANULARITY 65536
#define N_GRANULES  (DISK_SIZE / GRANULARITY)
#define MAX_DISKS   2

static const uint8_t uuid[16] = { 0x7f, 0x3a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 };

typedef struct {
    char target[8];
    char node[32];
    char qdev[96];
    char *image;
    char *replica;  /* raw file the spools are applied to */
    uint8_t *model; /* what the guest sees now */
    uint8_t *at_cut;
    bool dirty[N_GRANULES]; /* written since the last successful cut */
    bool dirty_at_cut[N_GRANULES];
} Disk;

typedef struct {
    char *dir;
    char *qmp;
    char *workdir;
    guint n_disks;
    Disk disks[MAX_DISKS];
    VrTestProcess *qemu;
    VrQmpClient *client;
    VrCapture *capture;
    /* libvirt fixtures */
    GMainContext *context;
    virConnectPtr conn;
    virDomainPtr domain;
} Fixture;

/*
 * The VM runs (no -S), as replicated VMs do: QEMU closes a removed fd set only while the VM
 * runs.
 */
static void
start_qemu(Fixture *fx)
{
    const char *images[MAX_DISKS + 1] = { NULL };

    for (guint i = 0; i < fx->n_disks; i++)
        images[i] = fx->disks[i].image;
    fx->qemu = vr_test_qemu_start(fx->qmp, images, false);
    fx->client = vr_test_connect_unix(fx->qmp);
}

static void
new_capture(Fixture *fx)
{
    g_autoptr(GError) error = NULL;

    fx->capture = vr_capture_new(fx->client, "t1", uuid, fx->workdir, VR_CAPTURE_PASS_FDS, &error);
    g_assert_no_error(error);
}

/* Disk @i: a fresh 64 MiB qcow2 image, an all-zero raw replica, an all-zero model. */
static void
disk_init(Fixture *fx, guint i)
{
    Disk *d = &fx->disks[i];
    g_autofree char *image = NULL;
    g_autofree char *replica = NULL;
    int fd;

    g_snprintf(d->target, sizeof(d->target), "vd%c", 'a' + i);
    image = g_strdup_printf("%s.qcow2", d->target);
    replica = g_strdup_printf("%s.replica", d->target);
    d->image = g_build_filename(fx->dir, image, NULL);
    d->replica = g_build_filename(fx->dir, replica, NULL);
    vr_test_qcow2_create(d->image, "64M");
    fd = open(d->replica, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    g_assert_no_errno(fd);
    g_assert_no_errno(ftruncate(fd, DISK_SIZE));
    close(fd);
    d->model = g_malloc0(DISK_SIZE);
    d->at_cut = g_malloc0(DISK_SIZE);
}

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *name = g_strdup_printf("cap%u", serial++);

    if (vr_test_skip_without("qemu-system-x86_64") || vr_test_skip_without("qemu-img"))
        return;
    fx->n_disks = data != NULL ? GPOINTER_TO_UINT(data) : 1;
    fx->dir = vr_test_path(name);
    fx->workdir = g_build_filename(fx->dir, "work", NULL);
    fx->qmp = g_build_filename(fx->dir, "qmp.sock", NULL);
    g_assert_no_errno(g_mkdir_with_parents(fx->workdir, 0755));
    for (guint i = 0; i < fx->n_disks; i++) {
        Disk *d = &fx->disks[i];

        disk_init(fx, i);
        g_snprintf(d->node, sizeof(d->node), "disk%u", i);
        g_snprintf(d->qdev, sizeof(d->qdev), "/machine/peripheral/%s/virtio-backend", d->target);
    }
    start_qemu(fx);
    new_capture(fx);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    g_clear_pointer(&fx->capture, vr_capture_free);
    if (fx->client != NULL)
        vr_qmp_client_close(fx->client);
    g_clear_object(&fx->client);
    g_clear_pointer(&fx->qemu, vr_test_process_free);
    for (guint i = 0; i < fx->n_disks; i++) {
        g_free(fx->disks[i].image);
        g_free(fx->disks[i].replica);
        g_free(fx->disks[i].model);
        g_free(fx->disks[i].at_cut);
    }
    g_free(fx->dir);
    g_free(fx->workdir);
    g_free(fx->qmp);
}

/*
 * The same, with a running (TCG, no OS) libvirt domain and the libvirt channel: fd passing
 * into a QEMU that runs as libvirt-qemu, exactly as in production.
 */
static void
fixture_setup_libvirt(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autoptr(GError) error = NULL;
    g_autofree char *name = g_strdup_printf("%s-cap%u", vr_test_prefix(), serial++);
    g_autofree char *xml = NULL;
    g_autofree char *live = NULL;
    g_autoptr(VrQmpDiskNode) vda = NULL;
    Disk *d = &fx->disks[0];

    if (vr_test_skip_without("qemu-img"))
        return;
    fx->conn = vr_test_libvirt_connect();
    if (fx->conn == NULL)
        return;
    fx->n_disks = 1;
    fx->dir = vr_test_path(name);
    fx->workdir = g_build_filename(fx->dir, "work", NULL);
    g_assert_no_errno(g_mkdir_with_parents(fx->workdir, 0755));
    g_assert_no_errno(chmod(fx->dir, 0755));
    disk_init(fx, 0);

    xml = g_strdup_printf("<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory>"
                          "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
                          "<disk type='file' device='disk'>"
                          "<driver name='qemu' type='qcow2' discard='unmap'/>"
                          "<source file='%s'/><target dev='vda' bus='virtio'/></disk>"
                          "%s<memballoon model='none'/></devices></domain>",
                          name, d->image,
                          data != NULL ? "<channel type='unix'><target type='virtio' "
                                         "name='org.qemu.guest_agent.0'/></channel>"
                                       : "");
    fx->domain = virDomainDefineXML(fx->conn, xml);
    g_assert_nonnull(fx->domain);
    /* Running, as replicated domains do (QEMU closes removed fd sets only then). */
    g_assert_cmpint(virDomainCreate(fx->domain), ==, 0);

    fx->context = g_main_context_new();
    g_main_context_push_thread_default(fx->context);
    fx->client = vr_qmp_client_new(vr_qmp_channel_libvirt_new(fx->domain));
    vr_qmp_client_connect(fx->client, NULL, &error);
    g_assert_no_error(error);
    live = virDomainGetXMLDesc(fx->domain, 0);
    vda = vr_qmp_disk_resolve(fx->client, live, "vda", &error);
    g_assert_no_error(error);
    g_strlcpy(d->node, vda->node_name, sizeof(d->node));
    g_strlcpy(d->qdev, vda->qdev, sizeof(d->qdev));
    new_capture(fx);
}

static void
fixture_teardown_libvirt(Fixture *fx, gconstpointer data)
{
    g_clear_pointer(&fx->capture, vr_capture_free);
    if (fx->client != NULL)
        vr_qmp_client_close(fx->client);
    g_clear_object(&fx->client);
    vr_test_libvirt_teardown(&fx->context, &fx->domain, &fx->conn);
    fixture_teardown(fx, data);
}

static GArray *
capture_disks(Fixture *fx)
{
    GArray *disks = g_array_new(FALSE, TRUE, sizeof(VrCaptureDisk));

    for (guint i = 0; i < fx->n_disks; i++) {
        VrCaptureDisk cd = { fx->disks[i].target, fx->disks[i].node, fx->disks[i].qdev, DISK_SIZE };

        g_array_append_val(disks, cd);
    }
    return disks;
}

/* ---- the guest and its model ------------------------------------------------------- */

typedef enum {
    OP_WRITE,
    OP_ZERO,
    OP_DISCARD,
} Op;

static void
guest_op(Fixture *fx, guint disk, Op op, uint64_t offset, uint64_t len, uint8_t pattern)
{
    Disk *d = &fx->disks[disk];
    g_autofree char *io = NULL;

    switch (op) {
    case OP_WRITE:
        io = g_strdup_printf("write -P 0x%02x %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, pattern,
                             offset, len);
        memset(d->model + offset, pattern, len);
        break;
    case OP_ZERO:
        io = g_strdup_printf("write -z %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, offset, len);
        memset(d->model + offset, 0, len);
        break;
    case OP_DISCARD: {
        /*
         * Discard is advisory: qcow2 drops the partial clusters at either end (QEMU 7.2
         * qcow2_co_pdiscard), so only whole clusters read back as zeroes. They are still
         * marked dirty, whole range.
         */
        uint64_t first = (offset + GRANULARITY - 1) / GRANULARITY * GRANULARITY;
        uint64_t end = (offset + len) / GRANULARITY * GRANULARITY;

        io = g_strdup_printf("discard %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, offset, len);
        if (end > first)
            memset(d->model + first, 0, end - first);
        break;
    }
    }
    vr_test_hmp_qemu_io(fx->client, d->qdev, io);
    for (uint64_t g = offset / GRANULARITY; g <= (offset + len - 1) / GRANULARITY; g++)
        d->dirty[g] = true;
}

/* The model at the instant of a cut: what each spool must reproduce. */
static void
model_cut(Fixture *fx)
{
    for (guint i = 0; i < fx->n_disks; i++) {
        Disk *d = &fx->disks[i];

        memcpy(d->at_cut, d->model, DISK_SIZE);
        memcpy(d->dirty_at_cut, d->dirty, sizeof(d->dirty));
        memset(d->dirty, 0, sizeof(d->dirty));
    }
}

/* A cut that did not reach the replica: what it took is dirty again. */
static void
model_cut_failed(Fixture *fx)
{
    for (guint i = 0; i < fx->n_disks; i++) {
        Disk *d = &fx->disks[i];

        for (guint g = 0; g < N_GRANULES; g++)
            d->dirty[g] = d->dirty[g] || d->dirty_at_cut[g];
    }
}

/* Apply @spool to disk @disk's replica; returns the bytes the spool covers. */
static uint64_t
apply_spool(Fixture *fx, guint disk, const char *spool, uint64_t base, uint64_t cycle)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrSpoolReader) reader = vr_spool_reader_open(spool, &error);
    g_autofree uint8_t *zero = g_malloc0(VR_SPOOL_MAX_RECORD);
    VrSpoolTotals totals = { 0 };
    VrSpoolRecord rec;
    int fd;

    g_assert_no_error(error);
    g_assert_cmpstr(vr_spool_reader_get_header(reader)->disk, ==, fx->disks[disk].target);
    g_assert_cmpuint(vr_spool_reader_get_header(reader)->base_cycle, ==, base);
    g_assert_cmpuint(vr_spool_reader_get_header(reader)->cycle, ==, cycle);
    fd = open(fx->disks[disk].replica, O_WRONLY | O_CLOEXEC);
    g_assert_no_errno(fd);
    while (vr_spool_reader_next(reader, &rec, &totals, &error)) {
        for (uint64_t done = 0; done < rec.length;) {
            uint64_t n = MIN(rec.length - done, (uint64_t)VR_SPOOL_MAX_RECORD);
            const void *src = rec.data != NULL ? rec.data + done : zero;

            g_assert_cmpint(pwrite(fd, src, n, rec.offset + done), ==, (gssize)n);
            done += n;
        }
    }
    g_assert_no_error(error);
    close(fd);
    return totals.data_bytes + totals.zero_bytes;
}

static void
assert_replica_is(Fixture *fx, guint disk, const uint8_t *expected)
{
    g_autofree char *contents = NULL;
    gsize len = 0;

    g_assert_true(g_file_get_contents(fx->disks[disk].replica, &contents, &len, NULL));
    g_assert_cmpuint(len, ==, DISK_SIZE);
    for (gsize i = 0; i < len; i++) {
        if ((uint8_t)contents[i] != expected[i]) {
            g_error("disk %s: replica differs at byte %" G_GSIZE_FORMAT ": 0x%02x, expected "
                    "0x%02x",
                    fx->disks[disk].target, i, (uint8_t)contents[i], expected[i]);
        }
    }
}

static uint64_t
dirty_bytes_at_cut(Fixture *fx, guint disk)
{
    uint64_t n = 0;

    for (guint g = 0; g < N_GRANULES; g++)
        n += fx->disks[disk].dirty_at_cut[g] ? GRANULARITY : 0;
    return n;
}

/* Cut, let @during write after the cut, spool every disk, apply each spool to its replica
 * and compare the replica with QEMU's point-in-time view (the fleece export, over NBD),
 * end. Returns the spool paths and, in @covered (if non-NULL), the bytes each covered. */
typedef void (*DuringFunc)(Fixture *fx, gpointer data);

static GPtrArray *
run_cycle_full(Fixture *fx, uint64_t base, uint64_t cycle, DuringFunc during, gpointer data,
               uint64_t *covered)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(VrCaptureCycle) c = NULL;
    GPtrArray *spools = g_ptr_array_new_with_free_func(g_free);

    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, disks->len, base, cycle,
                               &error);
    g_assert_no_error(error);
    model_cut(fx);
    if (during != NULL)
        during(fx, data);
    for (guint i = 0; i < fx->n_disks; i++) {
        char *spool = g_strdup_printf("%s/%s-%" G_GUINT64_FORMAT ".spool", fx->dir,
                                      fx->disks[i].target, cycle);
        bool ok = vr_capture_cycle_spool(c, i, spool, NULL, &error);

        g_assert_no_error(error);
        g_assert_true(ok);
        g_ptr_array_add(spools, spool);
    }
    for (guint i = 0; i < fx->n_disks; i++) {
        g_autofree char *uri = g_strdup_printf("nbd+unix:///%s?socket=%s", fx->disks[i].target,
                                               vr_capture_cycle_get_nbd_socket(c));
        const char *argv[] = { "qemu-img",           "compare", "-f", "raw", "-F", "raw",
                               fx->disks[i].replica, uri,       NULL };
        uint64_t n = apply_spool(fx, i, spools->pdata[i], base, cycle);
        g_autofree char *out = NULL;

        if (covered != NULL)
            covered[i] = n;
        out = vr_test_run(argv);
        assert_replica_is(fx, i, fx->disks[i].at_cut);
    }
    vr_capture_cycle_end(c);
    return spools;
}

static GPtrArray *
run_cycle(Fixture *fx, uint64_t base, uint64_t cycle, DuringFunc during, gpointer data)
{
    return run_cycle_full(fx, base, cycle, during, data, NULL);
}

static void
ack(Fixture *fx, uint64_t cycle)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    bool ok = vr_capture_ack(fx->capture, (VrCaptureDisk *)disks->data, disks->len, cycle, &error);

    g_assert_no_error(error);
    g_assert_true(ok);
}

/* Nothing of ours in QEMU: exports, jobs, nodes, fd sets; nothing but spools on disk. */
static void
assert_clean(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) exports = vr_qmp_query_block_exports(fx->client, &error);
    g_autoptr(GPtrArray) jobs = vr_qmp_query_jobs(fx->client, &error);
    g_autoptr(GPtrArray) nodes = vr_qmp_query_named_block_nodes(fx->client, &error);
    g_autoptr(json_object) fdsets = vr_qmp_client_execute(fx->client, "query-fdsets", NULL, &error);
    g_autoptr(GDir) dir = g_dir_open(fx->workdir, 0, NULL);

    g_assert_no_error(error);
    g_assert_cmpuint(exports->len, ==, 0);
    g_assert_cmpuint(jobs->len, ==, 0);
    for (guint i = 0; i < nodes->len; i++) {
        const char *n = ((VrQmpBlockNode *)g_ptr_array_index(nodes, i))->node_name;

        if (g_str_has_prefix(n, "vr-"))
            g_error("node '%s' left behind", n);
    }
    g_assert_cmpuint(json_object_array_length(fdsets), ==, 0);
    g_assert_null(g_dir_read_name(dir));
}

/* ---- tests -------------------------------------------------------------------------- */

static void
write_over_cut(Fixture *fx, gpointer data)
{
    /* P2 over the very blocks P1 wrote, while the fleece is exported. */
    guest_op(fx, 0, OP_WRITE, 1024 * 1024, 128 * 1024, 0x22);
}

/*
 * Three cycles: full; P1 before the cut and P2 over it during the export (the spool holds
 * P1); then the next cycle holds P2.
 */
static void
point_in_time_sequence(Fixture *fx)
{
    g_autoptr(GPtrArray) s1 = NULL;
    g_autoptr(GPtrArray) s2 = NULL;
    g_autoptr(GPtrArray) s3 = NULL;
    uint64_t covered[MAX_DISKS];

    guest_op(fx, 0, OP_WRITE, 0, 64 * 1024, 0x10);
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    ack(fx, 1);
    guest_op(fx, 0, OP_WRITE, 1024 * 1024, 128 * 1024, 0x11);
    guest_op(fx, 0, OP_ZERO, 0, 64 * 1024, 0);
    s2 = run_cycle_full(fx, 1, 2, write_over_cut, NULL, covered);
    g_assert_cmpuint(covered[0], ==, dirty_bytes_at_cut(fx, 0));
    g_assert_cmpint(fx->disks[0].at_cut[1024 * 1024], ==, 0x11);
    ack(fx, 2);
    s3 = run_cycle_full(fx, 2, 3, NULL, NULL, covered);
    g_assert_cmpuint(covered[0], ==, 2 * GRANULARITY);
    g_assert_cmpint(fx->disks[0].at_cut[1024 * 1024], ==, 0x22);
    assert_clean(fx);
}

static void
test_point_in_time(Fixture *fx, gconstpointer data)
{
    if (fx->capture != NULL)
        point_in_time_sequence(fx);
}

static void
test_random_cycles(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    static const uint64_t sizes[] = { 512, 4096, 65536, 65536 + 4096, 192 * 1024, 1024 * 1024 };
    uint64_t acked = 0;

    if (fx->capture == NULL)
        return;
    for (uint64_t cycle = 1; cycle <= 8; cycle++) {
        g_autoptr(GPtrArray) spools = NULL;
        guint ops = g_rand_int_range(rand, 1, 12);
        uint64_t covered[MAX_DISKS];

        for (guint i = 0; i < ops; i++) {
            uint64_t len = sizes[g_rand_int_range(rand, 0, G_N_ELEMENTS(sizes))];
            uint64_t offset = (uint64_t)g_rand_int_range(rand, 0, (DISK_SIZE - len) / 512) * 512;
            int kind = g_rand_int_range(rand, 0, 10);

            guest_op(fx, 0,
                     kind < 7   ? OP_WRITE
                     : kind < 9 ? OP_ZERO
                                : OP_DISCARD,
                     offset, len, (uint8_t)g_rand_int_range(rand, 1, 256));
        }
        spools = run_cycle_full(fx, acked, cycle, NULL, NULL, covered);
        /* An incremental spool covers exactly the dirty granules, none more (cost follows
         * the dirty bytes); a full one the allocated extents. */
        if (acked != 0)
            g_assert_cmpuint(covered[0], ==, dirty_bytes_at_cut(fx, 0));
        ack(fx, cycle);
        acked = cycle;
    }
    assert_clean(fx);
}

static void
test_failed_cycle(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(GPtrArray) s1 = NULL;
    g_autoptr(GPtrArray) s3 = NULL;
    uint64_t covered[MAX_DISKS];
    g_autofree char *half = g_build_filename(fx->dir, "half.spool", NULL);
    g_autofree char *part = g_strconcat(half, ".part", NULL);
    struct rlimit saved;
    struct rlimit limit;
    VrCaptureCycle *c;
    bool ok;

    if (fx->capture == NULL)
        return;
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    ack(fx, 1);

    /* Cycle 2 is cut, then fails while reading: its spool never appears. */
    guest_op(fx, 0, OP_WRITE, 4 * 1024 * 1024, 256 * 1024, 0x31);
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, disks->len, 1, 2, &error);
    g_assert_no_error(error);
    model_cut(fx);
    /* The spool's file system fills up halfway through the data (a file size limit stands
     * in for a full disk): the write fails with EFBIG in the middle of the read. */
    g_assert_no_errno(getrlimit(RLIMIT_FSIZE, &saved));
    limit.rlim_cur = 128 * 1024;
    limit.rlim_max = saved.rlim_max;
    signal(SIGXFSZ, SIG_IGN);
    g_assert_no_errno(setrlimit(RLIMIT_FSIZE, &limit));
    ok = vr_capture_cycle_spool(c, 0, half, NULL, &error);
    g_assert_no_errno(setrlimit(RLIMIT_FSIZE, &saved));
    g_assert_false(ok);
    g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_IO);
    g_assert_nonnull(strstr(error->message, g_strerror(EFBIG)));
    g_clear_error(&error);
    g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
    g_assert_false(g_file_test(half, G_FILE_TEST_EXISTS));
    vr_capture_cycle_free(c);
    model_cut_failed(fx);
    assert_clean(fx);

    /* More writes; the same cycle 2, tried again from the same base 1, holds both sets
     * (the failed try's bitmap B(2) is replaced). */
    guest_op(fx, 0, OP_WRITE, 32 * 1024 * 1024, 64 * 1024, 0x32);
    s3 = run_cycle_full(fx, 1, 2, NULL, NULL, covered);
    g_assert_cmpuint(covered[0], ==, dirty_bytes_at_cut(fx, 0));
    g_assert_cmpuint(dirty_bytes_at_cut(fx, 0), ==, 5 * GRANULARITY);
}

static void
test_fleece_budget(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(GPtrArray) s1 = NULL;
    g_autoptr(GPtrArray) s3 = NULL;
    g_autofree char *spool = g_build_filename(fx->dir, "over.spool", NULL);
    uint64_t covered[MAX_DISKS];
    VrCaptureCycle *c;

    if (fx->capture == NULL)
        return;
    vr_capture_set_fleece_budget(fx->capture, 2 * 1024 * 1024);
    guest_op(fx, 0, OP_WRITE, 8 * 1024 * 1024, 4 * 1024 * 1024, 0x61);
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    ack(fx, 1);

    /* After the cut the guest overwrites 4 MiB: copy-before-write pushes 4 MiB of old data
     * into a fleece allowed 2 MiB. The cycle stops, cleanly, before the fleece fills. */
    guest_op(fx, 0, OP_WRITE, 40 * 1024 * 1024, 65536, 0x62);
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, disks->len, 1, 2, &error);
    g_assert_no_error(error);
    model_cut(fx);
    guest_op(fx, 0, OP_WRITE, 8 * 1024 * 1024, 4 * 1024 * 1024, 0x63);
    g_assert_false(vr_capture_cycle_spool(c, 0, spool, NULL, &error));
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_BUDGET);
    g_assert_nonnull(strstr(error->message, "budget of 2097152 bytes"));
    g_assert_false(g_file_test(spool, G_FILE_TEST_EXISTS));
    vr_capture_cycle_free(c);
    model_cut_failed(fx);
    assert_clean(fx);

    /* The next cycle from the same base holds both sets. */
    s3 = run_cycle_full(fx, 1, 3, NULL, NULL, covered);
    g_assert_cmpuint(covered[0], ==, dirty_bytes_at_cut(fx, 0));
    g_assert_cmpuint(covered[0], ==, 65536 + 4 * 1024 * 1024);
}

static void
two_disk_writes(Fixture *fx, gpointer data)
{
    guest_op(fx, 0, OP_WRITE, 0, 65536, 0xb0);
    guest_op(fx, 1, OP_WRITE, 0, 65536, 0xb1);
}

static void
test_two_disks(Fixture *fx, gconstpointer data)
{
    g_autoptr(GPtrArray) s1 = NULL;
    g_autoptr(GPtrArray) s2 = NULL;

    if (fx->capture == NULL)
        return;
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    ack(fx, 1);
    /* Both disks written before the cut, both overwritten right after: one instant. */
    guest_op(fx, 0, OP_WRITE, 0, 65536, 0xa0);
    guest_op(fx, 1, OP_WRITE, 0, 65536, 0xa1);
    s2 = run_cycle(fx, 1, 2, two_disk_writes, NULL);
    for (guint i = 0; i < 2; i++)
        g_assert_cmpint(fx->disks[i].at_cut[0], ==, 0xa0 + i);
    assert_clean(fx);
}

static void
test_health(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(GPtrArray) s1 = NULL;
    g_autoptr(json_object) ret = NULL;
    g_autofree char *overlay = g_build_filename(fx->dir, "overlay.qcow2", NULL);
    g_autofree char *bitmap = NULL;
    VrCaptureDisk *d = &g_array_index(disks, VrCaptureDisk, 0);
    json_object *args;
    bool ok;

    if (fx->capture == NULL)
        return;
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    ok = vr_capture_check(fx->capture, d, 1, 1, &error);
    g_assert_no_error(error);
    g_assert_true(ok);

    /* A base that does not exist. */
    g_assert_false(vr_capture_check(fx->capture, d, 1, 7, &error));
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED);
    g_assert_nonnull(strstr(error->message, "missing"));
    g_clear_error(&error);

    /* A resize. */
    args = json_object_new_object();
    json_object_object_add(args, "node-name", json_object_new_string(d->node_name));
    json_object_object_add(args, "size", json_object_new_int64(2 * DISK_SIZE));
    ret = vr_qmp_client_execute(fx->client, "block_resize", args, &error);
    g_assert_no_error(error);
    g_assert_false(vr_capture_check(fx->capture, d, 1, 1, &error));
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED);
    g_assert_nonnull(strstr(error->message, "size changed"));
    g_clear_error(&error);
    d->virtual_size = 2 * DISK_SIZE;

    /* An external snapshot moves the device to a new top node. */
    vr_test_qcow2_create(overlay, "128M");
    ok = vr_qmp_blockdev_add_qcow2(fx->client, "snap", overlay, NULL, false, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    args = json_object_new_object();
    json_object_object_add(args, "node", json_object_new_string(d->node_name));
    json_object_object_add(args, "overlay", json_object_new_string("snap"));
    g_clear_pointer(&ret, json_object_put);
    ret = vr_qmp_client_execute(fx->client, "blockdev-snapshot", args, &error);
    g_assert_no_error(error);
    g_assert_false(vr_capture_check(fx->capture, d, 1, 1, &error));
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED);
    g_assert_nonnull(strstr(error->message, "writes through 'snap'"));
    g_clear_error(&error);

    /* Bitmap names: prefix, relationship, cycle. */
    bitmap = vr_capture_bitmap_name(fx->capture, 1);
    g_assert_cmpstr(bitmap, ==, "vr-t1-0000000001");
}

static void
test_not_qcow2(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *raw = g_build_filename(fx->dir, "raw.img", NULL);
    VrCaptureDisk d = { "vdz", "rawdisk", NULL, 1024 * 1024 };
    json_object *options = json_object_new_object();
    json_object *file = json_object_new_object();
    g_autoptr(VrCaptureCycle) c = NULL;
    bool ok;
    int fd;

    if (fx->capture == NULL) {
        json_object_put(options);
        json_object_put(file);
        return;
    }
    fd = open(raw, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    g_assert_no_errno(fd);
    g_assert_no_errno(ftruncate(fd, 1024 * 1024));
    close(fd);
    json_object_object_add(file, "driver", json_object_new_string("file"));
    json_object_object_add(file, "filename", json_object_new_string(raw));
    json_object_object_add(options, "driver", json_object_new_string("raw"));
    json_object_object_add(options, "node-name", json_object_new_string("rawdisk"));
    json_object_object_add(options, "file", file);
    ok = vr_qmp_blockdev_add(fx->client, options, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    c = vr_capture_cycle_begin(fx->capture, &d, 1, 0, 1, &error);
    g_assert_null(c);
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(error->message, "not qcow2"));
    assert_clean(fx);
}

static void
test_reconcile(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(GPtrArray) s2 = NULL;
    VrCaptureCycle *c;
    bool ok;

    if (fx->capture == NULL)
        return;
    /* An agent cuts a cycle and dies: its client goes, its cleanup never runs. */
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, disks->len, 0, 1, &error);
    g_assert_no_error(error);
    vr_qmp_client_close(fx->client);
    vr_capture_cycle_free(c); /* teardown fails on the closed client: nothing is removed */
    g_clear_pointer(&fx->capture, vr_capture_free);
    g_clear_object(&fx->client);

    /* The next agent: the leftovers block a cycle until reconciliation removes them. */
    fx->client = vr_test_connect_unix(fx->qmp);
    new_capture(fx);
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, disks->len, 0, 1, &error);
    g_assert_null(c);
    g_assert_nonnull(error);
    g_clear_error(&error);
    ok = vr_capture_reconcile(fx->capture, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    {
        g_autoptr(GError) query = NULL;
        g_autoptr(GPtrArray) exports = vr_qmp_query_block_exports(fx->client, &query);
        g_autoptr(GPtrArray) jobs = vr_qmp_query_jobs(fx->client, &query);

        g_assert_no_error(query);
        g_assert_cmpuint(exports->len, ==, 0);
        g_assert_cmpuint(jobs->len, ==, 0);
    }
    /* B(1) of the dead agent's cut stays (the caller decides): a full cycle 2 works. */
    guest_op(fx, 0, OP_WRITE, 0, 65536, 0x5a);
    s2 = run_cycle(fx, 0, 2, NULL, NULL);
    assert_clean(fx);
}

static void
restart_qemu(Fixture *fx, bool kill)
{
    g_autoptr(GError) error = NULL;

    g_clear_pointer(&fx->capture, vr_capture_free);
    if (kill) {
        vr_test_process_signal(fx->qemu, SIGKILL);
        vr_qmp_client_close(fx->client);
    } else {
        g_autoptr(json_object) ret = vr_qmp_client_execute(fx->client, "quit", NULL, &error);

        g_assert_no_error(error);
        while (vr_qmp_client_is_connected(fx->client))
            g_main_context_iteration(NULL, TRUE);
    }
    g_clear_object(&fx->client);
    g_clear_pointer(&fx->qemu, vr_test_process_free);
    start_qemu(fx);
    new_capture(fx);
}

static void
test_qemu_killed(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(GPtrArray) s1 = NULL;
    VrCaptureDisk *d = &g_array_index(disks, VrCaptureDisk, 0);
    bool ok;

    if (fx->capture == NULL)
        return;
    /* A bitmap created in a run that is killed never reaches the image: missing. */
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    restart_qemu(fx, true);
    g_assert_false(vr_capture_check(fx->capture, d, 1, 1, &error));
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED);
    g_assert_nonnull(strstr(error->message, "missing"));
    g_clear_error(&error);

    /* Stored by a clean quit, loaded by the next run, then that run is killed: inconsistent. */
    g_clear_pointer(&s1, g_ptr_array_unref);
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    restart_qemu(fx, false);
    ok = vr_capture_check(fx->capture, d, 1, 1, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    guest_op(fx, 0, OP_WRITE, 0, 65536, 0x77);
    restart_qemu(fx, true);
    g_assert_false(vr_capture_check(fx->capture, d, 1, 1, &error));
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED);
    g_assert_nonnull(strstr(error->message, "inconsistent"));
}

static void
test_libvirt_cycles(Fixture *fx, gconstpointer data)
{
    if (fx->capture != NULL)
        point_in_time_sequence(fx);
}

/* libvirt's pull backup owns QEMU's one NBD server: the cycle waits its turn. */
static void
test_libvirt_backup_defers(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(GPtrArray) s1 = NULL;
    g_autofree char *bdir = g_build_filename(fx->dir, "backup", NULL);
    g_autofree char *sock = g_build_filename(bdir, "backup.sock", NULL);
    g_autofree char *scratch = g_build_filename(bdir, "backup.scratch", NULL);
    g_autofree char *xml = NULL;
    VrCaptureCycle *c;

    if (fx->capture == NULL)
        return;
    /* libvirt's QEMU (libvirt-qemu) binds the backup socket by path: a directory it may
     * write. (Our own cycles pass descriptors instead.) */
    g_assert_no_errno(g_mkdir(bdir, 0755));
    g_assert_no_errno(chmod(bdir, 01777));
    xml = g_strdup_printf("<domainbackup mode='pull'><server transport='unix' socket='%s'/>"
                          "<disks><disk name='vda' backup='yes' type='file'>"
                          "<scratch file='%s'/></disk></disks></domainbackup>",
                          sock, scratch);
    g_assert_cmpint(virDomainBackupBegin(fx->domain, xml, NULL, 0), ==, 0);
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, disks->len, 0, 1, &error);
    g_assert_null(c);
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_DEFERRED);
    g_test_message("deferred: %s", error->message);
    g_assert_nonnull(strstr(error->message, "'libvirt-nbd-"));
    g_clear_error(&error);
    /* The backup went on untouched, and ends; then the cycle runs. */
    g_assert_cmpint(virDomainAbortJob(fx->domain), ==, 0);
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    assert_clean(fx);
}

/* A freezer that records its calls; at thaw, it checks the cut happened while frozen. */
typedef struct {
    Fixture *fx;
    bool succeed;
    bool maybe_frozen; /* when the freeze fails: may the guest freeze anyway? */
    bool thaw_succeeds;
    guint freezes;
    guint thaws;
    bool cut_seen_at_thaw;
    uint64_t cycle;
} FakeFreezer;

static bool
fake_freeze(gpointer data, guint timeout_ms, bool *maybe_frozen, GError **error)
{
    FakeFreezer *f = data;

    f->freezes++;
    *maybe_frozen = f->maybe_frozen;
    if (!f->succeed) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                    "guest agent did not answer within %u ms", timeout_ms);
        return false;
    }
    return true;
}

static bool
fake_thaw(gpointer data, GError **error)
{
    FakeFreezer *f = data;
    g_autofree char *name = vr_capture_bitmap_name(f->fx->capture, f->cycle);
    g_autoptr(GError) local = NULL;
    g_autoptr(VrQmpBitmapInfo) info =
        vr_qmp_query_bitmap(f->fx->client, f->fx->disks[0].node, name, &local);

    f->thaws++;
    f->cut_seen_at_thaw = info != NULL;
    if (!f->thaw_succeeds) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "guest agent is busy");
        return false;
    }
    return true;
}

static const VrCaptureFreezer fake_freezer = { fake_freeze, fake_thaw };

static uint32_t
spool_flags(const char *spool)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrSpoolReader) reader = vr_spool_reader_open(spool, &error);

    g_assert_no_error(error);
    return vr_spool_reader_get_header(reader)->flags;
}

static void
test_freeze(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(GPtrArray) s1 = NULL;
    g_autoptr(GPtrArray) s2 = NULL;
    FakeFreezer f = { fx, true, false, true, 0, 0, false, 1 };
    VrCaptureCycle *c;

    if (fx->capture == NULL)
        return;
    vr_capture_set_freezer(fx->capture, &fake_freezer, &f, 2000);
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    g_assert_cmpuint(f.freezes, ==, 1);
    g_assert_cmpuint(f.thaws, ==, 1);
    g_assert_true(f.cut_seen_at_thaw);
    g_assert_cmpuint(spool_flags(s1->pdata[0]), ==,
                     VR_SPOOL_FLAG_FULL | VR_SPOOL_FLAG_APP_CONSISTENT);
    ack(fx, 1);

    /* A freeze that times out may still take effect: thawed all the same, crash-consistent. */
    f.succeed = false;
    f.maybe_frozen = true;
    f.cycle = 2;
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, 1, 1, 2, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(f.thaws, ==, 2);
    g_assert_true(f.cut_seen_at_thaw);
    g_assert_false(vr_capture_cycle_is_app_consistent(c));
    g_assert_error(vr_capture_cycle_get_freeze_error(c), G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
    vr_capture_cycle_free(c);

    /* ... and when no thaw can be confirmed, the cycle says the guest may be frozen. */
    f.thaw_succeeds = false;
    f.cycle = 3;
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, 1, 1, 3, &error);
    g_assert_null(c);
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_GUEST_FROZEN);
    g_assert_nonnull(strstr(error->message, "guest agent is busy"));
    g_clear_error(&error);
    g_assert_cmpuint(f.thaws, ==, 3);
    assert_clean(fx);

    /* No agent at all: certainly not frozen, so nothing to thaw. */
    f.maybe_frozen = false;
    f.cycle = 4;
    s2 = run_cycle(fx, 1, 4, NULL, NULL);
    g_assert_cmpuint(f.freezes, ==, 4);
    g_assert_cmpuint(f.thaws, ==, 3);
    g_assert_cmpuint(spool_flags(s2->pdata[0]), ==, 0);
    assert_clean(fx);
}

/* Through libvirt, for real: the domain has an agent channel, but no guest runs an agent. */
static void
test_libvirt_freeze_without_agent(Fixture *fx, gconstpointer data)
{
    g_autoptr(GPtrArray) s1 = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    VrCaptureCycle *c;
    gint64 start;

    if (fx->capture == NULL)
        return;
    vr_capture_set_freezer(fx->capture, &vr_guest_agent_freezer, fx->domain, 2000);
    start = g_get_monotonic_time();
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, 1, 0, 1, &error);
    g_assert_no_error(error);
    g_assert_cmpint(g_get_monotonic_time() - start, <, 15 * G_USEC_PER_SEC);
    g_assert_false(vr_capture_cycle_is_app_consistent(c));
    g_assert_nonnull(vr_capture_cycle_get_freeze_error(c));
    g_test_message("freeze: %s", vr_capture_cycle_get_freeze_error(c)->message);
    g_assert_nonnull(strstr(vr_capture_cycle_get_freeze_error(c)->message, "no guest agent"));
    vr_capture_cycle_free(c);
    /* The domain is not frozen: the next cycle goes on as usual. */
    s1 = run_cycle(fx, 0, 2, NULL, NULL);
    g_assert_cmpuint(spool_flags(s1->pdata[0]), ==, VR_SPOOL_FLAG_FULL);
    assert_clean(fx);
}

/* The replica's side of a resync: the hash list of its image (here the raw replica file). */
static void
write_hashlist(const char *image, const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrHashlistWriter) writer = vr_hashlist_writer_new(path, DISK_SIZE, &error);
    g_autofree uint8_t *buf = g_malloc(VR_HASHLIST_BLOCK_SIZE);
    int fd = open(image, O_RDONLY | O_CLOEXEC);
    bool ok;

    g_assert_no_error(error);
    g_assert_no_errno(fd);
    for (uint64_t off = 0; off < DISK_SIZE; off += VR_HASHLIST_BLOCK_SIZE) {
        uint8_t digest[VR_HASHLIST_DIGEST_SIZE];

        g_assert_cmpint(pread(fd, buf, VR_HASHLIST_BLOCK_SIZE, off), ==, VR_HASHLIST_BLOCK_SIZE);
        vr_hashlist_digest(buf, VR_HASHLIST_BLOCK_SIZE, digest);
        ok = vr_hashlist_writer_add(writer, digest, &error);
        g_assert_no_error(error);
        g_assert_true(ok);
    }
    close(fd);
    ok = vr_hashlist_writer_finish(writer, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
}

static void
test_resync_after_kill(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GArray) disks = capture_disks(fx);
    g_autoptr(GPtrArray) s1 = NULL;
    g_autoptr(VrCaptureCycle) c = NULL;
    g_autofree char *hashes = g_build_filename(fx->dir, "replica.hashes", NULL);
    g_autofree char *spool = g_build_filename(fx->dir, "resync.spool", NULL);
    g_autofree char *uri = NULL;
    VrSpoolTotals totals = { 0 };
    bool ok;

    if (fx->capture == NULL)
        return;
    guest_op(fx, 0, OP_WRITE, 0, 1024 * 1024, 0x21);
    guest_op(fx, 0, OP_WRITE, 20 * 1024 * 1024, 512 * 1024, 0x22);
    s1 = run_cycle(fx, 0, 1, NULL, NULL);
    ack(fx, 1);

    /* The guest changes 4 blocks (one of them to zeroes) and syncs; then QEMU is killed. */
    guest_op(fx, 0, OP_WRITE, 65536, 65536, 0x23);
    guest_op(fx, 0, OP_WRITE, 10 * 1024 * 1024 + 4096, 4096, 0x24);
    guest_op(fx, 0, OP_ZERO, 20 * 1024 * 1024, 65536, 0);
    guest_op(fx, 0, OP_WRITE, DISK_SIZE - 65536, 65536, 0x25);
    vr_test_hmp_qemu_io(fx->client, fx->disks[0].qdev, "flush");
    restart_qemu(fx, true);
    g_assert_false(vr_capture_check(fx->capture, (VrCaptureDisk *)disks->data, 1, 1, &error));
    g_assert_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_RESYNC_REQUIRED);
    g_clear_error(&error);

    /* Resync: the replica's hashes against a fresh cut; only the 4 blocks travel. */
    write_hashlist(fx->disks[0].replica, hashes);
    c = vr_capture_cycle_begin(fx->capture, (VrCaptureDisk *)disks->data, 1, 0, 2, &error);
    g_assert_no_error(error);
    ok = vr_capture_cycle_spool_resync(c, 0, hashes, spool, &totals, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    g_assert_cmpuint(totals.records, ==, 4);
    g_assert_cmpuint(totals.data_bytes, ==, 3 * 65536);
    g_assert_cmpuint(totals.zero_bytes, ==, 65536);
    {
        g_autoptr(VrSpoolReader) reader = vr_spool_reader_open(spool, &error);

        g_assert_no_error(error);
        g_assert_cmpuint(vr_spool_reader_get_header(reader)->flags, ==, VR_SPOOL_FLAG_RESYNC);
        g_assert_cmpuint(vr_spool_reader_get_header(reader)->base_cycle, ==, 0);
    }
    apply_spool(fx, 0, spool, 0, 2);
    uri = g_strdup_printf("nbd+unix:///vda?socket=%s", vr_capture_cycle_get_nbd_socket(c));
    {
        const char *argv[] = { "qemu-img",           "compare", "-f", "raw", "-F", "raw",
                               fx->disks[0].replica, uri,       NULL };
        g_autofree char *out = vr_test_run(argv);
    }
    model_cut(fx);
    assert_replica_is(fx, 0, fx->disks[0].at_cut);
    vr_capture_cycle_end(c);
    /* Tracking goes on from the resync cycle's bitmap. */
    ok = vr_capture_check(fx->capture, (VrCaptureDisk *)disks->data, 1, 2, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func, disks) \
    g_test_add(path, Fixture, GUINT_TO_POINTER(disks), fixture_setup, func, fixture_teardown)
    ADD("/capture/qemu/point-in-time", test_point_in_time, 1);
    ADD("/capture/qemu/random-cycles", test_random_cycles, 1);
    ADD("/capture/qemu/failed-cycle", test_failed_cycle, 1);
    ADD("/capture/qemu/two-disks", test_two_disks, 2);
    ADD("/capture/qemu/resync-after-kill", test_resync_after_kill, 1);
    ADD("/capture/qemu/freeze", test_freeze, 1);
    ADD("/capture/qemu/fleece-budget", test_fleece_budget, 1);
    ADD("/capture/qemu/health", test_health, 1);
    ADD("/capture/qemu/not-qcow2", test_not_qcow2, 1);
    ADD("/capture/qemu/reconcile", test_reconcile, 1);
    ADD("/capture/qemu/qemu-killed", test_qemu_killed, 1);
#undef ADD
#define ADD_LIBVIRT(path, func) \
    g_test_add(path, Fixture, NULL, fixture_setup_libvirt, func, fixture_teardown_libvirt)
    ADD_LIBVIRT("/capture/libvirt/cycles", test_libvirt_cycles);
    ADD_LIBVIRT("/capture/libvirt/backup-defers", test_libvirt_backup_defers);
    g_test_add("/capture/libvirt/freeze-without-agent", Fixture, "agent", fixture_setup_libvirt,
               test_libvirt_freeze_without_agent, fixture_teardown_libvirt);
#undef ADD_LIBVIRT

    return g_test_run();
}
