"""GPU neuron (elementwise activation) kernels. Outputs may alias inputs (in-place layers)."""
import math

from numba import cuda, float64

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


# --------------------------------------------------------------------------- catalogue neurons
_BNLL_THRESHOLD = 50.0        # Caffe's kBNLL_THRESHOLD: e^x is taken of min(x, 50) in the backward


@grid_stride("x")
@cuda.jit
def bnll_forward(x, y):
    """y = max(x, 0) + log(1 + e^−|x|) = log(1 + eˣ) without overflow (the log in double)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = float64(x[i])
        y[i] = max(v, 0.0) + math.log(1.0 + math.exp(-abs(v)))


@grid_stride("x")
@cuda.jit
def bnll_backward(x, dy, dx):
    """dx = dy·e/(e + 1), e = exp(min(x, 50)) (Caffe's kBNLL_THRESHOLD)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        e = math.exp(min(x[i], _BNLL_THRESHOLD))
        dx[i] = dy[i] * e / (e + 1.0)


@grid_stride("x")
@cuda.jit
def elu_forward(x, y, alpha):
    """y = max(x, 0) + alpha·(e^min(x, 0) − 1)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = max(v, 0.0) + alpha * (math.exp(min(v, 0.0)) - 1.0)


@grid_stride("x")
@cuda.jit
def elu_backward(x, y, dy, dx, alpha):
    """dx = dy if x > 0 else dy·(alpha + y)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        g = dy[i]
        dx[i] = g if x[i] > 0 else g * (alpha + y[i])


@grid_stride("x")
@cuda.jit
def power_forward(x, y, power, scale, shift):
    """y = (shift + scale·x)^power (C's pow: NaN for a negative base and a non-integer power)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        b = shift + scale * x[i]
        if power == 1.0:
            y[i] = b
        elif power == 2.0:
            y[i] = b * b
        else:
            y[i] = b ** power


@grid_stride("x")
@cuda.jit
def power_backward(x, y, dy, dx, power, scale, shift):
    """dx = dy·power·scale·b^(power−1), b = shift + scale·x: as power·scale·y/b (2·scale·b for
    power 2), and power·scale·0^(power−1) where b = 0"""
    diff_scale = power * scale
    # where b = 0, the derivative's value: diff_scale·0^(power−1)
    at_zero = diff_scale * (0.0 if power > 1.0 else (1.0 if power == 1.0 else math.inf))
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        b = shift + scale * x[i]
        if power == 2.0:
            dx[i] = dy[i] * (diff_scale * b)
        else:
            dx[i] = dy[i] * (diff_scale * y[i] / b if b != 0 else at_zero)


@grid_stride("x")
@cuda.jit
def log_backward(x, dy, dx, scale, shift, num_scale):
    """dx = dy·num_scale / (shift + scale·x)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = dy[i] * num_scale / (shift + scale * x[i])


@grid_stride("x")
@cuda.jit
def clip_forward(x, y, lo, hi):
    """y = max(lo, min(x, hi)) in Caffe's order (a NaN x gives lo)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        t = hi if hi < v else v
        y[i] = t if lo < t else lo


@grid_stride("x")
@cuda.jit
def clip_backward(x, dy, dx, lo, hi):
    """dx = dy·[lo <= x <= hi]"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        dx[i] = dy[i] * (1.0 if v >= lo and v <= hi else 0.0)


@grid_stride("x")
@cuda.jit
def threshold_forward(x, y, threshold):
    """y = 1 if x > threshold else 0"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = 1.0 if x[i] > threshold else 0.0


@grid_stride("x")
@cuda.jit
def swish_forward(x, s, y, beta):
    """s = σ(beta·x) (no overflow, no NaN for either sign), y = x·s"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        u = beta * v
        e = math.exp(-abs(u))                 # never overflows; both quotients are cheap selects
        r = 1.0 / (1.0 + e) if u >= 0 else e / (1.0 + e)
        s[i] = r
        y[i] = v * r


@grid_stride("y")
@cuda.jit
def swish_backward(y, s, dy, dx, beta):
    """dx = dy·(beta·y + s·(1 − beta·y))"""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        by = beta * y[i]
        dx[i] = dy[i] * (by + s[i] * (1.0 - by))


@grid_stride("x")
@cuda.jit
def prelu_forward(x, slope, y, channels, inner):
    """y = x if x > 0 else slope[c]·x over a flat (outer, channels, inner) array"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = v if v > 0 else slope[(i // inner) % channels] * v


@grid_stride("x")
@cuda.jit
def prelu_backward(x, dy, slope, dx, channels, inner):
    """dx = dy if x > 0 else dy·slope[c] over a flat (outer, channels, inner) array"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        g = dy[i]
        dx[i] = g if x[i] > 0 else g * slope[(i // inner) % channels]


@grid_stride("x")
@cuda.jit
def prelu_slope_terms(x, dy, terms):
    """terms = dy·x·[x <= 0], the summands of PReLU's slope gradient"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        terms[i] = dy[i] * v * (1.0 if v <= 0 else 0.0)
