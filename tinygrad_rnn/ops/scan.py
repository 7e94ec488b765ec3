"""Scans along one axis, and the stable log-space elementwise ops that go with them.

These are what a linear recurrence h_t = a_t * h_{t-1} + b_t needs to run over a whole
sequence at once (the parallel mode of minGRU/minLSTM): with a*_t = cumsum(log a_t),

    log h_t = a*_t + logcumsumexp(log b_t - a*_t)

`logcumsumexp` is a parallel prefix scan of `logaddexp` (pairwise, recursive): O(T)
work in log2(T) levels of whole-array steps instead of T small ones, and stable for any
range of values, because every step is a `logaddexp` (a single max-shift over the axis
is not: the log-space terms of a long sequence span far more than exp's ~88 (float32)
range, so early terms would underflow to log(0)).
"""
import math

from ..autograd import Function
from ..errors import AxisError, DTypeError, fmt_shape


def _axis(op, a, axis):
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise AxisError(f"{op}: axis must be an int, got {axis!r} (tensor of shape {fmt_shape(a.shape)})")
    if a.ndim == 0:
        raise AxisError(f"{op}: needs a tensor of at least 1 dim, got a 0-d tensor")
    if not -a.ndim <= axis < a.ndim:
        raise AxisError(f"{op}: axis {axis} is out of range for a tensor of shape {fmt_shape(a.shape)} "
                        f"(valid: {-a.ndim} to {a.ndim - 1})")
    return axis % a.ndim


def _along(axis, index):
    return (slice(None),) * axis + (index, Ellipsis)


def _flip(xp, a, axis):
    return xp.flip(a, axis=axis)


def _logcumsumexp(xp, a, axis):
    """Inclusive prefix log-sum-exp along axis: a recursive pairwise scan.

    Add up neighbours in pairs (n/2 logaddexps), scan the half-length sequence of pair
    totals the same way, and fill in the even positions from it (n/2 more). O(n) work in
    ceil(log2 n) levels of whole-array steps; every step is a logaddexp, so no term ever
    underflows whatever the range of the values.
    """
    n = a.shape[axis]
    if n == 1:
        return a
    if n % 2:  # pad to even with log(0); logaddexp(x, -inf) == x exactly
        pad_shape = tuple(1 if i == axis else s for i, s in enumerate(a.shape))
        a = xp.concat([a, xp.full(pad_shape, -math.inf, dtype=a.dtype)], axis=axis)
    even, odd = a[_along(axis, slice(0, None, 2))], a[_along(axis, slice(1, None, 2))]
    pairs = _logcumsumexp(xp, xp.logaddexp(even, odd), axis)  # prefix totals up to each odd position
    first = even[_along(axis, slice(0, 1))]
    rest = xp.logaddexp(pairs[_along(axis, slice(0, -1))], even[_along(axis, slice(1, None))])
    even_out = xp.concat([first, rest], axis=axis)
    # interleave: positions 2k and 2k + 1 come from even_out[k] and pairs[k]
    both = xp.stack([even_out, pairs], axis=axis + 1)
    out = xp.reshape(both, tuple(a.shape))
    return out if out.shape[axis] == n else out[_along(axis, slice(0, n))]


def _rev_logcumsumexp(xp, a, axis):
    """Suffix log-sum-exp: out[s] = log sum_{t >= s} exp(a[t])."""
    return _flip(xp, _logcumsumexp(xp, _flip(xp, a, axis), axis), axis)


def _check_float(ctx, op, a):
    dtype = ctx.device.dtype_of(a)
    if not dtype.is_floating:
        raise DTypeError(f"{op}: needs a floating-point tensor, got {dtype.name} "
                         f"(tensor of shape {fmt_shape(a.shape)})")


class CumSum(Function):
    """Inclusive cumulative sum along axis; backward is the reversed cumulative sum."""

    @staticmethod
    def forward(ctx, a, axis):
        ctx.axis = _axis("cumsum", a, axis)
        return ctx.xp.cumulative_sum(a, axis=ctx.axis)

    @staticmethod
    def backward(ctx, grad):
        xp, axis = ctx.xp, ctx.axis
        return _flip(xp, xp.cumulative_sum(_flip(xp, grad, axis), axis=axis), axis)


class LogCumSumExp(Function):
    """out[t] = log sum_{s <= t} exp(a[s]) along axis, stably (see the module docstring).

    No second derivative yet: the backward works in log space with -inf entries standing
    for zeros, and differentiating through them gives NaN; it says so under create_graph.

    Backward: d out[t] / d a[s] = exp(a[s] - out[t]) for s <= t, so
    grad_a[s] = sum_{t >= s} g[t] exp(a[s] - out[t]). Computed in log space as
    exp(a[s] + revlogcumsumexp(log g - out)[s]), once for the positive and once for the
    negative part of g, so that exp(-out[t]) never overflows however large out gets.
    """

    create_graph_error = ("its backward works in log space with -inf standing for zero, which does not "
                          "differentiate again; minGRU/minLSTM's parallel scan has no second derivative yet "
                          "(nn.MinGRU/MinLSTM's sequential mode, from primitive ops, has)")

    @staticmethod
    def forward(ctx, a, axis):
        axis = _axis("logcumsumexp", a, axis)
        _check_float(ctx, "logcumsumexp", a)
        out = _logcumsumexp(ctx.xp, a, axis)
        ctx.axis = axis
        ctx.save_for_backward(a, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        xp, axis = ctx.xp, ctx.axis
        a, out = ctx.saved_tensors
        empty = out == -math.inf  # every term so far is exp(-inf): nothing to share out
        out_safe = xp.where(empty, 0.0, out)
        total = None
        for sign in (1.0, -1.0):
            part = grad * sign
            pos = part > 0
            log_part = xp.where(pos, xp.log(xp.where(pos, part, 1.0)), -math.inf)
            r = _rev_logcumsumexp(xp, xp.where(empty, -math.inf, log_part - out_safe), axis)
            term = sign * xp.exp(a + r)
            total = term if total is None else total + term
        return total


class Softplus(Function):
    """log(1 + exp(a)) = max(a, 0) + log1p(exp(-|a|)): no overflow for large a."""

    @staticmethod
    def forward(ctx, a):
        xp = ctx.xp
        ctx.save_for_backward(a)
        return xp.maximum(a, 0.0) + xp.log1p(xp.exp(-xp.abs(a)))

    @staticmethod
    def backward(ctx, grad):
        a = ctx.saved_tensors[0]
        return grad * (0.5 * ctx.xp.tanh(0.5 * a) + 0.5)


class LogSigmoid(Function):
    """log(sigmoid(a)) = -softplus(-a) = min(a, 0) - log1p(exp(-|a|)): finite for very negative a,
    where log(sigmoid(a)) would be log(0)."""

    @staticmethod
    def forward(ctx, a):
        xp = ctx.xp
        ctx.save_for_backward(a)
        return xp.minimum(a, 0.0) - xp.log1p(xp.exp(-xp.abs(a)))

    @staticmethod
    def backward(ctx, grad):
        a = ctx.saved_tensors[0]
        return grad * (0.5 - 0.5 * ctx.xp.tanh(0.5 * a))  # sigmoid(-a)
