"""Common layers: InnerProduct, Softmax, and the ones that only route or re-view
blobs (Split, Flatten, Reshape). Kernels: ``kernels/{cpu,gpu}/blas.py`` and
``common.py``. Flatten and Reshape share their bottom's buffers (no copy, no kernel)."""
import math

from ..blob import Blob
from ..fillers import fill
from ..layer import Layer, register


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


# =========================================================================== utility layers (issue 9): Concat, Slice, Eltwise, Tile, Reduction, ArgMax, BatchReindex, Filter, Silence, Parameter, Embed
