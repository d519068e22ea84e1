/*
 * vr-spool.c: the local spool of one captured cycle of one disk
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#include "vr-endian.h"
#include "vr-spool.h"

GQuark
vr_spool_error_quark(void)
{
    return g_quark_from_static_string("vr-spool-error-quark");
}

#define VR_SPOOL_MAGIC       "VRSPOOL\n"
#define VR_SPOOL_HEADER_SIZE 128
#define VR_SPOOL_RECORD_SIZE 56

G_STATIC_ASSERT(sizeof(VR_SPOOL_MAGIC) - 1 == 8);

/* ---- encoding --------------------------------------------------------------------- */

static bool
vr_spool_disk_valid(const char *disk)
{
    if (disk[0] == '\0')
        return false;
    for (const char *c = disk; *c != '\0'; c++) {
        if (!g_ascii_islower(*c) && !g_ascii_isdigit(*c))
            return false;
    }
    return true;
}

/* The rules a header obeys, for the writer's caller and for what a reader finds. */
static bool
vr_spool_header_check(const VrSpoolHeader *h, VrSpoolErrorCode code, GError **error)
{
    const char *why = NULL;

    if (memchr(h->disk, '\0', sizeof(h->disk)) == NULL || !vr_spool_disk_valid(h->disk))
        why = "disk name is not [a-z0-9]{1,31}";
    else if (h->virtual_size == 0)
        why = "virtual size is 0";
    else if (h->granularity < 512 || (h->granularity & (h->granularity - 1)) != 0)
        why = "granularity is not a power of 2 of at least 512";
    else if ((h->flags & ~(uint32_t)(VR_SPOOL_FLAG_FULL | VR_SPOOL_FLAG_RESYNC |
                                     VR_SPOOL_FLAG_APP_CONSISTENT)) != 0)
        why = "unknown flags";
    else if ((h->flags & VR_SPOOL_FLAG_FULL) && (h->flags & VR_SPOOL_FLAG_RESYNC))
        why = "a spool is full or a resync, not both";
    else if (((h->flags & (VR_SPOOL_FLAG_FULL | VR_SPOOL_FLAG_RESYNC)) != 0) !=
             (h->base_cycle == 0))
        why = "a full or resync spool has base cycle 0, and only those";
    else if (h->cycle <= h->base_cycle)
        why = "cycle is not after its base cycle";
    if (why == NULL)
        return true;
    g_set_error(error, VR_SPOOL_ERROR, code, "spool header: %s", why);
    return false;
}

static void
vr_spool_header_encode(const VrSpoolHeader *h, uint8_t out[VR_SPOOL_HEADER_SIZE])
{
    memset(out, 0, VR_SPOOL_HEADER_SIZE);
    memcpy(out, VR_SPOOL_MAGIC, 8);
    vr_put_u32(out + 8, VR_SPOOL_VERSION);
    vr_put_u32(out + 12, VR_SPOOL_HEADER_SIZE);
    memcpy(out + 16, h->domain_uuid, 16);
    memcpy(out + 32, h->disk, strlen(h->disk));
    vr_put_u64(out + 64, h->virtual_size);
    vr_put_u32(out + 72, h->granularity);
    vr_put_u32(out + 76, h->flags);
    vr_put_u64(out + 80, h->base_cycle);
    vr_put_u64(out + 88, h->cycle);
}

static bool
vr_spool_header_decode(const uint8_t in[VR_SPOOL_HEADER_SIZE], VrSpoolHeader *h, GError **error)
{
    if (memcmp(in, VR_SPOOL_MAGIC, 8) != 0) {
        g_set_error_literal(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT, "not a spool file");
        return false;
    }
    if (vr_get_u32(in + 8) != VR_SPOOL_VERSION || vr_get_u32(in + 12) != VR_SPOOL_HEADER_SIZE) {
        g_set_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT,
                    "spool version %u with header size %u is not supported (version %u)",
                    vr_get_u32(in + 8), vr_get_u32(in + 12), VR_SPOOL_VERSION);
        return false;
    }
    for (int i = 96; i < VR_SPOOL_HEADER_SIZE; i++) {
        if (in[i] != 0) {
            g_set_error_literal(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT,
                                "spool header: reserved bytes are not zero");
            return false;
        }
    }
    memset(h, 0, sizeof(*h));
    memcpy(h->domain_uuid, in + 16, 16);
    memcpy(h->disk, in + 32, VR_SPOOL_DISK_MAX + 1);
    h->virtual_size = vr_get_u64(in + 64);
    h->granularity = vr_get_u32(in + 72);
    h->flags = vr_get_u32(in + 76);
    h->base_cycle = vr_get_u64(in + 80);
    h->cycle = vr_get_u64(in + 88);
    /* The disk field is 32 bytes: its last one must be the terminator. */
    if (in[32 + VR_SPOOL_DISK_MAX] != 0) {
        g_set_error_literal(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT,
                            "spool header: disk name is not terminated");
        return false;
    }
    return vr_spool_header_check(h, VR_SPOOL_ERROR_CORRUPT, error);
}

static void
vr_spool_record_encode(uint8_t out[VR_SPOOL_RECORD_SIZE], VrSpoolRecordType type, uint64_t offset,
                       uint64_t length, const uint8_t *digest)
{
    memset(out, 0, VR_SPOOL_RECORD_SIZE);
    vr_put_u32(out, type);
    vr_put_u64(out + 8, offset);
    vr_put_u64(out + 16, length);
    if (digest != NULL)
        memcpy(out + 24, digest, VR_SPOOL_DIGEST_SIZE);
}

/* ---- I/O helpers ------------------------------------------------------------------- */

static bool
vr_spool_io_error(GError **error, int errsv, const char *what, const char *path)
{
    g_set_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_IO, "cannot %s '%s': %s", what, path,
                g_strerror(errsv));
    return false;
}

static bool
vr_spool_writev_all(int fd, struct iovec *iov, int iovcnt, const char *path, GError **error)
{
    while (iovcnt > 0) {
        ssize_t n = writev(fd, iov, iovcnt);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return vr_spool_io_error(error, errno, "write", path);
        }
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= n;
        }
    }
    return true;
}

/* Read exactly @len bytes; *eof is set when the file ended before the first byte. */
static bool
vr_spool_read_all(int fd, void *buf, size_t len, bool *eof, const char *path, GError **error)
{
    size_t done = 0;

    if (eof != NULL)
        *eof = false;
    while (done < len) {
        ssize_t n = read(fd, (uint8_t *)buf + done, len - done);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return vr_spool_io_error(error, errno, "read", path);
        }
        if (n == 0) {
            if (done == 0 && eof != NULL) {
                *eof = true;
                return false;
            }
            g_set_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT, "spool '%s' is truncated",
                        path);
            return false;
        }
        done += n;
    }
    return true;
}

/*
 * A record's checksum: SHA-256 over its header's first 24 bytes (type, offset, length) and
 * its payload, so that a reader can trust a record, ZERO ones included, before the END.
 */
static void
vr_spool_record_digest(const uint8_t head[VR_SPOOL_RECORD_SIZE], const void *data, size_t len,
                       uint8_t out[VR_SPOOL_DIGEST_SIZE])
{
    gnutls_hash_hd_t hash;

    /* Fails only for an unknown algorithm or no memory; SHA-256 is always there. */
    if (gnutls_hash_init(&hash, GNUTLS_DIG_SHA256) < 0)
        g_assert_not_reached();
    gnutls_hash(hash, head, 24);
    if (len > 0)
        gnutls_hash(hash, data, len);
    gnutls_hash_deinit(hash, out);
}

/* ---- writer ----------------------------------------------------------------------- */

struct _VrSpoolWriter {
    int fd;
    char *path;
    char *part_path;
    VrSpoolHeader header;
    gnutls_hash_hd_t chain; /* over the header and every record header */
    uint64_t next_offset;
    VrSpoolTotals totals;
    bool created; /* the ".part" file is ours to remove */
    bool finished;
};

VrSpoolWriter *
vr_spool_writer_new(const char *path, const VrSpoolHeader *header, GError **error)
{
    g_autoptr(VrSpoolWriter) writer = NULL;
    uint8_t buf[VR_SPOOL_HEADER_SIZE];
    struct iovec iov = { buf, sizeof(buf) };

    if (!vr_spool_header_check(header, VR_SPOOL_ERROR_INVALID, error))
        return NULL;
    writer = g_new0(VrSpoolWriter, 1);
    writer->fd = -1;
    writer->path = g_strdup(path);
    writer->part_path = g_strconcat(path, ".part", NULL);
    writer->header = *header;
    if (gnutls_hash_init(&writer->chain, GNUTLS_DIG_SHA256) < 0) {
        g_set_error_literal(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_IO, "cannot start SHA-256");
        return NULL;
    }
    writer->fd = open(writer->part_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (writer->fd < 0) {
        vr_spool_io_error(error, errno, "create", writer->part_path);
        return NULL;
    }
    writer->created = true;
    vr_spool_header_encode(header, buf);
    gnutls_hash(writer->chain, buf, sizeof(buf));
    if (!vr_spool_writev_all(writer->fd, &iov, 1, writer->part_path, error))
        return NULL;
    return g_steal_pointer(&writer);
}

static bool
vr_spool_writer_check_range(VrSpoolWriter *writer, uint64_t offset, uint64_t len, GError **error)
{
    if (writer->finished) {
        g_set_error_literal(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID, "spool is finished");
        return false;
    }
    if (len == 0 || offset < writer->next_offset || offset > writer->header.virtual_size ||
        len > writer->header.virtual_size - offset) {
        g_set_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID,
                    "record at %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                    " is empty, out of order or beyond the disk",
                    offset, len);
        return false;
    }
    return true;
}

static bool
vr_spool_writer_append(VrSpoolWriter *writer, VrSpoolRecordType type, uint64_t offset,
                       const void *data, uint64_t len, GError **error)
{
    uint8_t head[VR_SPOOL_RECORD_SIZE];
    uint8_t digest[VR_SPOOL_DIGEST_SIZE];
    struct iovec iov[2] = { { head, sizeof(head) }, { (void *)data, data != NULL ? len : 0 } };

    vr_spool_record_encode(head, type, offset, len, NULL);
    vr_spool_record_digest(head, data, data != NULL ? len : 0, digest);
    memcpy(head + 24, digest, VR_SPOOL_DIGEST_SIZE);
    if (!vr_spool_writev_all(writer->fd, iov, data != NULL ? 2 : 1, writer->part_path, error))
        return false;
    gnutls_hash(writer->chain, head, sizeof(head));
    writer->next_offset = offset + len;
    writer->totals.records++;
    if (data != NULL)
        writer->totals.data_bytes += len;
    else
        writer->totals.zero_bytes += len;
    return true;
}

bool
vr_spool_writer_add_data(VrSpoolWriter *writer, uint64_t offset, const void *data, size_t len,
                         GError **error)
{
    if (!vr_spool_writer_check_range(writer, offset, len, error))
        return false;
    if (len > VR_SPOOL_MAX_RECORD) {
        g_set_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID,
                    "data record of %zu bytes exceeds %d", len, VR_SPOOL_MAX_RECORD);
        return false;
    }
    return vr_spool_writer_append(writer, VR_SPOOL_RECORD_DATA, offset, data, len, error);
}

bool
vr_spool_writer_add_zero(VrSpoolWriter *writer, uint64_t offset, uint64_t len, GError **error)
{
    if (!vr_spool_writer_check_range(writer, offset, len, error))
        return false;
    return vr_spool_writer_append(writer, VR_SPOOL_RECORD_ZERO, offset, NULL, len, error);
}

bool
vr_spool_writer_finish(VrSpoolWriter *writer, VrSpoolTotals *totals, GError **error)
{
    uint8_t head[VR_SPOOL_RECORD_SIZE];
    uint8_t digest[VR_SPOOL_DIGEST_SIZE];
    struct iovec iov = { head, sizeof(head) };
    g_autofree char *dir = NULL;
    int dirfd;

    if (writer->finished) {
        g_set_error_literal(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID, "spool is finished");
        return false;
    }
    gnutls_hash_output(writer->chain, digest);
    vr_spool_record_encode(head, VR_SPOOL_RECORD_END, writer->totals.records,
                           writer->totals.data_bytes, digest);
    if (!vr_spool_writev_all(writer->fd, &iov, 1, writer->part_path, error))
        return false;
    if (fdatasync(writer->fd) < 0)
        return vr_spool_io_error(error, errno, "sync", writer->part_path);
    if (close(writer->fd) < 0) {
        writer->fd = -1;
        return vr_spool_io_error(error, errno, "close", writer->part_path);
    }
    writer->fd = -1;
    if (rename(writer->part_path, writer->path) < 0)
        return vr_spool_io_error(error, errno, "rename", writer->part_path);
    writer->finished = true;
    /* The rename itself is durable only once the directory is. */
    dir = g_path_get_dirname(writer->path);
    dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0 || fsync(dirfd) < 0) {
        int errsv = errno;

        if (dirfd >= 0)
            close(dirfd);
        return vr_spool_io_error(error, errsv, "sync directory", dir);
    }
    close(dirfd);
    if (totals != NULL)
        *totals = writer->totals;
    return true;
}

void
vr_spool_writer_free(VrSpoolWriter *writer)
{
    if (writer == NULL)
        return;
    if (writer->fd >= 0)
        close(writer->fd);
    /* Never another writer's file: only the one this writer created. */
    if (writer->created && !writer->finished)
        unlink(writer->part_path);
    if (writer->chain != NULL)
        gnutls_hash_deinit(writer->chain, NULL);
    g_free(writer->path);
    g_free(writer->part_path);
    g_free(writer);
}

/* ---- reader ----------------------------------------------------------------------- */

struct _VrSpoolReader {
    int fd;
    char *path;
    VrSpoolHeader header;
    gnutls_hash_hd_t chain;
    uint64_t next_offset;
    VrSpoolTotals totals;
    uint8_t *buf; /* VR_SPOOL_MAX_RECORD bytes, allocated on the first DATA record */
    bool done;
};

VrSpoolReader *
vr_spool_reader_open(const char *path, GError **error)
{
    g_autoptr(VrSpoolReader) reader = g_new0(VrSpoolReader, 1);
    uint8_t buf[VR_SPOOL_HEADER_SIZE];
    bool eof = false;

    reader->fd = -1;
    reader->path = g_strdup(path);
    if (gnutls_hash_init(&reader->chain, GNUTLS_DIG_SHA256) < 0) {
        g_set_error_literal(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_IO, "cannot start SHA-256");
        return NULL;
    }
    reader->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (reader->fd < 0) {
        vr_spool_io_error(error, errno, "open", path);
        return NULL;
    }
    if (!vr_spool_read_all(reader->fd, buf, sizeof(buf), &eof, path, error)) {
        if (eof) {
            g_set_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT, "spool '%s' is empty", path);
        }
        return NULL;
    }
    if (!vr_spool_header_decode(buf, &reader->header, error)) {
        g_prefix_error(error, "'%s': ", path);
        return NULL;
    }
    gnutls_hash(reader->chain, buf, sizeof(buf));
    return g_steal_pointer(&reader);
}

const VrSpoolHeader *
vr_spool_reader_get_header(VrSpoolReader *reader)
{
    return &reader->header;
}

static bool vr_spool_corrupt(VrSpoolReader *reader, GError **error, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static bool
vr_spool_corrupt(VrSpoolReader *reader, GError **error, const char *format, ...)
{
    g_autofree char *what = NULL;
    va_list args;

    va_start(args, format);
    what = g_strdup_vprintf(format, args);
    va_end(args);
    reader->done = true;
    g_set_error(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_CORRUPT, "spool '%s': %s", reader->path,
                what);
    return false;
}

bool
vr_spool_reader_next(VrSpoolReader *reader, VrSpoolRecord *record, VrSpoolTotals *totals,
                     GError **error)
{
    uint8_t head[VR_SPOOL_RECORD_SIZE];
    uint8_t digest[VR_SPOOL_DIGEST_SIZE];
    uint8_t extra;
    uint32_t type;
    uint64_t offset;
    uint64_t length;
    bool eof = false;

    if (reader->done) {
        g_set_error_literal(error, VR_SPOOL_ERROR, VR_SPOOL_ERROR_INVALID,
                            "spool reader is at its end");
        return false;
    }
    if (!vr_spool_read_all(reader->fd, head, sizeof(head), &eof, reader->path, error)) {
        reader->done = true;
        if (eof)
            return vr_spool_corrupt(reader, error, "ends without an END record");
        return false;
    }
    type = vr_get_u32(head);
    offset = vr_get_u64(head + 8);
    length = vr_get_u64(head + 16);
    if (vr_get_u32(head + 4) != 0)
        return vr_spool_corrupt(reader, error, "reserved record bytes are not zero");

    if (type == VR_SPOOL_RECORD_END) {
        gnutls_hash_output(reader->chain, digest);
        if (offset != reader->totals.records || length != reader->totals.data_bytes)
            return vr_spool_corrupt(reader, error, "END counts do not match the records");
        if (memcmp(digest, head + 24, sizeof(digest)) != 0)
            return vr_spool_corrupt(reader, error, "stream digest does not match");
        if (vr_spool_read_all(reader->fd, &extra, 1, &eof, reader->path, NULL) || !eof)
            return vr_spool_corrupt(reader, error, "bytes after the END record");
        reader->done = true;
        if (totals != NULL)
            *totals = reader->totals;
        return false;
    }
    if (type != VR_SPOOL_RECORD_DATA && type != VR_SPOOL_RECORD_ZERO)
        return vr_spool_corrupt(reader, error, "unknown record type %u", type);
    if (length == 0 || offset < reader->next_offset || offset > reader->header.virtual_size ||
        length > reader->header.virtual_size - offset) {
        return vr_spool_corrupt(reader, error,
                                "record %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                                " is empty, out of order or beyond the disk",
                                offset, length);
    }
    if (type == VR_SPOOL_RECORD_ZERO) {
        vr_spool_record_digest(head, NULL, 0, digest);
        if (memcmp(digest, head + 24, sizeof(digest)) != 0) {
            return vr_spool_corrupt(
                reader, error,
                "checksum of the zero record at %" G_GUINT64_FORMAT " does not match", offset);
        }
        record->data = NULL;
        reader->totals.zero_bytes += length;
    } else {
        if (length > VR_SPOOL_MAX_RECORD)
            return vr_spool_corrupt(reader, error, "data record over the size limit");
        if (reader->buf == NULL)
            reader->buf = g_malloc(VR_SPOOL_MAX_RECORD);
        if (!vr_spool_read_all(reader->fd, reader->buf, length, NULL, reader->path, error)) {
            reader->done = true;
            return false;
        }
        vr_spool_record_digest(head, reader->buf, length, digest);
        if (memcmp(digest, head + 24, sizeof(digest)) != 0) {
            return vr_spool_corrupt(
                reader, error, "checksum of data at %" G_GUINT64_FORMAT " does not match", offset);
        }
        record->data = reader->buf;
        reader->totals.data_bytes += length;
    }
    gnutls_hash(reader->chain, head, sizeof(head));
    reader->totals.records++;
    reader->next_offset = offset + length;
    record->type = type;
    record->offset = offset;
    record->length = length;
    return true;
}

void
vr_spool_reader_free(VrSpoolReader *reader)
{
    if (reader == NULL)
        return;
    if (reader->fd >= 0)
        close(reader->fd);
    if (reader->chain != NULL)
        gnutls_hash_deinit(reader->chain, NULL);
    g_free(reader->buf);
    g_free(reader->path);
    g_free(reader);
}
