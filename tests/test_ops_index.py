"""Indexing and shape vocabulary with PyTorch's semantics: gather, take_along_dim,
scatter_add, masked_fill, boolean masks (x[mask], x[mask] = v), flip, roll, repeat, tile,
sort, topk, clone, contiguous, T/mT, view, dim, type_as, new_*.

Each op: forward against NumPy, backward against central differences and second
derivatives (gradgradcheck) over drawn shapes, on every device; then the errors.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn.testing import strategies as tgst
from tinygrad_rnn.testing import well_separated


def T(a, device, requires_grad=True):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64, device=device,
                     requires_grad=requires_grad)


def I(a, device):  # noqa: E743 (an index tensor)
    return tg.tensor(np.asarray(a, dtype=np.int64), device=device)


def assert_matches(out, expected, device):
    expected = np.asarray(expected)
    assert isinstance(out, tg.Tensor) and out.device.name == tg.device(device).name
    assert out.shape == expected.shape, f"shape {out.shape}, NumPy says {expected.shape}"
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-12)


def check(device, fn, np_fn, *arrays, grad2=True):
    """fn(*tensors) against np_fn(*arrays), gradcheck w.r.t. every input, and gradgradcheck."""
    ts = [T(a, device) for a in arrays]
    assert_matches(fn(*ts), np_fn(*arrays), device)
    assert tg.gradcheck(fn, ts)
    if grad2:
        assert tg.gradgradcheck(fn, ts, fast_mode=True)


SMALL = dict(min_dims=1, max_dims=3, max_side=3)


def corner(a, shape):
    """a's leading corner of the given shape (what PyTorch's gather/scatter_add read)."""
    return a[tuple(slice(0, n) for n in shape)]


def np_gather(a, dim, index):
    sub = tuple(slice(None) if d == dim % a.ndim else slice(0, n) for d, n in enumerate(index.shape))
    return np.take_along_axis(a[sub], index, axis=dim)


# ============================================================================ gather family
@given(data=st.data(), as_tensor=st.booleans())
def test_gather(device, data, as_tensor):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    index = data.draw(tgst.gather_indices(x.shape, dim))
    idx = I(index, device) if as_tensor else index
    check(device, lambda t: t.gather(dim, idx), lambda a: np_gather(a, dim, index), x)


def test_gather_repeated_indices_accumulate(device):
    x = T([[1.0, 2.0], [3.0, 4.0]], device)
    y = x.gather(1, I([[0, 0, 0], [1, 0, 1]], device))
    np.testing.assert_array_equal(y.numpy(), [[1, 1, 1], [4, 3, 4]])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[3, 0], [1, 2]])


@given(data=st.data())
def test_take_along_dim_broadcasts(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    # index sides: 1 (broadcast up to x's) or x's own, any where x's is 1 (x broadcast up to
    # the index's), and any length along dim
    ishape = tuple(data.draw(st.integers(1, 3)) if d == dim % x.ndim or n == 1 else data.draw(st.sampled_from([1, n]))
                   for d, n in enumerate(x.shape))
    index = data.draw(tgst.index_arrays(x.shape[dim], shape=ishape))
    check(device, lambda t: t.take_along_dim(I(index, device), dim),
          lambda a: np.take_along_axis(a, index, axis=dim), x)


@given(data=st.data())
def test_take_along_dim_without_dim_flattens(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    index = data.draw(tgst.index_arrays(x.size))
    check(device, lambda t: t.take_along_dim(index), lambda a: a.reshape(-1)[index.reshape(-1)], x)


def test_take_along_dim_broadcasts_the_tensor(device):
    x = np.arange(3.0).reshape(3, 1)
    index = np.zeros((3, 4), dtype=np.int64)
    out = T(x, device).take_along_dim(I(index, device), 1)
    np.testing.assert_array_equal(out.numpy(), np.broadcast_to(x, (3, 4)))


def np_scatter_add(a, dim, index, src):
    out = a.copy()
    key = tuple(index if d == dim % a.ndim else
                np.arange(n).reshape([-1 if k == d else 1 for k in range(index.ndim)])
                for d, n in enumerate(index.shape))
    np.add.at(out, key, corner(src, index.shape))
    return out


@given(data=st.data())
def test_scatter_add(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    index = data.draw(tgst.gather_indices(x.shape, dim))
    # src: at least the index's sides, maybe longer (only its corner is used)
    src = data.draw(tgst.arrays(tuple(n + data.draw(st.integers(0, 1)) for n in index.shape)))
    check(device, lambda t, s: t.scatter_add(dim, I(index, device), s),
          lambda a, s: np_scatter_add(a, dim, index, s), x, src)


def test_scatter_add_repeats_add_up_and_src_gets_the_gathered_gradient(device):
    x = T(np.zeros(3), device)
    src = T([1.0, 2.0, 3.0, 4.0], device)
    out = x.scatter_add(0, I([2, 0, 2], device), src)
    np.testing.assert_array_equal(out.numpy(), [2, 0, 4])
    out.backward(np.array([10.0, 20.0, 30.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [10, 20, 30])
    np.testing.assert_array_equal(src.grad.numpy(), [30, 10, 30, 0])  # src[3] unused


# ============================================================================ masks
@given(data=st.data())
def test_masked_fill(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    # a mask broadcastable to x: a suffix of x's shape, some sides 1
    k = data.draw(st.integers(0, x.ndim))
    mshape = tuple(n if data.draw(st.booleans()) else 1 for n in x.shape[x.ndim - k:])
    mask = data.draw(tgst.masks(mshape))
    value = data.draw(tgst.floats())
    check(device, lambda t: t.masked_fill(tg.tensor(mask, device=device), value),
          lambda a: np.where(mask, value, a), x)
    # a 0-d tensor value gets the gradient of the filled elements
    check(device, lambda t, v: t.masked_fill(mask, v), lambda a, v: np.where(mask, v, a), x, np.float64(value))


def test_masked_fill_gradient_is_zero_where_filled(device):
    x = T([[1.0, 2.0], [3.0, 4.0]], device)
    mask = tg.tensor(np.array([True, False]), device=device)
    y = x.masked_fill(mask, float("-inf"))
    np.testing.assert_array_equal(y.numpy(), [[-np.inf, 2], [-np.inf, 4]])
    y.softmax(dim=1).sum().backward()  # an attention mask's use
    assert np.all(x.grad.numpy()[:, 0] == 0)
    assert x.masked_fill(mask, 1).dtype is tg.float64


@given(data=st.data())
def test_boolean_mask_getitem(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    k = data.draw(st.integers(1, x.ndim))  # a mask over the leading k axes
    mask = data.draw(tgst.masks(x.shape[:k]))
    check(device, lambda t: t[mask], lambda a: a[mask], x)
    check(device, lambda t: t[tg.tensor(mask, device=device)], lambda a: a[mask], x)


def test_boolean_mask_gradient_scatters_back(device):
    x = T([[1.0, -2.0], [-3.0, 4.0]], device)
    y = x[x > 0]
    np.testing.assert_array_equal(y.numpy(), [1, 4])
    y.backward(np.array([5.0, 6.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [[5, 0], [0, 6]])
    assert x[(x > 9,)].shape == (0,)  # nothing selected, also as a 1-tuple key
    assert x[[True, False]].shape == (1, 2)  # a list of bools is a mask, as in PyTorch


@given(data=st.data())
def test_boolean_mask_setitem(device, data):
    a = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    k = data.draw(st.integers(1, a.ndim))
    mask = data.draw(tgst.masks(a.shape[:k]))
    x = T(a, device, requires_grad=False)
    x[tg.tensor(mask, device=device)] = 7.0
    want = a.copy()
    want[mask] = 7.0
    np.testing.assert_array_equal(x.numpy(), want)
    vals = np.arange(float(a[mask].size)).reshape(a[mask].shape)
    x[mask] = T(vals, device, requires_grad=False)
    want[mask] = vals
    np.testing.assert_array_equal(x.numpy(), want)


def test_setitem_outside_autograd(device):
    w = T(np.zeros((2, 3)), device)
    with pytest.raises(RuntimeError, match="setitem: .*requires grad.*no_grad"):
        w[w.detach() == 0] = 1.0
    with pytest.raises(RuntimeError, match="setitem"):
        (w * 2)[0] = 1.0
    with tg.no_grad():
        w[w == 0] = 1.0                  # an update in place, as an optimizer's
        w[0, 1:] = 5.0                   # basic keys too
    np.testing.assert_array_equal(w.numpy(), [[1, 5, 5], [1, 1, 1]])
    d = w.detach()
    d[1] = tg.tensor([7, 8, 9], device=device)  # an int tensor value is cast; detach shares memory
    np.testing.assert_array_equal(w.numpy()[1], [7, 8, 9])


def test_setitem_integer_arrays_cpu():
    # cpu only: the Array API standard (array-api-strict) has no integer-array __setitem__
    x = T(np.zeros(4), "cpu", requires_grad=False)
    x[np.array([0, 2])] = np.array([1.0, 2.0])
    np.testing.assert_array_equal(x.numpy(), [1, 0, 2, 0])
    with pytest.raises(IndexError, match="setitem: index 4 is out of range for axis 0 of size 4"):
        x[np.array([4])] = 1.0


# ============================================================================ flip, roll, repeat, tile
@given(data=st.data(), splat=st.booleans())
def test_flip(device, data, splat):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    dims = data.draw(tgst.axes(x.ndim, allow_none=False))
    dims_t = (dims,) if isinstance(dims, int) else tuple(dims)
    fn = (lambda t: t.flip(*dims_t)) if splat else (lambda t: t.flip(dims))
    check(device, fn, lambda a: np.flip(a, dims_t), x)


def test_flip_copies(device):
    x = T([1.0, 2.0, 3.0], device, requires_grad=False)
    y = x.flip(0)
    y[0] = 9.0
    np.testing.assert_array_equal(x.numpy(), [1, 2, 3])


@given(data=st.data())
def test_roll(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL)))
    n = data.draw(st.integers(1, 2))
    dims = tuple(data.draw(st.integers(-x.ndim, x.ndim - 1)) for _ in range(n))  # repeats roll twice
    shifts = tuple(data.draw(st.integers(-5, 5)) for _ in range(n))
    check(device, lambda t: t.roll(shifts, dims), lambda a: np.roll(a, shifts, dims), x)
    check(device, lambda t: t.roll(shifts[0], dims[0]), lambda a: np.roll(a, shifts[0], dims[0]), x)
    check(device, lambda t: t.roll(shifts[0]), lambda a: np.roll(a, shifts[0]), x)


@given(data=st.data(), splat=st.booleans())
def test_repeat(device, data, splat):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=0, max_dims=2, max_side=3)))
    sizes = tuple(data.draw(st.lists(st.integers(0, 3), min_size=x.ndim, max_size=x.ndim + 1)))
    assume(sizes or splat)
    fn = (lambda t: t.repeat(*sizes)) if splat else (lambda t: t.repeat(sizes))
    check(device, fn, lambda a: np.tile(a, sizes), x)


@given(data=st.data())
def test_tile(device, data):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=0, max_dims=3, max_side=3)))
    dims = tuple(data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=x.ndim + 1)))
    check(device, lambda t: t.tile(dims), lambda a: np.tile(a, dims), x)


def test_repeat_owns_its_memory(device):
    x = T([1.0, 2.0], device, requires_grad=False)
    for y in (x.repeat(1), x.repeat(3)):
        y[0] = 9.0
    np.testing.assert_array_equal(x.numpy(), [1, 2])


# ============================================================================ sort, topk
@given(data=st.data(), descending=st.booleans())
def test_sort(device, data, descending):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL), unique=True))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    assume(well_separated(x, axis=dim))
    order = np.argsort(-x if descending else x, axis=dim)
    out = T(x, device).sort(dim=dim, descending=descending)
    assert isinstance(out, tuple) and out.values is out[0] and out.indices is out[1]
    np.testing.assert_array_equal(out.indices.numpy(), order)
    assert out.indices.dtype is tg.int64 and not out.indices.requires_grad
    check(device, lambda t: t.sort(dim, descending).values, lambda a: np.take_along_axis(a, order, dim), x)


def test_sort_keeps_ties_in_order_and_sorts_ints_and_bools(device):
    x = tg.tensor(np.array([2, 1, 2, 1, 3]), device=device)
    np.testing.assert_array_equal(x.sort().indices.numpy(), [1, 3, 0, 2, 4])
    np.testing.assert_array_equal(x.sort(descending=True).indices.numpy(), [4, 0, 2, 1, 3])
    b = tg.tensor(np.array([True, False, True]), device=device)
    np.testing.assert_array_equal(b.sort().values.numpy(), [False, True, True])
    np.testing.assert_array_equal(x.sort(0, True, stable=True).indices.numpy(), [4, 0, 2, 1, 3])
    v, i = T(5.0, device).sort()
    assert v.shape == () and i.item() == 0


@given(data=st.data(), largest=st.booleans())
def test_topk(device, data, largest):
    x = data.draw(tgst.arrays(tgst.shapes(**SMALL), unique=True))
    dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
    k = data.draw(st.integers(0, x.shape[dim]))
    assume(well_separated(x, axis=dim))
    order = np.take(np.argsort(-x if largest else x, axis=dim), np.arange(k), axis=dim)
    out = T(x, device).topk(k, dim=dim, largest=largest)
    np.testing.assert_array_equal(out.indices.numpy(), order)
    check(device, lambda t: t.topk(k, dim, largest).values, lambda a: np.take_along_axis(a, order, dim), x)


def test_topk_gradient_reaches_the_chosen(device):
    x = T([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]], device)
    values, indices = x.topk(2)
    np.testing.assert_array_equal(values.numpy(), [[3, 2], [5, 4]])
    np.testing.assert_array_equal(indices.numpy(), [[0, 2], [1, 2]])
    values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 0, 1], [0, 1, 1]])
    assert type(x.topk(1)).__name__ == "topk" and type(x.sort()).__name__ == "sort"
    v, i = T(2.0, device).topk(1)
    assert v.shape == i.shape == ()


# ============================================================================ small ones
@given(x=tgst.arrays(tgst.shapes(max_dims=3)))
def test_clone(device, x):
    check(device, lambda t: t.clone(), lambda a: a, x)


def test_clone_owns_memory_and_contiguous_returns_self_when_it_can(device):
    x = T([[1.0, 2.0], [3.0, 4.0]], device, requires_grad=False)
    c = x.clone()
    c[0, 0] = 9.0
    assert x.numpy()[0, 0] == 1.0
    assert x.contiguous() is x
    xt = T(np.ones((2, 3)), device).T.contiguous()
    assert xt.shape == (3, 2)
    xt.sum().backward()


@given(x=tgst.arrays(tgst.shapes(min_dims=2, max_dims=4, max_side=3)))
def test_mT_swaps_the_last_two(device, x):
    check(device, lambda t: t.mT, lambda a: np.swapaxes(a, -1, -2), x)


@given(x=tgst.arrays(tgst.shapes(max_dims=4, max_side=3)))
def test_T_reverses_all_dims(device, x):
    check(device, lambda t: t.T, lambda a: np.transpose(a), x)


@given(x=tgst.arrays(tgst.shapes(max_dims=3)))
def test_view_with_minus_one(device, x):
    check(device, lambda t: t.view(-1), lambda a: a.reshape(-1), x)
    if x.ndim:
        check(device, lambda t: t.view(x.shape[0], -1), lambda a: a.reshape(x.shape[0], -1), x)


def test_dim_type_as_and_new_tensors(device):
    x = T(np.ones((2, 3)), device)
    assert x.dim() == 2 and T(1.0, device).dim() == 0
    i = tg.tensor(np.array([1, 2]), device=device)
    f32 = tg.ones(2, device=device)
    assert x.type_as(i).dtype is tg.int64 and not x.type_as(i).requires_grad
    y = x.type_as(f32)
    assert y.dtype is tg.float32 and y.requires_grad
    assert x.type_as(x) is x and i.type_as(x).dtype is tg.float64
    for t, want in ((x.new_zeros(2, 4), 0.0), (x.new_zeros((2, 4)), 0.0), (x.new_ones(2, 4), 1.0),
                    (x.new_full((2, 4), 3.5), 3.5)):
        assert t.shape == (2, 4) and t.dtype is tg.float64 and t.device is x.device and not t.requires_grad
        assert np.all(t.numpy() == want)
    assert i.new_ones(3).dtype is tg.int64
    assert x.new_zeros(3, dtype=tg.float32, requires_grad=True).requires_grad


# ============================================================================ errors
def test_errors_name_the_op_and_shapes(device):
    x = T(np.zeros((2, 3)), device)
    idx = I([[0, 1]], device)
    cases = [
        (tg.AxisError, r"gather: axis 2 is out of range .*\(2, 3\)", lambda: x.gather(2, idx)),
        (tg.DTypeError, r"gather: index must be an integer tensor, got float64", lambda: x.gather(1, x)),
        (tg.ShapeError, r"gather: index of shape \(2,\) has 1 dims but the tensor has 2", lambda: x.gather(1, [0, 1])),
        (tg.ShapeError, r"gather: index of shape \(3, 1\) is larger .* along axis 0", lambda: x.gather(1, [[0]] * 3)),
        (tg.IndexOutOfRange, r"gather: index 3 is out of range for axis 1 of size 3", lambda: x.gather(1, [[3]])),
        (tg.IndexOutOfRange, r"gather: index -1 is out of range", lambda: x.gather(0, [[-1]])),
        (tg.ShapeError, r"take_along_dim: indices of shape \(2,\) and a tensor of shape \(2, 3\)",
         lambda: x.take_along_dim([0, 1], 1)),
        (tg.ShapeError, r"take_along_dim: .* do not broadcast", lambda: x.take_along_dim([[0], [0], [0]], 1)),
        (tg.DTypeError, r"scatter_add: src is float32 but the tensor is float64",
         lambda: x.scatter_add(0, idx, tg.ones(1, 2, device=device))),
        (tg.ShapeError, r"scatter_add: index of shape \(1, 2\) is larger .* \(src \(1, 1\)\)",
         lambda: x.scatter_add(0, idx, T(np.ones((1, 1)), device))),
        (tg.IndexOutOfRange, r"scatter_add: index 2 is out of range for axis 0 of size 2",
         lambda: x.scatter_add(0, [[2]], T(np.ones((1, 1)), device))),
        (tg.DTypeError, r"masked_fill: mask must be a bool tensor, got float64", lambda: x.masked_fill(x, 0.0)),
        (tg.DTypeError, r"masked_fill: mask must be bool, got int64", lambda: x.masked_fill(np.array([1, 0, 1]), 0)),
        (tg.ShapeError, r"masked_fill: a mask of shape \(2,\) does not broadcast to the tensor's shape \(2, 3\)",
         lambda: x.masked_fill(np.array([True, False]), 0.0)),
        (tg.ShapeError, r"masked_fill: a mask of shape \(1, 2, 3\)", lambda: x.masked_fill(np.ones((1, 2, 3), bool), 0)),
        (tg.ShapeError, r"masked_fill: value must be a number or a 0-d tensor", lambda: x.masked_fill(x > 0, x)),
        (tg.ShapeError, r"getitem: a boolean mask of shape \(3,\) does not match the tensor of shape \(2, 3\)",
         lambda: x[np.array([True, False, True])]),
        (tg.ShapeError, r"setitem: a boolean mask of shape \(3, 2\)", lambda: x.detach().__setitem__(
            np.ones((3, 2), bool), 0.0)),
        (tg.DTypeError, r"getitem: a boolean mask must be the only index", lambda: x[np.array([True, False]), 0]),
        (tg.AxisError, r"flip: axis 2 is out of range", lambda: x.flip(2)),
        (tg.AxisError, r"flip: repeated axis", lambda: x.flip(0, -2)),
        (tg.AxisError, r"roll: axis -3 is out of range", lambda: x.roll(1, -3)),
        (tg.ShapeError, r"roll: 2 shifts for 1 dims", lambda: x.roll((1, 2), 0)),
        (tg.ShapeError, r"roll: without dims, shifts must be one int", lambda: x.roll((1, 2))),
        (tg.ShapeError, r"repeat: sizes \(2,\) for a tensor of shape \(2, 3\)", lambda: x.repeat(2)),
        (tg.ShapeError, r"repeat: sizes \(1, -1\)", lambda: x.repeat(1, -1)),
        (tg.IndexOutOfRange, r"topk: k=4 is out of range for dim -1 of size 3 \(tensor of shape \(2, 3\)",
         lambda: x.topk(4)),
        (tg.IndexOutOfRange, r"topk: k=-1", lambda: x.topk(-1)),
        (tg.AxisError, r"topk: axis 2 is out of range", lambda: x.topk(1, dim=2)),
        (tg.AxisError, r"sort: axis -3 is out of range", lambda: x.sort(dim=-3)),
        (tg.ShapeError, r"mT: needs a tensor of at least 2 dims .*, got shape \(3,\)", lambda: T(np.ones(3), device).mT),
        (tg.ShapeError, r"reshape: cannot reshape a tensor of shape \(2, 3\) .* into shape \(4, -1\)",
         lambda: x.view(4, -1)),
    ]
    for err, msg, fn in cases:
        with pytest.raises(err, match=msg):
            fn()


def test_index_and_mask_on_another_device_are_refused():
    x = T(np.zeros((2, 3)), "cpu")
    with pytest.raises(RuntimeError, match="gather: index is on strict but the tensor is on cpu"):
        x.gather(0, I([[0, 1, 0]], "strict"))
    with pytest.raises(RuntimeError, match="getitem: mask is on strict but the tensor is on cpu"):
        x[tg.tensor(np.array([True, False]), device="strict")]
    with pytest.raises(RuntimeError, match="masked_fill: mask is on strict but the tensor is on cpu"):
        x.masked_fill(tg.tensor(np.array([True, False, True]), device="strict"), 0.0)


# ============================================================================ the strategies
@given(data=st.data())
def test_gather_indices_are_valid_for_gather(data):
    shape = data.draw(tgst.shapes(**SMALL))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    index = data.draw(tgst.gather_indices(shape, dim))
    assert index.dtype == np.int64 and index.ndim == len(shape)
    assert all(m <= n for d, (m, n) in enumerate(zip(index.shape, shape)) if d != dim % len(shape))
    assert index.min() >= 0 and index.max() < shape[dim]
    np_gather(np.zeros(shape), dim, index)


@settings(max_examples=1)
@given(st.data())
def test_gather_indices_need_an_axis(data):
    with pytest.raises(ValueError, match="gather_indices"):
        data.draw(tgst.gather_indices((), 0))


@given(mask=tgst.masks(tgst.shapes(max_dims=2)))
def test_masks_are_boolean(mask):
    assert mask.dtype == np.bool_


# ============================================================================ against PyTorch (optional)
def test_against_torch():
    torch = pytest.importorskip("torch")
    a = np.random.default_rng(0).standard_normal((3, 4))
    index = np.array([[0, 2, 1], [2, 2, 0]])  # rows of x: scatter_add along dim 0 into 3 rows
    mask = a > 0
    x, xt = T(a, "cpu"), torch.tensor(a, requires_grad=True)
    gi = np.array([[0, 2], [3, 3], [1, 0]])
    ours = [x.gather(1, gi), x[mask], x.masked_fill(~mask, 0.0), x.flip(0, 1),
            x.roll(1, 0), x.repeat(2, 1), x.sort(1).values, x.topk(2, 0).values,
            x.scatter_add(0, index[:, :2], x[:2, :2] * 1.0)]
    ti = torch.tensor(index)
    theirs = [xt.gather(1, torch.tensor(gi)), xt[torch.tensor(mask)], xt.masked_fill(~torch.tensor(mask), 0.0),
              xt.flip(0, 1), xt.roll(1, 0), xt.repeat(2, 1), xt.sort(1).values, xt.topk(2, 0).values,
              xt.scatter_add(0, ti[:, :2], xt[:2, :2] * 1.0)]
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.numpy(), t.detach().numpy())
        o.sum().backward()
        t.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy())
