"""The data Caffe users keep on disk, and the machinery the data layers share.

* :mod:`jitnet.data.image` - decoding and encoding images with Pillow in Caffe's
  conventions (colour images as BGR planes, as OpenCV gives them to Caffe), and
  OpenCV's bilinear resize;
* :mod:`jitnet.data.db` - LMDB and LevelDB databases of ``caffe.Datum`` records:
  readers, writers, and Datum <-> image conversion;
* :mod:`jitnet.data.transformer` - Caffe's DataTransformer (``transform_param``: crop,
  mirror, mean subtraction, scale, force_color / force_gray);
* :mod:`jitnet.data.prefetch` - batches read ahead on a background thread, with errors
  raised in the training thread and an exact position for snapshots;
* :mod:`jitnet.data.tools` - ``convert_imageset`` and ``compute_image_mean``.

Every problem with a user's data is a :class:`DataError` naming the file.
"""
from ..errors import JitnetError


class DataError(JitnetError):
    """A database, image, list file or mean file could not be used. The message names the file."""
