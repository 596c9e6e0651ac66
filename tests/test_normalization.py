"""BatchNorm, Scale, Bias and Crop: behaviour the layer table (tests/layer_cases.py) does not
cover. BatchNorm's running sums over TRAIN forwards against values worked out by hand from
Caffe's formulas; a Caffe-layout caffemodel loaded into Input → BatchNorm → Scale (in place, as
ResNet writes them); the statistics never learned (lr_mult 0 in the planner and the net);
gradients to the second bottom of Scale and Bias and through BatchNorm's batch statistics
(float64 hypothesis checks); defaults, in-place details and error messages."""
import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import assume, given
from hypothesis import strategies as st

import jitnet
from jitnet import planner
from jitnet.layer import layer_class
from jitnet.proto import io as proto_io
from jitnet.proto import pb
from jitnet.testing import KinkError, check_gradients, forward_layer, run_layer_on
from jitnet.testing import strategies as jst

import reference as ref
from test_layers import _layer


def _lp(type_name, bottoms=("x",), tops=("y",), name=None, text=""):
    lp = pb.LayerParameter(name=name or type_name.lower(), type=type_name, bottom=list(bottoms),
                           top=list(tops))
    text_format.Merge(text, lp)
    return lp


# =========================================================================== BatchNorm statistics
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_batch_norm_running_sums_over_two_train_forwards(device):
    """Two channels, m = N·H = 4 values each, λ = 0.5. By hand, from Caffe's formulas:
    first batch  channel 0: 1, 3, 5, 7   μ = 4, σ² = 5,   unbiased 20/3
                 channel 1: 2, 2, 2, 6   μ = 3, σ² = 3,   unbiased 4
      blob2 = 0·λ + 1 = 1;  blob0 = (4, 3);  blob1 = (20/3, 4)
    second batch channel 0: 0, 2, 2, 0   μ = 1, σ² = 1,   unbiased 4/3
                 channel 1: 1, 1, 1, 1   μ = 1, σ² = 0,   unbiased 0
      blob2 = 1·λ + 1 = 1.5;  blob0 = (4λ + 1, 3λ + 1) = (3, 2.5);
      blob1 = (20/3·λ + 4/3, 4λ + 0) = (14/3, 2)
    and a TEST forward then uses μ = blob0/blob2 = (2, 5/3), σ² = blob1/blob2 = (28/9, 4/3)."""
    lp = _lp("BatchNorm", text="batch_norm_param { moving_average_fraction: 0.5 }")
    first = np.array([[[1.0, 3.0], [2.0, 2.0]], [[5.0, 7.0], [2.0, 6.0]]])      # (N=2, C=2, H=2)
    second = np.array([[[0.0, 2.0], [1.0, 1.0]], [[2.0, 0.0], [1.0, 1.0]]])
    previous = jitnet.mode()
    (jitnet.set_mode_gpu if device == "gpu" else jitnet.set_mode_cpu)()
    try:
        layer, bottom, top = _layer(lp, [first])
        for blob in layer.blobs:
            np.testing.assert_array_equal(blob.data, 0)                      # Caffe: 0 at setup
        assert [b.shape for b in layer.blobs] == [(2,), (2,), (1,)]
        layer.run_forward(bottom, top)
        np.testing.assert_allclose(layer.blobs[2].data, [1.0], rtol=1e-15)
        np.testing.assert_allclose(layer.blobs[0].data, [4.0, 3.0], rtol=1e-15)
        np.testing.assert_allclose(layer.blobs[1].data, [20 / 3, 4.0], rtol=1e-15)
        bottom[0].data[...] = second
        layer.run_forward(bottom, top)
        np.testing.assert_allclose(layer.blobs[2].data, [1.5], rtol=1e-15)
        np.testing.assert_allclose(layer.blobs[0].data, [3.0, 2.5], rtol=1e-15)
        np.testing.assert_allclose(layer.blobs[1].data, [14 / 3, 2.0], rtol=1e-15)
        # the batch statistics normalize the output: channel 1 of the second batch is constant
        np.testing.assert_allclose(top[0].data[:, 1], 0.0, atol=1e-15)
        np.testing.assert_allclose(top[0].data[:, 0], (second[:, 0] - 1.0) / np.sqrt(1.0 + 1e-5),
                                   rtol=1e-6)
        test = jitnet.layer.create_layer(lp, jitnet.TEST)
        test_top = [jitnet.Blob(dtype=np.float64)]
        test.setup_layer(bottom, test_top)
        for mine, trained in zip(test.blobs, layer.blobs):
            mine.data[...] = trained.data
        bottom[0].data[...] = first
        test.run_forward(bottom, test_top)
        eps = lp.batch_norm_param.eps
        want = np.stack([(first[:, 0] - 2.0) / np.sqrt(28 / 9 + eps),
                         (first[:, 1] - 5 / 3) / np.sqrt(4 / 3 + eps)], axis=1)
        np.testing.assert_allclose(test_top[0].data, want, rtol=1e-12)
        np.testing.assert_allclose(test.blobs[2].data, [1.5], rtol=1e-15)    # TEST leaves them alone
    finally:
        (jitnet.set_mode_gpu if previous == "gpu" else jitnet.set_mode_cpu)()


def test_batch_norm_running_sums_match_the_reference_in_float32():
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 2.0, size=(3, 4, 5))
    start = [rng.normal(size=4) * 7.0, rng.uniform(1.0, 2.0, size=4) * 7.0, np.array([7.0])]
    lp = _lp("BatchNorm")
    run = run_layer_on("cpu", lp, [x], dtype=np.float32, params=start, backward=False)
    x32 = x.astype(np.float32)
    want = ref.batch_norm_running_sums(x32, *[np.float32(p) for p in start],
                                       lp.batch_norm_param.moving_average_fraction)
    for got, expected in zip(run.params, want):
        np.testing.assert_allclose(got, expected, rtol=2e-6)


def test_batch_norm_with_one_value_per_channel_uses_no_bias_correction():
    """m = 1: var is 0 and Caffe's correction factor is 1 (not m/(m − 1))."""
    lp = _lp("BatchNorm", text="batch_norm_param { moving_average_fraction: 0.25 }")
    x = np.array([[3.0, -1.0]])                                               # (N=1, C=2)
    run = run_layer_on("cpu", lp, [x], params=[np.ones(2), np.ones(2), np.array([2.0])], backward=False)
    np.testing.assert_array_equal(run.tops[0], 0.0)
    np.testing.assert_allclose(run.params[0], [0.25 + 3.0, 0.25 - 1.0])
    np.testing.assert_allclose(run.params[1], [0.25, 0.25])
    np.testing.assert_allclose(run.params[2], [1.5])


def test_batch_norm_repeated_train_forwards_give_the_same_top():
    """The running sums change at every TRAIN forward, the top does not: a gradient check's
    repeated forwards see one function."""
    x = np.random.default_rng(5).normal(size=(4, 3, 7, 5)).astype(np.float32)
    layer, bottom, top = _layer(_lp("BatchNorm"), [x], dtype=np.float32)
    layer.run_forward(bottom, top)
    first = top[0].data.copy()
    for _ in range(3):
        layer.run_forward(bottom, top)
        np.testing.assert_array_equal(top[0].data, first)
    assert layer.blobs[2].data[0] != 1.0


@pytest.mark.parametrize("phase,given,expected", [
    (jitnet.TRAIN, None, False), (jitnet.TEST, None, True),
    (jitnet.TRAIN, True, True), (jitnet.TEST, False, False)])
def test_batch_norm_use_global_stats_default_follows_the_phase(phase, given, expected):
    lp = _lp("BatchNorm")
    if given is not None:
        lp.batch_norm_param.use_global_stats = given
    layer, bottom, top = _layer(lp, [np.arange(12.0).reshape(2, 3, 2)], phase=phase)
    assert layer.use_global_stats is expected
    layer.run_forward(bottom, top)
    assert layer.blobs[2].data[0] == (0.0 if expected else 1.0)


# =========================================================================== a Caffe-trained net
_RESNET_STYLE = """
name: "bn_scale"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 5 } } }
layer { name: "bn_conv1" type: "BatchNorm" bottom: "data" top: "data"
        batch_norm_param { use_global_stats: true } }
layer { name: "scale_conv1" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }
"""


@pytest.mark.parametrize("legacy", [False, True], ids=["shape", "num-channels-height-width"])
def test_caffemodel_batch_norm_and_scale_give_caffes_numbers(tmp_path, legacy):
    """A caffemodel written with Caffe's BlobProto layout, as a Caffe-trained ResNet stores its
    BatchNorm (mean sum, variance sum, scale factor 999.9...) and Scale (γ, β) blobs."""
    rng = np.random.default_rng(11)
    factor = np.float32(999.982)
    mean = rng.normal(size=3).astype(np.float32)
    var = rng.uniform(0.2, 2.0, size=3).astype(np.float32)
    gamma, beta = rng.normal(size=3).astype(np.float32), rng.normal(size=3).astype(np.float32)
    weights = pb.NetParameter(name="bn_scale")
    bn = weights.layer.add(name="bn_conv1", type="BatchNorm")
    for values in (mean * factor, var * factor, np.array([factor])):
        blob = bn.blobs.add()
        if legacy:
            blob.num, blob.channels, blob.height, blob.width = 1, 1, 1, values.size
        else:
            blob.shape.dim.append(values.size)
        blob.data.extend(np.asarray(values, np.float32).tolist())
    scale = weights.layer.add(name="scale_conv1", type="Scale")
    for values in (gamma, beta):
        proto_io.array_to_blob(values, scale.blobs.add())
    weights.layer.add(name="fc_not_here", type="InnerProduct").blobs.add().shape.dim.append(1)
    model, caffemodel = tmp_path / "deploy.prototxt", tmp_path / "bn.caffemodel"
    model.write_text(_RESNET_STYLE)
    caffemodel.write_bytes(weights.SerializeToString())

    net = jitnet.Net(str(model), jitnet.TEST, weights=str(caffemodel))
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    y = net.forward(data=x)["data"]

    f = np.float64(1.0) / np.float64(factor)
    m = (mean * factor).astype(np.float32).astype(np.float64) * f
    v = (var * factor).astype(np.float32).astype(np.float64) * f
    eps = np.float64(np.float32(1e-5))
    c = (slice(None), None, None)
    want = (x - m[c]) / np.sqrt(v[c] + eps) * gamma[c] + beta[c]
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(net.params["bn_conv1"][2].data, [factor])


def test_batch_norm_statistics_are_not_learned():
    """lr_mult 0 on all three blobs in the planner and the net (decay_mult kept); a solver step
    leaves them as the TRAIN forward made them."""
    lp = _lp("BatchNorm", text="param { lr_mult: 0 decay_mult: 0.5 }")
    specs = layer_class("BatchNorm").param_specs(lp)
    assert [s.lr_mult for s in specs] == [0.0] * 3 and all(s.HasField("lr_mult") for s in specs)
    assert [s.decay_mult for s in specs] == [0.5, 1.0, 1.0]
    net_text = """
    layer { name: "data" type: "Input" top: "data" top: "label"
            input_param { shape { dim: 6 dim: 3 } shape { dim: 6 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
            inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
    layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "ip" param { decay_mult: 0 } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
    """
    solver_param = pb.SolverParameter(base_lr=0.5, momentum=0.9, weight_decay=0.1, lr_policy="fixed",
                                      max_iter=10)
    text_format.Merge(net_text, solver_param.net_param)
    solver = jitnet.SGDSolver(solver_param)
    net = solver.net
    k = [i for i, p in enumerate(net.learnable_params) if any(p is b for b in net.params["bn"])]
    assert [net.params_lr[i] for i in k] == [0.0, 0.0, 0.0]
    assert [net.params_weight_decay[i] for i in k] == [0.0, 1.0, 1.0]
    rng = np.random.default_rng(2)
    net.blobs["data"].data[...] = rng.normal(size=(6, 3))
    net.blobs["label"].data[...] = rng.integers(0, 4, size=6)
    w, b = (p.data.astype(np.float64) for p in net.params["ip"])      # the weights the step's forward uses
    ip = net.blobs["data"].data.astype(np.float64) @ w.T + b
    solver.step(1)
    assert not np.array_equal(net.params["ip"][0].data, w)             # the step did update
    want = ref.batch_norm_running_sums(ip, np.zeros(4), np.zeros(4), np.zeros(1))
    for got, expected in zip(net.params["bn"], want):
        np.testing.assert_allclose(got.data, expected, rtol=1e-5, atol=1e-6)


def test_batch_norm_lr_mult_set_is_refused():
    lp = _lp("BatchNorm", name="bn_learn", text="param { lr_mult: 0 } param { lr_mult: 2 }")
    with pytest.raises(jitnet.LayerError, match=r"bn_learn.*param 1.*lr_mult 2"):
        forward_layer(lp, [np.ones((2, 3))])


# =========================================================================== gradients
@given(data=st.data())
def test_batch_norm_batch_statistics_gradient(data):
    """∂E/∂x through the batch mean and variance, (N, C) and (N, C, ...) bottoms. (In place is
    the table's in-place test: check_gradients reads the bottom back after forward.)"""
    shape = data.draw(jst.shapes(min_dims=2, max_dims=4, max_side=4, max_size=40), label="shape")
    assume(shape[0] * int(np.prod(shape[2:])) > 1)
    x = data.draw(jst.arrays(shape), label="x")
    lp = _lp("BatchNorm")
    lp.batch_norm_param.use_global_stats = False
    lp.batch_norm_param.eps = data.draw(st.sampled_from([1e-5, 1e-2]), label="eps")
    try:
        check_gradients(lp, [x], phase=data.draw(st.sampled_from([jitnet.TRAIN, jitnet.TEST])),
                        check_params=False, seed=data.draw(st.integers(0, 2**31 - 1)))
    except KinkError:      # nearly equal values and a small eps: curvature ~1/σ² beyond what ε resolves
        assume(False)


@pytest.mark.parametrize("type_name", ["Scale", "Bias"])
@given(data=st.data())
def test_gradient_to_the_second_bottom(type_name, data):
    """Scale's ∂E/∂s[d] = Σ ∂E/∂y·x and Bias's ∂E/∂b[d] = Σ ∂E/∂y, written (not added) to the
    second bottom's diff; with and without Scale's learned bias."""
    shape = data.draw(jst.shapes(min_dims=1, max_dims=4, max_side=4, max_size=40), label="shape")
    n = len(shape)
    axis = data.draw(st.integers(0, n - 1), label="axis")
    k = data.draw(st.integers(0, n - axis), label="axes of the second bottom")
    lp = _lp(type_name, bottoms=("x", "s"))
    message = lp.scale_param if type_name == "Scale" else lp.bias_param
    message.axis = axis - n if data.draw(st.booleans()) else axis
    params = None
    if type_name == "Scale" and data.draw(st.booleans(), label="bias_term"):
        lp.scale_param.bias_term = True
        params = [data.draw(jst.arrays(shape[axis:axis + k], low=-1.5, high=1.5))]
    bottoms = [data.draw(jst.arrays(shape), label="x"),
               data.draw(jst.arrays(shape[axis:axis + k], low=-1.5, high=1.5), label="s")]
    try:
        report = check_gradients(lp, bottoms, check_bottoms=(0, 1), params=params,
                                 seed=data.draw(st.integers(0, 2**31 - 1)))
    except KinkError:
        assume(False)
    assert [r.name for r in report.inputs][:2] == ["bottom 0", "bottom 1"]


# =========================================================================== Scale and Bias
def test_scale_and_bias_default_fillers():
    x = np.ones((2, 3, 4))
    scale, _, _ = _layer(_lp("Scale", text="scale_param { bias_term: true num_axes: 2 }"), [x])
    assert [b.shape for b in scale.blobs] == [(3, 4), (3, 4)]
    np.testing.assert_array_equal(scale.blobs[0].data, 1.0)          # "default to unit (1) filler"
    np.testing.assert_array_equal(scale.blobs[1].data, 0.0)
    filled, _, _ = _layer(_lp("Scale", text='scale_param { filler { type: "constant" value: 2.5 } '
                                            'bias_term: true bias_filler { type: "constant" value: -1 } }'), [x])
    np.testing.assert_array_equal(filled.blobs[0].data, 2.5)
    np.testing.assert_array_equal(filled.blobs[1].data, -1.0)
    bias, _, _ = _layer(_lp("Bias", text="bias_param { axis: 0 num_axes: -1 }"), [x])
    assert bias.blobs[0].shape == (2, 3, 4)
    np.testing.assert_array_equal(bias.blobs[0].data, 0.0)
    scalar, _, _ = _layer(_lp("Bias", text="bias_param { num_axes: 0 }"), [x])
    assert scalar.blobs[0].shape == ()


def test_scale_with_two_bottoms_learns_a_bias_shaped_like_the_second_bottom():
    """Caffe's Scale gives its internal Bias num_axes = bottom[1].num_axes with two bottoms."""
    lp = _lp("Scale", bottoms=("x", "s"), text="scale_param { axis: 1 num_axes: 1 bias_term: true }")
    layer, _, _ = _layer(lp, [np.ones((2, 3, 4, 5)), np.ones((3, 4))])
    assert [b.shape for b in layer.blobs] == [(3, 4)]
    assert layer_class("Scale").param_count(lp) == 1


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_scale_in_place_without_learning_the_scale(device):
    """With lr_mult 0 on s an in-place Scale keeps no copy of x; ∂E/∂x is still ∂E/∂y·s."""
    lp = _lp("Scale", tops=("x",), text="scale_param { bias_term: true }")
    x = np.random.default_rng(3).normal(size=(2, 3, 4))
    layer, bottom, top = _layer(lp, [x])
    assert top[0] is not bottom[0]
    top = bottom                                                       # as the net wires it
    layer.param_propagate_down = [False, True]
    layer.blobs[0].data[...] = [1.5, -2.0, 0.5]
    previous = jitnet.mode()
    (jitnet.set_mode_gpu if device == "gpu" else jitnet.set_mode_cpu)()
    try:
        layer.run_forward(bottom, top)
        np.testing.assert_allclose(top[0].data, x * np.array([1.5, -2.0, 0.5])[:, None])
        assert layer.saved_bottom.count in (0, 1)
        dy = np.random.default_rng(4).normal(size=x.shape)
        top[0].diff[...] = dy
        layer.run_backward(top, [True], bottom)
        np.testing.assert_allclose(bottom[0].diff, dy * np.array([1.5, -2.0, 0.5])[:, None])
        np.testing.assert_allclose(layer.blobs[1].diff, dy.sum(axis=(0, 2)))
        np.testing.assert_array_equal(layer.blobs[0].diff, 0.0)
    finally:
        (jitnet.set_mode_gpu if previous == "gpu" else jitnet.set_mode_cpu)()


@pytest.mark.parametrize("type_name", ["Scale", "Bias"])
def test_second_bottom_gradient_is_overwritten_and_learned_gradient_accumulates(type_name):
    x = np.random.default_rng(6).normal(size=(2, 3, 4))
    s = np.array([0.5, -1.0, 2.0])
    dy = np.random.default_rng(7).normal(size=x.shape)
    want = (dy * x).sum(axis=(0, 2)) if type_name == "Scale" else dy.sum(axis=(0, 2))
    two, bottom, top = _layer(_lp(type_name, bottoms=("x", "s")), [x, s])
    two.run_forward(bottom, top)
    top[0].diff[...] = dy
    bottom[1].diff[...] = 100.0
    two.run_backward(top, [False, True], bottom)
    np.testing.assert_allclose(bottom[1].diff, want)
    one, bottom, top = _layer(_lp(type_name), [x])
    one.blobs[0].data[...] = s
    one.run_forward(bottom, top)
    top[0].diff[...] = dy
    one.blobs[0].diff[...] = 100.0
    one.run_backward(top, [False], bottom)
    np.testing.assert_allclose(one.blobs[0].diff, want + 100.0)


@pytest.mark.parametrize("type_name", ["Scale", "Bias"])
@pytest.mark.parametrize("text,shapes,match", [
    ("", [(2, 3, 4), (4,)], r"shape \(4,\) does not match bottom\[0\] \(2, 3, 4\) from axis 1"),
    ("axis: 2", [(2, 3, 4), (4, 1)], r"from axis 2"),
    ("axis: -4", [(2, 3, 4), (3,)], r"axis -4 is out of range"),
    ("axis: 1 num_axes: 3", [(2, 3, 4)], r"extends past bottom\[0\]'s shape \(2, 3, 4\)"),
    ("num_axes: -2", [(2, 3, 4)], r"num_axes -2 must be non-negative, or -1"),
])
def test_scale_and_bias_errors_name_the_layer_and_the_shapes(type_name, text, shapes, match):
    message = "scale_param" if type_name == "Scale" else "bias_param"
    lp = _lp(type_name, bottoms=("x", "s")[:len(shapes)], name="bcast", text=f"{message} {{ {text} }}")
    with pytest.raises(jitnet.LayerError, match=r"'bcast'.*" + match):
        forward_layer(lp, [np.ones(s) for s in shapes])


def test_scale_reshape_checks_a_changed_bottom():
    layer, bottom, top = _layer(_lp("Scale", name="sc"), [np.ones((2, 3))])
    bottom[0].reshape((2, 4))
    with pytest.raises(jitnet.LayerError, match=r"'sc'.*\(3,\) does not match"):
        layer.run_forward(bottom, top)


# =========================================================================== BatchNorm errors
def test_batch_norm_needs_two_axes():
    with pytest.raises(jitnet.LayerError, match=r"'bn'.*fewer than two axes.*\(5,\)"):
        forward_layer(_lp("BatchNorm", name="bn"), [np.ones(5)])


def test_batch_norm_channel_count_cannot_change():
    layer, bottom, top = _layer(_lp("BatchNorm", name="bn"), [np.ones((2, 3, 2))])
    bottom[0].reshape((2, 4, 2))
    with pytest.raises(jitnet.LayerError, match=r"'bn'.*4 channels.*made for 3"):
        layer.run_forward(bottom, top)
    bottom[0].reshape((5, 3, 1))                                    # another batch is fine
    layer.run_forward(bottom, top)


def test_batch_norm_batch_statistics_of_an_empty_batch_are_an_error():
    with pytest.raises(jitnet.LayerError, match=r"'bn'.*empty"):
        forward_layer(_lp("BatchNorm", name="bn"), [np.ones((0, 3))])
    (y,) = forward_layer(_lp("BatchNorm", name="bn"), [np.ones((0, 3))], phase=jitnet.TEST)
    assert y.shape == (0, 3)


# =========================================================================== Crop
def test_crop_fcn_style_window_and_gradient():
    """FCN's score crop: axis 2, one offset for both spatial axes."""
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1, 2, 9, 8))
    lp = _lp("Crop", bottoms=("score", "data"), text="crop_param { axis: 2 offset: 3 }")
    dy = rng.normal(size=(1, 2, 5, 4))
    for device in ("cpu", "gpu"):
        run = run_layer_on(device, lp, [x, np.zeros((7, 7, 5, 4))], top_diffs=[dy],
                           propagate_down=[True, False])
        np.testing.assert_array_equal(run.tops[0], x[:, :, 3:8, 3:7])
        want = np.zeros_like(x)
        want[:, :, 3:8, 3:7] = dy
        np.testing.assert_array_equal(run.bottom_diffs[0], want)


def test_crop_reference_gets_no_gradient():
    assert layer_class("Crop").no_gradient_bottoms == (1,)
    net = jitnet.Net(text_format.Parse("""
        force_backward: true
        layer { name: "in" type: "Input" top: "a" top: "b"
                input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } shape { dim: 1 dim: 1 dim: 2 dim: 2 } } }
        layer { name: "crop" type: "Crop" bottom: "a" bottom: "b" top: "c" }
        layer { name: "loss" type: "EuclideanLoss" bottom: "c" bottom: "b" top: "loss" }
        """, pb.NetParameter()), jitnet.TRAIN)
    step = [s for s in net.plan.forward if s.name == "crop"][0]
    assert step.propagate_down == [True, False]


@pytest.mark.parametrize("text,shapes,match", [
    ("", [(2, 3, 5, 5), (2, 3, 6, 5)], r"out of bounds on axis 2.*size 6.*offset 0.*size 5"),
    ("offset: 2", [(2, 3, 5, 5), (2, 3, 4, 4)], r"out of bounds on axis 2.*offset 2"),
    ("offset: 0 offset: 3", [(2, 3, 5, 5), (2, 3, 4, 4)], r"out of bounds on axis 3.*offset 3"),
    ("offset: 1 offset: 1 offset: 1", [(2, 3, 5, 5), (2, 3, 4, 4)], r"3 offsets given.*axes 2\.\.3"),
    ("axis: 1 offset: 1 offset: 1", [(2, 3, 5, 5), (2, 2, 4, 4)], r"2 offsets given.*axes 1\.\.3"),
    ("", [(2, 3, 5, 5), (3, 4, 4)], r"same number of axes"),
    ("axis: 4", [(2, 3, 5, 5), (2, 3, 4, 4)], r"axis 4 is out of range"),
])
def test_crop_errors_name_the_layer(text, shapes, match):
    lp = _lp("Crop", bottoms=("x", "ref"), name="crop_bad", text=f"crop_param {{ {text} }}")
    with pytest.raises(jitnet.LayerError, match=r"'crop_bad'.*" + match):
        forward_layer(lp, [np.ones(s) for s in shapes])


def test_crop_cannot_run_in_place():
    lp = _lp("Crop", bottoms=("x", "ref"), tops=("x",), name="c")
    with pytest.raises(jitnet.NetDefinitionError, match="'c'.*cannot run in place"):
        planner._check_in_place([lp])
