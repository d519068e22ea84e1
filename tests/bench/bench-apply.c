/*
 * bench-apply.c: time the replica store applying a delta, and nbdcopy writing the same
 * extents into a plain qcow2
 *
 *   bench-apply --workdir DIR [--size BYTES] [--extents N] [--seed S]
 *
 * A store in DIR/store gets a FULL cycle (one 64 KiB record: the base point), then the
 * timed incremental cycle: N distinct random 64 KiB extents of random (incompressible)
 * bytes at random offsets of a disk of --size (default 8 GiB; N 16384 = 1 GiB), from
 * vr_replica_store_begin() (qemu-img create of the overlay, qemu-nbd start) to a returned
 * vr_replica_apply_commit() (flush, qemu-nbd stop, fsyncs, manifest rename). The records are
 * made one at a time inside the timed loop (xorshift bytes, as cheap as a receiver handing
 * them over), so the apply's time includes making them.
 *
 * The peer, in the same run: the same extents in a sparse raw file, copied by nbdcopy into
 * a fresh qcow2 of the same size exported by qemu-nbd with the store's options
 * (--cache=none --aio=native), with --flush and --destination-is-zero (it is fresh):
 * nbdcopy skips the holes, so it writes exactly those extents. Timed from nbdcopy's start
 * (it starts qemu-nbd) to its exit. The page cache is dropped before the apply when the
 * kernel lets us; nbdcopy's source file stays cached, as the apply's records come from
 * memory. Output: key=value lines; tests/bench/apply runs this and prints the ratio.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "vr-replica-store.h"
#include "vr-wire.h"

#define EXTENT 65536

static char *opt_workdir;
static gint64 opt_size = 8ll << 30;
static gint opt_extents = 16384;
static gint opt_seed = 1;

static GOptionEntry options[] = {
    { "workdir", 0, 0, G_OPTION_ARG_FILENAME, &opt_workdir, "scratch directory", "DIR" },
    { "size", 0, 0, G_OPTION_ARG_INT64, &opt_size, "virtual disk size", "BYTES" },
    { "extents", 0, 0, G_OPTION_ARG_INT, &opt_extents, "64 KiB extents in the delta", "N" },
    { "seed", 0, 0, G_OPTION_ARG_INT, &opt_seed, "random seed", "S" },
    { NULL },
};

static G_NORETURN void
die(const char *what, const GError *error)
{
    fprintf(stderr, "bench-apply: %s: %s\n", what, error != NULL ? error->message : "failed");
    exit(1);
}

/* Extent @i's bytes: cheap incompressible data (xorshift), the same in both runs. */
static void
fill(uint8_t *buf, uint64_t i)
{
    uint64_t x = 0x9e3779b97f4a7c15ull * (i + 1) + (uint64_t)opt_seed;

    for (size_t k = 0; k < EXTENT; k += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(buf + k, &x, 8);
    }
}

static int
compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* @n distinct extent offsets, sorted (a stream's records go forward). */
static uint64_t *
pick_offsets(guint n)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed((guint32)opt_seed);
    g_autoptr(GHashTable) taken = g_hash_table_new(g_int64_hash, g_int64_equal);
    uint64_t slots = (uint64_t)opt_size / EXTENT;
    uint64_t *offsets = g_new(uint64_t, n);

    /* slot 0 holds the base point's record */
    for (guint i = 0; i < n;) {
        gint64 slot = 1 + (gint64)(g_rand_double(rand) * (double)(slots - 1));

        if (g_hash_table_contains(taken, &slot))
            continue;
        offsets[i] = (uint64_t)slot * EXTENT;
        g_hash_table_add(taken, g_memdup2(&slot, sizeof(slot)));
        i++;
    }
    qsort(offsets, n, sizeof(*offsets), compare_u64);
    return offsets;
}

static void
drop_caches(void)
{
    int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);

    sync();
    if (fd >= 0) {
        if (write(fd, "3", 1) != 1)
            fprintf(stderr, "bench-apply: cannot drop the page cache\n");
        close(fd);
    }
}

static void
apply_record(VrReplicaApply *apply, VrWireRecordType type, uint64_t offset, const uint8_t *data)
{
    g_autoptr(GError) error = NULL;
    VrWireRecord record = {
        .type = type,
        .offset = offset,
        .length = EXTENT,
        .data = data,
        .data_size = data != NULL ? EXTENT : 0,
    };

    if (!vr_replica_apply_record(apply, &record, &error))
        die("apply", error);
}

static VrReplicaApply *
begin(VrReplicaStore *store, uint64_t base, uint64_t target, uint32_t flags)
{
    g_autoptr(GError) error = NULL;
    VrWireIdentity identity = { 0 };
    VrReplicaApply *apply;

    identity.kind = VR_WIRE_KIND_CYCLE;
    g_strlcpy(identity.relationship, "bench", sizeof(identity.relationship));
    g_strlcpy(identity.disk, "vda", sizeof(identity.disk));
    identity.epoch = 1;
    identity.base_cycle = base;
    identity.target_cycle = target;
    identity.virtual_size = (uint64_t)opt_size;
    identity.granularity = EXTENT;
    identity.flags = flags;
    apply = vr_replica_store_begin(store, &identity, &error);
    if (apply == NULL)
        die("begin", error);
    return apply;
}

static void
commit(VrReplicaApply *apply)
{
    static const uint8_t digest[VR_WIRE_DIGEST_SIZE] = { 0xbe, 0x9c };
    g_autoptr(GError) error = NULL;
    VrWireRecord end = { 0 };

    /* The stream's END (its digest is the store's to keep): an apply publishes only after it. */
    end.type = VR_WIRE_RECORD_END;
    end.data = digest;
    end.data_size = sizeof(digest);
    if (!vr_replica_apply_record(apply, &end, &error))
        die("end", error);
    if (!vr_replica_apply_commit(apply, &error))
        die("commit", error);
}

int
main(int argc, char **argv)
{
    g_autoptr(GOptionContext) context = g_option_context_new("- time an apply against nbdcopy");
    g_autoptr(GError) error = NULL;
    g_autoptr(VrReplicaStore) store = NULL;
    g_autofree char *store_dir = NULL;
    g_autofree char *raw = NULL;
    g_autofree char *qcow2 = NULL;
    g_autofree char *size_arg = NULL;
    g_autofree uint64_t *offsets = NULL;
    g_autofree uint8_t *buf = g_malloc(EXTENT);
    VrReplicaApply *apply;
    gint64 start;
    double apply_s, nbdcopy_s;
    int status = 0;
    int fd;

    g_option_context_add_main_entries(context, options, NULL);
    if (!g_option_context_parse(context, &argc, &argv, &error))
        die("options", error);
    if (opt_workdir == NULL || opt_extents <= 0 || opt_size % EXTENT != 0 ||
        (uint64_t)opt_extents >= (uint64_t)opt_size / EXTENT)
        die("options", NULL);
    offsets = pick_offsets((guint)opt_extents);

    store_dir = g_build_filename(opt_workdir, "store", NULL);
    if (g_mkdir_with_parents(store_dir, 0700) < 0)
        die(store_dir, NULL);
    store = vr_replica_store_open(store_dir, &error);
    if (store == NULL)
        die("open", error);
    /* the base point */
    fill(buf, G_MAXUINT32);
    apply = begin(store, 0, 1, VR_WIRE_FLAG_FULL);
    apply_record(apply, VR_WIRE_RECORD_DATA, 0, buf);
    commit(apply);

    /* the timed apply */
    drop_caches();
    start = g_get_monotonic_time();
    apply = begin(store, 1, 2, 0);
    for (gint i = 0; i < opt_extents; i++) {
        fill(buf, (uint64_t)i);
        apply_record(apply, VR_WIRE_RECORD_DATA, offsets[i], buf);
    }
    commit(apply);
    apply_s = (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC;

    /* the peer: the same extents in a sparse raw file, nbdcopy into a fresh qcow2 */
    raw = g_build_filename(opt_workdir, "extents.raw", NULL);
    qcow2 = g_build_filename(opt_workdir, "nbdcopy.qcow2", NULL);
    fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, opt_size) < 0)
        die(raw, NULL);
    for (gint i = 0; i < opt_extents; i++) {
        fill(buf, (uint64_t)i);
        if (pwrite(fd, buf, EXTENT, (off_t)offsets[i]) != EXTENT)
            die(raw, NULL);
    }
    close(fd);
    size_arg = g_strdup_printf("%" G_GINT64_FORMAT, opt_size);
    {
        const char *create[] = { "qemu-img", "create", "-q", "-f", "qcow2", qcow2, size_arg, NULL };

        if (!g_spawn_sync(NULL, (char **)create, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                          &status, &error) ||
            !g_spawn_check_wait_status(status, &error))
            die("qemu-img create", error);
    }
    /* its source stays in the page cache (the apply's records come from memory too) */
    sync();
    {
        const char *copy[] = { "nbdcopy",
                               "--destination-is-zero",
                               "--flush",
                               "--",
                               raw,
                               "[",
                               "qemu-nbd",
                               "-f",
                               "qcow2",
                               "--cache=none",
                               "--aio=native",
                               "--discard=unmap",
                               qcow2,
                               "]",
                               NULL };

        start = g_get_monotonic_time();
        if (!g_spawn_sync(NULL, (char **)copy, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                          &status, &error) ||
            !g_spawn_check_wait_status(status, &error))
            die("nbdcopy", error);
        nbdcopy_s = (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC;
    }

    printf("extents=%d\n", opt_extents);
    printf("data_bytes=%" G_GUINT64_FORMAT "\n", (uint64_t)opt_extents * EXTENT);
    printf("disk_bytes=%" G_GINT64_FORMAT "\n", opt_size);
    printf("apply_seconds=%.3f\n", apply_s);
    printf("nbdcopy_seconds=%.3f\n", nbdcopy_s);
    return 0;
}
