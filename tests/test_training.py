"""Training features beyond the update rules: exact resume for every solver type and
format, the NaN guard, debug_info, several test nets, snapshot options, fine-tuning
from weights, signals, the log file and its plot."""
import logging
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import jitnet
from jitnet.proto import pb, read_binary
from test_solver import classifier_solver, final_state

TYPES = {"SGD": "momentum: 0.9", "Nesterov": "momentum: 0.9", "AdaGrad": "momentum: 0",
         "RMSProp": "momentum: 0 rms_decay: 0.95", "AdaDelta": "momentum: 0.95 delta: 1e-6",
         "Adam": "momentum: 0.9 momentum2: 0.999"}


def typed_solver(tmp_path, kind, extra=""):
    path = classifier_solver(tmp_path, extra)
    text = path.read_text().replace("momentum: 0.9 ", "")
    if kind == "AdaDelta":
        text = text.replace("base_lr: 0.05", "base_lr: 1.0")
    path.write_text(f'{text} type: "{kind}" {TYPES[kind]}')
    return path


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
@pytest.mark.parametrize("kind", list(TYPES))
def test_every_solver_type_resumes_exactly(tmp_path, kind, fmt):
    path = typed_solver(tmp_path, kind, f"snapshot_format: {fmt}")
    straight = jitnet.get_solver(str(path))
    straight.step(17)
    reference = final_state(straight)
    first = jitnet.get_solver(str(path))
    first.step(9)                                      # 9 batches of 6: the epoch of 40 rows ends mid-batch
    _, state = first.snapshot()
    jitnet.set_random_seed(999)
    resumed = jitnet.get_solver(str(path))
    resumed.restore(state)
    resumed.step(8)
    assert resumed.type == kind
    for a, b in zip(reference[0] + reference[1], final_state(resumed)[0] + final_state(resumed)[1]):
        np.testing.assert_array_equal(a, b)


def test_solverstate_is_caffe_layout(tmp_path):
    """Adam keeps m for every param, then v for every param, as Caffe's solverstate does."""
    solver = jitnet.get_solver(str(typed_solver(tmp_path, "Adam")))
    solver.step(3)
    _, state = solver.snapshot()
    proto = read_binary(state, pb.SolverState())
    assert proto.iter == 3 and proto.learned_net.endswith("snap_iter_3.caffemodel")
    n = len(solver.net.learnable_params)
    assert len(proto.history) == 2 * n
    for k, blob in enumerate(solver.history):
        param = solver.net.learnable_params[k % n]
        assert tuple(proto.history[k].shape.dim) == param.shape
        np.testing.assert_array_equal(np.asarray(proto.history[k].data).reshape(param.shape), blob.data)


# -- NaN guard ---------------------------------------------------------------------------------------
def test_nan_in_the_data_names_the_first_layer(tmp_path):
    path = classifier_solver(tmp_path)
    with h5py.File(tmp_path / "train1.h5", "r+") as f:
        data = f["data"][...]
        data[3, 2] = np.nan
        f["data"][...] = data
    solver = jitnet.get_solver(str(path))
    with pytest.raises(jitnet.NumericalError) as error:
        solver.step(20)
    message = str(error.value)
    assert re.search(r"iteration \d+", message)
    # The data layer passes the NaN through; it is its top that first holds it.
    assert "layer 'data' (HDF5Data)" in message and "top 'data'" in message


def test_divergence_stops_before_the_update(tmp_path):
    path = classifier_solver(tmp_path)
    path.write_text(path.read_text().replace("base_lr: 0.05", "base_lr: 1e12"))
    solver = jitnet.get_solver(str(path))
    with pytest.raises(jitnet.NumericalError) as error:
        solver.step(30)
    assert "layer '" in str(error.value)
    stopped_at = int(re.search(r"iteration (\d+)", str(error.value)).group(1))
    assert solver.iter == stopped_at               # the iteration was not counted as done


@pytest.mark.parametrize("weight_decay", ["0.001", "0"])
def test_nonfinite_only_in_backward_is_found_there(tmp_path, weight_decay):
    """Found with weight decay (from the sums the regularization returns) and without (the
    guard sums the diffs itself)."""
    path = classifier_solver(tmp_path)
    path.write_text(path.read_text().replace("weight_decay: 0.001", f"weight_decay: {weight_decay}"))
    net = tmp_path / "net.prototxt"
    net.write_text(net.read_text().replace('top: "loss" }', 'top: "loss" loss_weight: inf }'))
    solver = jitnet.get_solver(str(path))
    before = [p.data.copy() for p in solver.net.learnable_params]
    with pytest.raises(jitnet.NumericalError, match=r"backward: layer 'loss' \(SoftmaxWithLoss\)"):
        solver.step(1)
    for p, b in zip(solver.net.learnable_params, before):
        np.testing.assert_array_equal(p.data, b)       # no parameter was updated


def test_the_nan_guard_makes_no_pass_of_its_own_under_weight_decay(tmp_path, monkeypatch):
    """Issue 10: with weight decay on every parameter (Caffe's example solvers) the guard reads
    the sums the regularization pass returns; it sums a diff itself only where no decay
    applies."""
    from jitnet import common
    blas = common.kernels("blas", "cpu")
    calls = []
    real = blas.asum
    monkeypatch.setattr(blas, "asum", lambda x: calls.append(x.size) or real(x))
    solver = jitnet.get_solver(str(classifier_solver(tmp_path)))
    assert all(solver.net.params_weight_decay)
    solver.step(3)
    assert calls == []
    solver.param.weight_decay = 0.0
    solver.step(1)
    assert sorted(calls) == sorted(p.count for p in solver.net.learnable_params)


# -- debug_info, test nets, snapshots, weights -------------------------------------------------------------
def test_debug_info_logs_each_layer(tmp_path, caplog):
    path = classifier_solver(tmp_path, "debug_info: true display: 2")
    solver = jitnet.get_solver(str(path))
    with caplog.at_level(logging.INFO, logger="jitnet"):
        solver.step(2)
    text = caplog.text
    for pattern in (r"\[Forward\] Layer ip1, top blob ip1 data: [0-9.e+-]+",
                    r"\[Forward\] Layer ip1, param blob 0 data: ",
                    r"\[Backward\] Layer ip2, bottom blob ip1 diff: ",
                    r"\[Backward\] Layer ip1, param blob 1 diff: ",
                    r"\[Update\] All net params \(data, diff\): L1 norm = "):
        assert re.search(pattern, text), pattern
    assert text.count("[Forward] Layer ip1, top blob") == 1    # display iteration 0 only


def test_several_test_nets_with_states_and_test_loss(tmp_path, caplog):
    path = classifier_solver(tmp_path)
    net = tmp_path / "net.prototxt"
    net.write_text(net.read_text().replace(
        'include { phase: TEST }\n        hdf5_data_param { source',
        'include { phase: TEST stage: "val" }\n        hdf5_data_param { source').replace(
        'name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"\n        include { phase: TEST }',
        'name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"\n        include { phase: TEST stage: "val" }'))
    net.write_text(net.read_text() + f"""
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" include {{ phase: TEST stage: "train" }}
        hdf5_data_param {{ source: "{tmp_path / 'train.txt'}" batch_size: 8 }} }}
""")
    path.write_text(path.read_text().replace("test_iter: 2", "")
                    + ' test_iter: 2 test_state { stage: "val" } test_iter: 5 test_state { stage: "train" }'
                    + " test_compute_loss: true")
    solver = jitnet.get_solver(str(path))
    assert len(solver.test_nets) == 2
    assert "accuracy" in solver.test_nets[0].outputs and "accuracy" not in solver.test_nets[1].outputs
    assert solver.test_nets[1].blobs["data"].shape[0] == 8
    with caplog.at_level(logging.INFO, logger="jitnet"):
        scores = solver.test_all()
    assert set(scores[0]) == {"accuracy", "loss"} and set(scores[1]) == {"loss"}
    assert caplog.text.count("Test loss:") == 2
    # The second test net averages the loss over 5 batches of training rows: recompute it.
    net1 = solver.test_nets[1]
    assert scores[1]["loss"] == pytest.approx(
        np.mean([net1.forward_from_to() for _ in range(5)]), rel=0.5)


def test_snapshot_diff_and_after_train(tmp_path):
    path = classifier_solver(tmp_path, "snapshot: 4 snapshot_diff: true snapshot_after_train: true max_iter: 6")
    path.write_text(path.read_text().replace("max_iter: 30", ""))
    solver = jitnet.get_solver(str(path))
    solver.solve()
    for it in (4, 6):                                  # 6 is not a multiple of 4: snapshot_after_train
        assert (tmp_path / f"snap_iter_{it}.caffemodel").exists()
    model = read_binary(str(tmp_path / "snap_iter_6.caffemodel"), pb.NetParameter())
    ip1 = next(layer for layer in model.layer if layer.name == "ip1")
    assert len(ip1.blobs[0].diff) == ip1.blobs[0].shape.dim[0] * ip1.blobs[0].shape.dim[1]
    np.testing.assert_array_equal(np.asarray(ip1.blobs[0].diff).reshape(solver.net.params["ip1"][0].shape),
                                  solver.net.params["ip1"][0].diff)


def test_hdf5_snapshot_layout(tmp_path):
    solver = jitnet.get_solver(str(classifier_solver(tmp_path, "snapshot_format: HDF5 snapshot_diff: true")))
    solver.step(2)
    model, state = solver.snapshot()
    with h5py.File(model, "r") as f:
        np.testing.assert_array_equal(f["data/ip1/0"][...], solver.net.params["ip1"][0].data)
        np.testing.assert_array_equal(f["diff/ip2/1"][...], solver.net.params["ip2"][1].diff)
    with h5py.File(state, "r") as f:                   # Caffe's hdf5_save_int / _string layout
        assert f["iter"].shape == (1,) and f["iter"][0] == 2
        assert f["current_step"].shape == (1,)
        assert f["learned_net"].dtype.kind == "S" and f["learned_net"][()].decode() == model
        assert len(f["history"]) == len(solver.net.learnable_params)


def test_weights_in_the_solver_file(tmp_path):
    path = classifier_solver(tmp_path)
    donor = jitnet.get_solver(str(path))
    donor.step(5)
    donor.net.save(str(tmp_path / "donor.caffemodel"))
    path.write_text(path.read_text() + f' weights: "{tmp_path / "donor.caffemodel"}"')
    solver = jitnet.get_solver(str(path))
    for name in ("ip1", "ip2"):
        for mine, theirs in zip(solver.net.params[name], donor.net.params[name]):
            np.testing.assert_array_equal(mine.data, theirs.data)


# -- the command line: fine-tuning, signals, log and plot ---------------------------------------------------
def jitnet_cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "jitnet", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_finetune_from_two_weight_files(tmp_path):
    path = classifier_solver(tmp_path)
    donor = jitnet.get_solver(str(path))
    donor.step(3)
    full = donor.net.to_proto()
    for keep in ("ip1", "ip2"):
        part = pb.NetParameter()
        part.layer.extend([layer for layer in full.layer if layer.name == keep])
        (tmp_path / f"{keep}.caffemodel").write_bytes(part.SerializeToString())
    path.write_text(path.read_text().replace("max_iter: 30", "max_iter: 0") + " snapshot_after_train: true")
    result = jitnet_cli("train", "--solver", str(path),
                        "--weights", f"{tmp_path / 'ip1.caffemodel'},{tmp_path / 'ip2.caffemodel'}")
    assert result.returncode == 0, result.stderr[-2000:]
    saved = read_binary(str(tmp_path / "snap_iter_0.caffemodel"), pb.NetParameter())
    for layer in saved.layer:
        for j, blob in enumerate(layer.blobs):
            np.testing.assert_array_equal(np.asarray(blob.data).reshape(tuple(blob.shape.dim)),
                                          donor.net.params[layer.name][j].data)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="needs POSIX signals")
def test_sighup_snapshots_and_sigint_stops(tmp_path):
    path = classifier_solver(tmp_path, "display: 100")
    path.write_text(path.read_text().replace("max_iter: 30", "max_iter: 100000000")
                    .replace("test_interval: 10", "test_interval: 100000000"))
    proc = subprocess.Popen([sys.executable, "-m", "jitnet", "train", "--solver", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        for line in proc.stderr:                       # wait until training runs
            if "Iteration 100 " in line or time.time() > deadline:
                break
        proc.send_signal(signal.SIGHUP)
        for _ in range(600):
            if list(tmp_path.glob("snap_iter_*.solverstate")):
                break
            time.sleep(0.1)
        snaps = list(tmp_path.glob("snap_iter_*.solverstate"))
        assert len(snaps) == 1, "SIGHUP should snapshot"
        assert proc.poll() is None, "SIGHUP should not stop training"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    states = sorted(tmp_path.glob("snap_iter_*.solverstate"), key=lambda p: int(re.findall(r"\d+", p.name)[-1]))
    assert len(states) == 2, "SIGINT should snapshot, then stop"
    last = int(re.search(r"snap_iter_(\d+)", states[-1].name).group(1))
    assert read_binary(str(states[-1]), pb.SolverState()).iter == last
    assert (tmp_path / f"snap_iter_{last}.caffemodel").exists()


def test_log_file_and_plot(tmp_path):
    path = classifier_solver(tmp_path, "display: 5")
    log = tmp_path / "train.log"
    result = jitnet_cli("train", "--solver", str(path), "--log", str(log))
    assert result.returncode == 0, result.stderr[-2000:]
    text = log.read_text()
    assert re.search(r"Iteration 25 \(.*\), loss = [0-9.]+", text)
    assert re.search(r"Iteration 25, lr = [0-9.e-]+", text)
    assert text.count("Testing net (#0)") == 4          # iterations 0, 10, 20, 30
    from jitnet.plot import parse_log
    curves = parse_log(str(log))
    assert [it for it, _ in curves["test"][(0, "accuracy")]] == [0, 10, 20, 30]
    assert [it for it, _ in curves["train"]][:3] == [0, 5, 10]
    png = tmp_path / "curves.png"
    result = jitnet_cli("plot", str(log), "-o", str(png))
    assert result.returncode == 0, result.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000


def test_plot_of_a_file_without_training_lines_is_an_error(tmp_path):
    junk = tmp_path / "junk.log"
    junk.write_text("hello\n")
    result = jitnet_cli("plot", str(junk), "-o", str(tmp_path / "x.png"))
    assert result.returncode == 1 and "no training or test lines" in result.stderr


def test_kill_9_never_leaves_a_corrupt_snapshot(tmp_path):
    """Kill -9 the trainer the moment a new snapshot file appears (while it is being
    written), four times: every file under a final name must still load, and the
    latest state must restore."""
    path = classifier_solver(tmp_path, "snapshot: 1")
    net = tmp_path / "net.prototxt"
    net.write_text(net.read_text().replace("num_output: 12", "num_output: 200000"))   # ~14 MB per file
    path.write_text(path.read_text().replace("max_iter: 30", "max_iter: 100000"))
    text = path.read_text()
    for round_ in range(4):
        # Each round has its own prefix, so the first new file is always one being written.
        path.write_text(text.replace(f'"{tmp_path / "snap"}"', f'"{tmp_path / f"r{round_}snap"}"'))
        proc = subprocess.Popen([sys.executable, "-m", "jitnet", "train", "--solver", str(path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob(f"r{round_}snap_iter_*.solverstate")):
            time.sleep(0.005)                          # one snapshot of this round is there...
        before = set(os.listdir(tmp_path))
        while time.time() < deadline and proc.poll() is None:
            if set(os.listdir(tmp_path)) - before:     # ...and the next one is being written
                break
            time.sleep(0.0005)
        proc.kill()
        proc.wait(timeout=60)
    finals = [p for p in tmp_path.glob("r*snap_iter_*") if p.suffix in (".caffemodel", ".solverstate")]
    assert finals, "the trainer should have written snapshots before being killed"
    for final in finals:
        read_binary(str(final), pb.NetParameter() if final.suffix == ".caffemodel" else pb.SolverState())
    states = sorted(tmp_path.glob("r*snap_iter_*.solverstate"),
                    key=lambda p: int(re.search(r"_iter_(\d+)", p.name).group(1)))
    solver = jitnet.get_solver(str(path))
    solver.restore(str(states[-1]))
    assert solver.iter == int(re.search(r"_iter_(\d+)", states[-1].name).group(1))


def test_train_state_selects_layers(tmp_path):
    path = classifier_solver(tmp_path)
    net = tmp_path / "net.prototxt"
    net.write_text(net.read_text().replace(
        'layer { name: "drop1"', 'layer { name: "drop1" include { stage: "with_dropout" }'))
    plain = jitnet.get_solver(str(path))
    assert "drop1" not in plain.net.layer_dict
    path.write_text(path.read_text() + ' train_state { stage: "with_dropout" }')
    staged = jitnet.get_solver(str(path))
    assert "drop1" in staged.net.layer_dict
    assert "drop1" not in staged.test_nets[0].layer_dict    # test nets keep their own state


def test_generic_net_fills_the_remaining_test_iters(tmp_path):
    """As Caffe: an explicit test_net first, then the generic net for the remaining test_iter."""
    path = classifier_solver(tmp_path)
    explicit = tmp_path / "explicit_test.prototxt"
    explicit.write_text((tmp_path / "net.prototxt").read_text().replace('name: "classifier"', 'name: "explicit"'))
    path.write_text(path.read_text().replace("test_iter: 2", f'test_net: "{explicit}" test_iter: 2 test_iter: 1'))
    solver = jitnet.get_solver(str(path))
    assert [n.name for n in solver.test_nets] == ["explicit", "classifier"]
    assert all(n.phase == jitnet.TEST for n in solver.test_nets)
    path.write_text(path.read_text().replace("test_iter: 1", ""))
    assert len(jitnet.get_solver(str(path)).test_nets) == 1
