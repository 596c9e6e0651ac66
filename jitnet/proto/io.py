"""Reading and writing Caffe's protobuf files.

Caffe keeps everything in protocol buffers (schema: ``caffe.proto`` next to this
file): nets and solvers as text (``.prototxt``), weights as binary
``NetParameter`` (``.caffemodel``), mean images as binary ``BlobProto``
(``.binaryproto``) and solver snapshots as binary ``SolverState``.

This module is the counterpart of Caffe's ``util/io.cpp`` (the upgrades of
``util/upgrade_proto.cpp`` are in :mod:`jitnet.proto.upgrade`):

* :func:`read_text` / :func:`write_text` and :func:`read_binary` /
  :func:`write_binary` read and (atomically) write any message;
* :func:`read_net`, :func:`read_net_binary` and :func:`read_solver` also bring
  old files up to the current format (:func:`upgrade_net`,
  :func:`upgrade_solver`), as Caffe does when it loads them;
* :func:`blob_to_array` and :func:`array_to_blob` convert between
  ``BlobProto`` and numpy arrays.

Every problem with a file is raised as :class:`jitnet.errors.ProtoError`,
naming the file (and, for text files, the line and column).

Size: the Python protobuf runtime (upb) has no 64 MiB limit; messages up to
protobuf's 2 GiB format limit parse.  Blob values are converted to and from
numpy through the packed wire format, so caffemodels of hundreds of MB load in
about a second.
"""

import os
import re
import tempfile
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, EncodeError

from jitnet.errors import ProtoError
from jitnet.proto import caffe_pb2 as pb
from jitnet.proto.upgrade import upgrade_net, upgrade_solver

__all__ = [
    "read_text", "write_text", "read_binary", "write_binary",
    "read_net", "read_net_binary", "read_solver",
    "upgrade_net", "upgrade_solver",
    "blob_to_array", "blob_diff_to_array", "array_to_blob",
    "read_blob_proto", "write_blob_proto",
]


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def _read_bytes(path):
    """Return the contents of ``path``; raise ProtoError if it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ProtoError("no such file", path=path) from None
    except IsADirectoryError:
        raise ProtoError("is a directory, not a file", path=path) from None
    except OSError as error:
        raise ProtoError(f"cannot read file: {error.strerror or error}", path=path) from None
    except ValueError as error:             # e.g. a NUL character in the name
        raise ProtoError(f"not a usable file name ({error})", path=path) from None


def _write_bytes_atomically(data, path):
    """Write ``data`` to ``path`` through a temporary file in the same folder
    and ``os.replace``, so that readers never see a half-written file."""
    path = Path(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = 0o644
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    except OSError as error:
        raise ProtoError(f"cannot write file: {error.strerror or error}", path=path) from None
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        if isinstance(error, OSError):
            raise ProtoError(f"cannot write file: {error.strerror or error}",
                             path=path) from None
        raise


#: protobuf puts "LINE:COLUMN : " in front of its parse error messages; the
#: position goes into ProtoError's own "file:line:column: " prefix instead.
_POSITION_PREFIX = re.compile(r"^\s*\d+(:\d+)?\s*:\s*")

#: The schema's package is ``jitnet.caffe`` (so it can live next to pycaffe's); Caffe users
#: know its messages and enums as ``caffe.InnerProductParameter``, ``caffe.Phase``, ...
_SCHEMA_PACKAGE = re.compile(re.escape(pb.DESCRIPTOR.package) + r"\.")


def caffe_names(text):
    """``text`` (a protobuf error message) with schema names as Caffe spells them:
    ``jitnet.caffe.InnerProductParameter`` becomes ``caffe.InnerProductParameter``."""
    return _SCHEMA_PACKAGE.sub("caffe.", text)


def read_text(path, message):
    """Parse the protobuf text file ``path`` into ``message`` (cleared first).

    Returns ``message``.  Raises ProtoError for a missing or unreadable file,
    for text that is not UTF-8, and for a syntax error, an unknown field or a
    bad value, naming ``file:line:column``; also if required fields are missing.
    """
    data = _read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ProtoError("the file is not UTF-8 text", path=path, line=line) from None
    message.Clear()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        what = caffe_names(_POSITION_PREFIX.sub("", str(error)))
        raise ProtoError(what, path=path, line=error.GetLine(),
                         column=error.GetColumn()) from None
    _check_initialized(message, path)
    return message


def write_text(message, path):
    """Write ``message`` to ``path`` in protobuf text format (atomically).

    Raises ProtoError if the file cannot be written.
    """
    _write_bytes_atomically(text_format.MessageToString(message).encode("utf-8"), path)


def read_binary(path, message):
    """Parse the binary protobuf file ``path`` into ``message`` (cleared first).

    Returns ``message``.  Raises ProtoError for a missing, truncated or corrupt
    file, or one that lacks required fields.
    """
    data = _read_bytes(path)
    message.Clear()
    try:
        message.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise ProtoError(f"not a valid binary {message.DESCRIPTOR.name} "
                         f"(truncated or corrupt file): {caffe_names(str(error))}",
                         path=path) from None
    _check_initialized(message, path)
    return message


def write_binary(message, path):
    """Write ``message`` to ``path`` in protobuf binary format (atomically).

    Raises ProtoError if the message lacks required fields or the file cannot
    be written.
    """
    try:
        data = message.SerializeToString()
    except EncodeError as error:
        raise ProtoError(f"cannot serialize {message.DESCRIPTOR.name}: "
                         f"{caffe_names(str(error))}", path=path) from None
    _write_bytes_atomically(data, path)


def _check_initialized(message, path):
    """Raise ProtoError if required fields (e.g. clip_param's min) are missing."""
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise ProtoError(caffe_names(f"missing required field(s) in {message.DESCRIPTOR.full_name}: "
                                     f"{missing}"), path=path)


# ---------------------------------------------------------------------------
# Nets and solvers
# ---------------------------------------------------------------------------

def read_net(path):
    """Return the NetParameter of the prototxt ``path``, upgraded to the current
    format (see :func:`upgrade_net`).  Raises ProtoError."""
    return upgrade_net(read_text(path, pb.NetParameter()), path)


def read_net_binary(path):
    """Return the NetParameter (with blobs) of the caffemodel ``path``, upgraded
    to the current format (see :func:`upgrade_net`).  Raises ProtoError."""
    return upgrade_net(read_binary(path, pb.NetParameter()), path)


def read_solver(path):
    """Return the SolverParameter of the prototxt ``path``, upgraded (see
    :func:`upgrade_solver`).  Raises ProtoError."""
    return upgrade_solver(read_text(path, pb.SolverParameter()), path)


# ---------------------------------------------------------------------------
# Blobs
# ---------------------------------------------------------------------------

_LEGACY_SHAPE_FIELDS = ("num", "channels", "height", "width")


def _blob_shape(blob_proto):
    """The shape of a BlobProto: ``shape.dim``, else the legacy 4-D
    num/channels/height/width, else None (no shape given)."""
    if blob_proto.HasField("shape"):
        return tuple(int(d) for d in blob_proto.shape.dim)
    if any(blob_proto.HasField(name) for name in _LEGACY_SHAPE_FIELDS):
        return tuple(getattr(blob_proto, name) for name in _LEGACY_SHAPE_FIELDS)
    return None


def _values_to_array(blob_proto, values, what):
    """Reshape the flat ``values`` to the blob's shape; ProtoError on mismatch."""
    shape = _blob_shape(blob_proto)
    if shape is None:
        # No shape at all: Caffe reads this as a 0-axis (scalar) blob.
        shape = () if values.size == 1 else (values.size,)
        if values.size > 1:
            raise ProtoError(f"blob has no shape but {values.size} {what} values")
    if any(d < 0 for d in shape):
        raise ProtoError(f"blob shape {shape} has a negative dimension")
    count = int(np.prod(shape, dtype=np.int64))
    if count != values.size:
        raise ProtoError(f"blob shape {'x'.join(map(str, shape)) or '()'} needs {count} "
                         f"{what} values but the blob holds {values.size}")
    return values.reshape(shape)


def blob_to_array(blob_proto):
    """Return the values of a BlobProto as a numpy array of the blob's shape.

    float64 if the blob holds ``double_data``, else float32 from ``data``.  The
    shape is ``shape.dim``, or the legacy num x channels x height x width.
    Raises ProtoError if the number of values does not match the shape.
    """
    if len(blob_proto.double_data):
        values = np.array(blob_proto.double_data, dtype=np.float64)
    else:
        values = np.array(blob_proto.data, dtype=np.float32)
    return _values_to_array(blob_proto, values, "data")


def blob_diff_to_array(blob_proto):
    """Return the gradient of a BlobProto (``double_diff`` as float64, else
    ``diff`` as float32) in the blob's shape, or an empty float32 array of
    shape (0,) if the blob stores no gradient.  Raises ProtoError on a count
    mismatch."""
    if len(blob_proto.double_diff):
        values = np.array(blob_proto.double_diff, dtype=np.float64)
    elif len(blob_proto.diff):
        values = np.array(blob_proto.diff, dtype=np.float32)
    else:
        return np.empty((0,), dtype=np.float32)
    return _values_to_array(blob_proto, values, "diff")


def _varint(value):
    """The protobuf base-128 varint encoding of a non-negative integer."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _packed_field(number, array, dtype):
    """Serialized bytes of the packed repeated field ``number`` holding ``array``
    (little-endian float or double): much faster than appending value by value."""
    payload = np.ascontiguousarray(array, dtype=dtype).tobytes()
    wire_type = 2  # length-delimited
    return _varint(number << 3 | wire_type) + _varint(len(payload)) + payload


def array_to_blob(array, blob_proto, diff=None):
    """Fill ``blob_proto`` (cleared first) from a numpy array and return it.

    The shape goes to ``shape.dim``; float64 arrays go to ``double_data`` (and
    ``diff`` to ``double_diff``), anything else is stored as float32 in
    ``data`` (and ``diff``).  Raises ProtoError if ``diff`` has another size.
    """
    values = np.asarray(array)
    double = values.dtype == np.float64
    blob_proto.Clear()
    blob_proto.shape.SetInParent()
    blob_proto.shape.dim.extend(int(d) for d in values.shape)
    if double:
        data_field, diff_field, dtype = (pb.BlobProto.DOUBLE_DATA_FIELD_NUMBER,
                                         pb.BlobProto.DOUBLE_DIFF_FIELD_NUMBER, "<f8")
    else:
        data_field, diff_field, dtype = (pb.BlobProto.DATA_FIELD_NUMBER,
                                         pb.BlobProto.DIFF_FIELD_NUMBER, "<f4")
    encoded = _packed_field(data_field, values, dtype) if values.size else b""
    if diff is not None:
        diff = np.asarray(diff)
        if diff.size != values.size:
            raise ProtoError(f"diff has {diff.size} values but the data has {values.size}")
        if diff.size:
            encoded += _packed_field(diff_field, diff, dtype)
    blob_proto.MergeFromString(encoded)
    return blob_proto


def read_blob_proto(path):
    """Return the array stored in the ``.binaryproto`` file ``path`` (e.g. a
    mean image, usually 1 x C x H x W).  Raises ProtoError."""
    blob_proto = read_binary(path, pb.BlobProto())
    try:
        return blob_to_array(blob_proto)
    except ProtoError as error:
        raise ProtoError(str(error), path=path) from None


def write_blob_proto(array, path):
    """Write ``array`` as a BlobProto to the ``.binaryproto`` file ``path``
    (atomically).  Raises ProtoError."""
    write_binary(array_to_blob(array, pb.BlobProto()), path)
