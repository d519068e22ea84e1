/*
 * vr-ship.h: turn the spool of a captured cycle into the wire stream that is uploaded
 *
 * Capture leaves one spool file per disk and cycle (vr-spool.h); the upload client
 * (vr-sender.h) sends a wire stream file (vr-wire.h). vr_ship_encode() reads the one and
 * writes the other, record by record: every spool record is verified by the reader before it
 * is encoded, and memory stays bounded by one record whatever the size of the cycle. The
 * stream is written as "NAME.part", synced and renamed, so it is complete or absent, as a
 * spool is. docs/ship.md has the details.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

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
 * Progress of an encoding, after each record: the disk offset reached (records come in
 * ascending order), the disk's virtual size, and the disk bytes encoded so far.
 */
typedef void (*VrShipProgress)(uint64_t offset, uint64_t size, uint64_t bytes, gpointer data);

/* vr_ship_encode() with @progress (may be NULL) called on this thread. */
bool vr_ship_encode_with_progress(const char *spool_path, const VrShipIdentity *id,
                                  const char *stream_path, VrShipProgress progress,
                                  gpointer progress_data, VrShipTotals *totals, GError **error);

G_END_DECLS
