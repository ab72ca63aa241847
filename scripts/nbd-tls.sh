#!/usr/bin/env bash
# NBD over TLS (NBD_OPT_STARTTLS) with real clients: certificates from `torus certs`, then
# `torus up --tls require` with client certificates, reached by nbdinfo, nbdcopy, qemu-img and
# nbdfuse on nbds:// URIs; plain clients, clients without a certificate and clients of another
# CA refused (and logged); `--tls allow`; bad TLS options. Run by scripts/test.sh.
# Needs libnbd-bin, qemu-utils, fuse3 (nbdfuse), util-linux (unshare).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin nbd-tls
PORT=$(free_port)
C=$WORK/certs

# Certificates: a CA, a server certificate for 127.0.0.1, a client; and a client of another CA.
{
    "$BIN" certs ca --dir "$C/ca" &&
    "$BIN" certs issue --ca "$C/ca" --role server --host localhost --host 127.0.0.1 --out "$C/server" &&
    "$BIN" certs issue --ca "$C/ca" --role client --name alice --out "$C/alice" &&
    "$BIN" certs ca --dir "$C/other-ca" --name "another CA" &&
    "$BIN" certs issue --ca "$C/other-ca" --role client --name mallory --out "$C/mallory"
} >"$WORK/certs.log" 2>&1 || { echo "nbd-tls: torus certs failed: $(cat "$WORK/certs.log")"; exit 1; }
cp "$C/ca/ca-cert.pem" "$C/mallory/ca-cert.pem"   # mallory trusts our server, we do not trust mallory
mkdir -p "$C/nocert" && cp "$C/ca/ca-cert.pem" "$C/nocert/"
[ "$(stat -c %a "$C/ca/ca-key.pem")" = 600 ] && [ "$(stat -c %a "$C/alice/client-key.pem")" = 600 ] \
    && ok "torus certs: CA and certificates issued, keys mode 0600" || bad "key modes: $(ls -l "$C"/*/)"
openssl verify -CAfile "$C/ca/ca-cert.pem" "$C/server/server-cert.pem" "$C/alice/client-cert.pem" >"$WORK/verify.log" 2>&1 \
    && ok "openssl verifies the issued certificates against the CA" || bad "openssl verify: $(cat "$WORK/verify.log")"

UP_PID=
start_up() {  # start_up TLS-ARGS...: torus up on PORT with a volume v of 64 MiB, waits for its log line
    "$BIN" up --data-dir "$WORK/data" --nodes 2 --replication 2 --disk-size 256MiB --volume v:64MiB \
        --nbd "127.0.0.1:$PORT" --log-level debug "$@" >"$WORK/up.log" 2>&1 &
    UP_PID=$!; PIDS+=("$UP_PID")
    for _ in $(seq 1 100); do grep -q "serving NBD" "$WORK/up.log" && return 0; sleep 0.1; done
    echo "torus up did not start: $(tail -5 "$WORK/up.log")"; return 1
}
stop_up() { kill "$UP_PID" 2>/dev/null; wait "$UP_PID" 2>/dev/null; }

start_up --tls-cert "$C/server/server-cert.pem" --tls-key "$C/server/server-key.pem" --tls-client-ca "$C/ca/ca-cert.pem" || exit 1
U="nbds://127.0.0.1:$PORT/v"
A="tls-certificates=$C/alice"

nbdinfo "$U?$A" >"$WORK/info.log" 2>&1 && grep -q "with TLS" "$WORK/info.log" && grep -q "export-size: 67108864" "$WORK/info.log" \
    && ok "nbdinfo over TLS with a client certificate" || bad "nbdinfo: $(cat "$WORK/info.log")"
head -c $((32 << 20)) /dev/urandom >"$WORK/in.raw"
nbdcopy --flush "$WORK/in.raw" "$U?$A" && nbdcopy "$U?$A" "$WORK/out.raw" && cmp -n $((32 << 20)) "$WORK/in.raw" "$WORK/out.raw" \
    && ok "nbdcopy 32 MiB in and out over TLS, byte-identical" || bad "nbdcopy over TLS"
qemu-img info --object "tls-creds-x509,id=tls0,dir=$C/alice,endpoint=client" \
    --image-opts "driver=nbd,host=127.0.0.1,port=$PORT,export=v,tls-creds=tls0" >"$WORK/qemu.log" 2>&1 \
    && grep -q "67108864 bytes" "$WORK/qemu.log" && ok "qemu-img info over TLS (tls-creds-x509)" || bad "qemu-img: $(cat "$WORK/qemu.log")"

# nbdfuse takes no tls-certificates= (a local file in a URI); as root libnbd reads /etc/pki/libnbd,
# so it runs in a mount namespace where that directory is alice's.
made_pki=
[ -d /etc/pki ] || { mkdir /etc/pki && made_pki=1; }
mkdir -p "$WORK/pki/libnbd" "$WORK/fuse" && cp "$C/alice/"*.pem "$WORK/pki/libnbd/"
unshare -m bash -c "
    mount --bind '$WORK/pki' /etc/pki || exit 1
    nbdfuse '$WORK/fuse' '$U' & for _ in \$(seq 1 50); do [ -e '$WORK/fuse/nbd' ] && break; sleep 0.1; done
    cmp -n $((32 << 20)) '$WORK/fuse/nbd' '$WORK/in.raw'; rc=\$?
    fusermount3 -u '$WORK/fuse' 2>/dev/null || fusermount -u '$WORK/fuse' 2>/dev/null || umount '$WORK/fuse'
    exit \$rc" >"$WORK/fuse.log" 2>&1 && ok "nbdfuse over TLS reads what nbdcopy wrote" || bad "nbdfuse: $(cat "$WORK/fuse.log")"
[ -n "$made_pki" ] && rmdir /etc/pki

# Refusals, each with a log line that says why.
nbdinfo --size "nbd://127.0.0.1:$PORT/v" >"$WORK/plain.log" 2>&1
[ $? -ne 0 ] && grep -q "without TLS, which this server requires" "$WORK/up.log" \
    && ok "a plain client is refused (NBD_REP_ERR_TLS_REQD) and the server logs it" || bad "plain client: $(cat "$WORK/plain.log")"
nbdinfo --size "$U?tls-certificates=$C/nocert" >/dev/null 2>&1
[ $? -ne 0 ] && grep -q "TLS handshake failed: the peer presented no certificate" "$WORK/up.log" \
    && ok "a client without a certificate is refused and logged" || bad "no-cert client: $(grep -i tls "$WORK/up.log" | tail -3)"
nbdinfo --size "$U?tls-certificates=$C/mallory" >/dev/null 2>&1
[ $? -ne 0 ] && grep -q "TLS handshake failed: the peer's certificate is not signed by a trusted CA" "$WORK/up.log" \
    && ok "a client certificate of another CA is refused and logged" || bad "other-CA client: $(grep -i tls "$WORK/up.log" | tail -3)"
stop_up

# --tls allow: both kinds of client.
start_up --tls allow --tls-cert "$C/server/server-cert.pem" --tls-key "$C/server/server-key.pem" || exit 1
nbdinfo "nbd://127.0.0.1:$PORT/v" 2>&1 | grep -q "without TLS" && nbdinfo "$U?tls-certificates=$C/nocert" 2>&1 | grep -q "with TLS" \
    && ok "--tls allow: a plain client and a TLS client (server certificate only) both connect" || bad "--tls allow"
stop_up

# Bad options: one clear line, exit status non-zero, nothing served.
expect_error() {  # expect_error TEXT ARGS...: `torus up ARGS` fails saying TEXT
    local text=$1; shift
    out=$(timeout 30 "$BIN" up --data-dir "$WORK/bad" --nbd "127.0.0.1:$PORT" "$@" 2>&1); rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q -- "$text" && ok "refused: $* ($text)" || bad "$*: rc=$rc: $out"
}
expect_error "needs --tls-cert and --tls-key" --tls require
expect_error "must be off, allow or require" --tls maybe
expect_error "--tls-cert needs --tls-key" --tls-cert "$C/server/server-cert.pem"
expect_error "cannot read the certificate(s) in $WORK/none.pem: no such file" --tls-cert "$WORK/none.pem" --tls-key "$C/server/server-key.pem"
expect_error "not a PEM private key" --tls-cert "$C/server/server-cert.pem" --tls-key "$C/server/server-cert.pem"
expect_error "does the key match the certificate" --tls-cert "$C/server/server-cert.pem" --tls-key "$C/alice/client-key.pem"
expect_error "takes no --tls-cert" --tls off --tls-cert "$C/server/server-cert.pem" --tls-key "$C/server/server-key.pem"

echo "nbd-tls: $pass passed, $fail failed"
[ $fail -eq 0 ]
