"""Vision layers: convolution and its relatives, pooling, local response normalization.

Kernels: ``kernels/{cpu,gpu}/im2col.py`` (the im2col family and the convolution drivers
built on it), ``kernels/{cpu,gpu}/pooling.py`` and ``kernels/{cpu,gpu}/lrn.py``.
"""


# =========================================================================== convolution family
# Convolution, Deconvolution and Im2col share _ConvolutionBase (Caffe's BaseConvolutionLayer).


# =========================================================================== pooling, SPP, LRN
# Pooling (MAX, AVE, STOCHASTIC), SPP (pyramid pooling with the same kernels) and LRN.
# Kernels: kernels/{cpu,gpu}/pooling.py and kernels/{cpu,gpu}/lrn.py. (The imports sit in this
# section so that the family's three sections merge cleanly; they belong at the top of the file.)
import math  # noqa: E402

import numpy as np  # noqa: E402

from .. import common  # noqa: E402
from ..blob import Blob  # noqa: E402
from ..errors import NetDefinitionError  # noqa: E402
from ..layer import Layer, register  # noqa: E402
from ..proto import pb  # noqa: E402

_POOL = pb.PoolingParameter


def pooled_extent(size, kernel, pad, stride, ceil=True):
    """Caffe's pooled extent along one axis: ceil((size + 2·pad − kernel) / stride) + 1 (floor
    with round_mode FLOOR); with padding, a last window that would start in the padding is
    dropped, so that (out − 1)·stride < size + pad."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad > 0 and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _four_axes(layer, bottom):
    if bottom.num_axes != 4:
        raise layer.error(f"Input must have 4 axes, corresponding to (num, channels, height, width): "
                          f"bottom '{layer.param.bottom[0]}' has shape {bottom.shape}")
    return bottom.shape


def _pair(p, name, default, square=None):
    """(h, w) of a pooling parameter given as ``square`` (default: ``name``) or as ``name_h`` and
    ``name_w`` (Caffe: one form or the other; the _h/_w form needs both)."""
    square = square or name
    has, has_h, has_w = p.HasField(square), p.HasField(name + "_h"), p.HasField(name + "_w")
    if has and (has_h or has_w):
        raise ValueError(f"give {square} or {name}_h and {name}_w, not both")
    if has_h != has_w:
        raise ValueError(f"{name}_h and {name}_w go together: only {name}_{'h' if has_h else 'w'} is set")
    if has_h:
        return getattr(p, name + "_h"), getattr(p, name + "_w")
    value = getattr(p, square) if has else default
    return value, value


@register("Pooling")
class Pooling(Layer):
    """Caffe's PoolingLayer over the last two axes of an (N, C, H, W) bottom.

    Output (oh, ow) pools the window of rows oh·stride_h − pad_h .. + kernel_h and columns
    ow·stride_w − pad_w .. + kernel_w; the output extent is ceil((H + 2·pad − kernel)/stride) + 1
    (floor with ``round_mode: FLOOR``), less a last window that would start in the padding.

    * MAX: y = the window's first maximum in row-major order; ∂E/∂x goes to that position only.
      A second top receives the argmax as Caffe stores it: h·W + w within the plane, as a float.
    * AVE: y = Σ of the window's image values / pool_size, pool_size counting the padding (the
      window clipped to H + pad_h, W + pad_w); ∂E/∂x = Σ over the windows holding x of
      ∂E/∂y / pool_size.
    * STOCHASTIC (no padding): in TRAIN, y = x[i] with i drawn per window with probability
      x_i / Σ x (one uniform u per output from jitnet's seeded generator, i = the first position
      where the running sum reaches u·Σ x), ∂E/∂x goes to i; in TEST, y = Σ x² / (FLT_MIN + Σ x),
      with its exact gradient (2x·S − Q)/S². Caffe runs STOCHASTIC on its GPU only (its CPU code
      is not implemented); jitnet runs it on both, with the same numbers for one seed.

    ``global_pooling: true`` takes the kernel from the bottom's H × W (pad 0, stride 1). A window
    that holds no image value, which Caffe's CEIL rounding gives when stride > kernel without
    padding, yields −FLT_MAX (MAX, as Caffe, with no gradient) or 0 (AVE, where Caffe divides 0
    by a non-positive pool_size).
    """

    exact_bottoms = 1
    min_tops, max_tops = 1, 2

    @classmethod
    def check_arity(cls, layer_param):
        super().check_arity(layer_param)
        if len(layer_param.top) == 2 and layer_param.pooling_param.pool != _POOL.MAX:
            raise NetDefinitionError(
                f"layer '{layer_param.name}' (type Pooling) takes a second top (the argmax mask) "
                f"only with pool: MAX, not {_POOL.PoolMethod.Name(layer_param.pooling_param.pool)}")

    def setup(self, bottom, top):
        p = self.param.pooling_param
        self.method, self.global_pooling = p.pool, p.global_pooling
        self.ceil = p.round_mode == _POOL.CEIL
        kernel_fields = [f for f in ("kernel_size", "kernel_h", "kernel_w") if p.HasField(f)]
        try:
            if self.global_pooling and kernel_fields:
                raise ValueError(f"global_pooling: true takes the kernel from the bottom, so "
                                 f"{', '.join(kernel_fields)} must not be set")
            if not self.global_pooling and not kernel_fields:
                raise ValueError("no kernel size: set kernel_size (or kernel_h and kernel_w), or "
                                 "global_pooling: true")
            self.kernel = None if self.global_pooling else _pair(p, "kernel", 0, "kernel_size")
            self.pad, self.stride = _pair(p, "pad", 0), _pair(p, "stride", 1)
        except ValueError as e:
            raise self.error(str(e)) from None
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.error(f"with global_pooling: true, only pad = 0 and stride = 1 are allowed "
                             f"(pad {self.pad}, stride {self.stride})")
        if min(self.stride) <= 0:
            raise self.error(f"stride must be positive, got stride (h, w) = {self.stride}")
        if self.pad != (0, 0) and self.method == _POOL.STOCHASTIC:
            raise self.error(f"Padding implemented only for average and max pooling (pool: "
                             f"STOCHASTIC with pad (h, w) = {self.pad})")
        self.mask = Blob(dtype=np.int32)          # MAX's argmax (copied to the second top, if any)
        self.index = Blob(dtype=np.int32)         # STOCHASTIC's sampled positions (TRAIN)
        self.uniforms = Blob(dtype=self.dtype)     # STOCHASTIC's draws, one per output

    def reshape(self, bottom, top):
        n, c, h, w = _four_axes(self, bottom[0])
        kernel = (h, w) if self.global_pooling else self.kernel
        if min(kernel) <= 0:
            raise self.error(f"the kernel must be at least 1 × 1, got (h, w) = {kernel}"
                             + (f" from a bottom of shape {bottom[0].shape}" if self.global_pooling else ""))
        if self.pad[0] >= kernel[0] or self.pad[1] >= kernel[1]:
            raise self.error(f"pad >= kernel: pad (h, w) = {self.pad} must be smaller than the "
                             f"kernel {kernel}")
        out = tuple(pooled_extent(size, k, pad, s, self.ceil)
                    for size, k, pad, s in zip((h, w), kernel, self.pad, self.stride))
        if min(out) <= 0:
            raise self.error(f"the output would be {out[0]} × {out[1]}: a {kernel[0]} × {kernel[1]} "
                             f"kernel with pad {self.pad} and stride {self.stride} does not fit the "
                             f"{h} × {w} bottom {bottom[0].shape}")
        self.planes = n * c
        self.geometry = (n, c, h, w, out[0], out[1], kernel[0], kernel[1], self.stride[0],
                         self.stride[1], self.pad[0], self.pad[1])
        for blob in top:
            blob.reshape((n, c) + out)
        if self.method == _POOL.MAX:
            self.mask.reshape((n, c) + out)
        if self.method == _POOL.STOCHASTIC:
            self.index.reshape((n, c) + out)
            self.uniforms.reshape((n, c) + out)

    def _stochastic_geometry(self):
        n, c, h, w, oh, ow, kh, kw, sh, sw, _, _ = self.geometry
        return n * c, h, w, oh, ow, kh, kw, sh, sw

    def forward(self, bottom, top):
        K, d = self.kernels("pooling"), self.device
        x, y = bottom[0].data_on(d), top[0].mutable_data_on(d)
        top_stride = top[0].count_range(1)
        if self.method == _POOL.MAX:
            K.max_pool_forward(x, *self.geometry, top_stride, 0, y, self.mask.mutable_data_on(d))
            if len(top) > 1:                     # Caffe's mask top: the indices as floats
                self.kernels("blas").copy(self.mask.data_on(d), top[1].mutable_data_on(d))
        elif self.method == _POOL.AVE:
            K.ave_pool_forward(x, *self.geometry, top_stride, 0, y)
        elif self.phase == common.TRAIN:
            u = self.uniforms.mutable_data_on(common.CPU)
            u[:] = common.rng().random(u.size, dtype=u.dtype)
            K.stochastic_pool_forward_train(x, self.uniforms.data_on(d), *self._stochastic_geometry(),
                                            y, self.index.mutable_data_on(d))
        else:
            K.stochastic_pool_forward_test(x, *self._stochastic_geometry(), y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        K, d = self.kernels("pooling"), self.device
        dy, dx = top[0].diff_on(d), bottom[0].mutable_diff_on(d)
        top_stride = top[0].count_range(1)
        if self.method == _POOL.MAX:
            if len(top) > 1:                     # Caffe routes by the mask top as it is now
                self.kernels("blas").copy(top[1].data_on(d), self.mask.mutable_data_on(d))
            K.max_pool_backward(dy, self.mask.data_on(d), *self.geometry, top_stride, 0, False, dx)
        elif self.method == _POOL.AVE:
            K.ave_pool_backward(dy, *self.geometry, top_stride, 0, False, dx)
        elif self.phase == common.TRAIN:        # to the sampled positions, as MAX to its argmax
            K.max_pool_backward(dy, self.index.data_on(d), *self.geometry, top_stride, 0, False, dx)
        else:
            K.stochastic_pool_backward_test(bottom[0].data_on(d), dy, *self._stochastic_geometry(), dx)


@register("SPP")
class SPP(Layer):
    """Caffe's SPPLayer: spatial pyramid pooling of an (N, C, H, W) bottom.

    Level l = 0 .. pyramid_height − 1 pools with 2^l bins per side: kernel = ceil(H / 2^l), pad =
    (kernel·2^l − H + 1) // 2, stride = kernel (the same along W), MAX or AVE as Pooling does;
    each level is flattened per image and the levels are concatenated along axis 1:
    (N, C·Σ_l out_h·out_w), 4^l bins per level where the pad rule keeps them. pyramid_height 1
    is one global pooling, and its top keeps Caffe's (N, C, 1, 1). The levels write straight into
    their part of the top; backward sums their gradients.

    A level whose pad reaches its kernel (H < 2^l, about) fails as Caffe's pooling check does.
    STOCHASTIC is refused: Caffe's CPU pooling does not implement it, and its GPU pooling refuses
    the padding most levels need.
    """

    exact_bottoms = exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.spp_param
        if p.pyramid_height < 1:
            raise self.error(f"pyramid_height must be at least 1, got {p.pyramid_height}")
        if p.pool == pb.SPPParameter.STOCHASTIC:
            raise self.error("pool: STOCHASTIC is not supported by SPP (Caffe's CPU pooling does not "
                             "implement it, its GPU pooling refuses padded levels); use MAX or AVE")
        self.levels, self.method = p.pyramid_height, p.pool
        self.mask = Blob(dtype=np.int32)

    def reshape(self, bottom, top):
        n, c, h, w = _four_axes(self, bottom[0])
        if h <= 0 or w <= 0:
            raise self.error(f"Input dimensions cannot be zero: bottom shape {bottom[0].shape}")
        self.geometry, offset = [], 0
        for level in range(self.levels):
            bins = 2 ** level
            kernel = (math.ceil(h / bins), math.ceil(w / bins))
            pad = ((kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2)
            if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
                raise self.error(f"pyramid level {level} ({bins} × {bins} bins) of a {h} × {w} bottom "
                                 f"needs pad {pad} with kernel {kernel}, and pooling needs pad < "
                                 f"kernel: use a pyramid_height below {level + 1} for this input")
            out = tuple(pooled_extent(size, k, p, k) for size, k, p in zip((h, w), kernel, pad))
            self.geometry.append(((n, c, h, w) + out + kernel + kernel + pad, offset))
            offset += c * out[0] * out[1]
        self.top_stride = offset
        top[0].reshape((n, c, 1, 1) if self.levels == 1 else (n, offset))
        if self.method == pb.SPPParameter.MAX:
            self.mask.reshape(top[0].shape)

    def forward(self, bottom, top):
        K, d = self.kernels("pooling"), self.device
        x, y = bottom[0].data_on(d), top[0].mutable_data_on(d)
        for geometry, offset in self.geometry:
            if self.method == pb.SPPParameter.MAX:
                K.max_pool_forward(x, *geometry, self.top_stride, offset, y, self.mask.mutable_data_on(d))
            else:
                K.ave_pool_forward(x, *geometry, self.top_stride, offset, y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        K, d = self.kernels("pooling"), self.device
        dy, dx = top[0].diff_on(d), bottom[0].mutable_diff_on(d)
        for level, (geometry, offset) in enumerate(self.geometry):
            if self.method == pb.SPPParameter.MAX:
                K.max_pool_backward(dy, self.mask.data_on(d), *geometry, self.top_stride, offset,
                                    level > 0, dx)
            else:
                K.ave_pool_backward(dy, *geometry, self.top_stride, offset, level > 0, dx)


@register("LRN")
class LRN(Layer):
    """Caffe's LRNLayer (local response normalization) of an (N, C, H, W) bottom: y = x·scale^(−β).

    * ACROSS_CHANNELS: scale = k + (α/n)·Σ x² over the n = local_size channels centred on the
      value's (zero-padded);
      ∂E/∂x = ∂E/∂y·scale^(−β) − (2αβ/n)·x·Σ_window(∂E/∂y·y/scale).
    * WITHIN_CHANNEL: scale = 1 + α·(Σ x² over the n × n window centred on the value, zero-
      padded)/n² (k is not used, as in Caffe, whose version is AVE pooling then Power);
      ∂E/∂x = ∂E/∂y·scale^(−β) − (2αβ/n²)·x·Σ_window(∂E/∂y·y/scale).

    The scale buffer is kept from forward for backward (Caffe's scale_), as is a workspace for
    WITHIN_CHANNEL's backward window sums.
    """

    exact_bottoms = exact_tops = 1

    def setup(self, bottom, top):
        p = self.param.lrn_param
        if p.local_size % 2 != 1:
            raise self.error(f"LRN only supports odd values for local_size, got {p.local_size}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.across = p.norm_region == pb.LRNParameter.ACROSS_CHANNELS
        self.scale = Blob(dtype=self.dtype)
        self.ratio = Blob(dtype=self.dtype)

    def reshape(self, bottom, top):
        shape = _four_axes(self, bottom[0])
        top[0].reshape(shape)
        self.scale.reshape(shape)
        if not self.across:
            self.ratio.reshape(shape)

    def forward(self, bottom, top):
        K, d = self.kernels("lrn"), self.device
        n, c, h, w = bottom[0].shape
        x, y, scale = bottom[0].data_on(d), top[0].mutable_data_on(d), self.scale.mutable_data_on(d)
        if self.across:
            K.lrn_across_forward(x, n, c, h * w, self.size, self.alpha, self.beta, self.k, scale, y)
        else:
            K.lrn_within_forward(x, n * c, h, w, self.size, self.alpha, self.beta, scale, y)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        K, d = self.kernels("lrn"), self.device
        n, c, h, w = bottom[0].shape
        x, y, scale = bottom[0].data_on(d), top[0].data_on(d), self.scale.data_on(d)
        dy, dx = top[0].diff_on(d), bottom[0].mutable_diff_on(d)
        if self.across:
            K.lrn_across_backward(x, y, scale, dy, n, c, h * w, self.size, self.alpha, self.beta, dx)
        else:
            K.lrn_within_backward(x, y, scale, dy, n * c, h, w, self.size, self.alpha, self.beta,
                                  self.ratio.mutable_data_on(d), dx)
