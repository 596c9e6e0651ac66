"""Caffe's dataset tools: ``convert_imageset`` and ``compute_image_mean``.

``jitnet convert_imageset`` and ``jitnet compute_image_mean`` (jitnet/cli.py) are these
functions with Caffe's flags.
"""
import logging
import os

import numpy as np

from .. import common
from ..proto import io as proto_io
from ..proto import pb
from . import DataError
from . import db as data_db
from . import image as image_io

log = logging.getLogger("jitnet")


def _extension(path):
    base = os.path.basename(path)
    return base.rsplit(".", 1)[1].lower() if "." in base else ""


def _same_encoding(ext, encoding):
    """Caffe's matchExt: the file's extension names the encoding (jpeg counts as jpg)."""
    return ext == encoding or (encoding == "jpg" and ext == "jpeg")


def convert_imageset(root, list_file, db_name, *, resize_height=0, resize_width=0, shuffle=False,
                     gray=False, encoded=False, encode_type="", backend="lmdb", check_size=False,
                     progress=None):
    """Write the images of ``list_file`` ("path label" lines; paths relative to ``root``,
    joined by plain concatenation as Caffe does) into a new database ``db_name`` of
    serialized Datum records keyed "%08d_path" by line number.

    Images are read in colour (BGR) or grey (``gray``), resized to resize_height x
    resize_width when both are given (OpenCV's bilinear resize), and stored raw (C×H×W
    bytes), or encoded (``encoded``) as ``encode_type`` (png or jpg; by default each file's
    own format): a file already in that format, not resized and with the channels asked
    for, is stored as it is. ``shuffle`` shuffles the lines first (jitnet's generator, so
    ``jitnet.set_random_seed`` makes it repeatable). An image that cannot be read is skipped
    with a warning, as Caffe does; ``check_size`` makes images of different sizes an error.
    ``progress(n)`` is called after each line. Returns {"written": n, "skipped": [paths]}.
    """
    if (resize_height > 0) != (resize_width > 0):
        log.warning("convert_imageset: only one of resize_height / resize_width is set; images "
                    "are not resized (Caffe resizes when both are given)")
    encode_type = encode_type.lower()
    if encode_type and encode_type not in ("png", "jpg", "jpeg"):
        raise DataError(f"--encode_type must be png or jpg, got '{encode_type}'")
    if encode_type == "jpeg":
        encode_type = "jpg"
    lines = image_io.read_image_list(list_file)
    if shuffle:
        lines = [lines[i] for i in common.rng().permutation(len(lines))]
    log.info("A total of %d images.", len(lines))
    writer = data_db.open_writer(db_name, backend)
    resize = resize_height > 0 and resize_width > 0
    written, skipped, size = 0, [], None
    try:
        for line_id, (rel, label, number) in enumerate(lines):
            path = root + rel
            what = f"image '{path}' (line {number} of '{list_file}')"
            try:
                with open(path, "rb") as f:
                    buffer = f.read()
                img = image_io.open_image(buffer, what)
            except (OSError, DataError) as e:
                log.warning("Could not open or find file %s (line %d of %s): %s", path, number,
                            list_file, getattr(e, "strerror", None) or e)
                skipped.append(path)
                if progress:
                    progress(1)
                continue
            image = image_io.to_chw(img, not gray)
            if resize:
                image = image_io.resize(image, resize_height, resize_width)
            if check_size:
                if size is None:
                    size = image.shape
                elif image.shape != size:
                    raise DataError(f"--check_size: {what} has size {'x'.join(map(str, image.shape))}"
                                    f" (channels x height x width), the first image "
                                    f"{'x'.join(map(str, size))}")
            if encoded:
                encoding = encode_type or _extension(rel) or "png"
                if encoding == "jpeg":
                    encoding = "jpg"
                if encoding not in ("png", "jpg"):
                    encoding = "png"
                if (not resize and _same_encoding(_extension(rel), encoding)
                        and image_io.native_channels(img) == (1 if gray else 3)):
                    payload = buffer
                else:
                    payload = image_io.encode(image, encoding)
                datum = data_db.image_to_datum(image, label, encoded=payload)
            else:
                datum = data_db.image_to_datum(image, label)
            writer.put(f"{line_id:08d}_{rel}".encode(), datum.SerializeToString())
            written += 1
            if progress:
                progress(1)
    finally:
        writer.close()
    log.info("Processed %d files.", written)
    return {"written": written, "skipped": skipped}


def compute_image_mean(db_name, output=None, backend="lmdb", progress=None):
    """The mean image of a database's records (raw bytes, float_data or encoded, decoded in
    their own channels), as Caffe's compute_image_mean: a (C, H, W) float32 array, written to
    ``output`` as a BlobProto (legacy num 1 x channels x height x width, as Caffe writes it)
    when given. Records of another size are an error naming the record. Returns (mean,
    per-channel means)."""
    reader = data_db.open_reader(db_name, backend)
    try:
        total, shape = None, None
        records = reader.records(0)
        for i in range(reader.count):
            key, value = next(records)
            what = (f"record {i} (key {key.decode('utf-8', 'replace')!r}) of "
                    f"{reader.backend.upper()} '{db_name}'")
            datum = data_db.parse_datum(value, what)
            image = data_db.datum_to_image(datum, what)
            if shape is None:
                shape = image.shape
                total = np.zeros(shape, np.float64)
            elif image.shape != shape:
                raise DataError(f"{what} has shape {'x'.join(map(str, image.shape))} (channels x "
                                f"height x width), the first record {'x'.join(map(str, shape))}; "
                                "a mean needs records of one size")
            total += image
            if progress:
                progress(1)
    finally:
        reader.close()
    mean = (total / reader.count).astype(np.float32)
    if output:
        blob = pb.BlobProto(num=1, channels=shape[0], height=shape[1], width=shape[2])
        blob.data.extend(mean.ravel().tolist())
        proto_io.write_binary(blob, output)
    channel_means = mean.reshape(shape[0], -1).mean(axis=1, dtype=np.float64)
    return mean, channel_means
