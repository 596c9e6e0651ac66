"""Loss layers and Accuracy. Kernels: ``kernels/{cpu,gpu}/loss.py``.

A loss layer's backward scales its gradient by the loss weight the net put into
its top's diff (Caffe's convention), so ``loss_weight: 0.3`` in a prototxt
scales both the reported loss and the gradient.
"""
import numpy as np

from ..blob import Blob
from ..layer import Layer, LossLayer, register
from ..proto import pb
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
        top[0].reshape(())
        self.prob.reshape(bottom[0].shape)
        if len(top) > 1:
            top[1].reshape(bottom[0].shape)
            top[1].share_data(self.prob)

    def normalizer(self, valid_count):
        outer, _, inner = self.dims
        n = {_NORM.FULL: outer * inner, _NORM.VALID: valid_count,
             _NORM.BATCH_SIZE: outer, _NORM.NONE: 1}[self.normalization]
        return max(1.0, float(n))

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
