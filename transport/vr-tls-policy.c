/*
 * vr-tls-policy.c: the certificate policy of the replication transport, in GnuTLS
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include "vr-tls-policy.h"

GQuark
vr_tls_policy_error_quark(void)
{
    return g_quark_from_static_string("vr-tls-policy-error-quark");
}

/* A chain longer than this is refused (and a GTlsCertificate issuer loop stops here). */
#define VR_TLS_MAX_CHAIN 16
/* Subject names are cut to this many characters in messages. */
#define VR_TLS_MAX_NAME     64
#define VR_TLS_MIN_RSA_BITS 2048
#define VR_TLS_MIN_EC_BITS  256

/* What one load of the CA file and the CRL file gave; replaced whole by a reload. */
typedef struct {
    gnutls_x509_trust_list_t list; /* owns the CAs and CRLs */
    time_t crl_next_update;        /* the earliest nextUpdate of the CRLs; 0 without CRLs */
    char *crl_next_issuer;         /* the CA whose CRL expires first */
} VrTlsState;

struct _VrTlsPolicy {
    char *ca_file;
    char *crl_file;
    bool check_revocation;
    VrTlsPeerRole peer_role;
    char *server_name;

    GMutex lock; /* guards state */
    VrTlsState *state;
};

static void
vr_tls_state_free(VrTlsState *state)
{
    if (state == NULL)
        return;
    if (state->list != NULL)
        gnutls_x509_trust_list_deinit(state->list, 1);
    g_free(state->crl_next_issuer);
    g_free(state);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrTlsState, vr_tls_state_free)

/* ---- helpers ---------------------------------------------------------------------- */

static void
vr_tls_crt_free(gpointer crt)
{
    if (crt != NULL)
        gnutls_x509_crt_deinit(crt);
}

static void
vr_tls_crl_free(gpointer crl)
{
    if (crl != NULL)
        gnutls_x509_crl_deinit(crl);
}

/* "2021-01-01 00:00:00 UTC" (transfer full) */
static char *
vr_tls_format_time(time_t t)
{
    g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc((gint64)t);

    if (dt == NULL)
        return g_strdup_printf("%" G_GINT64_FORMAT, (gint64)t);
    return g_date_time_format(dt, "%Y-%m-%d %H:%M:%S UTC");
}

/* The value of the first CN of @crt's subject (@issuer false) or issuer, or NULL. */
static char *
vr_tls_crt_cn(gnutls_x509_crt_t crt, bool issuer)
{
    size_t size = 0;
    g_autofree char *buf = NULL;
    int rc;

    if (issuer)
        rc = gnutls_x509_crt_get_issuer_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, NULL,
                                                  &size);
    else
        rc = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, NULL, &size);
    if (rc != GNUTLS_E_SHORT_MEMORY_BUFFER || size == 0)
        return NULL;
    buf = g_malloc0(size + 1);
    if (issuer)
        rc = gnutls_x509_crt_get_issuer_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf,
                                                  &size);
    else
        rc = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &size);
    if (rc < 0)
        return NULL;
    /* A CN with a NUL inside is not a name we can show or authorize. */
    if (strlen(buf) != size)
        return NULL;
    return g_steal_pointer(&buf);
}

/* The first SAN DNS name of @crt, or NULL. */
static char *
vr_tls_crt_first_dns(gnutls_x509_crt_t crt)
{
    for (unsigned i = 0;; i++) {
        char buf[256];
        size_t size = sizeof(buf) - 1;
        int rc = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &size, NULL);

        if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            return NULL;
        if (rc == GNUTLS_SAN_DNSNAME && strlen(buf) == size)
            return g_strdup(buf);
    }
}

/* @name made printable for a message: control and non-ASCII bytes as '?', cut. */
static char *
vr_tls_printable(const char *name)
{
    GString *s = g_string_new(NULL);

    for (const char *p = name; *p != '\0' && s->len < VR_TLS_MAX_NAME; p++)
        g_string_append_c(s, g_ascii_isprint(*p) && *p != '\'' ? *p : '?');
    if (strlen(name) > VR_TLS_MAX_NAME)
        g_string_append(s, "...");
    return g_string_free(s, FALSE);
}

/* How a message names @crt: its CN, else its first SAN DNS name (printable). */
static char *
vr_tls_crt_label(gnutls_x509_crt_t crt)
{
    g_autofree char *name = vr_tls_crt_cn(crt, false);

    if (name == NULL)
        name = vr_tls_crt_first_dns(crt);
    if (name == NULL)
        return g_strdup("(no common name)");
    return vr_tls_printable(name);
}

static bool
vr_tls_crt_self_issued(gnutls_x509_crt_t crt)
{
    gnutls_datum_t subject = { NULL, 0 };
    gnutls_datum_t issuer = { NULL, 0 };
    bool same;

    if (gnutls_x509_crt_get_raw_dn(crt, &subject) < 0)
        return false;
    if (gnutls_x509_crt_get_raw_issuer_dn(crt, &issuer) < 0) {
        gnutls_free(subject.data);
        return false;
    }
    same = subject.size == issuer.size && memcmp(subject.data, issuer.data, subject.size) == 0;
    gnutls_free(subject.data);
    gnutls_free(issuer.data);
    return same;
}

/* At most this much of a CA or CRL file is read. */
#define VR_TLS_MAX_FILE (16 * 1024 * 1024)

/* The whole of @path into @contents, as a datum; errors name @what and the path once. */
static bool
vr_tls_read_file(const char *path, const char *what, VrTlsPolicyErrorCode code, gnutls_datum_t *out,
                 char **contents, GError **error)
{
    g_autoptr(GString) buf = g_string_new(NULL);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int saved = 0;

    if (fd < 0) {
        saved = errno;
        g_set_error(error, VR_TLS_POLICY_ERROR, code, "cannot read %s '%s': %s", what, path,
                    g_strerror(saved));
        return false;
    }
    for (;;) {
        char chunk[8192];
        ssize_t n = read(fd, chunk, sizeof(chunk));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            saved = errno;
            break;
        }
        if (n == 0)
            break;
        if (buf->len + (size_t)n > VR_TLS_MAX_FILE) {
            saved = EFBIG;
            break;
        }
        g_string_append_len(buf, chunk, n);
    }
    close(fd);
    if (saved != 0) {
        g_set_error(error, VR_TLS_POLICY_ERROR, code, "cannot read %s '%s': %s", what, path,
                    g_strerror(saved));
        return false;
    }
    out->size = (unsigned)buf->len;
    *contents = g_string_free(g_steal_pointer(&buf), FALSE);
    out->data = (unsigned char *)*contents;
    return true;
}

/* ---- loading ---------------------------------------------------------------------- */

/* Load the CRLs of @crl_file into @state, checked against @cas (owned by state->list). */
static bool
vr_tls_state_add_crls(VrTlsState *state, const char *crl_file, gnutls_x509_crt_t *cas,
                      unsigned n_cas, GError **error)
{
    g_autofree char *contents = NULL;
    gnutls_datum_t datum;
    gnutls_x509_crl_t *crls = NULL;
    unsigned n_crls = 0;
    g_autoptr(GPtrArray) owned = g_ptr_array_new_with_free_func(vr_tls_crl_free);
    g_autofree bool *covered = g_new0(bool, n_cas);
    time_t now = time(NULL);
    int rc;

    if (!vr_tls_read_file(crl_file, "CRL file", VR_TLS_POLICY_ERROR_CRL, &datum, &contents, error))
        return false;
    rc = gnutls_x509_crl_list_import2(&crls, &n_crls, &datum, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0 || n_crls == 0) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                    "CRL file '%s' holds no readable PEM CRL: %s", crl_file,
                    rc < 0 ? gnutls_strerror(rc) : "empty");
        gnutls_free(crls);
        return false;
    }
    for (unsigned i = 0; i < n_crls; i++)
        g_ptr_array_add(owned, crls[i]);
    gnutls_free(crls);

    for (unsigned i = 0; i < owned->len; i++) {
        gnutls_x509_crl_t crl = owned->pdata[i];
        unsigned status = 0;
        unsigned ca = n_cas;
        time_t next;

        for (unsigned j = 0; j < n_cas && ca == n_cas; j++) {
            if (gnutls_x509_crl_check_issuer(crl, cas[j]))
                ca = j;
        }
        if (ca == n_cas) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                        "CRL %u of '%s' is not issued by the configured CA", i + 1, crl_file);
            return false;
        }
        g_autofree char *ca_name = vr_tls_crt_label(cas[ca]);

        /*
         * The signature only: the dates are ours, below. GnuTLS reports a CRL past its
         * nextUpdate (or issued in the future) as invalid as well.
         */
        rc = gnutls_x509_crl_verify(crl, &cas[ca], 1, 0, &status);
        if (status &
            (GNUTLS_CERT_REVOCATION_DATA_SUPERSEDED | GNUTLS_CERT_REVOCATION_DATA_ISSUED_IN_FUTURE))
            status &= ~(GNUTLS_CERT_REVOCATION_DATA_SUPERSEDED |
                        GNUTLS_CERT_REVOCATION_DATA_ISSUED_IN_FUTURE | GNUTLS_CERT_INVALID);
        if (rc < 0 || status != 0) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                        "CRL %u of '%s' is not signed by the configured CA '%s'", i + 1, crl_file,
                        ca_name);
            return false;
        }
        next = gnutls_x509_crl_get_next_update(crl);
        if (next == (time_t)-1) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                        "CRL %u of '%s' has no next update time", i + 1, crl_file);
            return false;
        }
        if (next < now) {
            g_autofree char *when = vr_tls_format_time(next);

            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                        "CRL of '%s' in '%s' expired on %s", ca_name, crl_file, when);
            return false;
        }
        if (state->crl_next_update == 0 || next < state->crl_next_update) {
            state->crl_next_update = next;
            g_free(state->crl_next_issuer);
            state->crl_next_issuer = g_steal_pointer(&ca_name);
        }
        covered[ca] = true;
    }
    for (unsigned j = 0; j < n_cas; j++) {
        if (!covered[j]) {
            g_autofree char *ca_name = vr_tls_crt_label(cas[j]);

            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                        "CRL file '%s' holds no CRL of the CA '%s'", crl_file, ca_name);
            return false;
        }
    }
    /* One at a time, so that each CRL is owned either by the list or by @owned. */
    for (unsigned i = 0; i < owned->len; i++) {
        gnutls_x509_crl_t crl = owned->pdata[i];

        rc = gnutls_x509_trust_list_add_crls(
            state->list, &crl, 1, GNUTLS_TL_VERIFY_CRL | GNUTLS_TL_FAIL_ON_INVALID_CRL, 0);
        if (rc != 1) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                        "cannot add CRL %u of '%s': %s", i + 1, crl_file,
                        rc < 0 ? gnutls_strerror(rc) : "not accepted");
            return false;
        }
        owned->pdata[i] = NULL;
    }
    return true;
}

static VrTlsState *
vr_tls_state_load(const VrTlsPolicy *policy, GError **error)
{
    g_autoptr(VrTlsState) state = g_new0(VrTlsState, 1);
    g_autofree char *contents = NULL;
    gnutls_datum_t datum;
    gnutls_x509_crt_t *cas = NULL;
    unsigned n_cas = 0;
    int rc;

    if (!vr_tls_read_file(policy->ca_file, "CA file", VR_TLS_POLICY_ERROR_CONFIG, &datum, &contents,
                          error))
        return NULL;
    rc = gnutls_x509_crt_list_import2(&cas, &n_cas, &datum, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0 || n_cas == 0) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                    "CA file '%s' holds no readable PEM certificate: %s", policy->ca_file,
                    rc < 0 ? gnutls_strerror(rc) : "empty");
        gnutls_free(cas);
        return NULL;
    }
    for (unsigned i = 0; i < n_cas; i++) {
        if (gnutls_x509_crt_get_ca_status(cas[i], NULL) <= 0) {
            g_autofree char *name = vr_tls_crt_label(cas[i]);

            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                        "certificate '%s' of CA file '%s' is not a CA certificate", name,
                        policy->ca_file);
            for (unsigned j = 0; j < n_cas; j++)
                gnutls_x509_crt_deinit(cas[j]);
            gnutls_free(cas);
            return NULL;
        }
    }
    rc = gnutls_x509_trust_list_init(&state->list, 0);
    if (rc == 0)
        rc = gnutls_x509_trust_list_add_cas(state->list, cas, n_cas, 0);
    if (rc < 0) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                    "cannot load CA file '%s': %s", policy->ca_file, gnutls_strerror(rc));
        for (unsigned j = 0; j < n_cas; j++)
            gnutls_x509_crt_deinit(cas[j]);
        gnutls_free(cas);
        return NULL;
    }
    /* The certificates belong to the list now; the array is ours. */
    if (policy->check_revocation &&
        !vr_tls_state_add_crls(state, policy->crl_file, cas, n_cas, error)) {
        gnutls_free(cas);
        return NULL;
    }
    gnutls_free(cas);
    return g_steal_pointer(&state);
}

VrTlsPolicy *
vr_tls_policy_new(const VrTlsPolicyConfig *config, GError **error)
{
    g_autoptr(VrTlsPolicy) policy = NULL;

    g_return_val_if_fail(config != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);

    if (config->ca_file == NULL || *config->ca_file == '\0') {
        g_set_error_literal(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                            "no CA file configured");
        return NULL;
    }
    if (config->check_revocation && (config->crl_file == NULL || *config->crl_file == '\0')) {
        g_set_error_literal(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                            "revocation checking is on but no CRL file is configured");
        return NULL;
    }
    if (config->peer_role != VR_TLS_PEER_CLIENT && config->peer_role != VR_TLS_PEER_SERVER) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG, "unknown peer role %d",
                    (int)config->peer_role);
        return NULL;
    }
    if (config->peer_role == VR_TLS_PEER_SERVER &&
        (config->server_name == NULL || *config->server_name == '\0')) {
        g_set_error_literal(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                            "no server name configured to check the replica's certificate");
        return NULL;
    }

    policy = g_new0(VrTlsPolicy, 1);
    g_mutex_init(&policy->lock);
    policy->ca_file = g_strdup(config->ca_file);
    policy->check_revocation = config->check_revocation;
    policy->crl_file = config->check_revocation ? g_strdup(config->crl_file) : NULL;
    policy->peer_role = config->peer_role;
    policy->server_name =
        config->peer_role == VR_TLS_PEER_SERVER ? g_strdup(config->server_name) : NULL;

    policy->state = vr_tls_state_load(policy, error);
    if (policy->state == NULL)
        return NULL;
    g_debug("certificate policy: CA file '%s', revocation %s", policy->ca_file,
            policy->check_revocation ? "checked" : "not checked");
    return g_steal_pointer(&policy);
}

bool
vr_tls_policy_reload(VrTlsPolicy *policy, GError **error)
{
    g_autoptr(VrTlsState) state = NULL;
    VrTlsState *old;

    g_return_val_if_fail(policy != NULL, false);
    g_return_val_if_fail(error == NULL || *error == NULL, false);

    state = vr_tls_state_load(policy, error);
    if (state == NULL)
        return false;
    g_mutex_lock(&policy->lock);
    old = policy->state;
    policy->state = g_steal_pointer(&state);
    g_mutex_unlock(&policy->lock);
    /* Outside the lock: a check waits for the swap only. */
    vr_tls_state_free(old);
    return true;
}

void
vr_tls_policy_free(VrTlsPolicy *policy)
{
    if (policy == NULL)
        return;
    vr_tls_state_free(policy->state);
    g_mutex_clear(&policy->lock);
    g_free(policy->ca_file);
    g_free(policy->crl_file);
    g_free(policy->server_name);
    g_free(policy);
}

/* ---- checking --------------------------------------------------------------------- */

/* Every certificate of @crts between its notBefore and notAfter, now. */
static bool
vr_tls_check_dates(gnutls_x509_crt_t *crts, unsigned n, const char *leaf, GError **error)
{
    time_t now = time(NULL);

    for (unsigned i = 0; i < n; i++) {
        time_t from = gnutls_x509_crt_get_activation_time(crts[i]);
        time_t until = gnutls_x509_crt_get_expiration_time(crts[i]);
        g_autofree char *name = i == 0 ? NULL : vr_tls_crt_label(crts[i]);

        if (from == (time_t)-1 || until == (time_t)-1) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                        "certificate of '%s' has unreadable validity dates", leaf);
            return false;
        }
        if (now < from) {
            g_autofree char *when = vr_tls_format_time(from);

            if (i == 0)
                g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_NOT_YET_VALID,
                            "certificate of '%s' is not valid before %s (check the clocks)", leaf,
                            when);
            else
                g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_NOT_YET_VALID,
                            "issuer '%s' of the certificate of '%s' is not valid before %s "
                            "(check the clocks)",
                            name, leaf, when);
            return false;
        }
        if (now > until) {
            g_autofree char *when = vr_tls_format_time(until);

            if (i == 0)
                g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_EXPIRED,
                            "certificate of '%s' expired on %s", leaf, when);
            else
                g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_EXPIRED,
                            "issuer '%s' of the certificate of '%s' expired on %s", name, leaf,
                            when);
            return false;
        }
    }
    return true;
}

/* Key sizes of every certificate of the chain; signature hashes of all but self-issued ones. */
static bool
vr_tls_check_strength(gnutls_x509_crt_t *crts, unsigned n, const char *leaf, GError **error)
{
    for (unsigned i = 0; i < n; i++) {
        unsigned bits = 0;
        int pk = gnutls_x509_crt_get_pk_algorithm(crts[i], &bits);
        const char *kind = NULL;
        unsigned min = 0;
        g_autofree char *name = i == 0 ? g_strdup(leaf) : vr_tls_crt_label(crts[i]);

        switch (pk) {
        case GNUTLS_PK_RSA:
        case GNUTLS_PK_RSA_PSS:
            kind = "RSA";
            min = VR_TLS_MIN_RSA_BITS;
            break;
        case GNUTLS_PK_DSA:
            kind = "DSA";
            min = VR_TLS_MIN_RSA_BITS;
            break;
        case GNUTLS_PK_ECDSA:
        case GNUTLS_PK_EDDSA_ED25519:
        case GNUTLS_PK_EDDSA_ED448:
            kind = "EC";
            min = VR_TLS_MIN_EC_BITS;
            break;
        default:
            /* GOST and others: left to GNUTLS_PROFILE_MEDIUM. */
            break;
        }
        if (kind != NULL && bits < min) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_WEAK,
                        "certificate of '%s' uses a weak key (%s %u bits)", name, kind, bits);
            return false;
        }
        if (!vr_tls_crt_self_issued(crts[i])) {
            int sign = gnutls_x509_crt_get_signature_algorithm(crts[i]);
            gnutls_digest_algorithm_t hash = gnutls_sign_get_hash_algorithm(sign);

            if (hash == GNUTLS_DIG_SHA1 || hash == GNUTLS_DIG_MD5 || hash == GNUTLS_DIG_MD2 ||
                hash == GNUTLS_DIG_RMD160) {
                g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_WEAK,
                            "certificate of '%s' uses a weak signature (%s)", name,
                            gnutls_sign_get_name(sign));
                return false;
            }
        }
    }
    return true;
}

/* The chain through GnuTLS: trust, revocation, and the MEDIUM profile. */
static bool
vr_tls_check_chain(VrTlsState *state, gnutls_x509_crt_t *crts, unsigned n, const char *leaf,
                   GError **error)
{
    unsigned status = 0;
    unsigned flags = GNUTLS_PROFILE_TO_VFLAGS(GNUTLS_PROFILE_MEDIUM);
    int rc =
        gnutls_x509_trust_list_verify_crt2(state->list, crts, n, NULL, 0, flags, &status, NULL);

    if (rc < 0) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                    "cannot verify the certificate of '%s': %s", leaf, gnutls_strerror(rc));
        return false;
    }
    if (status == 0)
        return true;
    if (status & GNUTLS_CERT_REVOKED) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_REVOKED,
                    "certificate of '%s' is revoked", leaf);
    } else if (status & GNUTLS_CERT_INSECURE_ALGORITHM) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_WEAK,
                    "certificate of '%s' uses an insecure algorithm", leaf);
    } else if (status & GNUTLS_CERT_EXPIRED) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_EXPIRED,
                    "the chain of the certificate of '%s' holds an expired certificate", leaf);
    } else if (status & GNUTLS_CERT_NOT_ACTIVATED) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_NOT_YET_VALID,
                    "the chain of the certificate of '%s' holds a certificate not yet valid", leaf);
    } else if ((status & GNUTLS_CERT_SIGNER_NOT_FOUND) && n == 1 &&
               vr_tls_crt_self_issued(crts[0])) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                    "certificate of '%s' is self-signed, not signed by the configured CA", leaf);
    } else {
        g_autofree char *reason = NULL;

        if (status & GNUTLS_CERT_SIGNER_NOT_FOUND)
            reason = g_strdup("its issuer is unknown");
        else if (status & GNUTLS_CERT_SIGNATURE_FAILURE)
            reason = g_strdup("a signature does not verify");
        else if (status & GNUTLS_CERT_SIGNER_NOT_CA)
            reason = g_strdup("its issuer is not a CA");
        else if (status & GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE)
            reason = g_strdup("its issuer's constraints forbid it");
        else
            reason = g_strdup_printf("gnutls status 0x%x", status);
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                    "certificate of '%s' is not signed by the configured CA (%s)", leaf, reason);
    }
    return false;
}

/* What the leaf may be used for: no CA, digitalSignature, the EKU of @role. */
static bool
vr_tls_check_purpose(gnutls_x509_crt_t crt, VrTlsPeerRole role, const char *leaf, GError **error)
{
    const char *want =
        role == VR_TLS_PEER_CLIENT ? GNUTLS_KP_TLS_WWW_CLIENT : GNUTLS_KP_TLS_WWW_SERVER;
    const char *want_name = role == VR_TLS_PEER_CLIENT ? "clientAuth" : "serverAuth";
    unsigned usage = 0;
    bool any = false;

    if (gnutls_x509_crt_get_ca_status(crt, NULL) > 0) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_PURPOSE,
                    "certificate of '%s' is a CA certificate (basicConstraints CA:TRUE), not "
                    "a peer certificate",
                    leaf);
        return false;
    }
    if (gnutls_x509_crt_get_key_usage(crt, &usage, NULL) >= 0 &&
        !(usage & GNUTLS_KEY_DIGITAL_SIGNATURE)) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_PURPOSE,
                    "certificate of '%s' lacks the digitalSignature key usage", leaf);
        return false;
    }
    for (unsigned i = 0;; i++) {
        char oid[128];
        size_t size = sizeof(oid);
        int rc = gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &size, NULL);

        if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
            break;
        if (rc == GNUTLS_E_SHORT_MEMORY_BUFFER) {
            any = true; /* not an OID we look for */
            continue;
        }
        if (rc < 0) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_PURPOSE,
                        "certificate of '%s' has an unreadable extended key usage: %s", leaf,
                        gnutls_strerror(rc));
            return false;
        }
        any = true;
        if (strcmp(oid, want) == 0)
            return true;
    }
    if (!any)
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_PURPOSE,
                    "certificate of '%s' has no extended key usage; the %s key purpose is "
                    "required",
                    leaf, want_name);
    else
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_PURPOSE,
                    "certificate of '%s' lacks the %s key purpose", leaf, want_name);
    return false;
}

static bool
vr_tls_policy_check_crts(VrTlsPolicy *policy, gnutls_x509_crt_t *crts, unsigned n, GError **error)
{
    g_autofree char *leaf = vr_tls_crt_label(crts[0]);
    g_autoptr(GMutexLocker) locker = NULL;

    if (!vr_tls_check_dates(crts, n, leaf, error))
        return false;
    if (!vr_tls_check_strength(crts, n, leaf, error))
        return false;

    locker = g_mutex_locker_new(&policy->lock);
    if (policy->check_revocation && time(NULL) > policy->state->crl_next_update) {
        g_autofree char *when = vr_tls_format_time(policy->state->crl_next_update);

        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CRL,
                    "CRL of '%s' expired on %s: the certificate of '%s' cannot be checked for "
                    "revocation",
                    policy->state->crl_next_issuer, when, leaf);
        return false;
    }
    if (!vr_tls_check_chain(policy->state, crts, n, leaf, error))
        return false;
    g_clear_pointer(&locker, g_mutex_locker_free);

    if (!vr_tls_check_purpose(crts[0], policy->peer_role, leaf, error))
        return false;
    if (policy->peer_role == VR_TLS_PEER_SERVER &&
        !gnutls_x509_crt_check_hostname2(crts[0], policy->server_name, 0)) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_NAME,
                    "certificate of '%s' does not match the name '%s'", leaf, policy->server_name);
        return false;
    }
    return true;
}

/* @chain as parsed certificates in @out (a GPtrArray freeing them). */
static bool
vr_tls_import_chain(const gnutls_datum_t *chain, unsigned n, GPtrArray *out, GError **error)
{
    if (n == 0) {
        g_set_error_literal(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                            "the peer sent no certificate");
        return false;
    }
    if (n > VR_TLS_MAX_CHAIN) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                    "the peer's chain has %u certificates, more than %d", n, VR_TLS_MAX_CHAIN);
        return false;
    }
    for (unsigned i = 0; i < n; i++) {
        gnutls_x509_crt_t crt = NULL;
        int rc = gnutls_x509_crt_init(&crt);

        if (rc == 0) {
            g_ptr_array_add(out, crt);
            rc = gnutls_x509_crt_import(crt, &chain[i], GNUTLS_X509_FMT_DER);
        }
        if (rc < 0) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                        "certificate %u of the peer's chain cannot be parsed: %s", i + 1,
                        gnutls_strerror(rc));
            return false;
        }
    }
    return true;
}

bool
vr_tls_policy_check_der(VrTlsPolicy *policy, const gnutls_datum_t *chain, unsigned n,
                        GError **error)
{
    g_autoptr(GPtrArray) crts = g_ptr_array_new_with_free_func(vr_tls_crt_free);

    g_return_val_if_fail(policy != NULL, false);
    g_return_val_if_fail(chain != NULL || n == 0, false);
    g_return_val_if_fail(error == NULL || *error == NULL, false);

    if (!vr_tls_import_chain(chain, n, crts, error))
        return false;
    return vr_tls_policy_check_crts(policy, (gnutls_x509_crt_t *)crts->pdata, crts->len, error);
}

/* The DER of @peer and its issuers, leaf first: GByteArrays in @arrays, datums in @datums. */
static bool
vr_tls_gtls_chain(GTlsCertificate *peer, GPtrArray *arrays, GArray *datums, GError **error)
{
    for (GTlsCertificate *c = peer; c != NULL; c = g_tls_certificate_get_issuer(c)) {
        GByteArray *der = NULL;
        gnutls_datum_t datum;

        if (arrays->len == VR_TLS_MAX_CHAIN) {
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                        "the peer's chain has more than %d certificates", VR_TLS_MAX_CHAIN);
            return false;
        }
        g_object_get(c, "certificate", &der, NULL);
        if (der == NULL || der->len == 0) {
            if (der != NULL)
                g_byte_array_unref(der);
            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                        "certificate %u of the peer's chain has no DER data", arrays->len + 1);
            return false;
        }
        g_ptr_array_add(arrays, der);
        datum.data = der->data;
        datum.size = der->len;
        g_array_append_val(datums, datum);
    }
    return true;
}

bool
vr_tls_policy_check_gtls(VrTlsPolicy *policy, GTlsCertificate *peer, GError **error)
{
    g_autoptr(GPtrArray) arrays =
        g_ptr_array_new_with_free_func((GDestroyNotify)g_byte_array_unref);
    g_autoptr(GArray) datums = g_array_new(FALSE, FALSE, sizeof(gnutls_datum_t));

    g_return_val_if_fail(policy != NULL, false);
    g_return_val_if_fail(error == NULL || *error == NULL, false);

    if (peer == NULL) {
        g_set_error_literal(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                            "the peer sent no certificate");
        return false;
    }
    if (!vr_tls_gtls_chain(peer, arrays, datums, error))
        return false;
    return vr_tls_policy_check_der(policy, (const gnutls_datum_t *)(void *)datums->data,
                                   datums->len, error);
}

char *
vr_tls_policy_peer_name(const gnutls_datum_t *leaf, GError **error)
{
    g_autoptr(GPtrArray) crts = g_ptr_array_new_with_free_func(vr_tls_crt_free);
    g_autofree char *name = NULL;

    g_return_val_if_fail(leaf != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);

    if (!vr_tls_import_chain(leaf, 1, crts, error))
        return NULL;
    name = vr_tls_crt_cn(crts->pdata[0], false);
    if (name == NULL)
        name = vr_tls_crt_first_dns(crts->pdata[0]);
    if (name == NULL || *name == '\0') {
        g_set_error_literal(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_NAME,
                            "certificate has no common name and no DNS name");
        return NULL;
    }
    for (const char *p = name; *p != '\0'; p++) {
        if (g_ascii_iscntrl(*p)) {
            g_autofree char *shown = vr_tls_printable(name);

            g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_NAME,
                        "certificate name '%s' holds control characters", shown);
            return NULL;
        }
    }
    return g_steal_pointer(&name);
}

char *
vr_tls_policy_peer_name_gtls(GTlsCertificate *peer, GError **error)
{
    g_autoptr(GByteArray) der = NULL;
    gnutls_datum_t datum;

    g_return_val_if_fail(G_IS_TLS_CERTIFICATE(peer), NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);

    g_object_get(peer, "certificate", &der, NULL);
    if (der == NULL || der->len == 0) {
        g_set_error_literal(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_UNTRUSTED,
                            "the peer's certificate has no DER data");
        return NULL;
    }
    datum.data = der->data;
    datum.size = der->len;
    return vr_tls_policy_peer_name(&datum, error);
}

/* ---- private key files ------------------------------------------------------------ */

bool
vr_tls_check_key_file(const char *path, GError **error)
{
    struct stat st;

    g_return_val_if_fail(path != NULL, false);
    g_return_val_if_fail(error == NULL || *error == NULL, false);

    if (stat(path, &st) < 0) {
        int saved = errno;

        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                    "cannot read private key file '%s': %s", path, g_strerror(saved));
        return false;
    }
    if (!S_ISREG(st.st_mode)) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                    "private key file '%s' is not a regular file", path);
        return false;
    }
    if (st.st_mode & 077) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                    "private key file '%s' has mode %04o: group or others may access it "
                    "(chmod 600)",
                    path, (unsigned)(st.st_mode & 07777));
        return false;
    }
    if (st.st_uid != geteuid()) {
        g_set_error(error, VR_TLS_POLICY_ERROR, VR_TLS_POLICY_ERROR_CONFIG,
                    "private key file '%s' is owned by uid %u, not by the current user (uid %u)",
                    path, (unsigned)st.st_uid, (unsigned)geteuid());
        return false;
    }
    return true;
}
