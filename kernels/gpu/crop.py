"""GPU crop kernels, mirroring kernels/cpu/crop.py: a window of an N-d C-order array copied out
(forward) and back into zeros (backward), both as dst[i] = src[i + shift] inside src and 0
elsewhere, one thread per element of dst (backward writes every element of dx once: no
clearing pass, no atomics). The launchers pack [dst shape | src shape | shift] into one int64
device array."""
import numpy as np
from numba import cuda

from ._launch import launch_1d


@cuda.jit
def _crop_copy(src, dst, nd, geometry):
    """Kernel (grid-stride over dst): dst[i] = src[i + shift] inside src, else 0"""
    for e in range(cuda.grid(1), dst.size, cuda.gridsize(1)):
        q = e
        start = 0
        stride = 1
        inside = True
        for a in range(nd - 1, -1, -1):
            i = q % geometry[a] + geometry[2 * nd + a]
            q //= geometry[a]
            size = geometry[nd + a]
            if i < 0 or i >= size:
                inside = False
            start += i * stride
            stride *= size
        if inside:
            dst[e] = src[start]
        else:
            dst[e] = 0


def _launch(src, dst, src_shape, dst_shape, shift):
    if dst.size > 0:
        parts = [np.asarray(a, dtype=np.int64).ravel() for a in (dst_shape, src_shape, shift)]
        launch_1d(_crop_copy, dst.size)(src, dst, parts[0].size, cuda.to_device(np.concatenate(parts)))


def crop_forward(x, y, x_shape, y_shape, offsets):
    """y[i_0, …, i_n] = x[i_0 + offsets_0, …, i_n + offsets_n] (flat C-order arrays of shapes x_shape, y_shape)"""
    _launch(x, y, x_shape, y_shape, offsets)


def crop_backward(dy, dx, x_shape, y_shape, offsets):
    """dx = 0, then dx[i_0 + offsets_0, …, i_n + offsets_n] = dy[i_0, …, i_n] (crop_forward's adjoint)"""
    _launch(dy, dx, y_shape, x_shape, -np.asarray(offsets, dtype=np.int64))
