"""Neuron layers: one bottom, one top of the same shape; top[i] depends only on bottom[i].
Kernels: ``kernels/{cpu,gpu}/neuron.py``. All may run in place (top = bottom)."""
import numpy as np

from .. import common
from ..layer import NeuronLayer, register
from ..common import TRAIN


@register("ReLU")
class ReLU(NeuronLayer):
    """y = max(x, 0) + ν·min(x, 0);   ∂E/∂x = ∂E/∂y · (1 if x > 0 else ν)   (ν = negative_slope)."""

    def forward(self, bottom, top):
        self.kernels("neuron").relu_forward(bottom[0].data_on(self.device), top[0].mutable_data_on(self.device),
                                      self.param.relu_param.negative_slope)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.kernels("neuron").relu_backward(bottom[0].data_on(self.device), top[0].diff_on(self.device),
                                           bottom[0].mutable_diff_on(self.device),
                                           self.param.relu_param.negative_slope)


@register("Sigmoid")
class Sigmoid(NeuronLayer):
    """y = 1 / (1 + e^−x);   ∂E/∂x = ∂E/∂y · y(1 − y)."""

    def forward(self, bottom, top):
        self.kernels("neuron").sigmoid_forward(bottom[0].data_on(self.device), top[0].mutable_data_on(self.device))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.kernels("neuron").sigmoid_backward(top[0].data_on(self.device), top[0].diff_on(self.device),
                                              bottom[0].mutable_diff_on(self.device))


@register("TanH")
class TanH(NeuronLayer):
    """y = tanh(x);   ∂E/∂x = ∂E/∂y · (1 − y²)."""

    def forward(self, bottom, top):
        self.kernels("neuron").tanh_forward(bottom[0].data_on(self.device), top[0].mutable_data_on(self.device))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.kernels("neuron").tanh_backward(top[0].data_on(self.device), top[0].diff_on(self.device),
                                           bottom[0].mutable_diff_on(self.device))


@register("Dropout")
class Dropout(NeuronLayer):
    """TRAIN: y = x·m / (1 − p), m ~ Bernoulli(1 − p) per value (p = dropout_ratio);  TEST: y = x.
    ∂E/∂x = ∂E/∂y · m / (1 − p) in TRAIN, ∂E/∂y in TEST. The mask comes from jitnet's
    seeded generator, so runs with one seed drop the same values on the CPU and the GPU."""

    def setup(self, bottom, top):
        self.ratio = self.param.dropout_param.dropout_ratio
        if not 0.0 <= self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in [0, 1), got {self.ratio}")
        self.scale = 1.0 / (1.0 - self.ratio)
        self.mask = None

    def forward(self, bottom, top):
        x, y = bottom[0].data_on(self.device), top[0].mutable_data_on(self.device)
        if self.phase != TRAIN:
            self.kernels("blas").copy(x, y)
            return
        self.mask = (common.rng().random(bottom[0].count) >= self.ratio).astype(np.uint8)
        if self.device == common.GPU:
            from numba import cuda
            self.mask = cuda.to_device(self.mask)
        self.kernels("neuron").dropout_forward(x, self.mask, y, self.scale)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy, dx = top[0].diff_on(self.device), bottom[0].mutable_diff_on(self.device)
        if self.phase != TRAIN:
            self.kernels("blas").copy(dy, dx)
            return
        self.kernels("neuron").dropout_backward(dy, self.mask, dx, self.scale)
