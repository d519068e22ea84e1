#!/usr/bin/env bash
# End to end through both daemons on one machine: a primary virt-replicad and a replica
# virt-replicad (loopback, mutual TLS with the test PKI), a real QEMU domain under libvirtd
# with a qcow2 disk and no OS (guest writes through HMP qemu-io), replication enabled through
# the primary's API: the initial copy, the standby domain defined on the replica, a sync
# whose point holds exactly what the guest wrote, the 5 s schedule, cycles missed while the
# replica is down with health going Warning then Critical and back to Normal, disable; a
# slowed cycle's progress in the status and as the CLI's bar, and the pending bytes.
#
#   test-e2e.sh VR-TRANSFER VIRT-REPLICAD VIRT-REPLICA  (through run-isolated.sh --libvirt; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
. "$srcdir/lib-tap.sh"

daemon_bin=$2
cli=$3
tests=34

tap_work_dir vre2e
pids=()
prefix=${VR_TEST_PREFIX:-vrtest-$$}
dom=$prefix-vm1
cleanup() {
    tap_stop_all
    tap_domain_remove "$dom" "$dom-replica"
    [ -n "$work_own" ] && rm -rf "$work_own"
}
trap cleanup EXIT

tap_need_libvirt || skip_all "$tap_no_libvirt"
pki=$work/pki
tap_make_pki "$pki"

tap_free_port port || exit 1
# A replica host and a primary host; both daemons reach the one libvirtd, so the standby
# gets its own name ("%n-replica").
tap_pair_conf
printf '\n[primary]\nrpo-critical-factor = 2\n' >>"$work/primary.conf"

api() { tap_api "$@"; }
field() { tap_field "$1"; }
status_of() { tap_status "$1" "$dom"; } # status_of SOCKET
start() { tap_daemon_start "$@"; }      # start NAME CONFIG
stop() { tap_daemon_stop "$1"; }        # stop NAME: its exit status in $stop_status
wait_for() { tap_wait_status "$1" "$2" "$dom" "$3"; } # wait_for SECONDS SOCKET EXPR
hmp() { virsh -q -c qemu:///system qemu-monitor-command "$dom" --hmp "$1"; }
guest_write() { tap_guest_write "$dom" "$@"; } # guest_write PATTERN OFFSET LENGTH

echo "1..$tests"

# --- the domain ---------------------------------------------------------------------------------
tap_domain_start "$dom" || {
    diag "cannot start the domain"
    exit 1
}
guest_write 0x5a 0 1M

# --- 1-4: enable, the initial copy, the standby -------------------------------------------------
if ! start replica "$work/replica.conf" || ! start primary "$work/primary.conf"; then
    exit 1
fi
reply=$(api "$work/primary.sock" POST /v1/relationships \
    "{\"domain\": \"$dom\", \"server\": \"replica.example\", \"port\": $port, \"address\": \"127.0.0.1\", \"frequency\": 5}")
body=$(tail -n +2 <<<"$reply")
diag "enable: $(head -n 1 <<<"$reply")"
rel=$(field 'j["id"]')
check "replica-enable: 201 with the relationship's id" test "$(head -n 1 <<<"$reply")" = 201 -a -n "$rel"
check "the initial copy is acknowledged (cycle 1)" \
    wait_for 120 "$work/primary.sock" 'j["last_cycle"] is not None and j["last_cycle"]["seq"] >= 1'
check "the replica holds point 1 of vda" test -f "$work/storage/$rel/vda/rp-1.qcow2"
state=$(virsh -q -c qemu:///system domstate "$dom-replica" 2>&1)
check "the standby domain $dom-replica is defined and shut off (state: $state)" \
    test "$state" = "shut off"

# --- 5-8: a sync with known writes --------------------------------------------------------------
guest_write 0xab 4M 2M
guest_write 0xcd 40M 64k
reply=$(api "$work/primary.sock" POST "/v1/relationships/$dom/sync")
body=$(tail -n +2 <<<"$reply")
diag "sync: $body"
seq=$(field 'j["seq"]')
check "replica-sync: 200 once the replica acknowledged, at least the 2.0625 MiB written" \
    test "$(head -n 1 <<<"$reply")" = 200 -a "$(field 'j["bytes"] >= 2162688')" = True
latest=$work/storage/$rel/vda/rp-$seq.qcow2
check "the acknowledged point reads what the guest wrote (0xab at 4M, 0xcd at 40M, 0x5a at 0)" \
    sh -c "qemu-io -r -f qcow2 -c 'read -P 0xab 4M 2M' -c 'read -P 0xcd 40M 64k' \
        -c 'read -P 0x5a 0 1M' '$latest' | grep -q 'Pattern verification failed' && exit 1 || exit 0"
status_of "$work/primary.sock"
check "primary status: Replicating, health Normal" \
    test "$(field 'j["state"]')" = Replicating -a "$(field 'j["health"]')" = Normal
status_of "$work/replica.sock"
check "replica status: the domain named from its XML, its points listed" \
    test "$(field 'j["domain"]')" = "$dom" -a "$(field 'len(j["recovery_points"]["vda"]) >= 2')" = True

# --- 9: the schedule ------------------------------------------------------------------------------
status_of "$work/primary.sock"
before=$(field 'j["last_cycle"]["seq"]')
sleep 12
status_of "$work/primary.sock"
after=$(field 'j["last_cycle"]["seq"]')
diag "cycles in 12 s at a 5 s frequency: $before -> $after"
check "the 5 s schedule cuts cycles by itself (2 or more in 12 s)" test $((after - before)) -ge 2

# --- 10-12: the replica down, then back -----------------------------------------------------------
stop replica
check "replica down: cycles counted as missed, health Warning or worse" \
    wait_for 30 "$work/primary.sock" 'j["stats"]["cycles_missed"] >= 1 and j["health"] != "Normal"'
check "replica down past twice the frequency since the last cycle: health Critical" \
    wait_for 30 "$work/primary.sock" 'j["health"] == "Critical"'
start replica "$work/replica.conf" || true
check "replica back: cycles succeed again and health returns to Normal" \
    wait_for 60 "$work/primary.sock" 'j["health"] == "Normal" and j["stats"]["cycles_ok"] >= 1'

# --- shut off: the final cycle (the hook's "stopped", sent as the hook sends it), started again ---
hook() { # hook OPERATION
    api "$work/primary.sock" POST /v1/hooks/qemu \
        "{\"domain\": \"$dom\", \"operation\": \"$1\", \"sub_operation\": \"-\", \"extra\": \"-\"}" >/dev/null
}
status_of "$work/primary.sock"
before=$(field 'j["last_cycle"]["seq"]')
guest_write 0xee 20M 64k
virsh -q -c qemu:///system destroy "$dom" >/dev/null
hook stopped
# A scheduled cycle may end after the stop with a cut from before the write: the final cycle
# is the last one, once none runs.
check "virsh destroy and the hook's stopped: the final cycle is acknowledged, state PausedDomainOff" \
    wait_for 60 "$work/primary.sock" 'j["state"] == "PausedDomainOff" and not j["cycle_running"] and j["last_cycle"]["seq"] > '"$before"
final=$(field 'j["last_cycle"]["seq"]')
diag "final cycle $final: $(field 'j["last_cycle"]')"
check "the final cycle's point reads what the guest wrote right before the shutdown (0xee at 20M)" \
    sh -c "qemu-io -r -f qcow2 -c 'read -P 0xee 20M 64k' '$work/storage/$rel/vda/rp-$final.qcow2' |
        grep -q 'Pattern verification failed' && exit 1 || exit 0"
sleep 12
status_of "$work/primary.sock"
check "shut off for more than the RPO after its final cycle: health Normal, not Critical" \
    test "$(field 'j["health"]')" = Normal -a "$(field 'j["state"]')" = PausedDomainOff
# The daemon does not keep whether the final cycle was acknowledged: after a restart it cuts
# it again while the domain stays off (nothing is left to send), and counts the RPO meanwhile.
stop primary
start primary "$work/primary.conf" || true
check "a restart while shut off: the final cycle again, acknowledged; PausedDomainOff, health Normal" \
    wait_for 30 "$work/primary.sock" 'j["state"] == "PausedDomainOff" and j["health"] == "Normal" and j["last_cycle"]["seq"] > '"$final"
final=$(field 'j["last_cycle"]["seq"]')
virsh -q -c qemu:///system start "$dom" >/dev/null
hook started
check "virsh start and the hook's started: state Replicating, a cycle at once on top of the final one" \
    wait_for 30 "$work/primary.sock" 'j["state"] == "Replicating" and j["last_cycle"]["seq"] > '"$final"

# --- 13-15: metrics, disable ------------------------------------------------------------------------
metrics=$(api "$work/primary.sock" GET /metrics)
check "/metrics of the primary carries the relationship" \
    grep -q "^virt_replica_cycles_ok{relationship=\"$rel\",domain=\"$dom\",role=\"primary\"}" <<<"$metrics"
for _ in $(seq 30); do
    reply=$(api "$work/primary.sock" DELETE "/v1/relationships/$dom")
    [ "$(head -n 1 <<<"$reply")" != 409 ] && break
    sleep 0.5
done
check "replica-disable: 204 (after any running cycle)" test "$(head -n 1 <<<"$reply")" = 204
reply=$(api "$work/primary.sock" GET "/v1/relationships/$dom")
check "after disable: 404 unknown-domain" test "$(head -n 1 <<<"$reply")" = 404

# --- 16-19: API errors ------------------------------------------------------------------------------
code_of() { body=$(tail -n +2 <<<"$1"); echo "$(head -n 1 <<<"$1") $(field 'j["error"]["code"]')"; }
enable='{"domain": "'$dom'", "server": "replica.example", "port": '$port', "address": "127.0.0.1"'
reply=$(api "$work/primary.sock" POST /v1/relationships '{"domain": "'$prefix'-nosuch", "server": "replica.example"}')
check "enable of an unknown domain: 404 unknown-domain" test "$(code_of "$reply")" = "404 unknown-domain"
reply=$(api "$work/primary.sock" POST /v1/relationships "$enable, \"frequency\": 2}")
diag "$(tail -n +2 <<<"$reply" | tr -d '\n')"
check "a frequency of 2 s: 400 invalid naming 'frequency'" \
    test "$(code_of "$reply")" = "400 invalid" -a -n "$(grep frequency <<<"$reply")"
reply=$(api "$work/primary.sock" POST /v1/relationships "$enable, \"colour\": 1}")
check "an unknown member: 400 invalid naming it" \
    test "$(code_of "$reply")" = "400 invalid" -a -n "$(grep colour <<<"$reply")"
# Enabled again (its old bitmaps go with the first cycle), slowed to 1 MB/s.
reply=$(api "$work/primary.sock" POST /v1/relationships "$enable, \"frequency\": 600, \"bandwidth\": \"1M\"}")
reply2=$(api "$work/primary.sock" POST /v1/relationships "$enable}")
body=$(tail -n +2 <<<"$reply")
rel2=$(field 'j["id"]')
check "enable again after disable: 201 with a new relationship id; enable twice: 409 already-enabled" \
    test "$(head -n 1 <<<"$reply")" = 201 -a -n "$rel2" -a "$rel2" != "$rel" \
    -a "$(code_of "$reply2")" = "409 already-enabled"

# --- 20-24: disable during a cycle, SIGTERM during a cycle, restart ------------------------------------
wait_for 120 "$work/primary.sock" 'j["last_cycle"] is not None' >/dev/null
head -c $((6 * 1024 * 1024)) /dev/urandom >"$work/random.bin"
chmod 644 "$work/random.bin"
guest() { hmp "qemu-io -d $qdev \"$1\"" >/dev/null; }
guest "write -s $work/random.bin 8M 6M"
check "pending_bytes counts the 6 MiB written since the last acknowledged cycle" \
    wait_for 12 "$work/primary.sock" 'j["pending_bytes"] is not None and j["pending_bytes"] >= 6291456'
api "$work/primary.sock" POST "/v1/relationships/$dom/sync" >"$work/sync.out" 2>&1 &
sync_pid=$!
wait_for 20 "$work/primary.sock" 'j["cycle_running"]' >/dev/null
# At 1 MB/s the 6 MiB take some 6 s to send: the status follows the upload.
check "progress of the running cycle: phase send of vda, a fraction, the rate near 1 MB/s, an ETA" \
    wait_for 10 "$work/primary.sock" 'j["progress"] is not None and j["progress"]["phase"] == "send" and j["progress"]["disk"] == "vda" and 0.5 <= j["progress"]["fraction"] < 1 and 300000 < j["progress"]["rate_bytes_per_s"] < 3000000 and j["progress"]["eta_s"] is not None and j["progress"]["eta_s"] <= 20'
reply=$(api "$work/primary.sock" DELETE "/v1/relationships/$dom")
check "disable while a cycle runs: 409 busy" test "$(code_of "$reply")" = "409 busy"
sleep 1
stop primary
wait "$sync_pid" 2>/dev/null
diag "the sync's answer: $(tr -d '\n' <"$work/sync.out")"
diag "exit status $stop_status; the daemon's last lines:" "$(tail -n 4 "$work/primary.err")"
check "SIGTERM during a cycle: the daemon exits 0 (the cycle aborted), no critical logged" \
    test "$stop_status" = 0 -a -z "$(grep -i 'critical\|: error: ' "$work/primary.err")"
leftovers=$(virsh -q -c qemu:///system qemu-monitor-command "$dom" '{"execute":"query-named-block-nodes"}' |
    python3 -c 'import json,sys; print(" ".join(n["node-name"] for n in json.load(sys.stdin)["return"] if n["node-name"].startswith("vr-")))')
exports=$(virsh -q -c qemu:///system qemu-monitor-command "$dom" '{"execute":"query-block-exports"}')
jobs=$(virsh -q -c qemu:///system qemu-monitor-command "$dom" '{"execute":"query-jobs"}')
diag "vr- nodes: '$leftovers'; exports: $exports; jobs: $jobs"
check "nothing of the cycle is left in QEMU: no fleece node, no export, no job" \
    test -z "$leftovers" -a "$exports" = '{"return":[],"id":"libvirt-'"$(sed 's/.*"id":"libvirt-\([0-9]*\)".*/\1/' <<<"$exports")"'"}' \
    -a -n "$(grep '"return":\[\]' <<<"$jobs")"
check "no spool or stream is left in the work directory" \
    test -z "$(find "$work/primary-state/work" -type f 2>/dev/null)"
start primary "$work/primary.conf"
diag "$(grep -i 'warning\|error' "$work/primary.err" | tail -n 5)"
status_of "$work/primary.sock"
check "after a restart the relationship is back from the state" test "$(field 'j["id"]')" = "$rel2"
# The sync through the CLI on a terminal (script(1)): the bar while the 6 MiB go at 1 MB/s.
if command -v script >/dev/null; then
    timeout 120 script -qec "'$cli' --socket '$work/primary.sock' replica-sync '$dom' --json" \
        "$work/typescript" >/dev/null 2>&1
    # The JSON answer follows the bar's erasure (ESC [K); the terminal made \n into \r\n.
    body=$(python3 -c 'import sys; t = open(sys.argv[1], errors="replace").read().replace("\r", "")
t = t[t.rfind("\x1b[K") + 3:] if "\x1b[K" in t else t
print(t[t.find("{"):t.rfind("}") + 1])' "$work/typescript")
    bars=$(tr '\r' '\n' <"$work/typescript" | grep -Ec '^\[[#-]{24}\] +[0-9]+%, cycle [0-9]+: send vda, [0-9.]+ (KiB|MiB)/s, ETA [0-9]+s')
    diag "the sync after the restart: $body; bar frames with a rate and ETA: $bars" \
        "$(tr '\r' '\n' <"$work/typescript" | grep -m 3 '^\[')"
    check "replica-sync on a terminal draws the cycle's bar: percentage, phase, disk, rate, ETA" \
        test "$bars" -ge 3
else
    reply=$(api "$work/primary.sock" POST "/v1/relationships/$dom/sync")
    body=$(tail -n +2 <<<"$reply")
    tap_ok "# SKIP script(1) is missing (bsdutils): no terminal for the progress bar"
fi
check "a sync after the restart is acknowledged and carries the 6 MiB written" \
    test "$(field 'j["bytes"] >= 6291456')" = True
check "after that sync nothing is pending: pending_bytes is 0 (a guest without OS writes nothing)" \
    wait_for 8 "$work/primary.sock" 'j["pending_bytes"] == 0'
stop primary
stop replica
[ "$failures" = 0 ]
