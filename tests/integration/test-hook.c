/*
 * test-hook.c: the libvirt hook (virsh-ext/virt-replica-hook) run as libvirtd runs it
 *
 * Each run spawns the built hook with libvirt's argv (DOMAIN OPERATION SUB-OPERATION EXTRA),
 * libvirt's environment (virCommandAddEnvPassCommon: LC_ALL=C, PATH, HOME, USER, LOGNAME)
 * plus VIRT_REPLICA_SOCKET, and the domain XML written to its stdin while its stdout and
 * stderr are read, with poll, as virCommandProcessIO does; a write that meets a closed pipe
 * fails the test. A listener thread plays the daemon on a unix socket in the scratch
 * directory: it answers, or never accepts, never reads, never answers, closes, answers 500
 * or not HTTP. The standby marker comes from the real vr_standby_build_xml(), and a table of
 * marker variants is checked against vr_standby_info_from_xml() as the model.
 *
 * With --daemon, the real virt-replicad hears the notifications too (/hook/daemon/virt-replicad).
 * As root, /hook/libvirt installs the hook into an unprivileged libvirtd of its own, in a
 * mount namespace where nothing of the system's libvirt is touched, and starts, stops, saves
 * and restores real (TCG, diskless) domains, and a standby that the hook refuses.
 *
 *   test-hook --hook PATH [--daemon PATH] [GTEST OPTIONS]
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>
#include <json-c/json.h>

#include "vr-qmp-json.h"
#include "vr-standby.h"
#include "vr-test-util.h"

#define MiB (1024 * 1024)

/* The hook gives up 1 s after it started; allow for a loaded machine. */
#define HOOK_DEADLINE_S 1.0
#define HOOK_MAX_S      1.5
/* A run that takes longer than this is a hung hook: it is killed and the test fails. */
#define HOOK_KILL_S 10.0

static char *opt_hook;
static char *opt_daemon;

/* ---- running the hook as libvirtd does ----------------------------------------------- */

typedef struct {
    int status; /* exit status, or -1 when killed by a signal */
    GString *out;
    GString *err;
    double seconds;  /* from spawn to exit */
    int stdin_errno; /* the first error writing stdin (EPIPE: the hook did not read it) */
} HookRun;

static void
hook_run_free(HookRun *run)
{
    if (run == NULL)
        return;
    g_string_free(run->out, TRUE);
    g_string_free(run->err, TRUE);
    g_free(run);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HookRun, hook_run_free)

static void
set_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);

    g_assert_cmpint(flags, >=, 0);
    g_assert_no_errno(fcntl(fd, F_SETFL, flags | O_NONBLOCK));
}

/* Read what @fd has into @into; false at EOF. */
static bool
drain_fd(int fd, GString *into)
{
    char buf[4096];
    ssize_t n = read(fd, buf, sizeof(buf));

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return true;
    g_assert_cmpint(n, >=, 0);
    if (n == 0)
        return false;
    g_string_append_len(into, buf, n);
    return true;
}

/*
 * Run the hook: argv @domain @op @sub @extra, @len bytes of @xml on stdin, and
 * VIRT_REPLICA_SOCKET=@socket_path when not NULL.
 */
static HookRun *
hook_run_len(const char *socket_path, const char *domain, const char *op, const char *sub,
             const char *extra, const char *xml, gsize len)
{
    g_autoptr(HookRun) run = g_new0(HookRun, 1);
    g_autoptr(GPtrArray) envp = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) error = NULL;
    const char *argv[] = { opt_hook, domain, op, sub, extra, NULL };
    int fds[3] = { -1, -1, -1 }; /* stdin, stdout, stderr */
    gint64 start = g_get_monotonic_time();
    gsize written = 0;
    GPid pid;
    int wstatus = 0;

    g_ptr_array_add(envp, g_strdup("LC_ALL=C"));
    g_ptr_array_add(envp, g_strdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:"
                                   "/sbin:/bin"));
    g_ptr_array_add(envp, g_strdup("HOME=/root"));
    g_ptr_array_add(envp, g_strdup("USER=root"));
    g_ptr_array_add(envp, g_strdup("LOGNAME=root"));
    if (socket_path != NULL)
        g_ptr_array_add(envp, g_strdup_printf("VIRT_REPLICA_SOCKET=%s", socket_path));
    g_ptr_array_add(envp, NULL);

    run->out = g_string_new(NULL);
    run->err = g_string_new(NULL);
    g_spawn_async_with_pipes(NULL, (char **)argv, (char **)envp->pdata, G_SPAWN_DO_NOT_REAP_CHILD,
                             NULL, NULL, &pid, &fds[0], &fds[1], &fds[2], &error);
    g_assert_no_error(error);
    for (int i = 0; i < 3; i++)
        set_nonblock(fds[i]);
    if (len == 0) {
        close(fds[0]);
        fds[0] = -1;
    }

    while (fds[0] >= 0 || fds[1] >= 0 || fds[2] >= 0) {
        struct pollfd pfds[3];
        int n;

        if ((g_get_monotonic_time() - start) / (double)G_USEC_PER_SEC > HOOK_KILL_S) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            g_spawn_close_pid(pid);
            g_error("the hook ran for more than %.0f s: killed", HOOK_KILL_S);
        }
        for (int i = 0; i < 3; i++) {
            pfds[i].fd = fds[i];
            pfds[i].events = i == 0 ? POLLOUT : POLLIN;
            pfds[i].revents = 0;
        }
        n = poll(pfds, 3, 100);
        if (n < 0 && errno == EINTR)
            continue;
        g_assert_cmpint(n, >=, 0);
        if (fds[0] >= 0 && pfds[0].revents != 0) {
            ssize_t w = write(fds[0], xml + written, MIN(len - written, 64 * 1024));

            if (w < 0 && errno != EAGAIN && errno != EINTR) {
                run->stdin_errno = errno;
                close(fds[0]);
                fds[0] = -1;
            } else if (w > 0) {
                written += (gsize)w;
                if (written == len) {
                    close(fds[0]);
                    fds[0] = -1;
                }
            }
        }
        for (int i = 1; i < 3; i++) {
            if (fds[i] >= 0 && pfds[i].revents != 0 &&
                !drain_fd(fds[i], i == 1 ? run->out : run->err)) {
                close(fds[i]);
                fds[i] = -1;
            }
        }
    }
    g_assert_cmpint(waitpid(pid, &wstatus, 0), ==, pid);
    g_spawn_close_pid(pid);
    run->seconds = (g_get_monotonic_time() - start) / (double)G_USEC_PER_SEC;
    run->status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
    g_test_message("hook %s %s %s %s: exit %d in %.3f s, stderr: %s", domain, op, sub, extra,
                   run->status, run->seconds, run->err->str);
    return g_steal_pointer(&run);
}

static HookRun *
hook_run(const char *socket_path, const char *domain, const char *op, const char *sub,
         const char *extra, const char *xml)
{
    return hook_run_len(socket_path, domain, op, sub, extra, xml, strlen(xml));
}

/* Exit 0, in time, all of stdin read, nothing on stdout. */
static void
assert_run_ok(const HookRun *run)
{
    g_assert_cmpint(run->stdin_errno, ==, 0);
    g_assert_cmpint(run->status, ==, 0);
    g_assert_cmpfloat(run->seconds, <, HOOK_MAX_S);
    g_assert_cmpstr(run->out->str, ==, "");
}

/* One line on stderr, "virt-replica-hook: ...", containing each of the NULL-terminated
 * strings that follow. */
static void
assert_one_line(const GString *err, ...)
{
    va_list args;
    const char *part;

    g_assert_true(g_str_has_prefix(err->str, "virt-replica-hook: "));
    g_assert_true(g_str_has_suffix(err->str, "\n"));
    g_assert_true(strchr(err->str, '\n') == err->str + err->len - 1);
    va_start(args, err);
    while ((part = va_arg(args, const char *)) != NULL) {
        if (strstr(err->str, part) == NULL)
            g_error("'%s' is not in the hook's message: %s", part, err->str);
    }
    va_end(args);
}

/* ---- the daemon's stand-in ------------------------------------------------------------ */

typedef enum {
    LISTENER_ANSWER,      /* read the request, answer with @status_line */
    LISTENER_NO_ACCEPT,   /* listen, never accept */
    LISTENER_FULL,        /* listen with a full backlog: connect gets EAGAIN */
    LISTENER_NO_READ,     /* accept, never read */
    LISTENER_NO_ANSWER,   /* read the request, never answer */
    LISTENER_CLOSE,       /* read the request, close without an answer */
    LISTENER_NOT_STARTED, /* a socket file nobody listens on */
} ListenerMode;

typedef struct {
    ListenerMode mode;
    const char *status_line;
    char *path;
    int listen_fd;
    int stop[2];
    GThread *thread;
    GMutex lock;
    GPtrArray *requests; /* GString: each request read, headers and body */
    GArray *held;        /* fds kept open until the end */
} Listener;

/* Read one HTTP request (headers, then Content-Length bytes of body) within 2 s. */
static GString *
listener_read_request(int fd)
{
    GString *req = g_string_new(NULL);
    gint64 end = g_get_monotonic_time() + 2 * G_USEC_PER_SEC;

    for (;;) {
        const char *head_end = strstr(req->str, "\r\n\r\n");
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        char buf[4096];
        ssize_t n;

        if (head_end != NULL) {
            const char *cl = g_strstr_len(req->str, head_end - req->str, "Content-Length: ");
            gsize body = cl != NULL ? g_ascii_strtoull(cl + 16, NULL, 10) : 0;

            if (req->len >= (gsize)(head_end - req->str) + 4 + body)
                return req;
        }
        if (g_get_monotonic_time() >= end ||
            poll(&pfd, 1, (int)((end - g_get_monotonic_time()) / 1000) + 1) <= 0)
            return req;
        n = read(fd, buf, sizeof(buf));
        if (n <= 0)
            return req;
        g_string_append_len(req, buf, n);
    }
}

static gpointer
listener_thread(gpointer data)
{
    Listener *l = data;

    for (;;) {
        struct pollfd pfds[2] = {
            { .fd = l->stop[0], .events = POLLIN },
            { .fd = l->listen_fd, .events = POLLIN },
        };
        int fd;

        /* Modes that never accept only wait for the end. */
        if (poll(pfds, l->mode == LISTENER_NO_ACCEPT || l->mode == LISTENER_FULL ? 1 : 2, -1) < 0)
            continue;
        if (pfds[0].revents != 0)
            return NULL;
        fd = accept4(l->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        if (l->mode == LISTENER_NO_READ) {
            g_mutex_lock(&l->lock);
            g_array_append_val(l->held, fd);
            g_mutex_unlock(&l->lock);
            continue;
        }

        {
            GString *req = listener_read_request(fd);

            g_mutex_lock(&l->lock);
            g_ptr_array_add(l->requests, req);
            g_mutex_unlock(&l->lock);
        }
        if (l->mode == LISTENER_ANSWER) {
            g_autofree char *answer = g_strdup_printf(
                "%s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", l->status_line);

            if (write(fd, answer, strlen(answer)) < 0)
                g_test_message("listener: write: %s", g_strerror(errno));
        }
        if (l->mode == LISTENER_NO_ANSWER) {
            g_mutex_lock(&l->lock);
            g_array_append_val(l->held, fd);
            g_mutex_unlock(&l->lock);
            continue;
        }
        close(fd);
    }
}

static Listener *
listener_start(const char *path, ListenerMode mode, const char *status_line)
{
    Listener *l = g_new0(Listener, 1);
    struct sockaddr_un addr = { .sun_family = AF_UNIX };

    l->mode = mode;
    l->status_line = status_line;
    l->path = g_strdup(path);
    l->requests = g_ptr_array_new();
    l->held = g_array_new(FALSE, FALSE, sizeof(int));
    g_mutex_init(&l->lock);
    g_assert_cmpuint(strlen(path), <, sizeof(addr.sun_path));
    memcpy(addr.sun_path, path, strlen(path) + 1);
    l->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_assert_cmpint(l->listen_fd, >=, 0);
    g_assert_no_errno(bind(l->listen_fd, (struct sockaddr *)&addr, sizeof(addr)));
    /* The hook of an unprivileged libvirtd (/hook/libvirt) connects as another user. */
    g_assert_no_errno(chmod(path, 0666));
    if (mode == LISTENER_NOT_STARTED) {
        /* The file stays, nobody listens: connect gets ECONNREFUSED. */
        close(l->listen_fd);
        l->listen_fd = -1;
        return l;
    }
    g_assert_no_errno(listen(l->listen_fd, mode == LISTENER_FULL ? 0 : 16));
    if (mode == LISTENER_FULL) {
        /* Fill the backlog with connections of our own, until a connect says EAGAIN. */
        for (;;) {
            int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

            g_assert_cmpint(fd, >=, 0);
            if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
                g_assert_cmpint(errno, ==, EAGAIN);
                close(fd);
                break;
            }
            g_array_append_val(l->held, fd);
            g_assert_cmpuint(l->held->len, <, 64);
        }
    }
    g_assert_no_errno(pipe2(l->stop, O_CLOEXEC));
    l->thread = g_thread_new("listener", listener_thread, l);
    return l;
}

/* Stop the thread, close every socket, remove the socket file. NULL-safe. */
static void
listener_free(Listener *l)
{
    if (l == NULL)
        return;
    if (l->thread != NULL) {
        g_assert_cmpint(write(l->stop[1], "x", 1), ==, 1);
        g_thread_join(l->thread);
        close(l->stop[0]);
        close(l->stop[1]);
    }
    for (guint i = 0; i < l->held->len; i++)
        close(g_array_index(l->held, int, i));
    if (l->listen_fd >= 0)
        close(l->listen_fd);
    g_unlink(l->path);
    for (guint i = 0; i < l->requests->len; i++)
        g_string_free(g_ptr_array_index(l->requests, i), TRUE);
    g_ptr_array_unref(l->requests);
    g_array_unref(l->held);
    g_mutex_clear(&l->lock);
    g_free(l->path);
    g_free(l);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Listener, listener_free)

static guint
listener_count(Listener *l)
{
    guint n;

    g_mutex_lock(&l->lock);
    n = l->requests->len;
    g_mutex_unlock(&l->lock);
    return n;
}

/* The @i-th request read. (transfer none: valid until listener_free) */
static const char *
listener_request(Listener *l, guint i)
{
    const char *req;

    g_mutex_lock(&l->lock);
    g_assert_cmpuint(i, <, l->requests->len);
    req = ((GString *)g_ptr_array_index(l->requests, i))->str;
    g_mutex_unlock(&l->lock);
    return req;
}

/* ---- fixture -------------------------------------------------------------------------- */

typedef struct {
    char *dir;
    char *socket_path;
} Fixture;

static void
fixture_setup(Fixture *f, gconstpointer data)
{
    static int n;
    g_autofree char *name = g_strdup_printf("hook-%d", n++);

    f->dir = vr_test_path(name);
    g_assert_no_errno(g_mkdir_with_parents(f->dir, 0755));
    f->socket_path = g_build_filename(f->dir, "virt-replicad.sock", NULL);
}

static void
fixture_teardown(Fixture *f, gconstpointer data)
{
    g_unlink(f->socket_path);
    g_rmdir(f->dir);
    g_free(f->socket_path);
    g_free(f->dir);
}

/* ---- domain XML ----------------------------------------------------------------------- */

#define UUID       "3f1c1c9e-1b5e-4c1a-9d8e-2a7f0e5b6c4d"
#define UUID_UPPER "3F1C1C9E-1B5E-4C1A-9D8E-2A7F0E5B6C4D"

/* A primary's domain XML, as libvirt gives a hook (the live definition). */
static const char primary_xml[] =
    "<domain type='kvm' id='7'>\n"
    "  <name>web</name>\n"
    "  <uuid>" UUID "</uuid>\n"
    "  <metadata>\n"
    "    <app:info xmlns:app='https://example.org/app/1' owner='ops'/>\n"
    "  </metadata>\n"
    "  <memory unit='KiB'>1048576</memory>\n"
    "  <vcpu placement='static'>1</vcpu>\n"
    "  <os>\n"
    "    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\n"
    "  </os>\n"
    "  <devices>\n"
    "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
    "    <disk type='file' device='disk'>\n"
    "      <driver name='qemu' type='qcow2'/>\n"
    "      <source file='/var/lib/libvirt/images/web.qcow2'/>\n"
    "      <target dev='vda' bus='virtio'/>\n"
    "    </disk>\n"
    "  </devices>\n"
    "</domain>\n";

/* The standby of relationship "web-dr" that vr-standby defines from primary_xml. */
static char *
standby_xml(const char *name_rule)
{
    g_autoptr(GHashTable) disks = g_hash_table_new(g_str_hash, g_str_equal);
    g_autoptr(GError) error = NULL;
    VrStandbyConfig cfg = {
        .relationship = "web-dr",
        .primary_host = "pri.example.org",
        .epoch = 1,
        .disk_paths = disks,
        .name_rule = name_rule,
    };
    char *xml;

    g_hash_table_insert(disks, "vda", "/srv/replica/web-dr/vda/failover.qcow2");
    xml = vr_standby_build_xml(primary_xml, &cfg, &error);
    g_assert_no_error(error);
    return xml;
}

/* A domain XML whose <metadata> holds @metadata (NULL: no <metadata>). (transfer full) */
static char *
domain_with_metadata(const char *metadata)
{
    return g_strdup_printf("<domain type='kvm'>\n"
                           "  <name>web</name>\n"
                           "  <uuid>" UUID "</uuid>\n"
                           "%s%s%s"
                           "  <memory unit='KiB'>1048576</memory>\n"
                           "</domain>\n",
                           metadata != NULL ? "  <metadata>\n    " : "",
                           metadata != NULL ? metadata : "",
                           metadata != NULL ? "\n  </metadata>\n" : "");
}

/* ---- prepare: the standby guard ------------------------------------------------------- */

/* The real standby XML (both naming rules) is refused, with the message libvirt will show. */
static void
test_prepare_standby(Fixture *f, gconstpointer data)
{
    g_autoptr(Listener) l = listener_start(f->socket_path, LISTENER_ANSWER, "HTTP/1.1 204 OK");
    const char *rules[] = { NULL, "%n-replica" };

    for (guint i = 0; i < G_N_ELEMENTS(rules); i++) {
        g_autofree char *xml = standby_xml(rules[i]);
        const char *name = rules[i] == NULL ? "web" : "web-replica";
        g_autofree char *quoted = g_strdup_printf("'%s'", name);
        g_autofree char *failover = g_strdup_printf("'virsh replica-failover %s'", name);
        g_autofree char *test = g_strdup_printf("'virsh replica-failover %s --test'", name);
        g_autoptr(HookRun) run = hook_run(f->socket_path, name, "prepare", "begin", "-", xml);

        g_assert_cmpint(run->stdin_errno, ==, 0);
        g_assert_cmpint(run->status, ==, 1);
        g_assert_cmpstr(run->out->str, ==, "");
        g_assert_cmpfloat(run->seconds, <, HOOK_MAX_S);
        assert_one_line(run->err, "refusing to start domain", quoted, "relationship 'web-dr'",
                        "state 'replica'", failover, test, NULL);
    }
    /* prepare tells the daemon nothing */
    g_assert_cmpuint(listener_count(l), ==, 0);
}

/* The primary itself, and other operations on the standby, pass. */
static void
test_prepare_others(Fixture *f, gconstpointer data)
{
    g_autofree char *xml = standby_xml(NULL);
    const char *ops[] = { "start", "restore", "attach", "frobnicate" };

    {
        g_autoptr(HookRun) run =
            hook_run(f->socket_path, "web", "prepare", "begin", "-", primary_xml);

        assert_run_ok(run);
        g_assert_cmpstr(run->err->str, ==, "");
    }
    for (guint i = 0; i < G_N_ELEMENTS(ops); i++) {
        g_autoptr(HookRun) run = hook_run(f->socket_path, "web", ops[i], "begin", "-", xml);

        assert_run_ok(run);
        g_assert_cmpstr(run->err->str, ==, "");
    }
}

/*
 * Marker variants: [name, <metadata> content (NULL: the XML is @whole instead), whole
 * document, refused]. For whole <domain> documents the model, vr_standby_info_from_xml()
 * with state "replica", must agree.
 */
#define NS        "https://virt-replica.org/xmlns/standby/1"
#define ATTRS     "relationship='web-dr' primary-name='web' primary-uuid='" UUID "' epoch='1'"
#define MARKER(s) "<vr:standby xmlns:vr='" NS "' " ATTRS " state='" s "'/>"

static const struct {
    const char *name;
    const char *metadata;
    const char *whole;
    bool refused;
} marker_cases[] = {
    { "no-metadata", NULL, NULL, false },
    { "other-metadata", "<app:info xmlns:app='https://example.org/app/1'/>", NULL, false },
    { "replica", MARKER("replica"), NULL, true },
    { "replica-after-other",
      "<app:info xmlns:app='https://example.org/app/1'/>\n    " MARKER("replica"), NULL, true },
    { "other-prefix", "<x:standby xmlns:x='" NS "' " ATTRS " state='replica'/>", NULL, true },
    { "default-namespace", "<standby xmlns='" NS "' " ATTRS " state='replica'/>", NULL, true },
    { "no-epoch", "<vr:standby xmlns:vr='" NS "' relationship='web-dr' state='replica'/>", NULL,
      true },
    { "failed-over", MARKER("failed-over"), NULL, false },
    { "old-primary", MARKER("old-primary"), NULL, true },
    { "failing-over", MARKER("failing-over"), NULL, true },
    { "uppercase-state", MARKER("REPLICA"), NULL, false },
    { "no-state", "<vr:standby xmlns:vr='" NS "' " ATTRS "/>", NULL, false },
    { "no-relationship", "<vr:standby xmlns:vr='" NS "' epoch='1' state='replica'/>", NULL, false },
    { "empty-relationship",
      "<vr:standby xmlns:vr='" NS "' relationship='' epoch='1' state='replica'/>", NULL, false },
    { "bad-epoch",
      "<vr:standby xmlns:vr='" NS "' relationship='web-dr' epoch='one' state='replica'/>", NULL,
      false },
    { "other-namespace",
      "<vr:standby xmlns:vr='https://example.org/standby/1' " ATTRS " state='replica'/>", NULL,
      false },
    { "no-namespace", "<standby " ATTRS " state='replica'/>", NULL, false },
    { "nested", "<app:wrap xmlns:app='https://example.org/app/1'>" MARKER("replica") "</app:wrap>",
      NULL, false },
    { "outside-metadata", NULL,
      "<domain type='kvm'><name>web</name><uuid>" UUID "</uuid>" MARKER("replica") "</domain>",
      false },
    { "not-a-domain", NULL,
      "<network><name>web</name><metadata>" MARKER("replica") "</metadata></network>", false },
    { "marker-alone", NULL, MARKER("replica"), false },
    { "malformed", NULL, "<domain><name>web</name><metadata>" MARKER("replica"), false },
    { "empty", NULL, "", false },
    { "not-xml", NULL, "\x01\x02 binary \xff\xfe", false },
};

static void
test_prepare_markers(Fixture *f, gconstpointer data)
{
    for (guint i = 0; i < G_N_ELEMENTS(marker_cases); i++) {
        g_autofree char *xml = marker_cases[i].whole != NULL
                                   ? g_strdup(marker_cases[i].whole)
                                   : domain_with_metadata(marker_cases[i].metadata);
        g_autoptr(HookRun) run = NULL;

        g_test_message("case %s", marker_cases[i].name);
        if (g_str_has_prefix(xml, "<domain") && marker_cases[i].whole == NULL) {
            g_autoptr(VrStandbyInfo) info = vr_standby_info_from_xml(xml);
            /* The standby, and a primary's own domain during or after a planned failover. */
            bool model = info != NULL && (g_strcmp0(info->state, VR_STANDBY_STATE_REPLICA) == 0 ||
                                          g_strcmp0(info->state, "old-primary") == 0 ||
                                          g_strcmp0(info->state, "failing-over") == 0);

            if (model != marker_cases[i].refused)
                g_error("case %s: the model says %s", marker_cases[i].name,
                        model ? "refused" : "allowed");
        }
        run = hook_run(f->socket_path, "web", "prepare", "begin", "-", xml);
        g_assert_cmpint(run->stdin_errno, ==, 0);
        g_assert_cmpstr(run->out->str, ==, "");
        if (run->status != (marker_cases[i].refused ? 1 : 0))
            g_error("case %s: exit %d, stderr: %s", marker_cases[i].name, run->status,
                    run->err->str);
        if (marker_cases[i].refused)
            assert_one_line(run->err, "'web'", "relationship 'web-dr'", NULL);
        else
            g_assert_cmpstr(run->err->str, ==, "");
    }
}

/* A domain XML larger than the hook reads: refused at prepare (the marker cannot be checked),
 * still read to its end. */
static void
test_prepare_too_large(Fixture *f, gconstpointer data)
{
    g_autoptr(GString) xml = g_string_new("<domain type='kvm'><name>web</name><description>");
    g_autoptr(HookRun) run = NULL;

    while (xml->len < 17 * MiB)
        g_string_append(xml, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n");
    g_string_append(xml, "</description></domain>\n");
    run = hook_run_len(f->socket_path, "web", "prepare", "begin", "-", xml->str, xml->len);
    g_assert_cmpint(run->stdin_errno, ==, 0);
    g_assert_cmpint(run->status, ==, 1);
    g_assert_cmpstr(run->out->str, ==, "");
    assert_one_line(run->err, "refusing to start domain 'web'", "larger than 16 MiB", NULL);
}

/* ---- notifications -------------------------------------------------------------------- */

/*
 * Check the request line and the headers (in this order, nothing else), and return the JSON
 * body, an object of exactly the six fields of the contract. (transfer full)
 */
static json_object *
request_body(const char *req)
{
    const char *head_end = strstr(req, "\r\n\r\n");
    g_autofree char *head = NULL;
    g_auto(GStrv) lines = NULL;
    const char *body;
    g_autoptr(json_object) json = NULL;
    g_autofree char *content_length = NULL;
    const char *fields[] = { "domain", "uuid", "operation", "sub_operation", "extra", "time_ms" };

    g_assert_nonnull(head_end);
    head = g_strndup(req, head_end - req);
    body = head_end + 4;
    lines = g_strsplit(head, "\r\n", -1);
    content_length = g_strdup_printf("Content-Length: %zu", strlen(body));
    g_assert_cmpuint(g_strv_length(lines), ==, 6);
    g_assert_cmpstr(lines[0], ==, "POST /v1/hooks/qemu HTTP/1.1");
    g_assert_cmpstr(lines[1], ==, "Host: localhost");
    g_assert_true(g_str_has_prefix(lines[2], "User-Agent: virt-replica-hook/"));
    g_assert_cmpstr(lines[3], ==, "Content-Type: application/json");
    g_assert_cmpstr(lines[4], ==, content_length);
    g_assert_cmpstr(lines[5], ==, "Connection: close");

    json = json_tokener_parse(body);
    g_assert_nonnull(json);
    g_assert_true(json_object_is_type(json, json_type_object));
    g_assert_cmpint(json_object_object_length(json), ==, G_N_ELEMENTS(fields));
    for (guint i = 0; i < G_N_ELEMENTS(fields); i++)
        g_assert_true(json_object_object_get_ex(json, fields[i], NULL));
    return g_steal_pointer(&json);
}

/* The string field @name of @json (NULL for JSON null). */
static const char *
body_string(json_object *json, const char *name)
{
    json_object *value = json_object_object_get(json, name);

    if (value == NULL)
        return NULL;
    g_assert_true(json_object_is_type(value, json_type_string));
    return json_object_get_string(value);
}

/* Check the request (request_body()), its fields, and a time_ms within [@t0_ms, @t1_ms]. */
static void
assert_request(const char *req, const char *domain, const char *uuid, const char *op,
               const char *sub, const char *extra, gint64 t0_ms, gint64 t1_ms)
{
    g_autoptr(json_object) json = request_body(req);
    json_object *value = json_object_object_get(json, "time_ms");

    g_assert_cmpstr(body_string(json, "domain"), ==, domain);
    g_assert_cmpstr(body_string(json, "uuid"), ==, uuid);
    g_assert_cmpstr(body_string(json, "operation"), ==, op);
    g_assert_cmpstr(body_string(json, "sub_operation"), ==, sub);
    g_assert_cmpstr(body_string(json, "extra"), ==, extra);
    g_assert_true(json_object_is_type(value, json_type_int));
    g_assert_cmpint(json_object_get_int64(value), >=, t0_ms);
    g_assert_cmpint(json_object_get_int64(value), <=, t1_ms);
}

/* The calls libvirt 9.0 makes that the daemon hears of: [operation, sub-operation, extra]. */
static const char *const notified[][3] = {
    { "started", "begin", "-" },      { "stopped", "end", "-" },     { "release", "end", "-" },
    { "release", "end", "shutdown" }, /* libvirt >= 10.5 passes the shutoff reason */
    { "migrate", "begin", "-" },      { "reconnect", "begin", "-" },
};

static void
test_notify_delivered(Fixture *f, gconstpointer data)
{
    g_autoptr(Listener) l = listener_start(f->socket_path, LISTENER_ANSWER, "HTTP/1.1 204 OK");

    for (guint i = 0; i < G_N_ELEMENTS(notified); i++) {
        gint64 t0 = g_get_real_time() / 1000;
        g_autoptr(HookRun) run = hook_run(f->socket_path, "web", notified[i][0], notified[i][1],
                                          notified[i][2], primary_xml);
        gint64 t1 = g_get_real_time() / 1000;

        /* migrate and restore are filters: an empty stdout keeps libvirt's XML as it is */
        assert_run_ok(run);
        g_assert_cmpstr(run->err->str, ==, "");
        g_assert_cmpuint(listener_count(l), ==, i + 1);
        assert_request(listener_request(l, i), "web", UUID, notified[i][0], notified[i][1],
                       notified[i][2], t0, t1);
    }
}

/* The standby's own notifications go out as well (the daemon decides what they mean). */
static void
test_notify_standby(Fixture *f, gconstpointer data)
{
    g_autoptr(Listener) l = listener_start(f->socket_path, LISTENER_ANSWER, "HTTP/1.1 200 OK");
    g_autofree char *xml = standby_xml(NULL);
    gint64 t0 = g_get_real_time() / 1000;
    g_autoptr(HookRun) run = hook_run(f->socket_path, "web", "stopped", "end", "-", xml);

    assert_run_ok(run);
    g_assert_cmpuint(listener_count(l), ==, 1);
    assert_request(listener_request(l, 0), "web", UUID, "stopped", "end", "-", t0,
                   g_get_real_time() / 1000);
}

/* Names and arguments that JSON must escape; an upper-case UUID goes out in lower case. */
static void
test_notify_escaping(Fixture *f, gconstpointer data)
{
    g_autoptr(Listener) l = listener_start(f->socket_path, LISTENER_ANSWER, "HTTP/1.1 204 OK");
    const char *name = "we\"b\\/ \xc3\xa9t\xc3\xa9 \xe2\x9c\x93";
    g_autoptr(GString) xml = g_string_new(primary_xml);
    gint64 t0 = g_get_real_time() / 1000;
    g_autoptr(HookRun) run = NULL;

    g_string_replace(xml, UUID, " " UUID_UPPER " ", 1);
    run = hook_run(f->socket_path, name, "release", "end", "from snapshot\t\"x\"", xml->str);
    assert_run_ok(run);
    g_assert_cmpuint(listener_count(l), ==, 1);
    assert_request(listener_request(l, 0), name, UUID, "release", "end", "from snapshot\t\"x\"", t0,
                   g_get_real_time() / 1000);
}

/* XML that does not parse, has no or a bad UUID, or is too large: delivered, uuid null. */
static void
test_notify_no_uuid(Fixture *f, gconstpointer data)
{
    g_autoptr(Listener) l = listener_start(f->socket_path, LISTENER_ANSWER, "HTTP/1.1 204 OK");
    g_autoptr(GString) large = g_string_new(primary_xml);
    const char *inputs[] = {
        "<domain><name>web</name><uuid>" UUID "</uuid>",
        "",
        "<domain><name>web</name></domain>",
        "<domain><name>web</name><uuid>not-a-uuid</uuid></domain>",
        "<network><name>web</name><uuid>" UUID "</uuid></network>",
        NULL, /* large */
    };

    g_string_replace(large, "</domain>", "<description>", 1);
    while (large->len < 17 * MiB)
        g_string_append(large, "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n");
    g_string_append(large, "</description></domain>\n");
    for (guint i = 0; i < G_N_ELEMENTS(inputs); i++) {
        const char *xml = inputs[i] != NULL ? inputs[i] : large->str;
        gsize len = inputs[i] != NULL ? strlen(inputs[i]) : large->len;
        gint64 t0 = g_get_real_time() / 1000;
        g_autoptr(HookRun) run =
            hook_run_len(f->socket_path, "web", "started", "begin", "-", xml, len);

        assert_run_ok(run);
        g_assert_cmpstr(run->err->str, ==, "");
        g_assert_cmpuint(listener_count(l), ==, i + 1);
        assert_request(listener_request(l, i), "web", NULL, "started", "begin", "-", t0,
                       g_get_real_time() / 1000);
    }
}

/* Operations the daemon is not told of. */
static void
test_notify_ignored(Fixture *f, gconstpointer data)
{
    g_autoptr(Listener) l = listener_start(f->socket_path, LISTENER_ANSWER, "HTTP/1.1 204 OK");
    const char *ops[][2] = {
        { "prepare", "begin" }, { "start", "begin" },  { "restore", "begin" },
        { "attach", "begin" },  { "frobnicate", "-" },
    };

    for (guint i = 0; i < G_N_ELEMENTS(ops); i++) {
        g_autoptr(HookRun) run =
            hook_run(f->socket_path, "web", ops[i][0], ops[i][1], "-", primary_xml);

        assert_run_ok(run);
        g_assert_cmpstr(run->err->str, ==, "");
    }
    g_assert_cmpuint(listener_count(l), ==, 0);
}

/* ---- a daemon that is absent, stuck or failing ----------------------------------------- */

/*
 * [name, listener mode (-1: no socket file), status line, the warning contains, the request
 * reached the listener, the hook waits until its deadline]
 */
static const struct {
    const char *name;
    int mode;
    const char *status_line;
    const char *warning;
    bool request_read;
    bool waits;
} daemon_cases[] = {
    { "absent", -1, NULL, "No such file or directory", false, false },
    { "not-listening", LISTENER_NOT_STARTED, NULL, "Connection refused", false, false },
    { "backlog-full", LISTENER_FULL, NULL, "backlog stayed full", false, true },
    { "never-accepts", LISTENER_NO_ACCEPT, NULL, "gave up 1000 ms after", false, true },
    { "never-reads", LISTENER_NO_READ, NULL, "gave up 1000 ms after", false, true },
    { "never-answers", LISTENER_NO_ANSWER, NULL, "gave up 1000 ms after", true, true },
    { "closes", LISTENER_CLOSE, NULL, "closed the connection without an answer", true, false },
    { "error-500", LISTENER_ANSWER, "HTTP/1.1 500 Internal Server Error",
      "the daemon answered 'HTTP/1.1 500 Internal Server Error'", true, false },
    { "error-404", LISTENER_ANSWER, "HTTP/1.0 404 Not Found", "'HTTP/1.0 404 Not Found'", true,
      false },
    { "not-http", LISTENER_ANSWER, "SSH-2.0-OpenSSH_9.2", "not HTTP: 'SSH-2.0-OpenSSH_9.2'", true,
      false },
};

static void
test_daemon(Fixture *f, gconstpointer data)
{
    guint i = GPOINTER_TO_UINT(data);
    g_autoptr(Listener) l = NULL;
    g_autoptr(HookRun) run = NULL;
    gint64 t0 = g_get_real_time() / 1000;

    if (daemon_cases[i].mode >= 0)
        l = listener_start(f->socket_path, daemon_cases[i].mode, daemon_cases[i].status_line);
    run = hook_run(f->socket_path, "web", "stopped", "end", "-", primary_xml);
    assert_run_ok(run);
    assert_one_line(run->err, "cannot tell virt-replicad about 'stopped' of domain 'web'",
                    daemon_cases[i].warning, NULL);
    if (daemon_cases[i].waits)
        g_assert_cmpfloat(run->seconds, >=, HOOK_DEADLINE_S * 0.9);
    if (l != NULL) {
        g_assert_cmpuint(listener_count(l), ==, daemon_cases[i].request_read ? 1 : 0);
        if (daemon_cases[i].request_read)
            assert_request(listener_request(l, 0), "web", UUID, "stopped", "end", "-", t0,
                           g_get_real_time() / 1000);
    }
}

/* ---- the real daemon -------------------------------------------------------------------- */

static void
daemon_child_setup(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* virt-replicad (--daemon) on a socket of the scratch directory hears every notification,
 * answers 202 at once, and logs it. */
static void
test_virt_replicad(Fixture *f, gconstpointer data)
{
    g_autofree char *config = g_build_filename(f->dir, "virt-replica.conf", NULL);
    g_autofree char *log_path = g_build_filename(f->dir, "virt-replicad.log", NULL);
    g_autofree char *text = NULL;
    g_autofree char *log = NULL;
    g_autoptr(GError) error = NULL;
    const char *argv[] = { opt_daemon, "--config", config, NULL };
    gint64 end;
    GPid pid;
    int log_fd;

    if (opt_daemon == NULL) {
        g_test_skip("no --daemon: virt-replicad was not given");
        return;
    }
    text = g_strdup_printf("[daemon]\nstate-dir = %s/state\nsocket = %s\n", f->dir, f->socket_path);
    g_file_set_contents(config, text, -1, &error);
    g_assert_no_error(error);
    log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    g_assert_cmpint(log_fd, >=, 0);
    g_spawn_async_with_fds(NULL, (char **)argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD, daemon_child_setup,
                           NULL, &pid, -1, log_fd, log_fd, &error);
    g_assert_no_error(error);
    close(log_fd);
    end = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (!g_file_test(f->socket_path, G_FILE_TEST_EXISTS)) {
        g_assert_cmpint(waitpid(pid, NULL, WNOHANG), ==, 0);
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(20 * 1000);
    }

    for (guint i = 0; i < G_N_ELEMENTS(notified); i++) {
        g_autoptr(HookRun) run = hook_run(f->socket_path, "web", notified[i][0], notified[i][1],
                                          notified[i][2], primary_xml);

        assert_run_ok(run);
        g_assert_cmpstr(run->err->str, ==, "");
    }

    kill(pid, SIGTERM);
    g_assert_cmpint(waitpid(pid, NULL, 0), ==, pid);
    g_spawn_close_pid(pid);
    g_file_get_contents(log_path, &log, NULL, &error);
    g_assert_no_error(error);
    for (guint i = 0; i < G_N_ELEMENTS(notified); i++) {
        g_autofree char *line =
            g_strdup_printf("libvirt hook: domain 'web' %s %s", notified[i][0], notified[i][1]);

        if (strstr(log, line) == NULL)
            g_error("'%s' is not in the daemon's log:\n%s", line, log);
    }
}

/* ---- under a real libvirtd ------------------------------------------------------------ */

/*
 * An unprivileged libvirtd (qemu:///session, as nobody) in a mount namespace of its own, where
 * a tmpfs on /etc/libvirt/hooks holds the built hook as qemu.d/virt-replica and a tmpfs on /run
 * holds /run/virt-replica, a bind mount of a scratch directory: the hook runs exactly as
 * installed, with libvirt's arguments, stdin and environment, and finds the listener at its
 * default socket path. Nothing outside the namespace sees either mount: the system's libvirtd
 * and its hooks are not touched. unshare, sh, setpriv and env exec one another, so the pid
 * spawned is libvirtd's, and it gets SIGKILL when the test dies (setpriv sets the parent-death
 * signal after the change of user, which would clear it). Its output goes to a file, never to
 * the test's pipes; QEMU writes its log itself (stdio_handler "file"), so no virtlogd is
 * spawned. A QEMU left by a test that died names the scratch directory on its command line:
 * run-isolated.sh kills it.
 */
static const char session_script[] =
    "set -e\n"
    "mount -t tmpfs -o mode=0755 vrtest-hooks /etc/libvirt/hooks\n"
    "mkdir /etc/libvirt/hooks/qemu.d\n"
    "install -m 0755 \"$1\" /etc/libvirt/hooks/qemu.d/virt-replica\n"
    "mount -t tmpfs -o mode=0755 vrtest-run /run\n"
    "mkdir /run/virt-replica\n"
    "mount --bind \"$2\" /run/virt-replica\n"
    "exec >\"$5\" 2>&1 setpriv --reuid=65534 --regid=65534 --clear-groups --pdeathsig KILL "
    "env -i HOME=\"$3\" XDG_RUNTIME_DIR=\"$4\" PATH=/usr/sbin:/usr/bin:/sbin:/bin libvirtd "
    "--pid-file=\"$4/libvirtd.pid\"\n";

typedef struct {
    char *dir;
    char *home;
    char *xdg;
    char *sockdir;
    GPid pid;
} Session;

/* Run virsh as nobody against the session daemon: its exit status, stdout and stderr. */
static int
session_virsh(Session *s, char **out, char **err, ...)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(GError) error = NULL;
    g_autofree char *o = NULL;
    g_autofree char *e = NULL;
    const char *arg;
    va_list args;
    int wstatus;

    g_ptr_array_add(argv, g_strdup("setpriv"));
    g_ptr_array_add(argv, g_strdup("--reuid=65534"));
    g_ptr_array_add(argv, g_strdup("--regid=65534"));
    g_ptr_array_add(argv, g_strdup("--clear-groups"));
    g_ptr_array_add(argv, g_strdup("env"));
    g_ptr_array_add(argv, g_strdup("-i"));
    g_ptr_array_add(argv, g_strdup_printf("HOME=%s", s->home));
    g_ptr_array_add(argv, g_strdup_printf("XDG_RUNTIME_DIR=%s", s->xdg));
    g_ptr_array_add(argv, g_strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin"));
    /* never a daemon of virsh's own, outside the namespace */
    g_ptr_array_add(argv, g_strdup("LIBVIRT_AUTOSTART=0"));
    g_ptr_array_add(argv, g_strdup("virsh"));
    g_ptr_array_add(argv, g_strdup("-q"));
    g_ptr_array_add(argv, g_strdup("-c"));
    g_ptr_array_add(argv, g_strdup("qemu:///session"));
    va_start(args, err);
    while ((arg = va_arg(args, const char *)) != NULL)
        g_ptr_array_add(argv, g_strdup(arg));
    va_end(args);
    g_ptr_array_add(argv, NULL);
    g_spawn_sync(NULL, (char **)argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &o, &e,
                 &wstatus, &error);
    g_assert_no_error(error);
    g_strstrip(o);
    g_strstrip(e);
    g_test_message("virsh %s: %d: %s %s", (char *)argv->pdata[14],
                   WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1, o, e);
    if (out != NULL)
        *out = g_steal_pointer(&o);
    if (err != NULL)
        *err = g_steal_pointer(&e);
    return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

/* Start the session daemon, or skip (returning false) with the reason. */
static bool
session_start(Session *s, const char *dir)
{
    const char *programs[] = { "unshare", "setpriv", "libvirtd", "virsh", "qemu-system-x86_64" };
    g_autoptr(GError) error = NULL;
    g_autofree char *sock = NULL;
    gint64 end;

    if (getuid() != 0) {
        g_test_skip("needs root (a mount namespace, and an unprivileged libvirtd as nobody)");
        return false;
    }
    for (guint i = 0; i < G_N_ELEMENTS(programs); i++) {
        if (vr_test_skip_without(programs[i]))
            return false;
    }
    if (!g_file_test("/etc/libvirt/hooks", G_FILE_TEST_IS_DIR)) {
        g_test_skip("no /etc/libvirt/hooks to mount the test's hook directory on");
        return false;
    }
    s->dir = g_strdup(dir);
    s->home = g_build_filename(dir, "home", NULL);
    s->xdg = g_build_filename(dir, "xdg", NULL);
    s->sockdir = g_build_filename(dir, "run", NULL);
    g_assert_no_errno(g_mkdir(s->home, 0700));
    g_assert_no_errno(g_mkdir(s->xdg, 0700));
    g_assert_no_errno(g_mkdir(s->sockdir, 0755));
    g_assert_no_errno(chown(s->xdg, 65534, 65534));
    {
        /* QEMU logs to a file of its own: no virtlogd (session_script) */
        g_autofree char *dot_config = g_build_filename(s->home, ".config", NULL);
        g_autofree char *config = g_build_filename(dot_config, "libvirt", NULL);
        g_autofree char *qemu_conf = g_build_filename(config, "qemu.conf", NULL);
        const char *owned[] = { s->home, dot_config, config, qemu_conf };

        g_assert_no_errno(g_mkdir_with_parents(config, 0700));
        g_file_set_contents(qemu_conf, "stdio_handler = \"file\"\n", -1, &error);
        g_assert_no_error(error);
        for (guint i = 0; i < G_N_ELEMENTS(owned); i++)
            g_assert_no_errno(chown(owned[i], 65534, 65534));
    }
    {
        g_autofree char *log = g_build_filename(s->dir, "libvirtd.log", NULL);
        const char *argv[] = { "unshare",  "--mount", "--propagation", "private", "--",
                               "sh",       "-c",      session_script,  "sh",      opt_hook,
                               s->sockdir, s->home,   s->xdg,          log,       NULL };

        g_spawn_async(NULL, (char **)argv, NULL,
                      G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL,
                      NULL, NULL, &s->pid, &error);
        g_assert_no_error(error);
    }
    sock = g_build_filename(s->xdg, "libvirt", "libvirt-sock", NULL);
    end = g_get_monotonic_time() + 30 * G_USEC_PER_SEC;
    while (!g_file_test(sock, G_FILE_TEST_EXISTS) ||
           session_virsh(s, NULL, NULL, "version", NULL) != 0) {
        if (waitpid(s->pid, NULL, WNOHANG) != 0)
            g_error("the session libvirtd exited (see libvirtd.log in %s)", s->dir);
        if (g_get_monotonic_time() > end)
            g_error("the session libvirtd did not answer in 30 s (see libvirtd.log in %s)", s->dir);
        g_usleep(100 * 1000);
    }
    return true;
}

static void
session_stop(Session *s, const char *const *domains)
{
    if (s->pid > 0) {
        gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

        for (guint i = 0; domains[i] != NULL; i++) {
            session_virsh(s, NULL, NULL, "destroy", domains[i], NULL);
            session_virsh(s, NULL, NULL, "undefine", domains[i], "--nvram", NULL);
        }
        kill(s->pid, SIGTERM);
        while (waitpid(s->pid, NULL, WNOHANG) == 0) {
            if (g_get_monotonic_time() > end) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, NULL, 0);
                break;
            }
            g_usleep(50 * 1000);
        }
        g_spawn_close_pid(s->pid);
    }
    g_free(s->dir);
    g_free(s->home);
    g_free(s->xdg);
    g_free(s->sockdir);
}

/* A TCG domain with no disk, started paused: enough for every hook call of a start. */
static char *
session_define(Session *s, const char *name, const char *uuid, const char *metadata)
{
    g_autofree char *xml =
        g_strdup_printf("<domain type='qemu'>\n"
                        "  <name>%s</name>\n"
                        "  <uuid>%s</uuid>\n"
                        "  <memory unit='MiB'>64</memory>\n"
                        "%s%s%s"
                        "  <os><type arch='x86_64' machine='pc'>hvm</type></os>\n"
                        "  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator></devices>\n"
                        "</domain>\n",
                        name, uuid, metadata != NULL ? "  <metadata>" : "",
                        metadata != NULL ? metadata : "", metadata != NULL ? "</metadata>\n" : "");
    g_autofree char *base = g_strdup_printf("%s.xml", name);
    char *path = g_build_filename(s->dir, base, NULL);
    g_autoptr(GError) error = NULL;

    g_file_set_contents(path, xml, -1, &error);
    g_assert_no_error(error);
    g_assert_no_errno(chmod(path, 0644));
    g_assert_cmpint(session_virsh(s, NULL, NULL, "define", path, NULL), ==, 0);
    return path;
}

static char *
session_state(Session *s, const char *name)
{
    char *out = NULL;

    g_assert_cmpint(session_virsh(s, &out, NULL, "domstate", name, NULL), ==, 0);
    return out;
}

/* The operations of the requests from @from on, "op sub" separated by commas, each checked
 * for @domain and @uuid. */
static char *
listener_ops(Listener *l, guint from, const char *domain, const char *uuid)
{
    g_autoptr(GString) ops = g_string_new(NULL);

    for (guint i = from; i < listener_count(l); i++) {
        g_autoptr(json_object) json = request_body(listener_request(l, i));

        g_assert_cmpstr(body_string(json, "domain"), ==, domain);
        g_assert_cmpstr(body_string(json, "uuid"), ==, uuid);
        g_string_append_printf(ops, "%s%s %s", ops->len > 0 ? "," : "",
                               body_string(json, "operation"), body_string(json, "sub_operation"));
    }
    return g_string_free(g_steal_pointer(&ops), FALSE);
}

#define UUID_PLAIN   "6b1f1e0a-7c52-4bd3-9d38-0f5f2d6a1c01"
#define UUID_STANDBY "6b1f1e0a-7c52-4bd3-9d38-0f5f2d6a1c02"

static void
test_libvirt(Fixture *f, gconstpointer data)
{
    Session s = { 0 };
    g_autofree char *plain = g_strdup_printf("%s-plain", vr_test_prefix());
    g_autofree char *standby = g_strdup_printf("%s-standby", vr_test_prefix());
    const char *domains[] = { plain, standby, NULL };
    g_autofree char *socket_path = NULL;
    g_autofree char *save = NULL;
    Listener *l = NULL;

    if (!session_start(&s, f->dir))
        return;
    socket_path = g_build_filename(s.sockdir, "virt-replicad.sock", NULL);
    l = listener_start(socket_path, LISTENER_ANSWER, "HTTP/1.1 204 No Content");
    g_free(session_define(&s, plain, UUID_PLAIN, NULL));
    g_free(session_define(&s, standby, UUID_STANDBY, MARKER("replica")));

    /* A start: the daemon hears of "started" only (not of prepare and start). */
    g_assert_cmpint(session_virsh(&s, NULL, NULL, "start", plain, "--paused", NULL), ==, 0);
    {
        g_autofree char *ops = listener_ops(l, 0, plain, UUID_PLAIN);

        g_assert_cmpstr(ops, ==, "started begin");
    }

    /* The standby in the replica state does not start; libvirt shows the hook's line. */
    {
        g_autofree char *err = NULL;
        g_autofree char *quoted = g_strdup_printf("refusing to start domain '%s'", standby);
        g_autofree char *test = g_strdup_printf("'virsh replica-failover %s --test'", standby);
        g_autofree char *state = NULL;

        g_assert_cmpint(session_virsh(&s, NULL, &err, "start", standby, "--paused", NULL), ==, 1);
        g_assert_nonnull(strstr(err, "Hook script execution failed"));
        g_assert_nonnull(strstr(err, "qemu.d/virt-replica"));
        g_assert_nonnull(strstr(err, quoted));
        g_assert_nonnull(strstr(err, "relationship 'web-dr'"));
        g_assert_nonnull(strstr(err, test));
        state = session_state(&s, standby);
        g_assert_cmpstr(state, ==, "shut off");
    }
    /* libvirt cleans a failed start up as a stop: the daemon hears of it (nothing started). */
    {
        g_autofree char *ops = listener_ops(l, 1, standby, UUID_STANDBY);

        g_assert_cmpstr(ops, ==, "stopped end,release end");
    }

    /* A stop: stopped, then release. */
    g_assert_cmpint(session_virsh(&s, NULL, NULL, "destroy", plain, NULL), ==, 0);
    {
        g_autofree char *ops = listener_ops(l, 3, plain, UUID_PLAIN);

        g_assert_cmpstr(ops, ==, "stopped end,release end");
    }

    /* Save and restore: restore is a filter, and the hook's empty stdout keeps the XML (a
     * non-empty one would taint the domain "hook-script"). */
    save = g_build_filename(s.home, "plain.save", NULL);
    g_assert_cmpint(session_virsh(&s, NULL, NULL, "start", plain, "--paused", NULL), ==, 0);
    g_assert_cmpint(session_virsh(&s, NULL, NULL, "save", plain, save, NULL), ==, 0);
    g_assert_cmpint(session_virsh(&s, NULL, NULL, "restore", save, "--paused", NULL), ==, 0);
    {
        g_autofree char *ops = listener_ops(l, 5, plain, UUID_PLAIN);
        g_autofree char *state = session_state(&s, plain);
        g_autofree char *log_path =
            g_strdup_printf("%s/.cache/libvirt/qemu/log/%s.log", s.home, plain);
        g_autofree char *log = NULL;

        g_assert_cmpstr(ops, ==, "started begin,stopped end,release end,started begin");
        g_assert_cmpstr(state, ==, "paused");
        if (g_file_get_contents(log_path, &log, NULL, NULL))
            g_assert_null(strstr(log, "hook-script"));
        else
            g_test_message("no QEMU log at %s", log_path);
    }
    g_assert_cmpint(session_virsh(&s, NULL, NULL, "destroy", plain, NULL), ==, 0);

    /* A daemon that accepts and never answers delays each hook call by its 1 s, no more. */
    listener_free(l);
    l = listener_start(socket_path, LISTENER_NO_ANSWER, NULL);
    {
        gint64 t0 = g_get_monotonic_time();
        g_autofree char *state = NULL;
        double seconds;

        g_assert_cmpint(session_virsh(&s, NULL, NULL, "start", plain, "--paused", NULL), ==, 0);
        seconds = (g_get_monotonic_time() - t0) / (double)G_USEC_PER_SEC;
        g_test_message("start with a stuck daemon: %.3f s", seconds);
        g_assert_cmpfloat(seconds, <, 5.0);
        state = session_state(&s, plain);
        g_assert_cmpstr(state, ==, "paused");
        g_assert_cmpint(session_virsh(&s, NULL, NULL, "destroy", plain, NULL), ==, 0);
    }

    /* No daemon at all: the same, without the wait. */
    listener_free(l);
    l = NULL;
    {
        g_autofree char *state = NULL;

        g_assert_cmpint(session_virsh(&s, NULL, NULL, "start", plain, "--paused", NULL), ==, 0);
        state = session_state(&s, plain);
        g_assert_cmpstr(state, ==, "paused");
    }

    /* A failover changes the marker's state first; then the standby starts. */
    g_assert_cmpint(session_virsh(&s, NULL, NULL, "metadata", standby, NS, "--config", "--key",
                                  "vr", "--set", "<standby " ATTRS " state='failed-over'/>", NULL),
                    ==, 0);
    g_assert_cmpint(session_virsh(&s, NULL, NULL, "start", standby, "--paused", NULL), ==, 0);

    session_stop(&s, domains);
}

/* ---- the binary ----------------------------------------------------------------------- */

/* libvirt forbids a hook to call it: the hook does not even link it. */
static void
test_no_libvirt(void)
{
    const char *argv[] = { "ldd", opt_hook, NULL };
    g_autofree char *out = NULL;

    if (vr_test_skip_without("ldd"))
        return;
    out = vr_test_run(argv);
    g_assert_nonnull(strstr(out, "libxml2"));
    g_assert_null(strstr(out, "libvirt"));
}

/* Usage, --help and --version; nothing read from a closed stdin. */
static void
test_usage(void)
{
    const char *cases[][2] = { { "--help", "0" }, { "--version", "0" }, { "web", "2" } };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        const char *argv[] = { opt_hook, cases[i][0], NULL };
        g_autofree char *out = NULL;
        g_autofree char *err = NULL;
        g_autoptr(GError) error = NULL;
        int wstatus;

        g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_STDIN_FROM_DEV_NULL, NULL, NULL, &out, &err,
                     &wstatus, &error);
        g_assert_no_error(error);
        g_assert_true(WIFEXITED(wstatus));
        g_assert_cmpint(WEXITSTATUS(wstatus), ==, atoi(cases[i][1]));
        g_assert_nonnull(strstr(WEXITSTATUS(wstatus) == 0 ? out : err, "virt-replica-hook"));
    }
}

int
main(int argc, char **argv)
{
    g_autoptr(GOptionContext) context = g_option_context_new("- the libvirt hook");
    g_autoptr(GError) error = NULL;
    GOptionEntry entries[] = {
        { "hook", 0, 0, G_OPTION_ARG_FILENAME, &opt_hook, "the built virt-replica-hook", "PATH" },
        { "daemon", 0, 0, G_OPTION_ARG_FILENAME, &opt_daemon, "the built virt-replicad", "PATH" },
        { NULL },
    };

    g_option_context_add_main_entries(context, entries, NULL);
    g_option_context_set_ignore_unknown_options(context, TRUE);
    g_option_context_set_help_enabled(context, FALSE);
    if (!g_option_context_parse(context, &argc, &argv, &error)) {
        g_printerr("%s\n", error->message);
        return 2;
    }
    if (opt_hook == NULL) {
        g_printerr("usage: test-hook --hook PATH [--daemon PATH] [GTEST OPTIONS]\n");
        return 2;
    }
    /* A hook that closes its stdin early must show as EPIPE, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    g_test_init(&argc, &argv, NULL);

#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/hook/prepare/standby", test_prepare_standby);
    ADD("/hook/prepare/others", test_prepare_others);
    ADD("/hook/prepare/markers", test_prepare_markers);
    ADD("/hook/prepare/too-large", test_prepare_too_large);
    ADD("/hook/notify/delivered", test_notify_delivered);
    ADD("/hook/notify/standby", test_notify_standby);
    ADD("/hook/notify/escaping", test_notify_escaping);
    ADD("/hook/notify/no-uuid", test_notify_no_uuid);
    ADD("/hook/notify/ignored", test_notify_ignored);
#undef ADD
    for (guint i = 0; i < G_N_ELEMENTS(daemon_cases); i++) {
        g_autofree char *path = g_strdup_printf("/hook/daemon/%s", daemon_cases[i].name);

        g_test_add(path, Fixture, GUINT_TO_POINTER(i), fixture_setup, test_daemon,
                   fixture_teardown);
    }
    g_test_add("/hook/daemon/virt-replicad", Fixture, NULL, fixture_setup, test_virt_replicad,
               fixture_teardown);
    g_test_add("/hook/libvirt", Fixture, NULL, fixture_setup, test_libvirt, fixture_teardown);
    g_test_add_func("/hook/binary/no-libvirt", test_no_libvirt);
    g_test_add_func("/hook/binary/usage", test_usage);
    return g_test_run();
}
