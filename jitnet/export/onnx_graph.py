"""The ONNX graph being written: unique names, nodes, initializers, and the opset each
node form needs.

Layer emitters (``onnx_layers.py``) see a :class:`LayerContext`: the layer, the ONNX
names of its bottoms and of the tops it must produce, their shapes as jitnet computed
them, and helpers that add nodes and constants under names derived from the layer's.
The first node that produces a top of the layer is named after the layer itself, so
``conv1`` is both a node and (for the last version of the blob) a value of the graph.
"""
import numpy as np

from ..errors import JitnetError

# The oldest opset each operator is written for, in the form jitnet writes it; operators not
# listed are the same from opset 9 (the oldest jitnet writes). Forms that change with the
# opset (axes, pads, split sizes and clip bounds as attributes or as inputs) are chosen by
# the helpers below and need no entry.
MIN_OPSET = 9
OP_OPSET = {
    "Slice": 10,           # starts / ends / axes / steps as inputs
    "Mod": 10,
    "TopK": 11,            # k as an input, largest / sorted
    "Equal": 11,           # on floats
}


class OnnxExportError(JitnetError):
    """A net (or a layer of it) that cannot be written as ONNX, or an opset too old for it."""


def onnx_modules():
    """(onnx, onnx.helper, onnx.numpy_helper, TensorProto), or a clear error without onnx."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise OnnxExportError("ONNX export needs the onnx package: pip install 'jitnet[onnx]' "
                              "(or pip install onnx)") from None
    return onnx, helper, numpy_helper, TensorProto


class Graph:
    """Nodes and initializers of one ONNX graph, with names unique across values and nodes."""

    def __init__(self, opset, reserved=()):
        self.onnx, self.helper, self.numpy_helper, self.tensor = onnx_modules()
        self.opset = opset
        self.nodes, self.initializers = [], []
        self.taken = set(reserved)         # value names: the blobs' names are reserved up front
        self.node_names = set()
        self.where = None                  # the layer being written, for error messages
        self.needs = []                    # (opset, layer, operator) the opset is too old for

    def unique(self, wanted, taken=None):
        taken = self.taken if taken is None else taken
        name, k = wanted, 1
        while name in taken:
            name = f"{wanted}_{k}"
            k += 1
        taken.add(name)
        return name

    def claim(self, name):
        """Take ``name`` (a reserved blob name) for a value; it must not have been produced yet."""
        self.taken.add(name)
        return name

    def require(self, op, version, what=""):
        """Note that the layer being written needs opset ``version`` for ``op``; the export
        goes on and ``check_opset`` reports every such need at the end."""
        if self.opset < version:
            where = f"layer '{self.where.name}' ({self.where.type})" if self.where else "the net"
            self.needs.append((version, where, f"{op}{' ' + what if what else ''}"))

    def check_opset(self):
        """OnnxExportError naming the layers and operators the opset is too old for, the
        neediest first, and the opset that writes them all."""
        if not self.needs:
            return
        needs = sorted(set(self.needs), key=lambda need: -need[0])
        version, where, op = needs[0]
        others = [f"{w}: {o} (opset {v})" for v, w, o in needs[1:4]]
        more = f" (also {'; '.join(others)}{'; ...' if len(needs) > 4 else ''})" if others else ""
        raise OnnxExportError(
            f"opset {self.opset} is too old for {where}: it needs the ONNX operator {op}, which "
            f"jitnet writes for opset {version} or newer{more}; export with opset >= {version}")

    def add_node(self, op, inputs, outputs, name, attrs):
        self.require(op, OP_OPSET.get(op, MIN_OPSET))
        name = self.unique(name, self.node_names)
        self.nodes.append(self.helper.make_node(op, list(inputs), list(outputs), name=name, **attrs))
        return name

    def add_initializer(self, wanted, array):
        name = self.unique(wanted)
        self.initializers.append(self.numpy_helper.from_array(np.array(array, order="C"), name))
        return name


class LayerContext:
    """What an emitter writes one layer with.

    ``bottoms`` / ``tops``: the ONNX value names of the layer's bottoms and of the tops it
    must produce; ``bottom_shapes`` / ``top_shapes``: jitnet's shapes of those blobs;
    ``dynamic``: whether axis 0 of the graph's inputs is left free (the emitter writes
    shapes with Reshape's 0 and -1 where it can, so that the batch size may change)."""

    def __init__(self, graph, layer, bottoms, tops, bottom_shapes, top_shapes, dynamic):
        self.g, self.layer = graph, layer
        self.name = layer.name
        self.bottoms, self.tops = list(bottoms), list(tops)
        self.bottom_shapes, self.top_shapes = [tuple(s) for s in bottom_shapes], [tuple(s) for s in top_shapes]
        self.dynamic = dynamic
        self.named = False
        self.cache = {}

    @property
    def opset(self):
        return self.g.opset

    def require(self, op, version, what=""):
        self.g.require(op, version, what)

    # -- nodes --------------------------------------------------------------------------------
    def node(self, op, inputs, outputs=None, **attrs):
        """Add a node; ``outputs`` None gives one new value named after the layer and op.
        Returns the output name (or the list of them when there are several). The first node
        writing one of the layer's tops is named after the layer."""
        if outputs is None:
            outputs = [self.g.unique(f"{self.name}/{op}")]
        elif isinstance(outputs, str):
            outputs = [outputs]
        if not self.named and any(o in self.tops for o in outputs):
            name, self.named = self.name, True
        else:
            name = f"{self.name}/{op}"
        self.g.add_node(op, inputs, outputs, name, attrs)
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def out(self, k, value):
        """Make top ``k`` the value ``value`` (an Identity named after the layer if needed)."""
        if value != self.tops[k]:
            self.node("Identity", [value], self.tops[k])

    # -- constants ----------------------------------------------------------------------------
    def weight(self, hint, array):
        """A float32 initializer named ``<layer>/<hint>`` (learned blobs, folded statistics)."""
        return self.g.add_initializer(f"{self.name}/{hint}", np.asarray(array, dtype=np.float32))

    def floats(self, values, hint="const"):
        """A float32 constant (scalar when ``values`` is a number)."""
        return self._constant(np.asarray(values, dtype=np.float32), hint)

    def ints(self, values, hint="const"):
        """An int64 constant (1-D from a list, scalar from a number)."""
        return self._constant(np.asarray(values, dtype=np.int64), hint)

    def _constant(self, array, hint):
        """An initializer named ``<layer>/<hint>``, one per value within a layer."""
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.cache:
            self.cache[key] = self.g.add_initializer(f"{self.name}/{hint}", array)
        return self.cache[key]

    # -- operators whose form depends on the opset ----------------------------------------------
    def reduce(self, op, x, axes, keepdims, outputs=None):
        """ReduceSum (axes an input from opset 13) or ReduceMean/Max/L1/SumSquare (from 18)."""
        since = 13 if op == "ReduceSum" else 18
        if self.opset >= since:
            return self.node(op, [x, self.ints(list(axes), "axes")], outputs, keepdims=int(keepdims))
        return self.node(op, [x], outputs, axes=list(axes), keepdims=int(keepdims))

    def unsqueeze(self, x, axes, outputs=None):
        if self.opset >= 13:
            return self.node("Unsqueeze", [x, self.ints(list(axes), "axes")], outputs)
        return self.node("Unsqueeze", [x], outputs, axes=list(axes))

    def squeeze(self, x, axes, outputs=None):
        if self.opset >= 13:
            return self.node("Squeeze", [x, self.ints(list(axes), "axes")], outputs)
        return self.node("Squeeze", [x], outputs, axes=list(axes))

    def split(self, x, axis, sizes, outputs):
        if self.opset >= 13:
            return self.node("Split", [x, self.ints(list(sizes), "split")], outputs, axis=axis)
        return self.node("Split", [x], outputs, axis=axis, split=list(sizes))

    def pad(self, x, pads, value, outputs=None):
        """Constant padding; ``pads`` as ONNX orders them (all begins, then all ends)."""
        if self.opset >= 11:
            return self.node("Pad", [x, self.ints(list(pads), "pads"), self.floats(value, "pad_value")],
                             outputs, mode="constant")
        return self.node("Pad", [x], outputs, mode="constant", pads=list(pads), value=float(value))

    def clip(self, x, low, high, outputs=None):
        if self.opset >= 11:
            return self.node("Clip", [x, self.floats(low, "min"), self.floats(high, "max")], outputs)
        return self.node("Clip", [x], outputs, min=float(low), max=float(high))

    def reshape(self, x, shape, outputs=None):
        """Reshape to ``shape`` (ONNX's rules: 0 copies the input's dim at that index, -1 is
        inferred)."""
        return self.node("Reshape", [x, self.ints(list(shape), "shape")], outputs)

    def cast(self, x, to, outputs=None):
        return self.node("Cast", [x], outputs, to=getattr(self.g.tensor, to))

    def slice(self, x, starts, ends, axes, steps=None, outputs=None):
        inputs = [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "axes")]
        if steps is not None:
            inputs.append(self.ints(steps, "steps"))
        return self.node("Slice", inputs, outputs)

    def error(self, message):
        return OnnxExportError(f"layer '{self.name}' ({self.layer.type}): {message}")
