"""Tests of jitnet.Net: the pycaffe surface, forward/backward against numpy,
split fan-out, shared parameters, weights I/O, share_with and the data layers.

Expected values are recomputed here with numpy (float64) from Caffe's
definitions, never taken from jitnet's own output.
"""
from pathlib import Path

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet.errors import NetDefinitionError, WeightsError
from jitnet.proto import blob_to_array, pb, read_net_binary

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def P(text):
    return text_format.Parse(text, pb.NetParameter())


def require(path):
    if not path.exists():
        pytest.skip(f"real Caffe model file not found: {path}")
    return path


def randomize(net, seed=0):
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(size=b.shape)


def softmax(s):
    e = np.exp(s - s.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


from test_planner import MLP  # noqa: E402  (the small classifier both files use)


def mlp_reference(net, x, label):
    """Forward and backward of MLP in float64 numpy: loss, scores, and every param gradient."""
    w1, b1 = (a.data.astype(np.float64) for a in net.params["ip1"])
    w2, b2 = (a.data.astype(np.float64) for a in net.params["ip2"])
    x = x.astype(np.float64)
    n = x.shape[0]
    lab = label.astype(int)
    h = np.maximum(x @ w1.T + b1, 0)
    s = h @ w2.T + b2
    p = softmax(s)
    loss = -np.log(p[np.arange(n), lab]).mean()
    ds = p.copy()
    ds[np.arange(n), lab] -= 1
    ds /= n
    dw2, db2 = ds.T @ h, ds.sum(0)
    dh = (ds @ w2) * (h > 0)
    dw1, db1 = dh.T @ x, dh.sum(0)
    dx = dh @ w1
    return dict(loss=loss, h=h, s=s, dw1=dw1, db1=db1, dw2=dw2, db2=db2, dx=dx)


def test_forward_backward_against_numpy():
    net = jitnet.Net(P(MLP), jitnet.TRAIN)
    randomize(net)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    label = np.array([0, 2, 1, 2], np.float32)
    out = net.forward(data=x, label=label)
    ref = mlp_reference(net, x, label)
    assert set(out) == {"loss"}
    assert float(out["loss"]) == pytest.approx(ref["loss"], rel=1e-5)
    assert net.loss == pytest.approx(ref["loss"], rel=1e-5)
    np.testing.assert_allclose(net.blobs["ip1"].data, ref["h"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.blobs["ip2"].data, ref["s"], rtol=1e-5, atol=1e-5)
    net.backward()
    np.testing.assert_allclose(net.params["ip1"][0].diff, ref["dw1"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip1"][1].diff, ref["db1"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip2"][0].diff, ref["dw2"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip2"][1].diff, ref["db2"], rtol=1e-4, atol=1e-6)
    # parameter gradients accumulate (Caffe: the solver clears them)
    net.backward()
    np.testing.assert_allclose(net.params["ip1"][0].diff, 2 * ref["dw1"], rtol=1e-4, atol=1e-6)
    net.clear_param_diffs()
    assert not net.params["ip1"][0].diff.any()


def test_forward_with_new_batch_size_reshapes():
    net = jitnet.Net(P(MLP), jitnet.TRAIN)
    randomize(net, 3)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(7, 5)).astype(np.float32)
    label = rng.integers(0, 3, size=7).astype(np.float32)
    out = net.forward(data=x, label=label)
    assert net.blobs["data"].shape == (7, 5)
    assert net.blobs["ip1"].shape == (7, 6)
    assert net.blobs["ip2"].shape == (7, 3)
    ref = mlp_reference(net, x, label)
    assert float(out["loss"]) == pytest.approx(ref["loss"], rel=1e-5)
    net.backward()
    np.testing.assert_allclose(net.params["ip1"][0].diff, ref["dw1"], rtol=1e-4, atol=1e-6)
    # and back to a smaller batch
    out = net.forward(data=x[:2], label=label[:2])
    assert net.blobs["ip2"].shape == (2, 3)
    assert float(out["loss"]) == pytest.approx(mlp_reference(net, x[:2], label[:2])["loss"],
                                                rel=1e-5)


def test_force_backward_gives_input_gradient():
    net = jitnet.Net(P("force_backward: true\n" + MLP), jitnet.TRAIN)
    randomize(net, 5)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    label = np.array([1, 1, 0, 2], np.float32)
    net.forward(data=x, label=label)
    diffs = net.backward()
    ref = mlp_reference(net, x, label)
    np.testing.assert_allclose(diffs["data"], ref["dx"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.blobs["data"].diff, ref["dx"], rtol=1e-4, atol=1e-6)


EUCLID_DUMMY = """
name: "regress"
layer { name: "data" type: "DummyData" top: "x" top: "target"
        dummy_data_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "constant" value: 0.5 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
                              bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" loss_weight: 0.7 }
"""


def test_dummy_data_euclidean_loss_against_numpy():
    jitnet.set_random_seed(11)
    net = jitnet.Net(P(EUCLID_DUMMY), jitnet.TRAIN)
    out = net.forward()
    x = net.blobs["x"].data.astype(np.float64)
    assert x.std() > 0.1                              # gaussian, really filled
    np.testing.assert_array_equal(net.blobs["target"].data, np.full((3, 2), 0.5, np.float32))
    w1, b1 = (a.data.astype(np.float64) for a in net.params["ip1"])
    w2, b2 = (a.data.astype(np.float64) for a in net.params["ip2"])
    h = np.maximum(x @ w1.T + b1, 0)
    y = h @ w2.T + b2
    r = y - 0.5
    loss = (r ** 2).sum() / 3 / 2
    # the top holds the unweighted loss (as in Caffe); the net's loss is weighted
    assert float(out["loss"]) == pytest.approx(loss, rel=1e-5)
    assert net.loss == pytest.approx(0.7 * loss, rel=1e-5)
    net.backward()
    dy = 0.7 * r / 3
    dh = (dy @ w2) * (h > 0)
    np.testing.assert_allclose(net.params["ip2"][0].diff, dy.T @ h, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip1"][0].diff, dh.T @ x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip1"][1].diff, dh.sum(0), rtol=1e-4, atol=1e-6)
    # the gaussian filler refills every forward
    net.forward()
    assert not np.array_equal(net.blobs["x"].data, x.astype(np.float32))


def test_pycaffe_views():
    text = MLP + 'layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }'
    net = jitnet.Net(P(text), jitnet.TEST)
    assert net.inputs == ["data", "label"]
    assert set(net.outputs) == {"loss", "acc"}
    assert list(net.blob_loss_weights) == list(net.blobs)
    assert net.blob_loss_weights["loss"] == 1.0
    assert all(w == 0.0 for name, w in net.blob_loss_weights.items() if name != "loss")
    split = "ip2_ip2_0_split"
    lsplit = "label_data_1_split"
    assert list(net.top_names) == ["data", lsplit, "ip1", "relu1", "ip2", split, "loss", "acc"]
    assert net.top_names["data"] == ["data", "label"]
    assert net.top_names["relu1"] == ["ip1"]
    assert net.bottom_names["relu1"] == ["ip1"]
    assert net.bottom_names["data"] == []
    assert net.bottom_names["loss"] == [f"{split}_0", f"{lsplit}_0"]
    assert net.bottom_names["acc"] == [f"{split}_1", f"{lsplit}_1"]
    assert list(net.layer_dict) == list(net.top_names)
    assert [l.type for l in net.layers] == ["Input", "Split", "InnerProduct", "ReLU",
                                            "InnerProduct", "Split", "SoftmaxWithLoss", "Accuracy"]
    assert list(net.params) == ["ip1", "ip2"]
    assert [p.shape for p in net.params["ip1"]] == [(6, 5), (6,)]
    assert len(net.learnable_params) == 4
    assert net.params_lr == [1.0, 1.0, 1.0, 1.0]


def test_outputs_in_caffe_order():
    text = MLP + 'layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" }'
    net = jitnet.Net(P(text), jitnet.TEST)
    assert net.outputs == ["acc", "loss"]


def test_legacy_argument_order(tmp_path):
    model = tmp_path / "mlp.prototxt"
    model.write_text(MLP)
    net = jitnet.Net(str(model), jitnet.TEST)
    randomize(net, 7)
    weights = tmp_path / "mlp.caffemodel"
    net.save(str(weights))
    again = jitnet.Net(str(model), str(weights), jitnet.TEST)     # pycaffe's old order
    assert again.phase == jitnet.TEST
    for name in ("ip1", "ip2"):
        for a, b in zip(net.params[name], again.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    with pytest.raises(jitnet.JitnetError):
        jitnet.Net(str(model))


# ----------------------------------------------------------------------------------------------
# split fan-out
# ----------------------------------------------------------------------------------------------
FANOUT = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "t1" top: "t2"
        input_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param { num_output: 2 } }
layer { name: "e1" type: "EuclideanLoss" bottom: "y" bottom: "t1" top: "l1" }
layer { name: "e2" type: "EuclideanLoss" bottom: "y" bottom: "t2" top: "l2" loss_weight: 2 }
"""


def test_split_fan_out_sums_diffs():
    net = jitnet.Net(P(FANOUT), jitnet.TRAIN)
    randomize(net, 8)
    rng = np.random.default_rng(9)
    x, t1, t2 = (rng.normal(size=s).astype(np.float32) for s in ((3, 4), (3, 2), (3, 2)))
    out = net.forward(x=x, t1=t1, t2=t2)
    w, b = (a.data.astype(np.float64) for a in net.params["ip"])
    y = x @ w.T + b
    l1 = ((y - t1) ** 2).sum() / 6
    l2 = ((y - t2) ** 2).sum() / 6
    assert float(out["l1"]) == pytest.approx(l1, rel=1e-5)
    assert float(out["l2"]) == pytest.approx(l2, rel=1e-5)
    assert net.loss == pytest.approx(l1 + 2 * l2, rel=1e-5)
    net.backward()
    dy = (y - t1) / 3 + 2 * (y - t2) / 3
    np.testing.assert_allclose(net.blobs["y"].diff, dy, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip"][0].diff, dy.T @ x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.blobs["x"].diff, dy @ w, rtol=1e-4, atol=1e-6)
    # each target gets only its own loss's gradient (force_backward; Euclidean allows it)
    np.testing.assert_allclose(net.blobs["t1"].diff, -(y - t1) / 3, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.blobs["t2"].diff, -2 * (y - t2) / 3, rtol=1e-4, atol=1e-6)


def test_loss_weight_on_consumed_top_adds_to_its_gradient():
    text = """
    layer { name: "in" type: "Input" top: "x" top: "t" input_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 0.5
            inner_product_param { num_output: 2 } }
    layer { name: "e" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "l" }
    """
    net = jitnet.Net(P(text), jitnet.TRAIN)
    randomize(net, 10)
    rng = np.random.default_rng(11)
    x, t = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 2)).astype(np.float32)
    net.forward(x=x, t=t)
    w, b = (a.data.astype(np.float64) for a in net.params["ip"])
    y = x @ w.T + b
    assert net.loss == pytest.approx(0.5 * y.sum() + ((y - t) ** 2).sum() / 6, rel=1e-5)
    net.backward()
    dy = 0.5 + (y - t) / 3
    np.testing.assert_allclose(net.params["ip"][0].diff, dy.T @ x, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(net.params["ip"][1].diff, dy.sum(0), rtol=1e-4, atol=1e-6)


def test_force_backward_computes_frozen_param_gradients():
    text = FANOUT.replace('top: "y" inner', 'top: "y" param { lr_mult: 0 } param { lr_mult: 0 } inner')
    net = jitnet.Net(P(text), jitnet.TRAIN)
    randomize(net, 8)
    rng = np.random.default_rng(9)
    x, t1, t2 = (rng.normal(size=s).astype(np.float32) for s in ((3, 4), (3, 2), (3, 2)))
    net.forward(x=x, t1=t1, t2=t2)
    net.backward()
    w, b = (a.data.astype(np.float64) for a in net.params["ip"])
    y = x @ w.T + b
    dy = (y - t1) / 3 + 2 * (y - t2) / 3
    np.testing.assert_allclose(net.params["ip"][0].diff, dy.T @ x, rtol=1e-4, atol=1e-6)


def test_propagate_down_true_does_not_start_backward_by_itself():
    text = """
    layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } } }
    layer { name: "e" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l"
            propagate_down: true propagate_down: true }
    """
    net = jitnet.Net(P(text), jitnet.TRAIN)
    assert [s.name for s in net.plan.backward] == []
    net.forward(a=np.ones((2, 3)), b=np.zeros((2, 3)))
    net.backward()
    assert not net.blobs["a"].diff.any()


# ----------------------------------------------------------------------------------------------
# shared parameters
# ----------------------------------------------------------------------------------------------
SIAMESE = """
layer { name: "in" type: "Input" top: "a" top: "b" top: "ta" top: "tb"
        input_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 4 }
                      shape { dim: 3 dim: 2 } shape { dim: 3 dim: 2 } } }
layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya"
        param { name: "w" } param { name: "bias" }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" }
                              bias_filler { type: "gaussian" } } }
layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb"
        param { name: "w" } param { name: "bias" }
        inner_product_param { num_output: 2 } }
layer { name: "ea" type: "EuclideanLoss" bottom: "ya" bottom: "ta" top: "la" }
layer { name: "eb" type: "EuclideanLoss" bottom: "yb" bottom: "tb" top: "lb" }
"""


def test_shared_params_share_data_and_sum_gradients():
    net = jitnet.Net(P(SIAMESE), jitnet.TRAIN)
    wa, ba = net.params["ipa"]
    wb, bb = net.params["ipb"]
    assert np.shares_memory(wa.data, wb.data) and np.shares_memory(ba.data, bb.data)
    np.testing.assert_array_equal(wa.data, wb.data)     # ipb shows ipa's gaussian weights
    assert wa.data.std() > 0
    assert len(net.learnable_params) == 2
    wa.data[...] = np.arange(8, dtype=np.float32).reshape(2, 4) / 10
    assert wb.data[1, 3] == pytest.approx(0.7)
    rng = np.random.default_rng(12)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    ta, tb = rng.normal(size=(3, 2)), rng.normal(size=(3, 2))
    net.forward(a=a, b=b, ta=ta, tb=tb)
    net.backward()
    w, bias = wa.data.astype(np.float64), ba.data.astype(np.float64)
    dya = (a @ w.T + bias - ta) / 3
    dyb = (b @ w.T + bias - tb) / 3
    np.testing.assert_allclose(wa.diff, dya.T @ a + dyb.T @ b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(wb.diff, dya.T @ a + dyb.T @ b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ba.diff, dya.sum(0) + dyb.sum(0), rtol=1e-4, atol=1e-6)
    # an update through the owner is seen by both layers
    net.update()
    np.testing.assert_array_equal(wa.data, wb.data)


SHARE_MISMATCH = """
layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 6 } shape { dim: 2 dim: 4 } } }
layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya" param { name: "w" }
        inner_product_param { num_output: 2 } }
layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb" param { name: "w" MODE }
        inner_product_param { num_output: 3 } }
"""


def test_shared_param_strict_shape_mismatch_is_an_error():
    # (2, 6) and (3, 4): same count (12), different shapes
    with pytest.raises(NetDefinitionError) as err:
        jitnet.Net(P(SHARE_MISMATCH.replace("MODE", "")), jitnet.TRAIN)
    assert "ipb" in str(err.value) and "'w'" in str(err.value)
    with pytest.raises(NetDefinitionError):
        jitnet.Net(P(SHARE_MISMATCH.replace("MODE", "share_mode: STRICT")), jitnet.TRAIN)


def test_shared_param_permissive_needs_only_the_count():
    net = jitnet.Net(P(SHARE_MISMATCH.replace("MODE", "share_mode: PERMISSIVE")), jitnet.TRAIN)
    wa, wb = net.params["ipa"][0], net.params["ipb"][0]
    assert wa.shape == (2, 6) and wb.shape == (3, 4)
    wa.data[...] = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(wb.data, np.arange(12, dtype=np.float32).reshape(3, 4))
    bad = SHARE_MISMATCH.replace("MODE", "share_mode: PERMISSIVE").replace("num_output: 3",
                                                                           "num_output: 5")
    with pytest.raises(NetDefinitionError):
        jitnet.Net(P(bad), jitnet.TRAIN)


def test_shared_param_lr_mult_mismatch_is_an_error():
    text = SIAMESE.replace('param { name: "w" } param { name: "bias" }\n        inner_product_param { num_output: 2 }',
                           'param { name: "w" lr_mult: 2 } param { name: "bias" }\n        '
                           'inner_product_param { num_output: 2 }')
    text = text.replace('param { name: "w" } param { name: "bias" }',
                        'param { name: "w" lr_mult: 1 } param { name: "bias" }', 1)
    assert text.count("lr_mult") == 2
    with pytest.raises(NetDefinitionError, match="lr_mult"):
        jitnet.Net(P(text), jitnet.TRAIN)
    # the same lr_mult on both, or given only once, is fine
    ok = text.replace("lr_mult: 2", "lr_mult: 1")
    assert jitnet.Net(P(ok), jitnet.TRAIN).params_lr == [1.0, 1.0]
    once = text.replace(" lr_mult: 1", "")
    assert jitnet.Net(P(once), jitnet.TRAIN).params_lr == [2.0, 1.0]


# ----------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_save_and_load_round_trip(tmp_path, suffix):
    net = jitnet.Net(P(MLP), jitnet.TEST)
    randomize(net, 13)
    x = np.random.default_rng(14).normal(size=(4, 5)).astype(np.float32)
    label = np.array([0, 1, 2, 0], np.float32)
    want = float(net.forward(data=x, label=label)["loss"])
    want_scores = net.blobs["ip2"].data.copy()
    path = tmp_path / f"w{suffix}"
    net.save(str(path))
    fresh = jitnet.Net(P(MLP), jitnet.TEST)
    assert not np.array_equal(fresh.params["ip1"][0].data, net.params["ip1"][0].data)
    loaded = jitnet.Net(P(MLP), jitnet.TEST, weights=str(path))
    got = float(loaded.forward(data=x, label=label)["loss"])
    assert got == want
    np.testing.assert_array_equal(loaded.blobs["ip2"].data, want_scores)
    fresh.copy_from(str(path))
    for name in ("ip1", "ip2"):
        for a, b in zip(net.params[name], fresh.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


def test_hdf5_layout(tmp_path):
    net = jitnet.Net(P(MLP), jitnet.TEST)
    randomize(net, 15)
    path = tmp_path / "w.caffemodel.h5"
    net.save(str(path))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["data/ip1/0"][()], net.params["ip1"][0].data)
        np.testing.assert_array_equal(f["data/ip2/1"][()], net.params["ip2"][1].data)


def test_saved_caffemodel_is_caffe_blobproto_layout(tmp_path):
    net = jitnet.Net(P(MLP), jitnet.TEST)
    randomize(net, 16)
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    model = read_net_binary(str(path))
    layers = {l.name: l for l in model.layer}
    assert [l.name for l in model.layer] == ["data", "ip1", "relu1", "ip2", "loss"]
    assert len(layers["data"].blobs) == 0 and len(layers["relu1"].blobs) == 0
    w = layers["ip1"].blobs[0]
    assert list(w.shape.dim) == [6, 5]
    assert len(w.data) == 30 and len(w.double_data) == 0
    assert not (w.HasField("num") or w.HasField("channels"))
    np.testing.assert_array_equal(np.array(w.data, np.float32).reshape(6, 5),
                                  net.params["ip1"][0].data)
    bias = layers["ip2"].blobs[1]
    assert list(bias.shape.dim) == [3]
    np.testing.assert_array_equal(np.array(bias.data, np.float32), net.params["ip2"][1].data)
    assert layers["ip1"].type == "InnerProduct"


def test_copy_from_ignores_unknown_source_layers():
    src = jitnet.Net(P(MLP), jitnet.TEST)
    randomize(src, 17)
    proto = src.to_proto()
    ghost = proto.layer.add(name="ghost", type="InnerProduct")
    ghost.blobs.add().shape.dim.extend([2, 2])
    ghost.blobs[0].data.extend([1, 2, 3, 4])
    dst = jitnet.Net(P(MLP), jitnet.TEST)
    dst.copy_from(proto)
    np.testing.assert_array_equal(dst.params["ip2"][0].data, src.params["ip2"][0].data)
    assert "ghost" not in dst.layer_dict


def test_copy_from_wrong_shape_names_the_layer(tmp_path):
    src = jitnet.Net(P(MLP.replace("num_output: 6", "num_output: 7")), jitnet.TEST)
    path = tmp_path / "w.caffemodel"
    src.save(str(path))
    dst = jitnet.Net(P(MLP), jitnet.TEST)
    with pytest.raises(WeightsError, match="ip1"):
        dst.copy_from(str(path))
    h5 = tmp_path / "w.caffemodel.h5"
    src.save(str(h5))
    with pytest.raises(WeightsError, match="ip1"):
        jitnet.Net(P(MLP), jitnet.TEST, weights=str(h5))


LENET_IP = """
name: "LeNet-ip"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 64 dim: 800 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 500 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }
"""


def test_real_lenet_caffemodel_loads_ip_layers():
    path = require(MODELS / "lenet_mnist" / "lenet_iter_10000.caffemodel")
    net = jitnet.Net(P(LENET_IP), jitnet.TEST, weights=str(path))
    model = {l.name: l for l in read_net_binary(str(path)).layer}
    for name, shapes in (("ip1", [(500, 800), (500,)]), ("ip2", [(10, 500), (10,)])):
        assert [b.shape for b in net.params[name]] == shapes
        for blob, bp in zip(net.params[name], model[name].blobs):
            np.testing.assert_array_equal(blob.data, blob_to_array(bp))
        assert np.abs(net.params[name][0].data).max() > 0
    x = np.random.default_rng(18).normal(size=(64, 800)).astype(np.float32)
    out = net.forward(data=x)
    w1, b1 = (blob_to_array(b).astype(np.float64) for b in model["ip1"].blobs)
    w2, b2 = (blob_to_array(b).astype(np.float64) for b in model["ip2"].blobs)
    np.testing.assert_allclose(out["ip2"], np.maximum(x @ w1.T + b1, 0) @ w2.T + b2,
                               rtol=1e-4, atol=1e-4)


def test_real_v1_cifar_caffemodel_legacy_shapes():
    path = require(MODELS / "cifar10_quick_v1_2015" / "cifar10_quick_iter_5000.caffemodel")
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1024 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 64 } }
    layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }
    """
    net = jitnet.Net(P(text), jitnet.TEST, weights=str(path))
    model = {l.name: l for l in read_net_binary(str(path)).layer}
    for name, n, k in (("ip1", 64, 1024), ("ip2", 10, 64)):
        w, b = net.params[name]
        assert w.shape == (n, k) and b.shape == (n,)
        wp, bp = model[name].blobs
        assert (wp.num, wp.channels, wp.height, wp.width) == (1, 1, n, k)
        np.testing.assert_array_equal(w.data, np.array(wp.data, np.float32).reshape(n, k))
        np.testing.assert_array_equal(b.data, np.array(bp.data, np.float32))
        assert np.abs(w.data).max() > 0


# ----------------------------------------------------------------------------------------------
# share_with
# ----------------------------------------------------------------------------------------------
def test_share_with_sees_updates():
    train = jitnet.Net(P(MLP), jitnet.TRAIN)
    test = jitnet.Net(P(MLP + 'layer { name: "acc" type: "Accuracy" bottom: "ip2" '
                            'bottom: "label" top: "acc" include { phase: TEST } }'), jitnet.TEST)
    test.share_with(train)
    randomize(train, 20)                  # writes into the shared buffers
    np.testing.assert_array_equal(test.params["ip1"][0].data, train.params["ip1"][0].data)
    x = np.random.default_rng(19).normal(size=(4, 5)).astype(np.float32)
    label = np.array([2, 0, 1, 1], np.float32)
    before = float(test.forward(data=x, label=label)["loss"])
    train.forward(data=x, label=label)
    train.backward()
    train.update()                        # data -= diff
    assert np.any(train.params["ip1"][0].diff != 0)
    np.testing.assert_array_equal(test.params["ip1"][0].data, train.params["ip1"][0].data)
    after = float(test.forward(data=x, label=label)["loss"])
    assert after == pytest.approx(mlp_reference(train, x, label)["loss"], rel=1e-5)
    assert after != before
    train.params["ip2"][1].data[...] = 42
    np.testing.assert_array_equal(test.params["ip2"][1].data, np.full(3, 42, np.float32))


# ----------------------------------------------------------------------------------------------
# data layers
# ----------------------------------------------------------------------------------------------
def test_memory_data_cycles_batches():
    text = """
    layer { name: "mem" type: "MemoryData" top: "data" top: "label"
            memory_data_param { batch_size: 2 channels: 1 height: 1 width: 3 } }
    """
    net = jitnet.Net(P(text), jitnet.TRAIN)
    data = np.arange(18, dtype=np.float32).reshape(6, 1, 1, 3)
    labels = np.arange(6, dtype=np.float32) * 10
    net.set_input_arrays(data, labels)
    for i in (0, 2, 4, 0, 2):
        out = net.forward()
        np.testing.assert_array_equal(out["data"], data[i:i + 2])
        np.testing.assert_array_equal(out["label"], labels[i:i + 2])
    net.set_input_arrays(data[::-1].copy(), labels[::-1].copy())   # reset restarts
    np.testing.assert_array_equal(net.forward()["label"], [50, 40])
    with pytest.raises(jitnet.JitnetError):
        net.set_input_arrays(data[:5], labels[:5])                  # not a batch multiple


def write_h5_files(tmp_path, sizes):
    """Files whose rows are numbered globally: data row r = [r, r + 0.5], label r = r."""
    paths, start = [], 0
    for k, n in enumerate(sizes):
        path = tmp_path / f"part{k}.h5"
        rows = np.arange(start, start + n, dtype=np.float64)
        with h5py.File(path, "w") as f:
            f["data"] = np.stack([rows, rows + 0.5], axis=1).astype(np.float32)
            f["label"] = rows.astype(np.float32)
        paths.append(str(path))
        start += n
    source = tmp_path / "list.txt"
    source.write_text("\n".join(paths) + "\n")
    return source


def hdf5_net(source, shuffle):
    return jitnet.Net(P(f"""
    layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label"
             hdf5_data_param {{ source: "{source}" batch_size: 2 shuffle: {str(shuffle).lower()} }} }}
    """), jitnet.TRAIN)


def test_hdf5_data_reads_rows_in_order(tmp_path):
    source = write_h5_files(tmp_path, [5, 3])
    net = hdf5_net(source, False)
    assert net.blobs["data"].shape == (2, 2) and net.blobs["label"].shape == (2,)
    seen = []
    for _ in range(6):                       # 12 rows: one epoch of 8 then 4 more
        out = net.forward()
        np.testing.assert_array_equal(out["data"][:, 1], out["label"] + 0.5)
        np.testing.assert_array_equal(out["data"][:, 0], out["label"])
        seen.extend(out["label"].tolist())
    assert seen == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]


def test_hdf5_data_shuffle_visits_each_row_once_per_epoch(tmp_path):
    source = write_h5_files(tmp_path, [5, 3, 4])      # 12 rows, 6 batches per epoch
    jitnet.set_random_seed(3)
    net = hdf5_net(source, True)
    epochs = []
    for _ in range(3):
        seen = []
        for _ in range(6):
            out = net.forward()
            np.testing.assert_array_equal(out["data"][:, 0], out["label"])
            seen.extend(out["label"].tolist())
        assert sorted(seen) == list(range(12))
        epochs.append(seen)
    assert any(e != list(range(12)) for e in epochs)        # shuffled at all


def test_split_net_follows_batch_size_changes():
    net = jitnet.Net(P(FANOUT), jitnet.TRAIN)
    randomize(net, 21)
    rng = np.random.default_rng(22)
    for n in (3, 5, 2):
        x, t1, t2 = (rng.normal(size=(n, k)).astype(np.float32) for k in (4, 2, 2))
        net.forward(x=x, t1=t1, t2=t2)
        net.clear_param_diffs()
        net.backward()
        w, b = (a.data.astype(np.float64) for a in net.params["ip"])
        y = x @ w.T + b
        dy = (y - t1) / n + 2 * (y - t2) / n
        assert net.blobs["y_ip_0_split_1"].shape == (n, 2)
        np.testing.assert_allclose(net.blobs["y"].diff, dy, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(net.params["ip"][0].diff, dy.T @ x, rtol=1e-4, atol=1e-6)


def test_saved_caffemodel_keeps_split_layers_and_reloads(tmp_path):
    net = jitnet.Net(P(FANOUT), jitnet.TRAIN)
    randomize(net, 23)
    path = tmp_path / "fan.caffemodel"
    net.save(str(path))
    layers = {l.name: l for l in read_net_binary(str(path)).layer}
    split = layers["y_ip_0_split"]                      # as Caffe's ToProto writes them
    assert split.type == "Split" and list(split.bottom) == ["y"]
    assert list(split.top) == ["y_ip_0_split_0", "y_ip_0_split_1"]
    assert list(layers["e2"].bottom) == ["y_ip_0_split_1", "t2"]
    again = jitnet.Net(P(FANOUT), jitnet.TRAIN, weights=str(path))
    np.testing.assert_array_equal(again.params["ip"][0].data, net.params["ip"][0].data)


def test_real_caffemodel_with_caffe_split_layers_loads():
    path = require(MODELS / "cifar10_quick_impact_scar"
                   / "cifar10_impact_scar_quick_iter_10000.caffemodel")
    text = """
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1024 } } }
    layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 64 } }
    layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 3 } }
    """
    net = jitnet.Net(P(text), jitnet.TEST, weights=str(path))
    model = {l.name: l for l in read_net_binary(str(path)).layer}
    assert "ip2_ip2_0_split" in model and "label_cifar_1_split" in model
    for name in ("ip1", "ip2"):
        for blob, bp in zip(net.params[name], model[name].blobs):
            np.testing.assert_array_equal(blob.data, blob_to_array(bp))


def test_caffe_hdf5_snapshot_of_shared_params_loads(tmp_path):
    path = tmp_path / "siamese.caffemodel.h5"
    w = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.array([0.5, -0.5], np.float32)
    with h5py.File(path, "w") as f:                # the layout Caffe's ToHDF5 writes
        data = f.create_group("data")
        for name in ("in", "ea", "eb"):
            data.create_group(name)
        data["ipa/0"], data["ipa/1"] = w, b
        data.create_group("ipb")                   # ipb's params are owned by ipa: not written
    net = jitnet.Net(P(SIAMESE), jitnet.TRAIN, weights=str(path))
    np.testing.assert_array_equal(net.params["ipb"][0].data, w)
    np.testing.assert_array_equal(net.params["ipb"][1].data, b)


DEPLOY = """
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 5 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 6 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""


def test_backward_from_given_output_diff_without_loss():
    """pycaffe's saliency idiom: a deploy net with force_backward, backward(prob=diff)."""
    net = jitnet.Net(P(DEPLOY), jitnet.TEST)
    randomize(net, 24)
    rng = np.random.default_rng(25)
    x = rng.normal(size=(4, 5)).astype(np.float32)
    out = net.forward(data=x)
    w1, b1 = (a.data.astype(np.float64) for a in net.params["ip1"])
    w2, b2 = (a.data.astype(np.float64) for a in net.params["ip2"])
    h = np.maximum(x @ w1.T + b1, 0)
    p = softmax(h @ w2.T + b2)
    np.testing.assert_allclose(out["prob"], p, rtol=1e-5, atol=1e-6)
    g = rng.normal(size=(4, 3)).astype(np.float32)
    diffs = net.backward(prob=g)
    ds = (g - (g * p).sum(1, keepdims=True)) * p
    dx = ((ds @ w2) * (h > 0)) @ w1
    np.testing.assert_allclose(diffs["data"], dx, rtol=1e-4, atol=1e-6)


def test_forward_start_end_and_extra_blobs():
    net = jitnet.Net(P(DEPLOY), jitnet.TEST)
    randomize(net, 26)
    x = np.random.default_rng(27).normal(size=(4, 5)).astype(np.float32)
    out = net.forward(data=x, end="ip1")
    w1, b1 = (a.data.astype(np.float64) for a in net.params["ip1"])
    assert set(out) == {"ip1"}
    np.testing.assert_allclose(out["ip1"], x @ w1.T + b1, rtol=1e-5, atol=1e-6)  # relu not run yet
    out = net.forward(start="relu1", blobs=["ip2"])
    assert set(out) == {"ip2", "prob"}
    np.testing.assert_allclose(out["prob"], softmax(out["ip2"].astype(np.float64)), rtol=1e-5)
    with pytest.raises(jitnet.JitnetError):
        net.forward(end="no_such_layer")


def test_in_place_after_an_earlier_reader_is_rejected():
    """A writes x in place while B also reads x: as in Caffe ('Top blob produced by multiple
    sources'), the net is rejected, since A's write would change B's input."""
    text = """
    layer { name: "in" type: "Input" top: "x" top: "t"
            input_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 2 } } }
    layer { name: "B" type: "InnerProduct" bottom: "x" top: "yb" inner_product_param { num_output: 2 } }
    layer { name: "A" type: "ReLU" bottom: "x" top: "x" }
    layer { name: "loss" type: "EuclideanLoss" bottom: "yb" bottom: "t" top: "l" }
    """
    with pytest.raises(NetDefinitionError, match=r"layer 'A' works in place on 'x', which layer 'B' also reads"):
        jitnet.Net(P(text), jitnet.TRAIN)


def test_pycaffe_reshape_idiom():
    net = jitnet.Net(P(DEPLOY), jitnet.TEST)
    randomize(net, 30)
    net.blobs["data"].reshape(2, 5)
    net.reshape()
    assert net.blobs["ip1"].shape == (2, 6)
    assert net.blobs["prob"].shape == (2, 3)
    x = np.random.default_rng(31).normal(size=(2, 5)).astype(np.float32)
    net.blobs["data"].data[...] = x
    out = net.forward()
    w1, b1 = (a.data.astype(np.float64) for a in net.params["ip1"])
    w2, b2 = (a.data.astype(np.float64) for a in net.params["ip2"])
    np.testing.assert_allclose(out["prob"], softmax(np.maximum(x @ w1.T + b1, 0) @ w2.T + b2),
                               rtol=1e-5, atol=1e-6)
