"""Neuron layers: one bottom, one top of the same shape; top[i] depends only on bottom[i].

Each states only its kernels (``kernels/{cpu,gpu}/neuron.py``) through the
NeuronLayer hooks ``forward_kernel(K, x, y)`` and ``backward_kernel(K, x, y, dy, dx)``.
They may run in place (top = bottom), as Caffe nets write them.
"""
import math

import numpy as np

from .. import common
from ..blob import Blob
from ..common import TRAIN
from ..fillers import fill
from ..layer import NeuronLayer, register
from ..proto import pb


@register("ReLU")
class ReLU(NeuronLayer):
    """y = max(x, 0) + ν·min(x, 0);   ∂E/∂x = ∂E/∂y · (1 if x > 0 else ν)   (ν = negative_slope).

    In place, backward reads y for x: the sign of y is the sign of x when ν >= 0, so a
    negative ν cannot run in place (Caffe runs it and computes a wrong gradient)."""

    @classmethod
    def can_run_in_place(cls, layer_param):
        slope = layer_param.relu_param.negative_slope
        if slope < 0:
            return False, (f"with negative_slope {slope:g} < 0 its backward cannot tell x > 0 from "
                           "x < 0 once y has overwritten x")
        return True, ""

    def forward_kernel(self, K, x, y):
        K.relu_forward(x, y, self.param.relu_param.negative_slope)

    def backward_kernel(self, K, x, y, dy, dx):
        K.relu_backward(x, dy, dx, self.param.relu_param.negative_slope)


@register("Sigmoid")
class Sigmoid(NeuronLayer):
    """y = 1 / (1 + e^−x);   ∂E/∂x = ∂E/∂y · y(1 − y)."""

    def forward_kernel(self, K, x, y):
        K.sigmoid_forward(x, y)

    def backward_kernel(self, K, x, y, dy, dx):
        K.sigmoid_backward(y, dy, dx)


@register("TanH")
class TanH(NeuronLayer):
    """y = tanh(x);   ∂E/∂x = ∂E/∂y · (1 − y²)."""

    def forward_kernel(self, K, x, y):
        K.tanh_forward(x, y)

    def backward_kernel(self, K, x, y, dy, dx):
        K.tanh_backward(y, dy, dx)


@register("Dropout")
class Dropout(NeuronLayer):
    """TRAIN: y = x·m / (1 − p), m ~ Bernoulli(1 − p) per value (p = dropout_ratio);  TEST: y = x.
    ∂E/∂x = ∂E/∂y · m / (1 − p) in TRAIN, ∂E/∂y in TEST. The mask comes from jitnet's
    seeded generator on the host (a uint8 Blob copied to the device in GPU mode), so runs
    with one seed drop the same values on the CPU and the GPU."""

    def setup(self, bottom, top):
        self.ratio = self.param.dropout_param.dropout_ratio
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = Blob(dtype=np.uint8)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.mask.reshape(bottom[0].shape)

    def forward_kernel(self, K, x, y):
        if self.phase != TRAIN:
            self.kernels("blas").copy(x, y)
            return
        self.mask.mutable_data_on(common.CPU)[:] = common.rng().random(self.mask.count) >= self.ratio
        K.dropout_forward(x, self.mask.data_on(self.device), y, self.scale)

    def backward_kernel(self, K, x, y, dy, dx):
        if self.phase != TRAIN:
            self.kernels("blas").copy(dy, dx)
            return
        K.dropout_backward(dy, self.mask.data_on(self.device), dx, self.scale)


# --------------------------------------------------------------------------- catalogue: neurons
class _ReadsBottom(NeuronLayer):
    """A neuron layer whose backward reads x (for the parameters where ``reads_bottom()``
    says so). Run in place (top = bottom), its forward first copies x to a private blob,
    which its backward reads instead of the overwritten bottom: Caffe's PReLU does this;
    Caffe's BNLL, Log, Power, Clip and ELU (alpha < 0) read the overwritten bottom in place
    and compute a wrong gradient there, jitnet's give the out-of-place numbers."""

    bottom_copy = None

    def reads_bottom(self):
        return True

    def _keeps_copy(self, bottom, top):
        return top[0] is bottom[0] and self.reads_bottom()

    def forward(self, bottom, top):
        if self._keeps_copy(bottom, top):
            d = self.device
            if self.bottom_copy is None:
                self.bottom_copy = Blob(dtype=bottom[0].dtype)
            self.bottom_copy.reshape(bottom[0].shape)
            self.kernels("blas").copy(bottom[0].data_on(d), self.bottom_copy.mutable_data_on(d))
        super().forward(bottom, top)

    def bottom_data(self, bottom, top):
        """x as the forward saw it, on the layer's device."""
        blob = self.bottom_copy if self._keeps_copy(bottom, top) else bottom[0]
        return blob.data_on(self.device)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = self.device
            self.backward_kernel(self._family_kernels(), self.bottom_data(bottom, top),
                                 top[0].data_on(d), top[0].diff_on(d), bottom[0].mutable_diff_on(d))


@register("AbsVal")
class AbsVal(NeuronLayer):
    """y = |x|;   ∂E/∂x = ∂E/∂y · sign(x) (0 at x = 0). Caffe refuses it in place (its
    backward needs the sign of x, which y has lost)."""

    in_place = False

    @classmethod
    def can_run_in_place(cls, layer_param):
        return False, "AbsVal does not allow in-place computation (its backward needs sign(x))"

    def forward_kernel(self, K, x, y):
        self.kernels("math").abs(x, y)

    def backward_kernel(self, K, x, y, dy, dx):
        vocab = self.kernels("math")
        vocab.sign(x, dx)
        vocab.mul(dx, dy, dx)


@register("BNLL")
class BNLL(_ReadsBottom):
    """y = log(1 + eˣ), computed as x + log(1 + e^−x) for x > 0 so that no exp overflows;
    ∂E/∂x = ∂E/∂y · e/(1 + e) with e = exp(min(x, 50)) (Caffe's kBNLL_THRESHOLD)."""

    def forward_kernel(self, K, x, y):
        K.bnll_forward(x, y)

    def backward_kernel(self, K, x, y, dy, dx):
        K.bnll_backward(x, dy, dx)


@register("ELU")
class ELU(_ReadsBottom):
    """y = x if x > 0 else α(eˣ − 1);   ∂E/∂x = ∂E/∂y · (1 if x > 0 else α + y)   (α = alpha).

    For α >= 0 the sign of y is the sign of x, so in place the backward reads y for x
    (as Caffe's); a negative α keeps a copy of x instead."""

    def reads_bottom(self):
        return self.param.elu_param.alpha < 0

    def forward_kernel(self, K, x, y):
        K.elu_forward(x, y, float(self.param.elu_param.alpha))

    def backward_kernel(self, K, x, y, dy, dx):
        K.elu_backward(x, y, dy, dx, float(self.param.elu_param.alpha))


def _log_of_base(layer, base):
    """ln(base) for Exp and Log: base −1 means e (ln = 1 exactly); otherwise base must be a
    finite positive number (Caffe's checks)."""
    if base == -1:
        return 1.0
    if not base > 0:
        raise layer.error(f"base must be strictly positive (or -1 for e), got {base:g}")
    log_base = math.log(base) if math.isfinite(base) else math.inf
    if not math.isfinite(log_base):
        raise layer.error(f"log(base) = log({base:g}) is not finite")
    return log_base


@register("Exp")
class Exp(NeuronLayer):
    """y = base^(shift + scale·x) = outer·e^(inner·x), inner = scale·ln(base),
    outer = base^shift (base −1 means e);   ∂E/∂x = ∂E/∂y · inner·y.

    Caffe's math-vocabulary sequence (scale, exp, scale); the backward needs only y."""

    def setup(self, bottom, top):
        p = self.param.exp_param
        log_base = _log_of_base(self, p.base)
        self.inner_scale = log_base * p.scale
        shift = np.float64(p.shift)
        with np.errstate(over="ignore"):                 # an infinite outer scale, as in C
            outer = np.exp(shift) if p.base == -1 else np.power(np.float64(p.base), shift)
        self.outer_scale = 1.0 if shift == 0 else float(outer)

    def forward_kernel(self, K, x, y):
        vocab, blas = self.kernels("math"), self.kernels("blas")
        if self.inner_scale == 1:
            vocab.exp(x, y)
        else:
            blas.axpby(self.inner_scale, x, 0.0, y)
            vocab.exp(y, y)
        if self.outer_scale != 1:
            blas.scale(self.outer_scale, y)

    def backward_kernel(self, K, x, y, dy, dx):
        self.kernels("math").mul(y, dy, dx)
        if self.inner_scale != 1:
            self.kernels("blas").scale(self.inner_scale, dx)


@register("Log")
class Log(_ReadsBottom):
    """y = log_base(shift + scale·x) = ln(shift + scale·x) / ln(base) (base −1 means e);
    ∂E/∂x = ∂E/∂y · (scale / ln base) / (shift + scale·x). The forward is Caffe's math
    vocabulary sequence (scale, add, log, scale); the backward one fused kernel."""

    def setup(self, bottom, top):
        p = self.param.log_param
        log_base = _log_of_base(self, p.base)
        if log_base == 0:
            raise self.error(f"1/log(base) = 1/log({p.base:g}) is not finite")
        self.base_scale = 1.0 / log_base
        self.scale, self.shift = float(p.scale), float(p.shift)

    def forward_kernel(self, K, x, y):
        vocab, blas = self.kernels("math"), self.kernels("blas")
        if self.scale == 1 and self.shift == 0:
            vocab.log(x, y)
        else:
            blas.axpby(self.scale, x, 0.0, y)
            if self.shift != 0:
                vocab.add_scalar(self.shift, y)
            vocab.log(y, y)
        if self.base_scale != 1:
            blas.scale(self.base_scale, y)

    def backward_kernel(self, K, x, y, dy, dx):
        K.log_backward(x, dy, dx, self.scale, self.shift, self.scale * self.base_scale)


@register("Power")
class Power(_ReadsBottom):
    """y = (shift + scale·x)^power;   ∂E/∂x = ∂E/∂y · power·scale·(shift + scale·x)^(power−1).

    Caffe's special cases: power·scale = 0 (power 0 or scale 0) gives the constant top 1
    (power 0) or shift^power, and a zero gradient; power 1 a constant gradient scale.
    Otherwise the gradient is power·scale·y / (shift + scale·x) as in Caffe, except where
    shift + scale·x = 0: there Caffe divides 0 by 0 (NaN) and jitnet gives the derivative's
    value, power·scale·0^(power−1) (0 for power > 1). A negative base with a non-integer
    power gives NaN, as C's pow. In place, x is kept only when the backward reads it."""

    def reads_bottom(self):
        p = self.param.power_param
        return p.power * p.scale != 0 and p.power != 1

    def setup(self, bottom, top):
        p = self.param.power_param
        self.power, self.scale, self.shift = float(p.power), float(p.scale), float(p.shift)
        self.diff_scale = self.power * self.scale

    def forward_kernel(self, K, x, y):
        if self.diff_scale == 0:
            with np.errstate(divide="ignore", invalid="ignore"):
                value = 1.0 if self.power == 0 else float(np.float64(self.shift) ** self.power)
            self.kernels("blas").set_value(y, value)
        else:
            K.power_forward(x, y, self.power, self.scale, self.shift)

    def backward_kernel(self, K, x, y, dy, dx):
        if self.diff_scale == 0:
            self.kernels("blas").set_value(dx, 0.0)
        elif self.power == 1:
            self.kernels("blas").axpby(self.diff_scale, dy, 0.0, dx)
        else:
            K.power_backward(x, y, dy, dx, self.power, self.scale, self.shift)


@register("Clip")
class Clip(_ReadsBottom):
    """y = max(min, min(x, max));   ∂E/∂x = ∂E/∂y where min <= x <= max (both ends
    included, as Caffe), else 0. Both bounds are required (Caffe's proto says so); Caffe takes
    min <= max on trust, jitnet too (min > max gives y = min everywhere)."""

    def setup(self, bottom, top):
        p = self.param.clip_param
        missing = [f for f in ("min", "max") if not p.HasField(f)]
        if missing:
            raise self.error(f"clip_param.{' and clip_param.'.join(missing)} must be given "
                             "(required fields)")

    def forward_kernel(self, K, x, y):
        p = self.param.clip_param
        K.clip_forward(x, y, float(p.min), float(p.max))

    def backward_kernel(self, K, x, y, dy, dx):
        p = self.param.clip_param
        K.clip_backward(x, dy, dx, float(p.min), float(p.max))


@register("Threshold")
class Threshold(NeuronLayer):
    """y = 1 if x > threshold else 0. No backward: Caffe's is NOT_IMPLEMENTED, so asking for
    the gradient of its bottom is an error, and force_backward does not ask for it."""

    no_gradient_bottoms = (0,)

    def forward_kernel(self, K, x, y):
        K.threshold_forward(x, y, float(self.param.threshold_param.threshold))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("has no backward (y is a step function of x), but its bottom needs "
                             "a gradient; set propagate_down: false for it")


@register("Swish")
class Swish(NeuronLayer):
    """y = x·σ(βx) (β = beta);   ∂E/∂x = ∂E/∂y · (βy + σ(βx)·(1 − βy)). The forward keeps
    σ(βx) in a private blob for the backward, which needs nothing else but y (so it runs in
    place, as Caffe's)."""

    def setup(self, bottom, top):
        self.sigmoid = Blob(dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        self.sigmoid.reshape(bottom[0].shape)

    def forward_kernel(self, K, x, y):
        K.swish_forward(x, self.sigmoid.mutable_data_on(self.device), y,
                        float(self.param.swish_param.beta))

    def backward_kernel(self, K, x, y, dy, dx):
        K.swish_backward(y, self.sigmoid.data_on(self.device), dy, dx,
                         float(self.param.swish_param.beta))


@register("PReLU")
class PReLU(_ReadsBottom):
    """y = x if x > 0 else a_c·x, one learned slope a_c per channel (axis 1), or one for all
    with ``channel_shared``; the slopes start from ``filler`` (default constant 0.25).

    ∂E/∂x = ∂E/∂y · (1 if x > 0 else a_c);   ∂E/∂a_c += Σ ∂E/∂y · x · [x <= 0] over the
    positions of channel c (all positions when shared). In place it keeps a copy of x, as
    Caffe's. Bottoms have at least 2 axes (Caffe's legacy channels() also limits them to 4;
    jitnet takes any number, with the channels on axis 1)."""

    min_axes = (2,)

    @classmethod
    def param_count(cls, layer_param):
        return 1

    def setup(self, bottom, top):
        p = self.param.prelu_param
        self.shared = p.channel_shared
        self.blobs = [Blob(() if self.shared else (bottom[0].shape[1],), dtype=bottom[0].dtype)]
        filler = p.filler if p.HasField("filler") else pb.FillerParameter(type="constant", value=0.25)
        fill(filler, self.blobs[0], "filler")
        self.terms = Blob(dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        channels = bottom[0].shape[1]
        if not self.shared and channels != self.blobs[0].count:
            raise self.error(f"bottom {bottom[0].shape} has {channels} channels, but the layer "
                             f"has {self.blobs[0].count} slopes")
        super().reshape(bottom, top)

    def _layout(self, bottom):
        """(outer, channels, inner) as the kernels index the slopes (one channel when shared)."""
        if self.shared:
            return 1, 1, bottom[0].count
        return bottom[0].shape[0], bottom[0].shape[1], bottom[0].count_range(2)

    def forward(self, bottom, top):
        self._dims = self._layout(bottom)
        super().forward(bottom, top)

    def forward_kernel(self, K, x, y):
        _, channels, inner = self._dims
        K.prelu_forward(x, self.blobs[0].data_on(self.device), y, channels, max(inner, 1))

    def backward(self, top, propagate_down, bottom):
        K, d = self.kernels("neuron"), self.device
        outer, channels, inner = self._layout(bottom)
        x, dy = self.bottom_data(bottom, top), top[0].diff_on(d)
        if self.param_propagate_down[0]:          # before dx: in place dx overwrites dy
            self.terms.reshape(bottom[0].shape)
            K.prelu_slope_terms(x, dy, self.terms.mutable_data_on(d))
            self.kernels("math").channel_sum(self.terms.data_on(d), 1.0,
                                             self.blobs[0].mutable_diff_on(d), outer, channels, inner)
        if propagate_down[0]:
            K.prelu_backward(x, dy, self.blobs[0].data_on(d), bottom[0].mutable_diff_on(d),
                             channels, max(inner, 1))
