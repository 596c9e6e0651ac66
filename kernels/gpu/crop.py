"""GPU crop kernels, mirroring kernels/cpu/crop.py: a window of an N-d C-order array copied out
(forward, one thread per element of y) and back into zeros (backward, one thread per element
of x, which either reads its dy value or writes 0: no separate clearing pass, no atomics).
The launchers pack x_shape, y_shape and offsets into one int64 device array [x | y | offsets]."""
import numpy as np
from numba import cuda

from ._launch import launch_1d


@cuda.jit
def _crop_forward(x, y, nd, geometry):
    """Kernel (grid-stride over y): y[i] = x[i + offsets]"""
    for e in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        q = e
        src = 0
        stride = 1
        for a in range(nd - 1, -1, -1):
            size = geometry[nd + a]
            i = q % size
            q //= size
            src += (i + geometry[2 * nd + a]) * stride
            stride *= geometry[a]
        y[e] = x[src]


@cuda.jit
def _crop_backward(dy, dx, nd, geometry):
    """Kernel (grid-stride over dx): dx[i] = dy[i − offsets] inside the window, else 0"""
    for e in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        q = e
        src = 0
        stride = 1
        inside = True
        for a in range(nd - 1, -1, -1):
            i = q % geometry[a] - geometry[2 * nd + a]
            q //= geometry[a]
            size = geometry[nd + a]
            if i < 0 or i >= size:
                inside = False
            src += i * stride
            stride *= size
        if inside:
            dx[e] = dy[src]
        else:
            dx[e] = 0


def _geometry(x_shape, y_shape, offsets):
    """(nd, device int64 array [x_shape | y_shape | offsets])."""
    parts = [np.asarray(a, dtype=np.int64).ravel() for a in (x_shape, y_shape, offsets)]
    return parts[0].size, cuda.to_device(np.concatenate(parts))


def crop_forward(x, y, x_shape, y_shape, offsets):
    """y[i_0, …, i_n] = x[i_0 + offsets_0, …, i_n + offsets_n] (flat C-order arrays of shapes x_shape, y_shape)"""
    if y.size > 0:
        nd, geometry = _geometry(x_shape, y_shape, offsets)
        launch_1d(_crop_forward, y.size)(x, y, nd, geometry)


def crop_backward(dy, dx, x_shape, y_shape, offsets):
    """dx = 0, then dx[i_0 + offsets_0, …, i_n + offsets_n] = dy[i_0, …, i_n] (crop_forward's adjoint)"""
    if dx.size > 0:
        nd, geometry = _geometry(x_shape, y_shape, offsets)
        launch_1d(_crop_backward, dx.size)(dy, dx, nd, geometry)
