import os

import pytest
from hypothesis import HealthCheck, settings

import tinygrad_rnn as tg

settings.register_profile("dev", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

_CUDA_OK, _CUDA_WHY = tg.cuda_available()
DEVICES = ["cpu", "strict", "cuda"]


def pytest_report_header(config):
    return f"tinygrad_rnn devices: cpu, strict" + (", cuda" if _CUDA_OK else f" (cuda skipped: {_CUDA_WHY})")


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device the suite runs on: NumPy, array-api-strict, and CuPy where a GPU is."""
    if request.param == "cuda" and not _CUDA_OK:
        pytest.skip(f"cuda: {_CUDA_WHY}")
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    tg.manual_seed(0)
    yield
