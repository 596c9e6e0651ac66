"""One table of layer cases, LAYER_CASES, drives the per-layer tests in test_layers.py and
the per-layer rows of benchmarks/bench.py. It is the only place that knows a layer's test
data. A row (:class:`LayerCase`) says for one registered layer type:

* ``draw(draw, ctx)`` - how hypothesis draws a :class:`Sample` (LayerParameter, bottom
  arrays, phase, learnable params, a ``prepare`` hook for data layers) for a purpose
  ("forward", "gradient" or "parity", in ``ctx.purpose``);
* ``reference(sample)`` - the numpy oracle from tests/reference.py giving the expected
  tops, or None with ``reference_note`` saying why;
* ``grad_bottoms`` / ``check_params`` - what the gradient check covers (nothing for
  layers without a backward), with ``grad_tol`` = (rtol, atol);
* ``kinks`` - points the drawn bottoms keep away from;
* ``gpu_kernels`` - whether the layer runs GPU kernels in GPU mode (data layers only fill
  host memory and Flatten/Reshape only re-view their bottom; the parity test runs them in
  GPU mode all the same and checks they ask for no kernels);
* ``big`` - inputs past one GPU thread block, reduction block and GEMM tile, which the tiny
  drawn shapes never reach: a function returning :class:`Big` examples;
* ``errors`` - parameters the layer must refuse with a LayerError naming it: a function
  returning (id, LayerParameter named "bad", bottoms) triples;
* ``bench`` - benchmark shapes: :class:`Bench` entries, timed against PyTorch by
  benchmarks/bench.py;
* ``marks`` - known problems as data: {test name: (pytest marks, ...)}.

What the layer class declares is not repeated here: whether it may run in place
(``in_place``; the in-place test runs every such case with top = bottom against the
out-of-place result), whether it is a loss (``is_loss``), which bottoms take no gradient.
``pointwise(...)`` writes the whole row of an elementwise layer in one line.
"""
import itertools
import math
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import h5py
import numpy as np
from hypothesis import strategies as st

import jitnet
from jitnet.proto import pb
from jitnet.testing import strategies as jst

import reference as ref

TEST_NAMES = ("forward", "gradients", "gpu")


@dataclass
class Sample:
    """One drawn example: what a test needs to build and run the layer."""
    layer_param: object
    bottoms: list
    phase: int = jitnet.TRAIN
    params: Optional[list] = None            # values for the learnable blobs
    prepare: Optional[Callable] = None       # prepare(layer, bottom_blobs, top_blobs) after setup
    check_tops: Optional[tuple] = None       # tops entering the gradient objective (None: all)
    propagate_down: Optional[tuple] = None   # for the parity run's backward (None: grad_bottoms)
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DrawContext:
    purpose: str          # "forward", "gradient" or "parity"
    workdir: str          # a directory for files (HDF5Data)
    avoid: tuple = ()     # the case's kinks
    max_size: int = 48    # bound on a bottom's element count


@dataclass(frozen=True)
class Big:
    """A fixed example past one GPU block: layer parameter, bottoms, params, propagate_down."""
    layer_param: object
    bottoms: list
    params: Optional[list] = None
    propagate_down: tuple = ()
    id: str = ""


@dataclass(frozen=True)
class Bench:
    """A benchmark row: ``params`` is LayerParameter text after the type (e.g.
    'inner_product_param { num_output: 1024 }'), ``shapes`` the bottoms' shapes, ``torch``
    the PyTorch equivalent, ``torch(F, x, params) -> y`` (F = torch.nn.functional, params
    the layer's learnable blobs as tensors)."""
    label: str
    params: str
    shapes: tuple
    torch: Callable
    phase: int = jitnet.TRAIN


@dataclass(frozen=True)
class LayerCase:
    type: str
    draw: Callable
    reference: Optional[Callable]
    reference_note: str = ""
    grad_bottoms: tuple = ()
    check_params: bool = False
    grad_tol: tuple = (1e-5, 1e-6)           # (rtol, atol) of the gradient check
    kinks: tuple = ()
    gpu_kernels: bool = True
    forward_tol: Optional[dict] = None       # {dtype: (rtol, atol)} overriding the defaults
    big: Optional[Callable] = None           # () -> [Big]
    errors: Optional[Callable] = None        # () -> [(id, LayerParameter, bottoms)]
    bench: tuple = ()                        # Bench entries
    marks: dict = field(default_factory=dict)

    @property
    def differentiable(self):
        return bool(self.grad_bottoms) or self.check_params

    def samples(self, purpose, workdir):
        """A hypothesis strategy of Samples for ``purpose``."""
        ctx = DrawContext(purpose=purpose, workdir=str(workdir), avoid=self.kinks,
                          max_size=16 if purpose == "parity" else 48)

        @st.composite
        def strategy(draw):
            return self.draw(draw, ctx)
        return strategy()

    def marks_for(self, test):
        assert test in TEST_NAMES, test
        return self.marks.get(test, ())


# --------------------------------------------------------------------------- helpers
def _lp(type_name, bottoms=("x",), tops=("y",), name=None):
    return pb.LayerParameter(name=name or f"{type_name.lower()}1", type=type_name,
                             bottom=list(bottoms), top=list(tops))


def _shape(draw, ctx, min_dims=1, max_dims=4, max_side=4, max_size=None):
    return draw(jst.shapes(min_dims=min_dims, max_dims=max_dims, max_side=max_side,
                           max_size=max_size or ctx.max_size))


def _array(draw, ctx, shape, low=-2.0, high=2.0):
    return draw(jst.arrays(shape, low=low, high=high, avoid=ctx.avoid))


def _as_negative(draw, axis, ndim):
    """The same axis, written negatively half of the time."""
    return axis - ndim if draw(st.booleans()) else axis


def _bad(type_name, bottoms=("x",), tops=("y",)):
    return _lp(type_name, bottoms, tops, name="bad")


def _rng():
    return np.random.default_rng(21)


# --------------------------------------------------------------------------- neurons
def pointwise(type_name, reference, low=-2.0, high=2.0, params=None, **row):
    """The row of an elementwise layer: y = reference(x, **params) on any shape, x drawn in
    [low, high]; ``params`` maps the layer's parameter message to strategies of its fields
    (e.g. {"relu_param": {"negative_slope": st.floats(-0.5, 0.9)}}). A big example and a
    256x4096 benchmark come with it; ``row`` adds or overrides columns."""
    params = params or {}

    def draw_pointwise(draw, ctx):
        lp = _lp(type_name)
        values = {}
        for message, fields in params.items():
            for name, strategy in fields.items():
                values[name] = draw(strategy)
                setattr(getattr(lp, message), name, values[name])
        return Sample(lp, [_array(draw, ctx, _shape(draw, ctx), low, high)], extra=values)

    def big():
        return [Big(_lp(type_name), [_rng().uniform(low, high, size=(3, 110))], propagate_down=(True,))]

    torch = row.pop("torch", None)
    columns = dict(grad_bottoms=(0,), big=big,
                   bench=(Bench(f"{type_name} 256x4096", "", ((256, 4096),), torch),) if torch else ())
    columns.update(row)
    return LayerCase(type_name, draw_pointwise,
                     lambda s: [reference(s.bottoms[0], **{k: getattr(getattr(s.layer_param, m), k)
                                                           for m, f in params.items() for k in f})],
                     **columns)


def draw_dropout(draw, ctx):
    lp = _lp("Dropout")
    lp.dropout_param.dropout_ratio = draw(st.sampled_from([0.0, 0.2, 0.5, 0.75]))
    phase = jitnet.TEST if ctx.purpose == "forward" else jitnet.TRAIN
    return Sample(lp, [_array(draw, ctx, _shape(draw, ctx))], phase=phase)


def dropout_errors():
    lp = _bad("Dropout")
    lp.dropout_param.dropout_ratio = 1.0
    return [("ratio-1", lp, [np.ones(3)])]


def dropout_big():
    return [Big(_lp("Dropout"), [_rng().normal(size=(3, 110))], propagate_down=(True,))]


# --------------------------------------------------------------------------- common
def draw_softmax(draw, ctx):
    shape = _shape(draw, ctx)
    lp = _lp("Softmax")
    lp.softmax_param.axis = draw(jst.axes(len(shape)))
    return Sample(lp, [_array(draw, ctx, shape, -3.0, 3.0)])


def softmax_big():
    lp = _lp("Softmax")
    lp.softmax_param.axis = 1
    return [Big(lp, [_rng().normal(size=(30, 3, 10))], propagate_down=(True,))]


def draw_inner_product(draw, ctx):
    shape = _shape(draw, ctx, max_size=24 if ctx.purpose != "parity" else 12)
    axis = draw(st.integers(0, len(shape) - 1))
    k = math.prod(shape[axis:])
    n = draw(st.integers(1, 4))
    lp = _lp("InnerProduct")
    p = lp.inner_product_param
    p.num_output = n
    p.axis = _as_negative(draw, axis, len(shape))
    p.transpose = draw(st.booleans())
    p.bias_term = draw(st.booleans())
    params = [draw(jst.arrays((k, n) if p.transpose else (n, k), low=-1.5, high=1.5))]
    if p.bias_term:
        params.append(draw(jst.arrays((n,), low=-1.5, high=1.5)))
    return Sample(lp, [_array(draw, ctx, shape)], params=params)


def inner_product_big():
    rng, cases = _rng(), []
    for transpose in (False, True):
        lp = _lp("InnerProduct", name=f"fc_transpose_{transpose}")
        lp.inner_product_param.num_output = 17
        lp.inner_product_param.transpose = transpose
        w = rng.normal(size=(18, 17) if transpose else (17, 18))
        cases.append(Big(lp, [rng.normal(size=(20, 3, 6))], [w, rng.normal(size=17)], (True,),
                         id=lp.name))
    return cases


def inner_product_errors():
    lp = _bad("InnerProduct")
    lp.inner_product_param.num_output = 0
    return [("num_output-0", lp, [np.ones((2, 3))])]


def draw_split(draw, ctx):
    tops = draw(st.integers(1 if ctx.purpose == "forward" else 2, 3))
    lp = _lp("Split", tops=[f"y{k}" for k in range(tops)])
    return Sample(lp, [_array(draw, ctx, _shape(draw, ctx))])


def split_big():
    return [Big(_lp("Split", tops=("y0", "y1", "y2")), [_rng().normal(size=(300,))], propagate_down=(True,))]


def draw_flatten(draw, ctx):
    shape = _shape(draw, ctx)
    n = len(shape)
    start = draw(st.integers(0, n - 1))
    end = draw(st.integers(max(start - 1, 0), n - 1))    # start − 1 inserts an axis of size 1
    lp = _lp("Flatten")
    lp.flatten_param.axis = _as_negative(draw, start, n)
    lp.flatten_param.end_axis = _as_negative(draw, end, n)
    return Sample(lp, [_array(draw, ctx, shape)])


def flatten_errors():
    lp = _bad("Flatten")
    lp.flatten_param.axis, lp.flatten_param.end_axis = 2, 0
    return [("end_axis-before-axis", lp, [np.ones((2, 3, 4))])]


def _factorizations(draw, count, max_parts=3):
    """A random list of positive ints with product ``count``."""
    parts = []
    remaining = count
    for _ in range(draw(st.integers(0, max_parts - 1))):
        divisors = [d for d in range(1, remaining + 1) if remaining % d == 0]
        d = draw(st.sampled_from(divisors))
        parts.append(d)
        remaining //= d
    parts.append(remaining)
    return parts


def draw_reshape(draw, ctx):
    """A valid Reshape: axes [start, end) of the bottom become dims whose product matches,
    with a prefix of them written as 0 (copy) where they equal the bottom's dims, and at
    most one written as −1."""
    shape = _shape(draw, ctx)
    n = len(shape)
    start = draw(st.integers(0, n))
    end = draw(st.integers(start, n))
    copy = draw(st.integers(0, end - start))     # leading dims copied with 0
    dims = list(shape[start:start + copy]) + _factorizations(draw, math.prod(shape[start + copy:end]))
    written = [0 if i < copy else d for i, d in enumerate(dims)]
    free = [i for i in range(len(written)) if i >= copy]
    if free and draw(st.booleans()):
        written[draw(st.sampled_from(free))] = -1
    lp = _lp("Reshape")
    rp = lp.reshape_param
    rp.shape.dim.extend(written)
    # axis: start, or written negatively as start − n − 1 (Caffe's convention for Reshape)
    rp.axis = start - n - 1 if draw(st.booleans()) else start
    if end == n and draw(st.booleans()):
        rp.num_axes = -1
    else:
        rp.num_axes = end - start
    return Sample(lp, [_array(draw, ctx, shape)])


def ref_reshape(s):
    rp = s.layer_param.reshape_param
    return [ref.reshape(s.bottoms[0], list(rp.shape.dim), rp.axis, rp.num_axes)]


# --------------------------------------------------------------------------- losses
_NORM_NAMES = {pb.LossParameter.FULL: "FULL", pb.LossParameter.VALID: "VALID",
               pb.LossParameter.BATCH_SIZE: "BATCH_SIZE", pb.LossParameter.NONE: "NONE"}


def _class_axis_case(draw, ctx, type_name, tops, min_axis=0):
    """Scores with a drawn class axis and labels shaped like the scores without it (a loss
    layer's class axis is not 0: Caffe's LossLayer wants labels of the scores' first dim)."""
    shape = _shape(draw, ctx, min_dims=2)
    axis = draw(st.integers(min_axis, len(shape) - 1))
    classes = shape[axis]
    label_shape = shape[:axis] + shape[axis + 1:]
    ignore = draw(st.one_of(st.none(), st.integers(-1, classes - 1)))
    labels = draw(jst.labels(classes, label_shape, ignore_label=ignore))
    lp = _lp(type_name, bottoms=("scores", "label"), tops=tops)
    return lp, shape, axis, ignore, labels


def draw_softmax_loss(draw, ctx):
    ntops = 1 if ctx.purpose == "gradient" else draw(st.integers(1, 2))
    lp, shape, axis, ignore, labels = _class_axis_case(draw, ctx, "SoftmaxWithLoss",
                                                       ["loss", "prob"][:ntops], min_axis=1)
    lp.softmax_param.axis = _as_negative(draw, axis, len(shape))
    if ignore is not None:
        lp.loss_param.ignore_label = ignore
    mode = draw(st.sampled_from(["unset", "legacy_true", "legacy_false"] + list(_NORM_NAMES)))
    if mode == "legacy_true":
        lp.loss_param.normalize = True
    elif mode == "legacy_false":
        lp.loss_param.normalize = False
    elif mode != "unset":
        lp.loss_param.normalization = mode
    scores = _array(draw, ctx, shape, -3.0, 3.0)
    return Sample(lp, [scores, labels], check_tops=(0,), propagate_down=(True, False))


def ref_softmax_loss(s):
    lp = s.layer_param.loss_param
    normalization = _NORM_NAMES[lp.normalization] if lp.HasField("normalization") else None
    normalize = lp.normalize if lp.HasField("normalize") else None
    ignore = lp.ignore_label if lp.HasField("ignore_label") else None
    loss, prob = ref.softmax_loss(s.bottoms[0], s.bottoms[1], s.layer_param.softmax_param.axis,
                                  ignore, normalization, normalize)
    return [loss, prob][:len(s.layer_param.top)]


def softmax_loss_big():
    rng = _rng()
    labels = rng.integers(0, 3, size=(30, 10)).astype(np.float64)
    labels[0, :4] = -1
    lp = _lp("SoftmaxWithLoss", bottoms=("x", "label"), tops=("loss", "prob"))
    lp.loss_param.ignore_label = -1
    return [Big(lp, [rng.normal(size=(30, 3, 10)), labels], propagate_down=(True, False))]


def accuracy_big():
    rng = _rng()
    labels = rng.integers(0, 3, size=(30, 10)).astype(np.float64)
    labels[0, :4] = -1
    lp = _lp("Accuracy", bottoms=("x", "label"), tops=("acc", "per_class"))
    lp.accuracy_param.top_k = 2
    lp.accuracy_param.ignore_label = -1
    return [Big(lp, [np.round(rng.normal(size=(30, 3, 10))), labels], propagate_down=(False, False))]


def euclidean_loss_big():
    rng = _rng()
    return [Big(_lp("EuclideanLoss", bottoms=("a", "b"), tops=("loss",)),
                [rng.normal(size=(5, 130)), rng.normal(size=(5, 130))], propagate_down=(True, True))]


def draw_euclidean_loss(draw, ctx):
    shape = _shape(draw, ctx)
    lp = _lp("EuclideanLoss", bottoms=("a", "b"), tops=("loss",))
    return Sample(lp, [_array(draw, ctx, shape), _array(draw, ctx, shape)])


def draw_accuracy(draw, ctx):
    ntops = draw(st.integers(1, 2))
    lp, shape, axis, ignore, labels = _class_axis_case(draw, ctx, "Accuracy",
                                                       ["accuracy", "per_class"][:ntops])
    p = lp.accuracy_param
    p.axis = _as_negative(draw, axis, len(shape))
    p.top_k = draw(st.integers(1, shape[axis]))
    if ignore is not None:
        p.ignore_label = ignore
    scores = _array(draw, ctx, shape)
    if draw(st.booleans()):
        scores = np.round(scores)                 # many ties: they count against the sample
    return Sample(lp, [scores, labels], phase=draw(st.sampled_from([jitnet.TRAIN, jitnet.TEST])),
                  propagate_down=(False, False))


def ref_accuracy(s):
    p = s.layer_param.accuracy_param
    acc, per_class = ref.accuracy(s.bottoms[0], s.bottoms[1], p.axis, p.top_k,
                                  p.ignore_label if p.HasField("ignore_label") else None)
    return [acc, per_class][:len(s.layer_param.top)]


# --------------------------------------------------------------------------- data layers
def _write_user_inputs(arrays):
    def prepare(layer, bottom, top):
        for blob, a in zip(top, arrays):
            blob.data[...] = a
    return prepare


def draw_input(draw, ctx):
    ntops = draw(st.integers(1, 2))
    lp = _lp("Input", bottoms=(), tops=[f"data{k}" for k in range(ntops)])
    one_for_all = ntops == 1 or draw(st.booleans())
    shapes = [_shape(draw, ctx)] if one_for_all else [_shape(draw, ctx) for _ in range(ntops)]
    for s in shapes:
        lp.input_param.shape.add().dim.extend(s)
    # the user writes into the input blobs; forward must leave them as written
    values = [_array(draw, ctx, shapes[0 if one_for_all else k]) for k in range(ntops)]
    return Sample(lp, [], prepare=_write_user_inputs(values), extra={"values": values})


def input_errors():
    lp = _bad("Input", bottoms=(), tops=("a", "b", "c"))
    lp.input_param.shape.add().dim.append(1)
    lp.input_param.shape.add().dim.append(2)
    return [("2-shapes-3-tops", lp, [])]


def draw_dummy_data(draw, ctx):
    ntops = draw(st.integers(1, 2))
    lp = _lp("DummyData", bottoms=(), tops=[f"data{k}" for k in range(ntops)])
    p = lp.dummy_data_param
    nshapes = draw(st.sampled_from([1, ntops]))
    if draw(st.booleans()):
        shapes = [_shape(draw, ctx) for _ in range(nshapes)]
        for s in shapes:
            p.shape.add().dim.extend(s)
    else:
        shapes = [_shape(draw, ctx, min_dims=4, max_dims=4, max_side=2) for _ in range(nshapes)]
        for s in shapes:
            p.num.append(s[0]); p.channels.append(s[1]); p.height.append(s[2]); p.width.append(s[3])
    nfillers = draw(st.sampled_from([0, 1, ntops]))
    for _ in range(nfillers):
        p.data_filler.add(type="constant", value=draw(st.floats(-3.0, 3.0, width=32)))
    return Sample(lp, [], extra={"shapes": shapes})


def dummy_data_errors():
    lp = _bad("DummyData", bottoms=(), tops=("a",))
    lp.dummy_data_param.shape.add().dim.append(2)
    lp.dummy_data_param.num.append(2)
    return [("shape-and-num", lp, [])]


def ref_dummy_data(s):
    p = s.layer_param.dummy_data_param
    shapes, n = s.extra["shapes"], len(s.layer_param.top)
    values = [f.value for f in p.data_filler] or [0.0]
    return [np.full(shapes[0 if len(shapes) == 1 else k], values[0 if len(values) == 1 else k],
                    dtype=np.float64) for k in range(n)]


def draw_memory_data(draw, ctx):
    batch = draw(st.integers(1, 3))
    c, h, w = (draw(st.integers(1, 3)) for _ in range(3))
    rows = batch * draw(st.integers(1, 3))
    lp = _lp("MemoryData", bottoms=(), tops=("data", "label"))
    p = lp.memory_data_param
    p.batch_size, p.channels, p.height, p.width = batch, c, h, w
    data = _array(draw, ctx, (rows, c, h, w))
    if np.all(data.astype(np.float32) == data):
        data.flat[0] += 2.0 ** -30        # one value float32 cannot hold: a float32 detour shows
    labels = draw(jst.labels(5, (rows,)))

    def prepare(layer, bottom, top):
        layer.reset(data, labels)
    return Sample(lp, [], prepare=prepare, extra={"data": data, "labels": labels})


def memory_data_errors():
    return [("batch-0", _bad("MemoryData", bottoms=(), tops=("a", "b")), [])]


def ref_memory_data(s):
    batch = s.layer_param.memory_data_param.batch_size
    return [s.extra["data"][:batch], s.extra["labels"][:batch]]


_h5_counter = itertools.count()


def draw_hdf5_data(draw, ctx):
    """1-3 files of 1-4 rows each, listed in a source file; the first batch may span files
    and wrap around to the first row again."""
    nfiles = draw(st.integers(1, 3))
    sample_shape = _shape(draw, ctx, min_dims=1, max_dims=2, max_side=3)
    batch = draw(st.integers(1, 6))
    tag = f"{os.getpid()}_{next(_h5_counter)}"
    paths, datas, labels = [], [], []
    for f in range(nfiles):
        rows = draw(st.integers(1, 4))
        data = _array(draw, ctx, (rows,) + sample_shape)
        label = draw(jst.labels(4, (rows,)))
        path = os.path.join(ctx.workdir, f"h5_{tag}_{f}.h5")
        with h5py.File(path, "w") as h5:
            h5.create_dataset("data", data=data)
            h5.create_dataset("label", data=label)
        paths.append(path)
        datas.append(data)
        labels.append(label)
    source = os.path.join(ctx.workdir, f"h5_{tag}.txt")
    with open(source, "w") as f:
        f.write("\n".join(paths) + "\n")
    lp = _lp("HDF5Data", bottoms=(), tops=("data", "label"))
    lp.hdf5_data_param.source = source
    lp.hdf5_data_param.batch_size = batch
    return Sample(lp, [], extra={"data": np.concatenate(datas), "label": np.concatenate(labels)})


def hdf5_data_errors():
    lp = _bad("HDF5Data", bottoms=(), tops=("a",))
    lp.hdf5_data_param.batch_size = 1
    lp.hdf5_data_param.source = "/nonexistent/list.txt"
    return [("missing-source", lp, [])]


def ref_hdf5_data(s):
    batch = s.layer_param.hdf5_data_param.batch_size
    rows = np.arange(batch) % len(s.extra["label"])       # files in order, wrapping around
    return [s.extra["data"][rows], s.extra["label"][rows]]


# --------------------------------------------------------------------------- vision: convolution family
# (Convolution, Deconvolution, Im2col)


# --------------------------------------------------------------------------- vision: pooling, SPP, LRN
from google.protobuf import text_format  # noqa: E402  (kept in this section)

_POOL_METHODS = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}


def _distinct(draw, shape, low=-2.0, high=2.0):
    """Values in [low, high], (high − low)/size apart, in a drawn order: MAX pooling has a kink
    wherever two values of a window tie."""
    size = math.prod(shape)
    order = np.asarray(draw(st.permutations(range(size))), dtype=np.float64)
    return (low + (high - low) * (order + 0.5) / max(size, 1)).reshape(shape)


def _fit(draw, kernel, pad, max_side):
    """An input extent that gives at least one output: at least kernel − 2·pad, at most max_side."""
    lo = max(1, kernel - 2 * pad)
    return draw(st.integers(lo, max(lo, max_side)))


def draw_pooling(draw, ctx):
    """MAX, AVE or STOCHASTIC with square (kernel_size) or non-square (kernel_h/_w) kernels,
    strides up to 3, padding below the kernel (none for STOCHASTIC), CEIL or FLOOR rounding, or
    global pooling; MAX with its mask top half of the time."""
    method = draw(st.sampled_from([0, 1, 2]))
    max_side = 6 if ctx.purpose != "parity" else 4
    lp = _lp("Pooling")
    p = lp.pooling_param
    p.pool = method
    if draw(st.integers(0, 5)) == 0:
        p.global_pooling = True
        h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    else:
        kernel = [draw(st.integers(1, min(4, max_side))) for _ in range(2)]
        pad = [0 if method == 2 else draw(st.integers(0, k - 1)) for k in kernel]
        stride = [draw(st.integers(1, 3)) for _ in range(2)]
        if kernel[0] == kernel[1] and draw(st.booleans()):
            p.kernel_size = kernel[0]
        else:
            p.kernel_h, p.kernel_w = kernel
        if pad[0] == pad[1] and draw(st.booleans()):
            if pad[0] or draw(st.booleans()):
                p.pad = pad[0]
        else:
            p.pad_h, p.pad_w = pad
        if stride[0] == stride[1] and draw(st.booleans()):
            if stride[0] != 1 or draw(st.booleans()):
                p.stride = stride[0]
        else:
            p.stride_h, p.stride_w = stride
        rounding = draw(st.sampled_from(["unset", "CEIL", "FLOOR"]))
        h, w = _fit(draw, kernel[0], pad[0], max_side), _fit(draw, kernel[1], pad[1], max_side)
        if any((ref.pooled_size(n, k, q, t) - 1) * t - q >= n
               for n, k, q, t in zip((h, w), kernel, pad, stride)):
            rounding = "FLOOR"   # CEIL would leave a window past the image (−FLT_MAX): test_pooling.py
        if rounding != "unset":
            p.round_mode = rounding
    per_plane = h * w
    planes = draw(st.integers(1, max(1, min(3, ctx.max_size // per_plane))))
    shape = (1, planes, h, w) if draw(st.booleans()) else (planes, 1, h, w)
    if method == 0:
        x = _distinct(draw, shape)
        if ctx.purpose != "gradient" and draw(st.booleans()):
            lp.top.append("mask")
    elif method == 1:
        x = _array(draw, shape=shape, ctx=ctx)
    else:
        x = _array(draw, ctx, shape, 0.1, 2.0)               # stochastic pooling samples activations
    phase = jitnet.TRAIN
    if method == 2:
        phases = [jitnet.TEST] if ctx.purpose == "forward" else [jitnet.TRAIN, jitnet.TEST]
        phase = draw(st.sampled_from(phases))
    return Sample(lp, [x], phase=phase, check_tops=(0,))


def _pool_args(p, shape):
    """(kernel, stride, pad) pairs of a PoolingParameter for a bottom of ``shape``."""
    if p.global_pooling:
        return shape[2:], (1, 1), (0, 0)
    kernel = (p.kernel_size,) * 2 if p.HasField("kernel_size") else (p.kernel_h, p.kernel_w)
    stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
    pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
    return kernel, stride, pad


def ref_pooling(s):
    p = s.layer_param.pooling_param
    rounding = "FLOOR" if p.round_mode == pb.PoolingParameter.FLOOR else "CEIL"
    y, mask = ref.pool(s.bottoms[0], _POOL_METHODS[p.pool], *_pool_args(p, np.shape(s.bottoms[0])), rounding)
    return [y, mask][:len(s.layer_param.top)]


_PARAM_FIELDS = {"Pooling": "pooling_param", "SPP": "spp_param", "LRN": "lrn_param"}


def _configured(type_name, text, tops=("y",), name=None):
    """A layer of ``type_name`` whose parameter message is ``text`` (prototxt)."""
    lp = _lp(type_name, tops=tops, name=name)
    text_format.Merge(text, getattr(lp, _PARAM_FIELDS[type_name]))
    return lp


def pooling_big():
    """Past one thread block: the unrolled 2×2/2 and 3×3/2 paths with their borders, the general
    loop (3×3/1, 2×3), the mask top, AVE with padding, STOCHASTIC in TRAIN."""
    rng = _rng()
    x = rng.permutation(2 * 17 * 18).reshape(1, 2, 17, 18) / 100.0 - 3.0
    rows = [("max2-mask", "kernel_size: 2 stride: 2", ("y", "mask"), x),
            ("max3s2-pad", "kernel_size: 3 stride: 2 pad: 1", ("y",), x),
            ("max3s1-pad", "kernel_size: 3 stride: 1 pad: 1", ("y",), x[:, :, :12, :13]),
            ("ave3s2-pad", "pool: AVE kernel_size: 3 stride: 2 pad: 1", ("y",), x),
            ("ave-2x3", "pool: AVE kernel_h: 2 kernel_w: 3 stride: 1", ("y",), x[:, :, :14, :14]),
            ("stochastic-train", "pool: STOCHASTIC kernel_size: 3 stride: 2", ("y",), np.abs(x) + 0.1)]
    return [Big(_configured("Pooling", text, tops, name=big_id.replace("-", "_")), [bottom],
                propagate_down=(True,), id=big_id) for big_id, text, tops, bottom in rows]


def pooling_errors():
    four = np.ones((1, 2, 4, 4))
    return [(error_id, _configured("Pooling", text, name="bad"), [bottom]) for error_id, text, bottom in [
        ("pad-ge-kernel", "kernel_size: 2 pad: 2", four),
        ("kernel-0", "kernel_size: 0", four),
        ("no-kernel", "stride: 2", four),
        ("global-with-kernel", "global_pooling: true kernel_size: 2", four),
        ("global-with-pad", "global_pooling: true pad: 1", four),
        ("global-with-stride", "global_pooling: true stride: 2", four),
        ("kernel-and-kernel_h", "kernel_size: 2 kernel_h: 2 kernel_w: 2", four),
        ("only-kernel_h", "kernel_h: 2", four),
        ("pad-and-pad_w", "kernel_size: 3 pad: 1 pad_w: 1", four),
        ("only-stride_w", "kernel_size: 2 stride_w: 2", four),
        ("stride-0", "kernel_size: 2 stride: 0", four),
        ("stochastic-pad", "pool: STOCHASTIC kernel_size: 3 pad: 1", four),
        ("3-axes", "kernel_size: 2", np.ones((2, 4, 4))),
        ("5-axes", "kernel_size: 2", np.ones((1, 1, 2, 4, 4))),
        ("output-0", "kernel_size: 5", np.ones((1, 1, 2, 2))),
        ("global-of-empty", "global_pooling: true", np.ones((1, 1, 0, 3)))]]


def _spp_heights(levels, max_side):
    """Input extents whose every pyramid level has pad < kernel (Caffe's pooling check)."""
    ok = []
    for size in range(1, max_side + 1):
        bins = [2 ** level for level in range(levels)]
        if all((math.ceil(size / b) * b - size + 1) // 2 < math.ceil(size / b) for b in bins):
            ok.append(size)
    return ok


def draw_spp(draw, ctx):
    max_side = 6 if ctx.purpose != "parity" else 4
    levels = draw(st.integers(1, 3))
    h = draw(st.sampled_from(_spp_heights(levels, max_side)))
    w = draw(st.sampled_from(_spp_heights(levels, max_side)))
    planes = draw(st.integers(1, max(1, min(3, ctx.max_size // (h * w)))))
    shape = (1, planes, h, w) if draw(st.booleans()) else (planes, 1, h, w)
    lp = _lp("SPP")
    lp.spp_param.pyramid_height = levels
    lp.spp_param.pool = draw(st.sampled_from([0, 1]))
    x = _distinct(draw, shape) if lp.spp_param.pool == 0 else _array(draw, ctx, shape)
    return Sample(lp, [x])


def spp_big():
    x = _rng().permutation(2 * 3 * 11 * 13).reshape(2, 3, 11, 13) / 50.0
    return [Big(_configured("SPP", f"pyramid_height: 3 pool: {pool}", name=f"spp_{pool.lower()}"), [x],
                propagate_down=(True,), id=f"spp_{pool.lower()}") for pool in ("MAX", "AVE")]


def spp_errors():
    four = np.ones((1, 1, 4, 4))
    return [(error_id, _configured("SPP", text, name="bad"), [bottom]) for error_id, text, bottom in [
        ("pyramid-0", "pyramid_height: 0", four),
        ("stochastic", "pyramid_height: 2 pool: STOCHASTIC", four),
        ("pad-ge-kernel", "pyramid_height: 3", np.ones((1, 1, 3, 3))),
        ("empty-input", "pyramid_height: 1", np.ones((1, 1, 0, 3))),
        ("2-axes", "pyramid_height: 1", np.ones((3, 4)))]]


def draw_lrn(draw, ctx):
    max_side = 4 if ctx.purpose != "parity" else 3
    shape = draw(jst.shapes(min_dims=4, max_dims=4, max_side=max_side, max_size=ctx.max_size))
    lp = _lp("LRN")
    p = lp.lrn_param
    p.local_size = draw(st.sampled_from([1, 3, 5]))
    p.alpha = draw(st.floats(0.125, 2.0, width=32))
    p.beta = draw(st.sampled_from([0.75, 0.5, 1.25]))
    p.k = draw(st.floats(0.5, 2.0, width=32))
    p.norm_region = draw(st.sampled_from([0, 1]))
    return Sample(lp, [_array(draw, ctx, shape)])


def ref_lrn(s):
    p = s.layer_param.lrn_param
    region = "ACROSS_CHANNELS" if p.norm_region == pb.LRNParameter.ACROSS_CHANNELS else "WITHIN_CHANNEL"
    return [ref.lrn(s.bottoms[0], p.local_size, p.alpha, p.beta, p.k, region)]


def lrn_big():
    rng = _rng()
    return [Big(_configured("LRN", "local_size: 5 alpha: 0.5 beta: 0.75", name="norm_across"),
                [rng.normal(size=(2, 7, 12, 12))], propagate_down=(True,), id="norm_across"),
            Big(_configured("LRN", "local_size: 3 alpha: 0.5 beta: 0.6 norm_region: WITHIN_CHANNEL",
                            name="norm_within"),
                [rng.normal(size=(1, 3, 10, 10))], propagate_down=(True,), id="norm_within")]


def lrn_errors():
    four = np.ones((1, 3, 2, 2))
    return [(error_id, _configured("LRN", text, name="bad"), [bottom]) for error_id, text, bottom in [
        ("even-size", "local_size: 4", four),
        ("size-0", "local_size: 0", four),
        ("3-axes", "local_size: 3", np.ones((3, 2, 2))),
        ("within-3-axes", "local_size: 3 norm_region: WITHIN_CHANNEL", np.ones((3, 2, 2)))]]


def _pooling_benches():
    """LeNet (b64) and CIFAR-10-quick (b100) pooling layers, against PyTorch's pooling with
    Caffe's rounding (ceil_mode) and divisor (count_include_pad)."""
    rows = [("MAX 2/2 64x20x24x24 (LeNet pool1)", "MAX", 2, (64, 20, 24, 24)),
            ("MAX 2/2 64x50x8x8 (LeNet pool2)", "MAX", 2, (64, 50, 8, 8)),
            ("MAX 3/2 100x32x32x32 (CIFAR pool1)", "MAX", 3, (100, 32, 32, 32)),
            ("AVE 3/2 100x32x16x16 (CIFAR pool2)", "AVE", 3, (100, 32, 16, 16)),
            ("AVE 3/2 100x64x8x8 (CIFAR pool3)", "AVE", 3, (100, 64, 8, 8))]
    benches = []
    for label, pool, k, shape in rows:
        if pool == "MAX":
            def torch(F, x, p, k=k):
                return F.max_pool2d(x, k, 2, ceil_mode=True)
        else:
            def torch(F, x, p, k=k):
                return F.avg_pool2d(x, k, 2, ceil_mode=True, count_include_pad=True)
        params = f"pooling_param {{ pool: {pool} kernel_size: {k} stride: 2 }}"
        benches.append(Bench(f"Pooling {label}", params, (shape,), torch))
    return tuple(benches)


def _torch_lrn_within(F, x, p):
    """Caffe's WITHIN_CHANNEL LRN (local 3, alpha 5e-5, beta 0.75) as PyTorch ops: AVE pooling of x²
    with count_include_pad, then the power."""
    return x * (1 + 5e-05 * F.avg_pool2d(x * x, 3, 1, 1, count_include_pad=True)) ** -0.75




# --------------------------------------------------------------------------- normalization, scale, bias, crop


# --------------------------------------------------------------------------- the table
def _torch_linear(F, x, p):
    return F.linear(x, p[0], p[1])


LAYER_CASES = [
    pointwise("ReLU", ref.relu, params={"relu_param": {"negative_slope": st.one_of(st.just(0.0),
                                                                                  st.floats(-0.5, 0.9))}},
              kinks=(0.0,), torch=lambda F, x, p: F.relu(x)),
    pointwise("Sigmoid", ref.sigmoid, -6.0, 6.0, torch=lambda F, x, p: x.sigmoid()),
    pointwise("TanH", ref.tanh, -3.0, 3.0, torch=lambda F, x, p: x.tanh()),
    LayerCase("Dropout", draw_dropout, lambda s: [ref.dropout_test(s.bottoms[0])],
              reference_note="forward reference is the TEST phase (identity); TRAIN is checked "
                             "by the gradient check (seeded mask) and a statistical test",
              grad_bottoms=(0,), big=dropout_big, errors=dropout_errors,
              bench=(Bench("Dropout(train) 256x4096", "", ((256, 4096),),
                           lambda F, x, p: F.dropout(x, 0.5, training=True)),)),
    LayerCase("Softmax", draw_softmax,
              lambda s: [ref.softmax(s.bottoms[0], s.layer_param.softmax_param.axis)],
              grad_bottoms=(0,), big=softmax_big,
              bench=(Bench("Softmax 256x1000", "", ((256, 1000),), lambda F, x, p: F.softmax(x, dim=1)),)),
    LayerCase("InnerProduct", draw_inner_product,
              lambda s: [ref.inner_product(s.bottoms[0], s.params[0],
                                           s.params[1] if len(s.params) > 1 else None,
                                           s.layer_param.inner_product_param.axis,
                                           s.layer_param.inner_product_param.transpose)],
              grad_bottoms=(0,), check_params=True, big=inner_product_big, errors=inner_product_errors,
              bench=(Bench("InnerProduct 256x1024->1024",
                           'inner_product_param { num_output: 1024 weight_filler { type: "xavier" } }',
                           ((256, 1024),), _torch_linear),)),
    LayerCase("Split", draw_split,
              lambda s: [np.asarray(s.bottoms[0], np.float64)] * len(s.layer_param.top),
              grad_bottoms=(0,), big=split_big),
    LayerCase("Flatten", draw_flatten,
              lambda s: [ref.flatten(s.bottoms[0], s.layer_param.flatten_param.axis,
                                     s.layer_param.flatten_param.end_axis)],
              grad_bottoms=(0,), gpu_kernels=False, errors=flatten_errors),
    LayerCase("Reshape", draw_reshape, ref_reshape, grad_bottoms=(0,), gpu_kernels=False),
    LayerCase("SoftmaxWithLoss", draw_softmax_loss, ref_softmax_loss, grad_bottoms=(0,),
              forward_tol={np.float32: (3e-5, 3e-6)}, big=softmax_loss_big),
    LayerCase("EuclideanLoss", draw_euclidean_loss,
              lambda s: [ref.euclidean_loss(s.bottoms[0], s.bottoms[1])], grad_bottoms=(0, 1),
              big=euclidean_loss_big),
    LayerCase("Accuracy", draw_accuracy, ref_accuracy, big=accuracy_big),
    LayerCase("Input", draw_input, lambda s: [np.asarray(v, np.float64) for v in s.extra["values"]],
              gpu_kernels=False, errors=input_errors),
    LayerCase("DummyData", draw_dummy_data, ref_dummy_data, gpu_kernels=False, errors=dummy_data_errors),
    LayerCase("MemoryData", draw_memory_data, ref_memory_data, gpu_kernels=False,
              errors=memory_data_errors),
    LayerCase("HDF5Data", draw_hdf5_data, ref_hdf5_data, gpu_kernels=False, errors=hdf5_data_errors),
    # -- vision: convolution family

    # -- vision: pooling, SPP, LRN
    LayerCase("Pooling", draw_pooling, ref_pooling,
              reference_note="STOCHASTIC's forward reference is its TEST phase; TRAIN is checked by the "
                             "gradient check (seeded draws) and by statistics in test_pooling.py",
              grad_bottoms=(0,), big=pooling_big, errors=pooling_errors,
              bench=_pooling_benches()),
    LayerCase("SPP", draw_spp,
              lambda s: [ref.spp(s.bottoms[0], s.layer_param.spp_param.pyramid_height,
                                 _POOL_METHODS[s.layer_param.spp_param.pool])],
              grad_bottoms=(0,), big=spp_big, errors=spp_errors),
    LayerCase("LRN", draw_lrn, ref_lrn, grad_bottoms=(0,), big=lrn_big, errors=lrn_errors,
              bench=(Bench("LRN across 5 16x96x27x27 (CaffeNet norm1)",
                           "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }", ((16, 96, 27, 27),),
                           lambda F, x, p: F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)),
                     Bench("LRN within 3 100x32x16x16 (CIFAR-10-full norm)",
                           "lrn_param { local_size: 3 alpha: 5e-05 beta: 0.75 norm_region: WITHIN_CHANNEL }",
                           ((100, 32, 16, 16),), _torch_lrn_within))),

    # -- normalization, scale, bias, crop

]

CASES_BY_TYPE = {case.type: case for case in LAYER_CASES}
