#!/usr/bin/env bash
# Runs every test of the project. Usage: bash scripts/test.sh
# Installs the Debian packages it needs (ISA-L for CRC-32C, NBD clients for the interop tests), builds without
# warnings in project code, runs `swift test`, a release sweep of the simulator, and the
# interop tests of `torus up` with real NBD clients, and the multi-process end-to-end test on etcd.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib.sh
install_missing libisal-dev libmimalloc-dev libnbd-bin python3-libnbd fio qemu-utils libcurl4-openssl-dev etcd-server etcd-client openssl curl fuse3 e2fsprogs xfsprogs libfuse3-dev libnbd-dev protobuf-compiler

echo "== code shape: files of at most 450 lines, functions of at most 80, no references outside the repo"
python3 scripts/check-shape.py

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

echo "== torus-sim: exit statuses, the crash report and the readable trace"
sim=.build/release/torus-sim
set +e
"$sim" run Scenarios/writer-pause-takeover.yaml --seed 1 --canary skip-epoch-compare >/tmp/torus-sim-exit.log; rc=$?
set -e
grep -q "fencing" /tmp/torus-sim-exit.log && [ "$rc" = 1 ] || { echo "error: a broken safety promise exited $rc, not 1" >&2; exit 1; }
set +e
"$sim" run Scenarios/canary-no-commit-retry.yaml --seed 1 --canary no-commit-retry >/tmp/torus-sim-exit.log; rc=$?
set -e
grep -q "liveness" /tmp/torus-sim-exit.log && [ "$rc" = 3 ] || { echo "error: a liveness failure exited $rc, not 3" >&2; exit 1; }
"$sim" swarm --from 1 --runs 100000 >/dev/null 2>/tmp/torus-sim-crash.log &
pid=$!
sleep 2
kill -ILL "$pid"
set +e
wait "$pid"; rc=$?
set -e
grep -q "Reproduce: swift run -c release torus-sim swarm --from [0-9]* --runs 1" /tmp/torus-sim-crash.log && [ "$rc" = 4 ] ||
    { echo "error: a simulator crash exited $rc, not 4 with a reproduce command" >&2; cat /tmp/torus-sim-crash.log >&2; exit 1; }
"$sim" run Scenarios/bit-rot.yaml --seed 3 --trace /tmp/torus-sim-trace.txt >/tmp/torus-sim-exit.log
hash=$(grep -o 'trace=[0-9a-f]*' /tmp/torus-sim-exit.log | cut -d= -f2)
grep -q "^# seed 3: trace hash $hash$" /tmp/torus-sim-trace.txt && grep -q "FAULT bit rot on node" /tmp/torus-sim-trace.txt ||
    { echo "error: the readable trace lacks its hash or its faults" >&2; exit 1; }
echo "exit statuses 1 (safety), 3 (liveness), 4 (crash, with its reproduce command) and the readable trace: ok"

echo "== swarm --jobs: seeds in parallel processes give the traces they give one by one"
"$sim" swarm --from 1 --runs 6 --jobs 1 | grep -o '^seed=[0-9]* trace=[0-9a-f]*' >/tmp/torus-swarm-jobs1.txt
"$sim" swarm --from 1 --runs 6 --jobs 3 | grep -o '^seed=[0-9]* trace=[0-9a-f]*' >/tmp/torus-swarm-jobs3.txt
[ "$(wc -l </tmp/torus-swarm-jobs1.txt)" = 6 ] && cmp -s /tmp/torus-swarm-jobs1.txt /tmp/torus-swarm-jobs3.txt ||
    { echo "error: swarm --jobs 3 printed other seeds or traces than --jobs 1" >&2; diff /tmp/torus-swarm-jobs1.txt /tmp/torus-swarm-jobs3.txt >&2; exit 1; }
echo "6 seeds, 3 jobs: same seeds, same order, same traces: ok"

echo "== swarm: 100 seeds, each with its own cluster shape, workload and fault mix (one process per core)"
swift run -c release torus-sim swarm --from 1 --runs "${TORUS_SWARM_RUNS:-100}" --jobs 0

echo "== interop: torus up with nbdinfo, nbdcopy, fio, qemu-img"
bash scripts/interop.sh

echo "== fuzzing: 100,000 mutated inputs each to the NBD server, the peer codec, scenario files, metadata values"
bash scripts/fuzz.sh --inputs 100000

echo "== bad input on every subcommand: refused with a clear line, never a trap or a hang"
bash scripts/cli-inputs.sh

echo "== end to end: etcd, torus init, 3 torus node, torus nbd serve, real NBD clients"
bash scripts/e2e-etcd.sh

echo "== NBD over TLS: torus certs, torus up --tls, nbds:// with nbdinfo, nbdcopy, qemu-img, nbdfuse"
bash scripts/nbd-tls.sh

echo "== end to end on etcd over TLS with client certificates"
bash scripts/e2e-etcd-tls.sh

echo "== end to end on etcd with user/password authentication (tokens that expire, an etcd restart)"
bash scripts/e2e-etcd-auth.sh

echo "== end to end: snapshots, clones and rollback on etcd and on torus up (stamped data, the collector reclaiming)"
bash scripts/e2e-snapshots.sh

echo "== torus attach / detach: torus-fuse + loop + ext4 and xfs, snapshots read-only, online growth, bad input, a server that dies"
bash scripts/attach.sh

echo "== PostgreSQL on a Torus volume (etcd cluster with a node SIGKILLed under pgbench, then on torus up)"
bash scripts/postgres-demo.sh etcd 20
bash scripts/postgres-demo.sh up 20

echo "== end to end: self-healing on etcd (4 nodes, replication 3, a node lost for good, then a second)"
bash scripts/e2e-repair.sh

echo "== end to end: rebalancing on etcd (a fifth node joins, a node is drained and removed, I/O throughout)"
bash scripts/e2e-rebalance.sh

echo "== the gRPC API (built with the GRPC trait): generated code, the Python suite, the Python and Go examples"
bash scripts/api-test.sh

echo "== the CSI driver: the upstream sanity suite's checks, with real loop devices and mounts"
bash scripts/csi-test.sh

echo "== Kubernetes manifests: kubernetes-validate --strict for 1.29 and 1.34, snapshot objects, negative controls"
bash scripts/validate-manifests.sh
