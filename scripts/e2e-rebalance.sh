#!/usr/bin/env bash
# Rebalancing on real processes: etcd + 4 `torus node` processes, replication 3, 256 MiB
# written with fio verify. A fifth node joins: the collector of `torus nbd serve` moves to
# it what the new ring places there (ideally 1/5 of the stored copies) and deletes the old
# copies; then node 2 is drained, reported drained, removed with `torus peer remove` and
# SIGKILLed. Full fio verify reads pass after each step, with I/O going on throughout.
# Usage: bash scripts/e2e-rebalance.sh   (needs etcd-server, libnbd-bin, fio; run by scripts/test.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin e2e-rebalance
etcd_cluster 4 3

"$BIN" volume create v1 256MiB --metadata "$META" >/dev/null 2>&1 || bad "volume create"
PORT=$(free_port); MPORT=$(free_port)
"$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$PORT" "${PEER_TLS[@]}" --gc-interval 2s --gc-grace 1s --repair-grace 60s \
    --repair-rate 0 --ring-settle 4s --metrics "127.0.0.1:$MPORT" >>"$WORK/nbd.log" 2>&1 &
SERVER=$!; PIDS+=($!)
URI="nbd://127.0.0.1:$PORT/v1"
seconds_until 30 nbdinfo "$URI" >/dev/null && ok "torus nbd serve exports v1 (collector: pass every 2 s, ring settle 4 s)" \
    || bad "nbd serve: $(tail -5 "$WORK/nbd.log")"

FIO=(fio --name=w --ioengine=nbd --uri="$URI" --rw=write --bs=256k --iodepth=8 --size=256m --verify=crc32c)
"${FIO[@]}" --do_verify=1 --end_fsync=1 --output="$WORK/fio-w.txt" >/dev/null 2>&1 \
    && ok "fio writes 256 MiB with crc32c verify" || bad "fio write: $(grep -i err "$WORK/fio-w.txt" | head -3)"
status() { "$BIN" status --metadata "$META" >"$WORK/status.txt" 2>&1; cat "$WORK/status.txt" >>"$WORK/status-trace.txt"; }
balanced() { status; grep -q "ring: version $1; balanced" "$WORK/status.txt" && grep -q "redundancy: full" "$WORK/status.txt"; }
v0=$("$BIN" peer list --metadata "$META" | sed -n 's/^ring version //p')
seconds_until 60 balanced "$v0" >/dev/null && ok "balanced and fully redundant at ring version $v0 before the join" \
    || bad "not balanced before the join: $(grep -i "ring\|redund" "$WORK/status.txt")"
moved_bytes() { grep -o "moved ([0-9]* bytes)" "$WORK/nbd.log" | grep -o "[0-9]*" | awk '{s += $1} END {print s + 0}'; }
before=$(moved_bytes)

# Join: a fifth node registers (a new ring version); background reads go on meanwhile.
start_node 5
seconds_until 20 alive 5 >/dev/null && ok "node 5 joins (ring version $("$BIN" peer list --metadata "$META" | sed -n 's/^ring version //p'))" \
    || bad "node 5 did not join"
v1=$("$BIN" peer list --metadata "$META" | sed -n 's/^ring version //p')
READ=(fio --name=r --ioengine=nbd --uri="$URI" --rw=randread --bs=64k --iodepth=4 --size=256m --time_based --runtime=20)
"${READ[@]}" --output="$WORK/fio-r.txt" >/dev/null 2>&1 &
READER=$!
joined=$(date +%s)
t=$(seconds_until 120 balanced "$v1") && ok "rebalanced after the join in ${t}s (old copies deleted, full redundancy)" \
    || bad "not balanced after the join: $(grep -i "ring\|redund\|node 5" "$WORK/status.txt")"
wait $READER && ok "random reads during the rebalance: no errors" || bad "reads during the rebalance failed: $(grep -i err "$WORK/fio-r.txt" | head -3)"
moved=$(( $(moved_bytes) - before ))
stored=$(( 3 * 256 * 1024 * 1024 ))
ratio=$(awk -v m=$moved -v s=$stored 'BEGIN { printf "%.3f", m / s }')
echo "        bytes moved on the join: $moved of $stored stored ($ratio; ideal 0.200 = 1/5)"
awk -v r=$ratio 'BEGIN { exit !(r > 0.12 && r < 0.30) }' && ok "the join moved ${ratio} of the stored bytes (ideal 0.2)" \
    || bad "the join moved ${ratio} of the stored bytes (ideal 0.2)"
metric() { curl -s "http://127.0.0.1:$MPORT/metrics" | awk -v n="$1" '$1 == n { print int($2) }'; }
mbytes=$(metric torus_rebalance_bytes_total); trimmed=$(metric torus_rebalance_trimmed_copies_total); rv=$(metric torus_ring_version)
total_moved=$(moved_bytes)
[ "${mbytes:-0}" = "$total_moved" ] && [ "${trimmed:-0}" -gt 0 ] && [ "${rv:-0}" = "$v1" ] \
    && ok "metrics: torus_rebalance_bytes_total $mbytes, torus_rebalance_trimmed_copies_total $trimmed, torus_ring_version $rv" \
    || bad "metrics after the join: bytes=${mbytes:-none} (log: $total_moved) trimmed=${trimmed:-none} ring=${rv:-none} (want $v1)"
"${FIO[@]}" --verify_only --output="$WORK/fio-v1.txt" >/dev/null 2>&1 \
    && ok "a full fio verify read passes after the join" || bad "verify after the join: $(grep -i "err\|verify" "$WORK/fio-v1.txt" | head -5)"

# Drain the node of data directory node-2 (ids are handed out in registration order) while
# writing over the first 64 MiB again.
D=$(sed -n 's/^torus: node n\([0-9]*\):.*/\1/p' "$WORK/node-2.log" | head -1)
[ -n "$D" ] || bad "no node id in node-2.log"
"$BIN" peer drain $D --metadata "$META" >"$WORK/drain.txt" 2>&1 && ok "torus peer drain $D: $(head -c 80 "$WORK/drain.txt")..." \
    || bad "peer drain: $(cat "$WORK/drain.txt")"
"$BIN" peer remove $D --metadata "$META" >"$WORK/remove0.txt" 2>&1 \
    && bad "peer remove of a draining node that is not drained yet was accepted" \
    || ok "peer remove refuses a node not drained yet: $(head -c 100 "$WORK/remove0.txt")"
FIO2=(fio --name=w2 --ioengine=nbd --uri="$URI" --rw=write --bs=256k --iodepth=8 --size=64m --verify=crc32c)
"${FIO2[@]}" --do_verify=1 --end_fsync=1 --output="$WORK/fio-w2.txt" >/dev/null 2>&1 \
    && ok "fio rewrites 64 MiB with verify during the drain" || bad "fio write during the drain: $(grep -i err "$WORK/fio-w2.txt" | head -3)"
drained() { status; grep -q "node $D: drained" "$WORK/status.txt"; }
t=$(seconds_until 120 drained) && ok "node $D reported drained ${t}s later" \
    || bad "node $D not drained: $(grep -i "ring\|node $D\|redund" "$WORK/status.txt")"
"$BIN" peer remove $D --metadata "$META" >"$WORK/remove.txt" 2>&1 && ok "torus peer remove $D: $(cat "$WORK/remove.txt")" \
    || bad "peer remove: $(cat "$WORK/remove.txt")"
kill -9 "${NODE_PIDS[2]}"
"${FIO2[@]}" --verify_only --output="$WORK/fio-v2.txt" >/dev/null 2>&1 \
    && "${FIO[@]}" --verify_only --offset=64m --size=192m --output="$WORK/fio-v3.txt" >/dev/null 2>&1 \
    && ok "after node $D left, a full fio verify read passes" \
    || bad "verify after the removal: $(grep -i "err\|verify" "$WORK/fio-v2.txt" "$WORK/fio-v3.txt" | head -5)"
v3=$("$BIN" peer list --metadata "$META" | sed -n 's/^ring version //p')
healthy() { status; grep -q "health: OK" "$WORK/status.txt" && grep -q "ring: version $v3; balanced" "$WORK/status.txt"; }
seconds_until 60 healthy >/dev/null && ok "torus status: health OK and balanced on the four nodes left (ring version $v3)" \
    || bad "status after the removal: $(tail -8 "$WORK/status.txt")"

kill -INT "$SERVER"; wait "$SERVER" 2>/dev/null
echo "e2e-rebalance: $pass passed, $fail failed"
[ $fail -eq 0 ]
