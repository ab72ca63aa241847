#!/usr/bin/env bash
# Block I/O through the gRPC API against NBD on the same server: sequential 1 MiB writes (with a
# flush at the end) and reads, 8 in flight, on `torus up --grpc --nbd`. NBD: fio's nbd engine;
# gRPC: Benchmarks/grpc-bench (Go, the Stream RPC). Alternating rounds, median MiB/s, ratio.
# Usage: [CACHE=128MiB] bash Benchmarks/grpc-bench.sh [ROUNDS]   (results in Benchmarks/results/grpc-DATE.txt)
# CACHE is the writer's cache (--cache-size): 128MiB (default, as cluster-bench.sh) makes reads
# reach the storage nodes; 1GiB serves them from the cache, which measures the API alone.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing fio golang-go golang-google-grpc-dev golang-goprotobuf-dev golang-google-protobuf-dev protobuf-compiler
ROUNDS=${1:-3}
CACHE=${CACHE:-128MiB}
swift build -c release --traits GRPC --scratch-path .build-grpc --product torus >/dev/null
BIN=$PWD/.build-grpc/release/torus
WORK=$(mktemp -d /tmp/torus-grpc-bench.XXXXXX)
trap 'kill $UP 2>/dev/null; wait $UP 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

# The Go client, GOPATH mode (as examples/go/run.sh).
export GOPATH=$WORK/go:/usr/share/gocode GO111MODULE=off GOCACHE=$WORK/go/cache
mkdir -p "$WORK/go/src/torus.dev/api/torus/v1" "$WORK/go/src/torus.dev/grpc-bench"
go build -o "$WORK/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
protoc -Iproto --plugin=protoc-gen-go-grpc="$WORK/protoc-gen-go-grpc" --go_out="$WORK/go/src" --go-grpc_out="$WORK/go/src" proto/torus/v1/*.proto
cp Benchmarks/grpc-bench/main.go "$WORK/go/src/torus.dev/grpc-bench/"
go build -o "$WORK/grpc-bench" torus.dev/grpc-bench

NBD=$(free_port); API=$(free_port)
"$BIN" up --data-dir "$WORK/data" --nodes 3 --replication 2 --disk-size 3GiB --cache-size "$CACHE" --nbd "127.0.0.1:$NBD" --grpc "127.0.0.1:$API" \
    --volume n1:1GiB --volume g1:1GiB >"$WORK/up.log" 2>&1 &
UP=$!
for _ in $(seq 1 100); do grep -q "serving the gRPC API" "$WORK/up.log" && break; sleep 0.2; done

fio_mibs() {  # RW: MiB/s of fio 1 MiB QD8 over the whole volume n1
    fio --name=b --ioengine=nbd --uri="nbd://127.0.0.1:$NBD/n1" --rw="$1" --bs=1M --iodepth=8 --size=1G \
        $([ "$1" = write ] && echo --end_fsync=1) --output-format=json 2>/dev/null | sed -n '/^{/,$p' |
        python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print("%.1f" % ((j["write"]["bw"] + j["read"]["bw"]) / 1024))'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: >"$WORK/r"
for r in $(seq 1 "$ROUNDS"); do
    for op in write read; do
        echo "nbd $op $(fio_mibs $op)" >>"$WORK/r"
        echo "grpc $op $("$WORK/grpc-bench" --address "127.0.0.1:$API" --volume g1 --op $op --size $((1 << 30)) --qd 8)" >>"$WORK/r"
    done
done
out=Benchmarks/results/grpc-$(date -u +%Y-%m-%d-%H%M)-cache-$CACHE.txt
{
    echo "# bash Benchmarks/grpc-bench.sh $ROUNDS, $(date -u '+%Y-%m-%d %H:%M') UTC, $(nproc) vCPUs, torus at $(git rev-parse --short HEAD)"
    echo "# torus up (3 nodes, R=2, --cache-size $CACHE), 1 GiB volumes; sequential 1 MiB requests, 8 in flight; writes end with a flush"
    printf '%-8s %12s %12s %8s   %s\n' job "NBD MiB/s" "gRPC MiB/s" ratio "rounds (nbd/grpc)"
    for op in write read; do
        n=$(awk -v o=$op '$1 == "nbd" && $2 == o {print $3}' "$WORK/r" | median)
        g=$(awk -v o=$op '$1 == "grpc" && $2 == o {print $3}' "$WORK/r" | median)
        rounds=$(paste -d/ <(awk -v o=$op '$1 == "nbd" && $2 == o {print $3}' "$WORK/r") <(awk -v o=$op '$1 == "grpc" && $2 == o {print $3}' "$WORK/r") | tr '\n' ' ')
        printf '%-8s %12s %12s %7.2fx   %s\n' "$op 1m" "$n" "$g" "$(python3 -c "print($g / $n)")" "$rounds"
    done
} | tee "$out"
