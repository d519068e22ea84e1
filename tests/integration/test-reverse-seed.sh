#!/usr/bin/env bash
# The reverse set-up's seed copy runs beside virt-replicad's main loop (docs/failover.md,
# "Reverse replication after an unplanned failover"): two virt-replicad on loopback, each
# with both roles, one libvirtd, three QEMU domains without OS replicated from host A to
# host B, an unplanned failover of two of them on B, A's domains shut off. A runs with the failpoint
# "seed-copied:sleep" (a -Dfailpoints build): each seed copy lasts VR_FAILPOINT_SLEEP_SECONDS
# (4 s) longer, so that what happens meanwhile can be observed.
#
# 1. `replica-reverse --accept` of the first domain on A: while its copy runs, A's API
#    answers every 100 ms poll of GET /v1/daemon in under 1 s, and a second request (and a
#    sync of it) is refused at once with 409 "busy"; the request is answered when the copy
#    ended: A is the replica, its point 1 equals A's disk (qemu-img compare), the domain is
#    the standby.
# 2. A planned failover --reverse of a third domain from A: the same during A's seed copy
#    (the API answers every poll, an --accept of it is 409 busy), the request succeeds, A's
#    point of the final cycle equals its disk; a sync on B (the new primary) meanwhile is
#    answered 503 by A and waits (not refused), then applies on that point.
# 3. SIGTERM during the copy of the second domain's --accept: A stops cleanly within
#    seconds, the request does not succeed, no seed is left in A's store (no image, no
#    point); the restarted A runs the set-up again by itself and becomes the replica, its
#    point 1 equal to A's disk.
# 4. A stale seed is never taken: a fourth domain failed over the same way; its --accept
#    with A armed with the failpoint "reverse-seeded:kill" kills A after the seed was
#    published (point 1 in A's store, the intent recorded, the domain guarded with marker
#    "old-primary"). The domain's image is written (qemu-io, as a guest run would), then A
#    starts again: its resume refuses the seed that is no copy of the image as it is now
#    (409 conflict in the log), the intent is dropped and the guard removed (the domain as
#    it was), A stays the primary side; a new --accept is refused the same way (no set-up
#    re-runs by itself after that failure), and A's point 1 is left as it was.
# 1b. During the copy of 1, replica-disable and replica-planned-failover of it are refused
#    with 409 "busy" too (the set-up's end would undo them), and the domain's definition
#    carries the guard (marker "old-primary": the hook refuses to start it).
#
#   test-reverse-seed.sh VIRT-REPLICAD VIRT-REPLICA failpoints|no-failpoints
#                                                   (run-isolated.sh --libvirt; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
. "$srcdir/lib-tap.sh"

daemon_bin=$1
cli=$2
built=$3
tests=21

tap_work_dir vrseed
pids=()
prefix=${VR_TEST_PREFIX:-vrtest-$$}
dom=$prefix-rs
dom2=$prefix-rs2
dom3=$prefix-rs3
dom4=$prefix-rs4
cleanup() {
    tap_stop_all
    tap_domain_remove "$dom-replica" "$dom" "$dom2-replica" "$dom2" "$dom3-replica" "$dom3" \
        "$dom4-replica" "$dom4"
    [ -n "$work_own" ] && rm -rf "$work_own"
}
trap cleanup EXIT

tap_need_libvirt || skip_all "$tap_no_libvirt"
# Without the failpoint every copy of this small disk is short: nothing to observe.
[ "$built" = failpoints ] || skip_all "no failpoints: meson setup -Dfailpoints=true"
pki=$work/pki
tap_make_pki "$pki"

# Both hosts in both roles: certificates with both EKUs, and A's replica role.
tap_both_roles_conf || exit 1

field() { tap_field "$1"; }
pcli() { "$cli" --socket "$work/primary.sock" "$@"; }
rcli() { "$cli" --socket "$work/replica.sock" "$@"; }
state_of() { virsh -q -c qemu:///system domstate "$1" 2>&1; }
same() { qemu-img compare -U -f qcow2 -F qcow2 "$1" "$2" >/dev/null; }
# accept_bg DOMAIN: replica-reverse --accept on A in the background; its output in $work/accept.out,
# its exit status in $work/accept.rc once it ended.
accept_bg() {
    rm -f "$work/accept.rc" "$work/accept.out"
    (
        pcli replica-reverse "$1" --accept >"$work/accept.out" 2>&1
        echo $? >"$work/accept.rc"
    ) &
}
# poll_bg DONE: GET /v1/daemon on A every 100 ms until the file DONE exists (30 s at most),
# in the background (pid in $poller); then "$work/poll.out" says: polls, the slowest answer
# in ms, failed polls.
poll_bg() {
    python3 - "$work/primary.sock" "$1" >"$work/poll.out" 2>&1 <<'PY' &
import http.client, socket, sys, time, os
class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path_ = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path_)
sock, done = sys.argv[1:]
worst, count, failed, end = 0.0, 0, 0, time.monotonic() + 30
while not os.path.exists(done) and time.monotonic() < end:
    t = time.monotonic()
    try:
        c = Unix(sock)
        c.request("GET", "/v1/daemon")
        if c.getresponse().status != 200:
            failed += 1
        c.close()
    except OSError:
        failed += 1
    worst = max(worst, time.monotonic() - t)
    count += 1
    time.sleep(0.1)
print(count, int(worst * 1000), failed)
PY
    poller=$!
}
# intents: the intents in A's state database, "relationship:kind" one a line
intents() {
    python3 - "$work/primary-state/state.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
for rel, kind in db.execute("SELECT relationship, kind FROM intents ORDER BY 1, 2"):
    print("%s:%s" % (rel, kind))
PY
}
# wait_file PATH SECONDS: until PATH exists.
wait_file() {
    local i
    for i in $(seq $(($2 * 10))); do
        [ -e "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

echo "1..$tests"

tap_domain_start "$dom" || exit 1
tap_domain_start "$dom2" || exit 1
tap_domain_start "$dom4" || exit 1
tap_guest_write "$dom" 0x11 0 1M
tap_guest_write "$dom2" 0x11 0 1M
tap_guest_write "$dom4" 0x11 0 1M
tap_daemon_start replica "$work/replica.conf" || exit 1
VR_FAILPOINT=seed-copied:sleep tap_daemon_start primary "$work/primary.conf" || exit 1
for d in "$dom" "$dom2" "$dom4"; do
    out=$(pcli replica-enable "$d" --server replica.example --port "$port" --address 127.0.0.1 \
        --frequency 86400 --wait 2>&1) || diag "$out"
    tap_guest_write "$d" 0x22 1M 1M # never replicated: the failover is unplanned
    out=$(rcli replica-failover "$d" 2>&1) || diag "$out"
    virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1
done
tap_status "$work/primary.sock" "$dom"
rel=$(field 'j["id"]')
disk_a=$work/storage-a/$rel/vda
tap_status "$work/primary.sock" "$dom2"
rel2=$(field 'j["id"]')
disk2_a=$work/storage-a/$rel2/vda
check "unplanned failovers on B: both standbys run, A's domains are shut off" \
    test "$(state_of "$dom-replica")" = running -a "$(state_of "$dom2-replica")" = running \
    -a "$(state_of "$dom")" = "shut off" -a "$(state_of "$dom2")" = "shut off"

# --- 1. the API answers while the seed is copied; a second request is busy -------------------
accept_bg "$dom"
poll_bg "$work/accept.rc"
wait_file "$disk_a/rp-1.qcow2" 20
t0=$(date +%s%N)
second=$(tap_api "$work/primary.sock" POST "/v1/relationships/$dom/reverse" '{"accept": true}')
elapsed=$((($(date +%s%N) - t0) / 1000000))
check "a second request while the seed is copied: 409 busy, answered in $elapsed ms" \
    test "$(head -n 1 <<<"$second")" = 409 -a -n "$(grep -F '"busy"' <<<"$second")" \
    -a "$elapsed" -lt 1000
diag "$second"
out=$(tap_api "$work/primary.sock" POST "/v1/relationships/$dom/sync")
check "a sync of it on A meanwhile: 409 busy (no cycle while it becomes the replica)" \
    test "$(head -n 1 <<<"$out")" = 409 -a -n "$(grep -F '"busy"' <<<"$out")"
del=$(tap_api "$work/primary.sock" DELETE "/v1/relationships/$dom")
planned=$(tap_api "$work/primary.sock" POST "/v1/relationships/$dom/planned-failover" '{}')
check "replica-disable and a planned failover of it meanwhile: 409 busy (its end would undo them)" \
    test "$(head -n 1 <<<"$del")" = 409 -a -n "$(grep -F '"busy"' <<<"$del")" \
    -a "$(head -n 1 <<<"$planned")" = 409 -a -n "$(grep -F '"busy"' <<<"$planned")"
diag "$del" "$planned"
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom")
check "meanwhile the domain is guarded: marker 'old-primary' (the hook refuses to start it)" \
    test -n "$(grep -E "standby .*state=.old-primary." <<<"$xml")"
wait_file "$work/accept.rc" 30
wait "$poller"
read -r polls worst poll_failed <"$work/poll.out"
diag "$(cat "$work/poll.out")" "$(cat "$work/accept.out")"
check "replica-reverse --accept on A: exit 0, answered when the copy ended" \
    test "$(cat "$work/accept.rc")" = 0
check "during the copy A's API answered every poll, the slowest in ${worst:-?} ms (< 1000)" \
    test "${polls:-0}" -ge 20 -a "${poll_failed:-1}" = 0 -a "${worst:-99999}" -lt 1000
tap_status "$work/primary.sock" "$rel"
check "A: role replica, Replicating" \
    test "$(field 'j["role"]')" = replica -a "$(field 'j["state"]')" = Replicating
check "A's point 1 equals A's disk (qemu-img compare)" same "$work/$dom.qcow2" "$disk_a/rp-1.qcow2"
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom")
check "A's domain is the standby: disk on A's overlay path, marker 'replica'" \
    test -n "$(grep -F "$disk_a/failover.qcow2" <<<"$xml")" -a \
    -n "$(grep -E "standby .*state=.replica." <<<"$xml")"

# --- 2. planned failover --reverse: the old primary's seed copy, the scheduler's flow -------
tap_domain_start "$dom3" || exit 1
tap_guest_write "$dom3" 0x11 0 1M
out=$(pcli replica-enable "$dom3" --server replica.example --port "$port" --address 127.0.0.1 \
    --frequency 86400 --wait 2>&1) || diag "$out"
tap_guest_write "$dom3" 0x33 2M 1M
tap_status "$work/primary.sock" "$dom3"
rel3=$(field 'j["id"]')
final=$(($(field 'j["last_cycle"]["seq"]') + 1))
disk3_a=$work/storage-a/$rel3/vda
rm -f "$work/planned.rc"
(
    pcli replica-planned-failover "$dom3" --shutdown-timeout 2 --force --reverse \
        >"$work/planned.out" 2>&1
    echo $? >"$work/planned.rc"
) &
poll_bg "$work/planned.rc"
wait_file "$disk3_a/rp-$final.qcow2" 30
second=$(tap_api "$work/primary.sock" POST "/v1/relationships/$dom3/reverse" '{"accept": true}')
check "replica-reverse --accept during the planned failover's seed copy: 409 busy" \
    test "$(head -n 1 <<<"$second")" = 409 -a -n "$(grep -F '"busy"' <<<"$second")"
diag "$second"
# B, the new primary, syncs meanwhile: A answers 503 (not a refusal), B's upload waits.
(
    rcli replica-sync "$dom3-replica" --json >"$work/bsync.out" 2>"$work/bsync.err"
    echo $? >"$work/bsync.rc"
) &
wait_file "$work/planned.rc" 30
wait "$poller"
read -r polls worst poll_failed <"$work/poll.out"
diag "$(cat "$work/poll.out")" "$(cat "$work/planned.out")"
check "planned failover --reverse: exit 0; every poll answered, the slowest in ${worst:-?} ms" \
    test "$(cat "$work/planned.rc")" = 0 -a "${polls:-0}" -ge 20 -a "${poll_failed:-1}" = 0 \
    -a "${worst:-99999}" -lt 1000
tap_status "$work/primary.sock" "$rel3"
check "A: role replica at epoch 2, its point $final equals its disk (qemu-img compare)" \
    test "$(field 'j["role"]')" = replica -a "$(field 'j["epoch"]')" = 2 -a \
    "$(same "$work/$dom3.qcow2" "$disk3_a/rp-$final.qcow2" && echo same)" = same
wait_file "$work/bsync.rc" 30
body=$(cat "$work/bsync.out")
check "B's sync during A's seed copy waited and became A's point $((final + 1))" \
    test "$(cat "$work/bsync.rc")" = 0 -a "$(field 'j["seq"]')" = $((final + 1)) -a \
    -e "$disk3_a/rp-$((final + 1)).qcow2"
diag "$body" "$(cat "$work/bsync.err")"

# --- 3. SIGTERM while the seed is copied ----------------------------------------------------
accept_bg "$dom2"
wait_file "$disk2_a/rp-1.qcow2" 20
sleep 0.5 # qemu-img is done: the failpoint holds the unpublished copy
t0=$(date +%s%N)
tap_daemon_stop primary
elapsed=$((($(date +%s%N) - t0) / 1000000))
diag "A stopped in $elapsed ms, exit status $stop_status"
check "SIGTERM during the seed copy: A exits 0 within 8 s" \
    test "$stop_status" = 0 -a "$elapsed" -lt 8000
wait_file "$work/accept.rc" 10
check "the interrupted replica-reverse --accept did not succeed" \
    test "$(cat "$work/accept.rc" 2>/dev/null)" != 0
diag "$(cat "$work/accept.out" 2>/dev/null)"
check "no seed is left in A's store: no image, no point" \
    test ! -e "$disk2_a/rp-1.qcow2" -a -z "$(grep -s '"cycle"' "$disk2_a/manifest.json")"
# The restart runs the set-up again by itself (its intent): then A is the replica.
VR_FAILPOINT=seed-copied:sleep tap_daemon_start primary "$work/primary.conf" || exit 1
tap_status "$work/primary.sock" "$rel2"
diag "just after the restart: $(field 'j["role"]') $(field 'j["state"]')"
tap_wait_status 30 "$work/primary.sock" "$rel2" 'j["role"] == "replica"'
check "after the restart the set-up ran again: A is the replica, its point 1 equals A's disk" \
    test "$(field 'j["role"]')" = replica -a "$(field 'j["state"]')" = Replicating -a \
    "$(same "$work/$dom2.qcow2" "$disk2_a/rp-1.qcow2" && echo same)" = same

# --- 4. a crash after the seed, the image written since: the stale seed is never taken ------
tap_status "$work/primary.sock" "$dom4"
rel4=$(field 'j["id"]')
disk4_a=$work/storage-a/$rel4/vda
tap_daemon_stop primary
VR_FAILPOINT=reverse-seeded:kill tap_daemon_start primary "$work/primary.conf" || exit 1
out=$(pcli replica-reverse "$dom4" --accept 2>&1)
rc=$?
wait "$primary_pid" 2>/dev/null
died=$?
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom4")
check "--accept of $dom4, A armed 'reverse-seeded:kill': A dies of SIGKILL after the seed (point 1 published, the intent recorded, the domain guarded)" \
    test "$rc" != 0 -a "$died" = 137 -a -e "$disk4_a/rp-1.qcow2" \
    -a -n "$(intents | grep -Fx "$rel4:reverse")" \
    -a -n "$(grep -E "standby .*state=.old-primary." <<<"$xml")"
diag "$out"
# The image changes while A is down, as a run of the domain would change it.
qemu-io -f qcow2 -c "write -P 0x44 0 64k" "$work/$dom4.qcow2" >/dev/null
VR_FAILPOINT=seed-copied:sleep tap_daemon_start primary "$work/primary.conf" || exit 1
for _ in $(seq 100); do
    grep -qF "reverse replication of '$rel4': its set-up, resumed at start, failed" \
        "$work/primary.err" && break
    sleep 0.1
done
tap_status "$work/primary.sock" "$rel4"
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom4")
check "the restart refused the stale seed (its image changed): A stays the primary side, the intent is gone, the guard removed" \
    test "$(field 'j["role"]')" = primary -a -z "$(intents | grep -F "$rel4:")" \
    -a -n "$(grep -F "$rel4" "$work/primary.err" | grep -F 'holds points already')" \
    -a -z "$(grep -E "standby .*state=.old-primary." <<<"$xml")" \
    -a -z "$(grep -F "$disk4_a/failover.qcow2" <<<"$xml")"
diag "$(grep -F "reverse replication of '$rel4'" "$work/primary.err" | tail -n 2)"
out=$(pcli replica-reverse "$dom4" --accept 2>&1)
rc=$?
tap_status "$work/primary.sock" "$rel4"
check "a new --accept is refused as well (the seed is not the image), no intent is left to re-run it, A's point 1 is left as it was" \
    test "$rc" != 0 -a -n "$(grep -F 'holds points already' <<<"$out")" \
    -a -z "$(intents | grep -F "$rel4:")" \
    -a "$(field 'j["role"]')" = primary -a -e "$disk4_a/rp-1.qcow2" \
    -a "$(same "$work/$dom4.qcow2" "$disk4_a/rp-1.qcow2" && echo same)" != same
diag "$out"

[ "$failures" = 0 ] || diag "A's log:" "$(tail -n 40 "$work/primary.err")"
exit $((failures > 0))
