/*
 * vr-receiver.h: the replica's HTTPS receive endpoint (libsoup 3, mutual TLS only)
 *
 * One resource per stream, /v1/cycles/{relationship}/{disk}/{epoch}/{base}/{target}: PUT
 * uploads the wire stream (vr-wire.h), or the rest of it from an offset, with a declared
 * length or, for a stream still being written, chunked with "VR-Length: unknown" (its END
 * record ends it); HEAD tells how much of it the receiver holds. The body is streamed into
 * the decoder chunk by chunk (never accumulated) and handed to a sink record by record. An
 * upload cut by a dropped connection stays open for a while and resumes at the offset the
 * receiver reached; a request that sends bytes the receiver already has (libsoup resending
 * a PUT) is harmless. GET /v1/hashes/{relationship}/{disk} serves the hash list of the
 * disk's latest recovery point, a file the sink names, streamed from the file in pieces
 * (for a resync). PUT /v1/domains/{relationship} hands the primary's domain XML (at most
 * VR_RECEIVER_DOMAIN_MAX bytes, collected in memory) to the sink, which defines the standby
 * domain from it. POST /v1/failover/{relationship} (a planned failover's last step: a JSON
 * object of at most VR_RECEIVER_FAILOVER_MAX bytes) goes to the sink's failover(), whose
 * JSON answer is the reply (200).
 *
 * The client's certificate goes through the certificate policy (vr-tls-policy.h) in the
 * TLS handshake and again on every request, then through authorization (vr-authz.h). At
 * most max_active bodies are read at once; later requests wait, unread, until one ends.
 * The protocol, status codes and error rules are in docs/protocol.md ("HTTPS receive
 * endpoint").
 *
 * Called from the thread-default main context the receiver was created in, only.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <gio/gio.h>
#include <glib.h>

#include "vr-authz.h"
#include "vr-tls-policy.h"
#include "vr-wire.h"

G_BEGIN_DECLS

#define VR_RECEIVER_ERROR (vr_receiver_error_quark())
GQuark vr_receiver_error_quark(void);

/* The largest domain XML PUT /v1/domains/{relationship} takes (a larger one is 413). */
#define VR_RECEIVER_DOMAIN_MAX (1024 * 1024)

/* The largest request body POST /v1/failover/{relationship} takes (a larger one is 413). */
#define VR_RECEIVER_FAILOVER_MAX (64 * 1024)

/*
 * What a sink may answer to steer the HTTP status. Other errors: G_IO_ERROR_NO_SPACE is
 * 507, VR_AUTHZ_ERROR_FORBIDDEN 403, VR_AUTHZ_ERROR_INVALID and VR_WIRE_ERROR 400, the rest
 * 500.
 */
typedef enum {
    VR_RECEIVER_ERROR_FORBIDDEN, /* 403: this primary may not write this relationship */
    VR_RECEIVER_ERROR_CONFLICT,  /* 409: a stale epoch, a base the replica does not hold */
    VR_RECEIVER_ERROR_NO_SPACE,  /* 507: the replica's storage is full */
    VR_RECEIVER_ERROR_COMMITTED, /* begin(): this very stream is already committed (204) */
    VR_RECEIVER_ERROR_NOT_FOUND, /* 404: hashes(): no such relationship or disk, or no point */
    VR_RECEIVER_ERROR_BUSY,      /* 503 with Retry-After: try again in a while */
    VR_RECEIVER_ERROR_INVALID,   /* 400: what the primary sent cannot be used (a bad domain XML) */
} VrReceiverErrorCode;

/* What names a stream: the URL, checked against the stream's BEGIN record. */
typedef struct {
    char relationship[VR_WIRE_RELATIONSHIP_MAX + 1];
    char disk[VR_WIRE_DISK_MAX + 1];
    uint64_t epoch;
    uint64_t base_cycle;
    uint64_t target_cycle;
} VrReceiverKey;

/* The authenticated, authorized primary. */
typedef struct {
    const char *name;         /* its certificate identity */
    const char *storage_root; /* from the authorization entry that matched */
    const char *group;        /* its trust group */
} VrReceiverPeer;

/*
 * Where the verified records of one stream go. Every member is required but hashes(),
 * domain() and failover().
 * begin() is called
 * once per stream, when its first request (offset 0) has its headers and before any of its
 * body is read; then record() for every record in stream order (BEGIN, whose identity the
 * receiver already matched against the key, then DATA, ZERO, HASHES and END), possibly
 * across several requests when an upload resumes; then, once END is verified and nothing
 * followed it, commit() once. A handle ends with a successful commit() or with abort(),
 * never both: after any failure, including a failed commit() and an interrupted upload
 * that was not resumed in time, abort() is called and nothing is committed.
 */
typedef struct {
    /*
     * A stream @key from @peer starts: a handle for it (non-NULL), or NULL and @error, whose
     * code gives the status (above). Authorization of the relationship, epoch and replay
     * decisions belong here.
     */
    gpointer (*begin)(const VrReceiverKey *key, const VrReceiverPeer *peer, gpointer user_data,
                      GError **error);
    /* One verified record (transfer none, valid during the call). */
    bool (*record)(gpointer handle, const VrWireRecord *record, GError **error);
    /* The stream is complete and verified: make it durable. */
    bool (*commit)(gpointer handle, GError **error);
    /* Forget what @handle received. */
    void (*abort)(gpointer handle);
    /*
     * Optional (NULL: GET /v1/hashes/... is answered 501). The hash list (the file format of
     * plugin/vr-hashlist.h) of the latest recovery point of disk @disk of @relationship, for
     * @peer (names already checked: [a-z0-9]{1,16} and [a-z0-9]{1,31}): *@path_out (transfer
     * full) names a complete list file, which the receiver opens at once and serves from its
     * descriptor (so the sink may unlink or replace it afterwards, never rewrite it in
     * place); *@cycle_out and *@epoch_out are the point it describes. The trust-group rule
     * is the sink's; an error's code gives the status: VR_RECEIVER_ERROR_FORBIDDEN 403,
     * _NOT_FOUND 404, _BUSY 503 (others as above). It may block the receiver's thread
     * while it computes the list.
     */
    bool (*hashes)(const char *relationship, const char *disk, const VrReceiverPeer *peer,
                   gpointer user_data, char **path_out, uint64_t *cycle_out, uint64_t *epoch_out,
                   GError **error);
    /*
     * Optional (NULL: PUT /v1/domains/... is answered 501). The primary's inactive domain
     * XML for @relationship (name already checked: [a-z0-9]{1,16}) from @peer: @xml holds
     * @len bytes, 1 to VR_RECEIVER_DOMAIN_MAX, followed by a NUL that @len does not count
     * (the body may contain a NUL of its own: the sink refuses it). Transfer none, valid
     * during the call. The trust-group rule, the XML's checks and storing it are the sink's;
     * an error's code gives the status: VR_RECEIVER_ERROR_FORBIDDEN 403, _CONFLICT 409,
     * _NOT_FOUND 404, _INVALID 400 (others as above); true: 204. Called once the whole body
     * is in, on the receiver's thread, without a turn.
     */
    bool (*domain)(const char *relationship, const VrReceiverPeer *peer, const char *xml, gsize len,
                   gpointer user_data, GError **error);
    /*
     * Optional (NULL: POST /v1/failover/... is answered 501). A planned failover asked by
     * the primary (docs/failover.md): @body holds @len bytes (1 to VR_RECEIVER_FAILOVER_MAX,
     * application/json, not parsed here) followed by a NUL. *@reply_out (transfer full) is
     * the JSON answer, sent with 200. The trust-group rule and what the body means are the
     * sink's; an error's code gives the status as for domain(). Called once the whole body
     * is in, on the receiver's thread, without a turn; it may block the thread meanwhile.
     */
    bool (*failover)(const char *relationship, const VrReceiverPeer *peer, const char *body,
                     gsize len, gpointer user_data, char **reply_out, GError **error);
} VrReceiverSink;

/*
 * A client was refused before reaching the sink: in the TLS handshake (its certificate
 * failed the policy) or with 403 (the per-request policy check, or authorization).
 * @address is the client's address, @reason names the exact problem. For the audit log.
 */
typedef void (*VrReceiverRefusedFunc)(const char *address, const char *reason, gpointer user_data);

typedef struct {
    const char *cert_file; /* PEM: the server certificate (and its chain) */
    const char *key_file;  /* PEM: its private key */
    /* The policy for clients (peer role VR_TLS_PEER_CLIENT); borrowed, outlives the receiver */
    VrTlsPolicy *policy;
    VrAuthz *authz;              /* which primaries may write; borrowed, outlives the receiver */
    GInetSocketAddress *address; /* where to listen; port 0 picks one (see get_uris) */
    uint64_t max_body_size;      /* a larger stream (VR-Length) is refused with 413; required */
    const VrReceiverSink *sink;  /* borrowed, outlives the receiver */
    gpointer sink_data;          /* the sink's begin(), hashes() and domain() user_data */
    guint max_active;            /* bodies read at once; 0: 4 */
    guint io_timeout_s;          /* a connection silent for this long is closed; 0: 60 */
    guint resume_timeout_s;      /* an interrupted upload waits this long; 0: 600 */
    /* A request waits this long for a turn, then gets 503 (below the clients' I/O timeout);
     * 0: 30 */
    guint queue_timeout_s;
    /* Uploads open at once, interrupted ones included (each holds up to one record in
     * memory); beyond it a primary's own oldest interrupted upload is dropped, else 503;
     * 0: 8 * max_active */
    guint max_open_uploads;
    VrReceiverRefusedFunc refused; /* optional */
    gpointer refused_data;
} VrReceiverConfig;

typedef struct _VrReceiver VrReceiver;

/* Load the certificate, start listening (HTTPS only). (transfer full) */
VrReceiver *vr_receiver_new(const VrReceiverConfig *config, GError **error);

/* The URIs it listens on, with the bound port. (transfer full: g_slist_free_full g_uri_unref) */
GSList *vr_receiver_get_uris(VrReceiver *receiver);

/* Requests whose body is being read, and requests waiting for a turn. */
void vr_receiver_get_load(VrReceiver *receiver, guint *active, guint *queued);

/* Stop listening; transfers in flight and interrupted uploads are aborted. NULL-safe. */
void vr_receiver_free(VrReceiver *receiver);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrReceiver, vr_receiver_free)

G_END_DECLS
