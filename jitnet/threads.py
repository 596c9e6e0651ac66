"""Who owns the cores: jitnet decides once, so that its threads never fight.

jitnet's CPU kernels run in parallel with numba's threads (``prange``, numba's
default OpenMP layer, one thread per core). The GEMMs inside them call BLAS
through ``np.dot`` in ``@njit`` code, which is SciPy's BLAS (its own OpenBLAS
library, separate from NumPy's). Left alone, OpenBLAS starts its own threads on
the same cores and keeps them spinning after each call; measured on a 2-core
machine, a mid-size MLP step took 24.8 ms that way and 1.3 ms with BLAS at one
thread (benchmarks/RESULTS.md). So jitnet limits SciPy's BLAS to one thread and
gets its parallelism from numba, running single-threaded GEMMs inside parallel
loops over images or blocks.

The limit is applied once, the first time CPU kernels are used
(:func:`configure`); it is applied with threadpoolctl to the BLAS library that
SciPy loaded, which is why SciPy's BLAS module is imported first (a controller
made before it is loaded limits nothing). NumPy's own BLAS, which a user's
``a @ b`` uses, keeps its threads where it is a separate library (pip wheels);
where NumPy and SciPy share one BLAS (some conda builds), both run at one thread
while jitnet is imported, and :func:`describe` says so. The user sets nothing:
no environment variable is needed.
"""
import os

_state = None


def _scipy_blas_paths(controller):
    """File paths of the BLAS libraries SciPy loaded (those inside SciPy's install, or all
    BLAS libraries when SciPy links a shared one)."""
    import scipy
    root = os.path.dirname(os.path.dirname(os.path.abspath(scipy.__file__)))
    blas = [lib for lib in controller.lib_controllers if lib.user_api == "blas"]
    own = [lib.filepath for lib in blas
           if os.path.abspath(lib.filepath).startswith(os.path.join(root, "scipy"))]
    return own or [lib.filepath for lib in blas], bool(own)


def configure():
    """Limit SciPy's BLAS to one thread (once; later calls do nothing). Returns :func:`describe`."""
    global _state
    if _state is not None:
        return _state
    import numba
    import scipy.linalg.cython_blas  # noqa: F401  (load SciPy's BLAS before looking for it)
    from threadpoolctl import ThreadpoolController

    controller = ThreadpoolController()
    paths, separate = _scipy_blas_paths(controller)
    limited = []
    for path in paths:
        selected = controller.select(filepath=path)
        selected.limit(limits=1)
        limited += [(lib.internal_api, lib.filepath) for lib in selected.lib_controllers]
    _state = {
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.config.THREADING_LAYER,
        "blas_single_threaded": [f"{api} {path}" for api, path in limited],
        "numpy_blas_untouched": separate,
    }
    return _state


def describe():
    """What :func:`configure` chose, as a dict (``jitnet info`` prints it), with the threading
    layer numba actually started (a parallel kernel runs once to start it)."""
    import numba
    import numpy as np

    from . import common
    state = dict(configure())
    x = np.zeros(1 << 16, np.float32)
    common.kernels("math", "cpu").add(x, x, x)
    state["numba_threading_layer"] = numba.threading_layer()
    return state
