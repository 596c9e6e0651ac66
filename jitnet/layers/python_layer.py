"""The ``Python`` layer: a layer written by the user in Python, as pycaffe's PythonLayer.

    layer {
      name: "loss" type: "Python" bottom: "pred" bottom: "label" top: "loss"
      python_param { module: "pyloss" layer: "EuclideanLossLayer" param_str: "{'scale': 2}" }
      loss_weight: 1
    }

``module`` is imported (from ``sys.path``: the working directory, PYTHONPATH, ...) and
``layer`` names a class in it, written as for pycaffe::

    import jitnet as caffe           # or: import caffe, with pycaffe

    class EuclideanLossLayer(caffe.Layer):
        def setup(self, bottom, top):       # self.param_str, self.phase are set
            ...
        def reshape(self, bottom, top):
            top[0].reshape(1)
        def forward(self, bottom, top):
            top[0].data[...] = ...           # bottom[i].data, .diff, .shape, .num, .count
        def backward(self, top, propagate_down, bottom):
            bottom[0].diff[...] = ...

Learnable blobs are added in setup with ``self.blobs.add_blob(*shape)`` (they are
saved, loaded and updated like any layer's; give a ``param { }`` entry per blob when
nothing below the layer needs a gradient and its blobs must still learn, since jitnet
decides who runs backward before the layer's setup runs, Caffe after).

**This layer runs the user's code, by design**: importing the module executes it, and
its methods run inside forward and backward. A prototxt naming a Python layer is as
trusted as the module it names. Nothing else in jitnet ever runs code from a file: nets,
weights, solvers and snapshots are data.

The layer is host-only: in GPU mode it still computes on the host with numpy (its blobs
are copied to and from the device as needed). Exceptions raised by the user's methods
come out as a LayerError naming the layer, the method and the exception (the original
is chained as its cause, with its traceback). Caffe lets any layer run in place; so does
this one, and whether the user's code computes correctly in place is the user's affair.
"""
import importlib
import sys

from ..errors import JitnetError
from ..layer import Layer, register


class BlobView:
    """A jitnet Blob as pycaffe's Python layers see it: ``data``, ``diff`` (host numpy
    arrays), ``shape``, ``count``, ``num``/``channels``/``height``/``width`` (the legacy
    4-D accessors) and ``reshape(*shape)``."""

    __slots__ = ("_blob",)

    def __init__(self, blob):
        self._blob = blob

    def _legacy(self, axis):
        shape = self._blob.shape
        if len(shape) > 4:
            raise JitnetError(f"num/channels/height/width are for blobs of at most 4 axes; "
                              f"this one has shape {shape}")
        return shape[axis] if axis < len(shape) else 1

    data = property(lambda self: self._blob.data, lambda self, value: setattr(self._blob, "data", value))
    diff = property(lambda self: self._blob.diff, lambda self, value: setattr(self._blob, "diff", value))
    shape = property(lambda self: self._blob.shape)
    count = property(lambda self: self._blob.count)
    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape):
        self._blob.reshape(*shape)

    def __repr__(self):
        return f"<blob of shape {self._blob.shape}>"


class BlobVec(list):
    """A Python layer's learnable blobs: a list of jitnet Blobs with pycaffe's
    ``add_blob(*shape)``."""

    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype

    def add_blob(self, *shape):
        from ..blob import Blob
        self.append(Blob(*shape, dtype=self.dtype))
        return self[-1]


def _views(blobs):
    return [BlobView(blob) for blob in blobs]


@register("Python")
class Python(Layer):
    """A user's layer class named by python_param { module layer param_str } (see the module
    docstring; it runs the user's code by design)."""

    host_only = True
    in_place = True

    @classmethod
    def param_count(cls, layer_param):
        return len(layer_param.param)

    def __init__(self, layer_param, phase):
        super().__init__(layer_param, phase)
        self.user = self._instantiate(self._user_class())

    def _user_class(self):
        p = self.param.python_param
        if not p.module or not p.layer:
            raise self.error("python_param needs module (a Python module on sys.path) and layer "
                             f"(a class in it); got module '{p.module}', layer '{p.layer}'")
        try:
            module = importlib.import_module(p.module)
        except ModuleNotFoundError as error:
            if error.name and p.module.split(".")[0] != error.name.split(".")[0] \
                    and not p.module.startswith(error.name):
                raise self.error(f"importing python_param.module '{p.module}' failed: it imports "
                                 f"'{error.name}', which is not installed") from error
            raise self.error(f"python_param.module '{p.module}' cannot be imported: no such "
                             f"module on sys.path ({', '.join(repr(d) for d in sys.path)})") from None
        except Exception as error:
            raise self.error(f"importing python_param.module '{p.module}' failed: "
                             f"{type(error).__name__}: {error}") from error
        cls = getattr(module, p.layer, None)
        if cls is None or not callable(cls):
            found = sorted(name for name, value in vars(module).items()
                           if isinstance(value, type) and not name.startswith("_"))
            raise self.error(f"module '{p.module}' ({getattr(module, '__file__', '?')}) has no class "
                             f"'{p.layer}' (classes: {', '.join(found) or 'none'})")
        return cls

    def _instantiate(self, cls):
        try:
            if isinstance(cls, type) and issubclass(cls, Layer):
                user = cls(self.param, self.phase)
            else:
                user = cls(self.param)
        except Exception as error:
            raise self.error(f"creating {self.param.python_param.layer}: {type(error).__name__}: "
                             f"{error}") from error
        user.param_str = self.param.python_param.param_str
        user.phase = self.phase
        return user

    def _call(self, hook, *args):
        method = getattr(self.user, hook, None)
        if method is None:
            raise self.error(f"the class {self.param.python_param.layer} has no {hook}() method")
        try:
            return method(*args)
        except JitnetError:
            raise
        except Exception as error:
            raise self.error(f"{self.param.python_param.layer}.{hook}() raised "
                             f"{type(error).__name__}: {error}") from error

    def setup(self, bottom, top):
        self.blobs = BlobVec(self.dtype)
        self.user.blobs = self.blobs
        self._call("setup", _views(bottom), _views(top))

    def reshape(self, bottom, top):
        self._call("reshape", _views(bottom), _views(top))

    def forward(self, bottom, top):
        self._call("forward", _views(bottom), _views(top))

    def backward(self, top, propagate_down, bottom):
        self._call("backward", _views(top), [bool(p) for p in propagate_down], _views(bottom))


__all__ = ["Python", "BlobView", "BlobVec"]
