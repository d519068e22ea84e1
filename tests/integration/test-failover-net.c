/*
 * test-failover-net.c: networks at failover and failover TCP/IP (vr-failover-net.h) with a
 * real libvirtd and real QEMU (TCG: the domains have no OS)
 *
 * As test-failover.c: a VrReceiver on 127.0.0.1 with the replica sink, a state database and
 * the standby on qemu:///system with the naming rule "%n-replica". The primary (defined,
 * never started) has three interfaces: on the test's network <name>-a (mapped by
 * [network-map:r1] to <name>-dr), on <name>-b (not mapped: it exists on this host and
 * stays) and on <name>-gone (not mapped, no such network: unconnected with a warning); a
 * [interface:MAC] group gives the first one an IPv4 address, and the domain has a guest
 * agent channel that no agent ever answers. The networks are isolated (no <forward>, no
 * address), transient, and destroyed by the teardown.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>
#include <sys/stat.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "vr-config.h"
#include "vr-failover-net.h"
#include "vr-failover.h"
#include "vr-qmp-json.h"
#include "vr-receiver.h"
#include "vr-replica-sink.h"
#include "vr-standby.h"
#include "vr-state.h"
#include "vr-test-transport.h"
#include "vr-test-util.h"
#include "vr-wire.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virDomainFree)

#define MiB       (1024 * 1024)
#define DISK_SIZE (16 * MiB)
#define BLOCK     65536
#define MAC_A     "52:54:00:7e:00:0a"
#define MAC_B     "52:54:00:7e:00:0b"
#define MAC_GONE  "52:54:00:7e:00:0c"

static char *pki;
static char *pki_skip_why;

typedef struct {
    char *root;
    char *work;
    VrTlsPolicy *client_policy;
    VrTlsPolicy *server_policy;
    VrAuthz *authz;
    VrState *state;
    VrReplicaSink *sink;
    VrReceiver *receiver;
    VrFailover *failover;
    VrConfig *config;
    guint16 port;
    virConnectPtr conn;
    char *name;          /* the primary */
    char *standby_name;  /* <name>-replica */
    char *copy_name;     /* <name>-replica-test */
    GPtrArray *networks; /* virNetworkPtr: <name>-a, -b, -dr, -tst */
    GPtrArray *domains;
    /*
     * The failovers' thread-default context, as the daemon has one of its own: libvirt's
     * event thread (vr_qmp_libvirt_event_loop_start()) iterates the global default one, and
     * would run the watchers' timers and outcomes there, concurrently with the test.
     */
    GMainContext *context;
} Fixture;

static void
quiet_libvirt(void *opaque, virErrorPtr error)
{
}

static char *
pki_path(const char *name)
{
    return g_build_filename(pki, name, NULL);
}

static void
network_create(Fixture *fx, const char *suffix)
{
    g_autofree char *xml =
        g_strdup_printf("<network><name>%s-%s</name></network>", fx->name, suffix);
    virNetworkPtr net = virNetworkCreateXML(fx->conn, xml);

    if (net == NULL)
        g_error("cannot create network '%s-%s': %s", fx->name, suffix, virGetLastErrorMessage());
    g_ptr_array_add(fx->networks, net);
}

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *crl = NULL;
    g_autofree char *image = NULL;
    g_autofree char *db = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *conf = NULL;
    g_autofree char *cert = pki_path("server-ok.pem");
    g_autofree char *key = pki_path("server-ok-key.pem");
    g_autoptr(GError) error = NULL;
    g_autoptr(GInetAddress) loopback = g_inet_address_new_from_string("127.0.0.1");
    g_autoptr(GSocketAddress) address = g_inet_socket_address_new(loopback, 0);
    GSList *uris;
    virDomainPtr primary;

    fx->domains = g_ptr_array_new_with_free_func(g_free);
    fx->networks = g_ptr_array_new();
    if (pki == NULL) {
        g_test_skip(pki_skip_why);
        return;
    }
    if (vr_test_skip_without("qemu-img") || vr_test_skip_without("qemu-nbd"))
        return;
    fx->conn = vr_test_libvirt_connect();
    if (fx->conn == NULL)
        return;

    fx->name = g_strdup_printf("%s-n%u", vr_test_prefix(), serial);
    {
        g_autofree char *root = g_strdup_printf("root%u", serial);
        g_autofree char *work = g_strdup_printf("work%u", serial);

        fx->root = vr_test_path(root);
        fx->work = vr_test_path(work);
    }
    serial++;
    g_assert_no_errno(g_mkdir_with_parents(fx->root, 0711));
    g_assert_no_errno(chmod(fx->root, 0711));
    g_assert_no_errno(g_mkdir_with_parents(fx->work, 0755));
    fx->standby_name = g_strdup_printf("%s-replica", fx->name);
    fx->copy_name = g_strdup_printf("%s-replica-test", fx->name);
    g_ptr_array_add(fx->domains, g_strdup(fx->copy_name));
    g_ptr_array_add(fx->domains, g_strdup(fx->standby_name));
    g_ptr_array_add(fx->domains, g_strdup(fx->name));
    network_create(fx, "a");
    network_create(fx, "b");
    network_create(fx, "dr");
    network_create(fx, "tst");

    image = g_build_filename(fx->work, "vda.qcow2", NULL);
    vr_test_qcow2_create(image, "16M");
    xml = g_strdup_printf(
        "<domain type='qemu'><name>%s</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='%s'/><target dev='vda' bus='virtio'/></disk>"
        "<interface type='network'><mac address='" MAC_A "'/><source network='%s-a'/>"
        "<model type='virtio'/></interface>"
        "<interface type='network'><mac address='" MAC_B "'/><source network='%s-b'/>"
        "<model type='virtio'/></interface>"
        "<interface type='network'><mac address='" MAC_GONE "'/><source network='%s-gone'/>"
        "<model type='virtio'/></interface>"
        "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        "<memballoon model='none'/></devices></domain>",
        fx->name, image, fx->name, fx->name, fx->name);
    primary = virDomainDefineXML(fx->conn, xml);
    if (primary == NULL)
        g_error("cannot define the primary '%s': %s", fx->name, virGetLastErrorMessage());
    virDomainFree(primary);

    /* The replica's configuration: per relationship, per MAC, a short agent wait. */
    conf = g_strdup_printf("[replica]\n"
                           "test-network = %s-tst\n"
                           "guest-agent-wait = 4\n"
                           "[network-map:r1]\n"
                           "%s-a = %s-dr\n"
                           "[interface:" MAC_A "]\n"
                           "ipv4 = 192.0.2.10/24\n"
                           "ipv4-gateway = 192.0.2.1\n"
                           "dns = 192.0.2.53\n",
                           fx->name, fx->name, fx->name);
    fx->config = vr_config_load_data(conf, -1, "test.conf", &error);
    g_assert_no_error(error);

    crl = pki_path("crl.pem");
    fx->client_policy = vr_test_policy_new(pki, crl, true, NULL);
    fx->server_policy = vr_test_policy_new(pki, crl, true, "replica.example");
    fx->authz = vr_authz_new_allow_any(fx->root, "a", &error);
    g_assert_no_error(error);
    db = g_build_filename(fx->work, "state.db", NULL);
    fx->state = vr_state_open(db, &error);
    g_assert_no_error(error);
    fx->sink = vr_replica_sink_new(fx->authz, &error);
    g_assert_no_error(error);
    vr_replica_sink_set_point_interval(fx->sink, 0);
    vr_replica_sink_set_state(fx->sink, fx->state);
    vr_replica_sink_set_standby(fx->sink, fx->conn, "%n-replica", fx->config->network_map);
    fx->receiver = vr_receiver_new(
        &(VrReceiverConfig){
            .cert_file = cert,
            .key_file = key,
            .policy = fx->client_policy,
            .authz = fx->authz,
            .address = G_INET_SOCKET_ADDRESS(address),
            .max_body_size = 256 * MiB,
            .sink = vr_replica_sink_get_sink(),
            .sink_data = fx->sink,
        },
        &error);
    g_assert_no_error(error);
    uris = vr_receiver_get_uris(fx->receiver);
    fx->port = (guint16)g_uri_get_port(uris->data);
    g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
    fx->context = g_main_context_new();
    g_main_context_push_thread_default(fx->context);
    fx->failover = vr_failover_new(&(VrFailoverConfig){
        .state = fx->state,
        .sink = fx->sink,
        .authz = fx->authz,
        .conn = fx->conn,
        .test_network = fx->config->replica.test_network,
        .config = fx->config,
    });

    /* The primary's XML defines the standby at the first point. */
    {
        g_autoptr(virDomain) dom = virDomainLookupByName(fx->conn, fx->name);
        g_autofree char *primary_xml =
            virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
        VrTestDomain put = {
            .pki = pki,
            .client_cert = "client-ok",
            .policy = fx->server_policy,
            .port = fx->port,
            .relationship = "r1",
            .xml = primary_xml,
        };

        /* The receiver's sources are the global default context's: it was made there. */
        g_main_context_pop_thread_default(fx->context);
        g_assert_true(vr_test_domain_wait(&put, g_thread_new("domain", vr_test_domain_run, &put)));
        g_main_context_push_thread_default(fx->context);
        g_assert_no_error(put.error);
    }
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    g_clear_pointer(&fx->failover, vr_failover_free);
    if (fx->context != NULL) {
        /* The completions of attempts still running come here: run them out. */
        while (g_main_context_iteration(fx->context, FALSE))
            ;
        g_main_context_pop_thread_default(fx->context);
        g_clear_pointer(&fx->context, g_main_context_unref);
    }
    g_clear_pointer(&fx->receiver, vr_receiver_free);
    g_clear_pointer(&fx->sink, vr_replica_sink_free);
    for (guint i = 0; fx->conn != NULL && i < fx->domains->len; i++) {
        virDomainPtr dom = virDomainLookupByName(fx->conn, fx->domains->pdata[i]);

        if (dom == NULL)
            continue;
        if (virDomainIsActive(dom) == 1)
            virDomainDestroy(dom);
        virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_NVRAM);
        virDomainFree(dom);
    }
    for (guint i = 0; i < fx->networks->len; i++) {
        virNetworkDestroy(fx->networks->pdata[i]);
        virNetworkFree(fx->networks->pdata[i]);
    }
    g_ptr_array_unref(fx->networks);
    g_clear_pointer(&fx->conn, virConnectClose);
    g_clear_pointer(&fx->domains, g_ptr_array_unref);
    g_clear_pointer(&fx->state, vr_state_free);
    g_clear_pointer(&fx->config, vr_config_free);
    g_clear_pointer(&fx->authz, vr_authz_free);
    g_clear_pointer(&fx->client_policy, vr_tls_policy_free);
    g_clear_pointer(&fx->server_policy, vr_tls_policy_free);
    g_free(fx->root);
    g_free(fx->work);
    g_free(fx->name);
    g_free(fx->standby_name);
    g_free(fx->copy_name);
}

/* Cycle 1 of r1's vda (FULL): one block. */
static void
upload_first_cycle(Fixture *fx)
{
    g_autofree char *path = g_build_filename(fx->work, "r1-1.vrw", NULL);
    g_autofree uint8_t *data = g_malloc0(BLOCK);
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autoptr(VrWireEncoder) encoder = NULL;
    g_autoptr(GError) error = NULL;
    VrWireIdentity id = { 0 };
    VrTestUpload send = {
        .pki = pki,
        .client_cert = "client-ok",
        .policy = fx->server_policy,
        .port = fx->port,
        .max_attempts = 1,
    };

    id.kind = VR_WIRE_KIND_CYCLE;
    g_strlcpy(id.relationship, "r1", sizeof(id.relationship));
    g_strlcpy(id.disk, "vda", sizeof(id.disk));
    memset(id.domain_uuid, 0x3f, sizeof(id.domain_uuid));
    id.epoch = 1;
    id.target_cycle = 1;
    id.virtual_size = DISK_SIZE;
    id.granularity = BLOCK;
    id.flags = VR_WIRE_FLAG_FULL;
    memset(data, 1, BLOCK);
    encoder = vr_wire_encoder_new(&id, &error);
    g_assert_no_error(error);
    g_assert_true(vr_wire_encoder_begin(encoder, out, &error));
    g_assert_true(vr_wire_encoder_add_data(encoder, 0, data, BLOCK, out, &error));
    g_assert_true(vr_wire_encoder_end(encoder, out, &error));
    g_assert_no_error(error);
    g_assert_true(g_file_set_contents(path, (const char *)out->data, out->len, &error));
    g_assert_no_error(error);
    send.path = path;
    /* As in fixture_setup(): the receiver's I/O runs under the global default context. */
    g_main_context_pop_thread_default(fx->context);
    g_assert_true(vr_test_upload_wait(&send, g_thread_new("sender", vr_test_upload_run, &send)));
    g_main_context_push_thread_default(fx->context);
    g_assert_no_error(send.error);
}

/* The live XML of @name. (transfer full) */
static char *
live_xml(Fixture *fx, const char *name)
{
    g_autoptr(virDomain) dom = virDomainLookupByName(fx->conn, name);

    if (dom == NULL)
        g_error("no domain '%s': %s", name, virGetLastErrorMessage());
    return virDomainGetXMLDesc(dom, 0);
}

/* The <interface> with @mac in @xml (libvirt's formatting, attributes in '). (transfer full) */
static char *
iface_of(const char *xml, const char *mac)
{
    g_autofree char *needle = g_strdup_printf("<mac address='%s'/>", mac);
    const char *at = strstr(xml, needle);
    const char *start, *end;

    if (at == NULL)
        g_error("no interface with MAC %s in:\n%s", mac, xml);
    start = g_strrstr_len(xml, at - xml, "<interface");
    end = strstr(at, "</interface>");
    g_assert_nonnull(start);
    g_assert_nonnull(end);
    return g_strndup(start, end - start);
}

static const char *
member(json_object *obj, const char *path)
{
    g_auto(GStrv) parts = g_strsplit(path, ".", -1);
    json_object *cur = obj;

    for (guint i = 0; parts[i] != NULL && cur != NULL; i++) {
        if (g_ascii_isdigit(parts[i][0]))
            cur = json_object_array_get_idx(cur, (size_t)g_ascii_strtoull(parts[i], NULL, 10));
        else if (!json_object_object_get_ex(cur, parts[i], &cur))
            cur = NULL;
    }
    return cur != NULL ? json_object_get_string(cur) : NULL;
}

/* The "network" member of @record in r1's config in the state database. (transfer full) */
static json_object *
recorded_network(Fixture *fx, const char *record)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrStateRelationship) rel = vr_state_relationship_get(fx->state, "r1", &error);
    g_autoptr(json_object) config = NULL;
    json_object *rec = NULL, *network = NULL;

    g_assert_no_error(error);
    config = json_tokener_parse(rel->config);
    g_assert_true(json_object_object_get_ex(config, record, &rec));
    g_assert_true(json_object_object_get_ex(rec, "network", &network));
    return json_object_get(network);
}

/*
 * The standby records the primary's sources; the failed-over domain runs with interface A on
 * <name>-dr ([network-map:r1]), B on <name>-b (same name), the third unconnected (link down)
 * with a warning, every MAC kept; failover TCP/IP is pending (the agent channel is there,
 * nobody answers) and then recorded as not applied, and the domain still runs.
 */
static void
test_unplanned(Fixture *fx, gconstpointer data)
{
    g_autoptr(json_object) result = NULL;
    g_autoptr(json_object) recorded = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *standby = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *a = NULL, *b = NULL, *gone = NULL;
    g_autofree char *dr = NULL, *nb = NULL, *dr_source = NULL;
    const char *warning;
    gint64 deadline;

    if (fx->conn == NULL)
        return;
    upload_first_cycle(fx);
    dr = g_strdup_printf("%s-dr", fx->name);
    nb = g_strdup_printf("%s-b", fx->name);

    /* The standby's definition: the primary's sources in the marker. */
    {
        g_autoptr(virDomain) dom = virDomainLookupByName(fx->conn, fx->standby_name);
        g_autofree char *record =
            g_strdup_printf("mac=\"%s\" type=\"network\" source=\"%s-a\"", MAC_A, fx->name);

        g_assert_nonnull(dom);
        standby = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
        g_assert_nonnull(strstr(standby, record));
    }

    result = vr_failover_start(fx->failover, "r1", NULL, false, &error);
    g_assert_no_error(error);
    g_assert_nonnull(result);
    g_test_message("failover: %s", json_object_to_json_string(result));
    g_assert_cmpstr(member(result, "state"), ==, VR_FAILOVER_STATE_FAILED_OVER);

    xml = live_xml(fx, fx->standby_name);
    a = iface_of(xml, MAC_A);
    b = iface_of(xml, MAC_B);
    gone = iface_of(xml, MAC_GONE);
    g_assert_nonnull(strstr(a, "<interface type='network'>"));
    g_assert_nonnull(strstr(a, dr));
    g_assert_nonnull(strstr(b, "<interface type='network'>"));
    g_assert_nonnull(strstr(b, nb));
    g_assert_nonnull(strstr(gone, "<interface type='ethernet'>"));
    g_assert_nonnull(strstr(gone, "<link state='down'/>"));
    g_assert_null(strstr(gone, "<source network"));

    g_assert_cmpstr(member(result, "network.interfaces.0.rule"), ==, "network-map:r1");
    g_assert_cmpstr(member(result, "network.interfaces.1.rule"), ==, "same-name");
    g_assert_cmpstr(member(result, "network.interfaces.2.connected"), ==, "false");
    warning = member(result, "network.warnings.0");
    g_assert_nonnull(warning);
    g_assert_nonnull(strstr(warning, MAC_GONE));
    g_assert_nonnull(strstr(warning, "left unconnected (link down)"));
    /* An agent channel, no agent (no OS): pending, never a failed failover. */
    g_assert_cmpstr(member(result, "network.guest_ip.state"), ==, VR_FAILOVER_NET_IP_PENDING);
    g_assert_nonnull(strstr(member(result, "network.guest_ip.reason"), "no guest agent"));

    /* The watcher gives up after guest-agent-wait (4 s) and records why. */
    deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    for (;;) {
        g_clear_pointer(&recorded, json_object_put);
        recorded = recorded_network(fx, "failover");
        if (g_strcmp0(member(recorded, "guest_ip.state"), VR_FAILOVER_NET_IP_PENDING) != 0 ||
            g_get_monotonic_time() > deadline)
            break;
        g_main_context_iteration(fx->context, TRUE);
    }
    g_assert_cmpstr(member(recorded, "guest_ip.state"), ==, VR_FAILOVER_NET_IP_NOT_APPLIED);
    g_assert_nonnull(strstr(member(recorded, "guest_ip.reason"), "no guest agent answers"));
    dr_source = g_strdup_printf("network:%s", dr);
    g_assert_cmpstr(member(recorded, "interfaces.0.source"), ==, dr_source);
    /* The same in the relationship's status (failover_network). */
    {
        g_autoptr(VrStateRelationship) rel = vr_state_relationship_get(fx->state, "r1", &error);
        g_autoptr(json_object) status = NULL;

        g_assert_no_error(error);
        status = vr_failover_net_status(rel->config);
        g_assert_cmpstr(member(status, "failover.guest_ip.state"), ==,
                        VR_FAILOVER_NET_IP_NOT_APPLIED);
        g_assert_null(vr_failover_net_status("{}"));
    }
    {
        g_autoptr(virDomain) dom = virDomainLookupByName(fx->conn, fx->standby_name);

        g_assert_cmpint(virDomainIsActive(dom), ==, 1);
    }

    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, "r1", false, &error);
    g_assert_no_error(error);
}

/*
 * Test failover: every interface on [replica] test-network with its MAC; without an agent
 * channel the guest IP step says so at once. Then a test network that does not exist:
 * interfaces unconnected, a warning, and the copy still runs.
 */
static void
test_test_failover(Fixture *fx, gconstpointer data)
{
    g_autoptr(json_object) result = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *tst = NULL;
    g_autofree char *tst_name = NULL;
    const char *macs[] = { MAC_A, MAC_B, MAC_GONE };

    if (fx->conn == NULL)
        return;
    upload_first_cycle(fx);
    tst_name = g_strdup_printf("%s-tst", fx->name);
    tst = g_strdup_printf("<source network='%s'", tst_name);

    result = vr_failover_start(fx->failover, "r1", NULL, true, &error);
    g_assert_no_error(error);
    g_test_message("test failover: %s", json_object_to_json_string(result));
    xml = live_xml(fx, fx->copy_name);
    for (guint i = 0; i < G_N_ELEMENTS(macs); i++) {
        g_autofree char *iface = iface_of(xml, macs[i]);

        g_assert_nonnull(strstr(iface, tst));
    }
    g_assert_cmpstr(member(result, "network.test_network"), ==, tst_name);
    g_assert_cmpuint(json_object_array_length(json_object_object_get(
                         json_object_object_get(result, "network"), "warnings")),
                     ==, 0);
    /* The copy has the channel too (it is the standby's): pending, as above. */
    g_assert_cmpstr(member(result, "network.guest_ip.state"), ==, VR_FAILOVER_NET_IP_PENDING);
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, "r1", true, &error);
    g_assert_no_error(error);

    /* The test network is gone: the copy starts anyway, unconnected, with a warning. */
    virNetworkDestroy(fx->networks->pdata[3]);
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_start(fx->failover, "r1", NULL, true, &error);
    g_assert_no_error(error);
    g_clear_pointer(&xml, g_free);
    xml = live_xml(fx, fx->copy_name);
    for (guint i = 0; i < G_N_ELEMENTS(macs); i++) {
        g_autofree char *iface = iface_of(xml, macs[i]);

        g_assert_nonnull(strstr(iface, "<interface type='ethernet'>"));
        g_assert_nonnull(strstr(iface, "<link state='down'/>"));
    }
    g_assert_nonnull(strstr(member(result, "network.warnings.0"), "is not an active network"));
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, "r1", true, &error);
    g_assert_no_error(error);
}

/*
 * A domain without an agent channel: "not-applied" at once, and the failover succeeds; the
 * failover TCP/IP of a request is checked first (a bad one: INVALID, nothing started).
 */
static void
test_no_agent_channel(Fixture *fx, gconstpointer data)
{
    g_autoptr(json_object) result = NULL;
    g_autoptr(json_object) recorded = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(virDomain) standby = NULL;
    g_autoptr(json_object) bad = NULL;
    g_autoptr(json_object) request = NULL;
    g_autofree char *xml = NULL;
    char *channel;
    char *end;

    if (fx->conn == NULL)
        return;
    upload_first_cycle(fx);
    /* The standby without its agent channel, as a primary without one would give it. */
    standby = virDomainLookupByName(fx->conn, fx->standby_name);
    xml = virDomainGetXMLDesc(standby, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    channel = strstr(xml, "<channel type='unix'>");
    g_assert_nonnull(channel);
    end = strstr(channel, "</channel>") + strlen("</channel>");
    memmove(channel, end, strlen(end) + 1);
    virDomainFree(virDomainDefineXML(fx->conn, xml));

    /* A bad request is refused before anything is done. */
    bad = json_tokener_parse("{\"" MAC_B "\": {\"ipv6\": \"2001:db8::1\"}}");
    g_assert_null(vr_failover_start_with_interfaces(fx->failover, "r1", NULL, false, bad, &error));
    g_assert_error(error, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_INVALID);
    g_assert_nonnull(strstr(error->message, "ipv6: '2001:db8::1' is not an IPv6 address"));
    g_clear_error(&error);
    g_assert_cmpint(virDomainIsActive(standby), ==, 0);

    /* The request's failover TCP/IP for the second NIC (the config has the first's). */
    request = json_tokener_parse("{\"" MAC_B "\": {\"ipv6\": \"2001:db8::7/64\"}}");
    result = vr_failover_start_with_interfaces(fx->failover, "r1", NULL, false, request, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(member(result, "network.guest_ip.state"), ==, VR_FAILOVER_NET_IP_NOT_APPLIED);
    g_assert_nonnull(strstr(member(result, "network.guest_ip.reason"), "no guest agent: domain '"));
    recorded = recorded_network(fx, "failover");
    g_assert_cmpstr(member(recorded, "guest_ip.state"), ==, VR_FAILOVER_NET_IP_NOT_APPLIED);
    g_assert_cmpint(virDomainIsActive(standby), ==, 1);
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, "r1", false, &error);
    g_assert_no_error(error);
}

/* The intents of failover TCP/IP in the state database. */
static guint
guest_ip_intents(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) list = vr_state_intent_list(fx->state, "guest-ip:", &error);

    g_assert_no_error(error);
    return list->len;
}

/* A new VrFailover on the same state, as a daemon's start makes it (the old one is gone). */
static void
failover_restart(Fixture *fx)
{
    g_clear_pointer(&fx->failover, vr_failover_free);
    fx->failover = vr_failover_new(&(VrFailoverConfig){
        .state = fx->state,
        .sink = fx->sink,
        .authz = fx->authz,
        .conn = fx->conn,
        .test_network = fx->config->replica.test_network,
        .config = fx->config,
    });
}

/*
 * A restart while failover TCP/IP is pending: its intent is in the state database until the
 * outcome is; the next VrFailover resumes it ("pending" with "resumed": {"count": 1}) and
 * records the final outcome (no agent: "not-applied") with "resumed", the intent gone. Then
 * a push whose domain stopped before the restart: "abandoned", with the reason.
 */
static void
test_resume(Fixture *fx, gconstpointer data)
{
    g_autoptr(json_object) result = NULL;
    g_autoptr(json_object) recorded = NULL;
    g_autoptr(GError) error = NULL;
    gint64 deadline;

    if (fx->conn == NULL)
        return;
    upload_first_cycle(fx);
    result = vr_failover_start(fx->failover, "r1", NULL, false, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(member(result, "network.guest_ip.state"), ==, VR_FAILOVER_NET_IP_PENDING);
    g_assert_cmpuint(guest_ip_intents(fx), ==, 1);

    /* The daemon stops before the outcome: pending, and its intent, stay. */
    failover_restart(fx);
    recorded = recorded_network(fx, "failover");
    g_test_message("resumed: %s", json_object_to_json_string(recorded));
    g_assert_cmpstr(member(recorded, "guest_ip.state"), ==, VR_FAILOVER_NET_IP_PENDING);
    g_assert_cmpstr(member(recorded, "guest_ip.resumed.count"), ==, "1");
    g_assert_nonnull(strstr(member(recorded, "guest_ip.reason"), "resumed after a restart"));
    g_assert_nonnull(member(recorded, "interfaces.0.source")); /* the mapping stays */
    g_assert_cmpuint(guest_ip_intents(fx), ==, 1);

    /* What is left of guest-agent-wait (4 s), then the outcome, as without the restart. */
    deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (g_strcmp0(member(recorded, "guest_ip.state"), VR_FAILOVER_NET_IP_PENDING) == 0 &&
           g_get_monotonic_time() < deadline) {
        g_main_context_iteration(fx->context, TRUE);
        g_clear_pointer(&recorded, json_object_put);
        recorded = recorded_network(fx, "failover");
    }
    g_test_message("outcome: %s", json_object_to_json_string(recorded));
    g_assert_cmpstr(member(recorded, "guest_ip.state"), ==, VR_FAILOVER_NET_IP_NOT_APPLIED);
    g_assert_nonnull(strstr(member(recorded, "guest_ip.reason"), "no guest agent answers"));
    g_assert_cmpstr(member(recorded, "guest_ip.resumed.count"), ==, "1");
    g_assert_cmpuint(guest_ip_intents(fx), ==, 0);
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, "r1", false, &error);
    g_assert_no_error(error);

    /* Pending again; the domain stops while no daemon runs: abandoned at the start. */
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_start(fx->failover, "r1", NULL, false, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(member(result, "network.guest_ip.state"), ==, VR_FAILOVER_NET_IP_PENDING);
    g_clear_pointer(&fx->failover, vr_failover_free);
    {
        g_autoptr(virDomain) dom = virDomainLookupByName(fx->conn, fx->standby_name);

        g_assert_cmpint(virDomainDestroy(dom), ==, 0);
    }
    failover_restart(fx);
    g_clear_pointer(&recorded, json_object_put);
    recorded = recorded_network(fx, "failover");
    g_test_message("abandoned: %s", json_object_to_json_string(recorded));
    g_assert_cmpstr(member(recorded, "guest_ip.state"), ==, VR_FAILOVER_NET_IP_ABANDONED);
    g_assert_nonnull(strstr(member(recorded, "guest_ip.reason"), "no longer runs"));
    g_assert_cmpuint(guest_ip_intents(fx), ==, 0);
    g_clear_pointer(&result, json_object_put);
    result = vr_failover_cancel(fx->failover, "r1", false, &error);
    g_assert_no_error(error);
}

int
main(int argc, char **argv)
{
    int rc;

    g_test_init(&argc, &argv, NULL);
    g_unsetenv("VR_FAILPOINT");
    virSetErrorFunc(NULL, quiet_libvirt);
    pki = vr_test_make_pki(&pki_skip_why);

#define ADD(path, func) \
    g_test_add("/failover-net/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("unplanned", test_unplanned);
    ADD("test", test_test_failover);
    ADD("no-agent-channel", test_no_agent_channel);
    ADD("resume", test_resume);
#undef ADD

    rc = g_test_run();
    g_free(pki);
    g_free(pki_skip_why);
    return rc;
}
