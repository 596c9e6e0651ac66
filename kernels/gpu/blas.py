"""GPU BLAS-like kernels (numba.cuda). Launchers take device arrays and mirror kernels/cpu/blas.py."""
import numpy as np
from numba import cuda, float64, from_dtype

from ._launch import MAX_THREADS, REDUCE_BLOCKS, TILE, grid_1d, grid_stride, launch_1d, launch_blocks, launch_tiles
from ._reduce import tree_sum


# --------------------------------------------------------------------------- reductions helper
@cuda.jit(device=True)
def _block_sum(sm, value, partials):
    """Tree-reduce value over the block (blockDim.x a power of two) into partials[blockIdx.x]."""
    tid = cuda.threadIdx.x
    sm[tid] = value
    tree_sum(sm, tid)
    if tid == 0:
        partials[cuda.blockIdx.x] = sm[0]


def _reduce(kernel, n, *args):
    """Run a partial-sum kernel over n items and return the float sum of its per-block partials."""
    blocks, threads = grid_1d(n, REDUCE_BLOCKS)
    part = cuda.device_array(blocks, dtype=np.float64)
    kernel[blocks, threads](*args, part)
    return float(part.copy_to_host().sum())


# --------------------------------------------------------------------------- gemm
_GEMM_KERNELS = {}
_TILE_PAD = TILE + 1   # padded row length of the shared tiles (shape must be a compile-time constant)


def _make_gemm(nbtype):
    """Build the tiled shared-memory GEMM kernel for one element type (shared arrays are typed)."""

    def _gemm(trans_a, trans_b, m, n, k, alpha, a, b, beta, c):
        """Kernel (tile-stride): C = alpha·op(A)·op(B) + beta·C with TILE x TILE shared tiles"""
        # tiles padded by one column against bank conflicts on the transposed stores
        sa = cuda.shared.array((TILE, _TILE_PAD), nbtype)
        sb = cuda.shared.array((TILE, _TILE_PAD), nbtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        zero = nbtype(0)
        al = nbtype(alpha)
        be = nbtype(beta)
        tiles_m = (m + TILE - 1) // TILE
        tiles_n = (n + TILE - 1) // TILE
        for bi in range(cuda.blockIdx.y, tiles_m, cuda.gridDim.y):
            row0 = bi * TILE
            for bj in range(cuda.blockIdx.x, tiles_n, cuda.gridDim.x):
                col0 = bj * TILE
                acc = zero
                for t0 in range(0, k, TILE):
                    # sa[r, q] = op(A)[row0 + r, t0 + q]; loads coalesced along threadIdx.x
                    if trans_a:
                        r = row0 + tx
                        q = t0 + ty
                        if r < m and q < k:
                            sa[tx, ty] = a[q, r]
                        else:
                            sa[tx, ty] = zero
                    else:
                        r = row0 + ty
                        q = t0 + tx
                        if r < m and q < k:
                            sa[ty, tx] = a[r, q]
                        else:
                            sa[ty, tx] = zero
                    # sb[q, s] = op(B)[t0 + q, col0 + s]
                    if trans_b:
                        s = col0 + ty
                        q = t0 + tx
                        if s < n and q < k:
                            sb[tx, ty] = b[s, q]
                        else:
                            sb[tx, ty] = zero
                    else:
                        s = col0 + tx
                        q = t0 + ty
                        if s < n and q < k:
                            sb[ty, tx] = b[q, s]
                        else:
                            sb[ty, tx] = zero
                    cuda.syncthreads()
                    for kk in range(TILE):
                        acc += sa[ty, kk] * sb[kk, tx]
                    cuda.syncthreads()
                row = row0 + ty
                col = col0 + tx
                if row < m and col < n:
                    if beta == 0:
                        c[row, col] = al * acc
                    else:
                        c[row, col] = al * acc + be * c[row, col]

    return cuda.jit(_gemm)


def _gemm_kernel(dtype):
    """Cached GEMM kernel for a numpy dtype (compiled lazily on first launch)."""
    key = np.dtype(dtype)
    kern = _GEMM_KERNELS.get(key)
    if kern is None:
        kern = _make_gemm(from_dtype(key))
        _GEMM_KERNELS[key] = kern
    return kern


def gemm(trans_a, trans_b, alpha, a, b, beta, c):
    """C = alpha·op(A)·op(B) + beta·C, op(X) = X.T if the trans flag is set (beta == 0 ignores C); A, B and C 2-D and C-contiguous"""
    m, n = c.shape
    ma, ka = (a.shape[1], a.shape[0]) if trans_a else (a.shape[0], a.shape[1])
    kb, nb = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
    if ma != m or nb != n or ka != kb:
        raise ValueError("gemm: shape mismatch")
    if a.dtype != c.dtype or b.dtype != c.dtype:
        raise TypeError("gemm: operands must share one dtype")
    if m == 0 or n == 0:
        return
    launch_tiles(_gemm_kernel(c.dtype), m, n)(
        bool(trans_a), bool(trans_b), m, n, ka, float(alpha), a, b, float(beta), c)


# --------------------------------------------------------------------------- gemv
@cuda.jit
def _gemv_rows(alpha, a, x, beta, y, m, k):
    """Kernel (block per row of A, block-stride; threads split the row): y = alpha·A·x + beta·y"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    for i in range(cuda.blockIdx.x, m, cuda.gridDim.x):
        s = 0.0
        for j in range(tid, k, cuda.blockDim.x):
            s += float64(a[i, j]) * float64(x[j])
        sm[tid] = s
        tree_sum(sm, tid)
        if tid == 0:
            if beta == 0:
                y[i] = alpha * sm[0]
            else:
                y[i] = alpha * sm[0] + beta * y[i]
        cuda.syncthreads()                 # sm is written again for the next row


@cuda.jit
def _gemv_cols(alpha, a, x, beta, y, m, k):
    """Kernel (thread per column of A, grid-stride; reads coalesced along a row): y = alpha·Aᵀ·x + beta·y"""
    for j in range(cuda.grid(1), m, cuda.gridsize(1)):
        s = 0.0
        for i in range(k):
            s += float64(a[i, j]) * float64(x[i])
        if beta == 0:
            y[j] = alpha * s
        else:
            y[j] = alpha * s + beta * y[j]


def gemv(trans, alpha, a, x, beta, y):
    """y = alpha·op(A)·x + beta·y, op(A) = A.T if trans; A 2-D, x and y flat, y not aliasing them (beta == 0 ignores y)"""
    m, k = (a.shape[1], a.shape[0]) if trans else (a.shape[0], a.shape[1])
    if y.size != m or x.size != k:
        raise ValueError("gemv: shape mismatch")
    if m == 0:
        return
    if trans:
        launch_1d(_gemv_cols, m)(float(alpha), a, x, float(beta), y, m, k)
    else:
        launch_blocks(_gemv_rows, m, k)(float(alpha), a, x, float(beta), y, m, k)


# --------------------------------------------------------------------------- elementwise
@grid_stride("x")
@cuda.jit
def axpy(alpha, x, y):
    """y += alpha·x"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = y[i] + alpha * x[i]


@grid_stride("x")
@cuda.jit
def axpby(alpha, x, beta, y):
    """y = alpha·x + beta·y (beta == 0 ignores y, which may hold NaN)"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        if beta == 0:
            y[i] = alpha * x[i]
        else:
            y[i] = alpha * x[i] + beta * y[i]


@grid_stride("x")
@cuda.jit
def scale(alpha, x):
    """x *= alpha"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = alpha * x[i]


@grid_stride("x")
@cuda.jit
def set_value(x, value):
    """x[:] = value"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[i] = value


@grid_stride("x")
@cuda.jit
def copy(x, y):
    """y[:] = x"""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        y[i] = x[i]


# --------------------------------------------------------------------------- reductions
@cuda.jit
def _dot(x, y, partials):
    """Kernel (grid-stride, per-block partials): Σ x·y (float64 accumulation)"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    s = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s += float64(x[i]) * float64(y[i])
    _block_sum(sm, s, partials)


def dot(x, y):
    """Σ x·y (float64 accumulation)"""
    return _reduce(_dot, x.size, x, y)


@cuda.jit
def _asum(x, partials):
    """Kernel (grid-stride, per-block partials): Σ |x| (float64 accumulation)"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    s = 0.0
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s += abs(float64(x[i]))
    _block_sum(sm, s, partials)


def asum(x):
    """Σ |x| (float64 accumulation)"""
    return _reduce(_asum, x.size, x)
