"""Regenerate ``jitnet/proto/caffe_pb2.py`` from ``jitnet/proto/caffe.proto``.

Run it after editing the schema::

    python -m jitnet.proto.regenerate

It runs grpc_tools' bundled protoc from the repository root, so that the
descriptor's file name is ``jitnet/proto/caffe.proto`` (distinct from pycaffe's
``caffe.proto``).  grpcio-tools comes with the ``dev`` extra:
``pip install -e '.[dev]'``.
"""

import sys
from pathlib import Path

#: The repository root: the folder that holds the ``jitnet`` package.
REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO = "jitnet/proto/caffe.proto"


def regenerate():
    """Run protoc on caffe.proto; return protoc's exit status (0 on success)."""
    try:
        from grpc_tools import protoc
    except ImportError:
        sys.stderr.write(
            "jitnet.proto.regenerate needs grpcio-tools, which provides protoc.\n"
            "Install it with:  pip install -e '.[dev]'   (or: pip install grpcio-tools)\n")
        return 2
    import importlib.resources

    # protoc needs the well-known .proto files shipped inside grpc_tools only
    # if the schema imports them; caffe.proto does not, but pass them anyway
    # so that the command also works if that ever changes.
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    args = ["protoc", "-I", str(REPO_ROOT), "-I", well_known,
            f"--python_out={REPO_ROOT}", str(REPO_ROOT / PROTO)]
    status = protoc.main(args)
    if status == 0:
        print(f"wrote {REPO_ROOT / 'jitnet/proto/caffe_pb2.py'}")
    else:
        sys.stderr.write(f"protoc failed on {PROTO} (exit status {status})\n")
    return status


if __name__ == "__main__":
    sys.exit(regenerate())
