#!/usr/bin/env bash
# Snapshots, clones and rollback on real processes: etcd + 3 `torus node` (replication 2) +
# `torus nbd serve` with the collector, then the same on `torus up`. Data is stamped per
# 4 KiB block (Tests/interop/snapshot_data.py), so each read shows which write it holds.
# Usage: bash scripts/e2e-snapshots.sh   (needs etcd-server, libnbd-bin, python3-libnbd; run by scripts/test.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin e2e-snapshots
etcd_cluster 3 2
PY=(/usr/bin/python3 Tests/interop/snapshot_data.py)
BLOCKS=16384  # 64 MiB of 4 KiB blocks
HALF=$((BLOCKS / 2))

"$BIN" volume create v1 64MiB --metadata "$META" >/dev/null 2>&1 || bad "volume create"
PORT=$(free_port)
"$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$PORT" "${PEER_TLS[@]}" --gc-interval 2s --gc-grace 1s \
    >>"$WORK/nbd.log" 2>&1 &
SERVER=$!; PIDS+=($!)
N="nbd://127.0.0.1:$PORT"
seconds_until 30 nbdinfo "$N/v1" >/dev/null && ok "torus nbd serve exports v1" || bad "nbd serve: $(tail -5 "$WORK/nbd.log")"
check() {  # WHAT URI RANGE...: the blocks hold the generations named
    if "${PY[@]}" verify "$2" "${@:3}" >"$WORK/verify.log" 2>&1; then ok "$1 ($(tail -1 "$WORK/verify.log"))"
    else bad "$1: $(tail -6 "$WORK/verify.log")"; fi
}
snap() { "$BIN" snapshot "$@" --metadata "$META" "${ETCD_USER[@]}"; }
ETCD_USER=()

"${PY[@]}" fill "$N/v1" 1 0 $BLOCKS && ok "64 MiB written as generation 1 and flushed" || bad "fill"
snap create v1 before >"$WORK/snap.log" 2>&1 && ok "snapshot create v1 before: $(cat "$WORK/snap.log")" \
    || bad "snapshot create: $(cat "$WORK/snap.log")"
seconds_until 10 exports "$PORT" "v1@before" >/dev/null && ok "NBD_OPT_LIST shows v1@before" || bad "exports: $(nbdinfo --list "$N" 2>&1 | grep export=)"
check "v1@before holds generation 1 everywhere" "$N/v1@before" "0:$BLOCKS:1"

# A snapshot while writes go on: the first half was written and flushed before it was asked
# for, so it must be there; each block of the second half may be either write.
/usr/bin/python3 Tests/interop/snapshot_data.py during "$N/v1" 2 $HALF -- "$BIN" snapshot create v1 during --metadata "$META" \
    >"$WORK/during.log" 2>&1 && ok "snapshot taken during writes: $(cat "$WORK/during.log")" || bad "during: $(cat "$WORK/during.log")"
seconds_until 10 exports "$PORT" "v1@during" >/dev/null || bad "v1@during not exported"
check "v1@during: every write flushed before it, the later ones in or out per block" "$N/v1@during" "0:$HALF:2" "$HALF:$HALF:1,2"
check "v1 holds generation 2 everywhere" "$N/v1" "0:$BLOCKS:2"
check "v1@before is unchanged" "$N/v1@before" "0:$BLOCKS:1"
nbdcopy "$N/v1@during" "$WORK/during-1.img" && nbdcopy "$N/v1@during" "$WORK/during-2.img" && cmp -s "$WORK/during-1.img" "$WORK/during-2.img" \
    && ok "nbdcopy of v1@during twice gives the same 64 MiB (a snapshot never changes)" || bad "v1@during read differently twice"
snap list >"$WORK/list.log" 2>&1 && [ "$(grep -c '^v1@' "$WORK/list.log")" = 2 ] && ok "snapshot list: $(tr '\n' ';' <"$WORK/list.log")" \
    || bad "snapshot list: $(cat "$WORK/list.log")"

# fio's own check: data written with crc32c verify headers, a snapshot, the data overwritten;
# fio --verify_only passes on the snapshot and (the control) fails on the overwritten volume.
"$BIN" volume create f1 32MiB --metadata "$META" >/dev/null 2>&1 && seconds_until 15 nbdinfo "$N/f1" >/dev/null || bad "volume f1"
FJ=(--name=snapw --ioengine=nbd --rw=write --bs=64k --size=32m --verify=crc32c --randseed=1234)
fio "${FJ[@]}" --uri="$N/f1" --do_verify=0 --end_fsync=1 --output="$WORK/fio-w.txt" >/dev/null 2>&1 \
    && snap create f1 fio >/dev/null 2>&1 \
    && fio --name=over --ioengine=nbd --uri="$N/f1" --rw=write --bs=64k --size=32m --end_fsync=1 --output="$WORK/fio-o.txt" >/dev/null 2>&1 \
    || bad "fio writes and snapshot of f1"
seconds_until 10 exports "$PORT" "f1@fio" >/dev/null || bad "f1@fio not exported"
fio "${FJ[@]}" --uri="$N/f1@fio" --verify_only --output="$WORK/fio-v.txt" >/dev/null 2>&1 \
    && ok "fio --verify_only (crc32c) passes on f1@fio after f1 was overwritten" || bad "fio verify of f1@fio: $(grep -i err "$WORK/fio-v.txt" | head -3)"
fio "${FJ[@]}" --uri="$N/f1" --verify_only --output="$WORK/fio-c.txt" >/dev/null 2>&1 \
    && bad "the control passed: fio verify on the overwritten f1" || ok "the control: the same verify fails on the overwritten f1"

# Clones share the snapshot's blocks until written.
"$BIN" volume clone v1@before c1 --metadata "$META" >"$WORK/clone.log" 2>&1 && ok "volume clone v1@before c1: $(cat "$WORK/clone.log")" \
    || bad "clone: $(cat "$WORK/clone.log")"
seconds_until 15 nbdinfo "$N/c1" >/dev/null || bad "c1 not exported: $(tail -3 "$WORK/nbd.log")"
check "c1 holds v1@before's data" "$N/c1" "0:$BLOCKS:1"
"${PY[@]}" fill "$N/c1" 3 0 1024 && check "c1 after writing 4 MiB: its writes, then the snapshot's" "$N/c1" "0:1024:3" "1024:$((BLOCKS - 1024)):1"
check "v1@before is unchanged by writes to its clone" "$N/v1@before" "0:$BLOCKS:1"
check "v1 is unchanged by writes to the clone" "$N/v1" "0:$BLOCKS:2"
"$BIN" volume delete v1 --metadata "$META" >"$WORK/del.log" 2>&1 && bad "deleting a volume with a clone was accepted" \
    || { grep -q "has clones" "$WORK/del.log" && ok "deleting v1 is refused: $(cat "$WORK/del.log")" || bad "delete v1: $(cat "$WORK/del.log")"; }
"$BIN" volume info v1 --metadata "$META" >"$WORK/info.log" 2>&1 && grep -q "v1@during.*exclusive=[0-9]" "$WORK/info.log" \
    && ok "volume info shows each snapshot's exclusive bytes: $(grep exclusive "$WORK/info.log" | tr '\n' ';')" \
    || bad "volume info: $(cat "$WORK/info.log")"

# Rollback: refused while a client is connected, unless --force.
"${PY[@]}" hold "$N/v1" 30 & HOLDER=$!; PIDS+=($HOLDER)
sleep 1
snap rollback v1 before >"$WORK/rb.log" 2>&1 && bad "rollback of a volume in use was accepted" \
    || { grep -q "in use" "$WORK/rb.log" && ok "rollback refused while a client is connected: $(cat "$WORK/rb.log")" || bad "rollback: $(cat "$WORK/rb.log")"; }
snap rollback v1 before --force >"$WORK/rb.log" 2>&1 && ok "rollback --force v1 to before" || bad "rollback --force: $(cat "$WORK/rb.log")"
seconds_until 15 nbdinfo "$N/v1" >/dev/null || bad "v1 not served after the rollback: $(tail -3 "$WORK/nbd.log")"
check "v1 holds v1@before's data after the rollback" "$N/v1" "0:$BLOCKS:1"
kill "$HOLDER" 2>/dev/null
"${PY[@]}" fill "$N/v1" 4 0 512 && check "v1 takes writes after the rollback" "$N/v1" "0:512:4" "512:$((BLOCKS - 512)):1"
check "v1@during survives the rollback" "$N/v1@during" "0:$HALF:2" "$HALF:$HALF:1,2"

# Space: delete the clone and the snapshots; the collector reclaims their blocks.
# Bytes in use on every node, as the nodes publish them (/torus/nodes/ID/usage: used=BYTES).
used() { ETCDCTL_API=3 etcdctl --endpoints "${META/etcd:/http:}" get --prefix /torus/nodes/ --print-value-only 2>/dev/null \
    | awk -F= '$1 == "used" { s += $2 } END { print s + 0 }'; }
before=$(used)
"$BIN" volume delete c1 --metadata "$META" >/dev/null 2>&1 && snap delete v1 during >/dev/null 2>&1 && snap delete v1 before >/dev/null 2>&1 \
    && ok "clone c1 and both snapshots deleted" || bad "deletes"
seconds_until 10 sh -c "! nbdinfo --list $N 2>/dev/null | grep -q 'v1@'" >/dev/null && ok "the deleted snapshots are no longer exported" || bad "still exported"
reclaimed() { [ "$(used)" -lt $((before - (48 << 20))) ]; }
t=$(seconds_until 60 reclaimed) && ok "the collector reclaimed the space in ${t}s: $((before >> 20)) MiB -> $(( $(used) >> 20 )) MiB on the nodes" \
    || bad "space not reclaimed: $((before >> 20)) MiB -> $(( $(used) >> 20 )) MiB; $(grep 'gc: pass' "$WORK/nbd.log" | tail -2)"
check "v1 is intact after the collection" "$N/v1" "0:512:4" "512:$((BLOCKS - 512)):1"
kill -INT "$SERVER"; wait "$SERVER" 2>/dev/null

# The same on `torus up` (admin socket).
UPDIR="$WORK/up"; UPORT=$(free_port)
"$BIN" up --data-dir "$UPDIR" --nbd "127.0.0.1:$UPORT" --volume u1:64MiB --gc-grace 1s >"$WORK/up.log" 2>&1 &
UP=$!; PIDS+=($!)
U="nbd://127.0.0.1:$UPORT"
seconds_until 30 nbdinfo "$U/u1" >/dev/null && ok "torus up serves u1" || bad "torus up: $(tail -5 "$WORK/up.log")"
"${PY[@]}" fill "$U/u1" 1 0 $BLOCKS && "$BIN" snapshot create u1 s1 --data-dir "$UPDIR" >/dev/null 2>&1 \
    && "${PY[@]}" fill "$U/u1" 2 0 $BLOCKS && ok "torus up: u1 written, snapshot s1, u1 rewritten" || bad "torus up snapshot"
check "torus up: u1@s1 holds the first write" "$U/u1@s1" "0:$BLOCKS:1"
"$BIN" volume clone u1@s1 u2 --data-dir "$UPDIR" >/dev/null 2>&1 && check "torus up: clone u2 holds u1@s1" "$U/u2" "0:$BLOCKS:1" || bad "torus up clone"
"$BIN" snapshot rollback u1 s1 --data-dir "$UPDIR" >"$WORK/rb.log" 2>&1 && check "torus up: rollback u1 to s1" "$U/u1" "0:$BLOCKS:1" \
    || bad "torus up rollback: $(cat "$WORK/rb.log")"
"$BIN" volume info u1 --data-dir "$UPDIR" 2>&1 | grep -q "u1@s1 .*exclusive=" && ok "torus up: volume info lists u1@s1 with its exclusive bytes" || bad "torus up volume info"
"$BIN" volume delete u2 --data-dir "$UPDIR" >/dev/null 2>&1 && "$BIN" snapshot delete u1 s1 --data-dir "$UPDIR" >/dev/null 2>&1 \
    && ! "$BIN" snapshot list --data-dir "$UPDIR" 2>&1 | grep -q "u1@s1" && ok "torus up: clone and snapshot deleted" || bad "torus up deletes"
# torus gc: the first pass finds what only the clone and the snapshot kept, the next deletes it.
"$BIN" gc --data-dir "$UPDIR" >/dev/null 2>&1; sleep 1.5
"$BIN" gc --data-dir "$UPDIR" >"$WORK/gc.log" 2>&1
gc_before=$(grep -o '(\([0-9]*\) ->' "$WORK/gc.log" | tr -dc 0-9); gc_after=$(grep -o -- '-> [0-9]* bytes' "$WORK/gc.log" | tr -dc 0-9)
[ -n "$gc_before" ] && [ -n "$gc_after" ] && [ "$gc_after" -lt "$gc_before" ] \
    && ok "torus up: torus gc reclaims what the rollback, the clone and the snapshot left: $(grep 'blocks in use' "$WORK/gc.log")" \
    || bad "torus gc: $(cat "$WORK/gc.log")"
check "torus up: u1 intact after the collection" "$U/u1" "0:$BLOCKS:1"
kill -INT "$UP"; wait "$UP" 2>/dev/null
echo "e2e-snapshots: $pass passed, $fail failed"
[ $fail -eq 0 ]
