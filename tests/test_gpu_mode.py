"""A whole training run in GPU mode (numba's CUDA simulator here, a real GPU with
NUMBA_ENABLE_CUDASIM=0) ends with the same weights as the same run in CPU mode:
data layers, every layer kernel, blob synchronisation and the solver kernels."""
import numpy as np
import pytest

import jitnet
from test_solver import final_state
from test_training import typed_solver


@pytest.fixture
def gpu_mode():
    jitnet.set_mode_gpu()
    try:
        yield
    finally:
        jitnet.set_mode_cpu()


def run(path, iterations):
    solver = jitnet.get_solver(str(path))
    solver.step(iterations)
    scores = solver.test_all()
    return final_state(solver), scores


def test_training_on_the_gpu_matches_the_cpu(tmp_path, request):
    # One case: the simulator runs every GPU thread in Python. Each update kernel has its
    # own GPU-vs-CPU check in test_kernels.py.
    path = typed_solver(tmp_path, "SGD", "iter_size: 2 clip_gradients: 5 regularization_type: \"L1\"")
    (cpu_weights, cpu_history), cpu_scores = run(path, 2)
    request.getfixturevalue("gpu_mode")
    assert jitnet.mode() == "gpu"
    (gpu_weights, gpu_history), gpu_scores = run(path, 2)
    for a, b in zip(cpu_weights + cpu_history, gpu_weights + gpu_history):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-6)
    assert gpu_scores[0]["accuracy"] == pytest.approx(cpu_scores[0]["accuracy"], abs=1e-6)
    assert gpu_scores[0]["loss"] == pytest.approx(cpu_scores[0]["loss"], rel=1e-4)


def test_gpu_mode_without_a_device_says_so(monkeypatch):
    from numba import cuda
    monkeypatch.setattr(cuda, "is_available", lambda: False)
    with pytest.raises(jitnet.DeviceError, match="no CUDA device"):
        jitnet.set_mode_gpu()
    assert jitnet.mode() == "cpu"
