#!/usr/bin/env bash
# qemu-blkdebug.sh: run qemu-nbd or qemu-img with QEMU's blkdebug driver beneath one image,
# for the EIO tests of the replica store (test-replica-eio.c).
#
#   qemu-blkdebug.sh REAL-TOOL ARGS...
#
# The test puts a two-line `qemu-nbd` and `qemu-img` first in PATH that exec this script
# with the path of the real binary. Without VR_TEST_BLKDEBUG_IMAGE, or for an invocation
# that does not name that image, the real tool runs with ARGS unchanged. Otherwise the
# image argument (the last one) becomes
#
#   json:{"driver":"qcow2","file":{"driver":"blkdebug",RULES,
#         "image":{"driver":"file","filename":"IMAGE"}}}
#
# and the format option goes (the json: names the driver): qemu-nbd's `--format=qcow2`,
# qemu-img's `-f qcow2`. Only `qemu-nbd` (every export: the store's applies and hash lists)
# and `qemu-img commit` (retention) are rewritten; create, resize, info, compare and check
# run as they are. The image's backing file is found through its header as without blkdebug,
# so an overlay reads its chain; only the image's own file goes through blkdebug.
#
#   VR_TEST_BLKDEBUG_IMAGE  basename of the image, e.g. rp-3.qcow2
#   VR_TEST_BLKDEBUG_RULES  the blkdebug members to add, JSON without the braces, e.g.
#                           "inject-error":[{"event":"write_aio","iotype":"write","errno":5}]
#   VR_TEST_BLKDEBUG_LOG    optional: each rewrite appends "TOOL IMAGE" to this file, so the
#                           test knows that the injection was in place
#
# The script execs the real tool: the pid, the parent-death signal and the stderr pipe are
# the caller's, and /proc/PID/cmdline starts with the real binary (the store finds its
# qemu-nbd by that).
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

real=$1
shift
tool=${real##*/}
image=${VR_TEST_BLKDEBUG_IMAGE:-}

if [ -z "$image" ] || [ $# -eq 0 ]; then
    exec "$real" "$@"
fi
args=("$@")
last=${args[$#-1]}
if [ "${last##*/}" != "$image" ]; then
    exec "$real" "$@"
fi
case "$tool" in
qemu-nbd) ;;
qemu-img) [ "${args[0]}" = commit ] || exec "$real" "$@" ;;
*) exec "$real" "$@" ;;
esac

# A JSON string of the path: backslashes and double quotes escaped.
escaped=${last//\\/\\\\}
escaped=${escaped//\"/\\\"}
rules=${VR_TEST_BLKDEBUG_RULES:-}
if [ -z "$rules" ]; then
    echo "qemu-blkdebug.sh: VR_TEST_BLKDEBUG_IMAGE without VR_TEST_BLKDEBUG_RULES" >&2
    exit 2
fi
json="json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"blkdebug\",$rules"
json+=",\"image\":{\"driver\":\"file\",\"filename\":\"$escaped\"}}}"

out=()
skip=0
for ((i = 0; i < $# - 1; i++)); do
    arg=${args[$i]}
    if [ "$skip" = 1 ]; then
        skip=0
        continue
    fi
    case "$tool:$arg" in
    qemu-nbd:--format=* | qemu-img:--format=*) continue ;;
    qemu-nbd:--format | qemu-nbd:-f | qemu-img:-f | qemu-img:--format)
        skip=1
        continue
        ;;
    esac
    out+=("$arg")
done
out+=("$json")

if [ -n "${VR_TEST_BLKDEBUG_LOG:-}" ]; then
    echo "$tool $image" >>"$VR_TEST_BLKDEBUG_LOG"
fi
exec "$real" "${out[@]}"
