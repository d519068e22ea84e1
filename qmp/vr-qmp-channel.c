/*
 * vr-qmp-channel.c: what every channel shares
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-qmp-channel.h"

void
vr_qmp_channel_attach(VrQmpChannel *channel, GMainContext *context, const VrQmpChannelSink *sink,
                      gpointer sink_data)
{
    g_return_if_fail(channel->context == NULL);

    channel->context = g_main_context_ref(context);
    channel->sink = *sink;
    channel->sink_data = sink_data;
}

void
vr_qmp_channel_free(VrQmpChannel *channel)
{
    if (channel == NULL)
        return;
    channel->ops->close(channel);
    channel->ops->free(channel);
}
