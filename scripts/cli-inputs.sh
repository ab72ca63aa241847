#!/usr/bin/env bash
# Bad input on every subcommand, against a running `torus up` and a cluster in etcd: each
# command must fail with a clear line ("Error: ..." from argument parsing, "torus: ...", or
# "error: ..." from a running `torus up`)
# and an exit status from 1 to 127, within 20 s. Never a trap, a hang or a success.
# Usage: bash scripts/cli-inputs.sh   (needs etcd-server; builds torus release). Run by test.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
e2e_begin cli
start_etcd "$WORK" || exit 1
PIDS+=("$ETCD_PID")
META=$ETCD_URL
"$BIN" init --metadata "$META" --replication 1 --insecure >/dev/null 2>&1 || bad "torus init"
UP_PORT=$(free_port)
"$BIN" up --data-dir "$WORK/up" --nodes 1 --replication 1 --disk-size 256MiB --volume v:16MiB \
    --nbd "127.0.0.1:$UP_PORT" >"$WORK/up.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do nbdinfo "nbd://127.0.0.1:$UP_PORT/v" >/dev/null 2>&1 && break; sleep 0.2; done

LONG=$(printf 'n%.0s' $(seq 1 10000))
checked=0
refused() {  # ARGS...: the command must fail cleanly
    local out rc
    out=$(timeout 20 "$BIN" "$@" 2>&1 </dev/null); rc=$?
    checked=$((checked + 1))
    local shown
    shown=$(printf '%q ' "$@" | cut -c1-120)
    if [ $rc -eq 124 ]; then bad "hung: torus $shown"
    elif [ $rc -eq 0 ]; then bad "accepted: torus $shown"
    elif [ $rc -ge 128 ]; then bad "exit $rc (signal): torus $shown: $(echo "$out" | grep -m1 -E 'crashed|failure|Fatal')"
    elif grep -qE 'Program crashed|Fatal error|Backtracing' <<<"$out"; then bad "crash text: torus $shown"
    elif ! grep -qE '^(Error: |torus: |error: )' <<<"$out"; then bad "no clear line: torus $shown: $(echo "$out" | head -2)"
    fi
}

"$BIN" volume create v 16MiB --metadata "$META" >/dev/null 2>&1 || bad "volume create v in etcd"
for target in "--data-dir $WORK/up" "--metadata $META"; do
    read -ra T <<<"$target"
    for name in "a b" "" "$LONG" "a/b" "../x" "ä" "-" "x;y"; do
        refused volume create "$name" 1GiB "${T[@]}"
        refused volume info "$name" "${T[@]}"
        refused volume resize "$name" 1GiB "${T[@]}"
        refused volume delete "$name" "${T[@]}"
    done
    for size in 0 -1 10XB 99999999TiB "" 1.5GiB 4095 KiB; do
        refused volume create ok1 "$size" "${T[@]}"
        refused volume resize v "$size" "${T[@]}"
    done
    refused volume create v 16MiB "${T[@]}"  # exists
    refused volume resize v 8MiB "${T[@]}"   # shrinking
    refused volume info no-such-volume "${T[@]}"
    refused volume delete no-such-volume "${T[@]}"
    for name in "a b" "" "$LONG" "a/b" "-x" ".x" "x@y" "ä"; do
        refused snapshot create v "$name" "${T[@]}"
        refused snapshot delete v "$name" "${T[@]}"
        refused snapshot rollback v "$name" "${T[@]}"
        refused volume clone "v@$name" c2 "${T[@]}"
    done
    refused volume clone v c2 "${T[@]}"                 # no @SNAP
    refused volume clone v@a@b c2 "${T[@]}"
    refused volume clone v@no-such c2 "${T[@]}"
    refused volume clone no-such@s c2 "${T[@]}"
    refused snapshot delete v no-such "${T[@]}"
    refused snapshot rollback v no-such "${T[@]}"
    refused snapshot list no-such-volume "${T[@]}"
    refused snapshot create no-such-volume s "${T[@]}"
    refused snapshot create v s --timeout 0 "${T[@]}"
done
# On torus up: a name taken twice, a clone onto an existing volume, deleting a volume with clones.
"$BIN" snapshot create v s1 --data-dir "$WORK/up" >/dev/null 2>&1 || bad "snapshot create on torus up"
refused snapshot create v s1 --data-dir "$WORK/up"
refused volume clone v@s1 v --data-dir "$WORK/up"
"$BIN" volume clone v@s1 vc --data-dir "$WORK/up" >/dev/null 2>&1 || bad "volume clone on torus up"
refused volume delete v --data-dir "$WORK/up"
# On etcd without a `torus nbd serve`: nobody answers, and the command says so.
refused snapshot create v s2 --metadata "$META" --timeout 2

NOWHERE=etcd://nowhere:1
for cmd in "volume list" "volume info v" "volume create x 1GiB" "volume resize v 2GiB" "volume delete v" \
           "snapshot list" "snapshot create v s" "snapshot delete v s" "volume clone v@s c" \
           "init --insecure" "peer list" "peer drain 1" "peer remove 1" "status" \
           "node --data-dir $WORK/n --size 256MiB" "nbd serve --listen 127.0.0.1:$(free_port)"; do
    read -ra C <<<"$cmd"
    refused "${C[@]}" --metadata "$NOWHERE"
done
refused volume list --metadata "not-a-url"
refused volume list --metadata "etcd://127.0.0.1:99999"
refused peer drain abc --metadata "$META"
refused peer remove -5 --metadata "$META"
refused peer drain 999 --metadata "$META"
refused node --metadata "$META" --data-dir "$WORK/n2" --size 0
refused node --metadata "$META" --data-dir "$WORK/n2" --size 1GiB --listen nohost
refused node --metadata "$META" --data-dir "$WORK/n2" --size 1GiB --zone "$LONG"
refused node --metadata "$META" --data-dir "$WORK/n2" --size 1GiB --zone "$(printf 'z1\nstate=draining')"
refused nbd serve --metadata "$META" --listen 127.0.0.1:99999
refused nbd serve --metadata "$META" --cache-size 1KiB
refused init --metadata "$META" --replication 0 --insecure
refused init --metadata "$META"                           # neither --tls nor --insecure
refused volume list --metadata "$META" --etcd-user ""
refused init --metadata "$META" --tls "$WORK/t" --insecure
refused init --metadata "$META" --tls "$WORK/t"           # a cluster exists
[ -e "$WORK/t" ] && bad "init --tls on an existing cluster wrote $WORK/t before refusing"
mkdir -p "$WORK/half" && touch "$WORK/half/ca-cert.pem"
refused init --metadata "$META" --tls "$WORK/half" --force  # half a TLS directory
"$BIN" certs ca --dir "$WORK/ca" >/dev/null && "$BIN" certs issue --ca "$WORK/ca" --role peer --out "$WORK/peer" >/dev/null \
    || bad "torus certs"
refused node --metadata "$META" --data-dir "$WORK/n3" --size 256MiB --peer-tls "$WORK/peer"   # the cluster is --insecure
refused nbd serve --metadata "$META" --listen 127.0.0.1:$(free_port) --peer-tls "$WORK/peer"
refused nbd serve --metadata "$META" --listen 127.0.0.1:$(free_port) --peer-tls "$WORK/nothing-here"
refused nbd serve --metadata "$META" --listen 127.0.0.1:$(free_port) --tls require
refused nbd serve --metadata "$META" --listen 127.0.0.1:$(free_port) --tls-cert "$WORK/peer/peer-cert.pem" --tls-key "$WORK/nothing"
refused certs ca --dir "$WORK/ca"                           # exists
refused certs ca --dir "$WORK/ca2" --days 0
refused certs issue --ca "$WORK/ca" --role server --out "$WORK/s"    # no --host
refused certs issue --ca "$WORK/ca" --role boss --out "$WORK/s"
refused certs issue --ca "$WORK/ca" --role server --host "a b" --out "$WORK/s"
refused certs issue --ca "$WORK/ca" --role server --host "1:2:3" --out "$WORK/s"
refused certs issue --ca "$WORK/nothing-here" --role client --out "$WORK/s"
refused certs issue --ca "$WORK/ca" --role peer --out "$WORK/peer"  # exists
refused up --data-dir "$WORK/up2" --tls allow
refused up --data-dir "$WORK/up2" --tls-key "$WORK/peer/peer-key.pem"
refused gc --data-dir "$WORK/nothing-here"
refused volume list --data-dir "$WORK/nothing-here"
refused up --data-dir "$WORK/up2" --nodes 0
refused up --data-dir "$WORK/up2" --volume "a b:1GiB"
refused up --data-dir "$WORK/up2" --volume "x:0"
refused up --data-dir "$WORK/up2" --volume ":1GiB"
refused up --data-dir "$WORK/up2" --replication 4 --nodes 3
refused up --data-dir "$WORK/up2" --block-size 3KiB
refused up --data-dir "$WORK/up2" --nbd "not an address"
refused no-such-subcommand

echo "cli: $checked commands with bad input, $fail not refused cleanly"
[ $fail -eq 0 ] && echo "ok      every bad input refused with a clear line and an exit status below 128"
[ $fail -eq 0 ]
