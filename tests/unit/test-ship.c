/*
 * test-ship.c: a spool encoded into a wire stream, checked by the wire decoder
 *
 * Each case writes a spool with VrSpoolWriter from a list of records (the model), encodes it
 * with vr_ship_encode(), feeds the stream file to VrWireDecoder in random chunks and
 * compares the identity and every record it delivers (type, offset, length, bytes) with the
 * model; the decoder itself verifies each record's checksum and the END digest, and
 * vr_wire_decoder_finish() proves the stream ends there. Then the failures: a spool with any
 * byte flipped, cut at any length or extended, a missing spool, an existing stream or
 * ".part" file, a bad relationship id, a missing directory and a write error must each fail
 * with an error and leave no output behind. Last, a 256 MiB spool is encoded in a child
 * process whose peak resident memory (VmHWM) must stay far below the spool's size.
 *
 * Random tests use g_test_rand_int(): rerun with --seed to reproduce.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "vr-ship.h"
#include "vr-spool.h"
#include "vr-wire.h"

#define KIB 1024
#define MIB (1024 * 1024)
#define TIB (G_GUINT64_CONSTANT(1024) * 1024 * 1024 * 1024)

/* ---- fixture ---------------------------------------------------------------------- */

typedef struct {
    char *dir;
    char *spool;
    char *stream;
    char *part;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    fx->dir = g_dir_make_tmp("vr-ship-XXXXXX", &error);
    g_assert_no_error(error);
    fx->spool = g_build_filename(fx->dir, "vda.spool", NULL);
    fx->stream = g_build_filename(fx->dir, "vda.stream", NULL);
    fx->part = g_strconcat(fx->stream, ".part", NULL);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    g_autoptr(GDir) dir = g_dir_open(fx->dir, 0, NULL);
    const char *name;

    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
        g_autofree char *path = g_build_filename(fx->dir, name, NULL);

        g_unlink(path);
    }
    g_rmdir(fx->dir);
    g_free(fx->part);
    g_free(fx->stream);
    g_free(fx->spool);
    g_free(fx->dir);
}

/* Neither the stream nor its ".part" file exists. */
static void
assert_no_output(Fixture *fx)
{
    g_assert_false(g_file_test(fx->stream, G_FILE_TEST_EXISTS));
    g_assert_false(g_file_test(fx->part, G_FILE_TEST_EXISTS));
}

/* ---- the model: the records a spool is written from --------------------------------- */

typedef struct {
    VrSpoolRecordType type;
    uint64_t offset;
    uint64_t length;
    uint8_t *data; /* DATA: @length bytes */
} Rec;

static void
rec_clear(gpointer p)
{
    g_free(((Rec *)p)->data);
}

static GArray *
recs_new(void)
{
    GArray *recs = g_array_new(FALSE, TRUE, sizeof(Rec));

    g_array_set_clear_func(recs, rec_clear);
    return recs;
}

static void
recs_add_data(GArray *recs, uint64_t offset, const uint8_t *data, uint64_t len)
{
    Rec rec = { VR_SPOOL_RECORD_DATA, offset, len, g_memdup2(data, len) };

    g_array_append_val(recs, rec);
}

static void
recs_add_zero(GArray *recs, uint64_t offset, uint64_t len)
{
    Rec rec = { VR_SPOOL_RECORD_ZERO, offset, len, NULL };

    g_array_append_val(recs, rec);
}

static guint
recs_count_data(GArray *recs)
{
    guint n = 0;

    for (guint i = 0; i < recs->len; i++)
        n += g_array_index(recs, Rec, i).type == VR_SPOOL_RECORD_DATA;
    return n;
}

/* Log-like text: zstd makes it much smaller. */
static void
fill_text(uint8_t *buf, size_t len, GRand *rand)
{
    guint seq = g_rand_int(rand);
    size_t done = 0;

    while (done < len) {
        char line[128];
        int n = g_snprintf(line, sizeof(line),
                           "2024-05-%02u 12:%02u:%02u vda: wrote block %u of extent %u ok\n",
                           1 + seq % 28, seq % 60, (seq / 60) % 60, seq, seq / 16);
        size_t take = MIN((size_t)n, len - done);

        memcpy(buf + done, line, take);
        done += take;
        seq++;
    }
}

/* Random bytes: zstd cannot make them 10% smaller, so they go raw. */
static void
fill_random(uint8_t *buf, size_t len, GRand *rand)
{
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)g_rand_int(rand);
}

typedef enum {
    FILL_TEXT,   /* every DATA record compressible */
    FILL_RANDOM, /* none */
    FILL_MIXED,  /* some, and ZERO records */
} Fill;

/*
 * A random cycle over the first @span bytes of the disk: gaps or none, lengths from 1 byte
 * to 256 KiB (odd ones included), DATA and ZERO records as @fill says.
 */
static GArray *
recs_random(GRand *rand, uint64_t span, Fill fill)
{
    GArray *recs = recs_new();
    g_autofree uint8_t *buf = g_malloc(256 * KIB);
    uint64_t offset = 0;

    while (TRUE) {
        uint64_t gap = g_rand_int_range(rand, 0, 3) * 4096;
        /* Text shorter than a few lines does not shrink by 10%: text records are longer. */
        uint64_t min = fill == FILL_TEXT ? 4096 : 1;
        uint64_t len;
        int kind; /* 0 text, 1 random, 2 ZERO */

        if (g_rand_boolean(rand))
            len = g_rand_int_range(rand, 1, 65) * 4096;
        else
            len = g_rand_int_range(rand, min, 256 * KIB + 1);
        if (fill == FILL_MIXED)
            kind = g_rand_int_range(rand, 0, 3);
        else
            kind = fill == FILL_TEXT ? 0 : 1;
        offset += gap;
        if (offset + len > span)
            break;
        if (kind == 2) {
            recs_add_zero(recs, offset, len);
        } else {
            if (kind == 0)
                fill_text(buf, len, rand);
            else
                fill_random(buf, len, rand);
            recs_add_data(recs, offset, buf, len);
        }
        offset += len;
    }
    return recs;
}

static VrSpoolHeader
make_header(uint32_t flags, uint64_t base, uint64_t cycle, uint64_t virtual_size)
{
    VrSpoolHeader h = {
        .virtual_size = virtual_size,
        .granularity = 65536,
        .flags = flags,
        .base_cycle = base,
        .cycle = cycle,
    };

    for (int i = 0; i < 16; i++)
        h.domain_uuid[i] = (uint8_t)(0x50 + 3 * i);
    g_strlcpy(h.disk, "vdb", sizeof(h.disk));
    return h;
}

static void
write_spool(const char *path, const VrSpoolHeader *h, GArray *recs, VrSpoolTotals *totals)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrSpoolWriter) writer = vr_spool_writer_new(path, h, &error);

    g_assert_no_error(error);
    for (guint i = 0; i < recs->len; i++) {
        const Rec *r = &g_array_index(recs, Rec, i);
        bool ok = r->type == VR_SPOOL_RECORD_DATA
                      ? vr_spool_writer_add_data(writer, r->offset, r->data, r->length, &error)
                      : vr_spool_writer_add_zero(writer, r->offset, r->length, &error);

        g_assert_no_error(error);
        g_assert_true(ok);
    }
    g_assert_true(vr_spool_writer_finish(writer, totals, &error));
    g_assert_no_error(error);
}

/* ---- decoding the stream and comparing it with the model ---------------------------- */

typedef struct {
    const VrSpoolHeader *header;
    const VrShipIdentity *id;
    GArray *recs;
    guint next; /* the model record the next DATA or ZERO must equal */
    bool began;
    bool ended;
    uint64_t zstd_records;
} Check;

static void
check_identity(const Check *c, const VrWireIdentity *got)
{
    uint32_t flags = 0;

    if (c->header->flags & VR_SPOOL_FLAG_FULL)
        flags |= VR_WIRE_FLAG_FULL;
    if (c->header->flags & VR_SPOOL_FLAG_RESYNC)
        flags |= VR_WIRE_FLAG_RESYNC;
    if (c->header->flags & VR_SPOOL_FLAG_APP_CONSISTENT)
        flags |= VR_WIRE_FLAG_APP_CONSISTENT;
    g_assert_cmpint(got->kind, ==, VR_WIRE_KIND_CYCLE);
    g_assert_cmpstr(got->relationship, ==, c->id->relationship);
    g_assert_cmpmem(got->domain_uuid, 16, c->header->domain_uuid, 16);
    g_assert_cmpstr(got->disk, ==, c->header->disk);
    g_assert_cmpuint(got->epoch, ==, c->id->epoch);
    g_assert_cmpuint(got->base_cycle, ==, c->header->base_cycle);
    g_assert_cmpuint(got->target_cycle, ==, c->header->cycle);
    g_assert_cmpuint(got->virtual_size, ==, c->header->virtual_size);
    g_assert_cmpuint(got->granularity, ==, c->header->granularity);
    g_assert_cmphex(got->flags, ==, flags);
}

static bool
check_record(const VrWireRecord *record, gpointer user_data, GError **error)
{
    Check *c = user_data;
    const Rec *want;

    switch (record->type) {
    case VR_WIRE_RECORD_BEGIN:
        g_assert_false(c->began);
        check_identity(c, record->identity);
        c->began = true;
        break;
    case VR_WIRE_RECORD_DATA:
    case VR_WIRE_RECORD_ZERO:
        g_assert_true(c->began);
        g_assert_cmpuint(c->next, <, c->recs->len);
        want = &g_array_index(c->recs, Rec, c->next);
        g_assert_cmpint(record->type, ==,
                        want->type == VR_SPOOL_RECORD_DATA ? VR_WIRE_RECORD_DATA
                                                           : VR_WIRE_RECORD_ZERO);
        g_assert_cmpuint(record->offset, ==, want->offset);
        g_assert_cmpuint(record->length, ==, want->length);
        if (record->type == VR_WIRE_RECORD_DATA) {
            g_assert_cmpmem(record->data, record->data_size, want->data, want->length);
            c->zstd_records += record->encoding == VR_WIRE_ENCODING_ZSTD;
        } else {
            g_assert_null(record->data);
        }
        c->next++;
        break;
    case VR_WIRE_RECORD_END:
        /* Delivered only after the decoder matched the counts and the stream digest. */
        g_assert_cmpuint(c->next, ==, c->recs->len);
        g_assert_cmpuint(record->offset, ==, c->recs->len);
        c->ended = true;
        break;
    default:
        g_assert_not_reached();
    }
    return true;
}

/* Decode @path in random chunks; every record must equal the model, in order. */
static void
decode_and_compare(const char *path, const VrSpoolHeader *h, const VrShipIdentity *id, GArray *recs,
                   const VrShipTotals *totals, GRand *rand)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrWireDecoder) decoder = vr_wire_decoder_new();
    g_autofree uint8_t *buf = g_malloc(256 * KIB);
    Check c = { .header = h, .id = id, .recs = recs };
    VrWireTotals wt;
    FILE *f = fopen(path, "rb");
    size_t n;

    g_assert_nonnull(f);
    while ((n = fread(buf, 1, g_rand_int_range(rand, 1, 256 * KIB + 1), f)) > 0) {
        g_assert_true(vr_wire_decoder_feed(decoder, buf, n, check_record, &c, &error));
        g_assert_no_error(error);
    }
    g_assert_false(ferror(f));
    fclose(f);
    g_assert_true(vr_wire_decoder_finish(decoder, &error));
    g_assert_no_error(error);
    g_assert_true(c.ended);

    vr_wire_decoder_get_totals(decoder, &wt);
    g_assert_cmpuint(wt.records, ==, totals->records);
    g_assert_cmpuint(wt.data_bytes, ==, totals->data_bytes);
    g_assert_cmpuint(wt.zero_bytes, ==, totals->zero_bytes);
    g_assert_cmpuint(wt.zstd_records, ==, totals->zstd_records);
    g_assert_cmpuint(c.zstd_records, ==, totals->zstd_records);
    g_assert_cmpuint(wt.wire_bytes, ==, totals->stream_bytes);
}

/* Write @recs as a spool, encode it, and check the stream against them. */
static void
ship_and_check(Fixture *fx, const VrSpoolHeader *h, const VrShipIdentity *id, GArray *recs,
               GRand *rand, VrShipTotals *totals)
{
    g_autoptr(GError) error = NULL;
    VrSpoolTotals st = { 0 };
    GStatBuf sb;

    write_spool(fx->spool, h, recs, &st);
    g_assert_true(vr_ship_encode(fx->spool, id, fx->stream, totals, &error));
    g_assert_no_error(error);
    g_assert_false(g_file_test(fx->part, G_FILE_TEST_EXISTS));
    g_assert_cmpint(g_stat(fx->stream, &sb), ==, 0);
    g_assert_cmpuint(sb.st_size, ==, totals->stream_bytes);
    g_assert_cmpuint(sb.st_mode & 0777, ==, 0600);

    g_assert_cmpuint(totals->records, ==, st.records);
    g_assert_cmpuint(totals->records, ==, recs->len);
    g_assert_cmpuint(totals->data_bytes, ==, st.data_bytes);
    g_assert_cmpuint(totals->zero_bytes, ==, st.zero_bytes);
    decode_and_compare(fx->stream, h, id, recs, totals, rand);
}

/* ---- encoding: a table of cycles ---------------------------------------------------- */

typedef struct {
    const char *path;
    uint32_t flags;
    uint64_t base;
    uint64_t cycle;
    Fill fill;
    const char *relationship;
    uint64_t epoch;
} EncodeCase;

static const EncodeCase encode_cases[] = {
    { "/ship/encode/full", VR_SPOOL_FLAG_FULL, 0, 1, FILL_MIXED, "r1", 1 },
    { "/ship/encode/incremental", 0, 3, 4, FILL_MIXED, "abcdefghij012345", 7 },
    { "/ship/encode/resync", VR_SPOOL_FLAG_RESYNC, 0, 9, FILL_MIXED, "r1", 2 },
    { "/ship/encode/app-consistent", VR_SPOOL_FLAG_APP_CONSISTENT, 5, 6, FILL_MIXED, "r1", 1 },
    { "/ship/encode/full-app-consistent", VR_SPOOL_FLAG_FULL | VR_SPOOL_FLAG_APP_CONSISTENT, 0, 1,
      FILL_MIXED, "r1", 1 },
    { "/ship/encode/resync-app-consistent", VR_SPOOL_FLAG_RESYNC | VR_SPOOL_FLAG_APP_CONSISTENT, 0,
      12, FILL_MIXED, "r1", G_MAXUINT64 },
    { "/ship/encode/compressible", 0, 1, 2, FILL_TEXT, "r1", 1 },
    { "/ship/encode/random", 0, 1, 2, FILL_RANDOM, "r1", 1 },
};

static void
test_encode(Fixture *fx, gconstpointer data)
{
    const EncodeCase *tc = data;
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    VrSpoolHeader h = make_header(tc->flags, tc->base, tc->cycle, 64 * MIB);
    VrShipIdentity id = { tc->relationship, tc->epoch };
    g_autoptr(GArray) recs = recs_random(rand, 8 * MIB, tc->fill);
    VrShipTotals totals = { 0 };
    guint data_records = recs_count_data(recs);

    ship_and_check(fx, &h, &id, recs, rand, &totals);
    g_assert_cmpuint(recs->len, >, 10);
    switch (tc->fill) {
    case FILL_TEXT:
        g_assert_cmpuint(totals.zstd_records, ==, data_records);
        g_assert_cmpuint(totals.stream_bytes, <, totals.data_bytes / 5);
        break;
    case FILL_RANDOM:
        g_assert_cmpuint(totals.zstd_records, ==, 0);
        g_assert_cmpuint(totals.stream_bytes, >, totals.data_bytes);
        break;
    case FILL_MIXED:
        g_assert_cmpuint(totals.zstd_records, <=, data_records);
        break;
    }
}

/* No records at all: BEGIN and END. */
static void
test_encode_empty(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    VrSpoolHeader h = make_header(VR_SPOOL_FLAG_FULL, 0, 1, 1 * MIB);
    VrShipIdentity id = { "r1", 3 };
    g_autoptr(GArray) recs = recs_new();
    VrShipTotals totals = { 0 };

    ship_and_check(fx, &h, &id, recs, rand, &totals);
    g_assert_cmpuint(totals.records, ==, 0);
    g_assert_cmpuint(totals.stream_bytes, ==,
                     2 * VR_WIRE_HEADER_SIZE + VR_WIRE_IDENTITY_SIZE + VR_WIRE_DIGEST_SIZE);
}

/*
 * The largest records: DATA of VR_SPOOL_MAX_RECORD (compressible and random), which is also
 * the wire's limit, so no record is split; a ZERO range of nearly a TiB (the wire has no
 * limit on those); a short DATA record that ends exactly at an unaligned virtual size.
 */
static void
test_encode_largest_records(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    const uint64_t size = TIB + 123;
    VrSpoolHeader h = make_header(0, 41, 42, size);
    VrShipIdentity id = { "r1", 9 };
    g_autoptr(GArray) recs = recs_new();
    g_autofree uint8_t *buf = g_malloc(VR_SPOOL_MAX_RECORD + 1);
    VrShipTotals totals = { 0 };

    /* The spool cannot hold a record over the wire's limit in the first place. */
    g_assert_cmpint(VR_SPOOL_MAX_RECORD, ==, VR_WIRE_MAX_DATA);
    {
        g_autoptr(GError) error = NULL;
        g_autofree char *other = g_build_filename(fx->dir, "other.spool", NULL);
        g_autoptr(VrSpoolWriter) writer = vr_spool_writer_new(other, &h, &error);

        g_assert_no_error(error);
        g_assert_false(vr_spool_writer_add_data(writer, 0, buf, VR_SPOOL_MAX_RECORD + 1, &error));
        g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID);
    }

    fill_text(buf, VR_SPOOL_MAX_RECORD, rand);
    recs_add_data(recs, 0, buf, VR_SPOOL_MAX_RECORD);
    fill_random(buf, VR_SPOOL_MAX_RECORD, rand);
    recs_add_data(recs, VR_SPOOL_MAX_RECORD, buf, VR_SPOOL_MAX_RECORD);
    recs_add_zero(recs, 2 * VR_SPOOL_MAX_RECORD, size - 700 - 2 * VR_SPOOL_MAX_RECORD);
    fill_random(buf, 700, rand);
    recs_add_data(recs, size - 700, buf, 700);

    ship_and_check(fx, &h, &id, recs, rand, &totals);
    g_assert_cmpuint(totals.records, ==, 4);
    g_assert_cmpuint(totals.zstd_records, ==, 1);
    g_assert_cmpuint(totals.zero_bytes, ==, size - 700 - 2 * VR_SPOOL_MAX_RECORD);
}

/* ---- failures ----------------------------------------------------------------------- */

/* Plain write, no fsync: the corruption loops rewrite the file thousands of times. */
static void
put_file(const char *path, const char *data, gsize len)
{
    FILE *f = fopen(path, "wb");

    g_assert_nonnull(f);
    g_assert_cmpuint(fwrite(data, 1, len, f), ==, len);
    g_assert_cmpint(fclose(f), ==, 0);
}

/* A small spool: header, DATA, ZERO, DATA, END; about 1.5 KiB of file. */
static void
write_small_spool(Fixture *fx, GRand *rand)
{
    VrSpoolHeader h = make_header(VR_SPOOL_FLAG_FULL | VR_SPOOL_FLAG_APP_CONSISTENT, 0, 1, MIB);
    g_autoptr(GArray) recs = recs_new();
    uint8_t buf[1000];

    fill_text(buf, 700, rand);
    recs_add_data(recs, 4096, buf, 700);
    recs_add_zero(recs, 8192, 65536);
    fill_random(buf, 300, rand);
    recs_add_data(recs, 131072, buf, 300);
    write_spool(fx->spool, &h, recs, NULL);
}

/* vr_ship_encode() must fail with a spool error that names the spool, and leave nothing. */
static void
assert_refused(Fixture *fx, const char *what, gsize where)
{
    g_autoptr(GError) error = NULL;
    VrShipIdentity id = { "r1", 1 };
    VrShipTotals totals = { 0 };

    if (vr_ship_encode(fx->spool, &id, fx->stream, &totals, &error))
        g_error("%s at byte %" G_GSIZE_FORMAT " went unnoticed", what, where);
    g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT);
    if (strstr(error->message, fx->spool) == NULL)
        g_error("%s at byte %" G_GSIZE_FORMAT ": '%s' does not name the spool", what, where,
                error->message);
    g_assert_cmpuint(totals.records, ==, 0);
    assert_no_output(fx);
}

static void
test_spool_flipped_byte(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    g_autofree char *orig = NULL;
    gsize len = 0;

    write_small_spool(fx, rand);
    g_assert_true(g_file_get_contents(fx->spool, &orig, &len, NULL));
    /* Every byte, the low bit and a random other pattern: the END digest fails last, after
     * every record went into the ".part" file, which must go too. */
    for (gsize pos = 0; pos < len; pos++) {
        for (int pass = 0; pass < 2; pass++) {
            g_autofree char *bad = g_memdup2(orig, len);

            bad[pos] ^= pass == 0 ? 0x01 : (char)g_rand_int_range(rand, 1, 256);
            put_file(fx->spool, bad, len);
            assert_refused(fx, "a flipped byte", pos);
        }
    }
}

static void
test_spool_truncated_extended(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    g_autofree char *orig = NULL;
    g_autofree char *longer = NULL;
    gsize len = 0;

    write_small_spool(fx, rand);
    g_assert_true(g_file_get_contents(fx->spool, &orig, &len, NULL));
    for (gsize cut = 0; cut < len; cut++) {
        put_file(fx->spool, orig, cut);
        assert_refused(fx, "a cut", cut);
    }
    longer = g_malloc0(len + 1);
    memcpy(longer, orig, len);
    put_file(fx->spool, longer, len + 1);
    assert_refused(fx, "a trailing byte", len);
}

static void
test_spool_missing(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    VrShipIdentity id = { "r1", 1 };

    g_assert_false(vr_ship_encode(fx->spool, &id, fx->stream, NULL, &error));
    g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_IO);
    g_assert_nonnull(strstr(error->message, fx->spool));
    assert_no_output(fx);
}

/* An existing stream is never overwritten, nor its ".part" file taken over. */
static void
test_output_exists(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    VrShipIdentity id = { "r1", 1 };
    g_autofree char *content = NULL;

    write_small_spool(fx, rand);

    put_file(fx->stream, "keep", 4);
    {
        g_autoptr(GError) error = NULL;

        g_assert_false(vr_ship_encode(fx->spool, &id, fx->stream, NULL, &error));
        g_assert_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_EXISTS);
        g_assert_nonnull(strstr(error->message, fx->stream));
    }
    g_assert_true(g_file_get_contents(fx->stream, &content, NULL, NULL));
    g_assert_cmpstr(content, ==, "keep");
    g_assert_false(g_file_test(fx->part, G_FILE_TEST_EXISTS));
    g_unlink(fx->stream);
    g_clear_pointer(&content, g_free);

    put_file(fx->part, "other", 5);
    {
        g_autoptr(GError) error = NULL;

        g_assert_false(vr_ship_encode(fx->spool, &id, fx->stream, NULL, &error));
        g_assert_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_EXISTS);
        g_assert_nonnull(strstr(error->message, fx->part));
    }
    g_assert_true(g_file_get_contents(fx->part, &content, NULL, NULL));
    g_assert_cmpstr(content, ==, "other");
    g_assert_false(g_file_test(fx->stream, G_FILE_TEST_EXISTS));
    g_unlink(fx->part);

    /* With both gone, the same call succeeds. */
    {
        g_autoptr(GError) error = NULL;

        g_assert_true(vr_ship_encode(fx->spool, &id, fx->stream, NULL, &error));
        g_assert_no_error(error);
    }
}

static void
test_bad_relationship(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    const char *bad[] = { NULL, "", "R1", "r-1", "r1/", "abcdefghij0123456" };

    write_small_spool(fx, rand);
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;
        VrShipIdentity id = { bad[i], 1 };

        g_assert_false(vr_ship_encode(fx->spool, &id, fx->stream, NULL, &error));
        g_assert_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_INVALID);
        g_assert_nonnull(strstr(error->message, "relationship"));
        assert_no_output(fx);
    }
}

static void
test_no_directory(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    g_autoptr(GError) error = NULL;
    g_autofree char *stream = g_build_filename(fx->dir, "missing", "vda.stream", NULL);
    VrShipIdentity id = { "r1", 1 };

    write_small_spool(fx, rand);
    g_assert_false(vr_ship_encode(fx->spool, &id, stream, NULL, &error));
    g_assert_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_IO);
    g_assert_nonnull(strstr(error->message, stream));
}

/*
 * A write error halfway (a file size limit, EFBIG): the ".part" file, which then holds the
 * first records, is removed and no stream appears.
 */
static void
test_write_error(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    g_autoptr(GError) error = NULL;
    VrSpoolHeader h = make_header(0, 1, 2, 64 * MIB);
    g_autoptr(GArray) recs = recs_random(rand, 8 * MIB, FILL_RANDOM);
    VrShipIdentity id = { "r1", 1 };
    struct sigaction ignore = { .sa_handler = SIG_IGN };
    struct sigaction old_action;
    struct rlimit old_limit;
    struct rlimit limit;
    bool ok;

    write_spool(fx->spool, &h, recs, NULL);
    g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old_limit), ==, 0);
    limit = old_limit;
    limit.rlim_cur = 256 * KIB;
    g_assert_cmpint(sigaction(SIGXFSZ, &ignore, &old_action), ==, 0);
    g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &limit), ==, 0);
    ok = vr_ship_encode(fx->spool, &id, fx->stream, NULL, &error);
    g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old_limit), ==, 0);
    g_assert_cmpint(sigaction(SIGXFSZ, &old_action, NULL), ==, 0);

    g_assert_false(ok);
    g_assert_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_IO);
    g_assert_nonnull(strstr(error->message, fx->part));
    assert_no_output(fx);
}

/* ---- a writer followed by an upload (vr_ship_writer_set_feed()) ----------------------- */

/*
 * The feed gets the file and every megabyte the writer writes, in order and no more than the
 * file holds; the rest with the END record only after finish() (the stream is durable under
 * its name by then), and then it is complete; a writer freed unfinished fails its feed.
 */
static void
test_writer_feed(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrSenderFeed) feed = vr_sender_feed_new();
    g_autoptr(VrSenderFeed) dropped = vr_sender_feed_new();
    g_autofree uint8_t *buf = g_malloc(VR_WIRE_MAX_DATA);
    VrSpoolHeader h = make_header(0, 1, 2, 64 * MIB);
    VrShipIdentity id = { "r1", 1 };
    VrShipTotals totals;
    VrShipWriter *writer;
    struct stat st;
    uint64_t last = 0, size;
    bool complete;

    for (gsize i = 0; i < VR_WIRE_MAX_DATA; i++)
        buf[i] = (uint8_t)g_test_rand_int(); /* incompressible: the stream grows as fed */
    writer = vr_ship_writer_new(fx->stream, &h, &id, &error);
    g_assert_no_error(error);
    g_assert_true(vr_ship_writer_set_feed(writer, feed, &error));
    g_assert_no_error(error);
    for (guint i = 0; i < 8; i++) {
        g_assert_true(vr_ship_writer_add_data(writer, (uint64_t)i * VR_WIRE_MAX_DATA, buf,
                                              VR_WIRE_MAX_DATA, &error));
        size = vr_sender_feed_get_size(feed, &complete);
        g_assert_false(complete);
        g_assert_cmpuint(size, >=, last);
        g_assert_cmpint(stat(fx->part, &st), ==, 0);
        g_assert_cmpuint(size, ==, (uint64_t)st.st_size); /* every byte given is in the file */
        last = size;
    }
    g_assert_cmpuint(last, >=, 7 * (uint64_t)VR_WIRE_MAX_DATA);
    g_assert_true(vr_ship_writer_finish(writer, &totals, &error));
    g_assert_no_error(error);
    size = vr_sender_feed_get_size(feed, &complete);
    g_assert_true(complete);
    g_assert_true(vr_sender_feed_is_complete(feed));
    g_assert_cmpuint(size, ==, totals.stream_bytes);
    g_assert_true(g_file_test(fx->stream, G_FILE_TEST_IS_REGULAR));
    vr_ship_writer_free(writer);

    /* unfinished: the feed fails, the file goes */
    g_unlink(fx->stream);
    writer = vr_ship_writer_new(fx->stream, &h, &id, &error);
    g_assert_no_error(error);
    g_assert_true(vr_ship_writer_set_feed(writer, dropped, &error));
    g_assert_true(vr_ship_writer_add_data(writer, 0, buf, VR_WIRE_MAX_DATA, &error));
    vr_ship_writer_free(writer);
    vr_sender_feed_get_size(dropped, &complete);
    g_assert_false(complete);
    g_assert_false(vr_sender_feed_is_complete(dropped));
    assert_no_output(fx);
}

/*
 * A slow read: a small record that comes 10 s after the last write is written out at once
 * with what the buffer holds, and the feed told, so that the upload's connection does not
 * sit silent past the receiver's I/O timeout; a record that comes sooner waits for 1 MiB.
 */
static void
test_writer_feed_slow(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrSenderFeed) feed = vr_sender_feed_new();
    VrSpoolHeader h = make_header(0, 1, 2, 64 * MIB);
    VrShipIdentity id = { "r1", 1 };
    VrShipWriter *writer;
    struct stat st;
    uint64_t size;
    bool complete;

    writer = vr_ship_writer_new(fx->stream, &h, &id, &error);
    g_assert_no_error(error);
    g_assert_true(vr_ship_writer_set_feed(writer, feed, &error));
    g_assert_no_error(error);
    g_assert_true(vr_ship_writer_add_zero(writer, 0, MIB, &error));
    g_assert_cmpuint(vr_sender_feed_get_size(feed, &complete), ==, 0); /* buffered */
    g_usleep(10 * G_USEC_PER_SEC + 100000);
    g_assert_true(vr_ship_writer_add_zero(writer, 2 * MIB, MIB, &error));
    g_assert_no_error(error);
    size = vr_sender_feed_get_size(feed, &complete);
    g_assert_false(complete);
    g_assert_cmpuint(size, >, 0);
    g_assert_cmpint(stat(fx->part, &st), ==, 0);
    g_assert_cmpuint(size, ==, (uint64_t)st.st_size);
    /* and the next record, right after, waits in the buffer again */
    g_assert_true(vr_ship_writer_add_zero(writer, 4 * MIB, MIB, &error));
    g_assert_cmpuint(vr_sender_feed_get_size(feed, &complete), ==, size);
    vr_ship_writer_free(writer);
    assert_no_output(fx);
}

/* ---- memory ------------------------------------------------------------------------- */

#define MEMORY_SPOOL_SIZE (256 * MIB)
/* One record in the reader, one compressed in the encoder, the output buffer, zstd's
 * context, the test's own buffers and the libraries: far below the spool's size. */
#define MEMORY_LIMIT_KIB (48 * 1024)

static long
vmhwm_kib(void)
{
    g_autofree char *status = NULL;
    const char *line;

    if (!g_file_get_contents("/proc/self/status", &status, NULL, NULL))
        return -1;
    line = strstr(status, "VmHWM:");
    return line != NULL ? strtol(line + 6, NULL, 10) : -1;
}

/* Why VmHWM cannot be measured here, or NULL. */
static const char *
memory_skip_reason(const char *dir)
{
#if defined(__SANITIZE_ADDRESS__)
    return "AddressSanitizer's shadow memory and quarantine make VmHWM meaningless";
#else
    const char *wrapper = g_getenv("VR_TEST_WRAPPER");
    struct statvfs vfs;

    if (wrapper != NULL && wrapper[0] != '\0')
        return "under a test wrapper (valgrind) VmHWM is the wrapper's";
    if (statvfs(dir, &vfs) != 0 ||
        (uint64_t)vfs.f_bavail * vfs.f_frsize < 3 * (uint64_t)MEMORY_SPOOL_SIZE) {
        return "less than 768 MiB free for a 256 MiB spool and its stream";
    }
    return NULL;
#endif
}

static void
test_memory_bounded(Fixture *fx, gconstpointer data)
{
    const char *skip = memory_skip_reason(fx->dir);

    if (skip != NULL) {
        g_test_skip(skip);
        return;
    }
    if (!g_test_subprocess()) {
        /* A fresh process: VmHWM is a high-water mark, earlier tests must not count. */
        g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_INHERIT_STDERR);
        g_test_trap_assert_passed();
        return;
    }

    {
        g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
        g_autoptr(GError) error = NULL;
        VrSpoolHeader h = make_header(VR_SPOOL_FLAG_FULL, 0, 1, 2 * MEMORY_SPOOL_SIZE);
        g_autoptr(VrSpoolWriter) writer = vr_spool_writer_new(fx->spool, &h, &error);
        g_autofree uint8_t *text = g_malloc(VR_SPOOL_MAX_RECORD);
        g_autofree uint8_t *noise = g_malloc(VR_SPOOL_MAX_RECORD);
        VrShipIdentity id = { "r1", 1 };
        VrShipTotals totals = { 0 };
        uint64_t offset = 0;
        long before;
        long after;

        g_assert_no_error(error);
        fill_text(text, VR_SPOOL_MAX_RECORD, rand);
        fill_random(noise, VR_SPOOL_MAX_RECORD, rand);
        /* Half compressible, half not, each record followed by a ZERO range. */
        for (guint i = 0; i < MEMORY_SPOOL_SIZE / VR_SPOOL_MAX_RECORD; i++) {
            uint8_t *buf = i % 2 == 0 ? text : noise;

            memcpy(buf, &i, sizeof(i)); /* no two records alike */
            g_assert_true(
                vr_spool_writer_add_data(writer, offset, buf, VR_SPOOL_MAX_RECORD, &error));
            g_assert_true(vr_spool_writer_add_zero(writer, offset + VR_SPOOL_MAX_RECORD,
                                                   VR_SPOOL_MAX_RECORD, &error));
            offset += 2 * VR_SPOOL_MAX_RECORD;
        }
        g_assert_true(vr_spool_writer_finish(writer, NULL, &error));
        g_assert_no_error(error);
        g_clear_pointer(&text, g_free);
        g_clear_pointer(&noise, g_free);

        before = vmhwm_kib();
        g_assert_true(vr_ship_encode(fx->spool, &id, fx->stream, &totals, &error));
        g_assert_no_error(error);
        after = vmhwm_kib();
        g_assert_cmpint(after, >, 0);
        g_printerr("# encoded %" G_GUINT64_FORMAT " MiB of data into a %" G_GUINT64_FORMAT
                   " MiB stream; VmHWM %ld KiB before, %ld KiB after\n",
                   totals.data_bytes / MIB, totals.stream_bytes / MIB, before, after);
        g_assert_cmpuint(totals.data_bytes, ==, MEMORY_SPOOL_SIZE);
        g_assert_cmpuint(totals.zstd_records, ==, MEMORY_SPOOL_SIZE / VR_SPOOL_MAX_RECORD / 2);
        g_assert_cmpint(after, <, MEMORY_LIMIT_KIB);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func, data) g_test_add(path, Fixture, data, fixture_setup, func, fixture_teardown)
    for (guint i = 0; i < G_N_ELEMENTS(encode_cases); i++)
        ADD(encode_cases[i].path, test_encode, &encode_cases[i]);
    ADD("/ship/encode/empty", test_encode_empty, NULL);
    ADD("/ship/encode/largest-records", test_encode_largest_records, NULL);
    ADD("/ship/error/spool-flipped-byte", test_spool_flipped_byte, NULL);
    ADD("/ship/error/spool-truncated-extended", test_spool_truncated_extended, NULL);
    ADD("/ship/error/spool-missing", test_spool_missing, NULL);
    ADD("/ship/error/output-exists", test_output_exists, NULL);
    ADD("/ship/error/bad-relationship", test_bad_relationship, NULL);
    ADD("/ship/error/no-directory", test_no_directory, NULL);
    ADD("/ship/error/write-error", test_write_error, NULL);
    ADD("/ship/memory-bounded", test_memory_bounded, NULL);
    ADD("/ship/writer/feed", test_writer_feed, NULL);
    ADD("/ship/writer/feed-slow", test_writer_feed_slow, NULL);
#undef ADD

    return g_test_run();
}
