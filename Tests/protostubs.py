"""Python stubs of the project's protos, generated when a test suite starts (Tests/api, Tests/csi)."""
import atexit, os, shutil, socket, sys, tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def generate(*protos):
    """Generates stubs of proto/PROTO... into a temporary directory (removed at exit) and makes
    them importable."""
    from grpc_tools import protoc
    import grpc_tools
    out = tempfile.mkdtemp(prefix="torus-stubs.")
    include = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", f"-I{ROOT}/proto", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *protos])
    assert rc == 0, f"protoc failed ({rc})"
    sys.path.insert(0, out)
    atexit.register(shutil.rmtree, out, True)


def free_port():
    """A TCP port on 127.0.0.1 that is free now."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
