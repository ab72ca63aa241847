#!/usr/bin/env bash
# Interop tests: `torus up` driven by real NBD clients (libnbd's nbdinfo and nbdcopy, fio's nbd
# engine, qemu-img), before and after a SIGKILL and restart.
# Usage: bash scripts/interop.sh   (needs: libnbd-bin fio qemu-utils; scripts/test.sh installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

swift build -c release --product torus
BIN=$PWD/.build/release/torus
WORK=$(mktemp -d /tmp/torus-interop.XXXXXX)
PORT=$(free_port)  # bindable now, and below the ephemeral range (see lib.sh)
URI=nbd://127.0.0.1:$PORT
PID=
passed=0
failed=0

stop() {  # stop SIGNAL: signal the server and wait until it is gone
    kill -"$1" "$PID" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    PID=
}

cleanup() {
    [ -n "$PID" ] && stop KILL
    rm -rf "$WORK"
}
trap cleanup EXIT

UP_EXTRA=()  # the first start hands writer traffic to the nodes in memory; after the SIGKILL, TCP
start() {
    "$BIN" up --data-dir "$WORK/data" --nodes 3 --replication 2 --nbd "127.0.0.1:$PORT" --disk-size 1GiB \
        --volume big:256MiB --volume fio:128MiB --volume scratch:64MiB --volume pipe:128MiB --gc-interval 2s --gc-grace 500ms --scrub-rate 128MiB \
        "${UP_EXTRA[@]}" >>"$WORK/up.log" 2>&1 &
    PID=$!
    disown "$PID"  # no job-control chatter when it is killed
    for _ in $(seq 1 120); do
        if nbdinfo --size "$URI/big" >/dev/null 2>&1; then return 0; fi
        if ! kill -0 "$PID" 2>/dev/null; then echo "torus up died:"; cat "$WORK/up.log"; exit 1; fi
        sleep 0.5
    done
    echo "torus up did not start serving within 60 s:"; cat "$WORK/up.log"; exit 1
}

check() {
    local name=$1; shift
    if "$@" >"$WORK/check.log" 2>&1; then
        echo "ok      $name"
        passed=$((passed + 1))
    else
        echo "FAILED  $name"
        sed 's/^/        /' "$WORK/check.log" | tail -20
        failed=$((failed + 1))
    fi
}

size_is() { [ "$(nbdinfo --size "$URI/$1")" = "$2" ]; }
lists() { nbdinfo --list "$URI" | grep -q "export=\"$1\"\|export: $1\|^export=$1\|$1"; }
copy_in() { nbdcopy --flush "$WORK/in.raw" "$URI/big"; }
copy_out_same() { rm -f "$WORK/out.raw"; nbdcopy "$URI/big" "$WORK/out.raw" && cmp "$WORK/in.raw" "$WORK/out.raw"; }
qemu_same() { qemu-img compare -f raw -F raw "$WORK/in.raw" "$URI/big"; }
FIO=(fio --name=torus --ioengine=nbd --uri="$URI/fio" --size=64m --bs=4k --iodepth=16 --verify=crc32c
     --randrepeat=1 --randseed=42 --output-format=terse)
fio_write_verify() { "${FIO[@]}" --rw=randwrite --do_verify=1 --end_fsync=1; }
fio_verify_only() { "${FIO[@]}" --rw=randwrite --verify_only=1; }
wrong_nodes() {  # a restart with another node count is refused with a clear message
    ! "$BIN" up --data-dir "$WORK/data" --nodes 5 --nbd "127.0.0.1:$PORT" --disk-size 1GiB >"$WORK/wrong.log" 2>&1 &&
        grep -q "holds a cluster of 3 nodes" "$WORK/wrong.log"
}
volume_cmds() {  # torus volume create / list / info / delete against the running torus up
    local T=(--data-dir "$WORK/data")
    "$BIN" volume create extra 8MiB "${T[@]}" | grep -q "^extra size=8388608" &&
        [ "$(nbdinfo --size "$URI/extra")" = 8388608 ] &&
        "$BIN" volume list "${T[@]}" | grep -q "^extra " &&
        "$BIN" volume info extra "${T[@]}" | grep -q "size=8388608" &&
        ! "$BIN" volume create extra 8MiB "${T[@]}" &&
        "$BIN" volume delete extra "${T[@]}" &&
        ! "$BIN" volume list "${T[@]}" | grep -q "^extra "
}
scrub_repairs_rot() {  # rot 4 KiB inside node 1's slots (behind torus up's back); the scrub must drop the copy, the collector copy it back
    dd if=/dev/urandom of="$WORK/data/node-1/blocks.data" bs=4096 seek=$((24 << 8)) count=1 conv=notrunc status=none &&
        for _ in $(seq 1 60); do grep -q "scrub found a bad copy" "$WORK/up.log" && break; sleep 0.5; done &&
        grep "scrub found a bad copy" "$WORK/up.log" | head -1 &&
        for _ in $(seq 1 60); do grep -q "short of copies: [1-9][0-9]* copied" "$WORK/up.log" && break; sleep 0.5; done &&
        grep "short of copies: [1-9][0-9]* copied" "$WORK/up.log" | tail -1
}
enospc_clean() {  # two 8 MiB nodes for a 64 MiB volume: nbdcopy's FLUSH fails with ENOSPC, nothing hangs, serving goes on
    # A Unix socket, not a second TCP port: a port picked here can be in use (CI once lost one to an
    # ephemeral port of another connection, and the test failed on "connection refused").
    local sock="$WORK/tiny.sock" pid ok=1
    local uri="nbd+unix:///small?socket=$sock"
    "$BIN" up --data-dir "$WORK/tiny" --nodes 2 --replication 2 --nbd "$sock" --disk-size 8MiB \
        --volume small:64MiB >"$WORK/tiny.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 60); do
        nbdinfo --size "$uri" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { echo "the small torus up died:"; cat "$WORK/tiny.log"; return 1; }
        sleep 0.5
    done
    head -c $((32 << 20)) "$WORK/in.raw" >"$WORK/tiny.raw"
    if timeout 120 nbdcopy --flush "$WORK/tiny.raw" "$uri" 2>"$WORK/tiny-copy.err"; then
        echo "nbdcopy of 32 MiB into 16 MiB of disks succeeded"; ok=0
    fi
    cat "$WORK/tiny-copy.err"
    grep -q "No space left on device" "$WORK/tiny-copy.err" || ok=0
    [ "$(nbdinfo --size "$uri")" = $((64 << 20)) ] || ok=0
    kill -INT "$pid"; wait "$pid" 2>/dev/null
    grep "flush failed on shutdown" "$WORK/tiny.log" || { ok=0; echo "the small torus up's log:"; tail -20 "$WORK/tiny.log"; }
    [ $ok = 1 ]
}
gc_reclaims_deleted_volume() {  # 32 MiB written twice (r2), the volume deleted, then `torus gc`
    local T=(--data-dir "$WORK/data")
    "$BIN" volume create gone 32MiB "${T[@]}" >/dev/null &&
        head -c $((32 << 20)) "$WORK/in.raw" >"$WORK/gone.raw" && nbdcopy --flush "$WORK/gone.raw" "$URI/gone" &&
        "$BIN" volume delete gone "${T[@]}" &&
        "$BIN" gc "${T[@]}" && sleep 1 && "$BIN" gc "${T[@]}" | tee "$WORK/gc.log" &&
        python3 - "$WORK/gc.log" <<'PY'
import re, sys
before, after = map(int, re.search(r"\((\d+) -> (\d+) bytes\)", open(sys.argv[1]).read()).groups())
deleted = sum(int(n) for n in re.findall(r"deleted=(\d+)", open(sys.argv[1]).read()))
print(f"in use: {before} -> {after} bytes")
# The second pass deletes what the first found (the grace period); the volume's 2 x 32 MiB go.
sys.exit(0 if before - after >= 2 * (32 << 20) else 1)
PY
}
bad_input() { python3 Tests/interop/nbd_bad_input.py 127.0.0.1 "$PORT" scratch --connections 600 --seed 7; }
pipelined() { python3 Tests/interop/nbd_pipeline.py 127.0.0.1 "$PORT" pipe | tee "$WORK/pipe.log"; }
never_reads() { python3 Tests/interop/nbd_pipeline.py 127.0.0.1 "$PORT" pipe --never-read 10 --pid "$PID" | tee "$WORK/pipe.log"; }

head -c $((256 << 20)) /dev/urandom >"$WORK/in.raw"
start
check "nbdinfo reports the volume size" size_is big $((256 << 20))
check "nbdinfo --list lists the volumes" lists fio
check "the admin socket is owner-only (mode 600)" test "$(stat -c %a "$WORK/data/admin.sock")" = 600
check "nbdcopy 256 MiB of random data in (with flush)" copy_in
check "nbdcopy back out is byte-identical" copy_out_same
check "qemu-img compare sees identical images" qemu_same
check "fio nbd engine: random 4k writes verified with crc32c" fio_write_verify
check "600 connections of malformed traffic; well-formed clients keep working" bad_input
check "100,000 FUA writes and FLUSHes pipelined before any reply is read: every reply correct" pipelined
sed 's/^/        /' "$WORK/pipe.log" 2>/dev/null || true
check "a client that never reads its replies: the server stops reading, its RSS stays bounded" never_reads
sed 's/^/        /' "$WORK/pipe.log" 2>/dev/null || true
check "after the malformed traffic: earlier nbdcopy data intact" copy_out_same
check "after the malformed traffic: earlier fio data verifies" fio_verify_only
check "torus volume create, list, info, delete against the running torus up" volume_cmds
check "a cluster too small for its data: FLUSH fails with ENOSPC, serving goes on, shutdown says so" enospc_clean
check "torus gc reclaims a deleted volume's blocks (2 x 32 MiB)" gc_reclaims_deleted_volume
check "scrub finds a copy rotted on disk, the collector copies it back from its replica" scrub_repairs_rot
check "after garbage collection: nbdcopy data intact" copy_out_same
check "after garbage collection: fio data verifies" fio_verify_only

stop KILL
UP_EXTRA=(--peer-over-tcp)  # the same checks over the peer protocol's wire path
start
check "after SIGKILL and restart: nbdcopy out is byte-identical" copy_out_same
check "after SIGKILL and restart: qemu-img compare" qemu_same
check "after SIGKILL and restart: fio verifies its flushed writes" fio_verify_only
check "over the peer protocol (--peer-over-tcp): fio random 4k writes verified with crc32c" fio_write_verify

stop INT
UP_EXTRA=()
check "a restart with another --nodes is refused, naming the right count" wrong_nodes
start
check "after SIGINT and restart: nbdcopy out is byte-identical" copy_out_same

echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
