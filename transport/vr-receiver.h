/*
 * vr-receiver.h: the replica's HTTPS receive endpoint (libsoup 3, mutual TLS only)
 *
 * One route, PUT /v1/cycles/{relationship}/{disk}: the request body is one wire stream
 * (vr-wire.h), streamed into the decoder chunk by chunk (never accumulated) and handed to a
 * sink record by record. The client's certificate goes through the certificate policy
 * (vr-tls-policy.h) in the TLS handshake and again on every request. The protocol, status
 * codes and error rules are in docs/protocol.md ("HTTPS receive endpoint").
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

#include "vr-tls-policy.h"
#include "vr-wire.h"

G_BEGIN_DECLS

/*
 * Where the verified records of one transfer go. Every member is required. The receiver
 * calls begin() once BEGIN verified and matched the URL; then record() for every later
 * record in stream order (DATA, ZERO, HASHES and END); then, once the decoder finished
 * (END verified, nothing after it), commit() once. A handle ends with a successful commit()
 * or with abort(), never both: after any failure, including a failed commit() and a client
 * that goes away, abort() is called and nothing is committed.
 */
typedef struct {
    /*
     * A transfer of @identity from the client whose certificate names @peer_name (the
     * policy already accepted it) starts: a handle for it (non-NULL), or NULL and @error
     * (the request fails with 500). Authorization and storage decisions belong here.
     */
    gpointer (*begin)(const VrWireIdentity *identity, const char *peer_name, gpointer user_data,
                      GError **error);
    /* One verified record (transfer none, valid during the call). */
    bool (*record)(gpointer handle, const VrWireRecord *record, GError **error);
    /* The stream is complete and verified: make it durable. */
    bool (*commit)(gpointer handle, GError **error);
    /* Forget what @handle received. */
    void (*abort)(gpointer handle);
} VrReceiverSink;

typedef struct {
    const char *cert_file; /* PEM: the server certificate (and its chain) */
    const char *key_file;  /* PEM: its private key */
    /* The policy for clients (peer role VR_TLS_PEER_CLIENT); borrowed, outlives the receiver */
    VrTlsPolicy *policy;
    GInetSocketAddress *address; /* where to listen; port 0 picks one (see get_uris) */
    uint64_t max_body_size;      /* a larger Content-Length is refused with 413 */
    const VrReceiverSink *sink;  /* borrowed, outlives the receiver */
    gpointer sink_data;          /* the sink's begin() user_data */
} VrReceiverConfig;

typedef struct _VrReceiver VrReceiver;

/* Load the certificate, start listening (HTTPS only). (transfer full) */
VrReceiver *vr_receiver_new(const VrReceiverConfig *config, GError **error);

/* The URIs it listens on, with the bound port. (transfer full: g_slist_free_full g_uri_unref) */
GSList *vr_receiver_get_uris(VrReceiver *receiver);

/* Stop listening; transfers in flight are aborted. NULL-safe. */
void vr_receiver_free(VrReceiver *receiver);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrReceiver, vr_receiver_free)

G_END_DECLS
