/*
 * test-qmp-transaction.c: the JSON of the transaction builder and of the argument builders
 *
 * Every expectation is JSON text as it would be typed for `virsh qemu-monitor-command`,
 * compared with json_object_equal(), so member order does not matter and array order does.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-qmp-json.h"
#include "vr-qmp-transaction.h"

/* Compare @got with the JSON text @expected; on a difference show both. */
#define assert_json(got, expected) assert_json_impl(got, expected, G_STRLOC)

static void
assert_json_impl(json_object *got, const char *expected, const char *where)
{
    enum json_tokener_error jerr = json_tokener_success;
    g_autoptr(json_object) want = json_tokener_parse_verbose(expected, &jerr);

    /* A typo in the test's own expectation. */
    if (jerr != json_tokener_success)
        g_test_message("at %s: %s", where, json_tokener_error_desc(jerr));
    g_assert_cmpint(jerr, ==, json_tokener_success);
    if (!json_object_equal(got, want)) {
        const int flags = JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE;
        g_autofree char *want_text = g_strdup(json_object_to_json_string_ext(want, flags));

        g_test_message("at %s", where);
        g_assert_cmpstr(json_object_to_json_string_ext(got, flags), ==, want_text);
        /* Equal text but unequal objects: a type differs (e.g. 1 and 1.0). */
        g_assert_not_reached();
    }
}

/* ---- the cut of research/qemu-bitmaps.md §1.3, for two disks ----------------------- */

typedef struct {
    const char *node;   /* the disk's format node */
    const char *fleece; /* the fleece node over it */
} Disk;

static const Disk disks[] = {
    { "libvirt-2-format", "drrepl-fleece-vda" },
    { "libvirt-1-format", "drrepl-fleece-vdb" },
};

static void
add_cut(VrQmpTransaction *transaction)
{
    /* blockdev-backup first: it keeps the sources drained until every action committed. */
    for (guint i = 0; i < G_N_ELEMENTS(disks); i++) {
        vr_qmp_transaction_add_blockdev_backup(transaction, disks[i].fleece, disks[i].node,
                                               disks[i].fleece, "none");
    }
    for (guint i = 0; i < G_N_ELEMENTS(disks); i++) {
        const VrQmpBitmapRef previous = { disks[i].node, "drrepl-7f3a-000041" };

        vr_qmp_transaction_add_bitmap_add(transaction, disks[i].node, "drrepl-7f3a-000042", true,
                                          false, 65536);
        vr_qmp_transaction_add_bitmap_add(transaction, disks[i].fleece, "drrepl-cycle", false, true,
                                          65536);
        vr_qmp_transaction_add_bitmap_merge(transaction, disks[i].fleece, "drrepl-cycle", &previous,
                                            1);
    }
}

/* The arguments of the cut, laid out as in research/qemu-bitmaps.md §1.3. */
static const char cut_json[] =
    "{\"actions\": [\n"
    "{\"type\": \"blockdev-backup\",\n"
    "  \"data\": {\"job-id\": \"drrepl-fleece-vda\", \"device\": \"libvirt-2-format\",\n"
    "           \"target\": \"drrepl-fleece-vda\", \"sync\": \"none\",\n"
    "           \"auto-finalize\": true, \"auto-dismiss\": false}},\n"
    "{\"type\": \"blockdev-backup\",\n"
    "  \"data\": {\"job-id\": \"drrepl-fleece-vdb\", \"device\": \"libvirt-1-format\",\n"
    "           \"target\": \"drrepl-fleece-vdb\", \"sync\": \"none\",\n"
    "           \"auto-finalize\": true, \"auto-dismiss\": false}},\n"
    "{\"type\": \"block-dirty-bitmap-add\",\n"
    "  \"data\": {\"node\": \"libvirt-2-format\", \"name\": \"drrepl-7f3a-000042\",\n"
    "           \"persistent\": true, \"granularity\": 65536}},\n"
    "{\"type\": \"block-dirty-bitmap-add\",\n"
    "  \"data\": {\"node\": \"drrepl-fleece-vda\", \"name\": \"drrepl-cycle\",\n"
    "           \"persistent\": false, \"disabled\": true, \"granularity\": 65536}},\n"
    "{\"type\": \"block-dirty-bitmap-merge\",\n"
    "  \"data\": {\"node\": \"drrepl-fleece-vda\", \"target\": \"drrepl-cycle\",\n"
    "           \"bitmaps\": [{\"node\": \"libvirt-2-format\", \"name\": "
    "\"drrepl-7f3a-000041\"}]}},\n"
    "{\"type\": \"block-dirty-bitmap-add\",\n"
    "  \"data\": {\"node\": \"libvirt-1-format\", \"name\": \"drrepl-7f3a-000042\",\n"
    "           \"persistent\": true, \"granularity\": 65536}},\n"
    "{\"type\": \"block-dirty-bitmap-add\",\n"
    "  \"data\": {\"node\": \"drrepl-fleece-vdb\", \"name\": \"drrepl-cycle\",\n"
    "           \"persistent\": false, \"disabled\": true, \"granularity\": 65536}},\n"
    "{\"type\": \"block-dirty-bitmap-merge\",\n"
    "  \"data\": {\"node\": \"drrepl-fleece-vdb\", \"target\": \"drrepl-cycle\",\n"
    "           \"bitmaps\": [{\"node\": \"libvirt-1-format\", \"name\": "
    "\"drrepl-7f3a-000041\"}]}}\n"
    "]}";

static void
test_cut(void)
{
    g_autoptr(VrQmpTransaction) transaction = vr_qmp_transaction_new();
    g_autoptr(json_object) args = NULL;

    add_cut(transaction);
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 8);
    args = vr_qmp_transaction_to_arguments(transaction);
    assert_json(args, cut_json);
}

/* After the DR host acknowledged cut 42, the older bitmaps go, in one transaction. */
static void
test_remove(void)
{
    g_autoptr(VrQmpTransaction) transaction = vr_qmp_transaction_new();
    g_autoptr(json_object) args = NULL;

    vr_qmp_transaction_add_bitmap_remove(transaction, "libvirt-2-format", "drrepl-7f3a-000040");
    vr_qmp_transaction_add_bitmap_remove(transaction, "libvirt-2-format", "drrepl-7f3a-000041");
    vr_qmp_transaction_add_bitmap_remove(transaction, "drrepl-fleece-vda", "drrepl-cycle");
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 3);
    args = vr_qmp_transaction_to_arguments(transaction);
    assert_json(args, "{\"actions\": ["
                      "{\"type\": \"block-dirty-bitmap-remove\", \"data\": "
                      "{\"node\": \"libvirt-2-format\", \"name\": \"drrepl-7f3a-000040\"}}, "
                      "{\"type\": \"block-dirty-bitmap-remove\", \"data\": "
                      "{\"node\": \"libvirt-2-format\", \"name\": \"drrepl-7f3a-000041\"}}, "
                      "{\"type\": \"block-dirty-bitmap-remove\", \"data\": "
                      "{\"node\": \"drrepl-fleece-vda\", \"name\": \"drrepl-cycle\"}}]}");
}

/* The arguments are the command's to own: changing them leaves the builder as it was. */
static void
test_deep_copy(void)
{
    g_autoptr(VrQmpTransaction) transaction = vr_qmp_transaction_new();
    g_autoptr(json_object) first = NULL;
    g_autoptr(json_object) second = NULL;
    g_autoptr(json_object) third = NULL;
    json_object *actions;
    json_object *data;

    add_cut(transaction);
    first = vr_qmp_transaction_to_arguments(transaction);

    /* Mutate every level of the copy: the array, an action's data, a nested array. */
    actions = vr_json_get_array(first, "actions");
    g_assert_nonnull(actions);
    json_object_array_add(actions, json_object_new_string("extra"));
    data = vr_json_get_object(json_object_array_get_idx(actions, 0), "data");
    g_assert_nonnull(data);
    json_object_object_add(data, "sync", json_object_new_string("full"));
    json_object_object_del(data, "auto-dismiss");
    data = vr_json_get_object(json_object_array_get_idx(actions, 4), "data");
    json_object_array_del_idx(vr_json_get_array(data, "bitmaps"), 0, 1);

    second = vr_qmp_transaction_to_arguments(transaction);
    assert_json(second, cut_json);
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 8);

    /* And the other way round: adding to the builder leaves earlier arguments alone. */
    vr_qmp_transaction_add_bitmap_remove(transaction, "n", "b");
    assert_json(second, cut_json);
    third = vr_qmp_transaction_to_arguments(transaction);
    g_assert_cmpuint(json_object_array_length(vr_json_get_array(third, "actions")), ==, 9);

    /* Not shared: distinct objects at every level. */
    g_assert_true(vr_json_get_array(second, "actions") != vr_json_get_array(third, "actions"));
    g_assert_true(json_object_array_get_idx(vr_json_get_array(second, "actions"), 0) !=
                  json_object_array_get_idx(vr_json_get_array(third, "actions"), 0));
}

static void
test_length(void)
{
    g_autoptr(VrQmpTransaction) transaction = vr_qmp_transaction_new();
    g_autoptr(json_object) empty = NULL;
    const VrQmpBitmapRef sources[] = { { "a", "b" } };

    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 0);
    empty = vr_qmp_transaction_to_arguments(transaction);
    assert_json(empty, "{\"actions\": []}");

    vr_qmp_transaction_add_blockdev_backup(transaction, "j", "d", "t", "none");
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 1);
    vr_qmp_transaction_add_bitmap_add(transaction, "n", "b", true, false, 0);
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 2);
    vr_qmp_transaction_add_bitmap_remove(transaction, "n", "b");
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 3);
    vr_qmp_transaction_add_bitmap_merge(transaction, "n", "t", sources, G_N_ELEMENTS(sources));
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 4);
    vr_qmp_transaction_add(transaction, "x-other", json_object_new_object());
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 5);
    /* Reading the arguments does not consume the actions. */
    g_clear_pointer(&empty, json_object_put);
    empty = vr_qmp_transaction_to_arguments(transaction);
    g_assert_cmpuint(vr_qmp_transaction_get_length(transaction), ==, 5);
}

/* vr_qmp_transaction_add() takes any action and owns its data. */
static void
test_add_generic(void)
{
    g_autoptr(VrQmpTransaction) transaction = vr_qmp_transaction_new();
    g_autoptr(json_object) args = NULL;
    json_object *data = json_object_new_object();

    json_object_object_add(data, "device", json_object_new_string("drive0"));
    vr_qmp_transaction_add(transaction, "blockdev-snapshot-sync", data);
    vr_qmp_transaction_add(transaction, "abort", json_object_new_object());
    args = vr_qmp_transaction_to_arguments(transaction);
    assert_json(args, "{\"actions\": ["
                      "{\"type\": \"blockdev-snapshot-sync\", \"data\": {\"device\": \"drive0\"}}, "
                      "{\"type\": \"abort\", \"data\": {}}]}");
}

/* ---- the argument builders -------------------------------------------------------- */

typedef struct {
    const char *name;
    bool persistent;
    bool disabled;
    uint32_t granularity;
    const char *expected;
} BitmapAddCase;

static const BitmapAddCase bitmap_add_cases[] = {
    /* granularity 0: QEMU chooses, the key is left out; disabled=false is QEMU's default. */
    { "persistent", true, false, 0,
      "{\"node\": \"libvirt-2-format\", \"name\": \"b\", \"persistent\": true}" },
    { "transient", false, false, 0,
      "{\"node\": \"libvirt-2-format\", \"name\": \"b\", \"persistent\": false}" },
    { "disabled", false, true, 0,
      "{\"node\": \"libvirt-2-format\", \"name\": \"b\", \"persistent\": false, "
      "\"disabled\": true}" },
    { "granularity", true, false, 65536,
      "{\"node\": \"libvirt-2-format\", \"name\": \"b\", \"persistent\": true, "
      "\"granularity\": 65536}" },
    { "all", true, true, 512,
      "{\"node\": \"libvirt-2-format\", \"name\": \"b\", \"persistent\": true, "
      "\"disabled\": true, \"granularity\": 512}" },
    /* Above INT32_MAX: must not wrap negative. */
    { "granularity-2g", false, false, 0x80000000u,
      "{\"node\": \"libvirt-2-format\", \"name\": \"b\", \"persistent\": false, "
      "\"granularity\": 2147483648}" },
};

static void
test_args_bitmap_add(gconstpointer data)
{
    const BitmapAddCase *tc = data;
    g_autoptr(json_object) args = vr_qmp_args_bitmap_add("libvirt-2-format", "b", tc->persistent,
                                                         tc->disabled, tc->granularity);
    g_autoptr(VrQmpTransaction) transaction = vr_qmp_transaction_new();
    g_autoptr(json_object) via_transaction = NULL;
    g_autofree char *action = NULL;

    assert_json(args, tc->expected);

    /* The transaction action carries the same data as the command. */
    vr_qmp_transaction_add_bitmap_add(transaction, "libvirt-2-format", "b", tc->persistent,
                                      tc->disabled, tc->granularity);
    via_transaction = vr_qmp_transaction_to_arguments(transaction);
    action = g_strdup_printf("{\"actions\": [{\"type\": \"block-dirty-bitmap-add\", "
                             "\"data\": %s}]}",
                             tc->expected);
    assert_json(via_transaction, action);
}

static void
test_args_bitmap_remove(void)
{
    g_autoptr(json_object) args = vr_qmp_args_bitmap_remove("libvirt-2-format", "old");

    assert_json(args, "{\"node\": \"libvirt-2-format\", \"name\": \"old\"}");
}

static void
test_args_bitmap_merge(void)
{
    const VrQmpBitmapRef sources[] = {
        { "libvirt-2-format", "drrepl-7f3a-000040" },
        { "libvirt-1-format", "drrepl-7f3a-000041" },
    };
    g_autoptr(json_object) none = vr_qmp_args_bitmap_merge("drrepl-fleece-vda", "t", NULL, 0);
    g_autoptr(json_object) one = vr_qmp_args_bitmap_merge("drrepl-fleece-vda", "t", sources, 1);
    g_autoptr(json_object) two = vr_qmp_args_bitmap_merge("drrepl-fleece-vda", "t", sources, 2);

    assert_json(none, "{\"node\": \"drrepl-fleece-vda\", \"target\": \"t\", \"bitmaps\": []}");
    assert_json(one, "{\"node\": \"drrepl-fleece-vda\", \"target\": \"t\", \"bitmaps\": "
                     "[{\"node\": \"libvirt-2-format\", \"name\": \"drrepl-7f3a-000040\"}]}");
    /* Sources on other nodes, in the given order, always the {node, name} form. */
    assert_json(two, "{\"node\": \"drrepl-fleece-vda\", \"target\": \"t\", \"bitmaps\": "
                     "[{\"node\": \"libvirt-2-format\", \"name\": \"drrepl-7f3a-000040\"}, "
                     "{\"node\": \"libvirt-1-format\", \"name\": \"drrepl-7f3a-000041\"}]}");
}

static void
test_args_blockdev_backup(void)
{
    g_autoptr(json_object) args = vr_qmp_args_blockdev_backup(
        "drrepl-fleece-vda", "libvirt-2-format", "drrepl-fleece-vda", "none");

    assert_json(args, "{\"job-id\": \"drrepl-fleece-vda\", \"device\": \"libvirt-2-format\", "
                      "\"target\": \"drrepl-fleece-vda\", \"sync\": \"none\", "
                      "\"auto-finalize\": true, \"auto-dismiss\": false}");
}

/* Names go through as JSON strings, whatever they hold. */
static void
test_args_escaping(void)
{
    g_autoptr(json_object) args = vr_qmp_args_bitmap_remove("node \"q\"\\", "caf\xc3\xa9/\n");
    const char *text = json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN);
    g_autoptr(json_object) back = json_tokener_parse(text);

    assert_json(args, "{\"node\": \"node \\\"q\\\"\\\\\", \"name\": \"caf\\u00e9/\\n\"}");
    g_assert_true(json_object_equal(args, back));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/qmp/transaction/cut", test_cut);
    g_test_add_func("/qmp/transaction/remove", test_remove);
    g_test_add_func("/qmp/transaction/deep-copy", test_deep_copy);
    g_test_add_func("/qmp/transaction/length", test_length);
    g_test_add_func("/qmp/transaction/add-generic", test_add_generic);
    for (guint i = 0; i < G_N_ELEMENTS(bitmap_add_cases); i++) {
        g_autofree char *path =
            g_strdup_printf("/qmp/transaction/args/bitmap-add/%s", bitmap_add_cases[i].name);

        g_test_add_data_func(path, &bitmap_add_cases[i], test_args_bitmap_add);
    }
    g_test_add_func("/qmp/transaction/args/bitmap-remove", test_args_bitmap_remove);
    g_test_add_func("/qmp/transaction/args/bitmap-merge", test_args_bitmap_merge);
    g_test_add_func("/qmp/transaction/args/blockdev-backup", test_args_blockdev_backup);
    g_test_add_func("/qmp/transaction/args/escaping", test_args_escaping);

    return g_test_run();
}
