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
