#!/usr/bin/env bash
# Metadata latency against a real etcd, and NBD flush latency (the commit path) for
# `torus nbd serve` on etcd (3 `torus node`, replication 2) and for `torus up` with the
# embedded store, side by side in one run.
# Usage: bash Benchmarks/metadata-latency.sh   (N=300 operations each; needs etcd-server,
# python3-libnbd; installs them if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in etcd-server python3-libnbd; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
swift build -c release --product torus >/dev/null
BIN=$PWD/.build/release/torus
WORK=$(mktemp -d /tmp/torus-metabench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
EP=$(free_port); PP=$(free_port)
etcd --name mb --data-dir "$WORK/etcd" --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
    --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
    --initial-cluster "mb=http://127.0.0.1:$PP" >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
META="etcd://127.0.0.1:$EP"
for _ in $(seq 1 50); do "$BIN" peer list --metadata "$META" >/dev/null 2>&1 && break; sleep 0.2; done
"$BIN" init --metadata "$META" --replication 2 >/dev/null
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
