#!/usr/bin/env bash
# End-to-end check of etcd over TLS with client-certificate authentication: a throwaway CA,
# server and client certificates (openssl), etcd with --client-cert-auth, then `torus init`,
# two `torus node`, `torus volume`, `torus nbd serve` (its volume watch streams over TLS, and it
# serves NBD over TLS with certificates from `torus certs`) and real NBD clients. Run by scripts/test.sh. Needs etcd-server, openssl, libnbd-bin.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin e2e-tls

# Certificates: a CA, a server certificate for 127.0.0.1, a client certificate.
C=$WORK/certs; mkdir -p "$C"
{
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=torus test CA" -keyout "$C/ca.key" -out "$C/ca.pem"
    for who in server client; do
        openssl req -newkey rsa:2048 -nodes -subj "/CN=torus-$who" -keyout "$C/$who.key" -out "$C/$who.csr"
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$C/$who.ext"
        openssl x509 -req -in "$C/$who.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial -days 2 \
            -extfile "$C/$who.ext" -out "$C/$who.pem"
    done
} >"$WORK/openssl.log" 2>&1 || { echo "e2e-tls: openssl failed: $(tail -3 "$WORK/openssl.log")"; exit 1; }

ETCD_SCHEME=https
ETCD_CURL_ARGS=(--cacert "$C/ca.pem" --cert "$C/client.pem" --key "$C/client.key")
start_etcd "$WORK" --cert-file "$C/server.pem" --key-file "$C/server.key" --client-cert-auth \
    --trusted-ca-file "$C/ca.pem" || { echo "e2e-tls: etcd did not start"; exit 1; }
PIDS+=("$ETCD_PID")
META=$ETCD_CLIENT_URL
client=$ETCD_CLIENT_PORT

# Without a client certificate etcd refuses us, and the error names the endpoint.
out=$(TORUS_ETCD_CA="$C/ca.pem" timeout 30 "$BIN" init --metadata "$META" --replication 1 --insecure 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "127.0.0.1:$client" && ok "without a client certificate: refused, naming the endpoint" \
    || bad "no client cert: rc=$rc: $out"
export TORUS_ETCD_CA="$C/ca.pem" TORUS_ETCD_CERT="$C/client.pem" TORUS_ETCD_KEY="$C/client.key"
"$BIN" init --metadata "$META" --replication 1 --tls "$C/peer" >"$WORK/init.log" 2>&1 \
    && ok "torus init --tls over TLS with a client certificate (peers over mutual TLS)" || bad "init: $(cat "$WORK/init.log")"
out=$(timeout 30 "$BIN" node --metadata "$META" --data-dir "$WORK/node-x" --size 256MiB 2>&1); rc=$?
[ $rc -ne 0 ] && echo "$out" | grep -q "requires mutual TLS between peers" && ok "a node without --peer-tls is refused on a --tls cluster" \
    || bad "node without --peer-tls: rc=$rc: $out"
for i in 1 2; do
    "$BIN" node --metadata "$META" --data-dir "$WORK/node-$i" --size 256MiB --zone "z$i" --peer-tls "$C/peer" >>"$WORK/node-$i.log" 2>&1 &
    PIDS+=($!)
done
for _ in $(seq 1 50); do [ "$("$BIN" peer list --metadata "$META" 2>/dev/null | grep -c alive)" = 2 ] && break; sleep 0.2; done
[ "$("$BIN" peer list --metadata "$META" 2>/dev/null | grep -c alive)" = 2 ] && ok "two nodes registered over TLS" \
    || bad "peer list: $("$BIN" peer list --metadata "$META" 2>&1; tail -3 "$WORK/node-1.log")"
"$BIN" volume create t1 32MiB --metadata "$META" >/dev/null 2>&1 && ok "volume create over TLS" || bad "volume create"
# NBD over TLS too: `torus nbd serve` with a certificate from `torus certs`, clients with theirs.
"$BIN" certs ca --dir "$C/nbd-ca" >/dev/null && "$BIN" certs issue --ca "$C/nbd-ca" --role server --host 127.0.0.1 --out "$C/nbd-server" >/dev/null \
    && "$BIN" certs issue --ca "$C/nbd-ca" --role client --out "$C/nbd-client" >/dev/null || bad "torus certs"
NBD_PORT=$(free_port)
"$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$NBD_PORT" --peer-tls "$C/peer" --tls-cert "$C/nbd-server/server-cert.pem" \
    --tls-key "$C/nbd-server/server-key.pem" --tls-client-ca "$C/nbd-ca/ca-cert.pem" >>"$WORK/nbd.log" 2>&1 &
PIDS+=($!)
T="tls-certificates=$C/nbd-client"
NBDS="nbds://127.0.0.1:$NBD_PORT"
for _ in $(seq 1 100); do nbdinfo "$NBDS/t1?$T" >/dev/null 2>&1 && break; sleep 0.2; done
head -c $((8 << 20)) /dev/urandom >"$WORK/in.img"
nbdcopy --flush "$WORK/in.img" "$NBDS/t1?$T" && nbdcopy "$NBDS/t1?$T" "$WORK/out.img" \
    && cmp -n $((8 << 20)) "$WORK/in.img" "$WORK/out.img" && ok "nbdcopy 8 MiB over nbds:// through nbd serve on a TLS etcd, byte-identical" \
    || bad "nbdcopy: $(tail -3 "$WORK/nbd.log")"
nbdinfo --size "nbd://127.0.0.1:$NBD_PORT/t1" >/dev/null 2>&1 && bad "nbd serve --tls-cert served a plain client" \
    || ok "nbd serve with --tls-cert refuses a plain client"
"$BIN" volume create t2 16MiB --metadata "$META" >/dev/null 2>&1
found=0
for _ in $(seq 1 50); do nbdinfo --list "$NBDS?$T" 2>/dev/null | grep -q 'export="t2"' && { found=1; break; }; sleep 0.1; done
[ $found = 1 ] && ok "the volume watch streams over TLS: t2 is exported (listed over nbds://)" || bad "t2 not exported: $(tail -3 "$WORK/nbd.log")"
# A node's port takes only TLS clients with a certificate of the cluster CA (openssl s_client as the client).
NODE_PORT=$("$BIN" peer list --metadata "$META" 2>/dev/null | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2)
"$BIN" certs ca --dir "$C/other-ca" >/dev/null && "$BIN" certs issue --ca "$C/other-ca" --role peer --out "$C/other-peer" >/dev/null
handshake() {  # handshake CERT-ARGS...: true when a TLS session with the node stands for a second (TLS 1.3: a
    # refused client certificate is answered with an alert after the client finished its handshake)
    sleep 1 | timeout 10 openssl s_client -connect "127.0.0.1:$NODE_PORT" -CAfile "$C/peer/ca-cert.pem" "$@" >"$WORK/sclient.log" 2>&1 \
        && ! grep -q "alert\|errno\|:error:" "$WORK/sclient.log"
}
handshake -cert "$C/peer/peer-cert.pem" -key "$C/peer/peer-key.pem" && ok "node port: a client with a peer certificate of the cluster gets a TLS session" \
    || bad "s_client with the cluster's peer certificate: $(tail -5 "$WORK/sclient.log")"
handshake && bad "node port: a TLS client without a certificate got a session" || ok "node port: a TLS client without a certificate is refused"
handshake -cert "$C/other-peer/peer-cert.pem" -key "$C/other-peer/peer-key.pem" \
    && bad "node port: a certificate of another CA got a session" || ok "node port: a peer certificate of another CA is refused"
grep -q "TLS handshake failed" "$WORK"/node-*.log && ok "the node logs why it refused them" || bad "no refusal in the node logs"
"$BIN" status --metadata "$META" >"$WORK/status.log" 2>&1 && grep -q "health: OK" "$WORK/status.log" \
    && grep -q "peers over mutual TLS" "$WORK/status.log" \
    && ok "torus status over TLS" || bad "status: $(cat "$WORK/status.log")"
echo "e2e-tls: $pass passed, $fail failed"
[ $fail -eq 0 ]
