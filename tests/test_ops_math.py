"""PyTorch's everyday math vocabulary: max/min with (values, indices), amax/amin, argmin,
the elementwise functions and reductions added for issue 21, and the module-level
functions (tg.exp, tg.einsum, ...). Forward against NumPy, gradients against central
differences, second derivatives with gradgradcheck, on every device; errors too.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn.testing import strategies as tgst
from tinygrad_rnn.testing import well_separated


def T(a, device, requires_grad=True):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64, device=device,
                     requires_grad=requires_grad)


def close(out, expected, rtol=1e-10, atol=1e-12):
    expected = np.asarray(expected)
    assert out.shape == expected.shape, f"shape {out.shape}, NumPy says {expected.shape}"
    np.testing.assert_allclose(out.numpy(), expected, rtol=rtol, atol=atol)


def check(device, fn, np_fn, *arrays, grad2=True, rtol=1e-10, atol=1e-12):
    """fn(*tensors) against np_fn(*arrays), then gradcheck and (unless grad2=False) gradgradcheck."""
    ts = [T(a, device) for a in arrays]
    out = fn(*ts)
    assert out.device.name == tg.device(device).name and out.dtype is tg.float64
    close(out, np_fn(*arrays), rtol, atol)
    assert tg.gradcheck(fn, ts)
    if grad2:
        assert tg.gradgradcheck(fn, ts, fast_mode=True)


SMALL = dict(max_dims=3, max_side=3)


# ============================================================================ max/min semantics
@pytest.mark.parametrize("op", ["max", "min"])
@given(data=st.data(), keepdim=st.booleans(), torch_names=st.booleans())
def test_max_min_with_dim_return_values_and_indices(device, op, data, keepdim, torch_names):
    a = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=3, max_side=4)))
    dim = data.draw(st.integers(-a.ndim, a.ndim - 1))
    x = T(a, device)
    out = getattr(x, op)(dim=dim, keepdim=keepdim) if torch_names else getattr(x, op)(dim, keepdim)
    assert type(out).__name__ == op and out._fields == ("values", "indices")
    values, indices = out
    assert out[0] is values and out[1] is indices and out.values is values and out.indices is indices
    close(values, getattr(np, op)(a, axis=dim, keepdims=keepdim))
    want = getattr(np, "arg" + op)(a, axis=dim)
    assert indices.dtype is tg.int64 and not indices.requires_grad
    np.testing.assert_array_equal(indices.numpy(), np.expand_dims(want, dim) if keepdim else want)
    assume(well_separated(a, axis=dim))  # the gradient jumps where two elements tie
    fn = lambda t: getattr(t, op)(dim, keepdim=keepdim).values  # noqa: E731
    assert tg.gradcheck(fn, (x,))
    assert tg.gradgradcheck(fn, (x,), fast_mode=True)


@pytest.mark.parametrize("op", ["amax", "amin"])
@given(data=st.data(), keepdim=st.booleans())
def test_amax_amin_over_several_dims(device, op, data, keepdim):
    a = data.draw(tgst.arrays(tgst.shapes(max_dims=3, max_side=4)))
    dim = data.draw(tgst.axes(a.ndim))
    assume(well_separated(a, axis=dim))
    np_fn = np.max if op == "amax" else np.min
    check(device, lambda t: getattr(t, op)(dim=dim, keepdim=keepdim),
          lambda v: np_fn(v, axis=dim, keepdims=keepdim), a)


def test_max_dim_gives_the_gradient_to_the_index_returned(device):
    x = T([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], device)
    values, indices = x.max(dim=1)
    assert indices.tolist() == [1, 0]  # the first of a tie, as PyTorch's CPU kernels return
    (values * T([10.0, 6.0], device, False)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0, 10, 0], [6, 0, 0]])
    y = T([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], device)
    y.min(0).values.sum().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [[1, 0, 0], [0, 1, 1]])


def test_full_max_and_amax_share_ties_evenly(device):
    for call in (lambda t: t.max(), lambda t: t.amax(), lambda t: t.amax(dim=(0, 1))):
        x = T([[5.0, 1.0], [5.0, 5.0]], device)
        call(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), [[1 / 3, 0], [1 / 3, 1 / 3]], rtol=1e-15)
    x = T([[1.0, 3.0, 3.0]], device)
    x.amin(1).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 0, 0]])


def test_max_min_with_a_tensor_are_elementwise(device):
    a, b = T([1.0, 5.0], device), T([3.0, 2.0], device)
    assert a.max(b).tolist() == [3.0, 5.0] and a.min(b).tolist() == [1.0, 2.0]


def test_max_of_a_0d_tensor_along_dim_0(device):
    values, indices = T(4.0, device).max(0)
    assert values.shape == () and values.item() == 4.0 and indices.item() == 0


@pytest.mark.parametrize("op", ["argmax", "argmin"])
@given(data=st.data(), keepdim=st.booleans())
def test_argmax_argmin_match_numpy(device, op, data, keepdim):
    a = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=3)))
    dim = data.draw(st.none() | st.integers(-a.ndim, a.ndim - 1))
    got = getattr(T(a, device), op)(dim=dim, keepdim=keepdim)
    assert got.dtype is tg.int64
    np.testing.assert_array_equal(got.numpy(), getattr(np, op)(a, axis=dim, keepdims=keepdim and dim is not None))


def test_max_min_errors(device):
    x = T(np.zeros((2, 3)), device)
    with pytest.raises(tg.AxisError, match=r"max: dim must be one int .* got \(0, 1\); amax reduces over several"):
        x.max(dim=(0, 1))
    with pytest.raises(tg.AxisError, match=r"min: axis 2 is out of range for a tensor of shape \(2, 3\)"):
        x.min(2)
    with pytest.raises(tg.AxisError, match=r"amin: axis -3 is out of range"):
        x.amin(dim=-3)
    with pytest.raises(tg.AxisError, match=r"argmin: axis 5 is out of range"):
        x.argmin(5)
    with pytest.raises(tg.ShapeError, match=r"max: cannot reduce axis 1 of size 0 \(tensor of shape \(2, 0\)\)"):
        T(np.zeros((2, 0)), device).max(1)
    with pytest.raises(tg.ShapeError, match=r"amax: cannot reduce an empty tensor of shape \(0,\)"):
        T(np.zeros(0), device).amax()
    with pytest.raises(tg.ShapeError, match=r"argmax: cannot reduce an empty tensor"):
        T(np.zeros(0), device).argmax()


def test_lr_scheduler_is_an_attribute_of_optim():
    from tinygrad_rnn import optim
    p = tg.zeros(2, requires_grad=True)
    sched = optim.lr_scheduler.StepLR(optim.SGD([p], lr=1.0), step_size=1, gamma=0.5)
    sched.step()
    assert sched.get_last_lr() == [0.5]


def test_max_matches_torch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).normal(size=(3, 4))
    a[1, :2] = 9.0  # a tie
    for op in ("max", "min"):
        x, xt = T(a, "cpu"), torch.tensor(a, requires_grad=True)
        v, i = getattr(x, op)(1)
        vt, it = getattr(xt, op)(1)
        np.testing.assert_allclose(v.numpy(), vt.detach().numpy())
        np.testing.assert_array_equal(i.numpy(), it.numpy())
        (v * v).sum().backward()
        (vt * vt).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())
        x.grad = None
        xt.grad = None
        getattr(x, "a" + op)(1).sum().backward()
        getattr(xt, "a" + op)(1).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())
