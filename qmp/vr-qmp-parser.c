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
     * json-c's strict mode (closer to RFC 8259, though it still takes single quotes and
     * NaN). Strict mode alone rejects bytes after a complete object, which is the next
     * message when several arrive in one read, hence ALLOW_TRAILING_CHARS: the loop in
     * feed() parses them. UTF-8 is checked on the decoded strings, not with json-c's
     * VALIDATE_UTF8, which fails a read that ends inside a multi-byte character.
     */
    json_tokener_set_flags(parser->tok, JSON_TOKENER_STRICT | JSON_TOKENER_ALLOW_TRAILING_CHARS);
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

/*
 * Whether @len bytes at @p are UTF-8 (no overlong form, surrogate or code point past
 * U+10FFFF). U+0000 ("\u0000" in JSON) is a code point like any other: g_utf8_validate()
 * stops at it, so go on after it.
 */
static bool
vr_qmp_utf8_valid(const char *p, gsize len)
{
    const char *end;

    while (!g_utf8_validate(p, len, &end)) {
        if (end == p + len || *end != '\0')
            return false;
        len -= (gsize)(end - p) + 1;
        p = end + 1;
    }
    return true;
}

/* Whether every string of @obj, keys included, is UTF-8. */
static bool
vr_qmp_json_utf8_valid(json_object *obj)
{
    switch (json_object_get_type(obj)) {
    case json_type_string:
        return vr_qmp_utf8_valid(json_object_get_string(obj), json_object_get_string_len(obj));
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(obj); i++) {
            if (!vr_qmp_json_utf8_valid(json_object_array_get_idx(obj, i)))
                return false;
        }
        return true;
    case json_type_object: {
        json_object_object_foreach (obj, key, value) {
            if (!vr_qmp_utf8_valid(key, strlen(key)) || !vr_qmp_json_utf8_valid(value))
                return false;
        }
        return true;
    }
    default:
        return true;
    }
}

bool
vr_qmp_parser_feed(VrQmpParser *parser, const char *data, gsize len, VrQmpParserFunc func,
                   gpointer user_data, GError **error)
{
    const char *nul;
    gsize limit;
    gsize pos = 0;

    if (parser->failure != NULL) {
        g_propagate_error(error, g_error_copy(parser->failure));
        return false;
    }
    /*
     * json-c stops at a NUL as if the input ended, which would desynchronise the framing:
     * parse up to the first one, deliver what completed before it, then fail.
     */
    nul = memchr(data, '\0', len);
    limit = nul != NULL ? (gsize)(nul - data) : len;

    while (pos < limit) {
        gsize chunk;
        gsize room;
        gsize used;
        gsize end;
        json_object *obj;
        enum json_tokener_error jerr;

        if (!parser->in_message) {
            /* Skip separators here, so that they never count as a message of their own. */
            while (pos < limit && vr_qmp_is_space(data[pos]))
                pos++;
            if (pos == limit)
                break;
            parser->in_message = true;
            parser->pending = 0;
        }
        /* Never let the tokener see more than one byte past what the limit allows. */
        room = parser->max_message_size - parser->pending;
        if (room < G_MAXSIZE)
            room++;
        chunk = MIN(MIN(limit - pos, room), (gsize)G_MAXINT);

        obj = json_tokener_parse_ex(parser->tok, data + pos, (int)chunk);
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
        /* json-c also eats the separators after the closing brace: not the message's. */
        end = used;
        while (end > 0 && vr_qmp_is_space(data[pos + end - 1]))
            end--;
        parser->pending += end;
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
        if (!vr_qmp_json_utf8_valid(obj)) {
            json_object_put(obj);
            return vr_qmp_parser_fail(parser, error, "QMP message has a string that is not UTF-8");
        }
        func(obj, user_data);
    }
    if (nul != NULL)
        return vr_qmp_parser_fail(parser, error, "NUL byte in QMP stream");
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
