/*
 * vr-test-store.h: cycles for the replica store's tests: a raw model and the same records
 * as a wire stream, and applying a stream to a store as the receiver's sink does
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "vr-replica-store.h"
#include "vr-wire.h"

/* One record of a test cycle. */
typedef struct {
    VrWireRecordType type; /* DATA or ZERO */
    uint64_t offset;
    uint64_t length;
} VrTestOp;

/* Random bytes, or a compressible pattern (so that zstd records are applied too). */
void vr_test_fill(GRand *rand, uint8_t *buf, size_t len, bool random);

/*
 * Write the records @ops into the raw model @model (opened, or created, and sized to
 * @identity's virtual size: start from a copy for an incremental cycle) and encode the same
 * records as the stream of @identity; DATA records alternate between random and
 * compressible bytes from @rand. (transfer full)
 */
GByteArray *vr_test_encode_cycle(const VrWireIdentity *identity, const VrTestOp *ops, guint n_ops,
                                 GRand *rand, const char *model);

/* What vr_test_feed_record() needs: BEGIN starts the apply in @store. */
typedef struct {
    VrReplicaStore *store;
    VrReplicaApply *apply; /* from BEGIN on */
} VrTestFeed;

/* A VrWireRecordFunc, as a receiver's sink: BEGIN begins, the rest goes to the apply. */
bool vr_test_feed_record(const VrWireRecord *record, gpointer user_data, GError **error);

/* Decode @stream in 1 MiB pieces into a new apply of @store, then commit it. */
bool vr_test_apply_stream(VrReplicaStore *store, GByteArray *stream, GError **error);

/* The stream digest of @stream (its END record), decoded and verified. */
void vr_test_stream_digest(GByteArray *stream, uint8_t digest[VR_WIRE_DIGEST_SIZE]);
