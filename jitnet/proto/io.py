"""Reading and writing Caffe's protobuf files, and upgrading old net definitions.

Caffe keeps everything in protocol buffers (schema: ``caffe.proto`` next to this
file): nets and solvers as text (``.prototxt``), weights as binary
``NetParameter`` (``.caffemodel``), mean images as binary ``BlobProto``
(``.binaryproto``) and solver snapshots as binary ``SolverState``.

This module is the counterpart of Caffe's ``util/io.cpp`` and
``util/upgrade_proto.cpp``:

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
import warnings
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.message import DecodeError, EncodeError

from jitnet.errors import ProtoError
from jitnet.proto import caffe_pb2 as pb

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
        what = _POSITION_PREFIX.sub("", str(error))
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
                         f"(truncated or corrupt file): {error}", path=path) from None
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
        raise ProtoError(f"cannot serialize {message.DESCRIPTOR.name}: {error}",
                         path=path) from None
    _write_bytes_atomically(data, path)


def _check_initialized(message, path):
    """Raise ProtoError if required fields (e.g. clip_param's min) are missing."""
    if not message.IsInitialized():
        missing = ", ".join(message.FindInitializationErrors())
        raise ProtoError(f"missing required field(s): {missing}", path=path)


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


#: SolverParameter.SolverType (the old enum) -> SolverParameter.type.
_SOLVER_TYPE_NAMES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}


def upgrade_solver(solver_param, path=None):
    """Bring a SolverParameter up to date, in place, and return it.

    The old enum ``solver_type`` becomes the string ``type`` (and is cleared);
    if both are given and disagree, ProtoError.  Inline nets (``net_param``,
    ``train_net_param``, ``test_net_param``) are upgraded with
    :func:`upgrade_net`.
    """
    if solver_param.HasField("solver_type"):
        enum_name = pb.SolverParameter.SolverType.Name(solver_param.solver_type)
        new_type = _SOLVER_TYPE_NAMES[enum_name]
        if solver_param.HasField("type") and solver_param.type != new_type:
            raise ProtoError(
                f"solver_type: {enum_name} and type: \"{solver_param.type}\" disagree; "
                f"give only type (solver_type is deprecated)", path=path)
        solver_param.type = new_type
        solver_param.ClearField("solver_type")
    if solver_param.HasField("net_param"):
        upgrade_net(solver_param.net_param, path)
    if solver_param.HasField("train_net_param"):
        upgrade_net(solver_param.train_net_param, path)
    for net_param in solver_param.test_net_param:
        upgrade_net(net_param, path)
    return solver_param


def upgrade_net(net_param, path=None):
    """Bring a NetParameter up to the current format, in place, and return it.

    The steps are Caffe's, in Caffe's order:

    1. V0 layers (``layers { layer { type: "conv" ... } }``) become V1 layers,
       folding old "padding" layers into the convolution or pooling after them;
    2. V1 data layers get their scale / mean_file / crop_size / mirror moved
       from data_param (image_data_param, window_data_param) to transform_param;
    3. V1 layers (``layers { type: CONVOLUTION blobs_lr ... }``) become
       ``layer`` entries with string types and ``param { lr_mult decay_mult }``;
    4. net-level ``input`` with ``input_dim`` or ``input_shape`` becomes a first
       layer "input" of type Input.

    BatchNorm's old three ``param { lr_mult: 0 }`` are left as they are.
    ``path`` only names the file in error messages.  Raises ProtoError when a
    file mixes ``layer`` and ``layers`` or cannot be upgraded.
    """
    if net_param.layer and net_param.layers:
        raise ProtoError(
            "the net uses both 'layer' (current format) and 'layers' (old V0/V1 "
            "format); upgrade the old part (Caffe's upgrade_net_proto_text tool) "
            "and use 'layer' only", path=path)
    if any(v1_layer.HasField("layer") for v1_layer in net_param.layers):
        _upgrade_v0_net(net_param, path)
    if net_param.layers:
        _upgrade_v1_data_transformation(net_param)
        _upgrade_v1_net(net_param, path)
    if net_param.input:
        _upgrade_net_input(net_param, path)
    return net_param


# V0 -> V1 ------------------------------------------------------------------

#: V0 type strings -> V1LayerParameter.LayerType names.
_V0_LAYER_TYPES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

#: Where each V0 setting goes in a V1 layer: V0 field -> {V0 layer type ->
#: (V1 parameter message, its field)}.  The type "*" means any layer type.
#: A field of None copies the whole message.
_V0_FIELD_TARGETS = {
    "num_output": {"conv": ("convolution_param", "num_output"),
                   "innerproduct": ("inner_product_param", "num_output")},
    "biasterm": {"conv": ("convolution_param", "bias_term"),
                 "innerproduct": ("inner_product_param", "bias_term")},
    "weight_filler": {"conv": ("convolution_param", "weight_filler"),
                      "innerproduct": ("inner_product_param", "weight_filler")},
    "bias_filler": {"conv": ("convolution_param", "bias_filler"),
                    "innerproduct": ("inner_product_param", "bias_filler")},
    "pad": {"conv": ("convolution_param", "pad"),
            "pool": ("pooling_param", "pad")},
    "kernelsize": {"conv": ("convolution_param", "kernel_size"),
                   "pool": ("pooling_param", "kernel_size")},
    "group": {"conv": ("convolution_param", "group")},
    "stride": {"conv": ("convolution_param", "stride"),
               "pool": ("pooling_param", "stride")},
    "pool": {"pool": ("pooling_param", "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": ("lrn_param", "local_size")},
    "alpha": {"lrn": ("lrn_param", "alpha")},
    "beta": {"lrn": ("lrn_param", "beta")},
    "k": {"lrn": ("lrn_param", "k")},
    "source": {"data": ("data_param", "source"),
               "hdf5_data": ("hdf5_data_param", "source"),
               "images": ("image_data_param", "source"),
               "window_data": ("window_data_param", "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "scale": {"*": ("transform_param", "scale")},
    "meanfile": {"*": ("transform_param", "mean_file")},
    "cropsize": {"*": ("transform_param", "crop_size")},
    "mirror": {"*": ("transform_param", "mirror")},
    "batchsize": {"data": ("data_param", "batch_size"),
                  "hdf5_data": ("hdf5_data_param", "batch_size"),
                  "images": ("image_data_param", "batch_size"),
                  "window_data": ("window_data_param", "batch_size")},
    "rand_skip": {"data": ("data_param", "rand_skip"),
                  "images": ("image_data_param", "rand_skip")},
    "shuffle_images": {"images": ("image_data_param", "shuffle")},
    "new_height": {"images": ("image_data_param", "new_height")},
    "new_width": {"images": ("image_data_param", "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}


def _upgrade_v0_net(net_param, path):
    """Turn V0 layers (a V0LayerParameter wrapped in ``layers``) into V1 layers."""
    _fold_v0_padding_layers(net_param, path)
    upgraded = []
    for connection in net_param.layers:
        v1_layer = pb.V1LayerParameter()
        v1_layer.bottom.extend(connection.bottom)
        v1_layer.top.extend(connection.top)
        if connection.HasField("layer"):
            _upgrade_v0_layer(connection.layer, v1_layer, path)
        upgraded.append(v1_layer)
    net_param.ClearField("layers")
    net_param.layers.extend(upgraded)


def _fold_v0_padding_layers(net_param, path):
    """Remove V0 "padding" layers, giving their pad to the conv / pool layer
    that reads their output (Caffe's UpgradeV0PaddingLayers)."""
    if not any(layer.layer.type == "padding" for layer in net_param.layers):
        return
    layers = [_copy(layer) for layer in net_param.layers]
    last_writer = {name: None for name in net_param.input}  # blob -> layer index
    kept = []
    for index, connection in enumerate(layers):
        v0 = connection.layer
        if v0.type != "padding":
            kept.append(_copy(connection))
        for j, blob in enumerate(connection.bottom):
            if blob not in last_writer:
                raise ProtoError(f"V0 layer '{v0.name}': unknown bottom blob '{blob}'",
                                 path=path)
            source_index = last_writer[blob]
            if source_index is None or layers[source_index].layer.type != "padding":
                continue
            source = layers[source_index]
            if v0.type not in ("conv", "pool") or len(connection.bottom) != 1 \
                    or len(source.bottom) != 1 or len(source.top) != 1:
                raise ProtoError(
                    f"V0 padding layer '{source.layer.name}' can only feed a single-input "
                    f"conv or pool layer, with one bottom and one top itself "
                    f"(feeds '{v0.name}' of type '{v0.type}')", path=path)
            kept[-1].layer.pad = source.layer.pad
            kept[-1].bottom[j] = source.bottom[0]
        for blob in connection.top:
            last_writer[blob] = index
    net_param.ClearField("layers")
    net_param.layers.extend(kept)


def _copy(message):
    """Return a detached copy of a protobuf message."""
    duplicate = type(message)()
    duplicate.CopyFrom(message)
    return duplicate


def _upgrade_v0_layer(v0, v1_layer, path):
    """Fill the V1 layer ``v1_layer`` from the V0 settings ``v0``."""
    where = f"V0 layer '{v0.name}' (type '{v0.type}')"
    if v0.HasField("name"):
        v1_layer.name = v0.name
    if v0.HasField("type"):
        if v0.type not in _V0_LAYER_TYPES:
            raise ProtoError(f"{where}: unknown V0 layer type", path=path)
        v1_layer.type = pb.V1LayerParameter.LayerType.Value(_V0_LAYER_TYPES[v0.type])
    v1_layer.blobs.extend(v0.blobs)
    v1_layer.blobs_lr.extend(v0.blobs_lr)
    v1_layer.weight_decay.extend(v0.weight_decay)
    for field, value in v0.ListFields():
        if field.name in ("name", "type", "blobs", "blobs_lr", "weight_decay"):
            continue
        targets = _V0_FIELD_TARGETS.get(field.name, {})
        target = targets.get(v0.type) or targets.get("*")
        if target is None:
            warnings.warn(f"{path or 'net'}: {where}: setting '{field.name}' does not "
                          f"apply to this layer type and is dropped (as in Caffe)",
                          stacklevel=4)
            continue
        message_name, target_field = target
        message = getattr(v1_layer, message_name)
        if target_field is None:
            message.CopyFrom(value)
        else:
            _set_field(message, target_field, value)


def _set_field(message, name, value):
    """Set (or, for a repeated field, append) ``message.name`` to ``value``."""
    field = message.DESCRIPTOR.fields_by_name[name]
    if field.is_repeated:
        getattr(message, name).append(value)
    elif field.message_type is not None:
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


# V1 data transformation ----------------------------------------------------

#: V1 data layer types and the parameter message that held their preprocessing.
_V1_DATA_PARAMS = {"DATA": "data_param", "IMAGE_DATA": "image_data_param",
                   "WINDOW_DATA": "window_data_param"}


def _upgrade_v1_data_transformation(net_param):
    """Move scale / mean_file / crop_size / mirror of V1 data layers from their
    data parameters into transform_param (Caffe's UpgradeNetDataTransformation)."""
    for v1_layer in net_param.layers:
        type_name = pb.V1LayerParameter.LayerType.Name(v1_layer.type)
        param_name = _V1_DATA_PARAMS.get(type_name)
        if param_name is None or not v1_layer.HasField(param_name):
            continue
        data_param = getattr(v1_layer, param_name)
        for name in ("scale", "mean_file", "crop_size", "mirror"):
            if data_param.HasField(name):
                setattr(v1_layer.transform_param, name, getattr(data_param, name))
                data_param.ClearField(name)


# V1 -> current -------------------------------------------------------------

#: V1LayerParameter.LayerType names -> LayerParameter.type strings.
_V1_LAYER_TYPES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

#: V1 fields copied unchanged to the field of the same name of LayerParameter.
_V1_SAME_FIELDS = ("bottom", "top", "name", "include", "exclude", "blobs", "loss_weight")


def _upgrade_v1_net(net_param, path):
    """Replace the V1 ``layers`` by current-format ``layer`` entries."""
    upgraded = []
    for v1_layer in net_param.layers:
        layer = pb.LayerParameter()
        _upgrade_v1_layer(v1_layer, layer, path)
        upgraded.append(layer)
    net_param.ClearField("layers")
    net_param.layer.extend(upgraded)


def _param_spec(layer, index):
    """Return layer.param[index], adding empty ParamSpecs up to it."""
    while len(layer.param) <= index:
        layer.param.add()
    return layer.param[index]


def _upgrade_v1_layer(v1_layer, layer, path):
    """Fill the current-format ``layer`` from ``v1_layer`` (Caffe's
    UpgradeV1LayerParameter): string type, one ParamSpec per blob holding its
    name, share mode, lr_mult (from blobs_lr) and decay_mult (from
    weight_decay), and every per-layer parameter message copied as is."""
    for field, value in v1_layer.ListFields():
        name = field.name
        if name in _V1_SAME_FIELDS:
            if field.is_repeated:
                getattr(layer, name).extend(value)
            else:
                setattr(layer, name, value)
        elif name == "type":
            layer.type = _V1_LAYER_TYPES[pb.V1LayerParameter.LayerType.Name(value)]
        elif name == "param":
            for index, param_name in enumerate(value):
                _param_spec(layer, index).name = param_name
        elif name == "blob_share_mode":
            for index, mode in enumerate(value):
                mode_name = pb.V1LayerParameter.DimCheckMode.Name(mode)
                _param_spec(layer, index).share_mode = pb.ParamSpec.DimCheckMode.Value(mode_name)
        elif name == "blobs_lr":
            for index, lr_mult in enumerate(value):
                _param_spec(layer, index).lr_mult = lr_mult
        elif name == "weight_decay":
            for index, decay_mult in enumerate(value):
                _param_spec(layer, index).decay_mult = decay_mult
        elif name == "layer":
            warnings.warn(f"{path or 'net'}: layer '{v1_layer.name}' still holds a V0 "
                          f"layer definition, which is ignored (as in Caffe)", stacklevel=4)
        elif name.endswith("_param"):
            getattr(layer, name).CopyFrom(value)
        else:  # pragma: no cover - every V1 field is handled above
            raise ProtoError(f"layer '{v1_layer.name}': cannot upgrade V1 field '{name}'",
                             path=path)


# Net inputs ----------------------------------------------------------------

def _upgrade_net_input(net_param, path):
    """Turn net-level ``input`` + ``input_shape`` / ``input_dim`` into a first
    layer named "input" of type Input (Caffe's UpgradeNetInput).  Names without
    any shape (old caffemodels) are simply dropped."""
    names = list(net_param.input)
    shapes = [list(shape.dim) for shape in net_param.input_shape]
    dims = list(net_param.input_dim)
    if shapes and dims:
        raise ProtoError("give the net inputs' shapes either as input_shape or as "
                         "input_dim, not both", path=path)
    if dims:
        if len(dims) != 4 * len(names):
            raise ProtoError(f"{len(names)} input(s) need {4 * len(names)} input_dim "
                             f"values (4 each), found {len(dims)}", path=path)
        shapes = [dims[4 * i:4 * i + 4] for i in range(len(names))]
    if shapes:
        if len(shapes) != len(names):
            raise ProtoError(f"{len(names)} input(s) but {len(shapes)} input_shape(s)",
                             path=path)
        input_layer = pb.LayerParameter(name="input", type="Input")
        input_layer.top.extend(names)
        for shape in shapes:
            input_layer.input_param.shape.add().dim.extend(shape)
        layers = [input_layer] + list(net_param.layer)
        net_param.ClearField("layer")
        net_param.layer.extend(layers)
    net_param.ClearField("input")
    net_param.ClearField("input_shape")
    net_param.ClearField("input_dim")


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
