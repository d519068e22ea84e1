/*
 * vr-test-store.c: cycles for the replica store's tests
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-test-store.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024 * 1024)

void
vr_test_fill(GRand *rand, uint8_t *buf, size_t len, bool random)
{
    uint8_t byte = (uint8_t)g_rand_int_range(rand, 1, 256);

    for (size_t i = 0; i < len; i += 4) {
        guint32 v = random ? g_rand_int(rand) : byte * 0x01010101u;

        memcpy(buf + i, &v, MIN(4, len - i));
    }
}

GByteArray *
vr_test_encode_cycle(const VrWireIdentity *identity, const VrTestOp *ops, guint n_ops, GRand *rand,
                     const char *model)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrWireEncoder) encoder = vr_wire_encoder_new(identity, &error);
    g_autofree uint8_t *buf = g_malloc(VR_WIRE_MAX_DATA);
    GByteArray *stream = g_byte_array_new();
    int fd;

    g_assert_no_error(error);
    fd = open(model, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    g_assert_no_errno(fd);
    g_assert_no_errno(ftruncate(fd, (off_t)identity->virtual_size));
    g_assert_true(vr_wire_encoder_begin(encoder, stream, &error));
    for (guint i = 0; i < n_ops; i++) {
        const VrTestOp *op = &ops[i];

        if (op->type == VR_WIRE_RECORD_DATA) {
            g_assert_cmpuint(op->length, <=, VR_WIRE_MAX_DATA);
            vr_test_fill(rand, buf, op->length, i % 2 == 0);
            bool added =
                vr_wire_encoder_add_data(encoder, op->offset, buf, op->length, stream, &error);

            g_assert_no_error(error);
            g_assert_true(added);
            g_assert_cmpint(pwrite(fd, buf, op->length, (off_t)op->offset), ==,
                            (ssize_t)op->length);
        } else {
            g_assert_true(
                vr_wire_encoder_add_zero(encoder, op->offset, op->length, stream, &error));
            g_assert_no_errno(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                        (off_t)op->offset, (off_t)op->length));
        }
        g_assert_no_error(error);
    }
    g_assert_true(vr_wire_encoder_end(encoder, stream, &error));
    g_assert_no_error(error);
    close(fd);
    return stream;
}

bool
vr_test_feed_record(const VrWireRecord *record, gpointer user_data, GError **error)
{
    VrTestFeed *feed = user_data;

    if (record->type == VR_WIRE_RECORD_BEGIN) {
        feed->apply = vr_replica_store_begin(feed->store, record->identity, error);
        return feed->apply != NULL;
    }
    return vr_replica_apply_record(feed->apply, record, error);
}

bool
vr_test_apply_stream(VrReplicaStore *store, GByteArray *stream, GError **error)
{
    g_autoptr(VrWireDecoder) decoder = vr_wire_decoder_new();
    VrTestFeed feed = { store, NULL };

    for (guint at = 0; at < stream->len; at += MiB) {
        if (!vr_wire_decoder_feed(decoder, stream->data + at, MIN(MiB, stream->len - at),
                                  vr_test_feed_record, &feed, error)) {
            if (feed.apply != NULL)
                vr_replica_apply_abort(feed.apply);
            return false;
        }
    }
    if (!vr_wire_decoder_finish(decoder, error)) {
        if (feed.apply != NULL)
            vr_replica_apply_abort(feed.apply);
        return false;
    }
    return vr_replica_apply_commit(feed.apply, error);
}

static bool
vr_test_digest_record(const VrWireRecord *record, gpointer user_data, GError **error)
{
    if (record->type == VR_WIRE_RECORD_END) {
        g_assert_cmpuint(record->data_size, ==, VR_WIRE_DIGEST_SIZE);
        memcpy(user_data, record->data, VR_WIRE_DIGEST_SIZE);
    }
    return true;
}

void
vr_test_stream_digest(GByteArray *stream, uint8_t digest[VR_WIRE_DIGEST_SIZE])
{
    g_autoptr(VrWireDecoder) decoder = vr_wire_decoder_new();
    g_autoptr(GError) error = NULL;

    memset(digest, 0, VR_WIRE_DIGEST_SIZE);
    g_assert_true(vr_wire_decoder_feed(decoder, stream->data, stream->len, vr_test_digest_record,
                                       digest, &error));
    g_assert_no_error(error);
    g_assert_true(vr_wire_decoder_finish(decoder, &error));
    g_assert_no_error(error);
}
