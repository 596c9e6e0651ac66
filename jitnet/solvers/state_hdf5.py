"""Solver state in HDF5, the layout Caffe's ``snapshot_format: HDF5`` writes:
``iter``, ``learned_net``, ``current_step`` and ``history/<i>``; jitnet adds
``jitnet_state`` (a JSON string), which Caffe's reader ignores."""
import h5py
import numpy as np

from ..errors import SolverError
from ..hdf5 import atomic_h5, finish_atomic


def write_state_hdf5(solver, path, model_file, extra):
    # As Caffe's hdf5_save_int / hdf5_save_string: one-element int datasets and a
    # fixed-length string, which Caffe's H5LT readers expect.
    f, tmp = atomic_h5(path)
    with f:
        f.create_dataset("iter", data=np.array([solver.iter], dtype=np.int32))
        f.create_dataset("learned_net", data=np.bytes_(model_file.encode()))
        f.create_dataset("current_step", data=np.array([solver.current_step], dtype=np.int32))
        group = f.create_group("history")
        for i, h in enumerate(solver.history):
            group.create_dataset(str(i), data=h.data)
        f.create_dataset("jitnet_state", data=np.bytes_(extra.encode()))
    finish_atomic(tmp, path)


def _int(dataset):
    return int(np.asarray(dataset[()]).reshape(-1)[0])


def read_state_hdf5(path):
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise SolverError(f"{path}: cannot open as an HDF5 solver state ({e})") from None
    with f:
        try:
            it = _int(f["iter"])
            learned_net = f["learned_net"][()]
            current_step = _int(f["current_step"])
            history = [np.asarray(f["history"][str(i)]) for i in range(len(f["history"]))]
        except KeyError:
            raise SolverError(f"{path}: not a solver state (it needs 'iter', 'learned_net', "
                              "'current_step' and 'history'); give a .solverstate.h5 written by "
                              "a snapshot") from None
        extra = f["jitnet_state"][()] if "jitnet_state" in f else b""
    decode = lambda v: v.decode() if isinstance(v, bytes) else str(v)  # noqa: E731
    return it, decode(learned_net), current_step, history, decode(extra)
