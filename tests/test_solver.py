"""Solver tests: lr policies against Caffe's formulas, SGD updates against an
independent float64 re-computation, a falling loss, exact snapshot → restore →
continue, and clear errors for bad solver files."""
import math
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet.proto import pb, read_binary
from jitnet.solvers.lr_policies import learning_rate


def solver_param(text):
    return text_format.Parse(text, pb.SolverParameter())


# -- learning-rate policies ----------------------------------------------------------------------
POLICY_CASES = [
    ("fixed", "", lambda it: 0.01),
    ("step", "gamma: 0.5 stepsize: 3", lambda it: 0.01 * 0.5 ** math.floor(it / 3)),
    ("exp", "gamma: 0.9", lambda it: 0.01 * 0.9 ** it),
    ("inv", "gamma: 0.1 power: 0.75", lambda it: 0.01 * (1 + 0.1 * it) ** -0.75),
    ("multistep", "gamma: 0.3 stepvalue: 2 stepvalue: 5 stepvalue: 6",
     lambda it: 0.01 * 0.3 ** ((it >= 2) + (it >= 5) + (it >= 6))),
    ("poly", "power: 2 max_iter: 10", lambda it: 0.01 * (1 - it / 10) ** 2),
    ("sigmoid", "gamma: -0.5 stepsize: 4", lambda it: 0.01 / (1 + math.exp(0.5 * (it - 4)))),
]


@pytest.mark.parametrize("policy,extra,formula", POLICY_CASES, ids=[c[0] for c in POLICY_CASES])
def test_lr_policy_matches_formula(policy, extra, formula):
    p = solver_param(f'base_lr: 0.01 lr_policy: "{policy}" {extra}')
    for it in range(10):
        # base_lr, gamma and power are float32 fields in caffe.proto
        assert learning_rate(p, it) == pytest.approx(formula(it), rel=1e-6), (policy, it)


# -- a tiny regression problem in HDF5 --------------------------------------------------------------
def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, array in datasets.items():
            f.create_dataset(name, data=array)


REGRESSION_NET = """
name: "regression"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "target"
        hdf5_data_param {{ source: "{source}" batch_size: 4 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: {bias_decay} }}
        inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.5 }}
                              bias_filler {{ type: "uniform" min: -0.5 max: 0.5 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "target" top: "loss" }}
"""


def regression_solver(tmp_path, extra=""):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(8, 3)).astype(np.float32)
    t = rng.normal(size=(8, 2)).astype(np.float32)
    write_h5(tmp_path / "train.h5", data=x, target=t)
    (tmp_path / "train.txt").write_text(str(tmp_path / "train.h5") + "\n")
    (tmp_path / "net.prototxt").write_text(REGRESSION_NET.format(source=tmp_path / "train.txt", bias_decay=0))
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 '
        f'lr_policy: "step" gamma: 0.5 stepsize: 2 max_iter: 5 random_seed: 3 {extra}')
    return x.astype(np.float64), t.astype(np.float64), tmp_path / "solver.prototxt"


def test_sgd_matches_float64_recomputation(tmp_path):
    x, t, path = regression_solver(tmp_path)
    solver = jitnet.get_solver(str(path))
    assert isinstance(solver, jitnet.SGDSolver)
    w = solver.net.params["ip"][0].data.astype(np.float64)
    b = solver.net.params["ip"][1].data.astype(np.float64)
    vw, vb = np.zeros_like(w), np.zeros_like(b)
    solver.step(5)
    for it in range(5):
        rows = slice((it % 2) * 4, (it % 2) * 4 + 4)
        y = x[rows] @ w.T + b
        dy = (y - t[rows]) / 4.0                     # EuclideanLoss: Σ‖y − t‖² / 2N
        gw = dy.T @ x[rows] + 0.01 * 1 * w           # weight_decay · decay_mult
        gb = dy.sum(axis=0)                          # decay_mult 0
        rate = 0.1 * 0.5 ** (it // 2)
        vw = 0.9 * vw + rate * 1 * gw
        vb = 0.9 * vb + rate * 2 * gb                # lr_mult 2
        w, b = w - vw, b - vb
    np.testing.assert_allclose(solver.net.params["ip"][0].data, w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(solver.net.params["ip"][1].data, b, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(solver.history[0].data, vw, rtol=2e-5, atol=1e-6)
    assert solver.iter == 5


# -- a classification problem: the loss falls; snapshots restore exactly -------------------------------
CLASSIFIER_NET = """
name: "classifier"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" include {{ phase: TRAIN }}
        hdf5_data_param {{ source: "{train}" batch_size: 6 shuffle: true }} }}
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" include {{ phase: TEST }}
        hdf5_data_param {{ source: "{test}" batch_size: 10 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param {{ num_output: 12 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param {{ dropout_ratio: 0.3 }} }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
        include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""


def classifier_solver(tmp_path, extra=""):
    rng = np.random.default_rng(11)
    centers = rng.normal(scale=3.0, size=(3, 5))
    files = []
    for k, n in enumerate((23, 17)):                  # two files of odd sizes: epochs end mid-batch
        label = rng.integers(0, 3, size=n)
        data = centers[label] + rng.normal(size=(n, 5))
        write_h5(tmp_path / f"train{k}.h5", data=data.astype(np.float32), label=label.astype(np.float32))
        files.append(str(tmp_path / f"train{k}.h5"))
    (tmp_path / "train.txt").write_text("\n".join(files) + "\n")
    label = rng.integers(0, 3, size=20)
    write_h5(tmp_path / "test.h5", data=(centers[label] + rng.normal(size=(20, 5))).astype(np.float32),
             label=label.astype(np.float32))
    (tmp_path / "test.txt").write_text(str(tmp_path / "test.h5") + "\n")
    (tmp_path / "net.prototxt").write_text(
        CLASSIFIER_NET.format(train=tmp_path / "train.txt", test=tmp_path / "test.txt"))
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" test_iter: 2 test_interval: 10 base_lr: 0.05 '
        f'momentum: 0.9 weight_decay: 0.001 lr_policy: "inv" gamma: 0.01 power: 0.75 max_iter: 30 '
        f'random_seed: 7 snapshot_prefix: "{tmp_path / "snap"}" {extra}')
    return tmp_path / "solver.prototxt"


def test_loss_falls_and_accuracy_rises(tmp_path):
    solver = jitnet.get_solver(str(classifier_solver(tmp_path)))
    first = solver.net.forward_from_to()
    solver.step(60)
    last = np.mean([solver.net.forward_from_to() for _ in range(5)])
    assert last < 0.5 * first, (first, last)
    assert solver.test_all()[0]["accuracy"] > 0.8


def final_state(solver):
    return ([p.data.copy() for p in solver.net.learnable_params], [h.data.copy() for h in solver.history])


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("k", [7, 13])
def test_snapshot_restore_continue_is_exact(tmp_path, fmt, k):
    path = classifier_solver(tmp_path, f"snapshot_format: {fmt}")
    straight = jitnet.get_solver(str(path))
    straight.step(20)
    weights, history = final_state(straight)

    first = jitnet.get_solver(str(path))
    first.step(k)
    model, state = first.snapshot()
    assert os.path.basename(model) == f"snap_iter_{k}.caffemodel" + (".h5" if fmt == "HDF5" else "")
    assert os.path.basename(state) == f"snap_iter_{k}.solverstate" + (".h5" if fmt == "HDF5" else "")
    jitnet.set_random_seed(12345)                     # disturb the generator: restore must undo it
    resumed = jitnet.get_solver(str(path))
    resumed.restore(state)
    assert resumed.iter == k
    resumed.step(20 - k)
    weights2, history2 = final_state(resumed)
    for a, b in zip(weights + history, weights2 + history2):
        np.testing.assert_array_equal(a, b)


def test_resume_in_a_fresh_process_matches(tmp_path):
    """jitnet train --snapshot in a new process ends where the uninterrupted run ends."""
    path = classifier_solver(tmp_path, "snapshot: 10")
    straight = jitnet.get_solver(str(path))
    straight.solve()                                  # 30 iterations, snapshots at 10, 20, 30
    reference = read_binary(str(tmp_path / "snap_iter_30.caffemodel"), pb.NetParameter())
    os.remove(tmp_path / "snap_iter_30.caffemodel")
    result = subprocess.run(
        [sys.executable, "-m", "jitnet", "train", "--solver", str(path),
         "--snapshot", str(tmp_path / "snap_iter_10.solverstate")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = read_binary(str(tmp_path / "snap_iter_30.caffemodel"), pb.NetParameter())
    blobs = lambda net: [np.asarray(b.data) for layer in net.layer for b in layer.blobs]  # noqa: E731
    assert len(blobs(reference)) == 4
    for a, b in zip(blobs(reference), blobs(resumed)):
        np.testing.assert_array_equal(a, b)


def test_snapshot_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves no file under the final name and the earlier snapshot intact."""
    solver = jitnet.get_solver(str(classifier_solver(tmp_path)))
    solver.step(2)
    model, state = solver.snapshot()
    before = open(state, "rb").read()
    solver.step(1)
    real_replace = os.replace

    def crash(src, dst):
        raise OSError("simulated crash during rename")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Exception):
        solver.snapshot()
    monkeypatch.setattr(os, "replace", real_replace)
    assert not os.path.exists(tmp_path / "snap_iter_3.caffemodel")
    assert open(state, "rb").read() == before
    restored = jitnet.get_solver(str(classifier_solver(tmp_path)))
    restored.restore(state)
    assert restored.iter == 2


# -- bad solver files --------------------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [
    ('type: "Fancy"', "unknown solver type 'Fancy'"),
    ('lr_policy: "cosine"', "unknown lr_policy 'cosine'"),
    ('lr_policy: "step" gamma: 0.1', "needs a positive stepsize"),
    ('lr_policy: "exp" gamma: -0.5', "needs gamma >= 0"),
    ('lr_policy: "fixed" test_iter: 3', "test_iter is given but test_interval is not"),
    ('lr_policy: "fixed" snapshot: 100', "snapshot_prefix"),
])
def test_bad_solver_files(tmp_path, text, message):
    _, _, _ = regression_solver(tmp_path)
    path = tmp_path / "bad_solver.prototxt"
    path.write_text(f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.1 {text}')
    with pytest.raises(jitnet.SolverError, match=message.replace("(", r"\(")):
        jitnet.get_solver(str(path))


def test_solver_needs_exactly_one_train_net(tmp_path):
    path = tmp_path / "s.prototxt"
    path.write_text('base_lr: 0.1 lr_policy: "fixed"')
    with pytest.raises(jitnet.SolverError, match="exactly one of net"):
        jitnet.get_solver(str(path))
