#!/usr/bin/env python3
"""Records what real NBD clients send: a TCP proxy that forwards to a server and writes each
connection's client-to-server bytes (the first MAX bytes) to OUTDIR/NAME-N.bin. Used once to
build Tests/fuzz-corpus/nbd (docs/fuzzing.md).

Usage: nbd-capture.py LISTEN_PORT SERVER_PORT OUTDIR NAME [MAX_BYTES]   (serves until killed)
"""
import os
import socket
import sys
import threading


def pump(src, dst, record=None, limit=0):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if record is not None and len(record) < limit:
                record.extend(data[:limit - len(record)])
            dst.sendall(data)
    except OSError:
        pass
    for s in (src, dst):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def main():
    listen, server, outdir, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    limit = int(sys.argv[5]) if len(sys.argv) > 5 else 65536
    os.makedirs(outdir, exist_ok=True)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", listen))
    ls.listen(16)
    n = 0
    while True:
        client, _ = ls.accept()
        upstream = socket.create_connection(("127.0.0.1", server))
        n += 1
        record = bytearray()
        path = os.path.join(outdir, f"{name}-{n}.bin")

        def run(c=client, u=upstream, r=record, p=path):
            back = threading.Thread(target=pump, args=(u, c))
            back.start()
            pump(c, u, r, limit)
            back.join()
            with open(p, "wb") as f:
                f.write(r)

        threading.Thread(target=run, daemon=True).start()


if __name__ == "__main__":
    main()
