"""PyTorch's everyday math vocabulary: max/min with (values, indices), amax/amin, argmin,
the elementwise functions and reductions added for issue 21, and the module-level
functions (tg.exp, tg.einsum, ...). Forward against NumPy, gradients against central
differences, second derivatives with gradgradcheck, on every device; errors too.
"""
import math
import re

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


# ============================================================================ elementwise
UNARY = {  # name: (method, NumPy, value range)
    "sin": (lambda t: t.sin(), np.sin, (-3, 3)),
    "cos": (lambda t: t.cos(), np.cos, (-3, 3)),
    "log1p": (lambda t: t.log1p(), np.log1p, (-0.7, 3)),
    "expm1": (lambda t: t.expm1(), np.expm1, (-3, 3)),
    "square": (lambda t: t.square(), np.square, (-3, 3)),
    "rsqrt": (lambda t: t.rsqrt(), lambda a: 1 / np.sqrt(a), (0.3, 3)),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(data=st.data())
def test_unary(device, op, data):
    fn, np_fn, (lo, hi) = UNARY[op]
    check(device, fn, np_fn, data.draw(tgst.arrays(tgst.shapes(**SMALL), lo, hi)))


def test_log1p_expm1_are_exact_for_tiny_values(device):
    x = T([1e-20, -3e-18], device, requires_grad=False)
    assert x.log1p().tolist() == [1e-20, -3e-18] and x.expm1().tolist() == [1e-20, -3e-18]


# ============================================================================ var, std
@pytest.mark.parametrize("op", ["var", "std"])
@given(data=st.data(), keepdim=st.booleans(), how=st.sampled_from(["default", "correction", "unbiased"]))
def test_var_std(device, op, data, keepdim, how):
    a = data.draw(tgst.arrays(tgst.shapes(max_dims=3, max_side=4), unique=True))
    dim = data.draw(tgst.axes(a.ndim))
    kw, ddof = {}, 1
    if how == "correction":
        ddof = kw["correction"] = data.draw(st.sampled_from([0, 1, 2]))
    elif how == "unbiased":
        kw["unbiased"] = data.draw(st.booleans())
        ddof = int(kw["unbiased"])
    n = a.size // max(np.asarray(np.sum(a, axis=dim)).size, 1) if a.size else 0
    assume(n - ddof > 0)
    want = getattr(np, op)(a, axis=dim, ddof=ddof, keepdims=keepdim)
    if op == "std":
        assume(np.all(want > 1e-2))  # sqrt has no derivative at a zero variance
    check(device, lambda t: getattr(t, op)(dim=dim, keepdim=keepdim, **kw), lambda v: want, a)


def test_var_forms_as_pytorch(device):
    a = np.arange(12.0).reshape(3, 4) ** 1.5
    x = T(a, device, requires_grad=False)
    close(x.var(), np.var(a, ddof=1))
    close(x.var(False), np.var(a))                                 # var(unbiased)
    close(x.var(1, True, True), np.var(a, axis=1, ddof=1, keepdims=True))  # var(dim, unbiased, keepdim)
    close(x.std(axis=0, keepdims=True, correction=0), np.std(a, axis=0, keepdims=True))
    with pytest.raises(ValueError, match="var: pass correction or unbiased, not both"):
        x.var(0, True, correction=1)
    with pytest.raises(tg.AxisError, match=r"var: axis 2 is out of range for a tensor of shape \(3, 4\)"):
        x.std(2)


# ============================================================================ norm
def np_norm(a, p, axis, keepdims):
    if p == math.inf:
        return np.max(np.abs(a), axis=axis, keepdims=keepdims)
    if p == -math.inf:
        return np.min(np.abs(a), axis=axis, keepdims=keepdims)
    p = 2 if p == "fro" else p
    return np.sum(np.abs(a) ** p, axis=axis, keepdims=keepdims) ** (1 / p)


@given(data=st.data(), p=tgst.norm_orders(), keepdim=st.booleans())
def test_norm(device, data, p, keepdim):
    a = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    dim = data.draw(tgst.axes(a.ndim))
    assume(tgst.far_from(a, [0.0], margin=1e-2))  # |x| has a kink at 0
    if p in (math.inf, -math.inf):
        assume(well_separated(np.abs(a), axis=dim))
    check(device, lambda t: t.norm(p, dim, keepdim), lambda v: np_norm(v, p, dim, keepdim), a)


@pytest.mark.parametrize("p", [2, "fro", 3.0, 1.5, 1])
def test_norm_gradient_at_zero_is_zero(device, p):
    x = T(np.zeros((2, 3)), device)
    x.norm(p, dim=1).sum().backward()
    assert x.grad.tolist() == [[0.0] * 3] * 2
    y = T([[0.0, 0.0], [3.0, -4.0]], device)
    y.norm(p, dim=1, keepdim=True).sum().backward()
    np.testing.assert_allclose(y.grad.numpy()[0], [0, 0])


def test_norm_errors(device):
    x = T(np.ones((2, 3)), device)
    for p in (0, "nuc", None, True):
        with pytest.raises(ValueError, match=r"norm: p must be a nonzero number, inf, -inf or 'fro', got"):
            x.norm(p)
    with pytest.raises(tg.AxisError, match=r"norm: axis -3 is out of range"):
        x.norm(dim=-3)


# ============================================================================ prod
@given(data=st.data(), keepdim=st.booleans())
def test_prod(device, data, keepdim):
    a = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    dim = data.draw(tgst.axes(a.ndim))
    check(device, lambda t: t.prod(dim=dim, keepdim=keepdim), lambda v: np.prod(v, axis=dim, keepdims=keepdim), a)


@pytest.mark.parametrize("row, want", [
    ([2.0, 3.0, 4.0], [12.0, 8.0, 6.0]),
    ([2.0, 0.0, 4.0], [0.0, 8.0, 0.0]),   # one zero: it gets the product of the others
    ([0.0, 3.0, 0.0], [0.0, 0.0, 0.0]),   # two zeros: every product of the others has a zero
])
def test_prod_gradient_with_zeros(device, row, want):
    x = T([row], device)
    x.prod(1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [want], rtol=1e-15)
    assert tg.gradcheck(lambda t: t.prod(1), (T([row], device),))
    assert tg.gradgradcheck(lambda t: t.prod(), (T([row], device),))  # second derivatives through zeros


def test_prod_errors(device):
    with pytest.raises(tg.AxisError, match=r"prod: axis 1 is out of range for a tensor of shape \(3,\)"):
        T([1.0, 2.0, 3.0], device).prod(1)


# ============================================================================ the shared strategies
@given(x=tgst.positive_tensors(shape=tgst.shapes(**SMALL), device="strict"), p=tgst.norm_orders(finite_only=True))
def test_positive_tensors_and_norm_orders(x, p):
    assert x.device.name == "strict" and x.dtype is tg.float64 and x.requires_grad
    assert np.all(x.numpy() >= 0.25) and np.all(x.numpy() <= 3.0)
    assert p == "fro" or math.isfinite(p) and p >= 1
    assert tg.gradcheck(lambda t: t.rsqrt().norm(p), (x,))


def test_positive_tensors_refuses_a_nonpositive_bound():
    with pytest.raises(ValueError, match="positive_tensors: need 0 < min_value <= max_value, got 0 and 3"):
        tgst.positive_tensors(min_value=0, max_value=3)


# ============================================================================ module-level functions
MODULE_LEVEL = [  # (tg function, arguments after x, the method call it must equal)
    ("exp", (), lambda t: t.exp()), ("log", (), lambda t: t.log()), ("sqrt", (), lambda t: t.sqrt()),
    ("rsqrt", (), lambda t: t.rsqrt()), ("log1p", (), lambda t: t.log1p()), ("expm1", (), lambda t: t.expm1()),
    ("square", (), lambda t: t.square()), ("sin", (), lambda t: t.sin()), ("cos", (), lambda t: t.cos()),
    ("tanh", (), lambda t: t.tanh()), ("sigmoid", (), lambda t: t.sigmoid()), ("relu", (), lambda t: t.relu()),
    ("abs", (), lambda t: t.abs()), ("neg", (), lambda t: -t), ("softplus", (), lambda t: t.softplus()),
    ("clamp", (0.7, 1.2), lambda t: t.clip(0.7, 1.2)), ("clip", (0.7,), lambda t: t.clip(0.7)),
    ("add", (2.0,), lambda t: t + 2.0), ("sub", (2.0,), lambda t: t - 2.0), ("mul", (2.0,), lambda t: t * 2.0),
    ("div", (2.0,), lambda t: t / 2.0), ("pow", (3,), lambda t: t ** 3),
    ("sum", (1,), lambda t: t.sum(1)), ("mean", (), lambda t: t.mean()), ("prod", (0,), lambda t: t.prod(0)),
    ("var", (1,), lambda t: t.var(1)), ("std", (), lambda t: t.std()), ("norm", (), lambda t: t.norm()),
    ("max", (), lambda t: t.max()), ("min", (), lambda t: t.min()), ("amax", ((0, 1),), lambda t: t.amax()),
    ("amin", (1,), lambda t: t.amin(1)), ("logsumexp", (1,), lambda t: t.logsumexp(1)),
    ("cumsum", (1,), lambda t: t.cumsum(1)), ("logcumsumexp", (0,), lambda t: t.logcumsumexp(0)),
    ("softmax", (1,), lambda t: t.softmax(1)), ("log_softmax", (0,), lambda t: t.log_softmax(0)),
]


@pytest.mark.parametrize("name, args, method", MODULE_LEVEL, ids=[m[0] for m in MODULE_LEVEL])
def test_module_level_functions_are_the_methods(device, name, args, method):
    a = np.random.default_rng(0).uniform(0.5, 1.5, (3, 4))
    fn = getattr(tg, name)
    assert fn.__name__ == name and f"tg.{name}(x, ...)" in fn.__doc__
    close(fn(T(a, device), *args), method(T(a, device)).numpy())
    assert tg.gradcheck(lambda t: fn(t, *args), (T(a, device),))


def test_module_level_keywords_numbers_first_and_tuples(device):
    x = T([[1.0, 5.0, 2.0], [7.0, 0.0, 3.0]], device)
    values, indices = tg.max(x, dim=1)
    assert values.tolist() == [5.0, 7.0] and indices.tolist() == [1, 0]
    assert tg.min(x, 0, keepdim=True).indices.tolist() == [[0, 1, 0]]
    assert tg.argmin(x, dim=1).tolist() == [0, 1] and tg.argmax(x).item() == 3
    close(tg.pow(2.0, x), 2.0 ** x.numpy())
    close(tg.sub(1.0, x), 1.0 - x.numpy())
    close(tg.max(x, x * 0 + 3), np.maximum(x.numpy(), 3))  # torch.max(a, b): elementwise
    close(tg.sum(x, dim=1, keepdim=True), x.numpy().sum(1, keepdims=True))
    close(tg.softmax(x, dim=0), np.exp(x.numpy()) / np.exp(x.numpy()).sum(0))
    with pytest.raises(TypeError, match="exp: expected a Tensor, got list"):
        tg.exp([1.0, 2.0])


@given(shapes=st.sampled_from([((3,), (3,)), ((2, 3), (3, 4)), ((3,), (3, 2)), ((2, 1, 2, 3), (4, 3, 2))]),
       data=st.data())
def test_matmul_function(device, shapes, data):
    sa, sb = shapes
    check(device, tg.matmul, np.matmul, data.draw(tgst.arrays(sa)), data.draw(tgst.arrays(sb)))


@given(b=st.integers(1, 3), n=st.integers(1, 3), m=st.integers(1, 3), p=st.integers(1, 3), data=st.data())
def test_bmm(device, b, n, m, p, data):
    check(device, tg.bmm, np.matmul, data.draw(tgst.arrays((b, n, m))), data.draw(tgst.arrays((b, m, p))))


@pytest.mark.parametrize("sa, sb", [((2, 3), (3, 4)), ((2, 3, 4), (3, 4, 5)), ((2, 3, 4), (2, 5, 4)),
                                    ((1, 3, 4), (2, 4, 5))])
def test_bmm_shape_errors(device, sa, sb):
    a, b = T(np.zeros(sa), device), T(np.zeros(sb), device)
    with pytest.raises(tg.ShapeError, match=r"bmm: expected \(B, n, m\) and \(B, m, p\), got shapes "
                                            + re.escape(f"{tg.errors.fmt_shape(sa)} and {tg.errors.fmt_shape(sb)}")):
        tg.bmm(a, b)


# ============================================================================ einsum
EINSUMS = ["ij,jk->ik", "bij,bjk->bik", "i,i->", "i,j->ij", "ii->", "ii->i", "ij->ji", "ij->", "ij,ij->ij",
           "ij,jk,kl->il", "bhqd,bhkd->bhqk", "iij->j", "ij,jk", "ba", "i,i", "ijk,ikl->jl", "ij,kl->"]


@pytest.mark.parametrize("equation", EINSUMS)
@given(data=st.data())
def test_einsum_examples(device, equation, data):
    sizes = {c: data.draw(st.integers(1, 3), label=c) for c in "abdhijklq"}
    arrays = [data.draw(tgst.arrays(tuple(sizes[c] for c in sub))) for sub in equation.split("->")[0].split(",")]
    check(device, lambda *ts: tg.einsum(equation, *ts), lambda *a: np.einsum(equation, *a), *arrays)


@st.composite
def einsum_cases(draw):
    """A random equation over the letters a-d (repeats inside an operand allowed), its arrays."""
    sizes = {c: draw(st.integers(1, 3)) for c in "abcd"}
    ins = [draw(st.text(alphabet="abcd", max_size=3)) for _ in range(draw(st.integers(1, 3)))]
    used = sorted(set("".join(ins)))
    out = "".join(draw(st.permutations(used))[:draw(st.integers(0, len(used)))])
    equation = ",".join(ins) + ("->" + out if draw(st.booleans()) else "")
    return equation, [draw(tgst.arrays(tuple(sizes[c] for c in sub))) for sub in ins]


@given(case=einsum_cases())
def test_einsum_random_equations(device, case):
    equation, arrays = case
    check(device, lambda *ts: tg.einsum(equation, *ts), lambda *a: np.einsum(equation, *a), *arrays, grad2=False)


def test_einsum_takes_a_list_and_second_derivatives(device):
    a, b = T(np.arange(6.0).reshape(2, 3) / 5, device), T(np.arange(12.0).reshape(3, 4) / 7, device)
    close(tg.einsum("ij,jk->ik", [a, b]), a.numpy() @ b.numpy())
    assert tg.gradgradcheck(lambda x, y: tg.einsum("ij,jk,ik->", x, y, x @ y), (a, b))


@pytest.mark.parametrize("equation, shapes, error, message", [
    ("ij,jk->ik", [(2, 3)], ValueError, r"einsum: 'ij,jk->ik' has 2 operand\(s\) but 1 tensor\(s\) were given"),
    ("ij->i->j", [(2, 3)], ValueError, r"einsum: expected an equation like 'ij,jk->ik', got 'ij->i->j'"),
    ("...ij->ij", [(2, 3)], ValueError, r"einsum: ellipsis \('...'\) is not supported"),
    ("i1->i", [(2, 3)], ValueError, r"einsum: subscripts must be letters a-z, A-Z; 'i1->i' has '1'"),
    ("ijk->i", [(2, 3)], tg.ShapeError, r"einsum: operand 0 has shape \(2, 3\) \(2 dims\) but subscripts 'ijk' \(3\)"),
    ("ij,jk->ik", [(2, 3), (4, 5)], tg.ShapeError, r"einsum: subscript 'j' has size 3 and 4 \(operand 1, shape \(4, 5\)\)"),
    ("ij->ii", [(2, 3)], ValueError, r"einsum: the output 'ii' of 'ij->ii' repeats a letter or has one no input has"),
    ("ij->k", [(2, 3)], ValueError, r"einsum: the output 'k' of 'ij->k' repeats a letter"),
])
def test_einsum_errors(device, equation, shapes, error, message):
    with pytest.raises(error, match=message):
        tg.einsum(equation, *[T(np.zeros(s), device) for s in shapes])


def test_einsum_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 4, 5))
    x, y = T(a, "cpu"), T(b, "cpu")
    xt, yt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    tg.einsum("bij,bjk->ik", x, y).square().sum().backward()
    torch.einsum("bij,bjk->ik", xt, yt).square().sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())
    np.testing.assert_allclose(y.grad.numpy(), yt.grad.numpy())


# ============================================================================ creation and modes
def test_linspace(device):
    t = tg.linspace(-1, 2, 7, device=device)
    assert t.dtype is tg.float32 and t.device.name == tg.device(device).name
    np.testing.assert_allclose(t.numpy(), np.linspace(-1, 2, 7), rtol=1e-6)
    assert tg.linspace(0, 1, 1, dtype=tg.float64).tolist() == [0.0] and tg.linspace(0, 1, 0).shape == (0,)
    assert tg.linspace(0.0, 1.0, 3, requires_grad=True).requires_grad
    with pytest.raises(ValueError, match="linspace: steps must be an int >= 0, got -1"):
        tg.linspace(0, 1, -1)


def test_from_numpy_shares_memory_and_keeps_the_dtype():
    a = np.arange(4.0)
    t = tg.from_numpy(a)
    assert t.dtype is tg.float64 and t.device.name == "cpu"
    a[0] = 9.0
    assert t.tolist() == [9.0, 1.0, 2.0, 3.0]
    assert tg.from_numpy(np.arange(3, dtype=np.int32)).dtype is tg.int32
    with pytest.raises(TypeError, match="from_numpy: expected a numpy.ndarray, got list"):
        tg.from_numpy([1.0])
    with pytest.raises(tg.DTypeError, match="from_numpy: unsupported dtype complex128"):
        tg.from_numpy(np.zeros(2, dtype=complex))


def test_as_tensor(device):
    t = T([1.0, 2.0], device)
    assert tg.as_tensor(t) is t
    assert tg.as_tensor(t, dtype=tg.float32).dtype is tg.float32
    a = np.ones(3)
    shared = tg.as_tensor(a)
    a[1] = 5.0
    assert shared.tolist() == [1.0, 5.0, 1.0] and shared.dtype is tg.float64
    moved = tg.as_tensor(a, device=device)
    assert moved.device.name == tg.device(device).name and moved.tolist() == [1.0, 5.0, 1.0]
    assert tg.as_tensor([1, 2], dtype=tg.int64).dtype is tg.int64


def test_inference_mode_records_no_graph():
    x = tg.ones(2, requires_grad=True)
    with tg.inference_mode():
        assert not (x * 2).requires_grad and not tg.is_grad_enabled()
    assert tg.is_grad_enabled()
    with tg.inference_mode(False):
        assert (x * 2).requires_grad

    @tg.inference_mode()
    def f(depth):
        return (x * 2).requires_grad if depth == 0 else f(depth - 1)

    @tg.inference_mode
    def g():
        return (x * 2).requires_grad

    assert f(2) is False and g() is False and tg.is_grad_enabled()


def test_new_math_matches_torch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(1).uniform(0.5, 2.0, (3, 4))
    a[0, 1] = 0.0  # a zero for prod and the norms
    v = np.random.default_rng(2).normal(size=a.shape)
    calls = [lambda t: t.sin().cos(), lambda t: t.log1p().expm1(), lambda t: (t + 1).rsqrt().square(),
             lambda t: t.var(1), lambda t: t.std(0, correction=0), lambda t: t.var(unbiased=False),
             lambda t: t.norm(), lambda t: t.norm(1, 1), lambda t: t.norm(3.0, 0), lambda t: t.norm(math.inf, 1),
             lambda t: t.prod(1), lambda t: t.prod(), lambda t: t.amax(1), lambda t: t.max(0)[0]]
    for call in calls:
        x, xt = T(a, "cpu"), torch.tensor(a, requires_grad=True)
        out, want = call(x), call(xt)
        np.testing.assert_allclose(out.numpy(), want.detach().numpy(), rtol=1e-12)
        (g,) = tg.autograd.grad(out.square().sum(), x, create_graph=True)
        (gt,) = torch.autograd.grad(want.square().sum(), xt, create_graph=True)
        np.testing.assert_allclose(g.numpy(), gt.detach().numpy(), rtol=1e-10, atol=1e-12)
        (h,) = tg.autograd.grad((g * T(v, "cpu", False)).sum(), x)  # a Hessian-vector product
        (ht,) = torch.autograd.grad((gt * torch.tensor(v)).sum(), xt)
        np.testing.assert_allclose(h.numpy(), ht.numpy(), rtol=1e-9, atol=1e-12)
