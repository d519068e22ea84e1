#!/usr/bin/env bash
# Failover through both daemons and the CLI (docs/failover.md): a primary virt-replicad and
# a replica virt-replicad on loopback (the test PKI), a running QEMU domain under libvirtd
# (no OS; guest writes through HMP qemu-io) with a NIC on an isolated network of the test's
# own that the replica maps to a missing one, replication enabled with --wait. On the
# replica's socket: a test failover while the primary syncs, its cancel; the API's errors;
# an unplanned failover to the older point (the standby's disk equals it), the primary's
# sync refused, cancel, the primary's sync accepted again; a failover to the latest point
# and its completion.
#
#   test-failover-cli.sh VR-TRANSFER VIRT-REPLICAD VIRT-REPLICA  (run-isolated.sh --libvirt; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
. "$srcdir/lib-tap.sh"

daemon_bin=$2
cli=$3
tests=25

tap_work_dir vrfailover
pids=()
prefix=${VR_TEST_PREFIX:-vrtest-$$}
dom=$prefix-fo
net=$prefix-fonet
mac=52:54:00:fa:11:01
cleanup() {
    tap_stop_all
    tap_domain_remove "$dom-replica-test" "$dom-replica" "$dom"
    virsh -q -c qemu:///system net-destroy "$net" >/dev/null 2>&1
    [ -n "$work_own" ] && rm -rf "$work_own"
}
trap cleanup EXIT

tap_need_libvirt || skip_all "$tap_no_libvirt"
pki=$work/pki
tap_make_pki "$pki"

tap_free_port port || exit 1
tap_pair_conf
# Networks at failover and failover TCP/IP (docs/failover.md): the NIC's network is mapped
# to one this host lacks; its address cannot be pushed (no guest agent).
cat >>"$work/replica.conf" <<CONF
guest-agent-wait = 0

[network-map]
$net = $prefix-fogone

[interface:$mac]
ipv4 = 192.0.2.10/24
CONF

field() { tap_field "$1"; }
# pcli ARGS / rcli ARGS: the CLI on the primary's or the replica's daemon.
pcli() { "$cli" --socket "$work/primary.sock" "$@"; }
quiet() { "$@" >/dev/null 2>&1; }
rcli() { "$cli" --socket "$work/replica.sock" "$@"; }
# rapi METHOD PATH [BODY]: the replica's API; $code and $body.
rapi() {
    local reply
    reply=$(tap_api "$work/replica.sock" "$@")
    code=$(head -n 1 <<<"$reply")
    body=$(tail -n +2 <<<"$reply")
}
same() { # same OVERLAY CYCLE: qemu-img compare of an overlay QEMU has open with a point
    qemu-img compare -U -f qcow2 -F qcow2 "$1" "$disk/rp-$2.qcow2" >/dev/null
}
points() { # the cycles the replica lists for vda, "1 2 3"
    rapi GET "/v1/relationships/$rel/recovery-points"
    python3 -c "import json,sys; j=json.load(sys.stdin); print(' '.join(str(p['cycle']) for p in j['recovery_points']['vda']))" <<<"$body"
}
state_of() { virsh -q -c qemu:///system domstate "$1" 2>&1; }

echo "1..$tests"

tap_domain_start "$dom" || exit 1
# The NIC, in the persistent definition the primary sends (isolated network, no address).
echo "<network><name>$net</name></network>" >"$work/net.xml"
virsh -q -c qemu:///system net-create "$work/net.xml" >/dev/null &&
    virsh -q -c qemu:///system attach-interface "$dom" network "$net" --mac "$mac" \
        --model virtio --config >/dev/null || exit 1
tap_guest_write "$dom" 0x11 0 1M
tap_daemon_start replica "$work/replica.conf" || exit 1
tap_daemon_start primary "$work/primary.conf" || exit 1

# --- 1-2: replication with two points -------------------------------------------------------
out=$(pcli replica-enable "$dom" --server replica.example --port "$port" --address 127.0.0.1 \
    --frequency 86400 --wait 2>&1)
check "replica-enable --wait: the initial copy is acknowledged" test $? = 0
diag "$out"
tap_guest_write "$dom" 0x22 1M 1M
check "replica-sync: cycle 2" quiet pcli replica-sync "$dom"
rapi GET /v1/relationships
rel=$(python3 -c "import json,sys; print(json.load(sys.stdin)['relationships'][0]['id'])" <<<"$body")
disk=$work/storage/$rel/vda
check "the replica holds points 1 and 2 of vda" test "$(points)" = "1 2"

# --- 4-8: test failover while replication goes on ----------------------------------------------
sum2=$(sha256sum <"$disk/rp-2.qcow2")
out=$(rcli replica-failover "$dom" --test 2>&1)
check "replica-failover --test: the copy $dom-replica-test runs" \
    test $? = 0 -a "$(state_of "$dom-replica-test")" = running
diag "$out"
check "the test copy's overlay equals point 2" same "$disk/test-failover.qcow2" 2
tap_guest_write "$dom" 0x33 2M 1M
check "replica-sync during the test failover: cycle 3 applies" quiet pcli replica-sync "$dom"
out=$(rcli replica-failover-cancel "$dom" --test 2>&1)
check "replica-failover-cancel --test: the copy and its overlay are gone, point 2 unchanged" \
    test $? = 0 -a ! -e "$disk/test-failover.qcow2" -a "$(sha256sum <"$disk/rp-2.qcow2")" = "$sum2"
diag "$out"
virsh -q -c qemu:///system dominfo "$dom-replica-test" >/dev/null 2>&1
check "the test copy is undefined" test $? != 0

# --- 9-14: the API's errors ----------------------------------------------------------------------
rapi POST /v1/relationships/nosuch/failover
check "failover of an unknown domain: 404 unknown-domain" \
    test "$code" = 404 -a "$(field 'j["error"]["code"]')" = unknown-domain
rapi POST "/v1/relationships/$dom/failover" '{"point": 99}'
check "failover to an unknown point: 404 unknown-point" \
    test "$code" = 404 -a "$(field 'j["error"]["code"]')" = unknown-point
rapi POST "/v1/relationships/$dom/failover" '{"point": "oldest"}'
check "failover with a bad point: 400 invalid" test "$code" = 400
rapi POST "/v1/relationships/$dom/failover-complete"
check "complete without a failover: 409 wrong-state naming the state" \
    test "$code" = 409 -a "$(field '"Replicating" in j["error"]["message"]')" = True
out=$(rcli replica-failover-cancel "$dom" 2>&1)
check "replica-failover-cancel without a failover: exit 1, one line" \
    test $? = 1 -a "$(wc -l <<<"$out")" = 1
diag "$out"
out=$(rcli replica-failover "$dom" --ip "$mac,ipv4=192.0.2.10" 2>&1)
check "replica-failover --ip with a bad address: exit 1, the key named, nothing started" \
    test $? = 1 -a -n "$(grep "ipv4: '192.0.2.10' is not an IPv4 address" <<<"$out")" \
    -a "$(state_of "$dom-replica")" = "shut off"
diag "$out"

# --- 15-22: unplanned failover to an older point, networks, refused cycles, cancel -----------
sums=$(cd "$disk" && sha256sum rp-*.qcow2)
out=$(rcli replica-failover "$dom" --point 2 \
    --ip "$mac,ipv4=198.51.100.7/24,dns=192.0.2.53+192.0.2.54" 2>&1)
check "replica-failover --point 2: the standby runs" \
    test $? = 0 -a "$(state_of "$dom-replica")" = running
diag "$out"
warned=$(grep "^Warning: interface $mac: network '$prefix-fogone'.*left unconnected" <<<"$out")
unplugged=$(virsh -q -c qemu:///system dumpxml "$dom-replica" |
    grep -A3 "<interface type='ethernet'>" | grep "$mac")
check "the NIC's mapped network is missing: unconnected, a warning names its MAC" \
    test -n "$warned" -a -n "$unplugged"
check "failover TCP/IP: not applied, no guest agent (and the failover succeeded)" \
    test -n "$(grep "^Failover TCP/IP: not-applied: no guest agent" <<<"$out")"
check "the standby's disk equals point 2" same "$disk/failover.qcow2" 2
rapi GET "/v1/relationships/$dom"
check "the replica's state: FailedOver at epoch 2" \
    test "$(field 'j["state"]')" = FailedOver -a "$(field 'j["epoch"]')" = 2
tap_guest_write "$dom" 0x44 3M 1M
out=$(pcli replica-sync "$dom" 2>&1)
check "the primary's sync is refused (409: failed over)" \
    test $? != 0 -a -n "$(grep -i 'failed over' <<<"$out")"
diag "$out"
out=$(rcli replica-failover-cancel "$dom" 2>&1)
check "replica-failover-cancel: standby shut off, overlay gone, every point unchanged" \
    test $? = 0 -a "$(state_of "$dom-replica")" = "shut off" -a ! -e "$disk/failover.qcow2" \
    -a "$(cd "$disk" && sha256sum rp-*.qcow2)" = "$sums"
diag "$out"
pcli replica-resume "$dom" >/dev/null 2>&1
check "the primary's sync is accepted again" quiet pcli replica-sync "$dom"

# --- 23-25: failover to the point before the latest, by the standby's name; complete --------
all=$(points)
older=$(awk '{print $(NF - 1)}' <<<"$all")
kept=$(awk -v p="$older" '{ s = ""; for (i = 1; i <= NF; i++) if ($i <= p) s = s (s ? " " : "") $i; print s }' <<<"$all")
body=$(rcli replica-failover "$dom-replica" --point "$older" --json 2>>"$work/cli.err")
check "replica-failover --point $older --json (points: $all): the standby runs on it" \
    test "$(field 'j["point"]')" = "$older" -a "$(state_of "$dom-replica")" = running
check "the standby's disk equals point $older" same "$disk/failover.qcow2" "$older"
out=$(rcli replica-failover-complete "$dom" 2>&1)
check "replica-failover-complete: the points after $older are gone, its chain ($kept) stays" \
    test $? = 0 -a "$(points)" = "$kept" -a "$(state_of "$dom-replica")" = running
diag "$out" "points: $(points)"

[ "$failures" = 0 ]
