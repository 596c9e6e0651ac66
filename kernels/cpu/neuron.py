"""CPU neuron (elementwise activation) kernels. Outputs may alias inputs (in-place layers)."""
import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def relu_forward(x, y, negative_slope):
    """y = x if x > 0 else negative_slope·x"""
    for i in prange(x.size):
        v = x[i]
        if v > 0:
            y[i] = v
        else:
            y[i] = negative_slope * v


@njit(cache=True, parallel=True)
def relu_backward(x, dy, dx, negative_slope):
    """dx = dy·(1 if x > 0 else negative_slope)"""
    for i in prange(x.size):
        g = dy[i]
        if x[i] > 0:
            dx[i] = g
        else:
            dx[i] = negative_slope * g


@njit(cache=True, parallel=True)
def sigmoid_forward(x, y):
    """y = 1/(1+e^−x), evaluated as e^x/(1+e^x) for x < 0 (no overflow)"""
    for i in prange(x.size):
        v = x[i]
        if v >= 0:
            y[i] = 1.0 / (1.0 + np.exp(-v))
        else:
            e = np.exp(v)
            y[i] = e / (1.0 + e)


@njit(cache=True, parallel=True)
def sigmoid_backward(y, dy, dx):
    """dx = dy·y·(1−y)"""
    for i in prange(y.size):
        s = y[i]
        dx[i] = dy[i] * s * (1 - s)


@njit(cache=True, parallel=True)
def tanh_forward(x, y):
    """y = tanh(x)"""
    for i in prange(x.size):
        y[i] = np.tanh(x[i])


@njit(cache=True, parallel=True)
def tanh_backward(y, dy, dx):
    """dx = dy·(1−y²)"""
    for i in prange(y.size):
        t = y[i]
        dx[i] = dy[i] * (1 - t * t)


@njit(cache=True, parallel=True)
def dropout_forward(x, mask, y, scale):
    """y = x·mask·scale"""
    for i in prange(x.size):
        y[i] = x[i] * mask[i] * scale


@njit(cache=True, parallel=True)
def dropout_backward(dy, mask, dx, scale):
    """dx = dy·mask·scale"""
    for i in prange(dy.size):
        dx[i] = dy[i] * mask[i] * scale
