/*
 * vr-scheduler.h: the primary role of virt-replicad: replicated domains and their cycles
 *
 * One entry per relationship this host replicates (role primary in the state database),
 * loaded at start and made by vr_scheduler_enable(). Each has a schedule: a cycle every
 * `frequency` seconds, counted from the start of the previous one; a cycle that overruns
 * delays the next one (cycles never stack), and at most `[daemon] max-active-transfers`
 * cycles of the host run at once (a thread pool of that size: the others wait their turn).
 * A cycle is vr_primary_run_cycle() from the last acknowledged cycle, in a worker thread;
 * its outcome goes to the state database (history, statistics) on the daemon's thread.
 *
 * Outcomes: acknowledged → history "ok", the next cycle builds on it; the replica
 * unreachable → "missed" (Hyper-V counts these); any other failure → "failed", the same
 * cycle is cut again from the same base next time; the tracking lost → the next cycle is
 * a hash resynchronization (state ResynchronizationRequired until it is done); a refusal by
 * the replica (a stale epoch, an unauthorized primary) → state Error until resumed.
 * A domain that is not running has no cycles (nothing to cut); they start when it runs.
 * When the libvirt hook says it stopped (vr_scheduler_notify()), its final cycle is read
 * from the closed images (vr_primary_run_offline_cycle()) and the relationship pauses
 * (state PausedDomainOff) until the hook says it started: docs/hook.md.
 *
 * Everything here runs on the thread-default main context of the thread that made the
 * scheduler, except vr_primary_run_cycle() itself.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <gio/gio.h>
#include <glib.h>
#include <json-c/json.h>
#include <libvirt/libvirt.h>

#include "vr-config.h"
#include "vr-state.h"

G_BEGIN_DECLS

#define VR_SCHEDULER_ERROR (vr_scheduler_error_quark())
GQuark vr_scheduler_error_quark(void);

/* Each code is the API's error code (docs/api.md) of the same name. */
typedef enum {
    VR_SCHEDULER_ERROR_INVALID,          /* "invalid": a bad request member, named */
    VR_SCHEDULER_ERROR_UNKNOWN_DOMAIN,   /* "unknown-domain" */
    VR_SCHEDULER_ERROR_ALREADY_ENABLED,  /* "already-enabled" */
    VR_SCHEDULER_ERROR_BUSY,             /* "busy": a cycle of it runs */
    VR_SCHEDULER_ERROR_UNSUPPORTED,      /* "unsupported": a disk that cannot be replicated */
    VR_SCHEDULER_ERROR_CYCLE_FAILED,     /* "cycle-failed": the message is the cycle's error */
    VR_SCHEDULER_ERROR_FAILED,           /* "state" and others: the message says */
    VR_SCHEDULER_ERROR_SHUTDOWN_TIMEOUT, /* "shutdown-timeout": the guest did not shut down */
    VR_SCHEDULER_ERROR_REFUSED,          /* "refused": the replica refused (its message) */
} VrSchedulerErrorCode;

/* The API's error code of @error ("invalid", ...), for any error of this domain. */
const char *vr_scheduler_error_code(const GError *error);

typedef struct _VrScheduler VrScheduler;

/*
 * The primary role: every primary relationship of @state gets its schedule. @config and
 * @state are borrowed and outlive the scheduler; @conn is the libvirt connection (borrowed).
 * (transfer full)
 */
VrScheduler *vr_scheduler_new(const VrConfig *config, VrState *state, virConnectPtr conn,
                              GError **error);

/* Cancel running cycles, wait for them to end (their teardown runs), free. NULL-safe. */
void vr_scheduler_free(VrScheduler *scheduler);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrScheduler, vr_scheduler_free)

/*
 * Enable replication from the JSON request of POST /v1/relationships (docs/api.md);
 * *@id_out gets the new relationship's id. The first cycle is cut at once.
 */
bool vr_scheduler_enable(VrScheduler *scheduler, json_object *request, char **id_out,
                         GError **error);

/* Disable (BUSY while a cycle runs). */
bool vr_scheduler_disable(VrScheduler *scheduler, const char *id, GError **error);

/* suspend, resume, resync (docs/api.md). */
bool vr_scheduler_action(VrScheduler *scheduler, const char *id, const char *action,
                         GError **error);

/*
 * Cut a cycle of @id now, or join the one that runs; @callback runs on the scheduler's
 * context when it ended. The result is a json_object: {"seq", "bytes", "duration_ms"}.
 */
void vr_scheduler_sync_async(VrScheduler *scheduler, const char *id, GCancellable *cancellable,
                             GAsyncReadyCallback callback, gpointer user_data);
json_object *vr_scheduler_sync_finish(VrScheduler *scheduler, GAsyncResult *result, GError **error);

/*
 * The health of primary relationship @rel from its statistics (docs/api.md): Critical
 * when the state is Error or ResynchronizationRequired or the RPO passed
 * rpo-critical-factor times the frequency; Warning when a cycle failed or was missed in the
 * monitoring interval or the RPO passed twice the frequency; else Normal.
 */
const char *vr_scheduler_health(VrScheduler *scheduler, const VrStateRelationship *rel,
                                const VrStateStats *stats);

/*
 * The libvirt hook told the daemon about @domain (docs/hook.md): "started" and
 * "reconnect" cancel a final cycle that runs, end the pause and cut a cycle now (its health
 * check comes first); "prepare" and "start" (not sent by our hook) only cancel a final
 * cycle; "migrate" holds the cycles while the domain comes to this host; "stopped" ends
 * that hold, or else (neither suspended nor refused) queues the final cycle from the closed
 * images and pauses (state PausedDomainOff); "release" ends the hold. Domains this host
 * does not replicate are ignored.
 */
void vr_scheduler_notify(VrScheduler *scheduler, const char *domain, const char *operation);

/*
 * What the running cycle of @id does, for the status (docs/api.md, "progress"): its phase,
 * disk, figures, the fraction of the cycle done, a rate and an estimate of the time left.
 * NULL when no cycle of @id runs. (transfer full)
 */
json_object *vr_scheduler_progress_json(VrScheduler *scheduler, const char *id);

/*
 * The bytes the guest wrote since the cut of the last acknowledged cycle of @id (the dirty
 * count of that cycle's bitmap, measured every few seconds and after each cycle), or -1
 * when not known: no cycle acknowledged yet, the domain not running, the tracking lost.
 */
int64_t vr_scheduler_pending_bytes(VrScheduler *scheduler, const char *id);

/*
 * The planned failover of @id (docs/failover.md, "Planned failover"), from the JSON request
 * of POST /v1/relationships/{id}/planned-failover ({"shutdown_timeout": S, "force": bool,
 * "reverse": bool}, each optional): no new cycles, a running one ends first; the domain is
 * shut down (ACPI, polled up to S seconds, default 120; then, with "force", destroyed:
 * SIGTERM first, so QEMU stores the persistent bitmaps); its final cycle is read from the
 * closed images (vr_primary_run_offline_cycle(), a replay of an earlier cut is followed by
 * one more); the replica checks it holds exactly that state and fails over
 * (vr_sender_post_failover()). Then the relationship is FailedOver at the replica's epoch,
 * has no more cycles, and the domain's definition carries the marker state "old-primary"
 * that the libvirt hook refuses to start (split brain). A guest that does not shut down in
 * time without "force": SHUTDOWN_TIMEOUT, nothing changed, replication goes on. A failure
 * after the shutdown: the domain stays off, the relationship PausedDomainOff, the error
 * says which step failed; the replica's side is all or nothing. The result: {"relationship",
 * "domain", "cycle", "epoch", "state", "standby", "bytes", "forced"}.
 *
 * With "reverse": true the request must also carry "reverse_peer": {"server", "port",
 * "address"}, this host's replica role as the replica host will reach it (the daemon adds
 * it; INVALID without). The replica host then adds B(final cycle) to its failover overlays
 * and becomes the primary of the same relationship, and here the reverse handler
 * (vr_scheduler_set_reverse_handler()) makes the domain the standby of it; the relationship
 * then leaves this scheduler (its row is the replica role's). The result has "reverse":
 * true and "reverse_primary" (the new primary's certificate identity).
 */
void vr_scheduler_planned_failover_async(VrScheduler *scheduler, const char *id,
                                         json_object *request, GAsyncReadyCallback callback,
                                         gpointer user_data);
json_object *vr_scheduler_planned_failover_finish(VrScheduler *scheduler, GAsyncResult *result,
                                                  GError **error);

/* What the reverse handler gets: the relationship as this host replicates it from now on. */
typedef struct {
    const char *relationship;
    const char *domain; /* the domain here, shut off: the standby from now on */
    const char *peer;   /* the new primary's certificate identity */
    uint64_t cycle;     /* the final cycle: the point both sides hold */
    uint64_t epoch;     /* the relationship's epoch after the failover */
    /* The final cycle's disks (targets) and, in that order, the stream digest of each
     * (uint8_t[32]): a failback adopts the overlay it ran on as that point. */
    const char *const *disks;
    const GArray *digests;
} VrSchedulerReverse;

/*
 * The reverse handler: it may take long (a copy of every disk), so it runs in the
 * background and completes @callback (@callback_data) on the main context with a GTask
 * whose value is a boolean (g_task_propagate_boolean(): false with the error). @reverse is
 * valid during the call only. The planned failover's answer waits for it.
 */
typedef void (*VrSchedulerReverseFunc)(const VrSchedulerReverse *reverse, gpointer user_data,
                                       GAsyncReadyCallback callback, gpointer callback_data);

/* Set the function that makes this host the replica after a planned failover --reverse. */
void vr_scheduler_set_reverse_handler(VrScheduler *scheduler, VrSchedulerReverseFunc func,
                                      gpointer user_data);

/* Whether this host's reverse set-up of relationship @id runs (vr_failover_reverse_running()). */
typedef bool (*VrSchedulerReversingFunc)(const char *id, gpointer user_data);

/*
 * Set the predicate that holds back the cycles of a relationship whose reverse set-up runs
 * (its disks are being copied into the stores it becomes the replica of): no cycle, no
 * final cycle starts for it meanwhile, not even from a timer; it is tried again one period
 * later.
 */
void vr_scheduler_set_reversing_func(VrScheduler *scheduler, VrSchedulerReversingFunc func,
                                     gpointer user_data);

/*
 * Adopt the relationship @id that the state database now records with the primary role
 * (the replica host after a planned failover with reverse replication): it is scheduled as
 * at a start, its first cycle after one period (or a sync). Its domain XML is not sent to
 * the replica (the old primary's own domain is the standby there).
 */
bool vr_scheduler_adopt(VrScheduler *scheduler, const char *id, GError **error);

/*
 * Let go of @id without touching the state database (its row is another role's now: the
 * old primary accepted to become the replica). Nothing when there is no job or the
 * scheduler's own planned failover holds it (it lets go itself). When a cycle runs, the
 * job goes when that cycle ended (none starts meanwhile): its sync waiters get its answer,
 * nothing of it is recorded over the row; sync requests waiting without a cycle fail.
 */
void vr_scheduler_forget(VrScheduler *scheduler, const char *id);

/* The marker state of a primary's own domain after a planned failover away. */
#define VR_SCHEDULER_MARKER_OLD_PRIMARY "old-primary"
/* The same marker from the shutdown of a planned failover until the replica's answer is
 * known (the libvirt hook refuses both). */
#define VR_SCHEDULER_MARKER_FAILING_OVER "failing-over"

/* Whether a cycle of @id runs now. */
bool vr_scheduler_is_running(VrScheduler *scheduler, const char *id);

G_END_DECLS
