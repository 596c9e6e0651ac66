"""The real Caffe models in ../shared/models/ (written by other people): every net whose
layer types all exist builds as a jitnet.Net, and a forward pass with random inputs gives
the output shapes the model documents. Nets needing a layer type not built yet are
skipped, naming the types. Inputs are cut to batch 1 (the shapes per image are what the
models document); the largest nets run in the thorough profile
(HYPOTHESIS_PROFILE=thorough)."""
import os
from pathlib import Path

import numpy as np
import pytest

import jitnet
from jitnet.layer import layer_type_list
from jitnet.planner import filter_layers
from jitnet.proto import io as proto_io

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
if not MODELS.is_dir():
    pytest.skip(f"{MODELS} is absent (the shared model files sit beside the project in CI and "
                "development sessions, not in a user's clone)", allow_module_level=True)

# Output blobs and their shapes at batch 1, from each model's documented architecture.
EXPECTED = {
    "lenet_mnist/lenet.prototxt": {"prob": (1, 10)},
    "lenet_v0_caffe_v0.9/lenet.prototxt": {"prob": (1, 10)},
    "cifar10_quick/cifar10_quick.prototxt": {"prob": (1, 10)},
    "cifar10_quick_impact_scar/cifar10_quick.prototxt": {"prob": (1, 3)},
    "bvlc_alexnet/deploy.prototxt": {"prob": (1, 1000)},
    "bvlc_reference_caffenet/deploy.prototxt": {"prob": (1, 1000)},
    "bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": {"fc-rcnn": (1, 200)},
    "bvlc_googlenet/deploy.prototxt": {"prob": (1, 1000)},
    "vgg16/VGG_ILSVRC_16_layers_deploy.prototxt": {"prob": (1, 1000)},
    "vgg19_v1/VGG_ILSVRC_19_layers_deploy.prototxt": {"prob": (1, 1000)},
    "resnet50/ResNet-50-deploy.prototxt": {"prob": (1, 1000)},
    "resnet101/ResNet-101-deploy.prototxt": {"prob": (1, 1000)},
    "resnet152/ResNet-152-deploy.prototxt": {"prob": (1, 1000)},
    "squeezenet_v1.0/deploy.prototxt": {"prob": (1, 1000, 1, 1)},
    "squeezenet_v1.1/deploy.prototxt": {"prob": (1, 1000, 1, 1)},
    "mobilenet_v1/mobilenet_deploy.prototxt": {"prob": (1, 1000, 1, 1)},
    "mobilenet_v2/mobilenet_v2_deploy.prototxt": {"prob": (1, 1000, 1, 1)},
    "fcn8s_voc/deploy.prototxt": {"score": (1, 21, 500, 500)},
}
SLOW = {"vgg16/VGG_ILSVRC_16_layers_deploy.prototxt", "vgg19_v1/VGG_ILSVRC_19_layers_deploy.prototxt",
        "resnet101/ResNet-101-deploy.prototxt", "resnet152/ResNet-152-deploy.prototxt",
        "fcn8s_voc/deploy.prototxt"}
# Files that are not nets Caffe 1.0 can read.
NOT_CAFFE = {"densenet121/DenseNet_121.prototxt":
             "pooling_param { ceil_mode } exists only in Caffe forks"}
# Nets whose Python layers need the authors' own modules, which are not in the folder.
NEEDS_USER_CODE = {"fcn32s_voc/train.prototxt": "its data layer is the authors' voc_layers module"}


def _nets():
    params = []
    for path in sorted(MODELS.rglob("*.prototxt")):
        rel = path.relative_to(MODELS).as_posix()
        if "solver" in path.name or rel in NOT_CAFFE:
            continue
        marks = [pytest.mark.slow] if rel in SLOW else []
        params.append(pytest.param(rel, id=rel, marks=marks))
    return params


def _phases(net_param):
    """TEST, and TRAIN too where layers are phase-specific (train_val files)."""
    rules = [r.phase for layer in net_param.layer for r in list(layer.include) + list(layer.exclude)
             if r.HasField("phase")]
    return [jitnet.TEST, jitnet.TRAIN] if rules else [jitnet.TEST]


@pytest.mark.parametrize("rel", _nets())
def test_model_builds_and_gives_the_documented_outputs(rel):
    if rel in NEEDS_USER_CODE:
        pytest.skip(NEEDS_USER_CODE[rel])
    path = MODELS / rel
    net_param = proto_io.read_net(str(path))
    known = set(layer_type_list())
    for phase in _phases(net_param):
        missing = sorted({layer.type for layer in filter_layers(net_param, phase)} - known)
        if missing:
            pytest.skip(f"needs layer types not built yet: {', '.join(missing)}")
    assert rel in EXPECTED, f"{rel} builds now: add its documented outputs to EXPECTED"
    jitnet.set_random_seed(0)
    net = jitnet.Net(str(path), jitnet.TEST)
    rng = np.random.default_rng(0)
    for name in net.inputs:
        blob = net.blobs[name]
        blob.reshape((1,) + blob.shape[1:])
    net.reshape()
    inputs = {name: rng.uniform(-1, 1, net.blobs[name].shape) for name in net.inputs}
    out = net.forward(**inputs)
    assert {name: array.shape for name, array in out.items()} == EXPECTED[rel]
    for name, array in out.items():
        assert np.isfinite(array).all(), name


@pytest.mark.parametrize("rel,why", sorted(NOT_CAFFE.items()))
def test_fork_only_files_are_refused_with_the_place(rel, why):
    with pytest.raises(jitnet.ProtoError, match=rf"{rel.split('/')[-1]}:\d+:\d+.*ceil_mode"):
        proto_io.read_net(str(MODELS / rel))


def test_trained_lenet_weights_load():
    weights = MODELS / "lenet_mnist" / "lenet_iter_10000.caffemodel"
    net_file = MODELS / "lenet_mnist" / "lenet.prototxt"
    known = set(layer_type_list())
    missing = sorted({layer.type for layer in proto_io.read_net(str(net_file)).layer} - known)
    if missing:
        pytest.skip(f"needs layer types not built yet: {', '.join(missing)}")
    net = jitnet.Net(str(net_file), jitnet.TEST, weights=str(weights))
    assert net.params["conv1"][0].data.shape == (20, 1, 5, 5)
    assert net.params["ip1"][0].data.shape == (500, 800)
    assert np.abs(net.params["conv1"][0].data).sum() > 0
