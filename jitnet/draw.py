"""Pictures of nets, as Caffe's ``draw_net.py`` made them: ``jitnet draw NET.prototxt out.png``.

The picture is drawn from the NetParameter itself (no layer is built), so any Caffe net
draws, whatever layer types it uses. Layers are boxes labelled with their name, type and
key parameters (kernel size, stride and padding of convolutions and poolings, the pooling
method); blobs are grey octagons; an edge from a layer to its top carries the layer's
outputs (num_output) or a Data layer's batch size, as in Caffe's pictures. Colours follow
Caffe's: convolutions red, poolings orange, inner products purple, neurons green, other
layers blue. A blob written in place (``top: "x"`` over ``bottom: "x"``) gets a new node
after the layer that rewrote it, so the picture stays a flow from data to loss; layers of
different phases writing one top (a TRAIN and a TEST data layer) share its node.

Two renderers:

* Graphviz, through ``pydot``, when Graphviz's ``dot`` program is on the PATH (the layout
  Caffe's pictures have);
* otherwise a layered layout of jitnet's own drawn with networkx and matplotlib (nodes in
  ranks by their longest path from the inputs, ordered within a rank to keep edges short),
  so drawing works after a plain ``pip install``.
"""
import os
import shutil

from .errors import JitnetError
from .proto import io as proto_io

LAYER_COLOR = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
               "InnerProduct": "#CC33FF"}
DEFAULT_LAYER_COLOR = "#6495ED"
NEURON_COLOR = "#90EE90"
BLOB_COLOR = "#E0E0E0"
POOL_METHODS = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
RANKDIRS = ("LR", "TB", "BT", "RL")
FORMATS = ("png", "svg", "pdf")


def _first(values, default):
    return values[0] if len(values) else default


def layer_label(layer, separator="\n"):
    """Name, (type) and, for convolutions and poolings, kernel size, stride and pad."""
    kind = layer.type
    if kind == "Pooling":
        kind = f"{kind} {POOL_METHODS.get(layer.pooling_param.pool, layer.pooling_param.pool)}"
    parts = [layer.name, f"({kind})"]
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = _first(p.kernel_size, p.kernel_h or 1)
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {_first(p.stride, p.stride_h or 1)}",
                                     f"pad: {_first(p.pad, p.pad_h)}"]))
    elif layer.type == "Pooling":
        p = layer.pooling_param
        kernel = "global" if p.global_pooling else p.kernel_size or p.kernel_h
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {p.stride or p.stride_h}",
                                     f"pad: {p.pad or p.pad_h}"]))
    return separator.join(parts)


def edge_label(layer):
    """What Caffe writes on a layer's edges to its tops: outputs, or a data layer's batch size."""
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    batch = {"Data": layer.data_param.batch_size, "ImageData": layer.image_data_param.batch_size,
             "HDF5Data": layer.hdf5_data_param.batch_size,
             "WindowData": layer.window_data_param.batch_size,
             "MemoryData": layer.memory_data_param.batch_size}.get(layer.type)
    return f"Batch {batch}" if batch else ""


def net_graph(net_param, phase=None, separator="\n"):
    """(nodes, edges) of the picture: nodes {id: (kind, label, colour)} with kind "layer" or
    "blob", in definition order; edges [(from id, to id, label)]. ``phase`` (jitnet.TRAIN /
    TEST) keeps the layers of that phase; None keeps them all (Caffe's ALL)."""
    from .planner import filter_layers
    layers = list(net_param.layer) if phase is None else filter_layers(net_param, phase)
    nodes, edges, version = {}, [], {}

    def blob_node(name):
        if name not in version:
            version[name] = 0
            nodes[f"blob:{name}:0"] = ("blob", name, BLOB_COLOR)
        return f"blob:{name}:{version[name]}"
    for i, layer in enumerate(layers):
        lid = f"layer:{i}:{layer.name}"
        in_place = any(t in layer.bottom for t in layer.top)
        neuron = in_place and len(layer.bottom) == 1 and len(layer.top) == 1
        color = NEURON_COLOR if neuron else LAYER_COLOR.get(layer.type, DEFAULT_LAYER_COLOR)
        nodes[lid] = ("layer", layer_label(layer, separator), color)
        for bottom in layer.bottom:
            edges.append((blob_node(bottom), lid, ""))
        for top in layer.top:
            if top in layer.bottom:          # written in place: the blob after this layer
                version[top] += 1
                nodes[f"blob:{top}:{version[top]}"] = ("blob", top, BLOB_COLOR)
            edges.append((lid, blob_node(top), edge_label(layer)))
    return nodes, edges


def _format_of(path):
    ext = os.path.splitext(path)[1].lower().lstrip(".")
    if ext not in FORMATS:
        raise JitnetError(f"draw: cannot tell the picture format from '{path}'; name it .png, .svg or .pdf")
    return ext


def graphviz_available():
    """Whether Graphviz's dot program and pydot are there."""
    if shutil.which("dot") is None:
        return False
    try:
        import pydot  # noqa: F401
    except ImportError:
        return False
    return True


def draw_net(net_param, path, rankdir="LR", phase=None, renderer="auto"):
    """Draw ``net_param`` to ``path`` (.png, .svg or .pdf); ``renderer`` "graphviz",
    "matplotlib" or "auto" (Graphviz when dot is installed). Returns the renderer used."""
    if rankdir not in RANKDIRS:
        raise JitnetError(f"draw: rankdir must be one of {', '.join(RANKDIRS)}, got '{rankdir}'")
    fmt = _format_of(path)
    if renderer == "auto":
        renderer = "graphviz" if graphviz_available() else "matplotlib"
    separator = " " if rankdir in ("TB", "BT") else "\n"
    nodes, edges = net_graph(net_param, phase, separator)
    if renderer == "graphviz":
        if not graphviz_available():
            raise JitnetError("draw: the graphviz renderer needs Graphviz's dot program on the PATH "
                              "and the pydot package")
        _draw_graphviz(net_param.name, nodes, edges, path, fmt, rankdir)
    elif renderer == "matplotlib":
        _draw_matplotlib(net_param.name, nodes, edges, path, fmt, rankdir)
    else:
        raise JitnetError(f"draw: unknown renderer '{renderer}' (graphviz, matplotlib or auto)")
    return renderer


def draw_net_file(prototxt, path, rankdir="LR", phase=None, renderer="auto"):
    """Read a net prototxt (any Caffe version) and draw it; see :func:`draw_net`."""
    return draw_net(proto_io.read_net(prototxt), path, rankdir, phase, renderer)


# ------------------------------------------------------------------------------ Graphviz
def _quoted(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _draw_graphviz(name, nodes, edges, path, fmt, rankdir):
    import pydot
    graph = pydot.Dot(_quoted(name or "net"), graph_type="digraph", rankdir=rankdir)
    for nid, (kind, label, color) in nodes.items():
        shape = "octagon" if kind == "blob" else "record"
        graph.add_node(pydot.Node(_quoted(nid), label=_quoted(label), shape=shape,
                                  style="filled", fillcolor=color))
    for a, b, label in edges:
        graph.add_edge(pydot.Edge(_quoted(a), _quoted(b), label=_quoted(label)))
    try:
        graph.write(path, format=fmt)
    except (OSError, AssertionError) as e:
        raise JitnetError(f"draw: Graphviz could not write '{path}': {e}") from None


# ------------------------------------------------------------------------------ matplotlib
def layered_layout(nodes, edges):
    """{node: (rank, slot)}: rank = longest path from a node without inputs; slots within a
    rank ordered by the mean slot of the node's neighbours (a few sweeps down and up)."""
    import networkx as nx
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from((a, b) for a, b, _ in edges)
    rank = {}
    for node in nx.topological_sort(graph):
        rank[node] = max((rank[p] + 1 for p in graph.predecessors(node)), default=0)
    ranks = {}
    for node in nodes:                       # definition order first
        ranks.setdefault(rank[node], []).append(node)
    order = [ranks[r] for r in sorted(ranks)]
    slot = {n: i for level in order for i, n in enumerate(level)}
    for sweep in range(4):
        levels = order[1:] if sweep % 2 == 0 else order[-2::-1]
        for level in levels:
            neighbours = graph.predecessors if sweep % 2 == 0 else graph.successors

            def key(n):
                near = [slot[m] for m in neighbours(n)]
                return sum(near) / len(near) if near else slot[n]
            level.sort(key=key)
            for i, n in enumerate(level):
                slot[n] = i
    width = max(len(level) for level in order)
    return {n: (rank[n], slot[n] + (width - len(order[rank[n]])) / 2.0) for n in nodes}


def _draw_matplotlib(name, nodes, edges, path, fmt, rankdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    place = layered_layout(nodes, edges)
    horizontal = rankdir in ("LR", "RL")

    def extent(label):
        """(width, height) in inches of a node's box with its label at 9 pt."""
        lines = label.split("\n")
        return 0.075 * max(len(line) for line in lines) + 0.35, 0.16 * len(lines) + 0.22
    depth = max(r for r, _ in place.values()) + 1
    breadth = max(s for _, s in place.values()) + 1
    along_size = [0.0] * depth             # each rank as deep as its largest node
    across_step = 0.0
    for nid, (_, label, _) in nodes.items():
        w, h = extent(label)
        along, across = (w, h) if horizontal else (h, w)
        rank = place[nid][0]
        along_size[rank] = max(along_size[rank], along)
        across_step = max(across_step, across)
    gap = 0.55
    starts = [sum(along_size[:r]) + gap * r for r in range(depth)]
    total_along = sum(along_size) + gap * (depth - 1) + 0.4
    across_step += 0.3
    size = (total_along, breadth * across_step + 0.3) if horizontal else \
        (breadth * across_step + 0.3, total_along + 0.3)
    fig = plt.figure(figsize=(max(size[0], 2.0), max(size[1], 1.5)))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(0, fig.get_figwidth())
    ax.set_ylim(0, fig.get_figheight())
    ax.axis("off")
    top = fig.get_figheight() - 0.3 if not horizontal else fig.get_figheight()

    def xy(node):
        r, s = place[node]
        along = 0.2 + starts[r] + along_size[r] / 2
        across = (s + 0.5) * across_step
        if rankdir == "LR":
            return along, top - across
        if rankdir == "RL":
            return fig.get_figwidth() - along, top - across
        if rankdir == "TB":
            return across, top - along
        return across, along
    texts = {}
    for nid, (kind, label, color) in nodes.items():
        style = "round,pad=0.4" if kind == "blob" else "square,pad=0.5"
        texts[nid] = ax.text(*xy(nid), label, ha="center", va="center", fontsize=9,
                             family="DejaVu Sans", zorder=3,
                             bbox=dict(boxstyle=style, fc=color, ec="black", lw=0.8))
    fig.canvas.draw()                      # places the boxes, so the arrows can stop at them
    for a, b, label in edges:
        ax.annotate("", xy=xy(b), xytext=xy(a), zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="#333333", lw=0.9, shrinkA=0, shrinkB=0,
                                    patchA=texts[a].get_bbox_patch(), patchB=texts[b].get_bbox_patch()))
        if label:
            (x0, y0), (x1, y1) = xy(a), xy(b)
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, label, fontsize=8, ha="center", va="bottom",
                    color="#222222", zorder=4)
    if name:
        ax.text(0.1, fig.get_figheight() - 0.05, name, fontsize=10, ha="left", va="top", weight="bold")
    try:
        fig.savefig(path, format=fmt, dpi=100)
    except OSError as e:
        raise JitnetError(f"draw: cannot write '{path}': {e}") from None
    finally:
        plt.close(fig)
