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
import pytest
from hypothesis import strategies as st

import jitnet
from jitnet.proto import pb
from jitnet.proto.io import write_blob_proto
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
    same_outputs: bool = True                # False where both sides draw random numbers
    fill: Optional[Callable] = None          # fill(rng, shapes) -> bottom values (default: normal)


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


def _spread(shape, axes):
    """0, 0.45, 0.9, 1.35, 1.8, 0, ... along the elements that share one statistic (those that
    differ only in ``axes``), to add to a drawn bottom of a layer that divides by the spread of
    a group (MVN, BatchNorm with batch statistics). Hypothesis likes arrays of equal values,
    where σ ≈ 0: y then jumps between −1 and 1 (a kink for the gradient check), and float32
    rounding in the mean is amplified by 1/sqrt(eps) (316 for eps = 1e-5), so two correct
    implementations differ by far more than any forward tolerance."""
    index = np.zeros(shape)
    for axis in axes:
        along = [1] * len(shape)
        along[axis] = shape[axis]
        index = index * shape[axis] + np.arange(shape[axis]).reshape(along)
    return index % 5 * 0.45


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
from hypothesis import assume  # noqa: E402  (this section's import)


@dataclass(frozen=True)
class ConvAxis:
    """One spatial axis of a drawn convolution: input size, kernel, stride, pad, dilation."""
    size: int
    kernel: int
    stride: int
    pad: int
    dilation: int


def _draw_conv_axis(draw, reverse, limit):
    """An axis of input size at most ``limit`` whose output is not empty (Convolution and
    Im2col: the dilated kernel fits the padded input; Deconvolution: stride·(in − 1) +
    extent − 2·pad >= 1)."""
    kernel, stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    extent = dilation * (kernel - 1) + 1
    if reverse:
        size = draw(st.integers(1, max(1, min(3, limit))))
        pad = draw(st.integers(0, min(2, (stride * (size - 1) + extent - 1) // 2)))
    else:
        pad = draw(st.integers(0, 2))
        if extent - 2 * pad > limit:
            pad = extent // 2                    # the kernel fits an input of size 1
        low = max(1, extent - 2 * pad)
        size = draw(st.integers(low, max(low, min(low + 3, limit))))
    axis = ConvAxis(size, kernel, stride, pad, dilation)
    assume(_reaches_input(axis, reverse))
    return axis


def _reaches_input(a, reverse):
    """Whether some output along the axis depends on some input (else every window lies in
    the padding, or the deconvolution's whole output is cropped off, and the weights get no
    gradient)."""
    if reverse:
        out = a.stride * (a.size - 1) + a.dilation * (a.kernel - 1) + 1 - 2 * a.pad
        return any(0 <= q * a.stride + k * a.dilation - a.pad < out
                   for q in range(a.size) for k in range(a.kernel))
    out = (a.size + 2 * a.pad - (a.dilation * (a.kernel - 1) + 1)) // a.stride + 1
    return any(0 <= q * a.stride - a.pad + k * a.dilation < a.size
               for q in range(out) for k in range(a.kernel))


def _write_repeated(draw, p, name, values, default, hw=None):
    """Write one value per spatial axis into convolution_param in one of Caffe's spellings:
    left out (all default), once, once per axis, or as the 2-D _h/_w pair."""
    choices = ["per_axis"]
    if len(set(values)) == 1:
        choices.append("once")
    if default is not None and all(v == default for v in values):
        choices.append("unset")
    if hw and len(values) == 2:
        choices.append("hw")
    how = draw(st.sampled_from(choices))
    if how == "once":
        getattr(p, name).append(values[0])
    elif how == "per_axis":
        getattr(p, name).extend(values)
    elif how == "hw":
        setattr(p, f"{hw}_h", values[0])
        setattr(p, f"{hw}_w", values[1])


def _quantized(a):
    """Values on a 1/8 grid (never all zero): float32 products and short sums of them are exact,
    so CPU and GPU agree whatever order they sum in."""
    q = np.round(np.asarray(a) * 8) / 8
    if q.size and not q.any():
        q.flat[0] = 0.5
    return q


def draw_convolution_family(type_name):
    """A drawn Convolution / Deconvolution / Im2col: 2 spatial axes mostly, sometimes 1 or 3;
    the channel axis 1, or 2 after two batch axes, or written negatively; odd sizes, strides,
    padding, dilation, non-square kernels, groups (sometimes depthwise: group == channels ==
    num_output), bias on or off, force_nd_im2col, and (Convolution, Deconvolution) one or two
    bottoms."""
    reverse = type_name == "Deconvolution"
    learned = type_name != "Im2col"

    def draw_case(draw, ctx):
        nsp = draw(st.sampled_from([2, 2, 2, 1, 3] if type_name != "Im2col" else [2, 2, 1, 3]))
        limit = max(1, int(ctx.max_size ** (1.0 / nsp) + 1e-9))
        axes = [_draw_conv_axis(draw, reverse, limit) for _ in range(nsp)]
        spatial = math.prod(a.size for a in axes)
        batch_axes = draw(st.sampled_from([1, 1, 1, 2]))
        room = max(1, ctx.max_size // spatial)
        channels_max = max(1, min(4, room))
        depthwise = learned and draw(st.integers(0, 3)) == 0
        channels = draw(st.integers(1, channels_max))
        if learned:
            group = channels if depthwise else draw(st.sampled_from(
                [g for g in range(1, channels + 1) if channels % g == 0]))
            num_output = channels if depthwise else group * draw(st.integers(1, 2))
        batch_room = max(1, room // channels)
        batch = tuple(draw(st.integers(1, min(2, batch_room))) for _ in range(batch_axes))
        if math.prod(batch) * channels * spatial > ctx.max_size:
            batch = (1,) * batch_axes
        shape = batch + (channels,) + tuple(a.size for a in axes)
        nbottoms = 2 if learned and ctx.purpose != "parity" and draw(st.integers(0, 4)) == 0 else 1
        lp = _lp(type_name, bottoms=[f"x{i}" for i in range(nbottoms)],
                 tops=[f"y{i}" for i in range(nbottoms)])
        p = lp.convolution_param
        if batch_axes != 1 or draw(st.booleans()):
            p.axis = _as_negative(draw, batch_axes, len(shape))
        _write_repeated(draw, p, "kernel_size", [a.kernel for a in axes], None, "kernel")
        _write_repeated(draw, p, "stride", [a.stride for a in axes], 1, "stride")
        _write_repeated(draw, p, "pad", [a.pad for a in axes], 0, "pad")
        _write_repeated(draw, p, "dilation", [a.dilation for a in axes], 1)
        if nsp == 2 and draw(st.integers(0, 3)) == 0:
            p.force_nd_im2col = True
        # away from 0: a padded or strided window that keeps only zeros would leave the weight
        # gradient zero (test_propagate_down_false... wants it to move)
        bottoms = [draw(jst.arrays(shape, avoid=(0.0,), margin=0.1)) for _ in range(nbottoms)]
        params = None
        if learned:
            p.num_output, p.group = num_output, group
            p.bias_term = draw(st.booleans())
            kernel = tuple(a.kernel for a in axes)
            wshape = ((channels, num_output // group) if reverse
                      else (num_output, channels // group)) + kernel
            params = [draw(jst.arrays(wshape, low=-1.5, high=1.5))]
            if p.bias_term:
                params.append(draw(jst.arrays((num_output,), low=-1.5, high=1.5)))
        if ctx.purpose == "parity":
            bottoms = [_quantized(b) for b in bottoms]
            params = params and [_quantized(a) for a in params]
        return Sample(lp, bottoms, params=params,
                      extra={"axes": axes, "axis": batch_axes})
    return draw_case


def _conv_args(s):
    axes = s.extra["axes"]
    return dict(axis=s.extra["axis"], kernel=tuple(a.kernel for a in axes),
                stride=tuple(a.stride for a in axes), pad=tuple(a.pad for a in axes),
                dilation=tuple(a.dilation for a in axes))


def ref_convolution(s):
    p = s.layer_param.convolution_param
    bias = s.params[1] if p.bias_term else None
    return [ref.convolution(x, s.params[0], bias, group=p.group, **_conv_args(s)) for x in s.bottoms]


def ref_deconvolution(s):
    p = s.layer_param.convolution_param
    bias = s.params[1] if p.bias_term else None
    return [ref.deconvolution(x, s.params[0], bias, group=p.group, **_conv_args(s)) for x in s.bottoms]


def ref_im2col(s):
    return [ref.im2col(s.bottoms[0], **_conv_args(s))]


def _conv_lp(type_name, name, **fields):
    lp = _lp(type_name, name=name)
    p = lp.convolution_param
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            getattr(p, key).extend(value)
        else:
            setattr(p, key, value)
    return lp


def convolution_big():
    """Past one 256-thread block (im2col: 360 col entries; depthwise: 272 outputs per plane,
    so the weight reduction spans a whole block) and one 16×16 GEMM tile (17 outputs): the
    im2col + GEMM drivers, and the direct depthwise kernels (one channel is depthwise too).
    The simulator runs every GPU thread in Python: one image, one group, few launches (the
    bias, whose reductions launch many blocks, is left to the drawn examples)."""
    rng = _rng()
    general = _conv_lp("Convolution", "conv_gemm", num_output=17, kernel_size=[3], pad=[1],
                       bias_term=False)
    depthwise = _conv_lp("Convolution", "conv_depthwise", num_output=1, kernel_size=[2])
    return [
        Big(general, [rng.normal(size=(1, 2, 4, 5))], [rng.normal(size=(17, 2, 3, 3))], (True,),
            id=general.name),
        Big(depthwise, [rng.normal(size=(1, 1, 18, 17))], [rng.normal(size=(1, 1, 2, 2)),
                                                           rng.normal(size=1)], (True,), id=depthwise.name),
    ]


def deconvolution_big():
    """294 top pixels (col2im past one block) through the GEMM drivers."""
    rng = _rng()
    lp = _conv_lp("Deconvolution", "deconv_gemm", num_output=6, kernel_size=[3], stride=[2])
    return [Big(lp, [rng.normal(size=(1, 2, 3, 3))], [rng.normal(size=(2, 6, 3, 3)), rng.normal(size=6)],
                (True,), id=lp.name)]


def im2col_big():
    rng = _rng()
    two = _conv_lp("Im2col", "im2col_2d", kernel_size=[3], pad=[1], stride=[2])
    nd = _conv_lp("Im2col", "im2col_3d", kernel_size=[2], pad=[1])
    return [Big(two, [rng.normal(size=(2, 3, 9, 7))], propagate_down=(True,), id=two.name),
            Big(nd, [rng.normal(size=(1, 2, 3, 4, 3))], propagate_down=(True,), id=nd.name)]


def _conv_errors(type_name):
    """Bad parameters Caffe refuses (or dies on), each a LayerError naming the layer."""
    learned = type_name != "Im2col"

    def errors():
        out = []

        def add(error_id, shape=(2, 4, 5, 5), bottoms=None, **fields):
            if learned:
                fields.setdefault("num_output", 4)
            fields.setdefault("kernel_size", [3])
            lp = _conv_lp(type_name, "bad", **fields)
            out.append((error_id, lp, bottoms or [np.ones(shape)]))
        if type_name != "Deconvolution":
            add("kernel-larger-than-padded-input", shape=(1, 2, 4, 4), kernel_size=[7], pad=[1])
            add("dilated-kernel-past-the-input", shape=(1, 2, 5, 5), kernel_size=[3], dilation=[3])
        add("kernel-size-missing", kernel_size=[])
        add("kernel-size-twice-for-3-axes", shape=(1, 2, 4, 4, 4), kernel_size=[2, 2])
        add("kernel-size-and-kernel-h", kernel_h=2, kernel_w=2)
        add("kernel-h-without-kernel-w", kernel_size=[], kernel_h=2)
        add("kernel-hw-in-3-d", shape=(1, 2, 4, 4, 4), kernel_size=[], kernel_h=2, kernel_w=2)
        add("kernel-zero", kernel_size=[0])
        add("stride-zero", stride=[0])
        add("stride-three-for-two-axes", stride=[1, 2, 1])
        add("stride-and-stride-h", stride=[1], stride_h=2, stride_w=2)
        add("pad-three-for-two-axes", pad=[1, 1, 1])
        add("pad-h-in-1-d", shape=(1, 2, 6), pad_h=1, pad_w=1)
        add("dilation-three-for-two-axes", dilation=[1, 2, 1])
        add("axis-out-of-range", axis=4)
        add("0-d-bottom", bottoms=[np.array(1.5)])
        if type_name == "Im2col":
            add("no-spatial-axis", shape=(2, 4), kernel_size=[1])
        else:
            add("channels-not-divisible-by-group", shape=(1, 3, 5, 5), group=2)
            add("num-output-not-divisible-by-group", num_output=3, group=2)
            add("num-output-zero", num_output=0)
            add("group-zero", group=0)
            add("no-channels", shape=(2, 0, 5, 5))
            lp = _conv_lp(type_name, "bad", num_output=2, kernel_size=[3])
            lp.bottom.append("x2")
            lp.top.append("y2")
            out.append(("bottoms-of-different-shapes", lp, [np.ones((1, 2, 5, 5)), np.ones((1, 2, 6, 5))]))
        if type_name == "Deconvolution":
            add("deconv-output-empty", shape=(1, 4, 1, 1), kernel_size=[1], pad=[1])
        return out
    return errors


def _conv_bench(label, shape, num_output, kernel, pad=0, group=1):
    return Bench(label, f'convolution_param {{ num_output: {num_output} kernel_size: {kernel} '
                        f'pad: {pad} group: {group} weight_filler {{ type: "xavier" }} }}',
                 (shape,), lambda F, x, p: F.conv2d(x, p[0], p[1], 1, pad, 1, group))


CONVOLUTION_BENCH = (
    _conv_bench("Conv LeNet conv1 64x1x28x28 20@5", (64, 1, 28, 28), 20, 5),
    _conv_bench("Conv LeNet conv2 64x20x12x12 50@5", (64, 20, 12, 12), 50, 5),
    _conv_bench("Conv CIFAR conv1 100x3x32x32 32@5p2", (100, 3, 32, 32), 32, 5, 2),
    _conv_bench("Conv CIFAR conv2 100x32x16x16 32@5p2", (100, 32, 16, 16), 32, 5, 2),
    _conv_bench("Conv CIFAR conv3 100x32x8x8 64@5p2", (100, 32, 8, 8), 64, 5, 2),
    _conv_bench("Conv dw 8x32x112x112 3x3", (8, 32, 112, 112), 32, 3, 1, 32),
    _conv_bench("Conv dw 8x512x14x14 3x3", (8, 512, 14, 14), 512, 3, 1, 512),
)



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
def draw_batch_norm(draw, ctx):
    """Bottoms (N, C, ...) with TRAIN or TEST phase and use_global_stats unset (the phase
    decides), true or false; stored statistics as a Caffe-trained net has them (sums scaled by
    the factor, or all 0 as after setup)."""
    shape = _shape(draw, ctx, min_dims=2)
    lp = _lp("BatchNorm")
    p = lp.batch_norm_param
    use_global = draw(st.sampled_from([None, True, False]))
    if use_global is not None:
        p.use_global_stats = use_global
    if draw(st.booleans()):
        p.eps = draw(st.sampled_from([1e-3, 0.1, 1.0]))
    if draw(st.booleans()):
        p.moving_average_fraction = draw(st.floats(0.5, 1.0, width=32))
    channels = shape[1]
    factor = draw(st.sampled_from([0.0, 1.0, 0.37, 999.9]))
    params = [draw(jst.arrays((channels,), low=-1.5, high=1.5)) * factor,
              draw(jst.arrays((channels,), low=0.2, high=2.0)) * factor,
              np.array([factor])]
    spread = _spread(shape, [0] + list(range(2, len(shape))))
    return Sample(lp, [_array(draw, ctx, shape, -1.0, 1.0) + spread],
                  phase=draw(st.sampled_from([jitnet.TRAIN, jitnet.TEST])), params=params)


def _uses_global_stats(s):
    p = s.layer_param.batch_norm_param
    return p.use_global_stats if p.HasField("use_global_stats") else s.phase == jitnet.TEST


def ref_batch_norm(s):
    mean_sum, var_sum, factor = s.params
    return [ref.batch_norm(s.bottoms[0], mean_sum, var_sum, float(factor[0]), _uses_global_stats(s),
                           s.layer_param.batch_norm_param.eps)]


def batch_norm_big():
    rng, cases = _rng(), []
    for use_global in (False, True):
        lp = _lp("BatchNorm", name=f"bn_global_{use_global}")
        lp.batch_norm_param.use_global_stats = use_global
        params = [rng.normal(size=3) * 10.0, rng.uniform(0.5, 2.0, size=3) * 10.0, np.array([10.0])]
        cases.append(Big(lp, [rng.normal(size=(2, 3, 6, 10))], params, (True,), id=lp.name))
    # 4100 values in one channel: the GPU statistics split the channel over two blocks (forward
    # only: backward's sums run the same kernel, and the simulator is slow)
    lp = _lp("BatchNorm", name="bn_one_long_channel")
    cases.append(Big(lp, [rng.normal(3.0, 2.0, size=(2, 1, 2050))], propagate_down=(False,), id=lp.name))
    return cases


def batch_norm_errors():
    lp = _bad("BatchNorm")
    learned = _bad("BatchNorm")
    learned.param.add(lr_mult=0.0)
    learned.param.add(lr_mult=1.0)
    return [("1-axis", lp, [np.ones(3)]), ("lr_mult-1", learned, [np.ones((2, 3))])]


def _torch_batch_norm(training):
    def run(F, x, p):
        import torch
        c = x.shape[1]
        return F.batch_norm(x, torch.zeros(c), torch.zeros(c), training=training, eps=1e-5)   # jitnet's blobs start at 0
    return run


def _broadcast_case(draw, ctx, type_name, message):
    """Scale's and Bias's drawn geometry: bottom[0], ``axis`` (written negatively half the time)
    and either a learned operand of ``num_axes`` axes (−1: to the end, 0: a scalar) or a second
    bottom shaped like a span of bottom[0] from ``axis`` (0-D: a scalar).
    Returns (lp, x, operand shape, second bottom or None)."""
    shape = _shape(draw, ctx)
    n = len(shape)
    two = draw(st.booleans()) if not (ctx.purpose == "gradient" and type_name == "Bias") else False
    lp = _lp(type_name, bottoms=("x", "s") if two else ("x",))
    p = getattr(lp, message)
    axis = draw(st.integers(0, n - 1))
    if axis != 1 or draw(st.booleans()):
        p.axis = _as_negative(draw, axis, n)
    k = draw(st.integers(0, n - axis))
    if two:
        operand = shape[axis:axis + k]
        second = _array(draw, ctx, operand, -1.5, 1.5)
    else:
        second = None
        if k == n - axis and draw(st.booleans()):
            p.num_axes = -1
        elif k != 1 or draw(st.booleans()):
            p.num_axes = k
        operand = shape[axis:axis + k]
    return lp, _array(draw, ctx, shape), operand, second


def draw_scale(draw, ctx):
    lp, x, operand, second = _broadcast_case(draw, ctx, "Scale", "scale_param")
    p = lp.scale_param
    # a two-bottom Scale learns only its bias: the gradient check needs a learnable blob there
    p.bias_term = True if second is not None and ctx.purpose == "gradient" else draw(st.booleans())
    params = [] if second is not None else [draw(jst.arrays(operand, low=-1.5, high=1.5))]
    if p.bias_term:
        params.append(draw(jst.arrays(operand, low=-1.5, high=1.5)))
    bottoms = [x] if second is None else [x, second]
    return Sample(lp, bottoms, params=params,
                  propagate_down=None if second is None else (True, True))


def ref_scale(s):
    p, two = s.layer_param.scale_param, len(s.bottoms) == 2
    multiplier = s.bottoms[1] if two else s.params[0]
    b = s.params[-1] if p.bias_term else None
    return [ref.scale(s.bottoms[0], multiplier, p.axis, b)]


def draw_bias(draw, ctx):
    lp, x, operand, second = _broadcast_case(draw, ctx, "Bias", "bias_param")
    if second is not None:
        return Sample(lp, [x, second], params=[], propagate_down=(True, True))
    return Sample(lp, [x], params=[draw(jst.arrays(operand, low=-1.5, high=1.5))])


def ref_bias(s):
    b = s.bottoms[1] if len(s.bottoms) == 2 else s.params[0]
    return [ref.bias(s.bottoms[0], b, s.layer_param.bias_param.axis)]


def _broadcast_big(type_name, message):
    rng, cases = _rng(), []
    learned = _lp(type_name, name=f"{type_name.lower()}_learned")
    if type_name == "Scale":
        learned.scale_param.bias_term = True
    params = [rng.normal(size=(5, 3)) for _ in range(1 + (type_name == "Scale"))]
    getattr(learned, message).num_axes = 2
    cases.append(Big(learned, [rng.normal(size=(2, 5, 3, 9))], params, (True,), id=learned.name))
    second = _lp(type_name, bottoms=("x", "s"), name=f"{type_name.lower()}_second_bottom")
    getattr(second, message).axis = -2
    cases.append(Big(second, [rng.normal(size=(2, 5, 3, 9)), rng.normal(size=(3, 9))], [], (True, True),
                     id=second.name))
    return cases


def _broadcast_errors(type_name, message):
    cases = []
    for error_id, axis, num_axes, shape in (("num_axes--2", 1, -2, (2, 3, 4)),
                                            ("axis-2-of-2", 2, 1, (2, 3)),
                                            ("num_axes-past-the-end", 1, 3, (2, 3, 4))):
        lp = _bad(type_name)
        p = getattr(lp, message)
        p.axis, p.num_axes = axis, num_axes
        cases.append((error_id, lp, [np.ones(shape)]))
    mismatch = _bad(type_name, bottoms=("x", "s"))
    cases.append(("second-bottom-mismatch", mismatch, [np.ones((2, 3, 4)), np.ones((4,))]))
    past = _bad(type_name, bottoms=("x", "s"))
    getattr(past, message).axis = 2
    cases.append(("second-bottom-past-the-end", past, [np.ones((2, 3, 4)), np.ones((4, 1))]))
    return cases


def _torch_scale(F, x, p):
    return x * p[0].view(1, -1, 1, 1) + p[1].view(1, -1, 1, 1)


def _torch_bias(F, x, p):
    return x + p[0].view(1, -1, 1, 1)


def _torch_spp(height, method):
    """SPP as PyTorch pools: level l has 2^l bins per axis, kernel ceil(size / bins), stride the
    kernel, pad (kernel·bins − size + 1) // 2 (SPPLayer's pooling parameters), ceil mode."""
    def spp(F, x, p):
        import torch
        pool = F.max_pool2d if method == "MAX" else F.avg_pool2d
        levels = []
        for level in range(height):
            bins = 2 ** level
            kernel = [math.ceil(n / bins) for n in x.shape[2:]]
            pad = [(k * bins - n + 1) // 2 for k, n in zip(kernel, x.shape[2:])]
            levels.append(pool(x, kernel, kernel, pad, ceil_mode=True).flatten(1))
        return torch.cat(levels, 1)
    return spp


def draw_crop(draw, ctx):
    """bottom[0], a reference bottom[1] with the same number of axes (its axes before ``axis``
    are ignored, so they are drawn freely), and offsets: none, one for every cropped axis, or one
    per cropped axis, each leaving the window inside bottom[0]."""
    shape = _shape(draw, ctx)
    n = len(shape)
    lp = _lp("Crop", bottoms=("x", "reference"))
    p = lp.crop_param
    axis = draw(st.integers(0, n - 1))
    if axis != 2 or draw(st.booleans()):
        p.axis = _as_negative(draw, axis, n)
    window = [draw(st.integers(1, shape[i])) for i in range(axis, n)]
    ref_shape = tuple(draw(st.integers(1, 3)) for _ in range(axis)) + tuple(window)
    room = [shape[axis + k] - w for k, w in enumerate(window)]
    mode = draw(st.sampled_from(["none", "one", "each"]))
    if mode == "one":
        p.offset.append(draw(st.integers(0, min(room))))
    elif mode == "each":
        p.offset.extend(draw(st.integers(0, r)) for r in room)
    return Sample(lp, [_array(draw, ctx, shape), np.zeros(ref_shape)], propagate_down=(True, False))


def ref_crop(s):
    p = s.layer_param.crop_param
    return [ref.crop(s.bottoms[0], np.shape(s.bottoms[1]), p.axis, list(p.offset))]


def crop_big():
    rng = _rng()
    lp = _lp("Crop", bottoms=("x", "reference"))
    lp.crop_param.offset.extend([2, 3])
    return [Big(lp, [rng.normal(size=(2, 3, 20, 21)), np.zeros((1, 1, 15, 17))], propagate_down=(True, False))]


def crop_errors():
    def crop(offsets=(), axis=None):
        lp = _bad("Crop", bottoms=("x", "reference"))
        lp.crop_param.offset.extend(offsets)
        if axis is not None:
            lp.crop_param.axis = axis
        return lp
    x = np.ones((2, 3, 5, 5))
    return [("reference-larger", crop(), [x, np.ones((2, 3, 6, 5))]),
            ("offset-out-of-bounds", crop([2]), [x, np.ones((2, 3, 4, 4))]),
            ("offset-count", crop([1, 1, 1]), [x, np.ones((2, 3, 4, 4))]),
            ("axes-differ", crop(), [x, np.ones((3, 4, 4))]),
            ("axis-4-of-4", crop(axis=4), [x, np.ones((2, 3, 4, 4))])]


# --------------------------------------------------------------------------- catalogue: neurons and losses
def _with_params(lp, message, values):
    """lp with the fields ``values`` set in its parameter message ``message``."""
    for name, value in values.items():
        setattr(getattr(lp, message), name, value)
    return lp


def _neuron_big(type_name, message=None, values=None, low=-2.0, high=2.0, grad=True):
    """A big example of a neuron layer with parameters: (3, 110) values in [low, high]."""
    def big():
        lp = _lp(type_name)
        if message:
            _with_params(lp, message, values)
        return [Big(lp, [_rng().uniform(low, high, size=(3, 110))], propagate_down=(grad,))]
    return big


def _neuron_bench(type_name, params, torch):
    return (Bench(f"{type_name} 256x4096", params, ((256, 4096),), torch),)


_BASES = st.sampled_from([-1.0, 2.0, 0.5, 10.0])


def draw_exp(draw, ctx):
    lp = _with_params(_lp("Exp"), "exp_param", {
        "base": draw(_BASES), "scale": draw(st.floats(-1.5, 1.5, width=32)),
        "shift": draw(st.floats(-1.0, 1.0, width=32))})
    return Sample(lp, [_array(draw, ctx, _shape(draw, ctx))])


def ref_exp(s):
    p = s.layer_param.exp_param
    return [ref.exp_layer(s.bottoms[0], p.base, p.scale, p.shift)]


def exp_errors():
    cases = []
    for error_id, base in (("base-0", 0.0), ("base-negative", -2.0), ("base-inf", math.inf)):
        lp = _bad("Exp")
        lp.exp_param.base = base
        cases.append((error_id, lp, [np.ones(3)]))
    return cases


def draw_log(draw, ctx):
    """|scale·x| <= 2 < shift: the logarithm's argument stays >= 0.5."""
    lp = _with_params(_lp("Log"), "log_param", {
        "base": draw(_BASES), "scale": draw(jst.nonzero_floats(0.5, 2.0)),
        "shift": draw(st.floats(2.5, 4.0, width=32))})
    return Sample(lp, [_array(draw, ctx, _shape(draw, ctx), -1.0, 1.0)])


def ref_log(s):
    p = s.layer_param.log_param
    return [ref.log_layer(s.bottoms[0], p.base, p.scale, p.shift)]


def log_errors():
    cases = exp_errors()
    cases = [(i, _with_params(_bad("Log"), "log_param", {"base": lp.exp_param.base}), b)
             for i, lp, b in cases]
    cases.append(("base-1", _with_params(_bad("Log"), "log_param", {"base": 1.0}), [np.ones(3)]))
    return cases


def draw_power(draw, ctx):
    """Integer powers (0 included) on any base, scale 0 now and then (Caffe's constant case);
    or fractional and negative powers on a base kept >= 0.5 (|scale·x| <= 1.5 < shift)."""
    if draw(st.booleans()):
        values = {"power": draw(st.sampled_from([0.0, 1.0, 2.0, 3.0])),
                  "scale": draw(st.one_of(st.just(0.0), st.floats(-1.5, 1.5, width=32))),
                  "shift": draw(st.floats(-1.0, 1.0, width=32))}
    else:
        values = {"power": draw(st.sampled_from([0.5, 1.5, -1.0, -0.5, 2.5])),
                  "scale": draw(jst.nonzero_floats(0.25, 1.5)),
                  "shift": draw(st.floats(2.0, 3.0, width=32))}
    lp = _with_params(_lp("Power"), "power_param", values)
    return Sample(lp, [_array(draw, ctx, _shape(draw, ctx), -1.0, 1.0)])


def ref_power(s):
    p = s.layer_param.power_param
    return [ref.power(s.bottoms[0], p.power, p.scale, p.shift)]


def draw_prelu(draw, ctx):
    """Slopes of either sign, one per channel (axis 1) or shared; at least one x < 0, so that
    the slope gradient is never trivially 0."""
    shape = _shape(draw, ctx, min_dims=2)
    lp = _lp("PReLU")
    lp.prelu_param.channel_shared = draw(st.booleans())
    slopes = draw(jst.arrays(() if lp.prelu_param.channel_shared else (shape[1],), low=-1.0, high=1.0))
    x = _array(draw, ctx, shape)
    x.flat[0] = -abs(x.flat[0])
    return Sample(lp, [x], params=[slopes])


def ref_prelu(s):
    return [ref.prelu(s.bottoms[0], s.params[0], s.layer_param.prelu_param.channel_shared)]


def prelu_big():
    rng = _rng()
    cases = []
    for shared in (False, True):
        lp = _lp("PReLU", name=f"prelu_shared_{shared}")
        lp.prelu_param.channel_shared = shared
        slopes = rng.uniform(-0.5, 0.5, size=() if shared else (3,))
        cases.append(Big(lp, [rng.normal(size=(20, 3, 11))], [slopes], (True,), id=lp.name))
    return cases


_CLIP_BOUNDS = (-1.0, -0.5, 0.0, 0.5, 1.0, 6.0)


def draw_clip(draw, ctx):
    lo = draw(st.sampled_from(_CLIP_BOUNDS[:3]))
    hi = draw(st.sampled_from(_CLIP_BOUNDS[3:]))
    lp = _with_params(_lp("Clip"), "clip_param", {"min": lo, "max": hi})
    return Sample(lp, [_array(draw, ctx, _shape(draw, ctx))])


def clip_errors():
    lp = _bad("Clip")
    lp.clip_param.min = -1.0                   # max is a required field
    return [("max-unset", lp, [np.ones(3)])]


def draw_threshold(draw, ctx):
    lp = _with_params(_lp("Threshold"), "threshold_param",
                      {"threshold": draw(st.floats(-1.0, 1.0, width=32))})
    return Sample(lp, [_array(draw, ctx, _shape(draw, ctx))], propagate_down=(False,))


# losses
def draw_multinomial_logistic_loss(draw, ctx):
    """Probabilities (not normalized: Caffe does not ask) of any shape (N, ...); in forward
    draws some are 0, which the 1e-20 threshold catches."""
    shape = _shape(draw, ctx)
    dim = math.prod(shape[1:])
    prob = draw(jst.arrays(shape, low=0.05, high=1.0))
    if ctx.purpose == "forward" and draw(st.booleans()):
        prob.flat[::2] = 0.0
    labels = draw(jst.labels(dim, (shape[0],)))
    lp = _lp("MultinomialLogisticLoss", bottoms=("prob", "label"), tops=("loss",))
    return Sample(lp, [prob, labels], propagate_down=(True, False))


def multinomial_logistic_loss_big():
    rng = _rng()
    lp = _lp("MultinomialLogisticLoss", bottoms=("prob", "label"), tops=("loss",))
    prob = rng.uniform(0.01, 1.0, size=(300, 4))
    prob[:5, :] = 0.0
    return [Big(lp, [prob, rng.integers(0, 4, 300).astype(np.float64)], propagate_down=(True, False))]


_infogain_counter = itertools.count()


def draw_infogain_loss(draw, ctx):
    """H (entries in [0, 2]) from a third bottom or a binaryproto file; class axis drawn;
    normalization and ignore_label drawn."""
    ntops = 1 if ctx.purpose == "gradient" else draw(st.integers(1, 2))
    lp, shape, axis, ignore, labels = _class_axis_case(draw, ctx, "InfogainLoss",
                                                       ["loss", "prob"][:ntops], min_axis=1)
    lp.infogain_loss_param.axis = _as_negative(draw, axis, len(shape))
    classes = shape[axis]
    h = draw(jst.arrays((classes, classes), low=0.0, high=2.0))
    if ignore is not None:
        lp.loss_param.ignore_label = ignore
    mode = draw(st.sampled_from(["unset"] + list(_NORM_NAMES)))
    if mode != "unset":
        lp.loss_param.normalization = mode
    bottoms = [_array(draw, ctx, shape, -3.0, 3.0), labels]
    if draw(st.booleans()):
        lp.bottom.append("H")
        bottoms.append(h)
    else:
        path = os.path.join(ctx.workdir, f"infogain_{os.getpid()}_{next(_infogain_counter)}.binaryproto")
        write_blob_proto(h.reshape((1, 1) + h.shape), path)         # Caffe's usual 1x1xCxC
        lp.infogain_loss_param.source = path
    return Sample(lp, bottoms, check_tops=(0,), propagate_down=(True,) + (False,) * (len(bottoms) - 1),
                  extra={"h": h})


def ref_infogain_loss(s):
    lp = s.layer_param
    normalization = (_NORM_NAMES[lp.loss_param.normalization] if lp.loss_param.HasField("normalization")
                     else "VALID")
    ignore = lp.loss_param.ignore_label if lp.loss_param.HasField("ignore_label") else None
    loss, prob = ref.infogain_loss(s.bottoms[0], s.bottoms[1], s.extra["h"], lp.infogain_loss_param.axis,
                                   ignore, normalization)
    return [loss, prob][:len(lp.top)]


def infogain_loss_big():
    rng = _rng()
    labels = rng.integers(0, 3, size=(30, 10)).astype(np.float64)
    labels[0, :4] = -1
    lp = _lp("InfogainLoss", bottoms=("x", "label", "H"), tops=("loss", "prob"))
    lp.loss_param.ignore_label = -1
    return [Big(lp, [rng.normal(size=(30, 3, 10)), labels, rng.uniform(0, 2, size=(3, 3))],
                propagate_down=(True, False, False))]


def infogain_loss_errors():
    lp = _bad("InfogainLoss", bottoms=("x", "label", "H"), tops=("loss",))
    missing = _bad("InfogainLoss", bottoms=("x", "label"), tops=("loss",))
    missing.infogain_loss_param.source = "/nonexistent/infogain.binaryproto"
    unset = _bad("InfogainLoss", bottoms=("x", "label"), tops=("loss",))
    legacy = _bad("InfogainLoss", bottoms=("x", "label", "H"), tops=("loss",))
    legacy.loss_param.normalize = True
    x, labels = np.ones((2, 3)), np.zeros(2)
    return [("H-not-CxC", lp, [x, labels, np.ones((2, 2))]),
            ("missing-source-file", missing, [x, labels]),
            ("no-source", unset, [x, labels]),
            ("label-3", _bad("InfogainLoss", bottoms=("x", "label", "H"), tops=("loss",)),
             [x, np.array([0.0, 3.0]), np.eye(3)]),
            ("legacy-normalize", legacy, [x, labels, np.eye(3)])]


def draw_sigmoid_cross_entropy_loss(draw, ctx):
    shape = _shape(draw, ctx)
    lp = _lp("SigmoidCrossEntropyLoss", bottoms=("x", "target"), tops=("loss",))
    targets = draw(jst.arrays(shape, low=0.0, high=1.0))
    if draw(st.booleans()):
        targets = np.round(targets)                                  # hard 0/1 labels
    if draw(st.booleans()):
        lp.loss_param.ignore_label = draw(st.sampled_from([-1, 255]))
        targets.flat[::3] = lp.loss_param.ignore_label
    mode = draw(st.sampled_from(["unset", "legacy_true", "legacy_false"] + list(_NORM_NAMES)))
    if mode in ("legacy_true", "legacy_false"):
        lp.loss_param.normalize = mode == "legacy_true"
    elif mode != "unset":
        lp.loss_param.normalization = mode
    return Sample(lp, [_array(draw, ctx, shape, -4.0, 4.0), targets], propagate_down=(True, False))


def ref_sigmoid_cross_entropy_loss(s):
    lp = s.layer_param.loss_param
    if lp.HasField("normalization"):
        normalization = _NORM_NAMES[lp.normalization]
    elif lp.HasField("normalize"):
        normalization = "VALID" if lp.normalize else "BATCH_SIZE"
    else:
        normalization = "BATCH_SIZE"
    ignore = lp.ignore_label if lp.HasField("ignore_label") else None
    return [ref.sigmoid_cross_entropy_loss(s.bottoms[0], s.bottoms[1], ignore, normalization)]


def sigmoid_cross_entropy_loss_big():
    rng = _rng()
    targets = rng.uniform(0, 1, size=(5, 130))
    targets[0, :7] = -1
    lp = _lp("SigmoidCrossEntropyLoss", bottoms=("x", "target"), tops=("loss",))
    lp.loss_param.ignore_label = -1
    return [Big(lp, [rng.normal(scale=3.0, size=(5, 130)), targets], propagate_down=(True, False))]


def sigmoid_cross_entropy_loss_errors():
    lp = _bad("SigmoidCrossEntropyLoss", bottoms=("x", "target"), tops=("loss",))
    x = np.ones((2, 3))
    return [("count-mismatch", lp, [x, np.ones((2, 2))]),
            ("target-above-1", lp, [x, np.full((2, 3), 1.5)]),
            ("target-nan", lp, [x, np.full((2, 3), np.nan)])]


def draw_hinge_loss(draw, ctx):
    shape = _shape(draw, ctx)
    dim = math.prod(shape[1:])
    lp = _lp("HingeLoss", bottoms=("x", "label"), tops=("loss",))
    lp.hinge_loss_param.norm = draw(st.sampled_from([pb.HingeLossParameter.L1, pb.HingeLossParameter.L2]))
    return Sample(lp, [_array(draw, ctx, shape), draw(jst.labels(dim, (shape[0],)))],
                  propagate_down=(True, False))


def ref_hinge_loss(s):
    norm = "L2" if s.layer_param.hinge_loss_param.norm == pb.HingeLossParameter.L2 else "L1"
    return [ref.hinge_loss(s.bottoms[0], s.bottoms[1], norm)]


def hinge_loss_big():
    rng = _rng()
    cases = []
    for norm in (pb.HingeLossParameter.L1, pb.HingeLossParameter.L2):
        lp = _lp("HingeLoss", bottoms=("x", "label"), tops=("loss",), name=f"hinge_{norm}")
        lp.hinge_loss_param.norm = norm
        cases.append(Big(lp, [rng.normal(size=(300, 3)), rng.integers(0, 3, 300).astype(np.float64)],
                         propagate_down=(True, False), id=lp.name))
    return cases


def _label_errors(type_name, x):
    """Labels outside the class range and NaN labels: errors naming the layer."""
    lp = _bad(type_name, bottoms=("x", "label"), tops=("loss",))
    return [(f"label-{v}", lp, [x, np.array([0.0, v])]) for v in (3.0, -1.0, np.nan)] + [
        ("label-count", lp, [x, np.zeros(3)])]


def draw_contrastive_loss(draw, ctx):
    """Pairs (N, D) or (N, D, 1, 1); for gradient draws every pair is at least 0.5 apart (the
    1e-4 of Caffe's gradient is then a relative error below 2e-4 of the derivative)."""
    n, dim = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    shape = (n, dim) if draw(st.booleans()) else (n, dim, 1, 1)
    lp = _lp("ContrastiveLoss", bottoms=("a", "b", "sim"), tops=("loss",))
    p = lp.contrastive_loss_param
    p.margin = draw(st.floats(0.5, 3.0, width=32))
    p.legacy_version = draw(st.booleans())
    a, b = _array(draw, ctx, shape, -1.5, 1.5), _array(draw, ctx, shape, -1.5, 1.5)
    if ctx.purpose != "forward":
        for i in range(n):
            if np.linalg.norm(a[i] - b[i]) < 0.5:
                b[i].flat[0] = a[i].flat[0] + 0.75
    values = [0.0, 1.0] + ([0.7, 2.0] if ctx.purpose == "forward" else [])   # int(y) != 0: similar
    sim = np.array(draw(st.lists(st.sampled_from(values), min_size=n, max_size=n)))
    if ctx.purpose != "forward":
        # a dissimilar pair's loss max(margin - d², 0) (legacy) has a kink at d² = margin,
        # where central differences cannot agree with the gradient: keep such pairs 0.25
        # away from it (the smooth max(margin - d, 0)² gets the same treatment, harmlessly)
        for i in np.flatnonzero(sim == 0):
            d = np.linalg.norm(a[i] - b[i])
            q = d * d if p.legacy_version else d
            if abs(q - p.margin) < 0.25:
                want = p.margin + 0.5
                b[i] = a[i] + (b[i] - a[i]) * ((np.sqrt(want) if p.legacy_version else want) / d)
    return Sample(lp, [a, b, sim], propagate_down=(True, True, False))


def ref_contrastive_loss(s):
    p = s.layer_param.contrastive_loss_param
    return [ref.contrastive_loss(*s.bottoms, p.margin, p.legacy_version)]


def contrastive_loss_big():
    rng = _rng()
    cases = []
    for legacy in (False, True):
        lp = _lp("ContrastiveLoss", bottoms=("a", "b", "sim"), tops=("loss",),
                 name=f"contrastive_legacy_{legacy}")
        lp.contrastive_loss_param.margin = 4.0
        lp.contrastive_loss_param.legacy_version = legacy
        cases.append(Big(lp, [rng.normal(size=(300, 2)), rng.normal(size=(300, 2)),
                              rng.integers(0, 2, 300).astype(np.float64)],
                         propagate_down=(True, True, False), id=lp.name))
    return cases


def contrastive_loss_errors():
    lp = _bad("ContrastiveLoss", bottoms=("a", "b", "sim"), tops=("loss",))
    a = np.ones((2, 3))
    return [("dims-differ", lp, [a, np.ones((2, 4)), np.zeros(2)]),
            ("sim-count", lp, [a, a, np.zeros(3)]),
            ("sim-nan", lp, [a, a, np.array([0.0, np.nan])])]




# --------------------------------------------------------------------------- catalogue: utility layers and MVN
def _tops(n, name="y"):
    return [f"{name}{k}" for k in range(n)]


def _bad_with(type_name, message, bottoms=("x",), tops=("y",), **fields):
    """A LayerParameter named "bad" with ``fields`` set in its parameter ``message``
    (lists extend repeated fields)."""
    lp = _bad(type_name, bottoms, tops)
    for name, value in fields.items():
        if isinstance(value, list):
            getattr(getattr(lp, message), name).extend(value)
        else:
            setattr(getattr(lp, message), name, value)
    return lp


def draw_concat(draw, ctx):
    n = draw(st.integers(2 if ctx.purpose == "parity" else 1, 3))
    base = _shape(draw, ctx, max_side=3, max_size=ctx.max_size // n)
    axis = draw(st.integers(0, len(base) - 1))
    shapes = [base[:axis] + (draw(st.integers(1, base[axis])),) + base[axis + 1:] for _ in range(n)]
    lp = _lp("Concat", bottoms=_tops(n, "x"))
    how = draw(st.sampled_from(["axis", "concat_dim", "default"] if axis == 1 else ["axis", "concat_dim"]))
    if how == "axis":
        lp.concat_param.axis = _as_negative(draw, axis, len(base))
    elif how == "concat_dim":
        lp.concat_param.concat_dim = axis
    return Sample(lp, [_array(draw, ctx, s) for s in shapes], propagate_down=(True,) * n,
                  extra={"axis": axis})


def concat_big():
    rng = _rng()
    lp = _lp("Concat", bottoms=("a", "b", "c"))
    return [Big(lp, [rng.normal(size=(3, k, 4, 7)) for k in (2, 5, 1)], propagate_down=(True, True, True))]


def concat_errors():
    def concat(**fields):
        return _bad_with("Concat", "concat_param", bottoms=("a", "b"), **fields)
    both, legacy, axis = concat(axis=1, concat_dim=1), concat(concat_dim=2), concat(axis=-3)
    return [("shapes-differ", _bad("Concat", bottoms=("a", "b")), [np.ones((2, 3)), np.ones((3, 3))]),
            ("axes-differ", _bad("Concat", bottoms=("a", "b")), [np.ones((2, 3)), np.ones((2, 3, 1))]),
            ("axis-and-concat_dim", both, [np.ones((2, 3)), np.ones((2, 3))]),
            ("concat_dim-out-of-range", legacy, [np.ones((2, 3)), np.ones((2, 3))]),
            ("axis-out-of-range", axis, [np.ones((2, 3)), np.ones((2, 3))])]


def draw_slice(draw, ctx):
    lo = 2 if ctx.purpose == "parity" else 1              # one top only shares the bottom
    shape = draw(jst.shapes(min_side=lo, max_side=4, max_size=ctx.max_size))
    axis = draw(st.integers(0, len(shape) - 1))
    dim = shape[axis]
    points = []
    if draw(st.booleans()):
        ntops = draw(st.sampled_from([k for k in range(lo, 4) if dim % k == 0] or [1]))
    else:
        ntops = draw(st.integers(lo, min(dim, 3)))
        points = sorted(draw(st.lists(st.integers(1, dim), min_size=ntops - 1, max_size=ntops - 1,
                                      unique=True)))
    lp = _lp("Slice", tops=_tops(ntops))
    p = lp.slice_param
    p.slice_point.extend(points)
    if draw(st.booleans()):
        p.slice_dim = axis
    elif axis != 1 or draw(st.booleans()):
        p.axis = _as_negative(draw, axis, len(shape))
    return Sample(lp, [_array(draw, ctx, shape)], extra={"axis": axis, "points": points})


def slice_big():
    lp = _lp("Slice", tops=("y0", "y1", "y2"))
    lp.slice_param.slice_point.extend([2, 7])
    return [Big(lp, [_rng().normal(size=(4, 9, 10))], propagate_down=(True,))]


def slice_errors():
    def slicer(points=(), tops=2, **fields):
        return _bad_with("Slice", "slice_param", tops=_tops(tops), slice_point=list(points), **fields)
    x = [np.ones((2, 4))]
    return [("points-not-increasing", slicer([3, 2], 3), x),
            ("point-zero", slicer([0]), x),
            ("point-beyond-axis", slicer([5]), x),
            ("points-for-other-tops", slicer([1, 2], 2), x),
            ("more-tops-than-axis", slicer([1, 2, 3, 4], 5), x),
            ("uneven-parts", slicer(tops=3), x),
            ("axis-and-slice_dim", slicer(axis=1, slice_dim=1), x),
            ("slice_dim-out-of-range", slicer(slice_dim=2), x)]


_ELTWISE_OPS = {"PROD": pb.EltwiseParameter.PROD, "SUM": pb.EltwiseParameter.SUM,
                "MAX": pb.EltwiseParameter.MAX}


def draw_eltwise(draw, ctx):
    n = draw(st.integers(2, 3))
    shape = _shape(draw, ctx, max_size=ctx.max_size // n)
    op = draw(st.sampled_from(sorted(_ELTWISE_OPS)))
    lp = _lp("Eltwise", bottoms=_tops(n, "x"))
    p = lp.eltwise_param
    if op != "SUM" or draw(st.booleans()):
        p.operation = _ELTWISE_OPS[op]
    coeffs = None
    if op == "SUM" and draw(st.booleans()):
        coeffs = [draw(st.floats(-2.0, 2.0, width=32)) for _ in range(n)]
        p.coeff.extend(coeffs)
    if op == "PROD":
        p.stable_prod_grad = draw(st.booleans())
    bottoms = [_array(draw, ctx, shape) for _ in range(n)]
    if op == "MAX" and ctx.purpose != "gradient" and draw(st.booleans()):
        bottoms = [np.round(b) for b in bottoms]          # ties: the winner decides the backward
    return Sample(lp, bottoms, propagate_down=(True,) * n, extra={"op": op, "coeffs": list(p.coeff) or None})


def eltwise_big():
    rng, cases = _rng(), []
    for op, fields in (("SUM", {}), ("PROD", {"stable_prod_grad": True}),
                       ("PROD", {"stable_prod_grad": False}), ("MAX", {})):
        lp = _lp("Eltwise", bottoms=("a", "b", "c"), name=f"eltwise_{op}_{len(cases)}")
        lp.eltwise_param.operation = _ELTWISE_OPS[op]
        for name, value in fields.items():
            setattr(lp.eltwise_param, name, value)
        if op == "SUM":
            lp.eltwise_param.coeff.extend([0.5, -1.0, 2.0])
        bottoms = [rng.uniform(0.5, 1.5, size=(3, 110)) * rng.choice([-1, 1], size=(3, 110))
                   for _ in range(3)]
        if op == "MAX":
            bottoms[1][:, :20] = bottoms[0][:, :20]          # ties between bottoms 0 and 1
            bottoms[2][:, 10:30] = np.maximum(bottoms[0], bottoms[1])[:, 10:30]
        cases.append(Big(lp, bottoms, propagate_down=(True, True, True), id=lp.name))
    return cases


def eltwise_errors():
    coeff = _bad_with("Eltwise", "eltwise_param", bottoms=("a", "b"), coeff=[1.0, 2.0, 3.0])
    prod = _bad_with("Eltwise", "eltwise_param", bottoms=("a", "b"), coeff=[1.0, 2.0],
                     operation=pb.EltwiseParameter.PROD)
    return [("shapes-differ", _bad("Eltwise", bottoms=("a", "b")), [np.ones((2, 3)), np.ones((3, 2))]),
            ("coeff-count", coeff, [np.ones(3), np.ones(3)]),
            ("coeff-with-prod", prod, [np.ones(3), np.ones(3)])]


def draw_tile(draw, ctx):
    tiles = draw(st.integers(1, 3))
    shape = _shape(draw, ctx, max_size=ctx.max_size // tiles)
    axis = draw(st.integers(0, len(shape) - 1))
    lp = _lp("Tile")
    lp.tile_param.tiles = tiles
    if axis != 1 or draw(st.booleans()):
        lp.tile_param.axis = _as_negative(draw, axis, len(shape))
    return Sample(lp, [_array(draw, ctx, shape)], extra={"axis": axis})


def tile_big():
    lp = _lp("Tile")
    lp.tile_param.axis, lp.tile_param.tiles = 1, 3
    return [Big(lp, [_rng().normal(size=(4, 5, 6))], propagate_down=(True,))]


def tile_errors():
    return [("axis-out-of-range", _bad_with("Tile", "tile_param", axis=2, tiles=2), [np.ones((2, 3))]),
            ("no-tiles", _bad_with("Tile", "tile_param"), [np.ones((2, 3))]),
            ("tiles-0", _bad_with("Tile", "tile_param", tiles=0), [np.ones((2, 3))])]


_REDUCTION_OPS = {"SUM": pb.ReductionParameter.SUM, "ASUM": pb.ReductionParameter.ASUM,
                  "SUMSQ": pb.ReductionParameter.SUMSQ, "MEAN": pb.ReductionParameter.MEAN}


def draw_reduction(draw, ctx):
    shape = _shape(draw, ctx)
    axis = draw(st.integers(0, len(shape) - 1))
    op = draw(st.sampled_from(sorted(_REDUCTION_OPS)))
    lp = _lp("Reduction")
    p = lp.reduction_param
    if op != "SUM" or draw(st.booleans()):
        p.operation = _REDUCTION_OPS[op]
    if axis != 0 or draw(st.booleans()):
        p.axis = _as_negative(draw, axis, len(shape))
    if draw(st.booleans()):
        p.coeff = draw(st.sampled_from([-0.5, 2.0, 0.3]))
    return Sample(lp, [_array(draw, ctx, shape)], extra={"op": op, "axis": axis})


def reduction_big():
    rng, cases = _rng(), []
    # SUMSQ over 4100 values: a row in two splits (two blocks, then the finishing pass)
    for op, axis, shape in (("ASUM", 1, (3, 110)), ("SUMSQ", 0, (41, 100)), ("MEAN", 2, (2, 3, 50))):
        lp = _lp("Reduction", name=f"reduction_{op}")
        p = lp.reduction_param
        p.operation, p.axis, p.coeff = _REDUCTION_OPS[op], axis, 0.75
        cases.append(Big(lp, [rng.normal(size=shape)], propagate_down=(True,), id=lp.name))
    return cases


def reduction_errors():
    return [("axis-out-of-range", _bad_with("Reduction", "reduction_param", axis=2), [np.ones((2, 3))]),
            ("0-D-bottom", _bad("Reduction"), [np.array(1.0)])]


def draw_argmax(draw, ctx):
    shape = _shape(draw, ctx)
    lp = _lp("ArgMax")
    p = lp.argmax_param
    p.out_max_val = draw(st.booleans())
    if draw(st.booleans()):
        axis = draw(st.integers(0, len(shape) - 1))
        p.axis = _as_negative(draw, axis, len(shape))
        dim = shape[axis]
    else:
        dim = math.prod(shape[1:])
    k = draw(st.integers(1, dim))
    if k != 1 or draw(st.booleans()):
        p.top_k = k
    x = _array(draw, ctx, shape)
    if draw(st.booleans()):
        x = np.round(x)                  # ties: the larger index ranks first
    return Sample(lp, [x])


def argmax_big():
    rng, cases = _rng(), []
    for name, axis in (("argmax_flat", None), ("argmax_axis", 1)):
        lp = _lp("ArgMax", name=name)
        lp.argmax_param.top_k, lp.argmax_param.out_max_val = 3, True
        if axis is not None:
            lp.argmax_param.axis = axis
        cases.append(Big(lp, [np.round(rng.normal(size=(4, 30, 10)) * 2)], propagate_down=(False,),
                         id=name))
    return cases


def argmax_errors():
    def argmax(**fields):
        return _bad_with("ArgMax", "argmax_param", **fields)
    return [("top_k-above-count", argmax(top_k=7), [np.ones((2, 3, 2))]),
            ("top_k-above-axis", argmax(top_k=4, axis=1), [np.ones((2, 3, 2))]),
            ("top_k-0", argmax(top_k=0), [np.ones((2, 3))]),
            ("axis-out-of-range", argmax(axis=3), [np.ones((2, 3))]),
            ("0-D-bottom", argmax(), [np.array(1.0)])]


def draw_batch_reindex(draw, ctx):
    shape = _shape(draw, ctx, max_size=ctx.max_size // 2)
    n = draw(st.integers(0 if ctx.purpose == "forward" else 1, 5))
    rows = draw(st.lists(st.integers(0, shape[0] - 1), min_size=n, max_size=n))
    indices = np.array(rows, dtype=np.float64)
    if ctx.purpose == "forward" and draw(st.booleans()):
        indices += 0.5                   # Caffe truncates (static_cast<int>)
    lp = _lp("BatchReindex", bottoms=("x", "idx"))
    return Sample(lp, [_array(draw, ctx, shape), indices], propagate_down=(True, False))


def batch_reindex_big():
    rng = _rng()
    indices = np.array([5, 0, 5, 2, 2, 2, 1, 4, 5], dtype=np.float64)
    return [Big(_lp("BatchReindex", bottoms=("x", "idx")), [rng.normal(size=(6, 5, 11)), indices],
                propagate_down=(True, False))]


def batch_reindex_errors():
    x = np.ones((3, 2))
    return [("index-too-large", _bad("BatchReindex", bottoms=("x", "i")), [x, np.array([0.0, 3.0])]),
            ("index-negative", _bad("BatchReindex", bottoms=("x", "i")), [x, np.array([-1.0])]),
            ("index-nan", _bad("BatchReindex", bottoms=("x", "i")), [x, np.array([np.nan])]),
            ("indices-2-D", _bad("BatchReindex", bottoms=("x", "i")), [x, np.zeros((2, 1))])]


def draw_filter(draw, ctx):
    n = draw(st.integers(1, 2))
    rows = draw(st.integers(1, 4))
    shapes = [(rows,) + _shape(draw, ctx, min_dims=0, max_dims=2, max_side=3,
                               max_size=ctx.max_size // (rows * n)) for _ in range(n)]
    selector_shape = (rows,) + (1,) * draw(st.integers(0, 2))
    selector = np.array(draw(st.lists(st.sampled_from([0.0, 1.0, -2.0]), min_size=rows, max_size=rows)))
    lp = _lp("Filter", bottoms=_tops(n, "x") + ["selector"], tops=_tops(n))
    return Sample(lp, [_array(draw, ctx, s) for s in shapes] + [selector.reshape(selector_shape)],
                  propagate_down=(True,) * n + (False,))


def filter_big():
    rng = _rng()
    selector = (np.arange(12) % 3 != 1).astype(np.float64).reshape(12, 1)
    lp = _lp("Filter", bottoms=("a", "b", "sel"), tops=("ya", "yb"))
    return [Big(lp, [rng.normal(size=(12, 30)), rng.normal(size=(12, 2, 3)), selector],
                propagate_down=(True, True, False))]


def filter_errors():
    return [("tops-not-bottoms-minus-1", _bad("Filter", bottoms=("a", "s"), tops=("y", "z")),
             [np.ones((2, 3)), np.ones(2)]),
            ("selector-not-singleton", _bad("Filter", bottoms=("a", "s")), [np.ones((2, 3)), np.ones((2, 2))]),
            ("first-dims-differ", _bad("Filter", bottoms=("a", "s")), [np.ones((3, 3)), np.ones(2)])]


def draw_silence(draw, ctx):
    n = draw(st.integers(1, 3))
    lp = _lp("Silence", bottoms=_tops(n, "x"), tops=())
    return Sample(lp, [_array(draw, ctx, _shape(draw, ctx, max_size=ctx.max_size // n)) for _ in range(n)],
                  propagate_down=(True,) * n)


def silence_big():
    rng = _rng()
    return [Big(_lp("Silence", bottoms=("a", "b"), tops=()), [rng.normal(size=300), rng.normal(size=(2, 3))],
                propagate_down=(True, False))]


def draw_parameter(draw, ctx):
    shape = _shape(draw, ctx, min_dims=0)
    lp = _lp("Parameter", bottoms=())
    lp.parameter_param.shape.dim.extend(shape)
    return Sample(lp, [], params=[_array(draw, ctx, shape)])


def parameter_big():
    lp = _lp("Parameter", bottoms=())
    lp.parameter_param.shape.dim.extend([20, 15])
    return [Big(lp, [], params=[_rng().normal(size=(20, 15))])]


def parameter_errors():
    lp = _bad("Parameter", bottoms=())
    lp.parameter_param.shape.dim.extend([2, -1])
    return [("negative-dim", lp, [])]


def draw_embed(draw, ctx):
    shape = _shape(draw, ctx, min_dims=0, max_dims=3, max_size=8)
    vocab, n = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    indices = draw(jst.labels(vocab, shape))
    lp = _lp("Embed")
    p = lp.embed_param
    p.input_dim, p.num_output = vocab, n
    p.bias_term = draw(st.booleans())
    params = [draw(jst.arrays((vocab, n), low=-1.5, high=1.5))]
    if p.bias_term:
        params.append(draw(jst.arrays((n,), low=-1.5, high=1.5)))
    return Sample(lp, [indices], params=params, propagate_down=(False,))


def embed_big():
    rng = _rng()
    lp = _lp("Embed")
    lp.embed_param.input_dim, lp.embed_param.num_output = 7, 9
    indices = rng.integers(0, 5, size=(12, 3)).astype(np.float64)      # rows 5, 6 unused
    return [Big(lp, [indices], params=[rng.normal(size=(7, 9)), rng.normal(size=9)],
                propagate_down=(False,))]


def embed_errors():
    def embed(input_dim=4, num_output=3):
        return _bad_with("Embed", "embed_param", input_dim=input_dim, num_output=num_output)
    return [("index-too-large", embed(), [np.array([0.0, 4.0])]),
            ("index-negative", embed(), [np.array([-1.0, 2.0])]),
            ("index-not-integer", embed(), [np.array([1.5])]),
            ("index-nan", embed(), [np.array([np.nan])]),
            ("num_output-0", embed(num_output=0), [np.zeros(2)]),
            ("input_dim-0", embed(input_dim=0), [np.zeros(2)])]


def draw_mvn(draw, ctx):
    shape = _shape(draw, ctx)
    lp = _lp("MVN")
    p = lp.mvn_param
    if draw(st.booleans()):
        p.normalize_variance = draw(st.booleans())
    if draw(st.booleans()):
        p.across_channels = draw(st.booleans())
    if ctx.purpose != "gradient" and draw(st.booleans()):
        # (Caffe's backward is exact only for eps ≪ σ: test_catalogue_utility checks it with these)
        p.eps = draw(st.sampled_from([1e-3, 0.1]))
    spread = _spread(shape, range(1 if p.across_channels else 2, len(shape)))
    return Sample(lp, [_array(draw, ctx, shape, -1.0, 1.0) + spread])


def mvn_big():
    rng, cases = _rng(), []
    for across in (False, True):
        lp = _lp("MVN", name=f"mvn_across_{across}")
        lp.mvn_param.across_channels = across
        cases.append(Big(lp, [rng.normal(size=(2, 3, 7, 7))], propagate_down=(True,), id=lp.name))
    return cases


def mvn_errors():
    return [("5-D-bottom", _bad("MVN"), [np.ones((1, 2, 1, 2, 2))])]


def ref_mvn(s):
    p = s.layer_param.mvn_param
    return [ref.mvn(s.bottoms[0], p.normalize_variance, p.across_channels, p.eps)]


def _torch_mvn(F, x, p):
    return F.instance_norm(x, eps=1e-9)


def _torch_concat(F, xs, p):
    import torch
    return torch.cat(xs, 1)


def _torch_slice(F, x, p):
    return [t.contiguous() for t in x.split([64, 128, 32, 32], 1)]


_GOOGLENET_3A = ((10, 64, 28, 28), (10, 128, 28, 28), (10, 32, 28, 28), (10, 32, 28, 28))


# --------------------------------------------------------------------------- data pipeline (issue 12)
_data_counter = itertools.count()


def _data_tag():
    return f"{os.getpid()}_{next(_data_counter)}"


def _png_bytes(image):
    """PNG bytes of a (C, H, W) uint8 image with C = 1 (grey) or 3 (BGR planes), written
    with Pillow directly (independently of jitnet's encoder)."""
    import io as _io
    from PIL import Image
    pil = (Image.fromarray(image[0], "L") if image.shape[0] == 1
           else Image.fromarray(np.ascontiguousarray(image[::-1].transpose(1, 2, 0)), "RGB"))
    out = _io.BytesIO()
    pil.save(out, "PNG")
    return out.getvalue()


def _draw_transform(draw, lp, channels, height, width, ctx, allow_crop=True):
    """transform_param: scale, a mean (none, mean_value one or per channel, or a mean file),
    a centre crop (the phase is TEST when cropping). Returns the mean array or values."""
    t = lp.transform_param
    if draw(st.booleans()):
        t.scale = draw(st.sampled_from([0.5, 0.00390625, 2.0]))
    kind = draw(st.sampled_from(["none", "one", "per-channel", "file"]))
    mean = None
    if kind == "one":
        t.mean_value.append(draw(st.sampled_from([10.0, 127.5])))
    elif kind == "per-channel":
        t.mean_value.extend(draw(st.lists(st.sampled_from([3.0, 100.25, 200.0]),
                                          min_size=channels, max_size=channels)))
    elif kind == "file":
        mean = np.asarray(draw(jst.arrays((channels, height, width), low=0.0, high=255.0)),
                          np.float32)
        path = os.path.join(ctx.workdir, f"mean_{_data_tag()}.binaryproto")
        blob = pb.BlobProto(num=1, channels=channels, height=height, width=width)
        blob.data.extend(mean.ravel().tolist())
        with open(path, "wb") as f:
            f.write(blob.SerializeToString())
        t.mean_file = path
    if allow_crop and draw(st.booleans()):
        t.crop_size = draw(st.integers(1, min(height, width)))
    return mean


def _expected_transform(s, images):
    t = s.layer_param.transform_param
    out = []
    for image in images:
        _, H, W = image.shape
        h0, w0, _ = ref.caffe_crop_offsets(H, W, t.crop_size, False, (0, 0, 0))
        out.append(ref.caffe_transform(image, t.crop_size, h0, w0, False, s.extra.get("mean"),
                                       list(t.mean_value), t.scale))
    return np.stack(out)


def draw_data(draw, ctx):
    """An LMDB of 1-5 records (raw bytes, float_data or PNG), read in batches of 1-6 that
    may wrap around; transform_param drawn; TEST phase (the centre crop)."""
    import lmdb
    n = draw(st.integers(1, 5))
    c = draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kind = draw(st.sampled_from(["raw", "float", "png"]))
    images = [np.asarray(draw(jst.arrays((c, h, w), low=0.0, high=255.0))) for _ in range(n)]
    images = [im.round().astype(np.uint8) if kind != "float" else im.astype(np.float32)
              for im in images]
    labels = [draw(st.integers(0, 9)) for _ in range(n)]
    path = os.path.join(ctx.workdir, f"lmdb_{_data_tag()}")
    env = lmdb.open(path, map_size=1 << 22)
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(zip(images, labels)):
            datum = pb.Datum(label=label)
            if kind == "png":
                datum.data, datum.encoded = _png_bytes(image), True
            else:
                datum.channels, datum.height, datum.width = c, h, w
                if kind == "raw":
                    datum.data = image.tobytes()
                else:
                    datum.float_data.extend(image.ravel().tolist())
            txn.put(f"{i:08d}_img{i}".encode(), datum.SerializeToString())
    env.close()
    ntops = draw(st.integers(1, 2))
    lp = _lp("Data", bottoms=(), tops=("data", "label")[:ntops])
    lp.data_param.source, lp.data_param.backend = path, pb.DataParameter.LMDB
    lp.data_param.batch_size = draw(st.integers(1, 6))
    lp.data_param.prefetch = draw(st.sampled_from([0, 1, 4]))
    mean = _draw_transform(draw, lp, c, h, w, ctx)
    return Sample(lp, [], phase=jitnet.TEST,
                  extra={"images": images, "labels": labels, "mean": mean})


def ref_data(s):
    rows = np.arange(s.layer_param.data_param.batch_size) % len(s.extra["images"])
    data = _expected_transform(s, [s.extra["images"][r] for r in rows])
    labels = np.asarray(s.extra["labels"], np.float64)[rows]
    return [data, labels][:len(s.layer_param.top)]


def data_errors():
    def lp(**fields):
        p = _bad("Data", bottoms=(), tops=("data", "label"))
        p.data_param.backend = pb.DataParameter.LMDB
        p.data_param.batch_size = fields.pop("batch_size", 2)
        p.data_param.source = fields.pop("source", "/nonexistent/lmdb")
        for name, value in fields.items():
            getattr(p.transform_param, name).extend(value) if name == "mean_value" else \
                setattr(p.transform_param, name, value)
        return p
    return [("batch-0", lp(batch_size=0), []), ("missing-db", lp(), []),
            ("no-source", lp(source=""), []),
            ("mean-file-and-value", lp(mean_file="m.binaryproto", mean_value=[1.0]), []),
            ("force-color-and-gray", lp(force_color=True, force_gray=True), [])]


def draw_image_data(draw, ctx):
    """1-4 PNG files (grey or colour) listed with labels; read in colour or grey (grey
    pictures only when is_color is false), batches of 1-5 wrapping around."""
    n = draw(st.integers(1, 4))
    c = draw(st.sampled_from([1, 3]))
    is_color = c == 3 or draw(st.booleans())
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    tag = _data_tag()
    folder = os.path.join(ctx.workdir, f"images_{tag}")
    os.makedirs(folder)
    images, labels, lines = [], [], []
    for i in range(n):
        image = np.asarray(draw(jst.arrays((c, h, w), low=0.0, high=255.0))).round().astype(np.uint8)
        with open(os.path.join(folder, f"im {i}.png"), "wb") as f:       # a space in the name
            f.write(_png_bytes(image))
        images.append(np.repeat(image, 3, axis=0) if is_color and c == 1 else image)
        labels.append(draw(st.integers(-2, 9)))
        lines.append(f"im {i}.png {labels[-1]}")
    source = os.path.join(ctx.workdir, f"list_{tag}.txt")
    with open(source, "w") as f:
        f.write("\n".join(lines) + "\n")
    lp = _lp("ImageData", bottoms=(), tops=("data", "label"))
    p = lp.image_data_param
    p.source, p.root_folder, p.is_color = source, folder + "/", is_color
    p.batch_size = draw(st.integers(1, 5))
    mean = _draw_transform(draw, lp, 3 if is_color else 1, h, w, ctx)
    return Sample(lp, [], phase=jitnet.TEST, extra={"images": images, "labels": labels, "mean": mean})


def ref_image_data(s):
    rows = np.arange(s.layer_param.image_data_param.batch_size) % len(s.extra["images"])
    return [_expected_transform(s, [s.extra["images"][r] for r in rows]),
            np.asarray(s.extra["labels"], np.float64)[rows]]


def image_data_errors():
    missing = _bad("ImageData", bottoms=(), tops=("data", "label"))
    missing.image_data_param.source = "/nonexistent/list.txt"
    half = _bad("ImageData", bottoms=(), tops=("data", "label"))
    half.image_data_param.source = "/nonexistent/list.txt"
    half.image_data_param.new_height = 4
    return [("missing-list", missing, []), ("new-height-only", half, [])]


def draw_window_data(draw, ctx):
    """One colour image, one background and one foreground window (so the sampling has one
    choice), warped to crop_size with context padding, square or warp mode; no mirror."""
    H, W = draw(st.integers(4, 9)), draw(st.integers(4, 9))
    image = np.asarray(draw(jst.arrays((3, H, W), low=0.0, high=255.0))).round().astype(np.uint8)
    tag = _data_tag()
    path = os.path.join(ctx.workdir, f"window_{tag}.png")
    with open(path, "wb") as f:
        f.write(_png_bytes(image))

    def box():
        x1, y1 = draw(st.integers(0, W - 1)), draw(st.integers(0, H - 1))
        return x1, y1, draw(st.integers(x1, W - 1)), draw(st.integers(y1, H - 1))
    fg, bg = box(), box()
    label = draw(st.integers(1, 5))
    window_file = os.path.join(ctx.workdir, f"windows_{tag}.txt")
    with open(window_file, "w") as f:
        f.write(f"# 0\n{path}\n3\n{H}\n{W}\n2\n{label} 0.9 {' '.join(map(str, fg))}\n"
                f"7 0.1 {' '.join(map(str, bg))}\n")
    lp = _lp("WindowData", bottoms=(), tops=("data", "label"))
    p = lp.window_data_param
    p.source, p.batch_size = window_file, draw(st.integers(1, 4))
    p.fg_fraction = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]))
    p.context_pad = draw(st.sampled_from([0, 1]))
    p.crop_mode = draw(st.sampled_from(["warp", "square"]))
    p.scale = draw(st.sampled_from([1.0, 0.5]))
    lp.transform_param.crop_size = draw(st.integers(3, 6))
    if draw(st.booleans()):
        lp.transform_param.mean_value.extend([20.0, 40.0, 60.0])
    return Sample(lp, [], extra={"image": image, "fg": fg, "bg": bg, "label": label})


def ref_window_data(s):
    p, t = s.layer_param.window_data_param, s.layer_param.transform_param
    num_fg = int(np.float32(p.batch_size) * np.float32(p.fg_fraction))
    rows, labels = [], []
    for is_fg in [False] * (p.batch_size - num_fg) + [True] * num_fg:
        rows.append(ref.window_warp(s.extra["image"], s.extra["fg" if is_fg else "bg"], t.crop_size,
                                    p.context_pad, p.crop_mode == "square", False, None,
                                    list(t.mean_value), p.scale))
        labels.append(s.extra["label"] if is_fg else 0)
    return [np.stack(rows), np.asarray(labels, np.float64)]


def window_data_errors():
    lp = _bad("WindowData", bottoms=(), tops=("data", "label"))
    lp.window_data_param.source = "/nonexistent/windows.txt"
    lp.window_data_param.batch_size = 2
    no_crop = _bad("WindowData", bottoms=(), tops=("data", "label"))
    no_crop.window_data_param.batch_size = 2
    return [("missing-window-file", lp, []), ("no-source", no_crop, [])]


def draw_hdf5_output(draw, ctx):
    shape = _shape(draw, ctx, min_dims=1, max_dims=4, max_side=3)
    data = _array(draw, ctx, shape)
    label = _array(draw, ctx, (shape[0],) + _shape(draw, ctx, min_dims=0, max_dims=1, max_side=2))
    lp = _lp("HDF5Output", bottoms=("data", "label"), tops=())
    lp.hdf5_output_param.file_name = os.path.join(ctx.workdir, f"out_{_data_tag()}.h5")
    return Sample(lp, [data, label])


def ref_hdf5_output(s):
    """No tops; the file holds the bottoms as 4-D "data" and "label" datasets."""
    with h5py.File(s.layer_param.hdf5_output_param.file_name, "r") as f:
        for name, bottom in zip(("data", "label"), s.bottoms):
            bottom = np.asarray(bottom)
            want = bottom.reshape(bottom.shape + (1,) * (4 - bottom.ndim))
            assert f[name].shape == want.shape, (name, f[name].shape, want.shape)
            np.testing.assert_array_equal(f[name][...], want, err_msg=name)
    return []


def hdf5_output_errors():
    return [("no-file-name", _bad("HDF5Output", bottoms=("a", "b"), tops=()),
             [np.ones((2, 3)), np.ones(2)])]




# --------------------------------------------------------------------------- Python layer (issue 11)
def _python_lp(layer="ScaleShift", module="pycaffe_user_layers", param_str="", name=None,
               bottoms=("x",), tops=("y",)):
    lp = _lp("Python", bottoms, tops, name)
    lp.python_param.module, lp.python_param.layer = module, layer
    lp.python_param.param_str = param_str
    return lp


def draw_python(draw, ctx):
    """The user's ScaleShift (tests/pycaffe_user_layers.py): y = a·x + b, a and b learnable."""
    x = _array(draw, ctx, _shape(draw, ctx, min_dims=0, max_size=ctx.max_size))
    a, b = (draw(st.floats(-2.0, 2.0).filter(lambda v: abs(v) > 0.1)) for _ in range(2))
    lp = _python_lp(param_str=f'{{"a": {draw(st.floats(-1, 1))}, "b": 0.25}}')
    return Sample(lp, [x], params=[np.array([a]), np.array([b])])


def python_errors():
    x = [np.ones((2, 3))]
    return [("no-module", _python_lp(module="no_such_module_anywhere", name="bad"), x),
            ("no-class", _python_lp(layer="NoSuchLayer", name="bad"), x),
            ("module-unset", _python_lp(module="", name="bad"), x),
            ("setup-raises", _python_lp(layer="RefusesInSetup", name="bad"), x)]




# --------------------------------------------------------------------------- recurrent (issue 13)
_RECURRENT = {     # type: (initial state bottoms, output and final state tops, gate rows per unit)
    "LSTM": (("h_0", "c_0"), ("h", "h_T", "c_T"), 4),
    "RNN": (("h_0",), ("o", "h_T"), 1),
}


def _cont(draw, steps, num, first_zero=False, fractional=False):
    """Sequence-continuation markers (T, N): 1 where a stream goes on, 0 where a sequence starts
    (also mid-sequence); all 0 at t = 0 with ``first_zero`` (then the state an earlier forward
    left does not count); some 0.5 with ``fractional`` (Caffe's formulas take any value, its
    gradient is exact for 0 and 1)."""
    values = [0.0, 1.0, 1.0] + [0.5] * fractional
    cont = np.array(draw(st.lists(st.sampled_from(values), min_size=steps * num,
                                  max_size=steps * num)), dtype=np.float64).reshape(steps, num)
    if first_zero:
        cont[0] = 0.0
    return cont


def recurrent_lp(type_name, hidden, static=False, expose=False, name=None):
    states, tops, _ = _RECURRENT[type_name]
    lp = _lp(type_name, bottoms=["x", "cont"] + ["x_static"] * static + list(states) * expose,
             tops=list(tops[:1 + len(states) * expose]), name=name)
    lp.recurrent_param.num_output = hidden
    lp.recurrent_param.expose_hidden = expose
    return lp


def recurrent_params(rng_array, type_name, hidden, features, static_features=None):
    """The learnable blobs in Caffe's order, each drawn by ``rng_array(shape)``."""
    rows = _RECURRENT[type_name][2] * hidden
    shapes = [(rows, features), (rows,)] + [(rows, static_features)] * (static_features is not None)
    shapes += [(rows, hidden)] if type_name == "LSTM" else [(hidden, hidden), (hidden, hidden), (hidden,)]
    return [rng_array(shape) for shape in shapes]


def draw_recurrent(type_name):
    """LSTM / RNN samples: T, N, the feature axes, H, a static input and expose_hidden drawn; cont
    with resets mid-sequence; propagate_down to every bottom but cont."""
    def draw_sample(draw, ctx):
        tiny = ctx.purpose == "parity"
        steps, num = draw(st.integers(1, 3)), draw(st.integers(1, 2 if tiny else 3))
        hidden = draw(st.integers(1, 2 if tiny else 3))
        features = draw(jst.shapes(min_dims=1, max_dims=2, max_side=3, max_size=2 if tiny else 4))
        static, expose = draw(st.booleans()), draw(st.booleans())
        lp = recurrent_lp(type_name, hidden, static, expose)
        bottoms = [_array(draw, ctx, (steps, num) + features),
                   _cont(draw, steps, num, first_zero=not expose and ctx.purpose == "gradient",
                         fractional=ctx.purpose == "forward")]
        static_features = None
        if static:
            shape = (num,) + draw(jst.shapes(min_dims=1, max_dims=2, max_side=2))
            bottoms.append(_array(draw, ctx, shape))
            static_features = math.prod(shape[1:])
        states = _RECURRENT[type_name][0] if expose else ()
        bottoms += [_array(draw, ctx, (1, num, hidden), -1.0, 1.0) for _ in states]
        params = recurrent_params(lambda s: draw(jst.arrays(s, low=-1.0, high=1.0)), type_name, hidden,
                                  math.prod(features), static_features)
        return Sample(lp, bottoms, params=params, propagate_down=tuple(i != 1 for i in range(len(bottoms))),
                      extra={"static": static, "expose": expose})
    return draw_sample


def ref_recurrent(s):
    """The oracle's tops for a sample of draw_recurrent (or any LSTM/RNN LayerParameter)."""
    lp, p, b = s.layer_param, s.params, s.bottoms
    static = len(lp.bottom) > 2 + len(_RECURRENT[lp.type][0]) * lp.recurrent_param.expose_hidden
    x_static, w_static = (b[2], p[2]) if static else (None, None)
    states = b[2 + static:]
    if lp.type == "LSTM":
        h, h_T, c_T = ref.lstm(b[0], b[1], p[0], p[1], p[-1], x_static, w_static, *states)
        return [h, h_T, c_T] if states else [h]
    o, h_T = ref.rnn(b[0], b[1], p[0], p[1], *p[-3:], x_static, w_static, *states)
    return [o, h_T] if states else [o]


def lstm_big():
    """Past one GPU block: N·H = 272 units (the fused engine's pointwise kernels run one thread a
    value), with a static input and the exposed state, so every kernel of the engine runs. The
    GEMMs are blas's (checked past a tile in test_kernels.py); the shapes stay small because the
    simulator runs one Python thread per value. The unrolled LSTM and the RNN run layers whose
    kernels have their own rows here."""
    rng = _rng()
    steps, num, hidden, features = 2, 16, 17, 3
    lp = recurrent_lp("LSTM", hidden, static=True, expose=True, name="lstm_static_expose")
    cont = np.ones((steps, num))
    cont[0, :5] = cont[1, 9] = 0.0
    bottoms = [rng.normal(size=(steps, num, features)), cont, rng.normal(size=(num, 2))]
    bottoms += [rng.normal(size=(1, num, hidden)) for _ in range(2)]
    params = recurrent_params(lambda s: rng.normal(scale=0.2, size=s), "LSTM", hidden, features, 2)
    return [Big(lp, bottoms, params, tuple(i != 1 for i in range(len(bottoms))), id=lp.name)]


def recurrent_errors(type_name):
    """Bad inputs, each a LayerError naming the layer (the wrong number of bottoms for
    expose_hidden is a NetDefinitionError: tests/test_recurrent.py)."""
    def errors():
        x, cont = np.ones((3, 2, 4)), np.ones((3, 2))
        zero = recurrent_lp(type_name, 2, name="bad")
        zero.recurrent_param.num_output = 0
        states = [np.zeros((1, 2, 2)) for _ in _RECURRENT[type_name][0]]
        wrong_state = [np.zeros((1, 2, 3))] + states[1:]
        return [("num_output-0", zero, [x, cont]),
                ("cont-wrong-shape", recurrent_lp(type_name, 2, name="bad"), [x, np.ones((3, 3))]),
                ("cont-3-axes", recurrent_lp(type_name, 2, name="bad"), [x, np.ones((3, 2, 1))]),
                ("x-1-axis", recurrent_lp(type_name, 2, name="bad"), [np.ones(3), np.ones((3, 1))]),
                ("x-2-axes", recurrent_lp(type_name, 2, name="bad"), [np.ones((3, 2)), cont]),
                ("static-wrong-streams", recurrent_lp(type_name, 2, static=True, name="bad"),
                 [x, cont, np.ones((3, 2))]),
                ("state-wrong-shape", recurrent_lp(type_name, 2, expose=True, name="bad"),
                 [x, cont] + wrong_state)]
    return errors


# The gradient rows of LSTM and RNN (x and the parameters) run in the thorough profile:
# tests/test_recurrent.py checks the gradients to every input and parameter, for both LSTM
# engines, in every profile. Their drawn GPU parity in float32 too (the simulator is slow):
# float64 runs in every profile, and so does the LSTM's big float32 row.
_RECURRENT_MARKS = {"gradients": (pytest.mark.slow,), "gpu[float32]": (pytest.mark.slow,)}


def draw_lstm_unit(draw, ctx):
    num, hidden = draw(st.integers(1, 3)), draw(st.integers(1, 2 if ctx.purpose == "parity" else 3))
    lp = _lp("LSTMUnit", bottoms=("c_prev", "x", "cont"), tops=("c", "h"))
    bottoms = [_array(draw, ctx, (1, num, hidden)), _array(draw, ctx, (1, num, 4 * hidden)),
               _cont(draw, 1, num, fractional=ctx.purpose == "forward")]
    return Sample(lp, bottoms, propagate_down=(True, True, False))


def lstm_unit_big():
    rng = _rng()
    cont = np.ones((1, 6))
    cont[0, 2] = 0.0
    lp = _lp("LSTMUnit", bottoms=("c_prev", "x", "cont"), tops=("c", "h"))
    return [Big(lp, [rng.normal(size=(1, 6, 50)), rng.normal(size=(1, 6, 200)), cont],
                propagate_down=(True, True, False))]


def lstm_unit_errors():
    def unit():
        return _bad("LSTMUnit", bottoms=("c_prev", "x", "cont"), tops=("c", "h"))
    c, x, cont = np.ones((1, 2, 3)), np.ones((1, 2, 12)), np.ones((1, 2))
    return [("gates-not-4H", unit(), [c, np.ones((1, 2, 10)), cont]),
            ("two-timesteps", unit(), [np.ones((2, 2, 3)), np.ones((2, 2, 12)), np.ones((2, 2))]),
            ("c_prev-2-axes", unit(), [np.ones((2, 3)), x, cont]),
            ("cont-3-axes", unit(), [c, x, np.ones((1, 2, 1))]),
            ("streams-differ", unit(), [c, np.ones((1, 3, 12)), cont])]


def _torch_lstm_unit(F, xs, p):
    c_prev, x, cont = xs
    i, f, o, g = x.chunk(4, 2)
    c = cont[..., None] * f.sigmoid() * c_prev + i.sigmoid() * g.tanh()
    return [c, o.sigmoid() * c.tanh()]


_TORCH_LSTMS = {}


def _torch_lstm(F, xs, p):
    """PyTorch's nn.LSTM holding the layer's weights (made once per weight tensor; Caffe's gate
    rows i, f, o, g put in PyTorch's order i, f, g, o), from a zero state: the rows bench.py
    runs have cont 0 at t = 0 and 1 after."""
    import torch
    module = _TORCH_LSTMS.get(id(p[0]))
    if module is None:
        w_xc, b_c, w_hc = (t.detach() for t in p)
        hidden = w_hc.shape[1]
        order = torch.cat([torch.arange(2 * hidden), torch.arange(3 * hidden, 4 * hidden),
                           torch.arange(2 * hidden, 3 * hidden)])
        module = torch.nn.LSTM(w_xc.shape[1], hidden)
        with torch.no_grad():
            module.weight_ih_l0.copy_(w_xc[order])
            module.weight_hh_l0.copy_(w_hc[order])
            module.bias_ih_l0.copy_(b_c[order])
            module.bias_hh_l0.zero_()
        _TORCH_LSTMS[id(p[0])] = module
    return module(xs[0])[0]


def _sequences(rng, shapes):
    """Bench bottoms of a recurrent layer: x normal; cont 0 at t = 0 (each stream starts a
    sequence) and 1 after, as PyTorch's nn.LSTM from a zero state sees it."""
    cont = np.ones(shapes[-1])
    cont[0] = 0.0
    return [rng.standard_normal(s) for s in shapes[:-1]] + [cont]


LSTM_BENCH = (Bench("LSTM T20 N32 D256 H256", 'recurrent_param { num_output: 256 weight_filler '
                    '{ type: "uniform" min: -0.08 max: 0.08 } }', ((20, 32, 256), (20, 32)), _torch_lstm,
                    fill=_sequences),)
LSTM_UNIT_BENCH = (Bench("LSTMUnit 1x100x1000 (LRCN's)", 'top: "c"', ((1, 100, 1000), (1, 100, 4000), (1, 100)),
                         _torch_lstm_unit, fill=lambda rng, shapes: [rng.standard_normal(s) for s in shapes[:-1]]
                         + [np.ones(shapes[-1])]),)


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
                           lambda F, x, p: F.dropout(x, 0.5, training=True), same_outputs=False),)),
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
    LayerCase("Convolution", draw_convolution_family("Convolution"), ref_convolution,
              grad_bottoms=(0,), check_params=True, forward_tol={np.float32: (1e-5, 3e-5)},
              big=convolution_big, errors=_conv_errors("Convolution"), bench=CONVOLUTION_BENCH),
    LayerCase("Deconvolution", draw_convolution_family("Deconvolution"), ref_deconvolution,
              grad_bottoms=(0,), check_params=True, forward_tol={np.float32: (1e-5, 3e-5)},
              big=deconvolution_big, errors=_conv_errors("Deconvolution"),
              bench=(Bench("Deconv FCN-up 8x21x16x16 x2 (bilinear, group 21)",
                           'convolution_param { num_output: 21 kernel_size: 4 stride: 2 pad: 1 '
                           'group: 21 bias_term: false weight_filler { type: "bilinear" } }',
                           ((8, 21, 16, 16),),
                           lambda F, x, p: F.conv_transpose2d(x, p[0], None, 2, 1, 0, 21)),)),
    LayerCase("Im2col", draw_convolution_family("Im2col"), ref_im2col, grad_bottoms=(0,),
              big=im2col_big, errors=_conv_errors("Im2col"),
              bench=(Bench("Im2col 64x20x12x12 5x5", "convolution_param { kernel_size: 5 }",
                           ((64, 20, 12, 12),),
                           lambda F, x, p: F.unfold(x, 5).reshape(64, 500, 8, 8)),)),

    # -- vision: pooling, SPP, LRN
    LayerCase("Pooling", draw_pooling, ref_pooling,
              reference_note="STOCHASTIC's forward reference is its TEST phase; TRAIN is checked by the "
                             "gradient check (seeded draws) and by statistics in test_pooling.py",
              grad_bottoms=(0,), big=pooling_big, errors=pooling_errors,
              bench=_pooling_benches()),
    LayerCase("SPP", draw_spp,
              lambda s: [ref.spp(s.bottoms[0], s.layer_param.spp_param.pyramid_height,
                                 _POOL_METHODS[s.layer_param.spp_param.pool])],
              grad_bottoms=(0,), big=spp_big, errors=spp_errors,
              bench=(Bench("SPP MAX height 3 8x256x13x13 (SPP-net)", "spp_param { pyramid_height: 3 }",
                           ((8, 256, 13, 13),), _torch_spp(3, "MAX")),)),
    LayerCase("LRN", draw_lrn, ref_lrn, grad_bottoms=(0,), big=lrn_big, errors=lrn_errors,
              bench=(Bench("LRN across 5 16x96x27x27 (CaffeNet norm1)",
                           "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }", ((16, 96, 27, 27),),
                           lambda F, x, p: F.local_response_norm(x, 5, alpha=1e-4, beta=0.75, k=1.0)),
                     Bench("LRN within 3 100x32x16x16 (CIFAR-10-full norm)",
                           "lrn_param { local_size: 3 alpha: 5e-05 beta: 0.75 norm_region: WITHIN_CHANNEL }",
                           ((100, 32, 16, 16),), _torch_lrn_within))),

    # -- normalization, scale, bias, crop
    LayerCase("BatchNorm", draw_batch_norm, ref_batch_norm, grad_bottoms=(0,),
              forward_tol={np.float32: (2e-5, 1e-5)}, big=batch_norm_big, errors=batch_norm_errors,
              bench=(Bench("BatchNorm(train) 16x64x56x56", "", ((16, 64, 56, 56),), _torch_batch_norm(True)),
                     Bench("BatchNorm(global) 16x64x56x56", "", ((16, 64, 56, 56),), _torch_batch_norm(False),
                           phase=jitnet.TEST),
                     Bench("BatchNorm(train) 16x256x14x14", "", ((16, 256, 14, 14),), _torch_batch_norm(True)),
                     Bench("BatchNorm(global) 16x256x14x14", "", ((16, 256, 14, 14),),
                           _torch_batch_norm(False), phase=jitnet.TEST))),
    LayerCase("Scale", draw_scale, ref_scale, grad_bottoms=(0,), check_params=True,
              big=lambda: _broadcast_big("Scale", "scale_param"),
              errors=lambda: _broadcast_errors("Scale", "scale_param"),
              bench=(Bench("Scale+bias 16x64x56x56", "scale_param { bias_term: true }", ((16, 64, 56, 56),),
                           _torch_scale),)),
    LayerCase("Bias", draw_bias, ref_bias, grad_bottoms=(0,), check_params=True,
              big=lambda: _broadcast_big("Bias", "bias_param"),
              errors=lambda: _broadcast_errors("Bias", "bias_param"),
              bench=(Bench("Bias 16x64x56x56", "", ((16, 64, 56, 56),), _torch_bias),)),
    LayerCase("Crop", draw_crop, ref_crop, grad_bottoms=(0,), big=crop_big, errors=crop_errors,
              bench=(Bench("Crop 1x21x532x532->500x500 (FCN)", "crop_param { offset: 19 }",
                           ((1, 21, 532, 532), (1, 21, 500, 500)),
                           lambda F, x, p: x[0][:, :, 19:519, 19:519].contiguous()),)),

    # -- catalogue: neurons and losses
    pointwise("AbsVal", ref.absval, kinks=(0.0,), torch=lambda F, x, p: x.abs()),
    pointwise("BNLL", ref.bnll, -6.0, 6.0, torch=lambda F, x, p: F.softplus(x)),
    pointwise("ELU", ref.elu, params={"elu_param": {"alpha": st.floats(-0.5, 2.0, width=32)}},
              kinks=(0.0,), big=_neuron_big("ELU", "elu_param", {"alpha": 0.7}),
              bench=_neuron_bench("ELU", "", lambda F, x, p: F.elu(x))),
    LayerCase("Exp", draw_exp, ref_exp, grad_bottoms=(0,), errors=exp_errors,
              big=_neuron_big("Exp", "exp_param", {"base": 2.0, "scale": 0.5, "shift": 1.0}),
              bench=_neuron_bench("Exp", "", lambda F, x, p: x.exp())),
    LayerCase("Log", draw_log, ref_log, grad_bottoms=(0,), errors=log_errors,
              big=_neuron_big("Log", "log_param", {"base": 10.0, "scale": 2.0, "shift": 5.0}),
              bench=_neuron_bench("Log", "log_param { shift: 10 }", lambda F, x, p: (x + 10.0).log())),
    LayerCase("Power", draw_power, ref_power, grad_bottoms=(0,),
              big=_neuron_big("Power", "power_param", {"power": 2.5, "scale": 0.5, "shift": 2.0}),
              bench=_neuron_bench("Power", "power_param { power: 1.5 scale: 0.5 shift: 3 }",
                                  lambda F, x, p: (0.5 * x + 3.0).pow(1.5))),
    LayerCase("PReLU", draw_prelu, ref_prelu, grad_bottoms=(0,), check_params=True, kinks=(0.0,),
              big=prelu_big, errors=lambda: [("1-axis", _bad("PReLU"), [np.ones(3)])],
              bench=_neuron_bench("PReLU", "", lambda F, x, p: F.prelu(x, p[0]))),
    pointwise("Swish", ref.swish, -4.0, 4.0, params={"swish_param": {"beta": st.floats(-1.0, 2.0, width=32)}},
              torch=lambda F, x, p: F.silu(x)),
    LayerCase("Threshold", draw_threshold,
              lambda s: [ref.threshold(s.bottoms[0], s.layer_param.threshold_param.threshold)],
              reference_note="no backward (Caffe's NOT_IMPLEMENTED): forward only, no bench row "
                             "(bench.py times a backward)",
              big=_neuron_big("Threshold", "threshold_param", {"threshold": 0.25}, grad=False)),
    LayerCase("Clip", draw_clip,
              lambda s: [ref.clip(s.bottoms[0], s.layer_param.clip_param.min, s.layer_param.clip_param.max)],
              grad_bottoms=(0,), kinks=_CLIP_BOUNDS,
              big=_neuron_big("Clip", "clip_param", {"min": -0.5, "max": 1.0}), errors=clip_errors,
              bench=_neuron_bench("Clip", "clip_param { min: 0 max: 6 }", lambda F, x, p: x.clamp(0.0, 6.0))),
    LayerCase("MultinomialLogisticLoss", draw_multinomial_logistic_loss,
              lambda s: [ref.multinomial_logistic_loss(s.bottoms[0], s.bottoms[1])], grad_bottoms=(0,),
              big=multinomial_logistic_loss_big,
              errors=lambda: _label_errors("MultinomialLogisticLoss", np.full((2, 3), 0.5))),
    LayerCase("InfogainLoss", draw_infogain_loss, ref_infogain_loss, grad_bottoms=(0,),
              forward_tol={np.float32: (3e-5, 3e-6)}, big=infogain_loss_big, errors=infogain_loss_errors),
    LayerCase("SigmoidCrossEntropyLoss", draw_sigmoid_cross_entropy_loss, ref_sigmoid_cross_entropy_loss,
              grad_bottoms=(0,), forward_tol={np.float32: (3e-5, 3e-6)},
              big=sigmoid_cross_entropy_loss_big, errors=sigmoid_cross_entropy_loss_errors),
    LayerCase("HingeLoss", draw_hinge_loss, ref_hinge_loss, grad_bottoms=(0,), kinks=(-1.0, 1.0),
              big=hinge_loss_big, errors=lambda: _label_errors("HingeLoss", np.ones((2, 3)))),
    LayerCase("ContrastiveLoss", draw_contrastive_loss, ref_contrastive_loss, grad_bottoms=(0, 1),
              grad_tol=(1e-3, 1e-6), big=contrastive_loss_big, errors=contrastive_loss_errors),

    # -- catalogue: utility layers and MVN
    LayerCase("Concat", draw_concat,
              lambda s: [ref.concat(s.bottoms, s.extra["axis"])],
              grad_bottoms=(0,), big=concat_big, errors=concat_errors,
              bench=(Bench("Concat GoogLeNet 3a (b10, 4 bottoms)", "", _GOOGLENET_3A, _torch_concat),)),
    LayerCase("Slice", draw_slice,
              lambda s: ref.slice_blob(s.bottoms[0], s.extra["axis"], s.extra["points"],
                                       len(s.layer_param.top)),
              grad_bottoms=(0,), big=slice_big, errors=slice_errors,
              bench=(Bench("Slice 10x256x28x28 -> 4 tops", 'top: "y1" top: "y2" top: "y3" slice_param { slice_point: 64 '
                           'slice_point: 192 slice_point: 224 }', ((10, 256, 28, 28),), _torch_slice),)),
    LayerCase("Eltwise", draw_eltwise,
              lambda s: [ref.eltwise(s.bottoms, s.extra["op"], s.extra["coeffs"])[0]],
              grad_bottoms=(0, 1), kinks=(0.0,), big=eltwise_big, errors=eltwise_errors,
              bench=(Bench("Eltwise SUM ResNet (b8 256x56x56)", "", ((8, 256, 56, 56),) * 2,
                           lambda F, xs, p: xs[0] + xs[1]),)),
    LayerCase("Tile", draw_tile,
              lambda s: [ref.tile(s.bottoms[0], s.extra["axis"], s.layer_param.tile_param.tiles)],
              grad_bottoms=(0,), big=tile_big, errors=tile_errors,
              bench=(Bench("Tile 64x256x1x1 axis 2 x49", "tile_param { axis: 2 tiles: 49 }",
                           ((64, 256, 1, 1),), lambda F, x, p: x.repeat(1, 1, 49, 1)),)),
    LayerCase("Reduction", draw_reduction,
              lambda s: [ref.reduction(s.bottoms[0], s.extra["op"], s.extra["axis"],
                                       s.layer_param.reduction_param.coeff)],
              grad_bottoms=(0,), kinks=(0.0,), big=reduction_big, errors=reduction_errors,
              bench=(Bench("Reduction SUM 256x4096 axis 1", "reduction_param { axis: 1 }",
                           ((256, 4096),), lambda F, x, p: x.sum(1)),)),
    LayerCase("ArgMax", draw_argmax,
              lambda s: [ref.argmax(s.bottoms[0], s.layer_param.argmax_param.top_k,
                                    s.layer_param.argmax_param.out_max_val,
                                    s.layer_param.argmax_param.axis
                                    if s.layer_param.argmax_param.HasField("axis") else None)],
              big=argmax_big, errors=argmax_errors),
    LayerCase("BatchReindex", draw_batch_reindex,
              lambda s: [ref.batch_reindex(s.bottoms[0], s.bottoms[1])],
              grad_bottoms=(0,), big=batch_reindex_big, errors=batch_reindex_errors),
    LayerCase("Filter", draw_filter,
              lambda s: ref.filter_rows(s.bottoms[:-1], s.bottoms[-1]),
              grad_bottoms=(0,), big=filter_big, errors=filter_errors),
    LayerCase("Silence", draw_silence, lambda s: [], grad_bottoms=(0,), big=silence_big),
    LayerCase("Parameter", draw_parameter, lambda s: [np.asarray(s.params[0], np.float64)],
              check_params=True, big=parameter_big, errors=parameter_errors),
    LayerCase("Embed", draw_embed,
              lambda s: [ref.embed(s.bottoms[0], s.params[0], s.params[1] if len(s.params) > 1 else None)],
              check_params=True, big=embed_big, errors=embed_errors),
    # Caffe's MVN backward leaves out a factor σ/(σ + eps): in planes of two values the true
    # gradient is ~0 and Caffe's formula leaves a residue of a few 1e-6 (kept: Caffe's numbers)
    LayerCase("MVN", draw_mvn, ref_mvn, grad_bottoms=(0,), grad_tol=(1e-5, 1e-5), big=mvn_big,
              errors=mvn_errors,
              bench=(Bench("MVN 32x64x28x28 (per plane)", "", ((32, 64, 28, 28),), _torch_mvn),)),

    # -- data pipeline (issue 12)
    LayerCase("Data", draw_data, ref_data, gpu_kernels=False, errors=data_errors),
    LayerCase("ImageData", draw_image_data, ref_image_data, gpu_kernels=False,
              errors=image_data_errors),
    LayerCase("WindowData", draw_window_data, ref_window_data, gpu_kernels=False,
              reference_note="warps with OpenCV's fixed-point bilinear weights; the reference "
                             "in real arithmetic agrees to one grey level (times scale)",
              forward_tol={np.float32: (0, 1.0001), np.float64: (0, 1.0001)},
              errors=window_data_errors),
    LayerCase("HDF5Output", draw_hdf5_output, ref_hdf5_output, gpu_kernels=False,
              errors=hdf5_output_errors),

    # -- Python layer (issue 11)
    LayerCase("Python", draw_python,
              lambda s: [s.params[0][0] * np.asarray(s.bottoms[0], np.float64) + s.params[1][0]],
              grad_bottoms=(0,), check_params=True, gpu_kernels=False, errors=python_errors),

    # -- recurrent (issue 13)
    LayerCase("LSTMUnit", draw_lstm_unit, lambda s: list(ref.lstm_unit(*s.bottoms)), grad_bottoms=(0, 1),
              big=lstm_unit_big, errors=lstm_unit_errors, bench=LSTM_UNIT_BENCH),
    LayerCase("LSTM", draw_recurrent("LSTM"), ref_recurrent,
              reference_note="the fused engine (LSTM's default); tests/test_recurrent.py runs the "
                             "unrolled one against the same oracle",
              grad_bottoms=(0,), check_params=True, big=lstm_big,
              errors=recurrent_errors("LSTM"), bench=LSTM_BENCH, marks=_RECURRENT_MARKS),
    LayerCase("RNN", draw_recurrent("RNN"), ref_recurrent, grad_bottoms=(0,), check_params=True,
              errors=recurrent_errors("RNN"), marks=_RECURRENT_MARKS),
]

CASES_BY_TYPE = {case.type: case for case in LAYER_CASES}
