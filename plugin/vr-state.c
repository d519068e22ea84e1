/*
 * vr-state.c: the daemon's state in SQLite
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-state.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "vr-qmp-json.h"
#include "vr-wire.h"

G_DEFINE_QUARK(vr - state - error - quark, vr_state_error)

#define VR_STATE_BUSY_TIMEOUT_MS 5000

struct _VrState {
    char *path;
    sqlite3 *db;
};

/* Version 1. STRICT tables: a value of the wrong type is an error, not a conversion. */
static const char vr_state_schema_v1[] =
    "CREATE TABLE relationships ("
    "  id TEXT PRIMARY KEY,"
    "  role TEXT NOT NULL CHECK (role IN ('primary', 'replica')),"
    "  domain_name TEXT NOT NULL,"
    "  domain_uuid TEXT NOT NULL,"
    "  peer TEXT NOT NULL,"
    "  epoch INTEGER NOT NULL CHECK (epoch > 0),"
    "  state TEXT NOT NULL,"
    "  config TEXT NOT NULL CHECK (json_type(config) = 'object'),"
    "  created INTEGER NOT NULL,"
    "  updated INTEGER NOT NULL"
    ") STRICT;"
    "CREATE TABLE cycles ("
    "  relationship TEXT NOT NULL REFERENCES relationships (id) ON DELETE CASCADE,"
    "  cycle INTEGER NOT NULL CHECK (cycle >= 0),"
    "  result TEXT NOT NULL CHECK (result IN ('ok', 'failed', 'missed')),"
    "  flags INTEGER NOT NULL,"
    "  started_ms INTEGER NOT NULL,"
    "  finished_ms INTEGER NOT NULL CHECK (finished_ms >= started_ms),"
    "  bytes INTEGER NOT NULL CHECK (bytes >= 0),"
    "  wire_bytes INTEGER NOT NULL CHECK (wire_bytes >= 0),"
    "  error TEXT"
    ") STRICT;"
    "CREATE INDEX cycles_by_time ON cycles (relationship, finished_ms);"
    "CREATE TABLE recovery_points ("
    "  relationship TEXT NOT NULL REFERENCES relationships (id) ON DELETE CASCADE,"
    "  disk TEXT NOT NULL,"
    "  cycle INTEGER NOT NULL CHECK (cycle > 0),"
    "  epoch INTEGER NOT NULL,"
    "  virtual_size INTEGER NOT NULL,"
    "  flags INTEGER NOT NULL,"
    "  published INTEGER NOT NULL,"
    "  digest BLOB NOT NULL CHECK (length(digest) = 32),"
    "  chain BLOB NOT NULL CHECK (length(chain) = 32),"
    "  PRIMARY KEY (relationship, disk, cycle)"
    ") STRICT;";

/*
 * Version 2: the replica's authorization entries made through the API (the configuration
 * file's stay in the file). The step from version 1; a new database runs both.
 */
static const char vr_state_schema_v2[] =
    "CREATE TABLE authorizations ("
    "  pattern TEXT PRIMARY KEY CHECK (pattern <> '' AND pattern = lower(pattern)),"
    "  storage TEXT NOT NULL CHECK (substr(storage, 1, 1) = '/'),"
    "  trust_group TEXT NOT NULL CHECK (trust_group <> ''),"
    "  created INTEGER NOT NULL"
    ") STRICT;";

/*
 * Version 3: the intents, work that a daemon restart must resume (a failover TCP/IP push
 * still pending, a reverse set-up begun). The step from version 2.
 */
static const char vr_state_schema_v3[] =
    "CREATE TABLE intents ("
    "  relationship TEXT NOT NULL REFERENCES relationships (id) ON DELETE CASCADE,"
    "  kind TEXT NOT NULL CHECK (kind <> ''),"
    "  data TEXT NOT NULL CHECK (json_type(data) = 'object'),"
    "  created INTEGER NOT NULL,"
    "  PRIMARY KEY (relationship, kind)"
    ") STRICT;";

/* ---- errors and statements ---------------------------------------------------------- */

static bool
vr_state_sqlite_error(VrState *state, GError **error, const char *what)
{
    int code = sqlite3_extended_errcode(state->db);
    int primary = code & 0xff;

    g_set_error(error, VR_STATE_ERROR,
                primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB ? VR_STATE_ERROR_CORRUPT
                                                                      : VR_STATE_ERROR_FAILED,
                "state database '%s': cannot %s: %s", state->path, what, sqlite3_errmsg(state->db));
    return false;
}

static bool
vr_state_exec(VrState *state, const char *sql, const char *what, GError **error)
{
    if (sqlite3_exec(state->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        return vr_state_sqlite_error(state, error, what);
    return true;
}

static sqlite3_stmt *
vr_state_prepare(VrState *state, const char *sql, GError **error)
{
    sqlite3_stmt *stmt = NULL;

    if (sqlite3_prepare_v2(state->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        vr_state_sqlite_error(state, error, "prepare a statement");
        return NULL;
    }
    return stmt;
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(sqlite3_stmt, sqlite3_finalize)

/* Run @stmt to its end (a statement that returns no row). */
static bool
vr_state_step_done(VrState *state, sqlite3_stmt *stmt, const char *what, GError **error)
{
    int rc = sqlite3_step(stmt);

    if (rc != SQLITE_DONE)
        return vr_state_sqlite_error(state, error, what);
    return true;
}

static void
vr_state_rollback(VrState *state)
{
    /* Nothing to report: the transaction's own error is the one the caller gets. */
    sqlite3_exec(state->db, "ROLLBACK", NULL, NULL, NULL);
}

static int64_t
vr_state_now(void)
{
    return g_get_real_time() / G_USEC_PER_SEC;
}

/* ---- opening ------------------------------------------------------------------------ */

static bool
vr_state_pragma_text(VrState *state, const char *sql, const char *expect, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt = vr_state_prepare(state, sql, error);
    const char *got;

    if (stmt == NULL)
        return false;
    if (sqlite3_step(stmt) != SQLITE_ROW)
        return vr_state_sqlite_error(state, error, sql);
    got = (const char *)sqlite3_column_text(stmt, 0);
    if (got == NULL || g_ascii_strcasecmp(got, expect) != 0) {
        g_set_error(error, VR_STATE_ERROR,
                    strcmp(expect, "ok") == 0 ? VR_STATE_ERROR_CORRUPT : VR_STATE_ERROR_FAILED,
                    "state database '%s': %s gave '%s', not '%s'", state->path, sql,
                    got != NULL ? got : "", expect);
        return false;
    }
    return true;
}

static bool
vr_state_user_version(VrState *state, int64_t *version, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt = vr_state_prepare(state, "PRAGMA user_version", error);

    if (stmt == NULL)
        return false;
    if (sqlite3_step(stmt) != SQLITE_ROW)
        return vr_state_sqlite_error(state, error, "read the schema version");
    *version = sqlite3_column_int64(stmt, 0);
    return true;
}

static bool
vr_state_migrate(VrState *state, GError **error)
{
    g_autofree char *set_version = NULL;
    int64_t version = 0;

    if (!vr_state_exec(state, "BEGIN IMMEDIATE", "begin the schema transaction", error))
        return false;
    if (!vr_state_user_version(state, &version, error))
        goto fail;
    if (version > VR_STATE_SCHEMA_VERSION) {
        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_VERSION,
                    "state database '%s' has schema version %" G_GINT64_FORMAT
                    ", newer than this virt-replica knows (%d)",
                    state->path, version, VR_STATE_SCHEMA_VERSION);
        goto fail;
    }
    if (version == VR_STATE_SCHEMA_VERSION)
        return vr_state_exec(state, "COMMIT", "end the schema transaction", error);
    /* Step by step from the version found; version 0 is an empty database. */
    if (version < 1 && !vr_state_exec(state, vr_state_schema_v1, "create the schema", error))
        goto fail;
    if (version < 2 &&
        !vr_state_exec(state, vr_state_schema_v2, "upgrade the schema to version 2", error))
        goto fail;
    if (version < 3 &&
        !vr_state_exec(state, vr_state_schema_v3, "upgrade the schema to version 3", error))
        goto fail;
    set_version = g_strdup_printf("PRAGMA user_version = %d", VR_STATE_SCHEMA_VERSION);
    if (!vr_state_exec(state, set_version, "set the schema version", error) ||
        !vr_state_exec(state, "COMMIT", "commit the schema", error))
        goto fail;
    g_debug("state database '%s': schema version %" G_GINT64_FORMAT " brought to %d", state->path,
            version, VR_STATE_SCHEMA_VERSION);
    return true;

fail:
    vr_state_rollback(state);
    return false;
}

VrState *
vr_state_open(const char *path, GError **error)
{
    g_autoptr(VrState) state = g_new0(VrState, 1);
    int fd;
    int rc;

    state->path = g_strdup(path);
    /* Created 0600 before SQLite sees it (it would use the umask); never through a link. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int errsv = errno;

        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_FAILED,
                    "cannot open state database '%s': %s", path, g_strerror(errsv));
        return NULL;
    }
    close(fd);
    rc =
        sqlite3_open_v2(path, &state->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW, NULL);
    if (rc != SQLITE_OK) {
        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_FAILED,
                    "cannot open state database '%s': %s", path,
                    state->db != NULL ? sqlite3_errmsg(state->db) : sqlite3_errstr(rc));
        return NULL;
    }
    sqlite3_extended_result_codes(state->db, 1);
    sqlite3_busy_timeout(state->db, VR_STATE_BUSY_TIMEOUT_MS);
    if (!vr_state_pragma_text(state, "PRAGMA quick_check", "ok", error) ||
        !vr_state_pragma_text(state, "PRAGMA journal_mode = WAL", "wal", error) ||
        !vr_state_exec(state, "PRAGMA synchronous = FULL", "set synchronous=FULL", error) ||
        !vr_state_exec(state, "PRAGMA foreign_keys = ON", "enable foreign keys", error) ||
        !vr_state_migrate(state, error))
        return NULL;
    return g_steal_pointer(&state);
}

void
vr_state_free(VrState *state)
{
    if (state == NULL)
        return;
    if (state->db != NULL)
        sqlite3_close_v2(state->db);
    g_free(state->path);
    g_free(state);
}

/* ---- relationships ------------------------------------------------------------------ */

void
vr_state_relationship_free(VrStateRelationship *rel)
{
    if (rel == NULL)
        return;
    g_free(rel->id);
    g_free(rel->domain_name);
    g_free(rel->domain_uuid);
    g_free(rel->peer);
    g_free(rel->state);
    g_free(rel->config);
    g_free(rel);
}

static const char *
vr_state_role_name(VrStateRole role)
{
    return role == VR_STATE_ROLE_PRIMARY ? "primary" : "replica";
}

static bool vr_state_invalid(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static bool
vr_state_invalid(GError **error, const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    g_propagate_error(error, g_error_new_valist(VR_STATE_ERROR, VR_STATE_ERROR_INVALID, fmt, args));
    va_end(args);
    return false;
}

/* The names of the wire (vr-wire.h): 1 to @max of [a-z0-9]. */
static bool
vr_state_name_valid(const char *name, size_t max)
{
    size_t len = name != NULL ? strlen(name) : 0;

    if (len == 0 || len > max)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!g_ascii_islower(name[i]) && !g_ascii_isdigit(name[i]))
            return false;
    }
    return true;
}

static bool
vr_state_check_relationship(const VrStateRelationship *rel, GError **error)
{
    g_autoptr(json_object) config = NULL;

    if (!vr_state_name_valid(rel->id, VR_WIRE_RELATIONSHIP_MAX))
        return vr_state_invalid(error, "relationship id '%s' is not 1 to %d of [a-z0-9]",
                                rel->id != NULL ? rel->id : "", VR_WIRE_RELATIONSHIP_MAX);
    if (rel->epoch == 0 || rel->epoch > G_MAXINT64)
        return vr_state_invalid(
            error, "relationship '%s': epoch %" G_GUINT64_FORMAT " is not between 1 and 2^63-1",
            rel->id, rel->epoch);
    if (rel->domain_uuid == NULL || !g_uuid_string_is_valid(rel->domain_uuid))
        return vr_state_invalid(error, "relationship '%s': '%s' is not a UUID", rel->id,
                                rel->domain_uuid != NULL ? rel->domain_uuid : "");
    if (rel->domain_name == NULL || rel->domain_name[0] == '\0' || rel->peer == NULL ||
        rel->peer[0] == '\0' || rel->state == NULL || rel->state[0] == '\0')
        return vr_state_invalid(error,
                                "relationship '%s': domain name, peer and state are "
                                "required",
                                rel->id);
    if (rel->config != NULL) {
        config = json_tokener_parse(rel->config);
        if (config == NULL || !json_object_is_type(config, json_type_object))
            return vr_state_invalid(error, "relationship '%s': config is not a JSON object",
                                    rel->id);
    }
    return true;
}

bool
vr_state_relationship_put(VrState *state, const VrStateRelationship *rel, GError **error)
{
    static const char sql[] =
        "INSERT INTO relationships (id, role, domain_name, domain_uuid, peer, epoch, state,"
        " config, created, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
        " ON CONFLICT (id) DO UPDATE SET role = ?2, domain_name = ?3, domain_uuid = ?4,"
        " peer = ?5, epoch = ?6, state = ?7, config = ?8, updated = ?9";
    g_autoptr(sqlite3_stmt) stmt = NULL;

    if (!vr_state_check_relationship(rel, error))
        return false;
    stmt = vr_state_prepare(state, sql, error);
    if (stmt == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, rel->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, vr_state_role_name(rel->role), -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, rel->domain_name, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 4, rel->domain_uuid, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 5, rel->peer, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 6, (sqlite3_int64)rel->epoch);
    sqlite3_bind_text(stmt, 7, rel->state, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 8, rel->config != NULL ? rel->config : "{}", -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 9, vr_state_now());
    return vr_state_step_done(state, stmt, "store a relationship", error);
}

#define VR_STATE_RELATIONSHIP_COLUMNS \
    "id, role, domain_name, domain_uuid, peer, epoch, state, config, created, updated"

static VrStateRelationship *
vr_state_relationship_row(sqlite3_stmt *stmt)
{
    VrStateRelationship *rel = g_new0(VrStateRelationship, 1);

    rel->id = g_strdup((const char *)sqlite3_column_text(stmt, 0));
    rel->role = g_strcmp0((const char *)sqlite3_column_text(stmt, 1), "primary") == 0
                    ? VR_STATE_ROLE_PRIMARY
                    : VR_STATE_ROLE_REPLICA;
    rel->domain_name = g_strdup((const char *)sqlite3_column_text(stmt, 2));
    rel->domain_uuid = g_strdup((const char *)sqlite3_column_text(stmt, 3));
    rel->peer = g_strdup((const char *)sqlite3_column_text(stmt, 4));
    rel->epoch = (uint64_t)sqlite3_column_int64(stmt, 5);
    rel->state = g_strdup((const char *)sqlite3_column_text(stmt, 6));
    rel->config = g_strdup((const char *)sqlite3_column_text(stmt, 7));
    rel->created = sqlite3_column_int64(stmt, 8);
    rel->updated = sqlite3_column_int64(stmt, 9);
    return rel;
}

VrStateRelationship *
vr_state_relationship_get(VrState *state, const char *id, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt = vr_state_prepare(
        state, "SELECT " VR_STATE_RELATIONSHIP_COLUMNS " FROM relationships WHERE id = ?1", error);
    int rc;

    if (stmt == NULL)
        return NULL;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return vr_state_relationship_row(stmt);
    if (rc == SQLITE_DONE)
        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND, "no relationship '%s'", id);
    else
        vr_state_sqlite_error(state, error, "read a relationship");
    return NULL;
}

GPtrArray *
vr_state_relationship_list(VrState *state, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt = vr_state_prepare(
        state, "SELECT " VR_STATE_RELATIONSHIP_COLUMNS " FROM relationships ORDER BY id", error);
    g_autoptr(GPtrArray) list =
        g_ptr_array_new_with_free_func((GDestroyNotify)vr_state_relationship_free);
    int rc;

    if (stmt == NULL)
        return NULL;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        g_ptr_array_add(list, vr_state_relationship_row(stmt));
    if (rc != SQLITE_DONE) {
        vr_state_sqlite_error(state, error, "list the relationships");
        return NULL;
    }
    return g_steal_pointer(&list);
}

bool
vr_state_relationship_delete(VrState *state, const char *id, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt =
        vr_state_prepare(state, "DELETE FROM relationships WHERE id = ?1", error);

    if (stmt == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    if (!vr_state_step_done(state, stmt, "remove a relationship", error))
        return false;
    if (sqlite3_changes(state->db) == 0) {
        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND, "no relationship '%s'", id);
        return false;
    }
    return true;
}

/* ---- cycles ------------------------------------------------------------------------- */

static const char *const vr_state_results[] = { "ok", "failed", "missed" };

/* NOT_FOUND unless relationship @id exists (a clearer error than the foreign key's). */
static bool
vr_state_require(VrState *state, const char *id, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt =
        vr_state_prepare(state, "SELECT 1 FROM relationships WHERE id = ?1", error);
    int rc;

    if (stmt == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW)
        return true;
    if (rc == SQLITE_DONE) {
        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND, "no relationship '%s'", id);
        return false;
    }
    return vr_state_sqlite_error(state, error, "look up a relationship");
}

bool
vr_state_cycle_add(VrState *state, const char *id, const VrStateCycle *cycle, GError **error)
{
    static const char sql[] =
        "INSERT INTO cycles (relationship, cycle, result, flags, started_ms, finished_ms, bytes,"
        " wire_bytes, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    g_autoptr(sqlite3_stmt) stmt = NULL;

    if ((guint)cycle->result >= G_N_ELEMENTS(vr_state_results))
        return vr_state_invalid(error, "cycle %" G_GUINT64_FORMAT ": result %d is unknown",
                                cycle->cycle, (int)cycle->result);
    if (cycle->finished_ms < cycle->started_ms)
        return vr_state_invalid(error, "cycle %" G_GUINT64_FORMAT " finished before it started",
                                cycle->cycle);
    if (cycle->cycle > G_MAXINT64 || cycle->bytes > G_MAXINT64 || cycle->wire_bytes > G_MAXINT64)
        return vr_state_invalid(error, "cycle %" G_GUINT64_FORMAT ": a count is above 2^63-1",
                                cycle->cycle);
    if (!vr_state_require(state, id, error))
        return false;
    stmt = vr_state_prepare(state, sql, error);
    if (stmt == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, (sqlite3_int64)cycle->cycle);
    sqlite3_bind_text(stmt, 3, vr_state_results[cycle->result], -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 4, cycle->flags);
    sqlite3_bind_int64(stmt, 5, cycle->started_ms);
    sqlite3_bind_int64(stmt, 6, cycle->finished_ms);
    sqlite3_bind_int64(stmt, 7, (sqlite3_int64)cycle->bytes);
    sqlite3_bind_int64(stmt, 8, (sqlite3_int64)cycle->wire_bytes);
    if (cycle->error != NULL)
        sqlite3_bind_text(stmt, 9, cycle->error, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(stmt, 9);
    return vr_state_step_done(state, stmt, "record a cycle", error);
}

bool
vr_state_stats(VrState *state, const char *id, int64_t since_ms, VrStateStats *stats,
               GError **error)
{
    /* Averages rounded down, in integers: no floating point in the figures. */
    static const char sql[] =
        "SELECT"
        " count(*) FILTER (WHERE result = 'ok'),"
        " count(*) FILTER (WHERE result = 'failed'),"
        " count(*) FILTER (WHERE result = 'missed'),"
        " count(*) FILTER (WHERE result = 'ok' AND flags & ?3 != 0),"
        " coalesce(sum(bytes) FILTER (WHERE result = 'ok'), 0),"
        " coalesce(max(bytes) FILTER (WHERE result = 'ok'), 0),"
        " coalesce(sum(finished_ms - started_ms) FILTER (WHERE result = 'ok'), 0),"
        " coalesce(max(finished_ms - started_ms) FILTER (WHERE result = 'ok'), 0)"
        " FROM cycles WHERE relationship = ?1 AND finished_ms >= ?2";
    static const char last_sql[] =
        "SELECT finished_ms, cycle FROM cycles WHERE relationship = ?1 AND result = 'ok'"
        " ORDER BY finished_ms DESC, rowid DESC LIMIT 1";
    g_autoptr(sqlite3_stmt) stmt = NULL;
    g_autoptr(sqlite3_stmt) last = NULL;
    uint64_t sum_bytes, sum_latency;
    int rc;

    memset(stats, 0, sizeof(*stats));
    if (!vr_state_require(state, id, error))
        return false;
    stmt = vr_state_prepare(state, sql, error);
    last = vr_state_prepare(state, last_sql, error == NULL || *error == NULL ? error : NULL);
    if (stmt == NULL || last == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, since_ms);
    sqlite3_bind_int64(stmt, 3, VR_WIRE_FLAG_RESYNC);
    if (sqlite3_step(stmt) != SQLITE_ROW)
        return vr_state_sqlite_error(state, error, "compute statistics");
    stats->cycles_ok = (uint64_t)sqlite3_column_int64(stmt, 0);
    stats->cycles_failed = (uint64_t)sqlite3_column_int64(stmt, 1);
    stats->cycles_missed = (uint64_t)sqlite3_column_int64(stmt, 2);
    stats->resyncs = (uint64_t)sqlite3_column_int64(stmt, 3);
    sum_bytes = (uint64_t)sqlite3_column_int64(stmt, 4);
    stats->max_bytes = (uint64_t)sqlite3_column_int64(stmt, 5);
    sum_latency = (uint64_t)sqlite3_column_int64(stmt, 6);
    stats->max_latency_ms = (uint64_t)sqlite3_column_int64(stmt, 7);
    if (stats->cycles_ok > 0) {
        stats->avg_bytes = sum_bytes / stats->cycles_ok;
        stats->avg_latency_ms = sum_latency / stats->cycles_ok;
    }
    /* The last success ever, not only in the window: the RPO counts from it. */
    sqlite3_bind_text(last, 1, id, -1, SQLITE_STATIC);
    rc = sqlite3_step(last);
    if (rc == SQLITE_ROW) {
        stats->last_ok_ms = sqlite3_column_int64(last, 0);
        stats->last_ok_cycle = (uint64_t)sqlite3_column_int64(last, 1);
    } else if (rc != SQLITE_DONE) {
        return vr_state_sqlite_error(state, error, "find the last successful cycle");
    }
    return true;
}

bool
vr_state_prune_cycles(VrState *state, int64_t before_ms, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt =
        vr_state_prepare(state, "DELETE FROM cycles WHERE finished_ms < ?1", error);

    if (stmt == NULL)
        return false;
    sqlite3_bind_int64(stmt, 1, before_ms);
    return vr_state_step_done(state, stmt, "prune the cycle history", error);
}

/* ---- recovery points ---------------------------------------------------------------- */

bool
vr_state_points_sync(VrState *state, const char *id, const char *disk, const VrReplicaPoint *points,
                     guint n_points, GError **error)
{
    static const char insert_sql[] =
        "INSERT INTO recovery_points (relationship, disk, cycle, epoch, virtual_size, flags,"
        " published, digest, chain) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    g_autoptr(sqlite3_stmt) del = NULL;
    g_autoptr(sqlite3_stmt) ins = NULL;

    if (!vr_state_name_valid(disk, VR_WIRE_DISK_MAX))
        return vr_state_invalid(error, "disk name '%s' is not 1 to %d of [a-z0-9]", disk,
                                VR_WIRE_DISK_MAX);
    if (!vr_state_exec(state, "BEGIN IMMEDIATE", "begin a transaction", error))
        return false;
    if (!vr_state_require(state, id, error))
        goto fail;
    del = vr_state_prepare(
        state, "DELETE FROM recovery_points WHERE relationship = ?1 AND disk = ?2", error);
    if (del == NULL)
        goto fail;
    sqlite3_bind_text(del, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(del, 2, disk, -1, SQLITE_STATIC);
    if (!vr_state_step_done(state, del, "replace the recovery points", error))
        goto fail;
    ins = vr_state_prepare(state, insert_sql, error);
    if (ins == NULL)
        goto fail;
    for (guint i = 0; i < n_points; i++) {
        const VrReplicaPoint *p = &points[i];

        sqlite3_reset(ins);
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 2, disk, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, (sqlite3_int64)p->cycle);
        sqlite3_bind_int64(ins, 4, (sqlite3_int64)p->epoch);
        sqlite3_bind_int64(ins, 5, (sqlite3_int64)p->virtual_size);
        sqlite3_bind_int64(ins, 6, p->flags);
        sqlite3_bind_int64(ins, 7, p->published);
        sqlite3_bind_blob(ins, 8, p->digest, sizeof(p->digest), SQLITE_STATIC);
        sqlite3_bind_blob(ins, 9, p->chain, sizeof(p->chain), SQLITE_STATIC);
        if (!vr_state_step_done(state, ins, "store a recovery point", error))
            goto fail;
    }
    return vr_state_exec(state, "COMMIT", "commit the recovery points", error);

fail:
    vr_state_rollback(state);
    return false;
}

GPtrArray *
vr_state_disk_list(VrState *state, const char *id, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt = vr_state_prepare(
        state, "SELECT DISTINCT disk FROM recovery_points WHERE relationship = ?1 ORDER BY disk",
        error);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    int rc;

    if (stmt == NULL)
        return NULL;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW)
        g_ptr_array_add(names, g_strdup((const char *)sqlite3_column_text(stmt, 0)));
    if (rc != SQLITE_DONE) {
        vr_state_sqlite_error(state, error, "list the disks");
        return NULL;
    }
    return g_steal_pointer(&names);
}

GArray *
vr_state_points_list(VrState *state, const char *id, const char *disk, GError **error)
{
    static const char sql[] =
        "SELECT cycle, epoch, virtual_size, flags, published, digest, chain FROM recovery_points"
        " WHERE relationship = ?1 AND disk = ?2 ORDER BY cycle";
    g_autoptr(sqlite3_stmt) stmt = vr_state_prepare(state, sql, error);
    g_autoptr(GArray) points = g_array_new(FALSE, TRUE, sizeof(VrReplicaPoint));
    int rc;

    if (stmt == NULL)
        return NULL;
    sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, disk, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        VrReplicaPoint p = { 0 };

        p.cycle = (uint64_t)sqlite3_column_int64(stmt, 0);
        p.epoch = (uint64_t)sqlite3_column_int64(stmt, 1);
        p.virtual_size = (uint64_t)sqlite3_column_int64(stmt, 2);
        p.flags = (uint32_t)sqlite3_column_int64(stmt, 3);
        p.published = sqlite3_column_int64(stmt, 4);
        /* The schema's CHECKs keep both at 32 bytes. */
        memcpy(p.digest, sqlite3_column_blob(stmt, 5), sizeof(p.digest));
        memcpy(p.chain, sqlite3_column_blob(stmt, 6), sizeof(p.chain));
        g_array_append_val(points, p);
    }
    if (rc != SQLITE_DONE) {
        vr_state_sqlite_error(state, error, "list the recovery points");
        return NULL;
    }
    return g_steal_pointer(&points);
}

/* ---- authorization entries (replica) --------------------------------------------------- */

void
vr_state_authz_free(VrStateAuthz *entry)
{
    if (entry == NULL)
        return;
    g_free(entry->pattern);
    g_free(entry->storage);
    g_free(entry->trust_group);
    g_free(entry);
}

bool
vr_state_authz_add(VrState *state, const VrStateAuthz *entry, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt =
        vr_state_prepare(state,
                         "INSERT INTO authorizations (pattern, storage, trust_group, created)"
                         " VALUES (?1, ?2, ?3, ?4)",
                         error);
    int rc;

    if (stmt == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, entry->pattern, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, entry->storage, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, entry->trust_group, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 4, vr_state_now());
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE)
        return true;
    if (sqlite3_extended_errcode(state->db) == SQLITE_CONSTRAINT_PRIMARYKEY) {
        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_EXISTS,
                    "state database '%s': an authorization entry for '%s' is there already",
                    state->path, entry->pattern);
        return false;
    }
    return vr_state_sqlite_error(state, error, "store an authorization entry");
}

bool
vr_state_authz_delete(VrState *state, const char *pattern, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt =
        vr_state_prepare(state, "DELETE FROM authorizations WHERE pattern = ?1", error);

    if (stmt == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, pattern, -1, SQLITE_STATIC);
    if (!vr_state_step_done(state, stmt, "remove an authorization entry", error))
        return false;
    if (sqlite3_changes(state->db) == 0) {
        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND,
                    "no authorization entry for '%s'", pattern);
        return false;
    }
    return true;
}

GPtrArray *
vr_state_authz_list(VrState *state, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt = vr_state_prepare(
        state, "SELECT pattern, storage, trust_group, created FROM authorizations ORDER BY rowid",
        error);
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func((GDestroyNotify)vr_state_authz_free);
    int rc;

    if (stmt == NULL)
        return NULL;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        VrStateAuthz *e = g_new0(VrStateAuthz, 1);

        e->pattern = g_strdup((const char *)sqlite3_column_text(stmt, 0));
        e->storage = g_strdup((const char *)sqlite3_column_text(stmt, 1));
        e->trust_group = g_strdup((const char *)sqlite3_column_text(stmt, 2));
        e->created = sqlite3_column_int64(stmt, 3);
        g_ptr_array_add(list, e);
    }
    if (rc != SQLITE_DONE) {
        vr_state_sqlite_error(state, error, "list the authorization entries");
        return NULL;
    }
    return g_steal_pointer(&list);
}

/* ---- intents ------------------------------------------------------------------------- */

void
vr_state_intent_free(VrStateIntent *intent)
{
    if (intent == NULL)
        return;
    g_free(intent->relationship);
    g_free(intent->kind);
    g_free(intent->data);
    g_free(intent);
}

bool
vr_state_intent_put(VrState *state, const char *relationship, const char *kind, const char *data,
                    GError **error)
{
    g_autoptr(sqlite3_stmt) stmt = NULL;
    g_autoptr(json_object) obj = data != NULL ? json_tokener_parse(data) : NULL;
    int rc;

    if (kind == NULL || kind[0] == '\0' || !json_object_is_type(obj, json_type_object))
        return vr_state_invalid(error,
                                "intent '%s' of relationship '%s': a kind and a JSON "
                                "object are required",
                                kind != NULL ? kind : "", relationship);
    stmt = vr_state_prepare(state,
                            "INSERT INTO intents (relationship, kind, data, created)"
                            " VALUES (?1, ?2, ?3, ?4)"
                            " ON CONFLICT (relationship, kind) DO UPDATE SET data = ?3",
                            error);
    if (stmt == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, relationship, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, kind, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, data, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 4, vr_state_now());
    rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE)
        return true;
    if (sqlite3_extended_errcode(state->db) == SQLITE_CONSTRAINT_FOREIGNKEY) {
        g_set_error(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND,
                    "state database '%s': no relationship '%s' for intent '%s'", state->path,
                    relationship, kind);
        return false;
    }
    return vr_state_sqlite_error(state, error, "store an intent");
}

bool
vr_state_intent_delete(VrState *state, const char *relationship, const char *kind, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt =
        vr_state_prepare(state, "DELETE FROM intents WHERE relationship = ?1 AND kind = ?2", error);

    if (stmt == NULL)
        return false;
    sqlite3_bind_text(stmt, 1, relationship, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, kind, -1, SQLITE_STATIC);
    return vr_state_step_done(state, stmt, "remove an intent", error);
}

GPtrArray *
vr_state_intent_list(VrState *state, const char *kind_prefix, GError **error)
{
    g_autoptr(sqlite3_stmt) stmt =
        vr_state_prepare(state,
                         "SELECT relationship, kind, data, created FROM intents"
                         " WHERE substr(kind, 1, length(?1)) = ?1 ORDER BY relationship, kind",
                         error);
    g_autoptr(GPtrArray) list =
        g_ptr_array_new_with_free_func((GDestroyNotify)vr_state_intent_free);
    int rc;

    if (stmt == NULL)
        return NULL;
    sqlite3_bind_text(stmt, 1, kind_prefix != NULL ? kind_prefix : "", -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        VrStateIntent *i = g_new0(VrStateIntent, 1);

        i->relationship = g_strdup((const char *)sqlite3_column_text(stmt, 0));
        i->kind = g_strdup((const char *)sqlite3_column_text(stmt, 1));
        i->data = g_strdup((const char *)sqlite3_column_text(stmt, 2));
        i->created = sqlite3_column_int64(stmt, 3);
        g_ptr_array_add(list, i);
    }
    if (rc != SQLITE_DONE) {
        vr_state_sqlite_error(state, error, "list the intents");
        return NULL;
    }
    return g_steal_pointer(&list);
}
