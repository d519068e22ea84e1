/*
 * vr-qmp-block.h: typed helpers for the block-layer QMP commands replication uses
 *
 * Each helper sends one command through vr_qmp_client_execute() (synchronous: see the
 * threading note of vr-qmp-client.h) and parses the reply into plain structs. The argument
 * builders (vr_qmp_args_*) are shared with the transaction builder, so a command and its
 * transaction action carry the same JSON. docs/qmp.md shows every exchange.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vr-qmp-client.h"

G_BEGIN_DECLS

/* BlockDirtyInfo of QEMU 7.2 (qapi/block-core.json). */
typedef struct {
    char *name;
    uint32_t granularity;
    uint64_t count; /* dirty bytes */
    bool recording;
    bool busy;
    bool persistent;
    bool inconsistent;
} VrQmpBitmapInfo;

void vr_qmp_bitmap_info_free(VrQmpBitmapInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpBitmapInfo, vr_qmp_bitmap_info_free)

/* One entry of query-named-block-nodes, or the "inserted" member of query-block. */
typedef struct {
    char *node_name;
    char *drv;              /* "qcow2", "file", "copy-before-write", ... */
    char *filename;         /* "file" member: the node's filename */
    char *backing_filename; /* NULL without a backing file */
    uint64_t virtual_size;  /* image.virtual-size */
    bool read_only;
    GPtrArray *bitmaps; /* VrQmpBitmapInfo; unnamed (internal) bitmaps are left out */
} VrQmpBlockNode;

void vr_qmp_block_node_free(VrQmpBlockNode *node);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpBlockNode, vr_qmp_block_node_free)

/* One entry of query-block. */
typedef struct {
    char *device;             /* "" under -blockdev */
    char *qdev;               /* device id or QOM path of the BlockBackend's device */
    VrQmpBlockNode *inserted; /* NULL when no medium */
} VrQmpBlockDevice;

void vr_qmp_block_device_free(VrQmpBlockDevice *device);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpBlockDevice, vr_qmp_block_device_free)

/* One entry of query-jobs. */
typedef struct {
    char *id;
    char *type;   /* "backup", "commit", ... */
    char *status; /* "created", "running", "concluded", ... */
    uint64_t current_progress;
    uint64_t total_progress;
    char *error; /* NULL unless the job failed */
} VrQmpJobInfo;

void vr_qmp_job_info_free(VrQmpJobInfo *job);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpJobInfo, vr_qmp_job_info_free)

/* One entry of query-block-exports. */
typedef struct {
    char *id;
    char *type;
    char *node_name;
    bool shutting_down;
} VrQmpExportInfo;

void vr_qmp_export_info_free(VrQmpExportInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpExportInfo, vr_qmp_export_info_free)

/* A bitmap addressed the way merge sources and 7.1+ export bitmaps are: {node, name}. */
typedef struct {
    const char *node;
    const char *name;
} VrQmpBitmapRef;

/* ---- argument builders (transfer full) ----------------------------------------------- */

/* granularity 0 lets QEMU choose (the cluster size clamped to [4 KiB, 64 KiB]). */
json_object *vr_qmp_args_bitmap_add(const char *node, const char *name, bool persistent,
                                    bool disabled, uint32_t granularity);
json_object *vr_qmp_args_bitmap_remove(const char *node, const char *name);
json_object *vr_qmp_args_bitmap_merge(const char *node, const char *target,
                                      const VrQmpBitmapRef *sources, guint n_sources);
/* auto-finalize on, auto-dismiss off: the caller dismisses, so failures stay visible. */
json_object *vr_qmp_args_blockdev_backup(const char *job_id, const char *device, const char *target,
                                         const char *sync);

/* ---- queries ------------------------------------------------------------------------ */

/* (transfer full) of VrQmpBlockNode */
GPtrArray *vr_qmp_query_named_block_nodes(VrQmpClient *client, GError **error);
/* (transfer full) of VrQmpBlockDevice */
GPtrArray *vr_qmp_query_block(VrQmpClient *client, GError **error);
/* (transfer full) of VrQmpJobInfo */
GPtrArray *vr_qmp_query_jobs(VrQmpClient *client, GError **error);
/* (transfer full) of VrQmpExportInfo */
GPtrArray *vr_qmp_query_block_exports(VrQmpClient *client, GError **error);

/* Lookups in query results. (transfer none) */
VrQmpBlockNode *vr_qmp_block_nodes_find(GPtrArray *nodes, const char *node_name);
VrQmpBitmapInfo *vr_qmp_block_node_find_bitmap(VrQmpBlockNode *node, const char *name);

/* The state of bitmap @name on @node, fresh from query-named-block-nodes. (transfer full) */
VrQmpBitmapInfo *vr_qmp_query_bitmap(VrQmpClient *client, const char *node, const char *name,
                                     GError **error);

/* ---- commands ----------------------------------------------------------------------- */

bool vr_qmp_bitmap_add(VrQmpClient *client, const char *node, const char *name, bool persistent,
                       bool disabled, uint32_t granularity, GError **error);
bool vr_qmp_bitmap_remove(VrQmpClient *client, const char *node, const char *name, GError **error);
bool vr_qmp_bitmap_merge(VrQmpClient *client, const char *node, const char *target,
                         const VrQmpBitmapRef *sources, guint n_sources, GError **error);

/* blockdev-add with @options as the arguments. (transfer full) */
bool vr_qmp_blockdev_add(VrQmpClient *client, json_object *options, GError **error);
/*
 * blockdev-add of a qcow2 image at @filename (a path or /dev/fdset/N) as @node_name, its
 * protocol node named @node_name + "-file". @backing_node: the node to use as backing (a
 * fleece over the live disk), or NULL for none, whatever the image header says.
 */
bool vr_qmp_blockdev_add_qcow2(VrQmpClient *client, const char *node_name, const char *filename,
                               const char *backing_node, bool read_only, GError **error);
bool vr_qmp_blockdev_del(VrQmpClient *client, const char *node_name, GError **error);

bool vr_qmp_blockdev_backup(VrQmpClient *client, const char *job_id, const char *device,
                            const char *target, const char *sync, GError **error);

/* block-export-add of an NBD export; @bitmaps: NULL-terminated names on @node_name, or NULL. */
bool vr_qmp_block_export_add_nbd(VrQmpClient *client, const char *id, const char *node_name,
                                 const char *export_name, bool writable, const char *const *bitmaps,
                                 GError **error);
/* @hard: drop connected clients instead of failing while any is connected. */
bool vr_qmp_block_export_del(VrQmpClient *client, const char *id, bool hard, GError **error);

/* The NBD server on a unix socket QEMU creates at @path. */
bool vr_qmp_nbd_server_start_unix(VrQmpClient *client, const char *path, GError **error);
/* The NBD server on a listening socket passed before with getfd as @fdname. */
bool vr_qmp_nbd_server_start_fd(VrQmpClient *client, const char *fdname, GError **error);
bool vr_qmp_nbd_server_stop(VrQmpClient *client, GError **error);

bool vr_qmp_block_job_cancel(VrQmpClient *client, const char *device, bool force, GError **error);
bool vr_qmp_job_dismiss(VrQmpClient *client, const char *id, GError **error);

/*
 * BLOCK_WRITE_THRESHOLD fires once a write reaches past offset @threshold of @node_name; 0
 * disarms. On a protocol (file) node that offset tracks the image's growth, which is what
 * bounds a fleece; on a format node it is a guest offset.
 */
bool vr_qmp_block_set_write_threshold(VrQmpClient *client, const char *node_name,
                                      uint64_t threshold, GError **error);

/*
 * The text HMP printed. (transfer full) Beware: HMP qemu-io prints its result, errors
 * included, on QEMU's stdout, not here: check the effect (a bitmap count), not this text.
 */
char *vr_qmp_human_monitor_command(VrQmpClient *client, const char *command_line, GError **error);

/* Pass @fd to QEMU under @fdname (getfd). @fd stays the caller's. */
bool vr_qmp_getfd(VrQmpClient *client, int fd, const char *fdname, GError **error);
bool vr_qmp_closefd(VrQmpClient *client, const char *fdname, GError **error);
/*
 * Pass @fd into an fd set (add-fd); @fdset_id < 0 lets QEMU pick one. The set's id, for
 * "/dev/fdset/N" file names, is returned in @out_fdset_id. @fd stays the caller's.
 */
bool vr_qmp_add_fd(VrQmpClient *client, int fd, int64_t fdset_id, const char *opaque,
                   int64_t *out_fdset_id, GError **error);
bool vr_qmp_remove_fd(VrQmpClient *client, int64_t fdset_id, GError **error);

G_END_DECLS
