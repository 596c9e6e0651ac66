"""LMDB and LevelDB databases of ``caffe.Datum`` records, as Caffe's ``convert_imageset``
writes them and its Data layer reads them.

A database maps keys to serialized Datum records and is read in key order (both
backends keep their keys sorted). Caffe's LMDB is a directory holding ``data.mdb`` and
``lock.mdb``; its LevelDB a directory of ``.ldb``/``.log`` files with ``CURRENT`` and
``MANIFEST`` files. LMDB goes through the ``lmdb`` package (a dependency of jitnet);
LevelDB through ``plyvel``, an optional extra (``pip install 'jitnet[leveldb]'``).

* :func:`open_reader` / :func:`open_writer` - a database for reading (record count,
  records in key order from any position, wrapping around) or for writing (a new
  database; commits every 1,000 records as Caffe's tools do);
* :func:`parse_datum`, :func:`datum_to_image`, :func:`image_to_datum` - records and
  (C, H, W) arrays.
"""
import os
import threading
import weakref

import numpy as np
from google.protobuf.message import DecodeError

from ..proto import pb
from . import DataError, image as image_io

BACKENDS = ("lmdb", "leveldb")
COMMIT_EVERY = 1000
INITIAL_MAP_SIZE = 1 << 28     # bytes; doubled whenever a commit does not fit


def backend_name(backend):
    """'lmdb' or 'leveldb' from a DataParameter.DB value or a name (any case)."""
    if isinstance(backend, str):
        name = backend.lower()
        if name not in BACKENDS:
            raise DataError(f"unknown database backend '{backend}'; use lmdb or leveldb")
        return name
    return "lmdb" if backend == pb.DataParameter.LMDB else "leveldb"


def _looks_like(path):
    """'lmdb', 'leveldb' or None: what the directory ``path`` seems to hold."""
    if os.path.isfile(os.path.join(path, "data.mdb")):
        return "lmdb"
    if os.path.isfile(os.path.join(path, "CURRENT")):
        return "leveldb"
    return None


def _check_directory(path, backend):
    if not os.path.exists(path):
        raise DataError(f"{backend.upper()} database '{path}' does not exist{image_io.where_hint(path)}")
    if not os.path.isdir(path):
        raise DataError(f"'{path}' is a file, not a {backend.upper()} database: "
                        f"{'an LMDB is a directory holding data.mdb' if backend == 'lmdb' else 'a LevelDB is a directory'}"
                        " (as convert_imageset makes it)")
    seems = _looks_like(path)
    if seems is not None and seems != backend:
        raise DataError(f"'{path}' is a {seems.upper()} database, but backend {backend.upper()} was "
                        f"asked for: set backend: {seems.upper()} (data_param) or --backend {seems}")
    if seems is None:
        raise DataError(f"'{path}' is not a {backend.upper()} database: the directory has no "
                        f"{'data.mdb' if backend == 'lmdb' else 'CURRENT file'}")


_LMDB_ENVS = {}          # (device, inode) of data.mdb -> [Environment, users]: lmdb opens an environment once per process
_LMDB_LOCK = threading.Lock()


def _release_lmdb(key, env):
    with _LMDB_LOCK:
        entry = _LMDB_ENVS.get(key)
        if entry is not None and entry[0] is env:
            entry[1] -= 1
            if entry[1] == 0:
                del _LMDB_ENVS[key]
                env.close()


class LMDBReader:
    """An LMDB opened read-only (no lock file written, so read-only folders work). Readers of
    the same database (a train and a test net on one LMDB) share its environment."""

    backend = "lmdb"

    def __init__(self, path):
        import lmdb
        _check_directory(path, "lmdb")
        self.path = path
        info = os.stat(os.path.join(path, "data.mdb"))
        self.key = (info.st_dev, info.st_ino)      # a database made anew is another file
        with _LMDB_LOCK:
            entry = _LMDB_ENVS.get(self.key)
            if entry is None:
                try:
                    env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=512)
                except lmdb.Error as e:
                    raise DataError(f"'{path}' is not a readable LMDB database: {e}") from None
                entry = _LMDB_ENVS[self.key] = [env, 0]
            entry[1] += 1
        self.env = entry[0]
        self._release = weakref.finalize(self, _release_lmdb, self.key, self.env)
        self.count = int(self.env.stat()["entries"])

    def records(self, start=0):
        """(key, value) pairs in key order from record ``start`` (mod the count), wrapping
        around at the end, forever. Each call has its own read transaction."""
        with self.env.begin() as txn:
            cursor = txn.cursor()
            cursor.first()
            for _ in range(start % self.count):
                cursor.next()
            while True:
                yield cursor.key(), cursor.value()
                if not cursor.next():
                    cursor.first()

    def close(self):
        self._release()


def _plyvel(what):
    try:
        import plyvel
    except ImportError:
        raise DataError(f"{what} needs the plyvel package, which is an optional extra of jitnet: "
                        "pip install 'jitnet[leveldb]' (or convert the database to LMDB)") from None
    return plyvel


class LevelDBReader:
    """A LevelDB opened through plyvel (the optional extra ``leveldb``)."""

    backend = "leveldb"

    def __init__(self, path):
        plyvel = _plyvel(f"LevelDB database '{path}'")
        _check_directory(path, "leveldb")
        self.path = path
        try:
            self.db = plyvel.DB(path, create_if_missing=False, max_open_files=100)
        except (plyvel.Error, OSError) as e:
            raise DataError(f"'{path}' is not a readable LevelDB database: {e}") from None
        self.count = sum(1 for _ in self.db.iterator(include_value=False))

    def records(self, start=0):
        skip = start % self.count
        while True:
            with self.db.iterator() as it:
                for key, value in it:
                    if skip:
                        skip -= 1
                        continue
                    yield key, value

    def close(self):
        self.db.close()


def open_reader(path, backend):
    """A reader of the database at ``path``; DataError naming it when it is missing, is not
    a database of that backend, or holds no records."""
    name = backend_name(backend)
    reader = LMDBReader(path) if name == "lmdb" else LevelDBReader(path)
    if reader.count == 0:
        reader.close()
        raise DataError(f"{name.upper()} database '{path}' is empty (no records)")
    return reader


class LMDBWriter:
    """A new LMDB (Caffe's ``mkdir`` refuses an existing path; so does this). The map grows
    as needed."""

    def __init__(self, path):
        import lmdb
        self.lmdb, self.path = lmdb, path
        if os.path.exists(path):
            raise DataError(f"'{path}' already exists; convert_imageset writes a new database "
                            "(remove it or choose another name)")
        self.map_size = INITIAL_MAP_SIZE
        self.env = lmdb.open(path, map_size=self.map_size, subdir=True, lock=True)
        self.pending = []

    def put(self, key, value):
        self.pending.append((key, value))
        if len(self.pending) >= COMMIT_EVERY:
            self.commit()

    def commit(self):
        while self.pending:
            try:
                with self.env.begin(write=True) as txn:
                    for key, value in self.pending:
                        txn.put(key, value)
                self.pending = []
            except self.lmdb.MapFullError:
                self.map_size *= 2
                self.env.set_mapsize(self.map_size)

    def close(self):
        self.commit()
        self.env.close()


class LevelDBWriter:
    def __init__(self, path):
        plyvel = _plyvel(f"writing the LevelDB database '{path}'")
        if os.path.exists(path):
            raise DataError(f"'{path}' already exists; convert_imageset writes a new database "
                            "(remove it or choose another name)")
        self.path = path
        self.db = plyvel.DB(path, create_if_missing=True, error_if_exists=True,
                            write_buffer_size=268435456, max_open_files=100)
        self.batch = self.db.write_batch()
        self.pending = 0

    def put(self, key, value):
        self.batch.put(key, value)
        self.pending += 1
        if self.pending >= COMMIT_EVERY:
            self.commit()

    def commit(self):
        self.batch.write()
        self.batch = self.db.write_batch()
        self.pending = 0

    def close(self):
        self.commit()
        self.db.close()


def open_writer(path, backend):
    """A writer of a new database at ``path`` (``put(key, value)``, ``close()``)."""
    return LMDBWriter(path) if backend_name(backend) == "lmdb" else LevelDBWriter(path)


# ------------------------------------------------------------------------------ Datum records
def parse_datum(value, what):
    """A serialized record -> caffe.Datum; DataError naming ``what`` (a string, or a function
    giving it, called only for the message) when it does not parse."""
    datum = pb.Datum()
    try:
        datum.ParseFromString(value)
    except (DecodeError, RuntimeError, ValueError) as e:
        what = what() if callable(what) else what
        raise DataError(f"{what} is not a caffe.Datum ({len(value)} bytes that do not parse: "
                        f"{e})") from None
    return datum


def datum_to_image(datum, what, color=None):
    """A Datum's pixels as a (C, H, W) array: uint8 for raw bytes and decoded images, float32
    for ``float_data``. ``color`` (encoded records only): None native, True colour, False grey."""
    if datum.encoded:
        return image_io.decode(datum.data, color, what=what)
    c, h, w = datum.channels, datum.height, datum.width
    if c <= 0 or h <= 0 or w <= 0:
        raise DataError(f"{what}: a raw Datum needs positive channels, height and width, got "
                        f"{c} x {h} x {w}")
    size = c * h * w
    if datum.data:
        if len(datum.data) != size:
            raise DataError(f"{what}: {len(datum.data)} bytes of data for channels x height x "
                            f"width = {c} x {h} x {w} = {size}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w)
    if len(datum.float_data) != size:
        raise DataError(f"{what}: {len(datum.float_data)} float_data values for channels x "
                        f"height x width = {c} x {h} x {w} = {size}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(c, h, w)


def image_to_datum(image, label, encoded=None):
    """A raw Datum of a (C, H, W) uint8 image (CHW bytes, Caffe's CVMatToDatum), or, with
    ``encoded`` bytes, an encoded Datum (data and label only, as Caffe writes them)."""
    datum = pb.Datum(label=int(label))
    if encoded is not None:
        datum.data = encoded
        datum.encoded = True
        return datum
    datum.channels, datum.height, datum.width = (int(d) for d in image.shape)
    datum.data = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    return datum
