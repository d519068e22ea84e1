/*
 * test-replica-standby.c: the standby domain defined by the replica sink, from the domain
 * XML the primary sends, in a real libvirtd
 *
 * Each test runs a VrReceiver on 127.0.0.1 (the test PKI of make-pki.sh) with the replica
 * sink over a storage root of its own, a state database, and a standby configured on
 * qemu:///system with the naming rule "%n-replica": primary and standby share the libvirtd.
 * The primary is a domain defined (TCG, no OS, never started) with the test prefix, so
 * run-isolated.sh removes it and its standby if the test dies; its inactive secure XML goes
 * to the replica with vr_sender_put_domain(), and cycles of its disk vda with
 * vr_sender_upload_file(), each by a VrSender in a thread while the receiver runs here.
 * Every fixture undefines the domains it made.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>

#include "vr-receiver.h"
#include "vr-replica-sink.h"
#include "vr-sender.h"
#include "vr-standby.h"
#include "vr-state.h"
#include "vr-test-replica.h"
#include "vr-test-transport.h"
#include "vr-test-util.h"

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathContext, xmlXPathFreeContext)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathObject, xmlXPathFreeObject)

#define MiB       (1024 * 1024)
#define DISK_SIZE (16 * MiB)

static char *pki;          /* where make-pki.sh wrote the PKI, or NULL */
static char *pki_skip_why; /* why every test skips */

typedef struct {
    VrTestReplica r; /* with a state database; work has the primary's image */
    virConnectPtr conn;
    char *name;         /* the primary: <prefix>-<serial> */
    char *standby_name; /* <name>-replica */
    char *primary_xml;  /* its inactive secure XML */
    char *primary_uuid; /* its UUID */
    char *failover;     /* <root>/r1/vda/failover.qcow2: the standby's disk */
    GPtrArray *domains; /* names of every domain the test may have made */
} Fixture;

/* The receiver and the sink (as at a replica's start), the standby in the fixture's libvirtd. */
static void
fixture_start(Fixture *fx)
{
    vr_test_replica_start(&fx->r, pki, fx->conn, 256 * MiB);
}

static void
fixture_stop(Fixture *fx)
{
    vr_test_replica_stop(&fx->r);
}

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    static guint serial;
    g_autofree char *image = NULL;
    virDomainPtr primary;
    char uuid[VIR_UUID_STRING_BUFLEN];

    fx->domains = g_ptr_array_new_with_free_func(g_free);
    fx->conn = vr_test_replica_connect(pki, pki_skip_why);
    if (fx->conn == NULL)
        return;

    vr_test_dirs(serial, 0700, &fx->r.root, &fx->r.work);
    fx->failover = g_build_filename(fx->r.root, "r1", "vda", "failover.qcow2", NULL);

    /* The primary: defined, never started. */
    fx->name = g_strdup_printf("%s-%u", vr_test_prefix(), serial++);
    fx->standby_name = g_strdup_printf("%s-replica", fx->name);
    g_ptr_array_add(fx->domains, g_strdup(fx->name));
    g_ptr_array_add(fx->domains, g_strdup(fx->standby_name));
    image = g_build_filename(fx->r.work, "vda.qcow2", NULL);
    vr_test_qcow2_create(image, "16M");
    primary = vr_test_domain_define(fx->conn, fx->name, image, NULL);
    fx->primary_xml = virDomainGetXMLDesc(primary, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    g_assert_nonnull(fx->primary_xml);
    g_assert_cmpint(virDomainGetUUIDString(primary, uuid), ==, 0);
    fx->primary_uuid = g_strdup(uuid);
    virDomainFree(primary);

    vr_test_replica_init(&fx->r, pki);
    vr_test_replica_open_state(&fx->r);
    fixture_start(fx);
}

/* Every domain the test made goes, the standby included. */
static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    fixture_stop(fx);
    if (fx->conn != NULL)
        g_assert_true(vr_test_domains_undefine(fx->conn, fx->domains));
    g_clear_pointer(&fx->conn, virConnectClose);
    g_clear_pointer(&fx->domains, g_ptr_array_unref);
    vr_test_replica_clear(&fx->r);
    g_free(fx->name);
    g_free(fx->standby_name);
    g_free(fx->primary_xml);
    g_free(fx->primary_uuid);
    g_free(fx->failover);
}

/* ---- the primary's side --------------------------------------------------------------- */

/* Send @xml for r1 as client-ok while the receiver runs here. */
static void
put_domain(Fixture *fx, const char *xml)
{
    g_autoptr(GError) error = NULL;

    g_assert_true(
        vr_test_put_domain(pki, "client-ok", fx->r.server_policy, fx->r.port, "r1", xml, &error));
    g_assert_no_error(error);
}

/*
 * Cycle @target of r1's disk vda, epoch 1, on @base (0: FULL): one 64 KiB DATA record, in a
 * stream file, uploaded as client-ok; it must be published.
 */
static void
upload_cycle(Fixture *fx, uint64_t base, uint64_t target)
{
    g_autofree char *path = vr_test_cycle_file(fx->r.work, 1, base, target, 1, DISK_SIZE);
    g_autoptr(GError) error = NULL;
    VrSenderStats stats;

    g_assert_true(
        vr_test_upload(pki, "client-ok", fx->r.server_policy, fx->r.port, path, 0, &stats, &error));
    g_assert_no_error(error);
    g_assert_false(stats.already_committed);
}

/* ---- what the replica's libvirt holds ------------------------------------------------- */

/* string(@expr) over @xml, "" when nothing matches. (transfer full) */
static char *
xpath_str(const char *xml, const char *expr)
{
    g_autoptr(xmlDoc) doc =
        xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL, XML_PARSE_NONET);
    g_autoptr(xmlXPathContext) ctx = NULL;
    g_autoptr(xmlXPathObject) obj = NULL;
    g_autofree char *wrapped = g_strdup_printf("string(%s)", expr);

    g_assert_nonnull(doc);
    ctx = xmlXPathNewContext(doc);
    obj = xmlXPathEvalExpression((const xmlChar *)wrapped, ctx);
    g_assert_nonnull(obj);
    return g_strdup(obj->stringval != NULL ? (const char *)obj->stringval : "");
}

/* No domain has the standby's name. */
static void
assert_no_standby(Fixture *fx)
{
    virDomainPtr dom = virDomainLookupByName(fx->conn, fx->standby_name);

    g_assert_null(dom);
    g_assert_cmpint(virGetLastErrorCode(), ==, VIR_ERR_NO_DOMAIN);
}

/*
 * The standby, as libvirt stores it: persistent, inactive, autostart off, its own UUID, its
 * disk the failover overlay of r1's vda (which does not exist), @memory_kib of memory, the
 * marker of r1 at epoch 1 naming the primary. Its UUID. (transfer full)
 */
static char *
assert_standby(Fixture *fx, const char *memory_kib)
{
    virDomainPtr dom = virDomainLookupByName(fx->conn, fx->standby_name);
    g_autoptr(VrStandbyInfo) info = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *value = NULL;
    char uuid[VIR_UUID_STRING_BUFLEN];
    int autostart = -1;

    if (dom == NULL)
        g_error("no standby '%s': %s", fx->standby_name, virGetLastErrorMessage());
    g_assert_cmpint(virDomainIsPersistent(dom), ==, 1);
    g_assert_cmpint(virDomainIsActive(dom), ==, 0);
    g_assert_cmpint(virDomainGetAutostart(dom, &autostart), ==, 0);
    g_assert_cmpint(autostart, ==, 0);
    g_assert_cmpint(virDomainGetUUIDString(dom, uuid), ==, 0);
    g_assert_cmpstr(uuid, !=, fx->primary_uuid);

    xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
    value = xpath_str(xml, "/domain/devices/disk[target/@dev='vda']/source/@file");
    g_assert_cmpstr(value, ==, fx->failover);
    g_clear_pointer(&value, g_free);
    value = xpath_str(xml, "/domain/memory");
    g_assert_cmpstr(value, ==, memory_kib);
    g_assert_false(g_file_test(fx->failover, G_FILE_TEST_EXISTS));

    info = vr_standby_info_get(dom);
    g_assert_nonnull(info);
    g_assert_cmpstr(info->relationship, ==, "r1");
    g_assert_cmpuint(info->epoch, ==, 1);
    g_assert_cmpstr(info->primary_name, ==, fx->name);
    g_assert_cmpstr(info->primary_uuid, ==, fx->primary_uuid);
    g_assert_cmpstr(info->primary_host, ==, "primary1"); /* client-ok's identity */
    g_assert_cmpstr(info->state, ==, VR_STANDBY_STATE_REPLICA);
    virDomainFree(dom);
    return g_strdup(uuid);
}

/* The primary's XML with @kib KiB of memory instead of 64 MiB. (transfer full) */
static char *
primary_xml_with_memory(Fixture *fx, const char *kib)
{
    g_autoptr(GString) xml = g_string_new(fx->primary_xml);
    g_autofree char *memory = g_strdup_printf("<memory unit='KiB'>%s</memory>", kib);
    g_autofree char *current = g_strdup_printf("<currentMemory unit='KiB'>%s</currentMemory>", kib);

    g_assert_cmpuint(g_string_replace(xml, "<memory unit='KiB'>65536</memory>", memory, 1), ==, 1);
    g_string_replace(xml, "<currentMemory unit='KiB'>65536</currentMemory>", current, 1);
    return g_string_free(g_steal_pointer(&xml), FALSE);
}

/* ---- tests ---------------------------------------------------------------------------- */

/*
 * The XML before the first cycle: stored, nothing defined (no point yet); cycle 1 defines
 * the standby, which does not start (libvirt names the missing overlay), and names the
 * relationship's row in the state database. A changed XML (more memory) redefines it (at
 * once: a point exists), and the next cycle leaves it so. The standby can then be
 * undefined by vr_standby_undefine().
 */
static void
test_define(Fixture *fx, gconstpointer data)
{
    g_autofree char *more = NULL;
    g_autofree char *uuid = NULL;
    g_autofree char *again = NULL;
    g_autofree char *rel_dir = NULL;
    g_autofree char *stored = NULL;
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(GError) error = NULL;
    virDomainPtr dom;
    const char *message;
    struct stat st;

    if (fx->r.receiver == NULL)
        return;
    put_domain(fx, fx->primary_xml);
    rel_dir = g_build_filename(fx->r.root, "r1", NULL);
    stored = g_build_filename(rel_dir, "domain.xml", NULL);
    g_assert_no_errno(lstat(stored, &st));
    g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
    g_assert_no_errno(lstat(rel_dir, &st));
    g_assert_cmpuint(st.st_mode & 07777, ==, 0700);
    assert_no_standby(fx);
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));

    upload_cycle(fx, 0, 1);
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));
    uuid = assert_standby(fx, "65536");

    /* The guard: the overlay does not exist, so libvirt refuses before QEMU runs. */
    dom = virDomainLookupByName(fx->conn, fx->standby_name);
    g_assert_nonnull(dom);
    g_assert_cmpint(virDomainCreate(dom), <, 0);
    message = virGetLastErrorMessage();
    g_test_message("libvirt: %s", message);
    g_assert_nonnull(strstr(message, "Cannot access storage file"));
    g_assert_nonnull(strstr(message, fx->failover));
    g_assert_cmpint(virDomainIsActive(dom), ==, 0);
    virDomainFree(dom);

    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(rel->domain_name, ==, fx->name);
    g_assert_null(vr_replica_sink_get_state_error(fx->r.sink));

    /* More memory: the same standby (its UUID), redefined. */
    more = primary_xml_with_memory(fx, "131072");
    put_domain(fx, more);
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));
    again = assert_standby(fx, "131072");
    g_assert_cmpstr(again, ==, uuid);
    g_clear_pointer(&again, g_free);
    upload_cycle(fx, 1, 2);
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));
    again = assert_standby(fx, "131072");
    g_assert_cmpstr(again, ==, uuid);

    g_assert_true(vr_standby_undefine(fx->conn, fx->standby_name, "r1", &error));
    g_assert_no_error(error);
    assert_no_standby(fx);
}

/* The first cycle before the XML: nothing to define then; the XML's PUT defines it. */
static void
test_put_after_cycle(Fixture *fx, gconstpointer data)
{
    g_autofree char *uuid = NULL;
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(GError) error = NULL;

    if (fx->r.receiver == NULL)
        return;
    upload_cycle(fx, 0, 1);
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));
    assert_no_standby(fx);
    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(rel->domain_name, ==, "r1"); /* until the XML names it */
    g_clear_pointer(&rel, vr_state_relationship_free);

    put_domain(fx, fx->primary_xml);
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));
    uuid = assert_standby(fx, "65536");
    rel = vr_state_relationship_get(fx->r.state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(rel->domain_name, ==, fx->name);
}

/*
 * A define that fails (a domain that is no standby has the standby's name) fails neither
 * the PUT nor the cycle, which is published; the error is kept, and that domain is left
 * alone. Once it is gone, the next cycle defines the standby and clears the error.
 */
static void
test_define_fails(Fixture *fx, gconstpointer data)
{
    g_autoptr(GString) foreign = g_string_new(fx->primary_xml);
    g_autofree char *name = g_strdup_printf("<name>%s</name>", fx->name);
    g_autofree char *standby_name = g_strdup_printf("<name>%s</name>", fx->standby_name);
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    g_autofree char *uuid = NULL;
    const GError *kept;
    virDomainPtr dom;
    gsize start, end;

    if (fx->r.receiver == NULL)
        return;
    /* The primary's XML under the standby's name, without its UUID: libvirt makes one. */
    g_assert_cmpuint(g_string_replace(foreign, name, standby_name, 1), ==, 1);
    start = (gsize)(strstr(foreign->str, "<uuid>") - foreign->str);
    end = (gsize)(strstr(foreign->str, "</uuid>") - foreign->str) + strlen("</uuid>");
    g_string_erase(foreign, (gssize)start, (gssize)(end - start));
    dom = virDomainDefineXML(fx->conn, foreign->str);
    if (dom == NULL)
        g_error("cannot define '%s': %s", fx->standby_name, virGetLastErrorMessage());
    before = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
    virDomainFree(dom);

    put_domain(fx, fx->primary_xml);
    upload_cycle(fx, 0, 1);
    kept = vr_replica_sink_get_standby_error(fx->r.sink);
    g_assert_nonnull(kept);
    g_test_message("kept: %s", kept->message);
    g_assert_error(kept, VR_STANDBY_ERROR, VR_STANDBY_ERROR_CONFLICT);
    g_assert_nonnull(strstr(kept->message, "standby of relationship 'r1': "));
    g_assert_nonnull(strstr(kept->message, "is not a virt-replica standby"));
    dom = virDomainLookupByName(fx->conn, fx->standby_name);
    g_assert_nonnull(dom);
    after = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE);
    g_assert_cmpstr(after, ==, before);
    g_assert_cmpint(virDomainUndefine(dom), ==, 0);
    virDomainFree(dom);

    upload_cycle(fx, 1, 2);
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));
    uuid = assert_standby(fx, "65536");
}

/*
 * After a replica restart the sink does not know it defined the standby: the next cycle
 * defines it again, which changes nothing (same UUID, same definition).
 */
static void
test_restart(Fixture *fx, gconstpointer data)
{
    g_autofree char *uuid = NULL;
    g_autofree char *again = NULL;

    if (fx->r.receiver == NULL)
        return;
    put_domain(fx, fx->primary_xml);
    upload_cycle(fx, 0, 1);
    uuid = assert_standby(fx, "65536");
    fixture_stop(fx);
    /* A new port: no upload spans the restart, and the old one may be taken meanwhile (an
     * ephemeral port of a parallel test's connection). */
    fx->r.port = 0;
    fixture_start(fx);
    upload_cycle(fx, 1, 2);
    g_assert_null(vr_replica_sink_get_standby_error(fx->r.sink));
    again = assert_standby(fx, "65536");
    g_assert_cmpstr(again, ==, uuid);
}

int
main(int argc, char **argv)
{
    vr_test_init(&argc, &argv);
    pki = vr_test_make_pki(&pki_skip_why);

#define ADD(path, func) \
    g_test_add("/replica-standby/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("define", test_define);
    ADD("put-after-cycle", test_put_after_cycle);
    ADD("define-fails", test_define_fails);
    ADD("restart", test_restart);
#undef ADD

    return vr_test_run_pki(pki, pki_skip_why);
}
