/*
 * vr-replica-import.h: the replica imports an initial copy exported to a directory
 *
 * The other end of vr-export.h (Hyper-V's Import-VMInitialReplication). The files came on
 * external media and are trusted no more than a network peer: the manifest is checked
 * member by member (vr_export_manifest_read()), the primary it names must be authorized by
 * the replica's table exactly as if it had connected (vr_authz_lookup(): its storage root
 * and trust group; the sink checks the trust group of the relationship), and every stream
 * is verified whole (record checksums, the stream digest, its size and identity against the
 * manifest) before anything is applied. Then the streams go through the same sink as an
 * upload (vr-replica-sink.h, the VrReceiverSink callbacks: begin, record, commit), so a
 * stream is applied and published by exactly the code that applies a received one: first
 * every disk's begin() (a relationship the sink refuses, e.g. one with points already, is
 * refused before anything is written), then the manifest's domain XML through domain() as
 * after PUT /v1/domains (the standby is defined at the first commit), then each stream.
 *
 * Called from the receiver's thread (the daemon's main context), like the sink.
 * vr_replica_import_dir() does it all at once, blocking that thread; a VrReplicaImport does
 * it one chunk per main loop iteration (an idle source), so the receiver and the API go on
 * meanwhile.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <gio/gio.h>
#include <glib.h>

#include "vr-authz.h"
#include "vr-export.h"
#include "vr-receiver.h"
#include "vr-wire.h"

G_BEGIN_DECLS

/*
 * Apply the wire stream read from @in as stream @key of @peer through @sink (its begin(),
 * record(), then commit(); abort() on any failure): the path of an upload, fed from a
 * stream instead of an HTTP body. With @sink NULL the stream is only verified. The BEGIN
 * record must match @key (a cycle); the stream must end with its verified END record, be
 * exactly @size bytes (0: any) and, with @digest, carry that stream digest. Errors: the
 * sink's (VR_RECEIVER_ERROR: FORBIDDEN, CONFLICT, COMMITTED ...), VR_WIRE_ERROR for a
 * stream that does not verify, G_IO_ERROR for reading. @totals (may be NULL) gets what was
 * verified.
 */
bool vr_replica_import_stream(const VrReceiverSink *sink, gpointer sink_data,
                              const VrReceiverKey *key, const VrReceiverPeer *peer,
                              GInputStream *in, uint64_t size,
                              const uint8_t digest[VR_WIRE_DIGEST_SIZE], VrWireTotals *totals,
                              GCancellable *cancellable, GError **error);

/* What an import did. */
typedef struct {
    VrExportManifest *manifest; /* the verified manifest */
    uint64_t bytes;             /* disk bytes applied (DATA and ZERO), every disk */
    uint64_t stream_bytes;      /* stream bytes read */
} VrReplicaImportResult;

void vr_replica_import_result_clear(VrReplicaImportResult *result);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VrReplicaImportResult, vr_replica_import_result_clear)

/*
 * Import the export in directory @dir (absolute) through @sink (the replica sink's
 * callbacks and data) for the primaries @authz allows. Nothing is applied unless the
 * manifest and every stream verified; then the domain XML goes to the sink's domain() and
 * each stream is applied and published. Errors: VR_EXPORT_ERROR (INVALID for a manifest or
 * a stream file that is not what the manifest says, IO), VR_AUTHZ_ERROR_FORBIDDEN, the
 * sink's, VR_WIRE_ERROR (a stream that does not verify). Messages name the file.
 */
bool vr_replica_import_dir(const VrReceiverSink *sink, gpointer sink_data, VrAuthz *authz,
                           const char *dir, VrReplicaImportResult *result, GError **error);

/* ---- the same, a chunk at a time ----------------------------------------------------- */

typedef struct _VrReplicaImport VrReplicaImport;

/* The import ended: vr_replica_import_finish() tells how. */
typedef void (*VrReplicaImportDone)(VrReplicaImport *import, gpointer user_data);

/*
 * Begin importing @dir as vr_replica_import_dir() does: the directory, the manifest and the
 * authorization are checked now (NULL and @error when they fail: nothing was started);
 * the streams are then verified and applied from an idle source on the thread-default
 * context, a chunk per iteration, and @done is called there once at the end. @authz,
 * @sink and @sink_data are borrowed and outlive the import. (transfer full)
 */
VrReplicaImport *vr_replica_import_start(const VrReceiverSink *sink, gpointer sink_data,
                                         VrAuthz *authz, const char *dir, VrReplicaImportDone done,
                                         gpointer user_data, GError **error);

/* The manifest of a started import. (transfer none) */
const VrExportManifest *vr_replica_import_get_manifest(VrReplicaImport *import);

/* After @done: true with @result filled, or false with the import's error. */
bool vr_replica_import_finish(VrReplicaImport *import, VrReplicaImportResult *result,
                              GError **error);

/*
 * Free; an import still running is aborted first (the sink's abort() for the stream it
 * applies: nothing half-applied is published) and @done is not called. NULL-safe.
 */
void vr_replica_import_free(VrReplicaImport *import);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrReplicaImport, vr_replica_import_free)

G_END_DECLS
