/*
 * virt-replica-hook: the libvirt qemu hook of virt-replica (docs/hook.md)
 *
 * libvirtd runs it as /etc/libvirt/hooks/qemu.d/virt-replica DOMAIN OPERATION SUB-OPERATION
 * EXTRA, with the domain XML on stdin, and waits for it: a hook must be quick and must never
 * call back into libvirt (libvirtd is waiting for it: a deadlock). This program does not link
 * libvirt at all.
 *
 *   - prepare: the standby guard (docs/standby.md). A domain whose <metadata> carries the
 *     virt-replica standby marker with state="replica" is refused (exit 1, one line on
 *     stderr, which libvirt puts into its error): a standby starts only through a failover;
 *     so is a primary's own domain after a planned failover away (state="old-primary").
 *   - started, stopped, release, migrate, reconnect: one notification to virt-replicad over
 *     its unix socket (POST /v1/hooks/qemu), within 1 s from the start of the program,
 *     whatever the daemon does; exit 0 in every case, with a one-line warning on stderr when
 *     it was not delivered. A VM never waits for, or fails because of, the daemon.
 *   - anything else: exit 0.
 *
 * stdin is always read to its end (libvirt writes the whole XML), and nothing is ever
 * written to stdout: for migrate and restore, libvirt takes a non-empty stdout as a new
 * domain XML (and taints the domain), while an empty one keeps the XML unchanged.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib.h>
#include <json-c/json.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#ifndef VR_HOOK_VERSION
#define VR_HOOK_VERSION "unknown"
#endif

#define VR_HOOK_PROGRAM "virt-replica-hook"

/* virt-replicad's socket, and the variable that overrides it (libvirtd passes no environment
 * of its own to a hook: the override is for tests and manual runs). */
#define VR_HOOK_SOCKET_DEFAULT "/run/virt-replica/virt-replicad.sock"
#define VR_HOOK_SOCKET_ENV     "VIRT_REPLICA_SOCKET"

/* The request to the daemon. */
#define VR_HOOK_REQUEST_PATH "/v1/hooks/qemu"

/* The notification is given up this long after the program started, delivered or not. */
#define VR_HOOK_DEADLINE_US (1 * G_USEC_PER_SEC)
/* How often a connect is retried while the daemon's listen backlog is full. */
#define VR_HOOK_CONNECT_RETRY_US (10 * 1000)

/*
 * The most of stdin that is kept (the rest is read and dropped). libvirt's remote protocol
 * carries strings of at most 4 MiB (REMOTE_STRING_MAX), so no domain XML defined or read
 * through libvirt's API is this large.
 */
#define VR_HOOK_INPUT_MAX (16 * 1024 * 1024)

/* The longest status line from the daemon that is looked at. */
#define VR_HOOK_STATUS_MAX 1024

/* The standby marker: VR_STANDBY_XMLNS and VR_STANDBY_STATE_REPLICA of plugin/vr-standby.h,
 * repeated here because that header pulls libvirt in (the test checks that both agree). */
#define VR_HOOK_STANDBY_XMLNS   "https://virt-replica.org/xmlns/standby/1"
#define VR_HOOK_STANDBY_ELEMENT "standby"
#define VR_HOOK_STANDBY_REPLICA "replica"
/* The marker of a primary's own domain after a planned failover away (docs/failover.md). */
#define VR_HOOK_STANDBY_OLD_PRIMARY  "old-primary"
#define VR_HOOK_STANDBY_FAILING_OVER "failing-over"

/* The errors of a notification, each logged once, in main(). */
#define VR_HOOK_ERROR (vr_hook_error_quark())

typedef enum {
    VR_HOOK_ERROR_FAILED,    /* a system call failed (its errno's message) */
    VR_HOOK_ERROR_TIMED_OUT, /* the deadline passed */
    VR_HOOK_ERROR_ANSWER,    /* the daemon answered with an error or not in HTTP */
} VrHookErrorCode;

G_DEFINE_AUTOPTR_CLEANUP_FUNC(xmlDoc, xmlFreeDoc)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_object, json_object_put)

static GQuark
vr_hook_error_quark(void)
{
    return g_quark_from_static_string("vr-hook-error-quark");
}

/* What stdin held. */
typedef struct {
    GByteArray *bytes; /* at most VR_HOOK_INPUT_MAX bytes */
    bool complete;     /* all of stdin is in @bytes (no read error, not too large) */
    char *why;         /* when not complete: why, for a message */
} VrHookInput;

static void
vr_hook_input_clear(VrHookInput *input)
{
    if (input->bytes != NULL)
        g_byte_array_unref(input->bytes);
    g_free(input->why);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VrHookInput, vr_hook_input_clear)

/* What the hook needs of a domain XML: the UUID, and the marker as
 * vr_standby_info_from_xml() reads it. */
typedef struct {
    char *uuid;         /* <uuid>, lowercase, when it is a valid UUID; else NULL */
    bool standby;       /* a valid marker is there */
    char *relationship; /* the marker's attributes, when @standby */
    char *state;
} VrHookDomain;

static void
vr_hook_domain_clear(VrHookDomain *domain)
{
    g_free(domain->uuid);
    g_free(domain->relationship);
    g_free(domain->state);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VrHookDomain, vr_hook_domain_clear)

/* A copy of @text fit for one line of a message: valid UTF-8, controls as '?'. */
static char *
vr_hook_printable(const char *text)
{
    char *copy = g_utf8_make_valid(text, -1);

    for (char *p = copy; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    }
    return copy;
}

static void vr_hook_warn(const char *format, ...) G_GNUC_PRINTF(1, 2);

/* One line on stderr, which libvirtd logs (at debug level when the hook succeeds). */
static void
vr_hook_warn(const char *format, ...)
{
    g_autofree char *message = NULL;
    va_list args;

    va_start(args, format);
    message = g_strdup_vprintf(format, args);
    va_end(args);
    fprintf(stderr, "%s: %s\n", VR_HOOK_PROGRAM, message);
    fflush(stderr);
}

/* ---- stdin --------------------------------------------------------------------------- */

/*
 * Read stdin to its end, keeping at most VR_HOOK_INPUT_MAX bytes: libvirtd writes the whole
 * XML and must never meet a closed pipe. A read error stops the reading (and is kept as the
 * reason the input is incomplete).
 */
static void
vr_hook_input_read(VrHookInput *input)
{
    g_autofree guint8 *chunk = g_malloc(64 * 1024);
    bool too_large = false;

    input->bytes = g_byte_array_new();
    for (;;) {
        ssize_t n = read(STDIN_FILENO, chunk, 64 * 1024);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            input->why =
                g_strdup_printf("cannot read the domain XML on stdin: %s", g_strerror(errno));
            return;
        }
        if (n == 0)
            break;
        if (too_large || input->bytes->len + (size_t)n > VR_HOOK_INPUT_MAX) {
            too_large = true; /* read on to the end, keep nothing more */
            continue;
        }
        g_byte_array_append(input->bytes, chunk, (guint)n);
    }
    if (too_large) {
        input->why = g_strdup_printf("the domain XML on stdin is larger than %d MiB",
                                     VR_HOOK_INPUT_MAX / (1024 * 1024));
        return;
    }
    input->complete = true;
}

/* ---- the domain XML ------------------------------------------------------------------ */

static bool
vr_hook_xml_is(const xmlNode *node, const char *name)
{
    return node->type == XML_ELEMENT_NODE && node->ns == NULL &&
           strcmp((const char *)node->name, name) == 0;
}

static xmlNode *
vr_hook_xml_child(xmlNode *parent, const char *name)
{
    for (xmlNode *child = parent->children; child != NULL; child = child->next) {
        if (vr_hook_xml_is(child, name))
            return child;
    }
    return NULL;
}

static bool
vr_hook_is_marker(const xmlNode *node)
{
    return node->type == XML_ELEMENT_NODE && node->ns != NULL && node->ns->href != NULL &&
           strcmp((const char *)node->ns->href, VR_HOOK_STANDBY_XMLNS) == 0 &&
           strcmp((const char *)node->name, VR_HOOK_STANDBY_ELEMENT) == 0;
}

/* Attribute @name of @node (no namespace), or NULL. (transfer full) */
static char *
vr_hook_xml_prop(xmlNode *node, const char *name)
{
    xmlChar *value = xmlGetNoNsProp(node, (const xmlChar *)name);
    char *copy = g_strdup((const char *)value);

    xmlFree(value);
    return copy;
}

/*
 * Fill @domain from the marker element: the rules of vr_standby_info_from_xml(), where a
 * marker without a relationship, or with an epoch that is not a number, is no marker.
 */
static void
vr_hook_domain_marker(VrHookDomain *domain, xmlNode *marker)
{
    g_autofree char *relationship = vr_hook_xml_prop(marker, "relationship");
    g_autofree char *epoch = vr_hook_xml_prop(marker, "epoch");

    if (relationship == NULL || relationship[0] == '\0')
        return;
    if (epoch != NULL && !g_ascii_string_to_unsigned(epoch, 10, 0, G_MAXUINT64, NULL, NULL))
        return;
    domain->standby = true;
    domain->relationship = g_steal_pointer(&relationship);
    domain->state = vr_hook_xml_prop(marker, "state");
}

/*
 * Parse the domain XML (libxml2, no network, no entities loaded, no error output) for its
 * UUID and the standby marker. An input that does not parse, or is not a <domain>, leaves
 * @domain empty.
 */
static void
vr_hook_domain_parse(VrHookDomain *domain, const GByteArray *bytes)
{
    g_autoptr(xmlDoc) doc = NULL;
    xmlNode *root;
    xmlNode *node;

    if (bytes->len == 0)
        return;
    doc = xmlReadMemory((const char *)bytes->data, (int)bytes->len, "domain.xml", NULL,
                        XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    if (doc == NULL || (root = xmlDocGetRootElement(doc)) == NULL ||
        !vr_hook_xml_is(root, "domain"))
        return;

    if ((node = vr_hook_xml_child(root, "uuid")) != NULL) {
        xmlChar *content = xmlNodeGetContent(node);
        g_autofree char *uuid = g_strdup(content != NULL ? (const char *)content : "");

        xmlFree(content);
        g_strstrip(uuid);
        if (g_uuid_string_is_valid(uuid))
            domain->uuid = g_ascii_strdown(uuid, -1);
    }
    if ((node = vr_hook_xml_child(root, "metadata")) != NULL) {
        for (xmlNode *child = node->children; child != NULL; child = child->next) {
            if (vr_hook_is_marker(child)) {
                vr_hook_domain_marker(domain, child);
                break;
            }
        }
    }
}

/* ---- prepare: the standby guard ------------------------------------------------------ */

/*
 * The exit status for "prepare": 1 (with one line on stderr) for a standby in the replica
 * state, and for a domain XML that could not be read whole (the marker cannot be checked);
 * 0 otherwise, including an XML that does not parse (no domain libvirt runs has such XML).
 */
static int
vr_hook_prepare(const char *name, const VrHookInput *input)
{
    g_autofree char *shown = vr_hook_printable(name);
    g_auto(VrHookDomain) domain = { 0 };

    if (!input->complete) {
        vr_hook_warn("refusing to start domain '%s': %s, so the virt-replica standby marker "
                     "cannot be checked",
                     shown, input->why);
        return 1;
    }
    vr_hook_domain_parse(&domain, input->bytes);
    if (domain.standby && g_strcmp0(domain.state, VR_HOOK_STANDBY_FAILING_OVER) == 0) {
        g_autofree char *relationship = vr_hook_printable(domain.relationship);

        vr_hook_warn("refusing to start domain '%s': a planned failover of it to its replica "
                     "host is under way or ended without an answer (relationship '%s', state "
                     "'%s'); run 'virt-replica replica-planned-failover %s' again to finish or "
                     "settle it",
                     shown, relationship, VR_HOOK_STANDBY_FAILING_OVER, shown);
        return 1;
    }
    if (domain.standby && g_strcmp0(domain.state, VR_HOOK_STANDBY_OLD_PRIMARY) == 0) {
        g_autofree char *relationship = vr_hook_printable(domain.relationship);

        vr_hook_warn("refusing to start domain '%s': it failed over to its replica host "
                     "(relationship '%s', state '%s'), where it runs now; starting it here too "
                     "would split the brain. 'virt-replica replica-disable %s' removes this "
                     "guard",
                     shown, relationship, VR_HOOK_STANDBY_OLD_PRIMARY, shown);
        return 1;
    }
    if (!domain.standby || g_strcmp0(domain.state, VR_HOOK_STANDBY_REPLICA) != 0)
        return 0;

    {
        g_autofree char *relationship = vr_hook_printable(domain.relationship);

        vr_hook_warn("refusing to start domain '%s': it is the virt-replica standby of "
                     "relationship '%s' (state '%s') and starts only through a failover; use "
                     "'virsh replica-failover %s' to fail over, or "
                     "'virsh replica-failover %s --test' for a test failover",
                     shown, relationship, VR_HOOK_STANDBY_REPLICA, shown, shown);
    }
    return 1;
}

/* ---- the notification ---------------------------------------------------------------- */

/* The JSON body of the request. (transfer full) */
static char *
vr_hook_body(const char *name, const char *uuid, const char *operation, const char *sub_operation,
             const char *extra, gint64 time_ms)
{
    g_autoptr(json_object) body = json_object_new_object();
    g_autofree char *valid_name = g_utf8_make_valid(name, -1);
    g_autofree char *valid_operation = g_utf8_make_valid(operation, -1);
    g_autofree char *valid_sub = g_utf8_make_valid(sub_operation, -1);
    g_autofree char *valid_extra = g_utf8_make_valid(extra, -1);

    json_object_object_add(body, "domain", json_object_new_string(valid_name));
    json_object_object_add(body, "uuid", uuid != NULL ? json_object_new_string(uuid) : NULL);
    json_object_object_add(body, "operation", json_object_new_string(valid_operation));
    json_object_object_add(body, "sub_operation", json_object_new_string(valid_sub));
    json_object_object_add(body, "extra", json_object_new_string(valid_extra));
    json_object_object_add(body, "time_ms", json_object_new_int64(time_ms));
    return g_strdup(json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
}

static void
vr_hook_set_errno(GError **error, int errsv, const char *what)
{
    g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_FAILED, "%s: %s", what, g_strerror(errsv));
}

/*
 * Wait until @fd is ready for @events or the deadline passes (TIMED_OUT, naming @what).
 */
static bool
vr_hook_wait(int fd, short events, gint64 deadline, const char *what, GError **error)
{
    for (;;) {
        struct pollfd pfd = { .fd = fd, .events = events };
        gint64 left = deadline - g_get_monotonic_time();
        int n;

        if (left <= 0) {
            g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_TIMED_OUT,
                        "%s: gave up %d ms after the hook started", what,
                        (int)(VR_HOOK_DEADLINE_US / 1000));
            return false;
        }
        n = poll(&pfd, 1, (int)((left + 999) / 1000));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            vr_hook_set_errno(error, errno, "poll");
            return false;
        }
        if (n > 0)
            return true;
    }
}

/*
 * A non-blocking connection to the unix socket @path. A full listen backlog (EAGAIN) is
 * retried until the deadline; a missing socket or no listener fails at once. (transfer full)
 */
static int
vr_hook_connect(const char *path, gint64 deadline, GError **error)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_FAILED,
                    "socket path '%s' is longer than %zu bytes", path, sizeof(addr.sun_path) - 1);
        return -1;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        vr_hook_set_errno(error, errno, "socket");
        return -1;
    }
    for (;;) {
        int errsv;
        int soerr = 0;
        socklen_t len = sizeof(soerr);

        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0)
            return fd;
        errsv = errno;
        if (errsv == EINTR)
            continue;
        if (errsv == EAGAIN) {
            /* The daemon's backlog is full: nothing to poll for, try again shortly. */
            if (g_get_monotonic_time() + VR_HOOK_CONNECT_RETRY_US >= deadline) {
                g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_TIMED_OUT,
                            "cannot connect to '%s': the daemon's backlog stayed full for "
                            "%d ms",
                            path, (int)(VR_HOOK_DEADLINE_US / 1000));
                close(fd);
                return -1;
            }
            g_usleep(VR_HOOK_CONNECT_RETRY_US);
            continue;
        }
        if (errsv != EINPROGRESS) {
            g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_FAILED, "cannot connect to '%s': %s",
                        path, g_strerror(errsv));
            close(fd);
            return -1;
        }
        if (!vr_hook_wait(fd, POLLOUT, deadline, "connect", error)) {
            close(fd);
            return -1;
        }
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
            soerr = errno;
        if (soerr != 0) {
            g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_FAILED, "cannot connect to '%s': %s",
                        path, g_strerror(soerr));
            close(fd);
            return -1;
        }
        return fd;
    }
}

/* Write all of @data, waiting at most until the deadline (never SIGPIPE). */
static bool
vr_hook_send_all(int fd, const char *data, size_t len, gint64 deadline, GError **error)
{
    size_t done = 0;

    while (done < len) {
        ssize_t n = send(fd, data + done, len - done, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!vr_hook_wait(fd, POLLOUT, deadline, "send", error))
                return false;
            continue;
        }
        if (n < 0) {
            vr_hook_set_errno(error, errno, "send");
            return false;
        }
        done += (size_t)n;
    }
    return true;
}

/*
 * Read the daemon's status line and check it is a 2xx. The rest of the answer is not read:
 * the connection is closed after it (Connection: close).
 */
static bool
vr_hook_read_status(int fd, gint64 deadline, GError **error)
{
    char buf[VR_HOOK_STATUS_MAX + 1];
    size_t len = 0;
    char *eol = NULL;
    g_autofree char *line = NULL;
    guint64 status = 0;

    while (eol == NULL && len < VR_HOOK_STATUS_MAX) {
        ssize_t n;

        if (!vr_hook_wait(fd, POLLIN, deadline, "waiting for the daemon's answer", error))
            return false;
        n = recv(fd, buf + len, VR_HOOK_STATUS_MAX - len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n < 0) {
            vr_hook_set_errno(error, errno, "recv");
            return false;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        eol = strchr(buf, '\n');
    }
    if (len == 0) {
        g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_ANSWER,
                    "the daemon closed the connection without an answer");
        return false;
    }
    buf[len] = '\0';
    if (eol != NULL)
        *eol = '\0';
    line = vr_hook_printable(g_strchomp(buf));
    /* "HTTP/1.1 204 No Content" */
    if (!g_str_has_prefix(line, "HTTP/1.") || strlen(line) < 12 || line[8] != ' ' ||
        !g_ascii_isdigit(line[9]) || !g_ascii_isdigit(line[10]) || !g_ascii_isdigit(line[11]) ||
        (line[12] != '\0' && line[12] != ' ')) {
        g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_ANSWER,
                    "the daemon's answer is not HTTP: '%.80s'", line);
        return false;
    }
    status = (guint64)g_ascii_strtoull(line + 9, NULL, 10);
    if (status < 200 || status > 299) {
        g_set_error(error, VR_HOOK_ERROR, VR_HOOK_ERROR_ANSWER, "the daemon answered '%.200s'",
                    line);
        return false;
    }
    return true;
}

/* Send the notification and wait for the status line, at most until @deadline. */
static bool
vr_hook_notify(const char *socket_path, const char *body, gint64 deadline, GError **error)
{
    g_autofree char *request = NULL;
    int fd;
    bool ok;

    request = g_strdup_printf("POST " VR_HOOK_REQUEST_PATH " HTTP/1.1\r\n"
                              "Host: localhost\r\n"
                              "User-Agent: " VR_HOOK_PROGRAM "/" VR_HOOK_VERSION "\r\n"
                              "Content-Type: application/json\r\n"
                              "Content-Length: %zu\r\n"
                              "Connection: close\r\n"
                              "\r\n"
                              "%s",
                              strlen(body), body);
    fd = vr_hook_connect(socket_path, deadline, error);
    if (fd < 0)
        return false;
    ok = vr_hook_send_all(fd, request, strlen(request), deadline, error) &&
         vr_hook_read_status(fd, deadline, error);
    close(fd);
    return ok;
}

/* ---- main ---------------------------------------------------------------------------- */

static bool
vr_hook_is_notified(const char *operation)
{
    static const char *const notified[] = { "started", "stopped", "release", "migrate",
                                            "reconnect" };

    for (size_t i = 0; i < G_N_ELEMENTS(notified); i++) {
        if (strcmp(operation, notified[i]) == 0)
            return true;
    }
    return false;
}

static void
vr_hook_usage(FILE *out)
{
    fprintf(out,
            "Usage: %s DOMAIN OPERATION SUB-OPERATION EXTRA < DOMAIN-XML\n"
            "The libvirt qemu hook of virt-replica; libvirtd runs it as\n"
            "/etc/libvirt/hooks/qemu.d/virt-replica. See virt-replica-hook(8).\n",
            VR_HOOK_PROGRAM);
}

int
main(int argc, char **argv)
{
    gint64 start = g_get_monotonic_time();
    gint64 time_ms = g_get_real_time() / 1000;
    g_auto(VrHookInput) input = { 0 };
    g_auto(VrHookDomain) domain = { 0 };
    g_autoptr(GError) error = NULL;
    g_autofree char *body = NULL;
    const char *name;
    const char *operation;
    const char *sub_operation;
    const char *extra;
    const char *socket_path;

    if (argc == 2 && strcmp(argv[1], "--help") == 0) {
        vr_hook_usage(stdout);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("%s %s\n", VR_HOOK_PROGRAM, VR_HOOK_VERSION);
        return 0;
    }
    if (argc < 3) {
        vr_hook_usage(stderr);
        return 2;
    }
    name = argv[1];
    operation = argv[2];
    sub_operation = argc > 3 ? argv[3] : "-";
    extra = argc > 4 ? argv[4] : "-";

    /* A daemon that goes away while we write must not kill the hook (libvirtd would see a
     * failed hook: for "started" or "reconnect" it would kill the VM). */
    signal(SIGPIPE, SIG_IGN);

    vr_hook_input_read(&input);

    if (strcmp(operation, "prepare") == 0)
        return vr_hook_prepare(name, &input);
    if (!vr_hook_is_notified(operation))
        return 0;

    if (input.complete)
        vr_hook_domain_parse(&domain, input.bytes);
    body = vr_hook_body(name, domain.uuid, operation, sub_operation, extra, time_ms);
    socket_path = g_getenv(VR_HOOK_SOCKET_ENV);
    if (socket_path == NULL || socket_path[0] == '\0')
        socket_path = VR_HOOK_SOCKET_DEFAULT;
    if (!vr_hook_notify(socket_path, body, start + VR_HOOK_DEADLINE_US, &error)) {
        g_autofree char *shown = vr_hook_printable(name);
        g_autofree char *shown_op = vr_hook_printable(operation);

        vr_hook_warn("cannot tell virt-replicad about '%s' of domain '%s' (continuing): %s",
                     shown_op, shown, error->message);
    }
    return 0;
}
