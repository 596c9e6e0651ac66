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
  ``BlobProto`` and numpy arrays;
* :func:`read_caffemodel` / :func:`write_caffemodel` read and write weights files
  a layer at a time, without a second copy of the weights.

Every problem with a file is raised as :class:`jitnet.errors.ProtoError`,
naming the file (and, for text files, the line and column).

Size: the Python protobuf runtime (upb) has no 64 MiB limit; messages up to
protobuf's 2 GiB format limit parse.  Weights go through :func:`read_caffemodel`
and :func:`write_caffemodel`, which walk the wire format a layer at a time and
move each blob's packed values straight between the file and one numpy array, so
a caffemodel of hundreds of MB loads in well under a second holding its weights
once (a whole-message parse holds the file's bytes and the parsed message too).
"""

import contextlib
import os
import re
import tempfile
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, EncodeError

from jitnet.errors import ProtoError
from jitnet.proto import caffe_pb2 as pb
from jitnet.proto.upgrade import unknown_field_hint, upgrade_net, upgrade_solver

__all__ = [
    "read_text", "write_text", "read_binary", "write_binary",
    "read_net", "read_net_binary", "read_solver",
    "upgrade_net", "upgrade_solver",
    "blob_to_array", "blob_diff_to_array", "array_to_blob",
    "read_blob_proto", "write_blob_proto",
    "read_caffemodel", "write_caffemodel", "BlobValues",
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


@contextlib.contextmanager
def _atomic_file(path):
    """A binary stream writing to a temporary file in ``path``'s folder that replaces
    ``path`` (keeping its permissions) when the block ends without an error, so that
    readers never see a half-written file; OSError as ProtoError naming ``path``."""
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
            yield stream
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


def _write_bytes_atomically(data, path):
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    with _atomic_file(path) as stream:
        stream.write(data)


#: protobuf puts "LINE:COLUMN : " in front of its parse error messages; the
#: position goes into ProtoError's own "file:line:column: " prefix instead.
_POSITION_PREFIX = re.compile(r"^\s*\d+(:\d+)?\s*:\s*")

#: protobuf's message for a field the schema lacks (a typo, or a fork's field).
_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')

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
    binary_hint = (f"; this is a binary file (a .caffemodel or .binaryproto?), but a "
                   f"{message.DESCRIPTOR.name} is read from a text prototxt here"
                   + (" (weights go to weights=..., or --weights)"
                      if message.DESCRIPTOR.name == "NetParameter" else ""))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ProtoError("the file is not UTF-8 text" + binary_hint, path=path, line=line) from None
    message.Clear()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        what = _POSITION_PREFIX.sub("", str(error))
        unknown = _UNKNOWN_FIELD.search(what)
        if unknown:
            what = what.rstrip(".") + unknown_field_hint(unknown.group(1).rsplit(".", 1)[-1], unknown.group(2))
        if "\0" in text:
            what += binary_hint
        raise ProtoError(caffe_names(what), path=path, line=error.GetLine(),
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


# ---------------------------------------------------------------------------
# Caffemodels of any size, a layer at a time
# ---------------------------------------------------------------------------
#
# A caffemodel is one NetParameter message whose layers carry their learned blobs. Parsing
# it whole holds the file's bytes and the parsed message (two full copies of the weights)
# before a single value reaches numpy, so for VGG-16's 550 MB file about 1.1 GB on top of
# the net. The reader below walks the protobuf wire format itself: everything but the
# blobs' values (names, types, parameters, shapes) is parsed by protobuf as usual, and the
# packed values are read straight from the file into one numpy array per blob. The
# writer does the reverse, so a net of any size is saved without a serialized copy.

#: The blobs field of each kind of layer message, by the NetParameter field holding it.
_NET_LAYER_FIELDS = {pb.NetParameter.LAYER_FIELD_NUMBER: ("layer", pb.LayerParameter.BLOBS_FIELD_NUMBER),
                     pb.NetParameter.LAYERS_FIELD_NUMBER: ("layers", pb.V1LayerParameter.BLOBS_FIELD_NUMBER)}
_LAYER_NAME_FIELD = {"layer": pb.LayerParameter.NAME_FIELD_NUMBER,
                     "layers": pb.V1LayerParameter.NAME_FIELD_NUMBER}
#: BlobProto's value fields: number -> (what, numpy dtype, fixed-size wire type).
_BLOB_VALUE_FIELDS = {pb.BlobProto.DATA_FIELD_NUMBER: ("data", "<f4", 5),
                      pb.BlobProto.DIFF_FIELD_NUMBER: ("diff", "<f4", 5),
                      pb.BlobProto.DOUBLE_DATA_FIELD_NUMBER: ("data", "<f8", 1),
                      pb.BlobProto.DOUBLE_DIFF_FIELD_NUMBER: ("diff", "<f8", 1)}


class BlobValues:
    """One blob as a caffemodel stores it, values not yet checked against its shape:
    :meth:`data_array` and :meth:`diff_array` give them in the blob's shape (ProtoError on a
    count that disagrees with the shape); ``legacy`` says the shape came from the old
    num/channels/height/width fields, which Caffe matches against a target shape padded
    to 4 axes."""

    __slots__ = ("shape_proto", "data", "diff")

    def __init__(self, shape_proto, data, diff=None):
        self.shape_proto, self.data, self.diff = shape_proto, data, diff

    @classmethod
    def from_proto(cls, blob_proto):
        """The values of a parsed BlobProto."""
        shape = pb.BlobProto()
        shape.CopyFrom(blob_proto)
        for name in ("data", "diff", "double_data", "double_diff"):
            shape.ClearField(name)
        if len(blob_proto.double_data):
            data = np.array(blob_proto.double_data, dtype=np.float64)
        else:
            data = np.array(blob_proto.data, dtype=np.float32)
        if len(blob_proto.double_diff):
            diff = np.array(blob_proto.double_diff, dtype=np.float64)
        else:
            diff = np.array(blob_proto.diff, dtype=np.float32) if len(blob_proto.diff) else None
        return cls(shape, data, diff)

    @property
    def legacy(self):
        return not self.shape_proto.HasField("shape")

    def data_array(self):
        return _values_to_array(self.shape_proto, self.data, "data")

    def diff_array(self):
        """The diff in the blob's shape, or None when the blob stores none."""
        return None if self.diff is None else _values_to_array(self.shape_proto, self.diff, "diff")


class _WireReader:
    """Reads protobuf wire format from a binary file, tracking the position for errors."""

    def __init__(self, stream, path, size, message):
        self.stream, self.path, self.size, self.message = stream, path, size, message
        self.pos = 0
        self.where = ""          # the layer being read, for error messages

    def fail(self, what):
        where = f" in {self.where}" if self.where else ""
        raise ProtoError(f"not a valid binary {self.message} (truncated or corrupt file): "
                         f"{what}{where} at byte {self.pos} of {self.size}", path=self.path)

    def read(self, n):
        if n > self.size - self.pos:
            self.fail(f"a field needs {n} bytes but the file ends after {self.size - self.pos}")
        data = self.stream.read(n)
        if len(data) != n:
            self.fail("the file ended early")
        self.pos += n
        return data

    def read_into(self, array):
        view = memoryview(array).cast("B")
        if view.nbytes > self.size - self.pos:
            self.fail(f"a blob needs {view.nbytes} bytes of values but the file ends after "
                      f"{self.size - self.pos}")
        done = 0
        while done < view.nbytes:
            n = self.stream.readinto(view[done:])
            if not n:
                self.fail("the file ended early")
            done += n
        self.pos += done

    def varint(self):
        """(value, its encoded bytes)."""
        value, shift, raw = 0, 0, bytearray()
        while True:
            byte = self.read(1)[0]
            raw.append(byte)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, bytes(raw)
            shift += 7
            if shift > 63:
                self.fail("a varint longer than 10 bytes")

    def tag(self):
        """(field number, wire type, the tag's bytes)."""
        value, raw = self.varint()
        field, wire_type = value >> 3, value & 7
        if field == 0 or wire_type not in (0, 1, 2, 5):
            self.fail(f"field number {field} with wire type {wire_type}")
        return field, wire_type, raw

    def length(self, end):
        n, raw = self.varint()
        if self.pos + n > end:
            self.fail(f"a field of {n} bytes runs past the end of "
                      f"{'the file' if end == self.size else 'its message'}")
        return n, raw

    def field_body(self, wire_type, end):
        """The bytes of one field's value after its tag (length prefix included)."""
        if wire_type == 0:
            return self.varint()[1]
        if wire_type == 1:
            return self.read(8)
        if wire_type == 5:
            return self.read(4)
        n, raw = self.length(end)
        return raw + self.read(n)


def _read_blob(reader, end):
    """One BlobProto of ``end - reader.pos`` bytes: shape fields through protobuf, the values
    straight into numpy arrays."""
    header = bytearray()
    values = {"data": [], "diff": []}
    dtypes = {}
    while reader.pos < end:
        field, wire_type, tag = reader.tag()
        spec = _BLOB_VALUE_FIELDS.get(field)
        if spec is None:
            header += tag + reader.field_body(wire_type, end)
            continue
        what, dtype, fixed_wire = spec
        if dtypes.setdefault(what, dtype) != dtype:
            reader.fail(f"a blob with both float and double {what} values")
        itemsize = np.dtype(dtype).itemsize
        if wire_type == 2:                      # packed (what Caffe writes)
            n, _ = reader.length(end)
            if n % itemsize:
                reader.fail(f"{n} bytes of packed {what} values, not a multiple of {itemsize}")
            array = np.empty(n // itemsize, dtype)
            reader.read_into(array)
        elif wire_type == fixed_wire:           # one unpacked value
            array = np.frombuffer(reader.read(itemsize), dtype)
        else:
            reader.fail(f"blob {what} values with wire type {wire_type}")
        values[what].append(array)
    if reader.pos != end:
        reader.fail("a blob runs past the end of its layer")
    shape_proto = pb.BlobProto()
    try:
        shape_proto.ParseFromString(bytes(header))
    except (DecodeError, RuntimeError, ValueError) as error:
        reader.fail(f"a blob's shape cannot be parsed ({caffe_names(str(error))})")
    flat = {}
    for what, chunks in values.items():
        if chunks:
            array = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            flat[what] = array.astype(array.dtype.newbyteorder("="), copy=False)
    return BlobValues(shape_proto, flat.get("data", np.empty(0, np.float32)), flat.get("diff"))


def _read_layer(reader, end, kind, index):
    """(the layer's bytes without its blobs, [BlobValues]) for one layer message."""
    blobs_field, name_field = _NET_LAYER_FIELDS_BY_KIND[kind], _LAYER_NAME_FIELD[kind]
    rest, blobs = bytearray(), []
    reader.where = f"{kind} {index}"
    while reader.pos < end:
        field, wire_type, tag = reader.tag()
        if field == blobs_field and wire_type == 2:
            n, _ = reader.length(end)
            blobs.append(_read_blob(reader, reader.pos + n))
            continue
        body = reader.field_body(wire_type, end)
        if field == name_field and wire_type == 2:
            _, raw = _decode_varint(body)
            reader.where = f"layer '{body[len(raw):].decode('utf-8', 'replace')}'"
        rest += tag + body
    if reader.pos != end:
        reader.fail("a layer runs past the end of the file")
    return bytes(rest), blobs


_NET_LAYER_FIELDS_BY_KIND = {kind: blobs for kind, blobs in _NET_LAYER_FIELDS.values()}


def _decode_varint(data, start=0):
    value, shift, i = 0, 0, start
    while True:
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return value, data[start:i]
        shift += 7


def _looks_like_text(path):
    """Whether the first KiB of the file is printable UTF-8 (a prototxt, not a caffemodel)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(1024)
    except OSError:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        text = head[:error.start].decode("utf-8")
        if error.start < len(head) - 4:
            return False
    return bool(text.strip()) and all(c.isprintable() or c in "\t\r\n" for c in text)


def read_caffemodel(path):
    """Read the caffemodel ``path`` a layer at a time: return ``(net_param, blobs)``.

    ``net_param`` is the file's NetParameter, upgraded to the current format, with every
    layer's ``blobs`` left empty; ``blobs`` lists ``(layer name, [BlobValues])`` for every
    layer of the file, in its order (an empty list for a layer without blobs). Each blob's values are read from the
    file directly into one numpy array, so the weights are held once (a file of any size
    up to protobuf's 2 GiB message limit, and beyond, loads). Raises ProtoError naming the
    file for a missing, truncated or corrupt file, and a hint when it is a text prototxt.
    """
    size = os.path.getsize(path) if os.path.isfile(path) else None
    if size is None:
        _read_bytes(path)                         # raises the right ProtoError
    try:
        stream = open(path, "rb")
    except OSError as error:
        raise ProtoError(f"cannot read file: {error.strerror or error}", path=path) from None
    message = f"'{caffe_names(pb.NetParameter.DESCRIPTOR.full_name)}'"
    kept, layer_blobs = bytearray(), []
    try:
        with stream:
            reader = _WireReader(stream, path, size, message)
            while reader.pos < size:
                reader.where = ""
                field, wire_type, tag = reader.tag()
                if field in _NET_LAYER_FIELDS and wire_type == 2:
                    kind = _NET_LAYER_FIELDS[field][0]
                    n, _ = reader.length(size)
                    index = sum(1 for k, _ in layer_blobs if k == kind)
                    rest, blobs = _read_layer(reader, reader.pos + n, kind, index)
                    kept += tag + _varint(len(rest)) + rest
                    layer_blobs.append((kind, blobs))
                else:
                    kept += tag + reader.field_body(wire_type, size)
    except ProtoError as error:
        if _looks_like_text(path):
            raise ProtoError(f"{error.args[0].split(': ', 1)[-1]}. This is a text file (a "
                             "prototxt?); weights are a binary .caffemodel (or .caffemodel.h5)",
                             path=path) from None
        raise
    net_param = pb.NetParameter()
    try:
        net_param.ParseFromString(bytes(kept))
    except (DecodeError, RuntimeError, ValueError) as error:
        hint = (". This is a text file (a prototxt?); weights are a binary .caffemodel"
                if _looks_like_text(path) else "")
        raise ProtoError(f"not a valid binary {message} (truncated or corrupt file): "
                         f"{caffe_names(str(error))}{hint}", path=path) from None
    _check_initialized(net_param, path)
    named, counters = [], {"layer": iter(net_param.layer), "layers": iter(net_param.layers)}
    for kind, blobs in layer_blobs:
        named.append((next(counters[kind]).name, blobs))
    upgrade_net(net_param, path)
    if any(layer.blobs for layer in net_param.layer):     # V0 files: blobs inside the V0 layer
        named = [(layer.name, [BlobValues.from_proto(bp) for bp in layer.blobs])
                 for layer in net_param.layer]
        for layer in net_param.layer:
            del layer.blobs[:]
    return net_param, named


def _split_serialized(data, number):
    """``data`` (a serialized message, fields in number order) cut before the first field
    whose number is above ``number``: (head, tail)."""
    i = 0
    while i < len(data):
        tag, raw = _decode_varint(data, i)
        field, wire_type = tag >> 3, tag & 7
        if field > number:
            return data[:i], data[i:]
        j = i + len(raw)
        if wire_type == 0:
            _, body = _decode_varint(data, j)
            j += len(body)
        elif wire_type == 1:
            j += 8
        elif wire_type == 5:
            j += 4
        else:
            n, body = _decode_varint(data, j)
            j += len(body) + n
        i = j
    return data, b""


def _blob_parts(data, diff=None, legacy=False):
    """The serialized BlobProto of ``data`` (and ``diff``) as a list of byte strings and
    arrays (written as they are, without a copy), in the order protobuf writes the fields;
    the same encoding as :func:`array_to_blob`. With ``legacy`` the 4-D shape goes to the
    old num/channels/height/width fields (as Caffe keeps them when it upgrades a file)."""
    data = np.asarray(data)
    double = data.dtype == np.float64
    dtype = "<f8" if double else "<f4"
    if legacy:
        if data.ndim != 4:
            raise ProtoError(f"a legacy blob shape has 4 axes, not {data.shape}")
        legacy_fields = b"".join(_varint(number << 3) + _varint(int(d)) for number, d in zip(
            (pb.BlobProto.NUM_FIELD_NUMBER, pb.BlobProto.CHANNELS_FIELD_NUMBER,
             pb.BlobProto.HEIGHT_FIELD_NUMBER, pb.BlobProto.WIDTH_FIELD_NUMBER), data.shape) if d)
        shape_field = b""
    else:
        legacy_fields = b""
        shape = b"".join(_varint(int(d)) for d in data.shape)
        shape = _varint(pb.BlobShape.DIM_FIELD_NUMBER << 3 | 2) + _varint(len(shape)) + shape if shape else b""
        shape_field = _varint(pb.BlobProto.SHAPE_FIELD_NUMBER << 3 | 2) + _varint(len(shape)) + shape

    def packed(number, values):
        values = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
        if not values.size:
            return []
        return [_varint(number << 3 | 2) + _varint(values.nbytes), values]
    if diff is not None:
        diff = np.asarray(diff)
        if diff.size != data.size:
            raise ProtoError(f"diff has {diff.size} values but the data has {data.size}")
    if double:
        parts = [legacy_fields, shape_field] + packed(pb.BlobProto.DOUBLE_DATA_FIELD_NUMBER, data)
        if diff is not None:
            parts += packed(pb.BlobProto.DOUBLE_DIFF_FIELD_NUMBER, diff)
    else:
        parts = [legacy_fields] + packed(pb.BlobProto.DATA_FIELD_NUMBER, data)
        if diff is not None:
            parts += packed(pb.BlobProto.DIFF_FIELD_NUMBER, diff)
        parts.append(shape_field)
    return [part for part in parts if len(part) or isinstance(part, np.ndarray)]


def _parts_size(parts):
    return sum(part.nbytes if isinstance(part, np.ndarray) else len(part) for part in parts)


def write_caffemodel(net_param, blobs, path):
    """Write a caffemodel a layer at a time (atomically): ``net_param`` without blob values,
    ``blobs[i]`` the list of ``(data, diff or None)`` arrays of ``net_param.layer[i]`` (or
    of :class:`BlobValues`, which keep a legacy 4-D shape as the legacy fields).

    The bytes are those ``write_binary`` writes for the same message with its blobs filled
    by :func:`array_to_blob`, but no serialized copy of the weights is ever made: each
    array is written from its own memory."""
    if len(blobs) != len(net_param.layer):
        raise ProtoError(f"{len(blobs)} lists of blobs for {len(net_param.layer)} layers", path=path)
    head = pb.NetParameter()
    head.CopyFrom(net_param)
    head.ClearField("layer")
    try:
        before, after = _split_serialized(head.SerializeToString(), pb.NetParameter.LAYER_FIELD_NUMBER)
        layers = []
        for layer, layer_blobs in zip(net_param.layer, blobs):
            bare = pb.LayerParameter()
            bare.CopyFrom(layer)
            bare.ClearField("blobs")
            layers.append((_split_serialized(bare.SerializeToString(),
                                             pb.LayerParameter.BLOBS_FIELD_NUMBER), layer_blobs))
    except EncodeError as error:
        raise ProtoError(f"cannot serialize NetParameter: {caffe_names(str(error))}", path=path) from None
    blob_tag = _varint(pb.LayerParameter.BLOBS_FIELD_NUMBER << 3 | 2)
    layer_tag = _varint(pb.NetParameter.LAYER_FIELD_NUMBER << 3 | 2)
    with _atomic_file(path) as stream:
        stream.write(before)
        for (layer_head, layer_tail), layer_blobs in layers:
            parts = []
            for values in layer_blobs:
                if isinstance(values, BlobValues):
                    blob = _blob_parts(values.data_array(), values.diff_array(), values.legacy)
                else:
                    blob = _blob_parts(*values)
                parts += [blob_tag + _varint(_parts_size(blob))] + blob
            size = len(layer_head) + _parts_size(parts) + len(layer_tail)
            stream.write(layer_tag + _varint(size) + layer_head)
            for part in parts:
                stream.write(memoryview(part).cast("B") if isinstance(part, np.ndarray) else part)
            stream.write(layer_tail)
        stream.write(after)
