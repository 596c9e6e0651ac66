"""CPU kernels of MVN (mean-variance normalization) over the planes of a flat (planes, size)
array, one pass per statistic with each plane in cache. Statistics are summed in float64
(reassociated, so that the sums vectorize); y and dx may alias x and dy. GPU twins:
kernels/gpu/mvn.py."""
import numpy as np
from numba import njit, prange

_PLANE_ITEMS = 16384   # items per parallel task, at least (whole planes)


@njit(cache=True, fastmath={"reassoc"})
def _mean(x):
    """Σ x / x.size in float64"""
    t = 0.0
    for j in range(x.size):
        t += np.float64(x[j])
    return t / x.size


@njit(cache=True, fastmath={"reassoc"})
def _deviation(x, m):
    """√(Σ (x − m)² / x.size) in float64"""
    t = 0.0
    for j in range(x.size):
        d = np.float64(x[j]) - m
        t += d * d
    return np.sqrt(t / x.size)


@njit(cache=True, fastmath={"reassoc"})
def _means_of_dy(y, dy):
    """(Σ dy / n, Σ y·dy / n) in float64"""
    a = 0.0
    b = 0.0
    for j in range(dy.size):
        g = np.float64(dy[j])
        a += g
        b += g * np.float64(y[j])
    return a / dy.size, b / dy.size


@njit(cache=True)
def _forward_plane(x, y, normalize_variance, eps):
    """One plane: y = (x − μ)·s, s = 1/(σ + eps) (or 1); returns s"""
    m = _mean(x)
    s = 1.0 / (_deviation(x, m) + eps) if normalize_variance else 1.0
    for j in range(x.size):
        y[j] = (np.float64(x[j]) - m) * s
    return s


@njit(cache=True)
def _backward_plane(y, dy, s, dx, normalize_variance):
    """One plane: dx = (dy − mean(dy) − y·mean(y·dy))·s, or dy − mean(dy)"""
    a, b = _means_of_dy(y, dy)
    if normalize_variance:
        for j in range(dy.size):
            dx[j] = (np.float64(dy[j]) - a - np.float64(y[j]) * b) * s
    else:
        for j in range(dy.size):
            dx[j] = np.float64(dy[j]) - a


@njit(cache=True, parallel=True)
def _each_plane(backward, a, b, scale, out, planes, size, normalize_variance, eps):
    """_forward_plane (a = x, out = y) or _backward_plane (a = y, b = dy, out = dx) on every
    plane, in parallel tasks of whole planes"""
    tasks = min(max(planes * size // _PLANE_ITEMS, 1), max(planes, 1))
    for k in prange(tasks):
        for p in range(k * planes // tasks, (k + 1) * planes // tasks):
            lo, hi = p * size, (p + 1) * size
            if backward:
                s = np.float64(scale[p]) if normalize_variance else 1.0
                _backward_plane(a[lo:hi], b[lo:hi], s, out[lo:hi], normalize_variance)
            else:
                s = _forward_plane(a[lo:hi], out[lo:hi], normalize_variance, eps)
                if normalize_variance:
                    scale[p] = s


@njit(cache=True)
def mvn_forward(x, y, scale, planes, size, normalize_variance, eps):
    """Per plane p of size items: y = (x − μ_p)·scale[p] with scale[p] = 1/(σ_p + eps), σ the biased deviation (scale untouched and y = x − μ without normalize_variance)"""
    if planes and size:
        _each_plane(False, x, x, scale, y, planes, size, normalize_variance, eps)


@njit(cache=True)
def mvn_backward(y, dy, scale, dx, planes, size, normalize_variance):
    """Per plane p: dx = (dy − mean(dy) − y·mean(y·dy))·scale[p] (Caffe's MVN backward), or dy − mean(dy) without normalize_variance"""
    if planes and size:
        _each_plane(True, y, dy, scale, dx, planes, size, normalize_variance, 0.0)
