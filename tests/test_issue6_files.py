"""Weights files as Caffe users bring them (issue 6): a net without learnable layers loads
its own weights, a file matching nothing copies nothing (with a warning), a caffemodel cut
at a layer boundary loads what it holds, and the reader is chosen by the file's content,
not its name, everywhere weights are loaded."""
import logging
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet import cli
from jitnet.proto import pb, read_binary, write_binary
from test_planner import MLP


def P(text):
    return text_format.Parse(text, pb.NetParameter())


@pytest.fixture(autouse=True)
def jitnet_log_propagates():
    """cli.main (called in-process by some tests) gives the jitnet logger its own handler and
    stops it propagating; caplog listens at the root. Undo that around each test."""
    logger = logging.getLogger("jitnet")
    before = logger.handlers[:], logger.propagate, logger.level
    logger.handlers[:], logger.propagate = [], True
    yield
    logger.handlers[:], logger.propagate, logger.level = before[0], before[1], before[2]


NO_LEARNABLE = """
name: "plain"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "relu" type: "ReLU" bottom: "x" top: "r" }
layer { name: "prob" type: "Softmax" bottom: "r" top: "prob" }
"""


def mlp(seed, weights=None):
    jitnet.set_random_seed(seed)
    return jitnet.Net(P(MLP), jitnet.TEST, weights=weights)


def random_mlp(seed=1):
    """An MLP whose learnable blobs hold random values (MLP's fillers give zeros)."""
    net = mlp(seed)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(size=blob.shape)
    return net


def params(net):
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


def assert_params_equal(a, b, names=("ip1", "ip2")):
    for name in names:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)


# -- task 1: a file that matches no learnable layer copies nothing ---------------------------------
@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_a_net_without_learnable_layers_loads_its_own_weights(tmp_path, suffix, caplog):
    net = jitnet.Net(P(NO_LEARNABLE), jitnet.TEST)
    path = str(tmp_path / f"w{suffix}")
    net.save(path)
    with caplog.at_level(logging.WARNING, logger="jitnet"):
        again = jitnet.Net(P(NO_LEARNABLE), jitnet.TEST, weights=path)
        again.copy_from(path)
    assert not caplog.records                    # nothing to say: there is nothing to learn
    x = np.array([[1.0, -2.0, 3.0], [0.0, 0.0, 0.0]], np.float32)
    r = np.maximum(x, 0)
    want = np.exp(r) / np.exp(r).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(again.forward(x=x)["prob"], want, rtol=1e-6)


@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_cli_test_scores_a_net_without_learnable_layers(tmp_path, suffix, capsys):
    model = tmp_path / "plain.prototxt"
    model.write_text(NO_LEARNABLE)
    weights = str(tmp_path / f"w{suffix}")
    jitnet.Net(str(model), jitnet.TEST).save(weights)
    assert cli.main(["test", "--model", str(model), "--weights", weights, "--iterations", "1"]) == 0
    out = capsys.readouterr().out
    # an input of zeros: softmax over 3 equal values
    assert out.count("prob = 0.333333") == 6, out


DUMMY_EUCLIDEAN = """
name: "dummy"
layer { name: "data" type: "DummyData" top: "a" top: "b"
        dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 }
                           data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "loss" }
"""


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_resume_from_a_snapshot_of_a_net_without_learnable_layers(tmp_path, fmt):
    (tmp_path / "net.prototxt").write_text(DUMMY_EUCLIDEAN)
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 lr_policy: "fixed" '
                           f'max_iter: 4 snapshot: 2 snapshot_format: {fmt} random_seed: 1 '
                           f'snapshot_prefix: "{tmp_path / "snap"}"')
    jitnet.get_solver(str(solver_file)).solve()
    state = tmp_path / ("snap_iter_2.solverstate" + (".h5" if fmt == "HDF5" else ""))
    assert state.exists()
    resumed = jitnet.get_solver(str(solver_file))
    resumed.solve(resume_file=str(state))
    assert resumed.iter == 4
    result = subprocess.run([sys.executable, "-m", "jitnet", "train", "--solver", str(solver_file),
                             "--snapshot", str(state)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Restored solver state" in result.stderr and "Optimization Done." in result.stderr


def test_a_second_weights_file_matching_nothing_is_skipped_with_a_warning(tmp_path, caplog):
    donor = random_mlp(1)
    donor.save(str(tmp_path / "a.caffemodel"))
    jitnet.Net(P(NO_LEARNABLE), jitnet.TEST).save(str(tmp_path / "b.caffemodel"))
    with caplog.at_level(logging.INFO, logger="jitnet"):
        net = mlp(2, weights=f"{tmp_path / 'a.caffemodel'},{tmp_path / 'b.caffemodel'}")
    assert_params_equal(params(net), params(donor))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "b.caffemodel: no layer in the file matches" in warnings[0]
    assert "keep their values" not in caplog.text      # a.caffemodel covered every learnable layer


def test_a_caffemodel_cut_at_a_layer_boundary_loads_the_layers_it_holds(tmp_path, caplog):
    donor = random_mlp(1)
    full = donor.to_proto()
    data = full.SerializeToString()
    head = pb.NetParameter(name=full.name)
    head.layer.extend(full.layer[:2])              # data, ip1: the file ends before relu1
    cut = head.SerializeToString()
    assert data.startswith(cut) and len(cut) < len(data)
    (tmp_path / "cut.caffemodel").write_bytes(cut)
    fresh = params(mlp(2))
    with caplog.at_level(logging.INFO, logger="jitnet"):
        net = mlp(2, weights=str(tmp_path / "cut.caffemodel"))
    got = params(net)
    assert_params_equal(got, params(donor), names=("ip1",))
    assert_params_equal(got, fresh, names=("ip2",))   # still the filler's values
    assert not np.array_equal(got["ip2"][0], params(donor)["ip2"][0])
    assert re.search(r"cut\.caffemodel: learnable layers not in the weights keep their values.*: ip2$",
                     caplog.text, re.M), caplog.text


SIAMESE = """
layer { name: "in" type: "Input" top: "a" top: "b" input_param { shape { dim: 3 dim: 4 } shape { dim: 3 dim: 4 } } }
layer { name: "ipa" type: "InnerProduct" bottom: "a" top: "ya" param { name: "w" } param { name: "bias" }
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "ipb" type: "InnerProduct" bottom: "b" top: "yb" param { name: "w" } param { name: "bias" }
        inner_product_param { num_output: 2 } }
"""


@pytest.mark.parametrize("suffix", [".caffemodel", ".caffemodel.h5"])
def test_shared_params_are_covered_by_their_owner(tmp_path, suffix, caplog):
    """Caffe's HDF5 snapshot holds only the owner's blobs (ipa); ipb is not 'missing'."""
    net = jitnet.Net(P(SIAMESE), jitnet.TEST)
    net.save(str(tmp_path / f"w{suffix}"))
    with caplog.at_level(logging.INFO, logger="jitnet"):
        again = jitnet.Net(P(SIAMESE), jitnet.TEST, weights=str(tmp_path / f"w{suffix}"))
    assert "keep their values" not in caplog.text and "no layer in the file" not in caplog.text
    np.testing.assert_array_equal(again.params["ipb"][0].data, net.params["ipa"][0].data)


def test_an_empty_caffemodel_copies_nothing(tmp_path, caplog):
    """Caffe parses an empty file as an empty NetParameter and copies nothing."""
    (tmp_path / "empty.caffemodel").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="jitnet"):
        net = mlp(2, weights=str(tmp_path / "empty.caffemodel"))
    assert_params_equal(params(net), params(mlp(2)))
    assert "empty.caffemodel: no layer in the file matches" in caplog.text


# -- task 5: the reader is chosen by content -------------------------------------------------------------
def hdf5_named(tmp_path, net, name, userblock=0):
    """net's weights in Caffe's HDF5 layout, written to ``name`` (user block optional)."""
    path = tmp_path / name
    with h5py.File(path, "w", userblock_size=userblock) as f:
        data = f.create_group("data")
        for layer in net.layers:
            group = data.create_group(layer.name)
            for j, blob in enumerate(layer.blobs):
                group.create_dataset(str(j), data=blob.data)
    return str(path)


@pytest.mark.parametrize("userblock", [0, 512, 2048])
def test_hdf5_weights_named_caffemodel_load(tmp_path, userblock):
    donor = random_mlp(1)
    path = hdf5_named(tmp_path, donor, "w.caffemodel", userblock)
    with open(path, "rb") as f:
        f.seek(userblock)
        assert f.read(8) == b"\x89HDF\r\n\x1a\n"
    assert_params_equal(params(mlp(2, weights=path)), params(donor))
    net = mlp(3)
    net.copy_from(path)
    assert_params_equal(params(net), params(donor))


def test_binary_caffemodel_named_h5_loads(tmp_path):
    donor = random_mlp(1)
    donor.save(str(tmp_path / "w.caffemodel"))
    os.rename(tmp_path / "w.caffemodel", tmp_path / "w.h5")
    assert_params_equal(params(mlp(2, weights=str(tmp_path / "w.h5"))), params(donor))


def test_mixed_formats_in_one_weights_list(tmp_path):
    donor = random_mlp(1)
    full = donor.to_proto()
    part = pb.NetParameter()
    part.layer.extend([layer for layer in full.layer if layer.name == "ip1"])
    write_binary(part, str(tmp_path / "ip1.h5"))              # binary, named .h5
    only_ip2 = jitnet.Net(P(MLP), jitnet.TEST)
    only_ip2.params["ip2"][0].data[...] = donor.params["ip2"][0].data
    only_ip2.params["ip2"][1].data[...] = donor.params["ip2"][1].data
    path = hdf5_named(tmp_path, only_ip2, "ip2.caffemodel")   # HDF5, named .caffemodel
    with h5py.File(path, "a") as f:
        del f["data/ip1"]
    net = mlp(2, weights=f"{tmp_path / 'ip1.h5'},{path}")
    assert_params_equal(params(net), params(donor))


def solver_files(tmp_path, extra=""):
    from test_solver import classifier_solver
    return classifier_solver(tmp_path, extra)


def test_solver_weights_field_reads_by_content(tmp_path):
    path = solver_files(tmp_path)
    donor = jitnet.get_solver(str(path))
    donor.step(3)
    donor.net.save(str(tmp_path / "donor.caffemodel.h5"))
    os.rename(tmp_path / "donor.caffemodel.h5", tmp_path / "donor.caffemodel")   # HDF5 content
    donor.net.save(str(tmp_path / "donor_bin.caffemodel"))
    os.rename(tmp_path / "donor_bin.caffemodel", tmp_path / "donor.h5")          # binary content
    for weights in ("donor.caffemodel", "donor.h5"):
        path.write_text(solver_files(tmp_path).read_text() + f' weights: "{tmp_path / weights}"')
        solver = jitnet.get_solver(str(path))
        for name in ("ip1", "ip2"):
            for mine, theirs in zip(solver.net.params[name], donor.net.params[name]):
                np.testing.assert_array_equal(mine.data, theirs.data)


def test_cli_train_weights_read_by_content(tmp_path):
    """jitnet train --weights a,b with a binary caffemodel named .h5 and HDF5 weights named
    .caffemodel: both load (max_iter 0, so the snapshot after training holds them)."""
    path = solver_files(tmp_path)
    donor = jitnet.get_solver(str(path))
    donor.step(3)
    full = donor.net.to_proto()
    part = pb.NetParameter()
    part.layer.extend([layer for layer in full.layer if layer.name == "ip1"])
    write_binary(part, str(tmp_path / "ip1.h5"))
    with h5py.File(tmp_path / "ip2.caffemodel", "w") as f:
        for j, blob in enumerate(donor.net.params["ip2"]):
            f.create_dataset(f"data/ip2/{j}", data=blob.data)
    path.write_text(path.read_text().replace("max_iter: 30", "max_iter: 0") + " snapshot_after_train: true")
    result = subprocess.run([sys.executable, "-m", "jitnet", "train", "--solver", str(path), "--weights",
                             f"{tmp_path / 'ip1.h5'},{tmp_path / 'ip2.caffemodel'}"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stderr.count("Fine-tuning from") == 2
    assert "keep their values" not in result.stderr          # together the files cover ip1 and ip2
    saved = jitnet.Net(str(tmp_path / "net.prototxt"), jitnet.TEST,
                       weights=str(tmp_path / "snap_iter_0.caffemodel"))
    for name in ("ip1", "ip2"):
        for mine, theirs in zip(saved.params[name], donor.net.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_restore_reads_learned_net_by_content(tmp_path, fmt):
    """The solver state's learned_net may name a file whose suffix does not say its format."""
    path = solver_files(tmp_path, f"snapshot_format: {fmt}")
    first = jitnet.get_solver(str(path))
    first.step(3)
    model, state = first.snapshot()
    moved = str(tmp_path / ("weights.caffemodel" if fmt == "HDF5" else "weights.h5"))
    os.rename(model, moved)
    if fmt == "HDF5":
        with h5py.File(state, "a") as f:
            del f["learned_net"]
            f.create_dataset("learned_net", data=np.bytes_(moved.encode()))
    else:
        proto = read_binary(state, pb.SolverState())
        proto.learned_net = moved
        write_binary(proto, state)
    resumed = jitnet.get_solver(str(path))
    resumed.restore(state)
    assert resumed.iter == 3
    for mine, theirs in zip(resumed.net.learnable_params, first.net.learnable_params):
        np.testing.assert_array_equal(mine.data, theirs.data)


def test_restore_keeps_caffes_rule_for_the_state_file_by_suffix(tmp_path):
    """Caffe picks the solver state's reader by suffix (.h5 → HDF5); so does jitnet."""
    path = solver_files(tmp_path)
    first = jitnet.get_solver(str(path))
    first.step(2)
    _, state = first.snapshot()                             # binary
    os.rename(state, state + ".h5")
    with pytest.raises(jitnet.SolverError, match="cannot open as an HDF5 solver state"):
        jitnet.get_solver(str(path)).restore(state + ".h5")


# -- damaged or odd weights files end in a WeightsError / ProtoError ----------------------------------------
def test_a_file_with_the_hdf5_signature_but_damaged(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(jitnet.WeightsError, match="bad.caffemodel"):
        mlp(1, weights=str(path))


@pytest.mark.parametrize("kind", ["strings", "group", "complex"])
def test_hdf5_blob_that_is_not_numbers(tmp_path, kind):
    path = hdf5_named(tmp_path, random_mlp(1), "w.caffemodel.h5")
    with h5py.File(path, "a") as f:
        del f["data/ip1/0"]
        if kind == "strings":
            f["data/ip1"].create_dataset("0", data=np.array([b"a"] * 30).reshape(6, 5))
        elif kind == "group":
            f["data/ip1"].create_group("0")
        else:
            f["data/ip1"].create_dataset("0", data=np.ones((6, 5), np.complex64))
    net = mlp(2)
    before = params(net)
    with pytest.raises(jitnet.WeightsError, match=r"/data/ip1/0"):
        net.copy_from(path)
    assert_params_equal(params(net), before)


def test_a_caffemodel_blob_with_the_wrong_count_names_layer_and_blob(tmp_path):
    model = random_mlp(1).to_proto()
    ip2 = [layer for layer in model.layer if layer.name == "ip2"][0]
    del ip2.blobs[1].data[-1]
    write_binary(model, str(tmp_path / "w.caffemodel"))
    with pytest.raises(jitnet.WeightsError, match=r"w\.caffemodel: layer 'ip2' blob 1: .*needs 3"):
        mlp(2, weights=str(tmp_path / "w.caffemodel"))


@pytest.mark.parametrize("weights,error", [
    ("no/such/file.caffemodel", jitnet.ProtoError),
    ("nul\0in-name.caffemodel", jitnet.ProtoError),
    (5, jitnet.WeightsError),
])
def test_weights_that_are_no_file(weights, error, tmp_path):
    with pytest.raises(error):
        mlp(1).copy_from(weights)


# -- task 6: schema names as Caffe users know them ----------------------------------------------------------
@pytest.mark.parametrize("text,name", [
    ('layer { name: "ip" type: "InnerProduct" inner_product_param { num_outptu: 3 } }',
     'Message type "caffe.InnerProductParameter" has no field named "num_outptu"'),
    ('layer { name: "ip" type: "InnerProduct" include { phase: TRIAN } }',
     'Enum type "caffe.Phase" has no value named TRIAN'),
    ('layer { name: "ip" type: "InnerProduct" inner_product_param { num_output: 3 num_output: 4 } }',
     'Message type "caffe.InnerProductParameter" should not have multiple "num_output" fields'),
    ('layer { name: "c" type: "Clip" clip_param { min: 0 } }',
     "missing required field(s) in caffe.NetParameter: layer[0].clip_param.max"),
])
def test_prototxt_errors_use_caffe_schema_names(tmp_path, text, name):
    path = tmp_path / "net.prototxt"
    path.write_text(text + "\n")
    with pytest.raises(jitnet.ProtoError) as caught:
        jitnet.Net(str(path), jitnet.TEST)
    assert name in str(caught.value)
    assert "jitnet.caffe" not in str(caught.value)


def test_solver_file_errors_use_caffe_schema_names(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('base_lr: 0.1\nlr_policy: "fixed"\nsolver_mode: TPU\n')
    with pytest.raises(jitnet.ProtoError, match=r'solver.prototxt:3:\d+: .*Enum type "caffe.SolverParameter.SolverMode" '
                                                r'has no value named TPU'):
        jitnet.get_solver(str(path))


def test_binary_errors_use_caffe_schema_names(tmp_path):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(b"\x0a\x05\x0a\x03abc\x12")
    with pytest.raises(jitnet.ProtoError) as caught:
        jitnet.Net(P(MLP), jitnet.TEST, weights=str(path))
    assert "'caffe.NetParameter'" in str(caught.value) and "jitnet.caffe" not in str(caught.value)
    model = pb.NetParameter()
    model.layer.add(name="c", type="Clip").clip_param.min = 0
    with pytest.raises(jitnet.ProtoError, match=r"Message caffe\.NetParameter is missing required fields"):
        write_binary(model, str(tmp_path / "out.caffemodel"))
