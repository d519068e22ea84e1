/*
 * vr-failover-net.h: networks and guest IP configuration of a failed-over domain
 *
 * Two steps of a failover (vr-failover.h), both documented in docs/failover.md, "Networks
 * at failover" and "Failover TCP/IP":
 *
 * 1. Network mapping, just before the failed-over domain (or the test copy) is defined and
 *    started. Each <interface> of type network or bridge is connected by the first rule
 *    that names it, from the primary's source the standby recorded in its marker
 *    (<vr:interface mac=... type=... source=.../>, vr-standby.h):
 *      a. [interface:MAC] network or bridge (per virtual NIC);
 *      b. [network-map:NAME], NAME the relationship id, then the primary's domain name;
 *      c. [network-map];
 *      d. the primary's own name.
 *    A map's keys and values are a network NAME or "bridge:NAME". The target must exist on
 *    this host (an active libvirt network, a host interface for a bridge): otherwise the
 *    interface becomes type='ethernet' with <link state='down'/>, connected to nothing,
 *    its MAC kept, and a warning names it. A standby that cannot start because of a missing
 *    network would be a failed failover; an unconnected NIC can be fixed while it runs
 *    (virsh domif-setlink, virsh update-device).
 *    Interfaces of other types (direct, user, vhostuser, ...) are left alone.
 *
 * 2. Failover TCP/IP, just after the start: [interface:MAC] ipv4, ipv6, their gateways and
 *    dns, pushed through qemu-guest-agent (libvirt's virDomainQemuAgentCommand) into a
 *    Linux guest, with guest-exec of the guest's own `ip` (and `resolvectl` for DNS): see
 *    vr_failover_net_guest_commands(). Nothing configured: nothing happens. No agent
 *    channel in the domain: "not-applied" at once. Otherwise "pending", and a watcher
 *    asks the agent: each attempt (all its agent commands, 60 s at most) runs in a worker
 *    thread (GTask), one at a time, never on the caller's main context, which only applies
 *    each outcome; a connected channel is tried at once, else every 2 s, up to [replica]
 *    guest-agent-wait seconds, then it records "applied", "failed" or "not-applied" with
 *    the reason in the relationship's failover record of the state database. The failover
 *    itself never fails because of this step.
 *
 * Called from the daemon's main context only, as vr-failover.h. The warnings of step 1 and
 * an outcome of step 2 that is not "applied" are logged with g_message() (the journal's
 * notice) besides the answer: the watcher's outcome has nobody else to tell.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>
#include <json-c/json.h>
#include <libvirt/libvirt.h>

#include "vr-config.h"
#include "vr-state.h"

G_BEGIN_DECLS

/* The marker's child that records a primary interface's source (vr-standby.c writes it). */
#define VR_FAILOVER_NET_RECORD "interface"

/* The outcomes of failover TCP/IP ("guest_ip": {"state": ...}). */
#define VR_FAILOVER_NET_IP_NONE        "not-configured"
#define VR_FAILOVER_NET_IP_PENDING     "pending"
#define VR_FAILOVER_NET_IP_APPLIED     "applied"
#define VR_FAILOVER_NET_IP_FAILED      "failed"
#define VR_FAILOVER_NET_IP_NOT_APPLIED "not-applied"
/* A pending push the daemon's start could not resume (the domain stopped meanwhile). */
#define VR_FAILOVER_NET_IP_ABANDONED "abandoned"

/* Whether @kind ("network" or "bridge") @name can be connected to on this host. */
typedef bool (*VrFailoverNetExistsFunc)(const char *kind, const char *name, gpointer data);

/*
 * The pure mapping: @xml (a domain XML with the standby marker) with every interface
 * connected as step 1 says, by @config (NULL: no map) and @exists (NULL: everything
 * exists). @report_out (transfer full), an array of one object per interface: {"mac",
 * "primary" (e.g. "network:prod"), "source" ("network:dr-prod", "bridge:br0" or null),
 * "connected", "rule" ("interface", "network-map:web", "network-map", "same-name"),
 * "warning" (when not connected)}. (transfer full)
 */
char *vr_failover_net_map_xml(const char *xml, const VrConfig *config,
                              VrFailoverNetExistsFunc exists, gpointer data,
                              json_object **report_out, GError **error);

/*
 * The commands failover TCP/IP runs in a Linux guest for @iface on the guest's interface
 * @ifname: a GPtrArray of argv (GStrv) in order. Pure. (transfer full)
 */
GPtrArray *vr_failover_net_guest_commands(const VrConfigInterface *iface, const char *ifname);

typedef struct _VrFailoverNet VrFailoverNet;

/*
 * @config, @conn and @state are borrowed and outlive the object; @config NULL: no map and
 * no failover TCP/IP. (transfer full)
 */
VrFailoverNet *vr_failover_net_new(const VrConfig *config, virConnectPtr conn, VrState *state);
/*
 * Stops the watchers: what they have not recorded stays "pending" in the state, with its
 * intent (vr_failover_net_resume()).
 */
void vr_failover_net_free(VrFailoverNet *net);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrFailoverNet, vr_failover_net_free)

/*
 * Step 1 on @xml against this host's networks and bridges; each warning is logged (warning)
 * once. @report_out: {"interfaces": [...], "warnings": [...]} (transfer full). (transfer
 * full) NULL only when @xml does not parse.
 */
char *vr_failover_net_prepare(VrFailoverNet *net, const char *xml, json_object **report_out,
                              GError **error);

/*
 * The test copy's network: @test_network when it is an active network of this host, else
 * NULL (unconnected interfaces) with a warning in @report ({"warnings": [...]}, made when
 * NULL). (transfer none: @test_network or NULL)
 */
const char *vr_failover_net_test_network(VrFailoverNet *net, const char *test_network,
                                         json_object **report);

/*
 * The failover TCP/IP of the failover request, {"MAC": {"ipv4": ..., "ipv4-gateway": ...,
 * "ipv6": ..., "ipv6-gateway": ..., "dns": ...}}, checked as [interface:MAC] groups of the
 * configuration are (the same messages, origin "failover request"); network and bridge are
 * the configuration's alone. (transfer full) NULL with VR_CONFIG_ERROR_INVALID.
 */
VrConfig *vr_failover_net_parse_request(json_object *interfaces, GError **error);

/*
 * While @request is set (borrowed; NULL: none), its [interface:MAC] groups replace those of
 * the configuration for failover TCP/IP, MAC by MAC.
 */
void vr_failover_net_set_request(VrFailoverNet *net, const VrConfig *request);

/*
 * Step 2 for @dom, just started, the failed-over domain or test copy of @relationship,
 * recorded in its config under @record ("failover" or "test_failover"). Adds "guest_ip"
 * to @report: {"state", "reason", "interfaces": [...]}.
 */
void vr_failover_net_guest_ip(VrFailoverNet *net, virDomainPtr dom, const char *relationship,
                              const char *record, json_object *report);

/*
 * At the daemon's start: each push that was pending when the daemon last stopped (its
 * intent in the state database, written before the first attempt and removed with the
 * outcome) is resumed when its domain runs and its failover record (or, after a planned
 * failover with reverse replication, the relationship's row) still names it: "guest_ip"
 * becomes "pending" again with "resumed": {"count", "time"}, the watcher asks the agent for
 * what is left of the wait (one attempt at least), and the outcome keeps "resumed". A domain
 * that no longer runs, or a push resumed 3 times already: "abandoned" with the reason;
 * neither naming it any more (failed back, cancelled): the intent is dropped with a notice.
 */
void vr_failover_net_resume(VrFailoverNet *net);

/*
 * For the relationship status: {"failover": NETWORK, "test_failover": NETWORK} from the
 * records of @config_json (a relationship's config), each the "network" member a failover
 * recorded (with the latest failover TCP/IP outcome), or NULL when there is none.
 * (transfer full)
 */
json_object *vr_failover_net_status(const char *config_json);

G_END_DECLS
