/*
 * vr-scheduler.c: the primary role of virt-replicad
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-scheduler.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>
#include <libxml/parser.h>
#include <libxml/xpath.h>

#include "vr-capture.h"
#include "vr-net.h"
#include "vr-primary.h"
#include "vr-qmp-json.h"
#include "vr-rate-limit.h"
#include "vr-replica-store.h"
#include "vr-standby.h"
#include "vr-tls-policy.h"
#include "vr-wire.h"

G_DEFINE_QUARK(vr - scheduler - error - quark, vr_scheduler_error)

#define VR_SCHEDULER_ID_LEN        12 /* vr-capture.h: QEMU node names */
#define VR_SCHEDULER_DEFAULT_PORT  8443
#define VR_SCHEDULER_MIN_FREQUENCY 5
#define VR_SCHEDULER_MAX_FREQUENCY 86400
/* How often the pending bytes of running domains are measured. */
#define VR_SCHEDULER_PENDING_INTERVAL 5
/* The rate of a cycle's progress is measured over at least this long (us). */
#define VR_SCHEDULER_RATE_SAMPLE_US (500 * 1000)
/* The rate limit's burst: a quarter second at the rate, at least 256 KiB. */
#define VR_SCHEDULER_MIN_BURST (256 * 1024)

typedef struct _VrSchedulerJob VrSchedulerJob;

/* Outlives the scheduler while completions are in flight: they check it first. */
typedef struct {
    gint ref;
    VrScheduler *scheduler; /* NULL once freed */
} VrSchedulerToken;

struct _VrScheduler {
    const VrConfig *config; /* borrowed */
    VrState *state;         /* borrowed */
    virConnectPtr conn;     /* borrowed */
    GMainContext *context;
    GThreadPool *pool;       /* max-active-transfers workers */
    GHashTable *jobs;        /* id -> VrSchedulerJob */
    VrRateLimit *host_limit; /* [primary] bandwidth, or NULL */
    VrSchedulerToken *token;
    GSource *pending_timer;              /* measures the pending bytes */
    VrSchedulerReverseFunc reverse_func; /* vr_scheduler_set_reverse_handler() */
    gpointer reverse_data;
    VrSchedulerReversingFunc reversing_func; /* vr_scheduler_set_reversing_func() */
    gpointer reversing_data;
};

struct _VrSchedulerJob {
    VrScheduler *scheduler;
    char *id;
    char *domain;
    uint64_t epoch;
    /* Settings (the relationship's config JSON). */
    char *server;
    guint port;
    char *address; /* the replica's replication address, or NULL */
    char *network; /* this host's source: a vr-net.h spec, or NULL */
    guint frequency;
    guint recovery_points;
    guint app_consistent_hours;
    bool compression;
    uint64_t bandwidth;
    char **disks;
    /* The initial copy on external media (vr-export.h). */
    char *export_dir;     /* "export:PATH" not written yet, or NULL */
    bool awaiting_import; /* exported: the replica has yet to import it */
    /* The transport to the replica. */
    VrTlsPolicy *policy;
    VrSender *sender;
    VrRateLimit *limit;
    /* The schedule. */
    GSource *timer; /* the next cycle's timer (a reference), or NULL */
    bool running;
    bool suspended;
    bool resync_next;      /* the tracking was lost, or asked: a hash resync comes next */
    bool refused;          /* the replica refused: state Error until resumed */
    bool migrating;        /* the hook said the domain migrates away: no cycles until it ends */
    char *domain_xml_sent; /* SHA-256 of the domain XML the replica has (worker only) */
    uint64_t acked;        /* the last acknowledged cycle (0: none yet) */
    gint64 last_start;     /* monotonic, of the last cycle */
    gint64 last_app_consistent; /* wall clock, seconds */
    GCancellable *cancellable;
    GList *waiters; /* GTask of vr_scheduler_sync_async() */
    /* Between the worker and the completion: set before the cycle is queued. */
    uint64_t cycle_base;
    bool cycle_resync;
    bool cycle_export; /* this cycle writes the export instead of uploading */
    bool want_app_consistent;
    bool ok;
    VrPrimaryResult result;
    GError *error;
    /* The running cycle's progress: written by the worker, read by the API (the lock). */
    GMutex progress_lock;
    VrPrimaryProgress progress;
    gint64 progress_started; /* monotonic us: the cycle's start */
    gint64 rate_time;        /* monotonic us of the rate's last sample */
    uint64_t rate_bytes;     /* progress.bytes at that sample */
    uint64_t rate_done;      /* progress.done at that sample */
    double rate;             /* bytes per second, smoothed */
    double pace;             /* progress.done per second, smoothed: for the ETA */
    /* Bytes written since the last acknowledged cycle: -1 when not known (scheduler's
     * context only). */
    int64_t pending_bytes;
    bool pending_measuring;
    /* The domain was shut off (the hook's "stopped"): its final cycle, then no cycles until
     * it starts again (state PausedDomainOff). Not a suspend: that one is the user's. */
    bool paused;
    bool final_pending; /* "stopped" came during a cycle: the final cycle follows it */
    bool final_ok;      /* the final cycle was acknowledged: the replica has all of the data */
    bool cycle_final;   /* the queued or running cycle is the final one */
    bool final_retry;   /* it failed in a way the next try may not (the replica unreachable) */
    /* A planned failover (vr_scheduler_planned_failover_async()). */
    GTask *failover_task;    /* the request, while the failover is asked or runs */
    bool failover_waiting;   /* asked while a cycle ran: it begins when that cycle ended */
    bool cycle_planned;      /* the queued or running work is the planned failover */
    guint shutdown_timeout;  /* seconds */
    bool force;              /* destroy a guest that does not shut down in time */
    bool failed_over;        /* state FailedOver: the replica runs the domain, no cycles */
    bool forget_pending;     /* vr_scheduler_forget() while a cycle ran: it goes at its end */
    uint64_t failover_cycle; /* the final cycle the replica failed over to */
    char *failover_standby;  /* the replica's domain that runs now */
    /* Set by the failover's worker, read by its completion. */
    bool failover_off;      /* the domain is shut off (it was, or the worker shut it down) */
    bool failover_forced;   /* it was destroyed after the timeout */
    bool failover_cycle_ok; /* the final cycle was acknowledged (job->result) */
    bool failover_guarded;  /* the domain carries the "failing-over" marker */
    bool failover_unknown;  /* the replica may have failed over: the marker stays */
    gint64 failover_next;   /* monotonic µs: when the next cycle was due before the request */
    json_object *failover_reverse; /* "reverse_peer" of a request with reverse, or NULL */
    char *failover_identity;       /* the replica's certificate identity (its answer) */
    bool adopted; /* reversed: the old primary's own domain is the standby, no XML sent */
    uint64_t failover_epoch; /* the replica's epoch after its failover */
};

static void vr_scheduler_start_cycle(VrSchedulerJob *job);
static void vr_scheduler_planned_worker(VrSchedulerJob *job, VrScheduler *scheduler);
static void vr_scheduler_failover_done(VrSchedulerJob *job);
static void vr_scheduler_failover_begin(VrSchedulerJob *job);
static bool vr_scheduler_load_one(VrScheduler *scheduler, const VrStateRelationship *rel,
                                  guint delay, GError **error);
static VrSchedulerJob *vr_scheduler_find(VrScheduler *scheduler, const char *name, GError **error);
static void vr_scheduler_measure_pending(VrSchedulerJob *job);

/* ---- errors --------------------------------------------------------------------------- */

const char *
vr_scheduler_error_code(const GError *error)
{
    static const char *const codes[] = {
        [VR_SCHEDULER_ERROR_INVALID] = "invalid",
        [VR_SCHEDULER_ERROR_UNKNOWN_DOMAIN] = "unknown-domain",
        [VR_SCHEDULER_ERROR_ALREADY_ENABLED] = "already-enabled",
        [VR_SCHEDULER_ERROR_BUSY] = "busy",
        [VR_SCHEDULER_ERROR_UNSUPPORTED] = "unsupported",
        [VR_SCHEDULER_ERROR_CYCLE_FAILED] = "cycle-failed",
        [VR_SCHEDULER_ERROR_FAILED] = "failed",
        [VR_SCHEDULER_ERROR_SHUTDOWN_TIMEOUT] = "shutdown-timeout",
        [VR_SCHEDULER_ERROR_REFUSED] = "refused",
    };

    if (error == NULL || error->domain != VR_SCHEDULER_ERROR ||
        (guint)error->code >= G_N_ELEMENTS(codes))
        return "failed";
    return codes[error->code];
}

static bool vr_scheduler_invalid(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static bool
vr_scheduler_invalid(GError **error, const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    g_propagate_error(
        error, g_error_new_valist(VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_INVALID, fmt, args));
    va_end(args);
    return false;
}

/* ---- jobs ----------------------------------------------------------------------------- */

/* Destroying a source that already ran or went is harmless: no ID lookup is involved. */
static void
vr_scheduler_cancel_timer(VrSchedulerJob *job)
{
    if (job->timer != NULL) {
        g_source_destroy(job->timer);
        g_clear_pointer(&job->timer, g_source_unref);
    }
}

static VrSchedulerJob *
vr_scheduler_job_new(VrScheduler *scheduler)
{
    VrSchedulerJob *job = g_new0(VrSchedulerJob, 1);

    job->scheduler = scheduler;
    job->pending_bytes = -1;
    g_mutex_init(&job->progress_lock);
    return job;
}

static void
vr_scheduler_job_free(gpointer data)
{
    VrSchedulerJob *job = data;

    vr_scheduler_cancel_timer(job);
    g_free(job->id);
    g_free(job->domain);
    g_free(job->server);
    g_free(job->address);
    g_free(job->network);
    g_free(job->export_dir);
    g_strfreev(job->disks);
    g_free(job->domain_xml_sent);
    g_free(job->failover_standby);
    g_free(job->failover_identity);
    if (job->failover_reverse != NULL)
        json_object_put(job->failover_reverse);
    vr_sender_free(job->sender);
    vr_tls_policy_free(job->policy);
    vr_rate_limit_free(job->limit);
    g_clear_object(&job->cancellable);
    vr_primary_result_clear(&job->result);
    g_clear_error(&job->error);
    g_mutex_clear(&job->progress_lock);
    g_free(job);
}

/* The settings of @job as the relationship's config JSON (state database). */
static char *
vr_scheduler_job_config(VrSchedulerJob *job)
{
    g_autoptr(json_object) obj = json_object_new_object();
    json_object *disks = json_object_new_array();

    json_object_object_add(obj, "server", json_object_new_string(job->server));
    json_object_object_add(obj, "port", json_object_new_int((int)job->port));
    if (job->address != NULL)
        json_object_object_add(obj, "address", json_object_new_string(job->address));
    if (job->network != NULL)
        json_object_object_add(obj, "network", json_object_new_string(job->network));
    json_object_object_add(obj, "frequency", json_object_new_int((int)job->frequency));
    json_object_object_add(obj, "recovery_points", json_object_new_int((int)job->recovery_points));
    json_object_object_add(obj, "app_consistent_hours",
                           json_object_new_int((int)job->app_consistent_hours));
    json_object_object_add(obj, "compression", json_object_new_boolean(job->compression));
    json_object_object_add(obj, "bandwidth", json_object_new_uint64(job->bandwidth));
    for (guint i = 0; job->disks[i] != NULL; i++)
        json_object_array_add(disks, json_object_new_string(job->disks[i]));
    json_object_object_add(obj, "disks", disks);
    if (job->export_dir != NULL)
        json_object_object_add(obj, "initial_export", json_object_new_string(job->export_dir));
    if (job->adopted)
        json_object_object_add(obj, "reverse", json_object_new_boolean(true));
    if (job->failed_over) {
        json_object *failover = json_object_new_object();

        json_object_object_add(failover, "planned", json_object_new_boolean(true));
        json_object_object_add(failover, "cycle", json_object_new_uint64(job->failover_cycle));
        json_object_object_add(
            failover, "standby",
            job->failover_standby != NULL ? json_object_new_string(job->failover_standby) : NULL);
        json_object_object_add(obj, "failover", failover);
    }
    return g_strdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
}

/* Record @job's relationship row with @state_name. */
static bool
vr_scheduler_job_save(VrSchedulerJob *job, const char *uuid, const char *state_name, GError **error)
{
    g_autofree char *config = vr_scheduler_job_config(job);
    g_autoptr(VrStateRelationship) old = NULL;
    VrStateRelationship rel = {
        .id = job->id,
        .role = VR_STATE_ROLE_PRIMARY,
        .domain_name = job->domain,
        .peer = job->server,
        .epoch = job->epoch,
        .state = (char *)state_name,
        .config = config,
    };

    if (uuid == NULL) {
        old = vr_state_relationship_get(job->scheduler->state, job->id, error);
        if (old == NULL)
            return false;
        uuid = old->domain_uuid;
    }
    rel.domain_uuid = (char *)uuid;
    return vr_state_relationship_put(job->scheduler->state, &rel, error);
}

/* The state name of @job now. */
static const char *
vr_scheduler_job_state(VrSchedulerJob *job)
{
    if (job->failed_over)
        return "FailedOver";
    if (job->refused)
        return "Error";
    if (job->suspended)
        return "Suspended";
    if (job->resync_next)
        return "ResynchronizationRequired";
    /* The initial copy goes on external media: being exported, or waiting for its import. */
    if (job->export_dir != NULL || job->awaiting_import)
        return "WaitingForInitialReplication";
    if (job->paused)
        return "PausedDomainOff";
    return "Replicating";
}

/* The sender to @job's replica: TLS policy for its name, this host's certificate, limits. */
static bool
vr_scheduler_job_transport(VrSchedulerJob *job, GError **error)
{
    const VrConfig *config = job->scheduler->config;
    g_autoptr(GInetAddress) connect = NULL;
    g_autoptr(GInetAddress) local = NULL;
    VrRateLimit *limits[2];
    guint n_limits = 0;

    if (config->certificates.cert == NULL || config->certificates.ca == NULL) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_INVALID,
                    "this host has no certificates ([certificates] ca, cert and key): a "
                    "primary authenticates to its replica with its own");
        return false;
    }
    job->policy = vr_tls_policy_new(
        &(VrTlsPolicyConfig){
            .ca_file = config->certificates.ca,
            .crl_file = config->certificates.crl,
            .check_revocation = config->certificates.check_revocation,
            .peer_role = VR_TLS_PEER_SERVER,
            .server_name = job->server,
        },
        error);
    if (job->policy == NULL)
        return false;
    if (job->address != NULL)
        connect = g_inet_address_new_from_string(job->address);
    if (job->network != NULL) {
        local = vr_net_resolve(job->network, job->scheduler->conn, G_SOCKET_FAMILY_INVALID, error);
        if (local == NULL)
            return false;
    }
    if (job->scheduler->host_limit != NULL)
        limits[n_limits++] = job->scheduler->host_limit;
    if (job->bandwidth != 0) {
        job->limit =
            vr_rate_limit_new(job->bandwidth, MAX(job->bandwidth / 4, VR_SCHEDULER_MIN_BURST));
        limits[n_limits++] = job->limit;
    }
    job->sender = vr_sender_new(
        &(VrSenderConfig){
            .server_name = job->server,
            .port = (guint16)job->port,
            .connect_address = connect,
            .local_address = local,
            .cert_file = config->certificates.cert,
            .key_file = config->certificates.key,
            .policy = job->policy,
            .limits = limits,
            .n_limits = n_limits,
            /* A cycle the replica cannot take is missed within about one period, not after
             * minutes of retries: the next cycle sends a superset anyway. */
            .max_attempts = 3,
            .backoff_max_ms = MIN(job->frequency * 1000 / 2, 30000),
        },
        error);
    return job->sender != NULL;
}

/* ---- the schedule --------------------------------------------------------------------- */

static gboolean
vr_scheduler_on_timer(gpointer data)
{
    VrSchedulerJob *job = data;

    if (job->timer == g_main_current_source())
        g_clear_pointer(&job->timer, g_source_unref);
    vr_scheduler_start_cycle(job);
    return G_SOURCE_REMOVE;
}

/* The next cycle in @seconds (0: now), replacing a timer already set. */
static void
vr_scheduler_schedule(VrSchedulerJob *job, guint seconds)
{
    vr_scheduler_cancel_timer(job);
    job->timer = seconds == 0 ? g_idle_source_new() : g_timeout_source_new_seconds(seconds);
    g_source_set_callback(job->timer, vr_scheduler_on_timer, job, NULL);
    g_source_attach(job->timer, job->scheduler->context);
}

static bool
vr_scheduler_domain_active(VrSchedulerJob *job)
{
    virDomainPtr dom = virDomainLookupByName(job->scheduler->conn, job->domain);
    int active;

    if (dom == NULL)
        return false;
    active = virDomainIsActive(dom);
    virDomainFree(dom);
    return active == 1;
}

static void
vr_scheduler_token_unref(VrSchedulerToken *token)
{
    if (g_atomic_int_dec_and_test(&token->ref))
        g_free(token);
}

typedef struct {
    VrSchedulerToken *token;
    char *id;
} VrSchedulerDone;

static void vr_scheduler_cycle_done(VrSchedulerJob *job);

static gboolean
vr_scheduler_on_done(gpointer data)
{
    VrSchedulerDone *done = data;
    VrScheduler *scheduler = done->token->scheduler;
    VrSchedulerJob *job;

    if (scheduler != NULL && (job = g_hash_table_lookup(scheduler->jobs, done->id)) != NULL)
        vr_scheduler_cycle_done(job);
    return G_SOURCE_REMOVE;
}

static void
vr_scheduler_done_free(gpointer data)
{
    VrSchedulerDone *done = data;

    vr_scheduler_token_unref(done->token);
    g_free(done->id);
    g_free(done);
}

/*
 * Send the domain's inactive XML to the replica when it changed since the last time (the
 * replica defines the standby domain from it: vr-standby.h). A failure is logged and does
 * not stop the cycle: the next one tries again. Worker thread.
 */
static void
vr_scheduler_send_domain(VrSchedulerJob *job)
{
    g_autoptr(GError) local = NULL;
    g_autofree char *xml = NULL;
    g_autofree char *digest = NULL;
    virDomainPtr dom = virDomainLookupByName(job->scheduler->conn, job->domain);

    if (dom == NULL)
        return;
    xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
    virDomainFree(dom);
    if (xml == NULL)
        return;
    digest = g_compute_checksum_for_string(G_CHECKSUM_SHA256, xml, -1);
    if (g_strcmp0(digest, job->domain_xml_sent) == 0)
        return;
    if (!vr_sender_put_domain(job->sender, job->id, xml, &local)) {
        g_warning("relationship '%s': the replica did not take the domain XML (no standby "
                  "domain yet): %s",
                  job->id, local->message);
        return;
    }
    g_free(job->domain_xml_sent);
    job->domain_xml_sent = g_steal_pointer(&digest);
}

/* A new cycle of @job starts (at job->last_start): its progress from nothing. */
static void
vr_scheduler_progress_reset(VrSchedulerJob *job)
{
    g_mutex_lock(&job->progress_lock);
    job->progress = (VrPrimaryProgress){ .phase = VR_PRIMARY_PHASE_CUT };
    job->progress_started = job->last_start;
    job->rate_time = job->last_start;
    job->rate_bytes = 0;
    job->rate_done = 0;
    job->rate = 0;
    job->pace = 0;
    g_mutex_unlock(&job->progress_lock);
}

/*
 * The cycle's progress, for the status: the phase and the figures as they come, and a rate
 * smoothed over samples of at least half a second. A new pass starts the rate again: a read
 * from a local disk and a send held to a bandwidth limit go at very different speeds.
 * Worker thread, or the upload thread of its cycle (vr-primary.h): under progress_lock.
 */
static void
vr_scheduler_on_progress(const VrPrimaryProgress *progress, gpointer data)
{
    VrSchedulerJob *job = data;
    gint64 now = g_get_monotonic_time();

    g_mutex_lock(&job->progress_lock);
    if (progress->phase != job->progress.phase || progress->disk != job->progress.disk ||
        progress->bytes < job->rate_bytes || progress->done < job->rate_done) {
        job->rate_time = now;
        job->rate_bytes = progress->bytes;
        job->rate_done = progress->done;
        job->rate = 0;
        job->pace = 0;
    } else if (now - job->rate_time >= VR_SCHEDULER_RATE_SAMPLE_US) {
        double span = (double)(now - job->rate_time) / G_USEC_PER_SEC;
        double rate = (double)(progress->bytes - job->rate_bytes) / span;
        double pace = (double)(progress->done - job->rate_done) / span;

        job->rate = job->rate == 0 ? rate : 0.5 * job->rate + 0.5 * rate;
        job->pace = job->pace == 0 ? pace : 0.5 * job->pace + 0.5 * pace;
        job->rate_time = now;
        job->rate_bytes = progress->bytes;
        job->rate_done = progress->done;
    }
    job->progress = *progress;
    g_mutex_unlock(&job->progress_lock);
}

/* This host's certificate identity, as a replica sees it (an export's manifest names it). */
static char *
vr_scheduler_identity(VrScheduler *scheduler)
{
    g_autoptr(GTlsCertificate) cert = NULL;
    g_autoptr(GError) local = NULL;
    char *name = NULL;

    if (scheduler->config->certificates.cert != NULL)
        cert = g_tls_certificate_new_from_file(scheduler->config->certificates.cert, &local);
    if (cert != NULL)
        name = vr_tls_policy_peer_name_gtls(cert, &local);
    if (name == NULL)
        g_debug("no certificate identity: %s", local != NULL ? local->message : "no certificate");
    return name;
}

/* The work directory of @job's cycles (its spools, streams, fleece images). (transfer full) */
static char *
vr_scheduler_workdir(VrScheduler *scheduler, VrSchedulerJob *job)
{
    return g_build_filename(scheduler->config->daemon.state_dir, "work", job->id, NULL);
}

/* Make the work directory @workdir, or say why not in a VR_PRIMARY_ERROR. */
static bool
vr_scheduler_make_workdir(const char *workdir, GError **error)
{
    int errsv;

    if (g_mkdir_with_parents(workdir, 0700) == 0)
        return true;
    errsv = errno;
    g_set_error(error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED,
                "cannot make the work directory '%s': %s", workdir, g_strerror(errsv));
    return false;
}

/* What every kind of cycle of @job runs with (a final or planned one: nothing more). */
static VrPrimaryConfig
vr_scheduler_primary_config(VrScheduler *scheduler, VrSchedulerJob *job, const char *workdir)
{
    return (VrPrimaryConfig){
        .conn = scheduler->conn,
        .domain = job->domain,
        .relationship = job->id,
        .epoch = job->epoch,
        .disks = (const char *const *)job->disks,
        .workdir = workdir,
        .sender = job->sender,
    };
}

/* An online cycle. Worker thread. */
static void
vr_scheduler_worker(VrSchedulerJob *job, VrScheduler *scheduler)
{
    g_autofree char *workdir = vr_scheduler_workdir(scheduler, job);
    VrPrimaryConfig config = vr_scheduler_primary_config(scheduler, job, workdir);
    g_autofree char *identity = job->cycle_export ? vr_scheduler_identity(scheduler) : NULL;

    config.allow_resync = true;
    config.resync = job->cycle_resync;
    config.app_consistent = job->want_app_consistent;
    config.export_dir = job->cycle_export ? job->export_dir : NULL;
    config.base_exported = job->awaiting_import;
    if (!vr_scheduler_make_workdir(workdir, &job->error)) {
        job->ok = false;
    } else if (job->cycle_export && identity == NULL) {
        g_set_error(&job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED,
                    "cannot read this host's certificate identity for the export");
        job->ok = false;
    } else {
        config.export_identity = identity;
        /* An export carries the domain XML in its manifest: nothing goes to the replica. */
        if (!job->cycle_export && !job->adopted)
            vr_scheduler_send_domain(job);
        job->ok = vr_primary_run_cycle(&config, job->cycle_base, job->cycle_base + 1,
                                       vr_scheduler_on_progress, job, job->cancellable,
                                       &job->result, &job->error);
    }
}

/* ---- the final cycle of a shut-off domain (the hook's "stopped") ----------------------- */

/* How long the final cycle waits for libvirt to finish the stop it heard of (µs). */
#define VR_SCHEDULER_STOP_WAIT (10 * G_USEC_PER_SEC)

/*
 * The final cycle: vr_primary_run_offline_cycle() from the last acknowledged cycle, then its
 * completion like any cycle's. "stopped" comes while libvirt is still stopping the domain
 * (docs/hook.md): wait until it is shut off. A domain that was migrated away has no final
 * cycle here: its destination runs the images now. Worker thread.
 */
static void
vr_scheduler_final_worker(VrSchedulerJob *job, VrScheduler *scheduler)
{
    g_autofree char *workdir = vr_scheduler_workdir(scheduler, job);
    VrPrimaryConfig config = vr_scheduler_primary_config(scheduler, job, workdir);
    gint64 deadline = g_get_monotonic_time() + VR_SCHEDULER_STOP_WAIT;
    virDomainPtr dom = virDomainLookupByName(scheduler->conn, job->domain);
    int state = VIR_DOMAIN_NOSTATE;
    int reason = 0;

    while (dom != NULL && virDomainIsActive(dom) == 1 && g_get_monotonic_time() < deadline &&
           !g_cancellable_is_cancelled(job->cancellable))
        g_usleep(100 * 1000);
    if (dom != NULL && virDomainGetState(dom, &state, &reason, 0) < 0)
        state = VIR_DOMAIN_NOSTATE;
    if (dom != NULL)
        virDomainFree(dom);
    if (state == VIR_DOMAIN_SHUTOFF && reason == VIR_DOMAIN_SHUTOFF_MIGRATED) {
        g_set_error(&job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED,
                    "no final cycle: domain '%s' was migrated to another host", job->domain);
        job->ok = false;
    } else if (!vr_scheduler_make_workdir(workdir, &job->error)) {
        job->ok = false;
    } else {
        job->ok = vr_primary_run_offline_cycle(&config, job->cycle_base, job->cycle_base + 1,
                                               vr_scheduler_on_progress, job, job->cancellable,
                                               &job->result, &job->error);
    }
}

/*
 * The pool's function: a planned failover, the final cycle or an online one, then its
 * completion on the scheduler's context.
 */
static void
vr_scheduler_pool_run(gpointer data, gpointer user_data)
{
    VrSchedulerJob *job = data;
    VrScheduler *scheduler = user_data;
    VrSchedulerDone *done = g_new0(VrSchedulerDone, 1);
    g_autoptr(GSource) source = NULL;

    if (job->cycle_planned)
        vr_scheduler_planned_worker(job, scheduler);
    else if (job->cycle_final)
        vr_scheduler_final_worker(job, scheduler);
    else
        vr_scheduler_worker(job, scheduler);
    g_atomic_int_inc(&scheduler->token->ref);
    done->token = scheduler->token;
    done->id = g_strdup(job->id);
    source = g_idle_source_new();
    g_source_set_callback(source, vr_scheduler_on_done, done, vr_scheduler_done_free);
    g_source_attach(source, scheduler->context);
}

/* Record the state now (a pause, a resume) rather than at the next cycle's end. */
static void
vr_scheduler_save_state(VrSchedulerJob *job)
{
    g_autoptr(GError) local = NULL;

    if (!vr_scheduler_job_save(job, NULL, vr_scheduler_job_state(job), &local))
        g_warning("relationship '%s': cannot record its state: %s", job->id, local->message);
}

/*
 * Queue the final cycle of the paused @job. Without an acknowledged cycle to build on (the
 * initial copy not done or not imported yet, a resync pending) there is none: the domain's
 * next start goes on from where it is.
 */
/* Whether a reverse set-up of @job's relationship runs here: no cycle of it meanwhile. */
static bool
vr_scheduler_reversing(VrSchedulerJob *job)
{
    VrScheduler *scheduler = job->scheduler;

    return job->forget_pending || (scheduler->reversing_func != NULL &&
                                   scheduler->reversing_func(job->id, scheduler->reversing_data));
}

static void
vr_scheduler_start_final(VrSchedulerJob *job)
{
    /* A planned failover reads the final cycle itself. */
    if (job->failover_task != NULL || job->failed_over)
        return;
    /* Its disks are being copied into the stores it becomes the replica of: its image is
     * the seed, no cycle reads it; tried again one period later. */
    if (vr_scheduler_reversing(job)) {
        vr_scheduler_schedule(job, job->frequency);
        return;
    }
    if (job->acked == 0 || job->resync_next || job->awaiting_import || job->export_dir != NULL) {
        g_info("relationship '%s': domain '%s' shut off; no final cycle (%s)", job->id, job->domain,
               job->resync_next ? "a resynchronization is pending"
                                : "the replica has no initial copy yet");
        return;
    }
    job->running = true;
    job->cycle_final = true;
    job->last_start = g_get_monotonic_time();
    job->cycle_base = job->acked;
    job->cycle_resync = false;
    job->cycle_export = false;
    job->want_app_consistent = false;
    g_clear_object(&job->cancellable);
    job->cancellable = g_cancellable_new();
    vr_primary_result_clear(&job->result);
    g_clear_error(&job->error);
    vr_scheduler_progress_reset(job);
    g_info("relationship '%s': domain '%s' shut off: final cycle %" PRIu64 " from %" PRIu64
           " queued",
           job->id, job->domain, job->cycle_base + 1, job->cycle_base);
    g_thread_pool_push(job->scheduler->pool, job, NULL);
}

/* The hook's "stopped" (not after a migration away): pause after a final cycle. A user's
 * suspend stays as it is, and so does a refusal (Error). */
static void
vr_scheduler_domain_stopped(VrSchedulerJob *job)
{
    if (job->suspended || job->refused || job->paused || job->failover_task != NULL ||
        job->failed_over)
        return;
    job->paused = true;
    job->final_ok = false;
    job->final_retry = false;
    vr_scheduler_cancel_timer(job);
    if (job->running)
        job->final_pending = true; /* after the cycle that runs (it fails: QEMU is gone) */
    else
        vr_scheduler_start_final(job);
    vr_scheduler_save_state(job);
}

/*
 * The hook's "started" (and "prepare" or "start", should a hook send them): the domain runs
 * or is about to, so a final cycle still running is cancelled (it publishes nothing it read
 * after the start: vr-primary.h) and the pause ends; the caller cuts a cycle, whose health
 * check comes first.
 */
static void
vr_scheduler_domain_starts(VrSchedulerJob *job)
{
    job->final_pending = false;
    job->final_retry = false;
    if (job->running && job->cycle_final)
        g_cancellable_cancel(job->cancellable);
    if (job->paused) {
        job->paused = false;
        vr_scheduler_save_state(job);
    }
}

static void
vr_scheduler_start_cycle(VrSchedulerJob *job)
{
    VrScheduler *scheduler = job->scheduler;
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;

    if (job->running || job->suspended || job->refused || job->failed_over ||
        job->failover_task != NULL)
        return;
    if (job->migrating || vr_scheduler_reversing(job)) {
        vr_scheduler_schedule(job, job->frequency);
        return;
    }
    if (!vr_scheduler_domain_active(job)) {
        g_debug("relationship '%s': domain '%s' is not running: no cycle", job->id, job->domain);
        vr_scheduler_schedule(job, job->frequency);
        if (job->paused && job->final_retry)
            vr_scheduler_start_final(job);
        return;
    }
    job->paused = false; /* it runs: also after a start the hook did not tell */
    job->running = true;
    job->last_start = g_get_monotonic_time();
    vr_scheduler_progress_reset(job);
    job->want_app_consistent =
        job->app_consistent_hours != 0 &&
        now - job->last_app_consistent >= (gint64)job->app_consistent_hours * 3600;
    job->cycle_base = job->acked;
    job->cycle_resync = job->resync_next;
    job->cycle_export = job->export_dir != NULL && job->acked == 0 && !job->resync_next;
    g_clear_object(&job->cancellable);
    job->cancellable = g_cancellable_new();
    vr_primary_result_clear(&job->result);
    g_clear_error(&job->error);
    g_debug("relationship '%s': cycle %" PRIu64 " from %" PRIu64 "%s queued", job->id,
            job->cycle_base + 1, job->cycle_base, job->cycle_resync ? " (resync)" : "");
    g_thread_pool_push(scheduler->pool, job, NULL);
}

static void
vr_scheduler_json_free(gpointer obj)
{
    json_object_put(obj);
}

/* The sync waiters of @job get the cycle's outcome. */
static void
vr_scheduler_answer_waiters(VrSchedulerJob *job)
{
    GList *waiters = g_steal_pointer(&job->waiters);

    for (GList *l = waiters; l != NULL; l = l->next) {
        GTask *task = l->data;

        if (job->ok) {
            json_object *obj = json_object_new_object();

            json_object_object_add(obj, "seq", json_object_new_uint64(job->result.cycle));
            json_object_object_add(obj, "bytes", json_object_new_uint64(job->result.bytes));
            json_object_object_add(obj, "wire_bytes",
                                   json_object_new_uint64(job->result.wire_bytes));
            json_object_object_add(
                obj, "duration_ms",
                json_object_new_int64(job->result.finished_ms - job->result.started_ms));
            g_task_return_pointer(task, obj, vr_scheduler_json_free);
        } else {
            g_task_return_new_error(task, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_CYCLE_FAILED, "%s",
                                    job->error->message);
        }
        g_object_unref(task);
    }
    g_list_free(waiters);
}

static void
vr_scheduler_cycle_done(VrSchedulerJob *job)
{
    VrScheduler *scheduler = job->scheduler;
    g_autoptr(GError) local = NULL;
    VrStateCycle cycle = { 0 };
    gint64 elapsed_s = (g_get_monotonic_time() - job->last_start) / G_USEC_PER_SEC;
    int64_t now_ms = g_get_real_time() / 1000;
    bool final = job->cycle_final;

    if (job->cycle_planned) {
        vr_scheduler_failover_done(job);
        return;
    }
    job->running = false;
    job->cycle_final = false;
    if (job->forget_pending) {
        /* The row is another role's now (vr_scheduler_forget()): nothing of this cycle is
         * recorded over it; the waiting syncs get its answer. */
        vr_scheduler_answer_waiters(job);
        g_info("relationship '%s': no longer replicated from this host", job->id);
        g_hash_table_remove(scheduler->jobs, job->id);
        return;
    }
    if (final) {
        job->final_ok = job->ok;
        job->final_retry =
            !job->ok && job->paused &&
            (g_error_matches(job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_UNREACHABLE) ||
             g_error_matches(job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_FAILED));
    }
    cycle.cycle = job->cycle_base + 1;
    if (job->ok) {
        cycle.result = VR_STATE_CYCLE_OK;
        cycle.flags = job->result.flags;
        cycle.started_ms = job->result.started_ms;
        cycle.finished_ms = job->result.finished_ms;
        cycle.bytes = job->result.bytes;
        cycle.wire_bytes = job->result.wire_bytes;
        job->acked = job->result.cycle;
        job->resync_next = false;
        if (job->cycle_export) {
            g_info("relationship '%s': initial copy exported to '%s': import it on the replica "
                   "(virt-replica replica-import)",
                   job->id, job->export_dir);
            g_clear_pointer(&job->export_dir, g_free);
            job->awaiting_import = true;
        } else {
            job->awaiting_import = false;
        }
        if (job->result.flags & VR_WIRE_FLAG_APP_CONSISTENT)
            job->last_app_consistent = g_get_real_time() / G_USEC_PER_SEC;
        g_info("relationship '%s': cycle %" PRIu64 " acknowledged: %" PRIu64 " bytes in %" PRId64
               " ms",
               job->id, job->result.cycle, job->result.bytes,
               job->result.finished_ms - job->result.started_ms);
    } else {
        /* Waiting for the import of the exported base: missed, the bitmaps kept, no Error. */
        bool missed =
            g_error_matches(job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_UNREACHABLE) ||
            g_error_matches(job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_CANCELLED) ||
            g_error_matches(job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_AWAITING_IMPORT);

        if (g_error_matches(job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_AWAITING_IMPORT))
            g_prefix_error(&job->error, "waiting for the replica to import the initial copy: ");
        cycle.result = missed ? VR_STATE_CYCLE_MISSED : VR_STATE_CYCLE_FAILED;
        cycle.started_ms = now_ms - elapsed_s * 1000;
        cycle.finished_ms = now_ms;
        cycle.error = job->error->message;
        if (g_error_matches(job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_RESYNC_REQUIRED))
            job->resync_next = true;
        if (g_error_matches(job->error, VR_PRIMARY_ERROR, VR_PRIMARY_ERROR_REFUSED))
            job->refused = true;
        g_warning("relationship '%s': cycle %" PRIu64 " %s: %s", job->id, cycle.cycle,
                  missed ? "missed" : "failed", job->error->message);
    }
    if (!vr_state_cycle_add(scheduler->state, job->id, &cycle, &local) ||
        !vr_scheduler_job_save(job, NULL, vr_scheduler_job_state(job), &local))
        g_warning("relationship '%s': cannot record the cycle: %s", job->id, local->message);
    vr_scheduler_answer_waiters(job);
    if (job->ok)
        vr_scheduler_measure_pending(job);
    /* Counted from the start of this cycle: an overrun delays, never stacks. */
    vr_scheduler_schedule(job, (guint)MAX((gint64)job->frequency - elapsed_s, 1));
    if (job->final_pending) {
        job->final_pending = false;
        vr_scheduler_start_final(job);
    } else if (final && !job->paused && !job->suspended && !job->refused) {
        /* The domain started during its final cycle: resume now. */
        vr_scheduler_schedule(job, 0);
    }
    /* A planned failover asked while this cycle ran begins now. */
    if (job->failover_waiting)
        vr_scheduler_failover_begin(job);
}

/* ---- pending bytes ------------------------------------------------------------------- */

typedef struct {
    VrSchedulerToken *token;
    virConnectPtr conn;
    char *id;
    char *domain;
    char *bitmap; /* B(acked) */
    int64_t bytes;
} VrSchedulerPending;

static void
vr_scheduler_pending_free(gpointer data)
{
    VrSchedulerPending *pending = data;

    vr_scheduler_token_unref(pending->token);
    g_free(pending->id);
    g_free(pending->domain);
    g_free(pending->bitmap);
    g_free(pending);
}

/*
 * The dirty count of B(acked) summed over the domain's block nodes: what the guest wrote
 * since the cut of the last acknowledged cycle, which the replica does not have. Only the
 * disks' format nodes carry that name (a cycle's frozen copy on its fleece has another).
 * -1 when the domain does not run or the bitmap is not there (tracking lost). A thread of
 * GLib's pool: libvirt may make this wait while a cycle's own monitor commands run.
 */
static void
vr_scheduler_pending_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable)
{
    VrSchedulerPending *pending = data;
    virDomainPtr dom = virDomainLookupByName(pending->conn, pending->domain);
    g_autofree char *reply = NULL;
    g_autoptr(json_object) obj = NULL;
    json_object *nodes;
    int64_t sum = -1;

    if (dom != NULL && virDomainIsActive(dom) == 1 &&
        virDomainQemuMonitorCommand(
            dom, "{\"execute\":\"query-named-block-nodes\",\"arguments\":{\"flat\":true}}", &reply,
            0) == 0 &&
        (obj = json_tokener_parse(reply)) != NULL &&
        json_object_object_get_ex(obj, "return", &nodes) &&
        json_object_is_type(nodes, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(nodes); i++) {
            json_object *bitmaps;

            if (!json_object_object_get_ex(json_object_array_get_idx(nodes, i), "dirty-bitmaps",
                                           &bitmaps) ||
                !json_object_is_type(bitmaps, json_type_array))
                continue;
            for (size_t b = 0; b < json_object_array_length(bitmaps); b++) {
                json_object *bitmap = json_object_array_get_idx(bitmaps, b);
                json_object *count;

                if (g_strcmp0(vr_json_get_string(bitmap, "name"), pending->bitmap) == 0 &&
                    json_object_object_get_ex(bitmap, "count", &count))
                    sum = MAX(sum, 0) + json_object_get_int64(count);
            }
        }
    }
    if (dom != NULL)
        virDomainFree(dom);
    pending->bytes = sum;
    g_task_return_boolean(task, TRUE);
}

static void
vr_scheduler_pending_done(GObject *source, GAsyncResult *result, gpointer data)
{
    VrSchedulerPending *pending = g_task_get_task_data(G_TASK(result));
    VrScheduler *scheduler = pending->token->scheduler;
    VrSchedulerJob *job;

    if (scheduler == NULL || (job = g_hash_table_lookup(scheduler->jobs, pending->id)) == NULL)
        return;
    job->pending_measuring = false;
    job->pending_bytes = pending->bytes;
}

/* Measure the pending bytes of @job in a thread, unless a measure runs. */
static void
vr_scheduler_measure_pending(VrSchedulerJob *job)
{
    VrScheduler *scheduler = job->scheduler;
    VrSchedulerPending *pending;
    g_autoptr(GTask) task = NULL;

    if (job->pending_measuring)
        return;
    if (job->acked == 0) {
        /* No bitmap names the replica's state yet: the initial copy's progress says more. */
        job->pending_bytes = -1;
        return;
    }
    pending = g_new0(VrSchedulerPending, 1);
    g_atomic_int_inc(&scheduler->token->ref);
    pending->token = scheduler->token;
    pending->conn = scheduler->conn;
    pending->id = g_strdup(job->id);
    pending->domain = g_strdup(job->domain);
    pending->bitmap = vr_capture_relationship_bitmap_name(job->id, job->acked);
    job->pending_measuring = true;
    task = g_task_new(NULL, NULL, vr_scheduler_pending_done, NULL);
    g_task_set_task_data(task, pending, vr_scheduler_pending_free);
    g_task_run_in_thread(task, vr_scheduler_pending_thread);
}

static gboolean
vr_scheduler_on_pending_timer(gpointer data)
{
    VrScheduler *scheduler = data;
    GHashTableIter iter;
    gpointer value;

    g_hash_table_iter_init(&iter, scheduler->jobs);
    while (g_hash_table_iter_next(&iter, NULL, &value))
        vr_scheduler_measure_pending(value);
    return G_SOURCE_CONTINUE;
}

int64_t
vr_scheduler_pending_bytes(VrScheduler *scheduler, const char *id)
{
    VrSchedulerJob *job = vr_scheduler_find(scheduler, id, NULL);

    return job != NULL ? job->pending_bytes : -1;
}

/*
 * The time left: the rest of the pass that runs at its measured pace (of @done: the disk
 * offset reached while reading and encoding, stream bytes while sending), and the passes
 * after it at the pace of the cycle so far, or, below 1 % done, each as long as this one.
 * NULL while no pace is known (a pass that just began, the cut). A JSON integer.
 */
static json_object *
vr_scheduler_eta(const VrPrimaryProgress *progress, double pace, double fraction, gint64 elapsed_us)
{
    VrPrimaryProgress end = *progress;
    double elapsed = (double)elapsed_us / G_USEC_PER_SEC;
    double pass_end;
    double seconds;

    if (progress->phase == VR_PRIMARY_PHASE_CUT)
        return NULL;
    end.done = end.total;
    pass_end = vr_primary_progress_fraction(&end);
    if (progress->total > progress->done) {
        if (pace <= 0)
            return NULL;
        seconds = (double)(progress->total - progress->done) / pace;
        if (fraction >= 0.01)
            seconds += elapsed * (1 - pass_end) / fraction;
        else
            seconds += (1 - pass_end) * 3.0 * progress->n_disks * (double)progress->total / pace;
    } else if (fraction >= 0.01) {
        seconds = elapsed * (1 - fraction) / fraction;
    } else {
        return NULL;
    }
    return json_object_new_int64((int64_t)(seconds + 0.5));
}

json_object *
vr_scheduler_progress_json(VrScheduler *scheduler, const char *id)
{
    VrSchedulerJob *job = vr_scheduler_find(scheduler, id, NULL);
    json_object *obj;
    VrPrimaryProgress progress;
    gint64 started;
    double rate;
    double pace;
    double fraction;
    gint64 elapsed_us;
    char text[16];

    if (job == NULL || !job->running)
        return NULL;
    g_mutex_lock(&job->progress_lock);
    progress = job->progress;
    started = job->progress_started;
    rate = job->rate;
    pace = job->pace;
    g_mutex_unlock(&job->progress_lock);

    fraction = vr_primary_progress_fraction(&progress);
    elapsed_us = g_get_monotonic_time() - started;
    obj = json_object_new_object();
    json_object_object_add(obj, "cycle", json_object_new_uint64(job->cycle_base + 1));
    json_object_object_add(obj, "resync", json_object_new_boolean(job->cycle_resync));
    json_object_object_add(obj, "phase",
                           json_object_new_string(vr_primary_phase_name(progress.phase)));
    if (progress.phase != VR_PRIMARY_PHASE_CUT && progress.disk < g_strv_length(job->disks)) {
        json_object_object_add(obj, "disk", json_object_new_string(job->disks[progress.disk]));
        json_object_object_add(obj, "disk_index", json_object_new_uint64(progress.disk));
    }
    json_object_object_add(obj, "disks", json_object_new_uint64(g_strv_length(job->disks)));
    json_object_object_add(obj, "done", json_object_new_uint64(progress.done));
    json_object_object_add(obj, "total", json_object_new_uint64(progress.total));
    json_object_object_add(obj, "bytes", json_object_new_uint64(progress.bytes));
    if (progress.phase == VR_PRIMARY_PHASE_SEND) {
        /* The upload follows the read of the same disk: how far that read is (1: done). */
        double read = vr_primary_progress_read_fraction(&progress);

        g_snprintf(text, sizeof(text), "%.4f", read);
        json_object_object_add(obj, "read_fraction", json_object_new_double_s(read, text));
    }
    /* Four decimals, not json-c's seventeen digits. */
    g_snprintf(text, sizeof(text), "%.4f", fraction);
    json_object_object_add(obj, "fraction", json_object_new_double_s(fraction, text));
    json_object_object_add(obj, "rate_bytes_per_s", json_object_new_uint64((uint64_t)rate));
    json_object_object_add(obj, "elapsed_ms", json_object_new_int64(elapsed_us / 1000));
    json_object_object_add(obj, "eta_s", vr_scheduler_eta(&progress, pace, fraction, elapsed_us));
    return obj;
}

/* ---- loading and enabling ------------------------------------------------------------- */

static bool
vr_scheduler_get_uint(json_object *obj, const char *key, guint min, guint max, guint *value,
                      GError **error)
{
    json_object *member;
    int64_t v;

    if (!json_object_object_get_ex(obj, key, &member))
        return true;
    if (!json_object_is_type(member, json_type_int) ||
        (v = json_object_get_int64(member)) < (int64_t)min || v > (int64_t)max)
        return vr_scheduler_invalid(error, "'%s' must be a whole number from %u to %u", key, min,
                                    max);
    *value = (guint)v;
    return true;
}

static bool
vr_scheduler_get_string(json_object *obj, const char *key, char **value, GError **error)
{
    json_object *member;

    if (!json_object_object_get_ex(obj, key, &member))
        return true;
    if (!json_object_is_type(member, json_type_string))
        return vr_scheduler_invalid(error, "'%s' must be a string", key);
    g_free(*value);
    *value = g_strdup(json_object_get_string(member));
    return true;
}

/* The settings of a request or of a stored config, checked, into @job. */
static bool
vr_scheduler_job_settings(VrSchedulerJob *job, json_object *obj, bool request, GError **error)
{
    static const char *const members[] = { "domain",
                                           "server",
                                           "port",
                                           "address",
                                           "frequency",
                                           "recovery_points",
                                           "app_consistent_hours",
                                           "network",
                                           "compression",
                                           "bandwidth",
                                           "initial",
                                           "disks",
                                           "initial_export",
                                           "failover",
                                           "reverse",
                                           NULL };
    const VrConfig *config = job->scheduler->config;
    g_autofree char *bandwidth = NULL;
    json_object *member;

    if (!json_object_is_type(obj, json_type_object))
        return vr_scheduler_invalid(error, "the request is not a JSON object");
    json_object_object_foreach (obj, key, value) {
        (void)value;
        if (!g_strv_contains(members, key))
            return vr_scheduler_invalid(error, "unknown member '%s'", key);
    }
    job->port = VR_SCHEDULER_DEFAULT_PORT;
    job->frequency = config->primary.default_frequency;
    job->recovery_points = config->primary.default_recovery_points;
    job->compression = config->primary.compression;
    if (!vr_scheduler_get_string(obj, "server", &job->server, error) ||
        !vr_scheduler_get_uint(obj, "port", 1, 65535, &job->port, error) ||
        !vr_scheduler_get_string(obj, "address", &job->address, error) ||
        !vr_scheduler_get_uint(obj, "frequency", VR_SCHEDULER_MIN_FREQUENCY,
                               VR_SCHEDULER_MAX_FREQUENCY, &job->frequency, error) ||
        !vr_scheduler_get_uint(obj, "recovery_points", 0, 24, &job->recovery_points, error) ||
        !vr_scheduler_get_uint(obj, "app_consistent_hours", 0, 24, &job->app_consistent_hours,
                               error) ||
        !vr_scheduler_get_string(obj, "network", &job->network, error))
        return false;
    if (job->server == NULL || job->server[0] == '\0')
        return vr_scheduler_invalid(error, "'server' (the replica's DNS name) is required");
    if (job->address != NULL) {
        g_autoptr(GInetAddress) address = g_inet_address_new_from_string(job->address);

        if (address == NULL)
            return vr_scheduler_invalid(error, "'address' '%s' is not an IP address", job->address);
    }
    if (job->network == NULL && config->primary.network != NULL)
        job->network = g_strdup(config->primary.network);
    if (job->network != NULL) {
        g_autofree char *name = NULL;
        VrNetKind kind;

        if (!vr_net_parse_spec(job->network, &kind, &name, error)) {
            g_prefix_error(error, "'network': ");
            return false;
        }
    }
    if (json_object_object_get_ex(obj, "compression", &member)) {
        if (!json_object_is_type(member, json_type_boolean))
            return vr_scheduler_invalid(error, "'compression' must be true or false");
        job->compression = json_object_get_boolean(member);
    }
    if (json_object_object_get_ex(obj, "bandwidth", &member)) {
        if (json_object_is_type(member, json_type_int)) {
            job->bandwidth = (uint64_t)json_object_get_int64(member);
        } else if (!json_object_is_type(member, json_type_string) ||
                   !vr_rate_parse(json_object_get_string(member), &job->bandwidth, error)) {
            g_clear_error(error);
            return vr_scheduler_invalid(error, "'bandwidth' must be a rate such as 100M");
        }
    }
    if (request && json_object_object_get_ex(obj, "initial", &member)) {
        const char *initial = json_object_get_string(member);

        if (!json_object_is_type(member, json_type_string))
            return vr_scheduler_invalid(error, "'initial' must be a string");
        if (strcmp(initial, "existing") == 0) {
            job->resync_next = true;
        } else if (g_str_has_prefix(initial, "export:")) {
            /* The initial copy on external media (vr-export.h): checked at the first cycle. */
            if (!g_path_is_absolute(initial + strlen("export:")))
                return vr_scheduler_invalid(error,
                                            "'initial' '%s': the export directory must be "
                                            "an absolute path",
                                            initial);
            job->export_dir = g_canonicalize_filename(initial + strlen("export:"), NULL);
        } else if (strcmp(initial, "network") != 0) {
            return vr_scheduler_invalid(
                error, "'initial' '%s' is none of 'network', 'existing' and 'export:PATH'",
                initial);
        }
    }
    /* Only in the stored settings: a relationship adopted by a reverse failover. */
    if (json_object_object_get_ex(obj, "reverse", &member)) {
        if (request || !json_object_is_type(member, json_type_boolean))
            return vr_scheduler_invalid(error, "unknown member 'reverse'");
        job->adopted = json_object_get_boolean(member);
    }
    /* Only in the stored settings: the planned failover this host made. */
    if (json_object_object_get_ex(obj, "failover", &member)) {
        json_object *item;

        if (request || !json_object_is_type(member, json_type_object))
            return vr_scheduler_invalid(error, "unknown member 'failover'");
        if (json_object_object_get_ex(member, "cycle", &item))
            job->failover_cycle = (uint64_t)json_object_get_uint64(item);
        if (json_object_object_get_ex(member, "standby", &item) &&
            json_object_is_type(item, json_type_string)) {
            g_free(job->failover_standby);
            job->failover_standby = g_strdup(json_object_get_string(item));
        }
    }
    /* Only in the stored settings: the export still to write. */
    if (json_object_object_get_ex(obj, "initial_export", &member)) {
        if (request)
            return vr_scheduler_invalid(error, "unknown member 'initial_export'");
        if (!vr_scheduler_get_string(obj, "initial_export", &job->export_dir, error))
            return false;
    }
    if (json_object_object_get_ex(obj, "disks", &member)) {
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);

        if (!json_object_is_type(member, json_type_array) || json_object_array_length(member) == 0)
            return vr_scheduler_invalid(error, "'disks' must be a non-empty array of targets");
        for (size_t i = 0; i < json_object_array_length(member); i++) {
            json_object *item = json_object_array_get_idx(member, i);

            if (!json_object_is_type(item, json_type_string))
                return vr_scheduler_invalid(error, "'disks' must hold target names");
            g_ptr_array_add(names, g_strdup(json_object_get_string(item)));
        }
        g_ptr_array_add(names, NULL);
        g_strfreev(job->disks);
        job->disks = (char **)g_ptr_array_free(g_steal_pointer(&names), FALSE);
    }
    return true;
}

/*
 * The disks of @xml that can be replicated: device "disk" with a qcow2 file. With
 * @wanted, each of them must be one (UNSUPPORTED naming the one that is not).
 */
static char **
vr_scheduler_domain_disks(const char *xml, char **wanted, GError **error)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    xmlDocPtr doc = xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL, XML_PARSE_NONET);
    xmlXPathContextPtr ctx = NULL;
    xmlXPathObjectPtr disks = NULL;
    char **result = NULL;

    if (doc == NULL) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "libvirt's domain XML does not parse");
        return NULL;
    }
    ctx = xmlXPathNewContext(doc);
    disks = xmlXPathEvalExpression(
        (const xmlChar *)"/domain/devices/disk[@device='disk' or not(@device)]", ctx);
    for (int i = 0; disks != NULL && disks->nodesetval != NULL && i < disks->nodesetval->nodeNr;
         i++) {
        xmlNodePtr disk = disks->nodesetval->nodeTab[i];
        g_autofree char *target = NULL;
        g_autofree char *type = NULL;

        for (xmlNodePtr c = disk->children; c != NULL; c = c->next) {
            if (c->type != XML_ELEMENT_NODE)
                continue;
            if (xmlStrcmp(c->name, (const xmlChar *)"target") == 0) {
                xmlChar *dev = xmlGetProp(c, (const xmlChar *)"dev");

                target = g_strdup((const char *)dev);
                xmlFree(dev);
            } else if (xmlStrcmp(c->name, (const xmlChar *)"driver") == 0) {
                xmlChar *t = xmlGetProp(c, (const xmlChar *)"type");

                type = g_strdup((const char *)t);
                xmlFree(t);
            }
        }
        if (target == NULL)
            continue;
        if (wanted != NULL && !g_strv_contains((const char *const *)wanted, target))
            continue;
        if (g_strcmp0(type, "qcow2") != 0) {
            if (wanted == NULL)
                continue; /* not replicated unless asked for, and then refused below */
            g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_UNSUPPORTED,
                        "disk '%s' is %s, not qcow2: persistent dirty bitmaps need qcow2", target,
                        type != NULL ? type : "of no known format");
            goto out;
        }
        g_ptr_array_add(names, g_steal_pointer(&target));
    }
    if (wanted != NULL) {
        for (guint i = 0; wanted[i] != NULL; i++) {
            bool found = false;

            for (guint j = 0; j < names->len; j++)
                found = found || strcmp(names->pdata[j], wanted[i]) == 0;
            if (!found) {
                g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_UNSUPPORTED,
                            "the domain has no disk '%s'", wanted[i]);
                goto out;
            }
        }
    }
    if (names->len == 0) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_UNSUPPORTED,
                    "the domain has no qcow2 disk to replicate");
        goto out;
    }
    g_ptr_array_add(names, NULL);
    result = (char **)g_ptr_array_free(g_steal_pointer(&names), FALSE);
out:
    xmlXPathFreeObject(disks);
    xmlXPathFreeContext(ctx);
    xmlFreeDoc(doc);
    return result;
}

/* A new job of @scheduler, registered and scheduled: the first cycle in @delay seconds. */
static void
vr_scheduler_add(VrScheduler *scheduler, VrSchedulerJob *job, guint delay)
{
    g_hash_table_insert(scheduler->jobs, job->id, job);
    vr_scheduler_schedule(job, delay);
}

bool
vr_scheduler_enable(VrScheduler *scheduler, json_object *request, char **id_out, GError **error)
{
    VrSchedulerJob *job = vr_scheduler_job_new(scheduler);
    g_autofree char *xml = NULL;
    char uuid[VIR_UUID_STRING_BUFLEN];
    const char *domain = NULL;
    virDomainPtr dom = NULL;
    g_autofree char *id = NULL;
    GHashTableIter iter;
    gpointer value;
    bool ok = false;

    job->epoch = 1;
    if (json_object_is_type(request, json_type_object))
        domain = vr_json_get_string(request, "domain");
    if (domain == NULL || domain[0] == '\0') {
        vr_scheduler_invalid(error, "'domain' (the libvirt domain's name) is required");
        goto out;
    }
    if (!vr_scheduler_job_settings(job, request, true, error))
        goto out;
    dom = virDomainLookupByName(scheduler->conn, domain);
    if (dom == NULL) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_UNKNOWN_DOMAIN,
                    "libvirt has no domain '%s'", domain);
        goto out;
    }
    if (virDomainGetUUIDString(dom, uuid) < 0 ||
        (xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE)) == NULL) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "cannot read domain '%s' from libvirt: %s", domain, virGetLastErrorMessage());
        goto out;
    }
    job->domain = g_strdup(virDomainGetName(dom));
    /*
     * The id: the UUID's first 8 hexadecimal digits and 4 random ones (12 at most: QEMU node
     * names limit its length). Each enable is a new relationship: enabled again after a
     * disable, the domain starts a fresh chain on the replica, never one that collides with
     * the recovery points the earlier relationship left there.
     */
    id = g_strdup_printf("%.8s%04x", uuid, g_random_int_range(0, 0x10000));
    g_hash_table_iter_init(&iter, scheduler->jobs);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        VrSchedulerJob *other = value;

        if (strcmp(other->id, id) == 0 || strcmp(other->domain, job->domain) == 0) {
            g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_ALREADY_ENABLED,
                        "domain '%s' is replicated already (relationship '%s')", job->domain,
                        other->id);
            goto out;
        }
    }
    job->id = g_steal_pointer(&id);
    {
        char **disks = vr_scheduler_domain_disks(xml, job->disks, error);

        if (disks == NULL)
            goto out;
        g_strfreev(job->disks);
        job->disks = disks;
    }
    if (!vr_scheduler_job_transport(job, error) ||
        !vr_scheduler_job_save(job, uuid, vr_scheduler_job_state(job), error))
        goto out;
    g_info("relationship '%s': replicating domain '%s' to %s every %u s", job->id, job->domain,
           job->server, job->frequency);
    *id_out = g_strdup(job->id);
    vr_scheduler_add(scheduler, g_steal_pointer(&job), 0);
    ok = true;
out:
    if (dom != NULL)
        virDomainFree(dom);
    if (job != NULL)
        vr_scheduler_job_free(job);
    return ok;
}

/* The primary relationships of the state database, scheduled again after a restart. */
static bool
vr_scheduler_load(VrScheduler *scheduler, GError **error)
{
    g_autoptr(GPtrArray) list = vr_state_relationship_list(scheduler->state, error);

    if (list == NULL)
        return false;
    for (guint i = 0; i < list->len; i++) {
        const VrStateRelationship *rel = list->pdata[i];
        g_autoptr(GError) local = NULL;

        if (rel->role != VR_STATE_ROLE_PRIMARY)
            continue;
        if (!vr_scheduler_load_one(scheduler, rel, 0, &local))
            g_warning("%s", local->message);
    }
    return true;
}

/* One primary relationship of the state database, scheduled in @delay seconds. */
static bool
vr_scheduler_load_one(VrScheduler *scheduler, const VrStateRelationship *rel, guint delay,
                      GError **error)
{
    {
        g_autoptr(json_object) settings = NULL;
        g_autoptr(GError) local = NULL;
        VrSchedulerJob *job;
        VrStateStats stats;

        job = vr_scheduler_job_new(scheduler);
        job->id = g_strdup(rel->id);
        job->domain = g_strdup(rel->domain_name);
        job->epoch = rel->epoch;
        job->suspended = g_strcmp0(rel->state, "Suspended") == 0;
        job->resync_next = g_strcmp0(rel->state, "ResynchronizationRequired") == 0;
        job->refused = g_strcmp0(rel->state, "Error") == 0;
        job->failed_over = g_strcmp0(rel->state, "FailedOver") == 0;
        /*
         * Whether its final cycle was acknowledged is not kept: it runs again once the domain
         * is found off (an empty cycle when it had been, the missing one when the daemon
         * stopped before it ended), and until then the RPO clock counts as for any cycle.
         */
        job->paused = g_strcmp0(rel->state, "PausedDomainOff") == 0;
        job->final_retry = job->paused;
        job->awaiting_import = g_strcmp0(rel->state, "WaitingForInitialReplication") == 0;
        settings = json_tokener_parse(rel->config);
        if (settings == NULL || !vr_scheduler_job_settings(job, settings, false, &local) ||
            job->disks == NULL || !vr_scheduler_job_transport(job, &local) ||
            !vr_state_stats(scheduler->state, rel->id, 0, &stats, &local)) {
            g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                        "relationship '%s' of domain '%s' cannot be resumed: %s", rel->id,
                        rel->domain_name,
                        local != NULL ? local->message : "its settings do not parse");
            vr_scheduler_job_free(job);
            return false;
        }
        job->acked = stats.last_ok_cycle;
        /* Exported already, or still to export (the stored settings say). */
        job->awaiting_import = job->awaiting_import && job->export_dir == NULL;
        vr_scheduler_add(scheduler, job, delay);
    }
    return true;
}

bool
vr_scheduler_adopt(VrScheduler *scheduler, const char *id, GError **error)
{
    g_autoptr(VrStateRelationship) rel = vr_state_relationship_get(scheduler->state, id, error);

    if (rel == NULL)
        return false;
    if (g_hash_table_contains(scheduler->jobs, id)) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_ALREADY_ENABLED,
                    "relationship '%s' is scheduled already", id);
        return false;
    }
    if (rel->role != VR_STATE_ROLE_PRIMARY) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "relationship '%s' does not have the primary role here", id);
        return false;
    }
    if (!vr_scheduler_load_one(scheduler, rel, 0, error))
        return false;
    {
        VrSchedulerJob *job = g_hash_table_lookup(scheduler->jobs, id);

        /* Not at once: the old primary becomes the replica meanwhile. */
        vr_scheduler_schedule(job, job->frequency);
        g_info("relationship '%s': replicating domain '%s' to %s every %u s (reversed, from "
               "cycle %" PRIu64 ")",
               job->id, job->domain, job->server, job->frequency, job->acked);
    }
    return true;
}

void
vr_scheduler_forget(VrScheduler *scheduler, const char *id)
{
    VrSchedulerJob *job = g_hash_table_lookup(scheduler->jobs, id);

    if (job == NULL || job->failover_task != NULL)
        return;
    if (job->running) {
        /* Goes when the cycle ended (vr_scheduler_cycle_done()); none starts meanwhile. */
        job->forget_pending = true;
        vr_scheduler_cancel_timer(job);
        return;
    }
    /* Syncs waiting for a cycle that no longer comes. */
    for (GList *l = job->waiters; l != NULL; l = l->next) {
        g_task_return_new_error(l->data, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_CYCLE_FAILED,
                                "relationship '%s' is no longer replicated from this host", id);
        g_object_unref(l->data);
    }
    g_clear_pointer(&job->waiters, g_list_free);
    g_info("relationship '%s': no longer replicated from this host", id);
    g_hash_table_remove(scheduler->jobs, id);
}

void
vr_scheduler_set_reverse_handler(VrScheduler *scheduler, VrSchedulerReverseFunc func,
                                 gpointer user_data)
{
    scheduler->reverse_func = func;
    scheduler->reverse_data = user_data;
}

void
vr_scheduler_set_reversing_func(VrScheduler *scheduler, VrSchedulerReversingFunc func,
                                gpointer user_data)
{
    scheduler->reversing_func = func;
    scheduler->reversing_data = user_data;
}

VrScheduler *
vr_scheduler_new(const VrConfig *config, VrState *state, virConnectPtr conn, GError **error)
{
    g_autoptr(VrScheduler) scheduler = g_new0(VrScheduler, 1);

    scheduler->config = config;
    scheduler->state = state;
    scheduler->conn = conn;
    scheduler->context = g_main_context_ref_thread_default();
    scheduler->jobs = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, vr_scheduler_job_free);
    scheduler->token = g_new0(VrSchedulerToken, 1);
    scheduler->token->ref = 1;
    scheduler->token->scheduler = scheduler;
    if (config->primary.bandwidth != 0)
        scheduler->host_limit = vr_rate_limit_new(
            config->primary.bandwidth, MAX(config->primary.bandwidth / 4, VR_SCHEDULER_MIN_BURST));
    scheduler->pool = g_thread_pool_new(vr_scheduler_pool_run, scheduler,
                                        (int)config->daemon.max_active_transfers, FALSE, error);
    if (scheduler->pool == NULL || !vr_scheduler_load(scheduler, error))
        return NULL;
    scheduler->pending_timer = g_timeout_source_new_seconds(VR_SCHEDULER_PENDING_INTERVAL);
    g_source_set_callback(scheduler->pending_timer, vr_scheduler_on_pending_timer, scheduler, NULL);
    g_source_attach(scheduler->pending_timer, scheduler->context);
    return g_steal_pointer(&scheduler);
}

void
vr_scheduler_free(VrScheduler *scheduler)
{
    GHashTableIter iter;
    gpointer value;

    if (scheduler == NULL)
        return;
    if (scheduler->pending_timer != NULL) {
        g_source_destroy(scheduler->pending_timer);
        g_source_unref(scheduler->pending_timer);
    }
    g_hash_table_iter_init(&iter, scheduler->jobs);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        VrSchedulerJob *job = value;

        if (job->cancellable != NULL)
            g_cancellable_cancel(job->cancellable);
    }
    /* Queued cycles are dropped, running ones end (their teardown runs) before this returns. */
    if (scheduler->pool != NULL)
        g_thread_pool_free(scheduler->pool, TRUE, TRUE);
    scheduler->token->scheduler = NULL;
    vr_scheduler_token_unref(scheduler->token);
    g_hash_table_iter_init(&iter, scheduler->jobs);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        VrSchedulerJob *job = value;

        if (job->failover_task != NULL) {
            GTask *task = g_steal_pointer(&job->failover_task);

            g_task_return_new_error(task, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                                    "the daemon is stopping: the planned failover was aborted");
            g_object_unref(task);
        }
        if (job->waiters != NULL) {
            g_clear_error(&job->error);
            g_set_error(&job->error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                        "the daemon is stopping: the cycle was aborted");
            job->ok = false;
            vr_scheduler_answer_waiters(job);
        }
    }
    g_hash_table_unref(scheduler->jobs);
    vr_rate_limit_free(scheduler->host_limit);
    g_main_context_unref(scheduler->context);
    g_free(scheduler);
}

/* ---- planned failover ------------------------------------------------------------------ */

/* How often the shutdown is polled (µs). */
#define VR_SCHEDULER_SHUTDOWN_POLL            (200 * 1000)
#define VR_SCHEDULER_DEFAULT_SHUTDOWN_TIMEOUT 120
#define VR_SCHEDULER_MAX_SHUTDOWN_TIMEOUT     86400

/*
 * The marker on the domain's own definition during and after a planned failover away: the
 * libvirt hook refuses to start a domain with state "failing-over" (from the shutdown until
 * the replica's answer is known) or "old-primary" (after it: the replica host runs it), so
 * nobody starts it here by mistake while the replica host may run it (split brain).
 */
static bool
vr_scheduler_guard_domain_full(VrSchedulerJob *job, const char *state, const char *final,
                               GError **error)
{
    g_autofree char *marker = g_markup_printf_escaped(
        "<standby relationship=\"%s\" primary-name=\"%s\" epoch=\"%" PRIu64
        "\" state=\"%s\" final=\"%s\"/>",
        job->id, job->domain, job->epoch, state, final != NULL ? final : "");
    virDomainPtr dom = virDomainLookupByName(job->scheduler->conn, job->domain);
    int rc;

    if (dom == NULL) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "libvirt has no domain '%s' to guard: %s", job->domain,
                    virGetLastErrorMessage());
        return false;
    }
    rc = virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, marker, "vr", VR_STANDBY_XMLNS,
                              VIR_DOMAIN_AFFECT_CONFIG);
    virDomainFree(dom);
    if (rc < 0) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "cannot mark domain '%s' as failed over: %s", job->domain,
                    virGetLastErrorMessage());
        return false;
    }
    return true;
}

static bool
vr_scheduler_guard_domain(VrSchedulerJob *job, const char *state, GError **error)
{
    return vr_scheduler_guard_domain_full(job, state, NULL, error);
}

/*
 * The final cycle of a planned failover as its guard records it, "CYCLE:DISK=HEX,DISK=HEX"
 * (a retry after an unknown outcome sends the same request again). (transfer full)
 */
static char *
vr_scheduler_final_record(VrSchedulerJob *job)
{
    GString *text = g_string_new(NULL);

    g_string_append_printf(text, "%" PRIu64 ":", job->result.cycle);
    for (guint i = 0; job->disks[i] != NULL && i < job->result.digests->len; i++) {
        const uint8_t *digest =
            &g_array_index(job->result.digests, uint8_t, i * VR_WIRE_DIGEST_SIZE);
        char hex[VR_WIRE_DIGEST_SIZE * 2 + 1];

        vr_replica_hex_encode(digest, VR_WIRE_DIGEST_SIZE, hex);
        g_string_append_printf(text, "%s%s=%s", i > 0 ? "," : "", job->disks[i], hex);
    }
    return g_string_free(text, FALSE);
}

/*
 * Whether @dom carries this relationship's "failing-over" guard with a final cycle that is
 * still the last acknowledged one: then *@result gets that cycle and its digests, in the
 * order of the job's disks (the images have not changed since: the guard kept the domain
 * from starting). Worker thread.
 */
static bool
vr_scheduler_final_recorded(VrSchedulerJob *job, virDomainPtr dom, VrPrimaryResult *result)
{
    g_autofree char *xml = virDomainGetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, VR_STANDBY_XMLNS,
                                                VIR_DOMAIN_AFFECT_CONFIG);
    g_autoptr(VrStandbyInfo) info = xml != NULL ? vr_standby_info_from_xml(xml) : NULL;
    g_autofree char *final = NULL;
    g_auto(GStrv) disks = NULL;
    const char *start;
    const char *end;
    guint64 cycle;
    char *colon;

    if (info == NULL || g_strcmp0(info->relationship, job->id) != 0 ||
        g_strcmp0(info->state, VR_SCHEDULER_MARKER_FAILING_OVER) != 0 ||
        (start = strstr(xml, " final=\"")) == NULL ||
        (end = strchr(start + strlen(" final=\""), '"')) == NULL)
        return false;
    start += strlen(" final=\"");
    final = g_strndup(start, end - start);
    colon = strchr(final, ':');
    if (colon == NULL)
        return false;
    *colon = '\0';
    if (!g_ascii_string_to_unsigned(final, 10, 1, G_MAXUINT64, &cycle, NULL) || cycle != job->acked)
        return false;
    disks = g_strsplit(colon + 1, ",", -1);
    if (g_strv_length(disks) != g_strv_length(job->disks))
        return false;
    memset(result, 0, sizeof(*result));
    result->cycle = cycle;
    result->digests = g_array_sized_new(FALSE, TRUE, VR_WIRE_DIGEST_SIZE, g_strv_length(disks));
    for (guint i = 0; disks[i] != NULL; i++) {
        uint8_t digest[VR_WIRE_DIGEST_SIZE];
        const char *hex = strchr(disks[i], '=');

        if (hex == NULL || strncmp(disks[i], job->disks[i], hex - disks[i]) != 0 ||
            job->disks[i][hex - disks[i]] != '\0' || strlen(hex + 1) != VR_WIRE_DIGEST_SIZE * 2) {
            vr_primary_result_clear(result);
            return false;
        }
        if (!vr_replica_hex_decode(hex + 1, strlen(hex + 1), digest, VR_WIRE_DIGEST_SIZE)) {
            vr_primary_result_clear(result);
            return false;
        }
        g_array_append_vals(result->digests, digest, 1);
    }
    return true;
}

/* The guard goes (replica-disable of a failed-over relationship, a planned failover that
 * definitely did not happen); a failure is logged. */
static void
vr_scheduler_unguard_domain(VrSchedulerJob *job)
{
    virDomainPtr dom = virDomainLookupByName(job->scheduler->conn, job->domain);
    g_autoptr(VrStandbyInfo) info = dom != NULL ? vr_standby_info_get(dom) : NULL;

    /* Only our own marker: never a standby's. */
    if (info != NULL && strcmp(info->relationship, job->id) == 0 &&
        (g_strcmp0(info->state, VR_SCHEDULER_MARKER_OLD_PRIMARY) == 0 ||
         g_strcmp0(info->state, VR_SCHEDULER_MARKER_FAILING_OVER) == 0) &&
        virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, NULL, NULL, VR_STANDBY_XMLNS,
                             VIR_DOMAIN_AFFECT_CONFIG) < 0)
        g_warning("relationship '%s': the failover marker of domain '%s' stays: %s", job->id,
                  job->domain, virGetLastErrorMessage());
    if (dom != NULL)
        virDomainFree(dom);
}

/* Whether the cycle's result says a disk was published by an earlier cut (zero digest). */
static bool
vr_scheduler_result_replayed(const VrPrimaryResult *result)
{
    static const uint8_t zero[VR_WIRE_DIGEST_SIZE] = { 0 };

    for (guint i = 0; result->digests != NULL && i < result->digests->len; i++) {
        if (memcmp(&g_array_index(result->digests, uint8_t, i * VR_WIRE_DIGEST_SIZE), zero,
                   VR_WIRE_DIGEST_SIZE) == 0)
            return true;
    }
    return false;
}

/* Shut the domain down (ACPI), up to the timeout; then, with force, destroy it. */
static bool
vr_scheduler_shutdown(VrSchedulerJob *job, virDomainPtr dom, GError **error)
{
    gint64 deadline = g_get_monotonic_time() + (gint64)job->shutdown_timeout * G_USEC_PER_SEC;

    if (virDomainIsActive(dom) != 1)
        return true;
    g_info("relationship '%s': planned failover: shutting domain '%s' down (up to %u s)", job->id,
           job->domain, job->shutdown_timeout);
    if (virDomainShutdown(dom) < 0 && virDomainIsActive(dom) == 1) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "cannot shut domain '%s' down: %s", job->domain, virGetLastErrorMessage());
        return false;
    }
    while (virDomainIsActive(dom) == 1 && g_get_monotonic_time() < deadline &&
           !g_cancellable_is_cancelled(job->cancellable))
        g_usleep(VR_SCHEDULER_SHUTDOWN_POLL);
    if (virDomainIsActive(dom) != 1)
        return true;
    if (g_cancellable_is_cancelled(job->cancellable)) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "the daemon is stopping: the planned failover was aborted");
        return false;
    }
    if (!job->force) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_SHUTDOWN_TIMEOUT,
                    "the guest did not shut down within %u s; shut it down from inside the "
                    "guest or use --force",
                    job->shutdown_timeout);
        return false;
    }
    /* SIGTERM first: QEMU closes its images cleanly and stores the persistent bitmaps. */
    g_warning("relationship '%s': domain '%s' did not shut down within %u s: destroying it",
              job->id, job->domain, job->shutdown_timeout);
    job->failover_forced = true;
    if (virDomainDestroyFlags(dom, VIR_DOMAIN_DESTROY_GRACEFUL) < 0 &&
        virDomainIsActive(dom) == 1 && virDomainDestroy(dom) < 0 && virDomainIsActive(dom) == 1) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "cannot destroy domain '%s': %s", job->domain, virGetLastErrorMessage());
        return false;
    }
    return true;
}

/* The request to the replica: the final cycle, its epoch and every disk's stream digest. */
static char *
vr_scheduler_failover_request(VrSchedulerJob *job)
{
    g_autoptr(json_object) obj = json_object_new_object();
    json_object *digests = json_object_new_object();

    for (guint i = 0; job->disks[i] != NULL && i < job->result.digests->len; i++) {
        const uint8_t *digest =
            &g_array_index(job->result.digests, uint8_t, i * VR_WIRE_DIGEST_SIZE);
        char hex[VR_WIRE_DIGEST_SIZE * 2 + 1];

        vr_replica_hex_encode(digest, VR_WIRE_DIGEST_SIZE, hex);
        json_object_object_add(digests, job->disks[i], json_object_new_string(hex));
    }
    json_object_object_add(obj, "cycle", json_object_new_uint64(job->result.cycle));
    json_object_object_add(obj, "epoch", json_object_new_uint64(job->epoch));
    json_object_object_add(obj, "digests", digests);
    if (job->failover_reverse != NULL) {
        json_object *reverse = NULL;

        /* A deep copy: the worker thread owns nothing the main context changes. */
        json_object_deep_copy(job->failover_reverse, &reverse, NULL);
        json_object_object_add(reverse, "frequency", json_object_new_int((int)job->frequency));
        json_object_object_add(obj, "reverse", reverse);
    }
    return g_strdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
}

/* The planned failover's error when the replica's answer did not come: see the runbook. */
static void
vr_scheduler_unknown_outcome(VrSchedulerJob *job, const char *why)
{
    g_set_error(&job->error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                "the final cycle %" PRIu64 " is on the replica, but whether it failed over is "
                "not known (%s): domain '%s' stays shut off and guarded here (the libvirt hook "
                "refuses to start it); run replica-planned-failover again to finish or settle "
                "it, and see replica-status on the replica host",
                job->result.cycle, why, job->domain);
}

/*
 * The planned failover's steps that block: the shutdown, the final cycle, the replica's
 * check and failover. Its completion is vr_scheduler_failover_done(). Worker thread.
 */
static void
vr_scheduler_planned_worker(VrSchedulerJob *job, VrScheduler *scheduler)
{
    g_autofree char *workdir = vr_scheduler_workdir(scheduler, job);
    g_autoptr(GError) local = NULL;
    g_autofree char *request = NULL;
    g_autofree char *reply = NULL;
    g_autoptr(json_object) answer = NULL;
    VrPrimaryConfig config = vr_scheduler_primary_config(scheduler, job, workdir);
    virDomainPtr dom = virDomainLookupByName(scheduler->conn, job->domain);
    uint64_t base = job->acked;
    json_object *value;

    job->ok = false;
    if (dom == NULL) {
        g_set_error(&job->error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_UNKNOWN_DOMAIN,
                    "libvirt has no domain '%s'", job->domain);
        goto out;
    }
    if (!vr_scheduler_shutdown(job, dom, &job->error))
        goto out;
    job->failover_off = true;
    /*
     * A guard left by an earlier try whose outcome is unknown: the replica may have failed
     * over already (then it refuses any new cycle), so its final cycle is sent again as it
     * was, and the guard stays until the replica answers for sure.
     */
    vr_primary_result_clear(&job->result);
    if (vr_scheduler_final_recorded(job, dom, &job->result)) {
        job->failover_unknown = true;
        job->failover_guarded = true;
        g_info("relationship '%s': an earlier planned failover ended without an answer: its "
               "final cycle %" PRIu64 " is sent to the replica again",
               job->id, job->result.cycle);
        goto request;
    }
    /*
     * Guarded from here until the replica's answer is known: the final cycle holds what the
     * closed images hold, so nothing may start the domain and write after it.
     */
    if (!vr_scheduler_guard_domain(job, VR_SCHEDULER_MARKER_FAILING_OVER, &job->error))
        goto out;
    job->failover_guarded = true;
    if (!vr_scheduler_make_workdir(workdir, &job->error))
        goto out;
    /*
     * The final cycle from the last acknowledged one (empty when the domain's final cycle
     * ran already). A disk the replica had from an earlier cut of the same cycle (a lost
     * acknowledgement) holds that cut, not the closed image: one more cycle sends the rest.
     */
    for (guint attempt = 0;; attempt++) {
        vr_primary_result_clear(&job->result);
        if (!vr_primary_run_offline_cycle(&config, base, base + 1, vr_scheduler_on_progress, job,
                                          job->cancellable, &job->result, &local)) {
            g_set_error(&job->error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_CYCLE_FAILED,
                        "the domain is shut off, but its final cycle failed (nothing changed "
                        "on the replica): %s",
                        local->message);
            goto out;
        }
        job->failover_cycle_ok = true;
        base = job->result.cycle;
        if (!vr_scheduler_result_replayed(&job->result))
            break;
        if (attempt > 0) {
            g_set_error(&job->error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                        "the final cycle %" PRIu64 " was published by an earlier cut twice",
                        job->result.cycle);
            goto out;
        }
        g_info("relationship '%s': final cycle %" PRIu64 " was an earlier cut's: one more", job->id,
               job->result.cycle);
    }
    /* Kept with the guard, so that a retry after an unknown outcome can send it again. */
    {
        g_autofree char *final = vr_scheduler_final_record(job);

        if (!vr_scheduler_guard_domain_full(job, VR_SCHEDULER_MARKER_FAILING_OVER, final, &local)) {
            g_warning("relationship '%s': %s (a retry after a lost answer will cut another "
                      "final cycle)",
                      job->id, local->message);
            g_clear_error(&local);
        }
    }
request:
    /* The zero-data-loss check and the failover, in one request to the replica. */
    request = vr_scheduler_failover_request(job);
    if (!vr_sender_post_failover(job->sender, job->id, request, &reply, &local)) {
        /*
         * A refusal is definite: the replica's failover is all or nothing, and it did
         * nothing. Anything else (no answer, a 5xx) may have come after the replica acted.
         */
        bool refused = local->domain == VR_SENDER_ERROR &&
                       local->code != VR_SENDER_ERROR_UNREACHABLE &&
                       local->code != VR_SENDER_ERROR_NO_SPACE;

        if (refused) {
            job->failover_unknown = false;
            g_set_error(&job->error, VR_SCHEDULER_ERROR,
                        g_error_matches(local, VR_SENDER_ERROR, VR_SENDER_ERROR_CONFLICT)
                            ? VR_SCHEDULER_ERROR_REFUSED
                            : VR_SCHEDULER_ERROR_FAILED,
                        "the final cycle %" PRIu64 " is on the replica, but it refused to fail "
                        "over (nothing changed there; the domain stays shut off here and may be "
                        "started again): %s",
                        job->result.cycle, local->message);
        } else {
            job->failover_unknown = true;
            vr_scheduler_unknown_outcome(job, local->message);
        }
        goto out;
    }
    answer = json_tokener_parse(reply);
    if (answer == NULL || !json_object_object_get_ex(answer, "epoch", &value) ||
        !json_object_is_type(value, json_type_int)) {
        g_autofree char *why = g_strdup_printf("its answer is not understood: %.200s", reply);

        job->failover_unknown = true;
        vr_scheduler_unknown_outcome(job, why);
        goto out;
    }
    job->failover_epoch = (uint64_t)json_object_get_int64(value);
    g_free(job->failover_standby);
    job->failover_standby = g_strdup(vr_json_get_string(answer, "domain"));
    g_free(job->failover_identity);
    job->failover_identity = g_strdup(vr_json_get_string(answer, "identity"));
    if (job->failover_reverse != NULL && job->failover_identity == NULL) {
        g_set_error(&job->error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "the replica failed over, but its answer does not say its identity: no "
                    "reverse replication (%.200s); domain '%s' stays shut off and guarded here",
                    reply, job->domain);
        job->failover_unknown = true;
        goto out;
    }
    job->ok = true;
out:
    /* Definitely not failed over: the guard goes, the domain may start again. */
    if (!job->ok && job->failover_guarded && !job->failover_unknown)
        vr_scheduler_unguard_domain(job);
    if (dom != NULL)
        virDomainFree(dom);
}

/* Queue the planned failover's worker (no cycle runs). */
static void
vr_scheduler_failover_begin(VrSchedulerJob *job)
{
    job->failover_waiting = false;
    vr_scheduler_cancel_timer(job);
    job->running = true;
    job->cycle_planned = true;
    job->cycle_final = false;
    job->last_start = g_get_monotonic_time();
    vr_scheduler_progress_reset(job);
    job->cycle_base = job->acked;
    job->cycle_resync = false;
    job->failover_off = false;
    job->failover_forced = false;
    job->failover_cycle_ok = false;
    job->failover_guarded = false;
    job->failover_unknown = false;
    g_clear_object(&job->cancellable);
    job->cancellable = g_cancellable_new();
    vr_primary_result_clear(&job->result);
    g_clear_error(&job->error);
    g_info("relationship '%s': planned failover of domain '%s' begins", job->id, job->domain);
    g_thread_pool_push(job->scheduler->pool, job, NULL);
}

/* A planned failover's answer that waits for the reverse handler. */
/* The members of a planned failover's answer (docs/api.md) that @job knows, into @obj. */
static void
vr_scheduler_failover_answer(const VrSchedulerJob *job, json_object *obj)
{
    json_object_object_add(obj, "relationship", json_object_new_string(job->id));
    json_object_object_add(obj, "domain", json_object_new_string(job->domain));
    json_object_object_add(obj, "cycle", json_object_new_uint64(job->failover_cycle));
    json_object_object_add(obj, "epoch", json_object_new_uint64(job->epoch));
    json_object_object_add(obj, "state", json_object_new_string("FailedOver"));
    json_object_object_add(
        obj, "standby",
        job->failover_standby != NULL ? json_object_new_string(job->failover_standby) : NULL);
    json_object_object_add(obj, "bytes", json_object_new_uint64(job->result.bytes));
    json_object_object_add(obj, "forced", json_object_new_boolean(job->failover_forced));
}

typedef struct {
    VrSchedulerToken *token;
    char *id;
    json_object *obj; /* the answer so far (a "warning" maybe) */
} VrSchedulerReverseWait;

/*
 * The reverse handler ended (VrSchedulerReverseFunc): the planned failover's answer, and on
 * success the relationship leaves this scheduler. Nothing but a message once the scheduler
 * is gone (its free answered the request).
 */
static void
vr_scheduler_reverse_done(GObject *source, GAsyncResult *result, gpointer data)
{
    VrSchedulerReverseWait *wait = data;
    VrScheduler *scheduler = wait->token->scheduler;
    VrSchedulerJob *job = scheduler != NULL ? g_hash_table_lookup(scheduler->jobs, wait->id) : NULL;
    GTask *task = job != NULL ? g_steal_pointer(&job->failover_task) : NULL;
    json_object *obj = g_steal_pointer(&wait->obj);
    g_autoptr(GError) local = NULL;

    if (!g_task_propagate_boolean(G_TASK(result), &local)) {
        g_prefix_error(&local, "failed over to the replica host (state FailedOver), "
                               "but this host could not become its replica: ");
        g_warning("relationship '%s': %s", wait->id, local->message);
        json_object_put(obj);
        if (task != NULL)
            g_task_return_error(task, g_steal_pointer(&local));
    } else if (job == NULL) {
        json_object_put(obj);
    } else {
        g_info("relationship '%s': reversed: '%s' replicates to this host, domain '%s' is "
               "its standby here (epoch %" PRIu64 ")",
               job->id, job->failover_identity, job->domain, job->epoch);
        vr_scheduler_failover_answer(job, obj);
        json_object_object_add(obj, "reverse", json_object_new_boolean(true));
        json_object_object_add(obj, "reverse_primary",
                               json_object_new_string(job->failover_identity));
        if (task != NULL)
            g_task_return_pointer(task, obj, vr_scheduler_json_free);
        else
            json_object_put(obj);
        g_clear_object(&task);
        /* The row is the replica role's now: this scheduler lets go of it. */
        g_hash_table_remove(scheduler->jobs, wait->id);
    }
    g_clear_object(&task);
    vr_scheduler_token_unref(wait->token);
    g_free(wait->id);
    g_free(wait);
}

/* The planned failover's outcome: the state database, the guard, the request's answer. */
static void
vr_scheduler_failover_done(VrSchedulerJob *job)
{
    GTask *task = g_steal_pointer(&job->failover_task);
    g_autoptr(GError) local = NULL;
    VrStateCycle cycle = { 0 };

    job->running = false;
    job->cycle_planned = false;
    if (job->failover_cycle_ok) {
        cycle.cycle = job->result.cycle;
        cycle.result = VR_STATE_CYCLE_OK;
        cycle.flags = job->result.flags;
        cycle.started_ms = job->result.started_ms;
        cycle.finished_ms = job->result.finished_ms;
        cycle.bytes = job->result.bytes;
        cycle.wire_bytes = job->result.wire_bytes;
        job->acked = job->result.cycle;
        job->final_ok = true;
        if (!vr_state_cycle_add(job->scheduler->state, job->id, &cycle, &local)) {
            g_warning("relationship '%s': cannot record the final cycle: %s", job->id,
                      local->message);
            g_clear_error(&local);
        }
    }
    if (job->ok && vr_scheduler_domain_active(job)) {
        /* Started here after the final cycle (a start the hook could not refuse). */
        job->failed_over = true;
        job->paused = false;
        job->epoch = job->failover_epoch;
        job->failover_cycle = job->result.cycle;
        vr_scheduler_save_state(job);
        g_clear_error(&job->error);
        g_set_error(&job->error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_FAILED,
                    "split brain: the replica host runs '%s' from cycle %" PRIu64 " (epoch %" PRIu64
                    "), and domain '%s' was started here meanwhile; stop one of them (what "
                    "this one wrote since the final cycle is not on the replica)",
                    job->failover_standby != NULL ? job->failover_standby : "the domain",
                    job->failover_cycle, job->epoch, job->domain);
        g_warning("relationship '%s': %s", job->id, job->error->message);
        if (task != NULL)
            g_task_return_error(task, g_error_copy(job->error));
        g_clear_object(&task);
        return;
    }
    if (job->ok) {
        json_object *obj = json_object_new_object();

        job->failed_over = true;
        job->paused = false;
        job->epoch = job->failover_epoch;
        job->failover_cycle = job->result.cycle;
        if (!vr_scheduler_guard_domain(job, VR_SCHEDULER_MARKER_OLD_PRIMARY, &local)) {
            g_warning("relationship '%s': %s: nothing keeps it from starting here", job->id,
                      local->message);
            json_object_object_add(obj, "warning", json_object_new_string(local->message));
            g_clear_error(&local);
        }
        vr_scheduler_save_state(job);
        if (job->failover_reverse != NULL) {
            VrSchedulerReverse reverse = {
                .relationship = job->id,
                .domain = job->domain,
                .peer = job->failover_identity,
                .cycle = job->failover_cycle,
                .epoch = job->epoch,
                .disks = (const char *const *)job->disks,
                .digests = job->result.digests,
            };

            VrSchedulerReverseWait *wait = g_new0(VrSchedulerReverseWait, 1);

            /* The answer waits for the reverse set-up (a copy of every disk, in the
             * background); the request stays the job's meanwhile, so no other one starts. */
            g_atomic_int_inc(&job->scheduler->token->ref);
            wait->token = job->scheduler->token;
            wait->id = g_strdup(job->id);
            wait->obj = obj;
            job->failover_task = g_steal_pointer(&task);
            job->scheduler->reverse_func(&reverse, job->scheduler->reverse_data,
                                         vr_scheduler_reverse_done, wait);
            return;
        }
        g_info("relationship '%s': planned failover done: '%s' runs on the replica host from "
               "cycle %" PRIu64 " (epoch %" PRIu64 "); domain '%s' stays shut off here",
               job->id, job->failover_standby != NULL ? job->failover_standby : "?",
               job->failover_cycle, job->epoch, job->domain);
        vr_scheduler_failover_answer(job, obj);
        if (task != NULL)
            g_task_return_pointer(task, obj, vr_scheduler_json_free);
        else
            json_object_put(obj);
    } else {
        g_warning("relationship '%s': planned failover failed: %s", job->id, job->error->message);
        if (job->failover_off && !job->failover_unknown && vr_scheduler_domain_active(job)) {
            /* Started again meanwhile (a refusal, then a start): replicate it as before. */
            job->paused = false;
            vr_scheduler_save_state(job);
            vr_scheduler_schedule(job, 0);
        } else if (job->failover_off) {
            /* Shut off: no cycles until it starts again (the hook's "started" resumes). */
            job->paused = true;
            vr_scheduler_save_state(job);
        } else {
            /* Nothing changed: the schedule goes on as it was before the request. */
            gint64 wait = job->failover_next - g_get_monotonic_time();

            vr_scheduler_schedule(job, (guint)CLAMP(wait / G_USEC_PER_SEC, 1, job->frequency));
        }
        if (task != NULL)
            g_task_return_error(task, g_error_copy(job->error));
    }
    g_clear_object(&task);
}

void
vr_scheduler_planned_failover_async(VrScheduler *scheduler, const char *id, json_object *request,
                                    GAsyncReadyCallback callback, gpointer user_data)
{
    GTask *task = g_task_new(NULL, NULL, callback, user_data);
    g_autoptr(GError) error = NULL;
    VrSchedulerJob *job = vr_scheduler_find(scheduler, id, &error);
    guint timeout = VR_SCHEDULER_DEFAULT_SHUTDOWN_TIMEOUT;
    bool force = false;
    bool reverse = false;
    json_object *reverse_peer = NULL;

    if (job == NULL)
        goto fail;
    json_object_object_foreach (request, key, value) {
        if (strcmp(key, "force") == 0 || strcmp(key, "reverse") == 0) {
            if (!json_object_is_type(value, json_type_boolean)) {
                vr_scheduler_invalid(&error, "'%s' must be true or false", key);
                goto fail;
            }
            if (strcmp(key, "force") == 0)
                force = json_object_get_boolean(value);
            else
                reverse = json_object_get_boolean(value);
        } else if (strcmp(key, "reverse_peer") == 0 &&
                   json_object_is_type(value, json_type_object)) {
            reverse_peer = value;
        } else if (strcmp(key, "shutdown_timeout") != 0) {
            vr_scheduler_invalid(&error, "planned-failover takes no member '%s'", key);
            goto fail;
        }
    }
    if (!vr_scheduler_get_uint(request, "shutdown_timeout", 1, VR_SCHEDULER_MAX_SHUTDOWN_TIMEOUT,
                               &timeout, &error))
        goto fail;
    if (reverse && (reverse_peer == NULL || scheduler->reverse_func == NULL)) {
        vr_scheduler_invalid(&error, "reverse replication needs this host's replica role "
                                     "([replica] enabled, with its server-name): the old "
                                     "primary becomes the replica");
        goto fail;
    }
    if (job->failed_over || job->failover_task != NULL) {
        g_set_error(&error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_BUSY, "domain '%s' %s",
                    job->domain,
                    job->failed_over ? "failed over to its replica host already (state FailedOver)"
                                     : "is failing over already");
        goto fail;
    }
    if (job->suspended || job->refused) {
        g_set_error(&error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_BUSY,
                    "replication of domain '%s' is %s: resume it first", job->domain,
                    job->suspended ? "suspended" : "stopped by an error");
        goto fail;
    }
    if (job->acked == 0 || job->resync_next || job->awaiting_import || job->export_dir != NULL) {
        g_set_error(&error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_BUSY,
                    "the replica of domain '%s' is not complete (state %s): a planned failover "
                    "needs an acknowledged cycle to build the final one on",
                    job->domain, vr_scheduler_job_state(job));
        goto fail;
    }
    job->failover_task = task;
    if (job->failover_reverse != NULL)
        json_object_put(job->failover_reverse);
    job->failover_reverse = reverse ? json_object_get(reverse_peer) : NULL;
    job->failover_next = job->last_start + (gint64)job->frequency * G_USEC_PER_SEC;
    job->shutdown_timeout = timeout;
    job->force = force;
    vr_scheduler_cancel_timer(job);
    if (job->running) {
        /* No new cycle from now on; the one that runs ends first (a final one too). */
        job->failover_waiting = true;
        return;
    }
    vr_scheduler_failover_begin(job);
    return;

fail:
    g_task_return_error(task, g_steal_pointer(&error));
    g_object_unref(task);
}

json_object *
vr_scheduler_planned_failover_finish(VrScheduler *scheduler, GAsyncResult *result, GError **error)
{
    return g_task_propagate_pointer(G_TASK(result), error);
}

/* ---- commands --------------------------------------------------------------------------- */

static VrSchedulerJob *
vr_scheduler_find(VrScheduler *scheduler, const char *name, GError **error)
{
    GHashTableIter iter;
    gpointer value;

    g_hash_table_iter_init(&iter, scheduler->jobs);
    while (g_hash_table_iter_next(&iter, NULL, &value)) {
        VrSchedulerJob *job = value;

        if (strcmp(job->id, name) == 0 || strcmp(job->domain, name) == 0)
            return job;
    }
    g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_UNKNOWN_DOMAIN,
                "domain '%s' is not replicated from this host", name);
    return NULL;
}

bool
vr_scheduler_disable(VrScheduler *scheduler, const char *id, GError **error)
{
    VrSchedulerJob *job = vr_scheduler_find(scheduler, id, error);

    if (job == NULL)
        return false;
    if (job->running || job->failover_task != NULL) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_BUSY,
                    "a cycle of domain '%s' is running: disable it when the cycle ended (or "
                    "suspend it first)",
                    job->domain);
        return false;
    }
    if (!vr_state_relationship_delete(scheduler->state, job->id, error))
        return false;
    /* Failed over away: the guard that kept the domain from starting goes with it. */
    if (job->failed_over)
        vr_scheduler_unguard_domain(job);
    g_info("relationship '%s': replication of domain '%s' disabled", job->id, job->domain);
    g_hash_table_remove(scheduler->jobs, job->id);
    return true;
}

bool
vr_scheduler_action(VrScheduler *scheduler, const char *id, const char *action, GError **error)
{
    VrSchedulerJob *job = vr_scheduler_find(scheduler, id, error);

    if (job == NULL)
        return false;
    if (job->failed_over || job->failover_task != NULL) {
        g_set_error(error, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_BUSY, "domain '%s' %s: no %s",
                    job->domain,
                    job->failed_over ? "failed over to its replica host (state FailedOver)"
                                     : "is failing over",
                    action);
        return false;
    }
    if (strcmp(action, "suspend") == 0) {
        job->suspended = true;
        vr_scheduler_cancel_timer(job);
    } else if (strcmp(action, "resume") == 0) {
        job->suspended = false;
        job->refused = false;
        if (!job->running)
            vr_scheduler_schedule(job, 0);
    } else if (strcmp(action, "resync") == 0) {
        job->resync_next = true;
        if (!job->running && !job->suspended)
            vr_scheduler_schedule(job, 0);
    } else {
        return vr_scheduler_invalid(error, "unknown action '%s'", action);
    }
    return vr_scheduler_job_save(job, NULL, vr_scheduler_job_state(job), error);
}

void
vr_scheduler_sync_async(VrScheduler *scheduler, const char *id, GCancellable *cancellable,
                        GAsyncReadyCallback callback, gpointer user_data)
{
    GTask *task = g_task_new(NULL, cancellable, callback, user_data);
    g_autoptr(GError) error = NULL;
    VrSchedulerJob *job = vr_scheduler_find(scheduler, id, &error);

    if (job == NULL) {
        g_task_return_error(task, g_steal_pointer(&error));
        g_object_unref(task);
        return;
    }
    if (job->failed_over || job->failover_task != NULL) {
        g_task_return_new_error(task, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_BUSY,
                                "domain '%s' %s: no more cycles from this host", job->domain,
                                job->failed_over
                                    ? "failed over to its replica host (state FailedOver)"
                                    : "is failing over");
        g_object_unref(task);
        return;
    }
    if (job->suspended || job->refused) {
        g_task_return_new_error(task, VR_SCHEDULER_ERROR, VR_SCHEDULER_ERROR_BUSY,
                                "replication of domain '%s' is %s: resume it first", job->domain,
                                job->suspended ? "suspended" : "stopped by an error");
        g_object_unref(task);
        return;
    }
    job->waiters = g_list_append(job->waiters, task);
    if (!job->running)
        vr_scheduler_schedule(job, 0);
}

json_object *
vr_scheduler_sync_finish(VrScheduler *scheduler, GAsyncResult *result, GError **error)
{
    return g_task_propagate_pointer(G_TASK(result), error);
}

void
vr_scheduler_notify(VrScheduler *scheduler, const char *domain, const char *operation)
{
    VrSchedulerJob *job = vr_scheduler_find(scheduler, domain, NULL);

    if (job == NULL || strcmp(job->domain, domain) != 0 || job->failed_over)
        return;
    if (strcmp(operation, "started") == 0 || strcmp(operation, "reconnect") == 0) {
        job->migrating = false;
        vr_scheduler_domain_starts(job);
        if (!job->running && !job->suspended && !job->refused)
            vr_scheduler_schedule(job, 0);
    } else if (strcmp(operation, "prepare") == 0 || strcmp(operation, "start") == 0) {
        vr_scheduler_domain_starts(job);
    } else if (strcmp(operation, "migrate") == 0) {
        job->migrating = true;
    } else if (strcmp(operation, "stopped") == 0) {
        bool migrated = job->migrating;

        job->migrating = false;
        if (!migrated)
            vr_scheduler_domain_stopped(job);
    } else if (strcmp(operation, "release") == 0) {
        job->migrating = false;
    }
}

bool
vr_scheduler_is_running(VrScheduler *scheduler, const char *id)
{
    VrSchedulerJob *job = vr_scheduler_find(scheduler, id, NULL);

    return job != NULL && job->running;
}

const char *
vr_scheduler_health(VrScheduler *scheduler, const VrStateRelationship *rel,
                    const VrStateStats *stats)
{
    VrSchedulerJob *job = vr_scheduler_find(scheduler, rel->id, NULL);
    guint frequency = job != NULL ? job->frequency : scheduler->config->primary.default_frequency;
    int64_t since_ms = stats->last_ok_ms > 0 ? g_get_real_time() / 1000 - stats->last_ok_ms : -1;
    int64_t critical_ms =
        (int64_t)frequency * 1000 * scheduler->config->primary.rpo_critical_factor;

    if (g_strcmp0(rel->state, "Error") == 0 ||
        g_strcmp0(rel->state, "ResynchronizationRequired") == 0)
        return "Critical";
    /* Failed over on purpose: the replica host runs the domain; nothing is pending here. */
    if (g_strcmp0(rel->state, "FailedOver") == 0)
        return "Normal";
    /* The replica has no copy until the export is imported: not a failure, not yet healthy. */
    if (g_strcmp0(rel->state, "WaitingForInitialReplication") == 0)
        return "Warning";
    /* Shut off after its final cycle: the replica has all of its data, however long ago. */
    if (g_strcmp0(rel->state, "PausedDomainOff") == 0 && (job == NULL || job->final_ok))
        since_ms = -1;
    if (since_ms > critical_ms)
        return "Critical";
    if (stats->cycles_failed > 0 || stats->cycles_missed > 0 ||
        since_ms > (int64_t)frequency * 2000)
        return "Warning";
    return "Normal";
}
