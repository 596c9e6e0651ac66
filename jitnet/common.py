"""Process-wide state, as in Caffe's ``Caffe`` singleton: the compute mode, the
device, and the random number generator that fillers, Dropout and data shuffling
draw from.

``set_random_seed(n)`` makes two runs with the same seed identical. The
generator's state can be saved and restored (solver snapshots do so), so that a
resumed run draws exactly the numbers the uninterrupted run would have drawn.
"""
import numpy as np

from .errors import DeviceError

CPU, GPU = "cpu", "gpu"

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
