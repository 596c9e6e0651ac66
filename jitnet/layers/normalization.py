"""Normalization layers: BatchNorm (and, later, MVN).

Kernels: the math vocabulary (``kernels/{cpu,gpu}/math.py``) unless a fused kernel pays.
"""


# =========================================================================== MVN (issue 9)
# (This block keeps its own imports, so that it merges next to the rest of the family.)
from ..blob import Blob  # noqa: E402
from ..layer import Layer, register  # noqa: E402


@register("MVN")
class MVN(Layer):
    """Mean-variance normalization (Caffe's mvn_layer.cpp), per (n, c) plane, or per sample
    n over (c, h, w) with ``across_channels``; d = the plane's size:

    y = (x − μ) / (σ + eps) with σ = √(Σ (x − μ)² / d) (the biased deviation; eps, 1e-9 by
    default, is added to σ as Caffe does), or y = x − μ without ``normalize_variance``;
    ∂E/∂x = (∂E/∂y − mean(∂E/∂y) − y·mean(y·∂E/∂y)) / (σ + eps), or ∂E/∂y − mean(∂E/∂y)
    (Caffe's backward: it leaves out the factor σ / (σ + eps) on the last term).

    As in Caffe the bottom is read through the legacy (num, channels, height, width): at
    most 4 axes, and the top is 4-D with the missing axes 1 (a 2-D (N, C) bottom gives an
    (N, C, 1, 1) top). Kernels: kernels/{cpu,gpu}/mvn.py (a fused pair: one pass per statistic).
    """

    exact_bottoms = exact_tops = 1

    def setup(self, bottom, top):
        self.scale = Blob(0, dtype=self.dtype)         # 1 / (σ + eps) per plane

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) > 4:
            raise self.error(f"MVN reads its bottom as (num, channels, height, width): at most 4 "
                             f"axes, got shape {shape}")
        n, c, h, w = tuple(shape) + (1,) * (4 - len(shape))
        top[0].reshape((n, c, h, w))
        p = self.param.mvn_param
        self.planes, self.size = (n, c * h * w) if p.across_channels else (n * c, h * w)
        self.scale.reshape(self.planes)

    def forward(self, bottom, top):
        d, p = self.device, self.param.mvn_param
        self.kernels("mvn").mvn_forward(bottom[0].data_on(d), top[0].mutable_data_on(d),
                                        self.scale.mutable_data_on(d), self.planes, self.size,
                                        p.normalize_variance, p.eps)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = self.device
            self.kernels("mvn").mvn_backward(top[0].data_on(d), top[0].diff_on(d), self.scale.data_on(d),
                                             bottom[0].mutable_diff_on(d), self.planes, self.size,
                                             self.param.mvn_param.normalize_variance)
