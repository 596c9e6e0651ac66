"""Hypothesis strategies for testing layers (jitnet's own and your own).

This is the only module of :mod:`jitnet.testing` that imports hypothesis, so the
gradient checker stays usable without it. Typical use, with
:func:`jitnet.testing.check_gradients`::

    from hypothesis import assume, given, settings
    from jitnet.testing import KinkError, check_gradients
    from jitnet.testing import strategies as jst

    @settings(max_examples=20, deadline=None)
    @given(x=jst.arrays(jst.shapes(min_dims=2), avoid=(0.0,)))
    def test_relu_gradient(x):
        lp = pb.LayerParameter(name="relu", type="ReLU", bottom=["x"], top=["y"])
        try:
            check_gradients(lp, [x])
        except KinkError:
            assume(False)          # a kink between x - eps and x + eps: draw another x

Strategies:

* :func:`shapes` - blob shapes (tuples of small positive ints).
* :func:`arrays` - float arrays of a (drawn) shape, never all zeros, kept a
  ``margin`` away from given kink points such as ReLU's 0.
* :func:`labels` - integer class labels stored as floats (Caffe's label blobs),
  optionally with some positions set to an ``ignore_label``.
* :func:`axes` - a valid (possibly negative) axis index for an ``ndim``-d blob.
* :func:`nonzero_floats` - scalars bounded away from zero (loss weights, scales).
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

__all__ = ["shapes", "arrays", "labels", "axes", "nonzero_floats"]


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=5, max_size=None):
    """Shapes with ``min_dims``..``max_dims`` axes of ``min_side``..``max_side`` each.

    ``max_size`` (optional) bounds the element count, keeping simulator runs and
    element-wise gradient checks cheap.
    """
    strategy = hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                                max_side=max_side)
    if max_size is not None:
        strategy = strategy.filter(lambda shape: int(np.prod(shape)) <= max_size)
    return strategy


def _keep_away(values, avoid, margin):
    """Move every value closer than ``margin`` to a point of ``avoid`` out to that point ± margin."""
    for point in avoid:
        near = np.abs(values - point) < margin
        side = np.where(values >= point, 1.0, -1.0)
        values = np.where(near, point + side * margin, values)
    return values


def arrays(shape, dtype=np.float64, low=-2.0, high=2.0, avoid=None, margin=0.05):
    """Arrays of ``shape`` (a tuple or a strategy of tuples) with values in [low, high].

    * ``avoid``: points to keep away from (the kinks of the function under test,
      e.g. ``(0.0,)`` for ReLU); every value ends at least ``margin`` away from
      each of them (a value may then lie up to ``margin`` outside [low, high]).
    * The array is never all zeros: an all-zero draw gets its first element set
      to ``high`` (then moved away from ``avoid``), so a check never runs at the
      trivial point where many layers hide their mistakes.

    Values are drawn in float64 and then cast to ``dtype``.
    """
    if not low < high:
        raise ValueError(f"arrays(): need low < high, got {low} and {high}")
    avoid = tuple(float(a) for a in (avoid or ()))
    shape_strategy = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)

    def finish(values):
        values = np.array(values, dtype=np.float64)
        if values.size and not values.any():
            values.flat[0] = high if high != 0 else low
        values = _keep_away(values, avoid, margin)
        return values.astype(dtype)

    return shape_strategy.flatmap(
        lambda s: hnp.arrays(np.float64, s, elements=elements)).map(finish)


def labels(num_classes, shape, ignore_label=None):
    """Class labels in [0, num_classes) as a float64 array of ``shape`` (tuple or strategy).

    With ``ignore_label`` (an int, which may lie outside the class range or inside
    it) some positions may carry that value instead.
    """
    if num_classes < 1:
        raise ValueError("labels(): num_classes must be at least 1")
    values = list(range(num_classes))
    if ignore_label is not None and ignore_label not in values:
        values.append(int(ignore_label))
    shape_strategy = shape if isinstance(shape, st.SearchStrategy) else st.just(tuple(shape))
    return shape_strategy.flatmap(
        lambda s: hnp.arrays(np.int64, s, elements=st.sampled_from(values))).map(
        lambda a: a.astype(np.float64))


def axes(ndim, allow_negative=True):
    """A valid axis of an ``ndim``-d blob: 0..ndim-1, or -ndim..-1 when ``allow_negative``."""
    if ndim < 1:
        raise ValueError("axes(): ndim must be at least 1")
    return st.integers(-ndim if allow_negative else 0, ndim - 1)


def nonzero_floats(low=0.25, high=2.0, signed=True):
    """Scalars with low <= |x| <= high (0 < low), of either sign when ``signed``."""
    if not 0 < low <= high:
        raise ValueError("nonzero_floats(): need 0 < low <= high")
    magnitude = st.floats(low, high, allow_nan=False, allow_infinity=False)
    if not signed:
        return magnitude
    return st.tuples(magnitude, st.booleans()).map(lambda t: -t[0] if t[1] else t[0])
