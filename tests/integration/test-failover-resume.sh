#!/usr/bin/env bash
# Work a restart of virt-replicad used to abandon is resumed (docs/failover.md, "Crash and
# restart"): two virt-replicad on loopback, each with both roles (the test PKI's
# both-primary and both-replica certificates), one libvirtd, QEMU domains without OS.
#
# 1. Failover TCP/IP pending: host B's configuration gives the second domain's NIC an IPv4
#    address ([interface:MAC]) and [replica] guest-agent-wait = 20; the domain has a guest
#    agent channel that nothing answers. An unplanned failover on B answers "pending"; B is
#    killed (SIGKILL) while the status still says pending, and started again: the status
#    shows the resumed push ("pending", "resumed": {"count": 1}), then, when what was left
#    of the wait ended, the final outcome "not-applied" (no guest agent answers, channel
#    disconnected) with "resumed" kept, not "pending" forever; the intent is gone.
# 2. A failback with --reverse interrupted on B: a planned failover --reverse from A to B,
#    a reverse cycle, a write on B, then the failback (a planned failover --reverse on B)
#    with B armed with the failpoint "adopt:kill" (a -Dfailpoints build): B dies of SIGKILL
#    right after its store published the adopted overlay (the commit point), before the
#    standby's definition, the row and the sink. Its state database holds the intent
#    "reverse". B started again finishes the set-up by itself: B is the replica at epoch 3,
#    its point the final cycle (the same inode as the overlay it ran on, equal to A's disk),
#    its domain the standby (marker "replica" at epoch 3), the intent gone; A's next cycle
#    carries exactly the 1 MiB A wrote and B's new point equals A's disk.
#
#   test-failover-resume.sh VIRT-REPLICAD VIRT-REPLICA failpoints|no-failpoints
#                                                   (run-isolated.sh --libvirt; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
. "$srcdir/lib-tap.sh"

daemon_bin=$1
cli=$2
built=$3
tests=17

tap_work_dir vrresume
pids=()
prefix=${VR_TEST_PREFIX:-vrtest-$$}
dom=$prefix-rz
dom2=$prefix-rn
mac=52:54:00:7e:01:0a
cleanup() {
    tap_stop_all
    tap_domain_remove "$dom-replica" "$dom" "$dom2-replica" "$dom2"
    [ -n "$work_own" ] && rm -rf "$work_own"
}
trap cleanup EXIT

tap_need_libvirt || skip_all "$tap_no_libvirt"
[ "$built" = failpoints ] || skip_all "no failpoints: meson setup -Dfailpoints=true"
pki=$work/pki
tap_make_pki "$pki"

# Both hosts in both roles: certificates with both EKUs, and A's replica role.
tap_both_roles_conf || exit 1
# B: failover TCP/IP for the second domain's NIC, and a wait longer than a restart.
cat >>"$work/replica.conf" <<CONF
guest-agent-wait = 20

[interface:$mac]
ipv4 = 192.0.2.10/24
ipv4-gateway = 192.0.2.1
CONF

field() { tap_field "$1"; }
pcli() { "$cli" --socket "$work/primary.sock" "$@"; }
rcli() { "$cli" --socket "$work/replica.sock" "$@"; }
quiet() { "$@" >/dev/null 2>&1; }
state_of() { virsh -q -c qemu:///system domstate "$1" 2>&1; }
status() { tap_status "$1" "$2"; }
same() { qemu-img compare -U -f qcow2 -F qcow2 "$1" "$2" >/dev/null; }
# intents: the intents in B's state database, "relationship:kind" one a line
intents() {
    python3 - "$work/replica-state/state.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
for rel, kind in db.execute("SELECT relationship, kind FROM intents ORDER BY 1, 2"):
    print("%s:%s" % (rel, kind))
PY
}
guest_ip='j["failover_network"]["failover"]["guest_ip"]'

echo "1..$tests"

# The NIC (a tap of its own, connected to nothing) and the agent channel no agent answers.
tap_domain_start "$dom2" "<interface type='ethernet'><mac address='$mac'/><model type='virtio'/></interface>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>" || exit 1
tap_domain_start "$dom" || exit 1
qdev_a=$qdev
tap_guest_write "$dom" 0x11 0 1M
# B runs armed with "adopt:kill" throughout: only the failback of part 2 adopts an overlay.
export VR_FAILPOINT=adopt:kill
tap_daemon_start replica "$work/replica.conf" || exit 1
unset VR_FAILPOINT
tap_daemon_start primary "$work/primary.conf" || exit 1

# --- 1. failover TCP/IP pending across a kill -9 ---------------------------------------------
out=$(pcli replica-enable "$dom2" --server replica.example --port "$port" --address 127.0.0.1 \
    --frequency 86400 --wait 2>&1)
check "replica-enable --wait of $dom2 (a NIC and an agent channel)" test $? = 0
diag "$out"
out=$(rcli replica-failover "$dom2" 2>&1)
check "replica-failover on B: $dom2-replica runs, failover TCP/IP pending" \
    test $? = 0 -a "$(state_of "$dom2-replica")" = running \
    -a -n "$(grep -F 'Failover TCP/IP: pending' <<<"$out")"
diag "$out"
status "$work/replica.sock" "$dom2"
check "B's status: guest_ip pending, no resume yet; its intent is in the state database" \
    test "$(field "$guest_ip[\"state\"]")" = pending \
    -a "$(field "$guest_ip.get(\"resumed\")")" = None \
    -a -n "$(intents | grep -F ':guest-ip:failover')"
kill -KILL "$replica_pid"
wait "$replica_pid" 2>/dev/null
VR_FAILPOINT=adopt:kill tap_daemon_start replica "$work/replica.conf" || exit 1
status "$work/replica.sock" "$dom2"
check "after kill -9 and a start: pending again, resumed once ('resumed after a restart')" \
    test "$(field "$guest_ip[\"state\"]")" = pending \
    -a "$(field "$guest_ip[\"resumed\"][\"count\"]")" = 1 \
    -a -n "$(field "$guest_ip[\"reason\"]" | grep -F 'resumed after a restart')"
diag "$body"
tap_wait_status 40 "$work/replica.sock" "$dom2" "$guest_ip[\"state\"] != \"pending\""
check "the final outcome: not-applied, no guest agent answers (channel disconnected), resumed kept" \
    test "$(field "$guest_ip[\"state\"]")" = not-applied \
    -a "$(field "$guest_ip[\"reason\"]")" = \
    "no guest agent answers (channel org.qemu.guest_agent.0: disconnected)" \
    -a "$(field "$guest_ip[\"resumed\"][\"count\"]")" = 1
diag "$(field "$guest_ip")"
check "the intent is gone, $dom2-replica still runs" \
    test -z "$(intents | grep -F ':guest-ip:')" -a "$(state_of "$dom2-replica")" = running

# --- 2. a failback with --reverse interrupted on B -------------------------------------------
out=$(pcli replica-enable "$dom" --server replica.example --port "$port" --address 127.0.0.1 \
    --frequency 86400 --wait 2>&1)
check "replica-enable --wait of $dom" test $? = 0
diag "$out"
tap_status "$work/primary.sock" "$dom"
rel=$(field 'j["id"]')
disk=$work/storage/$rel/vda
disk_a=$work/storage-a/$rel/vda
tap_guest_write "$dom" 0x22 1M 1M
out=$(pcli replica-planned-failover "$dom" --shutdown-timeout 2 --force --reverse 2>&1)
check "planned failover --force --reverse from A: B runs $dom-replica, A is its replica" \
    test $? = 0 -a "$(state_of "$dom-replica")" = running
diag "$out"
qdev=$(virsh -q -c qemu:///system qemu-monitor-command "$dom-replica" '{"execute":"query-block"}' |
    python3 -c 'import json,sys; print([b["qdev"] for b in json.load(sys.stdin)["return"] if b.get("inserted")][0])')
tap_guest_write "$dom-replica" 0x66 8M 1M
check "a reverse cycle from B" quiet rcli replica-sync "$dom-replica"
tap_guest_write "$dom-replica" 0x88 16M 1M
status "$work/replica.sock" "$rel"
last=$(field 'j["last_cycle"]["seq"]')
inode=$(stat -c %i "$disk/failover.qcow2")

out=$(rcli replica-planned-failover "$dom-replica" --shutdown-timeout 2 --force --reverse 2>&1)
rc=$?
wait "$replica_pid" 2>/dev/null
died=$?
status "$work/primary.sock" "$rel"
back=$(field 'j["last_cycle"]["seq"]') # B's final cycle, A's acknowledged one
check "failback --reverse on B: B dies of SIGKILL at 'adopt' (the CLI fails); A runs $dom from B's final cycle $((last + 1))" \
    test "$rc" != 0 -a "$died" = 137 -a "$(state_of "$dom")" = running -a "$back" = $((last + 1))
diag "$out"
check "B's store published point $back (the overlay's inode, its old name beside it); the intent 'reverse' is recorded" \
    test "$(stat -c %i "$disk/rp-$back.qcow2")" = "$inode" -a -e "$disk/failover.qcow2" \
    -a -n "$(intents | grep -Fx "$rel:reverse")"

tap_daemon_start replica "$work/replica.conf" || exit 1
tap_wait_status 30 "$work/replica.sock" "$rel" 'j["role"] == "replica"'
check "B, started again, finished the set-up: role replica, Replicating at epoch 3" \
    test "$(field 'j["role"]')" = replica -a "$(field 'j["state"]')" = Replicating \
    -a "$(field 'j["epoch"]')" = 3
diag "$(grep -F 'reverse replication of' "$work/replica.err" | tail -n 3)"
check "B's point $back is the overlay (same inode, its old name gone), root's 0600, equal to A's disk" \
    test ! -e "$disk/failover.qcow2" -a "$(stat -c %i "$disk/rp-$back.qcow2")" = "$inode" \
    -a "$(stat -c %u:%a "$disk/rp-$back.qcow2")" = 0:600 -a \
    "$(same "$disk_a/failover.qcow2" "$disk/rp-$back.qcow2" && echo same)" = same
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom-replica")
check "B's domain is the standby: disk on the overlay path, marker 'replica' at epoch 3; no intent left" \
    test -n "$(grep -F "$disk/failover.qcow2" <<<"$xml")" -a \
    -n "$(grep -E "standby .*state=.replica." <<<"$xml" | grep -E "epoch=.3.")" \
    -a -z "$(intents | grep -F ':reverse')"
status "$work/primary.sock" "$rel"
check "A: role primary, Replicating at epoch 3, last cycle $back" \
    test "$(field 'j["role"]')" = primary -a "$(field 'j["state"]')" = Replicating \
    -a "$(field 'j["epoch"]')" = 3 -a "$(field 'j["last_cycle"]["seq"]')" = "$back"
qdev=$qdev_a
tap_guest_write "$dom" 0x99 20M 1M
body=$(pcli replica-sync "$dom" --json 2>>"$work/cli.err")
check "A's cycle $((back + 1)) carries exactly the 1 MiB A wrote" \
    test "$(field 'j["seq"]')" = $((back + 1)) -a "$(field 'j["bytes"]')" = 1048576
diag "$body"
check "B's point $((back + 1)) equals A's disk" \
    same "$disk/rp-$((back + 1)).qcow2" "$disk_a/failover.qcow2"

[ "$failures" = 0 ] || diag "A's log:" "$(tail -n 40 "$work/primary.err")" \
    "B's log:" "$(tail -n 60 "$work/replica.err")"
exit $((failures > 0))
