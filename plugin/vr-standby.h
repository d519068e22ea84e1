/*
 * vr-standby.h: the standby domain of a relationship, in the replica host's libvirt
 *
 * At the first replication the replica defines (never starts) a domain from the primary's
 * inactive domain XML (virDomainGetXMLDesc with VIR_DOMAIN_XML_INACTIVE |
 * VIR_DOMAIN_XML_SECURE), so that a failover only has to create the overlays and start it:
 *
 *   - every disk (device='disk') is a file on the replica, given by target dev: a qcow2
 *     without <backingStore>; cdrom and floppy drives are defined empty;
 *   - <interface type='network'> and <interface type='bridge'> (and graphics listening on a
 *     network) use the replica's networks and bridges through a map; names the map lacks
 *     stay as they are; the primary's source of each interface is recorded in the marker
 *     (a failover maps it again: vr-failover-net.h);
 *   - what is host-specific and would break a define or a start on another host goes:
 *     <emulator> (libvirt picks the replica's), the NVRAM path (libvirt makes one for the
 *     standby's name; the template stays), security labels, listen addresses of graphics
 *     other than loopback and wildcard, the runtime id; a <genid> is made new by libvirt;
 *     devices bound to the primary's hardware are refused: <hostdev>, <interface
 *     type='hostdev'>, <disk device='lun'>, a passthrough TPM;
 *   - autostart is off;
 *   - <metadata> holds the marker (namespace VR_STANDBY_XMLNS):
 *       <vr:standby xmlns:vr="https://virt-replica.org/xmlns/standby/1" relationship="r1"
 *                   primary-host="pri.example" primary-name="web" primary-uuid="..."
 *                   epoch="1" state="replica">
 *         <vr:interface index="0" mac="52:54:00:12:34:56" type="network" source="prod"/>
 *       </vr:standby>
 *
 * Guard: a standby must not run outside a failover (it would boot an inconsistent disk, and
 * a recovery point must never be written). Two locks, both documented in docs/standby.md:
 *   1. The disk paths the caller gives are the failover overlays (e.g.
 *      "<disk dir>/failover.qcow2"), files only a failover creates on top of the chosen
 *      recovery point. Until then `virsh start` fails before QEMU runs: libvirt 9.0 says
 *      "Cannot access storage file '<path>' (as uid:N, gid:N): No such file or directory".
 *   2. state="replica" in the marker: the libvirt hook (virsh-ext/) refuses to start a
 *      domain with that marker; a failover changes the state first.
 *
 * When primary and replica share one libvirtd (tests, the demo), a naming rule gives the
 * standby its own name ("%n-replica") and a UUID derived from the primary's UUID and the
 * relationship (UUIDv5), so defining it again is idempotent.
 *
 * Errors are VR_STANDBY_ERROR. Nothing here logs; libvirt's own error handler still prints
 * (the daemon installs its own with virSetErrorFunc). Thread-safe as far as the libvirt
 * connection is.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <libvirt/libvirt.h>

G_BEGIN_DECLS

#define VR_STANDBY_ERROR (vr_standby_error_quark())
GQuark vr_standby_error_quark(void);

typedef enum {
    VR_STANDBY_ERROR_INVALID,  /* the primary XML does not parse or lacks its name or UUID, a
                                * disk without a path, a device bound to the primary's
                                * hardware, a bad configuration */
    VR_STANDBY_ERROR_CONFLICT, /* a domain with the standby's name or UUID that is not the
                                * standby of this relationship, a standby that runs, a stale
                                * epoch */
    VR_STANDBY_ERROR_FAILED,   /* libvirt failed (its message) */
} VrStandbyErrorCode;

/* The XML namespace of the standby marker in <metadata>. */
#define VR_STANDBY_XMLNS "https://virt-replica.org/xmlns/standby/1"
/* The marker's state until a failover: the hook refuses to start the domain. */
#define VR_STANDBY_STATE_REPLICA "replica"

typedef struct {
    const char *relationship; /* required: the relationship's identifier */
    const char *primary_host; /* the primary's host name, for the marker; NULL: none */
    uint64_t epoch;           /* the relationship's epoch, for the marker */
    /*
     * Target dev ("vda") -> the absolute path of the file the standby's disk uses (the
     * failover overlay: the guard). Every disk of the primary must be there, and nothing
     * else. NULL: no disk may be present.
     */
    GHashTable *disk_paths;
    /*
     * Primary network name, or "bridge:NAME" for a primary bridge -> replica network name,
     * or "bridge:NAME" for a replica bridge (VrConfig's [network-map]); unmapped names stay.
     * NULL: none.
     */
    GHashTable *network_map;
    /*
     * NULL: the standby has the primary's name and UUID (separate hosts). Else the
     * standby's name, with "%n" for the primary's name and "%%" for '%' (e.g.
     * "%n-replica"), and a UUID of its own: UUIDv5 in the primary's UUID as namespace of
     * the relationship's identifier.
     */
    const char *name_rule;
} VrStandbyConfig;

/* The marker of a standby domain. */
typedef struct {
    char *relationship;
    char *primary_host; /* NULL when the marker has none */
    char *primary_name;
    char *primary_uuid;
    uint64_t epoch;
    char *state; /* VR_STANDBY_STATE_REPLICA until a failover */
} VrStandbyInfo;

void vr_standby_info_free(VrStandbyInfo *info);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrStandbyInfo, vr_standby_info_free)

/*
 * The standby's domain XML from the primary's inactive domain XML @primary_xml: a pure
 * transformation (no libvirt call), as the top of this file says. (transfer full)
 */
char *vr_standby_build_xml(const char *primary_xml, const VrStandbyConfig *cfg, GError **error);

/*
 * Define the standby in @conn (never start it) and turn its autostart off. Refused
 * (CONFLICT) when a domain with its name or UUID exists and is not the standby of
 * @cfg->relationship with the same name and UUID, when that standby is active, or when its
 * marker has a higher epoch than @cfg->epoch. Defining it again updates it. (transfer full)
 */
virDomainPtr vr_standby_define(virConnectPtr conn, const char *primary_xml,
                               const VrStandbyConfig *cfg, GError **error);

/*
 * The marker in a domain XML: a whole <domain> (e.g. what the libvirt hook reads on its
 * stdin), or the marker element alone, as virDomainGetMetadata() returns it (without its
 * namespace). NULL when there is none, or it lacks the relationship or has a bad epoch.
 * (transfer full)
 */
VrStandbyInfo *vr_standby_info_from_xml(const char *xml);

/*
 * The marker of @dom's persistent definition, or NULL (no marker, a transient domain, a
 * libvirt error). (transfer full)
 */
VrStandbyInfo *vr_standby_info_get(virDomainPtr dom);

/*
 * Whether @dom is a virt-replica standby; when it is and @relationship_out is not NULL, the
 * relationship it belongs to. (transfer full)
 */
bool vr_standby_is_standby(virDomainPtr dom, char **relationship_out);

/*
 * Undefine the standby @name of @relationship (with its NVRAM, TPM state and snapshot and
 * checkpoint metadata). Nothing to do when no domain has that name. Refused (CONFLICT) for a
 * domain that is not the standby of @relationship, or that is active.
 */
bool vr_standby_undefine(virConnectPtr conn, const char *name, const char *relationship,
                         GError **error);

G_END_DECLS
