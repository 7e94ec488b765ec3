"""Neural-network ops fused for speed and stability: softmax, log-softmax,
cross-entropy, embedding lookup, dropout."""
from ..autograd import Function, TensorBase
from ..kernels import Kernel, for_device
from ..errors import AxisError, DTypeError, IndexOutOfRange, ShapeError, fmt_shape


def _one_axis(op, a, axis):
    if not isinstance(axis, int) or not -a.ndim <= axis < a.ndim:
        raise AxisError(f"{op}: axis {axis!r} is out of range for a tensor of shape {fmt_shape(a.shape)} "
                        f"(one int axis, from {-a.ndim} to {a.ndim - 1})")
    return axis


class Softmax(Function):
    @staticmethod
    def forward(ctx, a, axis=-1):
        xp = ctx.xp
        axis = _one_axis("softmax", a, axis)
        e = xp.exp(a - xp.max(a, axis=axis, keepdims=True))
        out = e / xp.sum(e, axis=axis, keepdims=True)
        ctx.axis = axis
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        out = ctx.saved_tensors[0]
        return out * (grad - ctx.xp.sum(grad * out, axis=ctx.axis, keepdims=True))


def _log_softmax(xp, a, axis):
    shifted = a - xp.max(a, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, a, axis=-1):
        out = _log_softmax(ctx.xp, a, _one_axis("log_softmax", a, axis))
        ctx.axis = axis
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        out = ctx.saved_tensors[0]
        return grad - xp.exp(out) * xp.sum(grad, axis=ctx.axis, keepdims=True)


def _check_int(op, arr, what):
    if "int" not in str(arr.dtype):  # int32/int64 on every backend
        raise DTypeError(f"{op}: {what} must be an integer array, got dtype {arr.dtype}")


class CrossEntropy(Function):
    """Mean/sum/per-row negative log-likelihood of integer targets under softmax(logits).

    logits (N, C), targets (N,). Forward by log-sum-exp; backward softmax minus the
    target's indicator (a comparison with arange(C), never an identity matrix).
    Rows whose target equals ignore_index contribute nothing, and a mean divides by
    the count of the other rows. Under create_graph its composed form (log_softmax, the
    targets' entries, their sum or mean) is differentiated instead: the fused backward
    reuses the log-probabilities forward computed.
    """

    @staticmethod
    def forward(ctx, logits, targets, reduction="mean", ignore_index=None):
        xp = ctx.xp
        if logits.ndim != 2 or targets.ndim != 1 or targets.shape[0] != logits.shape[0]:
            raise ShapeError(f"cross_entropy: logits of shape {fmt_shape(logits.shape)} need targets of "
                             f"shape ({logits.shape[0] if logits.ndim else '?'},), got {fmt_shape(targets.shape)}")
        _check_int("cross_entropy", targets, "targets")
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        n, c = logits.shape
        valid = None if ignore_index is None else targets != ignore_index
        safe = targets if valid is None else xp.where(valid, targets, 0)
        if n and ctx.device.check_indices:
            lo, hi = int(xp.min(safe)), int(xp.max(safe))
            if lo < 0 or hi >= c:
                raise IndexOutOfRange(f"cross_entropy: target {hi if hi >= c else lo} is out of range for "
                                      f"{c} classes (logits of shape {fmt_shape(logits.shape)})")
        ks = for_device(ctx.device, "nn", KERNELS) if n else None
        if ks is not None:  # one pass per row: max, log-sum-exp, log-probabilities, the target's
            logp, nll = xp.empty((n, c), dtype=logits.dtype), xp.empty((n,), dtype=logits.dtype)
            safe = xp.astype(safe, xp.int64)
            ks["xent_fwd"](logits, safe, c, nll, logp)
        else:
            logp = _log_softmax(xp, logits, -1)
            nll = -xp.take_along_axis(logp, safe[:, None], axis=1)[:, 0]
        weight = None if valid is None else xp.astype(valid, logits.dtype)
        if weight is not None:  # the ignored rows (their target read as class 0) count for nothing
            nll = nll * weight
        ctx.reduction, ctx.n_classes, ctx.ignore_index, ctx.fused = reduction, c, ignore_index, ks is not None
        ctx.save_for_backward(logp, safe, weight)
        if reduction == "none":
            return nll
        total = xp.sum(nll)
        if reduction == "sum":
            return total
        ctx.count = n if weight is None else xp.sum(weight)
        return total / ctx.count

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        logp, safe, weight = ctx.saved_tensors
        ks = for_device(ctx.device, "nn", KERNELS) if ctx.fused and ctx.reduction != "none" else None
        if ks is not None:  # softmax minus the target's indicator, times the incoming gradient, in one pass
            g = xp.empty(logp.shape, dtype=logp.dtype)
            if ctx.reduction == "mean" and weight is not None:  # the count of rows kept, on the device
                grad, inv = grad / ctx.count, 1.0
            else:
                inv = 1.0 if ctx.reduction == "sum" else 1.0 / ctx.count
            ks["xent_bwd"](logp, safe, xp.reshape(grad, (1,)), inv, logp.shape[1], g)
            if weight is not None:  # a second pass, only with ignore_index: the kernel stays branch-free
                g *= weight[:, None]
            return g, None
        g = xp.exp(logp)
        g = g - xp.astype(xp.arange(ctx.n_classes)[None, :] == safe[:, None], g.dtype)
        if ctx.reduction == "none":
            scale = grad[:, None] if weight is None else (grad * weight)[:, None]
        else:
            scale = grad if ctx.reduction == "sum" else grad / ctx.count
            if weight is not None:
                scale = scale * weight[:, None]
        return g * scale, None

    @staticmethod
    def composed(ctx, logits, targets, *_):
        """The same loss from ops that differentiate twice (what create_graph differentiates):
        minus each row's log-probability of its target, ignored rows times 0, summed or
        averaged over the rows that count. Targets and that mask are constants."""
        rx = ctx.device.xp  # the raw arrays' namespace: targets and the mask carry no graph
        if isinstance(targets, TensorBase):  # CrossEntropy.apply(logits, a Tensor of targets)
            targets = targets.data
        n = logits.shape[0]
        valid = None if ctx.ignore_index is None else targets != ctx.ignore_index
        safe = targets if valid is None else rx.where(valid, targets, 0)
        picked = LogSoftmax.apply(logits, -1)[rx.arange(n), safe]
        if valid is not None:
            picked = picked * rx.astype(valid, logits.data.dtype)
        if ctx.reduction == "none":
            return -picked
        total = -picked.sum()
        if ctx.reduction == "sum":
            return total
        return total / (n if valid is None else rx.sum(rx.astype(valid, logits.data.dtype)))


# The fused loss as elementwise kernels (kernels.Kernel), where the device builds them:
# forward one row per element (its max, log-sum-exp, log-probabilities and the target's
# negative log-likelihood), backward one element per (row, class). ignore_index's rows run
# through them as class 0 and are multiplied by 0 after, as in the portable form above, which
# is the reference; reduction="none"'s backward runs it.
KERNELS = {
    "xent_fwd": Kernel(
        "raw T logits, raw int64 target, int32 C", "T nll, raw T logp",
        """
        const ptrdiff_t row = i * C;
        T m = logits[row];
        for (int c = 1; c < C; ++c) m = logits[row + c] > m ? logits[row + c] : m;
        T s = 0;
        for (int c = 0; c < C; ++c) s += tg_exp(logits[row + c] - m);
        const T lse = m + tg_log(s);
        for (int c = 0; c < C; ++c) logp[row + c] = logits[row + c] - lse;
        nll = lse - logits[row + target[i]];
        """, work="C"),
    "xent_bwd": Kernel(
        "T logp, raw int64 target, raw T grad, float64 inv_count, int32 C", "T g",
        "g = (tg_exp(logp) - (j == target[b] ? T(1) : T(0))) * (grad[0] * (T)inv_count);", row="C"),
    # the embedding's forward, a row gather (on the CPU's threads, where NumPy's take runs on one)
    "embed_fwd": Kernel("raw T table, raw int64 index, int32 D", "T out", "out = table[index[b] * D + j];",
                        row="D"),
    # the embedding's backward: row b of the incoming gradient into the table's row index[b]
    # (one pass over the gradient; as a one-hot GEMM it ran at a quarter of BLAS's speed)
    "embed_bwd": Kernel(
        "T grad, raw int64 index, int32 D", "raw T table",
        "tg_atomic_add(&table[index[b] * D + j], grad);", row="D"),
}


class Embedding(Function):
    """weight[indices] as one gather; backward scatter-adds rows (repeats accumulate)."""

    @staticmethod
    def forward(ctx, indices, weight, padding_idx=None):
        xp = ctx.xp
        _check_int("embedding", indices, "indices")
        if weight.ndim != 2:
            raise ShapeError(f"embedding: weight must be 2-D (num_embeddings, dim), got {fmt_shape(weight.shape)}")
        flat = xp.astype(xp.reshape(indices, (-1,)), xp.int64)  # as the kernels take them, once for both ways
        if flat.shape[0] and ctx.device.check_indices:
            lo, hi = int(xp.min(flat)), int(xp.max(flat))
            if lo < 0 or hi >= weight.shape[0]:
                raise IndexOutOfRange(f"embedding: index {hi if hi >= weight.shape[0] else lo} is out of "
                                      f"range for {weight.shape[0]} embeddings")
        ctx.flat, ctx.w_shape, ctx.padding_idx = flat, weight.shape, padding_idx
        ks = for_device(ctx.device, "nn", KERNELS) if flat.shape[0] and weight.shape[1] else None
        if ks is not None:
            out = xp.empty((flat.shape[0], weight.shape[1]), dtype=weight.dtype)
            ks["embed_fwd"](ctx.device.contiguous(weight), flat, weight.shape[1], out)
        else:
            out = xp.take(weight, flat, axis=0)
        return xp.reshape(out, tuple(indices.shape) + (weight.shape[1],))

    @staticmethod
    def backward(ctx, grad):
        xp = ctx.xp
        gw = xp.zeros(ctx.w_shape, dtype=grad.dtype)
        rows = xp.reshape(grad, (-1, ctx.w_shape[1]))
        ks = for_device(ctx.device, "nn", KERNELS) if rows.shape[0] and rows.shape[1] else None
        if ks is not None:
            ks["embed_bwd"](rows, ctx.flat, ctx.w_shape[1], gw)
        else:
            ctx.device.scatter_add(gw, ctx.flat, rows)
        if ctx.padding_idx is not None:
            gw[ctx.padding_idx, ...] = 0.0
        return None, gw


class Dropout(Function):
    """x * mask, where mask already holds 0 or 1/(1-p)."""

    saved_constants = True  # the mask does not depend on x

    @staticmethod
    def forward(ctx, a, mask):
        ctx.save_for_backward(mask)
        return a * mask

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0], None
