"""Data layers: no bottoms (DataLayer); they fill their tops from Python, from fillers or from files.

Data layers are host-only: they read on the host and write the host side of their
tops; in GPU mode the next layer's request for the device buffer copies it over
(as Caffe's data layers do). Layers that walk through a data set expose ``get_state()`` /
``set_state()`` so a solver snapshot can record where they were.

Data, ImageData and WindowData read ahead on a background thread (jitnet.data.prefetch),
``data_param.prefetch`` batches deep (default 4; 0 reads in forward), and transform what
they read as ``transform_param`` says (jitnet.data.transformer). In a run over several
processes, worker ``worker_index`` of ``worker_count`` reads records i with
i mod worker_count == worker_index (TRAIN phase; ``set_worker``).
"""
import itertools
import logging
import os

import h5py
import numpy as np
from google.protobuf.message import DecodeError

from .. import common
from ..data import DataError
from ..data import db as data_db
from ..data import image as image_io
from ..data.prefetch import Prefetcher, map_decode
from ..data.transformer import DataTransformer, batch_generator, draws
from ..fillers import fill
from ..layer import Layer, register
from ..proto import pb

log = logging.getLogger("jitnet")


def _shape_of(blob_shape):
    return tuple(int(d) for d in blob_shape.dim)


def _workers(layer):
    """How many workers the records are dealt to: worker_count in TRAIN, 1 in TEST (as Caffe's
    DataLayer::Skip, every worker's test net reads every record)."""
    return layer.worker_count if layer.phase == common.TRAIN else 1


class DataLayer(Layer):
    """No bottoms; the tops get their shapes in setup, and keep them (reshape does nothing:
    the user, or the layer itself, reshapes them). Host-only: in GPU mode they still fill
    the host side of their tops, which the blobs copy to the device on demand."""

    exact_bottoms = 0
    min_tops = 1
    host_only = True
    # The multi-process hook: this process reads records i with i mod worker_count ==
    # worker_index (Caffe's DataLayer::Skip). Set with set_worker() before the first forward.
    worker_index, worker_count = 0, 1

    def reshape(self, bottom, top):
        pass

    def set_worker(self, index, count):
        """Make this layer worker ``index`` of ``count`` (records are dealt by index mod count)."""
        if not 0 <= int(index) < int(count):
            raise self.error(f"set_worker: index {index} is not in 0..{int(count) - 1}")
        self.worker_index, self.worker_count = int(index), int(count)


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
    """Batches from arrays given by ``set_input_arrays(data, labels)`` (data N×C×H×W, labels N),
    used as given; or from Datum records (``add_datum_vector``) or images
    (``add_mat_vector``), which go through ``transform_param`` as in Caffe, producing
    samples of memory_data_param's channels × height × width (the size after any crop).

    Worker ``worker_index`` of ``worker_count`` (TRAIN phase) takes the rows i with
    i mod worker_count == worker_index, counted from the position where the run started:
    each forward walks a round of batch_size x worker_count rows (wrapping around), so
    ``get_state()`` is the same on every worker."""

    exact_tops = 2

    def setup(self, bottom, top):
        p = self.param.memory_data_param
        self.batch_size = p.batch_size
        if self.batch_size <= 0:
            raise self.error("memory_data_param.batch_size must be positive")
        self.sample_shape = (p.channels, p.height, p.width)
        try:
            self.transformer = DataTransformer(self.param.transform_param, self.phase, self.dtype)
        except DataError as e:
            raise self.error(str(e)) from None
        top[0].reshape((self.batch_size,) + self.sample_shape)
        top[1].reshape(self.batch_size)
        self.data = self.labels = None
        self.position = 0

    def add_datum_vector(self, datums):
        """Caffe's AddDatumVector: transform the records (raw or encoded) and use them as the data."""
        try:
            images = [data_db.datum_to_image(d, f"datum {i}", self.transformer.color)
                      for i, d in enumerate(datums)]
        except DataError as e:
            raise self.error(f"add_datum_vector: {e}") from None
        self.add_mat_vector(images, [d.label for d in datums], _what="add_datum_vector")

    def add_mat_vector(self, images, labels, _what="add_mat_vector"):
        """Caffe's AddMatVector: images as (H, W, C) uint8 arrays in BGR order (OpenCV's
        cv::Mat; (H, W) for grey), transformed as transform_param says."""
        if len(images) == 0 or len(images) % self.batch_size:
            raise self.error(f"{_what}: {len(images)} samples; give a positive multiple of "
                             f"batch_size ({self.batch_size})")
        if len(labels) != len(images):
            raise self.error(f"{_what}: {len(images)} samples but {len(labels)} labels")
        chw = []
        for image in images:
            image = np.asarray(image)
            if _what == "add_mat_vector":
                image = image[:, :, None] if image.ndim == 2 else image
                image = image.transpose(2, 0, 1)
            chw.append(image)
        out = np.empty((len(chw),) + self.sample_shape, self.dtype)
        batch_draws = draws(common.rng(), len(chw))
        try:
            for i, image in enumerate(chw):
                what = f"sample {i}"
                if self.transformer.output_shape(image.shape, what) != self.sample_shape:
                    raise DataError(f"{_what}: {what} has shape {image.shape} (channels x height "
                                    f"x width), which transforms to {self.transformer.output_shape(image.shape, what)}, "
                                    f"not memory_data_param's {self.sample_shape}")
                self.transformer.transform(image, out[i], batch_draws[i], what)
        except DataError as e:
            raise self.error(str(e)) from None
        self.data, self.labels, self.position = out, np.asarray(labels, self.dtype), 0

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
        workers = _workers(self)
        if workers == 1:
            end = self.position + self.batch_size
            top[0].data[...] = self.data[self.position:end]
            top[1].data[...] = self.labels[self.position:end]
            self.position = end % self.data.shape[0]
            return
        # One round of batch_size x workers rows: this worker takes rows index, index + workers, ...
        # from its own index on; every worker ends the round at the same position.
        rows = self.data.shape[0]
        index = (self.position + self.worker_index + workers * np.arange(self.batch_size)) % rows
        np.take(self.data, index, axis=0, out=top[0].data)
        np.take(self.labels, index, axis=0, out=top[1].data)
        self.position = (self.position + self.batch_size * workers) % rows

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
    pass and the rows of each file are shuffled when it is loaded, by the layer's own
    generator (seeded from jitnet's; its state is part of ``get_state()``).

    Worker ``worker_index`` of ``worker_count`` (TRAIN phase) reads the rows of the
    stream (files in order, rows in order) at i mod worker_count == worker_index: each
    forward walks a round of batch_size x worker_count rows and takes its share, so all
    workers read the same files, draw the same shuffles and end a forward at the same
    position (``get_state()`` is the same on every worker).
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
            # The layer's own generator, seeded from the process-wide one: its state travels
            # in get_state(), so the workers of a multi-process run can share one order.
            self.shuffle_rng = np.random.default_rng(int(common.rng().integers(2**63)))
            self.shuffle_rng.shuffle(self.file_order)
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
            self.shuffle_rng.shuffle(self.rows)
        self.row = 0

    def _advance(self):
        self.row += 1
        if self.row == len(self.rows):
            self.file_index += 1
            if self.file_index == len(self.files):
                self.file_index = 0
                if self.shuffle:
                    self.shuffle_rng.shuffle(self.file_order)
            if len(self.files) > 1 or self.shuffle:
                self._load(self.file_order[self.file_index])
            else:
                self.row = 0

    def forward(self, bottom, top):
        outs = [blob.data for blob in top]
        workers = _workers(self)
        # One round of batch_size x workers rows; row j of the round is this worker's when
        # j mod workers == worker_index, so every worker ends the round at the same position.
        for j in range(self.batch_size * workers):
            if j % workers == self.worker_index or workers == 1:
                r = self.rows[self.row]
                for out, array in zip(outs, self.arrays):
                    out[j // workers] = array[r]
            self._advance()

    def get_state(self):
        state = {"file_order": self.file_order.tolist(), "file_index": int(self.file_index),
                 "rows": self.rows.tolist(), "row": int(self.row)}
        if self.shuffle:
            state["shuffle_rng"] = self.shuffle_rng.bit_generator.state
        return state

    def set_state(self, state):
        if "shuffle_rng" in state:
            probe = np.random.default_rng()
            probe.bit_generator.state = state["shuffle_rng"]      # refuses a bad state first
            self.shuffle_rng = probe
        self.file_order = np.asarray(state["file_order"], dtype=np.int64)
        self.file_index = int(state["file_index"])
        self._load(self.file_order[self.file_index], shuffle_rows=False)
        self.rows = np.asarray(state["rows"], dtype=np.int64)
        self.row = int(state["row"])


# ============================================================================ prefetching layers
def _check_batch_and_source(param, field, source_is):
    if param.batch_size <= 0:
        raise DataError(f"{field}.batch_size must be positive")
    if not param.source:
        raise DataError(f"{field}.source is not set ({source_is})")


def _record_what(reader, position, key):
    return (f"record {position % reader.count} (key {key.decode('utf-8', 'replace')!r}) of "
            f"{reader.backend.upper()} '{reader.path}'")


class PrefetchingDataLayer(DataLayer):
    """Caffe's BasePrefetchingDataLayer: a *source* (a plain object, so that the thread holds
    no reference to the layer) describes the batches as a function of a position,
    ``{"next": stream index, "batch": batches made, "seed": the layer's random seed}``, and a
    jitnet.data.prefetch.Prefetcher reads them ahead ``data_param.prefetch`` deep.
    ``get_state()`` is the position after the last batch forward delivered."""

    def setup(self, bottom, top):
        try:
            self.transformer = DataTransformer(self.param.transform_param, self.phase, self.dtype)
            self.source = self.make_source()
        except DataError as e:
            raise self.error(str(e)) from None
        batch = self.source.batch_size
        top[0].reshape((batch,) + self.source.shape)
        if len(top) > 1:
            top[1].reshape(batch)
        log.info("%s: output data size: %s", self.name, ",".join(map(str, top[0].shape)))
        seed = int(common.rng().integers(2**63))
        self.prefetcher = None
        self._start({"next": self.source.start, "batch": 0, "seed": seed})

    def make_source(self):
        raise NotImplementedError

    def _start(self, state):
        worker = (self.worker_index, self.worker_count) if self.phase == common.TRAIN else (0, 1)

        def batches(state, buffers, source=self.source, worker=worker):
            return source.batches(state, buffers, worker)
        if self.prefetcher is None:
            self.prefetcher = Prefetcher(batches, state, self.param.data_param.prefetch,
                                         name=f"jitnet-prefetch-{self.name}")
        else:
            self.prefetcher.make_batches = batches
            self.prefetcher.restart(state)

    def forward(self, bottom, top):
        try:
            batch = self.prefetcher.next()
        except DataError as e:
            raise self.error(str(e)) from None
        for blob, array in zip(top, batch):
            blob.data[...] = array
        self.prefetcher.recycle(batch)

    def get_state(self):
        return dict(self.prefetcher.state)

    def set_state(self, state):
        self._start({"next": int(state["next"]), "batch": int(state["batch"]),
                     "seed": int(state["seed"])})

    def set_worker(self, index, count):
        super().set_worker(index, count)
        self._start(self.prefetcher.state)

    def close(self):
        """Stop the read-ahead thread."""
        self.prefetcher.close()


class _DatumSource:
    """Batches of Datum records from an LMDB / LevelDB, in key order, wrapping around."""

    def __init__(self, reader, transformer, batch_size, dtype, start):
        self.reader, self.transformer = reader, transformer
        self.batch_size, self.dtype, self.start = batch_size, dtype, start
        position = start
        key, value = next(reader.records(position))
        first = self.image(parse_what(reader, position, key, value), key, position)
        self.in_shape = first.shape
        self.shape = transformer.output_shape(first.shape, _record_what(reader, position, key))

    def image(self, datum, key, position):
        return data_db.datum_to_image(datum, _record_what(self.reader, position, key),
                                      self.transformer.color)

    def check_shape(self, shape, what):
        if not self.transformer.crop and tuple(shape) != self.in_shape:
            raise DataError(f"{what} has shape {'x'.join(map(str, shape))} (channels x height x "
                            f"width), but the first record has {'x'.join(map(str, self.in_shape))}; "
                            "records of different sizes need transform_param.crop_size, or resize "
                            "them when building the database (convert_imageset --resize_height "
                            "--resize_width)")
        if shape[0] != self.in_shape[0]:
            raise DataError(f"{what} has {shape[0]} channels, the first record {self.in_shape[0]}")

    def batches(self, state, buffers, worker):
        rank, workers = worker
        position, number, seed = state["next"], state["batch"], state["seed"]
        records = self.reader.records(position)
        size = self.batch_size
        while True:
            if workers == 1:
                items = [(position + i, key, value)
                         for i, (key, value) in enumerate(itertools.islice(records, size))]
                position += size
            else:
                items = []
                while len(items) < size:
                    key, value = next(records)
                    if position % workers == rank:
                        items.append((position, key, value))
                    position += 1
            data = buffers.get((size,) + self.shape, self.dtype)
            labels = buffers.get((size,), self.dtype)
            self.fill(items, data, labels, lambda: batch_generator(seed, number))
            number += 1
            yield (data, labels), {"next": position, "batch": number, "seed": seed}

    def fill(self, items, data, labels, generator):
        try:
            datums = [pb.Datum.FromString(v) for _, _, v in items]
        except (DecodeError, RuntimeError, ValueError):     # find the record, name it
            datums = [parse_what(self.reader, p, k, v) for p, k, v in items]
        count = int(np.prod(self.in_shape))
        raw = all(not d.encoded and len(d.data) == count and
                  d.channels == self.in_shape[0] and d.height == self.in_shape[1]
                  and d.width == self.in_shape[2] for d in datums)
        if raw:
            images = np.frombuffer(b"".join(d.data for d in datums), np.uint8)
            images = images.reshape((len(datums),) + self.in_shape)
        else:
            def one(i):
                image = self.image(datums[i], items[i][1], items[i][0])
                self.check_shape(image.shape, _record_what(self.reader, items[i][0], items[i][1]))
                return image
            encoded = any(d.encoded for d in datums)
            indices = range(len(datums))
            images = map_decode(one, list(indices)) if encoded else [one(i) for i in indices]
        labels[:] = [d.label for d in datums]
        self.transformer.transform_batch(images, data, lambda: draws(generator(), len(datums)),
                                         lambda i: _record_what(self.reader, items[i][0], items[i][1]))


def parse_what(reader, position, key, value):
    return data_db.parse_datum(value, lambda: _record_what(reader, position, key))


@register("Data")
class Data(PrefetchingDataLayer):
    """Batches of ``caffe.Datum`` records from an LMDB or LevelDB (``data_param``: source,
    backend, batch_size, rand_skip, prefetch), transformed by ``transform_param``.

    Records are read in key order and the cursor wraps around at the end. A record holds
    raw bytes (uint8, C×H×W), ``float_data``, or an encoded image (``encoded: true``;
    PNG, JPEG, ... decoded with Pillow, colour as BGR). The first record sets the shape of
    the data top, (batch_size, C, H, W) after any crop; a second top gets the labels.
    ``rand_skip`` starts at a random record in [0, rand_skip). In a run over N processes,
    worker r reads the records i with i mod N == r (TRAIN phase; Caffe's DataLayer::Skip).
    """

    max_tops = 2

    def make_source(self):
        p = self.param.data_param
        _check_batch_and_source(p, "data_param", "the path of an LMDB or LevelDB")
        if p.scale != 1 or p.mean_file or p.crop_size or p.mirror:
            log.warning("%s: data_param's scale, mean_file, crop_size and mirror are ignored "
                        "(as in Caffe); put them in transform_param", self.name)
        if self.transformer.forced_color:
            log.info("%s: force_color / force_gray apply to encoded records only", self.name)
        reader = data_db.open_reader(p.source, p.backend)
        start = int(common.rng().integers(p.rand_skip)) if p.rand_skip else 0
        return _DatumSource(reader, self.transformer, int(p.batch_size), self.dtype, start)

    def close(self):
        super().close()
        self.source.reader.close()


class _ImageListSource:
    """Batches of images named in a list file, in list order or shuffled every pass."""

    def __init__(self, param, transformer, dtype, start):
        self.lines = image_io.read_image_list(param.source)
        self.list_file, self.root = param.source, param.root_folder
        self.height, self.width, self.color = param.new_height, param.new_width, param.is_color
        self.shuffle, self.batch_size = param.shuffle, int(param.batch_size)
        self.transformer, self.dtype = transformer, dtype
        if start >= len(self.lines):
            raise DataError(f"rand_skip: cannot skip {start} of the {len(self.lines)} images of "
                            f"'{self.list_file}'")
        self.start = start
        self._orders = {}
        self.first_line = self.lines[start]
        first = self.read(self.first_line)
        self.in_shape = first.shape
        self.shape = transformer.output_shape(first.shape, self.what(self.first_line))

    def what(self, line):
        path, _, number = line
        return f"image '{self.root + path}' (line {number} of '{self.list_file}')"

    def order(self, seed, epoch):
        if not self.shuffle:
            return None
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([seed, 1, epoch]).permutation(len(self.lines))}
        return self._orders[epoch]

    def line_at(self, seed, position):
        epoch, index = divmod(position, len(self.lines))
        order = self.order(seed, epoch)
        return self.lines[index if order is None else order[index]]

    def read(self, line):
        try:
            return image_io.read_image(self.root + line[0], self.height, self.width, self.color)
        except DataError as e:
            raise DataError(f"{self.what(line)}: {str(e).split(': ', 1)[-1]}") from None

    def batches(self, state, buffers, worker):
        rank, workers = worker
        position, number, seed = state["next"], state["batch"], state["seed"]
        size = self.batch_size
        while True:
            chosen = []
            while len(chosen) < size:
                if workers == 1 or position % workers == rank:
                    chosen.append(self.line_at(seed, position))
                position += 1
            data = buffers.get((size,) + self.shape, self.dtype)
            labels = buffers.get((size,), self.dtype)

            def one(line):
                image = self.read(line)
                if not self.transformer.crop and image.shape != self.in_shape:
                    raise DataError(f"{self.what(line)} has shape {'x'.join(map(str, image.shape))}"
                                    f" (channels x height x width), but the first image has "
                                    f"{'x'.join(map(str, self.in_shape))}; give new_height and "
                                    "new_width, or a crop_size")
                return image
            images = map_decode(one, chosen)
            labels[:] = [line[1] for line in chosen]
            self.transformer.transform_batch(images, data,
                                             lambda: draws(batch_generator(seed, number), size),
                                             lambda i: self.what(chosen[i]))
            number += 1
            yield (data, labels), {"next": position, "batch": number, "seed": seed}


@register("ImageData")
class ImageData(PrefetchingDataLayer):
    """Batches of images named in a list file (``image_data_param``: source, root_folder,
    new_height / new_width, is_color, shuffle, batch_size, rand_skip), transformed by
    ``transform_param``; tops: data (batch_size, C, H, W) and label (batch_size).

    Each line of the list is "path label" (the label after the last space); an image is
    read from root_folder + path (plain concatenation, as Caffe does: end root_folder with
    a slash), in colour (BGR) unless ``is_color: false``, resized to new_height × new_width
    when both are given (OpenCV's bilinear resize). With ``shuffle`` the order is a new
    permutation every pass, drawn from the layer's seed. A missing or unreadable image is
    an error naming the file and its line, raised by the forward that needs it.
    """

    exact_tops = 2

    def make_source(self):
        p = self.param.image_data_param
        _check_batch_and_source(p, "image_data_param", "a text file of \"path label\" lines")
        if (p.new_height > 0) != (p.new_width > 0):
            raise DataError("image_data_param: give both new_height and new_width, or neither "
                            f"(got {p.new_height} x {p.new_width})")
        start = int(common.rng().integers(p.rand_skip)) if p.rand_skip else 0
        return _ImageListSource(p, self.transformer, self.dtype, start)


def _round(x):
    """C's round(): halves away from zero."""
    return int(np.floor(x + 0.5)) if x >= 0 else -int(np.floor(-x + 0.5))


def read_window_file(path, root_folder, fg_threshold, bg_threshold):
    """Images [(path, channels, height, width)] and the foreground and background windows
    [(image index, label, overlap, x1, y1, x2, y2)] of an R-CNN window file: repeated
    "# index", image path, channels, height, width, number of windows, then one
    "class overlap x1 y1 x2 y2" line per window (Caffe's WindowDataLayer)."""
    tokens = image_io.read_text(path, "the window file").split()
    if not tokens:
        raise DataError(f"the window file '{path}' is empty")
    images, fg, bg = [], [], []
    at = 0

    def take(kind, what):
        nonlocal at
        if at >= len(tokens):
            raise DataError(f"window file '{path}' ends early: expected {what} of image "
                            f"{len(images)}")
        token = tokens[at]
        at += 1
        try:
            return kind(token)
        except ValueError:
            raise DataError(f"window file '{path}': {what} of image {len(images)} should be "
                            f"a number, got {token!r}") from None
    while at < len(tokens):
        if tokens[at] != "#":
            raise DataError(f"window file '{path}': expected '#' before image {len(images)}, "
                            f"got {tokens[at]!r}")
        at += 1
        index = take(int, "the index")
        if index != len(images):
            raise DataError(f"window file '{path}': image indices must count 0, 1, 2, ...; "
                            f"found # {index} where # {len(images)} belongs")
        image_path = root_folder + take(str, "the image path")
        channels, height, width = (take(int, what) for what in ("channels", "height", "width"))
        images.append((image_path, channels, height, width))
        for _ in range(take(int, "the number of windows")):
            label = take(int, "a window's class")
            overlap = take(float, "a window's overlap")
            box = [take(int, "a window coordinate") for _ in range(4)]
            if overlap >= fg_threshold:
                if label <= 0:
                    raise DataError(f"window file '{path}': image {index} has a foreground "
                                    f"window (overlap {overlap}) of class {label}; foreground "
                                    "classes start at 1 (0 is background)")
                fg.append((index, label, overlap, *box))
            elif overlap < bg_threshold:
                bg.append((index, 0, 0.0, *box))
    return images, fg, bg


class _WindowSource:
    """Batches of windows sampled from an R-CNN window file: bg windows, then fg windows."""

    def __init__(self, param, transform_param, transformer, dtype):
        self.images, self.fg, self.bg = read_window_file(
            param.source, param.root_folder, param.fg_threshold, param.bg_threshold)
        self.window_file = param.source
        self.batch_size, self.dtype = int(param.batch_size), dtype
        self.crop = int(transform_param.crop_size)
        if self.crop <= 0:
            raise DataError("WindowData needs transform_param.crop_size > 0 (the warped size)")
        self.mirror = bool(transform_param.mirror)
        self.scale = dtype.type(param.scale)
        self.context_pad, self.square = int(param.context_pad), param.crop_mode == "square"
        if param.crop_mode not in ("warp", "square"):
            raise DataError(f"window_data_param.crop_mode must be warp or square, got '{param.crop_mode}'")
        if self.context_pad * 2 >= self.crop:
            raise DataError(f"window_data_param.context_pad {self.context_pad} leaves nothing of "
                            f"crop_size {self.crop}")
        self.channels = self.images[-1][1]
        if self.channels not in (1, 3):
            raise DataError(f"window file '{self.window_file}': images of {self.channels} channels; "
                            "WindowData reads colour (3) or grey (1) images")
        self.num_fg = int(np.float32(self.batch_size) * np.float32(param.fg_fraction))
        for count, windows, kind in ((self.batch_size - self.num_fg, self.bg, "background"),
                                     (self.num_fg, self.fg, "foreground")):
            if count and not windows:
                raise DataError(f"window file '{self.window_file}' has no {kind} windows, but a "
                                f"batch takes {count} (fg_fraction {param.fg_fraction})")
        self.mean = transformer.mean
        self.mean_values = transformer.mean_values
        if self.mean is not None:
            c, h, w = self.mean.shape
            if c != self.channels or min(h, w) < self.crop:
                raise DataError(f"mean_file '{transformer.mean_file}' has shape {c}x{h}x{w}; "
                                f"WindowData needs {self.channels} channels and at least "
                                f"{self.crop} x {self.crop} (it subtracts the mean's centre)")
            self.mean_off = (w - self.crop) // 2
        if len(self.mean_values) not in (0, 1, self.channels):
            raise DataError(f"{len(self.mean_values)} mean_value entries for {self.channels} channels")
        self.cache = {}
        if param.cache_images:
            for path, *_ in self.images:
                self.cache[path] = self._file(path)
        self.shape = (self.channels, self.crop, self.crop)
        self.start = 0

    def _file(self, path):
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise DataError(f"cannot read image '{path}' (in window file '{self.window_file}'): "
                            f"{e.strerror}") from None

    def load(self, index):
        path = self.images[index][0]
        buffer = self.cache.get(path) or self._file(path)
        return image_io.decode(buffer, self.channels == 3,
                               what=f"image '{path}' (in window file '{self.window_file}')")

    def batches(self, state, buffers, worker):
        number, seed = state["batch"], state["seed"]
        size = self.batch_size
        while True:
            generator = batch_generator(seed, number)
            samples = []
            for windows, count in ((self.bg, size - self.num_fg), (self.fg, self.num_fg)):
                for _ in range(count):
                    window = windows[int(generator.integers(2**32)) % len(windows)]
                    mirror = self.mirror and bool(generator.integers(2**32) % 2)
                    samples.append((window, mirror))
            data = buffers.get((size,) + self.shape, self.dtype)
            labels = buffers.get((size,), self.dtype)
            data[...] = 0
            map_decode(lambda i: self.warp(samples[i][0], samples[i][1], data[i]), list(range(size)))
            labels[:] = [window[1] for window, _ in samples]
            number += 1
            yield (data, labels), {"next": 0, "batch": number, "seed": seed}

    def warp(self, window, mirror, out):
        """Caffe's WindowDataLayer::load_batch for one window: expand by context_pad (and to a
        square), clip to the image, warp with OpenCV's bilinear resize, mirror, place it
        where the clipped part belongs, subtract the mean, scale."""
        image = self.load(window[0])
        _, rows, cols = image.shape
        x1, y1, x2, y2 = window[3:]
        crop, f32 = self.crop, np.float32
        size_w = size_h = crop
        pad_w = pad_h = 0
        if self.context_pad > 0 or self.square:
            context_scale = f32(crop) / f32(crop - 2 * self.context_pad)
            half_h, half_w = f32((y2 - y1 + 1) / 2.0), f32((x2 - x1 + 1) / 2.0)
            center_x, center_y = f32(x1) + half_w, f32(y1) + half_h
            if self.square:
                half_h = half_w = max(half_h, half_w)
            x1 = _round(center_x - half_w * context_scale)
            x2 = _round(center_x + half_w * context_scale)
            y1 = _round(center_y - half_h * context_scale)
            y2 = _round(center_y + half_h * context_scale)
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            scale_x, scale_y = f32(crop) / f32(unclipped_w), f32(crop) / f32(unclipped_h)
            size_w = _round(f32(x2 - x1 + 1) * scale_x)
            size_h = _round(f32(y2 - y1 + 1) * scale_y)
            pad_x1, pad_x2 = _round(f32(pad_x1) * scale_x), _round(f32(pad_x2) * scale_x)
            pad_y1 = _round(f32(pad_y1) * scale_y)
            pad_h = pad_y1
            pad_w = pad_x2 if mirror else pad_x1
            size_h = min(size_h, crop - pad_h)
            size_w = min(size_w, crop - pad_w)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows):
            raise DataError(f"window ({window[3]}, {window[4]}, {window[5]}, {window[6]}) of image "
                            f"'{self.images[window[0]][0]}' lies outside the image ({cols} x {rows})")
        if size_h <= 0 or size_w <= 0:
            return
        patch = image_io.resize(image[:, y1:y2 + 1, x1:x2 + 1], size_h, size_w)
        if mirror:
            patch = patch[:, :, ::-1]
        target = out[:, pad_h:pad_h + size_h, pad_w:pad_w + size_w]
        if self.mean is not None:
            o = self.mean_off
            np.subtract(patch, self.mean[:, o + pad_h:o + pad_h + size_h, o + pad_w:o + pad_w + size_w],
                        out=target)
        elif len(self.mean_values):
            values = np.broadcast_to(self.mean_values, (self.channels,)).reshape(-1, 1, 1)
            np.subtract(patch, values, out=target)
        else:
            target[...] = patch
        if self.scale != 1:
            target *= self.scale


@register("WindowData")
class WindowData(PrefetchingDataLayer):
    """Windows of images for R-CNN fine-tuning, from a window file (``window_data_param``:
    source, root_folder, batch_size, fg_threshold, bg_threshold, fg_fraction, context_pad,
    crop_mode warp | square, cache_images, scale) and ``transform_param`` (crop_size, the
    warped size, required; mirror; mean_file or mean_value).

    Each batch samples, with replacement, batch_size − ⌊batch_size·fg_fraction⌋ background
    windows (overlap < bg_threshold; label 0) and then the foreground ones (overlap >=
    fg_threshold). A window (x1, y1, x2, y2, inclusive pixels) is widened so that after
    warping to crop_size it has context_pad pixels of context on each side (made square
    first with crop_mode square), clipped to the image, warped with OpenCV's bilinear
    resize, mirrored at random, and placed where its clipped part belongs in a zeroed
    crop_size × crop_size patch; then mean (the centre crop_size square of the mean file,
    or mean_value) is subtracted and the result multiplied by window_data_param.scale (Caffe
    reads scale there, not from transform_param). Images are read in colour (BGR).
    """

    exact_tops = 2

    def make_source(self):
        p = self.param.window_data_param
        _check_batch_and_source(p, "window_data_param", "an R-CNN window file")
        if self.param.transform_param.scale != 1:
            log.warning("%s: WindowData ignores transform_param.scale (as Caffe does); its "
                        "scale is window_data_param.scale", self.name)
        return _WindowSource(p, self.param.transform_param, self.transformer, self.dtype)


@register("HDF5Output")
class HDF5Output(Layer):
    """Writes its two bottoms to the HDF5 file ``hdf5_output_param.file_name`` as the datasets
    "data" and "label" (Caffe's names), each row of a bottom a row of its dataset, in the
    4-D num × channels × height × width layout Caffe writes. No tops, no gradient.

    The file is created (emptied) at setup. Every forward appends its rows, so a run of k
    batches leaves k·N rows (Caffe's layer writes the datasets once and fails on the
    second forward).
    """

    exact_bottoms = 2
    exact_tops = 0
    host_only = True
    min_axes = (1, 1)
    no_gradient_bottoms = (0, 1)

    def setup(self, bottom, top):
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            raise self.error("hdf5_output_param.file_name is not set")
        try:
            h5py.File(self.file_name, "w").close()
        except OSError as e:
            raise self.error(f"cannot create the HDF5 file '{self.file_name}': {e}") from None

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom):
            if blob.num_axes > 4:
                raise self.error(f"bottom {i} ('{self.param.bottom[i]}') has {blob.num_axes} axes; "
                                 "HDF5Output writes num x channels x height x width (at most 4)")
        if bottom[0].shape[0] != bottom[1].shape[0]:
            raise self.error(f"the data and label bottoms need the same number of rows: "
                             f"{bottom[0].shape} and {bottom[1].shape}")

    def forward(self, bottom, top):
        try:
            with h5py.File(self.file_name, "a") as f:
                for name, blob in zip(("data", "label"), bottom):
                    rows = blob.data.reshape(tuple(blob.shape) + (1,) * (4 - blob.num_axes))
                    if name not in f:
                        f.create_dataset(name, data=rows, maxshape=(None,) + rows.shape[1:],
                                         chunks=True)
                        continue
                    dataset = f[name]
                    if dataset.shape[1:] != rows.shape[1:]:
                        raise self.error(f"bottom '{name}' rows have shape {rows.shape[1:]}, but "
                                         f"'{self.file_name}' holds rows of {dataset.shape[1:]}")
                    n = dataset.shape[0]
                    dataset.resize(n + rows.shape[0], axis=0)
                    dataset[n:] = rows
        except OSError as e:
            raise self.error(f"cannot write the HDF5 file '{self.file_name}': {e}") from None

    def backward(self, top, propagate_down, bottom):
        pass
