#!/usr/bin/env python3
"""Malformed NBD traffic against a running server, over many connections.

Each connection does one of: random bytes; a bad handshake (bad client flags, unknown
options, oversized option data, truncated option); or a good handshake followed by bad
requests (bad magic, unknown command, out-of-range I/O, oversized lengths, truncated write
payloads, random bytes), and unaligned writes whose bytes are read back and checked.
Between connections, a well-formed client checks that a known region still reads back
exactly. Every socket has a timeout: a hang is a failure, never a wait forever.

Usage: nbd_bad_input.py HOST PORT EXPORT [--connections N] [--seed S]
Exit 0 only if the server answered every well-formed request correctly and never hung.
"""
import argparse
import random
import socket
import struct
import sys

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_GO = 1, 2, 3, 7
REP_ACK, REP_INFO = 1, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH = 0, 1, 2, 3
FLAG_FUA = 1
TIMEOUT_S = 10


class Hang(Exception):
    pass


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except socket.timeout as e:
            raise Hang(f"no answer within {TIMEOUT_S}s") from e
        if not chunk:
            raise ConnectionError("closed by server")
        buf += chunk
    return buf


def connect(host, port):
    s = socket.create_connection((host, port), timeout=TIMEOUT_S)
    s.settimeout(TIMEOUT_S)
    return s


def greeting(s):
    magic, opt, flags = struct.unpack(">QQH", recv_exact(s, 18))
    assert magic == NBDMAGIC and opt == IHAVEOPT, "bad greeting"
    return flags


def go(s, export):
    """Fixed-newstyle handshake with NBD_OPT_GO; returns the export size."""
    greeting(s)
    s.sendall(struct.pack(">I", 3))  # FIXED_NEWSTYLE | NO_ZEROES
    name = export.encode()
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, len(data)) + data)
    size = None
    while True:
        magic, opt, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
        assert magic == REPLY_MAGIC, "bad option reply magic"
        payload = recv_exact(s, length)
        if rtype == REP_INFO and len(payload) >= 12 and struct.unpack(">H", payload[:2])[0] == 0:
            size = struct.unpack(">Q", payload[2:10])[0]
        elif rtype == REP_ACK:
            assert size is not None, "GO acknowledged without NBD_INFO_EXPORT"
            return size
        elif rtype & 0x80000000:
            raise AssertionError(f"GO refused with error reply {rtype:#x}")


def request(s, cmd, handle, offset, length, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, handle, offset, length) + payload)


def reply(s, expect_data=0):
    magic, error, handle = struct.unpack(">IIQ", recv_exact(s, 16))
    assert magic == SIMPLE_REPLY_MAGIC, f"bad reply magic {magic:#x}"
    data = recv_exact(s, expect_data) if error == 0 and expect_data else b""
    return error, handle, data


class Checker:
    def __init__(self, host, port, export, rnd):
        self.host, self.port, self.export, self.rnd = host, port, export, rnd
        self.known = bytes(rnd.getrandbits(8) for _ in range(64 * 1024))
        self.known_offset = 8 * 1024 * 1024 + 123  # unaligned on purpose
        self.checks = 0

    def write_known(self):
        s = connect(self.host, self.port)
        go(s, self.export)
        request(s, CMD_WRITE, 1, self.known_offset, len(self.known), FLAG_FUA, self.known)
        err, handle, _ = reply(s)
        assert err == 0 and handle == 1, f"well-formed FUA write failed: error {err}"
        request(s, CMD_DISC, 2, 0, 0)
        s.close()

    def verify_known(self):
        s = connect(self.host, self.port)
        go(s, self.export)
        request(s, CMD_READ, 7, self.known_offset, len(self.known))
        err, handle, data = reply(s, len(self.known))
        assert err == 0 and handle == 7, f"well-formed read failed: error {err}"
        assert data == self.known, "known region changed"
        request(s, CMD_DISC, 8, 0, 0)
        s.close()
        self.checks += 1


def bad_connection(host, port, export, size, rnd, scratch_base):
    """One connection of bad input. Returns a short label of what it did."""
    s = connect(host, port)
    try:
        kind = rnd.randrange(12)
        if kind == 0:
            s.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 600))))
            return "random bytes"
        greeting(s)
        if kind == 1:
            s.sendall(struct.pack(">I", rnd.choice([0, 0xFFFFFFFF, 4, 1 << 31])))
            return "bad client flags"
        s.sendall(struct.pack(">I", 3))
        if kind == 2:
            s.sendall(struct.pack(">QII", IHAVEOPT ^ 1, OPT_GO, 0))
            return "bad option magic"
        if kind == 3:
            opt = rnd.choice([0, 4, 5, 9, 10, 11, 0x7FFFFFFF, 12345])
            data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 40)))
            s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
            magic, _, rtype, length = struct.unpack(">QIII", recv_exact(s, 20))
            assert magic == REPLY_MAGIC and rtype & 0x80000000, "unknown option not refused"
            recv_exact(s, length)
            return "unknown option"
        if kind == 4:
            s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 1 << 30) + b"\0" * 100)
            return "oversized option length"
        if kind == 5:
            s.sendall(struct.pack(">QII", IHAVEOPT, OPT_GO, 40) + b"\0\0")
            return "truncated option"
        # A good handshake, then bad requests.
        s.close()
        s = connect(host, port)
        go(s, export)
        if kind == 6:
            request(s, CMD_READ, 1, size - 100, 4096)
            err, _, _ = reply(s)
            assert err != 0, "out-of-range read succeeded"
            request(s, CMD_WRITE, 2, size + 4096, 512, 0, b"x" * 512)
            err, _, _ = reply(s)
            assert err != 0, "out-of-range write succeeded"
            request(s, CMD_READ, 3, 0, 4096)  # the connection still works
            err, _, _ = reply(s, 4096)
            assert err == 0, "read after an error reply failed"
            return "out-of-range I/O"
        if kind == 7:
            request(s, rnd.choice([9, 10, 77, 0xFFFF]), 1, 0, 0)
            err, _, _ = reply(s)
            assert err != 0, "unknown command succeeded"
            request(s, CMD_FLUSH, 2, 0, 0)
            err, _, _ = reply(s)
            assert err == 0, "flush after an unknown command failed"
            return "unknown command"
        if kind == 8:
            request(s, CMD_READ, 1, 0, 64 << 20)
            err, _, _ = reply(s)
            assert err != 0, "64 MiB read accepted"
            return "oversized read"
        if kind == 9:
            s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0, CMD_WRITE, 1, 0, 4096) + b"y" * rnd.randrange(0, 4000))
            return "truncated write payload"
        if kind == 10:
            s.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC ^ 0x10, 0, CMD_READ, 1, 0, 512))
            return "bad request magic"
        # Unaligned writes in a scratch area must read back exactly.
        offset = scratch_base + rnd.randrange(0, 4 << 20)
        data = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 20000)))
        request(s, CMD_WRITE, 1, offset, len(data), rnd.choice([0, FLAG_FUA]), data)
        err, _, _ = reply(s)
        assert err == 0, f"unaligned write failed: error {err}"
        request(s, CMD_READ, 2, offset, len(data))
        err, _, got = reply(s, len(data))
        assert err == 0 and got == data, "unaligned write did not read back exactly"
        request(s, CMD_DISC, 3, 0, 0)
        return "unaligned write and read back"
    except (ConnectionError, BrokenPipeError, ConnectionResetError):
        return "closed by server"
    finally:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("export")
    ap.add_argument("--connections", type=int, default=600)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    checker = Checker(args.host, args.port, args.export, rnd)
    s = connect(args.host, args.port)
    size = go(s, args.export)
    s.close()
    checker.write_known()
    kinds = {}
    try:
        for i in range(args.connections):
            label = bad_connection(args.host, args.port, args.export, size, rnd, scratch_base=16 << 20)
            kinds[label] = kinds.get(label, 0) + 1
            if i % 25 == 0:
                checker.verify_known()
        checker.verify_known()
    except (Hang, AssertionError) as e:
        print(f"bad-input: FAILED after {sum(kinds.values())} connections: {e}")
        return 1
    for k in sorted(kinds):
        print(f"  {kinds[k]:4d}  {k}")
    print(f"bad-input: {args.connections} connections, {checker.checks} well-formed checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
