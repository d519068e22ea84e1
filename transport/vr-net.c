/*
 * vr-net.c: this host's address on the replication network
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>

#include "vr-net.h"

/* libvirt keeps a network's definition in a file named after it: NAME_MAX bounds the name. */
#define VR_NET_NETWORK_NAME_MAX 255
/* IFNAMSIZ less the terminating NUL. */
#define VR_NET_IFNAME_MAX (IFNAMSIZ - 1)

typedef struct ifaddrs VrNetIfaddrs;

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrNetIfaddrs, freeifaddrs)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virNetwork, virNetworkFree)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathContext, xmlXPathFreeContext)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathObject, xmlXPathFreeObject)

GQuark
vr_net_error_quark(void)
{
    return g_quark_from_static_string("vr-net-error-quark");
}

static const struct {
    const char *prefix;
    VrNetKind kind;
} vr_net_forms[] = {
    { "network:", VR_NET_KIND_NETWORK },
    { "interface:", VR_NET_KIND_INTERFACE },
    { "address:", VR_NET_KIND_ADDRESS },
};

/* @text for a message: escaped, so a control character cannot garble a log. (transfer full) */
static char *
vr_net_shown(const char *text)
{
    return g_strescape(text != NULL ? text : "", NULL);
}

static bool
vr_net_is_link_local6(GInetAddress *address)
{
    /* GLib also calls 169.254.0.0/16 link-local, but an IPv4 address binds without scope. */
    return g_inet_address_get_family(address) == G_SOCKET_FAMILY_IPV6 &&
           g_inet_address_get_is_link_local(address);
}

static bool
vr_net_check_network_name(const char *spec, const char *name, GError **error)
{
    gsize len = strlen(name);
    const char *why = NULL;

    if (len == 0)
        why = "is empty";
    else if (len > VR_NET_NETWORK_NAME_MAX)
        why = "is longer than 255 bytes";
    else if (strchr(name, '/') != NULL)
        why = "holds a '/'";
    for (const char *c = name; why == NULL && *c != '\0'; c++) {
        if (g_ascii_iscntrl(*c))
            why = "holds a control character";
    }
    if (why != NULL) {
        g_autofree char *shown = vr_net_shown(spec);

        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_INVALID,
                    "replication network '%.80s': the libvirt network name %s", shown, why);
        return false;
    }
    return true;
}

/*
 * The kernel's rules (dev_valid_name()), but ':' is allowed: getifaddrs(3) reports IPv4
 * addresses labelled "eth0:1" under that name.
 */
static bool
vr_net_check_interface_name(const char *spec, const char *name, GError **error)
{
    gsize len = strlen(name);
    const char *why = NULL;

    if (len == 0)
        why = "is empty";
    else if (len > VR_NET_IFNAME_MAX)
        why = "is longer than 15 bytes";
    else if (g_str_equal(name, ".") || g_str_equal(name, ".."))
        why = "is '.' or '..'";
    else if (strchr(name, '/') != NULL)
        why = "holds a '/'";
    for (const char *c = name; why == NULL && *c != '\0'; c++) {
        if (g_ascii_isspace(*c) || g_ascii_iscntrl(*c))
            why = "holds white space or a control character";
    }
    if (why != NULL) {
        g_autofree char *shown = vr_net_shown(spec);

        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_INVALID,
                    "replication network '%.80s': the interface name %s", shown, why);
        return false;
    }
    return true;
}

/*
 * @text (the part of @spec after "address:", or all of it): an address one can bind to.
 * (transfer full)
 */
static GInetAddress *
vr_net_parse_address(const char *spec, const char *text, GError **error)
{
    g_autoptr(GInetAddress) address = g_inet_address_new_from_string(text);
    g_autofree char *shown = vr_net_shown(spec);
    const char *why = NULL;

    if (address == NULL && text != spec) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_INVALID,
                    "replication network '%.80s': not an IPv4 or IPv6 address", shown);
        return NULL;
    }
    if (address == NULL) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_INVALID,
                    "replication network '%.80s' is not network:NAME, interface:NAME, "
                    "address:IP or an IP address",
                    shown);
        return NULL;
    }
    if (g_inet_address_get_is_any(address))
        why = "is the unspecified address: name the one address of this host to use";
    else if (g_inet_address_get_is_multicast(address))
        why = "is a multicast address";
    else if (vr_net_is_link_local6(address))
        why = "is a link-local IPv6 address, which cannot be bound without a scope id";
    if (why != NULL) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_INVALID, "replication network '%.80s' %s",
                    shown, why);
        return NULL;
    }
    return g_steal_pointer(&address);
}

bool
vr_net_parse_spec(const char *spec, VrNetKind *kind, char **name, GError **error)
{
    g_autoptr(GInetAddress) address = NULL;
    const char *rest = NULL;
    VrNetKind found = VR_NET_KIND_ADDRESS;

    if (spec == NULL || spec[0] == '\0') {
        g_set_error_literal(error, VR_NET_ERROR, VR_NET_ERROR_INVALID,
                            "the replication network is empty: give network:NAME, "
                            "interface:NAME or address:IP");
        return false;
    }
    for (gsize i = 0; i < G_N_ELEMENTS(vr_net_forms); i++) {
        if (g_str_has_prefix(spec, vr_net_forms[i].prefix)) {
            found = vr_net_forms[i].kind;
            rest = spec + strlen(vr_net_forms[i].prefix);
            break;
        }
    }
    if (rest == NULL)
        rest = spec; /* a bare IP literal, or nothing we know */

    switch (found) {
    case VR_NET_KIND_NETWORK:
        if (!vr_net_check_network_name(spec, rest, error))
            return false;
        *name = g_strdup(rest);
        break;
    case VR_NET_KIND_INTERFACE:
        if (!vr_net_check_interface_name(spec, rest, error))
            return false;
        *name = g_strdup(rest);
        break;
    case VR_NET_KIND_ADDRESS:
        address = vr_net_parse_address(spec, rest, error);
        if (address == NULL)
            return false;
        *name = g_inet_address_to_string(address);
        break;
    }
    *kind = found;
    return true;
}

/* The string value of the XPath expression @expr, or NULL when empty. (transfer full) */
static char *
vr_net_xpath_string(xmlXPathContext *ctx, const char *expr)
{
    g_autoptr(xmlXPathObject) obj = xmlXPathEvalExpression((const xmlChar *)expr, ctx);

    if (obj == NULL || obj->type != XPATH_STRING || obj->stringval == NULL ||
        obj->stringval[0] == '\0')
        return NULL;
    return g_strdup((const char *)obj->stringval);
}

/* vr_net_network_bridge(), also telling whether the network is active. */
static char *
vr_net_network_lookup(virConnectPtr conn, const char *network, bool *active, GError **error)
{
    g_autofree char *spec = g_strdup_printf("network:%s", network);
    g_autoptr(virNetwork) net = NULL;
    g_autofree char *xml = NULL;
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(xmlXPathContext) ctx = NULL;
    g_autofree char *bridge = NULL;
    g_autofree char *mode = NULL;

    if (!vr_net_check_network_name(spec, network, error))
        return NULL;
    if (conn == NULL) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_LIBVIRT,
                    "no libvirt connection to look up libvirt network '%s'", network);
        return NULL;
    }
    net = virNetworkLookupByName(conn, network);
    if (net == NULL) {
        if (virGetLastErrorCode() == VIR_ERR_NO_NETWORK) {
            g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NOT_FOUND,
                        "libvirt network '%s' does not exist", network);
        } else {
            g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_LIBVIRT,
                        "cannot look up libvirt network '%s': %s", network,
                        virGetLastErrorMessage());
        }
        return NULL;
    }
    /* Without flags: the live XML of an active network, the definition of an inactive one. */
    xml = virNetworkGetXMLDesc(net, 0);
    if (xml == NULL) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_LIBVIRT,
                    "cannot read the XML of libvirt network '%s': %s", network,
                    virGetLastErrorMessage());
        return NULL;
    }
    doc = xmlReadMemory(xml, (int)strlen(xml), "network.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (doc == NULL) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_LIBVIRT,
                    "the XML of libvirt network '%s' does not parse", network);
        return NULL;
    }
    ctx = xmlXPathNewContext(doc);
    if (ctx == NULL) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_LIBVIRT,
                    "cannot read the XML of libvirt network '%s': out of memory", network);
        return NULL;
    }
    bridge = vr_net_xpath_string(ctx, "string(/network/bridge/@name)");
    if (bridge == NULL) {
        mode = vr_net_xpath_string(ctx, "string(/network/forward/@mode)");
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NO_ADDRESS,
                    "libvirt network '%s' names no bridge (forward mode '%s' without "
                    "<bridge name=...>: its guests use host devices directly), so this host "
                    "has no address on it",
                    network, mode != NULL ? mode : "none");
        return NULL;
    }
    *active = virNetworkIsActive(net) == 1;
    return g_steal_pointer(&bridge);
}

char *
vr_net_network_bridge(virConnectPtr conn, const char *network, GError **error)
{
    bool active;

    return vr_net_network_lookup(conn, network, &active, error);
}

/* The address of an AF_INET or AF_INET6 @sa, else NULL. (transfer full) */
static GInetAddress *
vr_net_sockaddr_address(const struct sockaddr *sa)
{
    if (sa == NULL)
        return NULL;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        return g_inet_address_new_from_bytes((const guint8 *)&in->sin_addr, G_SOCKET_FAMILY_IPV4);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        return g_inet_address_new_from_bytes((const guint8 *)&in6->sin6_addr, G_SOCKET_FAMILY_IPV6);
    }
    return NULL;
}

GInetAddress *
vr_net_select_address(const struct ifaddrs *list, const char *ifname, const char *network,
                      GSocketFamily family, GError **error)
{
    g_autoptr(GInetAddress) v4 = NULL;
    g_autoptr(GInetAddress) v6 = NULL;
    g_autofree char *what = NULL;
    bool exists = false;
    bool up = false;
    bool any = false;
    bool link_local = false;
    const char *missing;

    g_return_val_if_fail(family == G_SOCKET_FAMILY_INVALID || family == G_SOCKET_FAMILY_IPV4 ||
                             family == G_SOCKET_FAMILY_IPV6,
                         NULL);

    for (const struct ifaddrs *ifa = list; ifa != NULL; ifa = ifa->ifa_next) {
        g_autoptr(GInetAddress) address = NULL;

        if (ifa->ifa_name == NULL || !g_str_equal(ifa->ifa_name, ifname))
            continue;
        /* Each entry carries the interface's flags, the AF_PACKET one without an address too. */
        exists = true;
        up = up || (ifa->ifa_flags & IFF_UP) != 0;
        address = vr_net_sockaddr_address(ifa->ifa_addr);
        if (address == NULL)
            continue;
        any = true;
        if (vr_net_is_link_local6(address))
            link_local = true;
        else if (g_inet_address_get_family(address) == G_SOCKET_FAMILY_IPV4 && v4 == NULL)
            v4 = g_steal_pointer(&address);
        else if (g_inet_address_get_family(address) == G_SOCKET_FAMILY_IPV6 && v6 == NULL)
            v6 = g_steal_pointer(&address);
    }

    what = network != NULL
               ? g_strdup_printf("interface '%s' of libvirt network '%s'", ifname, network)
               : g_strdup_printf("interface '%s'", ifname);
    if (!exists) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NOT_FOUND,
                    "%s does not exist in this network namespace", what);
        return NULL;
    }
    if (!up) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NO_ADDRESS, "%s is down", what);
        return NULL;
    }
    if (family != G_SOCKET_FAMILY_IPV6 && v4 != NULL)
        return g_steal_pointer(&v4);
    if (family != G_SOCKET_FAMILY_IPV4 && v6 != NULL)
        return g_steal_pointer(&v6);

    if (!any) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NO_ADDRESS, "%s has no address", what);
        return NULL;
    }
    missing = family == G_SOCKET_FAMILY_IPV4   ? "IPv4 address"
              : family == G_SOCKET_FAMILY_IPV6 ? "global IPv6 address"
                                               : "IPv4 or global IPv6 address";
    g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NO_ADDRESS, "%s has no %s%s", what, missing,
                link_local ? ", only link-local IPv6 (fe80::/10), which cannot be bound without "
                             "a scope id"
                           : "");
    return NULL;
}

bool
vr_net_check_address(const struct ifaddrs *list, GInetAddress *address, GError **error)
{
    g_autofree char *text = g_inet_address_to_string(address);
    const char *down = NULL;

    for (const struct ifaddrs *ifa = list; ifa != NULL; ifa = ifa->ifa_next) {
        g_autoptr(GInetAddress) assigned = vr_net_sockaddr_address(ifa->ifa_addr);

        if (assigned == NULL || !g_inet_address_equal(assigned, address))
            continue;
        if ((ifa->ifa_flags & IFF_UP) != 0)
            return true;
        down = ifa->ifa_name;
    }
    if (down != NULL) {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NO_ADDRESS,
                    "address '%s' is assigned to interface '%s', which is down", text, down);
    } else {
        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NO_ADDRESS,
                    "address '%s' is not assigned to any interface of this host", text);
    }
    return false;
}

static bool
vr_net_getifaddrs(VrNetIfaddrs **list, GError **error)
{
    if (getifaddrs(list) < 0) {
        int errsv = errno;

        g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_SYSTEM,
                    "cannot list the interfaces of this host: %s", g_strerror(errsv));
        return false;
    }
    return true;
}

GInetAddress *
vr_net_resolve(const char *spec, virConnectPtr conn, GSocketFamily family, GError **error)
{
    g_autoptr(VrNetIfaddrs) list = NULL;
    g_autoptr(GInetAddress) address = NULL;
    g_autoptr(GError) local = NULL;
    g_autofree char *name = NULL;
    g_autofree char *bridge = NULL;
    VrNetKind kind;
    bool active = true;

    g_return_val_if_fail(family == G_SOCKET_FAMILY_INVALID || family == G_SOCKET_FAMILY_IPV4 ||
                             family == G_SOCKET_FAMILY_IPV6,
                         NULL);

    if (!vr_net_parse_spec(spec, &kind, &name, error))
        return NULL;
    if (kind == VR_NET_KIND_NETWORK) {
        bridge = vr_net_network_lookup(conn, name, &active, error);
        if (bridge == NULL)
            return NULL;
    }
    if (kind == VR_NET_KIND_ADDRESS) {
        address = g_inet_address_new_from_string(name);
        if (family != G_SOCKET_FAMILY_INVALID && g_inet_address_get_family(address) != family) {
            g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_INVALID,
                        "replication network address '%s' is not %s", name,
                        family == G_SOCKET_FAMILY_IPV4 ? "IPv4" : "IPv6");
            return NULL;
        }
    }

    if (!vr_net_getifaddrs(&list, error))
        return NULL;

    switch (kind) {
    case VR_NET_KIND_ADDRESS:
        if (!vr_net_check_address(list, address, error))
            return NULL;
        return g_steal_pointer(&address);
    case VR_NET_KIND_INTERFACE:
        return vr_net_select_address(list, name, NULL, family, error);
    case VR_NET_KIND_NETWORK:
        address = vr_net_select_address(list, bridge, name, family, &local);
        if (address != NULL)
            return g_steal_pointer(&address);
        /* libvirt makes the bridge of the networks it manages when it starts them. */
        if (!active && g_error_matches(local, VR_NET_ERROR, VR_NET_ERROR_NOT_FOUND)) {
            g_set_error(error, VR_NET_ERROR, VR_NET_ERROR_NOT_FOUND,
                        "%s (the network is not active)", local->message);
            return NULL;
        }
        g_propagate_error(error, g_steal_pointer(&local));
        return NULL;
    }
    g_assert_not_reached();
}
