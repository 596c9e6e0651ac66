"""Caffe's DataTransformer: what ``transform_param`` does to each image a data layer reads.

For an image x of shape (C, H, W) (raw Datum bytes, ``float_data``, or a decoded picture)
and a crop of size S (``crop_size``; 0 keeps H x W), Caffe's data_transformer.cpp
computes, in the net's float type:

    h0, w0 = random offsets in [0, H − S] x [0, W − S] (TRAIN), or ((H − S) / 2, (W − S) / 2)
             (TEST), integer division; 0 without a crop
    mirror = transform_param.mirror and a fair coin (in every phase, as Caffe does)
    y[c, h, w'] = (x[c, h0 + h, w0 + w] − m) · scale,   w' = S − 1 − w when mirror, else w

with m = mean[c, h0 + h, w0 + w] from ``mean_file`` (a .binaryproto of the *uncropped*
shape, indexed at the source pixel) or ``mean_value[c]`` (one value for every channel, or
one per channel). ``mean_file`` and ``mean_value`` together are an error, as are
``force_color`` and ``force_gray`` together; those two decide how encoded records decode
(3 or 1 channels; otherwise their own channels).

The random numbers: each image gets three 32-bit draws (u0, u1, u2) - mirror = u0 mod 2,
h0 = u1 mod (H − S + 1), w0 = u2 mod (W − S + 1), Caffe's ``Rand(n)`` - and the draws of
batch k come from ``batch_generator(seed, k)``, a generator of their own keyed by the
layer's seed (drawn from jitnet's generator at setup) and the batch number. So a fixed
``jitnet.set_random_seed`` gives the same crops and mirrors every run, whichever thread
decodes, and a resumed run draws what the uninterrupted one would have.
"""
import numpy as np

from ..errors import ProtoError
from ..proto import io as proto_io
from . import DataError

DRAWS_PER_IMAGE = 3


def batch_generator(seed, batch_index):
    """The numpy Generator for the random draws of batch ``batch_index`` of a layer seeded ``seed``."""
    return np.random.default_rng([int(seed), int(batch_index)])


def draws(generator, count):
    """``count`` rows of three uint32 draws (mirror, row offset, column offset)."""
    return generator.integers(0, 2**32, size=(count, DRAWS_PER_IMAGE), dtype=np.uint64)


def read_mean_file(path):
    """A ``.binaryproto`` mean image as a (C, H, W) float32 array; DataError naming the file."""
    try:
        mean = proto_io.read_blob_proto(path)
    except ProtoError as e:
        raise DataError(f"cannot read mean_file: {e}") from None
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3:
        raise DataError(f"mean_file '{path}' holds a blob of shape {mean.shape}; a mean image is "
                        "1 x channels x height x width")
    return np.ascontiguousarray(mean, dtype=np.float32)


class DataTransformer:
    """``transform_param`` for one layer, in ``phase``, producing ``dtype`` values."""

    def __init__(self, param, phase, dtype=np.float32):
        from ..common import TRAIN
        self.train = phase == TRAIN
        self.dtype = np.dtype(dtype)
        self.scale = self.dtype.type(param.scale)
        self.mirror = bool(param.mirror)
        self.crop = int(param.crop_size)
        if param.mean_file and len(param.mean_value):
            raise DataError("transform_param: give mean_file or mean_value, not both (Caffe: "
                            "\"Cannot specify mean_file and mean_value at the same time\")")
        if param.force_color and param.force_gray:
            raise DataError("transform_param: force_color and force_gray cannot both be set")
        self.mean_file = param.mean_file or None
        self.mean = None
        if self.mean_file:
            self.mean = read_mean_file(self.mean_file).astype(self.dtype)
        self.mean_values = np.asarray(param.mean_value, dtype=self.dtype)
        self.color = True if param.force_color else False if param.force_gray else None
        self.forced_color = param.force_color or param.force_gray
        self._checked = set()

    @property
    def random(self):
        """Whether transforming draws random numbers (a random crop or mirror)."""
        return self.mirror or (self.crop > 0 and self.train)

    def output_shape(self, shape, what):
        """(C, H', W') of the transformed image of an input of ``shape`` (C, H, W), after the
        checks Caffe makes: a crop no larger than the image, a mean of the image's shape."""
        shape = tuple(int(d) for d in shape)
        if shape not in self._checked:
            self._check(shape, what)
            self._checked.add(shape)
        c, h, w = shape
        return (c, self.crop, self.crop) if self.crop else shape

    def _check(self, shape, what):
        c, h, w = shape
        if self.crop and (self.crop > h or self.crop > w):
            raise DataError(f"{what}: crop_size {self.crop} is larger than the image "
                            f"({h} x {w})")
        if self.mean is not None and self.mean.shape != shape:
            raise DataError(f"mean_file '{self.mean_file}' has shape {'x'.join(map(str, self.mean.shape))} "
                            f"(channels x height x width), but {what} is "
                            f"{'x'.join(map(str, shape))}; the mean must have the shape of the "
                            "uncropped data")
        if len(self.mean_values) not in (0, 1, c):
            raise DataError(f"transform_param has {len(self.mean_values)} mean_value entries for "
                            f"{c}-channel data ({what}); give one, or one per channel")

    def offsets(self, shape, draw):
        """(h0, w0, mirror) for an image of ``shape`` and its three draws."""
        _, h, w = shape
        mirror = self.mirror and bool(draw[0] % 2)
        if not self.crop:
            return 0, 0, mirror
        if self.train:
            return int(draw[1] % (h - self.crop + 1)), int(draw[2] % (w - self.crop + 1)), mirror
        return (h - self.crop) // 2, (w - self.crop) // 2, mirror

    def transform(self, image, out, draw, what="image"):
        """Write the transform of ``image`` (C, H, W) into ``out`` (C, H', W')."""
        shape = image.shape
        self.output_shape(shape, what)
        h0, w0, mirror = self.offsets(shape, draw)
        hh, ww = out.shape[1:]
        src = image[:, h0:h0 + hh, w0:w0 + ww]
        target = out[:, :, ::-1] if mirror else out
        if self.mean is not None:
            np.subtract(src, self.mean[:, h0:h0 + hh, w0:w0 + ww], out=target)
        elif len(self.mean_values):
            np.subtract(src, self._channel_means(shape[0]), out=target)
        else:
            target[...] = src
        if self.scale != 1:
            out *= self.scale

    def transform_batch(self, images, out, batch_draws, what):
        """Transform images (a list, or an (N, C, H, W) array) into ``out`` (N, C, H', W').
        ``batch_draws()`` gives the N rows of draws (called only when the transform is
        random); ``what(i)`` names image i in messages."""
        first = images[0].shape
        stacked = images if isinstance(images, np.ndarray) else None
        if not self.random and (stacked is not None or all(im.shape == first for im in images)):
            # One shape, no random crop or mirror: the whole batch at once.
            self.output_shape(first, what(0))
            if stacked is None:
                stacked = np.stack(images)
            if self.crop:
                h0, w0, _ = self.offsets(first, (0, 0, 0))
                stacked = stacked[:, :, h0:h0 + self.crop, w0:w0 + self.crop]
            if self.mean is not None:
                h0, w0, _ = self.offsets(first, (0, 0, 0))
                hh, ww = out.shape[2:]
                np.subtract(stacked, self.mean[None, :, h0:h0 + hh, w0:w0 + ww], out=out)
            elif len(self.mean_values):
                np.subtract(stacked, self._channel_means(first[0])[None], out=out)
            else:
                out[...] = stacked
            if self.scale != 1:
                out *= self.scale
            return
        rows = batch_draws()
        for i, image in enumerate(images):
            self.transform(image, out[i], rows[i], what(i))

    def _channel_means(self, channels):
        values = self.mean_values if len(self.mean_values) == channels else \
            np.full(channels, self.mean_values[0], dtype=self.dtype)
        return values.reshape(channels, 1, 1)
