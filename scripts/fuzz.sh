#!/usr/bin/env bash
# Mutation fuzzing of the four parsers that read untrusted bytes (docs/fuzzing.md): the NBD
# server state machine, the peer codec, scenario files and metadata values (our encodings and
# etcd's JSON replies). Each target gets its corpus (Tests/fuzz-corpus/TARGET; real captures
# and encodings) mutated by a seeded generator.
# Usage: bash scripts/fuzz.sh [SECONDS_PER_TARGET=600] [SEED=1]     (the long run)
#        bash scripts/fuzz.sh --inputs N [SEED=1]                  (N inputs each; test.sh: 100000)
# Exit 0 only if no target crashed, hung (an input over 1 s) or grew past 1 GiB.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product torus-fuzz >/dev/null
FUZZ=.build/release/torus-fuzz
if [ "${1:-}" = --inputs ]; then LIMIT=(--runs "$2"); SEED=${3:-1}
else LIMIT=(--seconds "${1:-600}" --runs 1000000000); SEED=${2:-1}; fi
for target in nbd peer scenario metadata; do
    "$FUZZ" "$target" "${LIMIT[@]}" --seed "$SEED" | tail -1
done
