/*
 * test-replica-sink.c: the replica sink behind a real receiver, with real qemu-img and
 * qemu-nbd
 *
 * Each test runs a VrReceiver on 127.0.0.1 (the test PKI of make-pki.sh) with the replica
 * sink over a storage root of its own, and uploads streams with a VrSender in a thread
 * while the receiver runs on the main context. Every cycle is written with the wire encoder
 * into a stream file, and the same bytes into a raw model of the disk at that cycle (the
 * naive model): a published point must equal its model (qemu-img compare), and each entry of
 * a hash list the replica serves the SHA-256 of its block of the model.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "vr-hashlist.h"
#include "vr-qmp-json.h"
#include "vr-receiver.h"
#include "vr-replica-sink.h"
#include "vr-replica-store.h"
#include "vr-sender.h"
#include "vr-state.h"
#include "vr-test-replica.h"
#include "vr-test-transport.h"
#include "vr-test-util.h"
#include "vr-wire.h"

#define MiB       (1024 * 1024)
#define DISK_SIZE (64 * MiB)

static char *pki;          /* where make-pki.sh wrote the PKI, or NULL */
static char *pki_skip_why; /* why every test skips */

typedef struct {
    VrWireRecordType type; /* DATA or ZERO */
    uint64_t offset;
    uint64_t length;
} Op;

typedef struct {
    const char *relationship;
    uint64_t epoch;
    uint64_t base; /* 0: FULL */
    uint64_t target;
    const Op *ops;
    guint n_ops;
} Cycle;

#define CYCLE_OPS(ops) (ops), G_N_ELEMENTS(ops)

static const Op full_ops[] = {
    { VR_WIRE_RECORD_DATA, 0, MiB },
    { VR_WIRE_RECORD_DATA, MiB + 4096, 70001 }, /* odd length */
    { VR_WIRE_RECORD_ZERO, 2 * MiB, 6 * MiB },
    { VR_WIRE_RECORD_DATA, 8 * MiB + 17, 4 * MiB }, /* odd offset */
    { VR_WIRE_RECORD_DATA, 60 * MiB, 4 * MiB },     /* up to the end */
};
static const Op second_ops[] = {
    { VR_WIRE_RECORD_ZERO, 0, 512 * 1024 }, /* zeroes over the base's data */
    { VR_WIRE_RECORD_DATA, 600 * 1024, 100 * 1024 },
    { VR_WIRE_RECORD_DATA, 8 * MiB, 65536 },
    { VR_WIRE_RECORD_DATA, 63 * MiB, MiB },
};
static const Op third_ops[] = {
    { VR_WIRE_RECORD_DATA, 4096, 512 },
    { VR_WIRE_RECORD_ZERO, 8 * MiB, 16 * MiB }, /* across data of both earlier points */
    { VR_WIRE_RECORD_DATA, 30 * MiB, 4 * MiB },
};
/*
 * 8 MiB of random data in 1 MiB records: 4 s at 2 MiB/s, slower than the receiver even
 * under valgrind (a receiver that lags reads the whole rest of the body in one dispatch).
 */
static const Op slow_ops[] = {
    { VR_WIRE_RECORD_DATA, 16 * MiB, MiB }, { VR_WIRE_RECORD_DATA, 18 * MiB, MiB },
    { VR_WIRE_RECORD_DATA, 20 * MiB, MiB }, { VR_WIRE_RECORD_DATA, 22 * MiB, MiB },
    { VR_WIRE_RECORD_DATA, 24 * MiB, MiB }, { VR_WIRE_RECORD_DATA, 26 * MiB, MiB },
    { VR_WIRE_RECORD_DATA, 28 * MiB, MiB }, { VR_WIRE_RECORD_DATA, 30 * MiB, MiB },
};

static const Cycle cycle1 = { "r1", 1, 0, 1, CYCLE_OPS(full_ops) };
static const Cycle cycle2 = { "r1", 1, 1, 2, CYCLE_OPS(second_ops) };
static const Cycle cycle3 = { "r1", 1, 2, 3, CYCLE_OPS(third_ops) };

typedef struct {
    /*
     * work: streams and models; port kept across restarts, so a sender's retry finds the
     * new receiver; state given to the sink when set before fixture_start()
     */
    VrTestReplica r;
    GRand *rand;
} Fixture;

/* Every point counts (point interval 0): /replica-sink/hourly tests the hourly default. */
static void
fixture_start(Fixture *fx)
{
    vr_test_replica_start(&fx->r, pki, NULL, 1024 * MiB);
}

/* As a replica restart: the receiver aborts what it holds, then the sink closes its stores. */
static void
fixture_stop(Fixture *fx)
{
    vr_test_replica_stop(&fx->r);
}

/* Restart the receiver and sink, the sink now recording into a state database. */
static void
fixture_with_state(Fixture *fx)
{
    fixture_stop(fx);
    vr_test_replica_open_state(&fx->r);
    fx->r.port = 0; /* no upload spans the restart: any free port */
    fixture_start(fx);
}

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    guint32 seed = g_test_rand_int();

    if (vr_test_replica_skip(pki, pki_skip_why))
        return;
    vr_test_dirs(serial++, 0700, &fx->r.root, &fx->r.work);
    g_test_message("seed %u", seed);
    fx->rand = g_rand_new_with_seed(seed);

    vr_test_replica_init(&fx->r, pki); /* crl.pem: primary3 (client-later-revoked) is valid */
    fixture_start(fx);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    vr_test_replica_clear(&fx->r);
    g_clear_pointer(&fx->rand, g_rand_free);
}

/* ---- streams and models --------------------------------------------------------------- */

static char *
model_path(Fixture *fx, const char *relationship, uint64_t cycle)
{
    g_autofree char *name =
        g_strdup_printf("model-%s-%" G_GUINT64_FORMAT ".raw", relationship, cycle);

    return g_build_filename(fx->r.work, name, NULL);
}

/* Random bytes, or a repeated byte (zstd), so that both encodings are applied. */
static void
fill(Fixture *fx, uint8_t *buf, size_t len, bool random)
{
    uint8_t byte = (uint8_t)g_rand_int_range(fx->rand, 1, 256);

    for (size_t i = 0; i < len; i += 4) {
        guint32 v = random ? g_rand_int(fx->rand) : byte * 0x01010101u;

        memcpy(buf + i, &v, MIN(4, len - i));
    }
}

/*
 * The stream file of @c (DATA of even ops random, of odd ones compressible; all random
 * when @random) and model-<rel>-<target>.raw: the base's model with the same records
 * applied. @offsets (optional) gets the file offset of each op's record. (transfer full)
 */
static char *
stream_prepare(Fixture *fx, const Cycle *c, bool random, uint64_t *offsets)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *name =
        g_strdup_printf("%s-%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT ".vrw",
                        c->relationship, c->epoch, c->base, c->target);
    g_autofree char *model = model_path(fx, c->relationship, c->target);
    g_autofree uint8_t *buf = g_malloc(VR_WIRE_MAX_DATA);
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autoptr(VrWireEncoder) encoder = NULL;
    char *path = g_build_filename(fx->r.work, name, NULL);
    VrWireIdentity id = { 0 };
    uint64_t written = 0;
    FILE *f;
    int fd;

    id.kind = VR_WIRE_KIND_CYCLE;
    g_strlcpy(id.relationship, c->relationship, sizeof(id.relationship));
    memset(id.domain_uuid, 0x7f, sizeof(id.domain_uuid));
    g_strlcpy(id.disk, "vda", sizeof(id.disk));
    id.epoch = c->epoch;
    id.base_cycle = c->base;
    id.target_cycle = c->target;
    id.virtual_size = DISK_SIZE;
    id.granularity = 65536;
    id.flags = c->base == 0 ? VR_WIRE_FLAG_FULL : 0;
    encoder = vr_wire_encoder_new(&id, &error);
    g_assert_no_error(error);

    g_unlink(model);
    if (c->base != 0) {
        g_autofree char *from = model_path(fx, c->relationship, c->base);
        const char *argv[] = { "cp", "--sparse=always", from, model, NULL };

        g_free(vr_test_run(argv));
    }
    fd = open(model, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    g_assert_no_errno(fd);
    g_assert_no_errno(ftruncate(fd, DISK_SIZE));
    f = fopen(path, "wb");
    g_assert_nonnull(f);

    g_assert_true(vr_wire_encoder_begin(encoder, out, &error));
    for (guint i = 0; i <= c->n_ops; i++) {
        const Op *op = i < c->n_ops ? &c->ops[i] : NULL;

        g_assert_cmpuint(fwrite(out->data, 1, out->len, f), ==, out->len);
        written += out->len;
        g_byte_array_set_size(out, 0);
        if (op == NULL)
            break;
        if (offsets != NULL)
            offsets[i] = written;
        if (op->type == VR_WIRE_RECORD_DATA) {
            fill(fx, buf, op->length, random || i % 2 == 0);
            g_assert_true(
                vr_wire_encoder_add_data(encoder, op->offset, buf, op->length, out, &error));
            g_assert_cmpint(pwrite(fd, buf, op->length, op->offset), ==, (ssize_t)op->length);
        } else {
            g_assert_true(vr_wire_encoder_add_zero(encoder, op->offset, op->length, out, &error));
            g_assert_no_errno(
                fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, op->offset, op->length));
        }
        g_assert_no_error(error);
    }
    g_assert_true(vr_wire_encoder_end(encoder, out, &error));
    g_assert_cmpuint(fwrite(out->data, 1, out->len, f), ==, out->len);
    g_assert_cmpint(fclose(f), ==, 0);
    close(fd);
    return path;
}

/* ---- uploads -------------------------------------------------------------------------- */

/* An upload of @path as @client_cert to the fixture's receiver (not started yet). */
static VrTestUpload
upload_new(Fixture *fx, const char *client_cert, const char *path)
{
    return (VrTestUpload){
        .pki = pki,
        .client_cert = client_cert,
        .policy = fx->r.server_policy,
        .port = fx->r.port,
        .path = path,
    };
}

/* Upload @path as @client_cert while the receiver runs here. */
static bool
upload(Fixture *fx, const char *client_cert, const char *path, VrSenderStats *stats, GError **error)
{
    return vr_test_upload(pki, client_cert, fx->r.server_policy, fx->r.port, path, 0, stats, error);
}

/* Prepare and upload @c as primary1; it must be published. */
static void
upload_ok(Fixture *fx, const Cycle *c)
{
    g_autofree char *path = stream_prepare(fx, c, false, NULL);
    g_autoptr(GError) error = NULL;
    VrSenderStats stats;

    g_assert_true(upload(fx, "client-ok", path, &stats, &error));
    g_assert_no_error(error);
    g_assert_false(stats.already_committed);
}

/* ---- what the store holds ------------------------------------------------------------- */

static char *
disk_dir(Fixture *fx, const char *relationship)
{
    return g_build_filename(fx->r.root, relationship, "vda", NULL);
}

/* The published cycles in the manifest of @relationship's disk: "1 2 3", "" for none. */
static char *
manifest_cycles(Fixture *fx, const char *relationship)
{
    g_autofree char *dir = disk_dir(fx, relationship);

    return vr_test_manifest_cycles(dir, NULL);
}

static void
assert_listing(Fixture *fx, const char *relationship, const char *expected)
{
    g_autofree char *dir = disk_dir(fx, relationship);
    g_autofree char *names = vr_test_list_dir(dir);

    g_assert_cmpstr(names, ==, expected);
}

static void
assert_cycles(Fixture *fx, const char *relationship, const char *expected)
{
    g_autofree char *cycles = manifest_cycles(fx, relationship);

    g_assert_cmpstr(cycles, ==, expected);
}

/* The published point @cycle equals its model, byte for byte. */
static void
assert_point(Fixture *fx, const char *relationship, uint64_t cycle)
{
    g_autofree char *dir = disk_dir(fx, relationship);
    g_autofree char *name = g_strdup_printf("rp-%" G_GUINT64_FORMAT ".qcow2", cycle);
    g_autofree char *image = g_build_filename(dir, name, NULL);
    g_autofree char *model = model_path(fx, relationship, cycle);
    const char *argv[] = { "qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, model, NULL };

    g_free(vr_test_run(argv));
}

static char *
read_text(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    char *text = NULL;

    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    return text;
}

/* ---- hash lists ----------------------------------------------------------------------- */

/* Fetch the hash list of @disk of @relationship as @client_cert into @path. */
static bool
fetch(Fixture *fx, const char *client_cert, const char *relationship, const char *disk,
      const char *path, uint64_t *cycle, uint64_t *epoch, GError **error)
{
    return vr_test_fetch_hashes(pki, client_cert, fx->r.server_policy, fx->r.port, relationship,
                                disk, path, cycle, epoch, error);
}

/* The hash list @path: each entry is the SHA-256 of its 64 KiB block of the model of @cycle. */
static void
assert_hashes(Fixture *fx, const char *path, const char *relationship, uint64_t cycle)
{
    g_autofree char *model = model_path(fx, relationship, cycle);
    g_autofree uint8_t *block = g_malloc(VR_HASHLIST_BLOCK_SIZE);
    g_autoptr(VrHashlistReader) reader = NULL;
    g_autoptr(GError) error = NULL;
    int fd;

    reader = vr_hashlist_reader_open(path, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vr_hashlist_reader_get_virtual_size(reader), ==, DISK_SIZE);
    g_assert_cmpuint(vr_hashlist_reader_get_count(reader), ==, DISK_SIZE / VR_HASHLIST_BLOCK_SIZE);
    fd = open(model, O_RDONLY | O_CLOEXEC);
    g_assert_no_errno(fd);
    for (uint64_t i = 0; i < DISK_SIZE / VR_HASHLIST_BLOCK_SIZE; i++) {
        uint8_t want[VR_HASHLIST_DIGEST_SIZE];
        uint8_t got[VR_HASHLIST_DIGEST_SIZE];

        g_assert_cmpint(pread(fd, block, VR_HASHLIST_BLOCK_SIZE, (off_t)i * VR_HASHLIST_BLOCK_SIZE),
                        ==, VR_HASHLIST_BLOCK_SIZE);
        vr_hashlist_digest(block, VR_HASHLIST_BLOCK_SIZE, want);
        g_assert_true(vr_hashlist_reader_get(reader, i, got, &error));
        g_assert_no_error(error);
        g_assert_cmpmem(got, sizeof(got), want, sizeof(want));
    }
    close(fd);
}

static char *
read_file(const char *path)
{
    char *text = NULL;
    gsize len = 0;

    g_assert_true(g_file_get_contents(path, &text, &len, NULL));
    return text;
}

/* Two files with the same bytes. */
static void
assert_same_file(const char *a, const char *b)
{
    g_autofree char *ta = NULL;
    g_autofree char *tb = NULL;
    gsize la = 0;
    gsize lb = 0;

    g_assert_true(g_file_get_contents(a, &ta, &la, NULL));
    g_assert_true(g_file_get_contents(b, &tb, &lb, NULL));
    g_assert_cmpmem(ta, la, tb, lb);
}

/* ---- tests ---------------------------------------------------------------------------- */

/* A FULL cycle, then two incremental ones: each point equals its model. */
static void
test_chain(Fixture *fx, gconstpointer data)
{
    g_autofree char *rel = NULL;
    g_autofree char *dir = NULL;
    g_autofree char *owner = NULL;
    struct stat st;

    if (fx->r.receiver == NULL)
        return;
    upload_ok(fx, &cycle1);
    assert_cycles(fx, "r1", "1");
    assert_point(fx, "r1", 1);
    upload_ok(fx, &cycle2);
    assert_cycles(fx, "r1", "1 2");
    assert_point(fx, "r1", 2);
    upload_ok(fx, &cycle3);
    assert_cycles(fx, "r1", "1 2 3");
    assert_point(fx, "r1", 3);
    assert_point(fx, "r1", 2);
    assert_point(fx, "r1", 1);
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2 rp-2.qcow2 rp-3.qcow2");

    /* The layout: the relationship owned by the writer's group, directories private. */
    rel = g_build_filename(fx->r.root, "r1", NULL);
    owner = read_text(rel, "owner");
    g_assert_cmpstr(owner, ==, "a\n");
    {
        g_autofree char *names = vr_test_list_dir(rel);

        g_assert_cmpstr(names, ==, "owner vda");
    }
    dir = disk_dir(fx, "r1");
    g_assert_no_errno(g_stat(rel, &st));
    g_assert_cmpint(st.st_mode & 07777, ==, 0700);
    g_assert_no_errno(g_stat(dir, &st));
    g_assert_cmpint(st.st_mode & 07777, ==, 0700);
}

/*
 * The same cycle again: 204 and nothing applied, from the receiver's memory of the commit,
 * then after a restart from the sink (the store has it published). Another stream of a
 * published cycle (other epoch, other base) is a conflict.
 */
static void
test_replay(Fixture *fx, gconstpointer data)
{
    const Cycle other_epoch = { "r1", 2, 1, 2, CYCLE_OPS(second_ops) };
    const Cycle other_base = { "r1", 1, 0, 2, CYCLE_OPS(second_ops) };
    g_autofree char *path = NULL;
    g_autofree char *dir = NULL;
    g_autofree char *manifest = NULL;
    VrSenderStats stats;

    if (fx->r.receiver == NULL)
        return;
    upload_ok(fx, &cycle1);
    path = stream_prepare(fx, &cycle2, false, NULL);
    g_assert_true(upload(fx, "client-ok", path, &stats, NULL));
    dir = disk_dir(fx, "r1");
    manifest = read_text(dir, "manifest.json");

    for (guint round = 0; round < 2; round++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *again = NULL;

        if (round == 1) {
            fixture_stop(fx);
            fx->r.port = 0; /* no upload spans the restart: any free port */
            fixture_start(fx);
        }
        g_assert_true(upload(fx, "client-ok", path, &stats, &error));
        g_assert_no_error(error);
        g_assert_true(stats.already_committed);
        g_assert_cmpuint(stats.body_bytes, ==, 0); /* answered before the body */
        again = read_text(dir, "manifest.json");
        g_assert_cmpstr(again, ==, manifest);
        assert_listing(fx, "r1", "manifest.json rp-1.qcow2 rp-2.qcow2");
    }
    assert_point(fx, "r1", 2);
    /* (these overwrite the model of cycle 2: compared above) */
    for (guint i = 0; i < 2; i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *other =
            stream_prepare(fx, i == 0 ? &other_epoch : &other_base, false, NULL);

        g_assert_false(upload(fx, "client-ok", other, &stats, &error));
        g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT);
        g_assert_nonnull(strstr(error->message, "cycle 2 is already published"));
    }
    {
        g_autofree char *again = read_text(dir, "manifest.json");

        g_assert_cmpstr(again, ==, manifest);
    }
}

/* A base the replica does not hold: 409 before the body, nothing published, nothing left. */
static void
test_wrong_base(Fixture *fx, gconstpointer data)
{
    const Cycle wrong = { "r1", 1, 1, 3, CYCLE_OPS(third_ops) };
    g_autofree char *path = NULL;
    g_autoptr(GError) error = NULL;
    VrSenderStats stats;

    if (fx->r.receiver == NULL)
        return;
    upload_ok(fx, &cycle1);
    upload_ok(fx, &cycle2);
    path = stream_prepare(fx, &wrong, false, NULL);
    g_assert_false(upload(fx, "client-ok", path, &stats, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "needs base cycle 1, but the latest point is cycle 2"));
    g_assert_cmpuint(stats.requests, ==, 1);
    g_assert_cmpuint(stats.body_bytes, ==, 0);
    assert_cycles(fx, "r1", "1 2");
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2 rp-2.qcow2");
}

/*
 * Two trust groups on one storage root: primary1 (group a) and primary3 (group b) each
 * write only to their own relationships (403 naming the relationship and both groups).
 */
static void
test_trust_groups(Fixture *fx, gconstpointer data)
{
    const Cycle b1 = { "r3", 1, 0, 1, CYCLE_OPS(full_ops) };
    const Cycle b2 = { "r3", 1, 1, 2, CYCLE_OPS(second_ops) };
    g_autofree char *path2 = NULL;
    g_autofree char *pathb1 = NULL;
    g_autofree char *pathb2 = NULL;
    g_autofree char *rel = NULL;
    g_autofree char *owner = NULL;
    g_autoptr(GError) error = NULL;
    VrSenderStats stats;

    if (fx->r.receiver == NULL)
        return;
    fixture_stop(fx);
    vr_authz_free(fx->r.authz);
    fx->r.authz = vr_authz_new_table();
    g_assert_true(vr_authz_add(fx->r.authz, "primary1", fx->r.root, "a", &error));
    g_assert_true(vr_authz_add(fx->r.authz, "primary3", fx->r.root, "b", &error));
    g_assert_no_error(error);
    fixture_start(fx);

    upload_ok(fx, &cycle1); /* primary1 creates r1: group a */
    path2 = stream_prepare(fx, &cycle2, false, NULL);
    g_assert_false(upload(fx, "client-later-revoked", path2, &stats, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, "403"));
    g_assert_nonnull(strstr(error->message, "relationship 'r1' belongs to trust group 'a'"));
    g_assert_nonnull(strstr(error->message, "primary 'primary3' (trust group 'b')"));
    g_assert_cmpuint(stats.body_bytes, ==, 0);
    g_clear_error(&error);
    assert_cycles(fx, "r1", "1");
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2");

    /* primary3 creates r3 (group b) and writes it; primary1 may not */
    pathb1 = stream_prepare(fx, &b1, false, NULL);
    g_assert_true(upload(fx, "client-later-revoked", pathb1, &stats, &error));
    g_assert_no_error(error);
    rel = g_build_filename(fx->r.root, "r3", NULL);
    owner = read_text(rel, "owner");
    g_assert_cmpstr(owner, ==, "b\n");
    pathb2 = stream_prepare(fx, &b2, false, NULL);
    g_assert_false(upload(fx, "client-ok", pathb2, &stats, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, "relationship 'r3' belongs to trust group 'b'"));
    g_assert_nonnull(strstr(error->message, "primary 'primary1' (trust group 'a')"));
    g_clear_error(&error);
    assert_cycles(fx, "r3", "1");
    assert_point(fx, "r3", 1);

    /* each still writes its own */
    upload_ok(fx, &cycle2);
    g_assert_true(upload(fx, "client-later-revoked", pathb2, &stats, &error));
    g_assert_no_error(error);
    assert_cycles(fx, "r1", "1 2");
    assert_cycles(fx, "r3", "1 2");
    assert_point(fx, "r3", 2);
}

/*
 * The state database follows the sink: the relationship (role replica, its primary, its
 * epoch), one history row per cycle (two published, one that failed mid-stream), the
 * statistics from them, and the disk's points mirrored from the manifest with their
 * digests and chains.
 */
static void
test_state(Fixture *fx, gconstpointer data)
{
    uint64_t offsets[G_N_ELEMENTS(second_ops)];
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(GArray) mirrored = NULL;
    g_autofree char *path = NULL;
    g_autofree char *dir = NULL;
    g_autoptr(VrReplicaStore) store = NULL;
    g_autoptr(GError) error = NULL;
    const VrReplicaPoint *points;
    VrStateStats stats;
    uint64_t full_bytes = 0;
    uint64_t second_bytes = 0;
    uint8_t byte;
    guint n;
    int fd;

    if (fx->r.receiver == NULL)
        return;
    fixture_with_state(fx);
    for (guint i = 0; i < G_N_ELEMENTS(full_ops); i++)
        full_bytes += full_ops[i].length;
    for (guint i = 0; i < G_N_ELEMENTS(second_ops); i++)
        second_bytes += second_ops[i].length;
    upload_ok(fx, &cycle1);
    /* Cycle 2 with a flipped byte in its third record: it fails after its BEGIN. */
    path = stream_prepare(fx, &cycle2, false, offsets);
    fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_no_errno(fd);
    g_assert_cmpint(pread(fd, &byte, 1, offsets[2] + VR_WIRE_HEADER_SIZE + 100), ==, 1);
    byte ^= 0x10;
    g_assert_cmpint(pwrite(fd, &byte, 1, offsets[2] + VR_WIRE_HEADER_SIZE + 100), ==, 1);
    close(fd);
    g_assert_false(upload(fx, "client-ok", path, NULL, &error));
    g_clear_error(&error);
    upload_ok(fx, &cycle2);
    g_assert_null(vr_replica_sink_get_state_error(fx->r.sink));

    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpint(rel->role, ==, VR_STATE_ROLE_REPLICA);
    g_assert_cmpstr(rel->peer, ==, "primary1"); /* client-ok's certificate */
    g_assert_cmpuint(rel->epoch, ==, 1);
    g_assert_true(g_uuid_string_is_valid(rel->domain_uuid));

    g_assert_true(vr_state_stats(fx->r.state, "r1", 0, &stats, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(stats.cycles_ok, ==, 2);
    g_assert_cmpuint(stats.cycles_failed, ==, 1);
    g_assert_cmpuint(stats.cycles_missed, ==, 0);
    g_assert_cmpuint(stats.max_bytes, ==, MAX(full_bytes, second_bytes));
    g_assert_cmpuint(stats.avg_bytes, ==, (full_bytes + second_bytes) / 2);
    g_assert_cmpuint(stats.last_ok_cycle, ==, 2);

    /* The mirror equals the manifest, field for field (the store opened after the sink). */
    fixture_stop(fx);
    dir = disk_dir(fx, "r1");
    store = vr_replica_store_open(dir, &error);
    g_assert_no_error(error);
    points = vr_replica_store_points(store, &n);
    g_assert_cmpuint(n, ==, 2);
    mirrored = vr_state_points_list(fx->r.state, "r1", "vda", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(mirrored->len, ==, n);
    g_assert_cmpmem(mirrored->data, n * sizeof(VrReplicaPoint), points, n * sizeof(VrReplicaPoint));
}

/*
 * The sink's default spacing, one point per hour: three cycles in the same hour leave the
 * latest only (the rule with the real publication times otherwise), each equal to its
 * model.
 */
static void
test_hourly(Fixture *fx, gconstpointer data)
{
    g_autofree char *cycles = NULL;

    if (fx->r.receiver == NULL)
        return;
    vr_replica_sink_set_point_interval(fx->r.sink, 3600);
    upload_ok(fx, &cycle1);
    upload_ok(fx, &cycle2);
    upload_ok(fx, &cycle3);
    cycles = manifest_cycles(fx, "r1");
    g_test_message("points kept: %s", cycles);
    /* An hour may begin between two uploads: then the last point of the earlier hour stays
     * too. */
    g_assert_true(strcmp(cycles, "3") == 0 || strcmp(cycles, "1 3") == 0 ||
                  strcmp(cycles, "2 3") == 0);
    assert_point(fx, "r1", 3);
    g_assert_null(vr_replica_sink_get_retention_error(fx->r.sink));
}

/* One flipped byte in a DATA payload: 400, nothing published, the image removed. */
static void
test_corrupt(Fixture *fx, gconstpointer data)
{
    uint64_t offsets[G_N_ELEMENTS(second_ops)];
    g_autofree char *path = NULL;
    g_autoptr(GError) error = NULL;
    uint8_t byte;
    int fd;

    if (fx->r.receiver == NULL)
        return;
    upload_ok(fx, &cycle1);
    path = stream_prepare(fx, &cycle2, false, offsets);
    /* op 2: random data, sent raw; records 0 and 1 are applied before it */
    fd = open(path, O_RDWR | O_CLOEXEC);
    g_assert_no_errno(fd);
    g_assert_cmpint(pread(fd, &byte, 1, offsets[2] + VR_WIRE_HEADER_SIZE + 100), ==, 1);
    byte ^= 0x10;
    g_assert_cmpint(pwrite(fd, &byte, 1, offsets[2] + VR_WIRE_HEADER_SIZE + 100), ==, 1);
    close(fd);

    g_assert_false(upload(fx, "client-ok", path, NULL, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, "400"));
    g_assert_nonnull(strstr(error->message, "checksum does not match"));
    assert_cycles(fx, "r1", "1");
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2");

    /* the primary sends it again, intact */
    upload_ok(fx, &cycle2);
    assert_cycles(fx, "r1", "1 2");
    assert_point(fx, "r1", 2);
}

/*
 * Symlinks planted beneath the storage root, to a directory outside: as the relationship,
 * as the disk, as the owner file. Each upload is refused (403) naming the link; nothing
 * is written outside.
 */
static void
test_symlink(Fixture *fx, gconstpointer data)
{
    static const struct {
        const char *relationship;
        const char *link; /* beneath the root */
    } cases[] = {
        { "r2", "r2" },
        { "r3", "r3/vda" },
        { "r4", "r4/owner" },
    };
    g_autofree char *outside = g_build_filename(fx->r.work, "outside", NULL);

    if (fx->r.receiver == NULL)
        return;
    g_assert_no_errno(g_mkdir(outside, 0755));
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        const Cycle c = { cases[i].relationship, 1, 0, 1, CYCLE_OPS(third_ops) };
        g_autofree char *link = g_build_filename(fx->r.root, cases[i].link, NULL);
        g_autofree char *parent = g_path_get_dirname(link);
        g_autofree char *target = g_strcmp0(cases[i].link, "r4/owner") == 0
                                      ? g_build_filename(outside, "owner", NULL)
                                      : g_strdup(outside);
        g_autofree char *path = stream_prepare(fx, &c, false, NULL);
        g_autofree char *names = NULL;
        g_autoptr(GError) error = NULL;

        g_assert_no_errno(g_mkdir_with_parents(parent, 0700));
        g_assert_no_errno(symlink(target, link));
        g_assert_false(upload(fx, "client-ok", path, NULL, &error));
        g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
        g_assert_nonnull(strstr(error->message, "403"));
        g_assert_nonnull(strstr(error->message, link));
        g_assert_nonnull(strstr(error->message, "is a symbolic link"));
        names = vr_test_list_dir(outside);
        g_assert_cmpstr(names, ==, "");
    }
}

/*
 * The replica restarts (receiver and sink freed, as a clean stop) in the middle of an
 * upload: the unpublished image goes, the store holds exactly its points, and the sender's
 * retry reaches the new receiver and completes.
 */
static void
test_restart(Fixture *fx, gconstpointer data)
{
    const Cycle slow = { "r1", 1, 1, 2, CYCLE_OPS(slow_ops) };
    g_autoptr(VrRateLimit) limit = vr_rate_limit_new(2 * MiB, 256 * 1024);
    g_autofree char *path = NULL;
    g_autofree char *dir = NULL;
    g_autofree char *image = NULL;
    VrTestUpload send;
    gint64 until;
    GThread *thread;
    guint active = 0;
    guint queued = 0;

    if (fx->r.receiver == NULL)
        return;
    upload_ok(fx, &cycle1);
    path = stream_prepare(fx, &slow, true, NULL);
    dir = disk_dir(fx, "r1");
    image = g_build_filename(dir, "rp-2.qcow2", NULL);
    send = upload_new(fx, "client-ok", path);
    send.limit = limit;
    send.max_attempts = 8;
    thread = g_thread_new("sender", vr_test_upload_run, &send);
    /* until the body is read and the apply has begun, plus a little data */
    until = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (g_get_monotonic_time() < until) {
        g_main_context_iteration(NULL, FALSE);
        vr_receiver_get_load(fx->r.receiver, &active, &queued);
        if (active == 1 && g_file_test(image, G_FILE_TEST_EXISTS))
            break;
        g_usleep(1000);
    }
    g_assert_cmpuint(active, ==, 1);
    g_assert_true(g_file_test(image, G_FILE_TEST_EXISTS));
    until = g_get_monotonic_time() + 300 * 1000;
    while (g_get_monotonic_time() < until)
        g_main_context_iteration(NULL, FALSE);
    g_assert_false(g_atomic_int_get(&send.done));

    fixture_stop(fx);
    {
        g_autoptr(GError) error = NULL;
        g_autoptr(VrReplicaStore) store = vr_replica_store_open(dir, &error);
        const VrReplicaPoint *points;
        guint n;

        g_assert_no_error(error);
        points = vr_replica_store_points(store, &n);
        g_assert_cmpuint(n, ==, 1);
        g_assert_cmpuint(points[0].cycle, ==, 1);
    }
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2");
    assert_point(fx, "r1", 1);
    fixture_start(fx); /* the same port */

    vr_test_upload_wait(&send, thread);
    g_assert_no_error(send.error);
    g_assert_true(send.ok);
    g_assert_cmpuint(send.stats.requests, >=, 2);
    assert_cycles(fx, "r1", "1 2");
    assert_point(fx, "r1", 2);
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2 rp-2.qcow2");
}

/* With one additional recovery point, the oldest are merged away after each cycle. */
static void
test_retention(Fixture *fx, gconstpointer data)
{
    if (fx->r.receiver == NULL)
        return;
    vr_replica_sink_set_recovery_points(fx->r.sink, 1);
    upload_ok(fx, &cycle1);
    upload_ok(fx, &cycle2);
    assert_cycles(fx, "r1", "1 2");
    upload_ok(fx, &cycle3);
    g_assert_null(vr_replica_sink_get_retention_error(fx->r.sink));
    assert_cycles(fx, "r1", "2 3");
    assert_listing(fx, "r1", "manifest.json rp-2.qcow2 rp-3.qcow2");
    /* the merged point still reads as cycle 2, and the latest as cycle 3 */
    assert_point(fx, "r1", 2);
    assert_point(fx, "r1", 3);
}

/*
 * The replica's storage is full: the storage root on a 24 MiB tmpfs of a private mount
 * namespace (root only). A 40 MiB delta is refused with 507 (NO_SPACE); the published point
 * is intact and no image is left; once the tmpfs grows, the same stream is published.
 * Only the main thread (the receiver, the sink and its qemu-nbd) enters the namespace: a
 * forked child could not run the receiver's TLS (GLib's thread pools do not survive fork).
 */
static void
test_disk_full(Fixture *fx, gconstpointer data)
{
    static const Op big_ops[] = {
        { VR_WIRE_RECORD_DATA, 12 * MiB, 4 * MiB }, { VR_WIRE_RECORD_DATA, 16 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 20 * MiB, 4 * MiB }, { VR_WIRE_RECORD_DATA, 24 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 28 * MiB, 4 * MiB }, { VR_WIRE_RECORD_DATA, 32 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 36 * MiB, 4 * MiB }, { VR_WIRE_RECORD_DATA, 40 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 44 * MiB, 4 * MiB }, { VR_WIRE_RECORD_DATA, 48 * MiB, 4 * MiB },
    };
    const Cycle big = { "r1", 1, 1, 2, CYCLE_OPS(big_ops) };
    g_autofree char *small = g_build_filename(fx->r.work, "small", NULL);
    g_autofree char *path = NULL;
    g_autoptr(GError) error = NULL;
    VrSenderStats stats;

    if (fx->r.receiver == NULL)
        return;
    if (geteuid() != 0) {
        g_test_skip("mounting a small tmpfs needs root");
        return;
    }
    g_assert_no_errno(g_mkdir(small, 0700));
    /* Type "none": ignored for a propagation change, and never a NULL string. */
    if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", small, "tmpfs", 0, "size=24m,mode=0700") < 0) {
        g_test_message("cannot mount a tmpfs: %s", g_strerror(errno));
        g_test_skip("cannot mount a tmpfs in a private mount namespace");
        return;
    }
    fixture_stop(fx);
    vr_authz_free(fx->r.authz);
    g_free(fx->r.root);
    fx->r.root = g_strdup(small);
    fx->r.authz = vr_authz_new_allow_any(fx->r.root, "a", &error);
    g_assert_no_error(error);
    fixture_start(fx);

    upload_ok(fx, &cycle1);
    path = stream_prepare(fx, &big, false, NULL);
    g_assert_false(upload(fx, "client-ok", path, &stats, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_NO_SPACE);
    g_test_message("refused: %s", error->message);
    g_assert_nonnull(strstr(error->message, "the replica is out of space"));
    g_assert_nonnull(strstr(error->message, "rp-2.qcow2"));
    g_assert_cmpuint(stats.requests, ==, 1); /* final: no retry */
    g_clear_error(&error);
    /* Nothing published is damaged, nothing is left. */
    assert_cycles(fx, "r1", "1");
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2");
    assert_point(fx, "r1", 1);

    /* Space is freed: the same stream is published. */
    g_assert_no_errno(mount("tmpfs", small, "tmpfs", MS_REMOUNT, "size=128m,mode=0700"));
    g_assert_true(upload(fx, "client-ok", path, &stats, &error));
    g_assert_no_error(error);
    g_assert_false(stats.already_committed);
    assert_cycles(fx, "r1", "1 2");
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2 rp-2.qcow2");
    assert_point(fx, "r1", 2);
    assert_point(fx, "r1", 1);
    fixture_stop(fx); /* the stores close before the tmpfs goes */
    g_assert_no_errno(umount(small));
}

/*
 * The hash list of the latest point through the receiver: equal to the model's block hashes,
 * VR-Cycle the latest cycle, made once per point (reused by the next GET and after a
 * restart, dropped when a newer point is published); 404 for what has no replica; 400 for
 * names outside the rules.
 */
static void
test_hashes(Fixture *fx, gconstpointer data)
{
    static const struct {
        const char *relationship;
        const char *disk;
        const char *message;
    } missing[] = {
        { "r9", "vda", "relationship 'r9' has no replica here" },
        { "r1", "vdb", "disk 'vdb' of relationship 'r1' has no replica here" },
        { "r1", "vdc", "disk 'vdc' of relationship 'r1' has no recovery point yet" },
    };
    static const struct {
        const char *relationship;
        const char *disk;
    } bad[] = {
        { "..", "vda" },
        { "r1", ".." },
        { "r1", "../r1/vda" },
        { "../r1", "vda" },
        { "%2e%2e", "vda" },
        { "r1", "%2e%2e" },
        { "R1", "vda" },
        { "r1", "vda/x" },
        { "r1", "" },
        { "", "vda" },
        { "r1", "vda\n" },
        { "r12345678901234567", "vda" },
        { "r1", "d12345678901234567890123456789012" },
    };
    g_autofree char *dir = NULL;
    g_autofree char *list1 = NULL;
    g_autofree char *list2 = NULL;
    g_autofree char *cached1 = NULL;
    g_autofree char *cached2 = NULL;
    g_autofree char *part = NULL;
    g_autofree char *text1 = NULL;
    g_autofree char *text2 = NULL;
    g_autoptr(GError) error = NULL;
    struct stat before, after;
    uint64_t cycle = 0;
    uint64_t epoch = 0;

    if (fx->r.receiver == NULL)
        return;
    dir = disk_dir(fx, "r1");
    list1 = g_build_filename(fx->r.work, "list1", NULL);
    list2 = g_build_filename(fx->r.work, "list2", NULL);
    part = g_strconcat(list1, ".part", NULL);
    cached1 = g_build_filename(dir, "hashes-1", NULL);
    cached2 = g_build_filename(dir, "hashes-2", NULL);

    upload_ok(fx, &cycle1);
    g_assert_true(fetch(fx, "client-ok", "r1", "vda", list1, &cycle, &epoch, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(cycle, ==, 1);
    g_assert_cmpuint(epoch, ==, 1);
    assert_hashes(fx, list1, "r1", 1);
    g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
    /* served byte for byte from the list made next to the store */
    assert_listing(fx, "r1", "hashes-1 manifest.json rp-1.qcow2");
    assert_same_file(list1, cached1);

    /* the next GET reuses it (the same file, not made again); the local file is replaced */
    g_assert_no_errno(g_stat(cached1, &before));
    g_assert_true(fetch(fx, "client-ok", "r1", "vda", list1, &cycle, &epoch, &error));
    g_assert_cmpuint(cycle, ==, 1);
    g_assert_no_errno(g_stat(cached1, &after));
    g_assert_cmpuint(before.st_ino, ==, after.st_ino);
    g_assert_cmpint(before.st_mtim.tv_nsec, ==, after.st_mtim.tv_nsec);
    assert_hashes(fx, list1, "r1", 1);

    /* a newer point: its commit drops the list of cycle 1; the next GET describes cycle 2 */
    upload_ok(fx, &cycle2);
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2 rp-2.qcow2");
    g_assert_true(fetch(fx, "client-ok", "r1", "vda", list2, &cycle, &epoch, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(cycle, ==, 2);
    g_assert_cmpuint(epoch, ==, 1);
    assert_hashes(fx, list2, "r1", 2);
    text1 = read_file(list1);
    text2 = read_file(list2);
    g_assert_cmpint(memcmp(text1, text2, 64 + DISK_SIZE / VR_HASHLIST_BLOCK_SIZE * 32), !=, 0);
    assert_listing(fx, "r1", "hashes-2 manifest.json rp-1.qcow2 rp-2.qcow2");

    /* a restart of the replica keeps it: a published point never changes */
    g_assert_no_errno(g_stat(cached2, &before));
    fixture_stop(fx);
    fx->r.port = 0; /* no request spans the restart: any free port */
    fixture_start(fx);
    g_assert_true(fetch(fx, "client-ok", "r1", "vda", list2, &cycle, &epoch, &error));
    g_assert_cmpuint(cycle, ==, 2);
    g_assert_no_errno(g_stat(cached2, &after));
    g_assert_cmpuint(before.st_ino, ==, after.st_ino);
    assert_same_file(list2, cached2);

    /* no such relationship, disk, or point: 404, and nothing is made */
    {
        /* a disk whose first stream never made it */
        g_autofree char *vdc = g_build_filename(fx->r.root, "r1", "vdc", NULL);

        g_assert_no_errno(g_mkdir(vdc, 0700));
    }
    for (guint i = 0; i < G_N_ELEMENTS(missing); i++) {
        g_autoptr(GError) local = NULL;

        g_assert_false(fetch(fx, "client-ok", missing[i].relationship, missing[i].disk, list1,
                             &cycle, &epoch, &local));
        g_assert_error(local, VR_SENDER_ERROR, VR_SENDER_ERROR_NOT_FOUND);
        g_assert_nonnull(strstr(local->message, missing[i].message));
        g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
    }
    {
        g_autofree char *names = vr_test_list_dir(fx->r.root);
        g_autofree char *rel = g_build_filename(fx->r.root, "r1", NULL);
        g_autofree char *rel_names = vr_test_list_dir(rel);
        g_autofree char *vdc = g_build_filename(rel, "vdc", NULL);
        g_autofree char *vdc_names = vr_test_list_dir(vdc);

        g_assert_cmpstr(names, ==, "r1");
        g_assert_cmpstr(rel_names, ==, "owner vda vdc");
        g_assert_cmpstr(vdc_names, ==, "");
    }

    /* names outside the rules, dot segments, escapes: 400 from the receiver */
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) local = NULL;

        g_assert_false(fetch(fx, "client-ok", bad[i].relationship, bad[i].disk, list1, &cycle,
                             &epoch, &local));
        g_assert_error(local, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
        g_assert_nonnull(strstr(local->message, ": 400 "));
        g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
    }
    assert_listing(fx, "r1", "hashes-2 manifest.json rp-1.qcow2 rp-2.qcow2");
    /* the file fetched last is the list of cycle 1, untouched by the failures */
    assert_hashes(fx, list1, "r1", 1);
}

/*
 * A primary reads only relationships of its own trust group: primary3 (group b) gets 403 for
 * r1 (group a), and no list is made.
 */
static void
test_hashes_trust_groups(Fixture *fx, gconstpointer data)
{
    g_autofree char *list = NULL;
    g_autoptr(GError) error = NULL;
    uint64_t cycle = 0;
    uint64_t epoch = 0;

    if (fx->r.receiver == NULL)
        return;
    fixture_stop(fx);
    vr_authz_free(fx->r.authz);
    fx->r.authz = vr_authz_new_table();
    g_assert_true(vr_authz_add(fx->r.authz, "primary1", fx->r.root, "a", &error));
    g_assert_true(vr_authz_add(fx->r.authz, "primary3", fx->r.root, "b", &error));
    g_assert_no_error(error);
    fixture_start(fx);
    list = g_build_filename(fx->r.work, "list", NULL);

    upload_ok(fx, &cycle1); /* primary1 creates r1: group a */
    g_assert_false(fetch(fx, "client-later-revoked", "r1", "vda", list, &cycle, &epoch, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, ": 403 "));
    g_assert_nonnull(strstr(error->message, "relationship 'r1' belongs to trust group 'a'"));
    g_assert_nonnull(strstr(error->message, "primary 'primary3' (trust group 'b') may not read"));
    g_clear_error(&error);
    g_assert_false(g_file_test(list, G_FILE_TEST_EXISTS));
    assert_listing(fx, "r1", "manifest.json rp-1.qcow2");

    g_assert_true(fetch(fx, "client-ok", "r1", "vda", list, &cycle, &epoch, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(cycle, ==, 1);
    assert_hashes(fx, list, "r1", 1);
}

/*
 * A GET while a cycle is being applied, before any list of the latest point was made: the
 * store cannot make one (503, Retry-After); the sender waits and gets the list of the cycle
 * published meanwhile.
 */
static void
test_hashes_busy(Fixture *fx, gconstpointer data)
{
    const Cycle slow = { "r1", 1, 1, 2, CYCLE_OPS(slow_ops) };
    g_autoptr(VrRateLimit) limit = vr_rate_limit_new(2 * MiB, 256 * 1024);
    g_autofree char *path = NULL;
    g_autofree char *image = NULL;
    g_autofree char *dir = NULL;
    g_autofree char *list = NULL;
    VrTestUpload send;
    VrTestFetch get;
    GThread *sender;
    GThread *getter;
    gint64 until;
    gint64 start;

    if (fx->r.receiver == NULL)
        return;
    upload_ok(fx, &cycle1);
    path = stream_prepare(fx, &slow, true, NULL);
    dir = disk_dir(fx, "r1");
    image = g_build_filename(dir, "rp-2.qcow2", NULL);
    list = g_build_filename(fx->r.work, "list", NULL);
    send = upload_new(fx, "client-ok", path);
    send.limit = limit;
    sender = g_thread_new("sender", vr_test_upload_run, &send);
    until = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (!g_file_test(image, G_FILE_TEST_EXISTS) && g_get_monotonic_time() < until)
        g_main_context_iteration(NULL, FALSE);
    g_assert_true(g_file_test(image, G_FILE_TEST_EXISTS)); /* the apply has begun */

    get = (VrTestFetch){
        .pki = pki,
        .client_cert = "client-ok",
        .policy = fx->r.server_policy,
        .port = fx->r.port,
        .relationship = "r1",
        .disk = "vda",
        .path = list,
    };
    start = g_get_monotonic_time();
    getter = g_thread_new("fetch", vr_test_fetch_run, &get);
    g_assert_true(vr_test_fetch_wait(&get, getter));
    g_assert_no_error(get.error);
    /* it waited through a 503's Retry-After (5 s), by when cycle 2 was published */
    g_assert_cmpint(g_get_monotonic_time() - start, >=, 5 * G_USEC_PER_SEC);
    g_assert_cmpuint(get.cycle, ==, 2);
    assert_hashes(fx, list, "r1", 2);
    g_assert_true(vr_test_upload_wait(&send, sender));
    assert_cycles(fx, "r1", "1 2");
}

/* ---- the domain XML ------------------------------------------------------------------- */

/* A primary's domain XML: one disk vda, a CD-ROM; @MEMORY@ and @NAME@ are filled in. */
static const char domain_template[] = "<domain type='qemu'>\n"
                                      "  <name>@NAME@</name>\n"
                                      "  <uuid>3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d</uuid>\n"
                                      "  <memory unit='MiB'>@MEMORY@</memory>\n"
                                      "  <os><type arch='x86_64' machine='q35'>hvm</type></os>\n"
                                      "  <devices>\n"
                                      "    <disk type='file' device='disk'>\n"
                                      "      <driver name='qemu' type='qcow2'/>\n"
                                      "      <source file='/var/lib/libvirt/images/web.qcow2'/>\n"
                                      "      <target dev='vda' bus='virtio'/>\n"
                                      "    </disk>\n"
                                      "    <disk type='file' device='cdrom'>\n"
                                      "      <target dev='sda' bus='sata'/>\n"
                                      "    </disk>\n"
                                      "  </devices>\n"
                                      "</domain>\n";

static char *
domain_xml(const char *name, const char *memory)
{
    g_autoptr(GString) xml = g_string_new(domain_template);

    g_string_replace(xml, "@NAME@", name, 1);
    g_string_replace(xml, "@MEMORY@", memory, 1);
    return g_string_free(g_steal_pointer(&xml), FALSE);
}

/* vr_sender_put_domain() of @xml for @relationship as @client_cert, while the receiver runs. */
static bool
put_domain(Fixture *fx, const char *client_cert, const char *relationship, const char *xml,
           GError **error)
{
    return vr_test_put_domain(pki, client_cert, fx->r.server_policy, fx->r.port, relationship, xml,
                              error);
}

/* The mode bits of @path (not following a link). */
static guint
file_mode(const char *path)
{
    struct stat st;

    g_assert_no_errno(lstat(path, &st));
    return st.st_mode & 07777;
}

/* <root>/<relationship>/domain.xml holds @expected, mode 0600, in a 0700 directory. */
static void
assert_domain_file(Fixture *fx, const char *relationship, const char *expected)
{
    g_autofree char *rel = g_build_filename(fx->r.root, relationship, NULL);
    g_autofree char *path = g_build_filename(rel, "domain.xml", NULL);
    g_autofree char *text = read_text(rel, "domain.xml");

    g_assert_cmpstr(text, ==, expected);
    g_assert_cmpuint(file_mode(path), ==, 0600);
    g_assert_cmpuint(file_mode(rel), ==, 0700);
}

/*
 * PUT of the domain XML: stored as <relationship>/domain.xml (0600 in a 0700 directory, the
 * owner written as for a first stream), replaced by a later one; XMLs that cannot give a
 * standby are 400 and leave no trace, for a new relationship (no directory) as for one with
 * an XML (unchanged). Without a standby configured, a cycle defines nothing.
 */
static void
test_domain(Fixture *fx, gconstpointer data)
{
    static const struct {
        const char *xml;
        const char *text; /* in the client's error */
    } bad[] = {
        { "not XML at all", "does not parse: Start tag expected" },
        { "<domain><name>web</name>", "does not parse" },
        { "<vm><name>web</name></vm>", "has <vm> at its root, not <domain>" },
        { "<domain><uuid>3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d</uuid></domain>", "has no <name>" },
        { "<domain><name> </name></domain>", "has no <name>" },
        { "<domain><name>web</name></domain>", "cannot define a standby: the primary's domain "
                                               "XML has no <uuid>" },
        { "<domain><name>web</name><uuid>not-a-uuid</uuid></domain>", "is not valid" },
        { "<domain><name>web</name><uuid>3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d</uuid>"
          "<devices><disk><target dev='vd_a'/></disk></devices></domain>",
          "has disk target 'vd_a', not a disk name of the wire" },
        { "<domain><name>web</name><uuid>3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d</uuid>"
          "<devices><disk device='disk'><source file='/x'/></disk></devices></domain>",
          "a disk of the primary has no target dev" },
        { "<domain><name>web</name><uuid>3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d</uuid>"
          "<devices><disk><target dev='vda'/></disk><disk><target dev='vda'/></disk>"
          "</devices></domain>",
          "two disks of the primary have target 'vda'" },
        { "<domain><name>web</name><uuid>3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d</uuid>"
          "<devices><hostdev mode='subsystem' type='pci'/></devices></domain>",
          "is bound to the primary host's hardware" },
        { "<!DOCTYPE d [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><domain><name>&e;</name>"
          "</domain>",
          "has no <name>" },
    };
    g_autofree char *xml = domain_xml("web", "64");
    g_autofree char *bigger = domain_xml("web", "128");
    g_autofree char *rel = NULL;
    g_autofree char *owner = NULL;
    g_autofree char *names = NULL;
    g_autoptr(GError) error = NULL;

    if (fx->r.receiver == NULL)
        return;
    g_assert_true(put_domain(fx, "client-ok", "r1", xml, &error));
    g_assert_no_error(error);
    assert_domain_file(fx, "r1", xml);
    rel = g_build_filename(fx->r.root, "r1", NULL);
    owner = read_text(rel, "owner");
    g_assert_cmpstr(owner, ==, "a\n");
    names = vr_test_list_dir(rel);
    g_assert_cmpstr(names, ==, "domain.xml owner");
    g_clear_pointer(&names, g_free);

    g_assert_true(put_domain(fx, "client-ok", "r1", bigger, &error));
    g_assert_no_error(error);
    assert_domain_file(fx, "r1", bigger);

    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *r2 = g_build_filename(fx->r.root, "r2", NULL);

        g_assert_false(put_domain(fx, "client-ok", "r1", bad[i].xml, &error));
        g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
        g_assert_nonnull(strstr(error->message, ": 400 the domain XML of relationship 'r1' "));
        g_assert_nonnull(strstr(error->message, bad[i].text));
        g_clear_error(&error);
        g_assert_false(put_domain(fx, "client-ok", "r2", bad[i].xml, &error));
        g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
        g_clear_error(&error);
        g_assert_false(g_file_test(r2, G_FILE_TEST_EXISTS));
    }
    assert_domain_file(fx, "r1", bigger);
    names = vr_test_list_dir(rel);
    g_assert_cmpstr(names, ==, "domain.xml owner");

    /* No standby configured: a published cycle is all there is. */
    upload_ok(fx, &cycle1);
    assert_cycles(fx, "r1", "1");
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));
}

/*
 * The trust group, as for a stream: primary3 (group b) may not replace r1's XML (group a),
 * and its own XML makes r3 group b's.
 */
static void
test_domain_trust_groups(Fixture *fx, gconstpointer data)
{
    g_autofree char *xml = domain_xml("web", "64");
    g_autofree char *other = domain_xml("db", "64");
    g_autofree char *r3 = NULL;
    g_autofree char *owner = NULL;
    g_autoptr(GError) error = NULL;

    if (fx->r.receiver == NULL)
        return;
    fixture_stop(fx);
    vr_authz_free(fx->r.authz);
    fx->r.authz = vr_authz_new_table();
    g_assert_true(vr_authz_add(fx->r.authz, "primary1", fx->r.root, "a", &error));
    g_assert_true(vr_authz_add(fx->r.authz, "primary3", fx->r.root, "b", &error));
    g_assert_no_error(error);
    fixture_start(fx);

    g_assert_true(put_domain(fx, "client-ok", "r1", xml, &error));
    g_assert_no_error(error);
    g_assert_false(put_domain(fx, "client-later-revoked", "r1", other, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, ": 403 relationship 'r1' belongs to trust group 'a'"));
    g_assert_nonnull(strstr(error->message, "primary 'primary3' (trust group 'b')"));
    g_clear_error(&error);
    assert_domain_file(fx, "r1", xml);

    g_assert_true(put_domain(fx, "client-later-revoked", "r3", other, &error));
    g_assert_no_error(error);
    r3 = g_build_filename(fx->r.root, "r3", NULL);
    owner = read_text(r3, "owner");
    g_assert_cmpstr(owner, ==, "b\n");
    assert_domain_file(fx, "r3", other);
    g_assert_false(put_domain(fx, "client-ok", "r3", xml, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, ": 403 relationship 'r3' belongs to trust group 'b'"));
    assert_domain_file(fx, "r3", other);
}

/*
 * Links beneath the root: a relationship that is a link is 403 and nothing is written
 * outside; a domain.xml.tmp planted as a link is replaced, its target untouched; a
 * domain.xml that is a link is replaced by the file.
 */
static void
test_domain_symlink(Fixture *fx, gconstpointer data)
{
    g_autofree char *xml = domain_xml("web", "64");
    g_autofree char *outside = g_build_filename(fx->r.work, "outside", NULL);
    g_autofree char *victim = NULL;
    g_autofree char *link = NULL;
    g_autofree char *names = NULL;
    g_autofree char *text = NULL;
    g_autoptr(GError) error = NULL;

    if (fx->r.receiver == NULL)
        return;
    g_assert_no_errno(g_mkdir(outside, 0755));
    victim = g_build_filename(outside, "victim", NULL);
    g_assert_true(g_file_set_contents(victim, "untouched", -1, NULL));

    link = g_build_filename(fx->r.root, "r2", NULL);
    g_assert_no_errno(symlink(outside, link));
    g_assert_false(put_domain(fx, "client-ok", "r2", xml, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, ": 403 "));
    g_assert_nonnull(strstr(error->message, "is a symbolic link"));
    g_clear_error(&error);
    names = vr_test_list_dir(outside);
    g_assert_cmpstr(names, ==, "victim");
    g_clear_pointer(&names, g_free);
    g_clear_pointer(&link, g_free);

    g_assert_true(put_domain(fx, "client-ok", "r5", xml, &error));
    link = g_build_filename(fx->r.root, "r5", "domain.xml.tmp", NULL);
    g_assert_no_errno(symlink(victim, link));
    g_clear_pointer(&link, g_free);
    link = g_build_filename(fx->r.root, "r5", "domain.xml", NULL);
    g_assert_no_errno(unlink(link));
    g_assert_no_errno(symlink(victim, link));
    g_assert_true(put_domain(fx, "client-ok", "r5", xml, &error));
    g_assert_no_error(error);
    assert_domain_file(fx, "r5", xml);
    g_assert_true(g_file_get_contents(victim, &text, NULL, NULL));
    g_assert_cmpstr(text, ==, "untouched");
    g_clear_pointer(&link, g_free);
    link = g_build_filename(fx->r.root, "r5", NULL);
    names = vr_test_list_dir(link);
    g_assert_cmpstr(names, ==, "domain.xml owner");
}

/*
 * With a state database: the relationship's row, made by the first cycle, takes the domain
 * name of the XML sent before it; a later XML with another name renames it at once.
 */
static void
test_domain_state(Fixture *fx, gconstpointer data)
{
    g_autofree char *xml = domain_xml("web", "64");
    g_autofree char *renamed = domain_xml("web2", "64");
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(GError) error = NULL;

    if (fx->r.receiver == NULL)
        return;
    fixture_with_state(fx);
    g_assert_true(put_domain(fx, "client-ok", "r1", xml, &error));
    g_assert_no_error(error);
    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND); /* made by a stream */
    g_clear_error(&error);

    upload_ok(fx, &cycle1);
    g_assert_null(vr_replica_sink_get_state_error(fx->r.sink));
    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(rel->domain_name, ==, "web");
    g_assert_cmpstr(rel->peer, ==, "primary1");
    g_clear_pointer(&rel, vr_state_relationship_free);

    g_assert_true(put_domain(fx, "client-ok", "r1", renamed, &error));
    g_assert_no_error(error);
    g_assert_null(vr_replica_sink_get_state_error(fx->r.sink));
    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(rel->domain_name, ==, "web2");
    g_assert_cmpuint(rel->epoch, ==, 1);
}

/*
 * The state's rows are keyed by the relationship id alone: a cycle or a domain XML of r1
 * from primary3 (trust group b, a storage root of its own) is refused 403 while r1 is
 * primary1's here, and leaves nothing in primary3's root nor in the row; primary.example,
 * of primary1's trust group and storage root, takes the relationship over (the row names
 * it). A relationship whose row here is of role primary (reverse replication) refuses
 * cycles and its domain XML, 409.
 */
static void
test_state_row_owner(Fixture *fx, gconstpointer data)
{
    const Cycle r5 = { "r5", 1, 0, 1, CYCLE_OPS(full_ops) };
    /* Not a stream primary1 sent: the receiver answers that one itself (409). */
    const Cycle other = { "r1", 1, 0, 5, CYCLE_OPS(full_ops) };
    g_autofree char *root_b = g_build_filename(fx->r.work, "root-b", NULL);
    g_autofree char *rel_b = g_build_filename(root_b, "r1", NULL);
    g_autofree char *xml = domain_xml("web", "64");
    g_autofree char *path1 = NULL;
    g_autofree char *path2 = NULL;
    g_autofree char *path5 = NULL;
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(GError) error = NULL;
    VrSenderStats stats;

    if (fx->r.receiver == NULL)
        return;
    fixture_stop(fx);
    g_assert_no_errno(g_mkdir(root_b, 0700));
    vr_authz_free(fx->r.authz);
    fx->r.authz = vr_authz_new_table();
    g_assert_true(vr_authz_add(fx->r.authz, "primary1", fx->r.root, "a", &error));
    g_assert_true(vr_authz_add(fx->r.authz, "primary.example", fx->r.root, "a", &error));
    g_assert_true(vr_authz_add(fx->r.authz, "primary3", root_b, "b", &error));
    g_assert_no_error(error);
    vr_test_replica_open_state(&fx->r);
    fx->r.port = 0;
    fixture_start(fx);

    upload_ok(fx, &cycle1); /* r1 is primary1's: its row names it */
    path1 = stream_prepare(fx, &other, false, NULL);
    g_assert_false(upload(fx, "client-later-revoked", path1, &stats, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, ": 403 relationship 'r1' is replicated here from "
                                            "primary 'primary1'"));
    g_assert_nonnull(strstr(error->message, "primary 'primary3' (trust group 'b'"));
    g_assert_cmpuint(stats.body_bytes, ==, 0);
    g_clear_error(&error);
    g_assert_false(put_domain(fx, "client-later-revoked", "r1", xml, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_REFUSED);
    g_assert_nonnull(strstr(error->message, ": 403 relationship 'r1' is replicated here from "
                                            "primary 'primary1'"));
    g_assert_nonnull(strstr(error->message, "its domain XML is refused"));
    g_clear_error(&error);
    g_assert_false(g_file_test(rel_b, G_FILE_TEST_EXISTS));
    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(rel->peer, ==, "primary1");
    g_clear_pointer(&rel, vr_state_relationship_free);

    /* Another host of primary1's trust group and storage: the same relationship. */
    path2 = stream_prepare(fx, &cycle2, false, NULL);
    g_assert_true(upload(fx, "both-primary", path2, &stats, &error));
    g_assert_no_error(error);
    assert_cycles(fx, "r1", "1 2");
    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(rel->peer, ==, "primary.example");
    g_clear_pointer(&rel, vr_state_relationship_free);

    /* r5 is replicated from this host (role primary): neither a cycle nor a domain XML. */
    rel = g_new0(VrStateRelationship, 1);
    rel->id = g_strdup("r5");
    rel->role = VR_STATE_ROLE_PRIMARY;
    rel->domain_name = g_strdup("web5");
    rel->domain_uuid = g_strdup("3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d");
    rel->peer = g_strdup("replica.example");
    rel->epoch = 1;
    rel->state = g_strdup("Replicating");
    rel->config = g_strdup("{}");
    g_assert_true(vr_state_relationship_put(fx->r.state, rel, &error));
    g_assert_no_error(error);
    path5 = stream_prepare(fx, &r5, false, NULL);
    g_assert_false(upload(fx, "client-ok", path5, &stats, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "relationship 'r5' is replicated from this host to "
                                            "'replica.example' (role primary here): cycle 1 is "
                                            "refused"));
    g_clear_error(&error);
    g_assert_false(put_domain(fx, "client-ok", "r5", xml, &error));
    g_assert_error(error, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT);
    g_clear_error(&error);
    assert_cycles(fx, "r5", "");
}

int
main(int argc, char **argv)
{
    vr_test_init(&argc, &argv);
    pki = vr_test_make_pki(&pki_skip_why);

#define ADD(path, func) \
    g_test_add("/replica-sink/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("chain", test_chain);
    ADD("replay", test_replay);
    ADD("wrong-base", test_wrong_base);
    ADD("trust-groups", test_trust_groups);
    ADD("corrupt", test_corrupt);
    ADD("state", test_state);
    ADD("hourly", test_hourly);
    ADD("symlink", test_symlink);
    ADD("restart", test_restart);
    ADD("retention", test_retention);
    ADD("disk-full", test_disk_full);
    ADD("hashes", test_hashes);
    ADD("hashes/trust-groups", test_hashes_trust_groups);
    ADD("hashes/busy", test_hashes_busy);
    ADD("domain", test_domain);
    ADD("domain/trust-groups", test_domain_trust_groups);
    ADD("domain/symlink", test_domain_symlink);
    ADD("domain/state", test_domain_state);
    ADD("state/row-owner", test_state_row_owner);
#undef ADD

    return vr_test_run_pki(pki, pki_skip_why);
}
