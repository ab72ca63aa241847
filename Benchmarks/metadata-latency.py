#!/usr/bin/python3
"""Latency of metadata operations on etcd's v3 JSON gateway (what EtcdClient sends, over one
kept-alive HTTP connection) and of NBD flushes (write 4 KiB + FLUSH: write-back, map pages,
and the head compare-and-swap in the metadata store).

Usage: metadata-latency.py ETCD_HOST:PORT NBD_URI [NBD_URI...]   (needs python3-libnbd)
Prints p50/p99/mean in milliseconds per operation.
"""
import base64
import http.client
import json
import os
import statistics
import sys
import time

import nbd

N = int(os.environ.get("N", "300"))


def b64(s):
    return base64.b64encode(s.encode()).decode()


def report(name, samples):
    samples = sorted(samples)
    p50 = samples[len(samples) // 2]
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"{name:<34} n={len(samples):<5} p50={p50 * 1000:7.2f} ms  p99={p99 * 1000:7.2f} ms  mean={statistics.mean(samples) * 1000:7.2f} ms")


def etcd(host):
    conn = http.client.HTTPConnection(host, timeout=5)

    def post(path, body):
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: HTTP {r.status} {data[:200]!r}")
        return json.loads(data)

    key = b64("/torus-bench/k")
    post("/v3/kv/put", {"key": key, "value": b64("0")})
    puts, txns, ranges = [], [], []
    for i in range(N):
        t = time.perf_counter()
        post("/v3/kv/put", {"key": key, "value": b64(str(i))})
        puts.append(time.perf_counter() - t)
    for i in range(N):
        rev = post("/v3/kv/range", {"key": key})["kvs"][0]["mod_revision"]
        t = time.perf_counter()
        r = post("/v3/kv/txn", {"compare": [{"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": rev}],
                                "success": [{"request_put": {"key": key, "value": b64("cas" + str(i))}}]})
        txns.append(time.perf_counter() - t)
        if not r.get("succeeded"):
            raise RuntimeError("CAS failed")
    for _ in range(N):
        t = time.perf_counter()
        post("/v3/kv/range", {"key": key})
        ranges.append(time.perf_counter() - t)
    post("/v3/kv/deleterange", {"key": b64("/torus-bench/"), "range_end": b64("/torus-bench0")})
    report("etcd put", puts)
    report("etcd txn (mod-revision CAS + put)", txns)
    report("etcd range", ranges)


def flushes(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    block = os.urandom(4096)
    samples = []
    for i in range(N):
        h.pwrite(block, (i * 4096 * 17) % (h.get_size() - 4096) // 4096 * 4096)
        t = time.perf_counter()
        h.flush()
        samples.append(time.perf_counter() - t)
    h.shutdown()
    report("NBD flush after a 4k write", samples)


if __name__ == "__main__":
    etcd(sys.argv[1])
    for uri in sys.argv[2:]:
        print(uri)
        flushes(uri)
