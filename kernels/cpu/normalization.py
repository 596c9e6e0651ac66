"""CPU BatchNorm kernels: the elementwise passes of Caffe's BatchNormLayer fused into one pass
each over a flat (outer, channels, inner) array (the per-channel sums come from the math
vocabulary's channel_sum / channel_dot). GPU twins: kernels/gpu/normalization.py.

Measured against the same passes written in the math vocabulary (benchmarks in
tests/layer_cases.py, BatchNorm rows): the forward writes y and x̂ in one pass instead of
three (scale, copy and the shift), the backward one pass instead of four.

The work is split along the (o, c) rows in _nchunks slices, each done by a serial helper of
this module; one slice (under 2·_CHUNK_MIN items) runs without starting the thread pool. An
output may alias the input it is computed from (in place); the loops then read and write one
array, which keeps LLVM's vectorized path (its runtime overlap check would otherwise take the
scalar one).
"""
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
def _same(a, b):
    """Whether two arrays start at the same address (an in-place call)."""
    return a.ctypes.data == b.ctypes.data


@njit(cache=True)
def _forward_rows(x, neg_mean, inv_std, y, x_norm, channels, inner, r0, r1):
    in_place, one_out = _same(x, y), _same(y, x_norm)
    for r in range(r0, r1):
        c = r % channels
        shift, scale = neg_mean[c], inv_std[c]
        e = r * inner
        xv, yv, nv = x[e:e + inner], y[e:e + inner], x_norm[e:e + inner]
        if one_out:
            if in_place:
                for i in range(inner):
                    yv[i] = (yv[i] + shift) * scale
            else:
                for i in range(inner):
                    yv[i] = (xv[i] + shift) * scale
        elif in_place:
            for i in range(inner):
                v = (yv[i] + shift) * scale
                yv[i] = v
                nv[i] = v
        else:
            for i in range(inner):
                v = (xv[i] + shift) * scale
                yv[i] = v
                nv[i] = v


@njit(cache=True, parallel=True)
def batch_norm_forward(x, neg_mean, inv_std, y, x_norm, outer, channels, inner):
    """y = x_norm = (x + neg_mean[c])·inv_std[c] over a flat (outer, channels, inner) array (x_norm may be y)"""
    rows = outer * channels
    nc = _nchunks(rows * inner, rows)
    if nc == 1:
        _forward_rows(x, neg_mean, inv_std, y, x_norm, channels, inner, 0, rows)
    else:
        for k in prange(nc):
            _forward_rows(x, neg_mean, inv_std, y, x_norm, channels, inner,
                          k * rows // nc, (k + 1) * rows // nc)


@njit(cache=True)
def _backward_rows(dy, x_norm, a, b, inv_std, dx, channels, inner, r0, r1):
    in_place = _same(dy, dx)
    for r in range(r0, r1):
        c = r % channels
        ac, bc, scale = a[c], b[c], inv_std[c]
        e = r * inner
        dyv, nv, dxv = dy[e:e + inner], x_norm[e:e + inner], dx[e:e + inner]
        if in_place:
            for i in range(inner):
                dxv[i] = (dxv[i] + ac + nv[i] * bc) * scale
        else:
            for i in range(inner):
                dxv[i] = (dyv[i] + ac + nv[i] * bc) * scale


@njit(cache=True, parallel=True)
def batch_norm_backward(dy, x_norm, a, b, inv_std, dx, outer, channels, inner):
    """dx = (dy + a[c] + x_norm·b[c])·inv_std[c] over a flat (outer, channels, inner) array (dx may be dy)"""
    rows = outer * channels
    nc = _nchunks(rows * inner, rows)
    if nc == 1:
        _backward_rows(dy, x_norm, a, b, inv_std, dx, channels, inner, 0, rows)
    else:
        for k in prange(nc):
            _backward_rows(dy, x_norm, a, b, inv_std, dx, channels, inner,
                           k * rows // nc, (k + 1) * rows // nc)
