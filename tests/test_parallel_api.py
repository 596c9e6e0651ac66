"""jitnet.parallel without mpiexec: records dealt by HDF5Data and MemoryData, the errors
for a missing mpi4py / MPI library and for --gpu beyond a host's devices, the launcher
environment, the pieces of resuming on another number of ranks, and a DataParallel of
one process (where nothing changes). The tests with real ranks are in test_parallel.py."""
import json
import logging
import sys
import types

import h5py
import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet import cli, parallel
from jitnet.parallel import ParallelError, Ranks
from jitnet.proto import pb, read_binary, write_binary


def P(text):
    return text_format.Parse(text, pb.NetParameter())


def h5_rows(tmp_path, sizes):
    """HDF5 files whose rows are numbered 0, 1, 2, ... over all files (data = label)."""
    paths, start = [], 0
    for k, n in enumerate(sizes):
        path = tmp_path / f"rows{k}.h5"
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(start, start + n, dtype=np.float32).reshape(n, 1)
            f["label"] = np.arange(start, start + n, dtype=np.float32)
        paths.append(str(path))
        start += n
    (tmp_path / "list.txt").write_text("\n".join(paths) + "\n")
    return tmp_path / "list.txt"


def hdf5_net(source, batch, shuffle, phase=jitnet.TRAIN):
    return jitnet.Net(P(f"""
    layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label"
             hdf5_data_param {{ source: "{source}" batch_size: {batch} shuffle: {str(shuffle).lower()} }} }}
    """), phase)


def memory_net(batch, phase=jitnet.TRAIN):
    return jitnet.Net(P(f"""
    layer {{ name: "mem" type: "MemoryData" top: "data" top: "label"
             memory_data_param {{ batch_size: {batch} channels: 1 height: 1 width: 1 }} }}
    """), phase)


def memory_workers(rows, batch, workers):
    """One MemoryData net per worker over the same rows (data = label = row number)."""
    nets = []
    for rank in range(workers):
        net = memory_net(batch)
        net.set_input_arrays(rows.reshape(-1, 1, 1, 1), rows)
        net.layer_dict["mem"].set_worker(rank, workers)
        nets.append(net)
    return nets


def dealt(nets, batches):
    """Labels each worker's net delivers over ``batches`` forwards, batch by batch."""
    return [[net.forward()["label"].tolist() for _ in range(batches)] for net in nets]


# -- records dealt by index ---------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("workers", [2, 3])
def test_hdf5_workers_share_out_the_single_worker_batches(tmp_path, shuffle, workers):
    """Worker r of N with batch B gets the rows r, r+N, ... of each round of N·B rows; the
    union of the N batches is the batch of one worker with N·B, epoch after epoch (12 rows
    do not divide into rounds: epochs end inside a round)."""
    source, b = h5_rows(tmp_path, [5, 3, 4]), 2
    jitnet.set_random_seed(3)
    single = hdf5_net(source, b * workers, shuffle)
    nets = []
    for rank in range(workers):
        jitnet.set_random_seed(3)                     # the same shuffles on every worker
        net = hdf5_net(source, b, shuffle)
        net.layer_dict["h5"].set_worker(rank, workers)
        nets.append(net)
    rounds = 7
    whole = dealt([single], rounds)[0]
    parts = dealt(nets, rounds)
    for k in range(rounds):
        for rank in range(workers):
            assert parts[rank][k] == whole[k][rank::workers], (k, rank)
    states = [net.layer_dict["h5"].get_state() for net in nets]
    assert all(state == states[0] for state in states)          # the same position everywhere
    assert states[0] == single.layer_dict["h5"].get_state()


def test_hdf5_dealt_position_resumes_on_another_number_of_workers(tmp_path):
    source = h5_rows(tmp_path, [5, 3, 4])
    jitnet.set_random_seed(4)
    single = hdf5_net(source, 4, True)
    expected = dealt([single], 6)[0]
    jitnet.set_random_seed(4)
    two = [hdf5_net(source, 2, True) for _ in range(2)]
    for rank, net in enumerate(two):
        net.layer_dict["h5"].set_worker(rank, 2)
        net.layer_dict["h5"].set_state(two[0].layer_dict["h5"].get_state())
    dealt(two, 3)
    state = two[1].layer_dict["h5"].get_state()
    jitnet.set_random_seed(99)                        # the position and the shuffles travel in the state
    resumed = hdf5_net(source, 4, True)
    resumed.layer_dict["h5"].set_state(state)
    assert dealt([resumed], 3)[0] == expected[3:]


def test_hdf5_test_phase_reads_every_row(tmp_path):
    net = hdf5_net(h5_rows(tmp_path, [6]), 3, False, phase=jitnet.TEST)
    net.layer_dict["h5"].set_worker(1, 2)
    assert dealt([net], 2)[0] == [[0, 1, 2], [3, 4, 5]]


def test_memory_data_workers_share_out_the_rows():
    rows = np.arange(12, dtype=np.float32)
    single = memory_net(6)
    single.set_input_arrays(rows.reshape(12, 1, 1, 1), rows)
    nets = memory_workers(rows, 3, 2)
    whole, parts = dealt([single], 5)[0], dealt(nets, 5)
    for k in range(5):
        assert parts[0][k] == whole[k][0::2] and parts[1][k] == whole[k][1::2]
    np.testing.assert_array_equal(nets[0].blobs["data"].data.ravel(), parts[0][-1])
    assert nets[0].layer_dict["mem"].get_state() == nets[1].layer_dict["mem"].get_state() \
        == single.layer_dict["mem"].get_state()


def test_memory_data_rounds_wrap_around_rows_that_do_not_divide():
    """9 rows, batch 3, 2 workers: rounds of 6 rows wrap around the 9."""
    rows = np.arange(9, dtype=np.float32)
    nets = memory_workers(rows, 3, 2)
    parts = dealt(nets, 3)
    assert parts[0] == [[0, 2, 4], [6, 8, 1], [3, 5, 7]]
    assert parts[1] == [[1, 3, 5], [7, 0, 2], [4, 6, 8]]
    np.testing.assert_array_equal(nets[1].blobs["data"].data.ravel(), [4, 6, 8])


# -- MPI missing ---------------------------------------------------------------------------------------
def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ParallelError, match=r"mpi4py is missing.*pip install 'jitnet\[mpi\]'"):
        parallel.mpi()


def test_missing_mpi_library_names_the_extra(monkeypatch):
    fake = types.ModuleType("mpi4py")
    fake.__path__ = []                                # a package whose MPI module cannot load
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(ParallelError, match=r"an MPI library for mpi4py is missing.*jitnet\[mpi\]"):
        parallel.mpi()


def test_train_under_mpiexec_without_mpi4py_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed"')
    assert cli.main(["train", "--solver", str(tmp_path / "solver.prototxt")]) == 1
    err = capsys.readouterr().err
    assert "jitnet train: error: data-parallel training needs mpi4py" in err
    assert "pip install 'jitnet[mpi]'" in err


def test_launcher_environment():
    assert parallel.launched_size({}) == 1 and parallel.launched_rank({}) == 0
    assert parallel.launched_size({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert parallel.launched_size({"PMI_SIZE": "8", "PMI_RANK": "3"}) == 8
    assert parallel.launched_rank({"PMI_SIZE": "8", "PMI_RANK": "3"}) == 3
    assert parallel.launched_size({"PMIX_RANK": "0"}) == 0          # launched; size unknown


# -- --gpu -------------------------------------------------------------------------------------------
def test_gpu_flag_gives_each_rank_of_a_host_its_device():
    two = [Ranks(r, 4, r % 2, 2, "node1") for r in range(4)]
    assert [parallel.device_for_rank("all", r, 2) for r in two] == [0, 1, 0, 1]
    assert [parallel.device_for_rank("1,0", r, 2) for r in two] == [1, 0, 1, 0]
    assert [parallel.device_for_rank("0,0", r, 1) for r in two] == [0, 0, 0, 0]   # named twice: shared


@pytest.mark.parametrize("gpu, devices, message", [
    ("all", 1, r"--gpu all: 2 ranks run on host node1, which has 1 CUDA device\(s\)"),
    ("0,1", 1, r"--gpu 0,1 asks for device 1, but host node1 has 1 CUDA device\(s\) \(ids 0 to 0\)"),
    ("0", 4, r"--gpu 0 names 1 device\(s\) for the 2 ranks on host node1"),
    ("2", 0, r"--gpu 2 asks for device 2, but host node1 has 0 CUDA device\(s\)$"),
    ("0,x", 2, r"give device ids"),
])
def test_gpu_flag_asking_for_more_devices_than_a_host_has(gpu, devices, message):
    with pytest.raises(ParallelError, match=message):
        parallel.device_for_rank(gpu, Ranks(0, 2, 0, 2, "node1"), devices)


def test_several_gpus_need_several_processes(capsys):
    assert cli.main(["train", "--solver", "s.prototxt", "--gpu", "0,1"]) == 1
    assert "start one process per device: mpiexec -n N jitnet train" in capsys.readouterr().err


# -- resuming on another number of ranks ---------------------------------------------------------------
def test_merged_positions_continue_after_every_rank():
    ranks = [{"train_data": {"data": {"next": 7, "batch": 3, "seed": 5}, "h5": {"row": 2}}},
             {"train_data": {"data": {"next": 8, "batch": 3, "seed": 5}, "h5": {"row": 2}}}]
    assert parallel.merged_positions(ranks) == {"data": {"next": 8, "batch": 3, "seed": 5},
                                                "h5": {"row": 2}}


def test_jumped_generator_states_are_streams_of_their_own():
    base = np.random.default_rng(1).bit_generator.state
    assert parallel.jumped_rng_state(base, 0) == base
    draws = []
    for rank in range(3):
        g = np.random.default_rng()
        g.bit_generator.state = parallel.jumped_rng_state(base, rank)
        draws.append(g.random(4).tolist())
    assert len({tuple(d) for d in draws}) == 3


# -- one process: nothing changes ----------------------------------------------------------------------
SOLVER_NET = """
layer { name: "mem" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 4 channels: 3 height: 1 width: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def small_solver(tmp_path):
    param = pb.SolverParameter(base_lr=0.1, momentum=0.9, lr_policy="fixed", max_iter=10,
                               random_seed=2, snapshot_prefix=str(tmp_path / "snap"))
    param.net_param.CopyFrom(P(SOLVER_NET))
    solver = jitnet.get_solver(param)
    rng = np.random.default_rng(0)
    solver.net.set_input_arrays(rng.normal(size=(8, 3, 1, 1)).astype(np.float32),
                                rng.integers(0, 2, 8).astype(np.float32))
    return solver


def test_one_process_data_parallel_changes_nothing(tmp_path, caplog):
    plain = small_solver(tmp_path)
    plain.step(5)
    wrapped = small_solver(tmp_path)
    dp = parallel.DataParallel(wrapped, check_every=1)
    assert (dp.rank, dp.size, dp.batch_size) == (0, 1, 4)
    wrapped.step(5)
    for a, b in zip(plain.net.learnable_params, wrapped.net.learnable_params):
        np.testing.assert_array_equal(a.data, b.data)
    _, state = wrapped.snapshot()
    resume = json.loads(read_binary(state, pb.SolverState()).jitnet_state)
    assert resume["world_size"] == 1 and resume["batch_size"] == 4 and "ranks" not in resume
    # a snapshot of another number of ranks: resumed, with a note on the effective batch
    resume["world_size"] = 2
    proto = read_binary(state, pb.SolverState())
    proto.jitnet_state = json.dumps(resume)
    write_binary(proto, state)
    again = small_solver(tmp_path)
    dp = parallel.DataParallel(again)
    with caplog.at_level(logging.INFO, logger="jitnet"):
        dp.restore(state)
    assert again.iter == 5
    assert "taken by a run on 2 rank(s), effective batch 2 x 4 = 8; this run has 1" in caplog.text
    dp.close()
    assert again.on_snapshot == [] and again.root_solver


def test_bad_options():
    solver_param = pb.SolverParameter(base_lr=0.1, lr_policy="fixed")
    solver_param.net_param.CopyFrom(P(SOLVER_NET))
    solver = jitnet.get_solver(solver_param)
    with pytest.raises(ParallelError, match="reduce must be one of all, layer"):
        parallel.DataParallel(solver, reduce="tree")
    with pytest.raises(ParallelError, match="check_every"):
        parallel.DataParallel(solver, check_every=-1)
