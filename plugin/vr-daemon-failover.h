/*
 * vr-daemon-failover.h: the failover requests of virt-replicad's local API (replica role)
 *
 *   POST /v1/relationships/{x}/failover           {"point": N | "latest", "test": bool}
 *   POST /v1/relationships/{x}/failover-complete
 *   POST /v1/relationships/{x}/failover-cancel    {"test": bool}
 *
 * Each answers 200 with {"relationship", "domain", "point", "epoch", "state", "test"}, or an
 * error in the API's style (docs/api.md, "Failover"): 400 invalid, 404 unknown-domain or
 * unknown-point, 409 wrong-state (the state named), 500 failed, 503 no-replica-role.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <libsoup/soup.h>

#include "vr-failover.h"
#include "vr-scheduler.h"

G_BEGIN_DECLS

/*
 * Answer @msg, a POST of @action ("failover", "failover-complete", "failover-cancel") on
 * relationship @name. @failover NULL: the replica role is off (503). Called from the
 * daemon's main context; blocks it while the failover runs.
 */
void vr_daemon_failover_post(VrFailover *failover, SoupServerMessage *msg, const char *name,
                             const char *action);

/* Whether @action is one of the above. */
bool vr_daemon_failover_is_action(const char *action);

/* What the planned failover's handlers use (borrowed; owned by the daemon). */
typedef struct {
    VrFailover *failover;   /* NULL: no replica role (with libvirt) */
    VrScheduler *scheduler; /* NULL: no primary role */
    VrState *state;
    virConnectPtr conn;
    char *identity; /* this host's certificate identity, or NULL */
} VrDaemonPlanned;

/*
 * The replica sink's planned-failover handler (VrReplicaSinkFailoverFunc, @user_data the
 * VrDaemonPlanned): POST /v1/failover/{relationship} from the primary's daemon, {"cycle": k,
 * "epoch": e, "digests": {"vda": hex, ...}, "reverse": {...}} ("reverse" optional, nothing
 * else), answered with vr_failover_start_planned()'s result and "identity" (this host's
 * certificate identity). With "reverse" ({"server", "port", "address", "frequency"}: the
 * old primary's replica role), the failover overlays get B(k) and the relationship becomes
 * this host's primary one, adopted by the scheduler (undone with the failover when that
 * fails). Its errors as receiver errors: CONFLICT and NO_POINT 409, NOT_FOUND 404, INVALID
 * 400, FAILED 500.
 */
json_object *vr_daemon_failover_planned(const char *relationship, const char *peer_name,
                                        json_object *request, gpointer user_data, GError **error);

/*
 * The scheduler's reverse handler (VrSchedulerReverseFunc, @user_data the VrDaemonPlanned):
 * this host, the old primary, becomes the replica (vr_failover_reverse_adopt_async(): the
 * copies in the background, @callback on the main context when it ended).
 */
void vr_daemon_failover_reverse(const VrSchedulerReverse *reverse, gpointer user_data,
                                GAsyncReadyCallback callback, gpointer callback_data);

/*
 * POST /v1/relationships/{x}/reverse (replica-reverse, docs/failover.md): on a host that
 * failed over (role replica, FailedOver), {"server", "port", "address", "frequency"}: the
 * relationship becomes its primary one, replicating to the old primary's replica role, a
 * hash resynchronization first. On the old primary, {"accept": true, "primary": identity}
 * (the identity defaults to the relationship's server name): its shut-off domain becomes
 * the standby, its disk the seed (point 1 at its epoch), the relationship the replica
 * role's; that copy runs in the background (the main loop goes on) and @callback gets the
 * answer when it ended; a second --accept of the same relationship meanwhile fails with
 * VR_FAILOVER_ERROR_BUSY. The result of _finish() (transfer full), or NULL with an error of
 * VR_FAILOVER_ERROR. Called from the main context.
 */
void vr_daemon_failover_reverse_request_async(VrDaemonPlanned *planned, const char *name,
                                              json_object *request, GAsyncReadyCallback callback,
                                              gpointer user_data);
json_object *vr_daemon_failover_reverse_request_finish(GAsyncResult *result, GError **error);

/*
 * At the daemon's start, once the scheduler's reverse handler is set: the reverse set-ups
 * that a stop interrupted are finished (vr_failover_reverse_resume()); the scheduler lets go
 * of each relationship whose set-up ended well. Nothing without the replica role.
 */
void vr_daemon_failover_resume(VrDaemonPlanned *planned);

G_END_DECLS
