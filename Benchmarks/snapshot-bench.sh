#!/usr/bin/env bash
# Snapshot and clone cost against volume size: on one `torus up`, a 1 GiB and a 64 GiB volume,
# each with one 64 KiB block written in every map page (so the 64 GiB map has all of its
# pages), then ROUNDS rounds alternating between the two: `torus snapshot create` and
# `torus volume clone` timed end to end (process start included), a second apart, medians printed and
# written to Benchmarks/results/snapshots-DATE.txt.
# Usage: bash Benchmarks/snapshot-bench.sh [ROUNDS]   (needs libnbd's python3 module)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${1:-5}
swift build -c release --product torus >/dev/null || exit 1
BIN=$PWD/.build/release/torus
WORK=$(mktemp -d /tmp/torus-snapbench.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$(free_port)
"$BIN" up --data-dir "$WORK/up" --nbd "127.0.0.1:$PORT" --nodes 3 --disk-size 2GiB --volume small:1GiB --volume large:64GiB >"$WORK/up.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 150); do nbdinfo "nbd://127.0.0.1:$PORT/large" >/dev/null 2>&1 && break; sleep 0.2; done
nbdinfo "nbd://127.0.0.1:$PORT/large" >/dev/null 2>&1 || { echo "torus up did not start: $(tail -3 "$WORK/up.log")"; exit 1; }
# One block per map page (2729 entries of 64 KiB blocks per page): 7 pages for 1 GiB, 385 for 64 GiB.
/usr/bin/python3 - "$PORT" <<'PY'
import sys, nbd
for name, size in (("small", 1 << 30), ("large", 64 << 30)):
    h = nbd.NBD(); h.connect_uri(f"nbd://127.0.0.1:{sys.argv[1]}/{name}")
    step = 2729 * 65536
    for off in range(0, size, step): h.pwrite(b"\x5a" * 65536, off)
    h.flush()
PY
ms() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); }
declare -A T
for r in $(seq 1 "$ROUNDS"); do
    for v in small large; do
        # A second apart: the server then opens the new export (its map arrays take O(blocks)
        # to allocate, about 0.1 s at 64 GiB), which is serving, not taking, the snapshot.
        T[$v-snap]+="$(ms "$BIN" snapshot create "$v" "r$r" --data-dir "$WORK/up") "
        sleep 1
        T[$v-clone]+="$(ms "$BIN" volume clone "$v@r$r" "$v-c$r" --data-dir "$WORK/up") "
        sleep 1
    done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
OUT=Benchmarks/results/snapshots-$(date -u +%Y-%m-%d-%H%M).txt
{
    echo "# torus snapshot create / volume clone, end to end (ms, process start included), $ROUNDS rounds alternating"
    echo "# $(date -u) $(uname -r), torus up with 3 nodes, volumes of 1 GiB and 64 GiB with a block in every map page"
    for op in snap clone; do
        s=$(echo "${T[small-$op]}" | median); l=$(echo "${T[large-$op]}" | median)
        echo "$op: 1 GiB median ${s} ms (${T[small-$op]% }), 64 GiB median ${l} ms (${T[large-$op]% })"
    done
    # The server's own time for each (logged): the request to the snapshot or clone in the store.
    for v in small large; do
        taken=$(grep "volume=$v\$" "$WORK/up.log" | grep -o "taken in [0-9]* ms" | awk '{ print $3 }' | tr '\n' ' ')
        cloned=$(grep -o "cloned from $v@r[0-9]* in [0-9]* ms" "$WORK/up.log" | awk '{ print $(NF-1) }' | tr '\n' ' ')
        echo "server side, $v: snapshot $(echo "$taken" | median) ms ($taken), clone $(echo "$cloned" | median) ms ($cloned)"
    done
} | tee "$OUT"
