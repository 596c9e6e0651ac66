"""Tests of jitnet.proto: the Caffe schema, file I/O and the net / solver upgrades.

The real-model tests read the public Caffe files under ``../shared/models`` (next
to the repository); they are skipped when that folder is absent.
"""

import os
from pathlib import Path

import numpy as np
import pytest

from jitnet.errors import ProtoError
from jitnet.proto import (
    array_to_blob,
    blob_diff_to_array,
    blob_to_array,
    pb,
    read_binary,
    read_blob_proto,
    read_net,
    read_net_binary,
    read_solver,
    read_text,
    upgrade_net,
    write_binary,
    write_blob_proto,
    write_text,
)

MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "models"
PROTOTXTS = (sorted(MODELS.glob("**/*.prototxt")) if MODELS.is_dir() else
             [pytest.param(None, marks=pytest.mark.skip(reason=f"shared model files not found at {MODELS}"))])
DENSENET = "densenet121/DenseNet_121.prototxt"


def model(relative):
    """Path of a shared model file; skip the test if the folder is missing."""
    if not MODELS.is_dir():
        pytest.skip(f"shared model files not found at {MODELS}")
    path = MODELS / relative
    assert path.is_file(), f"{path} is missing from the shared models"
    return path


def total_floats(net):
    return sum(blob_to_array(blob).size for layer in net.layer for blob in layer.blobs)


def layer_named(net, name):
    matches = [layer for layer in net.layer if layer.name == name]
    assert len(matches) == 1, f"expected one layer named {name}, found {len(matches)}"
    return matches[0]


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------

def test_schema_has_caffe_field_numbers():
    numbers = {f.name: f.number for f in pb.NetParameter.DESCRIPTOR.fields}
    assert numbers["layer"] == 100 and numbers["layers"] == 2 and numbers["input_dim"] == 4
    layer = {f.name: f.number for f in pb.LayerParameter.DESCRIPTOR.fields}
    assert layer["convolution_param"] == 106 and layer["clip_param"] == 148
    assert layer["swish_param"] == 147 and layer["input_param"] == 143
    pooling = pb.PoolingParameter.DESCRIPTOR.fields_by_name
    assert pooling["round_mode"].number == 13 and "ceil_mode" not in pooling
    solver = pb.SolverParameter.DESCRIPTOR.fields_by_name
    assert solver["layer_wise_reduce"].number == 41 and solver["weights"].number == 42
    assert pb.SolverParameter().type == "SGD" and pb.SolverParameter().random_seed == -1
    assert pb.V1LayerParameter.LayerType.Value("SOFTMAX_LOSS") == 21
    assert pb.V0LayerParameter.DESCRIPTOR.fields_by_name["hdf5_output_param"].number == 1001
    assert pb.DESCRIPTOR.name == "jitnet/proto/caffe.proto"
    assert pb.DESCRIPTOR.package == "jitnet.caffe"


# ---------------------------------------------------------------------------
# Real prototxt files
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", PROTOTXTS, ids=lambda p: str(p.relative_to(MODELS)) if p else "missing")
def test_shared_prototxt(path):
    relative = path.relative_to(MODELS).as_posix()
    if relative == DENSENET:
        with pytest.raises(ProtoError) as caught:
            read_net(path)
        message = str(caught.value)
        assert "DenseNet_121.prototxt:" in message and "ceil_mode" in message
        assert caught.value.line is not None and f":{caught.value.line}:" in message
        return
    if "solver" in path.name:
        solver = read_solver(path)
        assert not solver.HasField("solver_type")
        assert solver.type in ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
        assert solver.HasField("base_lr") and solver.base_lr > 0
        return
    net = read_net(path)
    assert len(net.layers) == 0, "V0/V1 layers left after the upgrade"
    assert len(net.layer) > 0
    assert not net.input and not net.input_dim and not net.input_shape
    for layer in net.layer:
        assert isinstance(layer.type, str) and layer.type, f"layer {layer.name} has no type"
        assert layer.type[0].isupper(), f"layer {layer.name} has type {layer.type!r}"
    # Every bottom is produced by an earlier top (or is the net's input).
    produced = set()
    for layer in net.layer:
        missing = [b for b in layer.bottom if b not in produced]
        assert not missing, f"layer {layer.name} reads {missing} before any layer writes them"
        produced.update(layer.top)


def test_v0_lenet_upgrade():
    net = read_net(model("lenet_v0_caffe_v0.9/lenet.prototxt"))
    assert net.name == "LeNet"
    assert [layer.type for layer in net.layer] == [
        "Input", "Convolution", "Pooling", "Convolution", "Pooling",
        "InnerProduct", "ReLU", "InnerProduct", "Softmax"]
    first = net.layer[0]
    assert first.name == "input" and list(first.top) == ["data"]
    assert list(first.input_param.shape[0].dim) == [64, 1, 28, 28]
    conv1 = layer_named(net, "conv1")
    assert conv1.convolution_param.num_output == 20
    assert list(conv1.convolution_param.kernel_size) == [5]
    assert list(conv1.convolution_param.stride) == [1]
    assert conv1.convolution_param.weight_filler.type == "xavier"
    assert [p.lr_mult for p in conv1.param] == [1.0, 2.0]
    pool1 = layer_named(net, "pool1")
    assert pool1.pooling_param.pool == pb.PoolingParameter.MAX
    assert pool1.pooling_param.kernel_size == 2 and pool1.pooling_param.stride == 2
    assert layer_named(net, "ip1").inner_product_param.num_output == 500


def test_v1_vgg19_upgrade():
    net = read_net(model("vgg19_v1/VGG_ILSVRC_19_layers_deploy.prototxt"))
    first = net.layer[0]
    assert first.type == "Input" and first.name == "input" and list(first.top) == ["data"]
    assert [list(s.dim) for s in first.input_param.shape] == [[10, 3, 224, 224]]
    conv = layer_named(net, "conv5_4")
    assert conv.type == "Convolution"
    assert conv.convolution_param.num_output == 512
    assert list(conv.convolution_param.kernel_size) == [3]
    assert list(conv.convolution_param.pad) == [1]
    assert layer_named(net, "pool5").type == "Pooling"
    assert layer_named(net, "fc8").inner_product_param.num_output == 1000
    assert layer_named(net, "drop6").type == "Dropout"
    assert net.layer[-1].type == "Softmax"
    assert sum(layer.type == "Convolution" for layer in net.layer) == 16


def test_v1_nin_upgrade():
    net = read_net(model("nin_imagenet_v1/train_val.prototxt"))
    train, test = net.layer[0], net.layer[1]
    assert train.type == test.type == "Data"
    assert train.include[0].phase == pb.TRAIN and test.include[0].phase == pb.TEST
    assert train.transform_param.crop_size == 224 and train.transform_param.mirror
    assert train.data_param.backend == pb.DataParameter.LMDB
    assert train.data_param.batch_size == 64
    conv1 = layer_named(net, "conv1")
    assert conv1.convolution_param.num_output == 96
    assert list(conv1.convolution_param.kernel_size) == [11]
    assert list(conv1.convolution_param.stride) == [4]
    assert [(p.lr_mult, p.decay_mult) for p in conv1.param] == [(1.0, 1.0), (2.0, 0.0)]
    assert conv1.convolution_param.weight_filler.std == pytest.approx(0.01)
    types = {layer.type for layer in net.layer}
    assert {"ReLU", "Pooling", "Dropout", "Accuracy", "SoftmaxWithLoss"} <= types


def test_input_shape_upgrade():
    net = read_net(model("cifar10_quick_impact_scar/cifar10_quick.prototxt"))
    first = net.layer[0]
    assert first.type == "Input" and first.name == "input"
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 32, 32]]
    assert layer_named(net, "ip2").inner_product_param.num_output == 3


# ---------------------------------------------------------------------------
# Caffemodels and mean files
# ---------------------------------------------------------------------------

def test_lenet_caffemodel():
    net = read_net_binary(model("lenet_mnist/lenet_iter_10000.caffemodel"))
    assert not net.layers
    conv1 = layer_named(net, "conv1")
    weights = blob_to_array(conv1.blobs[0])
    assert weights.shape == (20, 1, 5, 5) and weights.dtype == np.float32
    assert np.isfinite(weights).all() and weights.std() > 0
    assert blob_to_array(layer_named(net, "ip1").blobs[0]).shape == (500, 800)
    assert total_floats(net) == 431080


def test_v1_caffemodel():
    net = read_net_binary(model("cifar10_quick_v1_2015/cifar10_quick_iter_5000.caffemodel"))
    assert not net.layers and len(net.layer) > 0
    assert layer_named(net, "conv1").type == "Convolution"
    assert layer_named(net, "pool1").type == "Pooling"
    assert layer_named(net, "loss").type == "SoftmaxWithLoss"
    ip1 = layer_named(net, "ip1")
    assert ip1.type == "InnerProduct"
    assert blob_to_array(ip1.blobs[0]).shape == (1, 1, 64, 1024)
    assert blob_to_array(layer_named(net, "ip2").blobs[0]).shape == (1, 1, 10, 64)
    assert blob_to_array(layer_named(net, "conv1").blobs[0]).shape == (32, 3, 5, 5)
    assert total_floats(net) == 145578


def test_caffemodel_with_split_layers():
    net = read_net_binary(
        model("cifar10_quick_impact_scar/cifar10_impact_scar_quick_iter_10000.caffemodel"))
    assert any(layer.type == "Split" for layer in net.layer)
    assert blob_to_array(layer_named(net, "ip2").blobs[0]).shape == (3, 64)
    assert total_floats(net) == 145123


def test_mean_files():
    cifar = read_blob_proto(model("cifar10_quick_impact_scar/mean.binaryproto"))
    assert cifar.shape == (1, 3, 32, 32) and cifar.dtype == np.float32
    blob = read_binary(model("cifar10_quick_impact_scar/mean.binaryproto"), pb.BlobProto())
    assert not blob.HasField("shape") and (blob.num, blob.channels) == (1, 3)
    imagenet = read_blob_proto(model("imagenet_mean/imagenet_mean.binaryproto"))
    assert imagenet.shape == (1, 3, 256, 256)
    assert 80 < float(imagenet.mean()) < 150  # pixel values 0..255


def test_truncated_caffemodel(tmp_path):
    data = model("lenet_mnist/lenet_iter_10000.caffemodel").read_bytes()
    broken = tmp_path / "broken.caffemodel"
    broken.write_bytes(data[: len(data) // 2 + 3])
    with pytest.raises(ProtoError) as caught:
        read_net_binary(broken)
    assert "broken.caffemodel" in str(caught.value)


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------

def small_net():
    net = pb.NetParameter(name="tiny")
    layer = net.layer.add(name="ip", type="InnerProduct", bottom=["data"], top=["ip"])
    layer.inner_product_param.num_output = 3
    layer.param.add(lr_mult=1, decay_mult=1)
    layer.include.add(phase=pb.TEST, stage=["deploy"])
    array_to_blob(np.arange(12, dtype=np.float32).reshape(3, 4), layer.blobs.add())
    return net


def test_text_round_trip(tmp_path):
    net = small_net()
    path = tmp_path / "net.prototxt"
    write_text(net, path)
    assert read_text(path, pb.NetParameter()) == net
    assert [p.name for p in tmp_path.iterdir()] == ["net.prototxt"], "temporary file left"


def test_binary_round_trip(tmp_path):
    net = small_net()
    path = tmp_path / "net.caffemodel"
    write_binary(net, path)
    back = read_binary(path, pb.NetParameter())
    assert back == net
    assert read_net_binary(path) == net
    write_binary(pb.NetParameter(name="other"), path)  # replaces the file
    assert read_binary(path, pb.NetParameter()).name == "other"


def test_large_caffemodel_round_trip(tmp_path):
    # 20M floats: 80 MB, above the old 64 MB protobuf message limit.
    values = np.linspace(-1, 1, 20_000_000, dtype=np.float32).reshape(5000, 4000)
    net = pb.NetParameter(name="big")
    array_to_blob(values, net.layer.add(name="fc", type="InnerProduct").blobs.add())
    path = tmp_path / "big.caffemodel"
    write_binary(net, path)
    assert path.stat().st_size > 80_000_000
    back = blob_to_array(read_net_binary(path).layer[0].blobs[0])
    np.testing.assert_array_equal(back, values)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_array_blob_round_trip(dtype):
    rng = np.random.default_rng(0)
    values = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    gradient = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    blob = array_to_blob(values, pb.BlobProto(), diff=gradient)
    assert list(blob.shape.dim) == [2, 3, 4, 5]
    if dtype == np.float64:
        assert len(blob.double_data) == 120 and len(blob.data) == 0
    else:
        assert len(blob.data) == 120 and len(blob.double_data) == 0
    back = blob_to_array(pb.BlobProto.FromString(blob.SerializeToString()))
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, values)
    np.testing.assert_array_equal(blob_diff_to_array(blob), gradient)


def test_legacy_and_scalar_blobs():
    legacy = pb.BlobProto(num=2, channels=1, height=3, width=2)
    legacy.data.extend(range(12))
    array = blob_to_array(legacy)
    assert array.shape == (2, 1, 3, 2) and array[1, 0, 2, 1] == 11
    assert blob_diff_to_array(legacy).size == 0
    scalar = array_to_blob(np.float32(7.5), pb.BlobProto())
    assert blob_to_array(scalar).shape == () and blob_to_array(scalar) == 7.5
    ints = blob_to_array(array_to_blob(np.arange(6).reshape(2, 3), pb.BlobProto()))
    assert ints.dtype == np.float32 and ints.shape == (2, 3)


def test_blob_count_mismatch():
    blob = pb.BlobProto()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0] * 5)
    with pytest.raises(ProtoError, match="holds 5"):
        blob_to_array(blob)
    with pytest.raises(ProtoError):
        array_to_blob(np.zeros(4, np.float32), pb.BlobProto(), diff=np.zeros(3, np.float32))


def test_blob_proto_file(tmp_path):
    mean = np.random.default_rng(1).random((1, 3, 8, 8)).astype(np.float32)
    write_blob_proto(mean, tmp_path / "mean.binaryproto")
    np.testing.assert_array_equal(read_blob_proto(tmp_path / "mean.binaryproto"), mean)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def test_syntax_error_names_line_and_column(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "bad"\nlayer {\n  name: "x" type "ReLU"\n}\n')
    with pytest.raises(ProtoError) as caught:
        read_net(path)
    error = caught.value
    assert error.line == 3 and error.column is not None
    prefix = f"{path}:3:{error.column}: "
    assert str(error).startswith(prefix)
    # protobuf's own "3:13 : " position is not repeated after ours.
    assert not str(error)[len(prefix):][:1].isdigit()


def test_unknown_field(tmp_path):
    path = tmp_path / "unknown.prototxt"
    path.write_text('name: "u"\nlayer {\n  name: "x"\n  colour: 3\n}\n')
    with pytest.raises(ProtoError) as caught:
        read_net(path)
    assert str(caught.value).startswith(f"{path}:4:3: ")
    assert "colour" in str(caught.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.prototxt"
    for reader in (read_net, read_solver, read_net_binary, read_blob_proto):
        with pytest.raises(ProtoError) as caught:
            reader(path)
        assert str(path) in str(caught.value) and caught.value.path == path


def test_missing_required_field(tmp_path):
    path = tmp_path / "clip.prototxt"
    path.write_text('layer { name: "c" type: "Clip" clip_param { min: 0 } }\n')
    with pytest.raises(ProtoError, match="clip_param.max"):
        read_net(path)


def test_layer_and_layers_mixed(tmp_path):
    path = tmp_path / "mixed.prototxt"
    path.write_text('layer { name: "a" type: "ReLU" }\nlayers { name: "b" type: RELU }\n')
    with pytest.raises(ProtoError, match="both 'layer'"):
        read_net(path)


def test_bad_input_dim_count(tmp_path):
    path = tmp_path / "dims.prototxt"
    path.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 5\n')
    with pytest.raises(ProtoError, match="input_dim"):
        read_net(path)


# ---------------------------------------------------------------------------
# Upgrades on small hand-written nets
# ---------------------------------------------------------------------------

def test_v1_data_transformation_upgrade(tmp_path):
    path = tmp_path / "v1data.prototxt"
    path.write_text(
        'layers { name: "d" type: DATA top: "data" top: "label"\n'
        '  data_param { source: "db" batch_size: 4 scale: 0.5 mean_file: "m.binaryproto"\n'
        '               crop_size: 7 mirror: true } }\n'
        'layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip"\n'
        '  param: "w" param: "b" blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0\n'
        '  blob_share_mode: PERMISSIVE loss_weight: 0.5\n'
        '  inner_product_param { num_output: 3 } exclude { phase: TEST } }\n')
    net = read_net(path)
    data, ip = net.layer
    assert data.type == "Data"
    assert data.transform_param.scale == 0.5 and data.transform_param.crop_size == 7
    assert data.transform_param.mean_file == "m.binaryproto" and data.transform_param.mirror
    for name in ("scale", "mean_file", "crop_size", "mirror"):
        assert not data.data_param.HasField(name)
    assert data.data_param.source == "db" and data.data_param.batch_size == 4
    assert ip.type == "InnerProduct" and list(ip.loss_weight) == [0.5]
    assert [(p.name, p.lr_mult, p.decay_mult) for p in ip.param] == [("w", 1, 1), ("b", 2, 0)]
    assert ip.param[0].share_mode == pb.ParamSpec.PERMISSIVE
    assert ip.exclude[0].phase == pb.TEST and ip.inner_product_param.num_output == 3


def test_v0_padding_layer_is_folded():
    net = pb.NetParameter(input=["data"], input_dim=[1, 3, 9, 9])
    pad = net.layers.add(bottom=["data"], top=["padded"])
    pad.layer.name, pad.layer.type, pad.layer.pad = "pad1", "padding", 2
    conv = net.layers.add(bottom=["padded"], top=["conv1"])
    conv.layer.name, conv.layer.type = "conv1", "conv"
    conv.layer.num_output, conv.layer.kernelsize = 4, 3
    conv.layer.blobs_lr.extend([1, 2])
    upgrade_net(net)
    assert [layer.type for layer in net.layer] == ["Input", "Convolution"]
    conv1 = net.layer[1]
    assert list(conv1.bottom) == ["data"] and list(conv1.convolution_param.pad) == [2]
    assert list(conv1.convolution_param.kernel_size) == [3]
    assert [p.lr_mult for p in conv1.param] == [1, 2]


def test_batchnorm_params_left_as_they_are():
    net = read_net(model("cifar10_full/cifar10_full_sigmoid_train_test_bn.prototxt"))
    batch_norms = [layer for layer in net.layer if layer.type == "BatchNorm"]
    assert batch_norms
    for layer in batch_norms:
        assert [p.lr_mult for p in layer.param] == [0, 0, 0]


# ---------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------

def test_solver_type_from_legacy_enum(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "n.prototxt"\nbase_lr: 0.01\nsolver_type: ADAM\n')
    solver = read_solver(path)
    assert solver.type == "Adam" and not solver.HasField("solver_type")
    path.write_text('base_lr: 0.01\nsolver_type: NESTEROV\ntype: "Nesterov"\n')
    assert read_solver(path).type == "Nesterov"
    path.write_text('base_lr: 0.01\nsolver_type: ADAM\ntype: "SGD"\n')
    with pytest.raises(ProtoError, match="disagree"):
        read_solver(path)


def test_adam_solver_file():
    solver = read_solver(model("lenet_mnist/lenet_solver_adam.prototxt"))
    assert solver.type == "Adam"
    assert solver.momentum2 == pytest.approx(0.999) and solver.lr_policy == "fixed"
    assert solver.net == "examples/mnist/lenet_train_test.prototxt"


def test_multistep_solver_file():
    solver = read_solver(model("lenet_mnist/lenet_multistep_solver.prototxt"))
    assert solver.lr_policy == "multistep" and len(solver.stepvalue) == 5


def test_write_into_missing_folder(tmp_path):
    path = tmp_path / "no" / "such" / "dir" / "net.prototxt"
    with pytest.raises(ProtoError) as caught:
        write_text(small_net(), path)
    assert str(path) in str(caught.value)
    assert not os.path.exists(path)
