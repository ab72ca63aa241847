#!/usr/bin/env bash
# Builds and runs the Go example against a Torus gRPC API, in GOPATH mode with Debian's Go
# packages (golang-go, golang-google-grpc-dev, golang-goprotobuf-dev, protobuf-compiler).
# Usage: bash examples/go/run.sh [--address HOST:PORT] [--volume NAME]
set -euo pipefail
cd "$(dirname "$0")/../.."
gopath=$(mktemp -d /tmp/torus-go.XXXXXX)
trap 'rm -rf "$gopath"' EXIT
export GOPATH=$gopath:/usr/share/gocode GO111MODULE=off GOFLAGS=-mod=mod GOCACHE=$gopath/cache
# protoc's gRPC plugin for Go, from the source Debian ships with grpc-go.
go build -o "$gopath/bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
mkdir -p "$gopath/src/torus.dev/api/torus/v1" "$gopath/src/torus.dev/example"
protoc -Iproto --plugin=protoc-gen-go-grpc="$gopath/bin/protoc-gen-go-grpc" \
    --go_out="$gopath/src" --go-grpc_out="$gopath/src" proto/torus/v1/*.proto
cp examples/go/volume_demo.go "$gopath/src/torus.dev/example/"
go build -o "$gopath/bin/volume-demo" torus.dev/example
"$gopath/bin/volume-demo" "$@"
