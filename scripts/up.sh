#!/usr/bin/env bash
# Starts a local Torus cluster: installs the Debian packages the build needs (once), builds
# the release binary and runs `torus up` with the given options (see `torus up --help`).
# Usage: scripts/up.sh [torus up options...]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in libisal-dev libcurl4-openssl-dev; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
    echo "== installing ${need[*]}"
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
swift build -c release --product torus
exec .build/release/torus up "$@"
