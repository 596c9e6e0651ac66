"""jitnet's error classes.

Every error a user can cause (a bad prototxt, a missing blob, a wrong shape, an
unknown layer type) is raised as a subclass of :class:`JitnetError` whose message
says what is wrong and where: the file and line, the layer, the blob.
"""


class JitnetError(Exception):
    """Base class of every error jitnet raises for a user's mistake."""


class ProtoError(JitnetError):
    """A prototxt, caffemodel, binaryproto or solverstate file could not be read or written.

    ``path``, ``line`` and ``column`` (1-based) locate the problem when known.
    """

    def __init__(self, message, path=None, line=None, column=None):
        self.path, self.line, self.column = path, line, column
        where = ""
        if path is not None:
            where = str(path)
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        super().__init__(where + message)


class NetDefinitionError(JitnetError):
    """The net definition is inconsistent: a missing bottom, a cycle, a duplicate top, ..."""


class LayerError(JitnetError):
    """A layer's parameters or its bottoms are wrong. The message names the layer."""

    def __init__(self, layer_name, layer_type, message):
        self.layer_name, self.layer_type = layer_name, layer_type
        super().__init__(f"layer '{layer_name}' (type {layer_type}): {message}")


class SolverError(JitnetError):
    """The solver definition or a solver state file is wrong."""


class WeightsError(JitnetError):
    """Weights from a caffemodel (or HDF5 file) do not fit the net."""


class DeviceError(JitnetError):
    """GPU mode was asked for but no CUDA device (or simulator) is available,
    or a layer has no GPU implementation."""


class NumericalError(JitnetError):
    """Training produced NaN or infinity. The message names the iteration and the first
    layer (in forward order, then backward order) whose output went non-finite."""
