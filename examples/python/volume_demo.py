#!/usr/bin/env python3
"""A Torus gRPC client in Python: create a volume, write, flush, read back, take a snapshot.

Usage: python3 examples/python/volume_demo.py [--address 127.0.0.1:9090] [--volume demo]
Needs: pip install grpcio grpcio-tools. The stubs are generated from proto/ when it starts.
The server: `torus up --grpc 127.0.0.1:9090` (a torus built with `swift build --traits GRPC`).
"""
import argparse, os, sys, tempfile

import grpc
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def load_stubs():
    out = tempfile.mkdtemp(prefix="torus-stubs.")
    import grpc_tools
    protos = [f"torus/v1/{f}" for f in sorted(os.listdir(os.path.join(ROOT, "proto/torus/v1")))]
    args = ["protoc", f"-I{ROOT}/proto", f"-I{os.path.dirname(grpc_tools.__file__)}/_proto",
            f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        sys.exit("cannot generate the stubs from proto/")
    sys.path.insert(0, out)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--address", default="127.0.0.1:9090")
    p.add_argument("--volume", default="demo")
    a = p.parse_args()
    load_stubs()
    from torus.v1 import blocks_pb2, blocks_pb2_grpc, snapshots_pb2, snapshots_pb2_grpc, volumes_pb2, volumes_pb2_grpc

    channel = grpc.insecure_channel(a.address)
    volumes = volumes_pb2_grpc.VolumeServiceStub(channel)
    blocks = blocks_pb2_grpc.BlockServiceStub(channel)
    snapshots = snapshots_pb2_grpc.SnapshotServiceStub(channel)

    vol = volumes.CreateVolume(volumes_pb2.CreateVolumeRequest(name=a.volume, size_bytes=64 << 20, if_missing=True), timeout=30).volume
    print(f"volume {vol.name}: {vol.size_bytes} bytes, replication {vol.replication}")
    data = b"hello from python, " * 200 + b"\0" * (4096 - 19 * 200 % 4096)
    w = blocks.Write(blocks_pb2.WriteRequest(volume=a.volume, offset=1 << 20, data=data), timeout=30)
    blocks.Flush(blocks_pb2.FlushRequest(volume=a.volume, expect_generation=w.generation), timeout=30)
    back = blocks.Read(blocks_pb2.ReadRequest(volume=a.volume, offset=1 << 20, length=len(data)), timeout=30).data
    if back != data:
        sys.exit("read back other bytes than written")
    print(f"wrote, flushed and read back {len(data)} bytes")
    name = f"py-{os.getpid()}"
    snap = snapshots.CreateSnapshot(snapshots_pb2.CreateSnapshotRequest(volume=a.volume, name=name), timeout=30).snapshot
    print(f"snapshot {snap.volume}@{snap.name} taken")
    same = blocks.Read(blocks_pb2.ReadRequest(volume=f"{a.volume}@{name}", offset=1 << 20, length=len(data)), timeout=30).data
    if same != data:
        sys.exit("the snapshot holds other bytes")
    print("the snapshot holds the same bytes: ok")


if __name__ == "__main__":
    try:
        main()
    except grpc.RpcError as e:
        sys.exit(f"torus: {e.code().name}: {e.details()}")
