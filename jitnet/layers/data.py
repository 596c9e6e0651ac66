"""Data layers: no bottoms (DataLayer); they fill their tops from Python, from fillers or from files.

Data layers are host-only: they read on the host and write the host side of their
tops; in GPU mode the next layer's request for the device buffer copies it over
(as Caffe's data layers do). Layers that walk through a data set expose ``get_state()`` /
``set_state()`` so a solver snapshot can record where they were.
"""
import os

import h5py
import numpy as np

from .. import common
from ..fillers import fill
from ..layer import Layer, register
from ..proto import pb


def _shape_of(blob_shape):
    return tuple(int(d) for d in blob_shape.dim)


class DataLayer(Layer):
    """No bottoms; the tops get their shapes in setup, and keep them (reshape does nothing:
    the user, or the layer itself, reshapes them). Host-only: in GPU mode they still fill
    the host side of their tops, which the blobs copy to the device on demand."""

    exact_bottoms = 0
    min_tops = 1
    host_only = True

    def reshape(self, bottom, top):
        pass


@register("Input")
class Input(DataLayer):
    """Tops of the shapes in ``input_param.shape`` (one per top, one for all, or none: the user
    reshapes them); filled by the user."""

    def setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error(f"input_param has {len(shapes)} shapes for {len(top)} tops; "
                             "give one shape, one per top, or none")
        for i, blob in enumerate(top if shapes else []):
            blob.reshape(_shape_of(shapes[0] if len(shapes) == 1 else shapes[i]))

    def forward(self, bottom, top):
        pass


@register("DummyData")
class DummyData(DataLayer):
    """Tops filled by ``data_filler`` (constant 0 by default); non-constant fillers refill every forward."""

    def setup(self, bottom, top):
        p = self.param.dummy_data_param
        n = len(top)
        counts = "one" if n == 1 else f"one (for all tops) or {n} (one per top)"
        if p.shape:
            if p.num or p.channels or p.height or p.width:
                raise self.error("give either shape or num/channels/height/width, not both")
            if len(p.shape) not in (1, n):
                raise self.error(f"{len(p.shape)} shape entries for {n} top(s); give {counts}")
            shapes = [_shape_of(p.shape[0 if len(p.shape) == 1 else i]) for i in range(n)]
        else:
            legacy = [p.num, p.channels, p.height, p.width]
            if not any(legacy):
                raise self.error("dummy_data_param needs the tops' shapes: add shape { dim: ... }")
            if any(len(v) not in (1, n) for v in legacy):
                raise self.error(f"the legacy num, channels, height and width need {counts} "
                                 "value(s) each; or use shape { dim: ... }")
            shapes = [tuple(int(v[0 if len(v) == 1 else i]) for v in legacy) for i in range(n)]
        if len(p.data_filler) not in (0, 1, n):
            raise self.error(f"{len(p.data_filler)} data_filler entries for {n} top(s); give none "
                             f"(constant 0) or {counts}")
        fillers = list(p.data_filler) or [pb.FillerParameter(type="constant", value=0)]
        self.fillers = [fillers[0 if len(fillers) == 1 else i] for i in range(n)]
        for blob, shape, filler in zip(top, shapes, self.fillers):
            blob.reshape(shape)
            fill(filler, blob, "data_filler")
        self.refill = [f.type != "constant" for f in self.fillers]

    def forward(self, bottom, top):
        for blob, filler, refill in zip(top, self.fillers, self.refill):
            if refill:
                fill(filler, blob, "data_filler")


@register("MemoryData")
class MemoryData(DataLayer):
    """Batches from arrays given by ``set_input_arrays(data, labels)`` (data N×C×H×W, labels N)."""

    exact_tops = 2

    def setup(self, bottom, top):
        p = self.param.memory_data_param
        self.batch_size = p.batch_size
        if self.batch_size <= 0:
            raise self.error("memory_data_param.batch_size must be positive")
        self.sample_shape = (p.channels, p.height, p.width)
        top[0].reshape((self.batch_size,) + self.sample_shape)
        top[1].reshape(self.batch_size)
        self.data = self.labels = None
        self.position = 0

    def reset(self, data, labels):
        data = np.ascontiguousarray(data, dtype=self.dtype)
        labels = np.ascontiguousarray(labels, dtype=self.dtype).reshape(-1)
        if data.ndim != 4 or data.shape[1:] != self.sample_shape:
            raise self.error(f"set_input_arrays: data must have shape (N, {', '.join(map(str, self.sample_shape))}), "
                             f"got {data.shape}")
        if labels.shape[0] != data.shape[0]:
            raise self.error(f"set_input_arrays: {data.shape[0]} data rows but {labels.shape[0]} labels")
        if data.shape[0] % self.batch_size:
            raise self.error(f"set_input_arrays: the number of rows ({data.shape[0]}) must be a "
                             f"multiple of batch_size ({self.batch_size})")
        self.data, self.labels, self.position = data, labels, 0

    def forward(self, bottom, top):
        if self.data is None:
            raise self.error("no data: call net.set_input_arrays(data, labels) first")
        end = self.position + self.batch_size
        top[0].data[...] = self.data[self.position:end]
        top[1].data[...] = self.labels[self.position:end]
        self.position = end % self.data.shape[0]

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = int(state["position"])


@register("HDF5Data")
class HDF5Data(DataLayer):
    """Batches of rows from the .h5 files listed in ``hdf5_data_param.source``.

    Each file holds one dataset per top, named like the top, with the same number
    of rows. Paths in the list are read as written (relative to the working
    directory, as in Caffe). With ``shuffle``, the file order is shuffled every
    pass and the rows of each file are shuffled when it is loaded.
    """

    def setup(self, bottom, top):
        p = self.param.hdf5_data_param
        if self.param.HasField("transform_param"):
            raise self.error("HDF5Data does not transform data (as in Caffe): remove transform_param "
                             "and store the data already transformed")
        if p.batch_size <= 0:
            raise self.error("hdf5_data_param.batch_size must be positive")
        self.batch_size, self.shuffle = p.batch_size, p.shuffle
        if not p.source:
            raise self.error("hdf5_data_param.source is not set (a text file listing .h5 files)")
        try:
            with open(p.source, encoding="utf-8") as f:
                self.files = f.read().split()       # as Caffe: whitespace-separated paths
        except OSError as e:
            raise self.error(f"cannot read the source list '{p.source}': {e.strerror} "
                             f"(relative paths are read from the working directory, "
                             f"{os.getcwd()})") from None
        except UnicodeDecodeError:
            raise self.error(f"the source '{p.source}' is not a text file; source names a text "
                             "file listing the .h5 files, one per line, not an .h5 file itself") from None
        if not self.files:
            raise self.error(f"the source list '{p.source}' names no files")
        self.top_names = list(self.param.top)
        self.file_order = np.arange(len(self.files))
        if self.shuffle:
            common.rng().shuffle(self.file_order)
        self.file_index = 0
        self._load(self.file_order[0])
        for blob, array in zip(top, self.arrays):
            blob.reshape((self.batch_size,) + array.shape[1:])

    def _load(self, file_number, shuffle_rows=True):
        path = self.files[file_number]
        if not os.path.exists(path):
            raise self.error(f"HDF5 file '{path}' (listed in '{self.param.hdf5_data_param.source}') "
                             f"does not exist (relative paths are read from the working directory, "
                             f"{os.getcwd()})")
        try:
            f = h5py.File(path, "r")
        except (OSError, ValueError) as e:
            raise self.error(f"cannot open '{path}' (listed in '{self.param.hdf5_data_param.source}') "
                             f"as HDF5: {e}") from None
        try:
            with f:
                self._read_arrays(f, path)
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as e:
            # h5py's errors for a damaged file (a corrupt object header, a bad local heap)
            raise self.error(f"cannot read HDF5 file '{path}' (listed in "
                             f"'{self.param.hdf5_data_param.source}'); it is damaged "
                             f"({type(e).__name__}: {e})") from None
        self._check_rows(path, shuffle_rows)

    def _read_arrays(self, f, path):
        """The numeric datasets named like the tops, as float64 arrays."""
        missing = [name for name in self.top_names if name not in f]
        if missing:
            raise self.error(f"HDF5 file '{path}' has no dataset {missing[0]!r} "
                             f"(it has: {', '.join(f.keys())})")
        self.arrays = []
        for name in self.top_names:
            dataset = f[name]
            if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "biuf":
                raise self.error(f"HDF5 file '{path}': '{name}' must be a numeric dataset, "
                                 f"got {dataset}")
            if dataset.ndim == 0:
                raise self.error(f"HDF5 file '{path}': dataset '{name}' is a scalar; it needs "
                                 "one row per sample")
            self.arrays.append(np.asarray(dataset, dtype=np.float64))

    def _check_rows(self, path, shuffle_rows):
        rows = {a.shape[0] for a in self.arrays}
        if len(rows) != 1 or 0 in rows:
            raise self.error(f"HDF5 file '{path}': datasets {self.top_names} need the same, "
                             f"non-zero number of rows, got {[a.shape[0] for a in self.arrays]}")
        shapes = getattr(self, "row_shapes", None)
        if shapes is None:
            self.row_shapes = [a.shape[1:] for a in self.arrays]
        else:
            for name, want, array in zip(self.top_names, shapes, self.arrays):
                if array.shape[1:] != want:
                    raise self.error(f"HDF5 file '{path}': dataset '{name}' has rows of shape "
                                     f"{array.shape[1:]}, but the first file's are {want}")
        self.rows = np.arange(rows.pop())
        if self.shuffle and shuffle_rows:
            common.rng().shuffle(self.rows)
        self.row = 0

    def _advance(self):
        self.row += 1
        if self.row == len(self.rows):
            self.file_index += 1
            if self.file_index == len(self.files):
                self.file_index = 0
                if self.shuffle:
                    common.rng().shuffle(self.file_order)
            if len(self.files) > 1 or self.shuffle:
                self._load(self.file_order[self.file_index])
            else:
                self.row = 0

    def forward(self, bottom, top):
        outs = [blob.data for blob in top]
        for b in range(self.batch_size):
            r = self.rows[self.row]
            for out, array in zip(outs, self.arrays):
                out[b] = array[r]
            self._advance()

    def get_state(self):
        return {"file_order": self.file_order.tolist(), "file_index": int(self.file_index),
                "rows": self.rows.tolist(), "row": int(self.row)}

    def set_state(self, state):
        self.file_order = np.asarray(state["file_order"], dtype=np.int64)
        self.file_index = int(state["file_index"])
        self._load(self.file_order[self.file_index], shuffle_rows=False)
        self.rows = np.asarray(state["rows"], dtype=np.int64)
        self.row = int(state["row"])
