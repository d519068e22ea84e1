/*
 * vr-replica-sink.c: the replica role's receiver sink, over the replica store
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "vr-hashlist.h"
#include "vr-replica-hashes.h"
#include "vr-replica-sink.h"

#include "vr-qmp-json.h"
#include "vr-replica-store.h"
#include "vr-standby.h"
#include "vr-state.h"

#define VR_REPLICA_SINK_OWNER     "owner"
#define VR_REPLICA_SINK_OWNER_TMP "owner.tmp"
/* In a relationship's directory: the primary's domain XML, and its .tmp while written */
#define VR_REPLICA_SINK_DOMAIN     "domain.xml"
#define VR_REPLICA_SINK_DOMAIN_TMP "domain.xml.tmp"
/* In a disk's directory: the standby's disk, a file only a failover creates (the guard) */
#define VR_REPLICA_SINK_FAILOVER "failover.qcow2"
/* In a disk's directory: hashes-<cycle>, the hash list of that point, and .tmp while written */
#define VR_REPLICA_SINK_HASHES     "hashes-"
#define VR_REPLICA_SINK_HASHES_TMP ".tmp"
#define VR_REPLICA_SINK_GROUP_MAX  32 /* as vr-authz.c: [a-z0-9-]{1,32} */
#define VR_REPLICA_SINK_SECTOR     512
#define VR_REPLICA_SINK_NO_BASE    (VR_WIRE_FLAG_FULL | VR_WIRE_FLAG_RESYNC)
#define VR_REPLICA_SINK_FLAGS \
    (VR_WIRE_FLAG_FULL | VR_WIRE_FLAG_RESYNC | VR_WIRE_FLAG_APP_CONSISTENT)

/* A file descriptor closed when it leaves scope (g_autofd is GLib 2.76). */
typedef int VrReplicaSinkFd;

static void
vr_replica_sink_fd_close(VrReplicaSinkFd fd)
{
    close(fd);
}
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(VrReplicaSinkFd, vr_replica_sink_fd_close, -1)

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlParserCtxt, xmlFreeParserCtxt)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virDomainFree)

typedef struct _VrReplicaSinkStream VrReplicaSinkStream;

/* One disk directory and its store, open for the sink's lifetime. */
typedef struct {
    char *dir; /* <storage root>/<relationship>/<disk>: the key in the sink's table */
    dev_t dev; /* the directory that was made beneath the root: the store must be that one */
    ino_t ino;
    VrReplicaStore *store;
    VrReplicaSinkStream *stream; /* the stream being received, or NULL */
} VrReplicaSinkDisk;

struct _VrReplicaSink {
    VrAuthz *authz;    /* borrowed */
    GHashTable *disks; /* dir -> VrReplicaSinkDisk */
    guint keep;        /* additional recovery points */
    guint interval_s;  /* one point per slot of this many seconds (0: every point) */
    GError *retention_error;
    VrState *state; /* borrowed, or NULL */
    GError *state_error;
    /* The standby domain (vr_replica_sink_set_standby()): */
    virConnectPtr standby_conn; /* borrowed, or NULL: no standby */
    char *name_rule;            /* NULL: the primary's name and UUID */
    GHashTable *network_map;    /* borrowed, or NULL */
    /* <root>/<relationship> -> "<SHA-256 of domain.xml> <epoch>" the standby was defined from */
    GHashTable *standby_defined;
    GError *standby_error;
    GHashTable *fenced; /* relationships failed over here (vr_replica_sink_fence()) */
    GHashTable *busy;   /* relationships whose stores are set up (vr_replica_sink_set_busy()) */
    /* A planned failover's request (vr_replica_sink_set_failover_handler()), or NULL. */
    VrReplicaSinkFailoverFunc failover;
    gpointer failover_data;
};

/* A receiver handle: one stream into one disk. */
struct _VrReplicaSinkStream {
    VrReplicaSink *sink;
    VrReplicaSinkDisk *disk;
    VrReceiverKey key;
    char *peer;            /* the primary's name */
    char *root;            /* its storage root */
    VrReplicaApply *apply; /* from the BEGIN record until commit or abort */
    /* For the cycle history (VrState): from BEGIN on. */
    uint8_t domain_uuid[16];
    uint32_t flags;
    int64_t started_ms;
    uint64_t bytes; /* DATA and ZERO bytes */
    bool fenced;    /* a failover aborted its apply: every later call fails */
};

static void
vr_replica_sink_disk_free(gpointer data)
{
    VrReplicaSinkDisk *disk = data;

    /* The receiver ends its streams when it is freed, which must come first. */
    g_assert(disk->stream == NULL);
    vr_replica_store_free(disk->store);
    g_free(disk->dir);
    g_free(disk);
}

VrReplicaSink *
vr_replica_sink_new(VrAuthz *authz, GError **error)
{
    static const char *const programs[] = { "qemu-img", "qemu-nbd" };
    VrReplicaSink *sink;

    for (guint i = 0; i < G_N_ELEMENTS(programs); i++) {
        g_autofree char *path = g_find_program_in_path(programs[i]);

        if (path == NULL) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                        "'%s' is not on PATH (Debian package qemu-utils)", programs[i]);
            return NULL;
        }
    }
    sink = g_new0(VrReplicaSink, 1);
    sink->authz = authz;
    sink->keep = 4;
    sink->interval_s = 3600;
    sink->disks = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, vr_replica_sink_disk_free);
    sink->standby_defined = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    sink->fenced = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    sink->busy = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return sink;
}

void
vr_replica_sink_free(VrReplicaSink *sink)
{
    if (sink == NULL)
        return;
    g_hash_table_unref(sink->disks);
    g_clear_error(&sink->retention_error);
    g_clear_error(&sink->state_error);
    g_hash_table_unref(sink->standby_defined);
    g_clear_error(&sink->standby_error);
    g_hash_table_unref(sink->fenced);
    g_hash_table_unref(sink->busy);
    g_free(sink->name_rule);
    g_free(sink);
}

/* ---- errors ------------------------------------------------------------------------- */

/* A failed system call: G_IO_ERROR from errno (ENOSPC is 507 at the receiver). */
static bool
vr_replica_sink_errno(GError **error, int errsv, const char *what, const char *path)
{
    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errsv), "cannot %s '%s': %s", what, path,
                g_strerror(errsv));
    return false;
}

/*
 * @local (taken) from the store, as the receiver's error whose code gives the status:
 * CONFLICT and BUSY 409, NO_SPACE 507; the rest (CORRUPT, FAILED) stays 500. The message
 * names the disk.
 */
static bool
vr_replica_sink_store_error(GError **error, GError *local, const VrReceiverKey *key)
{
    int code = -1;

    if (local->domain == VR_REPLICA_STORE_ERROR) {
        switch ((VrReplicaStoreErrorCode)local->code) {
        case VR_REPLICA_STORE_ERROR_CONFLICT:
        case VR_REPLICA_STORE_ERROR_BUSY:
            code = VR_RECEIVER_ERROR_CONFLICT;
            break;
        case VR_REPLICA_STORE_ERROR_NO_SPACE:
            code = VR_RECEIVER_ERROR_NO_SPACE;
            break;
        case VR_REPLICA_STORE_ERROR_CORRUPT:
        case VR_REPLICA_STORE_ERROR_FAILED:
            break;
        }
    }
    if (code < 0) {
        g_propagate_prefixed_error(error, local, "disk '%s' of relationship '%s': ", key->disk,
                                   key->relationship);
        return false;
    }
    g_set_error(error, VR_RECEIVER_ERROR, code, "disk '%s' of relationship '%s'%s: %s", key->disk,
                key->relationship,
                g_error_matches(local, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY)
                    ? " is busy"
                    : "",
                local->message);
    g_error_free(local);
    return false;
}

/* ---- directories and ownership ------------------------------------------------------ */

/*
 * The directory @name in @parent_fd (whose path is @parent, for messages): made with mode
 * 0700 when missing and @create (then @parent_fd is synced: the name is durable before
 * anything in it), opened without following a symlink. Returns the fd, or -1 with @error: a
 * symlink or anything but a directory there is VR_RECEIVER_ERROR_FORBIDDEN; a missing one
 * without @create VR_RECEIVER_ERROR_NOT_FOUND, naming @what.
 */
static int
vr_replica_sink_open_dir(int parent_fd, const char *parent, const char *name, bool create,
                         const char *what, GError **error)
{
    g_autofree char *path = g_build_filename(parent, name, NULL);
    bool made = false;
    struct stat st;
    int fd;

    if (create && mkdirat(parent_fd, name, 0700) == 0) {
        made = true;
    } else if (create && errno != EEXIST) {
        vr_replica_sink_errno(error, errno, "make directory", path);
        return -1;
    }
    fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && !create) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_NOT_FOUND, "%s has no replica here",
                    what);
        return -1;
    }
    if (fd < 0 && (errno == ENOTDIR || errno == ELOOP)) {
        bool link = fstatat(parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode);

        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_FORBIDDEN, "'%s' is %s", path,
                    link ? "a symbolic link: nothing beneath the storage root is reached "
                           "through a link"
                         : "not a directory");
        return -1;
    }
    if (fd < 0) {
        vr_replica_sink_errno(error, errno, "open directory", path);
        return -1;
    }
    if (made && fsync(parent_fd) < 0) {
        int errsv = errno;

        close(fd);
        vr_replica_sink_errno(error, errsv, "sync directory", parent);
        return -1;
    }
    return fd;
}

static bool
vr_replica_sink_group_valid(const char *group, gsize len)
{
    if (len == 0 || len > VR_REPLICA_SINK_GROUP_MAX)
        return false;
    for (gsize i = 0; i < len; i++) {
        if (!g_ascii_islower(group[i]) && !g_ascii_isdigit(group[i]) && group[i] != '-')
            return false;
    }
    return true;
}

/*
 * The trust group in <relationship>/owner, through @rel_fd (@rel_path for messages):
 * *@group_out is NULL when there is no owner file yet. A symlink, anything but a regular
 * file, or a line that is not a trust group fails.
 */
static bool
vr_replica_sink_owner_read(int rel_fd, const char *rel_path, char **group_out, GError **error)
{
    g_autofree char *path = g_build_filename(rel_path, VR_REPLICA_SINK_OWNER, NULL);
    g_auto(VrReplicaSinkFd) fd = -1;
    char buf[VR_REPLICA_SINK_GROUP_MAX + 2];
    struct stat st;
    ssize_t n;

    /* O_NONBLOCK: a FIFO planted there must not hang the receiver (refused below). */
    fd = openat(rel_fd, VR_REPLICA_SINK_OWNER, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        *group_out = NULL;
        return true;
    }
    if (fd < 0 && errno == ELOOP) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_FORBIDDEN,
                    "'%s' is a symbolic link: nothing beneath the storage root is reached through "
                    "a link",
                    path);
        return false;
    }
    if (fd < 0)
        return vr_replica_sink_errno(error, errno, "open", path);
    if (fstat(fd, &st) < 0)
        return vr_replica_sink_errno(error, errno, "stat", path);
    if (!S_ISREG(st.st_mode)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "'%s' is not a regular file", path);
        return false;
    }
    do {
        n = pread(fd, buf, sizeof(buf), 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return vr_replica_sink_errno(error, errno, "read", path);
    if (n < 2 || buf[n - 1] != '\n' || !vr_replica_sink_group_valid(buf, (gsize)n - 1)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "'%s' does not hold one trust group ([a-z0-9-]{1,%d}) on one line", path,
                    VR_REPLICA_SINK_GROUP_MAX);
        return false;
    }
    *group_out = g_strndup(buf, (gsize)n - 1);
    return true;
}

/*
 * Record @group as the owner of the relationship: owner.tmp written and synced, renamed to
 * owner unless one appeared meanwhile (*@raced, owner.tmp removed), the directory synced.
 */
static bool
vr_replica_sink_owner_write(int rel_fd, const char *rel_path, const char *group, bool *raced,
                            GError **error)
{
    g_autofree char *tmp = g_build_filename(rel_path, VR_REPLICA_SINK_OWNER_TMP, NULL);
    g_autofree char *line = g_strdup_printf("%s\n", group);
    gsize len = strlen(line);
    ssize_t n;
    int fd;
    int errsv;

    *raced = false;
    fd = openat(rel_fd, VR_REPLICA_SINK_OWNER_TMP,
                O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return vr_replica_sink_errno(error, errno, "create", tmp);
    n = write(fd, line, len);
    if (n != (ssize_t)len || fsync(fd) < 0) {
        errsv = n >= 0 && n < (ssize_t)len ? EIO : errno; /* a short write sets no errno */
        close(fd);
        unlinkat(rel_fd, VR_REPLICA_SINK_OWNER_TMP, 0);
        return vr_replica_sink_errno(error, errsv, "write", tmp);
    }
    close(fd);
    /* NOREPLACE: of two first streams, the owner is the one that renamed first. */
    if (renameat2(rel_fd, VR_REPLICA_SINK_OWNER_TMP, rel_fd, VR_REPLICA_SINK_OWNER,
                  RENAME_NOREPLACE) < 0) {
        errsv = errno;
        unlinkat(rel_fd, VR_REPLICA_SINK_OWNER_TMP, 0);
        if (errsv == EEXIST) {
            *raced = true;
            return true;
        }
        return vr_replica_sink_errno(error, errsv, "rename", tmp);
    }
    if (fsync(rel_fd) < 0)
        return vr_replica_sink_errno(error, errno, "sync directory", rel_path);
    return true;
}

/*
 * May @peer use the relationship of @rel_fd? Its owner group must be the peer's; with
 * @create, a relationship without an owner becomes the peer's group's, durably, before any
 * data (without, it has no replica: NOT_FOUND). The same rule for reading and writing.
 */
static bool
vr_replica_sink_authorize(VrReplicaSink *sink, int rel_fd, const char *rel_path,
                          const VrReceiverKey *key, const VrReceiverPeer *peer, bool create,
                          GError **error)
{
    g_autofree char *owner = NULL;
    g_autoptr(GError) local = NULL;
    bool raced = false;

    if (!vr_replica_sink_owner_read(rel_fd, rel_path, &owner, error))
        return false;
    if (owner == NULL && !create) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_NOT_FOUND,
                    "relationship '%s' has no replica here", key->relationship);
        return false;
    }
    if (owner == NULL) {
        if (!vr_authz_may_write(sink->authz, peer->name, NULL, error) ||
            !vr_replica_sink_owner_write(rel_fd, rel_path, peer->group, &raced, error))
            return false;
        if (!raced) {
            g_debug("relationship '%s' belongs to trust group '%s' from now on (first stream, "
                    "from '%s')",
                    key->relationship, peer->group, peer->name);
            return true;
        }
        if (!vr_replica_sink_owner_read(rel_fd, rel_path, &owner, error))
            return false;
        if (owner == NULL) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED,
                        "the owner of relationship '%s' appeared and went again",
                        key->relationship);
            return false;
        }
    }
    if (!vr_authz_may_write(sink->authz, peer->name, owner, &local)) {
        if (create) {
            g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_FORBIDDEN,
                        "relationship '%s' belongs to trust group '%s': %s", key->relationship,
                        owner, local->message);
        } else {
            g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_FORBIDDEN,
                        "relationship '%s' belongs to trust group '%s': primary '%s' (trust "
                        "group '%s') may not read it",
                        key->relationship, owner, peer->name, peer->group);
        }
        return false;
    }
    return true;
}

static void vr_replica_sink_hashes_sweep(VrReplicaSinkDisk *disk, uint64_t keep);
static void vr_replica_sink_domain_update(VrReplicaSink *sink, const char *root,
                                          const char *relationship, const char *peer,
                                          uint64_t epoch);

/* The storage root @root, opened as the directory itself (never a symlink): fd, or -1. */
static int
vr_replica_sink_open_root(const char *root, GError **error)
{
    int fd = open(root, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        int errsv = errno;
        struct stat st;

        if ((errsv == ENOTDIR || errsv == ELOOP) && lstat(root, &st) == 0 && S_ISLNK(st.st_mode)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "storage root '%s' is a symbolic link: configure the directory itself",
                        root);
            return -1;
        }
        vr_replica_sink_errno(error, errsv, "open the storage root", root);
    }
    return fd;
}

/*
 * The directory of @key's relationship beneath @peer's storage root (made when missing and
 * @create; never through a symlink), its trust group checked: the fd, or -1 with @error.
 */
static int
vr_replica_sink_rel_open(VrReplicaSink *sink, const VrReceiverKey *key, const VrReceiverPeer *peer,
                         bool create, GError **error)
{
    g_autofree char *rel_what = g_strdup_printf("relationship '%s'", key->relationship);
    const char *root = peer->storage_root;
    g_autofree char *rel_path = g_build_filename(root, key->relationship, NULL);
    g_auto(VrReplicaSinkFd) root_fd = -1;
    g_auto(VrReplicaSinkFd) rel_fd = -1;

    root_fd = vr_replica_sink_open_root(root, error);
    if (root_fd < 0)
        return -1;
    rel_fd = vr_replica_sink_open_dir(root_fd, root, key->relationship, create, rel_what, error);
    if (rel_fd < 0 || !vr_replica_sink_authorize(sink, rel_fd, rel_path, key, peer, create, error))
        return -1;
    return g_steal_fd(&rel_fd);
}

/*
 * The disk of @key for @peer: its directory beneath the peer's storage root (made when
 * missing and @create; never through a symlink), the relationship's trust group checked,
 * its store opened once and kept. (transfer none)
 */
static VrReplicaSinkDisk *
vr_replica_sink_disk_get(VrReplicaSink *sink, const VrReceiverKey *key, const VrReceiverPeer *peer,
                         bool create, GError **error)
{
    g_autofree char *disk_what =
        g_strdup_printf("disk '%s' of relationship '%s'", key->disk, key->relationship);
    g_autofree char *rel_path = g_build_filename(peer->storage_root, key->relationship, NULL);
    g_autofree char *dir = g_build_filename(rel_path, key->disk, NULL);
    g_auto(VrReplicaSinkFd) rel_fd = -1;
    g_auto(VrReplicaSinkFd) disk_fd = -1;
    g_autoptr(GError) local = NULL;
    VrReplicaSinkDisk *disk;
    struct stat made, opened;

    rel_fd = vr_replica_sink_rel_open(sink, key, peer, create, error);
    if (rel_fd < 0)
        return NULL;
    disk_fd = vr_replica_sink_open_dir(rel_fd, rel_path, key->disk, create, disk_what, error);
    if (disk_fd < 0)
        return NULL;
    if (fstat(disk_fd, &made) < 0) {
        vr_replica_sink_errno(error, errno, "stat", dir);
        return NULL;
    }

    disk = g_hash_table_lookup(sink->disks, dir);
    if (disk != NULL && (disk->dev != made.st_dev || disk->ino != made.st_ino)) {
        /* The directory was replaced under the store: its flock and points are stale. */
        if (disk->stream != NULL) {
            g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                        "store '%s' was replaced while it receives cycle %" PRIu64, dir,
                        disk->stream->key.target_cycle);
            return NULL;
        }
        g_debug("store '%s' was replaced: opening it again", dir);
        g_hash_table_remove(sink->disks, dir);
        disk = NULL;
    }
    if (disk != NULL)
        return disk;

    disk = g_new0(VrReplicaSinkDisk, 1);
    disk->store = vr_replica_store_open(dir, &local);
    if (disk->store == NULL) {
        g_free(disk);
        vr_replica_sink_store_error(error, g_steal_pointer(&local), key);
        return NULL;
    }
    /*
     * The store works by path: the path must still lead to the directory walked to above
     * (a symlink swapped in meanwhile would not).
     */
    if (stat(dir, &opened) < 0 || opened.st_dev != made.st_dev || opened.st_ino != made.st_ino) {
        vr_replica_store_free(disk->store);
        g_free(disk);
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_FORBIDDEN,
                    "'%s' no longer leads to the directory made beneath the storage root", dir);
        return NULL;
    }
    disk->dir = g_steal_pointer(&dir);
    disk->dev = made.st_dev;
    disk->ino = made.st_ino;
    g_hash_table_insert(sink->disks, disk->dir, disk);
    {
        /* What a crash left: an unfinished list, the list of a point no longer the latest. */
        guint n;
        const VrReplicaPoint *points = vr_replica_store_points(disk->store, &n);

        vr_replica_sink_hashes_sweep(disk, n > 0 ? points[n - 1].cycle : 0);
    }
    return disk;
}

/*
 * Is the stream of @key already published: a point of its target cycle, epoch and base
 * (the manifest has no base: a FULL or RESYNC point has none, any other one is backed by
 * the point before it)?
 */
static bool
vr_replica_sink_published(VrReplicaStore *store, const VrReceiverKey *key)
{
    const VrReplicaPoint *points;
    guint n;

    points = vr_replica_store_points(store, &n);
    for (guint i = 0; i < n; i++) {
        const VrReplicaPoint *p = &points[i];

        if (p->cycle != key->target_cycle || p->epoch != key->epoch)
            continue;
        if (key->base_cycle == 0)
            return (p->flags & VR_REPLICA_SINK_NO_BASE) != 0;
        return (p->flags & VR_REPLICA_SINK_NO_BASE) == 0 && i > 0 &&
               points[i - 1].cycle == key->base_cycle;
    }
    return false;
}

/* ---- the sink's callbacks ----------------------------------------------------------- */

static void
vr_replica_sink_stream_free(VrReplicaSinkStream *stream)
{
    if (stream->disk->stream == stream)
        stream->disk->stream = NULL;
    g_free(stream->peer);
    g_free(stream->root);
    g_free(stream);
}

/*
 * Refuse (409) a cycle of a relationship failed over here (vr_replica_sink_fence(), or its
 * state "FailedOver" in the state database, which survives a restart), and a cycle of an
 * epoch older than the relationship's: a primary that comes back after a failover must not
 * overwrite what the failed-over domain relies on.
 */
static bool
vr_replica_sink_check_failover(VrReplicaSink *sink, const VrReceiverKey *key, GError **error)
{
    g_autoptr(VrStateRelationship) rel = NULL;

    /* Soon this host's replica (a reverse set-up copies its disks): 503, the primary waits. */
    if (g_hash_table_contains(sink->busy, key->relationship)) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_BUSY,
                    "relationship '%s' is being set up as this host's replica (its disks are "
                    "copied): cycle %" PRIu64 " later",
                    key->relationship, key->target_cycle);
        return false;
    }
    if (g_hash_table_contains(sink->fenced, key->relationship)) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                    "relationship '%s' is failed over on this replica: cycle %" PRIu64
                    " is refused",
                    key->relationship, key->target_cycle);
        return false;
    }
    if (sink->state != NULL)
        rel = vr_state_relationship_get(sink->state, key->relationship, NULL);
    if (rel != NULL && g_strcmp0(rel->state, "FailedOver") == 0) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                    "relationship '%s' is in state FailedOver on this replica (epoch %" PRIu64
                    "): cycle %" PRIu64 " is refused",
                    key->relationship, rel->epoch, key->target_cycle);
        return false;
    }
    if (rel != NULL && key->epoch < rel->epoch) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                    "cycle %" PRIu64 " of relationship '%s' has epoch %" PRIu64
                    ", older than the relationship's epoch %" PRIu64 " (a failover happened)",
                    key->target_cycle, key->relationship, key->epoch, rel->epoch);
        return false;
    }
    return true;
}

/*
 * Whether the primary may send the domain XML of @relationship (PUT /v1/domains): not while
 * it is failed over here (fenced, or FailedOver in the state), and not when this host is its
 * primary now (reverse replication): the standby running here, or the domain this host
 * replicates, must not be redefined from the old primary's XML. 409 otherwise.
 */
static bool
vr_replica_sink_domain_allowed(VrReplicaSink *sink, const char *relationship, GError **error)
{
    g_autoptr(VrStateRelationship) rel = NULL;

    if (sink->state != NULL)
        rel = vr_state_relationship_get(sink->state, relationship, NULL);
    if (g_hash_table_contains(sink->fenced, relationship) ||
        (rel != NULL && g_strcmp0(rel->state, "FailedOver") == 0)) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                    "relationship '%s' is failed over on this replica: its domain XML is refused",
                    relationship);
        return false;
    }
    if (rel != NULL && rel->role == VR_STATE_ROLE_PRIMARY) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                    "relationship '%s' is replicated from this host now (reverse replication): "
                    "its domain XML is refused",
                    relationship);
        return false;
    }
    return true;
}

/*
 * Whether the state's row of @relationship (keyed by the id alone) is @peer's: rows of
 * different primaries, or of this host's own primary role, must never mix under one id.
 * With @role, a row of role primary (this host replicates the relationship to another:
 * reverse replication) is refused, CONFLICT (409). A replica row is @peer's when it names
 * @peer, or when its storage root is @peer's: the same relationship directory, whose owner
 * file gave @peer's trust group (vr_replica_sink_authorize()), as when a primary host of one
 * trust group takes over the relationship (the row then names it from its next cycle).
 * Else FORBIDDEN (403): another primary's relationship of the same id. The row's storage
 * root is the one its config records, or the authorization entry of its primary. No row,
 * or no state database: nothing to check. @what names the request for the message.
 */
static bool
vr_replica_sink_check_row(VrReplicaSink *sink, const char *relationship, const VrReceiverPeer *peer,
                          bool role, const char *what, GError **error)
{
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(json_object) config = NULL;
    g_autofree char *root = NULL;
    g_autofree char *group = NULL;
    const char *recorded;

    if (sink->state != NULL)
        rel = vr_state_relationship_get(sink->state, relationship, NULL);
    if (rel == NULL)
        return true;
    if (rel->role == VR_STATE_ROLE_PRIMARY) {
        if (!role)
            return true;
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                    "relationship '%s' is replicated from this host to '%s' (role primary "
                    "here): %s is refused",
                    relationship, rel->peer, what);
        return false;
    }
    if (g_strcmp0(rel->peer, peer->name) == 0)
        return true;
    config = json_tokener_parse(rel->config != NULL ? rel->config : "{}");
    recorded = config != NULL && json_object_is_type(config, json_type_object)
                   ? vr_json_get_string(config, "storage_root")
                   : NULL;
    if (recorded != NULL)
        root = g_strdup(recorded);
    else if (rel->peer != NULL)
        vr_authz_lookup(sink->authz, rel->peer, &root, &group, NULL);
    if (root != NULL && g_strcmp0(root, peer->storage_root) == 0)
        return true;
    g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_FORBIDDEN,
                "relationship '%s' is replicated here from primary '%s' (storage '%s'): primary "
                "'%s' (trust group '%s', storage '%s') may not write to it: %s is refused",
                relationship, rel->peer != NULL ? rel->peer : "?", root != NULL ? root : "unknown",
                peer->name, peer->group, peer->storage_root, what);
    return false;
}

/* A stream whose apply a failover aborted: its cycle is refused as begin() would (409). */
static bool
vr_replica_sink_fenced_error(VrReplicaSinkStream *stream, GError **error)
{
    g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                "relationship '%s' failed over on this replica while cycle %" PRIu64
                " of disk '%s' was received: the cycle was aborted",
                stream->key.relationship, stream->key.target_cycle, stream->key.disk);
    return false;
}

static gpointer
vr_replica_sink_begin(const VrReceiverKey *key, const VrReceiverPeer *peer, gpointer user_data,
                      GError **error)
{
    VrReplicaSink *sink = user_data;
    g_autoptr(GError) local = NULL;
    g_autofree char *what = g_strdup_printf("cycle %" PRIu64, key->target_cycle);
    VrReplicaSinkStream *stream;
    VrReplicaSinkDisk *disk;

    if (!vr_authz_check_name("relationship", key->relationship, error) ||
        !vr_authz_check_name("disk", key->disk, error) ||
        !vr_replica_sink_check_failover(sink, key, error) ||
        !vr_replica_sink_check_row(sink, key->relationship, peer, true, what, error))
        return NULL;
    disk = vr_replica_sink_disk_get(sink, key, peer, true, error);
    if (disk == NULL)
        return NULL;
    if (disk->stream != NULL) {
        /* The store applies one stream at a time (an older upload of this very stream was
         * dropped by the receiver before this begin). */
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                    "disk '%s' of relationship '%s' is busy: it is receiving cycle %" PRIu64
                    " (base %" PRIu64 ", epoch %" PRIu64 ")",
                    key->disk, key->relationship, disk->stream->key.target_cycle,
                    disk->stream->key.base_cycle, disk->stream->key.epoch);
        return NULL;
    }
    if (vr_replica_sink_published(disk->store, key)) {
        /* A replay, e.g. after a replica restart lost the 204: nothing to apply. */
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_COMMITTED,
                    "cycle %" PRIu64 " of disk '%s' of relationship '%s' is already published",
                    key->target_cycle, key->disk, key->relationship);
        return NULL;
    }
    if (!vr_replica_store_check(disk->store, key->epoch, key->base_cycle, key->target_cycle,
                                &local)) {
        vr_replica_sink_store_error(error, g_steal_pointer(&local), key);
        return NULL;
    }
    stream = g_new0(VrReplicaSinkStream, 1);
    stream->sink = sink;
    stream->disk = disk;
    stream->key = *key;
    stream->peer = g_strdup(peer->name);
    stream->root = g_strdup(peer->storage_root);
    disk->stream = stream;
    g_debug("receiving cycle %" PRIu64 " (base %" PRIu64 ", epoch %" PRIu64
            ") of '%s' from '%s' into '%s'",
            key->target_cycle, key->base_cycle, key->epoch, key->disk, peer->name, disk->dir);
    return stream;
}

/*
 * The BEGIN record's identity: the receiver matched it against the key already; checked
 * again here, with what the store needs (a cycle, coherent flags, a size in whole sectors),
 * so a stream the store cannot take is the sender's error (400), not the replica's (500).
 */
static bool
vr_replica_sink_check_identity(VrReplicaSinkStream *stream, const VrWireIdentity *id,
                               GError **error)
{
    const VrReceiverKey *key = &stream->key;
    const char *problem = NULL;

    if (id->kind != VR_WIRE_KIND_CYCLE)
        problem = "it is not a cycle";
    else if (strcmp(id->relationship, key->relationship) != 0 || strcmp(id->disk, key->disk) != 0 ||
             id->epoch != key->epoch || id->base_cycle != key->base_cycle ||
             id->target_cycle != key->target_cycle)
        problem = "it names another stream than the request";
    else if ((id->flags & ~(uint32_t)VR_REPLICA_SINK_FLAGS) != 0 ||
             (id->flags & VR_REPLICA_SINK_NO_BASE) == VR_REPLICA_SINK_NO_BASE ||
             (key->base_cycle == 0) != ((id->flags & VR_REPLICA_SINK_NO_BASE) != 0))
        problem = "its flags do not fit its base cycle";
    else if (id->virtual_size == 0 || id->virtual_size % VR_REPLICA_SINK_SECTOR != 0)
        problem = "its virtual size is not a positive multiple of 512 bytes";
    if (problem == NULL)
        return true;
    g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                "the BEGIN record of cycle %" PRIu64 " of disk '%s' of relationship '%s' "
                "cannot be applied: %s",
                key->target_cycle, key->disk, key->relationship, problem);
    return false;
}

static bool
vr_replica_sink_record(gpointer handle, const VrWireRecord *record, GError **error)
{
    VrReplicaSinkStream *stream = handle;
    g_autoptr(GError) local = NULL;

    if (stream->fenced)
        return vr_replica_sink_fenced_error(stream, error);
    switch (record->type) {
    case VR_WIRE_RECORD_BEGIN:
        if (!vr_replica_sink_check_identity(stream, record->identity, error))
            return false;
        stream->apply = vr_replica_store_begin(stream->disk->store, record->identity, &local);
        if (stream->apply == NULL)
            return vr_replica_sink_store_error(error, g_steal_pointer(&local), &stream->key);
        memcpy(stream->domain_uuid, record->identity->domain_uuid, sizeof(stream->domain_uuid));
        stream->flags = record->identity->flags;
        stream->started_ms = g_get_real_time() / 1000;
        return true;
    case VR_WIRE_RECORD_DATA:
    case VR_WIRE_RECORD_ZERO:
        if (stream->apply == NULL)
            break;
        stream->bytes += record->length;
        if (!vr_replica_apply_record(stream->apply, record, &local))
            return vr_replica_sink_store_error(error, g_steal_pointer(&local), &stream->key);
        return true;
    case VR_WIRE_RECORD_END:
        /* Verified by the decoder; the store keeps its digest. commit() follows. */
        if (stream->apply == NULL)
            break;
        if (!vr_replica_apply_record(stream->apply, record, &local))
            return vr_replica_sink_store_error(error, g_steal_pointer(&local), &stream->key);
        return true;
    case VR_WIRE_RECORD_HASHES:
        break;
    }
    g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                "record %" PRIu64 " of cycle %" PRIu64 " cannot be applied: type %d after %s",
                record->index, stream->key.target_cycle, (int)record->type,
                stream->apply != NULL ? "a cycle's BEGIN" : "no BEGIN");
    return false;
}

/* The relationship's row (made at its first stream, role replica) with the stream's epoch. */
static bool
vr_replica_sink_state_relationship(VrReplicaSinkStream *stream, GError **error)
{
    VrState *state = stream->sink->state;
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(GError) local = NULL;
    char uuid[37];

    g_autoptr(json_object) config = NULL;

    rel = vr_state_relationship_get(state, stream->key.relationship, &local);
    config = rel != NULL && rel->config != NULL ? json_tokener_parse(rel->config) : NULL;
    if (rel != NULL && rel->epoch == stream->key.epoch && g_strcmp0(rel->peer, stream->peer) == 0 &&
        config != NULL && g_strcmp0(vr_json_get_string(config, "storage_root"), stream->root) == 0)
        return true;
    if (rel == NULL && !g_error_matches(local, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND)) {
        g_propagate_error(error, g_steal_pointer(&local));
        return false;
    }
    if (rel == NULL) {
        const uint8_t *u = stream->domain_uuid;

        g_snprintf(uuid, sizeof(uuid),
                   "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                   u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                   u[14], u[15]);
        rel = g_new0(VrStateRelationship, 1);
        rel->id = g_strdup(stream->key.relationship);
        rel->role = VR_STATE_ROLE_REPLICA;
        /* Until the primary's domain XML names it (the standby domain). */
        rel->domain_name = g_strdup(stream->key.relationship);
        rel->domain_uuid = g_strdup(uuid);
        rel->state = g_strdup("Replicating");
        rel->config = g_strdup("{}");
    }
    g_free(rel->peer);
    rel->peer = g_strdup(stream->peer);
    rel->epoch = stream->key.epoch;
    /* Where its stores are, for a failover whatever becomes of the authorization entry. */
    if (config == NULL || !json_object_is_type(config, json_type_object)) {
        g_clear_pointer(&config, json_object_put);
        config = json_object_new_object();
    }
    json_object_object_add(config, "storage_root", json_object_new_string(stream->root));
    g_free(rel->config);
    rel->config = g_strdup(json_object_to_json_string_ext(config, JSON_C_TO_STRING_PLAIN));
    return vr_state_relationship_put(state, rel, error);
}

/*
 * The cycle in the state database's history, and (published) the disk's points mirrored
 * from the manifest. The manifest is the commit point: a failure here fails nothing, it is
 * kept for vr_replica_sink_get_state_error(), and the next cycle mirrors the points again.
 */
static void
vr_replica_sink_record_state(VrReplicaSinkStream *stream, VrStateCycleResult result,
                             const char *why)
{
    VrReplicaSink *sink = stream->sink;
    g_autoptr(GError) local = NULL;
    const VrReplicaPoint *points;
    VrStateCycle cycle = { 0 };
    guint n = 0;

    if (sink->state == NULL)
        return;
    cycle.cycle = stream->key.target_cycle;
    cycle.result = result;
    cycle.flags = stream->flags;
    cycle.started_ms = stream->started_ms;
    cycle.finished_ms = MAX(g_get_real_time() / 1000, stream->started_ms);
    cycle.bytes = stream->bytes;
    cycle.error = why;
    points = vr_replica_store_points(stream->disk->store, &n);
    if (!vr_replica_sink_state_relationship(stream, &local) ||
        !vr_state_cycle_add(sink->state, stream->key.relationship, &cycle, &local) ||
        (result == VR_STATE_CYCLE_OK &&
         !vr_state_points_sync(sink->state, stream->key.relationship, stream->key.disk, points, n,
                               &local))) {
        g_debug("cannot record cycle %" PRIu64 " of '%s' in the state database: %s",
                stream->key.target_cycle, stream->disk->dir, local->message);
        g_clear_error(&sink->state_error);
        sink->state_error = g_steal_pointer(&local);
        return;
    }
    g_clear_error(&sink->state_error);
}

static bool
vr_replica_sink_commit(gpointer handle, GError **error)
{
    VrReplicaSinkStream *stream = handle;
    g_autoptr(GError) local = NULL;

    if (stream->fenced)
        return vr_replica_sink_fenced_error(stream, error);
    if (stream->apply == NULL) {
        g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                    "cycle %" PRIu64 " cannot be committed: it had no BEGIN record",
                    stream->key.target_cycle);
        return false;
    }
    /* The store frees the apply either way; on failure the receiver aborts the stream next. */
    if (!vr_replica_apply_commit(g_steal_pointer(&stream->apply), &local)) {
        vr_replica_sink_record_state(stream, VR_STATE_CYCLE_FAILED, local->message);
        return vr_replica_sink_store_error(error, g_steal_pointer(&local), &stream->key);
    }
    g_debug("published cycle %" PRIu64 " of '%s'", stream->key.target_cycle, stream->disk->dir);
    /* Published: a failed merge of old points does not undo that; the next one retries. */
    g_clear_error(&stream->sink->retention_error);
    if (!vr_replica_store_retain_spaced(stream->disk->store, stream->sink->keep,
                                        stream->sink->interval_s, &local)) {
        g_debug("retention of '%s' failed: %s", stream->disk->dir, local->message);
        stream->sink->retention_error = g_steal_pointer(&local);
    }
    /* The cached hash list describes a point that is no longer the latest. */
    vr_replica_sink_hashes_sweep(stream->disk, 0);
    vr_replica_sink_record_state(stream, VR_STATE_CYCLE_OK, NULL);
    /* A published point: the standby can be defined (or brought up to date) now. */
    vr_replica_sink_domain_update(stream->sink, stream->root, stream->key.relationship,
                                  stream->peer, stream->key.epoch);
    vr_replica_sink_stream_free(stream);
    return true;
}

static void
vr_replica_sink_abort(gpointer handle)
{
    VrReplicaSinkStream *stream = handle;

    g_debug("cycle %" PRIu64 " of '%s' aborted%s", stream->key.target_cycle, stream->disk->dir,
            stream->apply != NULL ? ": removing its image" : "");
    /* A stream that began to apply and failed is a failed cycle in the history. */
    if (stream->apply != NULL)
        vr_replica_sink_record_state(stream, VR_STATE_CYCLE_FAILED,
                                     "the stream failed or was interrupted before its commit");
    vr_replica_apply_abort(g_steal_pointer(&stream->apply));
    vr_replica_sink_stream_free(stream);
}

/* ---- hash lists ------------------------------------------------------------------- */

/* hashes-<cycle> (*@partial false) or hashes-<cycle>.tmp (true), cycle canonical decimal. */
static bool
vr_replica_sink_hashes_name(const char *name, uint64_t *cycle, bool *partial)
{
    const char *p = name + strlen(VR_REPLICA_SINK_HASHES);
    uint64_t v = 0;

    if (!g_str_has_prefix(name, VR_REPLICA_SINK_HASHES) || *p < '1' || *p > '9')
        return false;
    for (; g_ascii_isdigit(*p); p++) {
        unsigned digit = (unsigned)(*p - '0');

        if (v > (G_MAXUINT64 - digit) / 10)
            return false;
        v = v * 10 + digit;
    }
    if (*p != '\0' && strcmp(p, VR_REPLICA_SINK_HASHES_TMP) != 0)
        return false;
    *cycle = v;
    *partial = *p != '\0';
    return true;
}

/*
 * Remove the hash lists in @disk's directory but that of point @keep (0: all of them), and
 * every unfinished one. Best effort: a list left behind costs space, never a wrong answer
 * (the name says which point it describes), and the next sweep tries again.
 */
static void
vr_replica_sink_hashes_sweep(VrReplicaSinkDisk *disk, uint64_t keep)
{
    g_autoptr(GDir) dir = g_dir_open(disk->dir, 0, NULL);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;

    if (dir == NULL)
        return;
    while ((name = g_dir_read_name(dir)) != NULL) {
        uint64_t cycle;
        bool partial;

        if (vr_replica_sink_hashes_name(name, &cycle, &partial) && (partial || cycle != keep))
            g_ptr_array_add(names, g_strdup(name));
    }
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *path = g_build_filename(disk->dir, names->pdata[i], NULL);

        if (unlink(path) < 0 && errno != ENOENT)
            g_debug("cannot remove the hash list '%s': %s", path, g_strerror(errno));
        else
            g_debug("removed the hash list '%s'", path);
    }
}

/* Is @path a complete hash list of a disk of @point's size (a list made earlier)? */
static bool
vr_replica_sink_hashes_cached(const char *path, const VrReplicaPoint *point)
{
    g_autoptr(VrHashlistReader) reader = NULL;
    g_autoptr(GError) local = NULL;
    struct stat st;

    if (lstat(path, &st) < 0)
        return false;
    if (S_ISREG(st.st_mode))
        reader = vr_hashlist_reader_open(path, &local);
    if (reader != NULL && vr_hashlist_reader_get_virtual_size(reader) == point->virtual_size)
        return true;
    g_debug("hash list '%s' is not one of cycle %" PRIu64 " (%s): made again", path, point->cycle,
            local != NULL ? local->message : "not a regular file, or another size");
    return false;
}

/*
 * The hash list of the latest point of a disk: hashes-<cycle> in the disk's directory, made
 * once per point (a published point never changes) and reused until a newer point is
 * published. Made here on the receiver's thread, which it blocks meanwhile (the store is
 * used from that thread only): written as hashes-<cycle>.tmp, synced, renamed. Only reads
 * otherwise: a missing relationship, owner or disk is 404, and no directory is made.
 */
static bool
vr_replica_sink_hashes(const char *relationship, const char *disk_name, const VrReceiverPeer *peer,
                       gpointer user_data, char **path_out, uint64_t *cycle_out,
                       uint64_t *epoch_out, GError **error)
{
    VrReplicaSink *sink = user_data;
    g_autoptr(GError) local = NULL;
    g_autofree char *name = NULL;
    g_autofree char *path = NULL;
    g_autofree char *tmp = NULL;
    VrReceiverKey key = { 0 };
    const VrReplicaPoint *points;
    VrReplicaPoint latest;
    VrReplicaSinkDisk *disk;
    uint64_t cycle = 0;
    gint64 start;
    guint n;

    if (!vr_authz_check_name("relationship", relationship, error) ||
        !vr_authz_check_name("disk", disk_name, error))
        return false;
    g_strlcpy(key.relationship, relationship, sizeof(key.relationship));
    g_strlcpy(key.disk, disk_name, sizeof(key.disk));
    disk = vr_replica_sink_disk_get(sink, &key, peer, false, error);
    if (disk == NULL)
        return false;
    points = vr_replica_store_points(disk->store, &n);
    if (n == 0) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_NOT_FOUND,
                    "disk '%s' of relationship '%s' has no recovery point yet", key.disk,
                    key.relationship);
        return false;
    }
    latest = points[n - 1];
    name = g_strdup_printf(VR_REPLICA_SINK_HASHES "%" PRIu64, latest.cycle);
    path = g_build_filename(disk->dir, name, NULL);
    if (!vr_replica_sink_hashes_cached(path, &latest)) {
        vr_replica_sink_hashes_sweep(disk, 0);
        tmp = g_strconcat(path, VR_REPLICA_SINK_HASHES_TMP, NULL);
        start = g_get_monotonic_time();
        if (!vr_replica_hashes_write(disk->store, tmp, &cycle, &local)) {
            if (g_error_matches(local, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_BUSY)) {
                g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_BUSY,
                            "disk '%s' of relationship '%s' is busy: %s", key.disk,
                            key.relationship, local->message);
                return false;
            }
            return vr_replica_sink_store_error(error, g_steal_pointer(&local), &key);
        }
        /* The store is ours alone on this thread: the latest point cannot have changed. */
        g_assert(cycle == latest.cycle);
        /*
         * The writer synced the file: whichever name a crash leaves, its content is whole (a
         * .tmp is swept, a list is reused). The directory is not synced: a cache.
         */
        if (rename(tmp, path) < 0) {
            int errsv = errno;

            unlink(tmp);
            return vr_replica_sink_errno(error, errsv, "rename", tmp);
        }
        g_debug("hash list of cycle %" PRIu64 " of '%s' made in %" G_GINT64_FORMAT " ms",
                latest.cycle, disk->dir, (g_get_monotonic_time() - start) / 1000);
    }
    *path_out = g_steal_pointer(&path);
    *cycle_out = latest.cycle;
    *epoch_out = latest.epoch;
    return true;
}

/* ---- the domain XML and the standby --------------------------------------------- */

static bool vr_replica_sink_invalid(GError **error, const char *format, ...) G_GNUC_PRINTF(2, 3);

static bool
vr_replica_sink_invalid(GError **error, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    g_propagate_error(
        error, g_error_new_valist(VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_INVALID, format, args));
    va_end(args);
    return false;
}

/* Target dev -> <relationship dir>/<dev>/failover.qcow2, for every dev of @targets. */
static GHashTable *
vr_replica_sink_disk_paths(const char *rel_path, GPtrArray *targets)
{
    GHashTable *paths = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);

    for (guint i = 0; i < targets->len; i++) {
        g_hash_table_insert(
            paths, targets->pdata[i],
            g_build_filename(rel_path, targets->pdata[i], VR_REPLICA_SINK_FAILOVER, NULL));
    }
    return paths;
}

/* Is @node an element @name without a namespace? */
static bool
vr_replica_sink_xml_is(const xmlNode *node, const char *name)
{
    return node->type == XML_ELEMENT_NODE && node->ns == NULL &&
           strcmp((const char *)node->name, name) == 0;
}

/* The target dev of every <disk device='disk'> (or without device) of <devices>. */
static void
vr_replica_sink_xml_disks(xmlNode *devices, GPtrArray *targets)
{
    for (xmlNode *disk = devices->children; disk != NULL; disk = disk->next) {
        xmlChar *device;
        bool is_disk;

        if (!vr_replica_sink_xml_is(disk, "disk"))
            continue;
        device = xmlGetNoNsProp(disk, (const xmlChar *)"device");
        is_disk = device == NULL || strcmp((const char *)device, "disk") == 0;
        xmlFree(device);
        for (xmlNode *target = disk->children; is_disk && target != NULL; target = target->next) {
            xmlChar *dev;

            if (!vr_replica_sink_xml_is(target, "target"))
                continue;
            dev = xmlGetNoNsProp(target, (const xmlChar *)"dev");
            if (dev != NULL)
                g_ptr_array_add(targets, g_strdup((const char *)dev));
            xmlFree(dev);
            break;
        }
    }
}

/*
 * Is @xml (@len bytes and a NUL) a domain XML a standby can be defined from? Its <name>
 * (*@name_out) and the target devs of its disks (*@targets_out: device='disk', each a disk
 * name of this replica, [a-z0-9]{1,31}), then a dry run of vr_standby_build_xml() with the
 * standby's disk paths beneath @rel_path: what the standby refuses (no or a bad UUID, a
 * device bound to the primary's hardware, two disks with one target...) is refused here.
 * VR_RECEIVER_ERROR_INVALID (400) for all of it. No libvirt call.
 */
static bool
vr_replica_sink_domain_check(const char *relationship, const char *rel_path, const char *xml,
                             gsize len, char **name_out, GPtrArray **targets_out, GError **error)
{
    g_autoptr(xmlParserCtxt) ctxt = NULL;
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(GPtrArray) targets = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GHashTable) paths = NULL;
    g_autoptr(GError) local = NULL;
    g_autofree char *name = NULL;
    g_autofree char *standby = NULL;
    xmlNode *root;

    if (len > G_MAXINT || memchr(xml, '\0', len) != NULL) {
        return vr_replica_sink_invalid(
            error, "the domain XML of relationship '%s' holds a NUL byte", relationship);
    }
    ctxt = xmlNewParserCtxt();
    if (ctxt == NULL) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "out of memory");
        return false;
    }
    /* No network, no entities substituted, no output: the XML is the primary's. */
    doc = xmlCtxtReadMemory(ctxt, xml, (int)len, VR_REPLICA_SINK_DOMAIN, NULL,
                            XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    root = doc != NULL ? xmlDocGetRootElement(doc) : NULL;
    if (root == NULL) {
        const xmlError *err = xmlCtxtGetLastError(ctxt);
        g_autofree char *msg =
            g_strdup(err != NULL && err->message != NULL ? err->message : "empty document");

        return vr_replica_sink_invalid(error,
                                       "the domain XML of relationship '%s' does not parse: %s",
                                       relationship, g_strstrip(msg));
    }
    if (!vr_replica_sink_xml_is(root, "domain")) {
        return vr_replica_sink_invalid(error,
                                       "the domain XML of relationship '%s' has <%s> at its root, "
                                       "not <domain>",
                                       relationship, (const char *)root->name);
    }
    for (xmlNode *node = root->children; node != NULL; node = node->next) {
        if (vr_replica_sink_xml_is(node, "name") && name == NULL) {
            xmlChar *text = xmlNodeGetContent(node);

            name = g_strstrip(g_strdup(text != NULL ? (const char *)text : ""));
            xmlFree(text);
        } else if (vr_replica_sink_xml_is(node, "devices")) {
            vr_replica_sink_xml_disks(node, targets);
        }
    }
    if (name == NULL || name[0] == '\0') {
        return vr_replica_sink_invalid(error, "the domain XML of relationship '%s' has no <name>",
                                       relationship);
    }
    for (guint i = 0; i < targets->len; i++) {
        const char *dev = targets->pdata[i];
        gsize n = strlen(dev);
        bool ok = n > 0 && n <= VR_WIRE_DISK_MAX;

        for (gsize j = 0; ok && j < n; j++)
            ok = g_ascii_islower(dev[j]) || g_ascii_isdigit(dev[j]);
        if (!ok) {
            g_autofree char *shown = g_strescape(dev, NULL);

            return vr_replica_sink_invalid(error,
                                           "the domain XML of relationship '%s' has disk target "
                                           "'%.40s', not a disk name of the wire ([a-z0-9]{1,%d})",
                                           relationship, shown, VR_WIRE_DISK_MAX);
        }
    }
    /* The standby's own rules, with the paths it will have (the naming rule is configuration). */
    paths = vr_replica_sink_disk_paths(rel_path, targets);
    standby = vr_standby_build_xml(xml,
                                   &(VrStandbyConfig){
                                       .relationship = relationship,
                                       .epoch = 1,
                                       .disk_paths = paths,
                                   },
                                   &local);
    if (standby == NULL) {
        return vr_replica_sink_invalid(
            error, "the domain XML of relationship '%s' cannot define a standby: %s", relationship,
            local->message);
    }
    *name_out = g_steal_pointer(&name);
    *targets_out = g_steal_pointer(&targets);
    return true;
}

/*
 * Write @xml as <relationship>/domain.xml through @rel_fd: domain.xml.tmp (mode 0600, made
 * anew, so never through a link) written and synced, renamed over domain.xml, the directory
 * synced.
 */
static bool
vr_replica_sink_domain_write(int rel_fd, const char *rel_path, const char *xml, gsize len,
                             GError **error)
{
    g_autofree char *tmp = g_build_filename(rel_path, VR_REPLICA_SINK_DOMAIN_TMP, NULL);
    gsize done = 0;
    int errsv;
    int fd;

    if (unlinkat(rel_fd, VR_REPLICA_SINK_DOMAIN_TMP, 0) < 0 && errno != ENOENT)
        return vr_replica_sink_errno(error, errno, "remove", tmp);
    fd = openat(rel_fd, VR_REPLICA_SINK_DOMAIN_TMP,
                O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return vr_replica_sink_errno(error, errno, "create", tmp);
    while (done < len) {
        ssize_t n = write(fd, xml + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            errsv = n < 0 ? errno : EIO; /* a write of nothing sets no errno */
            close(fd);
            unlinkat(rel_fd, VR_REPLICA_SINK_DOMAIN_TMP, 0);
            return vr_replica_sink_errno(error, errsv, "write", tmp);
        }
        done += (gsize)n;
    }
    if (fsync(fd) < 0) {
        errsv = errno;
        close(fd);
        unlinkat(rel_fd, VR_REPLICA_SINK_DOMAIN_TMP, 0);
        return vr_replica_sink_errno(error, errsv, "sync", tmp);
    }
    close(fd);
    if (renameat(rel_fd, VR_REPLICA_SINK_DOMAIN_TMP, rel_fd, VR_REPLICA_SINK_DOMAIN) < 0) {
        errsv = errno;
        unlinkat(rel_fd, VR_REPLICA_SINK_DOMAIN_TMP, 0);
        return vr_replica_sink_errno(error, errsv, "rename", tmp);
    }
    if (fsync(rel_fd) < 0)
        return vr_replica_sink_errno(error, errno, "sync directory", rel_path);
    return true;
}

/*
 * <root>/<relationship>/domain.xml, read without following a link: *@xml_out (transfer
 * full, NUL-terminated) and *@len_out, or *@xml_out NULL when there is none yet.
 */
static bool
vr_replica_sink_domain_read(const char *root, const char *relationship, char **xml_out,
                            gsize *len_out, GError **error)
{
    g_autofree char *rel_path = g_build_filename(root, relationship, NULL);
    g_autofree char *path = g_build_filename(rel_path, VR_REPLICA_SINK_DOMAIN, NULL);
    g_auto(VrReplicaSinkFd) root_fd = -1;
    g_auto(VrReplicaSinkFd) rel_fd = -1;
    g_auto(VrReplicaSinkFd) fd = -1;
    g_autofree char *xml = NULL;
    gsize done = 0;
    struct stat st;

    *xml_out = NULL;
    root_fd = vr_replica_sink_open_root(root, error);
    if (root_fd < 0)
        return false;
    rel_fd = openat(root_fd, relationship, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (rel_fd < 0 && errno == ENOENT)
        return true;
    if (rel_fd < 0)
        return vr_replica_sink_errno(error, errno, "open directory", rel_path);
    /* O_NONBLOCK: a FIFO planted there must not hang the receiver (refused below). */
    fd = openat(rel_fd, VR_REPLICA_SINK_DOMAIN, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT)
        return true;
    if (fd < 0)
        return vr_replica_sink_errno(error, errno, "open", path);
    if (fstat(fd, &st) < 0)
        return vr_replica_sink_errno(error, errno, "stat", path);
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > VR_RECEIVER_DOMAIN_MAX) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "'%s' is not a regular file of 1 to %d bytes", path, VR_RECEIVER_DOMAIN_MAX);
        return false;
    }
    xml = g_malloc((gsize)st.st_size + 1);
    while (done < (gsize)st.st_size) {
        ssize_t n = pread(fd, xml + done, (gsize)st.st_size - done, (off_t)done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return vr_replica_sink_errno(error, errno, "read", path);
        if (n == 0)
            break;
        done += (gsize)n;
    }
    xml[done] = '\0';
    *len_out = done;
    *xml_out = g_steal_pointer(&xml);
    return true;
}

/* Keep @local (taken) as the last standby failure, naming the relationship. */
static void
vr_replica_sink_standby_failed(VrReplicaSink *sink, const char *relationship, GError *local)
{
    g_prefix_error(&local, "standby of relationship '%s': ", relationship);
    g_debug("%s", local->message);
    g_clear_error(&sink->standby_error);
    sink->standby_error = local;
}

/* The primary's domain @name into the relationship's row of the state database, if it has one. */
static void
vr_replica_sink_state_domain(VrReplicaSink *sink, const char *relationship, const char *name)
{
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(GError) local = NULL;

    rel = vr_state_relationship_get(sink->state, relationship, &local);
    if (rel == NULL && g_error_matches(local, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND))
        return; /* the first stream makes the row, and its commit names the domain */
    if (rel != NULL && g_strcmp0(rel->domain_name, name) == 0)
        return;
    if (rel != NULL) {
        g_free(rel->domain_name);
        rel->domain_name = g_strdup(name);
        if (vr_state_relationship_put(sink->state, rel, &local))
            return;
    }
    g_debug("cannot record the domain of '%s' in the state database: %s", relationship,
            local->message);
    g_clear_error(&sink->state_error);
    sink->state_error = g_steal_pointer(&local);
}

/*
 * What <root>/<relationship>/domain.xml brings, when there is one: its domain name into the
 * state database (the relationship's row, when it exists), and the standby defined from it
 * at @epoch (0: not now, no point is published yet) when one is configured and it was not
 * defined from this XML at this epoch yet (in this process: after a restart it is defined
 * again, which changes nothing). A failure fails nothing: it is kept for
 * vr_replica_sink_get_standby_error() (or _get_state_error()), and the next published
 * cycle tries again. Blocks on libvirt meanwhile.
 */
static void
vr_replica_sink_domain_update(VrReplicaSink *sink, const char *root, const char *relationship,
                              const char *peer, uint64_t epoch)
{
    g_autofree char *rel_path = g_build_filename(root, relationship, NULL);
    g_autoptr(GPtrArray) targets = NULL;
    g_autoptr(GHashTable) paths = NULL;
    g_autoptr(GError) local = NULL;
    g_autoptr(virDomain) dom = NULL;
    g_autofree char *sha256 = NULL;
    g_autofree char *digest = NULL;
    g_autofree char *name = NULL;
    g_autofree char *xml = NULL;
    bool define = sink->standby_conn != NULL && epoch > 0;
    gsize len = 0;

    if (sink->state == NULL && !define)
        return;
    if (!vr_replica_sink_domain_read(root, relationship, &xml, &len, &local) ||
        (xml != NULL && !vr_replica_sink_domain_check(relationship, rel_path, xml, len, &name,
                                                      &targets, &local))) {
        if (define) {
            vr_replica_sink_standby_failed(sink, relationship, g_steal_pointer(&local));
        } else {
            g_clear_error(&sink->state_error);
            sink->state_error = g_steal_pointer(&local);
        }
        return;
    }
    if (xml == NULL)
        return; /* the primary has not sent it yet */
    if (sink->state != NULL)
        vr_replica_sink_state_domain(sink, relationship, name);
    if (!define)
        return;
    sha256 = g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)xml, len);
    digest = g_strdup_printf("%s %" PRIu64, sha256, epoch);
    if (g_strcmp0(g_hash_table_lookup(sink->standby_defined, rel_path), digest) == 0)
        return; /* defined from this XML at this epoch already */
    paths = vr_replica_sink_disk_paths(rel_path, targets);
    dom = vr_standby_define(sink->standby_conn, xml,
                            &(VrStandbyConfig){
                                .relationship = relationship,
                                .primary_host = peer,
                                .epoch = epoch,
                                .disk_paths = paths,
                                .network_map = sink->network_map,
                                .name_rule = sink->name_rule,
                            },
                            &local);
    if (dom == NULL) {
        vr_replica_sink_standby_failed(sink, relationship, g_steal_pointer(&local));
        return;
    }
    g_debug("standby '%s' of relationship '%s' defined from domain '%s' at epoch %" PRIu64,
            virDomainGetName(dom), relationship, name, epoch);
    g_hash_table_replace(sink->standby_defined, g_steal_pointer(&rel_path),
                         g_steal_pointer(&digest));
    g_clear_error(&sink->standby_error);
}

/*
 * The latest epoch of a published point of the disks @targets of @key's relationship: 0
 * when none of them has one (or a directory yet).
 */
static uint64_t
vr_replica_sink_published_epoch(VrReplicaSink *sink, const VrReceiverKey *key,
                                const VrReceiverPeer *peer, GPtrArray *targets)
{
    uint64_t epoch = 0;

    for (guint i = 0; i < targets->len; i++) {
        g_autoptr(GError) local = NULL;
        VrReceiverKey disk_key = *key;
        const VrReplicaPoint *points;
        VrReplicaSinkDisk *disk;
        guint n;

        g_strlcpy(disk_key.disk, targets->pdata[i], sizeof(disk_key.disk));
        disk = vr_replica_sink_disk_get(sink, &disk_key, peer, false, &local);
        if (disk == NULL) {
            g_debug("disk '%s' of '%s' has no point: %s", disk_key.disk, key->relationship,
                    local->message);
            continue;
        }
        points = vr_replica_store_points(disk->store, &n);
        if (n > 0)
            epoch = MAX(epoch, points[n - 1].epoch);
    }
    return epoch;
}

/*
 * PUT /v1/domains/{relationship}: the primary's domain XML, checked (400), the trust group
 * as for a stream (a relationship without an owner becomes the peer's group's), stored
 * atomically as <relationship>/domain.xml; then, when a disk of it has a published point,
 * the standby is defined from it.
 */
static bool
vr_replica_sink_domain(const char *relationship, const VrReceiverPeer *peer, const char *xml,
                       gsize len, gpointer user_data, GError **error)
{
    VrReplicaSink *sink = user_data;
    g_autofree char *rel_path = NULL;
    g_autofree char *name = NULL;
    g_autoptr(GPtrArray) targets = NULL;
    g_auto(VrReplicaSinkFd) rel_fd = -1;
    VrReceiverKey key = { 0 };
    uint64_t epoch;

    if (!vr_authz_check_name("relationship", relationship, error))
        return false;
    g_strlcpy(key.relationship, relationship, sizeof(key.relationship));
    /* A primary that failed over away (or whose role was reversed) defines nothing here,
     * nor one whose relationship of that id is not the one replicated here. */
    if (!vr_replica_sink_domain_allowed(sink, relationship, error) ||
        !vr_replica_sink_check_row(sink, relationship, peer, true, "its domain XML", error))
        return false;
    rel_path = g_build_filename(peer->storage_root, relationship, NULL);
    /* Checked before anything is made: a refused XML leaves no trace. */
    if (!vr_replica_sink_domain_check(relationship, rel_path, xml, len, &name, &targets, error))
        return false;
    rel_fd = vr_replica_sink_rel_open(sink, &key, peer, true, error);
    if (rel_fd < 0 || !vr_replica_sink_domain_write(rel_fd, rel_path, xml, len, error))
        return false;
    g_debug("domain '%s' of relationship '%s' from '%s' stored (%" G_GSIZE_FORMAT " bytes)", name,
            relationship, peer->name, len);
    epoch = vr_replica_sink_published_epoch(sink, &key, peer, targets);
    vr_replica_sink_domain_update(sink, peer->storage_root, relationship, peer->name, epoch);
    return true;
}

/*
 * POST /v1/failover/{relationship}: the trust group as for reading (the relationship must
 * exist), the body one JSON object, then the daemon's handler runs the failover.
 */
static bool
vr_replica_sink_failover(const char *relationship, const VrReceiverPeer *peer, const char *body,
                         gsize len, gpointer user_data, char **reply_out, GError **error)
{
    VrReplicaSink *sink = user_data;
    g_auto(VrReplicaSinkFd) rel_fd = -1;
    VrReceiverKey key = { 0 };
    json_object *request;
    json_object *reply;
    json_tokener *tok;

    if (!vr_authz_check_name("relationship", relationship, error))
        return false;
    if (sink->failover == NULL) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_BUSY,
                    "this replica cannot fail over now (no libvirt connection)");
        return false;
    }
    g_strlcpy(key.relationship, relationship, sizeof(key.relationship));
    rel_fd = vr_replica_sink_rel_open(sink, &key, peer, false, error);
    /* Not the role: after a failover with reverse replication the row is this host's primary
     * one, and the same request again gets the same answer. */
    if (rel_fd < 0 ||
        !vr_replica_sink_check_row(sink, relationship, peer, false, "its failover", error))
        return false;
    tok = json_tokener_new();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    request = json_tokener_parse_ex(tok, body, (int)len);
    if (request != NULL && (json_tokener_get_parse_end(tok) != len ||
                            !json_object_is_type(request, json_type_object))) {
        json_object_put(request);
        request = NULL;
    }
    json_tokener_free(tok);
    if (request == NULL) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_INVALID,
                    "the failover request is not one JSON object");
        return false;
    }
    reply = sink->failover(relationship, peer->name, request, sink->failover_data, error);
    json_object_put(request);
    if (reply == NULL)
        return false;
    *reply_out = g_strdup(json_object_to_json_string_ext(reply, JSON_C_TO_STRING_PLAIN));
    json_object_put(reply);
    return true;
}

void
vr_replica_sink_set_failover_handler(VrReplicaSink *sink, VrReplicaSinkFailoverFunc func,
                                     gpointer user_data)
{
    sink->failover = func;
    sink->failover_data = user_data;
}

static const VrReceiverSink vr_replica_sink_callbacks = {

    .begin = vr_replica_sink_begin,
    .record = vr_replica_sink_record,
    .commit = vr_replica_sink_commit,
    .abort = vr_replica_sink_abort,
    .hashes = vr_replica_sink_hashes,
    .domain = vr_replica_sink_domain,
    .failover = vr_replica_sink_failover,
};

void
vr_replica_sink_set_recovery_points(VrReplicaSink *sink, guint keep)
{
    sink->keep = MIN(keep, VR_REPLICA_STORE_KEEP_MAX);
}

void
vr_replica_sink_set_point_interval(VrReplicaSink *sink, guint seconds)
{
    sink->interval_s = seconds;
}

void
vr_replica_sink_set_state(VrReplicaSink *sink, VrState *state)
{
    sink->state = state;
}

const GError *
vr_replica_sink_get_state_error(VrReplicaSink *sink)
{
    return sink->state_error;
}

const GError *
vr_replica_sink_get_retention_error(VrReplicaSink *sink)
{
    return sink->retention_error;
}

void
vr_replica_sink_set_standby(VrReplicaSink *sink, virConnectPtr conn, const char *name_rule,
                            GHashTable *network_map)
{
    sink->standby_conn = conn;
    g_free(sink->name_rule);
    sink->name_rule = g_strdup(name_rule);
    sink->network_map = network_map;
    /* Another libvirt or rule: every standby is defined again at its next cycle. */
    g_hash_table_remove_all(sink->standby_defined);
}

const GError *
vr_replica_sink_get_standby_error(VrReplicaSink *sink)
{
    return sink->standby_error;
}

const VrReceiverSink *
vr_replica_sink_get_sink(void)
{
    return &vr_replica_sink_callbacks;
}

void
vr_replica_sink_fence(VrReplicaSink *sink, const char *relationship)
{
    GHashTableIter iter;
    gpointer value;

    g_hash_table_add(sink->fenced, g_strdup(relationship));
    g_hash_table_iter_init(&iter, sink->disks);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        VrReplicaSinkDisk *disk = value;
        VrReplicaSinkStream *stream = disk->stream;

        if (stream == NULL || strcmp(stream->key.relationship, relationship) != 0)
            continue;
        stream->fenced = true;
        if (stream->apply == NULL)
            continue;
        g_debug("failover of '%s': aborting cycle %" PRIu64 " of '%s' before its commit",
                relationship, stream->key.target_cycle, disk->dir);
        vr_replica_sink_record_state(stream, VR_STATE_CYCLE_FAILED,
                                     "aborted by a failover before its commit");
        vr_replica_apply_abort(g_steal_pointer(&stream->apply));
    }
}

void
vr_replica_sink_unfence(VrReplicaSink *sink, const char *relationship)
{
    g_hash_table_remove(sink->fenced, relationship);
}

bool
vr_replica_sink_is_fenced(VrReplicaSink *sink, const char *relationship)
{
    return g_hash_table_contains(sink->fenced, relationship);
}

void
vr_replica_sink_set_busy(VrReplicaSink *sink, const char *relationship, bool busy)
{
    if (busy)
        g_hash_table_add(sink->busy, g_strdup(relationship));
    else
        g_hash_table_remove(sink->busy, relationship);
}

VrReplicaStore *
vr_replica_sink_get_store(VrReplicaSink *sink, const char *root, const char *relationship,
                          const char *disk_name, GError **error)
{
    g_autofree char *rel_path = NULL;
    g_autofree char *dir = NULL;
    g_autofree char *what = NULL;
    g_auto(VrReplicaSinkFd) root_fd = -1;
    g_auto(VrReplicaSinkFd) rel_fd = -1;
    g_auto(VrReplicaSinkFd) disk_fd = -1;
    VrReplicaSinkDisk *disk;
    struct stat made;

    if (!vr_authz_check_name("relationship", relationship, error) ||
        !vr_authz_check_name("disk", disk_name, error))
        return NULL;
    rel_path = g_build_filename(root, relationship, NULL);
    dir = g_build_filename(rel_path, disk_name, NULL);
    what = g_strdup_printf("disk '%s' of relationship '%s'", disk_name, relationship);
    root_fd = vr_replica_sink_open_root(root, error);
    if (root_fd < 0)
        return NULL;
    rel_fd = vr_replica_sink_open_dir(root_fd, root, relationship, false, what, error);
    if (rel_fd < 0)
        return NULL;
    disk_fd = vr_replica_sink_open_dir(rel_fd, rel_path, disk_name, false, what, error);
    if (disk_fd < 0)
        return NULL;
    if (fstat(disk_fd, &made) < 0) {
        vr_replica_sink_errno(error, errno, "stat", dir);
        return NULL;
    }
    disk = g_hash_table_lookup(sink->disks, dir);
    if (disk != NULL && disk->dev == made.st_dev && disk->ino == made.st_ino)
        return disk->store;
    if (disk != NULL) {
        g_set_error(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT,
                    "store '%s' was replaced while the sink has it open", dir);
        return NULL;
    }
    disk = g_new0(VrReplicaSinkDisk, 1);
    disk->store = vr_replica_store_open(dir, error);
    if (disk->store == NULL) {
        g_free(disk);
        return NULL;
    }
    disk->dir = g_steal_pointer(&dir);
    disk->dev = made.st_dev;
    disk->ino = made.st_ino;
    g_hash_table_insert(sink->disks, disk->dir, disk);
    return disk->store;
}
