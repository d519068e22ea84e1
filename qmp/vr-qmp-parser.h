/*
 * vr-qmp-parser.h: QMP stream framing
 *
 * QMP is a stream of JSON objects separated by whitespace. The parser takes bytes as they
 * arrive from the socket, in chunks of any size, and hands out each complete object.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>
#include <json-c/json.h>

G_BEGIN_DECLS

/* Large enough for query-qmp-schema (about 200 KiB on 7.2) with a wide margin. */
#define VR_QMP_PARSER_DEFAULT_MAX_MESSAGE (16 * 1024 * 1024)

/* Nesting deeper than any QMP reply QEMU 7.2 sends, shallow enough to bound the stack. */
#define VR_QMP_PARSER_MAX_DEPTH 64

typedef struct _VrQmpParser VrQmpParser;

/* Receives one complete top-level JSON object. (transfer full) */
typedef void (*VrQmpParserFunc)(json_object *message, gpointer user_data);

VrQmpParser *vr_qmp_parser_new(gsize max_message_size);
void vr_qmp_parser_free(VrQmpParser *parser);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrQmpParser, vr_qmp_parser_free)

/*
 * Parse @len bytes of @data, calling @func for every object that completes. On malformed
 * JSON, a top-level value that is not an object, a string that is not UTF-8, a NUL byte or
 * a message over the size limit (the separators between messages do not count), fails with
 * VR_QMP_ERROR_PROTOCOL. Objects completed before the fault are still delivered. Once
 * failed, the parser stays failed: the stream cannot be resynchronised.
 */
bool vr_qmp_parser_feed(VrQmpParser *parser, const char *data, gsize len, VrQmpParserFunc func,
                        gpointer user_data, GError **error);

/*
 * Called at end of stream: fails with VR_QMP_ERROR_PROTOCOL when a message was cut off
 * (part of an object pending), true otherwise.
 */
bool vr_qmp_parser_finish(VrQmpParser *parser, GError **error);

G_END_DECLS
