/*
 * test-authz.c: authorization of primaries and path safety on the replica
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <glib/gstdio.h>

#include "vr-authz.h"

typedef struct {
    char *dir;
    char *a;
    char *b;
    char *c;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    fx->dir = g_dir_make_tmp("vr-authz-XXXXXX", &error);
    g_assert_no_error(error);
    fx->a = g_build_filename(fx->dir, "a", NULL);
    fx->b = g_build_filename(fx->dir, "b", NULL);
    fx->c = g_build_filename(fx->dir, "c", NULL);
    g_assert_no_errno(g_mkdir(fx->a, 0755));
    g_assert_no_errno(g_mkdir(fx->b, 0755));
    g_assert_no_errno(g_mkdir(fx->c, 0755));
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    const char *argv[] = { "rm", "-rf", fx->dir, NULL };

    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                 NULL);
    g_free(fx->dir);
    g_free(fx->a);
    g_free(fx->b);
    g_free(fx->c);
}

static VrAuthz *
make_table(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    VrAuthz *authz = vr_authz_new_table();

    g_assert_true(vr_authz_add(authz, "primary1.dc1.example", fx->a, "g1", &error));
    g_assert_true(vr_authz_add(authz, "*.dc2.example", fx->b, "g2", &error));
    g_assert_true(vr_authz_add(authz, "host-*.example", fx->c, "g3", &error));
    g_assert_no_error(error);
    return authz;
}

static void
test_lookup(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrAuthz) authz = make_table(fx);
    static const struct {
        const char *peer;
        int entry; /* 0 a, 1 b, 2 c, -1 forbidden */
    } cases[] = {
        { "primary1.dc1.example", 0 },
        { "PRIMARY1.DC1.Example", 0 },
        { "primary2.dc1.example", -1 },
        { "a.dc2.example", 1 },
        { "a.b.dc2.example", -1 }, /* '*' is one label */
        { ".dc2.example", -1 },    /* and not empty */
        { "dc2.example", -1 },
        { "host-7.example", 2 },
        { "host-.example", -1 },
        { "host-7.other.example", -1 },
        { "", -1 },
        { "../a.dc2.example", -1 },
        { "a/b.dc2.example", -1 },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *root = NULL;
        g_autofree char *group = NULL;
        bool ok = vr_authz_lookup(authz, cases[i].peer, &root, &group, &error);

        if (cases[i].entry < 0) {
            if (ok)
                g_error("'%s' was authorized", cases[i].peer);
            g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN);
            g_assert_null(root);
        } else {
            const char *roots[] = { fx->a, fx->b, fx->c };

            g_assert_no_error(error);
            g_assert_true(ok);
            g_assert_cmpstr(root, ==, roots[cases[i].entry]);
            g_assert_cmpint(group[1] - '1', ==, cases[i].entry);
        }
    }
}

static void
test_config_errors(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrAuthz) authz = vr_authz_new_table();
    g_autofree char *missing = g_build_filename(fx->dir, "missing", NULL);
    struct {
        const char *pattern;
        const char *root;
        const char *group;
        const char *names;
    } cases[] = {
        { "a*b*.example", fx->a, "g", "pattern 'a*b*.example'" },
        { "bad name.example", fx->a, "g", "pattern 'bad name.example'" },
        { "", fx->a, "g", "pattern ''" },
        { "x.example", "relative/dir", "g", "storage root 'relative/dir'" },
        { "x.example", missing, "g", "is not an existing absolute directory" },
        { "x.example", fx->a, "Bad", "trust group 'Bad'" },
        { "x.example", fx->a, "", "trust group ''" },
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;

        g_assert_false(
            vr_authz_add(authz, cases[i].pattern, cases[i].root, cases[i].group, &error));
        g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_CONFIG);
        if (strstr(error->message, cases[i].names) == NULL)
            g_error("'%s' does not name %s", error->message, cases[i].names);
    }
}

static void
test_allow_any_and_groups(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrAuthz) any = vr_authz_new_allow_any(fx->a, "default", &error);
    g_autoptr(VrAuthz) table = make_table(fx);
    g_autofree char *root = NULL;
    g_autofree char *group = NULL;
    char *untouched = NULL;

    g_assert_no_error(error);
    g_assert_true(vr_authz_lookup(any, "whoever.example", &root, &group, &error));
    g_assert_cmpstr(root, ==, fx->a);
    g_assert_cmpstr(group, ==, "default");
    /* Still no path-like identity; the outputs are untouched on failure. */
    g_assert_false(vr_authz_lookup(any, "../etc", &untouched, &untouched, &error));
    g_assert_null(untouched);
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN);
    g_clear_error(&error);

    /* A primary writes only replicas of its own trust group; a new one becomes its own. */
    g_assert_true(vr_authz_may_write(table, "x.dc2.example", "g2", &error));
    g_assert_true(vr_authz_may_write(table, "x.dc2.example", NULL, &error));
    g_assert_no_error(error);
    g_assert_false(vr_authz_may_write(table, "x.dc2.example", "g1", &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN);
    g_assert_nonnull(strstr(error->message, "trust group 'g2'"));
    g_assert_nonnull(strstr(error->message, "'g1'"));
}

static void
test_names(void)
{
    static const char *const bad[] = {
        "..",
        ".",
        "../",
        "a/b",
        "%2e%2e",
        "%252e",
        "",
        "a b",
        "A",
        "x\n",
        "-a",
        "a.b",
        "\xe2\x80\xae"
        "abc", /* right-to-left override */
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
    };
    static const char *const
        good[] = { "vda", "rel-1", "0abc",
                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" /* 64 */ };

    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;

        if (vr_authz_check_name("disk", bad[i], &error))
            g_error("'%s' was taken as a name", bad[i]);
        g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_INVALID);
    }
    g_assert_false(vr_authz_check_name("disk", NULL, NULL));
    for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
        g_autoptr(GError) error = NULL;

        g_assert_true(vr_authz_check_name("disk", good[i], &error));
        g_assert_no_error(error);
    }
}

static void
test_open_beneath(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *outside = g_build_filename(fx->c, "secret", NULL);
    g_autofree char *link = g_build_filename(fx->a, "evil", NULL);
    g_autofree char *dirlink = g_build_filename(fx->a, "up", NULL);
    g_autofree char *contents = NULL;
    int fd;

    g_assert_no_errno(g_mkdir(g_build_filename(fx->a, "r1", NULL), 0755));
    /* A normal create beneath the root. */
    fd = vr_authz_open_beneath(fx->a, "r1/vda", O_WRONLY | O_CREAT | O_EXCL, 0600, &error);
    g_assert_no_error(error);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(write(fd, "ok", 2), ==, 2);
    close(fd);

    /* Symlinks planted in the storage root, to a file and to a directory outside. */
    g_assert_true(g_file_set_contents(outside, "keep", -1, NULL));
    g_assert_no_errno(symlink(outside, link));
    g_assert_no_errno(symlink(fx->c, dirlink));
    fd = vr_authz_open_beneath(fx->a, "evil", O_WRONLY | O_TRUNC, 0, &error);
    g_assert_cmpint(fd, ==, -1);
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_ESCAPE);
    g_clear_error(&error);
    fd = vr_authz_open_beneath(fx->a, "up/secret", O_WRONLY | O_TRUNC, 0, &error);
    g_assert_cmpint(fd, ==, -1);
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_ESCAPE);
    g_clear_error(&error);
    g_assert_true(g_file_get_contents(outside, &contents, NULL, NULL));
    g_assert_cmpstr(contents, ==, "keep");

    /* Names that are no names never reach the file system. */
    static const char *const hostile[] = { "../c/secret", "/etc/passwd", "r1/../../c/secret", "",
                                           "r1//vda",     "r1/" };

    for (guint i = 0; i < G_N_ELEMENTS(hostile); i++) {
        g_autoptr(GError) local = NULL;

        g_assert_cmpint(vr_authz_open_beneath(fx->a, hostile[i], O_RDONLY, 0, &local), ==, -1);
        g_assert_error(local, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_INVALID);
    }
}

/* Entries added at runtime go after the configuration's, and only they can be removed. */
static void
test_runtime(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrAuthz) authz = make_table(fx);
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(VrAuthzEntry) entry = NULL;
    g_autofree char *root = NULL;
    g_autofree char *group = NULL;
    VrAuthzEntry *e;

    /* Not authorized until an entry names it. */
    g_assert_false(vr_authz_lookup(authz, "p1.dc3.example", &root, &group, &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN);
    g_clear_error(&error);
    g_assert_true(
        vr_authz_add_origin(authz, "*.DC3.example", fx->c, "g4", VR_AUTHZ_ORIGIN_API, &error));
    g_assert_no_error(error);
    g_assert_true(vr_authz_lookup(authz, "p1.dc3.example", &root, &group, &error));
    g_assert_cmpstr(root, ==, fx->c);
    g_assert_cmpstr(group, ==, "g4");

    /* A pattern once only, whatever its case and origin. */
    g_assert_false(
        vr_authz_add_origin(authz, "*.dc3.EXAMPLE", fx->a, "g5", VR_AUTHZ_ORIGIN_API, &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_EXISTS);
    g_assert_nonnull(strstr(error->message, "'*.dc3.example'"));
    g_clear_error(&error);
    g_assert_false(vr_authz_add_origin(authz, "primary1.dc1.example", fx->a, "g1",
                                       VR_AUTHZ_ORIGIN_API, &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_EXISTS);
    g_clear_error(&error);
    /* The same rules as the configuration's. */
    g_assert_false(
        vr_authz_add_origin(authz, "a*b*.example", fx->a, "g", VR_AUTHZ_ORIGIN_API, &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_CONFIG);
    g_clear_error(&error);

    /* Listed in match order, the configuration's first, with their origins. */
    list = vr_authz_list(authz);
    g_assert_cmpuint(list->len, ==, 4);
    e = list->pdata[0];
    g_assert_cmpstr(e->pattern, ==, "primary1.dc1.example");
    g_assert_cmpstr(e->storage_root, ==, fx->a);
    g_assert_cmpstr(e->group, ==, "g1");
    g_assert_cmpint(e->origin, ==, VR_AUTHZ_ORIGIN_CONFIG);
    e = list->pdata[3];
    g_assert_cmpstr(e->pattern, ==, "*.dc3.example");
    g_assert_cmpstr(vr_authz_origin_to_string(e->origin), ==, "api");
    entry = vr_authz_get(authz, "*.Dc3.example", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(entry->storage_root, ==, fx->c);
    g_assert_null(vr_authz_get(authz, "*.dc9.example", &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_NOT_FOUND);
    g_clear_error(&error);

    /* The configuration's entries stay; an unknown pattern is NOT_FOUND. */
    g_assert_false(vr_authz_remove(authz, "*.dc2.example", &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FIXED);
    g_assert_nonnull(strstr(error->message, "configuration file"));
    g_clear_error(&error);
    g_assert_false(vr_authz_remove(authz, "nobody.example", &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_NOT_FOUND);
    g_clear_error(&error);

    /* Removed: what a lookup returned before stays valid (copies); the next is refused. */
    g_assert_true(vr_authz_remove(authz, "*.DC3.example", &error));
    g_assert_no_error(error);
    g_assert_cmpstr(root, ==, fx->c);
    g_clear_pointer(&root, g_free);
    g_clear_pointer(&group, g_free);
    g_assert_false(vr_authz_lookup(authz, "p1.dc3.example", &root, &group, &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN);
    g_clear_error(&error);
    g_assert_false(vr_authz_may_write(authz, "p1.dc3.example", "g4", &error));
    g_assert_error(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_FORBIDDEN);
    g_clear_error(&error);
    g_clear_pointer(&list, g_ptr_array_unref);
    list = vr_authz_list(authz);
    g_assert_cmpuint(list->len, ==, 3);
    /* And the order of the rest is kept: the first match still wins. */
    g_assert_true(
        vr_authz_add_origin(authz, "x.dc2.example", fx->a, "g9", VR_AUTHZ_ORIGIN_API, &error));
    g_assert_true(vr_authz_lookup(authz, "x.dc2.example", &root, &group, &error));
    g_assert_cmpstr(root, ==, fx->b);
}

typedef struct {
    VrAuthz *authz;
    const char *root;
    gint stop;
    guint seen;
} Lookups;

static gpointer
lookups_thread(gpointer data)
{
    Lookups *l = data;

    while (!g_atomic_int_get(&l->stop)) {
        g_autofree char *root = NULL;
        g_autofree char *group = NULL;

        if (vr_authz_lookup(l->authz, "p1.dc4.example", &root, &group, NULL)) {
            /* Never a half-made or freed entry: the copy is whole. */
            g_assert_cmpstr(root, ==, l->root);
            g_assert_cmpstr(group, ==, "g4");
            l->seen++;
        }
    }
    return NULL;
}

/* Lookups on other threads while entries come and go (run it under ASan or valgrind too). */
static void
test_threads(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrAuthz) authz = make_table(fx);
    Lookups l = { authz, fx->c, 0, 0 };
    GThread *threads[2];

    for (guint i = 0; i < G_N_ELEMENTS(threads); i++)
        threads[i] = g_thread_new("lookups", lookups_thread, &l);
    for (guint i = 0; i < 2000; i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) list = NULL;

        g_assert_true(
            vr_authz_add_origin(authz, "*.dc4.example", fx->c, "g4", VR_AUTHZ_ORIGIN_API, &error));
        list = vr_authz_list(authz);
        g_assert_cmpuint(list->len, ==, 4);
        g_assert_true(vr_authz_remove(authz, "*.dc4.example", &error));
        g_assert_no_error(error);
    }
    g_atomic_int_set(&l.stop, 1);
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++)
        g_thread_join(threads[i]);
    g_test_message("%u successful lookups while the entry came and went", l.seen);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, func) g_test_add(path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("/authz/lookup", test_lookup);
    ADD("/authz/config-errors", test_config_errors);
    ADD("/authz/allow-any-and-groups", test_allow_any_and_groups);
    ADD("/authz/open-beneath", test_open_beneath);
    ADD("/authz/runtime", test_runtime);
    ADD("/authz/threads", test_threads);
#undef ADD
    g_test_add_func("/authz/names", test_names);
    return g_test_run();
}
