/*
 * vr-hashlist.c: the block hashes of a disk, for resynchronization without a full copy
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "vr-hashlist.h"

#define VR_HASHLIST_MAGIC       "VRHASH1\n"
#define VR_HASHLIST_VERSION     1
#define VR_HASHLIST_HEADER_SIZE 64
#define VR_HASHLIST_SHA256      1
/* Entries go through a buffer of this many bytes (a multiple of the entry size). */
#define VR_HASHLIST_BUFFER (VR_HASHLIST_DIGEST_SIZE * 4096)

GQuark
vr_hashlist_error_quark(void)
{
    return g_quark_from_static_string("vr-hashlist-error-quark");
}

void
vr_hashlist_digest(const void *data, size_t len, uint8_t out[VR_HASHLIST_DIGEST_SIZE])
{
    int rc = gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, out);

    /* Fails only for an unknown algorithm; SHA-256 is always there. */
    g_assert(rc == 0);
}

/* Without overflow, whatever the size. */
static uint64_t
vr_hashlist_count(uint64_t virtual_size)
{
    return virtual_size / VR_HASHLIST_BLOCK_SIZE +
           (virtual_size % VR_HASHLIST_BLOCK_SIZE != 0 ? 1 : 0);
}

static bool
vr_hashlist_io_error(GError **error, int errsv, const char *what, const char *path)
{
    g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_IO, "cannot %s '%s': %s", what, path,
                g_strerror(errsv));
    return false;
}

static bool
vr_hashlist_write_all(int fd, const uint8_t *buf, size_t len, const char *path, GError **error)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return vr_hashlist_io_error(error, errno, "write", path);
        }
        buf += n;
        len -= n;
    }
    return true;
}

/* ---- writer ----------------------------------------------------------------------- */

struct _VrHashlistWriter {
    int fd;
    char *path;
    uint64_t count;
    uint64_t written;
    uint8_t *buf;
    size_t used;
    bool created; /* the file is ours to remove */
    bool failed;  /* a write failed: the buffer's state is unknown, refuse the rest */
    bool finished;
};

VrHashlistWriter *
vr_hashlist_writer_new(const char *path, uint64_t virtual_size, GError **error)
{
    g_autoptr(VrHashlistWriter) writer = NULL;
    uint8_t header[VR_HASHLIST_HEADER_SIZE] = { 0 };
    uint32_t u32;
    uint64_t u64;

    if (virtual_size == 0) {
        g_set_error_literal(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID,
                            "a hash list needs a disk size");
        return NULL;
    }
    writer = g_new0(VrHashlistWriter, 1);
    writer->path = g_strdup(path);
    writer->count = vr_hashlist_count(virtual_size);
    writer->buf = g_malloc(VR_HASHLIST_BUFFER);
    writer->fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (writer->fd < 0) {
        vr_hashlist_io_error(error, errno, "create", path);
        return NULL;
    }
    writer->created = true;
    memcpy(header, VR_HASHLIST_MAGIC, 8);
    u32 = GUINT32_TO_LE(VR_HASHLIST_VERSION);
    memcpy(header + 8, &u32, 4);
    u32 = GUINT32_TO_LE(VR_HASHLIST_HEADER_SIZE);
    memcpy(header + 12, &u32, 4);
    u64 = GUINT64_TO_LE(virtual_size);
    memcpy(header + 16, &u64, 8);
    u32 = GUINT32_TO_LE(VR_HASHLIST_BLOCK_SIZE);
    memcpy(header + 24, &u32, 4);
    u32 = GUINT32_TO_LE(VR_HASHLIST_SHA256);
    memcpy(header + 28, &u32, 4);
    u64 = GUINT64_TO_LE(writer->count);
    memcpy(header + 32, &u64, 8);
    if (!vr_hashlist_write_all(writer->fd, header, sizeof(header), path, error))
        return NULL;
    return g_steal_pointer(&writer);
}

bool
vr_hashlist_writer_add(VrHashlistWriter *writer, const uint8_t digest[32], GError **error)
{
    if (writer->failed || writer->finished) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID, "hash list '%s' is %s",
                    writer->path, writer->failed ? "broken by an earlier error" : "finished");
        return false;
    }
    if (writer->written == writer->count) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID,
                    "hash list '%s' already has its %" G_GUINT64_FORMAT " entries", writer->path,
                    writer->count);
        return false;
    }
    memcpy(writer->buf + writer->used, digest, VR_HASHLIST_DIGEST_SIZE);
    writer->used += VR_HASHLIST_DIGEST_SIZE;
    writer->written++;
    if (writer->used == VR_HASHLIST_BUFFER) {
        if (!vr_hashlist_write_all(writer->fd, writer->buf, writer->used, writer->path, error)) {
            writer->failed = true;
            return false;
        }
        writer->used = 0;
    }
    return true;
}

bool
vr_hashlist_writer_finish(VrHashlistWriter *writer, GError **error)
{
    if (writer->failed || writer->finished) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID, "hash list '%s' is %s",
                    writer->path, writer->failed ? "broken by an earlier error" : "finished");
        return false;
    }
    if (writer->written != writer->count) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID,
                    "hash list '%s' has %" G_GUINT64_FORMAT " of its %" G_GUINT64_FORMAT " entries",
                    writer->path, writer->written, writer->count);
        return false;
    }
    if (!vr_hashlist_write_all(writer->fd, writer->buf, writer->used, writer->path, error) ||
        (fdatasync(writer->fd) < 0 && !vr_hashlist_io_error(error, errno, "sync", writer->path))) {
        writer->failed = true;
        return false;
    }
    if (close(writer->fd) < 0) {
        writer->fd = -1;
        return vr_hashlist_io_error(error, errno, "close", writer->path);
    }
    writer->fd = -1;
    writer->finished = true;
    return true;
}

void
vr_hashlist_writer_free(VrHashlistWriter *writer)
{
    if (writer == NULL)
        return;
    if (writer->fd >= 0)
        close(writer->fd);
    if (writer->created && !writer->finished)
        unlink(writer->path);
    g_free(writer->buf);
    g_free(writer->path);
    g_free(writer);
}

/* ---- reader ----------------------------------------------------------------------- */

struct _VrHashlistReader {
    FILE *file;
    char *path;
    uint64_t virtual_size;
    uint64_t count;
    uint64_t next; /* the index of the entry the file position is at */
};

VrHashlistReader *
vr_hashlist_reader_open(const char *path, GError **error)
{
    g_autoptr(VrHashlistReader) reader = g_new0(VrHashlistReader, 1);
    uint8_t header[VR_HASHLIST_HEADER_SIZE];
    struct stat st;
    uint32_t u32[4];
    uint64_t u64;

    reader->path = g_strdup(path);
    reader->file = fopen(path, "rbe");
    if (reader->file == NULL) {
        vr_hashlist_io_error(error, errno, "open", path);
        return NULL;
    }
    if (fread(header, 1, sizeof(header), reader->file) != sizeof(header) ||
        memcmp(header, VR_HASHLIST_MAGIC, 8) != 0) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_CORRUPT, "'%s' is not a hash list",
                    path);
        return NULL;
    }
    memcpy(u32, header + 8, 8);
    memcpy(u32 + 2, header + 24, 8);
    memcpy(&u64, header + 16, 8);
    reader->virtual_size = GUINT64_FROM_LE(u64);
    memcpy(&u64, header + 32, 8);
    reader->count = GUINT64_FROM_LE(u64);
    if (GUINT32_FROM_LE(u32[0]) != VR_HASHLIST_VERSION ||
        GUINT32_FROM_LE(u32[1]) != VR_HASHLIST_HEADER_SIZE ||
        GUINT32_FROM_LE(u32[2]) != VR_HASHLIST_BLOCK_SIZE ||
        GUINT32_FROM_LE(u32[3]) != VR_HASHLIST_SHA256 || reader->virtual_size == 0 ||
        reader->virtual_size > (uint64_t)G_MAXINT64 ||
        reader->count != vr_hashlist_count(reader->virtual_size)) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_CORRUPT,
                    "hash list '%s' has a header this version does not take", path);
        return NULL;
    }
    for (int i = 40; i < VR_HASHLIST_HEADER_SIZE; i++) {
        if (header[i] != 0) {
            g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_CORRUPT,
                        "hash list '%s': reserved header bytes are not zero", path);
            return NULL;
        }
    }
    if (fstat(fileno(reader->file), &st) < 0) {
        vr_hashlist_io_error(error, errno, "stat", path);
        return NULL;
    }
    if ((uint64_t)st.st_size !=
        VR_HASHLIST_HEADER_SIZE + reader->count * (uint64_t)VR_HASHLIST_DIGEST_SIZE) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_CORRUPT,
                    "hash list '%s' has %" G_GINT64_FORMAT " bytes, not the %" G_GUINT64_FORMAT
                    " its %" G_GUINT64_FORMAT " entries need",
                    path, (gint64)st.st_size,
                    VR_HASHLIST_HEADER_SIZE + reader->count * (uint64_t)VR_HASHLIST_DIGEST_SIZE,
                    reader->count);
        return NULL;
    }
    return g_steal_pointer(&reader);
}

uint64_t
vr_hashlist_reader_get_virtual_size(VrHashlistReader *reader)
{
    return reader->virtual_size;
}

uint64_t
vr_hashlist_reader_get_count(VrHashlistReader *reader)
{
    return reader->count;
}

bool
vr_hashlist_reader_get(VrHashlistReader *reader, uint64_t index, uint8_t out[32], GError **error)
{
    if (index < reader->next || index >= reader->count) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_INVALID,
                    "hash list entry %" G_GUINT64_FORMAT " is behind the reader or past the end",
                    index);
        return false;
    }
    if (index > reader->next &&
        fseeko(reader->file, VR_HASHLIST_HEADER_SIZE + (off_t)index * VR_HASHLIST_DIGEST_SIZE,
               SEEK_SET) < 0)
        return vr_hashlist_io_error(error, errno, "seek in", reader->path);
    if (fread(out, 1, VR_HASHLIST_DIGEST_SIZE, reader->file) != VR_HASHLIST_DIGEST_SIZE) {
        g_set_error(error, VR_HASHLIST_ERROR, VR_HASHLIST_ERROR_IO, "cannot read '%s'",
                    reader->path);
        return false;
    }
    reader->next = index + 1;
    return true;
}

void
vr_hashlist_reader_free(VrHashlistReader *reader)
{
    if (reader == NULL)
        return;
    if (reader->file != NULL)
        fclose(reader->file);
    g_free(reader->path);
    g_free(reader);
}
