/*
 * vr-qmp-disk.c: from a libvirt disk target (vda) to the QEMU node replication tracks
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <libxml/parser.h>
#include <libxml/xpath.h>

#include "vr-qmp-block.h"
#include "vr-qmp-disk.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathContext, xmlXPathFreeContext)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathObject, xmlXPathFreeObject)

/* Filters QEMU or libvirt may put between a device and the image's format node. */
static const char *const vr_qmp_filter_drivers[] = {
    "copy-on-read", "copy-before-write", "throttle", "preallocate", NULL,
};

void
vr_qmp_disk_node_free(VrQmpDiskNode *disk)
{
    if (disk == NULL)
        return;
    g_free(disk->target);
    g_free(disk->alias);
    g_free(disk->source);
    g_free(disk->format);
    g_free(disk->node_name);
    g_free(disk->top_node);
    g_free(disk->qdev);
    g_free(disk);
}

/* The string value of @expr relative to @node, or NULL when empty. (transfer full) */
static char *
vr_qmp_xpath_string(xmlXPathContext *ctx, xmlNode *node, const char *expr)
{
    g_autoptr(xmlXPathObject) obj = NULL;

    ctx->node = node;
    obj = xmlXPathEvalExpression((const xmlChar *)expr, ctx);
    if (obj == NULL || obj->type != XPATH_STRING || obj->stringval == NULL ||
        obj->stringval[0] == '\0')
        return NULL;
    return g_strdup((const char *)obj->stringval);
}

static bool vr_qmp_disk_fail(GError **error, const char *target, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static bool
vr_qmp_disk_fail(GError **error, const char *target, const char *format, ...)
{
    g_autofree char *what = NULL;
    va_list args;

    va_start(args, format);
    what = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, VR_QMP_ERROR, VR_QMP_ERROR_NOT_FOUND, "disk '%s': %s", target, what);
    return false;
}

/* Fill target, alias, source, format and index from the live XML. */
static bool
vr_qmp_disk_from_xml(VrQmpDiskNode *disk, const char *domain_xml, GError **error)
{
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(xmlXPathContext) ctx = NULL;
    g_autoptr(xmlXPathObject) disks = NULL;
    g_autofree char *index = NULL;
    xmlNode *found = NULL;
    guint64 value = 0;

    doc = xmlReadMemory(domain_xml, strlen(domain_xml), "domain.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (doc == NULL)
        return vr_qmp_disk_fail(error, disk->target, "the domain XML does not parse");
    ctx = xmlXPathNewContext(doc);
    disks = xmlXPathEvalExpression((const xmlChar *)"/domain/devices/disk", ctx);
    for (int i = 0; disks != NULL && disks->nodesetval != NULL && i < disks->nodesetval->nodeNr;
         i++) {
        xmlNode *node = disks->nodesetval->nodeTab[i];
        g_autofree char *dev = vr_qmp_xpath_string(ctx, node, "string(target/@dev)");

        if (g_strcmp0(dev, disk->target) == 0) {
            found = node;
            break;
        }
    }
    if (found == NULL)
        return vr_qmp_disk_fail(error, disk->target, "no such disk in the domain XML");

    disk->alias = vr_qmp_xpath_string(ctx, found, "string(alias/@name)");
    disk->format = vr_qmp_xpath_string(ctx, found, "string(driver/@type)");
    disk->source = vr_qmp_xpath_string(ctx, found, "string(source/@file | source/@dev)");
    index = vr_qmp_xpath_string(ctx, found, "string(source/@index)");
    if (disk->alias == NULL || index == NULL) {
        return vr_qmp_disk_fail(error, disk->target,
                                "no alias or source index in the XML: is the domain running?");
    }
    if (!g_ascii_string_to_unsigned(index, 10, 1, G_MAXUINT, &value, NULL))
        return vr_qmp_disk_fail(error, disk->target, "source index '%s' is not valid", index);
    disk->index = (guint)value;
    return true;
}

static bool
vr_qmp_is_filter(const char *drv)
{
    return g_strv_contains(vr_qmp_filter_drivers, drv);
}

/* The innermost "filename" of a blockdev spec: {"driver": ..., "file": {... "filename"}}. */
static const char *
vr_qmp_spec_filename(json_object *spec)
{
    for (int depth = 0; spec != NULL && depth < 8; depth++) {
        json_object *file = NULL;

        if (vr_json_get_string(spec, "filename") != NULL)
            return vr_json_get_string(spec, "filename");
        if (!json_object_object_get_ex(spec, "file", &file))
            return NULL;
        if (json_object_is_type(file, json_type_string))
            return json_object_get_string(file);
        spec = file;
    }
    return NULL;
}

/*
 * A filter that passes its child's name through (copy-before-write) reports the child's
 * file name; one that does not (libvirt's copy-on-read) reports "json:{...}" with the
 * child's spec under "file".
 */
bool
vr_qmp_block_node_is_filter_over(VrQmpBlockNode *filter, VrQmpBlockNode *node)
{
    g_autoptr(json_object) spec = NULL;
    json_object *child = NULL;

    if (!vr_qmp_is_filter(filter->drv) || filter->filename == NULL)
        return false;
    if (!g_str_has_prefix(filter->filename, "json:"))
        return g_strcmp0(filter->filename, node->filename) == 0;
    spec = json_tokener_parse(filter->filename + strlen("json:"));
    if (spec == NULL || !json_object_object_get_ex(spec, "file", &child))
        return false;
    if (json_object_is_type(child, json_type_string))
        return g_strcmp0(json_object_get_string(child), node->node_name) == 0;
    return g_strcmp0(vr_json_get_string(child, "driver"), node->drv) == 0 &&
           g_strcmp0(vr_qmp_spec_filename(child), node->filename) == 0;
}

/*
 * Whether format node @node reads the file @path. A node whose backing chain QEMU opened
 * itself (an image with a backing file that the XML does not describe, as a failover's
 * overlay with relabel='no') reports "json:{...}" with its file's spec under "file".
 */
static bool
vr_qmp_node_reads(const VrQmpBlockNode *node, const char *path)
{
    g_autoptr(json_object) spec = NULL;
    json_object *file = NULL;

    if (node->filename == NULL || !g_str_has_prefix(node->filename, "json:"))
        return g_strcmp0(node->filename, path) == 0;
    spec = json_tokener_parse(node->filename + strlen("json:"));
    if (spec == NULL || !json_object_object_get_ex(spec, "file", &file) ||
        !json_object_is_type(file, json_type_object))
        return false;
    return g_strcmp0(vr_qmp_spec_filename(file), path) == 0;
}

VrQmpDiskNode *
vr_qmp_disk_resolve(VrQmpClient *client, const char *domain_xml, const char *target, GError **error)
{
    g_autoptr(VrQmpDiskNode) disk = g_new0(VrQmpDiskNode, 1);
    g_autoptr(GPtrArray) devices = NULL;
    g_autoptr(GPtrArray) nodes = NULL;
    g_autofree char *backend = NULL;
    VrQmpBlockDevice *device = NULL;
    VrQmpBlockNode *node;
    VrQmpBlockNode *top;

    disk->target = g_strdup(target);
    if (!vr_qmp_disk_from_xml(disk, domain_xml, error))
        return NULL;
    disk->node_name = g_strdup_printf("libvirt-%u-format", disk->index);

    nodes = vr_qmp_query_named_block_nodes(client, error);
    if (nodes == NULL)
        return NULL;
    node = vr_qmp_block_nodes_find(nodes, disk->node_name);
    if (node == NULL) {
        vr_qmp_disk_fail(error, target, "QEMU has no node '%s'", disk->node_name);
        return NULL;
    }
    if (disk->format != NULL && g_strcmp0(node->drv, disk->format) != 0) {
        vr_qmp_disk_fail(error, target, "node '%s' has driver '%s' but the XML says '%s'",
                         disk->node_name, node->drv, disk->format);
        return NULL;
    }
    if (disk->source != NULL && !vr_qmp_node_reads(node, disk->source)) {
        vr_qmp_disk_fail(error, target, "node '%s' is '%s' but the XML says '%s'", disk->node_name,
                         node->filename, disk->source);
        return NULL;
    }
    disk->virtual_size = node->virtual_size;

    /* virtio-blk's BlockBackend hangs off a child without an id (§4.2). */
    backend = g_strdup_printf("/machine/peripheral/%s/virtio-backend", disk->alias);
    devices = vr_qmp_query_block(client, error);
    if (devices == NULL)
        return NULL;
    for (guint i = 0; i < devices->len; i++) {
        VrQmpBlockDevice *d = g_ptr_array_index(devices, i);

        if (g_strcmp0(d->qdev, disk->alias) == 0 || g_strcmp0(d->qdev, backend) == 0) {
            device = d;
            break;
        }
    }
    if (device == NULL || device->inserted == NULL) {
        vr_qmp_disk_fail(error, target, "query-block has no device '%s' with a medium",
                         disk->alias);
        return NULL;
    }
    disk->qdev = g_strdup(device->qdev);
    disk->top_node = g_strdup(device->inserted->node_name);

    /*
     * Between the device and the format node there may only be a filter, tied to the format
     * node through the name it reports (no x-debug-query-block-graph: unstable).
     */
    top = vr_qmp_block_nodes_find(nodes, disk->top_node);
    if (top == NULL) {
        vr_qmp_disk_fail(error, target, "query-block names node '%s' that does not exist",
                         disk->top_node);
        return NULL;
    }
    if (top != node && !vr_qmp_block_node_is_filter_over(top, node)) {
        vr_qmp_disk_fail(error, target,
                         "the device writes through node '%s' (%s), not '%s' of the live XML: "
                         "a snapshot or block job may have moved the active layer",
                         disk->top_node, top->drv, disk->node_name);
        return NULL;
    }
    return g_steal_pointer(&disk);
}
