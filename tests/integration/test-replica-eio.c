/*
 * test-replica-eio.c: I/O errors beneath the replica store, injected with QEMU's blkdebug
 * driver into the real qemu-nbd and qemu-img
 *
 * There is no device-mapper (dm-error, dm-flakey) and no nbdkit here, so the errors come
 * from blkdebug: qemu-blkdebug.sh, put first in PATH as `qemu-nbd` and `qemu-img`, puts a
 * blkdebug node beneath one image when VR_TEST_BLKDEBUG_IMAGE names it (see the script).
 * The store runs exactly as in production otherwise. Every cycle goes into a raw model file
 * too, as in test-replica-store.c, and "equals its model" means qemu-img compare.
 *
 * After each injected failure: the error is the store's FAILED naming the I/O error (a hash
 * list's read may only see the connection drop: test_hashes_read()), nothing is published
 * (manifest byte for byte, directory listing, also after reopening), no qemu-nbd is left,
 * every published point still equals its model; then, with the injection off, the same work
 * succeeds. The wrapper logs each rewrite, so a test knows that blkdebug was in place.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "vr-qmp-json.h"
#include "vr-replica-hashes.h"
#include "vr-replica-store.h"
#include "vr-test-store.h"
#include "vr-test-util.h"
#include "vr-wire.h"

#define MiB         (1024 * 1024)
#define DISK_SIZE   (64 * MiB)
#define GRANULARITY 65536

/* blkdebug rules (qapi BlkdebugInjectErrorOptions, BlkdebugSetStateOptions; errno 5 is
 * EIO). write_aio and read_aio fire when qcow2 writes or reads guest data in its own file,
 * flush_to_disk when the qcow2 node is flushed (an NBD flush), just before its file is. */
#define RULES_DATA_WRITE \
    "\"inject-error\":[{\"event\":\"write_aio\",\"iotype\":\"write\",\"errno\":5,\"once\":true}]"
#define RULES_FLUSH                                                                    \
    "\"inject-error\":[{\"event\":\"flush_to_disk\",\"iotype\":\"flush\",\"errno\":5," \
    "\"once\":true}]"
#define RULES_DATA_READ \
    "\"inject-error\":[{\"event\":\"read_aio\",\"iotype\":\"read\",\"errno\":5}]"
/* The second data read fails, and every one after it: the first has gone through. */
#define RULES_SECOND_READ                                                   \
    "\"set-state\":[{\"event\":\"read_aio\",\"state\":1,\"new_state\":2}]," \
    "\"inject-error\":[{\"event\":\"read_aio\",\"state\":2,\"iotype\":\"read\",\"errno\":5}]"

static const uint8_t uuid[16] = { 0x3e, 0x10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 };

/* The wrappers are first in PATH (main()); false when qemu-img or qemu-nbd is missing. */
static bool wrapped;

typedef VrTestOp Op;

typedef struct {
    uint64_t base; /* the identity's base cycle: 0 for FULL */
    uint64_t target;
    uint32_t flags;
    uint64_t model_base; /* the point the model starts from */
    const Op *ops;
    guint n_ops;
} Cycle;

#define CYCLE_OPS(ops) (ops), G_N_ELEMENTS(ops)

typedef struct {
    char *dir;    /* the store */
    char *models; /* model-<cycle>.raw, the hash lists and the wrapper's log: outside */
    char *log;    /* the wrapper's log of the rewrites it made */
    GRand *rand;
    VrReplicaStore *store;
} Fixture;

/* ---- blkdebug ----------------------------------------------------------------------- */

/* Put blkdebug with @rules beneath the image named @image, from the next qemu-nbd or
 * qemu-img commit of it on. */
static void
inject(Fixture *fx, const char *image, const char *rules)
{
    g_unlink(fx->log);
    g_setenv("VR_TEST_BLKDEBUG_IMAGE", image, TRUE);
    g_setenv("VR_TEST_BLKDEBUG_RULES", rules, TRUE);
    g_setenv("VR_TEST_BLKDEBUG_LOG", fx->log, TRUE);
}

static void
inject_off(void)
{
    g_unsetenv("VR_TEST_BLKDEBUG_IMAGE");
    g_unsetenv("VR_TEST_BLKDEBUG_RULES");
    g_unsetenv("VR_TEST_BLKDEBUG_LOG");
}

/* The wrapper ran with blkdebug exactly as @expected says ("TOOL IMAGE" lines). */
static void
assert_injected(Fixture *fx, const char *expected)
{
    g_autofree char *text = NULL;

    g_assert_true(g_file_get_contents(fx->log, &text, NULL, NULL));
    g_assert_cmpstr(text, ==, expected);
}

/*
 * `qemu-nbd` and `qemu-img` first in PATH: exec qemu-blkdebug.sh with the real binary
 * (found now, before PATH changes). Run by bash, so the script needs no executable bit.
 */
static void
setup_wrappers(void)
{
    static const char *const tools[] = { "qemu-nbd", "qemu-img" };
    g_autofree char *script = g_test_build_filename(G_TEST_DIST, "qemu-blkdebug.sh", NULL);
    g_autofree char *quoted_script = g_shell_quote(script);
    g_autofree char *bin = vr_test_path("bin");
    g_autofree char *path = NULL;

    for (guint i = 0; i < G_N_ELEMENTS(tools); i++) {
        g_autofree char *real = g_find_program_in_path(tools[i]);

        if (real == NULL)
            return;
    }
    g_assert_true(g_file_test(script, G_FILE_TEST_IS_REGULAR));
    g_assert_no_errno(g_mkdir_with_parents(bin, 0755));
    for (guint i = 0; i < G_N_ELEMENTS(tools); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *real = g_find_program_in_path(tools[i]);
        g_autofree char *quoted_real = g_shell_quote(real);
        g_autofree char *file = g_build_filename(bin, tools[i], NULL);
        g_autofree char *text =
            g_strdup_printf("#!/bin/sh\nexec bash %s %s \"$@\"\n", quoted_script, quoted_real);

        g_file_set_contents(file, text, -1, &error);
        g_assert_no_error(error);
        g_assert_no_errno(g_chmod(file, 0755));
    }
    path = g_strconcat(bin, ":", g_getenv("PATH"), NULL);
    g_setenv("PATH", path, TRUE);
    wrapped = true;
}

/* ---- fixture and cycles -------------------------------------------------------------- */

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *name = g_strdup_printf("eio%u", serial++);
    g_autofree char *base = NULL;
    guint32 seed = g_test_rand_int();

    if (vr_test_skip_without("qemu-img") || vr_test_skip_without("qemu-nbd"))
        return;
    g_assert_true(wrapped);
    base = vr_test_path(name);
    fx->dir = g_build_filename(base, "store", NULL);
    fx->models = g_build_filename(base, "models", NULL);
    fx->log = g_build_filename(fx->models, "blkdebug.log", NULL);
    g_assert_no_errno(g_mkdir_with_parents(fx->dir, 0755));
    g_assert_no_errno(g_mkdir_with_parents(fx->models, 0755));
    g_test_message("seed %u", seed);
    fx->rand = g_rand_new_with_seed(seed);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    /* A failed test must not leave blkdebug armed for the next one. */
    inject_off();
    g_clear_pointer(&fx->store, vr_replica_store_free);
    g_clear_pointer(&fx->rand, g_rand_free);
    g_free(fx->dir);
    g_free(fx->models);
    g_free(fx->log);
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
    id.epoch = 1;
    id.base_cycle = c->base;
    id.target_cycle = c->target;
    id.virtual_size = DISK_SIZE;
    id.granularity = GRANULARITY;
    id.flags = c->flags;
    return id;
}

/* model-<target>.raw (a copy of the model of the base) and the stream of @c, the same
 * bytes in both. (transfer full) */
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
apply_stream(Fixture *fx, GByteArray *stream)
{
    g_autoptr(GError) error = NULL;

    g_assert_true(vr_test_apply_stream(fx->store, stream, &error));
    g_assert_no_error(error);
}

static void
apply_cycle(Fixture *fx, const Cycle *c)
{
    g_autoptr(GByteArray) stream = cycle_prepare(fx, c);

    apply_stream(fx, stream);
}

/* The exit status of @argv (stdout and stderr dropped). */
static int
run_status(const char *const *argv)
{
    g_autoptr(GError) error = NULL;
    int status = 0;

    g_spawn_sync(NULL, (char **)argv, NULL,
                 G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                 NULL, NULL, NULL, NULL, &status, &error);
    g_assert_no_error(error);
    g_assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* Point @cycle is listed, has its model's size and contents, and the expected backing. */
static void
assert_point(Fixture *fx, uint64_t cycle, const char *backing)
{
    g_autofree char *image = vr_replica_store_image_path(fx->store, cycle);
    g_autofree char *model = model_path(fx, cycle);
    const char *compare[] = {
        "qemu-img", "compare", "-f", "qcow2", "-F", "raw", image, model, NULL
    };
    const char *info_argv[] = { "qemu-img", "info", "--output=json", image, NULL };
    g_autofree char *out = NULL;
    g_autoptr(json_object) info = NULL;
    uint64_t size = 0;

    g_assert_nonnull(image);
    out = vr_test_run(info_argv);
    info = json_tokener_parse(out);
    g_assert_nonnull(info);
    g_assert_true(vr_json_get_uint64(info, "virtual-size", &size));
    g_assert_cmpuint(size, ==, DISK_SIZE);
    g_assert_cmpstr(vr_json_get_string(info, "backing-filename"), ==, backing);
    /* Sizes are equal, so the non-strict compare compares every byte. */
    g_free(vr_test_run(compare));
}

/* qemu-img check finds nothing wrong in any listed image (no leaks either). */
static void
assert_images_clean(Fixture *fx)
{
    const VrReplicaPoint *points;
    guint n;

    points = vr_replica_store_points(fx->store, &n);
    for (guint i = 0; i < n; i++) {
        g_autofree char *image = vr_replica_store_image_path(fx->store, points[i].cycle);
        const char *check[] = { "qemu-img", "check", "-q", "-f", "qcow2", image, NULL };

        g_free(vr_test_run(check));
    }
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

/* The directory holds @listing and the manifest reads @manifest byte for byte. */
static void
assert_unchanged(Fixture *fx, const char *listing, const char *manifest)
{
    g_autofree char *now = vr_test_list_dir(fx->dir);
    g_autofree char *text = read_manifest(fx);

    g_assert_cmpstr(now, ==, listing);
    g_assert_cmpstr(text, ==, manifest);
}

/* The cycles of every test: a full one and two incremental ones, 64 MiB. */
static const Op full_ops[] = {
    { VR_WIRE_RECORD_DATA, 0, MiB },
    { VR_WIRE_RECORD_DATA, MiB + 4096, 70001 },
    { VR_WIRE_RECORD_ZERO, 2 * MiB, 6 * MiB },
    { VR_WIRE_RECORD_DATA, 8 * MiB + 17, 4 * MiB },
    { VR_WIRE_RECORD_DATA, 20 * MiB, 3 * MiB },
    { VR_WIRE_RECORD_DATA, 60 * MiB, 4 * MiB },
};
static const Op second_ops[] = {
    { VR_WIRE_RECORD_ZERO, 0, 512 * 1024 },  { VR_WIRE_RECORD_DATA, 600 * 1024, 100 * 1024 },
    { VR_WIRE_RECORD_DATA, 8 * MiB, 65536 }, { VR_WIRE_RECORD_ZERO, 20 * MiB + 4096, MiB },
    { VR_WIRE_RECORD_DATA, 63 * MiB, MiB },
};
static const Op third_ops[] = {
    { VR_WIRE_RECORD_DATA, 4096, 512 }, /* a partial cluster: qcow2 copies the rest on write */
    { VR_WIRE_RECORD_ZERO, 8 * MiB, 16 * MiB },
    { VR_WIRE_RECORD_DATA, 30 * MiB, 4 * MiB },
    { VR_WIRE_RECORD_DATA, 34 * MiB, 4 * MiB },
};

static const Cycle cycle1 = { 0, 1, VR_WIRE_FLAG_FULL, 0, CYCLE_OPS(full_ops) };
static const Cycle cycle2 = { 1, 2, 0, 1, CYCLE_OPS(second_ops) };
static const Cycle cycle3 = { 2, 3, 0, 2, CYCLE_OPS(third_ops) };
static const Cycle cycle4 = { 3, 4, 0, 3, CYCLE_OPS(second_ops) };

static void
setup_two_points(Fixture *fx)
{
    fx->store = store_open(fx);
    apply_cycle(fx, &cycle1);
    apply_cycle(fx, &cycle2);
    assert_cycles(fx, "1 2");
}

/*
 * Apply @stream as a receiver's sink does and expect it to fail: begin works (qemu-nbd
 * started), then a record or the commit fails. A record that failed fails every later call
 * with the same error: one more record, then the commit. (transfer full)
 */
static GError *
apply_failing(Fixture *fx, GByteArray *stream, bool *in_record)
{
    g_autoptr(VrWireDecoder) decoder = vr_wire_decoder_new();
    VrTestFeed feed = { fx->store, NULL };
    GError *error = NULL;
    bool fed = true;

    for (guint at = 0; fed && at < stream->len; at += MiB) {
        fed = vr_wire_decoder_feed(decoder, stream->data + at, MIN(MiB, stream->len - at),
                                   vr_test_feed_record, &feed, &error);
    }
    g_assert_nonnull(feed.apply);
    *in_record = !fed;
    if (fed) {
        g_assert_true(vr_wire_decoder_finish(decoder, &error));
        g_assert_no_error(error);
        g_assert_false(vr_replica_apply_commit(feed.apply, &error));
        g_assert_nonnull(error);
        g_test_message("the commit failed: %s", error->message);
    } else {
        const VrWireIdentity *id = vr_wire_decoder_get_identity(decoder);
        VrWireRecord more = {
            .index = 99, .type = VR_WIRE_RECORD_ZERO, .offset = 0, .length = 4096, .identity = id
        };
        g_autoptr(GError) again = NULL;

        g_test_message("a record failed: %s", error->message);
        g_assert_false(vr_replica_apply_record(feed.apply, &more, &again));
        g_assert_error(again, error->domain, error->code);
        g_assert_cmpstr(again->message, ==, error->message);
        g_clear_error(&again);
        g_assert_false(vr_replica_apply_commit(feed.apply, &again));
        g_assert_error(again, error->domain, error->code);
        g_assert_cmpstr(again->message, ==, error->message);
    }
    return error;
}

/*
 * An apply of @c (cycle 3) over points 1 2 that fails with blkdebug @rules beneath
 * rp-3.qcow2: nothing published, nothing left, the points intact (also after reopening);
 * without the injection the same stream then applies and equals its model. *@in_record: the
 * failure showed in a record, not only at commit. (transfer full: the error)
 */
static GError *
apply_with_eio(Fixture *fx, const Cycle *c, const char *rules, bool *in_record)
{
    g_autoptr(GByteArray) stream = NULL;
    g_autofree char *manifest = NULL;
    g_autofree char *listing = NULL;
    GError *error;

    setup_two_points(fx);
    manifest = read_manifest(fx);
    listing = vr_test_list_dir(fx->dir);
    stream = cycle_prepare(fx, c);

    inject(fx, "rp-3.qcow2", rules);
    error = apply_failing(fx, stream, in_record);
    assert_injected(fx, "qemu-nbd rp-3.qcow2\n");
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_assert_nonnull(strstr(error->message, "'rp-3.qcow2'"));
    g_assert_nonnull(strstr(error->message, g_strerror(EIO)));

    /* Nothing published, the image and qemu-nbd's files gone, the points as they were. */
    vr_test_assert_no_process("qemu-nbd", fx->dir);
    assert_cycles(fx, "1 2");
    assert_unchanged(fx, listing, manifest);
    assert_point(fx, 1, NULL);
    assert_point(fx, 2, "rp-1.qcow2");
    store_reopen(fx);
    assert_cycles(fx, "1 2");
    assert_unchanged(fx, listing, manifest);

    /* The disk works again: the primary resends the same stream. */
    inject_off();
    apply_stream(fx, stream);
    assert_cycles(fx, "1 2 3");
    assert_point(fx, 3, "rp-2.qcow2");
    assert_point(fx, 2, "rp-1.qcow2");
    assert_point(fx, 1, NULL);
    assert_images_clean(fx);
    vr_test_assert_no_process("qemu-nbd", fx->dir);
    return error;
}

/* ---- tests -------------------------------------------------------------------------- */

/* @error is "cannot write <length> bytes at offset <offset> of 'rp-3.qcow2': <EIO>" for one
 * of the DATA records of @c (which one qemu-nbd writes first is its business). */
static void
assert_names_data_record(const GError *error, const Cycle *c)
{
    bool named = false;

    for (guint i = 0; i < c->n_ops; i++) {
        g_autofree char *expected = NULL;

        if (c->ops[i].type != VR_WIRE_RECORD_DATA)
            continue;
        expected = g_strdup_printf("cannot write %" G_GUINT64_FORMAT
                                   " bytes at offset %" G_GUINT64_FORMAT " of 'rp-3.qcow2': %s",
                                   c->ops[i].length, c->ops[i].offset, g_strerror(EIO));
        if (strcmp(error->message, expected) == 0)
            named = true;
    }
    g_assert_true(named);
}

/*
 * EIO on a data write while cycle 3 is applied. Its four records are all in flight at once
 * (16 requests, 64 MiB may be), so the failed write shows at commit.
 */
static void
test_apply_write_commit(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    bool in_record = true;

    if (g_test_failed() || fx->dir == NULL)
        return;
    error = apply_with_eio(fx, &cycle3, RULES_DATA_WRITE, &in_record);
    g_assert_false(in_record);
    assert_names_data_record(error, &cycle3);
}

/*
 * The same with 48 records of 64 KiB: the store waits for room after 16, so the failed write
 * shows at a record, and the next record and the commit fail with the same error.
 */
static void
test_apply_write_record(Fixture *fx, gconstpointer data)
{
    Op ops[48];
    const Cycle many = { 2, 3, 0, 2, CYCLE_OPS(ops) };
    g_autoptr(GError) error = NULL;
    bool in_record = false;

    if (g_test_failed() || fx->dir == NULL)
        return;
    for (guint i = 0; i < G_N_ELEMENTS(ops); i++)
        ops[i] = (Op){ VR_WIRE_RECORD_DATA, (uint64_t)i * MiB + GRANULARITY, GRANULARITY };
    error = apply_with_eio(fx, &many, RULES_DATA_WRITE, &in_record);
    g_assert_true(in_record);
    assert_names_data_record(error, &many);
}

/* EIO when the image is flushed at commit: every record was written, none is durable. */
static void
test_apply_flush(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    bool in_record = true;

    if (g_test_failed() || fx->dir == NULL)
        return;
    error = apply_with_eio(fx, &cycle3, RULES_FLUSH, &in_record);
    g_assert_false(in_record);
    g_assert_true(g_str_has_prefix(error->message, "cannot flush 'rp-3.qcow2': "));
}

/* No vr-hashes-* directory of a hash list's qemu-nbd is left in the temporary directory. */
static void
assert_no_hashes_tmpdir(void)
{
    g_autoptr(GDir) dir = g_dir_open(g_get_tmp_dir(), 0, NULL);
    const char *name;

    g_assert_nonnull(dir);
    while ((name = g_dir_read_name(dir)) != NULL)
        g_assert_false(g_str_has_prefix(name, "vr-hashes-"));
}

/* EIO reading the latest point for its hash list: no list, the store goes on. */
static void
test_hashes_read(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *reference = g_build_filename(fx->models, "reference.hashes", NULL);
    g_autofree char *list = g_build_filename(fx->models, "list.hashes", NULL);
    g_autofree char *expected = NULL;
    g_autofree char *text = NULL;
    g_autofree char *manifest = NULL;
    g_autofree char *listing = NULL;
    gsize expected_len = 0;
    gsize len = 0;
    uint64_t cycle = 0;

    if (g_test_failed() || fx->dir == NULL)
        return;
    setup_two_points(fx);
    /* The list of point 2 as it reads without errors. */
    g_assert_true(vr_replica_hashes_write(fx->store, reference, &cycle, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(cycle, ==, 2);
    manifest = read_manifest(fx);
    listing = vr_test_list_dir(fx->dir);

    inject(fx, "rp-2.qcow2", RULES_DATA_READ);
    cycle = 0;
    g_assert_false(vr_replica_hashes_write(fx->store, list, &cycle, &error));
    assert_injected(fx, "qemu-nbd rp-2.qcow2\n");
    g_test_message("refused: %s", error->message);
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_assert_true(g_str_has_prefix(error->message, "cannot hash cycle 2: cannot read "));
    g_assert_nonnull(strstr(error->message, "rp-2.qcow2"));
    /* EIO itself: the hash reader reads with the DF flag, without which qemu-nbd 7.2 drops
     * the connection on a failed read inside a sparse structured reply ("not connected"). */
    g_assert_nonnull(strstr(error->message, g_strerror(EIO)));
    g_clear_error(&error);
    g_assert_cmpuint(cycle, ==, 0);
    g_assert_false(g_file_test(list, G_FILE_TEST_EXISTS));
    assert_no_hashes_tmpdir();
    vr_test_assert_no_process("qemu-nbd", fx->dir);
    assert_unchanged(fx, listing, manifest);
    assert_point(fx, 2, "rp-1.qcow2");

    /* Without the injection: the same list, and the store applies the next cycle. */
    inject_off();
    g_assert_true(vr_replica_hashes_write(fx->store, list, &cycle, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(cycle, ==, 2);
    g_assert_true(g_file_get_contents(reference, &expected, &expected_len, NULL));
    g_assert_true(g_file_get_contents(list, &text, &len, NULL));
    g_assert_cmpmem(text, len, expected, expected_len);
    apply_cycle(fx, &cycle3);
    assert_point(fx, 3, "rp-2.qcow2");
    vr_test_assert_no_process("qemu-nbd", fx->dir);
}

/* The manifest records the merge of cycle @from into cycle @into (0 0: none). */
static void
assert_merging(Fixture *fx, uint64_t from, uint64_t into)
{
    g_autofree char *text = read_manifest(fx);
    g_autoptr(json_object) manifest = json_tokener_parse(text);
    json_object *merging = NULL;
    uint64_t value = 0;

    g_assert_nonnull(manifest);
    if (from == 0) {
        g_assert_false(json_object_object_get_ex(manifest, "merging", NULL));
        return;
    }
    g_assert_true(json_object_object_get_ex(manifest, "merging", &merging));
    g_assert_true(vr_json_get_uint64(merging, "from", &value));
    g_assert_cmpuint(value, ==, from);
    g_assert_true(vr_json_get_uint64(merging, "into", &value));
    g_assert_cmpuint(value, ==, into);
}

/*
 * retain(1) over three points (@from, @into and the next) with EIO under qemu-img commit of
 * @into into @from: the merge stays recorded, every listed point reads as its cycle.
 *
 * The error is on the second data read of @into's image, once the first chunk was written
 * into @from's: blkdebug cannot go beneath the base that qemu-img commit writes, as QEMU 7.2
 * refuses a json: top whose "backing" has a blkdebug "file" (it passes the header's backing
 * name as well: "Can't specify 'file' and 'filename' options at the same time").
 */
static void
retain_with_eio(Fixture *fx, uint64_t from, uint64_t into)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *into_name = g_strdup_printf("rp-%" G_GUINT64_FORMAT ".qcow2", into);
    g_autofree char *from_name = g_strdup_printf("rp-%" G_GUINT64_FORMAT ".qcow2", from);
    g_autofree char *from_image = g_build_filename(fx->dir, from_name, NULL);
    g_autofree char *from_model = model_path(fx, from);
    g_autofree char *logged = g_strdup_printf("qemu-img %s\n", into_name);
    g_autofree char *what = g_strdup_printf(
        "cannot merge cycle %" G_GUINT64_FORMAT " into cycle %" G_GUINT64_FORMAT, from, into);
    g_autofree char *cycles =
        g_strdup_printf("%" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, into, into + 1);
    g_autofree char *listing = NULL;
    g_autofree char *expected = NULL;
    const char *compare[] = { "qemu-img", "compare",  "-f",       "qcow2", "-F",
                              "raw",      from_image, from_model, NULL };

    inject(fx, into_name, RULES_SECOND_READ);
    g_assert_false(vr_replica_store_retain(fx->store, 1, &error));
    assert_injected(fx, logged);
    g_test_message("refused: %s", error->message);
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_assert_true(g_str_has_prefix(error->message, what));
    g_assert_nonnull(strstr(error->message, "failed to commit"));
    g_assert_nonnull(strstr(error->message, g_strerror(EIO)));

    /* The oldest point is unlisted (the merge's commit point was passed) and its image,
     * already partly written with the next cycle's data, stays for the merge. */
    g_assert_cmpint(run_status(compare), ==, 1);
    assert_cycles(fx, cycles);
    assert_merging(fx, from, into);
    listing = vr_test_list_dir(fx->dir);
    expected = g_strdup_printf("manifest.json rp-%" G_GUINT64_FORMAT ".qcow2 rp-%" G_GUINT64_FORMAT
                               ".qcow2 rp-%" G_GUINT64_FORMAT ".qcow2",
                               from, into, into + 1);
    g_assert_cmpstr(listing, ==, expected);
    for (uint64_t c = into; c <= into + 1; c++) {
        g_autofree char *backing = g_strdup_printf("rp-%" G_GUINT64_FORMAT ".qcow2", c - 1);

        assert_point(fx, c, backing);
    }
}

/* EIO under retention's qemu-img commit: the merge is finished by retain() or by open(). */
static void
test_retain_commit(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *listing = NULL;

    if (g_test_failed() || fx->dir == NULL)
        return;
    setup_two_points(fx);
    apply_cycle(fx, &cycle3);

    /* Merging 1 into 2 fails; the next retain() without errors finishes it. */
    retain_with_eio(fx, 1, 2);
    inject_off();
    g_assert_true(vr_replica_store_retain(fx->store, 1, &error));
    g_assert_no_error(error);
    assert_cycles(fx, "2 3");
    assert_merging(fx, 0, 0);
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==, "manifest.json rp-2.qcow2 rp-3.qcow2");
    g_clear_pointer(&listing, g_free);
    assert_point(fx, 2, NULL);
    assert_point(fx, 3, "rp-2.qcow2");
    assert_images_clean(fx);

    /* Merging 2 into 3 fails; open() finishes it, but not while the errors go on. */
    apply_cycle(fx, &cycle4);
    retain_with_eio(fx, 2, 3);
    g_clear_pointer(&fx->store, vr_replica_store_free);
    g_assert_null(vr_replica_store_open(fx->dir, &error));
    g_test_message("open refused: %s", error->message);
    g_assert_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED);
    g_assert_true(g_str_has_prefix(error->message, "cannot merge cycle 2 into cycle 3"));
    g_assert_nonnull(strstr(error->message, g_strerror(EIO)));
    g_clear_error(&error);
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==, "manifest.json rp-2.qcow2 rp-3.qcow2 rp-4.qcow2");
    g_clear_pointer(&listing, g_free);
    inject_off();
    fx->store = store_open(fx);
    assert_cycles(fx, "3 4");
    assert_merging(fx, 0, 0);
    listing = vr_test_list_dir(fx->dir);
    g_assert_cmpstr(listing, ==, "manifest.json rp-3.qcow2 rp-4.qcow2");
    assert_point(fx, 3, NULL);
    assert_point(fx, 4, "rp-3.qcow2");
    assert_images_clean(fx);
    g_assert_true(vr_replica_store_retain(fx->store, 1, &error));
    g_assert_no_error(error);
    assert_cycles(fx, "3 4");
}

int
main(int argc, char **argv)
{
    const char *scratch = g_getenv("VR_TEST_TMPDIR");

    /* A temporary directory of our own under the wrapper, before GLib caches it: the hash
     * list's qemu-nbd puts its socket there, and the test checks that it goes. */
    if (scratch != NULL) {
        g_autofree char *tmp = g_build_filename(scratch, "tmp", NULL);

        g_assert_no_errno(g_mkdir_with_parents(tmp, 0700));
        g_setenv("TMPDIR", tmp, TRUE);
    }
    g_test_init(&argc, &argv, NULL);
    inject_off();
    setup_wrappers();

#define ADD(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/replica-eio/apply/write-commit", test_apply_write_commit);
    ADD("/replica-eio/apply/write-record", test_apply_write_record);
    ADD("/replica-eio/apply/flush", test_apply_flush);
    ADD("/replica-eio/hashes/read", test_hashes_read);
    ADD("/replica-eio/retain/commit", test_retain_commit);
#undef ADD

    return g_test_run();
}
