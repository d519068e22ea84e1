/*
 * vr-replica-hashes.h: the hash list of the latest recovery point of a disk, on the replica
 *
 * For a resync (vr-hashlist.h): the SHA-256 of every 64 KiB block of the store's latest
 * published point, written in block order without loading the disk into memory. The image
 * is read through a qemu-nbd of its own (--read-only, on a socket in a private temporary
 * directory, killed with the calling thread like the store's: PR_SET_PDEATHSIG) with
 * libnbd: block status (base:allocation) first, so that holes and zero extents cost no
 * read (their hash is computed once); the data blocks with several 1 MiB aio reads in
 * flight. Memory: the reads in flight (8 MiB) and the extents of one block-status reply.
 *
 * A published point is never written again, and the store is single-threaded: while this
 * runs on the store's thread no apply can begin and no retention can merge; one that was
 * begun and not yet ended makes it fail with BUSY.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "vr-replica-store.h"

G_BEGIN_DECLS

/* What one hash list cost, for tests and debug logs. */
typedef struct {
    uint64_t read_bytes;    /* bytes read through NBD (data blocks only) */
    uint64_t zero_bytes;    /* bytes hashed as zeroes after block status, never read */
    uint64_t status_calls;  /* block-status requests */
    uint64_t read_requests; /* aio reads */
} VrReplicaHashesStats;

/*
 * Write the hash list of the latest published point of @store to @path (it must not
 * exist; an unfinished file is removed) and set *@cycle_out to that point's cycle. Errors
 * are VR_REPLICA_STORE_ERROR: CONFLICT "no recovery point to hash" for an empty store,
 * BUSY while an apply runs, FAILED for qemu-nbd or libnbd (their message); and
 * VR_HASHLIST_ERROR for the file (@path existing, I/O). @stats (may be NULL) is set on
 * success only. Blocks until the list is written and durable.
 */
bool vr_replica_hashes_write(VrReplicaStore *store, const char *path, uint64_t *cycle_out,
                             GError **error);
bool vr_replica_hashes_write_stats(VrReplicaStore *store, const char *path, uint64_t *cycle_out,
                                   VrReplicaHashesStats *stats, GError **error);

G_END_DECLS
