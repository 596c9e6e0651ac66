"""GPU kernels of the utility layers: block copies between strided rows (Concat, Slice, and
Tile's repeated rows) and the sum over Tile's copies, per-row reductions (Reduction, through the
math vocabulary's channel sums), row gathers and ordered row sums (BatchReindex, Filter, Embed),
Eltwise's MAX with its winner mask, and ArgMax's top-k selection. One thread per output item
(per (o, i) position for ArgMax), grid-stride; the row sums run in the CPU twins' order,
without atomics. Mirrors kernels/cpu/utility.py."""
from numba import cuda

from . import blas as blas_k
from . import math as math_k
from ._launch import grid_stride


# --------------------------------------------------------------------------- row copies
@grid_stride(lambda rows, width, repeat: rows * repeat * width)
@cuda.jit
def copy_block(src, src_stride, src_offset, dst, dst_stride, dst_offset, rows, width, repeat):
    """dst[(r·repeat + t)·dst_stride + dst_offset + j] = src[r·src_stride + src_offset + j] for r < rows, t < repeat, j < width: each of rows source rows copied into repeat consecutive destination rows"""
    for e in range(cuda.grid(1), rows * repeat * width, cuda.gridsize(1)):
        q = e // width                    # destination row r·repeat + t
        j = e - q * width
        dst[q * dst_stride + dst_offset + j] = src[(q // repeat) * src_stride + src_offset + j]


@grid_stride("dx")
@cuda.jit
def tile_backward(dy, dx, outer, inner, tiles):
    """dx[o·inner + j] = Σ_t dy[(o·tiles + t)·inner + j], added in t order"""
    for e in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = e // inner
        s = o * tiles * inner + e - o * inner
        acc = dy[s]
        for t in range(1, tiles):
            acc += dy[s + t * inner]
        dx[e] = acc


@grid_stride("dst")
@cuda.jit
def gather_rows(src, rows, dst, inner):
    """dst[n·inner + j] = src[rows[n]·inner + j], or 0 where rows[n] < 0"""
    for e in range(cuda.grid(1), rows.size * inner, cuda.gridsize(1)):
        n = e // inner
        if rows[n] < 0:
            dst[e] = 0
        else:
            dst[e] = src[rows[n] * inner + e - n * inner]


@grid_stride(lambda targets, inner: targets.size * inner)
@cuda.jit
def sum_rows_into(src, order, starts, targets, dst, inner):
    """dst[targets[u]·inner + j] += src[order[p]·inner + j] for p = starts[u] .. starts[u+1] − 1 in turn (targets distinct)"""
    for e in range(cuda.grid(1), targets.size * inner, cuda.gridsize(1)):
        u = e // inner
        j = e - u * inner
        k = targets[u] * inner + j
        acc = dst[k]
        for p in range(starts[u], starts[u + 1]):
            acc += src[order[p] * inner + j]
        dst[k] = acc


# --------------------------------------------------------------------------- Reduction
# op: Caffe's ReductionOp numbers, SUM 1, ASUM 2, SUMSQ 3, MEAN 4 (MEAN is SUM with coeff/dim).
def reduction_forward(x, y, num, dim, op, coeff):
    """y[r] = coeff·Σ_j f(x[r·dim + j]), f = x (op 1 SUM, 4 MEAN), |x| (2 ASUM), x² (3 SUMSQ); float64 sums"""
    # the rows as the channels of a (1, num, dim) array: the math vocabulary's channel sums
    if op == 2:
        absolute = cuda.device_array(x.size, dtype=x.dtype)
        math_k.abs(x, absolute)
        x = absolute
    if op == 3:
        math_k.channel_dot(x, x, 0.0, y, 1, num, dim)
    else:
        math_k.channel_sum(x, 0.0, y, 1, num, dim)
    if coeff != 1:
        blas_k.scale(coeff, y)


@grid_stride(lambda num, dim: num * dim)
@cuda.jit
def reduction_backward(x, dy, dx, num, dim, op, coeff):
    """dx[r·dim + j] = coeff·dy[r]·g, g = 1 (op 1, 4), sign(x) (2), 2x (3)"""
    for e in range(cuda.grid(1), num * dim, cuda.gridsize(1)):
        f = coeff * dy[e // dim]
        if op == 2:
            v = x[e]
            if v > 0:
                dx[e] = f
            elif v < 0:
                dx[e] = -f
            else:
                dx[e] = 0
        elif op == 3:
            dx[e] = 2.0 * f * x[e]
        else:
            dx[e] = f


# --------------------------------------------------------------------------- Eltwise MAX
@grid_stride("a")
@cuda.jit
def eltwise_max_first(a, b, y, mask):
    """y = a, mask = 0 where a > b; else y = b, mask = 1 (a tie goes to b, as in Caffe)"""
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        u = a[i]
        v = b[i]
        if u > v:
            y[i] = u
            mask[i] = 0
        else:
            y[i] = v
            mask[i] = 1


@grid_stride("b")
@cuda.jit
def eltwise_max_next(b, index, y, mask):
    """y = b, mask = index where b > y (strictly: an earlier bottom keeps a tie)"""
    for i in range(cuda.grid(1), b.size, cuda.gridsize(1)):
        v = b[i]
        if v > y[i]:
            y[i] = v
            mask[i] = index


@grid_stride("dy")
@cuda.jit
def eltwise_max_backward(dy, mask, index, dx):
    """dx = dy where mask == index, else 0"""
    for i in range(cuda.grid(1), dy.size, cuda.gridsize(1)):
        if mask[i] == index:
            dx[i] = dy[i]
        else:
            dx[i] = 0


# --------------------------------------------------------------------------- ArgMax
@cuda.jit(device=True)
def _ranks_before(va, ia, vb, ib):
    """Whether (va, ia) comes before (vb, ib): the larger value first and, between equal values, the
    larger index (Caffe's std::greater on (value, index) pairs); NaN after every number"""
    a_nan = va != va
    b_nan = vb != vb
    if a_nan or b_nan:
        if a_nan != b_nan:
            return b_nan
        return ia > ib
    if va != vb:
        return va > vb
    return ia > ib


@grid_stride(lambda outer, inner: outer * inner)
@cuda.jit
def argmax_forward(x, y, outer, dim, inner, top_k, mode):
    """The top_k of x[(o·dim + c)·inner + i] over c, best first (larger value, then larger index).
    mode 0: their indices at y[(o·top_k + j)·inner + i]; mode 1: their values there; mode 2
    (inner == 1): indices at y[2·o·top_k + j] and values at y[2·o·top_k + top_k + j]"""
    parts = 2 if mode == 2 else 1
    for p in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = p // inner
        i = p - o * inner
        base = o * dim * inner + i
        out = o * parts * top_k * inner + i
        prev_v = x[base]
        prev_c = -1
        for j in range(top_k):
            best_c = -1
            best_v = prev_v
            for c in range(dim):
                v = x[base + c * inner]
                if prev_c >= 0 and not _ranks_before(prev_v, prev_c, v, c):
                    continue
                if best_c < 0 or _ranks_before(v, c, best_v, best_c):
                    best_c = c
                    best_v = v
            if mode == 1:
                y[out + j * inner] = best_v
            else:
                y[out + j * inner] = best_c
            if mode == 2:
                y[out + top_k + j] = best_v
            prev_v = best_v
            prev_c = best_c
