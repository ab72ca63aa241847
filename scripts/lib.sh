# Shared shell helpers of scripts/ and Benchmarks/ (source it; it defines functions only).

# install_missing PKG...: apt-get installs the Debian packages that are not installed yet.
install_missing() {
    local need=() p
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
    [ ${#need[@]} -eq 0 ] && return 0
    echo "== installing ${need[*]}"
    local sudo=
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}"
}

# free_port: prints a TCP port on 127.0.0.1 that is free now. It is drawn below the kernel's
# ephemeral range (ip_local_port_range, 32768- by default), so no outgoing connection of another
# test can take it before its server binds it; only another listener could.
free_port() {
    /usr/bin/python3 -c '
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
top = low if low > 12000 else 65536
for _ in range(200):
    port = random.randrange(10000, top)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass
    finally:
        s.close()
else:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])
'
}

# start_etcd DIR [ETCD_ARG...]: starts a throwaway single-member etcd with its data and log in
# DIR, waits until it answers, and sets ETCD_PID, ETCD_CLIENT_URL (SCHEME://127.0.0.1:PORT) and
# ETCD_URL (etcd://127.0.0.1:PORT). Extra arguments go to etcd; ETCD_SCHEME=https serves
# clients over TLS, and the array ETCD_CURL_ARGS (certificates) is what the readiness probe
# passes to curl. Ports come from ETCD_CLIENT_PORT / ETCD_PEER_PORT when set (a restart),
# otherwise free ones are picked; a port picked here can be taken by another process before
# etcd binds it, so an etcd that exits with "address already in use" is started again (on
# new ports, or after a pause on the same ones), up to five times.
start_etcd() {
    local dir=$1 client peer attempt logged fixed=${ETCD_CLIENT_PORT:-} scheme=${ETCD_SCHEME:-http}
    shift
    for attempt in 1 2 3 4 5; do
        client=${ETCD_CLIENT_PORT:-$(free_port)}; peer=${ETCD_PEER_PORT:-$(free_port)}
        logged=$(stat -c %s "$dir/etcd.log" 2>/dev/null || echo 0)
        etcd --name torus-test --data-dir "$dir/etcd" \
            --listen-client-urls "$scheme://127.0.0.1:$client" --advertise-client-urls "$scheme://127.0.0.1:$client" \
            --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "torus-test=http://127.0.0.1:$peer" "$@" >>"$dir/etcd.log" 2>&1 &
        ETCD_PID=$!
        for _ in $(seq 1 50); do
            if curl -sf --max-time 1 "${ETCD_CURL_ARGS[@]}" "$scheme://127.0.0.1:$client/version" >/dev/null 2>&1; then
                ETCD_CLIENT_PORT=$client; ETCD_PEER_PORT=$peer
                ETCD_CLIENT_URL="$scheme://127.0.0.1:$client"
                ETCD_URL="etcd://127.0.0.1:$client"
                return 0
            fi
            kill -0 "$ETCD_PID" 2>/dev/null || break  # etcd exited
            sleep 0.2
        done
        kill -TERM "$ETCD_PID" 2>/dev/null; wait "$ETCD_PID" 2>/dev/null
        tail -c +$((logged + 1)) "$dir/etcd.log" | grep -q "address already in use" || break
        echo "etcd could not bind 127.0.0.1:$client/$peer (taken by another process); starting it again" >&2
        # A first start that failed to bind wrote no data yet (etcd binds before it bootstraps);
        # a restart keeps its ports and data and waits for the ports.
        if [ -z "$fixed" ]; then rm -rf "$dir/etcd"; else sleep 1; fi
    done
    echo "etcd did not start; its log: $(tail -5 "$dir/etcd.log")"
    return 1
}
ETCD_CURL_ARGS=()

# restart_etcd DIR: stops the etcd of start_etcd (SIGTERM) and starts it again on the same
# ports and data; sets ETCD_PID.
restart_etcd() {
    kill -TERM "$ETCD_PID" 2>/dev/null; wait "$ETCD_PID" 2>/dev/null
    start_etcd "$1"
}

# stop_in_reverse PID...: SIGTERM each process, last started first (the NBD server flushes to
# nodes that are still up, nodes leave before etcd), each given 10 s before SIGKILL.
stop_in_reverse() {
    local i p
    for (( i = $#; i >= 1; i-- )); do
        p=${!i}
        kill -TERM "$p" 2>/dev/null || continue
        for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}

# e2e_begin NAME: the common start of an end-to-end script: builds the release torus (BIN) and
# torus-fuse beside it (what `torus attach` runs),
# makes a scratch directory (WORK, removed at exit unless KEEP is set), and defines ok / bad
# (counted in pass / fail) and a cleanup that SIGKILLs every pid added to PIDS.
e2e_begin() {
    swift build -c release --product torus >/dev/null && swift build -c release --product torus-fuse >/dev/null \
        || { echo "$1: build failed"; exit 1; }
    BIN=$PWD/.build/release/torus
    WORK=$(mktemp -d "/tmp/torus-$1.XXXXXX")
    PIDS=()
    PEER_TLS=()
    pass=0; fail=0
    trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT
}
ok() { echo "ok      $*"; pass=$((pass + 1)); }
bad() { echo "FAIL    $*"; fail=$((fail + 1)); }
seconds_until() {  # TIMEOUT COMMAND...: prints the seconds until COMMAND succeeds, fails after TIMEOUT
    local limit=$(( $1 * 1000 )); shift; local start; start=$(date +%s%3N)
    while ! "$@" >/dev/null 2>&1; do
        [ $(( $(date +%s%3N) - start )) -gt $limit ] && return 1
        sleep 0.1
    done
    local ms=$(( $(date +%s%3N) - start ))
    printf '%d.%02d' $((ms / 1000)) $(( (ms % 1000) / 10 ))
}

# start_node I: a `torus node` of 1 GiB with its data in WORK/node-I and its log in
# WORK/node-I.log, registered in the etcd at META; its pid goes to NODE_PIDS[I] and PIDS.
# The node binds a port of its own choosing (port 0) and registers it: a port picked here and
# bound later could be taken in between (a CI run once lost its fourth node, most likely so).
start_node() {
    "$BIN" node --metadata "$META" --data-dir "$WORK/node-$1" --size 1GiB --listen "127.0.0.1:0" "${PEER_TLS[@]}" \
        >>"$WORK/node-$1.log" 2>&1 &
    NODE_PIDS[$1]=$!; PIDS+=($!); disown $!
}
# alive N: true when `torus peer list` shows N nodes alive.
alive() { [ "$("$BIN" peer list --metadata "$META" 2>/dev/null | grep -c alive)" = "$1" ]; }

# etcd_cluster NODES REPLICATION: after e2e_begin, an etcd in WORK (META), `torus init --tls` at
# REPLICATION (peers speak mutual TLS; the array PEER_TLS holds the `--peer-tls DIR` every node
# and `torus nbd serve` needs) and NODES `torus node`s, checked with ok / bad.
etcd_cluster() {
    start_etcd "$WORK" || exit 1
    PIDS+=("$ETCD_PID")
    META=$ETCD_URL
    PEER_TLS=(--peer-tls "$WORK/peer-tls")
    "$BIN" init --metadata "$META" --replication "$2" --tls "$WORK/peer-tls" >"$WORK/init.log" 2>&1 \
        && ok "torus init --tls (replication $2, peers over mutual TLS)" || bad "torus init: $(cat "$WORK/init.log")"
    declare -g -a NODE_PIDS
    local i
    for i in $(seq 1 "$1"); do start_node "$i"; done
    seconds_until 20 alive "$1" >/dev/null && ok "$1 nodes registered and alive" \
        || bad "peer list: $("$BIN" peer list --metadata "$META" 2>&1)
$(for i in $(seq 1 "$1"); do echo "node $i log:"; tail -5 "$WORK/node-$i.log"; done)"
}

# fio ARG...: runs fio in a throwaway directory, so the verify-state files it saves
# (JOB-N-verify.state) never land in the caller's directory. Paths in the arguments must be absolute.
fio() {
    local dir rc=0
    dir=$(mktemp -d /tmp/torus-fio.XXXXXX)
    (cd "$dir" && command fio "$@") || rc=$?
    rm -rf "$dir"
    return $rc
}

# bench_cluster BIN WORK: the deployed shape the benchmarks measure: an etcd, `torus init`
# (replication 2), three `torus node` of 4 GiB (zones z1-z3), a 1 GiB volume `bench` and
# `torus nbd serve --cache-size 128MiB` on a free port (BENCH_NBD_PORT); pids go to PIDS.
# Peers speak plaintext, or mutual TLS with BENCH_PEER_TLS=1.
bench_cluster() {
    local bin=$1 work=$2 i
    local -a tls=(--insecure) peer_tls=()
    if [ -n "${BENCH_PEER_TLS:-}" ]; then tls=(--tls "$work/peer-tls"); peer_tls=(--peer-tls "$work/peer-tls"); fi
    start_etcd "$work" >/dev/null || return 1
    PIDS+=("$ETCD_PID")
    META=$ETCD_URL
    "$bin" init --metadata "$META" --replication 2 "${tls[@]}" >/dev/null
    for i in 1 2 3; do
        "$bin" node --metadata "$META" --data-dir "$work/node-$i" --size 4GiB --listen 127.0.0.1:0 --zone "z$i" "${peer_tls[@]}" \
            >"$work/node-$i.log" 2>&1 &
        PIDS+=($!)
    done
    for _ in $(seq 1 100); do [ "$("$bin" peer list --metadata "$META" 2>/dev/null | grep -c alive)" = 3 ] && break; sleep 0.2; done
    "$bin" volume create bench 1GiB --metadata "$META" >/dev/null
    BENCH_NBD_PORT=$(free_port)
    "$bin" nbd serve --metadata "$META" --listen "127.0.0.1:$BENCH_NBD_PORT" --cache-size 128MiB "${peer_tls[@]}" >"$work/nbd.log" 2>&1 &
    PIDS+=($!)
}

# exports PORT NAME: the NBD server on PORT lists the export NAME.
exports() { nbdinfo --list "nbd://127.0.0.1:$1" 2>/dev/null | grep -q "export=\"$2\""; }

# pipeline_checks PORT EXPORT SERVER_PID WHAT: Tests/interop/nbd_pipeline.py against a server:
# 100,000 FUA writes and FLUSHes sent before any reply is read, then 10 s of writes never read
# (the server's RSS must stay bounded). Reports through ok/bad.
pipeline_checks() {
    local port=$1 export=$2 pid=$3 what=$4 log
    log=$(mktemp)
    if timeout 600 python3 Tests/interop/nbd_pipeline.py 127.0.0.1 "$port" "$export" >"$log" 2>&1; then
        ok "$what: $(head -1 "$log")"
    else
        bad "$what, pipelined FUA writes without reading replies: $(tail -3 "$log")"
    fi
    if timeout 120 python3 Tests/interop/nbd_pipeline.py 127.0.0.1 "$port" "$export" --never-read 10 --pid "$pid" >"$log" 2>&1; then
        ok "$what: $(tail -1 "$log")"
    else
        bad "$what, a client that never reads its replies: $(tail -3 "$log")"
    fi
    rm -f "$log"
}
