/*
 * vr-ship.c: turn the spool of a captured cycle into the wire stream that is uploaded
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vr-sender.h"
#include "vr-ship.h"
#include "vr-spool.h"
#include "vr-wire.h"

GQuark
vr_ship_error_quark(void)
{
    return g_quark_from_static_string("vr-ship-error-quark");
}

/*
 * Encoded records collect in one buffer, written out once it holds this much: a cycle of
 * many small or ZERO records costs few write() calls, and the buffer never holds more than
 * this plus one record (64 bytes of header and at most VR_WIRE_MAX_DATA of payload).
 */
#define VR_SHIP_FLUSH_SIZE (1024 * 1024)
/*
 * A stream being uploaded while it is written (a feed) is also written out when a record
 * comes this long after the last write, however little the buffer holds: a slow read (slow
 * storage, long stretches of few records) would otherwise leave the upload's connection
 * silent past the receiver's I/O timeout (60 s by default), which closes it.
 */
#define VR_SHIP_FEED_INTERVAL_US (10 * G_USEC_PER_SEC)

/* One spool record is one wire record: a spool DATA record never needs to be split. */
G_STATIC_ASSERT(VR_SPOOL_MAX_RECORD <= VR_WIRE_MAX_DATA);
/* Any disk name a spool holds fits the BEGIN record. */
G_STATIC_ASSERT(VR_SPOOL_DISK_MAX <= VR_WIRE_DISK_MAX);

static bool
vr_ship_io_error(GError **error, int errsv, const char *what, const char *path)
{
    g_set_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_IO, "cannot %s '%s': %s", what, path,
                g_strerror(errsv));
    return false;
}

/*
 * The BEGIN identity of the stream of @h (@what names the stream in errors). The spool and the wire
 * have the same flags with the same rules (FULL and RESYNC exclude each other; base 0 exactly with
 * one of them), and the spool reader has checked them; they are mapped one by one all the same, and
 * the wire's own check decides, so a spool flag the wire does not know is refused instead of
 * dropped.
 */
static bool
vr_ship_identity(const char *what, const VrSpoolHeader *h, const VrShipIdentity *id,
                 VrWireIdentity *out, GError **error)
{
    const uint32_t known = VR_SPOOL_FLAG_FULL | VR_SPOOL_FLAG_RESYNC | VR_SPOOL_FLAG_APP_CONSISTENT;
    g_autoptr(GError) local = NULL;
    VrWireIdentity wid = { .kind = VR_WIRE_KIND_CYCLE };

    if ((h->flags & ~known) != 0) {
        g_set_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_INVALID,
                    "%s would have flags 0x%x that the wire cannot carry", what, h->flags);
        return false;
    }
    g_strlcpy(wid.relationship, id->relationship, sizeof(wid.relationship));
    memcpy(wid.domain_uuid, h->domain_uuid, sizeof(wid.domain_uuid));
    g_strlcpy(wid.disk, h->disk, sizeof(wid.disk));
    wid.epoch = id->epoch;
    wid.base_cycle = h->base_cycle;
    wid.target_cycle = h->cycle;
    wid.virtual_size = h->virtual_size;
    wid.granularity = h->granularity;
    if (h->flags & VR_SPOOL_FLAG_FULL)
        wid.flags |= VR_WIRE_FLAG_FULL;
    if (h->flags & VR_SPOOL_FLAG_RESYNC)
        wid.flags |= VR_WIRE_FLAG_RESYNC;
    if (h->flags & VR_SPOOL_FLAG_APP_CONSISTENT)
        wid.flags |= VR_WIRE_FLAG_APP_CONSISTENT;
    if (!vr_wire_identity_check(&wid, &local)) {
        g_set_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_INVALID, "%s cannot be shipped: %s", what,
                    local->message);
        return false;
    }
    *out = wid;
    return true;
}

static bool
vr_ship_write_all(int fd, const uint8_t *buf, size_t len, const char *path, GError **error)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return vr_ship_io_error(error, errno, "write", path);
        }
        buf += n;
        len -= n;
    }
    return true;
}

/* Write out what @out holds and empty it. */
static bool
vr_ship_flush(int fd, GByteArray *out, const char *path, GError **error)
{
    bool ok = vr_ship_write_all(fd, out->data, out->len, path, error);

    g_byte_array_set_size(out, 0);
    return ok;
}

/* Rename @from to @to, never over an existing @to. */
static bool
vr_ship_rename(const char *from, const char *to, GError **error)
{
    struct stat st;

    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return true;
    if (errno == EEXIST) {
        g_set_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_EXISTS,
                    "stream '%s' appeared while it was encoded", to);
        return false;
    }
    if (errno != EINVAL && errno != ENOSYS)
        return vr_ship_io_error(error, errno, "rename", from);
    /* A file system without RENAME_NOREPLACE: check, then rename (a window remains). */
    if (lstat(to, &st) == 0) {
        g_set_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_EXISTS,
                    "stream '%s' appeared while it was encoded", to);
        return false;
    }
    if (rename(from, to) < 0)
        return vr_ship_io_error(error, errno, "rename", from);
    return true;
}

/* The rename is durable only once the directory is. */
static bool
vr_ship_sync_dir(const char *path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int errsv;

    if (dirfd >= 0 && fsync(dirfd) == 0) {
        close(dirfd);
        return true;
    }
    errsv = errno;
    if (dirfd >= 0)
        close(dirfd);
    return vr_ship_io_error(error, errsv, "sync directory", dir);
}

/* ---- the stream writer ------------------------------------------------------------ */

struct _VrShipWriter {
    char *path;      /* the stream */
    char *part_path; /* "@path.part" until the rename */
    VrWireEncoder *encoder;
    GByteArray *out; /* encoded, not written yet */
    int fd;          /* of the ".part" file; -1 once closed */
    bool renamed;    /* the ".part" file became @path */
    bool finished;
    uint64_t written;   /* bytes of the file written so far */
    VrSenderFeed *feed; /* told of every write, or NULL (borrowed) */
    int64_t fed_at;     /* monotonic time the feed last grew */
};

VrShipWriter *
vr_ship_writer_new(const char *stream_path, const VrSpoolHeader *header, const VrShipIdentity *id,
                   GError **error)
{
    g_autoptr(VrShipWriter) writer = NULL;
    g_autofree char *what = g_strdup_printf("the stream '%s'", stream_path);
    VrWireIdentity wid;
    struct stat st;

    if (id->relationship == NULL || strlen(id->relationship) > VR_WIRE_RELATIONSHIP_MAX) {
        g_set_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_INVALID,
                    "relationship id '%s' is not [a-z0-9]{1,16}",
                    id->relationship != NULL ? id->relationship : "(null)");
        return NULL;
    }
    /* Checked first for a clear error before any work; the rename checks again. */
    if (lstat(stream_path, &st) == 0) {
        g_set_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_EXISTS, "stream '%s' exists", stream_path);
        return NULL;
    }
    if (errno != ENOENT) {
        vr_ship_io_error(error, errno, "check", stream_path);
        return NULL;
    }
    if (!vr_ship_identity(what, header, id, &wid, error))
        return NULL;
    writer = g_new0(VrShipWriter, 1);
    writer->fd = -1;
    writer->path = g_strdup(stream_path);
    writer->part_path = g_strconcat(stream_path, ".part", NULL);
    writer->out = g_byte_array_sized_new(VR_SHIP_FLUSH_SIZE + VR_WIRE_HEADER_SIZE);
    writer->encoder = vr_wire_encoder_new(&wid, error);
    if (writer->encoder == NULL || !vr_wire_encoder_begin(writer->encoder, writer->out, error))
        return NULL;
    /* Exclusive: a ".part" file that exists is another encoder's, or a crash's, not ours. */
    writer->fd = open(writer->part_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (writer->fd < 0) {
        if (errno == EEXIST)
            g_set_error(error, VR_SHIP_ERROR, VR_SHIP_ERROR_EXISTS,
                        "'%s' exists: another encoder's, or left by a crash", writer->part_path);
        else
            vr_ship_io_error(error, errno, "create", writer->part_path);
        g_clear_pointer(&writer->part_path, g_free); /* not ours: left alone */
        return NULL;
    }
    return g_steal_pointer(&writer);
}

/*
 * Write the buffer out once it holds enough (or always, with @all; with a feed, also
 * VR_SHIP_FEED_INTERVAL_US after the last write), and tell the feed; but not of the last
 * write (@all: the rest, with the END record), which it learns only once the file is durable
 * (vr_ship_writer_finish()).
 */
static bool
vr_ship_writer_drain(VrShipWriter *writer, bool all, GError **error)
{
    uint64_t len = writer->out->len;
    int64_t now = 0;

    /* the upload that follows the stream failed, or the run was cancelled: the read stops */
    if (writer->feed != NULL && !all && !vr_sender_feed_check(writer->feed, error))
        return false;
    if (len == 0)
        return true;
    if (writer->feed != NULL && !all)
        now = g_get_monotonic_time();
    if (len < VR_SHIP_FLUSH_SIZE && !all &&
        (writer->feed == NULL || now - writer->fed_at < VR_SHIP_FEED_INTERVAL_US))
        return true;
    if (!vr_ship_flush(writer->fd, writer->out, writer->part_path, error))
        return false;
    writer->written += len;
    if (writer->feed != NULL && !all) {
        vr_sender_feed_grow(writer->feed, writer->written);
        writer->fed_at = now;
    }
    return true;
}

bool
vr_ship_writer_set_feed(VrShipWriter *writer, VrSenderFeed *feed, GError **error)
{
    g_return_val_if_fail(writer->feed == NULL && writer->fd >= 0 && !writer->finished, false);
    if (!vr_sender_feed_attach(feed, writer->fd, error)) {
        g_prefix_error(error, "'%s': ", writer->part_path);
        return false;
    }
    writer->feed = feed;
    writer->fed_at = g_get_monotonic_time();
    vr_sender_feed_grow(feed, writer->written);
    return true;
}

bool
vr_ship_writer_add_data(VrShipWriter *writer, uint64_t offset, const void *data, size_t len,
                        GError **error)
{
    return vr_wire_encoder_add_data(writer->encoder, offset, data, len, writer->out, error) &&
           vr_ship_writer_drain(writer, false, error);
}

bool
vr_ship_writer_add_zero(VrShipWriter *writer, uint64_t offset, uint64_t len, GError **error)
{
    return vr_wire_encoder_add_zero(writer->encoder, offset, len, writer->out, error) &&
           vr_ship_writer_drain(writer, false, error);
}

bool
vr_ship_writer_finish(VrShipWriter *writer, VrShipTotals *totals, GError **error)
{
    VrWireTotals wire_totals;
    int fd;

    g_return_val_if_fail(!writer->finished && writer->fd >= 0, false);
    if (!vr_wire_encoder_end(writer->encoder, writer->out, error) ||
        !vr_ship_writer_drain(writer, true, error))
        return false;
    if (fdatasync(writer->fd) < 0)
        return vr_ship_io_error(error, errno, "sync", writer->part_path);
    fd = writer->fd;
    writer->fd = -1;
    if (close(fd) < 0)
        return vr_ship_io_error(error, errno, "close", writer->part_path);
    if (!vr_ship_rename(writer->part_path, writer->path, error))
        return false;
    writer->renamed = true;
    if (!vr_ship_sync_dir(writer->path, error))
        return false;
    writer->finished = true;
    if (writer->feed != NULL) {
        /* the END record goes out only now: a stream the replica commits is complete here */
        vr_sender_feed_grow(writer->feed, writer->written);
        vr_sender_feed_complete(writer->feed);
    }
    if (totals != NULL) {
        vr_wire_encoder_get_totals(writer->encoder, &wire_totals);
        *totals = (VrShipTotals){
            .records = wire_totals.records,
            .data_bytes = wire_totals.data_bytes,
            .zero_bytes = wire_totals.zero_bytes,
            .stream_bytes = wire_totals.wire_bytes,
            .zstd_records = wire_totals.zstd_records,
        };
    }
    return true;
}

void
vr_ship_writer_free(VrShipWriter *writer)
{
    if (writer == NULL)
        return;
    if (writer->feed != NULL && !writer->finished)
        vr_sender_feed_fail(writer->feed); /* its upload stops before the END record */
    if (writer->fd >= 0)
        close(writer->fd);
    /* Ours either way when unfinished: the ".part" we created, or the stream it became. */
    if (!writer->finished && writer->part_path != NULL)
        unlink(writer->renamed ? writer->path : writer->part_path);
    vr_wire_encoder_free(writer->encoder);
    if (writer->out != NULL)
        g_byte_array_unref(writer->out);
    g_free(writer->part_path);
    g_free(writer->path);
    g_free(writer);
}

/* ---- a spool into a stream ------------------------------------------------------------ */

/*
 * Every record of the spool into the writer, one at a time: the reader hands out a record
 * only after checking it, and its END check (counts, digest, nothing after it) comes before
 * the stream's END is written.
 */
bool
vr_ship_encode(const char *spool_path, const VrShipIdentity *id, const char *stream_path,
               VrShipTotals *totals, GError **error)
{
    g_autoptr(VrSpoolReader) reader = NULL;
    g_autoptr(VrShipWriter) writer = NULL;
    g_autoptr(GError) local = NULL;
    VrSpoolRecord rec;
    VrSpoolTotals spool_totals = { 0 };
    VrShipTotals ship_totals;

    reader = vr_spool_reader_open(spool_path, error);
    if (reader == NULL)
        return false;
    writer = vr_ship_writer_new(stream_path, vr_spool_reader_get_header(reader), id, error);
    if (writer == NULL) {
        g_prefix_error(error, "spool '%s': ", spool_path);
        return false;
    }
    while (vr_spool_reader_next(reader, &rec, &spool_totals, &local)) {
        bool ok = rec.type == VR_SPOOL_RECORD_DATA
                      ? vr_ship_writer_add_data(writer, rec.offset, rec.data, rec.length, error)
                      : vr_ship_writer_add_zero(writer, rec.offset, rec.length, error);

        /* Not expected but for I/O: the reader checks the same order and bounds. */
        if (!ok) {
            g_prefix_error(error, "spool '%s': ", spool_path);
            return false;
        }
    }
    if (local != NULL) {
        g_propagate_error(error, g_steal_pointer(&local));
        return false;
    }
    if (!vr_ship_writer_finish(writer, &ship_totals, error))
        return false;
    g_assert(ship_totals.records == spool_totals.records &&
             ship_totals.data_bytes == spool_totals.data_bytes &&
             ship_totals.zero_bytes == spool_totals.zero_bytes);
    if (totals != NULL)
        *totals = ship_totals;
    return true;
}
