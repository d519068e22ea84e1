/*
 * virt-replica: the command-line client of virt-replicad (docs/cli.md, virt-replica(1))
 *
 * Every command is one or two HTTP/1.1 requests to the daemon's local API on its unix socket
 * (docs/api.md), made with a libsoup 3 session whose "remote-connectable" is the socket
 * address. The same commands run as `virsh replica-*` through the virsh wrapper
 * (virsh-ext/virsh).
 *
 *   - `--json` prints the daemon's JSON body as it came (stable within /v1/); without it the
 *     answer is a table or a status block, sizes in IEC units, times ISO-8601 local.
 *   - An error is one line on stderr, "virt-replica: COMMAND DOMAIN: MESSAGE", and exit
 *     status 1; a usage error prints the command's usage and exits 2.
 *   - replica-sync and replica-enable --wait keep their request open until the replica has
 *     acknowledged the cycle: the API has no progress stream, so a terminal shows a spinner
 *     with the elapsed time, anything else a plain line now and then. Never a made-up
 *     percentage.
 *
 * The program does not link the daemon's libraries: GLib, libsoup and json-c only.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <locale.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>
#include <glib.h>
#include <json-c/json.h>
#include <libsoup/soup.h>

#ifndef VR_CLI_VERSION
#define VR_CLI_VERSION "unknown"
#endif

#define VR_CLI_SOCKET_DEFAULT "/run/virt-replica/virt-replicad.sock"
#define VR_CLI_SOCKET_ENV     "VIRT_REPLICA_SOCKET"
/* A request that the daemon answers at once; replica-sync waits without a limit. */
#define VR_CLI_TIMEOUT_S 30
/* Completion must never make the shell wait long. */
#define VR_CLI_COMPLETE_TIMEOUT_S 3
/* Progress shows once a wait lasts this long (an answer at once shows none)... */
#define VR_CLI_PROGRESS_DELAY_MS 500
/* ...and without a terminal, one line then and one per interval. */
#define VR_CLI_PLAIN_PROGRESS_S 10
/* A wait that follows a cycle asks for its progress this often. */
#define VR_CLI_POLL_MS 1000
/* The progress bar's width in characters. */
#define VR_CLI_BAR_WIDTH 24

/* Exit statuses (virt-replica(1), "EXIT STATUS"). */
enum {
    VR_CLI_EXIT_OK = 0,
    VR_CLI_EXIT_FAILED = 1,
    VR_CLI_EXIT_USAGE = 2,
    VR_CLI_EXIT_INTERRUPTED = 130,
};

#define VR_CLI_ERROR (vr_cli_error_quark())

typedef enum {
    VR_CLI_ERROR_UNREACHABLE, /* no connection: no socket, nobody listening, no permission */
    VR_CLI_ERROR_TIMEOUT,     /* no answer in time */
    VR_CLI_ERROR_INTERRUPTED, /* SIGINT or SIGTERM while waiting */
    VR_CLI_ERROR_ANSWER,      /* an answer that is not the API's */
    VR_CLI_ERROR_API,         /* the daemon's error reply (its message) */
    VR_CLI_ERROR_USAGE,       /* bad command line: exit 2 */
} VrCliErrorCode;

static GQuark
vr_cli_error_quark(void)
{
    return g_quark_from_static_string("vr-cli-error-quark");
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(json_object, json_object_put)

/* ---- commands and their options --------------------------------------------------------- */

typedef enum {
    VR_CLI_OPT_FLAG = 0,       /* --name */
    VR_CLI_OPT_VALUE = 1 << 0, /* --name VALUE or --name=VALUE */
    VR_CLI_OPT_REPEAT = 1 << 1 /* may be given several times (with VALUE) */
} VrCliOptFlags;

typedef struct {
    const char *name; /* without the dashes */
    const char *arg;  /* the value's name in the usage; NULL for a flag */
    VrCliOptFlags flags;
    const char *const *values; /* completion candidates for the value, NULL-terminated */
    const char *help;
} VrCliOption;

typedef struct {
    GHashTable *values;    /* option name -> last value ("" for a flag) */
    GPtrArray *repeated;   /* values of the repeatable option, in order */
    GPtrArray *positional; /* the other words */
} VrCliArgs;

typedef struct _VrCli VrCli;
typedef struct _VrCliCommand VrCliCommand;

typedef bool (*VrCliRun)(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error);

typedef enum {
    VR_CLI_ARG_NONE,           /* no positional argument */
    VR_CLI_ARG_DOMAIN,         /* DOMAIN of the daemon's relationships */
    VR_CLI_ARG_LIBVIRT_DOMAIN, /* DOMAIN of libvirt (replica-enable) */
    VR_CLI_ARG_PATTERN,        /* replica-auth-* */
    VR_CLI_ARG_COMMAND,        /* help */
    VR_CLI_ARG_PATH,           /* a directory (replica-import) */
} VrCliArgKind;

struct _VrCliCommand {
    const char *name;
    const char *synopsis; /* after the name */
    const char *summary;  /* one line, lower case, for lists */
    const char *description;
    VrCliArgKind arg;
    guint min_args, max_args;
    const VrCliOption *options; /* terminated by a NULL name */
    VrCliRun run;
};

struct _VrCli {
    const char *socket_path;
    int timeout_s; /* -1: the command's default */
    bool quiet;
    bool tty; /* stderr is a terminal: a spinner while waiting */
    SoupSession *session;
    const VrCliCommand *cmd;
    const char *target; /* the domain or pattern the command is about, for messages */
    GBytes *error_body; /* the daemon's last error answer, for --json */
};

/* ---- errors --------------------------------------------------------------------------- */

static int
vr_cli_exit_status(const GError *error)
{
    if (g_error_matches(error, VR_CLI_ERROR, VR_CLI_ERROR_USAGE))
        return VR_CLI_EXIT_USAGE;
    if (g_error_matches(error, VR_CLI_ERROR, VR_CLI_ERROR_INTERRUPTED))
        return VR_CLI_EXIT_INTERRUPTED;
    return VR_CLI_EXIT_FAILED;
}

/* One line on stderr: "virt-replica: COMMAND TARGET: MESSAGE" (newlines in it flattened). */
static void
vr_cli_print_error(const VrCli *cli, const GError *error)
{
    g_autofree char *message = g_strdup(error->message);

    g_strdelimit(message, "\r\n", ' ');
    if (g_error_matches(error, VR_CLI_ERROR, VR_CLI_ERROR_UNREACHABLE) || cli->cmd == NULL)
        g_printerr("virt-replica: %s\n", message);
    else if (cli->target != NULL)
        g_printerr("virt-replica: %s %s: %s\n", cli->cmd->name, cli->target, message);
    else
        g_printerr("virt-replica: %s: %s\n", cli->cmd->name, message);
}

static bool vr_cli_usage_error(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static bool
vr_cli_usage_error(GError **error, const char *fmt, ...)
{
    va_list args;

    va_start(args, fmt);
    g_propagate_error(error, g_error_new_valist(VR_CLI_ERROR, VR_CLI_ERROR_USAGE, fmt, args));
    va_end(args);
    return false;
}

/* ---- formatting ------------------------------------------------------------------------- */

/* One decimal, always with a '.': the output is English whatever the locale. */
static char *
vr_cli_format_decimal(double value, const char *unit)
{
    char number[G_ASCII_DTOSTR_BUF_SIZE];

    return g_strconcat(g_ascii_formatd(number, sizeof(number), "%.1f", value), " ", unit, NULL);
}

/*
 * Sizes in IEC units: "512 B", "4.0 MiB". Not g_format_size(): it separates the unit with a
 * no-break space, which breaks the columns for awk and cut.
 */
static char *
vr_cli_format_size(uint64_t bytes)
{
    static const char *const units[] = { "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    double value = (double)bytes;
    guint u = 0;

    if (bytes < 1024)
        return g_strdup_printf("%" G_GUINT64_FORMAT " B", bytes);
    value /= 1024.0;
    while (value >= 1023.95 && u + 1 < G_N_ELEMENTS(units)) {
        value /= 1024.0;
        u++;
    }
    return vr_cli_format_decimal(value, units[u]);
}

/* A wall-clock time as local ISO-8601 with its offset: "2026-11-24T10:20:31+01:00". */
static char *
vr_cli_format_time(int64_t seconds)
{
    g_autoptr(GDateTime) t = g_date_time_new_from_unix_local(seconds);

    if (t == NULL)
        return g_strdup_printf("@%" G_GINT64_FORMAT, seconds);
    return g_date_time_format(t, "%Y-%m-%dT%H:%M:%S%:z");
}

/* "42s", "5m12s", "3h05m", "2d04h". */
static char *
vr_cli_format_seconds(uint64_t s)
{
    if (s < 60)
        return g_strdup_printf("%" G_GUINT64_FORMAT "s", s);
    if (s < 3600)
        return g_strdup_printf("%" G_GUINT64_FORMAT "m%02" G_GUINT64_FORMAT "s", s / 60, s % 60);
    if (s < 86400)
        return g_strdup_printf("%" G_GUINT64_FORMAT "h%02" G_GUINT64_FORMAT "m", s / 3600,
                               s / 60 % 60);
    return g_strdup_printf("%" G_GUINT64_FORMAT "d%02" G_GUINT64_FORMAT "h", s / 86400,
                           s / 3600 % 24);
}

/* A duration: "75 ms", "1.2 s", then as vr_cli_format_seconds(). */
static char *
vr_cli_format_ms(uint64_t ms)
{
    if (ms < 1000)
        return g_strdup_printf("%" G_GUINT64_FORMAT " ms", ms);
    if (ms < 60000)
        return vr_cli_format_decimal((double)ms / 1000.0, "s");
    return vr_cli_format_seconds(ms / 1000);
}

/* Display width of @s: characters of valid UTF-8, else bytes. */
static gsize
vr_cli_width(const char *s)
{
    return g_utf8_validate(s, -1, NULL) ? (gsize)g_utf8_strlen(s, -1) : strlen(s);
}

static void
vr_cli_pad(const char *s, gsize width)
{
    gsize w = vr_cli_width(s);

    fputs(s, stdout);
    for (; w < width; w++)
        putchar(' ');
}

/*
 * A table in virsh's manner: a header, a line of dashes, the rows; columns three spaces apart
 * and a leading space. @rows holds GStrv of as many cells as @header.
 */
static void
vr_cli_print_table(const char *const *header, GPtrArray *rows)
{
    guint n = g_strv_length((char **)header);
    g_autofree gsize *widths = g_new0(gsize, n);
    gsize total = 1;

    for (guint c = 0; c < n; c++)
        widths[c] = vr_cli_width(header[c]);
    for (guint r = 0; r < rows->len; r++) {
        char **row = rows->pdata[r];

        for (guint c = 0; c < n; c++)
            widths[c] = MAX(widths[c], vr_cli_width(row[c]));
    }
    for (guint c = 0; c < n; c++)
        total += widths[c] + (c + 1 < n ? 3 : 0);
    for (guint r = 0; r <= rows->len; r++) {
        const char *const *row = r == 0 ? header : rows->pdata[r - 1];

        putchar(' ');
        for (guint c = 0; c < n; c++) {
            if (c + 1 < n) {
                vr_cli_pad(row[c], widths[c]);
                fputs("   ", stdout);
            } else {
                fputs(row[c], stdout);
            }
        }
        putchar('\n');
        if (r == 0) {
            for (gsize i = 0; i < total + 1; i++)
                putchar('-');
            putchar('\n');
        }
    }
}

/* "Label:" padded to @width, then the value. */
static void vr_cli_field(gsize width, const char *label, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static void
vr_cli_field(gsize width, const char *label, const char *fmt, ...)
{
    g_autofree char *value = NULL;
    g_autofree char *name = g_strconcat(label, ":", NULL);
    va_list args;

    va_start(args, fmt);
    value = g_strdup_vprintf(fmt, args);
    va_end(args);
    vr_cli_pad(name, width);
    printf(" %s\n", value);
}

/* ---- JSON access -------------------------------------------------------------------------- */

static json_object *
vr_cli_json_get(json_object *obj, const char *key)
{
    json_object *value = NULL;

    if (obj == NULL || !json_object_is_type(obj, json_type_object) ||
        !json_object_object_get_ex(obj, key, &value))
        return NULL;
    return value; /* NULL for a JSON null too */
}

static const char *
vr_cli_json_string(json_object *obj, const char *key)
{
    json_object *value = vr_cli_json_get(obj, key);

    return json_object_is_type(value, json_type_string) ? json_object_get_string(value) : NULL;
}

/* The member as a string for display: "-" when absent or null. */
static const char *
vr_cli_json_text(json_object *obj, const char *key)
{
    const char *s = vr_cli_json_string(obj, key);

    return s != NULL ? s : "-";
}

static bool
vr_cli_json_int(json_object *obj, const char *key, int64_t *out)
{
    json_object *value = vr_cli_json_get(obj, key);

    if (!json_object_is_type(value, json_type_int))
        return false;
    *out = json_object_get_int64(value);
    return true;
}

static uint64_t
vr_cli_json_uint(json_object *obj, const char *key)
{
    int64_t v = 0;

    return vr_cli_json_int(obj, key, &v) && v > 0 ? (uint64_t)v : 0;
}

/* ---- the HTTP client ---------------------------------------------------------------------- */

/* The daemon's answer: its status, the body as it came, and the body parsed. */
typedef struct {
    guint status;
    GBytes *raw;
    json_object *json; /* an object; empty for 204 */
} VrCliReply;

static void
vr_cli_reply_free(VrCliReply *reply)
{
    if (reply == NULL)
        return;
    g_bytes_unref(reply->raw);
    json_object_put(reply->json);
    g_free(reply);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrCliReply, vr_cli_reply_free)

/* What a request that may take long shows while it waits. */
typedef struct {
    const char *what;            /* "waiting for the replica's acknowledgement" */
    const char *after_interrupt; /* what goes on when the user gives up */
    bool follow;                 /* the wait is for a cycle of the target: show its progress */
} VrCliWait;

typedef struct {
    GMainLoop *loop;
    GCancellable *cancellable;
    GBytes *body;
    GError *error;
    bool done;
    bool timed_out;
    bool interrupted;
    guint timer; /* the timeout's source, 0 once it fired */
    gint64 started;
    guint spin;
    bool drawn;        /* the spinner's line is on the terminal */
    gint64 next_plain; /* monotonic us of the next plain progress line */
    const VrCli *cli;
    const VrCliWait *wait;
    /* Following the cycle (wait->follow): its status polled on a second connection. */
    GCancellable *poll_cancellable;
    SoupMessage *poll; /* in flight, or NULL */
    gint64 next_poll;
    json_object *progress; /* the status' "progress" member last seen, or NULL */
} VrCliCall;

static void
vr_cli_call_done(GObject *source, GAsyncResult *result, gpointer data)
{
    VrCliCall *call = data;

    call->body = soup_session_send_and_read_finish(SOUP_SESSION(source), result, &call->error);
    call->done = true;
    g_main_loop_quit(call->loop);
}

static gboolean
vr_cli_call_timeout(gpointer data)
{
    VrCliCall *call = data;

    call->timed_out = true;
    call->timer = 0;
    g_cancellable_cancel(call->cancellable);
    return G_SOURCE_REMOVE;
}

static gboolean
vr_cli_call_signal(gpointer data)
{
    VrCliCall *call = data;

    call->interrupted = true;
    g_cancellable_cancel(call->cancellable);
    return G_SOURCE_CONTINUE;
}

static void
vr_cli_poll_done(GObject *source, GAsyncResult *result, gpointer data)
{
    VrCliCall *call = data;
    g_autoptr(GBytes) body = soup_session_send_and_read_finish(SOUP_SESSION(source), result, NULL);
    g_autoptr(SoupMessage) msg = g_steal_pointer(&call->poll);
    g_autoptr(json_object) status = NULL;
    json_object *progress;
    gsize len = 0;
    const char *text = body != NULL ? g_bytes_get_data(body, &len) : NULL;
    g_autofree char *copy = NULL;

    /* A status that cannot be had leaves the last one shown: the wait itself decides. */
    if (text == NULL || soup_message_get_status(msg) != SOUP_STATUS_OK)
        return;
    copy = g_strndup(text, len); /* NUL-terminated for json-c */
    status = json_tokener_parse(copy);
    if (status == NULL)
        return;
    progress = vr_cli_json_get(status, "progress");
    g_clear_pointer(&call->progress, json_object_put);
    if (json_object_is_type(progress, json_type_object))
        call->progress = json_object_get(progress);
}

/* Ask for the target's status, unless a request for it is in flight. */
static void
vr_cli_poll(VrCliCall *call, gint64 now)
{
    g_autofree char *escaped = g_uri_escape_string(call->cli->target, NULL, FALSE);
    g_autofree char *uri = g_strconcat("http://localhost/v1/relationships/", escaped, NULL);

    if (call->poll != NULL || now < call->next_poll)
        return;
    call->next_poll = now + VR_CLI_POLL_MS * 1000;
    call->poll = soup_message_new(SOUP_METHOD_GET, uri);
    if (call->poll == NULL)
        return;
    soup_session_send_and_read_async(call->cli->session, call->poll, G_PRIORITY_DEFAULT,
                                     call->poll_cancellable, vr_cli_poll_done, call);
}

/*
 * The cycle's progress as the daemon tells it (docs/api.md, "progress"): "45%, send vda,
 * 1.0 MiB/s, ETA 12s". (transfer full)
 */
static char *
vr_cli_progress_text(json_object *progress, double *fraction)
{
    GString *text = g_string_new(NULL);
    json_object *member;
    const char *phase = vr_cli_json_text(progress, "phase");
    const char *disk = vr_cli_json_string(progress, "disk");
    uint64_t rate = vr_cli_json_uint(progress, "rate_bytes_per_s");
    int64_t eta;

    *fraction = json_object_object_get_ex(progress, "fraction", &member)
                    ? CLAMP(json_object_get_double(member), 0.0, 1.0)
                    : 0.0;
    g_string_append_printf(text, "%3d%%, cycle %" G_GUINT64_FORMAT, (int)(*fraction * 100),
                           vr_cli_json_uint(progress, "cycle"));
    if (json_object_object_get_ex(progress, "resync", &member) && json_object_get_boolean(member))
        g_string_append(text, " (resync)");
    if (g_strcmp0(phase, "cut") == 0)
        g_string_append(text, ": cutting");
    else
        g_string_append_printf(text, ": %s %s", phase, disk != NULL ? disk : "");
    if (rate > 0) {
        g_autofree char *size = vr_cli_format_size(rate);

        g_string_append_printf(text, ", %s/s", size);
    }
    if (vr_cli_json_int(progress, "eta_s", &eta) && eta >= 0) {
        g_autofree char *left = vr_cli_format_seconds((uint64_t)eta);

        g_string_append_printf(text, ", ETA %s", left);
    }
    return g_string_free(text, FALSE);
}

/*
 * On a terminal (stderr): a bar with the cycle's progress when the wait follows one and
 * the daemon told it, else a spinner. Otherwise a plain line now and then.
 */
static gboolean
vr_cli_call_progress(gpointer data)
{
    static const char spinner[] = "|/-\\";
    VrCliCall *call = data;
    gint64 now = g_get_monotonic_time();
    g_autofree char *elapsed = vr_cli_format_seconds((uint64_t)((now - call->started) / 1000000));
    const VrCli *cli = call->cli;

    if (call->wait->follow)
        vr_cli_poll(call, now);
    if (now - call->started < VR_CLI_PROGRESS_DELAY_MS * 1000)
        return G_SOURCE_CONTINUE;
    if (call->progress != NULL) {
        double fraction;
        g_autofree char *text = vr_cli_progress_text(call->progress, &fraction);

        if (cli->tty) {
            char bar[VR_CLI_BAR_WIDTH + 1];
            int filled = (int)(fraction * VR_CLI_BAR_WIDTH);

            memset(bar, '#', (size_t)filled);
            memset(bar + filled, '-', (size_t)(VR_CLI_BAR_WIDTH - filled));
            bar[VR_CLI_BAR_WIDTH] = '\0';
            g_printerr("\r[%s] %s (%s) \033[K", bar, text, elapsed);
            call->drawn = true;
        } else if (now >= call->next_plain) {
            g_printerr("virt-replica: %s %s: %s (%s)\n", cli->cmd->name, cli->target, text,
                       elapsed);
            call->next_plain = now + (gint64)VR_CLI_PLAIN_PROGRESS_S * G_USEC_PER_SEC;
        }
        return G_SOURCE_CONTINUE;
    }
    if (cli->tty) {
        g_printerr("\r%c %s %s: %s (%s) \033[K", spinner[call->spin++ % 4], cli->cmd->name,
                   cli->target, call->wait->what, elapsed);
        call->drawn = true;
    } else if (now >= call->next_plain) {
        g_printerr("virt-replica: %s %s: %s (%s)\n", cli->cmd->name, cli->target, call->wait->what,
                   elapsed);
        call->next_plain = now + (gint64)VR_CLI_PLAIN_PROGRESS_S * G_USEC_PER_SEC;
    }
    return G_SOURCE_CONTINUE;
}

/*
 * Send @msg and read its whole answer, within the timeout (none when it is 0). With @wait,
 * show progress and let SIGINT and SIGTERM end the wait. (transfer full)
 */
static GBytes *
vr_cli_send(VrCli *cli, SoupMessage *msg, guint timeout_s, const VrCliWait *wait, GError **error)
{
    g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autoptr(GCancellable) poll_cancellable = g_cancellable_new();
    VrCliCall call = {
        .loop = loop,
        .cancellable = cancellable,
        .poll_cancellable = poll_cancellable,
        .started = g_get_monotonic_time(),
        .cli = cli,
        .wait = wait,
    };
    guint sources[3] = { 0 };
    guint n = 0;

    call.next_plain = call.started;
    soup_session_send_and_read_async(cli->session, msg, G_PRIORITY_DEFAULT, cancellable,
                                     vr_cli_call_done, &call);
    if (timeout_s > 0)
        call.timer = g_timeout_add_seconds(timeout_s, vr_cli_call_timeout, &call);
    if (wait != NULL) {
        sources[n++] = g_unix_signal_add(SIGINT, vr_cli_call_signal, &call);
        sources[n++] = g_unix_signal_add(SIGTERM, vr_cli_call_signal, &call);
        if (!cli->quiet)
            sources[n++] = g_timeout_add(100, vr_cli_call_progress, &call);
    }
    while (!call.done)
        g_main_loop_run(loop);
    for (guint i = 0; i < n; i++)
        g_source_remove(sources[i]);
    /* A status request still in flight holds @call: let it end first. */
    g_cancellable_cancel(poll_cancellable);
    while (call.poll != NULL)
        g_main_context_iteration(NULL, TRUE);
    g_clear_pointer(&call.progress, json_object_put);
    if (call.timer != 0)
        g_source_remove(call.timer);
    if (call.drawn)
        g_printerr("\r\033[K");

    if (call.body != NULL)
        return call.body;
    if (call.interrupted) {
        g_clear_error(&call.error);
        g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_INTERRUPTED, "interrupted; %s",
                    wait->after_interrupt);
    } else if (call.timed_out) {
        g_clear_error(&call.error);
        g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_TIMEOUT,
                    "virt-replicad at %s did not answer within %u s", cli->socket_path, timeout_s);
    } else if (g_error_matches(call.error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND) ||
               g_error_matches(call.error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED)) {
        /* No connection: no socket file, or nobody listening on it. */
        g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_UNREACHABLE,
                    "cannot reach virt-replicad at %s: %s (is it running?)", cli->socket_path,
                    g_strerror(call.error->code == G_IO_ERROR_NOT_FOUND ? ENOENT : ECONNREFUSED));
        g_clear_error(&call.error);
    } else if (g_error_matches(call.error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED)) {
        g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_UNREACHABLE,
                    "cannot reach virt-replicad at %s: %s (the API is root's, and the "
                    "[daemon] socket-group's)",
                    cli->socket_path, g_strerror(EACCES));
        g_clear_error(&call.error);
    } else {
        /* Connected, but no HTTP answer came: closed, reset, or not HTTP. */
        g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_ANSWER,
                    "no answer from virt-replicad at %s: %s", cli->socket_path,
                    call.error->message);
        g_clear_error(&call.error);
    }
    return NULL;
}

/*
 * @method @path (the path segments already escaped) with @request as its JSON body, if any.
 * An answer of 2xx is returned; the daemon's error reply becomes a VR_CLI_ERROR_API error
 * with its message. @timeout_s: -1 for the command's default. (transfer full)
 */
static VrCliReply *
vr_cli_request(VrCli *cli, const char *method, const char *path, json_object *request,
               int timeout_s, const VrCliWait *wait, GError **error)
{
    g_autofree char *uri = g_strconcat("http://localhost", path, NULL);
    g_autoptr(SoupMessage) msg = soup_message_new(method, uri);
    g_autoptr(VrCliReply) reply = g_new0(VrCliReply, 1);
    g_autoptr(json_object) parsed = NULL;
    json_tokener *tok;
    gsize len = 0;
    const char *data;
    guint timeout;

    if (msg == NULL) {
        g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_USAGE, "'%s' does not make a request path",
                    path);
        return NULL;
    }
    if (request != NULL) {
        const char *text = json_object_to_json_string_ext(
            request, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        g_autoptr(GBytes) body = g_bytes_new(text, strlen(text));

        soup_message_set_request_body_from_bytes(msg, "application/json", body);
    }
    soup_message_headers_replace(soup_message_get_request_headers(msg), "Accept",
                                 "application/json");
    timeout = cli->timeout_s >= 0 ? (guint)cli->timeout_s
              : timeout_s >= 0    ? (guint)timeout_s
                                  : VR_CLI_TIMEOUT_S;
    reply->raw = vr_cli_send(cli, msg, timeout, wait, error);
    if (reply->raw == NULL)
        return NULL;
    reply->status = soup_message_get_status(msg);

    data = g_bytes_get_data(reply->raw, &len);
    if (len > 0 && len <= INT_MAX) {
        tok = json_tokener_new();
        parsed = json_tokener_parse_ex(tok, data, (int)len);
        if (parsed != NULL && !json_object_is_type(parsed, json_type_object))
            g_clear_pointer(&parsed, json_object_put);
        json_tokener_free(tok);
    }
    if (SOUP_STATUS_IS_SUCCESSFUL(reply->status)) {
        if (parsed == NULL && reply->status != SOUP_STATUS_NO_CONTENT) {
            g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_ANSWER,
                        "virt-replicad answered %s %s with HTTP %u and no JSON object", method,
                        path, reply->status);
            return NULL;
        }
        reply->json = parsed != NULL ? g_steal_pointer(&parsed) : json_object_new_object();
        return g_steal_pointer(&reply);
    }
    {
        json_object *err = vr_cli_json_get(parsed, "error");
        const char *message = vr_cli_json_string(err, "message");

        if (message != NULL) {
            g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_API, "%s", message);
            g_clear_pointer(&cli->error_body, g_bytes_unref);
            cli->error_body = g_bytes_ref(reply->raw);
        } else {
            g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_ANSWER,
                        "virt-replicad answered %s %s with HTTP %u %s", method, path, reply->status,
                        soup_status_get_phrase(reply->status));
        }
    }
    return NULL;
}

/* "/v1/relationships/NAME[/SUFFIX]" with NAME escaped as one path segment. */
static char *
vr_cli_relationship_path(const char *name, const char *suffix)
{
    g_autofree char *escaped = g_uri_escape_string(name, NULL, FALSE);

    return g_strconcat("/v1/relationships/", escaped, suffix != NULL ? "/" : "", suffix, NULL);
}

/* Print the body as the daemon sent it, with a final newline. */
static void
vr_cli_print_raw(const VrCliReply *reply)
{
    gsize len = 0;
    const char *data = g_bytes_get_data(reply->raw, &len);

    if (len == 0) {
        /* 204: nothing to print but an empty object, so that the output is JSON */
        puts("{}");
        return;
    }
    fwrite(data, 1, len, stdout);
    if (data[len - 1] != '\n')
        putchar('\n');
}

/* ---- argument parsing ----------------------------------------------------------------------- */

static void
vr_cli_args_clear(VrCliArgs *args)
{
    g_clear_pointer(&args->values, g_hash_table_unref);
    g_clear_pointer(&args->repeated, g_ptr_array_unref);
    g_clear_pointer(&args->positional, g_ptr_array_unref);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(VrCliArgs, vr_cli_args_clear)

static const VrCliOption *
vr_cli_find_option(const VrCliCommand *cmd, const char *name, gsize len)
{
    for (const VrCliOption *o = cmd->options; o != NULL && o->name != NULL; o++) {
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    }
    return NULL;
}

/*
 * The words after the command name: --option VALUE, --option=VALUE, flags, "--" to end the
 * options, positional words anywhere. --help is handled by the caller before.
 */
static bool
vr_cli_parse_args(const VrCliCommand *cmd, int argc, char **argv, VrCliArgs *args, GError **error)
{
    bool options_done = false;

    args->values = g_hash_table_new(g_str_hash, g_str_equal);
    args->repeated = g_ptr_array_new();
    args->positional = g_ptr_array_new();
    for (int i = 0; i < argc; i++) {
        const char *word = argv[i];
        const char *eq;
        const char *value = NULL;
        const VrCliOption *opt;

        if (options_done || word[0] != '-' || word[1] == '\0') {
            g_ptr_array_add(args->positional, (gpointer)word);
            continue;
        }
        if (strcmp(word, "--") == 0) {
            options_done = true;
            continue;
        }
        if (word[1] != '-')
            return vr_cli_usage_error(error, "unknown option '%s'", word);
        eq = strchr(word + 2, '=');
        opt = vr_cli_find_option(cmd, word + 2,
                                 eq != NULL ? (gsize)(eq - word - 2) : strlen(word + 2));
        if (opt == NULL)
            return vr_cli_usage_error(error, "unknown option '%.*s'",
                                      eq != NULL ? (int)(eq - word) : (int)strlen(word), word);
        if (opt->flags & VR_CLI_OPT_VALUE) {
            if (eq != NULL)
                value = eq + 1;
            else if (i + 1 < argc)
                value = argv[++i];
            else
                return vr_cli_usage_error(error, "option '--%s' needs a value (%s)", opt->name,
                                          opt->arg);
        } else if (eq != NULL) {
            return vr_cli_usage_error(error, "option '--%s' takes no value", opt->name);
        } else {
            value = "";
        }
        if (opt->flags & VR_CLI_OPT_REPEAT)
            g_ptr_array_add(args->repeated, (gpointer)value);
        else if (g_hash_table_contains(args->values, opt->name))
            return vr_cli_usage_error(error, "option '--%s' is given twice", opt->name);
        g_hash_table_insert(args->values, (gpointer)opt->name, (gpointer)value);
    }
    if (args->positional->len < cmd->min_args || args->positional->len > cmd->max_args) {
        if (args->positional->len < cmd->min_args)
            return vr_cli_usage_error(error, "missing %s",
                                      cmd->arg == VR_CLI_ARG_PATTERN ? "PATTERN"
                                      : cmd->arg == VR_CLI_ARG_PATH  ? "PATH"
                                                                     : "DOMAIN");
        return vr_cli_usage_error(error, "unexpected argument '%s'",
                                  (const char *)args->positional->pdata[cmd->max_args]);
    }
    return true;
}

static const char *
vr_cli_arg(const VrCliArgs *args, const char *name)
{
    return g_hash_table_lookup(args->values, name);
}

static bool
vr_cli_flag(const VrCliArgs *args, const char *name)
{
    return g_hash_table_contains(args->values, name);
}

/* An unsigned decimal option within [min, max] as @member of @request; absent: nothing. */
static bool
vr_cli_arg_uint(const VrCliArgs *args, const char *name, guint64 min, guint64 max,
                json_object *request, const char *member, GError **error)
{
    const char *text = vr_cli_arg(args, name);
    guint64 value;

    if (text == NULL)
        return true;
    if (!g_ascii_string_to_unsigned(text, 10, min, max, &value, NULL))
        return vr_cli_usage_error(error,
                                  "option '--%s': '%s' is not a whole number of %" G_GUINT64_FORMAT
                                  " to %" G_GUINT64_FORMAT,
                                  name, text, min, max);
    json_object_object_add(request, member, json_object_new_int64((int64_t)value));
    return true;
}

/* ---- the commands -------------------------------------------------------------------------- */

static const VrCliCommand *vr_cli_find_command(const char *name);
static void vr_cli_print_usage(FILE *out, const VrCliCommand *cmd);

/* The status block of one relationship, in the manner of Hyper-V's Measure-VMReplication. */
static void
vr_cli_print_status(json_object *status)
{
    const gsize w = 28;
    json_object *last = vr_cli_json_get(status, "last_cycle");
    json_object *stats = vr_cli_json_get(status, "stats");
    json_object *points = vr_cli_json_get(status, "recovery_points");
    json_object *running = vr_cli_json_get(status, "cycle_running");
    const char *role = vr_cli_json_text(status, "role");
    int64_t v;

    vr_cli_field(w, "Domain", "%s", vr_cli_json_text(status, "domain"));
    vr_cli_field(w, "Relationship", "%s (epoch %" G_GUINT64_FORMAT ")",
                 vr_cli_json_text(status, "id"), vr_cli_json_uint(status, "epoch"));
    vr_cli_field(w, "Role", "%s", role);
    vr_cli_field(w, strcmp(role, "primary") == 0 ? "Replica server" : "Primary server", "%s",
                 vr_cli_json_text(status, "peer"));
    vr_cli_field(w, "State", "%s", vr_cli_json_text(status, "state"));
    vr_cli_field(w, "Health", "%s", vr_cli_json_text(status, "health"));
    if (running != NULL &&
        json_object_is_type(vr_cli_json_get(status, "progress"), json_type_object)) {
        double fraction;
        g_autofree char *text =
            vr_cli_progress_text(vr_cli_json_get(status, "progress"), &fraction);

        vr_cli_field(w, "Cycle running", "yes: %s", g_strchug(text));
    } else if (running != NULL) {
        vr_cli_field(w, "Cycle running", "%s", json_object_get_boolean(running) ? "yes" : "no");
    }
    if (last != NULL && vr_cli_json_int(last, "time_ms", &v)) {
        g_autofree char *when = vr_cli_format_time(v / 1000);

        vr_cli_field(w, "Last replication time", "%s (cycle %" G_GUINT64_FORMAT ")", when,
                     vr_cli_json_uint(last, "seq"));
    } else {
        vr_cli_field(w, "Last replication time", "never");
    }
    if (vr_cli_json_int(status, "rpo_seconds", &v)) {
        g_autofree char *rpo = vr_cli_format_seconds((uint64_t)MAX(v, 0));

        vr_cli_field(w, "Current RPO", "%s", rpo);
    } else {
        vr_cli_field(w, "Current RPO", "-");
    }
    if (vr_cli_json_int(status, "pending_bytes", &v)) {
        g_autofree char *pending = vr_cli_format_size((uint64_t)MAX(v, 0));

        vr_cli_field(w, "Pending replication size", "%s", pending);
    } else if (json_object_object_get_ex(status, "pending_bytes", NULL)) {
        /* null: before the first acknowledged cycle, or the domain does not run */
        vr_cli_field(w, "Pending replication size", "- (not known)");
    }
    if (vr_cli_json_int(status, "monitoring_interval_s", &v)) {
        g_autofree char *interval = vr_cli_format_seconds((uint64_t)MAX(v, 0));

        vr_cli_field(w, "Monitoring interval", "the last %s (the figures below)", interval);
    }
    if (stats != NULL) {
        g_autofree char *avg_size = vr_cli_format_size(vr_cli_json_uint(stats, "avg_bytes"));
        g_autofree char *max_size = vr_cli_format_size(vr_cli_json_uint(stats, "max_bytes"));
        g_autofree char *avg_lat = vr_cli_format_ms(vr_cli_json_uint(stats, "avg_latency_ms"));
        g_autofree char *max_lat = vr_cli_format_ms(vr_cli_json_uint(stats, "max_latency_ms"));

        vr_cli_field(w, "Average size", "%s", avg_size);
        vr_cli_field(w, "Maximum size", "%s", max_size);
        vr_cli_field(w, "Average latency", "%s", avg_lat);
        vr_cli_field(w, "Maximum latency", "%s", max_lat);
        vr_cli_field(w, "Successful cycles", "%" G_GUINT64_FORMAT,
                     vr_cli_json_uint(stats, "cycles_ok"));
        vr_cli_field(w, "Missed cycles", "%" G_GUINT64_FORMAT,
                     vr_cli_json_uint(stats, "cycles_missed"));
        vr_cli_field(w, "Failed cycles", "%" G_GUINT64_FORMAT,
                     vr_cli_json_uint(stats, "cycles_failed"));
        vr_cli_field(w, "Resynchronizations", "%" G_GUINT64_FORMAT,
                     vr_cli_json_uint(stats, "resyncs"));
    }
    if (points != NULL && json_object_is_type(points, json_type_object)) {
        bool first = true;

        json_object_object_foreach (points, disk, list) {
            size_t count =
                json_object_is_type(list, json_type_array) ? json_object_array_length(list) : 0;
            json_object *newest = count > 0 ? json_object_array_get_idx(list, count - 1) : NULL;
            g_autofree char *line = NULL;

            if (newest != NULL && vr_cli_json_int(newest, "published", &v)) {
                g_autofree char *when = vr_cli_format_time(v);

                line = g_strdup_printf("%s: %zu, newest cycle %" G_GUINT64_FORMAT " at %s", disk,
                                       count, vr_cli_json_uint(newest, "cycle"), when);
            } else {
                line = g_strdup_printf("%s: %zu", disk, count);
            }
            vr_cli_field(w, first ? "Recovery points" : "", "%s", line);
            first = false;
        }
        if (first)
            vr_cli_field(w, "Recovery points", "none on this host");
    }
}

static VrCliReply *
vr_cli_get_status(VrCli *cli, const char *domain, GError **error)
{
    g_autofree char *path = vr_cli_relationship_path(domain, NULL);

    return vr_cli_request(cli, SOUP_METHOD_GET, path, NULL, -1, NULL, error);
}

static bool
vr_cli_cmd_status(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    g_autoptr(VrCliReply) reply = vr_cli_get_status(cli, cli->target, error);

    if (reply == NULL)
        return false;
    if (vr_cli_flag(args, "json"))
        vr_cli_print_raw(reply);
    else
        vr_cli_print_status(reply->json);
    return true;
}

/*
 * GET @path for a table: with --json the answer is printed as it came, and NULL is returned
 * with *@printed set; otherwise its member @member, which must be of @type (an error
 * otherwise). The member lives as long as *@reply. (transfer none)
 */
static json_object *
vr_cli_get_member(VrCli *cli, VrCliArgs *args, const char *path, const char *member, json_type type,
                  VrCliReply **reply, bool *printed, GError **error)
{
    json_object *obj;

    *printed = false;
    *reply = vr_cli_request(cli, SOUP_METHOD_GET, path, NULL, -1, NULL, error);
    if (*reply == NULL)
        return NULL;
    if (vr_cli_flag(args, "json")) {
        vr_cli_print_raw(*reply);
        *printed = true;
        return NULL;
    }
    obj = vr_cli_json_get((*reply)->json, member);
    if (!json_object_is_type(obj, type)) {
        g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_ANSWER, "the daemon's answer has no '%s' %s",
                    member, type == json_type_array ? "array" : "object");
        return NULL;
    }
    return obj;
}

static bool
vr_cli_cmd_list(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    static const char *const header[] = { "Domain",           "Role", "State", "Health",
                                          "Last replication", "RPO",  "Peer",  NULL };
    g_autoptr(VrCliReply) reply = NULL;
    g_autoptr(GPtrArray) rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    bool printed;
    json_object *list = vr_cli_get_member(cli, args, "/v1/relationships", "relationships",
                                          json_type_array, &reply, &printed, error);

    if (list == NULL)
        return printed;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *rel = json_object_array_get_idx(list, i);
        json_object *last = vr_cli_json_get(rel, "last_cycle");
        char **row = g_new0(char *, 8);
        int64_t v;

        row[0] = g_strdup(vr_cli_json_text(rel, "domain"));
        row[1] = g_strdup(vr_cli_json_text(rel, "role"));
        row[2] = g_strdup(vr_cli_json_text(rel, "state"));
        row[3] = g_strdup(vr_cli_json_text(rel, "health"));
        row[4] = last != NULL && vr_cli_json_int(last, "time_ms", &v) ? vr_cli_format_time(v / 1000)
                                                                      : g_strdup("never");
        row[5] = vr_cli_json_int(rel, "rpo_seconds", &v)
                     ? vr_cli_format_seconds((uint64_t)MAX(v, 0))
                     : g_strdup("-");
        row[6] = g_strdup(vr_cli_json_text(rel, "peer"));
        g_ptr_array_add(rows, row);
    }
    if (vr_cli_flag(args, "name")) {
        for (guint i = 0; i < rows->len; i++)
            printf("%s\n", ((char **)rows->pdata[i])[0]);
        return true;
    }
    vr_cli_print_table(header, rows);
    return true;
}

static bool
vr_cli_cmd_points(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    static const char *const header[] = { "Disk", "Cycle",          "Epoch", "Published",
                                          "Size", "App-consistent", "Chain", NULL };
    g_autofree char *path = vr_cli_relationship_path(cli->target, "recovery-points");
    g_autoptr(VrCliReply) reply = NULL;
    g_autoptr(GPtrArray) rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    bool printed;
    json_object *disks = vr_cli_get_member(cli, args, path, "recovery_points", json_type_object,
                                           &reply, &printed, error);

    if (disks == NULL)
        return printed;
    json_object_object_foreach (disks, disk, list) {
        for (size_t i = 0;
             json_object_is_type(list, json_type_array) && i < json_object_array_length(list);
             i++) {
            json_object *point = json_object_array_get_idx(list, i);
            json_object *app = vr_cli_json_get(point, "app_consistent");
            const char *chain = vr_cli_json_text(point, "chain");
            char **row = g_new0(char *, 8);
            int64_t published;

            row[0] = g_strdup(disk);
            row[1] = g_strdup_printf("%" G_GUINT64_FORMAT, vr_cli_json_uint(point, "cycle"));
            row[2] = g_strdup_printf("%" G_GUINT64_FORMAT, vr_cli_json_uint(point, "epoch"));
            row[3] = vr_cli_json_int(point, "published", &published) ? vr_cli_format_time(published)
                                                                     : g_strdup("-");
            row[4] = vr_cli_format_size(vr_cli_json_uint(point, "virtual_size"));
            row[5] = g_strdup(app != NULL && json_object_get_boolean(app) ? "yes" : "no");
            /* The chain's first 16 digits tell points apart; --json has all 64. */
            row[6] = g_strndup(chain, 16);
            g_ptr_array_add(rows, row);
        }
    }
    if (rows->len == 0) {
        printf("No recovery points of '%s' on this host.\n", cli->target);
        return true;
    }
    vr_cli_print_table(header, rows);
    return true;
}

static const VrCliWait vr_cli_sync_wait = {
    .what = "waiting for the replica to acknowledge the cycle",
    .after_interrupt = "the cycle goes on in virt-replicad (see replica-status)",
    .follow = true,
};

/* POST .../sync: cut a cycle now and wait, without a time limit, until it is acknowledged. */
typedef enum {
    VR_CLI_PRINT_HUMAN,
    VR_CLI_PRINT_JSON,
    VR_CLI_PRINT_NONE,
} VrCliPrint;

static bool
vr_cli_sync(VrCli *cli, VrCliPrint print, GError **error)
{
    g_autofree char *path = vr_cli_relationship_path(cli->target, "sync");
    g_autoptr(VrCliReply) reply = NULL;
    g_autofree char *bytes = NULL;
    g_autofree char *wire = NULL;
    g_autofree char *duration = NULL;

    reply = vr_cli_request(cli, SOUP_METHOD_POST, path, NULL, 0, &vr_cli_sync_wait, error);
    if (reply == NULL)
        return false;
    if (print != VR_CLI_PRINT_HUMAN) {
        if (print == VR_CLI_PRINT_JSON)
            vr_cli_print_raw(reply);
        return true;
    }
    bytes = vr_cli_format_size(vr_cli_json_uint(reply->json, "bytes"));
    duration = vr_cli_format_ms(vr_cli_json_uint(reply->json, "duration_ms"));
    if (vr_cli_json_get(reply->json, "wire_bytes") != NULL) {
        g_autofree char *sent = vr_cli_format_size(vr_cli_json_uint(reply->json, "wire_bytes"));

        wire = g_strdup_printf(" (%s sent)", sent);
    }
    printf("Cycle %" G_GUINT64_FORMAT " of '%s' acknowledged by the replica: %s%s in %s.\n",
           vr_cli_json_uint(reply->json, "seq"), cli->target, bytes, wire != NULL ? wire : "",
           duration);
    return true;
}

static bool
vr_cli_cmd_sync(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    return vr_cli_sync(cli, vr_cli_flag(args, "json") ? VR_CLI_PRINT_JSON : VR_CLI_PRINT_HUMAN,
                       error);
}

/* suspend, resume, resync: POST .../ACTION, answered with the relationship's status. */
static bool
vr_cli_cmd_action(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    const char *action = cmd->name + strlen("replica-");
    g_autofree char *path = vr_cli_relationship_path(cli->target, action);
    g_autoptr(VrCliReply) reply =
        vr_cli_request(cli, SOUP_METHOD_POST, path, NULL, -1, NULL, error);
    const char *state;

    if (reply == NULL)
        return false;
    if (vr_cli_flag(args, "json")) {
        vr_cli_print_raw(reply);
        return true;
    }
    state = vr_cli_json_text(reply->json, "state");
    if (strcmp(action, "suspend") == 0)
        printf("Replication of '%s' suspended (state %s): no cycles until replica-resume; "
               "changes are still tracked.\n",
               cli->target, state);
    else if (strcmp(action, "resume") == 0)
        printf("Replication of '%s' resumed (state %s).\n", cli->target, state);
    else
        printf("Resynchronization of '%s' requested (state %s): the next cycle compares the "
               "disks with the replica's by hashes.\n",
               cli->target, state);
    return true;
}

static bool
vr_cli_cmd_disable(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    g_autofree char *path = vr_cli_relationship_path(cli->target, NULL);
    g_autoptr(VrCliReply) reply =
        vr_cli_request(cli, SOUP_METHOD_DELETE, path, NULL, -1, NULL, error);

    if (reply == NULL)
        return false;
    printf("Replication of '%s' disabled.\n", cli->target);
    return true;
}

/* The replica-enable options as the body of POST /v1/relationships (docs/api.md). */
static json_object *
vr_cli_enable_request(const char *domain, VrCliArgs *args, GError **error)
{
    g_autoptr(json_object) request = json_object_new_object();
    const char *server = vr_cli_arg(args, "server");
    const char *address = vr_cli_arg(args, "address");
    const char *network = vr_cli_arg(args, "network");
    const char *compression = vr_cli_arg(args, "compression");
    const char *bandwidth = vr_cli_arg(args, "bandwidth");
    const char *initial = vr_cli_arg(args, "initial");

    json_object_object_add(request, "domain", json_object_new_string(domain));
    if (server == NULL || server[0] == '\0') {
        vr_cli_usage_error(error, "option '--server NAME' (the replica's DNS name) is required");
        return NULL;
    }
    json_object_object_add(request, "server", json_object_new_string(server));
    /* Ranges of the replication settings are the daemon's to check (400 naming them). */
    if (!vr_cli_arg_uint(args, "port", 1, 65535, request, "port", error) ||
        !vr_cli_arg_uint(args, "frequency", 1, G_MAXINT32, request, "frequency", error) ||
        !vr_cli_arg_uint(args, "recovery-points", 0, G_MAXINT32, request, "recovery_points",
                         error) ||
        !vr_cli_arg_uint(args, "app-consistent-hours", 0, G_MAXINT32, request,
                         "app_consistent_hours", error))
        return NULL;
    if (address != NULL) {
        g_autoptr(GInetAddress) inet = g_inet_address_new_from_string(address);

        if (inet == NULL) {
            vr_cli_usage_error(error, "option '--address': '%s' is not an IP address", address);
            return NULL;
        }
        json_object_object_add(request, "address", json_object_new_string(address));
    }
    if (network != NULL) {
        /* A bare name is a libvirt network, as the issue's --network LIBVIRT_NETWORK. */
        g_autofree char *spec = strchr(network, ':') != NULL
                                    ? g_strdup(network)
                                    : g_strconcat("network:", network, NULL);

        json_object_object_add(request, "network", json_object_new_string(spec));
    }
    if (compression != NULL) {
        if (strcmp(compression, "on") != 0 && strcmp(compression, "off") != 0) {
            vr_cli_usage_error(error, "option '--compression': '%s' is neither on nor off",
                               compression);
            return NULL;
        }
        json_object_object_add(request, "compression",
                               json_object_new_boolean(strcmp(compression, "on") == 0));
    }
    if (bandwidth != NULL)
        json_object_object_add(request, "bandwidth", json_object_new_string(bandwidth));
    if (initial != NULL) {
        g_autofree char *value = NULL;

        if (strcmp(initial, "network") == 0 || strcmp(initial, "existing") == 0) {
            value = g_strdup(initial);
        } else if (g_str_has_prefix(initial, "export:") && initial[strlen("export:")] != '\0') {
            /* The daemon does not share our working directory. */
            g_autofree char *file = g_canonicalize_filename(initial + strlen("export:"), NULL);

            value = g_strconcat("export:", file, NULL);
        } else {
            vr_cli_usage_error(error,
                               "option '--initial': '%s' is none of network, existing and "
                               "export:PATH",
                               initial);
            return NULL;
        }
        json_object_object_add(request, "initial", json_object_new_string(value));
    }
    if (args->repeated->len > 0) {
        json_object *disks = json_object_new_array();

        for (guint i = 0; i < args->repeated->len; i++)
            json_object_array_add(disks, json_object_new_string(args->repeated->pdata[i]));
        json_object_object_add(request, "disks", disks);
    }
    return g_steal_pointer(&request);
}

static bool
vr_cli_cmd_enable(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    g_autoptr(json_object) request = vr_cli_enable_request(cli->target, args, error);
    g_autoptr(VrCliReply) reply = NULL;
    bool json = vr_cli_flag(args, "json");
    bool wait = vr_cli_flag(args, "wait");
    const char *initial = NULL;
    const char *export = NULL; /* the initial copy's directory with --initial export:PATH */

    if (request == NULL)
        return false;
    initial = vr_cli_json_string(request, "initial");
    if (initial != NULL && g_str_has_prefix(initial, "export:"))
        export = initial + strlen("export:");
    reply = vr_cli_request(cli, SOUP_METHOD_POST, "/v1/relationships", request, -1, NULL, error);
    if (reply == NULL)
        return false;
    if (json && !wait) {
        vr_cli_print_raw(reply);
        return true;
    }
    if (!json) {
        printf("Replication of '%s' to %s enabled: relationship %s, state %s.\n", cli->target,
               vr_cli_arg(args, "server"), vr_cli_json_text(reply->json, "id"),
               vr_cli_json_text(reply->json, "state"));
        if (!wait && export != NULL) {
            printf("The first cycle writes the initial copy to '%s'; import it on the replica "
                   "with 'virt-replica replica-import %s'.\n",
                   export, export);
            return true;
        }
        if (!wait) {
            printf("The first cycle sends the initial copy; follow it with 'virt-replica "
                   "replica-status %s'.\n",
                   cli->target);
            return true;
        }
        fflush(stdout);
    }
    if (!vr_cli_sync(cli, json || export != NULL ? VR_CLI_PRINT_NONE : VR_CLI_PRINT_HUMAN, error)) {
        g_prefix_error(error, "enabled, but the first cycle did not complete: ");
        return false;
    }
    if (export != NULL && !json)
        printf("The initial copy of '%s' is in '%s': import it on the replica with "
               "'virt-replica replica-import %s'.\n",
               cli->target, export, export);
    if (json) {
        /* One JSON document: the status after the first cycle. */
        g_autoptr(VrCliReply) status = vr_cli_get_status(cli, cli->target, error);

        if (status == NULL)
            return false;
        vr_cli_print_raw(status);
    }
    return true;
}

static const VrCliWait vr_cli_planned_wait = {
    .what = "shutting the domain down, sending its final cycle, failing over",
    .after_interrupt = "the planned failover goes on in virt-replicad (see replica-status)",
    .follow = true,
};

/*
 * replica-planned-failover (primary host): POST .../planned-failover {"shutdown_timeout",
 * "force", "reverse"}, answered when the replica runs the domain (docs/failover.md).
 */
static bool
vr_cli_cmd_planned_failover(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    g_autoptr(json_object) request = json_object_new_object();
    g_autofree char *path = vr_cli_relationship_path(cli->target, "planned-failover");
    g_autoptr(VrCliReply) reply = NULL;
    g_autofree char *bytes = NULL;

    if (!vr_cli_arg_uint(args, "shutdown-timeout", 1, 86400, request, "shutdown_timeout", error))
        return false;
    if (vr_cli_flag(args, "force"))
        json_object_object_add(request, "force", json_object_new_boolean(true));
    if (vr_cli_flag(args, "reverse"))
        json_object_object_add(request, "reverse", json_object_new_boolean(true));
    /* The guest's shutdown and the final cycle take what they take: no default limit. */
    reply = vr_cli_request(cli, SOUP_METHOD_POST, path, request, 0, &vr_cli_planned_wait, error);
    if (reply == NULL)
        return false;
    if (vr_cli_flag(args, "json")) {
        vr_cli_print_raw(reply);
        return true;
    }
    bytes = vr_cli_format_size(vr_cli_json_uint(reply->json, "bytes"));
    printf("Planned failover of '%s': %s; final cycle %" G_GUINT64_FORMAT " (%s) verified on "
           "the replica, where '%s' runs now (epoch %" G_GUINT64_FORMAT ", state %s). '%s' "
           "stays shut off here and refuses to start.\n",
           cli->target,
           json_object_get_boolean(vr_cli_json_get(reply->json, "forced"))
               ? "destroyed after the shutdown timeout"
               : "shut down",
           vr_cli_json_uint(reply->json, "cycle"), bytes, vr_cli_json_text(reply->json, "standby"),
           vr_cli_json_uint(reply->json, "epoch"), vr_cli_json_text(reply->json, "state"),
           vr_cli_json_text(reply->json, "domain"));
    if (vr_cli_json_get(reply->json, "reverse") != NULL)
        printf("Reverse replication: '%s' (%s) replicates to this host; '%s' is its standby "
               "here.\n",
               vr_cli_json_text(reply->json, "standby"),
               vr_cli_json_text(reply->json, "reverse_primary"),
               vr_cli_json_text(reply->json, "domain"));
    if (vr_cli_json_get(reply->json, "warning") != NULL)
        printf("Warning: %s\n", vr_cli_json_text(reply->json, "warning"));
    return true;
}

/*
 * replica-reverse: POST .../reverse, on the failed-over host ({"server", "port", "address"})
 * or with --accept on the old primary ({"accept": true, "primary"}) (docs/failover.md).
 */
static bool
vr_cli_cmd_reverse(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    g_autoptr(json_object) request = json_object_new_object();
    g_autofree char *path = vr_cli_relationship_path(cli->target, "reverse");
    g_autoptr(VrCliReply) reply = NULL;
    bool accept = vr_cli_flag(args, "accept");
    const char *server = vr_cli_arg(args, "server");

    if (accept == (server != NULL))
        return vr_cli_usage_error(error, "give either --server NAME (on the failed-over host) "
                                         "or --accept (on the old primary)");
    if (accept) {
        json_object_object_add(request, "accept", json_object_new_boolean(true));
        if (vr_cli_arg(args, "primary") != NULL)
            json_object_object_add(request, "primary",
                                   json_object_new_string(vr_cli_arg(args, "primary")));
    } else {
        json_object_object_add(request, "server", json_object_new_string(server));
        if (vr_cli_arg(args, "address") != NULL)
            json_object_object_add(request, "address",
                                   json_object_new_string(vr_cli_arg(args, "address")));
        if (!vr_cli_arg_uint(args, "port", 1, 65535, request, "port", error))
            return false;
    }
    reply = vr_cli_request(cli, SOUP_METHOD_POST, path, request, 0, NULL, error);
    if (reply == NULL)
        return false;
    if (vr_cli_flag(args, "json")) {
        vr_cli_print_raw(reply);
        return true;
    }
    if (accept)
        printf("'%s' is the replica of relationship %s now: '%s' is its standby, its disk the "
               "seed (point %" G_GUINT64_FORMAT ", epoch %" G_GUINT64_FORMAT ").\n",
               cli->target, vr_cli_json_text(reply->json, "relationship"),
               vr_cli_json_text(reply->json, "standby"), vr_cli_json_uint(reply->json, "point"),
               vr_cli_json_uint(reply->json, "epoch"));
    else
        printf("'%s' replicates to %s from now on (relationship %s, epoch %" G_GUINT64_FORMAT
               "); its first cycle is a hash resynchronization.\n",
               vr_cli_json_text(reply->json, "domain"), server,
               vr_cli_json_text(reply->json, "relationship"),
               vr_cli_json_uint(reply->json, "epoch"));
    return true;
}

static const VrCliWait vr_cli_import_wait = {
    .what = "verifying and applying the export",
    .after_interrupt = "the import goes on in virt-replicad",
};

/* POST /v1/imports: the initial copy exported by a primary, imported on this replica. */
static bool
vr_cli_cmd_import(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    g_autoptr(json_object) request = json_object_new_object();
    g_autoptr(VrCliReply) reply = NULL;
    g_autofree char *path = g_canonicalize_filename(cli->target, NULL);
    g_autofree char *bytes = NULL;

    json_object_object_add(request, "path", json_object_new_string(path));
    reply = vr_cli_request(cli, SOUP_METHOD_POST, "/v1/imports", request, 0, &vr_cli_import_wait,
                           error);
    if (reply == NULL)
        return false;
    if (vr_cli_flag(args, "json")) {
        vr_cli_print_raw(reply);
        return true;
    }
    bytes = vr_cli_format_size(vr_cli_json_uint(reply->json, "bytes"));
    printf("Imported cycle %" G_GUINT64_FORMAT " of '%s' (relationship %s, primary %s): %s.\n",
           vr_cli_json_uint(reply->json, "cycle"), vr_cli_json_text(reply->json, "domain"),
           vr_cli_json_text(reply->json, "relationship"), vr_cli_json_text(reply->json, "primary"),
           bytes);
    printf("The primary's next cycle replicates over the network from it.\n");
    return true;
}

/*
 * The "interfaces" member of a failover request from --ip values "MAC,KEY=VALUE,...": the
 * daemon checks the keys and values (docs/failover.md, "Failover TCP/IP"). (transfer full)
 */
static json_object *
vr_cli_failover_interfaces(GPtrArray *values, GError **error)
{
    g_autoptr(json_object) interfaces = json_object_new_object();

    for (guint i = 0; i < values->len; i++) {
        g_auto(GStrv) parts = g_strsplit(values->pdata[i], ",", -1);
        json_object *settings = json_object_new_object();

        json_object_object_add(interfaces, parts[0], settings);
        if (parts[0][0] == '\0' || parts[1] == NULL) {
            vr_cli_usage_error(error, "option '--ip': '%s' is not MAC,KEY=VALUE,...",
                               (const char *)values->pdata[i]);
            return NULL;
        }
        for (guint p = 1; parts[p] != NULL; p++) {
            char *eq = strchr(parts[p], '=');

            if (eq == NULL || eq == parts[p]) {
                vr_cli_usage_error(error, "option '--ip': '%s' is not KEY=VALUE", parts[p]);
                return NULL;
            }
            *eq = '\0';
            /* DNS servers joined by '+' ("192.0.2.53+192.0.2.54"): the daemon splits on ' '. */
            g_strdelimit(eq + 1, "+", ' ');
            json_object_object_add(settings, parts[p], json_object_new_string(eq + 1));
        }
    }
    return g_steal_pointer(&interfaces);
}

/*
 * After a failover line: each network warning (an interface left unconnected) and the
 * failover TCP/IP outcome unless nothing was configured (docs/failover.md).
 */
static void
vr_cli_print_failover_network(json_object *reply)
{
    json_object *network = vr_cli_json_get(reply, "network");
    json_object *warnings = vr_cli_json_get(network, "warnings");
    json_object *guest_ip = vr_cli_json_get(network, "guest_ip");
    const char *state = vr_cli_json_string(guest_ip, "state");
    const char *reason = vr_cli_json_string(guest_ip, "reason");

    for (size_t i = 0; warnings != NULL && i < json_object_array_length(warnings); i++)
        printf("Warning: %s\n", json_object_get_string(json_object_array_get_idx(warnings, i)));
    if (state != NULL && strcmp(state, "not-configured") != 0)
        printf("Failover TCP/IP: %s%s%s\n", state, reason != NULL ? ": " : "",
               reason != NULL ? reason : "");
}

/*
 * replica-failover, -failover-complete, -failover-cancel (replica host): POST
 * .../failover{,-complete,-cancel} with {"point", "test"}, answered with what the failover
 * did (docs/failover.md).
 */
static bool
vr_cli_cmd_failover(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    const char *action = cmd->name + strlen("replica-");
    const char *point = vr_cli_arg(args, "point");
    bool test = vr_cli_flag(args, "test");
    g_autoptr(json_object) request = json_object_new_object();
    g_autofree char *path = vr_cli_relationship_path(cli->target, action);
    g_autoptr(VrCliReply) reply = NULL;
    const char *domain;
    guint64 cycle;

    if (point != NULL && strcmp(point, "latest") != 0) {
        if (!g_ascii_string_to_unsigned(point, 10, 1, G_MAXUINT64, &cycle, NULL))
            return vr_cli_usage_error(
                error, "option '--point': '%s' is not a cycle number or 'latest'", point);
        json_object_object_add(request, "point", json_object_new_uint64(cycle));
    } else if (point != NULL) {
        json_object_object_add(request, "point", json_object_new_string("latest"));
    }
    if (test)
        json_object_object_add(request, "test", json_object_new_boolean(true));
    if (args->repeated->len > 0) {
        json_object *interfaces = vr_cli_failover_interfaces(args->repeated, error);

        if (interfaces == NULL)
            return false;
        json_object_object_add(request, "interfaces", interfaces);
    }
    /* Starting a domain under TCG, or removing points, takes a while: no default limit. */
    reply = vr_cli_request(cli, SOUP_METHOD_POST, path, request, 0, NULL, error);
    if (reply == NULL)
        return false;
    if (vr_cli_flag(args, "json")) {
        vr_cli_print_raw(reply);
        return true;
    }
    domain = vr_cli_json_text(reply->json, "domain");
    cycle = vr_cli_json_uint(reply->json, "point");
    if (strcmp(action, "failover") == 0 && test)
        printf("Test failover of '%s': '%s' runs on recovery point %" G_GUINT64_FORMAT
               " (its own overlay; replication goes on). Remove it with "
               "replica-failover-cancel %s --test.\n",
               cli->target, domain, cycle, cli->target);
    else if (strcmp(action, "failover") == 0)
        printf("Failed over '%s': '%s' runs on recovery point %" G_GUINT64_FORMAT
               " (epoch %" G_GUINT64_FORMAT ", state %s); cycles from the primary are refused. "
               "Then replica-failover-complete or replica-failover-cancel.\n",
               cli->target, domain, cycle, vr_cli_json_uint(reply->json, "epoch"),
               vr_cli_json_text(reply->json, "state"));
    else if (strcmp(action, "failover-complete") == 0)
        printf("Failover of '%s' completed: the recovery points but %" G_GUINT64_FORMAT
               " and those it is based on are removed.\n",
               cli->target, cycle);
    else if (test)
        printf("Test failover of '%s' cancelled: '%s' and its overlays are removed.\n", cli->target,
               domain);
    else
        printf("Failover of '%s' cancelled: '%s' is stopped, its overlays removed; the "
               "replica accepts cycles again (state %s).\n",
               cli->target, domain, vr_cli_json_text(reply->json, "state"));
    if (strcmp(action, "failover") == 0)
        vr_cli_print_failover_network(reply->json);
    return true;
}

/* "2027-11-24T10:20:31+01:00 (in 364 days)", or "... (EXPIRED)". */
static char *
vr_cli_format_expiry(int64_t seconds)
{
    g_autofree char *when = vr_cli_format_time(seconds);
    int64_t left = seconds - g_get_real_time() / G_USEC_PER_SEC;

    if (left <= 0)
        return g_strdup_printf("%s (EXPIRED)", when);
    return g_strdup_printf("%s (in %" G_GINT64_FORMAT " days)", when, left / 86400);
}

/* The members of GET /v1/server (docs/api.md), as fields. */
static void
vr_cli_print_server(json_object *server, gsize w)
{
    json_object *certs = vr_cli_json_get(server, "certificates");
    json_object *check = vr_cli_json_get(certs, "check_revocation");
    json_object *any = vr_cli_json_get(server, "allow_any");
    g_autoptr(GString) names = g_string_new(NULL);
    const char *const lists[] = { "dns_names", "ip_addresses" };
    int64_t v;

    vr_cli_field(w, "Listen", "%s", vr_cli_json_text(server, "listen"));
    vr_cli_field(w, "Network", "%s", vr_cli_json_text(server, "network"));
    vr_cli_field(w, "Address", "%s", vr_cli_json_text(server, "address"));
    vr_cli_field(w, "Port", "%" G_GUINT64_FORMAT, vr_cli_json_uint(server, "port"));
    vr_cli_field(w, "Server name", "%s", vr_cli_json_text(server, "server_name"));
    vr_cli_field(w, "Certificate", "%s", vr_cli_json_text(certs, "cert"));
    if (vr_cli_json_string(certs, "cert_error") != NULL) {
        vr_cli_field(w, "  Problem", "%s", vr_cli_json_text(certs, "cert_error"));
    } else {
        vr_cli_field(w, "  Subject", "%s", vr_cli_json_text(certs, "subject"));
        for (guint l = 0; l < G_N_ELEMENTS(lists); l++) {
            json_object *list = vr_cli_json_get(certs, lists[l]);

            for (size_t i = 0;
                 json_object_is_type(list, json_type_array) && i < json_object_array_length(list);
                 i++)
                g_string_append_printf(names, "%s%s", names->len > 0 ? ", " : "",
                                       json_object_get_string(json_object_array_get_idx(list, i)));
        }
        vr_cli_field(w, "  Names", "%s", names->len > 0 ? names->str : "-");
        if (vr_cli_json_int(certs, "not_after", &v)) {
            g_autofree char *expiry = vr_cli_format_expiry(v);

            vr_cli_field(w, "  Valid until", "%s", expiry);
        }
    }
    vr_cli_field(w, "Key", "%s", vr_cli_json_text(certs, "key"));
    vr_cli_field(w, "CA", "%s", vr_cli_json_text(certs, "ca"));
    vr_cli_field(w, "CRL", "%s", vr_cli_json_text(certs, "crl"));
    vr_cli_field(w, "Check revocation", "%s",
                 check != NULL && !json_object_get_boolean(check) ? "no" : "yes");
    if (any != NULL && json_object_get_boolean(any))
        vr_cli_field(w, "Authorization", "any authenticated primary ([replica] allow-any)");
    else
        vr_cli_field(w, "Authorization", "%" G_GUINT64_FORMAT " entries (replica-auth-list)",
                     vr_cli_json_uint(server, "authorizations"));
    vr_cli_field(w, "Default storage", "%s", vr_cli_json_text(server, "default_storage"));
    vr_cli_field(w, "Default trust group", "%s", vr_cli_json_text(server, "default_trust_group"));
}

static bool
vr_cli_cmd_server_config(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    const gsize w = 20;
    g_autoptr(VrCliReply) reply = NULL;
    g_autoptr(VrCliReply) server = NULL;
    json_object *roles;
    json_object *replica;
    json_object *primary;
    g_autofree char *started = NULL;
    int64_t v;

    if (vr_cli_flag(args, "json")) {
        /* GET /v1/server as is; 503 "no-replica-role" when the replica role is off. */
        server = vr_cli_request(cli, SOUP_METHOD_GET, "/v1/server", NULL, -1, NULL, error);
        if (server == NULL)
            return false;
        vr_cli_print_raw(server);
        return true;
    }
    reply = vr_cli_request(cli, SOUP_METHOD_GET, "/v1/daemon", NULL, -1, NULL, error);
    if (reply == NULL)
        return false;
    roles = vr_cli_json_get(reply->json, "roles");
    replica = vr_cli_json_get(reply->json, "replica");
    primary = vr_cli_json_get(roles, "primary");
    if (replica != NULL) {
        server = vr_cli_request(cli, SOUP_METHOD_GET, "/v1/server", NULL, -1, NULL, error);
        if (server == NULL)
            return false;
        vr_cli_field(w, "Replica role", "on");
        vr_cli_print_server(server->json, w);
    } else {
        vr_cli_field(w, "Replica role", "off ([replica] enabled in virt-replica.conf)");
    }
    if (primary != NULL)
        vr_cli_field(w, "Primary role", "%s",
                     json_object_get_boolean(primary) ? "on" : "off (no libvirt connection)");
    started = vr_cli_json_int(reply->json, "started", &v) ? vr_cli_format_time(v) : g_strdup("-");
    vr_cli_field(w, "Daemon", "virt-replicad %s, pid %" G_GUINT64_FORMAT ", started %s",
                 vr_cli_json_text(reply->json, "version"), vr_cli_json_uint(reply->json, "pid"),
                 started);
    vr_cli_field(w, "State directory", "%s", vr_cli_json_text(reply->json, "state_dir"));
    return true;
}

/* "/v1/authorizations/PATTERN" with PATTERN escaped as one path segment ('*' too). */
static char *
vr_cli_authorization_path(const char *pattern)
{
    g_autofree char *escaped = g_uri_escape_string(pattern, NULL, FALSE);

    return g_strconcat("/v1/authorizations/", escaped, NULL);
}

static bool
vr_cli_cmd_auth_add(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    const char *storage = vr_cli_arg(args, "storage");
    const char *group = vr_cli_arg(args, "trust-group");
    g_autoptr(json_object) request = json_object_new_object();
    g_autoptr(VrCliReply) reply = NULL;
    g_autofree char *absolute = NULL;

    if (storage == NULL || storage[0] == '\0')
        return vr_cli_usage_error(error, "option '--storage' is required");
    /* The daemon runs on this host: a relative directory is the caller's. */
    absolute = g_canonicalize_filename(storage, NULL);
    json_object_object_add(request, "pattern", json_object_new_string(cli->target));
    json_object_object_add(request, "storage", json_object_new_string(absolute));
    if (group != NULL)
        json_object_object_add(request, "trust_group", json_object_new_string(group));
    reply = vr_cli_request(cli, SOUP_METHOD_POST, "/v1/authorizations", request, -1, NULL, error);
    if (reply == NULL)
        return false;
    if (vr_cli_flag(args, "json")) {
        vr_cli_print_raw(reply);
        return true;
    }
    printf("Primaries matching '%s' are authorized: storage %s, trust group %s.\n",
           vr_cli_json_text(reply->json, "pattern"), vr_cli_json_text(reply->json, "storage"),
           vr_cli_json_text(reply->json, "trust_group"));
    return true;
}

static bool
vr_cli_cmd_auth_list(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    static const char *const header[] = { "Pattern", "Storage", "Trust group", "Origin", NULL };
    g_autoptr(VrCliReply) reply = NULL;
    g_autoptr(GPtrArray) rows = g_ptr_array_new_with_free_func((GDestroyNotify)g_strfreev);
    json_object *any;
    bool printed;
    json_object *list = vr_cli_get_member(cli, args, "/v1/authorizations", "authorizations",
                                          json_type_array, &reply, &printed, error);

    if (list == NULL)
        return printed;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        json_object *entry = json_object_array_get_idx(list, i);
        char **row = g_new0(char *, 5);

        row[0] = g_strdup(vr_cli_json_text(entry, "pattern"));
        row[1] = g_strdup(vr_cli_json_text(entry, "storage"));
        row[2] = g_strdup(vr_cli_json_text(entry, "trust_group"));
        row[3] = g_strdup(vr_cli_json_text(entry, "origin"));
        g_ptr_array_add(rows, row);
    }
    any = vr_cli_json_get(reply->json, "allow_any");
    if (any != NULL && json_object_get_boolean(any))
        printf("Any authenticated primary is accepted ([replica] allow-any = true); the table "
               "is not consulted.\n\n");
    vr_cli_print_table(header, rows);
    return true;
}

static bool
vr_cli_cmd_auth_remove(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    g_autofree char *path = vr_cli_authorization_path(cli->target);
    g_autoptr(VrCliReply) reply =
        vr_cli_request(cli, SOUP_METHOD_DELETE, path, NULL, -1, NULL, error);

    if (reply == NULL)
        return false;
    printf("Authorization of '%s' removed.\n", cli->target);
    return true;
}

/* ---- help and completion ----------------------------------------------------------------- */

static bool vr_cli_cmd_help(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error);

static const char *const vr_cli_on_off[] = { "on", "off", NULL };
static const char *const vr_cli_initial_values[] = { "network", "existing", "export:", NULL };

static const VrCliOption vr_cli_json_option[] = {
    { "json", NULL, VR_CLI_OPT_FLAG, NULL, "print the daemon's JSON answer as it is" },
    { NULL },
};

static const VrCliOption vr_cli_list_options[] = {
    { "json", NULL, VR_CLI_OPT_FLAG, NULL, "print the daemon's JSON answer as it is" },
    { "name", NULL, VR_CLI_OPT_FLAG, NULL, "print the domain names only, one a line" },
    { NULL },
};

static const VrCliOption vr_cli_enable_options[] = {
    { "server", "NAME", VR_CLI_OPT_VALUE, NULL,
      "the replica host's DNS name, as its certificate names it (required)" },
    { "port", "N", VR_CLI_OPT_VALUE, NULL, "the replica's port (default 8443)" },
    { "address", "IP", VR_CLI_OPT_VALUE, NULL,
      "connect to this address of the replica on the replication network; TLS still "
      "verifies NAME (default: resolve NAME)" },
    { "frequency", "SECONDS", VR_CLI_OPT_VALUE, NULL,
      "seconds between cycles: 30, 300 or 900 like Hyper-V, or 5 to 86400 (default: "
      "[primary] default-frequency, 300)" },
    { "recovery-points", "N", VR_CLI_OPT_VALUE, NULL,
      "additional recovery points the replica keeps, 0 to 24" },
    { "app-consistent-hours", "N", VR_CLI_OPT_VALUE, NULL,
      "every N hours cut inside a guest fsfreeze (0: never)" },
    { "network", "SPEC", VR_CLI_OPT_VALUE, NULL,
      "where this host sends from: NAME or network:NAME (a libvirt network), "
      "interface:NAME or address:IP" },
    { "compression", "on|off", VR_CLI_OPT_VALUE, vr_cli_on_off, "compress cycles (default on)" },
    { "bandwidth", "RATE", VR_CLI_OPT_VALUE, NULL,
      "bytes per second for this relationship: 100M, 1G (on top of the host's limit)" },
    { "initial", "HOW", VR_CLI_OPT_VALUE, vr_cli_initial_values,
      "network (a full copy, the default), existing (the replica has a copy: send the "
      "differences) or export:PATH (write the copy to a file)" },
    { "disk", "TARGET", VR_CLI_OPT_VALUE | VR_CLI_OPT_REPEAT, NULL,
      "replicate this disk (vda); repeat for more (default: every qcow2 disk)" },
    { "wait", NULL, VR_CLI_OPT_FLAG, NULL,
      "then cut the first cycle and wait until the replica acknowledges it" },
    { "json", NULL, VR_CLI_OPT_FLAG, NULL,
      "print the daemon's JSON answer (with --wait: the status after the first cycle)" },
    { NULL },
};

static const char *const vr_cli_point_values[] = { "latest", NULL };

static const VrCliOption vr_cli_failover_options[] = {
    { "point", "ID|latest", VR_CLI_OPT_VALUE, vr_cli_point_values,
      "the recovery point (a cycle of replica-recovery-points; default: the latest every "
      "disk holds)" },
    { "test", NULL, VR_CLI_OPT_FLAG, NULL,
      "boot a copy on its own overlays and the test network while replication goes on" },
    { "ip", "MAC,KEY=VALUE,...", VR_CLI_OPT_VALUE | VR_CLI_OPT_REPEAT, NULL,
      "failover TCP/IP of one NIC, over [interface:MAC] of the configuration: keys ipv4, "
      "ipv4-gateway, ipv6, ipv6-gateway, dns (servers joined by '+'); repeat for more NICs" },
    { "json", NULL, VR_CLI_OPT_FLAG, NULL, "print the daemon's JSON answer as it is" },
    { NULL },
};

static const VrCliOption vr_cli_planned_failover_options[] = {
    { "shutdown-timeout", "S", VR_CLI_OPT_VALUE, NULL,
      "seconds the guest has to shut down (ACPI) before the failover gives up (default 120)" },
    { "force", NULL, VR_CLI_OPT_FLAG, NULL,
      "destroy the domain when it did not shut down in time, instead of giving up" },
    { "reverse", NULL, VR_CLI_OPT_FLAG, NULL,
      "then replicate back: the replica host becomes the primary, this host its replica" },
    { "json", NULL, VR_CLI_OPT_FLAG, NULL, "print the daemon's JSON answer as it is" },
    { NULL },
};

static const VrCliOption vr_cli_reverse_options[] = {
    { "server", "NAME", VR_CLI_OPT_VALUE, NULL,
      "the old primary's replica role: its DNS name (on the failed-over host)" },
    { "port", "N", VR_CLI_OPT_VALUE, NULL, "its port (default 8443)" },
    { "address", "IP", VR_CLI_OPT_VALUE, NULL, "its address on the replication network" },
    { "accept", NULL, VR_CLI_OPT_FLAG, NULL,
      "on the old primary: become the replica, the domain's disk the seed" },
    { "primary", "IDENTITY", VR_CLI_OPT_VALUE, NULL,
      "with --accept: the new primary's certificate identity (default: the replica's name)" },
    { "json", NULL, VR_CLI_OPT_FLAG, NULL, "print the daemon's JSON answer as it is" },
    { NULL },
};

static const VrCliOption vr_cli_failover_cancel_options[] = {
    { "test", NULL, VR_CLI_OPT_FLAG, NULL, "remove the test failover's copy instead" },
    { "json", NULL, VR_CLI_OPT_FLAG, NULL, "print the daemon's JSON answer as it is" },
    { NULL },
};

static const VrCliOption vr_cli_no_options[] = {
    { NULL },
};

static const VrCliOption vr_cli_auth_add_options[] = {
    { "storage", "DIR", VR_CLI_OPT_VALUE, NULL,
      "the existing directory where the matching primaries store (required)" },
    { "trust-group", "NAME", VR_CLI_OPT_VALUE, NULL,
      "the trust group of those primaries (default: [replica] default-trust-group)" },
    { "json", NULL, VR_CLI_OPT_FLAG, NULL, "print the daemon's JSON answer as it is" },
    { NULL },
};

static const VrCliOption vr_cli_help_options[] = {
    { "virsh", NULL, VR_CLI_OPT_FLAG, NULL,
      "print the commands as a section of 'virsh help' (used by the virsh wrapper)" },
    { NULL },
};

static const VrCliCommand vr_cli_commands[] = {
    { "replica-enable", "DOMAIN --server NAME [OPTIONS]",
      "start replicating a domain to a replica host",
      "Starts replicating DOMAIN, a libvirt domain of this host, to the replica host NAME. "
      "The domain may be shut off: cycles start when it runs. The first cycle sends the "
      "initial copy; with --wait the command cuts it at once and returns when the replica "
      "has acknowledged it.",
      VR_CLI_ARG_LIBVIRT_DOMAIN, 1, 1, vr_cli_enable_options, vr_cli_cmd_enable },
    { "replica-status", "DOMAIN [--json]", "show the replication state, health and statistics",
      "Shows the state, health and statistics of the replication of DOMAIN (a domain name or "
      "a relationship id), in the manner of Hyper-V's Measure-VMReplication: the figures "
      "are over the daemon's monitoring interval.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_json_option, vr_cli_cmd_status },
    { "replica-list", "[--json | --name]", "list the replicated domains of this host",
      "Lists the replication relationships of this host, in both roles.", VR_CLI_ARG_NONE, 0, 0,
      vr_cli_list_options, vr_cli_cmd_list },
    { "replica-sync", "DOMAIN [--json]", "replicate now and wait for the replica",
      "Cuts a cycle now and waits, without a time limit unless --timeout is given, until "
      "the replica has acknowledged it; if a cycle is already running, waits for that one. "
      "Prints the cycle's number, size and duration.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_json_option, vr_cli_cmd_sync },
    { "replica-suspend", "DOMAIN [--json]", "stop cutting cycles (changes are still tracked)",
      "Suspends the replication of DOMAIN: no cycles until replica-resume. The dirty bitmaps "
      "keep tracking, so the next cycle sends what changed meanwhile.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_json_option, vr_cli_cmd_action },
    { "replica-resume", "DOMAIN [--json]", "cut cycles again after replica-suspend",
      "Resumes the replication of DOMAIN.", VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_json_option,
      vr_cli_cmd_action },
    { "replica-resync", "DOMAIN [--json]", "make the next cycle a hash resynchronization",
      "Asks for a resynchronization: the next cycle compares DOMAIN's disks with the "
      "replica's by hashes and sends the differences.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_json_option, vr_cli_cmd_action },
    { "replica-disable", "DOMAIN", "stop replicating a domain",
      "Stops replicating DOMAIN: the schedule stops, and the relationship and its history "
      "leave this host's state. Refused while a cycle runs (suspend first, or try again).",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_no_options, vr_cli_cmd_disable },
    { "replica-recovery-points", "DOMAIN [--json]", "list the recovery points on this host",
      "Lists the recovery points of DOMAIN on this host (the replica), per disk, oldest "
      "first.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_json_option, vr_cli_cmd_points },
    { "replica-failover", "DOMAIN [--point ID|latest] [--test] [--ip MAC,KEY=VALUE,...] [--json]",
      "fail over to the replica (or --test: boot a test copy)",
      "On the replica host, when the primary is lost: refuses further cycles of DOMAIN, "
      "creates a throwaway overlay on the chosen recovery point for each disk and starts the "
      "standby domain on it (state FailedOver, the epoch incremented). With --test, starts a "
      "copy of the standby with its own name and UUID, on overlays of its own and the test "
      "network, while replication goes on. The recovery points are never written. --ip sets "
      "the addresses pushed into a Linux guest through its agent (failover TCP/IP).",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_failover_options, vr_cli_cmd_failover },
    { "replica-failover-complete", "DOMAIN [--json]",
      "keep only the failed-over point and discard the others",
      "Completes the failover of DOMAIN (Hyper-V's Complete-VMFailover): every other recovery "
      "point is removed, except those the chosen point is based on (the running standby "
      "reads them). The failover cannot be cancelled afterwards.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_json_option, vr_cli_cmd_failover },
    { "replica-failover-cancel", "DOMAIN [--test] [--json]",
      "undo a failover (or --test: remove the test copy)",
      "Cancels the failover of DOMAIN: the standby is destroyed, its overlays removed, its "
      "marker and epoch set back; the replica accepts cycles again and every recovery point "
      "is intact. With --test, destroys and undefines the test copy and removes its "
      "overlays.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_failover_cancel_options, vr_cli_cmd_failover },
    { "replica-planned-failover", "DOMAIN [--shutdown-timeout S] [--force] [--reverse] [--json]",
      "shut the domain down and fail over to the replica with no data loss",
      "On the primary host: stops the cycles of DOMAIN, shuts it down (ACPI; after "
      "--shutdown-timeout seconds, default 120, it gives up with an error and replication "
      "goes on, or with --force destroys the domain), sends its final cycle from the closed "
      "disks, and asks the replica to check that it holds exactly that state and to start "
      "the standby on it. DOMAIN then stays shut off here, guarded against a start (state "
      "FailedOver). With --reverse the replica host then replicates the domain back to this "
      "host (its replica role must run), whose DOMAIN becomes the standby.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_planned_failover_options, vr_cli_cmd_planned_failover },
    { "replica-reverse", "DOMAIN (--server NAME [--port N] [--address IP] | --accept) [--json]",
      "replicate back after an unplanned failover",
      "On the host that failed over (state FailedOver): DOMAIN replicates from here to the "
      "old primary's replica role NAME, the first cycle a hash resynchronization. On the old "
      "primary, once it is back and its domain shut off, --accept first: its domain becomes "
      "the standby and its disk the seed. Split brain is never resolved by itself: both "
      "steps are the operator's.",
      VR_CLI_ARG_DOMAIN, 1, 1, vr_cli_reverse_options, vr_cli_cmd_reverse },
    { "replica-import", "PATH [--json]", "import an initial copy exported to PATH",
      "On the replica host: imports the initial copy that a primary exported to the directory "
      "PATH (replica-enable --initial export:PATH), after verifying its manifest and every "
      "stream; the primary must be authorized as if it had connected. The primary's next "
      "cycle then goes over the network as an incremental one.",
      VR_CLI_ARG_PATH, 1, 1, vr_cli_json_option, vr_cli_cmd_import },
    { "replica-server-config", "[--json]", "show this host's replica role",
      "Shows the replica role of this host's daemon: whether it runs, the address and port it "
      "listens on, its certificates (with the host certificate's names and expiry), the "
      "revocation check and how primaries are authorized. --json prints GET /v1/server.",
      VR_CLI_ARG_NONE, 0, 0, vr_cli_json_option, vr_cli_cmd_server_config },
    { "replica-auth-add", "PATTERN --storage DIR [--trust-group NAME] [--json]",
      "authorize primaries to replicate to this host",
      "Authorizes the primaries whose certificate name matches PATTERN (a DNS name with at most "
      "one '*' standing for one label's characters) to replicate to this host, storing beneath "
      "DIR, in trust group NAME. In effect at once, kept across restarts; entries of the "
      "configuration file come first. Refused with [replica] allow-any = true.",
      VR_CLI_ARG_PATTERN, 1, 1, vr_cli_auth_add_options, vr_cli_cmd_auth_add },
    { "replica-auth-list", "[--json]", "list the authorized primaries",
      "Lists the authorization entries in match order (the first match wins): pattern, storage, "
      "trust group, and whether the entry comes from the configuration file or the API.",
      VR_CLI_ARG_NONE, 0, 0, vr_cli_json_option, vr_cli_cmd_auth_list },
    { "replica-auth-remove", "PATTERN", "remove an authorization added with replica-auth-add",
      "Removes the authorization entry of PATTERN: the next request of a matching primary is "
      "refused. Entries of the configuration file are changed there.",
      VR_CLI_ARG_PATTERN, 1, 1, vr_cli_no_options, vr_cli_cmd_auth_remove },
    { "help", "[COMMAND | --virsh]", "show the commands, or one command's options",
      "Shows the commands, or the usage and options of COMMAND.", VR_CLI_ARG_COMMAND, 0, 1,
      vr_cli_help_options, vr_cli_cmd_help },
};

static const VrCliCommand *
vr_cli_find_command(const char *name)
{
    g_autofree char *full = g_str_has_prefix(name, "replica-") || strcmp(name, "help") == 0
                                ? g_strdup(name)
                                : g_strconcat("replica-", name, NULL);

    for (guint i = 0; i < G_N_ELEMENTS(vr_cli_commands); i++) {
        if (strcmp(vr_cli_commands[i].name, full) == 0)
            return &vr_cli_commands[i];
    }
    return NULL;
}

static void
vr_cli_print_usage(FILE *out, const VrCliCommand *cmd)
{
    fprintf(out, "usage: virt-replica %s%s%s\n", cmd->name, cmd->synopsis[0] != '\0' ? " " : "",
            cmd->synopsis);
}

#define VR_CLI_GLOBAL_USAGE                                                              \
    "usage: virt-replica [--socket PATH] [--timeout SECONDS] [--quiet] COMMAND [ARGS]\n" \
    "       virt-replica help [COMMAND]\n"

static void
vr_cli_print_global_usage(FILE *out)
{
    fputs(VR_CLI_GLOBAL_USAGE "\nCommands (also as 'virsh COMMAND'):\n", out);
    for (guint i = 0; i < G_N_ELEMENTS(vr_cli_commands); i++)
        fprintf(out, "  %-25s %s\n", vr_cli_commands[i].name, vr_cli_commands[i].summary);
    fprintf(out,
            "\n"
            "Options:\n"
            "  --socket PATH      virt-replicad's API socket (default: $%s, else\n"
            "                     %s)\n"
            "  --timeout SECONDS  give up waiting for an answer after SECONDS (0: never);\n"
            "                     default %d, and none for replica-sync and --wait\n"
            "  --quiet            no progress while waiting\n"
            "  --version          print the version\n",
            VR_CLI_SOCKET_ENV, VR_CLI_SOCKET_DEFAULT, VR_CLI_TIMEOUT_S);
}

/* @text wrapped at @width columns, each line after @indent spaces. */
static void
vr_cli_print_wrapped(const char *text, guint indent, guint width, guint first_column)
{
    g_auto(GStrv) words = g_strsplit(text, " ", -1);
    guint column = first_column;

    for (guint i = 0; words[i] != NULL; i++) {
        guint len = (guint)vr_cli_width(words[i]);

        if (column > indent && column + 1 + len > width) {
            printf("\n%*s", (int)indent, "");
            column = indent;
        } else if (column > indent || (i > 0 && column == indent && first_column > indent)) {
            putchar(' ');
            column++;
        }
        if (column < indent) {
            printf("%*s", (int)(indent - column), "");
            column = indent;
        }
        fputs(words[i], stdout);
        column += len;
    }
    putchar('\n');
}

static void
vr_cli_print_command_help(const VrCliCommand *cmd)
{
    vr_cli_print_usage(stdout, cmd);
    putchar('\n');
    vr_cli_print_wrapped(cmd->description, 0, 92, 0);
    if (cmd->options[0].name == NULL)
        return;
    printf("\nOptions:\n");
    for (const VrCliOption *o = cmd->options; o->name != NULL; o++) {
        g_autofree char *left = g_strdup_printf("  --%s%s%s", o->name, o->arg != NULL ? " " : "",
                                                o->arg != NULL ? o->arg : "");
        guint column = (guint)strlen(left);

        fputs(left, stdout);
        if (column + 2 > 30) {
            printf("\n%30s", "");
            column = 30;
        }
        vr_cli_print_wrapped(o->help, 30, 92, column);
    }
}

static bool
vr_cli_cmd_help(VrCli *cli, const VrCliCommand *cmd, VrCliArgs *args, GError **error)
{
    if (vr_cli_flag(args, "virsh")) {
        /* The layout of virsh's own groups in 'virsh help'. */
        printf(" Replication (virt-replica) (help keyword 'replication'):\n");
        for (guint i = 0; i < G_N_ELEMENTS(vr_cli_commands); i++) {
            if (g_str_has_prefix(vr_cli_commands[i].name, "replica-"))
                printf("    %-30s %s\n", vr_cli_commands[i].name, vr_cli_commands[i].summary);
        }
        printf("\n");
        return true;
    }
    if (args->positional->len == 0) {
        vr_cli_print_global_usage(stdout);
        return true;
    }
    cmd = vr_cli_find_command(args->positional->pdata[0]);
    if (cmd == NULL)
        return vr_cli_usage_error(error, "no command '%s' (see 'virt-replica help')",
                                  (const char *)args->positional->pdata[0]);
    vr_cli_print_command_help(cmd);
    return true;
}

typedef struct {
    GMainLoop *loop;
    char *out;
    bool ok;
} VrCliLines;

static void
vr_cli_lines_done(GObject *source, GAsyncResult *result, gpointer data)
{
    VrCliLines *lines = data;

    lines->ok = g_subprocess_communicate_utf8_finish(G_SUBPROCESS(source), result, &lines->out,
                                                     NULL, NULL) &&
                g_subprocess_get_if_exited(G_SUBPROCESS(source)) &&
                g_subprocess_get_exit_status(G_SUBPROCESS(source)) == 0;
    g_main_loop_quit(lines->loop);
}

static gboolean
vr_cli_lines_timeout(gpointer data)
{
    g_cancellable_cancel(data);
    return G_SOURCE_REMOVE;
}

/* The lines of a program's standard output, within @timeout_s; NULL on any failure. */
static char **
vr_cli_command_lines(const char *const *argv, guint timeout_s)
{
    g_autoptr(GSubprocess) proc = g_subprocess_newv(
        argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_SILENCE, NULL);
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
    VrCliLines lines = { .loop = loop };
    g_autofree char *out = NULL;
    guint timer;

    if (proc == NULL)
        return NULL;
    timer = g_timeout_add_seconds(timeout_s, vr_cli_lines_timeout, cancellable);
    g_subprocess_communicate_utf8_async(proc, NULL, cancellable, vr_cli_lines_done, &lines);
    g_main_loop_run(loop);
    out = lines.out;
    if (g_cancellable_is_cancelled(cancellable))
        g_subprocess_force_exit(proc);
    else
        g_source_remove(timer);
    if (!lines.ok)
        return NULL;
    return g_strsplit(out != NULL ? out : "", "\n", -1);
}

/*
 * The member @member of each object of the array @array of GET @path, or NULL when the
 * daemon cannot say (for completion: quick, never an error).
 */
static GPtrArray *
vr_cli_list_members(VrCli *cli, const char *path, const char *array, const char *member)
{
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(VrCliReply) reply =
        vr_cli_request(cli, SOUP_METHOD_GET, path, NULL, VR_CLI_COMPLETE_TIMEOUT_S, NULL, NULL);
    json_object *list = reply != NULL ? vr_cli_json_get(reply->json, array) : NULL;

    if (!json_object_is_type(list, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(list); i++) {
        const char *name = vr_cli_json_string(json_object_array_get_idx(list, i), member);

        if (name != NULL)
            g_ptr_array_add(names, g_strdup(name));
    }
    return g_steal_pointer(&names);
}

/* The domain names of the daemon's relationships, or NULL when it cannot say. */
static GPtrArray *
vr_cli_relationship_names(VrCli *cli)
{
    return vr_cli_list_members(cli, "/v1/relationships", "relationships", "domain");
}

/* The patterns of the replica's authorization entries, or NULL when it cannot say. */
static GPtrArray *
vr_cli_authorization_patterns(VrCli *cli)
{
    return vr_cli_list_members(cli, "/v1/authorizations", "authorizations", "pattern");
}

/* libvirt's domains, as `virsh list --all --name` tells them (replica-enable). */
static GPtrArray *
vr_cli_libvirt_names(void)
{
    static const char *const argv[] = { "virsh", "list", "--all", "--name", NULL };
    g_auto(GStrv) lines = vr_cli_command_lines(argv, VR_CLI_COMPLETE_TIMEOUT_S);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);

    if (lines == NULL)
        return NULL;
    for (guint i = 0; lines[i] != NULL; i++) {
        if (lines[i][0] != '\0')
            g_ptr_array_add(names, g_strdup(lines[i]));
    }
    return g_steal_pointer(&names);
}

static void
vr_cli_add_strv(GPtrArray *out, const char *prefix, const char *const *values)
{
    for (guint i = 0; values != NULL && values[i] != NULL; i++)
        g_ptr_array_add(out, g_strconcat(prefix, values[i], NULL));
}

/*
 * `virt-replica complete -- WORDS...`: the candidates for the last of WORDS (the word being
 * completed, possibly empty), one a line, as `virsh complete` answers. WORDS start at the
 * command. Used by the bash completion and the virsh wrapper; silent on any failure.
 */
static int
vr_cli_complete(VrCli *cli, int argc, char **argv)
{
    g_autoptr(GPtrArray) candidates = g_ptr_array_new_with_free_func(g_free);
    const char *cur = argc > 0 ? argv[argc - 1] : "";
    const VrCliCommand *cmd = argc > 1 ? vr_cli_find_command(argv[0]) : NULL;
    const VrCliOption *prev = NULL;
    const char *eq = strchr(cur, '=');
    guint positional = 0;

    if (argc <= 1) {
        for (guint i = 0; i < G_N_ELEMENTS(vr_cli_commands); i++)
            g_ptr_array_add(candidates, g_strdup(vr_cli_commands[i].name));
        goto print;
    }
    if (cmd == NULL)
        return VR_CLI_EXIT_OK;
    /* The positional words so far, and whether the previous word wants a value. */
    for (int i = 1; i < argc - 1; i++) {
        const VrCliOption *o = NULL;

        if (g_str_has_prefix(argv[i], "--") && strchr(argv[i], '=') == NULL)
            o = vr_cli_find_option(cmd, argv[i] + 2, strlen(argv[i] + 2));
        if (o != NULL && (o->flags & VR_CLI_OPT_VALUE)) {
            if (i == argc - 2)
                prev = o;
            i++;
        } else if (argv[i][0] != '-') {
            positional++;
        }
    }
    if (prev != NULL) {
        vr_cli_add_strv(candidates, "", prev->values);
    } else if (g_str_has_prefix(cur, "--") && eq != NULL) {
        const VrCliOption *o = vr_cli_find_option(cmd, cur + 2, (gsize)(eq - cur - 2));
        g_autofree char *prefix = g_strndup(cur, (gsize)(eq - cur + 1));

        if (o != NULL)
            vr_cli_add_strv(candidates, prefix, o->values);
    } else if (cur[0] == '-') {
        for (const VrCliOption *o = cmd->options; o->name != NULL; o++) {
            bool used = false;

            for (int i = 1; i < argc - 1 && !(o->flags & VR_CLI_OPT_REPEAT); i++)
                used =
                    used ||
                    (g_str_has_prefix(argv[i], "--") &&
                     strncmp(argv[i] + 2, o->name, strlen(o->name)) == 0 &&
                     (argv[i][2 + strlen(o->name)] == '\0' || argv[i][2 + strlen(o->name)] == '='));
            if (!used)
                g_ptr_array_add(candidates, g_strconcat("--", o->name, NULL));
        }
    } else if (positional < cmd->max_args) {
        g_autoptr(GPtrArray) names = NULL;

        switch (cmd->arg) {
        case VR_CLI_ARG_DOMAIN:
            names = vr_cli_relationship_names(cli);
            break;
        case VR_CLI_ARG_LIBVIRT_DOMAIN:
            names = vr_cli_libvirt_names();
            break;
        case VR_CLI_ARG_PATTERN:
            names = vr_cli_authorization_patterns(cli);
            break;
        case VR_CLI_ARG_COMMAND:
            names = g_ptr_array_new_with_free_func(g_free);
            for (guint i = 0; i < G_N_ELEMENTS(vr_cli_commands); i++)
                g_ptr_array_add(names, g_strdup(vr_cli_commands[i].name));
            break;
        default:
            break;
        }
        for (guint i = 0; names != NULL && i < names->len; i++)
            g_ptr_array_add(candidates, g_strdup(names->pdata[i]));
    }
print:
    for (guint i = 0; i < candidates->len; i++) {
        if (g_str_has_prefix(candidates->pdata[i], cur))
            printf("%s\n", (const char *)candidates->pdata[i]);
    }
    return VR_CLI_EXIT_OK;
}

/* ---- main --------------------------------------------------------------------------------- */

static bool
vr_cli_open(VrCli *cli, GError **error)
{
    g_autoptr(GSocketAddress) address = NULL;

    if (strlen(cli->socket_path) >= sizeof(((struct sockaddr_un *)NULL)->sun_path)) {
        g_set_error(error, VR_CLI_ERROR, VR_CLI_ERROR_UNREACHABLE,
                    "cannot reach virt-replicad at %s: the path is longer than %zu bytes",
                    cli->socket_path, sizeof(((struct sockaddr_un *)NULL)->sun_path) - 1);
        return false;
    }
    address = g_unix_socket_address_new(cli->socket_path);
    /* No proxy: the connection goes to the unix socket whatever the URI says. */
    cli->session = soup_session_new_with_options("remote-connectable", address, "proxy-resolver",
                                                 NULL, "user-agent", "virt-replica/" VR_CLI_VERSION,
                                                 "timeout", 0, "idle-timeout", 0, NULL);
    return true;
}

/* A global option's value: "--name VALUE" or "--name=VALUE"; NULL when @argv[*i] is not it. */
static const char *
vr_cli_global_value(int argc, char **argv, int *i, const char *name, GError **error)
{
    const char *word = argv[*i];
    gsize len = strlen(name);

    if (strncmp(word, name, len) != 0)
        return NULL;
    if (word[len] == '=')
        return word + len + 1;
    if (word[len] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        vr_cli_usage_error(error, "option '%s' needs a value", name);
        return NULL;
    }
    return argv[++*i];
}

int
main(int argc, char **argv)
{
    VrCli cli = { .timeout_s = -1 };
    g_auto(VrCliArgs) args = { 0 };
    g_autoptr(GError) error = NULL;
    const char *socket_path = NULL;
    const char *term = g_getenv("TERM");
    bool help = false;
    int status = VR_CLI_EXIT_OK;
    int i;

    setlocale(LC_ALL, "");
    for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
        const char *value;

        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            vr_cli_print_global_usage(stdout);
            return VR_CLI_EXIT_OK;
        } else if (strcmp(argv[i], "-V") == 0 || strcmp(argv[i], "--version") == 0) {
            printf("virt-replica %s\n", VR_CLI_VERSION);
            return VR_CLI_EXIT_OK;
        } else if (strcmp(argv[i], "-q") == 0 || strcmp(argv[i], "--quiet") == 0) {
            cli.quiet = true;
        } else if ((value = vr_cli_global_value(argc, argv, &i, "--socket", &error)) != NULL) {
            socket_path = value;
        } else if ((value = vr_cli_global_value(argc, argv, &i, "--timeout", &error)) != NULL) {
            guint64 t;

            if (!g_ascii_string_to_unsigned(value, 10, 0, 86400 * 365, &t, NULL)) {
                vr_cli_usage_error(&error, "option '--timeout': '%s' is not a number of seconds",
                                   value);
                break;
            }
            cli.timeout_s = (int)t;
        } else if (error == NULL) {
            vr_cli_usage_error(&error, "unknown option '%s'", argv[i]);
        }
        if (error != NULL)
            break;
    }
    if (error == NULL && i >= argc)
        vr_cli_usage_error(&error, "no command given");
    if (error != NULL) {
        vr_cli_print_error(&cli, error);
        g_printerr(VR_CLI_GLOBAL_USAGE "(the commands: 'virt-replica help')\n");
        return VR_CLI_EXIT_USAGE;
    }

    if (socket_path == NULL)
        socket_path = g_getenv(VR_CLI_SOCKET_ENV);
    cli.socket_path =
        socket_path != NULL && socket_path[0] != '\0' ? socket_path : VR_CLI_SOCKET_DEFAULT;
    cli.tty = isatty(STDERR_FILENO) && (term == NULL || strcmp(term, "dumb") != 0);

    if (strcmp(argv[i], "complete") == 0) {
        int first = i + 1 < argc && strcmp(argv[i + 1], "--") == 0 ? i + 2 : i + 1;

        if (!vr_cli_open(&cli, NULL))
            cli.session = NULL;
        if (cli.session != NULL)
            status = vr_cli_complete(&cli, argc - first, argv + first);
        g_clear_object(&cli.session);
        return status;
    }
    cli.cmd = vr_cli_find_command(argv[i]);
    if (cli.cmd == NULL) {
        g_printerr("virt-replica: unknown command '%s' (the commands: 'virt-replica help')\n",
                   argv[i]);
        return VR_CLI_EXIT_USAGE;
    }
    for (int j = i + 1; j < argc && strcmp(argv[j], "--") != 0; j++)
        help = help || strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0;
    if (help) {
        vr_cli_print_command_help(cli.cmd);
        return VR_CLI_EXIT_OK;
    }
    if (!vr_cli_parse_args(cli.cmd, argc - i - 1, argv + i + 1, &args, &error)) {
        vr_cli_print_error(&cli, error);
        vr_cli_print_usage(stderr, cli.cmd);
        return VR_CLI_EXIT_USAGE;
    }
    if (cli.cmd->arg != VR_CLI_ARG_NONE && cli.cmd->arg != VR_CLI_ARG_COMMAND &&
        args.positional->len > 0)
        cli.target = args.positional->pdata[0];

    if (cli.cmd->run != vr_cli_cmd_help && !vr_cli_open(&cli, &error)) {
        vr_cli_print_error(&cli, error);
        return vr_cli_exit_status(error);
    }
    if (!cli.cmd->run(&cli, cli.cmd, &args, &error)) {
        /* With --json, the daemon's error body too: programs want its stable code. */
        if (cli.error_body != NULL && vr_cli_flag(&args, "json")) {
            g_autoptr(VrCliReply) body = g_new0(VrCliReply, 1);

            body->raw = g_bytes_ref(cli.error_body);
            vr_cli_print_raw(body);
        }
        fflush(stdout);
        vr_cli_print_error(&cli, error);
        if (g_error_matches(error, VR_CLI_ERROR, VR_CLI_ERROR_USAGE))
            vr_cli_print_usage(stderr, cli.cmd);
        status = vr_cli_exit_status(error);
    }
    g_clear_object(&cli.session);
    g_clear_pointer(&cli.error_body, g_bytes_unref);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        g_printerr("virt-replica: cannot write the output: %s\n", g_strerror(errno));
        if (status == VR_CLI_EXIT_OK)
            status = VR_CLI_EXIT_FAILED;
    }
    return status;
}
