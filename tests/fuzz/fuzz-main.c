/*
 * fuzz-main.c: a driver for fuzz targets built without libFuzzer
 *
 *   fuzz-main CORPUS [MUTATIONS [SEED]]
 *
 * Runs LLVMFuzzerTestOneInput() over every file of the directory CORPUS (or over the one
 * file CORPUS), then over MUTATIONS inputs made by mutating random corpus files with a
 * generator seeded with SEED (default 1): the same arguments replay the same inputs. On a
 * crash, the input at fault is written to ./fuzz-crash-<pid> before the signal kills the
 * process, and can be replayed by passing that file as CORPUS.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "vr-fuzz.h"

#define FUZZ_MAX_INPUT (64 * 1024)

/* The input being run, for the crash handler. */
static const guint8 *current_data;
static volatile gsize current_size;

static void
write_all(int fd, const void *buf, gsize len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = write(fd, p, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= n;
    }
}

/* Async-signal-safe: save the input, then die of the same signal. */
static void
crash_handler(int sig)
{
    char name[64] = "fuzz-crash-";
    char digits[16];
    int len = 0;
    long pid = getpid();
    int fd;

    do {
        digits[len++] = '0' + pid % 10;
        pid /= 10;
    } while (pid > 0);
    for (int i = 0; i < len; i++)
        name[11 + i] = digits[len - 1 - i];
    name[11 + len] = '\0';

    fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        write_all(fd, current_data, current_size);
        close(fd);
    }
    write_all(STDERR_FILENO, "fuzz-main: crashed; input saved as ", 35);
    write_all(STDERR_FILENO, name, strlen(name));
    write_all(STDERR_FILENO, "\n", 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void
run_one(const guint8 *data, gsize size)
{
    current_data = data;
    current_size = size;
    LLVMFuzzerTestOneInput(data, size);
    current_size = 0;
}

/* Bytes that matter to a JSON stream, for insertions. */
static const char *const tokens[] = {
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    " ",
    "\r\n",
    "\\",
    "\\u",
    "\\ud83d",
    "\\ude00",
    "\\u0000",
    "0",
    "-1e400",
    "true",
    "null",
    "\0",
    "\xff",
    "\xc3",
    "\xe2\x82",
    "\x80",
    "{\"return\": {}}",
    "{\"event\": \"STOP\"}",
    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"d\"}}",
};

static void
insert_bytes(GByteArray *array, guint pos, const guint8 *data, guint len)
{
    guint old_len = array->len;

    g_byte_array_set_size(array, old_len + len);
    memmove(array->data + pos + len, array->data + pos, old_len - pos);
    memcpy(array->data + pos, data, len);
}

static void
mutate(GByteArray *input, GPtrArray *corpus, GRand *rand)
{
    guint steps = g_rand_int_range(rand, 1, 5);

    for (guint s = 0; s < steps; s++) {
        guint len = input->len;
        guint pos = len > 0 ? g_rand_int_range(rand, 0, len) : 0;

        switch (g_rand_int_range(rand, 0, 7)) {
        case 0: /* flip a bit */
            if (len > 0)
                input->data[pos] ^= 1u << g_rand_int_range(rand, 0, 8);
            break;
        case 1: /* set a byte */
            if (len > 0)
                input->data[pos] = g_rand_int_range(rand, 0, 256);
            break;
        case 2: /* delete a range */
            if (len > 0)
                g_byte_array_remove_range(input, pos,
                                          g_rand_int_range(rand, 1, 1 + MIN(16, len - pos)));
            break;
        case 3: { /* insert a token */
            const char *token = tokens[g_rand_int_range(rand, 0, G_N_ELEMENTS(tokens))];
            gsize token_len = token[0] == '\0' ? 1 : strlen(token);

            insert_bytes(input, pos, (const guint8 *)token, token_len);
            break;
        }
        case 4: { /* duplicate a range */
            guint n = len > 0 ? g_rand_int_range(rand, 1, 1 + MIN(64, len - pos)) : 0;
            g_autofree guint8 *copy = g_memdup2(input->data + pos, n);

            insert_bytes(input, g_rand_int_range(rand, 0, len + 1), copy, n);
            break;
        }
        case 5: { /* splice the tail of another corpus file */
            GBytes *other = corpus->pdata[g_rand_int_range(rand, 0, corpus->len)];
            gsize other_len;
            const guint8 *other_data = g_bytes_get_data(other, &other_len);
            gsize from = other_len > 0 ? g_rand_int_range(rand, 0, other_len) : 0;

            g_byte_array_set_size(input, pos);
            g_byte_array_append(input, other_data + from, other_len - from);
            break;
        }
        default: /* new control bytes: chunking and limit */
            if (len >= 2) {
                input->data[0] = g_rand_int_range(rand, 0, 256);
                input->data[1] = g_rand_int_range(rand, 0, 256);
            }
            break;
        }
        if (input->len > FUZZ_MAX_INPUT)
            g_byte_array_set_size(input, FUZZ_MAX_INPUT);
    }
}

static gint
compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The files of @path, sorted by name so that runs are reproducible; or @path itself. */
static GPtrArray *
load_corpus(const char *path)
{
    GPtrArray *corpus = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) error = NULL;

    if (g_file_test(path, G_FILE_TEST_IS_DIR)) {
        g_autoptr(GDir) dir = g_dir_open(path, 0, &error);
        const char *name;

        if (dir == NULL) {
            g_printerr("fuzz-main: %s\n", error->message);
            exit(2);
        }
        while ((name = g_dir_read_name(dir)) != NULL)
            g_ptr_array_add(names, g_build_filename(path, name, NULL));
        g_ptr_array_sort(names, compare_names);
    } else {
        g_ptr_array_add(names, g_strdup(path));
    }
    for (guint i = 0; i < names->len; i++) {
        char *contents = NULL;
        gsize len = 0;

        if (!g_file_test(names->pdata[i], G_FILE_TEST_IS_REGULAR))
            continue;
        if (!g_file_get_contents(names->pdata[i], &contents, &len, &error)) {
            g_printerr("fuzz-main: %s\n", error->message);
            exit(2);
        }
        g_ptr_array_add(corpus, g_bytes_new_take(contents, MIN(len, FUZZ_MAX_INPUT)));
    }
    return corpus;
}

int
main(int argc, char **argv)
{
    g_autoptr(GPtrArray) corpus = NULL;
    g_autoptr(GRand) rand = NULL;
    guint64 mutations = 0;
    guint64 seed = 1;

    if (argc < 2 || argc > 4) {
        g_printerr("usage: %s CORPUS [MUTATIONS [SEED]]\n", argv[0]);
        return 2;
    }
    if ((argc > 2 && !g_ascii_string_to_unsigned(argv[2], 10, 0, G_MAXUINT64, &mutations, NULL)) ||
        (argc > 3 && !g_ascii_string_to_unsigned(argv[3], 10, 0, G_MAXUINT32, &seed, NULL))) {
        g_printerr("%s: MUTATIONS and SEED are decimal numbers\n", argv[0]);
        return 2;
    }
    signal(SIGABRT, crash_handler);
    signal(SIGSEGV, crash_handler);
    signal(SIGBUS, crash_handler);
    signal(SIGFPE, crash_handler);
    signal(SIGILL, crash_handler);
    signal(SIGTRAP, crash_handler);

    corpus = load_corpus(argv[1]);
    if (corpus->len == 0) {
        g_printerr("%s: no input files in '%s'\n", argv[0], argv[1]);
        return 2;
    }
    for (guint i = 0; i < corpus->len; i++) {
        gsize len;
        const guint8 *data = g_bytes_get_data(corpus->pdata[i], &len);

        run_one(data, len);
    }

    rand = g_rand_new_with_seed((guint32)seed);
    for (guint64 i = 0; i < mutations; i++) {
        g_autoptr(GByteArray) input = g_byte_array_new();
        gsize len;
        const guint8 *data =
            g_bytes_get_data(corpus->pdata[g_rand_int_range(rand, 0, corpus->len)], &len);

        g_byte_array_append(input, data, len);
        mutate(input, corpus, rand);
        run_one(input->data, input->len);
    }
    g_print("fuzz-main: ran %u corpus inputs and %" G_GUINT64_FORMAT
            " mutations (seed %" G_GUINT64_FORMAT ")\n",
            corpus->len, mutations, seed);
    return 0;
}
