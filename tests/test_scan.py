"""cumsum, logcumsumexp, softplus, log_sigmoid: gradients against central differences
over drawn shapes and axes, forwards against NumPy, stability far outside exp's range,
and the errors for bad arguments."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn.testing import strategies as tgst

# the `device` fixture is a plain string, the same for every example
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def tensor_and_axis(draw, device, min_value=-3.0, max_value=3.0):
    x = draw(tgst.tensors(shape=tgst.shapes(min_dims=1, max_dims=3, max_side=5), device=device,
                          min_value=min_value, max_value=max_value))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, axis


def np_logcumsumexp(a, axis):
    return np.logaddexp.accumulate(a, axis=axis)


def np_logcumsumexp_grad(a, g, axis):
    """sum_{t >= s} g[t] exp(a[s] - out[t]), straight from the definition, in float64."""
    a, g = np.moveaxis(a, axis, -1), np.moveaxis(g, axis, -1)
    out = np.logaddexp.accumulate(a, axis=-1)
    n = a.shape[-1]
    later = np.triu(np.ones((n, n), dtype=bool))  # [s, t]: t >= s
    diff = np.where(later, a[..., :, None] - out[..., None, :], -np.inf)
    return np.moveaxis(np.sum(g[..., None, :] * np.exp(diff), axis=-1), -1, axis)


# ----------------------------------------------------------------------------- cumsum
@fixture_ok
@given(data=st.data())
def test_cumsum_gradient(device, data):
    x, axis = data.draw(tensor_and_axis(device))
    assert tg.gradcheck(lambda t: t.cumsum(axis), [x])
    assert tg.gradgradcheck(lambda t: t.cumsum(axis) * t, [x], fast_mode=True)


@fixture_ok
@given(data=st.data())
def test_cumsum_forward_matches_numpy(device, data):
    x, axis = data.draw(tensor_and_axis(device))
    np.testing.assert_allclose(x.cumsum(dim=axis).numpy(), np.cumsum(x.numpy(), axis=axis), rtol=1e-12, atol=1e-12)


def test_cumsum_float32_keeps_dtype(device):
    x = tg.tensor([[1.0, 2.0, 3.0]], device=device)
    y = x.cumsum(1)
    assert y.dtype is tg.float32
    assert y.tolist() == [[1.0, 3.0, 6.0]]


# ----------------------------------------------------------------------------- logcumsumexp
@fixture_ok
@given(data=st.data())
def test_logcumsumexp_gradient(device, data):
    x, axis = data.draw(tensor_and_axis(device))
    assert tg.gradcheck(lambda t: t.logcumsumexp(axis), [x])


@fixture_ok
@given(data=st.data())
def test_logcumsumexp_forward_matches_numpy(device, data):
    x, axis = data.draw(tensor_and_axis(device))
    np.testing.assert_allclose(x.logcumsumexp(dim=axis).numpy(), np_logcumsumexp(x.numpy(), axis),
                               rtol=1e-12, atol=1e-12)


@fixture_ok
@given(data=st.data())
def test_logcumsumexp_stable_far_outside_exps_range(device, data):
    # values up to +-1e4: exp overflows at ~709 (float64), so only a stable scan gets these right
    x, axis = data.draw(tensor_and_axis(device, min_value=-1e4, max_value=1e4))
    g = data.draw(tgst.arrays(x.shape))
    out = x.logcumsumexp(axis)
    out.backward(tg.tensor(g, dtype=tg.float64, device=device))
    np.testing.assert_allclose(out.numpy(), np_logcumsumexp(x.numpy(), axis), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(x.grad.numpy(), np_logcumsumexp_grad(x.numpy(), g, axis), rtol=1e-9, atol=1e-9)


def test_logcumsumexp_long_float32_sequence(device):
    # the shape of minGRU's use: a long, drifting sequence in float32, 4096 steps
    rng = np.random.default_rng(0)
    a = np.cumsum(rng.normal(-0.5, 3.0, size=(2, 4096)), axis=1).astype(np.float32)
    assert a.max() - a.min() > 200  # far beyond float32's exp range (~88)
    x = tg.tensor(a, device=device, requires_grad=True)
    out = x.logcumsumexp(1)
    out.sum().backward()
    ref = np_logcumsumexp(a.astype(np.float64), 1)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-3)
    assert np.isfinite(x.grad.numpy()).all()


def test_logcumsumexp_leading_minus_inf(device):
    # log(0) terms (a zero initial state in log space) add nothing and get zero gradient
    x = tg.tensor([-math.inf, -math.inf, 0.0, math.log(3.0)], dtype=tg.float64, device=device, requires_grad=True)
    out = x.logcumsumexp(0)
    np.testing.assert_allclose(out.numpy(), [-np.inf, -np.inf, 0.0, math.log(4.0)])
    out[2:].sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 1.0 + 0.25, 0.75])


def test_logcumsumexp_length_one_and_non_power_of_two(device):
    for n in (1, 2, 3, 5, 7, 8, 9, 33):
        a = np.linspace(-2.0, 2.0, n)
        x = tg.tensor(a, dtype=tg.float64, device=device)
        np.testing.assert_allclose(x.logcumsumexp(0).numpy(), np_logcumsumexp(a, 0), rtol=1e-13)


# ----------------------------------------------------------------------------- softplus, log_sigmoid
@fixture_ok
@given(x=tgst.tensors(min_value=-30.0, max_value=30.0))
def test_softplus_and_log_sigmoid_gradients(device, x):
    x = tg.tensor(x.numpy(), dtype=tg.float64, device=device, requires_grad=True)
    assert tg.gradcheck(lambda t: t.softplus(), [x])
    assert tg.gradcheck(lambda t: t.log_sigmoid(), [x])
    assert tg.gradgradcheck(lambda t: t.softplus(), [x], fast_mode=True)
    assert tg.gradgradcheck(lambda t: t.log_sigmoid(), [x], fast_mode=True)


@fixture_ok
@given(x=tgst.tensors(min_value=-30.0, max_value=30.0))
def test_softplus_and_log_sigmoid_forward_match_numpy(device, x):
    x = tg.tensor(x.numpy(), dtype=tg.float64, device=device)
    a = x.numpy()
    np.testing.assert_allclose(tg.nn.functional.softplus(x).numpy(), np.logaddexp(0.0, a), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(tg.nn.functional.logsigmoid(x).numpy(), -np.logaddexp(0.0, -a), rtol=1e-12,
                               atol=1e-15)


def test_log_sigmoid_finite_where_sigmoid_underflows(device):
    x = tg.tensor([-1000.0, -100.0, 0.0, 100.0, 1000.0], device=device, requires_grad=True)
    y = x.log_sigmoid()
    np.testing.assert_allclose(y.numpy(), [-1000.0, -100.0, -math.log(2.0), 0.0, 0.0], rtol=1e-6, atol=1e-30)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0, 0.5, 0.0, 0.0], atol=1e-30)
    s = x.softplus()
    np.testing.assert_allclose(s.numpy(), [0.0, 0.0, math.log(2.0), 100.0, 1000.0], rtol=1e-6, atol=1e-30)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("op", ["cumsum", "logcumsumexp"])
def test_bad_axis_is_named(device, op):
    x = tg.zeros(2, 3, device=device)
    with pytest.raises(tg.AxisError, match=rf"{op}: axis 2 is out of range for a tensor of shape \(2, 3\)"):
        getattr(x, op)(2)
    with pytest.raises(tg.AxisError, match=rf"{op}: axis must be an int"):
        getattr(x, op)()
    with pytest.raises(tg.AxisError, match=rf"{op}: needs a tensor of at least 1 dim"):
        getattr(tg.tensor(1.0, device=device), op)(0)


def test_logcumsumexp_rejects_integers(device):
    x = tg.arange(4, device=device)
    with pytest.raises(tg.DTypeError, match=r"logcumsumexp: needs a floating-point tensor, got int64"):
        x.logcumsumexp(0)
