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
from jitnet.proto import io as proto_io
from jitnet.proto import pb

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
    # one step of one stream: the word probabilities (vocabulary 8800 + the end of sentence)
    "lstm_coco_caption/lstm_lm.deploy.prototxt": {"probs": (1, 1, 8801)},
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


# Train/val nets read databases that are not in the folder: their data layers become Input
# layers of the documented sample shape (batch 2), with labels (or similarity flags) of shape (2,).
SAMPLES = {
    "lenet_mnist/lenet_train_test.prototxt": (1, 28, 28),
    "lenet_v1_caffe_rc/lenet_train_test.prototxt": (1, 28, 28),
    "mnist_autoencoder/mnist_autoencoder.prototxt": (1, 28, 28),
    "mnist_siamese/mnist_siamese_train_test.prototxt": (2, 28, 28),
    "cifar10_quick/cifar10_quick_train_test.prototxt": (3, 32, 32),
    "cifar10_full/cifar10_full_train_test.prototxt": (3, 32, 32),
    "cifar10_full/cifar10_full_sigmoid_train_test_bn.prototxt": (3, 32, 32),
    "cifar10_quick_v1_2015/prediction_example.prototxt": (3, 32, 32),
    "bvlc_alexnet/train_val.prototxt": (3, 227, 227),
    "bvlc_reference_caffenet/train_val.prototxt": (3, 227, 227),
    "bvlc_googlenet/train_val.prototxt": (3, 224, 224),
    "squeezenet_v1.1/train_val.prototxt": (3, 227, 227),
    "nin_imagenet_v1/train_val.prototxt": (3, 224, 224),
}
DATA_TYPES = {"Data", "ImageData", "WindowData", "HDF5Data"}
CLASSIFIER_TRAIN = {"TRAIN": {"loss": ()}, "TEST": {"accuracy": (), "loss": ()}}
# Outputs of the train/val nets in each state they are meant for: the losses and accuracies.
EXPECTED_TRAIN = {
    "lenet_mnist/lenet_train_test.prototxt": CLASSIFIER_TRAIN,
    "lenet_v1_caffe_rc/lenet_train_test.prototxt": CLASSIFIER_TRAIN,
    "cifar10_quick/cifar10_quick_train_test.prototxt": CLASSIFIER_TRAIN,
    "cifar10_full/cifar10_full_train_test.prototxt": CLASSIFIER_TRAIN,
    "cifar10_full/cifar10_full_sigmoid_train_test_bn.prototxt": CLASSIFIER_TRAIN,
    "bvlc_alexnet/train_val.prototxt": CLASSIFIER_TRAIN,
    "bvlc_reference_caffenet/train_val.prototxt": CLASSIFIER_TRAIN,
    # its SoftmaxWithLoss has no top (Caffe gives it an automatic one, which is no output)
    "nin_imagenet_v1/train_val.prototxt": {"TRAIN": {}, "TEST": {"accuracy": ()}},
    "mnist_autoencoder/mnist_autoencoder.prototxt": {
        "TRAIN": {"cross_entropy_loss": (), "l2_error": ()},
        "TEST test-on-train": {"cross_entropy_loss": (), "l2_error": ()},
        "TEST test-on-test": {"cross_entropy_loss": (), "l2_error": ()}},
    "mnist_siamese/mnist_siamese_train_test.prototxt": {"TRAIN": {"loss": ()}, "TEST": {"loss": ()}},
    "squeezenet_v1.1/train_val.prototxt": {        # its accuracy layers run in both phases
        "TRAIN": {"accuracy": (), "accuracy_top5": (), "loss": ()},
        "TEST": {"accuracy": (), "accuracy_top5": (), "loss": ()}},
    "bvlc_googlenet/train_val.prototxt": {
        "TRAIN": {"loss1/loss1": (), "loss2/loss2": (), "loss3/loss3": ()},
        "TEST": {"loss1/loss1": (), "loss1/top-1": (), "loss1/top-5": (), "loss2/loss2": (),
                 "loss2/top-1": (), "loss2/top-5": (), "loss3/loss3": (), "loss3/top-1": (),
                 "loss3/top-5": ()}},
    "cifar10_quick_v1_2015/prediction_example.prototxt": {
        "TRAIN": {"loss": ()}, "TEST": {"accuracy": (), "argmax": (2, 1, 5), "loss": ()}},
}
SLOW |= {"bvlc_googlenet/train_val.prototxt", "nin_imagenet_v1/train_val.prototxt"}

# -- recurrent nets (issue 13). Their HDF5Data tops are time-major sentences (T, N): here T = 3
# steps of N = 2 streams (the LRCN's ImageData gives the N images whose fc8 is the static
# input); the words, continuation markers and targets are drawn 0 or 1 (valid word indices and
# markers). The LRCN is walked as its factored two-layer variant, the captioner the issue
# names: its LSTMs exist only under a variant's stages.
SENTENCES = {"cont_sentence": (3, 2), "input_sentence": (3, 2), "target_sentence": (3, 2)}
SAMPLES.update({"lstm_coco_caption/lstm_language_model.prototxt": (),
                "lstm_coco_caption/lrcn.prototxt": (3, 227, 227)})
TOP_SHAPES = {"lstm_coco_caption/lstm_language_model.prototxt": SENTENCES,
              "lstm_coco_caption/lrcn.prototxt": SENTENCES}
WORD_INPUTS = set(SENTENCES)
STAGES = {"lstm_coco_caption/lrcn.prototxt": ("factored", "2-layer")}
_SENTENCE_LOSS = {"TRAIN": {"cross_entropy_loss": ()},
                  "TEST test-on-train": {"accuracy": (), "cross_entropy_loss": ()},
                  "TEST test-on-val": {"accuracy": (), "cross_entropy_loss": ()}}
EXPECTED_TRAIN.update({"lstm_coco_caption/lstm_language_model.prototxt": _SENTENCE_LOSS,
                       "lstm_coco_caption/lrcn.prototxt": _SENTENCE_LOSS})


def _states(net_param):
    """(label, phase, stages) for each state a file is meant for: TEST alone for deploy nets;
    TRAIN and TEST (once per test stage its rules name) for train/val nets."""
    rules = [r for layer in net_param.layer for r in list(layer.include) + list(layer.exclude)]
    if not any(r.HasField("phase") for r in rules):
        return [("TEST", jitnet.TEST, ())]
    stages = sorted({s for r in rules if r.phase == jitnet.TEST for s in r.stage})
    tests = [(f"TEST {s}", jitnet.TEST, (s,)) for s in stages] or [("TEST", jitnet.TEST, ())]
    return [("TRAIN", jitnet.TRAIN, ())] + tests


def _with_inputs_for_data(net_param, sample, shapes=None):
    """The net with its data layers replaced by Input layers of batch 2 (tops: the sample shape
    for the first, (2,) for labels, or the shape ``shapes`` gives a top), keeping their names,
    tops and include rules."""
    shapes = shapes or {}
    out = pb.NetParameter()
    out.CopyFrom(net_param)
    for layer in out.layer:
        if layer.type in DATA_TYPES:
            replacement = pb.LayerParameter(name=layer.name, type="Input", top=layer.top,
                                            include=layer.include, exclude=layer.exclude)
            for k, top in enumerate(layer.top):
                shape = shapes.get(top, (2,) + sample if k == 0 else (2,))
                replacement.input_param.shape.add().dim.extend(shape)
            layer.CopyFrom(replacement)
    return out


def _random_inputs(net, rng):
    inputs = {}
    for name in net.inputs:
        shape = net.blobs[name].shape
        # labels: class indices (0 or 1, valid for every classifier and similarity flag)
        integers = len(shape) == 1 or name in WORD_INPUTS
        inputs[name] = rng.integers(0, 2, shape) if integers else rng.uniform(0, 1, shape)
    return inputs


@pytest.mark.parametrize("rel", _nets())
def test_model_builds_and_gives_the_documented_outputs(rel):
    if rel in NEEDS_USER_CODE:
        pytest.skip(NEEDS_USER_CODE[rel])
    path = MODELS / rel
    net_param = proto_io.read_net(str(path))
    missing = sorted({layer.type for layer in net_param.layer} - set(layer_type_list()) - DATA_TYPES)
    if missing:
        pytest.skip(f"needs layer types not built yet: {', '.join(missing)}")
    states = _states(net_param)
    rng = np.random.default_rng(0)
    if rel in SAMPLES:
        net_param = _with_inputs_for_data(net_param, SAMPLES[rel], TOP_SHAPES.get(rel))
        expected = EXPECTED_TRAIN.get(rel)
        assert expected, f"{rel} builds now: add its documented outputs to EXPECTED_TRAIN"
    else:
        assert rel in EXPECTED, f"{rel} builds now: add its documented outputs to EXPECTED"
        expected = {"TEST": EXPECTED[rel]}
    assert set(expected) == {label for label, _, _ in states}
    for label, phase, stages in states:
        jitnet.set_random_seed(0)
        net = jitnet.Net(net_param, phase, stages=stages + STAGES.get(rel, ()))
        for layer in net.layers:           # statistics of a trained net: mean 0, variance 1
            if layer.type == "BatchNorm":
                layer.blobs[1].data[...] = 1.0
                layer.blobs[2].data[...] = 1.0
        if rel not in SAMPLES:                     # deploy nets: batch 1
            for name in net.inputs:
                blob = net.blobs[name]
                blob.reshape((1,) + blob.shape[1:])
            net.reshape()
        out = net.forward(**_random_inputs(net, rng))
        assert {name: array.shape for name, array in out.items()} == expected[label], label
        for name, array in out.items():
            assert np.isfinite(array).all(), (label, name)
        assert np.isfinite(net.loss), label


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


@pytest.mark.parametrize("rel", ["cifar10_quick/cifar10_quick.prototxt",
                                 "bvlc_reference_caffenet/deploy.prototxt"])
def test_jitnet_time_lists_every_layer(rel):
    """`jitnet time` on CIFAR-10-quick and CaffeNet: each layer's forward and backward time."""
    import re
    import subprocess
    import sys
    net_param = proto_io.read_net(str(MODELS / rel))
    result = subprocess.run([sys.executable, "-m", "jitnet", "time", "--model", str(MODELS / rel),
                             "--iterations", "2", "--phase", "TEST"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    for layer in net_param.layer:
        if layer.type == "Input":
            continue
        for what in ("forward", "backward"):
            assert re.search(rf"^\s*{re.escape(layer.name)}\t{what}: [0-9.]+ ms\.$", result.stdout, re.M), \
                (layer.name, what, result.stdout)
