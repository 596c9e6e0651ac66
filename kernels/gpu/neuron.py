"""GPU neuron (elementwise activation) kernels. Outputs may alias inputs (in-place layers)."""
import math

from numba import cuda

from ._launch import launch_1d


@cuda.jit
def _relu_forward(x, y, negative_slope):
    """Kernel (grid-stride): y = x if x > 0 else negative_slope·x"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if v > 0:
            y[i] = v
        else:
            y[i] = negative_slope * v


def relu_forward(x, y, negative_slope):
    """y = x if x > 0 else negative_slope·x"""
    launch_1d(_relu_forward, x.size)(x, y, negative_slope)


@cuda.jit
def _relu_backward(x, dy, dx, negative_slope):
    """Kernel (grid-stride): dx = dy·(1 if x > 0 else negative_slope)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        g = dy[i]
        if x[i] > 0:
            dx[i] = g
        else:
            dx[i] = negative_slope * g


def relu_backward(x, dy, dx, negative_slope):
    """dx = dy·(1 if x > 0 else negative_slope)"""
    launch_1d(_relu_backward, x.size)(x, dy, dx, negative_slope)


@cuda.jit
def _sigmoid_forward(x, y):
    """Kernel (grid-stride): y = 1/(1+e^−x), evaluated as e^x/(1+e^x) for x < 0 (no overflow)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if v >= 0:
            y[i] = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            y[i] = e / (1.0 + e)


def sigmoid_forward(x, y):
    """y = 1/(1+e^−x), evaluated as e^x/(1+e^x) for x < 0 (no overflow)"""
    launch_1d(_sigmoid_forward, x.size)(x, y)


@cuda.jit
def _sigmoid_backward(y, dy, dx):
    """Kernel (grid-stride): dx = dy·y·(1−y)"""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        s = y[i]
        dx[i] = dy[i] * s * (1 - s)


def sigmoid_backward(y, dy, dx):
    """dx = dy·y·(1−y)"""
    launch_1d(_sigmoid_backward, y.size)(y, dy, dx)


@cuda.jit
def _tanh_forward(x, y):
    """Kernel (grid-stride): y = tanh(x)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = math.tanh(x[i])


def tanh_forward(x, y):
    """y = tanh(x)"""
    launch_1d(_tanh_forward, x.size)(x, y)


@cuda.jit
def _tanh_backward(y, dy, dx):
    """Kernel (grid-stride): dx = dy·(1−y²)"""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        t = y[i]
        dx[i] = dy[i] * (1 - t * t)


def tanh_backward(y, dy, dx):
    """dx = dy·(1−y²)"""
    launch_1d(_tanh_backward, y.size)(y, dy, dx)


@cuda.jit
def _dropout_forward(x, mask, y, scale):
    """Kernel (grid-stride): y = x·mask·scale"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] * mask[i] * scale


def dropout_forward(x, mask, y, scale):
    """y = x·mask·scale"""
    launch_1d(_dropout_forward, x.size)(x, mask, y, scale)


@cuda.jit
def _dropout_backward(dy, mask, dx, scale):
    """Kernel (grid-stride): dx = dy·mask·scale"""
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        dx[i] = dy[i] * mask[i] * scale


def dropout_backward(dy, mask, dx, scale):
    """dx = dy·mask·scale"""
    launch_1d(_dropout_backward, dy.size)(dy, mask, dx, scale)
