/*
 * vr-state.h: the daemon's state in SQLite: relationships, cycles, recovery points and
 * statistics
 *
 * One database file per daemon (state.db under the state directory, /var/lib/virt-replica
 * by default), mode 0600, in WAL mode with synchronous=FULL: a committed transaction
 * survives a crash or power loss, readers (the CLI through the daemon's API, a monitoring
 * scrape) never wait for the writer, and a crash at any point leaves the last committed
 * state. The schema carries a version (PRAGMA user_version); a database made by a newer
 * virt-replica is refused, not guessed at. docs/state.md has the schema.
 *
 * What is authoritative where:
 * - relationships and the cycle history live here only;
 * - the recovery points of a disk are published by the replica store's manifest rename
 *   (vr-replica-store.h: the commit point); the rows here mirror the manifest and are
 *   replaced from it after every publish and retention, and when the daemon starts
 *   (vr_state_points_sync()), so a crash between the two never leaves a point here that
 *   the store does not hold.
 *
 * A VrState is one connection: use it from one thread at a time.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>

#include "vr-replica-store.h"

G_BEGIN_DECLS

#define VR_STATE_ERROR (vr_state_error_quark())
GQuark vr_state_error_quark(void);

typedef enum {
    VR_STATE_ERROR_FAILED,    /* SQLite failed: its message, and the database path */
    VR_STATE_ERROR_CORRUPT,   /* not a database, or its integrity check fails */
    VR_STATE_ERROR_VERSION,   /* made by a newer schema than this code knows */
    VR_STATE_ERROR_NOT_FOUND, /* no such relationship */
    VR_STATE_ERROR_INVALID,   /* a value breaks a rule (named) */
    VR_STATE_ERROR_EXISTS,    /* a row with that key is there already */
} VrStateErrorCode;

/*
 * The schema version this code writes. 1: relationships, cycles, recovery points; 2: the
 * replica's authorization entries made through the API; 3: the intents. Older databases are
 * upgraded step by step in one transaction when they are opened.
 */
#define VR_STATE_SCHEMA_VERSION 3

typedef struct _VrState VrState;

/*
 * Open (or create, mode 0600) the database at @path and bring its schema up to date.
 * VERSION for a newer schema, CORRUPT for a file that is not a database or fails SQLite's
 * quick check. (transfer full)
 */
VrState *vr_state_open(const char *path, GError **error);
void vr_state_free(VrState *state);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrState, vr_state_free)

/* ---- relationships ------------------------------------------------------------------ */

typedef enum {
    VR_STATE_ROLE_PRIMARY,
    VR_STATE_ROLE_REPLICA,
} VrStateRole;

typedef struct {
    char *id;          /* the relationship identifier of the wire ([a-z0-9]{1,16}) */
    VrStateRole role;  /* this host's side */
    char *domain_name; /* the primary's domain */
    char *domain_uuid; /* its UUID, canonical text */
    char *peer;        /* primary: the replica server's name; replica: the primary's */
    uint64_t epoch;    /* above 0; every failover increments it */
    char *state;       /* the state machine's state, e.g. "Replicating" */
    char *config;      /* the relationship's settings, a JSON object */
    int64_t created;   /* wall-clock seconds */
    int64_t updated;
} VrStateRelationship;

void vr_state_relationship_free(VrStateRelationship *rel);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrStateRelationship, vr_state_relationship_free)

/*
 * Insert @rel, or update the relationship of that id (its created time is kept). @rel's
 * created and updated are ignored: the store sets them. INVALID for an id, epoch, UUID or
 * config that breaks its rule.
 */
bool vr_state_relationship_put(VrState *state, const VrStateRelationship *rel, GError **error);

/* The relationship @id, or NULL with NOT_FOUND. (transfer full) */
VrStateRelationship *vr_state_relationship_get(VrState *state, const char *id, GError **error);

/* Every relationship, by id. (transfer full: a GPtrArray that frees its elements) */
GPtrArray *vr_state_relationship_list(VrState *state, GError **error);

/* Remove @id with its cycles and points; NOT_FOUND when there is none. */
bool vr_state_relationship_delete(VrState *state, const char *id, GError **error);

/* ---- cycles ------------------------------------------------------------------------- */

typedef enum {
    VR_STATE_CYCLE_OK,     /* acknowledged by the replica (primary) or published (replica) */
    VR_STATE_CYCLE_FAILED, /* it ran and failed; @error says why */
    VR_STATE_CYCLE_MISSED, /* its time came and it could not run (replica down, deferred) */
} VrStateCycleResult;

typedef struct {
    uint64_t cycle; /* the target cycle number (0 for a missed slot that got none) */
    VrStateCycleResult result;
    uint32_t flags;      /* VrWireFlags of its stream (FULL, RESYNC, APP_CONSISTENT) */
    int64_t started_ms;  /* wall-clock milliseconds: the cut (primary) or the first byte */
    int64_t finished_ms; /* acknowledgement, publication or failure */
    uint64_t bytes;      /* disk bytes the cycle carried (DATA and ZERO) */
    uint64_t wire_bytes; /* bytes of its stream */
    const char *error;   /* FAILED and MISSED: why (may be NULL otherwise) */
} VrStateCycle;

/* Record one cycle of relationship @id (history: one row per attempt). */
bool vr_state_cycle_add(VrState *state, const char *id, const VrStateCycle *cycle, GError **error);

/* Statistics over cycles that finished at or after @since_ms, like Measure-VMReplication. */
typedef struct {
    uint64_t cycles_ok;
    uint64_t cycles_failed;
    uint64_t cycles_missed;
    uint64_t resyncs;   /* successful cycles with the RESYNC flag */
    uint64_t avg_bytes; /* over successful cycles; 0 when there is none */
    uint64_t max_bytes;
    uint64_t avg_latency_ms; /* finished - started, over successful cycles */
    uint64_t max_latency_ms;
    int64_t last_ok_ms;     /* when the latest successful cycle finished; 0: never */
    uint64_t last_ok_cycle; /* its cycle number */
} VrStateStats;

bool vr_state_stats(VrState *state, const char *id, int64_t since_ms, VrStateStats *stats,
                    GError **error);

/* Forget cycles that finished before @before_ms (the history is kept for a bounded time). */
bool vr_state_prune_cycles(VrState *state, int64_t before_ms, GError **error);

/* ---- recovery points (replica) ------------------------------------------------------ */

/*
 * Make the rows of disk @disk of relationship @id equal @points (as the store lists them),
 * in one transaction. The relationship must exist (NOT_FOUND).
 */
bool vr_state_points_sync(VrState *state, const char *id, const char *disk,
                          const VrReplicaPoint *points, guint n_points, GError **error);

/* The disks of @id that have points, by name. (transfer full: a GPtrArray of strings) */
GPtrArray *vr_state_disk_list(VrState *state, const char *id, GError **error);

/* The points of @disk of @id, oldest first. (transfer full: a GArray of VrReplicaPoint) */
GArray *vr_state_points_list(VrState *state, const char *id, const char *disk, GError **error);

/* ---- authorization entries (replica) ------------------------------------------------- */

/*
 * The entries of the replica's authorization table that were added through the API
 * (vr-authz.h, VR_AUTHZ_ORIGIN_API): the configuration file's are never stored here. The
 * values are checked by vr_authz_add_origin() before they come here; this store only keeps
 * them.
 */
typedef struct {
    char *pattern;     /* lower case, the table's key */
    char *storage;     /* absolute path of the storage root */
    char *trust_group; /* [a-z0-9-]{1,32} */
    int64_t created;   /* wall-clock seconds; set by the store */
} VrStateAuthz;

void vr_state_authz_free(VrStateAuthz *entry);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrStateAuthz, vr_state_authz_free)

/* Store @entry (its created time is set here). EXISTS when its pattern is there already. */
bool vr_state_authz_add(VrState *state, const VrStateAuthz *entry, GError **error);

/* Remove the entry of @pattern; NOT_FOUND when there is none. */
bool vr_state_authz_delete(VrState *state, const char *pattern, GError **error);

/* Every entry, in the order they were added. (transfer full: a GPtrArray of VrStateAuthz) */
GPtrArray *vr_state_authz_list(VrState *state, GError **error);

/* ---- intents ------------------------------------------------------------------------ */

/*
 * Work begun that a daemon restart must finish (docs/state.md, "Intents"): one row per
 * relationship and kind, its data a JSON object the owner of the kind defines. Stored
 * before the work begins, removed when it ended; the daemon's start resumes what is left.
 * A relationship's intents go with it (vr_state_relationship_delete()).
 */
typedef struct {
    char *relationship;
    char *kind;      /* e.g. "reverse", "guest-ip:failover" */
    char *data;      /* a JSON object */
    int64_t created; /* wall-clock seconds of the first put; set by the store */
} VrStateIntent;

void vr_state_intent_free(VrStateIntent *intent);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrStateIntent, vr_state_intent_free)

/*
 * Store (or replace) the intent @kind of @relationship with @data (a JSON object text),
 * durably. NOT_FOUND without such a relationship, INVALID for an empty kind or data that is
 * not an object.
 */
bool vr_state_intent_put(VrState *state, const char *relationship, const char *kind,
                         const char *data, GError **error);

/* Remove the intent @kind of @relationship; none is no error. */
bool vr_state_intent_delete(VrState *state, const char *relationship, const char *kind,
                            GError **error);

/*
 * The intents whose kind begins with @kind_prefix ("" or NULL: all), by relationship and
 * kind. (transfer full: a GPtrArray of VrStateIntent)
 */
GPtrArray *vr_state_intent_list(VrState *state, const char *kind_prefix, GError **error);

G_END_DECLS
