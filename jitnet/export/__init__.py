"""Export of a jitnet Net to ONNX, so that a Caffe model runs in today's runtimes with Caffe's
numbers: ``net.to_onnx(path)``, ``jitnet export_onnx``.

The graph is written from the net as jitnet built it (TEST phase): every layer becomes the
ONNX nodes that compute what its forward computes (``onnx_layers.py``: one emitter per type,
with Caffe's pooling windows and divisors, LRN's two modes, BatchNorm's scale factor folded
into the statistics, Scale/Bias broadcasting from an axis, ...). A layer with no faithful
ONNX form (a user's Python layer, a data or loss layer) is an error naming it.

Names carry over: the net's inputs are the graph's inputs, blob names are value names and
layer names are node names. A blob written in place by several layers (``conv1`` by
Convolution, then ReLU) is one value per version: the last version carries the blob's name
(what ``net.blobs["conv1"]`` holds after forward), earlier ones ``<blob>@<layer>`` (the blob
as that layer wrote it). Split tops are the bottom's value, as in Caffe (no copy). Learned
blobs are initializers named ``<layer>/weight``, ``<layer>/bias``, ``<layer>/mean``, ...

The graph computes in float32 (a float64 net's values are rounded). With ``batch="dynamic"``
axis 0 of every input is the free dimension ``N``; ``batch=n`` fixes it (the net is
reshaped to n for the export and back afterwards); ``batch=None`` keeps the net's shapes.
"""
import contextlib

import numpy as np

from ..common import TEST
from ..errors import JitnetError
from .onnx_graph import MIN_OPSET, Graph, LayerContext, OnnxExportError, onnx_modules
from .onnx_layers import EMITTERS, REFUSED

DEFAULT_OPSET = 17
__all__ = ["to_onnx", "onnx_model", "compare_with_onnxruntime", "check_layers", "check_options",
           "OnnxExportError", "DEFAULT_OPSET", "exportable_types"]


def exportable_types():
    """The layer types jitnet writes as ONNX (Input becomes the graph's inputs)."""
    return sorted(set(EMITTERS) | {"Input"})


def to_onnx(net, path=None, opset=None, batch="dynamic"):
    """Write ``net`` as an ONNX model to ``path`` (when given) and return the ModelProto."""
    model = onnx_model(net, opset=opset, batch=batch)
    if path is not None:
        onnx = onnx_modules()[0]
        onnx.save(model, str(path))
    return model


def onnx_model(net, opset=None, batch="dynamic"):
    """The ONNX ModelProto of ``net`` (see the module docstring), checked by onnx.checker."""
    onnx = onnx_modules()[0]
    opset = _opset(opset, onnx)
    _check_net(net)
    dynamic, size = _batch(batch)
    with _batch_size(net, size):
        return _Export(net, opset, dynamic).model()


def check_options(opset=None, batch="dynamic", runtime=False):
    """The errors ``to_onnx`` (and, with ``runtime``, ``compare_with_onnxruntime``) would give for
    these options or a missing package, before any net is built: (opset, dynamic, batch size)."""
    onnx = onnx_modules()[0]
    if runtime:
        _onnxruntime()
    return (_opset(opset, onnx),) + _batch(batch)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise OnnxExportError("checking with onnxruntime needs the onnxruntime package "
                              "(pip install onnxruntime)") from None
    return onnxruntime


def _opset(opset, onnx):
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise OnnxExportError(f"opset must be an integer, not {opset!r}")
    if not MIN_OPSET <= opset <= newest:
        raise OnnxExportError(f"opset {opset}: jitnet writes opsets {MIN_OPSET} to {newest} "
                              f"(the newest this onnx package {onnx.__version__} knows)")
    return int(opset)


def _batch(batch):
    """(dynamic, fixed size or None)."""
    if batch is None:
        return False, None
    if isinstance(batch, str):
        if batch == "dynamic":
            return True, None
        if not batch.isdigit():
            raise OnnxExportError(f"batch must be 'dynamic' or a positive integer, not {batch!r}")
        batch = int(batch)
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise OnnxExportError(f"batch must be 'dynamic' or a positive integer, not {batch!r}")
    return False, int(batch)


def check_layers(net_name, layers):
    """OnnxExportError listing the layers, given as (name, type) pairs, that have no ONNX form."""
    problems = []
    for name, type_name in layers:
        why = REFUSED.get(type_name)
        if why is not None:
            joint = " is " if why.startswith(("a ", "an ")) else ": "
            problems.append(f"layer '{name}' ({type_name}){joint}{why}")
        elif type_name not in EMITTERS and type_name != "Input":
            problems.append(f"layer '{name}' ({type_name}): jitnet has no ONNX form for this type "
                            f"(the types it exports: {', '.join(exportable_types())})")
    if problems:
        raise OnnxExportError(f"net '{net_name}' cannot be exported to ONNX: " + "; ".join(problems))


def _check_net(net):
    """A clear error for what cannot be exported: a TRAIN-phase net, layers without an ONNX form."""
    data = [layer for layer in net.layers if REFUSED.get(layer.type) is REFUSED["Data"]]
    if net.phase != TEST:
        if data:
            raise OnnxExportError(
                f"net '{net.name}' is a TRAIN-phase net with data layers "
                f"({', '.join(repr(layer.name) for layer in data)}): export the deploy net "
                "(TEST phase, its inputs given by Input layers)")
        raise OnnxExportError(f"net '{net.name}' was built for TRAIN; ONNX export writes the "
                              "inference (TEST-phase) forward: build the net with jitnet.TEST")
    check_layers(net.name, [(layer.name, layer.type) for layer in net.layers])
    if not net.outputs:
        raise OnnxExportError(f"net '{net.name}' has no outputs (every blob is consumed): "
                              "nothing to export")


@contextlib.contextmanager
def _batch_size(net, size):
    """The net reshaped to batch ``size`` inside the block (inputs' axis 0), restored after."""
    inputs = [net.blobs[name] for name in net.inputs]
    if size is None or all(blob.shape[:1] == (size,) for blob in inputs):
        yield
        return
    for name, blob in zip(net.inputs, inputs):
        if not blob.shape:
            raise OnnxExportError(f"batch={size}: input '{name}' has no axes, so no batch size")
    saved = [(blob, blob.shape, blob.data.copy()) for blob in inputs]
    try:
        for blob in inputs:
            blob.reshape((size,) + blob.shape[1:])
        try:
            net.reshape()
        except JitnetError as e:
            raise OnnxExportError(f"batch={size}: net '{net.name}' does not run at batch size "
                                  f"{size}: {e}") from None
        yield
    finally:
        for blob, shape, data in saved:
            blob.reshape(shape)
            blob.data[...] = data
        net.reshape()


class _Export:
    """One export: walks the net's steps in order, asking each layer's emitter for its nodes."""

    def __init__(self, net, opset, dynamic):
        self.net, self.dynamic = net, dynamic
        self.g = Graph(opset, reserved=net.blobs)
        self.inputs = list(net.inputs)
        self.current = {name: name for name in self.inputs}   # blob -> its ONNX value now
        self.produced = set(self.inputs)
        self.expected = {name: net.blobs[name].shape for name in self.inputs}   # value -> shape
        self.last_writer = {}
        for step in net.steps:
            for top in step.plan.tops:
                self.last_writer[top] = step.index

    def _value(self, blob):
        """The ONNX value holding ``blob``'s data now (materializing a pending alias)."""
        value = self.current[blob]
        if isinstance(value, tuple):                    # another blob's new data, shared
            source, shape = value
            want = self.net.blobs[blob].shape
            if shape == want:
                value = source
            else:
                target = [0] + list(want[1:]) if shape[:1] == want[:1] and want else list(want)
                value = self.g.unique(f"{blob}@alias")
                shape_name = self.g.add_initializer(f"{blob}/alias_shape", np.array(target, np.int64))
                self.g.add_node("Reshape", [source, shape_name], [value], f"{blob}/alias", {})
            self.current[blob] = value
        return value

    def _top_name(self, step, top):
        if step.index == self.last_writer[top] and top not in self.inputs:
            return self.g.claim(top)
        return self.g.unique(f"{top}@{step.layer.name}")

    def run_step(self, step):
        layer, plan, blobs = step.layer, step.plan, self.net.blobs
        if layer.type == "Input":
            return
        self.g.where = layer
        bottoms = [self._value(b) for b in plan.bottoms]
        if layer.type == "Split":                       # the tops are the bottom's data
            for top in plan.tops:
                self.current[top] = bottoms[0]
            return
        tops = [self._top_name(step, t) for t in plan.tops]
        ctx = LayerContext(self.g, layer, bottoms, tops, [blobs[b].shape for b in plan.bottoms],
                           [blobs[t].shape for t in plan.tops], self.dynamic)
        EMITTERS[layer.type](ctx)
        made = {o for node in self.g.nodes for o in node.output}
        missing = [t for t in tops if t not in made]
        if missing:
            raise OnnxExportError(f"layer '{layer.name}' ({layer.type}): the exporter wrote no "
                                  f"value for top(s) {missing} (please report it)")
        self.produced.update(tops)
        for top, value in zip(plan.tops, tops):
            self.current[top] = value
            self.expected[value] = blobs[top].shape
            if top in plan.bottoms:                     # in place: blobs sharing its data see it
                for other, blob in blobs.items():
                    if other != top and other in self.current and blob._data is blobs[top]._data:
                        self.current[other] = (value, blobs[top].shape)

    def model(self):
        """The checked ModelProto. onnx.checker and shape inference run on the graph with its
        large initializers given as typed inputs instead (same nodes, same names): they need
        only the weights' shapes, and a copy of hundreds of MB costs seconds."""
        onnx, helper, _, T = onnx_modules()
        for step in self.net.steps:
            self.run_step(step)
        self.g.where = None
        self.g.check_opset()
        outputs = []
        for name in self.net.outputs:
            value = self._value(name)
            if value != name and name not in self.produced:
                self.g.add_node("Identity", [value], [name], f"{name}/output", {})
                self.expected[name] = self.net.blobs[name].shape
                value = name
            outputs.append(value)
        blobs = self.net.blobs
        inputs = [helper.make_tensor_value_info(name, T.FLOAT, self._dims(blobs[name].shape))
                  for name in self.inputs]
        small = [t for t in self.g.initializers if _elements(t) <= _LIGHT]
        large = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                 for t in self.g.initializers if _elements(t) > _LIGHT]
        untyped = [helper.make_tensor_value_info(v, T.FLOAT, None) for v in outputs]
        light = self._assemble(inputs + large, untyped, small)
        output_types = self._output_types(light, outputs)
        try:
            onnx.checker.check_model(self._assemble(inputs + large, output_types, small),
                                     full_check=True)
        except onnx.checker.ValidationError as e:       # a bug of jitnet's, not the user's
            raise OnnxExportError(f"the ONNX model written for net '{self.net.name}' fails "
                                  f"onnx.checker (please report it): {e}") from None
        return self._assemble(inputs, output_types, self.g.initializers)

    def _assemble(self, inputs, outputs, initializers):
        _, helper, _, _ = onnx_modules()
        graph = helper.make_graph(self.g.nodes, self.net.name or "net", inputs, outputs, initializers)
        opsets = [helper.make_opsetid("", self.g.opset)]
        from .. import __version__
        return helper.make_model(graph, opset_imports=opsets, producer_name="jitnet",
                                 producer_version=__version__,
                                 ir_version=helper.find_min_ir_version_for(opsets),
                                 doc_string=f"Caffe net '{self.net.name}' exported by jitnet")

    def _dims(self, shape):
        if self.dynamic and shape:
            return ["N"] + list(shape[1:])
        return list(shape)

    def _output_types(self, model, outputs):
        """The outputs' value infos with their shapes from ONNX's shape inference; every blob
        version's inferred shape is checked against jitnet's (a mismatch is a bug of the
        exporter)."""
        onnx, helper, _, T = onnx_modules()
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        except Exception as e:                          # onnx raises several kinds here
            raise OnnxExportError(f"net '{self.net.name}': ONNX shape inference fails on the "
                                  f"exported graph (please report it): {e}") from None
        found = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
        for name, shape in self.expected.items():
            info = found.get(name)
            if info is None or not info.type.tensor_type.HasField("shape"):
                continue
            dims = info.type.tensor_type.shape.dim
            got = [d.dim_value if d.HasField("dim_value") else None for d in dims]
            if len(got) != len(shape) or any(g is not None and g != s for g, s in zip(got, shape)):
                raise OnnxExportError(f"net '{self.net.name}': value '{name}' of the exported "
                                      f"graph has shape {got}, jitnet's blob {tuple(shape)} "
                                      "(please report it)")
        typed = []
        for name in outputs:
            info = found.get(name)
            if info is not None and info.type.tensor_type.HasField("shape"):
                typed.append(info)
            else:                                       # the rank at least, dims unknown
                rank = len(self.expected.get(name, ()))
                typed.append(helper.make_tensor_value_info(name, T.FLOAT, [None] * rank))
        return typed


def _elements(tensor):
    return int(np.prod(tensor.dims, dtype=np.int64))


_LIGHT = 4096          # initializers up to this many values stay in the model that is checked


def compare_with_onnxruntime(net, model, inputs=None, seed=0):
    """Run ``net`` (jitnet's forward) and ``model`` (onnxruntime) on the same inputs (``inputs``,
    or uniform random values in [-1, 1] of the net's input shapes) and return
    {output: (largest absolute difference, largest absolute value of jitnet's output)}."""
    onnxruntime = _onnxruntime()
    rng = np.random.default_rng(seed)
    if inputs is None:
        inputs = {name: rng.uniform(-1, 1, net.blobs[name].shape) for name in net.inputs}
    feeds = {name: np.asarray(value, dtype=np.float32) for name, value in inputs.items()}
    ours = {name: np.array(value, dtype=np.float64) for name, value in net.forward(**feeds).items()}
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    values = session.run(None, feeds)
    report = {}
    for output, value in zip(net.outputs, values):
        mine, value = ours[output], np.asarray(value, dtype=np.float64)
        if value.shape != mine.shape:
            raise OnnxExportError(f"output '{output}': onnxruntime gives shape {value.shape}, "
                                  f"jitnet {mine.shape}")
        # equal infinities and NaN on both sides agree; anything else counts as infinitely far
        both = np.isfinite(mine) | np.isfinite(value)
        diff = np.abs(np.where(both, mine - value, 0.0))
        diff = np.where(np.isnan(diff), np.inf, diff)
        scale = np.abs(np.where(np.isfinite(mine), mine, 0.0))
        report[output] = (float(diff.max(initial=0.0)), float(scale.max(initial=0.0)))
    return report
