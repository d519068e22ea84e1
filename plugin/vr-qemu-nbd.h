/*
 * vr-qemu-nbd.h: one qemu-nbd server, run by the replica (the store's applies, hash lists)
 * and by the primary (the final cycle of a shut-off domain, vr_qemu_nbd_start_shared())
 *
 * qemu-nbd exports a qcow2 image on a Unix socket, started with a parent-death signal
 * (it dies with the thread that started it), ready once it wrote its pid file, its stderr
 * kept for error messages, stopped with a signal (SIGKILL after a timeout) and reaped. The
 * socket and the pid file are the caller's to remove. Errors are VR_REPLICA_STORE_ERROR.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>

#include <glib.h>
#include <libnbd.h>

G_BEGIN_DECLS

typedef struct {
    GPid pid;      /* 0 when not running */
    int stderr_fd; /* its stderr, a pipe; -1 when none */
} VrQemuNbd;

#define VR_QEMU_NBD_INIT \
    {                    \
        0, -1            \
    }

/* The child setup of a qemu tool (g_spawn_*, user_data GINT_TO_POINTER(getpid())): a
 * parent-death signal, so that it dies with the thread that started it. */
void vr_qemu_child_setup(gpointer user_data);

/* A tool's stderr @text as one line (the end of it, when long), for an error message. */
char *vr_qemu_one_line(const char *text);

/*
 * Export @image (qcow2; @name stands for it in error messages) on @socket, writable or
 * @read_only, with O_DIRECT when its file system has it, and wait at most @timeout µs until
 * qemu-nbd writes its pid to @pid_file: it does so only once it listens and serves.
 */
bool vr_qemu_nbd_start(VrQemuNbd *nbd, const char *image, const char *name, const char *socket,
                       const char *pid_file, bool read_only, gint64 timeout, GError **error);

/*
 * Export the closed qcow2 @image read-only for the primary's final cycle of a shut-off
 * domain: under export name @export, with its persistent dirty bitmap @bitmap as meta
 * context "qemu:dirty-bitmap:@bitmap" (qemu-nbd -B), through the page cache. The image is
 * opened with force-share=on: qemu-nbd takes no lock at all, so a start of the domain meanwhile is
 * never refused ("Failed to get "write" lock"); what QEMU writes then can show in the reads,
 * and the caller must notice that (the image's change time) and throw them away. qemu-nbd 7.2
 * has no --force-share option: it goes through --image-opts.
 */
bool vr_qemu_nbd_start_shared(VrQemuNbd *nbd, const char *image, const char *export,
                              const char *bitmap, const char *socket, const char *pid_file,
                              gint64 timeout, GError **error);

/*
 * Stop qemu-nbd with @signum, at most @timeout µs (then SIGKILL), reap it and close its
 * stderr. False (@error may be NULL) when it did not exit in time or exited with a failure.
 * Nothing to do when it does not run.
 */
bool vr_qemu_nbd_stop(VrQemuNbd *nbd, const char *name, int signum, gint64 timeout, GError **error);

/* What qemu-nbd wrote to its stderr so far (the end of it), as one line. */
char *vr_qemu_nbd_stderr(VrQemuNbd *nbd);

/*
 * nbd_aio_pread() of @len bytes at @offset into @buf, as one data chunk (the DF flag) when
 * the server takes it: qemu-nbd 7.2 answers a read that fails inside a sparse structured
 * reply by dropping the connection, so without DF an I/O error arrives as "not connected";
 * with it the read fails with the server's errno (EIO) and the connection stays up.
 */
int64_t vr_nbd_aio_pread(struct nbd_handle *nbd, void *buf, size_t len, uint64_t offset);

G_END_DECLS
