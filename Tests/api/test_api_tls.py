"""The gRPC API over TLS with client certificates (the certificates of `torus certs`, as NBD
uses them): a client with a certificate of the cluster's CA is served; one without a
certificate, with another CA's, or in plaintext is refused."""
import os, shutil, subprocess, tempfile, time

import grpc
import pytest

from conftest import Server, free_port, volumes_pb2, volumes_pb2_grpc

T = 30


@pytest.fixture(scope="module")
def tls_server():
    bin = os.environ.get("TORUS_BIN")
    certs = tempfile.mkdtemp(prefix="torus-api-certs.")
    for args in (["ca", "--dir", f"{certs}/ca"],
                 ["issue", "--ca", f"{certs}/ca", "--role", "server", "--host", "localhost", "--host", "127.0.0.1", "--out", f"{certs}/server"],
                 ["issue", "--ca", f"{certs}/ca", "--role", "client", "--name", "alice", "--out", f"{certs}/alice"],
                 ["ca", "--dir", f"{certs}/other", "--name", "another CA"],
                 ["issue", "--ca", f"{certs}/other", "--role", "client", "--name", "mallory", "--out", f"{certs}/mallory"]):
        subprocess.run([bin, "certs", *args], check=True, stdout=subprocess.DEVNULL)
    s = Server.__new__(Server)  # started here: the constructor waits with a plaintext probe
    s.bin, s.dir, s.extra, s.proc = bin, tempfile.mkdtemp(prefix="torus-api-tls."), [], None
    s.port = free_port()
    log = open(os.path.join(s.dir, "up.log"), "ab")
    s.proc = subprocess.Popen([bin, "up", "--data-dir", f"{s.dir}/data", "--nbd", f"127.0.0.1:{free_port()}", "--grpc", f"127.0.0.1:{s.port}",
                               "--tls-cert", f"{certs}/server/server-cert.pem", "--tls-key", f"{certs}/server/server-key.pem",
                               "--tls-client-ca", f"{certs}/ca/ca-cert.pem"], stdout=log, stderr=subprocess.STDOUT)
    yield s, certs
    s.proc.terminate()
    s.proc.wait(timeout=60)
    shutil.rmtree(s.dir, ignore_errors=True)
    shutil.rmtree(certs, ignore_errors=True)


def stub(port, certs, who):
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(f"{certs}/ca/ca-cert.pem"),
        private_key=read(f"{certs}/{who}/client-key.pem") if who else None,
        certificate_chain=read(f"{certs}/{who}/client-cert.pem") if who else None)
    return volumes_pb2_grpc.VolumeServiceStub(grpc.secure_channel(f"localhost:{port}", creds))


def test_client_certificate_of_the_ca_is_served(tls_server):
    s, certs = tls_server
    for _ in range(100):
        try:
            names = [v.name for v in stub(s.port, certs, "alice").ListVolumes(volumes_pb2.ListVolumesRequest(), timeout=T).volumes]
            break
        except grpc.RpcError:
            time.sleep(0.3)
    assert "vol0" in names


@pytest.mark.parametrize("who", [None, "mallory"])
def test_other_clients_are_refused(tls_server, who):
    s, certs = tls_server
    with pytest.raises(grpc.RpcError) as e:
        stub(s.port, certs, who).ListVolumes(volumes_pb2.ListVolumesRequest(), timeout=T)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_is_refused(tls_server):
    s, _ = tls_server
    plain = volumes_pb2_grpc.VolumeServiceStub(grpc.insecure_channel(f"127.0.0.1:{s.port}"))
    with pytest.raises(grpc.RpcError) as e:
        plain.ListVolumes(volumes_pb2.ListVolumesRequest(), timeout=T)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
