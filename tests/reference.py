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


# --------------------------------------------------------------------------- normalization, scale, bias, crop


# --------------------------------------------------------------------------- catalogue: neurons and losses


# --------------------------------------------------------------------------- catalogue: utility layers and MVN
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
