#!/usr/bin/env bash
# Writes whose working set is bigger than the write cache: `torus up` (1 node, replication 1,
# default 1 GiB cache) with deferred syncing (the default) and with --durable-writes, one after
# the other, fio's nbd engine over a 4 GiB volume: 1 MiB sequential writes at QD8 and 4 KiB
# random writes at QD32. Prints IOPS, MB/s and p50/p99/p99.9 completion latency.
#
# Usage: [MODES="deferred durable"] bash Benchmarks/overflow-bench.sh [RUNTIME_SECONDS]   (default 12 s per job)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIME=${1:-12}
. scripts/lib.sh
install_missing fio libnbd-bin
swift build -c release --product torus >/dev/null
BIN=$PWD/.build/release/torus
PORT=10952
URI=nbd://127.0.0.1:$PORT/big
for name in ${MODES:-deferred durable}; do
    mode=""; [ "$name" = durable ] && mode=--durable-writes
    W=$(mktemp -d /tmp/torus-overflow.XXXXXX)
    "$BIN" up --data-dir "$W/d" --nodes 1 --replication 1 --nbd 127.0.0.1:$PORT --disk-size 8GiB \
        --volume big:4GiB $mode >"$W/log" 2>&1 &
    P=$!
    for _ in $(seq 60); do nbdinfo "$URI" >/dev/null 2>&1 && break; sleep 0.5; done
    for job in "write 1m 8" "randwrite 4k 32"; do
        set -- $job
        fio --name=b --ioengine=nbd --uri="$URI" --rw="$1" --bs="$2" --iodepth="$3" --size=4g --time_based \
            --runtime="$RUNTIME" --ramp_time=2 --output-format=json --output="$W/o.json" >/dev/null
        python3 - "$W/o.json" "$name" "$job" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
s = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
p = s["clat_ns"]["percentile"]
print(f'{sys.argv[2]:<17} {sys.argv[3]:<16} {s["iops"]:>7.0f} {s["bw_bytes"] / 1e6:>6.0f} '
      f'{p["50.000000"] // 1000:>8} {p["99.000000"] // 1000:>8} {p["99.900000"] // 1000:>10}')
PY
    done
    kill $P; wait $P || true
    rm -rf "$W"
done
