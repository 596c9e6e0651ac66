"""CPU neuron (elementwise activation) kernels. Outputs may alias inputs (in-place layers)."""
import math

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def relu_forward(x, y, negative_slope):
    """y = x if x > 0 else negative_slope·x"""
    for i in prange(x.size):
        v = x[i]
        if v > 0:
            y[i] = v
        else:
            y[i] = negative_slope * v


@njit(cache=True, parallel=True)
def relu_backward(x, dy, dx, negative_slope):
    """dx = dy·(1 if x > 0 else negative_slope)"""
    for i in prange(x.size):
        g = dy[i]
        if x[i] > 0:
            dx[i] = g
        else:
            dx[i] = negative_slope * g


@njit(cache=True, parallel=True)
def sigmoid_forward(x, y):
    """y = 1/(1+e^−x), evaluated as e^x/(1+e^x) for x < 0 (no overflow)"""
    for i in prange(x.size):
        v = x[i]
        if v >= 0:
            y[i] = 1.0 / (1.0 + np.exp(-v))
        else:
            e = np.exp(v)
            y[i] = e / (1.0 + e)


@njit(cache=True, parallel=True)
def sigmoid_backward(y, dy, dx):
    """dx = dy·y·(1−y)"""
    for i in prange(y.size):
        s = y[i]
        dx[i] = dy[i] * s * (1 - s)


@njit(cache=True, parallel=True)
def tanh_forward(x, y):
    """y = tanh(x)"""
    for i in prange(x.size):
        y[i] = np.tanh(x[i])


@njit(cache=True, parallel=True)
def tanh_backward(y, dy, dx):
    """dx = dy·(1−y²)"""
    for i in prange(y.size):
        t = y[i]
        dx[i] = dy[i] * (1 - t * t)


@njit(cache=True, parallel=True)
def dropout_forward(x, mask, y, scale):
    """y = x·mask·scale"""
    for i in prange(x.size):
        y[i] = x[i] * mask[i] * scale


@njit(cache=True, parallel=True)
def dropout_backward(dy, mask, dx, scale):
    """dx = dy·mask·scale"""
    for i in prange(dy.size):
        dx[i] = dy[i] * mask[i] * scale


# --------------------------------------------------------------------------- catalogue neurons
# BNLL, ELU, Power, Log, Clip, Threshold, Swish and PReLU. Each public kernel names an operation
# of one op-coded serial loop (the code picks the loop outside it, so each loop stays
# vectorizable) and one parallel driver that splits the flat range into _nchunks slices, as
# kernels/cpu/math.py does: a slice under 2·_CHUNK_MIN items runs on the calling thread.
# _nchunks is this module's own copy of math._nchunks (numba's disk cache is per file).
_MAX_CHUNKS = 64
_CHUNK_MIN = 8192
_BNLL_THRESHOLD = 50.0        # Caffe's kBNLL_THRESHOLD: e^x is taken of min(x, 50) in the backward
(_BNLL, _ELU, _POWER, _LOG, _CLIP, _THRESHOLD, _SWISH, _PRELU, _PRELU_SLOPE) = range(9)


@njit(cache=True)
def _nchunks(n):
    """Number of slices for n items: clamp(n // _CHUNK_MIN, 1, _MAX_CHUNKS)."""
    c = n // _CHUNK_MIN
    if c < 1:
        c = 1
    if c > _MAX_CHUNKS:
        c = _MAX_CHUNKS
    return c


@njit(cache=True)
def _prelu_slice(backward, x, w, dy, out, start, channels, inner):
    """out = (x if x > 0 else w[c]·x), or with backward (dy if x > 0 else w[c]·dy), over one slice
    starting at flat index ``start``, walked in runs that share their slopes (as math.py's
    channel broadcasts): with inner == 1 a run is consecutive channels, else part of one row."""
    n = x.size
    e = 0
    if inner == 1:
        c = start % channels
        while e < n:
            m = min(channels - c, n - e)
            xv, wv, gv, ov = x[e:e + m], w[c:c + m], dy[e:e + m], out[e:e + m]
            if backward:
                for j in range(m):
                    ov[j] = gv[j] if xv[j] > 0 else wv[j] * gv[j]
            else:
                for j in range(m):
                    ov[j] = xv[j] if xv[j] > 0 else wv[j] * xv[j]
            e += m
            c = 0
    else:
        r = start // inner
        c = r % channels
        k = start - r * inner
        while e < n:
            m = min(inner - k, n - e)
            a = w[c]
            xv, gv, ov = x[e:e + m], dy[e:e + m], out[e:e + m]
            if backward:
                for j in range(m):
                    ov[j] = gv[j] if xv[j] > 0 else a * gv[j]
            else:
                for j in range(m):
                    ov[j] = xv[j] if xv[j] > 0 else a * xv[j]
            e += m
            k = 0
            c += 1
            if c == channels:
                c = 0


@njit(cache=True, error_model="numpy")        # IEEE results: 0^negative = inf, x/0 = ±inf
def _forward_slice(op, x, y, aux, w, p, start, channels, inner):
    """y = op(x) over one slice starting at flat index ``start``, computed in x's dtype (as
    Caffe's Dtype) with branch-free loops; p = the op's scalars; aux = Swish's σ(βx) (written);
    w = PReLU's slopes, slope c serving flat index i when c = (i // inner) % channels."""
    n = x.size
    zero, one = x.dtype.type(0.0), x.dtype.type(1.0)
    if op == _BNLL:                           # max(x, 0) + log(1 + e^−|x|): no overflow
        for i in range(n):                    # (the log in double, as Caffe's log(1. + ·))
            v = np.float64(x[i])
            y[i] = max(v, 0.0) + np.log(1.0 + np.exp(-abs(v)))
    elif op == _ELU:                          # Caffe's max(x, 0) + α(e^min(x, 0) − 1)
        alpha = x.dtype.type(p[0])
        for i in range(n):
            v = x[i]
            y[i] = max(v, zero) + alpha * (np.exp(min(v, zero)) - one)
    elif op == _POWER:
        power, scale, shift = x.dtype.type(p[0]), x.dtype.type(p[1]), x.dtype.type(p[2])
        if power == 1:
            for i in range(n):
                y[i] = shift + scale * x[i]
        elif power == 2:
            for i in range(n):
                b = shift + scale * x[i]
                y[i] = b * b
        else:
            for i in range(n):
                y[i] = (shift + scale * x[i]) ** power
    elif op == _CLIP:                         # Caffe's std::max(min, std::min(x, max)): NaN gives min
        lo, hi = x.dtype.type(p[0]), x.dtype.type(p[1])
        for i in range(n):
            v = x[i]
            t = hi if hi < v else v
            y[i] = t if lo < t else lo
    elif op == _THRESHOLD:
        t = x.dtype.type(p[0])
        for i in range(n):
            y[i] = one if x[i] > t else zero
    elif op == _SWISH:                        # σ(u) = 1/(1 + e^−u): e^−u = inf gives 0, no NaN
        beta = x.dtype.type(p[0])
        for i in range(n):
            v = x[i]
            s = one / (one + np.exp(-(beta * v)))
            aux[i] = s
            y[i] = v * s
    else:                                     # _PRELU
        _prelu_slice(False, x, w, x, y, start, channels, inner)


@njit(cache=True, parallel=True)
def _forward(op, x, y, aux, w, p, channels, inner):
    """_forward_slice over the whole flat range: serially below 2·_CHUNK_MIN items, else in slices"""
    n = x.size
    nc = _nchunks(n)
    if nc == 1:
        # np.int64(0), not 0: numba would compile the callee again for the literal 0
        _forward_slice(op, x, y, aux, w, p, np.int64(0), channels, inner)
    else:
        for k in prange(nc):
            lo, hi = k * n // nc, (k + 1) * n // nc
            _forward_slice(op, x[lo:hi], y[lo:hi], aux[lo:hi], w, p, lo, channels, inner)


@njit(cache=True, error_model="numpy")
def _backward_slice(op, x, y, aux, w, dy, dx, p, start, channels, inner):
    """dx = dy·op'(x) over one slice, in x's dtype (dx may be dy: each dy[i] is read before
    dx[i] is written); y, aux, w and p as in _forward_slice. _PRELU_SLOPE writes dy·x·[x <= 0]
    into dx."""
    n = x.size
    zero, one = x.dtype.type(0.0), x.dtype.type(1.0)
    if op == _BNLL:
        threshold = x.dtype.type(_BNLL_THRESHOLD)
        for i in range(n):
            e = np.exp(min(x[i], threshold))
            dx[i] = dy[i] * e / (e + one)
    elif op == _ELU:
        alpha = x.dtype.type(p[0])
        for i in range(n):
            g = dy[i]
            dx[i] = g if x[i] > 0 else g * (alpha + y[i])
    elif op == _POWER:                        # d/dx = power·scale·b^(power−1) = diff_scale·y / b
        power, scale, shift = x.dtype.type(p[0]), x.dtype.type(p[1]), x.dtype.type(p[2])
        diff_scale = power * scale
        # where b = 0, the derivative's value: diff_scale·0^(power−1)
        at_zero = diff_scale * (zero if power > 1 else (one if power == 1 else x.dtype.type(math.inf)))
        if power == 2:
            for i in range(n):
                dx[i] = dy[i] * (diff_scale * (shift + scale * x[i]))
        else:
            for i in range(n):
                b = shift + scale * x[i]
                dx[i] = dy[i] * (diff_scale * y[i] / b if b != 0 else at_zero)
    elif op == _LOG:                          # d/dx log_base(shift + scale·x) = (scale / ln base) / b
        scale, shift, num_scale = x.dtype.type(p[0]), x.dtype.type(p[1]), x.dtype.type(p[2])
        for i in range(n):
            dx[i] = dy[i] * num_scale / (shift + scale * x[i])
    elif op == _CLIP:                         # passes where min <= x <= max (Caffe: both ends included)
        lo, hi = x.dtype.type(p[0]), x.dtype.type(p[1])
        for i in range(n):
            v = x[i]
            dx[i] = dy[i] * (one if v >= lo and v <= hi else zero)
    elif op == _SWISH:
        beta = x.dtype.type(p[0])
        for i in range(n):
            by = beta * y[i]
            dx[i] = dy[i] * (by + aux[i] * (one - by))
    elif op == _PRELU:
        _prelu_slice(True, x, w, dy, dx, start, channels, inner)
    else:                                     # _PRELU_SLOPE
        for i in range(n):
            v = x[i]
            dx[i] = dy[i] * v * (one if v <= 0 else zero)


@njit(cache=True, parallel=True)
def _backward(op, x, y, aux, w, dy, dx, p, channels, inner):
    """_backward_slice over the whole flat range: serially below 2·_CHUNK_MIN items, else in slices"""
    n = x.size
    nc = _nchunks(n)
    if nc == 1:
        _backward_slice(op, x, y, aux, w, dy, dx, p, np.int64(0), channels, inner)
    else:
        for k in prange(nc):
            lo, hi = k * n // nc, (k + 1) * n // nc
            _backward_slice(op, x[lo:hi], y[lo:hi], aux[lo:hi], w, dy[lo:hi], dx[lo:hi], p, lo,
                            channels, inner)


@njit(cache=True)
def bnll_forward(x, y):
    """y = max(x, 0) + log(1 + e^−|x|) = log(1 + eˣ) without overflow (the log in double)"""
    _forward(_BNLL, x, y, y, x, (0.0, 0.0, 0.0), 1, 1)


@njit(cache=True)
def bnll_backward(x, dy, dx):
    """dx = dy·e/(e + 1), e = exp(min(x, 50)) (Caffe's kBNLL_THRESHOLD)"""
    _backward(_BNLL, x, x, x, x, dy, dx, (0.0, 0.0, 0.0), 1, 1)


@njit(cache=True)
def elu_forward(x, y, alpha):
    """y = max(x, 0) + alpha·(e^min(x, 0) − 1)"""
    _forward(_ELU, x, y, y, x, (alpha, 0.0, 0.0), 1, 1)


@njit(cache=True)
def elu_backward(x, y, dy, dx, alpha):
    """dx = dy if x > 0 else dy·(alpha + y)"""
    _backward(_ELU, x, y, y, x, dy, dx, (alpha, 0.0, 0.0), 1, 1)


@njit(cache=True)
def power_forward(x, y, power, scale, shift):
    """y = (shift + scale·x)^power (C's pow: NaN for a negative base and a non-integer power)"""
    _forward(_POWER, x, y, y, x, (power, scale, shift), 1, 1)


@njit(cache=True)
def power_backward(x, y, dy, dx, power, scale, shift):
    """dx = dy·power·scale·b^(power−1), b = shift + scale·x: as power·scale·y/b (2·scale·b for
    power 2), and power·scale·0^(power−1) where b = 0"""
    _backward(_POWER, x, y, y, x, dy, dx, (power, scale, shift), 1, 1)


@njit(cache=True)
def log_backward(x, dy, dx, scale, shift, num_scale):
    """dx = dy·num_scale / (shift + scale·x)"""
    _backward(_LOG, x, x, x, x, dy, dx, (scale, shift, num_scale), 1, 1)


@njit(cache=True)
def clip_forward(x, y, lo, hi):
    """y = max(lo, min(x, hi)) in Caffe's order (a NaN x gives lo)"""
    _forward(_CLIP, x, y, y, x, (lo, hi, 0.0), 1, 1)


@njit(cache=True)
def clip_backward(x, dy, dx, lo, hi):
    """dx = dy·[lo <= x <= hi]"""
    _backward(_CLIP, x, x, x, x, dy, dx, (lo, hi, 0.0), 1, 1)


@njit(cache=True)
def threshold_forward(x, y, threshold):
    """y = 1 if x > threshold else 0"""
    _forward(_THRESHOLD, x, y, y, x, (threshold, 0.0, 0.0), 1, 1)


@njit(cache=True)
def swish_forward(x, s, y, beta):
    """s = σ(beta·x) (no overflow, no NaN for either sign), y = x·s"""
    _forward(_SWISH, x, y, s, x, (beta, 0.0, 0.0), 1, 1)


@njit(cache=True)
def swish_backward(y, s, dy, dx, beta):
    """dx = dy·(beta·y + s·(1 − beta·y))"""
    _backward(_SWISH, y, y, s, y, dy, dx, (beta, 0.0, 0.0), 1, 1)


@njit(cache=True)
def prelu_forward(x, slope, y, channels, inner):
    """y = x if x > 0 else slope[c]·x over a flat (outer, channels, inner) array"""
    _forward(_PRELU, x, y, y, slope, (0.0, 0.0, 0.0), channels, inner)


@njit(cache=True)
def prelu_backward(x, dy, slope, dx, channels, inner):
    """dx = dy if x > 0 else dy·slope[c] over a flat (outer, channels, inner) array"""
    _backward(_PRELU, x, x, x, slope, dy, dx, (0.0, 0.0, 0.0), channels, inner)


@njit(cache=True)
def prelu_slope_terms(x, dy, terms):
    """terms = dy·x·[x <= 0], the summands of PReLU's slope gradient"""
    _backward(_PRELU_SLOPE, x, x, x, x, dy, terms, (0.0, 0.0, 0.0), 1, 1)
