/*
 * vr-failover.c: unplanned failover, its completion and cancel, and test failover, on the
 * replica host
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <libxml/xpath.h>

#include "vr-failover.h"
#include "vr-failover-net.h"
#include "vr-failpoint.h"
#include "vr-qmp-json.h"
#include "vr-replica-store.h"
#include "vr-standby.h"

G_DEFINE_QUARK(vr - failover - error - quark, vr_failover_error)

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathContext, xmlXPathFreeContext)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlXPathObject, xmlXPathFreeObject)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(virDomain, virDomainFree)

/* Modes a failover gives: QEMU's group reads the chain and passes the directories. */
#define VR_FAILOVER_POINT_MODE 0640
#define VR_FAILOVER_DIR_MODE   0710
/* The test copy's name: the standby's with this suffix. */
#define VR_FAILOVER_TEST_SUFFIX "-test"

struct _VrFailover {
    VrState *state;
    VrReplicaSink *sink;
    VrAuthz *authz;
    virConnectPtr conn;
    char *test_network;
    VrFailoverNet *net;    /* network mapping and failover TCP/IP */
    GMainContext *context; /* the daemon's: where the reverse set-ups end */
    GHashTable *reversing; /* relationship -> GCancellable of its reverse set-up under way */
    bool stopping;         /* vr_failover_reverse_stop() began: no new reverse set-up */
};

/* One disk of the standby: its target, its store's directory and the store. */
typedef struct {
    char *target;
    char *dir;
    VrReplicaStore *store; /* the sink's (transfer none) */
} VrFailoverDisk;

static void
vr_failover_disk_free(gpointer data)
{
    VrFailoverDisk *disk = data;

    g_free(disk->target);
    g_free(disk->dir);
    g_free(disk);
}

/* What one operation works on. */
typedef struct {
    VrStateRelationship *rel;
    json_object *config; /* rel->config, parsed */
    char *root;          /* the storage root of the relationship's primary */
    virDomainPtr standby;
    char *standby_xml; /* inactive, secure */
    GPtrArray *disks;  /* VrFailoverDisk */
    /* A planned failover with reverse replication: the persistent bitmap each overlay gets
     * before the standby starts (borrowed), or NULL. */
    const char *track_bitmap;
} VrFailoverJob;

static void
vr_failover_job_free(VrFailoverJob *job)
{
    if (job == NULL)
        return;
    vr_state_relationship_free(job->rel);
    if (job->config != NULL)
        json_object_put(job->config);
    g_free(job->root);
    if (job->standby != NULL)
        virDomainFree(job->standby);
    g_free(job->standby_xml);
    if (job->disks != NULL)
        g_ptr_array_unref(job->disks);
    g_free(job);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrFailoverJob, vr_failover_job_free)

static bool vr_failover_fail(GError **error, VrFailoverErrorCode code, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static bool
vr_failover_fail(GError **error, VrFailoverErrorCode code, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    g_propagate_error(error, g_error_new_valist(VR_FAILOVER_ERROR, code, format, args));
    va_end(args);
    return false;
}

static bool
vr_failover_libvirt_error(GError **error, const char *what, const char *name)
{
    return vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED, "cannot %s '%s': %s", what, name,
                            virGetLastErrorMessage());
}

const char *
vr_failover_error_code(const GError *error, guint *status)
{
    *status = 500;
    if (error->domain != VR_FAILOVER_ERROR)
        return "failed";
    switch ((VrFailoverErrorCode)error->code) {
    case VR_FAILOVER_ERROR_NOT_FOUND:
        *status = 404;
        return "unknown-domain";
    case VR_FAILOVER_ERROR_NO_POINT:
        *status = 404;
        return "unknown-point";
    case VR_FAILOVER_ERROR_CONFLICT:
        *status = 409;
        return "wrong-state";
    case VR_FAILOVER_ERROR_INVALID:
        *status = 400;
        return "invalid";
    case VR_FAILOVER_ERROR_BUSY:
        *status = 409;
        return "busy";
    case VR_FAILOVER_ERROR_FAILED:
        break;
    }
    return "failed";
}

/*
 * The storage root of a relationship's stores: the one its first cycle was stored under,
 * as the replica sink records it in the relationship's config ("storage_root"), so that a
 * failover still finds its points after the primary's authorization entry was removed or
 * changed (the worst day: the lost primary is no longer trusted). Relationships recorded
 * before that fall back to the authorization table. (transfer full)
 */
static char *
vr_failover_storage_root(VrFailover *failover, const char *peer, json_object *config,
                         GError **error)
{
    const char *recorded = config != NULL ? vr_json_get_string(config, "storage_root") : NULL;
    g_autofree char *root = NULL;
    g_autofree char *group = NULL;

    if (recorded != NULL && g_path_is_absolute(recorded))
        return g_strdup(recorded);
    if (!vr_authz_lookup(failover->authz, peer, &root, &group, error))
        return NULL;
    return g_steal_pointer(&root);
}

static void vr_failover_reconcile(VrFailover *failover);

VrFailover *
vr_failover_new(const VrFailoverConfig *config)
{
    VrFailover *failover = g_new0(VrFailover, 1);
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(GError) local = NULL;

    failover->state = config->state;
    failover->sink = config->sink;
    failover->authz = config->authz;
    failover->conn = config->conn;
    failover->test_network = g_strdup(config->test_network);
    failover->net = vr_failover_net_new(config->config, config->conn, config->state);
    failover->context = g_main_context_ref_thread_default();
    failover->reversing = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_object_unref);

    /* A crash between a define and the state's write: settled before anything else. */
    vr_failover_reconcile(failover);

    /* The test failovers of before a restart hold their points again. */
    list = vr_state_relationship_list(failover->state, &local);
    for (guint i = 0; list != NULL && i < list->len; i++) {
        VrStateRelationship *rel = list->pdata[i];
        g_autoptr(json_object) cfg = json_tokener_parse(rel->config != NULL ? rel->config : "{}");
        g_autofree char *root = NULL;
        json_object *test, *disks, *point;

        if (cfg == NULL || !json_object_object_get_ex(cfg, "test_failover", &test) ||
            !json_object_object_get_ex(test, "disks", &disks) ||
            !json_object_object_get_ex(test, "point", &point))
            continue;
        root = vr_failover_storage_root(failover, rel->peer, cfg, &local);
        if (root == NULL) {
            g_debug("test failover of '%s': its points are not held: %s", rel->id, local->message);
            g_clear_error(&local);
            continue;
        }
        for (size_t d = 0; d < json_object_array_length(disks); d++) {
            const char *name = json_object_get_string(json_object_array_get_idx(disks, d));
            VrReplicaStore *store =
                vr_replica_sink_get_store(failover->sink, root, rel->id, name, &local);

            if (store == NULL ||
                !vr_replica_store_hold(store, (uint64_t)json_object_get_uint64(point), &local)) {
                g_debug("test failover of '%s': point of disk '%s' not held: %s", rel->id, name,
                        local->message);
                g_clear_error(&local);
            }
        }
    }
    if (local != NULL)
        g_debug("test failovers not held again: %s", local->message);
    /* Failover TCP/IP pending at the last stop: resumed, or abandoned with the reason. */
    vr_failover_net_resume(failover->net);
    return failover;
}

void
vr_failover_free(VrFailover *failover)
{
    if (failover == NULL)
        return;
    vr_failover_reverse_stop(failover);
    g_hash_table_unref(failover->reversing);
    g_main_context_unref(failover->context);
    vr_failover_net_free(failover->net);
    g_free(failover->test_network);
    g_free(failover);
}

/* ---- finding what a failover works on ------------------------------------------------- */

/*
 * The standby domain (not a test copy) of @relationship whose disks are beneath @rel_dir,
 * or NULL. The disks tell the standby of this replica's store from a domain of another
 * replica daemon sharing the libvirtd (tests) with the same relationship id. (transfer full)
 */
static virDomainPtr
vr_failover_find_standby(VrFailover *failover, const char *relationship, const char *rel_dir)
{
    g_autofree char *prefix = g_strconcat("file='", rel_dir, "/", NULL);
    virDomainPtr *domains = NULL;
    virDomainPtr found = NULL;
    int n = virConnectListAllDomains(failover->conn, &domains, VIR_CONNECT_LIST_DOMAINS_PERSISTENT);

    for (int i = 0; i < n; i++) {
        g_autoptr(VrStandbyInfo) info = NULL;
        g_autofree char *xml = NULL;

        if (found == NULL && (info = vr_standby_info_get(domains[i])) != NULL &&
            strcmp(info->relationship, relationship) == 0 &&
            g_strcmp0(info->state, VR_FAILOVER_MARKER_TEST) != 0 &&
            (xml = virDomainGetXMLDesc(domains[i], VIR_DOMAIN_XML_INACTIVE)) != NULL &&
            strstr(xml, prefix) != NULL) {
            found = domains[i];
            continue;
        }
        virDomainFree(domains[i]);
    }
    free(domains);
    return found;
}

/* A relationship by id, by the primary's domain name, or by the name of its standby. */
static VrStateRelationship *
vr_failover_find(VrFailover *failover, const char *name, GError **error)
{
    g_autoptr(GPtrArray) list = vr_state_relationship_list(failover->state, error);
    g_autoptr(virDomain) dom = NULL;
    g_autofree char *relationship = NULL;

    if (list == NULL)
        return NULL;
    for (guint i = 0; i < list->len; i++) {
        VrStateRelationship *rel = list->pdata[i];

        if (strcmp(rel->id, name) == 0 || g_strcmp0(rel->domain_name, name) == 0)
            return g_ptr_array_steal_index(list, i);
    }
    dom = virDomainLookupByName(failover->conn, name);
    if (dom != NULL && vr_standby_is_standby(dom, &relationship)) {
        for (guint i = 0; i < list->len; i++) {
            VrStateRelationship *rel = list->pdata[i];

            if (strcmp(rel->id, relationship) == 0)
                return g_ptr_array_steal_index(list, i);
        }
    }
    vr_failover_fail(error, VR_FAILOVER_ERROR_NOT_FOUND, "no replication of '%s' on this host",
                     name);
    return NULL;
}

/* The target dev and source file of every <disk device='disk'> of @xml. */
static bool
vr_failover_xml_disks(const char *xml, GPtrArray *targets, GPtrArray *files, GError **error)
{
    g_autoptr(xmlDoc) doc =
        xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                      XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    g_autoptr(xmlXPathContext) ctx = NULL;
    g_autoptr(xmlXPathObject) obj = NULL;

    if (doc == NULL)
        return vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED, "a domain XML does not parse");
    ctx = xmlXPathNewContext(doc);
    obj = xmlXPathEvalExpression(
        (const xmlChar *)"/domain/devices/disk[not(@device) or @device='disk']", ctx);
    for (int i = 0; obj != NULL && obj->nodesetval != NULL && i < obj->nodesetval->nodeNr; i++) {
        xmlNode *disk = obj->nodesetval->nodeTab[i];
        xmlChar *dev = NULL;
        xmlChar *file = NULL;

        for (xmlNode *c = disk->children; c != NULL; c = c->next) {
            if (c->type != XML_ELEMENT_NODE)
                continue;
            if (strcmp((const char *)c->name, "target") == 0 && dev == NULL)
                dev = xmlGetProp(c, (const xmlChar *)"dev");
            else if (strcmp((const char *)c->name, "source") == 0 && file == NULL)
                file = xmlGetProp(c, (const xmlChar *)"file");
        }
        g_ptr_array_add(targets, g_strdup(dev != NULL ? (const char *)dev : ""));
        g_ptr_array_add(files, g_strdup(file != NULL ? (const char *)file : ""));
        xmlFree(dev);
        xmlFree(file);
    }
    return true;
}

/*
 * The relationship @name, its config, its primary's storage root, its standby and the
 * standby's disks with their stores. @need_standby: no standby is an error.
 */
static VrFailoverJob *
vr_failover_job_new(VrFailover *failover, const char *name, GError **error)
{
    g_autoptr(VrFailoverJob) job = g_new0(VrFailoverJob, 1);
    g_autoptr(GPtrArray) targets = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) local = NULL;

    job->rel = vr_failover_find(failover, name, error);
    if (job->rel == NULL)
        return NULL;
    if (job->rel->role != VR_STATE_ROLE_REPLICA) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "'%s' is replicated from this host (role primary): a failover runs on "
                         "the replica host",
                         name);
        return NULL;
    }
    job->config = json_tokener_parse(job->rel->config != NULL ? job->rel->config : "{}");
    if (job->config == NULL || !json_object_is_type(job->config, json_type_object)) {
        if (job->config != NULL)
            json_object_put(job->config);
        job->config = json_object_new_object();
    }
    job->root = vr_failover_storage_root(failover, job->rel->peer, job->config, &local);
    if (job->root == NULL) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                         "the storage root of relationship '%s' (primary '%s') is unknown: %s",
                         job->rel->id, job->rel->peer, local->message);
        return NULL;
    }
    {
        g_autofree char *rel_dir = g_build_filename(job->root, job->rel->id, NULL);

        job->standby = vr_failover_find_standby(failover, job->rel->id, rel_dir);
    }
    if (job->standby == NULL) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "relationship '%s' has no standby domain in this host's libvirt (it is "
                         "defined once the primary's domain XML and a recovery point are here)",
                         job->rel->id);
        return NULL;
    }
    job->standby_xml =
        virDomainGetXMLDesc(job->standby, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    if (job->standby_xml == NULL) {
        vr_failover_libvirt_error(error, "read the definition of", virDomainGetName(job->standby));
        return NULL;
    }
    if (!vr_failover_xml_disks(job->standby_xml, targets, files, error))
        return NULL;
    job->disks = g_ptr_array_new_with_free_func(vr_failover_disk_free);
    for (guint i = 0; i < targets->len; i++) {
        VrFailoverDisk *disk = g_new0(VrFailoverDisk, 1);
        g_autofree char *expected = NULL;

        disk->target = g_strdup(targets->pdata[i]);
        disk->dir = g_build_filename(job->root, job->rel->id, disk->target, NULL);
        g_ptr_array_add(job->disks, disk);
        expected = g_build_filename(disk->dir, VR_FAILOVER_OVERLAY, NULL);
        if (strcmp(files->pdata[i], expected) != 0) {
            vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                             "disk '%s' of standby '%s' is '%s', not the failover overlay '%s'",
                             disk->target, virDomainGetName(job->standby),
                             (const char *)files->pdata[i], expected);
            return NULL;
        }
        disk->store =
            vr_replica_sink_get_store(failover->sink, job->root, job->rel->id, disk->target, error);
        if (disk->store == NULL) {
            g_prefix_error(error, "disk '%s' of relationship '%s': ", disk->target, job->rel->id);
            return NULL;
        }
    }
    if (job->disks->len == 0) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT, "standby '%s' has no disk",
                         virDomainGetName(job->standby));
        return NULL;
    }
    return g_steal_pointer(&job);
}

/*
 * The cycle @point names ("latest" or NULL: the newest cycle every disk has, the disks of
 * one cut being crash-consistent together; else a cycle every disk must have).
 */
static bool
vr_failover_choose(VrFailoverJob *job, const char *point, uint64_t *cycle_out, GError **error)
{
    uint64_t wanted = 0;

    if (point != NULL && strcmp(point, "latest") != 0) {
        guint64 v;

        if (!g_ascii_string_to_unsigned(point, 10, 1, G_MAXUINT64, &v, NULL))
            return vr_failover_fail(error, VR_FAILOVER_ERROR_INVALID,
                                    "'%s' is not a recovery point: a cycle number or 'latest'",
                                    point);
        wanted = v;
    }
    if (wanted != 0) {
        for (guint d = 0; d < job->disks->len; d++) {
            VrFailoverDisk *disk = job->disks->pdata[d];
            g_autofree char *image = vr_replica_store_image_path(disk->store, wanted);

            if (image == NULL)
                return vr_failover_fail(error, VR_FAILOVER_ERROR_NO_POINT,
                                        "disk '%s' of relationship '%s' has no recovery point "
                                        "of cycle %" PRIu64,
                                        disk->target, job->rel->id, wanted);
        }
        *cycle_out = wanted;
        return true;
    }
    {
        VrFailoverDisk *first = job->disks->pdata[0];
        const VrReplicaPoint *points;
        guint n;

        points = vr_replica_store_points(first->store, &n);
        for (guint i = n; i-- > 0;) {
            bool everywhere = true;

            for (guint d = 1; d < job->disks->len && everywhere; d++) {
                VrFailoverDisk *disk = job->disks->pdata[d];
                g_autofree char *image = vr_replica_store_image_path(disk->store, points[i].cycle);

                everywhere = image != NULL;
            }
            if (everywhere) {
                *cycle_out = points[i].cycle;
                return true;
            }
        }
    }
    return vr_failover_fail(error, VR_FAILOVER_ERROR_NO_POINT,
                            "relationship '%s' has no recovery point that every disk holds",
                            job->rel->id);
}

/* ---- QEMU's user and the files it opens ---------------------------------------------- */

/* "+64055" or "libvirt-qemu" as a uid (@group false) or gid. */
static bool
vr_failover_parse_id(const char *text, bool group, guint *id)
{
    guint64 v;

    if (text[0] == '+')
        text++;
    if (g_ascii_string_to_unsigned(text, 10, 0, G_MAXUINT32 - 1, &v, NULL)) {
        *id = (guint)v;
        return true;
    }
    if (group) {
        struct group *gr = getgrnam(text);

        if (gr != NULL)
            *id = gr->gr_gid;
        return gr != NULL;
    }
    {
        struct passwd *pw = getpwnam(text);

        if (pw != NULL)
            *id = pw->pw_uid;
        return pw != NULL;
    }
}

/*
 * The user and group QEMU runs as for a domain of @virt_type ("kvm", "qemu"): the DAC base
 * label of the host's capabilities (qemu.conf's user and group). 0 and 0 when libvirt has no
 * DAC model (QEMU runs as root).
 */
static bool
vr_failover_qemu_ids(VrFailover *failover, const char *virt_type, guint *uid, guint *gid,
                     GError **error)
{
    g_autofree char *caps = virConnectGetCapabilities(failover->conn);
    g_autoptr(xmlDoc) doc = NULL;
    g_autoptr(xmlXPathContext) ctx = NULL;
    g_autoptr(xmlXPathObject) obj = NULL;
    g_autofree char *expr = NULL;
    g_auto(GStrv) ids = NULL;

    *uid = 0;
    *gid = 0;
    if (caps == NULL)
        return vr_failover_libvirt_error(error, "read the capabilities of", "libvirt");
    doc = xmlReadMemory(caps, (int)strlen(caps), "capabilities.xml", NULL, XML_PARSE_NONET);
    if (doc == NULL)
        return vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                                "libvirt's capabilities do not parse");
    ctx = xmlXPathNewContext(doc);
    expr = g_strdup_printf("string(/capabilities/host/secmodel[model='dac']/baselabel[@type='%s'])",
                           virt_type);
    obj = xmlXPathEvalExpression((const xmlChar *)expr, ctx);
    if (obj == NULL || obj->stringval == NULL || obj->stringval[0] == '\0')
        return true;
    ids = g_strsplit((const char *)obj->stringval, ":", 2);
    if (g_strv_length(ids) != 2 || !vr_failover_parse_id(ids[0], false, uid) ||
        !vr_failover_parse_id(ids[1], true, gid))
        return vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                                "libvirt's DAC label '%s' is not user:group",
                                (const char *)obj->stringval);
    return true;
}

/* The virt type of a domain XML (<domain type='kvm'>). (transfer full) */
static char *
vr_failover_virt_type(const char *xml)
{
    g_autoptr(xmlDoc) doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                                          XML_PARSE_NONET | XML_PARSE_NOERROR);
    xmlNode *root = doc != NULL ? xmlDocGetRootElement(doc) : NULL;
    xmlChar *type = root != NULL ? xmlGetProp(root, (const xmlChar *)"type") : NULL;
    char *out = g_strdup(type != NULL ? (const char *)type : "kvm");

    xmlFree(type);
    return out;
}

static bool
vr_failover_errno(GError **error, int errsv, const char *what, const char *path)
{
    return vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED, "cannot %s '%s': %s", what, path,
                            g_strerror(errsv));
}

/* @path gets group @gid and @mode (the owner stays: root). */
static bool
vr_failover_label(const char *path, guint gid, mode_t mode, GError **error)
{
    if (gid != 0 && lchown(path, (uid_t)-1, (gid_t)gid) < 0)
        return vr_failover_errno(error, errno, "give QEMU's group", path);
    if (chmod(path, mode) < 0)
        return vr_failover_errno(error, errno, "change the mode of", path);
    return true;
}

/*
 * Let QEMU (group @gid) read point @cycle of @disk and the points it is based on, and pass
 * the relationship's and the disk's directories: never write them.
 */
static bool
vr_failover_label_chain(VrFailoverDisk *disk, uint64_t cycle, guint gid, GError **error)
{
    g_autofree char *rel_dir = g_path_get_dirname(disk->dir);
    const VrReplicaPoint *points;
    uint64_t first;
    guint n;

    if (!vr_replica_store_chain(disk->store, cycle, &first, error) ||
        !vr_failover_label(rel_dir, gid, VR_FAILOVER_DIR_MODE, error) ||
        !vr_failover_label(disk->dir, gid, VR_FAILOVER_DIR_MODE, error))
        return false;
    points = vr_replica_store_points(disk->store, &n);
    for (guint i = 0; i < n; i++) {
        g_autofree char *image = NULL;

        if (points[i].cycle < first || points[i].cycle > cycle)
            continue;
        image = vr_replica_store_image_path(disk->store, points[i].cycle);
        if (!vr_failover_label(image, gid, VR_FAILOVER_POINT_MODE, error))
            return false;
    }
    return true;
}

static bool
vr_failover_sync_dir(const char *dir, GError **error)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 || fsync(fd) < 0) {
        int errsv = errno;

        if (fd >= 0)
            close(fd);
        return vr_failover_errno(error, errsv, "sync directory", dir);
    }
    close(fd);
    return true;
}

/*
 * A new throwaway overlay @name of point @cycle in @disk's directory, owned by QEMU's user
 * (@uid, @gid), mode 0600: made as @name.tmp (a leftover goes first), synced, renamed.
 */
static bool
vr_failover_overlay_create(VrFailoverDisk *disk, const char *name, uint64_t cycle, guint uid,
                           guint gid, GError **error)
{
    g_autofree char *path = g_build_filename(disk->dir, name, NULL);
    g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
    g_autofree char *backing = g_strdup_printf("rp-%" PRIu64 ".qcow2", cycle);
    g_autofree char *err = NULL;
    g_autoptr(GError) local = NULL;
    /* The backing by a relative name, as the points' own: the directory can move. */
    const char *argv[] = { "qemu-img", "create", "-q",    "-f", "qcow2", "-F",
                           "qcow2",    "-b",     backing, tmp,  NULL };
    int status = 0;
    int fd;

    if (unlink(tmp) < 0 && errno != ENOENT)
        return vr_failover_errno(error, errno, "remove", tmp);
    if (!g_spawn_sync(disk->dir, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, &err,
                      &status, &local) ||
        !g_spawn_check_wait_status(status, &local)) {
        unlink(tmp);
        return vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                                "cannot create the overlay '%s' of cycle %" PRIu64 ": %s%s%s", path,
                                cycle, local->message, err != NULL && *err ? ": " : "",
                                err != NULL ? g_strstrip(err) : "");
    }
    fd = open(tmp, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fsync(fd) < 0 || (uid != 0 && fchown(fd, uid, gid) < 0) || fchmod(fd, 0600) < 0) {
        int errsv = errno;

        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return vr_failover_errno(error, errsv, "prepare the overlay", tmp);
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        int errsv = errno;

        unlink(tmp);
        return vr_failover_errno(error, errsv, "rename", tmp);
    }
    return vr_failover_sync_dir(disk->dir, error);
}

/*
 * The persistent bitmap @bitmap (empty, recording, 64 KiB granularity: the capture's) in
 * @disk's failover overlay, before QEMU opens it: every write of the standby is tracked
 * from its first one, so reverse replication sends only what it wrote (docs/failover.md).
 */
static bool
vr_failover_overlay_bitmap(VrFailoverDisk *disk, const char *bitmap, GError **error)
{
    g_autofree char *path = g_build_filename(disk->dir, VR_FAILOVER_OVERLAY, NULL);
    g_autofree char *err = NULL;
    g_autoptr(GError) local = NULL;
    const char *argv[] = { "qemu-img", "bitmap", "--add", "--granularity", "65536",
                           "-f",       "qcow2",  path,    bitmap,          NULL };
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, &err,
                      &status, &local) ||
        !g_spawn_check_wait_status(status, &local))
        return vr_failover_fail(
            error, VR_FAILOVER_ERROR_FAILED, "cannot add bitmap '%s' to '%s': %s%s%s", bitmap, path,
            local->message, err != NULL && *err ? ": " : "", err != NULL ? g_strstrip(err) : "");
    return true;
}

/* Remove overlay @name of every disk of @job (best effort: a leftover is named). */
static bool
vr_failover_overlays_remove(VrFailoverJob *job, const char *name, GError **error)
{
    bool ok = true;

    for (guint d = 0; d < job->disks->len; d++) {
        VrFailoverDisk *disk = job->disks->pdata[d];
        g_autofree char *path = g_build_filename(disk->dir, name, NULL);
        g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);

        unlink(tmp);
        if (unlink(path) < 0 && errno != ENOENT && ok) {
            ok = vr_failover_errno(error, errno, "remove", path);
            continue;
        }
        vr_failover_sync_dir(disk->dir, NULL);
    }
    return ok;
}

/* ---- domain XML ---------------------------------------------------------------------- */

static bool
vr_failover_is(const xmlNode *node, const char *name)
{
    return node->type == XML_ELEMENT_NODE && node->ns == NULL &&
           strcmp((const char *)node->name, name) == 0;
}

static xmlNode *
vr_failover_child(xmlNode *parent, const char *name)
{
    for (xmlNode *c = parent->children; c != NULL; c = c->next) {
        if (vr_failover_is(c, name))
            return c;
    }
    return NULL;
}

static void
vr_failover_remove_children(xmlNode *parent, const char *name)
{
    xmlNode *c = parent->children;

    while (c != NULL) {
        xmlNode *next = c->next;

        if (vr_failover_is(c, name)) {
            xmlUnlinkNode(c);
            xmlFreeNode(c);
        }
        c = next;
    }
}

/*
 * For the test copy: each interface on @network (type network), or, with none, a tap of its
 * own connected to nothing, link down (the guest keeps its NIC, MAC and address).
 */
static void
vr_failover_xml_interfaces(xmlNode *devices, const char *network)
{
    for (xmlNode *iface = devices->children; iface != NULL; iface = iface->next) {
        xmlNode *node;

        if (!vr_failover_is(iface, "interface"))
            continue;
        vr_failover_remove_children(iface, "source");
        vr_failover_remove_children(iface, "target");
        vr_failover_remove_children(iface, "virtualport");
        vr_failover_remove_children(iface, "link");
        if (network != NULL) {
            xmlSetProp(iface, (const xmlChar *)"type", (const xmlChar *)"network");
            node = xmlNewChild(iface, NULL, (const xmlChar *)"source", NULL);
            xmlSetProp(node, (const xmlChar *)"network", (const xmlChar *)network);
        } else {
            xmlSetProp(iface, (const xmlChar *)"type", (const xmlChar *)"ethernet");
            node = xmlNewChild(iface, NULL, (const xmlChar *)"link", NULL);
            xmlSetProp(node, (const xmlChar *)"state", (const xmlChar *)"down");
        }
    }
}

/*
 * @xml (the standby's inactive definition) with the marker's @state and @epoch and each
 * disk's <source> given <seclabel model='dac' relabel='no'/> (the failover labels the chain
 * itself: see vr-failover.h). With @copy_name, the test copy: that name, no UUID (libvirt
 * makes one), a new genid, no NVRAM path (libvirt makes one for the name), disks on the
 * test overlays and interfaces as vr_failover_xml_interfaces() makes them. (transfer full)
 */
static char *
vr_failover_xml_edit(const char *xml, const char *state, uint64_t epoch, const char *copy_name,
                     const char *network, GError **error)
{
    g_autoptr(xmlDoc) doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
                                          XML_PARSE_NONET | XML_PARSE_NOERROR);
    xmlNode *root = doc != NULL ? xmlDocGetRootElement(doc) : NULL;
    xmlNode *metadata, *devices, *os;
    bool marked = false;
    xmlChar *out = NULL;
    int len = 0;
    char *result;
    char epoch_text[32];

    if (root == NULL) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED, "the standby's XML does not parse");
        return NULL;
    }
    g_snprintf(epoch_text, sizeof(epoch_text), "%" PRIu64, epoch);
    metadata = vr_failover_child(root, "metadata");
    for (xmlNode *c = metadata != NULL ? metadata->children : NULL; c != NULL; c = c->next) {
        if (c->type == XML_ELEMENT_NODE && c->ns != NULL && c->ns->href != NULL &&
            strcmp((const char *)c->ns->href, VR_STANDBY_XMLNS) == 0 &&
            strcmp((const char *)c->name, "standby") == 0) {
            xmlSetProp(c, (const xmlChar *)"state", (const xmlChar *)state);
            xmlSetProp(c, (const xmlChar *)"epoch", (const xmlChar *)epoch_text);
            marked = true;
        }
    }
    if (!marked) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED, "the standby's XML has no marker");
        return NULL;
    }
    devices = vr_failover_child(root, "devices");
    for (xmlNode *disk = devices != NULL ? devices->children : NULL; disk != NULL;
         disk = disk->next) {
        xmlNode *source, *label;
        xmlChar *device;
        bool is_disk;

        if (!vr_failover_is(disk, "disk"))
            continue;
        device = xmlGetProp(disk, (const xmlChar *)"device");
        is_disk = device == NULL || strcmp((const char *)device, "disk") == 0;
        xmlFree(device);
        source = vr_failover_child(disk, "source");
        if (!is_disk || source == NULL)
            continue;
        if (copy_name != NULL) {
            xmlChar *file = xmlGetProp(source, (const xmlChar *)"file");
            g_autofree char *dir = g_path_get_dirname(file != NULL ? (const char *)file : "");
            g_autofree char *test = g_build_filename(dir, VR_FAILOVER_TEST_OVERLAY, NULL);

            xmlFree(file);
            xmlSetProp(source, (const xmlChar *)"file", (const xmlChar *)test);
        }
        vr_failover_remove_children(source, "seclabel");
        label = xmlNewChild(source, NULL, (const xmlChar *)"seclabel", NULL);
        xmlSetProp(label, (const xmlChar *)"model", (const xmlChar *)"dac");
        xmlSetProp(label, (const xmlChar *)"relabel", (const xmlChar *)"no");
    }
    if (copy_name != NULL) {
        xmlNode *name = vr_failover_child(root, "name");
        xmlNode *genid = vr_failover_child(root, "genid");

        if (name != NULL)
            xmlNodeSetContent(name, (const xmlChar *)copy_name);
        vr_failover_remove_children(root, "uuid");
        if (genid != NULL)
            xmlNodeSetContent(genid, NULL);
        os = vr_failover_child(root, "os");
        if (os != NULL && vr_failover_child(os, "nvram") != NULL)
            xmlNodeSetContent(vr_failover_child(os, "nvram"), NULL);
        if (devices != NULL)
            vr_failover_xml_interfaces(devices, network);
    }
    xmlDocDumpMemory(doc, &out, &len);
    result = g_strndup((const char *)out, (gsize)len);
    xmlFree(out);
    return result;
}

/* ---- the state database -------------------------------------------------------------- */

/* @job's relationship with @state, @epoch and its config as @job->config holds it now. */
static bool
vr_failover_state_put(VrFailover *failover, VrFailoverJob *job, const char *state, uint64_t epoch,
                      GError **error)
{
    g_autoptr(GError) local = NULL;
    char *copy = g_strdup(state); /* @state may be job->rel->state itself */

    g_free(job->rel->state);
    job->rel->state = copy;
    job->rel->epoch = epoch;
    g_free(job->rel->config);
    job->rel->config =
        g_strdup(json_object_to_json_string_ext(job->config, JSON_C_TO_STRING_PLAIN));
    if (!vr_state_relationship_put(failover->state, job->rel, &local))
        return vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                                "cannot record relationship '%s' in the state database: %s",
                                job->rel->id, local->message);
    return true;
}

static json_object *
vr_failover_result(VrFailoverJob *job, const char *domain, uint64_t point, bool test)
{
    json_object *obj = json_object_new_object();

    json_object_object_add(obj, "relationship", json_object_new_string(job->rel->id));
    json_object_object_add(obj, "domain", domain != NULL ? json_object_new_string(domain) : NULL);
    json_object_object_add(obj, "point", point != 0 ? json_object_new_uint64(point) : NULL);
    json_object_object_add(obj, "epoch", json_object_new_uint64(job->rel->epoch));
    json_object_object_add(obj, "state", json_object_new_string(job->rel->state));
    json_object_object_add(obj, "test", json_object_new_boolean(test));
    return obj;
}

/* ---- networks (vr-failover-net.h) ----------------------------------------------------- */

/* *@xml with its interfaces mapped to this host's networks; @report_out: what was done. */
static bool
vr_failover_map_networks(VrFailover *failover, char **xml, json_object **report_out, GError **error)
{
    char *mapped = vr_failover_net_prepare(failover->net, *xml, report_out, error);

    if (mapped == NULL)
        return false;
    g_free(*xml);
    *xml = mapped;
    return true;
}

/*
 * @result (transfer full) with "network": @report (made when NULL) and failover TCP/IP
 * pushed into @dom, which has just started (recorded under @record).
 */
static json_object *
vr_failover_net_result(VrFailover *failover, VrFailoverJob *job, virDomainPtr dom,
                       const char *record, json_object *result, json_object *report)
{
    json_object *network = report != NULL ? json_object_get(report) : json_object_new_object();

    vr_failover_net_guest_ip(failover->net, dom, job->rel->id, record, network);
    json_object_object_add(result, "network", network);
    return result;
}

json_object *
vr_failover_start_with_interfaces(VrFailover *failover, const char *name, const char *point,
                                  bool test, json_object *interfaces, GError **error)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(VrConfig) request = vr_failover_net_parse_request(interfaces, &local);
    json_object *result;

    if (request == NULL) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_INVALID, "%s", local->message);
        return NULL;
    }
    vr_failover_net_set_request(failover->net, request);
    result = vr_failover_start(failover, name, point, test, error);
    vr_failover_net_set_request(failover->net, NULL);
    return result;
}

/* ---- unplanned failover --------------------------------------------------------------- */

/* The standby redefined from @xml; a failure names the domain. */
static bool
vr_failover_define(VrFailover *failover, const char *xml, const char *name, GError **error)
{
    virDomainPtr dom = virDomainDefineXML(failover->conn, xml);

    if (dom == NULL)
        return vr_failover_libvirt_error(error, "define", name);
    virDomainFree(dom);
    return true;
}

/*
 * The failover record of @job's row ("failover" in its config, docs/state.md): point
 * @cycle, the epoch before it, the domain that runs, not completed; "reconciled" when a
 * start rolled a crashed failover forward (what was asked is not known then).
 */
static void
vr_failover_record_failover(VrFailoverJob *job, uint64_t cycle, uint64_t previous_epoch,
                            const char *domain, bool planned, bool reconciled)
{
    json_object *record = json_object_new_object();

    json_object_object_add(record, "point", json_object_new_uint64(cycle));
    json_object_object_add(record, "previous_epoch", json_object_new_uint64(previous_epoch));
    json_object_object_add(record, "domain", json_object_new_string(domain));
    json_object_object_add(record, "completed", json_object_new_boolean(false));
    json_object_object_add(record, "planned", json_object_new_boolean(planned));
    if (reconciled)
        json_object_object_add(record, "reconciled", json_object_new_boolean(true));
    json_object_object_add(record, "time", json_object_new_int64(g_get_real_time() / 1000000));
    json_object_object_add(job->config, "failover", record);
}

/* The test failover record of @job's row ("test_failover"): copy @copy_name on @cycle. */
static void
vr_failover_record_test(VrFailoverJob *job, uint64_t cycle, const char *copy_name, bool reconciled)
{
    json_object *record = json_object_new_object();
    json_object *disks = json_object_new_array();

    for (guint d = 0; d < job->disks->len; d++)
        json_object_array_add(
            disks, json_object_new_string(((VrFailoverDisk *)job->disks->pdata[d])->target));
    json_object_object_add(record, "point", json_object_new_uint64(cycle));
    json_object_object_add(record, "domain", json_object_new_string(copy_name));
    json_object_object_add(record, "disks", disks);
    if (reconciled)
        json_object_object_add(record, "reconciled", json_object_new_boolean(true));
    json_object_object_add(record, "time", json_object_new_int64(g_get_real_time() / 1000000));
    json_object_object_add(job->config, "test_failover", record);
}

static json_object *
vr_failover_unplanned(VrFailover *failover, VrFailoverJob *job, const char *point, bool planned,
                      GError **error)
{
    const char *name = virDomainGetName(job->standby);
    g_autofree char *virt_type = vr_failover_virt_type(job->standby_xml);
    g_autofree char *failed_xml = NULL;
    g_autofree char *replica_xml = NULL;
    g_autoptr(json_object) net_report = NULL;
    uint64_t old_epoch = job->rel->epoch;
    uint64_t cycle = 0;
    guint uid, gid;
    bool created = false;
    bool defined = false;
    bool recorded = false;

    if (virDomainIsActive(job->standby) == 1) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "standby '%s' of relationship '%s' is running already", name,
                         job->rel->id);
        return NULL;
    }
    /* 1. No cycle from now on, and none half-applied: the latest point is complete. */
    vr_replica_sink_fence(failover->sink, job->rel->id);
    if (!vr_failover_choose(job, point, &cycle, error) ||
        !vr_failover_qemu_ids(failover, virt_type, &uid, &gid, error))
        goto rollback;
    /* 2. The overlays, on the chosen point of every disk. */
    created = true;
    for (guint d = 0; d < job->disks->len; d++) {
        VrFailoverDisk *disk = job->disks->pdata[d];

        if (!vr_failover_label_chain(disk, cycle, gid, error) ||
            !vr_failover_overlay_create(disk, VR_FAILOVER_OVERLAY, cycle, uid, gid, error) ||
            (job->track_bitmap != NULL &&
             !vr_failover_overlay_bitmap(disk, job->track_bitmap, error)))
            goto rollback;
    }
    vr_failpoint("failover-overlays");
    /* 3. The marker allows the start (the hook), at the next epoch. */
    failed_xml = vr_failover_xml_edit(job->standby_xml, VR_FAILOVER_MARKER_FAILED_OVER,
                                      old_epoch + 1, NULL, NULL, error);
    /* 3b. Interfaces on this host's networks (vr-failover-net.h). */
    if (failed_xml != NULL && !vr_failover_map_networks(failover, &failed_xml, &net_report, error))
        goto rollback;
    if (failed_xml == NULL || !vr_failover_define(failover, failed_xml, name, error))
        goto rollback;
    defined = true;
    /* A crash here leaves a startable standby and a receiving row: vr_failover_reconcile(). */
    vr_failpoint("failover-defined");
    /* 4. The state: refused cycles survive a restart from here on. */
    vr_failover_record_failover(job, cycle, old_epoch, name, planned, false);
    if (!vr_failover_state_put(failover, job, VR_FAILOVER_STATE_FAILED_OVER, old_epoch + 1, error))
        goto rollback;
    recorded = true;
    vr_failpoint("failover-recorded");
    /* 5. Start. */
    if (virDomainCreate(job->standby) < 0) {
        vr_failover_libvirt_error(error, "start the standby", name);
        goto rollback;
    }
    g_info("%s failover of '%s': standby '%s' runs on cycle %" PRIu64 " at epoch %" PRIu64,
           planned ? "planned" : "unplanned", job->rel->id, name, cycle, old_epoch + 1);
    return vr_failover_net_result(failover, job, job->standby, "failover",
                                  vr_failover_result(job, name, cycle, false), net_report);

rollback:
    g_prefix_error(error, "failover of '%s': ", job->rel->id);
    if (recorded) {
        json_object_object_del(job->config, "failover");
        vr_failover_state_put(failover, job, VR_FAILOVER_STATE_REPLICATING, old_epoch, NULL);
    }
    if (defined) {
        replica_xml = vr_failover_xml_edit(job->standby_xml, VR_STANDBY_STATE_REPLICA, old_epoch,
                                           NULL, NULL, NULL);
        if (replica_xml != NULL)
            vr_failover_define(failover, replica_xml, name, NULL);
    }
    if (created)
        vr_failover_overlays_remove(job, VR_FAILOVER_OVERLAY, NULL);
    vr_replica_sink_unfence(failover->sink, job->rel->id);
    return NULL;
}

/* The running failover of @job: its record in the config, or NULL with CONFLICT. */
static json_object *
vr_failover_record(VrFailoverJob *job, GError **error)
{
    json_object *record = NULL;

    if (g_strcmp0(job->rel->state, VR_FAILOVER_STATE_FAILED_OVER) != 0 ||
        !json_object_object_get_ex(job->config, "failover", &record)) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "relationship '%s' is in state %s, not FailedOver", job->rel->id,
                         job->rel->state);
        return NULL;
    }
    return record;
}

json_object *
vr_failover_complete(VrFailover *failover, const char *name, GError **error)
{
    g_autoptr(VrFailoverJob) job = vr_failover_job_new(failover, name, error);
    json_object *record, *point, *completed;
    uint64_t cycle;

    if (job == NULL || (record = vr_failover_record(job, error)) == NULL)
        return NULL;
    json_object_object_get_ex(record, "point", &point);
    cycle = (uint64_t)json_object_get_uint64(point);
    /* Again when a crash interrupted it: what is gone stays gone. */
    for (guint d = 0; d < job->disks->len; d++) {
        VrFailoverDisk *disk = job->disks->pdata[d];
        g_autoptr(GError) local = NULL;
        const VrReplicaPoint *points;
        guint n;

        if (!vr_replica_store_keep_chain(disk->store, cycle, &local)) {
            vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                             "cannot complete the failover of '%s': disk '%s': %s", job->rel->id,
                             disk->target, local->message);
            return NULL;
        }
        /* The manifest is the commit point; the state mirrors it (again at the next start). */
        points = vr_replica_store_points(disk->store, &n);
        if (!vr_state_points_sync(failover->state, job->rel->id, disk->target, points, n, &local))
            g_debug("points of '%s' not mirrored: %s", disk->dir, local->message);
    }
    completed = json_object_new_boolean(true);
    json_object_object_add(record, "completed", completed);
    if (!vr_failover_state_put(failover, job, VR_FAILOVER_STATE_FAILED_OVER, job->rel->epoch,
                               error))
        return NULL;
    g_info("failover of '%s' completed: cycle %" PRIu64 " and its chain kept", job->rel->id, cycle);
    return vr_failover_result(job, virDomainGetName(job->standby), cycle, false);
}

static json_object *
vr_failover_cancel_unplanned(VrFailover *failover, VrFailoverJob *job, GError **error)
{
    const char *name = virDomainGetName(job->standby);
    g_autofree char *replica_xml = NULL;
    json_object *record, *value;
    uint64_t previous;

    if ((record = vr_failover_record(job, error)) == NULL)
        return NULL;
    if (json_object_object_get_ex(record, "completed", &value) && json_object_get_boolean(value)) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "the failover of '%s' is completed (state FailedOver, completed): it "
                         "cannot be cancelled",
                         job->rel->id);
        return NULL;
    }
    json_object_object_get_ex(record, "previous_epoch", &value);
    previous = (uint64_t)json_object_get_uint64(value);
    if (previous == 0)
        previous = job->rel->epoch > 1 ? job->rel->epoch - 1 : 1;
    if (virDomainIsActive(job->standby) == 1 && virDomainDestroy(job->standby) < 0) {
        vr_failover_libvirt_error(error, "stop the standby", name);
        return NULL;
    }
    if (!vr_failover_overlays_remove(job, VR_FAILOVER_OVERLAY, error))
        return NULL;
    replica_xml = vr_failover_xml_edit(job->standby_xml, VR_STANDBY_STATE_REPLICA, previous, NULL,
                                       NULL, error);
    if (replica_xml == NULL || !vr_failover_define(failover, replica_xml, name, error))
        return NULL;
    vr_failpoint("failover-cancel-defined");
    json_object_object_del(job->config, "failover");
    if (!vr_failover_state_put(failover, job, VR_FAILOVER_STATE_REPLICATING, previous, error))
        return NULL;
    vr_replica_sink_unfence(failover->sink, job->rel->id);
    g_info("failover of '%s' cancelled: standby '%s' stopped, cycles accepted again at epoch "
           "%" PRIu64,
           job->rel->id, name, previous);
    return vr_failover_result(job, name, 0, false);
}

/* ---- test failover -------------------------------------------------------------------- */

static void
vr_failover_release(VrFailoverJob *job, uint64_t cycle)
{
    for (guint d = 0; d < job->disks->len; d++)
        vr_replica_store_release(((VrFailoverDisk *)job->disks->pdata[d])->store, cycle);
}

/*
 * A copy of this relationship named @name that a crash left (the state does not record it):
 * destroyed and undefined. Another domain of that name is a CONFLICT, never touched.
 */
static bool
vr_failover_remove_leftover(VrFailover *failover, VrFailoverJob *job, const char *name,
                            GError **error)
{
    g_autoptr(virDomain) dom = virDomainLookupByName(failover->conn, name);
    g_autoptr(VrStandbyInfo) info = NULL;

    if (dom == NULL)
        return true;
    info = vr_standby_info_get(dom);
    if (info == NULL || strcmp(info->relationship, job->rel->id) != 0 ||
        g_strcmp0(info->state, VR_FAILOVER_MARKER_TEST) != 0)
        return vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                                "a domain named '%s' exists and is not the test copy of "
                                "relationship '%s'",
                                name, job->rel->id);
    g_debug("removing the test copy '%s' a crash left", name);
    if ((virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0) ||
        virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_NVRAM) < 0)
        return vr_failover_libvirt_error(error, "remove the earlier test copy", name);
    return true;
}

static json_object *
vr_failover_test(VrFailover *failover, VrFailoverJob *job, const char *point, GError **error)
{
    const char *standby = virDomainGetName(job->standby);
    g_autofree char *copy_name = g_strconcat(standby, VR_FAILOVER_TEST_SUFFIX, NULL);
    g_autofree char *virt_type = vr_failover_virt_type(job->standby_xml);
    g_autofree char *xml = NULL;
    g_autoptr(virDomain) copy = NULL;
    g_autoptr(json_object) net_report = NULL;
    uint64_t cycle = 0;
    guint held = 0;
    guint uid, gid;
    bool created = false;

    if (g_strcmp0(job->rel->state, VR_FAILOVER_STATE_FAILED_OVER) == 0) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "relationship '%s' is in state FailedOver: a test failover needs "
                         "replication",
                         job->rel->id);
        return NULL;
    }
    if (!vr_failover_choose(job, point, &cycle, error) ||
        !vr_failover_qemu_ids(failover, virt_type, &uid, &gid, error))
        goto rollback;
    /* The point and its chain stay while the copy runs, whatever retention selects. */
    for (; held < job->disks->len; held++) {
        VrFailoverDisk *disk = job->disks->pdata[held];
        g_autoptr(GError) local = NULL;

        if (!vr_replica_store_hold(disk->store, cycle, &local)) {
            vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED, "%s", local->message);
            goto rollback;
        }
    }
    created = true;
    for (guint d = 0; d < job->disks->len; d++) {
        VrFailoverDisk *disk = job->disks->pdata[d];

        if (!vr_failover_label_chain(disk, cycle, gid, error) ||
            !vr_failover_overlay_create(disk, VR_FAILOVER_TEST_OVERLAY, cycle, uid, gid, error))
            goto rollback;
    }
    xml = vr_failover_xml_edit(
        job->standby_xml, VR_FAILOVER_MARKER_TEST, job->rel->epoch, copy_name,
        vr_failover_net_test_network(failover->net, failover->test_network, &net_report), error);
    if (xml == NULL || !vr_failover_remove_leftover(failover, job, copy_name, error))
        goto rollback;
    copy = virDomainDefineXML(failover->conn, xml);
    if (copy == NULL) {
        vr_failover_libvirt_error(error, "define the test copy", copy_name);
        goto rollback;
    }
    vr_failpoint("failover-test-defined");
    if (virDomainCreate(copy) < 0) {
        vr_failover_libvirt_error(error, "start the test copy", copy_name);
        goto rollback;
    }
    vr_failpoint("failover-test-started");
    vr_failover_record_test(job, cycle, copy_name, false);
    if (!vr_failover_state_put(failover, job, job->rel->state, job->rel->epoch, error))
        goto rollback;
    g_info("test failover of '%s': '%s' runs on cycle %" PRIu64, job->rel->id, copy_name, cycle);
    return vr_failover_net_result(failover, job, copy, "test_failover",
                                  vr_failover_result(job, copy_name, cycle, true), net_report);

rollback:
    g_prefix_error(error, "test failover of '%s': ", job->rel->id);
    if (copy != NULL) {
        if (virDomainIsActive(copy) == 1)
            virDomainDestroy(copy);
        virDomainUndefineFlags(copy, VIR_DOMAIN_UNDEFINE_NVRAM);
    }
    if (created)
        vr_failover_overlays_remove(job, VR_FAILOVER_TEST_OVERLAY, NULL);
    for (guint d = 0; d < held; d++)
        vr_replica_store_release(((VrFailoverDisk *)job->disks->pdata[d])->store, cycle);
    return NULL;
}

static json_object *
vr_failover_cancel_test(VrFailover *failover, VrFailoverJob *job, GError **error)
{
    g_autoptr(virDomain) copy = NULL;
    g_autofree char *copy_name = NULL;
    json_object *record, *value;
    uint64_t cycle;

    if (!json_object_object_get_ex(job->config, "test_failover", &record)) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "relationship '%s' has no test failover (state %s)", job->rel->id,
                         job->rel->state);
        return NULL;
    }
    json_object_object_get_ex(record, "domain", &value);
    copy_name = g_strdup(json_object_get_string(value));
    json_object_object_get_ex(record, "point", &value);
    cycle = (uint64_t)json_object_get_uint64(value);
    copy = copy_name != NULL ? virDomainLookupByName(failover->conn, copy_name) : NULL;
    if (copy != NULL) {
        g_autoptr(VrStandbyInfo) info = vr_standby_info_get(copy);

        /* Only the copy this relationship made: never another domain of that name. */
        if (info == NULL || strcmp(info->relationship, job->rel->id) != 0 ||
            g_strcmp0(info->state, VR_FAILOVER_MARKER_TEST) != 0) {
            vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                             "domain '%s' is not the test copy of relationship '%s'", copy_name,
                             job->rel->id);
            return NULL;
        }
        if (virDomainIsActive(copy) == 1 && virDomainDestroy(copy) < 0) {
            vr_failover_libvirt_error(error, "stop the test copy", copy_name);
            return NULL;
        }
        if (virDomainUndefineFlags(copy, VIR_DOMAIN_UNDEFINE_NVRAM |
                                             VIR_DOMAIN_UNDEFINE_MANAGED_SAVE |
                                             VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA |
                                             VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA) < 0) {
            vr_failover_libvirt_error(error, "undefine the test copy", copy_name);
            return NULL;
        }
        vr_failpoint("failover-test-cancel-undefined");
    }
    if (!vr_failover_overlays_remove(job, VR_FAILOVER_TEST_OVERLAY, error))
        return NULL;
    vr_failover_release(job, cycle);
    json_object_object_del(job->config, "test_failover");
    if (!vr_failover_state_put(failover, job, job->rel->state, job->rel->epoch, error))
        return NULL;
    g_info("test failover of '%s' cancelled: '%s' removed", job->rel->id,
           copy_name != NULL ? copy_name : "?");
    return vr_failover_result(job, copy_name, cycle, true);
}

/* ---- reconciliation at start ----------------------------------------------------------- */

/*
 * The cycle overlay @path is made on: its qcow2 header's backing file, "rp-<cycle>.qcow2" as
 * vr_failover_overlay_create() names it. 0 when there is no such file, it is not a qcow2 or
 * is based on something else. The header only: QEMU may have the image open.
 */
static uint64_t
vr_failover_overlay_cycle(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    guint8 header[20];
    char name[64];
    guint64 offset;
    guint32 size;
    guint64 cycle = 0;

    if (fd < 0)
        return 0;
    if (pread(fd, header, sizeof(header), 0) != (ssize_t)sizeof(header) ||
        memcmp(header, "QFI\xfb", 4) != 0) {
        close(fd);
        return 0;
    }
    memcpy(&offset, header + 8, sizeof(offset));
    memcpy(&size, header + 16, sizeof(size));
    offset = GUINT64_FROM_BE(offset);
    size = GUINT32_FROM_BE(size);
    if (offset == 0 || size == 0 || size >= sizeof(name) ||
        pread(fd, name, size, (off_t)offset) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    close(fd);
    name[size] = '\0';
    if (!g_str_has_prefix(name, "rp-") || !g_str_has_suffix(name, ".qcow2"))
        return 0;
    name[size - strlen(".qcow2")] = '\0';
    if (!g_ascii_string_to_unsigned(name + 3, 10, 1, G_MAXUINT64, &cycle, NULL))
        return 0;
    return cycle;
}

/*
 * The point the overlays @name of @job's disks are on when they are whole: on every disk a
 * renamed overlay (the .tmp is never one) of the same cycle, a point its store holds. 0
 * otherwise (none, or some missing, or on different points).
 */
static uint64_t
vr_failover_overlays_cycle(VrFailoverJob *job, const char *name)
{
    uint64_t cycle = 0;

    for (guint d = 0; d < job->disks->len; d++) {
        VrFailoverDisk *disk = job->disks->pdata[d];
        g_autofree char *path = g_build_filename(disk->dir, name, NULL);
        g_autofree char *image = NULL;
        uint64_t c = vr_failover_overlay_cycle(path);

        if (c == 0 || (d > 0 && c != cycle))
            return 0;
        image = vr_replica_store_image_path(disk->store, c);
        if (image == NULL)
            return 0;
        cycle = c;
    }
    return cycle;
}

/*
 * Whether overlay @path holds data of its own (a guest wrote it, or it is not a failover's
 * fresh overlay at all), by qemu-img map: any data extent at depth 0. A map that fails counts
 * as written: the file is kept.
 */
static bool
vr_failover_overlay_written(const char *path)
{
    const char *argv[] = { "qemu-img", "map", "-U", "--output=json", "-f", "qcow2", path, NULL };
    g_autofree char *out = NULL;
    g_autoptr(json_object) map = NULL;
    int status = 0;

    if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDERR_TO_DEV_NULL,
                      NULL, NULL, &out, NULL, &status, NULL) ||
        !g_spawn_check_wait_status(status, NULL) || (map = json_tokener_parse(out)) == NULL ||
        !json_object_is_type(map, json_type_array))
        return true;
    for (size_t i = 0; i < json_object_array_length(map); i++) {
        json_object *extent = json_object_array_get_idx(map, i);
        json_object *data, *depth;

        if (json_object_object_get_ex(extent, "data", &data) && json_object_get_boolean(data) &&
            json_object_object_get_ex(extent, "depth", &depth) && json_object_get_int(depth) == 0)
            return true;
    }
    return false;
}

/*
 * Whether any disk of @job has overlay @name, or its .tmp; with @written, only one that
 * holds data of its own (vr_failover_overlay_written()): a guest's writes, or a file that is
 * no fresh overlay.
 */
static bool
vr_failover_overlays_find(VrFailoverJob *job, const char *name, bool written)
{
    for (guint d = 0; d < job->disks->len; d++) {
        VrFailoverDisk *disk = job->disks->pdata[d];
        g_autofree char *path = g_build_filename(disk->dir, name, NULL);
        g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);
        const char *files[] = { path, tmp };

        for (guint f = 0; f < G_N_ELEMENTS(files); f++) {
            if (g_file_test(files[f], G_FILE_TEST_EXISTS) &&
                (!written || vr_failover_overlay_written(files[f])))
                return true;
        }
    }
    return false;
}

/* The standby redefined with marker @state at @epoch (its disks as they are). */
static bool
vr_failover_mark(VrFailover *failover, VrFailoverJob *job, const char *state, uint64_t epoch,
                 GError **error)
{
    g_autofree char *xml = vr_failover_xml_edit(job->standby_xml, state, epoch, NULL, NULL, error);

    return xml != NULL && vr_failover_define(failover, xml, virDomainGetName(job->standby), error);
}

/*
 * Roll the failover of @job forward: the row FailedOver at @epoch with a failover record of
 * @cycle (marked "reconciled": what was asked, planned or not, is not known), the sink
 * fenced, then the standby's marker "failed-over" at @epoch. The row first: a crash between
 * the two leaves a FailedOver row and a marker "replica", which the next start rolls
 * forward again.
 */
static bool
vr_failover_reconcile_forward(VrFailover *failover, VrFailoverJob *job, uint64_t cycle,
                              uint64_t epoch, GError **error)
{
    if (g_strcmp0(job->rel->state, VR_FAILOVER_STATE_FAILED_OVER) != 0) {
        vr_failover_record_failover(job, cycle, job->rel->epoch, virDomainGetName(job->standby),
                                    false, true);
        if (!vr_failover_state_put(failover, job, VR_FAILOVER_STATE_FAILED_OVER, epoch, error))
            return false;
    }
    vr_replica_sink_fence(failover->sink, job->rel->id);
    return vr_failover_mark(failover, job, VR_FAILOVER_MARKER_FAILED_OVER, epoch, error);
}

/*
 * Roll the failover of @job back, as a cancel ends: the standby's marker "replica" at
 * @epoch first (it cannot start from then on), the overlays removed, then the row
 * Replicating at @epoch without a failover record, and the sink takes cycles again.
 */
static bool
vr_failover_reconcile_back(VrFailover *failover, VrFailoverJob *job, uint64_t epoch, GError **error)
{
    if (!vr_failover_mark(failover, job, VR_STANDBY_STATE_REPLICA, epoch, error) ||
        !vr_failover_overlays_remove(job, VR_FAILOVER_OVERLAY, error))
        return false;
    if (g_strcmp0(job->rel->state, VR_FAILOVER_STATE_REPLICATING) != 0 ||
        job->rel->epoch != epoch || json_object_object_get_ex(job->config, "failover", NULL)) {
        json_object_object_del(job->config, "failover");
        if (!vr_failover_state_put(failover, job, VR_FAILOVER_STATE_REPLICATING, epoch, error))
            return false;
    }
    vr_replica_sink_unfence(failover->sink, job->rel->id);
    return true;
}

/*
 * The standby of @job against the row's failover state (docs/failover.md, "Crash and
 * restart"): a failover, or its cancel, that a crash stopped between the standby's define
 * and the row's write is finished, forward when the standby runs or its overlays are whole,
 * else backward. Never a startable standby for a row that receives.
 */
static void
vr_failover_reconcile_standby(VrFailover *failover, VrFailoverJob *job)
{
    const char *name = virDomainGetName(job->standby);
    g_autoptr(VrStandbyInfo) info = vr_standby_info_get(job->standby);
    g_autoptr(GError) local = NULL;
    bool row_failed = g_strcmp0(job->rel->state, VR_FAILOVER_STATE_FAILED_OVER) == 0;
    bool marker_failed =
        info != NULL && g_strcmp0(info->state, VR_FAILOVER_MARKER_FAILED_OVER) == 0;
    bool running = virDomainIsActive(job->standby) == 1;
    uint64_t cycle = vr_failover_overlays_cycle(job, VR_FAILOVER_OVERLAY);
    uint64_t marker_epoch = info != NULL ? info->epoch : 0;
    json_object *record = NULL, *value;
    bool completed = false;
    uint64_t previous;

    if (!row_failed) {
        if (!marker_failed && !running) {
            /* Both say replica; overlays a failover left before its define go, unless one
             * holds data of its own: that one is no throwaway, it is never removed here. */
            if (!vr_failover_overlays_find(job, VR_FAILOVER_OVERLAY, false))
                return;
            for (guint d = 0; d < job->disks->len; d++) {
                VrFailoverDisk *disk = job->disks->pdata[d];
                g_autofree char *path = g_build_filename(disk->dir, VR_FAILOVER_OVERLAY, NULL);

                if (g_file_test(path, G_FILE_TEST_EXISTS) && vr_failover_overlay_written(path)) {
                    g_warning("relationship '%s': '%s' holds written data though standby '%s' "
                              "is guarded (state %s, marker '%s'): kept; remove it by hand "
                              "once it is not needed",
                              job->rel->id, path, name, job->rel->state,
                              info != NULL ? info->state : "none");
                    return;
                }
            }
            g_warning("relationship '%s': removing the failover overlays of standby '%s' that "
                      "an interrupted failover left (state %s, marker '%s')",
                      job->rel->id, name, job->rel->state, info != NULL ? info->state : "none");
            if (!vr_failover_overlays_remove(job, VR_FAILOVER_OVERLAY, &local))
                g_warning("relationship '%s': %s", job->rel->id, local->message);
            return;
        }
        if (running || cycle != 0) {
            uint64_t epoch = MAX(marker_failed ? marker_epoch : 0, job->rel->epoch + 1);

            g_warning("relationship '%s' is in state %s at epoch %" PRIu64 " but its standby "
                      "'%s' %s (marker '%s'): rolled forward to FailedOver at epoch %" PRIu64
                      " on cycle %" PRIu64 "; cycles are refused, complete or cancel the failover",
                      job->rel->id, job->rel->state, job->rel->epoch, name,
                      running ? "runs" : "has its failover overlays",
                      info != NULL ? info->state : "none", epoch, cycle);
            if (!vr_failover_reconcile_forward(failover, job, cycle, epoch, &local))
                g_warning("relationship '%s': rolling forward failed: %s", job->rel->id,
                          local->message);
            return;
        }
        g_warning("relationship '%s' is in state %s at epoch %" PRIu64 " but its standby '%s' "
                  "has marker '%s' without whole failover overlays: rolled back to marker '%s' "
                  "at epoch %" PRIu64,
                  job->rel->id, job->rel->state, job->rel->epoch, name,
                  info != NULL ? info->state : "none", VR_STANDBY_STATE_REPLICA, job->rel->epoch);
        if (!vr_failover_reconcile_back(failover, job, job->rel->epoch, &local))
            g_warning("relationship '%s': rolling back failed: %s", job->rel->id, local->message);
        return;
    }
    /* The row says FailedOver. */
    if (json_object_object_get_ex(job->config, "failover", &record) &&
        json_object_object_get_ex(record, "completed", &value))
        completed = json_object_get_boolean(value);
    if (running || cycle != 0 || completed) {
        if (marker_failed && marker_epoch == job->rel->epoch)
            return;
        g_warning("relationship '%s' is FailedOver at epoch %" PRIu64 " but its standby '%s' "
                  "has marker '%s' at epoch %" PRIu64 ": marker set to '%s'",
                  job->rel->id, job->rel->epoch, name, info != NULL ? info->state : "none",
                  marker_epoch, VR_FAILOVER_MARKER_FAILED_OVER);
        if (!vr_failover_reconcile_forward(failover, job, cycle, job->rel->epoch, &local))
            g_warning("relationship '%s': rolling forward failed: %s", job->rel->id,
                      local->message);
        return;
    }
    /*
     * An interrupted cancel: the standby is off and its overlays are gone (or fresh, none
     * written: the cancel removes them anyway); it is finished. Overlays that exist but
     * whose point is not known (a block job or a rebase rewrote the backing name, a read
     * error) may hold the failed-over guest's data: nothing is touched then.
     */
    if (vr_failover_overlays_find(job, VR_FAILOVER_OVERLAY, true)) {
        g_warning("relationship '%s' is FailedOver at epoch %" PRIu64 " and its standby '%s' "
                  "is off, but its failover overlays hold written data this host cannot "
                  "attribute to a point: left as they are; complete or cancel the failover",
                  job->rel->id, job->rel->epoch, name);
        return;
    }
    value = NULL;
    if (record != NULL)
        json_object_object_get_ex(record, "previous_epoch", &value);
    previous = value != NULL ? (uint64_t)json_object_get_uint64(value) : 0;
    if (previous == 0)
        previous = job->rel->epoch > 1 ? job->rel->epoch - 1 : 1;
    g_warning("relationship '%s' is FailedOver at epoch %" PRIu64 " but its standby '%s' is off "
              "without failover overlays (marker '%s'): the cancel is finished, Replicating at "
              "epoch %" PRIu64,
              job->rel->id, job->rel->epoch, name, info != NULL ? info->state : "none", previous);
    if (!vr_failover_reconcile_back(failover, job, previous, &local))
        g_warning("relationship '%s': rolling back failed: %s", job->rel->id, local->message);
}

/*
 * The test copy of @job against the row's test failover record: a copy the row does not
 * record is recorded when it runs or its overlays are whole (its points are held next, as
 * after any restart), else removed; a record whose copy is gone, or stopped without whole
 * overlays, is removed with what is left of the copy.
 */
static void
vr_failover_reconcile_test(VrFailover *failover, VrFailoverJob *job)
{
    g_autofree char *copy_name =
        g_strconcat(virDomainGetName(job->standby), VR_FAILOVER_TEST_SUFFIX, NULL);
    g_autoptr(virDomain) copy = virDomainLookupByName(failover->conn, copy_name);
    g_autoptr(VrStandbyInfo) info = copy != NULL ? vr_standby_info_get(copy) : NULL;
    g_autoptr(GError) local = NULL;
    bool ours = info != NULL && strcmp(info->relationship, job->rel->id) == 0 &&
                g_strcmp0(info->state, VR_FAILOVER_MARKER_TEST) == 0;
    bool running = ours && virDomainIsActive(copy) == 1;
    bool recorded = json_object_object_get_ex(job->config, "test_failover", NULL);
    uint64_t cycle = vr_failover_overlays_cycle(job, VR_FAILOVER_TEST_OVERLAY);

    if (ours && (running || cycle != 0)) {
        if (recorded)
            return;
        /* It runs on overlays whose point is not known: no point to hold, none recorded. */
        if (cycle == 0) {
            g_warning("relationship '%s': test copy '%s' runs but the state database does not "
                      "record it, and its overlays' point is not known: not recorded (stop and "
                      "undefine it by hand once it is not needed)",
                      job->rel->id, copy_name);
            return;
        }
        g_warning("relationship '%s': test copy '%s' %s but the state database does not record "
                  "it: recorded on cycle %" PRIu64 " (cancel it with replica-failover-cancel "
                  "--test)",
                  job->rel->id, copy_name, running ? "runs" : "is defined", cycle);
        vr_failover_record_test(job, cycle, copy_name, true);
        if (!vr_failover_state_put(failover, job, job->rel->state, job->rel->epoch, &local))
            g_warning("relationship '%s': %s", job->rel->id, local->message);
        return;
    }
    if (!recorded && !ours && !vr_failover_overlays_find(job, VR_FAILOVER_TEST_OVERLAY, false))
        return;
    g_warning("relationship '%s': the test failover %s (copy '%s' %s): removed", job->rel->id,
              recorded ? "the state database records is gone" : "a crash interrupted", copy_name,
              ours ? "stopped without whole overlays" : "not defined");
    if (ours && ((virDomainIsActive(copy) == 1 && virDomainDestroy(copy) < 0) ||
                 virDomainUndefineFlags(copy, VIR_DOMAIN_UNDEFINE_NVRAM) < 0)) {
        g_warning("relationship '%s': cannot remove test copy '%s': %s", job->rel->id, copy_name,
                  virGetLastErrorMessage());
        return;
    }
    if (!vr_failover_overlays_remove(job, VR_FAILOVER_TEST_OVERLAY, &local)) {
        g_warning("relationship '%s': %s", job->rel->id, local->message);
        return;
    }
    if (recorded) {
        json_object_object_del(job->config, "test_failover");
        if (!vr_failover_state_put(failover, job, job->rel->state, job->rel->epoch, &local))
            g_warning("relationship '%s': %s", job->rel->id, local->message);
    }
}

/*
 * Every replica relationship's standby and test copy against its row, once, when the
 * replica role starts: before a cycle is received and before test failovers hold their
 * points again. A relationship without a standby here is skipped (debug message).
 */
static void
vr_failover_reconcile(VrFailover *failover)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GPtrArray) list = vr_state_relationship_list(failover->state, &local);

    if (list == NULL) {
        g_warning("failovers not reconciled: %s", local->message);
        return;
    }
    for (guint i = 0; i < list->len; i++) {
        VrStateRelationship *rel = list->pdata[i];
        g_autoptr(VrFailoverJob) job = NULL;

        if (rel->role != VR_STATE_ROLE_REPLICA)
            continue;
        job = vr_failover_job_new(failover, rel->id, &local);
        if (job == NULL) {
            g_debug("relationship '%s' not reconciled: %s", rel->id, local->message);
            g_clear_error(&local);
            continue;
        }
        vr_failover_reconcile_standby(failover, job);
        vr_failover_reconcile_test(failover, job);
    }
}

/* ---- entry points -------------------------------------------------------------------- */

json_object *
vr_failover_start(VrFailover *failover, const char *name, const char *point, bool test,
                  GError **error)
{
    g_autoptr(VrFailoverJob) job = vr_failover_job_new(failover, name, error);
    json_object *record;

    if (job == NULL)
        return NULL;
    if (json_object_object_get_ex(job->config, "test_failover", &record)) {
        json_object *domain = NULL;

        json_object_object_get_ex(record, "domain", &domain);
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "a test failover of '%s' runs (domain '%s'): cancel it first with "
                         "replica-failover-cancel --test",
                         job->rel->id, json_object_get_string(domain));
        return NULL;
    }
    if (test)
        return vr_failover_test(failover, job, point, error);
    if (g_strcmp0(job->rel->state, VR_FAILOVER_STATE_FAILED_OVER) == 0) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "relationship '%s' is in state FailedOver already", job->rel->id);
        return NULL;
    }
    return vr_failover_unplanned(failover, job, point, false, error);
}

/*
 * Does every disk of @job hold cycle @cycle of epoch @epoch as its latest point, made by the
 * stream whose digest @digests names ({"vda": hex, ...}: every disk, nothing else)?
 */
static bool
vr_failover_check_final(VrFailoverJob *job, uint64_t cycle, uint64_t epoch, json_object *digests,
                        GError **error)
{
    if (!json_object_is_type(digests, json_type_object) ||
        (guint)json_object_object_length(digests) != job->disks->len)
        return vr_failover_fail(
            error, VR_FAILOVER_ERROR_CONFLICT,
            "the replica does not hold the final state: the primary sent "
            "digests of %d disks, the standby has %u",
            json_object_is_type(digests, json_type_object) ? json_object_object_length(digests) : 0,
            job->disks->len);
    for (guint d = 0; d < job->disks->len; d++) {
        VrFailoverDisk *disk = job->disks->pdata[d];
        const VrReplicaPoint *points, *latest;
        char hex[VR_WIRE_DIGEST_SIZE * 2 + 1];
        json_object *want;
        guint n;

        if (!json_object_object_get_ex(digests, disk->target, &want) ||
            !json_object_is_type(want, json_type_string))
            return vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                                    "the replica does not hold the final state: no digest of "
                                    "disk '%s'",
                                    disk->target);
        points = vr_replica_store_points(disk->store, &n);
        if (n == 0)
            return vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                                    "the replica does not hold the final state: disk '%s' has "
                                    "no recovery point",
                                    disk->target);
        latest = &points[n - 1];
        vr_replica_hex_encode(latest->digest, VR_WIRE_DIGEST_SIZE, hex);
        if (latest->cycle != cycle || latest->epoch != epoch ||
            g_ascii_strcasecmp(hex, json_object_get_string(want)) != 0)
            return vr_failover_fail(
                error, VR_FAILOVER_ERROR_CONFLICT,
                "the replica does not hold the final state: disk '%s' has cycle %" PRIu64
                " of epoch %" PRIu64 " (digest %.16s...) as its latest point, the primary's "
                "final cycle is %" PRIu64 " of epoch %" PRIu64 " (digest %.16s...)",
                disk->target, latest->cycle, latest->epoch, hex, cycle, epoch,
                json_object_get_string(want));
    }
    return true;
}

/*
 * Whether the failover @record of @job is the one a planned request of @cycle at @epoch
 * asked for: recorded as planned, or rolled forward at start (vr_failover_reconcile(),
 * which cannot know it was planned) on that point while every disk still holds the final
 * state @digests names; the record is then planned from now on.
 */
static bool
vr_failover_same_planned(VrFailover *failover, VrFailoverJob *job, json_object *record,
                         uint64_t cycle, uint64_t epoch, json_object *digests)
{
    json_object *value;

    if (!json_object_object_get_ex(record, "point", &value) ||
        (uint64_t)json_object_get_uint64(value) != cycle ||
        !json_object_object_get_ex(record, "previous_epoch", &value) ||
        (uint64_t)json_object_get_uint64(value) != epoch)
        return false;
    if (json_object_object_get_ex(record, "planned", &value) && json_object_get_boolean(value))
        return true;
    if (!json_object_object_get_ex(record, "reconciled", &value) ||
        !json_object_get_boolean(value) ||
        !vr_failover_check_final(job, cycle, epoch, digests, NULL))
        return false;
    json_object_object_add(record, "planned", json_object_new_boolean(true));
    return vr_failover_state_put(failover, job, job->rel->state, job->rel->epoch, NULL);
}

json_object *
vr_failover_start_planned(VrFailover *failover, const char *relationship, uint64_t cycle,
                          uint64_t epoch, json_object *digests, const char *track_bitmap,
                          GError **error)
{
    g_autoptr(VrFailoverJob) job = vr_failover_job_new(failover, relationship, error);
    json_object *record;
    g_autofree char *point = g_strdup_printf("%" PRIu64, cycle);

    if (job == NULL)
        return NULL;
    if (strcmp(job->rel->id, relationship) != 0) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_NOT_FOUND, "no relationship '%s' here",
                         relationship);
        return NULL;
    }
    if (json_object_object_get_ex(job->config, "test_failover", &record)) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "a test failover of '%s' runs on the replica: cancel it there first",
                         job->rel->id);
        return NULL;
    }
    if (g_strcmp0(job->rel->state, VR_FAILOVER_STATE_FAILED_OVER) == 0) {
        /* A repeated request (its answer was lost): the same answer. */
        if (json_object_object_get_ex(job->config, "failover", &record) &&
            vr_failover_same_planned(failover, job, record, cycle, epoch, digests)) {
            json_object *result;

            /* A crash after the state and before the start: it starts now. */
            if (job->standby != NULL && virDomainIsActive(job->standby) != 1 &&
                virDomainCreate(job->standby) < 0) {
                vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                                 "relationship '%s' failed over to cycle %" PRIu64
                                 ", but its standby '%s' does not run and cannot start: %s",
                                 job->rel->id, cycle, virDomainGetName(job->standby),
                                 virGetLastErrorMessage());
                return NULL;
            }
            result = vr_failover_result(job, virDomainGetName(job->standby), cycle, false);

            json_object_object_add(result, "planned", json_object_new_boolean(true));
            return result;
        }
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "relationship '%s' is in state FailedOver already on the replica",
                         job->rel->id);
        return NULL;
    }
    if (job->rel->epoch != epoch) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT,
                         "the replica does not hold the final state: relationship '%s' is at "
                         "epoch %" PRIu64 " here, the primary's is %" PRIu64,
                         job->rel->id, job->rel->epoch, epoch);
        return NULL;
    }
    /* No cycle may land between the check and the failover (the primary sends none now). */
    vr_replica_sink_fence(failover->sink, job->rel->id);
    if (!vr_failover_check_final(job, cycle, epoch, digests, error)) {
        vr_replica_sink_unfence(failover->sink, job->rel->id);
        return NULL;
    }
    job->track_bitmap = track_bitmap;
    record = vr_failover_unplanned(failover, job, point, true, error);
    if (record != NULL)
        json_object_object_add(record, "planned", json_object_new_boolean(true));
    return record;
}

json_object *
vr_failover_cancel(VrFailover *failover, const char *name, bool test, GError **error)
{
    g_autoptr(VrFailoverJob) job = vr_failover_job_new(failover, name, error);

    if (job == NULL)
        return NULL;
    return test ? vr_failover_cancel_test(failover, job, error)
                : vr_failover_cancel_unplanned(failover, job, error);
}

/* ---- the intent of a reverse set-up (resumed at start) ----------------------------------- */

/* The kind of a reverse set-up's intent in the state database (docs/failover.md). */
#define VR_FAILOVER_REVERSE_INTENT "reverse"

/* The set-up of @relationship ended: nothing is left for a start to resume. */
static void
vr_failover_reverse_intent_clear(VrFailover *failover, const char *relationship)
{
    g_autoptr(GError) local = NULL;

    if (!vr_state_intent_delete(failover->state, relationship, VR_FAILOVER_REVERSE_INTENT, &local))
        g_warning("reverse replication of '%s': its set-up is done, but its intent stays (the "
                  "next start runs it again, which changes nothing): %s",
                  relationship, local->message);
}

/*
 * Whether @store (a seed's, opened) holds point @cycle of @epoch as its only one: a set-up
 * that a stop interrupted seeded it before. Only a sign: that the point is a copy of the
 * image as it is now, the image's identity in the intent tells (vr_failover_reverse_source()).
 */
static bool
vr_failover_reverse_seeded_already(VrReplicaStore *store, uint64_t cycle, uint64_t epoch)
{
    guint n = 0;
    const VrReplicaPoint *points = vr_replica_store_points(store, &n);

    return n == 1 && points[0].cycle == cycle && points[0].epoch == epoch;
}

/*
 * The identity of the closed image @path, "DEV:INO:SIZE:MTIME" (nanoseconds): any write
 * (the domain ran) changes its mtime, a copy or a replacement its inode. A set-up records it
 * in its intent before its first copy; its resume skips a seeded disk only when it is the
 * same still (finding a seed of an older image would corrupt the replica). (transfer full)
 */
static char *
vr_failover_reverse_source(const char *path, GError **error)
{
    struct stat st;

    if (stat(path, &st) < 0) {
        vr_failover_errno(error, errno, "read the status of", path);
        return NULL;
    }
    return g_strdup_printf("%ju:%ju:%jd:%jd.%09ld", (uintmax_t)st.st_dev, (uintmax_t)st.st_ino,
                           (intmax_t)st.st_size, (intmax_t)st.st_mtim.tv_sec,
                           (long)st.st_mtim.tv_nsec);
}

/* ---- reverse replication: the old primary becomes the replica ---------------------------- */

/* @path made (mode 0700) when missing; an existing directory is fine. */
static bool
vr_failover_mkdir(const char *path, GError **error)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return vr_failover_errno(error, errno, "make the directory", path);
    return true;
}

/* One disk of a reverse set-up: where its point comes from. */
typedef struct {
    char *target;
    char *dir;  /* its store's directory */
    char *file; /* the domain's image of it */
    bool adopt; /* the store's failover overlay: adopted on the main context, no copy */
    bool has_digest;
    uint8_t digest[VR_WIRE_DIGEST_SIZE];
    char *source;          /* the image's identity as the set-up began (a seed's) */
    bool resumable;        /* an interrupted set-up's intent names that same identity */
    VrReplicaStore *store; /* a seed's own store: opened and written by the worker */
} VrFailoverReverseDisk;

static void
vr_failover_reverse_disk_free(gpointer data)
{
    VrFailoverReverseDisk *disk = data;

    g_free(disk->target);
    g_free(disk->dir);
    g_free(disk->file);
    g_free(disk->source);
    vr_replica_store_free(disk->store);
    g_free(disk);
}

/*
 * A reverse set-up under way (vr_failover_reverse_adopt_async()): what the main context
 * checked and found, the disks the worker seeds, and the request's task.
 */
typedef struct {
    VrFailover *failover;
    GTask *task; /* the caller's (transfer full until it is returned) */
    GCancellable *cancellable;
    char *relationship;
    char *domain;
    char *peer;
    char *root;
    char *xml; /* the domain's inactive definition (secure) */
    char uuid[VIR_UUID_STRING_BUFLEN];
    uint64_t cycle;
    uint64_t epoch;
    GPtrArray *disks; /* VrFailoverReverseDisk, in the domain's order */
    bool was_fenced;  /* the sink refused the relationship already before */
    /* The guard (vr_failover_reverse_guard()): the domain's marker before it (NULL: none). */
    char *marker;
    bool guarded;
    bool defined; /* the domain is redefined as the standby */
    /* The relationship's row as the set-up began: its end writes only over that one. */
    VrStateRole row_role;
    uint64_t row_epoch;
    char *row_state;
} VrFailoverReverse;

static void
vr_failover_reverse_free(VrFailoverReverse *reverse)
{
    g_clear_object(&reverse->task);
    g_clear_object(&reverse->cancellable);
    g_free(reverse->relationship);
    g_free(reverse->domain);
    g_free(reverse->peer);
    g_free(reverse->root);
    g_free(reverse->xml);
    g_free(reverse->marker);
    g_free(reverse->row_state);
    g_clear_pointer(&reverse->disks, g_ptr_array_unref);
    g_free(reverse);
}

/*
 * The checks and the quick steps before the copies, on the main context: the new primary
 * authorized, the domain off, its disks and their images' identities, its marker; the
 * relationship's row; the relationship's directory with its owner file, each disk's
 * directory, and whether its point is a seed or an adoption. @resumed: the intent of the
 * set-up a stop interrupted (its seeds that are still copies of the images as they are may
 * be kept, its marker is the one from before its guard), or NULL. NULL after an error,
 * nothing else done. (transfer full)
 */
static VrFailoverReverse *
vr_failover_reverse_prepare(VrFailover *failover, const char *relationship, const char *domain,
                            const char *peer, uint64_t cycle, uint64_t epoch,
                            const char *const *digest_disks, const GArray *digests,
                            json_object *resumed, GError **error)
{
    g_autoptr(VrStateRelationship) row = NULL;
    json_object *sources = NULL, *marker = NULL;
    g_autoptr(GPtrArray) targets = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GPtrArray) files = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(virDomain) dom = virDomainLookupByName(failover->conn, domain);
    g_autoptr(GError) local = NULL;
    g_autofree char *root = NULL;
    g_autofree char *group = NULL;
    g_autofree char *rel_dir = NULL;
    g_autofree char *owner = NULL;
    g_autofree char *owner_line = NULL;
    g_autofree char *xml = NULL;
    VrFailoverReverse *reverse;
    char uuid[VIR_UUID_STRING_BUFLEN];

    if (!vr_authz_lookup(failover->authz, peer, &root, &group, &local)) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                         "this host does not authorize '%s' (the new primary) as a primary: %s",
                         peer, local->message);
        return NULL;
    }
    if (dom == NULL) {
        vr_failover_libvirt_error(error, "find domain", domain);
        return NULL;
    }
    if (virDomainIsActive(dom) == 1) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_CONFLICT, "domain '%s' runs: it must be off",
                         domain);
        return NULL;
    }
    xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    if (xml == NULL || virDomainGetUUIDString(dom, uuid) < 0) {
        vr_failover_libvirt_error(error, "read the definition of", domain);
        return NULL;
    }
    if (!vr_failover_xml_disks(xml, targets, files, error))
        return NULL;
    row = vr_state_relationship_get(failover->state, relationship, &local);
    if (row == NULL) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_NOT_FOUND, "no relationship '%s': %s",
                         relationship, local->message);
        return NULL;
    }
    rel_dir = g_build_filename(root, relationship, NULL);
    owner = g_build_filename(rel_dir, "owner", NULL);
    owner_line = g_strdup_printf("%s\n", group);
    if (!vr_failover_mkdir(rel_dir, error))
        return NULL;
    if (!g_file_test(owner, G_FILE_TEST_EXISTS) &&
        !g_file_set_contents_full(owner, owner_line, -1,
                                  G_FILE_SET_CONTENTS_CONSISTENT | G_FILE_SET_CONTENTS_DURABLE,
                                  0600, &local)) {
        vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED, "%s", local->message);
        return NULL;
    }
    reverse = g_new0(VrFailoverReverse, 1);
    reverse->failover = failover;
    reverse->relationship = g_strdup(relationship);
    reverse->domain = g_strdup(domain);
    reverse->peer = g_strdup(peer);
    reverse->root = g_steal_pointer(&root);
    reverse->xml = g_steal_pointer(&xml);
    memcpy(reverse->uuid, uuid, sizeof(uuid));
    reverse->cycle = cycle;
    reverse->epoch = epoch;
    reverse->row_role = row->role;
    reverse->row_epoch = row->epoch;
    reverse->row_state = g_strdup(row->state);
    /* The marker to restore when the set-up fails: a resumed one's from before its guard. */
    if (resumed != NULL && json_object_object_get_ex(resumed, "marker", &marker))
        reverse->marker = g_strdup(json_object_get_string(marker));
    else
        reverse->marker = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, VR_STANDBY_XMLNS,
                                               VIR_DOMAIN_AFFECT_CONFIG);
    if (resumed != NULL)
        json_object_object_get_ex(resumed, "sources", &sources);
    reverse->disks = g_ptr_array_new_with_free_func(vr_failover_reverse_disk_free);
    /*
     * Point @cycle of every disk: a copy of this host's own closed image, or, on a failback
     * (this host was the replica before: its domain ran on the failover overlay of this very
     * store), that overlay itself, adopted by the store without a copy.
     */
    for (guint i = 0; i < targets->len; i++) {
        VrFailoverReverseDisk *disk = g_new0(VrFailoverReverseDisk, 1);
        g_autofree char *overlay = NULL;

        g_ptr_array_add(reverse->disks, disk);
        disk->target = g_strdup(targets->pdata[i]);
        disk->file = g_strdup(files->pdata[i]);
        disk->dir = g_build_filename(rel_dir, disk->target, NULL);
        overlay = g_build_filename(disk->dir, VR_FAILOVER_OVERLAY, NULL);
        disk->adopt = strcmp(disk->file, overlay) == 0;
        for (guint d = 0; digest_disks != NULL && digest_disks[d] != NULL; d++) {
            if (strcmp(digest_disks[d], disk->target) == 0 && digests != NULL && d < digests->len) {
                memcpy(disk->digest,
                       (const uint8_t *)digests->data + (gsize)d * VR_WIRE_DIGEST_SIZE,
                       VR_WIRE_DIGEST_SIZE);
                disk->has_digest = true;
            }
        }
        if (!disk->adopt) {
            json_object *was = NULL;

            disk->source = vr_failover_reverse_source(disk->file, error);
            if (disk->source == NULL) {
                vr_failover_reverse_free(reverse);
                return NULL;
            }
            disk->resumable = json_object_object_get_ex(sources, disk->target, &was) &&
                              g_strcmp0(json_object_get_string(was), disk->source) == 0;
        }
        if (!vr_failover_mkdir(disk->dir, error)) {
            vr_failover_reverse_free(reverse);
            return NULL;
        }
    }
    return reverse;
}

/*
 * The intent of @reverse, stored durably before its guard and its first disk: what the new
 * primary answered (the point both sides hold, the epoch, each disk's stream digest) and
 * who it is, so that a daemon start finishes the set-up (vr_failover_reverse_resume()); the
 * identity of each image it seeds from ("sources": a seed is kept on a resume only while
 * its image is the same) and the domain's marker before the guard ("marker", null: none).
 */
static bool
vr_failover_reverse_intent_put(VrFailover *failover, VrFailoverReverse *reverse,
                               const char *const *digest_disks, const GArray *digests,
                               GError **error)
{
    g_autoptr(json_object) data = json_object_new_object();
    g_autoptr(GError) local = NULL;
    json_object *hex = json_object_new_object();
    json_object *sources = json_object_new_object();

    json_object_object_add(data, "domain", json_object_new_string(reverse->domain));
    json_object_object_add(data, "peer", json_object_new_string(reverse->peer));
    json_object_object_add(data, "cycle", json_object_new_uint64(reverse->cycle));
    json_object_object_add(data, "epoch", json_object_new_uint64(reverse->epoch));
    json_object_object_add(data, "digests", hex);
    for (guint d = 0; digest_disks != NULL && digest_disks[d] != NULL; d++) {
        char text[2 * VR_WIRE_DIGEST_SIZE + 1];

        if (digests == NULL || d >= digests->len)
            break;
        vr_replica_hex_encode((const uint8_t *)digests->data + (gsize)d * VR_WIRE_DIGEST_SIZE,
                              VR_WIRE_DIGEST_SIZE, text);
        json_object_object_add(hex, digest_disks[d], json_object_new_string(text));
    }
    json_object_object_add(data, "sources", sources);
    for (guint i = 0; i < reverse->disks->len; i++) {
        VrFailoverReverseDisk *disk = reverse->disks->pdata[i];

        if (disk->source != NULL)
            json_object_object_add(sources, disk->target, json_object_new_string(disk->source));
    }
    json_object_object_add(
        data, "marker", reverse->marker != NULL ? json_object_new_string(reverse->marker) : NULL);
    if (!vr_state_intent_put(failover->state, reverse->relationship, VR_FAILOVER_REVERSE_INTENT,
                             json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN), &local))
        return vr_failover_fail(error, VR_FAILOVER_ERROR_FAILED,
                                "cannot record the intent of the reverse set-up of '%s' (a "
                                "restart could not finish it): %s",
                                reverse->relationship, local->message);
    return true;
}

/*
 * The guard on the domain during the set-up: marker "old-primary" of the relationship at
 * its epoch, which the libvirt hook refuses to start (like the scheduler's after a planned
 * failover away), so that nobody starts it while its images are copied (a torn seed) or
 * before it is the standby (a standby that runs: split brain).
 */
static bool
vr_failover_reverse_guard(VrFailover *failover, VrFailoverReverse *reverse, GError **error)
{
    g_autoptr(virDomain) dom = virDomainLookupByName(failover->conn, reverse->domain);
    g_autofree char *marker = g_markup_printf_escaped(
        "<standby relationship=\"%s\" primary-name=\"%s\" epoch=\"%" PRIu64 "\" state=\"%s\"/>",
        reverse->relationship, reverse->domain, reverse->epoch, VR_FAILOVER_MARKER_OLD_PRIMARY);

    if (dom == NULL || virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, marker, "vr",
                                            VR_STANDBY_XMLNS, VIR_DOMAIN_AFFECT_CONFIG) < 0)
        return vr_failover_libvirt_error(error, "guard", reverse->domain);
    reverse->guarded = true;
    return true;
}

/*
 * The set-up failed: the domain as it was before it, its definition when it was redefined
 * as the standby already, else its marker; a failure is logged (the guard stays).
 */
static void
vr_failover_reverse_unguard(VrFailover *failover, VrFailoverReverse *reverse)
{
    g_autoptr(virDomain) dom = NULL;
    int rc;

    if (!reverse->guarded)
        return;
    if (reverse->defined) {
        dom = virDomainDefineXML(failover->conn, reverse->xml);
        rc = dom != NULL ? 0 : -1;
    } else {
        dom = virDomainLookupByName(failover->conn, reverse->domain);
        rc = dom == NULL ? -1
                         : virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, reverse->marker,
                                                reverse->marker != NULL ? "vr" : NULL,
                                                VR_STANDBY_XMLNS, VIR_DOMAIN_AFFECT_CONFIG);
    }
    if (rc < 0)
        g_warning("reverse replication of '%s': domain '%s' keeps the guard of the set-up that "
                  "failed (marker '%s'; remove it with replica-disable): %s",
                  reverse->relationship, reverse->domain, VR_FAILOVER_MARKER_OLD_PRIMARY,
                  virGetLastErrorMessage());
    reverse->guarded = false;
}

/*
 * A resumed set-up that failed before its own guard: the guard the interrupted one left on
 * @domain (marker VR_FAILOVER_MARKER_OLD_PRIMARY of @relationship) gives way to the marker
 * its intent @resumed recorded from before it; any other marker is left alone.
 */
static void
vr_failover_reverse_unguard_resumed(VrFailover *failover, const char *relationship,
                                    const char *domain, json_object *resumed)
{
    g_autoptr(virDomain) dom = virDomainLookupByName(failover->conn, domain);
    g_autoptr(VrStandbyInfo) info = dom != NULL ? vr_standby_info_get(dom) : NULL;
    json_object *marker = NULL;

    if (info == NULL || g_strcmp0(info->relationship, relationship) != 0 ||
        g_strcmp0(info->state, VR_FAILOVER_MARKER_OLD_PRIMARY) != 0 ||
        !json_object_object_get_ex(resumed, "marker", &marker))
        return;
    if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, json_object_get_string(marker),
                             marker != NULL ? "vr" : NULL, VR_STANDBY_XMLNS,
                             VIR_DOMAIN_AFFECT_CONFIG) < 0)
        g_warning("reverse replication of '%s': domain '%s' keeps the guard of the set-up that "
                  "failed (marker '%s'; remove it with replica-disable): %s",
                  relationship, domain, VR_FAILOVER_MARKER_OLD_PRIMARY, virGetLastErrorMessage());
}

/*
 * The worker thread: the seeds, the slow part (a qemu-img convert of each whole disk, its
 * fsyncs). Each seed's store is this thread's own until the thread ends (its flock keeps
 * the sink out of the directory; the relationship is fenced besides). A cancel kills the
 * copy that runs and leaves its store empty.
 */
static void
vr_failover_reverse_seed_thread(GTask *task, gpointer source, gpointer task_data,
                                GCancellable *unused)
{
    VrFailoverReverse *reverse = task_data;
    VrFailoverReverseDisk *disk = NULL;
    g_autoptr(GError) local = NULL;

    for (guint i = 0; i < reverse->disks->len && local == NULL; i++) {
        guint n = 0;

        disk = reverse->disks->pdata[i];
        if (disk->adopt)
            continue;
        /* A stop between two disks: the next start goes on (the code stays CANCELLED). */
        if (g_cancellable_set_error_if_cancelled(reverse->cancellable, &local))
            break;
        disk->store = vr_replica_store_open(disk->dir, &local);
        if (disk->store == NULL)
            break;
        vr_replica_store_points(disk->store, &n);
        if (n > 0) {
            /* Seeded by this very set-up before a stop, from the image as it is still. */
            if (disk->resumable &&
                vr_failover_reverse_seeded_already(disk->store, reverse->cycle, reverse->epoch))
                continue;
            /* Anything else (a seed of an image the domain wrote since, a replication's
             * points) is no base for the new primary's cycles: never taken, never removed. */
            g_task_return_new_error(
                task, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_CONFLICT,
                "disk '%s': store '%s' holds points already, not a seed of the image as it "
                "is now (a set-up that failed before, and the domain ran since?): remove the "
                "directory, then try again",
                disk->target, disk->dir);
            return;
        }
        vr_replica_store_seed_cycle_cancellable(disk->store, disk->file, "qcow2", reverse->epoch,
                                                reverse->cycle, reverse->cancellable, NULL, &local);
    }
    if (local == NULL) {
        g_task_return_boolean(task, TRUE);
    } else if (g_error_matches(local, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        /* Its code kept: the set-up's intent stays for the next start. */
        g_prefix_error(&local, "the set-up is cancelled (the daemon stops): ");
        g_task_return_error(task, g_steal_pointer(&local));
    } else {
        g_task_return_new_error(task, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_FAILED, "disk '%s': %s",
                                disk->target, local->message);
    }
}

/*
 * The end of a reverse set-up: no longer under way, the sink as it was on a failure. A
 * failure answered with an error (anything but the stop's cancel, G_IO_ERROR_CANCELLED)
 * ends the set-up for good: the domain as it was, the intent gone (nothing re-runs it by
 * itself); the stop's cancel keeps both for the next start.
 */
static void
vr_failover_reverse_return(VrFailoverReverse *reverse, json_object *result, GError *error)
{
    GTask *task = g_steal_pointer(&reverse->task);
    VrFailover *failover = reverse->failover;

    g_hash_table_remove(failover->reversing, reverse->relationship);
    vr_replica_sink_set_busy(failover->sink, reverse->relationship, false);
    if (result == NULL && !reverse->was_fenced)
        vr_replica_sink_unfence(failover->sink, reverse->relationship);
    if (result == NULL && !g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        vr_failover_reverse_unguard(failover, reverse);
        vr_failover_reverse_intent_clear(failover, reverse->relationship);
    }
    vr_failover_reverse_free(reverse);
    if (result != NULL)
        g_task_return_pointer(task, result, vr_json_free);
    else
        g_task_return_error(task, error);
    g_object_unref(task);
}

/*
 * The seeds are published (or failed): on the main context, the adoptions, the points'
 * mirror, the standby's definition, the relationship's row, the sink unfenced.
 */
static void
vr_failover_reverse_seeded(GObject *source, GAsyncResult *res, gpointer data)
{
    VrFailoverReverse *reverse = data;
    VrFailover *failover = reverse->failover;
    g_autoptr(GHashTable) paths = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(virDomain) standby = NULL;
    g_autofree char *standby_xml = NULL;
    g_autoptr(VrStateRelationship) row = NULL;
    g_autoptr(virDomain) dom = NULL;
    GError *error = NULL;
    g_autoptr(GError) local = NULL;
    json_object *result;

    if (!g_task_propagate_boolean(G_TASK(res), &error)) {
        vr_failover_reverse_return(reverse, NULL, error);
        return;
    }
    /* Every seed is published, nothing else done yet: a crash here leaves the intent. */
    vr_failpoint("reverse-seeded");
    /* The row as the set-up found it: a disable, a failover meanwhile is not undone. */
    row = vr_state_relationship_get(failover->state, reverse->relationship, NULL);
    if (row == NULL || row->role != reverse->row_role || row->epoch != reverse->row_epoch ||
        g_strcmp0(row->state, reverse->row_state) != 0) {
        vr_failover_fail(&error, VR_FAILOVER_ERROR_CONFLICT,
                         "relationship '%s' was %s during the set-up: domain '%s' does not "
                         "become its standby",
                         reverse->relationship, row == NULL ? "removed" : "changed",
                         reverse->domain);
        vr_failover_reverse_return(reverse, NULL, error);
        return;
    }
    /* The guard keeps it off; should it run anyway, its seed is torn and it is no standby. */
    dom = virDomainLookupByName(failover->conn, reverse->domain);
    if (dom == NULL || virDomainIsActive(dom) != 0) {
        if (dom == NULL)
            vr_failover_libvirt_error(&error, "find domain", reverse->domain);
        else
            vr_failover_fail(&error, VR_FAILOVER_ERROR_CONFLICT,
                             "domain '%s' was started during the copy of its disks: it does "
                             "not become the standby (its seeds are torn: remove them)",
                             reverse->domain);
        vr_failover_reverse_return(reverse, NULL, error);
        return;
    }
    for (guint i = 0; i < reverse->disks->len; i++) {
        VrFailoverReverseDisk *disk = reverse->disks->pdata[i];
        VrReplicaStore *store = disk->store;
        const VrReplicaPoint *points;
        guint n;

        if (disk->adopt) {
            /* The sink keeps this store open from the time it received into it. */
            store = vr_replica_sink_get_store(failover->sink, reverse->root, reverse->relationship,
                                              disk->target, &local);
            if (store == NULL ||
                !vr_replica_store_adopt(store, VR_FAILOVER_OVERLAY, reverse->epoch, reverse->cycle,
                                        disk->has_digest ? disk->digest : NULL, &local)) {
                vr_failover_fail(&error, VR_FAILOVER_ERROR_FAILED, "disk '%s': %s", disk->target,
                                 local->message);
                vr_failover_reverse_return(reverse, NULL, error);
                return;
            }
        }
        points = vr_replica_store_points(store, &n);
        if (!vr_state_points_sync(failover->state, reverse->relationship, disk->target, points, n,
                                  &local)) {
            g_debug("points of '%s' not mirrored: %s", disk->dir, local->message);
            g_clear_error(&local);
        }
        /* The seed's own store closes: the sink opens the directory from now on. */
        g_clear_pointer(&disk->store, vr_replica_store_free);
        g_hash_table_insert(paths, g_strdup(disk->target),
                            g_build_filename(disk->dir, VR_FAILOVER_OVERLAY, NULL));
    }
    /* The domain itself is the standby now: same name and UUID, disks on the overlays. */
    standby_xml = vr_standby_build_xml(reverse->xml,
                                       &(VrStandbyConfig){
                                           .relationship = reverse->relationship,
                                           .primary_host = reverse->peer,
                                           .epoch = reverse->epoch,
                                           .disk_paths = paths,
                                       },
                                       &local);
    if (standby_xml == NULL) {
        vr_failover_fail(&error, VR_FAILOVER_ERROR_FAILED, "cannot make '%s' the standby: %s",
                         reverse->domain, local->message);
        vr_failover_reverse_return(reverse, NULL, error);
        return;
    }
    standby = virDomainDefineXML(failover->conn, standby_xml);
    if (standby == NULL) {
        vr_failover_libvirt_error(&error, "redefine as the standby", reverse->domain);
        vr_failover_reverse_return(reverse, NULL, error);
        return;
    }
    reverse->defined = true;
    virDomainSetAutostart(standby, 0);
    {
        VrStateRelationship rel = {
            .id = reverse->relationship,
            .role = VR_STATE_ROLE_REPLICA,
            .domain_name = reverse->domain,
            .domain_uuid = reverse->uuid,
            .peer = reverse->peer,
            .epoch = reverse->epoch,
            .state = (char *)VR_FAILOVER_STATE_REPLICATING,
            .config = (char *)"{\"reversed\": true}",
        };

        if (!vr_state_relationship_put(failover->state, &rel, &local)) {
            vr_failover_fail(&error, VR_FAILOVER_ERROR_FAILED,
                             "cannot record relationship '%s': %s", reverse->relationship,
                             local->message);
            vr_failover_reverse_return(reverse, NULL, error);
            return;
        }
    }
    vr_replica_sink_unfence(failover->sink, reverse->relationship);
    g_info("reverse replication of '%s': domain '%s' is its standby here, point %" PRIu64
           " of epoch %" PRIu64 " from its own disk; '%s' replicates to this host",
           reverse->relationship, reverse->domain, reverse->cycle, reverse->epoch, reverse->peer);
    result = json_object_new_object();
    json_object_object_add(result, "relationship", json_object_new_string(reverse->relationship));
    json_object_object_add(result, "standby", json_object_new_string(reverse->domain));
    json_object_object_add(result, "point", json_object_new_uint64(reverse->cycle));
    json_object_object_add(result, "epoch", json_object_new_uint64(reverse->epoch));
    vr_failover_reverse_intent_clear(failover, reverse->relationship);
    vr_failover_reverse_return(reverse, result, NULL);
}

/* vr_failover_reverse_adopt_async(), or its resume with the interrupted set-up's intent. */
static void
vr_failover_reverse_start(VrFailover *failover, const char *relationship, const char *domain,
                          const char *peer, uint64_t cycle, uint64_t epoch,
                          const char *const *digest_disks, const GArray *digests,
                          json_object *resumed, GAsyncReadyCallback callback, gpointer user_data)
{
    GTask *task = g_task_new(NULL, NULL, callback, user_data);
    g_autoptr(GTask) worker = NULL;
    GError *error = NULL;
    VrFailoverReverse *reverse;

    g_task_set_source_tag(task, vr_failover_reverse_adopt_async);
    if (failover->stopping || g_hash_table_contains(failover->reversing, relationship)) {
        g_task_return_new_error(task, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_BUSY,
                                failover->stopping
                                    ? "the daemon stops: relationship '%s' does not become the "
                                      "replica now (ask again once it runs)"
                                    : "the reverse set-up of relationship '%s' runs already (its "
                                      "disks are being copied): wait until it ended",
                                relationship);
        g_object_unref(task);
        return;
    }
    reverse = vr_failover_reverse_prepare(failover, relationship, domain, peer, cycle, epoch,
                                          digest_disks, digests, resumed, &error);
    /* Before the guard and the first disk: a restart from here on resumes the set-up. */
    if (reverse != NULL &&
        !vr_failover_reverse_intent_put(failover, reverse, digest_disks, digests, &error))
        g_clear_pointer(&reverse, vr_failover_reverse_free);
    if (reverse != NULL && !vr_failover_reverse_guard(failover, reverse, &error)) {
        vr_failover_reverse_intent_clear(failover, relationship);
        g_clear_pointer(&reverse, vr_failover_reverse_free);
    }
    if (reverse == NULL) {
        if (resumed != NULL)
            vr_failover_reverse_unguard_resumed(failover, relationship, domain, resumed);
        g_task_return_error(task, error);
        g_object_unref(task);
        return;
    }
    reverse->task = task;
    reverse->cancellable = g_cancellable_new();
    g_hash_table_insert(failover->reversing, g_strdup(relationship),
                        g_object_ref(reverse->cancellable));
    /* Nothing is received into the relationship's stores while they are seeded: a cycle
     * being received is aborted (the fence), a new one waits (503, Retry-After). */
    reverse->was_fenced = vr_replica_sink_is_fenced(failover->sink, relationship);
    vr_replica_sink_fence(failover->sink, relationship);
    vr_replica_sink_set_busy(failover->sink, relationship, true);
    /* The copies in a thread (the main loop goes on), the rest back here when they ended. */
    worker = g_task_new(NULL, NULL, vr_failover_reverse_seeded, reverse);
    g_task_set_task_data(worker, reverse, NULL);
    g_task_run_in_thread(worker, vr_failover_reverse_seed_thread);
}

void
vr_failover_reverse_adopt_async(VrFailover *failover, const char *relationship, const char *domain,
                                const char *peer, uint64_t cycle, uint64_t epoch,
                                const char *const *digest_disks, const GArray *digests,
                                GAsyncReadyCallback callback, gpointer user_data)
{
    vr_failover_reverse_start(failover, relationship, domain, peer, cycle, epoch, digest_disks,
                              digests, NULL, callback, user_data);
}

json_object *
vr_failover_reverse_adopt_finish(VrFailover *failover, GAsyncResult *result, GError **error)
{
    return g_task_propagate_pointer(G_TASK(result), error);
}

bool
vr_failover_reverse_running(VrFailover *failover, const char *relationship)
{
    return failover != NULL && g_hash_table_contains(failover->reversing, relationship);
}

void
vr_failover_reverse_stop(VrFailover *failover)
{
    GHashTableIter iter;
    gpointer value;
    bool owner;

    if (failover == NULL)
        return;
    /* From here on, a new set-up fails at once (a request, a planned failover that ends
     * while the context is iterated below): nothing would cancel it. */
    failover->stopping = true;
    if (g_hash_table_size(failover->reversing) == 0)
        return;
    g_info("stopping %u reverse set-up(s): their copies are cancelled",
           g_hash_table_size(failover->reversing));
    /* Owned while it is iterated (a blocking iteration of a context another thread owns
     * would wait for it, not run our ends). */
    owner = g_main_context_acquire(failover->context);
    if (!owner)
        g_warning("stopping the reverse set-ups: the main context is another thread's: their "
                  "ends wait for it");
    /* Their ends run here: a killed copy ends at once, a copy between two steps at the next. */
    while (g_hash_table_size(failover->reversing) > 0) {
        g_hash_table_iter_init(&iter, failover->reversing);
        while (g_hash_table_iter_next(&iter, NULL, &value))
            g_cancellable_cancel(value);
        g_main_context_iteration(failover->context, TRUE);
    }
    if (owner)
        g_main_context_release(failover->context);
}

/* ---- reverse set-ups resumed at start ------------------------------------------------------ */

/* One resumed set-up: what its end reports to the daemon. */
typedef struct {
    VrFailover *failover;
    char *relationship;
    VrFailoverResumedFunc func;
    gpointer data;
} VrFailoverResume;

static void
vr_failover_reverse_resumed(GObject *source, GAsyncResult *result, gpointer data)
{
    VrFailoverResume *resume = data;
    VrFailover *failover = resume->failover;
    g_autoptr(GError) local = NULL;
    g_autoptr(json_object) done = NULL;

    (void)source;
    done = vr_failover_reverse_adopt_finish(failover, result, &local);
    if (g_error_matches(local, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        g_message("reverse replication of '%s': its set-up, resumed at start, is cancelled "
                  "(tried again at the next start): %s",
                  resume->relationship, local->message);
    } else if (done == NULL) {
        /* As a request answered with an error: nothing re-runs it by itself. */
        g_warning("reverse replication of '%s': its set-up, resumed at start, failed (not "
                  "tried again: ask again with replica-reverse --accept, or a planned "
                  "failover): %s",
                  resume->relationship, local->message);
        if (!g_error_matches(local, VR_FAILOVER_ERROR, VR_FAILOVER_ERROR_BUSY))
            vr_failover_reverse_intent_clear(failover, resume->relationship);
    } else {
        g_message("reverse replication of '%s': its set-up, interrupted by a restart of the "
                  "daemon, is finished: domain '%s' is its standby at point %" PRIu64
                  " of epoch %" PRIu64,
                  resume->relationship, vr_json_get_string(done, "standby"),
                  (uint64_t)json_object_get_uint64(json_object_object_get(done, "point")),
                  (uint64_t)json_object_get_uint64(json_object_object_get(done, "epoch")));
        if (resume->func != NULL)
            resume->func(resume->relationship, resume->data);
    }
    g_free(resume->relationship);
    g_free(resume);
}

guint
vr_failover_reverse_resume(VrFailover *failover, VrFailoverResumedFunc func, gpointer data)
{
    g_autoptr(GError) local = NULL;
    g_autoptr(GPtrArray) list =
        vr_state_intent_list(failover->state, VR_FAILOVER_REVERSE_INTENT, &local);
    guint started = 0;

    if (list == NULL) {
        g_warning("reverse set-ups interrupted at the last stop are not resumed: %s",
                  local->message);
        return 0;
    }
    for (guint i = 0; i < list->len; i++) {
        const VrStateIntent *intent = list->pdata[i];
        g_autoptr(json_object) intent_data = json_tokener_parse(intent->data);
        g_autoptr(VrStateRelationship) rel = NULL;
        g_autoptr(GPtrArray) disks = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GArray) digests = g_array_new(FALSE, TRUE, VR_WIRE_DIGEST_SIZE);
        const char *domain = vr_json_get_string(intent_data, "domain");
        const char *peer = vr_json_get_string(intent_data, "peer");
        json_object *value = NULL, *hex = NULL;
        uint64_t cycle = 0, epoch = 0;
        VrFailoverResume *resume;

        if (strcmp(intent->kind, VR_FAILOVER_REVERSE_INTENT) != 0)
            continue;
        if (json_object_object_get_ex(intent_data, "cycle", &value))
            cycle = (uint64_t)json_object_get_uint64(value);
        if (json_object_object_get_ex(intent_data, "epoch", &value))
            epoch = (uint64_t)json_object_get_uint64(value);
        rel = vr_state_relationship_get(failover->state, intent->relationship, NULL);
        if (domain == NULL || peer == NULL || cycle == 0 || epoch == 0 || rel == NULL ||
            rel->epoch > epoch) {
            /* A newer failover (or a broken record): this set-up has nothing left to do. */
            g_warning("reverse replication of '%s': the set-up interrupted at the last stop is "
                      "%s: dropped",
                      intent->relationship,
                      rel != NULL && rel->epoch > epoch ? "older than the relationship's epoch"
                                                        : "not understood");
            vr_failover_reverse_intent_clear(failover, intent->relationship);
            continue;
        }
        if (json_object_object_get_ex(intent_data, "digests", &hex)) {
            json_object_object_foreach (hex, disk, text) {
                uint8_t digest[VR_WIRE_DIGEST_SIZE];
                const char *s = json_object_get_string(text);

                if (s == NULL || !vr_replica_hex_decode(s, strlen(s), digest, VR_WIRE_DIGEST_SIZE))
                    continue;
                g_ptr_array_add(disks, g_strdup(disk));
                g_array_append_vals(digests, digest, 1);
            }
        }
        g_ptr_array_add(disks, NULL);
        g_message("reverse replication of '%s': resuming its set-up that a stop interrupted "
                  "(domain '%s', point %" PRIu64 " of epoch %" PRIu64 " from '%s')",
                  intent->relationship, domain, cycle, epoch, peer);
        resume = g_new0(VrFailoverResume, 1);
        resume->failover = failover;
        resume->relationship = g_strdup(intent->relationship);
        resume->func = func;
        resume->data = data;
        vr_failover_reverse_start(failover, intent->relationship, domain, peer, cycle, epoch,
                                  (const char *const *)disks->pdata, digests, intent_data,
                                  vr_failover_reverse_resumed, resume);
        started++;
    }
    return started;
}
