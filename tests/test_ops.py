"""Every op: forward against NumPy, backward against central differences (tg.gradcheck,
float64), over shapes and values drawn by hypothesis, on every device.

Values are kept off the points where an op has no derivative (kinks, ties) with
`assume`; what the engine does exactly at those points is pinned down by the explicit
tests further down.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import tinygrad_rnn as tg
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn.testing import strategies as tgst
from tinygrad_rnn.testing import far_from, well_separated


def T(a, device, requires_grad=True):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64, device=device,
                     requires_grad=requires_grad)


def assert_matches(out, expected, device, rtol=1e-10, atol=1e-12):
    if isinstance(expected, (tuple, list)):
        assert isinstance(out, tuple) and len(out) == len(expected)
        for o, e in zip(out, expected):
            assert_matches(o, e, device, rtol, atol)
        return
    expected = np.asarray(expected)
    assert isinstance(out, tg.Tensor)
    assert out.device.name == tg.device(device).name
    assert out.dtype is tg.float64
    assert out.shape == expected.shape, f"shape {out.shape}, NumPy says {expected.shape}"
    np.testing.assert_allclose(out.numpy(), expected, rtol=rtol, atol=atol)


def check(device, fn, np_fn, *arrays, grad=True, grad2=True):
    """fn(*tensors) against np_fn(*arrays), then gradcheck of fn w.r.t. every input, and
    gradgradcheck (second derivatives, along a random direction) unless grad2=False."""
    ts = [T(a, device) for a in arrays]
    assert_matches(fn(*ts), np_fn(*arrays), device)
    if grad:
        assert tg.gradcheck(fn, ts)
        if grad2:
            assert tg.gradgradcheck(fn, ts, fast_mode=True)


SMALL = dict(max_dims=3, max_side=3)


def np_logsumexp(a, axis=None, keepdims=False):
    m = np.max(a, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def np_log_softmax(a, axis):
    return a - np_logsumexp(a, axis=axis, keepdims=True)


# ============================================================================ elementwise, binary
BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "method_add": (lambda a, b: a.add(b), np.add),
    "method_sub": (lambda a, b: a.sub(b), np.subtract),
    "method_mul": (lambda a, b: a.mul(b), np.multiply),
}


@pytest.mark.parametrize("op", sorted(BINARY))
@given(shapes=tgst.mutually_broadcastable_shapes(2, **SMALL), data=st.data())
def test_binary_broadcasting(device, op, shapes, data):
    fn, np_fn = BINARY[op]
    (sa, sb), _ = shapes
    a = data.draw(tgst.arrays(sa))
    b = data.draw(tgst.arrays(sb))
    check(device, fn, np_fn, a, b)


@given(shapes=tgst.mutually_broadcastable_shapes(2, **SMALL), data=st.data())
def test_div(device, shapes, data):
    (sa, sb), _ = shapes
    a = data.draw(tgst.arrays(sa))
    # denominators at least 0.5 from zero, of either sign
    b = data.draw(tgst.arrays(sb, 0.5, 3.0)) * data.draw(st.sampled_from([1.0, -1.0]))
    check(device, lambda x, y: x / y, np.divide, a, b)
    check(device, lambda x, y: x.div(y), np.divide, a, b)


SCALAR_FORMS = {
    "x+c": (lambda x, c: x + c, lambda x, c: x + c),
    "c+x": (lambda x, c: c + x, lambda x, c: c + x),
    "x-c": (lambda x, c: x - c, lambda x, c: x - c),
    "c-x": (lambda x, c: c - x, lambda x, c: c - x),
    "x*c": (lambda x, c: x * c, lambda x, c: x * c),
    "c*x": (lambda x, c: c * x, lambda x, c: c * x),
    "x/c": (lambda x, c: x / c, lambda x, c: x / c),
}


@pytest.mark.parametrize("form", sorted(SCALAR_FORMS))
@given(x=tgst.arrays(tgst.shapes(**SMALL)), c=tgst.floats(0.5, 3.0) | st.integers(1, 3))
def test_binary_with_python_scalar(device, form, x, c):
    fn, np_fn = SCALAR_FORMS[form]
    check(device, lambda t: fn(t, c), lambda a: np_fn(a, c), x)


@given(x=tgst.arrays(tgst.shapes(**SMALL), 0.5, 3.0), sign=st.sampled_from([1.0, -1.0]),
       c=tgst.floats(0.5, 3.0))
def test_scalar_divided_by_tensor(device, x, sign, c):
    check(device, lambda t: c / t, lambda a: c / a, x * sign)


@given(x=tgst.arrays(tgst.shapes(**SMALL)))
def test_neg(device, x):
    check(device, lambda t: -t, np.negative, x)
    check(device, lambda t: t.neg(), np.negative, x)


@given(x=tgst.arrays(tgst.shapes(**SMALL)), p=st.sampled_from([1, 2, 3, 2.0, 3.0]))
def test_pow_integer_exponent_any_base(device, x, p):
    check(device, lambda t: t ** p, lambda a: a ** p, x)
    check(device, lambda t: t.pow(p), lambda a: a ** p, x)


@given(x=tgst.arrays(tgst.shapes(**SMALL), 0.5, 3.0), p=tgst.floats(-2.5, 2.5))
def test_pow_real_exponent_positive_base(device, x, p):
    check(device, lambda t: t ** p, lambda a: a ** p, x)


@given(shapes=tgst.mutually_broadcastable_shapes(2, **SMALL), data=st.data())
def test_pow_tensor_tensor(device, shapes, data):
    (sa, sb), _ = shapes
    a = data.draw(tgst.arrays(sa, 0.5, 2.5))  # a positive base: a ** b is real, and so is log(a)
    b = data.draw(tgst.arrays(sb, -2.0, 2.0))
    check(device, lambda x, y: x ** y, np.power, a, b)


@given(x=tgst.arrays(tgst.shapes(**SMALL), -2.0, 2.0), c=tgst.floats(0.5, 3.0))
def test_pow_scalar_base(device, x, c):
    check(device, lambda t: c ** t, lambda a: c ** a, x)


# ============================================================================ elementwise, unary
def np_sigmoid(a):
    return np.exp(-np.logaddexp(0.0, -a))  # 1 / (1 + exp(-a)) without overflow


UNARY = {
    # name: (fn, NumPy, (lo, hi), kinks)
    "exp": (lambda t: t.exp(), np.exp, (-3, 3), []),
    "log": (lambda t: t.log(), np.log, (0.2, 3), []),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, (0.2, 3), []),
    "tanh": (lambda t: t.tanh(), np.tanh, (-3, 3), []),
    "sigmoid": (lambda t: t.sigmoid(), np_sigmoid, (-3, 3), []),
    "relu": (lambda t: t.relu(), lambda a: np.maximum(a, 0.0), (-3, 3), [0.0]),
    "abs": (lambda t: t.abs(), np.abs, (-3, 3), [0.0]),
    "F.relu": (F.relu, lambda a: np.maximum(a, 0.0), (-3, 3), [0.0]),
    "F.tanh": (F.tanh, np.tanh, (-3, 3), []),
    "F.sigmoid": (F.sigmoid, np_sigmoid, (-3, 3), []),
}


@pytest.mark.parametrize("op", sorted(UNARY))
@given(data=st.data())
def test_unary(device, op, data):
    fn, np_fn, (lo, hi), kinks = UNARY[op]
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL), lo, hi))
    assume(far_from(x, kinks))
    check(device, fn, np_fn, x)


def test_sigmoid_is_finite_far_out(device):
    x = T([-800.0, -40.0, 0.0, 40.0, 800.0], device)
    y = x.sigmoid()
    np.testing.assert_allclose(y.numpy(), np_sigmoid(np.array([-800.0, -40, 0, 40, 800.0])), rtol=1e-12)
    y.sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()))


@pytest.mark.parametrize("op", ["maximum", "minimum"])
@given(shapes=tgst.mutually_broadcastable_shapes(2, **SMALL), data=st.data())
def test_maximum_minimum(device, op, shapes, data):
    (sa, sb), _ = shapes
    a = data.draw(tgst.arrays(sa))
    b = data.draw(tgst.arrays(sb))
    assume(far_from(a - b, [0.0]))  # a tie is a kink
    np_fn = getattr(np, op)
    check(device, lambda x, y: getattr(x, op)(y), np_fn, a, b)
    check(device, lambda x, y: getattr(tg, op)(x, y), np_fn, a, b)


@pytest.mark.parametrize("op", ["maximum", "minimum"])
@given(x=tgst.arrays(tgst.shapes(**SMALL)), c=tgst.floats(-2, 2))
def test_maximum_minimum_with_scalar(device, op, x, c):
    assume(far_from(x, [c]))
    check(device, lambda t: getattr(t, op)(c), lambda a: getattr(np, op)(a, c), x)


@given(x=tgst.arrays(tgst.shapes(**SMALL)), lo=tgst.floats(-2, 0), width=tgst.floats(0.1, 3),
       which=st.sampled_from(["both", "lo", "hi"]))
def test_clip(device, x, lo, width, which):
    hi = lo + width
    lo_, hi_ = (lo, None) if which == "lo" else (None, hi) if which == "hi" else (lo, hi)
    assume(far_from(x, [b for b in (lo_, hi_) if b is not None]))
    np_fn = lambda a: np.clip(a, lo_, hi_)  # noqa: E731
    check(device, lambda t: t.clip(lo_, hi_), np_fn, x)
    check(device, lambda t: t.clamp(min=lo_, max=hi_), np_fn, x)


@given(shapes=tgst.mutually_broadcastable_shapes(3, **SMALL), data=st.data())
def test_where(device, shapes, data):
    (sc, sa, sb), _ = shapes
    cond = data.draw(tgst.arrays(sc)) > 0
    a = data.draw(tgst.arrays(sa))
    b = data.draw(tgst.arrays(sb))
    c_tensor = tg.tensor(cond, device=device)
    assert c_tensor.dtype is tg.bool_
    check(device, lambda x, y: tg.where(c_tensor, x, y), lambda x, y: np.where(cond, x, y), a, b)
    # a host condition and a Python-number branch
    check(device, lambda x: tg.where(cond, x, 0.5), lambda x: np.where(cond, x, 0.5), a)
    check(device, lambda y: tg.where(cond, -1.0, y), lambda y: np.where(cond, -1.0, y), b)


def test_comparisons_give_tensors_without_gradient(device):
    x = T([1.0, 2.0, 3.0], device)
    y = T([3.0, 2.0, 1.0], device)
    for out, want in [(x < y, [1, 0, 0]), (x <= y, [1, 1, 0]), (x > y, [0, 0, 1]), (x >= 2.0, [0, 1, 1]),
                      (x == y, [0, 1, 0]), (x != y, [1, 0, 1])]:
        assert out.dtype is tg.bool_ and not out.requires_grad and out.grad_fn is None
        np.testing.assert_array_equal(out.numpy(), np.array(want, dtype=bool))


# ============================================================================ reductions
def _reduce_call(t, name, axis, keepdims, torch_names):
    if torch_names:
        return getattr(t, name)(dim=axis, keepdim=keepdims)
    return getattr(t, name)(axis=axis, keepdims=keepdims)


NP_REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "amax": np.max, "amin": np.min,
             "logsumexp": np_logsumexp}


@pytest.mark.parametrize("op", ["sum", "mean", "amax", "amin", "logsumexp"])
@given(data=st.data(), keepdims=st.booleans(), torch_names=st.booleans())
def test_reduction(device, op, data, keepdims, torch_names):
    x = data.draw(tgst.arrays(tgst.shapes(max_dims=3, max_side=4)))
    axis = data.draw(tgst.axes(x.ndim))
    if op in ("amax", "amin"):
        assume(well_separated(x, axis=axis))  # ties are where max/min have no derivative
    check(device, lambda t: _reduce_call(t, op, axis, keepdims, torch_names),
          lambda a: NP_REDUCE[op](a, axis=axis, keepdims=keepdims), x)


def test_reduction_default_is_everything(device):
    a = np.arange(6.0).reshape(2, 3)
    x = T(a, device)
    for op in ["sum", "mean", "max", "min", "amax", "amin", "logsumexp"]:
        out = getattr(x, op)()
        assert out.shape == ()
        np.testing.assert_allclose(out.item(), NP_REDUCE[op](a))


MAX_TIES = [
    # (x, axis, expected gradient of x.amax(axis).sum())
    ([1.0, 3.0, 3.0, 2.0], None, [0, 0.5, 0.5, 0]),
    ([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], 1, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]]),
    ([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]], 0, [[0, 1, 1], [1, 0, 0]]),
    ([[5.0, 1.0], [5.0, 5.0]], (0, 1), [[1 / 3, 0], [1 / 3, 1 / 3]]),
]


@pytest.mark.parametrize("x, axis, want", MAX_TIES)
def test_max_splits_gradient_evenly_among_ties(device, x, axis, want):
    t = T(x, device)
    t.amax(axis=axis).sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-15)
    # min of -x ties in the same places
    t2 = T(-np.asarray(x), device)
    t2.amin(axis=axis).sum().backward()
    np.testing.assert_allclose(t2.grad.numpy(), want, rtol=1e-15)


def test_max_ties_with_keepdims_and_upstream_gradient(device):
    t = T([[2.0, 2.0, 1.0], [0.0, 4.0, 4.0]], device)
    t.amax(dim=1, keepdim=True).backward(np.array([[10.0], [6.0]]))
    np.testing.assert_allclose(t.grad.numpy(), [[5, 5, 0], [0, 3, 3]])


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_elementwise_extremum_ties_split_in_half(device, op):
    a = T([1.0, 2.0, 3.0], device)
    b = T([1.0, 0.0, 5.0], device)
    getattr(a, op)(b).sum().backward()
    win_a = [0.5, 1, 0] if op == "maximum" else [0.5, 0, 1]
    np.testing.assert_allclose(a.grad.numpy(), win_a)
    np.testing.assert_allclose(b.grad.numpy(), 1 - np.array(win_a))


def test_kink_conventions(device):
    # the subgradients PyTorch picks, so that results match it exactly at the kinks
    x = T([-1.0, 0.0, 1.0], device)
    x.relu().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 1])
    x.grad = None
    x.abs().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [-1, 0, 1])
    x.grad = None
    x.clip(-1.0, 1.0).sum().backward()  # bounds are inside the range
    np.testing.assert_array_equal(x.grad.numpy(), [1, 1, 1])


# ============================================================================ shape ops
@st.composite
def reshape_targets(draw, shape):
    """A shape with the same number of elements: dims permuted, merged, 1s inserted, maybe a -1."""
    dims = list(draw(st.permutations(list(shape))))
    out = []
    for d in dims:
        if out and draw(st.booleans()):
            out[-1] *= d
        else:
            out.append(d)
    for _ in range(draw(st.integers(0, 2))):
        out.insert(draw(st.integers(0, len(out))), 1)
    if out and draw(st.booleans()):
        out[draw(st.integers(0, len(out) - 1))] = -1
    return tuple(out)


@given(data=st.data(), as_tuple=st.booleans())
def test_reshape(device, data, as_tuple):
    x = data.draw(tgst.arrays(tgst.shapes(max_dims=3)))
    target = data.draw(reshape_targets(x.shape))
    fn = (lambda t: t.reshape(target)) if as_tuple or not target else (lambda t: t.reshape(*target))
    check(device, fn, lambda a: a.reshape(target), x)
    check(device, lambda t: t.view(target), lambda a: a.reshape(target), x)


@given(data=st.data())
def test_transpose_swaps_two_axes(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=4, max_side=3)))
    nd = x.ndim
    d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
    check(device, lambda t: t.transpose(d0, d1), lambda a: np.swapaxes(a, d0, d1), x)


@given(data=st.data(), splat=st.booleans())
def test_permute(device, data, splat):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=4, max_side=3)))
    nd = x.ndim
    axes = data.draw(st.permutations(range(nd)))
    axes = tuple(a - nd if data.draw(st.booleans()) else a for a in axes)
    fn = (lambda t: t.permute(*axes)) if splat else (lambda t: t.permute(axes))
    check(device, fn, lambda a: np.transpose(a, axes), x)


@given(x=tgst.arrays(tgst.shapes(max_dims=3)))
def test_T_reverses_axes(device, x):
    check(device, lambda t: t.T, lambda a: a.T, x)


@given(data=st.data())
def test_expand_and_broadcast_to(device, data):
    target = data.draw(tgst.shapes(max_dims=3))
    shape = data.draw(tgst.shapes(max_dims=len(target), max_side=1) | st.just(target[1:]))
    # any shape that broadcasts to target: sides of 1 or equal to target's
    shape = tuple(n if data.draw(st.booleans()) else target[len(target) - len(shape) + i]
                  for i, n in enumerate(shape))
    x = data.draw(tgst.arrays(shape))
    lead = len(target) - len(shape)
    # -1 keeps a side as it is (PyTorch's expand)
    spec = tuple(-1 if i >= lead and shape[i - lead] == n and data.draw(st.booleans()) else n
                 for i, n in enumerate(target))
    np_fn = lambda a: np.broadcast_to(a, target)  # noqa: E731
    check(device, lambda t: t.expand(*spec) if spec else t.expand(spec), np_fn, x)
    check(device, lambda t: t.broadcast_to(target), np_fn, x)


@given(data=st.data())
def test_squeeze(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(max_dims=4, max_side=2)))
    ones = [i for i, n in enumerate(x.shape) if n == 1]
    check(device, lambda t: t.squeeze(), np.squeeze, x)
    if ones:
        axis = data.draw(st.sampled_from(ones))
        axis = axis - x.ndim if data.draw(st.booleans()) else axis
        check(device, lambda t: t.squeeze(axis), lambda a: np.squeeze(a, axis), x)
        check(device, lambda t: t.squeeze(dim=axis), lambda a: np.squeeze(a, axis), x)
        sub = tuple(data.draw(st.lists(st.sampled_from(ones), min_size=1, unique=True)))
        check(device, lambda t: t.squeeze(sub), lambda a: np.squeeze(a, sub), x)


@given(data=st.data())
def test_unsqueeze(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(max_dims=3)))
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim))
    check(device, lambda t: t.unsqueeze(axis), lambda a: np.expand_dims(a, axis), x)
    check(device, lambda t: t.unsqueeze(dim=axis), lambda a: np.expand_dims(a, axis), x)


@given(data=st.data())
def test_getitem_basic(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(max_dims=3)))
    key = data.draw(tgst.basic_indices(x.shape))
    check(device, lambda t: t[key], lambda a: a[key], x)


@given(data=st.data())
def test_getitem_integer_arrays_on_every_axis(device, data):
    # the case the Array API standard defines: one integer array per axis (broadcast together)
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=3)))
    idx_shapes = data.draw(tgst.mutually_broadcastable_shapes(x.ndim, min_dims=1, max_dims=2)).input_shapes
    key = tuple(data.draw(tgst.index_arrays(n, shape=s, allow_negative=True))
                for n, s in zip(x.shape, idx_shapes))
    check(device, lambda t: t[key], lambda a: a[key], x)
    # the same key as index tensors
    tkey = tuple(tg.tensor(k, device=device) for k in key)
    check(device, lambda t: t[tkey], lambda a: a[key], x)


@given(data=st.data())
def test_getitem_integer_array_partial_and_mixed_cpu(data):
    # cpu only: an index array for some axes but not all, and arrays mixed with slices,
    # are NumPy (and CuPy) behaviour the Array API standard leaves undefined, so the
    # strict library refuses them
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=2, max_dims=3)))
    idx = data.draw(tgst.index_arrays(x.shape[0]))
    check("cpu", lambda t: t[idx], lambda a: a[idx], x)
    idx1 = data.draw(tgst.index_arrays(x.shape[1]))
    check("cpu", lambda t: t[:, idx1], lambda a: a[:, idx1], x)
    check("cpu", lambda t: t[1:, idx1], lambda a: a[1:, idx1], x)
    check("cpu", lambda t: t[idx.tolist()], lambda a: a[idx.tolist()], x)


def test_getitem_repeated_indices_accumulate(device):
    x = T([10.0, 20.0, 30.0], device)
    idx = np.array([0, 2, 0, 0, -1])
    y = x[(idx,)]
    np.testing.assert_array_equal(y.numpy(), [10, 30, 10, 10, 30])
    y.backward(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [1 + 3 + 4, 0, 2 + 5])


def test_getitem_repeated_rows_accumulate_cpu():
    # cpu only: a lone index array on a 2-D tensor is outside the Array API standard
    w = T(np.ones((3, 2)), "cpu")
    w[[1, 1, 0, 1]].sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[1, 1], [3, 3], [0, 0]])


@st.composite
def concat_inputs(draw):
    base = list(draw(tgst.shapes(min_dims=1, max_dims=3, max_side=3)))
    nd = len(base)
    axis = draw(st.integers(-nd, nd - 1))
    n = draw(st.integers(1, 3))
    shapes = []
    for _ in range(n):
        s = list(base)
        s[axis] = draw(st.integers(1, 3))
        shapes.append(tuple(s))
    arrays = [draw(tgst.arrays(s)) for s in shapes]
    return arrays, axis


@given(inputs=concat_inputs(), torch_names=st.booleans())
def test_concat(device, inputs, torch_names):
    arrays, axis = inputs
    fn = (lambda *ts: tg.cat(ts, dim=axis)) if torch_names else (lambda *ts: tg.concat(list(ts), axis=axis))
    check(device, fn, lambda *a: np.concatenate(a, axis=axis), *arrays)


@given(data=st.data(), n=st.integers(1, 3))
def test_stack(device, data, n):
    shape = data.draw(tgst.shapes(max_dims=3, max_side=3))
    arrays = [data.draw(tgst.arrays(shape)) for _ in range(n)]
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(device, lambda *ts: tg.stack(ts, axis=axis), lambda *a: np.stack(a, axis=axis), *arrays)
    check(device, lambda *ts: tg.stack(ts, dim=axis), lambda *a: np.stack(a, axis=axis), *arrays)


@st.composite
def compositions(draw, n):
    """Positive sizes adding up to n."""
    sizes = []
    while n:
        k = draw(st.integers(1, n))
        sizes.append(k)
        n -= k
    return sizes


@given(data=st.data(), torch_names=st.booleans())
def test_split(device, data, torch_names):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=3)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    how = data.draw(st.integers(1, n + 1) | compositions(n))
    if isinstance(how, int):
        cuts = list(range(how, n, how))
    else:
        cuts = list(np.cumsum(how)[:-1])
    fn = (lambda t: t.split(how, dim=axis)) if torch_names else (lambda t: t.split(how, axis=axis))
    check(device, fn, lambda a: tuple(np.split(a, cuts, axis=axis)), x)


@given(data=st.data())
def test_chunk(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=3)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    chunks = data.draw(st.integers(1, n + 1))
    size = -(-n // chunks)  # PyTorch's rule: ceil(n / chunks) each, the last one smaller
    cuts = list(range(size, n, size))
    check(device, lambda t: t.chunk(chunks, axis=axis), lambda a: tuple(np.split(a, cuts, axis=axis)), x)


@given(data=st.data())
def test_unbind(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=3)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    expected = tuple(np.take(x, i, axis=axis) for i in range(x.shape[axis]))
    check(device, lambda t: t.unbind(axis), lambda a: expected, x)
    check(device, lambda t: tuple(iter(t)), lambda a: tuple(a), x)


@given(data=st.data())
def test_multi_output_with_some_outputs_unused(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=2)))
    keep = data.draw(st.lists(st.integers(0, x.shape[0] - 1), min_size=1, unique=True))

    def fn(t):
        parts = t.unbind(0)
        out = parts[keep[0]] * 2.0
        for k in keep[1:]:
            out = out + parts[k]
        return out

    def np_fn(a):
        return a[keep[0]] * 2.0 + sum((a[k] for k in keep[1:]), np.zeros(a.shape[1:]))

    check(device, fn, np_fn, x)


# ============================================================================ matmul
@st.composite
def matmul_shapes(draw):
    n, k, m = (draw(st.integers(1, 3)) for _ in range(3))
    (ba, bb), _ = draw(tgst.mutually_broadcastable_shapes(2, max_dims=2, max_side=3))
    a_vec, b_vec = draw(st.booleans()), draw(st.booleans())
    sa = (k,) if a_vec else ba + (n, k)
    sb = (k,) if b_vec else bb + (k, m)
    return sa, sb


@given(shapes=matmul_shapes(), data=st.data())
def test_matmul(device, shapes, data):
    sa, sb = shapes
    a, b = data.draw(tgst.arrays(sa)), data.draw(tgst.arrays(sb))
    check(device, lambda x, y: x @ y, np.matmul, a, b)
    check(device, lambda x, y: x.matmul(y), np.matmul, a, b)


@given(shapes=st.tuples(*(st.integers(1, 4) for _ in range(3))), ta=st.booleans(), tb=st.booleans(),
       data=st.data())
def test_matmul_of_transposed_views(device, shapes, ta, tb, data):
    # x @ W.T and its kin: the leaf behind a transposed view gets its gradient row-major
    n, k, m = shapes
    a, b = data.draw(tgst.arrays((n, k))), data.draw(tgst.arrays((k, m)))
    ab, bb = T(np.ascontiguousarray(a.T), device), T(np.ascontiguousarray(b.T), device)
    x = ab.T if ta else T(a, device)
    y = bb.T if tb else T(b, device)
    g = data.draw(tgst.arrays((n, m)))
    (x @ y).backward(T(g, device))
    leaf_a, leaf_b = ab if ta else x, bb if tb else y
    want_a, want_b = g @ b.T, a.T @ g
    np.testing.assert_allclose(leaf_a.grad.numpy(), want_a.T if ta else want_a, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(leaf_b.grad.numpy(), want_b.T if tb else want_b, rtol=1e-12, atol=1e-12)
    for leaf in (leaf_a, leaf_b):
        flags = getattr(leaf.grad.data, "flags", None)
        assert flags is None or flags.c_contiguous


def test_matmul_with_array_operand(device):
    a = np.arange(6.0).reshape(2, 3)
    b = np.arange(3.0)
    x = T(a, device)
    assert_matches(x @ b, a @ b, device)
    assert_matches(b[None, :] @ x.T, b[None, :] @ a.T, device)


# ============================================================================ nn.functional
@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@given(data=st.data(), how=st.sampled_from(["method", "F", "F_dim"]))
def test_softmax_and_log_softmax(device, op, data, how):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=3)))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    np_fn = (lambda a: np.exp(np_log_softmax(a, axis))) if op == "softmax" else (lambda a: np_log_softmax(a, axis))
    fn = {"method": lambda t: getattr(t, op)(axis),
          "F": lambda t: getattr(F, op)(t, axis=axis),
          "F_dim": lambda t: getattr(F, op)(t, dim=axis)}[how]
    check(device, fn, np_fn, x)


def test_softmax_is_stable_for_large_logits(device):
    x = T([[1000.0, 1000.0, -1000.0]], device)
    np.testing.assert_allclose(x.softmax(-1).numpy(), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(x.log_softmax(-1).numpy()[0, :2], [-math.log(2)] * 2)
    np.testing.assert_allclose(x.logsumexp().item(), 1000 + math.log(2))


def np_cross_entropy(logits, targets, reduction, ignore_index):
    """The textbook definition, written independently of the engine: classes on axis 1."""
    x = np.moveaxis(logits, 1, -1) if logits.ndim > 1 else logits
    logp = np_log_softmax(x, -1)
    t = targets if ignore_index is None else np.where(targets == ignore_index, 0, targets)
    nll = -np.take_along_axis(logp, t[..., None], axis=-1)[..., 0]
    keep = np.ones_like(nll) if ignore_index is None else (targets != ignore_index).astype(float)
    nll = nll * keep
    if reduction == "none":
        return nll
    return nll.sum() if reduction == "sum" else nll.sum() / keep.sum()


@st.composite
def cross_entropy_inputs(draw):
    c = draw(st.integers(1, 4))
    layout = draw(st.sampled_from(["(N,C)", "(N,C,d1)", "(C,)"]))
    n, d1 = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    shape, tshape = {"(N,C)": ((n, c), (n,)), "(N,C,d1)": ((n, c, d1), (n, d1)), "(C,)": ((c,), ())}[layout]
    logits = draw(tgst.arrays(shape))
    targets = draw(tgst.index_arrays(c, shape=tshape))
    ignore_index = draw(st.sampled_from([None, -100, 0]))
    if ignore_index == -100:  # some targets are the ignore value, which is no class at all
        drop = draw(tgst.arrays(tshape)) > 1.0
        targets = np.where(drop, -100, targets)
    return logits, targets, ignore_index


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(inputs=cross_entropy_inputs(), as_tensor=st.booleans())
def test_cross_entropy(device, reduction, inputs, as_tensor):
    logits, targets, ignore_index = inputs
    if reduction == "mean" and ignore_index is not None:
        assume(np.any(targets != ignore_index))  # a mean over no target at all is 0/0
    tt = tg.tensor(targets, device=device) if as_tensor else targets
    # second derivatives: the fused op's composed form (tests/test_higher_order.py has its Hessian)
    check(device, lambda x: F.cross_entropy(x, tt, reduction=reduction, ignore_index=ignore_index),
          lambda a: np_cross_entropy(a, targets, reduction, ignore_index), logits)
    if logits.ndim == 2:  # what nll_loss takes: (N, C)
        check(device, lambda x: F.nll_loss(F.log_softmax(x, -1), tt, reduction=reduction, ignore_index=ignore_index),
              lambda a: np_cross_entropy(a, targets, reduction, ignore_index), logits)


def test_cross_entropy_gradient_is_softmax_minus_one_hot(device):
    logits = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    x = T(logits, device)
    F.cross_entropy(x, np.array([1, 2]), reduction="sum").backward()
    p = np.exp(np_log_softmax(logits, -1))
    np.testing.assert_allclose(x.grad.numpy(), p - np.eye(3)[[1, 2]], rtol=1e-12)


def test_cross_entropy_ignored_rows_get_no_gradient(device):
    x = T(np.random.default_rng(0).standard_normal((4, 3)), device)
    loss = F.cross_entropy(x, np.array([0, -100, 2, -100]), ignore_index=-100)
    loss.backward()
    g = x.grad.numpy()
    assert np.all(g[[1, 3]] == 0)
    # the mean is over the 2 rows that count
    manual = np_cross_entropy(x.numpy(), np.array([0, -100, 2, -100]), "sum", -100) / 2
    np.testing.assert_allclose(loss.item(), manual, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(data=st.data(), ignore=st.booleans())
def test_nll_loss(device, reduction, data, ignore):
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    logp = data.draw(tgst.arrays((n, c)))
    targets = data.draw(tgst.index_arrays(c, shape=(n,)))
    ignore_index = None
    if ignore:
        ignore_index = -100
        targets = np.where(data.draw(tgst.arrays((n,))) > 1.0, -100, targets)
        if reduction == "mean":
            assume(np.any(targets != -100))
    keep = np.ones(n) if ignore_index is None else (targets != ignore_index).astype(float)

    def np_fn(a):
        p = a[np.arange(n), np.where(keep > 0, targets, 0)] * keep
        return -p if reduction == "none" else -p.sum() if reduction == "sum" else -p.sum() / keep.sum()

    check(device, lambda t: F.nll_loss(t, targets, reduction=reduction, ignore_index=ignore_index), np_fn, logp)


@given(x=tgst.arrays(tgst.shapes(min_dims=1, max_dims=3, max_side=3)), data=st.data(), bias=st.booleans())
def test_linear(device, x, data, bias):
    k = x.shape[-1]
    m = data.draw(st.integers(1, 3))
    w = data.draw(tgst.arrays((m, k)))
    b = data.draw(tgst.arrays((m,)))
    if bias:
        check(device, lambda t, wt, bt: F.linear(t, wt, bt), lambda a, wa, ba: a @ wa.T + ba, x, w, b)
    else:
        check(device, lambda t, wt: F.linear(t, wt), lambda a, wa: a @ wa.T, x, w)


def test_one_hot(device):
    idx = np.array([[0, 2], [1, 1]])
    out = F.one_hot(tg.tensor(idx, device=device), 3)
    np.testing.assert_array_equal(out.numpy(), np.eye(3)[idx])
    assert out.dtype is tg.float32 and not out.requires_grad
    assert F.one_hot(idx, 4, dtype=tg.float64, device=device).dtype is tg.float64


@given(data=st.data(), padding=st.booleans())
def test_embedding(device, data, padding):
    v, d = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 3))
    w = data.draw(tgst.arrays((v, d)))
    idx = data.draw(tgst.index_arrays(v, shape=tgst.shapes(max_dims=2, max_side=4)))
    as_tensor = data.draw(st.booleans())
    ii = tg.tensor(idx, device=device) if as_tensor else idx
    # forward only with padding_idx: its row gets no gradient on purpose, which is not the
    # derivative a numerical check measures
    pad = data.draw(st.integers(0, v - 1)) if padding else None
    check(device, lambda t: F.embedding(ii, t, padding_idx=pad), lambda a: a[idx], w, grad=pad is None)


def test_embedding_repeats_accumulate_and_padding_row_gets_nothing(device):
    w = T(np.arange(8.0).reshape(4, 2), device)
    idx = np.array([[1, 3, 1], [0, 1, 3]])
    out = F.embedding(idx, w, padding_idx=3)
    np.testing.assert_array_equal(out.numpy(), w.numpy()[idx])  # the padding row is looked up as is
    out.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[1, 1], [3, 3], [0, 0], [0, 0]])
    w.grad = None
    F.embedding(idx, w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [[1, 1], [3, 3], [0, 0], [2, 2]])


@pytest.mark.parametrize("p", [0.001, 0.1, 0.5, 0.8, 0.999])
def test_dropout_mask_statistics(device, p):
    n = 200_000
    x = T(np.full(n, 2.0), device)
    y = F.dropout(x, p).numpy()
    zero = y == 0
    # the share of zeros is Binomial(n, p) / n: 6 standard deviations of slack
    assert abs(zero.mean() - p) < 6 * math.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(y[~zero], 2.0 / (1 - p))  # inverted dropout: survivors scaled up
    assert abs(y.mean() - 2.0) < 6 * 2.0 * math.sqrt(p / (1 - p) / n)  # the mean is kept


@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (3, 5), (2, 0, 4)])
def test_dropout_mask_shapes_and_values(device, shape):
    # odd sizes: the CPU draws 32 bits an element from 64-bit words
    x = T(np.ones(shape), device)
    y = F.dropout(x, 0.25).numpy()
    assert y.shape == shape and y.dtype == np.float64
    assert set(np.unique(y)) <= {0.0, 1 / 0.75}


def test_dropout_gradient_is_the_mask(device):
    x = T(np.random.default_rng(1).uniform(0.5, 1.5, (50, 40)), device)
    y = F.dropout(x, 0.3)
    g = np.random.default_rng(2).standard_normal((50, 40))
    y.backward(g)
    mask = y.numpy() / x.numpy()  # 0 or 1/(1-p)
    assert set(np.round(np.unique(mask), 12)) <= {0.0, round(1 / 0.7, 12)}
    np.testing.assert_allclose(x.grad.numpy(), g * mask, rtol=1e-12)


@given(x=tgst.arrays(tgst.shapes(**SMALL)), p=st.sampled_from([0.2, 0.5]))
def test_dropout_gradcheck_with_a_fixed_mask(device, x, p):
    def fn(t):
        tg.manual_seed(7)  # the same mask on every forward pass of the check
        return F.dropout(t, p)

    t = T(x, device)
    assert tg.gradcheck(fn, [t])
    assert tg.gradgradcheck(fn, [t], fast_mode=True)  # the mask is a constant: second derivative 0


def test_dropout_off(device):
    x = T([1.0, 2.0], device)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), [0.0, 0.0])


def test_dropout_is_reproducible_with_manual_seed(device):
    x = T(np.ones(100), device)
    tg.manual_seed(3)
    a = F.dropout(x, 0.5).numpy()
    tg.manual_seed(3)
    b = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(a, b)


# ============================================================================ composites
@given(data=st.data())
def test_composite_rnn_step(device, data):
    # several ops chained the way an RNN step uses them, with a weight shared across steps
    b, h, t_len = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    xs = data.draw(tgst.arrays((t_len, b, h)))
    w = data.draw(tgst.arrays((h, h), -1, 1))

    def fn(xs_t, w_t):
        state = tg.zeros((b, h), dtype=tg.float64, device=device)
        outs = []
        for x_t in xs_t.unbind(0):
            state = (x_t + state @ w_t).tanh()
            outs.append(state)
        return tg.stack(outs).sum(axis=0)

    def np_fn(xs_a, w_a):
        state = np.zeros((b, h))
        total = np.zeros((b, h))
        for x_t in xs_a:
            state = np.tanh(x_t + state @ w_a)
            total += state
        return total

    check(device, fn, np_fn, xs, w)


# ============================================================================ adjoint helpers
# IndexAdd (GetItem's adjoint, what its backward computes) and Alias (an identity node), the
# two ops create_graph adds; both are differentiated twice like every other op
@given(data=st.data(), accumulate=st.booleans())
def test_index_add(device, data, accumulate):
    rows = data.draw(st.integers(1, 4))
    tail = data.draw(st.sampled_from([(), (2,), (2, 3)]))
    from tinygrad_rnn.ops.shape import Alias, IndexAdd
    if accumulate:  # repeated row indices add up
        idx = np.asarray(data.draw(st.lists(st.integers(0, rows - 1), min_size=1, max_size=5)))
        key = tg.device(device).from_host(idx)
        values = data.draw(tgst.arrays((len(idx),) + tail))
        expected = np.zeros((rows,) + tail)
        np.add.at(expected, idx, values)
    else:  # a basic slice is written
        lo = data.draw(st.integers(0, rows - 1))
        key = (slice(lo, rows),) + (Ellipsis,)
        values = data.draw(tgst.arrays((rows - lo,) + tail))
        expected = np.zeros((rows,) + tail)
        expected[lo:] = values
    check(device, lambda v: IndexAdd.apply(v, (rows,) + tail, key, accumulate), lambda v: expected, values)
    check(device, lambda v: Alias.apply(v) * v, lambda v: v * v, values)
