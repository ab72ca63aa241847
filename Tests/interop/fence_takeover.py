#!/usr/bin/python3
"""Fencing end to end: server A (pid) serves volume v1 and is paused (SIGSTOP) past its writer
lease; server B takes the volume over and writes; A is resumed (SIGCONT). A's later writes and
flushes must fail, and none of A's writes after the takeover may become visible through B.

Usage: fence_takeover.py A_URI A_PID B_URI LEASE_SECONDS
Needs python3-libnbd (Debian). Exits 0 when every check holds, printing what it checked.
"""
import os
import signal
import sys
import time

import nbd

a_uri, a_pid, b_uri, lease = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
X = b"\x11" * 4096  # written through A before the pause (flushed)
Y = b"\x22" * 4096  # written through B after the takeover (flushed)
Z = b"\x33" * 4096  # written through A after it resumes: must never be visible


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


try:
    a = connect(a_uri)
    a.pwrite(X, 0)
    a.pwrite(X, 8192)
    a.flush()
except nbd.Error as e:
    fail("server A did not take a flushed write before the pause: %s" % e)
os.kill(a_pid, signal.SIGSTOP)
try:
    # B was started before the pause and waits for the lock; it gets it once A's lease expires.
    deadline = time.time() + lease + 20
    b = None
    while time.time() < deadline:
        try:
            b = connect(b_uri)
            if b.pread(4096, 0) == X:
                break
        except nbd.Error:
            pass
        b = None
        time.sleep(0.5)
    if b is None:
        fail("server B did not take the volume over within %.0f s" % (lease + 20))
    b.pwrite(Y, 0)
    b.flush()
finally:
    os.kill(a_pid, signal.SIGCONT)

# A resumes with a stale writer: its writes may be accepted into its cache, but a flush must
# not succeed (the commit compares the epoch B bumped) and the connection may be closed.
a_failed = False
try:
    a.pwrite(Z, 0)
    a.pwrite(Z, 8192)
    a.flush()
except nbd.Error as e:
    a_failed = True
    print("ok: the resumed server refused:", str(e).splitlines()[0])
if not a_failed:
    fail("the resumed (fenced) server acknowledged a flush")

time.sleep(2)
b2 = connect(b_uri)
got0, got8 = b2.pread(4096, 0), b2.pread(4096, 8192)
if got0 != Y:
    fail("offset 0 through B is not B's write (first byte %r)" % got0[:1])
if got8 != X:
    fail("offset 8192 through B is not the last committed value X (first byte %r)" % got8[:1])
print("ok: B sees its own write and the last commit before the takeover; none of A's later writes")
