#!/usr/bin/env bash
# test-memory.sh: a 2 GiB upload keeps the receiver's and the sender's memory bounded.
#
#   test-memory.sh VR-TRANSFER
#
# Uploads a 16 MiB stream and then a 2 GiB one (incompressible DATA, so every record is sent
# whole) over loopback mutual TLS, each to a fresh receiver (vr-transfer serve), and compares
# peak resident memory (VmHWM): the receiver's, which it prints when SIGTERM stops it, and the
# sender's, from GNU time's "Maximum resident set size" (or, without /usr/bin/time, from
# /proc/PID/status polled while it runs). Both must stay under a fixed bound far below the
# stream size, and the 2 GiB peaks within a small margin of the 16 MiB ones: memory does not
# follow the stream's size. The receiver streams request bodies (never accumulates them) and
# the sender reads the file in small pieces.
#
# TAP on stdout. Skips when the scratch directory has less than 3 GiB free, or without
# certtool. Takes about 20 s here (2 cores): 10 s to generate the stream, 8 s to send it.
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

vt=${1:?usage: test-memory.sh VR-TRANSFER}
vt=$(readlink -f "$vt") # meson passes it relative to the build directory
srcdir=$(cd "$(dirname "$0")" && pwd)

MiB=$((1024 * 1024))
GiB=$((1024 * MiB))
small_size=$((16 * MiB))
big_size=$((2 * GiB))
# Peak resident memory in KiB, of either process: measured here at about 18 MiB for the
# receiver and 25 MiB for the sender (libraries, TLS, a few 4 MiB records in flight), for
# the small stream and the big one alike.
bound_kib=$((64 * 1024))
margin_kib=$((32 * 1024)) # the big upload's peak may exceed the small one's by this much

tests=8
# shellcheck source=lib-tap.sh
. "$srcdir/lib-tap.sh"

tap_work_dir vrmemory

serve_pid=
send_pid=
cleanup() {
    local pid
    for pid in $send_pid $serve_pid; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    rm -f "$work/small.stream" "$work/big.stream"
    [ -z "$work_own" ] || rm -rf "$work_own"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

free=$(df -B1 --output=avail "$work" | tail -n 1 | tr -d ' ')
if [ "$free" -lt $((3 * GiB)) ]; then
    skip_all "needs 3 GiB free in $work for a 2 GiB stream, has $((free / MiB)) MiB"
fi

pki=$work/pki
tap_make_pki "$pki"

time_v=
if /usr/bin/time -v -o /dev/null true 2>/dev/null; then
    time_v=/usr/bin/time
fi

# json_num LINE KEY: the number KEY has in the JSON object LINE.
json_num() { sed -n "s/.*\"$2\":\\([0-9][0-9]*\\).*/\\1/p" <<<"$1"; }

# upload NAME: a fresh receiver on 127.0.0.1, the stream $work/NAME.stream sent to it, the
# receiver stopped. Sets commit_bytes (its commit's data_bytes, or empty), serve_kib and
# send_kib (peaks), send_status.
upload() {
    local name=$1 port deadline hwm
    rm -f "$work/port"
    "$vt" serve --cert "$pki/server-ok.pem" --key "$pki/server-ok-key.pem" --ca "$pki/ca.pem" \
        --crl "$pki/crl.pem" --listen 127.0.0.1 --port-file "$work/port" \
        >"$work/$name.serve.out" 2>"$work/$name.serve.err" &
    serve_pid=$!
    for _ in $(seq 100); do
        [ -s "$work/port" ] && break
        kill -0 "$serve_pid" 2>/dev/null || break
        sleep 0.1
    done
    port=$(cat "$work/port" 2>/dev/null)
    if [ -z "$port" ]; then
        diag "the receiver did not start:" "$(cat "$work/$name.serve.err")"
        exit 1
    fi
    set -- "$vt" send --cert "$pki/client-ok.pem" --key "$pki/client-ok-key.pem" \
        --ca "$pki/ca.pem" --crl "$pki/crl.pem" --server-name replica.example \
        --connect 127.0.0.1 --port "$port" "$work/$name.stream"
    if [ -n "$time_v" ]; then
        # GNU time reports the peak of the largest process below it: vr-transfer's
        "$time_v" -v -o "$work/$name.time" timeout 120 "$@" \
            >"$work/$name.send.out" 2>"$work/$name.send.err"
        send_status=$?
        send_kib=$(sed -n 's/.*Maximum resident set size (kbytes): *\([0-9]*\).*/\1/p' \
            "$work/$name.time")
    else
        # VmHWM never decreases, and the sender does not grow once its body is out: the last
        # value read before it exits is its peak. (Not bash's read builtin: it seeks back
        # after each line, and /proc regenerates the file at every seek.)
        "$@" >"$work/$name.send.out" 2>"$work/$name.send.err" &
        send_pid=$!
        send_kib=
        deadline=$((SECONDS + 120))
        while [ "$SECONDS" -lt "$deadline" ]; do
            hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$send_pid/status" \
                2>/dev/null)
            [ -n "$hwm" ] || break # gone, or a zombie (its memory already released)
            send_kib=$hwm
            sleep 0.02
        done
        kill "$send_pid" 2>/dev/null # still running after 120 s
        wait "$send_pid"
        send_status=$?
        send_pid=
    fi
    kill -TERM "$serve_pid"
    wait "$serve_pid"
    serve_pid=
    commit_bytes=$(json_num "$(grep '"event":"commit"' "$work/$name.serve.out")" data_bytes)
    serve_kib=$(json_num "$(grep '"event":"exit"' "$work/$name.serve.out")" vmhwm_kib)
    diag "$name: $(cat "$work/$name.send.out" "$work/$name.send.err")" \
        "$name: receiver $(grep -v '"event":"listening"' "$work/$name.serve.out" | tr "\n" " ")" \
        "$name: peak resident memory: receiver ${serve_kib:-?} KiB, sender ${send_kib:-?} KiB"
}

# under KIB LIMIT: KIB is a number below LIMIT.
under() { [ -n "$1" ] && [ "$1" -lt "$2" ]; }
# near BIG SMALL: BIG is at most SMALL + margin_kib.
near() { [ -n "$1" ] && [ -n "$2" ] && [ "$1" -le $(($2 + margin_kib)) ]; }
# uploaded: the last upload succeeded and committed SIZE bytes of DATA.
uploaded() { [ "$send_status" = 0 ] && [ "$commit_bytes" = "$1" ]; }

for pair in small:$small_size big:$big_size; do
    "$vt" gen --out "$work/${pair%%:*}.stream" --size "${pair#*:}" --compressible 0 \
        --relationship "${pair%%:*}" >/dev/null || exit 1
done
[ -n "$time_v" ] || diag "/usr/bin/time not found: polling /proc/PID/status for the sender"

echo "1..$tests"

upload small
small_serve_kib=$serve_kib small_send_kib=$send_kib
check "a 16 MiB upload commits" uploaded "$small_size"

upload big
rm -f "$work/big.stream"
check "a 2 GiB upload commits" uploaded "$big_size"
check "16 MiB upload: the receiver's peak $small_serve_kib KiB < $bound_kib KiB" \
    under "$small_serve_kib" "$bound_kib"
check "2 GiB upload: the receiver's peak $serve_kib KiB < $bound_kib KiB" \
    under "$serve_kib" "$bound_kib"
check "the receiver's 2 GiB peak is within $margin_kib KiB of its 16 MiB one" \
    near "$serve_kib" "$small_serve_kib"
check "16 MiB upload: the sender's peak $small_send_kib KiB < $bound_kib KiB" \
    under "$small_send_kib" "$bound_kib"
check "2 GiB upload: the sender's peak $send_kib KiB < $bound_kib KiB" \
    under "$send_kib" "$bound_kib"
check "the sender's 2 GiB peak is within $margin_kib KiB of its 16 MiB one" \
    near "$send_kib" "$small_send_kib"

[ "$n" = "$tests" ] || {
    diag "ran $n tests, planned $tests"
    exit 1
}
[ "$failures" = 0 ]
