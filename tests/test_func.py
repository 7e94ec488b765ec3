"""tg.func: grad, vjp, jvp, jacobian, hessian, hvp against hand-written NumPy and central
differences, their nesting, and their errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import func
from tinygrad_rnn.testing import strategies as tgst

F64 = tg.float64


def T(a, device="cpu", requires_grad=False):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=F64, device=device, requires_grad=requires_grad)


def f_scalar(x):  # sum(tanh(x)^2 * x)
    return (x.tanh() ** 2 * x).sum()


def np_grad(x):
    t = np.tanh(x)
    return 2 * t * (1 - t ** 2) * x + t ** 2


def np_hess_diag(x):
    t = np.tanh(x)
    s = 1 - t ** 2
    return 2 * s * s * x - 4 * t * t * s * x + 4 * t * s


def numeric_jacobian(fn, x, eps=1e-6):
    x = np.asarray(x, dtype=np.float64)
    out0 = np.asarray(fn(x))
    J = np.zeros(out0.shape + x.shape)
    for idx in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[idx] = eps
        J[(Ellipsis,) + idx] = (np.asarray(fn(x + e)) - np.asarray(fn(x - e))) / (2 * eps)
    return J


@given(x=tgst.arrays(tgst.shapes(min_dims=1, max_dims=2, max_side=3), -2, 2))
def test_grad_and_hessian_against_numpy(device, x):
    xt = T(x, device)
    np.testing.assert_allclose(func.grad(f_scalar)(xt).numpy(), np_grad(x), rtol=1e-12, atol=1e-14)
    H = func.hessian(f_scalar)(xt).numpy()
    assert H.shape == x.shape + x.shape
    np.testing.assert_allclose(H.reshape(x.size, x.size), np.diag(np_hess_diag(x).ravel()), rtol=1e-11, atol=1e-13)


@given(x=tgst.arrays((3,), -1.5, 1.5), w=tgst.arrays((2, 3), -1, 1))
def test_jacobian_against_central_differences(x, w):
    fn = lambda a, b: (b @ a).tanh() * a[:2]  # noqa: E731
    J = func.jacobian(fn)(T(x), T(w))
    num = numeric_jacobian(lambda a: fn(T(a), T(w)).numpy(), x)
    np.testing.assert_allclose(J.numpy(), num, rtol=1e-6, atol=1e-8)
    Jx, Jw = func.jacobian(fn, argnums=(0, 1))(T(x), T(w))
    assert Jx.shape == (2, 3) and Jw.shape == (2, 2, 3)
    np.testing.assert_allclose(Jw.numpy(), numeric_jacobian(lambda b: fn(T(x), T(b)).numpy(), w), rtol=1e-6, atol=1e-8)


@given(x=tgst.arrays((4,), -1.5, 1.5), v=tgst.arrays((4,), -1, 1), u=tgst.arrays((2,), -1, 1))
def test_vjp_jvp_hvp_agree_with_the_jacobian_and_hessian(x, v, u):
    A = np.arange(8.0).reshape(2, 4) / 7 - 0.5
    fn = lambda a: (T(A) @ a.sin() if hasattr(a, "sin") else T(A) @ a.tanh())  # noqa: E731
    fn = lambda a: T(A) @ (a.tanh() * a)  # noqa: E731
    J = func.jacobian(fn)(T(x)).numpy()
    out, vjp_fn = func.vjp(fn, T(x))
    np.testing.assert_allclose(out.numpy(), A @ (np.tanh(x) * x), rtol=1e-13)
    (g,) = vjp_fn(T(u))
    np.testing.assert_allclose(g.numpy(), u @ J, rtol=1e-12, atol=1e-14)
    (g2,) = vjp_fn(T(u * 2))  # callable again
    np.testing.assert_allclose(g2.numpy(), 2 * u @ J, rtol=1e-12, atol=1e-14)
    out, jv = func.jvp(fn, (T(x),), (T(v),))
    np.testing.assert_allclose(jv.numpy(), J @ v, rtol=1e-12, atol=1e-14)
    out, (hv,) = func.hvp(f_scalar, (T(x),), (T(v),))
    np.testing.assert_allclose(out.item(), np.sum(np.tanh(x) ** 2 * x), rtol=1e-13)
    np.testing.assert_allclose(hv.numpy(), np_hess_diag(x) * v, rtol=1e-11, atol=1e-13)


def test_transforms_nest_and_leave_grad_alone():
    x = T([0.3, -0.7, 1.1], requires_grad=True)
    g = func.grad(f_scalar)(x)
    assert x.grad is None
    assert g.requires_grad  # x is tracked outside: the gradient is differentiable
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np_hess_diag(x.numpy()), rtol=1e-11)
    # grad of grad of a 1-D function: the second derivative
    h = lambda z: (z ** 3).sum()  # noqa: E731
    d2 = func.grad(lambda z: func.grad(h)(z).sum())(T([2.0]))
    np.testing.assert_allclose(d2.numpy(), [12.0])
    # an untracked input gives plain results
    assert not func.grad(f_scalar)(T([1.0, 2.0])).requires_grad


def test_grad_has_aux_and_argnums_and_unused_arguments():
    f = lambda a, b: ((a * b).sum(), {"n": 3})  # noqa: E731
    ga, aux = func.grad(f, argnums=0, has_aux=True)(T([1.0, 2.0]), T([3.0, 4.0]))
    assert aux == {"n": 3}
    np.testing.assert_array_equal(ga.numpy(), [3.0, 4.0])
    gs = func.grad(lambda a, b: (a * 2).sum(), argnums=(0, 1))(T([1.0]), T([5.0]))
    np.testing.assert_array_equal(gs[0].numpy(), [2.0])
    np.testing.assert_array_equal(gs[1].numpy(), [0.0])  # unused: zeros, as torch.func gives
    g, value = func.grad_and_value(f_scalar)(T([0.5]))
    np.testing.assert_allclose(value.item(), np.tanh(0.5) ** 2 * 0.5)


def test_hessian_of_an_rnn_loss_is_symmetric_and_matches_hvp():
    tg.manual_seed(0)
    cell = tg.nn.GRUCell(2, 2, dtype=F64)
    xs = tg.randn(3, 1, 2, dtype=F64)

    def loss(w):
        h = None
        for x in xs.unbind(0):
            gx = x @ w.T + cell.bias_ih
            gh = (h @ cell.weight_hh.T if h is not None else tg.zeros(1, 6, dtype=F64)) + cell.bias_hh
            from tinygrad_rnn.ops.rnn import gru_step
            h = gru_step(gx, gh, h if h is not None else tg.zeros(1, 2, dtype=F64))
        return (h * h).sum()

    w = cell.weight_ih.detach()
    H = func.hessian(loss)(w).numpy().reshape(12, 12)
    np.testing.assert_allclose(H, H.T, rtol=1e-9, atol=1e-12)
    v = np.random.default_rng(0).standard_normal((6, 2))
    _, (hv,) = func.hvp(loss, (w,), (T(v),))
    np.testing.assert_allclose(hv.numpy().ravel(), H @ v.ravel(), rtol=1e-9, atol=1e-12)


def test_func_errors():
    x = T([1.0, 2.0])
    with pytest.raises(tg.ShapeError, match=r"grad: f must return a one-element tensor \(a scalar\), got \(2,\)"):
        func.grad(lambda a: a * 2)(x)
    with pytest.raises(tg.ShapeError, match=r"hessian: f must return a one-element tensor \(a scalar\), got \(2,\)"):
        func.hessian(lambda a: a * 2)(x)
    with pytest.raises(tg.ShapeError, match=r"hvp: f must return a one-element tensor"):
        func.hvp(lambda a: a * 2, (x,), (x,))
    with pytest.raises(ValueError, match=r"grad: argnums 2 is out of range for a function called with 1 argument"):
        func.grad(lambda a: a.sum(), argnums=2)(x)
    with pytest.raises(TypeError, match=r"grad: argument 0 is a ndarray; the differentiated arguments must be Tensors"):
        func.grad(lambda a: a.sum())(np.ones(2))
    with pytest.raises(TypeError, match=r"grad: argument 0 is int64; only floating-point"):
        func.grad(lambda a: a.sum())(tg.arange(2))
    with pytest.raises(tg.ShapeError, match=r"jvp: tangent 0 must be a tensor shaped like primal 0"):
        func.jvp(lambda a: a * 2, (x,), (T([1.0]),))
    _, vjp_fn = func.vjp(lambda a: a * 2, x)
    with pytest.raises(tg.ShapeError, match=r"vjp: cotangent 0 must be a tensor of the output's shape \(2,\)"):
        vjp_fn(T([1.0]))
    with pytest.raises(ValueError, match=r"jvp: 1 primal\(s\) but 2 tangent\(s\)"):
        func.jvp(lambda a: a, (x,), (x, x))
