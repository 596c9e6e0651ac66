"""Layer tests, driven by the table in tests/layer_cases.py.

For every registered type: the forward against a numpy oracle (float64 and float32),
leaving its bottoms as they were; the backward against finite differences (float64,
jitnet.testing.check_gradients); GPU-mode results against CPU-mode results (under numba's
CUDA simulator unless a GPU is present), which together with the kernel tests' GPU_CASES
reach every public GPU kernel; in-place runs against out-of-place runs for the layers that
declare they may run in place (and the planner refusing the others); bad parameters and
degenerate bottoms (0-D, 1-D, zero-sized) ending in a LayerError naming the layer.
Examples are drawn by hypothesis; the number comes from the profile loaded in
conftest.py. Behaviour that does not fit the table (Dropout's statistics, error
messages, loss weights, propagate_down) is tested at the end, followed by tests of the
testing toolkit itself (it must be able to fail).
"""
import contextlib
import importlib
import inspect
from dataclasses import replace
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import jitnet
from jitnet import planner
from jitnet.layer import create_layer, layer_class
from jitnet.proto import pb
from jitnet.testing import (GradientCheckError, KinkError, check_gradients, forward_layer,
                            run_layer_on)
from jitnet.testing import strategies as jst

from layer_cases import CASES_BY_TYPE, LAYER_CASES, TEST_NAMES

CPU_EXAMPLES = settings().max_examples
GPU_EXAMPLES = max(2, CPU_EXAMPLES // 4)

DTYPES = {"float64": np.float64, "float32": np.float32}
FORWARD_TOL = {np.float64: (1e-10, 1e-12), np.float32: (1e-5, 1e-6)}
PARITY_TOL = {np.float64: (1e-10, 1e-12), np.float32: (1e-5, 1e-6)}


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("layer_cases")


def _cases(test, keep=lambda case: True, dtypes=None):
    """pytest params over the table (× dtypes), carrying each row's marks for ``test``
    (None: a test outside the table's columns, no marks)."""
    params = []
    for case in LAYER_CASES:
        if not keep(case):
            continue
        if dtypes is None:
            marks = case.marks_for(test) if test else ()
            params.append(pytest.param(case, id=case.type, marks=marks))
        else:
            for name in dtypes:
                marks = tuple(case.marks_for(test)) + tuple(case.marks.get(f"{test}[{name}]", ()))
                params.append(pytest.param(case, DTYPES[name], id=f"{case.type}-{name}",
                                           marks=marks))
    return params


def _cast(sample, dtype):
    """The sample with bottoms and params in ``dtype``: the reference sees exactly the inputs
    the layer sees."""
    return replace(sample, bottoms=[np.asarray(b, dtype) for b in sample.bottoms],
                   params=None if sample.params is None
                   else [np.asarray(p, dtype) for p in sample.params])


def _lp(type_name, bottoms=("x",), tops=("y",), name=None):
    return pb.LayerParameter(name=name or f"{type_name.lower()}_under_test", type=type_name,
                             bottom=list(bottoms), top=list(tops))


def _layer(lp, bottoms, phase=jitnet.TRAIN, dtype=np.float64, loss_weights=None):
    bottom = []
    for a in bottoms:
        blob = jitnet.Blob(np.shape(a), dtype=dtype)
        blob.data[...] = a
        bottom.append(blob)
    top = [jitnet.Blob(dtype=dtype) for _ in lp.top]
    layer = create_layer(lp, phase)
    layer.setup_layer(bottom, top, loss_weights)
    return layer, bottom, top


# =========================================================================== the table itself
def test_every_registered_layer_has_a_case():
    table = [case.type for case in LAYER_CASES]
    assert len(table) == len(set(table)), "a type has two rows"
    registered = set(jitnet.layer_type_list())
    assert registered == set(table), (f"registered without a case: {registered - set(table)}; "
                                      f"cases of unknown types: {set(table) - registered}")


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: c.type)
def test_case_rows_are_complete(case):
    assert case.reference is not None or case.reference_note, "no reference and no reason given"
    for key in case.marks:
        assert key.split("[")[0] in TEST_NAMES, f"marks key {key!r} names no test"
    cls = jitnet.layer.layer_class(case.type)
    for i in case.grad_bottoms:
        assert i not in cls.no_gradient_bottoms
    ids = [error_id for error_id, _, _ in (case.errors() if case.errors else [])]
    assert len(ids) == len(set(ids)), "two error examples share an id"


# =========================================================================== forward vs oracle
@pytest.mark.parametrize("case,dtype", _cases("forward", lambda c: c.reference is not None,
                                              dtypes=DTYPES))
@given(data=st.data())
def test_forward_matches_reference(case, dtype, workdir, data):
    sample = _cast(data.draw(case.samples("forward", workdir), label="sample"), dtype)
    run = run_layer_on("cpu", sample.layer_param, sample.bottoms, phase=sample.phase, dtype=dtype,
                       params=sample.params, prepare=sample.prepare, backward=False)
    expected = case.reference(sample)
    rtol, atol = (case.forward_tol or {}).get(dtype, FORWARD_TOL[dtype])
    for i, (before, after) in enumerate(zip(sample.bottoms, run.bottoms)):
        np.testing.assert_array_equal(after, before, err_msg=f"forward changed bottom {i}")
    assert len(run.tops) == len(expected)
    for k, (got, want) in enumerate(zip(run.tops, expected)):
        assert got.dtype == np.dtype(dtype), f"top {k}"
        assert got.shape == np.shape(want), f"top {k}: shape {got.shape}, expected {np.shape(want)}"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=f"top {k}")


# =========================================================================== gradients
@pytest.mark.parametrize("case", _cases("gradients", lambda c: c.differentiable))
@given(data=st.data())
def test_gradients(case, workdir, data):
    sample = data.draw(case.samples("gradient", workdir), label="sample")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    try:
        report = check_gradients(sample.layer_param, sample.bottoms, phase=sample.phase,
                                 check_bottoms=case.grad_bottoms, check_params=case.check_params,
                                 check_tops=sample.check_tops, params=sample.params,
                                 prepare=sample.prepare, seed=seed, rtol=case.grad_tol[0],
                                 atol=case.grad_tol[1])
    except KinkError:
        assume(False)
    assert [r.name for r in report.inputs] == (
        [f"bottom {i}" for i in case.grad_bottoms]
        + [f"param {j}" for j in range(len(sample.params or []))] * case.check_params)


# =========================================================================== GPU vs CPU
class _RecordingKernels:
    """A kernel module that records the name of every public function called through it."""

    def __init__(self, module, called):
        self._module, self._called = module, called

    def __getattr__(self, name):
        value = getattr(self._module, name)
        if name.startswith("_") or not callable(value):
            return value

        def call(*args, **kwargs):
            self._called.add((self._module.__name__, name))
            return value(*args, **kwargs)
        return call


@contextlib.contextmanager
def _kernel_requests(called=None):
    """Record the (device, family) of every kernel module a layer asks for (Layer.kernels),
    and in ``called`` the (module, function) of every kernel it calls."""
    requested = set()
    called = set() if called is None else called
    original = jitnet.common.kernels

    def recording(family, device=None):
        requested.add((device or jitnet.mode(), family))
        return _RecordingKernels(original(family, device), called)
    with mock.patch.object(jitnet.common, "kernels", recording):
        yield requested


@pytest.mark.parametrize("case,dtype", _cases("gpu", dtypes=DTYPES))
@settings(max_examples=GPU_EXAMPLES)
@given(data=st.data())
def test_gpu_matches_cpu(case, dtype, workdir, data):
    sample = _cast(data.draw(case.samples("parity", workdir), label="sample"), dtype)
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    propagate = sample.propagate_down or tuple(i in case.grad_bottoms
                                               for i in range(len(sample.bottoms)))
    kwargs = dict(phase=sample.phase, dtype=dtype, params=sample.params, prepare=sample.prepare,
                  propagate_down=propagate, seed=seed)
    cpu = run_layer_on("cpu", sample.layer_param, sample.bottoms, **kwargs)
    with _kernel_requests() as requested:
        gpu = run_layer_on("gpu", sample.layer_param, sample.bottoms, **kwargs)
    assert jitnet.mode() == "cpu", "run_layer_on did not restore the mode"
    assert gpu.layer.device == ("cpu" if gpu.layer.host_only else "gpu") and cpu.layer.device == "cpu"
    assert all(device == "gpu" for device, _ in requested), f"CPU kernels in GPU mode: {requested}"
    assert bool(requested) == case.gpu_kernels, f"kernel families asked for: {requested}"
    rtol, atol = PARITY_TOL[dtype]
    pairs = ([(f"top {k}", c, g) for k, (c, g) in enumerate(zip(cpu.tops, gpu.tops))]
             + [(f"bottom {i} diff", c, g)
                for i, (c, g) in enumerate(zip(cpu.bottom_diffs, gpu.bottom_diffs)) if c is not None]
             + [(f"param {j} diff", c, g)
                for j, (c, g) in enumerate(zip(cpu.param_diffs, gpu.param_diffs))])
    assert len(cpu.tops) == len(gpu.tops) == len(sample.layer_param.top)
    for what, c, g in pairs:
        assert g.dtype == np.dtype(dtype) and g.shape == c.shape, what
        np.testing.assert_allclose(g, c, rtol=rtol, atol=atol, err_msg=what)
    np.testing.assert_allclose(gpu.loss, cpu.loss, rtol=rtol, atol=atol)


def _big_params():
    return [pytest.param(case, k, id=big.id or case.type)
            for case in LAYER_CASES if case.big for k, big in enumerate(case.big())]


@pytest.fixture(scope="module")
def big_runs():
    """CPU and GPU runs of every ``big`` example of the table (float32), and the GPU kernel
    functions they called."""
    runs, called = {}, set()
    for case in LAYER_CASES:
        for k, big in enumerate(case.big() if case.big else []):
            kwargs = dict(dtype=np.float32, params=big.params, propagate_down=big.propagate_down, seed=5)
            cpu = run_layer_on("cpu", big.layer_param, big.bottoms, **kwargs)
            with _kernel_requests(called):
                gpu = run_layer_on("gpu", big.layer_param, big.bottoms, **kwargs)
            runs[case.type, k] = (cpu, gpu)
    return runs, called


@pytest.mark.parametrize("case,k", _big_params())
def test_gpu_matches_cpu_beyond_one_block(case, k, big_runs):
    """Inputs past one thread block (256 threads), one reduction block and one 16×16 GEMM
    tile, which the tiny hypothesis shapes above never reach."""
    cpu, gpu = big_runs[0][case.type, k]
    for what, c, g in ([("top", c, g) for c, g in zip(cpu.tops, gpu.tops)]
                       + [("bottom diff", c, g) for c, g in zip(cpu.bottom_diffs, gpu.bottom_diffs)
                          if c is not None]
                       + [("param diff", c, g) for c, g in zip(cpu.param_diffs, gpu.param_diffs)]):
        np.testing.assert_allclose(g, c, rtol=1e-5, atol=1e-5, err_msg=what)


def _public_gpu_kernels():
    """(module, name) of every public function of kernels/gpu/<family>.py."""
    import jitnet.kernels.gpu as gpu_package
    folder = inspect.getfile(gpu_package).rsplit("/", 1)[0]
    import os
    found = set()
    for file in sorted(os.listdir(folder)):
        if file.endswith(".py") and not file.startswith("_"):
            module = importlib.import_module(f"jitnet.kernels.gpu.{file[:-3]}")
            for name, obj in vars(module).items():
                func = getattr(obj, "py_func", obj)
                if (not name.startswith("_") and inspect.isfunction(func)
                        and func.__module__ == module.__name__):
                    found.add((module.__name__, name))
    return found


def test_every_gpu_kernel_is_checked_against_its_cpu_twin(big_runs):
    """Each public GPU kernel runs against its CPU twin through a layer case (the big
    examples here; the drawn ones reach the same kernels) or a row of GPU_CASES in
    test_kernels.py (BLAS and solver kernels, and vocabulary no layer uses yet), or
    test_conv_algorithms.py (the convolution's hwc, implicit and winograd drivers)."""
    from test_conv_algorithms import GPU_CHECKED
    from test_kernels import GPU_CASES
    through_layers = big_runs[1]
    through_kernel_tests = {(f"jitnet.kernels.gpu.{family}", name) for family, name, *_ in GPU_CASES}
    through_kernel_tests |= GPU_CHECKED       # the convolution's other algorithms' drivers
    missing = _public_gpu_kernels() - through_layers - through_kernel_tests
    assert not missing, f"GPU kernels no parity test reaches: {sorted(missing)}"


# =========================================================================== behaviour
@given(x=jst.arrays(jst.shapes(max_size=60)), ratio=st.floats(0.0, 0.9375, width=32))
def test_dropout_test_phase_is_identity(x, ratio):
    lp = _lp("Dropout")
    lp.dropout_param.dropout_ratio = ratio
    (y,) = forward_layer(lp, [x], phase=jitnet.TEST)
    np.testing.assert_array_equal(y, x)
    dy = 1.5 - 2.0 * x
    run = run_layer_on("cpu", lp, [x], phase=jitnet.TEST, propagate_down=[True], top_diffs=[dy])
    np.testing.assert_array_equal(run.bottom_diffs[0], dy)


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.8])
def test_dropout_train_drops_a_fraction_and_rescales(ratio):
    n = 20000
    x = np.random.default_rng(3).uniform(1.0, 2.0, n)     # no zeros: a zero in y is a drop
    lp = _lp("Dropout")
    lp.dropout_param.dropout_ratio = ratio
    p = lp.dropout_param.dropout_ratio                    # as stored (float32)
    dy = np.random.default_rng(4).uniform(1.0, 2.0, n)
    run = run_layer_on("cpu", lp, [x], phase=jitnet.TRAIN, seed=11, propagate_down=[True],
                       top_diffs=[dy])
    y, dx = run.tops[0], run.bottom_diffs[0]
    dropped = y == 0
    # binomial: E = n·p, std = sqrt(n·p·(1−p)); 5 std leaves a false alarm < 1e-6
    assert abs(dropped.sum() - n * p) <= 5 * np.sqrt(n * p * (1 - p))
    np.testing.assert_allclose(y[~dropped], x[~dropped] / (1 - p), rtol=1e-12)
    # backward uses the same mask and scale
    assert np.all(dx[dropped] == 0)
    np.testing.assert_allclose(dx[~dropped], dy[~dropped] / (1 - p), rtol=1e-12)
    # the seed decides the mask
    again = run_layer_on("cpu", lp, [x], phase=jitnet.TRAIN, seed=11, backward=False).tops[0]
    other = run_layer_on("cpu", lp, [x], phase=jitnet.TRAIN, seed=12, backward=False).tops[0]
    np.testing.assert_array_equal(again, y)
    assert not np.array_equal(other == 0, dropped)


@pytest.mark.parametrize("bad_label", [3.0, -1.0, 7.0, np.nan])
def test_softmax_loss_bad_label_names_the_layer(bad_label):
    lp = _lp("SoftmaxWithLoss", bottoms=("scores", "label"), tops=("loss",), name="my_loss")
    lp.loss_param.ignore_label = 1                        # an ignore label does not excuse others
    with pytest.raises(jitnet.LayerError) as info:
        forward_layer(lp, [np.ones((2, 3)), np.array([0.0, bad_label])])
    assert info.value.layer_name == "my_loss"
    assert "my_loss" in str(info.value) and "SoftmaxWithLoss" in str(info.value)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("bad_label", [3.0, -2.0, np.nan])
def test_accuracy_bad_label_is_a_layer_error(device, bad_label):
    """An out-of-range or NaN label is an error, as in SoftmaxWithLoss, not a silently
    dropped sample (which would inflate the accuracy); on the GPU int(NaN) would be 0."""
    lp = _lp("Accuracy", bottoms=("scores", "label"), tops=("acc",), name="my_acc")
    with pytest.raises(jitnet.LayerError, match="my_acc.*label"):
        run_layer_on(device, lp, [np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]]), np.array([0.0, bad_label])],
                     backward=False)


@pytest.mark.parametrize("type_name,tops", [("Softmax", ("y",)), ("SoftmaxWithLoss", ("loss",)),
                                            ("Accuracy", ("acc",))])
def test_empty_class_axis_is_a_layer_error(type_name, tops):
    bottoms = ("x",) if type_name == "Softmax" else ("x", "label")
    lp = _lp(type_name, bottoms=bottoms, tops=tops, name="sm")
    arrays = [np.ones((2, 0))] + ([np.zeros(2)] if len(bottoms) == 2 else [])
    with pytest.raises(jitnet.LayerError, match="sm.*empty"):
        forward_layer(lp, arrays)


def test_hdf5_source_list_and_row_shapes(tmp_path):
    """The list is whitespace-separated (as Caffe reads it); a later file whose rows have
    another shape is an error naming the file, not a silent broadcast."""
    import h5py
    for k, width in enumerate((3, 3, 1)):
        with h5py.File(tmp_path / f"f{k}.h5", "w") as f:
            f.create_dataset("x", data=np.full((2, width), float(k)))
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'f0.h5'}  {tmp_path / 'f1.h5'}\n\n{tmp_path / 'f2.h5'}\n")
    lp = _lp("HDF5Data", bottoms=(), tops=("x",), name="h5")
    lp.hdf5_data_param.source = str(tmp_path / "list.txt")
    lp.hdf5_data_param.batch_size = 2
    layer, bottom, top = _layer(lp, [])
    assert layer.files == [str(tmp_path / f"f{k}.h5") for k in range(3)]
    layer.run_forward(bottom, top)
    assert (top[0].data == 0.0).all()
    # The second batch empties f1.h5, and the layer moves on to f2.h5 (as Caffe does).
    with pytest.raises(jitnet.LayerError, match="f2.h5.*shape"):
        layer.run_forward(bottom, top)


def test_softmax_loss_label_count_mismatch_is_a_layer_error():
    lp = _lp("SoftmaxWithLoss", bottoms=("scores", "label"), tops=("loss",), name="my_loss")
    with pytest.raises(jitnet.LayerError, match="my_loss"):
        forward_layer(lp, [np.ones((2, 3, 2)), np.zeros(2)])


def test_accuracy_top_k_above_classes_is_a_layer_error():
    lp = _lp("Accuracy", bottoms=("scores", "label"), tops=("acc",), name="acc")
    lp.accuracy_param.top_k = 4
    with pytest.raises(jitnet.LayerError, match="acc.*top_k"):
        forward_layer(lp, [np.ones((2, 3)), np.zeros(2)])


def test_inner_product_bottom_size_change_is_a_layer_error():
    lp = _lp("InnerProduct", name="fc")
    lp.inner_product_param.num_output = 2
    layer, bottom, top = _layer(lp, [np.ones((2, 3))])
    layer.run_forward(bottom, top)
    bottom[0].reshape((2, 4))
    with pytest.raises(jitnet.LayerError, match="fc"):
        layer.run_forward(bottom, top)
    bottom[0].reshape((5, 3))                             # another batch size is fine
    layer.run_forward(bottom, top)
    assert top[0].shape == (5, 2)


@pytest.mark.parametrize("dims,axis,num_axes", [
    ([-1, -1], 0, -1),            # two inferred dims
    ([5, 7], 0, -1),              # count changes
    ([0, 0, 0, 0], 0, -1),        # copies an axis the bottom lacks
    ([-1, 5], 0, -1),             # 24 values do not split into 5s
    ([2, -2], 0, -1),             # negative dim
    ([2], 5, -1),                 # axis out of range
    ([2], 1, 4),                  # num_axes beyond the bottom
    ([2], 0, -2),                 # num_axes below -1
])
def test_reshape_invalid_shapes_are_layer_errors(dims, axis, num_axes):
    lp = _lp("Reshape", name="rs")
    lp.reshape_param.shape.dim.extend(dims)
    lp.reshape_param.axis, lp.reshape_param.num_axes = axis, num_axes
    with pytest.raises(jitnet.LayerError, match="rs"):
        forward_layer(lp, [np.ones((2, 3, 4))])


def _error_params():
    return [pytest.param(lp, bottoms, id=f"{case.type}-{error_id}")
            for case in LAYER_CASES if case.errors for error_id, lp, bottoms in case.errors()]


@pytest.mark.parametrize("lp,bottoms", _error_params())
def test_bad_parameters_are_layer_errors(lp, bottoms):
    with pytest.raises(jitnet.LayerError, match="'bad'"):
        forward_layer(lp, bottoms, dtype=np.float64)


def test_memory_data_reset_with_wrong_shape_is_a_layer_error():
    lp = _lp("MemoryData", bottoms=(), tops=("data", "label"), name="mem")
    p = lp.memory_data_param
    p.batch_size, p.channels, p.height, p.width = 2, 1, 2, 2
    layer, _, _ = _layer(lp, [], dtype=np.float32)
    for data, labels in [(np.ones((2, 1, 2, 3)), np.ones(2)),     # wrong sample shape
                         (np.ones((2, 1, 2, 2)), np.ones(3)),     # labels do not match rows
                         (np.ones((3, 1, 2, 2)), np.ones(3))]:    # not a multiple of batch_size
        with pytest.raises(jitnet.LayerError, match="mem"):
            layer.reset(data, labels)


@pytest.mark.parametrize("case", _cases(None, lambda c: layer_class(c.type).is_loss))
@pytest.mark.parametrize("weight", [0.37, -2.5])
@settings(max_examples=max(2, CPU_EXAMPLES // 4))
@given(data=st.data())
def test_loss_weight_scales_loss_and_gradient(case, weight, workdir, data):
    sample = data.draw(case.samples("gradient", workdir), label="sample")
    lp = pb.LayerParameter()
    lp.CopyFrom(sample.layer_param)
    del lp.top[1:]                                        # the loss top alone
    propagate = [i in case.grad_bottoms for i in range(len(sample.bottoms))]
    kwargs = dict(propagate_down=propagate, params=sample.params, phase=sample.phase)
    unit = run_layer_on("cpu", lp, sample.bottoms, top_diffs=[np.array(1.0)], loss_weights=[1.0],
                        **kwargs)
    scaled = run_layer_on("cpu", lp, sample.bottoms, top_diffs=[np.array(weight)],
                          loss_weights=[weight], **kwargs)
    assert unit.loss == pytest.approx(float(unit.tops[0]), rel=1e-14)
    assert scaled.loss == pytest.approx(weight * float(unit.tops[0]), rel=1e-14)
    np.testing.assert_array_equal(scaled.tops[0], unit.tops[0])   # the top is not weighted
    for i, p in enumerate(propagate):
        if p:
            assume(np.any(unit.bottom_diffs[i] != 0))     # (every label ignored: nothing to scale)
            np.testing.assert_allclose(scaled.bottom_diffs[i], weight * unit.bottom_diffs[i],
                                       rtol=1e-13, atol=0)


@pytest.mark.parametrize("case", _cases(None, lambda c: c.grad_bottoms))
@settings(max_examples=max(2, CPU_EXAMPLES // 4))
@given(data=st.data())
def test_propagate_down_false_leaves_bottom_diff_alone(case, workdir, data):
    sample = data.draw(case.samples("gradient", workdir), label="sample")
    layer, bottom, top = _layer(sample.layer_param, sample.bottoms, sample.phase)
    if any(t._diff is b._diff for t in top for b in bottom):
        return               # a view (Flatten, Reshape): its top's diff is the bottom's
    if sample.params is not None:
        for blob, p in zip(layer.blobs, sample.params):
            blob.data[...] = p
    jitnet.set_random_seed(0)
    layer.run_forward(bottom, top)
    sentinels = [np.full(b.shape, 123.25) for b in bottom]
    for blob, s in zip(bottom, sentinels):
        blob.diff[...] = s
    for blob in top:
        blob.diff[...] = 0.5
    for blob in layer.blobs:
        blob.diff[...] = 0
    layer.run_backward(top, [False] * len(bottom), bottom)
    for i, (blob, s) in enumerate(zip(bottom, sentinels)):
        np.testing.assert_array_equal(blob.diff, s, err_msg=f"bottom {i} diff was written")
    if case.check_params:                                # params still get their gradients
        assert any(np.any(blob.diff != 0) for blob in layer.blobs)


def _in_place(layer_param):
    """The same layer with each top named like the bottom at its position (Caffe's in-place)."""
    lp = pb.LayerParameter()
    lp.CopyFrom(layer_param)
    for k in range(min(len(lp.top), len(lp.bottom))):
        lp.top[k] = lp.bottom[k]
    return lp


@pytest.mark.parametrize("device", ["cpu", "gpu"])
@pytest.mark.parametrize("case", _cases(None, lambda c: layer_class(c.type).in_place))
@settings(max_examples=GPU_EXAMPLES)
@given(data=st.data())
def test_in_place_matches_out_of_place(case, device, workdir, data):
    """Run with top = bottom: the same tops, bottom diffs and param diffs as out of place
    (on the CPU; in GPU mode against the CPU's out-of-place run, so the GPU kernels are
    checked with aliased buffers too)."""
    sample = data.draw(case.samples("gradient" if device == "cpu" else "parity", workdir),
                       label="sample")
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    in_place = _in_place(sample.layer_param)
    assume(layer_class(case.type).can_run_in_place(in_place)[0])
    kwargs = dict(phase=sample.phase, dtype=np.float64, params=sample.params, prepare=sample.prepare,
                  propagate_down=sample.propagate_down or tuple(i in case.grad_bottoms
                                                                for i in range(len(sample.bottoms))),
                  seed=seed)
    apart = run_layer_on("cpu", sample.layer_param, sample.bottoms, **kwargs)
    together = run_layer_on(device, in_place, sample.bottoms, **kwargs)
    for what, a, b in ([(f"top {k}", a, b) for k, (a, b) in enumerate(zip(apart.tops, together.tops))]
                       + [(f"bottom {i} diff", a, b) for i, (a, b)
                          in enumerate(zip(apart.bottom_diffs, together.bottom_diffs)) if a is not None]
                       + [(f"param {j} diff", a, b) for j, (a, b)
                          in enumerate(zip(apart.param_diffs, together.param_diffs))]):
        np.testing.assert_allclose(b, a, rtol=1e-13 if device == "cpu" else 1e-10,
                                   atol=1e-15 if device == "cpu" else 1e-12, err_msg=what)


@pytest.mark.parametrize("case", _cases(None, lambda c: not layer_class(c.type).in_place
                                        and layer_class(c.type).exact_bottoms != 0
                                        and layer_class(c.type).exact_tops != 0))
@settings(max_examples=2)
@given(data=st.data())
def test_planner_refuses_in_place_use_of_other_layers(case, workdir, data):
    sample = data.draw(case.samples("forward", workdir), label="sample")
    lp = _in_place(sample.layer_param)
    with pytest.raises(jitnet.NetDefinitionError, match=rf"'{lp.name}' \(type {case.type}\) cannot run in place"):
        planner._check_in_place([lp])


def test_relu_with_a_negative_slope_cannot_run_in_place():
    """Its backward would read y for x, and y > 0 for x < 0 when the slope is negative."""
    lp = _lp("ReLU", bottoms=("h",), tops=("h",), name="leaky")
    lp.relu_param.negative_slope = -0.2
    with pytest.raises(jitnet.NetDefinitionError, match="'leaky'.*negative_slope"):
        planner._check_in_place([lp])
    lp.relu_param.negative_slope = 0.2
    planner._check_in_place([lp])


def test_in_place_needs_the_same_position():
    """Caffe: a top is in place only over the bottom at its own index; any other reuse of a
    bottom's name is a top produced by two sources."""
    lp = _lp("Softmax", bottoms=("a",), tops=("b", "a"), name="two")
    with pytest.raises(jitnet.NetDefinitionError, match="'two'.*top 'a'.*bottom 0"):
        planner._check_in_place([lp])


_DEGENERATE = {
    "0-D": lambda a: np.array(1.25),
    "1-D": lambda a: np.array([0.5, -1.0, 2.0]),
    "zero-sized": lambda a: np.zeros((0,) + np.shape(a)[1:]),
}


@pytest.mark.parametrize("kind", list(_DEGENERATE))
@pytest.mark.parametrize("case", _cases(None, lambda c: layer_class(c.type).exact_bottoms != 0))
@settings(max_examples=max(2, CPU_EXAMPLES // 4))
@given(data=st.data())
def test_degenerate_bottoms_work_or_name_the_layer(case, kind, workdir, data):
    """0-D, 1-D and zero-sized bottoms (all at once, and one at a time) either run forward
    and backward or end in a LayerError naming the layer, never another exception."""
    sample = data.draw(case.samples("forward", workdir), label="sample")
    n = len(sample.bottoms)
    for which in [set(range(n))] + [{i} for i in range(n)] * (n > 1):
        bottoms = [_DEGENERATE[kind](b) if i in which else b for i, b in enumerate(sample.bottoms)]
        try:
            run_layer_on("cpu", sample.layer_param, bottoms, phase=sample.phase, dtype=np.float64,
                         propagate_down=[i in case.grad_bottoms for i in range(n)])
        except jitnet.LayerError as e:
            assert e.layer_name == sample.layer_param.name, str(e)


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_dummy_data_random_filler_refills_each_forward(device):
    lp = _lp("DummyData", bottoms=(), tops=("data",))
    lp.dummy_data_param.shape.add().dim.extend([3, 4])
    lp.dummy_data_param.data_filler.add(type="uniform", min=-1.0, max=2.0)
    run = run_layer_on(device, lp, [], dtype=np.float32, backward=False)
    layer = run.layer
    top = [jitnet.Blob((3, 4), dtype=np.float32)]
    layer.run_forward([], top)
    second = top[0].data.copy()
    first = run.tops[0]
    for values in (first, second):
        assert values.shape == (3, 4) and values.min() >= -1.0 and values.max() < 2.0
        assert np.unique(values).size > 6
    assert not np.array_equal(first, second)


def test_memory_data_walks_through_batches_and_wraps():
    lp = _lp("MemoryData", bottoms=(), tops=("data", "label"))
    p = lp.memory_data_param
    p.batch_size, p.channels, p.height, p.width = 2, 1, 1, 2
    data = np.arange(12, dtype=np.float32).reshape(6, 1, 1, 2)
    labels = np.arange(6, dtype=np.float32)
    layer, _, top = _layer(lp, [], dtype=np.float32)
    layer.reset(data, labels)
    for start in (0, 2, 4, 0):
        layer.run_forward([], top)
        np.testing.assert_array_equal(top[0].data, data[start:start + 2])
        np.testing.assert_array_equal(top[1].data, labels[start:start + 2])


@pytest.mark.parametrize("nfiles", [1, 3])
def test_hdf5_data_shuffle_visits_every_row_once_per_pass(tmp_path, nfiles):
    rows_per_file = 4
    paths = []
    for f in range(nfiles):
        path = tmp_path / f"part{f}.h5"
        with h5py.File(path, "w") as h5:
            ids = np.arange(rows_per_file, dtype=np.float64) + f * rows_per_file
            h5.create_dataset("data", data=ids[:, None] * np.ones((1, 2)))
            h5.create_dataset("label", data=ids)
        paths.append(str(path))
    source = tmp_path / "list.txt"
    source.write_text("\n".join(paths) + "\n")
    lp = _lp("HDF5Data", bottoms=(), tops=("data", "label"))
    lp.hdf5_data_param.source, lp.hdf5_data_param.batch_size = str(source), 1
    lp.hdf5_data_param.shuffle = True
    jitnet.set_random_seed(8)
    layer, _, top = _layer(lp, [])
    total = nfiles * rows_per_file
    passes = []
    for _ in range(3):
        seen = []
        for _ in range(total):
            layer.run_forward([], top)
            np.testing.assert_array_equal(top[0].data[0], [top[1].data[0]] * 2)
            seen.append(int(top[1].data[0]))
        assert sorted(seen) == list(range(total))
        passes.append(seen)
    assert any(p != list(range(total)) for p in passes), "shuffle changed nothing"


def test_memory_data_without_data_is_a_layer_error():
    lp = _lp("MemoryData", bottoms=(), tops=("data", "label"), name="mem")
    p = lp.memory_data_param
    p.batch_size, p.channels, p.height, p.width = 2, 1, 1, 1
    with pytest.raises(jitnet.LayerError, match="mem"):
        forward_layer(lp, [], dtype=np.float32)


# =========================================================================== the toolkit can fail
def _sigmoid_lp():
    return _lp("Sigmoid", name="sig")


def test_check_gradients_reports_a_wrong_gradient(monkeypatch):
    cls = jitnet.layer.layer_class("Sigmoid")
    original = cls.backward

    def off_by_one_percent(self, top, propagate_down, bottom):
        original(self, top, propagate_down, bottom)
        bottom[0].diff[...] *= 1.01
    monkeypatch.setattr(cls, "backward", off_by_one_percent)
    x = np.random.default_rng(0).normal(size=(2, 3))
    with pytest.raises(GradientCheckError) as info:
        check_gradients(_sigmoid_lp(), [x])
    message = str(info.value)
    for part in ("'sig'", "Sigmoid", "bottom 0", "(2, 3)", "analytic", "numeric", "rtol",
                 "atol", "worst"):
        assert part in message, part


def test_check_gradients_reports_one_wrong_element(monkeypatch):
    cls = jitnet.layer.layer_class("Sigmoid")
    original = cls.backward

    def wrong_corner(self, top, propagate_down, bottom):
        original(self, top, propagate_down, bottom)
        bottom[0].diff[1, 2] += 1e-3
    monkeypatch.setattr(cls, "backward", wrong_corner)
    x = np.random.default_rng(1).normal(size=(2, 3))
    with pytest.raises(GradientCheckError, match=r"\(1, 2\)"):
        check_gradients(_sigmoid_lp(), [x], rtol=1e-5, atol=1e-7)


def test_check_gradients_requires_bottom_diffs_to_be_overwritten(monkeypatch):
    cls = jitnet.layer.layer_class("Sigmoid")
    monkeypatch.setattr(cls, "backward", lambda self, top, propagate_down, bottom: None)
    with pytest.raises(GradientCheckError, match="did not write"):
        check_gradients(_sigmoid_lp(), [np.array([0.5, -1.0])])


def test_check_gradients_requires_param_diffs_to_accumulate(monkeypatch):
    cls = jitnet.layer.layer_class("InnerProduct")
    original = cls.backward

    def overwrite(self, top, propagate_down, bottom):
        for blob in self.blobs:
            blob.diff[...] = 0
        original(self, top, propagate_down, bottom)
    monkeypatch.setattr(cls, "backward", overwrite)
    lp = _lp("InnerProduct", name="fc")
    lp.inner_product_param.num_output = 2
    rng = np.random.default_rng(2)
    with pytest.raises(GradientCheckError, match="param 0"):
        check_gradients(lp, [rng.normal(size=(3, 2))],
                        params=[rng.normal(size=(2, 2)), rng.normal(size=2)])


def test_directional_tolerance_follows_the_terms_not_their_sum():
    """CI drew this ContrastiveLoss sample: Caffe's gradient divides by d + 1e-4 (a relative
    error of 7e-5 per entry here), and the random direction's terms cancelled to a sum 30 times
    smaller than they are, so rtol·|sum| failed it while every entry was within rtol. The
    directional tolerance is taken of √Σ(d_i·∂E/∂x_i)²."""
    lp = _lp("ContrastiveLoss", bottoms=("a", "b", "sim"), tops=("loss",), name="contrastive")
    lp.contrastive_loss_param.margin = 2.5
    lp.contrastive_loss_param.legacy_version = False
    a = np.full((3, 1, 1, 1), -1.375)
    b = np.array([0.0, 0.0, 0.5]).reshape(3, 1, 1, 1)
    check_gradients(lp, [a, b, np.array([0.0, 0.0, 1.0])], check_bottoms=[0, 1], rtol=1e-3,
                    atol=1e-6, seed=0)


def test_directional_check_still_fails_a_wrong_gradient_on_a_large_input(monkeypatch):
    """Past elementwise_limit only the directional derivative runs: one entry off by 1e-3 of
    the gradient's size in a 40000-entry input still fails it."""
    cls = jitnet.layer.layer_class("Sigmoid")
    original = cls.backward

    def one_entry_off(self, top, propagate_down, bottom):
        original(self, top, propagate_down, bottom)
        d = bottom[0].diff.reshape(-1)
        d[17] += 0.05 * np.abs(d).max() + 1e-3
    monkeypatch.setattr(cls, "backward", one_entry_off)
    x = np.random.default_rng(7).normal(size=(200, 200))
    with pytest.raises(GradientCheckError, match="directional"):
        check_gradients(_sigmoid_lp(), [x], seed=3)


def test_check_gradients_raises_kink_error_at_a_kink():
    lp = _lp("ReLU", name="relu")
    with pytest.raises(KinkError) as info:
        check_gradients(lp, [np.array([0.7, 1e-9, -0.4])])
    assert info.value.input == "bottom 0"


def test_check_gradients_passes_and_reports():
    lp = _lp("TanH", name="t")
    report = check_gradients(lp, [np.random.default_rng(3).normal(size=(4, 5))])
    (entry,) = report.inputs
    assert entry.name == "bottom 0" and entry.shape == (4, 5) and entry.elementwise
    assert entry.max_abs_error < 1e-8
    assert "t" in str(report)


def test_check_gradients_in_gpu_mode():
    lp = _lp("InnerProduct", name="fc")
    lp.inner_product_param.num_output = 2
    rng = np.random.default_rng(6)
    jitnet.set_mode_gpu()
    try:
        report = check_gradients(lp, [rng.normal(size=(2, 3))],
                                 params=[rng.normal(size=(2, 3)), rng.normal(size=2)])
    finally:
        jitnet.set_mode_cpu()
    assert report.layer == "fc" and [r.name for r in report.inputs] == ["bottom 0", "param 0",
                                                                        "param 1"]


@given(a=jst.arrays(jst.shapes(max_size=30), low=-1.0, high=1.0, avoid=(0.0, 0.5), margin=0.1))
def test_arrays_strategy_keeps_away_from_kinks_and_zero(a):
    assert np.any(a != 0)
    assert np.all(np.abs(a) >= 0.1 - 1e-12) and np.all(np.abs(a - 0.5) >= 0.1 - 1e-12)


@given(lab=jst.labels(3, jst.shapes(max_size=30), ignore_label=-1))
def test_labels_strategy(lab):
    assert lab.dtype == np.float64 and set(np.unique(lab)) <= {-1.0, 0.0, 1.0, 2.0}


def test_cases_by_type_is_the_table():
    assert list(CASES_BY_TYPE.values()) == LAYER_CASES


def test_check_gradients_of_a_layer_run_in_place():
    """In place the forward overwrites the bottom: the checker keeps the inputs and differences
    around them, not around the overwritten values (a wrong backward still fails)."""
    lp = _lp("TanH", bottoms=("h",), tops=("h",), name="t")
    x = np.random.default_rng(4).normal(size=(3, 4))
    report = check_gradients(lp, [x])
    assert report.inputs[0].max_abs_error < 1e-8
    cls = jitnet.layer.layer_class("TanH")
    original = cls.backward_kernel

    def off(self, K, x, y, dy, dx):
        original(self, K, x, y, dy, dx)
        dx[0] += 1e-3
    with mock.patch.object(cls, "backward_kernel", off):
        with pytest.raises(GradientCheckError, match="bottom 0"):
            check_gradients(lp, [x])
