"""GPU BatchNorm kernels, mirroring kernels/cpu/normalization.py: the elementwise passes of
Caffe's BatchNormLayer fused into one grid-stride pass each over a flat (outer, channels, inner)
array. An output may alias the input it is computed from (in place)."""
from numba import cuda

from ._launch import grid_stride


@grid_stride(lambda outer, channels, inner: outer * channels * inner)
@cuda.jit
def batch_norm_forward(x, neg_mean, inv_std, y, x_norm, outer, channels, inner):
    """y = x_norm = (x + neg_mean[c])·inv_std[c] over a flat (outer, channels, inner) array (x_norm may be y)"""
    for e in range(cuda.grid(1), outer * channels * inner, cuda.gridsize(1)):
        c = (e // inner) % channels
        v = (x[e] + neg_mean[c]) * inv_std[c]
        y[e] = v
        x_norm[e] = v


@grid_stride(lambda outer, channels, inner: outer * channels * inner)
@cuda.jit
def batch_norm_backward(dy, x_norm, a, b, inv_std, dx, outer, channels, inner):
    """dx = (dy + a[c] + x_norm·b[c])·inv_std[c] over a flat (outer, channels, inner) array (dx may be dy)"""
    for e in range(cuda.grid(1), outer * channels * inner, cuda.gridsize(1)):
        c = (e // inner) % channels
        dx[e] = (dy[e] + a[c] + x_norm[e] * b[c]) * inv_std[c]
