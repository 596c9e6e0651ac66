"""The graph planner: from a net definition to the plan Net executes.

``plan(net_param, phase, level, stages)`` is a pure function of the
``NetParameter`` (already upgraded to the current format by ``jitnet.proto``)
and the net state. It does all the graph reasoning Caffe's ``Net::Init`` does,
once, so that ``Net`` only runs the result:

1. keep the layers whose include/exclude rules match the state;
2. check each layer's type and its number of bottoms and tops;
3. resolve every bottom to the layer that produces it (in-place layers, whose
   top has the same name as a bottom, produce a new version of that blob) and
   order the layers bottom to top: a topological order that keeps the
   prototxt's order wherever that is already valid;
4. insert a Split layer where one top feeds several bottoms (or feeds a bottom
   and carries a loss weight), named as Caffe names them, so diffs are summed;
5. give loss layers loss_weight 1 on their first top by default;
6. decide, per layer and per bottom, whether backward runs (learnable params
   with lr_mult != 0, bottoms that need gradients, propagate_down, and only where
   the layer leads to a loss; force_backward turns every layer and every bottom
   that can take a gradient on);
7. the backward order is the forward order reversed, keeping the layers that
   need backward.
"""
from dataclasses import dataclass, field

from .common import TEST, TRAIN
from .errors import NetDefinitionError
from .layer import layer_class, layer_type_list
from .proto import pb


@dataclass
class Step:
    """One layer of the plan, with the blob names it reads and writes."""
    index: int
    param: object                  # LayerParameter (bottoms/tops renamed for splits)
    bottoms: list
    tops: list
    loss_weights: list             # one per top
    need_backward: bool = False
    propagate_down: list = field(default_factory=list)   # one per bottom

    @property
    def name(self):
        return self.param.name

    @property
    def type(self):
        return self.param.type


@dataclass
class Plan:
    """What Net executes: the steps bottom to top, and the ones backward runs, top to bottom."""
    name: str
    phase: int
    level: int
    stages: tuple
    forward: list                  # every step, bottom to top
    backward: list                 # reverse order, only steps with need_backward
    blobs: list                    # blob names, in order of first appearance
    inputs: list                   # tops of Input layers (pycaffe's net.inputs)
    outputs: list                  # tops nothing consumes (pycaffe's net.outputs)
    blob_loss_weights: dict
    blob_need_backward: dict
    force_backward: bool

    def lifetimes(self):
        """blob name -> (index of the step that first writes it, index of the last step that reads it)."""
        spans = {}
        for step in self.forward:
            for name in step.tops:
                first, last = spans.get(name, (step.index, step.index))
                spans[name] = (min(first, step.index), max(last, step.index))
            for name in step.bottoms:
                first, last = spans[name]
                spans[name] = (first, max(last, step.index))
        return spans


def assign_buffers(intervals):
    """Share buffers between values whose lifetimes do not overlap (for inference).

    ``intervals`` is a list of (first step, last step, bytes), one per value; two values
    may share a buffer when one's last step comes strictly before the other's first.
    Greedy by size, as memory planners of inference engines do: the largest value
    takes the first buffer none of whose values overlaps it, or a new buffer; a buffer
    is as large as its first (largest) value. Returns (buffer index per interval,
    the bytes of each buffer)."""
    order = sorted(range(len(intervals)), key=lambda i: (-intervals[i][2], intervals[i][0]))
    owners, sizes, members = [None] * len(intervals), [], []
    for i in order:
        first, last, size = intervals[i]
        for b, taken in enumerate(members):
            if all(l < first or last < f for f, l in taken):
                break
        else:
            b = len(members)
            members.append([])
            sizes.append(size)
        members[b].append((first, last))
        owners[i] = b
    return owners, sizes


# -- 1. state rules ---------------------------------------------------------------------------
def state_meets_rule(phase, level, stages, rule):
    """Caffe's StateMeetsRule: phase, min/max level, every stage present, no not_stage present."""
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def filter_layers(net_param, phase, level=0, stages=()):
    """The layers kept for this state, in prototxt order."""
    kept = []
    for layer in net_param.layer:
        if layer.include and layer.exclude:
            raise NetDefinitionError(f"layer '{layer.name}' has both include and exclude rules; "
                                     "Caffe allows only one kind")
        if layer.include:
            keep = any(state_meets_rule(phase, level, stages, r) for r in layer.include)
        else:
            keep = not any(state_meets_rule(phase, level, stages, r) for r in layer.exclude)
        if keep:
            kept.append(layer)
    return kept


# -- 3. producers and order -------------------------------------------------------------------
def _resolve_producers(layers):
    """For each layer and bottom, the index of the layer producing the version it reads.

    A bottom reads the latest version written before it in prototxt order; a bottom
    written only after it is resolved to that (single, not in-place) producer, so
    definitions listed out of order still work."""
    writers = {}                                   # blob -> [layer indices, prototxt order]
    for i, layer in enumerate(layers):
        names = set()
        for top in layer.top:
            if top in names:
                raise NetDefinitionError(f"layer '{layer.name}' lists top '{top}' twice")
            names.add(top)
            if top in writers and top not in layer.bottom:
                previous = layers[writers[top][-1]].name
                raise NetDefinitionError(
                    f"top '{top}' of layer '{layer.name}' is already produced by layer "
                    f"'{previous}'; only an in-place layer (with '{top}' also as its bottom) "
                    "may write a blob again")
            writers.setdefault(top, []).append(i)

    producers = []
    for i, layer in enumerate(layers):
        sources = []
        for bottom in layer.bottom:
            indices = writers.get(bottom)
            if not indices:
                known = sorted(b for b, w in writers.items() if w != [i])
                raise NetDefinitionError(
                    f"layer '{layer.name}' (type {layer.type}): bottom '{bottom}' is not produced "
                    f"by any layer (blobs other layers produce: {', '.join(known) or 'none'})")
            before = [j for j in indices if j < i]
            if before:
                sources.append(before[-1])
            elif len(indices) == 1 and indices[0] != i:
                sources.append(indices[0])
            else:
                raise NetDefinitionError(
                    f"layer '{layer.name}': bottom '{bottom}' is only produced in place, later in "
                    "the file; list the layers in order")
        producers.append(sources)
    return producers


def _order(layers, producers):
    """Topological order (Kahn), always taking the earliest ready layer in prototxt order."""
    n = len(layers)
    after = [set() for _ in range(n)]              # after[a] = layers that must run after a
    for i, sources in enumerate(producers):
        for j in sources:
            if j != i:
                after[j].add(i)
    # An in-place layer overwrites the version it reads: it must run after every other
    # reader of that version.
    for i, layer in enumerate(layers):
        for b, bottom in enumerate(layer.bottom):
            if bottom in layer.top:
                src = producers[i][b]
                for k, other in enumerate(layers):
                    if k != i and any(producers[k][c] == src and other.bottom[c] == bottom
                                      for c in range(len(other.bottom))):
                        after[k].add(i)
    waiting = [0] * n
    for a in range(n):
        for b in after[a]:
            waiting[b] += 1
    ready = sorted(i for i in range(n) if waiting[i] == 0)
    order = []
    while ready:
        a = ready.pop(0)
        order.append(a)
        for b in after[a]:
            waiting[b] -= 1
            if waiting[b] == 0:
                ready.append(b)
        ready.sort()
    if len(order) < n:
        stuck = [layers[i].name for i in range(n) if i not in set(order)]
        raise NetDefinitionError("the net has a cycle through layers: " + ", ".join(stuck))
    return order


# -- 4. split insertion -------------------------------------------------------------------------
def split_layer_name(blob, layer, top_index):
    return f"{blob}_{layer}_{top_index}_split"


def split_blob_name(blob, layer, top_index, split_index):
    return f"{blob}_{layer}_{top_index}_split_{split_index}"


def _loss_weights(layer, cls):
    weights = list(layer.loss_weight)
    if weights and len(weights) != len(layer.top):
        raise NetDefinitionError(f"layer '{layer.name}' has {len(weights)} loss_weight values "
                                 f"for {len(layer.top)} tops")
    if not weights:
        weights = [0.0] * len(layer.top)
        if cls.is_loss and weights:
            weights[0] = 1.0
    return weights


def _build_steps(layers, order, producers):
    """Steps in order, with Split steps inserted after each producer whose top fans out."""
    consumers = {}                                 # (producer, top index) -> [(layer, bottom index)]
    for i in order:
        for b, src in enumerate(producers[i]):
            top_index = list(layers[src].top).index(layers[i].bottom[b])
            consumers.setdefault((src, top_index), []).append((i, b))

    bottoms = {i: list(layers[i].bottom) for i in order}
    weights = {i: _loss_weights(layers[i], layer_class(layers[i].type, layers[i].name))
               for i in order}
    steps = []
    for i in order:
        layer = layers[i]
        param = pb.LayerParameter()
        param.CopyFrom(layer)
        del param.bottom[:]
        param.bottom.extend(bottoms[i])
        steps.append(Step(len(steps), param, bottoms[i], list(layer.top), weights[i]))
        for t, top in enumerate(layer.top):
            users = consumers.get((i, t), [])
            loss_weight = weights[i][t]
            if len(users) + (1 if loss_weight else 0) <= 1:
                continue
            in_place = [layers[user].name for user, b in users if top in layers[user].top]
            if in_place:
                readers = [layers[user].name for user, b in users if layers[user].name not in in_place]
                raise NetDefinitionError(
                    f"layer '{in_place[0]}' works in place on '{top}', which "
                    f"{'layer' if len(readers) == 1 else 'layers'} {', '.join(repr(r) for r in readers)} "
                    f"also read{'s' if len(readers) == 1 else ''}; its write would change their input. "
                    f"Give the top of '{in_place[0]}' another name (Caffe rejects this net too: "
                    f"top '{top}' produced by multiple sources)")
            split = pb.LayerParameter(name=split_layer_name(top, layer.name, t), type="Split")
            split.bottom.append(top)
            # As Caffe's InsertSplits: the top carrying the loss weight comes first.
            split_weights = ([loss_weight] if loss_weight else []) + [0.0] * len(users)
            split_tops = [split_blob_name(top, layer.name, t, k) for k in range(len(split_weights))]
            for k, (user, b) in enumerate(users):
                bottoms[user][b] = split_tops[k + (1 if loss_weight else 0)]
            if loss_weight:
                weights[i][t] = 0.0
                steps[-1].loss_weights[t] = 0.0
            split.top.extend(split_tops)
            steps.append(Step(len(steps), split, [top], split_tops, split_weights))
    return steps


# -- 6. who runs backward ---------------------------------------------------------------------
def _decide_backward(steps, force_backward):
    blob_need = {}
    for step in steps:
        cls = layer_class(step.type, step.name)
        if step.param.propagate_down and len(step.param.propagate_down) != len(step.bottoms):
            raise NetDefinitionError(
                f"layer '{step.name}' has {len(step.param.propagate_down)} propagate_down values "
                f"for {len(step.bottoms)} bottoms")
        # As Caffe's Net::Init: a layer needs backward when a bottom blob needs it or a param
        # learns; propagate_down only says, per bottom, whether the gradient goes there.
        need = any(blob_need.get(bottom, False) for bottom in step.bottoms)
        step.propagate_down = [bool(step.param.propagate_down[b]) if step.param.propagate_down
                               else blob_need.get(bottom, False)
                               for b, bottom in enumerate(step.bottoms)]
        need = need or any(spec.lr_mult != 0 for spec in cls.param_specs(step.param))
        step.need_backward = need
        for top in step.tops:
            blob_need[top] = need

    # Walk back from the losses: a layer that leads to no loss needs no backward.
    under_loss, skip = set(), set()
    for step in reversed(steps):
        contributes = any(w != 0 or top in under_loss
                          for top, w in zip(step.tops, step.loss_weights))
        skip_down = all(top in skip for top in step.tops) if step.tops else True
        if contributes and skip_down:
            contributes = False
        if step.need_backward and skip_down:
            step.need_backward = False
            step.propagate_down = [False] * len(step.bottoms)
        if not contributes:
            step.need_backward = False
        for b, bottom in enumerate(step.bottoms):
            if contributes:
                under_loss.add(bottom)
            else:
                step.propagate_down[b] = False
            if not step.propagate_down[b]:
                skip.add(bottom)
            else:
                skip.discard(bottom)

    if force_backward:
        for step in steps:
            cls = layer_class(step.type, step.name)
            step.need_backward = True
            step.propagate_down = [pd or cls.allow_force_backward(step.param, b)
                                   for b, pd in enumerate(step.propagate_down)]
    for step in steps:
        for top in step.tops:
            blob_need[top] = step.need_backward
    return blob_need


def automatic_top_name(layer_name, index):
    return f"{layer_name} (automatic top {index})"


def _with_automatic_tops(layer):
    """Caffe's AutoTopBlobs: a layer type that declares ``auto_top_blobs`` (the loss layers)
    and names fewer tops than it needs gets anonymous ones (its loss still counts; they are
    no net output). A copy is returned; the user's NetParameter is left alone."""
    cls = layer_class(layer.type, layer.name)
    needed = max(cls.min_tops or 0, cls.exact_tops or 0)
    if not cls.auto_top_blobs or len(layer.top) >= needed:
        return layer
    copy = pb.LayerParameter()
    copy.CopyFrom(layer)
    copy.top.extend(automatic_top_name(layer.name, k) for k in range(len(layer.top), needed))
    return copy


def _check_in_place(layers):
    """NetDefinitionError for a layer written in place (a top that is also a bottom) whose
    type cannot run so (Caffe refuses Flatten and Reshape in place; jitnet every layer
    that does not declare it can)."""
    for layer in layers:
        shared = [top for top in layer.top if top in layer.bottom]
        if not shared:
            continue
        for k, top in enumerate(layer.top):
            j = list(layer.bottom).index(top) if top in layer.bottom else k
            if j != k:
                raise NetDefinitionError(
                    f"layer '{layer.name}' (type {layer.type}): top '{top}' (top {k}) is its bottom "
                    f"{j}; a top runs in place only over the bottom at its own position (Caffe "
                    "refuses this as a top produced by multiple sources)")
        ok, reason = layer_class(layer.type, layer.name).can_run_in_place(layer)
        if not ok:
            raise NetDefinitionError(
                f"layer '{layer.name}' (type {layer.type}) cannot run in place (top "
                f"'{shared[0]}' is also its bottom): {reason}. Give its top another name.")


def _check_types(layers):
    """One NetDefinitionError naming every layer whose type is not registered."""
    known = set(layer_type_list())
    unknown = {}
    for layer in layers:
        if layer.type not in known:
            unknown.setdefault(layer.type, []).append(layer.name)
    if unknown:
        listed = "; ".join(f"'{t}' (layer{'s' if len(n) > 1 else ''} {', '.join(repr(x) for x in n[:3])}"
                           f"{', ...' if len(n) > 3 else ''})" for t, n in unknown.items())
        raise NetDefinitionError(f"unknown layer type{'s' if len(unknown) > 1 else ''} {listed}. "
                                 f"Known types: {', '.join(sorted(known))}")


# -- the whole plan -----------------------------------------------------------------------------
def plan(net_param, phase=TEST, level=0, stages=()):
    """The Plan for ``net_param`` in the given state (phase, level, stages)."""
    if phase not in (TRAIN, TEST):
        raise NetDefinitionError(f"phase must be jitnet.TRAIN or jitnet.TEST, got {phase!r}")
    if len(net_param.layers):
        raise NetDefinitionError("the net still has V1 'layers'; read it with jitnet.proto.read_net, "
                                 "which upgrades it")
    stages = tuple(stages) + tuple(s for s in net_param.state.stage if s not in stages)
    if net_param.state.HasField("level") and not level:
        level = net_param.state.level
    layers = filter_layers(net_param, phase, level, stages)
    _check_types(layers)
    layers = [_with_automatic_tops(layer) for layer in layers]
    for layer in layers:
        layer_class(layer.type, layer.name).check_arity(layer)
    _check_in_place(layers)
    producers = _resolve_producers(layers)
    order = _order(layers, producers)
    steps = _build_steps(layers, order, producers)
    blob_need = _decide_backward(steps, net_param.force_backward)

    blobs, available, loss_weights = [], {}, {}
    for step in steps:
        for bottom in step.bottoms:
            available.pop(bottom, None)
        for top, weight in zip(step.tops, step.loss_weights):
            if top not in loss_weights:
                blobs.append(top)
            loss_weights[top] = weight
            available[top] = True
    inputs = [top for s in steps if s.type == "Input" for top in s.tops]
    # read by nobody after, sorted as Caffe's std::set; automatic tops are no outputs
    outputs = sorted(name for name in available if " (automatic top " not in name)
    backward = [s for s in reversed(steps) if s.need_backward]
    return Plan(net_param.name, phase, level, stages, steps, backward, blobs, inputs, outputs,
                loss_weights, blob_need, net_param.force_backward)
