/*
 * vr-ship.h: the wire stream that is uploaded, written from a cycle's records
 *
 * The upload client (vr-sender.h) sends a wire stream file (vr-wire.h). A VrShipWriter
 * writes one record by record, as the capture reads a disk (vr_capture_cycle_set_stream():
 * what the primary's cycles do, so no spool is written and read again). vr_ship_encode()
 * turns a finished spool file (vr-spool.h) into a stream through the same writer: every spool
 * record is verified by the reader before it is encoded. Memory stays bounded by one record
 * whatever the size of the cycle. The stream is written as "NAME.part", synced and renamed,
 * so it is complete or absent, as a spool is. docs/ship.md has the details.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "vr-sender.h"
#include "vr-spool.h"

G_BEGIN_DECLS

#define VR_SHIP_ERROR (vr_ship_error_quark())
GQuark vr_ship_error_quark(void);

/*
 * Errors of the stream side. Reading the spool fails with its own errors (VR_SPOOL_ERROR:
 * _IO, or _CORRUPT for a damaged spool, which is worth a new capture, not a retry); their
 * messages name the spool.
 */
typedef enum {
    VR_SHIP_ERROR_IO,      /* creating, writing, syncing or renaming the stream failed */
    VR_SHIP_ERROR_EXISTS,  /* the stream, or its ".part" file, already exists */
    VR_SHIP_ERROR_INVALID, /* a bad relationship id, or a spool whose identity the wire refuses */
} VrShipErrorCode;

/* What the stream's BEGIN record takes from the caller; the rest comes from the spool. */
typedef struct {
    const char *relationship; /* [a-z0-9]{1,16} */
    uint64_t epoch;
} VrShipIdentity;

/* What went into the stream. */
typedef struct {
    uint64_t records;      /* DATA and ZERO records (BEGIN and END not counted) */
    uint64_t data_bytes;   /* decoded bytes of DATA records */
    uint64_t zero_bytes;   /* disk bytes covered by ZERO records */
    uint64_t stream_bytes; /* the size of the stream file */
    uint64_t zstd_records; /* DATA records sent zstd-compressed */
} VrShipTotals;

/*
 * Encode the spool at @spool_path into a wire stream at @stream_path: BEGIN with the spool's
 * identity (domain, disk, virtual size, granularity, base cycle, cycle, flags) and @id's
 * relationship and epoch, one DATA or ZERO record per spool record, END. Each DATA payload is
 * zstd when that is at least 10% smaller (vr-wire's encoder decides; it has no raw-only mode).
 *
 * The stream is written to "@stream_path.part" (created exclusively), fdatasync'ed, renamed
 * to @stream_path (never over an existing file) and its directory fsync'ed. On failure
 * nothing is left: neither the ".part" file nor @stream_path, and @totals is untouched. An
 * existing @stream_path or ".part" file is an error (VR_SHIP_ERROR_EXISTS) and is left alone.
 * @totals may be NULL.
 *
 * Keeps no state between calls: calls for different streams may run in parallel threads.
 */
bool vr_ship_encode(const char *spool_path, const VrShipIdentity *id, const char *stream_path,
                    VrShipTotals *totals, GError **error);

/*
 * A wire stream written record by record, without a spool: what vr_ship_encode() does with
 * a spool's records, for a producer that has them in hand (the capture reading a disk).
 * vr_ship_writer_new() checks that @stream_path does not exist and creates
 * "@stream_path.part" exclusively, with the BEGIN record of @header's identity (the spool
 * header the records would have had) and @id. Records go in disk order as the spool's rules
 * say (vr-spool.h). vr_ship_writer_finish() writes END, fdatasyncs, renames the file to
 * @stream_path (never over an existing file) and fsyncs the directory. Freeing a writer that
 * did not finish removes what it made; an existing ".part" (VR_SHIP_ERROR_EXISTS) is left
 * alone. Memory stays bounded by one record plus a 1 MiB buffer.
 */
typedef struct _VrShipWriter VrShipWriter;

VrShipWriter *vr_ship_writer_new(const char *stream_path, const VrSpoolHeader *header,
                                 const VrShipIdentity *id, GError **error);
bool vr_ship_writer_add_data(VrShipWriter *writer, uint64_t offset, const void *data, size_t len,
                             GError **error);
bool vr_ship_writer_add_zero(VrShipWriter *writer, uint64_t offset, uint64_t len, GError **error);
/* @totals may be NULL. */
bool vr_ship_writer_finish(VrShipWriter *writer, VrShipTotals *totals, GError **error);
/*
 * Upload the stream while it is written (vr_sender_upload_feed()): @feed (borrowed, it must
 * outlive @writer) gets the file and then the size after every write (every 1 MiB, or at a
 * record that comes 10 s after the last write, so that a slow read keeps the upload's
 * connection busy); the END record only
 * once vr_ship_writer_finish() made the stream durable under its name, and then the feed is
 * complete. A writer freed unfinished fails the feed, so its upload never sends END; once
 * the feed's cancellable fires (vr_sender_feed_set_cancellable()), adding a record fails
 * (G_IO_ERROR_CANCELLED), so the read that writes the stream stops.
 */
bool vr_ship_writer_set_feed(VrShipWriter *writer, VrSenderFeed *feed, GError **error);
void vr_ship_writer_free(VrShipWriter *writer);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrShipWriter, vr_ship_writer_free)

G_END_DECLS
