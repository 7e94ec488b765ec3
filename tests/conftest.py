import importlib.util
import os

import pytest

import tinygrad_rnn as tg


def pytest_configure(config):
    # The suite needs the test extra (hypothesis, and array-api-strict for the "strict"
    # device every op runs on): without it, one clear message instead of a failing import.
    missing = [pkg for pkg, mod in (("hypothesis", "hypothesis"), ("array-api-strict", "array_api_strict"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise pytest.UsageError(f"the tests need {', '.join(missing)}: "
                                "install the test extra with pip install -e '.[test]'")
    from hypothesis import HealthCheck, settings
    # The `device` fixture below is function-scoped but only a device name: nothing in it
    # needs resetting between the examples of one @given test, so that health check is moot.
    suppress = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
    settings.register_profile("dev", max_examples=25, deadline=None, suppress_health_check=suppress)
    settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True,
                              suppress_health_check=suppress)
    settings.register_profile("thorough", max_examples=500, deadline=None, suppress_health_check=suppress)
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
