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
def batch_norm(x, mean_sum, var_sum, factor, use_global_stats, eps=1e-5):
    """Caffe's BatchNorm forward, channels on axis 1, statistics over every other axis.
    Global statistics: μ = mean_sum·f, σ² = var_sum·f with f = 0 if factor == 0 else 1/factor;
    batch statistics: μ and the biased σ² of the batch. y = (x − μ) / √(σ² + eps)."""
    x = _f64(x)
    c = x.shape[1]
    planes = np.moveaxis(x, 1, 0).reshape(c, -1)           # one row per channel
    if use_global_stats:
        f = 0.0 if factor == 0 else 1.0 / factor
        mean, var = _f64(mean_sum) * f, _f64(var_sum) * f
    else:
        mean = np.array([sum(row) / len(row) for row in planes])
        var = np.array([sum((v - mu) ** 2 for v in row) / len(row) for row, mu in zip(planes, mean)])
    y = np.empty_like(planes)
    for k in range(c):
        y[k] = (planes[k] - mean[k]) / math.sqrt(var[k] + eps)
    return np.moveaxis(y.reshape((c,) + x.shape[:1] + x.shape[2:]), 0, 1)


def batch_norm_running_sums(x, mean_sum, var_sum, factor, moving_average_fraction=0.999):
    """The three blobs after one TRAIN forward with batch statistics: factor·λ + 1,
    mean_sum·λ + μ, var_sum·λ + m/(m − 1)·σ² (m values per channel; correction 1 if m == 1)."""
    x = _f64(x)
    lam = moving_average_fraction
    planes = np.moveaxis(x, 1, 0).reshape(x.shape[1], -1)
    m = planes.shape[1]
    mean = planes.mean(axis=1)
    var = ((planes - mean[:, None]) ** 2).mean(axis=1)
    correction = m / (m - 1) if m > 1 else 1.0
    return (_f64(mean_sum) * lam + mean, _f64(var_sum) * lam + correction * var,
            np.array([float(np.ravel(factor)[0]) * lam + 1.0]))


def _broadcast_from(operand, axis, ndim):
    """``operand`` (shaped like axes axis..axis+k−1 of an ndim-d array; 0-D: a scalar) reshaped to
    broadcast against that array."""
    operand = _f64(operand)
    if operand.ndim == 0:
        return operand
    axis = _canonical(axis, ndim)
    return operand.reshape((1,) * axis + operand.shape + (1,) * (ndim - axis - operand.ndim))


def scale(x, s, axis=1, bias=None):
    """Caffe's Scale: y = x·s (+ bias), s and bias broadcast over x from ``axis``."""
    x = _f64(x)
    y = x * _broadcast_from(s, axis, x.ndim)
    if bias is not None:
        y = y + _broadcast_from(bias, axis, x.ndim)
    return y


def bias(x, b, axis=1):
    """Caffe's Bias: y = x + b, b broadcast over x from ``axis``."""
    x = _f64(x)
    return x + _broadcast_from(b, axis, x.ndim)


def crop(x, reference_shape, axis=2, offsets=()):
    """Caffe's Crop: on the axes from ``axis`` on, the window of x shaped like the reference,
    starting at the offsets (none: 0; one: the same for every cropped axis; else one per axis)."""
    x = _f64(x)
    start = _canonical(axis, x.ndim)
    window = []
    for i in range(x.ndim):
        if i < start:
            window.append(slice(None))
            continue
        off = 0 if not offsets else offsets[0] if len(offsets) == 1 else offsets[i - start]
        if off + reference_shape[i] > x.shape[i]:
            raise ValueError(f"crop out of bounds on axis {i}")
        window.append(slice(off, off + reference_shape[i]))
    return x[tuple(window)].copy()




# --------------------------------------------------------------------------- catalogue: neurons and losses
def absval(x):
    return np.abs(_f64(x))


def bnll(x):
    """log(1 + eˣ), as logaddexp(0, x) (no overflow for large |x|)"""
    return np.logaddexp(0.0, _f64(x))


def elu(x, alpha=1.0):
    """x for x > 0, α(eˣ − 1) otherwise"""
    x = _f64(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def exp_layer(x, base=-1.0, scale=1.0, shift=0.0):
    """base^(shift + scale·x), base −1 meaning e"""
    b = math.e if base == -1 else base
    return np.power(b, shift + scale * _f64(x))


def log_layer(x, base=-1.0, scale=1.0, shift=0.0):
    """log_base(shift + scale·x), base −1 meaning e"""
    ln_base = 1.0 if base == -1 else math.log(base)
    return np.log(shift + scale * _f64(x)) / ln_base


def power(x, power=1.0, scale=1.0, shift=0.0):
    """(shift + scale·x)^power; power·scale = 0 gives the constant 1 (power 0) or shift^power"""
    x = _f64(x)
    if power * scale == 0:
        return np.full(x.shape, 1.0 if power == 0 else float(np.float64(shift) ** power))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.power(shift + scale * x, power)


def prelu(x, slopes, channel_shared=False):
    """x for x > 0, a_c·x otherwise; c is the index on axis 1 (one slope for all when shared)"""
    x = _f64(x)
    a = np.full(x.shape[1], float(np.ravel(slopes)[0])) if channel_shared else _f64(slopes)
    a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
    return np.where(x > 0, x, a * x)


def swish(x, beta=1.0):
    """x·σ(βx)"""
    x = _f64(x)
    return x * sigmoid(beta * x)


def threshold(x, t=0.0):
    return (_f64(x) > t).astype(np.float64)


def clip(x, lo, hi):
    return np.minimum(np.maximum(_f64(x), lo), hi)


LOG_THRESHOLD = 1e-20         # Caffe's kLOG_THRESHOLD


def _loss_normalizer(mode, outer, inner, valid):
    return max(1.0, {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode])


def multinomial_logistic_loss(prob, labels):
    """−Σ_i log(max(p[i, label_i], 1e-20)) / N over rows of p flattened to (N, count/N)"""
    p = _f64(prob)
    rows = p.reshape(p.shape[0], -1)
    total = 0.0
    for row, label in zip(rows, _f64(labels).ravel()):
        total -= math.log(max(row[int(label)], LOG_THRESHOLD))
    return np.array(total / p.shape[0])


def infogain_loss(x, labels, h, axis=1, ignore_label=None, normalization="VALID"):
    """p = softmax(x) along axis; Σ over labelled positions of −Σ_k H[l, k]·log max(p_k, 1e-20),
    divided by the normalizer. Returns (loss, prob)."""
    x = _f64(x)
    axis = _canonical(axis, x.ndim)
    p = softmax(x, axis)
    channels = x.shape[axis]
    moved = np.moveaxis(p, axis, -1).reshape(-1, channels)
    h = _f64(h).reshape(channels, channels)
    total, valid = 0.0, 0
    for row, label in zip(moved, _f64(labels).ravel()):
        label = int(label)
        if ignore_label is not None and label == ignore_label:
            continue
        total -= sum(h[label, k] * math.log(max(row[k], LOG_THRESHOLD)) for k in range(channels))
        valid += 1
    outer = math.prod(x.shape[:axis])
    inner = math.prod(x.shape[axis + 1:])
    return np.array(total / _loss_normalizer(normalization, outer, inner, valid)), p


def sigmoid_cross_entropy_loss(x, targets, ignore_label=None, normalization="BATCH_SIZE"):
    """Σ −[t·log σ(x) + (1 − t)·log(1 − σ(x))] over values whose int(t) is not ignore_label,
    divided by the normalizer (outer = the first dim, inner = the rest)."""
    x, t = _f64(x), _f64(targets)
    total, valid = 0.0, 0
    for xv, tv in zip(x.ravel(), t.ravel()):
        if ignore_label is not None and int(tv) == ignore_label:
            continue
        # −t·log σ(x) − (1 − t)·log σ(−x), log σ(z) = −log(1 + e^−z)
        total += tv * np.logaddexp(0.0, -xv) + (1.0 - tv) * np.logaddexp(0.0, xv)
        valid += 1
    outer = x.shape[0]
    return np.array(total / _loss_normalizer(normalization, outer, x.size // outer, valid))


def hinge_loss(x, labels, norm="L1"):
    """Σ_ij max(0, 1 − t_ij·x_ij) (squared for L2) / N, t_ij = 1 if j is row i's label else −1"""
    x = _f64(x)
    rows = x.reshape(x.shape[0], -1)
    t = -np.ones_like(rows)
    t[np.arange(rows.shape[0]), _f64(labels).ravel().astype(int)] = 1.0
    m = np.maximum(0.0, 1.0 - t * rows)
    return np.array((m ** 2 if norm == "L2" else m).sum() / x.shape[0])


def contrastive_loss(a, b, similar, margin=1.0, legacy=False):
    """Σ_i [d² if similar else max(margin − d, 0)²] / 2N, d = ‖a_i − b_i‖; legacy uses
    max(margin − d², 0); a pair is similar when int(y) != 0"""
    a, b = _f64(a), _f64(b)
    n = a.shape[0]
    d2 = ((a - b).reshape(n, -1) ** 2).sum(axis=1)
    total = 0.0
    for dist_sq, y in zip(d2, _f64(similar).ravel()):
        if int(y) != 0:
            total += dist_sq
        elif legacy:
            total += max(margin - dist_sq, 0.0)
        else:
            total += max(margin - math.sqrt(dist_sq), 0.0) ** 2
    return np.array(total / n / 2.0)


def contrastive_loss_gradient(a, b, similar, margin=1.0, legacy=False):
    """Caffe's ∂loss/∂a (∂loss/∂b is its negative): (a − b)/N for similar pairs; for the others
    −(margin − d)/(d + 1e-4)·(a − b)/N where margin − d > 0 (legacy: −(a − b)/N where
    margin − d² > 0), else 0. The 1e-4 is Caffe's, so this is not the exact derivative."""
    a, b = _f64(a), _f64(b)
    n = a.shape[0]
    diff = (a - b).reshape(n, -1)
    grad = np.zeros_like(diff)
    for i, y in enumerate(_f64(similar).ravel()):
        dist_sq = float(diff[i] @ diff[i])
        if int(y) != 0:
            grad[i] = diff[i] / n
        elif legacy:
            if margin - dist_sq > 0:
                grad[i] = -diff[i] / n
        else:
            d = math.sqrt(dist_sq)
            if margin - d > 0:
                grad[i] = -(margin - d) / (d + 1e-4) * diff[i] / n
    return grad.reshape(a.shape)


# --------------------------------------------------------------------------- catalogue: utility layers and MVN


# --------------------------------------------------------------------------- data pipeline (issue 12)
def caffe_transform(x, crop_size=0, h_off=0, w_off=0, mirror=False, mean=None, mean_values=(),
                    scale=1.0):
    """Caffe's DataTransformer::Transform(const Datum&, Dtype*) written out pixel by pixel:
    for c, h, w of the (crop_size × crop_size, or whole) output,
        data_index = (c·H + h_off + h)·W + w_off + w
        top_index  = (c·height + h)·width + (width − 1 − w if mirror else w)
        top[top_index] = (x[data_index] − mean[data_index] or mean_value[c]) · scale
    ``x`` is (C, H, W); the mean file is indexed at the source pixel, not the cropped one."""
    x = _f64(x)
    channels, H, W = x.shape
    height, width = (crop_size, crop_size) if crop_size else (H, W)
    flat = x.ravel()
    mean_flat = None if mean is None else _f64(mean).ravel()
    values = [float(v) for v in mean_values]
    if len(values) == 1:
        values = values * channels
    out = np.zeros(channels * height * width)
    for c in range(channels):
        for h in range(height):
            for w in range(width):
                data_index = (c * H + h_off + h) * W + w_off + w
                top_index = (c * height + h) * width + ((width - 1 - w) if mirror else w)
                value = flat[data_index]
                if mean_flat is not None:
                    value -= mean_flat[data_index]
                elif values:
                    value -= values[c]
                out[top_index] = value * scale
    return out.reshape(channels, height, width)


def caffe_crop_offsets(H, W, crop_size, train, draws):
    """(h_off, w_off, mirror-coin) Caffe draws for one image: in TRAIN Rand(H − crop + 1) and
    Rand(W − crop + 1), Rand(n) being a 32-bit draw mod n; in TEST the centre, (H − crop) / 2."""
    coin = int(draws[0]) % 2
    if not crop_size:
        return 0, 0, coin
    if train:
        return int(draws[1]) % (H - crop_size + 1), int(draws[2]) % (W - crop_size + 1), coin
    return (H - crop_size) // 2, (W - crop_size) // 2, coin


def opencv_bilinear(image, height, width):
    """OpenCV's INTER_LINEAR in real arithmetic (Caffe's cv::resize): output pixel (y, x) samples
    the source at ((y + 0.5)·H/height − 0.5, (x + 0.5)·W/width − 0.5), the coordinate clamped
    to [0, size − 1], bilinearly; rounded to uint8. ``image`` is (C, H, W)."""
    img = _f64(image)
    channels, H, W = img.shape
    out = np.zeros((channels, height, width))

    def taps(i, src, dst):
        f = (i + 0.5) * src / dst - 0.5
        i0 = math.floor(f)
        t = f - i0
        if i0 < 0:
            i0, t = 0, 0.0
        if i0 >= src - 1:
            i0, t = src - 1, 0.0
        return i0, min(i0 + 1, src - 1), t
    for y in range(height):
        y0, y1, ty = taps(y, H, height)
        for x in range(width):
            x0, x1, tx = taps(x, W, width)
            out[:, y, x] = ((1 - ty) * ((1 - tx) * img[:, y0, x0] + tx * img[:, y0, x1])
                            + ty * ((1 - tx) * img[:, y1, x0] + tx * img[:, y1, x1]))
    return np.clip(np.floor(out + 0.5), 0, 255)


def window_warp(image, box, crop_size, context_pad=0, square=False, mirror=False, mean=None,
                mean_values=(), scale=1.0):
    """Caffe's WindowDataLayer for one window (x1, y1, x2, y2 inclusive) of a (C, H, W) image,
    in real arithmetic: widen the box by the factor crop / (crop − 2·context_pad) about its
    centre (a square first with ``square``), clip it to the image, warp the clipped part to
    its share of crop_size (OpenCV bilinear), place it after the clipped-off padding (the
    right padding when mirrored), mirror; subtract the mean file's centre crop (or
    mean_value) and scale. Returns the (C, crop, crop) patch, zero outside the window."""
    img = _f64(image)
    channels, rows, cols = img.shape
    x1, y1, x2, y2 = box
    size_w = size_h = crop_size
    pad_w = pad_h = 0
    if context_pad > 0 or square:
        rnd = lambda v: int(math.floor(v + 0.5)) if v >= 0 else -int(math.floor(-v + 0.5))   # noqa: E731
        context_scale = crop_size / (crop_size - 2 * context_pad)
        half_h, half_w = (y2 - y1 + 1) / 2.0, (x2 - x1 + 1) / 2.0
        cx, cy = x1 + half_w, y1 + half_h
        if square:
            half_h = half_w = max(half_h, half_w)
        x1, x2 = rnd(cx - half_w * context_scale), rnd(cx + half_w * context_scale)
        y1, y2 = rnd(cy - half_h * context_scale), rnd(cy + half_h * context_scale)
        un_h, un_w = y2 - y1 + 1, x2 - x1 + 1
        px1, py1, px2, py2 = max(0, -x1), max(0, -y1), max(0, x2 - cols + 1), max(0, y2 - rows + 1)
        x1, x2, y1, y2 = x1 + px1, x2 - px2, y1 + py1, y2 - py2
        sx, sy = crop_size / un_w, crop_size / un_h
        size_w, size_h = rnd((x2 - x1 + 1) * sx), rnd((y2 - y1 + 1) * sy)
        pad_h = rnd(py1 * sy)
        pad_w = rnd(px2 * sx) if mirror else rnd(px1 * sx)
        size_h, size_w = min(size_h, crop_size - pad_h), min(size_w, crop_size - pad_w)
    patch = opencv_bilinear(img[:, y1:y2 + 1, x1:x2 + 1], size_h, size_w)
    if mirror:
        patch = patch[:, :, ::-1]
    out = np.zeros((channels, crop_size, crop_size))
    region = patch.copy()
    if mean is not None:
        off = (np.shape(mean)[2] - crop_size) // 2
        region -= _f64(mean)[:, off + pad_h:off + pad_h + size_h, off + pad_w:off + pad_w + size_w]
    elif len(mean_values):
        region -= np.broadcast_to(_f64(mean_values), (channels,))[:, None, None]
    out[:, pad_h:pad_h + size_h, pad_w:pad_w + size_w] = region * scale
    return out


# (Concat, Slice, Eltwise, Tile, Reduction, ArgMax, BatchReindex, Filter, Parameter, Embed, MVN;
# Silence has no tops.) Written from Caffe's layer sources: loops over the documented index maps.
def concat(xs, axis=1):
    """The bottoms side by side along ``axis``."""
    xs = [_f64(x) for x in xs]
    axis = _canonical(axis, xs[0].ndim)
    shape = list(xs[0].shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    y = np.empty(shape)
    offset = 0
    for x in xs:
        index = [slice(None)] * x.ndim
        index[axis] = slice(offset, offset + x.shape[axis])
        y[tuple(index)] = x
        offset += x.shape[axis]
    return y


def slice_blob(x, axis=1, points=(), tops=1):
    """Pieces of x along ``axis`` cut at ``points`` (or ``tops`` equal pieces)."""
    x = _f64(x)
    axis = _canonical(axis, x.ndim)
    dim = x.shape[axis]
    cuts = [0] + list(points) + [dim] if points else [k * dim // tops for k in range(tops + 1)]
    out = []
    for a, b in zip(cuts, cuts[1:]):
        index = [slice(None)] * x.ndim
        index[axis] = slice(a, b)
        out.append(x[tuple(index)].copy())
    return out


def eltwise(xs, operation="SUM", coeffs=None):
    """SUM: Σ c_k·x_k; PROD: Π x_k; MAX: element by element, bottom 1 winning a tie with
    bottom 0 and later bottoms only when strictly greater. Returns (y, winner)."""
    xs = [_f64(x) for x in xs]
    if operation == "SUM":
        coeffs = coeffs or [1.0] * len(xs)
        return sum(c * x for c, x in zip(coeffs, xs)), None
    if operation == "PROD":
        y = xs[0].copy()
        for x in xs[1:]:
            y = y * x
        return y, None
    y = np.empty(xs[0].shape)
    winner = np.empty(xs[0].shape, dtype=int)
    for i in np.ndindex(*xs[0].shape):
        best, k = (xs[0][i], 0) if xs[0][i] > xs[1][i] else (xs[1][i], 1)
        for j in range(2, len(xs)):
            if xs[j][i] > best:
                best, k = xs[j][i], j
        y[i], winner[i] = best, k
    return y, winner


def tile(x, axis=1, tiles=1):
    """The block from ``axis`` on repeated ``tiles`` times along ``axis``."""
    x = _f64(x)
    axis = _canonical(axis, x.ndim)
    reps = [1] * x.ndim
    reps[axis] = tiles
    return np.tile(x, reps)


def reduction(x, operation="SUM", axis=0, coeff=1.0):
    """coeff·(Σ, Σ|·|, Σ(·)², or mean) over all axes from ``axis`` on."""
    x = _f64(x)
    axis = _canonical(axis, x.ndim)
    rows = x.reshape(math.prod(x.shape[:axis]), -1)
    f = {"SUM": lambda r: r.sum(), "ASUM": lambda r: np.abs(r).sum(),
         "SUMSQ": lambda r: (r * r).sum(), "MEAN": lambda r: r.sum() / r.size}[operation]
    return np.array([coeff * f(r) for r in rows]).reshape(x.shape[:axis])


def _ranked(values):
    """Positions of ``values`` best first: larger value first, the larger index between equals
    (std::partial_sort with std::greater on (value, index) pairs)."""
    return sorted(range(len(values)), key=lambda c: (values[c], c), reverse=True)


def argmax(x, top_k=1, out_max_val=False, axis=None):
    x = _f64(x)
    if axis is None:
        rows = x.reshape(x.shape[0], -1)
        shape = [1] * max(x.ndim, 3)
        shape[0], shape[1], shape[2] = x.shape[0], 2 if out_max_val else 1, top_k
        y = np.empty((x.shape[0], 2 if out_max_val else 1, top_k))
        for n, row in enumerate(rows):
            best = _ranked(row)[:top_k]
            y[n, 0] = best
            if out_max_val:
                y[n, 1] = row[best]
        return y.reshape(shape)
    axis = _canonical(axis, x.ndim)
    moved = np.moveaxis(x, axis, -1)
    y = np.empty(moved.shape[:-1] + (top_k,))
    for i in np.ndindex(*moved.shape[:-1]):
        best = _ranked(moved[i])[:top_k]
        y[i] = moved[i][best] if out_max_val else best
    return np.moveaxis(y, -1, axis)


def batch_reindex(x, indices):
    """y[n] = x[int(indices[n])]"""
    x = _f64(x)
    return np.stack([x[int(i)] for i in _f64(indices)]) if len(indices) else np.empty((0,) + x.shape[1:])


def filter_rows(xs, selector):
    """The rows of each x whose selector is not zero."""
    keep = [n for n, s in enumerate(_f64(selector).reshape(len(selector), -1)[:, 0]) if s != 0]
    return [_f64(x)[keep] for x in xs]


def embed(indices, weight, bias=None):
    """y[..., :] = W[indices[...], :] (+ b)"""
    w = _f64(weight)
    idx = _f64(indices)
    y = np.array([w[int(k)] for k in idx.ravel()]).reshape(idx.shape + (w.shape[1],))
    return y + _f64(bias) if bias is not None else y


def mvn(x, normalize_variance=True, across_channels=False, eps=1e-9):
    """Per (n, c) plane, or per n with across_channels: (x − mean) / (std + eps) with the
    biased std, or x − mean; the top is 4-D (N, C, H, W) with missing axes 1."""
    x = _f64(x)
    shape = tuple(x.shape) + (1,) * (4 - x.ndim)
    x4 = x.reshape(shape)
    y = np.empty(shape)
    groups = [(n, slice(None)) for n in range(shape[0])] if across_channels else \
        [(n, c) for n in range(shape[0]) for c in range(shape[1])]
    for n, c in groups:
        block = x4[n, c]
        centred = block - block.mean()
        if normalize_variance:
            centred = centred / (np.sqrt((centred ** 2).mean()) + eps)
        y[n, c] = centred
    return y


# --------------------------------------------------------------------------- recurrent (issue 13)
def lstm_unit(c_prev, x, cont):
    """Caffe's LSTMUnit for one timestep (lstm_unit_layer.cpp): c_prev (1, N, H), gate
    pre-activations x (1, N, 4H) in the order i, f, o, g, cont (1, N).

    i = σ(x_i), f = cont·σ(x_f) (0 where cont = 0), o = σ(x_o), g = tanh(x_g);
    c = f·c_prev + i·g, h = o·tanh(c). Returns (c, h)."""
    c_prev, x, cont = _f64(c_prev), _f64(x), _f64(cont)
    hidden = c_prev.shape[-1]
    c, h = np.empty_like(c_prev), np.empty_like(c_prev)
    for n in range(c_prev.shape[1]):
        k = cont[0, n]
        for j in range(hidden):
            i = sigmoid(x[0, n, j])
            f = 0.0 if k == 0 else k * sigmoid(x[0, n, hidden + j])
            o = sigmoid(x[0, n, 2 * hidden + j])
            g = math.tanh(x[0, n, 3 * hidden + j])
            c[0, n, j] = f * c_prev[0, n, j] + i * g
            h[0, n, j] = o * math.tanh(c[0, n, j])
    return c, h


def _features(x, start):
    """x with its axes from ``start`` on flattened (InnerProduct's view at that axis)."""
    x = _f64(x)
    return x.reshape(x.shape[:start] + (-1,))


def lstm(x, cont, w_xc, b_c, w_hc, x_static=None, w_static=None, h0=None, c0=None):
    """Caffe's LSTM layer (lstm_layer.cpp, CAFFE-NOTES.md): x (T, N, ...), cont (T, N);
    W_xc (4H, D), b_c (4H), W_hc (4H, H), gates in the order i, f, o, g; an optional static
    input x_static (N, ...) with W_xc_static (4H, D_static); initial h0, c0 (1, N, H), zero by
    default. Per step t:

        gates_t = W_xc·x_t + b_c + W_xc_static·x_static + W_hc·(cont_t·h_{t−1})
        (c_t, h_t) = LSTMUnit(c_{t−1}, gates_t, cont_t)

    Returns (h (T, N, H), h_T (1, N, H), c_T (1, N, H))."""
    x, cont = _features(x, 2), _f64(cont)
    steps, num = cont.shape
    hidden = _f64(w_hc).shape[1]
    h_prev = np.zeros((1, num, hidden)) if h0 is None else _f64(h0)
    c_prev = np.zeros((1, num, hidden)) if c0 is None else _f64(c0)
    static = 0.0
    if x_static is not None:
        static = _features(x_static, 1) @ _f64(w_static).T
    out = np.empty((steps, num, hidden))
    for t in range(steps):
        conted = h_prev[0] * cont[t][:, None]
        gates = x[t] @ _f64(w_xc).T + _f64(b_c) + static + conted @ _f64(w_hc).T
        c_prev, h_prev = lstm_unit(c_prev, gates[None], cont[t][None])
        out[t] = h_prev[0]
    return out, h_prev, c_prev


def rnn(x, cont, w_xh, b_h, w_hh, w_ho, b_o, x_static=None, w_static=None, h0=None):
    """Caffe's RNN layer (rnn_layer.cpp, CAFFE-NOTES.md): per step t,

        h_t = tanh(W_xh·x_t + b_h + W_xh_static·x_static + W_hh·(cont_t·h_{t−1}))
        o_t = tanh(W_ho·h_t + b_o)

    with h_0 = h0 (zero by default). Returns (o (T, N, H), h_T (1, N, H))."""
    x, cont = _features(x, 2), _f64(cont)
    steps, num = cont.shape
    hidden = _f64(w_hh).shape[0]
    h = np.zeros((num, hidden)) if h0 is None else _f64(h0)[0]
    static = 0.0
    if x_static is not None:
        static = _features(x_static, 1) @ _f64(w_static).T
    out = np.empty((steps, num, hidden))
    for t in range(steps):
        h = np.tanh(x[t] @ _f64(w_xh).T + _f64(b_h) + static + (h * cont[t][:, None]) @ _f64(w_hh).T)
        out[t] = np.tanh(h @ _f64(w_ho).T + _f64(b_o))
    return out, h[None]
