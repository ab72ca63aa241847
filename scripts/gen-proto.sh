#!/usr/bin/env bash
# Generates the Swift code of the gRPC API from proto/ into Sources/TorusAPI/Generated/.
# Usage: bash scripts/gen-proto.sh [--check]   (--check: fail if the committed code differs)
# Uses Debian's protoc and the plugins of the pinned swift-protobuf and grpc-swift-protobuf,
# built in scripts/protoc-plugins (a package of its own, ~3 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing protobuf-compiler

plugins=scripts/protoc-plugins
swift build -c release --package-path "$plugins" --product protoc-gen-swift >/dev/null
swift build -c release --package-path "$plugins" --product protoc-gen-grpc-swift-2 >/dev/null
bin=$(swift build -c release --package-path "$plugins" --show-bin-path)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
protos=$(cd proto && find torus -name '*.proto' | sort)
(cd proto && protoc --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
    --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
    --swift_out="$out" --swift_opt=Visibility=Internal \
    --grpc-swift-2_out="$out" --grpc-swift-2_opt=Visibility=Internal,Server=true,Client=true \
    $protos)
# The target compiles to nothing without the GRPC trait (Package.swift): guard every file.
mkdir -p "$out/guarded"
for f in $(cd "$out" && find torus -name '*.swift' | sort); do
    flat=$(echo "$f" | tr '/' '_')
    { echo "#if GRPC"; cat "$out/$f"; echo "#endif"; } >"$out/guarded/$flat"
done

dest=Sources/TorusAPI/Generated
if [ "${1:-}" = "--check" ]; then
    diff -r "$out/guarded" "$dest" || { echo "error: $dest differs from what proto/ generates: run bash scripts/gen-proto.sh" >&2; exit 1; }
    echo "generated code matches proto/ ($(ls "$dest" | wc -l) files)"
else
    rm -rf "$dest" && mkdir -p "$dest" && cp "$out/guarded"/* "$dest"/
    echo "wrote $(ls "$dest" | wc -l) files to $dest"
fi
