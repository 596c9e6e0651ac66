"""CPU BatchNorm kernels over a flat (outer, channels, inner) array, statistics per channel over
(outer, inner): Caffe's BatchNormLayer in two passes over the data each way. GPU twins:
kernels/gpu/normalization.py.

* forward: batch_norm_moments (one read of x: mean and variance), batch_norm_forward (y and x̂);
* backward: batch_norm_backward_sums (one read of dy and x̂: the two means), batch_norm_backward.

Written in the math vocabulary the same layer takes five passes forward (channel_sum,
channel_add, channel_dot, channel_scale, copy) and six backward; with these kernels the layer
measured 3x faster or more both ways (one thread, 16x256x14x14 and 16x64x56x56: the BatchNorm
rows of the benchmark table).

Sums are taken in float64 and are deterministic: the flat range is split into equal slices
(by the sizes, not the threads), each done by a serial helper of this module with one float64
partial per channel and slice, added in slice order; one slice (under 2·_CHUNK_MIN items) runs
without starting the thread pool. Within a run of a slice the sums are vectorized
(reassociated) by LLVM. The
variance is computed in one pass from values shifted by the channel's first value k (x − k is
exact in float64 for float32 data): var = mean((x − k)²) − mean(x − k)², whose cancellation is
that of values centred near their mean, as in Caffe's two-pass mean((x − μ)²).

The elementwise kernels split the (o, c) rows the same way. An output may alias the input it is
computed from (in place); the loops then read and write one array, which keeps LLVM's
vectorized path (its runtime overlap check would otherwise take the scalar one).
"""
import numpy as np
from numba import njit, prange

_MAX_CHUNKS = 64       # numba's per-file cache: a private copy of math._nchunks
_CHUNK_MIN = 8192      # smallest slice worth a thread


@njit(cache=True)
def _nchunks(n, rows):
    """Number of slices for n items in ``rows`` rows: clamp(n // _CHUNK_MIN, 1, min(_MAX_CHUNKS, rows))."""
    c = n // _CHUNK_MIN
    if c > _MAX_CHUNKS:
        c = _MAX_CHUNKS
    if c > rows:
        c = rows
    if c < 1:
        c = 1
    return c


@njit(cache=True)
def _flat_chunks(n, channels):
    """Slices for a reduction over n items: clamp(n // _CHUNK_MIN, 1, _MAX_CHUNKS), at most n // channels
    (one row of partials per slice: never more memory than the input)."""
    c = n // _CHUNK_MIN
    if c > _MAX_CHUNKS:
        c = _MAX_CHUNKS
    if c > n // channels:
        c = n // channels
    if c < 1:
        c = 1
    return c


@njit(cache=True, fastmath={"reassoc"})
def _run_sums(a, b, grad, k):
    """(Σ u, Σ u·v) over a run in float64: u = v = a − k (moments), or u = a, v = b (grad).
    Reassociation lets LLVM vectorize the sums (7x faster on cached data); the order then
    depends on the sizes and the compiled vector width, not on the threads."""
    s0 = s1 = 0.0
    if grad:
        for j in range(a.size):
            u = np.float64(a[j])
            s0 += u
            s1 += u * np.float64(b[j])
    else:
        for j in range(a.size):
            u = np.float64(a[j]) - k
            s0 += u
            s1 += u * u
    return s0, s1


@njit(cache=True)
def _partial_sums(a, b, grad, part, channels, inner, start, stop):
    """part[c] += (Σ u, Σ u·v) over the items of channel c in the flat range [start, stop)."""
    if start >= stop:
        return
    e = start
    r = start // inner
    c = r % channels
    i = start - r * inner
    while e < stop:
        m = min(inner - i, stop - e)
        k = 0.0 if grad else np.float64(a[c * inner])      # the channel's first value
        s0, s1 = _run_sums(a[e:e + m], b[e:e + m], grad, k)
        part[c, 0] += s0
        part[c, 1] += s1
        e += m
        i = 0
        c += 1
        if c == channels:
            c = 0


@njit(cache=True, parallel=True)
def _channel_sums(a, b, grad, out0, out1, outer, channels, inner):
    """Per channel, with m = outer·inner: grad: out0 = mean(a), out1 = mean(a·b); moments:
    out0 = mean(a), out1 = mean((a − mean(a))²) (biased, never negative)."""
    n = outer * channels * inner
    if n == 0:
        return
    nc = _flat_chunks(n, channels)
    part = np.zeros((nc, channels, 2), dtype=np.float64)
    if nc == 1:
        # np.int64(0), not 0: numba would compile the callee again for the literal 0
        _partial_sums(a, b, grad, part[0], channels, inner, np.int64(0), n)
    else:
        for k in prange(nc):
            _partial_sums(a, b, grad, part[k], channels, inner, k * n // nc, (k + 1) * n // nc)
    m = outer * inner
    for c in range(channels):
        s0 = s1 = 0.0
        for k in range(nc):
            s0 += part[k, c, 0]
            s1 += part[k, c, 1]
        s0 /= m
        s1 /= m
        if grad:
            out0[c] = s0
            out1[c] = s1
        else:
            out0[c] = np.float64(a[c * inner]) + s0
            v = s1 - s0 * s0
            out1[c] = v if v > 0 else 0.0


@njit(cache=True)
def batch_norm_moments(x, mean, var, outer, channels, inner):
    """mean[c] = mean(x), var[c] = mean((x − mean[c])²) over (outer, inner) of a flat (outer, channels, inner) array (float64 sums)"""
    _channel_sums(x, x, False, mean, var, outer, channels, inner)


@njit(cache=True)
def batch_norm_backward_sums(dy, x_norm, mean_dy, mean_dy_x_norm, outer, channels, inner):
    """mean_dy[c] = mean(dy), mean_dy_x_norm[c] = mean(dy·x_norm) over (outer, inner) of flat (outer, channels, inner) arrays (float64 sums)"""
    _channel_sums(dy, x_norm, True, mean_dy, mean_dy_x_norm, outer, channels, inner)


@njit(cache=True)
def _same(a, b):
    """Whether two arrays start at the same address (an in-place call)."""
    return a.ctypes.data == b.ctypes.data


@njit(cache=True)
def _forward_rows(x, mean, inv_std, y, x_norm, channels, inner, r0, r1):
    in_place, one_out = _same(x, y), _same(y, x_norm)
    for r in range(r0, r1):
        c = r % channels
        shift, scale = mean[c], inv_std[c]
        e = r * inner
        xv, yv, nv = x[e:e + inner], y[e:e + inner], x_norm[e:e + inner]
        if one_out:
            if in_place:
                for i in range(inner):
                    yv[i] = (yv[i] - shift) * scale
            else:
                for i in range(inner):
                    yv[i] = (xv[i] - shift) * scale
        elif in_place:
            for i in range(inner):
                v = (yv[i] - shift) * scale
                yv[i] = v
                nv[i] = v
        else:
            for i in range(inner):
                v = (xv[i] - shift) * scale
                yv[i] = v
                nv[i] = v


@njit(cache=True, parallel=True)
def batch_norm_forward(x, mean, inv_std, y, x_norm, outer, channels, inner):
    """y = x_norm = (x − mean[c])·inv_std[c] over a flat (outer, channels, inner) array (x_norm may be y)"""
    rows = outer * channels
    nc = _nchunks(rows * inner, rows)
    if nc == 1:
        _forward_rows(x, mean, inv_std, y, x_norm, channels, inner, np.int64(0), rows)
    else:
        for k in prange(nc):
            _forward_rows(x, mean, inv_std, y, x_norm, channels, inner,
                          k * rows // nc, (k + 1) * rows // nc)


@njit(cache=True)
def _backward_rows(dy, x_norm, mean_dy, mean_dy_x_norm, inv_std, dx, channels, inner, r0, r1):
    in_place = _same(dy, dx)
    for r in range(r0, r1):
        c = r % channels
        ac, bc, scale = mean_dy[c], mean_dy_x_norm[c], inv_std[c]
        e = r * inner
        dyv, nv, dxv = dy[e:e + inner], x_norm[e:e + inner], dx[e:e + inner]
        if in_place:
            for i in range(inner):
                dxv[i] = (dxv[i] - ac - nv[i] * bc) * scale
        else:
            for i in range(inner):
                dxv[i] = (dyv[i] - ac - nv[i] * bc) * scale


@njit(cache=True, parallel=True)
def batch_norm_backward(dy, x_norm, mean_dy, mean_dy_x_norm, inv_std, dx, outer, channels, inner):
    """dx = (dy − mean_dy[c] − x_norm·mean_dy_x_norm[c])·inv_std[c] over a flat (outer, channels, inner) array (dx may be dy)"""
    rows = outer * channels
    nc = _nchunks(rows * inner, rows)
    if nc == 1:
        _backward_rows(dy, x_norm, mean_dy, mean_dy_x_norm, inv_std, dx, channels, inner, np.int64(0), rows)
    else:
        for k in prange(nc):
            _backward_rows(dy, x_norm, mean_dy, mean_dy_x_norm, inv_std, dx, channels, inner,
                           k * rows // nc, (k + 1) * rows // nc)
