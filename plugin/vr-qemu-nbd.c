/*
 * vr-qemu-nbd.c: one qemu-nbd server, run by the replica
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>

#include "vr-qemu-nbd.h"
#include "vr-replica-store.h"

#define VR_QEMU_STDERR_MAX 2048

/*
 * Runs in the child between fork and exec (one fork: g_spawn_sync, or g_spawn_async with
 * G_SPAWN_DO_NOT_REAP_CHILD, so the parent is the caller). qemu-img and qemu-nbd die with
 * the thread that started them, so an apply never outlives its owner: a crashed daemon
 * leaves no server writing an image that the next open() removes.
 */
void
vr_qemu_child_setup(gpointer user_data)
{
    pid_t parent = GPOINTER_TO_INT(user_data);

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    /* The parent died before prctl(): nobody would kill us. */
    if (getppid() != parent)
        _exit(127);
}

char *
vr_qemu_one_line(const char *text)
{
    g_autofree char *copy = g_strstrip(g_strdup(text != NULL ? text : ""));
    size_t len = strlen(copy);
    const char *start = len > VR_QEMU_STDERR_MAX ? copy + len - VR_QEMU_STDERR_MAX : copy;
    g_auto(GStrv) lines = g_strsplit(start, "\n", -1);
    g_autofree char *joined = g_strjoinv("; ", lines);

    return g_strdup(joined[0] != '\0' ? joined : "no message");
}

char *
vr_qemu_nbd_stderr(VrQemuNbd *nbd)
{
    g_autoptr(GString) text = g_string_new(NULL);
    char buf[4096];

    if (nbd->stderr_fd < 0)
        return g_strdup("no message");
    /* Non-blocking: a server that still runs has not closed it. */
    g_unix_set_fd_nonblocking(nbd->stderr_fd, TRUE, NULL);
    for (;;) {
        ssize_t n = read(nbd->stderr_fd, buf, sizeof(buf));

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        g_string_append_len(text, buf, n);
        if (text->len > 4 * VR_QEMU_STDERR_MAX)
            g_string_erase(text, 0, text->len - VR_QEMU_STDERR_MAX);
    }
    return vr_qemu_one_line(text->str);
}

/* Wait until qemu-nbd exits, at most @timeout µs: its wait status, or -1 on timeout. */
static int
vr_qemu_nbd_wait(VrQemuNbd *nbd, gint64 timeout)
{
    gint64 deadline = g_get_monotonic_time() + timeout;
    gulong delay = 1000;
    int status;

    for (;;) {
        pid_t got = waitpid(nbd->pid, &status, WNOHANG);

        if (got == nbd->pid) {
            nbd->pid = 0;
            return status;
        }
        if (got < 0 && errno == ECHILD) {
            /* Reaped elsewhere (no GLib child watch waits on it): its status is lost. */
            g_debug("qemu-nbd %d was reaped elsewhere", (int)nbd->pid);
            nbd->pid = 0;
            return 0;
        }
        if (g_get_monotonic_time() >= deadline)
            return -1;
        g_usleep(delay);
        delay = MIN(delay * 2, 20000);
    }
}

bool
vr_qemu_nbd_stop(VrQemuNbd *nbd, const char *name, int signum, gint64 timeout, GError **error)
{
    pid_t pid = nbd->pid;
    bool ok = true;
    int status;

    if (pid == 0)
        return true;
    kill(pid, signum);
    status = vr_qemu_nbd_wait(nbd, timeout);
    if (status == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        nbd->pid = 0;
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "qemu-nbd of '%s' did not exit within %d s of signal %d", name,
                    (int)(timeout / G_USEC_PER_SEC), signum);
        ok = false;
    } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        g_autofree char *line = vr_qemu_nbd_stderr(nbd);

        if (WIFEXITED(status)) {
            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                        "qemu-nbd of '%s' exited with status %d: %s", name, WEXITSTATUS(status),
                        line);
        } else {
            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                        "qemu-nbd of '%s' died of signal %d: %s", name, WTERMSIG(status), line);
        }
        ok = false;
    }
    if (nbd->stderr_fd >= 0) {
        close(nbd->stderr_fd);
        nbd->stderr_fd = -1;
    }
    return ok;
}

/* O_DIRECT works on the image's file system (not on tmpfs, for one). */
static bool
vr_qemu_direct_io_ok(const char *image)
{
    int fd = open(image, O_RDONLY | O_DIRECT | O_CLOEXEC);

    if (fd < 0) {
        g_debug("no O_DIRECT for '%s' (%s): qemu-nbd uses the page cache", image,
                g_strerror(errno));
        return false;
    }
    close(fd);
    return true;
}

/*
 * Run qemu-nbd with @argv and wait at most @timeout µs until it writes its pid to @pid_file
 * (it does so only once it listens and serves). @verb and @name make the error messages.
 */
static bool
vr_qemu_nbd_spawn(VrQemuNbd *nbd, const char *const *argv, const char *verb, const char *name,
                  const char *pid_file, gint64 timeout, GError **error)
{
    g_autoptr(GError) local = NULL;
    gint64 deadline;
    gulong delay = 1000;

    if (!g_spawn_async_with_pipes_and_fds(
            NULL, argv, NULL,
            G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL |
                G_SPAWN_STDOUT_TO_DEV_NULL,
            vr_qemu_child_setup, GINT_TO_POINTER(getpid()), -1, -1, -1, NULL, NULL, 0, &nbd->pid,
            NULL, NULL, &nbd->stderr_fd, &local)) {
        g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                    "cannot run qemu-nbd to %s '%s': %s", verb, name, local->message);
        return false;
    }
    deadline = g_get_monotonic_time() + timeout;
    for (;;) {
        g_autofree char *text = NULL;
        guint64 pid;
        int status;

        if (g_file_get_contents(pid_file, &text, NULL, NULL) &&
            g_ascii_string_to_unsigned(g_strstrip(text), 10, 1, G_MAXINT, &pid, NULL) &&
            (GPid)pid == nbd->pid)
            return true;
        if (waitpid(nbd->pid, &status, WNOHANG) == nbd->pid) {
            g_autofree char *line = vr_qemu_nbd_stderr(nbd);

            nbd->pid = 0;
            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                        "qemu-nbd exited before exporting '%s': %s", name, line);
            return false;
        }
        if (g_get_monotonic_time() >= deadline) {
            g_autofree char *line = vr_qemu_nbd_stderr(nbd);

            g_set_error(error, VR_REPLICA_STORE_ERROR, VR_REPLICA_STORE_ERROR_FAILED,
                        "qemu-nbd did not export '%s' within %d s: %s", name,
                        (int)(timeout / G_USEC_PER_SEC), line);
            return false;
        }
        g_usleep(delay);
        delay = MIN(delay * 2, 20000);
    }
}

bool
vr_qemu_nbd_start(VrQemuNbd *nbd, const char *image, const char *name, const char *socket,
                  const char *pid_file, bool read_only, gint64 timeout, GError **error)
{
    bool direct = vr_qemu_direct_io_ok(image);
    g_autofree char *socket_arg = g_strdup_printf("--socket=%s", socket);
    g_autofree char *pid_arg = g_strdup_printf("--pid-file=%s", pid_file);
    g_autoptr(GPtrArray) argv = g_ptr_array_new();

    /* cache=none: a writable export (an apply) writes an image read again only by a
     * failover, a read-only one (a hash list) makes one pass over a published image that
     * nothing reads soon after; neither fills the page cache, and the flush before
     * publishing has little left to do (docs/replica-store.md, Hash lists, has figures). */
    g_ptr_array_add(argv, "qemu-nbd");
    if (read_only) {
        g_ptr_array_add(argv, "--read-only");
        g_ptr_array_add(argv, "--format=qcow2");
    }
    g_ptr_array_add(argv, socket_arg);
    g_ptr_array_add(argv, pid_arg);
    if (!read_only)
        g_ptr_array_add(argv, "--format=qcow2");
    g_ptr_array_add(argv, direct ? "--cache=none" : "--cache=writeback");
    g_ptr_array_add(argv, direct ? "--aio=native" : "--aio=threads");
    if (!read_only)
        g_ptr_array_add(argv, "--discard=unmap");
    g_ptr_array_add(argv, "--shared=1");
    g_ptr_array_add(argv, (gpointer)image);
    g_ptr_array_add(argv, NULL);

    return vr_qemu_nbd_spawn(nbd, (const char *const *)argv->pdata, read_only ? "read" : "export",
                             name, pid_file, timeout, error);
}

/* A file name as a value of --image-opts: its commas doubled. (transfer full) */
static char *
vr_qemu_opts_escape(const char *value)
{
    g_auto(GStrv) parts = g_strsplit(value, ",", -1);

    return g_strjoinv(",,", parts);
}

bool
vr_qemu_nbd_start_shared(VrQemuNbd *nbd, const char *image, const char *export, const char *bitmap,
                         const char *socket, const char *pid_file, gint64 timeout, GError **error)
{
    g_autofree char *file = vr_qemu_opts_escape(image);
    /* force-share=on: no lock taken (it needs a read-only node, which --read-only makes). */
    g_autofree char *opts =
        g_strdup_printf("driver=qcow2,force-share=on,file.driver=file,file.filename=%s", file);
    g_autofree char *socket_arg = g_strdup_printf("--socket=%s", socket);
    g_autofree char *pid_arg = g_strdup_printf("--pid-file=%s", pid_file);
    g_autofree char *export_arg = g_strdup_printf("--export-name=%s", export);
    g_autofree char *bitmap_arg = g_strdup_printf("--bitmap=%s", bitmap);
    const char *argv[] = { "qemu-nbd", "--read-only", "--image-opts", socket_arg, pid_arg,
                           export_arg, bitmap_arg,    "--shared=1",   opts,       NULL };

    return vr_qemu_nbd_spawn(nbd, argv, "read", image, pid_file, timeout, error);
}

/* Each chunk of a read: libnbd has put its data (or zeroes, for a hole) in the buffer; a
 * chunk that carries an error fails the read with it. */
static int
vr_nbd_read_chunk(void *user_data, const void *subbuf, size_t count, uint64_t offset,
                  unsigned status, int *error)
{
    return status == LIBNBD_READ_ERROR ? -1 : 0;
}

int64_t
vr_nbd_aio_pread(struct nbd_handle *nbd, void *buf, size_t len, uint64_t offset)
{
    return nbd_aio_pread_structured(
        nbd, buf, len, offset, (nbd_chunk_callback){ .callback = vr_nbd_read_chunk },
        NBD_NULL_COMPLETION, nbd_can_df(nbd) == 1 ? LIBNBD_CMD_FLAG_DF : 0);
}
