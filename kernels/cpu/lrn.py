"""CPU local response normalization kernels (Caffe's LRNLayer). GPU twins: kernels/gpu/lrn.py.

x, y, scale and the diffs are flat (num, channels, height, width); y = x·scale^(−beta).

* ACROSS_CHANNELS: scale = k + alpha/size · Σ x² over the channels c − (size−1)/2 .. c + (size−1)/2
  that exist (zero padding). Computed as Caffe does, with a running window: scale[c] =
  scale[c − 1] + alpha/size·(x[c + half]² − x[c − half − 1]²), in blocks of pixels of one image.
  Backward: dx = dy·scale^(−beta) − (2·alpha·beta/size)·x·Σ_window(dy·y/scale), the window sum
  running the same way.
* WITHIN_CHANNEL: scale = 1 + alpha·(Σ x² over the size × size window centred on the pixel,
  zero-padded) / size² (Caffe's AVE pooling with pad (size−1)/2, whose divisor is always size²,
  then its Power layer; k is not used). Backward: dx = dy·scale^(−beta) −
  (2·alpha·beta/size²)·x·Σ_window(dy·y/scale). Box sums are separable: along rows, then columns.

Work runs in parallel over independent blocks (ACROSS: pixel blocks of one image; WITHIN: planes),
serially below _CHUNK_MIN values. Indices are cast to unsigned (U) where arrays are read or
written: numba then skips its negative-index wraparound, which keeps LLVM from vectorizing.
beta = 0.75 (AlexNet, CaffeNet, CIFAR-10) takes scale^(−0.75) = 1/(√s·√√s) instead of pow.
"""
import numpy as np
from numba import njit, prange
from numba import uintp as U

_CHUNK_MIN = 16384        # values of work below which one thread does it all
_PIXELS = 1024            # pixels of one image per ACROSS_CHANNELS block


@njit(cache=True, error_model="numpy")
def _apply(x, scale, y, lo, hi, beta):
    """y = x·scale^(−beta) over [lo, hi)."""
    if beta == 0.75:
        for i in range(lo, hi):
            r = np.sqrt(scale[U(i)])
            y[U(i)] = x[U(i)] / (r * np.sqrt(r))
    else:
        for i in range(lo, hi):
            y[U(i)] = x[U(i)] * scale[U(i)] ** -beta


# =========================================================================== ACROSS_CHANNELS
@njit(cache=True, error_model="numpy")
def _across_blocks(num, spatial):
    """(pixel blocks per image, blocks in all)."""
    per_image = max((spatial + _PIXELS - 1) // _PIXELS, 1)
    return per_image, num * per_image


@njit(cache=True, inline="always", error_model="numpy")
def _across_step(x, scale, y, cur, prev, head, tail, j0, j1, alpha_over_size, beta, has_head, has_tail):
    """scale[c] = scale[c − 1] + alpha/size·(x[c + half]² − x[c − half − 1]²) (the terms whose
    channel exists) and y[c], over pixels j0..j1; cur, prev, head, tail: offsets of those channels."""
    for j in range(j0, j1):
        s = scale[U(prev + j)]
        if has_head:
            v = x[U(head + j)]
            s += alpha_over_size * (v * v)
        if has_tail:
            v = x[U(tail + j)]
            s -= alpha_over_size * (v * v)
        scale[U(cur + j)] = s
        if beta == 0.75:
            r = np.sqrt(s)
            y[U(cur + j)] = x[U(cur + j)] / (r * np.sqrt(r))
        else:
            y[U(cur + j)] = x[U(cur + j)] * s ** -beta


# The body above compiled twice: with literal flags for the channels that have both window ends
# inside (most of them; LLVM then vectorizes the loop) and with runtime flags for the first and
# last few. (numba optimizes poorly a caller into which a body is inlined several times.)
@njit(cache=True, error_model="numpy")
def _across_inner(x, scale, y, cur, prev, head, tail, j0, j1, alpha_over_size, beta):
    _across_step(x, scale, y, cur, prev, head, tail, j0, j1, alpha_over_size, beta, True, True)


@njit(cache=True, error_model="numpy")
def _across_edge(x, scale, y, cur, prev, head, tail, j0, j1, alpha_over_size, beta, has_head, has_tail):
    _across_step(x, scale, y, cur, prev, head, tail, j0, j1, alpha_over_size, beta, has_head, has_tail)


@njit(cache=True, inline="always", error_model="numpy")
def _across_forward_block(x, base, channels, spatial, j0, j1, size, alpha_over_size, k, beta, scale, y):
    half = (size - 1) // 2
    for j in range(j0, j1):
        scale[U(base + j)] = k
    for q in range(min(half + 1, channels)):
        o = base + q * spatial
        for j in range(j0, j1):
            v = x[U(o + j)]
            scale[U(base + j)] += alpha_over_size * (v * v)
    _apply(x, scale, y, base + j0, base + j1, beta)
    for c in range(1, channels):
        cur = base + c * spatial
        prev = cur - spatial
        head = base + (c + half) * spatial
        tail = base + (c - half - 1) * spatial
        has_head, has_tail = c + half < channels, c - half - 1 >= 0
        if has_head and has_tail:
            _across_inner(x, scale, y, cur, prev, head, tail, j0, j1, alpha_over_size, beta)
        else:
            _across_edge(x, scale, y, cur, prev, head, tail, j0, j1, alpha_over_size, beta, has_head,
                         has_tail)


@njit(cache=True, error_model="numpy")
def _across_forward_blocks(x, b0, b1, per_image, channels, spatial, size, alpha_over_size, k, beta, scale,
                           y):
    """Blocks b0..b1: block b is the pixels [part·_PIXELS, (part + 1)·_PIXELS) of image n = b // per_image."""
    for b in range(b0, b1):
        n, part = b // per_image, b % per_image
        _across_forward_block(x, n * channels * spatial, channels, spatial, part * _PIXELS,
                              min((part + 1) * _PIXELS, spatial), size, alpha_over_size, k, beta,
                              scale, y)


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_across_forward(x, num, channels, spatial, size, alpha, beta, k, scale, y):
    """scale = k + alpha/size·Σ x² over the size channels around each (zero-padded), y = x·scale^(−beta)"""
    per_image, blocks = _across_blocks(num, spatial)
    alpha_over_size = scale.dtype.type(alpha / size)
    if num * channels * spatial < _CHUNK_MIN:
        # np.int64(0), not 0: numba would compile the callee again for the literal 0
        _across_forward_blocks(x, np.int64(0), blocks, per_image, channels, spatial, size,
                               alpha_over_size, k, beta, scale, y)
    else:
        for b in prange(blocks):
            _across_forward_blocks(x, b, b + 1, per_image, channels, spatial, size, alpha_over_size, k, beta,
                                   scale, y)


@njit(cache=True, inline="always", error_model="numpy")
def _ratio(y, scale, dy, i):
    return dy[U(i)] * y[U(i)] / scale[U(i)]


@njit(cache=True, inline="always", error_model="numpy")
def _across_backward_step(x, y, scale, dy, cur, prev, head, tail, j0, j1, cache_ratio, beta, has_cur,
                          has_head, has_tail, dx):
    """Over pixels j0..j1: A_c = A_(c−1) + r[c + half] − r[c − half − 1] into dx[c] (r = dy·y/scale;
    when channel c exists), then dx[c − 1] = dy·scale^(−beta) − cache_ratio·x·A_(c−1)."""
    for j in range(j0, j1):
        i = prev + j
        a = dx[U(i)]
        if has_cur:
            b = a
            if has_head:
                b += _ratio(y, scale, dy, head + j)
            if has_tail:
                b -= _ratio(y, scale, dy, tail + j)
            dx[U(cur + j)] = b
        if beta == 0.75:
            r = np.sqrt(scale[U(i)])
            dx[U(i)] = dy[U(i)] / (r * np.sqrt(r)) - cache_ratio * x[U(i)] * a
        else:
            dx[U(i)] = dy[U(i)] * scale[U(i)] ** -beta - cache_ratio * x[U(i)] * a


@njit(cache=True, error_model="numpy")
def _across_backward_inner(x, y, scale, dy, cur, prev, head, tail, j0, j1, cache_ratio, beta, dx):
    _across_backward_step(x, y, scale, dy, cur, prev, head, tail, j0, j1, cache_ratio, beta, True, True,
                          True, dx)


@njit(cache=True, error_model="numpy")
def _across_backward_edge(x, y, scale, dy, cur, prev, head, tail, j0, j1, cache_ratio, beta, has_cur,
                          has_head, has_tail, dx):
    _across_backward_step(x, y, scale, dy, cur, prev, head, tail, j0, j1, cache_ratio, beta, has_cur,
                          has_head, has_tail, dx)


@njit(cache=True, inline="always", error_model="numpy")
def _across_backward_block(x, y, scale, dy, base, channels, spatial, j0, j1, size, cache_ratio, beta, dx):
    """dx[c] holds the window sum A_c = Σ dy·y/scale over channels c − half .. c + half until A_(c+1)
    is made from it; then it becomes dy·scale^(−beta) − cache_ratio·x·A_c."""
    half = (size - 1) // 2
    for j in range(j0, j1):
        dx[U(base + j)] = 0
    for q in range(min(half + 1, channels)):
        o = base + q * spatial
        for j in range(j0, j1):
            dx[U(base + j)] += _ratio(y, scale, dy, o + j)
    for c in range(1, channels + 1):
        prev = base + (c - 1) * spatial
        cur = prev + spatial
        head = base + (c + half) * spatial
        tail = base + (c - half - 1) * spatial
        has_cur, has_head, has_tail = c < channels, c + half < channels, c - half - 1 >= 0
        if has_cur and has_head and has_tail:
            _across_backward_inner(x, y, scale, dy, cur, prev, head, tail, j0, j1, cache_ratio, beta, dx)
        else:
            _across_backward_edge(x, y, scale, dy, cur, prev, head, tail, j0, j1, cache_ratio, beta, has_cur,
                                  has_head, has_tail, dx)


@njit(cache=True, error_model="numpy")
def _across_backward_blocks(x, y, scale, dy, b0, b1, per_image, channels, spatial, size, cache_ratio, beta,
                            dx):
    """Blocks b0..b1: block b is the pixels [part·_PIXELS, (part + 1)·_PIXELS) of image n = b // per_image."""
    for b in range(b0, b1):
        n, part = b // per_image, b % per_image
        _across_backward_block(x, y, scale, dy, n * channels * spatial, channels, spatial, part * _PIXELS,
                              min((part + 1) * _PIXELS, spatial), size, cache_ratio,
                              beta, dx)


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_across_backward(x, y, scale, dy, num, channels, spatial, size, alpha, beta, dx):
    """dx = dy·scale^(−beta) − (2·alpha·beta/size)·x·Σ over the size channels around each of dy·y/scale"""
    per_image, blocks = _across_blocks(num, spatial)
    cache_ratio = dx.dtype.type(2.0 * alpha * beta / size)
    if num * channels * spatial < _CHUNK_MIN:
        _across_backward_blocks(x, y, scale, dy, np.int64(0), blocks, per_image, channels, spatial,
                                size, cache_ratio, beta, dx)
    else:
        for b in prange(blocks):
            _across_backward_blocks(x, y, scale, dy, b, b + 1, per_image, channels, spatial, size,
                                    cache_ratio, beta, dx)


# =========================================================================== WITHIN_CHANNEL
@njit(cache=True, error_model="numpy")
def _box_rows(src, dst, o, height, width, half):
    """dst = Σ of src over [w − half, w + half] along each row (zero outside), one plane at o."""
    for i in range(height * width):
        dst[U(o + i)] = 0
    for h in range(height):
        r = o + h * width
        for d in range(-half, half + 1):
            for w in range(max(0, -d), min(width, width - d)):
                dst[U(r + w)] += src[U(r + w + d)]


@njit(cache=True, error_model="numpy")
def _box_columns(src, dst, o, height, width, half):
    """dst = Σ of src over [h − half, h + half] along each column (zero outside), one plane at o."""
    for i in range(height * width):
        dst[U(o + i)] = 0
    for h in range(height):
        r = o + h * width
        for hh in range(max(0, h - half), min(height, h + half + 1)):
            s = o + hh * width
            for w in range(width):
                dst[U(r + w)] += src[U(s + w)]


@njit(cache=True, error_model="numpy")
def _within_forward_planes(x, p0, p1, height, width, size, alpha, beta, scale, y):
    half = (size - 1) // 2
    count = height * width
    area = size * size
    for p in range(p0, p1):
        o = p * count
        for i in range(o, o + count):
            v = x[U(i)]
            y[U(i)] = v * v                      # y holds x², then the window sums, then y
        _box_rows(y, scale, o, height, width, half)
        _box_columns(scale, y, o, height, width, half)
        for i in range(o, o + count):
            scale[U(i)] = 1 + alpha * (y[U(i)] / area)
        _apply(x, scale, y, o, o + count, beta)


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_within_forward(x, planes, height, width, size, alpha, beta, scale, y):
    """scale = 1 + alpha·(Σ x² over the size × size window around each, zero-padded)/size², y = x·scale^(−beta)"""
    if planes * height * width < _CHUNK_MIN:
        _within_forward_planes(x, np.int64(0), planes, height, width, size, alpha, beta, scale, y)
    else:
        nc = min(planes, 64)
        for b in prange(nc):
            _within_forward_planes(x, b * planes // nc, (b + 1) * planes // nc, height, width, size,
                                   alpha, beta, scale, y)


@njit(cache=True, error_model="numpy")
def _within_backward_planes(x, y, scale, dy, p0, p1, height, width, size, alpha, beta, ratio, dx):
    half = (size - 1) // 2
    count = height * width
    cache_ratio = 2.0 * alpha * beta / (size * size)
    for p in range(p0, p1):
        o = p * count
        for i in range(o, o + count):
            ratio[U(i)] = _ratio(y, scale, dy, i)
        _box_rows(ratio, dx, o, height, width, half)
        _box_columns(dx, ratio, o, height, width, half)      # ratio now holds the window sums
        if beta == 0.75:
            for i in range(o, o + count):
                r = np.sqrt(scale[U(i)])
                dx[U(i)] = dy[U(i)] / (r * np.sqrt(r)) - cache_ratio * x[U(i)] * ratio[U(i)]
        else:
            for i in range(o, o + count):
                dx[U(i)] = dy[U(i)] * scale[U(i)] ** -beta - cache_ratio * x[U(i)] * ratio[U(i)]


@njit(cache=True, parallel=True, error_model="numpy")
def lrn_within_backward(x, y, scale, dy, planes, height, width, size, alpha, beta, ratio, dx):
    """dx = dy·scale^(−beta) − (2·alpha·beta/size²)·x·Σ over the size × size window around each of dy·y/scale (ratio: workspace)"""
    if planes * height * width < _CHUNK_MIN:
        _within_backward_planes(x, y, scale, dy, np.int64(0), planes, height, width, size, alpha,
                                beta, ratio, dx)
    else:
        nc = min(planes, 64)
        for b in prange(nc):
            _within_backward_planes(x, y, scale, dy, b * planes // nc, (b + 1) * planes // nc, height,
                                    width, size, alpha, beta, ratio, dx)
