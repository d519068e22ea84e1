#!/usr/bin/env bash
# Demo: a domain replicated from a primary host to a replica host over a dedicated replication
# network, on one machine, as issue 6 tells it ("The demo: ./run demo").
#
#   demo-replication.sh [BUILD-DIR]      (as root; BUILD-DIR defaults to build/)
#
# VR_DEMO_ACCEL=tcg runs the domain under TCG even where KVM is usable.
#
# The two hosts are network namespaces, vrdemo-pri (the primary) and vrdemo-rep (the replica),
# joined by two veth pairs: management (10.210.0.1 - 10.210.0.2) and replication
# (10.211.0.1 - 10.211.0.2). Both ends of a pair have the same name, vrdemo-mgmt or
# vrdemo-repl, as the same network's interface has on every host; the libvirt network
# vrdemo-replication names vrdemo-repl as its bridge (<forward mode='bridge'/>: an interface
# libvirt does not manage), so "network:vrdemo-replication" is each host's replication address
# in its own namespace (docs/network.md). It is defined, never started. In the primary's
# namespace replica.example resolves to the replica's MANAGEMENT address, as DNS would on a
# real primary; replica-enable names the replica's replication address with --address, so
# TLS verifies replica.example while the bytes cross the replication pair.
#
# One virt-replicad runs in each namespace; both reach the one libvirtd over its unix socket
# (unix sockets with a path are not network-namespaced), so the standby domain gets a name of
# its own (standby-name-rule = %n-replica). The certificates come from
# tests/integration/make-pki.sh: server-ok (replica.example) for the replica, client-ok
# (CN primary1) for the primary.
#
# The domain is a real QEMU (KVM when /dev/kvm is usable, else TCG) with a 256 MiB qcow2 disk
# and no OS; the "guest" writes through HMP qemu-io. Most writes copy random bytes from a
# file the domain has as a read-only CD-ROM: random, so that compression cannot hide them
# from the interface counters; a CD-ROM, so that QEMU may read the file under AppArmor too.
#
# Every check that fails stops the demo with "demo: FAILED: ..." and exit status 1. The demo
# removes everything it made on exit (processes, namespaces, /etc/netns entries, domains,
# the network, files), and at start whatever a killed earlier run left behind.
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -euo pipefail

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(readlink -f "${1:-$root/build}")

daemon=$build/plugin/virt-replicad
cli_dir=$build/virsh-ext # virt-replica and the virsh wrapper

nsp=vrdemo-pri # the primary host
nsr=vrdemo-rep # the replica host
mgmt=vrdemo-mgmt
repl=vrdemo-repl
p_mgmt_ip=10.210.0.1 r_mgmt_ip=10.210.0.2
p_repl_ip=10.211.0.1 r_repl_ip=10.211.0.2
net=vrdemo-replication
dom=vrdemo-vm
standby=$dom-replica
work=/var/tmp/vrdemo-replication
lock=/run/vrdemo-replication.lock
psock=$work/primary.sock
rsock=$work/replica.sock
MiB=$((1024 * 1024))

say() { printf 'demo: %s\n' "$*"; }
step() { printf '\ndemo: == %s\n' "$*"; }
die() {
    printf 'demo: FAILED: %s\n' "$*" >&2
    exit 1
}

# --- cleanup ------------------------------------------------------------------------------

# Everything the demo makes, also what a killed run left. Safe to call more than once.
pids=()
remove_all() {
    local pid d
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    pids=()
    # Whatever still runs in the namespaces was started by a demo (qemu-nbd of the replica,
    # the daemons of a killed run).
    for ns in "$nsp" "$nsr"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    for d in "$dom" "$standby"; do
        virsh -q destroy "$d" >/dev/null 2>&1 || true
        virsh -q undefine "$d" >/dev/null 2>&1 || true
    done
    virsh -q net-destroy "$net" >/dev/null 2>&1 || true
    virsh -q net-undefine "$net" >/dev/null 2>&1 || true
    for ns in "$nsp" "$nsr"; do
        ip netns del "$ns" 2>/dev/null || true # its veths go with it
        rm -rf "/etc/netns/$ns"
    done
    rmdir /etc/netns 2>/dev/null || true # only when empty: someone else's entries stay
    rm -rf "$work"
}

failed_logs() {
    local log
    for log in "$work/primary.log" "$work/replica.log"; do
        [[ -s "$log" ]] || continue
        printf '\ndemo: the last lines of %s:\n' "$log" >&2
        tail -n 15 "$log" | sed 's/^/    /' >&2
    done
}

on_exit() {
    local status=$?
    trap - EXIT
    if ((status != 0)); then
        failed_logs
        say "exit status $status; cleaning up"
    else
        step "Clean up"
    fi
    remove_all
    say "removed the daemons, namespaces, /etc/netns entries, domains $dom and $standby," \
        "network $net and $work"
    exit "$status"
}

# --- helpers ------------------------------------------------------------------------------

# A command line as one would type it: words quoted only when they need it.
shown() {
    local out='' arg
    for arg in "$@"; do
        if [[ "$arg" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            out+=" $arg"
        else
            out+=" '${arg//\'/\'\\\'\'}'"
        fi
    done
    printf '%s' "${out# }"
}

# on HOST COMMAND...: run COMMAND on the primary or replica host (in its namespace, talking
# to its virt-replicad), showing it as a prompt first. at HOST COMMAND...: the same, unseen.
at() {
    local host=$1
    shift
    case $host in
    primary) VIRT_REPLICA_SOCKET=$psock ip netns exec "$nsp" "$@" ;;
    replica) VIRT_REPLICA_SOCKET=$rsock ip netns exec "$nsr" "$@" ;;
    esac
}
on() {
    printf '[%s]# %s\n' "$1" "$(shown "${@:2}")"
    at "$@"
}

# json HOST EXPR COMMAND...: a Python expression over COMMAND's JSON output (as j).
json() {
    local host=$1 expr=$2
    shift 2
    at "$host" "$@" | python3 -c "import json, sys; j = json.load(sys.stdin); print($expr)"
}

# check WHAT COMMAND...: stop the demo unless COMMAND succeeds.
check() {
    local what=$1
    shift
    "$@" || die "$what"
    say "ok: $what"
}

hmp() { virsh -q qemu-monitor-command "$dom" --hmp "$1"; }

# guest_write ARGS: a guest write through the virtio-blk device (qemu-io's "write ARGS").
# qemu-io reports to QEMU's stdout, so HMP answers nothing on success.
guest_write() {
    local out
    printf '[primary]# %s\n' "$(shown virsh qemu-monitor-command "$dom" --hmp \
        "qemu-io -d $qdev \"write $*\"")"
    out=$(hmp "qemu-io -d $qdev \"write $*\"")
    [[ -z "$out" ]] || die "HMP qemu-io 'write $*' failed: $out"
}

# random_write OFFSET MIB: MIB MiB of the random file at OFFSET; counted in $written.
written=0
random_write() {
    guest_write -s "$random" "$1" "$2M"
    written=$((written + $2 * MiB))
}

counter() { ip netns exec "$1" cat "/sys/class/net/$2/statistics/$3"; }

# counters NAME: the tx and rx bytes of the four interfaces into ${NAME[...]}.
counters() {
    local -n into=$1
    local ns dev dir
    for ns in "$nsp" "$nsr"; do
        for dev in "$repl" "$mgmt"; do
            for dir in tx rx; do
                # shellcheck disable=SC2034 # a nameref: the caller's array
                into["$ns/$dev/$dir"]=$(counter "$ns" "$dev" "${dir}_bytes")
            done
        done
    done
}

status_field() { json primary "$1" virt-replica replica-status "$dom" --json; }

# A cycle the scheduler started before our writes would answer replica-sync without them:
# wait until none runs, so that the sync's cycle is cut after them.
wait_idle() {
    for _ in $(seq 600); do
        [[ "$(status_field 'j.get("cycle_running", False)')" == False ]] && return 0
        sleep 0.2
    done
    die "a cycle of $dom still runs after 120 s"
}

# sync_now MIN-BYTES: virsh replica-sync on the primary; the recovery point the cycle made on
# the replica must hold MIN-BYTES of its own (not in its backing chain). Sets $last_seq.
sync_now() {
    local seq point own what
    wait_idle
    on primary virsh replica-sync "$dom" || die "replica-sync failed"
    # The scheduler's next cycle comes a whole period after this one: it is the last.
    seq=$(status_field 'j["last_cycle"]["seq"]')
    ((seq > last_seq)) || die "replica-sync made no new cycle (last cycle $seq)"
    last_seq=$seq
    point=$work/replica-storage/$rel/vda/rp-$seq.qcow2
    own=$(at replica qemu-img map -U -f qcow2 --output=json "$point" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))')
    what="the replica's new point rp-$seq.qcow2 holds $own bytes of its own"
    if (($1 == 0)); then
        say "ok: $what (nothing was written since the last cycle)"
    else
        check "$what, at least the $(($1 / MiB)) MiB written" test "$own" -ge "$1"
    fi
}

# --- preflight ----------------------------------------------------------------------------

[[ $(id -u) -eq 0 ]] || die "run it as root: it makes network namespaces and libvirt domains"
for tool in ip certtool qemu-img qemu-io virsh python3 flock; do
    command -v "$tool" >/dev/null || die "'$tool' is missing (./run demo installs it)"
done
for bin in "$daemon" "$cli_dir/virt-replica" "$cli_dir/virsh"; do
    [[ -x "$bin" ]] || die "'$bin' is missing: build the tree first (ninja -C $build)"
done
# The wrapper first: `virsh replica-*` is virt-replica, every other command libvirt's virsh.
export PATH="$cli_dir:$PATH"
export VIRT_REPLICA="$cli_dir/virt-replica" VIRSH_REAL=/usr/bin/virsh
export LIBVIRT_DEFAULT_URI=qemu:///system
virsh -q version >/dev/null 2>&1 || die "libvirtd does not answer on qemu:///system"

exec 9>"$lock"
flock -n 9 || die "another demo-replication.sh runs (it holds $lock)"
started=$SECONDS
remove_all # what a killed run left behind
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$work"
chmod 755 "$work" # QEMU (user libvirt-qemu) opens the disk and the CD-ROM file here

# --- 1: the hosts -------------------------------------------------------------------------

step "1. Two hosts: network namespaces $nsp (primary) and $nsr (replica)"
say "joined by a management pair ($mgmt) and a replication pair ($repl) of veths"
ip netns add "$nsp"
ip netns add "$nsr"
for ns in "$nsp" "$nsr"; do
    # No IPv6: its neighbour discovery would add noise to the interface counters.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true # no IPv6 at all: fine
done
ip link add "$mgmt" netns "$nsp" type veth peer name "$mgmt" netns "$nsr"
ip link add "$repl" netns "$nsp" type veth peer name "$repl" netns "$nsr"
ip -n "$nsp" addr add "$p_mgmt_ip/24" dev "$mgmt"
ip -n "$nsp" addr add "$p_repl_ip/24" dev "$repl"
ip -n "$nsr" addr add "$r_mgmt_ip/24" dev "$mgmt"
ip -n "$nsr" addr add "$r_repl_ip/24" dev "$repl"
for ns in "$nsp" "$nsr"; do
    for dev in lo "$mgmt" "$repl"; do ip -n "$ns" link set dev "$dev" up; done
done
for ns in "$nsp" "$nsr"; do
    for dev in "$mgmt" "$repl"; do
        for _ in $(seq 50); do
            [[ "$(ip netns exec "$ns" cat "/sys/class/net/$dev/operstate")" == up ]] && break
            sleep 0.1
        done
    done
done
# ip netns exec bind-mounts /etc/netns/NS/hosts over /etc/hosts: the hosts' "DNS".
mkdir -p "/etc/netns/$nsp" "/etc/netns/$nsr"
printf '127.0.0.1 localhost\n%s replica.example\n' "$r_mgmt_ip" >"/etc/netns/$nsp/hosts"
printf '127.0.0.1 localhost\n%s primary1\n' "$p_mgmt_ip" >"/etc/netns/$nsr/hosts"
on primary ip -br -4 addr show
on replica ip -br -4 addr show
on primary getent hosts replica.example
check "replica.example is the replica's management address $r_mgmt_ip on the primary" \
    test "$(at primary getent hosts replica.example | awk '{print $1}')" = "$r_mgmt_ip"
on primary ip route get "$r_mgmt_ip"
on primary ip route get "$r_repl_ip"

step "2. The libvirt network $net: the replication interface of every host"
cat >"$work/network.xml" <<EOF
<network>
  <name>$net</name>
  <forward mode='bridge'/>
  <bridge name='$repl'/>
</network>
EOF
cat "$work/network.xml"
virsh -q net-define "$work/network.xml" >/dev/null
on primary virsh net-list --all
say "defined, not started: network:$net is the address of interface $repl in the caller's" \
    "namespace (docs/network.md)"

step "3. A private CA and the hosts' certificates (certtool, tests/integration/make-pki.sh)"
pki=$work/pki
sh "$root/tests/integration/make-pki.sh" "$pki" >"$work/make-pki.log" 2>&1 ||
    die "make-pki.sh failed: $(tail -n 3 "$work/make-pki.log")"
for what in ca:"the CA" server-ok:"the replica" client-ok:"the primary"; do
    file=${what%%:*}
    printf '%-12s %-14s %s\n' "${what#*:}" "$file.pem" "$(certtool -i --infile "$pki/$file.pem" |
        sed -n 's/^\s*Subject: //p; s/^\s*DNSname: /DNS:/p' | paste -sd ' ')"
done

# --- 2: the daemons -----------------------------------------------------------------------

step "4. The daemons: virt-replicad in each namespace"
mkdir -p "$work/replica-storage"
cat >"$work/replica.conf" <<EOF
# the replica host: receives on its replication address only
[daemon]
state-dir = $work/replica-state
socket = $rsock

[certificates]
ca = $pki/ca.pem
cert = $pki/server-ok.pem
key = $pki/server-ok-key.pem
crl = $pki/crl.pem

[replica]
enabled = true
listen = network:$net
server-name = replica.example
# every cycle a recovery point (the default keeps one an hour)
point-interval = 0
# primary and replica share one libvirtd here: the standby needs a name of its own
standby-name-rule = %n-replica

# Hyper-V's "allow replication from the specified servers"
[authorization:primary1]
storage = $work/replica-storage
trust-group = demo
EOF
cat >"$work/primary.conf" <<EOF
# the primary host
[daemon]
state-dir = $work/primary-state
socket = $psock

[certificates]
ca = $pki/ca.pem
cert = $pki/client-ok.pem
key = $pki/client-ok-key.pem
crl = $pki/crl.pem
EOF
sed 's/^/    /' "$work/replica.conf" "$work/primary.conf"
for host in replica primary; do
    on "$host" "$daemon" --config "$work/$host.conf" --check-config ||
        die "virt-replicad --check-config refused $work/$host.conf"
done

# start HOST: its daemon in the background, waited for until its API answers. Lock fd 9 is
# not inherited: a daemon left by a killed run must not keep the next run out.
start_daemon() {
    local host=$1 ns=$nsp pid
    [[ $host == replica ]] && ns=$nsr
    printf '[%s]# %s &\n' "$host" "$(shown "$daemon" --config "$work/$host.conf")"
    ip netns exec "$ns" "$daemon" --config "$work/$host.conf" >>"$work/$host.log" 2>&1 9>&- &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 100); do
        at "$host" virt-replica --timeout 2 replica-list >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    die "the $host's virt-replicad did not start"
}
start_daemon replica
start_daemon primary
on replica virsh replica-server-config
on replica ss -ltnH
check "the replica listens on its replication address $r_repl_ip:8443 only" \
    test "$(at replica ss -ltnH | awk '$4 ~ /:8443$/ {print $4}')" = "$r_repl_ip:8443"

# --- 3: the domain ------------------------------------------------------------------------

step "5. The domain $dom: QEMU with a 256 MiB qcow2 disk and no OS"
accel=qemu
[[ -w /dev/kvm && "${VR_DEMO_ACCEL:-auto}" != tcg ]] && accel=kvm
disk=$work/$dom.qcow2
random=$work/random.img
qemu-img create -q -f qcow2 "$disk" 256M
head -c $((32 * MiB)) /dev/urandom >"$random"
chmod 644 "$random"
cat >"$work/$dom.xml" <<EOF
<domain type='$accel'>
  <name>$dom</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='$random'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
virsh -q define "$work/$dom.xml" >/dev/null
virsh -q start "$dom" >/dev/null || die "cannot start the domain $dom"
on primary virsh domblklist "$dom"
qdev=$(virsh -q qemu-monitor-command "$dom" '{"execute":"query-block"}' | python3 -c '
import json, sys
for b in json.load(sys.stdin)["return"]:
    if b.get("inserted", {}).get("image", {}).get("filename") == sys.argv[1]:
        print(b["qdev"])
' "$disk")
[[ -n "$qdev" ]] || die "no block device of $dom has $disk inserted"
say "running under $([[ $accel == kvm ]] && echo KVM || echo TCG); vda is $qdev in QEMU"
say "the guest writes 32 MiB of random data at 0 and a 1 MiB pattern 0x5a at 200 MiB:"
random_write 0 32
guest_write -P 0x5a 200M 1M

declare -A before=() after=()
counters before

# --- 4: replication -----------------------------------------------------------------------

step "6. replica-enable: the initial replication"
on primary virsh replica-enable "$dom" --server replica.example --address "$r_repl_ip" \
    --network "network:$net" --frequency 30 --wait || die "replica-enable failed"
rel=$(status_field 'j["id"]')
last_seq=$(status_field 'j["last_cycle"]["seq"]')
check "the primary replicates $dom as relationship '$rel', health Normal" \
    test "$(status_field 'j["state"] + " " + j["health"]')" = "Replicating Normal"

step "7. The standby domain on the replica host"
for _ in $(seq 150); do
    virsh -q domstate "$standby" >/dev/null 2>&1 && break
    sleep 0.2
done
on replica virsh dominfo "$standby" | grep -E '^(\[replica\]|(Name|UUID|State|Autostart):)'
check "the standby $standby is defined and shut off" \
    test "$(virsh -q domstate "$standby" 2>&1)" = "shut off"
on replica virsh domblklist "$standby"
on replica virsh metadata "$standby" https://virt-replica.org/xmlns/standby/1 --config
say "it is never started outside a failover: its disk is the failover overlay, which only a" \
    "failover creates on top of a recovery point:"
on replica ls "$work/replica-storage/$rel/vda"
check "no failover overlay exists" test ! -e "$work/replica-storage/$rel/vda/failover.qcow2"
if out=$(on replica virsh start "$standby" 2>&1); then
    printf '%s\n' "$out"
    die "the standby $standby started outside a failover"
fi
printf '%s\n' "$out"
check "virsh start $standby is refused; the standby is still shut off" \
    test "$(virsh -q domstate "$standby" 2>&1)" = "shut off"

# Three rounds: writes, then a cycle cut now.
round=0
for plan in "40M 8 0xa1 44M" "100M 12 0xa2 100M" "48M 24 0xa3 60M"; do
    read -r offset mib pattern mark <<<"$plan"
    round=$((round + 1))
    step "$((7 + round)). Round $round: the guest writes $mib MiB, then replica-sync"
    written_before=$written
    random_write "$offset" "$mib"
    guest_write -P "$pattern" "$mark" 64k
    sync_now $((written - written_before))
done

step "11. replica-status on the primary; the recovery points on the replica"
on primary virsh replica-status "$dom"
echo
on replica virsh replica-recovery-points "$dom"

# --- 5: the last cut, the counters, the comparison ----------------------------------------

step "12. The last cycle, cut while the domain is paused"
on primary virsh suspend "$dom"
sync_now 0
final=$last_seq
counters after

step "13. Interface counters, before replica-enable and now"
say "(/sys/class/net/IF/statistics/{tx,rx}_bytes in each host's namespace)"
printf '%-8s %-12s %12s %12s %12s %12s\n' host interface "tx before" "tx now" "rx before" \
    "rx now"
for ns in "$nsp" "$nsr"; do
    host=primary
    [[ $ns == "$nsr" ]] && host=replica
    for dev in "$repl" "$mgmt"; do
        printf '%-8s %-12s %12s %12s %12s %12s\n' "$host" "$dev" \
            "${before[$ns/$dev/tx]}" "${after[$ns/$dev/tx]}" \
            "${before[$ns/$dev/rx]}" "${after[$ns/$dev/rx]}"
    done
done
repl_tx=$((${after[$nsp/$repl/tx]} - ${before[$nsp/$repl/tx]}))
mgmt_bytes=0
for ns in "$nsp" "$nsr"; do
    mgmt_bytes=$((mgmt_bytes + ${after[$ns/$mgmt/tx]} - ${before[$ns/$mgmt/tx]}))
done
say "the guest wrote $((written / MiB)) MiB of random data (and 1.2 MiB of patterns)"
what="the replication pair carried the data: $repl tx on the primary +$repl_tx bytes"
check "$what >= the $written written" test "$repl_tx" -ge "$written"
check "the management pair carried (almost) nothing: +$mgmt_bytes bytes both ways < 64 KiB" \
    test "$mgmt_bytes" -lt 65536

step "14. Byte for byte: the latest recovery point against the primary's disk"
latest=$(json replica 'j["recovery_points"]["vda"][-1]["cycle"]' \
    virt-replica replica-recovery-points "$dom" --json)
check "the replica's latest point of vda is cycle $final, the paused cut" test "$latest" = "$final"
point=$work/replica-storage/$rel/vda/rp-$latest.qcow2
say "the domain is destroyed, so that QEMU closes its image (it was paused since the cut)"
on primary virsh destroy "$dom"
on replica qemu-io -r -f qcow2 -c 'read -P 0x5a 200M 1M' -c 'read -P 0xa1 44M 64k' \
    -c 'read -P 0xa2 100M 64k' -c 'read -P 0xa3 60M 64k' "$point" | tee "$work/patterns.out"
check "the point reads every pattern the guest wrote" \
    test -z "$(grep -i 'verification failed\|error' "$work/patterns.out")"
on replica qemu-img compare -f qcow2 -F qcow2 "$disk" "$point" ||
    die "recovery point $latest differs from the primary's disk"
say "ok: recovery point $latest is byte for byte the primary's disk at the cut"

say "done in $((SECONDS - started)) s"
