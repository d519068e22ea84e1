/*
 * test-hashlist.c: the hash list file of a resync
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdio.h>
#include <string.h>

#include <glib/gstdio.h>

#include "vr-hashlist.h"

/* A disk whose last block is short: 3 whole blocks and 512 bytes. */
#define SIZE (3 * VR_HASHLIST_BLOCK_SIZE + 512)

static char *
write_list(const char *dir, guint entries)
{
    g_autoptr(GError) error = NULL;
    char *path = g_build_filename(dir, "list", NULL);
    g_autoptr(VrHashlistWriter) writer = NULL;

    g_unlink(path);
    writer = vr_hashlist_writer_new(path, SIZE, &error);
    g_assert_no_error(error);
    for (guint i = 0; i < entries; i++) {
        uint8_t digest[VR_HASHLIST_DIGEST_SIZE];

        memset(digest, (int)i + 1, sizeof(digest));
        g_assert_true(vr_hashlist_writer_add(writer, digest, &error));
        g_assert_no_error(error);
    }
    if (vr_hashlist_writer_finish(writer, &error))
        g_assert_no_error(error);
    return path;
}

static void
test_roundtrip(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("vr-hash-XXXXXX", NULL);
    g_autofree char *path = write_list(dir, 4);
    g_autoptr(VrHashlistReader) reader = vr_hashlist_reader_open(path, &error);
    uint8_t got[VR_HASHLIST_DIGEST_SIZE];
    uint8_t expected[VR_HASHLIST_DIGEST_SIZE];

    g_assert_no_error(error);
    g_assert_cmpuint(vr_hashlist_reader_get_count(reader), ==, 4);
    g_assert_cmpuint(vr_hashlist_reader_get_virtual_size(reader), ==, SIZE);
    /* Forward, skipping entries. */
    g_assert_true(vr_hashlist_reader_get(reader, 0, got, &error));
    memset(expected, 1, sizeof(expected));
    g_assert_cmpmem(got, sizeof(got), expected, sizeof(expected));
    g_assert_true(vr_hashlist_reader_get(reader, 3, got, &error));
    memset(expected, 4, sizeof(expected));
    g_assert_cmpmem(got, sizeof(got), expected, sizeof(expected));
    /* Backwards and past the end are refused. */
    g_assert_false(vr_hashlist_reader_get(reader, 1, got, &error));
    g_assert_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID);
    g_clear_error(&error);
    g_assert_false(vr_hashlist_reader_get(reader, 4, got, &error));
    g_assert_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID);
    g_unlink(path);
    g_rmdir(dir);
}

static void
test_rules(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("vr-hash-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "list", NULL);
    g_autoptr(VrHashlistWriter) writer = NULL;
    g_autoptr(VrHashlistWriter) other = NULL;
    g_autofree char *contents = NULL;
    g_autofree char *full = NULL;
    uint8_t digest[VR_HASHLIST_DIGEST_SIZE] = { 0 };
    gsize len = 0;

    /* Too few entries: not finished, and the file goes with the writer. */
    writer = vr_hashlist_writer_new(path, SIZE, &error);
    g_assert_no_error(error);
    /* Another writer may not take the same file, nor remove it. */
    other = vr_hashlist_writer_new(path, SIZE, &error);
    g_assert_null(other);
    g_assert_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_IO);
    g_clear_error(&error);
    g_assert_true(vr_hashlist_writer_add(writer, digest, &error));
    g_assert_false(vr_hashlist_writer_finish(writer, &error));
    g_assert_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID);
    g_clear_error(&error);
    g_clear_pointer(&writer, vr_hashlist_writer_free);
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));

    /* Truncated, padded or foreign files are refused at open. */
    full = write_list(dir, 4);
    g_assert_true(g_file_get_contents(full, &contents, &len, NULL));
    g_assert_true(g_file_set_contents(full, contents, len - 1, NULL));
    g_assert_null(vr_hashlist_reader_open(full, &error));
    g_assert_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_CORRUPT);
    g_clear_error(&error);
    {
        g_autofree char *longer = g_malloc0(len + 32);

        memcpy(longer, contents, len);
        g_assert_true(g_file_set_contents(full, longer, len + 32, NULL));
        g_assert_null(vr_hashlist_reader_open(full, &error));
        g_assert_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_CORRUPT);
        g_clear_error(&error);
    }
    contents[24] ^= 1; /* block size */
    g_assert_true(g_file_set_contents(full, contents, len, NULL));
    g_assert_null(vr_hashlist_reader_open(full, &error));
    g_assert_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_CORRUPT);
    g_unlink(full);
    g_rmdir(dir);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/hashlist/roundtrip", test_roundtrip);
    g_test_add_func("/hashlist/rules", test_rules);
    return g_test_run();
}
