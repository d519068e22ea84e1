/*
 * test-replica-hashes.c: the hash list of the latest recovery point, with real qemu-img,
 * qemu-nbd and libnbd
 *
 * Cycles are encoded as wire streams and applied to a store as a receiver does; the same
 * records go with pwrite() (and holes punched for zeroes) into a raw model file, the naive
 * model (as in test-replica-store.c). The hash list of the latest point must equal the
 * SHA-256 of every 64 KiB block of the model, the short last block over its own length.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "vr-hashlist.h"
#include "vr-replica-hashes.h"
#include "vr-replica-store.h"
#include "vr-test-store.h"
#include "vr-test-util.h"
#include "vr-wire.h"

#define MiB         (1024 * 1024)
#define GiB         ((uint64_t)1024 * MiB)
#define BLOCK       VR_HASHLIST_BLOCK_SIZE
#define DISK_SIZE   (64 * MiB + 4608) /* a short last block of 4608 bytes */
#define LARGE_SIZE  (2 * GiB + 4608)
#define GRANULARITY 65536

static const uint8_t uuid[16] = { 0x5e, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 };

typedef VrTestOp Op;

typedef struct {
    uint64_t base; /* 0: FULL */
    uint64_t target;
    uint64_t size;
    const Op *ops;
    guint n_ops;
} Cycle;

#define CYCLE_OPS(ops) (ops), G_N_ELEMENTS(ops)

typedef struct {
    char *dir;   /* the store */
    char *model; /* model.raw, outside the store: the latest point */
    char *list;  /* the hash list, outside the store */
    GRand *rand;
    VrReplicaStore *store;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *name = g_strdup_printf("hashes%u", serial++);
    g_autofree char *base = NULL;
    g_autoptr(GError) error = NULL;
    guint32 seed = g_test_rand_int();

    if (vr_test_skip_without("qemu-img") || vr_test_skip_without("qemu-nbd"))
        return;
    base = vr_test_path(name);
    fx->dir = g_build_filename(base, "store", NULL);
    fx->model = g_build_filename(base, "model.raw", NULL);
    fx->list = g_build_filename(base, "hashes", NULL);
    g_assert_no_errno(g_mkdir_with_parents(fx->dir, 0755));
    g_test_message("seed %u", seed);
    fx->rand = g_rand_new_with_seed(seed);
    fx->store = vr_replica_store_open(fx->dir, &error);
    g_assert_no_error(error);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    g_clear_pointer(&fx->store, vr_replica_store_free);
    g_clear_pointer(&fx->rand, g_rand_free);
    g_free(fx->dir);
    g_free(fx->model);
    g_free(fx->list);
}

static VrWireIdentity
cycle_identity(const Cycle *c)
{
    VrWireIdentity id = { 0 };

    id.kind = VR_WIRE_KIND_CYCLE;
    g_strlcpy(id.relationship, "r1", sizeof(id.relationship));
    memcpy(id.domain_uuid, uuid, sizeof(uuid));
    g_strlcpy(id.disk, "vda", sizeof(id.disk));
    id.epoch = 1;
    id.base_cycle = c->base;
    id.target_cycle = c->target;
    id.virtual_size = c->size;
    id.granularity = GRANULARITY;
    id.flags = c->base == 0 ? VR_WIRE_FLAG_FULL : 0;
    return id;
}

/* Apply @c's records to the model (a fresh one for FULL) and encode them. (transfer full) */
static GByteArray *
cycle_prepare(Fixture *fx, const Cycle *c)
{
    VrWireIdentity id = cycle_identity(c);

    if (c->base == 0)
        g_unlink(fx->model);
    return vr_test_encode_cycle(&id, c->ops, c->n_ops, fx->rand, fx->model);
}

static void
apply_cycle(Fixture *fx, const Cycle *c)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GByteArray) stream = cycle_prepare(fx, c);

    g_assert_true(vr_test_apply_stream(fx->store, stream, &error));
    g_assert_no_error(error);
}

/*
 * Every entry of the list equals the SHA-256 of the model's block. Holes of the model
 * (SEEK_DATA) are hashed as zeroes without reading them, so a 2 GiB model is cheap.
 */
static uint64_t
assert_hashes(Fixture *fx, uint64_t size)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrHashlistReader) reader = vr_hashlist_reader_open(fx->list, &error);
    g_autofree uint8_t *buf = g_malloc0(BLOCK);
    uint8_t zero_digest[VR_HASHLIST_DIGEST_SIZE];
    uint64_t count = (size + BLOCK - 1) / BLOCK;
    uint64_t data_blocks = 0;
    uint64_t data_bytes = 0;
    int fd;

    g_assert_no_error(error);
    g_assert_cmpuint(vr_hashlist_reader_get_virtual_size(reader), ==, size);
    g_assert_cmpuint(vr_hashlist_reader_get_count(reader), ==, count);
    vr_hashlist_digest(buf, BLOCK, zero_digest);
    fd = open(fx->model, O_RDONLY | O_CLOEXEC);
    g_assert_no_errno(fd);
    for (uint64_t i = 0; i < count; i++) {
        uint64_t offset = i * BLOCK;
        size_t len = MIN(BLOCK, size - offset);
        off_t data = lseek(fd, offset, SEEK_DATA);
        uint8_t expected[VR_HASHLIST_DIGEST_SIZE];
        uint8_t got[VR_HASHLIST_DIGEST_SIZE];

        if ((data < 0 && errno == ENXIO) || (uint64_t)data >= offset + len) {
            if (len == BLOCK) {
                memcpy(expected, zero_digest, sizeof(expected));
            } else {
                memset(buf, 0, len);
                vr_hashlist_digest(buf, len, expected);
            }
        } else {
            g_assert_cmpint(data, >=, 0);
            g_assert_cmpint(pread(fd, buf, len, offset), ==, (ssize_t)len);
            vr_hashlist_digest(buf, len, expected);
            data_blocks++;
            data_bytes += len;
        }
        g_assert_true(vr_hashlist_reader_get(reader, i, got, &error));
        g_assert_no_error(error);
        if (memcmp(got, expected, sizeof(got)) != 0)
            g_error("block %" G_GUINT64_FORMAT " (offset %" G_GUINT64_FORMAT ") differs", i,
                    offset);
    }
    close(fd);
    g_test_message("%" G_GUINT64_FORMAT " entries match the model (%" G_GUINT64_FORMAT
                   " blocks with data)",
                   count, data_blocks);
    return data_bytes;
}

/* qemu-nbd's private directory is gone (its process was reaped: it is our child). */
static void
assert_no_leftovers(void)
{
    g_autoptr(GDir) dir = g_dir_open(g_get_tmp_dir(), 0, NULL);
    const char *name;

    g_assert_nonnull(dir);
    while ((name = g_dir_read_name(dir)) != NULL)
        g_assert_false(g_str_has_prefix(name, "vr-hashes-"));
}

static VrReplicaHashesStats
write_hashes(Fixture *fx, uint64_t expected_cycle)
{
    g_autoptr(GError) error = NULL;
    VrReplicaHashesStats stats = { 0 };
    uint64_t cycle = 0;
    gint64 start = g_get_monotonic_time();

    g_unlink(fx->list);
    g_assert_true(vr_replica_hashes_write_stats(fx->store, fx->list, &cycle, &stats, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(cycle, ==, expected_cycle);
    assert_no_leftovers();
    g_test_message("cycle %" G_GUINT64_FORMAT " hashed in %.1f ms: %" G_GUINT64_FORMAT
                   " bytes read in %" G_GUINT64_FORMAT " requests, %" G_GUINT64_FORMAT
                   " zero bytes, %" G_GUINT64_FORMAT " block-status requests",
                   cycle, (g_get_monotonic_time() - start) / 1000.0, stats.read_bytes,
                   stats.read_requests, stats.zero_bytes, stats.status_calls);
    return stats;
}

/* A FULL cycle and an incremental one: DATA, ZERO and untouched ranges, unaligned edges,
 * and the short last block written, then partly zeroed. */
static void
test_points(Fixture *fx, gconstpointer data)
{
    static const Op full[] = {
        { VR_WIRE_RECORD_DATA, 0, 3 * MiB },
        { VR_WIRE_RECORD_DATA, 5 * MiB + 512, 700 * 1024 },
        { VR_WIRE_RECORD_ZERO, 8 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 20 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 40 * MiB + 4096, 64 * 1024 },
        { VR_WIRE_RECORD_DATA, 64 * MiB - 4096, 4096 + 4608 },
    };
    static const Op incremental[] = {
        { VR_WIRE_RECORD_ZERO, 256 * 1024, 512 * 1024 },     /* whole blocks of data */
        { VR_WIRE_RECORD_ZERO, 2 * MiB + 1024, 4096 },       /* inside a data block */
        { VR_WIRE_RECORD_DATA, 9 * MiB, 128 * 1024 },        /* in the zeroed range */
        { VR_WIRE_RECORD_ZERO, 20 * MiB, 4 * MiB },          /* all the data there */
        { VR_WIRE_RECORD_DATA, 33 * MiB + 100 * 512, 4096 }, /* in a hole */
        { VR_WIRE_RECORD_ZERO, 64 * MiB + 512, 2048 },       /* part of the short block */
    };
    const Cycle cycles[] = {
        { 0, 1, DISK_SIZE, CYCLE_OPS(full) },
        { 1, 2, DISK_SIZE, CYCLE_OPS(incremental) },
    };
    VrReplicaHashesStats stats;

    if (fx->store == NULL)
        return;
    for (guint i = 0; i < G_N_ELEMENTS(cycles); i++) {
        uint64_t model_data;

        apply_cycle(fx, &cycles[i]);
        stats = write_hashes(fx, cycles[i].target);
        model_data = assert_hashes(fx, DISK_SIZE);
        /* Every block is read or known zero; only blocks with data in the model are read
         * (the short last block has data in both cycles). */
        g_assert_cmpuint(stats.read_bytes + stats.zero_bytes, ==, DISK_SIZE);
        g_assert_cmpuint(stats.read_bytes, >, 0);
        g_assert_cmpuint(stats.read_bytes, <=, model_data);
        g_assert_cmpuint(stats.read_bytes % BLOCK, ==, DISK_SIZE % BLOCK);
    }
}

/* 2 GiB virtual, a few MiB of data: the reads follow the data, not the disk. */
static void
test_sparse(Fixture *fx, gconstpointer data)
{
    static const Op ops[] = {
        { VR_WIRE_RECORD_DATA, 0, MiB },
        { VR_WIRE_RECORD_DATA, 700 * MiB + 65536, 2 * MiB },
        { VR_WIRE_RECORD_ZERO, 1 * GiB, 64 * MiB },
        { VR_WIRE_RECORD_DATA, 2 * GiB - MiB, MiB },
    };
    const Cycle c = { 0, 1, LARGE_SIZE, CYCLE_OPS(ops) };
    VrReplicaHashesStats stats;

    if (fx->store == NULL)
        return;
    apply_cycle(fx, &c);
    stats = write_hashes(fx, 1);
    assert_hashes(fx, LARGE_SIZE);
    /* Exactly the blocks with data: 4 MiB, all 64 KiB-aligned. */
    g_assert_cmpuint(stats.read_bytes, ==, 4 * MiB);
    g_assert_cmpuint(stats.zero_bytes, ==, LARGE_SIZE - 4 * MiB);
}

static void
test_empty(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    uint64_t cycle = 42;

    if (fx->store == NULL)
        return;
    g_assert_false(vr_replica_hashes_write(fx->store, fx->list, &cycle, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT);
    g_assert_cmpstr(error->message, ==, "no recovery point to hash");
    g_assert_cmpuint(cycle, ==, 42);
    g_assert_false(g_file_test(fx->list, G_FILE_TEST_EXISTS));
}

static void
test_exists(Fixture *fx, gconstpointer data)
{
    static const Op ops[] = { { VR_WIRE_RECORD_DATA, MiB, MiB } };
    const Cycle c = { 0, 1, DISK_SIZE, CYCLE_OPS(ops) };
    g_autoptr(GError) error = NULL;
    g_autofree char *text = NULL;
    uint64_t cycle = 42;

    if (fx->store == NULL)
        return;
    apply_cycle(fx, &c);
    g_assert_true(g_file_set_contents(fx->list, "keep", -1, &error));
    g_assert_false(vr_replica_hashes_write(fx->store, fx->list, &cycle, &error));
    g_assert_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_IO);
    g_assert_nonnull(strstr(error->message, fx->list));
    g_test_message("%s", error->message);
    g_assert_cmpuint(cycle, ==, 42);
    /* Left as it was. */
    g_assert_true(g_file_get_contents(fx->list, &text, NULL, NULL));
    g_assert_cmpstr(text, ==, "keep");
}

/* An image qemu-nbd cannot open: FAILED with its message, no file, nothing left. */
static void
test_broken(Fixture *fx, gconstpointer data)
{
    static const Op ops[] = { { VR_WIRE_RECORD_DATA, 0, MiB } };
    const Cycle c = { 0, 1, DISK_SIZE, CYCLE_OPS(ops) };
    g_autoptr(GError) error = NULL;
    g_autofree char *image = NULL;
    uint64_t cycle = 42;

    if (fx->store == NULL)
        return;
    apply_cycle(fx, &c);
    image = vr_replica_store_image_path(fx->store, 1);
    g_assert_true(g_file_set_contents(image, "not a qcow2 image", -1, &error));
    g_assert_false(vr_replica_hashes_write(fx->store, fx->list, &cycle, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_test_message("%s", error->message);
    g_assert_true(g_str_has_prefix(error->message, "cannot hash cycle 1: qemu-nbd exited"));
    g_assert_cmpuint(cycle, ==, 42);
    g_assert_false(g_file_test(fx->list, G_FILE_TEST_EXISTS));
    assert_no_leftovers();
}

/* An apply begun and not ended: its overlay is no point; BUSY. */
static void
test_busy(Fixture *fx, gconstpointer data)
{
    static const Op ops[] = { { VR_WIRE_RECORD_DATA, 0, MiB } };
    const Cycle c = { 0, 1, DISK_SIZE, CYCLE_OPS(ops) };
    const Cycle next = { 1, 2, DISK_SIZE, NULL, 0 };
    VrWireIdentity id = cycle_identity(&next);
    g_autoptr(GError) error = NULL;
    g_autoptr(VrReplicaApply) apply = NULL;
    uint64_t cycle = 42;

    if (fx->store == NULL)
        return;
    apply_cycle(fx, &c);
    apply = vr_replica_store_begin(fx->store, &id, &error);
    g_assert_no_error(error);
    g_assert_false(vr_replica_hashes_write(fx->store, fx->list, &cycle, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY);
    g_assert_false(g_file_test(fx->list, G_FILE_TEST_EXISTS));
    g_clear_pointer(&apply, vr_replica_apply_abort);
    g_clear_error(&error);
    write_hashes(fx, 1);
    assert_hashes(fx, DISK_SIZE);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/replica-hashes/points", test_points);
    ADD("/replica-hashes/sparse", test_sparse);
    ADD("/replica-hashes/empty", test_empty);
    ADD("/replica-hashes/exists", test_exists);
    ADD("/replica-hashes/busy", test_busy);
    ADD("/replica-hashes/broken", test_broken);
#undef ADD
    return g_test_run();
}
