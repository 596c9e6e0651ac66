"""Loss layers and Accuracy. Kernels: ``kernels/{cpu,gpu}/loss.py``.

A loss layer's backward scales its gradient by the loss weight the net put into
its top's diff (Caffe's convention), so ``loss_weight: 0.3`` in a prototxt
scales both the reported loss and the gradient.
"""
import numpy as np

from ..blob import Blob
from ..errors import ProtoError
from ..layer import Layer, LossLayer, register
from ..proto import pb
from ..proto.io import read_blob_proto
from .common import softmax_dims

_NORM = pb.LossParameter


def _label_positions(layer, scores, labels, axis):
    outer, channels, inner = softmax_dims(scores, axis)
    if channels == 0:
        raise layer.error(f"the class axis {axis} of the scores {scores.shape} is empty")
    if labels.count != outer * inner:
        raise layer.error(
            f"the label blob has {labels.count} values, but scores of shape {scores.shape} with "
            f"axis {axis} need {outer * inner} (one per position outside the class axis)")
    return outer, channels, inner


def _normalizer(mode, outer, inner, valid_count):
    """Caffe's LossLayer normalizer, never below 1: FULL = outer·inner positions, VALID = the
    labelled (not ignored) ones, BATCH_SIZE = outer, NONE = 1."""
    n = {_NORM.FULL: outer * inner, _NORM.VALID: valid_count,
         _NORM.BATCH_SIZE: outer, _NORM.NONE: 1}[mode]
    return max(1.0, float(n))


def _reshape_loss_and_prob(bottom, top, prob):
    """A scalar loss top, the probabilities shaped like the scores, and an optional second top
    sharing them (SoftmaxWithLoss, InfogainLoss)."""
    top[0].reshape(())
    prob.reshape(bottom[0].shape)
    if len(top) > 1:
        top[1].reshape(bottom[0].shape)
        top[1].share_data(prob)


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(LossLayer):
    """p = softmax(x) along ``axis``; loss = −Σ log max(p[label], FLT_MIN) / normalizer.

    ∂loss/∂x = (p − onehot(label)) · loss_weight / normalizer; 0 at ignored positions.
    normalizer: VALID (default) = non-ignored labels, FULL = all positions,
    BATCH_SIZE = outer size, NONE = 1 (never below 1). Legacy ``normalize: false``
    means BATCH_SIZE. An optional second top is the softmax output.
    """

    max_tops = 2

    def setup(self, bottom, top):
        lp = self.param.loss_param
        if lp.HasField("normalization") or not lp.HasField("normalize"):
            self.normalization = lp.normalization
        else:
            self.normalization = _NORM.VALID if lp.normalize else _NORM.BATCH_SIZE
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = lp.ignore_label if self.has_ignore else 0
        self.prob = Blob(dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.param.softmax_param.axis)
        self.dims = _label_positions(self, bottom[0], bottom[1], self.axis)
        _reshape_loss_and_prob(bottom, top, self.prob)

    def normalizer(self, valid_count):
        outer, _, inner = self.dims
        return _normalizer(self.normalization, outer, inner, valid_count)

    def forward(self, bottom, top):
        d = self.device
        self.kernels("common").softmax_forward(bottom[0].data_on(d), self.prob.mutable_data_on(d), *self.dims)
        loss, valid, bad = self.kernels("loss").softmax_loss_forward(
            self.prob.data_on(d), bottom[1].data_on(d), *self.dims, self.has_ignore, self.ignore_label)
        if bad:
            raise self.error(f"{bad} label(s) outside [0, {self.dims[1]}) or NaN (and not ignore_label)")
        self.valid = valid
        top[0].data[...] = loss / self.normalizer(valid)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot back-propagate to the labels (bottom 1); "
                             "set propagate_down: false for it")
        if propagate_down[0]:
            scale = self.loss_weight_of(top) / self.normalizer(self.valid)
            d = self.device
            self.kernels("loss").softmax_loss_backward(self.prob.data_on(d), bottom[1].data_on(d),
                                                 bottom[0].mutable_diff_on(d), *self.dims,
                                                 self.has_ignore, self.ignore_label, scale)


@register("EuclideanLoss")
class EuclideanLoss(LossLayer):
    """loss = Σ ‖a − b‖² / (2N);   ∂loss/∂a = (a − b)/N,  ∂loss/∂b = −(a − b)/N (times the loss weight)."""

    no_gradient_bottoms = ()

    def setup(self, bottom, top):
        self.diff = Blob(dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"bottoms must have the same count, got shapes {bottom[0].shape} "
                             f"and {bottom[1].shape}")
        self.diff.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        K, d = self.kernels("loss"), self.device
        sumsq = K.euclidean_loss_forward(bottom[0].data_on(d), bottom[1].data_on(d),
                                         self.diff.mutable_data_on(d))
        with np.errstate(invalid="ignore"):          # num 0: NaN, as Caffe's 0/0
            top[0].data[...] = np.float64(sumsq) / bottom[0].shape[0] / 2.0

    def backward(self, top, propagate_down, bottom):
        blas, d = self.kernels("blas"), self.device
        with np.errstate(divide="ignore"):
            weight = np.float64(self.loss_weight_of(top)) / bottom[0].shape[0]
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                blas.axpby(sign * weight, self.diff.data_on(d), 0.0, bottom[i].mutable_diff_on(d))


@register("Accuracy")
class Accuracy(Layer):
    """Fraction of positions whose true class is among the ``top_k`` highest scores.

    A position counts as correct when the number of classes scoring >= the true
    class (itself included) is <= top_k, so ties count against it. An optional
    second top gives the accuracy per class (0 for classes that do not occur).
    No backward.
    """

    exact_bottoms = 2
    min_tops, max_tops = 1, 2

    @classmethod
    def allow_force_backward(cls, layer_param, bottom_index):
        return False

    def setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.has_ignore = p.HasField("ignore_label")
        self.ignore_label = p.ignore_label if self.has_ignore else 0
        self.class_correct = Blob(dtype=np.float64)
        self.class_count = Blob(dtype=np.float64)

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.param.accuracy_param.axis)
        self.dims = _label_positions(self, bottom[0], bottom[1], self.axis)
        if self.top_k < 1 or self.top_k > self.dims[1]:
            raise self.error(f"top_k ({self.top_k}) must be between 1 and the number of classes "
                             f"({self.dims[1]})")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(self.dims[1])
        self.class_correct.reshape(self.dims[1])
        self.class_count.reshape(self.dims[1])

    def forward(self, bottom, top):
        d = self.device
        correct, count, bad = self.kernels("loss").accuracy_forward(
            bottom[0].data_on(d), bottom[1].data_on(d), *self.dims, self.top_k, self.has_ignore,
            self.ignore_label, self.class_correct.mutable_data_on(d), self.class_count.mutable_data_on(d))
        if bad:
            raise self.error(f"{bad} label(s) outside [0, {self.dims[1]}) or NaN (and not ignore_label)")
        top[0].data[...] = correct / count if count else 0.0
        if len(top) > 1:
            counts, corrects = self.class_count.data, self.class_correct.data
            top[1].data[...] = np.divide(corrects, counts, out=np.zeros_like(corrects), where=counts > 0)


# --------------------------------------------------------------------------- catalogue: losses
def _per_sample(layer, bottom, labels_name="label"):
    """(N, values per sample) of bottom 0, with bottom 1 holding one value per sample."""
    n = bottom[0].shape[0]
    if bottom[1].count != n:
        raise layer.error(f"the {labels_name} blob '{layer.param.bottom[1]}' has {bottom[1].count} "
                          f"values (shape {bottom[1].shape}), but bottom '{layer.param.bottom[0]}' "
                          f"of shape {bottom[0].shape} needs one per sample ({n})")
    return n, bottom[0].count_range(1)


def _refuse_label_gradient(layer, propagate_down, what="labels", index=1):
    if propagate_down[index]:
        raise layer.error(f"cannot back-propagate to the {what} (bottom {index}); "
                          "set propagate_down: false for it")


def _mean(total, n):
    """total / n in float64; NaN for n = 0 (Caffe's 0/0)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.float64(total) / n


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(LossLayer):
    """loss = −Σ_i log(max(p[i, l_i], 1e-20)) / N for probabilities p of shape (N, ...) (the
    values of a sample, e.g. a Softmax top, flattened to dim = count / N) and one label l_i
    per sample (Caffe's kLOG_THRESHOLD 1e-20);
    ∂loss/∂p[i, l_i] = −loss_weight / (N·max(p[i, l_i], 1e-20)), 0 elsewhere. No gradient to
    the labels."""

    def reshape(self, bottom, top):
        top[0].reshape(())
        self.dims = _per_sample(self, bottom)

    def forward(self, bottom, top):
        d = self.device
        loss, bad = self.kernels("loss").multinomial_logistic_loss_forward(
            bottom[0].data_on(d), bottom[1].data_on(d), *self.dims)
        if bad:
            raise self.error(f"{bad} label(s) outside [0, {self.dims[1]}) or NaN")
        top[0].data[...] = _mean(loss, self.dims[0])

    def backward(self, top, propagate_down, bottom):
        _refuse_label_gradient(self, propagate_down)
        if propagate_down[0]:
            d = self.device
            scale = -float(_mean(self.loss_weight_of(top), self.dims[0]))
            self.kernels("loss").multinomial_logistic_loss_backward(
                bottom[0].data_on(d), bottom[1].data_on(d), bottom[0].mutable_diff_on(d),
                *self.dims, scale)


@register("InfogainLoss")
class InfogainLoss(LossLayer):
    """p = softmax(x) along ``infogain_loss_param.axis`` (this Caffe version applies the
    softmax itself); loss = −Σ_positions Σ_k H[l, k]·log(max(p_k, 1e-20)) / normalizer, H the
    (C, C) infogain matrix: from the binaryproto file ``infogain_loss_param.source`` or a
    third bottom (which gets no gradient). Caffe's kLOG_THRESHOLD 1e-20.

    ∂loss/∂x_c = (p_c·Σ_k H[l, k] − H[l, c]) · loss_weight / normalizer; 0 at ignored
    positions. normalization as SoftmaxWithLoss (default VALID; the deprecated ``normalize``
    is refused, as Caffe does); ignore_label. An optional second top is p."""

    min_bottoms, max_bottoms = 2, 3
    max_tops = 2
    no_gradient_bottoms = (1, 2)

    def setup(self, bottom, top):
        lp = self.param.loss_param
        if lp.HasField("normalize"):
            raise self.error('loss_param.normalize is deprecated here; use "normalization"')
        self.normalization = lp.normalization
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = lp.ignore_label if self.has_ignore else 0
        self.prob = Blob(dtype=bottom[0].dtype)
        self.infogain = None
        if len(bottom) < 3:
            p = self.param.infogain_loss_param
            if not p.source:
                raise self.error("the infogain matrix source must be specified "
                                 "(infogain_loss_param.source), or given as a third bottom")
            try:
                h = read_blob_proto(p.source)
            except ProtoError as e:
                raise self.error(f"cannot read the infogain matrix: {e}") from None
            self.infogain = Blob(h.shape, dtype=bottom[0].dtype)
            self.infogain.data[...] = h

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.param.infogain_loss_param.axis)
        self.dims = _label_positions(self, bottom[0], bottom[1], axis)
        classes = self.dims[1]
        h = self.infogain if self.infogain is not None else bottom[2]
        if h.count != classes * classes:
            where = (f"in '{self.param.infogain_loss_param.source}'" if self.infogain is not None
                     else f"in bottom 2 ('{self.param.bottom[2]}')")
            raise self.error(f"the infogain matrix {where} has shape {h.shape} ({h.count} values), "
                             f"but the scores {bottom[0].shape} have {classes} classes along axis "
                             f"{axis}: H must be {classes}x{classes}")
        _reshape_loss_and_prob(bottom, top, self.prob)

    def _h(self, bottom):
        return (self.infogain if self.infogain is not None else bottom[2]).data_on(self.device)

    def forward(self, bottom, top):
        d = self.device
        self.kernels("common").softmax_forward(bottom[0].data_on(d), self.prob.mutable_data_on(d),
                                               *self.dims)
        loss, self.valid, bad = self.kernels("loss").infogain_loss_forward(
            self.prob.data_on(d), bottom[1].data_on(d), self._h(bottom), *self.dims,
            self.has_ignore, self.ignore_label)
        if bad:
            raise self.error(f"{bad} label(s) outside [0, {self.dims[1]}) or NaN (and not ignore_label)")
        top[0].data[...] = loss / _normalizer(self.normalization, self.dims[0], self.dims[2], self.valid)

    def backward(self, top, propagate_down, bottom):
        _refuse_label_gradient(self, propagate_down)
        if len(propagate_down) > 2:
            _refuse_label_gradient(self, propagate_down, "infogain matrix", 2)
        if propagate_down[0]:
            d = self.device
            scale = self.loss_weight_of(top) / _normalizer(self.normalization, self.dims[0],
                                                           self.dims[2], self.valid)
            self.kernels("loss").infogain_loss_backward(
                self.prob.data_on(d), bottom[1].data_on(d), self._h(bottom),
                bottom[0].mutable_diff_on(d), *self.dims, self.has_ignore, self.ignore_label, scale)


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(LossLayer):
    """loss = Σ [−x·(t − [x >= 0]) + log(1 + e^−|x|)] / normalizer, the cross-entropy of
    σ(x) against targets t in [0, 1] (the same count as x), in the form that no exp
    overflows; ∂loss/∂x = (σ(x) − t) · loss_weight / normalizer.

    normalization defaults to BATCH_SIZE here (Caffe's rule for this layer: the legacy
    ``normalize`` gives VALID/BATCH_SIZE, otherwise BATCH_SIZE unless ``normalization`` is
    set); ignore_label skips the values whose int(t) equals it (ignored values get no
    gradient). A target that is NaN or outside [0, 1] is an error. No gradient to the targets."""

    def setup(self, bottom, top):
        lp = self.param.loss_param
        if lp.HasField("normalization"):
            self.normalization = lp.normalization
        elif lp.HasField("normalize"):
            self.normalization = _NORM.VALID if lp.normalize else _NORM.BATCH_SIZE
        else:
            self.normalization = _NORM.BATCH_SIZE
        self.has_ignore = lp.HasField("ignore_label")
        self.ignore_label = lp.ignore_label if self.has_ignore else 0

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise self.error(f"the inputs must have the same count: bottom '{self.param.bottom[0]}' "
                             f"has shape {bottom[0].shape}, the targets '{self.param.bottom[1]}' "
                             f"{bottom[1].shape}")
        top[0].reshape(())
        self.outer, self.inner = bottom[0].shape[0], bottom[0].count_range(1)

    def forward(self, bottom, top):
        d = self.device
        loss, self.valid, bad = self.kernels("loss").sigmoid_cross_entropy_loss_forward(
            bottom[0].data_on(d), bottom[1].data_on(d), self.has_ignore, self.ignore_label)
        if bad:
            raise self.error(f"{bad} target(s) outside [0, 1] or NaN (and not ignore_label)")
        top[0].data[...] = loss / _normalizer(self.normalization, self.outer, self.inner, self.valid)

    def backward(self, top, propagate_down, bottom):
        _refuse_label_gradient(self, propagate_down, "targets")
        if propagate_down[0]:
            d = self.device
            scale = self.loss_weight_of(top) / _normalizer(self.normalization, self.outer,
                                                           self.inner, self.valid)
            self.kernels("loss").sigmoid_cross_entropy_loss_backward(
                bottom[0].data_on(d), bottom[1].data_on(d), bottom[0].mutable_diff_on(d),
                self.has_ignore, self.ignore_label, scale)


@register("HingeLoss")
class HingeLoss(LossLayer):
    """One label l_i per sample and scores x (N, ...) flattened to dim = count / N classes;
    with t_ij = 1 for j = l_i and −1 otherwise, the margins m_ij = max(0, 1 − t_ij·x_ij) and
    loss = Σ m / N (norm L1, the default) or Σ m² / N (L2).
    ∂loss/∂x_ij = −t_ij · (1 if m_ij > 0 else 0 (L1) | 2·m_ij (L2)) · loss_weight / N."""

    def setup(self, bottom, top):
        self.l2 = self.param.hinge_loss_param.norm == pb.HingeLossParameter.L2
        self.margins = Blob(dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        top[0].reshape(())
        self.dims = _per_sample(self, bottom)
        self.margins.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        d = self.device
        m = self.margins.mutable_data_on(d)
        bad = self.kernels("loss").hinge_loss_forward(bottom[0].data_on(d), bottom[1].data_on(d),
                                                      m, *self.dims)
        if bad:
            raise self.error(f"{bad} label(s) outside [0, {self.dims[1]}) or NaN")
        blas = self.kernels("blas")
        total = blas.dot(m, m) if self.l2 else blas.asum(m)
        top[0].data[...] = _mean(total, self.dims[0])

    def backward(self, top, propagate_down, bottom):
        _refuse_label_gradient(self, propagate_down)
        if propagate_down[0]:
            d = self.device
            scale = float(_mean(self.loss_weight_of(top), self.dims[0]))
            self.kernels("loss").hinge_loss_backward(self.margins.data_on(d), bottom[1].data_on(d),
                                                     bottom[0].mutable_diff_on(d), *self.dims,
                                                     self.l2, scale)


@register("ContrastiveLoss")
class ContrastiveLoss(LossLayer):
    """Bottoms a, b of shape (N, ...) (D = count / N values a sample) and a similarity y (N
    values; a pair is similar when int(y) != 0, as Caffe reads it); d_i = ‖a_i − b_i‖.
    loss = Σ_i [d_i² if similar else max(margin − d_i, 0)²] / (2N); ``legacy_version`` uses
    max(margin − d_i², 0) for the dissimilar pairs.

    ∂loss/∂a_i = −∂loss/∂b_i = (a_i − b_i)/N · loss_weight for similar pairs; for dissimilar
    pairs with margin − d_i > 0: −(margin − d_i)/(d_i + 1e-4)·(a_i − b_i)/N · loss_weight
    (Caffe's gradient: the 1e-4 keeps d = 0 finite, at a relative cost of 1e-4/d), legacy
    −(a_i − b_i)/N · loss_weight where margin − d_i² > 0; 0 otherwise. The similarity gets no
    gradient (propagate_down to it is ignored, as in Caffe)."""

    min_bottoms = max_bottoms = None
    exact_bottoms = 3
    no_gradient_bottoms = (2,)
    min_axes = (1, 1, 0)

    def setup(self, bottom, top):
        self.diff = Blob(dtype=bottom[0].dtype)
        self.dist_sq = Blob(dtype=bottom[0].dtype)

    def reshape(self, bottom, top):
        n, dim = bottom[0].shape[0], bottom[0].count_range(1)
        if bottom[1].count_range(1) != dim:
            raise self.error(f"bottoms '{self.param.bottom[0]}' {bottom[0].shape} and "
                             f"'{self.param.bottom[1]}' {bottom[1].shape} must have the same "
                             "number of values per sample")
        if bottom[2].count != n:
            raise self.error(f"the similarity blob '{self.param.bottom[2]}' has {bottom[2].count} "
                             f"values (shape {bottom[2].shape}), but there are {n} pairs")
        self.dims = (n, dim)
        top[0].reshape(())
        self.diff.reshape(bottom[0].shape)
        self.dist_sq.reshape(n)

    def _margin(self):
        p = self.param.contrastive_loss_param
        return float(p.margin), bool(p.legacy_version)

    def forward(self, bottom, top):
        d, vocab = self.device, self.kernels("math")
        n, dim = self.dims
        diff, dist_sq = self.diff.mutable_data_on(d), self.dist_sq.mutable_data_on(d)
        vocab.sub(bottom[0].data_on(d), bottom[1].data_on(d), diff)
        loss, bad = self.kernels("loss").contrastive_loss_forward(diff, bottom[2].data_on(d), dist_sq,
                                                                  n, dim, *self._margin())
        if bad:
            raise self.error(f"{bad} similarity label(s) are NaN")
        top[0].data[...] = _mean(loss, n) / 2.0

    def backward(self, top, propagate_down, bottom):
        d, K = self.device, self.kernels("loss")
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                alpha = sign * float(_mean(self.loss_weight_of(top), self.dims[0]))
                K.contrastive_loss_backward(self.diff.data_on(d), self.dist_sq.data_on(d),
                                            bottom[2].data_on(d), bottom[i].mutable_diff_on(d),
                                            *self.dims, *self._margin(), alpha)
