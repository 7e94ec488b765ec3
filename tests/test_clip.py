"""nn.utils.clip_grad_norm_ and clip_grad_value_: the norm returned against NumPy's,
direction kept, no-op under max_norm, NaN/inf reported and never written, value
clipping, and the engine's rule that gradient arrays are never written in place."""
import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.nn.utils import NonFiniteNormError, clip_grad_norm_, clip_grad_value_


def _params(device, grads, dtype=tg.float64):
    ps = []
    for g in grads:
        p = tg.nn.Parameter(tg.zeros(*np.shape(g), dtype=dtype, device=device))
        if g is not None:
            p.grad = tg.tensor(np.asarray(g), dtype=dtype, device=device)
        ps.append(p)
    return ps


def _grads():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((3, 4)) * 3, rng.standard_normal(5), rng.standard_normal((2, 2, 2))]


def _np_total(gs, p):
    flat = np.concatenate([g.ravel() for g in gs])
    return np.linalg.norm(flat, ord=p)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
def test_norm_returned_equals_numpy_and_direction_kept(device, norm_type):
    gs = _grads()
    ps = _params(device, gs)
    p_np = math.inf if norm_type == "inf" else norm_type
    expected = _np_total(gs, p_np)
    total = clip_grad_norm_(ps, max_norm=1.0, norm_type=norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(expected, rel=1e-12)
    coef = 1.0 / (expected + 1e-6)
    for p, g in zip(ps, gs):
        np.testing.assert_allclose(p.grad.numpy(), g * coef, rtol=1e-12)
    assert _np_total([p.grad.numpy() for p in ps], p_np) == pytest.approx(1.0, rel=1e-5)


def test_float32_norm_matches_numpy():
    gs = [g.astype(np.float32) for g in _grads()]
    ps = _params("cpu", gs, dtype=tg.float32)
    total = clip_grad_norm_(ps, 0.5)
    assert total == pytest.approx(float(_np_total([g.astype(np.float64) for g in gs], 2)), rel=1e-6)
    assert all(p.grad.dtype is tg.float32 for p in ps)


def test_no_op_under_max_norm_and_skips_missing_grads(device):
    gs = _grads()
    ps = _params(device, gs) + [tg.nn.Parameter(tg.zeros(3, device=device))]  # no grad
    before = [p.grad for p in ps[:3]]
    total = clip_grad_norm_(ps, max_norm=1e3)
    assert total == pytest.approx(_np_total(gs, 2), rel=1e-12)
    assert all(p.grad is g for p, g in zip(ps, before))  # untouched, not even copied
    assert ps[3].grad is None
    assert clip_grad_norm_([tg.nn.Parameter(tg.zeros(2))], 1.0) == 0.0


def test_single_tensor_and_generator_accepted():
    lin = tg.nn.Linear(3, 2, dtype=tg.float64)
    lin(tg.randn(4, 3, dtype=tg.float64)).sum().backward()
    gw, gb = lin.weight.grad.numpy(), lin.bias.grad.numpy()
    total = clip_grad_norm_(lin.parameters(), 0.1)
    assert total == pytest.approx(_np_total([gw, gb], 2), rel=1e-12)
    t = clip_grad_norm_(lin.weight, 1e9)
    assert t == pytest.approx(np.linalg.norm(gw) * 0.1 / (total + 1e-6), rel=1e-9)


def test_overflow_safe_in_float32():
    # squaring 1e20 overflows float32; the norm itself (~1.4e20) does not
    ps = _params("cpu", [np.full(2, 1e20)], dtype=tg.float32)
    total = clip_grad_norm_(ps, 1.0)
    assert total == pytest.approx(math.sqrt(2) * 1e20, rel=1e-6)
    assert np.all(np.isfinite(ps[0].grad.numpy()))


def test_clipping_never_writes_into_shared_gradient_arrays():
    # the engine may give two leaves the very same gradient array (x + y: both get grad)
    x = tg.nn.Parameter(tg.ones(3, dtype=tg.float64))
    y = tg.nn.Parameter(tg.ones(3, dtype=tg.float64))
    (x + y).backward(tg.ones(3, dtype=tg.float64))
    assert x.grad.data is y.grad.data  # what makes in-place clipping wrong (and a read-only view here)
    clip_grad_norm_([x], 0.1)
    np.testing.assert_array_equal(y.grad.numpy(), 1.0)
    clip_grad_value_([x], 0.01)
    np.testing.assert_array_equal(y.grad.numpy(), 1.0)


@pytest.mark.parametrize("bad,word", [(math.nan, "nan"), (math.inf, "inf"), (-math.inf, "inf")])
def test_nonfinite_norm_raises_naming_the_parameter_and_leaves_grads(device, bad, word):
    gs = _grads()
    gs[1] = gs[1].copy()
    gs[1][2] = bad
    ps = _params(device, gs)
    before = [p.grad.numpy() for p in ps]
    with pytest.raises(NonFiniteNormError, match=rf"total 2-norm of the gradients is {word}.*"
                                                 rf"parameter 1 of shape \(5,\) \({word}\).*not touched"):
        clip_grad_norm_(ps, 1.0)
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p.grad.numpy(), b)
    total = clip_grad_norm_(ps, 1.0, error_if_nonfinite=False)
    assert (math.isnan(total) if word == "nan" else total == math.inf)
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p.grad.numpy(), b)


def test_nan_beats_inf():
    ps = _params("cpu", [np.array([np.inf, 1.0]), np.array([np.nan])])
    assert math.isnan(clip_grad_norm_(ps, 1.0, error_if_nonfinite=False))
    assert clip_grad_norm_(ps[:1], 1.0, norm_type=math.inf, error_if_nonfinite=False) == math.inf


def test_clip_grad_value(device):
    g = np.array([[-7.0, -5.0, -1.0], [0.5, 5.0, 9.0]])
    ps = _params(device, [g, None])
    assert clip_grad_value_(ps, 5) is None
    np.testing.assert_array_equal(ps[0].grad.numpy(), np.clip(g, -5, 5))
    assert ps[1].grad is None and ps[0].grad.dtype is tg.float64


def test_argument_errors():
    ps = _params("cpu", [np.ones(2)])
    with pytest.raises(ValueError, match="max_norm must be a non-negative number, got -1"):
        clip_grad_norm_(ps, -1)
    with pytest.raises(ValueError, match="norm_type must be positive or inf, got 0"):
        clip_grad_norm_(ps, 1.0, norm_type=0)
    with pytest.raises(ValueError, match="clip_value must be a non-negative number"):
        clip_grad_value_(ps, -0.5)
    with pytest.raises(TypeError, match="clip_grad_norm_: parameter 1 is a ndarray, not a Tensor"):
        clip_grad_norm_([ps[0], np.ones(2)], 1.0)
