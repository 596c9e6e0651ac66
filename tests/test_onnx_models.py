"""ONNX export of the real Caffe models in ../shared/models/: every deploy net whose layer types
jitnet has is built at batch 1 with random weights (or its trained caffemodel where the folder
has one), exported, checked by onnx.checker, and run by onnxruntime; every output and every
blob the graph keeps under its own name must equal jitnet's forward within float32 rounding.
The worst difference per model is printed (``pytest -s``) and recorded as a test property.
Train/val nets (their data layers made Input layers, as test_model_zoo does) are refused in
TEST phase, the error naming each loss and accuracy layer. The largest nets run in the
thorough profile (HYPOTHESIS_PROFILE=thorough)."""
import math
from pathlib import Path

import numpy as np
import pytest

import jitnet
from jitnet.layer import layer_type_list
from jitnet.proto import io as proto_io

onnx = pytest.importorskip("onnx", reason="the ONNX export tests need onnx (pip install -e '.[test]')")
pytest.importorskip("onnxruntime", reason="the ONNX export tests run the models in onnxruntime "
                                          "(pip install -e '.[test]')")

from jitnet.export import OnnxExportError, onnx_model  # noqa: E402
from jitnet.export.onnx_layers import REFUSED  # noqa: E402

from test_model_zoo import NEEDS_USER_CODE, NOT_CAFFE  # noqa: E402  (files the zoo walk skips too)
from test_onnx_layers import run_onnxruntime  # noqa: E402

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
if not MODELS.is_dir():
    pytest.skip(f"{MODELS} is absent (the shared model files sit beside the project in CI and "
                "development sessions, not in a user's clone)", allow_module_level=True)

# Nets that take long to build, run or export on a 2-core machine (large weights or inputs).
SLOW = {"vgg16/VGG_ILSVRC_16_layers_deploy.prototxt", "vgg19_v1/VGG_ILSVRC_19_layers_deploy.prototxt",
        "resnet101/ResNet-101-deploy.prototxt", "resnet152/ResNet-152-deploy.prototxt",
        "fcn8s_voc/deploy.prototxt", "bvlc_reference_rcnn_ilsvrc13/deploy.prototxt",
        "bvlc_alexnet/deploy.prototxt",
        "bvlc_alexnet/train_val.prototxt", "bvlc_reference_caffenet/train_val.prototxt",
        "bvlc_googlenet/train_val.prototxt", "nin_imagenet_v1/train_val.prototxt"}
# Trained weights in the folder, for the nets they belong to.
WEIGHTS = {"lenet_mnist/lenet.prototxt": "lenet_mnist/lenet_iter_10000.caffemodel",
           "cifar10_quick_impact_scar/cifar10_quick.prototxt":
               "cifar10_quick_impact_scar/cifar10_impact_scar_quick_iter_10000.caffemodel"}
DATA_TYPES = {t for t, why in REFUSED.items() if why is REFUSED["Data"]}
RTOL = 1e-4                                               # relative to a blob's largest value


def _deploy_nets():
    params = []
    for path in sorted(MODELS.rglob("*.prototxt")):
        rel = path.relative_to(MODELS).as_posix()
        if "solver" in path.name:
            continue
        marks = [pytest.mark.slow] if rel in SLOW else []
        if rel in NOT_CAFFE:                        # reported as skipped, not left out
            marks = [pytest.mark.skip(reason=NOT_CAFFE[rel])]
        params.append(pytest.param(rel, id=rel, marks=marks))
    return params


def randomize(net, rng):
    """Weights that keep activations of order 1 through deep nets: He-scaled gaussians for
    convolutions and inner products, scales near 1, small biases, BatchNorm statistics of a
    trained net (running sums with a scale factor that is not 1)."""
    for layer in net.layers:
        blobs = layer.blobs
        if layer.type == "BatchNorm":
            factor = rng.uniform(0.5, 2.0)
            blobs[0].data[...] = rng.normal(0, 0.3, blobs[0].shape) * factor
            blobs[1].data[...] = rng.uniform(0.5, 2.0, blobs[1].shape) * factor
            blobs[2].data[...] = factor
            continue
        for j, blob in enumerate(blobs):
            if j == 0 and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
                fan_in = blob.count // blob.shape[0]
                blob.data[...] = rng.standard_normal(blob.shape, np.float32) * math.sqrt(2.0 / fan_in)
            elif j == 0 and layer.type == "Scale":
                blob.data[...] = rng.uniform(0.5, 1.5, blob.shape)
            else:
                blob.data[...] = rng.normal(0, 0.1, blob.shape)


def with_blob_outputs(model, names):
    """The model (changed in place) with the values ``names`` added to its outputs, so that
    onnxruntime returns them too (typed float32, shapes left to the runtime)."""
    have = {o.name for o in model.graph.output}
    for name in names:
        if name not in have:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model


def worst_difference(ours, theirs):
    """(largest |difference| / max(1, largest |value|), the blob where it is) over the blobs."""
    worst = (0.0, None)
    for name, mine in ours.items():
        mine, other = np.asarray(mine, np.float64), np.asarray(theirs[name], np.float64)
        assert other.shape == mine.shape, (name, other.shape, mine.shape)
        scale = max(1.0, float(np.abs(mine).max(initial=0.0)))
        diff = float(np.abs(mine - other).max(initial=0.0)) / scale
        if not diff <= worst[0]:
            worst = (diff, name)
    return worst


@pytest.mark.parametrize("rel", _deploy_nets())
def test_model_exports_and_matches_onnxruntime(rel, record_property):
    net_param = proto_io.read_net(str(MODELS / rel))
    types = {layer.type for layer in net_param.layer}
    missing = sorted(types - set(layer_type_list()) - DATA_TYPES)
    if missing:
        pytest.skip(f"needs layer types not built yet: {', '.join(missing)}")
    if rel in NEEDS_USER_CODE:
        pytest.skip(NEEDS_USER_CODE[rel])
    if types & DATA_TYPES:
        _train_val_net_is_refused(rel, net_param)
    else:
        _deploy_net_matches(rel, net_param, record_property)


def _train_val_net_is_refused(rel, net_param):
    from test_model_zoo import SAMPLES, _states, _with_inputs_for_data
    if rel not in SAMPLES:
        pytest.skip("a train/val net whose data test_model_zoo does not stand in for")
    stages = next(stages for _, phase, stages in _states(net_param) if phase == jitnet.TEST)
    net = jitnet.Net(_with_inputs_for_data(net_param, SAMPLES[rel]), jitnet.TEST, stages=stages)
    _is_refused(rel, net)


def _is_refused(rel, net):
    """The export fails naming every layer of the net that has no ONNX form."""
    refused = [layer for layer in net.layers if layer.type in REFUSED]
    assert refused, "a net without layers the export refuses: compare it instead"
    with pytest.raises(OnnxExportError) as error:
        onnx_model(net)
    for layer in refused:
        assert f"layer '{layer.name}' ({layer.type})" in str(error.value)
    print(f"\n{rel}: refused, naming {', '.join(layer.name for layer in refused)}")


def _deploy_net_matches(rel, net_param, record_property):
    jitnet.set_random_seed(0)
    net = jitnet.Net(net_param, jitnet.TEST)
    if any(layer.type in REFUSED for layer in net.layers):       # recurrent layers (LSTM, RNN)
        _is_refused(rel, net)
        return
    rng = np.random.default_rng(0)
    if rel in WEIGHTS:
        net.copy_from(str(MODELS / WEIGHTS[rel]))
    else:
        randomize(net, rng)
    for name in net.inputs:                                 # batch 1
        blob = net.blobs[name]
        blob.reshape((1,) + blob.shape[1:])
    net.reshape()
    feeds = {name: rng.uniform(0, 1, net.blobs[name].shape).astype(np.float32) for name in net.inputs}
    net.forward(**feeds)
    model = onnx_model(net)                                 # batch "dynamic", opset 17
    # every blob whose last version the graph names after it (not the inputs, not Split tops)
    graph_values = {o for node in model.graph.node for o in node.output}
    ours = {name: net.blobs[name].data.copy() for name in net.blobs
            if name not in net.inputs and name in graph_values}
    assert set(net.outputs) <= set(ours)
    theirs = run_onnxruntime(with_blob_outputs(model, list(ours)), feeds)
    missing = set(ours) - set(theirs)
    assert not missing, f"blobs onnxruntime did not return: {sorted(missing)[:5]}"
    worst, where = worst_difference(ours, theirs)
    outputs_worst, _ = worst_difference({n: ours[n] for n in net.outputs}, theirs)
    record_property("worst_relative_difference", worst)
    print(f"\n{rel}: {len(ours)} blobs compared, worst difference {worst:.3g} (relative, at "
          f"'{where}'), outputs {outputs_worst:.3g}")
    assert worst <= RTOL, (where, worst)
