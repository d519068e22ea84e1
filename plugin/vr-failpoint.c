/*
 * vr-failpoint.c: simulated crashes at named steps
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vr-failpoint.h"

bool
vr_failpoint_armed(const char *name)
{
    const char *spec = getenv("VR_FAILPOINT");
    size_t len = strlen(name);

    /* "<name>:exit", exactly: a prefix of another name must not match. */
    return spec != NULL && strncmp(spec, name, len) == 0 && strcmp(spec + len, ":exit") == 0;
}

void
vr_failpoint(const char *name)
{
    if (!vr_failpoint_armed(name))
        return;
    g_debug("failpoint '%s': exiting with status %d", name, VR_FAILPOINT_EXIT_STATUS);
    _exit(VR_FAILPOINT_EXIT_STATUS);
}
