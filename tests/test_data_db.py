"""LMDB and LevelDB databases of Datum records (jitnet.data.db): reading in key order with
wrap-around, writing, and the errors for paths that are not databases."""
import builtins

import numpy as np
import pytest

from jitnet.data import DataError
from jitnet.data import db as data_db
from jitnet.proto import pb

def _leveldb_or_skip(backend):
    if backend == "leveldb":
        pytest.importorskip("plyvel", reason="plyvel (the leveldb extra) is not installed")


def make_db(path, records, backend="lmdb"):
    """Write [(key, bytes)] records."""
    writer = data_db.open_writer(str(path), backend)
    for key, value in records:
        writer.put(key, value)
    writer.close()
    return str(path)


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_records_come_in_key_order_from_any_position_and_wrap(tmp_path, backend):
    _leveldb_or_skip(backend)
    keys = [f"{i:08d}_k".encode() for i in range(5)]
    path = make_db(tmp_path / "db", [(k, b"v" + k) for k in reversed(keys)], backend)
    reader = data_db.open_reader(path, backend)
    assert reader.count == 5
    it = reader.records(3)
    got = [next(it)[0] for _ in range(7)]
    assert got == keys[3:] + keys + keys[:0]
    assert [next(reader.records(0))[1]] == [b"v" + keys[0]]
    assert next(reader.records(12))[0] == keys[2]          # positions wrap too
    reader.close()


def test_writer_commits_in_chunks_and_grows_the_map(tmp_path, monkeypatch):
    monkeypatch.setattr(data_db, "COMMIT_EVERY", 3)
    monkeypatch.setattr(data_db, "INITIAL_MAP_SIZE", 1 << 16)
    big = bytes(30_000)
    path = make_db(tmp_path / "db", [(f"{i:03d}".encode(), big) for i in range(100)])
    reader = data_db.open_reader(path, "lmdb")               # 3 MB > the first 64 KiB map
    assert reader.count == 100
    assert next(reader.records(99)) == (b"099", big)
    reader.close()


def test_two_readers_of_one_lmdb_share_it(tmp_path):
    """A train and a test net on the same LMDB (lmdb opens an environment once per process)."""
    path = make_db(tmp_path / "db", [(b"a", b"1"), (b"b", b"2")])
    first, second = data_db.open_reader(path, "lmdb"), data_db.open_reader(path, "lmdb")
    first.close()
    assert next(second.records(1)) == (b"b", b"2")
    second.close()


def test_missing_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"LMDB database '.*nope' does not exist"):
        data_db.open_reader(str(tmp_path / "nope"), "lmdb")
    with pytest.raises(DataError, match="relative paths are read from the working directory"):
        data_db.open_reader("relative/nope", pb.DataParameter.LMDB)


def test_a_file_or_a_plain_folder_is_not_an_lmdb(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match=r"'.*file' is a file, not a LMDB database"):
        data_db.open_reader(str(tmp_path / "file"), "lmdb")
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"'.*folder' is not a LMDB database: the directory has no data.mdb"):
        data_db.open_reader(str(tmp_path / "folder"), "lmdb")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "data.mdb").write_bytes(b"garbage" * 2000)
    with pytest.raises(DataError, match=r"'.*bad' is not a readable LMDB database"):
        data_db.open_reader(str(tmp_path / "bad"), "lmdb")


def test_the_wrong_backend_is_named(tmp_path):
    pytest.importorskip("plyvel")
    lmdb_path = make_db(tmp_path / "l", [(b"a", b"1")])
    with pytest.raises(DataError, match="is a LMDB database, but backend LEVELDB.*backend: LMDB"):
        data_db.open_reader(lmdb_path, pb.DataParameter.LEVELDB)
    level_path = make_db(tmp_path / "v", [(b"a", b"1")], "leveldb")
    with pytest.raises(DataError, match="is a LEVELDB database, but backend LMDB.*backend: LEVELDB"):
        data_db.open_reader(level_path, "lmdb")


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_empty_database_is_an_error(tmp_path, backend):
    _leveldb_or_skip(backend)
    path = make_db(tmp_path / "empty", [], backend)
    with pytest.raises(DataError, match=rf"{backend.upper()} database '.*empty' is empty"):
        data_db.open_reader(path, backend)


def test_existing_output_is_refused(tmp_path):
    make_db(tmp_path / "db", [(b"a", b"1")])
    with pytest.raises(DataError, match="already exists"):
        data_db.open_writer(str(tmp_path / "db"), "lmdb")


def test_leveldb_without_plyvel_says_which_extra(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_plyvel(name, *args, **kwargs):
        if name == "plyvel":
            raise ImportError("No module named 'plyvel'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_plyvel)
    with pytest.raises(DataError, match=r"pip install 'jitnet\[leveldb\]'"):
        data_db.open_reader(str(tmp_path), "leveldb")


def test_datum_round_trip_and_bad_records():
    image = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = data_db.parse_datum(data_db.image_to_datum(image, 5).SerializeToString(), "r")
    assert datum.label == 5
    np.testing.assert_array_equal(data_db.datum_to_image(datum, "r"), image)
    floats = pb.Datum(channels=1, height=1, width=2, float_data=[0.5, -1.0])
    np.testing.assert_array_equal(data_db.datum_to_image(floats, "r"), [[[0.5, -1.0]]])
    with pytest.raises(DataError, match="record 4 .* is not a caffe.Datum"):
        data_db.parse_datum(b"\xff\xff\xff\xff", "record 4 (key 'x')")
    with pytest.raises(DataError, match="r: 23 bytes of data for channels x height x width = 2 x 3 x 4"):
        data_db.datum_to_image(pb.Datum(channels=2, height=3, width=4, data=bytes(23)), "r")
    with pytest.raises(DataError, match="positive channels"):
        data_db.datum_to_image(pb.Datum(data=b"12"), "r")
