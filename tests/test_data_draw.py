"""jitnet draw: pictures of nets from the NetParameter alone (any layer type), with
matplotlib's layered layout always and Graphviz when its dot program is installed."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

import jitnet
from jitnet import cli
from jitnet.draw import draw_net, graphviz_available, layered_layout, net_graph
from jitnet.proto import pb

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"

NET = """name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  data_param { source: "x" batch_size: 64 } }
layer { name: "data" type: "Input" top: "data" top: "label" include { phase: TEST }
  input_param { shape { dim: 2 dim: 1 dim: 28 dim: 28 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 20 kernel_size: 5 stride: 2 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def net():
    return text_format.Parse(NET, pb.NetParameter())


def test_graph_has_caffes_labels_and_edges():
    nodes, edges = net_graph(net(), jitnet.TRAIN)
    labels = {label for kind, label, _ in nodes.values() if kind == "layer"}
    assert "conv1\n(Convolution)\nkernel size: 5\nstride: 2\npad: 1" in labels
    assert "pool1\n(Pooling AVE)\nkernel size: 3\nstride: 2\npad: 0" in labels
    assert "data\n(Data)" in labels and not any("Input" in label for label in labels)
    edge_labels = {(nodes[a][1].split("\n")[0], nodes[b][1], label) for a, b, label in edges if label}
    assert ("conv1", "conv1", "20") in edge_labels and ("ip", "ip", "10") in edge_labels
    assert ("data", "data", "Batch 64") in edge_labels
    # the in-place ReLU writes a new "ip" node, so the picture has no cycle
    ip_nodes = [n for n, (kind, label, _) in nodes.items() if kind == "blob" and label == "ip"]
    assert len(ip_nodes) == 2
    assert len(net_graph(net(), None)[0]) == len(nodes) + 1        # ALL: both data layers


def test_layout_ranks_follow_the_flow():
    nodes, edges = net_graph(net(), jitnet.TEST)
    place = layered_layout(nodes, edges)
    for a, b, _ in edges:
        assert place[a][0] < place[b][0]


@pytest.mark.parametrize("rankdir", ["LR", "TB"])
@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_matplotlib_pictures(tmp_path, rankdir, suffix):
    out = tmp_path / f"net{suffix}"
    assert draw_net(net(), str(out), rankdir=rankdir, phase=jitnet.TRAIN, renderer="matplotlib") == "matplotlib"
    data = out.read_bytes()
    assert data[:4] == {".png": b"\x89PNG", ".svg": b"<?xm", ".pdf": b"%PDF"}[suffix]
    if suffix == ".png":
        width, height = Image.open(out).size
        assert (width > height) == (rankdir == "LR")
        pixels = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3)
        assert (np.abs(pixels.astype(int) - [0xFF, 0x50, 0x50]).sum(axis=1) < 30).any()   # a red conv box
    if suffix == ".svg":
        assert "kernel size: 5" in data.decode()


@pytest.mark.skipif(not graphviz_available(), reason="Graphviz's dot program is not installed")
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_graphviz_pictures(tmp_path, suffix):
    out = tmp_path / f"net{suffix}"
    assert draw_net(net(), str(out), rankdir="TB", renderer="graphviz") == "graphviz"
    assert out.stat().st_size > 100
    if suffix == ".svg":
        assert "kernel size: 5" in out.read_text()


def test_graphviz_renderer_without_dot_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(jitnet.JitnetError, match="dot program"):
        draw_net(net(), str(tmp_path / "n.png"), renderer="graphviz")
    assert draw_net(net(), str(tmp_path / "n.png")) == "matplotlib"            # auto falls back


def test_cli_draws_a_caffe_model_with_types_jitnet_lacks(tmp_path, capsys):
    path = MODELS / "lenet_mnist" / "lenet_train_test.prototxt"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared Caffe models)")
    out = tmp_path / "lenet.png"
    assert cli.main(["draw", str(path), str(out), "--phase", "TEST", "-rankdir", "TB",
                     "--renderer", "matplotlib"]) == 0
    assert "Drawing net to" in capsys.readouterr().out
    assert Image.open(out).size[1] > Image.open(out).size[0]


def test_cli_refuses_an_unknown_picture_format(tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(NET)
    assert cli.main(["draw", str(tmp_path / "net.prototxt"), str(tmp_path / "net.gif")]) == 1
    assert "name it .png, .svg or .pdf" in capsys.readouterr().err
