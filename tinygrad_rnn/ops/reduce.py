"""Reductions over one axis, several, or all (axis=None), with keepdims."""
from ..autograd import Function
from ..errors import ShapeError, fmt_shape, normalize_axes


def _kept_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


def _setup(ctx, op, a, axis, keepdims):
    axes = normalize_axes(op, axis, a.ndim, a.shape)
    ctx.in_shape = a.shape
    ctx.kept = _kept_shape(a.shape, axes)
    ctx.keepdims = keepdims
    ctx.axes = axes
    return axes


def _grad_as_kept(ctx, grad):
    return grad if ctx.keepdims else ctx.xp.reshape(grad, ctx.kept)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        axes = _setup(ctx, "sum", a, axis, keepdims)
        return ctx.xp.sum(a, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.broadcast_to(_grad_as_kept(ctx, grad), ctx.in_shape)


class Mean(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        axes = _setup(ctx, "mean", a, axis, keepdims)
        n = 1
        for i in axes:
            n *= a.shape[i]
        ctx.n = n
        return ctx.xp.mean(a, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.broadcast_to(_grad_as_kept(ctx, grad) / ctx.n, ctx.in_shape)


class _Extremum(Function):
    """amax/amin (and max()/min() without a dim): the gradient is shared evenly among the
    elements that tie for the extremum, as PyTorch's amax and full max do."""

    reduce = None
    saved_constants = True  # the extremum only picks the winners: piecewise constant in a

    @classmethod
    def forward(cls, ctx, a, axis=None, keepdims=False, op=None):
        xp = ctx.xp
        op = op or cls.reduce
        axes = _setup(ctx, op, a, axis, keepdims)
        if a.size == 0:
            raise ShapeError(f"{op}: cannot reduce an empty tensor of shape {fmt_shape(a.shape)}")
        out = getattr(xp, cls.reduce)(a, axis=axes, keepdims=True)
        ctx.save_for_backward(a, out)
        return out if keepdims else xp.reshape(out, tuple(n for i, n in enumerate(a.shape) if i not in axes))

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        a, out = ctx.saved_tensors
        hit = a == out
        count = xp.sum(xp.astype(hit, a.dtype), axis=ctx.axes, keepdims=True)
        return xp.where(hit, _grad_as_kept(ctx, grad) / count, 0.0)


class Max(_Extremum):
    reduce = "max"


class Min(_Extremum):
    reduce = "min"


class _ExtremumAt(Function):
    """max(dim)/min(dim)'s values: the whole gradient goes to the element at the index the
    caller picked (argmax/argmin, the first of any tie), as PyTorch's max(dim) does."""

    reduce = None

    @classmethod
    def forward(cls, ctx, a, axis, keepdims=False, index=None):
        xp = ctx.xp
        _setup(ctx, cls.reduce, a, axis, keepdims)
        shape = tuple(n if i == axis else 1 for i, n in enumerate(a.shape))
        ctx.save_for_backward(xp.reshape(xp.arange(a.shape[axis]), shape) == index)  # a mask: a constant
        out = getattr(xp, cls.reduce)(a, axis=axis, keepdims=keepdims)
        return out

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.where(ctx.saved_tensors[0], _grad_as_kept(ctx, grad), 0.0)


class MaxAt(_ExtremumAt):
    reduce = "max"


class MinAt(_ExtremumAt):
    reduce = "min"


class LogSumExp(Function):
    """log(sum(exp(a))) computed stably by shifting with the max."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        xp = ctx.xp
        axes = _setup(ctx, "logsumexp", a, axis, keepdims)
        m = xp.max(a, axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0.0)  # all -inf rows: avoid inf - inf
        lse = xp.log(xp.sum(xp.exp(a - m), axis=axes, keepdims=True)) + m
        out = lse if keepdims else xp.reshape(lse, tuple(n for i, n in enumerate(a.shape) if i not in axes))
        ctx.save_for_backward(a, out)  # the output itself, so that it is differentiable under create_graph
        return out

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        return _grad_as_kept(ctx, grad) * ctx.xp.exp(a - _grad_as_kept(ctx, out))


class Norm(Function):
    """The vector p-norm (sum |a|^p)^(1/p) over axes, for a finite p != 0. Where the norm is 0
    the gradient is 0, as PyTorch's (not the 0/0 of the formula)."""

    @staticmethod
    def forward(ctx, a, p=2.0, axis=None, keepdims=False):
        xp = ctx.xp
        axes = _setup(ctx, "norm", a, axis, keepdims)
        ctx.p = p
        if p == 2:
            kept = xp.sqrt(xp.sum(a * a, axis=axes, keepdims=True))
        elif p == 1:
            kept = xp.sum(xp.abs(a), axis=axes, keepdims=True)
        else:
            kept = xp.sum(xp.abs(a) ** p, axis=axes, keepdims=True) ** (1.0 / p)
        out = kept if keepdims else xp.reshape(kept, tuple(n for i, n in enumerate(a.shape) if i not in axes))
        ctx.save_for_backward(a, out)  # the output itself: differentiable under create_graph
        return out

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_tensors
        xp, p = ctx.xp, ctx.p
        g = _grad_as_kept(ctx, grad)
        if p == 1:
            return g * xp.sign(a)
        n = _grad_as_kept(ctx, out)
        safe = xp.where(n == 0, 1.0, n)  # a zero norm means a == 0 there: the gradient is 0 either way
        if p == 2:
            return g * a / safe
        return g * xp.sign(a) * xp.abs(a) ** (p - 1) / safe ** (p - 1)


class Prod(Function):
    """The product over axes. Backward is right with zeros in the input: an element's
    gradient is the product of the others (not out / a, which is 0/0 at a zero)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        axes = _setup(ctx, "prod", a, axis, keepdims)
        ctx.save_for_backward(a)
        return ctx.xp.prod(a, axis=axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        xp, axes = ctx.xp, ctx.axes
        zero = a == 0
        zeros = xp.sum(xp.astype(zero, a.dtype), axis=axes, keepdims=True)
        nonzero = xp.where(zero, 1.0, a)
        rest = xp.prod(nonzero, axis=axes, keepdims=True)  # the product of the nonzero elements
        # no zero: out / a; one zero: the zero gets the product of the rest, the others 0; more: all 0
        others = xp.where(zero, xp.where(zeros == 1, rest, 0.0), xp.where(zeros == 0, rest / nonzero, 0.0))
        return _grad_as_kept(ctx, grad) * others

    @staticmethod
    def composed(ctx, a):
        """For create_graph: the product as a tree of multiplications, differentiable twice."""
        keep = [i for i in range(a.ndim) if i not in ctx.axes]
        n = 1
        for i in ctx.axes:
            n *= a.shape[i]
        out_shape = ctx.kept if ctx.keepdims else tuple(a.shape[i] for i in keep)
        if n == 0:
            return ctx.xp.full(out_shape, 1.0, dtype=a.dtype)
        flat = a.permute(*(keep + list(ctx.axes))).reshape(tuple(a.shape[i] for i in keep) + (n,))
        parts = list(flat.unbind(flat.ndim - 1))
        while len(parts) > 1:
            parts = [parts[i] * parts[i + 1] if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
        return parts[0].reshape(out_shape)
