/*
 * vr-hashlist.h: the block hashes of a disk, for resynchronization without a full copy
 *
 * When change tracking is lost, the replica sends the SHA-256 of every 64 KiB block of its
 * latest recovery point; the primary compares them with its point-in-time view and spools
 * only the blocks that differ. A list is a file read and written in block order, so memory
 * stays bounded whatever the disk size (16 Mi entries per TiB). Format (little endian):
 *
 *   header (64 bytes)  magic "VRHASH1\n", version, header size, virtual size, block size,
 *                      algorithm (1: SHA-256), entry count; the rest zero
 *   entries            count x 32 bytes, block 0 first; the last block may be short and is
 *                      hashed over its own length
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

G_BEGIN_DECLS

#define VR_HASHLIST_ERROR (vr_hashlist_error_quark())
GQuark vr_hashlist_error_quark(void);

typedef enum {
    VR_HASHLIST_ERROR_IO,
    VR_HASHLIST_ERROR_CORRUPT,
    VR_HASHLIST_ERROR_INVALID,
} VrHashlistErrorCode;

#define VR_HASHLIST_BLOCK_SIZE  65536
#define VR_HASHLIST_DIGEST_SIZE 32

/* The SHA-256 of @len bytes. */
void vr_hashlist_digest(const void *data, size_t len, uint8_t out[VR_HASHLIST_DIGEST_SIZE]);

typedef struct _VrHashlistWriter VrHashlistWriter;

/* Create @path (it must not exist) for a disk of @virtual_size bytes. (transfer full) */
VrHashlistWriter *vr_hashlist_writer_new(const char *path, uint64_t virtual_size, GError **error);
/* Append the digest of the next block. */
bool vr_hashlist_writer_add(VrHashlistWriter *writer, const uint8_t digest[32], GError **error);
/* Check that every block has its entry, fdatasync, close. */
bool vr_hashlist_writer_finish(VrHashlistWriter *writer, GError **error);
/* Free; an unfinished file is removed. NULL-safe. */
void vr_hashlist_writer_free(VrHashlistWriter *writer);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrHashlistWriter, vr_hashlist_writer_free)

typedef struct _VrHashlistReader VrHashlistReader;

/* Open @path and check its header and its length against the entry count. (transfer full) */
VrHashlistReader *vr_hashlist_reader_open(const char *path, GError **error);
uint64_t vr_hashlist_reader_get_virtual_size(VrHashlistReader *reader);
uint64_t vr_hashlist_reader_get_count(VrHashlistReader *reader);
/* The digest of block @index; indexes must not go backwards (the file is read forward). */
bool vr_hashlist_reader_get(VrHashlistReader *reader, uint64_t index, uint8_t out[32],
                            GError **error);
void vr_hashlist_reader_free(VrHashlistReader *reader);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrHashlistReader, vr_hashlist_reader_free)

G_END_DECLS
