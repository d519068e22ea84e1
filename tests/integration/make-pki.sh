#!/bin/sh
# Generates the certificate matrix of test-tls-policy in DIR, with certtool (gnutls-bin) and
# template files, in the manner of libnbd's tests/make-pki.sh and libvirt's test matrix.
#
#   make-pki.sh DIR
#
# Exits 77 (the automake "skip" status) when certtool is missing, 1 on any other failure.
# Every file is named <what>.pem (certificate) and <what>-key.pem (its private key):
#
#   ca, ca2                  the CA (ECDSA P-256, signs certificates and CRLs), an unrelated CA
#   client-ok                EKU clientAuth, CN primary1
#   server-ok                EKU serverAuth, CN replica.example, DNS replica.example, *.dr.example
#   both-primary, both-replica  EKU clientAuth and serverAuth, CN and DNS primary.example,
#                            replica.example (hosts in both roles)
#   server-multiwild         EKU serverAuth, CN multi, DNS *.*.example (two wildcards)
#   server-clientauth-only   EKU clientAuth only, CN replica.example
#   client-expired           valid 2020-01-01 .. 2021-01-01
#   client-notyet            valid from 2099-01-01
#   client-serverauth-only   EKU serverAuth only
#   client-noeku             no extended key usage extension at all
#   client-untrusted         signed by ca2
#   client-selfsigned        self-signed
#   client-revoked           listed in crl.pem
#   client-later-revoked     valid under crl.pem, listed in crl-new.pem
#   client-weak-rsa          RSA 1024 bits (generated with --sec-param low)
#   client-weak-p192         (only when this GnuTLS can make one) ECDSA P-192
#   client-sha1              (only when this certtool signs with SHA1) SHA-1 signature
#   ca-leaf                  CA:TRUE certificate signed by ca, used as a client leaf
#   client-chain.pem         client-ok followed by ca (a chain file)
#   crl.pem                  CRL of ca listing client-revoked
#   crl-new.pem              CRL of ca listing client-revoked and client-later-revoked
#   crl-expired.pem          CRL of ca whose nextUpdate is in the past (2021-01-01)
#   crl-ca2.pem              CRL of ca2 (issued by a CA that is not configured)
#   crl-fake.pem             CRL naming ca as its issuer, signed by another key (ca-fake)
#   key-0600.pem, key-0644.pem  private key files with those modes
set -eu

dir=${1:?usage: make-pki.sh DIR}
command -v certtool >/dev/null 2>&1 || { echo "certtool not found (package gnutls-bin)" >&2; exit 77; }
mkdir -p "$dir"
cd "$dir"

ct() {
    certtool "$@" >/dev/null 2>certtool.log || { cat certtool.log >&2; exit 1; }
}

# key NAME [certtool key options]: an ECDSA P-256 key unless options say otherwise.
key() {
    name=$1
    shift
    if [ $# -eq 0 ]; then
        set -- --key-type ecdsa --curve secp256r1
    fi
    ct --generate-privkey "$@" --outfile "$name-key.pem"
}

# leaf NAME SIGNER TEMPLATE-LINES: a certificate for NAME's key, signed by SIGNER (a CA name).
leaf() {
    name=$1 signer=$2
    printf '%s\n' "$3" >"$name.tmpl"
    ct --generate-certificate --load-privkey "$name-key.pem" \
        --load-ca-certificate "$signer.pem" --load-ca-privkey "$signer-key.pem" \
        --template "$name.tmpl" --outfile "$name.pem"
}

ca_tmpl='cn = "VR Test CA"
ca
cert_signing_key
crl_signing_key
expiration_days = 3650'

key ca
printf '%s\n' "$ca_tmpl" >ca.tmpl
ct --generate-self-signed --load-privkey ca-key.pem --template ca.tmpl --outfile ca.pem

key ca2
printf '%s\n' "$ca_tmpl" | sed 's/VR Test CA/Other CA/' >ca2.tmpl
ct --generate-self-signed --load-privkey ca2-key.pem --template ca2.tmpl --outfile ca2.pem

client='signing_key
expiration_days = 365
tls_www_client'
server='signing_key
expiration_days = 365
tls_www_server'

key client-ok
leaf client-ok ca "cn = primary1
$client"

key server-ok
leaf server-ok ca "cn = replica.example
dns_name = replica.example
dns_name = *.dr.example
$server"

# Hosts that play both roles (reverse replication after a planned failover): both EKUs.
for host in primary replica; do
    key "both-$host"
    leaf "both-$host" ca "cn = $host.example
dns_name = $host.example
$client
tls_www_server"
done

key server-multiwild
leaf server-multiwild ca "cn = multi
dns_name = *.*.example
$server"

key server-clientauth-only
leaf server-clientauth-only ca "cn = replica.example
dns_name = replica.example
$client"

key client-expired
leaf client-expired ca 'cn = expired1
signing_key
tls_www_client
activation_date = "2020-01-01 00:00:00"
expiration_date = "2021-01-01 00:00:00"'

key client-notyet
leaf client-notyet ca 'cn = future1
signing_key
tls_www_client
activation_date = "2099-01-01 00:00:00"
expiration_date = "2100-01-01 00:00:00"'

key client-serverauth-only
leaf client-serverauth-only ca "cn = primary2
$server"

key client-noeku
leaf client-noeku ca 'cn = noeku1
signing_key
expiration_days = 365'

key client-untrusted
leaf client-untrusted ca2 "cn = stranger1
$client"

key client-selfsigned
printf '%s\n' "cn = selfish1
$client" >client-selfsigned.tmpl
ct --generate-self-signed --load-privkey client-selfsigned-key.pem \
    --template client-selfsigned.tmpl --outfile client-selfsigned.pem

key client-revoked
leaf client-revoked ca "cn = revoked1
$client"

key client-later-revoked
leaf client-later-revoked ca "cn = primary3
$client"

key client-weak-rsa --key-type rsa --bits 1024 --sec-param low
leaf client-weak-rsa ca "cn = weak1
$client"

# P-192 and SHA-1 are refused by some GnuTLS builds: make them when possible.
if certtool --generate-privkey --key-type ecdsa --curve secp192r1 \
    --outfile client-weak-p192-key.pem >/dev/null 2>&1; then
    leaf client-weak-p192 ca "cn = weak2
$client" || rm -f client-weak-p192.pem
else
    rm -f client-weak-p192-key.pem
fi
key client-sha1
printf '%s\n' "cn = sha1
$client" >client-sha1.tmpl
certtool --generate-certificate --load-privkey client-sha1-key.pem \
    --load-ca-certificate ca.pem --load-ca-privkey ca-key.pem --hash SHA1 \
    --template client-sha1.tmpl --outfile client-sha1.pem >/dev/null 2>&1 ||
    rm -f client-sha1.pem

key ca-leaf
leaf ca-leaf ca "cn = subca1
ca
cert_signing_key
$client"

cat client-ok.pem ca.pem >client-chain.pem

printf '%s\n' 'crl_next_update = 30' 'crl_number = 1' >crl.tmpl
ct --generate-crl --load-ca-certificate ca.pem --load-ca-privkey ca-key.pem \
    --load-certificate client-revoked.pem --template crl.tmpl --outfile crl.pem

cat client-revoked.pem client-later-revoked.pem >revoked-new.pem
printf '%s\n' 'crl_next_update = 30' 'crl_number = 2' >crl-new.tmpl
ct --generate-crl --load-ca-certificate ca.pem --load-ca-privkey ca-key.pem \
    --load-certificate revoked-new.pem --template crl-new.tmpl --outfile crl-new.pem

printf '%s\n' 'crl_number = 3' 'crl_this_update_date = "2020-01-01 00:00:00"' \
    'crl_next_update_date = "2021-01-01 00:00:00"' >crl-expired.tmpl
ct --generate-crl --load-ca-certificate ca.pem --load-ca-privkey ca-key.pem \
    --template crl-expired.tmpl --outfile crl-expired.pem

ct --generate-crl --load-ca-certificate ca2.pem --load-ca-privkey ca2-key.pem \
    --template crl.tmpl --outfile crl-ca2.pem

key ca-fake
cp ca.tmpl ca-fake.tmpl
ct --generate-self-signed --load-privkey ca-fake-key.pem --template ca-fake.tmpl \
    --outfile ca-fake.pem
ct --generate-crl --load-ca-certificate ca-fake.pem --load-ca-privkey ca-fake-key.pem \
    --template crl.tmpl --outfile crl-fake.pem

cp client-ok-key.pem key-0600.pem
chmod 0600 key-0600.pem
cp client-ok-key.pem key-0644.pem
chmod 0644 key-0644.pem

rm -f certtool.log
