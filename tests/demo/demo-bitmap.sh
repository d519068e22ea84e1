#!/usr/bin/env bash
# Demo: the change tracking virt-replica is built on, shown with QEMU alone.
#
# It starts a QEMU with one qcow2 disk and no guest OS, adds a persistent dirty bitmap to the
# disk, simulates guest writes through the virtio-blk device (HMP qemu-io), shows how the
# bitmap's dirty byte count grows, quits QEMU cleanly and shows that the bitmap was stored in
# the qcow2 image. Nothing here uses libvirt or the virt-replica libraries.
#
# Needs qemu-system-x86_64, qemu-img and python3. Run it as root or as a user that can run
# QEMU; it uses KVM when /dev/kvm is usable and TCG otherwise.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
qmp_call="$here/qmp-call.py"

node=disk0
bitmap=vr-demo
dir=
qemu_pid=

say() { printf 'demo: %s\n' "$*"; }
step() { printf '\ndemo: == %s\n' "$*"; }
die() {
    printf 'demo: error: %s\n' "$*" >&2
    exit 1
}

cleanup() {
    # QEMU daemonized itself, so it is not our child: find it through its pid file.
    if [[ -n "$qemu_pid" ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$qemu_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$qemu_pid" 2>/dev/null || true
    fi
    if [[ -n "$dir" ]]; then
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

qmp() {
    python3 "$qmp_call" "$dir/qmp.sock" "$@"
}

# Dirty bytes recorded by the bitmap, read from query-named-block-nodes (flat).
bitmap_count() {
    qmp query-named-block-nodes '{"flat": true}' | python3 -c '
import json, sys
node, name = sys.argv[1], sys.argv[2]
for n in json.load(sys.stdin):
    if n.get("node-name") != node:
        continue
    for b in n.get("dirty-bitmaps", []):
        if b.get("name") == name:
            print(b["count"])
            sys.exit(0)
sys.exit("bitmap %r not found on node %r" % (name, node))
' "$node" "$bitmap"
}

# Simulated guest write through the virtio-blk device's BlockBackend, as in
# research/qemu-bitmaps.md section 5.3: HMP "qemu-io -d <QOM path of the backend>".
# qemu-io's own report ("wrote ... bytes") goes to QEMU's stdout, not to the monitor, so the
# HMP reply is empty on success; a non-empty reply is an HMP error such as an unknown device.
guest_write() {
    local pattern=$1 offset=$2 length=$3 command args out
    command="qemu-io -d /machine/peripheral/vda/virtio-backend \"write -P $pattern $offset $length\""
    say "HMP: $command"
    args=$(python3 -c 'import json, sys; print(json.dumps({"command-line": sys.argv[1]}))' \
        "$command")
    out=$(qmp human-monitor-command "$args")
    [[ "$out" == '""' ]] || die "HMP qemu-io failed: $out"
}

# The bitmap count must be what the writes imply, or the demo is not showing what it says.
expect_count() {
    local expected=$1 explanation=$2 count
    count=$(bitmap_count)
    say "bitmap count: $count dirty bytes -- $explanation"
    [[ "$count" == "$expected" ]] || die "expected $expected dirty bytes, QEMU reports $count"
}

for tool in qemu-system-x86_64 qemu-img python3; do
    command -v "$tool" >/dev/null || die "'$tool' not found (install qemu-system-x86, qemu-utils, python3)"
done

# DEMO_ACCEL=tcg forces TCG (KVM is used when /dev/kvm is usable otherwise).
if [[ "${DEMO_ACCEL:-}" != tcg && -r /dev/kvm && -w /dev/kvm ]]; then
    # QEMU 7.2 rejects "-accel kvm:tcg"; repeating -accel gives the same fallback.
    accel=(-accel kvm -accel tcg)
else
    accel=(-accel tcg)
fi

dir=$(mktemp -d /tmp/vr-demo.XXXXXX)

step "1. Create a 256 MiB qcow2 disk"
say "qemu-img create -f qcow2 $dir/disk.qcow2 256M"
qemu-img create -q -f qcow2 "$dir/disk.qcow2" 256M
say "persistent bitmaps need qcow2 v3 (compat 1.1), the default; raw images cannot store them"

step "2. Start QEMU paused (-S), no guest OS, the disk on a virtio-blk device 'vda'"
qemu-system-x86_64 -M q35 "${accel[@]}" -S -nodefaults -display none -m 64 \
    -qmp "unix:$dir/qmp.sock,server=on,wait=off" \
    -blockdev '{"driver":"qcow2","node-name":"'"$node"'","file":{"driver":"file","filename":"'"$dir"'/disk.qcow2"}}' \
    -device virtio-blk-pci,drive="$node",id=vda \
    -daemonize -pidfile "$dir/qemu.pid" 2>"$dir/qemu.log" ||
    die "QEMU did not start: $(cat "$dir/qemu.log")"
qemu_pid=$(<"$dir/qemu.pid")
version=$(qmp query-version | python3 -c '
import json, sys
v = json.load(sys.stdin)
print("%d.%d.%d (%s)" % (v["qemu"]["major"], v["qemu"]["minor"], v["qemu"]["micro"], v["package"]))')
kvm=$(qmp query-kvm | python3 -c 'import json, sys; print("KVM" if json.load(sys.stdin)["enabled"] else "TCG")')
say "QEMU $version running as pid $qemu_pid, accelerator $kvm, QMP on $dir/qmp.sock"

step "3. Add a persistent dirty bitmap '$bitmap' on node '$node'"
qmp block-dirty-bitmap-add '{"node": "'"$node"'", "name": "'"$bitmap"'", "persistent": true}' >/dev/null
say "from now on QEMU records every write to '$node' in the bitmap, at the default"
say "granularity of a qcow2 disk: one bit per 64 KiB"
expect_count 0 "nothing written yet"

step "4. Simulate guest writes through the device and watch the bitmap"
guest_write 0xab 1M 64k
expect_count 65536 "64 KiB at 1 MiB dirties exactly one 64 KiB granule"
guest_write 0xcd 8M 128k
expect_count 196608 "128 KiB at 8 MiB dirties two more granules"
guest_write 0xef 100M 4k
expect_count 262144 "a 4 KiB write at 100 MiB dirties a whole 64 KiB granule"
say "a replication cycle would read only these dirty granules, not the 256 MiB disk"

step "5. Quit QEMU cleanly: a persistent bitmap reaches the image only at a clean close"
say "while QEMU runs, the image has no bitmap yet (qemu-img info -U, read-only peek):"
running_bitmaps=$(qemu-img info -U --output=json "$dir/disk.qcow2" | python3 -c '
import json, sys
bitmaps = json.load(sys.stdin).get("format-specific", {}).get("data", {}).get("bitmaps", [])
print(", ".join(b["name"] for b in bitmaps) or "none")')
say "  bitmaps in the image file: $running_bitmaps"
say "qmp: quit"
qmp quit >/dev/null
for _ in $(seq 100); do
    kill -0 "$qemu_pid" 2>/dev/null || break
    sleep 0.1
done
kill -0 "$qemu_pid" 2>/dev/null && die "QEMU (pid $qemu_pid) did not exit after 'quit'"
qemu_pid=
say "QEMU exited"

step "6. The bitmap is stored in the qcow2 image"
say "qemu-img info $dir/disk.qcow2"
qemu-img info "$dir/disk.qcow2" | sed 's/^/demo:   /'
qemu-img info --output=json "$dir/disk.qcow2" | python3 -c '
import json, sys
bitmaps = json.load(sys.stdin).get("format-specific", {}).get("data", {}).get("bitmaps", [])
names = [b["name"] for b in bitmaps]
sys.exit(0 if sys.argv[1] in names else "bitmap %r missing from the image: %r" % (sys.argv[1], names))
' "$bitmap"
say "found bitmap '$bitmap' in the image: QEMU loads it again at the next start, so change"
say "tracking continues across restarts of the VM; a crash (SIGKILL) would lose it or leave"
say "it inconsistent, which the design answers with a resynchronization"

printf '\ndemo: done\n'
