#!/usr/bin/env bash
# A/B of torus builds on one fio job, against nbdkit file, in alternating rounds (this machine
# is shared and noisy: compare builds within one run, never across runs).
#
# Usage: bash Benchmarks/nbd-ab.sh TORUS_BINARY [TORUS_BINARY...]
# Environment: RW=read BS=1m QD=8 (the fio job), NODES=3 REPL=2 (torus up shape),
#              ROUNDS=3 RUNTIME=5 (seconds per job), SETTLE=8 (seconds after the fill).
# Example: cp .build/release/torus /tmp/torus-old; (change, build); \
#          bash Benchmarks/nbd-ab.sh /tmp/torus-old .build/release/torus
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { sed -n 2,9p "$0"; exit 2; }
. scripts/lib.sh
install_missing fio nbdkit
RUNTIME=${RUNTIME:-5}; ROUNDS=${ROUNDS:-3}; SIZE_MB=512
WORK=$(mktemp -d /tmp/torus-ab.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$WORK"; }
trap cleanup EXIT
truncate -s ${SIZE_MB}M "$WORK/file.img"
nbdkit --exit-with-parent -f -p 10950 -e bench file "$WORK/file.img" >/dev/null 2>&1 &
PIDS+=($!); URIS=("nbd://127.0.0.1:10950/bench"); NAMES=(nbdkit-file)
port=10951
for b in "$@"; do
    "$b" up --data-dir "$WORK/t$port" --nodes "${NODES:-3}" --replication "${REPL:-2}" --nbd 127.0.0.1:$port \
        --disk-size 2GiB --volume bench:${SIZE_MB}MiB >"$WORK/t$port.log" 2>&1 &
    PIDS+=($!); URIS+=("nbd://127.0.0.1:$port/bench"); NAMES+=("$b"); port=$((port + 1))
done
for u in "${URIS[@]}"; do
    up=0
    for _ in $(seq 1 120); do
        fio --name=probe --ioengine=nbd --uri="$u" --rw=read --bs=4k --size=4k --output-format=terse >/dev/null 2>&1 && { up=1; break; }
        sleep 0.5
    done
    [[ $up == 1 ]] || { echo "server at $u did not come up"; exit 1; }
    fio --name=fill --ioengine=nbd --uri="$u" --rw=write --bs=1m --iodepth=8 --size=${SIZE_MB}m --output-format=terse >/dev/null
done
sleep "${SETTLE:-8}"
echo "job: rw=${RW:-read} bs=${BS:-1m} qd=${QD:-8}, torus ${NODES:-3} nodes r${REPL:-2}, $ROUNDS rounds of ${RUNTIME}s"
for r in $(seq 1 "$ROUNDS"); do
    for i in "${!URIS[@]}"; do
        fio --name=ab --ioengine=nbd --uri="${URIS[$i]}" --rw="${RW:-read}" --bs="${BS:-1m}" --iodepth="${QD:-8}" \
            --size=${SIZE_MB}m --time_based --runtime="$RUNTIME" --ramp_time=1 --randrepeat=0 \
            --output-format=json --output="$WORK/out.json" >/dev/null
        python3 - "$WORK/out.json" "round $r" "${NAMES[$i]}" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
s = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
print(f'{sys.argv[2]:<8} {sys.argv[3]:<40} {s["iops"]:>9.0f} IOPS {s["bw_bytes"] / 2**20:>9.1f} MiB/s')
PY
    done
done
