#!/usr/bin/env bash
# The deployed shape against nbdkit file, side by side in alternating rounds: etcd + 3 `torus node`
# (replication 2) + `torus nbd serve --cache-size 128MiB`, TCP on loopback, a 1 GiB volume filled
# first; nbdkit file on a 1 GiB file. fio's nbd engine runs each job on both targets, round after
# round (the order flips every round); a ratio is the median of the rounds' ratios.
#
# Jobs (the FLUSHes are what filesystems and databases send):
#   randwrite 4k qd32 fsync32  4 KiB random writes, a FLUSH every 32 writes
#   randread 4k qd32 / qd1     4 KiB random reads
#   write 1m qd8 end-flush     1 MiB sequential writes of the whole volume, one FLUSH at the end
#                              (IOPS over the wall time of the job, the FLUSH included)
#   read 1m qd8                1 MiB sequential reads
#   write+flush 4k qd1         a 4 KiB write then a FLUSH, one at a time: pairs/s and FLUSH p50/p99
#
# Usage: bash Benchmarks/cluster-bench.sh [RUNTIME_SECONDS=10] [ROUNDS=3]
#        JOBS_ONLY=REGEX ... runs only the jobs whose line (e.g. "randwrite 4k 1 --fsync=1") matches.
#        CLUSTER_BENCH_PEER=torus-mtls ... measures the same shape with mutual TLS between peers
#        (`torus init --tls`) in place of nbdkit: the ratio is then the cost of peer TLS.
#        TORUS_BIN=/path/to/torus ... measures that binary instead of building this checkout
#        (TORUS_BIN_NOTE="..." says in the results which build it is).
# Prints the table and writes it to Benchmarks/results/cluster-DATE.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIME=${1:-10}
ROUNDS=${2:-3}
. scripts/lib.sh
install_missing fio nbdkit etcd-server libnbd-bin

if [ -z "${TORUS_BIN:-}" ]; then swift build -c release --product torus >/dev/null; TORUS_BIN=$PWD/.build/release/torus
else TORUS_BIN_NOTE=${TORUS_BIN_NOTE:-torus binary $TORUS_BIN}; fi
BIN=$TORUS_BIN
WORK=$(mktemp -d /tmp/torus-cluster-bench.XXXXXX)
PIDS=()
cleanup() { stop_in_reverse "${PIDS[@]}"; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

bench_cluster "$BIN" "$WORK"
TORUS_PORT=$BENCH_NBD_PORT
PEER=${CLUSTER_BENCH_PEER:-nbdkit-file}
if [ "$PEER" = torus-mtls ]; then  # a second cluster, peers over mutual TLS
    mkdir -p "$WORK/mtls"
    unset ETCD_CLIENT_PORT ETCD_PEER_PORT  # a second etcd on ports of its own (start_etcd reuses set ones)
    BENCH_PEER_TLS=1 bench_cluster "$BIN" "$WORK/mtls"
    PEER_PORT=$BENCH_NBD_PORT
else
    PEER=nbdkit-file
    truncate -s 1G "$WORK/file.img"
    PEER_PORT=$(free_port)
    nbdkit --exit-with-parent -f -p "$PEER_PORT" -e bench file "$WORK/file.img" >/dev/null 2>&1 &
    PIDS+=($!)
fi
declare -A URI=([$PEER]="nbd://127.0.0.1:$PEER_PORT/bench" [torus-3n-r2]="nbd://127.0.0.1:$TORUS_PORT/bench")
for t in "${!URI[@]}"; do
    for _ in $(seq 1 150); do nbdinfo "${URI[$t]}" >/dev/null 2>&1 && break; sleep 0.2; done
    nbdinfo "${URI[$t]}" >/dev/null || { echo "$t did not come up"; tail -5 "$WORK/nbd.log"; exit 1; }
    fio --name=fill --ioengine=nbd --uri="${URI[$t]}" --rw=write --bs=1m --iodepth=8 --size=1g --end_fsync=1 \
        --output-format=terse >/dev/null
done

JOBS=("randwrite 4k 32 --fsync=32" "randread 4k 32" "randread 4k 1" "write 1m 8 --end_fsync=1" "read 1m 8" "randwrite 4k 1 --fsync=1")
if [ -n "${JOBS_ONLY:-}" ]; then  # a regex: run only the jobs whose line matches
    mapfile -t JOBS < <(printf '%s\n' "${JOBS[@]}" | grep -E -- "$JOBS_ONLY")
fi
RAW="$WORK/raw.tsv"
: >"$RAW"
run_job() {  # target round job...
    local target=$1 round=$2 rw=$3 bs=$4 qd=$5 extra=${6:-} timing=(--time_based --runtime="$RUNTIME" --ramp_time=1) start end
    [ "$extra" = --end_fsync=1 ] && timing=()  # the whole volume once, the FLUSH inside the timed span
    start=$(date +%s%N)
    fio --name=bench --ioengine=nbd --uri="${URI[$target]}" --rw="$rw" --bs="$bs" --iodepth="$qd" --size=1g \
        ${extra:+"$extra"} "${timing[@]}" --randrepeat=0 --output-format=json --output="$WORK/out.json" >/dev/null
    end=$(date +%s%N)
    python3 - "$WORK/out.json" "$target" "$round" "$rw $bs qd$qd ${extra#--}" $(( (end - start) / 1000 )) >>"$RAW" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
side = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
iops = side["iops"]
if "end_fsync" in sys.argv[4]:  # whole job, FLUSH included, over its wall time
    iops = side["total_ios"] / (int(sys.argv[5]) / 1e6)
pct = j.get("sync", {}).get("lat_ns", {}).get("percentile", {}) if sys.argv[4].split()[-1] == "fsync=1" else {}
print("\t".join([sys.argv[2], sys.argv[3], sys.argv[4].strip(), f"{iops:.0f}", f"{side['bw_bytes'] / 1e6:.1f}",
                 f'{pct.get("50.000000", 0) / 1e6:.2f}', f'{pct.get("99.000000", 0) / 1e6:.2f}']))
PY
}
for round in $(seq 1 "$ROUNDS"); do
    order=("$PEER" torus-3n-r2)
    [ $((round % 2)) = 0 ] && order=(torus-3n-r2 "$PEER")
    for job in "${JOBS[@]}"; do
        for t in "${order[@]}"; do run_job "$t" "$round" $job; done
    done
    echo "round $round of $ROUNDS done" >&2
done

mkdir -p Benchmarks/results
OUT=Benchmarks/results/cluster$([ "$PEER" = torus-mtls ] && echo -mtls)-$(date -u +%Y-%m-%d-%H%M).txt
{
    echo "# bash Benchmarks/cluster-bench.sh $RUNTIME $ROUNDS, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPUs, ${TORUS_BIN_NOTE:-torus at $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')}"
    if [ "$PEER" = torus-mtls ]; then
        echo "# etcd + 3 torus node (replication 2) + torus nbd serve --cache-size 128MiB over TCP, 1 GiB volume: torus init --insecure vs --tls (ratio: TLS / plaintext)"
    else
        echo "# etcd + 3 torus node (replication 2) + torus nbd serve --cache-size 128MiB over TCP, 1 GiB volume, vs nbdkit file (1 GiB)"
    fi
    python3 - "$RAW" "$PEER" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
peer = sys.argv[2]
# A ratio is always A / B: torus / nbdkit, or (with torus-mtls) TLS / plaintext.
a, b = ("torus-3n-r2", peer) if peer == "nbdkit-file" else (peer, "torus-3n-r2")
name = {"torus-3n-r2": "torus" if peer == "nbdkit-file" else "plain", "nbdkit-file": "nbdkit", "torus-mtls": "mTLS"}
jobs = list(dict.fromkeys(r[2] for r in rows))
val = {(r[0], r[1], r[2]): r for r in rows}
rounds = sorted({r[1] for r in rows}, key=int)
print(f'{"job":<30} {name[a] + " IOPS":>11} {name[b] + " IOPS":>12} {"ratio":>7}  {"per round":<22} {"flush p50/p99 ms (" + name[a] + " | " + name[b] + ")"}')
for job in jobs:
    t = [float(val[(a, r, job)][3]) for r in rounds]
    n = [float(val[(b, r, job)][3]) for r in rounds]
    ratios = [a / b if b else 0 for a, b in zip(t, n)]
    flush = ""
    if job.split()[-1] == "fsync=1":
        def lat(target):
            p50 = statistics.median(float(val[(target, r, job)][5]) for r in rounds)
            p99 = statistics.median(float(val[(target, r, job)][6]) for r in rounds)
            return f"{p50:.2f}/{p99:.2f}"
        flush = f"{lat(a)} | {lat(b)}"
    print(f"{job:<30} {statistics.median(t):>11.0f} {statistics.median(n):>12.0f} {statistics.median(ratios):>6.2f}x  "
          f"{' '.join(f'{x:.2f}' for x in ratios):<22} {flush}")
PY
} | tee "$OUT"
echo "written to $OUT"
