/*
 * vr-test-replica.c: the replica's side of a test, as a daemon runs it
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <json-c/json.h>

#include "vr-qmp-json.h"
#include "vr-test-replica.h"
#include "vr-test-transport.h"
#include "vr-test-util.h"

bool
vr_test_replica_skip(const char *pki, const char *skip_why)
{
    return vr_test_skip_without_tls(pki, skip_why) || vr_test_skip_without("qemu-img") ||
           vr_test_skip_without("qemu-nbd");
}

virConnectPtr
vr_test_replica_connect(const char *pki, const char *skip_why)
{
    if (vr_test_replica_skip(pki, skip_why))
        return NULL;
    return vr_test_libvirt_connect();
}

void
vr_test_replica_init(VrTestReplica *r, const char *pki)
{
    g_autoptr(GError) error = NULL;

    vr_test_policies_new(pki, &r->client_policy, &r->server_policy);
    r->authz = vr_authz_new_allow_any(r->root, "a", &error);
    g_assert_no_error(error);
}

void
vr_test_replica_open_state(VrTestReplica *r)
{
    g_autofree char *db = g_build_filename(r->work, "state.db", NULL);
    g_autoptr(GError) error = NULL;

    r->state = vr_state_open(db, &error);
    g_assert_no_error(error);
}

void
vr_test_replica_start(VrTestReplica *r, const char *pki, virConnectPtr standby_conn,
                      uint64_t max_body_size)
{
    g_autoptr(GError) error = NULL;

    r->sink = vr_replica_sink_new(r->authz, &error);
    g_assert_no_error(error);
    vr_replica_sink_set_point_interval(r->sink, 0);
    if (r->state != NULL)
        vr_replica_sink_set_state(r->sink, r->state);
    if (standby_conn != NULL)
        vr_replica_sink_set_standby(r->sink, standby_conn, "%n-replica", NULL);
    r->receiver = vr_test_receiver_new(pki,
                                       &(VrReceiverConfig){
                                           .policy = r->client_policy,
                                           .authz = r->authz,
                                           .max_body_size = max_body_size,
                                           .sink = vr_replica_sink_get_sink(),
                                           .sink_data = r->sink,
                                       },
                                       &r->port);
}

void
vr_test_replica_stop(VrTestReplica *r)
{
    g_clear_pointer(&r->receiver, vr_receiver_free);
    g_clear_pointer(&r->sink, vr_replica_sink_free);
}

char *
vr_test_manifest_cycles(const char *disk_dir, char **digest)
{
    g_autofree char *path = g_build_filename(disk_dir, "manifest.json", NULL);
    g_autofree char *text = NULL;
    g_autoptr(json_object) manifest = NULL;
    g_autoptr(GString) cycles = g_string_new(NULL);
    json_object *points;

    if (digest != NULL)
        *digest = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL))
        return g_strdup("");
    manifest = json_tokener_parse(text);
    points = vr_json_get_array(manifest, "points");
    g_assert_nonnull(points);
    for (size_t i = 0; i < json_object_array_length(points); i++) {
        json_object *point = json_object_array_get_idx(points, i);
        uint64_t cycle = 0;

        g_assert_true(vr_json_get_uint64(point, "cycle", &cycle));
        g_string_append_printf(cycles, "%s%" G_GUINT64_FORMAT, i > 0 ? " " : "", cycle);
        if (digest != NULL && i + 1 == json_object_array_length(points))
            *digest = g_strdup(vr_json_get_string(point, "digest"));
    }
    return g_string_free(g_steal_pointer(&cycles), FALSE);
}

void
vr_test_replica_clear(VrTestReplica *r)
{
    vr_test_replica_stop(r);
    g_clear_pointer(&r->state, vr_state_free);
    g_clear_pointer(&r->authz, vr_authz_free);
    g_clear_pointer(&r->client_policy, vr_tls_policy_free);
    g_clear_pointer(&r->server_policy, vr_tls_policy_free);
    g_free(r->root);
    g_free(r->work);
    *r = (VrTestReplica){ 0 };
}
