/*
 * vr-sender.h: the primary's HTTPS upload client (libsoup 3, mutual TLS only)
 *
 * Uploads one wire stream (vr-wire.h), kept in a file, to the replica's receiver
 * (vr-receiver.h): PUT with "Expect: 100-continue", the body streamed from the file in
 * small pieces (memory does not grow with the stream), through the configured bandwidth
 * limits. After a dropped connection, a timeout or a 5xx reply it waits (exponential
 * backoff with jitter), asks the receiver how much it holds (HEAD), and sends the rest from
 * there. A refusal (400, 403, 409, 413, 507) or a certificate the policy rejects is final
 * and is not retried. A stream may also be uploaded while it is written (VrSenderFeed,
 * vr_sender_upload_feed()): chunked, with "VR-Length: unknown". It also fetches the hash
 * list of a disk's latest recovery point on the replica (GET /v1/hashes/...) into a file,
 * for a resync, and sends the primary's domain XML (PUT /v1/domains/...), from which the
 * replica defines the standby domain.
 *
 * The replica is named by its DNS name (the URL's host and the identity the certificate
 * policy checks) and may be reached at another address, the replica's address on the
 * replication network, with the source address bound to this host's address there.
 *
 * A VrSender is immutable after vr_sender_new(): uploads may run in several threads at
 * once, each blocking the thread that called it (it runs its own main context).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <gio/gio.h>
#include <glib.h>

#include "vr-rate-limit.h"
#include "vr-tls-policy.h"

G_BEGIN_DECLS

#define VR_SENDER_ERROR (vr_sender_error_quark())
GQuark vr_sender_error_quark(void);

typedef enum {
    VR_SENDER_ERROR_REFUSED,     /* the receiver refused the stream (4xx); names status, reason */
    VR_SENDER_ERROR_CONFLICT,    /* 409: a stale epoch or a base the replica does not hold */
    VR_SENDER_ERROR_NO_SPACE,    /* 507: the replica's storage is full; try again later */
    VR_SENDER_ERROR_CERTIFICATE, /* the replica's certificate was refused; names the reason */
    VR_SENDER_ERROR_UNREACHABLE, /* every attempt failed; the last failure is in the message */
    VR_SENDER_ERROR_INVALID,     /* the file is not a wire stream; a reply is not a hash list */
    VR_SENDER_ERROR_NOT_FOUND,   /* 404: the replica has no such relationship, disk or point */
} VrSenderErrorCode;

typedef struct {
    const char *server_name; /* the replica's DNS name: URL host, and what its certificate names */
    guint16 port;
    /* Connect here instead of resolving @server_name (the replica on the replication
     * network); NULL: resolve @server_name. */
    GInetAddress *connect_address;
    GInetAddress *local_address; /* bind the source address here; NULL: any */
    const char *cert_file;       /* PEM: this primary's certificate (clientAuth) */
    const char *key_file;        /* PEM: its private key (not readable by group or others) */
    VrTlsPolicy *policy;         /* for the replica (VR_TLS_PEER_SERVER, server_name); borrowed */
    /* Token buckets (per host, per relationship), borrowed; NULL entries are skipped. They
     * may be shared by uploads in several threads. */
    VrRateLimit *const *limits;
    guint n_limits;
    guint max_attempts;   /* requests per upload before giving up; 0: 8 */
    guint backoff_min_ms; /* wait before the first retry; 0: 500 */
    guint backoff_max_ms; /* the longest wait; 0: 30000 */
    guint io_timeout_s;   /* a connection silent for this long fails; 0: 60 */
} VrSenderConfig;

typedef struct _VrSender VrSender;

/* Check @config and load the client certificate. (transfer full) */
VrSender *vr_sender_new(const VrSenderConfig *config, GError **error);
void vr_sender_free(VrSender *sender);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrSender, vr_sender_free)

typedef struct {
    uint64_t stream_bytes;  /* the size of the stream */
    uint64_t body_bytes;    /* request body bytes handed to the connection, all attempts */
    guint requests;         /* PUT requests sent */
    guint resumes;          /* PUTs that started past offset 0 */
    uint64_t resumed_at;    /* the offset of the last resume */
    guint busy;             /* 503 answers waited through (the replica's slots were busy) */
    bool already_committed; /* the receiver had committed this stream before */
} VrSenderStats;

/*
 * Called from the uploading thread as the body goes out: @offset of @total bytes.
 */
typedef void (*VrSenderProgress)(uint64_t offset, uint64_t total, gpointer user_data);

/*
 * Upload the wire stream in @path: its BEGIN record names the resource. Blocks until the
 * receiver committed it (true), or a final error. @stats (optional) is filled either way.
 */
bool vr_sender_upload_file(VrSender *sender, const char *path, VrSenderProgress progress,
                           gpointer progress_data, VrSenderStats *stats, GCancellable *cancellable,
                           GError **error);

/*
 * A stream file that is uploaded while it is written (vr_sender_upload_feed()): the writer
 * says how far the file is written and when it is complete; the upload follows it. Every
 * call may come from any thread.
 */
typedef struct _VrSenderFeed VrSenderFeed;

/* (transfer full) */
VrSenderFeed *vr_sender_feed_new(void);
/* NULL-safe; only once no upload uses it any more. */
void vr_sender_feed_free(VrSenderFeed *feed);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrSenderFeed, vr_sender_feed_free)
/* The writer: the stream file is open at @fd (opened again for reading: @fd stays the caller's). */
bool vr_sender_feed_attach(VrSenderFeed *feed, int fd, GError **error);
/* The writer: the file holds @size bytes now, every one of them final. */
void vr_sender_feed_grow(VrSenderFeed *feed, uint64_t size);
/* The writer: the stream is complete at the size last given, and durable. */
void vr_sender_feed_complete(VrSenderFeed *feed);
/* The writer gave up: an upload following it stops (VR_SENDER_ERROR_INVALID). */
void vr_sender_feed_fail(VrSenderFeed *feed);
/*
 * The reading side's stop: once @cancellable (a reference is kept; NULL: none) fires, the
 * stream is wanted no more (its upload failed, the run was cancelled), and the writer, which
 * asks vr_sender_feed_check() before its writes, stops. Set before the writer starts.
 */
void vr_sender_feed_set_cancellable(VrSenderFeed *feed, GCancellable *cancellable);
/* The writer: false (G_IO_ERROR_CANCELLED) once the feed's cancellable fired. */
bool vr_sender_feed_check(VrSenderFeed *feed, GError **error);
/* Whether the writer completed the stream (true) or gave up (false), once it did either. */
bool vr_sender_feed_is_complete(VrSenderFeed *feed);
/* The bytes written so far; *@complete: whether that is the stream's size. */
uint64_t vr_sender_feed_get_size(VrSenderFeed *feed, bool *complete);

/*
 * Upload the wire stream the writer of @feed writes, as vr_sender_upload_file() does, while
 * it is written: it waits for the file (vr_sender_feed_attach()) and its BEGIN record, then
 * each PUT made before the stream is complete has a chunked body and "VR-Length: unknown",
 * and sends what is written, waiting for more until the writer completes it; the receiver
 * sees the end at the END record. A PUT made once the stream is complete (a retry) declares
 * its length as vr_sender_upload_file() does. Retries resume by offset either way. @progress
 * gets the bytes written so far as its total until the stream is complete.
 */
bool vr_sender_upload_feed(VrSender *sender, VrSenderFeed *feed, VrSenderProgress progress,
                           gpointer progress_data, VrSenderStats *stats, GCancellable *cancellable,
                           GError **error);

/*
 * Fetch the hash list (the file format of plugin/vr-hashlist.h) of the latest recovery point
 * of disk @disk of @relationship from the replica into @path, and the cycle and epoch of the
 * point it describes: the base a RESYNC stream built from it applies on. The body goes to
 * "@path.part" as it comes (memory does not follow its size), its header is checked against
 * the Content-Length before the rest is read, then the file is fsynced and renamed to @path
 * (replacing it); no .part is left behind. Retried like an upload, from the start (a partial
 * list is not resumed); final: VR_SENDER_ERROR_NOT_FOUND (404), _REFUSED (403, 400 and other
 * refusals; 501: the replica serves no hash lists), _INVALID (a reply that is not a hash
 * list), _CERTIFICATE; G_IO_ERROR for @path. The bandwidth limits are not asked (they are
 * for uploads). Outputs are set on success only. Blocks its thread, like an upload.
 */
bool vr_sender_fetch_hashes(VrSender *sender, const char *relationship, const char *disk,
                            const char *path, uint64_t *cycle_out, uint64_t *epoch_out,
                            GError **error);

/*
 * Send @xml (NUL-terminated: the primary's inactive domain XML, virDomainGetXMLDesc with
 * VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE) for @relationship to the replica: PUT
 * /v1/domains/{relationship}, application/xml, "Expect: 100-continue". Retried like an upload
 * (a dropped connection, a timeout, a 5xx but 501: backoff, at most max_attempts; 503: its
 * Retry-After); final: VR_SENDER_ERROR_REFUSED (400, 403, 413, 501 and other refusals, with
 * status and reason), _CONFLICT (409), _NOT_FOUND (404), _NO_SPACE (507), _CERTIFICATE.
 * Sending the same XML again is harmless. Blocks its thread, like an upload.
 */
bool vr_sender_put_domain(VrSender *sender, const char *relationship, const char *xml,
                          GError **error);

/*
 * Ask the replica for the planned failover of @relationship (docs/failover.md): POST
 * /v1/failover/{relationship} with @json (NUL-terminated, application/json); *@reply_out
 * (transfer full) gets the replica's JSON answer (200), at most 64 KiB. Retried like
 * vr_sender_put_domain() (the replica answers a repeated request of a failover it made with
 * the same answer); final: VR_SENDER_ERROR_CONFLICT (409: the message is the replica's
 * reason), _REFUSED, _NOT_FOUND, _CERTIFICATE. Blocks its thread, like an upload.
 */
bool vr_sender_post_failover(VrSender *sender, const char *relationship, const char *json,
                             char **reply_out, GError **error);

G_END_DECLS
