"""CPU BLAS-like kernels (numba @njit). All vectors are flat contiguous arrays; outputs are in place."""
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np import linalg as _linalg

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
def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    """C = alpha·op(A)·op(B) + beta·C, op(X) = X.T if the trans flag is set (beta == 0 ignores C); A, B and C 2-D and C-contiguous"""
    m, n = c.shape
    ma = a.shape[1] if trans_a else a.shape[0]
    ka = a.shape[0] if trans_a else a.shape[1]
    kb = b.shape[1] if trans_b else b.shape[0]
    nb = b.shape[0] if trans_b else b.shape[1]
    if ma != m or nb != n or ka != kb:
        raise ValueError("gemm: shape mismatch")
    # one BLAS call with alpha and beta (no scratch product, no extra pass over C)
    _gemm(trans_a, trans_b, m, n, ka, alpha, a.reshape(a.size), a.shape[1], b.reshape(b.size),
          b.shape[1], beta, c.reshape(c.size), n)


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


# --------------------------------------------------------------------------- BLAS, every argument
@intrinsic
def _xgemm(typingctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major C (m × n, rows ldc apart) = alpha·op(A)·op(B) + beta·C through the BLAS that
    numba's np.dot calls (SciPy's, through numba's helper numba_xxgemm, which is resolved when
    the code is linked, so the caller caches): the operands are the arrays' data pointers, op(A)
    m × k with rows lda apart as stored, op(B) k × n with rows ldb apart. Unchecked: _gemm checks."""
    arrays = (a, b, c)
    if not all(isinstance(t, types.Array) for t in arrays):
        return None
    dtype = c.dtype
    if dtype not in (types.float32, types.float64) or a.dtype != dtype or b.dtype != dtype:
        return None
    sig = types.intc(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        _linalg.ensure_blas()
        char = ir.IntType(8)
        void_p = char.as_pointer()
        intp = cgutils.intp_t
        fnty = ir.FunctionType(ir.IntType(32), [char, char, char, intp, intp, intp, void_p, void_p,
                                                intp, void_p, intp, void_p, void_p, intp])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "numba_xxgemm")
        sa = signature.args

        def integer(i):
            return context.cast(builder, args[i], sa[i], types.intp)

        def flag(i):
            return builder.select(builder.icmp_unsigned("!=", integer(i), intp(0)),
                                  char(ord("t")), char(ord("n")))

        def scalar(i):
            value = context.cast(builder, args[i], sa[i], dtype)
            return builder.bitcast(cgutils.alloca_once_value(builder, value), void_p)

        def data(i):
            return builder.bitcast(context.make_array(sa[i])(context, builder, args[i]).data, void_p)
        kind = char(ord("s" if dtype == types.float32 else "d"))
        # row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ
        return builder.call(fn, (kind, flag(1), flag(0), integer(3), integer(2), integer(4),
                                 scalar(5), data(8), integer(9), data(6), integer(7), scalar(10),
                                 data(11), integer(12)))
    return sig, codegen


@njit(cache=True)
def _gemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Row-major C (m × n, rows ldc apart, from c[0]) = alpha·op(A)·op(B) + beta·C, A and B
    stored from a[0] and b[0] with rows lda and ldb apart (op(A) = Aᵀ when trans_a: A stored
    k × m); the extents are checked against the arrays (flat, contiguous) before BLAS runs."""
    if m <= 0 or n <= 0:
        return
    if k <= 0:
        for i in range(m):
            for j in range(n):
                c[i * ldc + j] = beta * c[i * ldc + j] if beta != 0 else 0
        return
    rows_a, cols_a = (k, m) if trans_a else (m, k)
    rows_b, cols_b = (n, k) if trans_b else (k, n)
    if (lda < cols_a or ldb < cols_b or ldc < n or (rows_a - 1) * lda + cols_a > a.size
            or (rows_b - 1) * ldb + cols_b > b.size or (m - 1) * ldc + n > c.size):
        raise ValueError("_gemm: an operand is smaller than its extent")
    _xgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
