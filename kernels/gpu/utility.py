"""GPU kernels of the utility layers: block copies between strided rows (Concat, Slice), tiling
(Tile), per-row reductions (Reduction), row gathers and ordered row sums (BatchReindex, Filter, Embed), Eltwise's MAX with its
winner mask, and ArgMax's top-k selection. One thread per output item (per (o, i) position for
ArgMax), grid-stride; sums run in the CPU twins' order, without atomics. Mirrors
kernels/cpu/utility.py."""
import numpy as np
from numba import cuda, float64

from ._launch import MAX_BLOCKS, MAX_THREADS, grid_stride, threads_for
from ._reduce import tree_sum


# --------------------------------------------------------------------------- row copies
@grid_stride(lambda rows, width: rows * width)
@cuda.jit
def copy_block(src, src_stride, src_offset, dst, dst_stride, dst_offset, rows, width):
    """dst[r·dst_stride + dst_offset + j] = src[r·src_stride + src_offset + j] for r < rows, j < width"""
    for e in range(cuda.grid(1), rows * width, cuda.gridsize(1)):
        r = e // width
        j = e - r * width
        dst[r * dst_stride + dst_offset + j] = src[r * src_stride + src_offset + j]


@grid_stride("y")
@cuda.jit
def tile_forward(x, y, outer, inner, tiles):
    """y[(o·tiles + t)·inner + j] = x[o·inner + j]: each block of inner items repeated tiles times"""
    for e in range(cuda.grid(1), outer * tiles * inner, cuda.gridsize(1)):
        r = e // inner
        y[e] = x[(r // tiles) * inner + e - r * inner]


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
# Forward in two passes whose order depends on the sizes only: blocks (r, s) sum every splits-th
# stretch of row r into part[r·splits + s], then one thread per row adds its partials in order.
_ITEMS_PER_THREAD = 8      # a split is worth a block when each thread gets about this many items


@cuda.jit
def _reduction_partials(x, num, dim, op, splits, part):
    """Kernel (block per (row, split), block-stride): part[r·splits + s] = Σ f(x) over split s of row r"""
    sm = cuda.shared.array(MAX_THREADS, float64)
    tid = cuda.threadIdx.x
    step = splits * cuda.blockDim.x
    for blk in range(cuda.blockIdx.x, num * splits, cuda.gridDim.x):
        r = blk // splits
        t = 0.0
        for j in range((blk - r * splits) * cuda.blockDim.x + tid, dim, step):
            v = float64(x[r * dim + j])
            if op == 2:
                t += abs(v)
            elif op == 3:
                t += v * v
            else:
                t += v
        sm[tid] = t
        tree_sum(sm, tid)
        if tid == 0:
            part[blk] = sm[0]
        cuda.syncthreads()                 # sm is written again for the next block index


@grid_stride("y")
@cuda.jit
def _reduction_finish(part, splits, coeff, y):
    """Kernel (grid-stride over rows): y[r] = coeff·Σ_s part[r·splits + s]"""
    for r in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        t = 0.0
        for s in range(splits):
            t += part[r * splits + s]
        y[r] = coeff * t


def reduction_forward(x, y, num, dim, op, coeff):
    """y[r] = coeff·Σ_j f(x[r·dim + j]), f = x (op 1 SUM, 4 MEAN), |x| (2 ASUM), x² (3 SUMSQ); float64 sums"""
    if num == 0:
        return
    threads = threads_for(dim)
    splits = max(1, min(dim // (threads * _ITEMS_PER_THREAD), max(1, MAX_BLOCKS // num)))
    part = cuda.device_array(num * splits, dtype=np.float64)
    _reduction_partials[max(1, min(num * splits, MAX_BLOCKS)), threads](x, num, dim, int(op), splits, part)
    _reduction_finish(part, splits, float(coeff), y)


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
