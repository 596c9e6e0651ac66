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


def _int(f, name):
    value = np.asarray(f[name][()]).reshape(-1)
    if value.size != 1 or value.dtype.kind not in "iu":
        raise SolverError(f"'{name}' is not one integer")
    return int(value[0])


def _text(value):
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size == 1 else b""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise SolverError(f"a string field holds {type(value).__name__}")


def read_state_hdf5(path):
    """(iter, learned_net, current_step, [history arrays], jitnet_state) of a .solverstate.h5."""
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise SolverError(f"{path}: cannot open as an HDF5 solver state ({e})") from None
    try:
        with f:
            for name in ("iter", "learned_net", "current_step", "history"):
                if name not in f:
                    raise KeyError(name)
            group = f["history"]
            if not isinstance(group, h5py.Group):
                raise SolverError(f"{path}: 'history' is not a group of blobs")
            history = []
            for i in range(len(group)):
                dataset = group.get(str(i))
                if not isinstance(dataset, h5py.Dataset):
                    raise SolverError(f"{path}: history/{i} is missing or not a dataset "
                                      f"(history holds {len(group)} entries)")
                history.append(np.asarray(dataset[()]))
            it, current_step = _int(f, "iter"), _int(f, "current_step")
            learned_net = _text(f["learned_net"][()])
            extra = _text(f["jitnet_state"][()]) if "jitnet_state" in f else ""
    except KeyError:
        raise SolverError(f"{path}: not a solver state (it needs 'iter', 'learned_net', "
                          "'current_step' and 'history'); give a .solverstate.h5 written by "
                          "a snapshot") from None
    except SolverError as e:
        message = str(e)
        raise SolverError(message if message.startswith(f"{path}:") else f"{path}: {message}") from None
    except (OSError, RuntimeError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise SolverError(f"{path}: cannot read the HDF5 solver state; it is damaged "
                          f"({type(e).__name__}: {e})") from None
    return it, learned_net, current_step, history, extra
