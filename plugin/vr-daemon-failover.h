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

G_END_DECLS
