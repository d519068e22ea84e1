/*
 * vr-qmp-block.c: typed helpers for the block-layer QMP commands replication uses
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <unistd.h>

#include "vr-qmp-block.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"

void
vr_qmp_bitmap_info_free(VrQmpBitmapInfo *info)
{
    if (info == NULL)
        return;
    g_free(info->name);
    g_free(info);
}

void
vr_qmp_block_node_free(VrQmpBlockNode *node)
{
    if (node == NULL)
        return;
    g_free(node->node_name);
    g_free(node->drv);
    g_free(node->filename);
    g_free(node->backing_filename);
    g_clear_pointer(&node->bitmaps, g_ptr_array_unref);
    g_free(node);
}

void
vr_qmp_block_device_free(VrQmpBlockDevice *device)
{
    if (device == NULL)
        return;
    g_free(device->device);
    g_free(device->qdev);
    vr_qmp_block_node_free(device->inserted);
    g_free(device);
}

void
vr_qmp_job_info_free(VrQmpJobInfo *job)
{
    if (job == NULL)
        return;
    g_free(job->id);
    g_free(job->type);
    g_free(job->status);
    g_free(job->error);
    g_free(job);
}

void
vr_qmp_export_info_free(VrQmpExportInfo *info)
{
    if (info == NULL)
        return;
    g_free(info->id);
    g_free(info->type);
    g_free(info->node_name);
    g_free(info);
}

/* ---- argument builders ------------------------------------------------------------- */

static json_object *
vr_qmp_args_bitmap_ref(const char *node, const char *name)
{
    json_object *obj = json_object_new_object();

    json_object_object_add(obj, "node", json_object_new_string(node));
    json_object_object_add(obj, "name", json_object_new_string(name));
    return obj;
}

json_object *
vr_qmp_args_bitmap_add(const char *node, const char *name, bool persistent, bool disabled,
                       uint32_t granularity)
{
    json_object *args = vr_qmp_args_bitmap_ref(node, name);

    json_object_object_add(args, "persistent", json_object_new_boolean(persistent));
    if (disabled)
        json_object_object_add(args, "disabled", json_object_new_boolean(true));
    if (granularity != 0)
        json_object_object_add(args, "granularity", json_object_new_int64(granularity));
    return args;
}

json_object *
vr_qmp_args_bitmap_remove(const char *node, const char *name)
{
    return vr_qmp_args_bitmap_ref(node, name);
}

json_object *
vr_qmp_args_bitmap_merge(const char *node, const char *target, const VrQmpBitmapRef *sources,
                         guint n_sources)
{
    json_object *args = json_object_new_object();
    json_object *list = json_object_new_array();

    /* Always the external {node, name} form (QEMU 4.1+): sources may live on other nodes. */
    for (guint i = 0; i < n_sources; i++)
        json_object_array_add(list, vr_qmp_args_bitmap_ref(sources[i].node, sources[i].name));
    json_object_object_add(args, "node", json_object_new_string(node));
    json_object_object_add(args, "target", json_object_new_string(target));
    json_object_object_add(args, "bitmaps", list);
    return args;
}

json_object *
vr_qmp_args_blockdev_backup(const char *job_id, const char *device, const char *target,
                            const char *sync)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "job-id", json_object_new_string(job_id));
    json_object_object_add(args, "device", json_object_new_string(device));
    json_object_object_add(args, "target", json_object_new_string(target));
    json_object_object_add(args, "sync", json_object_new_string(sync));
    json_object_object_add(args, "auto-finalize", json_object_new_boolean(true));
    json_object_object_add(args, "auto-dismiss", json_object_new_boolean(false));
    return args;
}

/* ---- parsing ----------------------------------------------------------------------- */

static bool
vr_qmp_unexpected(GError **error, const char *command, const char *what)
{
    g_set_error(error, VR_QMP_ERROR, VR_QMP_ERROR_UNEXPECTED, "unexpected reply to '%s': %s",
                command, what);
    return false;
}

static VrQmpBitmapInfo *
vr_qmp_parse_bitmap(json_object *obj, GError **error)
{
    g_autoptr(VrQmpBitmapInfo) info = g_new0(VrQmpBitmapInfo, 1);
    int64_t granularity = 0;

    info->name = g_strdup(vr_json_get_string(obj, "name"));
    if (!vr_json_get_int64(obj, "granularity", &granularity) || granularity <= 0 ||
        granularity > G_MAXUINT32 || !vr_json_get_uint64(obj, "count", &info->count)) {
        vr_qmp_unexpected(error, "query-named-block-nodes", "bitmap without granularity/count");
        return NULL;
    }
    info->granularity = (uint32_t)granularity;
    info->recording = vr_json_get_bool(obj, "recording", false);
    info->busy = vr_json_get_bool(obj, "busy", false);
    info->persistent = vr_json_get_bool(obj, "persistent", false);
    /* Present only when true. */
    info->inconsistent = vr_json_get_bool(obj, "inconsistent", false);
    return g_steal_pointer(&info);
}

/* A BlockDeviceInfo object (query-named-block-nodes entry or query-block's "inserted"). */
static VrQmpBlockNode *
vr_qmp_parse_block_node(json_object *obj, const char *command, GError **error)
{
    g_autoptr(VrQmpBlockNode) node = g_new0(VrQmpBlockNode, 1);
    json_object *image = vr_json_get_object(obj, "image");
    json_object *bitmaps = vr_json_get_array(obj, "dirty-bitmaps");

    node->node_name = g_strdup(vr_json_get_string(obj, "node-name"));
    node->drv = g_strdup(vr_json_get_string(obj, "drv"));
    node->filename = g_strdup(vr_json_get_string(obj, "file"));
    node->backing_filename = g_strdup(vr_json_get_string(obj, "backing_file"));
    node->read_only = vr_json_get_bool(obj, "ro", false);
    if (node->node_name == NULL || node->drv == NULL) {
        vr_qmp_unexpected(error, command, "block node without 'node-name' or 'drv'");
        return NULL;
    }
    if (image != NULL)
        vr_json_get_uint64(image, "virtual-size", &node->virtual_size);

    node->bitmaps = g_ptr_array_new_with_free_func((GDestroyNotify)vr_qmp_bitmap_info_free);
    for (size_t i = 0; bitmaps != NULL && i < json_object_array_length(bitmaps); i++) {
        json_object *entry = json_object_array_get_idx(bitmaps, i);
        VrQmpBitmapInfo *info;

        /* Jobs add unnamed internal bitmaps (research/qemu-bitmaps.md §1.1): not ours. */
        if (vr_json_get_string(entry, "name") == NULL)
            continue;
        info = vr_qmp_parse_bitmap(entry, error);
        if (info == NULL)
            return NULL;
        g_ptr_array_add(node->bitmaps, info);
    }
    return g_steal_pointer(&node);
}

typedef gpointer (*VrQmpParseFunc)(json_object *entry, const char *command, GError **error);

/* Run @command and parse each element of the array it returns with @parse. */
static GPtrArray *
vr_qmp_query_list(VrQmpClient *client, const char *command, json_object *arguments,
                  VrQmpParseFunc parse, GDestroyNotify free_func, GError **error)
{
    g_autoptr(json_object) ret = NULL;
    g_autoptr(GPtrArray) list = NULL;

    ret = vr_qmp_client_execute(client, command, arguments, error);
    if (ret == NULL)
        return NULL;
    if (!json_object_is_type(ret, json_type_array)) {
        vr_qmp_unexpected(error, command, "not an array");
        return NULL;
    }
    list = g_ptr_array_new_with_free_func(free_func);
    for (size_t i = 0; i < json_object_array_length(ret); i++) {
        gpointer item = parse(json_object_array_get_idx(ret, i), command, error);

        if (item == NULL)
            return NULL;
        g_ptr_array_add(list, item);
    }
    return g_steal_pointer(&list);
}

static gpointer
vr_qmp_parse_named_node(json_object *entry, const char *command, GError **error)
{
    return vr_qmp_parse_block_node(entry, command, error);
}

GPtrArray *
vr_qmp_query_named_block_nodes(VrQmpClient *client, GError **error)
{
    json_object *args = json_object_new_object();

    /* flat: each node once, without its backing chain nested inside. */
    json_object_object_add(args, "flat", json_object_new_boolean(true));
    return vr_qmp_query_list(client, "query-named-block-nodes", args, vr_qmp_parse_named_node,
                             (GDestroyNotify)vr_qmp_block_node_free, error);
}

static gpointer
vr_qmp_parse_block_device(json_object *entry, const char *command, GError **error)
{
    g_autoptr(VrQmpBlockDevice) device = g_new0(VrQmpBlockDevice, 1);
    json_object *inserted = vr_json_get_object(entry, "inserted");

    device->device = g_strdup(vr_json_get_string(entry, "device"));
    device->qdev = g_strdup(vr_json_get_string(entry, "qdev"));
    if (device->device == NULL) {
        vr_qmp_unexpected(error, command, "entry without 'device'");
        return NULL;
    }
    if (inserted != NULL) {
        device->inserted = vr_qmp_parse_block_node(inserted, command, error);
        if (device->inserted == NULL)
            return NULL;
    }
    return g_steal_pointer(&device);
}

GPtrArray *
vr_qmp_query_block(VrQmpClient *client, GError **error)
{
    return vr_qmp_query_list(client, "query-block", NULL, vr_qmp_parse_block_device,
                             (GDestroyNotify)vr_qmp_block_device_free, error);
}

static gpointer
vr_qmp_parse_job(json_object *entry, const char *command, GError **error)
{
    g_autoptr(VrQmpJobInfo) job = g_new0(VrQmpJobInfo, 1);

    job->id = g_strdup(vr_json_get_string(entry, "id"));
    job->type = g_strdup(vr_json_get_string(entry, "type"));
    job->status = g_strdup(vr_json_get_string(entry, "status"));
    job->error = g_strdup(vr_json_get_string(entry, "error"));
    vr_json_get_uint64(entry, "current-progress", &job->current_progress);
    vr_json_get_uint64(entry, "total-progress", &job->total_progress);
    if (job->id == NULL || job->type == NULL || job->status == NULL) {
        vr_qmp_unexpected(error, command, "job without 'id', 'type' or 'status'");
        return NULL;
    }
    return g_steal_pointer(&job);
}

GPtrArray *
vr_qmp_query_jobs(VrQmpClient *client, GError **error)
{
    return vr_qmp_query_list(client, "query-jobs", NULL, vr_qmp_parse_job,
                             (GDestroyNotify)vr_qmp_job_info_free, error);
}

static gpointer
vr_qmp_parse_export(json_object *entry, const char *command, GError **error)
{
    g_autoptr(VrQmpExportInfo) info = g_new0(VrQmpExportInfo, 1);

    info->id = g_strdup(vr_json_get_string(entry, "id"));
    info->type = g_strdup(vr_json_get_string(entry, "type"));
    info->node_name = g_strdup(vr_json_get_string(entry, "node-name"));
    info->shutting_down = vr_json_get_bool(entry, "shutting-down", false);
    if (info->id == NULL || info->node_name == NULL) {
        vr_qmp_unexpected(error, command, "export without 'id' or 'node-name'");
        return NULL;
    }
    return g_steal_pointer(&info);
}

GPtrArray *
vr_qmp_query_block_exports(VrQmpClient *client, GError **error)
{
    return vr_qmp_query_list(client, "query-block-exports", NULL, vr_qmp_parse_export,
                             (GDestroyNotify)vr_qmp_export_info_free, error);
}

VrQmpBlockNode *
vr_qmp_block_nodes_find(GPtrArray *nodes, const char *node_name)
{
    for (guint i = 0; i < nodes->len; i++) {
        VrQmpBlockNode *node = g_ptr_array_index(nodes, i);

        if (g_strcmp0(node->node_name, node_name) == 0)
            return node;
    }
    return NULL;
}

VrQmpBitmapInfo *
vr_qmp_block_node_find_bitmap(VrQmpBlockNode *node, const char *name)
{
    for (guint i = 0; i < node->bitmaps->len; i++) {
        VrQmpBitmapInfo *info = g_ptr_array_index(node->bitmaps, i);

        if (g_strcmp0(info->name, name) == 0)
            return info;
    }
    return NULL;
}

VrQmpBitmapInfo *
vr_qmp_query_bitmap(VrQmpClient *client, const char *node, const char *name, GError **error)
{
    g_autoptr(GPtrArray) nodes = vr_qmp_query_named_block_nodes(client, error);
    VrQmpBlockNode *found;
    VrQmpBitmapInfo *info;
    VrQmpBitmapInfo *copy;

    if (nodes == NULL)
        return NULL;
    found = vr_qmp_block_nodes_find(nodes, node);
    if (found == NULL) {
        g_set_error(error, VR_QMP_ERROR, VR_QMP_ERROR_NOT_FOUND, "no block node '%s'", node);
        return NULL;
    }
    info = vr_qmp_block_node_find_bitmap(found, name);
    if (info == NULL) {
        g_set_error(error, VR_QMP_ERROR, VR_QMP_ERROR_NOT_FOUND, "no bitmap '%s' on node '%s'",
                    name, node);
        return NULL;
    }
    copy = g_memdup2(info, sizeof(*info));
    copy->name = g_strdup(info->name);
    return copy;
}

/* ---- commands ----------------------------------------------------------------------- */

/* Run @command and expect an empty-object return. */
static bool
vr_qmp_run(VrQmpClient *client, const char *command, json_object *arguments, GError **error)
{
    g_autoptr(json_object) ret = vr_qmp_client_execute(client, command, arguments, error);

    return ret != NULL;
}

bool
vr_qmp_bitmap_add(VrQmpClient *client, const char *node, const char *name, bool persistent,
                  bool disabled, uint32_t granularity, GError **error)
{
    return vr_qmp_run(client, "block-dirty-bitmap-add",
                      vr_qmp_args_bitmap_add(node, name, persistent, disabled, granularity), error);
}

bool
vr_qmp_bitmap_remove(VrQmpClient *client, const char *node, const char *name, GError **error)
{
    return vr_qmp_run(client, "block-dirty-bitmap-remove", vr_qmp_args_bitmap_remove(node, name),
                      error);
}

bool
vr_qmp_bitmap_merge(VrQmpClient *client, const char *node, const char *target,
                    const VrQmpBitmapRef *sources, guint n_sources, GError **error)
{
    return vr_qmp_run(client, "block-dirty-bitmap-merge",
                      vr_qmp_args_bitmap_merge(node, target, sources, n_sources), error);
}

bool
vr_qmp_blockdev_add(VrQmpClient *client, json_object *options, GError **error)
{
    return vr_qmp_run(client, "blockdev-add", options, error);
}

bool
vr_qmp_blockdev_add_qcow2(VrQmpClient *client, const char *node_name, const char *filename,
                          const char *backing_node, bool read_only, GError **error)
{
    json_object *options = json_object_new_object();
    json_object *file = json_object_new_object();
    g_autofree char *file_node = g_strconcat(node_name, "-file", NULL);

    json_object_object_add(file, "driver", json_object_new_string("file"));
    json_object_object_add(file, "node-name", json_object_new_string(file_node));
    json_object_object_add(file, "filename", json_object_new_string(filename));
    json_object_object_add(options, "driver", json_object_new_string("qcow2"));
    json_object_object_add(options, "node-name", json_object_new_string(node_name));
    json_object_object_add(options, "file", file);
    /* An explicit null keeps QEMU from opening whatever backing file the header names. */
    json_object_object_add(options, "backing",
                           backing_node != NULL ? json_object_new_string(backing_node) : NULL);
    if (read_only)
        json_object_object_add(options, "read-only", json_object_new_boolean(true));
    return vr_qmp_blockdev_add(client, options, error);
}

bool
vr_qmp_blockdev_del(VrQmpClient *client, const char *node_name, GError **error)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "node-name", json_object_new_string(node_name));
    return vr_qmp_run(client, "blockdev-del", args, error);
}

bool
vr_qmp_blockdev_backup(VrQmpClient *client, const char *job_id, const char *device,
                       const char *target, const char *sync, GError **error)
{
    return vr_qmp_run(client, "blockdev-backup",
                      vr_qmp_args_blockdev_backup(job_id, device, target, sync), error);
}

bool
vr_qmp_block_export_add_nbd(VrQmpClient *client, const char *id, const char *node_name,
                            const char *export_name, bool writable, const char *const *bitmaps,
                            GError **error)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "type", json_object_new_string("nbd"));
    json_object_object_add(args, "id", json_object_new_string(id));
    json_object_object_add(args, "node-name", json_object_new_string(node_name));
    json_object_object_add(args, "name", json_object_new_string(export_name));
    json_object_object_add(args, "writable", json_object_new_boolean(writable));
    if (bitmaps != NULL && bitmaps[0] != NULL) {
        json_object *list = json_object_new_array();

        for (guint i = 0; bitmaps[i] != NULL; i++)
            json_object_array_add(list, json_object_new_string(bitmaps[i]));
        json_object_object_add(args, "bitmaps", list);
    }
    return vr_qmp_run(client, "block-export-add", args, error);
}

bool
vr_qmp_block_export_del(VrQmpClient *client, const char *id, bool hard, GError **error)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "id", json_object_new_string(id));
    if (hard)
        json_object_object_add(args, "mode", json_object_new_string("hard"));
    return vr_qmp_run(client, "block-export-del", args, error);
}

static bool
vr_qmp_nbd_server_start(VrQmpClient *client, const char *type, const char *key, const char *value,
                        GError **error)
{
    json_object *args = json_object_new_object();
    json_object *addr = json_object_new_object();
    json_object *data = json_object_new_object();

    json_object_object_add(data, key, json_object_new_string(value));
    json_object_object_add(addr, "type", json_object_new_string(type));
    json_object_object_add(addr, "data", data);
    json_object_object_add(args, "addr", addr);
    return vr_qmp_run(client, "nbd-server-start", args, error);
}

bool
vr_qmp_nbd_server_start_unix(VrQmpClient *client, const char *path, GError **error)
{
    return vr_qmp_nbd_server_start(client, "unix", "path", path, error);
}

bool
vr_qmp_nbd_server_start_fd(VrQmpClient *client, const char *fdname, GError **error)
{
    return vr_qmp_nbd_server_start(client, "fd", "str", fdname, error);
}

bool
vr_qmp_nbd_server_stop(VrQmpClient *client, GError **error)
{
    return vr_qmp_run(client, "nbd-server-stop", NULL, error);
}

bool
vr_qmp_block_job_cancel(VrQmpClient *client, const char *device, bool force, GError **error)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "device", json_object_new_string(device));
    if (force)
        json_object_object_add(args, "force", json_object_new_boolean(true));
    return vr_qmp_run(client, "block-job-cancel", args, error);
}

bool
vr_qmp_job_dismiss(VrQmpClient *client, const char *id, GError **error)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "id", json_object_new_string(id));
    return vr_qmp_run(client, "job-dismiss", args, error);
}

bool
vr_qmp_block_set_write_threshold(VrQmpClient *client, const char *node_name, uint64_t threshold,
                                 GError **error)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "node-name", json_object_new_string(node_name));
    json_object_object_add(args, "write-threshold", json_object_new_uint64(threshold));
    return vr_qmp_run(client, "block-set-write-threshold", args, error);
}

char *
vr_qmp_human_monitor_command(VrQmpClient *client, const char *command_line, GError **error)
{
    json_object *args = json_object_new_object();
    g_autoptr(json_object) ret = NULL;

    json_object_object_add(args, "command-line", json_object_new_string(command_line));
    ret = vr_qmp_client_execute(client, "human-monitor-command", args, error);
    if (ret == NULL)
        return NULL;
    if (!json_object_is_type(ret, json_type_string)) {
        vr_qmp_unexpected(error, "human-monitor-command", "not a string");
        return NULL;
    }
    return g_strdup(json_object_get_string(ret));
}

/* Run @command with @fd attached (as SCM_RIGHTS, or through libvirt's file list). */
static json_object *
vr_qmp_execute_with_fd(VrQmpClient *client, const char *command, json_object *arguments, int fd,
                       GError **error)
{
    g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();

    if (g_unix_fd_list_append(fds, fd, error) < 0) {
        json_object_put(arguments);
        return NULL;
    }
    return vr_qmp_client_execute_full(client, command, arguments, fds, 0, NULL, error);
}

bool
vr_qmp_getfd(VrQmpClient *client, int fd, const char *fdname, GError **error)
{
    json_object *args = json_object_new_object();
    g_autoptr(json_object) ret = NULL;

    json_object_object_add(args, "fdname", json_object_new_string(fdname));
    ret = vr_qmp_execute_with_fd(client, "getfd", args, fd, error);
    return ret != NULL;
}

bool
vr_qmp_closefd(VrQmpClient *client, const char *fdname, GError **error)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "fdname", json_object_new_string(fdname));
    return vr_qmp_run(client, "closefd", args, error);
}

bool
vr_qmp_add_fd(VrQmpClient *client, int fd, int64_t fdset_id, const char *opaque,
              int64_t *out_fdset_id, GError **error)
{
    json_object *args = json_object_new_object();
    g_autoptr(json_object) ret = NULL;
    int64_t id = 0;

    if (fdset_id >= 0)
        json_object_object_add(args, "fdset-id", json_object_new_int64(fdset_id));
    if (opaque != NULL)
        json_object_object_add(args, "opaque", json_object_new_string(opaque));
    ret = vr_qmp_execute_with_fd(client, "add-fd", args, fd, error);
    if (ret == NULL)
        return false;
    if (!vr_json_get_int64(ret, "fdset-id", &id))
        return vr_qmp_unexpected(error, "add-fd", "no 'fdset-id'");
    if (out_fdset_id != NULL)
        *out_fdset_id = id;
    return true;
}

bool
vr_qmp_remove_fd(VrQmpClient *client, int64_t fdset_id, GError **error)
{
    json_object *args = json_object_new_object();

    json_object_object_add(args, "fdset-id", json_object_new_int64(fdset_id));
    return vr_qmp_run(client, "remove-fd", args, error);
}
