/*
 * test-failover-net.c: the pure parts of plugin/vr-failover-net.h: network mapping of a
 * failed-over domain's XML (XML in, XML out) and the commands of failover TCP/IP
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include <glib.h>

#include "vr-config.h"
#include "vr-failover-net.h"
#include "vr-qmp-json.h"

/* A standby as vr-standby.c defines it: relationship r1 of primary 'web', three NICs. */
static const char standby_xml[] =
    "<domain type='qemu'><name>web-replica</name>"
    "<metadata><vr:standby xmlns:vr='https://virt-replica.org/xmlns/standby/1' "
    "relationship='r1' primary-name='web' primary-uuid='3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d' "
    "epoch='1' state='replica'>"
    "<vr:interface index='0' mac='52:54:00:00:00:01' type='network' source='prod'/>"
    "<vr:interface index='1' mac='52:54:00:00:00:02' type='network' source='backup'/>"
    "<vr:interface index='2' mac='52:54:00:00:00:03' type='bridge' source='br0'/>"
    "</vr:standby></metadata>"
    "<devices>"
    "<interface type='network'><mac address='52:54:00:00:00:01'/>"
    "<source network='dr-prod' portgroup='web'/><model type='virtio'/></interface>"
    "<interface type='network'><mac address='52:54:00:00:00:02'/>"
    "<source network='backup'/><model type='virtio'/></interface>"
    "<interface type='bridge'><mac address='52:54:00:00:00:03'/>"
    "<source bridge='br0'/><model type='virtio'/></interface>"
    "<interface type='user'><mac address='52:54:00:00:00:04'/></interface>"
    "</devices></domain>";

/* What exists on the test's "host": a comma-separated list of "network:NAME"/"bridge:NAME". */
static bool
exists(const char *kind, const char *name, gpointer data)
{
    g_autofree char *item = g_strdup_printf(",%s:%s,", kind, name);
    g_autofree char *list = g_strdup_printf(",%s,", (const char *)data);

    return strstr(list, item) != NULL;
}

static VrConfig *
config(const char *text)
{
    g_autoptr(GError) error = NULL;
    VrConfig *cfg = vr_config_load_data(text, -1, "t.conf", &error);

    g_assert_no_error(error);
    return cfg;
}

/* The interface with @mac in @xml, as text. (transfer full) */
static char *
iface_of(const char *xml, const char *mac)
{
    g_autofree char *needle = g_strdup_printf("<mac address=\"%s\"/>", mac);
    const char *at = strstr(xml, needle);
    const char *start, *end;

    g_assert_nonnull(at);
    start = g_strrstr_len(xml, at - xml, "<interface");
    end = strstr(at, "</interface>");
    g_assert_nonnull(start);
    g_assert_nonnull(end);
    return g_strndup(start, end - start);
}

static json_object *
entry_of(json_object *report, guint i)
{
    g_assert_cmpuint(json_object_array_length(report), >, i);
    return json_object_array_get_idx(report, i);
}

static const char *
member(json_object *obj, const char *key)
{
    json_object *value = NULL;

    json_object_object_get_ex(obj, key, &value);
    return value != NULL ? json_object_get_string(value) : NULL;
}

/* The precedence: [interface:MAC], [network-map:RELATIONSHIP], [network-map], same name. */
static void
test_map_rules(void)
{
    g_autoptr(VrConfig) cfg = config("[network-map]\n"
                                     "prod = dr-prod\n"
                                     "backup = dr-backup\n"
                                     "bridge:br0 = dr-lan\n"
                                     "[network-map:r1]\n"
                                     "backup = dr-web-backup\n"
                                     "[interface:52:54:00:00:00:01]\n"
                                     "bridge = br-special\n");
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) report = NULL;
    g_autofree char *out = vr_failover_net_map_xml(
        standby_xml, cfg, exists, "bridge:br-special,network:dr-web-backup,network:dr-lan", &report,
        &error);
    g_autofree char *i1 = NULL, *i2 = NULL, *i3 = NULL, *i4 = NULL;

    g_assert_no_error(error);
    g_assert_nonnull(out);
    i1 = iface_of(out, "52:54:00:00:00:01");
    i2 = iface_of(out, "52:54:00:00:00:02");
    i3 = iface_of(out, "52:54:00:00:00:03");
    i4 = iface_of(out, "52:54:00:00:00:04");
    /* Per MAC: a network becomes a bridge; its portgroup went with the old source. */
    g_assert_nonnull(strstr(i1, "<interface type=\"bridge\">"));
    g_assert_nonnull(strstr(i1, "<source bridge=\"br-special\"/>"));
    g_assert_null(strstr(i1, "portgroup"));
    g_assert_nonnull(strstr(i1, "<model type=\"virtio\"/>"));
    /* Per relationship, over the host-wide map. */
    g_assert_nonnull(strstr(i2, "<source network=\"dr-web-backup\"/>"));
    /* A bridge of the primary mapped to a network. */
    g_assert_nonnull(strstr(i3, "<interface type=\"network\">"));
    g_assert_nonnull(strstr(i3, "<source network=\"dr-lan\"/>"));
    /* Not ours to map. */
    g_assert_nonnull(strstr(i4, "<interface type=\"user\">"));

    g_assert_cmpuint(json_object_array_length(report), ==, 3);
    g_assert_cmpstr(member(entry_of(report, 0), "rule"), ==, "interface:52:54:00:00:00:01");
    g_assert_cmpstr(member(entry_of(report, 0), "primary"), ==, "network:prod");
    g_assert_cmpstr(member(entry_of(report, 0), "source"), ==, "bridge:br-special");
    g_assert_cmpstr(member(entry_of(report, 1), "rule"), ==, "network-map:r1");
    g_assert_cmpstr(member(entry_of(report, 2), "rule"), ==, "network-map");
    g_assert_cmpstr(member(entry_of(report, 2), "source"), ==, "network:dr-lan");
    for (guint i = 0; i < 3; i++)
        g_assert_null(member(entry_of(report, i), "warning"));
}

/* [network-map:NAME] by the primary's domain name; unmapped names stay; missing: unplugged. */
static void
test_map_missing(void)
{
    g_autoptr(VrConfig) cfg = config("[network-map:web]\n"
                                     "prod = dr-prod\n");
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) report = NULL;
    g_autofree char *out = vr_failover_net_map_xml(
        standby_xml, cfg, exists, "network:dr-prod,network:backup", &report, &error);
    g_autofree char *i1 = NULL, *i2 = NULL, *i3 = NULL;
    const char *warning;

    g_assert_no_error(error);
    i1 = iface_of(out, "52:54:00:00:00:01");
    i2 = iface_of(out, "52:54:00:00:00:02");
    i3 = iface_of(out, "52:54:00:00:00:03");
    /* The same source as before: left as it was, portgroup included. */
    g_assert_nonnull(strstr(i1, "<source network=\"dr-prod\" portgroup=\"web\"/>"));
    g_assert_nonnull(strstr(i2, "<source network=\"backup\"/>"));
    /* br0 does not exist here: a tap of its own, link down, MAC and model kept. */
    g_assert_nonnull(strstr(i3, "<interface type=\"ethernet\">"));
    g_assert_null(strstr(i3, "<source"));
    g_assert_nonnull(strstr(i3, "<link state=\"down\"/>"));
    g_assert_nonnull(strstr(i3, "<model type=\"virtio\"/>"));
    g_assert_cmpstr(member(entry_of(report, 0), "rule"), ==, "network-map:web");
    g_assert_cmpstr(member(entry_of(report, 1), "rule"), ==, "same-name");
    g_assert_false(
        json_object_get_boolean(json_object_object_get(entry_of(report, 2), "connected")));
    g_assert_null(member(entry_of(report, 2), "source"));
    warning = member(entry_of(report, 2), "warning");
    g_assert_nonnull(warning);
    g_assert_cmpstr(warning, ==,
                    "interface 52:54:00:00:00:03: bridge 'br0' (bridge:br0 by same-name) does "
                    "not exist on this host: the interface is left unconnected (link down)");

    /* A later failover, once br0 exists: connected again, the link-down gone. */
    {
        g_autoptr(json_object) again_report = NULL;
        g_autofree char *again = vr_failover_net_map_xml(
            out, cfg, exists, "network:dr-prod,network:backup,bridge:br0", &again_report, &error);
        g_autofree char *i3b = NULL;

        g_assert_no_error(error);
        i3b = iface_of(again, "52:54:00:00:00:03");
        g_assert_nonnull(strstr(i3b, "<interface type=\"bridge\">"));
        g_assert_nonnull(strstr(i3b, "<source bridge=\"br0\"/>"));
        g_assert_null(strstr(i3b, "<link"));
        g_assert_null(member(entry_of(again_report, 2), "warning"));
    }
}

/* A standby without recorded sources (defined by an older version): its own sources. */
static void
test_map_no_record(void)
{
    const char *xml = "<domain><name>x</name><devices>"
                      "<interface type='network'><source network='lan'/></interface>"
                      "</devices></domain>";
    g_autoptr(VrConfig) cfg = config("[network-map]\nlan = dr-lan\n");
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) report = NULL;
    g_autofree char *out = vr_failover_net_map_xml(xml, cfg, NULL, NULL, &report, &error);

    g_assert_no_error(error);
    g_assert_nonnull(strstr(out, "<source network=\"dr-lan\"/>"));
    g_assert_null(member(entry_of(report, 0), "mac"));

    g_clear_pointer(&out, g_free);
    out = vr_failover_net_map_xml("<nodomain/>", cfg, NULL, NULL, &report, &error);
    g_assert_null(out);
    g_assert_nonnull(error);
}

static char *
joined(GPtrArray *commands)
{
    g_autoptr(GString) out = g_string_new(NULL);

    for (guint i = 0; i < commands->len; i++) {
        g_autofree char *line = g_strjoinv(" ", commands->pdata[i]);

        g_string_append_printf(out, "%s\n", line);
    }
    return g_string_free(g_steal_pointer(&out), FALSE);
}

static void
test_guest_commands(void)
{
    VrConfigInterface both = {
        .mac = "52:54:00:00:00:01",
        .ipv4 = "192.0.2.10/24",
        .ipv4_gateway = "192.0.2.1",
        .ipv6 = "2001:db8::10/64",
        .dns = "192.0.2.53, 2001:db8::53",
    };
    VrConfigInterface v4 = { .mac = "52:54:00:00:00:02", .ipv4 = "198.51.100.7/25" };
    g_autoptr(GPtrArray) c1 = vr_failover_net_guest_commands(&both, "enp1s0");
    g_autoptr(GPtrArray) c2 = vr_failover_net_guest_commands(&v4, "eth1");
    g_autofree char *t1 = joined(c1);
    g_autofree char *t2 = joined(c2);

    g_assert_cmpstr(t1, ==,
                    "ip link set dev enp1s0 up\n"
                    "ip -4 address flush dev enp1s0 scope global\n"
                    "ip -4 address add 192.0.2.10/24 dev enp1s0\n"
                    "ip -4 route replace default via 192.0.2.1 dev enp1s0\n"
                    "ip -6 address flush dev enp1s0 scope global\n"
                    "ip -6 address add 2001:db8::10/64 dev enp1s0\n"
                    "resolvectl dns enp1s0 192.0.2.53 2001:db8::53\n");
    g_assert_cmpstr(t2, ==,
                    "ip link set dev eth1 up\n"
                    "ip -4 address flush dev eth1 scope global\n"
                    "ip -4 address add 198.51.100.7/25 dev eth1\n");
}

/* Failover TCP/IP from a failover request: checked as the configuration's groups are. */
static void
test_request(void)
{
    static const struct {
        const char *json;
        const char *message; /* NULL: accepted */
    } cases[] = {
        { "{\"52:54:00:00:00:01\": {\"ipv4\": \"192.0.2.10/24\", \"dns\": \"192.0.2.53\"}}", NULL },
        { "{}", NULL },
        { "[]", "\"interfaces\" is an object of MAC addresses" },
        { "{\"52:54:00:00:00:01\": {\"ipv4\": \"192.0.2.10\"}}",
          "failover request:2: [interface:52:54:00:00:00:01] ipv4: '192.0.2.10' is not an IPv4 "
          "address with its prefix length (192.0.2.10/24)" },
        { "{\"52:54:00:00:00:01\": {\"ipv4-gateway\": \"192.0.2.1\"}}",
          "failover request:2: [interface:52:54:00:00:00:01] ipv4-gateway: needs ipv4 (the "
          "interface's address)" },
        { "{\"52:54:00:00:00:01\": {\"network\": \"x\"}}",
          "failover request: interface 52:54:00:00:00:01: 'network' is not one of ipv4, "
          "ipv4-gateway, ipv6, ipv6-gateway, dns with a string value" },
        { "{\"52:54:00:00:00:01\": {\"ipv4\": 1}}",
          "failover request: interface 52:54:00:00:00:01: 'ipv4' is not one of ipv4, "
          "ipv4-gateway, ipv6, ipv6-gateway, dns with a string value" },
        { "{\"52:54]\\n[daemon\": {}}",
          "failover request: '52:54]\n[daemon' is not a MAC address (six hexadecimal octets "
          "separated by ':')" },
        { "{\"52:54:00:00:00:0\": {}}",
          "failover request: '52:54:00:00:00:0' is not a MAC address (six hexadecimal octets "
          "separated by ':')" },
        /* A value cannot smuggle a line into the key file. */
        { "{\"52:54:00:00:00:01\": {\"dns\": \"192.0.2.53\\n[daemon]\\nlog-level = debug\"}}",
          "failover request:2: [interface:52:54:00:00:00:01] dns: "
          "'192.0.2.53\n[daemon]\nlog-level' "
          "is not an IP address" },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(json_object) obj = json_tokener_parse(cases[i].json);
        g_autoptr(GError) error = NULL;
        g_autoptr(VrConfig) request = NULL;

        g_assert_nonnull(obj);
        g_test_message("case %u: %s", i, cases[i].json);
        request = vr_failover_net_parse_request(obj, &error);
        if (cases[i].message == NULL) {
            g_assert_no_error(error);
            g_assert_nonnull(request);
            continue;
        }
        g_assert_null(request);
        g_assert_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID);
        g_assert_cmpstr(error->message, ==, cases[i].message);
    }
    {
        g_autoptr(json_object) obj = json_tokener_parse(cases[0].json);
        g_autoptr(VrConfig) request = vr_failover_net_parse_request(obj, NULL);
        VrConfigInterface *iface = g_hash_table_lookup(request->interfaces, "52:54:00:00:00:01");

        g_assert_nonnull(iface);
        g_assert_cmpstr(iface->ipv4, ==, "192.0.2.10/24");
        g_assert_cmpstr(iface->dns, ==, "192.0.2.53");
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/failover-net/map/rules", test_map_rules);
    g_test_add_func("/failover-net/map/missing", test_map_missing);
    g_test_add_func("/failover-net/map/no-record", test_map_no_record);
    g_test_add_func("/failover-net/guest-commands", test_guest_commands);
    g_test_add_func("/failover-net/request", test_request);
    return g_test_run();
}
