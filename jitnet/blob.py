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

import numpy as np

from .errors import JitnetError

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


class Blob:
    """A shape, ``data`` and ``diff`` (float32 unless told otherwise)."""

    def __init__(self, *shape, dtype=np.float32):
        self.dtype = np.dtype(dtype)
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

    def count_range(self, start, end=None):
        """Product of the dimensions in [start, end)."""
        return math.prod(self._shape[start:end])

    def canonical_axis(self, axis):
        """A possibly negative axis index as a non-negative one, checked."""
        n = len(self._shape)
        if not -n <= axis < max(n, 1):
            raise JitnetError(f"axis {axis} is out of range for a blob of shape {self._shape}")
        return axis + n if axis < 0 else axis

    def reshape(self, *shape):
        """Give the blob a new shape; keeps the allocation when the new count fits."""
        shape = _as_shape(shape)
        count = math.prod(shape)
        self._shape, self._count = shape, count
        if count > self._data.size:
            self._data = SyncedMemory(count, self.dtype)
            self._diff = SyncedMemory(count, self.dtype)

    def reshape_like(self, other):
        self.reshape(other.shape)

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
