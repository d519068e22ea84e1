/*
 * bench-raw-tls.c: the raw TLS limit of the transport benchmark
 *
 *   bench-raw-tls --ca CA.pem --cert SERVER.pem --key SERVER-KEY.pem --client-cert C.pem
 *                 --client-key CK.pem [--priority PRIO] [--block-size BYTES] FILE
 *
 * The bytes of FILE go through one plain mutual-TLS connection over loopback, with GnuTLS
 * directly and nothing above it: what our HTTPS client and receiver could reach at best with
 * the same cipher. The server runs in a forked child, so that, as in the real benchmark, the
 * two ends are separate processes the scheduler can put on separate cores. It asks for a
 * client certificate, checks it against CA.pem, reads and discards everything up to the
 * client's close_notify, then replies the byte count as 8 big-endian bytes. The client
 * checks the server's certificate against CA.pem too (not its name: it connects to an
 * address), reads FILE with read(2) in blocks of --block-size and hands each block to
 * gnutls_record_send(), which seals at most one record (16 KiB) per call: 8 KiB blocks give
 * 8 KiB records, as 8 KiB application writes do through glib-networking. Both ends keep the
 * socket defaults (Nagle on) but for the last small records.
 *
 * The priority string is applied as glib-networking 2.74 applies G_TLS_GNUTLS_PRIORITY
 * (gnutls_priority_init2() with no flags, the string replacing the defaults); without
 * --priority, both ends use glib-networking's own default, "%COMPAT" appended to the GnuTLS
 * default priorities. Pass the same string to both, and both use the same cipher.
 *
 * The time runs from the first read of FILE to the arrival of the server's count: the
 * handshake is not in it. Output, one line:
 *   raw_tls_bytes=<n> seconds=<s> mib_s=<x> cipher=<GnuTLS cipher name>
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <gnutls/gnutls.h>

#define RECV_BUFFER (64 * 1024)

static char *opt_ca;
static char *opt_cert;
static char *opt_key;
static char *opt_client_cert;
static char *opt_client_key;
static char *opt_priority;
static gint opt_block_size = 65536;

static GOptionEntry options[] = {
    { "ca", 0, 0, G_OPTION_ARG_FILENAME, &opt_ca, "CA certificate both ends trust", "CA.pem" },
    { "cert", 0, 0, G_OPTION_ARG_FILENAME, &opt_cert, "Server certificate", "SERVER.pem" },
    { "key", 0, 0, G_OPTION_ARG_FILENAME, &opt_key, "Server private key", "SERVER-KEY.pem" },
    { "client-cert", 0, 0, G_OPTION_ARG_FILENAME, &opt_client_cert, "Client certificate", "C.pem" },
    { "client-key", 0, 0, G_OPTION_ARG_FILENAME, &opt_client_key, "Client private key", "CK.pem" },
    { "priority", 0, 0, G_OPTION_ARG_STRING, &opt_priority,
      "GnuTLS priority string, as in G_TLS_GNUTLS_PRIORITY", "PRIO" },
    { "block-size", 0, 0, G_OPTION_ARG_INT, &opt_block_size,
      "Bytes per read(2) and per application write (default 65536)", "BYTES" },
    { NULL },
};

static void G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN die(const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list args;

    va_start(args, fmt);
    msg = g_strdup_vprintf(fmt, args);
    va_end(args);
    g_printerr("bench-raw-tls: %s\n", msg);
    exit(1);
}

static void
check(int ret, const char *what)
{
    if (ret < 0)
        die("%s: %s", what, gnutls_strerror(ret));
}

/* The same call glib-networking 2.74 makes in initialize_gnutls_priority(). */
static gnutls_priority_t
priority_new(void)
{
    gnutls_priority_t priority = NULL;
    const char *err_pos = NULL;
    int ret;

    if (opt_priority != NULL)
        ret = gnutls_priority_init2(&priority, opt_priority, &err_pos, 0);
    else
        ret =
            gnutls_priority_init2(&priority, "%COMPAT", &err_pos, GNUTLS_PRIORITY_INIT_DEF_APPEND);
    if (ret < 0)
        die("priority string '%s' is invalid at '%s': %s",
            opt_priority != NULL ? opt_priority : "%COMPAT", err_pos != NULL ? err_pos : "",
            gnutls_strerror(ret));
    return priority;
}

/* A session on the connected socket @fd, with the certificate in @cert/@key, trusting
 * the CA for its peer's certificate, and handshaken. */
static gnutls_session_t
session_open(unsigned int flags, int fd, const char *cert, const char *key,
             gnutls_certificate_credentials_t *creds)
{
    gnutls_priority_t priority = priority_new();
    gnutls_session_t session;
    int ret;

    check(gnutls_certificate_allocate_credentials(creds), "credentials");
    ret = gnutls_certificate_set_x509_trust_file(*creds, opt_ca, GNUTLS_X509_FMT_PEM);
    if (ret <= 0)
        die("no CA certificate in '%s'%s%s", opt_ca, ret < 0 ? ": " : "",
            ret < 0 ? gnutls_strerror(ret) : "");
    ret = gnutls_certificate_set_x509_key_file(*creds, cert, key, GNUTLS_X509_FMT_PEM);
    if (ret < 0)
        die("cannot load '%s' and '%s': %s", cert, key, gnutls_strerror(ret));

    check(gnutls_init(&session, flags), "gnutls_init");
    check(gnutls_priority_set(session, priority), "gnutls_priority_set");
    gnutls_priority_deinit(priority);
    check(gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, *creds), "credentials");
    if (flags & GNUTLS_SERVER)
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
    /* Chain checked against the CA during the handshake; no name check (NULL). */
    gnutls_session_set_verify_cert(session, NULL, 0);
    gnutls_transport_set_int(session, fd);
    do {
        ret = gnutls_handshake(session);
    } while (ret < 0 && !gnutls_error_is_fatal(ret));
    if (ret < 0)
        die("%s handshake: %s", flags & GNUTLS_SERVER ? "server" : "client", gnutls_strerror(ret));
    return session;
}

static void
session_close(gnutls_session_t session, gnutls_certificate_credentials_t creds, int fd)
{
    gnutls_deinit(session);
    gnutls_certificate_free_credentials(creds);
    close(fd);
}

/* For the last small records only: Nagle would hold them for the peer's delayed ACK (40 ms,
 * 4 % of a 1 GiB run at 1 GB/s). The bulk data keeps the socket defaults. */
static void
push_now(int fd)
{
    int one = 1;

    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        die("TCP_NODELAY: %s", g_strerror(errno));
}

static void
send_all(gnutls_session_t session, const uint8_t *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = gnutls_record_send(session, buf, len);

        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        check((int)MIN(n, 0), "send");
        buf += n;
        len -= (size_t)n;
    }
}

/* The server, in the child: read and discard up to close_notify, reply the count. */
static G_GNUC_NORETURN void
serve(int listen_fd, pid_t parent)
{
    gnutls_certificate_credentials_t creds;
    gnutls_session_t session;
    g_autofree uint8_t *buf = g_malloc(RECV_BUFFER);
    uint64_t total = 0;
    uint64_t reply;
    int fd;

    /* Never outlive the client, even one that died before the prctl. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        exit(1);
    fd = accept(listen_fd, NULL, NULL);
    if (fd < 0)
        die("accept: %s", g_strerror(errno));
    close(listen_fd);
    session = session_open(GNUTLS_SERVER, fd, opt_cert, opt_key, &creds);
    for (;;) {
        ssize_t n = gnutls_record_recv(session, buf, RECV_BUFFER);

        if (n == 0)
            break;
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        check((int)MIN(n, 0), "server receive");
        total += (uint64_t)n;
    }
    push_now(fd);
    reply = GUINT64_TO_BE(total);
    send_all(session, (const uint8_t *)&reply, sizeof(reply));
    gnutls_bye(session, GNUTLS_SHUT_WR);
    session_close(session, creds, fd);
    exit(0);
}

/* Read up to @len bytes, short only at the end of the file. */
static size_t
read_block(int fd, uint8_t *buf, size_t len, const char *path)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = read(fd, buf + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("cannot read '%s': %s", path, g_strerror(errno));
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return done;
}

int
main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GOptionContext) ctx = g_option_context_new("FILE - time FILE over plain TLS");
    g_autofree uint8_t *buf = NULL;
    struct sockaddr_in addr = { .sin_family = AF_INET };
    socklen_t addr_len = sizeof(addr);
    gnutls_certificate_credentials_t creds;
    gnutls_session_t session;
    uint64_t sent = 0;
    uint64_t reply = 0;
    size_t got = 0;
    int listen_fd;
    int file_fd;
    int fd;
    int status;
    pid_t parent;
    pid_t pid;
    gint64 t0;
    gint64 t1;
    double seconds;

    g_option_context_add_main_entries(ctx, options, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &error))
        die("%s", error->message);
    if (argc != 2 || opt_ca == NULL || opt_cert == NULL || opt_key == NULL ||
        opt_client_cert == NULL || opt_client_key == NULL)
        die("--ca, --cert, --key, --client-cert, --client-key and one FILE are needed");
    if (opt_block_size <= 0 || opt_block_size > 64 * 1024 * 1024)
        die("--block-size must be between 1 and 67108864");
    file_fd = open(argv[1], O_RDONLY | O_CLOEXEC);
    if (file_fd < 0)
        die("cannot open '%s': %s", argv[1], g_strerror(errno));
    posix_fadvise(file_fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    signal(SIGPIPE, SIG_IGN);

    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(listen_fd, 1) < 0 || getsockname(listen_fd, (struct sockaddr *)&addr, &addr_len) < 0)
        die("cannot listen on 127.0.0.1: %s", g_strerror(errno));
    /* Nothing is buffered on stdout yet, so the child cannot print the parent's output. */
    fflush(NULL);
    parent = getpid();
    pid = fork();
    if (pid < 0)
        die("fork: %s", g_strerror(errno));
    if (pid == 0) {
        close(file_fd);
        serve(listen_fd, parent);
    }
    close(listen_fd);

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
        die("cannot connect to 127.0.0.1:%u: %s", ntohs(addr.sin_port), g_strerror(errno));
    session = session_open(GNUTLS_CLIENT, fd, opt_client_cert, opt_client_key, &creds);
    buf = g_malloc(opt_block_size);

    t0 = g_get_monotonic_time();
    for (;;) {
        size_t n = read_block(file_fd, buf, opt_block_size, argv[1]);

        if (n == 0)
            break;
        send_all(session, buf, n);
        sent += n;
    }
    /* close_notify: the server's end of file; it then replies on the other half. */
    push_now(fd);
    check(gnutls_bye(session, GNUTLS_SHUT_WR), "close_notify");
    while (got < sizeof(reply)) {
        ssize_t n = gnutls_record_recv(session, (uint8_t *)&reply + got, sizeof(reply) - got);

        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n == 0)
            die("the server closed before its count");
        check((int)MIN(n, 0), "client receive");
        got += (size_t)n;
    }
    t1 = g_get_monotonic_time();

    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("the server failed");
    if (GUINT64_FROM_BE(reply) != sent)
        die("the server counted %" PRIu64 " bytes, not the %" PRIu64 " sent",
            GUINT64_FROM_BE(reply), sent);
    seconds = (t1 - t0) / 1e6;
    printf("raw_tls_bytes=%" PRIu64 " seconds=%.3f mib_s=%.1f cipher=%s\n", sent, seconds,
           sent / 1048576.0 / seconds, gnutls_cipher_get_name(gnutls_cipher_get(session)));
    session_close(session, creds, fd);
    close(file_fd);
    return 0;
}
