"""Fillers against Caffe's definitions: ranges, moments, fan-in/fan-out scaling,
sparsity, the bilinear kernel, and reproducibility under set_random_seed."""
import math

import numpy as np
import pytest
from google.protobuf import text_format

import jitnet
from jitnet import Blob
from jitnet.fillers import fill
from jitnet.proto import pb


def filled(text, shape, seed=0):
    jitnet.set_random_seed(seed)
    blob = Blob(shape, dtype=np.float64)
    fill(text_format.Parse(text, pb.FillerParameter()), blob)
    return blob.data.copy()


def test_constant():
    assert np.all(filled('type: "constant" value: 2.5', (3, 4)) == 2.5)
    assert np.all(filled('', (5,)) == 0.0)            # Caffe's default: constant 0


def test_uniform_range_and_mean():
    v = filled('type: "uniform" min: -3 max: 1', (200, 100))
    assert v.min() >= -3 and v.max() < 1
    assert abs(v.mean() - (-1.0)) < 4 * (4 / math.sqrt(12)) / math.sqrt(v.size)


def test_gaussian_moments():
    v = filled('type: "gaussian" mean: 1.5 std: 0.5', (400, 100))
    assert abs(v.mean() - 1.5) < 4 * 0.5 / math.sqrt(v.size)
    assert abs(v.std() - 0.5) < 0.01


def test_gaussian_sparse_keeps_sparse_over_num():
    # Caffe: each weight is non-zero with probability sparse / num_outputs (the first axis).
    v = filled('type: "gaussian" std: 1 sparse: 5', (20, 5000))
    p = 5 / 20
    frac = np.count_nonzero(v) / v.size
    assert abs(frac - p) < 5 * math.sqrt(p * (1 - p) / v.size)


def test_positive_unitball_rows_sum_to_one():
    v = filled('type: "positive_unitball"', (7, 3, 2, 2))
    assert np.all(v >= 0)
    np.testing.assert_allclose(v.reshape(7, -1).sum(axis=1), 1.0, rtol=1e-12)


@pytest.mark.parametrize("norm,n", [("FAN_IN", 3 * 5 * 5), ("FAN_OUT", 64 * 5 * 5),
                                    ("AVERAGE", (3 * 25 + 64 * 25) / 2)])
def test_xavier_bound_follows_variance_norm(norm, n):
    v = filled(f'type: "xavier" variance_norm: {norm}', (64, 3, 5, 5))
    bound = math.sqrt(3.0 / n)
    assert np.abs(v).max() <= bound
    assert np.abs(v).max() > 0.95 * bound             # the draws fill the range
    assert abs(v.var() - bound ** 2 / 3) < 0.1 * bound ** 2 / 3


@pytest.mark.parametrize("norm,n", [("FAN_IN", 200), ("FAN_OUT", 100), ("AVERAGE", 150)])
def test_msra_std_follows_variance_norm(norm, n):
    v = filled(f'type: "msra" variance_norm: {norm}', (100, 200))   # fan_in 200, fan_out 100
    assert abs(v.std() - math.sqrt(2.0 / n)) < 0.02 * math.sqrt(2.0 / n)
    assert abs(v.mean()) < 4 * math.sqrt(2.0 / n) / math.sqrt(v.size)


@pytest.mark.parametrize("kind", ["xavier", "msra"])
def test_xavier_and_msra_on_1d_and_0d_blobs(kind):
    """As Caffe's legacy num()/channels(), a missing axis counts as 1: a 1-D blob of n values
    has fan_in = n / n = 1 and fan_out = n / 1 = n (a bias filled with xavier, say)."""
    v = filled(f'type: "{kind}"', (5000,))
    bound_or_std = math.sqrt(3.0) if kind == "xavier" else math.sqrt(2.0)      # n = fan_in = 1
    if kind == "xavier":
        assert np.abs(v).max() <= bound_or_std and np.abs(v).max() > 0.95 * bound_or_std
    else:
        assert abs(v.std() - bound_or_std) < 0.05 * bound_or_std
    v_out = filled(f'type: "{kind}" variance_norm: FAN_OUT', (5000,))       # n = fan_out = 5000
    assert np.abs(v_out).max() < 0.1
    assert filled(f'type: "{kind}"', ()).shape == ()


def test_bilinear_kernel_is_the_upsampling_kernel():
    # Caffe's filler is meant for kernel = 2·factor − factor % 2: the factor-2 kernel (size 4)
    # is the outer product of [1/4, 3/4, 3/4, 1/4], the factor-3 one (size 5) of
    # [1/3, 2/3, 1, 2/3, 1/3].
    v = filled('type: "bilinear"', (2, 1, 4, 4))
    ramp = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(v[0, 0], np.outer(ramp, ramp), rtol=1e-12)
    np.testing.assert_allclose(v[1, 0], np.outer(ramp, ramp), rtol=1e-12)
    v5 = filled('type: "bilinear"', (1, 1, 5, 5))
    ramp5 = np.array([1, 2, 3, 2, 1]) / 3
    np.testing.assert_allclose(v5[0, 0], np.outer(ramp5, ramp5), rtol=1e-12)


def test_same_seed_same_values_other_seed_other_values():
    a = filled('type: "gaussian"', (10, 10), seed=42)
    b = filled('type: "gaussian"', (10, 10), seed=42)
    c = filled('type: "gaussian"', (10, 10), seed=43)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unknown_filler_is_named():
    with pytest.raises(jitnet.JitnetError, match="unknown filler type 'fancy'"):
        filled('type: "fancy"', (2, 2))


def test_bilinear_needs_square_4d():
    with pytest.raises(jitnet.JitnetError, match="bilinear"):
        filled('type: "bilinear"', (2, 3))
