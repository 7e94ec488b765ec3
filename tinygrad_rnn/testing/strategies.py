"""Hypothesis strategies for property tests of differentiable ops, and helpers to keep
drawn values away from the points where an op has no derivative.

A gradient test of your own op, in full:

    from hypothesis import assume, given
    import tinygrad_rnn as tg
    from tinygrad_rnn.testing import strategies as tgst

    @given(tgst.tensors(shape=tgst.shapes(max_dims=3)))
    def test_my_abs_backward(x):
        assume(tgst.far_from(x, [0.0], margin=1e-3))  # |x| has a kink at 0
        assert tg.gradcheck(my_abs, [x])

Strategies draw small shapes (sides up to 4) and values in [-3, 3] by default: big enough
to exercise broadcasting and several elements per axis, small enough that a full
central-difference check (two forward passes per element) stays cheap.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from .. import backend as B
from ..tensor import Tensor

__all__ = ["shapes", "mutually_broadcastable_shapes", "floats", "arrays", "tensors", "axes",
           "index_arrays", "basic_indices", "far_from", "well_separated",
           "positive_tensors", "norm_orders"]

MIN_VALUE = -3.0
MAX_VALUE = 3.0


# ----------------------------------------------------------------------------- shapes
def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    """Array shapes (tuples of ints).

        @given(tgst.shapes(min_dims=1, max_dims=2))
        def test_reshape_roundtrip(shape): ...

    min_side=0 lets empty axes in; the default 1 keeps them out.
    """
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4,
                                  base_shape=()):
    """`num_shapes` shapes that broadcast together (NumPy's rules), with the result shape.

    Draws hypothesis's `BroadcastableShapes(input_shapes, result_shape)`:

        @given(tgst.mutually_broadcastable_shapes(num_shapes=2))
        def test_add_broadcasts(shapes):
            (sa, sb), out = shapes
            ...

    Shapes may differ in length, and sides of 1 are stretched, so the gradient must be
    summed back to each input's shape (the engine's `unbroadcast`).
    """
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, base_shape=tuple(base_shape),
                                             min_dims=min_dims, max_dims=max_dims,
                                             min_side=min_side, max_side=max_side)


# ----------------------------------------------------------------------------- values
def _representable(lo, hi, dtype):
    """The bounds rounded inward to what `dtype` holds exactly (hypothesis demands it)."""
    if np.dtype(dtype) == np.float32:
        f_lo, f_hi = np.float32(lo), np.float32(hi)
        if float(f_lo) < lo:
            f_lo = np.nextafter(f_lo, np.float32(np.inf))
        if float(f_hi) > hi:
            f_hi = np.nextafter(f_hi, np.float32(-np.inf))
        return float(f_lo), float(f_hi)
    return float(lo), float(hi)


def floats(min_value=MIN_VALUE, max_value=MAX_VALUE, dtype=np.float64):
    """Finite floats in [min_value, max_value]: no NaN, no infinity, no subnormals.

        @given(tgst.floats(0.5, 2.0))
        def test_scalar_base_pow(base): ...
    """
    if not min_value <= max_value:
        raise ValueError(f"floats: min_value {min_value} > max_value {max_value}")
    lo, hi = _representable(min_value, max_value, dtype)
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False,
                     width=np.dtype(dtype).itemsize * 8)


def arrays(shape, min_value=MIN_VALUE, max_value=MAX_VALUE, dtype=np.float64, unique=False):
    """NumPy float arrays of `shape` (a tuple or a strategy of shapes) with values in bounds.

        @given(tgst.arrays(tgst.shapes(), min_value=0.5, max_value=3.0))
        def test_log_forward(a): ...

    Every element is drawn on its own (hypothesis's fill value is turned off), so arrays
    are not mostly one repeated value; unique=True makes all elements distinct.
    """
    return hnp.arrays(np.dtype(dtype), shape, elements=floats(min_value, max_value, dtype),
                      fill=st.nothing(), unique=unique)


def tensors(shape=None, device="cpu", dtype=B.float64, requires_grad=True,
            min_value=MIN_VALUE, max_value=MAX_VALUE, unique=False):
    """A Tensor on `device` with values drawn by `arrays` (or integers, for an integer dtype).

        @given(tgst.tensors(shape=(3, 4), device="cpu", min_value=0.5))
        def test_sqrt_backward(x):
            assert tg.gradcheck(lambda t: t.sqrt(), [x])

    shape: a tuple, a strategy of shapes, or None for `shapes()`. Float64 by default,
    because numerical gradient checks need it; requires_grad only for float dtypes.
    """
    dtype = B.to_dtype(dtype)
    if requires_grad and not dtype.is_floating:
        raise ValueError(f"tensors: a {dtype.name} tensor cannot require grad; pass requires_grad=False")
    return _tensors(shapes() if shape is None else shape, device, dtype, requires_grad,
                    min_value, max_value, unique)


@st.composite
def _tensors(draw, shape, device, dtype, requires_grad, min_value, max_value, unique):
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    if dtype.is_floating:
        host = draw(arrays(tuple(shape), min_value, max_value, dtype=dtype.name, unique=unique))
    else:
        host = draw(hnp.arrays(np.dtype(dtype.name), tuple(shape),
                               elements=st.integers(int(np.ceil(min_value)), int(np.floor(max_value))),
                               unique=unique))
    return Tensor(host, dtype=dtype, device=device, requires_grad=requires_grad)


def positive_tensors(shape=None, device="cpu", dtype=B.float64, requires_grad=True, min_value=0.25,
                     max_value=MAX_VALUE):
    """`tensors` with values in [min_value, max_value], kept off 0: for ops defined or
    differentiable only for positive inputs (log, sqrt, rsqrt, pow with a real exponent).

        @given(tgst.positive_tensors())
        def test_rsqrt_backward(x):
            assert tg.gradcheck(lambda t: t.rsqrt(), [x])
    """
    if not 0 < min_value <= max_value:
        raise ValueError(f"positive_tensors: need 0 < min_value <= max_value, got {min_value} and {max_value}")
    return tensors(shape, device, dtype, requires_grad, min_value, max_value)


def norm_orders(finite_only=False):
    """The p of a vector norm, as Tensor.norm takes it: 1, 2, 'fro', other real p >= 1, and
    (unless finite_only) inf and -inf.

        @given(tgst.tensors(), tgst.norm_orders())
        def test_norm(x, p): ...

    p = 1 and the infinite norms have kinks (at 0, at ties of |x|): keep values off them
    with far_from and well_separated.
    """
    finite = st.sampled_from([1, 2, "fro", 3]) | floats(1.0, 4.0)
    return finite if finite_only else finite | st.sampled_from([float("inf"), float("-inf")])


# ----------------------------------------------------------------------------- axes and indices
@st.composite
def _tuple_axes(draw, ndim, min_size, max_size, allow_negative):
    picked = draw(st.lists(st.integers(0, ndim - 1), min_size=min_size, max_size=max_size, unique=True))
    if allow_negative:
        picked = [a - ndim if draw(st.booleans()) else a for a in picked]
    return tuple(picked)


def axes(ndim, allow_none=True, allow_int=True, allow_tuple=True, allow_negative=True,
         min_size=1, max_size=None):
    """Valid `axis=` arguments for a tensor of `ndim` dims: None, an int (negative ones
    too), or a tuple of distinct axes (no axis twice, also not as i and i - ndim).

        @given(st.data())
        def test_sum(data):
            x = data.draw(tgst.tensors())
            axis = data.draw(tgst.axes(x.ndim))
            ...

    min_size/max_size bound the length of tuples (min_size=0 allows the empty tuple).
    A 0-d tensor has no axes: only None (and () when min_size=0) is drawn for it.
    """
    options = []
    if allow_none:
        options.append(st.none())
    if ndim > 0 and allow_int:
        options.append(st.integers(-ndim if allow_negative else 0, ndim - 1))
    if allow_tuple:
        hi = ndim if max_size is None else min(max_size, ndim)
        if min_size <= hi:
            options.append(_tuple_axes(ndim, min_size, hi, allow_negative))
    if not options:
        raise ValueError(f"axes: nothing to draw for ndim={ndim} with these options")
    return st.one_of(*options)


def index_arrays(size, shape=None, allow_negative=False):
    """int64 arrays of indices valid on an axis of length `size`: values in [0, size), or
    [-size, size) with allow_negative. Repeated indices are likely, on purpose: the
    gradient of a gather must add up every use of a row.

        @given(tgst.index_arrays(5, shape=(7,)))
        def test_embedding(idx): ...

    shape: a tuple, or a strategy of shapes (default: 1 or 2 dims, up to 5 per side).
    """
    if size < 1:
        raise ValueError(f"index_arrays: an axis of size {size} has no valid index")
    if shape is None:
        shape = shapes(min_dims=1, max_dims=2, max_side=5)
    lo = -size if allow_negative else 0
    return hnp.arrays(np.int64, shape, elements=st.integers(lo, size - 1))


def _axis_key(n, allow_int):
    """One entry of a basic index for an axis of length n, within the bounds the Array
    API standard defines (NumPy clamps out-of-range slice bounds; the standard does not)."""
    options = []
    if allow_int and n > 0:
        options.append(st.integers(-n, n - 1))

    @st.composite
    def a_slice(draw):
        step = draw(st.sampled_from([1, 1, 2, 3, -1, -2]))
        if n == 0:
            return slice(None, None, step)
        start = draw(st.none() | st.integers(-n, n - 1))
        stop = draw(st.none() | st.integers(-n, n if step > 0 else n - 1))
        return slice(start, stop, step)

    options.append(a_slice())
    return st.one_of(*options)


@st.composite
def basic_indices(draw, shape, allow_int=True, allow_newaxis=True, allow_ellipsis=True):
    """A tuple key of ints, slices, None and at most one Ellipsis for an array of `shape`,
    valid under the Array API standard (so also on array-api-strict and CuPy).

        @given(st.data())
        def test_getitem(data):
            x = data.draw(tgst.tensors())
            key = data.draw(tgst.basic_indices(x.shape))
            ...

    Results may be empty (e.g. slice(2, 1)); that is a valid basic index too.
    """
    shape = tuple(shape)
    nd = len(shape)
    n_lead = draw(st.integers(0, nd))
    n_trail = draw(st.integers(0, nd - n_lead)) if allow_ellipsis else 0
    lead = [draw(_axis_key(n, allow_int)) for n in shape[:n_lead]]
    trail = [draw(_axis_key(n, allow_int)) for n in shape[nd - n_trail:]]
    use_ellipsis = allow_ellipsis and (n_trail > 0 or draw(st.booleans()))
    key = lead + ([Ellipsis] if use_ellipsis else []) + trail
    if allow_newaxis:
        for _ in range(draw(st.integers(0, 2))):
            key.insert(draw(st.integers(0, len(key))), None)
    return tuple(key)


# ----------------------------------------------------------------------------- keeping off kinks and ties
def _host(x):
    if isinstance(x, Tensor):
        return x.numpy()
    return np.asarray(x)


def far_from(x, points, margin=1e-3) -> bool:
    """True when every element of x is at least `margin` from each of `points`.

    For `assume`, to keep values off an op's kinks, where central differences straddle
    the point and no gradient is right:

        assume(far_from(x, [0.0]))            # relu, abs
        assume(far_from(x, [lo, hi]))         # clip(x, lo, hi)
        assume(far_from(a - b, [0.0]))        # maximum(a, b), minimum(a, b)

    The margin must be well above gradcheck's eps (1e-6). x: a Tensor or an array.
    """
    h = _host(x)
    return all(bool(np.all(np.abs(h - p) >= margin)) for p in points)


def well_separated(x, margin=1e-3, axis=None) -> bool:
    """True when no two elements of x that meet in one reduction are within `margin`.

    For `assume` before testing max/min (whose gradient jumps where two elements tie):

        assume(well_separated(x, axis=axis))  # x.max(axis=axis)

    axis: None compares all elements; an int or a tuple compares only elements that
    fall in the same output element of a reduction over those axes. x: a Tensor or an
    array.
    """
    h = _host(x)
    if h.ndim == 0 or h.size < 2:
        return True
    if axis is None:
        groups = h.reshape(1, -1)
    else:
        ax = (axis,) if isinstance(axis, int) else tuple(axis)
        ax = tuple(sorted(a % h.ndim for a in ax))
        keep = [i for i in range(h.ndim) if i not in ax]
        moved = np.transpose(h, keep + list(ax))
        k = int(np.prod([h.shape[a] for a in ax])) if ax else 1
        groups = moved.reshape(-1, k)
    if groups.shape[1] < 2:
        return True
    gaps = np.diff(np.sort(groups, axis=1), axis=1)
    return bool(np.all(gaps >= margin))


# ----------------------------------------------------------------------------- gather, scatter and masks
__all__ += ["gather_indices", "masks"]


@st.composite
def gather_indices(draw, shape, dim, max_side=4, min_side=1):
    """int64 index arrays for `x.gather(dim, index)` (and `scatter_add(dim, index, src)`) on a
    tensor of `shape`: as many dims, each side from min_side up to the tensor's (up to
    max_side along dim, which may be longer), entries in [0, shape[dim]), repeats likely.

        @given(st.data())
        def test_gather(data):
            x = data.draw(tgst.tensors(shape=tgst.shapes(min_dims=1)))
            dim = data.draw(st.integers(-x.ndim, x.ndim - 1))
            index = data.draw(tgst.gather_indices(x.shape, dim))
            assert tg.gradcheck(lambda t: t.gather(dim, index), (x,))
    """
    shape = tuple(shape)
    nd = len(shape)
    if not nd or not -nd <= dim < nd or shape[dim % nd] < 1:
        raise ValueError(f"gather_indices: no valid index along dim {dim} of shape {shape}")
    dim %= nd
    sides = tuple(draw(st.integers(min(min_side, n), n)) if d != dim else draw(st.integers(min_side, max_side))
                  for d, n in enumerate(shape))
    return draw(hnp.arrays(np.int64, sides, elements=st.integers(0, shape[dim] - 1)))


def masks(shape):
    """Boolean NumPy arrays of `shape` (a tuple or a strategy of shapes), for `x[mask]`,
    `x[mask] = v` and `masked_fill(mask, v)`; all-False and all-True masks included.

        @given(st.data())
        def test_mask_select(data):
            x = data.draw(tgst.tensors(shape=tgst.shapes(min_dims=1)))
            mask = data.draw(tgst.masks(x.shape[:1]))
            assert tg.gradcheck(lambda t: t[mask], (x,))
    """
    return hnp.arrays(np.bool_, shape, elements=st.booleans(), fill=st.nothing())
