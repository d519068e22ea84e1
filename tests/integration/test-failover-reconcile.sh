#!/usr/bin/env bash
# A replica daemon killed (kill -9, failpoints of plugin/vr-failover.c) between the define of
# the standby or its test copy and the write of the relationship's row, then started again:
# its start reconciles libvirt with the state database (docs/failover.md, "Crash and
# restart"). One replica virt-replicad on loopback (the test PKI), cycles and the primary's
# domain XML sent as a primary would (vr-transfer, curl with the primary's certificate), a
# standby without OS under TCG. After each restart: the row (state, epoch), the standby's
# marker, the libvirt hook's verdict on the standby (run as libvirtd runs it), and whether
# the sink takes the next cycle:
#   - failover-defined: rolled forward (FailedOver at epoch 2, marker failed-over, the hook
#     lets it start, cycles refused); then cancelled;
#   - failover-defined with the overlay removed before the restart: rolled back (Replicating
#     at epoch 1, marker replica, the hook refuses it, cycles taken);
#   - failover-cancel-defined: the cancel finished (as above);
#   - failover-overlays (before the define): the overlay removed; one with written data kept;
#   - a planned failover (POST /v1/failover with the primary's certificate) killed at
#     failover-defined: rolled forward, and the primary's repeated request gets its answer
#     (planned) and starts the standby;
#   - failover-test-started: the running test copy recorded (cycles go on; cancel --test
#     removes it);
#   - failover-test-cancel-undefined: the record and the overlays removed.
#   - no failpoint: a failover whose standby is off with a written overlay whose backing
#     name was rewritten (qemu-img rebase -u, as a block job may): its point cannot be
#     attributed, but the overlay is the failed-over guest's data: kept, FailedOver kept,
#     a warning (never "the cancel is finished").
#
#   test-failover-reconcile.sh VR-TRANSFER VIRT-REPLICAD VIRT-REPLICA-HOOK
#   (run-isolated.sh --libvirt; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
# shellcheck disable=SC2154 # replica_pid: tap_daemon_start sets it
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-tap.sh
. "$srcdir/lib-tap.sh"

vt=$(realpath "$1")
daemon_bin=$(realpath "$2")
hook_bin=$(realpath "$3")
tests=35

tap_work_dir vrreconcile
pids=()
prefix=${VR_TEST_PREFIX:-vrtest-$$}
dom=$prefix-rc
standby=$dom-replica
cleanup() {
    tap_stop_all
    tap_domain_remove "$standby-test" "$standby"
    [ -n "$work_own" ] && rm -rf "$work_own"
}
trap cleanup EXIT

tap_need_libvirt || skip_all "$tap_no_libvirt"
command -v curl >/dev/null || skip_all "curl is needed (the primary's domain XML)"
# A build without -Dfailpoints=true has no failpoint names in the daemon.
grep -q failover-answer "$daemon_bin" || skip_all "no failpoints: meson setup -Dfailpoints=true"
pki=$work/pki
tap_make_pki "$pki"
tap_free_port port || exit 1
tap_pair_conf
rsock=$work/replica.sock
rel=r1
disk=$work/storage/$rel/vda

field() { tap_field "$1"; }
api() { # api METHOD PATH [BODY]: $code and $body from the replica's API
    local reply
    reply=$(tap_api "$rsock" "$@" 2>/dev/null)
    code=$(head -n 1 <<<"$reply")
    body=$(tail -n +2 <<<"$reply")
}
state_of() { virsh -q -c qemu:///system domstate "$1" 2>&1; }
# marker DOMAIN: "STATE EPOCH" of the standby marker of DOMAIN's persistent definition
marker() {
    virsh -q -c qemu:///system dumpxml --inactive "$1" 2>/dev/null | python3 -c '
import sys, xml.etree.ElementTree as ET
m = ET.fromstring(sys.stdin.read()).find("metadata/{https://virt-replica.org/xmlns/standby/1}standby")
print(m.get("state"), m.get("epoch"))' 2>/dev/null
}
# hook DOMAIN: the libvirt hook's prepare on DOMAIN's inactive XML; its exit status
hook() {
    "$hook_bin" "$1" prepare begin - < <(virsh -q -c qemu:///system dumpxml --inactive "$1") \
        >/dev/null 2>&1
}
# send CYCLE: cycle CYCLE of vda (base CYCLE - 1, epoch 1); $send_status, $send_err
send() {
    local base=$(($1 - 1))
    "$vt" gen --out "$work/c$1.stream" --size $((256 * 1024)) --disk-size $((8 * 1024 * 1024)) \
        --relationship "$rel" --disk vda --epoch 1 --base "$base" --target "$1" --seed "$1" \
        >/dev/null 2>&1
    timeout 60 "$vt" send --cert "$pki/client-ok.pem" --key "$pki/client-ok-key.pem" \
        --ca "$pki/ca.pem" --crl "$pki/crl.pem" --server-name replica.example \
        --connect 127.0.0.1 --port "$port" "$work/c$1.stream" >/dev/null 2>"$work/send.err"
    send_status=$?
    send_err=$(cat "$work/send.err")
}
# request_killed METHOD PATH [BODY]: the request sent; true when the daemon died of SIGKILL
# without an answer (one that answers is stopped: its failpoint did not fire)
request_killed() {
    local status
    api "$@"
    if [ -n "$code" ]; then
        diag "the daemon answered $code, it was not killed"
        tap_daemon_stop replica
        return 1
    fi
    wait "$replica_pid" 2>/dev/null
    status=$?
    [ "$status" = 137 ]
}
# arm FAILPOINT: the daemon restarted with FAILPOINT armed (kill)
arm() {
    tap_daemon_stop replica
    VR_FAILPOINT=$1:kill tap_daemon_start replica "$work/replica.conf"
}
# killed_at FAILPOINT METHOD PATH [BODY]: arm FAILPOINT, then request_killed
killed_at() {
    arm "$1" || return 1
    shift
    request_killed "$@"
}
restart() {
    tap_daemon_start replica "$work/replica.conf"
}
# row STATE EPOCH: the replica's row of r1 has that state and epoch
row() {
    api GET "/v1/relationships/$rel"
    [ "$(field 'j["state"]')" = "$1" ] && [ "$(field 'j["epoch"]')" = "$2" ]
}
warned() { grep -c "$1" "$work/replica.err"; }
# as_primary METHOD PATH TYPE FILE: a request of the primary (its certificate) with FILE as
# the body; $code (000: no answer) and $body
as_primary() {
    code=$(curl -s --max-time 60 -o "$work/primary.out" -w '%{http_code}' --cacert "$pki/ca.pem" \
        --cert "$pki/client-ok.pem" --key "$pki/client-ok-key.pem" \
        --resolve "replica.example:$port:127.0.0.1" -X "$1" -H "Content-Type: $3" \
        --data-binary @"$4" "https://replica.example:$port$2")
    body=$(cat "$work/primary.out" 2>/dev/null)
}

echo "1..$tests"

# The primary's domain XML: the standby is defined from it (TCG, no OS, one disk).
cat >"$work/domain.xml" <<XML
<domain type='qemu'>
  <name>$dom</name>
  <uuid>$(cat /proc/sys/kernel/random/uuid)</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/$dom.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
XML
restart || exit 1
as_primary PUT "/v1/domains/$rel" application/xml "$work/domain.xml"
put=$body
send 1
s1=$send_status
send 2
check "the domain XML (204) and cycles 1 and 2 are taken; the standby is defined, marker replica" \
    test "$code" = 204 -a "$s1" = 0 -a "$send_status" = 0 -a "$(marker "$standby")" = "replica 1"
diag "$put" "$send_err"

# --- 2-7: killed after the failover's define: rolled forward -----------------------------------
check "failover-defined: the daemon dies of SIGKILL, no answer" \
    killed_at failover-defined POST "/v1/relationships/$rel/failover"
check "left behind: marker failed-over at epoch 2, the overlay" \
    test "$(marker "$standby")" = "failed-over 2" -a -f "$disk/failover.qcow2"
restart || exit 1
check "after the restart: FailedOver at epoch 2" row FailedOver 2
diag "$body"
check "the marker stays failed-over at epoch 2; the hook lets the standby start" \
    test "$(marker "$standby")" = "failed-over 2" -a "$(hook "$standby"; echo $?)" = 0
send 3
check "a cycle is refused (409: failed over)" \
    test "$send_status" != 0 -a -n "$(grep -i 'failed over' <<<"$send_err")"
diag "$send_err"
check "one warning says it was rolled forward" test "$(warned "rolled forward to FailedOver")" = 1

# --- 8-10: the reconciled failover is cancelled as any other ----------------------------------
api POST "/v1/relationships/$rel/failover-cancel"
check "failover-cancel: 200, Replicating at epoch 1" test "$code" = 200 -a "$(row Replicating 1; echo $?)" = 0
diag "$body"
check "the marker is replica at epoch 1; the hook refuses the standby" \
    test "$(marker "$standby")" = "replica 1" -a "$(hook "$standby"; echo $?)" = 1
send 3
check "cycle 3 is taken" test "$send_status" = 0
diag "$send_err"

# --- 11-14: killed after the define, the overlay lost: rolled back ------------------------------
check "failover-defined again: SIGKILL" killed_at failover-defined POST "/v1/relationships/$rel/failover"
rm -f "$disk/failover.qcow2"
restart || exit 1
check "after the restart without the overlay: Replicating at epoch 1" row Replicating 1
check "marker replica at epoch 1; the hook refuses the standby" \
    test "$(marker "$standby")" = "replica 1" -a "$(hook "$standby"; echo $?)" = 1
send 4
check "cycle 4 is taken; a warning says it was rolled back" \
    test "$send_status" = 0 -a "$(warned "rolled back to marker 'replica'")" = 1
diag "$send_err"

# --- 15-19: killed after the cancel's define: the cancel is finished -----------------------------
arm failover-cancel-defined || exit 1
api POST "/v1/relationships/$rel/failover"
check "a failover: 200, the standby runs" test "$code" = 200 -a "$(state_of "$standby")" = running
diag "$body"
request_killed POST "/v1/relationships/$rel/failover-cancel"
check "failover-cancel-defined: SIGKILL, no answer; marker replica, FailedOver left in the row" \
    test $? = 0 -a "$(marker "$standby")" = "replica 1"
restart || exit 1
check "after the restart: Replicating at epoch 1" row Replicating 1
check "the standby is off, its overlay gone, the hook refuses it" \
    test "$(state_of "$standby")" = "shut off" -a ! -e "$disk/failover.qcow2" \
    -a "$(hook "$standby"; echo $?)" = 1
send 5
check "cycle 5 is taken; a warning says the cancel was finished" \
    test "$send_status" = 0 -a "$(warned "the cancel is finished")" = 1
diag "$send_err"

# --- 20-23: killed before the define: the overlay is removed, unless it was written -----------
check "failover-overlays: SIGKILL, the overlay made, the marker still replica" \
    killed_at failover-overlays POST "/v1/relationships/$rel/failover"
left=$(test -f "$disk/failover.qcow2" && marker "$standby")
restart || exit 1
check "after the restart: the overlay is removed, Replicating at 1, the hook refuses the standby" \
    test "$left" = "replica 1" -a ! -e "$disk/failover.qcow2" \
    -a "$(row Replicating 1; echo $?)" = 0 -a "$(hook "$standby"; echo $?)" = 1 \
    -a "$(warned "removing the failover overlays")" = 1
check "the same with data written into the overlay: SIGKILL" \
    killed_at failover-overlays POST "/v1/relationships/$rel/failover"
qemu-io -f qcow2 -c "write -P 0x5a 0 64k" "$disk/failover.qcow2" >/dev/null
restart || exit 1
check "after the restart: the written overlay is kept, with a warning" \
    test -f "$disk/failover.qcow2" -a "$(warned "holds written data")" = 1
rm -f "$disk/failover.qcow2"

# --- 24-27: a planned failover killed after its define: the primary's retry gets its answer --
# The final state: every disk's latest point (cycle 5 of epoch 1) and its stream digest.
python3 -c 'import json, sys
p = json.load(open(sys.argv[1]))["points"][-1]
print(json.dumps({"cycle": p["cycle"], "epoch": p["epoch"], "digests": {"vda": p["digest"]}}))' \
    "$disk/manifest.json" >"$work/planned.json"
arm failover-defined || exit 1
as_primary POST "/v1/failover/$rel" application/json "$work/planned.json"
wait "$replica_pid" 2>/dev/null
check "planned failover, failover-defined: SIGKILL, the primary has no answer" \
    test $? = 137 -a "$code" = 000
restart || exit 1
check "after the restart: rolled forward, FailedOver at epoch 2" row FailedOver 2
as_primary POST "/v1/failover/$rel" application/json "$work/planned.json"
check "the primary's request again: 200 planned, and the standby runs now" \
    test "$code" = 200 -a "$(field 'j["planned"]')" = True -a "$(field 'j["epoch"]')" = 2 \
    -a "$(state_of "$standby")" = running
diag "$body"
api POST "/v1/relationships/$rel/failover-cancel"
check "cancelled: Replicating at epoch 1" test "$code" = 200 -a "$(row Replicating 1; echo $?)" = 0

# --- 28-30: killed after the test copy started: recorded ----------------------------------------
check "failover-test-started: SIGKILL" \
    killed_at failover-test-started POST "/v1/relationships/$rel/failover" '{"test": true}'
restart || exit 1
send 6
check "after the restart the copy runs (marker test), Replicating at epoch 1, cycle 6 is taken" \
    test "$(state_of "$standby-test")" = running -a "$(marker "$standby-test")" = "test 1" \
    -a "$(row Replicating 1; echo $?)" = 0 -a "$send_status" = 0
api POST "/v1/relationships/$rel/failover-cancel" '{"test": true}'
check "failover-cancel --test: 200 (the row records the copy), the copy and its overlay gone" \
    test "$code" = 200 -a ! -e "$disk/test-failover.qcow2" \
    -a -z "$(virsh -q -c qemu:///system list --all --name | grep -Fx "$standby-test")"
diag "$body"

# --- 31-33: killed after the test copy's undefine: its record removed ------------------------------
api POST "/v1/relationships/$rel/failover" '{"test": true}'
arm failover-test-cancel-undefined || exit 1
request_killed POST "/v1/relationships/$rel/failover-cancel" '{"test": true}'
check "failover-test-cancel-undefined: SIGKILL, the copy undefined, its overlay left" \
    test $? = 0 -a -f "$disk/test-failover.qcow2"
restart || exit 1
check "after the restart: the overlay is removed, a warning says so" \
    test ! -e "$disk/test-failover.qcow2" \
    -a "$(warned "the test failover the state database records is gone")" = 1
api POST "/v1/relationships/$rel/failover" '{"test": true}'
check "the record is gone too: a new test failover starts (200)" test "$code" = 200
diag "$body"

# --- 34-35: an overlay that cannot be attributed but holds data: never removed ---------------
api POST "/v1/relationships/$rel/failover-cancel" '{"test": true}'
api POST "/v1/relationships/$rel/failover"
virsh -q -c qemu:///system destroy "$standby" >/dev/null 2>&1
# The guest's writes, then a backing name no longer "rp-<cycle>.qcow2" (an absolute path).
base=$(qemu-img info -U --output=json "$disk/failover.qcow2" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["backing-filename"])')
qemu-io -f qcow2 -c "write -P 0x6b 0 64k" "$disk/failover.qcow2" >/dev/null
qemu-img rebase -u -f qcow2 -F qcow2 -b "$disk/$base" "$disk/failover.qcow2"
check "a failover (FailedOver at epoch 2), its standby off, the overlay written and rebased" \
    test "$(row FailedOver 2; echo $?)" = 0 -a "$(state_of "$standby")" = "shut off" \
    -a -f "$disk/failover.qcow2"
tap_daemon_stop replica
restart || exit 1
check "after the restart: the written overlay is kept, FailedOver at epoch 2, with a warning" \
    test -f "$disk/failover.qcow2" -a "$(row FailedOver 2; echo $?)" = 0 \
    -a "$(warned "cannot attribute to a point")" = 1 -a "$(warned "the cancel is finished")" = 1

[ "$failures" = 0 ]
