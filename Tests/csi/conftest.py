"""Fixtures of the CSI driver tests: stubs from proto/csi, a `torus up --grpc` and a
`torus csi --mode all` on a Unix socket. Run as root (real loop devices and mounts) by
scripts/csi-test.sh, which builds torus with the GRPC trait and sets TORUS_BIN."""
import os, shutil, signal, subprocess, sys, tempfile, time

import grpc
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "Tests"))
from protostubs import free_port, generate  # noqa: E402

generate("csi/v1/csi.proto")
from csi.v1 import csi_pb2, csi_pb2_grpc  # noqa: E402


class Driver:
    """torus up (volumes, NBD, gRPC API) and torus csi beside it, with stubs on the CSI socket."""

    def __init__(self):
        self.bin = os.environ.get("TORUS_BIN", os.path.join(ROOT, ".build-grpc", "release", "torus"))
        self.dir = tempfile.mkdtemp(prefix="torus-csi.")
        os.environ.setdefault("TORUS_ATTACH_DIR", os.path.join(self.dir, "attach"))
        self.api, self.nbd = free_port(), free_port()
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.up = subprocess.Popen(
            [self.bin, "up", "--data-dir", f"{self.dir}/data", "--nodes", "3", "--replication", "2", "--disk-size", "4GiB",
             "--nbd", f"127.0.0.1:{self.nbd}", "--grpc", f"127.0.0.1:{self.api}", "--gc-interval", "2s"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.socket = f"{self.dir}/csi.sock"
        self.csi = subprocess.Popen(
            [self.bin, "csi", "--endpoint", f"unix://{self.socket}", "--mode", "all", "--api", f"127.0.0.1:{self.api}",
             "--nbd", f"127.0.0.1:{self.nbd}", "--node-id", "test-node", "--zone", "z1"],
            stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ))
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.identity = csi_pb2_grpc.IdentityStub(self.channel)
        self.controller = csi_pb2_grpc.ControllerStub(self.channel)
        self.node = csi_pb2_grpc.NodeStub(self.channel)
        deadline = time.time() + 60
        while True:
            try:
                if self.identity.Probe(csi_pb2.ProbeRequest(), timeout=2).ready.value:
                    break
            except grpc.RpcError:
                pass
            if self.up.poll() is not None or self.csi.poll() is not None or time.time() > deadline:
                raise RuntimeError("the driver did not get ready:\n" + self.tail())
            time.sleep(0.3)

    def tail(self):
        with open(os.path.join(self.dir, "log"), errors="replace") as f:
            return f.read()[-5000:]

    def stop(self):
        self.channel.close()
        for p in (self.csi, self.up):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        # Anything a failed test left: pods' bind mounts, then attachments (torus detach).
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith(self.dir + "/")]
        for m in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)
        attach_dir = os.environ["TORUS_ATTACH_DIR"]
        for name in sorted(os.listdir(attach_dir)) if os.path.isdir(attach_dir) else []:
            if name.endswith(".state"):
                device = "/dev/" + name[:-len(".state")]
                subprocess.run([self.bin, "detach", "--force", device], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def driver():
    d = Driver()
    yield d
    d.stop()
