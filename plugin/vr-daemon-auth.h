/*
 * vr-daemon-auth.h: the replica role's resources of the local API (internal to the daemon)
 *
 *   GET    /v1/authorizations            the authorization table, in match order
 *   POST   /v1/authorizations            add an entry (kept in the state database)
 *   GET    /v1/authorizations/{pattern}  one entry
 *   DELETE /v1/authorizations/{pattern}  remove an entry added through the API
 *   GET    /v1/server                    the replica role's settings and certificate
 *
 * docs/api.md has the bodies and the errors. The configuration file's entries come first and
 * stay fixed; entries added through the API go after them, live at once in the receiver
 * (vr-authz.h is thread-safe) and come back from the state database when the daemon starts.
 *
 * Everything here is called from the daemon's main context only.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>
#include <json-c/json.h>
#include <libsoup/soup.h>

#include "vr-authz.h"
#include "vr-config.h"
#include "vr-state.h"

G_BEGIN_DECLS

/* What the handlers see of the daemon (borrowed). */
typedef struct {
    const VrConfig *config;
    VrState *state;
    VrAuthz *authz;      /* NULL: the replica role is off */
    const char *address; /* the address the receiver is bound to */
    guint16 port;        /* and its port */
} VrDaemonReplica;

/*
 * Add the state database's entries to @authz (made from the configuration): after the
 * configuration's, in the order they were added. A pattern the configuration has too is left
 * out with a warning (the file wins); an entry whose storage root is gone is left out with a
 * warning (its row stays: it is back once the directory is). With allow-any nothing is added
 * (a warning when there are entries). Fails only when the database cannot be read.
 */
bool vr_daemon_auth_load(const VrConfig *config, VrState *state, VrAuthz *authz, GError **error);

/*
 * Answer @msg when @parts (the path after /v1/, split at '/', @n of them) is one of the
 * resources above; false, with @msg untouched, when it is none of them.
 */
bool vr_daemon_auth_route(const VrDaemonReplica *replica, SoupServerMessage *msg,
                          const char *method, char **parts, guint n);

G_END_DECLS
