/*
 * vr-replica-store.c: the recovery points of one replicated disk, on the replica
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>
#include <libnbd.h>

#include "vr-failpoint.h"
#include "vr-qemu-nbd.h"
#include "vr-qmp-json.h"
#include "vr-replica-store.h"

GQuark
vr_replica_store_error_quark(void)
{
    return g_quark_from_static_string("vr-replica-store-error-quark");
}

#define VR_REPLICA_MANIFEST         "manifest.json"
#define VR_REPLICA_MANIFEST_TMP     "manifest.json.tmp"
#define VR_REPLICA_MANIFEST_VERSION 1
#define VR_REPLICA_MANIFEST_MAX     (1024 * 1024) /* bytes; 24 points take 4 KiB */
/* Writes in flight: enough to keep qemu-nbd busy; the copies of DATA bound the memory. */
#define VR_REPLICA_DEPTH           16
#define VR_REPLICA_BYTES_IN_FLIGHT (64 * 1024 * 1024)
/* One write-zeroes request: NBD lengths are 32-bit; QEMU's 32 MiB cap is for payloads only. */
#define VR_REPLICA_ZERO_CHUNK ((uint64_t)1 << 30)
/* qcow2 holds virtual sizes in whole sectors (qemu-img create rounds up). */
#define VR_REPLICA_SECTOR        512
#define VR_REPLICA_START_TIMEOUT (30 * G_USEC_PER_SEC)
#define VR_REPLICA_STOP_TIMEOUT  (120 * G_USEC_PER_SEC) /* SIGTERM: qcow2 metadata is written */
#define VR_REPLICA_ABORT_TIMEOUT (10 * G_USEC_PER_SEC)
#define VR_REPLICA_KNOWN_FLAGS \
    (VR_WIRE_FLAG_FULL | VR_WIRE_FLAG_RESYNC | VR_WIRE_FLAG_APP_CONSISTENT)
#define VR_REPLICA_NO_BASE_FLAGS (VR_WIRE_FLAG_FULL | VR_WIRE_FLAG_RESYNC)

struct _VrReplicaStore {
    char *dir;             /* absolute */
    int dirfd;             /* holds the flock that makes this store the directory's only one */
    GArray *points;        /* VrReplicaPoint, oldest first: what manifest.json says */
    VrReplicaApply *apply; /* the running apply, or NULL */
    /* A merge the manifest records as begun ("merging"): the image of cycle merge_from (no
     * longer listed) is the backing of the oldest point, cycle merge_into. 0: none. */
    uint64_t merge_from;
    uint64_t merge_into;
    GArray *holds; /* uint64_t cycles held (vr_replica_store_hold()), one entry per hold */
};

struct _VrReplicaApply {
    VrReplicaStore *store;
    VrWireIdentity identity;
    char *image_name; /* "rp-<cycle>.qcow2" */
    char *image;      /* absolute */
    char *socket_name;
    char *socket;
    char *pid_name;
    char *pid_file;
    bool created;         /* the image is ours to remove */
    bool published;       /* the manifest names the image: never remove it */
    VrQemuNbd nbd_server; /* qemu-nbd, pid 0 when not running */
    struct nbd_handle *nbd;
    /* Requests in flight, counted from issue to libnbd's free callback. */
    guint in_flight;
    uint64_t bytes_in_flight;
    /* The first request that failed (its completion callback runs under libnbd's lock). */
    int request_errno;
    uint64_t request_offset;
    uint64_t request_length;
    bool request_zero;
    GError *failure; /* once set, every later call fails with it */
    bool wrote;      /* a record went out: the "after-write" failpoint is behind us */
    bool ended;      /* END came: @digest is the stream's */
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
    uint64_t records;
    uint64_t data_bytes;
    uint64_t zero_bytes;
    gint64 started; /* monotonic, for the debug summary */
};

/* ---- small helpers ---------------------------------------------------------------- */

static bool
vr_replica_errno_error(GError **error, int errsv, const char *what, const char *path)
{
    g_set_error(error, VR_REPLICA_STORE_ERROR,
                errsv == ENOSPC || errsv == EDQUOT ? VR_REPLICA_STORE_ERROR_NO_SPACE
                                                   : VR_REPLICA_STORE_ERROR_FAILED,
                "cannot %s '%s': %s", what, path, g_strerror(errsv));
    return false;
}

static bool vr_replica_corrupt(GError **error, VrReplicaStore *store, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static bool
vr_replica_corrupt(GError **error, VrReplicaStore *store, const char *format, ...)
{
    g_autofree char *what = NULL;
    va_list args;

    va_start(args, format);
    what = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CORRUPT,
                "manifest '%s/" VR_REPLICA_MANIFEST "': %s", store->dir, what);
    return false;
}

static char *
vr_replica_image_name(uint64_t cycle)
{
    return g_strdup_printf("rp-%" PRIu64 ".qcow2", cycle);
}

/*
 * True when @name is exactly @prefix, a cycle number in its canonical decimal form and
 * @suffix: only names this file could have made match.
 */
static bool
vr_replica_parse_name(const char *name, const char *prefix, const char *suffix, uint64_t *cycle)
{
    size_t plen = strlen(prefix);
    size_t slen = strlen(suffix);
    size_t len = strlen(name);
    g_autofree char *digits = NULL;
    g_autofree char *canonical = NULL;
    guint64 n;

    if (len <= plen + slen || strncmp(name, prefix, plen) != 0 ||
        strcmp(name + len - slen, suffix) != 0)
        return false;
    digits = g_strndup(name + plen, len - plen - slen);
    if (!g_ascii_string_to_unsigned(digits, 10, 1, G_MAXUINT64, &n, NULL))
        return false;
    canonical = g_strdup_printf("%" G_GUINT64_FORMAT, n);
    if (strcmp(canonical, digits) != 0)
        return false;
    *cycle = n;
    return true;
}

static bool
vr_replica_write_all(int fd, const char *buf, size_t len, const char *path, GError **error)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return vr_replica_errno_error(error, errno, "write", path);
        }
        buf += n;
        len -= n;
    }
    return true;
}

/* fsync the file @name of the store's directory (a directory too: "."). */
static bool
vr_replica_fsync_at(VrReplicaStore *store, const char *name, GError **error)
{
    g_autofree char *path = g_build_filename(store->dir, name, NULL);
    int fd = openat(store->dirfd, name, O_RDONLY | O_CLOEXEC);
    int errsv;

    if (fd < 0)
        return vr_replica_errno_error(error, errno, "open for sync", path);
    if (fsync(fd) < 0) {
        errsv = errno;
        close(fd);
        return vr_replica_errno_error(error, errsv, "sync", path);
    }
    close(fd);
    return true;
}

/* Remove @name from the store's directory; a missing file is no error. */
static bool
vr_replica_unlink(VrReplicaStore *store, const char *name, GError **error)
{
    if (unlinkat(store->dirfd, name, 0) < 0 && errno != ENOENT) {
        g_autofree char *path = g_build_filename(store->dir, name, NULL);

        return vr_replica_errno_error(error, errno, "remove", path);
    }
    return true;
}

static bool vr_replica_run_cancellable(const char *const *argv, const char *what,
                                       GCancellable *cancellable, GError **error);

/* Run @argv (qemu-img) to completion; its stderr becomes the error. */
static bool
vr_replica_run(const char *const *argv, const char *what, GError **error)
{
    return vr_replica_run_cancellable(argv, what, NULL, error);
}

/*
 * vr_replica_run() that @cancellable (NULL: none) stops: then the tool gets SIGKILL, is
 * reaped, and the error is G_IO_ERROR_CANCELLED. Its stderr is read while it runs, so that a
 * chatty tool never blocks on a full pipe. Any other early end of that read (a poll or read
 * error) kills the tool too before it is reaped: the wait never outlasts it.
 */
static bool
vr_replica_run_cancellable(const char *const *argv, const char *what, GCancellable *cancellable,
                           GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GString) err = g_string_new(NULL);
    g_autofree char *line = NULL;
    GPollFD fds[2];
    GPid pid = 0;
    int err_fd = -1;
    int status = 0;
    guint nfds = 1;
    bool cancelled = false;
    bool eof = false;

    if (g_cancellable_set_error_if_cancelled(cancellable, error))
        return false;
    if (!g_spawn_async_with_pipes(NULL, (char **)argv, NULL,
                                  G_SPAWN_SEARCH_PATH | G_SPAWN_STDIN_FROM_DEV_NULL |
                                      G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_DO_NOT_REAP_CHILD,
                                  vr_qemu_child_setup, GINT_TO_POINTER(getpid()), &pid, NULL, NULL,
                                  &err_fd, &local)) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot run '%s' to %s: %s", argv[0], what, local->message);
        return false;
    }
    fds[0] = (GPollFD){ .fd = err_fd, .events = G_IO_IN | G_IO_HUP | G_IO_ERR };
    /* Without a pollable cancellable (none, or no fd left), it is checked every 200 ms. */
    if (cancellable != NULL && g_cancellable_make_pollfd(cancellable, &fds[1]))
        nfds = 2;
    /* Until its stderr closes: it exited (or was killed). */
    for (;;) {
        char buf[4096];
        ssize_t got;

        if (g_poll(fds, cancelled ? 1 : nfds, nfds == 2 || cancellable == NULL ? -1 : 200) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (!cancelled && g_cancellable_is_cancelled(cancellable)) {
            cancelled = true;
            kill(pid, SIGKILL);
        }
        if (fds[0].revents == 0)
            continue;
        got = read(err_fd, buf, sizeof(buf));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            eof = got == 0;
            break;
        }
        /* The end is what names the failure: keep at most the last 64 KiB. */
        if (err->len > 65536)
            g_string_erase(err, 0, (gssize)(err->len - 32768));
        g_string_append_len(err, buf, got);
    }
    /* The read ended early (not at its end of file): the tool goes, else the wait hangs. */
    if (!eof && !cancelled)
        kill(pid, SIGKILL);
    if (nfds == 2)
        g_cancellable_release_fd(cancellable);
    close(err_fd);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    g_spawn_close_pid(pid);
    if (cancelled) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_CANCELLED, "'%s' was stopped to %s: cancelled",
                    argv[0], what);
        return false;
    }
    if (g_spawn_check_wait_status(status, &local))
        return true;
    line = vr_qemu_one_line(err->str);
    g_set_error(error, VR_REPLICA_STORE_ERROR,
                strstr(line, g_strerror(ENOSPC)) != NULL ? VR_REPLICA_STORE_ERROR_NO_SPACE
                                                         : VR_REPLICA_STORE_ERROR_FAILED,
                "'%s' failed to %s (%s): %s", argv[0], what, local->message, line);
    return false;
}

/* ---- the manifest ----------------------------------------------------------------- */

void
vr_replica_hex_encode(const uint8_t *bytes, size_t len, char *hex)
{
    for (size_t i = 0; i < len; i++)
        g_snprintf(hex + i * 2, 3, "%02x", bytes[i]);
    hex[len * 2] = '\0';
}

bool
vr_replica_hex_decode(const char *hex, size_t hex_len, uint8_t *bytes, size_t len)
{
    if (hex == NULL || hex_len != len * 2)
        return false;
    for (size_t i = 0; i < len; i++) {
        int hi = g_ascii_xdigit_value(hex[i * 2]);
        int lo = g_ascii_xdigit_value(hex[i * 2 + 1]);

        if (hi < 0 || lo < 0 || g_ascii_isupper(hex[i * 2]) || g_ascii_isupper(hex[i * 2 + 1]))
            return false;
        bytes[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

static void
vr_replica_add_hex(json_object *obj, const char *key, const uint8_t *bytes, size_t len)
{
    g_autofree char *hex = g_malloc(len * 2 + 1);

    vr_replica_hex_encode(bytes, len, hex);
    json_object_object_add(obj, key, json_object_new_string(hex));
}

/* Member @key of @obj: exactly @len bytes in lower-case hexadecimal. */
static bool
vr_replica_get_hex(json_object *obj, const char *key, uint8_t *bytes, size_t len)
{
    const char *hex = vr_json_get_string(obj, key);

    return hex != NULL && vr_replica_hex_decode(hex, strlen(hex), bytes, len);
}

void
vr_replica_point_chain(const uint8_t *base_chain, const uint8_t digest[VR_WIRE_DIGEST_SIZE],
                       uint8_t chain_out[VR_REPLICA_CHAIN_SIZE])
{
    static const uint8_t none[VR_REPLICA_CHAIN_SIZE];
    g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
    gsize len = VR_REPLICA_CHAIN_SIZE;

    g_checksum_update(sum, base_chain != NULL ? base_chain : none, VR_REPLICA_CHAIN_SIZE);
    g_checksum_update(sum, digest, VR_WIRE_DIGEST_SIZE);
    g_checksum_get_digest(sum, chain_out, &len);
}

static char *
vr_replica_manifest_text(const VrReplicaPoint *points, guint n_points, uint64_t merge_from,
                         uint64_t merge_into)
{
    g_autoptr(json_object) root = json_object_new_object();
    json_object *list = json_object_new_array();

    json_object_object_add(root, "version", json_object_new_int(VR_REPLICA_MANIFEST_VERSION));
    json_object_object_add(root, "points", list);
    if (merge_from != 0) {
        json_object *merging = json_object_new_object();

        json_object_object_add(merging, "from", json_object_new_uint64(merge_from));
        json_object_object_add(merging, "into", json_object_new_uint64(merge_into));
        json_object_object_add(root, "merging", merging);
    }
    for (guint i = 0; i < n_points; i++) {
        const VrReplicaPoint *p = &points[i];
        g_autofree char *image = vr_replica_image_name(p->cycle);
        json_object *obj = json_object_new_object();

        json_object_object_add(obj, "cycle", json_object_new_uint64(p->cycle));
        json_object_object_add(obj, "epoch", json_object_new_uint64(p->epoch));
        json_object_object_add(obj, "virtual_size", json_object_new_uint64(p->virtual_size));
        json_object_object_add(obj, "flags", json_object_new_uint64(p->flags));
        json_object_object_add(obj, "image", json_object_new_string(image));
        json_object_object_add(obj, "published", json_object_new_int64(p->published));
        vr_replica_add_hex(obj, "digest", p->digest, sizeof(p->digest));
        vr_replica_add_hex(obj, "chain", p->chain, sizeof(p->chain));
        json_object_array_add(list, obj);
    }
    return g_strconcat(json_object_to_json_string_ext(root, JSON_C_TO_STRING_PRETTY |
                                                                JSON_C_TO_STRING_SPACED |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE),
                       "\n", NULL);
}

/* Every member of @obj is one of @allowed; else CORRUPT naming the first other one. */
static bool
vr_replica_members_only(VrReplicaStore *store, json_object *obj, const char *const *allowed,
                        const char *where, GError **error)
{
    json_object_object_foreach (obj, key, value) {
        (void)value;
        if (!g_strv_contains(allowed, key))
            return vr_replica_corrupt(error, store, "%s has an unknown member '%s'", where, key);
    }
    return true;
}

static bool
vr_replica_manifest_point(VrReplicaStore *store, json_object *obj, guint index,
                          VrReplicaPoint *point, GError **error)
{
    static const char *const members[] = { "cycle",     "epoch",  "virtual_size", "flags", "image",
                                           "published", "digest", "chain",        NULL };
    g_autofree char *where = g_strdup_printf("point %u", index);
    g_autofree char *expected = NULL;
    const char *image;
    uint64_t flags;
    struct stat st;

    if (!json_object_is_type(obj, json_type_object))
        return vr_replica_corrupt(error, store, "%s is not an object", where);
    if (!vr_replica_members_only(store, obj, members, where, error))
        return false;
    if (!vr_json_get_uint64(obj, "cycle", &point->cycle) || point->cycle == 0)
        return vr_replica_corrupt(error, store, "%s has no cycle number above 0", where);
    g_free(where);
    where = g_strdup_printf("point %u (cycle %" PRIu64 ")", index, point->cycle);
    if (!vr_json_get_uint64(obj, "epoch", &point->epoch))
        return vr_replica_corrupt(error, store, "%s has no epoch", where);
    if (!vr_json_get_uint64(obj, "virtual_size", &point->virtual_size) ||
        point->virtual_size == 0 || point->virtual_size % VR_REPLICA_SECTOR != 0)
        return vr_replica_corrupt(error, store,
                                  "%s has no virtual size that is a positive multiple of %d", where,
                                  VR_REPLICA_SECTOR);
    if (!vr_json_get_uint64(obj, "flags", &flags) || (flags & ~(uint64_t)VR_REPLICA_KNOWN_FLAGS) ||
        (flags & VR_REPLICA_NO_BASE_FLAGS) == VR_REPLICA_NO_BASE_FLAGS)
        return vr_replica_corrupt(error, store, "%s has no valid flags", where);
    point->flags = flags;
    if (!vr_json_get_int64(obj, "published", &point->published))
        return vr_replica_corrupt(error, store, "%s has no publication time", where);
    if (!vr_replica_get_hex(obj, "digest", point->digest, sizeof(point->digest)) ||
        !vr_replica_get_hex(obj, "chain", point->chain, sizeof(point->chain)))
        return vr_replica_corrupt(
            error, store, "%s has no digest and chain of 64 lower-case hexadecimal digits", where);
    image = vr_json_get_string(obj, "image");
    expected = vr_replica_image_name(point->cycle);
    if (image == NULL || strcmp(image, expected) != 0)
        return vr_replica_corrupt(error, store, "%s names image '%s', not '%s'", where,
                                  image != NULL ? image : "", expected);
    if (fstatat(store->dirfd, image, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno == ENOENT)
            return vr_replica_corrupt(error, store, "%s names '%s', which is missing", where,
                                      image);
        return vr_replica_errno_error(error, errno, "look at", image);
    }
    if (!S_ISREG(st.st_mode))
        return vr_replica_corrupt(error, store, "%s names '%s', which is not a regular file", where,
                                  image);
    return true;
}

/* Parse @text strictly into @points: anything unexpected is CORRUPT, naming it. */
static bool
vr_replica_manifest_parse(VrReplicaStore *store, const char *text, size_t len, GArray *points,
                          GError **error)
{
    static const char *const members[] = { "version", "points", "merging", NULL };
    static const char *const merging_members[] = { "from", "into", NULL };
    json_object *merging;
    json_tokener *tok = json_tokener_new();
    g_autoptr(json_object) root = NULL;
    enum json_tokener_error jerr;
    json_object *list;
    int64_t version;
    size_t end;

    /* Trailing text is checked below, for a message that says so. */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS);
    root = json_tokener_parse_ex(tok, text, (int)len);
    jerr = json_tokener_get_error(tok);
    end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    if (root == NULL || jerr != json_tokener_success) {
        return vr_replica_corrupt(error, store, "not JSON: %s",
                                  jerr == json_tokener_continue ? "the text ends too soon"
                                                                : json_tokener_error_desc(jerr));
    }
    for (; end < len; end++) {
        if (!g_ascii_isspace(text[end]))
            return vr_replica_corrupt(error, store, "text after the JSON object");
    }
    if (!json_object_is_type(root, json_type_object))
        return vr_replica_corrupt(error, store, "not a JSON object");
    if (!vr_replica_members_only(store, root, members, "the manifest", error))
        return false;
    if (!vr_json_get_int64(root, "version", &version))
        return vr_replica_corrupt(error, store, "no version");
    if (version != VR_REPLICA_MANIFEST_VERSION)
        return vr_replica_corrupt(error, store, "version %" PRId64 " is not supported (only %d)",
                                  version, VR_REPLICA_MANIFEST_VERSION);
    list = vr_json_get_array(root, "points");
    if (list == NULL)
        return vr_replica_corrupt(error, store, "no array of points");
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        VrReplicaPoint point = { 0 };
        const VrReplicaPoint *prev =
            points->len > 0 ? &g_array_index(points, VrReplicaPoint, points->len - 1) : NULL;

        if (!vr_replica_manifest_point(store, json_object_array_get_idx(list, i), (guint)i, &point,
                                       error))
            return false;
        if (prev != NULL && point.cycle == prev->cycle)
            return vr_replica_corrupt(error, store, "cycle %" PRIu64 " is listed twice",
                                      point.cycle);
        if (prev != NULL && point.cycle < prev->cycle)
            return vr_replica_corrupt(error, store,
                                      "cycle %" PRIu64 " follows cycle %" PRIu64
                                      ": the points are not oldest first",
                                      point.cycle, prev->cycle);
        if (prev != NULL && point.epoch < prev->epoch)
            return vr_replica_corrupt(error, store,
                                      "cycle %" PRIu64 " has epoch %" PRIu64
                                      ", below epoch %" PRIu64 " of cycle %" PRIu64,
                                      point.cycle, point.epoch, prev->epoch, prev->cycle);
        g_array_append_val(points, point);
    }
    /* A merge begun: point "into" is still an overlay of the unlisted image of "from". */
    if (json_object_object_get_ex(root, "merging", &merging)) {
        uint64_t from = 0;
        uint64_t into = 0;
        guint index;

        if (!json_object_is_type(merging, json_type_object))
            return vr_replica_corrupt(error, store, "merging is not an object");
        if (!vr_replica_members_only(store, merging, merging_members, "merging", error))
            return false;
        if (!vr_json_get_uint64(merging, "from", &from) ||
            !vr_json_get_uint64(merging, "into", &into) || from == 0 || into <= from)
            return vr_replica_corrupt(error, store,
                                      "merging needs a cycle 'from' above 0 and 'into' above it");
        for (index = 0; index < points->len; index++) {
            if (g_array_index(points, VrReplicaPoint, index).cycle == into)
                break;
        }
        if (index == points->len)
            return vr_replica_corrupt(error, store,
                                      "merging into cycle %" PRIu64 ", which is not listed", into);
        if (index > 0 && g_array_index(points, VrReplicaPoint, index - 1).cycle >= from)
            return vr_replica_corrupt(error, store,
                                      "merging cycle %" PRIu64
                                      ", which is not between cycle %" PRIu64 " and cycle %" PRIu64,
                                      from, g_array_index(points, VrReplicaPoint, index - 1).cycle,
                                      into);
        store->merge_from = from;
        store->merge_into = into;
    }
    return true;
}

/* Read manifest.json into the store's points; none is an empty store. */
static bool
vr_replica_store_load(VrReplicaStore *store, GError **error)
{
    g_autofree char *path = g_build_filename(store->dir, VR_REPLICA_MANIFEST, NULL);
    g_autofree char *text = NULL;
    struct stat st;
    size_t done = 0;
    int fd;
    bool ok;

    fd = openat(store->dirfd, VR_REPLICA_MANIFEST, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return true;
        return vr_replica_errno_error(error, errno, "open", path);
    }
    if (fstat(fd, &st) < 0) {
        int errsv = errno;

        close(fd);
        return vr_replica_errno_error(error, errsv, "look at", path);
    }
    if (!S_ISREG(st.st_mode) || st.st_size > VR_REPLICA_MANIFEST_MAX) {
        close(fd);
        return vr_replica_corrupt(error, store, "not a regular file of at most %d bytes",
                                  VR_REPLICA_MANIFEST_MAX);
    }
    text = g_malloc(st.st_size + 1);
    while (done < (size_t)st.st_size) {
        ssize_t n = read(fd, text + done, st.st_size - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int errsv = n < 0 ? errno : EIO;

            close(fd);
            return vr_replica_errno_error(error, errsv, "read", path);
        }
        done += n;
    }
    close(fd);
    text[done] = '\0';
    ok = vr_replica_manifest_parse(store, text, done, store->points, error);
    if (!ok) {
        g_array_set_size(store->points, 0);
        store->merge_from = store->merge_into = 0;
    }
    return ok;
}

/*
 * Make @points (and the merge @merge_from into @merge_into, when not 0) the store's
 * manifest: manifest.json.tmp, fsync, failpoint @fp_tmp, rename over manifest.json (the
 * commit point), failpoint @fp_rename, fsync the directory. From the rename on the store
 * holds the new state (*@renamed), even when the directory sync then fails.
 */
static bool
vr_replica_store_write_manifest(VrReplicaStore *store, GArray *points, uint64_t merge_from,
                                uint64_t merge_into, const char *fp_tmp, const char *fp_rename,
                                bool *renamed, GError **error)
{
    g_autofree char *tmp_path = g_build_filename(store->dir, VR_REPLICA_MANIFEST_TMP, NULL);
    g_autofree char *path = g_build_filename(store->dir, VR_REPLICA_MANIFEST, NULL);
    g_autofree char *text = NULL;
    int fd;

    *renamed = false;
    text = vr_replica_manifest_text((const VrReplicaPoint *)points->data, points->len, merge_from,
                                    merge_into);
    fd = openat(store->dirfd, VR_REPLICA_MANIFEST_TMP,
                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return vr_replica_errno_error(error, errno, "create", tmp_path);
    if (!vr_replica_write_all(fd, text, strlen(text), tmp_path, error) ||
        (fsync(fd) < 0 && !vr_replica_errno_error(error, errno, "sync", tmp_path))) {
        close(fd);
        vr_replica_unlink(store, VR_REPLICA_MANIFEST_TMP, NULL);
        return false;
    }
    if (close(fd) < 0) {
        vr_replica_errno_error(error, errno, "close", tmp_path);
        vr_replica_unlink(store, VR_REPLICA_MANIFEST_TMP, NULL);
        return false;
    }
    g_clear_pointer(&text, g_free); /* a failpoint's _exit() must not leak it */
    vr_failpoint(fp_tmp);
    if (renameat(store->dirfd, VR_REPLICA_MANIFEST_TMP, store->dirfd, VR_REPLICA_MANIFEST) < 0) {
        vr_replica_errno_error(error, errno, "rename over", path);
        vr_replica_unlink(store, VR_REPLICA_MANIFEST_TMP, NULL);
        return false;
    }
    *renamed = true;
    g_array_set_size(store->points, 0);
    g_array_append_vals(store->points, points->data, points->len);
    store->merge_from = merge_from;
    store->merge_into = merge_into;
    vr_failpoint(fp_rename);
    return vr_replica_fsync_at(store, ".", error);
}

/*
 * Publish @point after the store's points (a merge in progress stays recorded). Once the
 * rename is done the point is the store's (the manifest names it), even when the directory
 * sync then fails.
 */
static bool
vr_replica_store_publish(VrReplicaStore *store, const VrReplicaPoint *point, bool *renamed,
                         GError **error)
{
    g_autoptr(GArray) points = g_array_copy(store->points);

    g_array_append_val(points, *point);
    if (!vr_replica_store_write_manifest(store, points, store->merge_from, store->merge_into,
                                         "after-manifest-tmp", "after-rename", renamed, error)) {
        if (*renamed) {
            g_prefix_error(error,
                           "cycle %" PRIu64 " is in the manifest, but its rename may not be "
                           "durable: ",
                           point->cycle);
        }
        return false;
    }
    return true;
}

/* ---- opening ---------------------------------------------------------------------- */

static const VrReplicaPoint *
vr_replica_store_find(VrReplicaStore *store, uint64_t cycle)
{
    for (guint i = 0; i < store->points->len; i++) {
        const VrReplicaPoint *p = &g_array_index(store->points, VrReplicaPoint, i);

        if (p->cycle == cycle)
            return p;
    }
    return NULL;
}

static const VrReplicaPoint *
vr_replica_store_latest(VrReplicaStore *store)
{
    if (store->points->len == 0)
        return NULL;
    return &g_array_index(store->points, VrReplicaPoint, store->points->len - 1);
}

/* The state letter of /proc/<pid>/stat ('Z' for a zombie), or 0 when the process is gone. */
static char
vr_replica_proc_state(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *text = NULL;
    const char *paren;

    if (!g_file_get_contents(path, &text, NULL, NULL))
        return 0;
    /* "pid (comm) S ...": comm may hold anything, so look after the last ')'. */
    paren = strrchr(text, ')');
    return paren != NULL && paren[1] == ' ' ? paren[2] : 0;
}

/*
 * A qemu-nbd of an apply whose owner died before it could stop it (its parent-death signal
 * normally kills it; this covers the rest): kill it when the pid file @pid_name still names
 * a live qemu-nbd serving this store's socket @socket_name. Never another process.
 */
static void
vr_replica_store_kill_orphan(VrReplicaStore *store, const char *pid_name, const char *socket_name)
{
    g_autofree char *pid_path = g_build_filename(store->dir, pid_name, NULL);
    g_autofree char *socket_arg = g_strdup_printf("--socket=%s/%s", store->dir, socket_name);
    g_autofree char *text = NULL;
    g_autofree char *cmdline_path = NULL;
    g_autofree char *cmdline = NULL;
    g_autofree char *argv0 = NULL;
    bool ours = false;
    size_t len = 0;
    guint64 pid;
    gint64 deadline;

    if (!g_file_get_contents(pid_path, &text, NULL, NULL) ||
        !g_ascii_string_to_unsigned(g_strstrip(text), 10, 2, G_MAXINT, &pid, NULL))
        return;
    cmdline_path = g_strdup_printf("/proc/%d/cmdline", (int)pid);
    if (!g_file_get_contents(cmdline_path, &cmdline, &len, NULL) || len == 0)
        return;
    argv0 = g_path_get_basename(cmdline);
    for (size_t at = 0; at < len; at += strlen(cmdline + at) + 1) {
        if (strcmp(cmdline + at, socket_arg) == 0)
            ours = true;
    }
    if (!ours || strcmp(argv0, "qemu-nbd") != 0)
        return;
    g_debug("killing qemu-nbd %d left behind on '%s'", (int)pid, socket_arg + 9);
    kill((pid_t)pid, SIGKILL);
    /* Not our child: wait until it is gone or a zombie (its image is removed next). */
    deadline = g_get_monotonic_time() + VR_REPLICA_ABORT_TIMEOUT;
    while (g_get_monotonic_time() < deadline) {
        char state = vr_replica_proc_state((pid_t)pid);

        if (state == 0 || state == 'Z' || state == 'X')
            break;
        g_usleep(5000);
    }
}

/*
 * Remove what no published point names: images of interrupted applies, manifest.json.tmp,
 * the sockets and pid files of their qemu-nbd. Nothing else, whatever its name.
 */
static bool
vr_replica_store_sweep(VrReplicaStore *store, GError **error)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    struct dirent *entry;
    DIR *dir;
    int fd;

    fd = openat(store->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (dir = fdopendir(fd)) == NULL) {
        int errsv = errno;

        if (fd >= 0)
            close(fd);
        return vr_replica_errno_error(error, errsv, "list", store->dir);
    }
    while ((entry = readdir(dir)) != NULL)
        g_ptr_array_add(names, g_strdup(entry->d_name));
    closedir(dir);

    /* First the servers, so that none writes on while its files go. */
    for (guint i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        g_autofree char *socket_name = NULL;
        uint64_t cycle;

        if (!vr_replica_parse_name(name, ".apply-", ".pid", &cycle))
            continue;
        socket_name = g_strdup_printf(".apply-%" PRIu64 ".sock", cycle);
        vr_replica_store_kill_orphan(store, name, socket_name);
    }
    for (guint i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        uint64_t cycle;
        bool remove = false;

        if (strcmp(name, VR_REPLICA_MANIFEST_TMP) == 0)
            remove = true;
        else if (vr_replica_parse_name(name, "rp-", ".qcow2", &cycle))
            remove = vr_replica_store_find(store, cycle) == NULL && cycle != store->merge_from;
        else if (vr_replica_parse_name(name, ".apply-", ".sock", &cycle) ||
                 vr_replica_parse_name(name, ".apply-", ".pid", &cycle))
            remove = true;
        if (!remove)
            continue;
        g_debug("removing '%s/%s': no published point names it", store->dir, name);
        if (!vr_replica_unlink(store, name, error))
            return false;
    }
    return true;
}

/* ---- retention -------------------------------------------------------------------- */

/*
 * Steps 2-4 of a merge: commit the overlay rp-<into> into rp-<from>, give that the size of
 * @into, fsync it. Owns no memory when it returns (a failpoint follows).
 */
static bool
vr_replica_store_commit_into(VrReplicaStore *store, uint64_t from, const VrReplicaPoint *into,
                             GError **error)
{
    g_autofree char *from_name = vr_replica_image_name(from);
    g_autofree char *into_name = vr_replica_image_name(into->cycle);
    g_autofree char *from_path = g_build_filename(store->dir, from_name, NULL);
    g_autofree char *into_path = g_build_filename(store->dir, into_name, NULL);
    g_autofree char *size_arg = g_strdup_printf("%" PRIu64, into->virtual_size);
    g_autofree char *what = g_strdup_printf("commit '%s' into '%s'", into_name, from_name);
    g_autofree char *what_size =
        g_strdup_printf("resize '%s' to %" PRIu64 " bytes", from_name, into->virtual_size);
    /* -d: the overlay is not emptied; it stays a published image nobody writes. */
    const char *commit[] = { "qemu-img", "commit", "-q", "-d", "-f", "qcow2", into_path, NULL };
    /* The commit grows the base to the overlay's size, but never shrinks it. */
    const char *resize[] = { "qemu-img", "resize",  "-q",     "-f", "qcow2",
                             "--shrink", from_path, size_arg, NULL };

    return vr_replica_run(commit, what, error) && vr_replica_run(resize, what_size, error) &&
           vr_replica_fsync_at(store, from_name, error);
}

/*
 * Finish the merge the manifest records: cycle merge_from's image (no longer listed) takes
 * the contents of cycle merge_into's overlay and then its name. Redone from the start after
 * a crash: while rp-<from> exists the overlay rp-<into> is untouched (commit -d), so a
 * commit again writes the same clusters; once rp-<from> is gone the rename was done.
 * Nothing is allocated across a failpoint (a crash test's _exit() would leak it).
 */
static bool
vr_replica_store_merge_steps(VrReplicaStore *store, GError **error)
{
    uint64_t from = store->merge_from;
    const VrReplicaPoint into = *vr_replica_store_find(store, store->merge_into);
    char from_name[64];
    char into_name[64];
    GArray *points;
    bool renamed = false;
    bool ok;
    struct stat st;

    g_assert(from != 0 && into.cycle == store->merge_into);
    g_snprintf(from_name, sizeof(from_name), "rp-%" PRIu64 ".qcow2", from);
    g_snprintf(into_name, sizeof(into_name), "rp-%" PRIu64 ".qcow2", into.cycle);
    if (fstatat(store->dirfd, from_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (!S_ISREG(st.st_mode)) {
            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CORRUPT,
                        "'%s/%s' is not a regular file", store->dir, from_name);
            return false;
        }
        if (!vr_replica_store_commit_into(store, from, &into, error))
            return false;
        vr_failpoint("retain-commit");
        /* Atomic: the name rp-<into> reads as cycle <into> before and after. */
        if (renameat(store->dirfd, from_name, store->dirfd, into_name) < 0) {
            g_autofree char *into_path = g_build_filename(store->dir, into_name, NULL);

            return vr_replica_errno_error(error, errno, "rename over", into_path);
        }
        if (!vr_replica_fsync_at(store, ".", error))
            return false;
        vr_failpoint("retain-swap");
    } else if (errno != ENOENT) {
        g_autofree char *from_path = g_build_filename(store->dir, from_name, NULL);

        return vr_replica_errno_error(error, errno, "look at", from_path);
    }
    points = g_array_copy(store->points);
    ok = vr_replica_store_write_manifest(store, points, 0, 0, "retain-done-tmp", "retain-done",
                                         &renamed, error);
    g_array_unref(points);
    if (!ok)
        return false;
    g_debug("merged cycle %" PRIu64 " into cycle %" PRIu64 " in '%s'", from, into.cycle,
            store->dir);
    return true;
}

static bool
vr_replica_store_finish_merge(VrReplicaStore *store, GError **error)
{
    uint64_t from = store->merge_from;
    uint64_t into = store->merge_into;

    if (!vr_replica_store_merge_steps(store, error)) {
        g_prefix_error(error,
                       "cannot merge cycle %" PRIu64 " into cycle %" PRIu64 " of '%s': ", from,
                       into, store->dir);
        return false;
    }
    return true;
}

/*
 * From the qcow2 header of image @name: whether it has a backing file (is an overlay), and
 * its virtual size (either may be NULL). Only qemu-img create and convert write headers
 * here (a published image is never written again, and a merged image keeps the backing of
 * the image it was).
 */
static bool
vr_replica_image_header(VrReplicaStore *store, const char *name, bool *has_backing,
                        uint64_t *virtual_size, GError **error)
{
    uint8_t header[32];
    ssize_t got;
    int fd;

    fd = openat(store->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return vr_replica_errno_error(error, errno, "open", name);
    got = pread(fd, header, sizeof(header), 0);
    if (got < 0) {
        int errsv = errno;

        close(fd);
        return vr_replica_errno_error(error, errsv, "read the header of", name);
    }
    close(fd);
    /* "QFI\xfb", the version, the big-endian offset of the backing file name, its length,
     * the cluster bits, then the virtual size. */
    if (got != (ssize_t)sizeof(header) || memcmp(header, "QFI\xfb", 4) != 0) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CORRUPT,
                    "'%s/%s' is not a qcow2 image", store->dir, name);
        return false;
    }
    if (has_backing != NULL)
        *has_backing = memcmp(header + 8, "\0\0\0\0\0\0\0\0", 8) != 0;
    if (virtual_size != NULL) {
        uint64_t be;

        memcpy(&be, header + 24, sizeof(be));
        *virtual_size = GUINT64_FROM_BE(be);
    }
    return true;
}

/*
 * Remove listed point @cycle, which is not the latest. When the next point's image is an
 * image of its own, @cycle backs nothing and just goes; otherwise the next point is its
 * overlay, and the two are merged (docs: Retention).
 */
static bool
vr_replica_store_remove_point(VrReplicaStore *store, uint64_t cycle, GError **error)
{
    g_autoptr(GArray) points = g_array_copy(store->points);
    VrReplicaPoint next;
    bool renamed = false;
    bool next_overlays;
    char name[64];
    guint index;

    for (index = 0; g_array_index(points, VrReplicaPoint, index).cycle != cycle; index++)
        ;
    g_assert(index + 1 < points->len);
    next = g_array_index(points, VrReplicaPoint, index + 1);
    g_snprintf(name, sizeof(name), "rp-%" PRIu64 ".qcow2", next.cycle);
    if (!vr_replica_image_header(store, name, &next_overlays, NULL, error))
        return false;
    g_snprintf(name, sizeof(name), "rp-%" PRIu64 ".qcow2", cycle);
    g_array_remove_index(points, index);
    if (!next_overlays) {
        if (!vr_replica_store_write_manifest(store, points, 0, 0, "retain-drop-tmp", "retain-drop",
                                             &renamed, error) ||
            !vr_replica_unlink(store, name, error) || !vr_replica_fsync_at(store, ".", error)) {
            g_prefix_error(error, "cannot remove cycle %" PRIu64 " of '%s': ", cycle, store->dir);
            return false;
        }
        g_debug("removed cycle %" PRIu64 " of '%s'", cycle, store->dir);
        return true;
    }
    /* The point is unlisted before its image is written: the commit point. */
    if (!vr_replica_store_write_manifest(store, points, cycle, next.cycle, "retain-intent-tmp",
                                         "retain-intent", &renamed, error)) {
        g_prefix_error(error,
                       "cannot merge cycle %" PRIu64 " into cycle %" PRIu64 " of '%s': ", cycle,
                       next.cycle, store->dir);
        return false;
    }
    return vr_replica_store_finish_merge(store, error);
}

/* The retention slot of point @i: its interval of publication time, or its own. */
static int64_t
vr_replica_retention_slot(const VrReplicaPoint *points, guint i, guint interval_s)
{
    return interval_s != 0 ? MAX(points[i].published, 0) / interval_s : (int64_t)i;
}

void
vr_replica_retention_select(const VrReplicaPoint *points, guint n_points, guint keep,
                            guint interval_s, bool *remove)
{
    guint last = n_points - 1;
    int64_t latest_slot;
    guint kept = 0;

    memset(remove, 0, n_points * sizeof(*remove));
    if (n_points < 2)
        return;
    latest_slot = vr_replica_retention_slot(points, last, interval_s);
    /* Each older point stays only if it stands for its slot. */
    for (guint i = 0; i < last; i++) {
        int64_t slot = vr_replica_retention_slot(points, i, interval_s);
        guint newest = i;
        guint consistent = G_MAXUINT;

        for (guint j = 0; j < last; j++) {
            if (vr_replica_retention_slot(points, j, interval_s) != slot)
                continue;
            newest = j;
            if (points[j].flags & VR_WIRE_FLAG_APP_CONSISTENT)
                consistent = j;
        }
        if (slot >= latest_slot) {
            /* The latest point stands for its slot, and so does the newest application-
             * consistent point of that slot when the latest is not one. */
            remove[i] = i != consistent || (points[last].flags & VR_WIRE_FLAG_APP_CONSISTENT);
        } else {
            remove[i] = i != (consistent != G_MAXUINT ? consistent : newest);
        }
    }
    /* Then the newest @keep of them. */
    for (guint i = last; i-- > 0;) {
        if (remove[i])
            continue;
        if (kept < keep)
            kept++;
        else
            remove[i] = true;
    }
}

/*
 * The index of the oldest point of the chain of point @index: the nearest point at or before
 * it that is an image of its own (the oldest listed point always is one).
 */
static bool
vr_replica_store_chain_start(VrReplicaStore *store, guint index, guint *start, GError **error)
{
    guint i = index;

    while (i > 0) {
        char name[64];
        bool has_backing;

        g_snprintf(name, sizeof(name), "rp-%" PRIu64 ".qcow2",
                   g_array_index(store->points, VrReplicaPoint, i).cycle);
        if (!vr_replica_image_header(store, name, &has_backing, NULL, error))
            return false;
        if (!has_backing)
            break;
        i--;
    }
    *start = i;
    return true;
}

/*
 * Keep every point a hold needs: the held point and the points its image is based on (its
 * chain down to an image of its own), since a running domain reads them through its overlay.
 * Removing one of them would write or rename an image that domain has open.
 */
static bool
vr_replica_store_unselect_held(VrReplicaStore *store, bool *remove, GError **error)
{
    for (guint h = 0; h < store->holds->len; h++) {
        uint64_t cycle = g_array_index(store->holds, uint64_t, h);

        for (guint i = 0; i < store->points->len; i++) {
            guint start;

            if (g_array_index(store->points, VrReplicaPoint, i).cycle != cycle)
                continue;
            if (!vr_replica_store_chain_start(store, i, &start, error))
                return false;
            for (guint j = start; j <= i; j++)
                remove[j] = false;
            break;
        }
    }
    return true;
}

bool
vr_replica_store_retain_spaced(VrReplicaStore *store, guint keep, guint interval_s, GError **error)
{
    if (keep > VR_REPLICA_STORE_KEEP_MAX) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot keep %u additional points in '%s': at most %d", keep, store->dir,
                    VR_REPLICA_STORE_KEEP_MAX);
        return false;
    }
    if (store->apply != NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY,
                    "cannot merge points of '%s': cycle %" PRIu64 " is being applied", store->dir,
                    store->apply->identity.target_cycle);
        return false;
    }
    if (store->merge_from != 0 && !vr_replica_store_finish_merge(store, error))
        return false;
    /* One point at a time, oldest first; the selection is made again after each. */
    for (;;) {
        guint n = store->points->len;
        g_autofree bool *remove = g_new0(bool, MAX(n, 1));
        guint i;

        vr_replica_retention_select((const VrReplicaPoint *)store->points->data, n, keep,
                                    interval_s, remove);
        if (!vr_replica_store_unselect_held(store, remove, error))
            return false;
        for (i = 0; i < n && !remove[i]; i++)
            ;
        if (i == n)
            return true;
        if (!vr_replica_store_remove_point(
                store, g_array_index(store->points, VrReplicaPoint, i).cycle, error))
            return false;
    }
}

bool
vr_replica_store_retain(VrReplicaStore *store, guint keep, GError **error)
{
    return vr_replica_store_retain_spaced(store, keep, 0, error);
}

VrReplicaStore *
vr_replica_store_open(const char *dir, GError **error)
{
    g_autoptr(VrReplicaStore) store = g_new0(VrReplicaStore, 1);

    store->dirfd = -1;
    store->points = g_array_new(FALSE, FALSE, sizeof(VrReplicaPoint));
    store->holds = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    /* Absolute: qemu-img and qemu-nbd take it, and a ':' before the first '/' would make it
     * a protocol for QEMU. */
    if (g_path_is_absolute(dir)) {
        store->dir = g_canonicalize_filename(dir, NULL);
    } else {
        g_autofree char *cwd = g_get_current_dir();

        store->dir = g_canonicalize_filename(dir, cwd);
    }
    store->dirfd = open(store->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (store->dirfd < 0) {
        vr_replica_errno_error(error, errno, "open the store directory", store->dir);
        return NULL;
    }
    if (flock(store->dirfd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK) {
            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY,
                        "store '%s' is open in another store object or process", store->dir);
        } else {
            vr_replica_errno_error(error, errno, "lock the store directory", store->dir);
        }
        return NULL;
    }
    /* Only a manifest that parsed says what to keep: a corrupt one removes nothing. */
    if (!vr_replica_store_load(store, error))
        return NULL;
    /* A merge a crash interrupted: its commit is redone, never undone (see retain). */
    if (store->merge_from != 0 && !vr_replica_store_finish_merge(store, error))
        return NULL;
    if (!vr_replica_store_sweep(store, error))
        return NULL;
    g_debug("opened store '%s' with %u points", store->dir, store->points->len);
    return g_steal_pointer(&store);
}

void
vr_replica_store_free(VrReplicaStore *store)
{
    if (store == NULL)
        return;
    /* An apply points to its store: end it first (a programming error otherwise). */
    g_assert(store->apply == NULL);
    if (store->dirfd >= 0)
        close(store->dirfd);
    g_array_unref(store->points);
    g_array_unref(store->holds);
    g_free(store->dir);
    g_free(store);
}

bool
vr_replica_store_hold(VrReplicaStore *store, uint64_t cycle, GError **error)
{
    if (vr_replica_store_find(store, cycle) == NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "store '%s' holds no point of cycle %" PRIu64, store->dir, cycle);
        return false;
    }
    g_array_append_val(store->holds, cycle);
    return true;
}

void
vr_replica_store_release(VrReplicaStore *store, uint64_t cycle)
{
    for (guint i = 0; i < store->holds->len; i++) {
        if (g_array_index(store->holds, uint64_t, i) == cycle) {
            g_array_remove_index(store->holds, i);
            return;
        }
    }
}

bool
vr_replica_store_chain(VrReplicaStore *store, uint64_t cycle, uint64_t *first_out, GError **error)
{
    guint start;

    for (guint i = 0; i < store->points->len; i++) {
        if (g_array_index(store->points, VrReplicaPoint, i).cycle != cycle)
            continue;
        if (!vr_replica_store_chain_start(store, i, &start, error))
            return false;
        *first_out = g_array_index(store->points, VrReplicaPoint, start).cycle;
        return true;
    }
    g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                "store '%s' holds no point of cycle %" PRIu64, store->dir, cycle);
    return false;
}

bool
vr_replica_store_keep_chain(VrReplicaStore *store, uint64_t cycle, GError **error)
{
    g_autoptr(GArray) points = NULL;
    g_autoptr(GArray) gone = g_array_new(FALSE, FALSE, sizeof(uint64_t));
    uint64_t first;
    bool renamed = false;

    if (store->apply != NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY,
                    "cannot discard points of '%s': cycle %" PRIu64 " is being applied", store->dir,
                    store->apply->identity.target_cycle);
        return false;
    }
    if (store->merge_from != 0 && !vr_replica_store_finish_merge(store, error))
        return false;
    if (!vr_replica_store_chain(store, cycle, &first, error))
        return false;
    points = g_array_new(FALSE, FALSE, sizeof(VrReplicaPoint));
    for (guint i = 0; i < store->points->len; i++) {
        const VrReplicaPoint *p = &g_array_index(store->points, VrReplicaPoint, i);

        if (p->cycle >= first && p->cycle <= cycle)
            g_array_append_val(points, *p);
        else
            g_array_append_val(gone, p->cycle);
    }
    if (gone->len == 0)
        return true;
    /* Unlisted first (the commit point); an image left by a crash is swept at the next open. */
    if (!vr_replica_store_write_manifest(store, points, 0, 0, "discard-tmp", "discard", &renamed,
                                         error)) {
        g_prefix_error(error, "cannot discard the points of '%s' but cycle %" PRIu64 ": ",
                       store->dir, cycle);
        return false;
    }
    for (guint i = 0; i < gone->len; i++) {
        g_autofree char *name = vr_replica_image_name(g_array_index(gone, uint64_t, i));

        if (!vr_replica_unlink(store, name, error))
            return false;
    }
    if (!vr_replica_fsync_at(store, ".", error))
        return false;
    g_debug("discarded %u points of '%s': cycle %" PRIu64 " and its chain stay", gone->len,
            store->dir, cycle);
    return true;
}

const VrReplicaPoint *
vr_replica_store_points(VrReplicaStore *store, guint *n_points)
{
    *n_points = store->points->len;
    return (const VrReplicaPoint *)store->points->data;
}

char *
vr_replica_store_image_path(VrReplicaStore *store, uint64_t cycle)
{
    g_autofree char *name = NULL;

    if (vr_replica_store_find(store, cycle) == NULL)
        return NULL;
    name = vr_replica_image_name(cycle);
    return g_build_filename(store->dir, name, NULL);
}

char *
vr_replica_store_latest_image(VrReplicaStore *store, VrReplicaPoint *point, GError **error)
{
    const VrReplicaPoint *latest = vr_replica_store_latest(store);

    if (store->apply != NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY,
                    "cannot read the latest point of '%s': cycle %" PRIu64 " is being applied",
                    store->dir, store->apply->identity.target_cycle);
        return NULL;
    }
    if (latest == NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "store '%s' holds no point", store->dir);
        return NULL;
    }
    *point = *latest;
    return vr_replica_store_image_path(store, latest->cycle);
}

bool
vr_replica_store_check(VrReplicaStore *store, uint64_t epoch, uint64_t base_cycle,
                       uint64_t target_cycle, GError **error)
{
    const VrReplicaPoint *latest = vr_replica_store_latest(store);

    if (latest != NULL && epoch < latest->epoch) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "cycle %" PRIu64 " has stale epoch %" PRIu64
                    ": the latest point, cycle %" PRIu64 ", has epoch %" PRIu64,
                    target_cycle, epoch, latest->cycle, latest->epoch);
        return false;
    }
    if (latest != NULL && target_cycle <= latest->cycle) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    vr_replica_store_find(store, target_cycle) != NULL
                        ? "cycle %" PRIu64
                          " is already published (the latest point is cycle %" PRIu64 ")"
                        : "cycle %" PRIu64 " is not after the latest point, cycle %" PRIu64,
                    target_cycle, latest->cycle);
        return false;
    }
    if (base_cycle != 0 && latest == NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "cycle %" PRIu64 " needs base cycle %" PRIu64 ", but the store holds no point",
                    target_cycle, base_cycle);
        return false;
    }
    if (base_cycle != 0 && base_cycle != latest->cycle) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "cycle %" PRIu64 " needs base cycle %" PRIu64
                    ", but the latest point is cycle %" PRIu64,
                    target_cycle, base_cycle, latest->cycle);
        return false;
    }
    return true;
}

/* ---- qemu-nbd --------------------------------------------------------------------- */

/*
 * Stop qemu-nbd with @signum and reap it: with SIGTERM it closes the image cleanly, qcow2
 * metadata written. Its socket and pid file go too. @error may be NULL (abort).
 */
static bool
vr_replica_nbd_stop(VrReplicaApply *apply, int signum, gint64 timeout, GError **error)
{
    VrReplicaStore *store = apply->store;
    bool ok;

    if (apply->nbd_server.pid == 0)
        return true;
    ok = vr_qemu_nbd_stop(&apply->nbd_server, apply->image_name, signum, timeout, error);
    /* qemu-nbd removes its socket on a clean exit but never its pid file. */
    if (!vr_replica_unlink(store, apply->socket_name, ok ? error : NULL))
        ok = false;
    if (!vr_replica_unlink(store, apply->pid_name, ok ? error : NULL))
        ok = false;
    return ok;
}

/*
 * Export the new image writable on the store's socket, and wait until qemu-nbd writes its
 * pid file: it does so only once it listens and the export exists.
 */
static bool
vr_replica_nbd_start(VrReplicaApply *apply, GError **error)
{
    return vr_qemu_nbd_start(&apply->nbd_server, apply->image, apply->image_name, apply->socket,
                             apply->pid_file, false, VR_REPLICA_START_TIMEOUT, error);
}

/* A libnbd failure: its message; ENOSPC (from the server too) is NO_SPACE. */
static bool
vr_replica_nbd_error(GError **error, const char *what, VrReplicaApply *apply)
{
    const char *msg = nbd_get_error();
    int errsv = nbd_get_errno();

    g_set_error(error, VR_REPLICA_STORE_ERROR,
                errsv == ENOSPC || errsv == EDQUOT ? VR_REPLICA_STORE_ERROR_NO_SPACE
                                                   : VR_REPLICA_STORE_ERROR_FAILED,
                "%s '%s': %s", what, apply->image_name, msg != NULL ? msg : g_strerror(errsv));
    return false;
}

static bool
vr_replica_nbd_connect(VrReplicaApply *apply, GError **error)
{
    int64_t size;

    apply->nbd = nbd_create();
    if (apply->nbd == NULL)
        return vr_replica_nbd_error(error, "cannot create an NBD handle for", apply);
    if (nbd_connect_unix(apply->nbd, apply->socket) < 0)
        return vr_replica_nbd_error(error, "cannot connect to the export of", apply);
    size = nbd_get_size(apply->nbd);
    if (size < 0)
        return vr_replica_nbd_error(error, "cannot get the size of", apply);
    if ((uint64_t)size != apply->identity.virtual_size) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "the export of '%s' has %" PRId64 " bytes, not the stream's %" PRIu64,
                    apply->image_name, size, apply->identity.virtual_size);
        return false;
    }
    if (nbd_can_zero(apply->nbd) != 1 || nbd_can_flush(apply->nbd) != 1) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "the export of '%s' cannot write zeroes or flush", apply->image_name);
        return false;
    }
    return true;
}

/* ---- applying --------------------------------------------------------------------- */

/* One request in flight; a DATA record's bytes are copied (they live only for the call). */
typedef struct {
    VrReplicaApply *apply;
    uint8_t *buf; /* NULL for write-zeroes */
    uint64_t offset;
    uint64_t length;
} VrReplicaRequest;

/* Called by libnbd with its lock held: no nbd_* calls here. */
static int
vr_replica_request_done(void *user_data, int *err)
{
    VrReplicaRequest *req = user_data;
    VrReplicaApply *apply = req->apply;

    if (*err != 0 && apply->request_errno == 0) {
        apply->request_errno = *err;
        apply->request_offset = req->offset;
        apply->request_length = req->length;
        apply->request_zero = req->buf == NULL;
    }
    return 1; /* retire the command */
}

/* libnbd calls it exactly once per request, also when issuing it failed or on nbd_close(). */
static void
vr_replica_request_free(void *user_data)
{
    VrReplicaRequest *req = user_data;

    req->apply->in_flight--;
    if (req->buf != NULL)
        req->apply->bytes_in_flight -= req->length;
    g_free(req->buf);
    g_free(req);
}

/* Fail @apply for good with @err (transfer full); the caller gets a copy. */
static bool
vr_replica_apply_fail(VrReplicaApply *apply, GError *err, GError **error)
{
    if (apply->failure == NULL)
        apply->failure = err;
    else
        g_error_free(err);
    if (error != NULL)
        *error = g_error_copy(apply->failure);
    return false;
}

/* A request that failed on the server fails the apply. */
static bool
vr_replica_apply_check_requests(VrReplicaApply *apply, GError **error)
{
    GError *err = NULL;

    if (apply->request_errno == 0)
        return true;
    g_set_error(&err, VR_REPLICA_STORE_ERROR,
                apply->request_errno == ENOSPC || apply->request_errno == EDQUOT
                    ? VR_REPLICA_STORE_ERROR_NO_SPACE
                    : VR_REPLICA_STORE_ERROR_FAILED,
                "cannot %s %" PRIu64 " bytes at offset %" PRIu64 " of '%s': %s",
                apply->request_zero ? "zero" : "write", apply->request_length,
                apply->request_offset, apply->image_name, g_strerror(apply->request_errno));
    return vr_replica_apply_fail(apply, err, error);
}

/* Run libnbd until at most @requests requests and @bytes bytes are in flight. */
static bool
vr_replica_apply_wait(VrReplicaApply *apply, guint requests, uint64_t bytes, GError **error)
{
    while (apply->in_flight > requests || apply->bytes_in_flight > bytes) {
        if (nbd_poll(apply->nbd, -1) < 0) {
            GError *err = NULL;

            vr_replica_nbd_error(&err, "lost the export of", apply);
            return vr_replica_apply_fail(apply, err, error);
        }
    }
    return vr_replica_apply_check_requests(apply, error);
}

static bool
vr_replica_apply_issue(VrReplicaApply *apply, const uint8_t *data, uint64_t offset, uint64_t length,
                       GError **error)
{
    VrReplicaRequest *req;
    nbd_completion_callback cb;
    int64_t cookie;

    if (!vr_replica_apply_wait(
            apply, VR_REPLICA_DEPTH - 1,
            data != NULL ? VR_REPLICA_BYTES_IN_FLIGHT - length : VR_REPLICA_BYTES_IN_FLIGHT, error))
        return false;
    req = g_new(VrReplicaRequest, 1);
    req->apply = apply;
    req->buf = data != NULL ? g_memdup2(data, length) : NULL;
    req->offset = offset;
    req->length = length;
    apply->in_flight++;
    if (data != NULL)
        apply->bytes_in_flight += length;
    cb = (nbd_completion_callback){ .callback = vr_replica_request_done,
                                    .user_data = req,
                                    .free = vr_replica_request_free };
    /* Plain write-zeroes: QEMU may punch holes, and in an overlay a zeroed cluster still
     * hides its backing (qcow2 zero flag). */
    if (data != NULL)
        cookie = nbd_aio_pwrite(apply->nbd, req->buf, length, offset, cb, 0);
    else
        cookie = nbd_aio_zero(apply->nbd, length, offset, cb, 0);
    if (cookie < 0) {
        GError *err = NULL;

        vr_replica_nbd_error(
            &err, data != NULL ? "cannot queue a write to" : "cannot queue zeroes to", apply);
        return vr_replica_apply_fail(apply, err, error);
    }
    return true;
}

bool
vr_replica_apply_record(VrReplicaApply *apply, const VrWireRecord *record, GError **error)
{
    const VrWireIdentity *id = &apply->identity;
    GError *err = NULL;

    if (apply->failure != NULL)
        return vr_replica_apply_fail(apply, g_error_copy(apply->failure), error);
    if (apply->ended) {
        g_set_error(&err, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "record %" PRIu64 " of cycle %" PRIu64 " follows the stream's END",
                    record->index, id->target_cycle);
        return vr_replica_apply_fail(apply, err, error);
    }
    if (record->type == VR_WIRE_RECORD_BEGIN)
        return true;
    if (record->type == VR_WIRE_RECORD_END) {
        if (record->data == NULL || record->data_size != VR_WIRE_DIGEST_SIZE) {
            g_set_error(&err, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                        "the END record of cycle %" PRIu64 " carries no stream digest",
                        id->target_cycle);
            return vr_replica_apply_fail(apply, err, error);
        }
        memcpy(apply->digest, record->data, VR_WIRE_DIGEST_SIZE);
        apply->ended = true;
        return true;
    }
    if (record->type != VR_WIRE_RECORD_DATA && record->type != VR_WIRE_RECORD_ZERO) {
        g_set_error(&err, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "record %" PRIu64 " of cycle %" PRIu64 ": a %s record has no place in a cycle",
                    record->index, id->target_cycle, vr_wire_record_type_to_string(record->type));
        return vr_replica_apply_fail(apply, err, error);
    }
    /* The decoder checked all this; a store never writes outside its image regardless. */
    if (record->length == 0 || record->offset > id->virtual_size ||
        record->length > id->virtual_size - record->offset ||
        (record->type == VR_WIRE_RECORD_DATA &&
         (record->length > VR_WIRE_MAX_DATA || record->data == NULL ||
          record->data_size != record->length))) {
        g_set_error(&err, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "record %" PRIu64 " of cycle %" PRIu64 " (%s of %" PRIu64 " bytes at %" PRIu64
                    ") does not fit a disk of %" PRIu64 " bytes",
                    record->index, id->target_cycle, vr_wire_record_type_to_string(record->type),
                    record->length, record->offset, id->virtual_size);
        return vr_replica_apply_fail(apply, err, error);
    }
    if (record->type == VR_WIRE_RECORD_DATA) {
        if (!vr_replica_apply_issue(apply, record->data, record->offset, record->length, error))
            return false;
        apply->data_bytes += record->length;
    } else {
        for (uint64_t done = 0; done < record->length;) {
            uint64_t n = MIN(record->length - done, VR_REPLICA_ZERO_CHUNK);

            if (!vr_replica_apply_issue(apply, NULL, record->offset + done, n, error))
                return false;
            done += n;
        }
        apply->zero_bytes += record->length;
    }
    apply->records++;
    if (!apply->wrote) {
        apply->wrote = true;
        /* Well-defined: the first record is in the image when the failpoint fires. */
        if (vr_failpoint_armed("after-write") && !vr_replica_apply_wait(apply, 0, 0, error))
            return false;
        vr_failpoint("after-write");
    }
    return vr_replica_apply_check_requests(apply, error);
}

/* ---- begin, commit, abort --------------------------------------------------------- */

VrReplicaApply *
vr_replica_store_begin(VrReplicaStore *store, const VrWireIdentity *identity, GError **error)
{
    g_autoptr(VrReplicaApply) apply = NULL;
    g_autoptr(GError) local = NULL;
    const VrReplicaPoint *latest = vr_replica_store_latest(store);
    const VrReplicaPoint *base = NULL;
    g_autofree char *size_arg = NULL;
    g_autofree char *what = NULL;

    if (store->apply != NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY,
                    "cannot apply cycle %" PRIu64 ": cycle %" PRIu64 " is being applied in '%s'",
                    identity->target_cycle, store->apply->identity.target_cycle, store->dir);
        return NULL;
    }
    if (!vr_wire_identity_check(identity, &local) || identity->kind != VR_WIRE_KIND_CYCLE) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot apply cycle %" PRIu64 ": %s", identity->target_cycle,
                    local != NULL ? local->message : "a hash list is not a cycle");
        return NULL;
    }
    if (!vr_replica_store_check(store, identity->epoch, identity->base_cycle,
                                identity->target_cycle, error))
        return NULL;
    if (identity->virtual_size % VR_REPLICA_SECTOR != 0) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot apply cycle %" PRIu64 ": its virtual size %" PRIu64
                    " is not a multiple of %d bytes (qcow2 cannot hold it)",
                    identity->target_cycle, identity->virtual_size, VR_REPLICA_SECTOR);
        return NULL;
    }
    if (identity->flags & VR_WIRE_FLAG_RESYNC) {
        /* The blocks that differ from the hashes of the latest point: on top of it. */
        if (latest == NULL) {
            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                        "resync cycle %" PRIu64 " needs the point its hash list came from, but "
                        "the store holds no point",
                        identity->target_cycle);
            return NULL;
        }
        base = latest;
    } else if (!(identity->flags & VR_WIRE_FLAG_FULL)) {
        base = latest; /* vr_replica_store_check(): the base cycle is the latest point */
        if (identity->virtual_size < base->virtual_size) {
            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                        "cycle %" PRIu64 " shrinks the disk of cycle %" PRIu64 " from %" PRIu64
                        " to %" PRIu64 " bytes: that needs a full or resync stream",
                        identity->target_cycle, base->cycle, base->virtual_size,
                        identity->virtual_size);
            return NULL;
        }
    }

    apply = g_new0(VrReplicaApply, 1);
    apply->store = store;
    apply->identity = *identity;
    apply->nbd_server = (VrQemuNbd)VR_QEMU_NBD_INIT;
    apply->started = g_get_monotonic_time();
    apply->image_name = vr_replica_image_name(identity->target_cycle);
    apply->image = g_build_filename(store->dir, apply->image_name, NULL);
    apply->socket_name = g_strdup_printf(".apply-%" PRIu64 ".sock", identity->target_cycle);
    apply->socket = g_build_filename(store->dir, apply->socket_name, NULL);
    apply->pid_name = g_strdup_printf(".apply-%" PRIu64 ".pid", identity->target_cycle);
    apply->pid_file = g_build_filename(store->dir, apply->pid_name, NULL);
    if (strlen(apply->socket) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot apply cycle %" PRIu64 ": the socket path '%s' is longer than %zu "
                    "bytes (use a shorter storage directory)",
                    identity->target_cycle, apply->socket,
                    sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
        return NULL;
    }
    /* The target is after every published point: these names are leftovers, never points. */
    if (!vr_replica_unlink(store, apply->image_name, error) ||
        !vr_replica_unlink(store, apply->socket_name, error) ||
        !vr_replica_unlink(store, apply->pid_name, error))
        return NULL;

    size_arg = g_strdup_printf("%" PRIu64, identity->virtual_size);
    if (base != NULL) {
        g_autofree char *base_name = vr_replica_image_name(base->cycle);
        /* A relative backing name: the directory can move as a whole. A size above the
         * backing's grows the disk (the new tail reads as zeroes). */
        const char *argv[] = { "qemu-img", "create", "-q",    "-f",         "qcow2",  "-b",
                               base_name,  "-F",     "qcow2", apply->image, size_arg, NULL };

        what = g_strdup_printf("create '%s' over '%s'", apply->image_name, base_name);
        apply->created = true;
        if (!vr_replica_run(argv, what, error))
            return NULL;
    } else {
        const char *argv[] = { "qemu-img", "create",     "-q",     "-f",
                               "qcow2",    apply->image, size_arg, NULL };

        what = g_strdup_printf("create '%s'", apply->image_name);
        apply->created = true;
        if (!vr_replica_run(argv, what, error))
            return NULL;
    }
    vr_failpoint("after-create");
    if (!vr_replica_nbd_start(apply, error) || !vr_replica_nbd_connect(apply, error))
        return NULL;
    store->apply = apply;
    g_debug("applying cycle %" PRIu64 " (base %" PRIu64 ", epoch %" PRIu64 ", %" PRIu64
            " bytes, flags %u) into '%s'",
            identity->target_cycle, base != NULL ? base->cycle : 0, identity->epoch,
            identity->virtual_size, identity->flags, apply->image);
    return g_steal_pointer(&apply);
}

bool
vr_replica_apply_commit(VrReplicaApply *apply, GError **error)
{
    /* Freed on every path; unless published, that removes the image. */
    g_autoptr(VrReplicaApply) owned = apply;
    VrReplicaStore *store = apply->store;
    VrReplicaPoint point = { 0 };
    const VrReplicaPoint *base;
    gint64 applied = g_get_monotonic_time();
    bool renamed = false;

    if (apply->failure != NULL)
        return vr_replica_apply_fail(apply, g_error_copy(apply->failure), error);
    if (!apply->ended) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cycle %" PRIu64 " cannot be published: its stream has no END record",
                    apply->identity.target_cycle);
        return false;
    }
    if (!vr_replica_apply_wait(apply, 0, 0, error))
        return false;
    if (nbd_flush(apply->nbd, 0) < 0)
        return vr_replica_nbd_error(error, "cannot flush", apply);
    vr_failpoint("after-flush");
    nbd_shutdown(apply->nbd, 0);
    g_clear_pointer(&apply->nbd, nbd_close);
    if (!vr_replica_nbd_stop(apply, SIGTERM, VR_REPLICA_STOP_TIMEOUT, error))
        return false;
    vr_failpoint("after-nbd-stop");
    /* The image and its name in the directory are durable before the manifest names it. */
    if (!vr_replica_fsync_at(store, apply->image_name, error) ||
        !vr_replica_fsync_at(store, ".", error))
        return false;
    vr_failpoint("after-image-fsync");

    point.cycle = apply->identity.target_cycle;
    point.epoch = apply->identity.epoch;
    point.virtual_size = apply->identity.virtual_size;
    point.flags = apply->identity.flags;
    point.published = g_get_real_time() / G_USEC_PER_SEC;
    memcpy(point.digest, apply->digest, sizeof(point.digest));
    /* FULL starts a chain; anything else was applied on the latest point (begin() checked). */
    base = point.flags & VR_WIRE_FLAG_FULL ? NULL : vr_replica_store_latest(store);
    vr_replica_point_chain(base != NULL ? base->chain : NULL, point.digest, point.chain);
    if (!vr_replica_store_publish(store, &point, &renamed, error)) {
        apply->published = renamed;
        return false;
    }
    apply->published = true;
    g_debug("published cycle %" PRIu64 " in '%s': %" PRIu64 " records, %" PRIu64
            " data bytes, %" PRIu64 " zero bytes; applied in %" PRId64 " ms, committed in %" PRId64
            " ms",
            point.cycle, store->dir, apply->records, apply->data_bytes, apply->zero_bytes,
            (applied - apply->started) / 1000, (g_get_monotonic_time() - applied) / 1000);
    return true;
}

void
vr_replica_apply_abort(VrReplicaApply *apply)
{
    VrReplicaStore *store;

    if (apply == NULL)
        return;
    store = apply->store;
    /* Closing runs the free callback of every request still in flight. */
    g_clear_pointer(&apply->nbd, nbd_close);
    vr_replica_nbd_stop(apply, SIGTERM, VR_REPLICA_ABORT_TIMEOUT, NULL);
    if (!apply->published) {
        if (apply->created) {
            g_debug("removing '%s': cycle %" PRIu64 " was not published", apply->image,
                    apply->identity.target_cycle);
            vr_replica_unlink(store, apply->image_name, NULL);
        }
        vr_replica_unlink(store, apply->socket_name, NULL);
        vr_replica_unlink(store, apply->pid_name, NULL);
    }
    if (apply->nbd_server.stderr_fd >= 0)
        close(apply->nbd_server.stderr_fd);
    if (store->apply == apply)
        store->apply = NULL;
    g_clear_error(&apply->failure);
    g_free(apply->image_name);
    g_free(apply->image);
    g_free(apply->socket_name);
    g_free(apply->socket);
    g_free(apply->pid_name);
    g_free(apply->pid_file);
    g_free(apply);
}

/* ---- seeding from an existing image ------------------------------------------------- */

bool
vr_replica_store_seed(VrReplicaStore *store, const char *image, const char *format, uint64_t epoch,
                      uint64_t *cycle_out, GError **error)
{
    return vr_replica_store_seed_cycle(store, image, format, epoch, VR_REPLICA_STORE_SEED_CYCLE,
                                       cycle_out, error);
}

bool
vr_replica_store_seed_cycle(VrReplicaStore *store, const char *image, const char *format,
                            uint64_t epoch, uint64_t cycle, uint64_t *cycle_out, GError **error)
{
    return vr_replica_store_seed_cycle_cancellable(store, image, format, epoch, cycle, NULL,
                                                   cycle_out, error);
}

bool
vr_replica_store_seed_cycle_cancellable(VrReplicaStore *store, const char *image,
                                        const char *format, uint64_t epoch, uint64_t cycle,
                                        GCancellable *cancellable, uint64_t *cycle_out,
                                        GError **error)
{
    g_autofree char *name = vr_replica_image_name(cycle);
    g_autofree char *path = g_build_filename(store->dir, name, NULL);
    g_autofree char *what = NULL;
    g_autoptr(GChecksum) sum = NULL;
    VrReplicaPoint point = { 0 };
    bool renamed = false;
    gsize len = sizeof(point.digest);
    uint64_t nonce[2] = { g_random_int(), g_random_int() };
    const char *argv[] = { "qemu-img", "convert", "-q",  "-f", format,
                           "-O",       "qcow2",   image, path, NULL };

    if (store->apply != NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY,
                    "cannot seed '%s': cycle %" PRIu64 " is being applied", store->dir,
                    store->apply->identity.target_cycle);
        return false;
    }
    if (store->points->len > 0 || store->merge_from != 0) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "cannot seed '%s': it already holds cycle %" PRIu64
                    " (a seed starts an empty store)",
                    store->dir, vr_replica_store_latest(store)->cycle);
        return false;
    }
    if (g_strcmp0(format, "raw") != 0 && g_strcmp0(format, "qcow2") != 0) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot seed '%s' from '%s': format '%s' is not raw or qcow2", store->dir,
                    image, format != NULL ? format : "");
        return false;
    }
    if (epoch == 0 || cycle == 0) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot seed '%s': epoch or cycle 0", store->dir);
        return false;
    }
    /* A copy: the administrator's image is only read, and the seed is a fresh image whose
     * zero blocks stay unallocated (convert skips them). */
    what = g_strdup_printf("copy '%s' into '%s'", image, name);
    if (!vr_replica_run_cancellable(argv, what, cancellable, error))
        goto fail;
    /* Copied, not durable, not listed: a crash or a cancel from here removes the copy. */
    vr_failpoint("seed-copied");
    if ((cancellable != NULL && g_cancellable_set_error_if_cancelled(cancellable, error)) ||
        !vr_replica_image_header(store, name, NULL, &point.virtual_size, error) ||
        !vr_replica_fsync_at(store, name, error) || !vr_replica_fsync_at(store, ".", error))
        goto fail;
    if (point.virtual_size == 0 || point.virtual_size % VR_REPLICA_SECTOR != 0) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot seed '%s' from '%s': its size %" PRIu64
                    " is not a positive multiple of %d",
                    store->dir, image, point.virtual_size, VR_REPLICA_SECTOR);
        goto fail;
    }
    point.cycle = cycle;
    point.epoch = epoch;
    point.flags = VR_WIRE_FLAG_FULL; /* an image of its own */
    point.published = g_get_real_time() / G_USEC_PER_SEC;
    /* No stream made it: the digest names this seeding (never another's), not its bytes. */
    sum = g_checksum_new(G_CHECKSUM_SHA256);
    g_checksum_update(sum, (const guchar *)"virt-replica seed", -1);
    g_checksum_update(sum, (const guchar *)image, -1);
    g_checksum_update(sum, (const guchar *)&point, sizeof(point));
    g_checksum_update(sum, (const guchar *)nonce, sizeof(nonce));
    g_checksum_get_digest(sum, point.digest, &len);
    vr_replica_point_chain(NULL, point.digest, point.chain);
    /* The last moment a cancel stops the seed: the publication is its commit point. */
    if (cancellable != NULL && g_cancellable_set_error_if_cancelled(cancellable, error))
        goto fail;
    if (!vr_replica_store_publish(store, &point, &renamed, error)) {
        if (renamed)
            return false; /* listed: the image is the store's now */
        goto fail;
    }
    g_debug("seeded '%s' from '%s' (%s, %" PRIu64 " bytes) as cycle %" PRIu64, store->dir, image,
            format, point.virtual_size, point.cycle);
    if (cycle_out != NULL)
        *cycle_out = point.cycle;
    return true;

fail:
    vr_replica_unlink(store, name, NULL);
    g_prefix_error(error, "cannot seed '%s': ", store->dir);
    return false;
}

/* ---- adoption of an overlay in the directory ------------------------------------------ */

/* The point @name's qcow2 header names as its backing file ("rp-<cycle>.qcow2"). */
static bool
vr_replica_image_base(VrReplicaStore *store, const char *name, uint64_t *base_out, GError **error)
{
    uint8_t header[20];
    char backing[256];
    uint64_t offset;
    uint32_t length;
    ssize_t got;
    int fd;

    fd = openat(store->dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return vr_replica_errno_error(error, errno, "open", name);
    got = pread(fd, header, sizeof(header), 0);
    if (got == (ssize_t)sizeof(header) && memcmp(header, "QFI\xfb", 4) == 0) {
        memcpy(&offset, header + 8, sizeof(offset));
        memcpy(&length, header + 16, sizeof(length));
        offset = GUINT64_FROM_BE(offset);
        length = GUINT32_FROM_BE(length);
        got = offset != 0 && length > 0 && length < sizeof(backing)
                  ? pread(fd, backing, length, (off_t)offset)
                  : -1;
    } else {
        got = -1;
    }
    close(fd);
    if (got >= 0 && (size_t)got == length) {
        backing[length] = '\0';
        if (vr_replica_parse_name(backing, "rp-", ".qcow2", base_out))
            return true;
    }
    g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                "'%s/%s' is not a qcow2 overlay of a recovery point of this store (by its "
                "relative name rp-<cycle>.qcow2)",
                store->dir, name);
    return false;
}

/* The second half of an adoption: the point is the store's, @name goes. */
static bool
vr_replica_store_adopt_finish(VrReplicaStore *store, const char *name, const char *point_name,
                              GError **error)
{
    g_autofree char *path = g_build_filename(store->dir, point_name, NULL);

    /* A published point is root's and written by nobody (the overlay was QEMU's). */
    if (fchownat(store->dirfd, point_name, geteuid(), getegid(), AT_SYMLINK_NOFOLLOW) < 0 ||
        fchmodat(store->dirfd, point_name, 0600, 0) < 0)
        return vr_replica_errno_error(error, errno, "take over", path);
    vr_failpoint("adopt-unlink");
    if (!vr_replica_unlink(store, name, error) || !vr_replica_fsync_at(store, ".", error))
        return false;
    return true;
}

bool
vr_replica_store_adopt(VrReplicaStore *store, const char *name, uint64_t epoch, uint64_t cycle,
                       const uint8_t *digest, GError **error)
{
    g_autofree char *point_name = vr_replica_image_name(cycle);
    g_autofree char *path = g_build_filename(store->dir, name, NULL);
    g_autoptr(GArray) points = NULL;
    const VrReplicaPoint *latest, *base;
    VrReplicaPoint point = { 0 };
    struct stat a, b;
    uint64_t base_cycle;
    bool renamed = false;

    if (store->apply != NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY,
                    "cannot adopt '%s': cycle %" PRIu64 " is being applied", path,
                    store->apply->identity.target_cycle);
        return false;
    }
    if (store->merge_from != 0 && !vr_replica_store_finish_merge(store, error))
        return false;
    latest = vr_replica_store_latest(store);
    /* Adopted already (a crash came after the commit point): finish what is left. */
    if (latest != NULL && latest->cycle == cycle && latest->epoch == epoch) {
        if (fstatat(store->dirfd, name, &a, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
            return true;
        if (fstatat(store->dirfd, name, &a, AT_SYMLINK_NOFOLLOW) == 0 &&
            fstatat(store->dirfd, point_name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
            a.st_dev == b.st_dev && a.st_ino == b.st_ino)
            return vr_replica_store_adopt_finish(store, name, point_name, error);
    }
    if (!vr_replica_image_base(store, name, &base_cycle, error))
        return false;
    base = vr_replica_store_find(store, base_cycle);
    if (base == NULL) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "cannot adopt '%s': it is based on cycle %" PRIu64 ", which store '%s' "
                    "does not hold",
                    path, base_cycle, store->dir);
        return false;
    }
    if (cycle <= base->cycle || epoch == 0 || epoch < base->epoch) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "cannot adopt '%s' as cycle %" PRIu64 " of epoch %" PRIu64
                    ": it is based on cycle %" PRIu64 " of epoch %" PRIu64,
                    path, cycle, epoch, base->cycle, base->epoch);
        return false;
    }
    /* Everything is checked before anything changes: a refused adoption keeps every point. */
    if (!vr_replica_image_header(store, name, NULL, &point.virtual_size, error))
        return false;
    if (point.virtual_size < base->virtual_size || point.virtual_size % VR_REPLICA_SECTOR != 0) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_CONFLICT,
                    "cannot adopt '%s': its size %" PRIu64 " is below cycle %" PRIu64 "'s %" PRIu64
                    " or not a multiple of %d",
                    path, point.virtual_size, base->cycle, base->virtual_size, VR_REPLICA_SECTOR);
        return false;
    }
    /* Only the overlay's chain stays: points after its base (or of an older chain) would
     * sit between the base and the new point, which is not based on them. */
    if (!vr_replica_store_keep_chain(store, base_cycle, error))
        return false;
    base = vr_replica_store_latest(store);
    point.cycle = cycle;
    point.epoch = epoch;
    point.flags = 0; /* an overlay of the latest point, as an incremental cycle's */
    point.published = g_get_real_time() / G_USEC_PER_SEC;
    if (digest != NULL) {
        memcpy(point.digest, digest, sizeof(point.digest));
    } else {
        g_autoptr(GChecksum) sum = g_checksum_new(G_CHECKSUM_SHA256);
        uint64_t nonce[2] = { g_random_int(), g_random_int() };
        gsize len = sizeof(point.digest);

        /* No stream is known to have made it: the digest names this adoption. */
        g_checksum_update(sum, (const guchar *)"virt-replica adopt", -1);
        g_checksum_update(sum, (const guchar *)&point, sizeof(point));
        g_checksum_update(sum, (const guchar *)nonce, sizeof(nonce));
        g_checksum_get_digest(sum, point.digest, &len);
    }
    vr_replica_point_chain(base->chain, point.digest, point.chain);
    /*
     * A second name, not a rename: until the manifest lists the point, the open's sweep
     * removes rp-<cycle>.qcow2 as an unpublished image, and @name must still be there.
     */
    vr_replica_unlink(store, point_name, NULL);
    if (!vr_replica_fsync_at(store, name, error))
        return false;
    if (linkat(store->dirfd, name, store->dirfd, point_name, 0) < 0)
        return vr_replica_errno_error(error, errno, "link", path);
    if (!vr_replica_fsync_at(store, ".", error))
        goto fail;
    vr_failpoint("adopt-link");
    points = g_array_copy(store->points);
    g_array_append_val(points, point);
    if (!vr_replica_store_write_manifest(store, points, 0, 0, "adopt-tmp", "adopt", &renamed,
                                         error)) {
        if (renamed) {
            g_prefix_error(error,
                           "cycle %" PRIu64 " is in the manifest, but its rename may not "
                           "be durable: ",
                           cycle);
            return false;
        }
        goto fail;
    }
    g_debug("adopted '%s' as cycle %" PRIu64 " of epoch %" PRIu64 " on cycle %" PRIu64, path, cycle,
            epoch, base_cycle);
    return vr_replica_store_adopt_finish(store, name, point_name, error);

fail:
    vr_replica_unlink(store, point_name, NULL);
    g_prefix_error(error, "cannot adopt '%s': ", path);
    return false;
}

/* ---- import of a stream file ---------------------------------------------------------- */

typedef struct {
    VrReplicaStore *store;
    VrReplicaApply *apply; /* from the BEGIN record on */
} VrReplicaImport;

static bool
vr_replica_import_record(const VrWireRecord *record, gpointer user_data, GError **error)
{
    VrReplicaImport *import = user_data;

    if (record->type == VR_WIRE_RECORD_BEGIN) {
        import->apply = vr_replica_store_begin(import->store, record->identity, error);
        return import->apply != NULL;
    }
    return vr_replica_apply_record(import->apply, record, error);
}

bool
vr_replica_store_import(VrReplicaStore *store, const char *path, uint64_t *target_out,
                        GError **error)
{
    g_autoptr(VrWireDecoder) decoder = vr_wire_decoder_new();
    g_autofree uint8_t *buf = g_malloc(1024 * 1024);
    VrReplicaImport import = { store, NULL };
    uint64_t target;
    ssize_t got;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0) {
        int errsv = errno;

        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot open the stream file '%s': %s", path, g_strerror(errsv));
        return false;
    }
    for (;;) {
        got = read(fd, buf, 1024 * 1024);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int errsv = errno;

            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                        "cannot read the stream file '%s': %s", path, g_strerror(errsv));
            goto fail;
        }
        if (got == 0)
            break;
        if (!vr_wire_decoder_feed(decoder, buf, (size_t)got, vr_replica_import_record, &import,
                                  error))
            goto fail;
    }
    if (!vr_wire_decoder_finish(decoder, error))
        goto fail;
    close(fd);
    target = vr_wire_decoder_get_identity(decoder)->target_cycle;
    /* the store frees the apply either way */
    if (!vr_replica_apply_commit(g_steal_pointer(&import.apply), error)) {
        g_prefix_error(error, "'%s': ", path);
        return false;
    }
    if (target_out != NULL)
        *target_out = target;
    return true;

fail:
    close(fd);
    g_prefix_error(error, "'%s': ", path);
    if (import.apply != NULL)
        vr_replica_apply_abort(g_steal_pointer(&import.apply));
    return false;
}
