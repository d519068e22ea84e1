/*
 * vr-authz.c: which primaries may replicate to this replica, and where they store
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/openat2.h>

#include "vr-authz.h"

#define VR_AUTHZ_NAME_MAX  64
#define VR_AUTHZ_GROUP_MAX 32

GQuark
vr_authz_error_quark(void)
{
    return g_quark_from_static_string("vr-authz-error-quark");
}

typedef struct {
    char *pattern; /* folded to lower case */
    char *prefix;  /* the pattern, or what comes before its '*' */
    char *suffix;  /* what comes after the '*', or NULL without one */
    char *storage_root;
    char *group;
    VrAuthzOrigin origin;
    bool any; /* the bare pattern "*": any authenticated primary */
} VrAuthzRule;

struct _VrAuthz {
    GMutex lock;      /* guards rules: the receiver's threads look up, the daemon edits */
    GPtrArray *rules; /* VrAuthzRule in match order; a single "*" rule when any is allowed */
};

static void
vr_authz_rule_free(gpointer data)
{
    VrAuthzRule *r = data;

    g_free(r->pattern);
    g_free(r->prefix);
    g_free(r->suffix);
    g_free(r->storage_root);
    g_free(r->group);
    g_free(r);
}

void
vr_authz_entry_free(VrAuthzEntry *entry)
{
    if (entry == NULL)
        return;
    g_free(entry->pattern);
    g_free(entry->storage_root);
    g_free(entry->group);
    g_free(entry);
}

const char *
vr_authz_origin_to_string(VrAuthzOrigin origin)
{
    return origin == VR_AUTHZ_ORIGIN_CONFIG ? "config" : "api";
}

VrAuthz *
vr_authz_new_table(void)
{
    VrAuthz *authz = g_new0(VrAuthz, 1);

    g_mutex_init(&authz->lock);
    authz->rules = g_ptr_array_new_with_free_func(vr_authz_rule_free);
    return authz;
}

void
vr_authz_free(VrAuthz *authz)
{
    if (authz == NULL)
        return;
    g_ptr_array_unref(authz->rules);
    g_mutex_clear(&authz->lock);
    g_free(authz);
}

static bool
vr_authz_group_valid(const char *group)
{
    gsize len = strlen(group);

    if (len == 0 || len > VR_AUTHZ_GROUP_MAX)
        return false;
    for (const char *c = group; *c != '\0'; c++) {
        if (!g_ascii_islower(*c) && !g_ascii_isdigit(*c) && *c != '-')
            return false;
    }
    return true;
}

/* A DNS name, lower case after folding: letters, digits, '-', '.'; one '*' if @wildcard. */
static bool
vr_authz_pattern_valid(const char *pattern, bool wildcard)
{
    guint stars = 0;

    if (pattern[0] == '\0' || strlen(pattern) > 253)
        return false;
    for (const char *c = pattern; *c != '\0'; c++) {
        if (*c == '*')
            stars++;
        else if (!g_ascii_isalnum(*c) && *c != '-' && *c != '.')
            return false;
    }
    return stars <= (wildcard ? 1u : 0u);
}

/* The index of the rule of @folded (a lower-case pattern), or -1. Called with the lock held. */
static int
vr_authz_find_locked(VrAuthz *authz, const char *folded)
{
    for (guint i = 0; i < authz->rules->len; i++) {
        VrAuthzRule *r = g_ptr_array_index(authz->rules, i);

        if (strcmp(r->pattern, folded) == 0)
            return (int)i;
    }
    return -1;
}

static VrAuthzEntry *
vr_authz_rule_copy(const VrAuthzRule *r)
{
    VrAuthzEntry *e = g_new0(VrAuthzEntry, 1);

    e->pattern = g_strdup(r->pattern);
    e->storage_root = g_strdup(r->storage_root);
    e->group = g_strdup(r->group);
    e->origin = r->origin;
    return e;
}

bool
vr_authz_add_origin(VrAuthz *authz, const char *pattern, const char *storage_root,
                    const char *group, VrAuthzOrigin origin, GError **error)
{
    g_autoptr(GMutexLocker) locker = NULL;
    VrAuthzRule *r;
    const char *star;

    if (!g_str_equal(pattern, "*") && !vr_authz_pattern_valid(pattern, true)) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_CONFIG,
                    "pattern '%s' is not a DNS name with at most one '*'", pattern);
        return false;
    }
    if (!g_path_is_absolute(storage_root) || !g_file_test(storage_root, G_FILE_TEST_IS_DIR)) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_CONFIG,
                    "storage root '%s' of pattern '%s' is not an existing absolute directory",
                    storage_root, pattern);
        return false;
    }
    if (!vr_authz_group_valid(group)) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_CONFIG,
                    "trust group '%s' of pattern '%s' is not [a-z0-9-]{1,%d}", group, pattern,
                    VR_AUTHZ_GROUP_MAX);
        return false;
    }
    r = g_new0(VrAuthzRule, 1);
    r->pattern = g_ascii_strdown(pattern, -1);
    r->any = g_str_equal(pattern, "*");
    star = strchr(r->pattern, '*');
    if (star != NULL) {
        r->prefix = g_strndup(r->pattern, star - r->pattern);
        r->suffix = g_strdup(star + 1);
    } else {
        r->prefix = g_strdup(r->pattern);
    }
    r->storage_root = g_strdup(storage_root);
    r->group = g_strdup(group);
    r->origin = origin;
    locker = g_mutex_locker_new(&authz->lock);
    if (vr_authz_find_locked(authz, r->pattern) >= 0) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_EXISTS,
                    "pattern '%s' has an authorization entry already", r->pattern);
        vr_authz_rule_free(r);
        return false;
    }
    g_ptr_array_add(authz->rules, r);
    return true;
}

bool
vr_authz_add(VrAuthz *authz, const char *pattern, const char *storage_root, const char *group,
             GError **error)
{
    return vr_authz_add_origin(authz, pattern, storage_root, group, VR_AUTHZ_ORIGIN_CONFIG, error);
}

bool
vr_authz_remove(VrAuthz *authz, const char *pattern, GError **error)
{
    g_autofree char *folded = g_ascii_strdown(pattern, -1);
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&authz->lock);
    int i = vr_authz_find_locked(authz, folded);
    VrAuthzRule *r;

    if (i < 0) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_NOT_FOUND,
                    "no authorization entry for pattern '%s'", pattern);
        return false;
    }
    r = g_ptr_array_index(authz->rules, i);
    if (r->origin == VR_AUTHZ_ORIGIN_CONFIG) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FIXED,
                    "the authorization entry of pattern '%s' comes from the configuration file",
                    r->pattern);
        return false;
    }
    /* Order matters (the first match wins): not g_ptr_array_remove_index_fast(). */
    g_ptr_array_remove_index(authz->rules, (guint)i);
    return true;
}

GPtrArray *
vr_authz_list(VrAuthz *authz)
{
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&authz->lock);
    GPtrArray *list = g_ptr_array_new_with_free_func((GDestroyNotify)vr_authz_entry_free);

    for (guint i = 0; i < authz->rules->len; i++)
        g_ptr_array_add(list, vr_authz_rule_copy(g_ptr_array_index(authz->rules, i)));
    return list;
}

VrAuthzEntry *
vr_authz_get(VrAuthz *authz, const char *pattern, GError **error)
{
    g_autofree char *folded = g_ascii_strdown(pattern, -1);
    g_autoptr(GMutexLocker) locker = g_mutex_locker_new(&authz->lock);
    int i = vr_authz_find_locked(authz, folded);

    if (i < 0) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_NOT_FOUND,
                    "no authorization entry for pattern '%s'", pattern);
        return NULL;
    }
    return vr_authz_rule_copy(g_ptr_array_index(authz->rules, i));
}

VrAuthz *
vr_authz_new_allow_any(const char *storage_root, const char *group, GError **error)
{
    g_autoptr(VrAuthz) authz = vr_authz_new_table();

    if (!vr_authz_add(authz, "*", storage_root, group, error))
        return NULL;
    return g_steal_pointer(&authz);
}

/* The '*' stands for one or more characters of a single label: no '.' in what it covers. */
static bool
vr_authz_rule_matches(const VrAuthzRule *e, const char *peer)
{
    gsize len = strlen(peer);
    gsize pre = strlen(e->prefix);
    gsize suf;

    if (e->any)
        return true;
    if (e->suffix == NULL)
        return g_str_equal(peer, e->prefix);
    suf = strlen(e->suffix);
    if (len < pre + suf + 1 || strncmp(peer, e->prefix, pre) != 0 ||
        strcmp(peer + len - suf, e->suffix) != 0)
        return false;
    for (gsize i = pre; i < len - suf; i++) {
        if (peer[i] == '.')
            return false;
    }
    return true;
}

bool
vr_authz_lookup(VrAuthz *authz, const char *peer, char **storage_root, char **group, GError **error)
{
    g_autofree char *name = NULL;
    g_autoptr(GMutexLocker) locker = NULL;

    if (peer == NULL || !vr_authz_pattern_valid(peer, false)) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN,
                    "primary '%s' has no usable certificate identity", peer != NULL ? peer : "");
        return false;
    }
    name = g_ascii_strdown(peer, -1);
    locker = g_mutex_locker_new(&authz->lock);
    for (guint i = 0; i < authz->rules->len; i++) {
        VrAuthzRule *r = g_ptr_array_index(authz->rules, i);

        if (vr_authz_rule_matches(r, name)) {
            *storage_root = g_strdup(r->storage_root);
            *group = g_strdup(r->group);
            return true;
        }
    }
    g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN,
                "primary '%s' is not authorized to replicate here", peer);
    return false;
}

bool
vr_authz_may_write(VrAuthz *authz, const char *peer, const char *owner_group, GError **error)
{
    g_autofree char *root = NULL;
    g_autofree char *group = NULL;

    if (!vr_authz_lookup(authz, peer, &root, &group, error))
        return false;
    if (owner_group != NULL && !g_str_equal(owner_group, group)) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN,
                    "primary '%s' (trust group '%s') may not write to a replica of trust group "
                    "'%s'",
                    peer, group, owner_group);
        return false;
    }
    return true;
}

bool
vr_authz_check_name(const char *what, const char *name, GError **error)
{
    gsize len = name != NULL ? strlen(name) : 0;
    bool ok = len > 0 && len <= VR_AUTHZ_NAME_MAX &&
              (g_ascii_islower(name[0]) || g_ascii_isdigit(name[0]));

    for (gsize i = 0; ok && i < len; i++)
        ok = g_ascii_islower(name[i]) || g_ascii_isdigit(name[i]) || name[i] == '-';
    if (!ok) {
        g_autofree char *shown = name != NULL ? g_strescape(name, NULL) : g_strdup("");

        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_INVALID,
                    "%s '%.80s' is not [a-z0-9][a-z0-9-]{0,%d}", what, shown,
                    VR_AUTHZ_NAME_MAX - 1);
    }
    return ok;
}

/* Where openat2(2) is missing: one component at a time, none of them a symlink. */
static int
vr_authz_walk_beneath(int root_fd, char **parts, int flags, int mode)
{
    int dir = dup(root_fd);

    for (guint i = 0; dir >= 0 && parts[i] != NULL; i++) {
        bool last = parts[i + 1] == NULL;
        int next = openat(dir, parts[i],
                          last ? flags | O_NOFOLLOW : O_PATH | O_DIRECTORY | O_NOFOLLOW, mode);
        int errsv = errno;

        close(dir);
        errno = errsv;
        dir = next;
    }
    return dir;
}

int
vr_authz_open_beneath(const char *root, const char *relative, int flags, int mode, GError **error)
{
    g_auto(GStrv) parts = g_strsplit(relative, "/", -1);
    struct open_how how = { 0 };
    int root_fd;
    int fd;
    int errsv;

    if (parts[0] == NULL) {
        g_set_error_literal(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_INVALID, "empty path");
        return -1;
    }
    for (guint i = 0; parts[i] != NULL; i++) {
        if (!vr_authz_check_name("path component", parts[i], error))
            return -1;
    }
    root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0) {
        g_set_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_IO, "cannot open storage root '%s': %s",
                    root, g_strerror(errno));
        return -1;
    }
    how.flags = (uint64_t)(flags | O_CLOEXEC);
    how.mode = (flags & O_CREAT) ? (uint64_t)mode : 0;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
    fd = (int)syscall(SYS_openat2, root_fd, relative, &how, sizeof(how));
    if (fd < 0 && errno == ENOSYS)
        fd = vr_authz_walk_beneath(root_fd, parts, flags | O_CLOEXEC, mode);
    errsv = errno;
    close(root_fd);
    if (fd < 0) {
        g_set_error(error, VR_AUTHZ_ERROR,
                    errsv == ELOOP || errsv == EXDEV ? VR_AUTHZ_ERROR_ESCAPE : VR_AUTHZ_ERROR_IO,
                    "cannot open '%s' beneath '%s': %s", relative, root,
                    errsv == ELOOP || errsv == EXDEV ? "it crosses a symlink or leaves the root"
                                                     : g_strerror(errsv));
        return -1;
    }
    return fd;
}
