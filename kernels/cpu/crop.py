"""CPU crop kernels: a window of an N-d C-order array copied out (forward) and back into zeros
(backward). x has shape x_shape, y has shape y_shape, and y[i] = x[i + offsets] axis by axis
(int64 arrays, y_shape + offsets <= x_shape). Both arrays flat; they never alias.
GPU twins: kernels/gpu/crop.py.

The work is split along the rows (the last axis) of y in forward and of x in backward, in
_nchunks(count) slices each done by a serial helper of this module; a row of y is one
contiguous copy.
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
def _strides(shape):
    """C-order element strides of ``shape``."""
    nd = shape.size
    s = np.empty(nd, dtype=np.int64)
    k = 1
    for a in range(nd - 1, -1, -1):
        s[a] = k
        k *= shape[a]
    return s


@njit(cache=True)
def _copy_out(x, y, x_shape, y_shape, offsets, r0, r1):
    """y rows r0..r1-1 (rows along the last axis) from the window of x."""
    nd = y_shape.size
    width = y_shape[nd - 1]
    xs = _strides(x_shape)
    for r in range(r0, r1):
        src = offsets[nd - 1]
        q = r
        for a in range(nd - 2, -1, -1):
            i = q % y_shape[a]
            q //= y_shape[a]
            src += (i + offsets[a]) * xs[a]
        dst = r * width
        yv, xv = y[dst:dst + width], x[src:src + width]
        for j in range(width):
            yv[j] = xv[j]


@njit(cache=True)
def _copy_back(dy, dx, x_shape, y_shape, offsets, r0, r1):
    """dx rows r0..r1-1 (rows along the last axis of x): dy's values inside the window, 0 elsewhere."""
    nd = x_shape.size
    width = x_shape[nd - 1]
    lo, inner = offsets[nd - 1], y_shape[nd - 1]
    ys = _strides(y_shape)
    for r in range(r0, r1):
        row = dx[r * width:(r + 1) * width]
        src = 0
        inside = True
        q = r
        for a in range(nd - 2, -1, -1):
            i = q % x_shape[a] - offsets[a]
            q //= x_shape[a]
            if i < 0 or i >= y_shape[a]:
                inside = False
            src += i * ys[a]
        for j in range(width):
            row[j] = 0
        if inside:
            dyv = dy[src:src + inner]
            for j in range(inner):
                row[lo + j] = dyv[j]


@njit(cache=True, parallel=True)
def crop_forward(x, y, x_shape, y_shape, offsets):
    """y[i_0, …, i_n] = x[i_0 + offsets_0, …, i_n + offsets_n] (flat C-order arrays of shapes x_shape, y_shape)"""
    if y.size == 0:
        return
    if y_shape.size == 0:
        y[0] = x[0]
        return
    rows = y.size // y_shape[y_shape.size - 1]
    nc = _nchunks(y.size, rows)
    if nc == 1:
        _copy_out(x, y, x_shape, y_shape, offsets, 0, rows)
    else:
        for k in prange(nc):
            _copy_out(x, y, x_shape, y_shape, offsets, k * rows // nc, (k + 1) * rows // nc)


@njit(cache=True, parallel=True)
def crop_backward(dy, dx, x_shape, y_shape, offsets):
    """dx = 0, then dx[i_0 + offsets_0, …, i_n + offsets_n] = dy[i_0, …, i_n] (crop_forward's adjoint)"""
    if dx.size == 0:
        return
    if x_shape.size == 0:
        dx[0] = dy[0]
        return
    rows = dx.size // x_shape[x_shape.size - 1]
    nc = _nchunks(dx.size, rows)
    if nc == 1:
        _copy_back(dy, dx, x_shape, y_shape, offsets, 0, rows)
    else:
        for k in prange(nc):
            _copy_back(dy, dx, x_shape, y_shape, offsets, k * rows // nc, (k + 1) * rows // nc)
