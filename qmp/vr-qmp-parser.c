/*
 * vr-qmp-parser.c: QMP stream framing on json-c's incremental tokener
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-parser.h"

struct _VrQmpParser {
    json_tokener *tok;
    gsize max_message_size;
    /* Bytes consumed by the message being assembled (separators before it are not). */
    gsize pending;
    /* True once a non-whitespace byte of the current message has been fed. */
    bool in_message;
    /* Set on the first protocol fault; every later feed repeats it. */
    GError *failure;
};

VrQmpParser *
vr_qmp_parser_new(gsize max_message_size)
{
    VrQmpParser *parser = g_new0(VrQmpParser, 1);

    parser->tok = json_tokener_new_ex(VR_QMP_PARSER_MAX_DEPTH);
    /*
     * Strict RFC 8259 and valid UTF-8: QEMU emits nothing else. Strict mode alone rejects
     * bytes after a complete object, which is the next message when several arrive in one
     * read, hence ALLOW_TRAILING_CHARS: the loop in feed() parses them.
     */
    json_tokener_set_flags(parser->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS |
                                            JSON_TOKENER_VALIDATE_UTF8);
    parser->max_message_size = max_message_size;
    return parser;
}

void
vr_qmp_parser_free(VrQmpParser *parser)
{
    if (parser == NULL)
        return;
    json_tokener_free(parser->tok);
    g_clear_error(&parser->failure);
    g_free(parser);
}

static bool vr_qmp_parser_fail(VrQmpParser *parser, GError **error, const char *format, ...)
    G_GNUC_PRINTF(3, 4);

static bool
vr_qmp_parser_fail(VrQmpParser *parser, GError **error, const char *format, ...)
{
    va_list args;

    va_start(args, format);
    parser->failure = g_error_new_valist(VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL, format, args);
    va_end(args);
    g_propagate_error(error, g_error_copy(parser->failure));
    return false;
}

static bool
vr_qmp_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

bool
vr_qmp_parser_feed(VrQmpParser *parser, const char *data, gsize len, VrQmpParserFunc func,
                   gpointer user_data, GError **error)
{
    gsize pos = 0;

    if (parser->failure != NULL) {
        g_propagate_error(error, g_error_copy(parser->failure));
        return false;
    }
    /* json-c stops at a NUL as if the input ended, which would desynchronise the framing. */
    if (memchr(data, '\0', len) != NULL)
        return vr_qmp_parser_fail(parser, error, "NUL byte in QMP stream");

    while (pos < len) {
        gsize chunk = len - pos;
        json_object *obj;
        enum json_tokener_error jerr;
        gsize used;

        if (!parser->in_message) {
            /* Skip separators here, so that they never count as a message of their own. */
            while (pos < len && vr_qmp_is_space(data[pos]))
                pos++;
            if (pos == len)
                break;
            parser->in_message = true;
            parser->pending = 0;
            chunk = len - pos;
        }
        /* Never let the tokener see more than the limit allows for this message. */
        if (chunk > parser->max_message_size - parser->pending + 1)
            chunk = parser->max_message_size - parser->pending + 1;

        obj = json_tokener_parse_ex(parser->tok, data + pos, (int)MIN(chunk, (gsize)G_MAXINT));
        jerr = json_tokener_get_error(parser->tok);
        used = json_tokener_get_parse_end(parser->tok);

        if (jerr == json_tokener_continue) {
            parser->pending += used;
            pos += used;
            if (parser->pending > parser->max_message_size) {
                return vr_qmp_parser_fail(
                    parser, error, "QMP message exceeds the limit of %" G_GSIZE_FORMAT " bytes",
                    parser->max_message_size);
            }
            continue;
        }
        if (jerr != json_tokener_success) {
            return vr_qmp_parser_fail(parser, error, "malformed JSON in QMP stream: %s",
                                      json_tokener_error_desc(jerr));
        }
        parser->pending += used;
        pos += used;
        parser->in_message = false;
        if (parser->pending > parser->max_message_size) {
            json_object_put(obj);
            return vr_qmp_parser_fail(parser, error,
                                      "QMP message exceeds the limit of %" G_GSIZE_FORMAT " bytes",
                                      parser->max_message_size);
        }
        if (!json_object_is_type(obj, json_type_object)) {
            json_object_put(obj);
            return vr_qmp_parser_fail(parser, error, "QMP message is not a JSON object");
        }
        func(obj, user_data);
    }
    return true;
}

bool
vr_qmp_parser_finish(VrQmpParser *parser, GError **error)
{
    if (parser->failure != NULL) {
        g_propagate_error(error, g_error_copy(parser->failure));
        return false;
    }
    if (parser->in_message)
        return vr_qmp_parser_fail(parser, error, "QMP stream ended inside a message");
    return true;
}
