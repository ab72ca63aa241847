#!/usr/bin/env bash
# Two torus binaries side by side on `torus up` (3 nodes, replication 2), in alternating rounds
# (the order flips every round): the jobs of nbd-bench.sh, each after a fresh start and a fill.
# Settles "no slower than before" where nbd-bench.sh's runs differ by more than the change.
#
# Usage: bash Benchmarks/up-ab.sh OLD_TORUS NEW_TORUS [RUNTIME_SECONDS] [ROUNDS]   (5 s, 3 rounds)
#        JOBS_ONLY=REGEX ... runs only the jobs whose line matches.
# Prints each job's IOPS per round and the median ratio new/old.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 5,6p "$0"; exit 2; }
OLD=$1 NEW=$2 RUNTIME=${3:-5} ROUNDS=${4:-3}
. scripts/lib.sh
install_missing fio libnbd-bin
WORK=$(mktemp -d /tmp/torus-up-ab.XXXXXX)
PID=
cleanup() { [ -n "$PID" ] && stop_in_reverse "$PID"; rm -rf "$WORK"; }
trap cleanup EXIT
URI=nbd://127.0.0.1:10960/bench
JOBS=("randread 4k 32" "randwrite 4k 32" "randread 4k 1" "read 1m 8" "write 1m 8")
if [ -n "${JOBS_ONLY:-}" ]; then  # a regex: run only the jobs whose line (e.g. "randread 4k 32") matches
    mapfile -t JOBS < <(printf '%s\n' "${JOBS[@]}" | grep -E -- "$JOBS_ONLY")
fi
: >"$WORK/rows.tsv"
for round in $(seq 1 "$ROUNDS"); do
    order="old new"; [ $((round % 2)) = 0 ] && order="new old"
    for v in $order; do
        bin=$OLD; [ "$v" = new ] && bin=$NEW
        rm -rf "$WORK/data"
        "$bin" up --data-dir "$WORK/data" --nodes 3 --replication 2 --nbd 127.0.0.1:10960 \
            --disk-size 2GiB --volume bench:512MiB >"$WORK/$v.log" 2>&1 &
        PID=$!
        for _ in $(seq 1 100); do nbdinfo "$URI" >/dev/null 2>&1 && break; sleep 0.2; done
        fio --name=fill --ioengine=nbd --uri="$URI" --rw=write --bs=1m --iodepth=8 --size=512m \
            --output-format=terse >/dev/null 2>&1
        for job in "${JOBS[@]}"; do
            set -- $job
            iops=$(fio --name=b --ioengine=nbd --uri="$URI" --rw="$1" --bs="$2" --iodepth="$3" --size=512m \
                --time_based --runtime="$RUNTIME" --ramp_time=1 --randrepeat=0 --output-format=json 2>/dev/null |
                python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; s=j["read"] if j["read"]["io_bytes"] else j["write"]; print(round(s["iops"]))')
            # As in nbd-bench.sh: a 4 KiB write and a FLUSH settle what the job left dirty.
            fio --name=settle --ioengine=nbd --uri="$URI" --rw=write --bs=4k --size=4k --fsync=1 \
                --output-format=terse >/dev/null 2>&1
            printf '%s\t%s\t%s\t%s\n' "$round" "$v" "$job" "$iops" >>"$WORK/rows.tsv"
        done
        stop_in_reverse "$PID"; PID=
        sync
    done
    echo "round $round of $ROUNDS done" >&2
done
python3 - "$WORK/rows.tsv" <<'PY'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
jobs = list(dict.fromkeys(r[2] for r in rows))
print(f'{"job":<18} {"old IOPS per round":<26} {"new IOPS per round":<26} {"new/old":>8}')
for job in jobs:
    old = {r[0]: int(r[3]) for r in rows if r[2] == job and r[1] == "old"}
    new = {r[0]: int(r[3]) for r in rows if r[2] == job and r[1] == "new"}
    ratio = statistics.median(new[k] / old[k] for k in old if old[k] > 0)
    print(f'{job:<18} {" ".join(str(old[k]) for k in sorted(old)):<26} {" ".join(str(new[k]) for k in sorted(new)):<26} {ratio:>7.2f}x')
PY
