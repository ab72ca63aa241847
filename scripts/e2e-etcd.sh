#!/usr/bin/env bash
# End-to-end test of a multi-process cluster on a real etcd: etcd + `torus init` + 3 `torus node`
# + `torus nbd serve` on loopback, driven by real NBD clients. Run by scripts/test.sh.
# Usage: bash scripts/e2e-etcd.sh   (needs etcd-server, libnbd-bin, fio; builds torus release)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin e2e
start_etcd "$WORK" || exit 1
PIDS+=("$ETCD_PID")
META=$ETCD_URL

"$BIN" init --metadata "$META" --replication 2 --insecure >"$WORK/init.log" 2>&1 && ok "torus init --insecure" || bad "torus init: $(cat "$WORK/init.log")"
"$BIN" init --metadata "$META" --insecure >"$WORK/init2.log" 2>&1 && bad "a second init was accepted" \
    || { grep -q "already holds a cluster" "$WORK/init2.log" && ok "a second init is refused" || bad "second init: $(cat "$WORK/init2.log")"; }

declare -a NODE_PIDS NODE_PORTS
start_node() {  # index
    "$BIN" node --metadata "$META" --data-dir "$WORK/node-$1" --size 1GiB --listen "127.0.0.1:${NODE_PORTS[$1]}" \
        --zone "z$1" >>"$WORK/node-$1.log" 2>&1 &
    NODE_PIDS[$1]=$!; PIDS+=($!)
}
for i in 1 2 3; do NODE_PORTS[$i]=$(free_port); start_node "$i"; done
for _ in $(seq 1 50); do [ "$("$BIN" peer list --metadata "$META" 2>/dev/null | grep -c alive)" = 3 ] && break; sleep 0.2; done
[ "$("$BIN" peer list --metadata "$META" | grep -c alive)" = 3 ] && ok "three nodes registered and alive" \
    || bad "peer list: $("$BIN" peer list --metadata "$META" 2>&1)"

"$BIN" volume create v1 256MiB --metadata "$META" >"$WORK/create.log" 2>&1 && ok "volume create against etcd" \
    || bad "volume create: $(cat "$WORK/create.log")"
NBD_PORT=$(free_port)
start_server() {
    "$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$NBD_PORT" >>"$WORK/nbd.log" 2>&1 &
    SERVER=$!; PIDS+=($!)
    for _ in $(seq 1 100); do nbdinfo "nbd://127.0.0.1:$NBD_PORT/v1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}
start_server && ok "torus nbd serve exports v1" || bad "nbd serve did not come up: $(tail -5 "$WORK/nbd.log")"
URI="nbd://127.0.0.1:$NBD_PORT/v1"

head -c $((64 << 20)) /dev/urandom >"$WORK/in.img"
nbdcopy --flush "$WORK/in.img" "$URI" && nbdcopy "$URI" "$WORK/out.img" && cmp -n $((64 << 20)) "$WORK/in.img" "$WORK/out.img" \
    && ok "nbdcopy 64 MiB in and out, byte-identical" || bad "nbdcopy round trip"

# A client that pipelines FUA writes and FLUSHes without reading replies is slowed, never cut off.
"$BIN" volume create pipe 128MiB --metadata "$META" >/dev/null 2>&1
t=$(seconds_until 10 exports "$NBD_PORT" pipe) || true
pipeline_checks "$NBD_PORT" pipe "$SERVER" "torus nbd serve"
"$BIN" volume delete pipe --metadata "$META" >/dev/null 2>&1

# fio writes with verify while one node is SIGKILLed; the verify read must pass.
fio --name=w --ioengine=nbd --uri="$URI" --rw=write --bs=64k --iodepth=8 --size=96m --offset=128m \
    --verify=crc32c --do_verify=0 --end_fsync=1 --output="$WORK/fio-w.txt" >/dev/null 2>&1 &
FIO=$!
sleep 1; kill -9 "${NODE_PIDS[2]}"
wait $FIO && ok "fio write while node 2 is SIGKILLed" || bad "fio write: $(grep -i err "$WORK/fio-w.txt" | head -3)"
fio --name=w --ioengine=nbd --uri="$URI" --rw=write --bs=64k --iodepth=8 --size=96m --offset=128m \
    --verify=crc32c --verify_only --output="$WORK/fio-v.txt" >/dev/null 2>&1 \
    && ok "fio verify with node 2 down" || bad "fio verify: $(grep -i err "$WORK/fio-v.txt" | head -3)"
start_node 2
for _ in $(seq 1 50); do [ "$("$BIN" peer list --metadata "$META" 2>/dev/null | grep -c alive)" = 3 ] && break; sleep 0.2; done
[ "$("$BIN" peer list --metadata "$META" | grep -c alive)" = 3 ] && ok "node 2 restarts and rejoins" || bad "node 2 did not rejoin"

# The NBD server is SIGKILLed; a second one takes the volume after the lease TTL; flushed data intact.
kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null
start_server && nbdcopy "$URI" "$WORK/out2.img" && cmp -n $((64 << 20)) "$WORK/in.img" "$WORK/out2.img" \
    && ok "after SIGKILL of the NBD server, a new one serves every flushed byte" || bad "takeover after SIGKILL"
fio --name=w --ioengine=nbd --uri="$URI" --rw=write --bs=64k --iodepth=8 --size=96m --offset=128m \
    --verify=crc32c --verify_only --output="$WORK/fio-v2.txt" >/dev/null 2>&1 \
    && ok "after the takeover, fio verifies its flushed writes" || bad "fio verify after takeover: $(grep -i err "$WORK/fio-v2.txt" | head -3)"

# A paused server loses its lease; a second one takes over; the resumed one is fenced.
B_PORT=$(free_port)
"$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$B_PORT" >>"$WORK/nbd-b.log" 2>&1 &
SERVER_B=$!; PIDS+=($!)
for _ in $(seq 1 100); do nbdinfo --list "nbd://127.0.0.1:$B_PORT" >/dev/null 2>&1 && break; sleep 0.2; done
if /usr/bin/python3 Tests/interop/fence_takeover.py "$URI" "$SERVER" "nbd://127.0.0.1:$B_PORT/v1" 10 >"$WORK/fence.log" 2>&1; then
    ok "SIGSTOP past the lease: the second server takes over, the resumed one is fenced, none of its writes show"
else
    bad "fencing: $(grep -E 'FAIL|Error|error' "$WORK/fence.log" | tail -3)"
fi
kill -9 "$SERVER_B" 2>/dev/null

# With etcd stopped, FLUSHes go on (the commit log) until the lease is due, then fail; when it
# is back, service resumes.
if /usr/bin/python3 Tests/interop/etcd_outage.py "$URI" "$ETCD_PID" >"$WORK/outage.log" 2>&1; then
    ok "etcd stopped: $(grep -o '[0-9]* FLUSHes succeeded (the last after [0-9.]* s), then one failed after [0-9.]* s' "$WORK/outage.log" | head -1); back: service resumes without restarts"
else
    bad "etcd outage: $(grep -E 'FAIL|Error' "$WORK/outage.log" | tail -2)"
fi

# The servers follow volumes through an etcd watch: create, resize, delete (also after an
# etcd restart, which breaks the watch streams).
no_export() { ! exports "$1" "$2"; }
size_is() { [ "$(nbdinfo --size "nbd://127.0.0.1:$1/$2" 2>/dev/null)" = "$3" ]; }
RO_PORT=$(free_port)
"$BIN" nbd serve --metadata "$META" --listen "127.0.0.1:$RO_PORT" --read-only >>"$WORK/nbd-ro.log" 2>&1 &
RO=$!; PIDS+=($!)
"$BIN" volume create v2 32MiB --metadata "$META" >/dev/null 2>&1
t=$(seconds_until 5 exports "$NBD_PORT" v2) && t2=$(seconds_until 5 exports "$RO_PORT" v2) \
    && ok "a volume created in etcd is exported by the writer after ${t}s and the read-only server after ${t2}s (watch)" \
    || bad "v2 not exported: $(tail -3 "$WORK/nbd.log")"
"$BIN" volume resize v2 64MiB --metadata "$META" >"$WORK/resize.log" 2>&1 \
    && t=$(seconds_until 5 size_is "$NBD_PORT" v2 67108864) && t2=$(seconds_until 5 size_is "$RO_PORT" v2 67108864) \
    && ok "volume resize 32 -> 64 MiB: new connections see it after ${t}s (writer) and ${t2}s (read-only)" \
    || bad "resize: $(cat "$WORK/resize.log"; tail -3 "$WORK/nbd.log")"
"$BIN" volume resize v2 16MiB --metadata "$META" >"$WORK/shrink.log" 2>&1 && bad "shrinking was accepted" \
    || { grep -q "shrinking" "$WORK/shrink.log" && ok "shrinking a volume is refused" || bad "shrink: $(cat "$WORK/shrink.log")"; }
if /usr/bin/python3 Tests/interop/readonly_follow.py "nbd://127.0.0.1:$NBD_PORT/v2" "nbd://127.0.0.1:$RO_PORT/v2" $((40 << 20)) >"$WORK/ro.log" 2>&1; then
    ok "read-only server next to the writer: EPERM on write, follows flushed data, never shows unflushed data"
else
    bad "read-only: $(grep FAIL "$WORK/ro.log"; tail -2 "$WORK/ro.log")"
fi
restart_etcd "$WORK" || bad "etcd did not restart"
PIDS+=("$ETCD_PID")
"$BIN" volume create v3 16MiB --metadata "$META" >/dev/null 2>&1
t=$(seconds_until 10 exports "$NBD_PORT" v3) && t2=$(seconds_until 10 exports "$RO_PORT" v3) \
    && ok "after an etcd restart the watches resume: v3 exported after ${t}s and ${t2}s" \
    || bad "v3 not exported after the etcd restart: $(tail -3 "$WORK/nbd.log")"
"$BIN" volume delete v2 --metadata "$META" >/dev/null 2>&1
t=$(seconds_until 5 no_export "$NBD_PORT" v2) && t2=$(seconds_until 5 no_export "$RO_PORT" v2) \
    && ok "a deleted volume stops being exported after ${t}s and ${t2}s" || bad "v2 still exported after delete"
"$BIN" status --metadata "$META" >"$WORK/status.log" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "health: OK" "$WORK/status.log" && [ "$(grep -c " alive " "$WORK/status.log")" = 3 ] \
    && grep -q "v1: 256.0 MiB, open for writing" "$WORK/status.log" \
    && ok "torus status: 3 nodes alive with usage, volumes, health OK" || bad "status (rc $rc): $(cat "$WORK/status.log")"
kill -9 "$RO" 2>/dev/null

# The keys in etcd follow docs/metadata.md: every key matches a documented pattern, and each
# kind of key this test made is there.
keys=$(ETCDCTL_API=3 etcdctl --endpoints "http://${ETCD_URL#etcd://}" get --prefix /torus/ --keys-only 2>"$WORK/etcdctl.err" | grep -v '^$')
undocumented=$(echo "$keys" | grep -Ev '^/torus/(cluster/(config|id)|next-node-id|next-volume-id|ring/[0-9]+|ring-version|nodes/[0-9]+/(alive|usage)|volumes/[A-Za-z0-9._-]+/(info|lock|epoch|head)|maintenance/status)$')
missing=""
for k in /torus/cluster/config /torus/cluster/id /torus/next-node-id /torus/next-volume-id /torus/ring/1 /torus/ring-version \
         /torus/nodes/1/alive /torus/nodes/1/usage /torus/volumes/v1/info /torus/volumes/v1/lock \
         /torus/volumes/v1/epoch /torus/volumes/v1/head; do
    echo "$keys" | grep -qx "$k" || missing="$missing $k"
done
[ -n "$keys" ] && [ -z "$undocumented" ] && [ -z "$missing" ] \
    && ok "etcdctl get --prefix /torus/ shows the documented layout ($(echo "$keys" | wc -l) keys)" \
    || bad "etcd layout: undocumented [$undocumented] missing [$missing] $(cat "$WORK/etcdctl.err")"

# With etcd unresponsive, every command fails within seconds and names the endpoint.
kill -STOP "$ETCD_PID"
slow=""; silent=""; worst=0
for cmd in "volume list" "volume info v1" "volume create v9 16MiB" "volume resize v1 512MiB" "volume delete v3" \
           "peer list" "status" "init --insecure" \
           "node --data-dir $WORK/node-x --size 256MiB" "nbd serve --listen 127.0.0.1:$(free_port)"; do
    start=$(date +%s)
    out=$(timeout 30 "$BIN" $cmd --metadata "$META" 2>&1); rc=$?
    took=$(( $(date +%s) - start )); [ $took -gt $worst ] && worst=$took
    if [ $rc -eq 0 ] || [ $took -gt 15 ]; then slow="$slow [$cmd: rc=$rc ${took}s]"; fi
    echo "$out" | grep -q "${ETCD_URL#etcd://}" || silent="$silent [$cmd: $(echo "$out" | tail -1)]"
done
kill -CONT "$ETCD_PID"
[ -z "$slow" ] && [ -z "$silent" ] \
    && ok "with etcd unresponsive, all 10 commands fail within ${worst}s naming the endpoint" \
    || bad "etcd unresponsive: too slow or succeeded:$slow; endpoint not named:$silent"

# A node that dies shows as DOWN, health DEGRADED (exit 2), once its lease expired.
kill -9 "${NODE_PIDS[3]}"
t=$(seconds_until 20 bash -c "\"$BIN\" status --metadata $META | grep -q 'health: DEGRADED'") \
    && { "$BIN" status --metadata "$META" >"$WORK/status2.log" 2>&1; [ $? -eq 2 ] && grep -q "DOWN" "$WORK/status2.log"; } \
    && ok "torus status shows node 3 DOWN and health DEGRADED (exit 2) ${t}s after its SIGKILL" \
    || bad "status after node loss: $(cat "$WORK/status2.log" 2>/dev/null)"

kill -INT "$SERVER"; wait "$SERVER" 2>/dev/null
echo "e2e: $pass passed, $fail failed"
[ $fail -eq 0 ]
