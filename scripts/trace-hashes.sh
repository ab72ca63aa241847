#!/usr/bin/env bash
# Prints the simulator's trace hash of every scenario file on seeds 1-3, of the default run on
# seeds 1-3 and of swarm seeds 1-100: a refactor of the core or the simulator must leave every
# line the same. Usage: bash scripts/trace-hashes.sh [TORUS_SIM_BINARY] > hashes.txt
#        (default binary: .build/release/torus-sim, built first), then diff two such files.
set -euo pipefail
cd "$(dirname "$0")/.."
sim=${1:-}
if [ -z "$sim" ]; then swift build -c release --product torus-sim >/dev/null; sim=.build/release/torus-sim; fi
for f in Scenarios/*.yaml; do
    for s in 1 2 3; do
        echo "$f seed=$s $("$sim" run "$f" --seed "$s" 2>&1 | grep -o 'trace=[0-9a-f]*\|checks=[a-z]*' | tr '\n' ' ')"
    done
done
for s in 1 2 3; do echo "default seed=$s $("$sim" run --seed "$s" | grep -o 'trace=[0-9a-f]*')"; done
"$sim" swarm --from 1 --runs 100 --jobs 0 | grep -o '^seed=[0-9]* trace=[0-9a-f]*' | sed 's/^/swarm /'
