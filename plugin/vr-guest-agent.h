/*
 * vr-guest-agent.h: guest file system freeze through libvirt and qemu-guest-agent
 *
 * The freezer of vr-capture.h for a libvirt domain whose guest runs qemu-guest-agent on
 * the org.qemu.guest_agent.0 channel. Without an agent, or when it does not answer in
 * time, the freeze fails and the cut is crash-consistent; thaw is always tried after.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <libvirt/libvirt.h>

#include "vr-capture.h"

G_BEGIN_DECLS

/* The freezer; its data is the virDomainPtr (transfer none: the caller keeps it alive). */
extern const VrCaptureFreezer vr_guest_agent_freezer;

/*
 * The state libvirt shows for the agent channel in the live XML: "connected" when an agent
 * runs in the guest. (transfer full), NULL when the domain has no agent channel.
 */
char *vr_guest_agent_channel_state(virDomainPtr domain);

G_END_DECLS
