"""GPU softmax kernels over the channel axis of a flat (outer, channels, inner) array."""
import math

from numba import cuda, float64

from ._launch import grid_stride


@grid_stride(lambda outer, inner: outer * inner)
@cuda.jit
def softmax_forward(x, y, outer, channels, inner):
    """y = exp(x − max_c x) / Σ_c exp(x − max_c x) over c at flat index (o·channels + c)·inner + i"""
    # one thread per (o, i) position; x and y may alias (each element is read before it is written)
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        base = o * channels * inner + i
        m = x[base]
        for c in range(1, channels):
            v = x[base + c * inner]
            if v > m:
                m = v
        s = 0.0
        for c in range(channels):
            k = base + c * inner
            e = math.exp(x[k] - m)
            y[k] = e
            s += e
        inv = 1.0 / s
        for c in range(channels):
            k = base + c * inner
            y[k] = y[k] * inv


@grid_stride(lambda outer, inner: outer * inner)
@cuda.jit
def softmax_backward(y, dy, dx, outer, channels, inner):
    """dx = (dy − Σ_c dy·y)·y over c at flat index (o·channels + c)·inner + i"""
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        base = o * channels * inner + i
        d = 0.0
        for c in range(channels):
            k = base + c * inner
            d += float64(dy[k]) * float64(y[k])
        for c in range(channels):
            k = base + c * inner
            dx[k] = (dy[k] - d) * y[k]
