"""The solver loop as Caffe's Solver::Step runs it (issues 6 and 7): the average_loss window
starts afresh at each step() call (but a restored one continues, so a resumed solve() is
exact), the on_start / on_gradients_ready callback seams, and restore() refusing a damaged
resume state without changing the solver."""
import json
import os

import h5py
import numpy as np
import pytest

import jitnet
from jitnet.proto import pb, read_binary, write_binary
from test_solver import classifier_solver, regression_solver


# -- task 4: the smoothed loss ------------------------------------------------------------------------
def test_a_loop_of_step_1_shows_the_raw_loss(tmp_path):
    path = classifier_solver(tmp_path, "average_loss: 10")
    solver = jitnet.get_solver(str(path))
    losses = []
    solver.add_callback(lambda s: losses.append(s.smoothed_loss))
    for _ in range(4):
        solver.step(1)
        assert list(solver.losses) == [losses[-1]]     # a window of one: this step's loss
    assert len(set(losses)) == 4


def test_within_one_step_call_the_loss_is_averaged(tmp_path):
    path = classifier_solver(tmp_path, "average_loss: 3")
    solver = jitnet.get_solver(str(path))
    raw, shown = [], []
    solver.on_gradients_ready.append(lambda s: raw.append(s.losses[-1]))
    solver.add_callback(lambda s: shown.append(s.smoothed_loss))
    solver.step(5)
    for k in range(5):
        window = raw[max(0, k - 2):k + 1]                # Caffe's window of average_loss values
        assert shown[k] == pytest.approx(sum(window) / len(window), rel=1e-12)
    solver.step(1)                                       # a new call: the window starts afresh
    assert shown[-1] == raw[-1]


@pytest.mark.parametrize("fmt", ["BINARYPROTO", "HDF5"])
def test_resumed_solve_shows_the_losses_of_the_uninterrupted_one(tmp_path, fmt):
    path = classifier_solver(tmp_path, f"average_loss: 4 snapshot: 6 snapshot_format: {fmt}")
    path.write_text(path.read_text().replace("max_iter: 30", "max_iter: 12"))
    straight = jitnet.get_solver(str(path))
    shown = []
    straight.add_callback(lambda s: shown.append(s.smoothed_loss))
    straight.solve()
    resumed = jitnet.get_solver(str(path))
    again = []
    resumed.add_callback(lambda s: again.append(s.smoothed_loss))
    suffix = ".solverstate.h5" if fmt == "HDF5" else ".solverstate"
    resumed.solve(resume_file=str(tmp_path / f"snap_iter_6{suffix}"))
    assert again == shown[6:]


# -- task 7: Caffe's callback seams ------------------------------------------------------------------------
def test_callbacks_run_at_caffes_moments(tmp_path):
    path = classifier_solver(tmp_path, "test_initialization: true")
    path.write_text(path.read_text().replace("test_interval: 10", "test_interval: 2"))
    solver = jitnet.get_solver(str(path))
    events = []
    real_test_all = solver.test_all

    def test_all():
        events.append(f"test@{solver.iter}")
        return real_test_all()
    solver.test_all = test_all
    solver.on_start.append(lambda s: events.append(f"start@{s.iter}"))
    solver.on_gradients_ready.append(lambda s: events.append(f"gradients@{s.iter}"))
    solver.add_callback(lambda s: events.append(f"after@{s.iter}"))
    solver.step(3)
    solver.step(1)
    assert events == ["test@0", "start@0", "gradients@0", "after@1",
                      "start@1", "gradients@1", "after@2",
                      "test@2", "start@2", "gradients@2", "after@3",
                      "start@3", "gradients@3", "after@4"]


@pytest.mark.parametrize("iter_size", [1, 2])
def test_on_gradients_ready_sees_the_gradients_before_the_update(tmp_path, iter_size):
    """The diffs hold the summed gradients of the iter_size passes (not yet ÷ iter_size, not
    regularized) and the weights are those of before the update."""
    x, t, path = regression_solver(tmp_path, f"iter_size: {iter_size}")
    solver = jitnet.get_solver(str(path))
    w_start = solver.net.params["ip"][0].data.astype(np.float64)
    b_start = solver.net.params["ip"][1].data.astype(np.float64)
    seen = {}

    def inspect(s):
        seen["w"] = s.net.params["ip"][0].data.copy()
        seen["gw"] = s.net.params["ip"][0].diff.copy()
        seen["gb"] = s.net.params["ip"][1].diff.copy()
    solver.on_gradients_ready.append(inspect)
    solver.step(1)
    gw, gb = np.zeros_like(w_start), np.zeros_like(b_start)
    for k in range(iter_size):                         # batches of 4 rows, in order
        rows = slice(4 * k, 4 * k + 4)
        dy = (x[rows] @ w_start.T + b_start - t[rows]) / 4.0     # EuclideanLoss: Σ‖y − t‖² / 2N
        gw += dy.T @ x[rows]
        gb += dy.sum(axis=0)
    np.testing.assert_array_equal(seen["w"], w_start.astype(np.float32))
    np.testing.assert_allclose(seen["gw"], gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seen["gb"], gb, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(solver.net.params["ip"][0].data, seen["w"])   # then the update


def test_on_gradients_ready_can_replace_the_gradients(tmp_path):
    """Where a data-parallel allreduce goes: the update uses the diffs as the callback leaves
    them (zeroed here; no weight decay, so nothing moves)."""
    _, _, path = regression_solver(tmp_path)
    path.write_text(path.read_text().replace("weight_decay: 0.01", "weight_decay: 0"))
    solver = jitnet.get_solver(str(path))
    before = [b.data.copy() for b in solver.net.learnable_params]

    def zero(s):
        for blob in s.net.learnable_params:
            blob.diff[...] = 0
    solver.on_gradients_ready.append(zero)
    solver.step(2)
    for a, b in zip(before, solver.net.learnable_params):
        np.testing.assert_array_equal(a, b.data)


def test_add_callback_still_runs_after_each_iteration(tmp_path):
    solver = jitnet.get_solver(str(classifier_solver(tmp_path)))
    seen = []
    solver.add_callback(lambda s: seen.append(s.iter))
    solver.step(3)
    assert seen == [1, 2, 3]


# -- restore refuses a damaged resume state and changes nothing ---------------------------------------------
def snapshot_state(tmp_path):
    path = classifier_solver(tmp_path)
    solver = jitnet.get_solver(str(path))
    solver.step(3)
    _, state = solver.snapshot()
    return path, state


def solver_as_it_is(solver):
    return ([p.data.copy() for p in solver.net.learnable_params], [h.data.copy() for h in solver.history],
            solver.iter, solver._data_positions(), jitnet.common.rng_state())


@pytest.mark.parametrize("change,message", [
    (lambda s: "[1, 2]", "is not a JSON object"),
    (lambda s: {**s, "rng": {"bit_generator": "PCG64", "state": "x"}}, "random generator state numpy cannot use"),
    (lambda s: {**s, "rng": 5}, "random generator state numpy cannot use"),
    (lambda s: {**s, "losses": ["a"]}, "loss window that is not a list of numbers"),
    (lambda s: {**s, "losses": 3}, "loss window that is not a list of numbers"),
    (lambda s: {**s, "train_data": []}, "data positions of the wrong form"),
    (lambda s: {**s, "test_data": [5]}, "data positions of the wrong form"),
    (lambda s: {**s, "train_data": {"data": {"file_order": [0, 1], "file_index": 7, "rows": [0], "row": 0}}},
     "data layer 'data' of net 'classifier' cannot take the position"),
    (lambda s: {**s, "train_data": {"data": {}}}, "data layer 'data' of net 'classifier' cannot take"),
])
def test_a_damaged_resume_state_changes_nothing(tmp_path, change, message):
    path, state = snapshot_state(tmp_path)
    proto = read_binary(state, pb.SolverState())
    changed = change(json.loads(proto.jitnet_state))
    proto.jitnet_state = changed if isinstance(changed, str) else json.dumps(changed)
    write_binary(proto, state)
    solver = jitnet.get_solver(str(path))
    solver.step(1)
    before = solver_as_it_is(solver)
    with pytest.raises(jitnet.SolverError, match=message):
        solver.restore(state)
    after = solver_as_it_is(solver)
    for a, b in zip(before[0] + before[1], after[0] + after[1]):
        np.testing.assert_array_equal(a, b)
    assert before[2:] == after[2:]


def test_weights_that_do_not_fit_put_the_data_positions_back(tmp_path):
    path, state = snapshot_state(tmp_path)
    proto = read_binary(state, pb.SolverState())
    (tmp_path / "other.prototxt").write_text((tmp_path / "net.prototxt").read_text()
                                             .replace("num_output: 12", "num_output: 13"))
    jitnet.Net(str(tmp_path / "other.prototxt"), jitnet.TEST).save(str(tmp_path / "other.caffemodel"))
    proto.learned_net = str(tmp_path / "other.caffemodel")
    write_binary(proto, state)
    solver = jitnet.get_solver(str(path))
    solver.step(1)
    before = solver_as_it_is(solver)
    with pytest.raises(jitnet.WeightsError, match="layer 'ip1' blob 0 has shape"):
        solver.restore(state)
    after = solver_as_it_is(solver)
    assert before[2:] == after[2:]


@pytest.mark.parametrize("damage,message", [
    (lambda f: f.__delitem__("iter"), "not a solver state"),
    (lambda f: (f.__delitem__("iter"), f.create_dataset("iter", data=np.array([b"x"]))), "'iter' is not one integer"),
    (lambda f: (f.__delitem__("current_step"), f.create_dataset("current_step", data=np.zeros(3, np.int32))),
     "'current_step' is not one integer"),
    (lambda f: (f.__delitem__("history/0"), f["history"].create_group("0")), "history/0 is missing or not a dataset"),
    (lambda f: (f.__delitem__("history/1"), f["history"].create_dataset("1", data=np.array([b"a"] * 12))),
     "history blob 1 holds"),
    (lambda f: (f.__delitem__("learned_net"), f.create_dataset("learned_net", data=np.bytes_(b"\xff\xfe"))),
     "damaged"),
])
def test_a_damaged_hdf5_solver_state(tmp_path, damage, message):
    path = classifier_solver(tmp_path, "snapshot_format: HDF5")
    solver = jitnet.get_solver(str(path))
    solver.step(2)
    _, state = solver.snapshot()
    with h5py.File(state, "a") as f:
        damage(f)
    with pytest.raises(jitnet.SolverError, match=message):
        jitnet.get_solver(str(path)).restore(state)


def test_a_file_that_is_not_hdf5_named_solverstate_h5(tmp_path):
    path = classifier_solver(tmp_path)
    (tmp_path / "x.solverstate.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(600))
    with pytest.raises(jitnet.SolverError, match="x.solverstate.h5"):
        jitnet.get_solver(str(path)).restore(str(tmp_path / "x.solverstate.h5"))


def test_a_resume_state_that_is_not_utf8(tmp_path):
    """Found by the fuzzer: a flipped bit in jitnet_state made restore() end in a bare
    UnicodeDecodeError."""
    path, state = snapshot_state(tmp_path)
    payload = b'{"rng": \xff}'
    tag = (1000 << 3) | 2                                # jitnet_state, length-delimited
    varint = bytes([tag & 0x7F | 0x80, tag >> 7])
    with open(state, "ab") as f:                         # a later occurrence wins
        f.write(varint + bytes([len(payload)]) + payload)
    with pytest.raises(jitnet.SolverError, match="jitnet_state is not valid JSON"):
        jitnet.get_solver(str(path)).restore(state)


def test_get_solver_takes_a_solver_parameter():
    """pycaffe scripts build the SolverParameter in Python and hand it over."""
    from google.protobuf import text_format
    param = text_format.Parse(
        'base_lr: 0.1 lr_policy: "fixed" max_iter: 2 net_param { layer { name: "d" type: "DummyData" '
        'top: "a" top: "b" dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: "gaussian" } } } '
        'layer { name: "ip" type: "InnerProduct" bottom: "a" top: "y" inner_product_param { num_output: 3 } } '
        'layer { name: "l" type: "EuclideanLoss" bottom: "y" bottom: "b" top: "loss" } }', pb.SolverParameter())
    solver = jitnet.get_solver(param)
    assert solver.type == "SGD" and solver.source is None
    solver.step(2)
    assert solver.iter == 2
