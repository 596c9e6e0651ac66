"""Blob: an N-d array of ``data`` and one of ``diff`` (the gradient), as in Caffe.

Each buffer lives in a :class:`SyncedMemory` that keeps a host copy (numpy) and a
device copy (a numba device array) and copies lazily, only when the other side
asks for it, like Caffe's SyncedMemory. Layers ask for the buffer on the side
they run: ``blob.data_on("gpu")`` for reading, ``blob.mutable_data_on("gpu")``
for writing. From Python, ``blob.data`` and ``blob.diff`` always give a host
numpy view in the blob's shape; since a user may write into it, asking for it
marks the host copy as the fresh one.
"""
import math
import os

import numpy as np

from .errors import JitnetError

INT_MAX = 2**31 - 1     # Caffe's Blob::Reshape refuses more values than this

_UNINIT, _AT_HOST, _AT_DEVICE, _SYNCED = range(4)


class SyncedMemory:
    """A flat buffer of ``size`` elements with a host and a device copy."""

    __slots__ = ("size", "dtype", "_host", "_device", "_head")

    def __init__(self, size, dtype):
        self.size, self.dtype = int(size), np.dtype(dtype)
        self._host = self._device = None
        self._head = _UNINIT

    def _to_host(self):
        if self._head == _UNINIT:
            self._host = np.zeros(self.size, self.dtype)
            self._head = _AT_HOST
        elif self._head == _AT_DEVICE:
            if self._host is None:
                self._host = np.empty(self.size, self.dtype)
            self._device.copy_to_host(self._host)
            self._head = _SYNCED

    def _to_device(self):
        from numba import cuda
        if self._head == _UNINIT:
            self._device = cuda.to_device(np.zeros(self.size, self.dtype))
            self._head = _AT_DEVICE
        elif self._head == _AT_HOST:
            if self._device is None:
                self._device = cuda.to_device(self._host)
            else:
                self._device.copy_to_device(self._host)
            self._head = _SYNCED

    def host(self):
        self._to_host()
        return self._host

    def mutable_host(self):
        self._to_host()
        self._head = _AT_HOST
        return self._host

    def device(self):
        self._to_device()
        return self._device

    def mutable_device(self):
        self._to_device()
        self._head = _AT_DEVICE
        return self._device

    def on(self, where, mutable):
        if where == "cpu":
            return self.mutable_host() if mutable else self.host()
        return self.mutable_device() if mutable else self.device()


def _as_shape(shape):
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)):
        shape = shape[0]
    try:
        if isinstance(shape, (str, bytes)):
            raise TypeError
        shape = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise JitnetError(f"a blob shape is a sequence of integers, got {shape!r}") from None
    if any(d < 0 for d in shape):
        raise JitnetError(f"blob shape {shape} has a negative dimension")
    return shape


def available_memory():
    """Bytes of memory the system can still give (Linux MemAvailable; else physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes_text(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.4g} {unit}" if unit != "bytes" else f"{n} bytes"
        n /= 1024


class Blob:
    """A shape, ``data`` and ``diff`` (float32 unless told otherwise). ``name`` (the net's
    name for the blob, when it has one) appears in error messages."""

    def __init__(self, *shape, dtype=np.float32, name=None):
        self.dtype = np.dtype(dtype)
        self.name = name
        self._shape = ()
        self._count = 1
        self._data = SyncedMemory(1, self.dtype)
        self._diff = SyncedMemory(1, self.dtype)
        if shape:
            self.reshape(*shape)

    # -- shape -------------------------------------------------------------------------------
    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return self._count

    @property
    def num_axes(self):
        return len(self._shape)

    def legacy_shape(self, index):
        """Caffe's LegacyShape: dimension ``index`` of at most 4 axes, 1 for an axis the blob
        lacks (what ``num``, ``channels``, ``height`` and ``width`` give)."""
        if len(self._shape) > 4:
            raise JitnetError(f"cannot use legacy accessors (num, channels, height, width) on a "
                              f"blob of shape {self._shape} with more than 4 axes")
        return self._shape[index] if index < len(self._shape) else 1

    num = property(lambda self: self.legacy_shape(0), doc="Axis 0 (1 if absent), as pycaffe's.")
    channels = property(lambda self: self.legacy_shape(1), doc="Axis 1 (1 if absent).")
    height = property(lambda self: self.legacy_shape(2), doc="Axis 2 (1 if absent).")
    width = property(lambda self: self.legacy_shape(3), doc="Axis 3 (1 if absent).")

    def count_range(self, start, end=None):
        """Product of the dimensions in [start, end)."""
        return math.prod(self._shape[start:end])

    def canonical_axis(self, axis):
        """A possibly negative axis index as a non-negative one, checked as Caffe's
        CanonicalAxisIndex: -num_axes <= axis < num_axes (a 0-D blob has no axis)."""
        n = len(self._shape)
        if not -n <= axis < n:
            raise JitnetError(f"axis {axis} is out of range for a blob of shape {self._shape} "
                              f"({n} axes)")
        return axis + n if axis < 0 else axis

    def reshape(self, *shape):
        """Give the blob a new shape; keeps the allocation when the new count fits.

        Raises JitnetError, before allocating anything, for a shape with more than
        INT_MAX values (Caffe's limit) or whose data would not fit in the memory left."""
        shape = _as_shape(shape)
        count = math.prod(shape)
        if count > self._data.size:
            self._check_size(shape, count)
            self._data = SyncedMemory(count, self.dtype)
            self._diff = SyncedMemory(count, self.dtype)
        self._shape, self._count = shape, count

    def _check_size(self, shape, count):
        what = f"blob '{self.name}'" if self.name else "a blob"
        need = count * self.dtype.itemsize
        if count > INT_MAX:
            raise JitnetError(f"{what} of shape {shape} would hold {count} values "
                              f"({_bytes_text(need)} as {self.dtype.name}), more than Caffe's "
                              f"limit of {INT_MAX} values per blob")
        free = available_memory()
        if free is not None and need > free:
            raise JitnetError(f"{what} of shape {shape} would need {_bytes_text(need)} "
                              f"({self.dtype.name} data alone), more than the "
                              f"{_bytes_text(free)} of memory available")

    # -- buffers for kernels -----------------------------------------------------------------
    def data_on(self, where):
        """The flat data buffer (``count`` elements) on ``"cpu"`` or ``"gpu"``, for reading."""
        return self._data.on(where, False)[: self._count]

    def mutable_data_on(self, where):
        """The flat data buffer on ``where``, marked as the fresh copy."""
        return self._data.on(where, True)[: self._count]

    def diff_on(self, where):
        return self._diff.on(where, False)[: self._count]

    def mutable_diff_on(self, where):
        return self._diff.on(where, True)[: self._count]

    # -- Python surface (host numpy views in the blob's shape) ---------------------------------
    @property
    def data(self):
        return self._data.mutable_host()[: self._count].reshape(self._shape)

    @data.setter
    def data(self, value):
        self._assign(self.data, value, "data")

    @property
    def diff(self):
        return self._diff.mutable_host()[: self._count].reshape(self._shape)

    @diff.setter
    def diff(self, value):
        self._assign(self.diff, value, "diff")

    def _assign(self, target, value, what):
        value = np.asarray(value)
        if value.shape != self._shape and value.size != self._count:
            raise JitnetError(f"cannot assign an array of shape {value.shape} to the {what} "
                              f"of a blob of shape {self._shape}")
        target[...] = value.reshape(self._shape)

    # -- sharing (Flatten, Reshape, Split, shared parameters) ----------------------------------
    def share_data(self, other):
        """Use ``other``'s data buffer (counts must match)."""
        self._check_share(other)
        self._data = other._data

    def share_diff(self, other):
        """Use ``other``'s diff buffer (counts must match)."""
        self._check_share(other)
        self._diff = other._diff

    def _check_share(self, other):
        if other.count != self.count or other.dtype != self.dtype:
            raise JitnetError(f"cannot share a blob of shape {other.shape} ({other.dtype}) with "
                              f"one of shape {self.shape} ({self.dtype})")

    def __repr__(self):
        return f"Blob(shape={self._shape}, dtype={self.dtype.name})"
