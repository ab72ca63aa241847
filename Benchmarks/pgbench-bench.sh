#!/usr/bin/env bash
# PostgreSQL on the deployed shape against nbdkit file, in alternating rounds: etcd + 3 `torus node`
# (replication 2) + `torus nbd serve --cache-size 128MiB`, and nbdkit file on a 1 GiB file, each
# attached the same way (libnbd's nbdfuse + a loop device with direct I/O + ext4), each with its own
# PostgreSQL 15 (initdb, pgbench -i -s 10). Each round runs pgbench with 1 client and with 8 clients
# for DURATION seconds on both targets (the order flips every round); a ratio is the median of the
# rounds' ratios.
#
# Usage: bash Benchmarks/pgbench-bench.sh [DURATION_SECONDS=15] [ROUNDS=3]   (as root: loop, mount)
#        TORUS_BIN=/path/to/torus ... measures that binary instead of building this checkout
#        (TORUS_BIN_NOTE="..." says in the results which build it is).
# Prints the table and writes it to Benchmarks/results/pgbench-DATE.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-15}
ROUNDS=${2:-3}
. scripts/lib.sh
install_missing nbdkit etcd-server libnbd-bin fuse3 postgresql postgresql-client
PG=/usr/lib/postgresql/15/bin

if [ -z "${TORUS_BIN:-}" ]; then swift build -c release --product torus >/dev/null; TORUS_BIN=$PWD/.build/release/torus
else TORUS_BIN_NOTE=${TORUS_BIN_NOTE:-torus binary $TORUS_BIN}; fi
BIN=$TORUS_BIN
WORK=$(mktemp -d /tmp/torus-pgbench.XXXXXX)
chmod 755 "$WORK"
PIDS=()
declare -A URI MNT LOOP PGPORT
detach() {  # target: stops its PostgreSQL and takes the filesystem, loop device and FUSE file down
    local t=$1
    [ -n "${PGPORT[$t]:-}" ] && su postgres -c "$PG/pg_ctl -D ${MNT[$t]}/pg -m fast stop" >/dev/null 2>&1 || true
    mountpoint -q "${MNT[$t]}" 2>/dev/null && umount "${MNT[$t]}"
    [ -n "${LOOP[$t]:-}" ] && losetup -d "${LOOP[$t]}" 2>/dev/null || true
    fusermount3 -u "$WORK/fuse-$t" 2>/dev/null || true
}
cleanup() {
    for t in "${!URI[@]}"; do detach "$t"; done
    stop_in_reverse "${PIDS[@]}"
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

bench_cluster "$BIN" "$WORK"
URI[torus-3n-r2]="nbd://127.0.0.1:$BENCH_NBD_PORT/bench"
truncate -s 1G "$WORK/file.img"
NBDKIT_PORT=$(free_port)
nbdkit --exit-with-parent -f -p "$NBDKIT_PORT" -e bench file "$WORK/file.img" >/dev/null 2>&1 &
PIDS+=($!)
URI[nbdkit-file]="nbd://127.0.0.1:$NBDKIT_PORT/bench"

attach() {  # target port: nbdfuse + loop + ext4 + initdb + pgbench -i, PostgreSQL listening on port
    local t=$1 port=$2
    for _ in $(seq 1 150); do nbdinfo "${URI[$t]}" >/dev/null 2>&1 && break; sleep 0.2; done
    mkdir -p "$WORK/fuse-$t" "$WORK/mnt-$t"
    nbdfuse "$WORK/fuse-$t/disk" "${URI[$t]}" >"$WORK/nbdfuse-$t.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do [ -e "$WORK/fuse-$t/disk" ] && break; sleep 0.1; done
    LOOP[$t]=$(losetup -f --show --direct-io=on "$WORK/fuse-$t/disk")
    mkfs.ext4 -q "${LOOP[$t]}"
    MNT[$t]=$WORK/mnt-$t
    mount "${LOOP[$t]}" "${MNT[$t]}"
    chown postgres: "${MNT[$t]}"
    su postgres -c "$PG/initdb -D ${MNT[$t]}/pg" >"$WORK/initdb-$t.log" 2>&1
    PGPORT[$t]=$port
    su postgres -c "$PG/pg_ctl -D ${MNT[$t]}/pg -l ${MNT[$t]}/pg.log -o '-p $port -k /tmp' -w start" >/dev/null
    su postgres -c "pgbench -h /tmp -p $port -i -s 10 -q postgres" >"$WORK/pgbench-init-$t.log" 2>&1
}
attach nbdkit-file "$(free_port)"
attach torus-3n-r2 "$(free_port)"

RAW="$WORK/raw.tsv"
: >"$RAW"
for round in $(seq 1 "$ROUNDS"); do
    order=(nbdkit-file torus-3n-r2)
    [ $((round % 2)) = 0 ] && order=(torus-3n-r2 nbdkit-file)
    for clients in 1 8; do
        for t in "${order[@]}"; do
            tps=$(su postgres -c "pgbench -h /tmp -p ${PGPORT[$t]} -c $clients -j $((clients < 2 ? 1 : 2)) -T $DURATION postgres" 2>&1 |
                sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
            printf '%s\t%s\t%s\t%s\n' "$t" "$round" "$clients" "${tps:-0}" >>"$RAW"
        done
    done
    echo "round $round of $ROUNDS done" >&2
done

mkdir -p Benchmarks/results
OUT=Benchmarks/results/pgbench-$(date -u +%Y-%m-%d-%H%M).txt
{
    echo "# bash Benchmarks/pgbench-bench.sh $DURATION $ROUNDS, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPUs, ${TORUS_BIN_NOTE:-torus at $(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes')}"
    echo "# pgbench scale 10 on ext4 through nbdfuse + loop (direct I/O): etcd + 3 torus node R=2 + torus nbd serve vs nbdkit file"
    python3 - "$RAW" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
val = {(r[0], r[1], r[2]): float(r[3]) for r in rows}
rounds = sorted({r[1] for r in rows}, key=int)
print(f'{"clients":<8} {"torus TPS":>10} {"nbdkit TPS":>11} {"ratio":>7}  per round')
for c in ("1", "8"):
    t = [val[("torus-3n-r2", r, c)] for r in rounds]
    n = [val[("nbdkit-file", r, c)] for r in rounds]
    ratios = [a / b if b else 0 for a, b in zip(t, n)]
    print(f"{c:<8} {statistics.median(t):>10.0f} {statistics.median(n):>11.0f} {statistics.median(ratios):>6.2f}x  "
          + " ".join(f"{x:.2f}" for x in ratios))
PY
} | tee "$OUT"
echo "written to $OUT"
