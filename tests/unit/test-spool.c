/*
 * test-spool.c: the spool format against a naive model
 *
 * A random cycle (data and zero records over a small disk) is written, read back and
 * applied to a byte array; the same cycle applied directly to another byte array is the
 * model. Then every byte of the file is corrupted in turn, and the file is cut at every
 * length: the reader must refuse each, with an error and without a crash.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "vr-spool.h"

#define DISK_SIZE (1024 * 1024)

typedef struct {
    char *dir;
    char *path;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    fx->dir = g_dir_make_tmp("vr-spool-XXXXXX", &error);
    g_assert_no_error(error);
    fx->path = g_build_filename(fx->dir, "cycle.spool", NULL);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    g_autofree char *part = g_strconcat(fx->path, ".part", NULL);

    g_unlink(fx->path);
    g_unlink(part);
    g_rmdir(fx->dir);
    g_free(fx->path);
    g_free(fx->dir);
}

static VrSpoolHeader
make_header(uint64_t base, uint64_t cycle)
{
    VrSpoolHeader h = { .virtual_size = DISK_SIZE, .granularity = 65536, .cycle = cycle };

    for (int i = 0; i < 16; i++)
        h.domain_uuid[i] = (uint8_t)(0xa0 + i);
    g_strlcpy(h.disk, "vda", sizeof(h.disk));
    h.base_cycle = base;
    h.flags = base == 0 ? VR_SPOOL_FLAG_FULL : 0;
    return h;
}

/*
 * Write a random cycle over the first @span bytes of the disk to @path and apply it to
 * @model. Returns its record count.
 */
static guint
write_random(const char *path, GRand *rand, uint8_t *model, uint64_t span)
{
    VrSpoolHeader h = make_header(3, 4);
    g_autoptr(GError) error = NULL;
    g_autoptr(VrSpoolWriter) writer = vr_spool_writer_new(path, &h, &error);
    g_autofree uint8_t *buf = g_malloc(DISK_SIZE);
    VrSpoolTotals totals = { 0 };
    uint64_t offset = 0;
    guint records = 0;
    bool ok;

    g_assert_no_error(error);
    while (TRUE) {
        uint64_t gap = g_rand_int_range(rand, 0, 3) * 4096;
        /* Short records on a small span, so it still holds a dozen of them. */
        uint64_t len = g_rand_int_range(rand, 1, span < DISK_SIZE ? 4 : 64) * 512;

        offset += gap;
        if (offset + len > span)
            break;
        if (g_rand_boolean(rand)) {
            for (uint64_t i = 0; i < len; i++)
                buf[i] = (uint8_t)g_rand_int(rand);
            ok = vr_spool_writer_add_data(writer, offset, buf, len, &error);
            memcpy(model + offset, buf, len);
        } else {
            ok = vr_spool_writer_add_zero(writer, offset, len, &error);
            memset(model + offset, 0, len);
        }
        g_assert_no_error(error);
        g_assert_true(ok);
        records++;
        offset += len;
    }
    ok = vr_spool_writer_finish(writer, &totals, &error);
    g_assert_no_error(error);
    g_assert_true(ok);
    g_assert_cmpuint(totals.records, ==, records);
    return records;
}

/* Read @path fully, applying it to @disk. False with @error on any fault. */
static bool
read_apply(const char *path, uint8_t *disk, VrSpoolTotals *totals, GError **error)
{
    g_autoptr(VrSpoolReader) reader = vr_spool_reader_open(path, error);
    VrSpoolRecord rec;

    if (reader == NULL)
        return false;
    while (vr_spool_reader_next(reader, &rec, totals, error)) {
        if (rec.type == VR_SPOOL_RECORD_DATA)
            memcpy(disk + rec.offset, rec.data, rec.length);
        else
            memset(disk + rec.offset, 0, rec.length);
    }
    return *error == NULL;
}

static void
test_roundtrip_model(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());

    for (int iter = 0; iter < 20; iter++) {
        g_autofree uint8_t *model = g_malloc(DISK_SIZE);
        g_autofree uint8_t *disk = g_malloc(DISK_SIZE);
        g_autoptr(GError) error = NULL;
        g_autoptr(VrSpoolReader) reader = NULL;
        VrSpoolTotals totals = { 0 };
        guint records;

        /* The same initial contents on both sides, so untouched bytes compare too. */
        for (int i = 0; i < DISK_SIZE; i++)
            model[i] = disk[i] = (uint8_t)(i * 7);
        records = write_random(fx->path, rand, model, DISK_SIZE);
        g_assert_true(read_apply(fx->path, disk, &totals, &error));
        g_assert_no_error(error);
        g_assert_cmpuint(totals.records, ==, records);
        g_assert_cmpmem(disk, DISK_SIZE, model, DISK_SIZE);

        reader = vr_spool_reader_open(fx->path, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(vr_spool_reader_get_header(reader)->disk, ==, "vda");
        g_assert_cmpuint(vr_spool_reader_get_header(reader)->cycle, ==, 4);
        g_assert_cmpuint(vr_spool_reader_get_header(reader)->base_cycle, ==, 3);
        g_unlink(fx->path);
    }
}

/* Plain write, no fsync: the corruption loops rewrite the file thousands of times. */
static void
put_file(const char *path, const char *data, gsize len)
{
    FILE *f = fopen(path, "wb");

    g_assert_nonnull(f);
    g_assert_cmpuint(fwrite(data, 1, len, f), ==, len);
    g_assert_cmpint(fclose(f), ==, 0);
}

static void
test_every_byte_corrupted(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    g_autofree uint8_t *model = g_malloc0(DISK_SIZE);
    g_autofree uint8_t *disk = g_malloc0(DISK_SIZE);
    g_autofree char *orig = NULL;
    gsize len = 0;

    /* A small cycle (16 KiB of disk): every single byte of the file is tried. */
    write_random(fx->path, rand, model, 16384);
    g_assert_true(g_file_get_contents(fx->path, &orig, &len, NULL));
    for (gsize pos = 0; pos < len; pos++) {
        g_autofree char *bad = g_memdup2(orig, len);
        g_autoptr(GError) error = NULL;
        VrSpoolTotals totals = { 0 };

        bad[pos] ^= (char)(1 + g_rand_int_range(rand, 0, 255));
        put_file(fx->path, bad, len);
        if (read_apply(fx->path, disk, &totals, &error))
            g_error("a flip at byte %" G_GSIZE_FORMAT " of %" G_GSIZE_FORMAT " went unnoticed", pos,
                    len);
        g_assert_true(error->domain == VR_SPOOL_ERROR);
    }
}

/* Whatever byte is corrupted, no record the reader hands out differs from what was written:
 * each is checked on its own before the END proves the whole. */
static void
test_no_bad_record_handed_out(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    g_autofree uint8_t *model = g_malloc0(DISK_SIZE);
    g_autoptr(GArray) good = g_array_new(FALSE, FALSE, sizeof(VrSpoolRecord));
    g_autofree char *orig = NULL;
    gsize len = 0;

    write_random(fx->path, rand, model, 16384);
    g_assert_true(g_file_get_contents(fx->path, &orig, &len, NULL));
    {
        g_autoptr(GError) error = NULL;
        g_autoptr(VrSpoolReader) reader = vr_spool_reader_open(fx->path, &error);
        VrSpoolRecord rec;

        while (vr_spool_reader_next(reader, &rec, NULL, &error)) {
            rec.data = NULL;
            g_array_append_val(good, rec);
        }
        g_assert_no_error(error);
    }
    for (gsize pos = 0; pos < len; pos++) {
        g_autofree char *bad = g_memdup2(orig, len);
        g_autoptr(GError) error = NULL;
        g_autoptr(VrSpoolReader) reader = NULL;
        VrSpoolRecord rec;
        guint i = 0;

        bad[pos] ^= 0x10;
        put_file(fx->path, bad, len);
        reader = vr_spool_reader_open(fx->path, &error);
        while (reader != NULL && vr_spool_reader_next(reader, &rec, NULL, &error)) {
            VrSpoolRecord *want = &g_array_index(good, VrSpoolRecord, i);

            g_assert_cmpuint(i, <, good->len);
            if (rec.type != want->type || rec.offset != want->offset || rec.length != want->length)
                g_error("flip at %" G_GSIZE_FORMAT ": record %u handed out changed", pos, i);
            i++;
        }
        g_assert_nonnull(error);
    }
}

static void
test_truncated_and_extended(Fixture *fx, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(g_test_rand_int());
    g_autofree uint8_t *model = g_malloc0(DISK_SIZE);
    g_autofree uint8_t *disk = g_malloc0(DISK_SIZE);
    g_autofree char *orig = NULL;
    g_autofree char *longer = NULL;
    g_autoptr(GError) error = NULL;
    VrSpoolTotals totals = { 0 };
    gsize len = 0;

    write_random(fx->path, rand, model, 16384);
    g_assert_true(g_file_get_contents(fx->path, &orig, &len, NULL));
    for (gsize cut = 0; cut < len; cut++) {
        g_autoptr(GError) cut_error = NULL;

        put_file(fx->path, orig, cut);
        g_assert_false(read_apply(fx->path, disk, &totals, &cut_error));
        g_assert_error(cut_error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT);
    }
    longer = g_malloc0(len + 1);
    memcpy(longer, orig, len);
    put_file(fx->path, longer, len + 1);
    g_assert_false(read_apply(fx->path, disk, &totals, &error));
    g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT);
    g_assert_nonnull(strstr(error->message, "after the END"));
}

static void
test_writer_rules(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    VrSpoolHeader h = make_header(0, 1);
    VrSpoolHeader bad = make_header(0, 1);
    g_autoptr(VrSpoolWriter) writer = NULL;
    g_autoptr(VrSpoolWriter) second = NULL;
    g_autofree char *part = g_strconcat(fx->path, ".part", NULL);
    uint8_t buf[512] = { 1 };

    /* Header rules. */
    bad.flags = 0; /* base 0 without FULL */
    g_assert_null(vr_spool_writer_new(fx->path, &bad, &error));
    g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID);
    g_clear_error(&error);
    bad = make_header(0, 1);
    g_strlcpy(bad.disk, "../x", sizeof(bad.disk));
    g_assert_null(vr_spool_writer_new(fx->path, &bad, &error));
    g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID);
    g_clear_error(&error);

    writer = vr_spool_writer_new(fx->path, &h, &error);
    g_assert_no_error(error);
    /* A second writer on the same spool is refused (O_EXCL). */
    second = vr_spool_writer_new(fx->path, &h, &error);
    g_assert_null(second);
    g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_IO);
    g_clear_error(&error);

    g_assert_true(vr_spool_writer_add_data(writer, 4096, buf, sizeof(buf), &error));
    /* Out of order, overlapping, empty, beyond the disk. */
    g_assert_false(vr_spool_writer_add_data(writer, 0, buf, sizeof(buf), &error));
    g_clear_error(&error);
    g_assert_false(vr_spool_writer_add_zero(writer, 4096 + 256, 512, &error));
    g_clear_error(&error);
    g_assert_false(vr_spool_writer_add_zero(writer, 8192, 0, &error));
    g_clear_error(&error);
    g_assert_false(vr_spool_writer_add_zero(writer, DISK_SIZE - 512, 1024, &error));
    g_assert_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID);
    g_clear_error(&error);

    /* Not finished: freeing removes the partial file, and no spool appears. */
    g_assert_true(g_file_test(part, G_FILE_TEST_EXISTS));
    g_clear_pointer(&writer, vr_spool_writer_free);
    g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
    g_assert_false(g_file_test(fx->path, G_FILE_TEST_EXISTS));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

#define ADD(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/spool/roundtrip-model", test_roundtrip_model);
    ADD("/spool/every-byte-corrupted", test_every_byte_corrupted);
    ADD("/spool/truncated-and-extended", test_truncated_and_extended);
    ADD("/spool/no-bad-record-handed-out", test_no_bad_record_handed_out);
    ADD("/spool/writer-rules", test_writer_rules);
#undef ADD

    return g_test_run();
}
