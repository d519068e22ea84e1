/*
 * vr-export.c: the initial copy exported to a directory, for offline transport
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-export.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <json-c/json.h>

#include "vr-authz.h"
#include "vr-qmp-json.h"

G_DEFINE_QUARK(vr - export - error - quark, vr_export_error)

struct _VrExport {
    char *dir;
    char *relationship;
    char **disks;
    guint n_disks;
    uint64_t *sizes;
    uint8_t (*digests)[VR_WIRE_DIGEST_SIZE];
    bool *set;
    bool committed;
};

static bool
vr_export_errno(GError **error, int errsv, const char *what, const char *path)
{
    g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_IO, "cannot %s '%s': %s", what, path,
                g_strerror(errsv));
    return false;
}

/* ---- writing ------------------------------------------------------------------------ */

/* Remove @name in @dir if it is there; a failure other than "not there" is an error. */
static bool
vr_export_remove(const char *dir, const char *name, GError **error)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);

    if (g_unlink(path) < 0 && errno != ENOENT)
        return vr_export_errno(error, errno, "remove", path);
    return true;
}

VrExport *
vr_export_new(const char *dir, const char *relationship, const char *const *disks, GError **error)
{
    g_autoptr(VrExport) export = NULL;
    g_autofree char *manifest = NULL;
    struct stat st;

    g_return_val_if_fail(dir != NULL && relationship != NULL && disks != NULL, NULL);

    if (!g_path_is_absolute(dir)) {
        g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID,
                    "export directory '%s' is not an absolute path", dir);
        return NULL;
    }
    if (g_mkdir_with_parents(dir, 0700) < 0 || stat(dir, &st) < 0) {
        vr_export_errno(error, errno, "make the export directory", dir);
        return NULL;
    }
    if (!S_ISDIR(st.st_mode)) {
        g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID,
                    "export directory '%s' is not a directory", dir);
        return NULL;
    }
    manifest = g_build_filename(dir, VR_EXPORT_MANIFEST, NULL);
    if (lstat(manifest, &st) == 0) {
        g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_EXISTS,
                    "export directory '%s' holds another export (%s): give an empty directory", dir,
                    VR_EXPORT_MANIFEST);
        return NULL;
    }

    export = g_new0(VrExport, 1);
    export->dir = g_strdup(dir);
    export->relationship = g_strdup(relationship);
    export->disks = g_strdupv((char **)disks);
    export->n_disks = g_strv_length(export->disks);
    export->sizes = g_new0(uint64_t, export->n_disks);
    export->digests = g_malloc0_n(export->n_disks, VR_WIRE_DIGEST_SIZE);
    export->set = g_new0(bool, export->n_disks);

    /* What an export that never completed left (there is no manifest): ours to replace. */
    if (!vr_export_remove(dir, VR_EXPORT_MANIFEST ".part", error))
        return NULL;
    for (guint i = 0; i < export->n_disks; i++) {
        g_autofree char *stream = g_strconcat(export->disks[i], VR_EXPORT_SUFFIX, NULL);
        g_autofree char *part = g_strconcat(stream, ".part", NULL);

        if (!vr_export_remove(dir, stream, error) || !vr_export_remove(dir, part, error))
            return NULL;
    }
    return g_steal_pointer(&export);
}

char *
vr_export_stream_path(VrExport *export, guint index)
{
    g_autofree char *name = NULL;

    g_return_val_if_fail(index < export->n_disks, NULL);
    name = g_strconcat(export->disks[index], VR_EXPORT_SUFFIX, NULL);
    return g_build_filename(export->dir, name, NULL);
}

void
vr_export_set_disk(VrExport *export, guint index, uint64_t size,
                   const uint8_t digest[VR_WIRE_DIGEST_SIZE])
{
    g_return_if_fail(index < export->n_disks);
    export->sizes[index] = size;
    memcpy(export->digests[index], digest, VR_WIRE_DIGEST_SIZE);
    export->set[index] = true;
}

/* Write @len bytes of @data to @fd. */
static bool
vr_export_write_all(int fd, const char *data, size_t len, const char *path, GError **error)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vr_export_errno(error, errno, "write", path);
        data += n;
        len -= (size_t)n;
    }
    return true;
}

static bool
vr_export_sync_dir(const char *dir, GError **error)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int errsv;

    if (fd >= 0 && fsync(fd) == 0) {
        close(fd);
        return true;
    }
    errsv = errno;
    if (fd >= 0)
        close(fd);
    return vr_export_errno(error, errsv, "sync directory", dir);
}

bool
vr_export_commit(VrExport *export, const VrExportInfo *info, GError **error)
{
    g_autoptr(json_object) obj = json_object_new_object();
    g_autofree char *part = g_build_filename(export->dir, VR_EXPORT_MANIFEST ".part", NULL);
    g_autofree char *path = g_build_filename(export->dir, VR_EXPORT_MANIFEST, NULL);
    json_object *domain = json_object_new_object();
    json_object *disks = json_object_new_array();
    const char *text;
    bool ok;
    int fd;

    g_return_val_if_fail(!export->committed, false);
    for (guint i = 0; i < export->n_disks; i++)
        g_return_val_if_fail(export->set[i], false);

    json_object_object_add(obj, "format", json_object_new_string(VR_EXPORT_FORMAT));
    json_object_object_add(obj, "version", json_object_new_int(VR_EXPORT_VERSION));
    json_object_object_add(obj, "relationship", json_object_new_string(export->relationship));
    json_object_object_add(obj, "epoch", json_object_new_uint64(info->epoch));
    json_object_object_add(obj, "cycle", json_object_new_uint64(info->cycle));
    json_object_object_add(obj, "base", json_object_new_uint64(0));
    json_object_object_add(obj, "flags", json_object_new_int((int)info->flags));
    json_object_object_add(obj, "created",
                           json_object_new_int64(g_get_real_time() / G_USEC_PER_SEC));
    json_object_object_add(obj, "primary", json_object_new_string(info->primary));
    json_object_object_add(domain, "name", json_object_new_string(info->domain_name));
    json_object_object_add(domain, "uuid", json_object_new_string(info->domain_uuid));
    json_object_object_add(domain, "xml", json_object_new_string(info->domain_xml));
    json_object_object_add(obj, "domain", domain);
    for (guint i = 0; i < export->n_disks; i++) {
        json_object *disk = json_object_new_object();
        g_autofree char *digest = g_malloc(2 * VR_WIRE_DIGEST_SIZE + 1);
        g_autofree char *file = g_strconcat(export->disks[i], VR_EXPORT_SUFFIX, NULL);

        for (guint j = 0; j < VR_WIRE_DIGEST_SIZE; j++)
            snprintf(digest + 2 * j, 3, "%02x", export->digests[i][j]);
        json_object_object_add(disk, "target", json_object_new_string(export->disks[i]));
        json_object_object_add(disk, "file", json_object_new_string(file));
        json_object_object_add(disk, "size", json_object_new_uint64(export->sizes[i]));
        json_object_object_add(disk, "digest", json_object_new_string(digest));
        json_object_array_add(disks, disk);
    }
    json_object_object_add(obj, "disks", disks);
    text = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                   JSON_C_TO_STRING_NOSLASHESCAPE);

    fd = open(part, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return vr_export_errno(error, errno, "create", part);
    ok = vr_export_write_all(fd, text, strlen(text), part, error) &&
         vr_export_write_all(fd, "\n", 1, part, error);
    if (ok && fdatasync(fd) < 0)
        ok = vr_export_errno(error, errno, "sync", part);
    close(fd);
    if (ok && renameat2(AT_FDCWD, part, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
        if (errno == EEXIST)
            g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_EXISTS,
                        "'%s' appeared while the export was written", path);
        else
            vr_export_errno(error, errno, "rename", part);
        ok = false;
    }
    if (!ok) {
        g_unlink(part);
        return false;
    }
    /* Not durable without the directory: undone, so the cycle fails and its retry exports
     * into the same directory again. */
    if (!vr_export_sync_dir(export->dir, error)) {
        g_unlink(path);
        return false;
    }
    export->committed = true;
    return true;
}

void
vr_export_free(VrExport *export)
{
    if (export == NULL)
        return;
    for (guint i = 0; !export->committed && i < export->n_disks; i++) {
        g_autofree char *path = vr_export_stream_path(export, i);

        if (g_unlink(path) < 0 && errno != ENOENT)
            g_debug("cannot remove '%s': %s", path, g_strerror(errno));
    }
    g_free(export->dir);
    g_free(export->relationship);
    g_strfreev(export->disks);
    g_free(export->sizes);
    g_free(export->digests);
    g_free(export->set);
    g_free(export);
}

/* ---- reading ------------------------------------------------------------------------ */

static bool vr_export_invalid(GError **error, const char *dir, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static bool
vr_export_invalid(GError **error, const char *dir, const char *format, ...)
{
    g_autofree char *what = NULL;
    va_list args;

    va_start(args, format);
    what = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID, "the manifest of export '%s': %s",
                dir, what);
    return false;
}

void
vr_export_manifest_free(VrExportManifest *manifest)
{
    if (manifest == NULL)
        return;
    for (guint i = 0; manifest->disks != NULL && i < manifest->disks->len; i++)
        g_free(g_array_index(manifest->disks, VrExportDisk, i).file);
    g_clear_pointer(&manifest->disks, g_array_unref);
    g_free(manifest->primary);
    g_free(manifest->domain_name);
    g_free(manifest->domain_uuid);
    g_free(manifest->domain_xml);
    g_free(manifest);
}

/* Only the members of @allowed in @obj. */
static bool
vr_export_only(json_object *obj, const char *const *allowed, const char *where, const char *dir,
               GError **error)
{
    json_object_object_foreach (obj, key, value) {
        (void)value;
        if (!g_strv_contains(allowed, key))
            return vr_export_invalid(error, dir, "unknown member '%s'%s", key, where);
    }
    return true;
}

/* A string member of at most @max bytes, non-empty, with no control character. */
static const char *
vr_export_string(json_object *obj, const char *key, gsize max, const char *dir, GError **error)
{
    json_object *member;
    const char *s;

    if (!json_object_object_get_ex(obj, key, &member) ||
        !json_object_is_type(member, json_type_string)) {
        vr_export_invalid(error, dir, "'%s' is missing or not a string", key);
        return NULL;
    }
    s = json_object_get_string(member);
    if (s[0] == '\0' || (gsize)json_object_get_string_len(member) > max ||
        strlen(s) != (gsize)json_object_get_string_len(member)) {
        vr_export_invalid(error, dir, "'%s' is empty, too long or holds a NUL", key);
        return NULL;
    }
    return s;
}

/* A whole number member from @min to @max. */
static bool
vr_export_number(json_object *obj, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                 const char *dir, GError **error)
{
    json_object *member;
    int64_t v;

    if (!json_object_object_get_ex(obj, key, &member) ||
        !json_object_is_type(member, json_type_int) || (v = json_object_get_int64(member)) < 0 ||
        (uint64_t)v < min || (uint64_t)v > max)
        return vr_export_invalid(
            error, dir, "'%s' is missing or not a whole number from %" PRIu64 " to %" PRIu64, key,
            min, max);
    *out = (uint64_t)v;
    return true;
}

/* [a-z0-9]{1,@max}: the wire's names (vr_wire_identity_check), a path component too. */
static bool
vr_export_wire_name(const char *what, const char *name, gsize max, const char *dir, GError **error)
{
    g_autoptr(GError) local = NULL;

    if (strlen(name) > max || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789") != strlen(name))
        return vr_export_invalid(error, dir, "%s '%s' is not [a-z0-9]{1,%" G_GSIZE_FORMAT "}", what,
                                 name, max);
    if (!vr_authz_check_name(what, name, &local))
        return vr_export_invalid(error, dir, "%s", local->message);
    return true;
}

static bool
vr_export_parse_disk(json_object *item, VrExportManifest *manifest, const char *dir, GError **error)
{
    static const char *const members[] = { "target", "file", "size", "digest", NULL };
    g_autofree char *file = NULL;
    const char *target, *name, *digest;
    VrExportDisk disk = { 0 };

    if (!json_object_is_type(item, json_type_object))
        return vr_export_invalid(error, dir, "'disks' holds something other than an object");
    if (!vr_export_only(item, members, " in 'disks'", dir, error) ||
        (target = vr_export_string(item, "target", VR_WIRE_DISK_MAX, dir, error)) == NULL ||
        !vr_export_wire_name("disk", target, VR_WIRE_DISK_MAX, dir, error) ||
        (name = vr_export_string(item, "file", 64, dir, error)) == NULL ||
        !vr_export_number(item, "size", 1, G_MAXINT64, &disk.size, dir, error) ||
        (digest = vr_export_string(item, "digest", 2 * VR_WIRE_DIGEST_SIZE, dir, error)) == NULL)
        return false;
    /* The file is named after the disk, nothing else: no name of the manifest becomes a path. */
    file = g_strconcat(target, VR_EXPORT_SUFFIX, NULL);
    if (strcmp(name, file) != 0)
        return vr_export_invalid(error, dir, "the file of disk '%s' is '%s', not '%s'", target,
                                 name, file);
    if (strlen(digest) != 2 * VR_WIRE_DIGEST_SIZE ||
        strspn(digest, "0123456789abcdef") != 2 * VR_WIRE_DIGEST_SIZE)
        return vr_export_invalid(error, dir, "the digest of disk '%s' is not 64 hex digits",
                                 target);
    for (guint i = 0; i < VR_WIRE_DIGEST_SIZE; i++)
        disk.digest[i] = (uint8_t)(g_ascii_xdigit_value(digest[2 * i]) * 16 +
                                   g_ascii_xdigit_value(digest[2 * i + 1]));
    for (guint i = 0; i < manifest->disks->len; i++) {
        if (strcmp(g_array_index(manifest->disks, VrExportDisk, i).target, target) == 0)
            return vr_export_invalid(error, dir, "disk '%s' is listed twice", target);
    }
    g_strlcpy(disk.target, target, sizeof(disk.target));
    disk.file = g_steal_pointer(&file);
    g_array_append_val(manifest->disks, disk);
    return true;
}

static bool
vr_export_parse(json_object *obj, VrExportManifest *manifest, const char *dir, GError **error)
{
    static const char *const members[] = { "format",  "version", "relationship", "epoch",
                                           "cycle",   "base",    "flags",        "created",
                                           "primary", "domain",  "disks",        NULL };
    static const char *const domain_members[] = { "name", "uuid", "xml", NULL };
    const char *format, *relationship, *primary, *name, *uuid, *xml;
    json_object *domain, *disks;
    uint64_t version, base, flags, created;

    if (!json_object_is_type(obj, json_type_object))
        return vr_export_invalid(error, dir, "it is not a JSON object");
    if (!vr_export_only(obj, members, "", dir, error) ||
        (format = vr_export_string(obj, "format", 64, dir, error)) == NULL)
        return false;
    if (strcmp(format, VR_EXPORT_FORMAT) != 0)
        return vr_export_invalid(error, dir, "format '%s' is not '%s'", format, VR_EXPORT_FORMAT);
    if (!vr_export_number(obj, "version", 0, G_MAXINT64, &version, dir, error))
        return false;
    if (version != VR_EXPORT_VERSION)
        return vr_export_invalid(error, dir, "version %" PRIu64 " is not supported (only %d)",
                                 version, VR_EXPORT_VERSION);
    if ((relationship =
             vr_export_string(obj, "relationship", VR_WIRE_RELATIONSHIP_MAX, dir, error)) == NULL ||
        !vr_export_wire_name("relationship", relationship, VR_WIRE_RELATIONSHIP_MAX, dir, error) ||
        !vr_export_number(obj, "epoch", 1, G_MAXINT64, &manifest->epoch, dir, error) ||
        !vr_export_number(obj, "cycle", 1, G_MAXINT64, &manifest->cycle, dir, error) ||
        !vr_export_number(obj, "base", 0, 0, &base, dir, error) ||
        !vr_export_number(obj, "flags", 0, G_MAXUINT32, &flags, dir, error) ||
        !vr_export_number(obj, "created", 0, G_MAXINT64, &created, dir, error) ||
        (primary = vr_export_string(obj, "primary", 255, dir, error)) == NULL)
        return false;
    /* An export is the first cycle of a relationship: a full copy of what is allocated. */
    if ((flags & ~(uint64_t)VR_WIRE_FLAG_APP_CONSISTENT) != VR_WIRE_FLAG_FULL)
        return vr_export_invalid(error, dir, "flags %" PRIu64 " are not those of a full copy",
                                 flags);
    for (const char *p = primary; *p != '\0'; p++) {
        if (g_ascii_iscntrl(*p) || *p == ' ')
            return vr_export_invalid(error, dir, "'primary' is not a certificate identity");
    }
    domain = vr_json_get_object(obj, "domain");
    if (domain == NULL)
        return vr_export_invalid(error, dir, "'domain' is missing or not an object");
    if (!vr_export_only(domain, domain_members, " in 'domain'", dir, error) ||
        (name = vr_export_string(domain, "name", 1024, dir, error)) == NULL ||
        (uuid = vr_export_string(domain, "uuid", 64, dir, error)) == NULL ||
        (xml = vr_export_string(domain, "xml", 1024 * 1024, dir, error)) == NULL)
        return false;
    disks = vr_json_get_array(obj, "disks");
    if (disks == NULL || json_object_array_length(disks) == 0)
        return vr_export_invalid(error, dir, "'disks' is missing or not a non-empty array");
    manifest->disks = g_array_new(FALSE, TRUE, sizeof(VrExportDisk));
    for (size_t i = 0; i < json_object_array_length(disks); i++) {
        if (!vr_export_parse_disk(json_object_array_get_idx(disks, i), manifest, dir, error))
            return false;
    }
    g_strlcpy(manifest->relationship, relationship, sizeof(manifest->relationship));
    manifest->flags = (uint32_t)flags;
    manifest->created = (int64_t)created;
    manifest->primary = g_strdup(primary);
    manifest->domain_name = g_strdup(name);
    manifest->domain_uuid = g_strdup(uuid);
    manifest->domain_xml = g_strdup(xml);
    return true;
}

VrExportManifest *
vr_export_manifest_read(int dir_fd, const char *dir, GError **error)
{
    g_autoptr(VrExportManifest) manifest = g_new0(VrExportManifest, 1);
    g_autoptr(json_object) obj = NULL;
    g_autofree char *text = NULL;
    json_tokener *tok;
    struct stat st;
    size_t got = 0;
    int fd = openat(dir_fd, VR_EXPORT_MANIFEST, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        int errsv = errno;

        if (errsv == ENOENT)
            vr_export_invalid(error, dir, "there is no %s: not an export, or not a complete one",
                              VR_EXPORT_MANIFEST);
        else
            vr_export_errno(error, errsv, "open the manifest of export", dir);
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > VR_EXPORT_MANIFEST_MAX) {
        close(fd);
        vr_export_invalid(error, dir, "%s is not a regular file of at most %d bytes",
                          VR_EXPORT_MANIFEST, VR_EXPORT_MANIFEST_MAX);
        return NULL;
    }
    text = g_malloc((gsize)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, text + got, (size_t)st.st_size - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int errsv = n < 0 ? errno : EIO;

            close(fd);
            vr_export_errno(error, errsv, "read the manifest of export", dir);
            return NULL;
        }
        got += (size_t)n;
    }
    close(fd);
    text[got] = '\0';
    /* One strict JSON document, a final newline at most after it. */
    tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    obj = json_tokener_parse_ex(tok, text, (int)got);
    if (obj != NULL && json_tokener_get_parse_end(tok) != got &&
        !(json_tokener_get_parse_end(tok) == got - 1 && text[got - 1] == '\n'))
        g_clear_pointer(&obj, json_object_put);
    json_tokener_free(tok);
    if (obj == NULL) {
        vr_export_invalid(error, dir, "it is not one JSON document");
        return NULL;
    }
    if (!vr_export_parse(obj, manifest, dir, error))
        return NULL;
    return g_steal_pointer(&manifest);
}
