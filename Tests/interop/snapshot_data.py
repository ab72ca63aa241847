#!/usr/bin/env python3
"""Stamped data for the snapshot end-to-end test (scripts/e2e-snapshots.sh).

Every 4 KiB block holds (generation, block index) and a fill derived from both, so a read
shows exactly which write a block came from.

  fill URI GEN FIRST COUNT            write COUNT blocks from FIRST with generation GEN, flush
  verify URI FIRST:COUNT:GEN[,GEN]... each block of each range holds one of the generations
  during URI GEN HALF -- CMD...        write blocks [0, HALF) with GEN and flush; then run CMD
                                      (a snapshot) while writing [HALF, 2*HALF) with GEN; flush
  hold URI SECONDS                    keep a connection open (a volume in use)
"""
import struct
import subprocess
import sys
import threading
import time

import nbd

BLOCK = 4096
PER_WRITE = 16  # 64 KiB writes


def stamp(gen, idx):
    fill = struct.pack("<Q", (gen * 0x9E3779B97F4A7C15 + idx * 0xC2B2AE3D27D4EB4F) & 0xFFFFFFFFFFFFFFFF)
    return struct.pack("<QQ", gen, idx) + fill * ((BLOCK - 16) // 8)


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def write_range(h, gen, first, count):
    i = first
    while i < first + count:
        n = min(PER_WRITE, first + count - i)
        h.pwrite(b"".join(stamp(gen, j) for j in range(i, i + n)), i * BLOCK)
        i += n


def generation_of(data, idx):
    gen, got = struct.unpack_from("<QQ", data, 0)
    if gen == 0 and got == 0 and data == bytes(BLOCK):
        return 0
    if got != idx or data != stamp(gen, idx):
        return None
    return gen


def verify(uri, specs):
    h = connect(uri)
    bad = 0
    counts = {}
    for spec in specs:
        first, count, gens = spec.split(":")
        first, count = int(first), int(count)
        allowed = {int(g) for g in gens.split(",")}
        i = first
        while i < first + count:
            n = min(PER_WRITE * 16, first + count - i)
            data = h.pread(n * BLOCK, i * BLOCK)
            for k in range(n):
                g = generation_of(data[k * BLOCK:(k + 1) * BLOCK], i + k)
                counts[g] = counts.get(g, 0) + 1
                if g not in allowed:
                    if bad < 5:
                        print(f"block {i + k}: generation {g}, expected {sorted(allowed)}", file=sys.stderr)
                    bad += 1
            i += n
    summary = ", ".join(f"{'garbage' if g is None else f'gen {g}'}: {c}" for g, c in sorted(counts.items(), key=lambda x: (x[0] is None, x[0] or 0)))
    print(f"{summary}; {bad} wrong")
    return bad == 0


def during(uri, gen, half, cmd):
    h = connect(uri)
    write_range(h, gen, 0, half)
    h.flush()
    result = {}

    def snap():
        result["rc"] = subprocess.run(cmd, capture_output=True, text=True)

    t = threading.Thread(target=snap)
    t.start()
    written = 0
    i = half
    while i < 2 * half:
        n = min(PER_WRITE, 2 * half - i)
        h.pwrite(b"".join(stamp(gen, j) for j in range(i, i + n)), i * BLOCK)
        i += n
        written += n
    h.flush()
    t.join()
    r = result["rc"]
    print(f"snapshot command rc={r.returncode} while {written} blocks were written: {r.stdout.strip()} {r.stderr.strip()}")
    return r.returncode == 0


def main():
    mode, uri = sys.argv[1], sys.argv[2]
    if mode == "fill":
        h = connect(uri)
        write_range(h, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        h.flush()
        ok = True
    elif mode == "verify":
        ok = verify(uri, sys.argv[3:])
    elif mode == "during":
        sep = sys.argv.index("--")
        ok = during(uri, int(sys.argv[3]), int(sys.argv[4]), sys.argv[sep + 1:])
    elif mode == "hold":
        h = connect(uri)
        time.sleep(float(sys.argv[3]))
        ok = True
    else:
        print(__doc__)
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
