"""One emitter per layer type: the ONNX nodes that compute what the layer's TEST-phase
forward computes, with Caffe's semantics (``EMITTERS``); and the types that have no
faithful ONNX form, with the reason (``REFUSED``).

An emitter ``emit(ctx)`` gets a :class:`~jitnet.export.onnx_graph.LayerContext` and adds
nodes producing ``ctx.tops`` from ``ctx.bottoms``. It reads the layer as jitnet set it up
(kernel sizes, axes, learned blobs), so the graph computes the same numbers as the layer's
forward. Where ONNX's operator and Caffe's layer differ (pooling's last window and divisor,
TopK's ties, Clip with min > max, MVN, LRN WITHIN_CHANNEL), the emitter pads explicitly or
decomposes; the docstrings say how.
"""
import math

import numpy as np

from ..proto import pb

FLT_MAX = float(np.finfo(np.float32).max)
FLT_MIN = float(np.finfo(np.float32).tiny)

EMITTERS = {}

_DATA = ("a data layer: an ONNX graph takes its inputs from the caller. Export the deploy net, "
         "whose inputs are Input layers (or net-level input: fields)")
_LOSS = ("a loss layer: it scores predictions against labels while training, and inference "
         "graphs leave it out. Export the deploy net")
REFUSED = {
    "Data": _DATA, "ImageData": _DATA, "WindowData": _DATA, "HDF5Data": _DATA,
    "MemoryData": _DATA, "DummyData": _DATA,
    "SoftmaxWithLoss": _LOSS, "EuclideanLoss": _LOSS, "MultinomialLogisticLoss": _LOSS,
    "InfogainLoss": _LOSS, "SigmoidCrossEntropyLoss": _LOSS, "HingeLoss": _LOSS,
    "ContrastiveLoss": _LOSS,
    "Accuracy": ("an accuracy (metric) layer: it scores predictions against labels, and inference "
                 "graphs leave it out. Export the deploy net"),
    "HDF5Output": "it writes an HDF5 file, which an ONNX graph cannot do",
    "Python": ("a user's Python layer: its forward is the user's own code, which has no ONNX form. "
               "Replace it with built-in layers to export the net"),
    # Caffe's recurrent layers reset their state at any time step where cont is 0, which ONNX's
    # LSTM and RNN operators do not express (a Loop over the time steps would)
    "LSTM": "not exported to ONNX yet (Caffe's recurrent layers reset their state where cont is 0)",
    "RNN": "not exported to ONNX yet (Caffe's recurrent layers reset their state where cont is 0)",
}


def emits(*types):
    def register(function):
        for type_name in types:
            EMITTERS[type_name] = function
        return function
    return register


def _trailing_ones(shape, count):
    return tuple(shape) + (1,) * count


# =========================================================================== neurons
@emits("ReLU")
def emit_relu(ctx):
    """Relu, or LeakyRelu(alpha = negative_slope)."""
    slope = ctx.layer.param.relu_param.negative_slope
    if slope == 0:
        ctx.node("Relu", ctx.bottoms, ctx.tops)
    else:
        ctx.node("LeakyRelu", ctx.bottoms, ctx.tops, alpha=float(slope))


@emits("Sigmoid", "TanH", "AbsVal", "BNLL")
def emit_pointwise(ctx):
    """Sigmoid, Tanh, Abs, Softplus (BNLL: log(1 + eˣ))."""
    op = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus"}[ctx.layer.type]
    ctx.node(op, ctx.bottoms, ctx.tops)


@emits("LSTMUnit")
def emit_lstm_unit(ctx):
    """Caffe's LSTMUnit, decomposed: the gate inputs (1, N, 4H) split on axis 2 into i, f, o, g
    (Sigmoid, Sigmoid, Sigmoid, Tanh); c = cont·f·c_prev + i·g and h = o·tanh(c), cont (1, N)
    broadcast over H."""
    c_prev, x, cont = ctx.bottoms
    hidden = ctx.bottom_shapes[0][2]
    parts = ctx.split(x, 2, [hidden] * 4, [ctx.g.unique(f"{ctx.name}/{gate}") for gate in "ifog"])
    i, f, o = (ctx.node("Sigmoid", [part]) for part in parts[:3])
    g = ctx.node("Tanh", [parts[3]])
    kept = ctx.node("Mul", [ctx.unsqueeze(cont, [2]), ctx.node("Mul", [f, c_prev])])
    c = ctx.node("Add", [kept, ctx.node("Mul", [i, g])], ctx.tops[0])
    ctx.node("Mul", [o, ctx.node("Tanh", [c])], ctx.tops[1])


@emits("Dropout")
def emit_dropout(ctx):
    """Identity: Dropout scales in TRAIN only (Caffe's inverted dropout)."""
    ctx.node("Identity", ctx.bottoms, ctx.tops)


@emits("ELU")
def emit_elu(ctx):
    ctx.node("Elu", ctx.bottoms, ctx.tops, alpha=float(ctx.layer.param.elu_param.alpha))


def _affine(ctx, x, scale, shift):
    """scale·x + shift, with nodes only where scale ≠ 1 and shift ≠ 0."""
    if scale != 1:
        x = ctx.node("Mul", [x, ctx.floats(scale, "scale")])
    if shift != 0:
        x = ctx.node("Add", [x, ctx.floats(shift, "shift")])
    return x


def _scaled(ctx, op, x, factor):
    """The top as op(x)·factor (no Mul for a factor of 1)."""
    if factor == 1:
        ctx.node(op, [x], ctx.tops)
    else:
        ctx.node("Mul", [ctx.node(op, [x]), ctx.floats(factor, "factor")], ctx.tops)


@emits("Exp")
def emit_exp(ctx):
    """y = outer·exp(inner·x), inner = scale·ln(base), outer = base^shift (as the layer computes)."""
    layer = ctx.layer
    _scaled(ctx, "Exp", _affine(ctx, ctx.bottoms[0], layer.inner_scale, 0), layer.outer_scale)


@emits("Log")
def emit_log(ctx):
    """y = ln(shift + scale·x) / ln(base)."""
    layer = ctx.layer
    _scaled(ctx, "Log", _affine(ctx, ctx.bottoms[0], layer.scale, layer.shift), layer.base_scale)


@emits("Power")
def emit_power(ctx):
    """y = (shift + scale·x)^power; a constant of x's shape when power·scale = 0 (Caffe's case)."""
    layer = ctx.layer
    if layer.diff_scale == 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = 1.0 if layer.power == 0 else float(np.float64(layer.shift) ** layer.power)
        value = ctx.g.numpy_helper.from_array(np.array([value], dtype=np.float32), "value")
        ctx.node("ConstantOfShape", [ctx.node("Shape", ctx.bottoms)], ctx.tops, value=value)
        return
    base = _affine(ctx, ctx.bottoms[0], layer.scale, layer.shift)
    if layer.power == 1:
        ctx.out(0, base)
    else:
        ctx.node("Pow", [base, ctx.floats(layer.power, "power")], ctx.tops)


@emits("PReLU")
def emit_prelu(ctx):
    """PRelu with the slopes shaped (C, 1, ...) to broadcast over axis 1 (one slope: shape (1,))."""
    slopes = ctx.layer.blobs[0].data
    ndim = len(ctx.bottom_shapes[0])
    shape = (1,) if ctx.layer.shared else _trailing_ones(slopes.shape, ndim - 2)
    ctx.node("PRelu", [ctx.bottoms[0], ctx.weight("slope", slopes.reshape(shape))], ctx.tops)


@emits("Swish")
def emit_swish(ctx):
    """y = x·sigmoid(beta·x)."""
    x, beta = ctx.bottoms[0], float(ctx.layer.param.swish_param.beta)
    scaled = x if beta == 1 else ctx.node("Mul", [x, ctx.floats(beta, "beta")])
    ctx.node("Mul", [x, ctx.node("Sigmoid", [scaled])], ctx.tops)


@emits("Threshold")
def emit_threshold(ctx):
    """y = 1 if x > threshold else 0: Cast(Greater)."""
    t = float(ctx.layer.param.threshold_param.threshold)
    ctx.cast(ctx.node("Greater", [ctx.bottoms[0], ctx.floats(t, "threshold")]), "FLOAT", ctx.tops)


@emits("Clip")
def emit_clip(ctx):
    """Clip; as Max(Min(x, max), min) when min > max, where Caffe gives min and ONNX's Clip max."""
    p = ctx.layer.param.clip_param
    if p.min <= p.max:
        ctx.clip(ctx.bottoms[0], p.min, p.max, ctx.tops)
    else:
        low = ctx.node("Min", [ctx.bottoms[0], ctx.floats(p.max, "max")])
        ctx.node("Max", [low, ctx.floats(p.min, "min")], ctx.tops)


# =========================================================================== common layers
@emits("Split")
def emit_split(ctx):
    """Nothing: every top is the bottom (the exporter maps the tops to the bottom's value)."""


@emits("Silence")
def emit_silence(ctx):
    """Nothing: it only consumes blobs."""


@emits("Softmax")
def emit_softmax(ctx):
    """Softmax along the axis (opset 13's per-axis form; older opsets coerce to 2-D, which is
    the same only when the axes after it have one value)."""
    shape = ctx.bottom_shapes[0]
    axis = ctx.layer.axis
    if math.prod(shape[axis + 1:]) != 1:
        ctx.require("Softmax", 13, f"along axis {axis} of a {len(shape)}-D blob")
    ctx.node("Softmax", ctx.bottoms, ctx.tops, axis=axis)


@emits("InnerProduct")
def emit_inner_product(ctx):
    """y = x·Wᵀ + b with x seen as (M, K) from ``axis``: Flatten(axis=1) + Gemm for axis 1 (W in
    Caffe's (num_output, K) layout); for another axis, Reshape to x.shape[:axis] + (K,) and MatMul
    (W stored as (K, num_output)), then Add b."""
    layer, x = ctx.layer, ctx.bottoms[0]
    shape, axis = ctx.bottom_shapes[0], ctx.layer.axis
    w = layer.blobs[0].data
    b = layer.blobs[1].data if layer.bias_term else None
    if axis == 1:
        if len(shape) != 2:
            x = ctx.node("Flatten", [x], axis=1)
        inputs = [x, ctx.weight("weight", w)]
        if b is not None:
            inputs.append(ctx.weight("bias", b))
        elif ctx.opset < 11:                    # Gemm's C is optional from opset 11
            inputs.append(ctx.floats(np.zeros(layer.N), "zero_bias"))
        ctx.node("Gemm", inputs, ctx.tops, transB=0 if layer.transpose else 1)
        return
    if len(shape) != axis + 1:
        x = ctx.reshape(x, [0] * axis + [-1])
    matrix = w if layer.transpose else w.T
    if b is None:
        ctx.node("MatMul", [x, ctx.weight("weight", matrix)], ctx.tops)
    else:
        ctx.node("Add", [ctx.node("MatMul", [x, ctx.weight("weight", matrix)]), ctx.weight("bias", b)],
                 ctx.tops)


@emits("Flatten")
def emit_flatten(ctx):
    """Axes axis..end_axis merged: ONNX Flatten(axis=1) when that is the whole tail of a blob,
    otherwise Reshape (0 for the axes before, -1 for the merged one); end_axis = axis − 1
    inserts an axis of size 1 (Unsqueeze)."""
    shape = ctx.bottom_shapes[0]
    p = ctx.layer.param.flatten_param
    n = len(shape)
    start = p.axis + n if p.axis < 0 else p.axis
    end = p.end_axis + n if p.end_axis < 0 else p.end_axis
    if end == start - 1:
        ctx.unsqueeze(ctx.bottoms[0], [start], ctx.tops)
    elif start == 1 and end == n - 1:
        ctx.node("Flatten", ctx.bottoms, ctx.tops, axis=1)
    else:
        ctx.reshape(ctx.bottoms[0], [0] * start + [-1] + list(shape[end + 1:]), ctx.tops)


@emits("Reshape")
def emit_reshape(ctx):
    """Reshape with Caffe's dims kept: ONNX's 0 copies the input's dim at the same index, as
    Caffe's does, and -1 is inferred by both; the axes before ``axis`` are written 0, the axes
    after ``axis + num_axes`` as they are."""
    p = ctx.layer.param.reshape_param
    shape = ctx.bottom_shapes[0]
    n = len(shape)
    start = p.axis if p.axis >= 0 else n + p.axis + 1
    end = n if p.num_axes == -1 else start + p.num_axes
    target = [0] * start + list(p.shape.dim) + list(shape[end:])
    ctx.reshape(ctx.bottoms[0], target, ctx.tops)


def _span_operand(ctx, array_or_value, operand_ndim, is_value, hint):
    """A Scale / Bias operand broadcast from ``axis`` over bottom[0]: trailing axes of size 1
    appended (ONNX broadcasts from the right, Caffe from ``axis``)."""
    shape = ctx.bottom_shapes[0]
    axis = 0 if operand_ndim == 0 else (ctx.layer.param.scale_param.axis if ctx.layer.type == "Scale"
                                        else ctx.layer.param.bias_param.axis)
    axis = axis + len(shape) if axis < 0 else axis
    trailing = len(shape) - axis - operand_ndim
    if is_value:
        if operand_ndim == 0 or trailing == 0:
            return array_or_value
        return ctx.reshape(array_or_value, [0] * operand_ndim + [1] * trailing)
    array = np.asarray(array_or_value)
    return ctx.weight(hint, array.reshape(_trailing_ones(array.shape, trailing if operand_ndim else 0)))


@emits("Scale")
def emit_scale(ctx):
    """y = x·s (+ b), s (learned, or bottom 1) and b shaped for ONNX's right-aligned broadcast."""
    layer, x = ctx.layer, ctx.bottoms[0]
    if layer.learned:
        s = _span_operand(ctx, layer.blobs[0].data, layer.blobs[0].num_axes, False, "scale")
    else:
        s = _span_operand(ctx, ctx.bottoms[1], len(ctx.bottom_shapes[1]), True, "scale")
    if not layer.bias_term:
        ctx.node("Mul", [x, s], ctx.tops)
        return
    bias = layer.blobs[-1]
    b = _span_operand(ctx, bias.data, bias.num_axes, False, "bias")
    ctx.node("Add", [ctx.node("Mul", [x, s]), b], ctx.tops)


@emits("Bias")
def emit_bias(ctx):
    """y = x + b, b (learned, or bottom 1) shaped for ONNX's right-aligned broadcast."""
    layer = ctx.layer
    if layer.learned:
        b = _span_operand(ctx, layer.blobs[0].data, layer.blobs[0].num_axes, False, "bias")
    else:
        b = _span_operand(ctx, ctx.bottoms[1], len(ctx.bottom_shapes[1]), True, "bias")
    ctx.node("Add", [ctx.bottoms[0], b], ctx.tops)


@emits("Crop")
def emit_crop(ctx):
    """Slice of the axes from ``axis`` at the layer's offsets, as long as the reference; when
    axis 0 is cropped and the batch is free, the ends come from the reference's shape."""
    shape_x = ctx.bottom_shapes[0]
    _, top_shape, offsets = (a.tolist() for a in ctx.layer.geometry)
    axis = ctx.layer.param.crop_param.axis
    axis = axis + len(shape_x) if axis < 0 else axis
    axes = list(range(axis, len(shape_x)))
    starts = [offsets[a] for a in axes]
    if ctx.dynamic and axis == 0:
        reference = ctx.node("Shape", [ctx.bottoms[1]])
        ends = ctx.node("Add", [reference, ctx.ints(starts, "offsets")])
        ctx.node("Slice", [ctx.bottoms[0], ctx.ints(starts, "starts"), ends, ctx.ints(axes, "axes")],
                 ctx.tops)
        return
    ctx.slice(ctx.bottoms[0], starts, [offsets[a] + top_shape[a] for a in axes], axes, outputs=ctx.tops)


# =========================================================================== utility layers
@emits("Concat")
def emit_concat(ctx):
    if len(ctx.bottoms) == 1:
        ctx.out(0, ctx.bottoms[0])
        return
    ctx.node("Concat", ctx.bottoms, ctx.tops, axis=ctx.layer.axis)


@emits("Slice")
def emit_slice(ctx):
    """Split at the slice points (the sizes as jitnet worked them out)."""
    if len(ctx.tops) == 1:
        ctx.out(0, ctx.bottoms[0])
        return
    ctx.split(ctx.bottoms[0], ctx.layer.axis, ctx.layer.sizes, ctx.tops)


@emits("Eltwise")
def emit_eltwise(ctx):
    """SUM: Σ c_k·x_k (Mul by each coefficient other than 1, then Add / Sum); PROD: Mul;
    MAX: Max (equal values tie: the forward value is the same whichever bottom wins)."""
    layer, xs = ctx.layer, ctx.bottoms
    op = layer.op
    if op == pb.EltwiseParameter.SUM:
        terms = [x if c == 1 else ctx.node("Mul", [x, ctx.floats(c, "coeff")])
                 for x, c in zip(xs, layer.coeffs)]
        ctx.node("Add" if len(terms) == 2 else "Sum", terms, ctx.tops)
    elif op == pb.EltwiseParameter.PROD:
        y = xs[0]
        for k, x in enumerate(xs[1:], 1):
            y = ctx.node("Mul", [y, x], ctx.tops if k == len(xs) - 1 else None)
    else:
        ctx.node("Max", xs, ctx.tops)


@emits("Tile")
def emit_tile(ctx):
    """Tile with repeats ``tiles`` on the axis (the block from the axis on repeats, as np.tile)."""
    p = ctx.layer.param.tile_param
    n = len(ctx.bottom_shapes[0])
    axis = p.axis + n if p.axis < 0 else p.axis
    repeats = [1] * n
    repeats[axis] = p.tiles
    ctx.node("Tile", [ctx.bottoms[0], ctx.ints(repeats, "repeats")], ctx.tops)


@emits("Reduction")
def emit_reduction(ctx):
    """ReduceSum / ReduceL1 (ASUM) / ReduceSumSquare (SUMSQ) / ReduceMean over the axes from
    ``axis`` on, times coeff."""
    p = ctx.layer.param.reduction_param
    n = len(ctx.bottom_shapes[0])
    axis = p.axis + n if p.axis < 0 else p.axis
    R = pb.ReductionParameter
    op = {R.SUM: "ReduceSum", R.ASUM: "ReduceL1", R.SUMSQ: "ReduceSumSquare",
          R.MEAN: "ReduceMean"}[p.operation]
    axes = list(range(axis, n))
    if p.coeff == 1:
        ctx.reduce(op, ctx.bottoms[0], axes, False, ctx.tops)
    else:
        ctx.node("Mul", [ctx.reduce(op, ctx.bottoms[0], axes, False), ctx.floats(p.coeff, "coeff")],
                 ctx.tops)


def _top_k(ctx, x, axis, dim, k):
    """(values, indices as float) of the k largest along ``axis``, among equal values the larger
    index first (Caffe's order; ONNX's TopK puts the smaller index first, so the axis is read
    backwards and the indices turned back). k = 1: ArgMax with select_last_index."""
    if k == 1:
        ctx.require("ArgMax", 12, "with select_last_index (Caffe's ties: the larger index)")
        index = ctx.node("ArgMax", [x], axis=axis, keepdims=1, select_last_index=1)
        values = ctx.reduce("ReduceMax", x, [axis], True)
        return values, ctx.cast(index, "FLOAT")
    backwards = ctx.slice(x, [-1], [-(2 ** 63)], [axis], [-1])
    values, index = ctx.node("TopK", [backwards, ctx.ints([k], "k")], [
        ctx.g.unique(f"{ctx.name}/values"), ctx.g.unique(f"{ctx.name}/indices")],
        axis=axis, largest=1, sorted=1)
    index = ctx.node("Sub", [ctx.ints(dim - 1, "last"), index])
    return values, ctx.cast(index, "FLOAT")


@emits("ArgMax")
def emit_argmax(ctx):
    """With ``axis``: the top_k indices (or values, with out_max_val) along it. Without: each
    sample flattened, top (N, 1, top_k) of indices or (N, 2, top_k) of indices then values,
    padded with axes of size 1 as the layer's top."""
    layer, x = ctx.layer, ctx.bottoms[0]
    outer, dim, inner = layer.dims
    k = layer.top_k
    if layer.has_axis:
        axis = layer.param.argmax_param.axis
        axis = axis + len(ctx.bottom_shapes[0]) if axis < 0 else axis
        values, index = _top_k(ctx, x, axis, dim, k)
        ctx.out(0, values if layer.out_max_val else index)
        return
    if len(ctx.bottom_shapes[0]) != 2:
        x = ctx.reshape(x, [0, -1])
    values, index = _top_k(ctx, x, 1, dim, k)
    index = ctx.reshape(index, [0, 1, k])
    if layer.out_max_val:
        index = ctx.node("Concat", [index, ctx.reshape(values, [0, 1, k])], axis=1)
    ctx.reshape(index, [0] + list(ctx.top_shapes[0][1:]), ctx.tops)


@emits("BatchReindex")
def emit_batch_reindex(ctx):
    """Gather along axis 0 at the indices truncated to integers (Cast, as static_cast<int>)."""
    index = ctx.cast(ctx.bottoms[1], "INT64")
    ctx.node("Gather", [ctx.bottoms[0], index], ctx.tops, axis=0)


@emits("Filter")
def emit_filter(ctx):
    """Compress along axis 0 where the selector is not 0 (NaN counts as not 0, as in jitnet)."""
    selector = ctx.reshape(ctx.bottoms[-1], [-1])
    keep = ctx.node("Not", [ctx.node("Equal", [selector, ctx.floats(0.0, "zero")])])
    for x, top in zip(ctx.bottoms[:-1], ctx.tops):
        ctx.node("Compress", [x, keep], top, axis=0)


@emits("Parameter")
def emit_parameter(ctx):
    """The learned blob, as an initializer."""
    ctx.node("Identity", [ctx.weight("blob", ctx.layer.blobs[0].data)], ctx.tops)


@emits("Embed")
def emit_embed(ctx):
    """Gather rows of W (input_dim, num_output) at the indices (+ b)."""
    layer = ctx.layer
    rows = ctx.node("Gather", [ctx.weight("weight", layer.blobs[0].data),
                               ctx.cast(ctx.bottoms[0], "INT64")], axis=0)
    if layer.bias_term:
        ctx.node("Add", [rows, ctx.weight("bias", layer.blobs[1].data)], ctx.tops)
    else:
        ctx.out(0, rows)


# =========================================================================== normalization
@emits("BatchNorm")
def emit_batch_norm(ctx):
    """Global statistics: BatchNormalization with Caffe's stored sums divided by the scale
    factor (1/blob2, or 0 when blob2 is 0) folded into the mean and variance, scale 1, bias 0.
    Batch statistics (use_global_stats: false): (x − mean) / sqrt(var + eps) with the biased
    variance over N and the spatial axes."""
    layer, x = ctx.layer, ctx.bottoms[0]
    eps = float(layer.eps)
    if layer.use_global_stats:
        stored = float(layer.blobs[2].data[0])
        factor = 0.0 if stored == 0 else 1.0 / stored
        mean = layer.blobs[0].data.astype(np.float64) * factor
        var = layer.blobs[1].data.astype(np.float64) * factor
        channels = layer.channels
        ctx.node("BatchNormalization", [x, ctx.floats(np.ones(channels), "scale"),
                                        ctx.floats(np.zeros(channels), "bias"),
                                        ctx.weight("mean", mean), ctx.weight("variance", var)],
                 ctx.tops, epsilon=eps)
        return
    axes = [0] + list(range(2, len(ctx.bottom_shapes[0])))
    centred = ctx.node("Sub", [x, ctx.reduce("ReduceMean", x, axes, True)])
    var = ctx.reduce("ReduceMean", ctx.node("Mul", [centred, centred]), axes, True)
    std = ctx.node("Sqrt", [ctx.node("Add", [var, ctx.floats(eps, "eps")])])
    ctx.node("Div", [centred, std], ctx.tops)


@emits("MVN")
def emit_mvn(ctx):
    """Per plane (n, c), or per sample with across_channels: y = (x − mean) / (std + eps), std the
    biased deviation (or y = x − mean); the top is 4-D as the layer's."""
    p = ctx.layer.param.mvn_param
    x = ctx.reshape(ctx.bottoms[0], [0, -1] if p.across_channels else
                    [0] + ([ctx.bottom_shapes[0][1], -1] if len(ctx.bottom_shapes[0]) > 1 else [1, -1]))
    last = 1 if p.across_channels else 2
    centred = ctx.node("Sub", [x, ctx.reduce("ReduceMean", x, [last], True)])
    if p.normalize_variance:
        var = ctx.reduce("ReduceMean", ctx.node("Mul", [centred, centred]), [last], True)
        std = ctx.node("Add", [ctx.node("Sqrt", [var]), ctx.floats(p.eps, "eps")])
        centred = ctx.node("Div", [centred, std])
    ctx.reshape(centred, [0] + list(ctx.top_shapes[0][1:]), ctx.tops)


# =========================================================================== vision
def _to_images(ctx, x, in_shape, axis, spatial):
    """x as (images, channels, spatial...) for an ONNX convolution: the batch axes before
    ``axis`` merged (one axis of size 1 added when there are none), and one spatial axis of
    size 1 added when there are none."""
    if axis == 0:
        x = ctx.unsqueeze(x, [0])
    elif axis > 1:
        x = ctx.reshape(x, [-1] + list(in_shape[axis:]))
    if not spatial:
        x = ctx.unsqueeze(x, [2])
    return x


def _from_images(ctx, y, k, axis):
    """Top ``k`` from the convolution's (images, channels, spatial...) output ``y``."""
    top_shape = list(ctx.top_shapes[k])
    if axis > 1 and ctx.dynamic:                 # the batch axes, as the bottom has them now
        lead = ctx.slice(ctx.node("Shape", [ctx.bottoms[k]]), [0], [axis], [0])
        shape = ctx.node("Concat", [lead, ctx.ints(top_shape[axis:], "tail")], axis=0)
        ctx.node("Reshape", [y, shape], ctx.tops[k])
    else:
        ctx.reshape(y, [0] + top_shape[1:] if axis == 1 else top_shape, ctx.tops[k])


def _convolve(ctx, op, weights, attrs):
    """``op`` (Conv or ConvTranspose) of each bottom into its top, in the layer's layout."""
    axis, spatial = ctx.layer.axis, len(attrs["kernel_shape"]) if ctx.layer.kernel else 0
    for k, (x, in_shape) in enumerate(zip(ctx.bottoms, ctx.bottom_shapes)):
        if axis == 1 and spatial:
            ctx.node(op, [x] + weights, ctx.tops[k], **attrs)
        else:
            y = ctx.node(op, [_to_images(ctx, x, in_shape, axis, spatial)] + weights, **attrs)
            _from_images(ctx, y, k, axis)


def _emit_convolution(ctx, op):
    layer = ctx.layer
    w = layer.blobs[0].data
    if not layer.kernel:                         # no spatial axis: one of size 1
        w = w.reshape(w.shape + (1,))
    attrs = dict(kernel_shape=list(layer.kernel) or [1], strides=list(layer.stride) or [1],
                 pads=(list(layer.pad) * 2) or [0, 0], dilations=list(layer.dilation) or [1],
                 group=int(layer.group))
    weights = [ctx.weight("weight", w)]
    if layer.bias_term:
        weights.append(ctx.weight("bias", layer.blobs[1].data))
    _convolve(ctx, op, weights, attrs)


@emits("Convolution")
def emit_convolution(ctx):
    """Conv with Caffe's weights (num_output, channels/group, k...), pads on both sides, strides,
    dilations and groups; each bottom i gives top i."""
    _emit_convolution(ctx, "Conv")


@emits("Deconvolution")
def emit_deconvolution(ctx):
    """ConvTranspose: Caffe's deconvolution weights (channels, num_output/group, k...) are ONNX's
    ConvTranspose layout, and ONNX's output size with these pads is Caffe's
    stride·(in − 1) + dilation·(k − 1) + 1 − 2·pad."""
    _emit_convolution(ctx, "ConvTranspose")


@emits("Im2col")
def emit_im2col(ctx):
    """A Conv with group = channels and one-hot weights: output channel c·K + j (K = the kernel's
    size, j its position in row-major order) copies tap j of channel c, which is im2col's row."""
    layer = ctx.layer
    kernel = tuple(layer.kernel)
    taps = math.prod(kernel)
    channels = ctx.bottom_shapes[0][layer.axis]
    w = np.zeros((channels * taps, 1) + kernel, dtype=np.float32)
    for c in range(channels):
        for j in range(taps):
            w[(c * taps + j, 0) + np.unravel_index(j, kernel)] = 1.0
    attrs = dict(kernel_shape=list(kernel), strides=list(layer.stride), pads=list(layer.pad) * 2,
                 dilations=list(layer.dilation), group=channels)
    _convolve(ctx, "Conv", [ctx.weight("taps", w)], attrs)


def _window_plan(size, out, kernel, stride, pad):
    """(end padding that gives ``out`` windows with ONNX's floor rounding, Caffe's AVE divisor per
    window: the window clipped to the padded extent size + pad)."""
    end_pad = max(0, (out - 1) * stride + kernel - size - pad)
    divisors = [min(o * stride - pad + kernel, size + pad) - (o * stride - pad) for o in range(out)]
    return end_pad, divisors


def pool2d(ctx, x, method, geometry, outputs=None, mask=None):
    """Caffe's pooling of x (N, C, H, W) with ``geometry`` = (n, c, h, w, oh, ow, kh, kw, sh, sw,
    ph, pw) as the layer computed it (ceil or floor rounding, the last-window rule).

    ONNX's pools round down: jitnet gives the end padding that yields Caffe's oh × ow windows
    (no ceil_mode, whose last-window rule runtimes do not agree on). MAX: MaxPool with those
    pads (padding never wins a max); when a window lies wholly past the image (CEIL rounding
    without padding), the input is padded explicitly with −FLT_MAX, Caffe's value there. AVE:
    AveragePool with count_include_pad when every window's divisor is the full kernel (Caffe's
    divisor counts the padding inside the padded extent); otherwise the input padded with zeros,
    pooled, and multiplied by kernel size / Caffe's divisor per output position.
    STOCHASTIC (TEST): Σx² / (FLT_MIN + Σx) as the ratio of two average pools.
    ``mask``: a value name for MAX's second top (h·W + w as a float)."""
    n, c, h, w, oh, ow, kh, kw, sh, sw, ph, pw = geometry
    (eh, dh), (ew, dw) = _window_plan(h, oh, kh, sh, ph), _window_plan(w, ow, kw, sw, pw)
    window = dict(kernel_shape=[kh, kw], strides=[sh, sw])
    P = pb.PoolingParameter
    if method == P.MAX:
        if eh < kh and ew < kw:
            pads = [ph, pw, eh, ew]
            attrs = dict(window, pads=pads) if any(pads) else window
            if mask is None:
                return ctx.node("MaxPool", [x], outputs, **attrs)
            y, index = ctx.node("MaxPool", [x], [outputs or ctx.g.unique(f"{ctx.name}/max"),
                                                 ctx.g.unique(f"{ctx.name}/argmax")], **attrs)
            # ONNX's indices count over the whole (N, C, H, W) tensor; Caffe's within the plane
            within = ctx.node("Mod", [index, ctx.ints(h * w, "plane_size")])
            ctx.cast(within, "FLOAT", mask)
            return y
        if mask is not None:
            raise ctx.error("MAX pooling with a mask top and windows wholly past the image "
                            "(CEIL rounding, stride > kernel, no padding) has no ONNX form")
        padded = ctx.pad(x, [0, 0, ph, pw, 0, 0, eh, ew], -FLT_MAX)
        return ctx.node("MaxPool", [padded], outputs, **window)
    full = kh * kw
    simple = (all(d == kh for d in dh) and all(d == kw for d in dw) and eh <= ph and ew <= pw)
    if method == P.AVE and simple:
        pads = [ph, pw, ph, pw]
        attrs = dict(window, pads=pads, count_include_pad=1) if any(pads) else window
        return ctx.node("AveragePool", [x], outputs, **attrs)
    if any((ph, pw, eh, ew)):
        x_padded = ctx.pad(x, [0, 0, ph, pw, 0, 0, eh, ew], 0.0)
    else:
        x_padded = x
    if method == P.AVE:
        pooled = ctx.node("AveragePool", [x_padded], **window)
        factor = np.array([[full / (a * b) if a > 0 and b > 0 else 0.0 for b in dw] for a in dh])
        return ctx.node("Mul", [pooled, ctx.floats(factor.reshape(1, 1, oh, ow), "divisor")], outputs)
    squares = ctx.node("Mul", [x, x])
    if x_padded is not x:
        squares = ctx.pad(squares, [0, 0, ph, pw, 0, 0, eh, ew], 0.0)
    total = ctx.node("Add", [ctx.node("AveragePool", [x_padded], **window), ctx.floats(FLT_MIN / full, "flt_min")])
    return ctx.node("Div", [ctx.node("AveragePool", [squares], **window), total], outputs)


@emits("Pooling")
def emit_pooling(ctx):
    """MAX / AVE / STOCHASTIC (TEST) pooling with Caffe's output size and divisor (see pool2d);
    global pooling is GlobalMaxPool / GlobalAveragePool (divisor H·W)."""
    layer = ctx.layer
    if layer.global_pooling and layer.method != pb.PoolingParameter.STOCHASTIC and len(ctx.tops) == 1:
        op = "GlobalMaxPool" if layer.method == pb.PoolingParameter.MAX else "GlobalAveragePool"
        ctx.node(op, ctx.bottoms, ctx.tops)
        return
    pool2d(ctx, ctx.bottoms[0], layer.method, layer.geometry, ctx.tops[0],
           mask=ctx.tops[1] if len(ctx.tops) > 1 else None)


@emits("SPP")
def emit_spp(ctx):
    """Each pyramid level pooled as Pooling does, flattened per image, levels concatenated along
    axis 1 (one level keeps the (N, C, 1, 1) top)."""
    layer = ctx.layer
    if len(layer.geometry) == 1:
        pool2d(ctx, ctx.bottoms[0], layer.method, layer.geometry[0][0], ctx.tops[0])
        return
    levels = [ctx.reshape(pool2d(ctx, ctx.bottoms[0], layer.method, geometry), [0, -1])
              for geometry, _ in layer.geometry]
    ctx.node("Concat", levels, ctx.tops, axis=1)


@emits("LRN")
def emit_lrn(ctx):
    """ACROSS_CHANNELS: ONNX LRN (the same formula: x / (k + alpha/n·Σx²)^beta). WITHIN_CHANNEL:
    Caffe's own decomposition: x·(1 + alpha·AveragePool(x², n × n, pad (n−1)/2, counting the
    padding))^−beta."""
    layer, x = ctx.layer, ctx.bottoms[0]
    if layer.across:
        ctx.node("LRN", [x], ctx.tops, size=int(layer.size), alpha=float(layer.alpha),
                 beta=float(layer.beta), bias=float(layer.k))
        return
    n, pad = layer.size, (layer.size - 1) // 2
    window = dict(kernel_shape=[n, n], strides=[1, 1])
    if pad:
        window.update(pads=[pad] * 4, count_include_pad=1)
    mean = ctx.node("AveragePool", [ctx.node("Mul", [x, x])], **window)
    scale = ctx.node("Add", [ctx.node("Mul", [mean, ctx.floats(layer.alpha, "alpha")]),
                             ctx.floats(1.0, "one")])
    ctx.node("Mul", [x, ctx.node("Pow", [scale, ctx.floats(-layer.beta, "minus_beta")])], ctx.tops)
