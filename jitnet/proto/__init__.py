"""Caffe's protobuf schema for jitnet, and the functions that read and write it.

``pb`` is the generated module of ``caffe.proto`` (package ``jitnet.caffe``, so it
can be imported next to pycaffe's own ``caffe_pb2``); regenerate it with
``python -m jitnet.proto.regenerate`` (or ``python jitnet/proto/regenerate.py``
if the generated file no longer imports).  The functions come from
:mod:`jitnet.proto.io` (files) and :mod:`jitnet.proto.upgrade` (old formats).
"""

from jitnet.proto import caffe_pb2
from jitnet.proto import caffe_pb2 as pb
from jitnet.proto.io import (
    array_to_blob,
    blob_diff_to_array,
    blob_to_array,
    read_binary,
    read_blob_proto,
    read_net,
    read_net_binary,
    read_solver,
    read_text,
    write_binary,
    write_blob_proto,
    write_text,
)
from jitnet.proto.upgrade import upgrade_net, upgrade_solver

__all__ = [
    "caffe_pb2", "pb",
    "read_text", "write_text", "read_binary", "write_binary",
    "read_net", "read_net_binary", "read_solver",
    "upgrade_net", "upgrade_solver",
    "blob_to_array", "blob_diff_to_array", "array_to_blob",
    "read_blob_proto", "write_blob_proto",
]
