/*
 * test-qmp-message.c: what a QMP message is, and how QEMU's error replies become GErrors
 *
 * Both are tables in the manner of libvirt's DO_TEST: one line per case, each case a test of
 * its own under /qmp/message/classify/ and /qmp/message/error/.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <string.h>

#include <gio/gio.h>

#include "vr-qmp-error.h"
#include "vr-qmp-json.h"
#include "vr-qmp-message.h"

/* ---- vr_qmp_message_classify ------------------------------------------------------- */

#define PROTOCOL_ERROR (-1)

typedef struct {
    const char *name;
    const char *json;
    int kind; /* a VrQmpMessageKind, or PROTOCOL_ERROR */
    const char *id;
} ClassifyCase;

#define DO_TEST(name, json, kind, id)         \
    {                                         \
        name, json, VR_QMP_MESSAGE_##kind, id \
    }
#define DO_TEST_FAIL(name, json)         \
    {                                    \
        name, json, PROTOCOL_ERROR, NULL \
    }

#define GREETING_7_2                                                                   \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, " \
    "\"package\": \"Debian 1:7.2+dfsg-7+deb12u18\"}, \"capabilities\": [\"oob\"]}}"
#define TIMESTAMP "\"timestamp\": {\"seconds\": 1732391234, \"microseconds\": 566423}"

static const ClassifyCase classify_cases[] = {
    DO_TEST("greeting", GREETING_7_2, GREETING, NULL),
    DO_TEST("greeting/no-capabilities",
            "{\"QMP\": {\"version\": {\"qemu\": {}, \"package\": \"\"}, \"capabilities\": []}}",
            GREETING, NULL),
    DO_TEST_FAIL("greeting/lacks-capabilities", "{\"QMP\": {\"version\": {}}}"),
    DO_TEST_FAIL("greeting/lacks-version", "{\"QMP\": {\"capabilities\": []}}"),
    DO_TEST_FAIL("greeting/version-not-object",
                 "{\"QMP\": {\"version\": \"7.2\", \"capabilities\": []}}"),
    DO_TEST_FAIL("greeting/capabilities-not-array",
                 "{\"QMP\": {\"version\": {}, \"capabilities\": \"oob\"}}"),
    DO_TEST_FAIL("greeting/not-object", "{\"QMP\": 1}"),

    DO_TEST("return/with-id", "{\"return\": {}, \"id\": \"vr-1\"}", RETURN, "vr-1"),
    DO_TEST("return/without-id", "{\"return\": {}}", RETURN, NULL),
    DO_TEST("return/id-not-string", "{\"return\": {}, \"id\": 7}", RETURN, NULL),
    DO_TEST("return/array",
            "{\"return\": [{\"id\": \"j\", \"type\": \"backup\", \"status\": \"concluded\", "
            "\"current-progress\": 65536, \"total-progress\": 65536}], \"id\": \"vr-2\"}",
            RETURN, "vr-2"),
    DO_TEST("return/string", "{\"id\": \"vr-3\", \"return\": \"text\\r\\n\"}", RETURN, "vr-3"),
    DO_TEST("return/null", "{\"return\": null, \"id\": \"vr-4\"}", RETURN, "vr-4"),

    DO_TEST("error/with-id",
            "{\"id\": \"vr-5\", \"error\": {\"class\": \"GenericError\", "
            "\"desc\": \"Dirty bitmap 'b0' not found\"}}",
            ERROR, "vr-5"),
    DO_TEST("error/without-id",
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, "
            "expecting value\"}}",
            ERROR, NULL),
    DO_TEST_FAIL("error/lacks-class", "{\"error\": {\"desc\": \"x\"}, \"id\": \"vr-6\"}"),
    DO_TEST_FAIL("error/lacks-desc", "{\"error\": {\"class\": \"GenericError\"}}"),
    DO_TEST_FAIL("error/class-not-string", "{\"error\": {\"class\": 1, \"desc\": \"x\"}}"),
    DO_TEST_FAIL("error/desc-not-string", "{\"error\": {\"class\": \"GenericError\", "
                                          "\"desc\": null}}"),
    DO_TEST_FAIL("error/not-object", "{\"error\": \"GenericError\", \"id\": \"vr-7\"}"),

    DO_TEST("event/with-data",
            "{\"timestamp\": {\"seconds\": 1732391234, \"microseconds\": 566423}, "
            "\"event\": \"BLOCK_JOB_CANCELLED\", \"data\": {\"device\": \"drrepl-fleece-vda\", "
            "\"len\": 10737418240, \"offset\": 0, \"speed\": 0, \"type\": \"backup\"}}",
            EVENT, NULL),
    DO_TEST("event/job-status-change",
            "{\"event\": \"JOB_STATUS_CHANGE\", \"data\": {\"status\": \"concluded\", "
            "\"id\": \"drrepl-fleece-vda\"}, " TIMESTAMP "}",
            EVENT, NULL),
    DO_TEST("event/without-data", "{\"event\": \"STOP\", " TIMESTAMP "}", EVENT, NULL),
    /* Events carry no id; a stray one is not reported as a reply's. */
    DO_TEST("event/with-id", "{\"event\": \"RESUME\", \"id\": \"vr-8\", " TIMESTAMP "}", EVENT,
            NULL),
    DO_TEST_FAIL("event/data-array", "{\"event\": \"STOP\", \"data\": [], " TIMESTAMP "}"),
    DO_TEST_FAIL("event/data-string", "{\"event\": \"STOP\", \"data\": \"x\"}"),
    DO_TEST_FAIL("event/data-null", "{\"event\": \"STOP\", \"data\": null}"),
    DO_TEST_FAIL("event/name-number", "{\"event\": 1, \"data\": {}}"),
    DO_TEST_FAIL("event/name-null", "{\"event\": null}"),

    DO_TEST_FAIL("none/empty", "{}"),
    DO_TEST_FAIL("none/other-members", "{\"id\": \"vr-9\", \"execute\": \"query-jobs\"}"),
    DO_TEST_FAIL("none/array", "[{\"return\": {}}]"),
    DO_TEST_FAIL("none/string", "\"return\""),
    DO_TEST_FAIL("none/null", "null"),
};

static void
test_classify(gconstpointer data)
{
    const ClassifyCase *tc = data;
    g_autoptr(json_object) message = NULL;
    g_autoptr(GError) error = NULL;
    enum json_tokener_error jerr = json_tokener_success;
    /* Sentinels: on failure classify() must leave its outputs alone. */
    VrQmpMessageKind kind = (VrQmpMessageKind)42;
    const char *id = "untouched";
    bool ok;

    message = json_tokener_parse_verbose(tc->json, &jerr);
    g_assert_cmpint(jerr, ==, json_tokener_success);

    ok = vr_qmp_message_classify(message, &kind, &id, &error);
    if (tc->kind == PROTOCOL_ERROR) {
        g_assert_false(ok);
        g_assert_error(error, VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL);
        g_assert_cmpstr(error->message, !=, "");
        g_assert_cmpint(kind, ==, 42);
        g_assert_cmpstr(id, ==, "untouched");
        return;
    }
    g_assert_no_error(error);
    g_assert_true(ok);
    g_assert_cmpint(kind, ==, tc->kind);
    g_assert_cmpstr(id, ==, tc->id);
}

/* ---- vr_qmp_error_new_from_reply ---------------------------------------------------- */

typedef struct {
    const char *name;
    const char *command;
    const char *member;     /* the "error" member of the reply */
    int code;               /* a VrQmpErrorCode; GError codes are ints */
    const char *qemu_class; /* expected; NULL for a protocol error */
    const char *desc;
} ErrorCase;

static const ErrorCase error_cases[] = {
    { "generic", "block-dirty-bitmap-add",
      "{\"class\": \"GenericError\", \"desc\": \"Bitmap already exists: drrepl-7f3a-000042\"}",
      VR_QMP_ERROR_COMMAND, "GenericError", "Bitmap already exists: drrepl-7f3a-000042" },
    { "device-not-found", "blockdev-backup",
      "{\"class\": \"DeviceNotFound\", \"desc\": \"Cannot find device='nope' nor "
      "node-name='nope'\"}",
      VR_QMP_ERROR_COMMAND, "DeviceNotFound", "Cannot find device='nope' nor node-name='nope'" },
    /* Format directives in QEMU's text stay text. */
    { "percent-in-desc", "human-monitor-command",
      "{\"class\": \"GenericError\", \"desc\": \"100% %s %n done\"}", VR_QMP_ERROR_COMMAND,
      "GenericError", "100% %s %n done" },
    { "non-ascii-desc", "blockdev-add",
      "{\"class\": \"GenericError\", \"desc\": \"Could not open '/var/lib/caf\\u00e9.qcow2'\"}",
      VR_QMP_ERROR_COMMAND, "GenericError", "Could not open '/var/lib/caf\xc3\xa9.qcow2'" },
    { "extra-members", "query-block",
      "{\"class\": \"GenericError\", \"desc\": \"x\", \"data\": {}}", VR_QMP_ERROR_COMMAND,
      "GenericError", "x" },
    { "lacks-class", "query-jobs", "{\"desc\": \"x\"}", VR_QMP_ERROR_PROTOCOL },
    { "lacks-desc", "query-jobs", "{\"class\": \"GenericError\"}", VR_QMP_ERROR_PROTOCOL },
    { "class-not-string", "query-jobs", "{\"class\": [], \"desc\": \"x\"}", VR_QMP_ERROR_PROTOCOL },
    { "desc-not-string", "query-jobs", "{\"class\": \"GenericError\", \"desc\": 3}",
      VR_QMP_ERROR_PROTOCOL },
    { "not-object", "query-jobs", "\"GenericError\"", VR_QMP_ERROR_PROTOCOL },
    { "null", "query-jobs", "null", VR_QMP_ERROR_PROTOCOL },
};

static void
test_error_from_reply(gconstpointer data)
{
    const ErrorCase *tc = data;
    g_autoptr(json_object) member = json_tokener_parse(tc->member);
    g_autoptr(GError) error = NULL;

    g_assert_true(member != NULL || strcmp(tc->member, "null") == 0);
    error = vr_qmp_error_new_from_reply(tc->command, member);
    g_assert_nonnull(error);
    g_assert_error(error, VR_QMP_ERROR, tc->code);
    /* The message names the command, so a log line says what failed. */
    g_assert_nonnull(strstr(error->message, tc->command));

    if (tc->code != VR_QMP_ERROR_COMMAND) {
        g_assert_null(vr_qmp_error_get_class(error));
        g_assert_null(vr_qmp_error_get_desc(error));
        return;
    }
    g_assert_cmpstr(vr_qmp_error_get_class(error), ==, tc->qemu_class);
    g_assert_cmpstr(vr_qmp_error_get_desc(error), ==, tc->desc);
    g_assert_nonnull(strstr(error->message, tc->desc));
}

static GError *
new_command_error(void)
{
    g_autoptr(json_object) member = json_tokener_parse(
        "{\"class\": \"DeviceNotFound\", \"desc\": \"Cannot find device='vda'\"}");

    return vr_qmp_error_new_from_reply("block-dirty-bitmap-merge", member);
}

/* The class and desc are extended error data: copies and prefixed messages keep them. */
static void
test_error_copy(void)
{
    g_autoptr(GError) error = new_command_error();
    g_autoptr(GError) copy = g_error_copy(error);
    g_autoptr(GError) propagated = NULL;

    /* The copy owns its strings. */
    g_clear_error(&error);
    g_assert_error(copy, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND);
    g_assert_cmpstr(vr_qmp_error_get_class(copy), ==, "DeviceNotFound");
    g_assert_cmpstr(vr_qmp_error_get_desc(copy), ==, "Cannot find device='vda'");

    /* Callers add context the house way. */
    g_propagate_prefixed_error(&propagated, g_steal_pointer(&copy),
                               "failed to cut cycle %u: ", 42u);
    g_assert_true(g_str_has_prefix(propagated->message, "failed to cut cycle 42: "));
    g_assert_cmpstr(vr_qmp_error_get_class(propagated), ==, "DeviceNotFound");
    g_assert_cmpstr(vr_qmp_error_get_desc(propagated), ==, "Cannot find device='vda'");
}

/* Only a VR_QMP_ERROR_COMMAND error has a class. */
static void
test_error_other(void)
{
    g_autoptr(GError) protocol =
        g_error_new_literal(VR_QMP_ERROR, VR_QMP_ERROR_PROTOCOL, "malformed JSON");
    g_autoptr(GError) timeout = g_error_new_literal(VR_QMP_ERROR, VR_QMP_ERROR_TIMEOUT, "late");
    g_autoptr(GError) io = g_error_new_literal(G_IO_ERROR, G_IO_ERROR_FAILED, "io");
    /* In the domain and with the code, but not built from a reply. */
    g_autoptr(GError) bare = g_error_new_literal(VR_QMP_ERROR, VR_QMP_ERROR_COMMAND, "bare");

    g_assert_null(vr_qmp_error_get_class(protocol));
    g_assert_null(vr_qmp_error_get_desc(protocol));
    g_assert_null(vr_qmp_error_get_class(timeout));
    g_assert_null(vr_qmp_error_get_class(io));
    g_assert_null(vr_qmp_error_get_desc(io));
    g_assert_null(vr_qmp_error_get_class(bare));
    g_assert_null(vr_qmp_error_get_desc(bare));
}

/* A whole reply, as the client sees it: classify, then map the "error" member. */
static void
test_error_reply_pipeline(void)
{
    g_autoptr(json_object) reply = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(GError) mapped = NULL;
    VrQmpMessageKind kind;
    const char *id = NULL;

    reply = json_tokener_parse("{\"id\": \"vr-12\", \"error\": {\"class\": \"GenericError\", "
                               "\"desc\": \"Bitmap 'drrepl-cycle' is currently in use by "
                               "another operation and cannot be used\"}}");
    g_assert_true(vr_qmp_message_classify(reply, &kind, &id, &error));
    g_assert_no_error(error);
    g_assert_cmpint(kind, ==, VR_QMP_MESSAGE_ERROR);
    g_assert_cmpstr(id, ==, "vr-12");

    mapped = vr_qmp_error_new_from_reply("transaction", vr_json_get_object(reply, "error"));
    g_assert_error(mapped, VR_QMP_ERROR, VR_QMP_ERROR_COMMAND);
    g_assert_cmpstr(vr_qmp_error_get_class(mapped), ==, "GenericError");
    g_assert_true(g_str_has_prefix(vr_qmp_error_get_desc(mapped), "Bitmap 'drrepl-cycle'"));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    for (guint i = 0; i < G_N_ELEMENTS(classify_cases); i++) {
        g_autofree char *path = g_strdup_printf("/qmp/message/classify/%s", classify_cases[i].name);

        g_test_add_data_func(path, &classify_cases[i], test_classify);
    }
    for (guint i = 0; i < G_N_ELEMENTS(error_cases); i++) {
        g_autofree char *path =
            g_strdup_printf("/qmp/message/error/from-reply/%s", error_cases[i].name);

        g_test_add_data_func(path, &error_cases[i], test_error_from_reply);
    }
    g_test_add_func("/qmp/message/error/copy", test_error_copy);
    g_test_add_func("/qmp/message/error/other", test_error_other);
    g_test_add_func("/qmp/message/error/reply-pipeline", test_error_reply_pipeline);

    return g_test_run();
}
