#!/usr/bin/env bash
# Starts a local Torus cluster: installs the Debian packages the build needs (once), builds
# the release binary and runs `torus up` with the given options (see `torus up --help`).
# Usage: scripts/up.sh [torus up options...]
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
install_missing libisal-dev libcurl4-openssl-dev libmimalloc-dev libfuse3-dev libnbd-dev
swift build -c release --product torus
swift build -c release --product torus-fuse
exec .build/release/torus up "$@"
