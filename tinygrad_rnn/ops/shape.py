"""Ops that move elements without arithmetic: reshape, permute, expand, indexing,
concat/stack, and the multi-output split/unbind that cut a sequence into timesteps
as one graph node."""
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
