"""GPU math vocabulary (Caffe's math_functions): elementwise ops on flat contiguous arrays, and
broadcasts / reductions over the channel axis of a flat (outer, channels, inner) array.
Outputs may alias inputs. Mirrors kernels/cpu/math.py."""
import math

import numpy as np
from numba import cuda, float64

from ._launch import MAX_BLOCKS, MAX_THREADS, grid_stride, threads_for
from ._reduce import tree_sum


# --------------------------------------------------------------------------- two operands
@grid_stride("a")
@cuda.jit
def add(a, b, y):
    """y = a + b"""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        y[i] = a[i] + b[i]


@grid_stride("a")
@cuda.jit
def sub(a, b, y):
    """y = a − b"""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        y[i] = a[i] - b[i]


@grid_stride("a")
@cuda.jit
def mul(a, b, y):
    """y = a·b"""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        y[i] = a[i] * b[i]


@grid_stride("a")
@cuda.jit
def div(a, b, y):
    """y = a / b (IEEE: x/0 = ±inf, 0/0 = NaN)"""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        y[i] = a[i] / b[i]


# --------------------------------------------------------------------------- one operand
@grid_stride("x")
@cuda.jit
def sqr(x, y):
    """y = x²"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        y[i] = v * v


@grid_stride("x")
@cuda.jit
def sqrt(x, y):
    """y = √x (NaN for x < 0)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = math.sqrt(x[i])


@grid_stride("x")
@cuda.jit
def powx(x, p, y):
    """y = x^p (C's pow: NaN for x < 0 and a non-integer p)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i] ** p


@grid_stride("x")
@cuda.jit
def exp(x, y):
    """y = eˣ"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = math.exp(x[i])


@grid_stride("x")
@cuda.jit
def log(x, y):
    """y = ln x (−inf at 0, NaN for x < 0)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = math.log(x[i])


@grid_stride("x")
@cuda.jit
def abs(x, y):                                # noqa: A001 (Caffe's name; shadows the builtin here)
    """y = |x|"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = math.fabs(x[i])


@grid_stride("x")
@cuda.jit
def sign(x, y):
    """y = 1 if x > 0, −1 if x < 0, else 0 (also for NaN, as Caffe's caffe_sign)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        v = x[i]
        if v > 0:
            y[i] = 1
        elif v < 0:
            y[i] = -1
        else:
            y[i] = 0


@grid_stride("x")
@cuda.jit
def add_scalar(alpha, x):
    """x += alpha (in place, as Caffe's caffe_add_scalar)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = x[i] + alpha


# --------------------------------------------------------------------------- channel broadcasts
@grid_stride(lambda outer, channels, inner: outer * channels * inner)
@cuda.jit
def channel_scale(x, s, y, outer, channels, inner):
    """y[o, c, i] = x[o, c, i]·s[c] over a flat (outer, channels, inner) array"""
    for e in range(cuda.grid(1), outer * channels * inner, cuda.gridsize(1)):
        y[e] = x[e] * s[(e // inner) % channels]


@grid_stride(lambda outer, channels, inner: outer * channels * inner)
@cuda.jit
def channel_add(x, b, y, outer, channels, inner):
    """y[o, c, i] = x[o, c, i] + b[c] over a flat (outer, channels, inner) array"""
    for e in range(cuda.grid(1), outer * channels * inner, cuda.gridsize(1)):
        y[e] = x[e] + b[(e // inner) % channels]


# --------------------------------------------------------------------------- channel reductions
# Two passes, both on the device, whose summation order depends on the sizes only: blocks
# (c, s) for s < splits each sum every splits-th stretch of channel c's outer·inner items into
# part[c·splits + s] (threads stride through the stretch, then a shared tree sum); then one
# thread per channel adds its splits partials in order.
_ITEMS_PER_THREAD = 8      # a split is worth a block when each thread gets about this many items


@cuda.jit
def _channel_partials(a, b, product, outer, channels, inner, splits, part):
    """Kernel (block per (channel, split), block-stride): part[c·splits + s] = Σ a (or a·b) over split s of channel c"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    items = outer * inner
    step = splits * cuda.blockDim.x
    for blk in range(cuda.blockIdx.x, channels * splits, cuda.gridDim.x):
        c = blk // splits
        s = blk - c * splits
        t = 0.0
        for p in range(s * cuda.blockDim.x + tid, items, step):
            o = p // inner
            k = (o * channels + c) * inner + p - o * inner
            if product:
                t += float64(a[k]) * float64(b[k])
            else:
                t += float64(a[k])
        sm[tid] = t
        tree_sum(sm, tid)
        if tid == 0:
            part[blk] = sm[0]
        cuda.syncthreads()                 # sm is written again for the next block index


@grid_stride("y")
@cuda.jit
def _channel_finish(part, splits, beta, y):
    """Kernel (grid-stride over channels): y[c] = Σ_s part[c·splits + s] + beta·y[c] (beta == 0 ignores y)"""
    for c in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        t = 0.0
        for s in range(splits):
            t += part[c * splits + s]
        if beta == 0:
            y[c] = t
        else:
            y[c] = t + beta * y[c]


def _channel_reduce(a, b, product, beta, y, outer, channels, inner):
    """y[c] = Σ_{o,i} a (or a·b) + beta·y[c] in the two passes above."""
    if channels == 0:
        return
    items = outer * inner
    threads = threads_for(items)
    splits = max(1, min(items // (threads * _ITEMS_PER_THREAD), max(1, MAX_BLOCKS // channels)))
    part = cuda.device_array(channels * splits, dtype=np.float64)
    blocks = max(1, min(channels * splits, MAX_BLOCKS))
    _channel_partials[blocks, threads](a, b, bool(product), outer, channels, inner, splits, part)
    _channel_finish(part, splits, float(beta), y)


def channel_sum(x, beta, y, outer, channels, inner):
    """y[c] = Σ_{o,i} x[o, c, i] + beta·y[c] over a flat (outer, channels, inner) array (float64 sums; beta == 0 ignores y)"""
    _channel_reduce(x, x, False, beta, y, outer, channels, inner)


def channel_dot(a, b, beta, y, outer, channels, inner):
    """y[c] = Σ_{o,i} a[o, c, i]·b[o, c, i] + beta·y[c] over flat (outer, channels, inner) arrays (float64 sums; beta == 0 ignores y)"""
    _channel_reduce(a, b, True, beta, y, outer, channels, inner)
