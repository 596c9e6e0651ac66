import os
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")   # must precede any numba import

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles; pick one with HYPOTHESIS_PROFILE=<name> (default: "default").
# test_layers.py reads max_examples from the loaded profile for its CPU tests and
# uses a fifth of it (at least 2) for the slow CUDA-simulator parity tests.
# "default" is derandomized: every run (CI's included) draws the same examples, so a run that
# passed here passes there. "explore" draws new ones each run, as "thorough" does with 200 per
# property; run them to look for what the fixed draws miss.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
settings.register_profile("default", max_examples=20, derandomize=True, **_COMMON)
settings.register_profile("explore", max_examples=20, **_COMMON)
settings.register_profile("quick", max_examples=5, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=200, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config):
    """In a pytest-xdist worker (the suite runs in two), numba's parallel kernels use one
    thread: two workers with two OpenMP threads each on two cores spin against each other.
    NUMBA_NUM_THREADS stays as it was, so tests can still compare one thread with several."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import numba
        numba.set_num_threads(1)


# Tests marked `slow` (large real models, long runs) run in the thorough profile only.
def pytest_collection_modifyitems(config, items):
    if os.environ.get("HYPOTHESIS_PROFILE") == "thorough":
        return
    skip = pytest.mark.skip(reason="slow: runs with HYPOTHESIS_PROFILE=thorough")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
