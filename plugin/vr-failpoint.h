/*
 * vr-failpoint.h: simulated crashes at named steps, for the crash-matrix tests
 *
 * A failpoint is a named step of a persistence sequence (the replica store names its own:
 * docs/replica-store.md). A test arms one for a process through the environment:
 *
 *   VR_FAILPOINT=<name>:exit    the process calls _exit(VR_FAILPOINT_EXIT_STATUS) when it
 *                               reaches the step <name>: no cleanup, no atexit handlers,
 *                               no flush of stdio, as if it had been killed there
 *
 * Built always: an unarmed failpoint costs one getenv(). Other actions (abort, sleep, errno
 * injection) and compile-time hooks are for later; an unknown action never fires.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>

G_BEGIN_DECLS

/* The exit status of a process stopped at a failpoint (EX_TEMPFAIL). */
#define VR_FAILPOINT_EXIT_STATUS 75

/* True when VR_FAILPOINT arms @name (so a caller can first make the step well-defined). */
bool vr_failpoint_armed(const char *name);

/* Return at once, unless VR_FAILPOINT arms @name: then _exit(VR_FAILPOINT_EXIT_STATUS). */
void vr_failpoint(const char *name);

G_END_DECLS
