"""CPU solver update kernels (Caffe conventions: the learning rate lives inside the history)."""
import numpy as np
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
    """g += decay·w; returns Σ g afterwards in float64, finite exactly when every g is (the solver's NaN guard, without a pass of its own)"""
    total = 0.0
    for i in prange(w.size):
        g[i] = g[i] + decay * w[i]
        total += g[i]                 # as stored: a float32 overflow counts
    return total


@njit(cache=True, parallel=True)
def l1_regularize(w, g, decay):
    """g += decay·sign(w) (sign(0) = 0); returns Σ g afterwards in float64, as l2_regularize"""
    total = 0.0
    for i in prange(w.size):
        v = w[i]
        if v > 0:
            g[i] = g[i] + decay
        elif v < 0:
            g[i] = g[i] - decay
        total += g[i]
    return total


@njit(cache=True, parallel=True)
def nesterov_update(w, g, h, local_rate, momentum):
    """h' = momentum·h + local_rate·g; u = (1 + momentum)·h' − momentum·h; h = h'; g = u; w −= u"""
    for i in prange(w.size):
        previous = h[i]
        h[i] = momentum * previous + local_rate * g[i]
        u = (1.0 + momentum) * h[i] - momentum * previous
        g[i] = u
        w[i] = w[i] - u


@njit(cache=True, parallel=True)
def adagrad_update(w, g, h, local_rate, delta):
    """h += g²; u = local_rate·g / (√h + delta); g = u; w −= u"""
    for i in prange(w.size):
        gi = g[i]
        h[i] = h[i] + gi * gi
        u = local_rate * gi / (np.sqrt(h[i]) + delta)
        g[i] = u
        w[i] = w[i] - u


@njit(cache=True, parallel=True)
def rmsprop_update(w, g, h, local_rate, rms_decay, delta):
    """h = rms_decay·h + (1 − rms_decay)·g²; u = local_rate·g / (√h + delta); g = u; w −= u"""
    for i in prange(w.size):
        gi = g[i]
        h[i] = rms_decay * h[i] + (1.0 - rms_decay) * gi * gi
        u = local_rate * gi / (np.sqrt(h[i]) + delta)
        g[i] = u
        w[i] = w[i] - u


@njit(cache=True, parallel=True)
def adadelta_update(w, g, h, h2, local_rate, momentum, delta):
    """h = ρh + (1 − ρ)g²; s = g·√((h2 + δ)/(h + δ)); h2 = ρh2 + (1 − ρ)s²; u = local_rate·s; g = u; w −= u"""
    for i in prange(w.size):
        gi = g[i]
        h[i] = momentum * h[i] + (1.0 - momentum) * gi * gi
        s = gi * np.sqrt((h2[i] + delta) / (h[i] + delta))
        h2[i] = momentum * h2[i] + (1.0 - momentum) * s * s
        u = local_rate * s
        g[i] = u
        w[i] = w[i] - u


@njit(cache=True, parallel=True)
def adam_update(w, g, m, v, local_rate, beta1, beta2, eps, correction):
    """m = β1·m + (1 − β1)·g; v = β2·v + (1 − β2)·g²; u = local_rate·correction·m / (√v + eps); g = u; w −= u"""
    for i in prange(w.size):
        gi = g[i]
        m[i] = beta1 * m[i] + (1.0 - beta1) * gi
        v[i] = beta2 * v[i] + (1.0 - beta2) * gi * gi
        u = local_rate * correction * m[i] / (np.sqrt(v[i]) + eps)
        g[i] = u
        w[i] = w[i] - u
