"""GPU local response normalization kernels (Caffe's LRNLayer). Mirrors kernels/cpu/lrn.py (same
names, arguments and formulas; see its docstring). ACROSS_CHANNELS runs one thread per (image,
pixel), walking the channels with the running window sum as Caffe's LRNFillScale and
LRNComputeDiff do; WITHIN_CHANNEL one thread per value, summing its size × size window."""
import math

from numba import cuda

from ._launch import grid_stride, launch_1d


# =========================================================================== ACROSS_CHANNELS
@grid_stride(lambda num, spatial: num * spatial)
@cuda.jit
def lrn_across_forward(x, num, channels, spatial, size, alpha, beta, k, scale, y):
    """scale = k + alpha/size·Σ x² over the size channels around each (zero-padded), y = x·scale^(−beta)"""
    half = (size - 1) // 2
    alpha_over_size = alpha / size
    for e in range(cuda.grid(1), num * spatial, cuda.gridsize(1)):
        base = (e // spatial) * channels * spatial + e % spatial
        s = k
        for q in range(min(half + 1, channels)):
            v = x[base + q * spatial]
            s += alpha_over_size * (v * v)
        for c in range(channels):
            i = base + c * spatial
            if c > 0:
                s = scale[i - spatial]
                if c + half < channels:
                    v = x[i + half * spatial]
                    s += alpha_over_size * (v * v)
                if c - half - 1 >= 0:
                    v = x[i - (half + 1) * spatial]
                    s -= alpha_over_size * (v * v)
            scale[i] = s
            y[i] = x[i] * math.pow(scale[i], -beta)


@grid_stride(lambda num, spatial: num * spatial)
@cuda.jit
def lrn_across_backward(x, y, scale, dy, num, channels, spatial, size, alpha, beta, dx):
    """dx = dy·scale^(−beta) − (2·alpha·beta/size)·x·Σ over the size channels around each of dy·y/scale"""
    half = (size - 1) // 2
    cache_ratio = 2.0 * alpha * beta / size
    for e in range(cuda.grid(1), num * spatial, cuda.gridsize(1)):
        base = (e // spatial) * channels * spatial + e % spatial
        window = 0.0
        for q in range(min(half + 1, channels)):
            i = base + q * spatial
            window += dy[i] * y[i] / scale[i]
        for c in range(channels):
            i = base + c * spatial
            dx[i] = dy[i] * math.pow(scale[i], -beta) - cache_ratio * x[i] * window
            if c + half + 1 < channels:
                j = i + (half + 1) * spatial
                window += dy[j] * y[j] / scale[j]
            if c - half >= 0:
                j = i - half * spatial
                window -= dy[j] * y[j] / scale[j]


# =========================================================================== WITHIN_CHANNEL
@cuda.jit(device=True)
def _window_sum(a, plane, h, w, height, width, half, square):
    """Σ over the (2·half + 1)² window around (h, w) of the plane at ``plane`` (a², if square), zero outside."""
    s = 0.0
    for hh in range(max(h - half, 0), min(h + half + 1, height)):
        for ww in range(max(w - half, 0), min(w + half + 1, width)):
            v = a[plane + hh * width + ww]
            s += v * v if square else v
    return s


@grid_stride(lambda planes, height, width: planes * height * width)
@cuda.jit
def lrn_within_forward(x, planes, height, width, size, alpha, beta, scale, y):
    """scale = 1 + alpha·(Σ x² over the size × size window around each, zero-padded)/size², y = x·scale^(−beta)"""
    half = (size - 1) // 2
    for e in range(cuda.grid(1), planes * height * width, cuda.gridsize(1)):
        w = e % width
        h = (e // width) % height
        s = 1 + alpha * (_window_sum(x, e - h * width - w, h, w, height, width, half, True) / (size * size))
        scale[e] = s
        y[e] = x[e] * math.pow(scale[e], -beta)


@grid_stride("ratio")
@cuda.jit
def _within_ratio(y, scale, dy, ratio):
    """Kernel: ratio = dy·y/scale"""
    for i in range(cuda.grid(1), ratio.size, cuda.gridsize(1)):
        ratio[i] = dy[i] * y[i] / scale[i]


@cuda.jit
def _within_diff(x, scale, dy, ratio, planes, height, width, size, alpha, beta, dx):
    """Kernel: dx = dy·scale^(−beta) − (2·alpha·beta/size²)·x·Σ_window ratio"""
    half = (size - 1) // 2
    cache_ratio = 2.0 * alpha * beta / (size * size)
    for e in range(cuda.grid(1), planes * height * width, cuda.gridsize(1)):
        w = e % width
        h = (e // width) % height
        window = _window_sum(ratio, e - h * width - w, h, w, height, width, half, False)
        dx[e] = dy[e] * math.pow(scale[e], -beta) - cache_ratio * x[e] * window


def lrn_within_backward(x, y, scale, dy, planes, height, width, size, alpha, beta, ratio, dx):
    """dx = dy·scale^(−beta) − (2·alpha·beta/size²)·x·Σ over the size × size window around each of dy·y/scale (ratio: workspace)"""
    _within_ratio(y, scale, dy, ratio)
    launch_1d(_within_diff, planes * height * width)(x, scale, dy, ratio, planes, height, width, size,
                                                     alpha, beta, dx)
