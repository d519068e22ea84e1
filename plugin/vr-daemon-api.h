/*
 * vr-daemon-api.h: the JSON replies and requests of virt-replicad's local API, shared by
 * its handlers (vr-daemon.c and the vr-daemon-*.c files); docs/api.md has the formats
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <glib.h>
#include <json-c/json.h>
#include <libsoup/soup.h>

G_BEGIN_DECLS

/* @body as the answer, with @status. */
void vr_daemon_reply_json(SoupServerMessage *msg, guint status, json_object *body);

/* {"error": {"code": @code, "message": ...}}: @code is stable, the message is for people. */
void vr_daemon_reply_error(SoupServerMessage *msg, guint status, const char *code, const char *fmt,
                           ...) G_GNUC_PRINTF(4, 5);

/* The request body as a JSON object, or NULL after a 400 reply. (transfer full) */
json_object *vr_daemon_request_json(SoupServerMessage *msg);

G_END_DECLS
