"""Blob: shape, allocation reuse, sharing, and the lazy host/device synchronisation
(the device side runs on numba's CUDA simulator in the test suite)."""
import numpy as np
import pytest
from numba import cuda

import jitnet
from jitnet import Blob


def test_shape_count_and_zero_init():
    b = Blob(2, 3, 4)
    assert b.shape == (2, 3, 4) and b.count == 24 and b.num_axes == 3
    assert b.count_range(1) == 12 and b.count_range(0, 2) == 6
    assert b.data.dtype == np.float32 and not b.data.any() and not b.diff.any()
    assert Blob((5, 2), dtype=np.float64).data.dtype == np.float64
    assert b.canonical_axis(-1) == 2
    with pytest.raises(jitnet.JitnetError):
        b.canonical_axis(3)
    with pytest.raises(jitnet.JitnetError):
        Blob(2, -1)


def test_reshape_keeps_the_allocation_when_it_fits():
    b = Blob(4, 6)
    b.data[...] = np.arange(24).reshape(4, 6)
    buffer = b._data
    b.reshape(3, 8)
    assert b._data is buffer and b.shape == (3, 8)
    np.testing.assert_array_equal(b.data.ravel(), np.arange(24))
    b.reshape(2, 2)
    assert b._data is buffer
    b.reshape(5, 6)                                      # larger: a new buffer
    assert b._data is not buffer and b.count == 30


def test_assignment_checks_the_shape():
    b = Blob(2, 3)
    b.data = np.ones((2, 3))
    b.diff = np.full(6, 2.0)                             # same count, flat
    assert b.data.sum() == 6 and b.diff.sum() == 12
    with pytest.raises(jitnet.JitnetError, match="cannot assign"):
        b.data = np.ones((4, 4))


def test_share_data_and_diff():
    a, b = Blob(2, 3), Blob(6)
    b.share_data(a)
    a.data[...] = 7
    assert (b.data == 7).all() and not (b.diff == 7).any()
    b.share_diff(a)
    b.diff[...] = 3
    assert (a.diff == 3).all()
    with pytest.raises(jitnet.JitnetError, match="cannot share"):
        Blob(5).share_data(a)


def test_host_device_sync_is_lazy_and_follows_the_fresh_copy():
    b = Blob(10)
    b.data[...] = np.arange(10)
    device = b.mutable_data_on("gpu")                    # copies host -> device
    np.testing.assert_array_equal(device.copy_to_host(), np.arange(10))

    @cuda.jit
    def double(x):
        i = cuda.grid(1)
        if i < x.shape[0]:
            x[i] = 2 * x[i]
    double[1, 32](device)
    np.testing.assert_array_equal(b.data, 2 * np.arange(10))   # device fresher: copied back
    b.data[3] = -1                                       # host fresher again
    np.testing.assert_array_equal(b.data_on("gpu").copy_to_host()[:4], [0, 2, 4, -1])


def test_reading_does_not_make_a_copy_stale():
    b = Blob(4)
    b.data[...] = 1
    b.data_on("gpu")                                     # now synced
    b.data_on("cpu")
    b.mutable_data_on("gpu")[0] = 5                      # write on the device...
    assert b.data[0] == 5                                # ...is seen on the host


def test_legacy_accessors_follow_caffe():
    """num/channels/height/width: 1 for an axis the blob lacks; refused past 4 axes."""
    b = jitnet.Blob(2, 3)
    assert (b.num, b.channels, b.height, b.width) == (2, 3, 1, 1)
    assert jitnet.Blob(()).num == 1
    with pytest.raises(jitnet.JitnetError, match="more than 4 axes"):
        jitnet.Blob(1, 2, 3, 4, 5).num
