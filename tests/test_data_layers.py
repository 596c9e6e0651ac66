"""The data layers that read from disk (Data, ImageData, WindowData), HDF5Output and MemoryData's
transformed input, beyond the table rows in layer_cases.py: random crops and mirrors in
TRAIN, exact resume from a snapshot while a thread reads ahead, dealing records to
workers, and errors raised in the training thread naming the file."""
import gc
import io
import json
import threading
import time

import h5py
import numpy as np
import pytest
from PIL import Image

import jitnet
from jitnet import Blob
from jitnet.data import db as data_db
from jitnet.layer import create_layer
from jitnet.proto import pb

import reference as ref


# ------------------------------------------------------------------------------------- helpers
def png(image, fmt="PNG"):
    """Encoded bytes of a (C, H, W) uint8 image (C 1 grey or 3 BGR), written with Pillow."""
    pil = (Image.fromarray(image[0], "L") if image.shape[0] == 1
           else Image.fromarray(np.ascontiguousarray(image[::-1].transpose(1, 2, 0)), "RGB"))
    out = io.BytesIO()
    pil.save(out, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def write_db(path, images, labels=None, kind="raw", backend="lmdb", bad=()):
    """A database of Datum records, keys in order; records whose index is in ``bad`` are garbage."""
    writer = data_db.open_writer(str(path), backend)
    for i, image in enumerate(images):
        label = i if labels is None else labels[i]
        if i in bad:
            value = b"\xff\xfe not a datum"
        elif kind == "raw":
            value = data_db.image_to_datum(image, label).SerializeToString()
        elif kind == "float":
            c, h, w = image.shape
            value = pb.Datum(channels=c, height=h, width=w, label=label,
                             float_data=image.ravel().tolist()).SerializeToString()
        else:
            value = pb.Datum(label=label, encoded=True,
                             data=png(image, "JPEG" if kind == "jpg" else "PNG")).SerializeToString()
        writer.put(f"{i:08d}_img{i}.png".encode(), value)
    writer.close()
    return str(path)


def images(n, shape=(3, 5, 6), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, shape).astype(np.uint8) for _ in range(n)]


def data_param(source, batch, backend="lmdb", tops=("data", "label"), name="data", **transform):
    lp = pb.LayerParameter(name=name, type="Data", top=list(tops))
    lp.data_param.source, lp.data_param.batch_size = source, batch
    lp.data_param.backend = pb.DataParameter.LMDB if backend == "lmdb" else pb.DataParameter.LEVELDB
    for key, value in transform.items():
        if key == "mean_value":
            lp.transform_param.mean_value.extend(value)
        elif key in ("prefetch", "rand_skip"):
            setattr(lp.data_param, key, value)
        else:
            setattr(lp.transform_param, key, value)
    return lp


def build(lp, phase=jitnet.TRAIN, seed=0, dtype=np.float32):
    jitnet.set_random_seed(seed)
    top = [Blob(dtype=dtype) for _ in lp.top]
    layer = create_layer(lp, phase)
    layer.setup_layer([], top)
    return layer, top


def batches(layer, top, n):
    out = []
    for _ in range(n):
        layer.run_forward([], top)
        out.append([blob.data.copy() for blob in top])
    return out


def prefetch_threads():
    return sum(t.name.startswith("jitnet-prefetch") for t in threading.enumerate())


# ------------------------------------------------------------------------------------- Data
def test_train_crops_and_mirrors_follow_caffe_and_the_documented_draws(tmp_path):
    """Every item is Caffe's transform of its record with the offsets and mirror coin drawn
    from batch_generator(seed, k) (three 32-bit draws per image, Rand(n) = draw mod n)."""
    imgs = images(5)
    path = write_db(tmp_path / "db", imgs)
    lp = data_param(path, 3, crop_size=3, mirror=True, mean_value=[10.0, 20.0, 30.0], scale=0.5)
    layer, top = build(lp)
    seed = layer.get_state()["seed"]
    got = batches(layer, top, 4)
    for k, (data, labels) in enumerate(got):
        d = np.random.default_rng([seed, k]).integers(0, 2**32, size=(3, 3), dtype=np.uint64)
        for i in range(3):
            record = (3 * k + i) % 5
            assert labels[i] == record
            h0, w0, coin = ref.caffe_crop_offsets(5, 6, 3, True, d[i])
            want = ref.caffe_transform(imgs[record], 3, h0, w0, coin == 1, None, [10, 20, 30], 0.5)
            np.testing.assert_allclose(data[i], want, rtol=1e-6)
    offsets = {(int(x[1]) % 3, int(x[2]) % 4) for k in range(4)
               for x in np.random.default_rng([seed, k]).integers(0, 2**32, (3, 3), dtype=np.uint64)}
    assert len(offsets) > 1                      # the crops do move
    layer.close()


def test_a_fixed_seed_repeats_the_crops_and_another_seed_changes_them(tmp_path):
    path = write_db(tmp_path / "db", images(4))
    lp = data_param(path, 4, crop_size=2, mirror=True)
    runs = []
    for seed in (5, 5, 6):
        layer, top = build(lp, seed=seed)
        runs.append(batches(layer, top, 3))
        layer.close()
    for a, b in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(a[0], b[0])
    assert any(not np.array_equal(a[0], c[0]) for a, c in zip(runs[0], runs[2]))


@pytest.mark.parametrize("depth", [0, 1, 4])
def test_resume_reads_what_the_uninterrupted_run_reads(tmp_path, depth):
    """The position recorded is after the batch *delivered*, not what the thread read ahead."""
    path = write_db(tmp_path / "db", images(7))
    lp = data_param(path, 3, crop_size=4, mirror=True, prefetch=depth)
    whole, top = build(lp, seed=1)
    expected = batches(whole, top, 6)
    whole.close()
    first, top = build(lp, seed=1)
    batches(first, top, 2)
    time.sleep(0.05)                               # let the thread run ahead
    state = json.loads(json.dumps(first.get_state()))
    assert state["next"] == 6 and state["batch"] == 2
    first.close()
    resumed, top = build(lp, seed=99)               # another seed: set_state restores the layer's
    resumed.set_state(state)
    for want, got in zip(expected[2:], batches(resumed, top, 4)):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    resumed.close()


def test_prefetch_depth_does_not_change_the_batches(tmp_path):
    path = write_db(tmp_path / "db", images(5), kind="png")
    results = []
    for depth in (0, 1, 4):
        layer, top = build(data_param(path, 2, crop_size=3, mirror=True, prefetch=depth), seed=3)
        results.append(batches(layer, top, 4))
        layer.close()
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a[0], b[0])


def test_workers_get_the_records_of_their_index_mod_n(tmp_path):
    path = write_db(tmp_path / "db", images(7, shape=(1, 2, 2)))
    seen = {}
    for rank in (0, 1):
        layer, top = build(data_param(path, 2))
        layer.set_worker(rank, 2)
        seen[rank] = np.concatenate([b[1] for b in batches(layer, top, 4)]).tolist()
        layer.close()
    # stream positions rank, rank + 2, ... over records 0..6 wrapping around
    assert seen[0] == [s % 7 for s in range(0, 16, 2)]
    assert seen[1] == [s % 7 for s in range(1, 16, 2)]
    test_layer, top = build(data_param(path, 3), phase=jitnet.TEST)
    test_layer.set_worker(1, 2)                        # the TEST phase reads everything (Caffe)
    assert batches(test_layer, top, 1)[0][1].tolist() == [0, 1, 2]
    with pytest.raises(jitnet.LayerError, match="set_worker"):
        test_layer.set_worker(2, 2)
    test_layer.close()


def test_rand_skip_starts_at_a_random_record_below_it(tmp_path):
    path = write_db(tmp_path / "db", images(6, shape=(1, 1, 1)))
    starts = set()
    for seed in range(30):
        layer, top = build(data_param(path, 1, rand_skip=3), seed=seed)
        starts.add(int(batches(layer, top, 1)[0][1][0]))
        layer.close()
    assert starts == {0, 1, 2}


@pytest.mark.parametrize("kind", ["raw", "float", "png"])
def test_record_kinds_and_one_top(tmp_path, kind):
    imgs = [im.astype(np.float32) + 0.5 if kind == "float" else im for im in images(3, (1, 2, 3))]
    path = write_db(tmp_path / "db", imgs, kind=kind)
    layer, top = build(data_param(path, 3, tops=("data",), scale=2.0), phase=jitnet.TEST,
                       dtype=np.float64)
    (data,) = batches(layer, top, 1)[0]
    np.testing.assert_array_equal(data, 2.0 * np.stack(imgs).astype(np.float64))
    layer.close()


def test_jpeg_records_and_force_gray(tmp_path):
    smooth = [np.broadcast_to((np.arange(8, dtype=np.uint8) * 30)[None, None], (3, 8, 8)).copy()]
    path = write_db(tmp_path / "db", smooth, kind="jpg")
    layer, top = build(data_param(path, 1), phase=jitnet.TEST)
    assert np.abs(batches(layer, top, 1)[0][0][0] - smooth[0]).max() <= 8
    layer.close()
    layer, top = build(data_param(path, 1, force_gray=True), phase=jitnet.TEST)
    assert top[0].shape == (1, 1, 8, 8)
    layer.close()


def test_leveldb_backend(tmp_path):
    pytest.importorskip("plyvel", reason="plyvel (the leveldb extra) is not installed")
    imgs = images(3, (1, 2, 2))
    path = write_db(tmp_path / "db", imgs, backend="leveldb")
    layer, top = build(data_param(path, 2, backend="leveldb"), phase=jitnet.TEST)
    data, labels = batches(layer, top, 2)[1]
    np.testing.assert_array_equal(data, np.stack([imgs[2], imgs[0]]))
    assert labels.tolist() == [2, 0]
    layer.close()


def test_a_bad_record_is_raised_in_forward_naming_it(tmp_path):
    """The thread meets record 3 while reading ahead; the error comes out of the forward
    that needs it, in the training thread, naming the record, its key and the database."""
    path = write_db(tmp_path / "db", images(5, (1, 2, 2)), bad={3})
    layer, top = build(data_param(path, 2))
    batches(layer, top, 1)
    with pytest.raises(jitnet.LayerError, match=r"'data' \(type Data\): record 3 \(key '00000003_img3.png'\) "
                                                r"of LMDB '.*db' is not a caffe.Datum"):
        layer.run_forward([], top)
    with pytest.raises(jitnet.LayerError, match="record 3"):      # and again, not a hang
        layer.run_forward([], top)
    layer.close()


def test_records_of_different_sizes_need_a_crop(tmp_path):
    path = write_db(tmp_path / "db", images(2, (1, 4, 4)) + images(1, (1, 5, 4)))
    layer, top = build(data_param(path, 3))
    with pytest.raises(jitnet.LayerError, match=r"record 2 .* has shape 1x5x4 .* the first record has "
                                                r"1x4x4; records of different sizes need transform_param.crop_size"):
        layer.run_forward([], top)
    layer.close()
    layer, top = build(data_param(path, 3, crop_size=3))
    assert batches(layer, top, 1)[0][0].shape == (3, 1, 3, 3)
    layer.close()


def test_mean_file_and_crop_errors_at_setup(tmp_path):
    path = write_db(tmp_path / "db", images(2, (3, 4, 4)))
    blob = pb.BlobProto(num=1, channels=3, height=5, width=5)
    blob.data.extend([0.0] * 75)
    (tmp_path / "mean.binaryproto").write_bytes(blob.SerializeToString())
    with pytest.raises(jitnet.LayerError, match=r"mean_file '.*mean.binaryproto' has shape 3x5x5.*record 0"):
        build(data_param(path, 1, mean_file=str(tmp_path / "mean.binaryproto")))
    with pytest.raises(jitnet.LayerError, match=r"crop_size 6 is larger than the image \(4 x 4\)"):
        build(data_param(path, 1, crop_size=6))
    with pytest.raises(jitnet.LayerError, match="is empty"):
        build(data_param(write_db(tmp_path / "empty", []), 1))


def test_dropped_layers_stop_their_threads(tmp_path):
    path = write_db(tmp_path / "db", images(3, (1, 2, 2)))
    before = prefetch_threads()
    for _ in range(5):
        layer, top = build(data_param(path, 2))
        batches(layer, top, 1)
    del layer, top
    gc.collect()
    deadline = time.time() + 5
    while prefetch_threads() > before and time.time() < deadline:
        time.sleep(0.02)
    assert prefetch_threads() == before


# ------------------------------------------------------------------------------------- ImageData
def image_list(tmp_path, imgs, missing=(), name="list.txt"):
    folder = tmp_path / "imgs"
    folder.mkdir(exist_ok=True)
    lines = []
    for i, image in enumerate(imgs):
        if i not in missing:
            (folder / f"{i}.png").write_bytes(png(image))
        lines.append(f"{i}.png {i}")
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    return str(tmp_path / name), str(folder) + "/"


def image_data_param(source, root, batch, **fields):
    lp = pb.LayerParameter(name="images", type="ImageData", top=["data", "label"])
    p = lp.image_data_param
    p.source, p.root_folder, p.batch_size = source, root, batch
    for key, value in fields.items():
        setattr(p, key, value)
    return lp


def test_missing_image_is_raised_in_forward_naming_file_and_line(tmp_path):
    source, root = image_list(tmp_path, images(4), missing={3})
    layer, top = build(image_data_param(source, root, 2))
    batches(layer, top, 1)
    with pytest.raises(jitnet.LayerError, match=r"image '.*imgs/3.png' \(line 4 of '.*list.txt'\): "
                                                r"No such file"):
        layer.run_forward([], top)
    layer.close()


def test_shuffle_visits_every_image_once_per_pass_in_a_new_order(tmp_path):
    source, root = image_list(tmp_path, images(6, (1, 1, 1)))
    orders = []
    for seed in (4, 4):
        layer, top = build(image_data_param(source, root, 3, shuffle=True), seed=seed)
        labels = np.concatenate([b[1] for b in batches(layer, top, 6)]).astype(int)
        orders.append(labels)
        layer.close()
    np.testing.assert_array_equal(orders[0], orders[1])
    passes = orders[0].reshape(3, 6)
    for p in passes:
        assert sorted(p) == list(range(6))
    assert len({tuple(p) for p in passes}) > 1


def test_resize_and_grey(tmp_path):
    imgs = images(2, (3, 7, 9))
    source, root = image_list(tmp_path, imgs)
    layer, top = build(image_data_param(source, root, 2, new_height=4, new_width=5), phase=jitnet.TEST)
    data = batches(layer, top, 1)[0][0]
    for i in range(2):
        assert np.abs(data[i] - ref.opencv_bilinear(imgs[i], 4, 5)).max() <= 1
    layer.close()
    layer, top = build(image_data_param(source, root, 2, is_color=False), phase=jitnet.TEST)
    assert top[0].shape == (2, 1, 7, 9)
    layer.close()


# ------------------------------------------------------------------------------------- WindowData
def window_setup(tmp_path, windows, size=(3, 10, 12)):
    image = images(1, size, seed=5)[0]
    (tmp_path / "w.png").write_bytes(png(image))
    lines = [f"# 0\n{tmp_path / 'w.png'}\n{size[0]}\n{size[1]}\n{size[2]}\n{len(windows)}"]
    lines += [" ".join(map(str, w)) for w in windows]
    (tmp_path / "windows.txt").write_text("\n".join(lines) + "\n")
    lp = pb.LayerParameter(name="win", type="WindowData", top=["data", "label"])
    lp.window_data_param.source = str(tmp_path / "windows.txt")
    lp.window_data_param.batch_size = 8
    lp.transform_param.crop_size = 4
    return lp, image


def test_window_batches_take_background_then_foreground_windows(tmp_path):
    lp, image = window_setup(tmp_path, [(1, 0.8, 0, 0, 5, 5), (2, 0.6, 3, 2, 9, 8), (3, 0.2, 1, 1, 4, 4),
                                        (4, 0.4, 6, 6, 11, 9)])
    lp.window_data_param.fg_fraction = 0.5
    lp.transform_param.mirror = True
    layer, top = build(lp)
    data, labels = batches(layer, top, 1)[0]
    assert labels[:4].tolist() == [0] * 4 and set(labels[4:].tolist()) <= {1, 2}
    boxes = {1: (0, 0, 5, 5), 2: (3, 2, 9, 8)}
    for i in range(4, 8):
        straight = ref.window_warp(image, boxes[int(labels[i])], 4)
        mirrored = ref.window_warp(image, boxes[int(labels[i])], 4, mirror=True)
        assert min(np.abs(data[i] - straight).max(), np.abs(data[i] - mirrored).max()) <= 1
    layer.close()


def test_window_errors(tmp_path):
    lp, _ = window_setup(tmp_path, [(1, 0.9, 0, 0, 20, 5)])
    lp.window_data_param.fg_fraction = 1.0
    layer, top = build(lp)
    with pytest.raises(jitnet.LayerError, match=r"window \(0, 0, 20, 5\) of image '.*w.png' lies outside"):
        layer.run_forward([], top)
    layer.close()
    lp.window_data_param.fg_fraction = 0.25
    with pytest.raises(jitnet.LayerError, match="no background windows"):
        build(lp)
    (tmp_path / "windows.txt").write_text("# 0\nimg.png\n3\n")
    with pytest.raises(jitnet.LayerError, match="ends early"):
        build(lp)


# ------------------------------------------------------------------------------------- HDF5Output
def test_hdf5_output_appends_every_forward_and_hdf5_data_reads_it_back(tmp_path):
    out = tmp_path / "out.h5"
    lp = pb.LayerParameter(name="out", type="HDF5Output", bottom=["data", "label"])
    lp.hdf5_output_param.file_name = str(out)
    layer = create_layer(lp, jitnet.TEST)
    bottom = [Blob((2, 3), dtype=np.float32), Blob((2,), dtype=np.float32)]
    layer.setup_layer(bottom, [])
    for k in range(3):
        bottom[0].data[...] = np.arange(6).reshape(2, 3) + 10 * k
        bottom[1].data[...] = [k, -k]
        layer.run_forward(bottom, [])
    with h5py.File(out, "r") as f:
        assert f["data"].shape == (6, 3, 1, 1) and f["label"].shape == (6, 1, 1, 1)
        np.testing.assert_array_equal(f["label"][:, 0, 0, 0], [0, 0, 1, -1, 2, -2])
    (tmp_path / "list.txt").write_text(str(out) + "\n")
    read = pb.LayerParameter(name="in", type="HDF5Data", top=["data", "label"])
    read.hdf5_data_param.source, read.hdf5_data_param.batch_size = str(tmp_path / "list.txt"), 6
    reader, top = build(read)
    data, _ = batches(reader, top, 1)[0]
    np.testing.assert_array_equal(data[4:, :, 0, 0], np.arange(6).reshape(2, 3) + 20)


# ------------------------------------------------------------------------------------- MemoryData
def test_memory_data_transforms_datums_and_images_but_not_arrays():
    lp = pb.LayerParameter(name="mem", type="MemoryData", top=["data", "label"])
    p = lp.memory_data_param
    p.batch_size, p.channels, p.height, p.width = 2, 3, 2, 2
    lp.transform_param.crop_size = 2
    lp.transform_param.mean_value.extend([1.0, 2.0, 3.0])
    layer, top = build(lp, phase=jitnet.TEST)
    imgs = images(2, (3, 4, 4))
    layer.add_datum_vector([data_db.image_to_datum(im, 7) for im in imgs])
    data, labels = batches(layer, top, 1)[0]
    for i in range(2):
        np.testing.assert_allclose(data[i], ref.caffe_transform(imgs[i], 2, 1, 1, False, None, [1, 2, 3]))
    assert labels.tolist() == [7, 7]
    layer.add_mat_vector([im.transpose(1, 2, 0) for im in imgs], [3, 4])      # cv::Mat layout
    np.testing.assert_array_equal(batches(layer, top, 1)[0][0], data)
    arrays = np.ones((2, 3, 2, 2))
    layer.reset(arrays, np.zeros(2))                                         # not transformed
    np.testing.assert_array_equal(batches(layer, top, 1)[0][0], arrays)
    with pytest.raises(jitnet.LayerError, match="positive multiple of batch_size"):
        layer.add_mat_vector([imgs[0].transpose(1, 2, 0)], [1])


# ------------------------------------------------------------------------------------- training
SOLVER = """net: "{net}"
base_lr: 0.05
momentum: 0.9
lr_policy: "fixed"
max_iter: {iters}
display: 0
random_seed: 11
snapshot_prefix: "{prefix}"
"""

NET = """name: "mlp"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{db}" batch_size: 4 backend: LMDB }}
  transform_param {{ crop_size: 3 mirror: true scale: 0.00390625 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


def test_a_resumed_training_run_reaches_the_uninterrupted_weights(tmp_path):
    """Snapshot at iteration 5 while the thread reads ahead, restore into a fresh solver:
    the same records, crops and mirrors, hence the same weights at iteration 10."""
    path = write_db(tmp_path / "db", images(9, (1, 4, 4)), labels=[i % 3 for i in range(9)])
    (tmp_path / "net.prototxt").write_text(NET.format(db=path))
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(net=tmp_path / "net.prototxt", iters=10,
                                                            prefix=tmp_path / "snap"))
    whole = jitnet.get_solver(str(tmp_path / "solver.prototxt"))
    whole.step(10)
    half = jitnet.get_solver(str(tmp_path / "solver.prototxt"))
    half.step(5)
    time.sleep(0.05)
    _, state = half.snapshot()
    resumed = jitnet.get_solver(str(tmp_path / "solver.prototxt"))
    resumed.restore(state)
    resumed.step(5)
    np.testing.assert_array_equal(resumed.net.params["ip"][0].data, whole.net.params["ip"][0].data)
