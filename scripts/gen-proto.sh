#!/usr/bin/env bash
# Generates the Swift code of the gRPC API (proto/torus) into Sources/TorusAPI/Generated/ and
# of the CSI driver (proto/csi) into Sources/torus/CSI/Generated/.
# Usage: bash scripts/gen-proto.sh [--check]   (--check: fail if the committed code differs)
# Uses Debian's protoc and the plugins of the pinned swift-protobuf and grpc-swift-protobuf,
# built in scripts/protoc-plugins (a package of its own, ~3 minutes the first time).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing protobuf-compiler libprotobuf-dev

plugins=scripts/protoc-plugins
swift build -c release --package-path "$plugins" --product protoc-gen-swift >/dev/null
swift build -c release --package-path "$plugins" --product protoc-gen-grpc-swift-2 >/dev/null
bin=$(swift build -c release --package-path "$plugins" --show-bin-path)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
# generate PROTO-DIR DEST VISIBILITY: every .proto under proto/PROTO-DIR into DEST.
generate() {
    local gen="$out/$1" guarded="$out/$1-guarded" dest=$2
    mkdir -p "$gen" "$guarded"
    (cd proto && protoc -I. -I/usr/include --plugin=protoc-gen-swift="$bin/protoc-gen-swift" \
        --plugin=protoc-gen-grpc-swift-2="$bin/protoc-gen-grpc-swift-2" \
        --swift_out="$gen" --swift_opt=Visibility=$3 \
        --grpc-swift-2_out="$gen" --grpc-swift-2_opt=Visibility=$3,Server=true,Client=true \
        $(find "$1" -name '*.proto' | sort))
    # The code compiles to nothing without the GRPC trait (Package.swift): guard every file.
    for f in $(cd "$gen" && find . -name '*.swift' | sort); do
        flat=$(echo "${f#./}" | tr '/' '_')
        { echo "#if GRPC"; cat "$gen/$f"; echo "#endif"; } >"$guarded/$flat"
    done
    if [ "$check" = 1 ]; then
        diff -r "$guarded" "$dest" || { echo "error: $dest differs from what proto/$1 generates: run bash scripts/gen-proto.sh" >&2; status=1; return; }
        echo "generated code matches proto/$1 ($(ls "$dest" | wc -l) files)"
    else
        rm -rf "$dest" && mkdir -p "$dest" && cp "$guarded"/* "$dest"/
        echo "wrote $(ls "$dest" | wc -l) files to $dest"
    fi
}
check=0
[ "${1:-}" = "--check" ] && check=1
generate torus Sources/TorusAPI/Generated Public
generate csi Sources/torus/CSI/Generated Internal
exit $status
