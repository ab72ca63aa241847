#!/usr/bin/env python3
"""A client that pipelines without reading its replies, as the NBD reference test client does.

Default mode: sends COUNT 1 KiB writes with FUA at distinct offsets, a FLUSH after every 100,
all before reading a single reply; then reads every reply (each handle exactly once, no
error) and reads the data back. The server must stop reading while it is saturated, never
disconnect.

--never-read SECONDS: sends FUA writes and 64 KiB reads for that long and never reads a reply, sampling the
server's RSS (--pid) meanwhile; it may grow by at most --rss-growth-mib. Then the client closes.

Usage: nbd_pipeline.py HOST PORT EXPORT [--count N] [--never-read S --pid PID --rss-growth-mib M]
Exit 0 only if every reply is correct (and the RSS stayed bounded).
"""
import argparse
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd_bad_input as nbd  # noqa: E402  (handshake and framing helpers)

SIZE = 1024
READ_SIZE = 64 << 10
FLUSH_EVERY = 100


def payload(i):
    return struct.pack(">Q", i) * (SIZE // 8)


def send_all(s, count):
    """The requests, in batches of 64 per sendall; returns the handles sent."""
    handles, batch = [], []
    for i in range(count):
        batch.append(struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, nbd.FLAG_FUA, nbd.CMD_WRITE, i, i * SIZE, SIZE) + payload(i))
        handles.append(i)
        if (i + 1) % FLUSH_EVERY == 0:
            h = count + i // FLUSH_EVERY
            batch.append(struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, 0, nbd.CMD_FLUSH, h, 0, 0))
            handles.append(h)
        if len(batch) >= 64:
            s.sendall(b"".join(batch))
            batch = []
    if batch:
        s.sendall(b"".join(batch))
    return handles


def pipeline(host, port, export, count):
    s = nbd.connect(host, port)
    s.settimeout(120)  # a server that stops reading for good hangs the sender: fail, not wait
    size = nbd.go(s, export)
    if count * SIZE > size:
        sys.exit(f"the export holds {size} bytes, {count} writes need {count * SIZE}")
    start = time.monotonic()
    handles = send_all(s, count)
    sent = time.monotonic()
    seen = set()
    for _ in handles:
        magic, error, handle = struct.unpack(">IIQ", nbd.recv_exact(s, 16))
        if magic != nbd.SIMPLE_REPLY_MAGIC or error != 0 or handle in seen or handle not in range(len(handles) + count):
            sys.exit(f"bad reply: magic {magic:#x} error {error} handle {handle} (seen before: {handle in seen})")
        seen.add(handle)
    done = time.monotonic()
    if seen != set(handles):
        sys.exit(f"{len(set(handles) - seen)} requests got no reply")
    print(f"{len(handles)} requests ({count} FUA writes of {SIZE} B, a FLUSH every {FLUSH_EVERY}) sent in "
          f"{sent - start:.1f} s without reading; every reply correct after {done - start:.1f} s")
    for i in list(range(0, count, max(1, count // 1000))) + [count - 1]:
        nbd.request(s, nbd.CMD_READ, 1 << 40 | i, i * SIZE, SIZE)
        magic, error, handle = struct.unpack(">IIQ", nbd.recv_exact(s, 16))
        data = nbd.recv_exact(s, SIZE) if error == 0 else b""
        if error != 0 or handle != 1 << 40 | i or data != payload(i):
            sys.exit(f"read back of write {i} is wrong (error {error})")
    print("the writes read back intact")
    nbd.request(s, nbd.CMD_DISC, 0, 0, 0)
    s.close()


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def never_read(host, port, export, seconds, pid, growth_max):
    """FUA writes and 64 KiB reads, never a reply read: the replies fill the socket buffers,
    then the server must stop reading rather than buffer them (or the requests) without end."""
    s = nbd.connect(host, port)
    size = nbd.go(s, export)
    s.settimeout(0.5)
    base, peak, sent, blocked = rss_mib(pid), 0.0, 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        i = sent % (size // READ_SIZE)
        if sent % 2 == 0:
            frame = struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, nbd.FLAG_FUA, nbd.CMD_WRITE, sent, i * READ_SIZE, SIZE) + payload(i)
        else:
            frame = struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, 0, nbd.CMD_READ, sent, i * READ_SIZE, READ_SIZE)
        try:
            s.sendall(frame)
            sent += 1
        except socket.timeout:
            blocked += 1  # the server stopped reading: what back-pressure should do
        except OSError as e:
            sys.exit(f"the server cut the connection after {sent} requests: {e}")
        if sent % 256 == 0 or blocked:
            peak = max(peak, rss_mib(pid))
    peak = max(peak, rss_mib(pid))
    s.close()
    print(f"sent {sent} requests (FUA writes of {SIZE} B and reads of {READ_SIZE >> 10} KiB) in {seconds:.0f} s "
          f"without reading a reply; the sender blocked {blocked} times; server RSS {base:.0f} MiB before, "
          f"{peak:.0f} MiB at most (growth allowed: {growth_max:.0f} MiB)")
    if peak - base > growth_max:
        sys.exit("the server's memory grew past the limit")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("export")
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--never-read", type=float, metavar="SECONDS")
    p.add_argument("--pid", type=int)
    p.add_argument("--rss-growth-mib", type=float, default=256)
    a = p.parse_args()
    if a.never_read:
        if not a.pid:
            sys.exit("--never-read needs --pid (the server whose memory to watch)")
        never_read(a.host, a.port, a.export, a.never_read, a.pid, a.rss_growth_mib)
    else:
        pipeline(a.host, a.port, a.export, a.count)


if __name__ == "__main__":
    main()
