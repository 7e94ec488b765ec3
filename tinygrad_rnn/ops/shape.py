"""Ops that move elements without arithmetic: reshape, permute, expand, indexing,
concat/stack, and the multi-output split/unbind that cut a sequence into timesteps
as one graph node."""
from collections import namedtuple

from ..autograd import Function
from ..errors import AxisError, IndexOutOfRange, ShapeError, fmt_shape


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.in_shape = a.shape
        try:
            return ctx.xp.reshape(a, shape)
        except ValueError:
            size = 1
            for n in a.shape:
                size *= n
            raise ShapeError(f"reshape: cannot reshape a tensor of shape {fmt_shape(a.shape)} "
                             f"({size} elements) into shape {fmt_shape(shape)}") from None

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.reshape(grad, ctx.in_shape)


class Permute(Function):
    @staticmethod
    def forward(ctx, a, axes):
        if sorted(axes) != list(range(a.ndim)):
            raise AxisError(f"permute: {tuple(axes)} is not a permutation of the axes of a tensor "
                            f"of shape {fmt_shape(a.shape)}")
        ctx.inverse = tuple(sorted(range(len(axes)), key=lambda i: axes[i]))
        return ctx.xp.permute_dims(a, axes)

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.permute_dims(grad, ctx.inverse)


class Expand(Function):
    """broadcast_to; the engine's unbroadcast is exactly its backward."""

    @staticmethod
    def forward(ctx, a, shape):
        try:
            return ctx.xp.broadcast_to(a, shape)
        except ValueError:
            raise ShapeError(f"expand: cannot broadcast a tensor of shape {fmt_shape(a.shape)} "
                             f"to shape {fmt_shape(shape)}") from None

    @staticmethod
    def backward(ctx, grad):
        return grad


def _is_index_array(k):
    return not isinstance(k, (int, slice, type(None), type(Ellipsis)))


def check_index_bounds(op, xp, shape, key):
    """Raise IndexOutOfRange for an index outside its axis.

    NumPy would raise too, but CuPy silently wraps out-of-range index arrays: a wrong
    answer, not an error. Checking costs one reduction per index array.
    """
    n_axes = sum(1 for k in key if k is not None and k is not Ellipsis)
    axis = 0
    for k in key:
        if k is Ellipsis:
            axis += len(shape) - n_axes
            continue
        if k is None:
            continue
        if axis >= len(shape):
            raise IndexOutOfRange(f"{op}: too many indices for a tensor of shape {fmt_shape(shape)}")
        n = shape[axis]
        if isinstance(k, int):
            if not -n <= k < n:
                raise IndexOutOfRange(f"{op}: index {k} is out of range for axis {axis} of size {n} "
                                      f"(tensor of shape {fmt_shape(shape)})")
        elif _is_index_array(k) and k.size:
            lo, hi = int(xp.min(k)), int(xp.max(k))
            if lo < -n or hi >= n:
                bad = hi if hi >= n else lo
                raise IndexOutOfRange(f"{op}: index {bad} is out of range for axis {axis} of size {n} "
                                      f"(tensor of shape {fmt_shape(shape)})")
        axis += 1


class GetItem(Function):
    """a[key]: basic slicing and integer-array indexing; repeated indices accumulate."""

    @staticmethod
    def forward(ctx, a, key):
        check_index_bounds("getitem", ctx.xp, a.shape, key)
        ctx.in_shape, ctx.key = a.shape, key
        ctx.advanced = any(_is_index_array(k) for k in key)
        ctx.set_shape = None
        if not ctx.advanced and any(k is None for k in key):
            # the standard allows None (new axes) in a[key] but not in a[key] = v:
            # backward writes through the key without them, into a view of that shape
            ctx.key = tuple(k for k in key if k is not None)
            ctx.set_shape = a[ctx.key].shape
        return a[key]

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        full = xp.zeros(ctx.in_shape, dtype=grad.dtype)
        if ctx.advanced:
            ctx.device.scatter_add(full, ctx.key, grad)
        else:
            full[ctx.key] = grad if ctx.set_shape is None else xp.reshape(grad, ctx.set_shape)
        return full


class Alias(Function):
    """The same values as a new node: lets a gradient be taken at this very use of a tensor,
    separately from its other uses (tensor_xp differentiates composed forms through it)."""

    @staticmethod
    def forward(ctx, a):
        return a

    @staticmethod
    def backward(ctx, grad):
        return grad


class IndexAdd(Function):
    """zeros(shape) with values written at key (accumulate=False: a[key] = values, basic
    keys) or added there (accumulate=True: repeated indices add up). GetItem's adjoint: what
    its backward computes, as an op of its own, so that under create_graph the scatter is
    differentiable too; its own backward is GetItem's forward."""

    @staticmethod
    def forward(ctx, values, shape, key, accumulate):
        xp = ctx.xp
        full = xp.zeros(shape, dtype=values.dtype)
        if accumulate:
            ctx.device.scatter_add(full, key, values)
        else:
            full[key] = values
        ctx.key = key
        return full

    @staticmethod
    def backward(ctx, grad):
        if isinstance(ctx.key, tuple):
            return grad[ctx.key]
        return ctx.xp.take(grad, ctx.key, axis=0)  # rows (an embedding's): the standard's form


def _check_same_shapes(op, arrays, skip_axis=None):
    first = arrays[0].shape
    for i, a in enumerate(arrays[1:], 1):
        same = len(a.shape) == len(first) and all(
            m == n for j, (m, n) in enumerate(zip(a.shape, first)) if j != skip_axis)
        if not same:
            rule = "all shapes must match" if skip_axis is None else f"shapes must match except along axis {skip_axis}"
            raise ShapeError(f"{op}: tensor {i} has shape {fmt_shape(a.shape)} but tensor 0 has shape "
                             f"{fmt_shape(first)}; {rule}")


def _axis_slice(axis, index):
    return (slice(None),) * axis + (index, Ellipsis)


class Concat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        if not arrays:
            raise ShapeError("concat: needs at least one tensor")
        nd = arrays[0].ndim
        if not -nd <= axis < nd:
            raise AxisError(f"concat: axis {axis} is out of range for tensors of shape {fmt_shape(arrays[0].shape)}")
        axis %= nd
        _check_same_shapes("concat", arrays, axis)
        ctx.axis, ctx.sizes = axis, [a.shape[axis] for a in arrays]
        return ctx.xp.concat(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        out, start = [], 0
        for n in ctx.sizes:
            out.append(grad[_axis_slice(ctx.axis, slice(start, start + n))])
            start += n
        return tuple(out)


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        if not arrays:
            raise ShapeError("stack: needs at least one tensor")
        nd = arrays[0].ndim + 1
        if not -nd <= axis < nd:
            raise AxisError(f"stack: axis {axis} is out of range for a result of {nd} dims")
        _check_same_shapes("stack", arrays)
        ctx.axis, ctx.n = axis % nd, len(arrays)
        return ctx.xp.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(grad[_axis_slice(ctx.axis, i)] for i in range(ctx.n))


class Split(Function):
    """One node, several outputs: a split into pieces of the given sizes along axis."""

    @staticmethod
    def forward(ctx, a, sizes, axis=0):
        if not -a.ndim <= axis < a.ndim:
            raise AxisError(f"split: axis {axis} is out of range for a tensor of shape {fmt_shape(a.shape)}")
        axis %= a.ndim
        if sum(sizes) != a.shape[axis] or any(s < 0 for s in sizes):
            raise ShapeError(f"split: sizes {list(sizes)} do not add up to {a.shape[axis]}, the size of "
                             f"axis {axis} of a tensor of shape {fmt_shape(a.shape)}")
        ctx.axis = axis
        out, start = [], 0
        for n in sizes:
            out.append(a[_axis_slice(axis, slice(start, start + n))])
            start += n
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.concat(grads, axis=ctx.axis)


class Unbind(Function):
    """One node, one output per index along axis (the axis removed): timesteps of a sequence."""

    @staticmethod
    def forward(ctx, a, axis=0):
        if not -a.ndim <= axis < a.ndim:
            raise AxisError(f"unbind: axis {axis} is out of range for a tensor of shape {fmt_shape(a.shape)}")
        axis %= a.ndim
        ctx.axis = axis
        return tuple(a[_axis_slice(axis, i)] for i in range(a.shape[axis]))

    @staticmethod
    def backward(ctx, *grads):
        return ctx.xp.stack(grads, axis=ctx.axis)


class ToDevice(Function):
    """A move between devices; the gradient moves back. Tensor.to sets the output's device."""

    @staticmethod
    def forward(ctx, a, target):
        ctx.target = target
        return target.from_host(ctx.device.to_host(a))

    @staticmethod
    def backward(ctx, grad):
        if hasattr(grad, "requires_grad"):  # create_graph: a Tensor, moved back by this op again
            return grad.to(ctx.device._device)
        return ctx.device.from_host(ctx.target.to_host(grad))


# ---------------------------------------------------------------------- indexing vocabulary
# gather, take_along_dim, sort/topk's values and boolean masks all become one integer array
# per axis (the form of advanced indexing the Array API standard defines, so they run on
# array-api-strict and CuPy alike); their gradient is GetItem's scatter-add, and IndexAdd
# makes that differentiable again under create_graph.

class Gather(GetItem):
    """a[key] for a key of one integer array per axis whose entries are already known to be in
    range (checked by the caller, or made by nonzero/argsort): GetItem without the bounds
    check, which costs a reduction (on a GPU a synchronisation) per array."""

    @staticmethod
    def forward(ctx, a, key):
        ctx.in_shape, ctx.key, ctx.advanced, ctx.set_shape = a.shape, key, True, None
        return a[key]


class Flip(Function):
    """Elements in reverse order along axes; its own adjoint. A copy, as PyTorch's flip is,
    so that writing into the result (x[mask] = v) cannot change the input."""

    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return ctx.device.copy(ctx.xp.flip(a, axis=axes))

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.flip(grad, axis=ctx.axes)


class Clone(Function):
    """A row-major copy that owns its memory; the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, a):
        return ctx.device.copy(a)

    @staticmethod
    def backward(ctx, grad):
        return grad


def _axis_arange(xp, n, axis, ndim):
    """arange(n) laid along `axis` of an ndim-dim shape of ones, to broadcast against an index."""
    shape = [1] * ndim
    shape[axis] = n
    return xp.reshape(xp.arange(n, dtype=xp.int64), tuple(shape))


def along_axis_key(xp, index, axis):
    """The key with which a[key] is gather(a, axis, index): index along axis, the position
    itself along every other axis."""
    nd = index.ndim
    return tuple(index if d == axis else _axis_arange(xp, index.shape[d], d, nd) for d in range(nd))


def mask_key(xp, mask, shape):
    """The key with which a[key] is a[mask], for a boolean mask over a's leading mask.ndim axes:
    the rows of nonzero(mask), each broadcast against aranges of the axes the mask leaves."""
    rows = xp.nonzero(mask)
    rest = shape[mask.ndim:]
    if not rest:
        return tuple(rows)
    ones = (1,) * len(rest)
    rows = tuple(xp.reshape(r, (r.shape[0],) + ones) for r in rows)
    return rows + tuple(_axis_arange(xp, n, 1 + j, 1 + len(rest)) for j, n in enumerate(rest))


def check_mask(op, mask_shape, shape):
    """A boolean index must match the leading axes of the tensor it selects from."""
    k = len(mask_shape)
    if k == 0 or k > len(shape) or tuple(mask_shape) != tuple(shape[:k]):
        raise ShapeError(f"{op}: a boolean mask of shape {fmt_shape(mask_shape)} does not match the tensor of "
                         f"shape {fmt_shape(shape)} (the mask's shape must equal the tensor's leading sides)")


def check_along_axis(op, xp, shape, index, axis, src_shape=None):
    """PyTorch's rules for gather and scatter_add's index: as many dims as the tensor, no side
    larger than the tensor's except along axis (nor than src's anywhere), entries in
    [0, shape[axis]). CuPy would silently wrap an index out of range, so it is checked here."""
    nd = len(shape)
    for name, other in (("the tensor", shape), ("src", src_shape)):
        if other is not None and index.ndim != len(other):
            raise ShapeError(f"{op}: index of shape {fmt_shape(index.shape)} has {index.ndim} dims but "
                             f"{name} has {len(other)} (shape {fmt_shape(other)}); they must match")
    for d in range(nd):
        n = index.shape[d]
        if (d != axis and n > shape[d]) or (src_shape is not None and n > src_shape[d]):
            where = fmt_shape(shape) + ("" if src_shape is None else f" (src {fmt_shape(src_shape)})")
            raise ShapeError(f"{op}: index of shape {fmt_shape(index.shape)} is larger than the tensor of shape "
                             f"{where} along axis {d} (only axis {axis}, the one indexed, may be longer"
                             + ("" if src_shape is None else ", and not longer than src") + ")")
    if index.size:
        lo, hi = int(xp.min(index)), int(xp.max(index))
        if lo < 0 or hi >= shape[axis]:
            raise IndexOutOfRange(f"{op}: index {lo if lo < 0 else hi} is out of range for axis {axis} of size "
                                  f"{shape[axis]} (tensor of shape {fmt_shape(shape)}; valid: 0 to {shape[axis] - 1})")


def stable_argsort(xp, a, axis):
    """argsort that keeps equal elements in order, on every backend: the standard's argsort (and
    NumPy's, since 2.0) takes stable=, NumPy's default is not stable, CuPy's sort always is and
    takes no such argument."""
    try:
        return xp.argsort(a, axis=axis, stable=True)
    except TypeError:
        return xp.argsort(a, axis=axis)


def check_k(k, n, dim, shape):
    """topk's k: an int from 0 to the size of the dim."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise IndexOutOfRange(f"topk: k={k!r} is out of range for dim {dim} of size {n} (tensor of shape "
                              f"{fmt_shape(shape)}; valid: 0 to {n})")


# what sort and topk return, as torch.return_types.sort/topk: a tuple (values, indices)
# whose fields are also named
SortResult = namedtuple("sort", ["values", "indices"])
TopKResult = namedtuple("topk", ["values", "indices"])
