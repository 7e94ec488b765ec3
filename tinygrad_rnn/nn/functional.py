"""Functional forms of the neural-network ops (PyTorch's `torch.nn.functional`)."""
from __future__ import annotations

import math

import numpy as np

from ..errors import DTypeError, IndexOutOfRange, ShapeError, fmt_shape
from ..ops import elementwise as ew, nn as nnops, reduce as red
from ..tensor import Tensor, concat, full, where


def relu(x):
    return x.relu()


def tanh(x):
    return x.tanh()


def sigmoid(x):
    return x.sigmoid()


def softplus(x):
    return x.softplus()


def logsigmoid(x):
    return x.log_sigmoid()


def softmax(x, axis=-1, *, dim=None):
    return x.softmax(axis, dim=dim)


def log_softmax(x, axis=-1, *, dim=None):
    return x.log_softmax(axis, dim=dim)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with weight of shape (out, in) as in PyTorch."""
    out = x @ weight.T
    return out if bias is None else out + bias


def _index_array(op, idx, device):
    """Integer indices (Tensor, NumPy array, list, int) as a raw int array on `device`."""
    if isinstance(idx, Tensor):
        if idx.device is not device:
            raise RuntimeError(f"{op}: indices are on {idx.device.name} but the weights/logits on {device.name}")
        return idx.data
    host = np.asarray(idx)
    if host.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be integers, got dtype {host.dtype}")
    return device.from_host(host.astype(np.int64))


def _class_rows(op, x, targets, noun):
    """Logits or log-probabilities with classes on axis 1 (axis 0 for a 1-D input) as rows
    (M, C), the integer targets as (M,), and the per-element loss shape."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {noun} must be a Tensor, got {type(x).__name__}")
    t = _index_array(op, targets, x.device)
    if "int" not in str(t.dtype):
        raise DTypeError(f"{op}: targets must be an integer array, got dtype {t.dtype}")
    xp, shape = x.device.xp, x.shape
    if x.ndim == 0:
        raise ShapeError(f"{op}: {noun} must have a class axis, got a 0-d tensor")
    out_shape = () if x.ndim == 1 else (shape[0],) + shape[2:]
    if tuple(t.shape) != out_shape:
        raise ShapeError(f"{op}: {noun} of shape {fmt_shape(shape)} need targets of shape "
                         f"{fmt_shape(out_shape)}, got {fmt_shape(t.shape)}")
    if x.ndim != 2:  # classes to the last axis, everything else into rows
        if x.ndim > 2:
            x = x.permute(0, *range(2, x.ndim), 1)
        x = x.reshape(-1, shape[0] if len(shape) == 1 else shape[1])
        t = xp.reshape(t, (-1,))
    return x, t, out_shape


def cross_entropy(logits, targets, weight=None, *, reduction="mean", ignore_index=None, label_smoothing=0.0):
    """Softmax cross-entropy of integer class targets, fused (log-sum-exp forward).

    logits: (C,), (N, C), or (N, C, d1, ...) with classes on axis 1 as in PyTorch;
    targets: (), (N,), or (N, d1, ...) integers. Targets equal to ignore_index count
    for nothing (and are left out of the mean's denominator). weight (C,) scales each
    class's loss, and a mean divides by the summed weights of the targets; label_smoothing
    mixes in the uniform distribution over the classes (PyTorch's formulas). With either,
    the loss is composed from log_softmax and sums, which differentiate twice.
    """
    _check_reduction("cross_entropy", reduction)
    if not isinstance(label_smoothing, (int, float)) or not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    x, t, out_shape = _class_rows("cross_entropy", logits, targets, "logits")
    if weight is not None or label_smoothing:
        weight = _class_weight("cross_entropy", weight, x)
        loss = _nll_rows("cross_entropy", x.log_softmax(-1), t, weight, ignore_index, reduction, label_smoothing)
    else:
        loss = nnops.CrossEntropy.apply(x, t, reduction=reduction, ignore_index=ignore_index)
    if reduction == "none" and loss.shape != out_shape:
        loss = loss.reshape(out_shape)
    return loss


def nll_loss(log_probs, targets, weight=None, *, reduction="mean", ignore_index=None):
    """Negative log-likelihood of integer targets under log-probabilities, with classes on axis 1
    ((C,), (N, C) or (N, C, d1, ...)); weight and ignore_index as in cross_entropy."""
    _check_reduction("nll_loss", reduction)
    x, t, out_shape = _class_rows("nll_loss", log_probs, targets, "log-probabilities")
    loss = _nll_rows("nll_loss", x, t, _class_weight("nll_loss", weight, x), ignore_index, reduction, 0.0)
    return loss.reshape(out_shape) if reduction == "none" and loss.shape != out_shape else loss


def _class_weight(op, weight, x):
    if weight is None:
        return None
    w = _like(op, x, weight, "weight")
    if w.shape != (x.shape[1],):
        raise ShapeError(f"{op}: weight must have shape ({x.shape[1]},), one per class, got {fmt_shape(w.shape)}")
    return w


def _nll_rows(op, logp, t, weight, ignore_index, reduction, smoothing):
    """PyTorch's nll_loss / label-smoothed cross-entropy on rows logp (M, C), targets t (M,)."""
    xp, dev = logp.device.xp, logp.device
    n, c = logp.shape
    valid = None if ignore_index is None else t != ignore_index
    # an ignored target need not be a class (-100): look up class 0 there, masked out below
    safe = t if valid is None else xp.where(valid, t, xp.zeros_like(t))
    if n:
        lo, hi = int(xp.min(safe)), int(xp.max(safe))
        if lo < 0 or hi >= c:
            raise IndexOutOfRange(f"{op}: target {hi if hi >= c else lo} is out of range for {c} classes "
                                  f"(input of shape {fmt_shape(logp.shape)})")
    loss = -logp[xp.arange(n), safe]
    keep = None if valid is None else Tensor._make(xp.astype(valid, logp.data.dtype), dev, None, 0)
    counts = weight[safe] if weight is not None else None  # what each row counts for in a mean
    if keep is not None:
        counts = keep if counts is None else counts * keep
    if counts is not None:
        loss = loss * counts
    if smoothing:
        smooth = -(logp if weight is None else logp * weight).sum(axis=1)
        if keep is not None:
            smooth = smooth * keep
        loss = (1.0 - smoothing) * loss + (smoothing / c) * smooth
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.mean() if counts is None else loss.sum() / counts.sum()


def embedding(indices, weight, padding_idx=None):
    """weight[indices]: rows of an embedding table; the gradient scatter-adds into the rows."""
    idx = _index_array("embedding", indices, weight.device)
    return nnops.Embedding.apply(idx, weight, padding_idx=padding_idx)


def one_hot(indices, num_classes, dtype=None, device=None):
    """A float one-hot encoding (no gradient): shape indices.shape + (num_classes,)."""
    from .. import backend as B
    dev = indices.device if isinstance(indices, Tensor) else B.get_device(device)
    idx = _index_array("one_hot", indices, dev)
    xp = dev.xp
    dt = dev.native(B.to_dtype(dtype) if dtype is not None else B.get_default_dtype())
    return Tensor._make(xp.astype(idx[..., None] == xp.arange(num_classes), dt), dev, None, 0)


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) (inverted dropout)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    dev = x.device
    if p == 1.0:
        return x * 0.0
    return nnops.Dropout.apply(x, dev.dropout_mask(x.shape, p, x.dtype))


# ---------------------------------------------------------------------------- PyTorch's everyday vocabulary:
# losses, activations, normalisation, padding and attention, each composed from Tensor ops
# (so each differentiates twice), with PyTorch's names, arguments, defaults and formulas.
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(op, reduction, allowed=_REDUCTIONS):
    if reduction not in allowed:
        names = ", ".join(repr(r) for r in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise ValueError(f"{op}: reduction must be {names}, got {reduction!r}")


def _reduce(loss, reduction):
    if reduction == "none":
        return loss
    return loss.sum() if reduction == "sum" else loss.mean()


def _like(op, x, v, what):
    """v (a Tensor, array, list or number) as a Tensor on x's device in x's dtype, or an error."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if not isinstance(v, Tensor):
        return Tensor(v, dtype=x.dtype, device=x.device)
    if v.device is not x.device:
        raise RuntimeError(f"{op}: {what} is on {v.device.name} but the input is on {x.device.name}")
    if v.dtype is not x.dtype:
        raise DTypeError(f"{op}: {what} is {v.dtype.name} but the input is {x.dtype.name} "
                         f"(shapes {fmt_shape(v.shape)} and {fmt_shape(x.shape)}); convert one with .to(dtype)")
    return v


def _target(op, x, target):
    """The target, shaped exactly like the input: PyTorch broadcasts a mismatch with a warning,
    which is nearly always a bug ((N, 1) against (N,) makes an (N, N) loss)."""
    t = _like(op, x, target, "target")
    if t.shape != x.shape:
        raise ShapeError(f"{op}: target of shape {fmt_shape(t.shape)} does not match the input's shape "
                         f"{fmt_shape(x.shape)}")
    return t


def _broadcast_weight(op, x, w, what):
    if w is None:
        return None
    w = _like(op, x, w, what)
    try:
        ok = np.broadcast_shapes(w.shape, x.shape) == x.shape
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"{op}: {what} of shape {fmt_shape(w.shape)} does not broadcast to the input's "
                         f"shape {fmt_shape(x.shape)}")
    return w


def mse_loss(input, target, reduction="mean"):  # noqa: A002 (PyTorch's names)
    """(input - target)^2, averaged (or summed, or per element)."""
    _check_reduction("mse_loss", reduction)
    d = input - _target("mse_loss", input, target)
    return _reduce(d * d, reduction)


def l1_loss(input, target, reduction="mean"):  # noqa: A002
    """|input - target|."""
    _check_reduction("l1_loss", reduction)
    return _reduce((input - _target("l1_loss", input, target)).abs(), reduction)


def smooth_l1_loss(input, target, reduction="mean", beta=1.0):  # noqa: A002
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target); beta=0 is l1_loss."""
    _check_reduction("smooth_l1_loss", reduction)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must be non-negative, got {beta}")
    d = (input - _target("smooth_l1_loss", input, target)).abs()
    if beta == 0:
        return _reduce(d, reduction)
    return _reduce(where(d < beta, (0.5 / beta) * d * d, d - 0.5 * beta), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):  # noqa: A002
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta): smooth_l1_loss times delta."""
    _check_reduction("huber_loss", reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    d = (input - _target("huber_loss", input, target)).abs()
    return _reduce(where(d < delta, 0.5 * d * d, delta * (d - 0.5 * delta)), reduction)


def _clamped_log(x):
    """log(x) clamped below at -100, as PyTorch's BCE does, with no NaN in its gradient at x = 0."""
    pos = x > 0
    return where(pos, where(pos, x, 1.0).log().clip(min=-100.0), -100.0)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):  # noqa: A002
    """-weight (t log x + (1 - t) log(1 - x)) of probabilities x in [0, 1], each log clamped at -100."""
    op = "binary_cross_entropy"
    _check_reduction(op, reduction)
    t = _target(op, input, target)
    w = _broadcast_weight(op, input, weight, "weight")
    xp = input.device.xp
    if input.numel() and not (bool(xp.all(input.data >= 0)) and bool(xp.all(input.data <= 1))):
        raise ValueError(f"{op}: every element of the input must be a probability in [0, 1] "
                         f"(input of shape {fmt_shape(input.shape)}); for logits use "
                         f"binary_cross_entropy_with_logits")
    loss = -(t * _clamped_log(input) + (1.0 - t) * _clamped_log(1.0 - input))
    return _reduce(loss if w is None else loss * w, reduction)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",  # noqa: A002
                                     pos_weight=None):
    """binary_cross_entropy(sigmoid(x), t) computed stably: (1 - t) x - (1 + (p - 1) t) log_sigmoid(x),
    p the pos_weight (broadcast along the last, class, axis)."""
    op = "binary_cross_entropy_with_logits"
    _check_reduction(op, reduction)
    t = _target(op, input, target)
    w = _broadcast_weight(op, input, weight, "weight")
    pw = _broadcast_weight(op, input, pos_weight, "pos_weight")
    log_sig = input.log_sigmoid()
    if pw is not None:
        log_sig = ((pw - 1.0) * t + 1.0) * log_sig
    loss = (1.0 - t) * input - log_sig
    return _reduce(loss if w is None else loss * w, reduction)


def kl_div(input, target, reduction="mean", log_target=False):  # noqa: A002
    """target (log target - input) of log-probabilities `input`, 0 where target is 0; 'batchmean'
    divides the sum by the batch size (the KL divergence), 'mean' by the element count."""
    op = "kl_div"
    _check_reduction(op, reduction, ("mean", "batchmean", "sum", "none"))
    t = _target(op, input, target)
    if log_target:
        loss = t.exp() * (t - input)
    else:
        pos = t > 0
        loss = where(pos, t * where(pos, t, 1.0).log(), 0.0) - t * input  # xlogy(t, t) - t x
    if reduction == "batchmean":
        return loss.sum() / input.shape[0] if input.ndim else loss.sum()
    return _reduce(loss, reduction)


def gelu(input, approximate="none"):  # noqa: A002
    """x Phi(x), Phi the standard normal CDF: exactly (with erf), or approximate="tanh"."""
    if approximate == "none":
        return 0.5 * input * (1.0 + ew.Erf.apply(input * (1.0 / math.sqrt(2.0))))
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (input + 0.044715 * input * input * input)
        return 0.5 * input * (1.0 + inner.tanh())
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(input, inplace=False):  # noqa: A002 (inplace accepted; the result is always a new tensor)
    """x sigmoid(x) (also called swish)."""
    return input * input.sigmoid()


def elu(input, alpha=1.0, inplace=False):  # noqa: A002
    """x where x > 0, else alpha (exp(x) - 1)."""
    pos = input > 0
    # exp only of the non-positive side, so a large x cannot overflow into the unused branch
    return where(pos, input, alpha * (where(pos, 0.0, input).exp() - 1.0))


def leaky_relu(input, negative_slope=0.01, inplace=False):  # noqa: A002
    """x where x > 0, else negative_slope x."""
    return where(input > 0, input, input * negative_slope)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):  # noqa: A002
    """(x - mean) / sqrt(var + eps) over the trailing normalized_shape axes (biased variance),
    then * weight + bias (each of shape normalized_shape)."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k = len(shape)
    if not isinstance(input, Tensor):
        raise TypeError(f"layer_norm: input must be a Tensor, got {type(input).__name__}")
    if k == 0 or input.ndim < k or input.shape[input.ndim - k:] != shape:
        raise ShapeError(f"layer_norm: input of shape {fmt_shape(input.shape)} does not end in "
                         f"normalized_shape {fmt_shape(shape)}")
    weight, bias = (None if p is None else _like("layer_norm", input, p, what)
                    for what, p in (("weight", weight), ("bias", bias)))
    for what, p in (("weight", weight), ("bias", bias)):
        if p is not None and p.shape != shape:
            raise ShapeError(f"layer_norm: {what} of shape {fmt_shape(p.shape)} must have normalized_shape "
                             f"{fmt_shape(shape)}")
    axes = tuple(range(input.ndim - k, input.ndim))
    xc = input - input.mean(axis=axes, keepdims=True)
    out = xc / ((xc * xc).mean(axis=axes, keepdims=True) + eps).sqrt()
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def _vector_norm(x, p, dim):
    """The p-norm along dim, kept (x's rank): sqrt of the sum of squares for p = 2."""
    if p == 2:
        return (x * x).sum(axis=dim, keepdims=True).sqrt()
    if p == math.inf:
        return red.Max.apply(x.abs(), axis=dim, keepdims=True)
    if p == 1:
        return x.abs().sum(axis=dim, keepdims=True)
    if not isinstance(p, (int, float)) or p <= 0:
        raise ValueError(f"normalize: p must be a positive number or inf, got {p!r}")
    return (x.abs() ** p).sum(axis=dim, keepdims=True) ** (1.0 / p)


def normalize(input, p=2.0, dim=1, eps=1e-12):  # noqa: A002
    """x / max(||x||_p, eps) along dim."""
    if not isinstance(input, Tensor):
        raise TypeError(f"normalize: input must be a Tensor, got {type(input).__name__}")
    return input / _vector_norm(input, p, dim).clip(min=eps)


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """<x1, x2> / (max(||x1||, eps) max(||x2||, eps)) along dim, the two broadcast together."""
    x2 = _like("cosine_similarity", x1, x2, "x2")
    try:
        shape = tuple(np.broadcast_shapes(x1.shape, x2.shape))
    except ValueError:
        raise ShapeError(f"cosine_similarity: shapes {fmt_shape(x1.shape)} and {fmt_shape(x2.shape)} "
                         f"do not broadcast") from None
    x1, x2 = x1.expand(*shape), x2.expand(*shape)
    return ((x1 / _vector_norm(x1, 2, dim).clip(min=eps)) * (x2 / _vector_norm(x2, 2, dim).clip(min=eps))).sum(axis=dim)


def pad(input, pad, mode="constant", value=None):  # noqa: A002
    """Pad (or, with negative sizes, crop) the trailing axes: pad = (left, right) of the last axis,
    then of the one before it, ... as in PyTorch. Only mode='constant'."""
    if mode != "constant":
        raise ValueError(f"pad: mode {mode!r} is not supported (only 'constant')")
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > input.ndim or not all(isinstance(n, int) for n in pad):
        raise ShapeError(f"pad: pad must be an even number of ints, two per padded axis, at most "
                         f"{2 * input.ndim} for a tensor of shape {fmt_shape(input.shape)}, got {pad}")
    fill = 0.0 if value is None else value
    out = input
    for i in range(len(pad) // 2):
        d, lo, hi = input.ndim - 1 - i, pad[2 * i], pad[2 * i + 1]
        n = out.shape[d]
        if n + lo + hi < 0:
            raise ShapeError(f"pad: padding {(lo, hi)} leaves axis {d} of size {n} with a negative size "
                             f"(input of shape {fmt_shape(input.shape)})")
        if lo < 0 or hi < 0:
            out = out[(slice(None),) * d + (slice(max(-lo, 0), n - max(-hi, 0)),)]
        block = [full(out.shape[:d] + (size,) + out.shape[d + 1:], fill, dtype=out.dtype, device=out.device)
                 if size > 0 else None for size in (lo, hi)]
        parts = [t for t in (block[0], out, block[1]) if t is not None]
        out = concat(parts, axis=d) if len(parts) > 1 else out
    return out


def _attn_mask(mask, scores, L, S):
    if not isinstance(mask, Tensor):
        mask = Tensor(mask, device=scores.device) if np.asarray(mask).dtype == bool else \
            Tensor(mask, dtype=scores.dtype, device=scores.device)
    if mask.device is not scores.device:
        raise RuntimeError(f"scaled_dot_product_attention: attn_mask is on {mask.device.name} but the "
                           f"query on {scores.device.name}")
    try:
        ok = np.broadcast_shapes(mask.shape, scores.shape) == scores.shape
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"scaled_dot_product_attention: attn_mask of shape {fmt_shape(mask.shape)} does not "
                         f"broadcast to the attention scores' shape {fmt_shape(scores.shape)} (..., L={L}, S={S})")
    if mask.dtype.name == "bool":
        return where(mask, scores, -math.inf)  # True: may attend
    if mask.dtype is not scores.dtype:
        raise DTypeError(f"scaled_dot_product_attention: attn_mask must be bool or {scores.dtype.name} "
                         f"like the query, got {mask.dtype.name}")
    return scores + mask


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                                 scale=None):
    """softmax(q k^T * scale + mask) v over the last two axes, (..., L, E) x (..., S, E) x (..., S, Ev)
    -> (..., L, Ev); scale defaults to 1/sqrt(E). A bool attn_mask says where a query may attend (True),
    a float one is added to the scores; is_causal lets query i attend to keys 0..i. As PyTorch's
    function, dropout_p applies whenever it is > 0 (pass 0.0 in evaluation)."""
    op = "scaled_dot_product_attention"
    key, value = _like(op, query, key, "key"), _like(op, query, value, "value")
    if query.ndim < 2 or key.ndim < 2 or value.ndim < 2 or query.shape[-1] != key.shape[-1] \
            or key.shape[-2] != value.shape[-2]:
        raise ShapeError(f"{op}: query (..., L, E), key (..., S, E) and value (..., S, Ev) do not fit: "
                         f"got {fmt_shape(query.shape)}, {fmt_shape(key.shape)} and {fmt_shape(value.shape)}")
    L, S = query.shape[-2], key.shape[-2]
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = (query @ key.transpose(-2, -1)) * scale
    if is_causal:
        if attn_mask is not None:
            raise ValueError(f"{op}: pass attn_mask or is_causal=True, not both")
        attn_mask = np.tril(np.ones((L, S), dtype=bool))
    if attn_mask is not None:
        scores = _attn_mask(attn_mask, scores, L, S)
    weights = scores.softmax(-1)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, training=True)
    return weights @ value
