/*
 * vr-failpoint.h: simulated crashes at named steps, for the crash-matrix tests
 *
 * A failpoint is a named step of a persistence sequence (the replica store and the replica
 * sink name theirs: docs/replica-store.md). Failpoints exist only in a build configured
 * with -Dfailpoints=true, which defines VR_FAILPOINTS (./run test builds so); in any other
 * build every call below compiles to nothing and vr_failpoints_built() is false, so a
 * crash test skips. A test arms one failpoint for a process through the environment:
 *
 *   VR_FAILPOINT=<name>:exit    the process calls _exit(VR_FAILPOINT_EXIT_STATUS) when it
 *                               reaches the step <name>: no cleanup, no atexit handlers,
 *                               no flush of stdio, as if it had been killed there
 *   VR_FAILPOINT=<name>:kill    the process sends itself SIGKILL there (a real kill -9:
 *                               the parent sees the signal, not an exit status)
 *   VR_FAILPOINT=<name>:sleep   the thread that reaches the step sleeps
 *                               VR_FAILPOINT_SLEEP_SECONDS, then goes on: a slow step
 *                               (a big copy) made observable in a test, nothing else
 *
 * An unarmed failpoint costs one getenv(); an unknown action never fires.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>

G_BEGIN_DECLS

/* The exit status of a process stopped at a failpoint (EX_TEMPFAIL). */
#define VR_FAILPOINT_EXIT_STATUS 75

/* How long the action "sleep" delays its step. */
#define VR_FAILPOINT_SLEEP_SECONDS 4

#ifdef VR_FAILPOINTS

/* True: this build has failpoints. */
static inline bool
vr_failpoints_built(void)
{
    return true;
}

/* True when VR_FAILPOINT arms @name (so a caller can first make the step well-defined). */
bool vr_failpoint_armed(const char *name);

/* Return at once, unless VR_FAILPOINT arms @name: then stop the process (or sleep) as it
 * says. */
void vr_failpoint(const char *name);

#else /* !VR_FAILPOINTS */

static inline bool
vr_failpoints_built(void)
{
    return false;
}

static inline bool
vr_failpoint_armed(const char *name)
{
    return false;
}

static inline void
vr_failpoint(const char *name)
{
}

#endif /* VR_FAILPOINTS */

G_END_DECLS
