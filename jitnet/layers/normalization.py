"""Normalization layers: BatchNorm and MVN.

Kernels: ``kernels/{cpu,gpu}/normalization.py`` for BatchNorm's passes over the data (two each
way, measured 3x faster or more than the same layer in the math vocabulary: see that module),
the math vocabulary for the per-channel vectors; ``kernels/{cpu,gpu}/mvn.py`` for MVN's fused
passes.
"""
from ..blob import Blob
from ..common import CPU, TEST
from ..layer import Layer, register


@register("BatchNorm")
class BatchNorm(Layer):
    """Caffe's BatchNormLayer: each channel (axis 1) normalized to zero mean and unit variance,
    no learned scale or shift (nets follow it with a Scale layer, ``bias_term: true``).

    Bottom (N, C, ...) with at least two axes; the statistics run over N and the spatial axes,
    m = N·S values per channel (S = count / (N·C)).

    Three blobs, as Caffe stores them: the running mean sum (C), the running variance sum (C)
    and a one-element scale factor (1), all 0 at setup. They are not learned: lr_mult is 0 on
    each (Caffe refuses a ``param`` giving one another lr_mult; decay_mult is kept).

    * Global statistics (``use_global_stats``, default: true in TEST, false in TRAIN):
      f = 0 if blob2 = 0 else 1 / blob2;  μ = f·blob0,  σ² = f·blob1;
      y = (x − μ) / √(σ² + eps);  ∂E/∂x = ∂E/∂y / √(σ² + eps).
    * Batch statistics: μ = mean(x), σ² = mean((x − μ)²) (biased) per channel;
      x̂ = (x − μ) / √(σ² + eps) = y;
      ∂E/∂x = (∂E/∂y − mean(∂E/∂y) − x̂·mean(∂E/∂y·x̂)) / √(σ² + eps);
      and each forward updates the running sums (λ = moving_average_fraction):
      blob2 ← λ·blob2 + 1,  blob0 ← λ·blob0 + μ,  blob1 ← λ·blob1 + m/(m − 1)·σ² (factor 1 if m = 1).

    Formulas and blob layout from Caffe's batch_norm_layer.cpp. May run in place: x̂ is
    kept in a buffer of the layer's own (as Caffe's x_norm_), since the top may be
    overwritten by a later in-place layer before backward.
    """

    exact_bottoms = exact_tops = 1
    in_place = True

    @classmethod
    def param_count(cls, layer_param):
        return 3

    @classmethod
    def param_specs(cls, layer_param):
        """The statistics are not learned: lr_mult 0 on all three blobs (decay_mult as given)."""
        specs = super().param_specs(layer_param)
        for spec in specs:
            spec.lr_mult = 0.0
        return specs

    def setup(self, bottom, top):
        p = self.param.batch_norm_param
        for j, spec in enumerate(self.param.param):
            if spec.HasField("lr_mult") and spec.lr_mult != 0:
                raise self.error(f"param {j} sets lr_mult {spec.lr_mult:g}: the batch statistics "
                                 f"cannot be learned (Caffe refuses them as layer parameters); "
                                 f"leave lr_mult out or set it to 0")
        self.use_global_stats = (p.use_global_stats if p.HasField("use_global_stats")
                                 else self.phase == TEST)
        self.moving_average_fraction = p.moving_average_fraction
        self.eps = p.eps
        self._check_axes(bottom[0])
        self.channels = bottom[0].shape[1]
        dtype = bottom[0].dtype
        self.blobs = [Blob((self.channels,), dtype=dtype), Blob((self.channels,), dtype=dtype),
                      Blob((1,), dtype=dtype)]
        for blob in self.blobs:
            blob.data[...] = 0
        # work buffers: μ, σ², 1/√(σ² + eps) and backward's two means per channel; x̂
        self.mean, self.variance, self.inv_std, self.mean_dy, self.mean_dy_x_norm = (
            Blob((self.channels,), dtype=dtype) for _ in range(5))
        self.x_norm = Blob(dtype=dtype)

    def _check_axes(self, blob):
        if blob.num_axes < 2:
            raise self.error(f"BatchNorm on a blob with fewer than two axes: bottom "
                             f"'{self.param.bottom[0]}' has shape {blob.shape}; the channels "
                             f"are axis 1 of an (N, C, ...) blob")

    def reshape(self, bottom, top):
        x = bottom[0]
        self._check_axes(x)
        if x.shape[1] != self.channels:
            raise self.error(f"bottom '{self.param.bottom[0]}' of shape {x.shape} has {x.shape[1]} "
                             f"channels, but the statistics were made for {self.channels}")
        self.num = x.shape[0]
        self.spatial = x.count_range(2)
        top[0].reshape(x.shape)
        if not self.use_global_stats:
            self.x_norm.reshape(x.shape)

    def _dims(self):
        return self.num, self.channels, self.spatial

    def forward(self, bottom, top):
        M, blas, K, d = self.kernels("math"), self.kernels("blas"), self.kernels("normalization"), self.device
        x, y = bottom[0].data_on(d), top[0].mutable_data_on(d)
        mean, var = self.mean.mutable_data_on(d), self.variance.mutable_data_on(d)
        inv_std = self.inv_std.mutable_data_on(d)
        if self.use_global_stats:
            stored = float(self.blobs[2].data_on(CPU)[0])
            factor = 0.0 if stored == 0 else 1.0 / stored
            blas.axpby(factor, self.blobs[0].data_on(d), 0.0, mean)
            blas.axpby(factor, self.blobs[1].data_on(d), 0.0, var)
            x_norm = y                                           # backward needs no x̂
        else:
            if self.num * self.spatial == 0:
                raise self.error(f"batch statistics of an empty bottom (shape {bottom[0].shape}); "
                                 f"set use_global_stats or give it values")
            x_norm = self.x_norm.mutable_data_on(d)
            K.batch_norm_moments(x, mean, var, *self._dims())
            self._update_running_sums(M, blas, d, mean, var)
        M.add_scalar(self.eps, var)
        M.powx(var, -0.5, inv_std)                               # 1/√(σ² + eps)
        K.batch_norm_forward(x, mean, inv_std, y, x_norm, *self._dims())

    def _update_running_sums(self, M, blas, d, mean, var):
        """blob2 ← λ·blob2 + 1, blob0 ← λ·blob0 + μ, blob1 ← λ·blob1 + m/(m − 1)·σ²."""
        lam, m = self.moving_average_fraction, self.num * self.spatial
        factor = self.blobs[2].mutable_data_on(d)
        blas.scale(lam, factor)
        M.add_scalar(1.0, factor)
        blas.axpby(1.0, mean, lam, self.blobs[0].mutable_data_on(d))
        correction = m / (m - 1) if m > 1 else 1.0
        blas.axpby(correction, var, lam, self.blobs[1].mutable_data_on(d))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        d = self.device
        dy, dx = top[0].diff_on(d), bottom[0].mutable_diff_on(d)
        inv_std = self.inv_std.data_on(d)
        if self.use_global_stats:
            self.kernels("math").channel_scale(dy, inv_std, dx, *self._dims())
            return
        K = self.kernels("normalization")
        x_norm = self.x_norm.data_on(d)
        mean_dy, mean_dy_x_norm = self.mean_dy.mutable_data_on(d), self.mean_dy_x_norm.mutable_data_on(d)
        K.batch_norm_backward_sums(dy, x_norm, mean_dy, mean_dy_x_norm, *self._dims())
        K.batch_norm_backward(dy, x_norm, mean_dy, mean_dy_x_norm, inv_std, dx, *self._dims())


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
