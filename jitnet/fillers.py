"""Fillers: initial values for learnable blobs, with Caffe's semantics.

Each filler is a function ``(FillerParameter, shape) -> float64 array`` drawing
from jitnet's seeded generator (``jitnet.set_random_seed``); :func:`fill` writes
the result into a blob. Fan-in and fan-out follow Caffe: for a blob of shape
(num, channels, ...), fan_in = count / num and fan_out = count / channels.
"""
import math

import numpy as np

from . import common
from .errors import JitnetError


def _check_finite(param, *names):
    for name in names:
        value = getattr(param, name)
        if not math.isfinite(value):
            raise JitnetError(f"{name} is {value}; the {param.type} filler needs a finite {name}")


def _check_no_sparse(param):
    """Caffe's CHECK_EQ(sparse, -1): only the gaussian filler makes sparse values."""
    if param.sparse != -1:
        raise JitnetError(f"sparse is {param.sparse}; only the gaussian filler takes sparse "
                          f"(the {param.type} filler does not, as in Caffe)")


def _fans(param, shape):
    """(fan_in, fan_out) = (count / num, count / channels); as Caffe's legacy num() and
    channels(), an axis the blob does not have counts as 1."""
    count = math.prod(shape)
    if count == 0:
        raise JitnetError(f"the {param.type} filler needs a non-empty blob (as Caffe), got "
                          f"shape {shape}")
    num = shape[0] if len(shape) > 0 else 1
    channels = shape[1] if len(shape) > 1 else 1
    return count / num, count / channels


def _variance_scale(param, shape):
    """n of Caffe's xavier/msra: fan_in, fan_out or their average (variance_norm)."""
    _check_no_sparse(param)
    norm = param.variance_norm
    if norm not in (param.FAN_IN, param.FAN_OUT, param.AVERAGE):
        raise JitnetError(f"variance_norm is {norm}; give FAN_IN, FAN_OUT or AVERAGE")
    fan_in, fan_out = _fans(param, shape)
    if norm == param.FAN_OUT:
        return fan_out
    if norm == param.AVERAGE:
        return (fan_in + fan_out) / 2.0
    return fan_in


def constant(param, shape):
    """Every value = ``value``."""
    _check_no_sparse(param)
    _check_finite(param, "value")
    return np.full(shape, param.value, dtype=np.float64)


def uniform(param, shape):
    """Uniform in [min, max)."""
    _check_no_sparse(param)
    _check_finite(param, "min", "max")
    if param.max < param.min:
        raise JitnetError(f"max ({param.max:g}) is less than min ({param.min:g}) in the uniform filler")
    return common.rng().uniform(param.min, param.max, size=shape)


def gaussian(param, shape):
    """Normal(mean, std); with ``sparse`` = s >= 0, each value is kept with probability s / num."""
    _check_finite(param, "mean", "std")
    if param.std < 0:
        raise JitnetError(f"std is {param.std:g}; the gaussian filler needs std >= 0")
    if param.sparse < -1:
        raise JitnetError(f"sparse is {param.sparse}; give -1 (dense) or the expected number of "
                          "non-zero values per output (>= 0)")
    values = common.rng().normal(param.mean, param.std, size=shape)
    if param.sparse >= 0:
        if len(shape) < 1 or shape[0] == 0:
            raise JitnetError(f"the gaussian filler with sparse needs a non-empty first axis, got "
                              f"shape {shape}")
        keep_probability = param.sparse / shape[0]
        if keep_probability > 1:
            raise JitnetError(f"sparse ({param.sparse}) is more than the number of outputs "
                              f"({shape[0]}, the first axis of shape {shape}): each value would be "
                              "kept with a probability above 1")
        values *= common.rng().random(size=shape) < keep_probability
    return values


def positive_unitball(param, shape):
    """Uniform in [0, 1), then each of the num rows scaled to sum to 1."""
    _check_no_sparse(param)
    values = common.rng().random(size=shape)
    if values.size:
        rows = values.reshape(shape[0], -1) if shape else values.reshape(1, -1)
        rows /= rows.sum(axis=1, keepdims=True)
    return values


def xavier(param, shape):
    """Uniform in ±√(3/n), n from variance_norm (fan_in by default)."""
    scale = math.sqrt(3.0 / _variance_scale(param, shape))
    return common.rng().uniform(-scale, scale, size=shape)


def msra(param, shape):
    """Normal(0, √(2/n)), n from variance_norm (fan_in by default)."""
    std = math.sqrt(2.0 / _variance_scale(param, shape))
    return common.rng().normal(0.0, std, size=shape)


def bilinear(param, shape):
    """The bilinear upsampling kernel for Deconvolution: (1−|x/f−c|)(1−|y/f−c|)."""
    _check_no_sparse(param)
    if len(shape) != 4 or shape[2] != shape[3]:
        raise JitnetError(f"the bilinear filler needs a 4-D blob with square kernels, got shape {shape}")
    size = shape[3]
    if size == 0:
        return np.zeros(shape)
    f = math.ceil(size / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    ramp = 1.0 - np.abs(np.arange(size) / f - c)
    return np.broadcast_to(np.outer(ramp, ramp), shape).copy()


FILLERS = {
    "constant": constant,
    "uniform": uniform,
    "gaussian": gaussian,
    "positive_unitball": positive_unitball,
    "xavier": xavier,
    "msra": msra,
    "bilinear": bilinear,
}


def fill(param, blob, where=""):
    """Fill ``blob.data`` as the FillerParameter ``param`` says.

    Each filler checks its parameters first (finite numbers, min <= max, std >= 0, sparse
    only for gaussian, ...), so a mistake is a JitnetError naming the field; ``where``
    (e.g. "layer 'ip1' weight_filler") is put in front of the message."""
    try:
        filler = FILLERS[param.type]
    except KeyError:
        raise JitnetError(f"{where + ': ' if where else ''}unknown filler type '{param.type}'; "
                          f"known: {', '.join(sorted(FILLERS))}") from None
    try:
        blob.data[...] = filler(param, blob.shape)
    except JitnetError as e:
        raise JitnetError(f"{where + ': ' if where else ''}{e}") from None
    except MemoryError:
        # the filler draws in float64: twice the memory of a float32 blob
        raise JitnetError(f"{where + ': ' if where else ''}out of memory drawing {blob.count} values "
                          f"(shape {blob.shape}) for the {param.type} filler") from None
