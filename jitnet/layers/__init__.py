"""The layer catalogue, one module per family. Importing this package registers
every built-in layer type under its Caffe name."""
from . import common, data, loss, neuron, normalization, vision  # noqa: F401
