/*
 * vr-transfer: the transport's parts as separate processes, for the network-namespace
 * tests, the memory test and the transport benchmark (not installed).
 *
 *   vr-transfer gen --out FILE --size BYTES [--compressible PERCENT] [--seed N]
 *                   [--relationship R] [--disk D] [--epoch N] [--base N] [--target N]
 *                   [--disk-size BYTES]
 *       Write a cycle stream of about BYTES of DATA in 1 MiB records: PERCENT of them
 *       (default 50) compressible text-like bytes, the rest random. The disk is as large as
 *       the data, or --disk-size (the data at its start, the rest never written).
 *
 *   vr-transfer serve --cert F --key F --ca F (--crl F | --no-revocation) --listen SPEC
 *                     [--port N] [--port-file F] [--max-active N] [--io-timeout S]
 *                     [--write DIR [--store]]
 *       Run a receiver on SPEC (an address, or interface:NAME, network:NAME as in
 *       vr-net.h) until SIGTERM or SIGINT, allowing any authenticated primary. Every commit
 *       prints one JSON line; exit prints {"event":"exit","vmhwm_kib":N}. With --write, the
 *       DATA of each stream goes to DIR/<relationship>-<disk>.img (opened beneath DIR).
 *       With --store as well, DIR is the storage root of the replica sink
 *       (vr-replica-sink.h): each stream becomes a recovery point in
 *       DIR/<relationship>/<disk>/ (qemu-img and qemu-nbd on PATH), and hash lists are
 *       served (one JSON line each); without --store, GET of a hash list is 501.
 *
 *   vr-transfer send --cert F --key F --ca F (--crl F | --no-revocation) --server-name NAME
 *                    --port N [--connect IP] [--source SPEC] [--rate RATE]
 *                    [--io-timeout S] [--attempts N] FILE
 *       Upload FILE (a stream) and print one JSON line of statistics.
 *
 *   vr-transfer fetch-hashes --cert F --key F --ca F (--crl F | --no-revocation)
 *                    --server-name NAME --port N [--connect IP] [--source SPEC]
 *                    [--io-timeout S] [--attempts N] [--relationship R] [--disk D] --out FILE
 *       Fetch the hash list of the latest point of the disk into FILE and print one JSON
 *       line (cycle, epoch, bytes, seconds, this process's peak memory).
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib-unix.h>
#include <libvirt/libvirt.h>

#include "vr-authz.h"
#include "vr-net.h"
#include "vr-rate-limit.h"
#include "vr-receiver.h"
#include "vr-replica-sink.h"
#include "vr-sender.h"
#include "vr-tls-policy.h"
#include "vr-wire.h"

#define MiB (1024 * 1024)

static char *opt_cert, *opt_key, *opt_ca, *opt_crl, *opt_listen, *opt_port_file, *opt_write;
static char *opt_server_name, *opt_connect, *opt_source, *opt_rate, *opt_out;
static char *opt_relationship = "r1", *opt_disk = "vda";
static gboolean opt_no_revocation, opt_store;
static gint opt_port, opt_max_active, opt_io_timeout, opt_attempts, opt_compressible = 50;
static gint64 opt_size, opt_seed = 1, opt_epoch = 1, opt_base, opt_target = 1, opt_disk_size;

static const GOptionEntry entries[] = {
    { "cert", 0, 0, G_OPTION_ARG_FILENAME, &opt_cert, "certificate (PEM)", "F" },
    { "key", 0, 0, G_OPTION_ARG_FILENAME, &opt_key, "private key (PEM)", "F" },
    { "ca", 0, 0, G_OPTION_ARG_FILENAME, &opt_ca, "CA (PEM)", "F" },
    { "crl", 0, 0, G_OPTION_ARG_FILENAME, &opt_crl, "CRL (PEM)", "F" },
    { "no-revocation", 0, 0, G_OPTION_ARG_NONE, &opt_no_revocation, "check-revocation = false",
      NULL },
    { "listen", 0, 0, G_OPTION_ARG_STRING, &opt_listen, "where to listen", "SPEC" },
    { "port", 0, 0, G_OPTION_ARG_INT, &opt_port, "port", "N" },
    { "port-file", 0, 0, G_OPTION_ARG_FILENAME, &opt_port_file, "write the bound port here", "F" },
    { "max-active", 0, 0, G_OPTION_ARG_INT, &opt_max_active, "max active transfers", "N" },
    { "io-timeout", 0, 0, G_OPTION_ARG_INT, &opt_io_timeout, "I/O timeout", "S" },
    { "write", 0, 0, G_OPTION_ARG_FILENAME, &opt_write, "write DATA to images in DIR", "DIR" },
    { "store", 0, 0, G_OPTION_ARG_NONE, &opt_store, "apply into replica stores beneath --write",
      NULL },
    { "server-name", 0, 0, G_OPTION_ARG_STRING, &opt_server_name, "the replica's DNS name",
      "NAME" },
    { "connect", 0, 0, G_OPTION_ARG_STRING, &opt_connect, "the replica's address", "IP" },
    { "source", 0, 0, G_OPTION_ARG_STRING, &opt_source, "this host's source address", "SPEC" },
    { "rate", 0, 0, G_OPTION_ARG_STRING, &opt_rate, "bandwidth limit", "RATE" },
    { "attempts", 0, 0, G_OPTION_ARG_INT, &opt_attempts, "requests before giving up", "N" },
    { "out", 0, 0, G_OPTION_ARG_FILENAME, &opt_out, "stream or hash list file to write", "FILE" },
    { "size", 0, 0, G_OPTION_ARG_INT64, &opt_size, "bytes of DATA", "BYTES" },
    { "disk-size", 0, 0, G_OPTION_ARG_INT64, &opt_disk_size, "virtual size of the disk", "BYTES" },
    { "compressible", 0, 0, G_OPTION_ARG_INT, &opt_compressible, "percent of compressible records",
      "PERCENT" },
    { "seed", 0, 0, G_OPTION_ARG_INT64, &opt_seed, "random seed", "N" },
    { "relationship", 0, 0, G_OPTION_ARG_STRING, &opt_relationship, "relationship", "R" },
    { "disk", 0, 0, G_OPTION_ARG_STRING, &opt_disk, "disk", "D" },
    { "epoch", 0, 0, G_OPTION_ARG_INT64, &opt_epoch, "epoch", "N" },
    { "base", 0, 0, G_OPTION_ARG_INT64, &opt_base, "base cycle", "N" },
    { "target", 0, 0, G_OPTION_ARG_INT64, &opt_target, "target cycle", "N" },
    { NULL },
};

static G_NORETURN void
die(const char *what, GError *error)
{
    fprintf(stderr, "vr-transfer: %s: %s\n", what, error != NULL ? error->message : "failed");
    exit(1);
}

static void
need(const char *value, const char *option)
{
    if (value == NULL) {
        fprintf(stderr, "vr-transfer: --%s is required\n", option);
        exit(2);
    }
}

/* An address for SPEC (address, interface:, network:). */
static GInetAddress *
resolve(const char *spec)
{
    g_autoptr(GError) error = NULL;
    virConnectPtr conn = NULL;
    GInetAddress *address;

    if (g_str_has_prefix(spec, "network:")) {
        conn = virConnectOpen("qemu:///system");
        if (conn == NULL)
            die("cannot connect to libvirt", NULL);
    }
    address = vr_net_resolve(spec, conn, G_SOCKET_FAMILY_INVALID, &error);
    if (conn != NULL)
        virConnectClose(conn);
    if (address == NULL)
        die(spec, error);
    return address;
}

static VrTlsPolicy *
policy_new(VrTlsPeerRole role)
{
    g_autoptr(GError) error = NULL;
    VrTlsPolicy *policy;

    need(opt_ca, "ca");
    if (!opt_no_revocation)
        need(opt_crl, "crl");
    policy = vr_tls_policy_new(
        &(VrTlsPolicyConfig){
            .ca_file = opt_ca,
            .crl_file = opt_crl,
            .check_revocation = !opt_no_revocation,
            .peer_role = role,
            .server_name = opt_server_name,
        },
        &error);
    if (policy == NULL)
        die("certificate policy", error);
    return policy;
}

/* ---- gen -------------------------------------------------------------------------------- */

static void
fill(uint8_t *buf, size_t len, bool compressible, GRand *rand)
{
    static const char words[] = "replica cycle bitmap extent qcow2 block epoch write ";

    for (size_t i = 0; i < len; i += 4) {
        guint32 r = g_rand_int(rand);

        if (compressible) {
            /* text from a small vocabulary: zstd level 1 takes it to about half */
            for (size_t k = 0; k < 4 && i + k < len; k++)
                buf[i + k] = (uint8_t)words[(r >> (8 * k)) % (sizeof(words) - 1)];
        } else {
            memcpy(buf + i, &r, MIN(4, len - i));
        }
    }
}

static int
cmd_gen(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrWireEncoder) encoder = NULL;
    g_autoptr(GByteArray) out = g_byte_array_new();
    g_autofree uint8_t *buf = g_malloc(MiB);
    g_autoptr(GRand) rand = g_rand_new_with_seed((guint32)opt_seed);
    VrWireIdentity identity = { 0 };
    uint64_t records;
    FILE *f;

    need(opt_out, "out");
    records = MAX((uint64_t)(opt_size + MiB - 1) / MiB, 1);
    identity.kind = VR_WIRE_KIND_CYCLE;
    g_strlcpy(identity.relationship, opt_relationship, sizeof(identity.relationship));
    g_strlcpy(identity.disk, opt_disk, sizeof(identity.disk));
    memset(identity.domain_uuid, 0x5a, sizeof(identity.domain_uuid));
    identity.epoch = (uint64_t)opt_epoch;
    identity.base_cycle = (uint64_t)opt_base;
    identity.target_cycle = (uint64_t)opt_target;
    identity.virtual_size = MAX(records * MiB, (uint64_t)opt_disk_size);
    identity.granularity = 65536;
    identity.flags = opt_base == 0 ? VR_WIRE_FLAG_FULL : 0;
    encoder = vr_wire_encoder_new(&identity, &error);
    if (encoder == NULL)
        die("identity", error);
    f = fopen(opt_out, "wb");
    if (f == NULL)
        die(opt_out, NULL);
    if (!vr_wire_encoder_begin(encoder, out, &error))
        die("encode", error);
    for (uint64_t i = 0; i < records; i++) {
        /* spread: record i is compressible when its share of the percentage says so */
        bool compressible =
            (i * (uint64_t)opt_compressible) / 100 != ((i + 1) * (uint64_t)opt_compressible) / 100;

        fill(buf, MiB, compressible, rand);
        if (!vr_wire_encoder_add_data(encoder, i * MiB, buf, MiB, out, &error))
            die("encode", error);
        if (fwrite(out->data, 1, out->len, f) != out->len)
            die(opt_out, NULL);
        g_byte_array_set_size(out, 0);
    }
    if (!vr_wire_encoder_end(encoder, out, &error))
        die("encode", error);
    if (fwrite(out->data, 1, out->len, f) != out->len || fclose(f) != 0)
        die(opt_out, NULL);
    printf("{\"event\":\"gen\",\"records\":%" G_GUINT64_FORMAT ",\"data_bytes\":%" G_GUINT64_FORMAT
           "}\n",
           records, records * MiB);
    return 0;
}

/* ---- serve ------------------------------------------------------------------------------ */

typedef struct {
    VrReceiverKey key;
    int fd;           /* --write: the image, or -1 */
    gpointer replica; /* --store: the replica sink's handle, or NULL */
    uint64_t records;
    uint64_t data_bytes;
    uint64_t zero_bytes;
} ServeStream;

static gpointer
serve_begin(const VrReceiverKey *key, const VrReceiverPeer *peer, gpointer user_data,
            GError **error)
{
    ServeStream *stream = g_new0(ServeStream, 1);

    stream->key = *key;
    stream->fd = -1;
    if (opt_store) {
        /* user_data is the replica sink; this one only counts and prints around it */
        stream->replica = vr_replica_sink_get_sink()->begin(key, peer, user_data, error);
        if (stream->replica == NULL) {
            g_free(stream);
            return NULL;
        }
    } else if (opt_write != NULL) {
        g_autofree char *name = g_strdup_printf("%s-%s.img", key->relationship, key->disk);

        stream->fd =
            vr_authz_open_beneath(opt_write, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0600, error);
        if (stream->fd < 0) {
            g_free(stream);
            return NULL;
        }
    }
    return stream;
}

static bool
serve_record(gpointer handle, const VrWireRecord *record, GError **error)
{
    ServeStream *stream = handle;

    if (stream->replica != NULL &&
        !vr_replica_sink_get_sink()->record(stream->replica, record, error))
        return false;
    stream->records++;
    if (record->type == VR_WIRE_RECORD_ZERO)
        stream->zero_bytes += record->length;
    if (record->type != VR_WIRE_RECORD_DATA)
        return true;
    stream->data_bytes += record->length;
    if (stream->fd >= 0 && pwrite(stream->fd, record->data, record->data_size,
                                  (off_t)record->offset) != (ssize_t)record->data_size) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "write failed: %s",
                    g_strerror(errno));
        return false;
    }
    return true;
}

static bool
serve_commit(gpointer handle, GError **error)
{
    ServeStream *stream = handle;

    if (stream->replica != NULL) {
        /* On failure the receiver calls serve_abort(), which ends the replica's handle. */
        if (!vr_replica_sink_get_sink()->commit(stream->replica, error))
            return false;
        stream->replica = NULL;
    }
    if (stream->fd >= 0 && fsync(stream->fd) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "fsync failed: %s",
                    g_strerror(errno));
        return false;
    }
    printf("{\"event\":\"commit\",\"relationship\":\"%s\",\"disk\":\"%s\",\"target\":"
           "%" G_GUINT64_FORMAT ",\"records\":%" G_GUINT64_FORMAT
           ",\"data_bytes\":%" G_GUINT64_FORMAT ",\"zero_bytes\":%" G_GUINT64_FORMAT "}\n",
           stream->key.relationship, stream->key.disk, stream->key.target_cycle, stream->records,
           stream->data_bytes, stream->zero_bytes);
    fflush(stdout);
    if (stream->fd >= 0)
        close(stream->fd);
    g_free(stream);
    return true;
}

static void
serve_abort(gpointer handle)
{
    ServeStream *stream = handle;

    printf("{\"event\":\"abort\",\"relationship\":\"%s\",\"disk\":\"%s\"}\n",
           stream->key.relationship, stream->key.disk);
    fflush(stdout);
    if (stream->replica != NULL)
        vr_replica_sink_get_sink()->abort(stream->replica);
    if (stream->fd >= 0)
        close(stream->fd);
    g_free(stream);
}

/* --store: the replica sink's hash list, and a line about it. */
static bool
serve_hashes(const char *relationship, const char *disk, const VrReceiverPeer *peer,
             gpointer user_data, char **path_out, uint64_t *cycle_out, uint64_t *epoch_out,
             GError **error)
{
    gint64 start = g_get_monotonic_time();
    struct stat st;

    if (!vr_replica_sink_get_sink()->hashes(relationship, disk, peer, user_data, path_out,
                                            cycle_out, epoch_out, error))
        return false;
    printf("{\"event\":\"hashes\",\"relationship\":\"%s\",\"disk\":\"%s\",\"cycle\":"
           "%" G_GUINT64_FORMAT ",\"epoch\":%" G_GUINT64_FORMAT ",\"bytes\":%" G_GINT64_FORMAT
           ",\"seconds\":%.3f}\n",
           relationship, disk, *cycle_out, *epoch_out,
           stat(*path_out, &st) == 0 ? (gint64)st.st_size : (gint64)-1,
           (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC);
    fflush(stdout);
    return true;
}

static const VrReceiverSink serve_sink = {
    .begin = serve_begin,
    .record = serve_record,
    .commit = serve_commit,
    .abort = serve_abort,
};

static const VrReceiverSink serve_store_sink = {
    .begin = serve_begin,
    .record = serve_record,
    .commit = serve_commit,
    .abort = serve_abort,
    .hashes = serve_hashes,
};

static void
serve_refused(const char *address, const char *reason, gpointer user_data)
{
    g_autofree char *quoted = g_strescape(reason, NULL);

    printf("{\"event\":\"refused\",\"address\":\"%s\",\"reason\":\"%s\"}\n", address, quoted);
    fflush(stdout);
}

static gboolean
serve_quit(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

/* VmHWM of this process, in KiB (peak resident memory). */
static long
vmhwm_kib(void)
{
    g_autofree char *status = NULL;
    const char *line;

    if (!g_file_get_contents("/proc/self/status", &status, NULL, NULL))
        return -1;
    line = strstr(status, "VmHWM:");
    return line != NULL ? strtol(line + 6, NULL, 10) : -1;
}

static int
cmd_serve(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrTlsPolicy) policy = policy_new(VR_TLS_PEER_CLIENT);
    g_autoptr(VrAuthz) authz = NULL;
    g_autoptr(GInetAddress) address = NULL;
    g_autoptr(GSocketAddress) socket_address = NULL;
    g_autoptr(VrReplicaSink) replica = NULL; /* --store; freed after the receiver */
    g_autoptr(VrReceiver) receiver = NULL;
    g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
    g_autofree char *storage = NULL;
    GSList *uris;
    int port;

    need(opt_cert, "cert");
    need(opt_key, "key");
    need(opt_listen, "listen");
    storage = g_strdup(opt_write != NULL ? opt_write : "/");
    authz = vr_authz_new_allow_any(storage, "default", &error);
    if (authz == NULL)
        die("authorization", error);
    if (opt_store) {
        need(opt_write, "write");
        replica = vr_replica_sink_new(authz, &error);
        if (replica == NULL)
            die("replica sink", error);
    }
    address = resolve(opt_listen);
    socket_address = g_inet_socket_address_new(address, (guint16)opt_port);
    receiver = vr_receiver_new(
        &(VrReceiverConfig){
            .cert_file = opt_cert,
            .key_file = opt_key,
            .policy = policy,
            .authz = authz,
            .address = G_INET_SOCKET_ADDRESS(socket_address),
            .max_body_size = G_MAXUINT64,
            .sink = opt_store ? &serve_store_sink : &serve_sink,
            .sink_data = replica,
            .max_active = (guint)opt_max_active,
            .io_timeout_s = (guint)opt_io_timeout,
            .refused = serve_refused,
        },
        &error);
    if (receiver == NULL)
        die("receiver", error);
    uris = vr_receiver_get_uris(receiver);
    port = g_uri_get_port(uris->data);
    g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
    {
        g_autofree char *where = g_inet_address_to_string(address);

        printf("{\"event\":\"listening\",\"address\":\"%s\",\"port\":%d}\n", where, port);
        fflush(stdout);
    }
    if (opt_port_file != NULL) {
        g_autofree char *text = g_strdup_printf("%d\n", port);

        if (!g_file_set_contents(opt_port_file, text, -1, &error))
            die(opt_port_file, error);
    }
    g_unix_signal_add(SIGTERM, serve_quit, loop);
    g_unix_signal_add(SIGINT, serve_quit, loop);
    g_main_loop_run(loop);
    g_clear_pointer(&receiver, vr_receiver_free);
    printf("{\"event\":\"exit\",\"vmhwm_kib\":%ld}\n", vmhwm_kib());
    return 0;
}

/* ---- send ------------------------------------------------------------------------------- */

/* The sender of send and fetch-hashes, from the options; @policy and @limit outlive it. */
static VrSender *
sender_new(VrTlsPolicy *policy, VrRateLimit *limit)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GInetAddress) connect = NULL;
    g_autoptr(GInetAddress) source = NULL;
    VrRateLimit *limits[1] = { limit };
    VrSender *sender;

    if (opt_connect != NULL) {
        /* the replica's address: remote, so not one of this host's (resolve() checks that) */
        const char *literal =
            g_str_has_prefix(opt_connect, "address:") ? opt_connect + 8 : opt_connect;

        connect = g_inet_address_new_from_string(literal);
        if (connect == NULL) {
            fprintf(stderr, "vr-transfer: --connect %s: not an IP address\n", opt_connect);
            exit(2);
        }
    }
    if (opt_source != NULL)
        source = resolve(opt_source);
    sender = vr_sender_new(
        &(VrSenderConfig){
            .server_name = opt_server_name,
            .port = (guint16)opt_port,
            .connect_address = connect,
            .local_address = source,
            .cert_file = opt_cert,
            .key_file = opt_key,
            .policy = policy,
            .limits = limits,
            .n_limits = 1,
            .max_attempts = (guint)opt_attempts,
            .backoff_min_ms = 200,
            .backoff_max_ms = 2000,
            .io_timeout_s = (guint)opt_io_timeout,
        },
        &error);
    if (sender == NULL)
        die("sender", error);
    return sender;
}

static int
cmd_send(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrTlsPolicy) policy = NULL;
    g_autoptr(VrRateLimit) limit = NULL;
    g_autoptr(VrSender) sender = NULL;
    VrSenderStats stats;
    gint64 start;
    double seconds;
    bool ok;

    need(opt_cert, "cert");
    need(opt_key, "key");
    need(opt_server_name, "server-name");
    policy = policy_new(VR_TLS_PEER_SERVER);
    if (opt_rate != NULL) {
        uint64_t rate;

        if (!vr_rate_parse(opt_rate, &rate, &error))
            die("--rate", error);
        limit = vr_rate_limit_new(rate, MAX(rate / 4, 256 * 1024));
    }
    sender = sender_new(policy, limit);
    start = g_get_monotonic_time();
    ok = vr_sender_upload_file(sender, path, NULL, NULL, &stats, NULL, &error);
    seconds = (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC;
    printf("{\"event\":\"sent\",\"ok\":%s,\"stream_bytes\":%" G_GUINT64_FORMAT
           ",\"body_bytes\":%" G_GUINT64_FORMAT
           ",\"requests\":%u,\"resumes\":%u,\"resumed_at\":%" G_GUINT64_FORMAT
           ",\"already_committed\":%s,\"seconds\":%.3f,\"mib_s\":%.1f}\n",
           ok ? "true" : "false", stats.stream_bytes, stats.body_bytes, stats.requests,
           stats.resumes, stats.resumed_at, stats.already_committed ? "true" : "false", seconds,
           seconds > 0 ? (double)stats.stream_bytes / MiB / seconds : 0.0);
    fflush(stdout);
    if (!ok)
        die("upload", error);
    return 0;
}

/* ---- fetch-hashes ----------------------------------------------------------------------- */

static int
cmd_fetch_hashes(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrTlsPolicy) policy = NULL;
    g_autoptr(VrSender) sender = NULL;
    uint64_t cycle = 0;
    uint64_t epoch = 0;
    struct stat st;
    gint64 start;
    double seconds;

    need(opt_cert, "cert");
    need(opt_key, "key");
    need(opt_server_name, "server-name");
    need(opt_out, "out");
    policy = policy_new(VR_TLS_PEER_SERVER);
    sender = sender_new(policy, NULL);
    start = g_get_monotonic_time();
    if (!vr_sender_fetch_hashes(sender, opt_relationship, opt_disk, opt_out, &cycle, &epoch,
                                &error))
        die("fetch", error);
    seconds = (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC;
    if (stat(opt_out, &st) < 0)
        die(opt_out, NULL);
    printf("{\"event\":\"fetched\",\"cycle\":%" G_GUINT64_FORMAT ",\"epoch\":%" G_GUINT64_FORMAT
           ",\"bytes\":%" G_GINT64_FORMAT ",\"seconds\":%.3f,\"vmhwm_kib\":%ld}\n",
           cycle, epoch, (gint64)st.st_size, seconds, vmhwm_kib());
    fflush(stdout);
    return 0;
}

int
main(int argc, char **argv)
{
    g_autoptr(GOptionContext) context = g_option_context_new("gen|serve|send [FILE]|fetch-hashes");
    g_autoptr(GError) error = NULL;

    g_option_context_add_main_entries(context, entries, NULL);
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        fprintf(stderr, "vr-transfer: %s\n", error->message);
        return 2;
    }
    if (argc >= 2 && strcmp(argv[1], "gen") == 0)
        return cmd_gen();
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return cmd_serve();
    if (argc == 3 && strcmp(argv[1], "send") == 0)
        return cmd_send(argv[2]);
    if (argc == 2 && strcmp(argv[1], "fetch-hashes") == 0)
        return cmd_fetch_hashes();
    fprintf(stderr,
            "usage: vr-transfer gen|serve|send [FILE]|fetch-hashes (see the source's header)\n");
    return 2;
}
