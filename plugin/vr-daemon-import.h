/*
 * vr-daemon-import.h: POST /v1/imports of the daemon's local API (replica role)
 *
 * {"path": DIR} imports the initial copy exported to DIR by a primary (vr-export.h) through
 * the replica's sink (vr-replica-import.h). The request stays open while the streams are
 * verified and applied, a chunk per main loop iteration: the receiver and the rest of the
 * API go on meanwhile. One import runs at a time. docs/api.md ("POST /v1/imports") has the
 * request, the answer and the error codes.
 *
 * Called from the daemon's main context only.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <glib.h>
#include <json-c/json.h>
#include <libsoup/soup.h>

#include "vr-authz.h"
#include "vr-replica-sink.h"

G_BEGIN_DECLS

typedef struct _VrDaemonImports VrDaemonImports;

/* Imports into @sink for the primaries @authz allows (both borrowed, outliving it). */
VrDaemonImports *vr_daemon_imports_new(VrAuthz *authz, VrReplicaSink *sink);

/*
 * POST /v1/imports with the request body @request (a JSON object): answered at once when
 * it cannot start, else @msg is paused and answered when the import ended.
 */
void vr_daemon_imports_post(VrDaemonImports *imports, SoupServerMessage *msg, json_object *request);

/*
 * Abort a running import (nothing half-applied is published) and free. Its request gets
 * no answer: the client sees the connection close with the API server. NULL-safe.
 */
void vr_daemon_imports_free(VrDaemonImports *imports);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrDaemonImports, vr_daemon_imports_free)

G_END_DECLS
