/*
 * test-state.c: the state database (plugin/vr-state.h) on real SQLite files
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <sqlite3.h>

#include "vr-state.h"

#define UUID "8f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b"

typedef struct {
    char *dir;
    char *path;
} Fixture;

static void
fixture_setup(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    fx->dir = g_dir_make_tmp("vr-state-XXXXXX", &error);
    g_assert_no_error(error);
    fx->path = g_build_filename(fx->dir, "state.db", NULL);
}

static void
fixture_teardown(Fixture *fx, gconstpointer data)
{
    g_autoptr(GDir) dir = g_dir_open(fx->dir, 0, NULL);
    const char *name;

    while (dir != NULL && (name = g_dir_read_name(dir)) != NULL) {
        g_autofree char *path = g_build_filename(fx->dir, name, NULL);

        g_unlink(path);
    }
    g_rmdir(fx->dir);
    g_free(fx->path);
    g_free(fx->dir);
}

static VrState *
state_open(Fixture *fx)
{
    g_autoptr(GError) error = NULL;
    VrState *state = vr_state_open(fx->path, &error);

    g_assert_no_error(error);
    g_assert_nonnull(state);
    return state;
}

/* A PRAGMA's or query's single value, through a connection of the test's own. */
static char *
query_text(Fixture *fx, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *stmt = NULL;
    char *value = NULL;

    g_assert_cmpint(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READWRITE, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL), ==, SQLITE_OK);
    if (sqlite3_step(stmt) == SQLITE_ROW)
        value = g_strdup((const char *)sqlite3_column_text(stmt, 0));
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return value;
}

static void
exec_sql(Fixture *fx, const char *sql)
{
    sqlite3 *db = NULL;

    g_assert_cmpint(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READWRITE, NULL), ==, SQLITE_OK);
    g_assert_cmpint(sqlite3_exec(db, sql, NULL, NULL, NULL), ==, SQLITE_OK);
    sqlite3_close(db);
}

static void
put_relationship(VrState *state, const char *id, uint64_t epoch, const char *status)
{
    g_autoptr(GError) error = NULL;
    VrStateRelationship rel = {
        .id = (char *)id,
        .role = VR_STATE_ROLE_PRIMARY,
        .domain_name = (char *)"vm1",
        .domain_uuid = (char *)UUID,
        .peer = (char *)"replica.example.org",
        .epoch = epoch,
        .state = (char *)status,
        .config = (char *)"{\"frequency\": 300}",
    };

    g_assert_true(vr_state_relationship_put(state, &rel, &error));
    g_assert_no_error(error);
}

/* A new database: mode 0600, WAL, synchronous FULL per connection, schema version 3. */
static void
test_create(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrState) state = state_open(fx);
    g_autofree char *mode = NULL;
    g_autofree char *version = NULL;
    g_autofree char *tables = NULL;
    g_autoptr(GPtrArray) list = NULL;
    GStatBuf st;

    g_assert_no_errno(g_stat(fx->path, &st));
    g_assert_cmpint(st.st_mode & 0777, ==, 0600);
    mode = query_text(fx, "PRAGMA journal_mode");
    g_assert_cmpstr(mode, ==, "wal");
    version = query_text(fx, "PRAGMA user_version");
    g_assert_cmpstr(version, ==, "3");
    tables = query_text(fx, "SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_schema "
                            "WHERE type = 'table' ORDER BY name)");
    g_assert_cmpstr(tables, ==, "authorizations cycles intents recovery_points relationships");

    /* Opening again keeps the schema (and what is in it). */
    put_relationship(state, "r1", 1, "Replicating");
    g_clear_pointer(&state, vr_state_free);
    state = state_open(fx);
    list = vr_state_relationship_list(state, NULL);
    g_assert_cmpuint(list->len, ==, 1);
}

static void
test_relationships(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrState) state = state_open(fx);
    g_autoptr(VrStateRelationship) rel = NULL;
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(GError) error = NULL;
    int64_t created;

    put_relationship(state, "r2", 1, "Replicating");
    put_relationship(state, "r1", 1, "Replicating");
    rel = vr_state_relationship_get(state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(rel->id, ==, "r1");
    g_assert_cmpint(rel->role, ==, VR_STATE_ROLE_PRIMARY);
    g_assert_cmpstr(rel->domain_name, ==, "vm1");
    g_assert_cmpstr(rel->domain_uuid, ==, UUID);
    g_assert_cmpstr(rel->peer, ==, "replica.example.org");
    g_assert_cmpuint(rel->epoch, ==, 1);
    g_assert_cmpstr(rel->state, ==, "Replicating");
    g_assert_cmpstr(rel->config, ==, "{\"frequency\": 300}");
    g_assert_cmpint(rel->created, >, 0);
    g_assert_cmpint(rel->updated, ==, rel->created);
    created = rel->created;
    g_clear_pointer(&rel, vr_state_relationship_free);

    /* An update keeps the creation time. */
    put_relationship(state, "r1", 2, "FailedOver");
    rel = vr_state_relationship_get(state, "r1", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(rel->epoch, ==, 2);
    g_assert_cmpstr(rel->state, ==, "FailedOver");
    g_assert_cmpint(rel->created, ==, created);

    list = vr_state_relationship_list(state, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 2);
    g_assert_cmpstr(((VrStateRelationship *)list->pdata[0])->id, ==, "r1");
    g_assert_cmpstr(((VrStateRelationship *)list->pdata[1])->id, ==, "r2");

    g_assert_true(vr_state_relationship_delete(state, "r2", &error));
    g_assert_no_error(error);
    g_assert_false(vr_state_relationship_delete(state, "r2", &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_assert_null(vr_state_relationship_get(state, "r2", &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND);
    g_assert_nonnull(strstr(error->message, "'r2'"));
}

/* Each bad value is refused with a message naming it, and nothing is written. */
static void
test_invalid(Fixture *fx, gconstpointer data)
{
    static const struct {
        const char *id;
        const char *uuid;
        uint64_t epoch;
        const char *config;
        const char *message;
    } cases[] = {
        { "R1", UUID, 1, "{}", "relationship id 'R1'" },
        { "", UUID, 1, "{}", "relationship id ''" },
        { "r1/../x", UUID, 1, "{}", "relationship id 'r1/../x'" },
        { "r12345678901234567", UUID, 1, "{}", "relationship id 'r12345678901234567'" },
        { "r1", "not-a-uuid", 1, "{}", "'not-a-uuid' is not a UUID" },
        { "r1", UUID, 0, "{}", "epoch 0" },
        { "r1", UUID, (uint64_t)G_MAXINT64 + 1, "{}", "epoch 9223372036854775808" },
        { "r1", UUID, 1, "[1]", "config is not a JSON object" },
        { "r1", UUID, 1, "{\"a\":", "config is not a JSON object" },
    };
    g_autoptr(VrState) state = state_open(fx);
    g_autoptr(GPtrArray) list = NULL;

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        VrStateRelationship rel = {
            .id = (char *)cases[i].id,
            .domain_name = (char *)"vm1",
            .domain_uuid = (char *)cases[i].uuid,
            .peer = (char *)"replica",
            .epoch = cases[i].epoch,
            .state = (char *)"Replicating",
            .config = (char *)cases[i].config,
        };

        g_assert_false(vr_state_relationship_put(state, &rel, &error));
        g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_INVALID);
        g_test_message("%s", error->message);
        g_assert_nonnull(strstr(error->message, cases[i].message));
    }
    list = vr_state_relationship_list(state, NULL);
    g_assert_cmpuint(list->len, ==, 0);
}

static void
add_cycle(VrState *state, uint64_t cycle, VrStateCycleResult result, uint32_t flags,
          int64_t started, int64_t finished, uint64_t bytes)
{
    g_autoptr(GError) error = NULL;
    VrStateCycle c = {
        .cycle = cycle,
        .result = result,
        .flags = flags,
        .started_ms = started,
        .finished_ms = finished,
        .bytes = bytes,
        .wire_bytes = bytes / 2,
        .error = result == VR_STATE_CYCLE_OK ? NULL : "replica unreachable",
    };

    g_assert_true(vr_state_cycle_add(state, "r1", &c, &error));
    g_assert_no_error(error);
}

static void
test_stats(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrState) state = state_open(fx);
    g_autoptr(GError) error = NULL;
    VrStateStats stats;
    VrStateCycle bad = { .cycle = 9, .started_ms = 10, .finished_ms = 5 };

    put_relationship(state, "r1", 1, "Replicating");
    g_assert_true(vr_state_stats(state, "r1", 0, &stats, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(stats.cycles_ok + stats.cycles_failed + stats.cycles_missed, ==, 0);
    g_assert_cmpint(stats.last_ok_ms, ==, 0);
    g_assert_cmpuint(stats.avg_bytes, ==, 0);

    /* Before the window: one success of 1 GB that must not count in it. */
    add_cycle(state, 1, VR_STATE_CYCLE_OK, 1, 1000, 61000, 1000000000);
    /* In the window (from 100000 on). */
    add_cycle(state, 2, VR_STATE_CYCLE_OK, 0, 100000, 100300, 3000);
    add_cycle(state, 3, VR_STATE_CYCLE_FAILED, 0, 130000, 130050, 0);
    add_cycle(state, 0, VR_STATE_CYCLE_MISSED, 0, 160000, 160000, 0);
    add_cycle(state, 3, VR_STATE_CYCLE_OK, 2, 190000, 190700, 5000); /* a resync */
    add_cycle(state, 4, VR_STATE_CYCLE_OK, 4, 220000, 220101, 1001);

    g_assert_true(vr_state_stats(state, "r1", 100000, &stats, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(stats.cycles_ok, ==, 3);
    g_assert_cmpuint(stats.cycles_failed, ==, 1);
    g_assert_cmpuint(stats.cycles_missed, ==, 1);
    g_assert_cmpuint(stats.resyncs, ==, 1);
    g_assert_cmpuint(stats.avg_bytes, ==, (3000 + 5000 + 1001) / 3);
    g_assert_cmpuint(stats.max_bytes, ==, 5000);
    g_assert_cmpuint(stats.avg_latency_ms, ==, (300 + 700 + 101) / 3);
    g_assert_cmpuint(stats.max_latency_ms, ==, 700);
    g_assert_cmpint(stats.last_ok_ms, ==, 220101);
    g_assert_cmpuint(stats.last_ok_cycle, ==, 4);

    /* The whole history. */
    g_assert_true(vr_state_stats(state, "r1", 0, &stats, &error));
    g_assert_cmpuint(stats.cycles_ok, ==, 4);
    g_assert_cmpuint(stats.max_bytes, ==, 1000000000);
    g_assert_cmpuint(stats.max_latency_ms, ==, 60000);

    /* Pruning forgets the old cycle only. */
    g_assert_true(vr_state_prune_cycles(state, 100000, &error));
    g_assert_no_error(error);
    g_assert_true(vr_state_stats(state, "r1", 0, &stats, &error));
    g_assert_cmpuint(stats.cycles_ok, ==, 3);
    g_assert_cmpuint(stats.max_bytes, ==, 5000);

    /* Refused: an unknown relationship, a cycle that ends before it starts. */
    g_assert_false(vr_state_stats(state, "r9", 0, &stats, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_assert_false(vr_state_cycle_add(state, "r9", &bad, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_INVALID);
    g_clear_error(&error);
    bad.finished_ms = 10;
    g_assert_false(vr_state_cycle_add(state, "r9", &bad, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND);
}

static VrReplicaPoint
point(uint64_t cycle, uint32_t flags)
{
    VrReplicaPoint p = { .cycle = cycle, .epoch = 1, .virtual_size = 1 << 20, .flags = flags };

    p.published = 1700000000 + (int64_t)cycle;
    memset(p.digest, (int)cycle, sizeof(p.digest));
    memset(p.chain, (int)(0x80 | cycle), sizeof(p.chain));
    return p;
}

static void
test_points(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrState) state = state_open(fx);
    g_autoptr(GArray) got = NULL;
    g_autoptr(GError) error = NULL;
    VrReplicaPoint points[] = { point(3, 1), point(4, 0), point(5, 4) };
    g_autofree char *count = NULL;

    put_relationship(state, "r1", 1, "Replicating");
    g_assert_true(vr_state_points_sync(state, "r1", "vda", points, 3, &error));
    g_assert_no_error(error);
    g_assert_true(vr_state_points_sync(state, "r1", "vdb", points, 1, &error));
    got = vr_state_points_list(state, "r1", "vda", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(got->len, ==, 3);
    g_assert_cmpmem(got->data, sizeof(points), points, sizeof(points));
    g_clear_pointer(&got, g_array_unref);

    /* Retention merged 3 into 4 and cycle 6 came: the rows follow the manifest exactly. */
    points[0] = point(4, 0);
    points[1] = point(5, 4);
    points[2] = point(6, 0);
    g_assert_true(vr_state_points_sync(state, "r1", "vda", points, 3, &error));
    got = vr_state_points_list(state, "r1", "vda", &error);
    g_assert_cmpmem(got->data, got->len * sizeof(VrReplicaPoint), points, sizeof(points));
    g_clear_pointer(&got, g_array_unref);
    /* Both disks are listed; the other disk is untouched. */
    {
        g_autoptr(GPtrArray) disks = vr_state_disk_list(state, "r1", &error);

        g_assert_no_error(error);
        g_assert_cmpuint(disks->len, ==, 2);
        g_assert_cmpstr(disks->pdata[0], ==, "vda");
        g_assert_cmpstr(disks->pdata[1], ==, "vdb");
    }
    got = vr_state_points_list(state, "r1", "vdb", &error);
    g_assert_cmpuint(got->len, ==, 1);
    g_assert_cmpuint(g_array_index(got, VrReplicaPoint, 0).cycle, ==, 3);

    /* An unknown relationship or a bad disk name writes nothing. */
    g_assert_false(vr_state_points_sync(state, "r9", "vda", points, 3, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_assert_false(vr_state_points_sync(state, "r1", "../vda", points, 3, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_INVALID);
    g_clear_error(&error);
    /* A failure inside the transaction (a duplicate cycle) rolls it all back. */
    points[1] = point(4, 0);
    g_assert_false(vr_state_points_sync(state, "r1", "vda", points, 3, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_FAILED);
    g_test_message("%s", error->message);
    g_clear_error(&error);
    count =
        query_text(fx, "SELECT group_concat(cycle, ' ') FROM recovery_points WHERE disk = 'vda'");
    g_assert_cmpstr(count, ==, "4 5 6");
    g_free(g_steal_pointer(&count));

    /* Deleting the relationship takes its points and cycles with it. */
    add_cycle(state, 1, VR_STATE_CYCLE_OK, 0, 1, 2, 3);
    g_assert_true(vr_state_relationship_delete(state, "r1", &error));
    count = query_text(fx, "SELECT (SELECT count(*) FROM recovery_points) + "
                           "(SELECT count(*) FROM cycles)");
    g_assert_cmpstr(count, ==, "0");
}

static void
test_version(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    VrState *state = state_open(fx);

    vr_state_free(state);
    exec_sql(fx, "PRAGMA user_version = 4");
    g_assert_null(vr_state_open(fx->path, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_VERSION);
    g_assert_nonnull(strstr(error->message, fx->path));
    g_assert_nonnull(strstr(error->message, "schema version 4"));
}

static void
test_corrupt(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *garbage = g_strnfill(8192, 'x');
    g_autofree char *after = NULL;
    gsize len = 0;

    g_assert_true(g_file_set_contents(fx->path, garbage, -1, &error));
    g_assert_null(vr_state_open(fx->path, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_CORRUPT);
    g_test_message("%s", error->message);
    g_assert_nonnull(strstr(error->message, fx->path));
    /* Left as it was, for the administrator to look at. */
    g_assert_true(g_file_get_contents(fx->path, &after, &len, NULL));
    g_assert_cmpmem(after, len, garbage, 8192);
}

/*
 * SIGKILL while a child records cycles, one transaction each, and reports each commit on a
 * pipe: the database opens, passes its check, and holds every reported cycle in order.
 */
static void
test_kill(Fixture *fx, gconstpointer data)
{
    g_autoptr(VrState) state = state_open(fx);
    g_autofree char *count = NULL;
    g_autofree char *max = NULL;
    uint64_t reported = 0;
    uint64_t value;
    int fds[2];
    int status;
    pid_t child;

    put_relationship(state, "r1", 1, "Replicating");
    g_clear_pointer(&state, vr_state_free);
    g_assert_no_errno(pipe(fds));
    child = fork();
    g_assert_no_errno(child);
    if (child == 0) {
        VrState *mine = vr_state_open(fx->path, NULL);

        close(fds[0]);
        for (uint64_t i = 1; mine != NULL; i++) {
            VrStateCycle c = { .cycle = i, .started_ms = 1, .finished_ms = 2, .bytes = i };

            if (!vr_state_cycle_add(mine, "r1", &c, NULL) ||
                write(fds[1], &i, sizeof(i)) != sizeof(i))
                _exit(1);
        }
        _exit(1);
    }
    close(fds[1]);
    /* Let it commit a few hundred cycles, then kill it mid-stream. */
    while (reported < 200 && read(fds[0], &value, sizeof(value)) == sizeof(value))
        reported = value;
    g_assert_no_errno(kill(child, SIGKILL));
    while (read(fds[0], &value, sizeof(value)) == sizeof(value))
        reported = value;
    close(fds[0]);
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    g_assert_true(WIFSIGNALED(status));

    state = state_open(fx); /* quick_check included */
    count = query_text(fx, "SELECT count(*) FROM cycles");
    max = query_text(fx, "SELECT max(cycle) FROM cycles");
    g_test_message("%" G_GUINT64_FORMAT " commits reported, %s rows", reported, count);
    /* Every reported commit is there, with no gap; at most the one in flight besides. */
    g_assert_cmpstr(count, ==, max);
    g_assert_cmpuint(g_ascii_strtoull(count, NULL, 10), >=, reported);
    g_assert_cmpuint(g_ascii_strtoull(count, NULL, 10), <=, reported + 1);
}

/* A version 1 database (before the authorization entries) is upgraded in place, data kept. */
static void
test_upgrade_v1(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrState) state = state_open(fx);
    g_autoptr(GPtrArray) list = NULL;
    g_autofree char *version = NULL;
    g_autofree char *sql = NULL;

    put_relationship(state, "r1", 1, "Replicating");
    g_clear_pointer(&state, vr_state_free);
    /* Exactly version 1's schema: versions 2 and 3 only added these tables. */
    exec_sql(fx, "DROP TABLE intents; DROP TABLE authorizations; PRAGMA user_version = 1");
    state = state_open(fx);
    version = query_text(fx, "PRAGMA user_version");
    g_assert_cmpstr(version, ==, "3");
    sql = query_text(fx, "SELECT sql FROM sqlite_schema WHERE name = 'authorizations'");
    g_assert_nonnull(strstr(sql, "STRICT"));
    list = vr_state_relationship_list(state, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 1);
    g_clear_pointer(&list, g_ptr_array_unref);
    list = vr_state_authz_list(state, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 0);
}

/* A version 2 database (before the intents) is upgraded in place, its entries kept. */
static void
test_upgrade_v2(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrState) state = state_open(fx);
    g_autoptr(GPtrArray) list = NULL;
    g_autofree char *version = NULL;
    g_autofree char *sql = NULL;
    VrStateAuthz a = { (char *)"*.dc2.example", (char *)"/srv/b", (char *)"g2", 0 };

    put_relationship(state, "r1", 1, "Replicating");
    g_assert_true(vr_state_authz_add(state, &a, &error));
    g_clear_pointer(&state, vr_state_free);
    /* Exactly version 2's schema: version 3 only added this table. */
    exec_sql(fx, "DROP TABLE intents; PRAGMA user_version = 2");
    state = state_open(fx);
    version = query_text(fx, "PRAGMA user_version");
    g_assert_cmpstr(version, ==, "3");
    sql = query_text(fx, "SELECT sql FROM sqlite_schema WHERE name = 'intents'");
    g_assert_nonnull(strstr(sql, "STRICT"));
    list = vr_state_authz_list(state, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 1);
    g_clear_pointer(&list, g_ptr_array_unref);
    list = vr_state_intent_list(state, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 0);
}

/*
 * Intents: one per relationship and kind (a put replaces its data, keeps its time), listed
 * by kind prefix, kept across opens, gone with their relationship; a missing relationship
 * is NOT_FOUND, data that is not an object INVALID; deleting none is no error.
 */
static void
test_intents(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrState) state = state_open(fx);
    g_autoptr(GPtrArray) list = NULL;
    const VrStateIntent *i;

    put_relationship(state, "r1", 1, "Replicating");
    put_relationship(state, "r2", 1, "Replicating");
    g_assert_true(vr_state_intent_put(state, "r1", "reverse", "{\"cycle\": 4}", &error));
    g_assert_true(vr_state_intent_put(state, "r1", "guest-ip:failover", "{}", &error));
    g_assert_true(vr_state_intent_put(state, "r2", "guest-ip:test_failover", "{}", &error));
    g_assert_true(vr_state_intent_put(state, "r1", "reverse", "{\"cycle\": 5}", &error));
    g_assert_no_error(error);

    g_assert_false(vr_state_intent_put(state, "nosuch", "reverse", "{}", &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_assert_false(vr_state_intent_put(state, "r1", "reverse", "[1]", &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_INVALID);
    g_clear_error(&error);
    g_assert_false(vr_state_intent_put(state, "r1", "", "{}", &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_INVALID);
    g_clear_error(&error);

    g_clear_pointer(&state, vr_state_free);
    state = state_open(fx);
    list = vr_state_intent_list(state, "guest-ip:", &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 2);
    i = list->pdata[0];
    g_assert_cmpstr(i->relationship, ==, "r1");
    g_assert_cmpstr(i->kind, ==, "guest-ip:failover");
    i = list->pdata[1];
    g_assert_cmpstr(i->relationship, ==, "r2");
    g_clear_pointer(&list, g_ptr_array_unref);
    list = vr_state_intent_list(state, "reverse", &error);
    g_assert_cmpuint(list->len, ==, 1);
    i = list->pdata[0];
    g_assert_cmpstr(i->data, ==, "{\"cycle\": 5}");
    g_assert_cmpint(i->created, >, 0);
    g_clear_pointer(&list, g_ptr_array_unref);

    g_assert_true(vr_state_intent_delete(state, "r1", "reverse", &error));
    g_assert_true(vr_state_intent_delete(state, "r1", "reverse", &error));
    g_assert_no_error(error);
    g_assert_true(vr_state_relationship_delete(state, "r2", &error));
    list = vr_state_intent_list(state, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 1);
    g_assert_cmpstr(((VrStateIntent *)list->pdata[0])->kind, ==, "guest-ip:failover");
}

/* The API's authorization entries: stored in order, kept across opens, one per pattern. */
static void
test_authz(Fixture *fx, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrState) state = state_open(fx);
    g_autoptr(GPtrArray) list = NULL;
    VrStateAuthz a = { (char *)"*.dc2.example", (char *)"/srv/b", (char *)"g2", 0 };
    VrStateAuthz b = { (char *)"primary1.example", (char *)"/srv/a", (char *)"g1", 0 };
    VrStateAuthz upper = { (char *)"Upper.example", (char *)"/srv/a", (char *)"g1", 0 };
    VrStateAuthz relative = { (char *)"x.example", (char *)"srv", (char *)"g1", 0 };
    const VrStateAuthz *e;

    g_assert_true(vr_state_authz_add(state, &a, &error));
    g_assert_true(vr_state_authz_add(state, &b, &error));
    g_assert_no_error(error);
    g_assert_false(vr_state_authz_add(state, &a, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_EXISTS);
    g_assert_nonnull(strstr(error->message, "'*.dc2.example'"));
    g_clear_error(&error);
    /* The table's checks: a folded pattern, an absolute root. */
    g_assert_false(vr_state_authz_add(state, &upper, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_FAILED);
    g_clear_error(&error);
    g_assert_false(vr_state_authz_add(state, &relative, &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_FAILED);
    g_clear_error(&error);

    g_clear_pointer(&state, vr_state_free);
    state = state_open(fx);
    list = vr_state_authz_list(state, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(list->len, ==, 2);
    e = list->pdata[0];
    g_assert_cmpstr(e->pattern, ==, "*.dc2.example");
    g_assert_cmpstr(e->storage, ==, "/srv/b");
    g_assert_cmpstr(e->trust_group, ==, "g2");
    g_assert_cmpint(e->created, >, 0);
    e = list->pdata[1];
    g_assert_cmpstr(e->pattern, ==, "primary1.example");

    g_assert_true(vr_state_authz_delete(state, "*.dc2.example", &error));
    g_assert_no_error(error);
    g_assert_false(vr_state_authz_delete(state, "*.dc2.example", &error));
    g_assert_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_clear_pointer(&list, g_ptr_array_unref);
    list = vr_state_authz_list(state, &error);
    g_assert_cmpuint(list->len, ==, 1);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, func) \
    g_test_add("/state/" path, Fixture, NULL, fixture_setup, func, fixture_teardown)
    ADD("create", test_create);
    ADD("relationships", test_relationships);
    ADD("invalid", test_invalid);
    ADD("stats", test_stats);
    ADD("points", test_points);
    ADD("version", test_version);
    ADD("upgrade-v1", test_upgrade_v1);
    ADD("upgrade-v2", test_upgrade_v2);
    ADD("intents", test_intents);
    ADD("authz", test_authz);
    ADD("corrupt", test_corrupt);
    ADD("kill", test_kill);
#undef ADD
    return g_test_run();
}
