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


@njit(cache=True)
def _matvec_into(trans, a, x, out):
    """out = op(A)·x through BLAS."""
    if trans:
        np.dot(a.T, x, out)
    else:
        np.dot(a, x, out)


@njit(cache=True)
def gemv(trans, alpha, a, x, beta, y):
    """y = alpha·op(A)·x + beta·y, op(A) = A.T if trans; A 2-D, x and y flat, y not aliasing them (beta == 0 ignores y)"""
    m = a.shape[1] if trans else a.shape[0]
    k = a.shape[0] if trans else a.shape[1]
    if y.size != m or x.size != k:
        raise ValueError("gemv: shape mismatch")
    if m == 0:
        return
    if beta == 0:
        if k == 0:
            y[:] = 0
            return
        _matvec_into(trans, a, x, y)
        if alpha != 1:
            for i in range(m):
                y[i] = alpha * y[i]
    else:
        p = np.zeros(m, dtype=y.dtype)
        if k > 0:
            _matvec_into(trans, a, x, p)
        for i in range(m):
            y[i] = alpha * p[i] + beta * y[i]


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
