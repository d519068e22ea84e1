/*
 * vr-failover-net.c: networks and guest IP configuration of a failed-over domain
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "vr-failover-net.h"
#include "vr-failover.h"
#include "vr-guest-agent.h"
#include "vr-qmp-json.h"
#include "vr-standby.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virDomainFree)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virNetwork, virNetworkFree)

#define VR_FAILOVER_NET_BRIDGE "bridge:"
/* The watcher's period, and the agent's answer time for each command (seconds). */
#define VR_FAILOVER_NET_RETRY_S 2
#define VR_FAILOVER_NET_AGENT_S 5
/* How long one command may run in the guest (ms). */
#define VR_FAILOVER_NET_EXEC_MS 10000
/*
 * How long one attempt (ping to the last guest-exec-status) may take in its worker thread
 * (seconds): a guest that answers each command slowly, or never ends its commands, cannot
 * keep a thread for 5 commands x 10 s x its NICs.
 */
#define VR_FAILOVER_NET_ATTEMPT_S 60
/*
 * A pending push is resumed at most this many times by daemon starts: a push that kills
 * the daemon (or a daemon killed again and again meanwhile) is given up, not retried forever.
 */
#define VR_FAILOVER_NET_RESUME_MAX 3
/* The kind of a pending push's intent in the state database: this and the record's name. */
#define VR_FAILOVER_NET_INTENT "guest-ip:"

/* ---- libxml2 helpers ------------------------------------------------------------------ */

static bool
vr_net_is(const xmlNode *node, const char *name)
{
    return node->type == XML_ELEMENT_NODE && node->ns == NULL &&
           strcmp((const char *)node->name, name) == 0;
}

static xmlNode *
vr_net_child(xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent->children; c != NULL; c = c->next) {
        if (vr_net_is(c, name))
            return c;
    }
    return NULL;
}

/* (transfer full) */
static char *
vr_net_prop(xmlNode *node, const char *name)
{
    xmlChar *value = node != NULL ? xmlGetNoNsProp(node, (const xmlChar *)name) : NULL;
    char *copy = g_strdup((const char *)value);

    xmlFree(value);
    return copy;
}

static void
vr_net_remove_children(xmlNode *parent, const char *name)
{
    xmlNode *next;

    for (xmlNode *c = parent->children; c != NULL; c = next) {
        next = c->next;
        if (vr_net_is(c, name)) {
            xmlUnlinkNode(c);
            xmlFreeNode(c);
        }
    }
}

static xmlNode *
vr_net_marker(xmlNode *root)
{
    xmlNode *metadata = vr_net_child(root, "metadata");

    for (xmlNode *c = metadata != NULL ? metadata->children : NULL; c != NULL; c = c->next) {
        if (c->type == XML_ELEMENT_NODE && c->ns != NULL && c->ns->href != NULL &&
            strcmp((const char *)c->ns->href, VR_STANDBY_XMLNS) == 0 &&
            strcmp((const char *)c->name, "standby") == 0)
            return c;
    }
    return NULL;
}

/* ---- step 1: the mapping (pure) -------------------------------------------------------- */

static json_object *vr_net_string_printf(const char *format, ...) G_GNUC_PRINTF(1, 2);

static json_object *
vr_net_string_printf(const char *format, ...)
{
    g_autofree char *text = NULL;
    va_list args;

    va_start(args, format);
    text = g_strdup_vprintf(format, args);
    va_end(args);
    return json_object_new_string(text);
}

/* The primary's source of interface number @index with MAC @mac, as the marker records it. */
static xmlNode *
vr_net_record(xmlNode *marker, const char *mac, guint index)
{
    g_autofree char *wanted = g_strdup_printf("%u", index);

    for (xmlNode *c = marker != NULL ? marker->children : NULL; c != NULL; c = c->next) {
        g_autofree char *rmac = NULL;
        g_autofree char *rindex = NULL;

        if (c->type != XML_ELEMENT_NODE || strcmp((const char *)c->name, VR_FAILOVER_NET_RECORD))
            continue;
        rmac = vr_net_prop(c, "mac");
        rindex = vr_net_prop(c, "index");
        if (mac != NULL ? (rmac != NULL && g_ascii_strcasecmp(rmac, mac) == 0)
                        : g_strcmp0(rindex, wanted) == 0)
            return c;
    }
    return NULL;
}

/* @key ("NAME" or "bridge:NAME") through @map, or NULL. */
static const char *
vr_net_lookup(GHashTable *map, const char *key)
{
    return map != NULL ? g_hash_table_lookup(map, key) : NULL;
}

/*
 * Where the interface whose primary source is @key goes, and by which @rule_out. (transfer
 * full: "NAME" or "bridge:NAME")
 */
static char *
vr_net_resolve(const VrConfig *config, const char *mac, const char *relationship,
               const char *primary_name, const char *key, char **rule_out)
{
    const VrConfigInterface *iface = NULL;
    const char *scopes[] = { relationship, primary_name };
    const char *target;

    if (config == NULL) {
        *rule_out = g_strdup("same-name");
        return g_strdup(key);
    }
    if (mac != NULL) {
        g_autofree char *lower = g_ascii_strdown(mac, -1);

        iface = g_hash_table_lookup(config->interfaces, lower);
    }
    if (iface != NULL && (iface->network != NULL || iface->bridge != NULL)) {
        *rule_out = g_strdup_printf("interface:%s", iface->mac);
        return iface->network != NULL ? g_strdup(iface->network)
                                      : g_strconcat(VR_FAILOVER_NET_BRIDGE, iface->bridge, NULL);
    }
    for (guint i = 0; i < G_N_ELEMENTS(scopes); i++) {
        if (scopes[i] == NULL)
            continue;
        target = vr_net_lookup(g_hash_table_lookup(config->network_maps, scopes[i]), key);
        if (target != NULL) {
            *rule_out = g_strdup_printf("network-map:%s", scopes[i]);
            return g_strdup(target);
        }
    }
    target = vr_net_lookup(config->network_map, key);
    if (target != NULL) {
        *rule_out = g_strdup("network-map");
        return g_strdup(target);
    }
    *rule_out = g_strdup("same-name");
    return g_strdup(key);
}

/* "bridge:NAME" -> "bridge", NAME; "NAME" -> "network", NAME. */
static const char *
vr_net_split(const char *target, const char **name_out)
{
    if (g_str_has_prefix(target, VR_FAILOVER_NET_BRIDGE)) {
        *name_out = target + strlen(VR_FAILOVER_NET_BRIDGE);
        return "bridge";
    }
    *name_out = target;
    return "network";
}

/* Connect @iface to @kind @name, its source rebuilt only when it changes (a portgroup, a
 * virtualport of the same source stay). */
static void
vr_net_connect(xmlNode *iface, const char *kind, const char *name)
{
    g_autofree char *type = vr_net_prop(iface, "type");
    xmlNode *source = vr_net_child(iface, "source");
    g_autofree char *current = vr_net_prop(source, kind);
    xmlNode *mac;

    if (g_strcmp0(type, kind) == 0 && g_strcmp0(current, name) == 0)
        return;
    /* Unconnected by an earlier failover (vr_net_disconnect()): its link-down was ours. */
    if (g_strcmp0(type, "ethernet") == 0)
        vr_net_remove_children(iface, "link");
    vr_net_remove_children(iface, "source");
    vr_net_remove_children(iface, "virtualport");
    vr_net_remove_children(iface, "actual");
    xmlSetProp(iface, (const xmlChar *)"type", (const xmlChar *)kind);
    source = xmlNewNode(NULL, (const xmlChar *)"source");
    xmlSetProp(source, (const xmlChar *)kind, (const xmlChar *)name);
    mac = vr_net_child(iface, "mac");
    if (mac != NULL)
        xmlAddNextSibling(mac, source);
    else if (iface->children != NULL)
        xmlAddPrevSibling(iface->children, source);
    else
        xmlAddChild(iface, source);
}

/* @iface on a tap of its own, attached to nothing, link down; its MAC and model stay. */
static void
vr_net_disconnect(xmlNode *iface)
{
    xmlNode *link;

    vr_net_remove_children(iface, "source");
    vr_net_remove_children(iface, "virtualport");
    vr_net_remove_children(iface, "actual");
    vr_net_remove_children(iface, "link");
    xmlSetProp(iface, (const xmlChar *)"type", (const xmlChar *)"ethernet");
    link = xmlNewChild(iface, NULL, (const xmlChar *)"link", NULL);
    xmlSetProp(link, (const xmlChar *)"state", (const xmlChar *)"down");
}

char *
vr_failover_net_map_xml(const char *xml, const VrConfig *config, VrFailoverNetExistsFunc exists,
                        gpointer data, json_object **report_out, GError **error)
{
    g_autoptr(xmlDoc) doc =
        xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    g_autoptr(json_object) report = json_object_new_array();
    g_autofree char *relationship = NULL;
    g_autofree char *primary_name = NULL;
    xmlNode *root = doc != NULL ? xmlDocGetRootElement(doc) : NULL;
    xmlNode *marker, *devices;
    xmlChar *out = NULL;
    int len = 0;
    guint index = 0;
    char *result;

    if (root == NULL || !vr_net_is(root, "domain")) {
        g_set_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_FAILED,
                    "the domain XML to map the networks of does not parse");
        return NULL;
    }
    marker = vr_net_marker(root);
    relationship = vr_net_prop(marker, "relationship");
    primary_name = vr_net_prop(marker, "primary-name");
    devices = vr_net_child(root, "devices");
    for (xmlNode *iface = devices != NULL ? devices->children : NULL; iface != NULL;
         iface = iface->next) {
        g_autofree char *mac = NULL;
        g_autofree char *type = NULL;
        g_autofree char *kind = NULL;
        g_autofree char *source = NULL;
        g_autofree char *key = NULL;
        g_autofree char *target = NULL;
        g_autofree char *rule = NULL;
        const char *target_kind;
        const char *target_name;
        xmlNode *record;
        json_object *entry;
        bool connected;

        if (!vr_net_is(iface, "interface"))
            continue;
        mac = vr_net_prop(vr_net_child(iface, "mac"), "address");
        record = vr_net_record(marker, mac, index++);
        if (record != NULL) {
            kind = vr_net_prop(record, "type");
            source = vr_net_prop(record, "source");
        } else {
            /* A standby defined before the marker recorded sources: its own. */
            type = vr_net_prop(iface, "type");
            if (g_strcmp0(type, "network") == 0 || g_strcmp0(type, "bridge") == 0) {
                kind = g_strdup(type);
                source = vr_net_prop(vr_net_child(iface, "source"), type);
            }
        }
        if (source == NULL || (g_strcmp0(kind, "network") != 0 && g_strcmp0(kind, "bridge") != 0))
            continue; /* direct, user, ethernet, ...: bound to nothing we map */
        key = g_strcmp0(kind, "bridge") == 0 ? g_strconcat(VR_FAILOVER_NET_BRIDGE, source, NULL)
                                             : g_strdup(source);
        target = vr_net_resolve(config, mac, relationship, primary_name, key, &rule);
        target_kind = vr_net_split(target, &target_name);
        connected = exists == NULL || exists(target_kind, target_name, data);

        entry = json_object_new_object();
        json_object_object_add(entry, "mac", mac != NULL ? json_object_new_string(mac) : NULL);
        json_object_object_add(entry, "primary", vr_net_string_printf("%s:%s", kind, source));
        json_object_object_add(entry, "rule", json_object_new_string(rule));
        if (connected) {
            vr_net_connect(iface, target_kind, target_name);
            json_object_object_add(entry, "source",
                                   vr_net_string_printf("%s:%s", target_kind, target_name));
        } else {
            vr_net_disconnect(iface);
            json_object_object_add(entry, "source", NULL);
            json_object_object_add(
                entry, "warning",
                vr_net_string_printf(
                    "interface %s: %s '%s' (%s:%s by %s) %s on this host: the interface is "
                    "left unconnected (link down)",
                    mac != NULL ? mac : "?", target_kind, target_name, kind, source, rule,
                    g_str_equal(target_kind, "network") ? "is not an active network"
                                                        : "does not exist"));
        }
        json_object_object_add(entry, "connected", json_object_new_boolean(connected));
        json_object_array_add(report, entry);
    }
    xmlDocDumpMemory(doc, &out, &len);
    result = g_strndup((const char *)out, (gsize)len);
    xmlFree(out);
    *report_out = g_steal_pointer(&report);
    return result;
}

/* ---- step 2: the commands (pure) ------------------------------------------------------- */

static void
vr_net_add_command(GPtrArray *commands, ...)
{
    g_autoptr(GStrvBuilder) builder = g_strv_builder_new();
    const char *arg;
    va_list args;

    va_start(args, commands);
    while ((arg = va_arg(args, const char *)) != NULL)
        g_strv_builder_add(builder, arg);
    va_end(args);
    g_ptr_array_add(commands, g_strv_builder_end(builder));
}

GPtrArray *
vr_failover_net_guest_commands(const VrConfigInterface *iface, const char *ifname)
{
    GPtrArray *commands = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    struct {
        const char *flag, *address, *gateway;
    } families[] = {
        { "-4", iface->ipv4, iface->ipv4_gateway },
        { "-6", iface->ipv6, iface->ipv6_gateway },
    };

    vr_net_add_command(commands, "ip", "link", "set", "dev", ifname, "up", NULL);
    for (guint i = 0; i < G_N_ELEMENTS(families); i++) {
        if (families[i].address == NULL)
            continue;
        /* The primary site's addresses go (DHCP leases too); link-local ones stay. */
        vr_net_add_command(commands, "ip", families[i].flag, "address", "flush", "dev", ifname,
                           "scope", "global", NULL);
        vr_net_add_command(commands, "ip", families[i].flag, "address", "add", families[i].address,
                           "dev", ifname, NULL);
        if (families[i].gateway != NULL)
            vr_net_add_command(commands, "ip", families[i].flag, "route", "replace", "default",
                               "via", families[i].gateway, "dev", ifname, NULL);
    }
    if (iface->dns != NULL) {
        g_auto(GStrv) servers = g_strsplit_set(iface->dns, ", \t", -1);
        g_autoptr(GStrvBuilder) builder = g_strv_builder_new();

        g_strv_builder_add_many(builder, "resolvectl", "dns", ifname, NULL);
        for (guint i = 0; servers[i] != NULL; i++) {
            if (servers[i][0] != '\0')
                g_strv_builder_add(builder, servers[i]);
        }
        g_ptr_array_add(commands, g_strv_builder_end(builder));
    }
    return commands;
}

/* ---- the object ---------------------------------------------------------------------- */

struct _VrFailoverNet {
    const VrConfig *config;
    const VrConfig *request; /* the failover request's [interface:MAC], or NULL */
    virConnectPtr conn;
    VrState *state;
    GPtrArray *watchers; /* VrNetWatcher */
};

typedef struct _VrNetToken VrNetToken;

/*
 * A watcher runs its attempts one at a time in a worker thread (GTask): the agent's
 * commands block for up to 5 s each, and the daemon's main context (the receiver, the API)
 * must not wait for a guest. The outcome of each attempt is applied on the main context.
 */
typedef struct {
    VrFailoverNet *net;
    char uuid[VIR_UUID_STRING_BUFLEN];
    char *name;
    char *relationship;
    char *record;
    gint64 deadline;      /* monotonic, µs */
    GSource *source;      /* the next attempt's timer, on the caller's thread-default context */
    GPtrArray *ifaces;    /* VrConfigInterface, copies: a request's are gone after the start */
    GCancellable *cancel; /* of the running attempt: the watcher is freed */
    VrNetToken *token;
    json_object *resumed; /* {"count", "time"} when a daemon start resumed it, else NULL */
} VrNetWatcher;

/*
 * What an attempt's completion holds of its watcher: the watcher may be freed (a newer
 * failover of the relationship, vr_failover_net_free()) while its thread runs. Touched on
 * the main context only.
 */
struct _VrNetToken {
    gint ref;
    VrNetWatcher *watcher; /* NULL: freed */
};

static VrNetToken *
vr_net_token_ref(VrNetToken *token)
{
    token->ref++;
    return token;
}

static void
vr_net_token_unref(VrNetToken *token)
{
    if (--token->ref == 0)
        g_free(token);
}

static void
vr_net_iface_free(gpointer data)
{
    VrConfigInterface *iface = data;

    g_free(iface->mac);
    g_free(iface->network);
    g_free(iface->bridge);
    g_free(iface->ipv4);
    g_free(iface->ipv4_gateway);
    g_free(iface->ipv6);
    g_free(iface->ipv6_gateway);
    g_free(iface->dns);
    g_free(iface);
}

static VrConfigInterface *
vr_net_iface_copy(const VrConfigInterface *iface)
{
    VrConfigInterface *copy = g_new0(VrConfigInterface, 1);

    copy->mac = g_strdup(iface->mac);
    copy->network = g_strdup(iface->network);
    copy->bridge = g_strdup(iface->bridge);
    copy->ipv4 = g_strdup(iface->ipv4);
    copy->ipv4_gateway = g_strdup(iface->ipv4_gateway);
    copy->ipv6 = g_strdup(iface->ipv6);
    copy->ipv6_gateway = g_strdup(iface->ipv6_gateway);
    copy->dns = g_strdup(iface->dns);
    return copy;
}

static void
vr_net_watcher_free(gpointer data)
{
    VrNetWatcher *w = data;

    if (w->source != NULL) {
        g_source_destroy(w->source);
        g_source_unref(w->source);
    }
    /* A running attempt ends at its next agent command; its completion finds no watcher. */
    g_cancellable_cancel(w->cancel);
    g_object_unref(w->cancel);
    w->token->watcher = NULL;
    vr_net_token_unref(w->token);
    if (w->ifaces != NULL)
        g_ptr_array_unref(w->ifaces);
    if (w->resumed != NULL)
        json_object_put(w->resumed);
    g_free(w->name);
    g_free(w->relationship);
    g_free(w->record);
    g_free(w);
}

VrFailoverNet *
vr_failover_net_new(const VrConfig *config, virConnectPtr conn, VrState *state)
{
    VrFailoverNet *net = g_new0(VrFailoverNet, 1);

    net->config = config;
    net->conn = conn;
    net->state = state;
    net->watchers = g_ptr_array_new_with_free_func(vr_net_watcher_free);
    return net;
}

void
vr_failover_net_free(VrFailoverNet *net)
{
    if (net == NULL)
        return;
    g_ptr_array_unref(net->watchers);
    g_free(net);
}

/* An active libvirt network, or a host interface (a bridge) by that name. */
static bool
vr_net_exists(const char *kind, const char *name, gpointer data)
{
    VrFailoverNet *net = data;

    if (strcmp(kind, "network") == 0) {
        g_autoptr(virNetwork) network = virNetworkLookupByName(net->conn, name);

        return network != NULL && virNetworkIsActive(network) == 1;
    }
    {
        g_autofree char *path = g_build_filename("/sys/class/net", name, NULL);

        return g_file_test(path, G_FILE_TEST_EXISTS);
    }
}

static void
vr_net_warn(json_object *report, const char *message)
{
    json_object *warnings = NULL;

    if (!json_object_object_get_ex(report, "warnings", &warnings)) {
        warnings = json_object_new_array();
        json_object_object_add(report, "warnings", warnings);
    }
    json_object_array_add(warnings, json_object_new_string(message));
    g_message("%s", message);
}

char *
vr_failover_net_prepare(VrFailoverNet *net, const char *xml, json_object **report_out,
                        GError **error)
{
    g_autoptr(json_object) report = json_object_new_object();
    json_object *interfaces = NULL;
    char *mapped =
        vr_failover_net_map_xml(xml, net->config, vr_net_exists, net, &interfaces, error);

    if (mapped == NULL)
        return NULL;
    json_object_object_add(report, "interfaces", interfaces);
    json_object_object_add(report, "warnings", json_object_new_array());
    for (size_t i = 0; i < json_object_array_length(interfaces); i++) {
        json_object *warning = NULL;

        if (json_object_object_get_ex(json_object_array_get_idx(interfaces, i), "warning",
                                      &warning))
            vr_net_warn(report, json_object_get_string(warning));
    }
    *report_out = g_steal_pointer(&report);
    return mapped;
}

const char *
vr_failover_net_test_network(VrFailoverNet *net, const char *test_network, json_object **report)
{
    g_autofree char *message = NULL;

    if (*report == NULL) {
        *report = json_object_new_object();
        json_object_object_add(*report, "warnings", json_object_new_array());
    }
    json_object_object_add(*report, "test_network",
                           test_network != NULL ? json_object_new_string(test_network) : NULL);
    if (test_network == NULL || vr_net_exists("network", test_network, net))
        return test_network;
    message = g_strdup_printf("[replica] test-network '%s' is not an active network on this "
                              "host: the test copy's interfaces are left unconnected (link down)",
                              test_network);
    vr_net_warn(*report, message);
    return NULL;
}

/* ---- step 2: the guest agent ---------------------------------------------------------- */

typedef enum {
    VR_NET_IP_DONE, /* applied or failed: @state says */
    VR_NET_IP_WAIT, /* the agent does not answer (yet) */
} VrNetIpStep;

/*
 * An attempt of failover TCP/IP, in its worker thread: its end (monotonic, µs) and the
 * cancellation of its watcher.
 */
typedef struct {
    gint64 limit;
    GCancellable *cancel;
} VrNetBudget;

/*
 * The agent's "return" of @command (JSON text), or NULL with @why. Not sent once @budget
 * is spent. Blocks for up to VR_FAILOVER_NET_AGENT_S: worker threads only. (transfer full)
 */
static json_object *
vr_net_agent(virDomainPtr dom, const char *command, const VrNetBudget *budget, char **why)
{
    g_autofree char *reply = NULL;
    g_autoptr(json_object) obj = NULL;
    json_object *ret = NULL;

    if (g_cancellable_is_cancelled(budget->cancel)) {
        *why = g_strdup("stopped (the daemon stops, or a newer failover replaced this one)");
        return NULL;
    }
    if (g_get_monotonic_time() >= budget->limit) {
        *why = g_strdup_printf("the attempt took more than %d s", VR_FAILOVER_NET_ATTEMPT_S);
        return NULL;
    }
    reply = virDomainQemuAgentCommand(dom, command, VR_FAILOVER_NET_AGENT_S, 0);
    if (reply == NULL) {
        *why = g_strdup(virGetLastErrorMessage());
        return NULL;
    }
    obj = json_tokener_parse(reply);
    if (obj == NULL || !json_object_object_get_ex(obj, "return", &ret)) {
        *why = g_strdup_printf("the guest agent's answer to %s is not understood", command);
        return NULL;
    }
    return json_object_get(ret);
}

/* @argv run in the guest by guest-exec; its exit code (-1: it did not run) and stderr. */
static int
vr_net_exec(virDomainPtr dom, char **argv, const VrNetBudget *budget, char **err_out)
{
    g_autoptr(json_object) cmd = json_object_new_object();
    g_autoptr(json_object) ret = NULL;
    json_object *args = json_object_new_object();
    json_object *list = json_object_new_array();
    json_object *pid = NULL;
    g_autofree char *why = NULL;
    gint64 deadline = g_get_monotonic_time() + VR_FAILOVER_NET_EXEC_MS * 1000;

    for (guint i = 1; argv[i] != NULL; i++)
        json_object_array_add(list, json_object_new_string(argv[i]));
    json_object_object_add(args, "path", json_object_new_string(argv[0]));
    json_object_object_add(args, "arg", list);
    json_object_object_add(args, "capture-output", json_object_new_boolean(true));
    json_object_object_add(cmd, "execute", json_object_new_string("guest-exec"));
    json_object_object_add(cmd, "arguments", args);
    ret = vr_net_agent(dom, json_object_to_json_string_ext(cmd, JSON_C_TO_STRING_PLAIN), budget,
                       &why);
    if (ret == NULL || !json_object_object_get_ex(ret, "pid", &pid)) {
        *err_out = g_strdup_printf("guest-exec failed: %s", why != NULL ? why : "no pid");
        return -1;
    }
    while (g_get_monotonic_time() < deadline) {
        g_autofree char *status_cmd = g_strdup_printf(
            "{\"execute\":\"guest-exec-status\",\"arguments\":{\"pid\":%" G_GINT64_FORMAT "}}",
            json_object_get_int64(pid));
        g_autoptr(json_object) status = NULL;
        json_object *exited = NULL, *code = NULL, *err = NULL;

        g_clear_pointer(&why, g_free);
        status = vr_net_agent(dom, status_cmd, budget, &why);
        if (status == NULL) {
            *err_out = g_strdup_printf("guest-exec-status failed: %s", why);
            return -1;
        }
        if (json_object_object_get_ex(status, "exited", &exited) &&
            json_object_get_boolean(exited)) {
            gsize len = 0;
            g_autofree guchar *text = NULL;

            if (json_object_object_get_ex(status, "err-data", &err)) {
                text = g_base64_decode(json_object_get_string(err), &len);
                *err_out = g_utf8_make_valid((const char *)text, (gssize)len);
                g_strstrip(*err_out);
            }
            json_object_object_get_ex(status, "exitcode", &code);
            return code != NULL ? json_object_get_int(code) : -1;
        }
        g_usleep(100 * 1000);
    }
    *err_out = g_strdup_printf("still running after %d s", VR_FAILOVER_NET_EXEC_MS / 1000);
    return -1;
}

VrConfig *
vr_failover_net_parse_request(json_object *interfaces, GError **error)
{
    static const char *const keys[] = { "ipv4", "ipv4-gateway", "ipv6", "ipv6-gateway", "dns" };
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autofree char *data = NULL;

    if (!json_object_is_type(interfaces, json_type_object)) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "\"interfaces\" is an object of MAC addresses");
        return NULL;
    }
    json_object_object_foreach (interfaces, mac, settings) {
        g_autofree char *group = g_strconcat("interface:", mac, NULL);

        g_auto(GStrv) octets = g_strsplit(mac, ":", -1);
        bool ok = g_strv_length(octets) == 6;

        /* The MAC becomes a group name: nothing but what a MAC is made of. */
        for (guint i = 0; ok && octets[i] != NULL; i++)
            ok = strlen(octets[i]) == 2 && g_ascii_isxdigit(octets[i][0]) &&
                 g_ascii_isxdigit(octets[i][1]);
        if (!ok) {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                        "failover request: '%s' is not a MAC address (six hexadecimal octets "
                        "separated by ':')",
                        mac);
            return NULL;
        }
        if (!json_object_is_type(settings, json_type_object)) {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                        "failover request: interface %s: not an object of settings", mac);
            return NULL;
        }
        json_object_object_foreach (settings, key, value) {
            bool known = false;

            for (guint i = 0; i < G_N_ELEMENTS(keys); i++)
                known = known || strcmp(key, keys[i]) == 0;
            if (!known || !json_object_is_type(value, json_type_string)) {
                g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                            "failover request: interface %s: '%s' is not one of ipv4, "
                            "ipv4-gateway, ipv6, ipv6-gateway, dns with a string value",
                            mac, key);
                return NULL;
            }
            /* GKeyFile escapes the value: no line of it can become a key or a group. */
            g_key_file_set_string(kf, group, key, json_object_get_string(value));
        }
    }
    data = g_key_file_to_data(kf, NULL, NULL);
    return vr_config_load_data(data, -1, "failover request", error);
}

void
vr_failover_net_set_request(VrFailoverNet *net, const VrConfig *request)
{
    net->request = request;
}

/* The [interface:MAC] of @lower: the request's, else the configuration's, or NULL. */
static VrConfigInterface *
vr_net_interface(VrFailoverNet *net, const char *lower)
{
    VrConfigInterface *iface = NULL;

    if (net->request != NULL)
        iface = g_hash_table_lookup(net->request->interfaces, lower);
    if (iface == NULL && net->config != NULL)
        iface = g_hash_table_lookup(net->config->interfaces, lower);
    return iface;
}

/* The configured interfaces of @dom: VrConfigInterface with an address or DNS. */
static GPtrArray *
vr_net_ip_interfaces(VrFailoverNet *net, virDomainPtr dom)
{
    GPtrArray *out = g_ptr_array_new();
    g_autofree char *xml = NULL;
    g_autoptr(xmlDoc) doc = NULL;
    xmlNode *root, *devices;

    if ((net->config == NULL || g_hash_table_size(net->config->interfaces) == 0) &&
        (net->request == NULL || g_hash_table_size(net->request->interfaces) == 0))
        return out;
    xml = virDomainGetXMLDesc(dom, 0);
    doc = xml != NULL ? xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                                      XML_PARSE_NONET | XML_PARSE_NOERROR)
                      : NULL;
    root = doc != NULL ? xmlDocGetRootElement(doc) : NULL;
    devices = root != NULL ? vr_net_child(root, "devices") : NULL;
    for (xmlNode *c = devices != NULL ? devices->children : NULL; c != NULL; c = c->next) {
        g_autofree char *mac = NULL;
        g_autofree char *lower = NULL;
        VrConfigInterface *iface;

        if (!vr_net_is(c, "interface"))
            continue;
        mac = vr_net_prop(vr_net_child(c, "mac"), "address");
        lower = mac != NULL ? g_ascii_strdown(mac, -1) : NULL;
        iface = lower != NULL ? vr_net_interface(net, lower) : NULL;
        if (iface != NULL && (iface->ipv4 != NULL || iface->ipv6 != NULL || iface->dns != NULL))
            g_ptr_array_add(out, iface);
    }
    return out;
}

/* The guest's name of the interface with @mac, from guest-network-get-interfaces. */
static char *
vr_net_guest_ifname(json_object *list, const char *mac)
{
    for (size_t i = 0; list != NULL && i < json_object_array_length(list); i++) {
        json_object *item = json_object_array_get_idx(list, i);
        json_object *hw = NULL, *name = NULL;

        if (json_object_object_get_ex(item, "hardware-address", &hw) &&
            g_ascii_strcasecmp(json_object_get_string(hw), mac) == 0 &&
            json_object_object_get_ex(item, "name", &name))
            return g_strdup(json_object_get_string(name));
    }
    return NULL;
}

static void
vr_net_set(json_object *guest_ip, const char *state, const char *reason)
{
    json_object_object_add(guest_ip, "state", json_object_new_string(state));
    json_object_object_add(guest_ip, "reason",
                           reason != NULL ? json_object_new_string(reason) : NULL);
}

/*
 * One attempt at failover TCP/IP for @ifaces of @dom: WAIT while the agent does not
 * answer, else DONE with @guest_ip's state and reason set and its "interfaces". Blocks on
 * the agent (worker threads only) until @budget is spent at most.
 */
static VrNetIpStep
vr_net_ip_try(virDomainPtr dom, GPtrArray *ifaces, const VrNetBudget *budget, json_object *guest_ip)
{
    g_autofree char *channel = vr_guest_agent_channel_state(dom);
    g_autofree char *why = NULL;
    g_autoptr(json_object) ping = NULL;
    g_autoptr(json_object) osinfo = NULL;
    g_autoptr(json_object) list = NULL;
    json_object *kernel = NULL, *out;
    bool all_ok = true;

    if (channel == NULL || !g_str_equal(channel, "connected")) {
        g_autofree char *reason =
            g_strdup_printf("no guest agent answers (channel org.qemu.guest_agent.0: %s)",
                            channel != NULL ? channel : "absent");

        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_NOT_APPLIED, reason);
        return VR_NET_IP_WAIT;
    }
    ping = vr_net_agent(dom, "{\"execute\":\"guest-ping\"}", budget, &why);
    if (ping == NULL) {
        g_autofree char *reason = g_strdup_printf("the guest agent does not answer: %s", why);

        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_NOT_APPLIED, reason);
        return VR_NET_IP_WAIT;
    }
    g_clear_pointer(&why, g_free);
    osinfo = vr_net_agent(dom, "{\"execute\":\"guest-get-osinfo\"}", budget, &why);
    if (osinfo == NULL || !json_object_object_get_ex(osinfo, "kernel-name", &kernel) ||
        g_strcmp0(json_object_get_string(kernel), "Linux") != 0) {
        g_autofree char *reason = g_strdup_printf(
            "the guest is not Linux (%s): failover TCP/IP runs the guest's ip and resolvectl",
            kernel != NULL ? json_object_get_string(kernel) : why);

        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_NOT_APPLIED, reason);
        return VR_NET_IP_DONE;
    }
    g_clear_pointer(&why, g_free);
    list = vr_net_agent(dom, "{\"execute\":\"guest-network-get-interfaces\"}", budget, &why);
    out = json_object_new_array();
    json_object_object_add(guest_ip, "interfaces", out);
    for (guint i = 0; i < ifaces->len; i++) {
        const VrConfigInterface *iface = ifaces->pdata[i];
        g_autofree char *ifname = vr_net_guest_ifname(list, iface->mac);
        json_object *entry = json_object_new_object();
        json_object *commands = json_object_new_array();
        g_autoptr(GPtrArray) argvs = NULL;

        json_object_array_add(out, entry);
        json_object_object_add(entry, "mac", json_object_new_string(iface->mac));
        json_object_object_add(entry, "ifname",
                               ifname != NULL ? json_object_new_string(ifname) : NULL);
        json_object_object_add(entry, "commands", commands);
        if (ifname == NULL) {
            all_ok = false;
            json_object_object_add(entry, "error",
                                   json_object_new_string("the guest has no interface with this "
                                                          "MAC"));
            continue;
        }
        argvs = vr_failover_net_guest_commands(iface, ifname);
        for (guint c = 0; c < argvs->len; c++) {
            char **argv = argvs->pdata[c];
            g_autofree char *err = NULL;
            g_autofree char *line = g_strjoinv(" ", argv);
            int code = vr_net_exec(dom, argv, budget, &err);
            json_object *item = json_object_new_object();

            json_object_object_add(item, "command", json_object_new_string(line));
            json_object_object_add(item, "exit", json_object_new_int(code));
            if (err != NULL && err[0] != '\0')
                json_object_object_add(item, "stderr", json_object_new_string(err));
            json_object_array_add(commands, item);
            all_ok = all_ok && code == 0;
        }
    }
    if (all_ok)
        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_APPLIED, NULL);
    else
        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_FAILED,
                   "a command failed in the guest (see interfaces)");
    return VR_NET_IP_DONE;
}

/* @guest_ip into the "network" member of the @record of @relationship for domain @name. */
static void
vr_net_record_state(VrFailoverNet *net, const char *relationship, const char *record,
                    const char *name, json_object *network)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(json_object) config = NULL;
    json_object *rec = NULL, *domain = NULL;

    if (net->state == NULL)
        return;
    rel = vr_state_relationship_get(net->state, relationship, &local);
    config = rel != NULL ? json_tokener_parse(rel->config != NULL ? rel->config : "{}") : NULL;
    if (config == NULL || !json_object_object_get_ex(config, record, &rec) ||
        !json_object_object_get_ex(rec, "domain", &domain) ||
        g_strcmp0(json_object_get_string(domain), name) != 0) {
        g_debug("failover TCP/IP of '%s' not recorded: no %s of '%s'", relationship, record, name);
        return;
    }
    json_object_object_add(rec, "network", json_object_get(network));
    g_free(rel->config);
    rel->config = g_strdup(json_object_to_json_string_ext(config, JSON_C_TO_STRING_PLAIN));
    if (!vr_state_relationship_put(net->state, rel, &local))
        g_debug("failover TCP/IP of '%s' not recorded: %s", relationship, local->message);
}

/* ---- the intent: a pending push survives a daemon restart ------------------------------ */

static char *
vr_net_intent_kind(const char *record)
{
    return g_strconcat(VR_FAILOVER_NET_INTENT, record, NULL);
}

static void
vr_net_intent_delete(VrFailoverNet *net, const char *relationship, const char *record)
{
    g_autofree char *kind = vr_net_intent_kind(record);
    g_autoptr(GError) local = NULL;

    if (net->state != NULL && !vr_state_intent_delete(net->state, relationship, kind, &local))
        g_debug("failover TCP/IP of '%s': its intent stays: %s", relationship, local->message);
}

/*
 * The intent of @w's push, before its first attempt: what a daemon start needs to resume
 * it (docs/failover.md, "Failover TCP/IP"): the domain, the interfaces' settings (a
 * request's are gone after the start), the end of the wait (wall clock), the resumes so far.
 */
static void
vr_net_intent_put(VrFailoverNet *net, const VrNetWatcher *w, int64_t deadline, int64_t resumes)
{
    g_autoptr(json_object) data = json_object_new_object();
    g_autoptr(GError) local = NULL;
    g_autofree char *kind = vr_net_intent_kind(w->record);
    json_object *ifaces = json_object_new_array();

    if (net->state == NULL)
        return;
    json_object_object_add(data, "domain", json_object_new_string(w->name));
    json_object_object_add(data, "uuid", json_object_new_string(w->uuid));
    json_object_object_add(data, "deadline", json_object_new_int64(deadline));
    json_object_object_add(data, "resumes", json_object_new_int64(resumes));
    json_object_object_add(data, "interfaces", ifaces);
    for (guint i = 0; i < w->ifaces->len; i++) {
        const VrConfigInterface *iface = w->ifaces->pdata[i];
        const char *pairs[][2] = {
            { "mac", iface->mac },
            { "ipv4", iface->ipv4 },
            { "ipv4-gateway", iface->ipv4_gateway },
            { "ipv6", iface->ipv6 },
            { "ipv6-gateway", iface->ipv6_gateway },
            { "dns", iface->dns },
        };
        json_object *item = json_object_new_object();

        for (guint k = 0; k < G_N_ELEMENTS(pairs); k++) {
            if (pairs[k][1] != NULL)
                json_object_object_add(item, pairs[k][0], json_object_new_string(pairs[k][1]));
        }
        json_object_array_add(ifaces, item);
    }
    if (!vr_state_intent_put(net->state, w->relationship, kind,
                             json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN), &local))
        g_warning("failover TCP/IP of '%s': a restart of the daemon will not resume it: %s",
                  w->name, local->message);
}

/* One attempt of a watcher, in its worker thread: copies of what it needs, and the outcome. */
typedef struct {
    virConnectPtr conn; /* a reference: the watcher may go first */
    char uuid[VIR_UUID_STRING_BUFLEN];
    GPtrArray *ifaces;     /* the watcher's, a reference (never changed) */
    json_object *guest_ip; /* the outcome, made by the thread */
    bool done;             /* DONE, or the domain stopped */
} VrNetAttempt;

static void
vr_net_attempt_free(gpointer data)
{
    VrNetAttempt *a = data;

    virConnectClose(a->conn);
    g_ptr_array_unref(a->ifaces);
    if (a->guest_ip != NULL)
        json_object_put(a->guest_ip);
    g_free(a);
}

/* The worker thread: the domain (libvirt connections are thread-safe) and the agent. */
static void
vr_net_attempt_run(GTask *task, gpointer source, gpointer task_data, GCancellable *cancel)
{
    VrNetAttempt *a = task_data;
    VrNetBudget budget = {
        .limit = g_get_monotonic_time() + (gint64)VR_FAILOVER_NET_ATTEMPT_S * G_USEC_PER_SEC,
        .cancel = cancel,
    };
    g_autoptr(virDomain) dom = virDomainLookupByUUIDString(a->conn, a->uuid);

    (void)source;
    a->guest_ip = json_object_new_object();
    if (dom == NULL || virDomainIsActive(dom) != 1) {
        vr_net_set(a->guest_ip, VR_FAILOVER_NET_IP_NOT_APPLIED,
                   "the domain stopped before its guest agent answered");
        a->done = true;
    } else {
        a->done = vr_net_ip_try(dom, a->ifaces, &budget, a->guest_ip) == VR_NET_IP_DONE;
    }
    g_task_return_boolean(task, TRUE);
}

/* The final outcome @guest_ip of @w: logged, recorded, and the watcher freed. */
static void
vr_net_watch_finish(VrNetWatcher *w, json_object *guest_ip)
{
    VrFailoverNet *net = w->net;
    json_object *state = NULL, *reason = NULL;

    json_object_object_get_ex(guest_ip, "state", &state);
    json_object_object_get_ex(guest_ip, "reason", &reason);
    if (g_strcmp0(json_object_get_string(state), VR_FAILOVER_NET_IP_APPLIED) == 0)
        g_info("failover TCP/IP of '%s' applied in the guest", w->name);
    else
        g_message("failover TCP/IP of '%s' %s: %s", w->name, json_object_get_string(state),
                  json_object_get_string(reason));
    {
        /* The whole "network" member: the mapping of the start stays beside it. */
        g_autoptr(GError) local = NULL;
        g_autoptr(VrStateRelationship) rel =
            net->state != NULL ? vr_state_relationship_get(net->state, w->relationship, &local)
                               : NULL;
        g_autoptr(json_object) config =
            rel != NULL ? json_tokener_parse(rel->config != NULL ? rel->config : "{}") : NULL;
        json_object *rec = NULL, *recorded = NULL;

        if (w->resumed != NULL)
            json_object_object_add(guest_ip, "resumed", json_object_get(w->resumed));
        if (config != NULL && json_object_object_get_ex(config, w->record, &rec) &&
            json_object_object_get_ex(rec, "network", &recorded)) {
            json_object_object_add(recorded, "guest_ip", json_object_get(guest_ip));
            vr_net_record_state(net, w->relationship, w->record, w->name, recorded);
        }
    }
    /* Recorded: nothing is left for a daemon start to resume. */
    vr_net_intent_delete(net, w->relationship, w->record);
    g_ptr_array_remove(net->watchers, w);
}

static gboolean vr_net_watch(gpointer data);

/* An attempt ended: on the main context, its outcome, or the next attempt in 2 s. */
static void
vr_net_attempt_done(GObject *source, GAsyncResult *result, gpointer data)
{
    VrNetToken *token = data;
    VrNetWatcher *w = token->watcher;
    VrNetAttempt *a = g_task_get_task_data(G_TASK(result));

    /* Taken here: the thread may drop the task's last reference, json-c's are not atomic. */
    g_autoptr(json_object) guest_ip = g_steal_pointer(&a->guest_ip);

    (void)source;
    if (w != NULL) {
        if (a->done || g_get_monotonic_time() >= w->deadline) {
            vr_net_watch_finish(w, guest_ip);
        } else {
            w->source = g_timeout_source_new_seconds(VR_FAILOVER_NET_RETRY_S);
            g_source_set_callback(w->source, vr_net_watch, w, NULL);
            g_source_attach(w->source, g_main_context_get_thread_default());
        }
    }
    vr_net_token_unref(token);
}

/* The next attempt of @w, in a worker thread (one at a time: the next starts when it ends). */
static gboolean
vr_net_watch(gpointer data)
{
    VrNetWatcher *w = data;
    VrNetAttempt *a = g_new0(VrNetAttempt, 1);
    g_autoptr(GTask) task = NULL;

    if (w->source != NULL) {
        g_source_unref(w->source);
        w->source = NULL;
    }
    a->conn = w->net->conn;
    virConnectRef(a->conn);
    memcpy(a->uuid, w->uuid, sizeof(a->uuid));
    a->ifaces = g_ptr_array_ref(w->ifaces);
    task = g_task_new(NULL, w->cancel, vr_net_attempt_done, vr_net_token_ref(w->token));
    g_task_set_source_tag(task, vr_net_watch);
    g_task_set_task_data(task, a, vr_net_attempt_free);
    g_task_run_in_thread(task, vr_net_attempt_run);
    return G_SOURCE_REMOVE;
}

/* The watcher and the intent of an earlier push under @record of @relationship: gone. */
static void
vr_net_forget(VrFailoverNet *net, const char *relationship, const char *record)
{
    for (guint i = net->watchers->len; i-- > 0;) {
        VrNetWatcher *old = net->watchers->pdata[i];

        if (g_str_equal(old->relationship, relationship) && g_str_equal(old->record, record))
            g_ptr_array_remove_index(net->watchers, i);
    }
    vr_net_intent_delete(net, relationship, record);
}

/*
 * A watcher for the push into @dom of @ifaces (copied), recorded under @record of
 * @relationship, for @wait seconds (from now: a resumed one gets what is left); its intent
 * stored first. @connected: the first attempt at once, else in 2 s. @resumed (transfer
 * full, or NULL): the resume it comes from.
 */
static void
vr_net_watcher_start(VrFailoverNet *net, virDomainPtr dom, const char *relationship,
                     const char *record, GPtrArray *ifaces, gint64 wait, bool connected,
                     json_object *resumed)
{
    VrNetWatcher *w = g_new0(VrNetWatcher, 1);
    json_object *count = NULL;

    /* The caller forgot the earlier watcher and intent of @record (once per push). */
    w->net = net;
    virDomainGetUUIDString(dom, w->uuid);
    w->name = g_strdup(virDomainGetName(dom));
    w->relationship = g_strdup(relationship);
    w->record = g_strdup(record);
    w->deadline = g_get_monotonic_time() + wait * G_USEC_PER_SEC;
    w->ifaces = g_ptr_array_new_with_free_func(vr_net_iface_free);
    for (guint i = 0; i < ifaces->len; i++)
        g_ptr_array_add(w->ifaces, vr_net_iface_copy(ifaces->pdata[i]));
    w->cancel = g_cancellable_new();
    w->token = g_new0(VrNetToken, 1);
    w->token->ref = 1;
    w->token->watcher = w;
    w->resumed = resumed;
    g_ptr_array_add(net->watchers, w);
    json_object_object_get_ex(resumed, "count", &count);
    vr_net_intent_put(net, w, g_get_real_time() / G_USEC_PER_SEC + wait,
                      count != NULL ? json_object_get_int64(count) : 0);
    if (connected) {
        vr_net_watch(w);
    } else {
        w->source = g_timeout_source_new_seconds(VR_FAILOVER_NET_RETRY_S);
        g_source_set_callback(w->source, vr_net_watch, w, NULL);
        g_source_attach(w->source, g_main_context_get_thread_default());
    }
}

void
vr_failover_net_guest_ip(VrFailoverNet *net, virDomainPtr dom, const char *relationship,
                         const char *record, json_object *report)
{
    g_autoptr(GPtrArray) ifaces = vr_net_ip_interfaces(net, dom);
    g_autofree char *channel = NULL;
    json_object *guest_ip = json_object_new_object();
    guint wait = net->config != NULL ? net->config->replica.guest_agent_wait : 0;

    /* A push of an earlier failover of this relationship has nothing to do any more. */
    vr_net_forget(net, relationship, record);
    json_object_object_add(report, "guest_ip", guest_ip);
    if (ifaces->len == 0) {
        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_NONE,
                   "no [interface:MAC] group of this domain has an address or DNS servers");
    } else if ((channel = vr_guest_agent_channel_state(dom)) == NULL) {
        g_autofree char *reason =
            g_strdup_printf("no guest agent: domain '%s' has no channel org.qemu.guest_agent.0",
                            virDomainGetName(dom));

        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_NOT_APPLIED, reason);
        g_message("failover TCP/IP of '%s' not applied: %s", virDomainGetName(dom), reason);
    } else if (!g_str_equal(channel, "connected") && wait == 0) {
        g_autofree char *reason =
            g_strdup_printf("no guest agent answers (channel org.qemu.guest_agent.0: %s)", channel);

        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_NOT_APPLIED, reason);
        g_message("failover TCP/IP of '%s' not applied: %s", virDomainGetName(dom), reason);
    } else {
        /*
         * The agent is asked in a worker thread, never here: a guest must not hold the
         * failover's answer (nor the main context) for its commands. A connected channel
         * is tried at once; the outcome goes into the state database.
         */
        bool connected = g_str_equal(channel, "connected");
        g_autofree char *reason = connected ? g_strdup("the guest agent is being asked (channel "
                                                       "org.qemu.guest_agent.0: connected)")
                                            : g_strdup_printf("no guest agent answers (channel "
                                                              "org.qemu.guest_agent.0: %s)",
                                                              channel);
        g_autofree char *why =
            wait > 0 ? g_strdup_printf("%s; retried every %d s for %u s", reason,
                                       VR_FAILOVER_NET_RETRY_S, wait)
                     : g_strdup_printf("%s; the outcome is recorded in the state database", reason);

        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_PENDING, why);
        vr_net_watcher_start(net, dom, relationship, record, ifaces, wait, connected, NULL);
    }
    vr_net_record_state(net, relationship, record, virDomainGetName(dom), report);
}

/* ---- resuming after a restart ------------------------------------------------------------ */

/* The interfaces of an intent's data, as the configuration would give them. */
static GPtrArray *
vr_net_intent_ifaces(json_object *data)
{
    GPtrArray *out = g_ptr_array_new_with_free_func(vr_net_iface_free);
    json_object *list = NULL;

    json_object_object_get_ex(data, "interfaces", &list);
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *item = json_object_array_get_idx(list, i);
        VrConfigInterface *iface = g_new0(VrConfigInterface, 1);

        iface->mac = g_strdup(vr_json_get_string(item, "mac"));
        iface->ipv4 = g_strdup(vr_json_get_string(item, "ipv4"));
        iface->ipv4_gateway = g_strdup(vr_json_get_string(item, "ipv4-gateway"));
        iface->ipv6 = g_strdup(vr_json_get_string(item, "ipv6"));
        iface->ipv6_gateway = g_strdup(vr_json_get_string(item, "ipv6-gateway"));
        iface->dns = g_strdup(vr_json_get_string(item, "dns"));
        if (iface->mac == NULL)
            vr_net_iface_free(iface);
        else
            g_ptr_array_add(out, iface);
    }
    return out;
}

/*
 * The guest_ip of @record of @relationship for domain @name replaced by @guest_ip (the
 * mapping of the start stays beside it). False: no such record (failed back, cancelled).
 */
static bool
vr_net_record_guest_ip(VrFailoverNet *net, const char *relationship, const char *record,
                       const char *name, json_object *guest_ip)
{
    g_autoptr(VrStateRelationship) rel = vr_state_relationship_get(net->state, relationship, NULL);
    g_autoptr(json_object) config =
        rel != NULL ? json_tokener_parse(rel->config != NULL ? rel->config : "{}") : NULL;
    json_object *rec = NULL, *network = NULL;

    if (config == NULL || !json_object_object_get_ex(config, record, &rec) ||
        g_strcmp0(vr_json_get_string(rec, "domain"), name) != 0)
        return false;
    if (!json_object_object_get_ex(rec, "network", &network)) {
        network = json_object_new_object();
        json_object_object_add(rec, "network", network);
    }
    json_object_object_add(network, "guest_ip", json_object_get(guest_ip));
    vr_net_record_state(net, relationship, record, name, network);
    return true;
}

/* One intent left by the daemon before this start: resumed, or abandoned with a reason. */
static void
vr_net_resume_one(VrFailoverNet *net, const VrStateIntent *intent)
{
    const char *record = intent->kind + strlen(VR_FAILOVER_NET_INTENT);
    g_autoptr(json_object) data = json_tokener_parse(intent->data);
    g_autoptr(json_object) guest_ip = json_object_new_object();
    g_autoptr(json_object) resumed = json_object_new_object();
    g_autoptr(virDomain) dom = NULL;
    g_autoptr(GPtrArray) ifaces = NULL;
    g_autofree char *reason = NULL;
    g_autofree char *channel = NULL;
    const char *name = vr_json_get_string(data, "domain");
    const char *uuid = vr_json_get_string(data, "uuid");
    json_object *value = NULL;
    int64_t resumes = 0, deadline = 0, now = g_get_real_time() / G_USEC_PER_SEC;

    if (json_object_object_get_ex(data, "resumes", &value))
        resumes = json_object_get_int64(value);
    if (json_object_object_get_ex(data, "deadline", &value))
        deadline = json_object_get_int64(value);
    if (name == NULL || uuid == NULL) {
        g_warning("failover TCP/IP of relationship '%s': its intent does not parse; dropped",
                  intent->relationship);
        vr_net_intent_delete(net, intent->relationship, record);
        return;
    }
    dom = virDomainLookupByUUIDString(net->conn, uuid);
    json_object_object_add(resumed, "count", json_object_new_int64(resumes + 1));
    json_object_object_add(resumed, "time", json_object_new_int64(now));
    if (dom == NULL || virDomainIsActive(dom) != 1)
        reason = g_strdup_printf("the daemon restarted while it was pending, and domain '%s' no "
                                 "longer runs",
                                 name);
    else if (resumes >= VR_FAILOVER_NET_RESUME_MAX)
        reason = g_strdup_printf("the daemon restarted %" G_GINT64_FORMAT " times while it was "
                                 "pending: given up",
                                 resumes + 1);
    if (reason != NULL) {
        vr_net_set(guest_ip, VR_FAILOVER_NET_IP_ABANDONED, reason);
        json_object_object_add(guest_ip, "resumed", json_object_get(resumed));
        if (!vr_net_record_guest_ip(net, intent->relationship, record, name, guest_ip))
            g_message("failover TCP/IP of '%s' abandoned: %s; its %s is over (failed back or "
                      "cancelled)",
                      name, reason, record);
        else
            g_message("failover TCP/IP of '%s' abandoned: %s", name, reason);
        vr_net_intent_delete(net, intent->relationship, record);
        return;
    }
    /*
     * Running: it is the failed-over domain while the record still names it, or the
     * relationship does (a planned failover with reverse replication made the row the
     * primary role's: no record, the outcome is logged only, as before the restart).
     */
    vr_net_set(guest_ip, VR_FAILOVER_NET_IP_PENDING,
               "resumed after a restart of the daemon: the guest agent is asked again until "
               "the wait that began at the failover ends");
    json_object_object_add(guest_ip, "resumed", json_object_get(resumed));
    if (!vr_net_record_guest_ip(net, intent->relationship, record, name, guest_ip)) {
        g_autoptr(VrStateRelationship) rel =
            vr_state_relationship_get(net->state, intent->relationship, NULL);

        if (rel == NULL || g_strcmp0(rel->domain_name, name) != 0) {
            g_message("failover TCP/IP of '%s' abandoned: the daemon restarted while it was "
                      "pending, and its %s is over (failed back or cancelled)",
                      name, record);
            vr_net_intent_delete(net, intent->relationship, record);
            return;
        }
    }
    ifaces = vr_net_intent_ifaces(data);
    channel = vr_guest_agent_channel_state(dom);
    g_message(
        "failover TCP/IP of '%s' resumed after a restart of the daemon (resume %" G_GINT64_FORMAT
        ", %" G_GINT64_FORMAT " s of its wait left)",
        name, resumes + 1, MAX(deadline - now, 0));
    /* The intent is written again by the watcher, as for a push of a failover. */
    vr_net_forget(net, intent->relationship, record);
    vr_net_watcher_start(net, dom, intent->relationship, record, ifaces, MAX(deadline - now, 0),
                         g_strcmp0(channel, "connected") == 0, g_steal_pointer(&resumed));
}

void
vr_failover_net_resume(VrFailoverNet *net)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GPtrArray) list = NULL;

    if (net->state == NULL || net->conn == NULL)
        return;
    list = vr_state_intent_list(net->state, VR_FAILOVER_NET_INTENT, &local);
    if (list == NULL) {
        g_warning("failover TCP/IP pushes pending at the last stop are not resumed: %s",
                  local->message);
        return;
    }
    for (guint i = 0; i < list->len; i++)
        vr_net_resume_one(net, list->pdata[i]);
}

json_object *
vr_failover_net_status(const char *config_json)
{
    static const char *const records[] = { "failover", "test_failover" };
    g_autoptr(json_object) config = json_tokener_parse(config_json != NULL ? config_json : "{}");
    g_autoptr(json_object) out = json_object_new_object();
    bool any = false;

    for (guint i = 0; config != NULL && i < G_N_ELEMENTS(records); i++) {
        json_object *rec = NULL, *network = NULL;

        if (json_object_object_get_ex(config, records[i], &rec) &&
            json_object_object_get_ex(rec, "network", &network)) {
            json_object_object_add(out, records[i], json_object_get(network));
            any = true;
        }
    }
    return any ? g_steal_pointer(&out) : NULL;
}
