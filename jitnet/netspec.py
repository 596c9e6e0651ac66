"""NetSpec: write nets from Python, as pycaffe's ``caffe.net_spec`` does.

::

    from jitnet import layers as L, params as P
    n = jitnet.NetSpec()
    n.data, n.label = L.HDF5Data(batch_size=64, source="train.txt", ntop=2)
    n.ip1 = L.InnerProduct(n.data, num_output=10, weight_filler=dict(type="xavier"),
                           param=[dict(lr_mult=1), dict(lr_mult=2)])
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
    n.pool = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=2)
    open("net.prototxt", "w").write(str(n.to_proto()))

``L.<Type>(*bottoms, **fields)`` makes a layer of that Caffe type (any CamelCase name: the
type need not exist in jitnet, so nets for Caffe itself can be written too) and returns
its top, or a tuple of ``ntop`` tops, or the layer itself when ``ntop=0``. Keyword
arguments fill the LayerParameter: a name ending in ``param`` (``param``,
``convolution_param``, ...) goes to the field of that name; any other name goes to the
type's own parameter message (``num_output`` of an InnerProduct is
``inner_product_param.num_output``) when it has such a field, else to the LayerParameter
(``include``, ``loss_weight``, ``propagate_down``, ``name``, ...). Dicts fill messages,
lists fill repeated fields (a list of dicts adds one message each). ``in_place=True``
names the tops like the bottoms. Unnamed tops and layers are named after their type
(``InnerProduct1``), as pycaffe names them; a layer is named after its first top.

``P.<Type>.<NAME>`` is an enum value of ``<Type>Parameter`` (``P.Pooling.MAX``).
"""
from collections import Counter, OrderedDict

from .errors import JitnetError
from .proto import pb

__all__ = ["NetSpec", "Top", "Function", "layers", "params", "to_proto", "param_name_dict",
           "assign_proto"]


def param_name_dict():
    """{layer type: the prefix of its parameter field}: "InnerProduct" -> "inner_product",
    from the schema (the message ``XParameter`` lives in the field ``x_param``)."""
    names = {}
    for field in pb.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            message = field.message_type.name
            if message.endswith("Parameter"):
                names[message[:-len("Parameter")]] = field.name[:-len("_param")]
    # Types whose parameters live in another type's message.
    names.setdefault("Deconvolution", "convolution")
    return names


_PARAM_NAMES = param_name_dict()


def _fail(where, name, value, error):
    raise JitnetError(f"NetSpec: {where}: cannot set {name}={value!r} ({error})") from None


def assign_proto(proto, name, value, where="layer"):
    """Set ``proto.name`` from a Python value: a dict fills a message, a list a repeated
    field (a list of dicts adds a message for each), anything else is assigned."""
    try:
        field = getattr(proto, name)
    except AttributeError:
        _fail(where, name, value, f"{type(proto).__name__} has no field '{name}'")
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, (list, tuple)):
        value = [value]
    try:
        if isinstance(value, (list, tuple)):
            if not repeated:
                _fail(where, name, value, "the field holds one value, not a list")
            if value and isinstance(value[0], dict):
                for item in value:
                    message = field.add()
                    for key, item_value in item.items():
                        assign_proto(message, key, item_value, f"{where}.{name}")
            else:
                field.extend(value)
        elif isinstance(value, dict):
            for key, item_value in value.items():
                assign_proto(field, key, item_value, f"{where}.{name}")
        else:
            setattr(proto, name, value)
    except (TypeError, ValueError, AttributeError) as error:
        _fail(where, name, value, error)


class Top:
    """One output of a Function: what NetSpec attributes and layer inputs hold."""

    def __init__(self, fn, n):
        self.fn, self.n = fn, n

    def to_proto(self):
        """A NetParameter of every layer this top depends on."""
        return to_proto(self)

    def _update(self, params):
        self.fn._update(params)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def __repr__(self):
        return f"<Top {self.n} of {self.fn.type_name}>"


class Function:
    """One layer being written: type, bottoms (Tops) and fields; ``tops`` are its outputs."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for i, bottom in enumerate(inputs):
            if not isinstance(bottom, Top):
                raise JitnetError(f"NetSpec: L.{type_name}: bottom {i} is a {type(bottom).__name__}, "
                                  "not a top made by another L.<Type>(...) (or a NetSpec attribute)")
        self.inputs = list(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if self.in_place and self.ntop != len(self.inputs):
            raise JitnetError(f"NetSpec: L.{type_name}(in_place=True) needs as many tops as "
                              f"bottoms ({len(self.inputs)}), has ntop={self.ntop}")
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _update(self, params):
        self.params.update(params)

    def _top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]

    def _name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for bottom in self.inputs:
            bottom._to_proto(layers, names, autonames)
            bottoms.append(layers[bottom.fn].top[bottom.n])
        layer = pb.LayerParameter(type=self.type_name, bottom=bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self._name(names, autonames)
        where = f"layer '{layer.name}' ({self.type_name})"
        own = _PARAM_NAMES.get(self.type_name)
        for key, value in self.params.items():
            if key.endswith("param"):
                assign_proto(layer, key, value, where)
                continue
            message = getattr(layer, f"{own}_param") if own else None
            if message is not None and key in message.DESCRIPTOR.fields_by_name:
                assign_proto(message, key, value, f"{where}.{own}_param")
            else:
                assign_proto(layer, key, value, where)
        layers[self] = layer


class NetSpec:
    """Named tops; ``to_proto()`` writes the layers that produce them (pycaffe's NetSpec).
    Set tops as attributes (``n.conv1 = L.Convolution(...)``) or items (``n["conv1"]``)."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top named '{name}'") from None

    def __setitem__(self, key, value):
        self.tops[key] = value

    def __getitem__(self, key):
        return self.tops[key]

    def __delattr__(self, name):
        del self.tops[name]

    def __delitem__(self, key):
        del self.tops[key]

    def keys(self):
        return list(self.tops)

    def to_proto(self):
        """A NetParameter whose layers produce every named top, the tops named as set."""
        names = {value: key for key, value in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = pb.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops):
    """A NetParameter of every layer the given tops depend on (pycaffe's ``to_proto``)."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)       # a Top, or a Function made with ntop=0
    net = pb.NetParameter()
    net.layer.extend(layers.values())
    return net


def layer_factory(type_name):
    """``L.<type_name>``: a function making a layer of that type (see the module docstring)."""
    def make(*bottoms, **fields):
        fn = Function(type_name, bottoms, fields)
        if fn.ntop == 0:
            return fn
        if fn.ntop == 1:
            return fn.tops[0]
        return fn.tops
    make.__name__ = make.__qualname__ = type_name
    make.__doc__ = f"A NetSpec layer of type {type_name}: L.{type_name}(*bottoms, **fields)."
    return make


def is_type_name(name):
    """Whether ``name`` reads as a Caffe layer type (CamelCase), so ``L.name`` makes layers."""
    return bool(name) and name[0].isupper() and not name.startswith("_")


class _Layers:
    """``L``: ``L.Convolution(...)`` etc. (also reachable as ``jitnet.layers.Convolution``)."""

    def __getattr__(self, name):
        if not is_type_name(name):
            raise AttributeError(name)
        return layer_factory(name)


class _EnumHolder:
    def __init__(self, type_name, message):
        self._type_name, self._message = type_name, message

    def __getattr__(self, name):
        try:
            return getattr(self._message, name)
        except AttributeError:
            raise AttributeError(f"P.{self._type_name} has no value '{name}' "
                                 f"({self._message.DESCRIPTOR.name})") from None


class _Params:
    """``P``: ``P.Pooling.MAX`` is PoolingParameter's enum value MAX."""

    def __getattr__(self, name):
        message = getattr(pb, f"{name}Parameter", None)
        if message is None or name.startswith("_"):
            raise AttributeError(f"P.{name}: the schema has no {name}Parameter message")
        return _EnumHolder(name, message)


layers = _Layers()
params = _Params()
