#!/usr/bin/env bash
# Metadata latency against a real etcd, and NBD flush latency (the commit path) for
# `torus nbd serve` on etcd (3 `torus node`, replication 2) and for `torus up` with the
# embedded store, side by side in one run.
# Usage: bash Benchmarks/metadata-latency.sh   (N=300 operations each; needs etcd-server,
# python3-libnbd; installs them if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing etcd-server python3-libnbd
swift build -c release --product torus >/dev/null
BIN=$PWD/.build/release/torus
WORK=$(mktemp -d /tmp/torus-metabench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$WORK"; }
trap cleanup EXIT
start_etcd "$WORK"
PIDS+=("$ETCD_PID")
META=$ETCD_URL
EP=${ETCD_URL#etcd://127.0.0.1:}
"$BIN" init --metadata "$META" --replication 2 --insecure >/dev/null
for i in 1 2 3; do
    "$BIN" node --metadata "$META" --data-dir "$WORK/n$i" --size 1GiB --zone "z$i" >"$WORK/n$i.log" 2>&1 &
    PIDS+=($!)
done
sleep 2
"$BIN" volume create bench 1GiB --metadata "$META" >/dev/null
P1=$(free_port); P2=$(free_port)
"$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$P1" >"$WORK/nbd.log" 2>&1 &
PIDS+=($!)
"$BIN" up --data-dir "$WORK/up" --nodes 3 --replication 2 --nbd "127.0.0.1:$P2" --volume bench:1GiB >"$WORK/up.log" 2>&1 &
PIDS+=($!)
for p in "$P1" "$P2"; do
    for _ in $(seq 1 100); do nbdinfo "nbd://127.0.0.1:$p/bench" >/dev/null 2>&1 && break; sleep 0.2; done
done
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) vCPUs; etcd $(etcd --version | head -1 | awk '{print $3}')"
/usr/bin/python3 Benchmarks/metadata-latency.py "127.0.0.1:$EP" \
    "nbd://127.0.0.1:$P1/bench" "nbd://127.0.0.1:$P2/bench"
echo "(first NBD URI: torus nbd serve on etcd, 3 torus node; second: torus up, embedded metadata store)"
