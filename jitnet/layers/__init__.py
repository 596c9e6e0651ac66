"""The layer catalogue, one module per family. Importing this package registers
every built-in layer type under its Caffe name.

This package is also pycaffe's ``caffe.layers`` for NetSpec users: ``from jitnet import
layers as L`` and ``L.Convolution(n.data, num_output=20)``. Attributes named like Caffe
layer types (CamelCase) are NetSpec layer factories (:mod:`jitnet.netspec`); the family
modules keep their lowercase names."""
from . import common, data, loss, neuron, normalization, python_layer, recurrent, vision  # noqa: F401


def __getattr__(name):
    from ..netspec import is_type_name, layer_factory
    if is_type_name(name):
        return layer_factory(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
