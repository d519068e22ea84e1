# lib-tap.sh: TAP helpers for the integration test scripts, sourced after `set -u`.
#
#   . lib-tap.sh          then: check WHAT COMMAND..., tap_ok, tap_fail, diag, skip_all,
#                         tap_work_dir PREFIX (sets $work, and $work_own when it made it)
#
# SPDX-License-Identifier: LGPL-2.1-or-later

n=0
failures=0

tap_ok() {
    n=$((n + 1))
    echo "ok $n - $1"
}
tap_fail() {
    n=$((n + 1))
    failures=$((failures + 1))
    echo "not ok $n - $1"
}
# check DESCRIPTION COMMAND...: one TAP line for whether COMMAND succeeds.
check() {
    local what=$1
    shift
    if "$@"; then tap_ok "$what"; else tap_fail "$what"; fi
}
diag() { printf '%s\n' "$@" | sed '/^$/d; s/^/# /'; }
skip_all() {
    echo "1..0 # SKIP $1"
    exit 0
}

# The scratch directory: run-isolated.sh's, or one of our own (removed by the caller).
tap_work_dir() {
    work_own=
    if [ -n "${VR_TEST_TMPDIR:-}" ]; then
        work=$VR_TEST_TMPDIR
    else
        work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
        work_own=$work
    fi
}

# tap_make_pki DIR: the test PKI (make-pki.sh) in DIR; skips the whole test when certtool
# is missing (make-pki.sh exits 77), fails it with the log otherwise.
tap_make_pki() {
    sh "$(dirname "${BASH_SOURCE[0]}")/make-pki.sh" "$1" >"$1.log" 2>&1
    case $? in
    0) ;;
    77) skip_all "no PKI: $(tail -n 1 "$1.log")" ;;
    *)
        cat "$1.log" >&2
        exit 1
        ;;
    esac
}

# tap_free_port: a TCP port free on 127.0.0.1 now.
tap_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# tap_api SOCKET METHOD PATH [BODY]: a request to a virt-replicad API socket (vr-api.py);
# the status on the first line, then the body.
tap_api() {
    python3 "$(dirname "${BASH_SOURCE[0]}")/vr-api.py" "$@"
}
