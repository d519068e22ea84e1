/*
 * test-config.c: the daemon's configuration file (plugin/vr-config.h)
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "vr-config.h"

#define ORIGIN "t.conf"

/* Every key of every group, none at its default. */
static const char full_file[] =
    "# a comment\n"
    "[daemon]\n"
    "state-dir = /srv/vr/state\n"
    "socket = /srv/vr/api.sock\n"
    "socket-group = libvirt\n"
    "libvirt-uri = qemu+unix:///system?socket=/run/libvirt/libvirt-sock\n"
    "log-level = debug\n"
    "max-active-transfers = 64\n"
    "monitoring-interval = 7200\n"
    "history-days = 90\n"
    "\n"
    "[certificates]\n"
    "ca = /etc/pki/vr/ca.pem\n"
    "cert = /etc/pki/vr/host.pem\n"
    "key = /etc/pki/vr/host-key.pem\n"
    "crl = /etc/pki/vr/crl.pem\n"
    "check-revocation = false\n"
    "\n"
    "[primary]\n"
    "network = network:replication\n"
    "bandwidth = 10M\n"
    "bandwidth-schedule = Mon-Fri 08:00-18:00 1M, Sat-Sun 00:00-24:00 unlimited\n"
    "default-frequency = 30\n"
    "default-recovery-points = 24\n"
    "compression = off\n"
    "rpo-critical-factor = 5\n"
    "\n"
    "[replica]\n"
    "enabled = true\n"
    "listen = address:fd00:0::1\n"
    "port = 443\n"
    "server-name = replica1.dc2.example\n"
    "allow-any = false\n"
    "default-storage = /srv/replicas/any\n"
    "default-trust-group = any\n"
    "point-interval = 0\n"
    "standby-name-rule = %n-replica\n"
    "max-body-size = 64G\n"
    "test-network = dr-test\n"
    "guest-agent-wait = 60\n"
    "\n"
    "[authorization:*.dc1.example]\n"
    "storage = /srv/replicas/dc1\n"
    "trust-group = dc1\n"
    "\n"
    "[authorization:primary9.example]\n"
    "storage = /srv/replicas/p9\n"
    "\n"
    "[network-map]\n"
    "default = dr-default\n"
    "lan = dr lan\n"
    "bridge:br0 = bridge:br-dr\n"
    "network:dmz = bridge:br-dmz\n"
    "\n"
    "[network-map:web]\n"
    "default = network:dr-web\n"
    "\n"
    "[interface:52:54:00:AA:bb:01]\n"
    "network = dr-special\n"
    "ipv4 = 192.0.2.10/24\n"
    "ipv4-gateway = 192.0.2.1\n"
    "ipv6 = 2001:db8::10/64\n"
    "ipv6-gateway = 2001:db8::1\n"
    "dns = 192.0.2.53, 2001:db8::53\n"
    "\n"
    "[interface:52:54:00:aa:bb:02]\n"
    "bridge = br-dr\n";

/* The keys of full_file, for the documentation test. */
static const char *const all_keys[] = {
    "state-dir",
    "socket",
    "socket-group",
    "libvirt-uri",
    "log-level",
    "max-active-transfers",
    "monitoring-interval",
    "history-days",
    "ca",
    "cert",
    "key",
    "crl",
    "check-revocation",
    "network",
    "bandwidth",
    "bandwidth-schedule",
    "default-frequency",
    "default-recovery-points",
    "compression",
    "rpo-critical-factor",
    "enabled",
    "listen",
    "port",
    "server-name",
    "allow-any",
    "default-storage",
    "default-trust-group",
    "point-interval",
    "standby-name-rule",
    "max-body-size",
    "test-network",
    "guest-agent-wait",
    "storage",
    "trust-group",
    "bridge",
    "ipv4",
    "ipv4-gateway",
    "ipv6",
    "ipv6-gateway",
    "dns",
};

static VrConfig *
load_ok(const char *data)
{
    g_autoptr(GError) error = NULL;
    VrConfig *cfg = vr_config_load_data(data, -1, ORIGIN, &error);

    g_assert_no_error(error);
    g_assert_nonnull(cfg);
    return cfg;
}

/* The problems vr_config_check_data() finds in @data. (transfer full) */
static GPtrArray *
problems_of(const char *data, VrConfigCheckFlags flags)
{
    GPtrArray *problems = g_ptr_array_new_with_free_func(g_free);
    bool ok = vr_config_check_data(data, -1, ORIGIN, flags, problems);

    g_assert_cmpint(ok, ==, problems->len == 0);
    for (guint i = 0; i < problems->len; i++)
        g_test_message("problem: %s", (char *)g_ptr_array_index(problems, i));
    return problems;
}

static void
assert_rate_at(VrRateSchedule *schedule, int day, int hour, uint64_t rate)
{
    /* 2024-01-01 was a Monday. */
    g_autoptr(GDateTime) when = g_date_time_new_local(2024, 1, day, hour, 0, 0);

    g_assert_cmpuint(vr_rate_schedule_rate_at(schedule, when), ==, rate);
}

static void
test_full(void)
{
    g_autoptr(VrConfig) cfg = load_ok(full_file);
    VrConfigAuthzEntry *e;

    g_assert_cmpstr(cfg->origin, ==, ORIGIN);
    g_assert_cmpstr(cfg->daemon.state_dir, ==, "/srv/vr/state");
    g_assert_cmpstr(cfg->daemon.socket, ==, "/srv/vr/api.sock");
    g_assert_cmpstr(cfg->daemon.socket_group, ==, "libvirt");
    g_assert_cmpstr(cfg->daemon.libvirt_uri, ==,
                    "qemu+unix:///system?socket=/run/libvirt/libvirt-sock");
    g_assert_cmpint(cfg->daemon.log_level, ==, VR_CONFIG_LOG_DEBUG);
    g_assert_cmpuint(cfg->daemon.max_active_transfers, ==, 64);
    g_assert_cmpuint(cfg->daemon.monitoring_interval, ==, 7200);
    g_assert_cmpuint(cfg->daemon.history_days, ==, 90);

    g_assert_cmpstr(cfg->certificates.ca, ==, "/etc/pki/vr/ca.pem");
    g_assert_cmpstr(cfg->certificates.cert, ==, "/etc/pki/vr/host.pem");
    g_assert_cmpstr(cfg->certificates.key, ==, "/etc/pki/vr/host-key.pem");
    g_assert_cmpstr(cfg->certificates.crl, ==, "/etc/pki/vr/crl.pem");
    g_assert_false(cfg->certificates.check_revocation);

    g_assert_cmpstr(cfg->primary.network, ==, "network:replication");
    g_assert_cmpuint(cfg->primary.bandwidth, ==, 10 * 1024 * 1024);
    g_assert_cmpstr(cfg->primary.bandwidth_schedule, ==,
                    "Mon-Fri 08:00-18:00 1M, Sat-Sun 00:00-24:00 unlimited");
    g_assert_nonnull(cfg->primary.schedule);
    assert_rate_at(cfg->primary.schedule, 1, 10, 1024 * 1024);      /* Monday 10:00 */
    assert_rate_at(cfg->primary.schedule, 3, 20, 10 * 1024 * 1024); /* Wednesday 20:00 */
    assert_rate_at(cfg->primary.schedule, 6, 12, 0);                /* Saturday */
    g_assert_cmpuint(cfg->primary.default_frequency, ==, 30);
    g_assert_cmpuint(cfg->primary.default_recovery_points, ==, 24);
    g_assert_false(cfg->primary.compression);
    g_assert_cmpuint(cfg->primary.rpo_critical_factor, ==, 5);

    g_assert_true(cfg->replica.enabled);
    g_assert_cmpstr(cfg->replica.listen, ==, "address:fd00:0::1");
    g_assert_cmpuint(cfg->replica.port, ==, 443);
    g_assert_cmpstr(cfg->replica.server_name, ==, "replica1.dc2.example");
    g_assert_false(cfg->replica.allow_any);
    g_assert_cmpstr(cfg->replica.default_storage, ==, "/srv/replicas/any");
    g_assert_cmpstr(cfg->replica.default_trust_group, ==, "any");
    g_assert_cmpuint(cfg->replica.point_interval, ==, 0);
    g_assert_cmpstr(cfg->replica.standby_name_rule, ==, "%n-replica");
    g_assert_cmpuint(cfg->replica.max_body_size, ==, G_GUINT64_CONSTANT(64) << 30);
    g_assert_cmpstr(cfg->replica.test_network, ==, "dr-test");

    g_assert_cmpuint(cfg->replica.authorizations->len, ==, 2);
    e = g_ptr_array_index(cfg->replica.authorizations, 0);
    g_assert_cmpstr(e->pattern, ==, "*.dc1.example");
    g_assert_cmpstr(e->storage, ==, "/srv/replicas/dc1");
    g_assert_cmpstr(e->trust_group, ==, "dc1");
    e = g_ptr_array_index(cfg->replica.authorizations, 1);
    g_assert_cmpstr(e->pattern, ==, "primary9.example");
    g_assert_cmpstr(e->storage, ==, "/srv/replicas/p9");
    g_assert_cmpstr(e->trust_group, ==, "default");

    g_assert_cmpuint(cfg->replica.guest_agent_wait, ==, 60);
    g_assert_cmpuint(g_hash_table_size(cfg->network_map), ==, 4);
    g_assert_cmpstr(g_hash_table_lookup(cfg->network_map, "default"), ==, "dr-default");
    g_assert_cmpstr(g_hash_table_lookup(cfg->network_map, "lan"), ==, "dr lan");
    g_assert_cmpstr(g_hash_table_lookup(cfg->network_map, "bridge:br0"), ==, "bridge:br-dr");
    g_assert_cmpstr(g_hash_table_lookup(cfg->network_map, "dmz"), ==, "bridge:br-dmz");
    g_assert_cmpuint(g_hash_table_size(cfg->network_maps), ==, 1);
    g_assert_cmpstr(g_hash_table_lookup(g_hash_table_lookup(cfg->network_maps, "web"), "default"),
                    ==, "dr-web");
    g_assert_cmpuint(g_hash_table_size(cfg->interfaces), ==, 2);
    {
        VrConfigInterface *i1 = g_hash_table_lookup(cfg->interfaces, "52:54:00:aa:bb:01");
        VrConfigInterface *i2 = g_hash_table_lookup(cfg->interfaces, "52:54:00:aa:bb:02");

        g_assert_nonnull(i1);
        g_assert_cmpstr(i1->mac, ==, "52:54:00:aa:bb:01");
        g_assert_cmpstr(i1->network, ==, "dr-special");
        g_assert_null(i1->bridge);
        g_assert_cmpstr(i1->ipv4, ==, "192.0.2.10/24");
        g_assert_cmpstr(i1->ipv4_gateway, ==, "192.0.2.1");
        g_assert_cmpstr(i1->ipv6, ==, "2001:db8::10/64");
        g_assert_cmpstr(i1->ipv6_gateway, ==, "2001:db8::1");
        g_assert_cmpstr(i1->dns, ==, "192.0.2.53, 2001:db8::53");
        g_assert_nonnull(i2);
        g_assert_cmpstr(i2->bridge, ==, "br-dr");
        g_assert_null(i2->ipv4);
    }
}

static void
assert_defaults(const VrConfig *cfg)
{
    g_assert_cmpstr(cfg->daemon.state_dir, ==, "/var/lib/virt-replica");
    g_assert_cmpstr(cfg->daemon.socket, ==, "/run/virt-replica/virt-replicad.sock");
    g_assert_null(cfg->daemon.socket_group);
    g_assert_cmpstr(cfg->daemon.libvirt_uri, ==, "qemu:///system");
    g_assert_cmpint(cfg->daemon.log_level, ==, VR_CONFIG_LOG_INFO);
    g_assert_cmpuint(cfg->daemon.max_active_transfers, ==, 4);
    g_assert_cmpuint(cfg->daemon.monitoring_interval, ==, 3600);
    g_assert_cmpuint(cfg->daemon.history_days, ==, 30);

    g_assert_null(cfg->certificates.ca);
    g_assert_null(cfg->certificates.cert);
    g_assert_null(cfg->certificates.key);
    g_assert_null(cfg->certificates.crl);
    g_assert_true(cfg->certificates.check_revocation);

    g_assert_null(cfg->primary.network);
    g_assert_cmpuint(cfg->primary.bandwidth, ==, 0);
    g_assert_null(cfg->primary.bandwidth_schedule);
    g_assert_null(cfg->primary.schedule);
    g_assert_cmpuint(cfg->primary.default_frequency, ==, 300);
    g_assert_cmpuint(cfg->primary.default_recovery_points, ==, 4);
    g_assert_true(cfg->primary.compression);
    g_assert_cmpuint(cfg->primary.rpo_critical_factor, ==, 3);

    g_assert_false(cfg->replica.enabled);
    g_assert_null(cfg->replica.listen);
    g_assert_cmpuint(cfg->replica.port, ==, 8443);
    g_assert_null(cfg->replica.server_name);
    g_assert_false(cfg->replica.allow_any);
    g_assert_null(cfg->replica.default_storage);
    g_assert_cmpstr(cfg->replica.default_trust_group, ==, "default");
    g_assert_cmpuint(cfg->replica.point_interval, ==, 3600);
    g_assert_null(cfg->replica.standby_name_rule);
    g_assert_cmpuint(cfg->replica.max_body_size, ==, G_MAXUINT64);
    g_assert_null(cfg->replica.test_network);
    g_assert_nonnull(cfg->replica.authorizations);
    g_assert_cmpuint(cfg->replica.authorizations->len, ==, 0);
    g_assert_nonnull(cfg->network_map);
    g_assert_cmpuint(g_hash_table_size(cfg->network_map), ==, 0);
}

static void
test_defaults(void)
{
    /* Groups present, keys absent; empty values of optional keys leave them unset. */
    g_autoptr(VrConfig) cfg = load_ok("[daemon]\n"
                                      "socket-group =\n"
                                      "[certificates]\n"
                                      "crl =\n"
                                      "[primary]\n"
                                      "network =   \n"
                                      "bandwidth-schedule =\n"
                                      "[replica]\n"
                                      "standby-name-rule =\n"
                                      "[network-map]\n");

    assert_defaults(cfg);
}

static void
test_empty(void)
{
    static const char *const files[] = { "", "\n\n", "# nothing but comments\n  # indented\n" };

    for (guint i = 0; i < G_N_ELEMENTS(files); i++) {
        g_autoptr(VrConfig) cfg = load_ok(files[i]);
        g_autoptr(GPtrArray) problems = problems_of(files[i], VR_CONFIG_CHECK_DEFAULT);

        assert_defaults(cfg);
        g_assert_cmpuint(problems->len, ==, 0);
    }
    {
        /* With a length: the data need not be NUL-terminated. */
        g_autoptr(GError) error = NULL;
        g_autoptr(VrConfig) cfg = vr_config_load_data("[daemon]\nport = 1", 9, ORIGIN, &error);

        g_assert_no_error(error);
        assert_defaults(cfg);
    }
}

/* Repeated keys and groups: GKeyFile's rules, the last value wins, groups merge. */
static void
test_repeated(void)
{
    g_autoptr(VrConfig) cfg = load_ok("[replica]\n"
                                      "port = 1\n"
                                      "port = 2\n"
                                      "[daemon]\n"
                                      "history-days = 7\n"
                                      "[replica]\n"
                                      "point-interval = 60\n"
                                      "port = 3\n"
                                      "[network-map]\n"
                                      "a = b\n"
                                      "a = c\n");
    g_autoptr(GPtrArray) problems = NULL;

    g_assert_cmpuint(cfg->replica.port, ==, 3);
    g_assert_cmpuint(cfg->replica.point_interval, ==, 60);
    g_assert_cmpuint(cfg->daemon.history_days, ==, 7);
    g_assert_cmpstr(g_hash_table_lookup(cfg->network_map, "a"), ==, "c");

    /* A bad repeated key is reported once, at its last line. */
    problems = problems_of("[replica]\nport = x\nport = y\n", VR_CONFIG_CHECK_DEFAULT);
    g_assert_cmpuint(problems->len, ==, 1);
    g_assert_cmpstr(g_ptr_array_index(problems, 0), ==,
                    ORIGIN ":3: [replica] port: 'y' is not a port number (1-65535)");
}

/* Values: white space around them, escapes, booleans as GKeyFile takes them, sizes. */
static void
test_values(void)
{
    g_autoptr(VrConfig) a = load_ok("[replica]\n"
                                    "  port   =   9000  \t\n"
                                    "enabled = 1\n"
                                    "listen = interface:br-repl\n"
                                    "server-name = r\n"
                                    "standby-name-rule = %n\\s%%\\s\n"
                                    "max-body-size = 0\n"
                                    "[certificates]\n"
                                    "ca = /a\\sb\n"
                                    "cert = /c\n"
                                    "key = /k\n"
                                    "check-revocation = 0\n"
                                    "[primary]\n"
                                    "compression = true\n"
                                    "bandwidth = 1500\n");
    g_autoptr(VrConfig) b = load_ok("[replica]\n"
                                    "max-body-size = 3k\n"
                                    "[primary]\n"
                                    "compression = 0\n"
                                    "bandwidth = 0\n");
    g_autoptr(VrConfig) c = load_ok("[replica]\nmax-body-size = 1T\n[primary]\ncompression = on\n");

    g_assert_cmpuint(a->replica.port, ==, 9000);
    g_assert_true(a->replica.enabled);
    g_assert_cmpstr(a->replica.standby_name_rule, ==, "%n %% ");
    g_assert_cmpuint(a->replica.max_body_size, ==, G_MAXUINT64);
    g_assert_cmpstr(a->certificates.ca, ==, "/a b");
    g_assert_false(a->certificates.check_revocation);
    g_assert_true(a->primary.compression);
    g_assert_cmpuint(a->primary.bandwidth, ==, 1500);
    g_assert_cmpuint(b->replica.max_body_size, ==, 3 * 1024);
    g_assert_false(b->primary.compression);
    g_assert_cmpuint(c->replica.max_body_size, ==, G_GUINT64_CONSTANT(1) << 40);
    g_assert_true(c->primary.compression);

    for (VrConfigLogLevel l = VR_CONFIG_LOG_ERROR; l <= VR_CONFIG_LOG_DEBUG; l++) {
        g_autofree char *text =
            g_strdup_printf("[daemon]\nlog-level = %s\n", vr_config_log_level_to_string(l));
        g_autoptr(VrConfig) cfg = load_ok(text);

        g_assert_cmpint(cfg->daemon.log_level, ==, l);
    }
}

typedef struct {
    const char *data;
    VrConfigErrorCode code;
    const char *message; /* the one problem, exactly (without "t.conf") */
} ErrorCase;

#define CERTS "[certificates]\nca = /ca\ncert = /c\nkey = /k\ncheck-revocation = false\n"

static const ErrorCase error_cases[] = {
    /* Not a key file. */
    { "port = 1\n[replica]\n", VR_CONFIG_ERROR_SYNTAX,
      ":1: 'port = 1' comes before the first [group] line" },
    { "[daemon]\n\nstate-dir\n", VR_CONFIG_ERROR_SYNTAX,
      ":3: 'state-dir' is not a [group] line, a key = value line or a # comment" },
    { "\xef\xbb\xbf[daemon]\n", VR_CONFIG_ERROR_SYNTAX,
      ":1: the file starts with a UTF-8 byte order mark, which GKeyFile does not take" },
    { "[daemon\n", VR_CONFIG_ERROR_SYNTAX,
      ":1: '[daemon' is not a [group] line, a key = value line or a # comment" },

    /* Unknown groups and keys. */
    { "[daemon]\n[replika]\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replika]: unknown group, did you mean 'replica'?" },
    { "[Daemon]\n", VR_CONFIG_ERROR_INVALID,
      ":1: [Daemon]: unknown group, did you mean 'daemon'?" },
    { "[storage]\nx = 1\n", VR_CONFIG_ERROR_INVALID,
      ":1: [storage]: unknown group; the groups are [daemon], [certificates], [primary], "
      "[replica], [network-map], [network-map:DOMAIN], [interface:MAC] and "
      "[authorization:PATTERN]" },
    { "[authorization]\nstorage = /s\n", VR_CONFIG_ERROR_INVALID,
      ":1: [authorization]: an authorization group names the primaries it applies to: "
      "[authorization:PATTERN]" },
    { "[replica]\nprot = 1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] prot: unknown key, did you mean 'port'?" },
    { "[certificates]\nprivate-key = /k\n", VR_CONFIG_ERROR_INVALID,
      ":2: [certificates] private-key: unknown key; [certificates] has ca, cert, key, crl, "
      "check-revocation" },
    { "[replica]\nport[de] = 1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] port[de]: unknown key, did you mean 'port'?" },
    { "[replica]\nsize = 1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] size: unknown key; [replica] has enabled, listen, port, server-name, "
      "allow-any, default-storage, default-trust-group, point-interval, standby-name-rule, "
      "max-body-size, test-network, guest-agent-wait" },
    { "[daemon]\nport = 1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] port: unknown key; [daemon] has state-dir, socket, socket-group, "
      "libvirt-uri, log-level, max-active-transfers, monitoring-interval, history-days" },
    { "[authorization:a.example]\nstorage = /s\nstorage-dir = /t\n", VR_CONFIG_ERROR_INVALID,
      ":3: [authorization:a.example] storage-dir: unknown key, did you mean 'storage'?" },

    /* [daemon] */
    { "[daemon]\nstate-dir = var/lib/vr\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] state-dir: 'var/lib/vr' is not an absolute path" },
    { "[daemon]\nstate-dir =\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] state-dir: '' is not an absolute path" },
    { "[daemon]\nsocket = vr.sock\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] socket: 'vr.sock' is not an absolute path" },
    { "[daemon]\nsocket = "
      "/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\n",
      VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] socket: '/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock' is longer than 107 bytes, the limit of a "
      "unix socket path" },
    { "[daemon]\nsocket-group = Domain Admins\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] socket-group: 'Domain Admins' is not a group name ([a-z_][a-z0-9_-]*, 32 "
      "bytes at most) or a group number" },
    { "[daemon]\nlibvirt-uri = qemu:///system bad\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] libvirt-uri: 'qemu:///system bad' is not a libvirt URI such as "
      "qemu:///system" },
    { "[daemon]\nlibvirt-uri = system\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] libvirt-uri: 'system' is not a libvirt URI such as qemu:///system" },
    { "[daemon]\nlog-level = verbose\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] log-level: 'verbose' is not a log level (error, warning, info or debug)" },
    { "[daemon]\nlog-level = DEBUG\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] log-level: 'DEBUG' is not a log level (error, warning, info or debug)" },
    { "[daemon]\nmax-active-transfers = 0\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] max-active-transfers: '0' is not a number of transfers (1-64)" },
    { "[daemon]\nmax-active-transfers = 65\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] max-active-transfers: '65' is not a number of transfers (1-64)" },
    { "[daemon]\nmax-active-transfers = 4 transfers\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] max-active-transfers: '4 transfers' is not a number of transfers (1-64)" },
    { "[daemon]\nmax-active-transfers = -1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] max-active-transfers: '-1' is not a number of transfers (1-64)" },
    { "[daemon]\nmax-active-transfers = 0x4\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] max-active-transfers: '0x4' is not a number of transfers (1-64)" },
    { "[daemon]\nmonitoring-interval = 9\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] monitoring-interval: '9' is not a number of seconds (10-604800)" },
    { "[daemon]\nhistory-days = 0\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] history-days: '0' is not a number of days (1-3650)" },

    /* [certificates] */
    { "[certificates]\nca = ca.pem\ncert = /c\nkey = /k\ncrl = /r\n", VR_CONFIG_ERROR_INVALID,
      ":2: [certificates] ca: 'ca.pem' is not an absolute path" },
    { "[certificates]\nca = /ca\ncert = ./c\nkey = /k\ncrl = /r\n", VR_CONFIG_ERROR_INVALID,
      ":3: [certificates] cert: './c' is not an absolute path" },
    { "[certificates]\nca = /ca\ncert = /c\nkey = ~/k\ncrl = /r\n", VR_CONFIG_ERROR_INVALID,
      ":4: [certificates] key: '~/k' is not an absolute path" },
    { "[certificates]\nca = /ca\ncert = /c\nkey = /k\ncrl = crl.pem\n", VR_CONFIG_ERROR_INVALID,
      ":5: [certificates] crl: 'crl.pem' is not an absolute path" },
    { "[certificates]\ncheck-revocation = yes\n", VR_CONFIG_ERROR_INVALID,
      ":2: [certificates] check-revocation: 'yes' is not a boolean (true, false, 1 or 0)" },
    { "[certificates]\ncheck-revocation = True\n", VR_CONFIG_ERROR_INVALID,
      ":2: [certificates] check-revocation: 'True' is not a boolean (true, false, 1 or 0)" },
    { "[certificates]\ncheck-revocation = false\nca = /ca\ncert = /c\n", VR_CONFIG_ERROR_INVALID,
      ":1: [certificates] key: required: ca, cert and key go together" },
    { "[certificates]\ncrl = /r\nkey = /k\nca = /ca\n", VR_CONFIG_ERROR_INVALID,
      ":1: [certificates] cert: required: ca, cert and key go together" },
    { "[certificates]\nca = /ca\ncert = /c\nkey = /k\n", VR_CONFIG_ERROR_INVALID,
      ":1: [certificates] crl: required while check-revocation is true (the CRL of the CA; "
      "check-revocation = false accepts revoked certificates)" },

    /* [primary] */
    { "[primary]\nnetwork = net:replication\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] network: replication network 'net:replication' is not network:NAME, "
      "interface:NAME, address:IP or an IP address" },
    { "[primary]\nbandwidth = 10 MB/s\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] bandwidth: rate '10 MB/s' is not a number of bytes per second with an "
      "optional K, M or G" },
    { "[primary]\nbandwidth-schedule = Mon 8-18 1M\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] bandwidth-schedule: hours '8-18' of schedule window 'Mon 8-18 1M' are not "
      "'HH:MM-HH:MM'" },
    { "[primary]\ndefault-frequency = 4\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] default-frequency: '4' is not a number of seconds (5-86400)" },
    { "[primary]\ndefault-frequency = 86401\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] default-frequency: '86401' is not a number of seconds (5-86400)" },
    { "[primary]\ndefault-frequency = 300s\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] default-frequency: '300s' is not a number of seconds (5-86400)" },
    { "[primary]\ndefault-recovery-points = 25\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] default-recovery-points: '25' is not a number of recovery points (0-24)" },
    { "[primary]\ncompression = zstd\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] compression: 'zstd' is not on or off" },
    { "[primary]\nrpo-critical-factor = 1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [primary] rpo-critical-factor: '1' is not a whole factor (2-100)" },

    /* [replica] */
    { "[replica]\nenabled = TRUE\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] enabled: 'TRUE' is not a boolean (true, false, 1 or 0)" },
    { "[replica]\nport = 70000\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] port: '70000' is not a port number (1-65535)" },
    { "[replica]\nport = 0\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] port: '0' is not a port number (1-65535)" },
    { "[replica]\nport = 8443 # the port\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] port: '8443 # the port' is not a port number (1-65535)" },
    { "[replica]\nserver-name = -replica.example\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] server-name: '-replica.example' is not a DNS name (labels of letters, "
      "digits and '-' separated by '.')" },
    { "[replica]\nserver-name = *.example\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] server-name: '*.example' is not a DNS name (labels of letters, digits and "
      "'-' separated by '.')" },
    { "[replica]\nserver-name = replica..example\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] server-name: 'replica..example' is not a DNS name (labels of letters, "
      "digits and '-' separated by '.')" },
    { "[replica]\nallow-any = 2\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] allow-any: '2' is not a boolean (true, false, 1 or 0)" },
    { "[replica]\ndefault-storage = srv/replicas\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] default-storage: 'srv/replicas' is not an absolute path" },
    { "[replica]\ndefault-trust-group = DC_1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] default-trust-group: trust group 'DC_1' of pattern '*' is not "
      "[a-z0-9-]{1,32}" },
    { "[replica]\ndefault-trust-group =\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] default-trust-group: trust group '' of pattern '*' is not "
      "[a-z0-9-]{1,32}" },
    { "[replica]\npoint-interval = 86401\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] point-interval: '86401' is not a number of seconds (0-86400)" },
    { "[replica]\nstandby-name-rule = standby\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] standby-name-rule: 'standby' has no '%n': every standby would get the same "
      "name" },
    { "[replica]\nstandby-name-rule = %h-%n\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] standby-name-rule: '%h-%n': only 'n' and '%' may follow '%'" },
    { "[replica]\nstandby-name-rule = dr/%n\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] standby-name-rule: 'dr/%n' holds '/' or a control character, which a "
      "domain name may not" },
    { "[replica]\nmax-body-size = 10X\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] max-body-size: '10X' is not a size (bytes with an optional K, M, G or T, "
      "or unlimited)" },
    { "[replica]\nmax-body-size = 1.5G\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] max-body-size: '1.5G' is not a size (bytes with an optional K, M, G or T, "
      "or unlimited)" },
    { "[replica]\nmax-body-size = 99999999999999999999\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] max-body-size: '99999999999999999999' is not a size (bytes with an "
      "optional K, M, G or T, or unlimited)" },
    { "[replica]\nmax-body-size = 16777216T\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] max-body-size: '16777216T' is not a size (bytes with an optional K, M, G "
      "or T, or unlimited)" },

    /* Rules between [replica] keys. */
    { CERTS "[replica]\nenabled = true\n", VR_CONFIG_ERROR_INVALID,
      ":6: [replica] listen: required when enabled is true: the replication network to listen "
      "on (network:NAME, interface:NAME or address:IP)" },
    { "[replica]\nenabled = true\nlisten = network:replication\n", VR_CONFIG_ERROR_INVALID,
      ": [certificates]: ca, cert and key are required when [replica] enabled is true" },
    { "[replica]\nallow-any = true\n", VR_CONFIG_ERROR_INVALID,
      ":1: [replica] default-storage: required when allow-any is true: where the replicas of "
      "any primary are stored" },
    { "[replica]\nallow-any = true\ndefault-storage = /srv/r\n"
      "[authorization:a.example]\nstorage = /srv/a\n"
      "[authorization:b.example]\nstorage = /srv/b\n",
      VR_CONFIG_ERROR_INVALID,
      ":2: [replica] allow-any: true, and the file has 2 [authorization:PATTERN] groups (the "
      "first is [authorization:a.example]): allow any authenticated primary or the table of "
      "authorizations, not both" },

    /* [authorization:PATTERN] */
    { "[authorization:a.*.*]\nstorage = /srv/a\n", VR_CONFIG_ERROR_INVALID,
      ":1: [authorization:a.*.*]: pattern 'a.*.*' is not a DNS name with at most one '*'" },
    { "[authorization:primary_1.example]\nstorage = /srv/a\n", VR_CONFIG_ERROR_INVALID,
      ":1: [authorization:primary_1.example]: pattern 'primary_1.example' is not a DNS name "
      "with at most one '*'" },
    { "[authorization:]\nstorage = /srv/a\n", VR_CONFIG_ERROR_INVALID,
      ":1: [authorization:]: pattern '' is not a DNS name with at most one '*'" },
    { "[authorization:a.example]\ntrust-group = a\n", VR_CONFIG_ERROR_INVALID,
      ":1: [authorization:a.example] storage: required: the storage root of the replicas of "
      "the primaries the pattern matches" },
    { "[authorization:a.example]\nstorage = srv/a\n", VR_CONFIG_ERROR_INVALID,
      ":2: [authorization:a.example] storage: 'srv/a' is not an absolute path" },
    { "[authorization:a.example]\nstorage = /srv/a\ntrust-group = Sales\n", VR_CONFIG_ERROR_INVALID,
      ":3: [authorization:a.example] trust-group: trust group 'Sales' of pattern 'a.example' is "
      "not [a-z0-9-]{1,32}" },
    { "[authorization:*.Example]\nstorage = /srv/a\n[authorization:*.example]\nstorage = /srv/b\n",
      VR_CONFIG_ERROR_INVALID,
      ":3: [authorization:*.example]: pattern '*.example' repeats [authorization:*.Example] "
      "(patterns compare without regard to case): the first match wins, so this group would "
      "never apply" },

    /* [network-map] */
    { "[network-map]\ndefault = dr/default\n", VR_CONFIG_ERROR_INVALID,
      ":2: [network-map] default: 'dr/default' is not a libvirt network name (1-255 bytes, no "
      "'/' or control character)" },
    { "[network-map]\ndefault =\n", VR_CONFIG_ERROR_INVALID,
      ":2: [network-map] default: '' is not a libvirt network name (1-255 bytes, no '/' or "
      "control character)" },
    { "[network-map]\na/b = c\n", VR_CONFIG_ERROR_INVALID,
      ":2: [network-map] a/b: 'a/b' is not a libvirt network name (1-255 bytes, no '/' or "
      "control character)" },

    { "[network-map]\nbridge:br/0 = x\n", VR_CONFIG_ERROR_INVALID,
      ":2: [network-map] bridge:br/0: 'br/0' is not a bridge name (1-15 bytes, no '/', ':' or "
      "white space)" },
    { "[network-map]\nlan = bridge:a-very-long-bridge\n", VR_CONFIG_ERROR_INVALID,
      ":2: [network-map] lan: 'a-very-long-bridge' is not a bridge name (1-15 bytes, no '/', "
      "':' or white space)" },
    { "[network-map]\nlan = a\nnetwork:lan = b\n", VR_CONFIG_ERROR_INVALID,
      ":3: [network-map] network:lan: maps 'lan' a second time (as 'a' and 'b')" },
    { "[network-map:w/x]\nlan = a\n", VR_CONFIG_ERROR_INVALID,
      ":1: [network-map:w/x]: not a domain name or relationship id: 'w/x' is not a libvirt "
      "network name (1-255 bytes, no '/' or control character)" },

    /* [interface:MAC] */
    { "[interface:52:54:00:12:34]\nnetwork = a\n", VR_CONFIG_ERROR_INVALID,
      ":1: [interface:52:54:00:12:34]: '52:54:00:12:34' is not a MAC address (six hexadecimal "
      "octets separated by ':')" },
    { "[interface]\nnetwork = a\n", VR_CONFIG_ERROR_INVALID,
      ":1: [interface]: an interface group names the MAC address it applies to: "
      "[interface:52:54:00:12:34:56]" },
    { "[interface:52:54:00:AB:34:56]\n[interface:52:54:00:ab:34:56]\n", VR_CONFIG_ERROR_INVALID,
      ":2: [interface:52:54:00:ab:34:56]: MAC 52:54:00:ab:34:56 has a group already (MACs compare "
      "without regard to case)" },
    { "[interface:52:54:00:12:34:56]\nipv4 = 192.0.2.10\n", VR_CONFIG_ERROR_INVALID,
      ":2: [interface:52:54:00:12:34:56] ipv4: '192.0.2.10' is not an IPv4 address with its "
      "prefix length (192.0.2.10/24)" },
    { "[interface:52:54:00:12:34:56]\nipv4 = 2001:db8::1/64\n", VR_CONFIG_ERROR_INVALID,
      ":2: [interface:52:54:00:12:34:56] ipv4: '2001:db8::1/64' is not an IPv4 address with its "
      "prefix length (192.0.2.10/24)" },
    { "[interface:52:54:00:12:34:56]\nipv6 = 2001:db8::1/129\n", VR_CONFIG_ERROR_INVALID,
      ":2: [interface:52:54:00:12:34:56] ipv6: '2001:db8::1/129' is not an IPv6 address with its "
      "prefix length (2001:db8::10/64)" },
    { "[interface:52:54:00:12:34:56]\nipv4-gateway = 192.0.2.1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [interface:52:54:00:12:34:56] ipv4-gateway: needs ipv4 (the interface's address)" },
    { "[interface:52:54:00:12:34:56]\nipv6 = 2001:db8::1/64\nipv6-gateway = 192.0.2.1\n",
      VR_CONFIG_ERROR_INVALID,
      ":3: [interface:52:54:00:12:34:56] ipv6-gateway: '192.0.2.1' is not an IPv6 address" },
    { "[interface:52:54:00:12:34:56]\ndns = 1.2.3.4 x\n", VR_CONFIG_ERROR_INVALID,
      ":2: [interface:52:54:00:12:34:56] dns: 'x' is not an IP address" },
    { "[interface:52:54:00:12:34:56]\ndns = 1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4\n",
      VR_CONFIG_ERROR_INVALID,
      ":2: [interface:52:54:00:12:34:56] dns: '1.1.1.1 2.2.2.2 3.3.3.3 4.4.4.4' is not one to "
      "three DNS server addresses" },
    { "[interface:52:54:00:12:34:56]\nnetwork = a\nbridge = b\n", VR_CONFIG_ERROR_INVALID,
      ":3: [interface:52:54:00:12:34:56] bridge: network and bridge exclude each other: the "
      "interface is connected to one of them" },
    { "[interface:52:54:00:12:34:56]\naddress = 1\n", VR_CONFIG_ERROR_INVALID,
      ":2: [interface:52:54:00:12:34:56] address: unknown key; [interface:52:54:00:12:34:56] has "
      "network, bridge, ipv4, ipv4-gateway, ipv6, ipv6-gateway, dns" },
    { "[replica]\nguest-agent-wait = 3601\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] guest-agent-wait: '3601' is not a number of seconds (0-3600)" },

    /* Escapes and encoding. */
    { "[replica]\nserver-name = r\\q\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] server-name: 'r\\q' has an escape sequence GKeyFile does not know (\\s, "
      "\\n, \\t, \\r, \\\\)" },
    { "[replica]\nserver-name = r\xff\n", VR_CONFIG_ERROR_INVALID,
      ":2: [replica] server-name: the value is not UTF-8" },
    { "[d\xff]\n", VR_CONFIG_ERROR_INVALID,
      ":1: [d\xef\xbf\xbd]: unknown group; the groups are [daemon], [certificates], [primary], "
      "[replica], [network-map], [network-map:DOMAIN], [interface:MAC] and "
      "[authorization:PATTERN]" },
    { "[daemon]\r\nhistory-days = 0\r\n", VR_CONFIG_ERROR_INVALID,
      ":2: [daemon] history-days: '0' is not a number of days (1-3650)" },
};

/* One bad file: load fails with the problem, and check reports it alone. */
static void
test_errors(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(error_cases); i++) {
        const ErrorCase *c = &error_cases[i];
        g_autoptr(GError) error = NULL;
        g_autoptr(VrConfig) cfg = NULL;
        g_autoptr(GPtrArray) problems = NULL;
        g_autofree char *want = g_strconcat(ORIGIN, c->message, NULL);
        g_autofree char *shown = g_strescape(c->data, NULL);

        g_test_message("case %u: %s", i, shown);
        cfg = vr_config_load_data(c->data, -1, ORIGIN, &error);
        g_assert_null(cfg);
        g_assert_error(error, VR_CONFIG_ERROR, (gint)c->code);
        g_test_message("-> %s", error->message);
        g_assert_cmpstr(error->message, ==, want);

        problems = problems_of(c->data, VR_CONFIG_CHECK_DEFAULT);
        g_assert_cmpuint(problems->len, ==, 1);
        g_assert_cmpstr(g_ptr_array_index(problems, 0), ==, error->message);
    }
}

/* The value checks that come from vr-net.h: the key is named, the value quoted. */
static void
test_errors_borrowed(void)
{
    static const struct {
        const char *data;
        const char *start;
        const char *contains;
    } cases[] = {
        { "[primary]\nnetwork = interface:\n",
          ":2: [primary] network: ", "'interface:': the interface name" },
        { "[primary]\nnetwork = address:fe80::1\n",
          ":2: [primary] network: ", "'address:fe80::1'" },
        { CERTS "[replica]\nenabled = true\nlisten = interface:a/b\n",
          ":8: [replica] listen: ", "'interface:a/b': the interface name" },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(VrConfig) cfg = vr_config_load_data(cases[i].data, -1, ORIGIN, &error);
        g_autofree char *start = g_strconcat(ORIGIN, cases[i].start, NULL);

        g_assert_null(cfg);
        g_assert_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID);
        g_test_message("%s", error->message);
        g_assert_true(g_str_has_prefix(error->message, start));
        g_assert_nonnull(strstr(error->message, cases[i].contains));
    }
}

/* check reports every problem of one file, in file order, then the rules between keys. */
static void
test_check_several(void)
{
    static const char data[] = "[daemon]\n"                    /* 1 */
                               "log-level = loud\n"            /* 2 */
                               "[replica]\n"                   /* 3 */
                               "port = 70000\n"                /* 4 */
                               "enabled = true\n"              /* 5 */
                               "prot = 1\n"                    /* 6 */
                               "[authorization:bad pattern]\n" /* 7 */
                               "storage = relative\n"          /* 8 */
                               "[primary]\n"                   /* 9 */
                               "default-frequency = 1\n"       /* 10 */
                               "[replicas]\n";                 /* 11 */
    static const char *const want[] = {
        ORIGIN ":2: [daemon] log-level: 'loud' is not a log level (error, warning, info or debug)",
        ORIGIN ":4: [replica] port: '70000' is not a port number (1-65535)",
        ORIGIN ":6: [replica] prot: unknown key, did you mean 'port'?",
        ORIGIN ":7: [authorization:bad pattern]: pattern 'bad pattern' is not a DNS name with at "
               "most one '*'",
        ORIGIN ":8: [authorization:bad pattern] storage: 'relative' is not an absolute path",
        ORIGIN ":10: [primary] default-frequency: '1' is not a number of seconds (5-86400)",
        ORIGIN ":11: [replicas]: unknown group, did you mean 'replica'?",
        ORIGIN ": [certificates]: ca, cert and key are required when [replica] enabled is true",
        ORIGIN ":3: [replica] listen: required when enabled is true: the replication network to "
               "listen on (network:NAME, interface:NAME or address:IP)",
    };
    g_autoptr(GPtrArray) problems = problems_of(data, VR_CONFIG_CHECK_DEFAULT);
    g_autoptr(GError) error = NULL;
    g_autoptr(VrConfig) cfg = NULL;
    g_autofree char *first = NULL;

    g_assert_cmpuint(problems->len, ==, G_N_ELEMENTS(want));
    for (guint i = 0; i < G_N_ELEMENTS(want); i++)
        g_assert_cmpstr(g_ptr_array_index(problems, i), ==, want[i]);

    /* load fails with the first and counts the others. */
    cfg = vr_config_load_data(data, -1, ORIGIN, &error);
    g_assert_null(cfg);
    g_assert_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID);
    first = g_strdup_printf("%s (and %u more problems: virt-replicad --check-config lists them "
                            "all)",
                            want[0], (guint)G_N_ELEMENTS(want) - 1);
    g_assert_cmpstr(error->message, ==, first);
}

static char *
write_file(const char *dir, const char *name, const char *text, int mode)
{
    char *path = g_build_filename(dir, name, NULL);

    g_assert_true(g_file_set_contents(path, text, -1, NULL));
    g_assert_cmpint(g_chmod(path, mode), ==, 0);
    return path;
}

static void
remove_tree(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;

    while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
        g_autofree char *path = g_build_filename(dir, name, NULL);

        if (g_file_test(path, G_FILE_TEST_IS_DIR))
            remove_tree(path);
        else
            g_unlink(path);
    }
    g_rmdir(dir);
}

/* vr_config_load() and vr_config_check() on files. */
static void
test_files(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("vr-config-XXXXXX", &error);
    g_autofree char *good = NULL;
    g_autofree char *bad = NULL;
    g_autofree char *missing = NULL;
    g_autofree char *want = NULL;
    g_autoptr(VrConfig) cfg = NULL;
    g_autoptr(GPtrArray) problems = g_ptr_array_new_with_free_func(g_free);

    g_assert_no_error(error);
    good = write_file(dir, "good.conf", "[replica]\nport = 9443\n", 0644);
    bad = write_file(dir, "bad.conf", "[replica]\nport = 0\nenabled = maybe\n", 0644);
    missing = g_build_filename(dir, "missing.conf", NULL);

    cfg = vr_config_load(good, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(cfg->replica.port, ==, 9443);
    g_assert_cmpstr(cfg->origin, ==, good);
    g_assert_true(vr_config_check(good, VR_CONFIG_CHECK_DEFAULT, problems));
    g_assert_cmpuint(problems->len, ==, 0);

    g_assert_null(vr_config_load(bad, &error));
    g_assert_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID);
    want = g_strdup_printf("%s:2: [replica] port: '0' is not a port number (1-65535)", bad);
    g_assert_true(g_str_has_prefix(error->message, want));
    g_clear_error(&error);
    g_assert_false(vr_config_check(bad, VR_CONFIG_CHECK_DEFAULT, problems));
    g_assert_cmpuint(problems->len, ==, 2);
    g_assert_cmpstr(g_ptr_array_index(problems, 0), ==, want);
    g_ptr_array_set_size(problems, 0);

    g_assert_null(vr_config_load(missing, &error));
    g_assert_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_READ);
    g_clear_pointer(&want, g_free);
    want = g_strdup_printf("cannot open '%s': No such file or directory", missing);
    g_assert_cmpstr(error->message, ==, want);
    g_clear_error(&error);
    g_assert_false(vr_config_check(missing, VR_CONFIG_CHECK_DEFAULT, problems));
    g_assert_cmpuint(problems->len, ==, 1);
    g_assert_cmpstr(g_ptr_array_index(problems, 0), ==, want);

    g_assert_null(vr_config_load(dir, &error));
    g_assert_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_READ);
    g_clear_pointer(&want, g_free);
    want = g_strdup_printf("'%s' is a directory", dir);
    g_assert_cmpstr(error->message, ==, want);
    g_clear_error(&error);

    remove_tree(dir);
}

/* VR_CONFIG_CHECK_SYSTEM without certificates: files, directories, group on this host. */
static void
test_system(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("vr-config-XXXXXX", &error);
    g_autofree char *store = g_build_filename(dir, "store", NULL);
    g_autofree char *state = NULL;
    g_autofree char *ca = NULL;
    g_autofree char *key = NULL;
    g_autofree char *text = NULL;
    g_autoptr(GPtrArray) problems = NULL;
    g_autoptr(VrConfig) cfg = NULL;
    g_autoptr(VrAuthz) authz = NULL;
    g_autofree char *root = NULL;
    g_autofree char *group = NULL;

    g_assert_no_error(error);
    g_assert_cmpint(g_mkdir(store, 0700), ==, 0);
    state = write_file(dir, "state", "not a directory", 0644);
    ca = write_file(dir, "ca.pem", "not a certificate", 0644);
    key = write_file(dir, "key.pem", "not a key", 0644);

    /* Clean: an existing storage root, no certificates. */
    text = g_strdup_printf("[daemon]\nstate-dir = %s/state.d\n"
                           "[authorization:*.dc1.example]\nstorage = %s\ntrust-group = dc1\n",
                           dir, store);
    problems = problems_of(text, VR_CONFIG_CHECK_SYSTEM);
    g_assert_cmpuint(problems->len, ==, 0);
    cfg = load_ok(text);
    authz = vr_config_new_authz(cfg, &error);
    g_assert_no_error(error);
    g_assert_true(vr_authz_lookup(authz, "p1.dc1.example", &root, &group, &error));
    g_assert_cmpstr(root, ==, store);
    g_assert_cmpstr(group, ==, "dc1");
    g_assert_false(vr_authz_lookup(authz, "p1.dc2.example", &root, &group, &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN);
    g_clear_error(&error);
    g_clear_pointer(&problems, g_ptr_array_unref);
    g_clear_pointer(&cfg, vr_config_free);
    g_clear_pointer(&authz, vr_authz_free);
    g_free(text);

    /* Everything wrong at once; load alone does not look, so it succeeds. */
    text = g_strdup_printf("[daemon]\nstate-dir = %s\nsocket-group = vr-no-such-group\n"
                           "[certificates]\nca = %s\ncert = %s/missing.pem\nkey = %s\n"
                           "crl = %s/missing-crl.pem\n"
                           "[replica]\nallow-any = true\ndefault-storage = %s/nowhere\n",
                           state, ca, dir, key, dir, dir);
    cfg = load_ok(text);
    problems = problems_of(text, VR_CONFIG_CHECK_SYSTEM);
    g_assert_cmpuint(problems->len, ==, 6);
    {
        g_autofree char *p0 = g_strdup_printf(ORIGIN ":2: [daemon] state-dir: '%s' exists and is "
                                                     "not a directory",
                                              state);
        g_autofree char *p1 = g_strdup(ORIGIN ":3: [daemon] socket-group: no group "
                                              "'vr-no-such-group' on this host");
        g_autofree char *p2 = g_strdup_printf(ORIGIN ":8: [certificates] crl: '%s/missing-crl.pem' "
                                                     "does not exist or is not a regular file",
                                              dir);
        g_autofree char *p3 = g_strdup_printf(ORIGIN ":6: [certificates] cert: '%s/missing.pem' "
                                                     "does not exist or is not a regular file",
                                              dir);
        g_autofree char *p4 =
            g_strdup_printf(ORIGIN ":7: [certificates] key: private key file '%s' "
                                   "has mode 0644: group or others may access "
                                   "it (chmod 600)",
                            key);
        g_autofree char *p5 = g_strdup_printf(ORIGIN ":11: [replica] default-storage: "
                                                     "'%s/nowhere' is not an existing directory",
                                              dir);
        const char *want[] = { p0, p1, p2, p3, p4, p5 };

        for (guint i = 0; i < G_N_ELEMENTS(want); i++)
            g_assert_cmpstr(g_ptr_array_index(problems, i), ==, want[i]);
    }
    /* The daemon's authorization refuses the missing storage root, naming the key. */
    authz = vr_config_new_authz(cfg, &error);
    g_assert_null(authz);
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_CONFIG);
    g_assert_true(g_str_has_prefix(error->message, ORIGIN ": [replica] default-storage: "));
    g_clear_error(&error);
    g_clear_pointer(&problems, g_ptr_array_unref);
    g_free(text);

    /* Without revocation checks the CA is loaded: not a certificate. */
    g_assert_cmpint(g_chmod(key, 0600), ==, 0);
    text = g_strdup_printf("[certificates]\nca = %s\ncert = %s\nkey = %s\n"
                           "check-revocation = false\n",
                           ca, ca, key);
    problems = problems_of(text, VR_CONFIG_CHECK_SYSTEM);
    g_assert_cmpuint(problems->len, >=, 1);
    g_assert_true(
        g_str_has_prefix(g_ptr_array_index(problems, 0), ORIGIN ":2: [certificates] ca: "));

    remove_tree(dir);
}

/* Run certtool with @args in @dir. */
static bool
certtool(const char *dir, const char *const *args)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new();
    int status = 0;

    g_ptr_array_add(argv, (gpointer) "certtool");
    for (guint i = 0; args[i] != NULL; i++)
        g_ptr_array_add(argv, (gpointer)args[i]);
    g_ptr_array_add(argv, NULL);
    return g_spawn_sync(dir, (char **)argv->pdata, NULL,
                        G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL |
                            G_SPAWN_STDERR_TO_DEV_NULL,
                        NULL, NULL, NULL, NULL, &status, NULL) &&
           g_spawn_check_wait_status(status, NULL);
}

/* VR_CONFIG_CHECK_SYSTEM with a real CA, CRL, certificate and key made by certtool. */
static void
test_system_pki(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = NULL;
    g_autofree char *text = NULL;
    g_autofree char *ca_tmpl = NULL;
    g_autofree char *host_tmpl = NULL;
    g_autofree char *crl_tmpl = NULL;
    g_autoptr(GPtrArray) problems = NULL;
    const char *gen_ca_key[] = { "--generate-privkey", "--key-type", "ecdsa",
                                 "--outfile",          "ca-key.pem", NULL };
    const char *gen_ca[] = { "--generate-self-signed",
                             "--load-privkey",
                             "ca-key.pem",
                             "--template",
                             "ca.tmpl",
                             "--outfile",
                             "ca.pem",
                             NULL };
    const char *gen_key[] = { "--generate-privkey", "--key-type",   "ecdsa",
                              "--outfile",          "host-key.pem", NULL };
    const char *gen_host[] = { "--generate-certificate",
                               "--load-privkey",
                               "host-key.pem",
                               "--load-ca-certificate",
                               "ca.pem",
                               "--load-ca-privkey",
                               "ca-key.pem",
                               "--template",
                               "host.tmpl",
                               "--outfile",
                               "host.pem",
                               NULL };
    const char *gen_crl[] = { "--generate-crl", "--load-ca-certificate",
                              "ca.pem",         "--load-ca-privkey",
                              "ca-key.pem",     "--template",
                              "crl.tmpl",       "--outfile",
                              "crl.pem",        NULL };
    const char *gen_other[] = { "--generate-self-signed",
                                "--load-privkey",
                                "host-key.pem",
                                "--template",
                                "ca.tmpl",
                                "--outfile",
                                "other-ca.pem",
                                NULL };
    g_autofree char *certtool_path = g_find_program_in_path("certtool");
    const char *keys[] = { "ca-key.pem", "host-key.pem" };

    if (certtool_path == NULL) {
        g_test_skip("certtool not found (package gnutls-bin)");
        return;
    }
    dir = g_dir_make_tmp("vr-config-pki-XXXXXX", &error);
    g_assert_no_error(error);
    ca_tmpl = write_file(dir, "ca.tmpl",
                         "cn = \"VR Config CA\"\nca\ncert_signing_key\ncrl_signing_key\n"
                         "expiration_days = 30\n",
                         0644);
    host_tmpl = write_file(dir, "host.tmpl",
                           "cn = \"replica1.example\"\ndns_name = \"replica1.example\"\n"
                           "signing_key\nencryption_key\ntls_www_server\ntls_www_client\n"
                           "expiration_days = 30\n",
                           0644);
    crl_tmpl = write_file(dir, "crl.tmpl", "crl_next_update = 30\ncrl_number = 1\n", 0644);
    g_assert_true(certtool(dir, gen_ca_key));
    g_assert_true(certtool(dir, gen_ca));
    g_assert_true(certtool(dir, gen_key));
    g_assert_true(certtool(dir, gen_host));
    g_assert_true(certtool(dir, gen_crl));
    g_assert_true(certtool(dir, gen_other));
    for (guint i = 0; i < G_N_ELEMENTS(keys); i++) {
        g_autofree char *path = g_build_filename(dir, keys[i], NULL);

        g_assert_cmpint(g_chmod(path, 0600), ==, 0);
    }

    text = g_strdup_printf("[certificates]\nca = %s/ca.pem\ncert = %s/host.pem\n"
                           "key = %s/host-key.pem\ncrl = %s/crl.pem\n",
                           dir, dir, dir, dir);
    problems = problems_of(text, VR_CONFIG_CHECK_SYSTEM);
    g_assert_cmpuint(problems->len, ==, 0);
    g_clear_pointer(&problems, g_ptr_array_unref);
    g_free(text);

    /* A CRL that is not the CA's: the policy fails closed, under the crl key. */
    text = g_strdup_printf("[certificates]\nca = %s/other-ca.pem\ncert = %s/host.pem\n"
                           "key = %s/host-key.pem\ncrl = %s/crl.pem\n",
                           dir, dir, dir, dir);
    problems = problems_of(text, VR_CONFIG_CHECK_SYSTEM);
    g_assert_cmpuint(problems->len, ==, 1);
    g_assert_true(
        g_str_has_prefix(g_ptr_array_index(problems, 0), ORIGIN ":5: [certificates] crl: "));
    g_clear_pointer(&problems, g_ptr_array_unref);
    g_free(text);

    /* The certificate with another key. */
    text = g_strdup_printf("[certificates]\nca = %s/ca.pem\ncert = %s/host.pem\n"
                           "key = %s/ca-key.pem\ncheck-revocation = false\n",
                           dir, dir, dir);
    problems = problems_of(text, VR_CONFIG_CHECK_SYSTEM);
    g_assert_cmpuint(problems->len, ==, 1);
    g_assert_true(
        g_str_has_prefix(g_ptr_array_index(problems, 0), ORIGIN ":3: [certificates] cert: "));
    g_assert_nonnull(strstr(g_ptr_array_index(problems, 0), "do not load together"));
    g_clear_pointer(&problems, g_ptr_array_unref);

    remove_tree(dir);
}

/* The file from the source tree: $G_TEST_SRCDIR (set by meson) or beside this source. */
static char *
source_path(const char *relative)
{
    if (g_getenv("G_TEST_SRCDIR") != NULL)
        return g_test_build_filename(G_TEST_DIST, "..", "..", relative, NULL);
    {
        g_autofree char *here = g_path_get_dirname(__FILE__);

        return g_build_filename(here, "..", "..", relative, NULL);
    }
}

/* The shipped example loads cleanly; it, config.md and the man page name every key. */
static void
test_example(void)
{
    g_autofree char *example = source_path("etc/virt-replica.conf");
    g_autofree char *md_path = source_path("docs/config.md");
    g_autofree char *man_path = source_path("docs/virt-replica.conf.5");
    g_autofree char *text = NULL;
    g_autofree char *md = NULL;
    g_autofree char *man = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(VrConfig) cfg = NULL;
    g_autoptr(GPtrArray) problems = g_ptr_array_new_with_free_func(g_free);

    cfg = vr_config_load(example, &error);
    g_assert_no_error(error);
    assert_defaults(cfg);
    g_assert_true(vr_config_check(example, VR_CONFIG_CHECK_DEFAULT, problems));

    /* Uncommented, every line of the example is valid too. */
    g_assert_true(g_file_get_contents(example, &text, NULL, NULL));
    g_assert_true(g_file_get_contents(md_path, &md, NULL, NULL));
    g_assert_true(g_file_get_contents(man_path, &man, NULL, NULL));
    {
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        g_autoptr(GString) open = g_string_new(NULL);
        g_autoptr(VrConfig) all = NULL;

        for (guint i = 0; lines[i] != NULL; i++) {
            const char *l = lines[i];

            /* "#key = value" and "#[group]" are settings; "# text" is prose. */
            if (l[0] == '#' && (g_ascii_isalpha(l[1]) || l[1] == '['))
                l++;
            else if (l[0] == '#')
                continue;
            g_string_append_printf(open, "%s\n", l);
        }
        /* allow-any = false as shown, so the authorization example may stay. */
        all = vr_config_load_data(open->str, -1, "uncommented example", &error);
        g_assert_no_error(error);
        g_assert_cmpuint(all->replica.authorizations->len, ==, 1);
        g_assert_nonnull(all->primary.schedule);
    }

    /* The man page's EXAMPLE section loads too. */
    {
        const char *start = strstr(man, ".SH EXAMPLE\n.nf\n");
        const char *end = start != NULL ? strstr(start, "\n.fi\n") : NULL;
        g_autoptr(GString) example_text = NULL;
        g_autoptr(VrConfig) from_man = NULL;

        g_assert_nonnull(end);
        start += strlen(".SH EXAMPLE\n.nf\n");
        example_text = g_string_new_len(start, end - start);
        g_string_replace(example_text, "\\-", "-", 0);
        from_man = vr_config_load_data(example_text->str, -1, "man page example", &error);
        g_assert_no_error(error);
        g_assert_true(from_man->replica.enabled);
    }

    for (guint i = 0; i < G_N_ELEMENTS(all_keys); i++) {
        g_autofree char *in_example = g_strdup_printf("\n#%s =", all_keys[i]);
        g_autofree char *in_md = g_strdup_printf("`%s`", all_keys[i]);
        g_autofree char *man_key = g_strdup_printf(".B %s", all_keys[i]);
        g_autofree char *man_key_escaped = NULL;
        g_autoptr(GString) escaped = g_string_new(man_key);

        g_string_replace(escaped, "-", "\\-", 0);
        man_key_escaped = g_string_free(g_steal_pointer(&escaped), FALSE);
        g_test_message("key %s", all_keys[i]);
        g_assert_nonnull(strstr(text, in_example));
        g_assert_nonnull(strstr(md, in_md));
        g_assert_nonnull(strstr(man, man_key_escaped));
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/config/full", test_full);
    g_test_add_func("/config/defaults", test_defaults);
    g_test_add_func("/config/empty", test_empty);
    g_test_add_func("/config/repeated", test_repeated);
    g_test_add_func("/config/values", test_values);
    g_test_add_func("/config/errors", test_errors);
    g_test_add_func("/config/errors-borrowed", test_errors_borrowed);
    g_test_add_func("/config/check-several", test_check_several);
    g_test_add_func("/config/files", test_files);
    g_test_add_func("/config/system", test_system);
    g_test_add_func("/config/system-pki", test_system_pki);
    g_test_add_func("/config/example", test_example);
    return g_test_run();
}
