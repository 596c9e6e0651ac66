"""Behaviour of the catalogue's neuron and loss layers that the layer table (layer_cases.py)
does not cover: Caffe's special cases and numeric edges, which gradients Caffe refuses, in-place
declarations, and the errors a user can cause. Each test states the Caffe rule it holds
jitnet to."""
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet import planner
from jitnet.layer import layer_class
from jitnet.proto import pb
from jitnet.proto.io import write_blob_proto
from jitnet.testing import check_gradients, forward_layer, run_layer_on

import reference as ref

DEVICES = ["cpu", "gpu"]


def _lp(type_name, bottoms=("x",), tops=("y",), name="layer", **params):
    lp = pb.LayerParameter(name=name, type=type_name, bottom=list(bottoms), top=list(tops))
    for message, fields in params.items():
        for field, value in fields.items():
            setattr(getattr(lp, message), field, value)
    return lp


# =========================================================================== in place
def test_in_place_declarations():
    """Caffe refuses AbsVal in place (CHECK_NE in LayerSetUp); every other neuron layer runs in
    place (those whose backward reads x keep a copy of it, as Caffe's PReLU)."""
    lp = _lp("AbsVal", bottoms=("h",), tops=("h",), name="abs")
    with pytest.raises(jitnet.NetDefinitionError, match="'abs'.*in-place"):
        planner._check_in_place([lp])
    for type_name in ("BNLL", "ELU", "Exp", "Log", "Power", "PReLU", "Swish", "Threshold", "Clip"):
        assert layer_class(type_name).in_place, type_name
        planner._check_in_place([_lp(type_name, bottoms=("h",), tops=("h",))])
    for type_name in ("MultinomialLogisticLoss", "InfogainLoss", "SigmoidCrossEntropyLoss",
                      "HingeLoss", "ContrastiveLoss"):
        assert not layer_class(type_name).in_place, type_name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("type_name,params", [
    ("Clip", {"clip_param": {"min": -0.5, "max": 0.5}}),     # in place, y would always be inside
    ("PReLU", {}),
    ("Power", {"power_param": {"power": 2.0, "shift": -0.5}}),
    ("ELU", {"elu_param": {"alpha": -0.5}}),
])
def test_in_place_keeps_the_bottom_where_caffe_reads_the_overwritten_one(device, type_name, params):
    """Run in place, these layers give the out-of-place gradient (Caffe's Clip, Power and ELU
    with alpha < 0 read y for x there and compute another one)."""
    x = np.array([[-1.5, -0.25, 0.25, 1.5], [0.75, -0.75, 2.0, -2.0]])
    dy = np.linspace(-1.0, 1.0, x.size).reshape(x.shape)
    kw = dict(propagate_down=[True], top_diffs=[dy], dtype=np.float64)
    apart = run_layer_on("cpu", _lp(type_name, **params), [x], **kw)
    together = run_layer_on(device, _lp(type_name, bottoms=("h",), tops=("h",), **params), [x], **kw)
    np.testing.assert_allclose(together.tops[0], apart.tops[0], rtol=1e-12)
    np.testing.assert_allclose(together.bottom_diffs[0], apart.bottom_diffs[0], rtol=1e-12)


# =========================================================================== neurons
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bnll_is_stable_for_large_inputs(device, dtype):
    """log(1 + eˣ) without overflow: ≈ x for large x, ≈ eˣ for very negative x; the gradient
    e/(1 + e) with e = exp(min(x, 50)) stays finite (Caffe's kBNLL_THRESHOLD)."""
    x = np.array([-1000.0, -100.0, -30.0, 0.0, 30.0, 100.0, 1000.0])
    run = run_layer_on(device, _lp("BNLL"), [x], dtype=dtype, propagate_down=[True],
                       top_diffs=[np.ones_like(x)])
    y, dx = run.tops[0], run.bottom_diffs[0]
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    np.testing.assert_allclose(y, ref.bnll(x).astype(dtype), rtol=1e-6, atol=1e-15)   # Caffe's log(1. + ·)
    np.testing.assert_allclose(dx, [0.0, 0.0, np.exp(-30.0), 0.5, 1.0, 1.0, 1.0], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("device", DEVICES)
def test_power_special_cases(device):
    """Caffe's PowerLayer: power 0 gives the constant 1 and scale 0 the constant shift^power,
    both with a zero gradient (whatever x is); power 1 the constant gradient scale."""
    x = np.array([-2.0, 0.0, 3.0, np.inf])
    dy = np.array([1.0, -2.0, 0.5, 1.0])
    kw = dict(propagate_down=[True], top_diffs=[dy])
    run = run_layer_on(device, _lp("Power", power_param={"power": 0.0, "scale": 2.0}), [x], **kw)
    np.testing.assert_array_equal(run.tops[0], [1.0] * 4)
    np.testing.assert_array_equal(run.bottom_diffs[0], [0.0] * 4)
    run = run_layer_on(device, _lp("Power", power_param={"power": 3.0, "scale": 0.0, "shift": 2.0}),
                       [x], **kw)
    np.testing.assert_array_equal(run.tops[0], [8.0] * 4)
    np.testing.assert_array_equal(run.bottom_diffs[0], [0.0] * 4)
    run = run_layer_on(device, _lp("Power", power_param={"power": 1.0, "scale": -1.5, "shift": 1.0}),
                       [x[:3]], propagate_down=[True], top_diffs=[dy[:3]])
    np.testing.assert_array_equal(run.tops[0], [4.0, 1.0, -3.5])
    np.testing.assert_array_equal(run.bottom_diffs[0], -1.5 * dy[:3])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("power,expected", [(3.0, 0.0), (2.0, 0.0), (2.5, 0.0), (0.5, np.inf)])
def test_power_gradient_where_the_base_is_zero(device, power, expected):
    """Where shift + scale·x = 0, Caffe's y/(shift + scale·x) is 0/0 = NaN for power > 1 (other
    than 2); jitnet gives the derivative's value power·scale·0^(power−1): 0 for power > 1,
    infinite below 1 (a documented deviation). Elsewhere it is Caffe's y/base formula."""
    x = np.array([0.5, 1.0])                       # shift + scale·x = −1 + 2x: 0 at x = 0.5
    lp = _lp("Power", power_param={"power": power, "scale": 2.0, "shift": -1.0})
    with np.errstate(divide="ignore", invalid="ignore"):
        run = run_layer_on(device, lp, [x], propagate_down=[True], top_diffs=[np.ones(2)])
    assert run.bottom_diffs[0][0] == expected
    assert run.bottom_diffs[0][1] == pytest.approx(power * 2.0 * 1.0 ** (power - 1.0))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")   # the simulator's numpy
@pytest.mark.parametrize("device", DEVICES)
def test_power_negative_base_fractional_power_is_nan_not_an_error(device):
    """C's pow gives NaN for a negative base and a non-integer power; Caffe keeps it, and so
    does jitnet (the solver's NaN guard then names the layer)."""
    lp = _lp("Power", power_param={"power": 0.5})
    with np.errstate(invalid="ignore"):
        (y,) = run_layer_on(device, lp, [np.array([-4.0, 4.0])], backward=False).tops
    assert np.isnan(y[0]) and y[1] == 2.0


def test_exp_and_log_bases():
    """Exp: base^(shift + scale·x) with base −1 meaning e; Log: its inverse."""
    x = np.array([-1.0, 0.0, 0.5, 2.0])
    (y,) = forward_layer(_lp("Exp", exp_param={"base": 2.0, "scale": 3.0, "shift": -1.0}), [x])
    np.testing.assert_allclose(y, 2.0 ** (3.0 * x - 1.0), rtol=1e-14)
    (y,) = forward_layer(_lp("Exp"), [x])
    np.testing.assert_allclose(y, np.exp(x), rtol=1e-15)
    (y,) = forward_layer(_lp("Log", log_param={"base": 2.0, "scale": 3.0, "shift": 4.0}), [x])
    np.testing.assert_allclose(y, np.log2(3.0 * x + 4.0), rtol=1e-14)


@pytest.mark.parametrize("type_name", ["Exp", "Log"])
@pytest.mark.parametrize("base", [0.0, -0.5, np.inf, np.nan])
def test_exp_log_bad_base_is_a_layer_error(type_name, base):
    """Caffe: CHECK_GT(base, 0) unless base is −1, and log(base) finite (Log: 1/log(base) too)."""
    lp = _lp(type_name, name="e", **{f"{type_name.lower()}_param": {"base": base}})
    with pytest.raises(jitnet.LayerError, match="'e'.*base"):
        forward_layer(lp, [np.ones(2)])


def test_clip_gradient_passes_at_both_bounds():
    """Caffe's ClipLayer backward: top_diff · (x >= min && x <= max), both ends included."""
    x = np.array([-1.5, -1.0, 0.0, 2.0, 2.5])
    run = run_layer_on("cpu", _lp("Clip", clip_param={"min": -1.0, "max": 2.0}), [x],
                       propagate_down=[True], top_diffs=[np.ones(5)])
    np.testing.assert_array_equal(run.tops[0], [-1.0, -1.0, 0.0, 2.0, 2.0])
    np.testing.assert_array_equal(run.bottom_diffs[0], [0.0, 1.0, 1.0, 1.0, 0.0])


def test_prelu_filler_and_shared_slope():
    """Caffe's PReLU: slopes from prelu_param.filler, default constant 0.25; one per channel
    (axis 1), or a 0-D blob with channel_shared."""
    run = run_layer_on("cpu", _lp("PReLU"), [np.full((2, 3, 2), -2.0)], backward=False)
    assert run.layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(run.params[0], [0.25] * 3)
    np.testing.assert_array_equal(run.tops[0], np.full((2, 3, 2), -0.5))
    lp = _lp("PReLU", prelu_param={"channel_shared": True})
    lp.prelu_param.filler.type, lp.prelu_param.filler.value = "constant", -0.5
    run = run_layer_on("cpu", lp, [np.full((2, 3), -2.0)], backward=False)
    assert run.layer.blobs[0].shape == ()
    np.testing.assert_array_equal(run.tops[0], np.full((2, 3), 1.0))


@pytest.mark.parametrize("device", DEVICES)
def test_prelu_slope_gradient_accumulates(device):
    """∂E/∂a_c = Σ ∂E/∂y·x·[x <= 0] over channel c, added to the slope diff (param diffs
    accumulate over iter_size passes)."""
    x = np.array([[[-1.0, 2.0], [-3.0, -0.5]], [[0.5, -2.0], [1.0, 4.0]]])     # (2, 2, 2)
    dy = np.arange(1.0, 9.0).reshape(x.shape)
    layer_run = run_layer_on(device, _lp("PReLU"), [x], propagate_down=[True], top_diffs=[dy],
                             params=[np.array([0.1, -0.2])])
    expected = [(-1.0 * 1) + (-2.0 * 6), (-3.0 * 3) + (-0.5 * 4)]
    np.testing.assert_allclose(layer_run.param_diffs[0], expected, rtol=1e-14)
    layer = layer_run.layer
    bottom, top = [jitnet.Blob(x.shape, dtype=np.float64)], [jitnet.Blob(dtype=np.float64)]
    bottom[0].data[...] = x
    if device == "gpu":
        jitnet.set_mode_gpu()
    try:
        layer.run_forward(bottom, top)
        top[0].diff[...] = dy
        layer.run_backward(top, [False], bottom)                 # a second pass adds to it
    finally:
        jitnet.set_mode_cpu()
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * np.array(expected), rtol=1e-14)


def test_prelu_channel_count_change_is_a_layer_error():
    lp = _lp("PReLU", name="pr")
    run = run_layer_on("cpu", lp, [np.ones((2, 3))], backward=False)
    bottom = [jitnet.Blob((2, 4), dtype=np.float64)]
    with pytest.raises(jitnet.LayerError, match="'pr'.*4 channels.*3 slopes"):
        run.layer.run_forward(bottom, [jitnet.Blob(dtype=np.float64)])


# =========================================================================== gradients Caffe refuses
def test_threshold_backward_is_an_error_only_when_asked():
    """Caffe's Threshold has no backward (NOT_IMPLEMENTED): asking for the gradient of its
    bottom is an error naming the layer; not asking does nothing."""
    lp = _lp("Threshold", name="thr", threshold_param={"threshold": 0.5})
    x = np.array([0.25, 0.5, 0.75])
    run = run_layer_on("cpu", lp, [x], propagate_down=[False])
    np.testing.assert_array_equal(run.tops[0], [0.0, 0.0, 1.0])
    with pytest.raises(jitnet.LayerError, match="'thr'.*(Threshold).*no backward"):
        run_layer_on("cpu", lp, [x], propagate_down=[True])


THRESHOLD_NET = """
force_backward: {force}
layer {{ name: "data" type: "Input" top: "x" top: "target"
        input_param {{ shape {{ dim: 2 dim: 3 }} shape {{ dim: 2 dim: 2 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip" {ip_lr}
        inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" }} }} }}
layer {{ name: "thr" type: "Threshold" bottom: "ip" top: "step" }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "step" bottom: "target" top: "loss" }}
"""


def test_threshold_in_a_net():
    """Below a learning layer, the net asks for Threshold's bottom gradient: an error naming
    it (Caffe dies there too). force_backward alone does not ask for it (as for Accuracy)."""
    net = jitnet.Net(text_format.Parse(THRESHOLD_NET.format(force="false", ip_lr=""), pb.NetParameter()),
                     jitnet.TRAIN)
    net.forward()
    with pytest.raises(jitnet.LayerError, match="'thr'"):
        net.backward()
    frozen = 'param { lr_mult: 0 } param { lr_mult: 0 }'
    net = jitnet.Net(text_format.Parse(THRESHOLD_NET.format(force="true", ip_lr=frozen), pb.NetParameter()),
                     jitnet.TRAIN)
    net.forward()
    net.backward()


LABEL_LOSSES = {
    "MultinomialLogisticLoss": lambda: [np.full((2, 3), 0.5), np.array([0.0, 2.0])],
    "InfogainLoss": lambda: [np.ones((2, 3)), np.array([0.0, 2.0]), np.eye(3)],
    "SigmoidCrossEntropyLoss": lambda: [np.ones((2, 3)), np.full((2, 3), 0.5)],
    "HingeLoss": lambda: [np.ones((2, 3)), np.array([0.0, 2.0])],
}


@pytest.mark.parametrize("type_name", list(LABEL_LOSSES))
def test_loss_label_gradient_is_an_error(type_name):
    """Caffe: "<type> Layer cannot backpropagate to label inputs." (and InfogainLoss to its
    infogain matrix)."""
    bottoms = LABEL_LOSSES[type_name]()
    names = ("x", "label", "H")[:len(bottoms)]
    lp = _lp(type_name, bottoms=names, tops=("loss",), name="lossy")
    with pytest.raises(jitnet.LayerError, match="'lossy'.*bottom 1"):
        run_layer_on("cpu", lp, bottoms, propagate_down=[True, True] + [False] * (len(bottoms) - 2))
    if type_name == "InfogainLoss":
        with pytest.raises(jitnet.LayerError, match="'lossy'.*infogain matrix.*bottom 2"):
            run_layer_on("cpu", lp, bottoms, propagate_down=[True, False, True])


def test_contrastive_loss_ignores_propagate_down_to_the_similarity():
    """Caffe's ContrastiveLoss backward loops over bottoms 0 and 1 only: no error, no diff."""
    lp = _lp("ContrastiveLoss", bottoms=("a", "b", "y"), tops=("loss",))
    a, b, y = np.ones((2, 3)), np.zeros((2, 3)), np.array([1.0, 0.0])
    run = run_layer_on("cpu", lp, [a, b, y], propagate_down=[True, True, True])
    np.testing.assert_allclose(run.bottom_diffs[0], -run.bottom_diffs[1])
    np.testing.assert_array_equal(run.bottom_diffs[2], np.zeros(2))     # never written


# =========================================================================== losses
@pytest.mark.parametrize("device", DEVICES)
def test_multinomial_logistic_loss_threshold(device):
    """Caffe's kLOG_THRESHOLD: p is clipped at 1e-20 in the loss and in the gradient
    −loss_weight / (N·max(p, 1e-20))."""
    p = np.array([[0.0, 1.0], [0.5, 0.5]])
    run = run_layer_on(device, _lp("MultinomialLogisticLoss", bottoms=("p", "l"), tops=("loss",)),
                       [p, np.array([0.0, 1.0])], propagate_down=[True, False],
                       top_diffs=[np.array(1.0)])
    assert float(run.tops[0]) == pytest.approx((-np.log(1e-20) - np.log(0.5)) / 2, rel=1e-12)
    np.testing.assert_allclose(run.bottom_diffs[0], [[-0.5e20, 0.0], [0.0, -1.0]], rtol=1e-12)


def test_infogain_loss_with_identity_is_softmax_with_loss():
    """Caffe's documentation: with H the identity, InfogainLoss is SoftmaxWithLoss."""
    rng = np.random.default_rng(4)
    x, labels = rng.normal(size=(4, 3, 2)), rng.integers(0, 3, (4, 2)).astype(np.float64)
    info = run_layer_on("cpu", _lp("InfogainLoss", bottoms=("x", "l", "H"), tops=("loss",)),
                        [x, labels, np.eye(3)], propagate_down=[True, False, False],
                        top_diffs=[np.array(1.0)])
    soft = run_layer_on("cpu", _lp("SoftmaxWithLoss", bottoms=("x", "l"), tops=("loss",)),
                        [x, labels], propagate_down=[True, False], top_diffs=[np.array(1.0)])
    np.testing.assert_allclose(info.tops[0], soft.tops[0], rtol=1e-13)
    np.testing.assert_allclose(info.bottom_diffs[0], soft.bottom_diffs[0], rtol=1e-12, atol=1e-15)


def test_infogain_matrix_file(tmp_path):
    """H from infogain_loss_param.source (a binaryproto BlobProto, shape 1x1xCxC as Caffe's
    tools write it); a missing file and a matrix of the wrong size are errors naming the layer
    and the file."""
    rng = np.random.default_rng(5)
    h = rng.uniform(0.0, 2.0, (3, 3))
    path = tmp_path / "H.binaryproto"
    write_blob_proto(h.reshape(1, 1, 3, 3), path)
    x, labels = rng.normal(size=(4, 3)), np.array([0.0, 2.0, 1.0, 1.0])
    lp = _lp("InfogainLoss", bottoms=("x", "l"), tops=("loss",), name="info",
             infogain_loss_param={"source": str(path)})
    (loss,) = forward_layer(lp, [x, labels])
    np.testing.assert_allclose(loss, ref.infogain_loss(x, labels, h)[0], rtol=1e-12)
    write_blob_proto(np.ones((2, 2)), path)
    with pytest.raises(jitnet.LayerError, match=r"'info'.*H.binaryproto.*\(2, 2\).*3x3"):
        forward_layer(lp, [x, labels])
    lp.infogain_loss_param.source = str(tmp_path / "missing.binaryproto")
    with pytest.raises(jitnet.LayerError, match="'info'.*missing.binaryproto"):
        forward_layer(lp, [x, labels])


@pytest.mark.parametrize("device", DEVICES)
def test_sigmoid_cross_entropy_is_stable_and_batch_normalized(device):
    """The loss in the log(1 + e^−|x|) form stays finite for |x| = 1000; without
    normalization fields it divides by the batch size (Caffe's default for this layer)."""
    x = np.array([[1000.0, -1000.0], [0.0, 2.0]])
    t = np.array([[0.0, 1.0], [1.0, 0.25]])
    run = run_layer_on(device, _lp("SigmoidCrossEntropyLoss", bottoms=("x", "t"), tops=("loss",)),
                       [x, t], propagate_down=[True, False], top_diffs=[np.array(1.0)])
    expected = (1000.0 + 1000.0 + np.log(2.0) + (0.75 * 2.0 + np.log1p(np.exp(-2.0)))) / 2
    assert float(run.tops[0]) == pytest.approx(expected, rel=1e-12)
    sig = 1.0 / (1.0 + np.exp(-2.0))
    np.testing.assert_allclose(run.bottom_diffs[0], [[0.5, -0.5], [-0.25, (sig - 0.25) / 2]], rtol=1e-12)


def test_sigmoid_cross_entropy_ignores_by_truncated_target():
    """Caffe compares static_cast<int>(target) with ignore_label: with ignore_label 0 a soft
    target 0.5 is ignored too (no loss, no gradient), and VALID counts the others."""
    lp = _lp("SigmoidCrossEntropyLoss", bottoms=("x", "t"), tops=("loss",),
             loss_param={"ignore_label": 0, "normalization": pb.LossParameter.VALID})
    x, t = np.array([[0.3, -0.2, 1.0]]), np.array([[0.5, 1.0, 0.0]])
    run = run_layer_on("cpu", lp, [x, t], propagate_down=[True, False], top_diffs=[np.array(1.0)])
    assert float(run.tops[0]) == pytest.approx(np.log1p(np.exp(0.2)), rel=1e-12)
    assert run.bottom_diffs[0][0, 0] == 0 and run.bottom_diffs[0][0, 2] == 0


def test_hinge_loss_norms():
    """Caffe's HingeLoss: L1 (default) Σ max(0, 1 − t·x) / N, L2 the squares."""
    x, labels = np.array([[0.5, -2.0, 0.25], [3.0, 0.0, -0.5]]), np.array([0.0, 2.0])
    # margins: row 0: 1 − 0.5, max(0, 1 − 2), 1.25; row 1: 4, 1, 1.5
    (l1,) = forward_layer(_lp("HingeLoss", bottoms=("x", "l"), tops=("loss",)), [x, labels])
    assert float(l1) == pytest.approx((0.5 + 0.0 + 1.25 + 4.0 + 1.0 + 1.5) / 2)
    lp = _lp("HingeLoss", bottoms=("x", "l"), tops=("loss",), hinge_loss_param={"norm": 2})
    (l2,) = forward_layer(lp, [x, labels])
    assert float(l2) == pytest.approx((0.25 + 1.5625 + 16.0 + 1.0 + 2.25) / 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_loss_gradient_is_caffes(device, legacy):
    """Caffe's gradient for dissimilar pairs has (margin − d)/(d + 1e-4), not the exact
    (margin − d)/d: jitnet keeps it (so training follows Caffe's), pinned here against a
    reference of that formula; the table's finite-difference check allows for the 1e-4."""
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    b[0] = a[0] + 0.01                                        # a nearly coincident pair
    y = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    lp = _lp("ContrastiveLoss", bottoms=("a", "b", "y"), tops=("loss",),
             contrastive_loss_param={"margin": 2.5, "legacy_version": legacy})
    run = run_layer_on(device, lp, [a, b, y], propagate_down=[True, True, False],
                       top_diffs=[np.array(1.0)])
    want = ref.contrastive_loss_gradient(a, b, y, 2.5, legacy)
    np.testing.assert_allclose(run.bottom_diffs[0], want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(run.bottom_diffs[1], -want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(run.tops[0], ref.contrastive_loss(a, b, y, 2.5, legacy), rtol=1e-12)


def test_contrastive_loss_similarity_is_truncated():
    """Caffe reads the similarity as static_cast<int>(y): 0.7 is dissimilar, 2 similar."""
    a, b = np.array([[0.0, 0.0], [0.0, 0.0]]), np.array([[0.6, 0.8], [0.6, 0.8]])   # d = 1
    lp = _lp("ContrastiveLoss", bottoms=("a", "b", "y"), tops=("loss",),
             contrastive_loss_param={"margin": 3.0})
    (loss,) = forward_layer(lp, [a, b, np.array([0.7, 2.0])])
    assert float(loss) == pytest.approx((4.0 + 1.0) / 4)


# =========================================================================== bad input
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("type_name", ["MultinomialLogisticLoss", "InfogainLoss", "HingeLoss",
                                       "SigmoidCrossEntropyLoss", "ContrastiveLoss"])
def test_nan_and_out_of_range_labels_name_the_layer(device, type_name):
    """Labels outside the class range (targets outside [0, 1]) and NaN labels: Caffe reads out
    of bounds or computes garbage; jitnet stops with an error naming the layer, on both sides."""
    if type_name == "ContrastiveLoss":
        bottoms = [np.ones((2, 3)), np.zeros((2, 3)), np.array([1.0, np.nan])]
        bad_sets = [bottoms]
    else:
        good = LABEL_LOSSES[type_name]()
        bad_values = [np.nan, 3.0, -1.0] if type_name != "SigmoidCrossEntropyLoss" else [np.nan, 1.5, -0.5]
        bad_sets = []
        for v in bad_values:
            labels = good[1].copy()
            labels.flat[1] = v
            bad_sets.append([good[0], labels] + good[2:])
    for bottoms in bad_sets:
        lp = _lp(type_name, bottoms=("x", "label", "z")[:len(bottoms)], tops=("loss",), name="lossy")
        with pytest.raises(jitnet.LayerError, match="'lossy'.*(label|target)"):
            run_layer_on(device, lp, bottoms, backward=False)


def test_loss_gradient_check_at_default_parameters():
    """The default parameters of each loss, checked once in float64 (the table draws others)."""
    rng = np.random.default_rng(9)
    x, labels = rng.normal(size=(3, 4)), np.array([0.0, 3.0, 1.0])
    check_gradients(_lp("HingeLoss", bottoms=("x", "l"), tops=("loss",)), [x, labels])
    check_gradients(_lp("SigmoidCrossEntropyLoss", bottoms=("x", "t"), tops=("loss",)),
                    [x, rng.uniform(0, 1, (3, 4))])
    check_gradients(_lp("InfogainLoss", bottoms=("x", "l", "H"), tops=("loss",)),
                    [x, labels, rng.uniform(0, 1, (4, 4))])
    check_gradients(_lp("MultinomialLogisticLoss", bottoms=("p", "l"), tops=("loss",)),
                    [rng.uniform(0.1, 1.0, (3, 4)), labels])


def test_real_autoencoder_trains_through_sigmoid_cross_entropy():
    """Caffe's mnist_autoencoder example (its LMDB Data layers replaced by an Input layer, and
    its EuclideanLoss, which shares the name "loss" with the SigmoidCrossEntropyLoss, renamed):
    the cross-entropy of the reconstruction against the pixels back-propagates to the encoder."""
    from pathlib import Path
    models = Path(__file__).resolve().parents[2] / "shared" / "models"
    path = models / "mnist_autoencoder" / "mnist_autoencoder.prototxt"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    net_param = jitnet.proto.read_net(str(path))
    layers = [l for l in net_param.layer if l.type != "Data"]
    net_param.ClearField("layer")
    data = net_param.layer.add(name="data", type="Input", top=["data"])
    data.input_param.shape.add().dim.extend([2, 1, 28, 28])
    net_param.layer.extend(layers)
    net_param.layer[-1].name = "l2_loss"
    jitnet.set_random_seed(1)
    net = jitnet.Net(net_param, jitnet.TRAIN)
    pixels = np.random.default_rng(2).uniform(0.0, 1.0, (2, 1, 28, 28))
    out = net.forward(data=pixels)
    assert np.isfinite(out["cross_entropy_loss"]) and out["cross_entropy_loss"] > 0
    net.backward()
    grad = net.params["encode1"][0].diff
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
