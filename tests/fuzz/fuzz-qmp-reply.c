/*
 * fuzz-qmp-reply.c: fuzz target for what QEMU sends: the framing parser, message
 * classification and the mapping of error replies
 *
 * Input layout: byte 0 chooses how the rest is cut into feed() calls, byte 1 the parser's
 * size limit, and the rest is the byte stream from QEMU. The seed corpus files therefore
 * start with two printable control bytes, e.g. "@0" (whole, 64 KiB) or "A3" (1-byte feeds,
 * 64-byte limit):
 *
 *   byte 0 & 3   0: the whole stream in one feed()     1: one byte per feed()
 *                2: feeds of (byte 0 >> 2) + 1 bytes   3: pseudo-random sizes 0..64,
 *                                                         seeded by byte 0
 *   byte 1 & 3   limit of 64 KiB, 4 KiB, 512 or 64 bytes
 *
 * Besides crashes, leaks and undefined behaviour, the target traps when the parser or the
 * error mapping breaks its documented contract.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <stdlib.h>

#include "vr-fuzz.h"
#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-message.h"
#include "vr-qmp-parser.h"

static const gsize limits[] = { 64 * 1024, 4 * 1024, 512, 64 };

/* A contract was broken: crash, so that the fuzzer keeps the input as a reproducer. */
#define CHECK(cond)                                                                \
    G_STMT_START                                                                   \
    {                                                                              \
        if (!(cond)) {                                                             \
            g_printerr("%s:%d: contract broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                               \
        }                                                                          \
    }                                                                              \
    G_STMT_END

/* Map @member as an error reply; @well_formed: classify() accepted it as one. */
static void
check_error_mapping(json_object *member, bool well_formed)
{
    g_autoptr(GError) error = vr_qmp_error_new_from_reply("fuzz", member);
    g_autoptr(GError) copy = g_error_copy(error);

    CHECK(error->domain == VR_QMP_ERROR);
    CHECK(!well_formed || error->code == VR_QMP_ERROR_COMMAND);
    if (error->code == VR_QMP_ERROR_COMMAND) {
        CHECK(g_strcmp0(vr_qmp_error_get_class(error), vr_json_get_string(member, "class")) == 0);
        CHECK(g_strcmp0(vr_qmp_error_get_desc(error), vr_json_get_string(member, "desc")) == 0);
        CHECK(g_strcmp0(vr_qmp_error_get_class(copy), vr_qmp_error_get_class(error)) == 0);
        CHECK(g_strcmp0(vr_qmp_error_get_desc(copy), vr_qmp_error_get_desc(error)) == 0);
    } else {
        CHECK(error->code == VR_QMP_ERROR_PROTOCOL);
        CHECK(vr_qmp_error_get_class(copy) == NULL);
        CHECK(vr_qmp_error_get_desc(copy) == NULL);
    }
}

static void
check_message(json_object *message)
{
    g_autoptr(GError) error = NULL;
    VrQmpMessageKind kind = VR_QMP_MESSAGE_GREETING;
    const char *id = NULL;
    bool ok;

    CHECK(json_object_is_type(message, json_type_object));
    g_free(vr_json_to_string(message));
    ok = vr_qmp_message_classify(message, &kind, &id, &error);
    CHECK(ok == (error == NULL));
    if (!ok) {
        CHECK(g_error_matches(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL));
        CHECK(vr_qmp_error_get_class(error) == NULL);
        CHECK(vr_qmp_error_get_desc(error) == NULL);
    }
    /* The mapping of the "error" member (NULL when absent), and of any shape at all. */
    check_error_mapping(vr_json_get_object(message, "error"), ok && kind == VR_QMP_MESSAGE_ERROR);
    check_error_mapping(message, false);
}

static void
message_cb(json_object *message, gpointer user_data)
{
    guint *count = user_data;

    (*count)++;
    check_message(message);
    json_object_put(message);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(VrQmpParser) parser = NULL;
    g_autoptr(GError) error = NULL;
    const char *stream;
    guint8 control;
    guint32 state;
    gsize len;
    gsize pos = 0;
    guint count = 0;
    bool failed = false;

    if (size < 2)
        return 0;
    control = data[0];
    state = 0x9e3779b9u ^ control;
    parser = vr_qmp_parser_new(limits[data[1] & 3]);
    stream = (const char *)data + 2;
    len = size - 2;

    while (pos < len) {
        gsize n = vr_fuzz_next_chunk(control & 3, control, &state, len - pos);

        if (!vr_qmp_parser_feed(parser, stream + pos, n, message_cb, &count, &error)) {
            CHECK(g_error_matches(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL));
            failed = true;
            break;
        }
        CHECK(error == NULL);
        pos += n;
    }

    if (failed) {
        /* A failed parser stays failed and delivers nothing more. */
        guint before = count;

        g_clear_error(&error);
        CHECK(!vr_qmp_parser_feed(parser, "{}", 2, message_cb, &count, &error));
        CHECK(g_error_matches(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL));
        CHECK(count == before);
        g_clear_error(&error);
        CHECK(!vr_qmp_parser_finish(parser, &error));
        CHECK(g_error_matches(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL));
        return 0;
    }
    if (!vr_qmp_parser_finish(parser, &error))
        CHECK(g_error_matches(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL));
    return 0;
}
