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
def _each_plane(backward, a, b, scale, out, planes, size, normalize_variance, eps):
    """Kernel (block per plane): the forward (a = x, out = y: y = (x − μ)·s, s = 1/(σ + eps) stored
    in scale) or the backward (a = y, b = dy, out = dx: dx = (dy − mean(dy) − y·mean(y·dy))·scale,
    or dy − mean(dy))"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    step = cuda.blockDim.x
    for p in range(cuda.blockIdx.x, planes, cuda.gridDim.x):
        lo = p * size
        if backward:
            t = 0.0
            u = 0.0
            for j in range(tid, size, step):
                g = float64(b[lo + j])
                t += g
                u += g * float64(a[lo + j])
            m = _block_sum(sm, tid, t) / size
            u = _block_sum(sm, tid, u) / size
            s = float64(scale[p]) if normalize_variance else 1.0
            for j in range(tid, size, step):
                g = float64(b[lo + j]) - m
                out[lo + j] = (g - float64(a[lo + j]) * u) * s if normalize_variance else g
            continue
        t = 0.0
        for j in range(tid, size, step):
            t += float64(a[lo + j])
        m = _block_sum(sm, tid, t) / size
        s = 1.0
        if normalize_variance:
            t = 0.0
            for j in range(tid, size, step):
                d = float64(a[lo + j]) - m
                t += d * d
            s = 1.0 / (math.sqrt(_block_sum(sm, tid, t) / size) + eps)
            if tid == 0:
                scale[p] = s
        for j in range(tid, size, step):
            out[lo + j] = (float64(a[lo + j]) - m) * s


def mvn_forward(x, y, scale, planes, size, normalize_variance, eps):
    """Per plane p of size items: y = (x − μ_p)·scale[p] with scale[p] = 1/(σ_p + eps), σ the biased deviation (scale untouched and y = x − μ without normalize_variance)"""
    if planes and size:
        launch_blocks(_each_plane, planes, size)(False, x, x, scale, y, planes, size, bool(normalize_variance),
                                                 float(eps))


def mvn_backward(y, dy, scale, dx, planes, size, normalize_variance):
    """Per plane p: dx = (dy − mean(dy) − y·mean(y·dy))·scale[p] (Caffe's MVN backward), or dy − mean(dy) without normalize_variance"""
    if planes and size:
        launch_blocks(_each_plane, planes, size)(True, y, dy, scale, dx, planes, size, bool(normalize_variance),
                                                 0.0)
