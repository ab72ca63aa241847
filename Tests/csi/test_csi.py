"""The CSI driver against the checks of the upstream sanity suite (kubernetes-csi/csi-test,
pkg/sanity): identity, controller (volumes, snapshots, expansion, listing with pagination) and
node (stage, publish, stats, expansion, the whole lifecycle for mount and block access, and
idempotence), with real loop devices and mounts."""
import os, subprocess, uuid

import grpc
import pytest

from conftest import csi_pb2

T = 120
GiB = 1 << 30
C = csi_pb2
MODE = C.VolumeCapability.AccessMode


def code(call, req):
    try:
        call(req, timeout=T)
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


def mount_cap(mode=MODE.SINGLE_NODE_WRITER, fs="ext4"):
    return C.VolumeCapability(mount=C.VolumeCapability.MountVolume(fs_type=fs), access_mode=MODE(mode=mode))


def block_cap():
    return C.VolumeCapability(block=C.VolumeCapability.BlockVolume(), access_mode=MODE(mode=MODE.SINGLE_NODE_WRITER))


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create(d, name=None, size=GiB, cap=None, source=None):
    req = C.CreateVolumeRequest(name=name or unique("sanity"), capacity_range=C.CapacityRange(required_bytes=size),
                                volume_capabilities=[cap or mount_cap()])
    if source is not None:
        req.volume_content_source.CopyFrom(source)
    return d.controller.CreateVolume(req, timeout=T).volume


def paths(d, tag):
    base = os.path.join(d.dir, tag)
    os.makedirs(base + "/staging", exist_ok=True)
    return base + "/staging", base + "/target"


# Identity

def test_identity(driver):
    info = driver.identity.GetPluginInfo(C.GetPluginInfoRequest(), timeout=T)
    assert info.name == "csi.torus.dev" and info.vendor_version
    caps = driver.identity.GetPluginCapabilities(C.GetPluginCapabilitiesRequest(), timeout=T).capabilities
    assert C.PluginCapability.Service.CONTROLLER_SERVICE in [c.service.type for c in caps]
    assert driver.identity.Probe(C.ProbeRequest(), timeout=T).ready.value


# Controller: volumes

def test_controller_capabilities(driver):
    caps = [c.rpc.type for c in driver.controller.ControllerGetCapabilities(C.ControllerGetCapabilitiesRequest(), timeout=T).capabilities]
    R = C.ControllerServiceCapability.RPC
    for want in (R.CREATE_DELETE_VOLUME, R.CREATE_DELETE_SNAPSHOT, R.LIST_SNAPSHOTS, R.CLONE_VOLUME, R.EXPAND_VOLUME, R.LIST_VOLUMES, R.GET_CAPACITY):
        assert want in caps
    assert R.PUBLISH_UNPUBLISH_VOLUME not in caps


def test_create_volume_errors(driver):
    cv = driver.controller.CreateVolume
    assert code(cv, C.CreateVolumeRequest(volume_capabilities=[mount_cap()])) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(cv, C.CreateVolumeRequest(name=unique("nocap"))) == grpc.StatusCode.INVALID_ARGUMENT
    multi = C.CreateVolumeRequest(name=unique("multi"), volume_capabilities=[mount_cap(MODE.MULTI_NODE_MULTI_WRITER)])
    assert code(cv, multi) == grpc.StatusCode.INVALID_ARGUMENT


def test_create_volume_idempotent(driver):
    name = unique("idem")
    a = create(driver, name)
    b = create(driver, name)
    assert a.volume_id == b.volume_id and a.capacity_bytes >= GiB
    assert code(driver.controller.CreateVolume, C.CreateVolumeRequest(
        name=name, capacity_range=C.CapacityRange(required_bytes=2 * GiB), volume_capabilities=[mount_cap()])) == grpc.StatusCode.ALREADY_EXISTS
    no_size = driver.controller.CreateVolume(C.CreateVolumeRequest(name=unique("nosize"), volume_capabilities=[mount_cap()]), timeout=T).volume
    assert no_size.capacity_bytes > 0
    longest = create(driver, "x" * 128)  # the longest name the sanity suite tries
    assert longest.volume_id and create(driver, "x" * 128).volume_id == longest.volume_id


def test_delete_volume(driver):
    assert code(driver.controller.DeleteVolume, C.DeleteVolumeRequest()) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(driver.controller.DeleteVolume, C.DeleteVolumeRequest(volume_id="no-such-volume")) == grpc.StatusCode.OK
    v = create(driver)
    driver.controller.DeleteVolume(C.DeleteVolumeRequest(volume_id=v.volume_id), timeout=T)
    driver.controller.DeleteVolume(C.DeleteVolumeRequest(volume_id=v.volume_id), timeout=T)


def test_validate_volume_capabilities(driver):
    vvc = driver.controller.ValidateVolumeCapabilities
    v = create(driver)
    assert code(vvc, C.ValidateVolumeCapabilitiesRequest(volume_capabilities=[mount_cap()])) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(vvc, C.ValidateVolumeCapabilitiesRequest(volume_id=v.volume_id)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(vvc, C.ValidateVolumeCapabilitiesRequest(volume_id="no-such", volume_capabilities=[mount_cap()])) == grpc.StatusCode.NOT_FOUND
    r = vvc(C.ValidateVolumeCapabilitiesRequest(volume_id=v.volume_id, volume_capabilities=[mount_cap()]), timeout=T)
    assert len(r.confirmed.volume_capabilities) == 1
    r = vvc(C.ValidateVolumeCapabilitiesRequest(volume_id=v.volume_id, volume_capabilities=[mount_cap(MODE.MULTI_NODE_MULTI_WRITER)]), timeout=T)
    assert not r.HasField("confirmed") and r.message


def test_list_volumes_and_pagination(driver):
    made = [create(driver).volume_id for _ in range(4)]
    everything = [e.volume.volume_id for e in driver.controller.ListVolumes(C.ListVolumesRequest(), timeout=T).entries]
    assert set(made) <= set(everything)
    assert code(driver.controller.ListVolumes, C.ListVolumesRequest(starting_token="not-a-token")) == grpc.StatusCode.ABORTED
    first = driver.controller.ListVolumes(C.ListVolumesRequest(max_entries=2), timeout=T)
    assert len(first.entries) == 2 and first.next_token
    seen, token = [e.volume.volume_id for e in first.entries], first.next_token
    driver.controller.DeleteVolume(C.DeleteVolumeRequest(volume_id=made[0]), timeout=T)
    extra = create(driver).volume_id
    while token:
        page = driver.controller.ListVolumes(C.ListVolumesRequest(max_entries=2, starting_token=token), timeout=T)
        seen += [e.volume.volume_id for e in page.entries]
        token = page.next_token
    everything = [e.volume.volume_id for e in driver.controller.ListVolumes(C.ListVolumesRequest(), timeout=T).entries]
    assert extra in everything and made[0] not in everything


def test_get_capacity(driver):
    assert driver.controller.GetCapacity(C.GetCapacityRequest(), timeout=T).available_capacity > 0


def test_expand_volume(driver):
    ev = driver.controller.ControllerExpandVolume
    assert code(ev, C.ControllerExpandVolumeRequest(capacity_range=C.CapacityRange(required_bytes=2 * GiB))) == grpc.StatusCode.INVALID_ARGUMENT
    v = create(driver)
    assert code(ev, C.ControllerExpandVolumeRequest(volume_id=v.volume_id)) == grpc.StatusCode.INVALID_ARGUMENT
    r = ev(C.ControllerExpandVolumeRequest(volume_id=v.volume_id, capacity_range=C.CapacityRange(required_bytes=2 * GiB)), timeout=T)
    assert r.capacity_bytes >= 2 * GiB and r.node_expansion_required


# Controller: snapshots and clones

def test_snapshots(driver):
    cs, ds, ls = driver.controller.CreateSnapshot, driver.controller.DeleteSnapshot, driver.controller.ListSnapshots
    v, w = create(driver), create(driver)
    assert code(cs, C.CreateSnapshotRequest(source_volume_id=v.volume_id)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(cs, C.CreateSnapshotRequest(name=unique("snap"))) == grpc.StatusCode.INVALID_ARGUMENT
    name = unique("snap")
    s = cs(C.CreateSnapshotRequest(name=name, source_volume_id=v.volume_id), timeout=T).snapshot
    assert s.ready_to_use and s.source_volume_id == v.volume_id and s.size_bytes == v.capacity_bytes
    assert cs(C.CreateSnapshotRequest(name=name, source_volume_id=v.volume_id), timeout=T).snapshot.snapshot_id == s.snapshot_id
    assert code(cs, C.CreateSnapshotRequest(name=name, source_volume_id=w.volume_id)) == grpc.StatusCode.ALREADY_EXISTS
    longest = cs(C.CreateSnapshotRequest(name="s" * 128, source_volume_id=w.volume_id), timeout=T).snapshot
    assert longest.snapshot_id
    assert [e.snapshot.snapshot_id for e in ls(C.ListSnapshotsRequest(snapshot_id=s.snapshot_id), timeout=T).entries] == [s.snapshot_id]
    assert [e.snapshot.snapshot_id for e in ls(C.ListSnapshotsRequest(source_volume_id=v.volume_id), timeout=T).entries] == [s.snapshot_id]
    assert ls(C.ListSnapshotsRequest(snapshot_id="no@such"), timeout=T).entries == []
    assert ls(C.ListSnapshotsRequest(source_volume_id="no-such"), timeout=T).entries == []
    page = ls(C.ListSnapshotsRequest(max_entries=1), timeout=T)
    assert len(page.entries) == 1 and page.next_token
    # Snapshots go with their volume in Torus: deleting a volume that has some is refused.
    assert code(driver.controller.DeleteVolume, C.DeleteVolumeRequest(volume_id=v.volume_id)) == grpc.StatusCode.FAILED_PRECONDITION
    assert code(ds, C.DeleteSnapshotRequest()) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(ds, C.DeleteSnapshotRequest(snapshot_id="no@such")) == grpc.StatusCode.OK
    ds(C.DeleteSnapshotRequest(snapshot_id=s.snapshot_id), timeout=T)
    assert ls(C.ListSnapshotsRequest(snapshot_id=s.snapshot_id), timeout=T).entries == []


def test_create_from_sources(driver):
    v = create(driver)
    s = driver.controller.CreateSnapshot(C.CreateSnapshotRequest(name=unique("src"), source_volume_id=v.volume_id), timeout=T).snapshot
    from_snap = create(driver, source=C.VolumeContentSource(snapshot=C.VolumeContentSource.SnapshotSource(snapshot_id=s.snapshot_id)))
    assert from_snap.content_source.snapshot.snapshot_id == s.snapshot_id
    from_vol = create(driver, source=C.VolumeContentSource(volume=C.VolumeContentSource.VolumeSource(volume_id=v.volume_id)))
    assert from_vol.content_source.volume.volume_id == v.volume_id
    missing = C.CreateVolumeRequest(name=unique("nosrc"), volume_capabilities=[mount_cap()],
                                    volume_content_source=C.VolumeContentSource(snapshot=C.VolumeContentSource.SnapshotSource(snapshot_id="no@such")))
    assert code(driver.controller.CreateVolume, missing) == grpc.StatusCode.NOT_FOUND
    missing = C.CreateVolumeRequest(name=unique("nosrc"), volume_capabilities=[mount_cap()],
                                    volume_content_source=C.VolumeContentSource(volume=C.VolumeContentSource.VolumeSource(volume_id="no-such")))
    assert code(driver.controller.CreateVolume, missing) == grpc.StatusCode.NOT_FOUND
