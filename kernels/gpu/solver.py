"""GPU solver update kernels (Caffe conventions: the learning rate lives inside the history)."""
from numba import cuda

from ._launch import launch_1d


@cuda.jit
def _sgd_update(w, g, h, local_rate, momentum):
    """Kernel (grid-stride): h = momentum·h + local_rate·g; g = h; w −= h"""
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        h[i] = momentum * h[i] + local_rate * g[i]
        g[i] = h[i]
        w[i] = w[i] - h[i]


def sgd_update(w, g, h, local_rate, momentum):
    """h = momentum·h + local_rate·g; g = h; w −= h"""
    launch_1d(_sgd_update, w.size)(w, g, h, local_rate, momentum)


@cuda.jit
def _l2_regularize(w, g, decay):
    """Kernel (grid-stride): g += decay·w"""
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        g[i] = g[i] + decay * w[i]


def l2_regularize(w, g, decay):
    """g += decay·w"""
    launch_1d(_l2_regularize, w.size)(w, g, decay)


@cuda.jit
def _l1_regularize(w, g, decay):
    """Kernel (grid-stride): g += decay·sign(w) (sign(0) = 0)"""
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        v = w[i]
        if v > 0:
            g[i] = g[i] + decay
        elif v < 0:
            g[i] = g[i] - decay


def l1_regularize(w, g, decay):
    """g += decay·sign(w) (sign(0) = 0)"""
    launch_1d(_l1_regularize, w.size)(w, g, decay)
