"""CPU kernels of the utility layers: block copies between strided rows (Concat, Slice, and
Tile's repeated rows) and the sum over Tile's copies, per-row reductions (Reduction), row
gathers and ordered row sums (BatchReindex, Filter, Embed), Eltwise's MAX with its winner mask,
and ArgMax's top-k selection. Flat contiguous arrays; index arrays are integer arrays the layer
has checked. GPU twins: kernels/gpu/utility.py.

The row kernels cut their rows × width items into blocks of rows (and of columns, when there
are fewer rows than threads) of at least _CHUNK_MIN items, one block per parallel task. Their
sums (Tile's copies, repeated rows) run in a fixed order, the GPU twins' and Caffe's; the
Reduction sums are float64, reassociated so that they vectorize. Nothing depends on the thread
count.
"""
import numpy as np
from numba import njit, prange

_MAX_CHUNKS = 64       # numba's per-file cache: this module's own copy of the slicing rule
_CHUNK_MIN = 8192      # smallest block worth a thread


@njit(cache=True)
def _grid(rows, width, repeat=1):
    """(row parts, column parts): rows × width items (each written repeat times) cut into about
    rows·width·repeat / _CHUNK_MIN blocks, by rows first."""
    blocks = min(max(rows * width * repeat // _CHUNK_MIN, 1), _MAX_CHUNKS)
    row_parts = max(min(rows, blocks), 1)
    return row_parts, max(blocks // row_parts, 1)


@njit(cache=True)
def _block(k, rows, width, row_parts, col_parts):
    """Rows [r0, r1) and columns [j0, j1) of block k of the _grid; no rows when it has no
    columns (so that the narrow-row paths, which ignore the columns, never run twice)."""
    a = k // col_parts
    b = k - a * col_parts
    j0, j1 = b * width // col_parts, (b + 1) * width // col_parts
    r0 = a * rows // row_parts
    return r0, r0 if j0 == j1 else (a + 1) * rows // row_parts, j0, j1


# --------------------------------------------------------------------------- row copies
# Offsets are cast to uint64 before the inner loops: numba then skips its negative-index
# wraparound and LLVM vectorizes, also for rows a few items wide (a helper call per row, or a
# view per row, costs more than a narrow row's copy).
@njit(cache=True, parallel=True)
def copy_block(src, src_stride, src_offset, dst, dst_stride, dst_offset, rows, width, repeat):
    """dst[(r·repeat + t)·dst_stride + dst_offset + j] = src[r·src_stride + src_offset + j] for r < rows, t < repeat, j < width: each of rows source rows copied into repeat consecutive destination rows"""
    row_parts, col_parts = _grid(rows, width, repeat)
    for k in prange(row_parts * col_parts):
        r0, r1, j0, j1 = _block(k, rows, width, row_parts, col_parts)
        for r in range(r0, r1):
            s = np.uint64(r * src_stride + src_offset)
            if width == 1 and dst_stride == 1:      # one value repeated: a run of stores
                v = src[s]
                d = np.uint64(r * repeat + dst_offset)
                for t in range(np.uint64(repeat)):
                    dst[d + t] = v
                continue
            for t in range(repeat):
                d = np.uint64((r * repeat + t) * dst_stride + dst_offset)
                for j in range(np.uint64(j0), np.uint64(j1)):
                    dst[d + j] = src[s + j]


@njit(cache=True, parallel=True)
def tile_backward(dy, dx, outer, inner, tiles):
    """dx[o·inner + j] = Σ_t dy[(o·tiles + t)·inner + j], added in t order"""
    row_parts, col_parts = _grid(outer, inner, tiles)
    for k in prange(row_parts * col_parts):
        o0, o1, j0, j1 = _block(k, outer, inner, row_parts, col_parts)
        for o in range(o0, o1):
            if inner == 1:                    # one value per block: a run of tiles summed
                s = np.uint64(o * tiles)
                acc = dy[s]
                for t in range(np.uint64(1), np.uint64(tiles)):
                    acc += dy[s + t]
                dx[o] = acc
                continue
            d = np.uint64(o * inner)
            s = np.uint64(o * tiles * inner)
            for j in range(np.uint64(j0), np.uint64(j1)):
                dx[d + j] = dy[s + j]
            for t in range(1, tiles):
                s += np.uint64(inner)
                for j in range(np.uint64(j0), np.uint64(j1)):
                    dx[d + j] += dy[s + j]


@njit(cache=True, parallel=True)
def gather_rows(src, rows, dst, inner):
    """dst[n·inner + j] = src[rows[n]·inner + j], or 0 where rows[n] < 0"""
    count = rows.size
    row_parts, col_parts = _grid(count, inner)
    for k in prange(row_parts * col_parts):
        n0, n1, j0, j1 = _block(k, count, inner, row_parts, col_parts)
        for n in range(n0, n1):
            d = np.uint64(n * inner)
            if rows[n] < 0:
                for j in range(np.uint64(j0), np.uint64(j1)):
                    dst[d + j] = 0
            else:
                s = np.uint64(rows[n] * inner)
                for j in range(np.uint64(j0), np.uint64(j1)):
                    dst[d + j] = src[s + j]


@njit(cache=True, parallel=True)
def sum_rows_into(src, order, starts, targets, dst, inner):
    """dst[targets[u]·inner + j] += src[order[p]·inner + j] for p = starts[u] .. starts[u+1] − 1 in turn (targets distinct)"""
    count = targets.size
    row_parts, col_parts = _grid(count, inner)
    for k in prange(row_parts * col_parts):
        u0, u1, j0, j1 = _block(k, count, inner, row_parts, col_parts)
        for u in range(u0, u1):
            d = np.uint64(targets[u] * inner)
            for p in range(starts[u], starts[u + 1]):
                s = np.uint64(order[p] * inner)
                for j in range(np.uint64(j0), np.uint64(j1)):
                    dst[d + j] += src[s + j]


# --------------------------------------------------------------------------- Reduction
# op: Caffe's ReductionOp numbers, SUM 1, ASUM 2, SUMSQ 3, MEAN 4 (MEAN is SUM with coeff/dim).
@njit(cache=True, fastmath={"reassoc"})
def _row_sum(x, op):
    """Σ x, Σ |x| (op 2) or Σ x² (op 3) in float64 (reassociated, so that it vectorizes)"""
    t = 0.0
    if op == 2:
        for j in range(x.size):
            t += abs(np.float64(x[j]))
    elif op == 3:
        for j in range(x.size):
            v = np.float64(x[j])
            t += v * v
    else:
        for j in range(x.size):
            t += np.float64(x[j])
    return t


@njit(cache=True, parallel=True)
def reduction_forward(x, y, num, dim, op, coeff):
    """y[r] = coeff·Σ_j f(x[r·dim + j]), f = x (op 1 SUM, 4 MEAN), |x| (2 ASUM), x² (3 SUMSQ); float64 sums"""
    row_parts, col_parts = _grid(num, dim)
    part = np.zeros(row_parts * col_parts)      # a row cut into column blocks (then one row per part)
    for k in prange(row_parts * col_parts):
        r0, r1, j0, j1 = _block(k, num, dim, row_parts, col_parts)
        for r in range(r0, r1):
            t = _row_sum(x[r * dim + j0:r * dim + j1], op)
            if col_parts == 1:
                y[r] = coeff * t
            else:
                part[k] = t
    if col_parts > 1:
        for r in range(num):
            t = 0.0
            for b in range(col_parts):
                t += part[r * col_parts + b]
            y[r] = coeff * t


@njit(cache=True, parallel=True)
def reduction_backward(x, dy, dx, num, dim, op, coeff):
    """dx[r·dim + j] = coeff·dy[r]·g, g = 1 (op 1, 4), sign(x) (2), 2x (3)"""
    row_parts, col_parts = _grid(num, dim)
    for k in prange(row_parts * col_parts):
        r0, r1, j0, j1 = _block(k, num, dim, row_parts, col_parts)
        for r in range(r0, r1):
            f = coeff * dy[r]
            base = np.uint64(r * dim)
            if op == 2:
                for j in range(np.uint64(j0), np.uint64(j1)):
                    v = x[base + j]
                    dx[base + j] = f if v > 0 else (-f if v < 0 else 0.0)
            elif op == 3:
                for j in range(np.uint64(j0), np.uint64(j1)):
                    dx[base + j] = 2.0 * f * x[base + j]
            else:
                for j in range(np.uint64(j0), np.uint64(j1)):
                    dx[base + j] = f


# --------------------------------------------------------------------------- Eltwise MAX
@njit(cache=True, parallel=True)
def eltwise_max_first(a, b, y, mask):
    """y = a, mask = 0 where a > b; else y = b, mask = 1 (a tie goes to b, as in Caffe)"""
    for i in prange(a.size):
        u = a[i]
        v = b[i]
        if u > v:
            y[i] = u
            mask[i] = 0
        else:
            y[i] = v
            mask[i] = 1


@njit(cache=True, parallel=True)
def eltwise_max_next(b, index, y, mask):
    """y = b, mask = index where b > y (strictly: an earlier bottom keeps a tie)"""
    for i in prange(b.size):
        v = b[i]
        if v > y[i]:
            y[i] = v
            mask[i] = index


@njit(cache=True, parallel=True)
def eltwise_max_backward(dy, mask, index, dx):
    """dx = dy where mask == index, else 0"""
    for i in prange(dy.size):
        dx[i] = dy[i] if mask[i] == index else 0


# --------------------------------------------------------------------------- ArgMax
@njit(cache=True)
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


@njit(cache=True, parallel=True)
def argmax_forward(x, y, outer, dim, inner, top_k, mode):
    """The top_k of x[(o·dim + c)·inner + i] over c, best first (larger value, then larger index).
    mode 0: their indices at y[(o·top_k + j)·inner + i]; mode 1: their values there; mode 2
    (inner == 1): indices at y[2·o·top_k + j] and values at y[2·o·top_k + top_k + j]"""
    parts = 2 if mode == 2 else 1
    for p in prange(outer * inner):
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
