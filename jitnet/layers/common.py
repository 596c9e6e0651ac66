"""Common layers: InnerProduct, Softmax, the ones that only route or re-view blobs (Split,
Flatten, Reshape), and Scale, Bias and Crop. Kernels: ``kernels/{cpu,gpu}/blas.py``,
``common.py``, ``math.py`` and ``crop.py``. Flatten and Reshape share their bottom's buffers
(no copy, no kernel)."""
import math

import numpy as np

from ..blob import Blob
from ..fillers import fill
from ..layer import Layer, register
from ..proto import pb


@register("InnerProduct")
class InnerProduct(Layer):
    """y = x·Wᵀ + b, x viewed as (M, K) with K = product of the bottom's dims from ``axis``.

    W is (num_output, K), or (K, num_output) with ``transpose: true``.
    ∂E/∂W += ∂E/∂yᵀ·x (or xᵀ·∂E/∂y), ∂E/∂b += Σ_rows ∂E/∂y, ∂E/∂x = ∂E/∂y·W (or ·Wᵀ).
    """

    exact_bottoms = exact_tops = 1

    @classmethod
    def param_count(cls, layer_param):
        return 2 if layer_param.inner_product_param.bias_term else 1

    def setup(self, bottom, top):
        p = self.param.inner_product_param
        if p.num_output <= 0:
            raise self.error("inner_product_param.num_output must be positive")
        self.N, self.bias_term, self.transpose = p.num_output, p.bias_term, p.transpose
        self.axis = bottom[0].canonical_axis(p.axis)
        self.K = bottom[0].count_range(self.axis)
        shape = (self.K, self.N) if self.transpose else (self.N, self.K)
        self.blobs = [Blob(shape, dtype=bottom[0].dtype)]
        fill(p.weight_filler, self.blobs[0], "weight_filler")
        if self.bias_term:
            self.blobs.append(Blob(self.N, dtype=bottom[0].dtype))
            fill(p.bias_filler, self.blobs[1], "bias_filler")

    def reshape(self, bottom, top):
        axis = bottom[0].canonical_axis(self.param.inner_product_param.axis)
        k = bottom[0].count_range(axis)
        if k != self.K:
            raise self.error(f"bottom of shape {bottom[0].shape} gives {k} inputs per row from axis "
                             f"{axis}, but the weights were made for {self.K}")
        self.M = bottom[0].count_range(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (self.N,))

    def forward(self, bottom, top):
        blas, d = self.kernels("blas"), self.device
        x = bottom[0].data_on(d).reshape(self.M, self.K)
        w = self.blobs[0].data_on(d).reshape(self.blobs[0].shape)
        y = top[0].mutable_data_on(d)
        blas.gemm(False, not self.transpose, 1.0, x, w, 0.0, y.reshape(self.M, self.N))
        if self.bias_term:                        # y[m, n] += b[n]
            self.kernels("math").channel_add(y, self.blobs[1].data_on(d), y, self.M, self.N, 1)

    def backward(self, top, propagate_down, bottom):
        blas, d = self.kernels("blas"), self.device
        dy = top[0].diff_on(d).reshape(self.M, self.N)
        wshape = self.blobs[0].shape
        if self.param_propagate_down[0]:
            x = bottom[0].data_on(d).reshape(self.M, self.K)
            dw = self.blobs[0].mutable_diff_on(d).reshape(wshape)
            if self.transpose:
                blas.gemm(True, False, 1.0, x, dy, 1.0, dw)
            else:
                blas.gemm(True, False, 1.0, dy, x, 1.0, dw)
        if self.bias_term and self.param_propagate_down[1]:   # db[n] += Σ_m dy[m, n]
            self.kernels("math").channel_sum(top[0].diff_on(d), 1.0, self.blobs[1].mutable_diff_on(d),
                                             self.M, self.N, 1)
        if propagate_down[0]:
            w = self.blobs[0].data_on(d).reshape(wshape)
            dx = bottom[0].mutable_diff_on(d).reshape(self.M, self.K)
            blas.gemm(False, self.transpose, 1.0, dy, w, 0.0, dx)


def softmax_dims(blob, axis):
    """(outer, channels, inner) of a blob seen around ``axis``."""
    return blob.count_range(0, axis), blob.shape[axis], blob.count_range(axis + 1)


@register("Softmax")
class Softmax(Layer):
    """y_c = e^{x_c} / Σ_k e^{x_k} along ``axis``;   ∂E/∂x = (∂E/∂y − Σ_c ∂E/∂y_c·y_c)·y.
    May run in place (its backward needs only y)."""

    exact_bottoms = exact_tops = 1
    in_place = True

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.param.softmax_param.axis)
        if bottom[0].shape[self.axis] == 0:
            raise self.error(f"the softmax axis {self.axis} of bottom {bottom[0].shape} is empty")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        K, d = self.kernels("common"), self.device
        K.softmax_forward(bottom[0].data_on(d), top[0].mutable_data_on(d), *softmax_dims(bottom[0], self.axis))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            K, d = self.kernels("common"), self.device
            K.softmax_backward(top[0].data_on(d), top[0].diff_on(d), bottom[0].mutable_diff_on(d),
                               *softmax_dims(bottom[0], self.axis))


@register("Split")
class Split(Layer):
    """Every top is the bottom (shared data); ∂E/∂x = Σ_k ∂E/∂y_k. The planner inserts these."""

    exact_bottoms = 1
    min_tops = 1

    def reshape(self, bottom, top):
        for blob in top:
            blob.reshape(bottom[0].shape)
            blob.share_data(bottom[0])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        blas, d = self.kernels("blas"), self.device
        dx = bottom[0].mutable_diff_on(d)
        blas.copy(top[0].diff_on(d), dx)
        for blob in top[1:]:
            blas.axpy(1.0, blob.diff_on(d), dx)


class _View(Layer):
    """A top that is the bottom under another shape: data and diff are shared."""

    exact_bottoms = exact_tops = 1

    def top_shape(self, shape):
        raise NotImplementedError

    def reshape(self, bottom, top):
        self.bottom_axis = bottom[0].canonical_axis
        top[0].reshape(self.top_shape(bottom[0].shape))
        top[0].share_data(bottom[0])
        top[0].share_diff(bottom[0])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register("Flatten")
class Flatten(_View):
    """Axes axis..end_axis merged into one (end_axis = axis − 1 inserts an axis of size 1,
    as Caffe allows)."""

    def top_shape(self, shape):
        p = self.param.flatten_param
        start, end = self.bottom_axis(p.axis), self.bottom_axis(p.end_axis)
        if end < start - 1:
            raise self.error(f"end_axis {p.end_axis} comes before axis {p.axis} in a bottom of "
                             f"shape {shape}")
        return shape[:start] + (math.prod(shape[start:end + 1]),) + shape[end + 1:]


@register("Reshape")
class Reshape(_View):
    """Axes [axis, axis + num_axes) replaced by ``shape``: 0 copies the bottom's dim, −1 is inferred."""

    def top_shape(self, shape):
        p, n = self.param.reshape_param, len(shape)
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            raise self.error(f"axis {p.axis} is out of range for a bottom of shape {shape}")
        end = n if p.num_axes == -1 else start + p.num_axes
        if p.num_axes < -1 or end > n:
            raise self.error(f"num_axes {p.num_axes} from axis {start} does not fit a bottom of shape {shape}")
        dims = list(p.shape.dim)
        if dims.count(-1) > 1:
            raise self.error("at most one dimension of reshape_param.shape may be -1")
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= n:
                    raise self.error(f"dim {i} is 0 (copy), but the bottom has no axis {start + i}")
                dims[i] = shape[start + i]
            elif d < -1:
                raise self.error(f"dimension {d} in reshape_param.shape is invalid")
        new = list(shape[:start]) + dims + list(shape[end:])
        total = math.prod(shape)
        if -1 in new:
            known = math.prod(d for d in new if d != -1)
            if known == 0 or total % known:
                raise self.error(f"cannot infer the -1 dimension: {total} values into {tuple(new)}")
            new[new.index(-1)] = total // known
        if math.prod(new) != total:
            raise self.error(f"cannot reshape {shape} ({total} values) to {tuple(new)}")
        return tuple(new)


# --------------------------------------------------------------------------- Scale, Bias, Crop
def _operand_shape(layer, blob, axis, num_axes, what):
    """The shape of a learned ``what`` blob (Scale's scale, Bias's bias) for bottom ``blob``:
    blob.shape[axis : axis + num_axes] (num_axes −1: to the end), with Caffe's LayerSetUp checks."""
    axis = blob.canonical_axis(axis)
    if num_axes < -1:
        raise layer.error(f"num_axes {num_axes} must be non-negative, or -1 to extend to the end "
                          f"of bottom[0]")
    if num_axes >= 0 and blob.num_axes < axis + num_axes:
        raise layer.error(f"{what} blob's shape extends past bottom[0]'s shape {blob.shape} when "
                          f"applied from axis {axis} over num_axes {num_axes}")
    return blob.shape[axis:] if num_axes == -1 else blob.shape[axis:axis + num_axes]


def _broadcast_dims(layer, blob, operand, axis, what):
    """(outer, dim, inner) of ``operand`` (a learned blob or the second bottom) broadcast over
    ``blob`` from ``axis``, with Caffe's Reshape checks: its shape must equal
    blob.shape[axis : axis + operand.num_axes]; a 0-D operand is a scalar (axis taken as 0)."""
    axis = 0 if operand.num_axes == 0 else blob.canonical_axis(axis)
    span = blob.shape[axis:axis + operand.num_axes]
    if blob.num_axes < axis + operand.num_axes or span != operand.shape:
        raise layer.error(f"the {what} of shape {operand.shape} does not match bottom[0] "
                          f"{blob.shape} from axis {axis} (its axes {axis}..{axis + operand.num_axes - 1}"
                          f" are {span})")
    return blob.count_range(0, axis), operand.count, blob.count_range(axis + operand.num_axes)


@register("Scale")
class Scale(Layer):
    """y = x·s (+ b), s broadcast over x from ``axis``: with x viewed as (outer, dim, inner),
    outer = count(0, axis), dim = s.count, inner = the rest,
    y[o, d, i] = x[o, d, i]·s[d] (+ b[d]).

    One bottom: s is learned, of shape bottom.shape[axis : axis + num_axes] (num_axes −1:
    to the end, 0: a scalar), filled by ``filler`` (default constant 1). Two bottoms: s is
    bottom[1], whose shape must equal that span of bottom[0]. ``bias_term`` adds a learned
    b of the same span (``bias_filler``, default constant 0): blobs [s, b], or [b].

    ∂E/∂x = ∂E/∂y·s;  ∂E/∂s[d] = Σ_{o,i} ∂E/∂y·x (added to the learned s's diff, written
    to bottom[1]'s);  ∂E/∂b[d] += Σ_{o,i} ∂E/∂y. Caffe's ScaleLayer (scale_layer.cpp).
    May run in place: the bottom is then kept for the gradient of s, as Caffe does.
    """

    min_bottoms, max_bottoms = 1, 2
    exact_tops = 1
    in_place = True

    @classmethod
    def param_count(cls, layer_param):
        return (len(layer_param.bottom) == 1) + bool(layer_param.scale_param.bias_term)

    def setup(self, bottom, top):
        p = self.param.scale_param
        x, dtype = bottom[0], bottom[0].dtype
        self.learned = len(bottom) == 1
        if self.learned:
            scale = Blob(_operand_shape(self, x, p.axis, p.num_axes, "scale"), dtype=dtype)
            filler = p.filler if p.HasField("filler") else pb.FillerParameter(type="constant", value=1.0)
            fill(filler, scale, f"layer '{self.name}' filler")
            self.blobs.append(scale)
        self.bias_term = p.bias_term
        if self.bias_term:
            num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
            bias = Blob(_operand_shape(self, x, p.axis, num_axes, "bias"), dtype=dtype)
            fill(p.bias_filler, bias, f"layer '{self.name}' bias_filler")
            self.blobs.append(bias)
        self.saved_bottom = Blob(dtype=dtype)

    def reshape(self, bottom, top):
        axis = self.param.scale_param.axis
        scale = self.blobs[0] if self.learned else bottom[1]
        self.dims = _broadcast_dims(self, bottom[0], scale, axis, "scale")
        if self.bias_term:
            self.bias_dims = _broadcast_dims(self, bottom[0], self.blobs[-1], axis, "bias")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        M, d = self.kernels("math"), self.device
        x = bottom[0].data_on(d)
        if top[0] is bottom[0] and self._needs_bottom_data():
            self.saved_bottom.reshape(bottom[0].shape)
            self.kernels("blas").copy(x, self.saved_bottom.mutable_data_on(d))
        scale = self.blobs[0] if self.learned else bottom[1]
        y = top[0].mutable_data_on(d)
        M.channel_scale(x, scale.data_on(d), y, *self.dims)
        if self.bias_term:
            M.channel_add(y, self.blobs[-1].data_on(d), y, *self.bias_dims)

    def _needs_bottom_data(self):
        """Whether backward reads x (for ∂E/∂s): a second bottom, or a learned s that learns."""
        return not self.learned or self.param_propagate_down[0]

    def backward(self, top, propagate_down, bottom):
        M, d = self.kernels("math"), self.device
        dy = top[0].diff_on(d)
        if self.bias_term and self.param_propagate_down[-1]:
            M.channel_sum(dy, 1.0, self.blobs[-1].mutable_diff_on(d), *self.bias_dims)
        if self.learned and self.param_propagate_down[0] or not self.learned and propagate_down[1]:
            x = (self.saved_bottom if top[0] is bottom[0] else bottom[0]).data_on(d)
            if self.learned:
                M.channel_dot(dy, x, 1.0, self.blobs[0].mutable_diff_on(d), *self.dims)
            else:
                M.channel_dot(dy, x, 0.0, bottom[1].mutable_diff_on(d), *self.dims)
        if propagate_down[0]:
            scale = self.blobs[0] if self.learned else bottom[1]
            M.channel_scale(dy, scale.data_on(d), bottom[0].mutable_diff_on(d), *self.dims)


@register("Bias")
class Bias(Layer):
    """y = x + b, b broadcast over x from ``axis`` as in Scale: y[o, d, i] = x[o, d, i] + b[d].

    One bottom: b is learned, of shape bottom.shape[axis : axis + num_axes] (num_axes −1:
    to the end, 0: a scalar), filled by ``filler`` (default constant 0). Two bottoms: b is
    bottom[1], whose shape must equal that span of bottom[0].

    ∂E/∂x = ∂E/∂y;  ∂E/∂b[d] = Σ_{o,i} ∂E/∂y (added to the learned b's diff, written to
    bottom[1]'s). Caffe's BiasLayer (bias_layer.cpp). May run in place (backward needs no data).
    """

    min_bottoms, max_bottoms = 1, 2
    exact_tops = 1
    in_place = True

    @classmethod
    def param_count(cls, layer_param):
        return int(len(layer_param.bottom) == 1)

    def setup(self, bottom, top):
        p = self.param.bias_param
        self.learned = len(bottom) == 1
        if self.learned:
            bias = Blob(_operand_shape(self, bottom[0], p.axis, p.num_axes, "bias"), dtype=bottom[0].dtype)
            fill(p.filler, bias, f"layer '{self.name}' filler")
            self.blobs.append(bias)

    def reshape(self, bottom, top):
        bias = self.blobs[0] if self.learned else bottom[1]
        self.dims = _broadcast_dims(self, bottom[0], bias, self.param.bias_param.axis, "bias")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        d = self.device
        bias = self.blobs[0] if self.learned else bottom[1]
        self.kernels("math").channel_add(bottom[0].data_on(d), bias.data_on(d),
                                         top[0].mutable_data_on(d), *self.dims)

    def backward(self, top, propagate_down, bottom):
        d = self.device
        dy = top[0].diff_on(d)
        if self.learned and self.param_propagate_down[0]:
            self.kernels("math").channel_sum(dy, 1.0, self.blobs[0].mutable_diff_on(d), *self.dims)
        elif not self.learned and propagate_down[1]:
            self.kernels("math").channel_sum(dy, 0.0, bottom[1].mutable_diff_on(d), *self.dims)
        if propagate_down[0] and top[0] is not bottom[0]:
            self.kernels("blas").copy(dy, bottom[0].mutable_diff_on(d))


@register("Crop")
class Crop(Layer):
    """y = the window of bottom[0] shaped like bottom[1] on the axes from ``axis`` (default 2):
    y[i] = x[i + offset] per axis, offset 0 on the axes before ``axis``; on the cropped axes
    no ``offset`` means 0, one value applies to every cropped axis, else one value per axis.

    ∂E/∂x = ∂E/∂y inside the window, 0 elsewhere; bottom[1] only gives the shape and gets
    no gradient. Caffe's CropLayer (crop_layer.cpp).
    """

    exact_bottoms, exact_tops = 2, 1
    no_gradient_bottoms = (1,)

    def reshape(self, bottom, top):
        x, ref = bottom
        p = self.param.crop_param
        start = x.canonical_axis(p.axis)
        n = x.num_axes
        if ref.num_axes != n:
            raise self.error(f"bottom[0] '{self.param.bottom[0]}' {x.shape} and the reference "
                             f"bottom[1] '{self.param.bottom[1]}' {ref.shape} need the same "
                             f"number of axes")
        given = list(p.offset)
        if len(given) > 1 and len(given) != n - start:
            raise self.error(f"{len(given)} offsets given, but axes {start}..{n - 1} are cropped: "
                             f"give one offset for each of these {n - start} axes, or a single one "
                             f"for all")
        offsets, shape = [0] * n, list(x.shape)
        for i in range(start, n):
            off = given[0] if len(given) == 1 else given[i - start] if given else 0
            if x.shape[i] - off < ref.shape[i]:
                raise self.error(f"the crop is out of bounds on axis {i}: a window of size "
                                 f"{ref.shape[i]} (from the reference '{self.param.bottom[1]}') at "
                                 f"offset {off} is larger than what bottom '{self.param.bottom[0]}' "
                                 f"of size {x.shape[i]} has from there")
            offsets[i], shape[i] = off, ref.shape[i]
        top[0].reshape(tuple(shape))
        self.geometry = (np.array(x.shape, dtype=np.int64), np.array(shape, dtype=np.int64),
                         np.array(offsets, dtype=np.int64))

    def forward(self, bottom, top):
        d = self.device
        self.kernels("crop").crop_forward(bottom[0].data_on(d), top[0].mutable_data_on(d),
                                          *self.geometry)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = self.device
            self.kernels("crop").crop_backward(top[0].diff_on(d), bottom[0].mutable_diff_on(d),
                                               *self.geometry)


# =========================================================================== utility layers (issue 9): Concat, Slice, Eltwise, Tile, Reduction, ArgMax, BatchReindex, Filter, Silence, Parameter, Embed
