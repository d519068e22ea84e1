/*
 * vr-spool.h: the local spool of one captured cycle of one disk
 *
 * Capture copies the changed blocks of a point-in-time view into a spool file and tears
 * the fleece down at once; shipping reads the spool later at its own pace. The format is in
 * docs/spool.md:
 *
 *   header (128 bytes)  magic, version, domain uuid, disk, virtual size, granularity,
 *                       flags, base cycle, cycle
 *   records             DATA (offset, length, SHA-256 of them and the payload, payload)
 *                       and ZERO (offset, length, SHA-256 of them), in increasing,
 *                       non-overlapping offsets
 *   END record          record count, data bytes, SHA-256 over the header and every
 *                       record header before it
 *
 * A spool is written under a ".part" name and renamed after fdatasync, so a spool file is
 * either complete or absent. A reader checks everything before it hands out a record.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

#define VR_SPOOL_ERROR (vr_spool_error_quark())
GQuark vr_spool_error_quark(void);

typedef enum {
    VR_SPOOL_ERROR_IO,      /* open, read, write, sync or rename failed */
    VR_SPOOL_ERROR_CORRUPT, /* the file breaks the format or a checksum does not match */
    VR_SPOOL_ERROR_INVALID, /* a caller passed a record the format cannot hold */
} VrSpoolErrorCode;

#define VR_SPOOL_VERSION     1
#define VR_SPOOL_DISK_MAX    31
#define VR_SPOOL_MAX_RECORD  (4 * 1024 * 1024) /* payload of one DATA record */
#define VR_SPOOL_DIGEST_SIZE 32

typedef enum {
    VR_SPOOL_FLAG_FULL = 1 << 0,           /* no base: every allocated block of the disk */
    VR_SPOOL_FLAG_RESYNC = 1 << 1,         /* blocks that differ from the replica's hashes */
    VR_SPOOL_FLAG_APP_CONSISTENT = 1 << 2, /* cut inside a guest fsfreeze */
} VrSpoolFlags;

typedef struct {
    uint8_t domain_uuid[16];
    char disk[VR_SPOOL_DISK_MAX + 1]; /* "vda": [a-z0-9]+ */
    uint64_t virtual_size;
    uint32_t granularity;
    uint32_t flags;
    uint64_t base_cycle; /* 0 with VR_SPOOL_FLAG_FULL or VR_SPOOL_FLAG_RESYNC, only then */
    uint64_t cycle;
} VrSpoolHeader;

typedef enum {
    VR_SPOOL_RECORD_DATA = 1,
    VR_SPOOL_RECORD_ZERO = 2,
    VR_SPOOL_RECORD_END = 3,
} VrSpoolRecordType;

/* What the writer wrote, or the reader found in the END record. */
typedef struct {
    uint64_t records;    /* DATA and ZERO records */
    uint64_t data_bytes; /* payload bytes of DATA records */
    uint64_t zero_bytes; /* bytes covered by ZERO records */
} VrSpoolTotals;

/* ---- writing ---------------------------------------------------------------------- */

typedef struct _VrSpoolWriter VrSpoolWriter;

/* Create "@path.part" (it must not exist) and write the header. (transfer full) */
VrSpoolWriter *vr_spool_writer_new(const char *path, const VrSpoolHeader *header, GError **error);

/*
 * Append a DATA record: @len bytes at disk offset @offset, 0 < @len <= VR_SPOOL_MAX_RECORD,
 * at or after the end of the previous record, within the virtual size.
 */
bool vr_spool_writer_add_data(VrSpoolWriter *writer, uint64_t offset, const void *data, size_t len,
                              GError **error);
/* Append a ZERO record: @len bytes at @offset read as zeroes. */
bool vr_spool_writer_add_zero(VrSpoolWriter *writer, uint64_t offset, uint64_t len, GError **error);

/* Write END, fdatasync, rename to @path, fsync the directory. @totals may be NULL. */
bool vr_spool_writer_finish(VrSpoolWriter *writer, VrSpoolTotals *totals, GError **error);

/* Free; when not finished, the ".part" file is removed. NULL-safe. */
void vr_spool_writer_free(VrSpoolWriter *writer);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrSpoolWriter, vr_spool_writer_free)

/* ---- reading ---------------------------------------------------------------------- */

typedef struct _VrSpoolReader VrSpoolReader;

typedef struct {
    VrSpoolRecordType type; /* DATA or ZERO; END is checked, never returned */
    uint64_t offset;
    uint64_t length;
    const uint8_t *data; /* DATA: the payload, valid until the next call (transfer none) */
} VrSpoolRecord;

/* Open a finished spool and check its header. (transfer full) */
VrSpoolReader *vr_spool_reader_open(const char *path, GError **error);
const VrSpoolHeader *vr_spool_reader_get_header(VrSpoolReader *reader);

/*
 * The next record, checked (checksum, order, bounds). Returns false with no error at the
 * END record once it has checked the record count and the digest (then @totals is set, if
 * non-NULL); false with an error on any fault.
 */
bool vr_spool_reader_next(VrSpoolReader *reader, VrSpoolRecord *record, VrSpoolTotals *totals,
                          GError **error);

void vr_spool_reader_free(VrSpoolReader *reader);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrSpoolReader, vr_spool_reader_free)

G_END_DECLS
