/*
 * vr-authz.h: which primaries may replicate to this replica, and where they store
 *
 * Either any primary that passed the certificate policy (vr-tls-policy.h) is allowed, with
 * one default storage root, or a table of entries decides: a name pattern of the primary's
 * certificate identity with at most one '*' (matching one or more characters of a DNS
 * label), the storage root of its replicas, and its trust group. The first matching entry
 * wins. A primary may only write to relationships of its own trust group.
 *
 * Names from the wire never become paths unchecked: identifiers are validated here, and
 * files are opened beneath the storage root only, through no symlink
 * (vr_authz_open_beneath()).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>

G_BEGIN_DECLS

#define VR_AUTHZ_ERROR (vr_authz_error_quark())
GQuark vr_authz_error_quark(void);

typedef enum {
    VR_AUTHZ_ERROR_CONFIG,    /* a bad entry: pattern, root or group; names the entry */
    VR_AUTHZ_ERROR_FORBIDDEN, /* this primary may not (HTTP 403) */
    VR_AUTHZ_ERROR_INVALID,   /* a name from the wire is not a valid identifier (HTTP 400) */
    VR_AUTHZ_ERROR_ESCAPE,    /* a path would leave the storage root, or crosses a symlink */
    VR_AUTHZ_ERROR_IO,
} VrAuthzErrorCode;

typedef struct _VrAuthz VrAuthz;

/* Allow any authenticated primary, storing beneath @storage_root in trust group @group. */
VrAuthz *vr_authz_new_allow_any(const char *storage_root, const char *group, GError **error);

/* An empty table: add entries with vr_authz_add(). (transfer full) */
VrAuthz *vr_authz_new_table(void);

/*
 * Add an entry: @pattern ("primary1.dc1.example", "*.dc1.example", "host-*.example"),
 * an absolute @storage_root that exists, and @group ([a-z0-9-]{1,32}).
 */
bool vr_authz_add(VrAuthz *authz, const char *pattern, const char *storage_root, const char *group,
                  GError **error);

void vr_authz_free(VrAuthz *authz);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrAuthz, vr_authz_free)

/*
 * The entry for the primary whose certificate identity is @peer: its storage root and
 * trust group (transfer none, valid while @authz lives). VR_AUTHZ_ERROR_FORBIDDEN when no
 * entry matches.
 */
bool vr_authz_lookup(VrAuthz *authz, const char *peer, const char **storage_root,
                     const char **group, GError **error);

/*
 * May @peer write to a relationship owned by trust group @owner_group? Also true for a new
 * relationship (@owner_group NULL), which then belongs to the peer's group.
 */
bool vr_authz_may_write(VrAuthz *authz, const char *peer, const char *owner_group, GError **error);

/* Whether @name is an identifier that may take part in a path: [a-z0-9][a-z0-9-]{0,63}. */
bool vr_authz_check_name(const char *what, const char *name, GError **error);

/*
 * Open @relative (components checked with vr_authz_check_name(), separated by '/') beneath
 * the directory @root: never above it, never through a symlink (openat2 RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS, or a walk with O_NOFOLLOW where openat2 is missing). @flags and
 * @mode as for open(2). Returns the fd, or -1 with @error.
 */
int vr_authz_open_beneath(const char *root, const char *relative, int flags, int mode,
                          GError **error);

G_END_DECLS
