"""GPU neuron (elementwise activation) kernels. Outputs may alias inputs (in-place layers)."""
import math

from numba import cuda

from ._launch import grid_stride


@grid_stride("x")
@cuda.jit
def relu_forward(x, y, negative_slope):
    """y = x if x > 0 else negative_slope·x"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if v > 0:
            y[i] = v
        else:
            y[i] = negative_slope * v


@grid_stride("x")
@cuda.jit
def relu_backward(x, dy, dx, negative_slope):
    """dx = dy·(1 if x > 0 else negative_slope)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        g = dy[i]
        if x[i] > 0:
            dx[i] = g
        else:
            dx[i] = negative_slope * g


@grid_stride("x")
@cuda.jit
def sigmoid_forward(x, y):
    """y = 1/(1+e^−x), evaluated as e^x/(1+e^x) for x < 0 (no overflow)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if v >= 0:
            y[i] = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            y[i] = e / (1.0 + e)


@grid_stride("y")
@cuda.jit
def sigmoid_backward(y, dy, dx):
    """dx = dy·y·(1−y)"""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        s = y[i]
        dx[i] = dy[i] * s * (1 - s)


@grid_stride("x")
@cuda.jit
def tanh_forward(x, y):
    """y = tanh(x)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = math.tanh(x[i])


@grid_stride("y")
@cuda.jit
def tanh_backward(y, dy, dx):
    """dx = dy·(1−y²)"""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        t = y[i]
        dx[i] = dy[i] * (1 - t * t)


@grid_stride("x")
@cuda.jit
def dropout_forward(x, mask, y, scale):
    """y = x·mask·scale"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] * mask[i] * scale


@grid_stride("dy")
@cuda.jit
def dropout_backward(dy, mask, dx, scale):
    """dx = dy·mask·scale"""
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        dx[i] = dy[i] * mask[i] * scale
