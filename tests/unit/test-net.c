/*
 * test-net.c: the replication network: spec parsing, and address choice over hand-built
 * getifaddrs(3) lists
 *
 * Resolving against libvirt and the interfaces of a network namespace is in
 * tests/integration/test-net.c.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "vr-net.h"

/*
 * One entry of a hand-built list: @address NULL is an entry without address, as getifaddrs
 * gives for the AF_PACKET side of every interface.
 */
typedef struct {
    const char *name;
    bool up;
    const char *address;
} Entry;

#define LIST_MAX 32

typedef struct {
    struct ifaddrs ifa[LIST_MAX];
    struct sockaddr_storage sa[LIST_MAX];
} List;

/* A list as getifaddrs(3) returns it, from @entries up to one with a NULL name. */
static List *
list_new(const Entry *entries)
{
    List *list = g_new0(List, 1);
    guint n = 0;

    for (; n < LIST_MAX && entries[n].name != NULL; n++) {
        struct ifaddrs *ifa = &list->ifa[n];

        ifa->ifa_name = (char *)entries[n].name;
        ifa->ifa_flags = entries[n].up ? IFF_UP | IFF_RUNNING : 0;
        if (n > 0)
            list->ifa[n - 1].ifa_next = ifa;
        if (entries[n].address == NULL) {
            list->sa[n].ss_family = AF_PACKET;
        } else if (strchr(entries[n].address, ':') != NULL) {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&list->sa[n];

            in6->sin6_family = AF_INET6;
            g_assert_cmpint(inet_pton(AF_INET6, entries[n].address, &in6->sin6_addr), ==, 1);
        } else {
            struct sockaddr_in *in = (struct sockaddr_in *)&list->sa[n];

            in->sin_family = AF_INET;
            g_assert_cmpint(inet_pton(AF_INET, entries[n].address, &in->sin_addr), ==, 1);
        }
        ifa->ifa_addr = (struct sockaddr *)&list->sa[n];
    }
    g_assert_null(entries[n].name); /* else raise LIST_MAX */
    return list;
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(List, g_free)

/* A host: eth0 with several addresses of both families, listed IPv6 first. */
static const Entry host[] = {
    { "lo", true, NULL },
    { "lo", true, "127.0.0.1" },
    { "lo", true, "::1" },
    { "eth0", true, NULL },
    { "eth0", true, "fe80::5054:ff:fe12:3456" },
    { "eth0", true, "2001:db8::7" },
    { "eth0", true, "fd00::7" },
    { "eth0", true, "192.0.2.7" },
    { "eth0", true, "192.0.2.8" },
    /* down, with an address */
    { "eth1", false, NULL },
    { "eth1", false, "198.51.100.1" },
    /* up, link-local IPv6 only */
    { "eth2", true, NULL },
    { "eth2", true, "fe80::1" },
    /* up, no address at all */
    { "eth3", true, NULL },
    /* up, IPv4 only */
    { "eth4", true, NULL },
    { "eth4", true, "203.0.113.4" },
    { NULL },
};

typedef struct {
    const char *spec;
    bool ok;
    VrNetKind kind;
    const char *name;    /* when ok */
    const char *message; /* when not ok: the whole message */
} ParseCase;

static const ParseCase parse_cases[] = {
    { "network:repl", true, VR_NET_KIND_NETWORK, "repl", NULL },
    { "network:Repl Net-1.x", true, VR_NET_KIND_NETWORK, "Repl Net-1.x", NULL },
    { "interface:eth0", true, VR_NET_KIND_INTERFACE, "eth0", NULL },
    { "interface:eth0:1", true, VR_NET_KIND_INTERFACE, "eth0:1", NULL },
    { "interface:abcdefghijklmno", true, VR_NET_KIND_INTERFACE, "abcdefghijklmno", NULL },
    { "address:10.77.0.1", true, VR_NET_KIND_ADDRESS, "10.77.0.1", NULL },
    { "address:fd00:0:0::1", true, VR_NET_KIND_ADDRESS, "fd00::1", NULL },
    { "10.77.0.1", true, VR_NET_KIND_ADDRESS, "10.77.0.1", NULL },
    { "::1", true, VR_NET_KIND_ADDRESS, "::1", NULL },
    { "2001:DB8::1", true, VR_NET_KIND_ADDRESS, "2001:db8::1", NULL },
    { "169.254.3.4", true, VR_NET_KIND_ADDRESS, "169.254.3.4", NULL },

    { "", false, 0, NULL,
      "the replication network is empty: give network:NAME, interface:NAME or address:IP" },
    { "repl", false, 0, NULL,
      "replication network 'repl' is not network:NAME, interface:NAME, address:IP or an IP "
      "address" },
    { "Network:repl", false, 0, NULL,
      "replication network 'Network:repl' is not network:NAME, interface:NAME, address:IP or "
      "an IP address" },
    { "network:", false, 0, NULL,
      "replication network 'network:': the libvirt network name is empty" },
    { "network:a/b", false, 0, NULL,
      "replication network 'network:a/b': the libvirt network name holds a '/'" },
    { "network:a\nb", false, 0, NULL,
      "replication network 'network:a\\nb': the libvirt network name holds a control "
      "character" },
    { "interface:", false, 0, NULL,
      "replication network 'interface:': the interface name is empty" },
    { "interface:abcdefghijklmnop", false, 0, NULL,
      "replication network 'interface:abcdefghijklmnop': the interface name is longer than 15 "
      "bytes" },
    { "interface:..", false, 0, NULL,
      "replication network 'interface:..': the interface name is '.' or '..'" },
    { "interface:a/b", false, 0, NULL,
      "replication network 'interface:a/b': the interface name holds a '/'" },
    { "interface:eth 0", false, 0, NULL,
      "replication network 'interface:eth 0': the interface name holds white space or a "
      "control character" },
    { "address:", false, 0, NULL, "replication network 'address:': not an IPv4 or IPv6 address" },
    { "address:10.77.0", false, 0, NULL,
      "replication network 'address:10.77.0': not an IPv4 or IPv6 address" },
    { "address:[::1]", false, 0, NULL,
      "replication network 'address:[::1]': not an IPv4 or IPv6 address" },
    { "address:host.example", false, 0, NULL,
      "replication network 'address:host.example': not an IPv4 or IPv6 address" },
    { "address: 10.77.0.1", false, 0, NULL,
      "replication network 'address: 10.77.0.1': not an IPv4 or IPv6 address" },
    { "0.0.0.0", false, 0, NULL,
      "replication network '0.0.0.0' is the unspecified address: name the one address of "
      "this host to use" },
    { "address:::", false, 0, NULL,
      "replication network 'address:::' is the unspecified address: name the one address of "
      "this host to use" },
    { "address:239.1.2.3", false, 0, NULL,
      "replication network 'address:239.1.2.3' is a multicast address" },
    { "fe80::1", false, 0, NULL,
      "replication network 'fe80::1' is a link-local IPv6 address, which cannot be bound "
      "without a scope id" },
    { "fe80::1%eth0", false, 0, NULL,
      "replication network 'fe80::1%eth0' is not network:NAME, interface:NAME, address:IP or "
      "an IP address" },
};

static void
test_parse(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(parse_cases); i++) {
        const ParseCase *c = &parse_cases[i];
        g_autoptr(GError) error = NULL;
        g_autofree char *name = NULL;
        VrNetKind kind = (VrNetKind)-1;
        bool ok;

        g_test_message("spec '%s'", c->spec);
        ok = vr_net_parse_spec(c->spec, &kind, &name, &error);
        if (c->ok) {
            g_assert_no_error(error);
            g_assert_true(ok);
            g_assert_cmpint(kind, ==, c->kind);
            g_assert_cmpstr(name, ==, c->name);
        } else {
            g_assert_error(error, VR_NET_ERROR, VR_NET_ERROR_INVALID);
            g_assert_false(ok);
            g_assert_cmpstr(error->message, ==, c->message);
            /* Outputs untouched on failure. */
            g_assert_cmpint(kind, ==, (VrNetKind)-1);
            g_assert_null(name);
        }
    }
}

/* A network name at the limit, and one byte over. */
static void
test_parse_long_network(void)
{
    g_autofree char *longest = g_strnfill(255, 'n');
    g_autofree char *spec = g_strdup_printf("network:%s", longest);
    g_autofree char *over = g_strdup_printf("network:%sn", longest);
    g_autoptr(GError) error = NULL;
    g_autofree char *name = NULL;
    VrNetKind kind;

    g_assert_true(vr_net_parse_spec(spec, &kind, &name, &error));
    g_assert_no_error(error);
    g_assert_cmpstr(name, ==, longest);
    g_clear_pointer(&name, g_free);
    g_assert_false(vr_net_parse_spec(over, &kind, &name, &error));
    g_assert_error(error, VR_NET_ERROR, VR_NET_ERROR_INVALID);
    g_assert_nonnull(strstr(error->message, "the libvirt network name is longer than 255 bytes"));
    g_assert_null(name);
}

/* vr_net_select_address() on @ifname of host[]: the address, or NULL with @error. */
static char *
select_on_host(const char *ifname, const char *network, GSocketFamily family, GError **error)
{
    g_autoptr(List) list = list_new(host);
    g_autoptr(GInetAddress) address =
        vr_net_select_address(list->ifa, ifname, network, family, error);

    return address != NULL ? g_inet_address_to_string(address) : NULL;
}

typedef struct {
    const char *ifname;
    const char *network;
    GSocketFamily family;
    const char *address; /* expected, or NULL for an error */
    int code;
    const char *message;
} SelectCase;

static const SelectCase select_cases[] = {
    /* IPv4 first, even listed after IPv6; the first of the family; never link-local */
    { "eth0", NULL, G_SOCKET_FAMILY_INVALID, "192.0.2.7", 0, NULL },
    { "eth0", NULL, G_SOCKET_FAMILY_IPV4, "192.0.2.7", 0, NULL },
    { "eth0", NULL, G_SOCKET_FAMILY_IPV6, "2001:db8::7", 0, NULL },
    { "lo", NULL, G_SOCKET_FAMILY_INVALID, "127.0.0.1", 0, NULL },
    { "lo", NULL, G_SOCKET_FAMILY_IPV6, "::1", 0, NULL },
    { "eth4", NULL, G_SOCKET_FAMILY_INVALID, "203.0.113.4", 0, NULL },

    { "eth1", NULL, G_SOCKET_FAMILY_INVALID, NULL, VR_NET_ERROR_NO_ADDRESS,
      "interface 'eth1' is down" },
    { "eth1", "repl", G_SOCKET_FAMILY_INVALID, NULL, VR_NET_ERROR_NO_ADDRESS,
      "interface 'eth1' of libvirt network 'repl' is down" },
    { "eth2", NULL, G_SOCKET_FAMILY_INVALID, NULL, VR_NET_ERROR_NO_ADDRESS,
      "interface 'eth2' has no IPv4 or global IPv6 address, only link-local IPv6 (fe80::/10), "
      "which cannot be bound without a scope id" },
    { "eth2", "repl", G_SOCKET_FAMILY_IPV6, NULL, VR_NET_ERROR_NO_ADDRESS,
      "interface 'eth2' of libvirt network 'repl' has no global IPv6 address, only link-local "
      "IPv6 (fe80::/10), which cannot be bound without a scope id" },
    { "eth2", NULL, G_SOCKET_FAMILY_IPV4, NULL, VR_NET_ERROR_NO_ADDRESS,
      "interface 'eth2' has no IPv4 address, only link-local IPv6 (fe80::/10), which cannot be "
      "bound without a scope id" },
    { "eth3", NULL, G_SOCKET_FAMILY_INVALID, NULL, VR_NET_ERROR_NO_ADDRESS,
      "interface 'eth3' has no address" },
    { "eth3", "repl", G_SOCKET_FAMILY_IPV4, NULL, VR_NET_ERROR_NO_ADDRESS,
      "interface 'eth3' of libvirt network 'repl' has no address" },
    { "eth4", NULL, G_SOCKET_FAMILY_IPV6, NULL, VR_NET_ERROR_NO_ADDRESS,
      "interface 'eth4' has no global IPv6 address" },
    { "eth9", NULL, G_SOCKET_FAMILY_INVALID, NULL, VR_NET_ERROR_NOT_FOUND,
      "interface 'eth9' does not exist in this network namespace" },
    { "eth9", "repl", G_SOCKET_FAMILY_INVALID, NULL, VR_NET_ERROR_NOT_FOUND,
      "interface 'eth9' of libvirt network 'repl' does not exist in this network namespace" },
    /* no prefix match: "eth" is not "eth0" */
    { "eth", NULL, G_SOCKET_FAMILY_INVALID, NULL, VR_NET_ERROR_NOT_FOUND,
      "interface 'eth' does not exist in this network namespace" },
};

static void
test_select(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(select_cases); i++) {
        const SelectCase *c = &select_cases[i];
        g_autoptr(GError) error = NULL;
        g_autofree char *got = NULL;

        g_test_message("interface '%s', family %d", c->ifname, c->family);
        got = select_on_host(c->ifname, c->network, c->family, &error);
        if (c->address != NULL) {
            g_assert_no_error(error);
            g_assert_cmpstr(got, ==, c->address);
        } else {
            g_assert_error(error, VR_NET_ERROR, c->code);
            g_assert_cmpstr(error->message, ==, c->message);
            g_assert_null(got);
        }
    }
}

/* An empty list: getifaddrs(3) of a namespace without interfaces. */
static void
test_select_empty(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GInetAddress) address =
        vr_net_select_address(NULL, "eth0", NULL, G_SOCKET_FAMILY_INVALID, &error);

    g_assert_null(address);
    g_assert_error(error, VR_NET_ERROR, VR_NET_ERROR_NOT_FOUND);
}

typedef struct {
    const char *address;
    const char *message; /* NULL: assigned to an interface that is up */
} CheckCase;

static const CheckCase check_cases[] = {
    { "192.0.2.8", NULL },
    { "2001:db8::7", NULL },
    { "::1", NULL },
    { "203.0.113.4", NULL },
    { "192.0.2.9", "address '192.0.2.9' is not assigned to any interface of this host" },
    { "2001:db8::8", "address '2001:db8::8' is not assigned to any interface of this host" },
    /* the IPv4-mapped form of an assigned IPv4 address is another address */
    { "::ffff:192.0.2.7", "address '::ffff:192.0.2.7' is not assigned to any interface of this "
                          "host" },
    { "198.51.100.1", "address '198.51.100.1' is assigned to interface 'eth1', which is down" },
};

static void
test_check(void)
{
    g_autoptr(List) list = list_new(host);

    for (gsize i = 0; i < G_N_ELEMENTS(check_cases); i++) {
        const CheckCase *c = &check_cases[i];
        g_autoptr(GInetAddress) address = g_inet_address_new_from_string(c->address);
        g_autoptr(GError) error = NULL;
        bool ok;

        g_test_message("address '%s'", c->address);
        g_assert_nonnull(address);
        ok = vr_net_check_address(list->ifa, address, &error);
        if (c->message == NULL) {
            g_assert_no_error(error);
            g_assert_true(ok);
        } else {
            g_assert_error(error, VR_NET_ERROR, VR_NET_ERROR_NO_ADDRESS);
            g_assert_cmpstr(error->message, ==, c->message);
            g_assert_false(ok);
        }
    }
}

/* What vr_net_resolve() refuses before it looks at any interface. */
static void
test_resolve_refused(void)
{
    static const struct {
        const char *spec;
        GSocketFamily family;
        int code;
        const char *message;
    } cases[] = {
        { "network:repl", G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_LIBVIRT,
          "no libvirt connection to look up libvirt network 'repl'" },
        { "address:::1", G_SOCKET_FAMILY_IPV4, VR_NET_ERROR_INVALID,
          "replication network address '::1' is not IPv4" },
        { "127.0.0.1", G_SOCKET_FAMILY_IPV6, VR_NET_ERROR_INVALID,
          "replication network address '127.0.0.1' is not IPv6" },
        { "interface:a/b", G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_INVALID,
          "replication network 'interface:a/b': the interface name holds a '/'" },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GInetAddress) address =
            vr_net_resolve(cases[i].spec, NULL, cases[i].family, &error);

        g_assert_null(address);
        g_assert_error(error, VR_NET_ERROR, cases[i].code);
        g_assert_cmpstr(error->message, ==, cases[i].message);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/net/parse", test_parse);
    g_test_add_func("/net/parse/long-network", test_parse_long_network);
    g_test_add_func("/net/select", test_select);
    g_test_add_func("/net/select/empty", test_select_empty);
    g_test_add_func("/net/check", test_check);
    g_test_add_func("/net/resolve/refused", test_resolve_refused);
    return g_test_run();
}
