"""Functional forms of the neural-network ops (PyTorch's `torch.nn.functional`)."""
from __future__ import annotations

import numpy as np

from ..errors import ShapeError, fmt_shape
from ..ops import nn as nnops
from ..tensor import Tensor


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


def cross_entropy(logits, targets, reduction="mean", ignore_index=None):
    """Softmax cross-entropy of integer class targets, fused (log-sum-exp forward).

    logits: (C,), (N, C), or (N, C, d1, ...) with classes on axis 1 as in PyTorch;
    targets: (), (N,), or (N, d1, ...) integers. Targets equal to ignore_index count
    for nothing (and are left out of the mean's denominator).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    t = _index_array("cross_entropy", targets, logits.device)
    xp, shape = logits.device.xp, logits.shape
    if logits.ndim == 0:
        raise ShapeError("cross_entropy: logits must have a class axis, got a 0-d tensor")
    out_shape = () if logits.ndim == 1 else (shape[0],) + shape[2:]
    if tuple(t.shape) != out_shape:
        raise ShapeError(f"cross_entropy: logits of shape {fmt_shape(shape)} need targets of shape "
                         f"{fmt_shape(out_shape)}, got {fmt_shape(t.shape)}")
    x = logits
    if logits.ndim != 2:  # classes to the last axis, everything else into rows
        if logits.ndim > 2:
            x = logits.permute(0, *range(2, logits.ndim), 1)
        x = x.reshape(-1, shape[0] if logits.ndim == 1 else shape[1])
        t = xp.reshape(t, (-1,))
    loss = nnops.CrossEntropy.apply(x, t, reduction=reduction, ignore_index=ignore_index)
    if reduction == "none" and loss.shape != out_shape:
        loss = loss.reshape(out_shape)
    return loss


def nll_loss(log_probs, targets, reduction="mean", ignore_index=None):
    """Negative log-likelihood of targets under log-probabilities (N, C)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"nll_loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    t = _index_array("nll_loss", targets, log_probs.device)
    xp = log_probs.device.xp
    valid = None if ignore_index is None else t != ignore_index
    if valid is not None:
        # an ignored target need not be a class (-100): look up class 0 there, masked out below
        t = xp.where(valid, t, xp.zeros_like(t))
    picked = log_probs[xp.arange(log_probs.shape[0]), t]
    if valid is not None:
        keep = Tensor(xp.astype(valid, log_probs.data.dtype), device=log_probs.device)
        picked = picked * keep
        if reduction == "mean":
            return -picked.sum() / keep.sum().item()
    if reduction == "none":
        return -picked
    return -picked.sum() if reduction == "sum" else -picked.mean()


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
