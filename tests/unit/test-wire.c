/*
 * test-wire.c: the replication wire format against a naive model
 *
 * Random cycles (DATA of 1 byte to 4 MiB, compressible or not, ZERO, gaps) are encoded,
 * decoded in whole, random and 1-byte chunks and applied to a byte array; the same records
 * applied directly to another byte array are the model. Then the streams are damaged: cut at
 * every length, every bit flipped, records dropped, repeated, swapped, spliced from another
 * stream, bytes appended. Records forged by an independent encoder in this file (with valid
 * checksums) break each rule of the format one at a time. The decoder must refuse each, and
 * its callback must never see a record that differs from what was sent.
 *
 * Random tests print their seed (g_test_message); rerun with --seed to reproduce.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <xxhash.h>
#include <zstd.h>

#include "vr-wire.h"

#define MIB (1024 * 1024)

/* ---- the model -------------------------------------------------------------------- */

typedef struct {
    VrWireRecordType type;
    uint64_t offset;
    uint64_t length;
    uint8_t *data; /* DATA: length bytes; HASHES: length * 32 bytes */
} ModelRecord;

static void
model_record_free(ModelRecord *rec)
{
    g_free(rec->data);
    g_free(rec);
}

typedef struct {
    VrWireIdentity identity;
    GPtrArray *records; /* ModelRecord, the records between BEGIN and END */
} Model;

static Model *
model_new(const VrWireIdentity *identity)
{
    Model *model = g_new0(Model, 1);

    model->identity = *identity;
    model->records = g_ptr_array_new_with_free_func((GDestroyNotify)model_record_free);
    return model;
}

static void
model_free(Model *model)
{
    if (model == NULL)
        return;
    g_ptr_array_unref(model->records);
    g_free(model);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Model, model_free)

static void
model_add(Model *model, VrWireRecordType type, uint64_t offset, uint64_t length, const void *data,
          size_t size)
{
    ModelRecord *rec = g_new0(ModelRecord, 1);

    rec->type = type;
    rec->offset = offset;
    rec->length = length;
    rec->data = data != NULL ? g_memdup2(data, size) : NULL;
    g_ptr_array_add(model->records, rec);
}

/* The model itself: the records applied straight to @disk. */
static void
model_apply(const Model *model, uint8_t *disk)
{
    for (guint i = 0; i < model->records->len; i++) {
        const ModelRecord *rec = model->records->pdata[i];

        if (rec->type == VR_WIRE_RECORD_DATA)
            memcpy(disk + rec->offset, rec->data, rec->length);
        else if (rec->type == VR_WIRE_RECORD_ZERO)
            memset(disk + rec->offset, 0, rec->length);
    }
}

/* Encode @model with the encoder under test. (transfer full) */
static GByteArray *
model_encode(const Model *model, VrWireTotals *totals)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrWireEncoder) enc = vr_wire_encoder_new(&model->identity, &error);
    g_autoptr(GByteArray) out = g_byte_array_new();

    g_assert_no_error(error);
    g_assert_true(vr_wire_encoder_begin(enc, out, &error));
    for (guint i = 0; i < model->records->len; i++) {
        const ModelRecord *rec = model->records->pdata[i];
        bool ok = false;

        switch (rec->type) {
        case VR_WIRE_RECORD_DATA:
            ok = vr_wire_encoder_add_data(enc, rec->offset, rec->data, rec->length, out, &error);
            break;
        case VR_WIRE_RECORD_ZERO:
            ok = vr_wire_encoder_add_zero(enc, rec->offset, rec->length, out, &error);
            break;
        case VR_WIRE_RECORD_HASHES:
            ok = vr_wire_encoder_add_hashes(enc, rec->offset, rec->data, rec->length, out, &error);
            break;
        default:
            g_assert_not_reached();
        }
        g_assert_no_error(error);
        g_assert_true(ok);
    }
    g_assert_true(vr_wire_encoder_end(enc, out, &error));
    g_assert_no_error(error);
    if (totals != NULL)
        vr_wire_encoder_get_totals(enc, totals);
    return g_steal_pointer(&out);
}

/* ---- random inputs ---------------------------------------------------------------- */

static void
random_bytes(GRand *rand, uint8_t *buf, size_t len)
{
    size_t i = 0;

    for (; i + 4 <= len; i += 4) {
        guint32 v = g_rand_int(rand);

        memcpy(buf + i, &v, 4);
    }
    for (; i < len; i++)
        buf[i] = (uint8_t)g_rand_int(rand);
}

/* Half of the time a short pattern repeated (zstd shrinks it), else random bytes. */
static void
random_payload(GRand *rand, uint8_t *buf, size_t len, bool compressible)
{
    if (compressible) {
        uint8_t pattern[64];
        size_t plen = g_rand_int_range(rand, 1, sizeof(pattern) + 1);

        random_bytes(rand, pattern, plen);
        for (size_t i = 0; i < len; i++)
            buf[i] = pattern[i % plen];
    } else {
        random_bytes(rand, buf, len);
    }
}

static void
random_name(GRand *rand, char *out, size_t max)
{
    static const char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
    size_t len = g_rand_int_range(rand, 1, max + 1);

    for (size_t i = 0; i < len; i++)
        out[i] = chars[g_rand_int_range(rand, 0, sizeof(chars) - 1)];
    out[len] = '\0';
}

static VrWireIdentity
random_identity(GRand *rand, VrWireKind kind, uint64_t virtual_size)
{
    static const uint32_t cycle_flags[] = { 0, VR_WIRE_FLAG_FULL, VR_WIRE_FLAG_RESYNC };
    VrWireIdentity id = { .kind = kind, .virtual_size = virtual_size };

    random_name(rand, id.relationship, VR_WIRE_RELATIONSHIP_MAX);
    random_name(rand, id.disk, VR_WIRE_DISK_MAX);
    random_bytes(rand, id.domain_uuid, sizeof(id.domain_uuid));
    id.epoch = g_rand_int(rand);
    id.granularity = 512u << g_rand_int_range(rand, 0, 12);
    if (kind == VR_WIRE_KIND_CYCLE) {
        id.flags = cycle_flags[g_rand_int_range(rand, 0, G_N_ELEMENTS(cycle_flags))];
        if (g_rand_boolean(rand))
            id.flags |= VR_WIRE_FLAG_APP_CONSISTENT;
        id.base_cycle = id.flags & (VR_WIRE_FLAG_FULL | VR_WIRE_FLAG_RESYNC)
                            ? 0
                            : g_rand_int_range(rand, 1, 1000);
    }
    id.target_cycle = id.base_cycle + g_rand_int_range(rand, 1, 5);
    return id;
}

/*
 * A random cycle over a disk of @size bytes: DATA and ZERO records with gaps. With @edges
 * (@size > 9 MiB), it starts with a 1-byte record, then 4 MiB of random and 4 MiB of
 * compressible data.
 */
static Model *
random_cycle(GRand *rand, uint64_t size, guint max_records, bool edges)
{
    VrWireIdentity id = random_identity(rand, VR_WIRE_KIND_CYCLE, size);
    Model *model = model_new(&id);
    g_autofree uint8_t *buf = g_malloc(VR_WIRE_MAX_DATA);
    uint64_t offset = 0;

    if (edges) {
        g_assert_cmpuint(size, >, 9 * MIB);
        buf[0] = 0xa5;
        model_add(model, VR_WIRE_RECORD_DATA, 0, 1, buf, 1);
        random_payload(rand, buf, VR_WIRE_MAX_DATA, false);
        model_add(model, VR_WIRE_RECORD_DATA, 1, VR_WIRE_MAX_DATA, buf, VR_WIRE_MAX_DATA);
        random_payload(rand, buf, VR_WIRE_MAX_DATA, true);
        offset = 1 + VR_WIRE_MAX_DATA + g_rand_int_range(rand, 0, 3) * 512;
        model_add(model, VR_WIRE_RECORD_DATA, offset, VR_WIRE_MAX_DATA, buf, VR_WIRE_MAX_DATA);
        offset += VR_WIRE_MAX_DATA;
    }

    for (guint i = 0; i < max_records; i++) {
        guint pick = g_rand_int_range(rand, 0, 100);
        uint64_t len;

        if (g_rand_int_range(rand, 0, 3) == 0)
            offset += g_rand_int_range(rand, 1, 70000);
        if (pick < 10)
            len = 1;
        else if (pick < 15)
            len = VR_WIRE_MAX_DATA;
        else if (pick < 30)
            len = g_rand_int_range(rand, 1, MIB);
        else
            len = g_rand_int_range(rand, 1, 128 * 1024);
        if (offset >= size)
            break;
        len = MIN(len, size - offset);
        if (g_rand_int_range(rand, 0, 3) == 0) {
            model_add(model, VR_WIRE_RECORD_ZERO, offset, len, NULL, 0);
        } else {
            random_payload(rand, buf, len, g_rand_boolean(rand));
            model_add(model, VR_WIRE_RECORD_DATA, offset, len, buf, len);
        }
        offset += len;
    }
    return model;
}

/* ---- the decoder's side ----------------------------------------------------------- */

typedef struct {
    const Model *expect; /* every delivered record must equal the one sent; NULL: no check */
    uint8_t *disk;       /* cycle: DATA and ZERO applied here */
    uint64_t disk_size;
    GByteArray *digests; /* hash list: HASHES appended here */
    guint64 delivered;
    guint zstd_records;
    bool ended;
} Sink;

static bool
sink_record(const VrWireRecord *rec, gpointer user_data, GError **error)
{
    Sink *sink = user_data;

    /* Nothing after END, and records in order. */
    g_assert_false(sink->ended);
    g_assert_cmpuint(rec->index, ==, sink->delivered);
    sink->delivered++;
    g_assert_nonnull(rec->identity);

    if (sink->expect != NULL) {
        const Model *expect = sink->expect;

        if (rec->type == VR_WIRE_RECORD_BEGIN) {
            g_assert_cmpmem(rec->identity, sizeof(VrWireIdentity), &expect->identity,
                            sizeof(VrWireIdentity));
        } else if (rec->type == VR_WIRE_RECORD_END) {
            g_assert_cmpuint(rec->index, ==, expect->records->len + 1);
        } else {
            const ModelRecord *want;

            /* A record the sender never sent is a failure of the decoder's checks. */
            g_assert_cmpuint(rec->index, >=, 1);
            g_assert_cmpuint(rec->index, <=, expect->records->len);
            want = expect->records->pdata[rec->index - 1];
            g_assert_cmpint(rec->type, ==, want->type);
            g_assert_cmpuint(rec->offset, ==, want->offset);
            g_assert_cmpuint(rec->length, ==, want->length);
            if (rec->type == VR_WIRE_RECORD_DATA)
                g_assert_cmpmem(rec->data, rec->data_size, want->data, want->length);
            if (rec->type == VR_WIRE_RECORD_HASHES) {
                g_assert_cmpmem(rec->data, rec->data_size, want->data,
                                want->length * VR_WIRE_DIGEST_SIZE);
            }
        }
    }

    switch (rec->type) {
    case VR_WIRE_RECORD_BEGIN:
        g_assert_cmpuint(rec->index, ==, 0);
        g_assert_null(rec->data);
        break;
    case VR_WIRE_RECORD_DATA:
        g_assert_cmpuint(rec->data_size, ==, rec->length);
        if (rec->encoding == VR_WIRE_ENCODING_ZSTD)
            sink->zstd_records++;
        if (sink->disk != NULL) {
            g_assert_cmpuint(rec->offset + rec->length, <=, sink->disk_size);
            memcpy(sink->disk + rec->offset, rec->data, rec->length);
        }
        break;
    case VR_WIRE_RECORD_ZERO:
        g_assert_null(rec->data);
        if (sink->disk != NULL) {
            g_assert_cmpuint(rec->offset + rec->length, <=, sink->disk_size);
            memset(sink->disk + rec->offset, 0, rec->length);
        }
        break;
    case VR_WIRE_RECORD_HASHES:
        g_assert_cmpuint(rec->data_size, ==, rec->length * VR_WIRE_DIGEST_SIZE);
        if (sink->digests != NULL) {
            g_assert_cmpuint(sink->digests->len, ==, rec->offset * VR_WIRE_DIGEST_SIZE);
            g_byte_array_append(sink->digests, rec->data, rec->data_size);
        }
        break;
    case VR_WIRE_RECORD_END:
        g_assert_cmpuint(rec->data_size, ==, VR_WIRE_DIGEST_SIZE);
        sink->ended = true;
        break;
    }
    return true;
}

typedef enum {
    CHUNK_WHOLE,
    CHUNK_BYTE,
    CHUNK_RANDOM,
} Chunking;

/*
 * Feed @stream in chunks, then finish. True when the stream verified; false with @error
 * otherwise. @totals, if non-NULL, gets the decoder's totals.
 */
static bool
decode(const uint8_t *stream, size_t len, Chunking chunking, GRand *rand, Sink *sink,
       VrWireTotals *totals, GError **error)
{
    g_autoptr(VrWireDecoder) dec = vr_wire_decoder_new();
    size_t pos = 0;
    bool ok = true;

    while (pos < len) {
        size_t n = len - pos;

        if (chunking == CHUNK_BYTE) {
            n = 1;
        } else if (chunking == CHUNK_RANDOM) {
            /* Small cuts half of the time, else up to a few records at once. */
            size_t r = g_rand_int_range(rand, 1, g_rand_boolean(rand) ? 100 : 300000);

            n = MIN(n, r);
        }
        if (!vr_wire_decoder_feed(dec, stream + pos, n, sink_record, sink, error)) {
            ok = false;
            break;
        }
        pos += n;
    }
    if (ok)
        ok = vr_wire_decoder_finish(dec, error);
    if (totals != NULL)
        vr_wire_decoder_get_totals(dec, totals);
    if (ok) {
        g_assert_true(sink->ended);
        g_assert_nonnull(vr_wire_decoder_get_identity(dec));
    } else {
        g_assert_nonnull(*error);
        g_assert_true((*error)->domain == VR_WIRE_ERROR);
        /* A failed decoder stays failed: finish says so too. */
        g_assert_false(vr_wire_decoder_finish(dec, NULL));
    }
    return ok;
}

/* Decode @stream whole into a fresh sink; the stream must be refused and END never seen. */
static GError *
decode_refused(const uint8_t *stream, size_t len, const Model *expect)
{
    Sink sink = { .expect = expect };
    GError *error = NULL;

    g_assert_false(decode(stream, len, CHUNK_WHOLE, NULL, &sink, NULL, &error));
    g_assert_false(sink.ended);
    return error;
}

/* ---- round trips ------------------------------------------------------------------ */

static guint32
test_seed(void)
{
    guint32 seed = g_test_rand_int();

    g_test_message("seed %u", seed);
    return seed;
}

static void
test_roundtrip_model(void)
{
    guint32 seed = test_seed();
    g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
    guint iterations = g_test_thorough() ? 40 : 10;
    guint records = 0;
    guint zstd_records = 0;
    guint byte_decodes = 0;
    guint64 wire_bytes = 0;

    for (guint iter = 0; iter < iterations; iter++) {
        /* 1 KiB to 12 MiB, not a multiple of anything. */
        uint64_t size = iter == 0 ? 12 * MIB + 1 : g_rand_int_range(rand, 1024, 12 * MIB);
        g_autoptr(Model) model = random_cycle(rand, size, g_rand_int_range(rand, 0, 30), iter == 0);
        g_autofree uint8_t *want = g_malloc(size);
        g_autofree uint8_t *got = g_malloc(size);
        VrWireTotals sent = { 0 };
        g_autoptr(GByteArray) stream = model_encode(model, &sent);

        g_assert_cmpuint(sent.wire_bytes, ==, stream->len);
        for (uint64_t i = 0; i < size; i++)
            want[i] = (uint8_t)(i * 7 + 3);
        model_apply(model, want);

        for (Chunking chunking = CHUNK_WHOLE; chunking <= CHUNK_RANDOM; chunking++) {
            Sink sink = { .expect = model, .disk = got, .disk_size = size };
            g_autoptr(GError) error = NULL;
            VrWireTotals received = { 0 };

            /* One byte at a time is slow on the biggest streams: the smaller ones do it. */
            if (chunking == CHUNK_BYTE && stream->len > 2 * MIB)
                continue;
            /* The same initial contents on both sides, so untouched bytes compare too. */
            for (uint64_t i = 0; i < size; i++)
                got[i] = (uint8_t)(i * 7 + 3);
            if (!decode(stream->data, stream->len, chunking, rand, &sink, &received, &error))
                g_error("seed %u, iteration %u, chunking %d: %s", seed, iter, chunking,
                        error->message);
            g_assert_cmpuint(sink.delivered, ==, model->records->len + 2);
            g_assert_cmpmem(got, size, want, size);
            g_assert_cmpmem(&received, sizeof(received), &sent, sizeof(sent));
            byte_decodes += chunking == CHUNK_BYTE;
        }
        records += model->records->len;
        zstd_records += sent.zstd_records;
        wire_bytes += sent.wire_bytes;
    }
    g_test_message("%u streams, %u records (%u zstd), %" G_GUINT64_FORMAT
                   " bytes on the wire; %u decoded one byte at a time",
                   iterations, records, zstd_records, wire_bytes, byte_decodes);
}

static void
test_roundtrip_hashes(void)
{
    guint32 seed = test_seed();
    g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
    /* Small lists, a size of exact blocks, and 10 GiB (one full HASHES record and a tail). */
    const uint64_t sizes[] = { 1, 65536, 65537, 3 * 65536 + 100, 100 * 65536, 10ull << 30 };

    for (guint s = 0; s < G_N_ELEMENTS(sizes); s++) {
        VrWireIdentity id = random_identity(rand, VR_WIRE_KIND_HASH_LIST, sizes[s]);
        g_autoptr(Model) model = model_new(&id);
        uint64_t count = vr_wire_hash_count(sizes[s]);
        g_autofree uint8_t *digests = g_malloc(count * VR_WIRE_DIGEST_SIZE);
        g_autoptr(GByteArray) stream = NULL;
        uint64_t index = 0;

        random_bytes(rand, digests, count * VR_WIRE_DIGEST_SIZE);
        while (index < count) {
            uint64_t r = count > VR_WIRE_MAX_HASHES ? VR_WIRE_MAX_HASHES
                                                    : (uint64_t)g_rand_int_range(rand, 1, 50);
            uint64_t n = MIN(count - index, r);
            model_add(model, VR_WIRE_RECORD_HASHES, index, n, digests + index * VR_WIRE_DIGEST_SIZE,
                      n * VR_WIRE_DIGEST_SIZE);
            index += n;
        }
        stream = model_encode(model, NULL);
        for (Chunking chunking = CHUNK_WHOLE; chunking <= CHUNK_RANDOM; chunking++) {
            g_autoptr(GByteArray) got = g_byte_array_new();
            Sink sink = { .expect = model, .digests = got };
            g_autoptr(GError) error = NULL;

            if (chunking == CHUNK_BYTE && stream->len > 2 * MIB)
                continue;
            if (!decode(stream->data, stream->len, chunking, rand, &sink, NULL, &error))
                g_error("seed %u, size %" G_GUINT64_FORMAT ": %s", seed, sizes[s], error->message);
            g_assert_cmpmem(got->data, got->len, digests, count * VR_WIRE_DIGEST_SIZE);
        }
    }
}

/* ---- compression ------------------------------------------------------------------ */

/* One DATA record of @data in a cycle stream: its encoding and payload size on the wire. */
static void
encode_one(const uint8_t *data, size_t len, VrWireEncoding *encoding, size_t *payload_size)
{
    VrWireIdentity id = { .kind = VR_WIRE_KIND_CYCLE,
                          .relationship = "r1",
                          .disk = "vda",
                          .target_cycle = 1,
                          .virtual_size = 64 * MIB,
                          .granularity = 65536,
                          .flags = VR_WIRE_FLAG_FULL };
    g_autoptr(Model) model = model_new(&id);
    g_autoptr(GByteArray) stream = NULL;
    Sink sink = { .expect = model };
    g_autoptr(GError) error = NULL;
    VrWireTotals totals = { 0 };
    const uint8_t *head;

    model_add(model, VR_WIRE_RECORD_DATA, 0, len, data, len);
    stream = model_encode(model, &totals);
    head = stream->data + VR_WIRE_HEADER_SIZE + VR_WIRE_IDENTITY_SIZE;
    *encoding = head[5];
    *payload_size = GUINT32_FROM_LE(*(const guint32 *)(head + 8));
    g_assert_cmpuint(totals.data_wire_bytes, ==, *payload_size);
    g_assert_cmpuint(totals.data_bytes, ==, len);
    g_assert_cmpuint(totals.zstd_records, ==, *encoding == VR_WIRE_ENCODING_ZSTD ? 1 : 0);
    g_assert_true(decode(stream->data, stream->len, CHUNK_WHOLE, NULL, &sink, NULL, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(sink.zstd_records, ==, totals.zstd_records);
}

static void
test_compression(void)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(test_seed());
    g_autofree uint8_t *buf = g_malloc(VR_WIRE_MAX_DATA);
    VrWireEncoding encoding;
    size_t size;

    /* Text-like blocks: a line with a counter, as in a log file. */
    for (size_t pos = 0; pos < VR_WIRE_MAX_DATA;) {
        g_autofree char *line =
            g_strdup_printf("%08zu virt-replica: cycle %zu of disk vda shipped\n", pos, pos / 4096);
        size_t n = MIN(strlen(line), VR_WIRE_MAX_DATA - pos);

        memcpy(buf + pos, line, n);
        pos += n;
    }
    encode_one(buf, VR_WIRE_MAX_DATA, &encoding, &size);
    g_test_message("4 MiB of log-like text: %zu bytes on the wire (%.1f%%)", size,
                   100.0 * size / VR_WIRE_MAX_DATA);
    g_assert_cmpint(encoding, ==, VR_WIRE_ENCODING_ZSTD);
    g_assert_cmpuint(size, <, VR_WIRE_MAX_DATA / 4);

    /* A repeated short pattern, 1 MiB. */
    random_payload(rand, buf, MIB, true);
    encode_one(buf, MIB, &encoding, &size);
    g_test_message("1 MiB of a repeated pattern: %zu bytes on the wire", size);
    g_assert_cmpint(encoding, ==, VR_WIRE_ENCODING_ZSTD);
    g_assert_cmpuint(size, <, MIB / 10);

    /* Random data goes raw, whatever its size. */
    for (size_t len = 1; len <= VR_WIRE_MAX_DATA; len *= 16) {
        random_bytes(rand, buf, len);
        encode_one(buf, len, &encoding, &size);
        g_assert_cmpint(encoding, ==, VR_WIRE_ENCODING_RAW);
        g_assert_cmpuint(size, ==, len);
    }

    /* 5% zeroes in random data: zstd saves about 5%, less than the 10% it takes. */
    random_bytes(rand, buf, MIB);
    memset(buf, 0, MIB / 20);
    encode_one(buf, MIB, &encoding, &size);
    g_assert_cmpint(encoding, ==, VR_WIRE_ENCODING_RAW);
    /* 25% zeroes: worth it. */
    memset(buf, 0, MIB / 4);
    encode_one(buf, MIB, &encoding, &size);
    g_assert_cmpint(encoding, ==, VR_WIRE_ENCODING_ZSTD);
    g_assert_cmpuint(size * 10, <=, MIB * 9);

    /* A 1-byte record cannot shrink. */
    buf[0] = 0;
    encode_one(buf, 1, &encoding, &size);
    g_assert_cmpint(encoding, ==, VR_WIRE_ENCODING_RAW);
}

/* ---- integrity of whole streams --------------------------------------------------- */

/* A small cycle with every record type, a zstd record among them: a few hundred bytes. */
static Model *
small_cycle(void)
{
    VrWireIdentity id = { .kind = VR_WIRE_KIND_CYCLE,
                          .relationship = "rel0",
                          .disk = "vdb",
                          .epoch = 2,
                          .base_cycle = 7,
                          .target_cycle = 8,
                          .virtual_size = 65536 + 100,
                          .granularity = 512,
                          .flags = VR_WIRE_FLAG_APP_CONSISTENT };
    Model *model = model_new(&id);
    uint8_t buf[2000];

    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)((i * 13) % 251);
    model_add(model, VR_WIRE_RECORD_DATA, 0, 20, buf, 20);
    model_add(model, VR_WIRE_RECORD_ZERO, 4096, 4096, NULL, 0);
    memset(buf, 'x', sizeof(buf));
    model_add(model, VR_WIRE_RECORD_DATA, 8192, sizeof(buf), buf, sizeof(buf));
    buf[0] = 42;
    model_add(model, VR_WIRE_RECORD_DATA, 65536 + 99, 1, buf, 1);
    return model;
}

static void
test_truncated(void)
{
    g_autoptr(Model) model = small_cycle();
    g_autoptr(GByteArray) stream = model_encode(model, NULL);

    for (guint cut = 0; cut < stream->len; cut++) {
        for (Chunking chunking = CHUNK_WHOLE; chunking <= CHUNK_BYTE; chunking++) {
            g_autoptr(VrWireDecoder) dec = vr_wire_decoder_new();
            g_autoptr(GError) error = NULL;
            Sink sink = { .expect = model };

            /* A prefix of a good stream feeds fine: only finish can tell. */
            for (guint pos = 0; pos < cut;) {
                guint n = chunking == CHUNK_BYTE ? 1 : cut;

                g_assert_true(
                    vr_wire_decoder_feed(dec, stream->data + pos, n, sink_record, &sink, &error));
                g_assert_no_error(error);
                pos += n;
            }
            g_assert_false(vr_wire_decoder_finish(dec, &error));
            g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL);
            g_assert_false(sink.ended);
        }
    }
}

/*
 * Whether byte @pos of the well-formed @stream lies in the payload of a zstd DATA record.
 * The checksums cover the decoded data, and a zstd decoder ignores a few bits of a frame
 * (the frame header's unused bit, some reserved bits of a block): a flip there decodes to
 * the same bytes, so the stream is still the one sent, and may verify.
 */
static bool
in_zstd_payload(const GByteArray *stream, guint pos)
{
    for (guint start = 0; start < stream->len;) {
        guint32 size;

        memcpy(&size, stream->data + start + 8, 4);
        size = GUINT32_FROM_LE(size);
        if (pos < start + VR_WIRE_HEADER_SIZE + size) {
            return stream->data[start + 5] == VR_WIRE_ENCODING_ZSTD &&
                   pos >= start + VR_WIRE_HEADER_SIZE;
        }
        start += VR_WIRE_HEADER_SIZE + size;
    }
    g_assert_not_reached();
}

/*
 * Decode @bad, @stream with bytes @a and @b changed. It must be refused, END never seen,
 * and no record delivered that differs from the one sent (the sink checks each against
 * @model). Only when every change is inside zstd payloads may it verify instead, and then
 * the sink has checked that every record, END included, is exactly the one sent.
 */
static bool
check_damaged(const GByteArray *stream, const uint8_t *bad, guint a, guint b, const Model *model,
              Chunking chunking, GRand *rand)
{
    Sink sink = { .expect = model };
    g_autoptr(GError) error = NULL;

    if (decode(bad, stream->len, chunking, rand, &sink, NULL, &error)) {
        if (!in_zstd_payload(stream, a) || !in_zstd_payload(stream, b))
            return false;
        g_assert_cmpuint(sink.delivered, ==, model->records->len + 2);
        return true;
    }
    g_assert_false(sink.ended);
    g_assert_true(error->code == VR_WIRE_ERROR_CORRUPT || error->code == VR_WIRE_ERROR_PROTOCOL);
    return true;
}

static void
test_every_bit_flipped(void)
{
    g_autoptr(Model) model = small_cycle();
    g_autoptr(GByteArray) stream = model_encode(model, NULL);
    g_autofree uint8_t *bad = g_malloc(stream->len);
    guint zstd_bytes = 0;

    for (guint pos = 0; pos < stream->len; pos++)
        zstd_bytes += in_zstd_payload(stream, pos);
    g_assert_cmpuint(zstd_bytes, >, 0);
    g_test_message("%u bytes (%u in a zstd payload), %u flips", stream->len, zstd_bytes,
                   stream->len * 8);
    for (guint pos = 0; pos < stream->len; pos++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(bad, stream->data, stream->len);
            bad[pos] ^= 1u << bit;
            if (!check_damaged(stream, bad, pos, pos, model, CHUNK_WHOLE, NULL))
                g_error("a flip of bit %d at byte %u of %u went unnoticed", bit, pos, stream->len);
        }
    }
}

static void
test_two_flips(void)
{
    guint32 seed = test_seed();
    g_autoptr(GRand) rand = g_rand_new_with_seed(seed);
    g_autoptr(Model) model = random_cycle(rand, 2 * MIB, 12, false);
    g_autoptr(GByteArray) stream = model_encode(model, NULL);
    g_autofree uint8_t *bad = g_malloc(stream->len);

    g_test_message("%u bytes, %u records", stream->len, model->records->len);
    for (int iter = 0; iter < 100; iter++) {
        guint a = g_rand_int_range(rand, 0, stream->len);
        guint b = g_rand_int_range(rand, 0, stream->len);

        memcpy(bad, stream->data, stream->len);
        bad[a] ^= (uint8_t)g_rand_int_range(rand, 1, 256);
        bad[b] ^= (uint8_t)g_rand_int_range(rand, 1, 256);
        if (!check_damaged(stream, bad, a, b, model, iter % 2 ? CHUNK_RANDOM : CHUNK_WHOLE, rand)) {
            g_error("seed %u: changes at %u and %u went unnoticed", seed, a, b);
        }
    }
}

/* Cut @stream into its records (it is well formed). */
static GPtrArray *
split_records(const GByteArray *stream)
{
    GPtrArray *records = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);

    for (guint pos = 0; pos < stream->len;) {
        guint32 size;

        memcpy(&size, stream->data + pos + 8, 4);
        size = VR_WIRE_HEADER_SIZE + GUINT32_FROM_LE(size);
        g_assert_cmpuint(pos + size, <=, stream->len);
        g_ptr_array_add(records, g_bytes_new(stream->data + pos, size));
        pos += size;
    }
    return records;
}

/* The records of @records listed by @order (indexes, -1 terminated), joined. */
static GByteArray *
join_records(GPtrArray *records, const int *order)
{
    GByteArray *out = g_byte_array_new();

    for (const int *i = order; *i >= 0; i++) {
        gsize size;
        const uint8_t *data = g_bytes_get_data(records->pdata[*i], &size);

        g_byte_array_append(out, data, size);
    }
    return out;
}

static void
test_records_dropped_repeated_swapped(void)
{
    g_autoptr(Model) model = small_cycle();
    g_autoptr(GByteArray) stream = model_encode(model, NULL);
    g_autoptr(GPtrArray) records = split_records(stream);
    int n = records->len;
    int order[32];

    g_assert_cmpint(n, ==, model->records->len + 2);
    for (int victim = 0; victim < n; victim++) {
        g_autoptr(GByteArray) dropped = NULL;
        g_autoptr(GByteArray) repeated = NULL;
        g_autoptr(GError) error = NULL;
        int k = 0;

        for (int i = 0; i < n; i++) {
            if (i != victim)
                order[k++] = i;
        }
        order[k] = -1;
        dropped = join_records(records, order);
        error = decode_refused(dropped->data, dropped->len, NULL);
        g_clear_error(&error);

        k = 0;
        for (int i = 0; i < n; i++) {
            order[k++] = i;
            if (i == victim)
                order[k++] = i;
        }
        order[k] = -1;
        repeated = join_records(records, order);
        error = decode_refused(repeated->data, repeated->len, NULL);
    }
    for (int first = 0; first + 1 < n; first++) {
        g_autoptr(GByteArray) swapped = NULL;
        g_autoptr(GError) error = NULL;

        for (int i = 0; i < n; i++)
            order[i] = i;
        order[first] = first + 1;
        order[first + 1] = first;
        order[n] = -1;
        swapped = join_records(records, order);
        error = decode_refused(swapped->data, swapped->len, NULL);
    }
}

static void
test_spliced(void)
{
    g_autoptr(Model) a = small_cycle();
    g_autoptr(Model) b = small_cycle();
    g_autoptr(GByteArray) stream_a = NULL;
    g_autoptr(GByteArray) stream_b = NULL;
    g_autoptr(GPtrArray) ra = NULL;
    g_autoptr(GPtrArray) rb = NULL;
    g_autoptr(GByteArray) spliced = NULL;
    g_autoptr(GError) error = NULL;

    /* The same records, another relationship and cycle. */
    g_strlcpy(b->identity.relationship, "rel1", sizeof(b->identity.relationship));
    b->identity.base_cycle = 8;
    b->identity.target_cycle = 9;
    stream_a = model_encode(a, NULL);
    stream_b = model_encode(b, NULL);
    ra = split_records(stream_a);
    rb = split_records(stream_b);
    g_assert_cmpuint(ra->len, ==, rb->len);

    /* B's BEGIN on A's records: every record verifies alone, the stream digest does not. */
    spliced = g_byte_array_new();
    for (guint i = 0; i < ra->len; i++) {
        gsize size;
        const uint8_t *data = g_bytes_get_data((i == 0 ? rb : ra)->pdata[i], &size);

        g_byte_array_append(spliced, data, size);
    }
    error = decode_refused(spliced->data, spliced->len, NULL);
    g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_CORRUPT);
    g_assert_nonnull(strstr(error->message, "stream digest"));
    g_clear_error(&error);

    /* A's first half, B's second half. */
    g_byte_array_set_size(spliced, 0);
    for (guint i = 0; i < ra->len; i++) {
        gsize size;
        const uint8_t *data = g_bytes_get_data((i < ra->len / 2 ? ra : rb)->pdata[i], &size);

        g_byte_array_append(spliced, data, size);
    }
    error = decode_refused(spliced->data, spliced->len, NULL);
    g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_CORRUPT);
}

static void
test_bytes_after_end(void)
{
    g_autoptr(Model) model = small_cycle();
    g_autoptr(GByteArray) stream = model_encode(model, NULL);
    g_autoptr(GByteArray) longer = g_byte_array_new();
    g_autoptr(VrWireDecoder) dec = vr_wire_decoder_new();
    g_autoptr(GError) error = NULL;
    Sink sink = { .expect = model };

    /* In the same feed: refused before END is delivered. */
    g_byte_array_append(longer, stream->data, stream->len);
    g_byte_array_append(longer, (const guint8 *)"", 1);
    error = decode_refused(longer->data, longer->len, model);
    g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL);
    g_assert_nonnull(strstr(error->message, "after the END"));
    g_clear_error(&error);

    /* A second stream behind the first. */
    g_byte_array_set_size(longer, stream->len);
    g_byte_array_append(longer, stream->data, stream->len);
    error = decode_refused(longer->data, longer->len, model);
    g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL);
    g_clear_error(&error);

    /* In a later feed: END was delivered, then the decoder fails, and finish says so. */
    g_assert_true(vr_wire_decoder_feed(dec, stream->data, stream->len, sink_record, &sink, &error));
    g_assert_true(sink.ended);
    g_assert_true(vr_wire_decoder_feed(dec, NULL, 0, sink_record, &sink, &error));
    g_assert_false(vr_wire_decoder_feed(dec, "x", 1, sink_record, &sink, &error));
    g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL);
    g_assert_nonnull(strstr(error->message, "after the END"));
    g_clear_error(&error);
    g_assert_false(vr_wire_decoder_finish(dec, &error));
    g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL);
}

static void
test_failed_stays_failed(void)
{
    g_autoptr(Model) model = small_cycle();
    g_autoptr(GByteArray) stream = model_encode(model, NULL);
    g_autoptr(VrWireDecoder) dec = vr_wire_decoder_new();
    g_autoptr(GError) first = NULL;
    g_autoptr(GError) again = NULL;
    Sink sink = { .expect = model };
    guint64 delivered;

    g_assert_false(vr_wire_decoder_finish(dec, &first));
    g_assert_error(first, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL);
    g_assert_nonnull(strstr(first->message, "empty"));
    g_clear_error(&first);

    /* finish failed it too: a good stream is refused now. */
    g_assert_false(
        vr_wire_decoder_feed(dec, stream->data, stream->len, sink_record, &sink, &first));
    g_assert_error(first, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL);
    g_assert_cmpuint(sink.delivered, ==, 0);
    g_clear_error(&first);
    g_clear_pointer(&dec, vr_wire_decoder_free);

    dec = vr_wire_decoder_new();
    stream->data[0] ^= 1;
    g_assert_false(vr_wire_decoder_feed(dec, stream->data, 100, sink_record, &sink, &first));
    g_assert_error(first, VR_WIRE_ERROR, VR_WIRE_ERROR_CORRUPT);
    stream->data[0] ^= 1;
    delivered = sink.delivered;
    /* A good stream now: the same error again, and nothing delivered. */
    g_assert_false(
        vr_wire_decoder_feed(dec, stream->data, stream->len, sink_record, &sink, &again));
    g_assert_error(again, first->domain, first->code);
    g_assert_cmpstr(again->message, ==, first->message);
    g_clear_error(&again);
    g_assert_false(vr_wire_decoder_feed(dec, NULL, 0, sink_record, &sink, &again));
    g_assert_error(again, first->domain, first->code);
    g_clear_error(&again);
    g_assert_false(vr_wire_decoder_finish(dec, &again));
    g_assert_error(again, first->domain, first->code);
    g_assert_cmpuint(sink.delivered, ==, delivered);
}

static bool
refuse_data(const VrWireRecord *rec, gpointer user_data, GError **error)
{
    guint *calls = user_data;

    (*calls)++;
    if (rec->type != VR_WIRE_RECORD_DATA)
        return true;
    g_set_error_literal(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC, "disk full");
    return false;
}

static void
test_callback_error(void)
{
    g_autoptr(Model) model = small_cycle();
    g_autoptr(GByteArray) stream = model_encode(model, NULL);
    g_autoptr(VrWireDecoder) dec = vr_wire_decoder_new();
    g_autoptr(GError) error = NULL;
    guint calls = 0;

    g_assert_false(
        vr_wire_decoder_feed(dec, stream->data, stream->len, refuse_data, &calls, &error));
    g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC);
    g_assert_cmpuint(calls, ==, 2); /* BEGIN, then the first DATA */
    g_clear_error(&error);
    g_assert_false(vr_wire_decoder_finish(dec, &error));
    g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOSPC);
}

/* ---- forged records: an independent encoder, one rule broken at a time ------------- */

typedef struct {
    GByteArray *out;
    gnutls_hash_hd_t chain;
    uint64_t records;
    uint64_t amount; /* data bytes or digests */
} Forge;

static void
forge_init(Forge *f)
{
    f->out = g_byte_array_new();
    g_assert_cmpint(gnutls_hash_init(&f->chain, GNUTLS_DIG_SHA256), ==, 0);
    f->records = f->amount = 0;
}

static void
forge_clear(Forge *f)
{
    g_byte_array_unref(f->out);
    gnutls_hash_deinit(f->chain, NULL);
}

static void
le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void
le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/*
 * Append one record: header (@reserved: 1 sets the 16-bit reserved field, 2 the 32-bit one),
 * checksum over the
 * header's first 32 bytes and @decoded, then @payload_size bytes of @payload (none when
 * @payload is NULL: for records refused by their header alone).
 */
static void
forge_raw(Forge *f, uint8_t type, uint8_t encoding, uint32_t payload_size, uint64_t offset,
          uint64_t length, const void *payload, const void *decoded, size_t decoded_size,
          uint8_t reserved)
{
    uint8_t head[64] = { 'V', 'R', 'W', '1' };
    XXH128_canonical_t canonical;
    XXH3_state_t *state;

    head[4] = type;
    head[5] = encoding;
    head[6] = reserved & 1;
    le32(head + 8, payload_size);
    le64(head + 12, offset);
    le64(head + 20, length);
    head[28] = (reserved & 2) >> 1;
    /* XXH3-128 of the header's first 32 bytes and the decoded payload, big endian */
    state = XXH3_createState();
    g_assert_nonnull(state);
    XXH3_128bits_reset(state);
    XXH3_128bits_update(state, head, 32);
    if (decoded_size > 0)
        XXH3_128bits_update(state, decoded, decoded_size);
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state));
    XXH3_freeState(state);
    memcpy(head + 32, canonical.digest, 16); /* and 16 zero bytes */
    gnutls_hash(f->chain, head + 32, 32);
    g_byte_array_append(f->out, head, sizeof(head));
    if (payload != NULL)
        g_byte_array_append(f->out, payload, payload_size);
}

/* The 128-byte identity, written field by field from docs/protocol.md. */
static void
forge_identity_bytes(const VrWireIdentity *id, uint8_t out[128])
{
    memset(out, 0, 128);
    le32(out, 1);
    le32(out + 4, id->kind);
    memcpy(out + 8, id->relationship, strnlen(id->relationship, 16));
    memcpy(out + 24, id->domain_uuid, 16);
    memcpy(out + 40, id->disk, strnlen(id->disk, 32));
    le64(out + 72, id->epoch);
    le64(out + 80, id->base_cycle);
    le64(out + 88, id->target_cycle);
    le64(out + 96, id->virtual_size);
    le32(out + 104, id->granularity);
    le32(out + 108, id->flags);
}

static void
forge_begin_bytes(Forge *f, const uint8_t identity[128])
{
    forge_raw(f, VR_WIRE_RECORD_BEGIN, 0, 128, 0, 128, identity, identity, 128, 0);
}

static void
forge_begin(Forge *f, const VrWireIdentity *id)
{
    uint8_t identity[128];

    forge_identity_bytes(id, identity);
    forge_begin_bytes(f, identity);
}

static void
forge_data(Forge *f, uint64_t offset, const void *data, size_t len)
{
    forge_raw(f, VR_WIRE_RECORD_DATA, 0, len, offset, len, data, data, len, 0);
    f->records++;
    f->amount += len;
}

static void
forge_zero(Forge *f, uint64_t offset, uint64_t len)
{
    forge_raw(f, VR_WIRE_RECORD_ZERO, 0, 0, offset, len, NULL, NULL, 0, 0);
    f->records++;
}

static void
forge_hashes(Forge *f, uint64_t first, const uint8_t *digests, uint64_t count)
{
    forge_raw(f, VR_WIRE_RECORD_HASHES, 0, count * 32, first, count, digests, digests, count * 32,
              0);
    f->records++;
    f->amount += count;
}

static void
forge_end_with(Forge *f, uint64_t records, uint64_t amount, bool bad_digest)
{
    uint8_t digest[32];

    gnutls_hash_output(f->chain, digest);
    if (bad_digest)
        digest[31] ^= 0x80;
    forge_raw(f, VR_WIRE_RECORD_END, 0, 32, records, amount, digest, digest, 32, 0);
}

static void
forge_end(Forge *f)
{
    forge_end_with(f, f->records, f->amount, false);
}

/* A zstd frame of @len bytes of @data; @content_size false: the size is left out. */
static GBytes *
zstd_frame(const void *data, size_t len, bool content_size)
{
    g_autoptr(GByteArray) out = g_byte_array_sized_new(ZSTD_compressBound(len));
    ZSTD_CCtx *cctx = ZSTD_createCCtx();
    size_t n;

    g_byte_array_set_size(out, ZSTD_compressBound(len));
    g_assert_false(ZSTD_isError(ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0)));
    if (content_size) {
        n = ZSTD_compressCCtx(cctx, out->data, out->len, data, len, 1);
    } else {
        ZSTD_outBuffer ob = { out->data, out->len, 0 };
        ZSTD_inBuffer ib = { data, len, 0 };

        n = ZSTD_compressStream2(cctx, &ob, &ib, ZSTD_e_end);
        g_assert_cmpuint(n, ==, 0);
        n = ob.pos;
    }
    g_assert_false(ZSTD_isError(n));
    ZSTD_freeCCtx(cctx);
    g_byte_array_set_size(out, n);
    return g_byte_array_free_to_bytes(g_steal_pointer(&out));
}

static VrWireIdentity
good_identity(VrWireKind kind)
{
    VrWireIdentity id = { .kind = kind,
                          .relationship = "r1",
                          .disk = "sda",
                          .epoch = 1,
                          .target_cycle = 1,
                          .virtual_size = MIB,
                          .granularity = 65536 };

    for (int i = 0; i < 16; i++)
        id.domain_uuid[i] = (uint8_t)(0x10 + i);
    if (kind == VR_WIRE_KIND_CYCLE)
        id.flags = VR_WIRE_FLAG_FULL;
    return id;
}

typedef enum {
    FORGE_GOOD_CYCLE,
    FORGE_GOOD_HASH_LIST,
    FORGE_BAD_MAGIC,
    FORGE_RESERVED_HEADER16,
    FORGE_RESERVED_HEADER32,
    FORGE_RESERVED_IDENTITY,
    FORGE_NAME_PADDING,
    FORGE_DISK_UNTERMINATED,
    FORGE_VERSION_2,
    FORGE_FIRST_NOT_BEGIN,
    FORGE_BEGIN_TWICE,
    FORGE_BEGIN_LENGTH,
    FORGE_BEGIN_SIZE,
    FORGE_DATA_IN_HASH_LIST,
    FORGE_ZERO_IN_HASH_LIST,
    FORGE_HASHES_IN_CYCLE,
    FORGE_ZSTD_ZERO,
    FORGE_UNKNOWN_TYPE,
    FORGE_UNKNOWN_ENCODING,
    FORGE_OVERLAP,
    FORGE_BACKWARDS,
    FORGE_BEYOND_SIZE,
    FORGE_OFFSET_BEYOND_SIZE,
    FORGE_OFFSET_OVERFLOW,
    FORGE_LENGTH_OVERFLOW,
    FORGE_ZERO_EMPTY,
    FORGE_ZERO_PAYLOAD,
    FORGE_DATA_TOO_LONG,
    FORGE_RAW_SIZE_MISMATCH,
    FORGE_ZSTD_TOO_BIG,
    FORGE_ZSTD_CONTENT_BIGGER,
    FORGE_ZSTD_CONTENT_SMALLER,
    FORGE_ZSTD_NO_CONTENT_SIZE,
    FORGE_ZSTD_TWO_FRAMES,
    FORGE_ZSTD_GARBAGE,
    FORGE_BAD_CHECKSUM,
    FORGE_END_RECORDS,
    FORGE_END_BYTES,
    FORGE_END_DIGEST,
    FORGE_END_SIZE,
    FORGE_HASHES_GAP,
    FORGE_HASHES_BEYOND,
    FORGE_HASHES_MISSING,
    FORGE_HASHES_SIZE,
    FORGE_HASHES_TOO_MANY,
} ForgeCase;

static void
forge_case(Forge *f, ForgeCase which)
{
    VrWireIdentity cycle = good_identity(VR_WIRE_KIND_CYCLE);
    VrWireIdentity list = good_identity(VR_WIRE_KIND_HASH_LIST);
    uint8_t identity[128];
    uint8_t data[4096];
    uint8_t digests[5 * 32];
    g_autoptr(GBytes) frame = NULL;
    g_autoptr(GByteArray) two = NULL;
    gsize frame_size;
    const void *frame_data;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i % 7);
    for (size_t i = 0; i < sizeof(digests); i++)
        digests[i] = (uint8_t)(i * 31);
    list.virtual_size = 4 * 65536 + 1; /* 5 blocks */
    forge_identity_bytes(&cycle, identity);

    switch (which) {
    case FORGE_GOOD_CYCLE:
        forge_begin(f, &cycle);
        forge_data(f, 0, data, 100);
        forge_zero(f, 4096, 4096);
        frame = zstd_frame(data, sizeof(data), true);
        frame_data = g_bytes_get_data(frame, &frame_size);
        forge_raw(f, VR_WIRE_RECORD_DATA, 1, frame_size, 8192, sizeof(data), frame_data, data,
                  sizeof(data), 0);
        f->records++;
        f->amount += sizeof(data);
        forge_zero(f, MIB - 1, 1);
        forge_end(f);
        return;
    case FORGE_GOOD_HASH_LIST:
        forge_begin(f, &list);
        forge_hashes(f, 0, digests, 2);
        forge_hashes(f, 2, digests + 64, 3);
        forge_end(f);
        return;
    case FORGE_BAD_MAGIC:
        forge_begin(f, &cycle);
        f->out->data[3] = '2';
        return;
    case FORGE_RESERVED_HEADER16:
        forge_raw(f, VR_WIRE_RECORD_BEGIN, 0, 128, 0, 128, identity, identity, 128, 1);
        return;
    case FORGE_RESERVED_HEADER32:
        forge_raw(f, VR_WIRE_RECORD_BEGIN, 0, 128, 0, 128, identity, identity, 128, 2);
        return;
    case FORGE_RESERVED_IDENTITY:
        identity[127] = 1;
        forge_begin_bytes(f, identity);
        return;
    case FORGE_NAME_PADDING:
        identity[8 + 15] = 'x'; /* "r1\0...x" */
        forge_begin_bytes(f, identity);
        return;
    case FORGE_DISK_UNTERMINATED:
        memset(identity + 40, 'a', 32);
        forge_begin_bytes(f, identity);
        return;
    case FORGE_VERSION_2:
        identity[0] = 2;
        forge_begin_bytes(f, identity);
        return;
    case FORGE_FIRST_NOT_BEGIN:
        forge_zero(f, 0, 512);
        return;
    case FORGE_BEGIN_TWICE:
        forge_begin(f, &cycle);
        forge_begin(f, &cycle);
        return;
    case FORGE_BEGIN_LENGTH:
        forge_raw(f, VR_WIRE_RECORD_BEGIN, 0, 128, 0, 0, identity, identity, 128, 0);
        return;
    case FORGE_BEGIN_SIZE:
        forge_raw(f, VR_WIRE_RECORD_BEGIN, 0, 127, 0, 127, identity, identity, 127, 0);
        return;
    case FORGE_DATA_IN_HASH_LIST:
        forge_begin(f, &list);
        forge_data(f, 0, data, 10);
        return;
    case FORGE_ZERO_IN_HASH_LIST:
        forge_begin(f, &list);
        forge_zero(f, 0, 10);
        return;
    case FORGE_HASHES_IN_CYCLE:
        forge_begin(f, &cycle);
        forge_hashes(f, 0, digests, 1);
        return;
    case FORGE_ZSTD_ZERO:
        forge_begin(f, &cycle);
        forge_raw(f, VR_WIRE_RECORD_ZERO, 1, 0, 0, 512, NULL, NULL, 0, 0);
        return;
    case FORGE_UNKNOWN_TYPE:
        forge_begin(f, &cycle);
        forge_raw(f, 6, 0, 0, 0, 512, NULL, NULL, 0, 0);
        return;
    case FORGE_UNKNOWN_ENCODING:
        forge_begin(f, &cycle);
        forge_raw(f, VR_WIRE_RECORD_DATA, 2, 10, 0, 10, data, data, 10, 0);
        return;
    case FORGE_OVERLAP:
        forge_begin(f, &cycle);
        forge_data(f, 0, data, 4096);
        forge_zero(f, 2048, 4096);
        return;
    case FORGE_BACKWARDS:
        forge_begin(f, &cycle);
        forge_zero(f, 8192, 512);
        forge_data(f, 0, data, 512);
        return;
    case FORGE_BEYOND_SIZE:
        forge_begin(f, &cycle);
        forge_zero(f, MIB - 512, 1024);
        return;
    case FORGE_OFFSET_BEYOND_SIZE:
        forge_begin(f, &cycle);
        forge_data(f, MIB + 1, data, 1);
        return;
    case FORGE_OFFSET_OVERFLOW:
        /* offset + length wraps to 512: within the disk if added naively. */
        forge_begin(f, &cycle);
        forge_zero(f, G_MAXUINT64 - 511, 1024);
        return;
    case FORGE_LENGTH_OVERFLOW:
        forge_begin(f, &cycle);
        forge_zero(f, 4096, G_MAXUINT64 - 1023);
        return;
    case FORGE_ZERO_EMPTY:
        forge_begin(f, &cycle);
        forge_zero(f, 0, 0);
        return;
    case FORGE_ZERO_PAYLOAD:
        forge_begin(f, &cycle);
        forge_raw(f, VR_WIRE_RECORD_ZERO, 0, 4, 0, 512, data, data, 4, 0);
        return;
    case FORGE_DATA_TOO_LONG:
        /* Refused from the header: no 4 MiB payload needed. */
        forge_begin(f, &cycle);
        forge_raw(f, VR_WIRE_RECORD_DATA, 0, VR_WIRE_MAX_DATA + 1, 0, VR_WIRE_MAX_DATA + 1, NULL,
                  NULL, 0, 0);
        return;
    case FORGE_RAW_SIZE_MISMATCH:
        forge_begin(f, &cycle);
        forge_raw(f, VR_WIRE_RECORD_DATA, 0, 10, 0, 11, data, data, 10, 0);
        return;
    case FORGE_ZSTD_TOO_BIG:
        forge_begin(f, &cycle);
        forge_raw(f, VR_WIRE_RECORD_DATA, 1, ZSTD_compressBound(VR_WIRE_MAX_DATA) + 1, 0,
                  VR_WIRE_MAX_DATA, NULL, NULL, 0, 0);
        return;
    case FORGE_ZSTD_CONTENT_BIGGER:
        /* The frame holds 4096 bytes, the record says 1000. */
        forge_begin(f, &cycle);
        frame = zstd_frame(data, sizeof(data), true);
        frame_data = g_bytes_get_data(frame, &frame_size);
        forge_raw(f, VR_WIRE_RECORD_DATA, 1, frame_size, 0, 1000, frame_data, data, 1000, 0);
        return;
    case FORGE_ZSTD_CONTENT_SMALLER:
        forge_begin(f, &cycle);
        frame = zstd_frame(data, 1000, true);
        frame_data = g_bytes_get_data(frame, &frame_size);
        forge_raw(f, VR_WIRE_RECORD_DATA, 1, frame_size, 0, sizeof(data), frame_data, data,
                  sizeof(data), 0);
        return;
    case FORGE_ZSTD_NO_CONTENT_SIZE:
        forge_begin(f, &cycle);
        frame = zstd_frame(data, sizeof(data), false);
        frame_data = g_bytes_get_data(frame, &frame_size);
        forge_raw(f, VR_WIRE_RECORD_DATA, 1, frame_size, 0, sizeof(data), frame_data, data,
                  sizeof(data), 0);
        return;
    case FORGE_ZSTD_TWO_FRAMES:
        forge_begin(f, &cycle);
        frame = zstd_frame(data, 2048, true);
        frame_data = g_bytes_get_data(frame, &frame_size);
        two = g_byte_array_new();
        g_byte_array_append(two, frame_data, frame_size);
        g_byte_array_append(two, frame_data, frame_size);
        forge_raw(f, VR_WIRE_RECORD_DATA, 1, two->len, 0, 2048, two->data, data, 2048, 0);
        return;
    case FORGE_ZSTD_GARBAGE:
        forge_begin(f, &cycle);
        forge_raw(f, VR_WIRE_RECORD_DATA, 1, 100, 0, 4096, data, data, 4096, 0);
        return;
    case FORGE_BAD_CHECKSUM:
        forge_begin(f, &cycle);
        forge_data(f, 0, data, 100);
        f->out->data[f->out->len - 100 - 1] ^= 1;
        return;
    case FORGE_END_RECORDS:
        forge_begin(f, &cycle);
        forge_data(f, 0, data, 100);
        forge_end_with(f, 2, 100, false);
        return;
    case FORGE_END_BYTES:
        forge_begin(f, &cycle);
        forge_data(f, 0, data, 100);
        forge_end_with(f, 1, 99, false);
        return;
    case FORGE_END_DIGEST:
        forge_begin(f, &cycle);
        forge_data(f, 0, data, 100);
        forge_end_with(f, 1, 100, true);
        return;
    case FORGE_END_SIZE:
        forge_begin(f, &cycle);
        forge_raw(f, VR_WIRE_RECORD_END, 0, 31, 0, 0, data, data, 31, 0);
        return;
    case FORGE_HASHES_GAP:
        forge_begin(f, &list);
        forge_hashes(f, 0, digests, 2);
        forge_hashes(f, 3, digests, 2);
        return;
    case FORGE_HASHES_BEYOND:
        forge_begin(f, &list);
        forge_hashes(f, 0, digests, 5);
        forge_hashes(f, 5, digests, 1);
        return;
    case FORGE_HASHES_MISSING:
        forge_begin(f, &list);
        forge_hashes(f, 0, digests, 4);
        forge_end(f);
        return;
    case FORGE_HASHES_SIZE:
        forge_begin(f, &list);
        forge_raw(f, VR_WIRE_RECORD_HASHES, 0, 64, 0, 3, digests, digests, 64, 0);
        return;
    case FORGE_HASHES_TOO_MANY:
        forge_begin(f, &list);
        forge_raw(f, VR_WIRE_RECORD_HASHES, 0, (VR_WIRE_MAX_HASHES + 1) * 32, 0,
                  VR_WIRE_MAX_HASHES + 1, NULL, NULL, 0, 0);
        return;
    }
    g_assert_not_reached();
}

#define ACCEPTED (-1)

static const struct {
    ForgeCase which;
    int code; /* VrWireErrorCode, or ACCEPTED */
    const char *message;
} forge_cases[] = {
    { FORGE_GOOD_CYCLE, ACCEPTED, NULL },
    { FORGE_GOOD_HASH_LIST, ACCEPTED, NULL },
    { FORGE_BAD_MAGIC, VR_WIRE_ERROR_CORRUPT, "record 0 (BEGIN): bad magic" },
    { FORGE_RESERVED_HEADER16, VR_WIRE_ERROR_CORRUPT, "reserved header bytes" },
    { FORGE_RESERVED_HEADER32, VR_WIRE_ERROR_CORRUPT, "reserved header bytes" },
    { FORGE_RESERVED_IDENTITY, VR_WIRE_ERROR_CORRUPT, "reserved identity bytes" },
    { FORGE_NAME_PADDING, VR_WIRE_ERROR_CORRUPT, "relationship id has padding" },
    { FORGE_DISK_UNTERMINATED, VR_WIRE_ERROR_PROTOCOL, "disk name is not terminated" },
    { FORGE_VERSION_2, VR_WIRE_ERROR_PROTOCOL, "version 2 is not supported" },
    { FORGE_FIRST_NOT_BEGIN, VR_WIRE_ERROR_PROTOCOL, "record 0 (ZERO): a stream starts" },
    { FORGE_BEGIN_TWICE, VR_WIRE_ERROR_PROTOCOL, "record 1 (BEGIN): BEGIN after the start" },
    { FORGE_BEGIN_LENGTH, VR_WIRE_ERROR_PROTOCOL, "offset and length" },
    { FORGE_BEGIN_SIZE, VR_WIRE_ERROR_PROTOCOL, "payload of 127 bytes" },
    { FORGE_DATA_IN_HASH_LIST, VR_WIRE_ERROR_PROTOCOL, "(DATA): not allowed in a hash list" },
    { FORGE_ZERO_IN_HASH_LIST, VR_WIRE_ERROR_PROTOCOL, "(ZERO): not allowed in a hash list" },
    { FORGE_HASHES_IN_CYCLE, VR_WIRE_ERROR_PROTOCOL, "(HASHES): not allowed in a cycle" },
    { FORGE_ZSTD_ZERO, VR_WIRE_ERROR_PROTOCOL, "only DATA records may be compressed" },
    { FORGE_UNKNOWN_TYPE, VR_WIRE_ERROR_PROTOCOL, "unknown record type 6" },
    { FORGE_UNKNOWN_ENCODING, VR_WIRE_ERROR_PROTOCOL, "unknown encoding 2" },
    { FORGE_OVERLAP, VR_WIRE_ERROR_PROTOCOL, "record 2 (ZERO): offset 2048 overlaps" },
    { FORGE_BACKWARDS, VR_WIRE_ERROR_PROTOCOL, "offset 0 overlaps or precedes" },
    { FORGE_BEYOND_SIZE, VR_WIRE_ERROR_PROTOCOL, "beyond the virtual size" },
    { FORGE_OFFSET_BEYOND_SIZE, VR_WIRE_ERROR_PROTOCOL, "beyond the virtual size" },
    { FORGE_OFFSET_OVERFLOW, VR_WIRE_ERROR_PROTOCOL, "beyond the virtual size" },
    { FORGE_LENGTH_OVERFLOW, VR_WIRE_ERROR_PROTOCOL, "beyond the virtual size" },
    { FORGE_ZERO_EMPTY, VR_WIRE_ERROR_PROTOCOL, "length is 0" },
    { FORGE_ZERO_PAYLOAD, VR_WIRE_ERROR_PROTOCOL, "payload of 4 bytes, not 0" },
    { FORGE_DATA_TOO_LONG, VR_WIRE_ERROR_PROTOCOL, "length 4194305 is not 1..4194304" },
    { FORGE_RAW_SIZE_MISMATCH, VR_WIRE_ERROR_PROTOCOL, "raw payload of 10 bytes" },
    { FORGE_ZSTD_TOO_BIG, VR_WIRE_ERROR_PROTOCOL, "zstd payload of" },
    { FORGE_ZSTD_CONTENT_BIGGER, VR_WIRE_ERROR_CORRUPT, "zstd frame holds 4096 bytes, not 1000" },
    { FORGE_ZSTD_CONTENT_SMALLER, VR_WIRE_ERROR_CORRUPT, "zstd frame holds 1000 bytes" },
    { FORGE_ZSTD_NO_CONTENT_SIZE, VR_WIRE_ERROR_CORRUPT, "does not declare its content size" },
    { FORGE_ZSTD_TWO_FRAMES, VR_WIRE_ERROR_CORRUPT, "not exactly one frame" },
    { FORGE_ZSTD_GARBAGE, VR_WIRE_ERROR_CORRUPT, "not a zstd frame" },
    { FORGE_BAD_CHECKSUM, VR_WIRE_ERROR_CORRUPT, "record 1 (DATA): checksum does not match" },
    { FORGE_END_RECORDS, VR_WIRE_ERROR_PROTOCOL, "END counts 2 records" },
    { FORGE_END_BYTES, VR_WIRE_ERROR_PROTOCOL, "END counts 1 records and 99 data bytes" },
    { FORGE_END_DIGEST, VR_WIRE_ERROR_CORRUPT, "record 2 (END): stream digest" },
    { FORGE_END_SIZE, VR_WIRE_ERROR_PROTOCOL, "payload of 31 bytes, not 32" },
    { FORGE_HASHES_GAP, VR_WIRE_ERROR_PROTOCOL, "starts at block 3, not 2" },
    { FORGE_HASHES_BEYOND, VR_WIRE_ERROR_PROTOCOL, "beyond the 5 blocks" },
    { FORGE_HASHES_MISSING, VR_WIRE_ERROR_PROTOCOL, "4 of 5 digests were sent" },
    { FORGE_HASHES_SIZE, VR_WIRE_ERROR_PROTOCOL, "payload of 64 bytes for 3 digests" },
    { FORGE_HASHES_TOO_MANY, VR_WIRE_ERROR_PROTOCOL, "131073 digests is not 1..131072" },
};

static void
test_forged(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(forge_cases); i++) {
        for (Chunking chunking = CHUNK_WHOLE; chunking <= CHUNK_BYTE; chunking++) {
            g_autoptr(GError) error = NULL;
            Forge f;
            Sink sink = { 0 };
            bool ok;

            forge_init(&f);
            forge_case(&f, forge_cases[i].which);
            ok = decode(f.out->data, f.out->len, chunking, NULL, &sink, NULL, &error);
            if (forge_cases[i].code == ACCEPTED) {
                g_assert_no_error(error);
                g_assert_true(ok);
            } else {
                g_assert_false(ok);
                g_assert_false(sink.ended);
                if (error->code != forge_cases[i].code ||
                    strstr(error->message, forge_cases[i].message) == NULL) {
                    g_error("case %u: got '%s' (code %d), expected '%s' (code %d)", i,
                            error->message, error->code, forge_cases[i].message,
                            forge_cases[i].code);
                }
            }
            forge_clear(&f);
        }
    }
}

/* ---- identity rules --------------------------------------------------------------- */

typedef void (*IdentityBreak)(VrWireIdentity *id);

static void
bad_relationship_chars(VrWireIdentity *id)
{
    g_strlcpy(id->relationship, "Rel-1", sizeof(id->relationship));
}

static void
bad_relationship_empty(VrWireIdentity *id)
{
    id->relationship[0] = '\0';
}

static void
bad_disk_chars(VrWireIdentity *id)
{
    g_strlcpy(id->disk, "../vda", sizeof(id->disk));
}

static void
bad_disk_empty(VrWireIdentity *id)
{
    id->disk[0] = '\0';
}

static void
bad_base_equals_target(VrWireIdentity *id)
{
    id->flags = 0;
    id->base_cycle = id->target_cycle = 5;
}

static void
bad_base_after_target(VrWireIdentity *id)
{
    id->flags = 0;
    id->base_cycle = 6;
    id->target_cycle = 5;
}

static void
bad_full_with_base(VrWireIdentity *id)
{
    id->flags = VR_WIRE_FLAG_FULL;
    id->base_cycle = 1;
    id->target_cycle = 2;
}

static void
bad_resync_with_base(VrWireIdentity *id)
{
    id->flags = VR_WIRE_FLAG_RESYNC;
    id->base_cycle = 1;
    id->target_cycle = 2;
}

static void
bad_no_base_incremental(VrWireIdentity *id)
{
    id->flags = VR_WIRE_FLAG_APP_CONSISTENT;
    id->base_cycle = 0;
}

static void
bad_full_and_resync(VrWireIdentity *id)
{
    id->flags = VR_WIRE_FLAG_FULL | VR_WIRE_FLAG_RESYNC;
}

static void
bad_unknown_flag(VrWireIdentity *id)
{
    id->flags |= 1u << 3;
}

static void
bad_granularity_1000(VrWireIdentity *id)
{
    id->granularity = 1000;
}

static void
bad_granularity_256(VrWireIdentity *id)
{
    id->granularity = 256;
}

static void
bad_granularity_0(VrWireIdentity *id)
{
    id->granularity = 0;
}

static void
bad_size_0(VrWireIdentity *id)
{
    id->virtual_size = 0;
}

static void
bad_kind_0(VrWireIdentity *id)
{
    id->kind = 0;
}

static void
bad_kind_3(VrWireIdentity *id)
{
    id->kind = 3;
}

static void
bad_hash_list_flags(VrWireIdentity *id)
{
    id->kind = VR_WIRE_KIND_HASH_LIST;
    id->base_cycle = 0;
}

static void
bad_hash_list_base(VrWireIdentity *id)
{
    id->kind = VR_WIRE_KIND_HASH_LIST;
    id->flags = 0;
    id->base_cycle = 1;
    id->target_cycle = 2;
}

static const struct {
    const char *name;
    IdentityBreak apply;
    const char *message;
} identity_cases[] = {
    { "relationship chars", bad_relationship_chars, "relationship id is not" },
    { "relationship empty", bad_relationship_empty, "relationship id is not" },
    { "disk chars", bad_disk_chars, "disk name is not" },
    { "disk empty", bad_disk_empty, "disk name is not" },
    { "base == target", bad_base_equals_target, "target cycle is not after" },
    { "base > target", bad_base_after_target, "target cycle is not after" },
    { "FULL with a base", bad_full_with_base, "base cycle 0, and only those" },
    { "RESYNC with a base", bad_resync_with_base, "base cycle 0, and only those" },
    { "incremental without base", bad_no_base_incremental, "base cycle 0, and only those" },
    { "FULL and RESYNC", bad_full_and_resync, "full or a resync, not both" },
    { "unknown flag", bad_unknown_flag, "unknown flags" },
    { "granularity 1000", bad_granularity_1000, "granularity" },
    { "granularity 256", bad_granularity_256, "granularity" },
    { "granularity 0", bad_granularity_0, "granularity" },
    { "virtual size 0", bad_size_0, "virtual size is 0" },
    { "kind 0", bad_kind_0, "unknown stream kind" },
    { "kind 3", bad_kind_3, "unknown stream kind" },
    { "hash list with flags", bad_hash_list_flags, "a hash list has base cycle 0 and no flags" },
    { "hash list with a base", bad_hash_list_base, "a hash list has base cycle 0 and no flags" },
};

static void
test_identity_rules(void)
{
    VrWireIdentity good = good_identity(VR_WIRE_KIND_CYCLE);
    VrWireIdentity full_name = good;

    g_assert_true(vr_wire_identity_check(&good, NULL));
    /* The longest names fit. */
    memset(full_name.relationship, 'z', VR_WIRE_RELATIONSHIP_MAX);
    memset(full_name.disk, '9', VR_WIRE_DISK_MAX);
    g_assert_true(vr_wire_identity_check(&full_name, NULL));

    for (guint i = 0; i < G_N_ELEMENTS(identity_cases); i++) {
        VrWireIdentity bad = good;
        g_autoptr(GError) error = NULL;
        g_autoptr(VrWireEncoder) enc = NULL;
        Forge f;

        identity_cases[i].apply(&bad);
        g_test_message("identity: %s", identity_cases[i].name);
        /* The encoder's caller: INVALID. */
        g_assert_false(vr_wire_identity_check(&bad, &error));
        g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_INVALID);
        g_assert_nonnull(strstr(error->message, identity_cases[i].message));
        g_clear_error(&error);
        enc = vr_wire_encoder_new(&bad, &error);
        g_assert_null(enc);
        g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_INVALID);
        g_clear_error(&error);

        /* The same identity on the wire: PROTOCOL. */
        forge_init(&f);
        forge_begin(&f, &bad);
        error = decode_refused(f.out->data, f.out->len, NULL);
        g_assert_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL);
        g_assert_nonnull(strstr(error->message, "record 0 (BEGIN): stream identity"));
        g_assert_nonnull(strstr(error->message, identity_cases[i].message));
        forge_clear(&f);
    }

    /* Names that are not terminated inside the struct. */
    full_name.relationship[VR_WIRE_RELATIONSHIP_MAX] = 'z';
    g_assert_false(vr_wire_identity_check(&full_name, NULL));
    full_name = good;
    full_name.disk[VR_WIRE_DISK_MAX] = 'z';
    memset(full_name.disk, 'z', VR_WIRE_DISK_MAX);
    g_assert_false(vr_wire_identity_check(&full_name, NULL));
}

/* ---- the encoder refuses what the decoder would refuse ----------------------------- */

#define ASSERT_INVALID(call)                                            \
    G_STMT_START                                                        \
    {                                                                   \
        guint before_ = out->len;                                       \
        g_autoptr(GError) error_ = NULL;                                \
        GError **error = &error_;                                       \
                                                                        \
        g_assert_false(call);                                           \
        g_assert_error(error_, VR_WIRE_ERROR, VR_WIRE_ERROR_INVALID);   \
        g_assert_cmpuint(out->len, ==, before_); /* nothing appended */ \
    }                                                                   \
    G_STMT_END

static void
test_encoder_rules(void)
{
    VrWireIdentity cycle = good_identity(VR_WIRE_KIND_CYCLE);
    VrWireIdentity list = good_identity(VR_WIRE_KIND_HASH_LIST);
    g_autoptr(VrWireEncoder) enc = vr_wire_encoder_new(&cycle, NULL);
    g_autoptr(VrWireEncoder) lenc = NULL;
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autofree uint8_t *big = g_malloc0(VR_WIRE_MAX_DATA + VR_WIRE_DIGEST_SIZE);
    uint8_t digests[3 * 32] = { 0 };
    Sink sink = { 0 };
    g_autoptr(GError) err = NULL;

    /* Nothing before BEGIN. */
    ASSERT_INVALID(vr_wire_encoder_add_data(enc, 0, big, 1, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, 0, 1, out, error));
    ASSERT_INVALID(vr_wire_encoder_end(enc, out, error));
    g_assert_true(vr_wire_encoder_begin(enc, out, NULL));
    ASSERT_INVALID(vr_wire_encoder_begin(enc, out, error));

    g_assert_true(vr_wire_encoder_add_data(enc, 4096, big, 512, out, NULL));
    ASSERT_INVALID(vr_wire_encoder_add_data(enc, 8192, big, 0, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_data(enc, 8192, big, VR_WIRE_MAX_DATA + 1, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_data(enc, 4096, big, 512, out, error)); /* repeated */
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, 4096 + 511, 1, out, error));  /* overlaps */
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, 0, 512, out, error));         /* backwards */
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, 8192, 0, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, MIB - 512, 1024, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, MIB + 1, 1, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, G_MAXUINT64 - 511, 1024, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, 8192, G_MAXUINT64 - 4095, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_hashes(enc, 0, digests, 1, out, error));
    /* Refusals leave the encoder usable: the stream still decodes. */
    g_assert_true(vr_wire_encoder_add_zero(enc, 4096 + 512, MIB - 4096 - 512, out, NULL));
    g_assert_true(vr_wire_encoder_end(enc, out, NULL));
    ASSERT_INVALID(vr_wire_encoder_end(enc, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_zero(enc, MIB - 1, 1, out, error));
    g_assert_true(decode(out->data, out->len, CHUNK_WHOLE, NULL, &sink, NULL, &err));
    g_assert_no_error(err);

    /* A hash list of 4 * 65536 + 1 bytes: 5 blocks. */
    list.virtual_size = 4 * 65536 + 1;
    lenc = vr_wire_encoder_new(&list, NULL);
    g_byte_array_set_size(out, 0);
    g_assert_true(vr_wire_encoder_begin(lenc, out, NULL));
    ASSERT_INVALID(vr_wire_encoder_add_data(lenc, 0, big, 1, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_zero(lenc, 0, 1, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_hashes(lenc, 1, digests, 1, out, error)); /* gap */
    ASSERT_INVALID(vr_wire_encoder_add_hashes(lenc, 0, digests, 0, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_hashes(lenc, 0, big, VR_WIRE_MAX_HASHES + 1, out, error));
    ASSERT_INVALID(vr_wire_encoder_add_hashes(lenc, 0, big, 6, out, error)); /* beyond */
    g_assert_true(vr_wire_encoder_add_hashes(lenc, 0, digests, 3, out, NULL));
    ASSERT_INVALID(vr_wire_encoder_add_hashes(lenc, 0, digests, 1, out, error)); /* repeated */
    ASSERT_INVALID(vr_wire_encoder_end(lenc, out, error));                       /* 3 of 5 */
    g_assert_true(vr_wire_encoder_add_hashes(lenc, 3, digests, 2, out, NULL));
    g_assert_true(vr_wire_encoder_end(lenc, out, NULL));
    sink = (Sink){ 0 };
    g_assert_true(decode(out->data, out->len, CHUNK_WHOLE, NULL, &sink, NULL, &err));
    g_assert_no_error(err);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/wire/roundtrip/model", test_roundtrip_model);
    g_test_add_func("/wire/roundtrip/hash-list", test_roundtrip_hashes);
    g_test_add_func("/wire/compression", test_compression);
    g_test_add_func("/wire/integrity/truncated", test_truncated);
    g_test_add_func("/wire/integrity/every-bit-flipped", test_every_bit_flipped);
    g_test_add_func("/wire/integrity/two-flips", test_two_flips);
    g_test_add_func("/wire/integrity/records-dropped-repeated-swapped",
                    test_records_dropped_repeated_swapped);
    g_test_add_func("/wire/integrity/spliced", test_spliced);
    g_test_add_func("/wire/integrity/bytes-after-end", test_bytes_after_end);
    g_test_add_func("/wire/decoder/failed-stays-failed", test_failed_stays_failed);
    g_test_add_func("/wire/decoder/callback-error", test_callback_error);
    g_test_add_func("/wire/decoder/forged", test_forged);
    g_test_add_func("/wire/identity-rules", test_identity_rules);
    g_test_add_func("/wire/encoder-rules", test_encoder_rules);

    return g_test_run();
}
