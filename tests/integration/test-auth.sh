#!/usr/bin/env bash
# The replica's authorization entries at runtime (docs/authorization.md, docs/api.md):
#   - replica-auth-add, -list and -remove through the CLI against a replica daemon whose
#     configuration has one [authorization:*] entry; --json; the API's codes (201, 409 exists,
#     400 invalid naming the member, 404, 409 config naming the file);
#   - a primary (vr-transfer, mutual TLS) refused, authorized by replica-auth-add at once,
#     refused again after replica-auth-remove;
#   - end to end with a real domain and a primary daemon (root and libvirtd): refused (403,
#     state Error), replicating after replica-auth-add and replica-resume, refused again on
#     the next cycle after replica-auth-remove;
#   - a restart keeps the API's entries in order; a pattern also in the configuration: the
#     file wins, with a warning; allow-any refuses additions; no replica role: 503 "no-replica-role";
#   - replica-server-config: address, port, certificate names and expiry.
#
#   test-auth.sh VR-TRANSFER VIRT-REPLICAD VIRT-REPLICA  (run-isolated.sh --libvirt; TAP)
#
# SPDX-License-Identifier: LGPL-2.1-or-later
set -u

srcdir=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib-tap.sh
. "$srcdir/lib-tap.sh"

# Absolute: one command runs in another directory.
vt=$(realpath "$1")
daemon_bin=$(realpath "$2")
cli=$(realpath "$3")
tests=31

tap_work_dir vrauth
pids=()
prefix=${VR_TEST_PREFIX:-vrtest-$$}
dom=$prefix-auth
domain_made=
cleanup() {
    tap_stop_all
    [ -n "$domain_made" ] && tap_domain_remove "$dom" "$dom-replica"
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
tap_free_port port || exit 1
mkdir -p "$work/dc1" "$work/store1" "$work/store2"

# replica_conf EXTRA...: the replica's configuration, [replica] lines then EXTRA lines.
replica_conf() {
    cat >"$work/replica.conf" <<EOF
[daemon]
state-dir = $work/rstate
socket = $rsock
libvirt-uri = ${replica_libvirt:-qemu+unix:///system?socket=$work/no-libvirt.sock}
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
standby-name-rule = %n-replica
point-interval = 0
EOF
    printf '%s\n' "$@" >>"$work/replica.conf"
}
config_entry=("" "[authorization:*.dc1.example]" "storage = $work/dc1" "trust-group = dc1")

# vr ARGS...: the CLI on the replica; $out, $err and $rc.
vr() {
    out=$("$cli" --socket "$rsock" "$@" 2>"$work/cli.err")
    rc=$?
    err=$(cat "$work/cli.err")
}
show() { diag "exit $rc" "$out" "$err"; }
one_line_error() { [ "$rc" = 1 ] && [ "$(wc -l <<<"$err")" = 1 ] && grep -q -- "$1" <<<"$err"; }
# api METHOD PATH [BODY]: $status and $body from the replica's API.
api() {
    local reply
    reply=$(tap_api "$rsock" "$@")
    status=$(head -n 1 <<<"$reply")
    body=$(tail -n +2 <<<"$reply")
}
field() { tap_field "$1"; }
out_field() { python3 -c "import json,sys; j=json.loads(sys.stdin.read()); print($1)" <<<"$out" 2>/dev/null; }

# send CYCLE: a primary1 cycle of relationship r1 through vr-transfer; $send_status, $send_err.
send() {
    local base=$(($1 - 1))
    "$vt" gen --out "$work/c$1.stream" --size $((1024 * 1024)) --disk-size $((8 * 1024 * 1024)) \
        --relationship r1 --disk vda --epoch 1 --base "$base" --target "$1" >/dev/null 2>&1
    timeout 60 "$vt" send --cert "$pki/client-ok.pem" --key "$pki/client-ok-key.pem" \
        --ca "$pki/ca.pem" --crl "$pki/crl.pem" --server-name replica.example \
        --connect 127.0.0.1 --port "$port" "$work/c$1.stream" >/dev/null 2>"$work/send.err"
    send_status=$?
    send_err=$(cat "$work/send.err")
}

echo "1..$tests"

replica_conf "allow-any = false" "${config_entry[@]}"
if ! tap_daemon_start replica "$work/replica.conf"; then
    for i in $(seq 1 $tests); do tap_fail "the replica daemon runs (test $i)"; done
    exit 1
fi

# --- 1-3: the configuration's entry; a primary it does not name is refused ----------------------
vr replica-auth-list
show
listed() { [ "$rc" = 0 ] && grep -Eq "^ \*\.dc1\.example +$work/dc1 +dc1 +config$" <<<"$out"; }
check "replica-auth-list: the configuration's entry, origin config" listed
send 1
diag "$send_err"
refused() { [ "$send_status" != 0 ] && grep -q 403 <<<"$send_err" && grep -q "not authorized" <<<"$send_err"; }
check "primary1 is refused (403, not authorized)" refused
check "and nothing is stored for it" test ! -e "$work/store1/r1"

# --- 4-8: add at runtime ------------------------------------------------------------------------
vr replica-auth-add primary1 --storage "$work/store1" --trust-group g1
show
added() { [ "$rc" = 0 ] && grep -q "storage $work/store1, trust group g1" <<<"$out"; }
check "replica-auth-add primary1: exit 0, says where it stores" added
send 1
diag "$send_err"
check "primary1's cycle is accepted at once, without a restart, and published" \
    test "$send_status" = 0 -a -f "$work/store1/r1/vda/rp-1.qcow2"
# A relative directory is the caller's; --json prints the 201 body.
pushd "$work" >/dev/null || exit 1
vr replica-auth-add 'Host-*.DC2.example' --storage ./store2 --json
popd >/dev/null || exit 1
show
check "replica-auth-add --json: the entry, pattern folded, origin api, default trust group" \
    test "$rc" = 0 -a "$(out_field '(j["pattern"], j["storage"], j["trust_group"], j["origin"])')" \
    = "('host-*.dc2.example', '$work/store2', 'default', 'api')"
vr replica-auth-list --json
check "replica-auth-list --json: config first, then the API's in the order added" \
    test "$(out_field '[(e["pattern"], e["origin"]) for e in j["authorizations"]]')" \
    = "[('*.dc1.example', 'config'), ('primary1', 'api'), ('host-*.dc2.example', 'api')]" \
    -a "$(out_field 'j["allow_any"]')" = False
vr replica-auth-add PRIMARY1 --storage "$work/store2"
show
api POST /v1/authorizations "{\"pattern\": \"primary1\", \"storage\": \"$work/store2\"}"
twice() { one_line_error already && [ "$status" = 409 ] && [ "$(field 'j["error"]["code"]')" = exists ]; }
check "the same pattern again (any case): exit 1, one line; API 409 exists" twice

# --- 9-12: invalid entries --------------------------------------------------------------------
invalid_ok=true
while IFS='|' read -r what req member; do
    api POST /v1/authorizations "$req"
    if [ "$status" != 400 ] || [ "$(field 'j["error"]["code"]')" != invalid ] ||
        ! grep -q -- "$member" <<<"$(field 'j["error"]["message"]')"; then
        diag "$what: $status $body"
        invalid_ok=false
    fi
done <<EOF
two stars|{"pattern": "a*b*.example", "storage": "$work/store1"}|'pattern'
a space|{"pattern": "a b.example", "storage": "$work/store1"}|'pattern'
a missing directory|{"pattern": "x.example", "storage": "$work/nowhere"}|'storage'
a relative directory|{"pattern": "x.example", "storage": "store1"}|'storage'
dot-dot|{"pattern": "x.example", "storage": "$work/store1/../store2"}|'storage'
a bad group|{"pattern": "x.example", "storage": "$work/store1", "trust_group": "Bad"}|'trust_group'
no pattern|{"storage": "$work/store1"}|'pattern'
a number|{"pattern": 7, "storage": "$work/store1"}|'pattern'
an unknown member|{"pattern": "x.example", "storage": "$work/store1", "path": "/"}|'path'
not an object|[1]|JSON object
EOF
check "invalid entries: 400 invalid, each naming the member" $invalid_ok
vr replica-auth-add 'a*b*.example' --storage "$work/store1"
show
check "replica-auth-add with a bad pattern: exit 1, one line naming the pattern" \
    one_line_error "'pattern': pattern 'a\*b\*.example'"
vr replica-auth-add x.example
show
check "replica-auth-add without --storage: exit 2 with the usage" \
    test "$rc" = 2 -a -n "$(grep '^usage: virt-replica replica-auth-add' <<<"$err")"
vr replica-auth-list --json
check "nothing was added by the refused requests" \
    test "$(out_field 'len(j["authorizations"])')" = 3

# --- 13-16: remove ------------------------------------------------------------------------------
vr replica-auth-remove '*.dc1.example'
show
api DELETE "/v1/authorizations/%2A.dc1.example"
fixed() {
    one_line_error "$work/replica.conf" && grep -q "edit" <<<"$err" && [ "$status" = 409 ] &&
        [ "$(field 'j["error"]["code"]')" = config ]
}
check "removing the configuration's entry: exit 1 naming the file; API 409 config" fixed
vr replica-auth-remove nobody.example
api DELETE /v1/authorizations/nobody.example
check "removing an unknown pattern: exit 1; API 404 unknown-authorization" \
    test "$rc" = 1 -a "$status" = 404 -a "$(field 'j["error"]["code"]')" = unknown-authorization
vr replica-auth-remove primary1
show
send 2
diag "$send_err"
removed() { [ "$rc" = 0 ] && [ "$send_status" != 0 ] && grep -q 403 <<<"$send_err"; }
check "replica-auth-remove primary1: exit 0; primary1's next cycle is refused (403)" removed
check "and its published point is untouched, cycle 2 not published" \
    test -f "$work/store1/r1/vda/rp-1.qcow2" -a ! -e "$work/store1/r1/vda/rp-2.qcow2"

# --- 17-23: end to end: a primary daemon and a real domain --------------------------------------
if tap_need_libvirt; then
    psock=$work/primary.sock
    pcli() {
        out=$("$cli" --socket "$psock" "$@" 2>"$work/cli.err")
        rc=$?
        err=$(cat "$work/cli.err")
    }
    pstatus() { body=$(tap_api "$psock" GET "/v1/relationships/$dom" | tail -n +2); }
    wait_state() { # wait_state SECONDS EXPR
        local i
        for i in $(seq "$1"); do
            pstatus
            [ "$(field "$2")" = True ] && return 0
            sleep 1
        done
        diag "waited $1 s for $2:" "$body"
        return 1
    }
    cat >"$work/primary.conf" <<EOF
[daemon]
state-dir = $work/pstate
socket = $psock

[certificates]
ca = $pki/ca.pem
cert = $pki/client-ok.pem
key = $pki/client-ok-key.pem
crl = $pki/crl.pem
EOF
    domain_made=1
    if tap_domain_start "$dom" && tap_daemon_start primary "$work/primary.conf"; then
        tap_guest_write "$dom" 0x5a 0 1M
        api GET /v1/server
        body=$(tap_api "$psock" POST /v1/relationships \
            "{\"domain\": \"$dom\", \"server\": \"replica.example\", \"port\": $port, \"address\": \"127.0.0.1\", \"frequency\": 300}" |
            tail -n +2)
        rel=$(field 'j["id"]')
        check "the primary's first cycle is refused: state Error, the error says 403" \
            wait_state 60 'j["state"] == "Error"'
        diag "$(grep -m 1 'refused\|403' "$work/primary.err")"
        pcli replica-sync "$dom"
        show
        check "replica-sync while stopped by the refusal: exit 1, 'resume it first'" \
            one_line_error "resume it first"
        vr replica-auth-add primary1 --storage "$work/store2" --trust-group g2
        pcli replica-resume "$dom"
        show
        check "replica-auth-add primary1, then replica-resume: the initial copy is acknowledged" \
            wait_state 120 'j["state"] == "Replicating" and j["last_cycle"] is not None'
        check "the replica stores it beneath the added entry's directory" \
            test -n "$rel" -a -f "$work/store2/$rel/vda/rp-1.qcow2"
        tap_guest_write "$dom" 0xab 4M 1M
        pcli replica-sync "$dom"
        show
        check "a sync after that is acknowledged too (exit 0)" test "$rc" = 0
        vr replica-auth-remove primary1
        tap_guest_write "$dom" 0xcd 8M 1M
        pcli replica-sync "$dom"
        show
        pstatus
        refused_again() { [ "$rc" = 1 ] && grep -q 403 <<<"$err" && [ "$(field 'j["state"]')" = Error ]; }
        check "after replica-auth-remove the next cycle is refused: sync exit 1, state Error" \
            refused_again
        check "the replica's log names the refusal" \
            grep -q "refused.*primary 'primary1' is not authorized" "$work/replica.err"
        pcli replica-disable "$dom"
        tap_daemon_stop primary
    else
        for i in $(seq 17 23); do tap_fail "the domain and the primary daemon run (test $i)"; done
    fi
else
    for i in $(seq 17 23); do echo "ok $((n + 1)) # SKIP $tap_no_libvirt" && n=$((n + 1)); done
fi

# --- 24-26: a restart; a pattern in both places -------------------------------------------------
vr replica-auth-add later.example --storage "$work/store1"
tap_daemon_stop replica
replica_conf "allow-any = false" "${config_entry[@]}" "" "[authorization:Later.example]" \
    "storage = $work/dc1" "trust-group = dc1"
tap_daemon_start replica "$work/replica.conf"
vr replica-auth-list --json
diag "$out"
check "after a restart the API's entries are back, after the configuration's" \
    test "$(out_field '[(e["pattern"], e["origin"]) for e in j["authorizations"]]')" \
    = "[('*.dc1.example', 'config'), ('later.example', 'config'), ('host-*.dc2.example', 'api')]"
both() {
    grep -q "authorization 'later.example' is both in .*the configuration file's entry wins" \
        "$work/replica.err" && [ "$(out_field 'j["authorizations"][1]["storage"]')" = "$work/dc1" ]
}
check "a pattern both in the file and in the database: the file's entry wins, with a warning" both
vr replica-auth-remove later.example
show
check "and it is the configuration's now: not removable (exit 1)" one_line_error "configuration file"

# --- 27-28: replica-server-config -------------------------------------------------------------
vr replica-server-config
diag "$out"
server_ok() {
    [ "$rc" = 0 ] && grep -Eq "^Address: +127\.0\.0\.1$" <<<"$out" &&
        grep -Eq "^Port: +$port$" <<<"$out" && grep -Eq "^  Subject: +CN=replica\.example" <<<"$out" &&
        grep -Eq "^  Names: +replica\.example, \*\.dr\.example" <<<"$out" &&
        grep -Eq "^  Valid until: .*\(in [0-9]+ days\)$" <<<"$out" &&
        grep -Eq "^Check revocation: +yes$" <<<"$out" && grep -Eq "^Authorization: +3 entries" <<<"$out"
}
check "replica-server-config: address, port, certificate subject, names and expiry" server_ok
vr replica-server-config --json
check "replica-server-config --json: GET /v1/server (port, paths, names, not_after in the future)" \
    test "$rc" = 0 -a "$(out_field 'j["port"] == '"$port"' and j["listen"] == "address:127.0.0.1" and j["certificates"]["ca"] == "'"$pki/ca.pem"'" and "replica.example" in j["certificates"]["dns_names"] and j["certificates"]["not_after"] > __import__("time").time()')" = True

# --- 29: allow-any ------------------------------------------------------------------------------
tap_daemon_stop replica
replica_conf "allow-any = true" "default-storage = $work/store1"
tap_daemon_start replica "$work/replica.conf"
vr replica-auth-add y.example --storage "$work/store1"
show
api POST /v1/authorizations "{\"pattern\": \"y.example\", \"storage\": \"$work/store1\"}"
any_refused() {
    one_line_error "allow-any = true" && [ "$status" = 409 ] &&
        [ "$(field 'j["error"]["code"]')" = allow-any ] && grep -q "not consulted" "$work/replica.err"
}
check "with allow-any: adding is refused (exit 1, 409 allow-any), the entries are not consulted" \
    any_refused

# --- 30-31: no replica role ---------------------------------------------------------------------
tap_daemon_stop replica
sed -i 's/^enabled = true/enabled = false/' "$work/replica.conf"
tap_daemon_start replica "$work/replica.conf"
api GET /v1/authorizations
vr replica-auth-list
show
check "no replica role: GET /v1/authorizations 503 no-replica-role; replica-auth-list exit 1" \
    test "$status" = 503 -a "$(field 'j["error"]["code"]')" = no-replica-role -a "$rc" = 1
api GET /v1/server
vr replica-server-config
check "no replica role: GET /v1/server 503 no-replica-role; replica-server-config says the role is off" \
    test "$status" = 503 -a "$rc" = 0 -a -n "$(grep -E '^Replica role: +off' <<<"$out")"

[ "$n" = "$tests" ] || diag "ran $n of $tests tests"
[ "$failures" = 0 ]
