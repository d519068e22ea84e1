#!/usr/bin/env bash
# The long kill -9 loop over the replica store (the suite runs a short one: test-crash-loop
# with 20 iterations). Each iteration applies one cycle and runs retention in a child that
# is killed with SIGKILL at a random moment, then checks that the store holds complete
# recovery points only, each equal to the primary at its cycle (O1), and that one clean
# cycle makes it equal to the primary (O2): tests/integration/test-crash-loop.c.
#
#   tests/crash-loop.sh [--seed N] [--iterations N] [--keep N] [BUILD_DIR]
#
# Defaults: a random seed (printed: pass it again to replay the same cycles and delays),
# 1000 iterations, keep 2. About 0.4 s per iteration on 2 cores. Build first (./run test).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
iterations=1000
keep=2
build=$root/build
while [ $# -gt 0 ]; do
    case $1 in
        --seed) seed=$2; shift 2 ;;
        --iterations) iterations=$2; shift 2 ;;
        --keep) keep=$2; shift 2 ;;
        -*) echo "crash-loop: unknown option $1" >&2; exit 2 ;;
        *) build=$1; shift ;;
    esac
done
bin=$build/tests/integration/test-crash-loop
[ -x "$bin" ] || { echo "crash-loop: build first (./run test, or ninja -C $build)" >&2; exit 1; }

echo "crash-loop: seed $seed, $iterations iterations, keep $keep"
rc=0
"$root/tests/integration/run-isolated.sh" "$bin" --seed "$seed" --iterations "$iterations" \
    --keep "$keep" --verbose || rc=$?
if [ "$rc" -ne 0 ]; then
    echo "crash-loop: FAILED (replay: tests/crash-loop.sh --seed $seed --iterations $iterations --keep $keep)" >&2
fi
exit "$rc"
