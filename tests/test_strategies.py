"""The public hypothesis strategies draw what they promise."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn.testing import strategies as tgst


@given(tgst.shapes(min_dims=1, max_dims=3, min_side=2, max_side=5))
def test_shapes_respect_bounds(shape):
    assert isinstance(shape, tuple)
    assert 1 <= len(shape) <= 3
    assert all(2 <= n <= 5 for n in shape)


@given(tgst.mutually_broadcastable_shapes(num_shapes=3, max_dims=4))
def test_mutually_broadcastable_shapes_broadcast(shapes):
    ins, out = shapes
    assert len(ins) == 3
    assert np.broadcast_shapes(*ins) == out


@given(tgst.arrays(tgst.shapes(), min_value=-0.5, max_value=2.0))
def test_arrays_are_finite_float64_in_bounds(a):
    assert a.dtype == np.float64
    assert np.all(np.isfinite(a))
    assert np.all((a >= -0.5) & (a <= 2.0))
    tiny = np.finfo(np.float64).tiny
    assert not np.any((a != 0) & (np.abs(a) < tiny)), "subnormal drawn"


@given(tgst.arrays((3, 4), min_value=0.1, max_value=0.7, dtype=np.float32))
def test_float32_arrays_round_bounds_inward(a):
    # 0.1 and 0.7 are not float32 numbers: the bounds must round inward, not outward
    assert a.dtype == np.float32
    assert np.all((a >= 0.1) & (a <= 0.7))


@given(tgst.arrays((10,), unique=True))
def test_unique_arrays_have_distinct_elements(a):
    assert len(np.unique(a)) == a.size


@pytest.mark.parametrize("device", ["cpu", "strict"])
@given(data=st.data())
def test_tensors_on_device_with_dtype_and_bounds(device, data):
    shape = data.draw(tgst.shapes(max_dims=2))
    t = data.draw(tgst.tensors(shape=shape, device=device, min_value=1.0, max_value=2.0))
    assert isinstance(t, tg.Tensor)
    assert t.shape == shape
    assert t.device.name == device
    assert t.dtype is tg.float64
    assert t.requires_grad and t.is_leaf
    h = t.numpy()
    assert np.all((h >= 1.0) & (h <= 2.0))


@given(tgst.tensors(shape=tgst.shapes(min_dims=1), dtype=tg.float32, requires_grad=False))
def test_tensors_float32_without_grad(t):
    assert t.dtype is tg.float32
    assert not t.requires_grad


@given(tgst.tensors(shape=(5,), dtype=tg.int64, requires_grad=False, min_value=-2, max_value=2))
def test_tensors_integer(t):
    assert t.dtype is tg.int64
    assert np.all(np.abs(t.numpy()) <= 2)


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(ValueError, match="cannot require grad"):
        tgst.tensors(shape=(2,), dtype=tg.int64)


@given(st.data())
def test_axes_are_valid_for_numpy(data):
    ndim = data.draw(st.integers(0, 4))
    axis = data.draw(tgst.axes(ndim))
    a = np.zeros((2,) * ndim)
    if axis is None:
        pass
    elif isinstance(axis, int):
        assert -ndim <= axis < ndim
    else:
        assert isinstance(axis, tuple) and len(axis) >= 1
        assert len({ax % ndim for ax in axis}) == len(axis), "an axis drawn twice"
    np.sum(a, axis=axis)  # NumPy accepts it


@given(tgst.axes(0))
def test_axes_of_a_scalar_are_none_only(axis):
    assert axis is None


def test_axes_with_nothing_to_draw():
    with pytest.raises(ValueError, match="nothing to draw"):
        tgst.axes(0, allow_none=False)


@given(st.data())
def test_axes_options(data):
    axis = data.draw(tgst.axes(3, allow_none=False, allow_int=False, allow_negative=False, min_size=2))
    assert isinstance(axis, tuple) and 2 <= len(axis) <= 3
    assert all(0 <= a < 3 for a in axis)


@given(st.data())
def test_index_arrays_in_range(data):
    size = data.draw(st.integers(1, 6))
    neg = data.draw(st.booleans())
    idx = data.draw(tgst.index_arrays(size, allow_negative=neg))
    assert idx.dtype == np.int64
    assert 1 <= idx.ndim <= 2
    assert np.all(idx < size)
    assert np.all(idx >= (-size if neg else 0))
    np.zeros(size)[idx]  # NumPy accepts them


def test_index_arrays_can_repeat():
    # repeats are the point: gathers must accumulate them in backward
    seen = set()

    @given(tgst.index_arrays(3, shape=(6,)))
    def draw(idx):
        seen.add(len(np.unique(idx)) < idx.size)

    draw()
    assert True in seen


def test_index_arrays_need_a_nonempty_axis():
    with pytest.raises(ValueError, match="size 0"):
        tgst.index_arrays(0)


@given(st.data())
def test_basic_indices_valid_on_numpy_and_strict(data):
    shape = data.draw(tgst.shapes(max_dims=3, min_side=0))
    key = data.draw(tgst.basic_indices(shape))
    assert sum(k is Ellipsis for k in key) <= 1
    a = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
    expected = a[key]
    # the strict library refuses anything the standard leaves undefined; it needs an
    # explicit Ellipsis where the key does not cover every axis
    import array_api_strict as xp
    skey = key if Ellipsis in key else key + (Ellipsis,)
    got = np.asarray(xp.asarray(a)[skey])
    np.testing.assert_array_equal(got, expected)


def test_far_from():
    assert tgst.far_from(np.array([0.5, -0.5]), [0.0], margin=0.1)
    assert not tgst.far_from(np.array([0.5, 0.05]), [0.0], margin=0.1)
    assert not tgst.far_from(tg.tensor([1.0, 2.0]), [0.0, 2.0005], margin=1e-3)
    assert tgst.far_from(np.zeros(0), [0.0])


def test_well_separated():
    x = np.array([[0.0, 1.0, 0.0005],
                  [1.0, 5.0, 9.0]])
    assert not tgst.well_separated(x)                # 0.0 and 0.0005; 1.0 twice
    assert tgst.well_separated(x, axis=0)            # within each column all is far apart
    assert not tgst.well_separated(x, axis=1)        # row 0: 0.0 and 0.0005
    assert tgst.well_separated(x[1], axis=0)
    assert tgst.well_separated(np.float64(1.0))
    assert tgst.well_separated(tg.tensor([[1.0, 2.0], [1.0, 3.0]]), axis=-1)
    assert not tgst.well_separated(tg.tensor([[1.0, 2.0], [1.0, 3.0]]), axis=(0, 1))


@given(st.data())
def test_well_separated_matches_brute_force(data):
    x = data.draw(tgst.arrays(tgst.shapes(min_dims=1, max_dims=3, max_side=3), -1, 1))
    axis = data.draw(tgst.axes(x.ndim))
    margin = 0.05
    ax = range(x.ndim) if axis is None else ((axis,) if isinstance(axis, int) else axis)
    ax = sorted(a % x.ndim for a in ax)
    expected = True
    for i in np.ndindex(*x.shape):
        for j in np.ndindex(*x.shape):
            same_group = all(i[d] == j[d] for d in range(x.ndim) if d not in ax)
            if i != j and same_group and abs(x[i] - x[j]) < margin:
                expected = False
    assert tgst.well_separated(x, margin, axis=axis) == expected
