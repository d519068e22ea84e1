#!/usr/bin/env bash
# test-netns.sh: the transport across a real replication network, as separate processes.
#
#   test-netns.sh VR-TRANSFER
#
# Two network namespaces, the primary (vrp-PID) and the replica (vrr-PID), joined by two veth
# pairs: management (10.201.0.1 - 10.201.0.2) and replication (10.202.0.1 - 10.202.0.2). In the
# primary's namespace the replica's DNS name, replica.example, resolves to its MANAGEMENT
# address (ip-netns(8) bind-mounts /etc/netns/vrp-PID/hosts over /etc/hosts), as it would on a
# real primary. The receiver (vr-transfer serve) listens on the replica's replication
# interface only; the sender connects to the replica's replication address while TLS verifies
# the name, and binds its source to the primary's replication interface. The interface
# counters show which pair the payload crossed.
#
# TAP on stdout. Skips when not root or when network namespaces cannot be made. Everything
# is removed on exit: processes, namespaces (their veths go with them), /etc/netns entries.
# Namespaces, their processes and /etc/netns entries of an earlier run that was killed
# (run-isolated.sh answers meson's timeout with SIGKILL) are removed at start when that
# run's PID is gone.
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

vt=${1:?usage: test-netns.sh VR-TRANSFER}
vt=$(readlink -f "$vt") # meson passes it relative to the build directory
srcdir=$(cd "$(dirname "$0")" && pwd)

nsp=vrp-$$ # the primary
nsr=vrr-$$ # the replica
# veths: vr<p|r><m|r>-PID = <primary|replica> side of the <management|replication> pair
# (at most 12 bytes: IFNAMSIZ is 16)
p_mgmt=vrpm-$$ p_repl=vrpr-$$ r_mgmt=vrrm-$$ r_repl=vrrr-$$
p_mgmt_ip=10.201.0.1 r_mgmt_ip=10.201.0.2 p_repl_ip=10.202.0.1 r_repl_ip=10.202.0.2
MiB=$((1024 * 1024))
stream_size=$((64 * MiB))

tests=12
# shellcheck source=lib-tap.sh
. "$srcdir/lib-tap.sh"

[ "$(id -u)" = 0 ] || skip_all "needs root for network namespaces"
command -v ip >/dev/null 2>&1 || skip_all "ip(8) not found (package iproute2)"

tap_work_dir vrnetns

pids=() # background processes this script started
etc_netns_existed=
[ -d /etc/netns ] && etc_netns_existed=1
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    # anything still running in our namespaces was started by this script
    for pid in $(ip netns pids "$nsp" 2>/dev/null) $(ip netns pids "$nsr" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null
    done
    ip netns del "$nsp" 2>/dev/null
    ip netns del "$nsr" 2>/dev/null
    rm -rf "/etc/netns/$nsp" "/etc/netns/$nsr"
    [ -n "$etc_netns_existed" ] || rmdir /etc/netns 2>/dev/null
    [ -z "$work_own" ] || rm -rf "$work_own"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

# Leftovers of a killed run: vrp-PID / vrr-PID whose PID no longer exists.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}') $(ls /etc/netns 2>/dev/null); do
    case $ns in
    vrp-[0-9]* | vrr-[0-9]*)
        pid=${ns#vr?-}
        if [ "$pid" != $$ ] && ! kill -0 "$pid" 2>/dev/null; then
            for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p"; done
            ip netns del "$ns" 2>/dev/null
            rm -rf "/etc/netns/$ns"
        fi
        ;;
    esac
done

in_p() { ip netns exec "$nsp" "$@"; }
in_r() { ip netns exec "$nsr" "$@"; }

err=$(ip netns add "$nsp" 2>&1) || skip_all "ip netns add failed: $err"
ip netns add "$nsr" || exit 1

setup() {
    # no IPv6: its neighbour discovery would add noise to the interface counters
    for ns in "$nsp" "$nsr"; do
        ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
            net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1
    done
    ip link add "$p_mgmt" netns "$nsp" type veth peer name "$r_mgmt" netns "$nsr" &&
        ip link add "$p_repl" netns "$nsp" type veth peer name "$r_repl" netns "$nsr" &&
        in_p ip addr add "$p_mgmt_ip/24" dev "$p_mgmt" &&
        in_p ip addr add "$p_repl_ip/24" dev "$p_repl" &&
        in_r ip addr add "$r_mgmt_ip/24" dev "$r_mgmt" &&
        in_r ip addr add "$r_repl_ip/24" dev "$r_repl" &&
        for dev in lo "$p_mgmt" "$p_repl"; do in_p ip link set dev "$dev" up || return 1; done &&
        for dev in lo "$r_mgmt" "$r_repl"; do in_r ip link set dev "$dev" up || return 1; done &&
        mkdir -p "/etc/netns/$nsp" &&
        printf '127.0.0.1 localhost\n%s replica.example\n' "$r_mgmt_ip" >"/etc/netns/$nsp/hosts"
}
if ! err=$(setup 2>&1); then
    echo "1..0 # SKIP cannot set up the namespaces and veth pairs: $err"
    exit 0
fi

pki=$work/pki
tap_make_pki "$pki"

# Streams, one relationship each (the receiver keys its commits by relationship).
for rel in r2 r5; do
    "$vt" gen --out "$work/$rel.stream" --size "$stream_size" --compressible 0 \
        --relationship "$rel" >/dev/null || exit 1
done
file_size=$(stat -c %s "$work/r2.stream")

# json_num LINE KEY: the number KEY has in the JSON object LINE.
json_num() { sed -n "s/.*\"$2\":\\([0-9][0-9]*\\).*/\\1/p" <<<"$1"; }
json_str() { sed -n "s/.*\"$2\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$1"; }
tx_bytes() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/tx_bytes"; }
commits() { grep -c '"event":"commit"' "$work/serve.out"; }

# send ARGS... FILE: vr-transfer send from the primary with the client certificate; its JSON
# line in $work/send.out, its stderr in $work/send.err. ($port is set below.)
send() {
    ip netns exec "$nsp" timeout 60 "$vt" send --cert "$pki/client-ok.pem" \
        --key "$pki/client-ok-key.pem" --ca "$pki/ca.pem" --crl "$pki/crl.pem" --port "$port" \
        "$@" >"$work/send.out" 2>"$work/send.err"
}

echo "1..$tests"

# --- 1: the receiver listens on the replication interface only ---------------------------
ip netns exec "$nsr" "$vt" serve --cert "$pki/server-ok.pem" --key "$pki/server-ok-key.pem" \
    --ca "$pki/ca.pem" --crl "$pki/crl.pem" --listen "interface:$r_repl" --io-timeout 2 \
    >"$work/serve.out" 2>"$work/serve.err" &
serve_pid=$!
pids+=("$serve_pid")
for _ in $(seq 100); do
    grep -q '"event":"listening"' "$work/serve.out" && break
    kill -0 "$serve_pid" 2>/dev/null || break
    sleep 0.1
done
listening=$(grep '"event":"listening"' "$work/serve.out")
if [ -z "$listening" ]; then
    diag "the receiver did not start:" "$(cat "$work/serve.err")"
    exit 1
fi
port=$(json_num "$listening" port)
diag "$listening"
check "serve --listen interface:$r_repl listens on $r_repl_ip" \
    test "$(json_str "$listening" address)" = "$r_repl_ip"

# tcp_probe ADDRESS: connect from the primary to ADDRESS:$port; prints bash's error, if any.
tcp_probe() {
    ip netns exec "$nsp" timeout 5 bash -c "exec 3<>/dev/tcp/$1/$port" 2>&1
}
probe=$(tcp_probe "$r_mgmt_ip")
probe_status=$?
diag "connect $r_mgmt_ip:$port: status $probe_status $probe"
refused() { [ "$probe_status" != 0 ] && grep -qi refused <<<"$probe"; }
check "a connection to the management address $r_mgmt_ip:$port is refused" refused
probe=$(tcp_probe "$r_repl_ip")
probe_status=$?
diag "connect $r_repl_ip:$port: status $probe_status $probe"
check "a connection to the replication address $r_repl_ip:$port is accepted" \
    test "$probe_status" = 0

# --- 2: a transfer crosses the replication pair only --------------------------------------
repl_before=$(tx_bytes "$nsp" "$p_repl")
mgmt_before=$(tx_bytes "$nsp" "$p_mgmt")
send --server-name replica.example --connect "$r_repl_ip" --source "interface:$p_repl" \
    "$work/r2.stream"
send_status=$?
repl_grew=$(($(tx_bytes "$nsp" "$p_repl") - repl_before))
mgmt_grew=$(($(tx_bytes "$nsp" "$p_mgmt") - mgmt_before))
commit=$(grep '"event":"commit","relationship":"r2"' "$work/serve.out")
diag "$(cat "$work/send.out" "$work/send.err")" "$commit" \
    "tx bytes: $p_repl +$repl_grew, $p_mgmt +$mgmt_grew (stream file $file_size bytes)"
committed() { [ "$send_status" = 0 ] && [ "$(json_num "$commit" data_bytes)" = "$stream_size" ]; }
check "a transfer to replica.example at $r_repl_ip succeeds and commits $stream_size data bytes" \
    committed
check "the payload crossed the replication pair ($p_repl tx +$repl_grew >= $file_size)" \
    test "$repl_grew" -ge "$file_size"
check "the management pair carried less than 1 MiB ($p_mgmt tx +$mgmt_grew)" \
    test "$mgmt_grew" -lt "$MiB"

# --- 3: TLS verifies the name -------------------------------------------------------------
commits_before=$(commits)
send --server-name other.example --connect "$r_repl_ip" --source "interface:$p_repl" \
    --attempts 1 "$work/r5.stream"
send_status=$?
diag "$(cat "$work/send.out" "$work/send.err")"
name_refused() {
    [ "$send_status" != 0 ] && grep -q 'other\.example' "$work/send.err" &&
        [ "$(commits)" = "$commits_before" ]
}
check "--server-name other.example fails, naming other.example, with no commit" name_refused

# --- 4: without --connect the name resolves to the management address --------------------
resolved=$(ip netns exec "$nsp" getent hosts replica.example | awk '{print $1}')
diag "in $nsp: replica.example is $resolved"
check "replica.example resolves to $r_mgmt_ip in the primary's namespace" \
    test "$resolved" = "$r_mgmt_ip"
commits_before=$(commits)
mgmt_before=$(tx_bytes "$nsp" "$p_mgmt")
repl_before=$(tx_bytes "$nsp" "$p_repl")
send --server-name replica.example --attempts 1 "$work/r5.stream"
send_status=$?
mgmt_grew=$(($(tx_bytes "$nsp" "$p_mgmt") - mgmt_before))
repl_grew=$(($(tx_bytes "$nsp" "$p_repl") - repl_before))
diag "$(cat "$work/send.out" "$work/send.err")" \
    "tx bytes: $p_mgmt +$mgmt_grew, $p_repl +$repl_grew"
not_rerouted() {
    [ "$send_status" != 0 ] && grep -q "$r_mgmt_ip\|refused" "$work/send.err" &&
        [ "$(commits)" = "$commits_before" ] && [ "$mgmt_grew" -gt 0 ] &&
        [ "$repl_grew" -lt 4096 ]
}
check "without --connect it connects to $r_mgmt_ip (nothing listens there) and fails" \
    not_rerouted

# --- 5: a connection cut mid-transfer resumes ---------------------------------------------
# 64 MiB at 16 MiB/s: about 4 s. Once about 1.5 s of it went out (16 MiB and the bucket's
# 4 MiB burst), the replication pair goes down for 3 s: longer than the I/O timeout (2 s).
# Not send(): "&" on a function would make $! a subshell, not the sender.
repl_before=$(tx_bytes "$nsp" "$p_repl")
ip netns exec "$nsp" timeout 60 "$vt" send --cert "$pki/client-ok.pem" \
    --key "$pki/client-ok-key.pem" --ca "$pki/ca.pem" --crl "$pki/crl.pem" --port "$port" \
    --server-name replica.example --connect "$r_repl_ip" --source "interface:$p_repl" \
    --rate 16M --io-timeout 2 "$work/r5.stream" >"$work/send.out" 2>"$work/send.err" &
send_pid=$!
pids+=("$send_pid")
for _ in $(seq 100); do
    [ $(($(tx_bytes "$nsp" "$p_repl") - repl_before)) -ge $((20 * MiB)) ] && break
    kill -0 "$send_pid" 2>/dev/null || break
    sleep 0.1
done
diag "cutting $p_repl after $(($(tx_bytes "$nsp" "$p_repl") - repl_before)) bytes"
ip netns exec "$nsp" ip link set dev "$p_repl" down
sleep 3
# IPv4 addresses stay on a link that goes down; re-add it should this kernel flush it.
if ! ip netns exec "$nsp" ip -4 addr show dev "$p_repl" | grep -q "inet $p_repl_ip/"; then
    diag "$p_repl lost $p_repl_ip when down: adding it again"
    ip netns exec "$nsp" ip addr add "$p_repl_ip/24" dev "$p_repl"
fi
ip netns exec "$nsp" ip link set dev "$p_repl" up
wait "$send_pid"
send_status=$?
sent=$(cat "$work/send.out")
r5_commits=$(grep -c '"event":"commit","relationship":"r5"' "$work/serve.out")
diag "$sent" "$(cat "$work/send.err")" "$(grep '"relationship":"r5"' "$work/serve.out")"
resumed() {
    [ "$send_status" = 0 ] && [ "$(json_num "$sent" resumes)" -ge 1 ] &&
        [ "$(json_num "$sent" resumed_at)" -gt 0 ]
}
check "the send survives a 3 s cut of $p_repl: resumes >= 1, resumed_at > 0" resumed
resent_less() {
    local body
    body=$(json_num "$sent" body_bytes)
    [ -n "$body" ] && [ "$body" -lt $((2 * file_size)) ]
}
check "it resent less than the stream again (body_bytes < 2 x $file_size)" resent_less
check "the receiver committed it exactly once" test "$r5_commits" = 1

[ "$n" = "$tests" ] || {
    diag "ran $n tests, planned $tests"
    exit 1
}
[ "$failures" = 0 ]
