"""Numpy oracles for the layers, written from Caffe's formulas (../shared/CAFFE-NOTES.md),
not from jitnet's code. Every function computes in float64 and returns the tops a layer
should produce (a scalar top as a 0-d array)."""
import math

import numpy as np

FLT_MIN = np.finfo(np.float32).tiny          # Caffe clips p at FLT_MIN before the log


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# --------------------------------------------------------------------------- neurons
def relu(x, negative_slope=0.0):
    """max(x, 0) + ν·min(x, 0)"""
    x = _f64(x)
    return np.maximum(x, 0.0) + negative_slope * np.minimum(x, 0.0)


def sigmoid(x):
    """1 / (1 + e^−x), via tanh so that no exp overflows: σ(x) = (1 + tanh(x/2)) / 2"""
    return 0.5 * (1.0 + np.tanh(0.5 * _f64(x)))


def tanh(x):
    return np.tanh(_f64(x))


def dropout_test(x):
    """TEST phase: identity (the 1/(1 − ratio) scaling happens in TRAIN)."""
    return _f64(x).copy()


# --------------------------------------------------------------------------- softmax family
def _canonical(axis, ndim):
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} out of range for {ndim} dims")
    return axis % ndim


def softmax(x, axis=1):
    """e^{x_c} / Σ_k e^{x_k} along ``axis``"""
    x = _f64(x)
    axis = _canonical(axis, x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def softmax_loss(x, labels, axis=1, ignore_label=None, normalization=None, normalize=None):
    """Σ −log max(p[label], FLT_MIN) over non-ignored positions / normalizer.

    normalization (a name from NORMALIZATIONS) wins; otherwise the legacy ``normalize``
    (True → VALID, False → BATCH_SIZE); otherwise VALID. The normalizer is at least 1.
    Returns (loss, prob).
    """
    x = _f64(x)
    axis = _canonical(axis, x.ndim)
    p = softmax(x, axis)
    outer = math.prod(x.shape[:axis])
    channels = x.shape[axis]
    inner = math.prod(x.shape[axis + 1:])
    p3 = p.reshape(outer, channels, inner)
    lab = _f64(labels).reshape(outer, inner)
    total, valid = 0.0, 0
    for o in range(outer):
        for i in range(inner):
            label = int(lab[o, i])
            if ignore_label is not None and label == ignore_label:
                continue
            if not 0 <= label < channels:
                raise ValueError(f"label {label} out of range")
            total -= math.log(max(p3[o, label, i], FLT_MIN))
            valid += 1
    if normalization is None:
        normalization = "VALID" if normalize is None or normalize else "BATCH_SIZE"
    normalizer = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer,
                  "NONE": 1}[normalization]
    return np.array(total / max(1.0, normalizer)), p


def euclidean_loss(a, b):
    """Σ (a − b)² / (2N), N = the first dimension"""
    a, b = _f64(a), _f64(b)
    d = a.ravel() - b.ravel()
    return np.array(np.dot(d, d) / (2.0 * a.shape[0]))


def accuracy(scores, labels, axis=1, top_k=1, ignore_label=None):
    """(accuracy, per-class accuracy). A position is correct when at most top_k classes
    score >= its true class (itself included), so ties count against it."""
    scores = _f64(scores)
    axis = _canonical(axis, scores.ndim)
    channels = scores.shape[axis]
    moved = np.moveaxis(scores, axis, -1).reshape(-1, channels)
    # moveaxis keeps the other axes in order, so positions line up with labels.ravel()
    lab = _f64(labels).ravel()
    correct = np.zeros(channels)
    count = np.zeros(channels)
    for row, label in zip(moved, lab):
        label = int(label)
        if ignore_label is not None and label == ignore_label:
            continue
        count[label] += 1
        if np.count_nonzero(row >= row[label]) <= top_k:
            correct[label] += 1
    total = count.sum()
    acc = correct.sum() / total if total else 0.0
    per_class = np.array([correct[c] / count[c] if count[c] else 0.0 for c in range(channels)])
    return np.array(acc), per_class


# --------------------------------------------------------------------------- common
def inner_product(x, weight, bias=None, axis=1, transpose=False):
    """x viewed as (M, K) from ``axis`` times Wᵀ (W is (N, K)), or times W when transposed (K, N)"""
    x = _f64(x)
    axis = _canonical(axis, x.ndim)
    m = math.prod(x.shape[:axis])
    rows = x.reshape(m, -1)
    w = _f64(weight)
    y = rows @ (w if transpose else w.T)
    if bias is not None:
        y = y + _f64(bias)[None, :]
    return y.reshape(x.shape[:axis] + (y.shape[1],))


def flatten_shape(shape, axis=1, end_axis=-1):
    n = len(shape)
    start, end = axis % n, end_axis % n
    merged = 1
    for d in shape[start:end + 1]:
        merged *= d
    return tuple(shape[:start]) + (merged,) + tuple(shape[end + 1:])


def flatten(x, axis=1, end_axis=-1):
    x = _f64(x)
    return x.reshape(flatten_shape(x.shape, axis, end_axis))


def reshape_shape(shape, dims, axis=0, num_axes=-1):
    """Caffe's Reshape: bottom axes [start, start + num_axes) replaced by ``dims``, where
    start = axis if axis >= 0 else ndim + axis + 1; 0 copies the bottom's dim at start + i,
    one −1 is inferred from the count. ValueError when the shape is impossible."""
    shape = tuple(shape)
    n = len(shape)
    start = axis if axis >= 0 else n + axis + 1
    if not 0 <= start <= n:
        raise ValueError("axis out of range")
    end = n if num_axes == -1 else start + num_axes
    if num_axes < -1 or end > n:
        raise ValueError("num_axes out of range")
    new_dims = []
    for i, d in enumerate(dims):
        if d == 0:
            if start + i >= n:
                raise ValueError("0 refers to a missing axis")
            new_dims.append(shape[start + i])
        elif d == -1 or d > 0:
            new_dims.append(d)
        else:
            raise ValueError(f"bad dim {d}")
    if new_dims.count(-1) > 1:
        raise ValueError("more than one -1")
    top = list(shape[:start]) + new_dims + list(shape[end:])
    count = math.prod(shape)
    if -1 in top:
        known = math.prod(d for d in top if d != -1)
        if known == 0 or count % known:
            raise ValueError("cannot infer -1")
        top[top.index(-1)] = count // known
    if math.prod(top) != count:
        raise ValueError("count changes")
    return tuple(top)


def reshape(x, dims, axis=0, num_axes=-1):
    x = _f64(x)
    return x.reshape(reshape_shape(x.shape, dims, axis, num_axes))


# --------------------------------------------------------------------------- vision: convolution family
from itertools import product as _product  # noqa: E402  (this section's import)


def _spatial_slices(offsets, dilation, stride, count):
    """Per spatial axis, the positions offset·dilation + j·stride for j < count, as slices."""
    return tuple(slice(o * d, o * d + s * (n - 1) + 1, s)
                 for o, d, s, n in zip(offsets, dilation, stride, count))


def conv_output_size(size, kernel, pad, stride, dilation):
    """Caffe's ConvolutionLayer: (in + 2·pad − (dilation·(k − 1) + 1)) / stride + 1 (the division
    of non-negative numbers here: a kernel that does not fit is refused before)."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def deconv_output_size(size, kernel, pad, stride, dilation):
    """Caffe's DeconvolutionLayer: stride·(in − 1) + dilation·(k − 1) + 1 − 2·pad."""
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


def _images(x, axis):
    """x as (images, channels, *spatial), and the batch dims in front of the channel axis."""
    x = _f64(x)
    axis = _canonical(axis, x.ndim)
    return x.reshape((math.prod(x.shape[:axis]), x.shape[axis]) + x.shape[axis + 1:]), x.shape[:axis]


def convolution(x, weight, bias=None, axis=1, kernel=(), stride=(), pad=(), dilation=(), group=1):
    """y[n, o, q] = Σ_{c in o's group, k} W[o, c − g·C/G, k]·x_padded[n, c, q·stride + k·dilation] + b[o],
    with x zero-padded by ``pad`` on every spatial side; one entry per spatial axis in kernel,
    stride, pad, dilation."""
    images, batch = _images(x, axis)
    weight = _f64(weight)
    num_output, channels = weight.shape[0], images.shape[1]
    per_in, per_out = channels // group, num_output // group
    spatial = images.shape[2:]
    out = tuple(conv_output_size(*g) for g in zip(spatial, kernel, pad, stride, dilation))
    padded = np.pad(images, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    y = np.zeros((images.shape[0], num_output) + out)
    for o in range(num_output):
        g = o // per_out
        for j in range(per_in):
            c = g * per_in + j
            for k in _product(*(range(n) for n in kernel)):
                window = padded[(slice(None), c) + _spatial_slices(k, dilation, stride, out)]
                y[:, o] += weight[(o, j) + k] * window
        if bias is not None:
            y[:, o] += _f64(bias)[o]
    return y.reshape(batch + (num_output,) + out)


def deconvolution(x, weight, bias=None, axis=1, kernel=(), stride=(), pad=(), dilation=(), group=1):
    """Every input value spreads over the output: y_padded[n, o, q·stride + k·dilation] +=
    W[c, o − g·O/G, k]·x[n, c, q] for c in group g (o in the same group), then the padding is
    cropped off (``pad`` on every spatial side) and b[o] added."""
    images, batch = _images(x, axis)
    weight = _f64(weight)
    channels, per_out = weight.shape[0], weight.shape[1]
    num_output = per_out * group
    per_in = channels // group
    spatial = images.shape[2:]
    out = tuple(deconv_output_size(*g) for g in zip(spatial, kernel, pad, stride, dilation))
    full = tuple(o + 2 * p for o, p in zip(out, pad))
    y = np.zeros((images.shape[0], num_output) + full)
    for c in range(channels):
        g = c // per_in
        for j in range(per_out):
            o = g * per_out + j
            for k in _product(*(range(n) for n in kernel)):
                y[(slice(None), o) + _spatial_slices(k, dilation, stride, spatial)] += (
                    weight[(c, j) + k] * images[:, c])
    y = y[(slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(pad, out))]
    if bias is not None:
        y += _f64(bias).reshape((num_output,) + (1,) * len(out))
    return y.reshape(batch + (num_output,) + out)


def im2col(x, axis=1, kernel=(), stride=(), pad=(), dilation=()):
    """top[n, c·Πk + r, q] = x_padded[n, c, q·stride + k_r·dilation], the kernel offsets k_r in
    row-major order (the last axis fastest)."""
    images, batch = _images(x, axis)
    channels, spatial = images.shape[1], images.shape[2:]
    out = tuple(conv_output_size(*g) for g in zip(spatial, kernel, pad, stride, dilation))
    padded = np.pad(images, [(0, 0), (0, 0)] + [(p, p) for p in pad])
    rows = [padded[(slice(None), c) + _spatial_slices(k, dilation, stride, out)]
            for c in range(channels) for k in _product(*(range(n) for n in kernel))]
    y = np.stack(rows, axis=1) if rows else np.zeros((images.shape[0], 0) + out)
    return y.reshape(batch + (channels * math.prod(kernel),) + out)



# --------------------------------------------------------------------------- vision: pooling, SPP, LRN


# --------------------------------------------------------------------------- normalization, scale, bias, crop
