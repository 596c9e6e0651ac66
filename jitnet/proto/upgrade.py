"""Upgrading old net and solver definitions to the current format, as Caffe's
``util/upgrade_proto.cpp`` does when it loads them.

* :func:`upgrade_net` turns V0 layers (``layers { layer { type: "conv" } }``)
  into V1, moves V1 data layers' preprocessing into ``transform_param``, turns
  V1 layers (``layers { type: CONVOLUTION blobs_lr ... }``) into current
  ``layer`` entries, and net-level ``input`` + ``input_dim`` / ``input_shape``
  into an Input layer;
* :func:`upgrade_solver` turns the old ``solver_type`` enum into the string
  ``type`` and upgrades inline nets.

:mod:`jitnet.proto.io` calls them when it reads a file; they are also
importable from :mod:`jitnet.proto` and :mod:`jitnet.proto.io`.  Every problem
is raised as :class:`jitnet.errors.ProtoError`.
"""

import warnings

from jitnet.errors import ProtoError
from jitnet.proto import caffe_pb2 as pb

__all__ = ["upgrade_net", "upgrade_solver", "unknown_field_hint"]


#: Fields that Caffe forks added to Caffe's messages, and what Caffe 1.0 has instead:
#: (message, field) -> the suggestion shown after "no field named ...".
FORK_FIELDS = {
    ("PoolingParameter", "ceil_mode"):
        "Caffe's equivalent is round_mode (ceil_mode: true is round_mode: CEIL, Caffe's "
        "default; ceil_mode: false is round_mode: FLOOR)",
    ("BatchNormParameter", "scale_filler"):
        "Caffe's BatchNorm has no scale or shift: follow it with a Scale layer "
        "(scale_param { bias_term: true filler {...} })",
    ("BatchNormParameter", "bias_filler"):
        "Caffe's BatchNorm has no scale or shift: follow it with a Scale layer "
        "(scale_param { bias_term: true bias_filler {...} })",
}


def unknown_field_hint(message_name, field):
    """A suggestion for the field ``field`` that the message ``message_name`` (e.g.
    "PoolingParameter") does not have: Caffe's equivalent of a fork's field, or the
    closest field names; "" when there is none."""
    hint = FORK_FIELDS.get((message_name, field))
    if hint:
        return f"; it exists only in Caffe forks: {hint}"
    import difflib
    descriptor = pb.DESCRIPTOR.message_types_by_name.get(message_name)
    if descriptor is None:
        return ""
    close = difflib.get_close_matches(field, list(descriptor.fields_by_name), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


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
