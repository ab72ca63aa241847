#!/usr/bin/env bash
# Runs every test of the project. Usage: bash scripts/test.sh
# Installs the Debian packages it needs (ISA-L for CRC-32C, NBD clients for the interop tests), builds without
# warnings in project code, runs `swift test`, a release sweep of the simulator, and the
# interop tests of `torus up` with real NBD clients, and the multi-process end-to-end test on etcd.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
install_missing libisal-dev libnbd-bin python3-libnbd fio qemu-utils libcurl4-openssl-dev etcd-server etcd-client openssl curl

echo "== build (debug), failing on warnings in project code"
log=$(mktemp)
swift build 2>&1 | tee "$log"
if grep -E "^/.*(Sources|Simulation|Tests)/.*warning:" "$log" | grep -v "/.build/" ; then
    echo "error: compiler warnings in project code (listed above)" >&2
    exit 1
fi

echo "== swift test"
swift test --disable-xctest 2>&1 | tee "$log"
if grep -E "^/.*(Sources|Simulation|Tests)/.*warning:" "$log" | grep -v "/.build/" ; then
    echo "error: compiler warnings in project code (listed above)" >&2
    exit 1
fi

echo "== simulator: release build, determinism and a sweep of seeds with faults"
swift build -c release --product torus-sim
a=$(swift run -c release torus-sim run --seed 1 | grep -o 'trace=[0-9a-f]*')
b=$(swift run -c release torus-sim run --seed 1 | grep -o 'trace=[0-9a-f]*')
c=$(swift run -c release torus-sim run --seed 2 | grep -o 'trace=[0-9a-f]*')
echo "seed 1: $a, again: $b; seed 2: $c"
[ "$a" = "$b" ] || { echo "error: seed 1 gave two different traces" >&2; exit 1; }
[ "$a" != "$c" ] || { echo "error: seeds 1 and 2 gave the same trace" >&2; exit 1; }
swift run -c release torus-sim sweep --from 1 --count "${TORUS_SWEEP_SEEDS:-200}"

echo "== scenarios: every file on its seeds (release), determinism of one over 20 seeds"
for f in Scenarios/*.yaml; do swift run -c release torus-sim run "$f"; done
swift run -c release torus-sim check-determinism Scenarios/baseline-faults.yaml --seeds 1-20

echo "== swarm: 100 seeds, each with its own cluster shape, workload and fault mix"
swift run -c release torus-sim swarm --from 1 --runs "${TORUS_SWARM_RUNS:-100}"

echo "== interop: torus up with nbdinfo, nbdcopy, fio, qemu-img"
bash scripts/interop.sh

echo "== end to end: etcd, torus init, 3 torus node, torus nbd serve, real NBD clients"
bash scripts/e2e-etcd.sh

echo "== end to end on etcd over TLS with client certificates"
bash scripts/e2e-etcd-tls.sh
