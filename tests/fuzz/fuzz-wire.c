/*
 * fuzz-wire.c: fuzz target for what the replica receives: the wire format decoder
 *
 * Input layout: byte 0 chooses how the rest is cut into feed() calls, and the rest is the
 * stream from the primary. The seed corpus files therefore start with one printable control
 * byte, e.g. "@" (whole) or "A" (1-byte feeds):
 *
 *   byte 0 & 3   0: the whole stream in one feed()     1: one byte per feed()
 *                2: feeds of (byte 0 >> 2) + 1 bytes   3: pseudo-random sizes 0..64,
 *                                                         seeded by byte 0
 *
 * Besides crashes, leaks and undefined behaviour, the target traps when the decoder breaks
 * its documented contract: records in order and within the disk, END last and only when
 * finish() agrees, errors in VR_WIRE_ERROR with a stream code, a failed decoder that stays
 * failed. Every record the decoder accepts is handed to an encoder, which must accept it
 * too: the two enforce the same rules.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdlib.h>

#include "vr-fuzz.h"
#include "vr-wire.h"

/* A contract was broken: crash, so that the fuzzer keeps the input as a reproducer. */
#define CHECK(cond)                                                                \
    G_STMT_START                                                                   \
    {                                                                              \
        if (!(cond)) {                                                             \
            g_printerr("%s:%d: contract broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                               \
        }                                                                          \
    }                                                                              \
    G_STMT_END

typedef struct {
    guint64 delivered;
    bool ended;
    VrWireEncoder *encoder; /* the same records, encoded again */
    GByteArray *out;
    guint sum; /* every delivered byte is read, so that ASan sees a bad pointer */
} State;

static bool
record_cb(const VrWireRecord *rec, gpointer user_data, GError **error)
{
    State *st = user_data;
    const VrWireIdentity *id = rec->identity;
    g_autoptr(GError) local = NULL;

    CHECK(!st->ended);
    CHECK(rec->index == st->delivered);
    CHECK(id != NULL);
    CHECK(vr_wire_identity_check(id, NULL));
    st->delivered++;
    for (size_t i = 0; i < rec->data_size; i++)
        st->sum += rec->data[i];

    switch (rec->type) {
    case VR_WIRE_RECORD_BEGIN:
        CHECK(rec->index == 0 && rec->data == NULL);
        st->encoder = vr_wire_encoder_new(id, &local);
        CHECK(st->encoder != NULL);
        CHECK(vr_wire_encoder_begin(st->encoder, st->out, &local));
        break;
    case VR_WIRE_RECORD_DATA:
        CHECK(id->kind == VR_WIRE_KIND_CYCLE);
        CHECK(rec->data != NULL && rec->data_size == rec->length);
        CHECK(rec->length >= 1 && rec->length <= VR_WIRE_MAX_DATA);
        CHECK(rec->offset <= id->virtual_size && rec->length <= id->virtual_size - rec->offset);
        CHECK(vr_wire_encoder_add_data(st->encoder, rec->offset, rec->data, rec->length, st->out,
                                       &local));
        break;
    case VR_WIRE_RECORD_ZERO:
        CHECK(id->kind == VR_WIRE_KIND_CYCLE && rec->data == NULL);
        CHECK(rec->offset <= id->virtual_size && rec->length <= id->virtual_size - rec->offset);
        CHECK(vr_wire_encoder_add_zero(st->encoder, rec->offset, rec->length, st->out, &local));
        break;
    case VR_WIRE_RECORD_HASHES:
        CHECK(id->kind == VR_WIRE_KIND_HASH_LIST);
        CHECK(rec->data != NULL && rec->data_size == rec->length * VR_WIRE_DIGEST_SIZE);
        CHECK(vr_wire_encoder_add_hashes(st->encoder, rec->offset, rec->data, rec->length, st->out,
                                         &local));
        break;
    case VR_WIRE_RECORD_END:
        CHECK(rec->data != NULL && rec->data_size == VR_WIRE_DIGEST_SIZE);
        CHECK(vr_wire_encoder_end(st->encoder, st->out, &local));
        st->ended = true;
        break;
    default:
        CHECK(!"unknown record type delivered");
    }
    CHECK(local == NULL);
    /* Keep the re-encoded stream small: only the rules matter here. */
    g_byte_array_set_size(st->out, 0);
    return true;
}

static bool
stream_error(const GError *error)
{
    return error != NULL && error->domain == VR_WIRE_ERROR &&
           (error->code == VR_WIRE_ERROR_CORRUPT || error->code == VR_WIRE_ERROR_PROTOCOL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(VrWireDecoder) decoder = NULL;
    g_autoptr(GByteArray) out = NULL;
    g_autoptr(GError) error = NULL;
    State st = { 0 };
    const uint8_t *stream;
    guint8 control;
    guint32 state;
    gsize len;
    gsize pos = 0;
    bool failed = false;

    if (size < 1)
        return 0;
    control = data[0];
    state = 0x9e3779b9u ^ control;
    stream = data + 1;
    len = size - 1;
    decoder = vr_wire_decoder_new();
    out = g_byte_array_new();
    st.out = out;

    while (pos < len) {
        gsize n = vr_fuzz_next_chunk(control & 3, control, &state, len - pos);

        if (!vr_wire_decoder_feed(decoder, stream + pos, n, record_cb, &st, &error)) {
            CHECK(stream_error(error));
            failed = true;
            break;
        }
        CHECK(error == NULL);
        pos += n;
    }

    if (failed) {
        /* A failed decoder stays failed and delivers nothing more. */
        guint64 before = st.delivered;
        int code = error->code;

        g_clear_error(&error);
        CHECK(!vr_wire_decoder_feed(decoder, data, size, record_cb, &st, &error));
        CHECK(stream_error(error) && error->code == code);
        CHECK(st.delivered == before);
        g_clear_error(&error);
        CHECK(!vr_wire_decoder_finish(decoder, &error));
        CHECK(stream_error(error) && error->code == code);
    } else if (vr_wire_decoder_finish(decoder, &error)) {
        CHECK(error == NULL && st.ended);
        CHECK(vr_wire_decoder_get_identity(decoder) != NULL);
    } else {
        CHECK(stream_error(error) && error->code == VR_WIRE_ERROR_PROTOCOL);
        CHECK(!st.ended);
    }
    vr_wire_encoder_free(st.encoder);
    return 0;
}
