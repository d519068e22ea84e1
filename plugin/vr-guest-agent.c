/*
 * vr-guest-agent.c: guest file system freeze through libvirt and qemu-guest-agent
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <libvirt/virterror.h>

#include "vr-guest-agent.h"

#define VR_GUEST_AGENT_THAW_TRIES 3

static bool
vr_guest_agent_error(GError **error, const char *what, virDomainPtr domain)
{
    virError err = { 0 };

    virCopyLastError(&err);
    g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED, "%s '%s': %s", what,
                virDomainGetName(domain), err.message != NULL ? err.message : "unknown error");
    virResetError(&err);
    return false;
}

static bool
vr_guest_agent_freeze(gpointer data, guint timeout_ms, GError **error)
{
    virDomainPtr domain = data;
    int seconds = (int)MAX(1, (timeout_ms + 999) / 1000);

    /* libvirt's agent timeout applies to every agent call of the domain: set it each time. */
    if (virDomainAgentSetResponseTimeout(domain, seconds, 0) < 0)
        return vr_guest_agent_error(error, "cannot set the guest agent timeout of", domain);
    if (virDomainFSFreeze(domain, NULL, 0, 0) < 0)
        return vr_guest_agent_error(error, "cannot freeze the file systems of", domain);
    return true;
}

static bool
vr_guest_agent_thaw(gpointer data, GError **error)
{
    virDomainPtr domain = data;

    for (int i = 0; i < VR_GUEST_AGENT_THAW_TRIES; i++) {
        if (virDomainFSThaw(domain, NULL, 0, 0) >= 0)
            return true;
    }
    return vr_guest_agent_error(error, "cannot thaw the file systems of", domain);
}

const VrCaptureFreezer vr_guest_agent_freezer = {
    .freeze = vr_guest_agent_freeze,
    .thaw = vr_guest_agent_thaw,
};
