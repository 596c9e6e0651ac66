"""Process-wide state, as in Caffe's ``Caffe`` singleton: the compute mode, the
device, the random number generator that fillers, Dropout and data shuffling
draw from, and the kernels for the mode. Also the phase constants TRAIN and TEST
(Caffe's ``Phase`` enum), which layers, planner and solver all use.

``set_random_seed(n)`` makes two runs with the same seed identical. The
generator's state can be saved and restored (solver snapshots do so), so that a
resumed run draws exactly the numbers the uninterrupted run would have drawn.
"""
import importlib

import numpy as np

from .errors import DeviceError, JitnetError

CPU, GPU = "cpu", "gpu"
TRAIN, TEST = 0, 1          # caffe.Phase: the values prototxt and caffemodel files carry

_mode = CPU
_device_id = 0
_rng = np.random.default_rng()


def set_mode_cpu():
    """Run layers and solver updates with the ``@njit`` CPU kernels."""
    global _mode
    _mode = CPU


def set_mode_gpu():
    """Run layers and solver updates with the ``@cuda.jit`` kernels.

    Raises DeviceError when numba finds no CUDA device (or the simulator is off)."""
    global _mode
    from numba import cuda
    if not cuda.is_available():
        raise DeviceError("set_mode_gpu(): numba finds no CUDA device. Check the driver "
                          "(`jitnet device_query`), or set NUMBA_ENABLE_CUDASIM=1 before "
                          "importing jitnet to run the GPU kernels on numba's simulator.")
    _mode = GPU
    cuda.select_device(_device_id)


def set_device(device_id):
    """Choose the GPU used in GPU mode (pycaffe's ``set_device``)."""
    global _device_id
    _device_id = int(device_id)
    if _mode == GPU:
        from numba import cuda
        cuda.select_device(_device_id)


def mode():
    """The current mode: ``"cpu"`` or ``"gpu"``."""
    return _mode


def set_random_seed(seed):
    """Seed the generator behind fillers, Dropout masks and data shuffling."""
    global _rng
    _rng = np.random.default_rng(int(seed))


def rng():
    """The process-wide numpy Generator."""
    return _rng


def rng_state():
    """The generator's state as a JSON-serialisable dict (for snapshots)."""
    return _rng.bit_generator.state


def set_rng_state(state):
    """Restore a state returned by :func:`rng_state`."""
    _rng.bit_generator.state = state


_KERNEL_MODULES = {}


def kernels(family, device=None):
    """The kernel module ``jitnet.kernels.<device>.<family>`` (device: "cpu" or "gpu",
    the current mode when None), imported on first use. Both sides have the same
    function names and signatures, so code written against one runs on the other."""
    key = (device or _mode, family)
    module = _KERNEL_MODULES.get(key)
    if module is None:
        if key[0] == CPU:
            from .threads import configure
            configure()                  # BLAS at one thread inside numba's parallel kernels
        module = _KERNEL_MODULES[key] = importlib.import_module(f"jitnet.kernels.{key[0]}.{family}")
    return module


class Registry:
    """Type names to classes, for layers and solvers: ``@registry.register("Name")`` on a
    class sets its ``type`` and refuses a name taken twice; ``registry.get(name)`` raises
    ``error`` listing the known names when the name is unknown."""

    def __init__(self, what, error=JitnetError):
        self.what, self.error, self.classes = what, error, {}

    def register(self, type_name):
        def decorate(cls):
            taken = self.classes.get(type_name)
            if taken is not None:
                raise JitnetError(f"{self.what} type {type_name!r} is already registered (by "
                                  f"{taken.__module__}.{taken.__name__}); choose another name "
                                  f"for {cls.__module__}.{cls.__name__}")
            cls.type = type_name
            self.classes[type_name] = cls
            return cls
        return decorate

    def get(self, type_name, where=""):
        try:
            return self.classes[type_name]
        except KeyError:
            raise self.error(f"{where}unknown {self.what} type '{type_name}'. Known types: "
                             + ", ".join(sorted(self.classes))) from None

    def names(self):
        return sorted(self.classes)
