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


# --------------------------------------------------------------------------- normalization, scale, bias, crop


# --------------------------------------------------------------------------- catalogue: neurons and losses


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
    # a fixed spread in every plane: a plane of (nearly) equal values has σ ≈ 0, where y
    # jumps between −1 and 1 (a kink for the gradient check, cancellation for float32)
    spread = (np.arange(math.prod(shape)) % 5 * 0.45).reshape(shape)
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

    # -- normalization, scale, bias, crop

    # -- catalogue: neurons and losses

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
    LayerCase("MVN", draw_mvn, ref_mvn, grad_bottoms=(0,), big=mvn_big, errors=mvn_errors,
              bench=(Bench("MVN 32x64x28x28 (per plane)", "", ((32, 64, 28, 28),), _torch_mvn),)),

]

CASES_BY_TYPE = {case.type: case for case in LAYER_CASES}
