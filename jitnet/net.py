"""Net: builds the layers and blobs a plan names, and runs it.

All graph reasoning (phase rules, order, splits, in-place, who runs backward) is
done by :mod:`jitnet.planner`; Net creates one Blob per blob name (an in-place
layer's top is the same Blob as its bottom), sets every layer up in order as a
bound :class:`Step` (layer, bottom and top blobs), ties shared parameters
together, and then runs two short loops: forward bottom to top, backward top to
bottom. Around each step run Caffe's callback seams, lists of callables taking
the Step: ``before_forward``, ``after_forward``, ``before_backward``,
``after_backward`` (``debug_info``, ``jitnet time`` and a data-parallel
allreduce are such callbacks). The Python surface follows pycaffe.
"""
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from . import common, planner
from .blob import Blob, SyncedMemory
from .errors import JitnetError, NetDefinitionError, ProtoError, WeightsError
from .layer import create_layer
from .proto import io as proto_io
from .proto import pb

log = logging.getLogger("jitnet")


@dataclass(eq=False)
class Step:
    """One layer of a built net: the plan's step bound to its layer and blobs."""
    index: int
    layer: object
    bottoms: list                  # Blobs
    tops: list                     # Blobs
    plan: object                   # the planner's Step: names, loss weights, propagate_down
    loss: float = 0.0              # this layer's share of the loss in the last forward

    @property
    def name(self):
        return self.layer.name

    @property
    def propagate_down(self):
        return self.plan.propagate_down

    @property
    def need_backward(self):
        return self.plan.need_backward


class Net:
    """A network built from a prototxt (or a NetParameter) for one phase.

    ``Net(model, phase, weights=None, level=0, stages=None)``; the older pycaffe
    order ``Net(model, weights, phase)`` is accepted too. ``weights`` may be one
    caffemodel (or ``.caffemodel.h5``) or several, comma-separated.

    ``reuse_buffers=True`` (TEST phase only) lets blobs whose lifetimes do not overlap
    share one data buffer, for inference with less memory: the outputs are kept, the
    intermediate blobs are overwritten by later layers, and the net runs forward only.
    ``blob_bytes()`` says how much memory the blobs take with and without it.
    """

    def __init__(self, model, phase=None, weights=None, level=0, stages=None, dtype=np.float32,
                 reuse_buffers=False):
        if isinstance(phase, (str, os.PathLike)) and isinstance(weights, int):
            phase, weights = weights, phase           # Net(model, weights, phase)
        if phase is None:
            raise JitnetError("Net(model, phase): give the phase, jitnet.TRAIN or jitnet.TEST")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise JitnetError(f"Net(dtype={np.dtype(dtype).name}): jitnet nets are float32 or float64")
        if isinstance(stages, str):
            stages = (stages,)                        # one stage, not its characters
        if not isinstance(level, (int, np.integer)):
            raise JitnetError(f"Net(level={level!r}): the level is an integer")
        if isinstance(model, pb.NetParameter):
            net_param, self.source = pb.NetParameter(), None
            net_param.CopyFrom(model)
            proto_io.upgrade_net(net_param)
        elif isinstance(model, (str, os.PathLike)):
            net_param, self.source = proto_io.read_net(model), os.fspath(model)
        else:
            raise JitnetError(f"Net(model, ...): model is a prototxt path or a NetParameter, "
                              f"not {type(model).__name__}")
        self.net_param = net_param
        self.phase = phase
        self.dtype = np.dtype(dtype)
        self.plan = planner.plan(net_param, phase, level, tuple(stages or ()))
        self.name = self.plan.name

        self.blobs = OrderedDict((name, Blob(dtype=self.dtype, name=name)) for name in self.plan.blobs)
        self.steps, self.layers = [], []
        self.layer_dict = OrderedDict()
        for planned in self.plan.forward:
            layer = create_layer(planned.param, phase)
            step = Step(planned.index, layer, [self.blobs[b] for b in planned.bottoms],
                        [self.blobs[t] for t in planned.tops], planned)
            layer.setup_layer(step.bottoms, step.tops, planned.loss_weights)
            self.steps.append(step)
            self.layers.append(layer)
            if layer.name in self.layer_dict:
                log.info("net '%s': two layers are named '%s'; as in Caffe, the name stands for the "
                         "later one (layer_dict, weights by name)", self.name, layer.name)
            self.layer_dict[layer.name] = layer
        self.backward_steps = [self.steps[planned.index] for planned in self.plan.backward]
        self._setup_params()
        self.before_forward, self.after_forward = [], []
        self.before_backward, self.after_backward = [], []
        self.debug_info = bool(net_param.debug_info)
        self.forward_done = False
        if common.mode() == common.GPU:
            on_host = [layer.name for layer in self.layers if layer.host_only]
            if on_host:
                log.info("net '%s': layers computed on the host in GPU mode: %s", self.name,
                         ", ".join(on_host))
        if weights:
            self.copy_from(weights)
        self.reuse_buffers = bool(reuse_buffers)
        if self.reuse_buffers:
            if phase != planner.TEST:
                raise JitnetError(f"net '{self.name}': reuse_buffers is for TEST-phase (inference) "
                                  "nets; a TRAIN net needs every blob for backward")
            self._share_buffers()

    # -- parameters -----------------------------------------------------------------------------
    def _setup_params(self):
        """Collect learnable blobs; tie together the ones that share a ``param { name }``."""
        self.params = OrderedDict()
        self.learnable_params, self.params_lr, self.params_weight_decay = [], [], []
        self.param_display_names = []
        self.shared_blobs = set()         # (layer name, j) of blobs that use another layer's param
        owners = {}                       # shared name -> (index into learnable_params, layer, j)
        lr_given, decay_given = [], []
        for layer in self.layers:
            if not layer.blobs:
                continue
            self.params[layer.name] = layer.blobs
            if len(layer.param.param) > len(layer.blobs):
                raise NetDefinitionError(
                    f"layer '{layer.name}' has {len(layer.param.param)} param specs but only "
                    f"{len(layer.blobs)} learnable blobs")
            specs = type(layer).param_specs(layer.param)
            propagate = []
            for j, blob in enumerate(layer.blobs):
                spec = specs[j] if j < len(specs) else pb.ParamSpec()
                lr = spec.lr_mult if spec.HasField("lr_mult") else 1.0
                decay = spec.decay_mult if spec.HasField("decay_mult") else 1.0
                propagate.append(lr != 0 or self.plan.force_backward)
                if spec.name and spec.name in owners:
                    k, owner_layer, owner_j = owners[spec.name]
                    owner = self.learnable_params[k]
                    self._check_share(spec, blob, owner, layer, owner_layer, owner_j)
                    blob.share_data(owner)
                    blob.share_diff(owner)
                    self.shared_blobs.add((layer.name, j))
                    for given, values, value, has, what in (
                            (lr_given, self.params_lr, lr, spec.HasField("lr_mult"), "lr_mult"),
                            (decay_given, self.params_weight_decay, decay,
                             spec.HasField("decay_mult"), "decay_mult")):
                        if has and given[k] and values[k] != value:
                            raise NetDefinitionError(
                                f"shared param '{spec.name}' has {what} {value} in layer "
                                f"'{layer.name}' but {values[k]} in layer '{owner_layer}'")
                        if has and not given[k]:
                            values[k], given[k] = value, True
                    continue
                if spec.name:
                    owners[spec.name] = (len(self.learnable_params), layer.name, j)
                self.learnable_params.append(blob)
                self.params_lr.append(lr)
                self.params_weight_decay.append(decay)
                lr_given.append(spec.HasField("lr_mult"))
                decay_given.append(spec.HasField("decay_mult"))
                self.param_display_names.append(spec.name or f"{layer.name}[{j}]")
            layer.param_propagate_down = propagate

    @staticmethod
    def _check_share(spec, blob, owner, layer, owner_layer, owner_j):
        if spec.share_mode == pb.ParamSpec.PERMISSIVE:
            ok, rule = blob.count == owner.count, "the same count"
        else:
            ok, rule = blob.shape == owner.shape, "the same shape (share_mode STRICT)"
        if not ok:
            raise NetDefinitionError(
                f"layer '{layer.name}' shares param '{spec.name}' of shape {blob.shape} with "
                f"layer '{owner_layer}' (blob {owner_j}) of shape {owner.shape}; they need {rule}")

    # -- buffers shared between blobs whose lifetimes do not overlap (inference) ------------------
    def _storage_groups(self):
        """[(first step, last step, bytes, [blobs])] per data buffer: blobs already sharing one
        (in place, views such as Flatten, Split tops) form one group, alive from the first write
        of any member to the last read; outputs stay alive to the end, inputs from the start."""
        spans, end, inputs, outputs = self.plan.lifetimes(), len(self.steps), set(self.inputs), set(self.outputs)
        groups = {}
        for name, blob in self.blobs.items():
            first, last = spans[name]
            first = 0 if name in inputs else first
            last = end if name in outputs else last
            group = groups.setdefault(id(blob._data), [first, last, blob._data.size * blob.dtype.itemsize, []])
            group[0], group[1] = min(group[0], first), max(group[1], last)
            group[3].append(blob)
        return list(groups.values())

    def blob_bytes(self):
        """(bytes of the blobs' data as built, bytes with buffers shared between blobs whose
        lifetimes do not overlap) — what ``reuse_buffers=True`` saves."""
        groups = self._storage_groups()
        _, sizes = planner.assign_buffers([(f, l, b) for f, l, b, _ in groups])
        return sum(b for _, _, b, _ in groups), sum(sizes)

    def _share_buffers(self):
        groups = self._storage_groups()
        owners, sizes = planner.assign_buffers([(f, l, b) for f, l, b, _ in groups])
        buffers = [SyncedMemory(size // self.dtype.itemsize, self.dtype) for size in sizes]
        for (_, _, _, blobs), owner in zip(groups, owners):
            for blob in blobs:
                blob._data = buffers[owner]

    # -- running ----------------------------------------------------------------------------------
    def _index(self, name, default):
        if name is None:
            return default
        if name not in self.layer_dict:
            raise JitnetError(f"no layer named '{name}' in net '{self.name}'")
        return list(self.layer_dict).index(name)

    def forward_from_to(self, start=0, end=None):
        """Run layers start..end (inclusive) bottom to top; return the summed loss."""
        end = len(self.steps) - 1 if end is None else end
        if not self.steps:
            return 0.0                      # a net without layers: nothing to run, as in Caffe
        if start > end:
            raise JitnetError(f"forward: start layer '{self.layers[start].name}' comes after end "
                              f"layer '{self.layers[end].name}' in net '{self.name}'")
        loss = 0.0
        for step in self.steps[start:end + 1]:
            for callback in self.before_forward:
                callback(step)
            step.loss = step.layer.run_forward(step.bottoms, step.tops)
            loss += step.loss
            for callback in self.after_forward:
                callback(step)
        self.forward_done = True
        return loss

    def backward_from_to(self, start=None, end=0, every_layer=False, seed_loss_diffs=True):
        """Run backward from layer ``start`` down to layer ``end`` over the layers that need it
        (``every_layer``: every layer, with its propagate_down, as ``caffe time`` times them).
        Each loss top's diff is first set to its loss weight, unless ``seed_loss_diffs`` is
        false (``backward(loss=...)`` has set them)."""
        start = len(self.steps) - 1 if start is None else start
        if self.reuse_buffers:
            raise JitnetError(f"net '{self.name}' was built with reuse_buffers=True: its blobs "
                              "share buffers and it runs forward only")
        if not self.forward_done:
            raise JitnetError(f"net '{self.name}': backward() needs a forward() first")
        if seed_loss_diffs:
            self._seed_loss_diffs()
        for step in (self.steps[::-1] if every_layer else self.backward_steps):
            if end <= step.index <= start:
                for callback in self.before_backward:
                    callback(step)
                step.layer.run_backward(step.tops, step.propagate_down, step.bottoms)
                for callback in self.after_backward:
                    callback(step)

    # -- debug_info: Caffe's per-layer mean |data| and |diff|, as callbacks ---------------------
    @property
    def debug_info(self):
        return self._forward_debug_info in self.after_forward

    @debug_info.setter
    def debug_info(self, on):
        for callbacks, callback in ((self.after_forward, self._forward_debug_info),
                                    (self.after_backward, self._backward_debug_info)):
            if on and callback not in callbacks:
                callbacks.append(callback)
            elif not on and callback in callbacks:
                callbacks.remove(callback)

    @staticmethod
    def mean_abs(blob, diff=False):
        device = common.mode()
        values = blob.diff_on(device) if diff else blob.data_on(device)
        return common.kernels("blas", device).asum(values) / max(blob.count, 1)

    def _forward_debug_info(self, step):
        layer = step.layer
        for name, blob in zip(step.plan.tops, step.tops):
            log.info("    [Forward] Layer %s, top blob %s data: %.6g", layer.name, name, self.mean_abs(blob))
        for j, blob in enumerate(layer.blobs):
            log.info("    [Forward] Layer %s, param blob %d data: %.6g", layer.name, j, self.mean_abs(blob))

    def _backward_debug_info(self, step):
        layer = step.layer
        for name, blob, down in zip(step.plan.bottoms, step.bottoms, step.propagate_down):
            if down:
                log.info("    [Backward] Layer %s, bottom blob %s diff: %.6g", layer.name, name,
                         self.mean_abs(blob, diff=True))
        for j, blob in enumerate(layer.blobs):
            if layer.param_propagate_down[j]:
                log.info("    [Backward] Layer %s, param blob %d diff: %.6g", layer.name, j,
                         self.mean_abs(blob, diff=True))

    # -- finding where NaN or infinity first appeared -----------------------------------------------
    def first_nonfinite(self):
        """Where the last forward/backward pass first produced NaN or infinity, or None.

        Looks at every layer's tops in forward order, then at the bottom and parameter
        diffs in backward order; returns a sentence naming the layer and blob."""
        def bad(array):
            return not np.isfinite(array).all()
        writers = {}
        for step in self.plan.forward:
            for name in step.tops:
                writers.setdefault(name, []).append(step.name)
        for step in self.steps:
            for name, blob in zip(step.plan.tops, step.tops):
                if bad(blob.data):
                    shared = writers[name]
                    note = (f" (the blob is written in place by layers {', '.join(shared)})"
                            if len(shared) > 1 else "")
                    return (f"forward: layer '{step.name}' ({step.layer.type}) wrote a non-finite "
                            f"value into top '{name}'{note}")
        for step in self.backward_steps:
            for name, blob, down in zip(step.plan.bottoms, step.bottoms, step.propagate_down):
                if down and bad(blob.diff):
                    return (f"backward: layer '{step.name}' ({step.layer.type}) wrote a non-finite "
                            f"value into the diff of bottom '{name}'")
            for j, blob in enumerate(step.layer.blobs):
                if bad(blob.diff):
                    return (f"backward: layer '{step.name}' ({step.layer.type}) wrote a non-finite "
                            f"value into the diff of its param blob {j}")
        return None

    def _seed_loss_diffs(self):
        """Each loss top's diff starts as its loss weight (Caffe's convention)."""
        for name, weight in self.plan.blob_loss_weights.items():
            if weight:
                self.blobs[name].diff[...] = weight

    def forward(self, blobs=None, start=None, end=None, **inputs):
        """pycaffe's forward: copy ``inputs`` into the input blobs, run the layers from
        ``start`` to ``end`` (layer names, both included; the whole net by default), return
        {blob name: data}.

        The blobs returned are the net's outputs, or with ``end`` the tops of the end layer
        (pycaffe returns the blob named like the end layer, which is its top in nets that
        name tops after their layers), plus the blobs named in ``blobs``. The arrays are the
        blobs' own data (views, overwritten by the next pass). An input of another shape
        reshapes its blob and the layers above it."""
        arrays = {}
        for name, value in inputs.items():              # check every input before changing any
            if name not in self.inputs:
                raise JitnetError(f"forward(): '{name}' is not an input blob of net '{self.name}' "
                                  f"(inputs: {', '.join(self.inputs) or 'none'})")
            arrays[name] = self._as_array(value, f"forward(): input '{name}'")
        self._check_names(blobs, "forward(blobs=...)")
        start_index, end_index = self._index(start, 0), self._index(end, len(self.layers) - 1)
        for name, array in arrays.items():
            if array.shape != self.blobs[name].shape:
                self.blobs[name].reshape(array.shape)
            self.blobs[name].data[...] = array
        self.loss = self.forward_from_to(start_index, end_index)
        names = (self.outputs if end is None else list(self.plan.forward[end_index].tops)) + list(blobs or [])
        return {name: self.blobs[name].data for name in names}

    def backward(self, diffs=None, start=None, end=None, **top_diffs):
        """pycaffe's backward: copy ``top_diffs`` into the named blobs' diffs, run backward
        from layer ``start`` down to layer ``end`` (both included; the whole net by default),
        return {blob name: diff}.

        Loss tops start from their loss weight unless a diff is given for them here. The
        diffs returned are the net's inputs', or with ``end`` those of the end layer's tops
        (pycaffe returns the blob named like the end layer), plus the blobs named in
        ``diffs``."""
        self._check_names(list(top_diffs) + list(diffs or []), "backward()")
        arrays = {name: self._as_array(value, f"backward(): diff of '{name}'")
                  for name, value in top_diffs.items()}
        for name, array in arrays.items():
            if array.size != self.blobs[name].count:
                raise JitnetError(f"backward(): the diff for '{name}' has shape {array.shape}, "
                                  f"but the blob has shape {self.blobs[name].shape}")
        start_index, end_index = self._index(start, len(self.layers) - 1), self._index(end, 0)
        if not self.forward_done:
            raise JitnetError(f"net '{self.name}': backward() needs a forward() first")
        self._seed_loss_diffs()
        for name, array in arrays.items():
            self.blobs[name].diff[...] = array.reshape(self.blobs[name].shape)
        self.backward_from_to(start_index, end_index, seed_loss_diffs=False)
        names = (self.inputs if end is None else list(self.plan.forward[end_index].tops)) + list(diffs or [])
        return {name: self.blobs[name].diff for name in names}

    # -- pycaffe's whole-data-set passes ---------------------------------------------------------
    def _batches(self, arrays):
        """Yield {name: batch} over ``arrays`` (all with the same first dimension) in batches of
        the first input blob's size, the last one padded with zeros; then (batch size, count)."""
        if not arrays:
            return
        lengths = {name: len(array) for name, array in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise JitnetError(f"the arrays need the same first dimension (number of samples), "
                              f"got {lengths}")
        count = next(iter(lengths.values()))
        batch = self.blobs[self.inputs[0]].shape[0] if self.inputs else count
        if not batch:
            raise JitnetError(f"net '{self.name}': the input blob '{self.inputs[0]}' has batch size 0")
        for start in range(0, count, batch):
            chunk = {}
            for name, array in arrays.items():
                part = array[start:start + batch]
                if len(part) < batch:
                    part = np.concatenate([part, np.zeros((batch - len(part),) + part.shape[1:], part.dtype)])
                chunk[name] = part
            yield chunk

    @staticmethod
    def _gather(results, count, batch):
        """One array per name from per-batch results: rows of batch-sized blobs concatenated
        (the padding dropped), anything else (a loss) stacked, one entry per batch."""
        out = {}
        for name, parts in results.items():
            if all(np.ndim(p) and len(p) == batch for p in parts):
                out[name] = np.concatenate(parts)[:count] if parts else np.empty((0,))
            else:
                out[name] = np.asarray(parts)
        return out

    def _prepare_all(self, kwargs, names):
        arrays = {}
        for name, value in kwargs.items():
            if name in names:
                array = np.asarray(value, dtype=self.dtype)
                if not array.ndim:
                    raise JitnetError(f"'{name}' needs one row per sample, got a scalar")
                arrays[name] = array
        return arrays

    def forward_all(self, blobs=None, **inputs):
        """pycaffe's forward_all: run ``inputs`` (arrays of any number of samples) through the
        net in batches of the input blob's size (the last batch padded with zeros) and return
        {output (and ``blobs``) name: array over all samples}, the padding dropped. Outputs
        that are not one row per sample (a loss) give one entry per batch. Without inputs, one
        forward pass (a net with its own data layer)."""
        unknown = [name for name in inputs if name not in self.inputs]
        if unknown:
            raise JitnetError(f"forward_all(): {', '.join(map(repr, unknown))} is not an input "
                              f"blob of net '{self.name}' (inputs: {', '.join(self.inputs) or 'none'})")
        arrays = self._prepare_all(inputs, self.inputs)
        if not arrays:
            return {name: array.copy() for name, array in self.forward(blobs=blobs).items()}
        count = len(next(iter(arrays.values())))
        results = {}
        for batch in self._batches(arrays):
            for name, array in self.forward(blobs=blobs, **batch).items():
                results.setdefault(name, []).append(array.copy())
        return self._gather(results, count, self.blobs[self.inputs[0]].shape[0])

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """pycaffe's forward_backward_all: inputs (keyword arguments named like input blobs)
        and output diffs (named like output blobs) in batches; returns (outputs, diffs) as
        forward_all does, the diffs of the inputs (and of ``diffs``)."""
        self._check_names(list(kwargs), "forward_backward_all()")
        inputs = self._prepare_all(kwargs, self.inputs)
        top_diffs = self._prepare_all(kwargs, self.outputs)
        other = set(kwargs) - set(inputs) - set(top_diffs)
        if other:
            raise JitnetError(f"forward_backward_all(): {', '.join(map(repr, sorted(other)))} is "
                              f"neither an input nor an output blob of net '{self.name}'")
        counts = {len(a) for a in list(inputs.values()) + list(top_diffs.values())}
        if len(counts) > 1:
            raise JitnetError(f"forward_backward_all(): the arrays have different numbers of "
                              f"samples: {sorted(counts)}")
        forward_batches = list(self._batches(inputs)) or [{}]
        backward_batches = list(self._batches(top_diffs)) or [{}]
        outputs, gradients = {}, {}
        for k in range(max(len(forward_batches), len(backward_batches))):
            f = forward_batches[k] if k < len(forward_batches) else {}
            b = backward_batches[k] if k < len(backward_batches) else {}
            for name, array in self.forward(blobs=blobs, **f).items():
                outputs.setdefault(name, []).append(array.copy())
            for name, array in self.backward(diffs=diffs, **b).items():
                gradients.setdefault(name, []).append(array.copy())
        count = counts.pop() if counts else 1
        batch = self.blobs[self.inputs[0]].shape[0] if self.inputs else count
        return self._gather(outputs, count, batch), self._gather(gradients, count, batch)

    def backward_all(self, diffs=None, **kwargs):
        """forward_backward_all(blobs=None, diffs=diffs, **kwargs)."""
        return self.forward_backward_all(diffs=diffs, **kwargs)

    def _as_array(self, value, what):
        try:
            array = np.asarray(value, dtype=self.dtype)
        except (TypeError, ValueError) as e:
            raise JitnetError(f"{what} is not numeric ({e})") from None
        return array

    def _check_names(self, names, what):
        unknown = [name for name in names or [] if name not in self.blobs]
        if unknown:
            raise JitnetError(f"{what}: no blob named {', '.join(repr(n) for n in unknown)} in net "
                              f"'{self.name}' (blobs: {', '.join(self.blobs)})")

    def score(self, iterations, on_batch=None):
        """Run ``iterations`` forward passes; return (mean loss, {output: mean value}).

        ``on_batch(i, net)`` is called after each pass (the ``jitnet test`` log uses it)."""
        if iterations < 1:
            raise JitnetError(f"score: iterations must be at least 1, got {iterations}")
        sums, loss = {}, 0.0
        for i in range(iterations):
            loss += self.forward_from_to()
            for name in self.outputs:
                values = np.array(self.blobs[name].data, dtype=np.float64)
                sums[name] = sums[name] + values if name in sums else values
            if on_batch is not None:
                on_batch(i, self)
        return loss / iterations, {name: total / iterations for name, total in sums.items()}

    def output_lines(self, values=None):
        """'name = value' lines, one per output value (Caffe's '(* w = x loss)' on loss outputs);
        ``values`` maps output names to arrays, the outputs' current data by default."""
        lines = []
        for name in self.outputs:
            weight = self.plan.blob_loss_weights.get(name, 0.0)
            array = self.blobs[name].data if values is None else values[name]
            for value in np.ravel(array):
                extra = f" (* {weight:g} = {weight * value:.6g} loss)" if weight else ""
                lines.append(f"{name} = {value:.6g}{extra}")
        return lines

    def forward_backward(self):
        """One forward and one backward pass; returns the loss."""
        loss = self.forward_from_to()
        self.backward_from_to()
        return loss

    def reshape(self):
        """Propagate input shape changes through every layer (errors name the layer)."""
        for step in self.steps:
            step.layer.reshape_layer(step.bottoms, step.tops)

    def clear_param_diffs(self):
        """Zero the diffs of the learnable parameters (the solver does this every iteration)."""
        blas = common.kernels("blas")
        for blob in self.learnable_params:
            blas.set_value(blob.mutable_diff_on(common.mode()), 0.0)

    def update(self):
        """data −= diff for every learnable parameter (Caffe's Net::Update)."""
        blas = common.kernels("blas")
        device = common.mode()
        for blob in self.learnable_params:
            blas.axpy(-1.0, blob.diff_on(device), blob.mutable_data_on(device))

    # -- pycaffe's read-only views -----------------------------------------------------------------
    @property
    def inputs(self):
        return list(self.plan.inputs)

    @property
    def outputs(self):
        return list(self.plan.outputs)

    @property
    def blob_loss_weights(self):
        return OrderedDict((name, self.plan.blob_loss_weights.get(name, 0.0)) for name in self.blobs)

    @property
    def _layer_names(self):
        return [layer.name for layer in self.layers]

    @property
    def _blob_names(self):
        return list(self.blobs)

    @property
    def top_names(self):
        return OrderedDict((s.name, list(s.tops)) for s in self.plan.forward)

    @property
    def bottom_names(self):
        return OrderedDict((s.name, list(s.bottoms)) for s in self.plan.forward)

    def set_input_arrays(self, data, labels):
        """Feed arrays to the first MemoryData layer (pycaffe's ``set_input_arrays``)."""
        for layer in self.layers:
            if layer.type == "MemoryData":
                layer.reset(data, labels)
                return
        raise JitnetError(f"set_input_arrays(): net '{self.name}' has no MemoryData layer")

    # -- weights ----------------------------------------------------------------------------------
    def share_with(self, other):
        """Use ``other``'s parameter buffers for every layer with the same name (test nets)."""
        for layer in self.layers:
            source = other.layer_dict.get(layer.name)
            if source is None or not layer.blobs:
                continue
            if len(source.blobs) != len(layer.blobs):
                raise WeightsError(f"share_with: layer '{layer.name}' has {len(layer.blobs)} "
                                   f"blobs here and {len(source.blobs)} in the other net")
            for j, (mine, theirs) in enumerate(zip(layer.blobs, source.blobs)):
                if mine.shape != theirs.shape:
                    raise WeightsError(f"share_with: layer '{layer.name}' blob {j} has shape "
                                       f"{mine.shape} here and {theirs.shape} in the other net")
                mine.share_data(theirs)

    def copy_from(self, weights):
        """Copy learned blobs from caffemodel file(s) (comma-separated) or a NetParameter,
        matching layers by name, as Caffe's CopyTrainedLayersFrom.

        A file is read as HDF5 weights (Caffe's ``.caffemodel.h5`` layout) when its content
        is HDF5, as a binary caffemodel otherwise, whatever its name. Layers of the file not
        in the net are skipped; a layer of the net not in the file keeps its values. A file
        that matches no learnable layer copies nothing (Caffe goes on too; a warning says so
        when the net has learnable layers), and the learnable layers no file covered are
        logged. Everything is read and checked before anything is written, so a failure
        leaves the net as it was."""
        if isinstance(weights, pb.NetParameter):
            sources = [(weights, "<NetParameter>")]
        elif isinstance(weights, (str, bytes, os.PathLike)):
            sources = [(None, path.strip()) for path in os.fsdecode(weights).split(",")]
        else:
            raise WeightsError(f"weights: give a caffemodel path (or several, comma-separated) "
                               f"or a NetParameter, not {type(weights).__name__}")
        owner = {id(blob): layer.name for layer in self.layers for blob in layer.blobs}
        # layers whose blobs all belong to another layer (param { name }) are covered by it
        learnable = [layer for layer in self.layers if layer.blobs and not all(
            (layer.name, j) in self.shared_blobs for j in range(len(layer.blobs)))]
        assignments, covered = [], set()
        for source, path in sources:
            found = self._weights_from(source, path)
            matched = {owner[id(blob)] for blob, _ in found}
            if learnable and not matched:
                log.warning("%s: no layer in the file matches a layer with learnable blobs in net "
                            "'%s' (%s); nothing was copied from it. Is it the right weights file?",
                            path, self.name, ", ".join(layer.name for layer in learnable))
            covered |= matched
            assignments.extend(found)
        missed = [layer.name for layer in learnable if layer.name not in covered]
        if covered and missed:
            log.info("%s: learnable layers not in the weights keep their values (a new net's "
                     "are from its fillers): %s", ", ".join(path for _, path in sources),
                     ", ".join(missed))
        for blob, array in assignments:
            blob.data[...] = array

    def _weights_from(self, source, path):
        """[(blob, array)] from a NetParameter, or from the file ``path`` (HDF5 or binary
        caffemodel, told apart by content; a caffemodel is read a layer at a time, each
        blob's values straight into one array, so the weights are held once)."""
        if source is not None:
            return self._weights_from_layers(
                [(layer.name, [proto_io.BlobValues.from_proto(bp) for bp in layer.blobs])
                 for layer in source.layer], path)
        from .hdf5 import is_hdf5, read_weights_hdf5
        if is_hdf5(path):
            return read_weights_hdf5(self, path)
        return self._weights_from_layers(proto_io.read_caffemodel(path)[1], path)

    def _weights_from_layers(self, layers, path):
        """[(blob, array)] for the source layers ``[(name, [BlobValues])]`` this net has:
        matched by name (Caffe's split layers and the layers this net lacks are skipped,
        one note each), shapes checked."""
        found = []
        for name, blobs in layers:
            target = self.layer_dict.get(name)
            if target is None:
                if blobs:
                    log.info("%s: ignoring source layer '%s' (not in net '%s')", path, name, self.name)
                continue
            if not blobs and not target.blobs:
                continue
            arrays = [self._blob_array(values, target, j, path) for j, values in enumerate(blobs)]
            found.extend(self.check_layer_arrays(target, arrays, path))
        return found

    @staticmethod
    def _blob_array(values, target, j, path):
        try:
            array = values.data_array()
        except ProtoError as e:
            raise WeightsError(f"{path}: layer '{target.name}' blob {j}: {e}") from None
        if j < len(target.blobs) and values.legacy:
            # Legacy num/channels/height/width: Caffe accepts it when the target's shape,
            # padded with leading 1s to 4 axes, is the same.
            want = target.blobs[j].shape
            if len(want) <= 4 and (1,) * (4 - len(want)) + tuple(want) == array.shape:
                array = array.reshape(want)
        return array

    @staticmethod
    def check_layer_arrays(target, arrays, path):
        """[(blob, array)] for a layer's blobs, shapes checked: ``arrays`` is a list for all
        blobs (its length must match), or a dict {blob index: array} for some."""
        if isinstance(arrays, dict):
            pairs = [(j, array, target.blobs[j]) for j, array in arrays.items()]
        else:
            if len(arrays) != len(target.blobs):
                raise WeightsError(f"{path}: layer '{target.name}' has {len(arrays)} blobs in the file "
                                   f"but {len(target.blobs)} in the net")
            pairs = [(j, array, blob) for j, (array, blob) in enumerate(zip(arrays, target.blobs))]
        for j, array, blob in pairs:
            if tuple(array.shape) != blob.shape:
                raise WeightsError(f"{path}: layer '{target.name}' blob {j} has shape "
                                   f"{tuple(array.shape)} in the file but {blob.shape} in the net")
        return [(blob, array) for _, array, blob in pairs]

    def to_proto(self, write_diff=False):
        """A NetParameter with every layer's definition and its blobs (what a caffemodel holds)."""
        net_param = self._definition()
        for layer, layer_param in zip(self.layers, net_param.layer):
            for blob in layer.blobs:
                proto_io.array_to_blob(blob.data, layer_param.blobs.add(),
                                       diff=blob.diff if write_diff else None)
        return net_param

    def _definition(self):
        """The NetParameter of the layers as built, without blob values."""
        net_param = pb.NetParameter(name=self.name)
        for step in self.steps:
            layer_param = net_param.layer.add()
            layer_param.CopyFrom(step.plan.param)
            del layer_param.blobs[:]
        return net_param

    def save(self, path, write_diff=False):
        """Write the weights as a binary caffemodel, or in Caffe's HDF5 layout when ``path``
        ends in .h5 (as Caffe's snapshots: ``.caffemodel.h5``)."""
        path = os.fspath(path)
        if path.endswith(".h5"):
            from .hdf5 import save_weights_hdf5
            save_weights_hdf5(self, path, write_diff)
        else:       # the bytes of write_binary(to_proto()), written without a serialized copy
            proto_io.write_caffemodel(self._definition(), [
                [(blob.data, blob.diff if write_diff else None) for blob in layer.blobs]
                for layer in self.layers], path)

    def to_onnx(self, path=None, opset=None, batch="dynamic"):
        """Write the net (TEST phase) as an ONNX model to ``path`` and return the ModelProto;
        ``opset`` (default 17), ``batch`` "dynamic" (axis 0 of the inputs left free), a size, or
        None (the net's shapes). Needs the onnx package. See :mod:`jitnet.export`."""
        from .export import to_onnx
        return to_onnx(self, path, opset=opset, batch=batch)

    def save_hdf5(self, path, write_diff=False):
        """pycaffe's save_hdf5: the weights in Caffe's HDF5 layout, whatever the file's name."""
        from .hdf5 import save_weights_hdf5
        save_weights_hdf5(self, os.fspath(path), write_diff)

    def load_hdf5(self, path):
        """pycaffe's load_hdf5: copy_from an HDF5 weights file."""
        self.copy_from(path)

    def __repr__(self):
        return f"<Net '{self.name}' ({'TRAIN' if self.phase == planner.TRAIN else 'TEST'}), " \
               f"{len(self.layers)} layers>"
