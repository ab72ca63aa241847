#!/usr/bin/env bash
# Self-healing on real processes: etcd + 4 `torus node` processes, replication 3, and
# `torus nbd serve` running the collector with a short repair grace. 256 MiB are written
# with fio verify; one node is SIGKILLed for good; `torus status` must show the repair and
# then full redundancy; a second node is SIGKILLed; a full verify read must pass.
# Usage: bash scripts/e2e-repair.sh   (needs etcd-server, libnbd-bin, fio; run by scripts/test.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin e2e-repair
etcd_cluster 4 3

"$BIN" volume create v1 256MiB --metadata "$META" >/dev/null 2>&1 || bad "volume create"
PORT=$(free_port); MPORT=$(free_port)
"$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$PORT" "${PEER_TLS[@]}" --gc-interval 2s --gc-grace 1s --repair-grace 5s \
    --repair-rate 0 --metrics "127.0.0.1:$MPORT" >>"$WORK/nbd.log" 2>&1 &
SERVER=$!; PIDS+=($!)
URI="nbd://127.0.0.1:$PORT/v1"
seconds_until 30 nbdinfo "$URI" >/dev/null && ok "torus nbd serve exports v1 (collector on: pass every 2 s, repair grace 5 s)" \
    || bad "nbd serve: $(tail -5 "$WORK/nbd.log")"

FIO=(fio --name=w --ioengine=nbd --uri="$URI" --rw=write --bs=256k --iodepth=8 --size=256m --verify=crc32c)
"${FIO[@]}" --do_verify=1 --end_fsync=1 --output="$WORK/fio-w.txt" >/dev/null 2>&1 \
    && ok "fio writes 256 MiB with crc32c verify" || bad "fio write: $(grep -i err "$WORK/fio-w.txt" | head -3)"
redundant() { "$BIN" status --metadata "$META" 2>/dev/null | grep -q "redundancy: full"; }
t=$(seconds_until 30 redundant) && ok "torus status reports full redundancy ${t}s after the writes" \
    || bad "no full redundancy before the loss: $("$BIN" status --metadata "$META" 2>&1 | grep -i "redund\|repair\|health")"

# Node 2 dies for good. After the grace, the collector copies its blocks to node 4 or others.
kill -9 "${NODE_PIDS[2]}"
killed=$(date +%s)
: >"$WORK/status-trace.txt"
saw_repair=0
repaired() {
    "$BIN" status --metadata "$META" >"$WORK/status.txt" 2>&1
    cat "$WORK/status.txt" >>"$WORK/status-trace.txt"
    grep -q "^repair: " "$WORK/status.txt" && saw_repair=1
    grep -q "redundancy: full" "$WORK/status.txt" && grep -q "DOWN" "$WORK/status.txt" \
        && ! grep -q "blocks (0 B) copied" "$WORK/status.txt"
}
deadline=$((killed + 120)); done_repair=0
while [ "$(date +%s)" -lt $deadline ]; do
    if repaired; then done_repair=1; break; fi
    sleep 0.5
done
took=$(( $(date +%s) - killed ))
if [ $done_repair = 1 ]; then
    ok "after node 2's SIGKILL, torus status shows full redundancy again ${took}s later ($(grep -o '[0-9]* blocks ([^)]*) copied' "$WORK/status.txt"))"
else
    bad "no full redundancy within 120 s of the loss: $(tail -12 "$WORK/status.txt")"
fi
[ $saw_repair = 1 ] || grep -q "gc: repair: " "$WORK/nbd.log" \
    && ok "the repair's progress was shown (blocks copied, rate, ETA)" \
    || bad "no repair progress seen in torus status or the server log"
grep "gc: pass took" "$WORK/nbd.log" | grep "short of copies" | tail -1 | sed 's/^/        /'
metric() { curl -s "http://127.0.0.1:$MPORT/metrics" | awk -v n="$1" '$1 == n { print int($2) }'; }
copies=$(metric torus_repair_copies_total); rbytes=$(metric torus_repair_bytes_total); short=$(metric torus_blocks_under_replicated)
[ "${copies:-0}" -gt 0 ] && [ "${rbytes:-0}" -gt 0 ] && [ "${short:-1}" = 0 ] \
    && ok "metrics: torus_repair_copies_total $copies, torus_repair_bytes_total $rbytes, torus_blocks_under_replicated 0" \
    || bad "metrics after the repair: copies=${copies:-none} bytes=${rbytes:-none} under-replicated=${short:-none}"
writes=$(metric 'torus_nbd_request_duration_seconds_count{op="write"}')
buckets=$(curl -s "http://127.0.0.1:$MPORT/metrics" | grep -c '^torus_nbd_request_duration_seconds_bucket{op="write",le=')
[ "${writes:-0}" -gt 0 ] && [ "$buckets" -ge 16 ] \
    && ok "metrics: NBD write latency histogram ($writes writes in $buckets buckets)" \
    || bad "metrics: no NBD write latency histogram (count ${writes:-none}, $buckets buckets)"

# A second node dies: with replication 3, every block still has a copy; a full verify read passes.
kill -9 "${NODE_PIDS[3]}"
"${FIO[@]}" --verify_only --output="$WORK/fio-v.txt" >/dev/null 2>&1 \
    && ok "after a second SIGKILL (nodes 2 and 3 gone), a full fio verify read of 256 MiB passes" \
    || bad "verify after the second loss: $(grep -i "err\|verify" "$WORK/fio-v.txt" | head -5)"

kill -INT "$SERVER"; wait "$SERVER" 2>/dev/null
echo "e2e-repair: $pass passed, $fail failed"
[ $fail -eq 0 ]
