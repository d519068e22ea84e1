/*
 * vr-guest-agent.c: guest file system freeze through libvirt and qemu-guest-agent
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

#include "vr-guest-agent.h"

#define VR_GUEST_AGENT_CHANNEL "org.qemu.guest_agent.0"
/* Thaw attempts, the delay before each (ms): about 8 s in all. */
static const guint vr_guest_agent_thaw_delays[] = { 0, 250, 500, 1000, 2000, 4000 };

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

char *
vr_guest_agent_channel_state(virDomainPtr domain)
{
    g_autofree char *xml = virDomainGetXMLDesc(domain, 0);
    g_autofree char *needle = g_strdup_printf("name='%s'", VR_GUEST_AGENT_CHANNEL);
    const char *target;
    const char *end;
    const char *state;

    if (xml == NULL)
        return NULL;
    /* <target type='virtio' name='org.qemu.guest_agent.0' state='connected'/> */
    target = strstr(xml, needle);
    if (target == NULL)
        return NULL;
    end = strchr(target, '>');
    state = strstr(target, "state='");
    if (state == NULL || end == NULL || state > end)
        return g_strdup("unknown");
    state += strlen("state='");
    return g_strndup(state, strcspn(state, "'"));
}

static bool
vr_guest_agent_freeze(gpointer data, guint timeout_ms, bool *maybe_frozen, GError **error)
{
    virDomainPtr domain = data;
    int seconds = (int)MAX(1, (timeout_ms + 999) / 1000);
    g_autofree char *state = vr_guest_agent_channel_state(domain);

    /* No agent at all: certainly not frozen, and no thaw is needed. */
    *maybe_frozen = false;
    if (state == NULL || !g_str_equal(state, "connected")) {
        g_set_error(error, VR_CAPTURE_ERROR, VR_CAPTURE_ERROR_FAILED,
                    "no guest agent runs in '%s' (channel %s: %s)", virDomainGetName(domain),
                    VR_GUEST_AGENT_CHANNEL, state != NULL ? state : "absent");
        return false;
    }
    if (virDomainAgentSetResponseTimeout(domain, seconds, 0) < 0)
        return vr_guest_agent_error(error, "cannot set the guest agent timeout of", domain);
    if (virDomainFSFreeze(domain, NULL, 0, 0) < 0) {
        /* A timeout leaves the agent freezing in the guest: thaw will have to follow. */
        *maybe_frozen = true;
        return vr_guest_agent_error(error, "cannot freeze the file systems of", domain);
    }
    return true;
}

/* Whether the agent reports the guest thawed. */
static bool
vr_guest_agent_thawed(virDomainPtr domain)
{
    g_autofree char *reply = NULL;

    reply = virDomainQemuAgentCommand(domain, "{\"execute\":\"guest-fsfreeze-status\"}", 5, 0);
    return reply != NULL && strstr(reply, "\"thawed\"") != NULL;
}

static bool
vr_guest_agent_thaw(gpointer data, GError **error)
{
    virDomainPtr domain = data;
    bool thawed = false;

    for (guint i = 0; i < G_N_ELEMENTS(vr_guest_agent_thaw_delays) && !thawed; i++) {
        g_usleep(vr_guest_agent_thaw_delays[i] * 1000);
        /* A thaw can fail while a late freeze still holds the agent: ask its state too. */
        thawed = virDomainFSThaw(domain, NULL, 0, 0) >= 0 || vr_guest_agent_thawed(domain);
    }
    if (!thawed)
        vr_guest_agent_error(error, "cannot thaw the file systems of", domain);
    /* Back to libvirt's default for every other user of the agent. */
    virDomainAgentSetResponseTimeout(domain, VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_DEFAULT, 0);
    return thawed;
}

const VrCaptureFreezer vr_guest_agent_freezer = {
    .freeze = vr_guest_agent_freeze,
    .thaw = vr_guest_agent_thaw,
};
