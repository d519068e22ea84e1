/*
 * vr-test-util.c: what the integration tests share
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <libvirt/virterror.h>

#include "vr-qmp-block.h"
#include "vr-test-util.h"

static char *tmpdir;

static void
vr_test_tmpdir_remove(void)
{
    g_autofree char *argv0 = NULL;

    if (tmpdir == NULL || g_getenv("VR_TEST_KEEP") != NULL)
        return;
    /* Only what we made ourselves; the wrapper removes its own directory. */
    if (g_getenv("VR_TEST_TMPDIR") == NULL) {
        const char *argv[] = { "rm", "-rf", tmpdir, NULL };

        g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                     NULL);
    }
}

static void
vr_test_quiet_libvirt(void *opaque, virErrorPtr error)
{
}

void
vr_test_init(int *argc, char ***argv)
{
    g_test_init(argc, argv, NULL);
    g_unsetenv("VR_FAILPOINT");
    virSetErrorFunc(NULL, vr_test_quiet_libvirt);
}

int
vr_test_run_pki(char *pki, char *skip_why)
{
    int rc = g_test_run();

    g_free(pki);
    g_free(skip_why);
    return rc;
}

const char *
vr_test_tmpdir(void)
{
    if (tmpdir == NULL) {
        const char *base = g_getenv("VR_TEST_TMPDIR");
        g_autoptr(GError) error = NULL;

        if (base != NULL) {
            tmpdir = g_build_filename(base, "t", NULL);
            g_assert_no_errno(g_mkdir_with_parents(tmpdir, 0755));
        } else {
            tmpdir = g_dir_make_tmp("vrtest-XXXXXX", &error);
            g_assert_no_error(error);
            atexit(vr_test_tmpdir_remove);
        }
        /* QEMU under libvirt runs as libvirt-qemu: it must traverse to its images. */
        g_assert_no_errno(chmod(tmpdir, 0755));
    }
    return tmpdir;
}

char *
vr_test_path(const char *name)
{
    return g_build_filename(vr_test_tmpdir(), name, NULL);
}

const char *
vr_test_prefix(void)
{
    static char *prefix;

    if (prefix == NULL) {
        const char *env = g_getenv("VR_TEST_PREFIX");

        prefix = env != NULL ? g_strdup(env) : g_strdup_printf("vrtest-%d", (int)getpid());
    }
    return prefix;
}

bool
vr_test_skip_without(const char *program)
{
    g_autofree char *path = g_find_program_in_path(program);
    g_autofree char *msg = NULL;

    if (path != NULL)
        return false;
    msg = g_strdup_printf("'%s' is not installed", program);
    g_test_skip(msg);
    return true;
}

const char *
vr_test_accel(void)
{
    if (g_strcmp0(g_getenv("VR_TEST_ACCEL"), "tcg") != 0 && access("/dev/kvm", R_OK | W_OK) == 0)
        return "kvm";
    return "tcg";
}

static void
vr_test_child_setup(gpointer user_data)
{
    /* The child dies with the test, even when an assertion aborts it. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

VrTestProcess *
vr_test_process_start(const char *const *argv, const char *qmp_path)
{
    g_autoptr(GError) error = NULL;
    VrTestProcess *proc = g_new0(VrTestProcess, 1);
    g_autofree char *log = vr_test_path("process.log");
    gint64 deadline;
    int log_fd;

    /* Its output goes to a log, shown when the test fails to start it. */
    log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    g_assert_no_errno(log_fd);
    g_spawn_async_with_fds(NULL, (char **)argv, NULL,
                           G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, vr_test_child_setup,
                           NULL, &proc->pid, -1, log_fd, log_fd, &error);
    close(log_fd);
    g_assert_no_error(error);
    proc->qmp_path = g_strdup(qmp_path);

    /* Probing connects would take QEMU's one QMP client slot; wait for the socket file. */
    deadline = g_get_monotonic_time() + 20 * G_USEC_PER_SEC;
    while (!g_file_test(qmp_path, G_FILE_TEST_EXISTS)) {
        int status;

        if (waitpid(proc->pid, &status, WNOHANG) == proc->pid) {
            g_autofree char *text = NULL;

            proc->reaped = true;
            g_file_get_contents(log, &text, NULL, NULL);
            g_error("'%s' exited before creating '%s': %s", argv[0], qmp_path,
                    text != NULL ? text : "");
        }
        if (g_get_monotonic_time() > deadline)
            g_error("'%s' did not create '%s' within 20 s", argv[0], qmp_path);
        g_usleep(20 * 1000);
    }
    return proc;
}

VrTestProcess *
vr_test_qemu_start(const char *qmp_path, const char *const *images, bool paused)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
    static const char *const fixed[] = {
        "qemu-system-x86_64", "-M", "q35", "-nodefaults", "-display", "none", "-m", "64", NULL
    };

    for (guint i = 0; fixed[i] != NULL; i++)
        g_ptr_array_add(argv, g_strdup(fixed[i]));
    g_ptr_array_add(argv, g_strdup("-accel"));
    g_ptr_array_add(argv, g_strdup(vr_test_accel()));
    g_ptr_array_add(argv, g_strdup("-qmp"));
    g_ptr_array_add(argv, g_strdup_printf("unix:%s,server=on,wait=off", qmp_path));
    if (paused)
        g_ptr_array_add(argv, g_strdup("-S"));
    for (guint i = 0; images[i] != NULL; i++) {
        g_ptr_array_add(argv, g_strdup("-blockdev"));
        g_ptr_array_add(argv, g_strdup_printf("{\"driver\":\"qcow2\",\"node-name\":\"disk%u\","
                                              "\"discard\":\"unmap\",\"file\":{\"driver\":"
                                              "\"file\",\"filename\":\"%s\"}}",
                                              i, images[i]));
        g_ptr_array_add(argv, g_strdup("-device"));
        g_ptr_array_add(argv, g_strdup_printf("virtio-blk-pci,drive=disk%u,id=vd%c", i, 'a' + i));
    }
    g_ptr_array_add(argv, NULL);
    g_unlink(qmp_path);
    return vr_test_process_start((const char *const *)argv->pdata, qmp_path);
}

void
vr_test_process_signal(VrTestProcess *proc, int signum)
{
    g_assert_false(proc->reaped);
    g_assert_no_errno(kill(proc->pid, signum));
}

void
vr_test_process_free(VrTestProcess *proc)
{
    if (proc == NULL)
        return;
    if (!proc->reaped) {
        kill(proc->pid, SIGKILL);
        while (waitpid(proc->pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    g_spawn_close_pid(proc->pid);
    g_free(proc->qmp_path);
    g_free(proc);
}

char *
vr_test_run(const char *const *argv)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    int status = 0;

    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status,
                 &error);
    g_assert_no_error(error);
    if (!g_spawn_check_wait_status(status, &error))
        g_error("'%s' failed: %s\n%s%s", argv[0], error->message, out, err);
    return g_steal_pointer(&out);
}

void
vr_test_qcow2_create(const char *path, const char *size)
{
    const char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", path, size, NULL };
    g_autofree char *out = vr_test_run(argv);
}

VrQmpClient *
vr_test_connect_unix(const char *path)
{
    gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

    for (;;) {
        g_autoptr(VrQmpClient) client = vr_qmp_client_new(vr_qmp_channel_unix_new(path));
        g_autoptr(GError) error = NULL;

        /*
         * QEMU creates the socket (bind) a moment before it listens: on a loaded machine a
         * connect in between is refused. A refused connect takes no client slot: try again.
         */
        if (!vr_qmp_client_connect(client, NULL, &error) &&
            strstr(error->message, g_strerror(ECONNREFUSED)) != NULL &&
            g_get_monotonic_time() < deadline) {
            g_usleep(50 * 1000);
            continue;
        }
        g_assert_no_error(error);
        g_assert_true(vr_qmp_client_is_connected(client));
        return g_steal_pointer(&client);
    }
}

uint64_t
vr_test_bitmap_count(VrQmpClient *client, const char *node, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VrQmpBitmapInfo) info = vr_qmp_query_bitmap(client, node, name, &error);

    g_assert_no_error(error);
    return info->count;
}

void
vr_test_hmp_qemu_io(VrQmpClient *client, const char *qdev, const char *io)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *cmd = g_strdup_printf("qemu-io -d %s \"%s\"", qdev, io);
    g_autofree char *out = vr_qmp_human_monitor_command(client, cmd, &error);

    g_assert_no_error(error);
    g_assert_nonnull(out);
}

virConnectPtr
vr_test_libvirt_connect(void)
{
    g_autoptr(GError) error = NULL;
    virConnectPtr conn;

    if (getuid() != 0) {
        g_test_skip("needs root for qemu:///system");
        return NULL;
    }
    g_assert_true(vr_qmp_libvirt_event_loop_start(&error));
    g_assert_no_error(error);
    conn = virConnectOpen("qemu:///system");
    if (conn == NULL)
        g_test_skip("libvirtd is not reachable at qemu:///system");
    return conn;
}

char *
vr_test_make_pki(char **skip_why)
{
    g_autofree char *script = g_test_build_filename(G_TEST_DIST, "make-pki.sh", NULL);
    g_autofree char *dir = vr_test_path("pki");
    g_autofree char *err = NULL;
    g_autoptr(GError) error = NULL;
    const char *argv[] = { "sh", script, dir, NULL };
    int status = 0;

    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL,
                               G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
                               &err, &status, &error));
    g_assert_no_error(error);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        *skip_why = g_strdup_printf("no PKI: %s", g_strstrip(err));
        return NULL;
    }
    if (!g_spawn_check_wait_status(status, &error))
        g_error("make-pki.sh failed: %s\n%s", error->message, err);
    return g_steal_pointer(&dir);
}

void
vr_test_libvirt_teardown(GMainContext **context, virDomainPtr *domain, virConnectPtr *conn)
{
    if (*context != NULL) {
        /* Deliveries from the channel's threads still queued hold memory: run them out. */
        while (g_main_context_iteration(*context, FALSE))
            ;
        g_main_context_pop_thread_default(*context);
        g_clear_pointer(context, g_main_context_unref);
    }
    if (*domain != NULL) {
        if (virDomainIsActive(*domain) == 1)
            virDomainDestroy(*domain);
        virDomainUndefineFlags(*domain, VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA);
        g_clear_pointer(domain, virDomainFree);
    }
    if (*conn != NULL)
        g_clear_pointer(conn, virConnectClose);
}

void
vr_test_dirs(guint serial, mode_t root_mode, char **root, char **work)
{
    g_autofree char *root_name = g_strdup_printf("root%u", serial);
    g_autofree char *work_name = g_strdup_printf("work%u", serial);

    *root = vr_test_path(root_name);
    *work = vr_test_path(work_name);
    g_assert_no_errno(g_mkdir_with_parents(*root, root_mode));
    g_assert_no_errno(chmod(*root, root_mode));
    g_assert_no_errno(g_mkdir_with_parents(*work, 0755));
}

virDomainPtr
vr_test_domain_define(virConnectPtr conn, const char *name, const char *vda, const char *devices)
{
    g_autofree char *xml = g_strdup_printf("<domain type='qemu'>"
                                           "  <name>%s</name>"
                                           "  <memory unit='MiB'>64</memory>"
                                           "  <os><type arch='x86_64' machine='q35'>hvm</type></os>"
                                           "  <devices>"
                                           "    <disk type='file' device='disk'>"
                                           "      <driver name='qemu' type='qcow2'/>"
                                           "      <source file='%s'/>"
                                           "      <target dev='vda' bus='virtio'/>"
                                           "    </disk>"
                                           "    %s"
                                           "    <memballoon model='none'/>"
                                           "  </devices>"
                                           "</domain>",
                                           name, vda, devices != NULL ? devices : "");
    virDomainPtr dom = virDomainDefineXML(conn, xml);

    if (dom == NULL)
        g_error("cannot define the domain '%s': %s", name, virGetLastErrorMessage());
    return dom;
}

bool
vr_test_domains_undefine(virConnectPtr conn, GPtrArray *names)
{
    bool ok = true;

    for (guint i = 0; i < names->len; i++) {
        virDomainPtr dom = virDomainLookupByName(conn, names->pdata[i]);

        if (dom == NULL)
            continue;
        if (virDomainIsActive(dom) == 1)
            virDomainDestroy(dom);
        if (virDomainUndefineFlags(dom, VIR_DOMAIN_UNDEFINE_NVRAM) != 0)
            ok = false;
        virDomainFree(dom);
    }
    return ok;
}

static int
vr_test_compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

char *
vr_test_list_dir(const char *path)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GDir) dir = g_dir_open(path, 0, &error);
    g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
    const char *name;

    g_assert_no_error(error);
    while ((name = g_dir_read_name(dir)) != NULL)
        g_ptr_array_add(names, g_strdup(name));
    g_ptr_array_sort(names, vr_test_compare_names);
    g_ptr_array_add(names, NULL);
    return g_strjoinv(" ", (char **)names->pdata);
}

guint
vr_test_count_processes(const char *program, const char *dir)
{
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *name;
    guint count = 0;

    g_assert_nonnull(proc);
    while ((name = g_dir_read_name(proc)) != NULL) {
        g_autofree char *path = NULL;
        g_autofree char *cmdline = NULL;
        g_autofree char *argv0 = NULL;
        bool names_dir = false;
        size_t len = 0;

        if (!g_ascii_isdigit(name[0]))
            continue;
        path = g_strdup_printf("/proc/%s/cmdline", name);
        if (!g_file_get_contents(path, &cmdline, &len, NULL) || len == 0)
            continue;
        argv0 = g_path_get_basename(cmdline);
        for (size_t at = 0; at < len; at += strlen(cmdline + at) + 1) {
            if (strstr(cmdline + at, dir) != NULL)
                names_dir = true;
        }
        if (names_dir && strcmp(argv0, program) == 0)
            count++;
    }
    return count;
}

void
vr_test_assert_no_process(const char *program, const char *dir)
{
    gint64 deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;

    while (vr_test_count_processes(program, dir) > 0 && g_get_monotonic_time() < deadline)
        g_usleep(10 * 1000);
    g_assert_cmpuint(vr_test_count_processes(program, dir), ==, 0);
}
