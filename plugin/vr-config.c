/*
 * vr-config.c: the daemon's configuration file
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gnutls/gnutls.h>

#include "vr-config.h"
#include "vr-net.h"
#include "vr-tls-policy.h"

GQuark
vr_config_error_quark(void)
{
    return g_quark_from_static_string("vr-config-error-quark");
}

/* A configuration file larger than this is certainly something else. */
#define VR_CONFIG_MAX_SIZE     (1024 * 1024)

#define VR_CONFIG_AUTHZ_PREFIX "authorization:"
#define VR_CONFIG_MAP_PREFIX   "network-map:"
#define VR_CONFIG_IFACE_PREFIX "interface:"
/* In a network map: "bridge:NAME" is a host bridge, "network:NAME" (or NAME) a network. */
#define VR_CONFIG_BRIDGE_PREFIX  "bridge:"
#define VR_CONFIG_NETWORK_PREFIX "network:"

typedef enum {
    VR_CONFIG_KIND_STRING,    /* char *, checked by the key's check function */
    VR_CONFIG_KIND_PATH,      /* char *, an absolute path */
    VR_CONFIG_KIND_BOOL,      /* bool, as GKeyFile reads booleans */
    VR_CONFIG_KIND_SWITCH,    /* bool, on or off (or a boolean) */
    VR_CONFIG_KIND_UINT,      /* guint between min and max */
    VR_CONFIG_KIND_SIZE,      /* uint64_t bytes, K/M/G/T; 0 or unlimited: G_MAXUINT64 */
    VR_CONFIG_KIND_RATE,      /* uint64_t bytes per second, vr_rate_parse() */
    VR_CONFIG_KIND_LOG_LEVEL, /* VrConfigLogLevel */
} VrConfigKind;

/* Whether @value suits the key; else an error that quotes the value and says why. */
typedef bool (*VrConfigCheckFunc)(const char *value, GError **error);

/* One key: where its value goes (an offset into the struct its group fills) and its default. */
typedef struct {
    const char *group; /* "daemon", ...; "authorization" for [authorization:PATTERN] */
    const char *key;
    VrConfigKind kind;
    gsize offset;
    const char *default_value; /* parsed like a value of the file; NULL: unset */
    guint min;                 /* VR_CONFIG_KIND_UINT */
    guint max;
    const char *what; /* VR_CONFIG_KIND_UINT: "a port number" */
    VrConfigCheckFunc check;
} VrConfigKey;

/* ---- value checks ------------------------------------------------------------------- */

static bool
vr_config_check_socket(const char *value, GError **error)
{
    gsize max = sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1;

    if (!g_path_is_absolute(value)) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID, "'%s' is not an absolute path",
                    value);
        return false;
    }
    if (strlen(value) > max) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is longer than %" G_GSIZE_FORMAT " bytes, the limit of a unix socket "
                    "path",
                    value, max);
        return false;
    }
    return true;
}

/* A group name as useradd(8) makes them ([a-z_][a-z0-9_-]*$?, 32 bytes), or a number. */
static bool
vr_config_check_group_name(const char *value, GError **error)
{
    gsize len = strlen(value);
    bool number = len > 0;
    bool name = len > 0 && len <= 32 && (g_ascii_islower(value[0]) || value[0] == '_');

    for (gsize i = 0; i < len; i++) {
        char c = value[i];

        number = number && g_ascii_isdigit(c);
        name = name && (g_ascii_islower(c) || g_ascii_isdigit(c) || c == '_' || c == '-' ||
                        (c == '$' && i == len - 1));
    }
    if (!number && !name) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is not a group name ([a-z_][a-z0-9_-]*, 32 bytes at most) or a group "
                    "number",
                    value);
        return false;
    }
    return true;
}

/* An absolute URI (GUri's judgement) without white space, which GUri lets through. */
static bool
vr_config_check_uri(const char *value, GError **error)
{
    bool ok = g_uri_is_valid(value, G_URI_FLAGS_NONE, NULL);

    for (const char *c = value; ok && *c != '\0'; c++)
        ok = !g_ascii_isspace(*c) && !g_ascii_iscntrl(*c);
    if (!ok) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is not a libvirt URI such as qemu:///system", value);
    }
    return ok;
}

static bool
vr_config_check_net_spec(const char *value, GError **error)
{
    g_autofree char *name = NULL;
    VrNetKind kind;

    return vr_net_parse_spec(value, &kind, &name, error);
}

static bool
vr_config_check_schedule(const char *value, GError **error)
{
    g_autoptr(VrRateSchedule) schedule = vr_rate_schedule_parse(value, 0, error);

    return schedule != NULL;
}

/* Labels of letters, digits and '-' (not first or last), 63 bytes each, 253 in all. */
static bool
vr_config_check_dns_name(const char *value, GError **error)
{
    g_auto(GStrv) labels = g_strsplit(value, ".", -1);
    bool ok = value[0] != '\0' && strlen(value) <= 253;

    for (guint i = 0; ok && labels[i] != NULL; i++) {
        const char *l = labels[i];
        gsize len = strlen(l);

        ok = len > 0 && len <= 63 && l[0] != '-' && l[len - 1] != '-';
        for (gsize j = 0; ok && j < len; j++)
            ok = g_ascii_isalnum(l[j]) || l[j] == '-';
    }
    if (!ok) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is not a DNS name (labels of letters, digits and '-' separated by '.')",
                    value);
    }
    return ok;
}

/*
 * vr_authz_add() is the one judge of patterns and trust groups: an entry is tried on a
 * scratch table with the root "/", which always exists, so only the pattern or the group
 * can fail, with vr-authz's own message.
 */
static bool
vr_config_check_authz(const char *pattern, const char *group, GError **error)
{
    g_autoptr(VrAuthz) scratch = vr_authz_new_table();

    return vr_authz_add(scratch, pattern, "/", group, error);
}

static bool
vr_config_check_trust_group(const char *value, GError **error)
{
    return vr_config_check_authz("*", value, error);
}

/* As vr-standby.c expands it: "%n" is the primary's name, "%%" a '%', nothing else. */
static bool
vr_config_check_name_rule(const char *value, GError **error)
{
    bool has_name = false;

    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '/' || g_ascii_iscntrl(*p)) {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                        "'%s' holds '/' or a control character, which a domain name may not",
                        value);
            return false;
        }
        if (*p != '%')
            continue;
        if (p[1] != 'n' && p[1] != '%') {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                        "'%s': only 'n' and '%%' may follow '%%'", value);
            return false;
        }
        has_name = has_name || p[1] == 'n';
        p++;
    }
    if (!has_name) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' has no '%%n': every standby would get the same name", value);
        return false;
    }
    return true;
}

/* A libvirt network name, as vr-net.h takes one: 1-255 bytes, no '/' or control character. */
static bool
vr_config_check_network_name(const char *value, GError **error)
{
    bool ok = value[0] != '\0' && strlen(value) <= 255;

    for (const char *p = value; ok && *p != '\0'; p++)
        ok = *p != '/' && !g_ascii_iscntrl(*p);
    if (!ok) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is not a libvirt network name (1-255 bytes, no '/' or control "
                    "character)",
                    value);
    }
    return ok;
}

/* A Linux interface name as the kernel takes one (dev_valid_name): 1-15 bytes, not "." or
 * "..", no '/', ':' or white space. */
static bool
vr_config_check_bridge_name(const char *value, GError **error)
{
    gsize len = strlen(value);
    bool ok = len > 0 && len < 16 && !g_str_equal(value, ".") && !g_str_equal(value, "..");

    for (const char *p = value; ok && *p != '\0'; p++)
        ok = *p != '/' && *p != ':' && !g_ascii_isspace(*p) && !g_ascii_iscntrl(*p);
    if (!ok) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is not a bridge name (1-15 bytes, no '/', ':' or white space)", value);
    }
    return ok;
}

/*
 * One side of a network map: "bridge:NAME" (a bridge), "network:NAME" or NAME (a network).
 * @normal_out: the form the maps hold, "bridge:NAME" or NAME. (transfer full)
 */
static bool
vr_config_check_map_side(const char *value, char **normal_out, GError **error)
{
    if (g_str_has_prefix(value, VR_CONFIG_BRIDGE_PREFIX)) {
        if (!vr_config_check_bridge_name(value + strlen(VR_CONFIG_BRIDGE_PREFIX), error))
            return false;
        *normal_out = g_strdup(value);
        return true;
    }
    if (g_str_has_prefix(value, VR_CONFIG_NETWORK_PREFIX))
        value += strlen(VR_CONFIG_NETWORK_PREFIX);
    if (!vr_config_check_network_name(value, error))
        return false;
    *normal_out = g_strdup(value);
    return true;
}

/* An address of @family with a prefix length: "192.0.2.10/24", "2001:db8::10/64". */
static bool
vr_config_check_cidr(const char *value, GSocketFamily family, GError **error)
{
    const char *slash = strchr(value, '/');
    g_autofree char *host = slash != NULL ? g_strndup(value, slash - value) : NULL;
    g_autoptr(GInetAddress) address = host != NULL ? g_inet_address_new_from_string(host) : NULL;
    guint max = family == G_SOCKET_FAMILY_IPV4 ? 32 : 128;
    guint64 prefix;

    if (address == NULL || g_inet_address_get_family(address) != family ||
        !g_ascii_string_to_unsigned(slash + 1, 10, 0, max, &prefix, NULL)) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is not an %s address with its prefix length (%s)", value,
                    family == G_SOCKET_FAMILY_IPV4 ? "IPv4" : "IPv6",
                    family == G_SOCKET_FAMILY_IPV4 ? "192.0.2.10/24" : "2001:db8::10/64");
        return false;
    }
    return true;
}

static bool
vr_config_check_address(const char *value, GSocketFamily family, GError **error)
{
    g_autoptr(GInetAddress) address = g_inet_address_new_from_string(value);

    if (address == NULL ||
        (family != G_SOCKET_FAMILY_INVALID && g_inet_address_get_family(address) != family)) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID, "'%s' is not an %s address",
                    value,
                    family == G_SOCKET_FAMILY_IPV4   ? "IPv4"
                    : family == G_SOCKET_FAMILY_IPV6 ? "IPv6"
                                                     : "IP");
        return false;
    }
    return true;
}

static bool
vr_config_check_ipv4(const char *value, GError **error)
{
    return vr_config_check_cidr(value, G_SOCKET_FAMILY_IPV4, error);
}

static bool
vr_config_check_ipv6(const char *value, GError **error)
{
    return vr_config_check_cidr(value, G_SOCKET_FAMILY_IPV6, error);
}

static bool
vr_config_check_ipv4_gateway(const char *value, GError **error)
{
    return vr_config_check_address(value, G_SOCKET_FAMILY_IPV4, error);
}

static bool
vr_config_check_ipv6_gateway(const char *value, GError **error)
{
    return vr_config_check_address(value, G_SOCKET_FAMILY_IPV6, error);
}

/* DNS servers: IP addresses separated by ',' or white space, three at most (resolv.conf). */
static bool
vr_config_check_dns(const char *value, GError **error)
{
    g_auto(GStrv) servers = g_strsplit_set(value, ", \t", -1);
    guint n = 0;

    for (guint i = 0; servers[i] != NULL; i++) {
        if (servers[i][0] == '\0')
            continue;
        if (!vr_config_check_address(servers[i], G_SOCKET_FAMILY_INVALID, error))
            return false;
        n++;
    }
    if (n == 0 || n > 3) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is not one to three DNS server addresses", value);
        return false;
    }
    return true;
}

static bool
vr_config_check_interface_network(const char *value, GError **error)
{
    return vr_config_check_network_name(value, error);
}

/* ---- the tables ---------------------------------------------------------------------- */

#define F(field) offsetof(VrConfig, field)

static const VrConfigKey vr_config_keys[] = {
    { "daemon", "state-dir", VR_CONFIG_KIND_PATH, F(daemon.state_dir), "/var/lib/virt-replica" },
    { "daemon", "socket", VR_CONFIG_KIND_STRING, F(daemon.socket),
      "/run/virt-replica/virt-replicad.sock", .check = vr_config_check_socket },
    { "daemon", "socket-group", VR_CONFIG_KIND_STRING, F(daemon.socket_group), NULL,
      .check = vr_config_check_group_name },
    { "daemon", "libvirt-uri", VR_CONFIG_KIND_STRING, F(daemon.libvirt_uri), "qemu:///system",
      .check = vr_config_check_uri },
    { "daemon", "log-level", VR_CONFIG_KIND_LOG_LEVEL, F(daemon.log_level), "info" },
    { "daemon", "max-active-transfers", VR_CONFIG_KIND_UINT, F(daemon.max_active_transfers), "4", 1,
      64, "a number of transfers" },
    { "daemon", "monitoring-interval", VR_CONFIG_KIND_UINT, F(daemon.monitoring_interval), "3600",
      10, 604800, "a number of seconds" },
    { "daemon", "history-days", VR_CONFIG_KIND_UINT, F(daemon.history_days), "30", 1, 3650,
      "a number of days" },

    { "certificates", "ca", VR_CONFIG_KIND_PATH, F(certificates.ca), NULL },
    { "certificates", "cert", VR_CONFIG_KIND_PATH, F(certificates.cert), NULL },
    { "certificates", "key", VR_CONFIG_KIND_PATH, F(certificates.key), NULL },
    { "certificates", "crl", VR_CONFIG_KIND_PATH, F(certificates.crl), NULL },
    { "certificates", "check-revocation", VR_CONFIG_KIND_BOOL, F(certificates.check_revocation),
      "true" },

    { "primary", "network", VR_CONFIG_KIND_STRING, F(primary.network), NULL,
      .check = vr_config_check_net_spec },
    { "primary", "bandwidth", VR_CONFIG_KIND_RATE, F(primary.bandwidth), "unlimited" },
    { "primary", "bandwidth-schedule", VR_CONFIG_KIND_STRING, F(primary.bandwidth_schedule), NULL,
      .check = vr_config_check_schedule },
    { "primary", "default-frequency", VR_CONFIG_KIND_UINT, F(primary.default_frequency), "300", 5,
      86400, "a number of seconds" },
    { "primary", "default-recovery-points", VR_CONFIG_KIND_UINT, F(primary.default_recovery_points),
      "4", 0, 24, "a number of recovery points" },
    { "primary", "compression", VR_CONFIG_KIND_SWITCH, F(primary.compression), "on" },
    { "primary", "rpo-critical-factor", VR_CONFIG_KIND_UINT, F(primary.rpo_critical_factor), "3", 2,
      100, "a whole factor" },

    { "replica", "enabled", VR_CONFIG_KIND_BOOL, F(replica.enabled), "false" },
    { "replica", "listen", VR_CONFIG_KIND_STRING, F(replica.listen), NULL,
      .check = vr_config_check_net_spec },
    { "replica", "port", VR_CONFIG_KIND_UINT, F(replica.port), "8443", 1, 65535, "a port number" },
    { "replica", "server-name", VR_CONFIG_KIND_STRING, F(replica.server_name), NULL,
      .check = vr_config_check_dns_name },
    { "replica", "allow-any", VR_CONFIG_KIND_BOOL, F(replica.allow_any), "false" },
    { "replica", "default-storage", VR_CONFIG_KIND_PATH, F(replica.default_storage), NULL },
    { "replica", "default-trust-group", VR_CONFIG_KIND_STRING, F(replica.default_trust_group),
      "default", .check = vr_config_check_trust_group },
    { "replica", "point-interval", VR_CONFIG_KIND_UINT, F(replica.point_interval), "3600", 0, 86400,
      "a number of seconds" },
    { "replica", "standby-name-rule", VR_CONFIG_KIND_STRING, F(replica.standby_name_rule), NULL,
      .check = vr_config_check_name_rule },
    { "replica", "max-body-size", VR_CONFIG_KIND_SIZE, F(replica.max_body_size), "unlimited" },
    { "replica", "test-network", VR_CONFIG_KIND_STRING, F(replica.test_network), NULL },
    { "replica", "guest-agent-wait", VR_CONFIG_KIND_UINT, F(replica.guest_agent_wait), "300", 0,
      3600, "a number of seconds" },
};

#undef F

/* The keys of an [authorization:PATTERN] group; offsets into a VrConfigAuthzEntry. The trust
 * group is checked against the group's own pattern (vr_config_parse_authz()). */
static const VrConfigKey vr_config_authz_keys[] = {
    { "authorization", "storage", VR_CONFIG_KIND_PATH, offsetof(VrConfigAuthzEntry, storage),
      NULL },
    { "authorization", "trust-group", VR_CONFIG_KIND_STRING,
      offsetof(VrConfigAuthzEntry, trust_group), "default" },
};

/* The keys of an [interface:MAC] group; offsets into a VrConfigInterface. */
static const VrConfigKey vr_config_interface_keys[] = {
    { "interface", "network", VR_CONFIG_KIND_STRING, offsetof(VrConfigInterface, network), NULL,
      .check = vr_config_check_interface_network },
    { "interface", "bridge", VR_CONFIG_KIND_STRING, offsetof(VrConfigInterface, bridge), NULL,
      .check = vr_config_check_bridge_name },
    { "interface", "ipv4", VR_CONFIG_KIND_STRING, offsetof(VrConfigInterface, ipv4), NULL,
      .check = vr_config_check_ipv4 },
    { "interface", "ipv4-gateway", VR_CONFIG_KIND_STRING, offsetof(VrConfigInterface, ipv4_gateway),
      NULL, .check = vr_config_check_ipv4_gateway },
    { "interface", "ipv6", VR_CONFIG_KIND_STRING, offsetof(VrConfigInterface, ipv6), NULL,
      .check = vr_config_check_ipv6 },
    { "interface", "ipv6-gateway", VR_CONFIG_KIND_STRING, offsetof(VrConfigInterface, ipv6_gateway),
      NULL, .check = vr_config_check_ipv6_gateway },
    { "interface", "dns", VR_CONFIG_KIND_STRING, offsetof(VrConfigInterface, dns), NULL,
      .check = vr_config_check_dns },
};

/* The fixed groups, in the order the documentation has them. */
static const char *const vr_config_groups[] = { "daemon", "certificates", "primary", "replica",
                                                "network-map" };

static const char *const vr_config_log_levels[] = {
    [VR_CONFIG_LOG_ERROR] = "error",
    [VR_CONFIG_LOG_WARNING] = "warning",
    [VR_CONFIG_LOG_INFO] = "info",
    [VR_CONFIG_LOG_DEBUG] = "debug",
};

const char *
vr_config_log_level_to_string(VrConfigLogLevel level)
{
    g_return_val_if_fail(level < G_N_ELEMENTS(vr_config_log_levels), NULL);
    return vr_config_log_levels[level];
}

/* ---- values -------------------------------------------------------------------------- */

/* @value read as GKeyFile reads a boolean, so the file accepts exactly what GKeyFile does. */
static bool
vr_config_boolean(const char *value, bool *out)
{
    g_autoptr(GKeyFile) scratch = g_key_file_new();
    g_autoptr(GError) local = NULL;
    gboolean b;

    g_key_file_set_value(scratch, "v", "v", value);
    b = g_key_file_get_boolean(scratch, "v", "v", &local);
    if (local != NULL)
        return false;
    *out = b;
    return true;
}

/* A size: digits with an optional K, M, G or T (powers of 1024); "0" or "unlimited". */
static bool
vr_config_size(const char *value, uint64_t *out)
{
    uint64_t n;
    uint64_t unit = 1;
    char *end = NULL;

    if (g_str_equal(value, "unlimited")) {
        *out = G_MAXUINT64;
        return true;
    }
    if (!g_ascii_isdigit(value[0]))
        return false;
    errno = 0;
    n = g_ascii_strtoull(value, &end, 10);
    if (errno != 0)
        return false;
    if (*end != '\0') {
        const char *units = "KMGT";
        const char *u = strchr(units, g_ascii_toupper(*end));

        if (u == NULL || end[1] != '\0')
            return false;
        for (const char *p = units; p <= u; p++)
            unit *= 1024;
    }
    if (n > G_MAXUINT64 / unit)
        return false;
    *out = n == 0 ? G_MAXUINT64 : n * unit;
    return true;
}

/* Parse @value for @k into the struct at @base; the error explains, quoting the value. */
static bool
vr_config_set(const VrConfigKey *k, const char *value, gpointer base, GError **error)
{
    gpointer field = (char *)base + k->offset;
    guint64 n;
    bool b;

    switch (k->kind) {
    case VR_CONFIG_KIND_PATH:
        if (!g_path_is_absolute(value)) {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                        "'%s' is not an absolute path", value);
            return false;
        }
        /* fall through */
    case VR_CONFIG_KIND_STRING:
        if (k->check != NULL && !k->check(value, error))
            return false;
        g_free(*(char **)field);
        *(char **)field = g_strdup(value);
        return true;
    case VR_CONFIG_KIND_BOOL:
        if (!vr_config_boolean(value, &b)) {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                        "'%s' is not a boolean (true, false, 1 or 0)", value);
            return false;
        }
        *(bool *)field = b;
        return true;
    case VR_CONFIG_KIND_SWITCH:
        if (g_str_equal(value, "on") || g_str_equal(value, "off")) {
            b = g_str_equal(value, "on");
        } else if (!vr_config_boolean(value, &b)) {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID, "'%s' is not on or off",
                        value);
            return false;
        }
        *(bool *)field = b;
        return true;
    case VR_CONFIG_KIND_UINT:
        if (!g_ascii_string_to_unsigned(value, 10, k->min, k->max, &n, NULL)) {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID, "'%s' is not %s (%u-%u)",
                        value, k->what, k->min, k->max);
            return false;
        }
        *(guint *)field = (guint)n;
        return true;
    case VR_CONFIG_KIND_SIZE:
        if (!vr_config_size(value, (uint64_t *)field)) {
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                        "'%s' is not a size (bytes with an optional K, M, G or T, or "
                        "unlimited)",
                        value);
            return false;
        }
        return true;
    case VR_CONFIG_KIND_RATE:
        return vr_rate_parse(value, (uint64_t *)field, error);
    case VR_CONFIG_KIND_LOG_LEVEL:
        for (guint i = 0; i < G_N_ELEMENTS(vr_config_log_levels); i++) {
            if (g_str_equal(value, vr_config_log_levels[i])) {
                *(VrConfigLogLevel *)field = (VrConfigLogLevel)i;
                return true;
            }
        }
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' is not a log level (error, warning, info or debug)", value);
        return false;
    }
    g_assert_not_reached();
}

/* Every key of @table with a default, set from its default text. */
static void
vr_config_set_defaults(const VrConfigKey *table, gsize n, gpointer base)
{
    for (gsize i = 0; i < n; i++) {
        g_autoptr(GError) local = NULL;
        G_GNUC_UNUSED bool ok;

        if (table[i].default_value == NULL)
            continue;
        ok = vr_config_set(&table[i], table[i].default_value, base, &local);
        g_assert(ok); /* a default that does not parse is a bug of the table */
    }
}

/* ---- the parse ----------------------------------------------------------------------- */

typedef struct {
    const char *origin;
    GKeyFile *kf;
    GHashTable *lines; /* "group" (first line) and "group\037key" (last line) -> line */
    GHashTable *bad;   /* "group\037key" whose value was refused */
    GPtrArray *problems;
} VrConfigParse;

static char *
vr_config_where(const char *group, const char *key)
{
    return key != NULL ? g_strconcat(group, "\037", key, NULL) : g_strdup(group);
}

/* A problem of @group (NULL: the file) and @key (NULL: the group), with its line if known. */
static void vr_config_problem(VrConfigParse *p, const char *group, const char *key,
                              const char *format, ...) G_GNUC_PRINTF(4, 5);

static void
vr_config_problem(VrConfigParse *p, const char *group, const char *key, const char *format, ...)
{
    g_autofree char *what = NULL;
    g_autofree char *where = NULL;
    g_autofree char *loc = NULL;
    g_autofree char *id = NULL;
    g_autofree char *msg = NULL;
    guint line = 0;
    va_list args;

    va_start(args, format);
    what = g_strdup_vprintf(format, args);
    va_end(args);
    if (group != NULL) {
        id = vr_config_where(group, key);
        line = GPOINTER_TO_UINT(g_hash_table_lookup(p->lines, id));
        if (line == 0)
            line = GPOINTER_TO_UINT(g_hash_table_lookup(p->lines, group));
        where = key != NULL ? g_strdup_printf("[%s] %s: ", group, key)
                            : g_strdup_printf("[%s]: ", group);
    }
    loc =
        line > 0 ? g_strdup_printf("%s:%u: ", p->origin, line) : g_strdup_printf("%s: ", p->origin);
    msg = g_strconcat(loc, where != NULL ? where : "", what, NULL);
    /* Group and key names are bytes from the file: keep the message valid UTF-8. */
    g_ptr_array_add(p->problems, g_utf8_make_valid(msg, -1));
}

/*
 * The lines of groups and keys, for the messages, found the way GKeyFile reads a line:
 * leading white space skipped, '#' and empty lines are comments, '[' opens a group, the
 * first '=' ends a key. Returns the first line GKeyFile cannot take (0: none), with a
 * description in @why.
 */
static guint
vr_config_scan(VrConfigParse *p, const char *data, gsize len, char **why)
{
    g_autofree char *group = NULL;
    guint bad = 0;
    guint line = 0;

    for (gsize start = 0; start < len;) {
        const char *nl = memchr(data + start, '\n', len - start);
        gsize end = nl != NULL ? (gsize)(nl - data) : len;
        g_autofree char *text = g_strndup(data + start, end - start);
        char *s = g_strstrip(text);
        const char *eq = strchr(s, '=');

        start = end + 1;
        line++;
        if (s[0] == '\0' || s[0] == '#')
            continue;
        if (s[0] == '[' && s[strlen(s) - 1] == ']') {
            g_free(group);
            group = g_strndup(s + 1, strlen(s) - 2);
            if (!g_hash_table_contains(p->lines, group))
                g_hash_table_insert(p->lines, g_strdup(group), GUINT_TO_POINTER(line));
        } else if (eq != NULL && eq != s && group != NULL) {
            g_autofree char *key = g_strstrip(g_strndup(s, eq - s));

            g_hash_table_insert(p->lines, vr_config_where(group, key), GUINT_TO_POINTER(line));
        } else if (bad == 0 && line == 1 && g_str_has_prefix(s, "\xef\xbb\xbf")) {
            bad = line;
            *why = g_strdup("the file starts with a UTF-8 byte order mark, which GKeyFile does "
                            "not take");
        } else if (bad == 0) {
            bad = line;
            *why = eq != NULL && eq != s
                       ? g_strdup_printf("'%s' comes before the first [group] line", s)
                       : g_strdup_printf("'%s' is not a [group] line, a key = value line or a "
                                         "# comment",
                                         s);
        }
    }
    return bad;
}

/*
 * The value of @key: GKeyFile's text without trailing white space (write "\s" for a space
 * at the end), then unescaped as g_key_file_get_string() does. (transfer full)
 */
static char *
vr_config_value(VrConfigParse *p, const char *group, const char *key, GError **error)
{
    g_autofree char *raw = g_key_file_get_value(p->kf, group, key, NULL);
    g_autoptr(GKeyFile) scratch = g_key_file_new();
    g_autoptr(GError) local = NULL;
    g_autofree char *value = NULL;

    g_strchomp(raw);
    if (!g_utf8_validate(raw, -1, NULL)) {
        g_set_error_literal(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                            "the value is not UTF-8");
        return NULL;
    }
    g_key_file_set_value(scratch, "v", "v", raw);
    /* On a bad escape GKeyFile sets the error and still returns a string. */
    value = g_key_file_get_string(scratch, "v", "v", &local);
    if (value == NULL || local != NULL) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "'%s' has an escape sequence GKeyFile does not know (\\s, \\n, \\t, \\r, "
                    "\\\\)",
                    raw);
        return NULL;
    }
    return g_steal_pointer(&value);
}

static guint
vr_config_distance(const char *a, const char *b)
{
    gsize la = strlen(a);
    gsize lb = strlen(b);
    g_autofree guint *row = g_new(guint, lb + 1);

    for (gsize j = 0; j <= lb; j++)
        row[j] = j;
    for (gsize i = 1; i <= la; i++) {
        guint diag = row[0];

        row[0] = i;
        for (gsize j = 1; j <= lb; j++) {
            guint up = row[j];
            guint cost = g_ascii_tolower(a[i - 1]) != g_ascii_tolower(b[j - 1]);

            row[j] = MIN(MIN(row[j] + 1, row[j - 1] + 1), diag + cost);
            diag = up;
        }
    }
    return row[lb];
}

/*
 * ", did you mean 'x'?" for the closest of @names when it is close (two edits, or @name
 * starts with it: "storage-dir", "port[de]"), else "". (transfer full)
 */
static char *
vr_config_suggest(const char *name, const char *const *names, gsize n)
{
    const char *best = NULL;
    guint best_d = 3;

    for (gsize i = 0; i < n; i++) {
        guint d = vr_config_distance(name, names[i]);

        if (strlen(names[i]) >= 3 && g_str_has_prefix(name, names[i]))
            d = MIN(d, 2u);
        if (d < best_d) {
            best_d = d;
            best = names[i];
        }
    }
    return best != NULL ? g_strdup_printf(", did you mean '%s'?", best) : g_strdup("");
}

static void
vr_config_unknown_key(VrConfigParse *p, const char *group, const char *table_group,
                      const VrConfigKey *table, gsize n, const char *key)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    g_autofree char *list = NULL;
    g_autofree char *hint = NULL;

    for (gsize i = 0; i < n; i++) {
        if (g_str_equal(table[i].group, table_group))
            g_ptr_array_add(names, (gpointer)table[i].key);
    }
    hint = vr_config_suggest(key, (const char *const *)names->pdata, names->len);
    if (hint[0] != '\0') {
        vr_config_problem(p, group, key, "unknown key%s", hint);
        return;
    }
    g_ptr_array_add(names, NULL);
    list = g_strjoinv(", ", (char **)names->pdata);
    vr_config_problem(p, group, key, "unknown key; [%s] has %s", group, list);
}

/*
 * Every key of @group into @base by @table (the entries of @table_group): unknown keys and
 * bad values become problems. An empty value leaves a key without default unset.
 */
static void
vr_config_parse_keys(VrConfigParse *p, const char *group, const char *table_group,
                     const VrConfigKey *table, gsize n, gpointer base)
{
    g_auto(GStrv) keys = g_key_file_get_keys(p->kf, group, NULL, NULL);
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

    for (guint i = 0; keys != NULL && keys[i] != NULL; i++) {
        const VrConfigKey *k = NULL;
        g_autofree char *value = NULL;
        g_autoptr(GError) local = NULL;

        /* A repeated key is listed once per line; GKeyFile gives the last one's value. */
        if (!g_hash_table_add(seen, keys[i]))
            continue;
        for (gsize j = 0; j < n && k == NULL; j++) {
            if (g_str_equal(table[j].group, table_group) && g_str_equal(table[j].key, keys[i]))
                k = &table[j];
        }
        if (k == NULL) {
            vr_config_unknown_key(p, group, table_group, table, n, keys[i]);
            continue;
        }
        value = vr_config_value(p, group, keys[i], &local);
        if (value != NULL && value[0] == '\0' && k->default_value == NULL)
            continue;
        if (value == NULL || !vr_config_set(k, value, base, &local)) {
            vr_config_problem(p, group, keys[i], "%s", local->message);
            g_hash_table_add(p->bad, vr_config_where(group, keys[i]));
        }
    }
}

static void
vr_config_authz_entry_free(gpointer data)
{
    VrConfigAuthzEntry *e = data;

    g_free(e->pattern);
    g_free(e->storage);
    g_free(e->trust_group);
    g_free(e);
}

static bool
vr_config_is_bad(VrConfigParse *p, const char *group, const char *key)
{
    g_autofree char *id = vr_config_where(group, key);

    return g_hash_table_contains(p->bad, id);
}

/* One [authorization:PATTERN] group. @patterns: lower-case pattern -> its group, so far. */
static void
vr_config_parse_authz(VrConfigParse *p, VrConfig *cfg, const char *group, GHashTable *patterns)
{
    const char *pattern = group + strlen(VR_CONFIG_AUTHZ_PREFIX);
    VrConfigAuthzEntry *e = g_new0(VrConfigAuthzEntry, 1);
    g_autoptr(GError) local = NULL;
    g_autofree char *lower = g_ascii_strdown(pattern, -1);
    const char *earlier = g_hash_table_lookup(patterns, lower);
    bool pattern_ok;

    e->pattern = g_strdup(pattern);
    g_ptr_array_add(cfg->replica.authorizations, e);
    pattern_ok = vr_config_check_authz(pattern, "default", &local);
    if (!pattern_ok)
        vr_config_problem(p, group, NULL, "%s", local->message);
    if (earlier != NULL) {
        vr_config_problem(p, group, NULL,
                          "pattern '%s' repeats [%s] (patterns compare without regard to case): "
                          "the first match wins, so this group would never apply",
                          pattern, earlier);
    } else {
        g_hash_table_insert(patterns, g_steal_pointer(&lower), (gpointer)group);
    }

    vr_config_set_defaults(vr_config_authz_keys, G_N_ELEMENTS(vr_config_authz_keys), e);
    vr_config_parse_keys(p, group, "authorization", vr_config_authz_keys,
                         G_N_ELEMENTS(vr_config_authz_keys), e);
    if (e->storage == NULL && !vr_config_is_bad(p, group, "storage")) {
        vr_config_problem(p, group, "storage",
                          "required: the storage root of the replicas of the primaries the "
                          "pattern matches");
    }
    g_clear_error(&local);
    if (!vr_config_is_bad(p, group, "trust-group") &&
        !vr_config_check_authz(pattern_ok ? pattern : "*", e->trust_group, &local)) {
        vr_config_problem(p, group, "trust-group", "%s", local->message);
    }
}

/*
 * [network-map] into @map: keys and values are NAME or "network:NAME" (a libvirt network)
 * or "bridge:NAME" (a host bridge), held as NAME and "bridge:NAME".
 */
static void
vr_config_parse_network_map(VrConfigParse *p, GHashTable *map, const char *group)
{
    g_auto(GStrv) keys = g_key_file_get_keys(p->kf, group, NULL, NULL);
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

    for (guint i = 0; keys != NULL && keys[i] != NULL; i++) {
        g_autofree char *value = NULL;
        g_autofree char *key = NULL;
        g_autofree char *target = NULL;
        g_autoptr(GError) local = NULL;

        if (!g_hash_table_add(seen, keys[i]))
            continue; /* repeated: GKeyFile gives the last value */
        if (!vr_config_check_map_side(keys[i], &key, &local)) {
            vr_config_problem(p, group, keys[i], "%s", local->message);
            continue;
        }
        value = vr_config_value(p, group, keys[i], &local);
        if (value == NULL || !vr_config_check_map_side(value, &target, &local)) {
            vr_config_problem(p, group, keys[i], "%s", local->message);
            continue;
        }
        if (g_hash_table_contains(map, key)) {
            vr_config_problem(p, group, keys[i], "maps '%s' a second time (as '%s' and '%s')", key,
                              (const char *)g_hash_table_lookup(map, key), target);
            continue;
        }
        g_hash_table_insert(map, g_steal_pointer(&key), g_steal_pointer(&target));
    }
}

static GHashTable *
vr_config_map_new(void)
{
    return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

/* [network-map:NAME]: NAME is a relationship id or a primary's domain name. */
static void
vr_config_parse_scoped_map(VrConfigParse *p, VrConfig *cfg, const char *group)
{
    const char *scope = group + strlen(VR_CONFIG_MAP_PREFIX);
    g_autoptr(GError) local = NULL;
    GHashTable *map;

    if (!vr_config_check_network_name(scope, &local)) {
        g_prefix_error(&local, "not a domain name or relationship id: ");
        vr_config_problem(p, group, NULL, "%s", local->message);
        return;
    }
    map = vr_config_map_new();
    g_hash_table_insert(cfg->network_maps, g_strdup(scope), map);
    vr_config_parse_network_map(p, map, group);
}

static void
vr_config_interface_free(gpointer data)
{
    VrConfigInterface *iface = data;

    g_free(iface->mac);
    for (gsize i = 0; i < G_N_ELEMENTS(vr_config_interface_keys); i++)
        g_free(*(char **)((char *)iface + vr_config_interface_keys[i].offset));
    g_free(iface);
}

/* "52:54:00:12:34:56" in any case. (transfer full: lower case), NULL when not a MAC */
static char *
vr_config_mac(const char *text)
{
    g_auto(GStrv) octets = g_strsplit(text, ":", -1);

    if (g_strv_length(octets) != 6)
        return NULL;
    for (guint i = 0; i < 6; i++) {
        if (strlen(octets[i]) != 2 || !g_ascii_isxdigit(octets[i][0]) ||
            !g_ascii_isxdigit(octets[i][1]))
            return NULL;
    }
    return g_ascii_strdown(text, -1);
}

/* One [interface:MAC] group. */
static void
vr_config_parse_interface(VrConfigParse *p, VrConfig *cfg, const char *group)
{
    g_autofree char *mac = vr_config_mac(group + strlen(VR_CONFIG_IFACE_PREFIX));
    VrConfigInterface *iface;

    if (mac == NULL) {
        vr_config_problem(p, group, NULL,
                          "'%s' is not a MAC address (six hexadecimal octets separated by ':')",
                          group + strlen(VR_CONFIG_IFACE_PREFIX));
        return;
    }
    if (g_hash_table_contains(cfg->interfaces, mac)) {
        vr_config_problem(p, group, NULL,
                          "MAC %s has a group already (MACs compare without regard to case)", mac);
        return;
    }
    iface = g_new0(VrConfigInterface, 1);
    iface->mac = g_strdup(mac);
    g_hash_table_insert(cfg->interfaces, g_steal_pointer(&mac), iface);
    vr_config_parse_keys(p, group, "interface", vr_config_interface_keys,
                         G_N_ELEMENTS(vr_config_interface_keys), iface);
    if (iface->network != NULL && iface->bridge != NULL) {
        vr_config_problem(p, group, "bridge",
                          "network and bridge exclude each other: the interface is connected to "
                          "one of them");
    }
    if (iface->ipv4_gateway != NULL && iface->ipv4 == NULL && !vr_config_is_bad(p, group, "ipv4")) {
        vr_config_problem(p, group, "ipv4-gateway", "needs ipv4 (the interface's address)");
    }
    if (iface->ipv6_gateway != NULL && iface->ipv6 == NULL && !vr_config_is_bad(p, group, "ipv6")) {
        vr_config_problem(p, group, "ipv6-gateway", "needs ipv6 (the interface's address)");
    }
}

static void
vr_config_unknown_group(VrConfigParse *p, const char *group)
{
    g_autofree char *hint = NULL;

    if (g_str_equal(group, "interface")) {
        vr_config_problem(p, group, NULL,
                          "an interface group names the MAC address it applies to: "
                          "[interface:52:54:00:12:34:56]");
        return;
    }
    if (g_str_equal(group, "authorization")) {
        vr_config_problem(p, group, NULL,
                          "an authorization group names the primaries it applies to: "
                          "[authorization:PATTERN]");
        return;
    }
    hint = vr_config_suggest(group, vr_config_groups, G_N_ELEMENTS(vr_config_groups));
    if (hint[0] != '\0') {
        vr_config_problem(p, group, NULL, "unknown group%s", hint);
        return;
    }
    vr_config_problem(p, group, NULL,
                      "unknown group; the groups are [daemon], [certificates], [primary], "
                      "[replica], [network-map], [network-map:DOMAIN], [interface:MAC] and "
                      "[authorization:PATTERN]");
}

/* Whether the optional @key is unset without its own problem already reported. */
static bool
vr_config_missing(VrConfigParse *p, const char *group, const char *key, const char *value)
{
    return value == NULL && !vr_config_is_bad(p, group, key);
}

/* The rules between keys. */
static void
vr_config_validate(VrConfigParse *p, VrConfig *cfg)
{
    const char *names[] = { "ca", "cert", "key" };
    const char *values[] = { cfg->certificates.ca, cfg->certificates.cert, cfg->certificates.key };
    guint set = 0;

    for (guint i = 0; i < G_N_ELEMENTS(names); i++)
        set += values[i] != NULL || vr_config_is_bad(p, "certificates", names[i]);
    for (guint i = 0; set > 0 && i < G_N_ELEMENTS(names); i++) {
        if (vr_config_missing(p, "certificates", names[i], values[i]))
            vr_config_problem(p, "certificates", names[i],
                              "required: ca, cert and key go together");
    }
    if (set == 0 && cfg->replica.enabled) {
        vr_config_problem(p, "certificates", NULL,
                          "ca, cert and key are required when [replica] enabled is true");
    }
    if (cfg->certificates.check_revocation && cfg->certificates.ca != NULL &&
        vr_config_missing(p, "certificates", "crl", cfg->certificates.crl)) {
        vr_config_problem(p, "certificates", "crl",
                          "required while check-revocation is true (the CRL of the CA; "
                          "check-revocation = false accepts revoked certificates)");
    }

    if (cfg->replica.enabled && vr_config_missing(p, "replica", "listen", cfg->replica.listen)) {
        vr_config_problem(p, "replica", "listen",
                          "required when enabled is true: the replication network to listen "
                          "on (network:NAME, interface:NAME or address:IP)");
    }
    if (cfg->replica.allow_any &&
        vr_config_missing(p, "replica", "default-storage", cfg->replica.default_storage)) {
        vr_config_problem(p, "replica", "default-storage",
                          "required when allow-any is true: where the replicas of any primary "
                          "are stored");
    }
    if (cfg->replica.allow_any && cfg->replica.authorizations->len > 0) {
        VrConfigAuthzEntry *e = g_ptr_array_index(cfg->replica.authorizations, 0);

        vr_config_problem(p, "replica", "allow-any",
                          "true, and the file has %u [authorization:PATTERN] groups (the first "
                          "is [authorization:%s]): allow any authenticated primary or the "
                          "table of authorizations, not both",
                          cfg->replica.authorizations->len, e->pattern);
    }

    if (cfg->primary.bandwidth_schedule != NULL) {
        cfg->primary.schedule =
            vr_rate_schedule_parse(cfg->primary.bandwidth_schedule, cfg->primary.bandwidth, NULL);
        g_assert(cfg->primary.schedule != NULL); /* checked when read */
    }
}

/* ---- checks of this host ------------------------------------------------------------- */

static bool
vr_config_check_file(VrConfigParse *p, const char *group, const char *key, const char *path)
{
    if (path == NULL)
        return false;
    if (!g_file_test(path, G_FILE_TEST_IS_REGULAR)) {
        vr_config_problem(p, group, key, "'%s' does not exist or is not a regular file", path);
        return false;
    }
    if (access(path, R_OK) != 0) {
        int errsv = errno;

        vr_config_problem(p, group, key, "'%s' is not readable: %s", path, g_strerror(errsv));
        return false;
    }
    return true;
}

static void
vr_config_check_dir(VrConfigParse *p, const char *group, const char *key, const char *path)
{
    if (path != NULL && !g_file_test(path, G_FILE_TEST_IS_DIR))
        vr_config_problem(p, group, key, "'%s' is not an existing directory", path);
}

static void
vr_config_check_system(VrConfigParse *p, VrConfig *cfg)
{
    struct stat st;
    bool ca_ok;
    bool crl_ok;
    bool cert_ok;
    bool key_ok = false;

    if (stat(cfg->daemon.state_dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
        vr_config_problem(p, "daemon", "state-dir", "'%s' exists and is not a directory",
                          cfg->daemon.state_dir);
    }
    if (cfg->daemon.socket_group != NULL) {
        const char *g = cfg->daemon.socket_group;
        guint64 gid;
        bool found = g_ascii_string_to_unsigned(g, 10, 0, G_MAXUINT32, &gid, NULL)
                         ? getgrgid((gid_t)gid) != NULL
                         : getgrnam(g) != NULL;

        if (!found)
            vr_config_problem(p, "daemon", "socket-group", "no group '%s' on this host", g);
    }

    ca_ok = vr_config_check_file(p, "certificates", "ca", cfg->certificates.ca);
    crl_ok = vr_config_check_file(p, "certificates", "crl", cfg->certificates.crl);
    cert_ok = vr_config_check_file(p, "certificates", "cert", cfg->certificates.cert);
    if (cfg->certificates.key != NULL) {
        g_autoptr(GError) local = NULL;

        key_ok = vr_tls_check_key_file(cfg->certificates.key, &local) &&
                 vr_config_check_file(p, "certificates", "key", cfg->certificates.key);
        if (local != NULL)
            vr_config_problem(p, "certificates", "key", "%s", local->message);
    }
    if (ca_ok && (crl_ok || !cfg->certificates.check_revocation)) {
        VrTlsPolicyConfig pc = {
            .ca_file = cfg->certificates.ca,
            .crl_file = cfg->certificates.crl,
            .check_revocation = cfg->certificates.check_revocation,
            .peer_role = VR_TLS_PEER_CLIENT,
        };
        g_autoptr(GError) local = NULL;
        g_autoptr(VrTlsPolicy) policy = vr_tls_policy_new(&pc, &local);

        if (policy == NULL) {
            bool crl = g_error_matches(local, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL);

            vr_config_problem(p, "certificates", crl ? "crl" : "ca", "%s", local->message);
        }
    }
    if (cert_ok && key_ok) {
        gnutls_certificate_credentials_t cred = NULL;
        int rc = gnutls_certificate_allocate_credentials(&cred);

        /* GnuTLS refuses a key that does not match the certificate. */
        if (rc >= 0) {
            rc = gnutls_certificate_set_x509_key_file(cred, cfg->certificates.cert,
                                                      cfg->certificates.key, GNUTLS_X509_FMT_PEM);
        }
        if (rc < 0) {
            vr_config_problem(p, "certificates", "cert",
                              "'%s' and the key '%s' do not load together: %s",
                              cfg->certificates.cert, cfg->certificates.key, gnutls_strerror(rc));
        }
        gnutls_certificate_free_credentials(cred);
    }

    if (cfg->replica.allow_any)
        vr_config_check_dir(p, "replica", "default-storage", cfg->replica.default_storage);
    for (guint i = 0; i < cfg->replica.authorizations->len; i++) {
        VrConfigAuthzEntry *e = g_ptr_array_index(cfg->replica.authorizations, i);
        g_autofree char *group = g_strconcat(VR_CONFIG_AUTHZ_PREFIX, e->pattern, NULL);

        vr_config_check_dir(p, group, "storage", e->storage);
    }
}

static VrConfig *
vr_config_new(const char *origin)
{
    VrConfig *cfg = g_new0(VrConfig, 1);

    cfg->origin = g_strdup(origin);
    cfg->replica.authorizations = g_ptr_array_new_with_free_func(vr_config_authz_entry_free);
    cfg->network_map = vr_config_map_new();
    cfg->network_maps =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_hash_table_unref);
    cfg->interfaces =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, vr_config_interface_free);
    vr_config_set_defaults(vr_config_keys, G_N_ELEMENTS(vr_config_keys), cfg);
    return cfg;
}

void
vr_config_free(VrConfig *config)
{
    if (config == NULL)
        return;
    for (gsize i = 0; i < G_N_ELEMENTS(vr_config_keys); i++) {
        const VrConfigKey *k = &vr_config_keys[i];

        if (k->kind == VR_CONFIG_KIND_STRING || k->kind == VR_CONFIG_KIND_PATH)
            g_free(*(char **)((char *)config + k->offset));
    }
    vr_rate_schedule_free(config->primary.schedule);
    g_ptr_array_unref(config->replica.authorizations);
    g_hash_table_unref(config->network_map);
    g_hash_table_unref(config->network_maps);
    g_hash_table_unref(config->interfaces);
    g_free(config->origin);
    g_free(config);
}

/*
 * Parse @data into a configuration, every problem appended to @problems. NULL when the data
 * is no key file at all (one problem, *@syntax set).
 */
static VrConfig *
vr_config_parse(const char *data, gssize len, const char *origin, VrConfigCheckFlags flags,
                GPtrArray *problems, bool *syntax)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    g_autoptr(GHashTable) lines = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) bad = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GHashTable) patterns = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GError) local = NULL;
    g_autoptr(VrConfig) cfg = NULL;
    g_autofree char *why = NULL;
    g_auto(GStrv) groups = NULL;
    VrConfigParse p = {
        .origin = origin, .kf = kf, .lines = lines, .bad = bad, .problems = problems
    };
    gsize size = len < 0 ? strlen(data) : (gsize)len;
    guint bad_line = vr_config_scan(&p, data, size, &why);

    *syntax = false;
    /* KEEP_TRANSLATIONS: a "key[locale]" stays a key, to be refused as unknown. */
    if (!g_key_file_load_from_data(kf, data, size, G_KEY_FILE_KEEP_TRANSLATIONS, &local)) {
        *syntax = true;
        if (bad_line > 0)
            g_ptr_array_add(problems, g_strdup_printf("%s:%u: %s", origin, bad_line, why));
        else
            g_ptr_array_add(problems,
                            g_strdup_printf("%s: not a key file: %s", origin, local->message));
        return NULL;
    }

    cfg = vr_config_new(origin);
    groups = g_key_file_get_groups(kf, NULL);
    for (guint i = 0; groups[i] != NULL; i++) {
        const char *group = groups[i];
        bool fixed = false;

        for (gsize j = 0; j < G_N_ELEMENTS(vr_config_groups); j++)
            fixed = fixed || g_str_equal(group, vr_config_groups[j]);
        if (g_str_has_prefix(group, VR_CONFIG_AUTHZ_PREFIX))
            vr_config_parse_authz(&p, cfg, group, patterns);
        else if (g_str_equal(group, "network-map"))
            vr_config_parse_network_map(&p, cfg->network_map, group);
        else if (g_str_has_prefix(group, VR_CONFIG_MAP_PREFIX))
            vr_config_parse_scoped_map(&p, cfg, group);
        else if (g_str_has_prefix(group, VR_CONFIG_IFACE_PREFIX))
            vr_config_parse_interface(&p, cfg, group);
        else if (fixed)
            vr_config_parse_keys(&p, group, group, vr_config_keys, G_N_ELEMENTS(vr_config_keys),
                                 cfg);
        else
            vr_config_unknown_group(&p, group);
    }
    vr_config_validate(&p, cfg);
    if (flags & VR_CONFIG_CHECK_SYSTEM)
        vr_config_check_system(&p, cfg);
    return g_steal_pointer(&cfg);
}

VrConfig *
vr_config_load_data(const char *data, gssize len, const char *origin, GError **error)
{
    g_autoptr(GPtrArray) problems = g_ptr_array_new_with_free_func(g_free);
    bool syntax;
    g_autoptr(VrConfig) cfg =
        vr_config_parse(data, len, origin, VR_CONFIG_CHECK_DEFAULT, problems, &syntax);

    if (problems->len == 1) {
        g_set_error_literal(error, VR_CONFIG_ERROR,
                            syntax ? VR_CONFIG_ERROR_SYNTAX : VR_CONFIG_ERROR_INVALID,
                            g_ptr_array_index(problems, 0));
        return NULL;
    }
    if (problems->len > 1) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_INVALID,
                    "%s (and %u more problem%s: virt-replicad --check-config lists them all)",
                    (const char *)g_ptr_array_index(problems, 0), problems->len - 1,
                    problems->len > 2 ? "s" : "");
        return NULL;
    }
    return g_steal_pointer(&cfg);
}

/* The whole file @path (regular file, pipe, ...; not a directory), at most 1 MiB. */
static char *
vr_config_read(const char *path, gsize *len, GError **error)
{
    g_autoptr(GByteArray) buf = g_byte_array_new();
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int errsv = errno;

    if (fd < 0) {
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_READ, "cannot open '%s': %s", path,
                    g_strerror(errsv));
        return NULL;
    }
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_READ, "'%s' is a directory", path);
        return NULL;
    }
    for (;;) {
        guint8 chunk[8192];
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            errsv = errno;
            close(fd);
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_READ, "cannot read '%s': %s", path,
                        g_strerror(errsv));
            return NULL;
        }
        if (n == 0)
            break;
        g_byte_array_append(buf, chunk, n);
        if (buf->len > VR_CONFIG_MAX_SIZE) {
            close(fd);
            g_set_error(error, VR_CONFIG_ERROR, VR_CONFIG_ERROR_READ,
                        "'%s' is larger than %d bytes: not a configuration file", path,
                        VR_CONFIG_MAX_SIZE);
            return NULL;
        }
    }
    close(fd);
    *len = buf->len;
    g_byte_array_append(buf, (const guint8 *)"", 1);
    return (char *)g_byte_array_free(g_steal_pointer(&buf), FALSE);
}

VrConfig *
vr_config_load(const char *path, GError **error)
{
    g_autofree char *data = NULL;
    gsize len = 0;

    data = vr_config_read(path, &len, error);
    if (data == NULL)
        return NULL;
    return vr_config_load_data(data, len, path, error);
}

bool
vr_config_check_data(const char *data, gssize len, const char *origin, VrConfigCheckFlags flags,
                     GPtrArray *problems)
{
    guint before = problems->len;
    bool syntax;
    g_autoptr(VrConfig) cfg = vr_config_parse(data, len, origin, flags, problems, &syntax);

    return problems->len == before;
}

bool
vr_config_check(const char *path, VrConfigCheckFlags flags, GPtrArray *problems)
{
    g_autoptr(GError) local = NULL;
    g_autofree char *data = NULL;
    gsize len = 0;

    data = vr_config_read(path, &len, &local);
    if (data == NULL) {
        g_ptr_array_add(problems, g_strdup(local->message));
        return false;
    }
    return vr_config_check_data(data, len, path, flags, problems);
}

VrAuthz *
vr_config_new_authz(const VrConfig *config, GError **error)
{
    g_autoptr(VrAuthz) authz = NULL;
    g_autoptr(GError) local = NULL;

    if (config->replica.allow_any) {
        authz = vr_authz_new_allow_any(config->replica.default_storage,
                                       config->replica.default_trust_group, &local);
        if (authz == NULL) {
            g_propagate_prefixed_error(error, g_steal_pointer(&local),
                                       "%s: [replica] default-storage: ", config->origin);
        }
        return g_steal_pointer(&authz);
    }
    authz = vr_authz_new_table();
    for (guint i = 0; i < config->replica.authorizations->len; i++) {
        VrConfigAuthzEntry *e = g_ptr_array_index(config->replica.authorizations, i);

        if (!vr_authz_add(authz, e->pattern, e->storage, e->trust_group, &local)) {
            g_propagate_prefixed_error(
                error, g_steal_pointer(&local),
                "%s: [" VR_CONFIG_AUTHZ_PREFIX "%s] storage: ", config->origin, e->pattern);
            return NULL;
        }
    }
    return g_steal_pointer(&authz);
}
