/*
 * vr-qmp-disk.h: from a libvirt disk target (vda) to the QEMU node replication tracks
 *
 * libvirt 9.0 names the format node of a disk's top image "libvirt-<N>-format", where N is
 * the index attribute of <source> in the live XML. N is not in disk order and changes after
 * snapshots and restarts (research/qemu-bitmaps.md §4.2), so the mapping is resolved anew
 * before every use and never cached.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vr-qmp-block.h"
#include "vr-qmp-client.h"

G_BEGIN_DECLS

typedef struct {
    char *target;    /* "vda" */
    char *alias;     /* "virtio-disk0": the device id */
    char *source;    /* the image path of the live XML */
    char *format;    /* the driver type of the live XML: "qcow2", "raw", ... */
    guint index;     /* <source index='N'> */
    char *node_name; /* the top format node: "libvirt-N-format" */
    char *top_node;  /* what the device writes through: node_name, or a filter above it */
    char *qdev;      /* query-block's qdev of the device */
    uint64_t virtual_size;
} VrQmpDiskNode;

void vr_qmp_disk_node_free(VrQmpDiskNode *disk);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpDiskNode, vr_qmp_disk_node_free)

/*
 * Resolve disk @target of the running domain whose live XML is @domain_xml (from
 * virDomainGetXMLDesc(dom, 0)), cross-checked with query-block and query-named-block-nodes
 * through @client:
 *   - the disk exists in the XML and has a <source index> (libvirt uses -blockdev);
 *   - node libvirt-<index>-format exists, its driver is the XML's format, and its file is
 *     the XML's source file;
 *   - the device's BlockBackend (query-block entry whose qdev is the alias or its
 *     virtio-backend child) sits on that node, directly or through filters only
 *     (copy-on-read, copy-before-write, throttle, preallocate).
 * Fails with VR_QMP_ERROR_NOT_FOUND saying which check failed. (transfer full)
 */
VrQmpDiskNode *vr_qmp_disk_resolve(VrQmpClient *client, const char *domain_xml, const char *target,
                                   GError **error);

/*
 * Whether @filter is a filter node (copy-on-read, copy-before-write, throttle, preallocate)
 * sitting directly on @node, judged from query-named-block-nodes entries alone.
 */
bool vr_qmp_block_node_is_filter_over(VrQmpBlockNode *filter, VrQmpBlockNode *node);

G_END_DECLS
