#!/usr/bin/env bash
# Simulator speed, side by side: runs the soak scenario (or SCENARIO) on seeds 1-3 with each
# given torus-sim build, alternating the builds round by round, and prints for each build and
# seed the median and best speed (simulated seconds per wall-clock second) and the median CPU
# time. On a shared machine one run swings by a third; alternating rounds and medians make two
# builds comparable, and the trace hashes must agree (same behaviour, only faster or slower).
#
# Usage: bash Benchmarks/sim-speed.sh [ROUNDS] BUILD...
#   BUILD: a torus-sim executable, or NAME=COMMAND (e.g. "mi=env LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2 .build/release/torus-sim")
#   env SCENARIO (default Scenarios/soak.yaml), SEEDS (default "1 2 3")
# Example: bash Benchmarks/sim-speed.sh 5 /tmp/torus-sim-before .build/release/torus-sim
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=5
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then ROUNDS=$1; shift; fi
[ $# -ge 1 ] || { echo "usage: $0 [ROUNDS] BUILD..." >&2; exit 64; }
SCENARIO=${SCENARIO:-Scenarios/soak.yaml}
SEEDS=${SEEDS:-1 2 3}
OUT=$(mktemp -d /tmp/sim-speed.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

names=() cmds=()
for b in "$@"; do
    if [[ "$b" == *=* ]]; then names+=("${b%%=*}"); cmds+=("${b#*=}"); else names+=("$b"); cmds+=("$b"); fi
done

for r in $(seq 1 "$ROUNDS"); do
    for i in "${!cmds[@]}"; do
        for s in $SEEDS; do
            # One line per run: SEED SPEED CPU-SECONDS TRACE
            line=$( { /usr/bin/time -f "cpu %U %S" ${cmds[$i]} run "$SCENARIO" --seed "$s" | tail -1; } 2>&1 )
            speed=$(grep -o 'speed=[0-9.]*' <<<"$line" | cut -d= -f2)
            trace=$(grep -o 'trace=[0-9a-f]*' <<<"$line" | cut -d= -f2)
            cpu=$(awk '/^cpu /{ printf "%.3f", $2 + $3 }' <<<"$line")
            echo "$s $speed $cpu $trace" >>"$OUT/$i"
        done
    done
    echo "round $r/$ROUNDS done" >&2
done

echo "scenario $SCENARIO, $ROUNDS rounds, builds alternating; speed = simulated s per wall s"
python3 - "$OUT" "${names[@]}" <<'PY'
import statistics, sys
out, names = sys.argv[1], sys.argv[2:]
print(f"{'build':<44} {'seed':>4} {'median':>8} {'best':>7} {'median cpu':>11}  trace")
for i, name in enumerate(names):
    runs = [l.split() for l in open(f"{out}/{i}")]
    for seed in dict.fromkeys(r[0] for r in runs):
        mine = [r for r in runs if r[0] == seed]
        speeds = [float(r[1]) for r in mine]
        cpu = statistics.median(float(r[2]) for r in mine)
        traces = ",".join(sorted({r[3] for r in mine}))
        print(f"{name[-44:]:<44} {seed:>4} {statistics.median(speeds):>7.0f}x {max(speeds):>6.0f}x {cpu:>10.3f}s  {traces}")
PY
