/*
 * virt-replicad: the virt-replica daemon (both roles, one per host)
 *
 *   virt-replicad [--config FILE] [--state-dir DIR] [--socket PATH] [--verbose]
 *   virt-replicad --check-config [--config FILE]
 *
 * Runs in the foreground (systemd starts it: etc/virt-replicad.service) and logs to stderr.
 * SIGTERM and SIGINT stop it cleanly. Exit status: 0 after a clean stop or a clean check,
 * 1 when the configuration has a problem or a part cannot start, 2 for bad options.
 * docs/virt-replicad.8 is the manual.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>

#include <glib-unix.h>
#include <glib.h>
#include <libvirt/virterror.h>

#include "vr-config.h"
#include "vr-daemon.h"

static char *opt_config;
static char *opt_state_dir;
static char *opt_socket;
static gboolean opt_check;
static gboolean opt_verbose;

static const GOptionEntry options[] = {
    { "config", 'c', 0, G_OPTION_ARG_FILENAME, &opt_config,
      "the configuration file (" VR_CONFIG_DEFAULT_PATH ")", "FILE" },
    { "state-dir", 0, 0, G_OPTION_ARG_FILENAME, &opt_state_dir,
      "the state directory (overrides [daemon] state-dir)", "DIR" },
    { "socket", 0, 0, G_OPTION_ARG_FILENAME, &opt_socket,
      "the API socket (overrides [daemon] socket)", "PATH" },
    { "check-config", 0, 0, G_OPTION_ARG_NONE, &opt_check,
      "check the configuration and this host, print every problem, and exit", NULL },
    { "verbose", 'v', 0, G_OPTION_ARG_NONE, &opt_verbose, "log at debug level", NULL },
    { NULL },
};

static VrConfigLogLevel log_level = VR_CONFIG_LOG_INFO;

/* One line per message on stderr, at or above the configured level. */
static GLogWriterOutput
log_writer(GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer user_data)
{
    const char *message = NULL;
    const char *domain = NULL;
    const char *label;
    VrConfigLogLevel needed;

    for (gsize i = 0; i < n_fields; i++) {
        if (g_strcmp0(fields[i].key, "MESSAGE") == 0)
            message = fields[i].value;
        else if (g_strcmp0(fields[i].key, "GLIB_DOMAIN") == 0)
            domain = fields[i].value;
    }
    if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL)) {
        needed = VR_CONFIG_LOG_ERROR;
        label = "error";
    } else if (level & G_LOG_LEVEL_WARNING) {
        needed = VR_CONFIG_LOG_WARNING;
        label = "warning";
    } else if (level & (G_LOG_LEVEL_MESSAGE | G_LOG_LEVEL_INFO)) {
        needed = VR_CONFIG_LOG_INFO;
        label = "info";
    } else {
        needed = VR_CONFIG_LOG_DEBUG;
        label = "debug";
    }
    if (needed > log_level)
        return G_LOG_WRITER_HANDLED;
    fprintf(stderr, "virt-replicad: %s: %s%s%s\n", label, domain != NULL ? domain : "",
            domain != NULL ? ": " : "", message != NULL ? message : "");
    fflush(stderr);
    return G_LOG_WRITER_HANDLED;
}

/* libvirt's errors reach us as GErrors with their message; its default handler would print
 * each one on stderr as well. */
static void
quiet_libvirt(void *data, virErrorPtr error)
{
}

static gboolean
on_signal(gpointer data)
{
    g_info("stopping (signal)");
    vr_daemon_quit(data);
    return G_SOURCE_CONTINUE;
}

static int
check_config(const char *path)
{
    g_autoptr(GPtrArray) problems = g_ptr_array_new_with_free_func(g_free);

    if (vr_config_check(path, VR_CONFIG_CHECK_SYSTEM, problems)) {
        printf("%s: no problem found\n", path);
        return 0;
    }
    for (guint i = 0; i < problems->len; i++)
        fprintf(stderr, "%s\n", (const char *)problems->pdata[i]);
    fprintf(stderr, "%s: %u problem%s\n", path, problems->len, problems->len == 1 ? "" : "s");
    return 1;
}

int
main(int argc, char **argv)
{
    g_autoptr(GOptionContext) options_context = g_option_context_new("- the virt-replica daemon");
    g_autoptr(GError) error = NULL;
    static const int signals[] = { SIGTERM, SIGINT };
    g_autoptr(GMainContext) context = NULL; /* the daemon's own */
    g_autoptr(VrDaemon) daemon = NULL;
    VrConfig *config;
    const char *path;

    setlocale(LC_ALL, "");
    g_option_context_add_main_entries(options_context, options, NULL);
    if (!g_option_context_parse(options_context, &argc, &argv, &error)) {
        fprintf(stderr, "virt-replicad: %s\n", error->message);
        return 2;
    }
    path = opt_config != NULL ? opt_config : VR_CONFIG_DEFAULT_PATH;
    if (opt_check)
        return check_config(path);

    g_log_set_writer_func(log_writer, NULL, NULL);
    virSetErrorFunc(NULL, quiet_libvirt);
    config = vr_config_load(path, &error);
    if (config == NULL) {
        fprintf(stderr, "virt-replicad: %s\n", error->message);
        return 1;
    }
    log_level = opt_verbose ? VR_CONFIG_LOG_DEBUG : config->daemon.log_level;
    if (opt_state_dir != NULL) {
        g_free(config->daemon.state_dir);
        config->daemon.state_dir = g_strdup(opt_state_dir);
    }
    if (opt_socket != NULL) {
        g_free(config->daemon.socket);
        config->daemon.socket = g_strdup(opt_socket);
    }
    /*
     * A main context of the daemon's own, never the global default one: libvirt's event loop
     * (vr_qmp_libvirt_event_loop_start()) iterates the global default context in its own
     * thread, and would dispatch the daemon's sources there, concurrently, whenever the
     * daemon's loop is not running (at start, while stopping).
     */
    context = g_main_context_new();
    g_main_context_push_thread_default(context);
    daemon = vr_daemon_new(config, &error);
    if (daemon == NULL) {
        fprintf(stderr, "virt-replicad: %s\n", error->message);
        return 1;
    }
    for (guint i = 0; i < G_N_ELEMENTS(signals); i++) {
        g_autoptr(GSource) source = g_unix_signal_source_new(signals[i]);

        g_source_set_callback(source, on_signal, daemon, NULL);
        g_source_attach(source, context);
    }
    vr_daemon_run(daemon);
    g_clear_pointer(&daemon, vr_daemon_free);
    g_main_context_pop_thread_default(context);
    g_info("stopped");
    return 0;
}
