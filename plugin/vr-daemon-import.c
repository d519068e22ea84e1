/*
 * vr-daemon-import.c: POST /v1/imports of the daemon's local API (replica role)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-daemon-import.h"

#include "vr-daemon-api.h"

#include <inttypes.h>
#include <string.h>

#include "vr-qmp-json.h"
#include "vr-replica-import.h"
#include "vr-wire.h"

struct _VrDaemonImports {
    VrAuthz *authz;
    VrReplicaSink *sink;
    VrReplicaImport *running; /* one at a time */
    SoupServerMessage *msg;   /* its request, paused */
    char *path;
};

/* The API's status and code of an import's @error (docs/api.md). */
static guint
vr_daemon_import_status(const GError *error, const char **code)
{
    if ((error->domain == VR_EXPORT_ERROR && error->code == VR_EXPORT_ERROR_INVALID) ||
        error->domain == VR_WIRE_ERROR ||
        g_error_matches(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_INVALID) ||
        g_error_matches(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_INVALID)) {
        *code = "invalid-export";
        return SOUP_STATUS_UNPROCESSABLE_ENTITY;
    }
    if (g_error_matches(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN) ||
        g_error_matches(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_FORBIDDEN)) {
        *code = "forbidden";
        return SOUP_STATUS_FORBIDDEN;
    }
    if (g_error_matches(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_CONFLICT) ||
        g_error_matches(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_COMMITTED) ||
        g_error_matches(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_BUSY)) {
        *code = "conflict";
        return SOUP_STATUS_CONFLICT;
    }
    if (g_error_matches(error, VR_RECEIVER_ERROR, VR_RECEIVER_ERROR_NO_SPACE) ||
        g_error_matches(error, G_IO_ERROR, G_IO_ERROR_NO_SPACE)) {
        *code = "no-space";
        return SOUP_STATUS_INSUFFICIENT_STORAGE;
    }
    *code = "failed";
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
}

/* A failed import: logged once here, the client gets the same words. */
static void
vr_daemon_import_failed(SoupServerMessage *msg, const char *path, const GError *error)
{
    const char *code;
    guint status = vr_daemon_import_status(error, &code);

    g_warning("replica: import of '%s' refused: %s", path, error->message);
    vr_daemon_reply_error(msg, status, code, "%s", error->message);
}

static void
vr_daemon_import_done(VrReplicaImport *import, gpointer user_data)
{
    VrDaemonImports *imports = user_data;
    g_auto(VrReplicaImportResult) result = { 0 };
    g_autoptr(SoupServerMessage) msg = g_steal_pointer(&imports->msg);
    g_autoptr(VrReplicaImport) done = g_steal_pointer(&imports->running);
    g_autofree char *path = g_steal_pointer(&imports->path);
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) body = NULL;
    const VrExportManifest *manifest;
    json_object *disks;

    if (!vr_replica_import_finish(import, &result, &error)) {
        vr_daemon_import_failed(msg, path, error);
        soup_server_message_unpause(msg);
        return;
    }
    manifest = result.manifest;
    g_info("replica: imported cycle %" PRIu64 " of relationship '%s' (domain '%s', primary "
           "'%s') from '%s': %" PRIu64 " bytes",
           manifest->cycle, manifest->relationship, manifest->domain_name, manifest->primary, path,
           result.bytes);
    body = json_object_new_object();
    disks = json_object_new_array();
    json_object_object_add(body, "relationship", json_object_new_string(manifest->relationship));
    json_object_object_add(body, "domain", json_object_new_string(manifest->domain_name));
    json_object_object_add(body, "primary", json_object_new_string(manifest->primary));
    json_object_object_add(body, "epoch", json_object_new_uint64(manifest->epoch));
    json_object_object_add(body, "cycle", json_object_new_uint64(manifest->cycle));
    json_object_object_add(body, "bytes", json_object_new_uint64(result.bytes));
    json_object_object_add(body, "stream_bytes", json_object_new_uint64(result.stream_bytes));
    for (guint i = 0; i < manifest->disks->len; i++) {
        const VrExportDisk *disk = &g_array_index(manifest->disks, VrExportDisk, i);
        json_object *item = json_object_new_object();

        json_object_object_add(item, "target", json_object_new_string(disk->target));
        json_object_object_add(item, "stream_bytes", json_object_new_uint64(disk->size));
        json_object_array_add(disks, item);
    }
    json_object_object_add(body, "disks", disks);
    vr_daemon_reply_json(msg, SOUP_STATUS_OK, body);
    soup_server_message_unpause(msg);
}

VrDaemonImports *
vr_daemon_imports_new(VrAuthz *authz, VrReplicaSink *sink)
{
    VrDaemonImports *imports = g_new0(VrDaemonImports, 1);

    imports->authz = authz;
    imports->sink = sink;
    return imports;
}

void
vr_daemon_imports_post(VrDaemonImports *imports, SoupServerMessage *msg, json_object *request)
{
    static const char *const members[] = { "path", NULL };
    g_autoptr(GError) error = NULL;
    const char *path = vr_json_get_string(request, "path");

    json_object_object_foreach (request, key, value) {
        (void)value;
        if (!g_strv_contains(members, key)) {
            g_autofree char *message = g_strdup_printf("unknown member '%s'", key);

            vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", "%s", message);
            return;
        }
    }
    if (path == NULL || !g_path_is_absolute(path)) {
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", "%s",
                              "'path' (the export directory, absolute) is required");
        return;
    }
    if (imports->running != NULL) {
        g_autofree char *message = g_strdup_printf(
            "an import runs already (of '%s'): try again when it ended", imports->path);

        vr_daemon_reply_error(msg, SOUP_STATUS_CONFLICT, "conflict", "%s", message);
        return;
    }
    imports->running =
        vr_replica_import_start(vr_replica_sink_get_sink(), imports->sink, imports->authz, path,
                                vr_daemon_import_done, imports, &error);
    if (imports->running == NULL) {
        vr_daemon_import_failed(msg, path, error);
        return;
    }
    g_info("replica: importing '%s': cycle %" PRIu64 " of relationship '%s' from primary '%s'",
           path, vr_replica_import_get_manifest(imports->running)->cycle,
           vr_replica_import_get_manifest(imports->running)->relationship,
           vr_replica_import_get_manifest(imports->running)->primary);
    imports->path = g_strdup(path);
    imports->msg = g_object_ref(msg);
    soup_server_message_pause(msg);
}

void
vr_daemon_imports_free(VrDaemonImports *imports)
{
    if (imports == NULL)
        return;
    if (imports->running != NULL)
        g_warning("replica: import of '%s' aborted: the daemon stops", imports->path);
    g_clear_pointer(&imports->running, vr_replica_import_free);
    g_clear_object(&imports->msg);
    g_free(imports->path);
    g_free(imports);
}
