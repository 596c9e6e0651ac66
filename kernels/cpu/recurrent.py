"""CPU kernels of the recurrent layers: Caffe's LSTMUnit for one timestep, the LSTM's whole
sequence (the fused engine of jitnet.layers.recurrent.LSTM), and the two parallel GEMMs that
engine needs around it. GPU twins: kernels/gpu/recurrent.py.

Gate rows are laid out as Caffe's: a row of 4·H pre-activations holds the input gate i, the
forget gate f, the output gate o and the candidate g, H values each (x[n, k·H + j], k = 0..3).
Caffe's LSTMUnit (lstm_unit_layer.cpp), per stream n and unit j, with cont_n the stream's
sequence-continuation indicator:

    i = σ(x_i)   f = cont_n·σ(x_f) (0 where cont_n = 0)   o = σ(x_o)   g = tanh(x_g)
    c = f·c_prev + i·g        h = o·tanh(c)

and its backward (exact for binary cont, Caffe's formula for any cont):

    c̄ = ∂E/∂c + ∂E/∂h·o·(1 − tanh²c)        ∂E/∂c_prev = c̄·f
    ∂E/∂x_i = c̄·g·i(1 − i)   ∂E/∂x_f = c̄·c_prev·f(1 − f)
    ∂E/∂x_o = ∂E/∂h·tanh(c)·o(1 − o)   ∂E/∂x_g = c̄·i·(1 − g²)

The whole-sequence kernels run Caffe's unrolled LSTM (lstm_layer.cpp) without its T·7 layers:
h_conted = cont_t·h_{t−1}, gates_t += h_conted·W_hcᵀ, then the unit. Streams are independent
through time, so the parallel loop runs over blocks of streams, each block through all T steps
(one GEMM of its rows per step); BLAS runs single-threaded inside (jitnet.threads).
"""
import numpy as np
from numba import njit, prange

_SERIAL_BELOW = 16384   # a pointwise step over fewer values runs on the calling thread


# σ(v) = 1/(1 + e^−v) and tanh(v) = 2σ(2v) − 1 (Caffe's own LSTMUnit writes tanh so) in the
# arrays' dtype, without branches: e^−v overflows to inf for very negative v, which gives the
# right limits (σ = 0, tanh = −1), and the loops over the units vectorize.
@njit(cache=True)
def _unit_forward(x, rec, c_prev, cont, c, h, acts, n0, n1, hidden, with_rec, keep):
    """The LSTM unit for streams n0..n1 (2-D views: x, rec, acts (N, 4H); c_prev, c, h (N, H)):
    pre-activations x (+ rec when with_rec); with ``keep`` the activations i, σ(x_f), o, g go
    to ``acts`` (which may be x itself)."""
    one, two, zero = c.dtype.type(1), c.dtype.type(2), c.dtype.type(0)
    for n in range(n0, n1):
        k = cont[n]
        for j in range(hidden):
            xi, xf, xo, xg = x[n, j], x[n, hidden + j], x[n, 2 * hidden + j], x[n, 3 * hidden + j]
            if with_rec:
                xi += rec[n, j]
                xf += rec[n, hidden + j]
                xo += rec[n, 2 * hidden + j]
                xg += rec[n, 3 * hidden + j]
            i = one / (one + np.exp(-xi))
            sf = one / (one + np.exp(-xf))
            o = one / (one + np.exp(-xo))
            g = two / (one + np.exp(-two * xg)) - one
            f = zero if k == 0 else k * sf
            cv = f * c_prev[n, j] + i * g
            c[n, j] = cv
            h[n, j] = o * (two / (one + np.exp(-two * cv)) - one)
            if keep:
                acts[n, j] = i
                acts[n, hidden + j] = sf
                acts[n, 2 * hidden + j] = o
                acts[n, 3 * hidden + j] = g


@njit(cache=True)
def _unit_backward(x, is_acts, c_prev, cont, c, dc, dh, dh_more, dc_prev, dx, n0, n1, hidden,
                   to_c_prev, to_x, with_more):
    """The unit's backward for streams n0..n1: ∂E/∂h is dh (+ dh_more when with_more), ∂E/∂c is
    dc; writes ∂E/∂c_prev (to_c_prev; may alias dc) and ∂E/∂x (to_x). ``x`` holds the
    pre-activations, or the activations i, σ(x_f), o, g when ``is_acts``."""
    one, two, zero = c.dtype.type(1), c.dtype.type(2), c.dtype.type(0)
    for n in range(n0, n1):
        k = cont[n]
        for j in range(hidden):
            if is_acts:
                i, sf, o, g = x[n, j], x[n, hidden + j], x[n, 2 * hidden + j], x[n, 3 * hidden + j]
            else:
                i = one / (one + np.exp(-x[n, j]))
                sf = one / (one + np.exp(-x[n, hidden + j]))
                o = one / (one + np.exp(-x[n, 2 * hidden + j]))
                g = two / (one + np.exp(-two * x[n, 3 * hidden + j])) - one
            f = zero if k == 0 else k * sf
            tc = two / (one + np.exp(-two * c[n, j])) - one
            gh = dh[n, j]
            if with_more:
                gh += dh_more[n, j]
            cbar = dc[n, j] + gh * o * (one - tc * tc)
            if to_x:
                dx[n, j] = cbar * g * i * (one - i)
                dx[n, hidden + j] = cbar * c_prev[n, j] * f * (one - f)
                dx[n, 2 * hidden + j] = gh * tc * o * (one - o)
                dx[n, 3 * hidden + j] = cbar * i * (one - g * g)
            if to_c_prev:
                dc_prev[n, j] = cbar * f


@njit(cache=True)
def _unit_blocks(num, hidden):
    """Blocks of streams for a pointwise step: 1 below _SERIAL_BELOW values, else up to 64."""
    b = num * hidden // _SERIAL_BELOW
    if b < 1:
        b = 1
    if b > 64:
        b = 64
    if b > num:
        b = num
    return b


# --------------------------------------------------------------------------- LSTMUnit (one step)
@njit(cache=True, parallel=True)
def lstm_unit_forward(c_prev, x, cont, c, h, num, hidden):
    """c = f·c_prev + i·g, h = o·tanh(c) from gate pre-activations x (N, 4H) (Caffe's LSTMUnit)"""
    xs, cp = x.reshape((num, 4 * hidden)), c_prev.reshape((num, hidden))
    cs, hs = c.reshape((num, hidden)), h.reshape((num, hidden))
    nb = _unit_blocks(num, hidden)
    if nb == 1:
        # np.int64(0), not 0: numba would compile the callee again for the literal 0
        _unit_forward(xs, xs, cp, cont, cs, hs, xs, np.int64(0), num, hidden, False, False)
    else:
        for b in prange(nb):
            _unit_forward(xs, xs, cp, cont, cs, hs, xs, b * num // nb, (b + 1) * num // nb, hidden,
                          False, False)


@njit(cache=True, parallel=True)
def lstm_unit_backward(c_prev, x, cont, c, dc, dh, dc_prev, dx, num, hidden, to_c_prev, to_x):
    """∂E/∂c_prev = c̄·f and ∂E/∂x (Caffe's LSTMUnit backward), c̄ = ∂E/∂c + ∂E/∂h·o·(1 − tanh²c); each written only where asked"""
    xs, cp = x.reshape((num, 4 * hidden)), c_prev.reshape((num, hidden))
    cs = c.reshape((num, hidden))
    dcs, dhs = dc.reshape((num, hidden)), dh.reshape((num, hidden))
    dcp, dxs = dc_prev.reshape((num, hidden)), dx.reshape((num, 4 * hidden))
    nb = _unit_blocks(num, hidden)
    if nb == 1:
        _unit_backward(xs, False, cp, cont, cs, dcs, dhs, dhs, dcp, dxs, np.int64(0), num, hidden,
                       to_c_prev, to_x, False)
    else:
        for b in prange(nb):
            _unit_backward(xs, False, cp, cont, cs, dcs, dhs, dhs, dcp, dxs, b * num // nb,
                           (b + 1) * num // nb, hidden, to_c_prev, to_x, False)


# --------------------------------------------------------------------------- whole sequence
@njit(cache=True, parallel=True)
def lstm_forward(gates, w_hc, cont, h0, c0, hc, c, h, rec, steps, num, hidden, chunks):
    """LSTM over T steps: hc_t = cont_t·h_{t−1}, gates_t += hc_t·W_hcᵀ, then the unit (h_{−1} = h0, c_{−1} = c0); gates (T, N, 4H) hold the input part on entry and the activations i, σ(x_f), o, g on return"""
    g4 = gates.reshape((steps, num, 4 * hidden))
    w = w_hc.reshape((4 * hidden, hidden))
    cs, hs = cont.reshape((steps, num)), hc.reshape((steps, num, hidden))
    c3, h3 = c.reshape((steps, num, hidden)), h.reshape((steps, num, hidden))
    hp0, cp0 = h0.reshape((num, hidden)), c0.reshape((num, hidden))
    r = rec.reshape((num, 4 * hidden))
    nb = min(chunks, num)
    for b in prange(nb):
        n0, n1 = b * num // nb, (b + 1) * num // nb
        for t in range(steps):
            hprev = hp0 if t == 0 else h3[t - 1]
            cprev = cp0 if t == 0 else c3[t - 1]
            for n in range(n0, n1):
                k = cs[t, n]
                for j in range(hidden):
                    hs[t, n, j] = k * hprev[n, j]
            np.dot(hs[t, n0:n1], w.T, r[n0:n1])
            _unit_forward(g4[t], r, cprev, cs[t], c3[t], h3[t], g4[t], n0, n1, hidden, True, True)


@njit(cache=True, parallel=True)
def lstm_backward(gates, w_hc, cont, c0, c, dh, dh_last, dc_last, dgates, dh0, dc0, carry,
                  steps, num, hidden, chunks):
    """Backward through the T steps of lstm_forward: dgates (T, N, 4H) = ∂E/∂(gate pre-activations), dh0 = ∂E/∂h0 and dc0 = ∂E/∂c0 (N, H), from dh = ∂E/∂h (T, N, H) and dh_last, dc_last = ∂E/∂h_T, ∂E/∂c_T (N, H); carry: workspace (2, N, H)"""
    g4, dg4 = gates.reshape((steps, num, 4 * hidden)), dgates.reshape((steps, num, 4 * hidden))
    w = w_hc.reshape((4 * hidden, hidden))
    cs = cont.reshape((steps, num))
    c3, dh3 = c.reshape((steps, num, hidden)), dh.reshape((steps, num, hidden))
    cp0 = c0.reshape((num, hidden))
    dhl, dcl = dh_last.reshape((num, hidden)), dc_last.reshape((num, hidden))
    dhp, dcp = dh0.reshape((num, hidden)), dc0.reshape((num, hidden))
    cy = carry.reshape((2, num, hidden))
    dhc, dcc = cy[0], cy[1]        # ∂E/∂h_t arriving from step t+1, ∂E/∂c_t
    nb = min(chunks, num)
    for b in prange(nb):
        n0, n1 = b * num // nb, (b + 1) * num // nb
        for n in range(n0, n1):
            for j in range(hidden):
                dhc[n, j] = dhl[n, j]
                dcc[n, j] = dcl[n, j]
        for t in range(steps - 1, -1, -1):
            cprev = cp0 if t == 0 else c3[t - 1]
            _unit_backward(g4[t], True, cprev, cs[t], c3[t], dcc, dh3[t], dhc, dcc, dg4[t], n0, n1,
                           hidden, True, True, True)
            np.dot(dg4[t, n0:n1], w, dhc[n0:n1])            # ∂E/∂hc_t
            for n in range(n0, n1):
                k = cs[t, n]
                for j in range(hidden):
                    dhc[n, j] = k * dhc[n, j]                # hc_t = cont_t·h_{t−1}
        for n in range(n0, n1):
            for j in range(hidden):
                dhp[n, j] = dhc[n, j]
                dcp[n, j] = dcc[n, j]


# --------------------------------------------------------------------------- parallel GEMMs
@njit(cache=True, parallel=True)
def gemm_rows(a, b, c, trans_b, chunks):
    """C = A·op(B), op(B) = Bᵀ if trans_b; the rows of A and C cut into blocks, one GEMM each"""
    m = c.shape[0]
    nb = max(1, min(chunks, m // 16))
    for k in prange(nb):
        m0, m1 = k * m // nb, (k + 1) * m // nb
        if trans_b:
            np.dot(a[m0:m1], b.T, c[m0:m1])
        else:
            np.dot(a[m0:m1], b, c[m0:m1])


@njit(cache=True, parallel=True)
def gemm_tn(a, b, c, scratch, chunks):
    """C += Aᵀ·B: the rows of A and B (the summed dimension) cut into blocks, a partial product each in scratch (blocks·P·Q values), then added in block order"""
    m = a.shape[0]
    p, q = c.shape
    nb = max(1, min(chunks, m // 64))
    parts = scratch[:nb * p * q].reshape((nb, p, q))
    for k in prange(nb):
        m0, m1 = k * m // nb, (k + 1) * m // nb
        if m1 > m0:
            np.dot(a[m0:m1].T, b[m0:m1], parts[k])
        else:
            parts[k, :, :] = 0
    for i in prange(p):
        for k in range(nb):
            for j in range(q):
                c[i, j] += parts[k, i, j]
