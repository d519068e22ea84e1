# lib-tap.sh: TAP helpers for the integration test scripts, sourced after `set -u`.
#
#   . lib-tap.sh          then: check WHAT COMMAND..., tap_ok, tap_fail, diag, skip_all,
#                         tap_work_dir PREFIX (sets $work, and $work_own when it made it)
#
# SPDX-License-Identifier: LGPL-2.1-or-later

n=0
failures=0

tap_ok() {
    n=$((n + 1))
    echo "ok $n - $1"
}
tap_fail() {
    n=$((n + 1))
    failures=$((failures + 1))
    echo "not ok $n - $1"
}
# check DESCRIPTION COMMAND...: one TAP line for whether COMMAND succeeds.
check() {
    local what=$1
    shift
    if "$@"; then tap_ok "$what"; else tap_fail "$what"; fi
}
# diag LINE...: TAP comments, also on stderr, which is what meson shows of a failed test.
diag() { printf '%s\n' "$@" | sed '/^$/d; s/^/# /' | tee /dev/stderr; }
skip_all() {
    echo "1..0 # SKIP $1"
    exit 0
}

# The scratch directory: run-isolated.sh's, or one of our own (removed by the caller).
tap_work_dir() {
    work_own=
    if [ -n "${VR_TEST_TMPDIR:-}" ]; then
        work=$VR_TEST_TMPDIR
    else
        work=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
        work_own=$work
    fi
}

# tap_make_pki DIR: the test PKI (make-pki.sh) in DIR; skips the whole test when certtool
# is missing (make-pki.sh exits 77), fails it with the log otherwise.
tap_make_pki() {
    sh "$(dirname "${BASH_SOURCE[0]}")/make-pki.sh" "$1" >"$1.log" 2>&1
    case $? in
    0) ;;
    77) skip_all "no PKI: $(tail -n 1 "$1.log")" ;;
    *)
        cat "$1.log" >&2
        exit 1
        ;;
    esac
}

# tap_free_port VAR: sets VAR to a TCP port that is free on 127.0.0.1 and reserved for this
# test until it exits. The port is below the kernel's ephemeral range (32768 and up), so no
# outgoing connection and no other bind(0) can take it meanwhile, and it is locked (flock on
# a file under /tmp/vr-test-ports, held by this shell) against the tests running beside this
# one. A port handed out by bind(0) and bound later by the daemon was taken in between once.
tap_free_port() {
    local p fd dir=${TMPDIR:-/tmp}/vr-test-ports
    mkdir -p "$dir"
    for _ in $(seq 500); do
        p=$((20000 + RANDOM % 12000))
        exec {fd}>"$dir/$p" || continue
        if flock -n "$fd" && python3 -c 'import socket, sys
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()' "$p" 2>/dev/null; then
            printf -v "$1" %s "$p"
            return 0
        fi
        exec {fd}>&-
    done
    echo "tap_free_port: no free port in 20000-31999" >&2
    return 1
}

# tap_api SOCKET METHOD PATH [BODY]: a request to a virt-replicad API socket (vr-api.py);
# the status on the first line, then the body.
tap_api() {
    python3 "$(dirname "${BASH_SOURCE[0]}")/vr-api.py" "$@"
}

# --- daemons and a domain, for the tests that run virt-replicad (test-auth.sh) -----------------
# They use $work, $daemon_bin and the array pids (the caller's cleanup kills what is in it).

# tap_daemon_start NAME CONFIG: virt-replicad with CONFIG (whose socket is $work/NAME.sock),
# output appended to $work/NAME.out and .err, its pid in ${NAME}_pid and in pids; waits until
# its API answers. Fails (with the end of its log) when it does not.
tap_daemon_start() {
    "$daemon_bin" --config "$2" >>"$work/$1.out" 2>>"$work/$1.err" &
    local pid=$!
    pids+=("$pid")
    eval "${1}_pid=$pid"
    for _ in $(seq 100); do
        tap_api "$work/$1.sock" GET /v1/daemon >/dev/null 2>&1 && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    diag "$1 did not start:" "$(tail -n 20 "$work/$1.err")"
    return 1
}

# tap_daemon_stop NAME: SIGTERM, then its exit status in $stop_status.
tap_daemon_stop() {
    local pid
    eval "pid=\$${1}_pid"
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    stop_status=$?
}

# tap_need_libvirt: whether libvirtd's system instance can be used here (root, virsh, an
# answer); the reason in $tap_no_libvirt otherwise.
tap_need_libvirt() {
    tap_no_libvirt=
    if [ "$(id -u)" != 0 ]; then
        tap_no_libvirt="needs root (libvirtd's system instance)"
    elif ! command -v virsh >/dev/null; then
        tap_no_libvirt="virsh is missing (libvirt-clients)"
    elif ! virsh -q -c qemu:///system version >/dev/null 2>&1; then
        tap_no_libvirt="libvirtd does not answer"
    fi
    [ -z "$tap_no_libvirt" ]
}

# tap_domain_start NAME: a running libvirt domain NAME (KVM when usable, else TCG; TCG with
# VR_TEST_ACCEL=tcg) with a 64 MiB qcow2 disk vda ($work/NAME.qcow2) and no OS; the disk's
# qdev for HMP qemu-io in $qdev. Remove it with tap_domain_remove. An optional second argument
# is more XML for its <devices> (an interface, a channel).
tap_domain_start() {
    local accel=qemu
    [ -w /dev/kvm ] && [ "${VR_TEST_ACCEL:-auto}" != tcg ] && accel=kvm
    qemu-img create -q -f qcow2 "$work/$1.qcow2" 64M || return 1
    cat >"$work/$1.xml" <<XML
<domain type='$accel'>
  <name>$1</name>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='$work/$1.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    ${2:-}
    <memballoon model='none'/>
  </devices>
</domain>
XML
    virsh -q -c qemu:///system define "$work/$1.xml" >/dev/null &&
        virsh -q -c qemu:///system start "$1" >/dev/null || return 1
    qdev=$(virsh -q -c qemu:///system qemu-monitor-command "$1" '{"execute":"query-block"}' |
        python3 -c 'import json,sys; print([b["qdev"] for b in json.load(sys.stdin)["return"] if b.get("inserted")][0])')
    diag "domain $1 ($accel), vda is $qdev"
}

# tap_domain_remove NAME...: destroyed and undefined, whatever their state; quiet.
tap_domain_remove() {
    local d
    for d in "$@"; do
        virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1
        virsh -q -c qemu:///system undefine "$d" --nvram --checkpoints-metadata >/dev/null 2>&1
    done
    return 0
}

# tap_guest_write DOMAIN PATTERN OFFSET LENGTH: a guest write through HMP qemu-io ($qdev).
tap_guest_write() {
    virsh -q -c qemu:///system qemu-monitor-command "$1" --hmp \
        "qemu-io -d $qdev \"write -P $2 $3 $4\"" >/dev/null
}

# tap_pair_conf: the configurations of a replica daemon and a primary daemon that talk over
# loopback with the test PKI in $pki (tap_make_pki): $work/replica.conf and
# $work/primary.conf, sockets $work/replica.sock and $work/primary.sock, state directories
# $work/replica-state and $work/primary-state. The replica listens on 127.0.0.1:$port as
# replica.example, allows any authenticated primary into $work/storage (made here, 0711:
# QEMU's user passes it at a failover, docs/failover.md), names standby domains
# "%n-replica" (both daemons share the one libvirtd) and keeps a point per cycle. Both use
# [daemon] monitoring-interval = ${TAP_MONITORING_INTERVAL:-10}. The replica's file ends in
# its [replica] group and the primary's in [certificates]: append keys or whole groups.
tap_pair_conf() {
    mkdir -p "$work/storage" && chmod 0711 "$work/storage" || return 1
    local side cert
    for side in replica primary; do
        cert=client-ok
        [ "$side" = replica ] && cert=server-ok
        cat >"$work/$side.conf" <<CONF
[daemon]
state-dir = $work/$side-state
socket = $work/$side.sock
monitoring-interval = ${TAP_MONITORING_INTERVAL:-10}

[certificates]
ca = $pki/ca.pem
cert = $pki/$cert.pem
key = $pki/$cert-key.pem
crl = $pki/crl.pem
CONF
    done
    cat >>"$work/replica.conf" <<CONF

[replica]
enabled = true
listen = address:127.0.0.1
port = $port
server-name = replica.example
allow-any = true
default-storage = $work/storage
standby-name-rule = %n-replica
point-interval = 0
CONF
}

# tap_both_roles_conf: tap_pair_conf for two hosts that each take both roles, as after a
# failover with reverse replication: ports $port (B, the replica) and $port_a (A, the
# primary, whose replica role listens as primary.example into $work/storage-a) reserved
# here, certificates with both key purposes. Both files end in their [replica] group.
tap_both_roles_conf() {
    tap_free_port port && tap_free_port port_a && tap_pair_conf || return 1
    sed -i "s|$pki/server-ok|$pki/both-replica|g" "$work/replica.conf"
    sed -i "s|$pki/client-ok|$pki/both-primary|g" "$work/primary.conf"
    mkdir -p "$work/storage-a" && chmod 0711 "$work/storage-a" || return 1
    cat >>"$work/primary.conf" <<CONF

[replica]
enabled = true
listen = address:127.0.0.1
port = $port_a
server-name = primary.example
allow-any = true
default-storage = $work/storage-a
point-interval = 0
CONF
}

# tap_field EXPR: a Python expression over the JSON document in $body (as `j`), printed;
# empty when it fails.
tap_field() {
    python3 -c "import json,sys; j=json.loads(sys.stdin.read()); print($1)" <<<"$body" 2>/dev/null
}

# tap_status SOCKET NAME: $body is the status of relationship NAME (id or domain) there.
tap_status() {
    body=$(tap_api "$1" GET "/v1/relationships/$2" | tail -n +2)
}

# tap_wait_status SECONDS SOCKET NAME EXPR: until EXPR (tap_field) of NAME's status is True,
# checked each second; the last status in $body either way.
tap_wait_status() {
    local i
    for i in $(seq "$1"); do
        tap_status "$2" "$3"
        [ "$(tap_field "$4")" = True ] && return 0
        sleep 1
    done
    diag "waited $1 s for $4 on $2:" "$body"
    return 1
}

# tap_stop_all: every process in the array pids gets SIGTERM, then SIGKILL half a second
# later, and is waited for (a test's cleanup).
tap_stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
}
