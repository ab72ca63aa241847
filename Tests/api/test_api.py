"""The gRPC API (proto/torus/v1) against `torus up --grpc`: every RPC, its error codes, streams,
concurrent clients, and data that survives a SIGKILL once flushed."""
import concurrent.futures, os

import grpc
import pytest

from conftest import Server, blocks_pb2, cluster_pb2, snapshots_pb2, volumes_pb2

T = 60  # seconds: every call has a deadline, so a hang fails instead of blocking CI
MiB = 1 << 20


def code_of(call, *args, **kw):
    """The status code a call fails with (OK if it succeeds)."""
    try:
        call(*args, timeout=T, **kw)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def pattern(seed, n):
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(256)) * (n // 256)


def create(s, name, size=16 * MiB):
    return s.volumes.CreateVolume(volumes_pb2.CreateVolumeRequest(name=name, size_bytes=size), timeout=T).volume


def write(s, vol, off, data, fua=False):
    return s.blocks.Write(blocks_pb2.WriteRequest(volume=vol, offset=off, data=data, fua=fua), timeout=T)


def read(s, vol, off, n):
    return s.blocks.Read(blocks_pb2.ReadRequest(volume=vol, offset=off, length=n), timeout=T).data


# Volumes

def test_create_list_get(server):
    v = create(server, "a1", 32 * MiB)
    assert (v.name, v.size_bytes, v.replication, v.open_for_writing) == ("a1", 32 * MiB, 2, True)
    names = [x.name for x in server.volumes.ListVolumes(volumes_pb2.ListVolumesRequest(), timeout=T).volumes]
    assert "a1" in names and "v0" in names
    got = server.volumes.GetVolume(volumes_pb2.GetVolumeRequest(name="a1"), timeout=T).volume
    assert got.id == v.id and got.size_bytes == 32 * MiB


def test_create_errors(server):
    create(server, "dup")
    req = volumes_pb2.CreateVolumeRequest
    assert code_of(server.volumes.CreateVolume, req(name="dup", size_bytes=16 * MiB)) == grpc.StatusCode.ALREADY_EXISTS
    same = server.volumes.CreateVolume(req(name="dup", size_bytes=16 * MiB, if_missing=True), timeout=T).volume
    assert same.name == "dup"
    assert code_of(server.volumes.CreateVolume, req(name="dup", size_bytes=32 * MiB, if_missing=True)) == grpc.StatusCode.ALREADY_EXISTS
    assert code_of(server.volumes.CreateVolume, req(name="-bad", size_bytes=MiB)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(server.volumes.CreateVolume, req(name="x" * 65, size_bytes=MiB)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(server.volumes.CreateVolume, req(name="odd", size_bytes=4097)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(server.volumes.CreateVolume, req(name="zero", size_bytes=0)) == grpc.StatusCode.INVALID_ARGUMENT


def test_get_missing(server):
    assert code_of(server.volumes.GetVolume, volumes_pb2.GetVolumeRequest(name="nope")) == grpc.StatusCode.NOT_FOUND


def test_resize(server):
    create(server, "grow", 16 * MiB)
    write(server, "grow", 0, pattern(1, MiB))
    r = server.volumes.ResizeVolume(volumes_pb2.ResizeVolumeRequest(name="grow", size_bytes=48 * MiB), timeout=T).volume
    assert r.size_bytes == 48 * MiB
    write(server, "grow", 40 * MiB, pattern(2, MiB))  # past the old end
    assert read(server, "grow", 40 * MiB, MiB) == pattern(2, MiB)
    assert read(server, "grow", 0, MiB) == pattern(1, MiB)
    req = volumes_pb2.ResizeVolumeRequest
    assert code_of(server.volumes.ResizeVolume, req(name="grow", size_bytes=16 * MiB)) == grpc.StatusCode.FAILED_PRECONDITION
    assert code_of(server.volumes.ResizeVolume, req(name="grow", size_bytes=48 * MiB + 1)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(server.volumes.ResizeVolume, req(name="nope", size_bytes=48 * MiB)) == grpc.StatusCode.NOT_FOUND


def test_delete(server):
    create(server, "gone")
    server.volumes.DeleteVolume(volumes_pb2.DeleteVolumeRequest(name="gone"), timeout=T)
    assert code_of(server.volumes.GetVolume, volumes_pb2.GetVolumeRequest(name="gone")) == grpc.StatusCode.NOT_FOUND
    assert code_of(server.volumes.DeleteVolume, volumes_pb2.DeleteVolumeRequest(name="gone")) == grpc.StatusCode.NOT_FOUND
    assert code_of(server.blocks.Read, blocks_pb2.ReadRequest(volume="gone", offset=0, length=4096)) == grpc.StatusCode.NOT_FOUND


# Snapshots and clones

def test_snapshots_clone_rollback(server):
    create(server, "s1")
    write(server, "s1", 0, pattern(3, MiB))
    snap = server.snapshots.CreateSnapshot(snapshots_pb2.CreateSnapshotRequest(volume="s1", name="first"), timeout=T).snapshot
    assert (snap.volume, snap.name, snap.size_bytes) == ("s1", "first", 16 * MiB)
    write(server, "s1", 0, pattern(4, MiB))
    server.blocks.Flush(blocks_pb2.FlushRequest(volume="s1"), timeout=T)
    assert read(server, "s1@first", 0, MiB) == pattern(3, MiB)  # the snapshot, read-only
    assert code_of(server.blocks.Write, blocks_pb2.WriteRequest(volume="s1@first", offset=0, data=b"\0" * 4096)) == grpc.StatusCode.PERMISSION_DENIED
    listed = server.snapshots.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(volume="s1"), timeout=T).snapshots
    assert [x.name for x in listed] == ["first"]
    everything = server.snapshots.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(), timeout=T).snapshots
    assert ("s1", "first") in [(x.volume, x.name) for x in everything]

    c = server.snapshots.CloneVolume(snapshots_pb2.CloneVolumeRequest(volume="s1", snapshot="first", new_name="c1"), timeout=T).volume
    assert c.name == "c1" and c.origin_id != 0
    assert read(server, "c1", 0, MiB) == pattern(3, MiB)
    write(server, "c1", 0, pattern(5, 4096))
    assert read(server, "s1@first", 0, 4096) == pattern(3, 4096)
    assert code_of(server.volumes.DeleteVolume, volumes_pb2.DeleteVolumeRequest(name="s1")) == grpc.StatusCode.FAILED_PRECONDITION

    server.snapshots.Rollback(snapshots_pb2.RollbackRequest(volume="s1", snapshot="first"), timeout=T)
    assert read(server, "s1", 0, MiB) == pattern(3, MiB)
    server.snapshots.DeleteSnapshot(snapshots_pb2.DeleteSnapshotRequest(volume="s1", name="first"), timeout=T)
    assert server.snapshots.ListSnapshots(snapshots_pb2.ListSnapshotsRequest(volume="s1"), timeout=T).snapshots == []
    assert read(server, "c1", 4096, 4096) == pattern(3, MiB)[4096:8192]  # the clone keeps its blocks


def test_snapshot_errors(server):
    create(server, "s2")
    S = snapshots_pb2
    server.snapshots.CreateSnapshot(S.CreateSnapshotRequest(volume="s2", name="x"), timeout=T)
    assert code_of(server.snapshots.CreateSnapshot, S.CreateSnapshotRequest(volume="s2", name="x")) == grpc.StatusCode.ALREADY_EXISTS
    assert code_of(server.snapshots.CreateSnapshot, S.CreateSnapshotRequest(volume="nope", name="x")) == grpc.StatusCode.NOT_FOUND
    assert code_of(server.snapshots.CreateSnapshot, S.CreateSnapshotRequest(volume="s2", name="bad/name")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(server.snapshots.ListSnapshots, S.ListSnapshotsRequest(volume="nope")) == grpc.StatusCode.NOT_FOUND
    assert code_of(server.snapshots.DeleteSnapshot, S.DeleteSnapshotRequest(volume="s2", name="nope")) == grpc.StatusCode.NOT_FOUND
    assert code_of(server.snapshots.Rollback, S.RollbackRequest(volume="s2", snapshot="nope")) == grpc.StatusCode.NOT_FOUND
    assert code_of(server.snapshots.CloneVolume, S.CloneVolumeRequest(volume="s2", snapshot="nope", new_name="c9")) == grpc.StatusCode.NOT_FOUND
    assert code_of(server.snapshots.CloneVolume, S.CloneVolumeRequest(volume="s2", snapshot="x", new_name="s2")) == grpc.StatusCode.ALREADY_EXISTS


# Cluster

def test_status(server):
    st = server.cluster.GetStatus(cluster_pb2.GetStatusRequest(), timeout=T)
    assert st.replication == 2 and st.block_size > 0 and len(st.nodes) == 3
    assert all(n.alive and n.capacity_bytes > 0 for n in st.nodes)
    assert st.capacity_bytes == sum(n.capacity_bytes for n in st.nodes)
    assert "v0" in [v.name for v in st.volumes]
    assert st.redundancy in ("unknown", "repairing", "waiting", "full", "short", "incomplete")


# Block I/O

def test_read_write_flush_trim(server):
    create(server, "b1")
    w = write(server, "b1", 8 * MiB, pattern(6, 2 * MiB))
    f = server.blocks.Flush(blocks_pb2.FlushRequest(volume="b1", expect_generation=w.generation), timeout=T)
    assert f.generation == w.generation
    assert read(server, "b1", 8 * MiB, 2 * MiB) == pattern(6, 2 * MiB)
    write(server, "b1", 0, pattern(7, 4096), fua=True)
    assert read(server, "b1", 0, 4096) == pattern(7, 4096)
    server.blocks.Trim(blocks_pb2.TrimRequest(volume="b1", offset=8 * MiB, length=MiB), timeout=T)
    assert read(server, "b1", 8 * MiB, MiB) == b"\0" * MiB
    assert read(server, "b1", 9 * MiB, MiB) == pattern(6, 2 * MiB)[MiB:]


def test_block_errors(server):
    create(server, "b2")
    B = blocks_pb2
    write(server, "b2", 0, pattern(10, 8192))
    assert read(server, "b2", 100, 5000) == pattern(10, 8192)[100:5100]  # byte-granular, like NBD
    assert code_of(server.blocks.Read, B.ReadRequest(volume="b2", offset=16 * MiB, length=4096)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(server.blocks.Read, B.ReadRequest(volume="b2", offset=0, length=64 * MiB)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(server.blocks.Write, B.WriteRequest(volume="b2", offset=0, data=b"")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(server.blocks.Write, B.WriteRequest(volume="nope", offset=0, data=b"\0" * 4096)) == grpc.StatusCode.NOT_FOUND
    assert code_of(server.blocks.Flush, B.FlushRequest(volume="nope")) == grpc.StatusCode.NOT_FOUND
    g = server.blocks.Flush(B.FlushRequest(volume="b2"), timeout=T).generation
    assert code_of(server.blocks.Flush, B.FlushRequest(volume="b2", expect_generation=g + 1)) == grpc.StatusCode.ABORTED


def test_stream(server):
    create(server, "st", 32 * MiB)
    B = blocks_pb2
    reqs = [B.BlockRequest(id=i, write=B.WriteRequest(volume="st", offset=i * 65536, data=pattern(i, 65536))) for i in range(128)]
    answers = {a.id: a for a in server.blocks.Stream(iter(reqs), timeout=T)}
    assert sorted(answers) == list(range(128)) and all(a.code == 0 for a in answers.values())
    flush = list(server.blocks.Stream(iter([B.BlockRequest(id=1, flush=B.FlushRequest(volume="st"))]), timeout=T))
    assert flush[0].code == 0
    reqs = [B.BlockRequest(id=i, read=B.ReadRequest(volume="st", offset=i * 65536, length=65536)) for i in range(128)]
    reqs.append(B.BlockRequest(id=999, read=B.ReadRequest(volume="st", offset=64 * MiB, length=4096)))
    answers = {a.id: a for a in server.blocks.Stream(iter(reqs), timeout=T)}
    assert all(answers[i].data == pattern(i, 65536) for i in range(128))
    assert answers[999].code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "beyond" in answers[999].message


def test_concurrent_clients(server):
    create(server, "cc", 64 * MiB)

    def client(k):
        from conftest import blocks_pb2_grpc
        ch = grpc.insecure_channel(f"127.0.0.1:{server.port}")  # a client of its own: its own connection
        stub = blocks_pb2_grpc.BlockServiceStub(ch)
        for j in range(16):
            off = (k * 16 + j) * 256 * 1024
            stub.Write(blocks_pb2.WriteRequest(volume="cc", offset=off, data=pattern(k * 16 + j, 256 * 1024)), timeout=T)
        stub.Flush(blocks_pb2.FlushRequest(volume="cc"), timeout=T)
        ok = all(stub.Read(blocks_pb2.ReadRequest(volume="cc", offset=(k * 16 + j) * 256 * 1024, length=256 * 1024), timeout=T).data
                 == pattern(k * 16 + j, 256 * 1024) for j in range(16))
        ch.close()
        return ok

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert all(pool.map(client, range(8)))


def test_flushed_data_survives_sigkill():
    s = Server()
    try:
        create(s, "dur")
        write(s, "dur", 0, pattern(8, 4 * MiB))
        s.blocks.Flush(blocks_pb2.FlushRequest(volume="dur"), timeout=T)
        write(s, "dur", 8 * MiB, pattern(9, MiB), fua=True)
        s.kill()
        s.start()
        assert read(s, "dur", 0, 4 * MiB) == pattern(8, 4 * MiB)
        assert read(s, "dur", 8 * MiB, MiB) == pattern(9, MiB)
    finally:
        s.stop()


def test_no_space_is_resource_exhausted():
    s = Server(extra=["--disk-size", "32MiB", "--volume", "big:256MiB"])  # 3 x 32 MiB at replication 2
    try:
        for i in range(100):
            write(s, "big", i * MiB, bytes([i % 251 + 1]) * MiB)
        with pytest.raises(grpc.RpcError) as e:
            s.blocks.Flush(blocks_pb2.FlushRequest(volume="big"), timeout=180)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
        assert "room" in e.value.details()
    finally:
        s.stop()
