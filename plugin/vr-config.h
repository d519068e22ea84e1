/*
 * vr-config.h: the daemon's configuration file, /etc/virt-replica/virt-replica.conf
 *
 * A GKeyFile read in two phases (STYLE.md): every key is read into a typed field against a
 * table of defaults (the defaults are text, parsed by the same code as the file's values),
 * then one validate step applies the rules between keys. Every problem is collected, not
 * only the first: vr_config_check() hands them all back (virt-replicad --check-config
 * prints them), vr_config_load() fails with the first and counts the others. Each message
 * names the file, the line when there is one, the group and key, the bad value and what
 * is expected:
 *
 *   virt-replica.conf:12: [replica] port: '70000' is not a port number (1-65535)
 *
 * Loading never touches the network, libvirt or any file but the configuration itself:
 * paths are checked for their form only (absolute), network specs for their syntax
 * (vr_net_parse_spec()). vr_config_check() with VR_CONFIG_CHECK_SYSTEM also looks at this
 * host (below). docs/config.md has every key with its default and every rule;
 * docs/virt-replica.conf.5 is the man page; etc/virt-replica.conf the commented example.
 *
 * Nothing here keeps global state; a VrConfig is read-only once loaded.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "vr-authz.h"
#include "vr-rate-limit.h"

G_BEGIN_DECLS

#define VR_CONFIG_ERROR (vr_config_error_quark())
GQuark vr_config_error_quark(void);

typedef enum {
    VR_CONFIG_ERROR_READ,    /* the file cannot be read */
    VR_CONFIG_ERROR_SYNTAX,  /* not a key file: a line that is no group, key or comment */
    VR_CONFIG_ERROR_INVALID, /* unknown group or key, bad value, a rule between keys */
} VrConfigErrorCode;

/* The default path of the configuration file. */
#define VR_CONFIG_DEFAULT_PATH "/etc/virt-replica/virt-replica.conf"

typedef enum {
    VR_CONFIG_LOG_ERROR,
    VR_CONFIG_LOG_WARNING,
    VR_CONFIG_LOG_INFO,
    VR_CONFIG_LOG_DEBUG,
} VrConfigLogLevel;

/* One [authorization:PATTERN] group. */
typedef struct {
    char *pattern;     /* as written: "primary1.dc1.example", "*.dc1.example", "*" */
    char *storage;     /* absolute path of the storage root */
    char *trust_group; /* [a-z0-9-]{1,32}; "default" when not given */
} VrConfigAuthzEntry;

/*
 * One [interface:MAC] group: where one virtual NIC of a failed-over domain is connected and
 * the address its guest gets (Hyper-V's failover TCP/IP per virtual NIC; docs/failover.md).
 */
typedef struct {
    char *mac;          /* the group's MAC, lower case: "52:54:00:12:34:56" */
    char *network;      /* a replica libvirt network; NULL: by the network maps */
    char *bridge;       /* or a replica host bridge; never both */
    char *ipv4;         /* "192.0.2.10/24"; NULL: none */
    char *ipv4_gateway; /* "192.0.2.1"; needs ipv4 */
    char *ipv6;         /* "2001:db8::10/64"; NULL: none */
    char *ipv6_gateway; /* needs ipv6 */
    char *dns;          /* as written: addresses separated by ',' or ' '; NULL: none */
} VrConfigInterface;

/*
 * The typed configuration. Strings are NULL when an optional key is not set; every other
 * field holds its default when its key is absent (docs/config.md).
 */
typedef struct {
    char *origin; /* the path (or origin) it was read from, for messages */

    struct {
        char *state_dir;            /* absolute; /var/lib/virt-replica */
        char *socket;               /* absolute; /run/virt-replica/virt-replicad.sock */
        char *socket_group;         /* NULL: root only, mode 0600; else 0660 for the group */
        char *libvirt_uri;          /* qemu:///system */
        VrConfigLogLevel log_level; /* info */
        guint max_active_transfers; /* 4, 1..64: cycles transferring at once on this host */
        guint monitoring_interval;  /* seconds, 3600: the window of the health statistics */
        guint history_days;         /* 30: days of cycle history kept in the state */
    } daemon;

    struct {
        char *ca;              /* absolute paths, PEM; ca, cert and key go together */
        char *cert;            /* this host's certificate (and chain) */
        char *key;             /* its private key */
        char *crl;             /* required while check_revocation and ca are set */
        bool check_revocation; /* true; Hyper-V's DisableCertRevocationCheck inverted */
    } certificates;

    struct {
        char *network;                 /* a vr-net.h spec; NULL: the route decides the source */
        uint64_t bandwidth;            /* bytes/s of this host's outgoing replication; 0: none */
        char *bandwidth_schedule;      /* as written; NULL: none */
        VrRateSchedule *schedule;      /* parsed, with @bandwidth outside its windows; or NULL */
        guint default_frequency;       /* seconds, 300, 5..86400 */
        guint default_recovery_points; /* 4, 0..24: additional points kept */
        bool compression;              /* true */
        guint rpo_critical_factor;     /* 3, 2..100: health Critical past this many periods */
    } primary;

    struct {
        bool enabled;              /* false */
        char *listen;              /* a vr-net.h spec; required when enabled */
        guint port;                /* 8443 */
        char *server_name;         /* this replica's DNS name; NULL: not set */
        bool allow_any;            /* false: the [authorization:*] table decides */
        char *default_storage;     /* absolute; required with allow_any */
        char *default_trust_group; /* "default" */
        guint point_interval;      /* seconds, 3600, 0..86400: spacing of recovery points */
        char *standby_name_rule;   /* "%n-replica"; NULL: the primary's name and UUID */
        char *test_network;        /* libvirt network of test failovers; NULL: none connected */
        guint guest_agent_wait;    /* seconds, 300, 0..3600: failover TCP/IP waits for the agent */
        uint64_t max_body_size;    /* bytes; G_MAXUINT64 (the default): no limit */
        GPtrArray *authorizations; /* VrConfigAuthzEntry in file order; never NULL */
    } replica;

    /*
     * [network-map]: a primary network name, or "bridge:NAME" for a primary bridge -> a
     * replica network name, or "bridge:NAME" for a replica bridge (vr-failover-net.h).
     * Never NULL.
     */
    GHashTable *network_map;
    /* [network-map:NAME]: NAME (relationship id or primary domain name) -> a map as above. */
    GHashTable *network_maps;
    /* [interface:MAC]: lower-case MAC -> VrConfigInterface. Never NULL. */
    GHashTable *interfaces;
} VrConfig;

/* Read and validate the file @path. (transfer full) */
VrConfig *vr_config_load(const char *path, GError **error);

/* The same from @data of @len bytes (-1: NUL-terminated); @origin names it in messages. */
VrConfig *vr_config_load_data(const char *data, gssize len, const char *origin, GError **error);

/* NULL-safe. */
void vr_config_free(VrConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrConfig, vr_config_free)

typedef enum {
    VR_CONFIG_CHECK_DEFAULT = 0,
    /*
     * Also check this host: the certificate files exist, the CA (and CRL) load as
     * vr_tls_policy_new() loads them, the key passes vr_tls_check_key_file() and loads with
     * the certificate (GnuTLS refuses a key that does not match), the storage roots are
     * directories, state-dir is a directory if it exists, the socket group exists. Networks
     * are not resolved. Run it as the daemon's user (root): key ownership is compared with
     * the caller's.
     */
    VR_CONFIG_CHECK_SYSTEM = 1 << 0,
} VrConfigCheckFlags;

/*
 * Every problem of the file @path: one message (char *, g_free) appended to @problems per
 * problem, in file order then rule order. True when there is none.
 */
bool vr_config_check(const char *path, VrConfigCheckFlags flags, GPtrArray *problems);
bool vr_config_check_data(const char *data, gssize len, const char *origin,
                          VrConfigCheckFlags flags, GPtrArray *problems);

/*
 * The authorization of the replica role: allow-any with default-storage and
 * default-trust-group, or the table of [authorization:PATTERN] groups in file order (the
 * first match wins). vr_authz_add() refuses a storage root that is not an existing
 * directory: its error (VR_AUTHZ_ERROR_CONFIG), prefixed with the file, group and key.
 * (transfer full)
 */
VrAuthz *vr_config_new_authz(const VrConfig *config, GError **error);

/* "error", "warning", "info", "debug". */
const char *vr_config_log_level_to_string(VrConfigLogLevel level);

G_END_DECLS
