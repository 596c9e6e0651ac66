"""Tools for testing layers, jitnet's own and users' own.

* :func:`check_gradients` - a layer's backward against central finite differences
  of its forward in float64 (directional and element-wise), kink-aware, with a
  designed failure message (:class:`GradientCheckError`, an AssertionError).
* :func:`forward_layer` - the tops of one forward of a single layer, for comparing
  with a numpy oracle.
* :func:`run_layer_on` - tops, bottom diffs and param diffs of one forward and
  backward in "cpu" or "gpu" mode, for GPU/CPU parity checks.
* :mod:`jitnet.testing.strategies` - hypothesis strategies (shapes, arrays kept away
  from kinks, labels, axes); import it explicitly, it is the only part that needs
  hypothesis.

Example::

    import numpy as np
    from jitnet.proto import pb
    from jitnet.testing import check_gradients

    lp = pb.LayerParameter(name="sig", type="Sigmoid", bottom=["x"], top=["y"])
    print(check_gradients(lp, [np.random.default_rng(0).normal(size=(2, 3))]))
"""
from .gradient_check import (GradientCheckError, GradientReport, InputReport, KinkError, LayerRun,
                             check_gradients, forward_layer, run_layer_on)

__all__ = ["check_gradients", "forward_layer", "run_layer_on", "GradientCheckError", "KinkError",
           "GradientReport", "InputReport", "LayerRun"]
