"""ONNX export (jitnet.export, net.to_onnx, jitnet export_onnx): the Caffe rules that ONNX's
operators do not share, each on a chosen case (pooling's last window and divisor, ArgMax's
ties, BatchNorm's scale factor, Clip with min > max, in-place layers, split and view blobs),
names carried over, dynamic and fixed batch sizes, old opsets, the command line, and the
errors for what cannot be exported. Every graph is checked by onnx.checker (inside the
export) and run by onnxruntime against jitnet's forward."""
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet import cli
from jitnet.proto import pb

onnx = pytest.importorskip("onnx", reason="the ONNX export tests need onnx (pip install -e '.[test]')")
pytest.importorskip("onnxruntime", reason="the ONNX export tests run the models in onnxruntime "
                                          "(pip install -e '.[test]')")

from jitnet.export import OnnxExportError, compare_with_onnxruntime  # noqa: E402

from test_onnx_layers import check_against_onnxruntime, run_onnxruntime  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
# the tests on LeNet and CIFAR-10 read the shared model files; the others build their nets
needs_models = pytest.mark.skipif(not MODELS.is_dir(), reason=f"{MODELS} is absent (the shared "
                                  "model files sit beside the project in CI, not in a user's clone)")

LENET = MODELS / "lenet_mnist" / "lenet.prototxt"
LENET_WEIGHTS = MODELS / "lenet_mnist" / "lenet_iter_10000.caffemodel"
FLT_MAX = float(np.finfo(np.float32).max)


def net_from(text, phase=jitnet.TEST, seed=0):
    """A net from prototxt text, its learned blobs random (seeded)."""
    net = jitnet.Net(text_format.Parse(text, pb.NetParameter()), phase)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for blob in layer.blobs:
            blob.data[...] = rng.uniform(0.5, 1.5, blob.shape)
    return net


def input_layer(name, shape):
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ {dims} }} }} }}\n'


def random_inputs(net, seed=1):
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-2, 2, net.blobs[name].shape).astype(np.float32) for name in net.inputs}


def ops(model):
    return [node.op_type for node in model.graph.node]


# =========================================================================== pooling
def pooling_net(params, shape=(2, 3, 7, 7), tops=("y",)):
    top_lines = " ".join(f'top: "{t}"' for t in tops)
    return net_from(input_layer("x", shape) + f'layer {{ name: "pool" type: "Pooling" bottom: "x" '
                                              f'{top_lines} pooling_param {{ {params} }} }}')


@pytest.mark.parametrize("params,shape,out", [
    # CEIL adds a window past the floor count; the padding after it is more than pad
    ("pool: MAX kernel_size: 3 stride: 2", (1, 2, 6, 6), (3, 3)),
    # Caffe's last-window rule: the window starting in the padding is dropped (ceil says 4)
    ("pool: MAX kernel_size: 2 stride: 2 pad: 1", (1, 2, 5, 5), (3, 3)),
    ("pool: AVE kernel_size: 2 stride: 2 pad: 1", (1, 2, 5, 5), (3, 3)),
    # AVE divisor: the last window clipped to the padded extent (2 of 3 rows), not the kernel
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1", (1, 2, 6, 6), (4, 4)),
    # non-square, and along W the last window dropped (it would start in the padding)
    ("pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 2 pad_w: 1", (2, 1, 7, 8), (5, 3)),
    ("pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (1, 2, 6, 6), (3, 3)),
    # windows wholly past the image (CEIL, stride > kernel, no pad): −FLT_MAX (MAX), 0 (AVE)
    ("pool: MAX kernel_size: 1 stride: 3", (1, 2, 5, 5), (3, 3)),
    ("pool: AVE kernel_size: 1 stride: 3", (1, 2, 5, 5), (3, 3)),
    ("pool: STOCHASTIC kernel_size: 1 stride: 3", (1, 2, 5, 5), (3, 3)),
    ("pool: STOCHASTIC kernel_size: 3 stride: 2", (1, 2, 6, 6), (3, 3)),
    ("pool: MAX global_pooling: true", (2, 3, 5, 4), (1, 1)),
    ("pool: AVE global_pooling: true", (2, 3, 5, 4), (1, 1)),
])
def test_pooling_keeps_caffes_windows_and_divisor(params, shape, out):
    net = pooling_net(params, shape)
    assert net.blobs["y"].shape[2:] == out
    inputs = random_inputs(net)
    if "STOCHASTIC" in params:
        inputs["x"] = np.abs(inputs["x"]) + 0.1
    model, _ = check_against_onnxruntime(net, inputs)
    assert all(a.name != "ceil_mode" for node in model.graph.node for a in node.attribute)
    y = net.blobs["y"].data
    if "kernel_size: 1 stride: 3" in params:        # the third row and column are past the image
        empty = -FLT_MAX if "MAX" in params else 0.0
        assert (y[:, :, 2, :] == empty).all() and (y[:, :, :, 2] == empty).all()


def test_pooling_mask_top_is_the_index_within_the_plane():
    net = pooling_net("pool: MAX kernel_size: 3 stride: 2 pad: 1", (2, 3, 7, 6), tops=("y", "mask"))
    inputs = random_inputs(net)
    check_against_onnxruntime(net, inputs)
    assert net.blobs["mask"].data.max() < 7 * 6


def test_spp_levels_concatenated():
    net = net_from(input_layer("x", (2, 3, 8, 6)) + 'layer { name: "spp" type: "SPP" bottom: "x" '
                   'top: "y" spp_param { pyramid_height: 3 pool: AVE } }')
    check_against_onnxruntime(net, random_inputs(net))


# =========================================================================== other Caffe rules
# Each of the Caffe rules on a chosen layer (the layer table's drawn samples cover them
# too, at random): the exported graph must compute jitnet's forward, in the ops listed.
RULES = {
    "LRN across channels": ("x", (2, 7, 4, 5), 'type: "LRN" lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 }',
                            ["LRN"]),
    "LRN within channel": ("x", (2, 3, 6, 5), 'type: "LRN" lrn_param { local_size: 3 alpha: 0.4 beta: 0.6 '
                                              'norm_region: WITHIN_CHANNEL }', None),
    "Slice points": ("x", (2, 9, 3), 'type: "Slice" top: "a" top: "b" top: "c" slice_param { axis: 1 slice_point: 2 '
                                     'slice_point: 7 }', ["Split"]),
    "Slice even": ("x", (2, 3, 6), 'type: "Slice" top: "b" top: "c" slice_param { axis: -1 }', ["Split"]),
    "Reduction SUM axis 1": ("x", (2, 3, 4), 'type: "Reduction" reduction_param { axis: 1 coeff: -0.5 }', None),
    "Reduction ASUM axis -1": ("x", (2, 3, 4), 'type: "Reduction" reduction_param { operation: ASUM axis: -1 }',
                               ["ReduceL1"]),
    "Reduction SUMSQ axis 0": ("x", (2, 3, 4), 'type: "Reduction" reduction_param { operation: SUMSQ }',
                               ["ReduceSumSquare"]),
    "Reduction MEAN axis 2": ("x", (2, 3, 4, 5), 'type: "Reduction" reduction_param { operation: MEAN axis: 2 '
                                                 'coeff: 3 }', None),
    "ArgMax axis": ("x", (2, 5, 3), 'type: "ArgMax" argmax_param { axis: 1 top_k: 2 }', None),
    "ArgMax axis values": ("x", (2, 5, 3), 'type: "ArgMax" argmax_param { axis: -1 out_max_val: true }', None),
    "ArgMax per sample": ("x", (3, 2, 2, 2), 'type: "ArgMax" argmax_param { top_k: 3 }', None),
    "ArgMax per sample with values": ("x", (3, 4, 2), 'type: "ArgMax" argmax_param { top_k: 2 out_max_val: true }',
                                      None),
    "Deconvolution stride pad dilation group": (
        "x", (2, 4, 5, 6), 'type: "Deconvolution" convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 '
                           'stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1 dilation: 2 group: 2 }', ["ConvTranspose"]),
    "Crop offsets from axis 1": ("x", (2, 5, 6, 7), 'type: "Crop" bottom: "ref" crop_param { axis: 1 offset: 1 '
                                                    'offset: 2 offset: 0 }', ["Slice"]),
    "Scale learned axis 0 with bias": ("x", (3, 4, 2), 'type: "Scale" scale_param { axis: 0 num_axes: 2 '
                                                       'bias_term: true }', None),
    "Bias learned one value": ("x", (3, 4, 2), 'type: "Bias" bias_param { num_axes: 0 }', ["Add"]),
    "Eltwise PROD": ("x", (3, 4), 'type: "Eltwise" bottom: "x" bottom: "x" eltwise_param { operation: PROD }',
                     ["Mul", "Mul"]),
}
REFERENCES = {"Crop offsets from axis 1": (2, 3, 4, 7)}


@pytest.mark.parametrize("rule", list(RULES))
def test_caffe_rule(rule):
    bottom, shape, body, expected_ops = RULES[rule]
    text = input_layer(bottom, shape)
    if rule in REFERENCES:
        text += input_layer("ref", REFERENCES[rule])
    tops = "" if 'top: "' in body else ' top: "y"'
    text += f'layer {{ name: "rule" bottom: "{bottom}"{tops} {body} }}'
    net = net_from(text)
    inputs = random_inputs(net)
    if rule.startswith("ArgMax"):                       # ties as well as distinct values
        inputs["x"] = np.round(inputs["x"] * 2)
    model, report = check_against_onnxruntime(net, inputs)
    if expected_ops is not None:
        assert ops(model) == expected_ops
    assert all(np.abs(net.blobs[top].data).max() > 0 for top in net.outputs)   # not all zeros


def test_argmax_ties_rank_the_larger_index_first():
    net = net_from(input_layer("x", (2, 6)) + 'layer { name: "top3" type: "ArgMax" bottom: "x" '
                   'top: "y" argmax_param { top_k: 3 out_max_val: true } }')
    x = np.array([[1, 3, 3, 2, 3, 0], [5, 5, 5, 5, 5, 5]], np.float32)
    check_against_onnxruntime(net, {"x": x})
    np.testing.assert_array_equal(net.blobs["y"].data[0, 0], [4, 2, 1])
    np.testing.assert_array_equal(net.blobs["y"].data[1, 0], [5, 4, 3])


@pytest.mark.parametrize("factor", [0.0, 1.0, 999.9])
def test_batch_norm_folds_the_scale_factor_into_the_statistics(factor):
    net = net_from(input_layer("x", (2, 3, 4)) + 'layer { name: "bn" type: "BatchNorm" bottom: "x" '
                   'top: "x" batch_norm_param { eps: 0.01 } }')
    bn = net.layer_dict["bn"]
    mean, var = np.array([0.5, -1.0, 2.0]), np.array([1.0, 0.25, 4.0])
    bn.blobs[0].data[...], bn.blobs[1].data[...], bn.blobs[2].data[...] = mean * factor, var * factor, factor
    model, _ = check_against_onnxruntime(net, random_inputs(net))
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    expect = 1.0 if factor else 0.0           # Caffe: a factor of 0 means statistics 0
    np.testing.assert_allclose(stored["bn/mean"], mean * expect, rtol=1e-6)
    np.testing.assert_allclose(stored["bn/variance"], var * expect, rtol=1e-6)
    assert ops(model) == ["BatchNormalization"]


def test_clip_with_min_above_max_gives_min():
    net = net_from(input_layer("x", (4, 5)) + 'layer { name: "clip" type: "Clip" bottom: "x" '
                   'top: "y" clip_param { min: 1 max: -1 } }')
    check_against_onnxruntime(net, random_inputs(net))
    assert (net.blobs["y"].data == 1).all()


def test_scale_and_bias_broadcast_from_their_axis():
    text = (input_layer("x", (2, 3, 4, 5)) + input_layer("s", (3, 4)) +
            'layer { name: "scale" type: "Scale" bottom: "x" bottom: "s" top: "y" '
            'scale_param { axis: 1 bias_term: true } }\n'
            'layer { name: "bias" type: "Bias" bottom: "y" top: "z" bias_param { axis: -2 num_axes: 2 } }')
    check_against_onnxruntime(net_from(text), random_inputs(net_from(text)))


def test_eltwise_coefficients_and_max_ties():
    text = (input_layer("a", (3, 4)) + input_layer("b", (3, 4)) +
            'layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" bottom: "a" top: "s" '
            'eltwise_param { coeff: 0.5 coeff: -2 coeff: 3 } }\n'
            'layer { name: "max" type: "Eltwise" bottom: "a" bottom: "b" top: "m" '
            'eltwise_param { operation: MAX } }')
    net = net_from(text)
    a = np.round(random_inputs(net)["a"])
    check_against_onnxruntime(net, {"a": a, "b": a.copy()})


def test_crop_and_deconvolution_as_fcn_upsamples():
    text = (input_layer("x", (1, 2, 5, 5)) + input_layer("ref", (1, 2, 8, 9)) +
            'layer { name: "up" type: "Deconvolution" bottom: "x" top: "up" convolution_param { '
            'num_output: 2 kernel_size: 4 stride: 2 group: 2 bias_term: false '
            'weight_filler { type: "bilinear" } } }\n'
            'layer { name: "crop" type: "Crop" bottom: "up" bottom: "ref" top: "y" '
            'crop_param { axis: 2 offset: 1 offset: 3 } }')
    net = net_from(text)
    model, _ = check_against_onnxruntime(net, random_inputs(net))
    assert ops(model) == ["ConvTranspose", "Slice"]


def test_reshape_zero_and_minus_one_follow_the_batch():
    text = (input_layer("x", (2, 3, 4)) +
            'layer { name: "r" type: "Reshape" bottom: "x" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 2 } } }\n'
            'layer { name: "f" type: "Flatten" bottom: "r" top: "f" }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "f" top: "ip" inner_product_param { num_output: 3 } }\n'
            'layer { name: "ip2" type: "InnerProduct" bottom: "r" top: "ip2" inner_product_param { num_output: 2 axis: 2 } }')
    net = net_from(text)
    model = net.to_onnx()
    for batch in (2, 5):
        net.blobs["x"].reshape((batch, 3, 4))
        net.reshape()
        report = compare_with_onnxruntime(net, model, random_inputs(net, batch))
        assert max(diff for diff, _ in report.values()) < 1e-5


# =========================================================================== blobs and names
@needs_models
def test_lenet_names_carry_over():
    net = jitnet.Net(str(LENET), jitnet.TEST, weights=str(LENET_WEIGHTS))
    model = net.to_onnx()
    nodes = {node.name: node for node in model.graph.node}
    values = {o for node in model.graph.node for o in node.output}
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["prob"]
    for layer in ("conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "prob"):
        assert layer in nodes, layer
    assert {"conv1", "pool1", "conv2", "pool2", "ip1", "ip2", "prob"} <= values
    # relu1 runs in place on ip1: the blob's last version is relu1's output, named ip1
    assert nodes["relu1"].output == ["ip1"] and nodes["ip1"].output == ["ip1@ip1"]
    initializers = {t.name for t in model.graph.initializer}
    assert {"conv1/weight", "conv1/bias", "ip2/weight", "ip2/bias"} <= initializers
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", 1, 28, 28]


def test_split_tops_are_the_bottom_and_views_follow_in_place_writes():
    # x feeds two layers (a Split is inserted); f is a view of x, and the in-place ReLU on f
    # changes x too, as in Caffe: the Eltwise reads the rectified x
    text = (input_layer("x", (2, 6)) +
            'layer { name: "f" type: "Flatten" bottom: "x" top: "f" flatten_param { axis: 0 } }\n'
            'layer { name: "relu" type: "ReLU" bottom: "f" top: "f" }\n'
            'layer { name: "sum" type: "Eltwise" bottom: "x" bottom: "x" top: "s" }\n'
            'layer { name: "copy" type: "Split" bottom: "s" top: "s1" top: "s2" }')
    net = net_from(text)
    model, _ = check_against_onnxruntime(net, random_inputs(net))
    assert "Split" not in ops(model)
    assert [o.name for o in model.graph.output] == ["f", "s1", "s2"]
    assert (net.blobs["s1"].data >= 0).all()


def test_silence_consumes_without_nodes():
    text = (input_layer("x", (2, 3)) + input_layer("unused", (4,)) +
            'layer { name: "quiet" type: "Silence" bottom: "unused" }\n'
            'layer { name: "t" type: "TanH" bottom: "x" top: "y" }')
    net = net_from(text)
    model, _ = check_against_onnxruntime(net, random_inputs(net))
    assert ops(model) == ["Tanh"]


@needs_models
def test_float64_net_exports_float32():
    net = jitnet.Net(str(LENET), jitnet.TEST, weights=str(LENET_WEIGHTS), dtype=np.float64)
    model = net.to_onnx(batch=None)
    assert {t.data_type for t in model.graph.initializer} == {onnx.TensorProto.FLOAT}
    report = compare_with_onnxruntime(net, model)
    assert report["prob"][0] < 1e-5


# =========================================================================== batch and opset
@needs_models
def test_fixed_batch_restores_the_net():
    net = jitnet.Net(str(LENET), jitnet.TEST, weights=str(LENET_WEIGHTS))
    net.blobs["data"].data[...] = 0.25
    model = net.to_onnx(batch=3)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [3, 1, 28, 28]
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [3, 10]
    assert net.blobs["data"].shape == (64, 1, 28, 28) and (net.blobs["data"].data == 0.25).all()
    assert net.blobs["prob"].shape == (64, 10)


@needs_models
def test_dynamic_batch_runs_at_other_sizes():
    net = jitnet.Net(str(MODELS / "cifar10_quick" / "cifar10_quick.prototxt"), jitnet.TEST)
    model = net.to_onnx()
    for batch in (1, 4):
        net.blobs["data"].reshape((batch, 3, 32, 32))
        net.reshape()
        report = compare_with_onnxruntime(net, model, random_inputs(net, batch))
        assert report["prob"][0] < 1e-6


@needs_models
@pytest.mark.parametrize("opset", [9, 13, 21])
def test_lenet_at_other_opsets(opset):
    net = jitnet.Net(str(LENET), jitnet.TEST, weights=str(LENET_WEIGHTS))
    model = net.to_onnx(opset=opset)
    assert model.opset_import[0].version == opset
    assert compare_with_onnxruntime(net, model)["prob"][0] < 1e-5


@pytest.mark.parametrize("layer,opset,operator,needs", [
    ('layer { name: "c" type: "Crop" bottom: "x" bottom: "x" top: "y" crop_param { axis: 1 } }',
     9, "Slice", 10),
    ('layer { name: "c" type: "Softmax" bottom: "x" top: "y" }', 12, "Softmax", 13),
    ('layer { name: "c" type: "ArgMax" bottom: "x" top: "y" }', 11, "ArgMax", 12),
    ('layer { name: "c" type: "ArgMax" bottom: "x" top: "y" argmax_param { top_k: 2 } }', 10, "TopK", 11),
])
def test_opset_too_old_names_the_layer_and_the_operator(layer, opset, operator, needs):
    net = net_from(input_layer("x", (2, 3, 4)) + layer)
    with pytest.raises(OnnxExportError, match=rf"opset {opset} is too old for layer 'c' .*"
                                              rf"{operator}.* opset {needs}"):
        net.to_onnx(opset=opset)
    net.to_onnx(opset=needs)


# a small deploy net (convolution, pooling, inner product, softmax) for the tests that need
# no shared model file
SMALL = (input_layer("data", (4, 2, 9, 9)) +
         'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
         'convolution_param { num_output: 3 kernel_size: 3 } }\n'
         'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
         'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
         'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
         'layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" '
         'inner_product_param { num_output: 5 } }\n'
         'layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }\n')


@pytest.mark.parametrize("kwargs,message", [
    ({"opset": 8}, "opset 8: jitnet writes opsets 9 to"),
    ({"opset": 10_000}, "opset 10000"),
    ({"opset": "17"}, "opset must be an integer"),
    ({"batch": 0}, "batch must be 'dynamic' or a positive integer"),
    ({"batch": "many"}, "batch must be 'dynamic' or a positive integer"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(OnnxExportError, match=message):
        net_from(SMALL).to_onnx(**kwargs)


# =========================================================================== what is refused
def test_train_net_with_data_layers_is_refused():
    text = ('layer { name: "data" type: "DummyData" top: "x" top: "label" dummy_data_param { '
            'shape { dim: 2 dim: 3 } shape { dim: 2 } } }\n'
            'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 2 } }\n'
            'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }')
    with pytest.raises(OnnxExportError, match=r"TRAIN-phase net with data layers \('data'\): export "
                                              r"the deploy net"):
        net_from(text, jitnet.TRAIN).to_onnx()
    with pytest.raises(OnnxExportError, match=r"layer 'data' \(DummyData\) is a data layer.*layer "
                                              r"'loss' \(SoftmaxWithLoss\) is a loss layer"):
        net_from(text, jitnet.TEST).to_onnx()


def test_train_net_without_data_layers_is_refused():
    with pytest.raises(OnnxExportError, match="net 'small' was built for TRAIN.*jitnet.TEST"):
        net_from('name: "small"\n' + SMALL, jitnet.TRAIN).to_onnx()


def test_python_layer_is_refused_by_name():
    text = (input_layer("x", (2, 3)) +
            'layer { name: "mine" type: "Python" bottom: "x" top: "y" '
            'python_param { module: "pycaffe_user_layers" layer: "ScaleShift" } }')
    with pytest.raises(OnnxExportError, match=r"layer 'mine' \(Python\) is a user's Python layer"):
        net_from(text).to_onnx()


def test_net_without_outputs_is_refused():
    text = input_layer("x", (2, 3)) + 'layer { name: "quiet" type: "Silence" bottom: "x" }'
    with pytest.raises(OnnxExportError, match="no outputs"):
        net_from(text).to_onnx()


# =========================================================================== command line
def write_small_net(tmp_path):
    """SMALL as deploy.prototxt and its random weights as small.caffemodel, and the net."""
    model, weights = tmp_path / "deploy.prototxt", tmp_path / "small.caffemodel"
    model.write_text(SMALL)
    net = net_from(SMALL)
    net.save(str(weights))
    return model, weights, net


def test_command_line_export_and_check(tmp_path, capsys):
    model_path, weights, net = write_small_net(tmp_path)
    out = tmp_path / "small.onnx"
    code = cli.main(["export_onnx", "-model", str(model_path), "-weights", str(weights),
                     "-opset", "13", "-batch", "2", "-check", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "opset 13" in printed and "inputs data (2x2x9x9)" in printed and "outputs prob (2x5)" in printed
    assert "onnxruntime vs jitnet, output prob: largest difference" in printed
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 13
    net.blobs["data"].reshape((2, 2, 9, 9))
    net.reshape()
    x = random_inputs(net)["data"]
    expected = net.forward(data=x)["prob"]
    np.testing.assert_allclose(run_onnxruntime(model, {"data": x})["prob"], expected, rtol=1e-5, atol=1e-6)


def test_command_line_dynamic_batch_by_default(tmp_path, capsys):
    model_path, weights, net = write_small_net(tmp_path)
    out = tmp_path / "small.onnx"
    assert cli.main(["export_onnx", "--model", str(model_path), "--weights", str(weights), str(out)]) == 0
    assert "inputs data (Nx2x9x9)" in capsys.readouterr().out
    model = onnx.load(str(out))
    nodes = {node.name: node for node in model.graph.node}
    assert {"conv1", "relu1", "pool1", "ip1", "prob"} <= set(nodes)
    assert nodes["relu1"].output == ["conv1"] and nodes["prob"].output == ["prob"]
    net.blobs["data"].reshape((3, 2, 9, 9))
    net.reshape()
    x = random_inputs(net)["data"]
    np.testing.assert_allclose(run_onnxruntime(model, {"data": x})["prob"], net.forward(data=x)["prob"],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("args,message", [
    (["--opset", "12"], "opset 12 is too old for layer 'prob' (Softmax): it needs the ONNX operator "
                        "Softmax along axis 1 of a 4-D blob"),
    (["--batch", "zero"], "--batch must be 'dynamic' or a positive integer, not 'zero'"),
    (["--opset", "8"], "opset 8: jitnet writes opsets 9 to"),
])
def test_command_line_bad_arguments(tmp_path, capsys, args, message):
    model_path = tmp_path / "deploy.prototxt"
    # softmax over the channels of a 4-D blob needs opset 13
    model_path.write_text(SMALL.replace('bottom: "ip1" top: "prob"', 'bottom: "conv1" top: "prob"'))
    code = cli.main(["export_onnx", "--model", str(model_path)] + args + [str(tmp_path / "x.onnx")])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_command_line_refuses_a_train_val_net_before_building_it(tmp_path, capsys):
    # the Data layer's database does not exist: building the net would fail on it first
    train_val = tmp_path / "train_val.prototxt"
    train_val.write_text(
        'name: "small"\n'
        'layer { name: "mnist" type: "Data" top: "data" top: "label" '
        f'data_param {{ source: "{tmp_path / "no_such_lmdb"}" batch_size: 4 backend: LMDB }} }}\n'
        + SMALL.split("\n", 1)[1] +
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }\n'
        'layer { name: "py" type: "Python" bottom: "prob" top: "mine" '
        'python_param { module: "no_such_module" layer: "Mine" } }\n')
    code = cli.main(["export_onnx", "--model", str(train_val), str(tmp_path / "out.onnx")])
    err = capsys.readouterr().err
    assert code == 1
    assert "net 'small' cannot be exported to ONNX" in err
    assert "layer 'mnist' (Data) is a data layer" in err and "Export the deploy net" in err
    assert "layer 'loss' (SoftmaxWithLoss) is a loss layer" in err
    assert "layer 'py' (Python) is a user's Python layer" in err
    assert not (tmp_path / "out.onnx").exists()


# =========================================================================== GPU mode
def test_net_in_gpu_mode_exports_its_weights():
    """A net in GPU mode (numba's simulator here) exports the weights its device copy holds:
    the emitters read the learned blobs through Blob.data, which brings them to the host."""
    jitnet.set_mode_gpu()
    try:
        net = net_from(SMALL.replace("dim: 4 ", "dim: 1 "))
        assert jitnet.mode() == "gpu"
        inputs = random_inputs(net)
        net.forward(**inputs)                      # the weights now live on the device too
        check_against_onnxruntime(net, inputs)
    finally:
        jitnet.set_mode_cpu()
