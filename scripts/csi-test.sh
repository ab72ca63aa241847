#!/usr/bin/env bash
# The CSI driver: the checks of the upstream sanity suite (Tests/csi), as root with real loop
# devices and mounts, against `torus csi --mode all` beside a `torus up --grpc`.
# Usage: bash scripts/csi-test.sh   (after scripts/api-test.sh built .build-grpc; builds it if not)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing protobuf-compiler libfuse3-dev libnbd-dev fuse3 e2fsprogs xfsprogs util-linux
[ "$(id -u)" = 0 ] || { echo "error: the CSI node tests mount filesystems: run as root" >&2; exit 1; }

swift build -c release --traits GRPC --scratch-path .build-grpc --product torus
swift build -c release --traits GRPC --scratch-path .build-grpc --product torus-fuse
export TORUS_BIN=$PWD/.build-grpc/release/torus
python3 -c 'import grpc, grpc_tools, pytest' 2>/dev/null ||
    python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-tools pytest

echo "== CSI: identity, controller (volumes, snapshots, clones, expansion, pagination), node (mount and block lifecycles)"
python3 -m pytest -q -p no:cacheprovider Tests/csi
