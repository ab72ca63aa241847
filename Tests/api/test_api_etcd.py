"""The gRPC API of `torus nbd serve` on a cluster in etcd (3 `torus node`, replication 2):
volumes, I/O and a snapshot through the process that holds the writers, and UNAVAILABLE while
etcd is stopped (SIGSTOP), then service again once it is back."""
import os, signal, subprocess, tempfile, time, shutil, urllib.request

import grpc
import pytest

from conftest import blocks_pb2, blocks_pb2_grpc, cluster_pb2, cluster_pb2_grpc, free_port
from conftest import snapshots_pb2, snapshots_pb2_grpc, volumes_pb2, volumes_pb2_grpc

T = 60
MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster():
    work = tempfile.mkdtemp(prefix="torus-api-etcd.")
    bin = os.environ.get("TORUS_BIN")
    procs = []
    log = open(os.path.join(work, "log"), "ab")

    def start(*args):
        p = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT)
        procs.append(p)
        return p

    client, peer = free_port(), free_port()
    etcd = start("etcd", "--name", "t", "--data-dir", f"{work}/etcd", "--listen-client-urls", f"http://127.0.0.1:{client}",
                 "--advertise-client-urls", f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}", "--initial-cluster", f"t=http://127.0.0.1:{peer}")
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{client}/version", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    meta = f"etcd://127.0.0.1:{client}"
    subprocess.run([bin, "init", "--metadata", meta, "--replication", "2", "--insecure"], check=True, stdout=log, stderr=log)
    for i in range(3):
        start(bin, "node", "--metadata", meta, "--data-dir", f"{work}/node-{i}", "--size", "1GiB", "--listen", f"127.0.0.1:{free_port()}")
    for _ in range(150):  # the server needs the ring's nodes registered and alive
        listed = subprocess.run([bin, "peer", "list", "--metadata", meta], capture_output=True, text=True).stdout
        if listed.count("alive") == 3:
            break
        time.sleep(0.2)
    api = free_port()
    start(bin, "nbd", "serve", "--metadata", meta, "--listen", f"127.0.0.1:{free_port()}", "--grpc", f"127.0.0.1:{api}")
    channel = grpc.insecure_channel(f"127.0.0.1:{api}")
    c = type("Cluster", (), {})()
    c.etcd, c.channel = etcd, channel
    c.volumes = volumes_pb2_grpc.VolumeServiceStub(channel)
    c.snapshots = snapshots_pb2_grpc.SnapshotServiceStub(channel)
    c.blocks = blocks_pb2_grpc.BlockServiceStub(channel)
    c.status = cluster_pb2_grpc.ClusterServiceStub(channel)
    deadline = time.time() + 60
    while True:
        try:
            if sum(n.alive for n in c.status.GetStatus(cluster_pb2.GetStatusRequest(), timeout=2).nodes) == 3:
                break
        except grpc.RpcError:
            pass
        assert time.time() < deadline, open(os.path.join(work, "log"), errors="replace").read()[-3000:]
        time.sleep(0.3)
    yield c
    channel.close()
    if etcd.poll() is None:
        etcd.send_signal(signal.SIGCONT)
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)


def test_volume_io_and_snapshot_on_etcd(cluster):
    st = cluster.status.GetStatus(cluster_pb2.GetStatusRequest(), timeout=T)
    assert st.replication == 2 and st.ring_version > 0 and len(st.nodes) == 3
    v = cluster.volumes.CreateVolume(volumes_pb2.CreateVolumeRequest(name="e1", size_bytes=64 * MiB), timeout=T).volume
    assert v.name == "e1"
    data = os.urandom(MiB)
    cluster.blocks.Write(blocks_pb2.WriteRequest(volume="e1", offset=0, data=data), timeout=T)
    cluster.blocks.Flush(blocks_pb2.FlushRequest(volume="e1"), timeout=T)
    cluster.snapshots.CreateSnapshot(snapshots_pb2.CreateSnapshotRequest(volume="e1", name="s"), timeout=T)
    # The server opens the snapshot's export when its watch sees the new key: wait for it.
    deadline = time.time() + 30
    while True:
        try:
            got = cluster.blocks.Read(blocks_pb2.ReadRequest(volume="e1@s", offset=0, length=MiB), timeout=T).data
            break
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND and time.time() < deadline, e
            time.sleep(0.2)
    assert got == data
    assert "e1" in [x.name for x in cluster.volumes.ListVolumes(volumes_pb2.ListVolumesRequest(), timeout=T).volumes]


def test_unavailable_while_etcd_is_stopped(cluster):
    cluster.etcd.send_signal(signal.SIGSTOP)
    try:
        with pytest.raises(grpc.RpcError) as e:
            cluster.volumes.CreateVolume(volumes_pb2.CreateVolumeRequest(name="during", size_bytes=16 * MiB), timeout=T)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
        with pytest.raises(grpc.RpcError) as e:
            cluster.status.GetStatus(cluster_pb2.GetStatusRequest(), timeout=T)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE, e.value
    finally:
        cluster.etcd.send_signal(signal.SIGCONT)
    deadline = time.time() + 60
    while True:  # back: the same call succeeds
        try:
            cluster.volumes.CreateVolume(volumes_pb2.CreateVolumeRequest(name="after", size_bytes=16 * MiB, if_missing=True), timeout=T)
            break
        except grpc.RpcError as e:
            assert time.time() < deadline, e
            time.sleep(1)
