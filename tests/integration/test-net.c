/*
 * test-net.c: the replication network against a real libvirtd and real interfaces
 *
 * The test enters a network namespace of its own first thing in main(), before any thread
 * exists (unshare(CLONE_NEWNET) moves the calling thread only; threads made later inherit
 * its namespace). There it makes the bridge a libvirt network names with ip(8), so the
 * host's interfaces are never touched. libvirtd stays in the host's namespace and is reached
 * over its unix socket, a file. The libvirt networks are defined, never started (that would
 * make the bridge in libvirtd's namespace, with dnsmasq and firewall rules), named with the
 * test prefix and undefined by the fixture teardown; networks a crashed run left behind are
 * removed by the next run (run-isolated.sh removes leftover domains only).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "vr-net.h"
#include "vr-test-util.h"

/* Why the tests that need the namespace skip; NULL when main() entered it. */
static char *netns_skip;

typedef struct {
    bool libvirt;   /* define a libvirt network naming the bridge */
    bool interface; /* make the bridge in our namespace, with its addresses */
    bool up;        /* and bring it up */
} Params;

typedef struct {
    virConnectPtr conn;
    virNetworkPtr network;
    char *name;   /* of the libvirt network */
    char *bridge; /* of the interface: at most 15 bytes */
    bool made;    /* the interface exists */
    bool ready;   /* set up as asked; else the test was skipped */
} Fixture;

static const Params network_up = { .libvirt = true, .interface = true, .up = true };
static const Params network_down = { .libvirt = true, .interface = true, .up = false };
static const Params network_only = { .libvirt = true, .interface = false };
static const Params interface_up = { .interface = true, .up = true };
static const Params netns_only = { 0 };

/* Run ip(8) with @args; true when it succeeded, else false with its stderr in @err. */
static bool
ip_try(const char *const *args, char **err)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    g_autoptr(GError) error = NULL;
    int status = 0;

    g_ptr_array_add(argv, (char *)"ip");
    for (guint i = 0; args[i] != NULL; i++)
        g_ptr_array_add(argv, (char *)args[i]);
    g_ptr_array_add(argv, NULL);
    g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, NULL,
                               G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
                               err, &status, &error));
    g_assert_no_error(error);
    return g_spawn_check_wait_status(status, NULL);
}

/* Run ip(8) with @args; fail the test when it fails. */
static void
ip_run(const char *const *args)
{
    g_autofree char *err = NULL;
    g_autofree char *line = g_strjoinv(" ", (char **)args);

    if (!ip_try(args, &err))
        g_error("ip %s failed: %s", line, err);
}

/* Networks named "vrtest-<pid>-net..." whose process is gone: a crashed run's leftovers. */
static void
remove_stale_networks(virConnectPtr conn)
{
    virNetworkPtr *nets = NULL;
    int n = virConnectListAllNetworks(conn, &nets, 0);

    for (int i = 0; i < n; i++) {
        const char *name = virNetworkGetName(nets[i]);
        int pid = 0;
        int end = 0;

        if (sscanf(name, "vrtest-%d-net%n", &pid, &end) == 1 && end > 0 && pid > 0 &&
            kill(pid, 0) < 0 && errno == ESRCH) {
            g_test_message("removing stale libvirt network '%s'", name);
            virNetworkUndefine(nets[i]);
        }
        virNetworkFree(nets[i]);
    }
    free(nets);
}

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    const Params *p = data;
    static bool swept;

    fx->name = g_strdup_printf("%s-net", vr_test_prefix());
    fx->bridge = g_strdup_printf("vrtbr%d", (int)getpid());
    g_assert_cmpuint(strlen(fx->bridge), <=, 15);

    if (netns_skip != NULL) {
        g_test_skip(netns_skip);
        return;
    }
    if (vr_test_skip_without("ip"))
        return;
    if (p->libvirt) {
        g_autofree char *xml = NULL;

        fx->conn = vr_test_libvirt_connect();
        if (fx->conn == NULL)
            return;
        if (!swept) {
            remove_stale_networks(fx->conn);
            swept = true;
        }
        /* No <forward>: an isolated network. Defined only, so its bridge is ours to make. */
        xml = g_strdup_printf("<network><name>%s</name><bridge name='%s'/></network>", fx->name,
                              fx->bridge);
        fx->network = virNetworkDefineXML(fx->conn, xml);
        if (fx->network == NULL)
            g_error("cannot define libvirt network '%s': %s", fx->name, virGetLastErrorMessage());
    }
    if (p->interface) {
        const char *bridge[] = { "link", "add", fx->bridge, "type", "bridge", NULL };
        const char *dummy[] = { "link", "add", fx->bridge, "type", "dummy", NULL };
        const char *v4[] = { "addr", "add", "10.77.0.1/24", "dev", fx->bridge, NULL };
        /* nodad: usable at once, not tentative */
        const char *v6[] = { "addr", "add", "fd77::1/64", "dev", fx->bridge, "nodad", NULL };
        const char *ll[] = { "addr", "add", "fe80::77/64", "dev", fx->bridge, "nodad", NULL };
        const char *up[] = { "link", "set", fx->bridge, "up", NULL };
        g_autofree char *err = NULL;
        g_autofree char *err2 = NULL;

        /* A bridge, as libvirt makes; a dummy where the bridge module is missing. */
        if (!ip_try(bridge, &err) && !ip_try(dummy, &err2)) {
            g_autofree char *why = g_strdup_printf(
                "cannot make a bridge or dummy interface in the test's network namespace: %s",
                g_strstrip(err));

            g_test_skip(why);
            return;
        }
        fx->made = true;
        ip_run(v4);
        ip_run(v6);
        ip_run(ll);
        if (p->up)
            ip_run(up);
    }
    fx->ready = true;
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    if (fx->made) {
        const char *del[] = { "link", "del", fx->bridge, NULL };

        ip_run(del);
    }
    if (fx->network != NULL) {
        virNetworkUndefine(fx->network);
        virNetworkFree(fx->network);
    }
    if (fx->conn != NULL)
        virConnectClose(fx->conn);
    g_free(fx->name);
    g_free(fx->bridge);
}

/* Resolve @spec; fail the test on error. The address as text. (transfer full) */
static char *
resolve_ok(const char *spec, virConnectPtr conn, GSocketFamily family)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GInetAddress) address = vr_net_resolve(spec, conn, family, &error);

    g_assert_no_error(error);
    g_assert_nonnull(address);
    return g_inet_address_to_string(address);
}

/* Resolve @spec, which must fail with @code and @message. */
static void
resolve_fails(const char *spec, virConnectPtr conn, GSocketFamily family, int code,
              const char *message)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GInetAddress) address = vr_net_resolve(spec, conn, family, &error);

    g_assert_null(address);
    g_assert_error(error, VR_NET_ERROR, code);
    g_assert_cmpstr(error->message, ==, message);
}

static void
test_network(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *spec = NULL;
    g_autofree char *bridge = NULL;
    g_autofree char *v4 = NULL;
    g_autofree char *v6 = NULL;
    g_autofree char *any = NULL;

    if (!fx->ready)
        return; /* skipped */
    bridge = vr_net_network_bridge(fx->conn, fx->name, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(bridge, ==, fx->bridge);

    spec = g_strdup_printf("network:%s", fx->name);
    any = resolve_ok(spec, fx->conn, G_SOCKET_FAMILY_INVALID);
    g_assert_cmpstr(any, ==, "10.77.0.1");
    v4 = resolve_ok(spec, fx->conn, G_SOCKET_FAMILY_IPV4);
    g_assert_cmpstr(v4, ==, "10.77.0.1");
    /* the global address, never fe80::77 nor the kernel's own link-local one */
    v6 = resolve_ok(spec, fx->conn, G_SOCKET_FAMILY_IPV6);
    g_assert_cmpstr(v6, ==, "fd77::1");
}

static void
test_network_down(Fixture *fx, gconstpointer data)
{
    g_autofree char *spec = NULL;
    g_autofree char *message = NULL;

    if (!fx->ready)
        return;
    spec = g_strdup_printf("network:%s", fx->name);
    message =
        g_strdup_printf("interface '%s' of libvirt network '%s' is down", fx->bridge, fx->name);
    resolve_fails(spec, fx->conn, G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_NO_ADDRESS, message);
}

/* Defined, not started, and no interface of that name here: what an inactive network is. */
static void
test_network_no_interface(Fixture *fx, gconstpointer data)
{
    g_autofree char *spec = NULL;
    g_autofree char *message = NULL;

    if (!fx->ready)
        return;
    spec = g_strdup_printf("network:%s", fx->name);
    message = g_strdup_printf("interface '%s' of libvirt network '%s' does not exist in this "
                              "network namespace (the network is not active)",
                              fx->bridge, fx->name);
    resolve_fails(spec, fx->conn, G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_NOT_FOUND, message);
}

/* A macvtap network (forward mode bridge over a host interface): no bridge of its own. */
static void
test_network_no_bridge(Fixture *fx, gconstpointer data)
{
    g_autofree char *name = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *spec = NULL;
    g_autofree char *message = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *bridge = NULL;
    virNetworkPtr net;

    if (!fx->ready)
        return;
    name = g_strdup_printf("%s-net-direct", vr_test_prefix());
    xml = g_strdup_printf("<network><name>%s</name>"
                          "<forward mode='bridge'><interface dev='eth0'/></forward></network>",
                          name);
    net = virNetworkDefineXML(fx->conn, xml);
    if (net == NULL)
        g_error("cannot define libvirt network '%s': %s", name, virGetLastErrorMessage());

    bridge = vr_net_network_bridge(fx->conn, name, &error);
    spec = g_strdup_printf("network:%s", name);
    message = g_strdup_printf("libvirt network '%s' names no bridge (forward mode 'bridge' "
                              "without <bridge name=...>: its guests use host devices "
                              "directly), so this host has no address on it",
                              name);
    /* Undefine before asserting, so a failure leaves nothing behind. */
    virNetworkUndefine(net);
    virNetworkFree(net);
    g_assert_null(bridge);
    g_assert_error(error, VR_NET_ERROR, VR_NET_ERROR_NO_ADDRESS);
    g_assert_cmpstr(error->message, ==, message);
}

static void
test_network_unknown(Fixture *fx, gconstpointer data)
{
    g_autofree char *spec = NULL;
    g_autofree char *message = NULL;

    if (!fx->ready)
        return;
    spec = g_strdup_printf("network:%s-net-none", vr_test_prefix());
    message = g_strdup_printf("libvirt network '%s-net-none' does not exist", vr_test_prefix());
    resolve_fails(spec, fx->conn, G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_NOT_FOUND, message);
}

static void
test_interface(Fixture *fx, gconstpointer data)
{
    g_autofree char *spec = NULL;
    g_autofree char *v4 = NULL;
    g_autofree char *v6 = NULL;

    if (!fx->ready)
        return;
    spec = g_strdup_printf("interface:%s", fx->bridge);
    v4 = resolve_ok(spec, NULL, G_SOCKET_FAMILY_INVALID);
    g_assert_cmpstr(v4, ==, "10.77.0.1");
    v6 = resolve_ok(spec, NULL, G_SOCKET_FAMILY_IPV6);
    g_assert_cmpstr(v6, ==, "fd77::1");
    /* eth0 of the host is not in this namespace */
    resolve_fails("interface:vrtnone0", NULL, G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_NOT_FOUND,
                  "interface 'vrtnone0' does not exist in this network namespace");
}

static void
test_address(Fixture *fx, gconstpointer data)
{
    g_autofree char *v4 = NULL;
    g_autofree char *bare = NULL;
    g_autofree char *v6 = NULL;

    if (!fx->ready)
        return;
    v4 = resolve_ok("address:10.77.0.1", NULL, G_SOCKET_FAMILY_INVALID);
    g_assert_cmpstr(v4, ==, "10.77.0.1");
    bare = resolve_ok("10.77.0.1", NULL, G_SOCKET_FAMILY_IPV4);
    g_assert_cmpstr(bare, ==, "10.77.0.1");
    v6 = resolve_ok("address:fd77:0::1", NULL, G_SOCKET_FAMILY_INVALID);
    g_assert_cmpstr(v6, ==, "fd77::1");
    resolve_fails("address:10.77.0.9", NULL, G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_NO_ADDRESS,
                  "address '10.77.0.9' is not assigned to any interface of this host");
    resolve_fails("address:fe80::77", NULL, G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_INVALID,
                  "replication network 'address:fe80::77' is a link-local IPv6 address, which "
                  "cannot be bound without a scope id");
}

/* In a fresh namespace lo is down without addresses; up, it has 127.0.0.1 and ::1. */
static void
test_loopback(Fixture *fx, gconstpointer data)
{
    const char *up[] = { "link", "set", "lo", "up", NULL };
    const char *down[] = { "link", "set", "lo", "down", NULL };
    g_autofree char *v6 = NULL;
    g_autofree char *v4 = NULL;

    if (!fx->ready)
        return;
    resolve_fails("::1", NULL, G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_NO_ADDRESS,
                  "address '::1' is not assigned to any interface of this host");
    ip_run(up);
    v6 = resolve_ok("::1", NULL, G_SOCKET_FAMILY_INVALID);
    g_assert_cmpstr(v6, ==, "::1");
    v4 = resolve_ok("interface:lo", NULL, G_SOCKET_FAMILY_INVALID);
    g_assert_cmpstr(v4, ==, "127.0.0.1");
    ip_run(down);
    resolve_fails("interface:lo", NULL, G_SOCKET_FAMILY_INVALID, VR_NET_ERROR_NO_ADDRESS,
                  "interface 'lo' is down");
}

static void
quiet_libvirt(void *opaque, virErrorPtr error)
{
    /* The tests read libvirt's errors from the GError; do not print them twice. */
}

int
main(int argc, char **argv)
{
    /* First, while this is the only thread: every thread made later inherits the namespace. */
    if (unshare(CLONE_NEWNET) < 0) {
        int errsv = errno;

        netns_skip = g_strdup_printf("cannot enter a network namespace of its own "
                                     "(unshare(CLONE_NEWNET): %s)%s",
                                     g_strerror(errsv), errsv == EPERM ? ": needs root" : "");
    }
    g_test_init(&argc, &argv, NULL);
    virSetErrorFunc(NULL, quiet_libvirt);

#define ADD(path, params, func) \
    g_test_add(path, Fixture, &params, fixture_setup, func, fixture_teardown)
    ADD("/net/network", network_up, test_network);
    ADD("/net/network/down", network_down, test_network_down);
    ADD("/net/network/no-interface", network_only, test_network_no_interface);
    ADD("/net/network/no-bridge", network_only, test_network_no_bridge);
    ADD("/net/network/unknown", network_only, test_network_unknown);
    ADD("/net/interface", interface_up, test_interface);
    ADD("/net/address", interface_up, test_address);
    ADD("/net/address/loopback", netns_only, test_loopback);
#undef ADD

    return g_test_run();
}
