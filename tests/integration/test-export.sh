#!/usr/bin/env bash
# The initial copy on external media, end to end through both daemons (Hyper-V's "send
# initial copy using external media" and Import-VMInitialReplication): a real QEMU domain
# under libvirtd with known writes, replication enabled with --initial export:DIR; the
# primary writes the first cycle to DIR (a manifest and one stream per disk, nothing else)
# and waits (WaitingForInitialReplication, health Warning) while its later cycles are
# answered 409 by the replica (counted as missed, no Error); a tampered and a truncated copy
# of the export are refused by `virt-replica replica-import` with a clear error and publish
# nothing; the real export is imported: its point is the disk at the cut (qemu-img compare
# with a reference image holding the same writes) and the standby domain is defined; the
# next cycles go over the network as small incrementals, the writes made while waiting
# included (the bitmap was kept), and their points match again; the export imported again is
# refused.
#
#   test-export.sh VR-TRANSFER VIRT-REPLICAD VIRT-REPLICA  (through run-isolated.sh --libvirt; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
. "$srcdir/lib-tap.sh"

daemon_bin=$2
cli=$3
tests=21

tap_work_dir vrexport
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
tap_pair_conf

api() { tap_api "$@"; }
field() { tap_field "$1"; }
status_of() { tap_status "$1" "$dom"; } # status_of SOCKET
start() { tap_daemon_start "$@"; }      # start NAME CONFIG
wait_for() { tap_wait_status "$1" "$2" "$dom" "$3"; } # wait_for SECONDS SOCKET EXPR
hmp() { virsh -q -c qemu:///system qemu-monitor-command "$dom" --hmp "$1"; }
# write_file FILE OFFSET LENGTH: FILE's bytes, in the guest and in the reference image.
write_file() {
    hmp "qemu-io -d $qdev \"write -s $1 $2 $3\"" >/dev/null &&
        qemu-io -f qcow2 -c "write -s $1 $2 $3" "$work/ref.qcow2" >/dev/null
}
# write PATTERN OFFSET LENGTH: in the guest, and the same in the reference image.
write() {
    hmp "qemu-io -d $qdev \"write -P $1 $2 $3\"" >/dev/null &&
        qemu-io -f qcow2 -c "write -P $1 $2 $3" "$work/ref.qcow2" >/dev/null
}
# same_as_ref IMAGE: the replica's point holds what the reference holds, byte for byte.
same_as_ref() {
    qemu-img compare -f qcow2 -F qcow2 "$work/ref.qcow2" "$1" >"$work/compare.out" 2>&1 ||
        { diag "qemu-img compare:" "$(cat "$work/compare.out")"; return 1; }
}
points() { find "$work/storage" -name 'rp-*.qcow2' 2>/dev/null | sort; }

echo "1..$tests"

# --- the domain ----------------------------------------------------------------------------
qemu-img create -q -f qcow2 "$work/ref.qcow2" 64M
tap_domain_start "$dom" || {
    diag "cannot start the domain"
    exit 1
}
write 0x5a 0 8M
write 0x11 20M 1M
# Random bytes do not compress: the stream is mostly payload (the tampered byte lands in one).
head -c $((2 * 1024 * 1024)) /dev/urandom >"$work/random.bin"
chmod 644 "$work/random.bin"
write_file "$work/random.bin" 10M 2M

start replica "$work/replica.conf" && start primary "$work/primary.conf" || exit 1

# --- 1-5: enable with the export; the primary waits ------------------------------------------
export_dir=$work/media/initial
"$cli" --socket "$work/primary.sock" replica-enable "$dom" --server replica.example \
    --port "$port" --address 127.0.0.1 --frequency 10 --initial "export:$export_dir" >"$work/enable.out" 2>&1
enable_status=$?
diag "$(cat "$work/enable.out")"
status_of "$work/primary.sock"
rel=$(field 'j["id"]')
check "replica-enable --initial export:DIR: exit 0, a relationship" test "$enable_status" = 0 -a -n "$rel"
check "the first cycle is exported: state WaitingForInitialReplication, health Warning" \
    wait_for 60 "$work/primary.sock" 'j["last_cycle"] is not None and j["state"] == "WaitingForInitialReplication" and j["health"] == "Warning"'
files=$(cd "$export_dir" 2>/dev/null && ls -A | tr '\n' ' ')
mode=$(stat -c %a "$export_dir" 2>/dev/null)
diag "export directory (mode $mode): $files"
check "the export directory (made 0700) holds exactly manifest.json and vda.stream" \
    test "$files" = "manifest.json vda.stream " -a "$mode" = 700
body=$(cat "$export_dir/manifest.json")
size=$(stat -c %s "$export_dir/vda.stream")
check "the manifest: relationship, cycle 1, base 0, domain and its XML, vda's file, size and digest, the primary's identity" \
    test "$(field 'j["relationship"] == "'"$rel"'" and j["cycle"] == 1 and j["base"] == 0 and j["domain"]["name"] == "'"$dom"'" and "<domain" in j["domain"]["xml"] and j["disks"][0]["target"] == "vda" and j["disks"][0]["file"] == "vda.stream" and j["disks"][0]["size"] == '"$size"' and len(j["disks"][0]["digest"]) == 64 and j["primary"] == "primary1"')" = True
check "later cycles are answered with a conflict: counted missed, still waiting, no Error, nothing on the replica" \
    wait_for 40 "$work/primary.sock" 'j["stats"]["cycles_missed"] >= 1 and j["state"] == "WaitingForInitialReplication" and j["stats"]["cycles_failed"] == 0'
[ -z "$(points)" ] || diag "points before the import: $(points)"
reply=$(api "$work/primary.sock" POST "/v1/relationships/$dom/sync")
body=$(tail -n +2 <<<"$reply")
diag "sync while waiting: $(head -n 1 <<<"$reply") $(field 'j["error"]["message"]')"
sync_status="$(head -n 1 <<<"$reply") $(field 'j["error"]["code"]')"
sync_says=$(field '"waiting for the replica to import the initial copy" in j["error"]["message"]')
status_of "$work/primary.sock"
check "replica-sync while waiting: 502 cycle-failed, waiting for the import (logged so too); still waiting, no Error" \
    test "$sync_status" = "502 cycle-failed" -a "$sync_says" = True -a \
    "$(field 'j["state"]')" = WaitingForInitialReplication -a \
    -n "$(grep 'waiting for the replica to import the initial copy' "$work/primary.err")"
# Written while the primary waits: the next acknowledged cycle must carry it.
write 0xab 4M 256k

# --- 6-10: a tampered and a truncated copy are refused, nothing published --------------------
cp -a "$export_dir" "$work/tampered"
python3 - "$work/tampered/vda.stream" <<'EOF'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(os.path.getsize(sys.argv[1]) // 2)
    b = f.read(1)
    f.seek(-1, 1)
    f.write(bytes([b[0] ^ 0x40]))
EOF
"$cli" --socket "$work/replica.sock" replica-import "$work/tampered" >"$work/tampered.out" 2>&1
st=$?
diag "$(cat "$work/tampered.out")"
check "replica-import of a tampered export: exit 1, one error line naming the stream" \
    test "$st" = 1 -a "$(wc -l <"$work/tampered.out")" = 1 -a -n "$(grep 'vda.stream' "$work/tampered.out")"
cp -a "$export_dir" "$work/truncated"
truncate -s -4096 "$work/truncated/vda.stream"
reply=$(api "$work/replica.sock" POST /v1/imports "{\"path\": \"$work/truncated\"}")
body=$(tail -n +2 <<<"$reply")
diag "$(head -n 1 <<<"$reply") $(field 'j["error"]["message"]')"
check "POST /v1/imports of a truncated export: 422 invalid-export" \
    test "$(head -n 1 <<<"$reply") $(field 'j["error"]["code"]')" = "422 invalid-export"
cp -a "$export_dir" "$work/badmanifest"
sed -i 's/"cycle": 1/"cycle": 2/' "$work/badmanifest/manifest.json"
reply=$(api "$work/replica.sock" POST /v1/imports "{\"path\": \"$work/badmanifest\"}")
body=$(tail -n +2 <<<"$reply")
diag "$(head -n 1 <<<"$reply") $(field 'j["error"]["message"]')"
check "an export whose manifest lies about its stream: 422 invalid-export" \
    test "$(head -n 1 <<<"$reply") $(field 'j["error"]["code"]')" = "422 invalid-export"
check "nothing was published by the refused imports, no standby defined" \
    sh -c "test -z \"$(points)\" && ! virsh -q -c qemu:///system domstate '$dom-replica' >/dev/null 2>&1"
status_of "$work/primary.sock"
check "the primary still waits (no Error)" test "$(field 'j["state"]')" = WaitingForInitialReplication

# --- 11-14: the real import -------------------------------------------------------------------
"$cli" --socket "$work/replica.sock" replica-import "$export_dir" >"$work/import.out" 2>&1
st=$?
diag "$(cat "$work/import.out")"
check "replica-import DIR: exit 0" test "$st" = 0
check "the replica holds point 1 of vda, and only it" \
    test "$(points)" = "$work/storage/$rel/vda/rp-1.qcow2"
# The reference without the write made after the cut: undone on a copy.
cp "$work/ref.qcow2" "$work/ref-now.qcow2"
qemu-io -f qcow2 -c "write -P 0x5a 4M 256k" "$work/ref.qcow2" >/dev/null
check "point 1 is the disk at the cut, byte for byte (qemu-img compare)" \
    same_as_ref "$work/storage/$rel/vda/rp-1.qcow2"
mv "$work/ref-now.qcow2" "$work/ref.qcow2"
state=$(virsh -q -c qemu:///system domstate "$dom-replica" 2>&1)
check "the standby domain $dom-replica is defined from the manifest's XML (state: $state)" \
    test "$state" = "shut off"

# --- 15-19: the next cycles are small incrementals over the network ---------------------------
reply=$(api "$work/primary.sock" POST "/v1/relationships/$dom/sync")
body=$(tail -n +2 <<<"$reply")
diag "sync after the import: $body"
seq=$(field 'j["seq"]')
check "the first cycle after the import is acknowledged, carrying the 256 KiB written while waiting and no more than 1 MiB" \
    test "$(head -n 1 <<<"$reply")" = 200 -a "$(field 'j["bytes"] >= 262144 and j["bytes"] <= 1048576')" = True
check "its point holds every write (qemu-img compare)" \
    same_as_ref "$work/storage/$rel/vda/rp-$seq.qcow2"
status_of "$work/primary.sock"
check "the primary replicates: state Replicating" test "$(field 'j["state"]')" = Replicating
write 0xcd 40M 64k
reply=$(api "$work/primary.sock" POST "/v1/relationships/$dom/sync")
body=$(tail -n +2 <<<"$reply")
diag "sync after more writes: $body"
seq=$(field 'j["seq"]')
check "a sync after more writes: acknowledged, at most 1 MiB (an incremental, not a full copy)" \
    test "$(head -n 1 <<<"$reply")" = 200 -a "$(field 'j["bytes"] <= 1048576')" = True
check "its point matches the disk again (qemu-img compare)" \
    same_as_ref "$work/storage/$rel/vda/rp-$seq.qcow2"

# --- 20: the same export again ----------------------------------------------------------------
before=$(points)
reply=$(api "$work/replica.sock" POST /v1/imports "{\"path\": \"$export_dir\"}")
body=$(tail -n +2 <<<"$reply")
diag "$(head -n 1 <<<"$reply") $(field 'j["error"]["message"]')"
check "importing the export again: 409 conflict (the disk has points), the points untouched" \
    test "$(head -n 1 <<<"$reply") $(field 'j["error"]["code"]')" = "409 conflict" -a \
    "$(points)" = "$before"
[ "$failures" = 0 ]
