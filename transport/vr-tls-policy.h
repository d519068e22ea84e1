/*
 * vr-tls-policy.h: the certificate policy of the replication transport, in GnuTLS
 *
 * glib-networking alone accepts a client certificate with the serverAuth purpose only or with
 * no extended key usage, never looks at a CRL on the server side, and does not verify again
 * on a resumed TLS session. So the policy is ours: the HTTPS server applies it in
 * accept-certificate and again on every request, the client to the replica's certificate.
 * The rules and their errors are in docs/tls-policy.md:
 *
 *   trust        the chain ends at a CA of the configured CA file, never the system store
 *   dates        every certificate of the chain between notBefore and notAfter, now
 *   revocation   the leaf is not in the CRL of its CA; the CRL is signed by that CA and has
 *                not passed its nextUpdate (on by default; see check_revocation)
 *   purpose      the leaf is no CA, has the digitalSignature key usage when it has a key
 *                usage, and has the EKU of its role; a leaf without EKU is refused
 *   strength     RSA/DSA keys of 2048 bits or more, EC keys of 256 bits or more, no SHA-1
 *                or MD5 signatures, and GnuTLS's GNUTLS_PROFILE_MEDIUM
 *   name         a replica's certificate matches the configured server name (RFC 6125:
 *                SAN DNS names, else the CN; a wildcard only as the whole leftmost label)
 *
 * A policy is safe to share between threads: checks and reload take its lock.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <gio/gio.h>
#include <glib.h>
#include <gnutls/gnutls.h>

G_BEGIN_DECLS

#define VR_TLS_POLICY_ERROR (vr_tls_policy_error_quark())
GQuark vr_tls_policy_error_quark(void);

typedef enum {
    VR_TLS_POLICY_ERROR_UNTRUSTED,     /* no chain to the configured CA, unparsable, empty */
    VR_TLS_POLICY_ERROR_EXPIRED,       /* a certificate of the chain is past its notAfter */
    VR_TLS_POLICY_ERROR_NOT_YET_VALID, /* a certificate of the chain is before its notBefore */
    VR_TLS_POLICY_ERROR_REVOKED,       /* the CRL lists the certificate */
    VR_TLS_POLICY_ERROR_PURPOSE,       /* EKU of the role missing, CA as a leaf, key usage */
    VR_TLS_POLICY_ERROR_NAME,          /* the replica's certificate does not match its name */
    VR_TLS_POLICY_ERROR_WEAK,          /* short key, SHA-1/MD5 signature, insecure algorithm */
    VR_TLS_POLICY_ERROR_CRL,           /* CRL missing, unreadable, not signed by the CA,
                                          expired (at load or at check time) */
    VR_TLS_POLICY_ERROR_CONFIG,        /* CA file, configuration, private key file */
} VrTlsPolicyErrorCode;

typedef enum {
    /* We are the replica server checking a primary: the clientAuth key purpose is required. */
    VR_TLS_PEER_CLIENT,
    /* We are the primary checking the replica: serverAuth, and the name must match. */
    VR_TLS_PEER_SERVER,
} VrTlsPeerRole;

typedef struct {
    const char *ca_file;  /* PEM, one or more CA certificates; required */
    const char *crl_file; /* PEM, one CRL per CA of ca_file; required with check_revocation */
    /*
     * Callers set this to true unless the administrator switched it off (Hyper-V's
     * DisableCertRevocationCheck). When false no CRL is read and revoked certificates are
     * accepted: the caller logs a warning saying so, once, at startup (this library does
     * not log above debug).
     */
    bool check_revocation;
    VrTlsPeerRole peer_role;
    const char *server_name; /* VR_TLS_PEER_SERVER only (required there): the replica's name */
} VrTlsPolicyConfig;

typedef struct _VrTlsPolicy VrTlsPolicy;

/*
 * Load the CA file and, with check_revocation, the CRL file into a policy. The CRL file must
 * hold a CRL for every CA of the CA file, each signed by that CA and not past its nextUpdate;
 * anything else fails (VR_TLS_POLICY_ERROR_CRL: fail closed). The strings of @config are
 * copied. (transfer full)
 */
VrTlsPolicy *vr_tls_policy_new(const VrTlsPolicyConfig *config, GError **error);

/*
 * Read the CA file and the CRL file again (on SIGHUP), with the same rules as _new(). On
 * success the next check uses them; on failure the policy keeps its previous state.
 */
bool vr_tls_policy_reload(VrTlsPolicy *policy, GError **error);

/*
 * Check the peer's chain @chain of @n DER certificates, leaf first (as GnuTLS's
 * gnutls_certificate_get_peers() gives it). The error names the problem and the subject CN.
 */
bool vr_tls_policy_check_der(VrTlsPolicy *policy, const gnutls_datum_t *chain, unsigned n,
                             GError **error);

/* The same for @peer (leaf) and its issuers (g_tls_certificate_get_issuer()). */
bool vr_tls_policy_check_gtls(VrTlsPolicy *policy, GTlsCertificate *peer, GError **error);

/*
 * The peer's identity for authorization: the subject CN of @leaf (DER), or its first SAN DNS
 * name when it has no CN. It does not check anything: call it after a check passed.
 * (transfer full)
 */
char *vr_tls_policy_peer_name(const gnutls_datum_t *leaf, GError **error);
/* The same for a GTlsCertificate. (transfer full) */
char *vr_tls_policy_peer_name_gtls(GTlsCertificate *peer, GError **error);

/* NULL-safe. */
void vr_tls_policy_free(VrTlsPolicy *policy);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrTlsPolicy, vr_tls_policy_free)

/*
 * Refuse a private key file that is not a regular file, is readable or writable by group or
 * others (mode & 077), or is not owned by the current user (VR_TLS_POLICY_ERROR_CONFIG naming
 * the path and the mode or owner).
 */
bool vr_tls_check_key_file(const char *path, GError **error);

G_END_DECLS
