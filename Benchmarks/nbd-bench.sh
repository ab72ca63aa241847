#!/usr/bin/env bash
# Side-by-side NBD benchmark: torus up against nbdkit memory and nbdkit file, with fio's nbd
# engine, in one run on this machine. Prints IOPS, MB/s, p50/p99 latency and ratios.
#
# Usage: bash Benchmarks/nbd-bench.sh [RUNTIME_SECONDS]   (default 10 s per job)
#        UNIX_SOCKETS=1 bash Benchmarks/nbd-bench.sh ...  also runs nbdkit file and torus 3 nodes r2
#        over Unix sockets (nbd+unix://); their ratios are to nbdkit file over a Unix socket.
# Needs: fio, nbdkit (Debian packages; installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIME=${1:-10}
SIZE_MB=512

. scripts/lib.sh
install_missing fio nbdkit

swift build -c release --product torus >/dev/null
BIN=$PWD/.build/release/torus
WORK=$(mktemp -d /tmp/torus-bench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$WORK"; }
trap cleanup EXIT

wait_nbd() {
    for _ in $(seq 1 120); do fio --name=probe --ioengine=nbd --uri="$1" --rw=read --bs=4k --size=4k \
        --output-format=terse >/dev/null 2>&1 && return 0; sleep 0.5; done
    echo "server at $1 did not come up"; exit 1
}

# Targets: name, URI.
declare -a NAMES URIS
start_torus() {  # name port-or-socket nodes replication
    local listen="127.0.0.1:$2" uri="nbd://127.0.0.1:$2/bench"
    if [[ $2 == /* ]]; then listen=$2; uri="nbd+unix:///bench?socket=$2"; fi
    "$BIN" up --data-dir "$WORK/$1" --nodes "$3" --replication "$4" --nbd "$listen" \
        --disk-size 2GiB --volume bench:${SIZE_MB}MiB >"$WORK/$1.log" 2>&1 &
    PIDS+=($!); NAMES+=("$1"); URIS+=("$uri")
}
nbdkit --exit-with-parent -f -p 10901 -e bench memory ${SIZE_MB}M >/dev/null 2>&1 &
PIDS+=($!); NAMES+=("nbdkit-memory"); URIS+=("nbd://127.0.0.1:10901/bench")
truncate -s ${SIZE_MB}M "$WORK/file.img"
nbdkit --exit-with-parent -f -p 10902 -e bench file "$WORK/file.img" >/dev/null 2>&1 &
PIDS+=($!); NAMES+=("nbdkit-file"); URIS+=("nbd://127.0.0.1:10902/bench")
start_torus torus-1n-r1 10903 1 1
start_torus torus-3n-r2 10904 3 2
if [[ ${UNIX_SOCKETS:-0} == 1 ]]; then
    nbdkit --exit-with-parent -f -U "$WORK/nbdkit.sock" -e bench file "$WORK/file.img" >/dev/null 2>&1 &
    PIDS+=($!); NAMES+=("nbdkit-file-unix"); URIS+=("nbd+unix:///bench?socket=$WORK/nbdkit.sock")
    start_torus torus-3n-r2-unix "$WORK/torus.sock" 3 2
fi
for u in "${URIS[@]}"; do wait_nbd "$u"; done

JOBS=("randread 4k 32" "randwrite 4k 32" "randread 4k 1" "read 1m 8" "write 1m 8")
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
for i in "${!NAMES[@]}"; do
    # Fill the whole region first so reads hit stored data everywhere.
    fio --name=fill --ioengine=nbd --uri="${URIS[$i]}" --rw=write --bs=1m --iodepth=8 --size=${SIZE_MB}m \
        --output-format=terse >/dev/null
    for job in "${JOBS[@]}"; do
        set -- $job
        fio --name=bench --ioengine=nbd --uri="${URIS[$i]}" --rw="$1" --bs="$2" --iodepth="$3" \
            --size=${SIZE_MB}m --time_based --runtime="$RUNTIME" --ramp_time=1 --randrepeat=0 \
            --output-format=json --output="$WORK/out.json" >/dev/null
        # Settle (not timed): a 4 KiB write and a FLUSH make every target write back and sync
        # what this job left dirty, so the next job does not pay for it (torus writes back
        # after --writeback-delay, nbdkit file through the kernel's flusher).
        fio --name=settle --ioengine=nbd --uri="${URIS[$i]}" --rw=write --bs=4k --size=4k --fsync=1 \
            --output-format=terse >/dev/null
        python3 - "$WORK/out.json" "${NAMES[$i]}" "$job" >>"$RESULTS" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
side = j["read"] if j["read"]["io_bytes"] > 0 else j["write"]
pct = side.get("clat_ns", {}).get("percentile", {})
print("\t".join([sys.argv[2], sys.argv[3], f'{side["iops"]:.0f}', f'{side["bw_bytes"] / 1e6:.1f}',
                 f'{pct.get("50.000000", 0) / 1000:.0f}', f'{pct.get("99.000000", 0) / 1000:.0f}']))
PY
    done
    # Stop this target and write its dirty data out before the next one runs: otherwise its
    # write-back and syncs (torus after --writeback-delay, nbdkit file through the kernel's
    # flusher) land in the next target's jobs.
    kill "${PIDS[$i]}" 2>/dev/null || true
    wait "${PIDS[$i]}" 2>/dev/null || true
    sync
done

python3 - "$RESULTS" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
by = {(r[0], r[1]): r for r in rows}
print(f'{"target":<17} {"job (rw bs qd)":<18} {"IOPS":>9} {"MB/s":>9} {"p50 us":>8} {"p99 us":>8} {"vs file":>8} {"vs mem":>8}')
for r in rows:
    name, job, iops, mbs, p50, p99 = r
    def ratio(peer):
        if name.endswith("-unix"):
            peer = "nbdkit-file-unix" if peer == "nbdkit-file" else None
        p = by.get((peer, job))
        return f"{float(iops) / float(p[2]):.2f}x" if p and float(p[2]) > 0 else "-"
    print(f"{name:<17} {job:<18} {iops:>9} {mbs:>9} {p50:>8} {p99:>8} {ratio('nbdkit-file'):>8} {ratio('nbdkit-memory'):>8}")
PY
