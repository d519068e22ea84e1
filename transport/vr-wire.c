/*
 * vr-wire.c: the replication wire format, version 1, as pure functions over buffers
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdarg.h>
#include <string.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <zstd.h>

/* XXH3_state_t and XXH3_INITSTATE: the state lives in our allocation */
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "vr-endian.h"
#include "vr-wire.h"

GQuark
vr_wire_error_quark(void)
{
    return g_quark_from_static_string("vr-wire-error-quark");
}

/* Record header layout; the checksum covers bytes 0..31 and the decoded payload. */
#define VR_WIRE_OFF_MAGIC        0
#define VR_WIRE_OFF_TYPE         4
#define VR_WIRE_OFF_ENCODING     5
#define VR_WIRE_OFF_RESERVED16   6
#define VR_WIRE_OFF_PAYLOAD_SIZE 8
#define VR_WIRE_OFF_OFFSET       12
#define VR_WIRE_OFF_LENGTH       20
#define VR_WIRE_OFF_RESERVED32   28
#define VR_WIRE_OFF_CHECKSUM     32
#define VR_WIRE_CHECKED_SIZE     32

/* Identity (the BEGIN payload) layout. */
#define VR_WIRE_ID_VERSION      0
#define VR_WIRE_ID_KIND         4
#define VR_WIRE_ID_RELATIONSHIP 8
#define VR_WIRE_ID_DOMAIN       24
#define VR_WIRE_ID_DISK         40
#define VR_WIRE_ID_EPOCH        72
#define VR_WIRE_ID_BASE         80
#define VR_WIRE_ID_TARGET       88
#define VR_WIRE_ID_SIZE         96
#define VR_WIRE_ID_GRANULARITY  104
#define VR_WIRE_ID_FLAGS        108
#define VR_WIRE_ID_RESERVED     112

#define VR_WIRE_ZSTD_LEVEL      1

G_STATIC_ASSERT(VR_WIRE_OFF_CHECKSUM + VR_WIRE_DIGEST_SIZE == VR_WIRE_HEADER_SIZE);
G_STATIC_ASSERT(VR_WIRE_ID_RESERVED + 16 == VR_WIRE_IDENTITY_SIZE);
G_STATIC_ASSERT(VR_WIRE_RELATIONSHIP_MAX == VR_WIRE_ID_DOMAIN - VR_WIRE_ID_RELATIONSHIP);
G_STATIC_ASSERT(VR_WIRE_DISK_MAX + 1 == VR_WIRE_ID_EPOCH - VR_WIRE_ID_DISK);

/* ---- helpers ---------------------------------------------------------------------- */

static gnutls_hash_hd_t
vr_wire_sha256_new(void)
{
    gnutls_hash_hd_t hash = NULL;
    /* Only fails for an unknown algorithm; SHA-256 is always there. */
    int rc = gnutls_hash_init(&hash, GNUTLS_DIG_SHA256);

    g_assert(rc == 0);
    return hash;
}

/* A checksum state; like g_malloc(), aborts when memory is exhausted. */
static XXH3_state_t *
vr_wire_xxh3_new(void)
{
    XXH3_state_t *state = g_aligned_alloc(1, sizeof(XXH3_state_t), 64);

    XXH3_INITSTATE(state);
    return state;
}

/*
 * The record checksum (32 bytes, for head + 32): XXH3-128 over head[0..31] and the decoded
 * payload, canonical (big endian), then 16 zero bytes. A fast checksum against corruption;
 * authenticity is TLS's, and the stream digest (SHA-256 over every checksum) binds the
 * records together.
 */
static void
vr_wire_checksum(XXH3_state_t *state, const uint8_t *head, const void *payload, size_t len,
                 uint8_t out[VR_WIRE_DIGEST_SIZE])
{
    XXH128_canonical_t canonical;

    XXH3_128bits_reset(state);
    XXH3_128bits_update(state, head, VR_WIRE_CHECKED_SIZE);
    if (len > 0)
        XXH3_128bits_update(state, payload, len);
    XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(state));
    G_STATIC_ASSERT(sizeof(canonical.digest) == VR_WIRE_DIGEST_SIZE / 2);
    memcpy(out, canonical.digest, sizeof(canonical.digest));
    memset(out + sizeof(canonical.digest), 0, VR_WIRE_DIGEST_SIZE - sizeof(canonical.digest));
}

static void
vr_wire_header_encode(uint8_t head[VR_WIRE_HEADER_SIZE], VrWireRecordType type,
                      VrWireEncoding encoding, uint32_t payload_size, uint64_t offset,
                      uint64_t length)
{
    memset(head, 0, VR_WIRE_HEADER_SIZE);
    vr_put_u32(head + VR_WIRE_OFF_MAGIC, VR_WIRE_MAGIC);
    head[VR_WIRE_OFF_TYPE] = type;
    head[VR_WIRE_OFF_ENCODING] = encoding;
    vr_put_u32(head + VR_WIRE_OFF_PAYLOAD_SIZE, payload_size);
    vr_put_u64(head + VR_WIRE_OFF_OFFSET, offset);
    vr_put_u64(head + VR_WIRE_OFF_LENGTH, length);
}

const char *
vr_wire_record_type_to_string(VrWireRecordType type)
{
    switch (type) {
    case VR_WIRE_RECORD_BEGIN:
        return "BEGIN";
    case VR_WIRE_RECORD_DATA:
        return "DATA";
    case VR_WIRE_RECORD_ZERO:
        return "ZERO";
    case VR_WIRE_RECORD_HASHES:
        return "HASHES";
    case VR_WIRE_RECORD_END:
        return "END";
    }
    return "unknown";
}

static void vr_wire_set_error(GError **error, VrWireErrorCode code, uint64_t index,
                              VrWireRecordType type, const char *format, va_list args)
    G_GNUC_PRINTF(5, 0);

/* "record 3 (DATA): what failed" */
static void
vr_wire_set_error(GError **error, VrWireErrorCode code, uint64_t index, VrWireRecordType type,
                  const char *format, va_list args)
{
    g_autofree char *what = g_strdup_vprintf(format, args);

    g_set_error(error, VR_WIRE_ERROR, code, "record %" G_GUINT64_FORMAT " (%s): %s", index,
                vr_wire_record_type_to_string(type), what);
}

uint64_t
vr_wire_hash_count(uint64_t virtual_size)
{
    return virtual_size / VR_WIRE_HASH_BLOCK_SIZE +
           (virtual_size % VR_WIRE_HASH_BLOCK_SIZE != 0 ? 1 : 0);
}

/* ---- identity --------------------------------------------------------------------- */

static bool
vr_wire_name_valid(const char *name)
{
    if (name[0] == '\0')
        return false;
    for (const char *c = name; *c != '\0'; c++) {
        if (!g_ascii_islower(*c) && !g_ascii_isdigit(*c))
            return false;
    }
    return true;
}

/* The rules an identity obeys, for the encoder's caller and for what a decoder finds. */
static const char *
vr_wire_identity_broken_rule(const VrWireIdentity *id)
{
    const uint32_t known = VR_WIRE_FLAG_FULL | VR_WIRE_FLAG_RESYNC | VR_WIRE_FLAG_APP_CONSISTENT;
    const uint32_t no_base = VR_WIRE_FLAG_FULL | VR_WIRE_FLAG_RESYNC;

    if (id->kind != VR_WIRE_KIND_CYCLE && id->kind != VR_WIRE_KIND_HASH_LIST)
        return "unknown stream kind";
    if (memchr(id->relationship, '\0', sizeof(id->relationship)) == NULL ||
        !vr_wire_name_valid(id->relationship))
        return "relationship id is not [a-z0-9]{1,16}";
    if (memchr(id->disk, '\0', sizeof(id->disk)) == NULL || !vr_wire_name_valid(id->disk))
        return "disk name is not [a-z0-9]{1,31}";
    if (id->virtual_size == 0)
        return "virtual size is 0";
    if (id->granularity < 512 || (id->granularity & (id->granularity - 1)) != 0)
        return "granularity is not a power of 2 of at least 512";
    if (id->target_cycle <= id->base_cycle)
        return "target cycle is not after the base cycle";
    if (id->kind == VR_WIRE_KIND_HASH_LIST) {
        if (id->base_cycle != 0 || id->flags != 0)
            return "a hash list has base cycle 0 and no flags";
        return NULL;
    }
    if ((id->flags & ~known) != 0)
        return "unknown flags";
    if ((id->flags & VR_WIRE_FLAG_FULL) && (id->flags & VR_WIRE_FLAG_RESYNC))
        return "a cycle is full or a resync, not both";
    if (((id->flags & no_base) != 0) != (id->base_cycle == 0))
        return "a full or resync cycle has base cycle 0, and only those";
    return NULL;
}

bool
vr_wire_identity_check(const VrWireIdentity *identity, GError **error)
{
    const char *why = vr_wire_identity_broken_rule(identity);

    if (why == NULL)
        return true;
    g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_INVALID, "stream identity: %s", why);
    return false;
}

static void
vr_wire_identity_encode(const VrWireIdentity *id, uint8_t out[VR_WIRE_IDENTITY_SIZE])
{
    memset(out, 0, VR_WIRE_IDENTITY_SIZE);
    vr_put_u32(out + VR_WIRE_ID_VERSION, VR_WIRE_VERSION);
    vr_put_u32(out + VR_WIRE_ID_KIND, id->kind);
    memcpy(out + VR_WIRE_ID_RELATIONSHIP, id->relationship, strlen(id->relationship));
    memcpy(out + VR_WIRE_ID_DOMAIN, id->domain_uuid, sizeof(id->domain_uuid));
    memcpy(out + VR_WIRE_ID_DISK, id->disk, strlen(id->disk));
    vr_put_u64(out + VR_WIRE_ID_EPOCH, id->epoch);
    vr_put_u64(out + VR_WIRE_ID_BASE, id->base_cycle);
    vr_put_u64(out + VR_WIRE_ID_TARGET, id->target_cycle);
    vr_put_u64(out + VR_WIRE_ID_SIZE, id->virtual_size);
    vr_put_u32(out + VR_WIRE_ID_GRANULARITY, id->granularity);
    vr_put_u32(out + VR_WIRE_ID_FLAGS, id->flags);
}

/*
 * A NUL-padded name field of @field_size bytes into @out (@max + 1 bytes). False with
 * *@code and *@why: too long (PROTOCOL), or bytes after the terminator (CORRUPT).
 */
static bool
vr_wire_name_decode(const uint8_t *field, size_t field_size, char *out, size_t max,
                    VrWireErrorCode *code, const char **why)
{
    const uint8_t *nul = memchr(field, '\0', field_size);
    size_t len = nul != NULL ? (size_t)(nul - field) : field_size;

    if (len > max) {
        *code = VR_WIRE_ERROR_PROTOCOL;
        *why = "is not terminated";
        return false;
    }
    for (size_t i = len; i < field_size; i++) {
        if (field[i] != 0) {
            *code = VR_WIRE_ERROR_CORRUPT;
            *why = "has padding bytes that are not zero";
            return false;
        }
    }
    memset(out, 0, max + 1);
    memcpy(out, field, len);
    return true;
}

/* Decode and check a BEGIN payload; the error says what, the caller says where. */
static bool
vr_wire_identity_decode(const uint8_t in[VR_WIRE_IDENTITY_SIZE], VrWireIdentity *id,
                        VrWireErrorCode *code, char **message)
{
    VrWireIdentity tmp = { 0 };
    const char *why = NULL;
    uint32_t version = vr_get_u32(in + VR_WIRE_ID_VERSION);

    if (version != VR_WIRE_VERSION) {
        *code = VR_WIRE_ERROR_PROTOCOL;
        *message = g_strdup_printf("stream version %u is not supported (version %u)", version,
                                   VR_WIRE_VERSION);
        return false;
    }
    for (int i = VR_WIRE_ID_RESERVED; i < VR_WIRE_IDENTITY_SIZE; i++) {
        if (in[i] != 0) {
            *code = VR_WIRE_ERROR_CORRUPT;
            *message = g_strdup("reserved identity bytes are not zero");
            return false;
        }
    }
    if (!vr_wire_name_decode(in + VR_WIRE_ID_RELATIONSHIP, VR_WIRE_RELATIONSHIP_MAX,
                             tmp.relationship, VR_WIRE_RELATIONSHIP_MAX, code, &why)) {
        *message = g_strdup_printf("relationship id %s", why);
        return false;
    }
    if (!vr_wire_name_decode(in + VR_WIRE_ID_DISK, VR_WIRE_DISK_MAX + 1, tmp.disk, VR_WIRE_DISK_MAX,
                             code, &why)) {
        *message = g_strdup_printf("disk name %s", why);
        return false;
    }
    tmp.kind = vr_get_u32(in + VR_WIRE_ID_KIND);
    memcpy(tmp.domain_uuid, in + VR_WIRE_ID_DOMAIN, sizeof(tmp.domain_uuid));
    tmp.epoch = vr_get_u64(in + VR_WIRE_ID_EPOCH);
    tmp.base_cycle = vr_get_u64(in + VR_WIRE_ID_BASE);
    tmp.target_cycle = vr_get_u64(in + VR_WIRE_ID_TARGET);
    tmp.virtual_size = vr_get_u64(in + VR_WIRE_ID_SIZE);
    tmp.granularity = vr_get_u32(in + VR_WIRE_ID_GRANULARITY);
    tmp.flags = vr_get_u32(in + VR_WIRE_ID_FLAGS);
    why = vr_wire_identity_broken_rule(&tmp);
    if (why != NULL) {
        *code = VR_WIRE_ERROR_PROTOCOL;
        *message = g_strdup_printf("stream identity: %s", why);
        return false;
    }
    *id = tmp;
    return true;
}

/* ---- encoder ---------------------------------------------------------------------- */

typedef enum {
    VR_WIRE_ENCODER_NEW,
    VR_WIRE_ENCODER_RECORDS,
    VR_WIRE_ENCODER_ENDED,
} VrWireEncoderState;

struct _VrWireEncoder {
    VrWireIdentity identity;
    VrWireEncoderState state;
    uint64_t next;       /* cycle: end of the previous record; hash list: next block index */
    uint64_t hash_count; /* hash list: digests the stream must carry */
    VrWireTotals totals;
    XXH3_state_t *record_hash;
    gnutls_hash_hd_t chain; /* over the checksum of every record before END */
    ZSTD_CCtx *cctx;        /* created with the first DATA record */
    uint8_t *zbuf;          /* ZSTD_compressBound(VR_WIRE_MAX_DATA) bytes, likewise */
};

static bool vr_wire_invalid(VrWireEncoder *encoder, GError **error, VrWireRecordType type,
                            const char *format, ...) G_GNUC_PRINTF(4, 5);

static bool
vr_wire_invalid(VrWireEncoder *encoder, GError **error, VrWireRecordType type, const char *format,
                ...)
{
    uint64_t index = encoder->state == VR_WIRE_ENCODER_NEW ? 0 : encoder->totals.records + 1;
    va_list args;

    va_start(args, format);
    vr_wire_set_error(error, VR_WIRE_ERROR_INVALID, index, type, format, args);
    va_end(args);
    return false;
}

VrWireEncoder *
vr_wire_encoder_new(const VrWireIdentity *identity, GError **error)
{
    VrWireEncoder *encoder;

    if (!vr_wire_identity_check(identity, error))
        return NULL;
    encoder = g_new0(VrWireEncoder, 1);
    encoder->identity = *identity;
    encoder->hash_count = vr_wire_hash_count(identity->virtual_size);
    encoder->record_hash = vr_wire_xxh3_new();
    encoder->chain = vr_wire_sha256_new();
    return encoder;
}

/* Append one record: header with its checksum over @decoded, then @payload as sent. */
static void
vr_wire_encoder_emit(VrWireEncoder *encoder, GByteArray *out, VrWireRecordType type,
                     VrWireEncoding encoding, uint64_t offset, uint64_t length, const void *payload,
                     size_t payload_size, const void *decoded, size_t decoded_size)
{
    uint8_t head[VR_WIRE_HEADER_SIZE];

    vr_wire_header_encode(head, type, encoding, payload_size, offset, length);
    vr_wire_checksum(encoder->record_hash, head, decoded, decoded_size,
                     head + VR_WIRE_OFF_CHECKSUM);
    if (type != VR_WIRE_RECORD_END)
        gnutls_hash(encoder->chain, head + VR_WIRE_OFF_CHECKSUM, VR_WIRE_DIGEST_SIZE);
    g_byte_array_append(out, head, sizeof(head));
    if (payload_size > 0)
        g_byte_array_append(out, payload, payload_size);
    encoder->totals.wire_bytes += sizeof(head) + payload_size;
}

static bool
vr_wire_encoder_check_state(VrWireEncoder *encoder, VrWireRecordType type, GError **error)
{
    if (encoder->state == VR_WIRE_ENCODER_NEW)
        return vr_wire_invalid(encoder, error, type, "the stream has not begun");
    if (encoder->state == VR_WIRE_ENCODER_ENDED)
        return vr_wire_invalid(encoder, error, type, "the stream has ended");
    return true;
}

bool
vr_wire_encoder_begin(VrWireEncoder *encoder, GByteArray *out, GError **error)
{
    uint8_t identity[VR_WIRE_IDENTITY_SIZE];

    if (encoder->state != VR_WIRE_ENCODER_NEW)
        return vr_wire_invalid(encoder, error, VR_WIRE_RECORD_BEGIN, "the stream has begun");
    vr_wire_identity_encode(&encoder->identity, identity);
    vr_wire_encoder_emit(encoder, out, VR_WIRE_RECORD_BEGIN, VR_WIRE_ENCODING_RAW, 0,
                         sizeof(identity), identity, sizeof(identity), identity, sizeof(identity));
    encoder->state = VR_WIRE_ENCODER_RECORDS;
    return true;
}

/* A DATA or ZERO record of @len bytes at @offset fits the stream. */
static bool
vr_wire_encoder_check_range(VrWireEncoder *encoder, VrWireRecordType type, uint64_t offset,
                            uint64_t len, GError **error)
{
    uint64_t size = encoder->identity.virtual_size;

    if (!vr_wire_encoder_check_state(encoder, type, error))
        return false;
    if (encoder->identity.kind != VR_WIRE_KIND_CYCLE)
        return vr_wire_invalid(encoder, error, type, "not allowed in a hash list stream");
    if (len == 0)
        return vr_wire_invalid(encoder, error, type, "length is 0");
    if (offset < encoder->next) {
        return vr_wire_invalid(encoder, error, type,
                               "offset %" G_GUINT64_FORMAT
                               " overlaps or precedes the previous record (ending at "
                               "%" G_GUINT64_FORMAT ")",
                               offset, encoder->next);
    }
    if (offset > size || len > size - offset) {
        return vr_wire_invalid(encoder, error, type,
                               "range %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                               " is beyond the virtual size %" G_GUINT64_FORMAT,
                               offset, len, size);
    }
    return true;
}

bool
vr_wire_encoder_add_data(VrWireEncoder *encoder, uint64_t offset, const void *data, size_t len,
                         GByteArray *out, GError **error)
{
    VrWireEncoding encoding = VR_WIRE_ENCODING_RAW;
    const void *payload = data;
    size_t payload_size = len;

    if (!vr_wire_encoder_check_range(encoder, VR_WIRE_RECORD_DATA, offset, len, error))
        return false;
    if (len > VR_WIRE_MAX_DATA) {
        return vr_wire_invalid(encoder, error, VR_WIRE_RECORD_DATA,
                               "length %zu is over the limit of %d bytes", len, VR_WIRE_MAX_DATA);
    }
    if (encoder->cctx == NULL) {
        /* Without a context (out of memory), the data goes raw. */
        encoder->cctx = ZSTD_createCCtx();
        encoder->zbuf = g_malloc(ZSTD_compressBound(VR_WIRE_MAX_DATA));
    }
    if (encoder->cctx != NULL) {
        size_t zsize =
            ZSTD_compressCCtx(encoder->cctx, encoder->zbuf, ZSTD_compressBound(VR_WIRE_MAX_DATA),
                              data, len, VR_WIRE_ZSTD_LEVEL);

        /* Worth it only when at least 10% smaller: the replica pays for decompression. */
        if (!ZSTD_isError(zsize) && zsize * 10 <= len * 9) {
            encoding = VR_WIRE_ENCODING_ZSTD;
            payload = encoder->zbuf;
            payload_size = zsize;
        }
    }
    vr_wire_encoder_emit(encoder, out, VR_WIRE_RECORD_DATA, encoding, offset, len, payload,
                         payload_size, data, len);
    encoder->next = offset + len;
    encoder->totals.records++;
    encoder->totals.data_bytes += len;
    encoder->totals.data_wire_bytes += payload_size;
    if (encoding == VR_WIRE_ENCODING_ZSTD)
        encoder->totals.zstd_records++;
    return true;
}

bool
vr_wire_encoder_add_zero(VrWireEncoder *encoder, uint64_t offset, uint64_t len, GByteArray *out,
                         GError **error)
{
    if (!vr_wire_encoder_check_range(encoder, VR_WIRE_RECORD_ZERO, offset, len, error))
        return false;
    vr_wire_encoder_emit(encoder, out, VR_WIRE_RECORD_ZERO, VR_WIRE_ENCODING_RAW, offset, len, NULL,
                         0, NULL, 0);
    encoder->next = offset + len;
    encoder->totals.records++;
    encoder->totals.zero_bytes += len;
    return true;
}

bool
vr_wire_encoder_add_hashes(VrWireEncoder *encoder, uint64_t first_index, const uint8_t *digests,
                           guint count, GByteArray *out, GError **error)
{
    const VrWireRecordType type = VR_WIRE_RECORD_HASHES;
    size_t size = (size_t)count * VR_WIRE_DIGEST_SIZE;

    if (!vr_wire_encoder_check_state(encoder, type, error))
        return false;
    if (encoder->identity.kind != VR_WIRE_KIND_HASH_LIST)
        return vr_wire_invalid(encoder, error, type, "not allowed in a cycle stream");
    if (count == 0 || count > VR_WIRE_MAX_HASHES) {
        return vr_wire_invalid(encoder, error, type, "%u digests is not 1..%d", count,
                               VR_WIRE_MAX_HASHES);
    }
    if (first_index != encoder->next) {
        return vr_wire_invalid(encoder, error, type,
                               "starts at block %" G_GUINT64_FORMAT ", not %" G_GUINT64_FORMAT,
                               first_index, encoder->next);
    }
    if (count > encoder->hash_count - first_index) {
        return vr_wire_invalid(encoder, error, type,
                               "blocks %" G_GUINT64_FORMAT "+%u are beyond the %" G_GUINT64_FORMAT
                               " blocks of the disk",
                               first_index, count, encoder->hash_count);
    }
    vr_wire_encoder_emit(encoder, out, type, VR_WIRE_ENCODING_RAW, first_index, count, digests,
                         size, digests, size);
    encoder->next = first_index + count;
    encoder->totals.records++;
    encoder->totals.digests += count;
    return true;
}

bool
vr_wire_encoder_end(VrWireEncoder *encoder, GByteArray *out, GError **error)
{
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
    uint64_t amount;

    if (!vr_wire_encoder_check_state(encoder, VR_WIRE_RECORD_END, error))
        return false;
    if (encoder->identity.kind == VR_WIRE_KIND_HASH_LIST &&
        encoder->totals.digests != encoder->hash_count) {
        return vr_wire_invalid(encoder, error, VR_WIRE_RECORD_END,
                               "%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT " digests were sent",
                               encoder->totals.digests, encoder->hash_count);
    }
    amount = encoder->identity.kind == VR_WIRE_KIND_CYCLE ? encoder->totals.data_bytes
                                                          : encoder->totals.digests;
    gnutls_hash_output(encoder->chain, digest);
    vr_wire_encoder_emit(encoder, out, VR_WIRE_RECORD_END, VR_WIRE_ENCODING_RAW,
                         encoder->totals.records, amount, digest, sizeof(digest), digest,
                         sizeof(digest));
    encoder->state = VR_WIRE_ENCODER_ENDED;
    return true;
}

void
vr_wire_encoder_get_totals(VrWireEncoder *encoder, VrWireTotals *totals)
{
    *totals = encoder->totals;
}

void
vr_wire_encoder_free(VrWireEncoder *encoder)
{
    if (encoder == NULL)
        return;
    g_aligned_free(encoder->record_hash);
    gnutls_hash_deinit(encoder->chain, NULL);
    ZSTD_freeCCtx(encoder->cctx);
    g_free(encoder->zbuf);
    g_free(encoder);
}

/* ---- decoder ---------------------------------------------------------------------- */

typedef enum {
    VR_WIRE_DECODER_HEADER,  /* collecting a record header */
    VR_WIRE_DECODER_PAYLOAD, /* collecting its payload */
    VR_WIRE_DECODER_DONE,    /* END verified and delivered */
    VR_WIRE_DECODER_FAILED,
} VrWireDecoderState;

struct _VrWireDecoder {
    VrWireDecoderState state;
    uint64_t index; /* of the record being read */

    uint8_t head[VR_WIRE_HEADER_SIZE];
    size_t head_fill;
    VrWireRecordType type;
    VrWireEncoding encoding;
    uint32_t payload_size;
    uint64_t offset;
    uint64_t length;

    uint8_t *payload; /* as sent: at most ZSTD_compressBound(VR_WIRE_MAX_DATA) bytes */
    size_t payload_alloc;
    size_t payload_fill;
    uint8_t *decoded; /* zstd: the decoded DATA, at most VR_WIRE_MAX_DATA bytes */
    size_t decoded_alloc;
    ZSTD_DCtx *dctx;

    XXH3_state_t *record_hash;
    gnutls_hash_hd_t chain;

    VrWireIdentity identity;
    bool have_identity;
    uint64_t next;       /* cycle: end of the previous record; hash list: next block index */
    uint64_t hash_count; /* hash list: digests the stream must carry */
    VrWireTotals totals;

    GError *failure; /* what failed it, returned again to every later call */
};

VrWireDecoder *
vr_wire_decoder_new(void)
{
    VrWireDecoder *decoder = g_new0(VrWireDecoder, 1);

    decoder->record_hash = vr_wire_xxh3_new();
    decoder->chain = vr_wire_sha256_new();
    return decoder;
}

/* Fail the decoder for good with @error set from @owned. Returns false. */
static bool
vr_wire_decoder_fail_with(VrWireDecoder *decoder, GError *owned, GError **error)
{
    decoder->state = VR_WIRE_DECODER_FAILED;
    decoder->failure = owned;
    /* Nothing more will be decoded: give the buffers back now. */
    g_clear_pointer(&decoder->payload, g_free);
    g_clear_pointer(&decoder->decoded, g_free);
    decoder->payload_alloc = decoder->decoded_alloc = 0;
    g_clear_pointer(&decoder->dctx, ZSTD_freeDCtx);
    if (error != NULL)
        *error = g_error_copy(owned);
    return false;
}

static bool vr_wire_decoder_fail(VrWireDecoder *decoder, GError **error, VrWireErrorCode code,
                                 const char *format, ...) G_GNUC_PRINTF(4, 5);

static bool
vr_wire_decoder_fail(VrWireDecoder *decoder, GError **error, VrWireErrorCode code,
                     const char *format, ...)
{
    GError *owned = NULL;
    va_list args;

    va_start(args, format);
    vr_wire_set_error(&owned, code, decoder->index, decoder->type, format, args);
    va_end(args);
    return vr_wire_decoder_fail_with(decoder, owned, error);
}

static uint8_t *
vr_wire_buffer_reserve(uint8_t **buf, size_t *alloc, size_t size)
{
    if (*alloc < size) {
        g_free(*buf);
        *buf = g_malloc(size);
        *alloc = size;
    }
    return *buf;
}

/*
 * The header is in: check what framing needs before any payload is buffered (type,
 * encoding, reserved bytes, payload size for the type). The rest waits for the checksum.
 */
static bool
vr_wire_decoder_parse_header(VrWireDecoder *decoder, GError **error)
{
    const uint8_t *head = decoder->head;
    uint32_t magic = vr_get_u32(head + VR_WIRE_OFF_MAGIC);
    uint32_t size;
    uint64_t length;

    decoder->type = head[VR_WIRE_OFF_TYPE];
    decoder->encoding = head[VR_WIRE_OFF_ENCODING];
    decoder->payload_size = size = vr_get_u32(head + VR_WIRE_OFF_PAYLOAD_SIZE);
    decoder->offset = vr_get_u64(head + VR_WIRE_OFF_OFFSET);
    decoder->length = length = vr_get_u64(head + VR_WIRE_OFF_LENGTH);

    if (magic != VR_WIRE_MAGIC) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                    "bad magic 0x%08x, not a wire record", magic);
    }
    if (head[VR_WIRE_OFF_RESERVED16] != 0 || head[VR_WIRE_OFF_RESERVED16 + 1] != 0 ||
        vr_get_u32(head + VR_WIRE_OFF_RESERVED32) != 0) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                    "reserved header bytes are not zero");
    }
    if (decoder->type < VR_WIRE_RECORD_BEGIN || decoder->type > VR_WIRE_RECORD_END) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                    "unknown record type %u", head[VR_WIRE_OFF_TYPE]);
    }
    if (decoder->encoding != VR_WIRE_ENCODING_RAW && decoder->encoding != VR_WIRE_ENCODING_ZSTD) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL, "unknown encoding %u",
                                    head[VR_WIRE_OFF_ENCODING]);
    }
    if (decoder->encoding == VR_WIRE_ENCODING_ZSTD && decoder->type != VR_WIRE_RECORD_DATA) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                    "only DATA records may be compressed");
    }
    switch (decoder->type) {
    case VR_WIRE_RECORD_BEGIN:
        if (size != VR_WIRE_IDENTITY_SIZE) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "payload of %u bytes, not %d", size, VR_WIRE_IDENTITY_SIZE);
        }
        break;
    case VR_WIRE_RECORD_DATA:
        if (length == 0 || length > VR_WIRE_MAX_DATA) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "length %" G_GUINT64_FORMAT " is not 1..%d", length,
                                        VR_WIRE_MAX_DATA);
        }
        if (decoder->encoding == VR_WIRE_ENCODING_RAW && size != length) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "raw payload of %u bytes for length %" G_GUINT64_FORMAT,
                                        size, length);
        }
        if (decoder->encoding == VR_WIRE_ENCODING_ZSTD &&
            (size == 0 || size > ZSTD_compressBound(length))) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "zstd payload of %u bytes is not 1..%zu for length "
                                        "%" G_GUINT64_FORMAT,
                                        size, ZSTD_compressBound(length), length);
        }
        break;
    case VR_WIRE_RECORD_ZERO:
        if (size != 0) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "payload of %u bytes, not 0", size);
        }
        break;
    case VR_WIRE_RECORD_HASHES:
        if (length == 0 || length > VR_WIRE_MAX_HASHES) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "%" G_GUINT64_FORMAT " digests is not 1..%d", length,
                                        VR_WIRE_MAX_HASHES);
        }
        if (size != length * VR_WIRE_DIGEST_SIZE) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "payload of %u bytes for %" G_GUINT64_FORMAT " digests",
                                        size, length);
        }
        break;
    case VR_WIRE_RECORD_END:
        if (size != VR_WIRE_DIGEST_SIZE) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "payload of %u bytes, not %d", size, VR_WIRE_DIGEST_SIZE);
        }
        break;
    }
    if (size > 0)
        vr_wire_buffer_reserve(&decoder->payload, &decoder->payload_alloc, size);
    decoder->payload_fill = 0;
    return true;
}

/* A zstd DATA payload into decoder->decoded: one frame declaring exactly length bytes. */
static bool
vr_wire_decoder_inflate(VrWireDecoder *decoder, GError **error)
{
    unsigned long long content = ZSTD_getFrameContentSize(decoder->payload, decoder->payload_size);
    size_t frame_size;
    size_t n;

    if (content == ZSTD_CONTENTSIZE_ERROR) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                    "payload is not a zstd frame");
    }
    if (content == ZSTD_CONTENTSIZE_UNKNOWN) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                    "zstd frame does not declare its content size");
    }
    if (content != decoder->length) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                    "zstd frame holds %llu bytes, not %" G_GUINT64_FORMAT, content,
                                    decoder->length);
    }
    frame_size = ZSTD_findFrameCompressedSize(decoder->payload, decoder->payload_size);
    if (ZSTD_isError(frame_size) || frame_size != decoder->payload_size) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                    "zstd payload is not exactly one frame");
    }
    if (decoder->dctx == NULL) {
        decoder->dctx = ZSTD_createDCtx();
        if (decoder->dctx == NULL) {
            return vr_wire_decoder_fail_with(
                decoder,
                g_error_new_literal(G_FILE_ERROR, G_FILE_ERROR_NOMEM,
                                    "cannot allocate a zstd decompression context"),
                error);
        }
    }
    vr_wire_buffer_reserve(&decoder->decoded, &decoder->decoded_alloc, decoder->length);
    /* The output buffer is exactly length bytes: a frame cannot write more. */
    n = ZSTD_decompressDCtx(decoder->dctx, decoder->decoded, decoder->length, decoder->payload,
                            decoder->payload_size);
    if (ZSTD_isError(n)) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT, "bad zstd frame: %s",
                                    ZSTD_getErrorName(n));
    }
    if (n != decoder->length) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                    "zstd frame decoded to %zu bytes, not %" G_GUINT64_FORMAT, n,
                                    decoder->length);
    }
    return true;
}

/* A DATA or ZERO record fits the stream: order and bounds. */
static bool
vr_wire_decoder_check_range(VrWireDecoder *decoder, GError **error)
{
    uint64_t size = decoder->identity.virtual_size;

    if (decoder->identity.kind != VR_WIRE_KIND_CYCLE) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                    "not allowed in a hash list stream");
    }
    if (decoder->length == 0)
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL, "length is 0");
    if (decoder->offset < decoder->next) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                    "offset %" G_GUINT64_FORMAT
                                    " overlaps or precedes the previous record (ending at "
                                    "%" G_GUINT64_FORMAT ")",
                                    decoder->offset, decoder->next);
    }
    if (decoder->offset > size || decoder->length > size - decoder->offset) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                    "range %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                                    " is beyond the virtual size %" G_GUINT64_FORMAT,
                                    decoder->offset, decoder->length, size);
    }
    return true;
}

/* The record's place in the stream, once its checksum verified. */
static bool
vr_wire_decoder_check_record(VrWireDecoder *decoder, const uint8_t *decoded, bool trailing,
                             GError **error)
{
    VrWireTotals *totals = &decoder->totals;

    if (decoder->index == 0 && decoder->type != VR_WIRE_RECORD_BEGIN) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                    "a stream starts with BEGIN");
    }
    switch (decoder->type) {
    case VR_WIRE_RECORD_BEGIN: {
        g_autofree char *message = NULL;
        VrWireErrorCode code = VR_WIRE_ERROR_PROTOCOL;

        if (decoder->index != 0) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "BEGIN after the start of the stream");
        }
        if (decoder->offset != 0 || decoder->length != VR_WIRE_IDENTITY_SIZE) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "offset and length are not 0 and %d",
                                        VR_WIRE_IDENTITY_SIZE);
        }
        if (!vr_wire_identity_decode(decoded, &decoder->identity, &code, &message))
            return vr_wire_decoder_fail(decoder, error, code, "%s", message);
        decoder->have_identity = true;
        decoder->hash_count = vr_wire_hash_count(decoder->identity.virtual_size);
        break;
    }
    case VR_WIRE_RECORD_DATA:
    case VR_WIRE_RECORD_ZERO:
        if (!vr_wire_decoder_check_range(decoder, error))
            return false;
        break;
    case VR_WIRE_RECORD_HASHES:
        if (decoder->identity.kind != VR_WIRE_KIND_HASH_LIST) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "not allowed in a cycle stream");
        }
        if (decoder->offset != decoder->next) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "starts at block %" G_GUINT64_FORMAT
                                        ", not %" G_GUINT64_FORMAT,
                                        decoder->offset, decoder->next);
        }
        if (decoder->length > decoder->hash_count - decoder->offset) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "blocks %" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT
                                        " are beyond the %" G_GUINT64_FORMAT " blocks of the disk",
                                        decoder->offset, decoder->length, decoder->hash_count);
        }
        break;
    case VR_WIRE_RECORD_END: {
        bool cycle = decoder->identity.kind == VR_WIRE_KIND_CYCLE;
        uint64_t amount = cycle ? totals->data_bytes : totals->digests;
        uint8_t digest[VR_WIRE_DIGEST_SIZE];

        if (decoder->offset != totals->records || decoder->length != amount) {
            return vr_wire_decoder_fail(
                decoder, error, VR_WIRE_ERROR_PROTOCOL,
                "END counts %" G_GUINT64_FORMAT " records and %" G_GUINT64_FORMAT
                " %s, the stream has %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT,
                decoder->offset, decoder->length, cycle ? "data bytes" : "digests", totals->records,
                amount);
        }
        if (!cycle && totals->digests != decoder->hash_count) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "%" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                                        " digests were sent",
                                        totals->digests, decoder->hash_count);
        }
        gnutls_hash_output(decoder->chain, digest);
        if (memcmp(digest, decoded, sizeof(digest)) != 0) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                        "stream digest does not match: records are missing, "
                                        "repeated, reordered or from another stream");
        }
        if (trailing) {
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "bytes after the END record");
        }
        break;
    }
    }
    return true;
}

/* The payload is in: decode, verify, check, account for it, and deliver it. */
static bool
vr_wire_decoder_complete(VrWireDecoder *decoder, bool trailing, VrWireRecordFunc func,
                         gpointer user_data, GError **error)
{
    const uint8_t *decoded = decoder->payload;
    size_t decoded_size = decoder->payload_size;
    uint8_t checksum[VR_WIRE_DIGEST_SIZE];
    g_autoptr(GError) local = NULL;
    VrWireRecord record;

    if (decoder->encoding == VR_WIRE_ENCODING_ZSTD) {
        if (!vr_wire_decoder_inflate(decoder, error))
            return false;
        decoded = decoder->decoded;
        decoded_size = decoder->length;
    }
    vr_wire_checksum(decoder->record_hash, decoder->head, decoded, decoded_size, checksum);
    if (memcmp(checksum, decoder->head + VR_WIRE_OFF_CHECKSUM, sizeof(checksum)) != 0) {
        return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_CORRUPT,
                                    "checksum does not match");
    }
    if (!vr_wire_decoder_check_record(decoder, decoded, trailing, error))
        return false;

    decoder->totals.wire_bytes += VR_WIRE_HEADER_SIZE + decoder->payload_size;
    switch (decoder->type) {
    case VR_WIRE_RECORD_BEGIN:
        break;
    case VR_WIRE_RECORD_DATA:
        decoder->totals.data_bytes += decoder->length;
        decoder->totals.data_wire_bytes += decoder->payload_size;
        if (decoder->encoding == VR_WIRE_ENCODING_ZSTD)
            decoder->totals.zstd_records++;
        break;
    case VR_WIRE_RECORD_ZERO:
        decoder->totals.zero_bytes += decoder->length;
        break;
    case VR_WIRE_RECORD_HASHES:
        decoder->totals.digests += decoder->length;
        break;
    case VR_WIRE_RECORD_END:
        decoder->state = VR_WIRE_DECODER_DONE;
        break;
    }
    if (decoder->type == VR_WIRE_RECORD_DATA || decoder->type == VR_WIRE_RECORD_ZERO ||
        decoder->type == VR_WIRE_RECORD_HASHES) {
        decoder->totals.records++;
        decoder->next = decoder->offset + decoder->length;
    }
    if (decoder->type != VR_WIRE_RECORD_END)
        gnutls_hash(decoder->chain, checksum, sizeof(checksum));

    record = (VrWireRecord){
        .index = decoder->index,
        .type = decoder->type,
        .encoding = decoder->encoding,
        .offset = decoder->offset,
        .length = decoder->length,
        .data = decoder->type == VR_WIRE_RECORD_BEGIN || decoder->type == VR_WIRE_RECORD_ZERO
                    ? NULL
                    : decoded,
        .data_size = decoder->type == VR_WIRE_RECORD_BEGIN ? 0 : decoded_size,
        .identity = &decoder->identity,
        .wire_size = VR_WIRE_HEADER_SIZE + decoder->payload_size,
    };
    if (!func(&record, user_data, &local)) {
        if (local == NULL) {
            g_set_error(&local, VR_WIRE_ERROR, VR_WIRE_ERROR_INVALID,
                        "record %" G_GUINT64_FORMAT " (%s): the record callback failed "
                        "without an error",
                        decoder->index, vr_wire_record_type_to_string(decoder->type));
        }
        return vr_wire_decoder_fail_with(decoder, g_steal_pointer(&local), error);
    }
    decoder->index++;
    decoder->head_fill = 0;
    if (decoder->state != VR_WIRE_DECODER_DONE)
        decoder->state = VR_WIRE_DECODER_HEADER;
    return true;
}

bool
vr_wire_decoder_feed(VrWireDecoder *decoder, const void *data, size_t len, VrWireRecordFunc func,
                     gpointer user_data, GError **error)
{
    const uint8_t *p = data;
    size_t left = len;

    if (decoder->state == VR_WIRE_DECODER_FAILED) {
        g_propagate_error(error, g_error_copy(decoder->failure));
        return false;
    }
    while (left > 0) {
        size_t n;

        if (decoder->state == VR_WIRE_DECODER_DONE) {
            decoder->type = VR_WIRE_RECORD_END;
            decoder->index--;
            return vr_wire_decoder_fail(decoder, error, VR_WIRE_ERROR_PROTOCOL,
                                        "bytes after the END record");
        }
        if (decoder->state == VR_WIRE_DECODER_HEADER) {
            n = MIN(left, sizeof(decoder->head) - decoder->head_fill);
            memcpy(decoder->head + decoder->head_fill, p, n);
            decoder->head_fill += n;
            p += n;
            left -= n;
            if (decoder->head_fill < sizeof(decoder->head))
                break;
            if (!vr_wire_decoder_parse_header(decoder, error))
                return false;
            decoder->state = VR_WIRE_DECODER_PAYLOAD;
        }
        /* Here the state is PAYLOAD; a ZERO record completes with no payload at all. */
        n = MIN(left, decoder->payload_size - decoder->payload_fill);
        if (n > 0) {
            memcpy(decoder->payload + decoder->payload_fill, p, n);
            decoder->payload_fill += n;
            p += n;
            left -= n;
        }
        if (decoder->payload_fill < decoder->payload_size)
            break;
        if (!vr_wire_decoder_complete(decoder, left > 0, func, user_data, error))
            return false;
    }
    return true;
}

bool
vr_wire_decoder_is_done(VrWireDecoder *decoder)
{
    return decoder->state == VR_WIRE_DECODER_DONE;
}

bool
vr_wire_decoder_finish(VrWireDecoder *decoder, GError **error)
{
    GError *owned = NULL;

    switch (decoder->state) {
    case VR_WIRE_DECODER_DONE:
        return true;
    case VR_WIRE_DECODER_FAILED:
        g_propagate_error(error, g_error_copy(decoder->failure));
        return false;
    case VR_WIRE_DECODER_HEADER:
        if (decoder->index == 0 && decoder->head_fill == 0) {
            owned =
                g_error_new_literal(VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL, "the stream is empty");
        } else if (decoder->head_fill == 0) {
            owned = g_error_new(VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                                "the stream ends after %" G_GUINT64_FORMAT " records, without END",
                                decoder->index);
        } else {
            owned = g_error_new(VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                                "record %" G_GUINT64_FORMAT ": the stream ends inside its header",
                                decoder->index);
        }
        break;
    case VR_WIRE_DECODER_PAYLOAD:
        owned = g_error_new(VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                            "record %" G_GUINT64_FORMAT " (%s): the stream ends inside its payload",
                            decoder->index, vr_wire_record_type_to_string(decoder->type));
        break;
    }
    /* The sender said it is done: nothing more is accepted. */
    return vr_wire_decoder_fail_with(decoder, owned, error);
}

const VrWireIdentity *
vr_wire_decoder_get_identity(VrWireDecoder *decoder)
{
    return decoder->have_identity ? &decoder->identity : NULL;
}

void
vr_wire_decoder_get_totals(VrWireDecoder *decoder, VrWireTotals *totals)
{
    *totals = decoder->totals;
}

void
vr_wire_decoder_free(VrWireDecoder *decoder)
{
    if (decoder == NULL)
        return;
    g_aligned_free(decoder->record_hash);
    gnutls_hash_deinit(decoder->chain, NULL);
    ZSTD_freeDCtx(decoder->dctx);
    g_free(decoder->payload);
    g_free(decoder->decoded);
    g_clear_error(&decoder->failure);
    g_free(decoder);
}
