#!/usr/bin/env bash
# The gRPC API: builds torus with the GRPC trait, checks the generated code matches proto/,
# and runs the Python suite (Tests/api) against `torus up --grpc`, then the examples.
# Usage: bash scripts/api-test.sh   (installs grpcio, grpcio-tools and pytest from PyPI)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing protobuf-compiler

echo "== generated code matches proto/"
bash scripts/gen-proto.sh --check

echo "== build torus with the gRPC API (release, .build-grpc)"
swift build -c release --traits GRPC --scratch-path .build-grpc --product torus
swift build -c release --traits GRPC --scratch-path .build-grpc --product torus-fuse
export TORUS_BIN=$PWD/.build-grpc/release/torus

python3 -c 'import grpc, grpc_tools, pytest' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools pytest

echo "== the Python suite: every RPC, its error codes, streams, concurrent clients"
python3 -m pytest -q -p no:cacheprovider Tests/api

echo "== the examples: Python and Go clients against torus up --grpc"
install_missing golang-go golang-google-grpc-dev golang-goprotobuf-dev golang-google-protobuf-dev
work=$(mktemp -d /tmp/torus-api-examples.XXXXXX)
port=$(free_port)
: >"$work/up.log"
"$TORUS_BIN" up --data-dir "$work/data" --nodes 3 --replication 2 --nbd "127.0.0.1:$(free_port)" --grpc "127.0.0.1:$port" \
    >"$work/up.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do grep -q "serving the gRPC API" "$work/up.log" && break; sleep 0.2; done
python3 examples/python/volume_demo.py --address "127.0.0.1:$port" --volume demo-py | tee "$work/py.out"
grep -q "the snapshot holds the same bytes: ok" "$work/py.out"
bash examples/go/run.sh --address "127.0.0.1:$port" --volume demo-go | tee "$work/go.out"
grep -q "the snapshot holds the same bytes: ok" "$work/go.out"
echo "examples: ok"
