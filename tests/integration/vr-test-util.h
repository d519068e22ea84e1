/*
 * vr-test-util.h: what the integration tests share: a scratch directory, QEMU processes
 * that die with the test, and qemu-img.
 *
 * SPDX-License-Identifier: LGPL-2.1-or-later
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <glib.h>

#include <libvirt/libvirt.h>

#include "vr-qmp-client.h"

G_BEGIN_DECLS

/*
 * The start of the main() of a test of the daemon's parts: g_test_init(), VR_FAILPOINT unset
 * (no failpoint from the caller's environment), libvirt's errors not printed (the tests read
 * them from the GError or from virGetLastErrorMessage()).
 */
void vr_test_init(int *argc, char ***argv);

/*
 * The end of the main() of a test that made the test PKI with vr_test_make_pki(): g_test_run(),
 * then free @pki and @skip_why (either may be NULL). Its exit status.
 */
int vr_test_run_pki(char *pki, char *skip_why);

/* A scratch directory for this test process, under $VR_TEST_TMPDIR when the wrapper set it. */
const char *vr_test_tmpdir(void);

/* A path in the scratch directory. (transfer full) */
char *vr_test_path(const char *name);

/* Prefix for libvirt object names, so the wrapper can remove leftovers: "vrtest-<pid>". */
const char *vr_test_prefix(void);

/* Skip the current test (and return true) when @program is not on PATH. */
bool vr_test_skip_without(const char *program);

/* "kvm" when /dev/kvm is usable and VR_TEST_ACCEL is not "tcg", else "tcg". */
const char *vr_test_accel(void);

typedef struct {
    GPid pid;
    char *qmp_path;
    bool reaped;
} VrTestProcess;

/*
 * Start @argv (NULL-terminated) with SIGKILL as its parent-death signal, then wait until
 * @qmp_path accepts connections (at most 20 s). Fails the test when it does not.
 */
VrTestProcess *vr_test_process_start(const char *const *argv, const char *qmp_path);

/*
 * qemu-system-x86_64 (q35, no guest OS, accelerator of vr_test_accel()) with QMP on
 * @qmp_path and one virtio-blk device per qcow2 image of @images (NULL-terminated): node
 * "disk<i>" (discard=unmap, as libvirt's discard='unmap'), device id "vd<a+i>". @paused
 * adds -S; otherwise the firmware runs and waits, finding nothing to boot.
 */
VrTestProcess *vr_test_qemu_start(const char *qmp_path, const char *const *images, bool paused);

/* Send @signum to the process. */
void vr_test_process_signal(VrTestProcess *proc, int signum);

/* SIGKILL (unless already reaped), reap, free. NULL-safe. */
void vr_test_process_free(VrTestProcess *proc);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VrTestProcess, vr_test_process_free)

/* Run a command line to completion; fail the test if it fails. Returns its stdout. */
char *vr_test_run(const char *const *argv);

/* Running processes named @program whose command line names @dir (zombies have none). */
guint vr_test_count_processes(const char *program, const char *dir);

/* Within 5 s no @program of @dir runs (a parent-death signal takes a moment). */
void vr_test_assert_no_process(const char *program, const char *dir);

/*
 * A replica test's directories for fixture @serial: *@root, the storage root
 * "root<serial>" in the scratch directory, mode @root_mode (chmod: whatever the umask);
 * *@work, "work<serial>" (mode 0755) for what must stay outside it (streams, images, a
 * state database). Fails the test when they cannot be made. (transfer full: both)
 */
void vr_test_dirs(guint serial, mode_t root_mode, char **root, char **work);

/* The names in the directory @path, sorted, separated by single spaces. (transfer full) */
char *vr_test_list_dir(const char *path);

/* qemu-img create -f qcow2 @path @size. */
void vr_test_qcow2_create(const char *path, const char *size);

/* The dirty byte count of bitmap @name on @node; fails the test when it is missing. */
uint64_t vr_test_bitmap_count(VrQmpClient *client, const char *node, const char *name);

/*
 * A guest write: HMP "qemu-io -d @qdev" running @io (e.g. "write -P 0xab 1M 64k") on a
 * device's BlockBackend (research/qemu-bitmaps.md §5.3). HMP qemu-io reports its own
 * failures on QEMU's stdout only, so check the effect, not this call.
 */
void vr_test_hmp_qemu_io(VrQmpClient *client, const char *qdev, const char *io);

/*
 * qemu:///system with libvirt's event loop running (vr_qmp_libvirt_event_loop_start()), or
 * NULL after g_test_skip() with the reason: not root, or libvirtd not reachable.
 */
virConnectPtr vr_test_libvirt_connect(void);

/*
 * Run tests/integration/make-pki.sh (the test PKI made with certtool) into the scratch
 * directory: its path (transfer full), or NULL with the reason in @skip_why when certtool
 * is missing. Fails the test on any other failure.
 */
char *vr_test_make_pki(char **skip_why);

/*
 * The end of a libvirt fixture, after its client was closed: run out the deliveries still
 * queued in @context and pop it, destroy and undefine @domain, close @conn. Each may be
 * NULL; each is cleared.
 */
void vr_test_libvirt_teardown(GMainContext **context, virDomainPtr *domain, virConnectPtr *conn);

/*
 * Define (never start) domain @name in @conn: type 'qemu' (TCG: it starts where there is no
 * KVM too), 64 MiB, q35, no OS, the qcow2 image @vda as its virtio disk vda, then the
 * device XML @devices (NULL: none), no balloon. Fails the test when libvirt refuses it.
 * (transfer full)
 */
virDomainPtr vr_test_domain_define(virConnectPtr conn, const char *name, const char *vda,
                                   const char *devices);

/*
 * Destroy (when running) and undefine, NVRAM included, each domain named in @names that
 * @conn has. False when an undefine failed (all the others were still tried).
 */
bool vr_test_domains_undefine(virConnectPtr conn, GPtrArray *names);

/* Connect a client over a unix QMP socket; fails the test on error. (transfer full) */
VrQmpClient *vr_test_connect_unix(const char *path);

G_END_DECLS
