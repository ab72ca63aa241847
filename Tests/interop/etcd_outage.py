#!/usr/bin/python3
"""etcd outage end to end: with etcd stopped (SIGSTOP), FLUSHes through `torus nbd serve` go on
while the writer's lease can be trusted (they commit to the log on the storage nodes, not in
etcd), then fail: none hangs, and none succeeds past the lease (10 s TTL). Once etcd is back
(SIGCONT), writes and flushes work again without restarting anything, and read back.

Usage: etcd_outage.py NBD_URI ETCD_PID   (needs python3-libnbd)
"""
import os
import signal
import sys
import threading
import time

import nbd

uri, etcd_pid = sys.argv[1], int(sys.argv[2])
LEASE_TTL = 10


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"\x01" * 4096, 0)
h.flush()

result = {"ok": 0, "last_ok": None, "first_failure": None}


def flushes_during_outage(stopped_at):
    # One 4 KiB write + FLUSH every 100 ms until one fails (or 30 s pass).
    i = 0
    while time.time() - stopped_at < 30:
        i += 1
        try:
            h.pwrite(bytes([i % 250 + 2]) * 4096, 0)
            h.flush()
            result["ok"] += 1
            result["last_ok"] = time.time() - stopped_at
        except nbd.Error as e:
            result["first_failure"] = (time.time() - stopped_at, str(e).splitlines()[0])
            return
        time.sleep(0.1)


stopped_at = time.time()
os.kill(etcd_pid, signal.SIGSTOP)
try:
    worker = threading.Thread(target=flushes_during_outage, args=(stopped_at,), daemon=True)
    worker.start()
    worker.join(40)
finally:
    os.kill(etcd_pid, signal.SIGCONT)
if worker.is_alive():
    fail("a FLUSH with etcd stopped hung")
if result["first_failure"] is None:
    fail("FLUSHes with etcd stopped kept succeeding for 30 s: the lease is not enforced")
if result["ok"] == 0:
    fail("no FLUSH succeeded with etcd stopped: they should commit to the log until the lease is due")
if result["last_ok"] > LEASE_TTL:
    fail("a FLUSH succeeded %.1f s into the outage, past the %d s lease" % (result["last_ok"], LEASE_TTL))
print("ok: with etcd stopped, %d FLUSHes succeeded (the last after %.1f s), then one failed after %.1f s: %s"
      % (result["ok"], result["last_ok"], result["first_failure"][0], result["first_failure"][1]))

start = time.time()
while True:
    try:
        h2 = nbd.NBD()
        h2.connect_uri(uri)
        h2.pwrite(b"\x03" * 4096, 8192)
        h2.flush()
        if h2.pread(4096, 8192) != b"\x03" * 4096:
            fail("the write after the outage does not read back")
        break
    except nbd.Error as e:
        if time.time() - start > 40:
            fail("no write+flush succeeded within 40 s after etcd returned: %s" % e)
        time.sleep(1)
print("ok: etcd back: write+flush works again after %.1f s, nothing restarted" % (time.time() - start))
