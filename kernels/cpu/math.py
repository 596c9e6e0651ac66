"""CPU math vocabulary (Caffe's math_functions): elementwise ops on flat contiguous arrays, and
broadcasts / reductions over the channel axis of a flat (outer, channels, inner) array.
Outputs may alias inputs. GPU twins: kernels/gpu/math.py.

Every kernel splits its work into _nchunks(n) equal slices of the flat index range, each done by
a serial helper of this module: one slice (under 2·_CHUNK_MIN items) runs on the calling thread
without starting the thread pool; reductions keep one float64 partial per slice, so their result
depends on the sizes only (deterministic).
"""
import numpy as np
from numba import njit, prange

_MAX_CHUNKS = 64       # numba's per-file cache: a private copy of blas._nchunks with its own tuning
_CHUNK_MIN = 8192      # smallest slice worth a thread (the thread pool costs microseconds to start)


@njit(cache=True)
def _nchunks(n):
    """Number of slices for n items: clamp(n // _CHUNK_MIN, 1, _MAX_CHUNKS)."""
    c = n // _CHUNK_MIN
    if c < 1:
        c = 1
    if c > _MAX_CHUNKS:
        c = _MAX_CHUNKS
    return c


# --------------------------------------------------------------------------- elementwise
# One serial loop per operation, picked by an op code outside the loop (so each loop stays
# vectorizable), and one parallel driver that splits the flat range into _nchunks slices.
_ADD, _SUB, _MUL, _DIV, _SQR, _SQRT, _POWX, _EXP, _LOG, _ABS, _SIGN, _ADD_SCALAR = range(12)


@njit(cache=True, error_model="numpy")        # IEEE results: x/0 = ±inf, 0^negative = inf (C's pow)
def _slice(op, a, b, p, y):
    """y = op(a, b) over one slice (unary ops ignore b; p is powx's exponent or add_scalar's alpha)"""
    n = a.size
    if op == _ADD:
        for i in range(n):
            y[i] = a[i] + b[i]
    elif op == _SUB:
        for i in range(n):
            y[i] = a[i] - b[i]
    elif op == _MUL:
        for i in range(n):
            y[i] = a[i] * b[i]
    elif op == _DIV:
        for i in range(n):
            y[i] = a[i] / b[i]
    elif op == _SQR:
        for i in range(n):
            y[i] = a[i] * a[i]
    elif op == _SQRT:
        for i in range(n):
            y[i] = np.sqrt(a[i])
    elif op == _POWX:
        for i in range(n):
            y[i] = a[i] ** p
    elif op == _EXP:
        for i in range(n):
            y[i] = np.exp(a[i])
    elif op == _LOG:
        for i in range(n):
            y[i] = np.log(a[i])
    elif op == _ABS:
        for i in range(n):
            y[i] = np.abs(a[i])
    elif op == _SIGN:
        for i in range(n):
            v = a[i]
            y[i] = 1 if v > 0 else (-1 if v < 0 else 0)
    else:
        for i in range(n):
            y[i] = a[i] + p


@njit(cache=True, parallel=True)
def _apply(op, a, b, p, y):
    """_slice over the whole flat range: serially below 2·_CHUNK_MIN items, else in parallel slices"""
    n = a.size
    nc = _nchunks(n)
    if nc == 1:
        _slice(op, a, b, p, y)
    else:
        for k in prange(nc):
            lo, hi = k * n // nc, (k + 1) * n // nc
            _slice(op, a[lo:hi], b[lo:hi], p, y[lo:hi])


@njit(cache=True)
def add(a, b, y):
    """y = a + b"""
    _apply(_ADD, a, b, 0.0, y)


@njit(cache=True)
def sub(a, b, y):
    """y = a − b"""
    _apply(_SUB, a, b, 0.0, y)


@njit(cache=True)
def mul(a, b, y):
    """y = a·b"""
    _apply(_MUL, a, b, 0.0, y)


@njit(cache=True)
def div(a, b, y):
    """y = a / b (IEEE: x/0 = ±inf, 0/0 = NaN)"""
    _apply(_DIV, a, b, 0.0, y)


@njit(cache=True)
def sqr(x, y):
    """y = x²"""
    _apply(_SQR, x, x, 0.0, y)


@njit(cache=True)
def sqrt(x, y):
    """y = √x (NaN for x < 0)"""
    _apply(_SQRT, x, x, 0.0, y)


@njit(cache=True)
def powx(x, p, y):
    """y = x^p (C's pow: NaN for x < 0 and a non-integer p)"""
    _apply(_POWX, x, x, p, y)


@njit(cache=True)
def exp(x, y):
    """y = eˣ"""
    _apply(_EXP, x, x, 0.0, y)


@njit(cache=True)
def log(x, y):
    """y = ln x (−inf at 0, NaN for x < 0)"""
    _apply(_LOG, x, x, 0.0, y)


@njit(cache=True)
def abs(x, y):                                # noqa: A001 (Caffe's name; shadows the builtin here)
    """y = |x|"""
    _apply(_ABS, x, x, 0.0, y)


@njit(cache=True)
def sign(x, y):
    """y = 1 if x > 0, −1 if x < 0, else 0 (also for NaN, as Caffe's caffe_sign)"""
    _apply(_SIGN, x, x, 0.0, y)


@njit(cache=True)
def add_scalar(alpha, x):
    """x += alpha (in place, as Caffe's caffe_add_scalar)"""
    _apply(_ADD_SCALAR, x, x, alpha, x)


# --------------------------------------------------------------------------- channel broadcasts
# A slice [start, stop) of the flat (outer, channels, inner) index range is walked in runs: with
# inner == 1 a run is consecutive channels (s[c:c + m] lines up with the data); otherwise a run is
# (part of) one (o, c) row of inner items sharing the scalar s[c]. Loops index views from 0 (numba
# then drops its negative-index checks and LLVM vectorizes), and an in-place call (y is x) takes a
# loop over one array, which LLVM's runtime overlap check would otherwise send down the scalar path.
@njit(cache=True)
def _same(a, b):
    """Whether two arrays start at the same address (an in-place call)."""
    return a.ctypes.data == b.ctypes.data


@njit(cache=True)
def _channel_scale(x, s, y, channels, inner, start, stop):
    if start >= stop:
        return
    in_place = _same(x, y)
    e = start
    if inner == 1:
        c = start % channels
        while e < stop:
            m = min(channels - c, stop - e)
            xv, sv, yv = x[e:e + m], s[c:c + m], y[e:e + m]
            if in_place:
                for j in range(m):
                    yv[j] *= sv[j]
            else:
                for j in range(m):
                    yv[j] = xv[j] * sv[j]
            e += m
            c = 0
    else:
        r = start // inner
        c = r % channels
        i = start - r * inner
        while e < stop:
            m = min(inner - i, stop - e)
            v = s[c]
            xv, yv = x[e:e + m], y[e:e + m]
            if in_place:
                for j in range(m):
                    yv[j] *= v
            else:
                for j in range(m):
                    yv[j] = xv[j] * v
            e += m
            i = 0
            c += 1
            if c == channels:
                c = 0


@njit(cache=True, parallel=True)
def channel_scale(x, s, y, outer, channels, inner):
    """y[o, c, i] = x[o, c, i]·s[c] over a flat (outer, channels, inner) array"""
    n = outer * channels * inner
    nc = _nchunks(n)
    if nc == 1:
        # np.int64(0), not 0: numba would compile the callee again for the literal 0
        _channel_scale(x, s, y, channels, inner, np.int64(0), n)
    else:
        for k in prange(nc):
            _channel_scale(x, s, y, channels, inner, k * n // nc, (k + 1) * n // nc)


@njit(cache=True)
def _channel_add(x, b, y, channels, inner, start, stop):
    if start >= stop:
        return
    in_place = _same(x, y)
    e = start
    if inner == 1:
        c = start % channels
        while e < stop:
            m = min(channels - c, stop - e)
            xv, bv, yv = x[e:e + m], b[c:c + m], y[e:e + m]
            if in_place:
                for j in range(m):
                    yv[j] += bv[j]
            else:
                for j in range(m):
                    yv[j] = xv[j] + bv[j]
            e += m
            c = 0
    else:
        r = start // inner
        c = r % channels
        i = start - r * inner
        while e < stop:
            m = min(inner - i, stop - e)
            v = b[c]
            xv, yv = x[e:e + m], y[e:e + m]
            if in_place:
                for j in range(m):
                    yv[j] += v
            else:
                for j in range(m):
                    yv[j] = xv[j] + v
            e += m
            i = 0
            c += 1
            if c == channels:
                c = 0


@njit(cache=True, parallel=True)
def channel_add(x, b, y, outer, channels, inner):
    """y[o, c, i] = x[o, c, i] + b[c] over a flat (outer, channels, inner) array"""
    n = outer * channels * inner
    nc = _nchunks(n)
    if nc == 1:
        _channel_add(x, b, y, channels, inner, np.int64(0), n)
    else:
        for k in prange(nc):
            _channel_add(x, b, y, channels, inner, k * n // nc, (k + 1) * n // nc)


# --------------------------------------------------------------------------- channel reductions
@njit(cache=True)
def _sum4(a):
    """Σ a in float64 with four interleaved accumulators (a fixed order, twice the speed of one chain)."""
    q = a.size // 4
    t0 = t1 = t2 = t3 = 0.0
    for j in range(q):
        t0 += np.float64(a[4 * j])
        t1 += np.float64(a[4 * j + 1])
        t2 += np.float64(a[4 * j + 2])
        t3 += np.float64(a[4 * j + 3])
    for j in range(4 * q, a.size):
        t0 += np.float64(a[j])
    return (t0 + t1) + (t2 + t3)


@njit(cache=True)
def _dot4(a, b):
    """Σ a·b in float64 with four interleaved accumulators."""
    q = a.size // 4
    t0 = t1 = t2 = t3 = 0.0
    for j in range(q):
        t0 += np.float64(a[4 * j]) * np.float64(b[4 * j])
        t1 += np.float64(a[4 * j + 1]) * np.float64(b[4 * j + 1])
        t2 += np.float64(a[4 * j + 2]) * np.float64(b[4 * j + 2])
        t3 += np.float64(a[4 * j + 3]) * np.float64(b[4 * j + 3])
    for j in range(4 * q, a.size):
        t0 += np.float64(a[j]) * np.float64(b[j])
    return (t0 + t1) + (t2 + t3)


@njit(cache=True)
def _channel_partial(a, b, product, part, channels, inner, start, stop):
    """part[c] += Σ a (or Σ a·b if product) over the items of channel c in [start, stop)."""
    if start >= stop:
        return
    e = start
    if inner == 1:
        c = start % channels
        while e < stop:
            m = min(channels - c, stop - e)
            av, bv, pv = a[e:e + m], b[e:e + m], part[c:c + m]
            if product:
                for j in range(m):
                    pv[j] += np.float64(av[j]) * np.float64(bv[j])
            else:
                for j in range(m):
                    pv[j] += np.float64(av[j])
            e += m
            c = 0
    else:
        r = start // inner
        c = r % channels
        i = start - r * inner
        while e < stop:
            m = min(inner - i, stop - e)
            if product:
                part[c] += _dot4(a[e:e + m], b[e:e + m])
            else:
                part[c] += _sum4(a[e:e + m])
            e += m
            i = 0
            c += 1
            if c == channels:
                c = 0


@njit(cache=True)
def _channel_finish(part, beta, y):
    """y[c] = Σ_k part[k, c] + beta·y[c], summed in k order (beta == 0 ignores y); part's columns match y."""
    m = y.size
    s = np.zeros(m, dtype=np.float64)
    for k in range(part.shape[0]):
        row = part[k]
        for c in range(m):
            s[c] += row[c]
    if beta == 0:
        for c in range(m):
            y[c] = s[c]
    else:
        for c in range(m):
            y[c] = s[c] + beta * y[c]


@njit(cache=True, parallel=True)
def _channel_reduce(a, b, product, beta, y, outer, channels, inner):
    """y[c] = Σ_{o,i} a (or a·b) + beta·y[c]: one float64 partial row per slice, then a fixed-order sum."""
    n = outer * channels * inner
    if channels == 0:
        return
    nc = _nchunks(n)
    if nc > n // channels:                    # at most n partials: never more memory than the input
        nc = max(n // channels, 1)
    part = np.zeros((nc, channels), dtype=np.float64)
    if nc == 1:
        _channel_partial(a, b, product, part[0], channels, inner, np.int64(0), n)
    else:
        for k in prange(nc):
            _channel_partial(a, b, product, part[k], channels, inner, k * n // nc, (k + 1) * n // nc)
    nf = _nchunks(nc * channels)
    if nf > channels:
        nf = channels
    if nf == 1:
        _channel_finish(part, beta, y)
    else:
        for k in prange(nf):
            lo, hi = k * channels // nf, (k + 1) * channels // nf
            _channel_finish(part[:, lo:hi], beta, y[lo:hi])


@njit(cache=True)
def channel_sum(x, beta, y, outer, channels, inner):
    """y[c] = Σ_{o,i} x[o, c, i] + beta·y[c] over a flat (outer, channels, inner) array (float64 sums; beta == 0 ignores y)"""
    _channel_reduce(x, x, False, beta, y, outer, channels, inner)


@njit(cache=True)
def channel_dot(a, b, beta, y, outer, channels, inner):
    """y[c] = Σ_{o,i} a[o, c, i]·b[o, c, i] + beta·y[c] over flat (outer, channels, inner) arrays (float64 sums; beta == 0 ignores y)"""
    _channel_reduce(a, b, True, beta, y, outer, channels, inner)
