/*
 * vr-authz.h: which primaries may replicate to this replica, and where they store
 *
 * Either any primary that passed the certificate policy (vr-tls-policy.h) is allowed, with
 * one default storage root, or a table of entries decides: a name pattern of the primary's
 * certificate identity with at most one '*' (matching one or more characters of a DNS
 * label), the storage root of its replicas, and its trust group. The first matching entry
 * wins. A primary may only write to relationships of its own trust group.
 *
 * The table changes at runtime: entries of the configuration file come first (origin
 * CONFIG), entries added later through the daemon's API go after them (origin API) and may be
 * removed again. Every function is thread-safe: the receiver looks primaries up from its
 * threads while the daemon adds and removes entries from its own; what a lookup returns is a
 * copy, never a pointer into the table.
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
    VR_AUTHZ_ERROR_EXISTS,    /* an entry with that pattern is in the table already */
    VR_AUTHZ_ERROR_NOT_FOUND, /* no entry with that pattern */
    VR_AUTHZ_ERROR_FIXED,     /* the entry comes from the configuration file: not removable */
} VrAuthzErrorCode;

/* Where an entry comes from. */
typedef enum {
    VR_AUTHZ_ORIGIN_CONFIG, /* the configuration file: fixed for the table's lifetime */
    VR_AUTHZ_ORIGIN_API,    /* added at runtime (the daemon's API, its state database) */
} VrAuthzOrigin;

/* One entry as vr_authz_list() and vr_authz_get() show it: copies. */
typedef struct {
    char *pattern; /* folded to lower case; "*" for allow-any */
    char *storage_root;
    char *group;
    VrAuthzOrigin origin;
} VrAuthzEntry;

void vr_authz_entry_free(VrAuthzEntry *entry);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrAuthzEntry, vr_authz_entry_free)

/* "config" or "api". */
const char *vr_authz_origin_to_string(VrAuthzOrigin origin);

typedef struct _VrAuthz VrAuthz;

/* Allow any authenticated primary, storing beneath @storage_root in trust group @group. */
VrAuthz *vr_authz_new_allow_any(const char *storage_root, const char *group, GError **error);

/* An empty table: add entries with vr_authz_add(). (transfer full) */
VrAuthz *vr_authz_new_table(void);

/*
 * Add an entry at the end of the table: @pattern ("primary1.dc1.example", "*.dc1.example",
 * "host-*.example"; compared without regard to case), an absolute @storage_root that exists,
 * and @group ([a-z0-9-]{1,32}). CONFIG for a bad pattern, root or group (the message names
 * the entry and the field); EXISTS when the table has that pattern already (whatever the
 * case). vr_authz_add() adds with origin CONFIG.
 */
bool vr_authz_add(VrAuthz *authz, const char *pattern, const char *storage_root, const char *group,
                  GError **error);
bool vr_authz_add_origin(VrAuthz *authz, const char *pattern, const char *storage_root,
                         const char *group, VrAuthzOrigin origin, GError **error);

/*
 * Remove the entry of @pattern (compared without regard to case). NOT_FOUND when there is
 * none, FIXED when it comes from the configuration file. Lookups that already returned keep
 * their copies: a transfer that began goes on; the next request of that primary is refused.
 */
bool vr_authz_remove(VrAuthz *authz, const char *pattern, GError **error);

/* Every entry in match order. (transfer full: a GPtrArray of VrAuthzEntry that frees them) */
GPtrArray *vr_authz_list(VrAuthz *authz);

/* The entry of @pattern, or NULL with NOT_FOUND. (transfer full) */
VrAuthzEntry *vr_authz_get(VrAuthz *authz, const char *pattern, GError **error);

void vr_authz_free(VrAuthz *authz);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrAuthz, vr_authz_free)

/*
 * The entry for the primary whose certificate identity is @peer: its storage root and
 * trust group, copied under the table's lock (transfer full: g_free() them; they stay valid
 * whatever happens to the table meanwhile). VR_AUTHZ_ERROR_FORBIDDEN when no entry matches;
 * the outputs are untouched then.
 */
bool vr_authz_lookup(VrAuthz *authz, const char *peer, char **storage_root, char **group,
                     GError **error);

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
