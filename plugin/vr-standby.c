/*
 * vr-standby.c: the standby domain of a relationship, in the replica host's libvirt
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include <gio/gio.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libvirt/virterror.h>

#include "vr-standby.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlParserCtxt, xmlFreeParserCtxt)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlBuffer, xmlBufferFree)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virDomainFree)

GQuark
vr_standby_error_quark(void)
{
    return g_quark_from_static_string("vr-standby-error-quark");
}

#define VR_STANDBY_XMLNS_PREFIX "vr"
#define VR_STANDBY_MARKER       "standby"
#define VR_STANDBY_UUID_LEN     16
/* In the network map: a host bridge rather than a libvirt network. */
#define VR_STANDBY_BRIDGE_PREFIX "bridge:"

/* A FAILED error: what failed (@format), then libvirt's message of the last error. */
static void vr_standby_libvirt_error(GError **error, const char *format, ...) G_GNUC_PRINTF(2, 3);

static void
vr_standby_libvirt_error(GError **error, const char *format, ...)
{
    g_autofree char *what = NULL;
    va_list args;

    va_start(args, format);
    what = g_strdup_vprintf(format, args);
    va_end(args);
    g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_FAILED, "%s: %s", what,
                virGetLastErrorMessage());
}

void
vr_standby_info_free(VrStandbyInfo *info)
{
    if (info == NULL)
        return;
    g_free(info->relationship);
    g_free(info->primary_host);
    g_free(info->primary_name);
    g_free(info->primary_uuid);
    g_free(info->state);
    g_free(info);
}

/* libxml2 helpers: elements without a namespace, by name. */

static bool
vr_xml_is(const xmlNode *node, const char *name)
{
    return node->type == XML_ELEMENT_NODE && node->ns == NULL &&
           strcmp((const char *)node->name, name) == 0;
}

static xmlNode *
vr_xml_child(xmlNode *parent, const char *name)
{
    for (xmlNode *child = parent->children; child != NULL; child = child->next) {
        if (vr_xml_is(child, name))
            return child;
    }
    return NULL;
}

/* Attribute @name of @node (no namespace), or NULL. (transfer full) */
static char *
vr_xml_prop(xmlNode *node, const char *name)
{
    xmlChar *value = xmlGetNoNsProp(node, (const xmlChar *)name);
    char *copy = g_strdup((const char *)value);

    xmlFree(value);
    return copy;
}

/* The text of @node, stripped; NULL when empty. (transfer full) */
static char *
vr_xml_text(xmlNode *node)
{
    xmlChar *value = xmlNodeGetContent(node);
    g_autofree char *copy = g_strdup(value != NULL ? (const char *)value : "");

    xmlFree(value);
    g_strstrip(copy);
    if (copy[0] == '\0')
        return NULL;
    return g_steal_pointer(&copy);
}

static void
vr_xml_set(xmlNode *node, const char *name, const char *value)
{
    xmlSetProp(node, (const xmlChar *)name, (const xmlChar *)value);
}

/* Replace the content of @node by the text @text (no entity is parsed in it). */
static void
vr_xml_set_text(xmlNode *node, const char *text)
{
    xmlNodeSetContent(node, NULL);
    if (text != NULL)
        xmlNodeAddContent(node, (const xmlChar *)text);
}

static void
vr_xml_unset(xmlNode *node, const char *name)
{
    xmlUnsetProp(node, (const xmlChar *)name);
}

static void
vr_xml_remove(xmlNode *node)
{
    xmlUnlinkNode(node);
    xmlFreeNode(node);
}

/* Remove every element child of @parent named @name. */
static void
vr_xml_remove_children(xmlNode *parent, const char *name)
{
    xmlNode *next;

    for (xmlNode *child = parent->children; child != NULL; child = next) {
        next = child->next;
        if (vr_xml_is(child, name))
            vr_xml_remove(child);
    }
}

/* Parse @xml without network access, entities or error output. */
static xmlDoc *
vr_xml_parse(const char *xml, const char *what, GError **error)
{
    g_autoptr(xmlParserCtxt) ctxt = xmlNewParserCtxt();
    xmlDoc *doc;

    if (ctxt == NULL) {
        g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_FAILED, "out of memory");
        return NULL;
    }
    doc = xmlCtxtReadMemory(ctxt, xml, strlen(xml), what, NULL,
                            XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
                                XML_PARSE_NOWARNING);
    if (doc == NULL || xmlDocGetRootElement(doc) == NULL) {
        const xmlError *err = xmlCtxtGetLastError(ctxt);
        g_autofree char *msg = NULL;

        msg = g_strdup(err != NULL && err->message != NULL ? err->message : "empty document");
        g_strstrip(msg);

        xmlFreeDoc(doc);
        g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_INVALID, "%s does not parse: %s",
                    what, msg);
        return NULL;
    }
    return doc;
}

/* UUIDs */

static bool
vr_standby_uuid_parse(const char *text, uint8_t out[VR_STANDBY_UUID_LEN])
{
    guint n = 0;

    if (!g_uuid_string_is_valid(text))
        return false;
    for (const char *p = text; *p != '\0' && n < VR_STANDBY_UUID_LEN; p++) {
        if (*p == '-')
            continue;
        out[n++] = (uint8_t)(g_ascii_xdigit_value(p[0]) << 4 | g_ascii_xdigit_value(p[1]));
        p++;
    }
    return n == VR_STANDBY_UUID_LEN;
}

/*
 * The UUIDv5 (RFC 4122 §4.3: SHA-1) of @name in the namespace @ns_uuid: the same inputs
 * always give the same UUID, so a standby defined again keeps its UUID. (transfer full)
 */
static char *
vr_standby_uuid_v5(const uint8_t ns_uuid[VR_STANDBY_UUID_LEN], const char *name)
{
    g_autoptr(GChecksum) sha1 = g_checksum_new(G_CHECKSUM_SHA1);
    uint8_t digest[20];
    gsize len = sizeof(digest);
    uint8_t *u = digest;

    g_checksum_update(sha1, ns_uuid, VR_STANDBY_UUID_LEN);
    g_checksum_update(sha1, (const guchar *)name, strlen(name));
    g_checksum_get_digest(sha1, digest, &len);
    u[6] = (u[6] & 0x0f) | 0x50; /* version 5 */
    u[8] = (u[8] & 0x3f) | 0x80; /* RFC 4122 variant */
    return g_strdup_printf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                           u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
                           u[12], u[13], u[14], u[15]);
}

/* The standby's name from @rule: "%n" is @primary_name, "%%" a '%'. (transfer full) */
static char *
vr_standby_expand_rule(const char *rule, const char *primary_name, GError **error)
{
    g_autoptr(GString) name = g_string_new(NULL);

    for (const char *p = rule; *p != '\0'; p++) {
        if (*p != '%') {
            g_string_append_c(name, *p);
        } else if (p[1] == 'n') {
            g_string_append(name, primary_name);
            p++;
        } else if (p[1] == '%') {
            g_string_append_c(name, '%');
            p++;
        } else {
            g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_INVALID,
                        "naming rule '%s': only '%%n' and '%%%%' may follow '%%'", rule);
            return NULL;
        }
    }
    if (name->len == 0) {
        g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_INVALID,
                    "naming rule '%s' gives an empty name", rule);
        return NULL;
    }
    return g_string_free(g_steal_pointer(&name), FALSE);
}

/* The transformation */

typedef struct {
    const VrStandbyConfig *cfg;
    GHashTable *disks_seen; /* target dev (owned) -> its path (borrowed from cfg) */
    GHashTable *paths_seen; /* path -> target dev (both borrowed) */
    GPtrArray *sources;     /* VrStandbySource: the primary's interfaces, for the marker */
    guint interfaces;       /* interfaces seen so far */
} VrStandbyBuild;

/*
 * What an interface of the primary is connected to, recorded in the marker as
 * <vr:interface index="0" mac="..." type="network|bridge" source="NAME"/>: a failover maps
 * it again against the configuration and the networks of that moment (vr-failover-net.h).
 */
typedef struct {
    char *index;
    char *mac;
    char *type;
    char *source;
} VrStandbySource;

static void
vr_standby_source_free(gpointer data)
{
    VrStandbySource *src = data;

    g_free(src->index);
    g_free(src->mac);
    g_free(src->type);
    g_free(src->source);
    g_free(src);
}

static bool vr_standby_invalid(GError **error, const char *format, ...) G_GNUC_PRINTF(2, 3);

static bool
vr_standby_invalid(GError **error, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    g_propagate_error(error,
                      g_error_new_valist(VR_STANDBY_ERROR, VR_STANDBY_ERROR_INVALID, format, args));
    va_end(args);
    return false;
}

static const char *
vr_standby_map_network(const VrStandbyConfig *cfg, const char *name)
{
    const char *mapped = NULL;

    if (cfg->network_map != NULL)
        mapped = g_hash_table_lookup(cfg->network_map, name);
    /* A network mapped to a bridge: listen addresses stay on the network's name. */
    return mapped != NULL && !g_str_has_prefix(mapped, VR_STANDBY_BRIDGE_PREFIX) ? mapped : name;
}

/*
 * @iface (of @type "network" or "bridge", on @name) connected as the map says: a key
 * NAME (a network) or "bridge:NAME" (a bridge), a value likewise; unlisted: unchanged.
 */
static void
vr_standby_map_interface(const VrStandbyConfig *cfg, xmlNode *iface, xmlNode *source,
                         const char *type, const char *name)
{
    g_autofree char *key = g_str_equal(type, "bridge")
                               ? g_strconcat(VR_STANDBY_BRIDGE_PREFIX, name, NULL)
                               : g_strdup(name);
    const char *mapped =
        cfg->network_map != NULL ? g_hash_table_lookup(cfg->network_map, key) : NULL;
    const char *new_type = "network";

    if (mapped == NULL)
        return;
    if (g_str_has_prefix(mapped, VR_STANDBY_BRIDGE_PREFIX)) {
        new_type = "bridge";
        mapped += strlen(VR_STANDBY_BRIDGE_PREFIX);
    }
    if (!g_str_equal(type, new_type)) {
        /* Another kind of source: what belonged to the old one goes. */
        vr_xml_unset(source, type);
        vr_xml_unset(source, "portgroup");
        vr_xml_remove_children(iface, "virtualport");
        vr_xml_set(iface, "type", new_type);
    }
    vr_xml_set(source, new_type, mapped);
}

/*
 * Remove the security labels bound to the primary host's policy (SELinux contexts, DAC
 * owners): a <seclabel> with a <label>, <imagelabel> or <baselabel>, wherever it is (the
 * domain, a disk source, a chardev source). Others' <metadata> is left alone.
 */
static void
vr_standby_strip_seclabels(xmlNode *parent)
{
    xmlNode *next;

    for (xmlNode *child = parent->children; child != NULL; child = next) {
        next = child->next;
        if (child->type != XML_ELEMENT_NODE || vr_xml_is(child, "metadata"))
            continue;
        if (vr_xml_is(child, "seclabel") &&
            (vr_xml_child(child, "label") != NULL || vr_xml_child(child, "imagelabel") != NULL ||
             vr_xml_child(child, "baselabel") != NULL)) {
            vr_xml_remove(child);
            continue;
        }
        vr_standby_strip_seclabels(child);
    }
}

/* What a disk's storage brings along that a file of ours does not have. */
static void
vr_standby_disk_clear_source(xmlNode *disk)
{
    vr_xml_remove_children(disk, "source");
    vr_xml_remove_children(disk, "backingStore");
    vr_xml_remove_children(disk, "mirror");
    vr_xml_remove_children(disk, "auth");
    vr_xml_remove_children(disk, "encryption");
    vr_xml_set(disk, "type", "file");
}

static bool
vr_standby_disk(VrStandbyBuild *b, xmlNode *disk, GError **error)
{
    g_autofree char *device = vr_xml_prop(disk, "device");
    g_autofree char *dev = NULL;
    xmlNode *target = vr_xml_child(disk, "target");
    xmlNode *driver;
    xmlNode *source;
    const char *path = NULL;
    const char *other;
    char *seen;

    if (target != NULL)
        dev = vr_xml_prop(target, "dev");
    if (dev == NULL)
        return vr_standby_invalid(error, "a disk of the primary has no target dev");
    if (g_strcmp0(device, "cdrom") == 0 || g_strcmp0(device, "floppy") == 0) {
        /* Media are not replicated: the drive stays, empty. */
        vr_standby_disk_clear_source(disk);
        return true;
    }
    if (device != NULL && strcmp(device, "disk") != 0) {
        return vr_standby_invalid(error, "disk '%s': device '%s' is bound to the primary host", dev,
                                  device);
    }
    if (b->cfg->disk_paths != NULL)
        path = g_hash_table_lookup(b->cfg->disk_paths, dev);
    if (path == NULL)
        return vr_standby_invalid(error, "disk '%s' has no path on the replica", dev);
    if (!g_path_is_absolute(path))
        return vr_standby_invalid(error, "disk '%s': path '%s' is not absolute", dev, path);
    if (g_hash_table_contains(b->disks_seen, dev))
        return vr_standby_invalid(error, "two disks of the primary have target '%s'", dev);
    other = g_hash_table_lookup(b->paths_seen, path);
    if (other != NULL)
        return vr_standby_invalid(error, "disks '%s' and '%s' have the same path", other, dev);
    seen = g_strdup(dev);
    g_hash_table_insert(b->disks_seen, seen, (gpointer)path);
    g_hash_table_insert(b->paths_seen, (gpointer)path, seen);

    vr_standby_disk_clear_source(disk);
    driver = vr_xml_child(disk, "driver");
    if (driver == NULL) {
        driver = xmlNewNode(NULL, (const xmlChar *)"driver");
        if (disk->children != NULL)
            xmlAddPrevSibling(disk->children, driver);
        else
            xmlAddChild(disk, driver);
        vr_xml_set(driver, "name", "qemu");
    }
    vr_xml_set(driver, "type", "qcow2");
    source = xmlNewNode(NULL, (const xmlChar *)"source");
    vr_xml_set(source, "file", path);
    xmlAddNextSibling(driver, source);
    return true;
}

static bool
vr_standby_interface(VrStandbyBuild *b, xmlNode *iface, GError **error)
{
    g_autofree char *type = vr_xml_prop(iface, "type");
    g_autofree char *network = NULL;
    xmlNode *source = vr_xml_child(iface, "source");

    if (g_strcmp0(type, "hostdev") == 0) {
        return vr_standby_invalid(error, "an interface of type 'hostdev' is bound to the "
                                         "primary host's hardware");
    }
    b->interfaces++;
    if ((g_strcmp0(type, "network") != 0 && g_strcmp0(type, "bridge") != 0) || source == NULL)
        return true;
    network = vr_xml_prop(source, type);
    if (network == NULL)
        return true;
    {
        VrStandbySource *src = g_new0(VrStandbySource, 1);

        src->index = g_strdup_printf("%u", b->interfaces - 1);
        src->mac = vr_xml_prop(
            vr_xml_child(iface, "mac") != NULL ? vr_xml_child(iface, "mac") : iface, "address");
        src->type = g_strdup(type);
        src->source = g_strdup(network);
        g_ptr_array_add(b->sources, src);
    }
    if (g_str_equal(type, "network")) {
        /* The primary's port and bridge of that network (in live XML only). */
        vr_xml_unset(source, "portid");
        vr_xml_unset(source, "bridge");
    }
    vr_xml_remove_children(iface, "actual");
    vr_standby_map_interface(b->cfg, iface, source, type, network);
    return true;
}

/* Loopback or wildcard: valid on every host. */
static bool
vr_standby_address_is_portable(const char *address)
{
    g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(address);

    if (inet == NULL)
        return g_ascii_strcasecmp(address, "localhost") == 0;
    return g_inet_address_get_is_loopback(inet) || g_inet_address_get_is_any(inet);
}

static void
vr_standby_graphics(VrStandbyBuild *b, xmlNode *graphics)
{
    g_autofree char *listen = vr_xml_prop(graphics, "listen");
    xmlNode *next;

    /* An address of the primary host: the replica's default (qemu.conf) instead. */
    if (listen != NULL && !vr_standby_address_is_portable(listen))
        vr_xml_unset(graphics, "listen");
    for (xmlNode *child = graphics->children; child != NULL; child = next) {
        g_autofree char *type = NULL;
        g_autofree char *address = NULL;
        g_autofree char *network = NULL;

        next = child->next;
        if (!vr_xml_is(child, "listen"))
            continue;
        type = vr_xml_prop(child, "type");
        address = vr_xml_prop(child, "address");
        network = vr_xml_prop(child, "network");
        if (g_strcmp0(type, "network") == 0) {
            if (network != NULL)
                vr_xml_set(child, "network", vr_standby_map_network(b->cfg, network));
            vr_xml_unset(child, "address"); /* the primary's address on it (live XML) */
        } else if (g_strcmp0(type, "address") == 0 && address != NULL &&
                   !vr_standby_address_is_portable(address)) {
            vr_xml_remove(child);
        }
    }
}

static bool
vr_standby_devices(VrStandbyBuild *b, xmlNode *devices, GError **error)
{
    xmlNode *next;

    for (xmlNode *child = devices->children; child != NULL; child = next) {
        next = child->next;
        if (vr_xml_is(child, "emulator")) {
            /* The primary's binary path: libvirt picks the replica's own. */
            vr_xml_remove(child);
        } else if (vr_xml_is(child, "disk")) {
            if (!vr_standby_disk(b, child, error))
                return false;
        } else if (vr_xml_is(child, "interface")) {
            if (!vr_standby_interface(b, child, error))
                return false;
        } else if (vr_xml_is(child, "graphics")) {
            vr_standby_graphics(b, child);
        } else if (vr_xml_is(child, "hostdev")) {
            g_autofree char *type = vr_xml_prop(child, "type");

            return vr_standby_invalid(error,
                                      "a hostdev (type '%s') is bound to the primary "
                                      "host's hardware",
                                      type != NULL ? type : "?");
        } else if (vr_xml_is(child, "tpm")) {
            xmlNode *backend = vr_xml_child(child, "backend");
            g_autofree char *type = backend != NULL ? vr_xml_prop(backend, "type") : NULL;

            if (g_strcmp0(type, "passthrough") == 0)
                return vr_standby_invalid(error, "a passthrough TPM is bound to the primary "
                                                 "host's hardware");
        }
    }
    return true;
}

/* The NVRAM path is the primary's: libvirt makes one for the standby's name from the template. */
static void
vr_standby_nvram(xmlNode *os)
{
    xmlNode *nvram = vr_xml_child(os, "nvram");
    g_autofree char *template = NULL;
    xmlNode *fresh;

    if (nvram == NULL)
        return;
    template = vr_xml_prop(nvram, "template");
    fresh = xmlNewNode(NULL, (const xmlChar *)"nvram");
    if (template != NULL)
        vr_xml_set(fresh, "template", template);
    xmlReplaceNode(nvram, fresh);
    xmlFreeNode(nvram);
}

/* <sysinfo><system><entry name='uuid'> must equal <uuid>: it goes with a new UUID. */
static void
vr_standby_sysinfo_uuid(xmlNode *root)
{
    for (xmlNode *sysinfo = root->children; sysinfo != NULL; sysinfo = sysinfo->next) {
        xmlNode *system;
        xmlNode *next;

        if (!vr_xml_is(sysinfo, "sysinfo") || (system = vr_xml_child(sysinfo, "system")) == NULL)
            continue;
        for (xmlNode *entry = system->children; entry != NULL; entry = next) {
            g_autofree char *name = NULL;

            next = entry->next;
            if (!vr_xml_is(entry, "entry"))
                continue;
            name = vr_xml_prop(entry, "name");
            if (g_strcmp0(name, "uuid") == 0)
                vr_xml_remove(entry);
        }
    }
}

static bool
vr_standby_is_marker(const xmlNode *node)
{
    return node->type == XML_ELEMENT_NODE && node->ns != NULL && node->ns->href != NULL &&
           strcmp((const char *)node->ns->href, VR_STANDBY_XMLNS) == 0 &&
           strcmp((const char *)node->name, VR_STANDBY_MARKER) == 0;
}

static void
vr_standby_add_marker(xmlNode *root, const VrStandbyConfig *cfg, const char *primary_name,
                      const char *primary_uuid, GPtrArray *sources)
{
    xmlNode *metadata = vr_xml_child(root, "metadata");
    g_autofree char *epoch = g_strdup_printf("%" G_GUINT64_FORMAT, cfg->epoch);
    xmlNode *marker;
    xmlNode *next;
    xmlNs *ns;

    if (metadata == NULL) {
        metadata = xmlNewNode(NULL, (const xmlChar *)"metadata");
        xmlAddChild(root, metadata);
    }
    /* A primary that was a standby once (after a failover) carries a marker: not ours. */
    for (xmlNode *child = metadata->children; child != NULL; child = next) {
        next = child->next;
        if (child->type == XML_ELEMENT_NODE && child->ns != NULL &&
            g_strcmp0((const char *)child->ns->href, VR_STANDBY_XMLNS) == 0)
            vr_xml_remove(child);
    }
    marker = xmlNewChild(metadata, NULL, (const xmlChar *)VR_STANDBY_MARKER, NULL);
    ns = xmlNewNs(marker, (const xmlChar *)VR_STANDBY_XMLNS,
                  (const xmlChar *)VR_STANDBY_XMLNS_PREFIX);
    xmlSetNs(marker, ns);
    vr_xml_set(marker, "relationship", cfg->relationship);
    if (cfg->primary_host != NULL)
        vr_xml_set(marker, "primary-host", cfg->primary_host);
    vr_xml_set(marker, "primary-name", primary_name);
    vr_xml_set(marker, "primary-uuid", primary_uuid);
    vr_xml_set(marker, "epoch", epoch);
    vr_xml_set(marker, "state", VR_STANDBY_STATE_REPLICA);
    for (guint i = 0; i < sources->len; i++) {
        VrStandbySource *src = sources->pdata[i];
        xmlNode *record = xmlNewChild(marker, ns, (const xmlChar *)"interface", NULL);

        vr_xml_set(record, "index", src->index);
        if (src->mac != NULL)
            vr_xml_set(record, "mac", src->mac);
        vr_xml_set(record, "type", src->type);
        vr_xml_set(record, "source", src->source);
    }
}

typedef struct {
    char *xml;
    char *name;
    char *uuid;
} VrStandbyDef;

static void
vr_standby_def_free(VrStandbyDef *def)
{
    if (def == NULL)
        return;
    g_free(def->xml);
    g_free(def->name);
    g_free(def->uuid);
    g_free(def);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrStandbyDef, vr_standby_def_free)

static bool
vr_standby_check_config(const VrStandbyConfig *cfg, GError **error)
{
    GHashTableIter iter;
    gpointer key;
    gpointer value;

    if (cfg->relationship == NULL || cfg->relationship[0] == '\0')
        return vr_standby_invalid(error, "no relationship for the standby");
    if (cfg->disk_paths == NULL)
        return true;
    g_hash_table_iter_init(&iter, cfg->disk_paths);
    while (g_hash_table_iter_next(&iter, &key, &value)) {
        if (value == NULL)
            return vr_standby_invalid(error, "disk '%s' has no path", (const char *)key);
    }
    return true;
}

/* The standby's XML, name and UUID from the primary's XML. */
static VrStandbyDef *
vr_standby_build(const char *primary_xml, const VrStandbyConfig *cfg, GError **error)
{
    g_autoptr(VrStandbyDef) def = g_new0(VrStandbyDef, 1);
    g_autoptr(GHashTable) disks_seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) paths_seen = g_hash_table_new(g_str_hash, g_str_equal);
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(xmlBuffer) buf = NULL;
    g_autofree char *primary_name = NULL;
    g_autofree char *primary_uuid = NULL;
    g_autoptr(GPtrArray) sources = g_ptr_array_new_with_free_func(vr_standby_source_free);
    VrStandbyBuild b = { cfg, disks_seen, paths_seen, sources, 0 };
    uint8_t uuid_bytes[VR_STANDBY_UUID_LEN];
    xmlNode *root;
    xmlNode *name_node;
    xmlNode *uuid_node;
    xmlNode *node;
    GHashTableIter iter;
    gpointer key;

    if (!vr_standby_check_config(cfg, error))
        return NULL;
    doc = vr_xml_parse(primary_xml, "the primary's domain XML", error);
    if (doc == NULL)
        return NULL;
    root = xmlDocGetRootElement(doc);
    if (!vr_xml_is(root, "domain")) {
        vr_standby_invalid(error, "the primary's domain XML has <%s> at its root, not <domain>",
                           (const char *)root->name);
        return NULL;
    }
    name_node = vr_xml_child(root, "name");
    uuid_node = vr_xml_child(root, "uuid");
    if (name_node != NULL)
        primary_name = vr_xml_text(name_node);
    if (uuid_node != NULL)
        primary_uuid = vr_xml_text(uuid_node);
    if (primary_name == NULL || primary_uuid == NULL) {
        vr_standby_invalid(error, "the primary's domain XML has no <%s>",
                           primary_name == NULL ? "name" : "uuid");
        return NULL;
    }
    if (!vr_standby_uuid_parse(primary_uuid, uuid_bytes)) {
        vr_standby_invalid(error, "the primary's UUID '%s' is not valid", primary_uuid);
        return NULL;
    }

    /* Name and UUID. The runtime id is the primary's. */
    vr_xml_unset(root, "id");
    if (cfg->name_rule != NULL) {
        def->name = vr_standby_expand_rule(cfg->name_rule, primary_name, error);
        if (def->name == NULL)
            return NULL;
        def->uuid = vr_standby_uuid_v5(uuid_bytes, cfg->relationship);
        vr_xml_set_text(name_node, def->name);
        vr_xml_set_text(uuid_node, def->uuid);
        vr_standby_sysinfo_uuid(root);
    } else {
        def->name = g_strdup(primary_name);
        def->uuid = g_ascii_strdown(primary_uuid, -1);
    }

    /* A booted recovery point is a restored VM: an empty <genid/> makes libvirt pick anew. */
    if ((node = vr_xml_child(root, "genid")) != NULL)
        vr_xml_set_text(node, NULL);
    if ((node = vr_xml_child(root, "os")) != NULL)
        vr_standby_nvram(node);
    if ((node = vr_xml_child(root, "devices")) != NULL && !vr_standby_devices(&b, node, error))
        return NULL;
    if (cfg->disk_paths != NULL) {
        g_hash_table_iter_init(&iter, cfg->disk_paths);
        while (g_hash_table_iter_next(&iter, &key, NULL)) {
            if (!g_hash_table_contains(disks_seen, key)) {
                vr_standby_invalid(error, "disk '%s' has a path but the primary has no such disk",
                                   (const char *)key);
                return NULL;
            }
        }
    }
    vr_standby_strip_seclabels(root);
    vr_standby_add_marker(root, cfg, primary_name, primary_uuid, sources);

    buf = xmlBufferCreate();
    if (buf == NULL || xmlNodeDump(buf, doc, root, 0, 1) < 0) {
        g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_FAILED,
                    "cannot write the standby's domain XML");
        return NULL;
    }
    def->xml = g_strconcat((const char *)xmlBufferContent(buf), "\n", NULL);
    return g_steal_pointer(&def);
}

char *
vr_standby_build_xml(const char *primary_xml, const VrStandbyConfig *cfg, GError **error)
{
    g_autoptr(VrStandbyDef) def = vr_standby_build(primary_xml, cfg, error);

    if (def == NULL)
        return NULL;
    return g_steal_pointer(&def->xml);
}

/* The marker */

static bool
vr_standby_info_fill(VrStandbyInfo *info, xmlNode *marker)
{
    g_autofree char *epoch = vr_xml_prop(marker, "epoch");
    guint64 value = 0;

    info->relationship = vr_xml_prop(marker, "relationship");
    info->primary_host = vr_xml_prop(marker, "primary-host");
    info->primary_name = vr_xml_prop(marker, "primary-name");
    info->primary_uuid = vr_xml_prop(marker, "primary-uuid");
    info->state = vr_xml_prop(marker, "state");
    if (epoch != NULL && !g_ascii_string_to_unsigned(epoch, 10, 0, G_MAXUINT64, &value, NULL))
        return false;
    info->epoch = value;
    return info->relationship != NULL && info->relationship[0] != '\0';
}

VrStandbyInfo *
vr_standby_info_from_xml(const char *xml)
{
    g_autoptr(VrStandbyInfo) info = g_new0(VrStandbyInfo, 1);
    g_autoptr(xmlDoc) doc = NULL;
    xmlNode *root;
    xmlNode *marker = NULL;
    xmlNode *metadata;

    if (xml == NULL)
        return NULL;
    doc = vr_xml_parse(xml, "domain XML", NULL);
    if (doc == NULL)
        return NULL;
    root = xmlDocGetRootElement(doc);
    /* virDomainGetMetadata() gives the element without its namespace. */
    if (vr_standby_is_marker(root) || vr_xml_is(root, VR_STANDBY_MARKER)) {
        marker = root;
    } else if (vr_xml_is(root, "domain") && (metadata = vr_xml_child(root, "metadata")) != NULL) {
        for (xmlNode *child = metadata->children; child != NULL; child = child->next) {
            if (vr_standby_is_marker(child)) {
                marker = child;
                break;
            }
        }
    }
    if (marker == NULL || !vr_standby_info_fill(info, marker))
        return NULL;
    return g_steal_pointer(&info);
}

VrStandbyInfo *
vr_standby_info_get(virDomainPtr dom)
{
    g_autofree char *xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, VR_STANDBY_XMLNS,
                                                VIR_DOMAIN_AFFECT_CONFIG);

    return vr_standby_info_from_xml(xml);
}

bool
vr_standby_is_standby(virDomainPtr dom, char **relationship_out)
{
    g_autoptr(VrStandbyInfo) info = vr_standby_info_get(dom);

    if (info == NULL)
        return false;
    if (relationship_out != NULL)
        *relationship_out = g_steal_pointer(&info->relationship);
    return true;
}

/*
 * Whether @dom (named @name) is the standby of @relationship; a CONFLICT naming what it is
 * otherwise. @info_out gets its marker.
 */
static bool
vr_standby_check_ours(virDomainPtr dom, const char *name, const char *relationship,
                      VrStandbyInfo **info_out, GError **error)
{
    g_autoptr(VrStandbyInfo) info = vr_standby_info_get(dom);
    int active;

    if (info == NULL) {
        g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT,
                    "domain '%s' exists and is not a virt-replica standby", name);
        return false;
    }
    if (strcmp(info->relationship, relationship) != 0) {
        g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT,
                    "domain '%s' is the standby of relationship '%s', not '%s'", name,
                    info->relationship, relationship);
        return false;
    }
    active = virDomainIsActive(dom);
    if (active < 0) {
        vr_standby_libvirt_error(error, "cannot tell whether standby '%s' runs", name);
        return false;
    }
    if (active) {
        g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT,
                    "standby '%s' of relationship '%s' is running (state '%s')", name, relationship,
                    info->state != NULL ? info->state : "none");
        return false;
    }
    if (info_out != NULL)
        *info_out = g_steal_pointer(&info);
    return true;
}

/* The domain named @name, or NULL; false only on a libvirt error. */
static bool
vr_standby_lookup_name(virConnectPtr conn, const char *name, virDomainPtr *dom_out, GError **error)
{
    virDomainPtr dom = virDomainLookupByName(conn, name);

    if (dom == NULL && virGetLastErrorCode() != VIR_ERR_NO_DOMAIN) {
        vr_standby_libvirt_error(error, "cannot look domain '%s' up", name);
        return false;
    }
    *dom_out = dom;
    return true;
}

/* Nothing but the standby of this relationship (or nothing) has @def's name or UUID. */
static bool
vr_standby_check_existing(virConnectPtr conn, const VrStandbyDef *def, const VrStandbyConfig *cfg,
                          GError **error)
{
    g_autoptr(virDomain) by_name = NULL;
    g_autoptr(virDomain) by_uuid = NULL;
    g_autoptr(VrStandbyInfo) info = NULL;

    if (!vr_standby_lookup_name(conn, def->name, &by_name, error))
        return false;
    if (by_name != NULL) {
        char uuid[VIR_UUID_STRING_BUFLEN];

        if (!vr_standby_check_ours(by_name, def->name, cfg->relationship, &info, error))
            return false;
        if (virDomainGetUUIDString(by_name, uuid) < 0) {
            vr_standby_libvirt_error(error, "cannot read the UUID of domain '%s'", def->name);
            return false;
        }
        if (g_ascii_strcasecmp(uuid, def->uuid) != 0) {
            g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT,
                        "standby '%s' has UUID '%s', not '%s'", def->name, uuid, def->uuid);
            return false;
        }
        if (info->epoch > cfg->epoch) {
            g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT,
                        "standby '%s' is at epoch %" G_GUINT64_FORMAT
                        ", newer than %" G_GUINT64_FORMAT,
                        def->name, info->epoch, cfg->epoch);
            return false;
        }
        return true;
    }
    by_uuid = virDomainLookupByUUIDString(conn, def->uuid);
    if (by_uuid == NULL && virGetLastErrorCode() != VIR_ERR_NO_DOMAIN) {
        vr_standby_libvirt_error(error, "cannot look UUID '%s' up", def->uuid);
        return false;
    }
    if (by_uuid != NULL) {
        g_set_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT,
                    "domain '%s' has the standby's UUID '%s'", virDomainGetName(by_uuid),
                    def->uuid);
        return false;
    }
    return true;
}

virDomainPtr
vr_standby_define(virConnectPtr conn, const char *primary_xml, const VrStandbyConfig *cfg,
                  GError **error)
{
    g_autoptr(VrStandbyDef) def = vr_standby_build(primary_xml, cfg, error);
    g_autoptr(virDomain) dom = NULL;

    if (def == NULL)
        return NULL;
    if (!vr_standby_check_existing(conn, def, cfg, error))
        return NULL;
    /* Validated against libvirt's schema: what this libvirt does not know fails loudly. */
    dom = virDomainDefineXMLFlags(conn, def->xml, VIR_DOMAIN_DEFINE_VALIDATE);
    if (dom == NULL) {
        vr_standby_libvirt_error(error, "cannot define standby '%s'", def->name);
        return NULL;
    }
    if (virDomainSetAutostart(dom, 0) < 0) {
        vr_standby_libvirt_error(error, "cannot turn autostart of standby '%s' off", def->name);
        return NULL;
    }
    return g_steal_pointer(&dom);
}

bool
vr_standby_undefine(virConnectPtr conn, const char *name, const char *relationship, GError **error)
{
    g_autoptr(virDomain) dom = NULL;

    if (!vr_standby_lookup_name(conn, name, &dom, error))
        return false;
    if (dom == NULL)
        return true;
    if (!vr_standby_check_ours(dom, name, relationship, NULL, error))
        return false;
    if (virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_NVRAM | VIR_DOMAIN_UNDEFINE_TPM |
                                        VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                        VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                        VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA) < 0) {
        vr_standby_libvirt_error(error, "cannot undefine standby '%s'", name);
        return false;
    }
    return true;
}
