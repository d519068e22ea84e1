/*
 * vr-daemon-auth.c: the replica role's resources of the local API: authorization entries and
 * the server's settings
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include "vr-daemon-auth.h"

#include "vr-daemon-api.h"

#include <string.h>

#include <gio/gio.h>

#include "vr-net.h"
#include "vr-qmp-json.h"

/* ---- loading at start ------------------------------------------------------------------- */

bool
vr_daemon_auth_load(const VrConfig *config, VrState *state, VrAuthz *authz, GError **error)
{
    g_autoptr(GPtrArray) stored = vr_state_authz_list(state, error);

    if (stored == NULL) {
        g_prefix_error(error, "cannot read the authorization entries: ");
        return false;
    }
    if (config->replica.allow_any) {
        if (stored->len > 0)
            g_warning("replica: %u authorization entries of the state database are not "
                      "consulted: [replica] allow-any = true in '%s' accepts every "
                      "authenticated primary",
                      stored->len, config->origin);
        return true;
    }
    for (guint i = 0; i < stored->len; i++) {
        const VrStateAuthz *e = stored->pdata[i];
        g_autoptr(GError) local = NULL;

        if (vr_authz_add_origin(authz, e->pattern, e->storage, e->trust_group, VR_AUTHZ_ORIGIN_API,
                                &local))
            continue;
        if (g_error_matches(local, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_EXISTS))
            g_warning("replica: authorization '%s' is both in '%s' and in the state database "
                      "(storage '%s', trust group '%s'): the configuration file's entry wins",
                      e->pattern, config->origin, e->storage, e->trust_group);
        else
            g_warning("replica: authorization '%s' of the state database is not in effect: %s",
                      e->pattern, local->message);
    }
    return true;
}

/* ---- JSON ---------------------------------------------------------------------------- */

static json_object *
vr_daemon_auth_string_or_null(const char *s)
{
    return s != NULL ? json_object_new_string(s) : NULL;
}

/* An entry (docs/api.md, "GET /v1/authorizations"). */
static json_object *
vr_daemon_auth_entry_json(const VrAuthzEntry *e)
{
    json_object *obj = json_object_new_object();

    json_object_object_add(obj, "pattern", json_object_new_string(e->pattern));
    json_object_object_add(obj, "storage", json_object_new_string(e->storage_root));
    json_object_object_add(obj, "trust_group", json_object_new_string(e->group));
    json_object_object_add(obj, "origin",
                           json_object_new_string(vr_authz_origin_to_string(e->origin)));
    return obj;
}

/* The replica role is on, or a 503 "no-replica-role" reply (as every replica resource). */
static bool
vr_daemon_auth_role(const VrDaemonReplica *replica, SoupServerMessage *msg)
{
    if (replica->authz != NULL)
        return true;
    vr_daemon_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "no-replica-role",
                          "the replica role is off on this host ([replica] enabled = false in "
                          "'%s')",
                          replica->config->origin);
    return false;
}

/* The pattern of a path segment, percent-decoded; NULL after a 400 reply. (transfer full) */
static char *
vr_daemon_auth_pattern_of(SoupServerMessage *msg, const char *segment)
{
    char *pattern = g_uri_unescape_string(segment, "/");

    if (pattern == NULL || pattern[0] == '\0' || !g_utf8_validate(pattern, -1, NULL)) {
        g_free(pattern);
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                              "'%s' is not a percent-encoded pattern", segment);
        return NULL;
    }
    return pattern;
}

/* ---- the resources ------------------------------------------------------------------- */

/* GET /v1/authorizations */
static void
vr_daemon_auth_get_list(const VrDaemonReplica *replica, SoupServerMessage *msg)
{
    const VrConfig *config = replica->config;
    g_autoptr(GPtrArray) entries = vr_authz_list(replica->authz);
    g_autoptr(json_object) body = json_object_new_object();
    json_object *array = json_object_new_array();

    json_object_object_add(body, "allow_any", json_object_new_boolean(config->replica.allow_any));
    json_object_object_add(body, "default_storage",
                           vr_daemon_auth_string_or_null(config->replica.default_storage));
    json_object_object_add(body, "default_trust_group",
                           json_object_new_string(config->replica.default_trust_group));
    for (guint i = 0; i < entries->len; i++)
        json_object_array_add(array, vr_daemon_auth_entry_json(entries->pdata[i]));
    json_object_object_add(body, "authorizations", array);
    vr_daemon_reply_json(msg, SOUP_STATUS_OK, body);
}

/* GET /v1/authorizations/{pattern} */
static void
vr_daemon_auth_get_one(const VrDaemonReplica *replica, SoupServerMessage *msg, const char *segment)
{
    g_autofree char *pattern = vr_daemon_auth_pattern_of(msg, segment);
    g_autoptr(VrAuthzEntry) entry = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(json_object) body = NULL;

    if (pattern == NULL)
        return;
    entry = vr_authz_get(replica->authz, pattern, &error);
    if (entry == NULL) {
        vr_daemon_reply_error(msg, SOUP_STATUS_NOT_FOUND, "unknown-authorization", "%s",
                              error->message);
        return;
    }
    body = vr_daemon_auth_entry_json(entry);
    vr_daemon_reply_json(msg, SOUP_STATUS_OK, body);
}

/* A string member of @request: NULL when absent; false after a 400 reply for another type. */
static bool
vr_daemon_auth_member(json_object *request, SoupServerMessage *msg, const char *member,
                      bool required, const char **value)
{
    json_object *v = NULL;

    *value = NULL;
    if (!json_object_object_get_ex(request, member, &v) || v == NULL) {
        if (!required)
            return true;
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", "'%s' is required", member);
        return false;
    }
    if (!json_object_is_type(v, json_type_string)) {
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", "'%s' is not a string",
                              member);
        return false;
    }
    *value = json_object_get_string(v);
    return true;
}

/*
 * vr_authz_add() judges patterns and groups: each is tried alone on a scratch table (root
 * "/", which exists), so that the answer names the member at fault.
 */
static bool
vr_daemon_auth_check(SoupServerMessage *msg, const char *pattern, const char *storage,
                     const char *group)
{
    g_autoptr(VrAuthz) scratch = vr_authz_new_table();
    g_autoptr(GError) error = NULL;
    g_autofree char *canonical = NULL;

    if (!vr_authz_add(scratch, pattern, "/", "default", &error)) {
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", "'pattern': %s",
                              error->message);
        return false;
    }
    if (!vr_authz_add(scratch, "*", "/", group, &error)) {
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", "'trust_group': %s",
                              error->message);
        return false;
    }
    /* One spelling per directory: no "..", ".", "//" or trailing '/' to hide where it is. */
    canonical = g_path_is_absolute(storage) ? g_canonicalize_filename(storage, "/") : NULL;
    if (canonical == NULL || strcmp(canonical, storage) != 0 ||
        !g_file_test(storage, G_FILE_TEST_IS_DIR)) {
        vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                              "'storage': '%s' is not the canonical absolute path of an existing "
                              "directory",
                              storage);
        return false;
    }
    return true;
}

/* POST /v1/authorizations: replica-auth-add. */
static void
vr_daemon_auth_post(const VrDaemonReplica *replica, SoupServerMessage *msg)
{
    const VrConfig *config = replica->config;
    g_autoptr(json_object) request = NULL;
    g_autoptr(GError) error = NULL;
    g_autoptr(VrAuthzEntry) entry = NULL;
    g_autoptr(json_object) body = NULL;
    const char *pattern;
    const char *storage;
    const char *group;
    VrStateAuthz row;

    if (config->replica.allow_any) {
        vr_daemon_reply_error(msg, SOUP_STATUS_CONFLICT, "allow-any",
                              "[replica] allow-any = true in '%s': every authenticated primary "
                              "is accepted and authorization entries are not consulted; set "
                              "allow-any = false there (and restart virt-replicad) to use them",
                              config->origin);
        return;
    }
    request = vr_daemon_request_json(msg);
    if (request == NULL)
        return;
    json_object_object_foreach (request, key, value) {
        (void)value;
        if (strcmp(key, "pattern") != 0 && strcmp(key, "storage") != 0 &&
            strcmp(key, "trust_group") != 0) {
            vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                                  "unknown member '%s' (pattern, storage, trust_group)", key);
            return;
        }
    }
    if (!vr_daemon_auth_member(request, msg, "pattern", true, &pattern) ||
        !vr_daemon_auth_member(request, msg, "storage", true, &storage) ||
        !vr_daemon_auth_member(request, msg, "trust_group", false, &group))
        return;
    if (group == NULL)
        group = config->replica.default_trust_group;
    if (!vr_daemon_auth_check(msg, pattern, storage, group))
        return;
    /* Live first, then stored; undone when the database refuses. */
    if (!vr_authz_add_origin(replica->authz, pattern, storage, group, VR_AUTHZ_ORIGIN_API,
                             &error)) {
        if (g_error_matches(error, VR_AUTHZ_ERROR, VR_AUTHZ_ERROR_EXISTS)) {
            g_autoptr(VrAuthzEntry) old = vr_authz_get(replica->authz, pattern, NULL);

            vr_daemon_reply_error(msg, SOUP_STATUS_CONFLICT, "exists", "%s (%s)", error->message,
                                  old != NULL && old->origin == VR_AUTHZ_ORIGIN_CONFIG
                                      ? "from the configuration file"
                                      : "remove it first to change it");
        } else {
            vr_daemon_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid", "%s", error->message);
        }
        return;
    }
    entry = vr_authz_get(replica->authz, pattern, NULL);
    g_assert(entry != NULL); /* the API thread is the table's only writer */
    row = (VrStateAuthz){ entry->pattern, entry->storage_root, entry->group, 0 };
    if (!vr_state_authz_add(replica->state, &row, &error)) {
        vr_authz_remove(replica->authz, entry->pattern, NULL);
        if (g_error_matches(error, VR_STATE_ERROR, VR_STATE_ERROR_EXISTS))
            vr_daemon_reply_error(msg, SOUP_STATUS_CONFLICT, "exists",
                                  "the state database has an entry for '%s' that is not in "
                                  "effect (see the daemon's log); remove it first",
                                  entry->pattern);
        else
            vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                                  error->message);
        return;
    }
    g_info("replica: authorized '%s': storage '%s', trust group '%s'", entry->pattern,
           entry->storage_root, entry->group);
    body = vr_daemon_auth_entry_json(entry);
    vr_daemon_reply_json(msg, SOUP_STATUS_CREATED, body);
}

/* DELETE /v1/authorizations/{pattern}: replica-auth-remove. */
static void
vr_daemon_auth_delete(const VrDaemonReplica *replica, SoupServerMessage *msg, const char *segment)
{
    g_autofree char *pattern = vr_daemon_auth_pattern_of(msg, segment);
    g_autoptr(VrAuthzEntry) entry = NULL;
    g_autoptr(GError) error = NULL;

    if (pattern == NULL)
        return;
    entry = vr_authz_get(replica->authz, pattern, &error);
    if (entry == NULL) {
        vr_daemon_reply_error(msg, SOUP_STATUS_NOT_FOUND, "unknown-authorization", "%s",
                              error->message);
        return;
    }
    if (entry->origin == VR_AUTHZ_ORIGIN_CONFIG) {
        vr_daemon_reply_error(msg, SOUP_STATUS_CONFLICT, "config",
                              "the authorization of '%s' comes from the configuration file '%s': "
                              "edit it there and restart virt-replicad",
                              entry->pattern, replica->config->origin);
        return;
    }
    /* Stored first: a failure leaves the entry in effect and listed, as it was. */
    if (!vr_state_authz_delete(replica->state, entry->pattern, &error) &&
        !g_error_matches(error, VR_STATE_ERROR, VR_STATE_ERROR_NOT_FOUND)) {
        vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                              error->message);
        return;
    }
    g_clear_error(&error);
    if (!vr_authz_remove(replica->authz, entry->pattern, &error)) {
        vr_daemon_reply_error(msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "state", "%s",
                              error->message);
        return;
    }
    g_info("replica: authorization '%s' removed", entry->pattern);
    soup_server_message_set_status(msg, SOUP_STATUS_NO_CONTENT, NULL);
}

/* The host certificate's names and validity, or why it cannot be read now. */
static void
vr_daemon_auth_certificate_json(json_object *obj, const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GTlsCertificate) cert = NULL;
    g_autoptr(GDateTime) before = NULL;
    g_autoptr(GDateTime) after = NULL;
    g_autoptr(GPtrArray) dns = NULL;
    g_autoptr(GPtrArray) ips = NULL;
    g_autofree char *subject = NULL;
    json_object *names;
    json_object *addresses;

    if (path == NULL)
        return;
    cert = g_tls_certificate_new_from_file(path, &error);
    if (cert == NULL) {
        json_object_object_add(obj, "cert_error", json_object_new_string(error->message));
        return;
    }
    g_object_get(cert, "subject-name", &subject, "not-valid-before", &before, "not-valid-after",
                 &after, "dns-names", &dns, "ip-addresses", &ips, NULL);
    json_object_object_add(obj, "subject", vr_daemon_auth_string_or_null(subject));
    names = json_object_new_array();
    for (guint i = 0; dns != NULL && i < dns->len; i++) {
        gsize len = 0;
        const char *data = g_bytes_get_data(dns->pdata[i], &len);

        json_object_array_add(names, json_object_new_string_len(data, (int)len));
    }
    json_object_object_add(obj, "dns_names", names);
    addresses = json_object_new_array();
    for (guint i = 0; ips != NULL && i < ips->len; i++) {
        g_autofree char *text = g_inet_address_to_string(ips->pdata[i]);

        json_object_array_add(addresses, json_object_new_string(text));
    }
    json_object_object_add(obj, "ip_addresses", addresses);
    json_object_object_add(obj, "not_before",
                           before != NULL ? json_object_new_int64(g_date_time_to_unix(before))
                                          : NULL);
    json_object_object_add(
        obj, "not_after", after != NULL ? json_object_new_int64(g_date_time_to_unix(after)) : NULL);
}

/* GET /v1/server: replica-server-config. */
static void
vr_daemon_auth_get_server(const VrDaemonReplica *replica, SoupServerMessage *msg)
{
    const VrConfig *config = replica->config;
    g_autoptr(json_object) body = json_object_new_object();
    g_autoptr(GPtrArray) entries = vr_authz_list(replica->authz);
    g_autofree char *network = NULL;
    json_object *certs = json_object_new_object();
    VrNetKind kind;

    json_object_object_add(body, "listen", json_object_new_string(config->replica.listen));
    if (vr_net_parse_spec(config->replica.listen, &kind, &network, NULL) &&
        kind != VR_NET_KIND_NETWORK)
        g_clear_pointer(&network, g_free);
    json_object_object_add(body, "network", vr_daemon_auth_string_or_null(network));
    json_object_object_add(body, "address", vr_daemon_auth_string_or_null(replica->address));
    json_object_object_add(body, "port", json_object_new_int(replica->port));
    json_object_object_add(body, "server_name",
                           vr_daemon_auth_string_or_null(config->replica.server_name));
    json_object_object_add(certs, "ca", vr_daemon_auth_string_or_null(config->certificates.ca));
    json_object_object_add(certs, "cert", vr_daemon_auth_string_or_null(config->certificates.cert));
    json_object_object_add(certs, "key", vr_daemon_auth_string_or_null(config->certificates.key));
    json_object_object_add(certs, "crl", vr_daemon_auth_string_or_null(config->certificates.crl));
    json_object_object_add(certs, "check_revocation",
                           json_object_new_boolean(config->certificates.check_revocation));
    vr_daemon_auth_certificate_json(certs, config->certificates.cert);
    json_object_object_add(body, "certificates", certs);
    json_object_object_add(body, "allow_any", json_object_new_boolean(config->replica.allow_any));
    json_object_object_add(body, "default_storage",
                           vr_daemon_auth_string_or_null(config->replica.default_storage));
    json_object_object_add(body, "default_trust_group",
                           json_object_new_string(config->replica.default_trust_group));
    json_object_object_add(body, "authorizations", json_object_new_int((int)entries->len));
    vr_daemon_reply_json(msg, SOUP_STATUS_OK, body);
}

bool
vr_daemon_auth_route(const VrDaemonReplica *replica, SoupServerMessage *msg, const char *method,
                     char **parts, guint n)
{
    bool get = strcmp(method, SOUP_METHOD_GET) == 0;
    bool post = strcmp(method, SOUP_METHOD_POST) == 0;
    bool delete = strcmp(method, SOUP_METHOD_DELETE) == 0;

    if (n == 1 && strcmp(parts[0], "server") == 0) {
        if (!get)
            vr_daemon_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method",
                                  "/v1/server is read with GET");
        else if (vr_daemon_auth_role(replica, msg))
            vr_daemon_auth_get_server(replica, msg);
        return true;
    }
    if (n == 1 && strcmp(parts[0], "authorizations") == 0) {
        if (!get && !post) {
            vr_daemon_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method",
                                  "/v1/authorizations takes GET and POST");
        } else if (vr_daemon_auth_role(replica, msg)) {
            if (get)
                vr_daemon_auth_get_list(replica, msg);
            else
                vr_daemon_auth_post(replica, msg);
        }
        return true;
    }
    if (n == 2 && strcmp(parts[0], "authorizations") == 0 && parts[1][0] != '\0') {
        if (!get && !delete) {
            vr_daemon_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method",
                                  "an authorization takes GET and DELETE");
        } else if (vr_daemon_auth_role(replica, msg)) {
            if (get)
                vr_daemon_auth_get_one(replica, msg, parts[1]);
            else
                vr_daemon_auth_delete(replica, msg, parts[1]);
        }
        return true;
    }
    return false;
}
