"""The same net in the frameworks jitnet is measured against, built from one jitnet Net.

* :class:`TorchNet` runs a jitnet net's plan over PyTorch tensors: the same layers in
  the same order, with the same weights and Caffe's semantics (ceil-mode pooling with
  Caffe's last-window rule and average divisor, LRN's two modes, BatchNorm's stored
  statistics), so a time can be compared and the outputs checked against jitnet's.
* :func:`opencv_net` loads the prototxt and a caffemodel into OpenCV 4's ``cv2.dnn``
  (which reads Caffe files itself; OpenCV 5 removed it).

Both are optional: ``pip install -e ".[bench]"`` installs them.
"""
import numpy as np

try:
    import torch
    import torch.nn.functional as F
except ImportError:          # the benchmarks run without peers
    torch = F = None

try:
    import cv2
except ImportError:
    cv2 = None


def _spatial(p, name, default):
    """(h, w) of a convolution/pooling field given as name, name_h/name_w or repeated."""
    fields = p.DESCRIPTOR.fields_by_name
    if f"{name}_h" in fields and (p.HasField(f"{name}_h") or p.HasField(f"{name}_w")):
        return getattr(p, f"{name}_h"), getattr(p, f"{name}_w")
    field = "kernel_size" if name == "kernel" else name
    values = getattr(p, field)
    if isinstance(values, int):
        return (values, values) if p.HasField(field) else (default, default)
    values = list(values)
    if not values:
        return default, default
    return (values[0], values[-1])


def _pool(layer, x):
    p = layer.param.pooling_param
    if p.global_pooling:
        k, s, pad = tuple(x.shape[2:]), (1, 1), (0, 0)
    else:
        k, s, pad = _spatial(p, "kernel", None), _spatial(p, "stride", 1), _spatial(p, "pad", 0)
    ceil = p.round_mode == p.CEIL
    if p.pool == p.MAX:
        return F.max_pool2d(x, k, s, pad, ceil_mode=ceil)
    if p.pool == p.AVE:
        return F.avg_pool2d(x, k, s, pad, ceil_mode=ceil, count_include_pad=True)
    raise NotImplementedError("STOCHASTIC pooling has no PyTorch peer")


def _lrn(layer, x):
    p = layer.param.lrn_param
    if p.norm_region == p.ACROSS_CHANNELS:
        return F.local_response_norm(x, p.local_size, p.alpha, p.beta, p.k)
    pad = (p.local_size - 1) // 2
    mean = F.avg_pool2d(x * x, p.local_size, 1, pad, count_include_pad=True)
    return x * (1 + p.alpha * mean) ** -p.beta


def _conv(layer, x, w):
    p = layer.param.convolution_param
    b = w[1] if len(w) > 1 else None
    args = dict(stride=_spatial(p, "stride", 1), padding=_spatial(p, "pad", 0),
                dilation=_spatial(p, "dilation", 1), groups=p.group)
    if layer.type == "Deconvolution":
        return F.conv_transpose2d(x, w[0], b, **args)
    return F.conv2d(x, w[0], b, **args)


def _inner_product(layer, x, w):
    p = layer.param.inner_product_param
    x = x.flatten(layer.axis)
    weight = w[0].t() if p.transpose else w[0]
    return F.linear(x, weight, w[1] if len(w) > 1 else None)


def _broadcast(t, x, axis):
    return t.reshape((1,) * axis + tuple(t.shape) + (1,) * (x.dim() - axis - t.dim()))


def _batch_norm(layer, x, w):
    factor = float(w[2].reshape(-1)[0])
    factor = 0.0 if factor == 0 else 1.0 / factor
    return F.batch_norm(x, w[0] * factor, w[1] * factor, training=False,
                        eps=layer.param.batch_norm_param.eps)


def _scale(layer, bottoms, w):
    x = bottoms[0]
    axis = layer.axis if hasattr(layer, "axis") else 1
    s = bottoms[1] if len(bottoms) > 1 else w[0]
    y = x * _broadcast(s, x, axis)
    bias = w[-1] if layer.param.scale_param.bias_term else None
    return y + _broadcast(bias, x, axis) if bias is not None else y


def _eltwise(layer, bottoms):
    p = layer.param.eltwise_param
    if p.operation == p.PROD:
        out = bottoms[0]
        for b in bottoms[1:]:
            out = out * b
        return out
    if p.operation == p.MAX:
        out = bottoms[0]
        for b in bottoms[1:]:
            out = torch.maximum(out, b)
        return out
    coeffs = list(p.coeff) or [1.0] * len(bottoms)
    out = coeffs[0] * bottoms[0]
    for c, b in zip(coeffs[1:], bottoms[1:]):
        out = out + c * b
    return out


def _crop(layer, x, ref):
    p = layer.param.crop_param
    axis = p.axis % x.dim()
    offsets = list(p.offset) or [0]
    index = [slice(None)] * x.dim()
    for i in range(axis, x.dim()):
        o = offsets[0] if len(offsets) == 1 else offsets[i - axis]
        index[i] = slice(o, o + ref.shape[i])
    return x[tuple(index)]


# type -> f(layer, bottoms, weights, top shapes) -> list of tops
OPS = {
    "Convolution": lambda l, b, w, s: [_conv(l, x, w) for x in b],
    "Deconvolution": lambda l, b, w, s: [_conv(l, x, w) for x in b],
    "Pooling": lambda l, b, w, s: [_pool(l, b[0])],
    "LRN": lambda l, b, w, s: [_lrn(l, b[0])],
    "ReLU": lambda l, b, w, s: [F.leaky_relu(b[0], l.param.relu_param.negative_slope)
                                if l.param.relu_param.negative_slope else F.relu(b[0])],
    "Sigmoid": lambda l, b, w, s: [torch.sigmoid(b[0])],
    "TanH": lambda l, b, w, s: [torch.tanh(b[0])],
    "Dropout": lambda l, b, w, s: [F.dropout(b[0], l.param.dropout_param.dropout_ratio,
                                             training=l.phase == 0)],
    "InnerProduct": lambda l, b, w, s: [_inner_product(l, b[0], w)],
    "Softmax": lambda l, b, w, s: [F.softmax(b[0], dim=l.param.softmax_param.axis)],
    "SoftmaxWithLoss": lambda l, b, w, s: [F.cross_entropy(b[0], b[1].long())],
    "Split": lambda l, b, w, s: [b[0]] * len(s),
    "Flatten": lambda l, b, w, s: [b[0].reshape(s[0])],
    "Reshape": lambda l, b, w, s: [b[0].reshape(s[0])],
    "Concat": lambda l, b, w, s: [torch.cat(b, dim=l.param.concat_param.axis)],
    "Eltwise": lambda l, b, w, s: [_eltwise(l, b)],
    "BatchNorm": lambda l, b, w, s: [_batch_norm(l, b[0], w)],
    "Scale": lambda l, b, w, s: [_scale(l, b, w)],
    "Crop": lambda l, b, w, s: [_crop(l, b[0], b[1])],
}
SOURCES = {"Input", "DummyData", "MemoryData", "HDF5Data"}
SKIPPED = {"Accuracy", "Silence"}


class TorchNet:
    """A jitnet Net's plan run over PyTorch tensors, with copies of its weights.

    ``forward(inputs)`` takes {input blob: array} and returns {blob: tensor}; with
    ``train=True`` the weights require gradients and ``parameters()`` lists them for a
    torch optimizer. Raises NotImplementedError for a layer type without a PyTorch form."""

    def __init__(self, net, train=False):
        if torch is None:
            raise ImportError("PyTorch is not installed (pip install -e '.[bench]')")
        self.net = net
        self.weights = {layer.name: [torch.tensor(np.array(b.data), requires_grad=train)
                                     for b in layer.blobs] for layer in net.layers}
        missing = {l.type for l in net.layers} - set(OPS) - SOURCES - SKIPPED
        if missing:
            raise NotImplementedError(f"no PyTorch form for {sorted(missing)}")

    def parameters(self):
        return [t for ts in self.weights.values() for t in ts]

    def forward(self, inputs):
        values = {name: torch.as_tensor(np.asarray(a, dtype=np.float32)) for name, a in inputs.items()}
        for step in self.net.steps:
            layer = step.layer
            if layer.type in SOURCES or layer.type in SKIPPED:
                continue
            bottoms = [values[name] for name in step.plan.bottoms]
            tops = OPS[layer.type](layer, bottoms, self.weights[layer.name], [t.shape for t in step.tops])
            for name, value in zip(step.plan.tops, tops):
                values[name] = value
        return values


def opencv_net(prototxt, caffemodel, threads=None):
    """OpenCV's dnn reading of a Caffe deploy net (None when OpenCV 4 is not installed)."""
    if cv2 is None or not hasattr(cv2, "dnn") or not hasattr(cv2.dnn, "readNetFromCaffe"):
        return None
    if threads:
        cv2.setNumThreads(threads)
    return cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))


def opencv_forward(cv_net, inputs, outputs):
    for name, array in inputs.items():
        cv_net.setInput(np.ascontiguousarray(array, dtype=np.float32), name)
    return dict(zip(outputs, cv_net.forward(outputs)))
