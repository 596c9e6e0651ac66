import os
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")   # must precede any numba import

from hypothesis import HealthCheck, settings  # noqa: E402

# Hypothesis profiles; pick one with HYPOTHESIS_PROFILE=<name> (default: "default").
# test_layers.py reads max_examples from the loaded profile for its CPU tests and
# uses a fifth of it (at least 2) for the slow CUDA-simulator parity tests.
_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])
settings.register_profile("default", max_examples=20, **_COMMON)
settings.register_profile("quick", max_examples=5, **_COMMON)
settings.register_profile("thorough", max_examples=200, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
