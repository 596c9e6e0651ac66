"""Neuron layers: one bottom, one top of the same shape; top[i] depends only on bottom[i].

Each states only its kernels (``kernels/{cpu,gpu}/neuron.py``) through the
NeuronLayer hooks ``forward_kernel(K, x, y)`` and ``backward_kernel(K, x, y, dy, dx)``.
They may run in place (top = bottom), as Caffe nets write them.
"""
import numpy as np

from .. import common
from ..blob import Blob
from ..common import TRAIN
from ..layer import NeuronLayer, register


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
