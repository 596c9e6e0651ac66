"""Weights in HDF5, the layout Caffe's ``snapshot_format: HDF5`` writes:
``/data/<layer name>/<blob index>`` (and ``/diff/...`` when diffs are saved)."""
import os

import h5py
import numpy as np

from .errors import WeightsError


def atomic_h5(path):
    """An h5py.File writing to a temporary name; call ``finish_atomic`` to move it into place."""
    tmp = f"{path}.tmp{os.getpid()}"
    return h5py.File(tmp, "w"), tmp


def finish_atomic(tmp, path):
    os.replace(tmp, path)


def save_weights_hdf5(net, path, write_diff=False):
    f, tmp = atomic_h5(path)
    with f:
        data = f.create_group("data")
        diff = f.create_group("diff") if write_diff else None
        for layer in net.layers:
            group = data.create_group(layer.name)
            dgroup = diff.create_group(layer.name) if diff is not None else None
            for j, blob in enumerate(layer.blobs):
                if (layer.name, j) in net.shared_blobs:
                    continue              # as Caffe: only the owner of a shared param is saved
                group.create_dataset(str(j), data=blob.data)
                if dgroup is not None:
                    dgroup.create_dataset(str(j), data=blob.diff)
    finish_atomic(tmp, path)


def read_weights_hdf5(net, path):
    """[(blob, array)] for the layers of ``net`` found in the HDF5 weights file, shapes checked."""
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise WeightsError(f"{path}: cannot open as HDF5 weights ({e})") from None
    found = []
    with f:
        data = f.get("data")
        if not isinstance(data, h5py.Group):
            raise WeightsError(f"{path}: no /data group of layers; not a Caffe HDF5 weights file "
                               "(a .caffemodel.h5 as Caffe or jitnet snapshot it)")
        for name, group in data.items():
            target = net.layer_dict.get(name)
            if target is None:
                continue
            if not isinstance(group, h5py.Group):
                raise WeightsError(f"{path}: /data/{name} is not a group of blobs; not a Caffe "
                                   "HDF5 weights file")
            if not len(group) and not target.blobs:
                continue
            if len(group) > len(target.blobs):
                raise WeightsError(f"{path}: layer '{name}' has {len(group)} blobs in the file "
                                   f"but {len(target.blobs)} in the net")
            arrays = {}
            for j in range(len(target.blobs)):
                if str(j) in group:
                    arrays[j] = np.asarray(group[str(j)])
                elif (name, j) not in net.shared_blobs:
                    raise WeightsError(f"{path}: layer '{name}' has no blob {j} in the file "
                                       "(only blobs shared with another layer may be missing)")
            found.extend(net.check_layer_arrays(target, arrays, path))
    return found
