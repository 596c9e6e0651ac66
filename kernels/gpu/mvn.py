"""GPU kernels of MVN (mean-variance normalization) over the planes of a flat (planes, size)
array: one block per plane (block-stride over planes), its threads striding through the plane
with float64 partial sums joined by a shared-memory tree sum. y and dx may alias x and dy.
Mirrors kernels/cpu/mvn.py."""
import math

from numba import cuda, float64

from ._launch import MAX_THREADS, launch_blocks
from ._reduce import tree_sum


@cuda.jit(device=True)
def _block_sum(sm, tid, value):
    """Σ value over the block's threads, returned to every thread (sm is free again afterwards)"""
    sm[tid] = value
    tree_sum(sm, tid)
    total = sm[0]
    cuda.syncthreads()               # everyone has read sm[0] before sm is written again
    return total


@cuda.jit
def _mvn_forward(x, y, scale, planes, size, normalize_variance, eps):
    """Kernel (block per plane): y = (x − μ)·s, s = 1/(σ + eps) stored in scale"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    for p in range(cuda.blockIdx.x, planes, cuda.gridDim.x):
        lo = p * size
        t = 0.0
        for j in range(tid, size, step):
            t += float64(x[lo + j])
        m = _block_sum(sm, tid, t) / size
        s = 1.0
        if normalize_variance:
            t = 0.0
            for j in range(tid, size, step):
                d = float64(x[lo + j]) - m
                t += d * d
            s = 1.0 / (math.sqrt(_block_sum(sm, tid, t) / size) + eps)
            if tid == 0:
                scale[p] = s
        for j in range(tid, size, step):
            y[lo + j] = (float64(x[lo + j]) - m) * s


@cuda.jit
def _mvn_backward(y, dy, scale, dx, planes, size, normalize_variance):
    """Kernel (block per plane): dx = (dy − mean(dy) − y·mean(y·dy))·scale, or dy − mean(dy)"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    for p in range(cuda.blockIdx.x, planes, cuda.gridDim.x):
        lo = p * size
        a = 0.0
        b = 0.0
        for j in range(tid, size, step):
            g = float64(dy[lo + j])
            a += g
            b += g * float64(y[lo + j])
        a = _block_sum(sm, tid, a) / size
        b = _block_sum(sm, tid, b) / size
        if normalize_variance:
            s = float64(scale[p])
            for j in range(tid, size, step):
                dx[lo + j] = (float64(dy[lo + j]) - a - float64(y[lo + j]) * b) * s
        else:
            for j in range(tid, size, step):
                dx[lo + j] = float64(dy[lo + j]) - a


def mvn_forward(x, y, scale, planes, size, normalize_variance, eps):
    """Per plane p of size items: y = (x − μ_p)·scale[p] with scale[p] = 1/(σ_p + eps), σ the biased deviation (scale untouched and y = x − μ without normalize_variance)"""
    if planes and size:
        launch_blocks(_mvn_forward, planes, size)(x, y, scale, planes, size, bool(normalize_variance),
                                                  float(eps))


def mvn_backward(y, dy, scale, dx, planes, size, normalize_variance):
    """Per plane p: dx = (dy − mean(dy) − y·mean(y·dy))·scale[p] (Caffe's MVN backward), or dy − mean(dy) without normalize_variance"""
    if planes and size:
        launch_blocks(_mvn_backward, planes, size)(y, dy, scale, dx, planes, size, bool(normalize_variance))
