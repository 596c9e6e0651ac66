"""pycaffe's Python surface (issue 11, point 4): NetSpec with ``jitnet.layers as L`` and
``jitnet.params as P``; ``jitnet.io``; Classifier and Detector; the Net methods scripts
use (forward/backward with start, end, blobs and diffs; forward_all, forward_backward_all,
backward_all; layer_dict, top_names, bottom_names, blob_loss_weights, share_with); and
the ``Python`` layer in nets. Expected values are computed here with numpy."""
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
import jitnet as caffe
from jitnet import io as jio
from jitnet import layers as L
from jitnet import params as P
from jitnet.proto import io as proto_io
from jitnet.proto import pb

TESTS = Path(__file__).resolve().parent


def parse(text):
    return text_format.Parse(text, pb.NetParameter())


# =========================================================================== NetSpec
def lenet_spec(batch_size=64):
    """The LeNet of Caffe's "learning LeNet" notebook, written as it writes it."""
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source="mnist_train_lmdb",
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool1, num_output=500, weight_filler=dict(type="xavier"),
                           param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n


def test_netspec_writes_the_layers_as_caffe_reads_them():
    proto = lenet_spec().to_proto()
    layers = {layer.name: layer for layer in proto.layer}
    assert [layer.name for layer in proto.layer] == ["data", "conv1", "pool1", "fc1", "relu1", "score", "loss"]
    assert list(layers["data"].top) == ["data", "label"]                       # ntop=2
    assert layers["data"].data_param.backend == pb.DataParameter.LMDB
    assert layers["data"].transform_param.scale == pytest.approx(1 / 255)
    assert layers["conv1"].convolution_param.kernel_size == [5]                # repeated field
    assert layers["conv1"].convolution_param.weight_filler.type == "xavier"    # dict -> message
    assert layers["pool1"].pooling_param.pool == pb.PoolingParameter.MAX
    assert [(p.lr_mult, p.decay_mult) for p in layers["fc1"].param] == [(1, 1), (2, 0)]
    assert list(layers["relu1"].bottom) == list(layers["relu1"].top) == ["fc1"]  # in_place
    assert list(layers["score"].bottom) == ["fc1"]
    assert list(layers["loss"].bottom) == ["score", "label"]
    again = parse(str(proto))                                               # str() is the prototxt
    assert again == proto


def test_netspec_names_unnamed_tops_after_their_type_and_handles_ntop_0_and_fields():
    data = L.Input(shape=dict(dim=[2, 3]))
    ip = L.InnerProduct(data, num_output=4, name="custom", include=dict(phase=caffe.TEST),
                        loss_weight=0.5, propagate_down=[True])
    silence = L.Silence(ip, ntop=0)
    proto = caffe.to_proto(silence)
    names = [(layer.name, list(layer.top)) for layer in proto.layer]
    assert names == [("Input1", ["Input1"]), ("custom", ["InnerProduct1"]), ("Silence1", [])]
    custom = proto.layer[1]
    assert custom.include[0].phase == pb.TEST and custom.loss_weight == [0.5]
    assert list(custom.propagate_down) == [True]
    assert proto.layer[0].input_param.shape[0].dim == [2, 3]


def test_netspec_built_net_runs_in_jitnet(tmp_path):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[3, 5]))
    n.ip1 = L.InnerProduct(n.data, num_output=4, weight_filler=dict(type="gaussian", std=0.5),
                           bias_filler=dict(type="constant", value=0.1))
    n.relu = L.ReLU(n.ip1, in_place=True)
    n.prob = L.Softmax(n.ip1)
    path = tmp_path / "net.prototxt"
    path.write_text(str(n.to_proto()))
    net = caffe.Net(str(path), caffe.TEST)
    x = np.random.default_rng(0).normal(size=(3, 5))
    out = net.forward(data=x)["prob"]
    w, b = (p.data.astype(np.float64) for p in net.params["ip1"])
    h = np.maximum(x @ w.T + b, 0)
    e = np.exp(h - h.max(1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(1, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(net.params["ip1"][1].data, 0.1)


def test_netspec_errors_name_the_layer_and_field():
    with pytest.raises(jitnet.JitnetError, match=r"layer 'InnerProduct1' \(InnerProduct\).*num_outputt"):
        caffe.to_proto(L.InnerProduct(L.Input(), num_outputt=3))
    with pytest.raises(jitnet.JitnetError, match=r"bottom 0 is a int"):
        L.ReLU(3)
    with pytest.raises(AttributeError, match="no value 'MAXX'"):
        P.Pooling.MAXX


def test_the_layers_package_is_also_netspecs_factory():
    assert jitnet.layers is L
    assert L.common.__name__ == "jitnet.layers.common"                    # the family modules stay
    assert callable(L.Convolution) and callable(jitnet.layers.AnyTypeAtAll)
    with pytest.raises(AttributeError):
        L.not_a_type                                                      # lowercase: modules only
    from jitnet.layers import python_layer                                # submodules still import
    assert python_layer.Python.type == "Python"
    assert P.Pooling.AVE == pb.PoolingParameter.AVE and P.Data.LMDB == pb.DataParameter.LMDB


# =========================================================================== jitnet.io
def test_transformer_preprocess_in_pycaffes_order_and_deprocess_inverts_it():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (6, 7, 3)).astype(np.float32)
    t = jio.Transformer({"data": (1, 3, 6, 7)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    mean = np.array([104.0, 117.0, 123.0])
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    out = t.preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[::-1] * 255 - mean[:, None, None]) * 0.5
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_allclose(t.deprocess("data", out), image, rtol=1e-5, atol=1e-6)


def test_transformer_resizes_to_the_input_size():
    t = jio.Transformer({"data": (1, 1, 10, 10)})
    t.set_transpose("data", (2, 0, 1))
    assert t.preprocess("data", np.ones((4, 5, 1))).shape == (1, 10, 10)


def test_set_mean_refuses_a_mean_that_does_not_fit(tmp_path):
    t = jio.Transformer({"data": (10, 3, 227, 227)})
    with pytest.raises(ValueError, match=r"mean has shape \(3, 256, 256\).*\(10, 3, 227, 227\).*mean\.mean\(1\)"):
        t.set_mean("data", np.zeros((3, 256, 256)))
    with pytest.raises(jitnet.JitnetError, match=r"4 per-channel values.*3 channels"):
        t.set_mean("data", np.zeros(4))
    path = tmp_path / "mean.binaryproto"
    proto_io.write_blob_proto(np.zeros((1, 3, 32, 32), np.float32), str(path))
    with pytest.raises(jitnet.JitnetError, match=r"mean file .*mean\.binaryproto.*\(3, 32, 32\)"):
        t.set_mean("data", str(path))
    with pytest.raises(jitnet.JitnetError, match="'label' is not one of the net inputs: data"):
        t.set_mean("label", np.zeros(3))
    (tmp_path / "junk.binaryproto").write_bytes(b"\xff\xfe not a blob")
    with pytest.raises(jitnet.JitnetError, match=r"junk\.binaryproto"):
        t.set_mean("data", str(tmp_path / "junk.binaryproto"))


def test_set_mean_from_a_real_mean_file():
    path = Path(__file__).resolve().parents[2] / "shared" / "models" / "cifar10_quick_impact_scar" / "mean.binaryproto"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    t = jio.Transformer({"data": (1, 3, 32, 32)})
    t.set_mean("data", str(path))
    np.testing.assert_array_equal(t.mean["data"], proto_io.read_blob_proto(str(path))[0])


def test_load_image_through_pillow(tmp_path):
    from PIL import Image
    rgb = np.random.default_rng(2).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(rgb[:, :, 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((5, 4), 7, np.uint8)])).save(tmp_path / "rgba.png")
    color = jio.load_image(str(tmp_path / "rgb.png"))
    assert color.dtype == np.float32 and color.shape == (5, 4, 3)
    np.testing.assert_allclose(color, rgb / 255.0, atol=1e-7)
    np.testing.assert_allclose(jio.load_image(str(tmp_path / "rgba.png")), rgb / 255.0, atol=1e-7)
    grey = jio.load_image(str(tmp_path / "grey.png"), color=False)
    assert grey.shape == (5, 4, 1)
    np.testing.assert_allclose(grey[:, :, 0], rgb[:, :, 0] / 255.0, atol=1e-7)
    assert jio.load_image(str(tmp_path / "grey.png")).shape == (5, 4, 3)
    lum = jio.load_image(str(tmp_path / "rgb.png"), color=False)[:, :, 0]
    np.testing.assert_allclose(lum, rgb / 255.0 @ np.array([0.2125, 0.7154, 0.0721]), atol=1e-6)
    (tmp_path / "not.png").write_text("hello")
    with pytest.raises(jitnet.JitnetError, match=r"not\.png: cannot read as an image"):
        jio.load_image(str(tmp_path / "not.png"))


def test_resize_image():
    constant = jio.resize_image(np.full((4, 4, 3), 0.3), (7, 9))
    assert constant.shape == (7, 9, 3) and np.allclose(constant, 0.3)
    ramp = np.linspace(0, 1, 8)[None, :, None] * np.ones((8, 8, 1))
    up = jio.resize_image(ramp, (16, 16))
    assert up.shape == (16, 16, 1) and up.dtype == np.float32
    assert np.all(np.diff(up[8, 2:-2, 0]) > 0)                         # still increasing
    assert jio.resize_image(np.ones((4, 4, 5)), (2, 3)).shape == (2, 3, 5)   # other channel counts
    same = np.random.default_rng(3).uniform(size=(6, 5, 3))
    np.testing.assert_allclose(jio.resize_image(same, (6, 5)), same, rtol=1e-5, atol=1e-6)


def test_oversample_gives_corners_centre_and_mirrors():
    image = np.arange(5 * 6 * 2, dtype=np.float32).reshape(5, 6, 2)
    crops = jio.oversample([image], (3, 4))
    assert crops.shape == (10, 3, 4, 2)
    np.testing.assert_array_equal(crops[0], image[0:3, 0:4])
    np.testing.assert_array_equal(crops[3], image[2:5, 2:6])
    np.testing.assert_array_equal(crops[4], image[1:4, 1:5])             # the centre
    np.testing.assert_array_equal(crops[5], image[0:3, 0:4][:, ::-1])    # mirrored


def test_blobproto_and_datum_conversions():
    array = np.random.default_rng(4).normal(size=(2, 3, 4))
    blob = jio.array_to_blobproto(array, diff=array * 2)
    assert len(blob.data) == 24 and not len(blob.double_data)             # float, as pycaffe
    np.testing.assert_allclose(jio.blobproto_to_array(blob), array, rtol=1e-6)
    np.testing.assert_allclose(jio.blobproto_to_array(blob, return_diff=True), array * 2, rtol=1e-6)
    legacy = pb.BlobProto(num=1, channels=2, height=1, width=2, data=[1, 2, 3, 4])
    assert jio.blobproto_to_array(legacy).shape == (1, 2, 1, 2)
    arrays = jio.blobprotovector_str_to_arraylist(jio.arraylist_to_blobprotovector_str([array, array[0]]))
    assert [a.shape for a in arrays] == [(2, 3, 4), (3, 4)]
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = jio.array_to_datum(pixels, label=7)
    assert datum.data == pixels.tobytes() and datum.label == 7
    np.testing.assert_array_equal(jio.datum_to_array(datum), pixels)
    np.testing.assert_allclose(jio.datum_to_array(jio.array_to_datum(array)), array)
    with pytest.raises(jitnet.JitnetError, match="C x H x W"):
        jio.array_to_datum(np.zeros((2, 2)))


# =========================================================================== Net surface
CHAIN = """
name: "chain"
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 6 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def chain(force_backward=False):
    text = CHAIN + ("force_backward: true\n" if force_backward else "")
    jitnet.set_random_seed(0)
    return caffe.Net(parse(text), caffe.TRAIN)


def numpy_chain(net, x, label, loss_weight=1.0):
    w1, b1 = (p.data.astype(np.float64) for p in net.params["ip1"])
    w2, b2 = (p.data.astype(np.float64) for p in net.params["ip2"])
    h = np.maximum(x @ w1.T + b1, 0)
    s = h @ w2.T + b2
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(x)
    loss = -np.log(p[np.arange(n), label.astype(int)]).mean()
    ds = p.copy()
    ds[np.arange(n), label.astype(int)] -= 1
    ds *= loss_weight / n
    dh = (ds @ w2) * (h > 0)
    return dict(h=h, s=s, loss=loss, ds=ds, dh=dh, dx=dh @ w1)


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(4, 5)), np.array([0, 2, 1, 2], np.float64)


def test_forward_with_start_end_and_blobs():
    net = chain()
    x, label = _inputs()
    ref = numpy_chain(net, x, label)
    out = net.forward(data=x, label=label, end="relu1")
    assert list(out) == ["ip1"]                                  # the end layer's top
    np.testing.assert_allclose(out["ip1"], ref["h"], rtol=1e-5, atol=1e-6)
    out = net.forward(start="ip2", blobs=["ip2"])               # from ip2 on, h kept in the blob
    assert set(out) == {"loss", "ip2"}
    np.testing.assert_allclose(out["ip2"], ref["s"], rtol=1e-5, atol=1e-5)
    assert float(out["loss"]) == pytest.approx(ref["loss"], rel=1e-5)
    with pytest.raises(jitnet.JitnetError, match="no layer named 'nope'"):
        net.forward(end="nope")
    with pytest.raises(jitnet.JitnetError, match="comes after"):
        net.forward(start="ip2", end="ip1")


def test_backward_with_diffs_start_end_and_a_given_loss_diff():
    net = chain(force_backward=True)
    x, label = _inputs(1)
    net.forward(data=x, label=label)
    ref = numpy_chain(net, x, label)
    grads = net.backward(diffs=["ip1"])
    assert set(grads) == {"data", "label", "ip1"}
    np.testing.assert_allclose(grads["data"], ref["dx"], rtol=1e-4, atol=1e-6)
    # a diff given for the loss top replaces its loss weight (pycaffe's backward(**diffs))
    grads = net.backward(loss=np.array(3.0))
    np.testing.assert_allclose(grads["data"], numpy_chain(net, x, label, 3.0)["dx"], rtol=1e-4, atol=1e-6)
    # from a given diff of ip2 down to ip1 only
    dip2 = np.random.default_rng(2).normal(size=(4, 3))
    grads = net.backward(start="ip2", end="ip1", ip2=dip2, diffs=["data"])
    assert set(grads) == {"ip1", "data"}
    w1, _ = (p.data.astype(np.float64) for p in net.params["ip1"])
    w2, _ = (p.data.astype(np.float64) for p in net.params["ip2"])
    dh = (dip2 @ w2) * (ref["h"] > 0)
    np.testing.assert_allclose(grads["data"], dh @ w1, rtol=1e-4, atol=1e-6)


def test_forward_all_batches_pads_and_drops_the_padding():
    net = caffe.Net(parse("""
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 5 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
        layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }"""), caffe.TEST)
    x = np.random.default_rng(3).normal(size=(10, 5))
    out = net.forward_all(data=x, blobs=["ip"])
    w, b = (p.data.astype(np.float64) for p in net.params["ip"])
    np.testing.assert_allclose(out["ip"], x @ w.T + b, rtol=1e-5, atol=1e-5)
    assert out["prob"].shape == (10, 3)
    with pytest.raises(jitnet.JitnetError, match="'label' is not an input"):
        net.forward_all(label=x)


def test_forward_backward_all_and_backward_all():
    net = caffe.Net(parse("""
        force_backward: true
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 5 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }"""),
        caffe.TEST)
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(6, 5)), rng.normal(size=(6, 3))
    outs, diffs = net.forward_backward_all(data=x, ip=dy)
    w, b = (p.data.astype(np.float64) for p in net.params["ip"])
    np.testing.assert_allclose(outs["ip"], x @ w.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(diffs["data"], dy @ w, rtol=1e-5, atol=1e-5)
    assert diffs["data"].shape == (6, 5)
    _, again = net.backward_all(data=x, ip=dy)
    np.testing.assert_allclose(again["data"], diffs["data"])


def test_net_views_scripts_use():
    net = chain()
    assert list(net.layer_dict) == ["data", "ip1", "relu1", "ip2", "loss"]
    assert net.layer_dict["ip1"].type == "InnerProduct"
    assert net.top_names["relu1"] == ["ip1"] and net.bottom_names["loss"] == ["ip2", "label"]
    assert net.blob_loss_weights["loss"] == 1.0 and net.blob_loss_weights["ip2"] == 0.0
    assert net._layer_names == list(net.layer_dict) and net._blob_names == list(net.blobs)
    assert "Python" in caffe.layer_type_list() and "InnerProduct" in caffe.layer_type_list()
    other = caffe.Net(parse(CHAIN), caffe.TEST)
    other.share_with(net)
    net.params["ip1"][0].data[0, 0] = 42.0
    assert other.params["ip1"][0].data[0, 0] == 42.0


def test_save_hdf5_and_load_hdf5(tmp_path):
    net = chain()
    net.save_hdf5(str(tmp_path / "w.h5"))
    other = caffe.Net(parse(CHAIN), caffe.TEST)
    other.load_hdf5(str(tmp_path / "w.h5"))
    np.testing.assert_array_equal(other.params["ip2"][0].data, net.params["ip2"][0].data)


# =========================================================================== Classifier, Detector
CLASSIFIER_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 3 dim: 3 dim: 4 dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def tiny_model(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(CLASSIFIER_NET)
    net = caffe.Net(str(tmp_path / "deploy.prototxt"), caffe.TEST)
    rng = np.random.default_rng(5)
    for blob in net.params["ip"]:
        blob.data[...] = rng.normal(size=blob.shape)
    net.save(str(tmp_path / "w.caffemodel"))
    return net, str(tmp_path / "deploy.prototxt"), str(tmp_path / "w.caffemodel")


def _probs(net, batch):
    w, b = (p.data.astype(np.float64) for p in net.params["ip"])
    s = batch.reshape(len(batch), -1) @ w.T + b
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_classifier_predicts_with_centre_crops_and_oversampling(tmp_path):
    net, deploy, weights = tiny_model(tmp_path)
    mean = np.array([0.1, 0.2, 0.3])
    clf = caffe.Classifier(deploy, weights, image_dims=(6, 6), mean=mean, raw_scale=2.0,
                           channel_swap=(2, 1, 0))
    rng = np.random.default_rng(6)
    images = [rng.uniform(size=(6, 6, 3)).astype(np.float32) for _ in range(5)]   # > one batch

    def prep(crop):
        return crop.transpose(2, 0, 1)[::-1] * 2.0 - mean[:, None, None]
    centre = clf.predict(images, oversample=False)
    expected = _probs(net, np.stack([prep(im[1:5, 1:5]) for im in images]))
    np.testing.assert_allclose(centre, expected, rtol=1e-5, atol=1e-6)
    over = clf.predict(images)
    crops = jio.oversample(images, (4, 4))
    expected = _probs(net, np.stack([prep(c) for c in crops])).reshape(5, 10, -1).mean(1)
    np.testing.assert_allclose(over, expected, rtol=1e-5, atol=1e-6)


def test_detector_classifies_windows_with_context_padding(tmp_path):
    net, deploy, weights = tiny_model(tmp_path)
    det = caffe.Detector(deploy, weights, mean=np.array([0.5, 0.5, 0.5]), context_pad=1)
    image = np.random.default_rng(7).uniform(size=(12, 12, 3)).astype(np.float32)
    windows = [(0, 0, 6, 6), (3, 4, 11, 12)]
    found = det.detect_windows([(image, windows)])
    assert [d["window"] for d in found] == windows
    for d in found:
        assert d["prediction"].shape == (5,) and d["prediction"].sum() == pytest.approx(1, rel=1e-5)
    plain = caffe.Detector(deploy, weights)
    crop = plain.crop(image, (2, 3, 8, 9))
    np.testing.assert_array_equal(crop, image[2:8, 3:9])
    padded = det.crop(image, (0, 0, 6, 6))
    assert padded.shape == (4, 4, 3)
    np.testing.assert_allclose(padded[0, 0], 0.5)                         # context outside: the mean


# =========================================================================== the Python layer
@pytest.fixture
def tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))


PYLOSS = """
name: "pyloss"
force_backward: true
layer { name: "data" type: "Input" top: "a" top: "b" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "loss" type: "Python" bottom: "a" bottom: "b" top: "loss"
        python_param { module: "pycaffe_user_layers" layer: "EuclideanLoss" } loss_weight: 1 }
layer { name: "ref" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "ref" loss_weight: 0 }
"""


@pytest.mark.parametrize("mode", ["cpu", "gpu"])
def test_a_python_loss_layer_matches_caffes_euclidean_loss(tests_on_path, mode):
    getattr(jitnet, f"set_mode_{mode}")()
    try:
        net = caffe.Net(parse(PYLOSS), caffe.TRAIN)
        assert net.layer_dict["loss"].host_only
        rng = np.random.default_rng(8)
        a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
        out = net.forward(a=a, b=b)
        assert float(out["loss"][0]) == pytest.approx(float(out["ref"]), rel=1e-6)
        assert float(out["loss"][0]) == pytest.approx(((a - b) ** 2).sum() / 8, rel=1e-5)
        grads = net.backward(loss=np.array([2.0]))
        np.testing.assert_allclose(grads["a"], 2.0 * (a - b) / 4, rtol=1e-5)
        np.testing.assert_allclose(grads["b"], -2.0 * (a - b) / 4, rtol=1e-5)
    finally:
        jitnet.set_mode_cpu()


def test_python_layer_blobs_learn_save_and_load(tests_on_path, tmp_path):
    text = """
        name: "affine"
        layer { name: "data" type: "Input" top: "x" top: "t" input_param { shape { dim: 8 dim: 1 } } }
        layer { name: "lin" type: "Python" bottom: "x" top: "y" param { lr_mult: 1 } param { lr_mult: 1 }
                python_param { module: "pycaffe_user_layers" layer: "ScaleShift" param_str: '{"a": 0.0, "b": 0.0}' } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "loss" }
    """
    (tmp_path / "net.prototxt").write_text(text)
    (tmp_path / "solver.prototxt").write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.5\n'
                                              'lr_policy: "fixed"\nmax_iter: 200\ndisplay: 0\n')
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    x = np.linspace(-1, 1, 8)[:, None]
    for _ in range(200):
        solver.net.blobs["x"].data[...] = x
        solver.net.blobs["t"].data[...] = 3 * x - 2
        solver.step(1)
    a, b = (blob.data[0] for blob in solver.net.params["lin"])
    assert a == pytest.approx(3, abs=1e-3) and b == pytest.approx(-2, abs=1e-3)
    solver.net.save(str(tmp_path / "w.caffemodel"))
    again = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TEST, weights=str(tmp_path / "w.caffemodel"))
    assert again.params["lin"][0].data[0] == a


def test_python_layer_gets_phase_and_param_str_and_may_be_any_class(tests_on_path):
    net = caffe.Net(parse("""
        layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 } } }
        layer { name: "py" type: "Python" bottom: "x" top: "y"
                python_param { module: "pycaffe_user_layers" layer: "PhaseAndParam" param_str: "hello" } }"""),
        caffe.TEST)
    assert net.layer_dict["py"].user.seen == (caffe.TEST, "hello")
    np.testing.assert_array_equal(net.forward(x=np.array([1.0, 2.0]))["y"], [1.0, 2.0])


def test_a_python_module_that_cannot_be_imported_names_module_and_sys_path():
    lp = pb.LayerParameter(name="py", type="Python", bottom=["x"], top=["y"])
    lp.python_param.module, lp.python_param.layer = "surely_not_a_module_xyz", "Layer"
    net = parse('layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 } } }')
    net.layer.add().CopyFrom(lp)
    with pytest.raises(jitnet.LayerError) as caught:
        caffe.Net(net, caffe.TEST)
    message = str(caught.value)
    assert "layer 'py' (type Python)" in message and "'surely_not_a_module_xyz'" in message
    assert repr(sys.path[0]) in message and "sys.path" in message


def test_a_python_module_with_an_error_or_a_missing_dependency(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "broken_layer_mod.py").write_text("def oops(:\n")
    (tmp_path / "needs_dep_mod.py").write_text("import surely_missing_dependency_xyz\n")
    for module, pattern in (("broken_layer_mod", "SyntaxError"),
                            ("needs_dep_mod", "imports 'surely_missing_dependency_xyz'")):
        net = parse('layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 2 } } }')
        layer = net.layer.add(name="py", type="Python", bottom=["x"], top=["y"])
        layer.python_param.module, layer.python_param.layer = module, "L"
        with pytest.raises(jitnet.LayerError, match=pattern):
            caffe.Net(net, caffe.TEST)


def test_an_exception_in_the_users_forward_names_layer_method_and_keeps_the_cause(tests_on_path):
    net = parse('layer { name: "data" type: "Input" top: "a" top: "b" input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }')
    layer = net.layer.add(name="mismatch", type="Python", bottom=["a", "b"], top=["loss"])
    layer.python_param.module, layer.python_param.layer = "pycaffe_user_layers", "EuclideanLoss"
    with pytest.raises(jitnet.LayerError, match=r"'mismatch'.*EuclideanLoss\.reshape\(\) raised Exception: "
                                                r"Inputs must have the same dimension") as caught:
        caffe.Net(net, caffe.TEST)
    assert isinstance(caught.value.__cause__, Exception)
