"""Elementwise ops. Backward returns gradients of the broadcast (output) shape; the
engine sums them down to each input's shape."""
import math

from ..autograd import Function


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return grad, (-grad if ctx.needs_input_grad[1] else None)


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (grad * b if na else None), (grad * a if nb else None)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = grad / b if na else None
        gb = -grad * a / (b * b) if nb else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Pow(Function):
    """a ** b for a tensor base and/or exponent (either may be a Python number)."""

    @staticmethod
    def forward(ctx, a, b):
        out = a ** b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        ga = None
        if na:
            # a ** 0 is constant: say so, rather than 0 * a ** -1, which is NaN at a = 0 (this
            # rule, differentiated again for the second derivative of a ** 1, meets exactly that)
            ga = grad * 0.0 if isinstance(b, (int, float)) and b == 0 else grad * b * a ** (b - 1)
        gb = None
        if nb:
            log_a = math.log(a) if isinstance(a, (int, float)) else ctx.xp.log(a)
            gb = grad * out * log_a
        return ga, gb


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = ctx.xp.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.log(a)

    @staticmethod
    def backward(ctx, grad):
        return grad / ctx.saved_tensors[0]


class Sqrt(Function):
    @staticmethod
    def forward(ctx, a):
        out = ctx.xp.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * 0.5 / ctx.saved_tensors[0]


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        out = ctx.xp.tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return grad * (1.0 - out * out)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        # exp(-|a|) never overflows, and e / (1 + e) keeps full relative precision far
        # out on the negative side, where 0.5 * tanh(0.5 * a) + 0.5 rounds to 0
        # (already at a = -40 in float64, a = -17 in float32)
        xp = ctx.xp
        e = xp.exp(-xp.abs(a))
        out = xp.where(a >= 0, 1.0, e) / (1.0 + e)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return grad * out * (1.0 - out)


class Relu(Function):
    @staticmethod
    def forward(ctx, a):
        mask = a > 0
        ctx.save_for_backward(mask)
        return ctx.xp.where(mask, a, 0.0)

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.where(ctx.saved_tensors[0], grad, 0.0)


class Abs(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.abs(a)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.xp.sign(ctx.saved_tensors[0])


class Sin(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.sin(a)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.xp.cos(ctx.saved_tensors[0])


class Cos(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.cos(a)

    @staticmethod
    def backward(ctx, grad):
        return -grad * ctx.xp.sin(ctx.saved_tensors[0])


class Log1p(Function):
    """log(1 + a), exact for tiny a where log(1 + a) rounds 1 + a first."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.log1p(a)

    @staticmethod
    def backward(ctx, grad):
        return grad / (1.0 + ctx.saved_tensors[0])


class Expm1(Function):
    """exp(a) - 1, exact for tiny a."""

    @staticmethod
    def forward(ctx, a):
        out = ctx.xp.expm1(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad * (ctx.saved_tensors[0] + 1.0)


class Square(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a

    @staticmethod
    def backward(ctx, grad):
        return grad * 2.0 * ctx.saved_tensors[0]


class Rsqrt(Function):
    """1 / sqrt(a)."""

    @staticmethod
    def forward(ctx, a):
        out = 1.0 / ctx.xp.sqrt(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return grad * -0.5 * out * out * out


def _tie_split(xp, grad, win, tie):
    # where the inputs tie, each gets half of the gradient (as PyTorch does)
    return xp.where(win, grad, xp.where(tie, 0.5 * grad, 0.0))


class Maximum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.maximum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        xp, tie = ctx.xp, a == b
        return (_tie_split(xp, grad, a > b, tie) if na else None,
                _tie_split(xp, grad, b > a, tie) if nb else None)


class Minimum(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return ctx.xp.minimum(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        xp, tie = ctx.xp, a == b
        return (_tie_split(xp, grad, a < b, tie) if na else None,
                _tie_split(xp, grad, b < a, tie) if nb else None)


class Clip(Function):
    """clip(a, lo, hi) with Python-number bounds (either may be None)."""

    @staticmethod
    def forward(ctx, a, lo=None, hi=None):
        xp = ctx.xp
        inside = None
        if lo is not None:
            inside = a >= lo
        if hi is not None:
            inside = a <= hi if inside is None else xp.logical_and(inside, a <= hi)
        ctx.save_for_backward(inside)
        return xp.clip(a, lo, hi)

    @staticmethod
    def backward(ctx, grad):
        inside = ctx.saved_tensors[0]
        return grad if inside is None else ctx.xp.where(inside, grad, 0.0)


class Where(Function):
    """where(cond, a, b); cond is a boolean array and gets no gradient."""

    @staticmethod
    def forward(ctx, cond, a, b):
        ctx.save_for_backward(cond)
        return ctx.xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, grad):
        cond = ctx.saved_tensors[0]
        _, na, nb = ctx.needs_input_grad
        xp = ctx.xp
        return (None,
                xp.where(cond, grad, 0.0) if na else None,
                xp.where(cond, 0.0, grad) if nb else None)


class Cast(Function):
    """A dtype change; the gradient goes back in the input's dtype."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.in_dtype = a.dtype
        return ctx.xp.astype(a, ctx.device.native(dtype))

    @staticmethod
    def backward(ctx, grad):
        return ctx.xp.astype(grad, ctx.in_dtype)


class Erf(Function):
    """The error function; the forward comes from the device (the standard has no erf), the
    backward 2/sqrt(pi) exp(-a^2) from the input alone, so it differentiates twice."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.device.erf(a)

    @staticmethod
    def backward(ctx, grad):
        a = ctx.saved_tensors[0]
        return grad * (2.0 / math.sqrt(math.pi)) * ctx.xp.exp(-(a * a))
