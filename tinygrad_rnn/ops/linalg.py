"""Matrix multiplication, with batching (broadcast batch dims) and 1-D operands."""
from ..autograd import Function, unbroadcast
from ..errors import ShapeError, fmt_shape


def _mT(xp, a):
    return a.T if a.ndim == 2 else xp.permute_dims(a, tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2))


class MatMul(Function):
    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: operands must have at least 1 dimension, got shapes "
                             f"{fmt_shape(a.shape)} and {fmt_shape(b.shape)}")
        k_a = a.shape[-1]
        k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if k_a != k_b:
            raise ShapeError(f"matmul: shapes {fmt_shape(a.shape)} and {fmt_shape(b.shape)} do not align: "
                             f"{k_a} (last dim of the first) != {k_b} "
                             f"({'only' if b.ndim == 1 else 'second-to-last'} dim of the second)")
        ctx.save_for_backward(a, b)
        return ctx.xp.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        if a.ndim == 2 and b.ndim == 2:
            # the common case (x @ W.T at every RNN step) needs no reshape or unbroadcast,
            # which would cost more than the two tiny matmuls themselves
            return (grad @ b.T if na else None), (a.T @ grad if nb else None)
        xp = ctx.xp
        # treat 1-D operands as a row (a) or a column (b) matrix, as matmul itself does
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad
        if a.ndim == 1:
            g = xp.expand_dims(g, axis=-2 if g.ndim >= 1 else 0)
        if b.ndim == 1:
            g = xp.expand_dims(g, axis=-1)
        ga = gb = None
        if na:
            ga = xp.reshape(unbroadcast(xp, xp.matmul(g, _mT(xp, b2)), a2.shape), a.shape)
        if nb:
            gb = xp.reshape(unbroadcast(xp, xp.matmul(_mT(xp, a2), g), b2.shape), b.shape)
        return ga, gb
