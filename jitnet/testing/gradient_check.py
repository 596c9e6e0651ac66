"""Numerical gradient checks and single-layer runners.

:func:`check_gradients` compares a layer's backward with central finite
differences of its forward, in float64::

    from jitnet.proto import pb
    from jitnet.testing import check_gradients

    lp = pb.LayerParameter(name="ip", type="InnerProduct", bottom=["x"], top=["y"])
    lp.inner_product_param.num_output = 3
    report = check_gradients(lp, [np.random.randn(2, 4)], params=[np.random.randn(3, 4),
                                                                  np.random.randn(3)])

The objective is E = Σ_k ⟨top_k, R_k⟩ with a random R drawn from ``seed`` (for a
scalar loss top, R is a random non-zero loss weight, which a loss layer reads from
its top diff). Backward gives the analytic ∂E/∂input for every checked bottom and
every learnable param; each is compared with

(a) a directional derivative along a random unit direction d: one central
    difference (E(x + εd) − E(x − εd)) / 2ε against ⟨∂E/∂x, d⟩; cheap, so it runs
    for inputs of any size. Its relative tolerance is taken of √Σ(d_i·∂E/∂x_i)² when
    that is larger than the sum: terms that cancel leave a small sum whose error
    still comes from entries of the full size;
(b) when the input has at most ``elementwise_limit`` elements, the central
    difference of every element against the matching analytic entry.

Backward is also held to jitnet's contract: checked bottom diffs are filled with
NaN before backward (they must be overwritten) and param diffs with random values
that are subtracted afterwards (they must be accumulated into).

Where the objective has a kink between x − ε and x + ε (ReLU at 0, say), the two
one-sided differences disagree by far more than the smooth second-order term and
:class:`KinkError` is raised instead of a false failure; a hypothesis test then
resamples with ``assume(False)``. A real mismatch raises
:class:`GradientCheckError` (an AssertionError) naming the layer, the input, the
worst element, both values, the shapes and the tolerances.

:func:`forward_layer` and :func:`run_layer_on` run one layer outside a net, e.g.
to compare its tops with a numpy oracle or its CPU results with its GPU results.
"""
from dataclasses import dataclass, field

import numpy as np

from .. import common
from ..blob import Blob
from ..layer import create_layer
from ..common import TEST, TRAIN

__all__ = ["check_gradients", "forward_layer", "run_layer_on", "GradientCheckError", "KinkError",
           "GradientReport", "InputReport", "LayerRun"]


class GradientCheckError(AssertionError):
    """The analytic gradient of a layer disagrees with the numeric one."""


class KinkError(Exception):
    """The objective is not differentiable at (or within ε of) the checked point.

    Attributes: ``input`` (e.g. "bottom 0"), ``index`` (None for the directional
    check), ``jump`` (difference of the one-sided derivatives)."""

    def __init__(self, message, input_name, index, jump):
        super().__init__(message)
        self.input, self.index, self.jump = input_name, index, jump


@dataclass
class InputReport:
    """How one checked input fared: ``name`` ("bottom i" / "param j"), its shape, the
    directional derivative (analytic, numeric) and, if it ran, the element-wise
    worst absolute and relative errors."""
    name: str
    shape: tuple
    directional: tuple
    elementwise: bool
    max_abs_error: float
    max_rel_error: float


@dataclass
class GradientReport:
    """The result of a passing :func:`check_gradients`: one :class:`InputReport` per checked input."""
    layer: str
    type: str
    inputs: list = field(default_factory=list)

    def __str__(self):
        lines = [f"gradient check of layer '{self.layer}' (type {self.type}) passed:"]
        for r in self.inputs:
            lines.append(f"  {r.name} {r.shape}: directional analytic {r.directional[0]:.9g} "
                         f"numeric {r.directional[1]:.9g}; element-wise "
                         + (f"max abs err {r.max_abs_error:.3g}, max rel err {r.max_rel_error:.3g}"
                            if r.elementwise else "skipped (too many elements)"))
        return "\n".join(lines)


@dataclass
class LayerRun:
    """What :func:`run_layer_on` saw: top data and bottom data after forward, bottom diffs
    (None where not propagated), param data and diffs (host copies), and the loss
    run_forward returned."""
    tops: list
    bottom_diffs: list
    params: list
    param_diffs: list
    loss: float
    layer: object
    bottoms: list = field(default_factory=list)


# --------------------------------------------------------------------------- building a layer
def _make_blobs(arrays, dtype):
    blobs = []
    for a in arrays:
        a = np.asarray(a)
        blob = Blob(a.shape, dtype=dtype)
        blob.data[...] = a
        blobs.append(blob)
    return blobs


def _default_dtype(bottoms):
    for a in bottoms:
        a = np.asarray(a)
        if a.dtype.kind == "f":
            return a.dtype
    return np.dtype(np.float64)


def _build(layer_param, bottoms, phase, dtype, params, loss_weights, prepare, seed):
    """Seed, create the layer and its blobs, set it up, load ``params``, run ``prepare``.

    A top named like the bottom at the same position is that bottom's blob, as in a Net
    (the layer runs in place)."""
    common.set_random_seed(seed)
    bottom = _make_blobs(bottoms, dtype)
    names = list(layer_param.bottom)
    top = [bottom[k] if k < len(names) and name == names[k] else Blob(dtype=dtype)
           for k, name in enumerate(layer_param.top)]
    layer = create_layer(layer_param, phase)
    layer.setup_layer(bottom, top, loss_weights)
    if params is not None:
        if len(params) != len(layer.blobs):
            raise ValueError(f"layer '{layer.name}' has {len(layer.blobs)} learnable blobs, "
                             f"but {len(params)} params were given")
        for j, (blob, value) in enumerate(zip(layer.blobs, params)):
            value = np.asarray(value)
            if value.size != blob.count:
                raise ValueError(f"param {j} of layer '{layer.name}' has shape {blob.shape}, "
                                 f"the given array has shape {value.shape}")
            blob.data[...] = value.reshape(blob.shape)
    if prepare is not None:
        prepare(layer, bottom, top)
    return layer, bottom, top


def _random_top_diffs(rng, top, check_tops):
    """R_k: entries of magnitude in [0.5, 1.5] and random sign (never near zero); 0 for unchecked tops."""
    diffs = []
    for k, blob in enumerate(top):
        if k in check_tops:
            r = rng.uniform(0.5, 1.5, blob.shape) * rng.choice([-1.0, 1.0], blob.shape)
        else:
            r = np.zeros(blob.shape)
        diffs.append(np.asarray(r, dtype=np.float64))
    return diffs


# --------------------------------------------------------------------------- single-layer runs
def forward_layer(layer_param, bottoms, *, phase=TRAIN, dtype=None, params=None, prepare=None,
                  seed=0, loss_weights=None):
    """Set up the layer ``layer_param`` on ``bottoms`` (numpy arrays), run one forward in the
    current mode and return its tops as a list of numpy arrays (copies).

    ``dtype`` is the blobs' dtype (default: that of the first floating bottom, else
    float64); ``params`` replaces the learnable blobs' filler values; ``prepare(layer,
    bottom_blobs, top_blobs)`` runs after setup (e.g. ``MemoryData.reset``); the
    random generator is re-seeded with ``seed`` before setup and before forward.
    """
    return run_layer_on(None, layer_param, bottoms, phase=phase, dtype=dtype, params=params,
                        prepare=prepare, seed=seed, loss_weights=loss_weights, backward=False).tops


def run_layer_on(device, layer_param, bottoms, *, phase=TRAIN, dtype=None, params=None,
                 top_diffs=None, propagate_down=None, loss_weights=None, prepare=None, seed=0,
                 backward=True):
    """Run one forward (and backward) of a layer in ``device`` mode ("cpu", "gpu", or None
    for the current mode) and return a :class:`LayerRun` of host copies.

    Backward runs when ``backward`` is true, with top diffs ``top_diffs`` (default: random
    values drawn from ``seed``; a scalar loss top gets a random non-zero loss weight), with
    ``propagate_down`` per bottom (default: all False) and with param diffs zeroed first.
    The mode in force before the call is restored afterwards, also on error. Two calls
    with the same arguments and seed on "cpu" and "gpu" must agree: that is the parity
    check for a layer's GPU kernels.
    """
    dtype = np.dtype(dtype) if dtype is not None else _default_dtype(bottoms)
    previous = common.mode()
    try:
        if device == common.GPU:
            common.set_mode_gpu()
        elif device == common.CPU:
            common.set_mode_cpu()
        elif device is not None:
            raise ValueError(f"device must be 'cpu', 'gpu' or None, got {device!r}")
        layer, bottom, top = _build(layer_param, bottoms, phase, dtype, params, loss_weights,
                                    prepare, seed)
        common.set_random_seed(seed)
        loss = layer.run_forward(bottom, top)
        tops = [blob.data.copy() for blob in top]
        bottoms_after = [blob.data.copy() for blob in bottom]
        bottom_diffs = [None] * len(bottom)
        param_diffs = [None] * len(layer.blobs)
        if backward:
            propagate = list(propagate_down) if propagate_down is not None else [False] * len(bottom)
            if top_diffs is None:
                rng = np.random.default_rng(seed)
                top_diffs = _random_top_diffs(rng, top, set(range(len(top))))
            for blob, r in zip(top, top_diffs):
                blob.diff[...] = np.asarray(r).reshape(blob.shape)
            for blob in layer.blobs:
                blob.diff[...] = 0
            layer.run_backward(top, propagate, bottom)
            bottom_diffs = [blob.diff.copy() if p else None for blob, p in zip(bottom, propagate)]
            param_diffs = [blob.diff.copy() for blob in layer.blobs]
        return LayerRun(tops=tops, bottom_diffs=bottom_diffs,
                        params=[blob.data.copy() for blob in layer.blobs],
                        param_diffs=param_diffs, loss=loss, layer=layer, bottoms=bottoms_after)
    finally:
        if previous == common.GPU:
            common.set_mode_gpu()
        else:
            common.set_mode_cpu()


# --------------------------------------------------------------------------- gradient check
def _describe_index(shape, flat):
    return str(tuple(int(i) for i in np.unravel_index(flat, shape))) if shape else "()"


def check_gradients(layer_param, bottoms, *, phase=TRAIN, check_bottoms=None, check_params=True,
                    check_tops=None, params=None, loss_weights=None, prepare=None, seed=0,
                    eps=1e-6, rtol=1e-4, atol=1e-6, kink_tolerance=1e-3, elementwise_limit=64,
                    require_overwrite=True):
    """Check a layer's backward against central finite differences of its forward (float64).

    Arguments:

    * ``layer_param``: a ``pb.LayerParameter`` (type, name, bottom and top names, params).
    * ``bottoms``: numpy arrays, one per bottom; they are copied into float64 blobs.
    * ``phase``: jitnet.TRAIN or jitnet.TEST.
    * ``check_bottoms``: indices of the bottoms to check (default: every bottom the layer
      does not declare gradient-free, e.g. not the labels of a loss layer). The others
      get ``propagate_down`` false.
    * ``check_params``: also check every learnable blob (param diffs must accumulate).
    * ``check_tops``: indices of the tops that enter E (default: all).
    * ``params``: arrays replacing the learnable blobs' filler values (draw them random:
      a check around all-zero weights proves little).
    * ``loss_weights``: passed to ``setup_layer``.
    * ``prepare(layer, bottom_blobs, top_blobs)``: runs after setup.
    * ``seed``: seeds R, the directions, and jitnet's generator, re-seeded before every
      forward so that layers drawing random numbers (Dropout in TRAIN) are deterministic.
    * ``eps``: the step, scaled by max(1, |x|) in the element-wise check.
    * ``rtol``, ``atol``: |analytic − numeric| <= atol + rtol·max(|analytic|, |numeric|).
    * ``kink_tolerance``: a difference of the one-sided derivatives above this raises
      :class:`KinkError` (the smooth part of it is about ε·E'', ~1e-6 here).
    * ``elementwise_limit``: inputs with at most this many elements are also checked
      element by element.
    * ``require_overwrite``: fill the checked bottoms' diffs with NaN before backward, so
      a backward that reads (scales, accumulates into) or skips them fails. With False
      they start at zero.

    Returns a :class:`GradientReport`; raises :class:`GradientCheckError` on a mismatch
    and :class:`KinkError` when a kink makes the numeric derivative meaningless.
    """
    check = _GradientCheck(layer_param, bottoms, phase, check_bottoms, check_tops, params,
                           loss_weights, prepare, seed, eps, rtol, atol, kink_tolerance)
    inputs = check.analytic_gradients(check_params, require_overwrite)
    check.e0 = check.objective()
    report = GradientReport(layer=check.layer.name, type=check.layer.type)
    for name, blob, analytic in inputs:
        small = blob.count <= elementwise_limit
        abs_err, rel_err = (check.elementwise(name, blob, analytic) if small
                            else (float("nan"), float("nan")))
        directional = check.directional(name, blob, analytic)
        report.inputs.append(InputReport(name=name, shape=tuple(blob.shape), directional=directional,
                                         elementwise=small, max_abs_error=abs_err,
                                         max_rel_error=rel_err))
    return report


class _GradientCheck:
    """The steps of :func:`check_gradients`, one method each: build the layer, take the
    analytic gradients from backward, then compare them per input with central
    differences of the objective E = Σ_k ⟨top_k, R_k⟩."""

    def __init__(self, layer_param, bottoms, phase, check_bottoms, check_tops, params,
                 loss_weights, prepare, seed, eps, rtol, atol, kink_tolerance):
        self.rng = np.random.default_rng(seed)
        self.seed, self.eps, self.kink_tolerance = seed, eps, kink_tolerance
        self.layer, self.bottom, self.top = _build(layer_param, bottoms, phase, np.float64, params,
                                                   loss_weights, prepare, seed)
        # A layer run in place overwrites its bottom: keep the inputs, write them back before
        # every forward (perturbations go into these copies).
        self.in_place = {id(b): b.data.astype(np.float64) for b in self.bottom
                         if any(b is t for t in self.top)}
        if check_bottoms is None:
            check_bottoms = [i for i in range(len(self.bottom))
                             if i not in getattr(self.layer, "no_gradient_bottoms", ())]
        self.check_bottoms = sorted(set(check_bottoms))
        for i in self.check_bottoms:
            if not 0 <= i < len(self.bottom):
                raise ValueError(f"check_bottoms names bottom {i}, but the layer has {len(self.bottom)}")
        self.check_tops = set(range(len(self.top))) if check_tops is None else set(check_tops)
        self.context = _Context(self.layer, self.bottom, self.top, eps, rtol, atol, seed)

    def forward(self):
        common.set_random_seed(self.seed)     # layers drawing random numbers repeat their draws
        for blob in self.bottom:
            if id(blob) in self.in_place:
                blob.data[...] = self.in_place[id(blob)]
        self.layer.run_forward(self.bottom, self.top)

    def value(self, blob):
        """The input value of ``blob`` (a bottom's input even when the layer overwrote it)."""
        return self.in_place.get(id(blob), blob.data).astype(np.float64)

    def objective(self):
        """E = Σ_k ⟨top_k, R_k⟩ after a forward at the current inputs."""
        self.forward()
        return sum(float(np.dot(blob.data.ravel().astype(np.float64), r.ravel()))
                   for blob, r in zip(self.top, self.top_diffs) if r.size)

    def analytic_gradients(self, check_params, require_overwrite):
        """Forward, then backward with top diffs R; [(name, blob, ∂E/∂input)] per checked input.

        Checked bottom diffs start as NaN (backward must overwrite them), param diffs as
        random offsets subtracted afterwards (backward must add to them)."""
        self.forward()
        self.top_diffs = _random_top_diffs(self.rng, self.top, self.check_tops)
        propagate = [i in self.check_bottoms for i in range(len(self.bottom))]
        for i in self.check_bottoms:
            self.bottom[i].diff[...] = np.nan if require_overwrite else 0.0
        for blob, r in zip(self.top, self.top_diffs):
            blob.diff[...] = r                     # (for a view layer this is the bottom diff)
        param_blobs = list(self.layer.blobs) if check_params else []
        offsets = [self.rng.standard_normal(blob.shape) for blob in param_blobs]
        for blob, offset in zip(param_blobs, offsets):
            blob.diff[...] = offset
        self.layer.run_backward(self.top, propagate, self.bottom)
        inputs = [(f"bottom {i}", self.bottom[i], self.bottom[i].diff.astype(np.float64).copy())
                  for i in self.check_bottoms]
        inputs += [(f"param {j}", blob, blob.diff.astype(np.float64) - offset)
                   for j, (blob, offset) in enumerate(zip(param_blobs, offsets))]
        return inputs

    def objective_at(self, blob, x0, delta):
        """E with ``blob``'s data at x0 + delta (assigned through blob.data, which marks the
        host copy fresh, so in GPU mode the device copy is refreshed); x0 is put back."""
        if id(blob) in self.in_place:
            self.in_place[id(blob)] = x0 + delta
        else:
            blob.data[...] = x0 + delta
        try:
            return self.objective()
        finally:
            if id(blob) in self.in_place:
                self.in_place[id(blob)] = x0
            else:
                blob.data[...] = x0

    def _kink(self, plus, minus, h):
        """The difference of the one-sided derivatives, a KinkError's measure."""
        return ((plus - self.e0) - (self.e0 - minus)) / h

    def elementwise(self, name, blob, analytic):
        """Central differences of every element; returns (max abs error, max rel error)."""
        x0 = self.value(blob)
        numeric = np.empty(x0.size)
        for k in range(x0.size):
            h = self.eps * max(1.0, abs(float(x0.flat[k])))
            unit = np.zeros(x0.size)
            unit[k] = h
            unit = unit.reshape(x0.shape)
            plus, minus = self.objective_at(blob, x0, unit), self.objective_at(blob, x0, -unit)
            jump = self._kink(plus, minus, h)
            if abs(jump) > self.kink_tolerance:
                where = _describe_index(x0.shape, k)
                raise KinkError(f"layer '{self.layer.name}' ({self.layer.type}), {name} element "
                                f"{where} = {x0.flat[k]!r}: the one-sided derivatives differ by "
                                f"{jump:.3g} (> kink_tolerance {self.kink_tolerance:g})",
                                name, where, jump)
            numeric[k] = (plus - minus) / (2 * h)
        a = analytic.ravel()
        self.context.compare(name, blob.shape, "element-wise central differences", blob.shape,
                             a, numeric, inputs=x0.ravel())
        if not a.size:
            return 0.0, 0.0
        errors = np.abs(a - numeric)
        scale = np.maximum(np.abs(a), np.abs(numeric))
        return (float(errors.max()),
                float(np.max(np.divide(errors, scale, out=np.zeros_like(errors), where=scale > 0))))

    def directional(self, name, blob, analytic):
        """One central difference along a random unit direction d against ⟨∂E/∂x, d⟩;
        returns (analytic, numeric)."""
        x0 = self.value(blob)
        d = self.rng.standard_normal(x0.shape)
        norm = np.linalg.norm(d)
        d = d / norm if norm else d
        plus, minus = self.objective_at(blob, x0, self.eps * d), self.objective_at(blob, x0, -self.eps * d)
        numeric = (plus - minus) / (2 * self.eps)
        jump = self._kink(plus, minus, self.eps)
        if abs(jump) > self.kink_tolerance:
            raise KinkError(f"layer '{self.layer.name}' ({self.layer.type}), {name}: the one-sided "
                            f"directional derivatives differ by {jump:.3g} (> kink_tolerance "
                            f"{self.kink_tolerance:g}); the objective has a kink near this point",
                            name, None, jump)
        terms = analytic * d
        directional = float(np.sum(terms))
        # the terms may cancel: relative errors of rtol in the entries of ∂E/∂x move the sum by
        # about rtol·√Σ(d_i·∂E/∂x_i)², which can be far more than rtol times the sum itself
        # (for a large input the two are alike: a random direction does not cancel there)
        self.context.compare(name, blob.shape, "directional derivative along a random unit direction",
                             None, np.array([directional]), np.array([numeric]),
                             scale=float(np.sqrt(np.sum(terms * terms))))
        return directional, numeric


class _Context:
    """Compares analytic with numeric values and writes the failure message."""

    def __init__(self, layer, bottom, top, eps, rtol, atol, seed):
        self.layer, self.bottom, self.top = layer, bottom, top
        self.eps, self.rtol, self.atol, self.seed = eps, rtol, atol, seed

    def compare(self, name, shape, how, index_shape, analytic, numeric, inputs=None, scale=0.0):
        """Raise GradientCheckError unless |analytic − numeric| ≤ atol + rtol·max(|analytic|,
        |numeric|, scale) everywhere (``scale``: a magnitude the comparison is relative to
        besides the values themselves)."""
        tolerance = self.atol + self.rtol * np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), scale)
        error = np.abs(analytic - numeric)
        bad = ~(error <= tolerance)                    # NaN counts as bad
        if not bad.any():
            return
        ratio = np.where(np.isnan(error), np.inf, error / tolerance)
        worst = int(np.argmax(ratio))
        where = (f"element {_describe_index(index_shape, worst)}" if index_shape is not None
                 else "the derivative")
        nan_note = ("\n  analytic NaN: backward did not write this bottom diff"
                    if np.isnan(analytic[worst]) else "")
        at_value = f" (input value {float(inputs[worst])!r})" if inputs is not None else ""
        phase = {TRAIN: "TRAIN", TEST: "TEST"}.get(self.layer.phase, self.layer.phase)
        raise GradientCheckError(
            f"gradient check failed for layer '{self.layer.name}' (type {self.layer.type}), "
            f"{name} of shape {tuple(shape)}, {how}:\n"
            f"  worst at {where}{at_value}: analytic {float(analytic[worst])!r}, "
            f"numeric {float(numeric[worst])!r}, "
            f"|difference| {error[worst]:.3g} > tolerance {tolerance[worst]:.3g}{nan_note}\n"
            f"  {int(bad.sum())} of {bad.size} value(s) outside atol {self.atol:g} + rtol "
            f"{self.rtol:g}·max(|analytic|, |numeric|{', √Σ(d·∂E/∂x)² ' + format(scale, '.3g') if scale else ''})\n"
            f"  bottom shapes {[b.shape for b in self.bottom]}, top shapes "
            f"{[t.shape for t in self.top]}, param shapes {[p.shape for p in self.layer.blobs]}, "
            f"phase {phase}, eps {self.eps:g}, seed {self.seed}")
