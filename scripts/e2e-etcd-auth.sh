#!/usr/bin/env bash
# End-to-end check of etcd's user/password authentication: etcd with `auth enable` and a
# 3-second token TTL, then `torus init`, two `torus node`, `torus volume`, `torus nbd serve`
# (its watches) with --etcd-user or TORUS_ETCD_USER, and TORUS_ETCD_PASSWORD(_FILE); tokens that expire while
# the cluster runs are fetched again; wrong or missing credentials get one clear line.
# Run by scripts/test.sh. Needs etcd-server, etcd-client, libnbd-bin.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin e2e-auth

start_etcd "$WORK" --auth-token-ttl 3 || { echo "e2e-auth: etcd did not start"; exit 1; }
PIDS+=("$ETCD_PID")
META=$ETCD_URL
E=(etcdctl --endpoints "$ETCD_CLIENT_URL")
{ "${E[@]}" user add root:rootpw && "${E[@]}" user add torus:s3cret && "${E[@]}" role add torus \
    && "${E[@]}" role grant-permission torus --prefix=true readwrite /torus/ && "${E[@]}" user grant-role torus torus \
    && "${E[@]}" auth enable; } >"$WORK/etcdctl.log" 2>&1 || { echo "e2e-auth: etcdctl failed: $(tail -3 "$WORK/etcdctl.log")"; exit 1; }

expect_refused() {  # expect_refused WHAT TEXT ENV...: `torus status` with ENV fails naming TEXT
    local what=$1 text=$2; shift 2
    out=$(env "$@" timeout 30 "$BIN" volume list --metadata "$META" 2>&1); rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "$out" | grep -q -- "$text" && ok "$what: refused ($(echo "$out" | tail -1 | cut -c1-110))" \
        || bad "$what: rc=$rc: $out"
}
expect_refused "no credentials" "user name is empty\|permission denied\|authentication"
expect_refused "a wrong password" "authentication failed" TORUS_ETCD_USER=torus TORUS_ETCD_PASSWORD=wrong
out=$(TORUS_ETCD_PASSWORD=wrong timeout 30 "$BIN" volume list --metadata "$META" --etcd-user torus 2>&1)
[ $? -ne 0 ] && echo "$out" | grep -q "authentication failed" && ok "--etcd-user with a wrong password: refused" || bad "--etcd-user, wrong password: $out"
expect_refused "a user without a password" "neither TORUS_ETCD_PASSWORD nor" TORUS_ETCD_USER=torus
expect_refused "an unreadable password file" "cannot read TORUS_ETCD_PASSWORD_FILE" TORUS_ETCD_USER=torus TORUS_ETCD_PASSWORD_FILE=$WORK/none

printf 's3cret\n' >"$WORK/password"; chmod 600 "$WORK/password"
TORUS_ETCD_PASSWORD=s3cret "$BIN" init --metadata "$META" --replication 2 --insecure --etcd-user torus >"$WORK/init.log" 2>&1 \
    && ok "torus init --etcd-user torus (password from TORUS_ETCD_PASSWORD)" || bad "init: $(cat "$WORK/init.log")"
export TORUS_ETCD_USER=torus TORUS_ETCD_PASSWORD_FILE=$WORK/password  # the rest: user and password file from the environment
for i in 1 2; do start_node "$i"; done
seconds_until 20 alive 2 >/dev/null && ok "two nodes registered and alive as user torus" || bad "peer list: $("$BIN" peer list --metadata "$META" 2>&1)"
"$BIN" volume create v1 64MiB --metadata "$META" >/dev/null 2>&1 && ok "volume create" || bad "volume create"
PORT=$(free_port)
"$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$PORT" >>"$WORK/nbd.log" 2>&1 &
PIDS+=($!)
seconds_until 30 nbdinfo "nbd://127.0.0.1:$PORT/v1" >/dev/null && ok "torus nbd serve exports v1" || bad "nbd serve: $(tail -5 "$WORK/nbd.log")"

# Tokens live 3 s without use: after 8 s idle every process must fetch a new one.
sleep 8
head -c $((8 << 20)) /dev/urandom >"$WORK/in.img"
nbdcopy --flush "$WORK/in.img" "nbd://127.0.0.1:$PORT/v1" && nbdcopy "nbd://127.0.0.1:$PORT/v1" "$WORK/out.img" \
    && cmp -n $((8 << 20)) "$WORK/in.img" "$WORK/out.img" && ok "after the tokens expired: 8 MiB written, flushed and read back" \
    || bad "nbdcopy after token expiry: $(tail -3 "$WORK/nbd.log")"
"$BIN" volume create v2 16MiB --metadata "$META" >/dev/null 2>&1
seconds_until 20 exports "$PORT" v2 >/dev/null && ok "the volume watch, authenticated, exports v2" || bad "v2 not exported: $(tail -3 "$WORK/nbd.log")"
# A restarted etcd forgets every token: each process is refused once, authenticates again, goes on.
restart_etcd "$WORK" || bad "etcd did not restart"
disown "$ETCD_PID" 2>/dev/null
PIDS+=("$ETCD_PID")
sleep 6
seconds_until 20 alive 2 >/dev/null && ok "after an etcd restart: the nodes' lease keepalives authenticate again" || bad "nodes not alive after the restart"
nbdcopy --flush "$WORK/in.img" "nbd://127.0.0.1:$PORT/v2" && nbdcopy "nbd://127.0.0.1:$PORT/v2" "$WORK/out2.img" \
    && cmp -n $((8 << 20)) "$WORK/in.img" "$WORK/out2.img" && ok "after an etcd restart: 8 MiB written, flushed and read back" \
    || bad "nbdcopy after the restart: $(tail -3 "$WORK/nbd.log")"
grep -q "rejected the auth token" "$WORK/nbd.log" "$WORK"/node-*.log && ok "the processes log that they authenticated again" \
    || bad "no re-authentication logged"
"$BIN" status --metadata "$META" >"$WORK/status.log" 2>&1 && grep -q "health: OK" "$WORK/status.log" && ok "torus status: health OK" \
    || bad "status: $(cat "$WORK/status.log")"
echo "e2e-auth: $pass passed, $fail failed"
[ $fail -eq 0 ]
