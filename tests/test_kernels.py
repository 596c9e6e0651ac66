"""Kernel tests: CPU kernels against numpy oracles, then GPU launchers against the CPU kernels.

GPU tests run on a real device when numba.cuda finds one, else under the CUDA simulator
(tests/conftest.py sets NUMBA_ENABLE_CUDASIM=1 before numba is imported). Shapes in the
GPU section are tiny because the simulator runs every thread as a Python thread.
"""
import itertools
import zlib

import numba
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from numba import cuda

from jitnet.kernels.cpu import blas, common, im2col, loss, neuron, solver
from jitnet.kernels.cpu import math as kmath
from jitnet.kernels.gpu import blas as gblas
from jitnet.kernels.gpu import common as gcommon
from jitnet.kernels.gpu import im2col as gim2col
from jitnet.kernels.gpu import math as gmath
from jitnet.kernels.gpu import loss as gloss
from jitnet.kernels.gpu import neuron as gneuron
from jitnet.kernels.gpu import solver as gsolver

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-13}
FLT_MIN = 1.17549435e-38


def _rng(seed=0):
    return np.random.default_rng(seed)


def _randn(rng, shape, dt, lo=None):
    a = rng.standard_normal(shape)
    if lo is not None:
        a = np.abs(a) + lo
    return a.astype(dt)


def _close(actual, expected, dt, scale=1.0):
    if isinstance(actual, np.ndarray):
        assert actual.dtype == np.dtype(dt)
    np.testing.assert_allclose(actual, expected, rtol=RTOL[dt] * scale, atol=ATOL[dt] * scale)


def _softmax_ref(x, outer, channels, inner):
    x3 = x.astype(np.float64).reshape(outer, channels, inner)
    e = np.exp(x3 - x3.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).ravel()


def _labels(rng, outer, inner, channels, ignore_label=None, n_bad=0):
    lab = rng.integers(0, channels, size=outer * inner).astype(np.float64)
    idx = rng.permutation(lab.size)
    k = 0
    if ignore_label is not None:
        lab[idx[:2]] = ignore_label
        k = 2
    bad = [-3, channels, channels + 5]
    for j in range(n_bad):
        lab[idx[k + j]] = bad[j % len(bad)]
    return lab


# =========================================================================== CPU: blas
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.75])
def test_gemm(dt, ta, tb, beta):
    rng = _rng(1)
    m, n, k = 5, 7, 3
    a = _randn(rng, (k, m) if ta else (m, k), dt)
    b = _randn(rng, (n, k) if tb else (k, n), dt)
    c0 = _randn(rng, (m, n), dt)
    c = np.full((m, n), np.nan, dt) if beta == 0 else c0.copy()
    alpha = -1.25
    blas.gemm(ta, tb, alpha, a, b, beta, c)
    opa = (a.T if ta else a).astype(np.float64)
    opb = (b.T if tb else b).astype(np.float64)
    ref = alpha * opa @ opb + (beta * c0.astype(np.float64) if beta != 0 else 0.0)
    assert c.dtype == dt and np.all(np.isfinite(c))
    _close(c, ref, dt, scale=10)


@pytest.mark.parametrize("dt", DTYPES)
def test_gemm_odd_sizes_and_empty_k(dt):
    rng = _rng(2)
    a = _randn(rng, (33, 17), dt)
    b = _randn(rng, (19, 17), dt)
    c = np.full((33, 19), np.nan, dt)
    blas.gemm(False, True, 1.0, a, b, 0.0, c)
    _close(c, a.astype(np.float64) @ b.astype(np.float64).T, dt, scale=10)
    # K == 0: C = beta·C
    c0 = _randn(rng, (3, 4), dt)
    c = c0.copy()
    blas.gemm(False, False, 2.0, np.zeros((3, 0), dt), np.zeros((0, 4), dt), 0.5, c)
    _close(c, 0.5 * c0.astype(np.float64), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_vector_ops(dt):
    rng = _rng(3)
    n = 37
    x = _randn(rng, n, dt)
    y0 = _randn(rng, n, dt)
    x64, y64 = x.astype(np.float64), y0.astype(np.float64)

    y = y0.copy()
    blas.axpy(0.3, x, y)
    _close(y, y64 + 0.3 * x64, dt)
    y = y0.copy()
    blas.axpby(0.3, x, -1.5, y)
    _close(y, 0.3 * x64 - 1.5 * y64, dt)
    z = x.copy()
    blas.scale(2.5, z)
    _close(z, 2.5 * x64, dt)
    z = x.copy()
    blas.set_value(z, 0.125)
    assert np.all(z == 0.125) and z.dtype == dt
    z = np.zeros_like(x)
    blas.copy(x, z)
    assert np.array_equal(z, x)
    # aliasing: x *= alpha in place, y = a·y + b·y
    z = x.copy()
    blas.axpby(2.0, z, 3.0, z)
    _close(z, 5.0 * x64, dt)
    z = x.copy()
    blas.axpy(1.0, z, z)
    _close(z, 2.0 * x64, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [1, 41, 10007])
def test_reductions(dt, n):
    rng = _rng(4)
    x = _randn(rng, n, dt)
    y = _randn(rng, n, dt)
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    for got, ref in [(blas.dot(x, y), np.dot(x64, y64)), (blas.asum(x), np.abs(x64).sum()),
                     (blas.dot(x, x), np.sum(x64 ** 2))]:
        assert isinstance(got, float)
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.75])
def test_gemv(dt, trans, beta):
    rng = _rng(13)
    m, k = 6, 9                                # op(A) is m x k
    a = _randn(rng, (k, m) if trans else (m, k), dt)
    x = _randn(rng, k, dt)
    y0 = _randn(rng, m, dt)
    y = np.full(m, np.nan, dt) if beta == 0 else y0.copy()
    blas.gemv(trans, -1.25, a, x, beta, y)
    opa = (a.T if trans else a).astype(np.float64)
    ref = -1.25 * opa @ x.astype(np.float64) + (beta * y0.astype(np.float64) if beta != 0 else 0.0)
    _close(y, ref, dt, scale=10)


@pytest.mark.parametrize("dt", DTYPES)
def test_gemv_empty_k_and_shape_check(dt):
    y0 = np.array([1.0, -2.0, 3.0], dt)
    y = y0.copy()
    blas.gemv(False, 2.0, np.zeros((3, 0), dt), np.zeros(0, dt), 0.5, y)
    _close(y, 0.5 * y0.astype(np.float64), dt)
    y = np.full(3, np.nan, dt)
    blas.gemv(True, 2.0, np.zeros((0, 3), dt), np.zeros(0, dt), 0.0, y)
    assert np.all(y == 0)
    with pytest.raises(ValueError):
        blas.gemv(False, 1.0, np.ones((3, 4), dt), np.ones(3, dt), 0.0, np.ones(3, dt))


# =========================================================================== CPU: neuron
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("inplace", [False, True])
def test_neuron(dt, inplace):
    rng = _rng(6)
    n = 45
    x = _randn(rng, n, dt) * 3
    x[::7] = 0  # boundary value for relu
    dy = _randn(rng, n, dt)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)

    def out_for(src):
        return src if inplace else np.empty_like(src)

    def fwd(f, *extra):
        xi = x.copy()
        y = out_for(xi)
        f(xi, y, *extra)
        return y

    def bwd(f, first, *extra):
        d = dy.copy()
        dx = out_for(d)
        f(first, d, dx, *extra)
        return dx

    _close(fwd(neuron.relu_forward, 0.1), np.where(x64 > 0, x64, 0.1 * x64), dt)
    _close(fwd(neuron.relu_forward, 0.0), np.maximum(x64, 0), dt)
    _close(bwd(neuron.relu_backward, x, 0.1), dy64 * np.where(x64 > 0, 1.0, 0.1), dt)
    sig = 1.0 / (1.0 + np.exp(-x64))
    _close(fwd(neuron.sigmoid_forward), sig, dt)
    s = sig.astype(dt)
    _close(bwd(neuron.sigmoid_backward, s), dy64 * s * (1 - s.astype(np.float64)), dt)
    _close(fwd(neuron.tanh_forward), np.tanh(x64), dt)
    t = np.tanh(x64).astype(dt)
    _close(bwd(neuron.tanh_backward, t), dy64 * (1 - t.astype(np.float64) ** 2), dt)
    mask = (rng.random(n) < 0.5).astype(np.uint8)
    xi = x.copy()
    y = out_for(xi)
    neuron.dropout_forward(xi, mask, y, 2.0)
    _close(y, x64 * mask * 2.0, dt)
    d = dy.copy()
    dx = out_for(d)
    neuron.dropout_backward(d, mask, dx, 2.0)
    _close(dx, dy64 * mask * 2.0, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_sigmoid_extreme(dt):
    x = np.array([-1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0], dt)
    y = np.empty_like(x)
    with np.errstate(over="raise"):
        neuron.sigmoid_forward(x, y)
    assert np.all(np.isfinite(y))
    ref = np.exp(-np.logaddexp(0.0, -x.astype(np.float64)))
    np.testing.assert_allclose(y, ref, rtol=RTOL[dt], atol=np.finfo(dt).tiny)  # float32 denormals


# =========================================================================== CPU: softmax
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("shape", [(2, 5, 3), (4, 10, 1), (1, 1, 6)])
def test_softmax(dt, inplace, shape):
    outer, channels, inner = shape
    rng = _rng(7)
    x = _randn(rng, outer * channels * inner, dt) * 2
    ref = _softmax_ref(x, *shape)
    xi = x.copy()
    y = xi if inplace else np.empty_like(xi)
    common.softmax_forward(xi, y, outer, channels, inner)
    _close(y, ref, dt)

    y = ref.astype(dt)
    dy = _randn(rng, y.size, dt)
    y3, dy3 = y.astype(np.float64).reshape(shape), dy.astype(np.float64).reshape(shape)
    dref = ((dy3 - (dy3 * y3).sum(axis=1, keepdims=True)) * y3).ravel()
    d = dy.copy()
    dx = d if inplace else np.empty_like(d)
    common.softmax_backward(y, d, dx, outer, channels, inner)
    _close(dx, dref, dt, scale=10)


@pytest.mark.parametrize("dt", DTYPES)
def test_softmax_large_values(dt):
    shape = (3, 4, 2)
    x = (_randn(_rng(8), 24, np.float64) * 1e4 + 5e4).astype(dt)
    x[:8] = np.finfo(dt).max / 2
    y = np.empty_like(x)
    common.softmax_forward(x, y, *shape)
    assert np.all(np.isfinite(y))
    _close(y, _softmax_ref(x, *shape), dt)


# =========================================================================== CPU: losses
def _loss_ref(prob, lab, outer, channels, inner, has_ignore, ignore_label):
    s, v, b = 0.0, 0, 0
    p3 = prob.astype(np.float64).reshape(outer, channels, inner)
    for o in range(outer):
        for i in range(inner):
            if np.isnan(lab[o * inner + i]):
                b += 1
                continue
            l = int(lab[o * inner + i])
            if has_ignore and l == ignore_label:
                continue
            if l < 0 or l >= channels:
                b += 1
                continue
            s -= np.log(max(p3[o, l, i], FLT_MIN))
            v += 1
    return s, v, b


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("has_ignore", [False, True])
def test_softmax_loss(dt, has_ignore):
    outer, channels, inner = 4, 5, 3
    rng = _rng(9)
    prob = _softmax_ref(_randn(rng, outer * channels * inner, dt), outer, channels, inner).astype(dt)
    prob[0] = 0  # exercises the FLT_MIN clamp when it is a label's probability
    ign = 2
    lab = _labels(rng, outer, inner, channels, ignore_label=ign, n_bad=2)
    lab[0] = 0
    lab[lab.size - 1] = np.nan                 # a NaN label is a bad label, on CPU and GPU alike
    lab_f = lab.astype(dt)
    got = loss.softmax_loss_forward(prob, lab_f, outer, channels, inner, has_ignore, ign)
    ref = _loss_ref(prob, lab, outer, channels, inner, has_ignore, ign)
    assert isinstance(got[0], float) and isinstance(got[1], int) and isinstance(got[2], int)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-12)
    assert got[1:] == ref[1:]

    scale = 0.25
    dx = np.full_like(prob, np.nan)
    loss.softmax_loss_backward(prob, lab_f, dx, outer, channels, inner, has_ignore, ign, scale)
    dref = prob.astype(np.float64).reshape(outer, channels, inner).copy()
    for o in range(outer):
        for i in range(inner):
            l = -1 if np.isnan(lab[o * inner + i]) else int(lab[o * inner + i])
            if (has_ignore and l == ign) or l < 0 or l >= channels:
                dref[o, :, i] = 0
            else:
                dref[o, l, i] -= 1
    _close(dx, scale * dref.ravel(), dt)


def _accuracy_ref(scores, lab, outer, channels, inner, top_k, has_ignore, ignore_label):
    s3 = scores.reshape(outer, channels, inner)
    cc, cn, bad = np.zeros(channels), np.zeros(channels), 0
    for o in range(outer):
        for i in range(inner):
            if np.isnan(lab[o * inner + i]):
                bad += 1
                continue
            l = int(lab[o * inner + i])
            if has_ignore and l == ignore_label:
                continue
            if l < 0 or l >= channels:
                bad += 1
                continue
            cn[l] += 1
            if np.count_nonzero(s3[o, :, i] >= s3[o, l, i]) <= top_k:
                cc[l] += 1
    return cc, cn, bad


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("has_ignore", [False, True])
def test_accuracy(dt, top_k, has_ignore):
    outer, channels, inner = 6, 4, 2
    rng = _rng(10)
    scores = _randn(rng, outer * channels * inner, dt)
    ign = 1
    lab = _labels(rng, outer, inner, channels, ignore_label=ign, n_bad=1)
    s3 = scores.reshape(outer, channels, inner)
    # ties: position (0, 0) all equal -> wrong for top_k < channels; position (1, 1): label tied with one other max
    s3[0, :, 0] = 0.5
    lab[0] = 3
    l = 0
    lab[1 * inner + 1] = l
    s3[1, :, 1] = [2.0, 2.0, -1.0, -2.0]
    lab[5 * inner + 1] = np.nan                # a NaN label is a bad label
    cc = np.full(channels, 7.0)
    cn = np.full(channels, 7.0)
    got = loss.accuracy_forward(scores, lab.astype(dt), outer, channels, inner, top_k, has_ignore, ign,
                                cc, cn)
    rcc, rcn, rbad = _accuracy_ref(scores, lab, outer, channels, inner, top_k, has_ignore, ign)
    assert np.array_equal(cc, rcc) and np.array_equal(cn, rcn)
    assert got == (int(rcc.sum()), int(rcn.sum()), rbad)
    assert rbad >= 2                           # the out-of-range label and the NaN
    assert float(rcn.sum()) > 0


@pytest.mark.parametrize("dt", DTYPES)
def test_accuracy_ties_count_against(dt):
    scores = np.array([1.0, 1.0, 0.0], dt)   # outer=1, channels=3, inner=1, label 0 tied with 1
    cc, cn = np.zeros(3), np.zeros(3)
    assert loss.accuracy_forward(scores, np.array([0.0], dt), 1, 3, 1, 1, False, -1, cc, cn) == (0, 1, 0)
    assert loss.accuracy_forward(scores, np.array([0.0], dt), 1, 3, 1, 2, False, -1, cc, cn) == (1, 1, 0)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", [29, 5000])
def test_euclidean(dt, n):
    rng = _rng(11)
    a, b = _randn(rng, n, dt), _randn(rng, n, dt)
    diff = np.full(n, np.nan, dt)
    got = loss.euclidean_loss_forward(a, b, diff)
    d = (a - b)
    _close(diff, a.astype(np.float64) - b.astype(np.float64), dt)
    assert isinstance(got, float)
    np.testing.assert_allclose(got, np.sum(d.astype(np.float64) ** 2), rtol=1e-12)


# =========================================================================== CPU: solver
@pytest.mark.parametrize("dt", DTYPES)
def test_solver(dt):
    rng = _rng(12)
    n = 31
    w0, g0, h0 = _randn(rng, n, dt), _randn(rng, n, dt), _randn(rng, n, dt)
    w0[3] = 0
    w64, g64, h64 = (v.astype(np.float64) for v in (w0, g0, h0))
    w, g, h = w0.copy(), g0.copy(), h0.copy()
    solver.sgd_update(w, g, h, 0.01, 0.9)
    href = 0.9 * h64 + 0.01 * g64
    _close(h, href, dt)
    assert np.array_equal(g, h)
    _close(w, w64 - h.astype(np.float64), dt)

    g = g0.copy()
    total = solver.l2_regularize(w0, g, 5e-4)
    _close(g, g64 + 5e-4 * w64, dt)
    assert total == pytest.approx(g.astype(np.float64).sum(), rel=1e-12, abs=1e-12)
    g = g0.copy()
    total = solver.l1_regularize(w0, g, 5e-4)
    _close(g, g64 + 5e-4 * np.sign(w64), dt)
    assert total == pytest.approx(g.astype(np.float64).sum(), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("rule", ["l2_regularize", "l1_regularize"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "overflow"])
def test_regularization_sums_are_not_finite_when_a_diff_is_not(rule, bad):
    """The solver's NaN guard reads these sums instead of a pass of its own: one NaN or
    infinity among 40000 diffs (or a float32 diff that the decay pushes past the largest
    float32) makes the sum non-finite; without one it is finite, even for huge diffs."""
    rng = _rng(44)
    w, g = _randn(rng, 40000, np.float32), _randn(rng, 40000, np.float32)
    big = np.finfo(np.float32).max
    g[:100] = big                                    # finite, and their float64 sum too
    assert np.isfinite(getattr(solver, rule)(w, g.copy(), 1e-3))
    if bad == "overflow":
        g[12345], w[12345] = big, big                # big + 1e-3·big > float32 max
    else:
        g[12345] = bad
    assert not np.isfinite(getattr(solver, rule)(w, g, 1e-3 if rule == "l2_regularize" else big))


# =========================================================================== CPU: math
# Sizes: one serial slice, and several parallel slices (the kernels split work from 16k items).
MATH_SIZES = [37, 40001]


def _unary_cases(rng, n, dt):
    """(kernel name, extra scalars, input, float64 reference) for the one-operand kernels."""
    x = _randn(rng, n, dt) * 2
    x[::11] = 0
    pos = _randn(rng, n, dt, lo=0.05)
    x64, p64 = x.astype(np.float64), pos.astype(np.float64)
    return [("sqr", (), x, x64 ** 2), ("sqrt", (), pos, np.sqrt(p64)),
            ("exp", (), x, np.exp(x64)), ("log", (), pos, np.log(p64)),
            ("abs", (), x, np.abs(x64)), ("sign", (), x, np.sign(x64)),
            ("powx", (2.0,), x, x64 ** 2), ("powx", (3.0,), x, x64 ** 3),
            ("powx", (-1.5,), pos, p64 ** -1.5), ("powx", (0.5,), pos, np.sqrt(p64))]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", MATH_SIZES)
@pytest.mark.parametrize("inplace", [False, True])
def test_math_unary(dt, n, inplace):
    for name, scalars, x, ref in _unary_cases(_rng(14), n, dt):
        xi = x.copy()
        y = xi if inplace else np.full_like(xi, np.nan)
        if name == "powx":
            kmath.powx(xi, scalars[0], y)
        else:
            getattr(kmath, name)(xi, y)
        _close(y, ref, dt, scale=2)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("n", MATH_SIZES)
@pytest.mark.parametrize("alias", [None, 0, 1])
def test_math_binary(dt, n, alias):
    rng = _rng(15)
    a0 = _randn(rng, n, dt)
    b0 = _randn(rng, n, dt)
    b0 = np.where(np.abs(b0) < 0.05, 0.5, b0).astype(dt)   # divisors away from 0
    a64, b64 = a0.astype(np.float64), b0.astype(np.float64)
    for name, ref in [("add", a64 + b64), ("sub", a64 - b64), ("mul", a64 * b64), ("div", a64 / b64)]:
        a, b = a0.copy(), b0.copy()
        y = {None: np.full_like(a, np.nan), 0: a, 1: b}[alias]
        getattr(kmath, name)(a, b, y)
        _close(y, ref, dt)
    x = a0.copy()
    kmath.add_scalar(-0.75, x)
    _close(x, a64 - 0.75, dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_math_ieee_edges(dt):
    y = np.empty(3, dt)
    kmath.div(np.array([1.0, -1.0, 0.0], dt), np.zeros(3, dt), y)
    assert y[0] == np.inf and y[1] == -np.inf and np.isnan(y[2])
    kmath.powx(np.array([0.0, 4.0, -8.0], dt), -1.0, y)
    np.testing.assert_array_equal(y, np.array([np.inf, 0.25, -0.125], dt))
    kmath.sign(np.array([np.nan, -0.0, -3.0], dt), y)
    np.testing.assert_array_equal(y, np.array([0.0, 0.0, -1.0], dt))
    kmath.log(np.array([0.0, 1.0, np.e], dt), y)
    assert y[0] == -np.inf and y[1] == 0
    kmath.sqrt(np.array([-1.0, 0.0, 9.0], dt), y)
    assert np.isnan(y[0]) and y[2] == 3


# (outer, channels, inner): small; fully-connected bias (inner = 1, many rows); conv maps with
# slices starting mid-row; few channels with a long outer; one channel; an empty outer
CHANNEL_SHAPES = [(3, 4, 5), (1, 7, 1), (300, 129, 1), (2, 3, 9001), (20000, 3, 1), (4, 1, 5), (0, 3, 2)]


def _channel_ref(x, outer, channels, inner):
    return x.astype(np.float64).reshape(outer, channels, inner)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", CHANNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("inplace", [False, True])
def test_channel_broadcasts(dt, shape, inplace):
    outer, channels, inner = shape
    rng = _rng(16)
    x = _randn(rng, outer * channels * inner, dt)
    s = _randn(rng, channels, dt)
    x3, s3 = _channel_ref(x, *shape), s.astype(np.float64)[None, :, None]
    for name, ref in [("channel_scale", x3 * s3), ("channel_add", x3 + s3)]:
        xi = x.copy()
        y = xi if inplace else np.full_like(xi, np.nan)
        getattr(kmath, name)(xi, s, y, outer, channels, inner)
        _close(y, ref.ravel(), dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", CHANNEL_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_channel_reductions(dt, shape, beta):
    outer, channels, inner = shape
    rng = _rng(17)
    a = _randn(rng, outer * channels * inner, dt)
    b = _randn(rng, outer * channels * inner, dt)
    y0 = _randn(rng, channels, dt)
    a3, b3 = _channel_ref(a, *shape), _channel_ref(b, *shape)
    keep = beta * y0.astype(np.float64) if beta != 0 else 0.0
    y = np.full(channels, np.nan, dt) if beta == 0 else y0.copy()
    kmath.channel_sum(a, beta, y, outer, channels, inner)
    _close(y, a3.sum(axis=(0, 2)) + keep, dt, scale=100)
    y = np.full(channels, np.nan, dt) if beta == 0 else y0.copy()
    kmath.channel_dot(a, b, beta, y, outer, channels, inner)
    _close(y, (a3 * b3).sum(axis=(0, 2)) + keep, dt, scale=100)


@pytest.mark.parametrize("shape", [(300, 129, 1), (2, 3, 9001), (20000, 3, 1)], ids=lambda s: "x".join(map(str, s)))
def test_channel_reductions_do_not_depend_on_threads(shape):
    outer, channels, inner = shape
    rng = _rng(18)
    a = _randn(rng, outer * channels * inner, np.float64)
    b = _randn(rng, outer * channels * inner, np.float64)
    results = []
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(t)
            y, z = np.zeros(channels), np.zeros(channels)
            kmath.channel_sum(a, 0.0, y, outer, channels, inner)
            kmath.channel_dot(a, b, 0.0, z, outer, channels, inner)
            results.append((y, z))
    finally:
        numba.set_num_threads(threads)
    for y, z in results[1:]:
        assert np.array_equal(y, results[0][0]) and np.array_equal(z, results[0][1])


# =========================================================================== CPU: im2col
def _out(size, k, pad, stride, dilation):
    return (size + 2 * pad - (dilation * (k - 1) + 1)) // stride + 1


def _im2col_ref(x, channels, shape, kernel, pad, stride, dilation):
    """Columns by np.pad and strided slices: rows (c, kernel offsets), columns output positions."""
    nd = len(shape)
    out = [_out(*g) for g in zip(shape, kernel, pad, stride, dilation)]
    xp = np.pad(x.astype(np.float64).reshape((channels,) + tuple(shape)), [(0, 0)] + [(p, p) for p in pad])
    rows = []
    for c in range(channels):
        for offs in itertools.product(*(range(k) for k in kernel)):
            sl = tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offs, dilation, stride, out))
            rows.append(xp[(c,) + sl].ravel())
    return np.stack(rows).reshape(channels * int(np.prod(kernel)), int(np.prod(out))), nd


def _col2im_ref(col, channels, shape, kernel, pad, stride, dilation):
    """The adjoint by the same slices: every column entry added back into a padded image, then cropped."""
    out = [_out(*g) for g in zip(shape, kernel, pad, stride, dilation)]
    xp = np.zeros((channels,) + tuple(s + 2 * p for s, p in zip(shape, pad)))
    col = col.astype(np.float64).reshape(channels, -1, *out)
    for c in range(channels):
        for r, offs in enumerate(itertools.product(*(range(k) for k in kernel))):
            sl = tuple(slice(o * d, o * d + s * (n - 1) + 1, s) for o, d, s, n in zip(offs, dilation, stride, out))
            xp[(c,) + sl] += col[c, r]
    crop = tuple(slice(p, p + s) for s, p in zip(shape, pad))
    return xp[(slice(None),) + crop].ravel()


# (channels, height, width, kernel_h, kernel_w, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w)
IM2COL_CASES = [
    (1, 4, 4, 3, 3, 0, 0, 1, 1, 1, 1),          # plain valid convolution
    (2, 5, 7, 3, 2, 1, 0, 2, 1, 1, 2),          # odd sizes, non-square kernel, stride and dilation
    (3, 9, 6, 2, 3, 2, 1, 3, 2, 2, 1),          # pad, stride > 1 on both axes
    (1, 3, 3, 5, 5, 4, 4, 1, 1, 1, 1),          # kernel larger than the image, much padding
    (2, 8, 5, 1, 1, 0, 0, 2, 3, 1, 1),          # 1x1 kernel with stride
    (1, 6, 7, 3, 3, 2, 2, 1, 1, 3, 2),          # dilation reaching into the padding on both sides
]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("case", IM2COL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_im2col(dt, case):
    channels, height, width, kh, kw, ph, pw, sh, sw, dh, dw = case
    geometry = ((height, width), (kh, kw), (ph, pw), (sh, sw), (dh, dw))
    rng = _rng(19)
    x = _randn(rng, channels * height * width, dt)
    ref, _ = _im2col_ref(x, channels, *geometry)
    assert ref.size > 0
    col = np.full(ref.size, np.nan, dt)
    im2col.im2col(x, *case, col)
    np.testing.assert_array_equal(col, ref.ravel().astype(dt))     # a copy: exact

    c = _randn(rng, ref.size, dt)
    data = np.full(x.size, np.nan, dt)
    im2col.col2im(c, *case, data)
    _close(data, _col2im_ref(c, channels, *geometry), dt)

    nd_args = [np.array(g, dtype=np.int64) for g in geometry]
    col_nd = np.full(ref.size, np.nan, dt)
    im2col.im2col_nd(x, channels, *nd_args, col_nd)
    np.testing.assert_array_equal(col_nd, col)
    data_nd = np.full(x.size, np.nan, dt)
    im2col.col2im_nd(c, channels, *nd_args, data_nd)
    _close(data_nd, data.astype(np.float64), dt)


# (channels, shape, kernel, pad, stride, dilation) with 1 and 3 spatial axes
IM2COL_ND_CASES = [
    (2, (11,), (3,), (1,), (2,), (2,)),
    (1, (4, 5, 6), (2, 3, 2), (1, 0, 1), (1, 2, 3), (2, 1, 1)),
    (2, (3, 3, 4), (3, 1, 2), (1, 0, 0), (2, 1, 1), (1, 1, 2)),
]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("case", IM2COL_ND_CASES, ids=lambda c: str(len(c[1])) + "d")
def test_im2col_nd(dt, case):
    channels, *geometry = case
    rng = _rng(20)
    x = _randn(rng, channels * int(np.prod(geometry[0])), dt)
    ref, _ = _im2col_ref(x, channels, *geometry)
    args = [np.array(g, dtype=np.int64) for g in geometry]
    col = np.full(ref.size, np.nan, dt)
    im2col.im2col_nd(x, channels, *args, col)
    np.testing.assert_array_equal(col, ref.ravel().astype(dt))
    c = _randn(rng, ref.size, dt)
    data = np.full(x.size, np.nan, dt)
    im2col.col2im_nd(c, channels, *args, data)
    _close(data, _col2im_ref(c, channels, *geometry), dt)


@st.composite
def _conv_geometry(draw, min_axes, max_axes):
    """(channels, shape, kernel, pad, stride, dilation) with at least one output along each axis."""
    axes = []
    for _ in range(draw(st.integers(min_axes, max_axes))):
        size, k = draw(st.integers(1, 9)), draw(st.integers(1, 4))
        pad, stride, dilation = draw(st.integers(0, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        assume(_out(size, k, pad, stride, dilation) > 0)
        axes.append((size, k, pad, stride, dilation))
    return (draw(st.integers(1, 3)),) + tuple(tuple(g) for g in zip(*axes))


def _adjoint_gap(x, col_of_x, c, col2im_of_c):
    """|⟨im2col(x), c⟩ − ⟨x, col2im(c)⟩| relative to the size of the terms."""
    lhs, rhs = np.dot(col_of_x, c), np.dot(x, col2im_of_c)
    return abs(lhs - rhs) / (np.abs(col_of_x * c).sum() + 1e-300)


@given(geometry=_conv_geometry(2, 2), seed=st.integers(0, 2 ** 32 - 1))
def test_im2col_col2im_adjoint(geometry, seed):
    channels, (h, w), (kh, kw), (ph, pw), (sh, sw), (dh, dw) = geometry
    case = (channels, h, w, kh, kw, ph, pw, sh, sw, dh, dw)
    n_col = channels * kh * kw * _out(h, kh, ph, sh, dh) * _out(w, kw, pw, sw, dw)
    rng = _rng(seed)
    x = rng.standard_normal(channels * h * w)
    col = np.full(n_col, np.nan)
    im2col.im2col(x, *case, col)
    c = rng.standard_normal(n_col)
    data = np.full(x.size, np.nan)
    im2col.col2im(c, *case, data)
    assert _adjoint_gap(x, col, c, data) < 1e-12


@given(geometry=_conv_geometry(1, 3), seed=st.integers(0, 2 ** 32 - 1))
def test_im2col_col2im_adjoint_nd(geometry, seed):
    channels, *geometry = geometry
    shape, kernel = geometry[0], geometry[1]
    out = [_out(*g) for g in zip(*geometry)]
    n_col = channels * int(np.prod(kernel)) * int(np.prod(out))
    rng = _rng(seed)
    x = rng.standard_normal(channels * int(np.prod(shape)))
    args = [np.array(g, dtype=np.int64) for g in geometry]
    col = np.full(n_col, np.nan)
    im2col.im2col_nd(x, channels, *args, col)
    c = rng.standard_normal(n_col)
    data = np.full(x.size, np.nan)
    im2col.col2im_nd(c, channels, *args, data)
    assert _adjoint_gap(x, col, c, data) < 1e-12


# =========================================================================== CPU: convolution drivers
# (num, channels, num_output, group, shape, kernel, pad, stride, dilation, force_nd)
CONV_DRIVER_CASES = [
    (3, 4, 6, 2, (7, 6), (3, 2), (1, 0), (2, 1), (1, 2), False),    # groups, non-square, dilation
    (2, 3, 4, 1, (4, 5), (1, 1), (0, 0), (1, 1), (1, 1), False),    # 1×1: no im2col
    (2, 2, 3, 1, (3, 4, 3), (2, 1, 2), (1, 0, 1), (1, 2, 1), (1, 1, 2), False),   # 3 spatial axes
    (3, 2, 2, 1, (9,), (3,), (1,), (2,), (2,), False),               # 1 spatial axis
    (2, 4, 4, 2, (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), True),     # force_nd_im2col
    (5, 3, 3, 3, (6, 7), (3, 3), (1, 1), (1, 1), (1, 1), False),    # depthwise through GEMMs
    (2, 2, 4, 2, (3, 3), (1, 1), (0, 0), (2, 2), (1, 1), False),    # 1×1 with stride: im2col
]


def _conv_case(rng, dt, case):
    num, channels, num_output, group, shape, kernel, pad, stride, dilation, force_nd = case
    geometry = [np.array(g, dtype=np.int64) for g in (shape, kernel, pad, stride, dilation)]
    out = [_out(*g) for g in zip(shape, kernel, pad, stride, dilation)]
    x = _randn(rng, (num, channels) + shape, dt)
    w = _randn(rng, (num_output, channels // group) + kernel, dt)
    b = _randn(rng, num_output, dt)
    dy = _randn(rng, (num, num_output) + tuple(out), dt)
    return x, w, b, dy, geometry, out


def _workspaces(nchunks, channels, kernel, out, wsize, dt):
    cols = channels * int(np.prod(kernel)) * int(np.prod(out))
    return np.full(nchunks * cols, np.nan, dt), np.full(2 * nchunks * wsize, np.nan, dt)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("nchunks", [1, 2, 3, 7])
@pytest.mark.parametrize("case", CONV_DRIVER_CASES, ids=lambda c: "-".join(map(str, c[:4])) + f"-{len(c[4])}d")
def test_conv_drivers(dt, nchunks, case):
    """conv_forward against the loop reference; conv_backward_data as its adjoint
    (⟨conv(x), dy⟩ = ⟨x, adjoint(dy)⟩); conv_backward_weight as its derivative in w
    (⟨conv(x; v), dy⟩ = ⟨v, dw⟩, conv linear in w), accumulating; any number of runs."""
    import reference as ref
    num, channels, num_output, group, shape, kernel, pad, stride, dilation, force_nd = case
    rng = _rng(23)
    x, w, b, dy, geometry, out = _conv_case(rng, dt, case)
    col, part = _workspaces(nchunks, channels, kernel, out, w.size, dt)
    args = (num, channels, num_output, group, *geometry, force_nd, nchunks)
    y = np.full(dy.size, np.nan, dt)
    im2col.conv_forward(x.ravel(), w.ravel(), b, y, col, *args)
    want = ref.convolution(x, w, b, 1, kernel, stride, pad, dilation, group)
    _close(y, want.ravel(), dt, scale=10)

    dx = np.full(x.size, np.nan, dt)
    im2col.conv_backward_data(dy.ravel(), w.ravel(), np.zeros(0, dt), dx, col, *args)
    no_bias = ref.convolution(x, w, None, 1, kernel, stride, pad, dilation, group)
    tol = 1e-4 if dt == np.float32 else 1e-10
    lhs, rhs = np.dot(no_bias.ravel(), dy.astype(np.float64).ravel()), np.dot(x.astype(np.float64).ravel(), dx)
    assert abs(lhs - rhs) <= tol * (np.abs(no_bias).sum() + 1)

    dw0 = _randn(rng, w.size, dt)
    dw = dw0.copy()
    im2col.conv_backward_weight(x.ravel(), dy.ravel(), dw, col, part, *args)
    v = _randn(rng, w.shape, dt)
    conv_v = ref.convolution(x, v, None, 1, kernel, stride, pad, dilation, group)
    lhs = np.dot(conv_v.ravel(), dy.astype(np.float64).ravel())
    rhs = np.dot(v.astype(np.float64).ravel(), dw.astype(np.float64) - dw0)
    assert abs(lhs - rhs) <= tol * (np.abs(conv_v).sum() + 1)


@pytest.mark.parametrize("nchunks", [2, 3, 5])
def test_conv_drivers_do_not_depend_on_the_runs_much(nchunks):
    """Runs split the batch; only the order of the weight gradient's partial sums changes."""
    case = CONV_DRIVER_CASES[0]
    num, channels, num_output, group, shape, kernel, pad, stride, dilation, force_nd = case
    x, w, b, dy, geometry, out = _conv_case(_rng(24), np.float64, case)
    results = []
    for n in (1, nchunks):
        col, part = _workspaces(n, channels, kernel, out, w.size, np.float64)
        args = (num, channels, num_output, group, *geometry, force_nd, n)
        y, dx, dw = np.empty(dy.size), np.empty(x.size), np.zeros(w.size)
        im2col.conv_forward(x.ravel(), w.ravel(), b, y, col, *args)
        im2col.conv_backward_data(dy.ravel(), w.ravel(), b, dx, col, *args)
        im2col.conv_backward_weight(x.ravel(), dy.ravel(), dw, col, part, *args)
        results.append((y, dx, dw))
    for a, c in zip(*results):
        np.testing.assert_allclose(c, a, rtol=1e-13, atol=1e-13)


# (num, channels, shape, kernel, pad, stride, dilation)
DEPTHWISE_CASES = [
    (2, 3, (6, 7), (3, 3), (1, 1), (1, 1), (1, 1)),     # stride 1: the wide loops
    (3, 2, (7, 5), (3, 2), (0, 1), (2, 1), (1, 2)),     # stride on one axis: row loops
    (2, 2, (9, 8), (2, 3), (2, 1), (3, 2), (2, 1)),     # strides, dilation, wide padding
    (1, 4, (3, 3), (5, 4), (2, 2), (1, 1), (1, 1)),     # kernel larger than the image
]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("nchunks", [1, 2, 5])
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=lambda c: "-".join(map(str, c[2:])))
def test_depthwise_kernels_match_the_gemm_drivers(dt, nchunks, case):
    num, channels, shape, kernel, pad, stride, dilation = case
    full = (num, channels, channels, channels, shape, kernel, pad, stride, dilation, False)
    rng = _rng(25)
    x, w, b, dy, geometry, out = _conv_case(rng, dt, full)
    col, part = _workspaces(1, channels, kernel, out, w.size, dt)
    work = np.full(nchunks * im2col.depthwise_workspace(*geometry), np.nan, dt)
    gemm_args = (num, channels, channels, channels, *geometry, False, 1)
    direct_args = (num, channels, *geometry, nchunks)
    for bias in (b, np.zeros(0, dt)):
        y, z = np.full(dy.size, np.nan, dt), np.full(dy.size, np.nan, dt)
        im2col.conv_forward(x.ravel(), w.ravel(), bias, y, col, *gemm_args)
        im2col.depthwise_forward(x.ravel(), w.ravel(), bias, z, work, *direct_args)
        _close(z, y.astype(np.float64), dt, scale=10)
        dx, dz = np.full(x.size, np.nan, dt), np.full(x.size, np.nan, dt)
        im2col.conv_backward_data(dy.ravel(), w.ravel(), bias, dx, col, *gemm_args)
        im2col.depthwise_backward_data(dy.ravel(), w.ravel(), bias, dz, work, *direct_args)
        _close(dz, dx.astype(np.float64), dt, scale=10)
    dw0 = _randn(rng, w.size, dt)
    dw, dv = dw0.copy(), dw0.copy()
    im2col.conv_backward_weight(x.ravel(), dy.ravel(), dw, col, part, *gemm_args)
    im2col.depthwise_backward_weight(x.ravel(), dy.ravel(), dv, work, *direct_args)
    _close(dv, dw.astype(np.float64), dt, scale=10)


# =========================================================================== GPU vs CPU
CPU_MODS = {"blas": blas, "neuron": neuron, "common": common, "loss": loss, "solver": solver, "math": kmath,
            "im2col": im2col}
GPU_MODS = {"blas": gblas, "neuron": gneuron, "common": gcommon, "loss": gloss, "solver": gsolver, "math": gmath,
            "im2col": gim2col}


def _gemm_case(ta, tb, beta, m, n, k):
    def make(rng, dt):
        a = _randn(rng, (k, m) if ta else (m, k), dt)
        b = _randn(rng, (n, k) if tb else (k, n), dt)
        c = np.full((m, n), np.nan, dt) if beta == 0 else _randn(rng, (m, n), dt)
        return (ta, tb, 0.75, a, b, beta, c)
    return make


def _elementwise(n_in, n_out, *scalars, alias=None, mask=False, positive=False):
    """Builder for (inputs..., [mask], outputs..., scalars); alias=(i, j) reuses input i as output j."""
    def make(rng, dt):
        ins = [_randn(rng, 40, dt, lo=0.05 if positive else None) for _ in range(n_in)]
        outs = [np.full(40, np.nan, dt) for _ in range(n_out)]
        if alias is not None:
            outs[alias[1]] = ins[alias[0]]
        mid = [(rng.random(40) < 0.5).astype(np.uint8)] if mask else []
        return tuple(ins + mid + outs) + scalars
    return make


def _gemv_case(trans, beta, m, k):
    def make(rng, dt):
        a = _randn(rng, (k, m) if trans else (m, k), dt)
        y = np.full(m, np.nan, dt) if beta == 0 else _randn(rng, m, dt)
        return (trans, -0.5, a, _randn(rng, k, dt), beta, y)
    return make


def _channel_case(inplace, outer, channels, inner):
    def make(rng, dt):
        x = _randn(rng, outer * channels * inner, dt)
        return (x, _randn(rng, channels, dt), x if inplace else np.full_like(x, np.nan), outer, channels, inner)
    return make


def _channel_reduce_case(dot, beta, outer, channels, inner):
    def make(rng, dt):
        a = [_randn(rng, outer * channels * inner, dt) for _ in range(2 if dot else 1)]
        y = np.full(channels, np.nan, dt) if beta == 0 else _randn(rng, channels, dt)
        return (*a, beta, y, outer, channels, inner)
    return make


def _im2col_case(backward, case):
    def make(rng, dt):
        channels, height, width, kh, kw, ph, pw, sh, sw, dh, dw = case
        n_col = channels * kh * kw * _out(height, kh, ph, sh, dh) * _out(width, kw, pw, sw, dw)
        n_im = channels * height * width
        src = _randn(rng, n_col if backward else n_im, dt)
        return (src, *case, np.full(n_im if backward else n_col, np.nan, dt))
    return make


def _im2col_nd_case(backward, case):
    def make(rng, dt):
        channels, *geometry = case
        out = [_out(*g) for g in zip(*geometry)]
        n_col = channels * int(np.prod(geometry[1])) * int(np.prod(out))
        n_im = channels * int(np.prod(geometry[0]))
        src = _randn(rng, n_col if backward else n_im, dt)
        args = [np.array(g, dtype=np.int64) for g in geometry]
        return (src, channels, *args, np.full(n_im if backward else n_col, np.nan, dt))
    return make


def _with_zeros(make):
    def wrapped(rng, dt):
        args = make(rng, dt)
        args[0][::5] = 0
        return args
    return wrapped


GPU_CASES = [
    ("blas", "gemm", "nn_beta0", _gemm_case(False, False, 0.0, 5, 7, 3)),
    ("blas", "gemm", "tn_beta", _gemm_case(True, False, 0.5, 5, 7, 3)),
    ("blas", "gemm", "nt_beta", _gemm_case(False, True, -1.0, 4, 6, 5)),
    ("blas", "gemm", "tt_edges", _gemm_case(True, True, 0.5, 17, 3, 18)),
    ("blas", "axpy", "", lambda r, d: (0.5, _randn(r, 40, d), _randn(r, 40, d))),
    ("blas", "axpby", "", lambda r, d: (0.5, _randn(r, 40, d), -2.0, _randn(r, 40, d))),
    ("blas", "scale", "", lambda r, d: (-1.5, _randn(r, 40, d))),
    ("blas", "set_value", "", lambda r, d: (_randn(r, 40, d), 0.3)),
    ("blas", "copy", "", lambda r, d: (_randn(r, 40, d), np.zeros(40, d))),
    ("blas", "dot", "", _elementwise(2, 0)),
    ("blas", "asum", "", _elementwise(1, 0)),
    ("blas", "gemv", "n_beta0", _gemv_case(False, 0.0, 5, 37)),
    ("blas", "gemv", "t_beta", _gemv_case(True, 0.5, 6, 4)),
    ("blas", "gemv", "n_beta", _gemv_case(False, -1.0, 3, 2)),
    ("math", "add", "", _elementwise(2, 1)),
    ("math", "add", "alias", _elementwise(2, 1, alias=(1, 0))),
    ("math", "sub", "", _elementwise(2, 1)),
    ("math", "sub", "alias", _elementwise(2, 1, alias=(0, 0))),
    ("math", "mul", "alias", _elementwise(2, 1, alias=(0, 0))),
    ("math", "div", "", _elementwise(2, 1, positive=True)),
    ("math", "sqr", "alias", _elementwise(1, 1, alias=(0, 0))),
    ("math", "sqrt", "", _elementwise(1, 1, positive=True)),
    ("math", "powx", "", lambda r, d: (_randn(r, 40, d, lo=0.05), -1.5, np.full(40, np.nan, d))),
    ("math", "powx", "square", lambda r, d: (_randn(r, 40, d), 2.0, np.full(40, np.nan, d))),
    ("math", "exp", "", _elementwise(1, 1)),
    ("math", "log", "alias", _elementwise(1, 1, positive=True, alias=(0, 0))),
    ("math", "abs", "", _elementwise(1, 1)),
    ("math", "sign", "", _with_zeros(_elementwise(1, 1))),
    ("math", "add_scalar", "", lambda r, d: (0.375, _randn(r, 40, d))),
    ("math", "channel_scale", "", _channel_case(False, 2, 3, 5)),
    ("math", "channel_scale", "alias_fc", _channel_case(True, 6, 7, 1)),
    ("math", "channel_add", "fc", _channel_case(False, 6, 7, 1)),
    ("math", "channel_add", "alias", _channel_case(True, 2, 3, 5)),
    ("math", "channel_sum", "fc_beta0", _channel_reduce_case(False, 0.0, 9, 5, 1)),
    ("math", "channel_sum", "map_beta", _channel_reduce_case(False, 1.0, 3, 2, 70)),
    ("math", "channel_dot", "map_beta0", _channel_reduce_case(True, 0.0, 2, 3, 50)),
    ("math", "channel_dot", "fc_beta", _channel_reduce_case(True, 0.5, 7, 4, 1)),
    ("im2col", "im2col", "", _im2col_case(False, (2, 5, 4, 3, 2, 1, 0, 2, 1, 1, 2))),
    ("im2col", "im2col", "pad_dilate", _im2col_case(False, (1, 4, 5, 3, 3, 2, 2, 1, 2, 2, 1))),
    ("im2col", "col2im", "", _im2col_case(True, (2, 5, 4, 3, 2, 1, 0, 2, 1, 1, 2))),
    ("im2col", "col2im", "pad_dilate", _im2col_case(True, (1, 4, 5, 3, 3, 2, 2, 1, 2, 2, 1))),
    ("im2col", "im2col_nd", "3d", _im2col_nd_case(False, (1, (3, 4, 3), (2, 3, 1), (1, 0, 1), (1, 2, 2), (2, 1, 1)))),
    ("im2col", "col2im_nd", "3d", _im2col_nd_case(True, (1, (3, 4, 3), (2, 3, 1), (1, 0, 1), (1, 2, 2), (2, 1, 1)))),
    ("im2col", "col2im_nd", "1d", _im2col_nd_case(True, (2, (9,), (3,), (1,), (2,), (2,)))),
    ("solver", "sgd_update", "", _elementwise(3, 0, 0.01, 0.9)),
    ("solver", "l2_regularize", "", _elementwise(2, 0, 1e-3)),
    ("solver", "l1_regularize", "", _elementwise(2, 0, 1e-3)),
    ("solver", "nesterov_update", "", _elementwise(3, 0, 0.01, 0.9)),
    ("solver", "adagrad_update", "", _elementwise(3, 0, 0.01, 1e-8, positive=True)),
    ("solver", "rmsprop_update", "", _elementwise(3, 0, 0.01, 0.98, 1e-8, positive=True)),
    ("solver", "adadelta_update", "", _elementwise(4, 0, 1.0, 0.95, 1e-6, positive=True)),
    ("solver", "adam_update", "", _elementwise(4, 0, 0.001, 0.9, 0.999, 1e-8, 0.31, positive=True)),
]


# -- pooling: STOCHASTIC's TEST-phase kernels (the layer table's big examples run in TRAIN)
from jitnet.kernels.cpu import pooling  # noqa: E402
from jitnet.kernels.gpu import pooling as gpooling  # noqa: E402

CPU_MODS["pooling"], GPU_MODS["pooling"] = pooling, gpooling


def _stochastic_test_case(backward):
    def make(rng, dt):
        planes, height, width, kernel, stride = 3, 5, 4, 3, 2
        out = 2 * 2                                          # ceil((5 − 3)/2) + 1 × ceil((4 − 3)/2) + 1
        x = _randn(rng, planes * height * width, dt, lo=0.05)
        geometry = (planes, height, width, 2, 2, kernel, kernel, stride, stride)
        if backward:
            return (x, _randn(rng, planes * out, dt), *geometry, np.full(x.size, np.nan, dt))
        return (x, *geometry, np.full(planes * out, np.nan, dt))
    return make


GPU_CASES += [
    ("pooling", "stochastic_pool_forward_test", "", _stochastic_test_case(False)),
    ("pooling", "stochastic_pool_backward_test", "", _stochastic_test_case(True)),
]

def _run_gpu_parity(mod, name, make, dt):
    args = make(_rng(zlib.crc32(f"{mod}.{name}".encode())), dt)
    # same numpy object twice -> same (aliased) array on both sides
    cpu_map, dev_map = {}, {}
    cpu_args, dev_args = [], []
    for a in args:
        if isinstance(a, np.ndarray):
            if id(a) not in cpu_map:
                cpu_map[id(a)] = a.copy()
                dev_map[id(a)] = cuda.to_device(a)
            cpu_args.append(cpu_map[id(a)])
            dev_args.append(dev_map[id(a)])
        else:
            cpu_args.append(a)
            dev_args.append(a)
    cpu_ret = getattr(CPU_MODS[mod], name)(*cpu_args)
    gpu_ret = getattr(GPU_MODS[mod], name)(*dev_args)
    scale = 10.0 if name == "gemm" else 1.0
    for key, c in cpu_map.items():
        g = dev_map[key].copy_to_host()
        assert g.dtype == c.dtype
        np.testing.assert_allclose(g, c, rtol=RTOL[dt] * scale, atol=ATOL[dt] * scale, err_msg=name)
    if cpu_ret is None:
        assert gpu_ret is None
    else:
        cr = cpu_ret if isinstance(cpu_ret, tuple) else (cpu_ret,)
        gr = gpu_ret if isinstance(gpu_ret, tuple) else (gpu_ret,)
        assert len(cr) == len(gr)
        for c, g in zip(cr, gr):
            assert type(c) is type(g), (name, type(c), type(g))
            np.testing.assert_allclose(g, c, rtol=1e-12 if dt == np.float64 else 1e-6)


@pytest.mark.skipif(not cuda.is_available(), reason="no CUDA device and simulator disabled")
@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("mod,name,tag,make", GPU_CASES,
                         ids=[f"{m}.{n}{'-' + t if t else ''}" for m, n, t, _ in GPU_CASES])
def test_gpu_matches_cpu(mod, name, tag, make, dt):
    _run_gpu_parity(mod, name, make, dt)


# Every public GPU kernel is checked against its CPU twin either by a row above or through the
# layer cases: tests/test_layers.py::test_every_gpu_kernel_is_checked_against_its_cpu_twin.


def test_grid_stride_launcher_keeps_the_kernel_surface():
    import inspect

    from jitnet.kernels.gpu._launch import grid_stride
    f = gneuron.relu_forward
    assert f.__name__ == "relu_forward" and f.__module__ == gneuron.__name__
    assert list(inspect.signature(f).parameters) == ["x", "y", "negative_slope"]
    assert f.__doc__ == neuron.relu_forward.__doc__
    x = cuda.to_device(np.array([-2.0, 0.0, 3.0]))
    y = cuda.to_device(np.full(3, np.nan))
    f(x, y=y, negative_slope=0.5)                  # keywords bind as in a plain call
    np.testing.assert_array_equal(y.copy_to_host(), [-1.0, 0.0, 3.0])
    with pytest.raises(TypeError, match="no argument named"):
        grid_stride("z")(f.kernel)
    with pytest.raises(TypeError, match="no argument named"):
        grid_stride(lambda outer, n: outer * n)(gcommon.softmax_forward.kernel)


# =========================================================================== CPU: normalization, crop
from jitnet.kernels.cpu import crop as kcrop                  # noqa: E402  (this section's kernels)
from jitnet.kernels.cpu import normalization as knorm         # noqa: E402

# (outer, channels, inner): small; fully-connected (inner 1); conv maps past the 16k items where
# the kernels split their work (slices starting mid-row); one channel
NORM_SHAPES = [(3, 4, 5), (9, 6, 1), (2, 3, 9001), (20000, 3, 1), (4, 1, 5)]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_statistics(dt, shape):
    outer, channels, inner = shape
    rng = _rng(40)
    x = (_randn(rng, outer * channels * inner, np.float64) * 1.5 + 0.7).astype(dt)
    dy = _randn(rng, x.size, dt)
    x3, dy3 = _channel_ref(x, *shape), _channel_ref(dy, *shape)
    mean, var = np.full(channels, np.nan, dt), np.full(channels, np.nan, dt)
    knorm.batch_norm_moments(x, mean, var, outer, channels, inner)
    want_mean = x3.mean(axis=(0, 2))
    _close(mean, want_mean, dt, scale=10)
    _close(var, ((x3 - want_mean[None, :, None]) ** 2).mean(axis=(0, 2)), dt, scale=10)
    a, b = np.full(channels, np.nan, dt), np.full(channels, np.nan, dt)
    knorm.batch_norm_backward_sums(dy, x, a, b, outer, channels, inner)
    _close(a, dy3.mean(axis=(0, 2)), dt, scale=10)
    _close(b, (dy3 * x3).mean(axis=(0, 2)), dt, scale=10)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("alias", ["none", "y_is_x", "x_norm_is_y", "all"])
def test_batch_norm_elementwise(dt, shape, alias):
    outer, channels, inner = shape
    rng = _rng(41)
    x0, dy0 = _randn(rng, outer * channels * inner, dt), _randn(rng, outer * channels * inner, dt)
    mean, inv_std = _randn(rng, channels, dt), _randn(rng, channels, dt, lo=0.1)
    m3, s3 = mean.astype(np.float64)[None, :, None], inv_std.astype(np.float64)[None, :, None]
    want = (_channel_ref(x0, *shape) - m3) * s3
    x = x0.copy()
    y = x if alias in ("y_is_x", "all") else np.full_like(x, np.nan)
    x_norm = y if alias in ("x_norm_is_y", "all") else np.full_like(x, np.nan)
    knorm.batch_norm_forward(x, mean, inv_std, y, x_norm, outer, channels, inner)
    _close(y, want.ravel(), dt)
    _close(x_norm, want.ravel(), dt)
    a, b = _randn(rng, channels, dt), _randn(rng, channels, dt)
    xn = want.ravel().astype(dt)
    dy = dy0.copy()
    dx = dy if alias in ("y_is_x", "all") else np.full_like(dy, np.nan)
    knorm.batch_norm_backward(dy, xn, a, b, inv_std, dx, outer, channels, inner)
    a3, b3 = a.astype(np.float64)[None, :, None], b.astype(np.float64)[None, :, None]
    _close(dx, ((_channel_ref(dy0, *shape) - a3 - _channel_ref(xn, *shape) * b3) * s3).ravel(), dt, scale=10)


@pytest.mark.parametrize("center,spread", [(1e3, 1e-2), (3e4, 1e-3), (1e5, 1.0), (-2e4, 0.5)])
def test_batch_norm_moments_far_from_zero_keep_float32_precision(center, spread):
    """One pass, shifted by each channel's first value: no cancellation of E[x²] − E[x]²."""
    rng = _rng(42)
    x = (center + spread * rng.standard_normal((8, 3, 5000))).astype(np.float32)
    mean, var = np.zeros(3, np.float32), np.zeros(3, np.float32)
    knorm.batch_norm_moments(x.ravel(), mean, var, 8, 3, 5000)
    x64 = x.astype(np.float64)
    want_mean = x64.mean(axis=(0, 2))
    want_var = ((x64 - want_mean[None, :, None]) ** 2).mean(axis=(0, 2))
    np.testing.assert_allclose(mean, want_mean, rtol=1e-7)
    np.testing.assert_allclose(var, want_var, rtol=3e-7)


def test_batch_norm_statistics_do_not_depend_on_threads():
    outer, channels, inner = 2, 3, 9001
    rng = _rng(43)
    x, dy = rng.standard_normal(outer * channels * inner), rng.standard_normal(outer * channels * inner)
    results = []
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(t)
            out = [np.zeros(channels) for _ in range(4)]
            knorm.batch_norm_moments(x, out[0], out[1], outer, channels, inner)
            knorm.batch_norm_backward_sums(dy, x, out[2], out[3], outer, channels, inner)
            results.append(out)
    finally:
        numba.set_num_threads(threads)
    for out in results[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(out, results[0]))


# (x shape, y shape, offsets): an FCN score crop past the 16k items where the work is split; a
# window at the corner; 1-D; cropping axis 0 only; an empty window; no crop at all
CROP_CASES = [((2, 3, 40, 300), (2, 3, 20, 200), (0, 0, 7, 50)), ((3, 4, 5), (3, 2, 2), (0, 2, 3)),
              ((9,), (4,), (5,)), ((6, 2, 3), (2, 2, 3), (3, 0, 0)), ((2, 3, 4), (2, 0, 4), (0, 1, 0)),
              ((2, 3), (2, 3), (0, 0))]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("case", CROP_CASES, ids=lambda c: "x".join(map(str, c[0])) + "-" + "x".join(map(str, c[1])))
def test_crop(dt, case):
    x_shape, y_shape, offsets = (np.array(v, dtype=np.int64) for v in case)
    rng = _rng(44)
    x = _randn(rng, tuple(case[0]), dt)
    window = tuple(slice(o, o + n) for o, n in zip(case[2], case[1]))
    y = np.full(int(np.prod(case[1])), np.nan, dt)
    kcrop.crop_forward(x.ravel(), y, x_shape, y_shape, offsets)
    np.testing.assert_array_equal(y, x[window].ravel())
    dy = _randn(rng, tuple(case[1]), dt)
    dx = np.full(x.size, np.nan, dt)
    kcrop.crop_backward(dy.ravel(), dx, x_shape, y_shape, offsets)
    want = np.zeros_like(x)
    want[window] = dy
    np.testing.assert_array_equal(dx, want.ravel())


# =========================================================================== CPU: catalogue neurons and losses
# The layer cases draw small shapes, which the kernels run in one serial slice; these sizes
# take the parallel paths (several slices, slice edges inside a run of one slope for PReLU).
def _catalogue_reference():
    import reference
    return reference


_BIG_N = 5 * 8192 + 37


@pytest.mark.parametrize("dt", DTYPES)
def test_catalogue_neuron_kernels_in_several_slices(dt):
    ref = _catalogue_reference()
    rng = _rng(31)
    x = rng.uniform(-3.0, 3.0, _BIG_N).astype(dt)
    dy = rng.uniform(-1.0, 1.0, _BIG_N).astype(dt)
    x64 = x.astype(np.float64)
    y, dx, s = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    neuron.bnll_forward(x, y)
    _close(y, ref.bnll(x64), dt)
    neuron.bnll_backward(x, dy, dx)
    _close(dx, dy * (1.0 / (1.0 + np.exp(-x64))), dt)
    neuron.elu_forward(x, y, 0.75)
    _close(y, ref.elu(x64, 0.75), dt)
    neuron.swish_forward(x, s, y, 1.5)
    _close(y, ref.swish(x64, 1.5), dt)
    _close(s, ref.sigmoid(1.5 * x64), dt)
    neuron.clip_forward(x, y, -1.0, 2.0)
    _close(y, ref.clip(x64, -1.0, 2.0), dt)
    neuron.threshold_forward(x, y, 0.5)
    np.testing.assert_array_equal(y, x > 0.5)
    for power in (1.0, 2.0, 2.5):
        neuron.power_forward(x, y, power, 0.5, 2.0)
        _close(y, ref.power(x64, power, 0.5, 2.0), dt, scale=4)
        neuron.power_backward(x, y, dy, dx, power, 0.5, 2.0)
        _close(dx, dy * power * 0.5 * (2.0 + 0.5 * x64) ** (power - 1), dt, scale=4)
    neuron.log_backward(x, dy, dx, 0.5, 2.0, 0.25)
    _close(dx, dy * 0.25 / (2.0 + 0.5 * x64), dt, scale=4)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("outer,channels,inner", [(7, 5, 1234), (10, 4500, 1), (3, 1, 15000)])
def test_prelu_kernels_in_several_slices(dt, outer, channels, inner):
    rng = _rng(32)
    n = outer * channels * inner
    x = rng.uniform(-2.0, 2.0, n).astype(dt)
    dy = rng.uniform(-1.0, 1.0, n).astype(dt)
    slope = rng.uniform(-1.0, 1.0, channels).astype(dt)
    a = np.broadcast_to(slope.astype(np.float64)[None, :, None], (outer, channels, inner)).ravel()
    x64 = x.astype(np.float64)
    y, dx, terms = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    neuron.prelu_forward(x, slope, y, channels, inner)
    _close(y, np.where(x64 > 0, x64, a * x64), dt)
    neuron.prelu_backward(x, dy, slope, dx, channels, inner)
    _close(dx, np.where(x64 > 0, dy, a * dy), dt)
    neuron.prelu_slope_terms(x, dy, terms)
    _close(terms, np.where(x64 <= 0, dy * x64, 0.0), dt)


@pytest.mark.parametrize("dt", DTYPES)
def test_catalogue_loss_kernels_in_several_chunks(dt):
    ref = _catalogue_reference()
    rng = _rng(33)
    num, dim = 3000, 4                       # 3000 positions: _sums runs 11 chunks
    prob = rng.uniform(0.0, 1.0, (num, dim)).astype(dt)
    prob[:3] = 0.0
    labels = rng.integers(0, dim, num).astype(dt)
    got, bad = loss.multinomial_logistic_loss_forward(prob.ravel(), labels, num, dim)
    assert bad == 0
    assert got / num == pytest.approx(float(ref.multinomial_logistic_loss(prob, labels)), rel=1e-5)
    h = rng.uniform(0.0, 2.0, (dim, dim)).astype(dt)
    p = ref.softmax(rng.normal(size=(num, dim)), 1).astype(dt)
    got, valid, bad = loss.infogain_loss_forward(p.ravel(), labels, h.ravel(), num, dim, 1, False, 0)
    want = 0.0
    for row, label in zip(p.astype(np.float64), labels.astype(int)):
        want -= float(h[label].astype(np.float64) @ np.log(np.maximum(row, 1e-20)))
    assert (valid, bad) == (num, 0) and got == pytest.approx(want, rel=1e-5)
    x = rng.normal(scale=3.0, size=num * dim).astype(dt)
    t = rng.uniform(0.0, 1.0, num * dim).astype(dt)
    got, valid, bad = loss.sigmoid_cross_entropy_loss_forward(x, t, False, 0)
    want = ref.sigmoid_cross_entropy_loss(x.reshape(num, dim), t.reshape(num, dim), None, "NONE")
    assert (valid, bad) == (num * dim, 0) and got == pytest.approx(float(want), rel=1e-5)
