/*
 * test-replica-store.c: recovery points on the replica, with real qemu-img, qemu-nbd and
 * libnbd
 *
 * Every cycle is encoded as a wire stream and decoded, its records applied to the store as
 * a receiver does; the same records go with pwrite() (and holes punched for zeroes) into a
 * raw model file per point, the naive model. After each commit the point's image must
 * equal its model (qemu-img compare), and so must every earlier point. The crash matrix
 * stops a forked child at each failpoint (VR_FAILPOINT=<name>:exit) and reopens the store
 * in the parent.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "vr-failpoint.h"
#include "vr-hashlist.h"
#include "vr-qmp-json.h"
#include "vr-replica-hashes.h"
#include "vr-replica-store.h"
#include "vr-test-store.h"
#include "vr-test-util.h"
#include "vr-wire.h"

#define MiB         (1024 * 1024)
#define DISK_SIZE   (64 * MiB)
#define GRANULARITY 65536

static const uint8_t uuid[16] = { 0x7f, 0x3a, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 };

typedef VrTestOp Op;

typedef struct {
    uint64_t epoch;
    uint64_t base; /* the identity's base cycle: 0 for FULL and RESYNC */
    uint64_t target;
    uint64_t size;
    uint32_t flags;
    uint64_t model_base; /* the point the model starts from: the base, the latest for RESYNC */
    const Op *ops;
    guint n_ops;
} Cycle;

#define CYCLE_OPS(ops) (ops), G_N_ELEMENTS(ops)

typedef struct {
    char *dir;    /* the store */
    char *models; /* model-<cycle>.raw, outside the store */
    GRand *rand;
    VrReplicaStore *store;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *name = g_strdup_printf("store%u", serial++);
    g_autofree char *base = NULL;
    guint32 seed = g_test_rand_int();

    if (vr_test_skip_without("qemu-img") || vr_test_skip_without("qemu-nbd"))
        return;
    base = vr_test_path(name);
    fx->dir = g_build_filename(base, "store", NULL);
    fx->models = g_build_filename(base, "models", NULL);
    g_assert_no_errno(g_mkdir_with_parents(fx->dir, 0755));
    g_assert_no_errno(g_mkdir_with_parents(fx->models, 0755));
    g_test_message("seed %u", seed);
    fx->rand = g_rand_new_with_seed(seed);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    g_clear_pointer(&fx->store, vr_replica_store_free);
    g_clear_pointer(&fx->rand, g_rand_free);
    g_free(fx->dir);
    g_free(fx->models);
}

static VrReplicaStore *
store_open(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    VrReplicaStore *store = vr_replica_store_open(fx->dir, &error);

    g_assert_no_error(error);
    return store;
}

static void
store_reopen(Fixture *fx)
{
    g_clear_pointer(&fx->store, vr_replica_store_free);
    fx->store = store_open(fx);
}

static char *
model_path(Fixture *fx, uint64_t cycle)
{
    g_autofree char *name = g_strdup_printf("model-%" G_GUINT64_FORMAT ".raw", cycle);

    return g_build_filename(fx->models, name, NULL);
}

static VrWireIdentity
cycle_identity(const Cycle *c)
{
    VrWireIdentity id = { 0 };

    id.kind = VR_WIRE_KIND_CYCLE;
    g_strlcpy(id.relationship, "r1", sizeof(id.relationship));
    memcpy(id.domain_uuid, uuid, sizeof(uuid));
    g_strlcpy(id.disk, "vda", sizeof(id.disk));
    id.epoch = c->epoch;
    id.base_cycle = c->base;
    id.target_cycle = c->target;
    id.virtual_size = c->size;
    id.granularity = GRANULARITY;
    id.flags = c->flags;
    return id;
}

/*
 * Build model-<target>.raw (a copy of the model of @c->model_base, sized to @c->size) and
 * the stream of @c; the same bytes go to both. (transfer full)
 */
static GByteArray *
cycle_prepare(Fixture *fx, const Cycle *c)
{
    VrWireIdentity id = cycle_identity(c);
    g_autofree char *model = model_path(fx, c->target);

    g_unlink(model);
    if (c->model_base != 0) {
        g_autofree char *from = model_path(fx, c->model_base);
        const char *argv[] = { "cp", "--sparse=always", from, model, NULL };

        g_free(vr_test_run(argv));
    }
    return vr_test_encode_cycle(&id, c->ops, c->n_ops, fx->rand, model);
}

static void
apply_cycle(Fixture *fx, const Cycle *c)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GByteArray) stream = cycle_prepare(fx, c);
    gint64 start = g_get_monotonic_time();
    gint64 us;

    g_assert_true(vr_test_apply_stream(fx->store, stream, &error));
    g_assert_no_error(error);
    us = MAX(g_get_monotonic_time() - start, 1);
    g_test_message("cycle %" G_GUINT64_FORMAT ": %u stream bytes applied and committed in %.1f ms",
                   c->target, stream->len, us / 1000.0);
}

static json_object *
qemu_img_info(const char *image)
{
    const char *argv[] = { "qemu-img", "info", "--output=json", image, NULL };
    g_autofree char *out = vr_test_run(argv);
    json_object *info = json_tokener_parse(out);

    g_assert_nonnull(info);
    return info;
}

/* Point @cycle is listed, has its model's size and contents, and the expected backing. */
static void
assert_point(Fixture *fx, uint64_t cycle, const char *backing)
{
    g_autofree char *image = vr_replica_store_image_path(fx->store, cycle);
    g_autofree char *model = model_path(fx, cycle);
    const char *argv[] = { "qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, model, NULL };
    g_autoptr(json_object) info = NULL;
    const VrReplicaPoint *points;
    const VrReplicaPoint *point = NULL;
    uint64_t size = 0;
    GStatBuf st;
    guint n;

    g_assert_nonnull(image);
    points = vr_replica_store_points(fx->store, &n);
    for (guint i = 0; i < n; i++) {
        if (points[i].cycle == cycle)
            point = &points[i];
    }
    g_assert_nonnull(point);
    g_assert_no_errno(g_stat(model, &st));
    info = qemu_img_info(image);
    g_assert_true(vr_json_get_uint64(info, "virtual-size", &size));
    g_assert_cmpuint(size, ==, (uint64_t)st.st_size);
    g_assert_cmpuint(size, ==, point->virtual_size);
    g_assert_cmpstr(vr_json_get_string(info, "backing-filename"), ==, backing);
    /* Sizes are equal, so the non-strict compare compares every byte. */
    g_free(vr_test_run(argv));
}

static int
compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *
read_manifest(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = g_build_filename(fx->dir, "manifest.json", NULL);
    char *text = NULL;

    g_file_get_contents(path, &text, NULL, &error);
    g_assert_no_error(error);
    return text;
}

static void
assert_cycles(Fixture *fx, const char *expected)
{
    g_autoptr(GString) cycles = g_string_new(NULL);
    const VrReplicaPoint *points;
    guint n;

    points = vr_replica_store_points(fx->store, &n);
    for (guint i = 0; i < n; i++)
        g_string_append_printf(cycles, "%s%" G_GUINT64_FORMAT, i > 0 ? " " : "", points[i].cycle);
    g_assert_cmpstr(cycles->str, ==, expected);
}

/* The cycles every test starts from: a full one and an incremental one, 64 MiB. */
static const Op full_ops[] = {
    { VR_WIRE_RECORD_DATA, 0, MiB },
    { VR_WIRE_RECORD_DATA, MiB + 4096, 70001 }, /* odd length */
    { VR_WIRE_RECORD_ZERO, 2 * MiB, 6 * MiB },
    { VR_WIRE_RECORD_DATA, 8 * MiB + 17, 4 * MiB }, /* the largest record, odd offset */
    { VR_WIRE_RECORD_DATA, 20 * MiB, 3 * MiB },
    { VR_WIRE_RECORD_DATA, 60 * MiB, 4 * MiB }, /* up to the end */
};
static const Op second_ops[] = {
    { VR_WIRE_RECORD_ZERO, 0, 512 * 1024 }, /* zeroes over the base's data */
    { VR_WIRE_RECORD_DATA, 600 * 1024, 100 * 1024 }, { VR_WIRE_RECORD_DATA, 8 * MiB, 65536 },
    { VR_WIRE_RECORD_ZERO, 20 * MiB + 4096, MiB }, /* inside data, not cluster aligned */
    { VR_WIRE_RECORD_DATA, 63 * MiB, MiB },
};
static const Op third_ops[] = {
    { VR_WIRE_RECORD_DATA, 4096, 512 },
    { VR_WIRE_RECORD_ZERO, 8 * MiB, 16 * MiB }, /* across data of both earlier points */
    { VR_WIRE_RECORD_DATA, 30 * MiB, 4 * MiB },
    { VR_WIRE_RECORD_DATA, 34 * MiB, 4 * MiB },
};

static const Cycle cycle1 = { 1, 0, 1, DISK_SIZE, VR_WIRE_FLAG_FULL, 0, CYCLE_OPS(full_ops) };
static const Cycle cycle2 = { 1, 1, 2, DISK_SIZE, 0, 1, CYCLE_OPS(second_ops) };
static const Cycle cycle3 = { 1, 2, 3, DISK_SIZE, 0, 2, CYCLE_OPS(third_ops) };

static void
setup_two_points(Fixture *fx)
{
    fx->store = store_open(fx);
    apply_cycle(fx, &cycle1);
    apply_cycle(fx, &cycle2);
    assert_cycles(fx, "1 2");
}

/* ---- tests ------------------------------------------------------------------------ */

static void
test_chain(Fixture *fx, gconstpointer data)
{
    static const Op resync_ops[] = {
        { VR_WIRE_RECORD_DATA, 5 * MiB, 65536 },
        { VR_WIRE_RECORD_ZERO, 30 * MiB, 65536 },
    };
    static const Op full2_ops[] = {
        { VR_WIRE_RECORD_DATA, 10 * MiB, 2 * MiB },
    };
    const Cycle app = { 1, 2, 3, DISK_SIZE, VR_WIRE_FLAG_APP_CONSISTENT, 2, CYCLE_OPS(third_ops) };
    /* A resync carries the blocks that differ from the latest point: on top of it. */
    const Cycle resync = { 2, 0, 4, DISK_SIZE, VR_WIRE_FLAG_RESYNC, 3, CYCLE_OPS(resync_ops) };
    const Cycle full = { 3, 0, 5, DISK_SIZE, VR_WIRE_FLAG_FULL, 0, CYCLE_OPS(full2_ops) };
    gint64 before = g_get_real_time() / G_USEC_PER_SEC;
    g_autoptr(json_object) manifest = NULL;
    g_autofree char *text = NULL;
    g_autofree char *listing = NULL;
    const VrReplicaPoint *points;
    json_object *list;
    guint n;

    if (g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);
    assert_cycles(fx, "");
    apply_cycle(fx, &cycle1);
    assert_point(fx, 1, NULL);
    apply_cycle(fx, &cycle2);
    assert_point(fx, 2, "rp-1.qcow2");
    assert_point(fx, 1, NULL);
    apply_cycle(fx, &app);
    assert_point(fx, 3, "rp-2.qcow2");
    assert_point(fx, 2, "rp-1.qcow2");
    assert_point(fx, 1, NULL);

    /* The manifest lists them, oldest first, as the store does. */
    points = vr_replica_store_points(fx->store, &n);
    g_assert_cmpuint(n, ==, 3);
    g_assert_cmpuint(points[0].flags, ==, VR_WIRE_FLAG_FULL);
    g_assert_cmpuint(points[1].flags, ==, 0);
    g_assert_cmpuint(points[2].flags, ==, VR_WIRE_FLAG_APP_CONSISTENT);
    for (guint i = 0; i < n; i++) {
        g_assert_cmpuint(points[i].cycle, ==, i + 1);
        g_assert_cmpuint(points[i].epoch, ==, 1);
        g_assert_cmpint(points[i].published, >=, before);
        g_assert_cmpint(points[i].published, <=, g_get_real_time() / G_USEC_PER_SEC);
    }
    text = read_manifest(fx);
    manifest = json_tokener_parse(text);
    g_assert_nonnull(manifest);
    list = vr_json_get_array(manifest, "points");
    g_assert_nonnull(list);
    g_assert_cmpuint(json_object_array_length(list), ==, 3);
    for (guint i = 0; i < n; i++) {
        json_object *p = json_object_array_get_idx(list, i);
        g_autofree char *image = g_strdup_printf("rp-%u.qcow2", i + 1);
        uint64_t value = 0;

        g_assert_cmpstr(vr_json_get_string(p, "image"), ==, image);
        g_assert_true(vr_json_get_uint64(p, "flags", &value));
        g_assert_cmpuint(value, ==, points[i].flags);
        g_assert_true(vr_json_get_uint64(p, "virtual_size", &value));
        g_assert_cmpuint(value, ==, DISK_SIZE);
    }
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==, "manifest.json rp-1.qcow2 rp-2.qcow2 rp-3.qcow2");

    /* Read back from disk, the same. */
    store_reopen(fx);
    points = vr_replica_store_points(fx->store, &n);
    g_assert_cmpuint(n, ==, 3);
    g_assert_cmpuint(points[2].flags, ==, VR_WIRE_FLAG_APP_CONSISTENT);

    apply_cycle(fx, &resync);
    assert_point(fx, 4, "rp-3.qcow2");
    /* A new epoch's full cycle: a fresh image; the earlier points stay until retention. */
    apply_cycle(fx, &full);
    assert_point(fx, 5, NULL);
    for (uint64_t c = 1; c <= 4; c++) {
        g_autofree char *backing = c > 1 ? g_strdup_printf("rp-%u.qcow2", (guint)c - 1) : NULL;

        assert_point(fx, c, backing);
    }
    assert_cycles(fx, "1 2 3 4 5");
    vr_test_assert_no_process("qemu-nbd", fx->dir);
}

static void
test_abort(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GByteArray) stream = NULL;
    g_autofree char *manifest = NULL;
    g_autofree char *listing = NULL;
    g_autofree char *after = NULL;
    VrWireIdentity id = cycle_identity(&cycle2);
    VrWireRecord outside = { 0 };
    VrReplicaApply *apply;

    if (g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);

    /* On an empty store: nothing is left at all. */
    {
        VrWireIdentity full = cycle_identity(&cycle1);
        VrWireRecord zero = {
            .index = 1, .type = VR_WIRE_RECORD_ZERO, .offset = 0, .length = MiB, .identity = &full
        };

        apply = vr_replica_store_begin(fx->store, &full, &error);
        g_assert_no_error(error);
        g_assert_true(vr_replica_apply_record(apply, &zero, &error));
        g_assert_no_error(error);
        vr_replica_apply_abort(apply);
        listing = vr_test_list_dir(fx->dir);
        g_assert_cmpstr(listing, ==, "");
        g_clear_pointer(&listing, g_free);
    }

    apply_cycle(fx, &cycle1);
    manifest = read_manifest(fx);
    listing = vr_test_list_dir(fx->dir);

    /* Records written, qemu-nbd running: abort removes it all. */
    {
        g_autoptr(VrWireDecoder) decoder = vr_wire_decoder_new();
        VrTestFeed feed = { fx->store, NULL };

        stream = cycle_prepare(fx, &cycle2);
        g_assert_true(vr_wire_decoder_feed(decoder, stream->data, stream->len / 2,
                                           vr_test_feed_record, &feed, &error));
        g_assert_no_error(error);
        g_assert_nonnull(feed.apply);
        g_assert_cmpuint(vr_test_count_processes("qemu-nbd", fx->dir), ==, 1);
        after = vr_test_list_dir(fx->dir);
        g_assert_cmpstr(after, ==,
                        ".apply-2.pid .apply-2.sock manifest.json rp-1.qcow2 rp-2.qcow2");
        g_clear_pointer(&after, g_free);
        vr_replica_apply_abort(feed.apply);
    }
    after = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(after, ==, listing);
    g_clear_pointer(&after, g_free);
    after = read_manifest(fx);
    g_assert_cmpstr(after, ==, manifest);
    g_clear_pointer(&after, g_free);
    assert_cycles(fx, "1");
    vr_test_assert_no_process("qemu-nbd", fx->dir);

    /* Abort right after begin. */
    apply = vr_replica_store_begin(fx->store, &id, &error);
    g_assert_no_error(error);
    vr_replica_apply_abort(apply);
    after = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(after, ==, listing);
    g_clear_pointer(&after, g_free);

    /* A record that does not fit fails the apply for good, and its commit publishes nothing. */
    apply = vr_replica_store_begin(fx->store, &id, &error);
    g_assert_no_error(error);
    outside = (VrWireRecord){ .index = 1,
                              .type = VR_WIRE_RECORD_ZERO,
                              .offset = DISK_SIZE - 4096,
                              .length = 8192,
                              .identity = &id };
    g_assert_false(vr_replica_apply_record(apply, &outside, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_assert_nonnull(strstr(error->message, "does not fit a disk of 67108864 bytes"));
    g_clear_error(&error);
    outside.offset = 0;
    g_assert_false(vr_replica_apply_record(apply, &outside, &error));
    g_assert_nonnull(strstr(error->message, "does not fit"));
    g_clear_error(&error);
    g_assert_false(vr_replica_apply_commit(apply, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_clear_error(&error);
    after = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(after, ==, listing);
    g_clear_pointer(&after, g_free);
    assert_cycles(fx, "1");

    /* The primary sends the cycle again: it applies. */
    g_assert_true(vr_test_apply_stream(fx->store, stream, &error));
    g_assert_no_error(error);
    assert_point(fx, 2, "rp-1.qcow2");
    assert_point(fx, 1, NULL);
    vr_test_assert_no_process("qemu-nbd", fx->dir);
}

/* begin() refuses @c with a CONFLICT whose message holds each of @words. */
static void
assert_conflict(Fixture *fx, VrReplicaStore *store, const Cycle *c, const char *const *words)
{
    g_autoptr(GError) error = NULL;
    VrWireIdentity id = cycle_identity(c);
    VrReplicaApply *apply = vr_replica_store_begin(store, &id, &error);

    g_assert_null(apply);
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT);
    g_test_message("refused: %s", error->message);
    for (guint i = 0; words[i] != NULL; i++)
        g_assert_nonnull(strstr(error->message, words[i]));
}

static void
test_conflict(Fixture *fx, gconstpointer data)
{
    const Cycle wrong_base = { 1, 1, 3, DISK_SIZE, 0, 1, NULL, 0 };
    const Cycle replay = { 1, 1, 2, DISK_SIZE, 0, 1, NULL, 0 };
    const Cycle old_full = { 1, 0, 1, DISK_SIZE, VR_WIRE_FLAG_FULL, 0, NULL, 0 };
    const Cycle stale = { 0, 2, 3, DISK_SIZE, 0, 2, NULL, 0 };
    const Cycle shrink = { 1, 2, 3, DISK_SIZE / 2, 0, 2, NULL, 0 };
    const Cycle next = { 1, 2, 3, DISK_SIZE, 0, 2, NULL, 0 };
    const Cycle other = { 1, 2, 4, DISK_SIZE, 0, 2, NULL, 0 };
    const Cycle resync = { 1, 0, 3, DISK_SIZE, VR_WIRE_FLAG_RESYNC, 0, NULL, 0 };
    g_autoptr(GError) error = NULL;
    g_autoptr(VrReplicaStore) empty = NULL;
    g_autofree char *empty_dir = NULL;
    g_autofree char *listing = NULL;
    g_autofree char *after = NULL;
    g_autofree char *manifest = NULL;
    VrWireIdentity id = cycle_identity(&next);
    VrWireIdentity id2 = cycle_identity(&other);
    VrReplicaApply *apply;

    if (g_test_failed() || fx->dir == NULL)
        return;
    setup_two_points(fx);
    listing = vr_test_list_dir(fx->dir);
    manifest = read_manifest(fx);

    assert_conflict(fx, fx->store, &wrong_base,
                    (const char *const[]){ "cycle 3", "base cycle 1", "cycle 2", NULL });
    g_assert_false(vr_replica_store_check(fx->store, 1, 1, 3, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT);
    g_clear_error(&error);
    g_assert_true(vr_replica_store_check(fx->store, 1, 2, 3, &error));
    g_assert_true(vr_replica_store_check(fx->store, 2, 0, 3, &error));
    g_assert_no_error(error);
    assert_conflict(fx, fx->store, &replay,
                    (const char *const[]){ "cycle 2 is already published", NULL });
    assert_conflict(fx, fx->store, &old_full,
                    (const char *const[]){ "cycle 1 is already published", "cycle 2", NULL });
    assert_conflict(fx, fx->store, &stale,
                    (const char *const[]){ "stale epoch 0", "cycle 2", "epoch 1", NULL });
    assert_conflict(fx, fx->store, &shrink,
                    (const char *const[]){ "shrinks", "67108864", "33554432", NULL });

    /* One apply at a time, and one store per directory. */
    apply = vr_replica_store_begin(fx->store, &id, &error);
    g_assert_no_error(error);
    g_assert_null(vr_replica_store_begin(fx->store, &id2, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY);
    g_assert_nonnull(strstr(error->message, "cycle 3 is being applied"));
    g_clear_error(&error);
    g_assert_null(vr_replica_store_open(fx->dir, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY);
    g_clear_error(&error);
    vr_replica_apply_abort(apply);

    /* A hash list is not applied. */
    id.kind = VR_WIRE_KIND_HASH_LIST;
    id.base_cycle = 0;
    id.flags = 0;
    g_assert_null(vr_replica_store_begin(fx->store, &id, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_clear_error(&error);

    /* Nothing changed. */
    after = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(after, ==, listing);
    g_clear_pointer(&after, g_free);
    after = read_manifest(fx);
    g_assert_cmpstr(after, ==, manifest);
    assert_cycles(fx, "1 2");

    /* An empty store holds no base, and nothing a resync was compared with. */
    empty_dir = g_strconcat(fx->dir, "-empty", NULL);
    g_assert_no_errno(g_mkdir_with_parents(empty_dir, 0755));
    empty = vr_replica_store_open(empty_dir, &error);
    g_assert_no_error(error);
    assert_conflict(fx, empty, &next,
                    (const char *const[]){ "cycle 3", "base cycle 2", "holds no point", NULL });
    assert_conflict(fx, empty, &resync, (const char *const[]){ "resync cycle 3", NULL });
    g_clear_pointer(&listing, g_free);
    listing = vr_test_list_dir(empty_dir);
    g_assert_cmpstr(listing, ==, "");
    vr_test_assert_no_process("qemu-nbd", fx->dir);
}

static void
test_resize(Fixture *fx, gconstpointer data)
{
    static const Op first_ops[] = {
        { VR_WIRE_RECORD_DATA, 0, MiB },
        { VR_WIRE_RECORD_DATA, 63 * MiB, MiB },
    };
    /* The primary's disk grew to 3 GiB: zeroes over most of the new tail (3 write-zeroes
     * requests of at most 1 GiB), data beyond the old end. */
    static const Op grow_ops[] = {
        { VR_WIRE_RECORD_DATA, 63 * MiB + 512 * 1024, 1536 * 1024 },
        { VR_WIRE_RECORD_ZERO, 65 * MiB, 3072ULL * MiB - 66 * MiB },
        { VR_WIRE_RECORD_DATA, 3072ULL * MiB - MiB, MiB },
    };
    const Cycle first = { 1, 0, 1, DISK_SIZE, VR_WIRE_FLAG_FULL, 0, CYCLE_OPS(first_ops) };
    const Cycle grow = { 1, 1, 2, 3072ULL * MiB, 0, 1, CYCLE_OPS(grow_ops) };

    if (g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);
    apply_cycle(fx, &first);
    apply_cycle(fx, &grow);
    assert_point(fx, 2, "rp-1.qcow2");
    assert_point(fx, 1, NULL);
    store_reopen(fx);
    assert_point(fx, 2, "rp-1.qcow2");
    assert_point(fx, 1, NULL);
}

/* What a crash test's child does to the store it opened, until its failpoint stops it. */
typedef bool (*CrashFunc)(VrReplicaStore *store, gpointer data, GError **error);

static bool
crash_apply(VrReplicaStore *store, gpointer data, GError **error)
{
    return vr_test_apply_stream(store, data, error);
}

static bool
crash_retain(VrReplicaStore *store, gpointer data, GError **error)
{
    return vr_replica_store_retain(store, 0, error);
}

static bool
crash_retain_spaced(VrReplicaStore *store, gpointer data, GError **error)
{
    return vr_replica_store_retain_spaced(store, 4, 3600, error);
}

/* True (and the test skipped) in a build without failpoints (-Dfailpoints=false). */
static bool
skip_without_failpoints(void)
{
    if (vr_failpoints_built())
        return false;
    g_test_skip("built without failpoints (meson -Dfailpoints=true; ./run test has them)");
    return true;
}

/*
 * In a forked child with VR_FAILPOINT=@spec: open the store and run @func; the child must
 * leave at the failpoint (VR_FAILPOINT_EXIT_STATUS for ":exit", SIGKILL for ":kill"). The fixture's
 * store must be closed (a store is one process's at a time).
 */
static void
crash_at(Fixture *fx, const char *spec, CrashFunc func, gpointer data)
{
    int status = 0;
    pid_t child;

    fflush(stdout);
    fflush(stderr);
    child = fork();
    g_assert_no_errno(child);
    if (child == 0) {
        g_autoptr(VrReplicaStore) store = NULL;
        GError *err = NULL;

        g_setenv("VR_FAILPOINT", spec, TRUE);
        store = vr_replica_store_open(fx->dir, &err);
        if (store == NULL || !func(store, data, &err)) {
            g_printerr("child: %s\n", err->message);
            _exit(1);
        }
        _exit(0); /* the failpoint did not fire */
    }
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    if (g_str_has_suffix(spec, ":kill")) {
        g_assert_true(WIFSIGNALED(status));
        g_assert_cmpint(WTERMSIG(status), ==, SIGKILL);
    } else {
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, VR_FAILPOINT_EXIT_STATUS);
    }
}

/* Every persistence step of an apply, in order. */
static const char *const failpoints[] = {
    "after-create",      "after-write",        "after-flush",  "after-nbd-stop",
    "after-image-fsync", "after-manifest-tmp", "after-rename",
};

static void
test_crash(Fixture *fx, gconstpointer data)
{
    const char *failpoint = data;
    bool published = strcmp(failpoint, "after-rename") == 0;
    g_autoptr(GByteArray) stream = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *listing = NULL;
    char spec[64]; /* on the stack: the child leaves by _exit(), nothing is freed */

    if (skip_without_failpoints() || g_test_failed() || fx->dir == NULL)
        return;
    g_snprintf(spec, sizeof(spec), "%s:exit", failpoint);
    setup_two_points(fx);
    stream = cycle_prepare(fx, &cycle3);
    /* The child opens the store itself: it is one process's at a time. */
    g_clear_pointer(&fx->store, vr_replica_store_free);

    crash_at(fx, spec, crash_apply, stream);

    /* Its qemu-nbd died with it. */
    vr_test_assert_no_process("qemu-nbd", fx->dir);
    fx->store = store_open(fx);
    assert_cycles(fx, published ? "1 2 3" : "1 2");
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==,
                    published ? "manifest.json rp-1.qcow2 rp-2.qcow2 rp-3.qcow2"
                              : "manifest.json rp-1.qcow2 rp-2.qcow2");
    assert_point(fx, 1, NULL);
    assert_point(fx, 2, "rp-1.qcow2");
    if (published)
        assert_point(fx, 3, "rp-2.qcow2");

    /* One more clean cycle: the resent cycle 3, or cycle 4 after it. */
    if (published) {
        const Cycle cycle4 = { 1, 3, 4, DISK_SIZE, 0, 3, CYCLE_OPS(second_ops) };

        apply_cycle(fx, &cycle4);
        assert_point(fx, 4, "rp-3.qcow2");
    } else {
        g_assert_true(vr_test_apply_stream(fx->store, stream, &error));
        g_assert_no_error(error);
        assert_point(fx, 3, "rp-2.qcow2");
    }
    vr_test_assert_no_process("qemu-nbd", fx->dir);
}

/* ---- retention -------------------------------------------------------------------- */

static const Op grow_ops[] = {
    { VR_WIRE_RECORD_ZERO, 10 * MiB, 65536 },
    { VR_WIRE_RECORD_DATA, 66 * MiB, MiB }, /* beyond the old end */
};

/* Incremental cycle @target on @target - 1, of @size. */
static Cycle
incremental(uint64_t target, uint64_t size, guint variant)
{
    Cycle c = { 1, target - 1, target, size, 0, target - 1, NULL, 0 };

    if (variant % 2 == 0) {
        c.ops = second_ops;
        c.n_ops = G_N_ELEMENTS(second_ops);
    } else {
        c.ops = third_ops;
        c.n_ops = G_N_ELEMENTS(third_ops);
    }
    return c;
}

static void
retain(Fixture *fx, guint keep)
{
    g_autoptr(GError) error = NULL;
    gint64 start = g_get_monotonic_time();

    g_assert_true(vr_replica_store_retain(fx->store, keep, &error));
    g_assert_no_error(error);
    g_test_message("retain %u: %.1f ms", keep, (g_get_monotonic_time() - start) / 1000.0);
}

/* The store lists @cycles (oldest first), and the directory holds exactly their images. */
static void
assert_only(Fixture *fx, const char *cycles)
{
    g_auto(GStrv) list = g_strsplit(cycles, " ", -1);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *expected = NULL;
    g_autofree char *listing = vr_test_list_dir(fx->dir);

    assert_cycles(fx, cycles);
    g_ptr_array_add(names, g_strdup("manifest.json"));
    for (guint i = 0; list[i] != NULL; i++)
        g_ptr_array_add(names, g_strdup_printf("rp-%s.qcow2", list[i]));
    g_ptr_array_sort(names, compare_names);
    g_ptr_array_add(names, NULL);
    expected = g_strjoinv(" ", (char **)names->pdata);
    g_assert_cmpstr(listing, ==, expected);
}

/* qemu-img check of every listed image, and the whole chain of the latest is readable. */
static void
assert_chain_valid(Fixture *fx)
{
    const VrReplicaPoint *points;
    guint n;

    points = vr_replica_store_points(fx->store, &n);
    for (guint i = 0; i < n; i++) {
        g_autofree char *image = vr_replica_store_image_path(fx->store, points[i].cycle);
        const char *check[] = { "qemu-img", "check", "-q", "-f", "qcow2", image, NULL };
        const char *chain[] = { "qemu-img", "info", "--backing-chain", image, NULL };

        g_free(vr_test_run(check));
        g_free(vr_test_run(chain));
    }
}

static void
test_retain(Fixture *fx, gconstpointer data)
{
    static const Op full2_ops[] = {
        { VR_WIRE_RECORD_DATA, 10 * MiB, 2 * MiB },
    };
    const uint64_t big = DISK_SIZE + 4 * MiB;
    /* A new chain, then a smaller resync on top of it. */
    const Cycle full = { 2, 0, 8, DISK_SIZE, VR_WIRE_FLAG_FULL, 0, CYCLE_OPS(full2_ops) };
    const Cycle resync = {
        2, 0, 9, DISK_SIZE - 4 * MiB, VR_WIRE_FLAG_RESYNC, 8, CYCLE_OPS(third_ops)
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(VrReplicaApply) apply = NULL;
    VrWireIdentity id;

    if (g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);
    apply_cycle(fx, &cycle1);
    retain(fx, 2);
    /* Six cycles, retention after each: cycle 5 grows the disk (the commit grows the base). */
    for (uint64_t target = 2; target <= 6; target++) {
        Cycle c = incremental(target, target >= 5 ? big : DISK_SIZE, (guint)target);

        if (target == 5) {
            c.ops = grow_ops;
            c.n_ops = G_N_ELEMENTS(grow_ops);
        }
        apply_cycle(fx, &c);
        retain(fx, 2);
    }
    assert_only(fx, "4 5 6");
    assert_point(fx, 4, NULL);
    assert_point(fx, 5, "rp-4.qcow2");
    assert_point(fx, 6, "rp-5.qcow2");
    assert_chain_valid(fx);
    store_reopen(fx);
    assert_only(fx, "4 5 6");

    /* The next cycle applies on top; nothing to do for a larger keep. */
    {
        const Cycle c = incremental(7, big, 1);

        apply_cycle(fx, &c);
    }
    retain(fx, 24);
    assert_only(fx, "4 5 6 7");
    retain(fx, 2);
    assert_only(fx, "5 6 7");
    assert_point(fx, 5, NULL);
    assert_point(fx, 7, "rp-6.qcow2");

    /* No retention while an apply runs; a keep above the limit. */
    {
        const Cycle c = incremental(8, big, 0);

        id = cycle_identity(&c);
    }
    apply = vr_replica_store_begin(fx->store, &id, &error);
    g_assert_no_error(error);
    g_assert_false(vr_replica_store_retain(fx->store, 0, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY);
    g_clear_error(&error);
    g_clear_pointer(&apply, vr_replica_apply_abort);
    g_assert_false(vr_replica_store_retain(fx->store, 25, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_clear_error(&error);
    assert_only(fx, "5 6 7");

    /* keep=0: the latest alone, an image of its own. */
    retain(fx, 0);
    assert_only(fx, "7");
    assert_point(fx, 7, NULL);

    /* A FULL point after the oldest: the oldest just goes. A smaller resync merged. */
    apply_cycle(fx, &full);
    apply_cycle(fx, &resync);
    assert_only(fx, "7 8 9");
    retain(fx, 1);
    assert_only(fx, "8 9");
    assert_point(fx, 8, NULL);
    assert_point(fx, 9, "rp-8.qcow2");
    retain(fx, 0);
    assert_only(fx, "9");
    assert_point(fx, 9, NULL);
    {
        const Cycle c = { 2, 9, 10, DISK_SIZE, 0, 9, CYCLE_OPS(second_ops) };

        apply_cycle(fx, &c);
    }
    assert_point(fx, 10, "rp-9.qcow2");
    assert_point(fx, 9, NULL);
    assert_chain_valid(fx);
    store_reopen(fx);
    assert_only(fx, "9 10");
}

/* ---- seeding ------------------------------------------------------------------------- */

/* The primary differs from the replica's old copy (model 1) in 4 blocks of 64 KiB. */
static const Op seed_ops[] = {
    { VR_WIRE_RECORD_DATA, 5 * MiB, 64 * 1024 },   /* block 80, zeroes in the copy */
    { VR_WIRE_RECORD_DATA, 21 * MiB, 128 * 1024 }, /* blocks 336 and 337, over data */
    { VR_WIRE_RECORD_ZERO, 61 * MiB, 64 * 1024 },  /* block 976, data in the copy */
};

/*
 * Seeding from an existing copy on the replica: the copy becomes point 1 (a fresh image,
 * the copy untouched); its hash list, compared with the primary block by block, names
 * exactly the 4 blocks that differ; a RESYNC of those blocks makes point 2 equal to the
 * primary. Refusals: a missing file, a format other than raw or qcow2, a store that is not
 * empty; none leaves anything behind.
 */
static void
test_seed(Fixture *fx, gconstpointer data)
{
    const Cycle resync = { 1, 0, 2, DISK_SIZE, VR_WIRE_FLAG_RESYNC, 1, CYCLE_OPS(seed_ops) };
    g_autoptr(GByteArray) old = NULL;
    g_autoptr(GByteArray) stream = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(VrHashlistReader) reader = NULL;
    g_autoptr(GString) differ = g_string_new(NULL);
    g_autofree char *copy = NULL;
    g_autofree char *primary = NULL;
    g_autofree char *copy_before = NULL;
    g_autofree char *copy_after = NULL;
    g_autofree char *list = NULL;
    g_autofree uint8_t *block = g_malloc(VR_HASHLIST_BLOCK_SIZE);
    const VrReplicaPoint *points;
    uint64_t cycle = 0;
    gsize len;
    guint n;
    int fd;

    if (g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);
    /* The old copy (model 1), and the primary now (model 2: the copy plus seed_ops). */
    old = cycle_prepare(fx, &cycle1);
    stream = cycle_prepare(fx, &resync);
    copy = model_path(fx, 1);
    primary = model_path(fx, 2);

    g_assert_false(
        vr_replica_store_seed(fx->store, "/nonexistent/vm1.img", "raw", 1, NULL, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_test_message("%s", error->message);
    g_clear_error(&error);
    g_assert_false(vr_replica_store_seed(fx->store, copy, "vmdk", 1, NULL, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_clear_error(&error);
    list = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(list, ==, "");

    g_assert_true(g_file_get_contents(copy, &copy_before, &len, NULL));
    g_assert_true(vr_replica_store_seed(fx->store, copy, "raw", 1, &cycle, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(cycle, ==, VR_REPLICA_STORE_SEED_CYCLE);
    assert_only(fx, "1");
    assert_point(fx, 1, NULL);
    points = vr_replica_store_points(fx->store, &n);
    g_assert_cmpuint(points[0].flags, ==, VR_WIRE_FLAG_FULL);
    g_assert_true(g_file_get_contents(copy, &copy_after, NULL, NULL));
    g_assert_cmpmem(copy_after, len, copy_before, len);
    g_assert_false(vr_replica_store_seed(fx->store, copy, "raw", 1, NULL, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT);
    g_clear_error(&error);
    assert_only(fx, "1");

    /* The hash comparison the primary makes: exactly the 4 changed blocks differ. */
    g_free(list);
    list = g_build_filename(fx->models, "hashes-1", NULL);
    g_assert_true(vr_replica_hashes_write(fx->store, list, &cycle, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(cycle, ==, 1);
    reader = vr_hashlist_reader_open(list, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(vr_hashlist_reader_get_count(reader), ==, DISK_SIZE / VR_HASHLIST_BLOCK_SIZE);
    fd = open(primary, O_RDONLY | O_CLOEXEC);
    g_assert_no_errno(fd);
    for (uint64_t i = 0; i < vr_hashlist_reader_get_count(reader); i++) {
        uint8_t theirs[VR_HASHLIST_DIGEST_SIZE];
        uint8_t ours[VR_HASHLIST_DIGEST_SIZE];

        g_assert_cmpint(
            pread(fd, block, VR_HASHLIST_BLOCK_SIZE, (off_t)(i * VR_HASHLIST_BLOCK_SIZE)), ==,
            VR_HASHLIST_BLOCK_SIZE);
        vr_hashlist_digest(block, VR_HASHLIST_BLOCK_SIZE, ours);
        g_assert_true(vr_hashlist_reader_get(reader, i, theirs, &error));
        if (memcmp(ours, theirs, sizeof(ours)) != 0)
            g_string_append_printf(differ, "%s%" G_GUINT64_FORMAT, differ->len > 0 ? " " : "", i);
    }
    close(fd);
    g_unlink(list);
    g_assert_cmpstr(differ->str, ==, "80 336 337 976");

    /* The resync of those blocks, on top of the seed. */
    g_assert_true(vr_test_apply_stream(fx->store, stream, &error));
    g_assert_no_error(error);
    assert_only(fx, "1 2");
    assert_point(fx, 2, "rp-1.qcow2");
}

static gpointer
seed_cancel_later(gpointer data)
{
    g_usleep(300 * 1000);
    g_cancellable_cancel(data);
    return NULL;
}

/* A seed of @copy that a thread cancels 300 ms in: cancelled within @max_us, store empty. */
static void
seed_cancelled(Fixture *fx, const char *copy, gint64 max_us)
{
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *list = NULL;
    GThread *thread = g_thread_new("cancel", seed_cancel_later, cancellable);
    gint64 start = g_get_monotonic_time();
    bool ok = vr_replica_store_seed_cycle_cancellable(fx->store, copy, "raw", 1, 5, cancellable,
                                                      NULL, &error);
    gint64 took = g_get_monotonic_time() - start;
    guint n = 1;

    g_thread_join(thread);
    g_assert_false(ok);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    g_test_message("%s (after %" G_GINT64_FORMAT " ms)", error->message, took / 1000);
    g_assert_cmpint(took, <, max_us);
    vr_replica_store_points(fx->store, &n);
    g_assert_cmpuint(n, ==, 0);
    list = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(list, ==, "");
}

/*
 * A seed stopped by its cancellable (the daemon stops during a reverse set-up): cancelled
 * before, nothing runs; while the real qemu-img copies (slowed to 64 KiB/s by its own
 * `convert -r`, which a two-line wrapper first in PATH adds), it is killed within a second
 * and the copy removed; in the window after the copy (failpoint "seed-copied:sleep", in a
 * -Dfailpoints build), the copy is removed too. Each leaves the store empty; then a seed
 * succeeds as cycle 5.
 */
static void
test_seed_cancel(Fixture *fx, gconstpointer data)
{
    g_autoptr(GCancellable) cancelled = g_cancellable_new();
    g_autoptr(GByteArray) old = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *copy = NULL;
    g_autofree char *real = g_find_program_in_path("qemu-img");
    g_autofree char *bin = NULL;
    g_autofree char *wrapper = NULL;
    g_autofree char *script = NULL;
    g_autofree char *path = g_strdup(g_getenv("PATH"));
    g_autofree char *slow_path = NULL;
    g_autofree char *list = NULL;

    if (g_test_failed() || fx->dir == NULL)
        return;
    g_assert_nonnull(real);
    fx->store = store_open(fx);
    old = cycle_prepare(fx, &cycle1);
    copy = model_path(fx, 1);

    g_cancellable_cancel(cancelled);
    g_assert_false(vr_replica_store_seed_cycle_cancellable(fx->store, copy, "raw", 1, 5, cancelled,
                                                           NULL, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    g_clear_error(&error);
    list = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(list, ==, "");

    /* qemu-img killed while it copies 12 MiB of data at 64 KiB/s. */
    bin = g_build_filename(fx->models, "bin", NULL);
    g_assert_no_errno(g_mkdir(bin, 0700));
    wrapper = g_build_filename(bin, "qemu-img", NULL);
    script = g_strdup_printf("#!/bin/sh\n"
                             "[ \"$1\" = convert ] && shift && exec '%s' convert -r 65536 \"$@\"\n"
                             "exec '%s' \"$@\"\n",
                             real, real);
    g_assert_true(
        g_file_set_contents_full(wrapper, script, -1, G_FILE_SET_CONTENTS_NONE, 0700, NULL));
    slow_path = g_strconcat(bin, ":", path, NULL);
    g_setenv("PATH", slow_path, TRUE);
    seed_cancelled(fx, copy, G_USEC_PER_SEC);
    g_setenv("PATH", path, TRUE);

    /* Copied, then cancelled before it is made durable. */
    if (vr_failpoints_built()) {
        g_setenv("VR_FAILPOINT", "seed-copied:sleep", TRUE);
        seed_cancelled(fx, copy, (VR_FAILPOINT_SLEEP_SECONDS + 2) * G_USEC_PER_SEC);
        g_unsetenv("VR_FAILPOINT");
    } else {
        g_test_message("no failpoints in this build: the window after the copy is not tested");
    }

    g_clear_object(&cancelled);
    cancelled = g_cancellable_new();
    g_assert_true(vr_replica_store_seed_cycle_cancellable(fx->store, copy, "raw", 1, 5, cancelled,
                                                          NULL, &error));
    g_assert_no_error(error);
    assert_only(fx, "5");
}

/* ---- spaced retention ---------------------------------------------------------------- */

/*
 * The selection alone: 31 points 5 minutes apart (cycle c published at 300 * (c - 1)),
 * hourly slots; @app lists the APP_CONSISTENT cycles, @kept the expected survivors.
 */
static const struct {
    const char *name;
    guint n;
    guint keep;
    guint interval;
    guint app[3];
    const char *kept;
} select_cases[] = {
    { "count-only", 5, 2, 0, { 0 }, "3 4 5" },
    { "count-keep-0", 5, 0, 0, { 0 }, "5" },
    { "hourly", 31, 4, 3600, { 0 }, "12 24 31" },
    { "hourly-keep-1", 31, 1, 3600, { 0 }, "24 31" },
    { "hourly-keep-0", 31, 0, 3600, { 0 }, "31" },
    { "app-consistent", 31, 4, 3600, { 7 }, "7 24 31" },
    { "app-in-latest-slot", 31, 4, 3600, { 7, 28 }, "7 24 28 31" },
    { "latest-app", 31, 4, 3600, { 28, 31 }, "12 24 31" },
    { "half-hourly", 31, 24, 1800, { 0 }, "6 12 18 24 30 31" },
    { "one-slot", 11, 4, 3600, { 0 }, "11" },
};

static void
test_retain_select(void)
{
    for (guint c = 0; c < G_N_ELEMENTS(select_cases); c++) {
        g_autoptr(GString) kept = g_string_new(NULL);
        VrReplicaPoint points[31] = { 0 };
        bool remove[31];
        guint n = select_cases[c].n;

        for (guint i = 0; i < n; i++) {
            points[i].cycle = i + 1;
            points[i].published = 300 * (int64_t)i;
            for (guint a = 0; a < G_N_ELEMENTS(select_cases[c].app); a++) {
                if (select_cases[c].app[a] == i + 1)
                    points[i].flags |= VR_WIRE_FLAG_APP_CONSISTENT;
            }
        }
        vr_replica_retention_select(points, n, select_cases[c].keep, select_cases[c].interval,
                                    remove);
        for (guint i = 0; i < n; i++) {
            if (!remove[i])
                g_string_append_printf(kept, "%s%" G_GUINT64_FORMAT, kept->len > 0 ? " " : "",
                                       points[i].cycle);
        }
        g_test_message("%s: %s", select_cases[c].name, kept->str);
        g_assert_cmpstr(kept->str, ==, select_cases[c].kept);
    }
}

/* Cycles 1 (FULL) to @last, each on the one before; @app_cycle is APP_CONSISTENT. */
static void
apply_chain(Fixture *fx, uint64_t last, uint64_t app_cycle)
{
    Cycle first = cycle1;

    if (app_cycle == 1)
        first.flags |= VR_WIRE_FLAG_APP_CONSISTENT;
    apply_cycle(fx, &first);
    for (uint64_t target = 2; target <= last; target++) {
        Cycle c = incremental(target, DISK_SIZE, (guint)target);

        if (target == app_cycle)
            c.flags |= VR_WIRE_FLAG_APP_CONSISTENT;
        apply_cycle(fx, &c);
    }
}

/*
 * Spaced retention on a real store removes points from the middle of a chain: cycle 2 is
 * application-consistent, all six are in the same hour, so 1 merges into 2 and 3, 4, 5
 * merge into the points after them; 2 and 6 stay, each equal to its model.
 */
static void
test_retain_spaced(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree bool *remove = NULL;
    g_autoptr(GString) expected = g_string_new(NULL);
    const VrReplicaPoint *points;
    guint n;

    if (g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);
    apply_chain(fx, 6, 2);
    /* What the selection says, from the real publication times (an hour boundary may fall
     * between two applies: the expected list comes from the same rule). */
    points = vr_replica_store_points(fx->store, &n);
    remove = g_new0(bool, n);
    vr_replica_retention_select(points, n, 4, 3600, remove);
    for (guint i = 0; i < n; i++) {
        if (!remove[i])
            g_string_append_printf(expected, "%s%" G_GUINT64_FORMAT, expected->len > 0 ? " " : "",
                                   points[i].cycle);
    }
    if (points[0].published / 3600 == points[n - 1].published / 3600)
        g_assert_cmpstr(expected->str, ==, "2 6");

    g_assert_true(vr_replica_store_retain_spaced(fx->store, 4, 3600, &error));
    g_assert_no_error(error);
    assert_only(fx, expected->str);
    points = vr_replica_store_points(fx->store, &n);
    for (guint i = 0; i < n; i++) {
        g_autofree char *backing =
            i == 0 ? NULL : g_strdup_printf("rp-%" G_GUINT64_FORMAT ".qcow2", points[i - 1].cycle);

        assert_point(fx, points[i].cycle, backing);
    }
    assert_chain_valid(fx);
    store_reopen(fx);
    assert_only(fx, expected->str);
    /* Nothing more to remove; the next cycle applies on top. */
    g_assert_true(vr_replica_store_retain_spaced(fx->store, 4, 3600, &error));
    assert_only(fx, expected->str);
    {
        const Cycle c7 = incremental(7, DISK_SIZE, 7);

        apply_cycle(fx, &c7);
        assert_point(fx, 7, "rp-6.qcow2");
    }
}

/*
 * A crash inside a merge in the middle of a chain: points 1 (application-consistent), 2,
 * 3, 4 in one hour; spaced retention merges 2 into 3 first. Killed after the commit, the
 * reopened store finishes the merge: 1 3 4, each equal to its model, 3 on 1.
 */
static void
test_retain_spaced_crash(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    const VrReplicaPoint *points;
    guint n;

    if (skip_without_failpoints() || g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);
    apply_chain(fx, 4, 1);
    points = vr_replica_store_points(fx->store, &n);
    if (points[0].published / 3600 != points[n - 1].published / 3600) {
        g_test_skip("an hour began between the applies; the selection differs");
        return;
    }
    g_clear_pointer(&fx->store, vr_replica_store_free);

    crash_at(fx, "retain-commit:kill", crash_retain_spaced, NULL);

    vr_test_assert_no_process("qemu-nbd", fx->dir);
    fx->store = store_open(fx);
    assert_only(fx, "1 3 4");
    assert_point(fx, 1, NULL);
    assert_point(fx, 3, "rp-1.qcow2");
    assert_point(fx, 4, "rp-3.qcow2");
    assert_chain_valid(fx);
    g_assert_true(vr_replica_store_retain_spaced(fx->store, 4, 3600, &error));
    g_assert_no_error(error);
    assert_only(fx, "1 4");
    assert_point(fx, 4, "rp-1.qcow2");
}

/* Every persistence step of retention, in order: merging 1 into 2, then dropping 3. */
static const struct {
    const char *failpoint;
    const char *after_crash; /* the points listed on reopening */
} retain_crashes[] = {
    { "retain-intent-tmp", "1 2 3 4" }, { "retain-intent", "2 3 4" },
    { "retain-commit", "2 3 4" },       { "retain-swap", "2 3 4" },
    { "retain-done-tmp", "2 3 4" },     { "retain-done", "2 3 4" },
    { "retain-drop-tmp", "3 4" },       { "retain-drop", "4" },
};

static void
test_retain_crash(Fixture *fx, gconstpointer data)
{
    guint index = GPOINTER_TO_UINT(data);
    const char *expected = retain_crashes[index].after_crash;
    const Cycle cycle4 = { 1, 0, 4, DISK_SIZE, VR_WIRE_FLAG_FULL, 0, CYCLE_OPS(full_ops) };
    const Cycle cycle5 = { 1, 4, 5, DISK_SIZE, 0, 4, CYCLE_OPS(second_ops) };
    g_auto(GStrv) cycles = g_strsplit(expected, " ", -1);
    char spec[64]; /* on the stack: the child leaves by _exit(), nothing is freed */

    if (skip_without_failpoints() || g_test_failed() || fx->dir == NULL)
        return;
    /* A real SIGKILL here (the apply crashes exit with a status instead). */
    g_snprintf(spec, sizeof(spec), "%s:kill", retain_crashes[index].failpoint);
    /* 3 overlays 2 overlays 1; 4 is a new chain. */
    setup_two_points(fx);
    apply_cycle(fx, &cycle3);
    apply_cycle(fx, &cycle4);
    g_clear_pointer(&fx->store, vr_replica_store_free);

    crash_at(fx, spec, crash_retain, NULL);

    /* Reopening finishes an interrupted merge; every listed point reads as its cycle. */
    fx->store = store_open(fx);
    assert_only(fx, expected);
    for (guint i = 0; cycles[i] != NULL; i++) {
        uint64_t cycle = g_ascii_strtoull(cycles[i], NULL, 10);
        g_autofree char *backing = g_strdup_printf("rp-%" G_GUINT64_FORMAT ".qcow2", cycle - 1);

        assert_point(fx, cycle, i == 0 || cycle == 4 ? NULL : backing);
    }
    assert_chain_valid(fx);
    retain(fx, 0);
    assert_only(fx, "4");
    assert_point(fx, 4, NULL);
    apply_cycle(fx, &cycle5);
    assert_point(fx, 5, "rp-4.qcow2");
}

/* A point's digest and chain members (any 64 lower-case hexadecimal digits parse). */
#define HEX32   "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define UPPER32 "00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff"
#define DIGESTS "\"digest\": \"" HEX32 "\", \"chain\": \"" HEX32 "\""

static const struct {
    const char *name;
    const char *text;
    const char *message;
} corrupt_cases[] = {
    { "garbage", "this is not a manifest", "not JSON" },
    { "truncated", "{\"version\": 1, \"points\": [", "not JSON: the text ends too soon" },
    { "trailing", "{\"version\": 1, \"points\": []} {}", "text after the JSON object" },
    { "not-object", "[]", "not a JSON object" },
    { "version", "{\"version\": 2, \"points\": []}", "version 2 is not supported" },
    { "unknown-member", "{\"version\": 1, \"points\": [], \"retention\": 4}",
      "unknown member 'retention'" },
    { "no-points", "{\"version\": 1}", "no array of points" },
    { "missing-file",
      "{\"version\": 1, \"points\": [{\"cycle\": 9, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"rp-9.qcow2\", \"published\": 1, " DIGESTS "}]}",
      "point 0 (cycle 9) names 'rp-9.qcow2', which is missing" },
    { "duplicate",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"rp-1.qcow2\", \"published\": 1, " DIGESTS
      "}, {\"cycle\": 1, \"epoch\": 1, "
      "\"virtual_size\": 1048576, \"flags\": 0, \"image\": \"rp-1.qcow2\", \"published\": "
      "1, " DIGESTS "}]}",
      "cycle 1 is listed twice" },
    { "unsorted",
      "{\"version\": 1, \"points\": [{\"cycle\": 2, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"rp-2.qcow2\", \"published\": 1, " DIGESTS
      "}, {\"cycle\": 1, \"epoch\": 1, "
      "\"virtual_size\": 1048576, \"flags\": 0, \"image\": \"rp-1.qcow2\", \"published\": "
      "1, " DIGESTS "}]}",
      "cycle 1 follows cycle 2" },
    { "epoch",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 2, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"rp-1.qcow2\", \"published\": 1, " DIGESTS
      "}, {\"cycle\": 2, \"epoch\": 1, "
      "\"virtual_size\": 1048576, \"flags\": 0, \"image\": \"rp-2.qcow2\", \"published\": "
      "1, " DIGESTS "}]}",
      "cycle 2 has epoch 1, below epoch 2 of cycle 1" },
    { "image-name",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"../rp-2.qcow2\", \"published\": 1, " DIGESTS "}]}",
      "names image '../rp-2.qcow2', not 'rp-1.qcow2'" },
    { "flags",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 3, \"image\": \"rp-1.qcow2\", \"published\": 1, " DIGESTS "}]}",
      "point 0 (cycle 1) has no valid flags" },
    { "size",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 1, \"virtual_size\": \"1M\", "
      "\"flags\": 1, \"image\": \"rp-1.qcow2\", \"published\": 1, " DIGESTS "}]}",
      "point 0 (cycle 1) has no virtual size" },
    { "no-digest",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"rp-1.qcow2\", \"published\": 1}]}",
      "point 0 (cycle 1) has no digest and chain" },
    { "digest-upper-case",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"rp-1.qcow2\", \"published\": 1, \"digest\": \"" HEX32 "\", "
      "\"chain\": \"" UPPER32 "\"}]}",
      "point 0 (cycle 1) has no digest and chain" },
    { "point-member",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"rp-1.qcow2\", \"published\": 1, " DIGESTS ", \"base\": 0}]}",
      "point 0 has an unknown member 'base'" },
    { "merging-cycles",
      "{\"version\": 1, \"points\": [{\"cycle\": 2, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 0, \"image\": \"rp-2.qcow2\", \"published\": 1, " DIGESTS "}], "
      "\"merging\": {\"from\": 2, \"into\": 2}}",
      "merging needs a cycle 'from' above 0" },
    { "merging-not-listed",
      "{\"version\": 1, \"points\": [{\"cycle\": 2, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 0, \"image\": \"rp-2.qcow2\", \"published\": 1, " DIGESTS "}], "
      "\"merging\": {\"from\": 1, \"into\": 7}}",
      "merging into cycle 7, which is not listed" },
    { "merging-not-between",
      "{\"version\": 1, \"points\": [{\"cycle\": 1, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 1, \"image\": \"rp-1.qcow2\", \"published\": 1, " DIGESTS "}, "
      "{\"cycle\": 7, \"epoch\": 1, \"virtual_size\": 1048576, \"flags\": 0, "
      "\"image\": \"rp-7.qcow2\", \"published\": 1, " DIGESTS "}], "
      "\"merging\": {\"from\": 1, \"into\": 7}}",
      "merging cycle 1, which is not between cycle 1 and cycle 7" },
    { "merging-member",
      "{\"version\": 1, \"points\": [{\"cycle\": 2, \"epoch\": 1, \"virtual_size\": 1048576, "
      "\"flags\": 0, \"image\": \"rp-2.qcow2\", \"published\": 1, " DIGESTS "}], "
      "\"merging\": {\"from\": 1, \"into\": 2, \"step\": 1}}",
      "merging has an unknown member 'step'" },
};

static void
write_file(const char *dir, const char *name, const char *text)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = g_build_filename(dir, name, NULL);

    g_file_set_contents(path, text, -1, &error);
    g_assert_no_error(error);
}

/* A corrupt manifest fails open() naming the problem, and removes nothing. */
static void
test_corrupt(Fixture *fx, gconstpointer data)
{
    g_autofree char *listing = NULL;

    if (g_test_failed() || fx->dir == NULL)
        return;
    /* Files that a sweep would remove, were the manifest trusted. */
    write_file(fx->dir, "rp-1.qcow2", "");
    write_file(fx->dir, "rp-2.qcow2", "");
    write_file(fx->dir, "rp-7.qcow2", "");
    write_file(fx->dir, "manifest.json.tmp", "{}");
    for (guint i = 0; i < G_N_ELEMENTS(corrupt_cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *after = NULL;
        g_autofree char *text = NULL;

        g_test_message("case '%s'", corrupt_cases[i].name);
        write_file(fx->dir, "manifest.json", corrupt_cases[i].text);
        if (listing == NULL)
            listing = vr_test_list_dir(fx->dir);
        g_assert_null(vr_replica_store_open(fx->dir, &error));
        g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CORRUPT);
        g_test_message("  %s", error->message);
        g_assert_nonnull(strstr(error->message, fx->dir));
        g_assert_nonnull(strstr(error->message, corrupt_cases[i].message));
        after = vr_test_list_dir(fx->dir);
        g_assert_cmpstr(after, ==, listing);
        text = read_manifest(fx);
        g_assert_cmpstr(text, ==, corrupt_cases[i].text);
    }
}

/*
 * open() removes exactly what an interrupted apply leaves (and kills its qemu-nbd), nothing
 * else, whatever the name looks like.
 */
static void
test_sweep(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *listing = NULL;
    g_autofree char *orphan_image = g_build_filename(fx->dir, "rp-9.qcow2", NULL);
    g_autofree char *orphan_socket = NULL;
    g_autofree char *socket_arg = NULL;
    g_autofree char *pid_arg = NULL;
    g_autofree char *own_pid = g_strdup_printf("%d\n", (int)getpid());
    GPid orphan = 0;
    int status = 0;

    if (g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);
    apply_cycle(fx, &cycle1);
    g_clear_pointer(&fx->store, vr_replica_store_free);

    /* An apply of cycle 9 whose owner died without its parent-death signal. */
    orphan_socket = g_build_filename(fx->dir, ".apply-9.sock", NULL);
    socket_arg = g_strdup_printf("--socket=%s", orphan_socket);
    pid_arg = g_strdup_printf("--pid-file=%s/.apply-9.pid", fx->dir);
    vr_test_qcow2_create(orphan_image, "1M");
    {
        const char *argv[] = { "qemu-nbd",   socket_arg,   pid_arg, "--format=qcow2",
                               "--shared=1", orphan_image, NULL };
        g_autofree char *pid_file = g_build_filename(fx->dir, ".apply-9.pid", NULL);
        gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

        g_spawn_async(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD,
                      NULL, NULL, &orphan, &error);
        g_assert_no_error(error);
        g_autofree char *expected = g_strdup_printf("%d\n", (int)orphan);

        /* qemu-nbd writes its pid once it serves; the file exists a moment before that. */
        for (;;) {
            g_autofree char *text = NULL;

            if (g_file_get_contents(pid_file, &text, NULL, NULL) && strcmp(text, expected) == 0)
                break;
            g_assert_cmpint(g_get_monotonic_time(), <, deadline);
            g_usleep(10 * 1000);
        }
        g_assert_cmpuint(vr_test_count_processes("qemu-nbd", fx->dir), ==, 1);
    }
    /* Leftovers, and lookalikes that are not ours to remove. */
    write_file(fx->dir, "manifest.json.tmp", "{}");
    write_file(fx->dir, "rp-5.qcow2", "");
    write_file(fx->dir, ".apply-5.sock", "");
    write_file(fx->dir, ".apply-5.pid", own_pid); /* names this test: never killed */
    write_file(fx->dir, "rp-05.qcow2", "");
    write_file(fx->dir, "rp-x.qcow2", "");
    write_file(fx->dir, "rp-5.qcow2.bak", "");
    write_file(fx->dir, "notes.txt", "");

    fx->store = store_open(fx);
    g_assert_cmpint(waitpid(orphan, &status, 0), ==, orphan);
    g_assert_true(WIFSIGNALED(status));
    g_assert_cmpint(WTERMSIG(status), ==, SIGKILL);
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==,
                    "manifest.json notes.txt rp-05.qcow2 rp-1.qcow2 rp-5.qcow2.bak rp-x.qcow2");
    assert_cycles(fx, "1");
    assert_point(fx, 1, NULL);
}

/*
 * The store of @fx on a 24 MiB tmpfs of a private mount namespace (this process is a forked
 * child: the namespace dies with it): the big cycle runs out of space. Its exit status: 0,
 * or 77 when it cannot mount; assertions abort it.
 */
static int
no_space_child(Fixture *fx, GByteArray *first, GByteArray *big, GByteArray *retry)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *listing = NULL;

    /* Type "none": ignored for a propagation change, and never a NULL string. */
    if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", fx->dir, "tmpfs", 0, "size=24m") < 0) {
        g_printerr("child: cannot mount a tmpfs: %s\n", g_strerror(errno));
        return 77;
    }
    fx->store = store_open(fx);
    g_assert_true(vr_test_apply_stream(fx->store, first, &error));
    g_assert_no_error(error);
    g_assert_false(vr_test_apply_stream(fx->store, big, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_NO_SPACE);
    g_printerr("child: refused: %s\n", error->message);
    g_assert_nonnull(strstr(error->message, "rp-2.qcow2"));
    g_clear_error(&error);
    /* Nothing published is damaged, nothing is left. */
    assert_cycles(fx, "1");
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==, "manifest.json rp-1.qcow2");
    assert_point(fx, 1, NULL);
    vr_test_assert_no_process("qemu-nbd", fx->dir);
    /* Space is back (the failed image went): a cycle that fits applies. */
    g_assert_true(vr_test_apply_stream(fx->store, retry, &error));
    g_assert_no_error(error);
    assert_point(fx, 2, "rp-1.qcow2");
    g_clear_pointer(&fx->store, vr_replica_store_free);
    return 0;
}

/* ENOSPC while applying; also the page-cache path where tmpfs has no O_DIRECT. */
static void
test_no_space(Fixture *fx, gconstpointer data)
{
    static const Op small_ops[] = {
        { VR_WIRE_RECORD_DATA, 0, 4 * MiB },
    };
    static const Op big_ops[] = {
        { VR_WIRE_RECORD_DATA, 4 * MiB, 4 * MiB },  { VR_WIRE_RECORD_DATA, 8 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 12 * MiB, 4 * MiB }, { VR_WIRE_RECORD_DATA, 16 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 20 * MiB, 4 * MiB }, { VR_WIRE_RECORD_DATA, 24 * MiB, 4 * MiB },
        { VR_WIRE_RECORD_DATA, 28 * MiB, 4 * MiB }, { VR_WIRE_RECORD_DATA, 32 * MiB, 4 * MiB },
    };
    const Cycle first = { 1, 0, 1, DISK_SIZE, VR_WIRE_FLAG_FULL, 0, CYCLE_OPS(small_ops) };
    const Cycle big = { 1, 1, 2, DISK_SIZE, 0, 1, CYCLE_OPS(big_ops) };
    const Cycle retry = { 1, 1, 2, DISK_SIZE, 0, 1, CYCLE_OPS(small_ops) };
    GByteArray *first_stream;
    GByteArray *big_stream;
    GByteArray *retry_stream;
    int status = 0;
    pid_t child;

    if (g_test_failed() || fx->dir == NULL)
        return;
    if (geteuid() != 0) {
        g_test_skip("mounting a small tmpfs needs root");
        return;
    }
    first_stream = cycle_prepare(fx, &first);
    big_stream = cycle_prepare(fx, &big);
    retry_stream = cycle_prepare(fx, &retry); /* model-2.raw: the retried cycle */

    fflush(stdout);
    fflush(stderr);
    child = fork();
    g_assert_no_errno(child);
    if (child == 0) {
        int rc = no_space_child(fx, first_stream, big_stream, retry_stream);

        g_byte_array_unref(first_stream);
        g_byte_array_unref(big_stream);
        g_byte_array_unref(retry_stream);
        fixture_teardown(fx, data);
        _exit(rc);
    }
    g_byte_array_unref(first_stream);
    g_byte_array_unref(big_stream);
    g_byte_array_unref(retry_stream);
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    g_assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        g_test_skip("cannot mount a tmpfs in a private mount namespace");
        return;
    }
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

/*
 * Import of an exported stream file (offline transport): published when it verifies whole;
 * a truncated or damaged file publishes nothing and leaves nothing behind.
 */
static void
test_import(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GByteArray) stream = NULL;
    g_autofree char *file = NULL;
    g_autofree char *listing = NULL;
    uint64_t target = 0;

    if (g_test_failed() || fx->dir == NULL)
        return;
    fx->store = store_open(fx);
    stream = cycle_prepare(fx, &cycle1);
    file = g_build_filename(fx->models, "export.vrw", NULL);

    /* cut short: the decoder never sees END */
    g_assert_true(g_file_set_contents(file, (const char *)stream->data, stream->len / 2, NULL));
    g_assert_false(vr_replica_store_import(fx->store, file, &target, &error));
    g_test_message("truncated: %s", error->message);
    g_assert_nonnull(strstr(error->message, "export.vrw"));
    g_clear_error(&error);
    /* one byte of the last record's checksum flipped */
    stream->data[stream->len - 40] ^= 0x10;
    g_assert_true(g_file_set_contents(file, (const char *)stream->data, stream->len, NULL));
    g_assert_false(vr_replica_store_import(fx->store, file, &target, &error));
    g_test_message("damaged: %s", error->message);
    g_clear_error(&error);
    stream->data[stream->len - 40] ^= 0x10;
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==, "");

    /* whole: published, equal to the model */
    g_assert_true(g_file_set_contents(file, (const char *)stream->data, stream->len, NULL));
    g_assert_true(vr_replica_store_import(fx->store, file, &target, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(target, ==, 1);
    assert_point(fx, 1, NULL);
    /* and replication goes on from it */
    apply_cycle(fx, &cycle2);
    assert_point(fx, 2, "rp-1.qcow2");
}

/* ---- adoption of an overlay (failback with reverse replication) ---------------------- */

#define ADOPT_OVERLAY "failover.qcow2"

/*
 * ADOPT_OVERLAY in the store, as a failover leaves it: an overlay of rp-2.qcow2 (by its
 * relative name) that a domain wrote 1 MiB of 0x5a into at 5 MiB; model-@cycle.raw is model
 * 2 with the same write. (transfer full: the overlay's path)
 */
static char *
make_overlay(Fixture *fx, uint64_t cycle)
{
    char *overlay = g_build_filename(fx->dir, ADOPT_OVERLAY, NULL);
    g_autofree char *model = model_path(fx, cycle);
    g_autofree char *from = model_path(fx, 2);
    const char *create[] = { "qemu-img", "create", "-q",         "-f",    "qcow2", "-F",
                             "qcow2",    "-b",     "rp-2.qcow2", overlay, NULL };
    const char *write[] = {
        "qemu-io", "-f", "qcow2", "-c", "write -q -P 0x5a 5M 1M", overlay, NULL
    };
    const char *copy[] = { "cp", "--sparse=always", from, model, NULL };
    const char *write_model[] = { "qemu-io", "-f", "raw", "-c", "write -q -P 0x5a 5M 1M",
                                  model,     NULL };

    g_free(vr_test_run(create));
    g_free(vr_test_run(write));
    g_free(vr_test_run(copy));
    g_free(vr_test_run(write_model));
    return overlay;
}

static void
test_adopt(Fixture *fx, gconstpointer data)
{
    const Cycle cycle8 = { 2, 7, 8, DISK_SIZE, 0, 7, CYCLE_OPS(third_ops) };
    g_autoptr(GError) error = NULL;
    g_autofree char *overlay = NULL;
    g_autofree char *image = NULL;
    g_autofree char *listing = NULL;
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
    uint8_t chain[VR_REPLICA_CHAIN_SIZE];
    const VrReplicaPoint *points;
    GStatBuf before, after;
    guint n;

    if (g_test_failed() || fx->dir == NULL || vr_test_skip_without("qemu-io"))
        return;
    setup_two_points(fx);
    apply_cycle(fx, &cycle3); /* after the overlay's base: it goes */
    overlay = make_overlay(fx, 7);

    /* Refused, nothing changed: not after the base; not an overlay of a point. */
    g_assert_false(vr_replica_store_adopt(fx->store, ADOPT_OVERLAY, 2, 2, NULL, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT);
    g_clear_error(&error);
    g_assert_false(vr_replica_store_adopt(fx->store, "rp-1.qcow2", 2, 9, NULL, &error));
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT);
    g_clear_error(&error);
    assert_cycles(fx, "1 2 3");
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==, "failover.qcow2 manifest.json rp-1.qcow2 rp-2.qcow2 rp-3.qcow2");
    g_clear_pointer(&listing, g_free);

    memset(digest, 0xab, sizeof(digest));
    g_assert_no_errno(g_stat(overlay, &before));
    g_assert_true(vr_replica_store_adopt(fx->store, ADOPT_OVERLAY, 2, 7, digest, &error));
    g_assert_no_error(error);
    /* Point 3 went (it was after the base); the overlay is point 7: the same file. */
    assert_only(fx, "1 2 7");
    image = vr_replica_store_image_path(fx->store, 7);
    g_assert_no_errno(g_stat(image, &after));
    g_assert_cmpuint(after.st_ino, ==, before.st_ino);
    g_assert_cmpuint(after.st_mode & 07777, ==, 0600);
    assert_point(fx, 7, "rp-2.qcow2");
    assert_point(fx, 2, "rp-1.qcow2");
    points = vr_replica_store_points(fx->store, &n);
    g_assert_cmpuint(points[2].epoch, ==, 2);
    g_assert_cmpmem(points[2].digest, sizeof(digest), digest, sizeof(digest));
    vr_replica_point_chain(points[1].chain, digest, chain);
    g_assert_cmpmem(points[2].chain, sizeof(chain), chain, sizeof(chain));
    /* Done already: nothing more (the failback's retry). */
    g_assert_true(vr_replica_store_adopt(fx->store, ADOPT_OVERLAY, 2, 7, digest, &error));
    g_assert_no_error(error);

    /* It stays across an open, the next cycle applies on it, retention merges it. */
    store_reopen(fx);
    assert_only(fx, "1 2 7");
    apply_cycle(fx, &cycle8);
    assert_point(fx, 8, "rp-7.qcow2");
    retain(fx, 0);
    assert_only(fx, "8");
    assert_point(fx, 8, NULL);
    assert_chain_valid(fx);
    listing = vr_test_list_dir(fx->dir);
    g_test_message("after retention: %s", listing);
}

static bool
crash_adopt(VrReplicaStore *store, gpointer data, GError **error)
{
    return vr_replica_store_adopt(store, ADOPT_OVERLAY, 2, 7, NULL, error);
}

/* Every persistence step of an adoption, in order. */
static const char *const adopt_failpoints[] = { "adopt-link", "adopt-tmp", "adopt",
                                                "adopt-unlink" };

static void
test_adopt_crash(Fixture *fx, gconstpointer data)
{
    const char *failpoint = data;
    bool published = strcmp(failpoint, "adopt") == 0 || strcmp(failpoint, "adopt-unlink") == 0;
    g_autoptr(GError) error = NULL;
    g_autofree char *overlay = NULL;
    g_autofree char *model = NULL;
    g_autofree char *listing = NULL;
    char spec[64];

    if (skip_without_failpoints() || g_test_failed() || fx->dir == NULL ||
        vr_test_skip_without("qemu-io"))
        return;
    g_snprintf(spec, sizeof(spec), "%s:exit", failpoint);
    setup_two_points(fx);
    overlay = make_overlay(fx, 7);
    model = model_path(fx, 7);
    g_clear_pointer(&fx->store, vr_replica_store_free);

    crash_at(fx, spec, crash_adopt, NULL);

    /* The old state (the overlay whole, no point 7) or the new one (point 7 listed). */
    fx->store = store_open(fx);
    assert_cycles(fx, published ? "1 2 7" : "1 2");
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==,
                    published ? "failover.qcow2 manifest.json rp-1.qcow2 rp-2.qcow2 rp-7.qcow2"
                              : "failover.qcow2 manifest.json rp-1.qcow2 rp-2.qcow2");
    {
        const char *argv[] = { "qemu-img", "compare", "-f",  "qcow2", "-F",
                               "raw",      overlay,   model, NULL };

        g_free(vr_test_run(argv));
    }
    /* The adoption asked again: made, or finished. */
    g_assert_true(vr_replica_store_adopt(fx->store, ADOPT_OVERLAY, 2, 7, NULL, &error));
    g_assert_no_error(error);
    assert_only(fx, "1 2 7");
    assert_point(fx, 7, "rp-2.qcow2");
    store_reopen(fx);
    assert_only(fx, "1 2 7");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* The child of a crash test must not inherit an armed failpoint from the caller. */
    g_unsetenv("VR_FAILPOINT");

#define ADD(path, func, data) g_test_add(path, Fixture, data, fixture_setup, func, fixture_teardown)
    ADD("/replica-store/chain", test_chain, NULL);
    ADD("/replica-store/abort", test_abort, NULL);
    ADD("/replica-store/conflict", test_conflict, NULL);
    ADD("/replica-store/resize", test_resize, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(failpoints); i++) {
        g_autofree char *path = g_strdup_printf("/replica-store/crash/%s", failpoints[i]);

        ADD(path, test_crash, failpoints[i]);
    }
    ADD("/replica-store/retain", test_retain, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(retain_crashes); i++) {
        g_autofree char *path =
            g_strdup_printf("/replica-store/retain-crash/%s", retain_crashes[i].failpoint);

        ADD(path, test_retain_crash, GUINT_TO_POINTER(i));
    }
    ADD("/replica-store/seed", test_seed, NULL);
    ADD("/replica-store/seed-cancel", test_seed_cancel, NULL);
    g_test_add_func("/replica-store/retain-select", test_retain_select);
    ADD("/replica-store/retain-spaced", test_retain_spaced, NULL);
    ADD("/replica-store/retain-spaced-crash", test_retain_spaced_crash, NULL);
    ADD("/replica-store/corrupt", test_corrupt, NULL);
    ADD("/replica-store/sweep", test_sweep, NULL);
    ADD("/replica-store/no-space", test_no_space, NULL);
    ADD("/replica-store/import", test_import, NULL);
    ADD("/replica-store/adopt", test_adopt, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(adopt_failpoints); i++) {
        g_autofree char *path =
            g_strdup_printf("/replica-store/adopt-crash/%s", adopt_failpoints[i]);

        ADD(path, test_adopt_crash, (gpointer)adopt_failpoints[i]);
    }
#undef ADD

    return g_test_run();
}
