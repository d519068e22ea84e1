/*
 * test-tls-policy.c: the certificate policy against certificates made by certtool
 *
 * make-pki.sh generates the matrix once per run into the scratch directory; each row of
 * the table below checks one certificate chain (PEM file, leaf first) for one role, and
 * expects success or one error code with a phrase of its message.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/x509.h>

#include "vr-test-util.h"
#include "vr-tls-policy.h"

#define OK (-1)

static char *pki;          /* where make-pki.sh wrote the matrix, or NULL */
static char *pki_skip_why; /* why every test skips */

static bool
skip_without_pki(void)
{
    if (pki != NULL)
        return false;
    g_test_skip(pki_skip_why);
    return true;
}

static char *
pki_path(const char *name)
{
    return g_build_filename(pki, name, NULL);
}

/* ---- the chain of a PEM file ---------------------------------------------------------- */

typedef struct {
    gnutls_datum_t *der;
    unsigned n;
} Chain;

static void
chain_free(Chain *chain)
{
    if (chain == NULL)
        return;
    for (unsigned i = 0; i < chain->n; i++)
        gnutls_free(chain->der[i].data);
    g_free(chain->der);
    g_free(chain);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Chain, chain_free)

/* The certificates of PEM file @name of the matrix, as DER, in file order. */
static Chain *
chain_load(const char *name)
{
    g_autofree char *path = pki_path(name);
    g_autofree char *contents = NULL;
    gsize len = 0;
    gnutls_datum_t pem;
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;
    Chain *chain = g_new0(Chain, 1);

    g_assert_true(g_file_get_contents(path, &contents, &len, NULL));
    pem.data = (unsigned char *)contents;
    pem.size = len;
    g_assert_cmpint(gnutls_x509_crt_list_import2(&crts, &n, &pem, GNUTLS_X509_FMT_PEM, 0), ==, 0);
    g_assert_cmpuint(n, >, 0);
    chain->der = g_new0(gnutls_datum_t, n);
    chain->n = n;
    for (unsigned i = 0; i < n; i++) {
        g_assert_cmpint(gnutls_x509_crt_export2(crts[i], GNUTLS_X509_FMT_DER, &chain->der[i]), ==,
                        0);
        gnutls_x509_crt_deinit(crts[i]);
    }
    gnutls_free(crts);
    return chain;
}

static VrTlsPolicy *
policy_new(VrTlsPeerRole role, const char *server_name, bool revocation, const char *crl,
           GError **error)
{
    g_autofree char *ca = pki_path("ca.pem");
    g_autofree char *crl_path = pki_path(crl != NULL ? crl : "crl.pem");
    VrTlsPolicyConfig config = {
        .ca_file = ca,
        .crl_file = crl_path,
        .check_revocation = revocation,
        .peer_role = role,
        .server_name = server_name,
    };

    return vr_tls_policy_new(&config, error);
}

/* Check the chain of @cert; NULL error on success. */
static GError *
check_file(VrTlsPolicy *policy, const char *cert)
{
    g_autoptr(Chain) chain = chain_load(cert);
    GError *error = NULL;
    bool ok = vr_tls_policy_check_der(policy, chain->der, chain->n, &error);

    g_assert_true(ok == (error == NULL));
    return error;
}

static void
assert_error(GError *error, int code, const char *substring)
{
    if (code == OK) {
        g_assert_no_error(error);
        return;
    }
    g_assert_nonnull(error);
    g_test_message("error: %s", error->message);
    g_assert_error(error, VR_TLS_POLICY_ERROR, code);
    if (substring != NULL && strstr(error->message, substring) == NULL)
        g_error("'%s' is not in the message '%s'", substring, error->message);
}

/* ---- the matrix ----------------------------------------------------------------------- */

typedef struct {
    const char *path; /* the test path under /tls-policy/check/ */
    const char *cert; /* PEM file of the matrix (leaf first) */
    VrTlsPeerRole role;
    const char *server_name;
    bool revocation;
    int code; /* OK or a VrTlsPolicyErrorCode */
    const char *message;
    bool optional; /* skip when make-pki.sh could not make @cert with this GnuTLS */
} Case;

#define C VR_TLS_PEER_CLIENT
#define S VR_TLS_PEER_SERVER

#define DO_TEST(path, cert, role, name, revocation, code, message) \
    {                                                              \
        path, cert, role, name, revocation, code, message, false   \
    }
#define DO_TEST_OPTIONAL(path, cert, role, name, revocation, code, message) \
    {                                                                       \
        path, cert, role, name, revocation, code, message, true             \
    }

static const Case cases[] = {
    /* A primary's certificate, checked by the replica (E2, E5..E12). */
    DO_TEST("client-ok", "client-ok.pem", C, NULL, true, OK, NULL),
    DO_TEST("client-chain", "client-chain.pem", C, NULL, true, OK, NULL),
    DO_TEST("client-later-revoked-not-yet", "client-later-revoked.pem", C, NULL, true, OK, NULL),
    DO_TEST("client-expired", "client-expired.pem", C, NULL, true, VR_TLS_POLICY_ERROR_EXPIRED,
            "certificate of 'expired1' expired on 2021-01-01 00:00:00 UTC"),
    DO_TEST("client-notyet", "client-notyet.pem", C, NULL, true, VR_TLS_POLICY_ERROR_NOT_YET_VALID,
            "certificate of 'future1' is not valid before 2099-01-01 00:00:00 UTC (check the "
            "clocks)"),
    DO_TEST("client-serverauth-only", "client-serverauth-only.pem", C, NULL, true,
            VR_TLS_POLICY_ERROR_PURPOSE,
            "certificate of 'primary2' lacks the clientAuth key purpose"),
    DO_TEST("client-noeku", "client-noeku.pem", C, NULL, true, VR_TLS_POLICY_ERROR_PURPOSE,
            "certificate of 'noeku1' has no extended key usage; the clientAuth key purpose is "
            "required"),
    DO_TEST("client-untrusted", "client-untrusted.pem", C, NULL, true,
            VR_TLS_POLICY_ERROR_UNTRUSTED,
            "certificate of 'stranger1' is not signed by the configured CA"),
    DO_TEST("client-selfsigned", "client-selfsigned.pem", C, NULL, true,
            VR_TLS_POLICY_ERROR_UNTRUSTED,
            "certificate of 'selfish1' is self-signed, not signed by the configured CA"),
    DO_TEST("client-revoked", "client-revoked.pem", C, NULL, true, VR_TLS_POLICY_ERROR_REVOKED,
            "certificate of 'revoked1' is revoked"),
    DO_TEST("client-revoked-unchecked", "client-revoked.pem", C, NULL, false, OK, NULL),
    DO_TEST("client-weak-rsa", "client-weak-rsa.pem", C, NULL, true, VR_TLS_POLICY_ERROR_WEAK,
            "certificate of 'weak1' uses a weak key (RSA 1024 bits)"),
    DO_TEST_OPTIONAL("client-weak-p192", "client-weak-p192.pem", C, NULL, true,
                     VR_TLS_POLICY_ERROR_WEAK,
                     "certificate of 'weak2' uses a weak key (EC 192 bits)"),
    DO_TEST_OPTIONAL("client-sha1", "client-sha1.pem", C, NULL, true, VR_TLS_POLICY_ERROR_WEAK,
                     "certificate of 'sha1' uses a weak signature (ECDSA-SHA1)"),
    DO_TEST("ca-as-leaf", "ca-leaf.pem", C, NULL, true, VR_TLS_POLICY_ERROR_PURPOSE,
            "certificate of 'subca1' is a CA certificate (basicConstraints CA:TRUE)"),
    DO_TEST("root-as-leaf", "ca.pem", C, NULL, true, VR_TLS_POLICY_ERROR_PURPOSE,
            "certificate of 'VR Test CA' is a CA certificate"),
    DO_TEST("server-cert-as-client", "server-ok.pem", C, NULL, true, VR_TLS_POLICY_ERROR_PURPOSE,
            "certificate of 'replica.example' lacks the clientAuth key purpose"),

    /* The replica's certificate, checked by a primary (E17, E18). */
    DO_TEST("server-ok", "server-ok.pem", S, "replica.example", true, OK, NULL),
    DO_TEST("server-ok-unchecked", "server-ok.pem", S, "replica.example", false, OK, NULL),
    DO_TEST("server-wildcard", "server-ok.pem", S, "node7.dr.example", true, OK, NULL),
    DO_TEST("server-case", "server-ok.pem", S, "Replica.Example", true, OK, NULL),
    DO_TEST("server-wrong-name", "server-ok.pem", S, "dr.example", true, VR_TLS_POLICY_ERROR_NAME,
            "certificate of 'replica.example' does not match the name 'dr.example'"),
    DO_TEST("server-wildcard-one-label", "server-ok.pem", S, "a.b.dr.example", true,
            VR_TLS_POLICY_ERROR_NAME,
            "certificate of 'replica.example' does not match the name 'a.b.dr.example'"),
    DO_TEST("server-other-name", "server-ok.pem", S, "other.example", true,
            VR_TLS_POLICY_ERROR_NAME, "does not match the name 'other.example'"),
    DO_TEST("server-two-wildcards", "server-multiwild.pem", S, "a.b.example", true,
            VR_TLS_POLICY_ERROR_NAME,
            "certificate of 'multi' does not match the name 'a.b.example'"),
    DO_TEST("server-clientauth-only", "server-clientauth-only.pem", S, "replica.example", true,
            VR_TLS_POLICY_ERROR_PURPOSE,
            "certificate of 'replica.example' lacks the serverAuth key purpose"),
    DO_TEST("client-cert-as-server", "client-ok.pem", S, "primary1", true,
            VR_TLS_POLICY_ERROR_PURPOSE,
            "certificate of 'primary1' lacks the serverAuth key purpose"),
    DO_TEST("server-untrusted", "client-untrusted.pem", S, "stranger1", true,
            VR_TLS_POLICY_ERROR_UNTRUSTED, "is not signed by the configured CA"),
};

static void
test_check(gconstpointer data)
{
    const Case *c = data;
    g_autoptr(VrTlsPolicy) policy = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;

    if (skip_without_pki())
        return;
    path = pki_path(c->cert);
    if (c->optional && !g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_test_skip("this GnuTLS could not make the certificate (see make-pki.sh)");
        return;
    }
    policy = policy_new(c->role, c->server_name, c->revocation, NULL, &error);
    g_assert_no_error(error);
    error = check_file(policy, c->cert);
    assert_error(error, c->code, c->message);
}

/* ---- loading ------------------------------------------------------------------------ */

typedef struct {
    const char *path;
    const char *ca;  /* NULL: no CA file */
    const char *crl; /* NULL: no CRL file */
    bool revocation;
    VrTlsPeerRole role;
    const char *server_name;
    int code;
    const char *message;
} LoadCase;

static const LoadCase load_cases[] = {
    { "ok", "ca.pem", "crl.pem", true, C, NULL, OK, NULL },
    { "no-crl-unchecked", "ca.pem", NULL, false, C, NULL, OK, NULL },
    { "missing-crl-unchecked", "ca.pem", "missing.pem", false, C, NULL, OK, NULL },
    /* E15: fail closed. */
    { "no-crl", "ca.pem", NULL, true, C, NULL, VR_TLS_POLICY_ERROR_CRL,
      "revocation checking is on but no CRL file is configured" },
    { "missing-crl", "ca.pem", "missing.pem", true, C, NULL, VR_TLS_POLICY_ERROR_CRL,
      "cannot read CRL file" },
    { "not-a-crl", "ca.pem", "client-ok.pem", true, C, NULL, VR_TLS_POLICY_ERROR_CRL,
      "holds no readable PEM CRL" },
    /* E13 at load. */
    { "expired-crl", "ca.pem", "crl-expired.pem", true, C, NULL, VR_TLS_POLICY_ERROR_CRL,
      "CRL of 'VR Test CA' in '" },
    /* E14. */
    { "crl-of-other-ca", "ca.pem", "crl-ca2.pem", true, C, NULL, VR_TLS_POLICY_ERROR_CRL,
      "is not issued by the configured CA" },
    { "crl-bad-signature", "ca.pem", "crl-fake.pem", true, C, NULL, VR_TLS_POLICY_ERROR_CRL,
      "is not signed by the configured CA 'VR Test CA'" },
    { "missing-ca", "missing.pem", "crl.pem", true, C, NULL, VR_TLS_POLICY_ERROR_CONFIG,
      "cannot read CA file" },
    { "no-ca", NULL, "crl.pem", true, C, NULL, VR_TLS_POLICY_ERROR_CONFIG,
      "no CA file configured" },
    { "leaf-as-ca", "client-ok.pem", "crl.pem", true, C, NULL, VR_TLS_POLICY_ERROR_CONFIG,
      "certificate 'primary1' of CA file" },
    { "no-server-name", "ca.pem", "crl.pem", true, S, NULL, VR_TLS_POLICY_ERROR_CONFIG,
      "no server name configured" },
};

static void
test_load(gconstpointer data)
{
    const LoadCase *c = data;
    g_autofree char *ca = NULL;
    g_autofree char *crl = NULL;
    g_autoptr(VrTlsPolicy) policy = NULL;
    g_autoptr(GError) error = NULL;
    VrTlsPolicyConfig config = { 0 };

    if (skip_without_pki())
        return;
    ca = c->ca != NULL ? pki_path(c->ca) : NULL;
    crl = c->crl != NULL ? pki_path(c->crl) : NULL;
    config.ca_file = ca;
    config.crl_file = crl;
    config.check_revocation = c->revocation;
    config.peer_role = c->role;
    config.server_name = c->server_name;
    policy = vr_tls_policy_new(&config, &error);
    g_assert_true((policy != NULL) == (error == NULL));
    assert_error(error, c->code, c->message);
    if (c->code == VR_TLS_POLICY_ERROR_CRL && strstr(c->path, "expired") != NULL)
        g_assert_nonnull(strstr(error->message, "expired on 2021-01-01 00:00:00 UTC"));
}

/* ---- CRL reload (E16) ----------------------------------------------------------------- */

static void
copy_file(const char *from, const char *to)
{
    g_autofree char *src = pki_path(from);
    g_autofree char *contents = NULL;
    gsize len = 0;

    g_assert_true(g_file_get_contents(src, &contents, &len, NULL));
    g_assert_true(g_file_set_contents(to, contents, len, NULL));
}

static void
test_reload(void)
{
    g_autofree char *ca = NULL;
    g_autofree char *live = NULL;
    g_autoptr(VrTlsPolicy) policy = NULL;
    g_autoptr(GError) error = NULL;
    VrTlsPolicyConfig config = { 0 };

    if (skip_without_pki())
        return;
    ca = pki_path("ca.pem");
    live = vr_test_path("crl-live.pem");
    copy_file("crl.pem", live);
    config.ca_file = ca;
    config.crl_file = live;
    config.check_revocation = true;
    config.peer_role = VR_TLS_PEER_CLIENT;
    policy = vr_tls_policy_new(&config, &error);
    g_assert_no_error(error);

    error = check_file(policy, "client-later-revoked.pem");
    assert_error(error, OK, NULL);

    /* The CA revokes primary3: the next check after the reload refuses it. */
    copy_file("crl-new.pem", live);
    error = check_file(policy, "client-later-revoked.pem");
    assert_error(error, OK, NULL); /* not reloaded yet */
    g_assert_true(vr_tls_policy_reload(policy, &error));
    g_assert_no_error(error);
    error = check_file(policy, "client-later-revoked.pem");
    assert_error(error, VR_TLS_POLICY_ERROR_REVOKED, "certificate of 'primary3' is revoked");
    g_clear_error(&error);
    error = check_file(policy, "client-ok.pem");
    assert_error(error, OK, NULL);

    /* A bad CRL on reload: an error, and the policy keeps the CRL it had. */
    copy_file("crl-expired.pem", live);
    g_assert_false(vr_tls_policy_reload(policy, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_CRL, "expired on 2021-01-01");
    g_clear_error(&error);
    g_assert_no_errno(unlink(live));
    g_assert_false(vr_tls_policy_reload(policy, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_CRL, "cannot read CRL file");
    g_clear_error(&error);
    error = check_file(policy, "client-later-revoked.pem");
    assert_error(error, VR_TLS_POLICY_ERROR_REVOKED, "certificate of 'primary3' is revoked");
    g_clear_error(&error);
    error = check_file(policy, "client-ok.pem");
    assert_error(error, OK, NULL);
}

/* E13 at check time: a CRL loaded while valid that passes its nextUpdate refuses everyone. */
static void
test_crl_expires(void)
{
    g_autofree char *ca = NULL;
    g_autofree char *tmpl = NULL;
    g_autofree char *crl = NULL;
    g_autofree char *ca_path = NULL;
    g_autofree char *ca_key = NULL;
    g_autofree char *text = NULL;
    g_autoptr(GDateTime) now = g_date_time_new_now_utc();
    g_autoptr(GDateTime) before = g_date_time_add_minutes(now, -5);
    g_autoptr(GDateTime) next = g_date_time_add_seconds(now, 2);
    g_autofree char *before_s = g_date_time_format(before, "%Y-%m-%d %H:%M:%S");
    g_autofree char *next_s = g_date_time_format(next, "%Y-%m-%d %H:%M:%S");
    g_autoptr(VrTlsPolicy) policy = NULL;
    g_autoptr(GError) error = NULL;
    VrTlsPolicyConfig config = { 0 };
    int status = 0;

    if (skip_without_pki())
        return;
    ca_path = pki_path("ca.pem");
    ca_key = pki_path("ca-key.pem");
    tmpl = vr_test_path("crl-short.tmpl");
    crl = vr_test_path("crl-short.pem");
    text = g_strdup_printf("crl_number = 9\ncrl_this_update_date = \"%s\"\n"
                           "crl_next_update_date = \"%s\"\n",
                           before_s, next_s);
    g_assert_true(g_file_set_contents(tmpl, text, -1, NULL));
    {
        const char *argv[] = { "env",
                               "TZ=UTC",
                               "certtool",
                               "--generate-crl",
                               "--load-ca-certificate",
                               ca_path,
                               "--load-ca-privkey",
                               ca_key,
                               "--template",
                               tmpl,
                               "--outfile",
                               crl,
                               NULL };

        g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL,
                                   G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL |
                                       G_SPAWN_STDERR_TO_DEV_NULL,
                                   NULL, NULL, NULL, NULL, &status, NULL));
        g_assert_true(g_spawn_check_wait_status(status, NULL));
    }
    config.ca_file = ca_path;
    config.crl_file = crl;
    config.check_revocation = true;
    config.peer_role = VR_TLS_PEER_CLIENT;
    policy = vr_tls_policy_new(&config, &error);
    g_assert_no_error(error);
    error = check_file(policy, "client-ok.pem");
    assert_error(error, OK, NULL);

    /*
     * On time(), the clock the policy reads: it is the kernel's coarse clock, which lags the
     * one g_get_real_time() reads by up to a tick, so waiting on the latter saw no error once.
     */
    while (time(NULL) <= (time_t)g_date_time_to_unix(next))
        g_usleep(100 * 1000);
    g_test_message("nextUpdate asked: %s (%" G_GINT64_FORMAT "), now %lld", next_s,
                   g_date_time_to_unix(next), (long long)time(NULL));
    error = check_file(policy, "client-ok.pem");
    assert_error(error, VR_TLS_POLICY_ERROR_CRL, "CRL of 'VR Test CA' expired on ");
    g_assert_nonnull(
        strstr(error->message, "the certificate of 'primary1' cannot be checked for revocation"));
}

/* ---- GTlsCertificate ------------------------------------------------------------------ */

static void
test_gtls(void)
{
    g_autoptr(VrTlsPolicy) policy = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *name = NULL;
    static const struct {
        const char *cert;
        const char *key;
        bool has_issuer;
        int code;
    } rows[] = {
        { "client-ok.pem", "client-ok-key.pem", false, OK },
        { "client-chain.pem", "client-ok-key.pem", true, OK },
        { "client-revoked.pem", "client-revoked-key.pem", false, VR_TLS_POLICY_ERROR_REVOKED },
        { "client-noeku.pem", "client-noeku-key.pem", false, VR_TLS_POLICY_ERROR_PURPOSE },
    };

    if (skip_without_pki())
        return;
    if (!g_tls_backend_supports_tls(g_tls_backend_get_default())) {
        g_test_skip("no GIO TLS backend (glib-networking)");
        return;
    }
    policy = policy_new(VR_TLS_PEER_CLIENT, NULL, true, NULL, &error);
    g_assert_no_error(error);

    for (unsigned i = 0; i < G_N_ELEMENTS(rows); i++) {
        g_autofree char *cert_path = pki_path(rows[i].cert);
        g_autofree char *key_path = pki_path(rows[i].key);
        g_autoptr(GTlsCertificate) cert =
            g_tls_certificate_new_from_files(cert_path, key_path, &error);

        g_assert_no_error(error);
        g_assert_true((g_tls_certificate_get_issuer(cert) != NULL) == rows[i].has_issuer);
        g_assert_true(vr_tls_policy_check_gtls(policy, cert, &error) == (rows[i].code == OK));
        assert_error(error, rows[i].code, NULL);
        g_clear_error(&error);
    }
    {
        g_autofree char *cert_path = pki_path("client-ok.pem");
        g_autofree char *key_path = pki_path("client-ok-key.pem");
        g_autoptr(GTlsCertificate) cert =
            g_tls_certificate_new_from_files(cert_path, key_path, &error);

        g_assert_no_error(error);
        name = vr_tls_policy_peer_name_gtls(cert, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(name, ==, "primary1");
    }
    g_assert_false(vr_tls_policy_check_gtls(policy, NULL, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_UNTRUSTED, "the peer sent no certificate");
}

static void
test_peer_name(void)
{
    g_autoptr(Chain) server = NULL;
    g_autoptr(GError) error = NULL;
    g_autofree char *name = NULL;
    gnutls_datum_t junk = { (unsigned char *)"junk", 4 };
    g_autoptr(VrTlsPolicy) policy = NULL;

    if (skip_without_pki())
        return;
    server = chain_load("server-ok.pem");
    name = vr_tls_policy_peer_name(&server->der[0], &error);
    g_assert_no_error(error);
    g_assert_cmpstr(name, ==, "replica.example");

    g_assert_null(vr_tls_policy_peer_name(&junk, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_UNTRUSTED, "cannot be parsed");
    g_clear_error(&error);

    policy = policy_new(VR_TLS_PEER_CLIENT, NULL, true, NULL, &error);
    g_assert_no_error(error);
    g_assert_false(vr_tls_policy_check_der(policy, &junk, 1, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_UNTRUSTED,
                 "certificate 1 of the peer's chain cannot be parsed");
    g_clear_error(&error);
    g_assert_false(vr_tls_policy_check_der(policy, NULL, 0, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_UNTRUSTED, "the peer sent no certificate");
}

/* ---- private key files (E23) ---------------------------------------------------------- */

static void
test_key_file(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *ok = NULL;
    g_autofree char *open = NULL;
    g_autofree char *group = NULL;
    g_autofree char *missing = NULL;

    if (skip_without_pki())
        return;
    ok = pki_path("key-0600.pem");
    open = pki_path("key-0644.pem");
    missing = pki_path("missing-key.pem");

    g_assert_true(vr_tls_check_key_file(ok, &error));
    g_assert_no_error(error);

    g_assert_false(vr_tls_check_key_file(open, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_CONFIG, "has mode 0644: group or others may access it");
    g_assert_nonnull(strstr(error->message, open));
    g_clear_error(&error);

    group = vr_test_path("key-0640.pem");
    copy_file("key-0600.pem", group);
    g_assert_no_errno(chmod(group, 0640));
    g_assert_false(vr_tls_check_key_file(group, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_CONFIG, "has mode 0640");
    g_clear_error(&error);

    g_assert_false(vr_tls_check_key_file(missing, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_CONFIG, "cannot read private key file");
    g_clear_error(&error);

    g_assert_false(vr_tls_check_key_file(pki, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_CONFIG, "is not a regular file");
}

static void
test_key_file_owner(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *other = NULL;

    if (skip_without_pki())
        return;
    if (geteuid() != 0) {
        g_test_skip("giving a file to another user needs root");
        return;
    }
    other = vr_test_path("key-other.pem");
    copy_file("key-0600.pem", other);
    g_assert_no_errno(chmod(other, 0600));
    g_assert_no_errno(chown(other, 65534, 65534));
    g_assert_false(vr_tls_check_key_file(other, &error));
    assert_error(error, VR_TLS_POLICY_ERROR_CONFIG,
                 "is owned by uid 65534, not by the current user (uid 0)");
}

/* ---- main ----------------------------------------------------------------------------- */

int
main(int argc, char **argv)
{
    int rc;

    g_test_init(&argc, &argv, NULL);
    pki = vr_test_make_pki(&pki_skip_why);

    for (unsigned i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *path = g_strdup_printf("/tls-policy/check/%s", cases[i].path);

        g_test_add_data_func(path, &cases[i], test_check);
    }
    for (unsigned i = 0; i < G_N_ELEMENTS(load_cases); i++) {
        g_autofree char *path = g_strdup_printf("/tls-policy/load/%s", load_cases[i].path);

        g_test_add_data_func(path, &load_cases[i], test_load);
    }
    g_test_add_func("/tls-policy/crl/reload", test_reload);
    g_test_add_func("/tls-policy/crl/expires-while-loaded", test_crl_expires);
    g_test_add_func("/tls-policy/gtls", test_gtls);
    g_test_add_func("/tls-policy/peer-name", test_peer_name);
    g_test_add_func("/tls-policy/key-file/mode", test_key_file);
    g_test_add_func("/tls-policy/key-file/owner", test_key_file_owner);

    rc = g_test_run();
    g_free(pki);
    g_free(pki_skip_why);
    return rc;
}
