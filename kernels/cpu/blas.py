"""CPU BLAS-like kernels (numba @njit). All vectors are flat contiguous arrays; outputs are in place."""
import numpy as np
from numba import njit, prange

_MAX_CHUNKS = 64      # reductions: fixed partial-sum layout (depends on n only -> deterministic)
_CHUNK_MIN = 2048     # smallest chunk worth a thread


@njit(cache=True)
def _nchunks(n):
    """Number of partial sums used for a reduction over n items: clamp(n // _CHUNK_MIN, 1, _MAX_CHUNKS)."""
    c = n // _CHUNK_MIN
    if c < 1:
        c = 1
    if c > _MAX_CHUNKS:
        c = _MAX_CHUNKS
    return c


@njit(cache=True)
def _matmul_into(trans_a, trans_b, a, b, out):
    """out = op(A)·op(B) through BLAS (a.T of a C array is F-contiguous, which np.dot accepts)."""
    if trans_a:
        if trans_b:
            np.dot(a.T, b.T, out)
        else:
            np.dot(a.T, b, out)
    else:
        if trans_b:
            np.dot(a, b.T, out)
        else:
            np.dot(a, b, out)


@njit(cache=True, parallel=True)
def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    """C = alpha·op(A)·op(B) + beta·C, op(X) = X.T if the trans flag is set (beta == 0 ignores C)."""
    m, n = c.shape
    ma = a.shape[1] if trans_a else a.shape[0]
    ka = a.shape[0] if trans_a else a.shape[1]
    kb = b.shape[1] if trans_b else b.shape[0]
    nb = b.shape[0] if trans_b else b.shape[1]
    if ma != m or nb != n or ka != kb:
        raise ValueError("gemm: shape mismatch")
    if beta == 0:
        if ka == 0:
            for i in prange(m):
                for j in range(n):
                    c[i, j] = 0
            return
        _matmul_into(trans_a, trans_b, a, b, c)
        if alpha != 1:
            for i in prange(m):
                for j in range(n):
                    c[i, j] = alpha * c[i, j]
    else:
        p = np.empty((m, n), dtype=c.dtype)
        if ka == 0:
            p[:, :] = 0
        else:
            _matmul_into(trans_a, trans_b, a, b, p)
        for i in prange(m):
            for j in range(n):
                c[i, j] = alpha * p[i, j] + beta * c[i, j]


@njit(cache=True, parallel=True)
def axpy(alpha, x, y):
    """y += alpha·x"""
    for i in prange(x.size):
        y[i] = y[i] + alpha * x[i]


@njit(cache=True, parallel=True)
def axpby(alpha, x, beta, y):
    """y = alpha·x + beta·y (beta == 0 ignores y, which may hold NaN)"""
    if beta == 0:
        for i in prange(x.size):
            y[i] = alpha * x[i]
    else:
        for i in prange(x.size):
            y[i] = alpha * x[i] + beta * y[i]


@njit(cache=True, parallel=True)
def scale(alpha, x):
    """x *= alpha"""
    for i in prange(x.size):
        x[i] = alpha * x[i]


@njit(cache=True, parallel=True)
def set_value(x, value):
    """x[:] = value"""
    for i in prange(x.size):
        x[i] = value


@njit(cache=True, parallel=True)
def copy(x, y):
    """y[:] = x"""
    for i in prange(x.size):
        y[i] = x[i]


@njit(cache=True, parallel=True)
def sub(a, b, y):
    """y = a − b"""
    for i in prange(a.size):
        y[i] = a[i] - b[i]


@njit(cache=True, parallel=True)
def dot(x, y):
    """Σ x·y (float64 accumulation)"""
    n = x.size
    nc = _nchunks(n)
    part = np.zeros(nc, dtype=np.float64)
    for k in prange(nc):
        s = 0.0
        for i in range(k * n // nc, (k + 1) * n // nc):
            s += np.float64(x[i]) * np.float64(y[i])
        part[k] = s
    return part.sum()


@njit(cache=True, parallel=True)
def asum(x):
    """Σ |x| (float64 accumulation)"""
    n = x.size
    nc = _nchunks(n)
    part = np.zeros(nc, dtype=np.float64)
    for k in prange(nc):
        s = 0.0
        for i in range(k * n // nc, (k + 1) * n // nc):
            s += abs(np.float64(x[i]))
        part[k] = s
    return part.sum()


@njit(cache=True, parallel=True)
def sumsq(x):
    """Σ x² (float64 accumulation)"""
    n = x.size
    nc = _nchunks(n)
    part = np.zeros(nc, dtype=np.float64)
    for k in prange(nc):
        s = 0.0
        for i in range(k * n // nc, (k + 1) * n // nc):
            v = np.float64(x[i])
            s += v * v
        part[k] = s
    return part.sum()


@njit(cache=True, parallel=True)
def add_bias(y, b):
    """y[i, j] += b[j] for y of shape (M, N)"""
    m, n = y.shape
    for i in prange(m):
        for j in range(n):
            y[i, j] = y[i, j] + b[j]


@njit(cache=True, parallel=True)
def bias_grad(dy, db):
    """db[j] += Σ_i dy[i, j] for dy of shape (M, N) (accumulates)"""
    m, n = dy.shape
    nc = _nchunks(m * n)
    if nc > m:
        nc = max(m, 1)
    part = np.zeros((nc, n), dtype=np.float64)
    for k in prange(nc):
        for i in range(k * m // nc, (k + 1) * m // nc):
            for j in range(n):
                part[k, j] += dy[i, j]
    for j in prange(n):
        s = 0.0
        for k in range(nc):
            s += part[k, j]
        db[j] = db[j] + s
