"""Caffe's tools for old files and extract_features (issue 11, point 3), run in-process
through jitnet.cli.main; the upgraded files are checked against what jitnet reads from
the originals."""
from pathlib import Path

import h5py
import numpy as np
import pytest

import jitnet
from jitnet import cli
from jitnet.proto import io as proto_io
from jitnet.proto import pb

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


from test_pycaffe_weights import jitnet_log_propagates  # noqa: E402,F401  (autouse fixture)


def model(rel):
    path = MODELS / rel
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return str(path)


@pytest.mark.parametrize("rel", ["lenet_v0_caffe_v0.9/lenet.prototxt", "lenet_v1_caffe_rc/lenet_train_test.prototxt",
                                 "vgg19_v1/VGG_ILSVRC_19_layers_deploy.prototxt",
                                 "nin_imagenet_v1/train_val.prototxt"])
def test_upgrade_net_proto_text(rel, tmp_path, capsys):
    source = model(rel)
    out = tmp_path / "upgraded.prototxt"
    assert cli.main(["upgrade_net_proto_text", source, str(out)]) == 0
    assert "Wrote upgraded NetParameter text proto" in capsys.readouterr().out
    written = proto_io.read_text(str(out), pb.NetParameter())
    assert not written.layers and written.layer and not written.input       # current format
    assert written == proto_io.read_net(source)


def test_upgrade_net_proto_binary_of_a_v1_caffemodel(tmp_path):
    source = model("cifar10_quick_v1_2015/cifar10_quick_iter_5000.caffemodel")
    out = tmp_path / "upgraded.caffemodel"
    assert cli.main(["upgrade_net_proto_binary", source, str(out)]) == 0
    written = proto_io.read_binary(str(out), pb.NetParameter())
    assert not written.layers and [layer.name for layer in written.layer][:2] == ["cifar", "conv1"]
    assert written == proto_io.read_net_binary(source)                 # blobs (legacy shapes) kept


def test_upgrade_solver_proto_text(tmp_path):
    old = tmp_path / "old_solver.prototxt"
    old.write_text('net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nsolver_type: ADAGRAD\n')
    out = tmp_path / "solver.prototxt"
    assert cli.main(["upgrade_solver_proto_text", str(old), str(out)]) == 0
    written = proto_io.read_text(str(out), pb.SolverParameter())
    assert written.type == "AdaGrad" and not written.HasField("solver_type")


def test_upgrade_tools_name_a_file_of_the_wrong_kind(tmp_path, capsys):
    weights = tmp_path / "w.caffemodel"
    proto_io.write_binary(pb.NetParameter(name="x", layer=[pb.LayerParameter(name="a", type="ReLU")]), str(weights))
    assert cli.main(["upgrade_net_proto_text", str(weights), str(tmp_path / "o.prototxt")]) == 1
    assert "w.caffemodel" in capsys.readouterr().err
    text = tmp_path / "net.prototxt"
    text.write_text('layer { name: "a" type: "ReLU" }\n')
    assert cli.main(["upgrade_net_proto_binary", str(text), str(tmp_path / "o.caffemodel")]) == 1
    assert "net.prototxt" in capsys.readouterr().err


# -- extract_features ----------------------------------------------------------------------------
DEPLOY = """
name: "features"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 1 dim: 3 dim: 3 } } }
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1" inner_product_param { num_output: 5 weight_filler { type: "gaussian" } } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2" inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
"""


@pytest.fixture
def trained(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(DEPLOY)
    jitnet.set_random_seed(3)
    net = jitnet.Net(str(tmp_path / "deploy.prototxt"), jitnet.TEST)
    net.save(str(tmp_path / "w.caffemodel"))
    return net, tmp_path


def expected_features(net, inputs):
    w1, b1 = (p.data.astype(np.float64) for p in net.params["fc1"])
    w2, b2 = (p.data.astype(np.float64) for p in net.params["fc2"])
    h = np.maximum(inputs.reshape(len(inputs), -1) @ w1.T + b1, 0)
    return {"fc1": h, "fc2": h @ w2.T + b2}


@pytest.mark.parametrize("output", ["feats.h5", "feats_dir", "fc2.npy"])
def test_extract_features_from_an_array_of_inputs(trained, output, capsys):
    net, tmp_path = trained
    inputs = np.random.default_rng(0).normal(size=(10, 1, 3, 3)).astype(np.float32)   # 3 batches of 4
    np.save(tmp_path / "inputs.npy", inputs)
    blobs = "fc2" if output.endswith(".npy") else "fc1,fc2"
    code = cli.main(["extract_features", "--model", str(tmp_path / "deploy.prototxt"),
                     "--weights", str(tmp_path / "w.caffemodel"), "--blobs", blobs,
                     "--inputs", str(tmp_path / "inputs.npy"), "--output", str(tmp_path / output)])
    assert code == 0
    captured = capsys.readouterr()
    assert "for 10 inputs" in captured.out and "extract" in captured.err          # the progress bar
    want = expected_features(net, inputs.astype(np.float64))
    if output.endswith(".h5"):
        with h5py.File(tmp_path / output, "r") as f:
            got = {name: f[name][()] for name in ("fc1", "fc2")}
    elif output.endswith(".npy"):
        got = {"fc2": np.load(tmp_path / output)}
    else:
        got = {name: np.load(tmp_path / output / f"{name}.npy") for name in ("fc1", "fc2")}
    for name, array in got.items():
        assert array.shape == want[name].shape
        np.testing.assert_allclose(array, want[name], rtol=1e-5, atol=1e-5)


def test_extract_features_from_a_list_of_images(trained):
    from PIL import Image
    net, tmp_path = trained
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (3, 3, 3), dtype=np.uint8)
    names = []
    for k in range(3):
        Image.fromarray(pixels[k]).save(tmp_path / f"im{k}.png")
        names.append(f"im{k}.png")
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")     # relative to the list
    code = cli.main(["extract_features", "--model", str(tmp_path / "deploy.prototxt"), "--weights",
                     str(tmp_path / "w.caffemodel"), "--blobs", "fc2", "--inputs", str(tmp_path / "list.txt"),
                     "--gray", "--raw_scale", "255", "--mean_value", "100", "--output", str(tmp_path / "f.h5")])
    assert code == 0
    inputs = (pixels.astype(np.float64) - 100).reshape(3, 1, 3, 3)
    with h5py.File(tmp_path / "f.h5", "r") as f:
        np.testing.assert_allclose(f["fc2"][()], expected_features(net, inputs)["fc2"], rtol=1e-4, atol=1e-4)


def test_extract_features_with_the_nets_own_data_layer(tmp_path):
    (tmp_path / "net.prototxt").write_text("""
        layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 3 dim: 2 }
                data_filler { type: "constant" value: 1.5 } } }
        layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2
                weight_filler { type: "constant" value: 2 } } }""")
    code = cli.main(["extract_features", "--model", str(tmp_path / "net.prototxt"), "--blobs", "fc",
                     "--iterations", "2", "--output", str(tmp_path / "fc.npy")])
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "fc.npy"), np.full((6, 2), 6.0))


def test_extract_features_errors(trained, capsys):
    net, tmp_path = trained
    base = ["extract_features", "--model", str(tmp_path / "deploy.prototxt"), "--output", str(tmp_path / "x.h5")]
    assert cli.main(base + ["--blobs", "fc9", "--iterations", "1"]) == 1
    assert "no blob 'fc9'" in capsys.readouterr().err
    assert cli.main(base + ["--blobs", "fc1"]) == 1
    assert "--inputs" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((2, 3)))
    assert cli.main(base + ["--blobs", "fc1", "--inputs", str(tmp_path / "bad.npy")]) == 1
    assert "bad.npy" in capsys.readouterr().err
