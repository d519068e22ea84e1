/*
 * vr-export.h: the initial copy exported to a directory, for offline transport
 *
 * Hyper-V's "send initial copy using external media": the first cycle of a relationship
 * enabled with `initial = "export:PATH"` is written to PATH instead of being uploaded, and
 * the replica imports it (vr-replica-import.h). An export is one directory holding
 *
 *   manifest.json      what the export is (below); written last: its presence means complete
 *   <target>.stream    one wire stream per disk (vr-wire.h), exactly as it would be uploaded
 *
 * and nothing else of ours. The manifest (format "virt-replica-export", version 1):
 *
 *   {"format": "virt-replica-export", "version": 1, "relationship": "4f1c2a9b0e3d",
 *    "epoch": 1, "cycle": 1, "base": 0, "flags": 1, "created": 1764000000,
 *    "primary": "primary.example",
 *    "domain": {"name": "vm1", "uuid": "...", "xml": "<domain ...>...</domain>"},
 *    "disks": [{"target": "vda", "file": "vda.stream", "size": 1234,
 *               "digest": "<64 hex digits: the stream digest of its END record>"}]}
 *
 * "primary" is the certificate identity of the primary that made the export (what the
 * replica's authorization table would see if it had connected). Every file is written as
 * NAME.part, fdatasync'ed and renamed, the directory fsync'ed; the manifest goes last, so a
 * crash never leaves something that looks complete. docs/primary.md ("Initial copy on
 * external media") has the rules.
 *
 * The reader (vr_export_manifest_read()) is the replica's: it trusts nothing, checks every
 * member (names through vr_authz_check_name(), the wire's limits) and opens nothing but
 * the manifest; the streams are verified by the importer.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "vr-wire.h"

G_BEGIN_DECLS

#define VR_EXPORT_ERROR (vr_export_error_quark())
GQuark vr_export_error_quark(void);

typedef enum {
    VR_EXPORT_ERROR_IO,      /* making, writing, syncing or reading a file failed */
    VR_EXPORT_ERROR_EXISTS,  /* the directory holds another export (a manifest) */
    VR_EXPORT_ERROR_INVALID, /* a bad directory, or a manifest that is not one we accept */
} VrExportErrorCode;

#define VR_EXPORT_FORMAT   "virt-replica-export"
#define VR_EXPORT_VERSION  1
#define VR_EXPORT_MANIFEST "manifest.json"
#define VR_EXPORT_SUFFIX   ".stream"
/* A manifest is the domain XML (at most 1 MiB, VR_RECEIVER_DOMAIN_MAX) and a little more. */
#define VR_EXPORT_MANIFEST_MAX (3 * 1024 * 1024)

/* ---- writing (the primary) ---------------------------------------------------------- */

typedef struct _VrExport VrExport;

/*
 * Start an export of @relationship's @disks (target devs, NULL-terminated) into @dir, an
 * absolute path: made (mode 0700, parents too) when missing. A directory that holds a
 * manifest is another export: VR_EXPORT_ERROR_EXISTS, and nothing is touched. Our own files
 * left by an export that never completed (no manifest: "<target>.stream", ".part" files)
 * are removed; any other file is left alone. (transfer full)
 */
VrExport *vr_export_new(const char *dir, const char *relationship, const char *const *disks,
                        GError **error);

/* Where disk @index's stream goes: "<dir>/<target>.stream" (transfer full). */
char *vr_export_stream_path(VrExport *export, guint index);

/* Disk @index's stream is in place (written complete, synced, renamed). */
void vr_export_set_disk(VrExport *export, guint index, uint64_t size,
                        const uint8_t digest[VR_WIRE_DIGEST_SIZE]);

/* What the manifest says beside the disks. Strings borrowed. */
typedef struct {
    const char *primary;     /* this host's certificate identity */
    const char *domain_name; /* the domain */
    const char *domain_uuid; /* its UUID, as text */
    const char *domain_xml;  /* its inactive XML */
    uint64_t epoch;
    uint64_t cycle; /* the exported cycle (base 0) */
    uint32_t flags; /* VrWireFlags of the cycle */
} VrExportInfo;

/*
 * Write the manifest (every disk must be set): "manifest.json.part", fdatasync, rename,
 * directory fsync. After it the export is complete and vr_export_free() keeps it.
 */
bool vr_export_commit(VrExport *export, const VrExportInfo *info, GError **error);

/* Free; an export not committed has its stream files removed. NULL-safe. */
void vr_export_free(VrExport *export);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrExport, vr_export_free)

/* ---- reading (the replica) ---------------------------------------------------------- */

typedef struct {
    char target[VR_WIRE_DISK_MAX + 1];
    char *file; /* "<target>.stream" */
    uint64_t size;
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
} VrExportDisk;

typedef struct {
    char relationship[VR_WIRE_RELATIONSHIP_MAX + 1];
    uint64_t epoch;
    uint64_t cycle;
    uint32_t flags;
    int64_t created; /* Unix seconds */
    char *primary;
    char *domain_name;
    char *domain_uuid;
    char *domain_xml;
    GArray *disks; /* of VrExportDisk */
} VrExportManifest;

/*
 * Read and check the manifest of the export in the directory @dir_fd (named @dir in
 * messages): a regular file (no symlink) of at most VR_EXPORT_MANIFEST_MAX bytes, strict
 * JSON with exactly the members above, each of the right type and within the wire's
 * limits. VR_EXPORT_ERROR_INVALID names the member at fault. (transfer full)
 */
VrExportManifest *vr_export_manifest_read(int dir_fd, const char *dir, GError **error);

void vr_export_manifest_free(VrExportManifest *manifest);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrExportManifest, vr_export_manifest_free)

G_END_DECLS
