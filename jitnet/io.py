"""pycaffe's ``caffe.io``: images in and out of the net's layout, and Caffe's blob messages.

* :class:`Transformer` turns an image as :func:`load_image` gives it (H x W x K floats
  in [0, 1], channels RGB) into the net's input layout (K x H x W, maybe BGR, scaled,
  mean subtracted) and back;
* :func:`load_image` reads a file through Pillow, :func:`resize_image` resizes with
  interpolation, :func:`oversample` takes the ten crops (corners, centre, mirrored);
* :func:`blobproto_to_array`, :func:`array_to_blobproto`, :func:`array_to_datum`,
  :func:`datum_to_array` convert Caffe's messages (``jitnet.proto.pb``).

Where pycaffe raises a bare Exception or ValueError, these raise
:class:`jitnet.JitnetError` (a ValueError too for the mean and shape checks, so code
catching pycaffe's ValueError keeps working) with the input, the shapes and the file.
"""
import os

import numpy as np

from .errors import JitnetError, ProtoError
from .proto import io as proto_io
from .proto import pb

__all__ = ["Transformer", "load_image", "resize_image", "oversample", "blobproto_to_array",
           "array_to_blobproto", "arraylist_to_blobprotovector_str",
           "blobprotovector_str_to_arraylist", "array_to_datum", "datum_to_array", "load_mean"]


class TransformerError(JitnetError, ValueError):
    """A Transformer setting does not fit the net's input (a ValueError, as in pycaffe)."""


# --------------------------------------------------------------------------- blob messages
def blobproto_to_array(blob, return_diff=False):
    """The data (or with ``return_diff`` the diff) of a BlobProto as an array of its shape
    (``shape.dim``, or the legacy num x channels x height x width)."""
    if return_diff:
        return proto_io.blob_diff_to_array(blob)
    return proto_io.blob_to_array(blob)


def array_to_blobproto(arr, diff=None):
    """A BlobProto holding ``arr`` (as float32 ``data``, as pycaffe stores it) and ``diff``."""
    arr = np.asarray(arr, dtype=np.float32)
    return proto_io.array_to_blob(arr, pb.BlobProto(),
                                  diff=None if diff is None else np.asarray(diff, np.float32))


def arraylist_to_blobprotovector_str(arraylist):
    """A serialized BlobProtoVector of the arrays."""
    vector = pb.BlobProtoVector()
    for array in arraylist:
        vector.blobs.add().CopyFrom(array_to_blobproto(array))
    return vector.SerializeToString()


def blobprotovector_str_to_arraylist(text):
    """The arrays of a serialized BlobProtoVector."""
    vector = pb.BlobProtoVector()
    vector.ParseFromString(text)
    return [blobproto_to_array(blob) for blob in vector.blobs]


def array_to_datum(arr, label=None):
    """A Datum of a C x H x W array: uint8 arrays as bytes in ``data``, anything else as
    ``float_data``; ``label`` if given."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise JitnetError(f"array_to_datum: a Datum holds a C x H x W array, got shape {arr.shape}")
    datum = pb.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2])
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    """The C x H x W array of a Datum (uint8 from ``data``, float from ``float_data``).
    Encoded datums (compressed images) are not decoded, as in pycaffe."""
    shape = (datum.channels, datum.height, datum.width)
    if datum.encoded:
        raise JitnetError("datum_to_array: the Datum holds an encoded (compressed) image; "
                          "decode it with Pillow first")
    if len(datum.data):
        values = np.frombuffer(datum.data, dtype=np.uint8)
    else:
        values = np.array(datum.float_data, dtype=float)
    if values.size != int(np.prod(shape)):
        raise JitnetError(f"datum_to_array: the Datum's shape {shape} needs {int(np.prod(shape))} "
                          f"values, it holds {values.size}")
    return values.reshape(shape)


# --------------------------------------------------------------------------- images
def load_image(filename, color=True):
    """An image file as an H x W x 3 (``color``) or H x W x 1 float32 array in [0, 1], RGB,
    read through Pillow. Grey from colour uses the luminance weights pycaffe's reader
    (scikit-image) uses: 0.2125 R + 0.7154 G + 0.0721 B; 16-bit images scale by 65535."""
    try:
        from PIL import Image
    except ImportError:
        raise JitnetError("jitnet.io.load_image needs Pillow: pip install pillow") from None
    try:
        with Image.open(filename) as image:
            image.load()
            if image.mode.startswith("I;16"):
                array = np.asarray(image, dtype=np.float64) / 65535.0
            elif image.mode in ("L", "1"):
                array = np.asarray(image.convert("L"), dtype=np.float64) / 255.0
            else:                                   # colour, palette, alpha (dropped), ...
                array = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    except (OSError, ValueError, SyntaxError) as error:
        raise JitnetError(f"{filename}: cannot read as an image ({error})") from None
    if array.ndim == 2:
        array = array[:, :, np.newaxis]
    if color:
        if array.shape[2] == 1:
            array = np.tile(array, (1, 1, 3))
    elif array.shape[2] == 3:
        array = (array @ np.array([0.2125, 0.7154, 0.0721]))[:, :, np.newaxis]
    return array.astype(np.float32)


def resize_image(im, new_dims, interp_order=1):
    """Resize an H x W x K image to ``new_dims`` (height, width) by spline interpolation of
    ``interp_order`` (1: bilinear), pixel areas aligned as pycaffe's (scikit-image's)
    resize aligns them; a constant image stays constant. Returns float32."""
    from scipy import ndimage
    im = np.asarray(im)
    if im.ndim != 3:
        raise JitnetError(f"resize_image: an image is H x W x K, got shape {im.shape}")
    new_dims = tuple(int(d) for d in new_dims)
    if len(new_dims) != 2 or min(new_dims) < 1:
        raise JitnetError(f"resize_image: new_dims is (height, width), got {new_dims}")
    scale = (new_dims[0] / im.shape[0], new_dims[1] / im.shape[1], 1.0)
    if im.shape[-1] in (1, 3):
        low, high = float(im.min()), float(im.max())
        if high <= low:
            return np.full(new_dims + (im.shape[-1],), low, dtype=np.float32)
        unit = (im - low) / (high - low)
        out = ndimage.zoom(unit, scale, order=interp_order, mode="grid-constant", grid_mode=True)
        out = out[:new_dims[0], :new_dims[1]] * (high - low) + low
    else:
        out = ndimage.zoom(im, scale, order=interp_order)
    return out.astype(np.float32)


def oversample(images, crop_dims):
    """The ten crops of each H x W x K image: four corners and the centre, then the same
    five mirrored left-right; returns (10 N) x crop_h x crop_w x K float32."""
    images = [np.asarray(im) for im in images]
    if not images:
        raise JitnetError("oversample: no images")
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    if np.any(crop_dims > im_shape[:2]):
        raise JitnetError(f"oversample: crops of {tuple(crop_dims)} do not fit images of "
                          f"{tuple(im_shape[:2])}")
    im_center = im_shape[:2] / 2.0
    crops_ix = np.empty((5, 4), dtype=int)
    k = 0
    for i in (0, im_shape[0] - crop_dims[0]):
        for j in (0, im_shape[1] - crop_dims[1]):
            crops_ix[k] = (i, j, i + crop_dims[0], j + crop_dims[1])
            k += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]
    return crops


def load_mean(path):
    """The mean image of a ``.binaryproto`` (Caffe's mean file) or ``.npy`` file, with a
    leading axis of 1 dropped (a mean file holds 1 x C x H x W)."""
    path = os.fspath(path)
    if path.endswith(".npy"):
        try:
            mean = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise JitnetError(f"{path}: cannot read as a .npy mean ({error})") from None
    else:
        mean = proto_io.read_blob_proto(path)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    return mean


# --------------------------------------------------------------------------- Transformer
class Transformer:
    """Preprocessing between images (H x W x K, RGB, [0, 1]) and a net's inputs, as
    pycaffe's ``caffe.io.Transformer``.

    ``Transformer({name: shape of the input blob})``; per input: ``set_transpose`` (e.g.
    (2, 0, 1) for H x W x K -> K x H x W), ``set_channel_swap`` (e.g. (2, 1, 0) for RGB ->
    BGR), ``set_raw_scale`` (e.g. 255 for nets trained on 0..255 pixels), ``set_mean``
    (per-channel values or a K x H x W image; an array, or the path of a .binaryproto or
    .npy mean file) and ``set_input_scale``. ``preprocess`` applies them in pycaffe's
    order: resize to the input's H x W, transpose, channel swap, raw scale, subtract the
    mean, input scale; ``deprocess`` undoes them."""

    def __init__(self, inputs):
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose, self.channel_swap = {}, {}
        self.raw_scale, self.mean, self.input_scale = {}, {}, {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise TransformerError(f"'{in_}' is not one of the net inputs: "
                                   f"{', '.join(self.inputs) or 'none'}")

    def preprocess(self, in_, data):
        """An image (H x W x K) as the input ``in_`` takes it (K x H x W), float32."""
        self._check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=True)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[channel_swap, :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_, data):
        """The inverse of preprocess (but for the resize): net layout back to an image."""
        self._check_input(in_)
        decaf_in = np.array(data, copy=True).squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_, order):
        """The order of the image's axes in the input, e.g. (2, 0, 1): H x W x K -> K x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise TransformerError(f"set_transpose('{in_}', {tuple(order)}): the order needs "
                                   f"{len(self.inputs[in_]) - 1} axes for the input of shape "
                                   f"{self.inputs[in_]}")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order):
        """The order of the channels, e.g. (2, 1, 0): RGB -> BGR (Caffe's reference models).
        Applied after the transpose, so the channels are the first axis."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise TransformerError(f"set_channel_swap('{in_}', {tuple(order)}): the input has "
                                   f"{self.inputs[in_][1]} channels (shape {self.inputs[in_]})")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale):
        """Multiply by ``scale`` after the transpose and swap (255 turns [0, 1] into 0..255)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Subtract ``mean``: K values (one per channel) or a K x H x W image, or the path of a
        mean file (.binaryproto as Caffe writes it, or .npy). A mean that does not fit the
        input is an error naming the shapes (and the file)."""
        self._check_input(in_)
        source = ""
        if isinstance(mean, (str, os.PathLike)):
            source = f"the mean file {os.fspath(mean)}: "
            try:
                mean = load_mean(mean)
            except ProtoError as error:
                raise TransformerError(f"set_mean('{in_}'): {error}") from None
        mean = np.asarray(mean, dtype=np.float32)
        shape = self.inputs[in_]
        if mean.ndim == 1:
            if len(shape) < 2 or mean.shape[0] != shape[1]:
                raise TransformerError(
                    f"set_mean('{in_}'): {source}{mean.shape[0]} per-channel values, but the "
                    f"input of shape {shape} has {shape[1] if len(shape) > 1 else 'no'} channels")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            ms = mean.shape
            if mean.ndim == 4 and ms[0] == 1:
                ms = ms[1:]
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3 or ms != shape[1:]:
                hint = ""
                if len(ms) == 3 and len(shape) == 4 and ms[0] == shape[1]:
                    hint = (" (a mean image of another size: crop it to the input, or take the "
                            "per-channel mean, mean.mean(1).mean(1))")
                raise TransformerError(
                    f"set_mean('{in_}'): {source}the mean has shape {mean.shape}, which does not "
                    f"fit the input of shape {shape}: give {shape[1:]} or {shape[1]} "
                    f"per-channel values{hint}")
            mean = mean.reshape(ms)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        """Multiply by ``scale`` after subtracting the mean."""
        self._check_input(in_)
        self.input_scale[in_] = scale
