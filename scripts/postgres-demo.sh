#!/usr/bin/env bash
# PostgreSQL on a Torus volume, as CoreOS showed it: `torus attach --fs ext4 --mount`, initdb,
# pgbench -i -s 10, pgbench with 8 clients while a storage node is SIGKILLed (etcd mode), then
# PostgreSQL stopped, the volume detached, the whole cluster stopped and started again, the
# volume attached again and every row and index checked (row counts and balance sums as before,
# pg_amcheck with --heapallindexed). The same pgbench run on nbdkit file, attached the same way,
# gives the TPS ratio.
# Usage: bash scripts/postgres-demo.sh [etcd|up] [SECONDS=30]   (as root; run by scripts/test.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
MODE=${1:-etcd}; SECONDS_RUN=${2:-30}
install_missing postgresql postgresql-client nbdkit
PG=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
e2e_begin "postgres-$MODE"
export TORUS_ATTACH_DIR="$WORK/attach"
chmod 755 "$WORK"
mkdir -p "$WORK/pg-torus" "$WORK/pg-nbdkit"
PGPORT_T=$(free_port); PGPORT_N=$(free_port)

start_cluster() {
    if [ "$MODE" = up ]; then
        "$BIN" up --data-dir "$WORK/up" --nbd "127.0.0.1:$NBD_PORT" --volume pg:2GiB >>"$WORK/up.log" 2>&1 &
        SERVER=$!; PIDS+=($!)
    else
        "$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$NBD_PORT" "${PEER_TLS[@]}" >>"$WORK/nbd.log" 2>&1 &
        SERVER=$!; PIDS+=($!)
    fi
    seconds_until 60 nbdinfo "nbd://127.0.0.1:$NBD_PORT/pg" >/dev/null
}
NBD_PORT=$(free_port)
if [ "$MODE" = etcd ]; then
    etcd_cluster 3 2
    "$BIN" volume create pg 2GiB --metadata "$META" >/dev/null || bad "volume create"
fi
start_cluster && ok "$MODE: the volume pg (2 GiB) is served" || bad "server: $(tail -5 "$WORK"/*.log)"

pg() { su postgres -s /bin/sh -c "$*"; }
pg_start() {  # DIR PORT
    pg "$PG/pg_ctl -D $1/pg -l $1/pg.log -o '-p $2 -k /tmp -c listen_addresses=' -w -t 120 start" >/dev/null
}
sql() { pg "$PG/psql -X -q -t -A -h /tmp -p $1 -d postgres -c \"$2\""; }
attach_pg() {  # NAME MOUNT ARGS...
    local name=$1 dir=$2; shift 2
    "$BIN" attach "$name" --fs ext4 --mount "$dir" "$@" >"$WORK/attach-$name.log" 2>&1 && chown postgres "$dir"
}
bench() {  # PORT LOG: pgbench 8 clients for SECONDS_RUN; prints its TPS
    pg "$PG/pgbench -h /tmp -p $1 -c 8 -j 2 -T $SECONDS_RUN postgres" >"$2" 2>&1
    local rc=$?
    grep -o 'tps = [0-9.]*' "$2" | head -1 | awk '{ printf "%.0f", $3 }'
    return $rc
}
state() {  # PORT: the rows and sums pgbench's transactions keep consistent
    sql "$1" "SELECT (SELECT count(*) FROM pgbench_accounts), (SELECT sum(abalance) FROM pgbench_accounts),
              (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers), (SELECT count(*) FROM pgbench_history)"
}

# PostgreSQL on Torus.
attach_pg pg "$WORK/pg-torus" --nbd "127.0.0.1:$NBD_PORT" && ok "torus attach pg --fs ext4 --mount: $(head -1 "$WORK/attach-pg.log")" \
    || bad "attach: $(cat "$WORK/attach-pg.log")"
pg "$PG/initdb -D $WORK/pg-torus/pg" >"$WORK/initdb.log" 2>&1 && pg_start "$WORK/pg-torus" "$PGPORT_T" \
    && ok "initdb and PostgreSQL started on the volume" || bad "initdb/start: $(tail -3 "$WORK/initdb.log" "$WORK/pg-torus/pg.log")"
t0=$(date +%s)
pg "$PG/pgbench -h /tmp -p $PGPORT_T -i -s 10 -q postgres" >"$WORK/init.log" 2>&1 \
    && ok "pgbench -i -s 10 ($(( $(date +%s) - t0 )) s)" || bad "pgbench -i: $(tail -3 "$WORK/init.log")"
if [ "$MODE" = etcd ]; then
    ( sleep $((SECONDS_RUN / 3)); kill -9 "${NODE_PIDS[2]}" ) &
    KILLER=$!
fi
tps_torus=$(bench "$PGPORT_T" "$WORK/bench-torus.log"); rc=$?
failed=$(grep -o 'number of failed transactions: [0-9]*' "$WORK/bench-torus.log" | awk '{ print $5 }')
[ "$MODE" = etcd ] && { wait "$KILLER"; what=" while storage node 2 was SIGKILLed"; } || what=""
[ $rc -eq 0 ] && [ "${failed:-x}" = 0 ] && ok "pgbench 8 clients ${SECONDS_RUN} s$what: $tps_torus TPS, 0 failed transactions" \
    || bad "pgbench run (rc $rc, failed ${failed:-?}): $(tail -5 "$WORK/bench-torus.log")"
before=$(state "$PGPORT_T")
pg "$PG/pg_ctl -D $WORK/pg-torus/pg -m fast -w stop" >/dev/null && "$BIN" detach pg >/dev/null \
    && ok "PostgreSQL stopped, pg detached" || bad "stop/detach"

# The whole cluster stops and starts again.
if [ "$MODE" = etcd ]; then
    stop_in_reverse "$ETCD_PID" "${NODE_PIDS[1]}" "${NODE_PIDS[3]}" "$SERVER"
    start_etcd "$WORK" >/dev/null && PIDS+=("$ETCD_PID") && META=$ETCD_URL
    for i in 1 2 3; do start_node "$i"; done
    seconds_until 30 alive 3 >/dev/null || bad "nodes after the restart: $("$BIN" peer list --metadata "$META" 2>&1)"
else
    stop_in_reverse "$SERVER"
fi
start_cluster && ok "the whole cluster stopped and started again" || bad "restart: $(tail -5 "$WORK"/*.log)"
attach_pg pg "$WORK/pg-torus" --nbd "127.0.0.1:$NBD_PORT" && pg_start "$WORK/pg-torus" "$PGPORT_T" \
    && ok "pg attached again, PostgreSQL started" || bad "attach again: $(cat "$WORK/attach-pg.log") $(tail -3 "$WORK/pg-torus/pg.log")"
after=$(state "$PGPORT_T")
[ -n "$before" ] && [ "$after" = "$before" ] && ok "every row as before the restart (accounts|sum|branches|tellers|history: $after)" \
    || bad "rows changed: before '$before', after '$after'"
pg "$PG/pg_amcheck -h /tmp -p $PGPORT_T --install-missing --heapallindexed --parent-check postgres" >"$WORK/amcheck.log" 2>&1 \
    && ok "pg_amcheck --heapallindexed --parent-check: every table and index intact" || bad "pg_amcheck: $(tail -5 "$WORK/amcheck.log")"
pg "$PG/pg_ctl -D $WORK/pg-torus/pg -m fast -w stop" >/dev/null; "$BIN" detach pg >/dev/null || bad "final detach"

# The same run on nbdkit file, attached the same way.
head -c 0 /dev/null; truncate -s 2G "$WORK/nbdkit.img"
NK_PORT=$(free_port)
nbdkit --exit-with-parent -f -p "$NK_PORT" -e pg file "$WORK/nbdkit.img" >/dev/null 2>&1 &
PIDS+=($!)
seconds_until 10 nbdinfo "nbd://127.0.0.1:$NK_PORT/pg" >/dev/null
attach_pg nbdkit "$WORK/pg-nbdkit" --uri "nbd://127.0.0.1:$NK_PORT/pg" && pg "$PG/initdb -D $WORK/pg-nbdkit/pg" >/dev/null 2>&1 \
    && pg_start "$WORK/pg-nbdkit" "$PGPORT_N" && pg "$PG/pgbench -h /tmp -p $PGPORT_N -i -s 10 -q postgres" >/dev/null 2>&1 \
    || bad "nbdkit setup: $(cat "$WORK/attach-nbdkit.log")"
tps_nbdkit=$(bench "$PGPORT_N" "$WORK/bench-nbdkit.log")
pg "$PG/pg_ctl -D $WORK/pg-nbdkit/pg -m fast -w stop" >/dev/null; "$BIN" detach nbdkit >/dev/null
ratio=$(awk -v a="${tps_torus:-0}" -v b="${tps_nbdkit:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
echo "        pgbench 8 clients ${SECONDS_RUN} s, ext4 via torus attach (torus-fuse + loop): torus ($MODE$what) $tps_torus TPS, nbdkit file $tps_nbdkit TPS: ${ratio}x"
kill -INT "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null
echo "postgres-demo ($MODE): $pass passed, $fail failed"
[ $fail -eq 0 ]
