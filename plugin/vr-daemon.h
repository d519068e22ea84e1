/*
 * vr-daemon.h: virt-replicad, one per host, both roles
 *
 * The daemon owns, for its lifetime:
 *   - its configuration (vr-config.h) and its state database (vr-state.h) under the state
 *     directory, made 0700 when missing;
 *   - the local API: HTTP/1.1 with JSON bodies on a unix socket (mode 0600, root only, or
 *     0660 for the configured group), which the CLI, the virsh wrapper and the libvirt hook
 *     use (docs/api.md), with /metrics in Prometheus text format;
 *   - the replica role, when [replica] enabled: the HTTPS receiver (vr-receiver.h) on the
 *     replication address, authorizing primaries from the configuration and from the entries
 *     added through the API (vr-daemon-auth.h), applying their cycles into recovery points
 *     (vr-replica-sink.h), recording into the state database.
 *
 * It runs on the thread-default main context of the thread that calls
 * vr_daemon_run(), until vr_daemon_quit() (SIGTERM and SIGINT in virt-replicad): then the
 * receiver stops (its transfers are aborted: nothing half-applied is ever published), the
 * stores and the database close, and the socket is removed.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>

#include "vr-config.h"

G_BEGIN_DECLS

#define VR_DAEMON_ERROR (vr_daemon_error_quark())
GQuark vr_daemon_error_quark(void);

typedef enum {
    VR_DAEMON_ERROR_FAILED,  /* a part of the daemon could not start (its message) */
    VR_DAEMON_ERROR_RUNNING, /* another daemon answers on the socket */
} VrDaemonErrorCode;

typedef struct _VrDaemon VrDaemon;

/*
 * Start everything the configuration asks for: state directory and database, the API
 * socket, the replica role. @config is taken (transfer full). Nothing is left running or
 * listening on failure. (transfer full)
 */
VrDaemon *vr_daemon_new(VrConfig *config, GError **error);

/* Run until vr_daemon_quit(). */
void vr_daemon_run(VrDaemon *daemon);

/* Make vr_daemon_run() return (safe from a signal source on the daemon's context). */
void vr_daemon_quit(VrDaemon *daemon);

/* The replica receiver's port, 0 when the replica role is off (tests). */
guint16 vr_daemon_get_replica_port(VrDaemon *daemon);

/* Stop and free everything; the socket is removed. NULL-safe. */
void vr_daemon_free(VrDaemon *daemon);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrDaemon, vr_daemon_free)

G_END_DECLS
