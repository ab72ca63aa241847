#!/usr/bin/python3
"""A read-only `torus nbd serve` next to the writer: it refuses writes, shows what the writer
flushed within seconds, and never shows what the writer has not flushed.

Usage: readonly_follow.py WRITER_URI READER_URI OFFSET
Exit 0 when every check passes; prints one line per check."""
import os
import sys
import time

import nbd

writer_uri, reader_uri, base = sys.argv[1], sys.argv[2], int(sys.argv[3])
failures = 0


def check(ok, what):
    global failures
    print(("ok      " if ok else "FAIL    ") + what)
    if not ok:
        failures += 1


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def wait_for(reader, offset, expected, seconds):
    """Seconds until the reader shows `expected` at `offset`, or None."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if reader.pread(len(expected), offset) == expected:
            return time.monotonic() - start
        time.sleep(0.1)
    return None


w = connect(writer_uri)
r = connect(reader_uri)
check(r.is_read_only() and not w.is_read_only(), "the reader's export is read-only, the writer's is not")
try:
    r.pwrite(b"x" * 4096, base)
    check(False, "a write through the read-only export was accepted")
except nbd.Error as e:
    check(e.errnum == 1, f"a write through the read-only export fails with EPERM ({e.string})")

# Flushed data shows up on the reader.
first = os.urandom(1 << 20)
w.pwrite(first, base)
w.flush()
took = wait_for(r, base, first, 10)
check(took is not None, f"1 MiB flushed by the writer is read through the reader after {took if took is None else round(took, 2)} s")

# Unflushed data never shows; once flushed, it does (replacing the old version, which the
# writer deletes after its commit).
second = os.urandom(1 << 20)
w.pwrite(second, base)
deadline = time.monotonic() + 3
leaked = False
while time.monotonic() < deadline:
    if r.pread(len(second), base) != first:
        leaked = True
        break
    time.sleep(0.2)
check(not leaked, "for 3 s the reader shows the flushed version, never the unflushed overwrite")
w.flush()
took = wait_for(r, base, second, 10)
check(took is not None, f"after the flush the reader shows the overwrite after {took if took is None else round(took, 2)} s")
# A second, fresh reader connection agrees.
r2 = connect(reader_uri)
check(r2.pread(len(second), base) == second, "a new connection to the reader reads the same")
for h in (w, r, r2):
    h.shutdown()
sys.exit(1 if failures else 0)
