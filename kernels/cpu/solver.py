"""CPU solver update kernels (Caffe conventions: the learning rate lives inside the history)."""
from numba import njit, prange


@njit(cache=True, parallel=True)
def sgd_update(w, g, h, local_rate, momentum):
    """h = momentum·h + local_rate·g; g = h; w −= h"""
    for i in prange(w.size):
        h[i] = momentum * h[i] + local_rate * g[i]
        g[i] = h[i]
        w[i] = w[i] - h[i]


@njit(cache=True, parallel=True)
def l2_regularize(w, g, decay):
    """g += decay·w"""
    for i in prange(w.size):
        g[i] = g[i] + decay * w[i]


@njit(cache=True, parallel=True)
def l1_regularize(w, g, decay):
    """g += decay·sign(w) (sign(0) = 0)"""
    for i in prange(w.size):
        v = w[i]
        if v > 0:
            g[i] = g[i] + decay
        elif v < 0:
            g[i] = g[i] - decay
