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


# --------------------------------------------------------------------------- vision: pooling, SPP, LRN
FLT_MAX = float(np.finfo(np.float32).max)     # Caffe's MAX window starts at −FLT_MAX


def pooled_size(size, kernel, pad, stride, round_mode="CEIL"):
    """Caffe's pooled extent: ceil((size + 2·pad − kernel) / stride) + 1 (floor with FLOOR); with
    padding, a last window starting in the padding is dropped, so (out − 1)·stride < size + pad."""
    span = size + 2 * pad - kernel
    out = (math.ceil(span / stride) if round_mode == "CEIL" else math.floor(span / stride)) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool(x, pool_method, kernel, stride=(1, 1), pad=(0, 0), round_mode="CEIL"):
    """Caffe's Pooling forward on (N, C, H, W), written from pooling_layer.cpp's loops:
    returns (top, mask). MAX: first maximum in row-major order from −FLT_MAX (strict >), mask =
    h·W + w as a float (−1: none). AVE: sum of the image values over the window clipped to the
    image, divided by the window clipped to the padded extent. STOCHASTIC (TEST): Σx² /
    (FLT_MIN + Σx). ``kernel``, ``stride``, ``pad`` are (h, w) pairs. A window past the image
    (possible with stride > kernel, CEIL rounding and no padding) gives −FLT_MAX and mask −1
    (MAX, as Caffe) or 0 (AVE, STOCHASTIC)."""
    x = _f64(x)
    n, c, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    oh = pooled_size(height, kh, ph, sh, round_mode)
    ow = pooled_size(width, kw, pw, sw, round_mode)
    y = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for i in range(n):
        for j in range(c):
            for a in range(oh):
                for b in range(ow):
                    hs, ws = a * sh - ph, b * sw - pw
                    if pool_method == "MAX":
                        best, idx = -FLT_MAX, -1
                        for h in range(max(hs, 0), min(hs + kh, height)):
                            for w in range(max(ws, 0), min(ws + kw, width)):
                                if x[i, j, h, w] > best:
                                    best, idx = x[i, j, h, w], h * width + w
                        y[i, j, a, b], mask[i, j, a, b] = best, idx
                    elif pool_method == "AVE":
                        he, we = min(hs + kh, height + ph), min(ws + kw, width + pw)
                        pool_size = (he - hs) * (we - ws)
                        total, values = 0.0, 0
                        for h in range(max(hs, 0), min(he, height)):
                            for w in range(max(ws, 0), min(we, width)):
                                total += x[i, j, h, w]
                                values += 1
                        # a window past the image (stride > kernel, CEIL, no padding) holds no
                        # value: 0 here, where Caffe divides 0 by a pool_size of 0 or less
                        y[i, j, a, b] = total / pool_size if values else 0.0
                    else:
                        window = x[i, j, max(hs, 0):min(hs + kh, height), max(ws, 0):min(ws + kw, width)]
                        y[i, j, a, b] = (window ** 2).sum() / (FLT_MIN + window.sum())
    return y, mask


def spp(x, pyramid_height, pool_method):
    """Caffe's SPP: level l pools with 2^l bins per side, kernel = ceil(H / bins), pad =
    (kernel·bins − H + 1) // 2, stride = kernel (same for W); each level is flattened per image
    and the levels concatenated along axis 1. pyramid_height 1 keeps the (N, C, 1, 1) top of
    its single pooling."""
    x = _f64(x)
    n, c, height, width = x.shape
    levels = []
    for level in range(pyramid_height):
        bins = 2 ** level
        kh, kw = math.ceil(height / bins), math.ceil(width / bins)
        ph, pw = (kh * bins - height + 1) // 2, (kw * bins - width + 1) // 2
        y, _ = pool(x, pool_method, (kh, kw), (kh, kw), (ph, pw))
        if pyramid_height == 1:
            return y
        levels.append(y.reshape(n, -1))
    return np.concatenate(levels, axis=1)


def lrn(x, local_size=5, alpha=1.0, beta=0.75, k=1.0, region="ACROSS_CHANNELS"):
    """Caffe's LRN on (N, C, H, W). ACROSS_CHANNELS: scale = k + alpha/size · Σ x² over the channels
    c − (size−1)/2 .. c + (size−1)/2 that exist; WITHIN_CHANNEL: scale = 1 + alpha · (Σ x² over the
    size × size window centred on the pixel, zero-padded) / size² (k unused). y = x · scale^−beta."""
    x = _f64(x)
    n, c, height, width = x.shape
    half = (local_size - 1) // 2
    scale = np.zeros_like(x)
    for i in range(n):
        for j in range(c):
            for h in range(height):
                for w in range(width):
                    if region == "ACROSS_CHANNELS":
                        total = sum(x[i, q, h, w] ** 2 for q in range(max(j - half, 0), min(j + half + 1, c)))
                        scale[i, j, h, w] = k + alpha / local_size * total
                    else:
                        total = 0.0
                        for a in range(max(h - half, 0), min(h + half + 1, height)):
                            for b in range(max(w - half, 0), min(w + half + 1, width)):
                                total += x[i, j, a, b] ** 2
                        scale[i, j, h, w] = 1.0 + alpha * total / local_size ** 2
    return x * scale ** -beta


# --------------------------------------------------------------------------- normalization, scale, bias, crop
