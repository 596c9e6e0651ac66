"""CPU crop kernels: a window of an N-d C-order array copied out (forward) and back into zeros
(backward). x has shape x_shape, y has shape y_shape, and y[i] = x[i + offsets] axis by axis
(int64 arrays, y_shape + offsets <= x_shape). Both arrays flat; they never alias.
GPU twins: kernels/gpu/crop.py.

Both directions are one copy, dst[i] = src[i + shift] where that lies inside src and 0
elsewhere (forward: dst = y, src = x, shift = offsets; backward: dst = dx, src = dy,
shift = −offsets), done row by row along the last axis of dst: a row is one contiguous copy
between zeroed margins. The rows are split into _nchunks slices, each done by a serial helper
of this module; one slice (under 2·_CHUNK_MIN items) runs without starting the thread pool.
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
def _copy_rows(src, dst, src_shape, dst_shape, shift, r0, r1):
    """Rows r0..r1-1 of dst (along its last axis): dst[i] = src[i + shift] inside src, else 0."""
    nd = dst_shape.size
    width, last = dst_shape[nd - 1], shift[nd - 1]
    lo = max(0, -last)                                   # dst columns [lo, hi) read src
    hi = min(width, src_shape[nd - 1] - last)
    strides = np.empty(nd, dtype=np.int64)               # src's C-order strides
    k = 1
    for a in range(nd - 1, -1, -1):
        strides[a] = k
        k *= src_shape[a]
    for r in range(r0, r1):
        row = dst[r * width:(r + 1) * width]
        start, inside, q = 0, hi > lo, r
        for a in range(nd - 2, -1, -1):
            i = q % dst_shape[a] + shift[a]
            q //= dst_shape[a]
            if i < 0 or i >= src_shape[a]:
                inside = False
            start += i * strides[a]
        if not inside:
            for j in range(width):
                row[j] = 0
            continue
        for j in range(lo):
            row[j] = 0
        part = src[start + lo + last:start + hi + last]
        for j in range(hi - lo):
            row[lo + j] = part[j]
        for j in range(hi, width):
            row[j] = 0


@njit(cache=True, parallel=True)
def _crop_copy(src, dst, src_shape, dst_shape, shift):
    """dst[i] = src[i + shift] where inside src, else 0 (flat C-order arrays)."""
    if dst.size == 0:
        return
    if dst_shape.size == 0:
        dst[0] = src[0]
        return
    rows = dst.size // dst_shape[dst_shape.size - 1]
    nc = _nchunks(dst.size, rows)
    if nc == 1:
        # np.int64(0), not 0: numba would compile the callee again for the literal 0
        _copy_rows(src, dst, src_shape, dst_shape, shift, np.int64(0), rows)
    else:
        for k in prange(nc):
            _copy_rows(src, dst, src_shape, dst_shape, shift, k * rows // nc, (k + 1) * rows // nc)


@njit(cache=True)
def crop_forward(x, y, x_shape, y_shape, offsets):
    """y[i_0, …, i_n] = x[i_0 + offsets_0, …, i_n + offsets_n] (flat C-order arrays of shapes x_shape, y_shape)"""
    _crop_copy(x, y, x_shape, y_shape, offsets)


@njit(cache=True)
def crop_backward(dy, dx, x_shape, y_shape, offsets):
    """dx = 0, then dx[i_0 + offsets_0, …, i_n + offsets_n] = dy[i_0, …, i_n] (crop_forward's adjoint)"""
    _crop_copy(dy, dx, y_shape, x_shape, -offsets)
