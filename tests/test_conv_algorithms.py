"""The Convolution layer's CPU algorithms other than Caffe's im2col + GEMM ("hwc", "implicit",
"winograd"; tests/layer_cases.py checks the default path): each one forced on a layer, forward
against the numpy reference, gradients by central differences in float64 on drawn shapes
(Convolution and Deconvolution), the drivers split into several runs against one run, float32
against float64 within the documented tolerance, and the GPU twins against the CPU drivers
under the simulator. Which algorithm the layer picks is a measurement (no test asserts it)."""
import json

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jitnet
from jitnet.kernels.cpu import im2col as K
from jitnet.kernels.gpu import im2col as GK
from jitnet.layers import vision
from jitnet.proto import pb
from jitnet.testing import check_gradients, forward_layer

import reference as ref

ALGORITHMS = ("hwc", "implicit", "winograd")


def _lp(type_name, num_output, kernel, stride, pad, dilation, group, bias):
    lp = pb.LayerParameter(name="conv", type=type_name, bottom=["x"], top=["y"])
    p = lp.convolution_param
    p.num_output, p.group, p.bias_term = num_output, group, bias
    p.kernel_size.append(kernel)
    p.stride.append(stride)
    p.pad.append(pad)
    p.dilation.append(dilation)
    return lp


@st.composite
def convolutions(draw, algorithm):
    """(lp arguments, input shape) that ``algorithm`` can run: winograd a 3 × 3 or 5 × 5 kernel
    with stride 1, no dilation and pad < kernel; implicit stride 1; hwc anything 2-D."""
    group = draw(st.sampled_from([1, 1, 2]))
    channels = group * draw(st.integers(1, 3))
    num_output = group * draw(st.integers(1, 3))
    if channels == num_output == group:
        num_output += group                 # not depthwise (the direct kernels' case)
    if algorithm == "winograd":
        kernel = draw(st.sampled_from([3, 5]))
        stride, dilation = 1, 1
        pad = draw(st.integers(0, kernel - 1))
    else:
        kernel = draw(st.integers(1, 3))
        stride = 1 if algorithm == "implicit" else draw(st.integers(1, 2))
        dilation = draw(st.integers(1, 2))
        pad = draw(st.integers(0, 2))
    extent = dilation * (kernel - 1) + 1
    low = max(1, extent - 2 * pad)
    h, w = draw(st.integers(low, low + 5)), draw(st.integers(low, low + 5))
    num = draw(st.integers(1, 3))
    bias = draw(st.booleans())
    return (num_output, kernel, stride, pad, dilation, group, bias), (num, channels, h, w)


def _runs(algorithm):
    """A prepare hook asserting that the layer runs every pass with ``algorithm``."""
    def prepare(layer, bottom, top):
        assert set(layer.algorithms.values()) == {algorithm}, layer.algorithms
    return prepare


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_forward_matches_the_reference(algorithm, data):
    args, shape = data.draw(convolutions(algorithm))
    num_output, kernel, stride, pad, dilation, group, bias = args
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape)
    w = rng.standard_normal((num_output, shape[1] // group, kernel, kernel))
    b = rng.standard_normal(num_output)
    params = [w, b] if bias else [w]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vision, "CONV_ALGORITHM", algorithm)
        y = forward_layer(_lp("Convolution", *args), [x], params=params,
                          prepare=_runs(algorithm))[0]
    expected = ref.convolution(x, w, b if bias else None, 1, (kernel,) * 2, (stride,) * 2,
                               (pad,) * 2, (dilation,) * 2, group)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("type_name", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_gradients(algorithm, type_name, data):
    args, shape = data.draw(convolutions(algorithm))
    num_output, kernel, stride, pad, dilation, group, bias = args
    if type_name == "Deconvolution":
        # the convolution's output is the deconvolution's bottom, its input the top
        out = [ref.conv_output_size(s, kernel, pad, stride, dilation) for s in shape[2:]]
        # ... which is not the inverse when the stride does not divide: the deconvolution of
        # that bottom must still have an output (input 1, kernel 2, pad 1, stride 2 has none)
        assume(all(ref.deconv_output_size(o, kernel, pad, stride, dilation) >= 1 for o in out))
        shape, num_output = (shape[0], num_output) + tuple(out), shape[1]
        wshape = (shape[1], num_output // group, kernel, kernel)
    else:
        wshape = (num_output, shape[1] // group, kernel, kernel)
    lp = _lp(type_name, num_output, kernel, stride, pad, dilation, group, bias)
    rng = np.random.default_rng(sum(shape) + kernel)
    params = [rng.standard_normal(wshape)] + ([rng.standard_normal(num_output)] if bias else [])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(vision, "CONV_ALGORITHM", algorithm)
        check_gradients(lp, [rng.standard_normal(shape)], params=params, prepare=_runs(algorithm))


def _geometry(h, w, r, pad, stride=1, dilation=1):
    return tuple(np.array(v, dtype=np.int64)
                 for v in ((h, w), (r, r), (pad, pad), (stride, stride), (dilation, dilation)))


def _passes(module, name, dtype, num, channels, num_output, group, geom, nchunks, seed=0,
            magnitude=False):
    """(y, dx, dw) of the driver ``name``: forward with bias, backward data, backward weight
    accumulated onto ones (magnitude: of |x|, |w| and |dy|, with no bias and dw from zero, which
    gives each output's Σ|w·x|)."""
    rng = np.random.default_rng(seed)
    h, w = geom[0]
    r = geom[1][0]
    oh, ow = [ref.conv_output_size(s, r, geom[2][0], geom[3][0], geom[4][0]) for s in (h, w)]
    x = rng.standard_normal(num * channels * h * w).astype(dtype)
    wt = rng.standard_normal(num_output * (channels // group) * r * r).astype(dtype)
    b = rng.standard_normal(num_output).astype(dtype)
    dy = rng.standard_normal(num * num_output * oh * ow).astype(dtype)
    if name == "im2col":                  # Caffe's drivers: conv_*, a col workspace, force_nd
        work = np.zeros(nchunks * channels * r * r * oh * ow, dtype)
        part = np.zeros(2 * nchunks * wt.size, dtype)
        drivers = [lambda *a: module.conv_forward(*a[:-1], False, a[-1]),
                   lambda *a: module.conv_backward_data(*a[:-1], False, a[-1]),
                   lambda x, dy, dw, col, *a: module.conv_backward_weight(
                       x, dy, dw, col, part, *a[:-1], False, a[-1])]
    else:
        work = np.zeros(getattr(module, name + "_workspace")(channels, num_output, group, *geom,
                                                              nchunks), dtype)
        drivers = [getattr(module, f"{name}_{part}")
                   for part in ("forward", "backward_data", "backward_weight")]
    y = np.zeros(num * num_output * oh * ow, dtype)
    dx = np.zeros(num * channels * h * w, dtype)
    dw = np.ones(wt.size, dtype)
    if magnitude:
        x, wt, dy, b, dw = np.abs(x), np.abs(wt), np.abs(dy), b[:0], dw * 0
    args = (num, channels, num_output, group, *geom, nchunks)
    drivers[0](x, wt, b, y, work, *args)
    drivers[1](dy, wt, b[:0], dx, work, *args)
    drivers[2](x, dy, dw, work, *args)
    return y, dx, dw


CASES = [  # num, channels, num_output, group, h, w, r, pad
    (3, 4, 6, 2, 9, 7, 5, 2),
    (5, 3, 5, 1, 11, 8, 5, 0),
    (4, 2, 3, 1, 10, 9, 3, 1),
    (2, 4, 4, 2, 3, 3, 3, 2),
]


@pytest.mark.parametrize("name", ALGORITHMS)
@pytest.mark.parametrize("case", CASES)
def test_runs_split_like_one_run(name, case):
    """nchunks runs (prange, each with its own workspace slice) give one run's numbers up to
    the order of the weight gradient's sums."""
    num, channels, num_output, group, h, w, r, pad = case
    geom = _geometry(h, w, r, pad)
    one = _passes(K, name, np.float64, num, channels, num_output, group, geom, 1)
    for nchunks in (2, 3):
        for a, b in zip(_passes(K, name, np.float64, num, channels, num_output, group, geom, nchunks),
                        one):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ALGORITHMS)
@pytest.mark.parametrize("case", CASES[:2])
def test_float32_within_the_documented_tolerance(name, case):
    """float32 against float64 of the same driver, relative to Σ|w·x| bounds: Winograd's
    transforms cost accuracy (kernels/cpu/im2col.py documents 5·10⁻⁷ and 3·10⁻⁷ of Σ|w·x|);
    allow 4·10⁻⁶ of the output's scale here, which im2col itself meets with a margin."""
    num, channels, num_output, group, h, w, r, pad = case
    geom = _geometry(h, w, r, pad)
    f64 = _passes(K, name, np.float64, num, channels, num_output, group, geom, 2)
    f32 = _passes(K, name, np.float32, num, channels, num_output, group, geom, 2)
    for a, b in zip(f32, f64):
        scale = np.abs(b).max()
        assert np.abs(a - b).max() <= 4e-6 * scale * r


@pytest.mark.parametrize("name, r, bound", [("winograd", 3, 3e-6), ("winograd", 5, 6e-6),
                                             ("im2col", 3, 4.5e-7), ("im2col", 5, 4.5e-7)])
def test_float32_error_against_the_sum_of_magnitudes(name, r, bound):
    """Each float32 output of every pass against float64, relative to Σ|w·x| at that output
    (the same pass on |x|, |w|, |dy|): kernels/cpu/im2col.py documents up to about 2·10⁻⁶
    (F(4×4, 3×3)), 4·10⁻⁶ (F(4×4, 5×5)) and 3·10⁻⁷ (im2col) over 32 input channels; the
    bounds allow 1.5x. A transform that loses precision (F(6×6, 3×3) is about 5x worse than
    F(4×4, 3×3)) or a wrong coefficient fails."""
    num, channels, num_output, h = 4, 32, 16, 12
    geom = _geometry(h, h, r, r // 2)
    f32, f64, sums = (_passes(K, name, dtype, num, channels, num_output, 1, geom, 2, seed=5,
                              magnitude=magnitude)
                      for dtype, magnitude in ((np.float32, False), (np.float64, False),
                                               (np.float64, True)))
    for got, want, total in zip(f32, f64, sums):
        assert np.all(np.abs(got - want) <= bound * total), np.max(np.abs(got - want) / total)


# the GPU kernels test_gpu_twins_match_the_cpu_drivers runs against their CPU twins (counted by
# tests/test_layers.py::test_every_gpu_kernel_is_checked_against_its_cpu_twin)
GPU_CHECKED = {("jitnet.kernels.gpu.im2col", f"{name}_{part}") for name in ALGORITHMS
               for part in ("forward", "backward_data", "backward_weight", "workspace")}
GPU_CHECKED.add(("jitnet.kernels.gpu.im2col", "winograd_tile"))


@pytest.mark.parametrize("name", ALGORITHMS)
def test_gpu_twins_match_the_cpu_drivers(name):
    """The GPU module's drivers of the same name (its im2col drivers) give the CPU's numbers."""
    from numba import cuda
    if name == "winograd":
        assert [GK.winograd_tile(r) for r in range(8)] == [K.winograd_tile(r) for r in range(8)]
    num, channels, num_output, group, h, w, r, pad = (2, 2, 2, 1, 4, 4, 3, 1)
    geom = _geometry(h, w, r, pad)
    cpu = _passes(K, name, np.float64, num, channels, num_output, group, geom, 1)
    rng = np.random.default_rng(0)
    oh, ow = h + 2 * pad - r + 1, w + 2 * pad - r + 1
    x = rng.standard_normal(num * channels * h * w)
    wt = rng.standard_normal(num_output * (channels // group) * r * r)
    b = rng.standard_normal(num_output)
    dy = rng.standard_normal(num * num_output * oh * ow)
    work = cuda.to_device(np.zeros(getattr(GK, name + "_workspace")(channels, num_output, group,
                                                                   *geom, 1)))
    d = {k: cuda.to_device(v) for k, v in dict(x=x, w=wt, b=b, dy=dy, b0=b[:0],
                                               y=np.zeros(num * num_output * oh * ow),
                                               dx=np.zeros(x.size), dw=np.ones(wt.size)).items()}
    args = (num, channels, num_output, group, *geom, 1)
    getattr(GK, name + "_forward")(d["x"], d["w"], d["b"], d["y"], work, *args)
    getattr(GK, name + "_backward_data")(d["dy"], d["w"], d["b0"], d["dx"], work, *args)
    getattr(GK, name + "_backward_weight")(d["x"], d["dy"], d["dw"], work, *args)
    for got, want in zip((d["y"], d["dx"], d["dw"]), cpu):
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-10, atol=1e-10)


def test_measured_choices_are_kept_for_the_next_process(tmp_path, monkeypatch):
    """The algorithm measured per pass is written to NUMBA_CACHE_DIR (beside the compiled
    kernels) and read back by a fresh process instead of measuring; a file for another
    machine or another version of the drivers is ignored."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(vision, "_MEASURE_WORK", 0)
    monkeypatch.setattr(vision, "MEASURE_AFTER", 0.0)
    monkeypatch.setattr(vision, "CONV_ALGORITHM", None)
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6))
    lp = _lp("Convolution", 4, 3, 1, 1, 1, 1, True)

    def fresh_process():
        monkeypatch.setattr(vision, "_CHOSEN", {})
        monkeypatch.setattr(vision, "_MEASURED", {})
        monkeypatch.setattr(vision, "_WAITED", {})
        monkeypatch.setattr(vision, "_loaded_from", None)

    fresh_process()
    check_gradients(lp, [x], params=[np.ones((4, 3, 3, 3)), np.ones(4)])
    measured = dict(vision._CHOSEN)
    assert {key[0] for key in measured} == set(vision._LearnedConvolution.PASSES)
    path = tmp_path / vision._CHOICES_FILE
    assert path.exists()

    fresh_process()
    calls = []
    real = vision._LearnedConvolution._measure
    monkeypatch.setattr(vision._LearnedConvolution, "_measure",
                        lambda self, *a: calls.append(a[1]) or real(self, *a))
    forward_layer(lp, [x])
    assert calls == [] and vision._CHOSEN == measured

    fresh_process()
    kept = json.loads(path.read_text())
    kept["stamp"][-1] += 1                   # the drivers' file changed since
    path.write_text(json.dumps(kept))
    forward_layer(lp, [x])
    assert calls == ["forward"]


def test_the_algorithms_are_measured_only_once_im2col_has_run_long_enough(tmp_path, monkeypatch):
    """With no choice kept from an earlier process, a pass runs Caffe's im2col (its first call,
    which compiles, not counted) until it has spent MEASURE_AFTER seconds, and only then
    measures the candidates: a short run never compiles them (about 40 s on an empty numba
    cache). A clock that moves 1 s per call makes the budget exact."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(vision, "_MEASURE_WORK", 0)
    monkeypatch.setattr(vision, "MEASURE_AFTER", 2.5)
    monkeypatch.setattr(vision, "CONV_ALGORITHM", None)
    for name in ("_CHOSEN", "_MEASURED", "_WAITED"):
        monkeypatch.setattr(vision, name, {})
    monkeypatch.setattr(vision, "_loaded_from", None)
    ran, measured = [], []
    real_run, real_measure = vision._LearnedConvolution._run, vision._LearnedConvolution._measure
    monkeypatch.setattr(vision._LearnedConvolution, "_run",
                        lambda self, K, name, p, *a: ran.append((p, name)) or real_run(self, K, name, p, *a))
    monkeypatch.setattr(vision._LearnedConvolution, "_measure",
                        lambda self, K, p, *a: measured.append(p) or real_measure(self, K, p, *a))
    ticks = iter(range(1000))
    monkeypatch.setattr(vision, "_clock", lambda: float(next(ticks)))
    lp = _lp("Convolution", 4, 3, 1, 1, 1, 1, True)
    param = pb.NetParameter(name="one_conv")
    param.layer.add(name="x", type="Input", top=["x"]).input_param.shape.add().dim.extend([2, 3, 7, 6])
    param.layer.add().CopyFrom(lp)
    net = jitnet.Net(param, jitnet.TEST)
    layer = net.layer_dict[lp.name]
    # calls 1 (compiles: 0 s), 2, 3 (1 s each: 2 s) and 4 (3 s) run im2col; call 5 measures
    for call in range(1, 6):
        net.forward()
        forwards = [name for p, name in ran if p == "forward"]
        if call < 5:
            assert measured == [] and set(forwards) == {"im2col"}, (call, ran)
            assert layer.algorithms["forward"] is None
        ran.clear()
    assert measured == ["forward"]
    assert layer.algorithms["forward"] in layer.candidates()
    assert (tmp_path / vision._CHOICES_FILE).exists()
