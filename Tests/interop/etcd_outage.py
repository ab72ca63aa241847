#!/usr/bin/python3
"""etcd outage end to end: with etcd stopped (SIGSTOP), a FLUSH through `torus nbd serve` must
fail within seconds (never hang, never succeed: its commit needs etcd); once etcd is back
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


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


h = nbd.NBD()
h.connect_uri(uri)
h.pwrite(b"\x01" * 4096, 0)
h.flush()

result = {}


def flush_during_outage():
    t = time.time()
    try:
        h.pwrite(b"\x02" * 4096, 0)
        h.flush()
        result["outcome"] = "succeeded"
    except nbd.Error as e:
        result["outcome"] = "failed: " + str(e).splitlines()[0]
    result["seconds"] = time.time() - t


os.kill(etcd_pid, signal.SIGSTOP)
try:
    worker = threading.Thread(target=flush_during_outage, daemon=True)
    worker.start()
    worker.join(30)
finally:
    os.kill(etcd_pid, signal.SIGCONT)
if worker.is_alive():
    fail("a FLUSH with etcd stopped hung for more than 30 s")
if not result["outcome"].startswith("failed"):
    fail("a FLUSH with etcd stopped %s" % result["outcome"])
print("ok: with etcd stopped, FLUSH %s after %.1f s" % (result["outcome"], result["seconds"]))

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
