#!/usr/bin/env bash
# Run a libFuzzer binary for a bounded number of iterations, as a meson test.
#
# Usage: run-libfuzzer.sh FUZZER RUNS WORKDIR CORPUS
#
# libFuzzer adds the inputs it finds to its FIRST corpus directory, so that is a fresh
# WORKDIR/corpus and the source CORPUS is only read. A crash, leak or timeout makes libFuzzer
# exit non-zero, which fails the test; the input is left as WORKDIR/crash-* (or leak-*,
# timeout-*) and reproduces with: FUZZER WORKDIR/crash-...
set -euo pipefail

if (($# != 4)); then
    echo "usage: $0 FUZZER RUNS WORKDIR CORPUS" >&2
    exit 2
fi
fuzzer=$1 runs=$2 workdir=$3 corpus=$4

rm -rf "$workdir"
mkdir -p "$workdir/corpus"

# Halt on the first UBSan report, with a stack; ASan's leak check stays on.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

# libFuzzer's own exit codes for a crash (77) and a timeout (70) would read as "skipped" and
# as a plain failure to meson: make every finding exit 1.
exec "$fuzzer" -runs="$runs" -seed=1 -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -error_exitcode=1 -timeout_exitcode=1 -print_final_stats=1 -artifact_prefix="$workdir/" \
    "$workdir/corpus" "$corpus"
