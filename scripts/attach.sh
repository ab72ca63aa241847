#!/usr/bin/env bash
# `torus attach` / `torus detach` on a `torus up`, through torus-fuse + a loop device (the path
# of hosts without kernel NBD): a filesystem made, mounted, grown online after a resize; a snapshot
# attached read-only; and every bad input or fault the issue names refused with one line and
# nothing left half-attached (no state file, loop device, FUSE mount or torus-fuse process).
# Usage: bash scripts/attach.sh   (as root; needs fuse3, e2fsprogs, xfsprogs; run by scripts/test.sh)
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin attach
export TORUS_ATTACH_DIR="$WORK/attach"
PORT=$(free_port)
start_up() {
    "$BIN" up --data-dir "$WORK/up" --nbd "127.0.0.1:$PORT" --volume a1:256MiB --volume a2:64MiB >>"$WORK/up.log" 2>&1 &
    UP=$!; PIDS+=($!)
    seconds_until 30 nbdinfo "nbd://127.0.0.1:$PORT/a1" >/dev/null
}
start_up && ok "torus up serves a1 and a2" || bad "torus up: $(tail -5 "$WORK/up.log")"
A=(--nbd "127.0.0.1:$PORT")
mkdir -p "$WORK/m1" "$WORK/m2" "$WORK/busy"
# What is attached: state files, loop devices on our files, FUSE helpers for our port, mounts.
snapshot_state() {
    ls "$TORUS_ATTACH_DIR" 2>/dev/null; losetup -a | grep "$TORUS_ATTACH_DIR"; pgrep -f "(torus-fuse|nbdfuse).*127.0.0.1:$PORT"
    grep "$TORUS_ATTACH_DIR\|$WORK/m" /proc/mounts
}
clean() { [ -z "$(snapshot_state)" ]; }
refused() {  # WHAT EXPECTED-TEXT ARGS...: one clear line, status 1..127, nothing left behind
    local what=$1 want=$2; shift 2
    local out rc before
    before=$(snapshot_state)
    out=$(timeout 60 "$@" 2>&1); rc=$?
    if [ $rc -ge 1 ] && [ $rc -lt 128 ] && grep -qE "$want" <<<"$out" && [ "$(snapshot_state)" = "$before" ]; then
        ok "$what: $(grep -E "$want" <<<"$out" | head -1)"
    else bad "$what (rc $rc): $out; before: $before; after: $(snapshot_state)"; fi
}

dev=$("$BIN" attach a1 "${A[@]}" --fs ext4 --mount "$WORK/m1" 2>"$WORK/attach.err" | head -1)
[ -b "$dev" ] && mountpoint -q "$WORK/m1" && ok "attach a1 --fs ext4 --mount: $dev, ext4 mounted" || bad "attach: $(cat "$WORK/attach.err")"
head -c $((32 << 20)) /dev/urandom >"$WORK/data"
cp "$WORK/data" "$WORK/m1/data" && sync && ok "32 MiB written through the filesystem" || bad "write through the mount"
"$BIN" attach --list | grep -q "a1 $dev read-write via torus-fuse + loop .* ext4 at $WORK/m1" && ok "attach --list: $("$BIN" attach --list | head -1)" \
    || bad "attach --list: $("$BIN" attach --list)"
refused "a second attach of a1 for writing" "already attached for writing" "$BIN" attach a1 "${A[@]}"
"$BIN" snapshot create a1 s1 --data-dir "$WORK/up" >/dev/null 2>&1 || bad "snapshot create"
refused "a missing volume" "no export named 'nope'" "$BIN" attach nope "${A[@]}"
refused "a snapshot for writing" "attach it with --read-only" "$BIN" attach a1@s1 "${A[@]}"
refused "a mount point in use" "already a mount point" "$BIN" attach a2 "${A[@]}" --fs ext4 --mount "$WORK/m1"
refused "a mount point that is no directory" "not a directory" "$BIN" attach a2 "${A[@]}" --fs ext4 --mount "$WORK/data"
refused "--fs without --mount" "needs --mount" "$BIN" attach a2 "${A[@]}" --fs ext4
refused "an unknown filesystem" "ext4 or xfs" "$BIN" attach a2 "${A[@]}" --fs zfs --mount "$WORK/m2"
refused "a non-root user" "needs root" setpriv --reuid=65534 --regid=65534 --clear-groups "$BIN" attach a2 "${A[@]}"
# No loop device at all: a private /dev holding only null and fuse.
refused "no loop device free" "loop device" unshare -m sh -c "mount -t tmpfs none /dev && mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/fuse c 10 229 && exec $BIN attach a2 --nbd 127.0.0.1:$PORT"
# A snapshot, read-only, with its filesystem (replayed journal skipped: noload).
"$BIN" attach a1@s1 "${A[@]}" --read-only --mount "$WORK/m2" >"$WORK/ro.log" 2>&1 && cmp -s "$WORK/data" "$WORK/m2/data" \
    && ok "a1@s1 attached read-only and mounted: the file is there" || bad "snapshot attach: $(cat "$WORK/ro.log")"
touch "$WORK/m2/x" 2>/dev/null && bad "a read-only mount took a write" || ok "the snapshot's mount refuses writes"
"$BIN" detach "$WORK/m2" >/dev/null && ok "detach by mount point" || bad "detach a1@s1"
# Growing: `volume resize` grows the attached device online; ext4 grows online where the
# process has CAP_SYS_RESOURCE (this sandbox drops it), else at the next attach.
before=$(df -B1 --output=size "$WORK/m1" | tail -1)
dev=$("$BIN" attach --list | awk '$1 == "a1" { print $2 }')
"$BIN" volume resize a1 512MiB --data-dir "$WORK/up" >"$WORK/resize.log" 2>&1 && [ "$(blockdev --getsize64 "$dev")" = $((512 << 20)) ] \
    && ok "volume resize 256 -> 512 MiB grew the attached $dev online: $(tail -1 "$WORK/resize.log")" || bad "online device growth: $(cat "$WORK/resize.log")"
"$BIN" detach a1 >/dev/null && "$BIN" attach a1 "${A[@]}" --fs ext4 --mount "$WORK/m1" >/dev/null 2>&1 || bad "resize and attach again"
after=$(df -B1 --output=size "$WORK/m1" | tail -1)
[ "$after" -gt $((before * 3 / 2)) ] && cmp -s "$WORK/data" "$WORK/m1/data" \
    && ok "after volume resize 256 -> 512 MiB and attach again: the filesystem grew $((before >> 20)) -> $((after >> 20)) MiB, data intact" \
    || bad "growth: $before -> $after"
# Online, with the filesystem: a mounted xfs grows with its volume, data intact, no re-attach.
mkdir -p "$WORK/mx"
"$BIN" volume create x1 320MiB --data-dir "$WORK/up" >/dev/null && "$BIN" attach x1 "${A[@]}" --fs xfs --mount "$WORK/mx" >/dev/null 2>&1 \
    && cp "$WORK/data" "$WORK/mx/data" && sync || bad "attach x1 with xfs"
before=$(df -B1 --output=size "$WORK/mx" | tail -1)
"$BIN" volume resize x1 640MiB --data-dir "$WORK/up" >"$WORK/resize.log" 2>&1
after=$(df -B1 --output=size "$WORK/mx" | tail -1)
[ "$after" -gt $((before * 3 / 2)) ] && cmp -s "$WORK/data" "$WORK/mx/data" && mountpoint -q "$WORK/mx" \
    && ok "volume resize 320 -> 640 MiB of a mounted xfs: grown online $((before >> 20)) -> $((after >> 20)) MiB, data intact" \
    || bad "online xfs growth: $before -> $after: $(cat "$WORK/resize.log")"
refused "attach --grow of a volume not attached here" "not attached" "$BIN" attach --grow a2
"$BIN" detach x1 >/dev/null || bad "detach x1"
# The server dies under a mounted volume: detach still releases everything.
kill -9 "$UP"; wait "$UP" 2>/dev/null
timeout 120 "$BIN" detach a1 --force >"$WORK/dead.log" 2>&1 && clean && ok "detach after the server died releases the device: $(tail -1 "$WORK/dead.log")" \
    || bad "detach with a dead server: $(cat "$WORK/dead.log"); left: $(ls "$TORUS_ATTACH_DIR") $(losetup -a | grep "$TORUS_ATTACH_DIR")"
start_up || bad "torus up restart"
"$BIN" attach a1 "${A[@]}" --fs ext4 --mount "$WORK/m1" >/dev/null 2>&1 && cmp -s "$WORK/data" "$WORK/m1/data" \
    && ok "attached again after the restart: the file synced before is intact" || bad "data after the server's death"
"$BIN" detach a1 >/dev/null && clean && ok "detached; nothing left" || bad "final detach"
# Never formatted: a volume holding data that is no filesystem (a database on the raw device).
/usr/bin/python3 -c "import nbd, os; h = nbd.NBD(); h.connect_uri('nbd://127.0.0.1:$PORT/a2'); h.pwrite(os.urandom(1 << 20), 0); h.flush()" \
    || bad "writing raw data to a2 (python3-libnbd)"
refused "--fs on a volume that holds data but no filesystem" "holds data" "$BIN" attach a2 "${A[@]}" --fs ext4 --mount "$WORK/m2"
refused "detach of something never attached" "nothing attached" "$BIN" detach /dev/loop999
kill -INT "$UP"; wait "$UP" 2>/dev/null
echo "attach: $pass passed, $fail failed"
[ $fail -eq 0 ]
