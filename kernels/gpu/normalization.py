"""GPU BatchNorm kernels, mirroring kernels/cpu/normalization.py: per-channel statistics over
(outer, inner) of a flat (outer, channels, inner) array in one read, and the elementwise passes
fused into one grid-stride pass each. An output may alias the input it is computed from.

The two sums per channel come from two passes on the device whose order depends on the sizes
only (deterministic), as the math vocabulary's channel reductions: blocks (c, s), s < splits,
sum every splits-th stretch of channel c into part[2·(c·splits + s) + {0, 1}] (threads stride
through the stretch, then a shared tree sum); then one thread per channel adds its partials in
order and finishes. The variance uses values shifted by the channel's first value (see the CPU
module)."""
import numpy as np
from numba import cuda, float64

from ._launch import MAX_BLOCKS, MAX_THREADS, grid_stride, threads_for
from ._reduce import tree_sum

_ITEMS_PER_THREAD = 8      # a split is worth a block when each thread gets about this many items


@cuda.jit
def _partial_sums(a, b, grad, outer, channels, inner, splits, part):
    """Kernel (block per (channel, split), block-stride): part[2·blk + {0, 1}] = (Σ u, Σ u·v) over
    split s of channel c, u = v = a − a[c·inner] (moments) or u = a, v = b (grad)"""
    s0 = cuda.shared.array(MAX_THREADS, float64)
    s1 = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    items = outer * inner
    step = splits * cuda.blockDim.x
    for blk in range(cuda.blockIdx.x, channels * splits, cuda.gridDim.x):
        c = blk // splits
        s = blk - c * splits
        k = 0.0 if grad else float64(a[c * inner])
        t0 = 0.0
        t1 = 0.0
        for p in range(s * cuda.blockDim.x + tid, items, step):
            o = p // inner
            q = (o * channels + c) * inner + p - o * inner
            u = float64(a[q]) - k
            t0 += u
            t1 += u * (float64(b[q]) if grad else u)
        s0[tid] = t0
        s1[tid] = t1
        tree_sum(s0, tid)
        tree_sum(s1, tid)
        if tid == 0:
            part[2 * blk] = s0[0]
            part[2 * blk + 1] = s1[0]
        cuda.syncthreads()                 # s0, s1 are written again for the next block index


@grid_stride("out0")
@cuda.jit
def _finish(a, part, splits, grad, m, inner, out0, out1):
    """Kernel (grid-stride over channels): the means from the partials (see _channel_sums)"""
    for c in range(cuda.grid(1), out0.size, cuda.gridsize(1)):
        t0 = 0.0
        t1 = 0.0
        for s in range(splits):
            t0 += part[2 * (c * splits + s)]
            t1 += part[2 * (c * splits + s) + 1]
        t0 /= m
        t1 /= m
        if grad:
            out0[c] = t0
            out1[c] = t1
        else:
            out0[c] = float64(a[c * inner]) + t0
            v = t1 - t0 * t0
            out1[c] = v if v > 0 else 0.0


def _channel_sums(a, b, grad, out0, out1, outer, channels, inner):
    """Per channel, with m = outer·inner: grad: out0 = mean(a), out1 = mean(a·b); moments:
    out0 = mean(a), out1 = mean((a − mean(a))²) (biased, never negative)."""
    items = outer * inner
    if channels == 0 or items == 0:
        return
    threads = threads_for(items)
    splits = max(1, min(items // (threads * _ITEMS_PER_THREAD), max(1, MAX_BLOCKS // channels)))
    part = cuda.device_array(2 * channels * splits, dtype=np.float64)
    blocks = max(1, min(channels * splits, MAX_BLOCKS))
    _partial_sums[blocks, threads](a, b, grad, outer, channels, inner, splits, part)
    _finish(a, part, splits, grad, float(items), inner, out0, out1)


def batch_norm_moments(x, mean, var, outer, channels, inner):
    """mean[c] = mean(x), var[c] = mean((x − mean[c])²) over (outer, inner) of a flat (outer, channels, inner) array (float64 sums)"""
    _channel_sums(x, x, False, mean, var, outer, channels, inner)


def batch_norm_backward_sums(dy, x_norm, mean_dy, mean_dy_x_norm, outer, channels, inner):
    """mean_dy[c] = mean(dy), mean_dy_x_norm[c] = mean(dy·x_norm) over (outer, inner) of flat (outer, channels, inner) arrays (float64 sums)"""
    _channel_sums(dy, x_norm, True, mean_dy, mean_dy_x_norm, outer, channels, inner)


@grid_stride(lambda outer, channels, inner: outer * channels * inner)
@cuda.jit
def batch_norm_forward(x, mean, inv_std, y, x_norm, outer, channels, inner):
    """y = x_norm = (x − mean[c])·inv_std[c] over a flat (outer, channels, inner) array (x_norm may be y)"""
    for e in range(cuda.grid(1), outer * channels * inner, cuda.gridsize(1)):
        c = (e // inner) % channels
        v = (x[e] - mean[c]) * inv_std[c]
        y[e] = v
        x_norm[e] = v


@grid_stride(lambda outer, channels, inner: outer * channels * inner)
@cuda.jit
def batch_norm_backward(dy, x_norm, mean_dy, mean_dy_x_norm, inv_std, dx, outer, channels, inner):
    """dx = (dy − mean_dy[c] − x_norm·mean_dy_x_norm[c])·inv_std[c] over a flat (outer, channels, inner) array (dx may be dy)"""
    for e in range(cuda.grid(1), outer * channels * inner, cuda.gridsize(1)):
        c = (e // inner) % channels
        dx[e] = (dy[e] - mean_dy[c] - x_norm[e] * mean_dy_x_norm[c]) * inv_std[c]
