"""Weights in HDF5, the layout Caffe's ``snapshot_format: HDF5`` writes:
``/data/<layer name>/<blob index>`` (and ``/diff/...`` when diffs are saved).

Whether a weights file is HDF5 is decided by its content (:func:`is_hdf5`), not by
its name, so an HDF5 file called ``x.caffemodel`` and a binary caffemodel called
``x.h5`` both load."""
import os

import h5py
import numpy as np

from .errors import WeightsError

#: The first 8 bytes of an HDF5 superblock.
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path):
    """Whether the file at ``path`` is HDF5, decided by content as the HDF5 library does
    (H5Fis_hdf5): the signature at offset 0, or after a user block at 512, 1024, 2048, ...
    bytes. False for a file that cannot be opened (the reader then says why)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            offset = 0
            while offset + len(HDF5_SIGNATURE) <= size:
                f.seek(offset)
                if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else 2 * offset
    except (OSError, ValueError):          # missing, a folder, unreadable, a NUL in the name
        return False
    return False


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
    """[(blob, array)] for the layers of ``net`` found in the HDF5 weights file, shapes checked.

    As Caffe's CopyTrainedLayersFromHDF5: layers not in the net are skipped; a layer may
    lack only the blobs it shares with another layer; float and integer datasets load."""
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: cannot open as HDF5 weights ({e})") from None
    try:
        with f:
            return _read_layers(net, path, f)
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
        # h5py's errors for a damaged file (a truncated or corrupt object, a bad link)
        raise WeightsError(f"{path}: cannot read the HDF5 weights file; it is damaged "
                           f"({type(e).__name__}: {e})") from None


def _read_layers(net, path, f):
    found = []
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
                arrays[j] = _blob_dataset(group[str(j)], f"{path}: /data/{name}/{j}")
            elif (name, j) not in net.shared_blobs:
                raise WeightsError(f"{path}: layer '{name}' has no blob {j} in the file "
                                   "(only blobs shared with another layer may be missing)")
        found.extend(net.check_layer_arrays(target, arrays, path))
    return found


def _blob_dataset(dataset, where):
    """The array of one blob's dataset; Caffe's loader takes float and integer data only."""
    if not isinstance(dataset, h5py.Dataset):
        raise WeightsError(f"{where} is not a dataset of blob values")
    if dataset.dtype.kind not in "fiu":
        raise WeightsError(f"{where} holds {dataset.dtype} values; blob values are floating "
                           "point (or integer) numbers")
    return np.asarray(dataset[()])
