"""Fixtures of the gRPC API tests: stubs generated from proto/ and a `torus up --grpc` server.

Run by scripts/api-test.sh (which builds torus with the GRPC trait and sets TORUS_BIN).
"""
import os, shutil, signal, subprocess, sys, tempfile, time

import grpc
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "Tests"))
from protostubs import free_port, generate  # noqa: E402

generate(*sorted(f"torus/v1/{f}" for f in os.listdir(os.path.join(ROOT, "proto", "torus", "v1"))))
from torus.v1 import blocks_pb2, blocks_pb2_grpc, cluster_pb2, cluster_pb2_grpc  # noqa: E402
from torus.v1 import snapshots_pb2, snapshots_pb2_grpc, volumes_pb2, volumes_pb2_grpc  # noqa: E402


class Server:
    """A `torus up` with the gRPC API on loopback; restartable after a SIGKILL."""

    def __init__(self, extra=()):
        self.bin = os.environ.get("TORUS_BIN", os.path.join(ROOT, ".build-grpc", "release", "torus"))
        self.dir = tempfile.mkdtemp(prefix="torus-api.")
        self.port = free_port()
        self.extra = list(extra)
        self.proc = None
        self.start()

    def start(self):
        log = open(os.path.join(self.dir, "up.log"), "ab")
        self.proc = subprocess.Popen(
            [self.bin, "up", "--data-dir", os.path.join(self.dir, "data"), "--nodes", "3", "--replication", "2",
             "--nbd", f"127.0.0.1:{free_port()}", "--grpc", f"127.0.0.1:{self.port}", "--volume", "v0:64MiB",
             "--gc-interval", "2s", "--gc-grace", "500ms", *self.extra],
            stdout=log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}", options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])
        deadline = time.time() + 60
        while True:
            try:
                cluster_pb2_grpc.ClusterServiceStub(self.channel).GetStatus(cluster_pb2.GetStatusRequest(), timeout=2)
                break
            except grpc.RpcError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("torus up did not serve the API:\n" + self.log())
                time.sleep(0.2)
        self.volumes = volumes_pb2_grpc.VolumeServiceStub(self.channel)
        self.snapshots = snapshots_pb2_grpc.SnapshotServiceStub(self.channel)
        self.cluster = cluster_pb2_grpc.ClusterServiceStub(self.channel)
        self.blocks = blocks_pb2_grpc.BlockServiceStub(self.channel)

    def log(self):
        with open(os.path.join(self.dir, "up.log"), errors="replace") as f:
            return f.read()[-4000:]

    def kill(self, sig=signal.SIGKILL):
        self.channel.close()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a shutdown flush that cannot finish (full nodes)
            self.proc.kill()
            self.proc.wait(timeout=60)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.kill(signal.SIGTERM)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()
