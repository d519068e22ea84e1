/*
 * test-crash-loop.c: kill -9 at random moments of apply, publish and retention
 *
 * The replica's crash oracle (reliability checklist, O1 and O2) over seeded, reproducible
 * iterations. Each iteration makes cycle k of a 64 MiB disk (random DATA and ZERO extents,
 * now and then a larger virtual size) and its raw model; a forked child opens the store,
 * applies the stream and runs retention (the latest plus --keep points), as the replica
 * sink does after each cycle; the parent sends it SIGKILL after a random delay drawn from
 * the seed (between 0 and 1.5 times the last uninterrupted iteration), unless it finished.
 * Its qemu-nbd and qemu-img die with it (PR_SET_PDEATHSIG). Then, as a restarted daemon:
 *
 *   O1  the store opens (finishing a merge the kill interrupted), its latest point is k-1
 *       or k (k when the child finished), every listed point equals the model of its
 *       cycle byte for byte (qemu-img compare), and the directory holds exactly the
 *       manifest and the listed images: one complete recovery point, nothing half-made;
 *   O2  when k is not published, the same stream is applied again without a kill and the
 *       latest point equals the primary (model k); retention then runs to completion.
 *
 * The suite runs a short loop (--iterations 10 by default here); tests/crash-loop.sh runs a
 * long one. Options (before GLib's test options):
 *
 *   --seed N         the seed (default: random; printed, so a failure can be replayed)
 *   --iterations N   iterations (default 10)
 *   --keep N         additional recovery points kept by retention (default 2)
 *
 * A replay with the same seed makes the same cycles and the same delays; where a delay
 * lands depends on the machine's speed, so the outcome of one iteration may differ.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "vr-replica-store.h"
#include "vr-test-store.h"
#include "vr-test-util.h"

#define KiB         1024
#define MiB         (1024 * KiB)
#define BLOCK       (64 * KiB)
#define DISK_SIZE   (64 * MiB)
#define GRANULARITY BLOCK

static guint64 opt_seed;
static gint opt_iterations = 10;
static gint opt_keep = 2;

static const uint8_t uuid[16] = { 0x5e, 0xed };

typedef struct {
    char *dir;       /* the store */
    char *models;    /* model-<cycle>.raw of every listed point and of the cycle in flight */
    GRand *rand;     /* cycles and delays: everything the seed decides */
    uint64_t latest; /* the latest published cycle, 0 before the first */
    uint8_t chain[VR_REPLICA_CHAIN_SIZE]; /* the chain the latest point must have */
    uint64_t size;                        /* the virtual size of the latest cycle */
    gint64 clean_us;                      /* how long the last iteration that was not killed took */
    guint killed_before_publish;
    guint killed_after_publish;
    guint finished;
} Loop;

static char *
model_path(Loop *loop, uint64_t cycle)
{
    g_autofree char *name = g_strdup_printf("model-%" G_GUINT64_FORMAT ".raw", cycle);

    return g_build_filename(loop->models, name, NULL);
}

/*
 * The stream of cycle @target and its model: a copy of the latest model with random
 * extents written or zeroed (in offset order, as a stream carries them). (transfer full)
 */
static GByteArray *
make_cycle(Loop *loop, uint64_t target)
{
    g_autofree char *model = model_path(loop, target);
    g_autoptr(GArray) ops = g_array_new(FALSE, FALSE, sizeof(VrTestOp));
    VrWireIdentity id = { 0 };
    uint64_t size = loop->size;
    uint64_t offset = 0;

    /* One cycle in eight grows the disk by 1 to 4 MiB (resize before apply). */
    if (target > 1 && g_rand_int_range(loop->rand, 0, 8) == 0)
        size += (uint64_t)g_rand_int_range(loop->rand, 1, 5) * MiB;
    g_unlink(model);
    if (target > 1) {
        g_autofree char *from = model_path(loop, loop->latest);
        const char *argv[] = { "cp", "--sparse=always", from, model, NULL };

        g_free(vr_test_run(argv));
    }
    /* A full cycle writes a quarter of the disk; an incremental one about 1 %. */
    while (offset < size) {
        guint gap = g_rand_int_range(loop->rand, 0, target == 1 ? 8 : 200);
        uint64_t length = (uint64_t)g_rand_int_range(loop->rand, 1, 17) * BLOCK;
        VrTestOp op = { 0 };

        offset += (uint64_t)gap * BLOCK;
        if (offset >= size)
            break;
        op.offset = offset;
        op.length = MIN(length, size - offset); /* MIN() evaluates each argument twice */
        op.type =
            g_rand_int_range(loop->rand, 0, 10) == 0 ? VR_WIRE_RECORD_ZERO : VR_WIRE_RECORD_DATA;
        g_array_append_val(ops, op);
        offset += op.length;
    }

    id.kind = VR_WIRE_KIND_CYCLE;
    g_strlcpy(id.relationship, "r1", sizeof(id.relationship));
    memcpy(id.domain_uuid, uuid, sizeof(uuid));
    g_strlcpy(id.disk, "vda", sizeof(id.disk));
    id.epoch = 1;
    id.base_cycle = loop->latest;
    id.target_cycle = target;
    id.virtual_size = size;
    id.granularity = GRANULARITY;
    id.flags = target == 1 ? VR_WIRE_FLAG_FULL : 0;
    return vr_test_encode_cycle(&id, (const VrTestOp *)ops->data, ops->len, loop->rand, model);
}

/* Apply @stream and run retention, as the replica sink does for one cycle. */
static bool
apply_and_retain(VrReplicaStore *store, GByteArray *stream, GError **error)
{
    return vr_test_apply_stream(store, stream, error) &&
           vr_replica_store_retain(store, (guint)opt_keep, error);
}

/*
 * In a child: open the store, apply, retain. Killed after @delay_us unless it finished
 * first. Returns true when it was killed.
 */
static bool
run_child(Loop *loop, GByteArray *stream, gint64 delay_us)
{
    gint64 deadline = g_get_monotonic_time() + delay_us;
    int status = 0;
    pid_t child;
    pid_t done;

    fflush(stdout);
    fflush(stderr);
    child = fork();
    g_assert_no_errno(child);
    if (child == 0) {
        GError *err = NULL;
        VrReplicaStore *store = vr_replica_store_open(loop->dir, &err);

        if (store == NULL || !apply_and_retain(store, stream, &err)) {
            g_printerr("child: %s\n", err->message);
            _exit(1);
        }
        vr_replica_store_free(store);
        _exit(0);
    }
    for (;;) {
        done = waitpid(child, &status, WNOHANG);
        g_assert_no_errno(done);
        if (done == child || g_get_monotonic_time() >= deadline)
            break;
        g_usleep(MIN(1000, MAX(deadline - g_get_monotonic_time(), 1)));
    }
    if (done != child) {
        g_assert_no_errno(kill(child, SIGKILL));
        g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    }
    /*
     * Its qemu-nbd or qemu-img (or one forked and not yet exec'd, which still holds the
     * store's lock) get SIGKILL from PR_SET_PDEATHSIG, and come to us, the subreaper: a
     * restarted daemon starts once its predecessor's processes are gone (systemd kills the
     * whole control group), so wait for them.
     */
    while (waitpid(-1, NULL, 0) > 0)
        ;
    g_assert_cmpint(errno, ==, ECHILD);
    /* Killed, or finished: never a failure of its own. */
    if (WIFSIGNALED(status)) {
        g_assert_cmpint(WTERMSIG(status), ==, SIGKILL);
        return true;
    }
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    return false;
}

static int
compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The listed points; each equals its model, and the directory holds nothing else. */
static uint64_t
check_store(Loop *loop, VrReplicaStore *store, uint64_t expect_min, uint64_t expect_max)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autofree char *listing = NULL;
    g_autofree char *expected = NULL;
    const VrReplicaPoint *points;
    uint64_t latest;
    guint n;

    points = vr_replica_store_points(store, &n);
    g_assert_cmpuint(n, >, 0);
    latest = points[n - 1].cycle;
    g_assert_cmpuint(latest, >=, expect_min);
    g_assert_cmpuint(latest, <=, expect_max);
    g_ptr_array_add(names, g_strdup("manifest.json"));
    for (guint i = 0; i < n; i++) {
        g_autofree char *image = vr_replica_store_image_path(store, points[i].cycle);
        g_autofree char *model = model_path(loop, points[i].cycle);
        const char *argv[] = { "qemu-img", "compare", "-q",  "-f",  "qcow2",
                               "-F",       "raw",     image, model, NULL };
        GStatBuf st;

        /* The model exists (a point of a cycle this loop made) and has its size. */
        g_assert_no_errno(g_stat(model, &st));
        g_assert_cmpuint(points[i].virtual_size, ==, (uint64_t)st.st_size);
        g_free(vr_test_run(argv));
        g_ptr_array_add(names, g_path_get_basename(image));
    }
    g_ptr_array_sort(names, compare_names);
    g_ptr_array_add(names, NULL);
    expected = g_strjoinv(" ", (char **)names->pdata);
    listing = vr_test_list_dir(loop->dir);
    g_assert_cmpstr(listing, ==, expected);
    return latest;
}

/* @point keeps its stream's digest and extends the chain of the point before it. */
static void
check_chain(Loop *loop, const VrReplicaPoint *point, GByteArray *stream)
{
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
    uint8_t chain[VR_REPLICA_CHAIN_SIZE];

    vr_test_stream_digest(stream, digest);
    g_assert_cmpmem(point->digest, sizeof(digest), digest, sizeof(digest));
    vr_replica_point_chain(point->flags & VR_WIRE_FLAG_FULL ? NULL : loop->chain, digest, chain);
    g_assert_cmpmem(point->chain, sizeof(chain), chain, sizeof(chain));
    memcpy(loop->chain, chain, sizeof(chain));
}

/* The models of cycles older than the oldest listed point go. */
static void
prune_models(Loop *loop, VrReplicaStore *store)
{
    const VrReplicaPoint *points;
    guint n;

    points = vr_replica_store_points(store, &n);
    for (uint64_t cycle = 1; cycle < points[0].cycle; cycle++) {
        g_autofree char *model = model_path(loop, cycle);

        g_unlink(model);
    }
}

static void
iteration(Loop *loop, guint index)
{
    uint64_t target = loop->latest + 1;
    g_autoptr(GByteArray) stream = make_cycle(loop, target);
    g_autoptr(VrReplicaStore) store = NULL;
    g_autoptr(GError) error = NULL;
    /* The first iteration is never killed: it measures how long one takes. */
    gint64 window = loop->clean_us * 3 / 2;
    gint64 delay = index == 0 ? G_MAXINT64 / 2 : (gint64)g_rand_double_range(loop->rand, 0, window);
    gint64 start = g_get_monotonic_time();
    bool killed = run_child(loop, stream, delay);
    const VrReplicaPoint *points;
    uint64_t latest;
    guint n;

    if (!killed)
        loop->clean_us = g_get_monotonic_time() - start;

    /* O1: a restarted replica holds complete points only, and the latest is k-1 or k. */
    store = vr_replica_store_open(loop->dir, &error);
    g_assert_no_error(error);
    latest = check_store(loop, store, killed ? loop->latest : target, target);
    if (!killed)
        loop->finished++;
    else if (latest == target)
        loop->killed_after_publish++;
    else
        loop->killed_before_publish++;
    if (killed)
        g_test_message("iteration %u: cycle %" G_GUINT64_FORMAT " (%u stream bytes) killed after "
                       "%.1f ms; latest point %" G_GUINT64_FORMAT,
                       index, target, stream->len, delay / 1000.0, latest);
    else
        g_test_message("iteration %u: cycle %" G_GUINT64_FORMAT " (%u stream bytes) finished in "
                       "%.1f ms",
                       index, target, stream->len, loop->clean_us / 1000.0);

    /* O2: one clean cycle later the replica equals the primary. */
    start = g_get_monotonic_time();
    if (latest != target) {
        g_assert_true(vr_test_apply_stream(store, stream, &error));
        g_assert_no_error(error);
    }
    g_assert_true(vr_replica_store_retain(store, (guint)opt_keep, &error));
    g_assert_no_error(error);
    /* An uninterrupted apply and retention: how long the next child may need (the chain
     * and the merges grow as the loop goes on). */
    if (latest != target)
        loop->clean_us = g_get_monotonic_time() - start;
    check_store(loop, store, target, target);
    points = vr_replica_store_points(store, &n);
    g_assert_cmpuint(n, <=, (guint)opt_keep + 1);
    check_chain(loop, &points[n - 1], stream);
    loop->latest = target;
    loop->size = points[n - 1].virtual_size;
    prune_models(loop, store);
}

static void
test_kill9(void)
{
    g_autofree char *base = NULL;
    Loop loop = { 0 };

    if (vr_test_skip_without("qemu-img") || vr_test_skip_without("qemu-nbd"))
        return;
    base = vr_test_path("crash-loop");
    loop.dir = g_build_filename(base, "store", NULL);
    loop.models = g_build_filename(base, "models", NULL);
    g_assert_no_errno(g_mkdir_with_parents(loop.dir, 0755));
    g_assert_no_errno(g_mkdir_with_parents(loop.models, 0755));
    loop.rand = g_rand_new_with_seed((guint32)opt_seed);
    /* Orphans of a killed child are ours to reap (run_child()). */
    g_assert_no_errno(prctl(PR_SET_CHILD_SUBREAPER, 1));
    loop.size = DISK_SIZE;
    g_test_message("seed %" G_GUINT64_FORMAT
                   ", %d iterations, keep %d (replay: --seed %" G_GUINT64_FORMAT ")",
                   opt_seed, opt_iterations, opt_keep, opt_seed);

    for (gint i = 0; i < opt_iterations && !g_test_failed(); i++)
        iteration(&loop, (guint)i);

    g_test_message("%u killed before publishing, %u killed after publishing, %u finished",
                   loop.killed_before_publish, loop.killed_after_publish, loop.finished);
    g_rand_free(loop.rand);
    g_free(loop.dir);
    g_free(loop.models);
}

int
main(int argc, char **argv)
{
    g_autoptr(GOptionContext) context =
        g_option_context_new("- kill -9 loop over the replica store");
    g_autoptr(GError) error = NULL;
    GOptionEntry entries[] = {
        { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, "seed (default: random)", "N" },
        { "iterations", 0, 0, G_OPTION_ARG_INT, &opt_iterations, "iterations (10)", "N" },
        { "keep", 0, 0, G_OPTION_ARG_INT, &opt_keep, "additional recovery points (2)", "N" },
        { NULL },
    };

    opt_seed = g_random_int();
    g_option_context_add_main_entries(context, entries, NULL);
    g_option_context_set_ignore_unknown_options(context, TRUE);
    g_option_context_set_help_enabled(context, FALSE);
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        g_printerr("%s\n", error->message);
        return 2;
    }
    if (opt_iterations < 1 || opt_keep < 0 || opt_keep > VR_REPLICA_STORE_KEEP_MAX) {
        g_printerr("--iterations must be positive and --keep 0..%d\n", VR_REPLICA_STORE_KEEP_MAX);
        return 2;
    }
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/crash-loop/kill9", test_kill9);
    return g_test_run();
}
