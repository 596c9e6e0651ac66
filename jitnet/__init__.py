"""jitnet: Caffe's model (Blob, Layer, Net, Solver; nets written as prototxt) in
Python, with every layer's forward and backward a numba kernel, ``@njit`` on the
CPU and ``@cuda.jit`` on the GPU.

The surface follows pycaffe::

    import jitnet
    net = jitnet.Net("deploy.prototxt", jitnet.TEST, weights="model.caffemodel")
    out = net.forward(data=batch)
    solver = jitnet.get_solver("solver.prototxt")
    solver.solve()

A pycaffe script runs with ``import jitnet as caffe`` in place of ``import caffe``:
``caffe.NetSpec``, ``caffe.layers`` / ``caffe.params`` (NetSpec's L and P),
``caffe.io`` (Transformer, load_image, ...), ``caffe.Classifier``, ``caffe.Detector``,
``caffe.Layer`` (the base of a ``Python`` layer's class) and ``caffe.proto.caffe_pb2``.
"""
from .blob import Blob
from .common import (TEST, TRAIN, mode, set_device, set_mode_cpu, set_mode_gpu, set_random_seed)
from .errors import (DeviceError, JitnetError, LayerError, NetDefinitionError, NumericalError,
                     ProtoError, SolverError, WeightsError)
from .layer import Layer, layer_type_list, register
from .net import Net
from . import io, layers, proto  # noqa: E402  (pycaffe's caffe.io, caffe.layers, caffe.proto)
from .classifier import Classifier, Detector
from .netspec import NetSpec, params, to_proto
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,
                      SGDSolver, Solver, get_solver)

__version__ = "0.1.0"

__all__ = [
    "Blob", "Layer", "Net", "Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
    "AdaDeltaSolver", "AdamSolver", "get_solver", "register", "layer_type_list",
    "TRAIN", "TEST", "mode", "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed",
    "JitnetError", "NumericalError", "ProtoError", "NetDefinitionError", "LayerError", "SolverError", "WeightsError",
    "DeviceError", "NetSpec", "layers", "params", "to_proto", "io", "proto", "Classifier", "Detector",
]
