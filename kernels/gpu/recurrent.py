"""GPU kernels of the recurrent layers (numba.cuda), twins of kernels/cpu/recurrent.py: Caffe's
LSTMUnit for one timestep, the LSTM's whole sequence and the GEMMs around it.

The unit runs one thread per (stream, unit) value. The whole sequence is a loop over the T
steps on the host, three launches a step (h_conted, the GEMM through blas.gemm, the unit);
``chunks`` and ``scratch``, which cut the CPU's work into blocks for its threads, are not used.
"""
import math

from numba import cuda

from . import blas as _blas
from ._launch import grid_stride


@cuda.jit(device=True)
def _sigmoid(v):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@cuda.jit(device=True)
def _cell(xi, xf, xo, xg, k, cp):
    """(c, h, i, σ(x_f), o, g) of one unit from its pre-activations, cont k and c_prev cp"""
    i = _sigmoid(xi)
    sf = _sigmoid(xf)
    o = _sigmoid(xo)
    g = math.tanh(xg)
    f = 0.0 if k == 0 else k * sf
    cv = f * cp + i * g
    return cv, o * math.tanh(cv), i, sf, o, g


@cuda.jit(device=True)
def _cell_backward(i, sf, o, g, k, cp, cv, dcv, gh):
    """(∂E/∂c_prev, ∂E/∂x_i, ∂E/∂x_f, ∂E/∂x_o, ∂E/∂x_g) of one unit (Caffe's formulas)"""
    f = 0.0 if k == 0 else k * sf
    tc = math.tanh(cv)
    cbar = dcv + gh * o * (1.0 - tc * tc)
    return (cbar * f, cbar * g * i * (1.0 - i), cbar * cp * f * (1.0 - f), gh * tc * o * (1.0 - o),
            cbar * i * (1.0 - g * g))


# --------------------------------------------------------------------------- LSTMUnit (one step)
@grid_stride(lambda num, hidden: num * hidden)
@cuda.jit
def lstm_unit_forward(c_prev, x, cont, c, h, num, hidden):
    """c = f·c_prev + i·g, h = o·tanh(c) from gate pre-activations x (N, 4H) (Caffe's LSTMUnit)"""
    for idx in range(cuda.grid(1), num * hidden, cuda.gridsize(1)):
        n = idx // hidden
        j = idx - n * hidden
        r = n * 4 * hidden + j
        cv, hv, i, sf, o, g = _cell(x[r], x[r + hidden], x[r + 2 * hidden], x[r + 3 * hidden], cont[n],
                                    c_prev[idx])
        c[idx] = cv
        h[idx] = hv


@grid_stride(lambda num, hidden: num * hidden)
@cuda.jit
def lstm_unit_backward(c_prev, x, cont, c, dc, dh, dc_prev, dx, num, hidden, to_c_prev, to_x):
    """∂E/∂c_prev = c̄·f and ∂E/∂x (Caffe's LSTMUnit backward), c̄ = ∂E/∂c + ∂E/∂h·o·(1 − tanh²c); each written only where asked"""
    for idx in range(cuda.grid(1), num * hidden, cuda.gridsize(1)):
        n = idx // hidden
        j = idx - n * hidden
        r = n * 4 * hidden + j
        dcp, di, df, do, dg = _cell_backward(
            _sigmoid(x[r]), _sigmoid(x[r + hidden]), _sigmoid(x[r + 2 * hidden]),
            math.tanh(x[r + 3 * hidden]), cont[n], c_prev[idx], c[idx], dc[idx], dh[idx])
        if to_x:
            dx[r] = di
            dx[r + hidden] = df
            dx[r + 2 * hidden] = do
            dx[r + 3 * hidden] = dg
        if to_c_prev:
            dc_prev[idx] = dcp


# --------------------------------------------------------------------------- whole sequence
@grid_stride(lambda num, hidden: num * hidden)
@cuda.jit
def _scale_rows(cont, x, y, num, hidden):
    """Kernel: y[n, j] = cont[n]·x[n, j] (y may be x)"""
    for idx in range(cuda.grid(1), num * hidden, cuda.gridsize(1)):
        y[idx] = cont[idx // hidden] * x[idx]


@grid_stride(lambda num, hidden: num * hidden)
@cuda.jit
def _step_forward(gates, rec, c_prev, cont, c, h, num, hidden):
    """Kernel: the unit on gates + rec; the activations i, σ(x_f), o, g replace the gates"""
    for idx in range(cuda.grid(1), num * hidden, cuda.gridsize(1)):
        n = idx // hidden
        j = idx - n * hidden
        r = n * 4 * hidden + j
        cv, hv, i, sf, o, g = _cell(gates[r] + rec[r], gates[r + hidden] + rec[r + hidden],
                                    gates[r + 2 * hidden] + rec[r + 2 * hidden],
                                    gates[r + 3 * hidden] + rec[r + 3 * hidden], cont[n], c_prev[idx])
        c[idx] = cv
        h[idx] = hv
        gates[r] = i
        gates[r + hidden] = sf
        gates[r + 2 * hidden] = o
        gates[r + 3 * hidden] = g


@grid_stride(lambda num, hidden: num * hidden)
@cuda.jit
def _step_backward(acts, c_prev, cont, c, dh, dh_more, dcc, dgates, num, hidden):
    """Kernel: the unit's backward from its activations, ∂E/∂h = dh + dh_more, ∂E/∂c = dcc, which
    then becomes ∂E/∂c_prev"""
    for idx in range(cuda.grid(1), num * hidden, cuda.gridsize(1)):
        n = idx // hidden
        j = idx - n * hidden
        r = n * 4 * hidden + j
        dcp, di, df, do, dg = _cell_backward(acts[r], acts[r + hidden], acts[r + 2 * hidden],
                                             acts[r + 3 * hidden], cont[n], c_prev[idx], c[idx],
                                             dcc[idx], dh[idx] + dh_more[idx])
        dgates[r] = di
        dgates[r + hidden] = df
        dgates[r + 2 * hidden] = do
        dgates[r + 3 * hidden] = dg
        dcc[idx] = dcp


def lstm_forward(gates, w_hc, cont, h0, c0, hc, c, h, rec, steps, num, hidden, chunks):
    """LSTM over T steps: hc_t = cont_t·h_{t−1}, gates_t += hc_t·W_hcᵀ, then the unit (h_{−1} = h0, c_{−1} = c0); gates (T, N, 4H) hold the input part on entry and the activations i, σ(x_f), o, g on return"""
    nh, ng = num * hidden, num * 4 * hidden
    if nh == 0:
        return
    w = w_hc.reshape(4 * hidden, hidden)
    r = rec.reshape(num, 4 * hidden)
    for t in range(steps):
        hprev = h0 if t == 0 else h[(t - 1) * nh:t * nh]
        cprev = c0 if t == 0 else c[(t - 1) * nh:t * nh]
        k = cont[t * num:(t + 1) * num]
        hct = hc[t * nh:(t + 1) * nh]
        _scale_rows(k, hprev, hct, num, hidden)
        _blas.gemm(False, True, 1.0, hct.reshape(num, hidden), w, 0.0, r)
        _step_forward(gates[t * ng:(t + 1) * ng], rec, cprev, k, c[t * nh:(t + 1) * nh],
                      h[t * nh:(t + 1) * nh], num, hidden)


def lstm_backward(gates, w_hc, cont, c0, c, dh, dh_last, dc_last, dgates, dh0, dc0, carry,
                  steps, num, hidden, chunks):
    """Backward through the T steps of lstm_forward: dgates (T, N, 4H) = ∂E/∂(gate pre-activations), dh0 = ∂E/∂h0 and dc0 = ∂E/∂c0 (N, H), from dh = ∂E/∂h (T, N, H) and dh_last, dc_last = ∂E/∂h_T, ∂E/∂c_T (N, H); carry: workspace (2, N, H)"""
    nh, ng = num * hidden, num * 4 * hidden
    if nh == 0:
        return
    w = w_hc.reshape(4 * hidden, hidden)
    dhc, dcc = carry[:nh], carry[nh:2 * nh]
    _blas.copy(dh_last, dhc)
    _blas.copy(dc_last, dcc)
    for t in range(steps - 1, -1, -1):
        cprev = c0 if t == 0 else c[(t - 1) * nh:t * nh]
        k = cont[t * num:(t + 1) * num]
        dgt = dgates[t * ng:(t + 1) * ng]
        _step_backward(gates[t * ng:(t + 1) * ng], cprev, k, c[t * nh:(t + 1) * nh],
                       dh[t * nh:(t + 1) * nh], dhc, dcc, dgt, num, hidden)
        _blas.gemm(False, False, 1.0, dgt.reshape(num, 4 * hidden), w, 0.0, dhc.reshape(num, hidden))
        _scale_rows(k, dhc, dhc, num, hidden)
    _blas.copy(dhc, dh0)
    _blas.copy(dcc, dc0)


# --------------------------------------------------------------------------- GEMMs
def gemm_rows(a, b, c, trans_b, chunks):
    """C = A·op(B), op(B) = Bᵀ if trans_b; the rows of A and C cut into blocks, one GEMM each"""
    _blas.gemm(False, trans_b, 1.0, a, b, 0.0, c)


def gemm_tn(a, b, c, scratch, chunks):
    """C += Aᵀ·B: the rows of A and B (the summed dimension) cut into blocks, a partial product each in scratch (blocks·P·Q values), then added in block order"""
    _blas.gemm(True, False, 1.0, a, b, 1.0, c)

