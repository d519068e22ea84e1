/*
 * test-standby.c: the standby domain (plugin/vr-standby.h), as XML and in a real libvirtd
 *
 * /standby/xml/... check the transformation alone (no libvirt). /standby/libvirt/... define
 * a primary domain (TCG, no OS, never started) named with the test prefix and its standby
 * in the same libvirtd (qemu:///system) with the naming rule "%n-replica", so run-isolated.sh
 * removes both if the test dies; each fixture removes its domains and files itself.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "vr-standby.h"
#include "vr-test-util.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathContext, xmlXPathFreeContext)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathObject, xmlXPathFreeObject)

#define PRIMARY_UUID "3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d"
/* Python: uuid.uuid5(uuid.UUID(PRIMARY_UUID), "web-dr") and (..., "db-dr"). */
#define STANDBY_UUID_WEB "742c090b-5fa6-591a-9111-7817779b02b4"
#define STANDBY_UUID_DB  "79e22bbe-75df-542d-acb0-ab79f2523a8b"

/* A primary's inactive XML with what the transformation must change, and what it must keep. */
static const char primary_xml[] =
    "<domain type='kvm' id='7'>\n"
    "  <name>web</name>\n"
    "  <uuid>" PRIMARY_UUID "</uuid>\n"
    "  <genid>4a0b4e8c-8f36-4f0b-9b8a-2d58b0f4b2a1</genid>\n"
    "  <metadata>\n"
    "    <app:info xmlns:app='https://example.org/app'>keep me</app:info>\n"
    "    <vr:standby xmlns:vr='" VR_STANDBY_XMLNS "' relationship='old' epoch='9' "
    "state='failed-over'/>\n"
    "  </metadata>\n"
    "  <memory unit='KiB'>65536</memory>\n"
    "  <sysinfo type='smbios'><system>\n"
    "    <entry name='manufacturer'>Example</entry>\n"
    "    <entry name='uuid'>" PRIMARY_UUID "</entry>\n"
    "  </system></sysinfo>\n"
    "  <os>\n"
    "    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\n"
    "    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>\n"
    "    <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>/var/lib/libvirt/qemu/nvram/web_VARS.fd"
    "</nvram>\n"
    "  </os>\n"
    "  <features><acpi/></features>\n"
    "  <seclabel type='static' model='selinux' relabel='yes'>\n"
    "    <label>system_u:system_r:svirt_t:s0:c1,c2</label>\n"
    "  </seclabel>\n"
    "  <seclabel type='dynamic' model='dac' relabel='yes'/>\n"
    "  <devices>\n"
    "    <emulator>/usr/libexec/qemu-kvm</emulator>\n"
    "    <disk type='file' device='disk'>\n"
    "      <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>\n"
    "      <source file='/var/lib/libvirt/images/web.qcow2'>\n"
    "        <seclabel model='selinux' relabel='yes'><label>system_u:object_r:x_t</label>"
    "</seclabel>\n"
    "      </source>\n"
    "      <backingStore type='file'><format type='qcow2'/>"
    "<source file='/var/lib/libvirt/images/base.qcow2'/></backingStore>\n"
    "      <target dev='vda' bus='virtio'/>\n"
    "      <serial>web-root</serial>\n"
    "      <boot order='1'/>\n"
    "    </disk>\n"
    "    <disk type='block' device='disk'>\n"
    "      <driver name='qemu' type='raw'/>\n"
    "      <source dev='/dev/vg0/web-data'/>\n"
    "      <target dev='vdb' bus='virtio'/>\n"
    "    </disk>\n"
    "    <disk type='file' device='cdrom'>\n"
    "      <driver name='qemu' type='raw'/>\n"
    "      <source file='/srv/iso/install.iso'/>\n"
    "      <target dev='sda' bus='sata'/>\n"
    "      <readonly/>\n"
    "    </disk>\n"
    "    <interface type='network'>\n"
    "      <mac address='52:54:00:11:22:33'/>\n"
    "      <source network='prod' portid='a2b9a7a4-9c1d-4e57-8a8b-0d5e1f2f3a4b'/>\n"
    "      <model type='virtio'/>\n"
    "    </interface>\n"
    "    <interface type='network'>\n"
    "      <source network='backup'/>\n"
    "      <model type='virtio'/>\n"
    "    </interface>\n"
    "    <interface type='bridge'>\n"
    "      <source bridge='br0'/>\n"
    "    </interface>\n"
    "    <graphics type='vnc' port='5907' autoport='no' listen='192.0.2.10'>\n"
    "      <listen type='address' address='192.0.2.10'/>\n"
    "    </graphics>\n"
    "    <graphics type='spice' autoport='yes'>\n"
    "      <listen type='network' network='prod' address='192.0.2.11'/>\n"
    "    </graphics>\n"
    "    <audio id='1' type='none'/>\n"
    "  </devices>\n"
    "</domain>\n";

/* Standby disk paths, network map and config of the XML tests. */
typedef struct {
    GHashTable *disks;
    GHashTable *networks;
    VrStandbyConfig cfg;
} XmlSetup;

static void
xml_setup(XmlSetup *s)
{
    s->disks = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(s->disks, "vda", "/srv/replica/web/vda/failover.qcow2");
    g_hash_table_insert(s->disks, "vdb", "/srv/replica/web/vdb/failover.qcow2");
    s->networks = g_hash_table_new(g_str_hash, g_str_equal);
    g_hash_table_insert(s->networks, "prod", "dr-prod");
    s->cfg = (VrStandbyConfig){
        .relationship = "web-dr",
        .primary_host = "pri.example.org",
        .epoch = 3,
        .disk_paths = s->disks,
        .network_map = s->networks,
        .name_rule = "%n-replica",
    };
}

static void
xml_teardown(XmlSetup *s)
{
    g_clear_pointer(&s->disks, g_hash_table_unref);
    g_clear_pointer(&s->networks, g_hash_table_unref);
}

/* A parsed domain XML with XPath, the marker's namespace as prefix "vr". */
typedef struct {
    xmlDoc *doc;
    xmlXPathContext *ctx;
} Xml;

static void
xml_open(Xml *x, const char *text)
{
    x->doc = xmlReadMemory(text, strlen(text), "standby.xml", NULL, XML_PARSE_NONET);
    g_assert_nonnull(x->doc);
    x->ctx = xmlXPathNewContext(x->doc);
    xmlXPathRegisterNs(x->ctx, (const xmlChar *)"vr", (const xmlChar *)VR_STANDBY_XMLNS);
    xmlXPathRegisterNs(x->ctx, (const xmlChar *)"app", (const xmlChar *)"https://example.org/app");
}

static void
xml_close(Xml *x)
{
    g_clear_pointer(&x->ctx, xmlXPathFreeContext);
    g_clear_pointer(&x->doc, xmlFreeDoc);
}

/* string(@expr), "" when nothing matches. (transfer full) */
static char *
xml_str(Xml *x, const char *expr)
{
    g_autofree char *wrapped = g_strdup_printf("string(%s)", expr);
    g_autoptr(xmlXPathObject) obj = xmlXPathEvalExpression((const xmlChar *)wrapped, x->ctx);

    g_assert_nonnull(obj);
    return g_strdup(obj->stringval != NULL ? (const char *)obj->stringval : "");
}

static int
xml_count(Xml *x, const char *expr)
{
    g_autofree char *wrapped = g_strdup_printf("count(%s)", expr);
    g_autoptr(xmlXPathObject) obj = xmlXPathEvalExpression((const xmlChar *)wrapped, x->ctx);

    g_assert_nonnull(obj);
    return (int)obj->floatval;
}

#define assert_xml_str(x, expr, expected)           \
    do {                                            \
        g_autofree char *value_ = xml_str(x, expr); \
        g_assert_cmpstr(value_, ==, expected);      \
    } while (0)

static char *
build(const char *xml, const VrStandbyConfig *cfg)
{
    g_autoptr(GError) error = NULL;
    char *out = vr_standby_build_xml(xml, cfg, &error);

    g_assert_no_error(error);
    g_assert_nonnull(out);
    return out;
}

static void
test_xml_name_rule(void)
{
    XmlSetup s;
    g_autofree char *out = NULL;
    g_autofree char *again = NULL;
    g_autofree char *other = NULL;
    Xml x = { 0 };

    xml_setup(&s);
    out = build(primary_xml, &s.cfg);
    xml_open(&x, out);
    assert_xml_str(&x, "/domain/name", "web-replica");
    assert_xml_str(&x, "/domain/uuid", STANDBY_UUID_WEB);
    /* The SMBIOS UUID must equal <uuid>: it goes; the other entries stay. */
    g_assert_cmpint(xml_count(&x, "/domain/sysinfo/system/entry[@name='uuid']"), ==, 0);
    assert_xml_str(&x, "/domain/sysinfo/system/entry[@name='manufacturer']", "Example");
    xml_close(&x);

    /* Idempotent: the same inputs, the same XML. Another relationship, another UUID. */
    again = build(primary_xml, &s.cfg);
    g_assert_cmpstr(again, ==, out);
    s.cfg.relationship = "db-dr";
    s.cfg.name_rule = "dr-%n-%%1";
    other = build(primary_xml, &s.cfg);
    xml_open(&x, other);
    assert_xml_str(&x, "/domain/name", "dr-web-%1");
    assert_xml_str(&x, "/domain/uuid", STANDBY_UUID_DB);
    xml_close(&x);
    xml_teardown(&s);
}

static void
test_xml_same_name(void)
{
    XmlSetup s;
    g_autofree char *out = NULL;
    Xml x = { 0 };

    xml_setup(&s);
    s.cfg.name_rule = NULL;
    out = build(primary_xml, &s.cfg);
    xml_open(&x, out);
    assert_xml_str(&x, "/domain/name", "web");
    assert_xml_str(&x, "/domain/uuid", PRIMARY_UUID);
    assert_xml_str(&x, "/domain/sysinfo/system/entry[@name='uuid']", PRIMARY_UUID);
    xml_close(&x);
    xml_teardown(&s);
}

static void
test_xml_disks(void)
{
    XmlSetup s;
    g_autofree char *out = NULL;
    Xml x = { 0 };

    xml_setup(&s);
    out = build(primary_xml, &s.cfg);
    xml_open(&x, out);
    g_assert_cmpint(xml_count(&x, "/domain/devices/disk"), ==, 3);
    /* A qcow2 file each, at the given path, with no backing chain of the primary's. */
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/@type", "file");
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/source/@file",
                   "/srv/replica/web/vda/failover.qcow2");
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/driver/@type", "qcow2");
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/driver/@cache", "none");
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/driver/@discard", "unmap");
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/serial", "web-root");
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/boot/@order", "1");
    g_assert_cmpint(xml_count(&x, "/domain/devices/disk/backingStore"), ==, 0);
    g_assert_cmpint(xml_count(&x, "/domain/devices/disk[target/@dev='vda']/source"), ==, 1);
    /* A block device of the primary is a file on the replica too. */
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vdb']/@type", "file");
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vdb']/source/@file",
                   "/srv/replica/web/vdb/failover.qcow2");
    g_assert_cmpint(xml_count(&x, "/domain/devices/disk[target/@dev='vdb']/source/@dev"), ==, 0);
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vdb']/driver/@type", "qcow2");
    /* The CD-ROM drive stays, empty. */
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='sda']/@device", "cdrom");
    g_assert_cmpint(xml_count(&x, "/domain/devices/disk[target/@dev='sda']/source"), ==, 0);
    g_assert_cmpint(xml_count(&x, "/domain/devices/disk[target/@dev='sda']/readonly"), ==, 1);
    xml_close(&x);
    xml_teardown(&s);
}

static void
test_xml_networks(void)
{
    XmlSetup s;
    g_autofree char *out = NULL;
    Xml x = { 0 };

    xml_setup(&s);
    out = build(primary_xml, &s.cfg);
    xml_open(&x, out);
    assert_xml_str(&x, "/domain/devices/interface[1]/source/@network", "dr-prod");
    assert_xml_str(&x, "/domain/devices/interface[1]/mac/@address", "52:54:00:11:22:33");
    g_assert_cmpint(xml_count(&x, "/domain/devices/interface/source/@portid"), ==, 0);
    /* Unmapped names stay as they are. */
    assert_xml_str(&x, "/domain/devices/interface[2]/source/@network", "backup");
    assert_xml_str(&x, "/domain/devices/interface[3]/source/@bridge", "br0");
    /* A graphics listener on a network follows the map, without the primary's address. */
    assert_xml_str(&x, "/domain/devices/graphics[@type='spice']/listen/@network", "dr-prod");
    g_assert_cmpint(xml_count(&x, "/domain/devices/graphics[@type='spice']/listen/@address"), ==,
                    0);
    xml_close(&x);
    xml_teardown(&s);
}

/*
 * Bridges in the map ("bridge:NAME" on either side): a bridge becomes a network, a network a
 * bridge; the marker records every primary source for the failover (vr-failover-net.h).
 */
static void
test_xml_bridges(void)
{
    XmlSetup s;
    g_autofree char *out = NULL;
    Xml x = { 0 };

    xml_setup(&s);
    g_hash_table_insert(s.networks, "backup", "bridge:br-backup");
    g_hash_table_insert(s.networks, "bridge:br0", "dr-lan");
    out = build(primary_xml, &s.cfg);
    xml_open(&x, out);
    assert_xml_str(&x, "/domain/devices/interface[1]/@type", "network");
    assert_xml_str(&x, "/domain/devices/interface[1]/source/@network", "dr-prod");
    assert_xml_str(&x, "/domain/devices/interface[2]/@type", "bridge");
    assert_xml_str(&x, "/domain/devices/interface[2]/source/@bridge", "br-backup");
    g_assert_cmpint(xml_count(&x, "/domain/devices/interface[2]/source/@network"), ==, 0);
    assert_xml_str(&x, "/domain/devices/interface[3]/@type", "network");
    assert_xml_str(&x, "/domain/devices/interface[3]/source/@network", "dr-lan");
    g_assert_cmpint(xml_count(&x, "/domain/devices/interface[3]/source/@bridge"), ==, 0);
    /* The primary's sources, unmapped, by position and MAC. */
    g_assert_cmpint(xml_count(&x, "//vr:standby/vr:interface"), ==, 3);
    assert_xml_str(&x, "//vr:standby/vr:interface[1]/@mac", "52:54:00:11:22:33");
    assert_xml_str(&x, "//vr:standby/vr:interface[1]/@source", "prod");
    assert_xml_str(&x, "//vr:standby/vr:interface[2]/@index", "1");
    g_assert_cmpint(xml_count(&x, "//vr:standby/vr:interface[2]/@mac"), ==, 0);
    assert_xml_str(&x, "//vr:standby/vr:interface[2]/@source", "backup");
    assert_xml_str(&x, "//vr:standby/vr:interface[3]/@type", "bridge");
    assert_xml_str(&x, "//vr:standby/vr:interface[3]/@source", "br0");
    xml_close(&x);
    xml_teardown(&s);
}

static void
test_xml_host_specific(void)
{
    XmlSetup s;
    g_autofree char *out = NULL;
    Xml x = { 0 };

    xml_setup(&s);
    out = build(primary_xml, &s.cfg);
    xml_open(&x, out);
    g_assert_cmpint(xml_count(&x, "/domain/@id"), ==, 0);
    assert_xml_str(&x, "/domain/@type", "kvm");
    g_assert_cmpint(xml_count(&x, "/domain/devices/emulator"), ==, 0);
    /* libvirt picks a new generation ID and an NVRAM file for the standby's name. */
    g_assert_cmpint(xml_count(&x, "/domain/genid"), ==, 1);
    assert_xml_str(&x, "/domain/genid", "");
    assert_xml_str(&x, "/domain/os/nvram", "");
    assert_xml_str(&x, "/domain/os/nvram/@template", "/usr/share/OVMF/OVMF_VARS.fd");
    assert_xml_str(&x, "/domain/os/loader", "/usr/share/OVMF/OVMF_CODE.fd");
    assert_xml_str(&x, "/domain/os/type/@machine", "pc-q35-7.2");
    /* Labels of the primary's policy go; a dynamic label without one stays. */
    g_assert_cmpint(xml_count(&x, "//seclabel"), ==, 1);
    assert_xml_str(&x, "/domain/seclabel/@type", "dynamic");
    /* The primary's listen address goes; the fixed port stays. */
    g_assert_cmpint(xml_count(&x, "/domain/devices/graphics[@type='vnc']/@listen"), ==, 0);
    g_assert_cmpint(xml_count(&x, "/domain/devices/graphics[@type='vnc']/listen"), ==, 0);
    assert_xml_str(&x, "/domain/devices/graphics[@type='vnc']/@port", "5907");
    assert_xml_str(&x, "/domain/devices/graphics[@type='vnc']/@autoport", "no");
    /* Ids that are references, not the runtime id, stay. */
    assert_xml_str(&x, "/domain/devices/audio/@id", "1");
    xml_close(&x);
    xml_teardown(&s);
}

static void
test_xml_metadata(void)
{
    XmlSetup s;
    g_autofree char *out = NULL;
    g_autoptr(VrStandbyInfo) info = NULL;
    g_autoptr(VrStandbyInfo) none = NULL;
    Xml x = { 0 };

    xml_setup(&s);
    out = build(primary_xml, &s.cfg);
    xml_open(&x, out);
    /* One marker, ours; the other application's metadata is kept. */
    g_assert_cmpint(xml_count(&x, "/domain/metadata/vr:standby"), ==, 1);
    assert_xml_str(&x, "/domain/metadata/app:info", "keep me");
    assert_xml_str(&x, "/domain/metadata/vr:standby/@relationship", "web-dr");
    assert_xml_str(&x, "/domain/metadata/vr:standby/@primary-host", "pri.example.org");
    assert_xml_str(&x, "/domain/metadata/vr:standby/@primary-name", "web");
    assert_xml_str(&x, "/domain/metadata/vr:standby/@primary-uuid", PRIMARY_UUID);
    assert_xml_str(&x, "/domain/metadata/vr:standby/@epoch", "3");
    assert_xml_str(&x, "/domain/metadata/vr:standby/@state", "replica");
    xml_close(&x);

    /* What the hook will read from its stdin. */
    info = vr_standby_info_from_xml(out);
    g_assert_nonnull(info);
    g_assert_cmpstr(info->relationship, ==, "web-dr");
    g_assert_cmpstr(info->primary_host, ==, "pri.example.org");
    g_assert_cmpstr(info->primary_name, ==, "web");
    g_assert_cmpstr(info->primary_uuid, ==, PRIMARY_UUID);
    g_assert_cmpuint(info->epoch, ==, 3);
    g_assert_cmpstr(info->state, ==, VR_STANDBY_STATE_REPLICA);
    none = vr_standby_info_from_xml("<domain><name>x</name></domain>");
    g_assert_null(none);
    none = vr_standby_info_from_xml("<domain");
    g_assert_null(none);
    xml_teardown(&s);
}

/*
 * Refusals: [what, replace this part of primary_xml (NULL: the whole of it), by this, error
 * code, message part]
 */
typedef struct {
    const char *what;
    const char *from;
    const char *to;
    int code;
    const char *message;
} Refusal;

static const Refusal refusals[] = {
    { "malformed", "</domain>", "</domian>", VR_STANDBY_ERROR_INVALID, "does not parse" },
    { "empty", NULL, "", VR_STANDBY_ERROR_INVALID, "does not parse" },
    { "not a domain", NULL, "<network><name>web</name></network>", VR_STANDBY_ERROR_INVALID,
      "<network> at its root, not <domain>" },
    { "no uuid", "<uuid>" PRIMARY_UUID "</uuid>", "", VR_STANDBY_ERROR_INVALID, "no <uuid>" },
    { "bad uuid", "<uuid>3f1c", "<uuid>zz1c", VR_STANDBY_ERROR_INVALID, "is not valid" },
    { "unmapped disk", "<target dev='vdb'", "<target dev='vdc'", VR_STANDBY_ERROR_INVALID,
      "disk 'vdc' has no path on the replica" },
    { "hostdev", "<audio id='1' type='none'/>",
      "<hostdev mode='subsystem' type='pci' managed='yes'><source>"
      "<address domain='0' bus='6' slot='0' function='0'/></source></hostdev>",
      VR_STANDBY_ERROR_INVALID, "hostdev (type 'pci') is bound to the primary host's hardware" },
    { "interface hostdev", "<interface type='bridge'>\n      <source bridge='br0'/>",
      "<interface type='hostdev'><source><address type='pci' domain='0' bus='6' slot='0' "
      "function='1'/></source>",
      VR_STANDBY_ERROR_INVALID, "interface of type 'hostdev'" },
    { "lun", "<disk type='block' device='disk'>", "<disk type='block' device='lun'>",
      VR_STANDBY_ERROR_INVALID, "disk 'vdb': device 'lun'" },
    { "tpm passthrough", "<audio id='1' type='none'/>",
      "<tpm model='tpm-tis'><backend type='passthrough'><device path='/dev/tpm0'/></backend>"
      "</tpm>",
      VR_STANDBY_ERROR_INVALID, "passthrough TPM" },
};

static void
test_xml_refused(void)
{
    for (guint i = 0; i < G_N_ELEMENTS(refusals); i++) {
        const Refusal *r = &refusals[i];
        XmlSetup s;
        g_autoptr(GError) error = NULL;
        g_autoptr(GString) xml = g_string_new(primary_xml);
        g_autofree char *out = NULL;

        g_test_message("%s", r->what);
        if (r->from == NULL)
            g_string_assign(xml, r->to);
        else
            g_assert_cmpuint(g_string_replace(xml, r->from, r->to, 1), ==, 1);
        xml_setup(&s);
        out = vr_standby_build_xml(xml->str, &s.cfg, &error);
        g_assert_null(out);
        g_assert_error(error, VR_STANDBY_ERROR, r->code);
        if (strstr(error->message, r->message) == NULL)
            g_error("%s: '%s' does not say '%s'", r->what, error->message, r->message);
        xml_teardown(&s);
    }
}

/* Configurations that cannot work. */
static void
test_xml_bad_config(void)
{
    static const struct {
        const char *what;
        const char *rule;
        const char *disk;
        const char *path;
        const char *message;
    } cases[] = {
        { "bad rule", "%n-%x", NULL, NULL, "only '%n' and '%%' may follow '%'" },
        { "empty rule", "", NULL, NULL, "gives an empty name" },
        { "relative path", "%n-r", "vda", "failover.qcow2", "is not absolute" },
        { "one path twice", "%n-r", "vdb", "/srv/replica/web/vda/failover.qcow2",
          "disks 'vda' and 'vdb' have the same path" },
        { "no such disk", "%n-r", "vdz", "/srv/vdz.qcow2", "disk 'vdz' has a path but" },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        XmlSetup s;
        g_autoptr(GError) error = NULL;
        g_autofree char *out = NULL;

        g_test_message("%s", cases[i].what);
        xml_setup(&s);
        s.cfg.name_rule = cases[i].rule;
        if (cases[i].disk != NULL)
            g_hash_table_insert(s.disks, (char *)cases[i].disk, (char *)cases[i].path);
        out = vr_standby_build_xml(primary_xml, &s.cfg, &error);
        g_assert_null(out);
        g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_INVALID);
        if (strstr(error->message, cases[i].message) == NULL)
            g_error("%s: '%s' does not say '%s'", cases[i].what, error->message, cases[i].message);
        xml_teardown(&s);
    }
}

/* In libvirtd */

typedef struct {
    virConnectPtr conn;
    char *name;              /* the primary: <prefix>-<serial> */
    char *standby_name;      /* <name>-replica */
    virDomainPtr primary;    /* defined, never started */
    char *primary_xml;       /* its inactive XML, with secure parts */
    GPtrArray *files;        /* every file made, removed at the end */
    GPtrArray *domains;      /* names of every domain defined, undefined at the end */
    GHashTable *disk_paths;  /* vda, vdb -> the failover overlays (absent) */
    GHashTable *network_map; /* <name>-pri -> <name>-dr */
    VrStandbyConfig cfg;
} Fixture;

static char *
fixture_file(Fixture *fx, const char *suffix)
{
    g_autofree char *base = g_strdup_printf("%s-%s", fx->name, suffix);
    char *path = vr_test_path(base);

    g_ptr_array_add(fx->files, g_strdup(path));
    return path;
}

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    bool with_network = data == NULL;
    g_autofree char *vda = NULL;
    g_autofree char *vdb = NULL;
    g_autofree char *iso = NULL;
    g_autofree char *iface = NULL;
    g_autofree char *devices = NULL;

    fx->files = g_ptr_array_new_with_free_func(g_free);
    fx->domains = g_ptr_array_new_with_free_func(g_free);
    if (vr_test_skip_without("qemu-img"))
        return;
    fx->conn = vr_test_libvirt_connect();
    if (fx->conn == NULL)
        return;
    fx->name = g_strdup_printf("%s-%u", vr_test_prefix(), serial++);
    fx->standby_name = g_strdup_printf("%s-replica", fx->name);

    vda = fixture_file(fx, "vda.qcow2");
    vdb = fixture_file(fx, "vdb.qcow2");
    iso = fixture_file(fx, "cd.iso");
    vr_test_qcow2_create(vda, "16M");
    vr_test_qcow2_create(vdb, "16M");
    g_assert_true(g_file_set_contents(iso, "not an ISO", -1, NULL));
    if (with_network) {
        /* libvirt resolves networks when a domain starts, not when it is defined. */
        iface = g_strdup_printf("<interface type='network'><source network='%s-pri'/>"
                                "<model type='virtio'/></interface>",
                                fx->name);
    }
    /* TCG: the standby starts (paused) where there is no KVM too. */
    devices = g_strdup_printf("<disk type='file' device='disk'>"
                              "  <driver name='qemu' type='qcow2'/>"
                              "  <source file='%s'/>"
                              "  <target dev='vdb' bus='virtio'/>"
                              "</disk>"
                              "<disk type='file' device='cdrom'>"
                              "  <driver name='qemu' type='raw'/>"
                              "  <source file='%s'/>"
                              "  <target dev='sda' bus='sata'/>"
                              "  <readonly/>"
                              "</disk>"
                              "%s",
                              vdb, iso, iface != NULL ? iface : "");
    fx->primary = vr_test_domain_define(fx->conn, fx->name, vda, devices);
    g_ptr_array_add(fx->domains, g_strdup(fx->name));
    fx->primary_xml =
        virDomainGetXMLDesc(fx->primary, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    g_assert_nonnull(fx->primary_xml);

    /* The failover overlays: no file until a failover makes them (the guard). */
    fx->disk_paths = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
    g_hash_table_insert(fx->disk_paths, "vda", fixture_file(fx, "vda-failover.qcow2"));
    g_hash_table_insert(fx->disk_paths, "vdb", fixture_file(fx, "vdb-failover.qcow2"));
    fx->network_map = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_hash_table_insert(fx->network_map, g_strdup_printf("%s-pri", fx->name),
                        g_strdup_printf("%s-dr", fx->name));
    g_ptr_array_add(fx->domains, g_strdup(fx->standby_name));
    fx->cfg = (VrStandbyConfig){
        .relationship = fx->name,
        .primary_host = "primary.test",
        .epoch = 1,
        .disk_paths = fx->disk_paths,
        .network_map = fx->network_map,
        .name_rule = "%n-replica",
    };
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    if (fx->conn != NULL)
        vr_test_domains_undefine(fx->conn, fx->domains);
    for (guint i = 0; i < fx->files->len; i++)
        unlink(fx->files->pdata[i]);
    g_clear_pointer(&fx->primary, virDomainFree);
    g_clear_pointer(&fx->conn, virConnectClose);
    g_clear_pointer(&fx->files, g_ptr_array_unref);
    g_clear_pointer(&fx->domains, g_ptr_array_unref);
    g_clear_pointer(&fx->disk_paths, g_hash_table_unref);
    g_clear_pointer(&fx->network_map, g_hash_table_unref);
    g_free(fx->primary_xml);
    g_free(fx->name);
    g_free(fx->standby_name);
}

static virDomainPtr
define_standby(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    virDomainPtr dom = vr_standby_define(fx->conn, fx->primary_xml, &fx->cfg, &error);

    g_assert_no_error(error);
    g_assert_nonnull(dom);
    return dom;
}

static char *
domain_uuid(virDomainPtr dom)
{
    char uuid[VIR_UUID_STRING_BUFLEN];

    g_assert_cmpint(virDomainGetUUIDString(dom, uuid), ==, 0);
    return g_strdup(uuid);
}

static void
test_define(Fixture *fx, gconstpointer data)
{
    g_autofree char *standby_uuid = NULL;
    g_autofree char *primary_uuid = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *relationship = NULL;
    g_autoptr(VrStandbyInfo) info = NULL;
    g_autofree char *network = NULL;
    virDomainPtr dom;
    int autostart = -1;
    Xml x = { 0 };

    if (fx->conn == NULL)
        return;
    dom = define_standby(fx);
    g_assert_cmpstr(virDomainGetName(dom), ==, fx->standby_name);
    g_assert_cmpint(virDomainIsPersistent(dom), ==, 1);
    g_assert_cmpint(virDomainIsActive(dom), ==, 0);
    g_assert_cmpint(virDomainGetAutostart(dom, &autostart), ==, 0);
    g_assert_cmpint(autostart, ==, 0);
    standby_uuid = domain_uuid(dom);
    primary_uuid = domain_uuid(fx->primary);
    g_assert_cmpstr(standby_uuid, !=, primary_uuid);

    /* What libvirt stored, not what we sent. */
    xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
    xml_open(&x, xml);
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/source/@file",
                   g_hash_table_lookup(fx->disk_paths, "vda"));
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vdb']/source/@file",
                   g_hash_table_lookup(fx->disk_paths, "vdb"));
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vda']/driver/@type", "qcow2");
    g_assert_cmpint(xml_count(&x, "/domain/devices/disk[@device='cdrom']"), ==, 1);
    g_assert_cmpint(xml_count(&x, "/domain/devices/disk[@device='cdrom']/source"), ==, 0);
    network = g_strdup_printf("%s-dr", fx->name);
    assert_xml_str(&x, "/domain/devices/interface/source/@network", network);
    assert_xml_str(&x, "/domain/metadata/vr:standby/@state", "replica");
    assert_xml_str(&x, "/domain/metadata/vr:standby/@primary-uuid", primary_uuid);
    xml_close(&x);

    g_assert_true(vr_standby_is_standby(dom, &relationship));
    g_assert_cmpstr(relationship, ==, fx->name);
    info = vr_standby_info_get(dom);
    g_assert_nonnull(info);
    g_assert_cmpstr(info->primary_name, ==, fx->name);
    g_assert_cmpstr(info->primary_host, ==, "primary.test");
    g_assert_cmpuint(info->epoch, ==, 1);
    g_assert_false(vr_standby_is_standby(fx->primary, NULL));
    virDomainFree(dom);
}

static void
test_redefine(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrStandbyInfo) info = NULL;
    g_autofree char *first_uuid = NULL;
    g_autofree char *second_uuid = NULL;
    virDomainPtr dom;
    virDomainPtr again;
    int autostart = -1;

    if (fx->conn == NULL)
        return;
    dom = define_standby(fx);
    first_uuid = domain_uuid(dom);
    /* Someone turned autostart on: a define keeps it, so it is turned off again. */
    g_assert_cmpint(virDomainSetAutostart(dom, 1), ==, 0);
    virDomainFree(dom);

    /* Same UUID; the update is in. */
    fx->cfg.epoch = 2;
    again = define_standby(fx);
    second_uuid = domain_uuid(again);
    g_assert_cmpstr(second_uuid, ==, first_uuid);
    g_assert_cmpint(virDomainGetAutostart(again, &autostart), ==, 0);
    g_assert_cmpint(autostart, ==, 0);
    info = vr_standby_info_get(again);
    g_assert_cmpuint(info->epoch, ==, 2);
    virDomainFree(again);

    /* A stale epoch does not go back. */
    fx->cfg.epoch = 1;
    dom = vr_standby_define(fx->conn, fx->primary_xml, &fx->cfg, &error);
    g_assert_null(dom);
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "epoch 2"));
    g_clear_error(&error);

    /* Without a naming rule on the primary's own libvirtd: that is the primary. */
    fx->cfg.epoch = 2;
    fx->cfg.name_rule = NULL;
    dom = vr_standby_define(fx->conn, fx->primary_xml, &fx->cfg, &error);
    g_assert_null(dom);
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "is not a virt-replica standby"));
    g_assert_false(vr_standby_is_standby(fx->primary, NULL));
}

/* A domain with the standby's name that is not our standby is never touched. */
static void
test_foreign(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *foreign_xml = NULL;
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    virDomainPtr foreign;
    virDomainPtr dom;

    if (fx->conn == NULL)
        return;
    foreign_xml = g_strdup_printf("<domain type='qemu'><name>%s</name>"
                                  "<memory unit='MiB'>32</memory>"
                                  "<os><type arch='x86_64' machine='q35'>hvm</type></os>"
                                  "<devices><memballoon model='none'/></devices></domain>",
                                  fx->standby_name);
    foreign = virDomainDefineXML(fx->conn, foreign_xml);
    g_assert_nonnull(foreign);
    before = virDomainGetXMLDesc(foreign, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);

    dom = vr_standby_define(fx->conn, fx->primary_xml, &fx->cfg, &error);
    g_assert_null(dom);
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, fx->standby_name));
    g_clear_error(&error);
    g_assert_false(vr_standby_undefine(fx->conn, fx->standby_name, fx->name, &error));
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_clear_error(&error);

    after = virDomainGetXMLDesc(foreign, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    g_assert_cmpstr(after, ==, before);
    g_assert_false(vr_standby_is_standby(foreign, NULL));
    virDomainFree(foreign);
}

/* The standby of another relationship is not ours either. */
static void
test_other_relationship(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *relationship = NULL;
    virDomainPtr dom;

    if (fx->conn == NULL)
        return;
    dom = define_standby(fx);
    virDomainFree(dom);

    fx->cfg.relationship = "someone-else";
    dom = vr_standby_define(fx->conn, fx->primary_xml, &fx->cfg, &error);
    g_assert_null(dom);
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "not 'someone-else'"));
    g_clear_error(&error);
    g_assert_false(vr_standby_undefine(fx->conn, fx->standby_name, "someone-else", &error));
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);

    dom = virDomainLookupByName(fx->conn, fx->standby_name);
    g_assert_nonnull(dom);
    g_assert_true(vr_standby_is_standby(dom, &relationship));
    g_assert_cmpstr(relationship, ==, fx->name);
    virDomainFree(dom);
}

/*
 * The guard: the standby's disks are the failover overlays, which do not exist, so a start
 * fails before QEMU runs and libvirt names the missing file. Once they exist (as a failover
 * makes them) the very same definition starts.
 */
static void
test_start_guard(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    const char *vda = g_hash_table_lookup(fx->disk_paths, "vda");
    const char *vdb = g_hash_table_lookup(fx->disk_paths, "vdb");
    const char *message;
    virDomainPtr dom;
    virDomainPtr again;

    if (fx->conn == NULL)
        return;
    dom = define_standby(fx);
    g_assert_cmpint(virDomainCreate(dom), <, 0);
    message = virGetLastErrorMessage();
    g_test_message("libvirt: %s", message);
    /* libvirt 9.0 checks the disks last to first: it names vdb's overlay. */
    g_assert_true(strstr(message, vda) != NULL || strstr(message, vdb) != NULL);
    g_assert_nonnull(strstr(message, "Cannot access storage file"));
    g_assert_nonnull(strstr(message, "No such file or directory"));
    g_assert_cmpint(virDomainIsActive(dom), ==, 0);

    /* A failover's overlays: now it starts (paused: no guest runs). */
    vr_test_qcow2_create(vda, "16M");
    vr_test_qcow2_create(vdb, "16M");
    if (virDomainCreateWithFlags(dom, VIR_DOMAIN_START_PAUSED) < 0)
        g_error("the standby does not start: %s", virGetLastErrorMessage());
    g_assert_cmpint(virDomainIsActive(dom), ==, 1);

    /* A running standby is neither redefined nor undefined. */
    again = vr_standby_define(fx->conn, fx->primary_xml, &fx->cfg, &error);
    g_assert_null(again);
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "is running"));
    g_clear_error(&error);
    g_assert_false(vr_standby_undefine(fx->conn, fx->standby_name, fx->name, &error));
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_assert_cmpint(virDomainDestroy(dom), ==, 0);
    virDomainFree(dom);
}

/*
 * The XML tests' primary (firmware, NVRAM, labels, a block device, graphics, SMBIOS...) as
 * the primary: libvirt takes its standby, validated against its schema.
 */
static void
test_define_rich(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GString) xml = g_string_new(primary_xml);
    g_autofree char *name = g_strdup_printf("<name>%s</name>", fx->name);
    g_autofree char *stored = NULL;
    g_autofree char *nvram = NULL;
    virDomainPtr dom;
    Xml x = { 0 };

    if (fx->conn == NULL)
        return;
    g_assert_cmpuint(g_string_replace(xml, "<name>web</name>", name, 1), ==, 1);
    g_assert_cmpuint(g_string_replace(xml, "type='kvm'", "type='qemu'", 1), ==, 1);
    dom = vr_standby_define(fx->conn, xml->str, &fx->cfg, &error);
    g_assert_no_error(error);
    g_assert_nonnull(dom);

    stored = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
    xml_open(&x, stored);
    assert_xml_str(&x, "/domain/name", fx->standby_name);
    /* libvirt's own choices where the primary's went. */
    nvram = g_strdup_printf("/var/lib/libvirt/qemu/nvram/%s_VARS.fd", fx->standby_name);
    assert_xml_str(&x, "/domain/os/nvram", nvram);
    assert_xml_str(&x, "/domain/devices/emulator", "/usr/bin/qemu-system-x86_64");
    g_assert_cmpint(xml_count(&x, "/domain/genid"), ==, 1);
    g_assert_cmpint(xml_count(&x, "/domain/genid[text()='4a0b4e8c-8f36-4f0b-9b8a-2d58b0f4b2a1']"),
                    ==, 0);
    assert_xml_str(&x, "/domain/devices/disk[target/@dev='vdb']/source/@file",
                   g_hash_table_lookup(fx->disk_paths, "vdb"));
    assert_xml_str(&x, "/domain/metadata/vr:standby/@primary-uuid", PRIMARY_UUID);
    xml_close(&x);
    virDomainFree(dom);
}

static void
test_undefine(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    virDomainPtr dom;

    if (fx->conn == NULL)
        return;
    dom = define_standby(fx);
    virDomainFree(dom);
    g_assert_true(vr_standby_undefine(fx->conn, fx->standby_name, fx->name, &error));
    g_assert_no_error(error);
    dom = virDomainLookupByName(fx->conn, fx->standby_name);
    g_assert_null(dom);
    g_assert_cmpint(virGetLastErrorCode(), ==, VIR_ERR_NO_DOMAIN);
    /* Gone already: nothing to do. */
    g_assert_true(vr_standby_undefine(fx->conn, fx->standby_name, fx->name, &error));
    g_assert_no_error(error);

    /* Never the primary. */
    g_assert_false(vr_standby_undefine(fx->conn, fx->name, fx->name, &error));
    g_assert_error(error, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_assert_nonnull(strstr(error->message, "is not a virt-replica standby"));
    g_assert_cmpint(virDomainIsPersistent(fx->primary), ==, 1);
}

int
main(int argc, char **argv)
{
    vr_test_init(&argc, &argv);

    g_test_add_func("/standby/xml/name-rule", test_xml_name_rule);
    g_test_add_func("/standby/xml/same-name", test_xml_same_name);
    g_test_add_func("/standby/xml/disks", test_xml_disks);
    g_test_add_func("/standby/xml/networks", test_xml_networks);
    g_test_add_func("/standby/xml/bridges", test_xml_bridges);
    g_test_add_func("/standby/xml/host-specific", test_xml_host_specific);
    g_test_add_func("/standby/xml/metadata", test_xml_metadata);
    g_test_add_func("/standby/xml/refused", test_xml_refused);
    g_test_add_func("/standby/xml/bad-config", test_xml_bad_config);

#define ADD(path, data, func) g_test_add(path, Fixture, data, fixture_setup, func, fixture_teardown)
    ADD("/standby/libvirt/define", NULL, test_define);
    ADD("/standby/libvirt/redefine", NULL, test_redefine);
    ADD("/standby/libvirt/foreign", NULL, test_foreign);
    ADD("/standby/libvirt/other-relationship", NULL, test_other_relationship);
    ADD("/standby/libvirt/define-rich", NULL, test_define_rich);
    ADD("/standby/libvirt/start-guard", "no network", test_start_guard);
    ADD("/standby/libvirt/undefine", NULL, test_undefine);
#undef ADD

    return g_test_run();
}
