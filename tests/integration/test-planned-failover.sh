#!/usr/bin/env bash
# Planned failover, reverse replication and failback (docs/failover.md): two virt-replicad
# on loopback, each with both roles (the test PKI's both-primary and both-replica
# certificates), one libvirtd, a running QEMU domain without OS (it never answers ACPI;
# guest writes through HMP qemu-io), replication enabled with --wait. On host A (the
# primary): replica-planned-failover without --force times out (a clear error, the domain
# runs, replication goes on); with --force --reverse the domain is destroyed, its final
# cycle carries the last write, host B checks it holds exactly that state, starts the
# standby and replicates it back; a stale cycle of A is refused; A's own domain is the
# standby of the reversed relationship (marker "replica": the hook refuses it); a reverse
# sync carries only what B wrote (asserted in bytes); the failback (a planned failover on B)
# runs the domain on A again with all of the data, both sides FailedOver at epoch 3, and B's
# domain guarded by the marker "old-primary". Then replica-reverse after an unplanned
# failover of a second domain: A's sync is refused and nothing changes by itself; A accepts
# (its disk the seed), B reverses, and the first reverse cycle is a hash resynchronization
# carrying exactly the blocks that differ (A's unreplicated write and B's write).
#
# One libvirtd holds both hosts' domains: B's standby is "<dom>-replica" (the naming rule),
# while A's own domain "<dom>" becomes the standby of the reversed relationship under its
# own name and UUID (as on separate hosts); the test checks those two domains.
#
#   test-planned-failover.sh VR-TRANSFER VIRT-REPLICAD VIRT-REPLICA HOOK
#                                            (run-isolated.sh --libvirt; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
. "$srcdir/lib-tap.sh"

transfer=$1
daemon_bin=$2
cli=$3
hook_bin=$4
tests=46

tap_work_dir vrplanned
pids=()
prefix=${VR_TEST_PREFIX:-vrtest-$$}
dom=$prefix-pf
dom2=$prefix-uf
cleanup() {
    tap_stop_all
    tap_domain_remove "$dom-replica" "$dom" "$dom2-replica" "$dom2"
    [ -n "$work_own" ] && rm -rf "$work_own"
}
trap cleanup EXIT

tap_need_libvirt || skip_all "$tap_no_libvirt"
pki=$work/pki
tap_make_pki "$pki"

# Both hosts in both roles: certificates with both EKUs, and A's replica role.
tap_both_roles_conf || exit 1

field() { tap_field "$1"; }
pcli() { "$cli" --socket "$work/primary.sock" "$@"; }
rcli() { "$cli" --socket "$work/replica.sock" "$@"; }
quiet() { "$@" >/dev/null 2>&1; }
state_of() { virsh -q -c qemu:///system domstate "$1" 2>&1; }
# status SOCKET [NAME]: $body is the relationship's status there
status() { tap_status "$1" "${2:-$rel}"; }
# same A B: qemu-img compare of two images (either may be open in QEMU)
same() { qemu-img compare -U -f qcow2 -F qcow2 "$1" "$2" >/dev/null; }
# hook_prepare DOMAIN: the libvirt hook's prepare on DOMAIN's inactive XML; $out, exit status
hook_prepare() {
    out=$("$hook_bin" "$1" prepare begin - < <(virsh -q -c qemu:///system dumpxml --inactive "$1") 2>&1)
}

echo "1..$tests"

tap_domain_start "$dom" || exit 1
tap_guest_write "$dom" 0x11 0 1M
tap_daemon_start replica "$work/replica.conf" || exit 1
tap_daemon_start primary "$work/primary.conf" || exit 1

# --- replication ----------------------------------------------------------------------------
out=$(pcli replica-enable "$dom" --server replica.example --port "$port" --address 127.0.0.1 \
    --frequency 86400 --wait 2>&1)
check "replica-enable --wait: the initial copy is acknowledged" test $? = 0
diag "$out"
tap_guest_write "$dom" 0x22 1M 1M
check "replica-sync: cycle 2" quiet pcli replica-sync "$dom"
tap_status "$work/primary.sock" "$dom"
rel=$(field 'j["id"]')
disk=$work/storage/$rel/vda
disk_a=$work/storage-a/$rel/vda

# --- the guest does not shut down (no OS): a clear error, nothing changed ------------------
out=$(pcli replica-planned-failover "$dom" --shutdown-timeout 3 2>&1)
rc=$?
check "replica-planned-failover without --force: exit 1, 'did not shut down within 3 s'" \
    test "$rc" = 1 -a -n "$(grep -F 'did not shut down within 3 s' <<<"$out")" \
    -a -n "$(grep -F -- '--force' <<<"$out")"
diag "$out"
status "$work/primary.sock"
check "the domain still runs, the relationship replicates at epoch 1" \
    test "$(state_of "$dom")" = running -a "$(field 'j["state"]')" = Replicating \
    -a "$(field 'j["epoch"]')" = 1
tap_guest_write "$dom" 0x33 2M 1M
check "replica-sync after the timeout: cycle 3 is acknowledged" quiet pcli replica-sync "$dom"

# --- the replica's zero-data-loss check refuses another state, and changes nothing ----------
post_failover() { # post_failover BODY: POST /v1/failover/$rel to B with A's certificate
    python3 - "$pki" "$port" "$rel" "$1" <<'PY'
import http.client, ssl, sys
pki, port, rel, body = sys.argv[1:]
ctx = ssl.create_default_context(cafile=pki + "/ca.pem")
ctx.check_hostname = False  # 127.0.0.1: the chain is what is checked here
ctx.load_cert_chain(pki + "/both-primary.pem", pki + "/both-primary-key.pem")
conn = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx, timeout=60)
conn.request("POST", "/v1/failover/" + rel, body, {"Content-Type": "application/json"})
reply = conn.getresponse()
print(reply.status, reply.read().decode().strip())
PY
}
status "$work/primary.sock"
acked=$(field 'j["last_cycle"]["seq"]')
out=$(post_failover "{\"cycle\": $acked, \"epoch\": 1, \"digests\": {\"vda\": \"$(printf '0%.0s' $(seq 64))\"}}")
check "POST /v1/failover with another digest: 409 'does not hold the final state'" \
    test "${out%% *}" = 409 -a -n "$(grep -F 'does not hold the final state' <<<"$out")"
diag "$out"
status "$work/replica.sock"
check "nothing changed on B: Replicating at epoch 1, the standby shut off, no overlay" \
    test "$(field 'j["state"]')" = Replicating -a "$(field 'j["epoch"]')" = 1 \
    -a "$(state_of "$dom-replica")" = "shut off" -a ! -e "$disk/failover.qcow2"

# --- --force --reverse: the final cycle carries the last write, B runs the domain -------
tap_guest_write "$dom" 0x55 4M 1M
status "$work/primary.sock"
last=$(field 'j["last_cycle"]["seq"]')
out=$(pcli replica-planned-failover "$dom" --shutdown-timeout 2 --force --reverse 2>&1)
check "replica-planned-failover --force --reverse: exit 0" test $? = 0
diag "$out"
final=$((last + 1))
check "the domain is shut off on A; B's point $final equals A's disk (zero data loss)" \
    test "$(state_of "$dom")" = "shut off" -a \
    "$(same "$work/$dom.qcow2" "$disk/rp-$final.qcow2" && echo same)" = same
check "B's standby $dom-replica runs on it, its disk equals A's" \
    test "$(state_of "$dom-replica")" = running -a \
    "$(same "$work/$dom.qcow2" "$disk/failover.qcow2" && echo same)" = same
status "$work/replica.sock"
check "B: role primary of the same relationship, Replicating at epoch 2, last cycle $final" \
    test "$(field 'j["role"]')" = primary -a "$(field 'j["state"]')" = Replicating \
    -a "$(field 'j["epoch"]')" = 2 -a "$(field 'j["last_cycle"]["seq"]')" = "$final" \
    -a "$(field 'j["domain"]')" = "$dom-replica"
status "$work/primary.sock"
check "A: role replica, Replicating at epoch 2, its point $final from its own disk" \
    test "$(field 'j["role"]')" = replica -a "$(field 'j["state"]')" = Replicating \
    -a "$(field 'j["epoch"]')" = 2 -a \
    "$(same "$work/$dom.qcow2" "$disk_a/rp-$final.qcow2" && echo same)" = same
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom")
check "A's domain is the standby of the reversed relationship: disk on A's overlay path, marker 'replica' at epoch 2" \
    test -n "$(grep -F "$disk_a/failover.qcow2" <<<"$xml")" -a \
    -n "$(grep -E "standby .*state=.replica." <<<"$xml" | grep -E "epoch=.2.")"
hook_prepare "$dom"
check "the libvirt hook refuses to start A's domain (exit 1)" \
    test $? = 1 -a -n "$(grep -F 'starts only through a failover' <<<"$out")"
diag "$out"
"$transfer" gen --out "$work/stale.stream" --size 65536 --relationship "$rel" --disk vda \
    --epoch 1 --base "$final" --target $((final + 1)) --disk-size $((64 << 20)) >/dev/null
out=$("$transfer" send --cert "$pki/both-primary.pem" --key "$pki/both-primary-key.pem" \
    --ca "$pki/ca.pem" --crl "$pki/crl.pem" --server-name replica.example --port "$port" \
    --connect 127.0.0.1 --attempts 1 "$work/stale.stream" 2>&1)
check "a cycle of epoch 1 from A is refused by B (409: failed over)" \
    test $? != 0 -a -n "$(grep -F 'is failed over on this replica' <<<"$out")"
diag "$out"

# --- reverse replication: only what B wrote -------------------------------------------------
qdev=$(virsh -q -c qemu:///system qemu-monitor-command "$dom-replica" '{"execute":"query-block"}' |
    python3 -c 'import json,sys; print([b["qdev"] for b in json.load(sys.stdin)["return"] if b.get("inserted")][0])')
tap_guest_write "$dom-replica" 0x66 8M 1M
body=$(rcli replica-sync "$dom-replica" --json 2>>"$work/cli.err")
check "the first reverse cycle $((final + 1)) carries exactly the 1 MiB B wrote" \
    test "$(field 'j["seq"]')" = $((final + 1)) -a "$(field 'j["bytes"]')" = 1048576
diag "$body"
check "A's point $((final + 1)) equals B's disk" \
    same "$disk_a/rp-$((final + 1)).qcow2" "$disk/failover.qcow2"
tap_guest_write "$dom-replica" 0x77 12M 1M
body=$(rcli replica-sync "$dom-replica" --json 2>>"$work/cli.err")
check "the next reverse cycle carries 1 MiB too" test "$(field 'j["bytes"]')" = 1048576

# --- failback: a planned failover on B runs the domain on A again ---------------------------
tap_guest_write "$dom-replica" 0x88 16M 1M
status "$work/replica.sock"
back=$(($(field 'j["last_cycle"]["seq"]') + 1)) # B's final cycle
inode=$(stat -c %i "$disk/failover.qcow2")
out=$(rcli replica-planned-failover "$dom-replica" --shutdown-timeout 2 --force --reverse 2>&1)
check "failback: replica-planned-failover on B --force --reverse: exit 0" test $? = 0
diag "$out"
check "A's domain $dom runs again, B's is shut off" \
    test "$(state_of "$dom")" = running -a "$(state_of "$dom-replica")" = "shut off"
check "B's overlay is its point $back now, not a copy (same inode), and equals A's disk" \
    test ! -e "$disk/failover.qcow2" -a "$(stat -c %i "$disk/rp-$back.qcow2")" = "$inode" -a \
    "$(same "$disk_a/failover.qcow2" "$disk/rp-$back.qcow2" && echo same)" = same
check "A's disk reads B's last write (0x88 at 16M) and A's (0x55 at 4M)" \
    test "$(qemu-io -r -U -f qcow2 -c 'read -P 0x88 16M 1M' -c 'read -P 0x55 4M 1M' \
        "$disk_a/failover.qcow2" 2>&1 | grep -c 'read 1048576/1048576')" = 2
check "B's point $back is root's, 0600, on the chain of its old points (qemu-img check)" \
    test "$(stat -c %u:%a "$disk/rp-$back.qcow2")" = 0:600 -a \
    -n "$(qemu-img info -U "$disk/rp-$back.qcow2" | grep -E '^backing file: rp-[0-9]+\.qcow2')" \
    -a "$(qemu-img check -U "$disk/rp-$back.qcow2" >/dev/null 2>&1 && echo ok)" = ok
status "$work/primary.sock"
check "A: role primary again, Replicating at epoch 3, last cycle $back" \
    test "$(field 'j["role"]')" = primary -a "$(field 'j["state"]')" = Replicating \
    -a "$(field 'j["epoch"]')" = 3 -a "$(field 'j["last_cycle"]["seq"]')" = "$back"
status "$work/replica.sock"
check "B: role replica again, Replicating at epoch 3" \
    test "$(field 'j["role"]')" = replica -a "$(field 'j["state"]')" = Replicating \
    -a "$(field 'j["epoch"]')" = 3
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom-replica")
check "B's domain is the standby again: disk on B's overlay path, marker 'replica' at epoch 3" \
    test -n "$(grep -F "$disk/failover.qcow2" <<<"$xml")" -a \
    -n "$(grep -E "standby .*state=.replica." <<<"$xml" | grep -E "epoch=.3.")"
hook_prepare "$dom-replica"
check "the libvirt hook refuses to start B's domain (exit 1)" \
    test $? = 1 -a -n "$(grep -F 'starts only through a failover' <<<"$out")"
diag "$out"
tap_guest_write "$dom" 0x99 20M 1M
body=$(pcli replica-sync "$dom" --json 2>>"$work/cli.err")
check "A's first cycle $((back + 1)) after the failback carries exactly the 1 MiB A wrote" \
    test "$(field 'j["seq"]')" = $((back + 1)) -a "$(field 'j["bytes"]')" = 1048576
diag "$body"
check "B's point $((back + 1)) equals A's disk" \
    same "$disk/rp-$((back + 1)).qcow2" "$disk_a/failover.qcow2"

# --- replica-reverse after an unplanned failover ------------------------------------------
tap_domain_start "$dom2" || exit 1
tap_guest_write "$dom2" 0x11 0 1M
pcli replica-enable "$dom2" --server replica.example --port "$port" --address 127.0.0.1 \
    --frequency 86400 --wait >/dev/null 2>&1
tap_guest_write "$dom2" 0x22 1M 1M
check "a second domain replicates from A: cycle 2" quiet pcli replica-sync "$dom2"
tap_status "$work/primary.sock" "$dom2"
rel2=$(field 'j["id"]')
disk2=$work/storage/$rel2/vda
disk2_a=$work/storage-a/$rel2/vda
tap_guest_write "$dom2" 0x33 2M 1M # never replicated: the failover is unplanned
out=$(rcli replica-failover "$dom2" 2>&1)
check "unplanned failover on B: $dom2-replica runs on point 2 (epoch 2)" \
    test $? = 0 -a "$(state_of "$dom2-replica")" = running
diag "$out"
out=$(pcli replica-sync "$dom2" 2>&1)
status "$work/primary.sock" "$rel2"
check "A's sync is refused (409) and A stays the primary: nothing is resolved by itself" \
    test -n "$(grep -F 'failed over' <<<"$out")" -a "$(field 'j["role"]')" = primary
diag "$out"
virsh -q -c qemu:///system destroy "$dom2" >/dev/null 2>&1
out=$(pcli replica-reverse "$dom2" --accept 2>&1)
status "$work/primary.sock" "$rel2"
check "replica-reverse --accept on A: role replica, its disk the seed (point 1)" \
    test "$(field 'j["role"]')" = replica -a \
    "$(same "$work/$dom2.qcow2" "$disk2_a/rp-1.qcow2" && echo same)" = same
diag "$out"
out=$(rcli replica-reverse "$dom2-replica" --server primary.example --port "$port_a" \
    --address 127.0.0.1 2>&1)
status "$work/replica.sock" "$rel2"
check "replica-reverse on B: role primary, ResynchronizationRequired at epoch 2" \
    test "$(field 'j["role"]')" = primary -a "$(field 'j["state"]')" = ResynchronizationRequired \
    -a "$(field 'j["epoch"]')" = 2
diag "$out"
qdev=$(virsh -q -c qemu:///system qemu-monitor-command "$dom2-replica" '{"execute":"query-block"}' |
    python3 -c 'import json,sys; print([b["qdev"] for b in json.load(sys.stdin)["return"] if b.get("inserted")][0])')
tap_guest_write "$dom2-replica" 0x44 3M 1M
body=$(rcli replica-sync "$dom2-replica" --json 2>>"$work/cli.err")
check "the first reverse cycle is a resync of exactly the 2 MiB that differ (A's 0x33, B's 0x44)" \
    test "$(field 'j["bytes"]')" = 2097152
diag "$body"
point=$(field 'j["seq"]')
check "A's point $point equals B's disk" same "$disk2_a/rp-$point.qcow2" "$disk2/failover.qcow2"
status "$work/replica.sock" "$rel2"
check "B replicates (state Replicating) after the resync" test "$(field 'j["state"]')" = Replicating

# --- a failback without --reverse: B's domain is guarded, replica-disable removes the guard --------
tap_guest_write "$dom2-replica" 0x55 4M 1M
# First the answer is lost: A (the replica here) fails over, then dies before it answers
# (a failpoint). B cannot know what happened: its domain stays shut off and guarded.
tap_daemon_stop primary
VR_FAILPOINT=failover-answer:exit tap_daemon_start primary "$work/primary.conf" || exit 1
out=$(rcli replica-planned-failover "$dom2-replica" --shutdown-timeout 2 --force 2>&1)
rc=$?
diag "$out"
wait "$primary_pid" 2>/dev/null
check "the answer lost: exit 1, the outcome 'not known', B's domain stays shut off" \
    test "$rc" = 1 -a -n "$(grep -F 'whether it failed over is not known' <<<"$out")" \
    -a "$(state_of "$dom2-replica")" = "shut off"
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom2-replica")
hook_prepare "$dom2-replica"
check "B's domain carries the marker 'failing-over' with its final cycle; the hook refuses it" \
    test $? = 1 -a -n "$(grep -E "standby .*state=.failing-over." <<<"$xml" | grep -E 'final=.[0-9]+:vda=[0-9a-f]{64}.')" \
    -a -n "$(grep -F 'ended without an answer' <<<"$out")"
tap_daemon_start primary "$work/primary.conf" || exit 1
# Run again: the same final cycle goes again (the replica refuses new cycles once failed
# over), and the replica's answer to the repeated request settles it.
out=$(rcli replica-planned-failover "$dom2-replica" --shutdown-timeout 2 --force 2>&1)
check "failback without --reverse: A's $dom2 runs again with B's last write, B's is shut off" \
    test $? = 0 -a "$(state_of "$dom2")" = running -a "$(state_of "$dom2-replica")" = "shut off" \
    -a "$(qemu-io -r -U -f qcow2 -c 'read -P 0x55 4M 1M' "$disk2_a/failover.qcow2" 2>&1 |
        grep -c 'read 1048576/1048576')" = 1
diag "$out"
status "$work/replica.sock" "$rel2"
check "B: FailedOver at epoch 3" test "$(field 'j["state"]')" = FailedOver -a "$(field 'j["epoch"]')" = 3
status "$work/primary.sock" "$rel2"
check "A: FailedOver at epoch 3 (it runs the domain)" \
    test "$(field 'j["state"]')" = FailedOver -a "$(field 'j["epoch"]')" = 3
xml=$(virsh -q -c qemu:///system dumpxml --inactive "$dom2-replica")
check "B's domain carries the marker 'old-primary' at epoch 3" \
    test -n "$(grep -E "standby .*state=.old-primary." <<<"$xml" | grep -E "epoch=.3.")"
hook_prepare "$dom2-replica"
check "the libvirt hook refuses to start it (exit 1, split brain named)" \
    test $? = 1 -a -n "$(grep -F 'split the brain' <<<"$out")"
diag "$out"
check "replica-disable of the failed-over relationship on B" quiet rcli replica-disable "$rel2"
hook_prepare "$dom2-replica"
check "the marker 'old-primary' is gone: the hook lets $dom2-replica start" \
    test $? = 0 -a -z "$(virsh -q -c qemu:///system dumpxml --inactive "$dom2-replica" | grep -F old-primary)"

[ "$failures" = 0 ] || diag "A's log:" "$(tail -n 40 "$work/primary.err")" \
    "B's log:" "$(tail -n 40 "$work/replica.err")"
exit $((failures > 0))
