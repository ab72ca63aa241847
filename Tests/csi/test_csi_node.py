"""CSI Node service: argument checks, the whole lifecycle for mount and block access with real
loop devices and mounts, idempotence, read-only publish, stats and expansion (csi-test's node
cases)."""
import os, subprocess

import grpc

from conftest import csi_pb2
from test_csi import GiB, MODE, T, block_cap, code, create, mount_cap, paths, unique

C = csi_pb2


def is_mount(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == os.path.normpath(path) for line in f)


def has_cap_sys_resource():
    with open("/proc/self/status") as f:
        mask = int(next(l for l in f if l.startswith("CapEff:")).split()[1], 16)
    return bool(mask & (1 << 24))


def device_bytes(mount):
    """The size of the block device mounted at `mount`."""
    with open("/proc/self/mountinfo") as f:
        dev = next(l.split(" - ")[1].split()[1] for l in f if l.split()[4] == os.path.normpath(mount))
    return int(subprocess.check_output(["blockdev", "--getsize64", dev]))


def test_node_info_and_capabilities(driver):
    info = driver.node.NodeGetInfo(C.NodeGetInfoRequest(), timeout=T)
    assert info.node_id == "test-node" and info.accessible_topology.segments["topology.torus.dev/zone"] == "z1"
    caps = [c.rpc.type for c in driver.node.NodeGetCapabilities(C.NodeGetCapabilitiesRequest(), timeout=T).capabilities]
    R = C.NodeServiceCapability.RPC
    assert {R.STAGE_UNSTAGE_VOLUME, R.GET_VOLUME_STATS, R.EXPAND_VOLUME} <= set(caps)


def test_node_argument_errors(driver):
    n, stage, target = driver.node, *paths(driver, "args")
    bad = grpc.StatusCode.INVALID_ARGUMENT
    assert code(n.NodeStageVolume, C.NodeStageVolumeRequest(staging_target_path=stage, volume_capability=mount_cap())) == bad
    assert code(n.NodeStageVolume, C.NodeStageVolumeRequest(volume_id="v", volume_capability=mount_cap())) == bad
    assert code(n.NodeStageVolume, C.NodeStageVolumeRequest(volume_id="v", staging_target_path=stage)) == bad
    assert code(n.NodeUnstageVolume, C.NodeUnstageVolumeRequest(staging_target_path=stage)) == bad
    assert code(n.NodeUnstageVolume, C.NodeUnstageVolumeRequest(volume_id="v")) == bad
    pub = dict(volume_id="v", staging_target_path=stage, target_path=target, volume_capability=mount_cap())
    for drop in ("volume_id", "target_path", "volume_capability"):
        assert code(n.NodePublishVolume, C.NodePublishVolumeRequest(**{k: v for k, v in pub.items() if k != drop})) == bad
    assert code(n.NodeUnpublishVolume, C.NodeUnpublishVolumeRequest(target_path=target)) == bad
    assert code(n.NodeUnpublishVolume, C.NodeUnpublishVolumeRequest(volume_id="v")) == bad
    assert code(n.NodeGetVolumeStats, C.NodeGetVolumeStatsRequest(volume_path=target)) == bad
    assert code(n.NodeGetVolumeStats, C.NodeGetVolumeStatsRequest(volume_id="v")) == bad
    assert code(n.NodeExpandVolume, C.NodeExpandVolumeRequest(volume_path=target)) == bad
    assert code(n.NodeExpandVolume, C.NodeExpandVolumeRequest(volume_id="v")) == bad
    nf = grpc.StatusCode.NOT_FOUND
    assert code(n.NodeGetVolumeStats, C.NodeGetVolumeStatsRequest(volume_id="no-such", volume_path=stage)) == nf
    assert code(n.NodeExpandVolume, C.NodeExpandVolumeRequest(volume_id="no-such", volume_path=stage)) == nf
    assert code(n.NodeStageVolume, C.NodeStageVolumeRequest(volume_id="no-such", staging_target_path=stage, volume_capability=mount_cap())) == nf


def test_mount_lifecycle(driver):
    n = driver.node
    v = create(driver, size=GiB)
    stage, target = paths(driver, "mount")
    stage_req = C.NodeStageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage, volume_capability=mount_cap())
    n.NodeStageVolume(stage_req, timeout=T)
    n.NodeStageVolume(stage_req, timeout=T)  # idempotent
    assert is_mount(stage)
    pub = C.NodePublishVolumeRequest(volume_id=v.volume_id, staging_target_path=stage, target_path=target, volume_capability=mount_cap())
    n.NodePublishVolume(pub, timeout=T)
    n.NodePublishVolume(pub, timeout=T)
    assert is_mount(target)
    with open(os.path.join(target, "hello"), "w") as f:
        f.write("from a pod\n")
    ro_target = target + "-ro"
    n.NodePublishVolume(C.NodePublishVolumeRequest(volume_id=v.volume_id, staging_target_path=stage, target_path=ro_target,
                                                   volume_capability=mount_cap(), readonly=True), timeout=T)
    assert open(os.path.join(ro_target, "hello")).read() == "from a pod\n"
    try:
        open(os.path.join(ro_target, "nope"), "w")
        assert False, "a read-only publish took a write"
    except OSError:
        pass
    stats = n.NodeGetVolumeStats(C.NodeGetVolumeStatsRequest(volume_id=v.volume_id, volume_path=target), timeout=T)
    units = {u.unit: u for u in stats.usage}
    assert units[C.VolumeUsage.BYTES].total > 0.9 * GiB * 0.9 and units[C.VolumeUsage.INODES].total > 0
    assert code(n.NodeGetVolumeStats, C.NodeGetVolumeStatsRequest(volume_id=v.volume_id, volume_path=target + "-gone")) == grpc.StatusCode.NOT_FOUND

    # Expansion: the controller grows the volume, the node its device (and filesystem, where allowed).
    driver.controller.ControllerExpandVolume(C.ControllerExpandVolumeRequest(
        volume_id=v.volume_id, capacity_range=C.CapacityRange(required_bytes=2 * GiB)), timeout=T)
    expand = C.NodeExpandVolumeRequest(volume_id=v.volume_id, volume_path=target, capacity_range=C.CapacityRange(required_bytes=2 * GiB))
    if has_cap_sys_resource():
        assert n.NodeExpandVolume(expand, timeout=T).capacity_bytes >= 2 * GiB
        assert os.statvfs(target).f_blocks * os.statvfs(target).f_frsize > 1.5 * GiB
    else:  # ext4 cannot grow online without it: told, and the device grew all the same
        try:
            n.NodeExpandVolume(expand, timeout=T)
            assert False, "NodeExpandVolume claimed an ext4 grew without CAP_SYS_RESOURCE"
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "CAP_SYS_RESOURCE" in e.details(), e
    assert device_bytes(stage) == 2 * GiB

    for t in (ro_target, target):
        n.NodeUnpublishVolume(C.NodeUnpublishVolumeRequest(volume_id=v.volume_id, target_path=t), timeout=T)
        n.NodeUnpublishVolume(C.NodeUnpublishVolumeRequest(volume_id=v.volume_id, target_path=t), timeout=T)
        assert not os.path.exists(t)
    n.NodeUnstageVolume(C.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage), timeout=T)
    n.NodeUnstageVolume(C.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage), timeout=T)
    assert not is_mount(stage)

    # Staged again (as on another node after the pod moved): the file is there, and the
    # filesystem took the new size at this attach if it could not grow online.
    n.NodeStageVolume(stage_req, timeout=T)
    assert open(os.path.join(stage, "hello")).read() == "from a pod\n"
    total = os.statvfs(stage).f_blocks * os.statvfs(stage).f_frsize
    assert total > 1.5 * GiB, f"filesystem of {total} bytes on a 2 GiB volume"
    n.NodeUnstageVolume(C.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage), timeout=T)


def test_block_lifecycle(driver):
    n = driver.node
    v = create(driver, size=GiB // 4, cap=block_cap())
    stage, target = paths(driver, "block")
    n.NodeStageVolume(C.NodeStageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage, volume_capability=block_cap()), timeout=T)
    pub = C.NodePublishVolumeRequest(volume_id=v.volume_id, staging_target_path=stage, target_path=target, volume_capability=block_cap())
    n.NodePublishVolume(pub, timeout=T)
    n.NodePublishVolume(pub, timeout=T)
    data = os.urandom(1 << 20)
    with open(target, "r+b") as f:
        f.seek(4 << 20)
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    with open(target, "rb") as f:
        f.seek(4 << 20)
        assert f.read(1 << 20) == data
    stats = n.NodeGetVolumeStats(C.NodeGetVolumeStatsRequest(volume_id=v.volume_id, volume_path=target), timeout=T)
    assert stats.usage[0].total == GiB // 4
    n.NodeUnpublishVolume(C.NodeUnpublishVolumeRequest(volume_id=v.volume_id, target_path=target), timeout=T)
    assert not os.path.exists(target)
    n.NodeUnstageVolume(C.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage), timeout=T)
    # The bytes are on the volume, not in a page cache: a fresh attach reads them back.
    n.NodeStageVolume(C.NodeStageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage, volume_capability=block_cap()), timeout=T)
    n.NodePublishVolume(pub, timeout=T)
    with open(target, "rb") as f:
        f.seek(4 << 20)
        assert f.read(1 << 20) == data
    n.NodeUnpublishVolume(C.NodeUnpublishVolumeRequest(volume_id=v.volume_id, target_path=target), timeout=T)
    n.NodeUnstageVolume(C.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage), timeout=T)


def test_second_stage_of_a_volume_is_refused(driver):
    n = driver.node
    v = create(driver, size=GiB // 4)
    a, _ = paths(driver, "twice-a")
    b, _ = paths(driver, "twice-b")
    n.NodeStageVolume(C.NodeStageVolumeRequest(volume_id=v.volume_id, staging_target_path=a, volume_capability=mount_cap()), timeout=T)
    again = C.NodeStageVolumeRequest(volume_id=v.volume_id, staging_target_path=b, volume_capability=mount_cap())
    assert code(n.NodeStageVolume, again) == grpc.StatusCode.FAILED_PRECONDITION
    n.NodeUnstageVolume(C.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=a), timeout=T)


def test_xfs_grows_online(driver):
    n = driver.node
    xfs = mount_cap(fs="xfs")
    v = create(driver, size=GiB, cap=xfs)
    stage, target = paths(driver, "xfs")
    n.NodeStageVolume(C.NodeStageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage, volume_capability=xfs), timeout=T)
    n.NodePublishVolume(C.NodePublishVolumeRequest(volume_id=v.volume_id, staging_target_path=stage, target_path=target,
                                                   volume_capability=xfs), timeout=T)
    data = os.urandom(4 << 20)
    with open(os.path.join(target, "blob"), "wb") as f:
        f.write(data)
    before = os.statvfs(target).f_blocks * os.statvfs(target).f_frsize
    driver.controller.ControllerExpandVolume(C.ControllerExpandVolumeRequest(
        volume_id=v.volume_id, capacity_range=C.CapacityRange(required_bytes=2 * GiB)), timeout=T)
    r = n.NodeExpandVolume(C.NodeExpandVolumeRequest(volume_id=v.volume_id, volume_path=target,
                                                     capacity_range=C.CapacityRange(required_bytes=2 * GiB)), timeout=T)
    after = os.statvfs(target).f_blocks * os.statvfs(target).f_frsize
    assert r.capacity_bytes == 2 * GiB and after > 1.8 * before, (before, after)
    assert open(os.path.join(target, "blob"), "rb").read() == data
    n.NodeUnpublishVolume(C.NodeUnpublishVolumeRequest(volume_id=v.volume_id, target_path=target), timeout=T)
    n.NodeUnstageVolume(C.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=stage), timeout=T)


def test_unpublish_never_deletes_data(driver):
    _, target = paths(driver, "not-mounted")
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, "precious"), "w") as f:
        f.write("keep me")
    assert code(driver.node.NodeUnpublishVolume, C.NodeUnpublishVolumeRequest(volume_id="v", target_path=target)) != grpc.StatusCode.OK
    assert open(os.path.join(target, "precious")).read() == "keep me"
