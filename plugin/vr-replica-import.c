/*
 * vr-replica-import.c: the replica imports an initial copy exported to a directory
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-replica-import.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixinputstream.h>

/* What is read from a file and fed to the decoder at once: one step of an import. */
#define VR_REPLICA_IMPORT_CHUNK (1024 * 1024)

/* ---- one stream ------------------------------------------------------------------------ */

/* One stream being verified (@sink NULL) or applied, a chunk at a time. */
typedef struct {
    const VrReceiverSink *sink;
    gpointer handle; /* the sink's, until commit() or abort() */
    VrReceiverKey key;
    const uint8_t *digest; /* the expected stream digest, or NULL */
    uint64_t size;         /* the expected size, or 0 */
    uint64_t read;
    GInputStream *in;
    VrWireDecoder *decoder;
} VrReplicaImportFeed;

/* The decoder's callback: BEGIN must be the key's cycle, END the expected digest. */
static bool
vr_replica_import_on_record(const VrWireRecord *record, gpointer user_data, GError **error)
{
    VrReplicaImportFeed *feed = user_data;
    const VrReceiverKey *key = &feed->key;

    if (record->type == VR_WIRE_RECORD_BEGIN) {
        const VrWireIdentity *id = record->identity;

        if (id->kind != VR_WIRE_KIND_CYCLE || strcmp(id->relationship, key->relationship) != 0 ||
            strcmp(id->disk, key->disk) != 0 || id->epoch != key->epoch ||
            id->base_cycle != key->base_cycle || id->target_cycle != key->target_cycle) {
            g_set_error(
                error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                "the stream is relationship '%s' disk '%s' epoch %" PRIu64 " cycles %" PRIu64
                "..%" PRIu64 ", expected '%s' '%s' epoch %" PRIu64 " cycles %" PRIu64 "..%" PRIu64,
                id->relationship, id->disk, id->epoch, id->base_cycle, id->target_cycle,
                key->relationship, key->disk, key->epoch, key->base_cycle, key->target_cycle);
            return false;
        }
    } else if (record->type == VR_WIRE_RECORD_END && feed->digest != NULL &&
               (record->data_size != VR_WIRE_DIGEST_SIZE ||
                memcmp(record->data, feed->digest, VR_WIRE_DIGEST_SIZE) != 0)) {
        g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_CORRUPT,
                    "the stream digest is not the one the manifest names");
        return false;
    }
    if (feed->sink == NULL)
        return true;
    return feed->sink->record(feed->handle, record, error);
}

/* Forget the stream: the sink's abort() when it was begun and not committed. */
static void
vr_replica_import_feed_clear(VrReplicaImportFeed *feed)
{
    if (feed->handle != NULL)
        feed->sink->abort(g_steal_pointer(&feed->handle));
    g_clear_pointer(&feed->decoder, vr_wire_decoder_free);
    g_clear_object(&feed->in);
    memset(feed, 0, sizeof(*feed));
}

/*
 * Start @feed: with a sink, its begin() before any byte is read, unless @handle is one
 * begun already (taken).
 */
static bool
vr_replica_import_feed_open(VrReplicaImportFeed *feed, const VrReceiverSink *sink,
                            gpointer sink_data, gpointer handle, const VrReceiverKey *key,
                            const VrReceiverPeer *peer, GInputStream *in, uint64_t size,
                            const uint8_t *digest, GError **error)
{
    memset(feed, 0, sizeof(*feed));
    feed->handle = handle;
    if (sink != NULL && feed->handle == NULL) {
        feed->handle = sink->begin(key, peer, sink_data, error);
        if (feed->handle == NULL)
            return false;
    }
    feed->sink = sink;
    feed->key = *key;
    feed->digest = digest;
    feed->size = size;
    feed->in = g_object_ref(in);
    feed->decoder = vr_wire_decoder_new();
    return true;
}

/*
 * Read and feed one chunk into @buf: 1 when there is more, 0 when the stream is complete,
 * verified and (with a sink) committed, -1 with @error (then aborted). Either way, once it
 * returned 0 or -1 the sink's handle is gone.
 */
static int
vr_replica_import_feed_step(VrReplicaImportFeed *feed, uint8_t *buf, GCancellable *cancellable,
                            GError **error)
{
    gssize n = g_input_stream_read(feed->in, buf, VR_REPLICA_IMPORT_CHUNK, cancellable, error);
    bool ok;

    if (n > 0) {
        if (feed->size != 0 && feed->read + (uint64_t)n > feed->size) {
            g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                        "the stream is longer than its %" PRIu64 " bytes", feed->size);
            ok = false;
        } else {
            feed->read += (uint64_t)n;
            ok = vr_wire_decoder_feed(feed->decoder, buf, (size_t)n, vr_replica_import_on_record,
                                      feed, error);
        }
        if (ok)
            return 1;
    } else if (n == 0) {
        ok = vr_wire_decoder_finish(feed->decoder, error);
        if (ok && feed->size != 0 && feed->read != feed->size) {
            g_set_error(error, VR_WIRE_ERROR, VR_WIRE_ERROR_PROTOCOL,
                        "the stream is %" PRIu64 " bytes, not %" PRIu64, feed->read, feed->size);
            ok = false;
        }
        /* The handle ends with commit() or abort(), never both (vr-receiver.h). */
        if (ok && feed->handle != NULL) {
            gpointer handle = g_steal_pointer(&feed->handle);

            ok = feed->sink->commit(handle, error);
            if (!ok)
                feed->sink->abort(handle);
        }
        if (ok)
            return 0;
    }
    if (feed->handle != NULL)
        feed->sink->abort(g_steal_pointer(&feed->handle));
    return -1;
}

bool
vr_replica_import_stream(const VrReceiverSink *sink, gpointer sink_data, const VrReceiverKey *key,
                         const VrReceiverPeer *peer, GInputStream *in, uint64_t size,
                         const uint8_t digest[VR_WIRE_DIGEST_SIZE], VrWireTotals *totals,
                         GCancellable *cancellable, GError **error)
{
    g_autofree uint8_t *buf = g_malloc(VR_REPLICA_IMPORT_CHUNK);
    VrReplicaImportFeed feed;
    int r;

    if (!vr_replica_import_feed_open(&feed, sink, sink_data, NULL, key, peer, in, size, digest,
                                     error))
        return false;
    while ((r = vr_replica_import_feed_step(&feed, buf, cancellable, error)) > 0)
        ;
    if (r == 0 && totals != NULL)
        vr_wire_decoder_get_totals(feed.decoder, totals);
    vr_replica_import_feed_clear(&feed);
    return r == 0;
}

/* ---- a directory ------------------------------------------------------------------------ */

typedef enum {
    VR_REPLICA_IMPORT_VERIFY, /* every stream, with no sink */
    VR_REPLICA_IMPORT_APPLY,  /* the domain XML, then every stream through the sink */
    VR_REPLICA_IMPORT_DONE,
} VrReplicaImportPhase;

struct _VrReplicaImport {
    const VrReceiverSink *sink;
    gpointer sink_data;
    char *dir;
    int dir_fd;
    GArray *fds; /* of int: each disk's stream file, in manifest order */
    VrExportManifest *manifest;
    char *root; /* the primary's storage root and trust group (vr_authz_lookup()) */
    char *group;
    VrReceiverPeer peer;

    VrReplicaImportPhase phase;
    gpointer *handles; /* APPLY: each disk's sink handle, begun before anything is applied */
    guint n_handles;
    guint disk;   /* the disk the phase is at */
    bool feeding; /* @feed is open on it */
    VrReplicaImportFeed feed;
    uint8_t *buf;
    uint64_t bytes;
    uint64_t stream_bytes;
    GError *error; /* once done, when it failed */

    GSource *source;
    VrReplicaImportDone done;
    gpointer done_data;
};

void
vr_replica_import_result_clear(VrReplicaImportResult *result)
{
    if (result == NULL)
        return;
    g_clear_pointer(&result->manifest, vr_export_manifest_free);
    memset(result, 0, sizeof(*result));
}

/* The sink's abort() for every stream begun and not handed to a feed yet. */
static void
vr_replica_import_abort_handles(VrReplicaImport *import)
{
    for (guint i = 0; i < import->n_handles; i++) {
        if (import->handles[i] != NULL)
            import->sink->abort(g_steal_pointer(&import->handles[i]));
    }
    g_clear_pointer(&import->handles, g_free);
    import->n_handles = 0;
}

void
vr_replica_import_free(VrReplicaImport *import)
{
    if (import == NULL)
        return;
    if (import->source != NULL) {
        g_source_destroy(import->source);
        g_clear_pointer(&import->source, g_source_unref);
    }
    vr_replica_import_feed_clear(&import->feed);
    vr_replica_import_abort_handles(import);
    for (guint i = 0; import->fds != NULL && i < import->fds->len; i++)
        close(g_array_index(import->fds, int, i));
    g_clear_pointer(&import->fds, g_array_unref);
    if (import->dir_fd >= 0)
        close(import->dir_fd);
    vr_export_manifest_free(import->manifest);
    g_free(import->root);
    g_free(import->group);
    g_free(import->dir);
    g_free(import->buf);
    g_clear_error(&import->error);
    g_free(import);
}

/* The stream file of @disk in @dir_fd, opened (no symlink), a regular file of its size. */
static int
vr_replica_import_open(int dir_fd, const char *dir, const VrExportDisk *disk, GError **error)
{
    struct stat st;
    int fd = openat(dir_fd, disk->file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        int errsv = errno;

        g_set_error(error, VR_EXPORT_ERROR,
                    errsv == ENOENT || errsv == ELOOP ? VR_EXPORT_ERROR_INVALID
                                                      : VR_EXPORT_ERROR_IO,
                    "cannot open '%s' of export '%s': %s", disk->file, dir, g_strerror(errsv));
        return -1;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != disk->size) {
        g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID,
                    "'%s' of export '%s' is not a regular file of the %" PRIu64
                    " bytes the manifest names (truncated or replaced?)",
                    disk->file, dir, disk->size);
        close(fd);
        return -1;
    }
    return fd;
}

/* The directory, its manifest, the authorization of its primary, its stream files. */
static VrReplicaImport *
vr_replica_import_prepare(const VrReceiverSink *sink, gpointer sink_data, VrAuthz *authz,
                          const char *dir, GError **error)
{
    g_autoptr(VrReplicaImport) import = g_new0(VrReplicaImport, 1);

    import->sink = sink;
    import->sink_data = sink_data;
    import->dir = g_strdup(dir);
    import->fds = g_array_new(FALSE, FALSE, sizeof(int));
    import->buf = g_malloc(VR_REPLICA_IMPORT_CHUNK);
    import->dir_fd = -1;
    if (!g_path_is_absolute(dir)) {
        g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_INVALID,
                    "export directory '%s' is not an absolute path", dir);
        return NULL;
    }
    import->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (import->dir_fd < 0) {
        int errsv = errno;

        g_set_error(error, VR_EXPORT_ERROR,
                    errsv == ENOENT || errsv == ENOTDIR ? VR_EXPORT_ERROR_INVALID
                                                        : VR_EXPORT_ERROR_IO,
                    "cannot open export directory '%s': %s", dir, g_strerror(errsv));
        return NULL;
    }
    import->manifest = vr_export_manifest_read(import->dir_fd, dir, error);
    if (import->manifest == NULL)
        return NULL;
    /* As if the primary had connected: the same table, the same answer. */
    if (!vr_authz_lookup(authz, import->manifest->primary, &import->root, &import->group, error)) {
        g_prefix_error(error, "export '%s' of primary '%s': ", dir, import->manifest->primary);
        return NULL;
    }
    import->peer = (VrReceiverPeer){ import->manifest->primary, import->root, import->group };
    for (guint i = 0; i < import->manifest->disks->len; i++) {
        int fd = vr_replica_import_open(
            import->dir_fd, dir, &g_array_index(import->manifest->disks, VrExportDisk, i), error);

        if (fd < 0)
            return NULL;
        g_array_append_val(import->fds, fd);
    }
    return g_steal_pointer(&import);
}

/* The stream key of disk @index: the manifest's cycle, from base 0. */
static void
vr_replica_import_key(VrReplicaImport *import, guint index, VrReceiverKey *key)
{
    const VrExportManifest *manifest = import->manifest;

    memset(key, 0, sizeof(*key));
    g_strlcpy(key->relationship, manifest->relationship, sizeof(key->relationship));
    g_strlcpy(key->disk, g_array_index(manifest->disks, VrExportDisk, index).target,
              sizeof(key->disk));
    key->epoch = manifest->epoch;
    key->base_cycle = 0;
    key->target_cycle = manifest->cycle;
}

/*
 * Everything verified: the sink's begin() for every disk, so that a relationship the
 * sink refuses (points already there, another trust group, a stream being received) is
 * refused before anything is written; then the domain XML, as a primary sends it before
 * its cycle (the standby is defined at the first commit).
 */
static bool
vr_replica_import_begin_apply(VrReplicaImport *import, GError **error)
{
    const VrExportManifest *manifest = import->manifest;

    import->handles = g_new0(gpointer, manifest->disks->len);
    import->n_handles = manifest->disks->len;
    for (guint i = 0; i < manifest->disks->len; i++) {
        VrReceiverKey key;

        vr_replica_import_key(import, i, &key);
        import->handles[i] = import->sink->begin(&key, &import->peer, import->sink_data, error);
        if (import->handles[i] == NULL) {
            g_prefix_error(error, "'%s' of export '%s': ",
                           g_array_index(manifest->disks, VrExportDisk, i).file, import->dir);
            return false;
        }
    }
    if (import->sink->domain != NULL &&
        !import->sink->domain(manifest->relationship, &import->peer, manifest->domain_xml,
                              strlen(manifest->domain_xml), import->sink_data, error)) {
        g_prefix_error(error, "the domain XML of export '%s': ", import->dir);
        return false;
    }
    return true;
}

/* Begin the stream of the current disk: verified only, or applied (its handle begun). */
static bool
vr_replica_import_begin_disk(VrReplicaImport *import, GError **error)
{
    const VrExportDisk *disk = &g_array_index(import->manifest->disks, VrExportDisk, import->disk);
    bool apply = import->phase == VR_REPLICA_IMPORT_APPLY;
    int fd = g_array_index(import->fds, int, import->disk);
    g_autoptr(GInputStream) in = NULL;
    VrReceiverKey key;

    if (lseek(fd, 0, SEEK_SET) < 0) {
        g_set_error(error, VR_EXPORT_ERROR, VR_EXPORT_ERROR_IO, "cannot read '%s': %s", disk->file,
                    g_strerror(errno));
        return false;
    }
    vr_replica_import_key(import, import->disk, &key);
    in = g_unix_input_stream_new(fd, FALSE);
    return vr_replica_import_feed_open(
        &import->feed, apply ? import->sink : NULL, import->sink_data,
        apply ? g_steal_pointer(&import->handles[import->disk]) : NULL, &key, &import->peer, in,
        disk->size, disk->digest, error);
}

/*
 * One step: begin a disk's stream, or feed one chunk of it, or move to the next phase.
 * False once the import is done (@error set when it failed).
 */
static bool
vr_replica_import_step(VrReplicaImport *import)
{
    const VrExportManifest *manifest = import->manifest;
    g_autoptr(GError) local = NULL;
    VrWireTotals totals;
    int r;

    if (import->phase == VR_REPLICA_IMPORT_DONE)
        return false;
    if (!import->feeding) {
        if (import->phase == VR_REPLICA_IMPORT_VERIFY && import->disk == manifest->disks->len) {
            /* Everything verified: from here on the sink applies. */
            import->phase = VR_REPLICA_IMPORT_APPLY;
            import->disk = 0;
            if (!vr_replica_import_begin_apply(import, &import->error)) {
                vr_replica_import_abort_handles(import);
                import->phase = VR_REPLICA_IMPORT_DONE;
                return false;
            }
            return true;
        }
        if (import->phase == VR_REPLICA_IMPORT_APPLY && import->disk == manifest->disks->len) {
            import->phase = VR_REPLICA_IMPORT_DONE;
            return false;
        }
        if (!vr_replica_import_begin_disk(import, &local))
            goto fail;
        import->feeding = true;
        return true;
    }
    r = vr_replica_import_feed_step(&import->feed, import->buf, NULL, &local);
    if (r < 0)
        goto fail;
    if (r == 0) {
        if (import->phase == VR_REPLICA_IMPORT_APPLY) {
            vr_wire_decoder_get_totals(import->feed.decoder, &totals);
            import->bytes += totals.data_bytes + totals.zero_bytes;
            import->stream_bytes += totals.wire_bytes;
        }
        vr_replica_import_feed_clear(&import->feed);
        import->feeding = false;
        import->disk++;
    }
    return true;

fail:
    /* Verified again as it is applied: a file changed after its verification fails here,
     * before the sink publishes it. */
    g_propagate_prefixed_error(&import->error, g_steal_pointer(&local), "%s '%s' of export '%s': ",
                               import->phase == VR_REPLICA_IMPORT_VERIFY ? "verifying" : "applying",
                               g_array_index(manifest->disks, VrExportDisk, import->disk).file,
                               import->dir);
    vr_replica_import_feed_clear(&import->feed);
    vr_replica_import_abort_handles(import);
    import->feeding = false;
    import->phase = VR_REPLICA_IMPORT_DONE;
    return false;
}

bool
vr_replica_import_finish(VrReplicaImport *import, VrReplicaImportResult *result, GError **error)
{
    g_return_val_if_fail(import->phase == VR_REPLICA_IMPORT_DONE, false);

    if (import->error != NULL) {
        g_propagate_error(error, g_error_copy(import->error));
        return false;
    }
    memset(result, 0, sizeof(*result));
    result->manifest = g_steal_pointer(&import->manifest);
    result->bytes = import->bytes;
    result->stream_bytes = import->stream_bytes;
    return true;
}

bool
vr_replica_import_dir(const VrReceiverSink *sink, gpointer sink_data, VrAuthz *authz,
                      const char *dir, VrReplicaImportResult *result, GError **error)
{
    g_autoptr(VrReplicaImport) import = NULL;

    g_return_val_if_fail(sink != NULL && authz != NULL && dir != NULL && result != NULL, false);

    import = vr_replica_import_prepare(sink, sink_data, authz, dir, error);
    if (import == NULL)
        return false;
    while (vr_replica_import_step(import))
        ;
    return vr_replica_import_finish(import, result, error);
}

static gboolean
vr_replica_import_on_idle(gpointer data)
{
    VrReplicaImport *import = data;

    if (vr_replica_import_step(import))
        return G_SOURCE_CONTINUE;
    g_clear_pointer(&import->source, g_source_unref);
    import->done(import, import->done_data);
    return G_SOURCE_REMOVE;
}

VrReplicaImport *
vr_replica_import_start(const VrReceiverSink *sink, gpointer sink_data, VrAuthz *authz,
                        const char *dir, VrReplicaImportDone done, gpointer user_data,
                        GError **error)
{
    VrReplicaImport *import;

    g_return_val_if_fail(sink != NULL && authz != NULL && dir != NULL && done != NULL, NULL);

    import = vr_replica_import_prepare(sink, sink_data, authz, dir, error);
    if (import == NULL)
        return NULL;
    import->done = done;
    import->done_data = user_data;
    /* Below the default priority: requests and uploads go first between two chunks. */
    import->source = g_idle_source_new();
    g_source_set_priority(import->source, G_PRIORITY_LOW);
    g_source_set_callback(import->source, vr_replica_import_on_idle, import, NULL);
    g_source_attach(import->source, g_main_context_get_thread_default());
    return import;
}

const VrExportManifest *
vr_replica_import_get_manifest(VrReplicaImport *import)
{
    return import->manifest;
}
