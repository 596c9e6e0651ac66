"""Images in Caffe's conventions, with Pillow instead of OpenCV.

Caffe reads images with OpenCV, so everything it stores and feeds to a net has
OpenCV's layout: colour pixels in **BGR** order (a Caffe model's ``mean_value: 104
117 123`` is blue, green, red), 8 bits per channel. Here an image is a ``(C, H, W)``
uint8 array, C = 1 (grey), 3 (BGR) or 4 (BGRA, the native decoding of a picture with
an alpha channel), the layout of a raw ``Datum``.

* :func:`decode` - encoded bytes (PNG, JPEG, anything Pillow reads) to an image,
  natively or forced to colour / grey (OpenCV's ``imdecode`` flags -1, 1, 0);
* :func:`read_image` - Caffe's ``ReadImageToCVMat``: a file, in colour or grey,
  resized when both sizes are given;
* :func:`resize` - OpenCV's ``INTER_LINEAR`` (the resize Caffe uses): pixel centres
  aligned, two taps per axis, 11-bit fixed-point weights, so a resized image agrees
  with Caffe's to within one grey level (Pillow's own bilinear filter averages over the
  whole footprint when shrinking, which OpenCV does not);
* :func:`encode` - an image to PNG or JPEG bytes (JPEG at quality 95, OpenCV's default).

Pillow releases the GIL while it decodes, so decoding on several threads overlaps.
"""
import io
import os
import re

import numpy as np

from . import DataError

# Pillow modes decoded natively to one grey channel; everything else becomes BGR or BGRA.
_GREY_MODES = {"1", "L", "I;16", "I;16B", "I;16L", "I", "F"}


def _pil():
    from PIL import Image
    return Image


def _to_8bit(img):
    """Pillow's 16/32-bit grey modes brought to 8 bits (OpenCV's colour and grey reads do so)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.uint32) >> (8 if img.mode.startswith("I;16") else 24)
        return _pil().fromarray(array.astype(np.uint8), "L")
    if img.mode == "F":
        return _pil().fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    return img


def to_chw(img, color):
    """A loaded Pillow image as a (C, H, W) uint8 array: color True -> BGR, False -> grey,
    None -> native (grey, BGR, or BGRA when the picture has an alpha channel)."""
    if color is None:
        channels = native_channels(img)
        if channels == 4:
            array = np.asarray(img.convert("RGBA"))
            return np.ascontiguousarray(array[:, :, [2, 1, 0, 3]].transpose(2, 0, 1))
        color = channels == 3
    img = _to_8bit(img)
    if color:
        array = np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
        return np.ascontiguousarray(array[:, :, ::-1].transpose(2, 0, 1))
    array = np.asarray(img if img.mode == "L" else img.convert("L"))
    return array.reshape((1,) + array.shape).copy()


def open_image(buffer, what="image"):
    """Encoded bytes -> a decoded Pillow image; DataError naming ``what`` when Pillow cannot
    decode it."""
    Image = _pil()
    try:
        img = Image.open(io.BytesIO(buffer))
        img.load()
        return img
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{what}: cannot decode the image ({len(buffer)} bytes): {e}") from None


def native_channels(img):
    """The channels OpenCV's IMREAD_UNCHANGED would give a Pillow image: 1, 3 or 4."""
    if img.mode in _GREY_MODES:
        return 1
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return 4
    return 3


def decode(buffer, color=None, what="image"):
    """Encoded bytes -> (C, H, W) uint8 (BGR for colour). ``color``: None keeps the picture's
    own channels (OpenCV's IMREAD_UNCHANGED, as Caffe's ``DecodeDatumNative``), True forces
    3 channels, False one. DataError naming ``what`` when Pillow cannot decode it."""
    return to_chw(open_image(buffer, what), color)


def read_image(path, height=0, width=0, color=True):
    """Caffe's ``ReadImageToCVMat``: the image at ``path`` in colour (BGR) or grey, resized
    to height x width when both are positive. DataError naming the file when it is missing
    or not an image."""
    try:
        with open(path, "rb") as f:
            buffer = f.read()
    except OSError as e:
        raise DataError(f"cannot read image '{path}': {e.strerror}") from None
    image = decode(buffer, color, what=f"image '{path}'")
    if height > 0 and width > 0:
        image = resize(image, height, width)
    return image


def _linear_taps(src, dst):
    """OpenCV INTER_LINEAR's taps along one axis: for each output index, the two source
    indices and their 11-bit fixed-point weights (cv::resize's ``xofs`` and ``ialpha``)."""
    scale = src / dst
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i = np.floor(f).astype(np.int64)
    f = (f - i).astype(np.float32)
    low = i < 0
    f[low], i[low] = 0, 0
    high = i >= src - 1
    f[high], i[high] = 0, src - 1
    w0 = np.rint((np.float32(1) - f) * np.float32(2048)).astype(np.int32)
    w1 = np.rint(f * np.float32(2048)).astype(np.int32)
    return i, np.minimum(i + 1, src - 1), w0, w1


def resize(image, height, width):
    """(C, H, W) uint8 -> (C, height, width) uint8 with OpenCV's INTER_LINEAR: source
    coordinate (x + 0.5)·W/width − 0.5 clamped to the image, two taps per axis with weights
    rounded to 1/2048, the result rounded from 22 fractional bits (cv::resize's scalar path)."""
    c, h, w = image.shape
    if (h, w) == (height, width):
        return image.copy()
    y0, y1, wy0, wy1 = _linear_taps(h, height)
    x0, x1, wx0, wx1 = _linear_taps(w, width)
    src = image.astype(np.int32)
    rows0, rows1 = src[:, y0], src[:, y1]
    top = rows0[:, :, x0] * wx0 + rows0[:, :, x1] * wx1
    bottom = rows1[:, :, x0] * wx0 + rows1[:, :, x1] * wx1
    out = (top * wy0[:, None] + bottom * wy1[:, None] + (1 << 21)) >> 22
    return np.clip(out, 0, 255).astype(np.uint8)


def encode(image, fmt):
    """(C, H, W) uint8 (grey, BGR or BGRA) -> PNG or JPEG bytes (``fmt`` "png" or "jpg"/"jpeg")."""
    Image = _pil()
    fmt = fmt.lower()
    if fmt not in ("png", "jpg", "jpeg"):
        raise DataError(f"encode_type must be png or jpg, got '{fmt}'")
    c = image.shape[0]
    if c == 1:
        img = Image.fromarray(image[0], "L")
    elif c == 3:
        img = Image.fromarray(np.ascontiguousarray(image[::-1].transpose(1, 2, 0)), "RGB")
    elif c == 4:
        img = Image.fromarray(np.ascontiguousarray(image[[2, 1, 0, 3]].transpose(1, 2, 0)), "RGBA")
        if fmt != "png":
            img = img.convert("RGB")
    else:
        raise DataError(f"cannot encode an image of {c} channels")
    out = io.BytesIO()
    if fmt == "png":
        img.save(out, "PNG")
    else:
        img.save(out, "JPEG", quality=95)
    return out.getvalue()


def where_hint(path):
    """For messages about a relative path: where it was looked for."""
    return "" if os.path.isabs(path) else f" (relative paths are read from the working directory, {os.getcwd()})"


def read_text(path, what):
    """The text of ``path`` ("the image list", "the window file"); DataError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read {what} '{path}': {e.strerror}{where_hint(path)}") from None
    except UnicodeDecodeError:
        raise DataError(f"{what} '{path}' is not a text file") from None


_LIST_LINE = re.compile(r"^(.*\S)\s+(\S+)$")
_INTEGER = re.compile(r"^[+-]?\d+$")


def read_image_list(source):
    """[(path, label, line number)] of a Caffe image list: one "path label" per line, the
    label an integer after the last space (so paths may hold spaces). DataError naming the
    file and line for a line without a label."""
    text = read_text(source, "the image list")
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        match = _LIST_LINE.match(line)
        if match is None or not _INTEGER.match(match.group(2)):
            raise DataError(f"line {number} of the image list '{source}' has no integer label "
                            f"after the path: {line!r} (each line is \"path label\")")
        lines.append((match.group(1), int(match.group(2)), number))
    if not lines:
        raise DataError(f"the image list '{source}' is empty")
    return lines
