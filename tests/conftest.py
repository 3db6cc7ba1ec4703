"""Shared test settings: hypothesis profiles and the one table of tolerances."""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# "ci": a fixed, modest example budget and no deadline (the machine is shared
# and noisy; speed is measured in benchmarks/, never in tests).
settings.register_profile(
    "ci", max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    """No C extension: stop loudly, unless the NumPy backend alone is being tested.

    Otherwise every C test would be skipped in silence (e.g. in a checkout
    where `python setup.py build_ext --inplace` was never run).
    """
    from tinylm import kernels
    if kernels.c_available() or os.environ.get("TINYLM_BACKEND", "").strip() == "numpy":
        return
    pytest.exit("the C extension is not available (%s), so the C kernel tests cannot run. "
                "Build it (in a checkout: python setup.py build_ext --inplace), or test the "
                "NumPy backend alone: TINYLM_BACKEND=numpy python -m pytest"
                % kernels.backend_reason(), returncode=3)


# --------------------------------------------------------------------------
# Tolerances, stated once.  Comparing a C kernel with its NumPy reference:
# float64 is tight; float32 scales with the length K of the reduction
# (rounding error of a K-term dot product grows ~ sqrt(K) .. K * eps).
# --------------------------------------------------------------------------
EPS = {np.dtype(np.float64): np.finfo(np.float64).eps,
       np.dtype(np.float32): np.finfo(np.float32).eps}


def kernel_tol(dtype, k):
    """(rtol, atol) for comparing a kernel result whose entries sum k terms."""
    eps = EPS[np.dtype(dtype)]
    tol = 8 * eps * max(1, k)
    return tol, tol


def assert_close(actual, expected, k, what=""):
    """Compare kernel output with the reference, scaled by the values' magnitude."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    rtol, atol = kernel_tol(actual.dtype, k)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale,
                               err_msg=what)


# Gradient checks (tinylm.gradcheck): float64 central differences.
GRAD_RTOL = 1e-7


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
