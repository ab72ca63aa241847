#!/usr/bin/env bash
# Repair throughput on real processes: etcd + 4 `torus node` (replication 3) + `torus nbd serve`,
# 256 MiB written, one node SIGKILLed for good; the collector copies its blocks elsewhere.
# Prints MB/s of copying for each --repair-rate given (default: the default 64MiB and 0 = unthrottled).
# Usage: bash Benchmarks/repair-bench.sh [RATE...]
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
RATES=("$@"); [ ${#RATES[@]} -eq 0 ] && RATES=(64MiB 0)
e2e_begin repair-bench
for rate in "${RATES[@]}"; do
    mkdir -p "$WORK/etcd-$rate"; start_etcd "$WORK/etcd-$rate" >/dev/null || exit 1
    PIDS+=("$ETCD_PID"); META=$ETCD_URL
    "$BIN" init --metadata "$META" --replication 3 --insecure >/dev/null 2>&1
    NODES=()
    for i in 1 2 3 4; do
        "$BIN" node --metadata "$META" --data-dir "$WORK/$rate-node-$i" --size 1GiB --listen "127.0.0.1:$(free_port)" \
            >>"$WORK/$rate-node-$i.log" 2>&1 &
        NODES+=($!); PIDS+=($!); disown $!
    done
    sleep 2
    "$BIN" volume create v1 256MiB --metadata "$META" >/dev/null 2>&1
    PORT=$(free_port)
    "$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$PORT" --gc-interval 2s --gc-grace 1s --repair-grace 3s \
        --repair-rate "$rate" >>"$WORK/$rate-nbd.log" 2>&1 &
    SERVER=$!; PIDS+=($!); disown $!
    for _ in $(seq 1 60); do nbdinfo "nbd://127.0.0.1:$PORT/v1" >/dev/null 2>&1 && break; sleep 0.5; done
    fio --name=w --ioengine=nbd --uri="nbd://127.0.0.1:$PORT/v1" --rw=write --bs=1m --iodepth=8 --size=256m \
        --end_fsync=1 --output=/dev/null >/dev/null 2>&1
    sleep 3
    kill -9 "${NODES[1]}"
    line=""
    for _ in $(seq 1 240); do
        line=$(grep "pass took.*short of copies" "$WORK/$rate-nbd.log" | grep -v " 0 copied" | tail -1)
        [ -n "$line" ] && break; sleep 0.5
    done
    python3 - "$rate" "$line" <<'PY'
import re, sys
rate, line = sys.argv[1], sys.argv[2]
m = re.search(r"(\d+) copied \((\d+) bytes in (\d+) ms\)", line)
if not m:
    print(f"--repair-rate {rate}: no repair seen: {line!r}"); sys.exit(0)
n, b, ms = map(int, m.groups())
print(f"--repair-rate {rate:>6}: {n} blocks, {b / 2**20:.1f} MiB copied in {ms / 1000:.1f} s = {b / 1e6 / (ms / 1000):.1f} MB/s")
PY
    kill -9 "$SERVER" "${NODES[@]}" "$ETCD_PID" 2>/dev/null; sleep 1
done
