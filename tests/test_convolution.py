"""Convolution, Deconvolution and Im2col behaviour that does not fit the layer table
(tests/layer_cases.py holds their forward, gradient, GPU-parity and bad-parameter rows):
the bilinear Deconvolution as an upsampler, the shapes of the learnable blobs and Caffe's
default fillers, reshapes after setup, the workspaces kept between calls, the direct
depthwise kernels against the GEMM path in a net, and what error messages say."""
import re

import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet.layer import create_layer, layer_class
from jitnet.proto import pb
from jitnet.testing import forward_layer, run_layer_on

import reference as ref


def _lp(type_name, name="conv", bottoms=("x",), tops=("y",), **fields):
    lp = pb.LayerParameter(name=name, type=type_name, bottom=list(bottoms), top=list(tops))
    p = lp.convolution_param
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            getattr(p, key).extend(value)
        elif isinstance(value, dict):
            getattr(p, key).CopyFrom(pb.FillerParameter(**value))
        else:
            setattr(p, key, value)
    return lp


def _setup(lp, shapes, dtype=np.float64):
    bottom = [jitnet.Blob(s, dtype=dtype) for s in shapes]
    rng = np.random.default_rng(7)
    for blob in bottom:
        blob.data[...] = rng.uniform(-1, 1, blob.shape)
    top = [jitnet.Blob(dtype=dtype) for _ in lp.top]
    layer = create_layer(lp, jitnet.TRAIN)
    layer.setup_layer(bottom, top)
    return layer, bottom, top


def _bilinear_kernel(size):
    """FCN's upsampling filter, from its formula: (1 − |i/f − c|)·(1 − |j/f − c|),
    f = ceil(size/2), c = (2f − 1 − f mod 2) / (2f)."""
    f = np.ceil(size / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1 - np.abs(np.arange(size) / f - c)
    return ramp[:, None] * ramp[None, :]


@pytest.mark.parametrize("factor", [2, 3])
def test_bilinear_deconvolution_upsamples_a_constant_image(factor):
    """FCN's upsampling layer: kernel 2f − f mod 2, stride f, pad ceil((f − 1)/2), one group
    per channel, bilinear weights. A constant image comes out constant away from the border
    (the taps that reach each interior pixel sum to 1), and the whole output matches the
    transposed convolution computed by numpy with the same filter."""
    kernel, pad, channels = 2 * factor - factor % 2, int(np.ceil((factor - 1) / 2)), 3
    lp = _lp("Deconvolution", num_output=channels, group=channels, kernel_size=[kernel],
             stride=[factor], pad=[pad], bias_term=False, weight_filler={"type": "bilinear"})
    levels = np.array([0.5, -1.25, 3.0])
    x = np.broadcast_to(levels[None, :, None, None], (2, channels, 5, 6)).copy()
    layer, bottom, top = _setup(lp, [x.shape])
    bottom[0].data[...] = x
    layer.run_forward(bottom, top)
    y = top[0].data
    assert y.shape == (2, channels, factor * 5, factor * 6)
    np.testing.assert_allclose(layer.blobs[0].data,
                               np.broadcast_to(_bilinear_kernel(kernel), (channels, 1, kernel, kernel)))
    border = factor
    interior = y[:, :, border:-border, border:-border]
    np.testing.assert_allclose(interior, np.broadcast_to(levels[None, :, None, None], interior.shape),
                               rtol=1e-12)
    weights = np.broadcast_to(_bilinear_kernel(kernel), (channels, 1, kernel, kernel))
    np.testing.assert_allclose(y, ref.deconvolution(x, weights, None, 1, (kernel,) * 2, (factor,) * 2,
                                                    (pad,) * 2, (1, 1), channels), rtol=1e-12, atol=1e-12)


def test_bilinear_upsampling_interpolates_a_ramp():
    """Away from the border, factor-2 bilinear upsampling of a linear ramp is the ramp sampled
    at the output pixel centres: x_out = (i + 0.5)/2 − 0.5 in input coordinates."""
    lp = _lp("Deconvolution", num_output=1, group=1, kernel_size=[4], stride=[2], pad=[1],
             bias_term=False, weight_filler={"type": "bilinear"})
    ramp = np.arange(8.0)[None, None, None, :] * np.ones((1, 1, 6, 1))
    (y,) = forward_layer(lp, [ramp])
    centres = (np.arange(16) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(y[0, 0, 2:-2, 2:-2], np.broadcast_to(centres[2:-2], (8, 12)), atol=1e-12)


@pytest.mark.parametrize("type_name,shape,weight", [
    ("Convolution", (2, 6, 5, 5), (4, 3, 3, 2)),
    ("Deconvolution", (2, 6, 5, 5), (6, 2, 3, 2)),
])
def test_learnable_blob_shapes_and_default_fillers(type_name, shape, weight):
    """Convolution's weights are (num_output, channels/group, k...), Deconvolution's
    (channels, num_output/group, k...); the bias is (num_output); Caffe's default filler is
    constant 0 for both."""
    lp = _lp(type_name, num_output=4, group=2, kernel_h=3, kernel_w=2)
    layer, _, _ = _setup(lp, [shape])
    assert [b.shape for b in layer.blobs] == [weight, (4,)]
    assert all(not b.data.any() for b in layer.blobs)
    lp.convolution_param.bias_term = False
    assert layer_class(type_name).param_count(lp) == 1
    assert len(_setup(lp, [shape])[0].blobs) == 1


def test_no_spatial_axes_is_a_matrix_product():
    """With the channel axis last (axis −1) nothing is spatial: y = x·Wᵀ + b per row (Caffe
    allows 0 spatial axes; its 1×1 test holds for no axes)."""
    rng = np.random.default_rng(2)
    x, w, b = rng.normal(size=(3, 5)), rng.normal(size=(4, 5)), rng.normal(size=4)
    lp = _lp("Convolution", num_output=4, axis=-1)
    (y,) = forward_layer(lp, [x], params=[w, b])
    np.testing.assert_allclose(y, x @ w.T + b, rtol=1e-12)


def test_shape_changes_after_setup():
    """The batch and the spatial size may change; the channels (the weights are made for them)
    and the number of axes may not. Im2col has no weights: its channels may change."""
    lp = _lp("Convolution", num_output=2, kernel_size=[3], pad=[1])
    layer, bottom, top = _setup(lp, [(2, 3, 5, 5)])
    layer.run_forward(bottom, top)
    bottom[0].reshape((4, 3, 7, 6))
    layer.run_forward(bottom, top)
    assert top[0].shape == (4, 2, 7, 6)
    bottom[0].reshape((4, 2, 7, 6))
    with pytest.raises(jitnet.LayerError, match="'conv'.*3 channels.*shape \\(4, 2, 7, 6\\)"):
        layer.run_forward(bottom, top)
    bottom[0].reshape((4, 3, 7, 6, 1))
    with pytest.raises(jitnet.LayerError, match="'conv'.*num_axes may not change"):
        layer.run_forward(bottom, top)
    layer, bottom, top = _setup(_lp("Im2col", name="cols", kernel_size=[2]), [(1, 2, 3, 3)])
    bottom[0].reshape((1, 5, 3, 3))
    layer.run_forward(bottom, top)
    assert top[0].shape == (1, 20, 2, 2)


def _buffers(layer):
    return {name: getattr(layer, name).data_on("cpu").ctypes.data
            for name in ("_col", "_part") if getattr(layer, name, None) is not None}


@pytest.mark.parametrize("fields", [
    dict(num_output=8, kernel_size=[3], pad=[1]),                    # im2col + GEMM
    dict(num_output=6, kernel_size=[3], pad=[1], group=6),           # direct depthwise
])
def test_workspaces_are_kept_between_calls(fields):
    """The col and partial-sum workspaces are the layer's, sized at reshape: two forwards and
    backwards of one shape, or of a smaller batch, use the same buffers."""
    layer, bottom, top = _setup(_lp("Convolution", **fields), [(16, 6, 16, 16)], dtype=np.float32)
    assert layer.nchunks == min(16, jitnet.threads.configure()["numba_threads"])
    layer.run_forward(bottom, top)
    top[0].diff[...] = 1
    layer.run_backward(top, [True], bottom)
    before = _buffers(layer)
    assert before
    for batch in (16, 16, 9):
        bottom[0].reshape((batch, 6, 16, 16))
        layer.run_forward(bottom, top)
        top[0].diff[...] = 1
        layer.run_backward(top, [True], bottom)
        assert _buffers(layer) == before


DEPTHWISE_NET = """
name: "depthwise"
force_backward: true
layer { name: "data" type: "Input" top: "data" top: "target"
        input_param { shape { dim: 2 dim: 4 dim: 9 dim: 8 } shape { dim: 2 dim: 4 dim: 10 dim: 8 } } }
layer { name: "dw1" type: "Convolution" bottom: "data" top: "dw1"
        convolution_param { num_output: 4 group: 4 kernel_size: 3 pad: 1
                            weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" } } }
layer { name: "dw2" type: "Convolution" bottom: "dw1" top: "dw2"
        convolution_param { num_output: 4 group: 4 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 dilation: 1
                            weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" } } }
layer { name: "up" type: "Deconvolution" bottom: "dw2" top: "up"
        convolution_param { num_output: 4 group: 4 kernel_size: 4 stride: 2 pad: 1 pad: 2
                            weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "up" bottom: "target" top: "loss" }
"""


def _run_depthwise_net(direct):
    """Loss, tops, bottom diffs and param diffs of DEPTHWISE_NET, by name."""
    jitnet.set_random_seed(4)
    net = jitnet.Net(text_format.Parse(DEPTHWISE_NET, pb.NetParameter()), jitnet.TRAIN)
    rng = np.random.default_rng(5)
    net.blobs["data"].data[...] = rng.normal(size=net.blobs["data"].shape)
    net.blobs["target"].data[...] = rng.normal(size=net.blobs["target"].shape)
    layers = [net.layer_dict[name] for name in ("dw1", "dw2", "up")]
    for layer in layers:
        layer.direct_depthwise = direct
    results = {"loss": np.array(net.forward()["loss"])}
    net.backward()
    assert all(layer.direct == direct for layer in layers)
    for name in ("dw1", "dw2", "up"):
        results[f"{name} top"] = net.blobs[name].data.copy()
        for j, blob in enumerate(net.params[name]):
            results[f"{name} param {j} diff"] = blob.diff.copy()
    for name in ("data", "dw1", "dw2"):
        results[f"{name} diff"] = net.blobs[name].diff.copy()
    return results


def test_depthwise_net_gives_the_same_numbers_through_the_direct_kernels():
    """A net of depthwise layers (group == channels == num_output: stride 1 and 2, a non-square
    kernel, a depthwise Deconvolution) computes the same loss, tops and gradients through the
    direct depthwise kernels as through im2col + one GEMM per group."""
    direct, gemm = _run_depthwise_net(True), _run_depthwise_net(False)
    assert direct.keys() == gemm.keys()
    for name in direct:
        assert np.any(direct[name] != 0), name
        np.testing.assert_allclose(direct[name], gemm[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("type_name,shape,fields,message", [
    ("Convolution", (1, 3, 5, 5), dict(num_output=4, kernel_size=[3], group=2),
     r"channels .*\(3, axis 1.*not divisible by group 2"),
    ("Convolution", (1, 4, 5, 5), dict(num_output=3, kernel_size=[3], group=2),
     "num_output 3 is not a multiple of group 2"),
    ("Convolution", (1, 2, 4, 4), dict(num_output=2, kernel_size=[7], pad=[1]),
     r"spatial axis 0 would be 0 \(input 4, kernel 7.*extent 7, pad 1.*does not fit"),
    ("Im2col", (1, 2, 5, 5), dict(kernel_size=[3], dilation=[3]),
     r"would be -1 .*dilation 3 so extent 7"),
    ("Deconvolution", (1, 4, 1, 1), dict(num_output=4, kernel_size=[1], pad=[1]),
     "output along spatial axis 0 would be -1 .*the padding crops away the whole output"),
    ("Convolution", (1, 2, 4, 4, 4), dict(num_output=2, kernel_size=[2, 2]),
     r"kernel_size must be given once, or once per spatial axis \(3\), but is given 2 times"),
    ("Convolution", (1, 2, 4, 4), dict(num_output=2, stride=[1, 1, 1], kernel_size=[1]),
     r"stride must be given not at all, once, or once per spatial axis \(2\)"),
    ("Convolution", (1, 2, 6), dict(num_output=2, kernel_h=1, kernel_w=1),
     "kernel_h/kernel_w can only be used for 2-D convolution, but the bottom has 1 spatial axes"),
    ("Convolution", (1, 2, 6, 6), dict(num_output=2, kernel_size=[3], pad=[1], pad_h=1, pad_w=1),
     "either pad or pad_h/pad_w should be given, not both"),
    ("Convolution", (1, 2, 6, 6), dict(num_output=2, kernel_h=3),
     r"kernel dimensions must be positive, got \(3, 0\)"),
    ("Convolution", (1, 2, 6, 6), dict(num_output=2, kernel_size=[2], stride_h=0, stride_w=1),
     r"stride dimensions must be positive, got \(0, 1\)"),
    ("Im2col", (2, 4), dict(kernel_size=[1]), "at least 1 spatial axis"),
])
def test_error_messages_say_what_is_wrong(type_name, shape, fields, message):
    with pytest.raises(jitnet.LayerError, match="'conv'") as info:
        forward_layer(_lp(type_name, **fields), [np.ones(shape)])
    assert type_name in str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


def test_one_top_per_bottom():
    lp = _lp("Convolution", bottoms=("a", "b"), tops=("y",), num_output=2, kernel_size=[1])
    with pytest.raises(jitnet.NetDefinitionError, match="'conv'.*one top for each bottom.*2 bottom"):
        forward_layer(lp, [np.ones((1, 2, 3, 3))] * 2)


def test_bottoms_share_the_weights_and_their_gradients_add():
    """Caffe's Convolution with several bottoms: top i = conv(bottom i) with the same weights;
    the weight and bias gradients are the sums of the per-pair gradients."""
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(2, 3, 5, 4)), rng.normal(size=(2, 3, 5, 4))
    w, bias = rng.normal(size=(2, 3, 3, 3)), rng.normal(size=2)
    two = _lp("Convolution", bottoms=("a", "b"), tops=("ya", "yb"), num_output=2, kernel_size=[3])
    one = _lp("Convolution", num_output=2, kernel_size=[3])
    dya, dyb = rng.normal(size=(2, 2, 3, 2)), rng.normal(size=(2, 2, 3, 2))
    both = run_layer_on("cpu", two, [a, b], params=[w, bias], top_diffs=[dya, dyb],
                        propagate_down=[True, True])
    first = run_layer_on("cpu", one, [a], params=[w, bias], top_diffs=[dya], propagate_down=[True])
    second = run_layer_on("cpu", one, [b], params=[w, bias], top_diffs=[dyb], propagate_down=[True])
    np.testing.assert_allclose(both.tops[0], first.tops[0], rtol=1e-12)
    np.testing.assert_allclose(both.tops[1], second.tops[0], rtol=1e-12)
    np.testing.assert_allclose(both.bottom_diffs[1], second.bottom_diffs[0], rtol=1e-12)
    for j in range(2):
        np.testing.assert_allclose(both.param_diffs[j], first.param_diffs[j] + second.param_diffs[j],
                                   rtol=1e-12)
