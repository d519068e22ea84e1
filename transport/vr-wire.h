/*
 * vr-wire.h: the replication wire format, version 1, as pure functions over buffers
 *
 * One stream carries one replication cycle of one disk (or the hash list of a resync) from
 * the primary to the replica. The format is in docs/protocol.md:
 *
 *   record header (64 bytes)  magic "VRW1", type, encoding, payload size, offset, length,
 *                             SHA-256 over header bytes 0..31 and the decoded payload
 *   BEGIN                     the identity: relationship, domain, disk, epoch, cycles,
 *                             virtual size, granularity, flags
 *   DATA / ZERO (kind 1)      disk ranges in increasing, non-overlapping offsets; DATA raw or
 *                             one zstd frame
 *   HASHES (kind 2)           the block digests of the replica, block 0 first
 *   END                       record count, decoded bytes, SHA-256 over the checksums of
 *                             every record before it
 *
 * No I/O here: the encoder appends records to a caller's buffer, the decoder takes bytes in
 * any chunking and hands out each record only once it has verified it. Neither object is
 * thread-safe; each is used by one thread at a time.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

#define VR_WIRE_ERROR (vr_wire_error_quark())
GQuark vr_wire_error_quark(void);

typedef enum {
    VR_WIRE_ERROR_CORRUPT,  /* a checksum, the stream digest, a zstd frame or reserved bytes */
    VR_WIRE_ERROR_PROTOCOL, /* order, a record type or size not allowed, a bad identity,
                               bounds, bytes after END, a stream that stops before END */
    VR_WIRE_ERROR_INVALID,  /* the encoder's caller asked for a record the format forbids */
} VrWireErrorCode;

#define VR_WIRE_VERSION          1
#define VR_WIRE_MAGIC            0x31575256u /* "VRW1" as bytes */
#define VR_WIRE_HEADER_SIZE      64
#define VR_WIRE_IDENTITY_SIZE    128
#define VR_WIRE_DIGEST_SIZE      32
#define VR_WIRE_MAX_DATA         (4 * 1024 * 1024) /* decoded bytes of one DATA record */
#define VR_WIRE_MAX_HASHES       (VR_WIRE_MAX_DATA / VR_WIRE_DIGEST_SIZE) /* per HASHES record */
#define VR_WIRE_HASH_BLOCK_SIZE  65536
#define VR_WIRE_RELATIONSHIP_MAX 16
#define VR_WIRE_DISK_MAX         31

typedef enum {
    VR_WIRE_RECORD_BEGIN = 1,
    VR_WIRE_RECORD_DATA = 2,
    VR_WIRE_RECORD_ZERO = 3,
    VR_WIRE_RECORD_HASHES = 4,
    VR_WIRE_RECORD_END = 5,
} VrWireRecordType;

typedef enum {
    VR_WIRE_ENCODING_RAW = 0,
    VR_WIRE_ENCODING_ZSTD = 1, /* DATA only */
} VrWireEncoding;

typedef enum {
    VR_WIRE_KIND_CYCLE = 1,     /* DATA and ZERO records */
    VR_WIRE_KIND_HASH_LIST = 2, /* HASHES records */
} VrWireKind;

typedef enum {
    VR_WIRE_FLAG_FULL = 1 << 0,           /* no base: every allocated block of the disk */
    VR_WIRE_FLAG_RESYNC = 1 << 1,         /* blocks that differ from the replica's hashes */
    VR_WIRE_FLAG_APP_CONSISTENT = 1 << 2, /* cut inside a guest fsfreeze */
} VrWireFlags;

/*
 * What a stream is about: the payload of its BEGIN record. Rules (vr_wire_identity_check):
 * relationship and disk are [a-z0-9]+ and NUL terminated; target_cycle > base_cycle;
 * virtual_size > 0; granularity a power of 2 of at least 512; for a cycle, FULL and RESYNC
 * exclude each other and base_cycle is 0 exactly when one of them is set; for a hash list,
 * base_cycle and flags are 0.
 */
typedef struct {
    VrWireKind kind;
    char relationship[VR_WIRE_RELATIONSHIP_MAX + 1]; /* "r1": [a-z0-9]{1,16} */
    uint8_t domain_uuid[16];
    char disk[VR_WIRE_DISK_MAX + 1]; /* "vda": [a-z0-9]{1,31} */
    uint64_t epoch;
    uint64_t base_cycle;
    uint64_t target_cycle;
    uint64_t virtual_size;
    uint32_t granularity;
    uint32_t flags; /* VrWireFlags */
} VrWireIdentity;

/* Check @identity against the rules above; VR_WIRE_ERROR_INVALID naming the rule. */
bool vr_wire_identity_check(const VrWireIdentity *identity, GError **error);

/* ⌈virtual_size / VR_WIRE_HASH_BLOCK_SIZE⌉: the digests a hash list stream carries. */
uint64_t vr_wire_hash_count(uint64_t virtual_size);

/* What an encoder emitted so far, or what a decoder verified so far. */
typedef struct {
    uint64_t records;         /* DATA, ZERO and HASHES records (BEGIN and END not counted) */
    uint64_t data_bytes;      /* decoded bytes of DATA records */
    uint64_t data_wire_bytes; /* payload bytes of DATA records as sent (compressed or raw) */
    uint64_t zstd_records;    /* DATA records sent as zstd */
    uint64_t zero_bytes;      /* disk bytes covered by ZERO records */
    uint64_t digests;         /* digests in HASHES records */
    uint64_t wire_bytes;      /* every byte of the stream so far, headers included */
} VrWireTotals;

/* ---- encoding --------------------------------------------------------------------- */

typedef struct _VrWireEncoder VrWireEncoder;

/* An encoder for one stream about @identity (checked, and copied). (transfer full) */
VrWireEncoder *vr_wire_encoder_new(const VrWireIdentity *identity, GError **error);

/*
 * Each of these appends exactly one record to @out, or nothing on failure
 * (VR_WIRE_ERROR_INVALID: the call breaks a rule of the format; the encoder stays usable).
 * The order is begin, then records, then end, once.
 */
bool vr_wire_encoder_begin(VrWireEncoder *encoder, GByteArray *out, GError **error);
/*
 * A DATA record of @len bytes (1..VR_WIRE_MAX_DATA) at disk offset @offset, at or after the
 * end of the previous record and within the virtual size; cycle streams only. The payload is
 * zstd (level 1) when that is at least 10% smaller, raw otherwise.
 */
bool vr_wire_encoder_add_data(VrWireEncoder *encoder, uint64_t offset, const void *data, size_t len,
                              GByteArray *out, GError **error);
/* A ZERO record: @len bytes at @offset read as zeroes; cycle streams only. */
bool vr_wire_encoder_add_zero(VrWireEncoder *encoder, uint64_t offset, uint64_t len,
                              GByteArray *out, GError **error);
/*
 * A HASHES record: the @count (1..VR_WIRE_MAX_HASHES) digests of blocks @first_index onward,
 * @digests holding @count * 32 bytes; @first_index is the block after the previous record's
 * last. Hash list streams only.
 */
bool vr_wire_encoder_add_hashes(VrWireEncoder *encoder, uint64_t first_index,
                                const uint8_t *digests, guint count, GByteArray *out,
                                GError **error);
/* The END record; a hash list must have sent every digest (vr_wire_hash_count()). */
bool vr_wire_encoder_end(VrWireEncoder *encoder, GByteArray *out, GError **error);

/* What was emitted so far: compare wire_bytes with data_bytes for the compression ratio. */
void vr_wire_encoder_get_totals(VrWireEncoder *encoder, VrWireTotals *totals);

/* NULL-safe. */
void vr_wire_encoder_free(VrWireEncoder *encoder);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrWireEncoder, vr_wire_encoder_free)

/* ---- decoding --------------------------------------------------------------------- */

typedef struct {
    uint64_t index; /* 0 for BEGIN, then one more per record */
    VrWireRecordType type;
    VrWireEncoding encoding; /* as the record came on the wire */
    uint64_t offset;         /* as in the record header (see docs/protocol.md) */
    uint64_t length;
    /*
     * DATA: the @length decoded bytes; HASHES: @length * 32 bytes of digests; END: the
     * stream digest; NULL for BEGIN and ZERO. Valid during the callback only (transfer none).
     */
    const uint8_t *data;
    size_t data_size;
    /* The stream's identity, from BEGIN on (transfer none). */
    const VrWireIdentity *identity;
    size_t wire_size; /* header and payload as sent */
} VrWireRecord;

/*
 * Called once per record, in stream order, only after the record verified: its checksum, its
 * place in the stream and its bounds; END only after the record count, the decoded bytes and
 * the stream digest matched. Returning false with @error fails the decoder with that error.
 * It must not call back into the decoder.
 */
typedef bool (*VrWireRecordFunc)(const VrWireRecord *record, gpointer user_data, GError **error);

typedef struct _VrWireDecoder VrWireDecoder;

/* A decoder for one stream. (transfer full) */
VrWireDecoder *vr_wire_decoder_new(void);

/*
 * Take the next @len bytes of the stream, cut anywhere, and call @func for each record they
 * complete. It buffers at most one record (its payload as sent, and decoded). On the first
 * fault it fails (VR_WIRE_ERROR_CORRUPT or _PROTOCOL naming the record index) and stays
 * failed: later calls return a copy of that error and deliver nothing. Bytes after END in
 * the same call fail it before END is delivered; in a later call they fail it after.
 */
bool vr_wire_decoder_feed(VrWireDecoder *decoder, const void *data, size_t len,
                          VrWireRecordFunc func, gpointer user_data, GError **error);

/*
 * The sender is done: true only when END was delivered and nothing followed it. The stream
 * is complete and verified exactly then; until then the caller treats what it applied as
 * provisional. A false return fails the decoder for good, as in feed().
 */
bool vr_wire_decoder_finish(VrWireDecoder *decoder, GError **error);

/*
 * Whether END was verified and delivered (and nothing failed since): a stream of unknown
 * length ends there. Changes nothing; finish() still decides.
 */
bool vr_wire_decoder_is_done(VrWireDecoder *decoder);

/* The identity from BEGIN, or NULL before it. (transfer none) */
const VrWireIdentity *vr_wire_decoder_get_identity(VrWireDecoder *decoder);
/* What was verified and delivered so far. */
void vr_wire_decoder_get_totals(VrWireDecoder *decoder, VrWireTotals *totals);

/* NULL-safe. */
void vr_wire_decoder_free(VrWireDecoder *decoder);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrWireDecoder, vr_wire_decoder_free)

/* "BEGIN", "DATA", ...; "unknown" for other values. */
const char *vr_wire_record_type_to_string(VrWireRecordType type);

G_END_DECLS
