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
# Kernels: ``kernels/{cpu,gpu}/utility.py`` (row copies, gathers, ordered row sums, Eltwise MAX,
# ArgMax), the math vocabulary and blas. Index bottoms (BatchReindex, Embed) and Filter's selector
# are read on the host, where they are checked and turned into int32 row numbers.
import numpy as np

from ..proto import pb


def _axis_with_legacy(layer, blob, message, legacy):
    """``message.axis`` as a non-negative index, or the legacy unsigned field ``legacy``
    (concat_dim, slice_dim), which Caffe takes as it is (no negative values) and refuses
    together with axis."""
    if not message.HasField(legacy):
        return blob.canonical_axis(message.axis)
    if message.HasField("axis"):
        raise layer.error(f"either axis or {legacy} should be specified, not both")
    value = getattr(message, legacy)
    if value >= blob.num_axes:
        raise layer.error(f"{legacy} {value} is out of range for a bottom of shape {blob.shape}")
    return value


def _index_rows(layer, values, limit, what, rows, integral=False):
    """Check that every index in ``values`` lies in [0, limit) (and is an integer when
    ``integral``) and write them, truncated as Caffe's static_cast<int>, into the int32 blob
    ``rows``; a LayerError naming the first bad value otherwise."""
    ok = (values >= 0) & (values < limit)              # False for NaN
    if integral:
        ok &= values == np.floor(values)
    if not ok.all():
        k = int(np.argmin(ok))
        kind = "an integer in" if integral else "in"
        raise layer.error(f"{what} {float(values[k]):g} (position {k}) is not {kind} [0, {limit})")
    rows.reshape(values.size)
    rows.mutable_data_on("cpu")[...] = values


def _row_groups(rows, order, starts, targets):
    """Group the positions n of the int32 row numbers in ``rows`` by row: the positions holding
    targets[u] are order[starts[u] : starts[u+1]], ascending. The workspace blobs are filled on
    the host (for the ordered row sums of utility.sum_rows_into, which need no atomics)."""
    r = rows.data_on("cpu")
    by_row = np.argsort(r, kind="stable")
    ranked = r[by_row]
    first = np.flatnonzero(np.diff(ranked, prepend=-1)) if r.size else by_row
    order.reshape(r.size)
    order.mutable_data_on("cpu")[...] = by_row
    targets.reshape(first.size)
    targets.mutable_data_on("cpu")[...] = ranked[first]
    starts.reshape(first.size + 1)
    bounds = starts.mutable_data_on("cpu")
    bounds[:-1] = first
    bounds[-1] = r.size


def _int_workspace():
    return Blob(0, dtype=np.int32)


@register("Concat")
class Concat(Layer):
    """The bottoms joined along ``axis`` (legacy ``concat_dim``); all other dims must agree.

    y[o, offset_k + c, i] = x_k[o, c, i], offset_k = Σ_{l<k} x_l.shape[axis];
    ∂E/∂x_k is the matching slab of ∂E/∂y. One bottom: the top shares its data and diff (as
    Caffe does). Caffe's concat_layer.cpp.
    """

    min_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        p = self.param.concat_param
        axis = _axis_with_legacy(self, bottom[0], p, "concat_dim")
        shape = list(bottom[0].shape)
        for k, blob in enumerate(bottom[1:], 1):
            if blob.num_axes != len(shape) or any(a != b for j, (a, b) in enumerate(zip(blob.shape, shape))
                                                   if j != axis):
                raise self.error(f"all bottoms must have the same shape except on axis {axis}: "
                                 f"bottom 0 has shape {bottom[0].shape}, bottom {k} {blob.shape}")
            shape[axis] += blob.shape[axis]
        top[0].reshape(shape)
        self.axis, self.outer = axis, bottom[0].count_range(0, axis)
        self.inner = bottom[0].count_range(axis + 1)
        if len(bottom) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def _slabs(self, bottom):
        """(bottom index, its width per outer row, its offset in a top row)"""
        offset = 0
        for k, blob in enumerate(bottom):
            width = blob.shape[self.axis] * self.inner
            yield k, width, offset
            offset += width

    def forward(self, bottom, top):
        if len(bottom) == 1:
            return
        K, d = self.kernels("utility"), self.device
        y, stride = top[0].mutable_data_on(d), top[0].shape[self.axis] * self.inner
        for k, width, offset in self._slabs(bottom):
            K.copy_block(bottom[k].data_on(d), width, 0, y, stride, offset, self.outer, width, 1)

    def backward(self, top, propagate_down, bottom):
        if len(bottom) == 1:
            return
        K, d = self.kernels("utility"), self.device
        dy, stride = top[0].diff_on(d), top[0].shape[self.axis] * self.inner
        for k, width, offset in self._slabs(bottom):
            if propagate_down[k]:
                K.copy_block(dy, stride, offset, bottom[k].mutable_diff_on(d), width, 0, self.outer, width, 1)


@register("Slice")
class Slice(Layer):
    """The bottom cut along ``axis`` (legacy ``slice_dim``) at the strictly increasing
    ``slice_point``s (one fewer than the tops), or, without points, into equal parts.

    y_k[o, c, i] = x[o, start_k + c, i];  ∂E/∂x is the ∂E/∂y_k put side by side. One top:
    it shares the bottom's data and diff (as Caffe does). Caffe's slice_layer.cpp.
    """

    exact_bottoms = 1
    min_tops = 1

    def reshape(self, bottom, top):
        p = self.param.slice_param
        axis = _axis_with_legacy(self, bottom[0], p, "slice_dim")
        dim, points = bottom[0].shape[axis], list(p.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise self.error(f"{len(points)} slice_point(s) for {len(top)} tops: give one "
                                 "fewer than the tops")
            if len(top) > dim:
                raise self.error(f"{len(top)} tops cannot slice axis {axis} of size {dim} "
                                 f"(bottom shape {bottom[0].shape})")
            bounds = [0] + points
            if any(b <= a for a, b in zip(bounds, points)) or points[-1] > dim:
                raise self.error(f"slice_point {points} must be strictly increasing, above 0 and at "
                                 f"most {dim}, the size of axis {axis} (bottom shape {bottom[0].shape})")
            sizes = [b - a for a, b in zip(bounds, points + [dim])]
        else:
            if dim % len(top):
                raise self.error(f"{len(top)} tops do not divide axis {axis} of size {dim} evenly")
            sizes = [dim // len(top)] * len(top)
        shape = list(bottom[0].shape)
        for blob, size in zip(top, sizes):
            shape[axis] = size
            blob.reshape(shape)
        self.sizes, self.axis = sizes, axis
        self.outer, self.inner = bottom[0].count_range(0, axis), bottom[0].count_range(axis + 1)
        if len(top) == 1:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def _slabs(self):
        """(top index, its width per outer row, its offset in a bottom row)"""
        offset = 0
        for k, size in enumerate(self.sizes):
            yield k, size * self.inner, offset
            offset += size * self.inner

    def forward(self, bottom, top):
        if len(top) == 1:
            return
        K, d = self.kernels("utility"), self.device
        x, stride = bottom[0].data_on(d), bottom[0].shape[self.axis] * self.inner
        for k, width, offset in self._slabs():
            K.copy_block(x, stride, offset, top[k].mutable_data_on(d), width, 0, self.outer, width, 1)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0] or len(top) == 1:
            return
        K, d = self.kernels("utility"), self.device
        dx, stride = bottom[0].mutable_diff_on(d), bottom[0].shape[self.axis] * self.inner
        for k, width, offset in self._slabs():
            K.copy_block(top[k].diff_on(d), width, 0, dx, stride, offset, self.outer, width, 1)


_PROD, _SUM, _MAX = pb.EltwiseParameter.PROD, pb.EltwiseParameter.SUM, pb.EltwiseParameter.MAX


@register("Eltwise")
class Eltwise(Layer):
    """Elementwise over bottoms of one shape (Caffe's eltwise_layer.cpp):

    * SUM (default): y = Σ_k c_k·x_k (``coeff``: one per bottom, or none for all 1);
      ∂E/∂x_k = c_k·∂E/∂y.
    * PROD: y = Π_k x_k; ∂E/∂x_k = ∂E/∂y·Π_{l≠k} x_l (``stable_prod_grad``, the default), or
      ∂E/∂y·y/x_k.
    * MAX: y = max_k x_k; between bottoms 0 and 1 a tie goes to bottom 1, a later bottom wins
      only when strictly greater; ∂E/∂x_k = ∂E/∂y where bottom k won, else 0.

    May run in place over bottom 0 for SUM and MAX (jitnet computes those correctly in place;
    Caffe's SUM would zero bottom 0 before reading it).
    """

    min_bottoms = 2
    exact_tops = 1
    in_place = True

    @classmethod
    def can_run_in_place(cls, layer_param):
        if layer_param.eltwise_param.operation == _PROD:
            return False, "Eltwise PROD needs its bottoms unchanged for the gradient"
        return True, ""

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        if p.coeff and len(p.coeff) != len(bottom):
            raise self.error(f"{len(p.coeff)} coeff(s) for {len(bottom)} bottoms: give one per "
                             "bottom, or none")
        if p.coeff and p.operation != _SUM:
            raise self.error("coeff is for operation SUM only")
        self.op, self.stable_prod_grad = p.operation, p.stable_prod_grad
        self.coeffs = list(p.coeff) or [1.0] * len(bottom)
        self.mask = _int_workspace()

    def reshape(self, bottom, top):
        for k, blob in enumerate(bottom[1:], 1):
            if blob.shape != bottom[0].shape:
                raise self.error(f"all bottoms must have the same shape: bottom 0 has shape "
                                 f"{bottom[0].shape}, bottom {k} {blob.shape}")
        top[0].reshape(bottom[0].shape)
        if self.op == _MAX:
            self.mask.reshape(bottom[0].shape)

    def forward(self, bottom, top):
        d = self.device
        y = top[0].mutable_data_on(d)            # is bottom 0's data when in place
        xs = [blob.data_on(d) for blob in bottom]
        if self.op == _SUM:                      # Caffe's order: y = 0, then y += c_k·x_k
            blas, add = self.kernels("blas"), self.kernels("math").add
            c = self.coeffs
            if c[0] == 1 and c[1] == 1:
                add(xs[0], xs[1], y)
            else:
                blas.axpby(c[0], xs[0], 0.0, y)
                blas.axpy(c[1], xs[1], y)
            for c, x in zip(c[2:], xs[2:]):
                if c == 1:
                    add(y, x, y)
                else:
                    blas.axpy(c, x, y)
        elif self.op == _PROD:
            mul = self.kernels("math").mul
            mul(xs[0], xs[1], y)
            for x in xs[2:]:
                mul(y, x, y)
        else:
            K, mask = self.kernels("utility"), self.mask.mutable_data_on(d)
            K.eltwise_max_first(xs[0], xs[1], y, mask)
            for k, x in enumerate(xs[2:], 2):
                K.eltwise_max_next(x, k, y, mask)

    def backward(self, top, propagate_down, bottom):
        d = self.device
        dy = top[0].diff_on(d)                   # is bottom 0's diff when in place: done last
        for k in list(range(1, len(bottom))) + [0]:
            if not propagate_down[k]:
                continue
            dx = bottom[k].mutable_diff_on(d)
            if self.op == _SUM:
                c = self.coeffs[k]
                if bottom[k] is top[0]:
                    if c != 1:
                        self.kernels("blas").scale(c, dx)
                elif c == 1:
                    self.kernels("blas").copy(dy, dx)
                else:
                    self.kernels("blas").axpby(c, dy, 0.0, dx)
            elif self.op == _PROD:
                self._prod_backward(k, bottom, top, dy, dx)
            else:
                self.kernels("utility").eltwise_max_backward(dy, self.mask.data_on(d), k, dx)

    def _prod_backward(self, k, bottom, top, dy, dx):
        d, mul = self.device, self.kernels("math").mul
        if self.stable_prod_grad:
            others = [blob.data_on(d) for j, blob in enumerate(bottom) if j != k]
            mul(others[0], dy, dx)
            for x in others[1:]:
                mul(dx, x, dx)
        else:
            self.kernels("math").div(top[0].data_on(d), bottom[k].data_on(d), dx)
            mul(dx, dy, dx)


@register("Tile")
class Tile(Layer):
    """The block of each bottom from ``axis`` on repeated ``tiles`` times along that axis (as
    np.tile): y[o, t, ...] = x[o, ...] with o over the axes before ``axis``;
    ∂E/∂x[o, ...] = Σ_t ∂E/∂y[o, t, ...]. Caffe's tile_layer.cpp."""

    exact_bottoms = exact_tops = 1

    def reshape(self, bottom, top):
        p = self.param.tile_param
        axis = bottom[0].canonical_axis(p.axis)
        if not p.HasField("tiles"):
            raise self.error("tile_param.tiles must be specified")
        if p.tiles <= 0:
            raise self.error(f"tile_param.tiles must be positive, got {p.tiles}")
        shape = list(bottom[0].shape)
        shape[axis] *= p.tiles
        top[0].reshape(shape)
        self.dims = (bottom[0].count_range(0, axis), bottom[0].count_range(axis), p.tiles)

    def forward(self, bottom, top):                # each block of `inner` copied to `tiles` rows
        d, (outer, inner, tiles) = self.device, self.dims
        self.kernels("utility").copy_block(bottom[0].data_on(d), inner, 0, top[0].mutable_data_on(d), inner, 0,
                                           outer, inner, tiles)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = self.device
            self.kernels("utility").tile_backward(top[0].diff_on(d), bottom[0].mutable_diff_on(d),
                                                  *self.dims)


_R = pb.ReductionParameter


@register("Reduction")
class Reduction(Layer):
    """Each sample's values from ``axis`` on reduced to one number, times ``coeff``: the top
    has the bottom's shape up to ``axis`` (axis 0, the default, gives a 0-D top). Per row r
    of the bottom seen as (num, dim):

    SUM: y_r = c·Σ x;   ASUM: c·Σ |x|;   SUMSQ: c·Σ x²;   MEAN: (c/dim)·Σ x.
    ∂E/∂x = c'·∂E/∂y_r times 1 (SUM, MEAN with c' = c/dim), sign(x) (ASUM), 2x (SUMSQ).
    Caffe's reduction_layer.cpp.
    """

    exact_bottoms = exact_tops = 1

    def reshape(self, bottom, top):
        p = self.param.reduction_param
        axis = bottom[0].canonical_axis(p.axis)
        top[0].reshape(bottom[0].shape[:axis])
        self.num, self.dim = bottom[0].count_range(0, axis), bottom[0].count_range(axis)
        self.coeff = p.coeff
        if p.operation == _R.MEAN:
            self.coeff = p.coeff / self.dim if self.dim else float("nan")

    def forward(self, bottom, top):
        d = self.device
        self.kernels("utility").reduction_forward(bottom[0].data_on(d), top[0].mutable_data_on(d), self.num,
                                                  self.dim, self.param.reduction_param.operation, self.coeff)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = self.device
            self.kernels("utility").reduction_backward(
                bottom[0].data_on(d), top[0].diff_on(d), bottom[0].mutable_diff_on(d), self.num, self.dim,
                self.param.reduction_param.operation, self.coeff)


@register("ArgMax")
class ArgMax(Layer):
    """The indices (and, with ``out_max_val``, the values) of the ``top_k`` largest values.

    Without ``axis``: over each sample's values flattened (count from axis 1); the top is
    (N, 1, top_k), or (N, 2, top_k) holding the indices then the values, padded with axes of
    size 1 to the bottom's number of axes. With ``axis``: along that axis, which becomes
    top_k long, holding the indices, or the values with ``out_max_val``. Among equal values
    the larger index ranks first (Caffe's partial_sort with std::greater on (value, index)
    pairs). No backward. Caffe's argmax_layer.cpp.
    """

    exact_bottoms = exact_tops = 1
    no_gradient_bottoms = (0,)

    def setup(self, bottom, top):
        p = self.param.argmax_param
        if p.top_k < 1:
            raise self.error("argmax_param.top_k must be at least 1")
        self.top_k, self.out_max_val, self.has_axis = p.top_k, p.out_max_val, p.HasField("axis")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if self.has_axis:
            axis = bottom[0].canonical_axis(self.param.argmax_param.axis)
            self.dims = (bottom[0].count_range(0, axis), shape[axis], bottom[0].count_range(axis + 1))
            what = f"axis {axis} of the bottom (shape {shape})"
            top_shape = shape[:axis] + (self.top_k,) + shape[axis + 1:]
            self.mode = 1 if self.out_max_val else 0
        else:
            if not shape:
                raise self.error("a 0-D bottom has no samples: give it at least one axis")
            self.dims = (shape[0], bottom[0].count_range(1), 1)
            what = f"each sample's {self.dims[1]} values (bottom shape {shape})"
            top_shape = [1] * max(len(shape), 3)
            top_shape[0], top_shape[1], top_shape[2] = shape[0], 2 if self.out_max_val else 1, self.top_k
            self.mode = 2 if self.out_max_val else 0
        if self.top_k > self.dims[1]:
            raise self.error(f"top_k {self.top_k} is larger than {what}")
        top[0].reshape(top_shape)

    def forward(self, bottom, top):
        d = self.device
        self.kernels("utility").argmax_forward(bottom[0].data_on(d), top[0].mutable_data_on(d),
                                               *self.dims, self.top_k, self.mode)


@register("BatchReindex")
class BatchReindex(Layer):
    """Rows of bottom 0 picked by the 1-D index bottom 1: y[n] = x[idx[n]] (an index is checked
    to lie in [0, x.shape[0]) and truncated, as Caffe's static_cast<int>);
    ∂E/∂x[r] = Σ_{n: idx[n] = r} ∂E/∂y[n] (added in n order). No gradient to the indices.
    Caffe's batch_reindex_layer.cpp."""

    exact_bottoms, exact_tops = 2, 1
    no_gradient_bottoms = (1,)
    min_axes = (1, 1)

    def setup(self, bottom, top):
        self.rows, self.order, self.starts, self.targets = (_int_workspace() for _ in range(4))

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise self.error(f"the indices (bottom 1) must be 1-D, got shape {bottom[1].shape}")
        top[0].reshape(bottom[1].shape[:1] + bottom[0].shape[1:])
        self.inner = bottom[0].count_range(1)

    def forward(self, bottom, top):
        _index_rows(self, bottom[1].data_on("cpu"), bottom[0].shape[0], "index", self.rows)
        d = self.device
        self.kernels("utility").gather_rows(bottom[0].data_on(d), self.rows.data_on(d),
                                            top[0].mutable_data_on(d), self.inner)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[1]:
            raise self.error("cannot backpropagate to the indices (bottom 1)")
        if not propagate_down[0]:
            return
        d = self.device
        _row_groups(self.rows, self.order, self.starts, self.targets)
        dx = bottom[0].mutable_diff_on(d)
        self.kernels("blas").set_value(dx, 0.0)
        self.kernels("utility").sum_rows_into(top[0].diff_on(d), self.order.data_on(d),
                                              self.starts.data_on(d), self.targets.data_on(d),
                                              dx, self.inner)


@register("Filter")
class Filter(Layer):
    """Rows of each data bottom whose selector (the last bottom, shape (N, 1, ...)) is not zero:
    top k = bottom k's rows n with selector[n] ≠ 0, in order (there may be none); ∂E/∂x is
    ∂E/∂y scattered back, 0 on the rows left out. No gradient to the selector. As in Caffe,
    the first reshape (at setup, before any selector is known) keeps all N rows. Caffe's
    filter_layer.cpp."""

    min_bottoms = 2
    min_tops = 1

    @classmethod
    def allow_force_backward(cls, layer_param, bottom_index):
        return bottom_index != len(layer_param.bottom) - 1

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error(f"{len(bottom)} bottoms (data and a selector) need {len(bottom) - 1} "
                             f"tops, one per data bottom, but there are {len(top)}")
        self.kept, self.back = _int_workspace(), _int_workspace()
        self.first_reshape = True

    def reshape(self, bottom, top):
        selector = bottom[-1]
        if selector.num_axes < 1 or any(n != 1 for n in selector.shape[1:]):
            raise self.error(f"the selector (last bottom) must have shape (N, 1, ...), got "
                             f"{selector.shape}")
        for k, blob in enumerate(bottom[:-1]):
            if blob.num_axes < 1 or blob.shape[0] != selector.shape[0]:
                raise self.error(f"bottom {k} (shape {blob.shape}) must have the selector's first "
                                 f"dimension {selector.shape[0]}")
        keep = np.flatnonzero(selector.data_on("cpu") != 0)       # NaN counts as not zero
        self.kept.reshape(keep.size)
        self.kept.mutable_data_on("cpu")[...] = keep
        self.back.reshape(selector.count)
        back = self.back.mutable_data_on("cpu")
        back[...] = -1
        back[keep] = np.arange(keep.size)
        rows = selector.shape[0] if self.first_reshape else keep.size
        self.first_reshape = False
        for blob, src in zip(top, bottom):
            blob.reshape((rows,) + src.shape[1:])

    def forward(self, bottom, top):
        K, d = self.kernels("utility"), self.device
        for blob, src in zip(top, bottom):
            K.gather_rows(src.data_on(d), self.kept.data_on(d), blob.mutable_data_on(d),
                          src.count_range(1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[-1]:
            raise self.error("cannot backpropagate to the selector (the last bottom)")
        K, d = self.kernels("utility"), self.device
        for k, blob in enumerate(top):
            if propagate_down[k]:
                K.gather_rows(blob.diff_on(d), self.back.data_on(d), bottom[k].mutable_diff_on(d),
                              bottom[k].count_range(1))


@register("Silence")
class Silence(Layer):
    """Takes bottoms nobody else uses and produces nothing; backward sets the bottoms' diffs
    to 0 where propagated. Caffe's silence_layer.cpp. (``in_place``: it has no top that could
    be a bottom.)"""

    min_bottoms = 1
    exact_tops = 0
    in_place = True

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for blob, down in zip(bottom, propagate_down):
            if down:
                self.kernels("blas").set_value(blob.mutable_diff_on(self.device), 0.0)


@register("Parameter")
class Parameter(Layer):
    """One learnable blob of ``parameter_param.shape`` (no filler: it starts at 0, as in Caffe)
    exposed as the top, whose data it shares; ∂E/∂blob += ∂E/∂y. (Caffe shares the diff too;
    jitnet adds the top's diff into the blob's, so that gradients accumulate over iter_size
    like any other parameter's.)"""

    exact_bottoms = 0
    exact_tops = 1

    @classmethod
    def param_count(cls, layer_param):
        return 1

    def setup(self, bottom, top):
        self.blobs = [Blob(tuple(self.param.parameter_param.shape.dim), dtype=self.dtype)]

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            d = self.device
            self.kernels("blas").axpy(1.0, top[0].diff_on(d), self.blobs[0].mutable_diff_on(d))


@register("Embed")
class Embed(Layer):
    """A lookup table: y[..., :] = W[x[...], :] + b for a bottom x of integer indices in
    [0, input_dim) (any shape; the top adds an axis of num_output). W is (input_dim,
    num_output), b (num_output). ∂E/∂W[k] += Σ_{m: x_m = k} ∂E/∂y[m] (added in m order,
    without atomics on the GPU), ∂E/∂b += Σ_m ∂E/∂y[m]; no gradient to the indices. An index
    outside [0, input_dim) or not an integer is an error (Caffe checks it in debug builds
    only). Caffe's embed_layer.cpp."""

    exact_bottoms = exact_tops = 1
    no_gradient_bottoms = (0,)

    @classmethod
    def param_count(cls, layer_param):
        return 2 if layer_param.embed_param.bias_term else 1

    def setup(self, bottom, top):
        p = self.param.embed_param
        if p.num_output <= 0:
            raise self.error("embed_param.num_output must be positive")
        if p.input_dim <= 0:
            raise self.error("embed_param.input_dim must be positive")
        self.N, self.K, self.bias_term = p.num_output, p.input_dim, p.bias_term
        self.blobs = [Blob((self.K, self.N), dtype=self.dtype)]
        fill(p.weight_filler, self.blobs[0], "weight_filler")
        if self.bias_term:
            self.blobs.append(Blob(self.N, dtype=self.dtype))
            fill(p.bias_filler, self.blobs[1], "bias_filler")
        self.rows, self.order, self.starts, self.targets = (_int_workspace() for _ in range(4))

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.N,))
        self.M = bottom[0].count

    def forward(self, bottom, top):
        _index_rows(self, bottom[0].data_on("cpu"), self.K, "index", self.rows, integral=True)
        d = self.device
        y = top[0].mutable_data_on(d)
        self.kernels("utility").gather_rows(self.blobs[0].data_on(d), self.rows.data_on(d), y, self.N)
        if self.bias_term:                        # y[m, n] += b[n]
            self.kernels("math").channel_add(y, self.blobs[1].data_on(d), y, self.M, self.N, 1)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("cannot backpropagate to its input (the indices)")
        d = self.device
        dy = top[0].diff_on(d)
        if self.param_propagate_down[0]:
            _row_groups(self.rows, self.order, self.starts, self.targets)
            self.kernels("utility").sum_rows_into(dy, self.order.data_on(d), self.starts.data_on(d),
                                                  self.targets.data_on(d),
                                                  self.blobs[0].mutable_diff_on(d), self.N)
        if self.bias_term and self.param_propagate_down[1]:
            self.kernels("math").channel_sum(dy, 1.0, self.blobs[1].mutable_diff_on(d), self.M, self.N, 1)
