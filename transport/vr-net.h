/*
 * vr-net.h: this host's address on the replication network
 *
 * Replication traffic flows over a network of its own (DESIGN.md, "Dedicated replication
 * network"): the primary binds its source address there, the replica listens only there. The
 * configuration names that network in one of three forms:
 *
 *   network:NAME     a libvirt network, active or not: the address of the bridge its XML
 *                    names (/network/bridge/@name)
 *   interface:NAME   an interface of this host
 *   address:IP       an IPv4 or IPv6 literal, also written bare without "address:"
 *
 * Interfaces and addresses are looked up with getifaddrs(3), so in the network namespace of
 * the calling thread. The interface must exist and be up. Of several addresses, the family
 * asked for wins; without one, the first IPv4 address, else the first global IPv6 address.
 * A link-local IPv6 address (fe80::/10) is never chosen nor accepted: binding it needs a
 * scope id. Every error names the network, the interface and what is missing
 * (docs/network.md).
 *
 * Nothing here keeps state: every function may be called from any thread.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <ifaddrs.h>

#include <gio/gio.h>
#include <glib.h>
#include <libvirt/libvirt.h>

G_BEGIN_DECLS

#define VR_NET_ERROR (vr_net_error_quark())
GQuark vr_net_error_quark(void);

typedef enum {
    VR_NET_ERROR_INVALID,    /* a bad spec: unknown form, bad name, not an IP, link-local */
    VR_NET_ERROR_NOT_FOUND,  /* no such libvirt network or interface */
    VR_NET_ERROR_NO_ADDRESS, /* interface down, no usable address, address not assigned */
    VR_NET_ERROR_LIBVIRT,    /* no connection, or libvirt failed: its message is included */
    VR_NET_ERROR_SYSTEM,     /* getifaddrs(3) failed */
} VrNetErrorCode;

typedef enum {
    VR_NET_KIND_NETWORK,   /* network:NAME */
    VR_NET_KIND_INTERFACE, /* interface:NAME */
    VR_NET_KIND_ADDRESS,   /* address:IP or a bare IP literal */
} VrNetKind;

/*
 * Parse @spec without looking anything up, for checking the configuration: its @kind and
 * its @name (transfer full): the network or interface name, or the address in canonical
 * form ("fd00::1" for "address:fd00:0::1"). Refuses a network name that is empty, longer
 * than 255 bytes or holds '/' or a control character; an interface name that is empty,
 * longer than 15 bytes, "." or "..", or holds '/' or white space; an address that is the
 * unspecified address, multicast or link-local IPv6.
 */
bool vr_net_parse_spec(const char *spec, VrNetKind *kind, char **name, GError **error);

/*
 * The interface the libvirt network @network bridges to, from its XML (the live XML when
 * the network is active, else its definition). @conn must be a connection to this host's
 * libvirtd. VR_NET_ERROR_NOT_FOUND when there is no such network; VR_NET_ERROR_NO_ADDRESS
 * when it has no bridge (forward modes hostdev, passthrough, private, vepa, or bridge with
 * a list of interfaces: guests then use the host's devices directly). (transfer full)
 */
char *vr_net_network_bridge(virConnectPtr conn, const char *network, GError **error);

/*
 * The address of the interface @ifname in @list (as getifaddrs(3) returns it; pure, so it
 * can be tested with a hand-built list). @family is G_SOCKET_FAMILY_IPV4, _IPV6 or _INVALID
 * for any (IPv4 first). @network, when not NULL, is the libvirt network the interface
 * belongs to, for the messages. (transfer full)
 */
GInetAddress *vr_net_select_address(const struct ifaddrs *list, const char *ifname,
                                    const char *network, GSocketFamily family, GError **error);

/*
 * Whether @address is assigned to an interface in @list that is up (pure, like
 * vr_net_select_address()).
 */
bool vr_net_check_address(const struct ifaddrs *list, GInetAddress *address, GError **error);

/*
 * Parse and resolve @spec: this host's address on the replication network, in the network
 * namespace of the calling thread. @conn is needed for the network: form only and may be
 * NULL otherwise; @family as for vr_net_select_address(). An address: spec of another
 * family than @family is refused. (transfer full)
 */
GInetAddress *vr_net_resolve(const char *spec, virConnectPtr conn, GSocketFamily family,
                             GError **error);

G_END_DECLS
