"""jitnet convert_imageset and compute_image_mean (Caffe's dataset tools), the round trip
images -> LMDB -> mean -> jitnet train with Data layers and mean_file, and the digits
example's LMDB path."""
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import jitnet
from jitnet import cli
from jitnet.data import db as data_db
from jitnet.data.image import decode
from jitnet.proto import io as proto_io
from jitnet.proto import pb

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"


def write_images(folder, specs):
    """specs: [(name, (H, W, 3) or (H, W) uint8 RGB/grey array, label)] -> the list file."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, array, label in specs:
        Image.fromarray(array).save(folder / name)
        lines.append(f"{name} {label}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return str(folder) + "/", str(folder / "list.txt")


def records(path, backend="lmdb"):
    reader = data_db.open_reader(path, backend)
    it = reader.records(0)
    out = [(k.decode(), data_db.parse_datum(v, k)) for k, v in (next(it) for _ in range(reader.count))]
    reader.close()
    return out


def rgb_images(n, h=5, w=4, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3)).astype(np.uint8) for _ in range(n)]


def test_convert_raw_colour_stores_bgr_planes_keyed_by_line(tmp_path, capsys):
    imgs = rgb_images(3)
    root, listing = write_images(tmp_path / "img", [(f"a{i}.png", im, 10 + i) for i, im in enumerate(imgs)])
    assert cli.main(["convert_imageset", root, listing, str(tmp_path / "db")]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    got = records(str(tmp_path / "db"))
    assert [k for k, _ in got] == ["00000000_a0.png", "00000001_a1.png", "00000002_a2.png"]
    for (_, datum), image, label in zip(got, imgs, (10, 11, 12)):
        assert (datum.channels, datum.height, datum.width, datum.label) == (3, 5, 4, label)
        np.testing.assert_array_equal(np.frombuffer(datum.data, np.uint8).reshape(3, 5, 4),
                                      image[:, :, ::-1].transpose(2, 0, 1))


def test_convert_gray_resize_shuffle_with_single_dash_flags(tmp_path):
    imgs = rgb_images(6, 7, 9)
    root, listing = write_images(tmp_path / "img", [(f"{i}.png", im, i) for i, im in enumerate(imgs)])
    jitnet.set_random_seed(3)
    assert cli.main(["convert_imageset", "-gray", "-shuffle", "-resize_height", "4", "-resize_width", "3",
                     root, listing, str(tmp_path / "db")]) == 0
    got = records(str(tmp_path / "db"))
    assert {(d.channels, d.height, d.width) for _, d in got} == {(1, 4, 3)}
    names = [k.split("_", 1)[1] for k, _ in got]
    assert sorted(names) == sorted(f"{i}.png" for i in range(6)) and names != sorted(names)
    for key, datum in got:
        assert key.split("_", 1)[1] == f"{datum.label}.png"


def test_convert_encoded_keeps_matching_files_and_reencodes_others(tmp_path):
    imgs = rgb_images(2, 8, 8)
    root, listing = write_images(tmp_path / "img", [("a.png", imgs[0], 0), ("b.png", imgs[1], 1)])
    assert cli.main(["convert_imageset", "--encoded", root, listing, str(tmp_path / "png")]) == 0
    stored = records(str(tmp_path / "png"))
    assert stored[0][1].encoded and stored[0][1].data == (tmp_path / "img" / "a.png").read_bytes()
    assert cli.main(["convert_imageset", "--encoded", "--encode_type", "jpg", root, listing,
                     str(tmp_path / "jpg")]) == 0
    datum = records(str(tmp_path / "jpg"))[1][1]
    assert datum.encoded and datum.data[:2] == b"\xff\xd8" and datum.label == 1
    assert decode(datum.data).shape == (3, 8, 8)


def test_unreadable_images_are_skipped_and_check_size_refuses_mixed_sizes(tmp_path, capsys):
    root, listing = write_images(tmp_path / "img", [("a.png", rgb_images(1)[0], 0),
                                                    ("b.png", rgb_images(1, 6, 4)[0], 1)])
    with open(listing, "a") as f:
        f.write("missing.png 2\n")
    assert cli.main(["convert_imageset", root, listing, str(tmp_path / "db")]) == 0
    assert "1 could not be read and were skipped" in capsys.readouterr().out
    assert len(records(str(tmp_path / "db"))) == 2
    assert cli.main(["convert_imageset", "--check_size", root, listing, str(tmp_path / "db2")]) == 1
    err = capsys.readouterr().err
    assert re.search(r"check_size: image '.*b.png' \(line 2 of '.*list.txt'\) has size 3x6x4", err), err


def test_list_line_without_label_is_an_error(tmp_path, capsys):
    (tmp_path / "list.txt").write_text("a.png 1\nb.png\n")
    assert cli.main(["convert_imageset", str(tmp_path) + "/", str(tmp_path / "list.txt"),
                     str(tmp_path / "db")]) == 1
    assert "line 2 of the image list" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_compute_image_mean_is_the_mean_in_caffes_layout(tmp_path, capsys, backend):
    if backend == "leveldb":
        pytest.importorskip("plyvel", reason="plyvel (the leveldb extra) is not installed")
    imgs = rgb_images(4)
    root, listing = write_images(tmp_path / "img", [(f"{i}.png", im, i) for i, im in enumerate(imgs)])
    assert cli.main(["convert_imageset", "--backend", backend, "--encoded", root, listing,
                     str(tmp_path / "db")]) == 0
    assert cli.main(["compute_image_mean", "--backend", backend, str(tmp_path / "db"),
                     str(tmp_path / "mean.binaryproto")]) == 0
    out = capsys.readouterr().out
    want = np.mean([im[:, :, ::-1].transpose(2, 0, 1).astype(np.float64) for im in imgs], axis=0)
    blob = proto_io.read_binary(str(tmp_path / "mean.binaryproto"), pb.BlobProto())
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 4)
    np.testing.assert_allclose(proto_io.blob_to_array(blob)[0], want, rtol=1e-6)
    assert f"mean_value channel [0]: {want[0].mean():.6g}" in out


def test_compute_image_mean_refuses_records_of_another_size(tmp_path, capsys):
    writer = data_db.open_writer(str(tmp_path / "db"), "lmdb")
    for i, shape in enumerate([(1, 2, 2), (1, 3, 2)]):
        writer.put(f"{i}".encode(), data_db.image_to_datum(np.zeros(shape, np.uint8), 0).SerializeToString())
    writer.close()
    assert cli.main(["compute_image_mean", str(tmp_path / "db")]) == 1
    assert re.search(r"record 1 \(key '1'\) of LMDB '.*db' has shape 1x3x2", capsys.readouterr().err)
    assert cli.main(["compute_image_mean", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


ROUND_TRIP_NET = """name: "round_trip"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { mean_file: "mean.binaryproto" scale: 0.00390625 crop_size: 6 mirror: true }
  data_param { source: "train_lmdb" batch_size: 16 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { mean_file: "mean.binaryproto" scale: 0.00390625 crop_size: 6 }
  data_param { source: "train_lmdb" batch_size: 20 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""

ROUND_TRIP_SOLVER = """net: "train_val.prototxt"
test_iter: 2
test_interval: 60
base_lr: 0.1
momentum: 0.9
lr_policy: "fixed"
display: 20
max_iter: 60
random_seed: 5
"""


def run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "jitnet", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_round_trip_images_to_lmdb_to_mean_to_training(tmp_path):
    """Images on disk -> convert_imageset -> compute_image_mean -> jitnet train on a
    train_val prototxt with Data layers, mean_file, crop and mirror: it learns to tell
    pictures bright at the top from those bright at the bottom."""
    rng = np.random.default_rng(0)
    specs = []
    for i in range(40):
        label = i % 2
        image = rng.integers(0, 90, (8, 8, 3)).astype(np.uint8)
        image[4 * label:4 * label + 4] += 120          # bright top or bottom half (mirror-proof)
        specs.append((f"{i:02d}.jpg" if i % 3 else f"{i:02d}.png", image, label))
    write_images(tmp_path / "images", specs)
    commands = [["convert_imageset", "--shuffle", "images/", "images/list.txt", "train_lmdb"],
                ["compute_image_mean", "train_lmdb", "mean.binaryproto"]]
    for command in commands:
        result = run_cli(command, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    (tmp_path / "train_val.prototxt").write_text(ROUND_TRIP_NET)
    (tmp_path / "solver.prototxt").write_text(ROUND_TRIP_SOLVER)
    result = run_cli(["train", "--solver", "solver.prototxt"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = re.search(r"Test net #0 at iteration 60: accuracy = ([0-9.]+)", result.stdout)
    assert accuracy and float(accuracy.group(1)) >= 0.9, result.stdout + result.stderr[-2000:]


# ------------------------------------------------------------------------------------- the example
@pytest.fixture(scope="module")
def digits_lmdb(tmp_path_factory):
    """examples/digits/prepare_images.py and the documented convert/mean commands, in a
    working directory laid out like the repository."""
    pytest.importorskip("sklearn", reason="the digits data ships with scikit-learn (the examples extra)")
    work = tmp_path_factory.mktemp("digits_lmdb")
    (work / "examples" / "digits").mkdir(parents=True)
    for name in os.listdir(DIGITS):
        if name.endswith(".prototxt"):
            (work / "examples" / "digits" / name).write_text((DIGITS / name).read_text())
    result = subprocess.run([sys.executable, str(DIGITS / "prepare_images.py"),
                             str(work / "examples" / "digits" / "data" / "images")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    doc = (DIGITS / "prepare_images.py").read_text()
    for line in doc.splitlines():
        line = line.strip()
        if line.startswith("jitnet convert_imageset") or line.startswith("jitnet compute_image_mean"):
            result = run_cli(line.split()[1:], work)
            assert result.returncode == 0, result.stderr[-3000:]
    return work


def _short_solver(work, name, iters):
    text = (work / "examples" / "digits" / name).read_text()
    text = re.sub(r"max_iter: \d+", f"max_iter: {iters}", text)
    text = re.sub(r"test_interval: \d+", f"test_interval: {iters}", text)
    text = re.sub(r"snapshot: \d+", f"snapshot: {iters}", text)
    (work / "examples" / "digits" / f"short_{name}").write_text(text)
    return f"examples/digits/short_{name}"


def test_digits_mlp_trains_from_the_lmdb(digits_lmdb):
    assert (digits_lmdb / "examples" / "digits" / "data" / "train_lmdb" / "data.mdb").exists()
    solver = _short_solver(digits_lmdb, "mlp_lmdb_solver.prototxt", 200)
    result = run_cli(["train", "--solver", solver], digits_lmdb)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = re.search(r"Test net #0 at iteration 200: accuracy = ([0-9.]+)", result.stdout)
    assert accuracy and float(accuracy.group(1)) >= 0.9, result.stdout


@pytest.mark.skipif(not {"Convolution", "Pooling"} <= set(jitnet.layer_type_list()),
                    reason="the LeNet-style net needs the Convolution and Pooling layers")
def test_digits_lenet_trains_from_the_lmdb(digits_lmdb):
    solver = _short_solver(digits_lmdb, "lenet_lmdb_solver.prototxt", 500)
    result = run_cli(["train", "--solver", solver], digits_lmdb)
    assert result.returncode == 0, result.stderr[-3000:]
    accuracy = re.search(r"Test net #0 at iteration 500: accuracy = ([0-9.]+)", result.stdout)
    assert accuracy and float(accuracy.group(1)) >= 0.95, result.stdout
