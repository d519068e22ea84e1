#!/usr/bin/env bash
# virt-replica, the virsh wrapper and the bash completion against real daemons:
#   - a replica-role daemon that received a real primary cycle (vr-transfer over mutual TLS):
#     replica-list, replica-status, replica-recovery-points, replica-server-config, as tables
#     and as JSON; its primary role is off, so the primary commands get 503 no-primary-role;
#   - a daemon whose libvirt is the test driver (test:///FILE: a domain with a qcow2 disk and
#     no QEMU): replica-enable, an unknown domain (404), enable twice (409), replica-sync and
#     --wait that fail on the missing QMP monitor, suspend, resume, resync, disable;
#   - errors: one line on stderr and exit 1; usage errors exit 2 with the usage; the daemon
#     down (no socket, a stale socket) and hung (--timeout);
#   - waiting: plain lines without a terminal, a spinner on one (script(1)), SIGINT; the
#     daemon's sync answer is delayed by a small stand-in server here, since no real cycle
#     can run without QEMU;
#   - the wrapper: replica-* to virt-replica, the rest to the real virsh, `virsh help` with
#     the replica section, no recursion, completion; the man page formats without warnings.
#
#   test-cli.sh VR-TRANSFER VIRT-REPLICAD VIRT-REPLICA VIRSH-WRAPPER  (run-isolated.sh; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-tap.sh
. "$srcdir/lib-tap.sh"

vt=$1
daemon_bin=$2
cli=$3
wrapper=$4
tests=50

tap_work_dir vrcli
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    wait 2>/dev/null
    [ -n "$work_own" ] && rm -rf "$work_own"
}
trap cleanup EXIT

pki=$work/pki
tap_make_pki "$pki"
if ! command -v qemu-img >/dev/null || ! command -v qemu-nbd >/dev/null; then
    skip_all "qemu-img and qemu-nbd are needed (qemu-utils)"
fi
command -v python3 >/dev/null || skip_all "python3 is needed (JSON checks)"

rsock=$work/replica.sock
psock=$work/primary.sock
mkdir -p "$work/storage"
tap_free_port port || exit 1

# The replica role; libvirt unreachable, so the primary role is off.
cat >"$work/replica.conf" <<EOF
[daemon]
state-dir = $work/rstate
socket = $rsock
libvirt-uri = qemu+unix:///system?socket=$work/no-libvirt.sock
monitoring-interval = 3600

[certificates]
ca = $pki/ca.pem
cert = $pki/server-ok.pem
key = $pki/server-ok-key.pem
crl = $pki/crl.pem

[replica]
enabled = true
listen = address:127.0.0.1
port = $port
server-name = replica.example
allow-any = true
default-storage = $work/storage
EOF

# The primary role over libvirt's test driver: vm1 has a qcow2 disk but no QEMU, so every
# cycle fails at the QMP monitor, deterministically.
cat >"$work/node.xml" <<EOF
<node>
  <domain type='test'>
    <name>vm1</name>
    <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
    <memory>65536</memory>
    <vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <devices>
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='$work/vm1.qcow2'/>
        <target dev='vda' bus='virtio'/>
      </disk>
    </devices>
  </domain>
</node>
EOF
cat >"$work/primary.conf" <<EOF
[daemon]
state-dir = $work/pstate
socket = $psock
libvirt-uri = test://$work/node.xml

[certificates]
ca = $pki/ca.pem
cert = $pki/client-ok.pem
key = $pki/client-ok-key.pem
crl = $pki/crl.pem
EOF

# start_daemon NAME CONFIG SOCKET: sets $daemon_pid.
start_daemon() {
    local name=$1
    "$daemon_bin" --config "$2" >"$work/$name.out" 2>"$work/$name.err" &
    daemon_pid=$!
    pids+=("$daemon_pid")
    for _ in $(seq 100); do
        [ -S "$3" ] && "$cli" --socket "$3" --timeout 2 replica-server-config >/dev/null 2>&1 &&
            return 0
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
    done
    diag "the $name daemon did not start:" "$(cat "$work/$name.err")"
    return 1
}

# run ARGS...: virt-replica with the replica daemon's socket; sets $out, $err and $rc.
run() {
    "$@" >"$work/out" 2>"$work/err"
    rc=$?
    out=$(cat "$work/out")
    err=$(cat "$work/err")
}
vr() { run "$cli" --socket "$rsock" "$@"; }
vp() { run "$cli" --socket "$psock" "$@"; }
# one_line PATTERN: exit 1, nothing on stdout, one line on stderr matching PATTERN (ERE).
one_line() {
    [ "$rc" = 1 ] && [ -z "$out" ] && [ "$(printf '%s\n' "$err" | wc -l)" = 1 ] &&
        grep -Eq -- "$1" <<<"$err"
}
# out_has STATUS PATTERN: exit STATUS and a line of stdout matching PATTERN (ERE).
out_has() { [ "$rc" = "$1" ] && grep -Eq -- "$2" <<<"$out"; }
# A time as virt-replica prints it: local ISO-8601 with the offset.
iso='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{2}:[0-9]{2}'
# json EXPR: a Python expression over the JSON of $out (as `j`).
json() { python3 -c "import json,sys; j=json.loads(sys.stdin.read()); print($1)" <<<"$out"; }
show() { diag "exit $rc" "$out" "$err"; }

echo "1..$tests"

# --- 1-5: no daemon, usage errors ---------------------------------------------------------------
run "$cli" --socket "$work/none.sock" replica-list
show
check "daemon down: one line 'cannot reach virt-replicad at PATH: ... (is it running?)', exit 1" \
    one_line "^virt-replica: cannot reach virt-replicad at $work/none.sock: No such file or directory \(is it running\?\)$"
run env VIRT_REPLICA_SOCKET="$work/env.sock" "$cli" replica-status vm1
check "VIRT_REPLICA_SOCKET names the socket" one_line "at $work/env.sock: "
vr replica-status
show
check "a missing DOMAIN: exit 2, the problem and the command's usage on stderr" \
    test "$rc" = 2 -a -z "$out" -a "$(head -n 1 <<<"$err")" = "virt-replica: replica-status: missing DOMAIN" \
    -a "$(tail -n 1 <<<"$err")" = "usage: virt-replica replica-status DOMAIN [--json]"
usage_ok=true
for args in "replica-status vm1 --bogus" "replica-list extra" "replica-enable vm1" \
    "replica-enable vm1 --server r --port 70000" "replica-enable vm1 --server r --compression maybe" \
    "replica-enable vm1 --server r --initial tape" "replica-enable vm1 --server r --address nowhere" \
    "replica-list --json=yes" "replica-status --json vm1 --json" "no-such-command" "--bogus replica-list" \
    "--timeout soon replica-list" ""; do
    # shellcheck disable=SC2086 # split on purpose
    vr $args
    if [ "$rc" != 2 ] || ! grep -q '^usage: virt-replica' <<<"$err" || [ -n "$out" ]; then
        [ "$args" = no-such-command ] && grep -q "unknown command 'no-such-command'" <<<"$err" &&
            [ "$rc" = 2 ] && continue
        diag "'$args':" "exit $rc" "$err"
        usage_ok=false
    fi
done
check "bad options, values, arguments and commands: exit 2 with a usage" $usage_ok
vr help replica-enable
check "help replica-enable lists every option" \
    test "$rc" = 0 -a "$(grep -cE '^  --(server|port|address|frequency|recovery-points|'\
'app-consistent-hours|network|compression|bandwidth|initial|disk|wait|json) ' <<<"$out")" = 13

# --- 6-18: the replica role after a real cycle --------------------------------------------------
if ! start_daemon replica "$work/replica.conf" "$rsock"; then
    for i in $(seq $((n + 1)) $tests); do tap_fail "the replica daemon runs (test $i)"; done
    exit 1
fi
replica_pid=$daemon_pid
vr replica-list
diag "$out"
check "replica-list with no relationship: the header only" \
    test "$rc" = 0 -a "$(wc -l <<<"$out")" = 2
"$vt" gen --out "$work/c1.stream" --size $((4 * 1024 * 1024)) --disk-size $((16 * 1024 * 1024)) \
    --relationship r1 --disk vda --epoch 1 --base 0 --target 1 >/dev/null 2>"$work/gen.err" ||
    diag "gen: $(cat "$work/gen.err")"
timeout 60 "$vt" send --cert "$pki/client-ok.pem" --key "$pki/client-ok-key.pem" \
    --ca "$pki/ca.pem" --crl "$pki/crl.pem" --server-name replica.example \
    --connect 127.0.0.1 --port "$port" "$work/c1.stream" >"$work/send.out" 2>"$work/send.err"
send_status=$?
check "a primary's cycle 1 is received and published" test "$send_status" = 0

vr replica-list
diag "$out"
list_table() {
    [ "$rc" = 0 ] &&
        grep -Eq "^ Domain +Role +State +Health +Last replication +RPO +Peer$" <<<"$out" &&
        grep -Eq "^ r1 +replica +Replicating +Normal +$iso +[0-9]+[smhd][0-9]*[smh]? +primary1$" \
            <<<"$out"
}
check "replica-list: a table of domain, role, state, health, last replication, RPO and peer" \
    list_table
vr replica-list --json
check "replica-list --json: the daemon's JSON (r1, role replica, 1 cycle)" \
    test "$rc" = 0 -a "$(json 'j["relationships"][0]["id"], j["relationships"][0]["role"],
        j["relationships"][0]["stats"]["cycles_ok"]')" = "r1 replica 1"
vr replica-list --name
check "replica-list --name: the names only" test "$rc" = 0 -a "$out" = r1

vr replica-status r1
diag "$out"
status_block() {
    [ "$rc" = 0 ] && grep -Eq "^State: +Replicating$" <<<"$out" &&
        grep -Eq "^Health: +Normal$" <<<"$out" && grep -Eq "^Successful cycles: +1$" <<<"$out" &&
        [ "$(grep -Ec "^(Missed|Failed) cycles: +0$" <<<"$out")" = 2 ]
}
check "replica-status r1: State Replicating, Health Normal, Successful cycles 1" status_block
status_units() {
    grep -Eq "^Average size: +4\.0 MiB$" <<<"$out" && grep -Eq "^Maximum size: +4\.0 MiB$" <<<"$out" &&
        grep -Eq "^Last replication time: +$iso \(cycle 1\)$" <<<"$out" &&
        grep -Eq "^Average latency: +[0-9.]+ m?s$" <<<"$out" &&
        grep -Eq "^Recovery points: +vda: 1, newest cycle 1 at $iso$" <<<"$out"
}
check "replica-status r1: sizes in IEC units, the last replication time in local ISO-8601" \
    status_units
vr replica-status r1 --json
check "replica-status r1 --json: the daemon's status (last_cycle.seq 1, max_bytes 4 MiB)" \
    test "$rc" = 0 \
    -a "$(json 'j["last_cycle"]["seq"], j["stats"]["max_bytes"], j["state"]')" = "1 4194304 Replicating"
vr replica-recovery-points r1
diag "$out"
points_table() {
    [ "$rc" = 0 ] &&
        grep -Eq "^ Disk +Cycle +Epoch +Published +Size +App-consistent +Chain$" <<<"$out" &&
        grep -Eq "^ vda +1 +1 +$iso +16\.0 MiB +no +[0-9a-f]{16}$" <<<"$out"
}
check "replica-recovery-points r1: vda, cycle 1, epoch 1, 16.0 MiB, not app-consistent" \
    points_table
vr replica-recovery-points r1 --json
check "replica-recovery-points r1 --json: the full 64-digit chain" \
    test "$rc" = 0 -a "$(json 'len(j["recovery_points"]["vda"][0]["chain"])')" = 64
vr replica-server-config
diag "$out"
server_config() {
    [ "$rc" = 0 ] && grep -Eq "^Replica role: +on$" <<<"$out" &&
        grep -Eq "^Address: +127\.0\.0\.1$" <<<"$out" && grep -Eq "^Port: +$port$" <<<"$out" &&
        grep -Eq "^Primary role: +off" <<<"$out"
}
check "replica-server-config: replica role on, its address and port; primary role off" \
    server_config
vr replica-server-config --json
check "replica-server-config --json: GET /v1/server as is" \
    test "$rc" = 0 -a "$(json 'j["port"]')" = "$port"
vr replica-auth-add '*.example' --storage /srv
show
check "replica-auth-add with allow-any: exit 1, one line naming allow-any (test-auth.sh has the rest)" \
    test "$rc" = 1 -a "$(wc -l <<<"$err")" = 1 -a -n "$(grep 'allow-any = true' <<<"$err")"

# --- 19-22: errors from the replica daemon ------------------------------------------------------
vr replica-status vm9
show
unknown_domain() {
    [ "$rc" = 1 ] && [ -z "$out" ] &&
        [ "$err" = "virt-replica: replica-status vm9: no replication of 'vm9' on this host" ]
}
check "an unknown domain: exactly one line naming command, domain and the daemon's message, exit 1" \
    unknown_domain
vr replica-recovery-points vm9 --json
json_error() {
    [ "$rc" = 1 ] && [ "$(json 'j["error"]["code"]')" = unknown-domain ] &&
        [ "$err" = "virt-replica: replica-recovery-points vm9: no replication of 'vm9' on this host" ]
}
check "an unknown domain with --json: the line on stderr, the daemon's error JSON on stdout" \
    json_error
vr replica-enable vm1 --server replica.example
show
check "replica-enable without a primary role (503 no-primary-role): one line, exit 1" \
    one_line "^virt-replica: replica-enable vm1: the primary role is off: libvirt at '.*' cannot be reached$"
vr replica-sync r1
show
check "replica-sync without a primary role: one line, exit 1, no progress line for a quick answer" \
    one_line "^virt-replica: replica-sync r1: the primary role is off"

# --- 23-34: the primary role over libvirt's test driver ----------------------------------------
if ! start_daemon primary "$work/primary.conf" "$psock"; then
    for i in $(seq $((n + 1)) $((n + 12))); do tap_fail "the primary daemon runs (test $i)"; done
else
    vp replica-enable vm9 --server replica.example
    show
    check "replica-enable of a domain libvirt does not have (404 unknown-domain): one line, exit 1" \
        one_line "^virt-replica: replica-enable vm9: libvirt has no domain 'vm9'$"
    vp replica-enable vm1 --server replica.example --address 127.0.0.1 --port "$port" \
        --frequency 3600 --recovery-points 2 --compression off --bandwidth 100M --disk vda
    show
    check "replica-enable vm1: enabled, its relationship and state named" \
        out_has 0 "^Replication of 'vm1' to replica.example enabled: relationship [a-z0-9-]+, state [A-Za-z]+\.$"
    vp replica-enable vm1 --server replica.example
    show
    check "replica-enable twice (409 already-enabled): one line, exit 1" \
        one_line "^virt-replica: replica-enable vm1: domain 'vm1' is replicated already"
    vp replica-status vm1
    diag "$out"
    primary_status() {
        [ "$rc" = 0 ] && grep -Eq "^Role: +primary$" <<<"$out" &&
            grep -Eq "^Replica server: +replica.example$" <<<"$out" &&
            grep -Eq "^Cycle running: +(yes(: [0-9]+%, cycle [0-9]+: .*)?|no)$" <<<"$out"
    }
    check "replica-status vm1 on the primary: role primary, replica server replica.example" \
        primary_status
    vp replica-sync vm1
    show
    check "replica-sync vm1 whose cycle fails (no QMP under the test driver): one line, exit 1" \
        one_line "^virt-replica: replica-sync vm1: .*(QMP|qmp|monitor|suspended|error)"
    vp replica-suspend vm1
    show
    check "replica-suspend vm1: state Suspended" out_has 0 "\(state Suspended\)"
    vp replica-status vm1 --json
    check "replica-status --json after suspend: state Suspended" \
        test "$(json 'j["state"]')" = Suspended
    vp replica-resume vm1
    show
    check "replica-resume vm1: resumed" out_has 0 "^Replication of 'vm1' resumed"
    vp replica-resync vm1 --json
    check "replica-resync vm1 --json: state ResynchronizationRequired" \
        test "$rc" = 0 -a "$(json 'j["state"]')" = ResynchronizationRequired
    # Suspend first, so that no cycle runs when disable comes (409 busy otherwise).
    vp replica-suspend vm1
    for _ in $(seq 50); do
        vp replica-disable vm1
        [ "$rc" = 0 ] || ! grep -q busy <<<"$err" || { sleep 0.1 && continue; }
        break
    done
    show
    check "replica-disable vm1: disabled" test "$rc" = 0 -a "$out" = "Replication of 'vm1' disabled."
    vp replica-status vm1
    check "after replica-disable the domain is unknown" one_line "no replication of 'vm1' on this host"
    vp replica-enable vm1 --server replica.example --address 127.0.0.1 --port "$port" --wait
    show
    enable_wait() {
        out_has 1 "^Replication of 'vm1' to replica.example enabled" &&
            [ "$(wc -l <<<"$err")" = 1 ] &&
            grep -q "^virt-replica: replica-enable vm1: enabled, but the first cycle did not complete: " \
                <<<"$err"
    }
    check "replica-enable --wait whose first cycle fails: enabled, then one error line, exit 1" \
        enable_wait
fi

# --- 35-39: waiting, timeouts, a daemon that dies ----------------------------------------------
# A stand-in for the daemon: "hang" accepts and never answers; "slow" answers a sync after 2 s.
cat >"$work/standin.py" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
held = []
while True:
    c, _ = s.accept()
    held.append(c)
    try:
        c.recv(65536)
        if sys.argv[2] == "slow":
            time.sleep(2)
            body = b'{"seq": 3, "bytes": 4194304, "wire_bytes": 1048576, "duration_ms": 2000}'
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    except OSError:
        pass
PY
python3 "$work/standin.py" "$work/hang.sock" hang &
pids+=($!)
python3 "$work/standin.py" "$work/slow.sock" slow &
pids+=($!)
for _ in $(seq 50); do [ -S "$work/hang.sock" ] && [ -S "$work/slow.sock" ] && break; sleep 0.1; done
start=$(date +%s)
run timeout 20 "$cli" --socket "$work/hang.sock" --timeout 1 replica-list
show
gave_up() { one_line "did not answer within 1 s$" && [ $(($(date +%s) - start)) -le 5 ]; }
check "a daemon that does not answer: --timeout 1 gives up with one line, exit 1" gave_up
run timeout 20 "$cli" --socket "$work/slow.sock" replica-sync vm1
show
plain_wait() {
    [[ $rc == 0 && $out == "Cycle 3 of 'vm1' acknowledged by the replica: 4.0 MiB (1.0 MiB sent) in 2.0 s." &&
        $err == "virt-replica: replica-sync vm1: waiting for the replica to acknowledge the cycle (0s)" ]]
}
check "replica-sync without a terminal: the result on stdout, a plain waiting line on stderr" \
    plain_wait
if command -v script >/dev/null; then
    # script(1) gives the program a terminal and records what it writes to it.
    timeout 20 script -qec "'$cli' --socket '$work/slow.sock' replica-sync vm1" \
        "$work/typescript" >/dev/null 2>&1
    diag "$(tr '\r' '\n' <"$work/typescript" | grep -m 2 'waiting')"
    spinner() {
        [ "$(tr '\r' '\n' <"$work/typescript" | grep -c \
            "^[|/\\-] replica-sync vm1: waiting for the replica to acknowledge the cycle ([0-9]s)")" \
            -ge 5 ] &&
            grep -qF "$(printf '\r\033[KCycle 3 of')" "$work/typescript"
    }
    check "replica-sync on a terminal: a spinner with the elapsed time, erased before the result" \
        spinner
else
    tap_ok "# SKIP script(1) is missing (bsdutils)"
fi
"$cli" --socket "$work/hang.sock" replica-sync vm1 >"$work/out" 2>"$work/err" &
sync_pid=$!
sleep 1
kill -INT "$sync_pid"
wait "$sync_pid"
rc=$?
err=$(cat "$work/err")
diag "$err"
interrupted() { [ "$rc" = 130 ] && grep -q "interrupted; the cycle goes on in virt-replicad" <<<"$err"; }
check "SIGINT while waiting: exit 130, saying that the cycle goes on in the daemon" interrupted
kill -KILL "$replica_pid"
wait "$replica_pid" 2>/dev/null
vr replica-list
show
check "a daemon killed (its socket left behind): 'Connection refused (is it running?)', exit 1" \
    one_line "^virt-replica: cannot reach virt-replicad at $rsock: Connection refused \(is it running\?\)$"
start_daemon replica "$work/replica.conf" "$rsock" || diag "the replica daemon did not restart"

# --- 40-47: the virsh wrapper -----------------------------------------------------------------
export VIRT_REPLICA="$cli"
export VIRT_REPLICA_SOCKET="$rsock"
wrapdir=$work/wrap
mkdir -p "$wrapdir"
cp "$wrapper" "$wrapdir/virsh"
chmod 755 "$wrapdir/virsh"
real_virsh=${VIRSH_REAL:-/usr/bin/virsh}
run "$cli" replica-list
direct=$out
run env PATH="$wrapdir:$PATH" virsh replica-list
check "virsh replica-list runs virt-replica (the same table)" \
    test "$rc" = 0 -a "$out" = "$direct" -a -n "$direct"
run env PATH="$wrapdir:$PATH" virsh -c qemu:///system replica-status r1 --json
check "virsh -c qemu:///system replica-status r1 --json: passed through, no warning" \
    test "$rc" = 0 -a -z "$err" -a "$(json 'j["id"]')" = r1
run env PATH="$wrapdir:$PATH" virsh --connect=test:///default replica-list --name
check "virsh --connect=URI replica-list: a warning that the URI is ignored, then the list" \
    test "$rc" = 0 -a "$out" = r1 -a "$err" = "virsh: warning: replica-list talks to this host's \
virt-replicad; --connect 'test:///default' is ignored"
if [ -x "$real_virsh" ]; then
    run env PATH="$wrapdir:$PATH" virsh -c test:///default list --all
    diag "$out"
    check "virsh -c test:///default list --all runs the real virsh: the test driver's domain 'test'" \
        out_has 0 "^ 1 +test +running"
    run env PATH="$wrapdir:$PATH" virsh help
    virsh_help() {
        out_has 0 "Domain Management" &&
            grep -Fxq " Replication (virt-replica) (help keyword 'replication'):" <<<"$out" &&
            grep -Eq "^    replica-status +show the replication state" <<<"$out"
    }
    check "virsh help: the real help, then the 'Replication (virt-replica)' section" virsh_help
    run env PATH="$wrapdir:$PATH" virsh --version
    check "virsh --version is the real virsh's" test "$rc" = 0 -a "$out" = "$("$real_virsh" --version)"
else
    for what in "list --all" "help" "--version"; do
        tap_ok "# SKIP no real virsh for '$what' ($real_virsh)"
    done
fi
run timeout 10 env PATH="$wrapdir:$PATH" VIRSH_REAL="$wrapdir/virsh" virsh list
show
check "VIRSH_REAL naming the wrapper: one clear line, exit 1, no recursion" \
    one_line "^virsh: VIRSH_REAL='$wrapdir/virsh' is this wrapper, not libvirt's virsh"
# A "real virsh" that is only a script running virsh again from PATH: the wrapper once more,
# in the same process (exec). The process-id guard stops it.
printf '#!/bin/sh\nexec virsh "$@"\n' >"$work/fake-virsh"
chmod 755 "$work/fake-virsh"
run timeout 10 env PATH="$wrapdir:$PATH" VIRSH_REAL="$work/fake-virsh" virsh list
show
check "a VIRSH_REAL that leads back to the wrapper: one clear line, exit 1, no loop" \
    one_line "^virsh: VIRSH_REAL='$work/fake-virsh' leads back to this wrapper, not libvirt's virsh"

# --- 48-50: completion and the man page -------------------------------------------------------
completion=$srcdir/../../virsh-ext/virt-replica.bash-completion
cat >"$work/complete.sh" <<'EOF'
# complete.sh COMPLETION-FILE: completes four lines as bash would, one answer a line.
[ -f /usr/share/bash-completion/bash_completion ] && . /usr/share/bash-completion/bash_completion
. "$1"
t() {
    COMP_LINE="$*"
    COMP_POINT=${#COMP_LINE}
    COMP_WORDS=("$@")
    COMP_CWORD=$(($# - 1))
    COMPREPLY=()
    _virt_replica "$cli" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
    printf "%s," "${COMPREPLY[@]}"
    echo
}
t virt-replica replica-st
t virt-replica replica-status ""
t virt-replica replica-enable vm1 --compression ""
VIRT_REPLICA_SOCKET=$work/none.sock t virt-replica replica-status ""
EOF
run env cli="$cli" work="$work" bash "$work/complete.sh" "$completion"
show
check "bash completion: commands, domains from the daemon, option values; silent when it is down" \
    test "$rc" = 0 -a -z "$err" -a "$out" = "replica-status,
r1,
on,off,
,"
run env PATH="$wrapdir:$PATH" virsh complete -- replica-status ""
check "virsh complete -- replica-status '' (libvirt's virsh completion): the daemon's domains" \
    test "$rc" = 0 -a "$out" = r1
if command -v groff >/dev/null; then
    run groff -man -ww -z "$srcdir/../../docs/virt-replica.1"
    show
    check "the man page virt-replica(1) formats without a warning" test "$rc" = 0 -a -z "$err"
else
    tap_ok "# SKIP groff is missing"
fi
[ "$failures" = 0 ]
