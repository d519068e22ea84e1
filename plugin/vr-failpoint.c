/*
 * vr-failpoint.c: simulated crashes at named steps
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vr-failpoint.h"

#ifdef VR_FAILPOINTS

/* The action VR_FAILPOINT gives @name ("exit", "kill", "sleep"), or NULL when it does not arm
 * it. */
static const char *
vr_failpoint_action(const char *name)
{
    const char *spec = getenv("VR_FAILPOINT");
    size_t len = strlen(name);

    /* "<name>:<action>", exactly: a prefix of another name must not match. */
    if (spec == NULL || strncmp(spec, name, len) != 0 || spec[len] != ':')
        return NULL;
    spec += len + 1;
    if (strcmp(spec, "exit") == 0 || strcmp(spec, "kill") == 0 || strcmp(spec, "sleep") == 0)
        return spec;
    return NULL;
}

bool
vr_failpoint_armed(const char *name)
{
    return vr_failpoint_action(name) != NULL;
}

void
vr_failpoint(const char *name)
{
    const char *action = vr_failpoint_action(name);

    if (action == NULL)
        return;
    g_debug("failpoint '%s': %s", name, action);
    if (strcmp(action, "sleep") == 0) {
        g_usleep(VR_FAILPOINT_SLEEP_SECONDS * G_USEC_PER_SEC);
        return;
    }
    if (strcmp(action, "kill") == 0)
        kill(getpid(), SIGKILL);
    _exit(VR_FAILPOINT_EXIT_STATUS);
}

#endif /* VR_FAILPOINTS */
