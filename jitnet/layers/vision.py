"""Vision layers: convolution and its relatives, pooling, local response normalization.

Kernels: ``kernels/{cpu,gpu}/im2col.py`` (the im2col family and the convolution drivers
built on it), ``kernels/{cpu,gpu}/pooling.py`` and ``kernels/{cpu,gpu}/lrn.py``.
"""
import json
import math
import os
import platform
import time

import numpy as np

from .. import common, threads
from ..blob import Blob
from ..errors import NetDefinitionError
from ..fillers import fill
from ..layer import Layer, register
from ..timing import synchronize
from ..proto import pb

# =========================================================================== convolution family
# Convolution, Deconvolution and Im2col share _ConvolutionBase (Caffe's BaseConvolutionLayer).
_SERIAL_WORK = 1 << 17     # multiply-adds below which a convolution runs on the calling thread
_MEASURE_WORK = 1 << 22    # ... below which it runs Caffe's im2col + GEMM without measuring others
CONV_ALGORITHM = None      # one algorithm for every convolution that can run it (None: measured)
# Seconds a pass of one geometry runs Caffe's im2col + GEMM (its first call, which compiles,
# not counted) before the other algorithms are measured, when no earlier process left a choice
# for it (0: measure at the first call). Measuring compiles every candidate, about 40 s on an
# empty numba cache: a short run would never earn that back, a long training does within
# minutes (ski rental: at most twice the best cost). `jitnet time` and the benchmarks measure
# at once, since they time the steady state.
MEASURE_AFTER = 5.0
_CHOSEN = {}               # (pass, device, dtype, shapes...) -> the algorithm measured fastest
_MEASURED = {}             # the same keys -> {algorithm: ms} as measured
_WAITED = {}               # the same keys -> seconds run with im2col while waiting to measure
_clock = time.perf_counter  # the clock of that wait
_CHOICES_FILE = "jitnet-conv-algorithms.json"   # the choices kept beside numba's compiled kernels
_loaded_from = None        # the path _CHOSEN was last read from (read once per path)


def _choices_path(kernel_module):
    """Where the measured choices are kept: in NUMBA_CACHE_DIR when set, else in the
    __pycache__ beside the CPU drivers, where numba keeps their compiled code. So a warm start
    loads only the kernels it runs (measuring loads every candidate's), and an emptied cache
    measures again."""
    root = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.path.dirname(os.path.abspath(kernel_module.__file__)), "__pycache__")
    return os.path.join(root, _CHOICES_FILE)


def _choices_stamp(kernel_module):
    """What the kept choices are valid for: this machine's CPU, the threads, the drivers' file."""
    st = os.stat(kernel_module.__file__)
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return [cpu, os.cpu_count(), threads.configure()["numba_threads"], st.st_size, st.st_mtime_ns]


def _load_choices(kernel_module):
    """Add the kept choices to _CHOSEN (once per file; a file for another stamp, unreadable or
    malformed is ignored: the choices are measured again)."""
    global _loaded_from
    path = _choices_path(kernel_module)
    if _loaded_from == path:
        return
    _loaded_from = path
    try:
        with open(path) as f:
            kept = json.load(f)
        if kept.get("stamp") != _choices_stamp(kernel_module):
            return
        for key, name in kept["choices"]:
            _CHOSEN.setdefault(_as_key(key), name)
    except (OSError, ValueError, KeyError, TypeError):
        return


def _as_key(value):
    return tuple(_as_key(v) for v in value) if isinstance(value, list) else value


def _save_choices(kernel_module):
    """Write the CPU choices of _CHOSEN (best effort: a read-only cache only costs a measurement
    in the next process)."""
    path = _choices_path(kernel_module)
    choices = [[key, name] for key, name in _CHOSEN.items() if key[1] == common.CPU]
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"stamp": _choices_stamp(kernel_module), "choices": choices}, f)
        os.replace(tmp, path)
    except OSError:
        pass


def conv_out_size(size, kernel, pad, stride, dilation):
    """Convolution outputs along one axis: (size + 2·pad − (dilation·(kernel − 1) + 1)) // stride + 1."""
    return (size + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1


def deconv_out_size(size, kernel, pad, stride, dilation):
    """Deconvolution outputs along one axis: stride·(size − 1) + dilation·(kernel − 1) + 1 − 2·pad."""
    return stride * (size - 1) + dilation * (kernel - 1) + 1 - 2 * pad


class _ConvolutionBase(Layer):
    """What Convolution, Deconvolution and Im2col share (Caffe's BaseConvolutionLayer and the
    setup of Im2colLayer): reading convolution_param into one kernel size, stride, pad and
    dilation per spatial axis, with Caffe's rules.

    The channel axis is ``axis`` (default 1); the axes before it are batch axes (their product
    is the number of images), the axes after it are spatial. A repeated field (kernel_size,
    stride, pad, dilation) is given once for every spatial axis or once per axis; stride, pad
    and dilation may be left out (1, 0, 1). kernel_h/kernel_w, stride_h/stride_w and
    pad_h/pad_w are the 2-D spelling and exclude the repeated field. Two spatial axes use the
    2-D im2col unless ``force_nd_im2col``; other counts use the N-D one.
    """

    min_bottoms = 1
    min_tops = 1
    min_spatial_axes = 0

    @classmethod
    def check_arity(cls, layer_param):
        super().check_arity(layer_param)
        if len(layer_param.bottom) != len(layer_param.top):
            raise NetDefinitionError(
                f"layer '{layer_param.name}' (type {cls.type}) produces one top for each bottom, "
                f"but has {len(layer_param.bottom)} bottom(s) and {len(layer_param.top)} top(s)")

    # -- parameters --------------------------------------------------------------------------
    def _per_axis(self, name, values, hw, nsp, default):
        """One value per spatial axis from the repeated field ``name`` (given 0 times when it
        has a default, once, or once per axis) or from its (_h, _w) pair ``hw`` (None if unset)."""
        if hw is not None:
            if nsp != 2:
                raise self.error(f"{name}_h/{name}_w can only be used for 2-D convolution, but the "
                                 f"bottom has {nsp} spatial axes")
            if values:
                raise self.error(f"either {name} or {name}_h/{name}_w should be given, not both")
            return tuple(int(v) for v in hw)
        field = "kernel_size" if name == "kernel" else name
        counts = (1, nsp) if default is None else (0, 1, nsp)
        if len(values) not in counts:
            raise self.error(f"{field} must be given {'' if default is None else 'not at all, '}"
                             f"once, or once per spatial axis ({nsp}), but is given {len(values)} "
                             f"times ({list(values)})")
        if not values:
            return (default,) * nsp
        return tuple(int(values[0 if len(values) == 1 else i]) for i in range(nsp))

    def read_geometry(self, bottom):
        """Channel axis, spatial axis count, kernel, stride, pad and dilation, checked as Caffe."""
        p = self.param.convolution_param
        self.axis = bottom[0].canonical_axis(p.axis)
        nsp = bottom[0].num_axes - self.axis - 1
        if nsp < self.min_spatial_axes:
            raise self.error(f"needs at least {self.min_spatial_axes} spatial axis after the channel "
                             f"axis {self.axis}, but the bottom has shape {bottom[0].shape}")
        self.num_spatial = nsp

        def pair(h, w):
            return (getattr(p, h), getattr(p, w)) if p.HasField(h) or p.HasField(w) else None
        self.kernel = self._per_axis("kernel", p.kernel_size, pair("kernel_h", "kernel_w"), nsp, None)
        self.stride = self._per_axis("stride", p.stride, pair("stride_h", "stride_w"), nsp, 1)
        self.pad = self._per_axis("pad", p.pad, pair("pad_h", "pad_w"), nsp, 0)
        self.dilation = self._per_axis("dilation", p.dilation, None, nsp, 1)
        if any(k <= 0 for k in self.kernel):
            raise self.error(f"kernel dimensions must be positive, got {self.kernel}")
        if any(s <= 0 for s in self.stride):
            raise self.error(f"stride dimensions must be positive, got {self.stride}")
        self.force_nd = bool(p.force_nd_im2col)
        self.channels = bottom[0].shape[self.axis]

    def check_bottoms(self, bottom, fixed_channels=True):
        """Caffe's Reshape checks: the axis count fixed at setup, the channels too (unless
        not ``fixed_channels``: Im2col has no weights), all bottoms alike."""
        first = bottom[0]
        if first.num_axes != self.axis + 1 + self.num_spatial:
            raise self.error(f"bottom num_axes may not change: set up with "
                             f"{self.axis + 1 + self.num_spatial} axes, now {first.shape}")
        if not fixed_channels:
            self.channels = first.shape[self.axis]
        if first.shape[self.axis] != self.channels:
            raise self.error(f"input size incompatible with the convolution kernel: the weights were "
                             f"made for {self.channels} channels (axis {self.axis}), bottom "
                             f"'{self.param.bottom[0]}' now has shape {first.shape}")
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != first.shape:
                raise self.error(f"all bottoms must have the same shape: bottom 0 "
                                 f"'{self.param.bottom[0]}' has {first.shape}, bottom {i} "
                                 f"'{self.param.bottom[i]}' has {blob.shape}")
        self.num = first.count_range(0, self.axis)

    def output_shape(self, spatial, reverse=False):
        """Output sizes along the spatial axes (Deconvolution's when ``reverse``); an error for
        a zero or negative one."""
        out_size = deconv_out_size if reverse else conv_out_size
        out = tuple(out_size(n, k, p, s, d) for n, k, p, s, d
                    in zip(spatial, self.kernel, self.pad, self.stride, self.dilation))
        for a, o in enumerate(out):
            if o <= 0:
                extent = self.dilation[a] * (self.kernel[a] - 1) + 1
                why = ("the padding crops away the whole output" if reverse
                       else "the kernel does not fit the padded input")
                raise self.error(
                    f"output along spatial axis {a} would be {o} (input {spatial[a]}, kernel "
                    f"{self.kernel[a]}, dilation {self.dilation[a]} so extent {extent}, pad "
                    f"{self.pad[a]}, stride {self.stride[a]}): {why}")
        return out

    def geometry(self, conv_input):
        """int64 arrays (shape, kernel, pad, stride, dilation) of the convolution whose input
        has spatial shape ``conv_input``, as the im2col kernels take them (made again only
        when that shape changes)."""
        cached = getattr(self, "_geometry", None)
        if cached is None or tuple(cached[0]) != tuple(conv_input):
            self._geometry = tuple(np.array(v, dtype=np.int64) for v in
                                   (conv_input, self.kernel, self.pad, self.stride, self.dilation))
        return self._geometry

    @staticmethod
    def chunks(units, work):
        """How many runs a kernel splits its units (images, planes) into: one per numba
        thread, at most one per unit, and one when the work is small."""
        if work < _SERIAL_WORK:
            return 1
        return max(1, min(threads.configure()["numba_threads"], units))

    def workspace(self, attr, size):
        """The layer's workspace blob ``attr`` with at least ``size`` elements (it keeps its
        allocation when it fits, so steady reshapes allocate nothing)."""
        blob = getattr(self, attr, None)
        if blob is None or blob.dtype != self.dtype:
            blob = Blob(dtype=self.dtype)
            setattr(self, attr, blob)
        blob.reshape((max(int(size), 0),))
        return blob


class _LearnedConvolution(_ConvolutionBase):
    """Convolution and Deconvolution: learnable weights (and bias), groups, the convolution
    drivers. In the drivers' terms ("the convolution") Convolution maps its bottom (ci =
    channels) to its top (co = num_output); Deconvolution is that convolution's adjoint: the
    convolution maps Deconvolution's top (ci = num_output) to its bottom (co = channels).

    With group == ci == co (depthwise, as MobileNet) and 2 spatial axes, direct kernels do the
    work (``direct_depthwise``; ``force_nd_im2col`` also turns them off), instead of ``group``
    GEMMs of one row each.
    """

    reverse = False
    direct_depthwise = True

    @classmethod
    def param_count(cls, layer_param):
        return 2 if layer_param.convolution_param.bias_term else 1

    def setup(self, bottom, top):
        self.read_geometry(bottom)
        p = self.param.convolution_param
        self.num_output, self.group, self.bias_term = p.num_output, p.group, p.bias_term
        if self.num_output <= 0:
            raise self.error("convolution_param.num_output must be positive")
        if self.group <= 0:
            raise self.error(f"convolution_param.group must be positive, got {self.group}")
        if self.channels <= 0:
            raise self.error(f"bottom '{self.param.bottom[0]}' of shape {bottom[0].shape} has no "
                             f"channels (axis {self.axis})")
        if self.channels % self.group:
            raise self.error(f"the channels of bottom '{self.param.bottom[0]}' ({self.channels}, "
                             f"axis {self.axis} of {bottom[0].shape}) are not divisible by group "
                             f"{self.group}")
        if self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} is not a multiple of group {self.group}")
        self.ci, self.co = ((self.num_output, self.channels) if self.reverse
                            else (self.channels, self.num_output))
        shape = (self.co, self.ci // self.group) + self.kernel
        self.blobs = [Blob(shape, dtype=self.dtype)]
        fill(p.weight_filler, self.blobs[0], f"layer '{self.name}' weight_filler")
        if self.bias_term:
            self.blobs.append(Blob(self.num_output, dtype=self.dtype))
            fill(p.bias_filler, self.blobs[1], f"layer '{self.name}' bias_filler")
        self._no_bias = Blob((0,), dtype=self.dtype)

    def reshape(self, bottom, top):
        self.check_bottoms(bottom)
        spatial = bottom[0].shape[self.axis + 1:]
        out = self.output_shape(spatial, self.reverse)
        conv_in, conv_out = (out, spatial) if self.reverse else (spatial, out)
        for blob in top:
            blob.reshape(bottom[0].shape[:self.axis] + (self.num_output,) + out)
        self.geom = self.geometry(conv_in)
        self.top_count = int(np.prod(out, dtype=np.int64))
        in_count = int(np.prod(conv_in, dtype=np.int64))
        out_count = int(np.prod(conv_out, dtype=np.int64))
        kernel_count = int(np.prod(self.kernel, dtype=np.int64))
        self.direct = (self.direct_depthwise and not self.force_nd and self.num_spatial == 2
                       and self.group == self.ci == self.co)
        if self.direct:
            planes = self.num * self.ci
            self.nchunks = self.chunks(planes, planes * max(in_count, out_count) * kernel_count)
        else:
            self.work = self.num * self.co * (self.ci // self.group) * kernel_count * out_count
            self.nchunks = self.chunks(self.num, self.work)
            is_1x1 = all(k == 1 and s == 1 and p == 0
                         for k, s, p in zip(self.kernel, self.stride, self.pad))
            self.col_size = 0 if is_1x1 else self.ci * kernel_count * out_count

    # -- the algorithm per pass (cuDNN-style: measured once per geometry) ------------------------
    # Passes in the drivers' terms: "forward" (the convolution), "backward_data" (its adjoint),
    # "backward_weight". Algorithms: "im2col" (Caffe's col layout, one GEMM per image and group),
    # "hwc" (channels-last windows, transposed GEMMs over batches of images), "implicit" (one
    # GEMM per tap over the padded channels-last image; stride 1), "winograd" (F(4×4, 3×3) and
    # F(4×4, 5×5) minimal filtering; stride 1, no dilation), "depthwise" (direct kernels).
    PASSES = ("forward", "backward_data", "backward_weight")

    def candidates(self):
        """The algorithms that can run this convolution on this device, Caffe's first."""
        if self.direct:
            return ["depthwise"]
        if self.device != common.CPU or self.num_spatial != 2 or self.force_nd:
            return ["im2col"]
        names = ["im2col", "hwc"]
        if all(s == 1 for s in self.stride):
            names.append("implicit")
            r = self.kernel[0]
            if (self.kernel[1] == r and r in (3, 5) and all(d == 1 for d in self.dilation)
                    and all(p <= r - 1 for p in self.pad)):
                names.append("winograd")
        return names

    def algorithm(self, pass_name):
        """The algorithm this layer runs ``pass_name`` with: CONV_ALGORITHM (or this layer's
        ``force_algorithm``) when set and possible, else the one measured fastest for this
        geometry when the work is large enough to matter (None until it is measured, which
        happens once the pass has run MEASURE_AFTER seconds with im2col, or was done by an
        earlier process on this machine)."""
        names = self.candidates()
        forced = getattr(self, "force_algorithm", None) or CONV_ALGORITHM
        if forced in names:
            return forced
        if len(names) == 1 or self.work < _MEASURE_WORK:
            return names[0]
        return _CHOSEN.get(self._choice_key(pass_name))

    def _choice_key(self, pass_name):
        return (pass_name, self.device, self.dtype.str, self.num, self.ci, self.co, self.group,
                tuple(tuple(int(v) for v in a) for a in self.geom), self.nchunks)

    @property
    def algorithms(self):
        """{pass: algorithm} as chosen so far (None: not measured yet; im2col runs meanwhile)."""
        return {p: self.algorithm(p) for p in self.PASSES}

    def _workspace_size(self, K, name):
        """(work, part) elements the algorithm ``name`` needs for the current shapes."""
        if name == "depthwise":
            return self.nchunks * K.depthwise_workspace(*self.geom), 0
        if name == "im2col":
            return self.nchunks * self.col_size, 2 * self.nchunks * self.blobs[0].count
        size = getattr(K, name + "_workspace")
        return size(self.ci, self.co, self.group, *self.geom, self.nchunks), 0

    def _run(self, K, name, pass_name, a, w, b, c):
        """One pass with the algorithm ``name``: forward c = conv(a) + b; backward_data c = conv's
        adjoint of a, + b; backward_weight c += the weight gradient of input a, output diff w."""
        d = self.device
        size, part = self._workspace_size(K, name)
        work = self.workspace("_col", size).mutable_data_on(d)
        if name == "depthwise":
            fn = getattr(K, "depthwise_" + pass_name)
            if pass_name == "backward_weight":
                return fn(a, w, c, work, self.num, self.ci, *self.geom, self.nchunks)
            return fn(a, w, b, c, work, self.num, self.ci, *self.geom, self.nchunks)
        if name == "im2col":
            fn = getattr(K, "conv_" + pass_name)
            if pass_name == "backward_weight":
                return fn(a, w, c, work, self.workspace("_part", part).mutable_data_on(d), self.num,
                          self.ci, self.co, self.group, *self.geom, self.force_nd, self.nchunks)
            return fn(a, w, b, c, work, self.num, self.ci, self.co, self.group, *self.geom,
                      self.force_nd, self.nchunks)
        fn = getattr(K, f"{name}_{pass_name}")
        if pass_name == "backward_weight":
            return fn(a, w, c, work, self.num, self.ci, self.co, self.group, *self.geom, self.nchunks)
        return fn(a, w, b, c, work, self.num, self.ci, self.co, self.group, *self.geom, self.nchunks)

    def _measure(self, K, pass_name, a, w, b, c):
        """Time every candidate for ``pass_name`` on these operands (a scratch copy of c for the
        weight gradient, which accumulates), three times each after a first call that also
        compiles or loads its kernels, and record the fastest for this geometry. The clock is
        the process's CPU time: every candidate splits the images alike over the same threads,
        and on a shared machine the wall clock mostly measures the other tenants (CIFAR-10-quick
        at load 15 on 2 cores picked a 20% slower algorithm by wall clock)."""
        scratch = c
        if pass_name == "backward_weight":
            scratch = Blob(self.blobs[0].shape, dtype=self.dtype).mutable_diff_on(self.device)
        times = {}
        clock = time.perf_counter if self.device != common.CPU else time.process_time
        for name in self.candidates():
            best = math.inf
            for i in range(4):
                start = clock()
                self._run(K, name, pass_name, a, w, b, scratch)
                synchronize()
                if i:
                    best = min(best, clock() - start)
            times[name] = best * 1e3
        chosen = min(times, key=times.get)
        key = self._choice_key(pass_name)
        _CHOSEN[key], _MEASURED[key] = chosen, times
        if self.device == common.CPU:
            _save_choices(K)
        return chosen

    def _pass(self, pass_name, a, w, b, c):
        K = self.kernels("im2col")
        name = self.algorithm(pass_name)
        if name is None and self.device == common.CPU:
            _load_choices(K)
            name = self.algorithm(pass_name)
        if name is None:
            key = self._choice_key(pass_name)
            waited = _WAITED.get(key)
            if MEASURE_AFTER > 0 and (waited is None or waited < MEASURE_AFTER):
                start = _clock()
                self._run(K, "im2col", pass_name, a, w, b, c)
                _WAITED[key] = 0.0 if waited is None else waited + _clock() - start
                return
            name = self._measure(K, pass_name, a, w, b, c)
        self._run(K, name, pass_name, a, w, b, c)

    # -- the convolution and its adjoints (in the drivers' terms) -------------------------------
    def _bias(self, d):
        return (self.blobs[1] if self.bias_term else self._no_bias).data_on(d)

    def _convolve(self, x, w, b, y):
        """y = the convolution of x (+ b over its co output channels)."""
        self._pass("forward", x, w, b, y)

    def _convolve_adjoint(self, y, w, b, x):
        """x = the convolution's adjoint applied to y (+ b over its ci input channels)."""
        self._pass("backward_data", y, w, b, x)

    def _convolve_weight(self, x, y, dw):
        """dw += ∂⟨y, conv(x; w)⟩/∂w: the correlation of the convolution's input x and output diff y."""
        self._pass("backward_weight", x, y, None, dw)

    def forward(self, bottom, top):
        """Convolution: top = conv(bottom) + b; Deconvolution: top = conv's adjoint(bottom) + b."""
        d = self.device
        w, b = self.blobs[0].data_on(d), self._bias(d)
        apply = self._convolve_adjoint if self.reverse else self._convolve
        for x, y in zip(bottom, top):
            apply(x.data_on(d), w, b, y.mutable_data_on(d))

    def backward(self, top, propagate_down, bottom):
        """The bias and weight gradients accumulate over the bottom/top pairs; each bottom's diff
        is the other direction of the forward map applied to its top's diff."""
        d = self.device
        if self.bias_term and self.param_propagate_down[1]:     # db[o] += Σ_{n, q} dy[n, o, q]
            math, db = self.kernels("math"), self.blobs[1].mutable_diff_on(d)
            for y in top:
                math.channel_sum(y.diff_on(d), 1.0, db, self.num, self.num_output, self.top_count)
        w, no_bias = self.blobs[0].data_on(d), self._no_bias.data_on(d)
        back = self._convolve if self.reverse else self._convolve_adjoint
        for i, (y, x) in enumerate(zip(top, bottom)):
            if self.param_propagate_down[0]:
                # the correlation of the convolution's input with its output's diff
                conv_in, conv_out = ((y.diff_on(d), x.data_on(d)) if self.reverse
                                     else (x.data_on(d), y.diff_on(d)))
                self._convolve_weight(conv_in, conv_out, self.blobs[0].mutable_diff_on(d))
            if propagate_down[i]:
                back(y.diff_on(d), w, no_bias, x.mutable_diff_on(d))


@register("Convolution")
class Convolution(_LearnedConvolution):
    """y[n, o, q] = Σ_{c ∈ group(o), k} W[o, c, k]·x[n, c, q·stride − pad + k·dilation] + b[o]
    (zero padding); weights W (num_output, channels/group, k...), bias b (num_output).
    Output size per spatial axis: (in + 2·pad − (dilation·(k − 1) + 1)) // stride + 1.
    Each bottom i gives top i with the same weights.

    Lowered as Caffe does (BaseConvolutionLayer): per image, col = im2col(x) (skipped for a 1×1
    kernel with stride 1 and no padding), then y[g] = W[g]·col[g] per group.
    ∂E/∂W[g] += Σ_n ∂E/∂y[n, g]·col(x[n])[g]ᵀ, ∂E/∂b[o] += Σ_{n,q} ∂E/∂y[n, o, q],
    ∂E/∂x[n] = col2im(W[g]ᵀ·∂E/∂y[n, g] per group).
    """


@register("Deconvolution")
class Deconvolution(_LearnedConvolution):
    """The adjoint of Convolution with the same parameters (a "transposed convolution"):
    y[n, o, q·stride − pad + k·dilation] += W[c, o', k]·x[n, c, q] summed over the bottom's
    channels c and the taps k, o' = o − g·(num_output/group) in c's group g, + b[o]; weights
    W (channels, num_output/group, k...), bias b (num_output). Output size per spatial axis:
    stride·(in − 1) + dilation·(k − 1) + 1 − 2·pad. Each bottom i gives top i.

    Forward is Convolution's backward-data (col = W[g]ᵀ·x[n, g], y[n] = col2im(col)),
    backward-data is Convolution's forward of ∂E/∂y, and
    ∂E/∂W[g] += Σ_n x[n, g]·col(∂E/∂y[n])[g]ᵀ, ∂E/∂b[o] += Σ_{n,q} ∂E/∂y[n, o, q].
    With the bilinear weight filler and stride f, kernel 2f − f % 2, pad ceil((f − 1)/2) and
    group == channels == num_output it upsamples by f (FCN).
    """

    reverse = True


@register("Im2col")
class Im2col(_ConvolutionBase):
    """Caffe's Im2colLayer: top[n] = im2col(bottom[n]), shape (N, C·Πk, out...), row
    (c·kh + ki)·kw + kj holding x[n, c, q·stride − pad + k·dilation] at output position q (0 in
    the padding), out = (in + 2·pad − (dilation·(k − 1) + 1)) // stride + 1 per spatial axis
    (convolution_param's kernel, stride, pad, dilation; at least one spatial axis).
    ∂E/∂x = col2im(∂E/∂y): every entry added back to the pixel it was read from.
    """

    exact_bottoms = exact_tops = 1
    min_spatial_axes = 1

    def setup(self, bottom, top):
        self.read_geometry(bottom)

    def reshape(self, bottom, top):
        self.check_bottoms(bottom, fixed_channels=False)
        spatial = bottom[0].shape[self.axis + 1:]
        out = self.output_shape(spatial)
        kernel_count = int(np.prod(self.kernel, dtype=np.int64))
        top[0].reshape(bottom[0].shape[:self.axis] + (self.channels * kernel_count,) + out)
        self.geom = self.geometry(spatial)
        self.nchunks = self.chunks(self.num, top[0].count)

    def forward(self, bottom, top):
        K, d = self.kernels("im2col"), self.device
        K.im2col_images(bottom[0].data_on(d), top[0].mutable_data_on(d), self.num, self.channels,
                        *self.geom, self.force_nd, self.nchunks)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            K, d = self.kernels("im2col"), self.device
            K.col2im_images(top[0].diff_on(d), bottom[0].mutable_diff_on(d), self.num,
                            self.channels, *self.geom, self.force_nd, self.nchunks)



# =========================================================================== pooling, SPP, LRN
# Pooling (MAX, AVE, STOCHASTIC), SPP (pyramid pooling with the same kernels) and LRN.
# Kernels: kernels/{cpu,gpu}/pooling.py and kernels/{cpu,gpu}/lrn.py.
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
