"""What a user meets when something is wrong: a jitnet error naming what and where, never
a bare traceback, and no work lost or state half-changed. (From a review that tried to
break jitnet as a Caffe user would.)"""
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet.proto import pb
from test_planner import MLP
from test_solver import classifier_solver


def net_param(text):
    return text_format.Parse(text, pb.NetParameter())


def mlp(**kwargs):
    return jitnet.Net(net_param(MLP), jitnet.TRAIN, **kwargs)


STAGED = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "deploy_only" type: "ReLU" bottom: "x" top: "y" include { stage: "deploy" } }
layer { name: "d_only" type: "TanH" bottom: "x" top: "z" include { stage: "d" } }
"""


def test_a_stage_given_as_a_string_is_one_stage():
    net = jitnet.Net(net_param(STAGED), jitnet.TEST, stages="deploy")
    assert "deploy_only" in net.layer_dict and "d_only" not in net.layer_dict


@pytest.mark.parametrize("kwargs,message", [
    (dict(dtype=np.float16), "float32 or float64"),
    (dict(level="2"), "integer"),
])
def test_bad_net_arguments(kwargs, message):
    with pytest.raises(jitnet.JitnetError, match=message):
        mlp(**kwargs)


def test_model_of_the_wrong_type():
    with pytest.raises(jitnet.JitnetError, match="prototxt path or a NetParameter"):
        jitnet.Net(None, jitnet.TEST)


def test_forward_checks_its_inputs_before_changing_anything():
    net = mlp()
    shape = net.blobs["data"].shape
    with pytest.raises(jitnet.JitnetError, match="input 'data' is not numeric"):
        net.forward(data=np.array([["a"] * 5] * 4), label=np.zeros(4))
    with pytest.raises(jitnet.JitnetError, match="'ip1' is not an input blob"):
        net.forward(ip1=np.zeros((4, 6)))
    with pytest.raises(jitnet.JitnetError, match="no blob named 'nope'"):
        net.forward(blobs=["nope"], data=np.zeros((2, 5)))
    assert net.blobs["data"].shape == shape              # nothing was reshaped
    net.forward()                                       # and the net still runs


def test_backward_mistakes():
    net = mlp()
    with pytest.raises(jitnet.JitnetError, match="needs a forward"):
        net.backward()
    net.forward()
    with pytest.raises(jitnet.JitnetError, match="diff for 'loss' has shape"):
        net.backward(loss=np.zeros(3))
    with pytest.raises(jitnet.JitnetError, match="no blob named 'nope'"):
        net.backward(diffs=["nope"])


def test_forward_start_after_end():
    with pytest.raises(jitnet.JitnetError, match="comes after end"):
        mlp().forward(start="ip2", end="ip1")


def test_blob_errors_inside_a_layer_name_the_layer():
    text = MLP.replace("inner_product_param { num_output: 6 }", "inner_product_param { num_output: 6 axis: 5 }")
    with pytest.raises(jitnet.LayerError, match=r"layer 'ip1' \(type InnerProduct\): axis 5"):
        jitnet.Net(net_param(text), jitnet.TEST)


def test_registering_a_taken_type_name():
    with pytest.raises(jitnet.JitnetError, match="'ReLU' is already registered"):
        jitnet.register("ReLU")(type("MyReLU", (jitnet.Layer,), {}))


# -- weights ------------------------------------------------------------------------------------------
def test_weights_matching_no_layer_copy_nothing_with_a_warning(tmp_path, caplog):
    """As Caffe: a weights file none of whose layers is in the net copies nothing and the
    net is built; jitnet warns, since it is often the wrong file."""
    other = jitnet.Net(net_param(MLP.replace('"ip1"', '"fc1"').replace('"ip2"', '"fc2"')), jitnet.TEST)
    other.save(str(tmp_path / "other.caffemodel"))
    jitnet.set_random_seed(3)
    fresh = mlp()
    jitnet.set_random_seed(3)
    with caplog.at_level("WARNING", logger="jitnet"):
        net = mlp(weights=str(tmp_path / "other.caffemodel"))
    assert "no layer in the file matches a layer with learnable blobs" in caplog.text
    assert "other.caffemodel" in caplog.text and "ip1, ip2" in caplog.text
    for name in ("ip1", "ip2"):                            # nothing changed: still the fillers' values
        for a, b in zip(net.params[name], fresh.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


def test_a_bad_weights_file_changes_nothing(tmp_path):
    """ip1 fits, ip2 does not: the error comes before ip1 is overwritten."""
    donor = jitnet.Net(net_param(MLP.replace("num_output: 3", "num_output: 4")), jitnet.TEST)
    for blob in donor.params["ip1"]:
        blob.data[...] = 7.0
    donor.save(str(tmp_path / "donor.caffemodel"))
    net = mlp()
    before = net.params["ip1"][0].data.copy()
    with pytest.raises(jitnet.WeightsError, match="layer 'ip2' blob 0 has shape"):
        net.copy_from(str(tmp_path / "donor.caffemodel"))
    np.testing.assert_array_equal(net.params["ip1"][0].data, before)


def test_an_hdf5_data_file_is_not_weights(tmp_path):
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("data", data=np.zeros((3, 5)))
    with pytest.raises(jitnet.WeightsError, match="not a Caffe HDF5 weights file"):
        mlp(weights=str(tmp_path / "data.h5"))


# -- HDF5Data sources -----------------------------------------------------------------------------------
def hdf5_net(source):
    return net_param(f'layer {{ name: "h5" type: "HDF5Data" top: "x" '
                     f'hdf5_data_param {{ source: "{source}" batch_size: 2 }} }}')


def test_hdf5_source_mistakes(tmp_path):
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.create_dataset("x", data=np.zeros((4, 3)))
        f.create_dataset("s", data=np.array([b"a", b"b"]))
    with pytest.raises(jitnet.LayerError, match="not a text file.*not an .h5 file itself"):
        jitnet.Net(hdf5_net(tmp_path / "d.h5"), jitnet.TRAIN)
    with pytest.raises(jitnet.LayerError, match="source is not set"):
        jitnet.Net(net_param('layer { name: "h5" type: "HDF5Data" top: "x" hdf5_data_param { batch_size: 2 } }'),
                   jitnet.TRAIN)
    (tmp_path / "bad.txt").write_text(str(tmp_path / "bad.txt") + "\n")       # lists a text file
    with pytest.raises(jitnet.LayerError, match="as HDF5"):
        jitnet.Net(hdf5_net(tmp_path / "bad.txt"), jitnet.TRAIN)
    (tmp_path / "strings.txt").write_text(str(tmp_path / "d.h5") + "\n")
    text = f'layer {{ name: "h5" type: "HDF5Data" top: "s" hdf5_data_param {{ source: "{tmp_path / "strings.txt"}" batch_size: 2 }} }}'
    with pytest.raises(jitnet.LayerError, match="'s' must be a numeric dataset"):
        jitnet.Net(net_param(text), jitnet.TRAIN)


# -- solvers --------------------------------------------------------------------------------------------
def test_snapshot_prefix_defaults_to_the_solver_file(tmp_path):
    """As Caffe: no snapshot_prefix (and no periodic snapshot) → the solver file's path
    without extension; the final weights are saved, not lost."""
    path = classifier_solver(tmp_path, "max_iter: 3")
    path.write_text(path.read_text().replace(f'snapshot_prefix: "{tmp_path / "snap"}"', "")
                    .replace("max_iter: 30", ""))
    solver = jitnet.get_solver(str(path))
    solver.solve()
    assert (tmp_path / "solver_iter_3.caffemodel").exists()


def test_snapshot_prefix_naming_a_folder_gets_the_solver_stem(tmp_path):
    path = classifier_solver(tmp_path, "snapshot: 2")
    (tmp_path / "snaps").mkdir()
    path.write_text(path.read_text().replace(f'"{tmp_path / "snap"}"', f'"{tmp_path / "snaps"}/"'))
    solver = jitnet.get_solver(str(path))
    solver.step(2)
    assert (tmp_path / "snaps" / "solver_iter_2.caffemodel").exists()


def test_unwritable_snapshot_prefix_fails_before_training(tmp_path):
    path = classifier_solver(tmp_path)
    (tmp_path / "afile").write_text("x")
    path.write_text(path.read_text().replace(f'"{tmp_path / "snap"}"', f'"{tmp_path / "afile" / "snap"}"'))
    with pytest.raises(jitnet.SolverError, match="cannot write snapshots"):
        jitnet.get_solver(str(path))


def test_missing_net_file_says_where_the_path_came_from(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('net: "models/nowhere/train_val.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    with pytest.raises(jitnet.SolverError, match=r"named by 'net' does not exist .*working directory"):
        jitnet.get_solver(str(path))


def test_missing_lr_policy(tmp_path):
    path = classifier_solver(tmp_path)
    path.write_text(path.read_text().replace('lr_policy: "inv"', ""))
    with pytest.raises(jitnet.SolverError, match="lr_policy is not set"):
        jitnet.get_solver(str(path))


def test_restore_mistakes_leave_the_solver_as_it_was(tmp_path):
    path = classifier_solver(tmp_path)
    solver = jitnet.get_solver(str(path))
    solver.step(2)
    model, state = solver.snapshot()
    with pytest.raises(jitnet.SolverError, match="not a solver state"):
        solver.restore(model)                          # a caffemodel, not a solverstate
    fresh = jitnet.get_solver(str(path))
    history = [h.data.copy() for h in fresh.history]
    os.rename(model, model + ".moved")
    with pytest.raises(jitnet.SolverError, match="weights file it names.*does not exist"):
        fresh.restore(state)
    assert fresh.iter == 0
    for before, blob in zip(history, fresh.history):
        np.testing.assert_array_equal(before, blob.data)


def test_step_needs_a_whole_number(tmp_path):
    solver = jitnet.get_solver(str(classifier_solver(tmp_path)))
    for bad in (-1, "5", 2.5):
        with pytest.raises(jitnet.SolverError, match="whole number"):
            solver.step(bad)


def test_test_scores_know_their_iteration(tmp_path):
    solver = jitnet.get_solver(str(classifier_solver(tmp_path)))     # test_interval 10
    solver.step(15)
    assert solver.tested_at == 10


# -- the command line -------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["test", "--model", "m", "--weights", "w", "--iterations", "0"], "--iterations must be at least 1"),
    (["time", "--model", "m", "--iterations", "-3"], "--iterations must be at least 1"),
    (["train", "--solver", "s", "--gpu", "abc"], "give a device id"),
    (["train", "--solver", "s", "--log", "/nonexistent-folder/x.log"], "cannot write the log file"),
    (["plot", "nonexistent.log"], "cannot read the log"),
])
def test_cli_mistakes(args, message, capsys):
    from jitnet import cli
    assert cli.main(args) == 1
    assert message in capsys.readouterr().err


def test_time_covers_backward_of_a_deploy_net(tmp_path):
    """As `caffe time`: backward runs for every layer, so a deploy net's InnerProduct
    layers show their (parameter) backward time, not 0."""
    (tmp_path / "deploy.prototxt").write_text("""
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 64 dim: 800 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "x" top: "h" inner_product_param { num_output: 500 } }
layer { name: "relu" type: "ReLU" bottom: "h" top: "h" }
layer { name: "ip2" type: "InnerProduct" bottom: "h" top: "y" inner_product_param { num_output: 10 } }
""")
    result = subprocess.run([sys.executable, "-m", "jitnet", "time", "--model", str(tmp_path / "deploy.prototxt"),
                             "--iterations", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    ip1 = [line for line in result.stdout.splitlines() if "ip1\tbackward" in line][0]
    assert float(ip1.split()[-2]) > 0, result.stdout
