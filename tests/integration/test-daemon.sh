#!/usr/bin/env bash
# virt-replicad as a process: --check-config, the local API on its unix socket, the replica
# role receiving a real cycle over mutual TLS into a recovery point, the statistics and
# /metrics that follow from it, a second daemon refused on the same socket, SIGTERM, and a
# restart that keeps the state.
#
#   test-daemon.sh VR-TRANSFER VIRT-REPLICAD     (through run-isolated.sh; TAP on stdout)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
. "$srcdir/lib-tap.sh"

vt=$1
daemon_bin=$2
tests=17

tap_work_dir vrdaemon
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "$work_own" ] && rm -rf "$work_own"
}
trap cleanup EXIT

pki=$work/pki
tap_make_pki "$pki"
command -v qemu-img >/dev/null && command -v qemu-nbd >/dev/null ||
    skip_all "qemu-img and qemu-nbd are needed (qemu-utils)"

sock=$work/api.sock
state=$work/state
storage=$work/storage
mkdir -p "$storage"
# A free port on loopback for the replica receiver.
tap_free_port port || exit 1

cat >"$work/replica.conf" <<EOF
[daemon]
state-dir = $state
socket = $sock
log-level = debug
monitoring-interval = 3600

[certificates]
ca = $pki/ca.pem
cert = $pki/server-ok.pem
key = $pki/server-ok-key.pem
crl = $pki/crl.pem

[replica]
enabled = true
listen = address:127.0.0.1
port = $port
server-name = replica.example
allow-any = true
default-storage = $storage
EOF

# api METHOD PATH: the status code on the first line, then the body (a POST sends a hook's
# notification).
api() {
    if [ "$1" = POST ]; then
        tap_api "$sock" "$1" "$2" '{"domain": "vm1", "operation": "started", "sub_operation": "begin"}'
    else
        tap_api "$sock" "$1" "$2"
    fi
}
# json EXPR: evaluate a Python expression over the JSON body in $body (as `j`).
json() { python3 -c "import json,sys; j=json.loads(sys.stdin.read()); print($1)" <<<"$body"; }

start_daemon() {
    "$daemon_bin" --config "$work/replica.conf" >"$work/daemon.out" 2>"$work/daemon.err" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    for _ in $(seq 100); do
        [ -S "$sock" ] && api GET /v1/daemon >/dev/null 2>&1 && return 0
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
    done
    diag "the daemon did not start:" "$(cat "$work/daemon.err")"
    return 1
}

echo "1..$tests"

# --- 1-2: --check-config ---------------------------------------------------------------------
sed 's/^port = .*/port = 70000/; s/^allow-any = true/allow-any = yes please/' \
    "$work/replica.conf" >"$work/bad.conf"
"$daemon_bin" --check-config --config "$work/bad.conf" >"$work/check.out" 2>"$work/check.err"
check_status=$?
diag "$(cat "$work/check.err")"
check "--check-config names each bad key and fails" \
    test "$check_status" = 1 -a "$(grep -c "\[replica\] port: '70000'\|\[replica\] allow-any" "$work/check.err")" = 2
"$daemon_bin" --check-config --config "$work/replica.conf" >"$work/check.out" 2>"$work/check.err"
check "--check-config accepts the good configuration (certificates and storage checked)" \
    test $? = 0

# --- 3-6: the API --------------------------------------------------------------------------
if ! start_daemon; then
    for i in $(seq 3 $tests); do tap_fail "the daemon runs (test $i)"; done
    exit 1
fi
check "the API socket is mode 0600 (root only)" test "$(stat -c %a "$sock")" = 600
check "the state directory is mode 0700 and holds state.db" \
    test "$(stat -c %a "$state")" = 700 -a -f "$state/state.db"
reply=$(api GET /v1/daemon)
body=$(tail -n +2 <<<"$reply")
diag "$body"
check "GET /v1/daemon: 200, the replica role on 127.0.0.1:$port" \
    test "$(head -n 1 <<<"$reply")" = 200 -a "$(json 'j["replica"]["port"]')" = "$port" \
    -a "$(json 'j["roles"]["replica"]')" = True
reply=$(api GET /v1/relationships/vm9)
body=$(tail -n +2 <<<"$reply")
check "an unknown domain: 404 with error code unknown-domain" \
    test "$(head -n 1 <<<"$reply")" = 404 -a "$(json 'j["error"]["code"]')" = unknown-domain

# --- 7-11: a cycle through the replica role --------------------------------------------------
"$vt" gen --out "$work/c1.stream" --size $((4 * 1024 * 1024)) --disk-size $((16 * 1024 * 1024)) \
    --relationship r1 --disk vda --epoch 1 --base 0 --target 1 >/dev/null 2>"$work/gen.err" ||
    diag "gen: $(cat "$work/gen.err")"
timeout 60 "$vt" send --cert "$pki/client-ok.pem" --key "$pki/client-ok-key.pem" \
    --ca "$pki/ca.pem" --crl "$pki/crl.pem" --server-name replica.example \
    --connect 127.0.0.1 --port "$port" "$work/c1.stream" >"$work/send.out" 2>"$work/send.err"
send_status=$?
diag "$(cat "$work/send.out" "$work/send.err")"
check "a primary's cycle 1 is received over mutual TLS and published" \
    test "$send_status" = 0 -a -f "$storage/r1/vda/rp-1.qcow2"
reply=$(api GET /v1/relationships)
body=$(tail -n +2 <<<"$reply")
diag "$body"
check "the relationship is listed: role replica, primary primary1, health Normal" \
    test "$(json 'j["relationships"][0]["role"]')" = replica \
    -a "$(json 'j["relationships"][0]["peer"]')" = primary1 \
    -a "$(json 'j["relationships"][0]["health"]')" = Normal
check "its statistics: 1 cycle, 4 MiB, last cycle 1" \
    test "$(json 'j["relationships"][0]["stats"]["cycles_ok"]')" = 1 \
    -a "$(json 'j["relationships"][0]["stats"]["max_bytes"]')" = $((4 * 1024 * 1024)) \
    -a "$(json 'j["relationships"][0]["last_cycle"]["seq"]')" = 1
reply=$(api GET /v1/relationships/r1/recovery-points)
body=$(tail -n +2 <<<"$reply")
check "its recovery points: vda has cycle 1 with a 64-digit chain" \
    test "$(json 'j["recovery_points"]["vda"][0]["cycle"]')" = 1 \
    -a "$(json 'len(j["recovery_points"]["vda"][0]["chain"])')" = 64
metrics=$(api GET /metrics)
diag "$(grep 'relationship="r1"' <<<"$metrics" | head -n 4)"
check "/metrics: virt_replica_cycles_ok 1 and health Normal for r1" \
    grep -q '^virt_replica_cycles_ok{relationship="r1",domain="r1",role="replica"} 1$' <<<"$metrics"

# --- 12-13: the hook endpoint and a second daemon ---------------------------------------------
reply=$(api POST /v1/hooks/qemu)
check "POST /v1/hooks/qemu: 202" test "$(head -n 1 <<<"$reply")" = 202
"$daemon_bin" --config "$work/replica.conf" >/dev/null 2>"$work/second.err"
second=$?
diag "$(cat "$work/second.err")"
check "a second daemon on the same socket exits 1 saying another one answers" \
    test "$second" = 1 -a -n "$(grep 'another virt-replicad answers' "$work/second.err")"

# --- 14-17: SIGTERM and restart ---------------------------------------------------------------
kill -TERM "$daemon_pid"
for _ in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
wait "$daemon_pid"
term_status=$?
check "SIGTERM: exit status 0 within 5 s" test "$term_status" = 0
check "the socket is removed, the state kept" test ! -e "$sock" -a -f "$state/state.db"
if start_daemon; then
    reply=$(api GET /v1/relationships)
    body=$(tail -n +2 <<<"$reply")
    check "after a restart the relationship and its statistics are still there" \
        test "$(json 'j["relationships"][0]["stats"]["cycles_ok"]')" = 1
    timeout 60 "$vt" send --cert "$pki/client-ok.pem" --key "$pki/client-ok-key.pem" \
        --ca "$pki/ca.pem" --crl "$pki/crl.pem" --server-name replica.example \
        --connect 127.0.0.1 --port "$port" "$work/c1.stream" >"$work/send2.out" 2>&1
    diag "$(cat "$work/send2.out")"
    check "the same cycle again after the restart is recognized as published (no second point)" \
        grep -q '"already_committed":true' "$work/send2.out"
    kill -TERM "$daemon_pid"
    wait "$daemon_pid"
else
    tap_fail "the daemon restarts"
    tap_fail "the daemon restarts (replay)"
fi
[ "$failures" = 0 ]
