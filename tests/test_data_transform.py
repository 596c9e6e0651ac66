"""transform_param (jitnet.data.transformer) against Caffe's formula written out in
tests/reference.py, and images in Caffe's conventions (jitnet.data.image): BGR planes,
native / forced channels, OpenCV's bilinear resize."""
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import jitnet
from jitnet.data import DataError
from jitnet.data import image as image_io
from jitnet.data.transformer import DataTransformer, batch_generator, draws, read_mean_file
from jitnet.proto import pb

import reference as ref

MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"


def _param(**fields):
    p = pb.TransformationParameter()
    for name, value in fields.items():
        if name == "mean_value":
            p.mean_value.extend(value)
        else:
            setattr(p, name, value)
    return p


def _write_mean(path, mean):
    blob = pb.BlobProto(num=1, channels=mean.shape[0], height=mean.shape[1], width=mean.shape[2])
    blob.data.extend(np.asarray(mean, np.float32).ravel().tolist())
    Path(path).write_bytes(blob.SerializeToString())


@settings(max_examples=40)
@given(data=st.data(), train=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]))
def test_transform_matches_caffe_formula(tmp_path_factory, data, train, dtype):
    """Crop (random offsets in TRAIN from the draws, the centre in TEST), mirror, mean file
    (indexed at the source pixel) or mean values, scale; raw uint8 and float input."""
    c = data.draw(st.sampled_from([1, 2, 3]))
    h, w = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.integers(0, 256, (c, h, w)).astype(np.uint8)
    if data.draw(st.booleans()):
        x = x.astype(np.float32) + np.float32(0.25)
    crop = data.draw(st.integers(0, min(h, w)))
    mean_kind = data.draw(st.sampled_from(["none", "file", "one", "all"]))
    fields = dict(crop_size=crop, mirror=data.draw(st.booleans()),
                  scale=data.draw(st.sampled_from([1.0, 0.5, 0.00390625])))
    mean = None
    if mean_kind == "file":
        mean = rng.uniform(0, 255, (c, h, w)).astype(np.float32)
        path = tmp_path_factory.mktemp("mean") / "mean.binaryproto"
        _write_mean(path, mean)
        fields["mean_file"] = str(path)
    elif mean_kind == "one":
        fields["mean_value"] = [100.5]
    elif mean_kind == "all":
        fields["mean_value"] = [float(v) for v in rng.uniform(0, 200, c).astype(np.float32)]
    t = DataTransformer(_param(**fields), jitnet.TRAIN if train else jitnet.TEST, dtype)
    draw = draws(batch_generator(data.draw(st.integers(0, 2**40)), 0), 1)[0]
    out = np.zeros(t.output_shape(x.shape, "x"), dtype)
    t.transform(x, out, draw)
    h0, w0, coin = ref.caffe_crop_offsets(h, w, crop, train, draw)
    expected = ref.caffe_transform(x, crop, h0, w0, fields["mirror"] and coin == 1, mean,
                                   fields.get("mean_value", []), np.float32(fields["scale"]))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * 255)


def test_batch_transform_equals_image_by_image():
    """The vectorised path (no randomness) and the one image at a time agree exactly."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, 3, 7, 6)).astype(np.uint8)
    for fields in (dict(crop_size=4, scale=0.5, mean_value=[1.0, 2.0, 3.0]), dict(scale=2.0),
                   dict(crop_size=3, mean_value=[9.5])):
        t = DataTransformer(_param(**fields), jitnet.TEST)
        batch = np.empty((5,) + t.output_shape(images.shape[1:], "x"), np.float32)
        t.transform_batch(images, batch, lambda: draws(batch_generator(0, 0), 5), lambda i: f"image {i}")
        for i in range(5):
            one = np.empty(batch.shape[1:], np.float32)
            t.transform(images[i], one, (0, 0, 0))
            np.testing.assert_array_equal(batch[i], one)


def test_random_crops_and_mirrors_cover_every_choice_and_repeat_with_the_seed():
    t = DataTransformer(_param(crop_size=2, mirror=True), jitnet.TRAIN)
    seen = {t.offsets((1, 4, 5), d) for d in draws(batch_generator(7, 0), 400)}
    assert seen == {(h, w, m) for h in range(3) for w in range(4) for m in (False, True)}
    np.testing.assert_array_equal(draws(batch_generator(7, 3), 10), draws(batch_generator(7, 3), 10))
    assert not np.array_equal(draws(batch_generator(7, 3), 10), draws(batch_generator(8, 3), 10))
    assert not np.array_equal(draws(batch_generator(7, 3), 10), draws(batch_generator(7, 4), 10))


def test_test_phase_crops_the_centre_and_mirror_follows_caffe_in_every_phase():
    t = DataTransformer(_param(crop_size=2), jitnet.TEST)
    assert t.offsets((1, 5, 6), (1, 99, 99)) == (1, 2, False)
    mirror_test = DataTransformer(_param(mirror=True), jitnet.TEST)     # Caffe: mirror() && Rand(2)
    assert mirror_test.offsets((1, 2, 2), (1, 0, 0))[2] is True
    assert mirror_test.offsets((1, 2, 2), (2, 0, 0))[2] is False


@pytest.mark.parametrize("fields,match", [
    (dict(mean_file="m.binaryproto", mean_value=[1.0]), "mean_file or mean_value, not both"),
    (dict(force_color=True, force_gray=True), "force_color and force_gray"),
    (dict(mean_file="/nonexistent/mean.binaryproto"), "mean.binaryproto"),
])
def test_bad_transform_params(fields, match):
    with pytest.raises(DataError, match=match):
        DataTransformer(_param(**fields), jitnet.TRAIN)


def test_crop_larger_than_image_and_mean_shape_mismatch_name_the_data(tmp_path):
    with pytest.raises(DataError, match=r"record 3: crop_size 5 is larger than the image \(4 x 6\)"):
        DataTransformer(_param(crop_size=5), jitnet.TRAIN).output_shape((1, 4, 6), "record 3")
    _write_mean(tmp_path / "mean.binaryproto", np.zeros((3, 4, 4)))
    t = DataTransformer(_param(mean_file=str(tmp_path / "mean.binaryproto")), jitnet.TRAIN)
    with pytest.raises(DataError, match=r"mean.binaryproto' has shape 3x4x4.*record 0 is 3x5x4"):
        t.output_shape((3, 5, 4), "record 0")
    with pytest.raises(DataError, match="2 mean_value entries for 3-channel"):
        DataTransformer(_param(mean_value=[1, 2]), jitnet.TRAIN).output_shape((3, 2, 2), "x")


def test_caffe_mean_file_reads():
    path = MODELS / "imagenet_mean" / "imagenet_mean.binaryproto"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared Caffe models)")
    mean = read_mean_file(str(path))
    assert mean.shape == (3, 256, 256)
    # ImageNet's mean in BGR order: blue lowest, red highest (Caffe's 104, 117, 123)
    np.testing.assert_allclose(mean.mean(axis=(1, 2)), [104.0, 116.7, 122.7], atol=1.0)


# ------------------------------------------------------------------------------------- images
def _encode(array, mode, fmt="PNG"):
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, fmt)
    return out.getvalue()


def test_decode_gives_bgr_planes_and_native_or_forced_channels():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (4, 5, 3)).astype(np.uint8)
    png = _encode(rgb, "RGB")
    bgr = image_io.decode(png)
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1].transpose(2, 0, 1))
    grey = image_io.decode(png, color=False)
    rgb = rgb.astype(np.int64)
    luma = (rgb[..., 0] * 299 + rgb[..., 1] * 587 + rgb[..., 2] * 114) / 1000.0   # ITU-R 601
    assert grey.shape == (1, 4, 5) and np.abs(grey[0] - luma).max() <= 1
    g = rng.integers(0, 256, (3, 2)).astype(np.uint8)
    assert image_io.decode(_encode(g, "L")).shape == (1, 3, 2)
    np.testing.assert_array_equal(image_io.decode(_encode(g, "L"), color=True), np.stack([g] * 3))
    rgba = rng.integers(0, 256, (2, 2, 4)).astype(np.uint8)
    np.testing.assert_array_equal(image_io.decode(_encode(rgba, "RGBA")),
                                  rgba[:, :, [2, 1, 0, 3]].transpose(2, 0, 1))
    assert image_io.decode(_encode(rgba, "RGBA"), color=True).shape == (3, 2, 2)


def test_encode_round_trips_png_exactly_and_jpeg_closely():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (3, 8, 8)).astype(np.uint8)
    np.testing.assert_array_equal(image_io.decode(image_io.encode(image, "png")), image)
    smooth = np.broadcast_to(np.arange(16, dtype=np.uint8)[None, None] * 10, (3, 16, 16)).copy()
    assert np.abs(image_io.decode(image_io.encode(smooth, "jpg")).astype(int) - smooth).max() <= 8


def test_undecodable_bytes_name_what_they_were():
    with pytest.raises(DataError, match="record 7: cannot decode the image"):
        image_io.decode(b"not an image", what="record 7")


@settings(max_examples=40)
@given(c=st.sampled_from([1, 3]), h=st.integers(1, 12), w=st.integers(1, 12),
       height=st.integers(1, 16), width=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_resize_is_opencv_bilinear_to_one_grey_level(c, h, w, height, width, seed):
    image = np.random.default_rng(seed).integers(0, 256, (c, h, w)).astype(np.uint8)
    out = image_io.resize(image, height, width)
    assert out.shape == (c, height, width) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - ref.opencv_bilinear(image, height, width)).max() <= 1


def test_resize_agrees_with_opencv_when_installed():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(4)
    for h, w, height, width in [(7, 9, 4, 5), (5, 5, 13, 11), (32, 24, 8, 8), (3, 17, 6, 2)]:
        image = rng.integers(0, 256, (3, h, w)).astype(np.uint8)
        theirs = cv2.resize(image.transpose(1, 2, 0).copy(), (width, height),
                            interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
        assert np.abs(image_io.resize(image, height, width).astype(int) - theirs).max() <= 1


def test_read_image_names_a_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.png"):
        image_io.read_image(str(tmp_path / "nope.png"))


@pytest.mark.parametrize("text,line", [("a.png 1\nb.png\n", 2), ("a.png x\n", 1), ("3\n", 1)])
def test_list_line_without_a_label_is_an_error_naming_file_and_line(tmp_path, text, line):
    (tmp_path / "list.txt").write_text(text)
    with pytest.raises(DataError, match=rf"line {line} of the image list '.*list.txt' has no integer label"):
        image_io.read_image_list(str(tmp_path / "list.txt"))


def test_list_paths_may_hold_spaces_and_blank_lines_are_skipped(tmp_path):
    (tmp_path / "list.txt").write_text("my cat.png 3\n\n  dog.jpg\t-1 \n")
    assert image_io.read_image_list(str(tmp_path / "list.txt")) == [("my cat.png", 3, 1),
                                                                   ("dog.jpg", -1, 3)]
