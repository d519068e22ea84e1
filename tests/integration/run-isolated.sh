#!/usr/bin/env bash
# Runs one integration test binary in a scratch directory of its own, and removes whatever
# the test leaves behind even when it dies on an assertion: processes started from the
# scratch directory, libvirt domains and networks named with the test's prefix, and the
# directory.
#
#   run-isolated.sh [--libvirt] TEST-BINARY [ARGS...]
#
# $VR_TEST_WRAPPER, when set, is put in front of TEST-BINARY (e.g. valgrind).
#
# With --libvirt, libvirtd and virtlogd are started when they are not running, and stopped
# again at the end when this script started them.
set -u

need_libvirt=0
if [ "${1:-}" = "--libvirt" ]; then
    need_libvirt=1
    shift
fi

scratch=$(mktemp -d "${TMPDIR:-/tmp}/vrtest.XXXXXX")
chmod 755 "$scratch"
export VR_TEST_TMPDIR="$scratch"
export VR_TEST_PREFIX="vrtest-$$"
started=()

cleanup() {
    if [ "$need_libvirt" = 1 ] && command -v virsh >/dev/null 2>&1; then
        for dom in $(virsh -q -c qemu:///system list --all --name 2>/dev/null | grep "^$VR_TEST_PREFIX" || true); do
            virsh -q -c qemu:///system destroy "$dom" >/dev/null 2>&1 || true
            virsh -q -c qemu:///system undefine "$dom" --checkpoints-metadata >/dev/null 2>&1 || true
        done
        for net in $(virsh -q -c qemu:///system net-list --all --name 2>/dev/null | grep "^$VR_TEST_PREFIX" || true); do
            virsh -q -c qemu:///system net-destroy "$net" >/dev/null 2>&1 || true
            virsh -q -c qemu:///system net-undefine "$net" >/dev/null 2>&1 || true
        done
    fi
    pkill -KILL -f -- "$scratch" >/dev/null 2>&1 || true
    for pid in "${started[@]}"; do
        kill "$pid" >/dev/null 2>&1 || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    done
    [ -n "${VR_TEST_KEEP:-}" ] || rm -rf "$scratch"
}
trap cleanup EXIT
# meson stops a test that runs over its timeout with SIGTERM: stop the child, then clean up.
child=
trap '[ -n "$child" ] && kill -KILL "$child" 2>/dev/null; exit 143' TERM INT

# Starts daemon $1 (with -d) unless running; records its pid to stop it at the end.
ensure_daemon() {
    local name=$1
    pgrep -x "$name" >/dev/null 2>&1 && return 0
    command -v "$name" >/dev/null 2>&1 || return 0
    exec 9>/run/vrtest-"$name".lock
    flock 9
    if ! pgrep -x "$name" >/dev/null 2>&1; then
        "$name" -d
        for _ in $(seq 100); do pgrep -x "$name" >/dev/null 2>&1 && break; sleep 0.1; done
        started+=("$(pgrep -x "$name" | head -n 1)")
    fi
    flock -u 9
}

if [ "$need_libvirt" = 1 ] && [ "$(id -u)" = 0 ]; then
    "$(dirname "$0")/../setup/kvm-device.sh"
    ensure_daemon virtlogd
    ensure_daemon libvirtd
    for _ in $(seq 100); do
        virsh -q -c qemu:///system version >/dev/null 2>&1 && break
        sleep 0.1
    done
fi

# VR_TEST_WRAPPER (meson test --setup valgrind) goes in front of the binary only. It is a
# command line: split on spaces on purpose.
# shellcheck disable=SC2086
${VR_TEST_WRAPPER:-} "$@" &
child=$!
wait "$child"
status=$?
exit $status
