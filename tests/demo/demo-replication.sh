#!/usr/bin/env bash
# Demo: a domain replicated from a primary host to a replica host over a dedicated replication
# network, on one machine, as issue 6 tells it ("The demo: ./run demo"); then, as issue 7
# tells it, a test failover on the replica host and a planned failover with reverse
# replication started on the primary host (docs/failover.md).
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
# its own (standby-name-rule = %n-replica). Both daemons run both roles (the primary's replica
# role, server-name primary.example, listening on its own replication address, receives the
# reverse replication after the planned failover), so their certificates come from
# tests/integration/make-pki.sh with both extended key usages, clientAuth and serverAuth:
# both-replica (CN replica.example) and both-primary (CN primary.example).
#
# The domain is a real QEMU (KVM when /dev/kvm is usable, else TCG) with a 256 MiB qcow2 disk
# and no OS; the "guest" writes through HMP qemu-io. Most writes copy random bytes from a
# file the domain has as a read-only CD-ROM: random, so that compression cannot hide them
# from the interface counters; a CD-ROM, so that QEMU may read the file under AppArmor too.
# Its one NIC is on vrdemo-prod, an isolated libvirt network of the demo's (no address, no
# forward); a test failover connects its copy's NIC to vrdemo-test, another isolated one
# ([replica] test-network). Both are transient: they go when the demo destroys them.
#
# The libvirt hook is not installed by the demo (it would be a change to the host's libvirt):
# where the hook would refuse a start, the demo shows the domain's marker and runs the built
# hook program on the domain's XML as libvirtd would run it.
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
prodnet=vrdemo-prod # the domain's NIC: an isolated network of this "site"
testnet=vrdemo-test # the test failover's copy: another isolated one
dom=vrdemo-vm
standby=$dom-replica
testcopy=$standby-test # the test failover's copy of the standby
hook=$build/virsh-ext/virt-replica-hook
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
    # The test copy, the standby and the domain; after a failover either may carry a marker
    # and run on an overlay: both go with $work.
    for d in "$testcopy" "$standby" "$dom"; do
        virsh -q destroy "$d" >/dev/null 2>&1 || true
        virsh -q undefine "$d" --nvram >/dev/null 2>&1 ||
            virsh -q undefine "$d" >/dev/null 2>&1 || true
    done
    virsh -q net-destroy "$net" >/dev/null 2>&1 || true
    virsh -q net-undefine "$net" >/dev/null 2>&1 || true
    for d in "$prodnet" "$testnet"; do # transient: destroyed is gone
        virsh -q net-destroy "$d" >/dev/null 2>&1 || true
    done
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
    trap '' INT TERM # a second signal must not cut the cleanup short
    if ((status != 0)); then
        failed_logs
        say "exit status $status; cleaning up"
    else
        step "Clean up"
    fi
    remove_all
    say "removed the daemons, namespaces, /etc/netns entries, domains $dom, $standby and" \
        "$testcopy, networks $net, $prodnet and $testnet, and $work (the stores of both" \
        "hosts, the overlays, the relationship's state on both sides)"
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

# guest_write_on HOST DOMAIN QDEV ARGS: a guest write of DOMAIN through its virtio-blk device
# QDEV (qemu-io's "write ARGS"), shown as typed on HOST. qemu-io reports to QEMU's stdout, so
# HMP answers nothing on success.
guest_write_on() {
    local host=$1 domain=$2 dev=$3 out
    shift 3
    printf '[%s]# %s\n' "$host" "$(shown virsh qemu-monitor-command "$domain" --hmp \
        "qemu-io -d $dev \"write $*\"")"
    out=$(virsh -q qemu-monitor-command "$domain" --hmp "qemu-io -d $dev \"write $*\"")
    [[ -z "$out" ]] || die "HMP qemu-io 'write $*' on $domain failed: $out"
}

# guest_write ARGS: the same on the primary's domain.
guest_write() { guest_write_on primary "$dom" "$qdev" "$@"; }

# qdev_of DOMAIN FILE: QEMU's name of the block device of DOMAIN that has FILE inserted. The
# image's name is FILE, or QEMU's "json:{...}" of FILE on its backing chain (a failover
# overlay, whose backing files are the recovery points).
qdev_of() {
    virsh -q qemu-monitor-command "$1" '{"execute":"query-block"}' | python3 -c '
import json, sys
for b in json.load(sys.stdin)["return"]:
    name = b.get("inserted", {}).get("image", {}).get("filename", "")
    if name == sys.argv[1] or (name.startswith("json:") and json.dumps(sys.argv[1]) in name):
        print(b["qdev"])
' "$2"
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

# status_at HOST NAME EXPR: EXPR over the status of relationship NAME on HOST.
status_at() { json "$1" "$3" virt-replica replica-status "$2" --json; }
status_field() { status_at primary "$dom" "$1"; }

# A cycle the scheduler started before our writes would answer replica-sync without them:
# wait until none runs, so that the sync's cycle is cut after them. wait_idle_at HOST NAME:
# the same for relationship NAME on HOST (after the reverse, the replica host's).
wait_idle_at() {
    for _ in $(seq 600); do
        [[ "$(status_at "$1" "$2" 'j.get("cycle_running", False)')" == False ]] && return 0
        sleep 0.2
    done
    die "a cycle of $2 on the $1 host still runs after 120 s"
}
wait_idle() { wait_idle_at primary "$dom"; }

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
printf '127.0.0.1 localhost\n%s primary.example\n' "$p_mgmt_ip" >"/etc/netns/$nsr/hosts"
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
say "and two isolated networks (no address, no forward): $prodnet for the domain's NIC," \
    "$testnet for a test failover's copy"
for n in "$prodnet" "$testnet"; do
    printf '<network>\n  <name>%s</name>\n</network>\n' "$n" >"$work/$n.xml"
    virsh -q net-create "$work/$n.xml" >/dev/null || die "cannot create the network $n"
done

step "3. A private CA and the hosts' certificates (certtool, tests/integration/make-pki.sh)"
pki=$work/pki
sh "$root/tests/integration/make-pki.sh" "$pki" >"$work/make-pki.log" 2>&1 ||
    die "make-pki.sh failed: $(tail -n 3 "$work/make-pki.log")"
say "each host is client and server of the other after a reverse: both EKUs, clientAuth" \
    "and serverAuth"
for what in ca:"the CA" both-replica:"the replica" both-primary:"the primary"; do
    file=${what%%:*}
    printf '%-12s %-14s %s\n' "${what#*:}" "$file.pem" "$(certtool -i --infile "$pki/$file.pem" |
        sed -n 's/^\s*Subject: //p; s/^\s*DNSname: /DNS:/p' | paste -sd ' ')"
done

# --- 2: the daemons -----------------------------------------------------------------------

step "4. The daemons: virt-replicad in each namespace"
# QEMU's user must pass the storage roots (0711) when a failover starts a domain there.
mkdir "$work/replica-storage" "$work/primary-storage"
chmod 0711 "$work/replica-storage" "$work/primary-storage"
cat >"$work/replica.conf" <<EOF
# the replica host: receives on its replication address only
[daemon]
state-dir = $work/replica-state
socket = $rsock

[certificates]
ca = $pki/ca.pem
cert = $pki/both-replica.pem
key = $pki/both-replica-key.pem
crl = $pki/crl.pem

[replica]
enabled = true
listen = network:$net
server-name = replica.example
# every cycle a recovery point (the default keeps one an hour)
point-interval = 0
# primary and replica share one libvirtd here: the standby needs a name of its own
standby-name-rule = %n-replica
# a test failover's copy: its NICs on this isolated network
test-network = $testnet

# Hyper-V's "allow replication from the specified servers"
[authorization:primary.example]
storage = $work/replica-storage
trust-group = demo
EOF
cat >"$work/primary.conf" <<EOF
# the primary host; its replica role receives the reverse replication after a planned
# failover
[daemon]
state-dir = $work/primary-state
socket = $psock

[certificates]
ca = $pki/ca.pem
cert = $pki/both-primary.pem
key = $pki/both-primary-key.pem
crl = $pki/crl.pem

[replica]
enabled = true
listen = network:$net
server-name = primary.example
point-interval = 0

[authorization:replica.example]
storage = $work/primary-storage
trust-group = demo
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
check "so does the primary's replica role, on $p_repl_ip:8443 (for the reverse replication)" \
    test "$(at primary ss -ltnH | awk '$4 ~ /:8443$/ {print $4}')" = "$p_repl_ip:8443"

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
    <interface type='network'>
      <source network='$prodnet'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
virsh -q define "$work/$dom.xml" >/dev/null
virsh -q start "$dom" >/dev/null || die "cannot start the domain $dom"
on primary virsh domblklist "$dom"
qdev=$(qdev_of "$dom" "$disk")
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
say "the domain is still paused since the cut: QEMU flushed its image when it paused, so" \
    "qemu-img may read it beside QEMU (-U)"
on replica qemu-io -r -f qcow2 -c 'read -P 0x5a 200M 1M' -c 'read -P 0xa1 44M 64k' \
    -c 'read -P 0xa2 100M 64k' -c 'read -P 0xa3 60M 64k' "$point" | tee "$work/patterns.out"
check "the point reads every pattern the guest wrote" \
    test -z "$(grep -i 'verification failed\|error' "$work/patterns.out")"
on replica qemu-img compare -U -f qcow2 -F qcow2 "$disk" "$point" ||
    die "recovery point $latest differs from the primary's disk"
say "ok: recovery point $latest is byte for byte the primary's disk at the cut"
on primary virsh resume "$dom"

# --- 6: test failover on the replica host ---------------------------------------------------

# uuid_of DOMAIN, source_nets_of DOMAIN: from its live definition.
uuid_of() { virsh -q domuuid "$1"; }
source_nets_of() {
    virsh -q dumpxml "$1" | python3 -c '
import sys, xml.etree.ElementTree as ET
print(" ".join(i.find("source").get("network", "-") if i.find("source") is not None else "-"
               for i in ET.parse(sys.stdin).getroot().iter("interface")))'
}
domstate() { virsh -q domstate "$1" 2>&1; }
not() { ! "$@" >/dev/null 2>&1; }

step "15. Test failover on the replica host: a copy of the standby, while replication goes on"
vda_dir=$work/replica-storage/$rel/vda
tested=$final
sum_before=$(sha256sum <"$vda_dir/rp-$tested.qcow2" | awk '{print $1}')
say "the latest recovery point, rp-$tested.qcow2: SHA-256 $sum_before"
on replica virsh replica-failover "$dom" --test || die "replica-failover --test failed"
on replica virsh dominfo "$testcopy" | grep -E '^(\[replica\]|(Name|UUID|State):)'
check "the test copy $testcopy runs" test "$(domstate "$testcopy")" = running
check "it has a UUID of its own (the standby's is $(uuid_of "$standby"))" \
    test "$(uuid_of "$testcopy")" != "$(uuid_of "$standby")" \
    -a "$(uuid_of "$testcopy")" != "$(uuid_of "$dom")"
check "the standby $standby itself is untouched: shut off" \
    test "$(domstate "$standby")" = "shut off"
on replica virsh domiflist "$testcopy"
check "its NIC is on the isolated test network $testnet, not on $prodnet" \
    test "$(source_nets_of "$testcopy")" = "$testnet"
on replica virsh domblklist "$testcopy"
check "its disk is an overlay of its own on rp-$tested" \
    test "$(virsh -q domblklist "$testcopy" | awk '$1 == "vda" {print $2}')" = \
    "$vda_dir/test-failover.qcow2"
say "meanwhile the guest on the primary writes 4 MiB, and the primary syncs:"
written_before=$written
random_write 160 4
sync_now $((written - written_before))
on replica virsh replica-failover-cancel "$dom" --test ||
    die "replica-failover-cancel --test failed"
check "the test copy is gone" not virsh -q dominfo "$testcopy"
check "and its overlay with everything it wrote" test ! -e "$vda_dir/test-failover.qcow2"
sum_after=$(sha256sum <"$vda_dir/rp-$tested.qcow2" | awk '{print $1}')
say "rp-$tested.qcow2 now: SHA-256 $sum_after"
check "the recovery point the test ran on is unchanged" test "$sum_after" = "$sum_before"

# --- 7: planned failover with reverse replication ---------------------------------------

step "16. Planned failover with reverse replication, started on the primary host"
say "a last write of the guest, which the final cycle must carry (zero data loss):"
guest_write -P 0xa4 220M 1M
say "the guest has no OS: nothing answers ACPI's shutdown request, so --force destroys it" \
    "after --shutdown-timeout (gracefully: QEMU closes its images and stores its dirty" \
    "bitmaps); 5 s rather than the default 120"
wait_idle
on primary virsh replica-planned-failover "$dom" --shutdown-timeout 5 --force --reverse ||
    die "replica-planned-failover --force --reverse failed"
pf_final=$(status_at replica "$standby" 'j["last_cycle"]["seq"]')

step "17. After the failover: the domain runs on the replica host, the roles are swapped"
on replica virsh domstate "$standby"
on primary virsh domstate "$dom"
check "$standby runs on the replica host, $dom is shut off on the primary host" \
    test "$(domstate "$standby")" = running -a "$(domstate "$dom")" = "shut off"
check "its NIC is on $prodnet again (same name on this host: [network-map] maps none)" \
    test "$(source_nets_of "$standby")" = "$prodnet"
on primary virsh replica-status "$dom"
echo
on replica virsh replica-status "$standby"
check "the primary host: role replica of relationship $rel, Replicating at epoch 2" \
    test "$(status_at primary "$dom" 'j["role"], j["state"], j["epoch"]')" = \
    "replica Replicating 2"
check "the replica host: role primary of the same relationship, Replicating at epoch 2" \
    test "$(status_at replica "$standby" 'j["role"], j["state"], j["epoch"]')" = \
    "primary Replicating 2"
on replica qemu-img compare -U -f qcow2 -F qcow2 "$disk" "$vda_dir/failover.qcow2" ||
    die "the standby's disk differs from the primary's final disk"
say "ok: zero data loss: the standby's disk is byte for byte the primary's at its shutdown"

step "18. The old primary's domain: the standby of the reversed relationship"
pri_vda=$work/primary-storage/$rel/vda
on primary virsh metadata "$dom" https://virt-replica.org/xmlns/standby/1 --config
check "its marker: state 'replica' at epoch 2" \
    test -n "$(virsh -q metadata "$dom" https://virt-replica.org/xmlns/standby/1 --config |
        grep -E "state=.replica." | grep -E "epoch=.2.")"
on primary virsh domblklist "$dom"
check "its disk is the failover overlay of its store, which only a failover makes" \
    test "$(virsh -q domblklist "$dom" | awk '$1 == "vda" {print $2}')" = \
    "$pri_vda/failover.qcow2" -a ! -e "$pri_vda/failover.qcow2"
on primary ls "$pri_vda"
check "its store holds the final cycle's point rp-$pf_final, made from its own disk" \
    qemu-img compare -q -f qcow2 -F qcow2 "$disk" "$pri_vda/rp-$pf_final.qcow2"
say "libvirt cannot start it: its disk does not exist, beneath directories that only a" \
    "failover opens to QEMU's user"
if out=$(on primary virsh start "$dom" 2>&1); then
    printf '%s\n' "$out"
    die "the old primary's domain $dom started: split brain"
fi
printf '%s\n' "$out"
check "virsh start $dom is refused; it stays shut off" test "$(domstate "$dom")" = "shut off"
say "and the libvirt hook (docs/hook.md; not installed by the demo), as libvirtd runs it:"
printf '[primary]# %s < <(virsh dumpxml --inactive %s)\n' \
    "$(shown virt-replica-hook "$dom" prepare begin -)" "$dom"
if out=$("$hook" "$dom" prepare begin - < <(virsh -q dumpxml --inactive "$dom") 2>&1); then
    printf '%s\n' "$out"
    die "the hook lets the old primary's domain $dom start"
fi
printf '%s\n' "$out"
say "ok: the hook refuses it (exit status 1)"

step "19. Reverse replication: the new primary's writes, and only those, go back"
bdev=$(qdev_of "$standby" "$vda_dir/failover.qcow2")
[[ -n "$bdev" ]] || die "no block device of $standby has $vda_dir/failover.qcow2 inserted:" \
    "$(virsh -q qemu-monitor-command "$standby" '{"execute":"query-block"}')"
wait_idle_at replica "$standby"
guest_write_on replica "$standby" "$bdev" -P 0xb1 8M 1M
guest_write_on replica "$standby" "$bdev" -P 0xb2 130M 512k
reverse_written=$((MiB + MiB / 2))
on replica virsh suspend "$standby"
out=$(on replica virsh replica-sync "$standby" --json) || die "the reverse replica-sync failed"
printf '%s\n' "$out"
read -r rev_seq rev_bytes < <(tail -n +2 <<<"$out" |
    python3 -c 'import json, sys; j = json.load(sys.stdin); print(j["seq"], j["bytes"])')
say "the reverse cycle $rev_seq carried $rev_bytes bytes; the guest wrote $reverse_written"
check "it carried exactly the bytes the new primary wrote, no full copy" \
    test "$rev_bytes" = "$reverse_written"
on primary ls "$pri_vda"
on primary qemu-img compare -U -f qcow2 -F qcow2 "$pri_vda/rp-$rev_seq.qcow2" \
    "$vda_dir/failover.qcow2" ||
    die "the old primary's point $rev_seq differs from the new primary's disk"
say "ok: the old primary's recovery point $rev_seq is byte for byte the new primary's disk" \
    "(paused since the cut)"

say "done in $((SECONDS - started)) s"
