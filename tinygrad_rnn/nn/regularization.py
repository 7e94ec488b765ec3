"""The AWD-LSTM regularisers (Merity et al. 2017) that are not a layer argument: variational
("locked") dropout and embedding dropout. DropConnect on the recurrent weights is the
recurrent layers' `weight_dropout=` (nn/rnn.py), since it has to reach inside their
whole-sequence ops; weight tying is CharLM's `tie_weights=`.

Each draws its mask from the device's generator (`manual_seed` fixes it), applies it with
the same differentiable `Dropout` op as `F.dropout` (a mask that broadcasts), and is the
identity in eval mode.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..errors import ShapeError, fmt_shape
from ..ops import nn as nnops
from ..tensor import Tensor
from . import functional as F
from .layers import Embedding
from .module import Module
from .utils.rnn import PackedSequence

__all__ = ["LockedDropout", "locked_dropout", "embedding_dropout"]


def _check_p(op, p):
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability p must be a number in [0, 1], got {p!r}")


def _masked(x, p, mask_shape):
    """x times one mask of mask_shape (0, or 1/(1-p) where kept), broadcast over the rest."""
    if p == 1.0:
        return x * 0.0
    return nnops.Dropout.apply(x, x.device.dropout_mask(mask_shape, p, x.dtype))


def _locked_packed(data, p, batch_sizes):
    """A PackedSequence's data (N, F) under one mask per sequence: a (B, F) mask, whose row b
    goes to every packed row of sorted sequence b (step t holds sequences 0..bs[t]-1)."""
    dev = data.device
    slot = np.concatenate([np.arange(b, dtype=np.int64) for b in batch_sizes.tolist()])
    mask = dev.dropout_mask((int(batch_sizes[0]),) + tuple(data.shape[1:]), p, data.dtype)
    return nnops.Dropout.apply(data, dev.xp.take(mask, dev.from_host(slot), axis=0))


def locked_dropout(x, p=0.5, training=True, batch_first=False):
    """Variational dropout (Gal & Ghahramani 2016; AWD-LSTM's LockedDropout): zero features
    with probability p and scale the rest by 1/(1-p), with ONE mask per sequence, the same at
    every time step. x: (T, B, F), (B, T, F) if batch_first, (T, F) unbatched, or a
    PackedSequence (one mask per sequence, whatever its length). Identity unless training."""
    _check_p("locked_dropout", p)
    if isinstance(x, PackedSequence):
        if not training or p == 0.0:
            return x
        bs = x.host_batch_sizes()
        data = x.data * 0.0 if p == 1.0 else _locked_packed(x.data, p, bs)
        return PackedSequence(data, x.batch_sizes, x.sorted_indices, x.unsorted_indices)
    if not isinstance(x, Tensor):
        raise TypeError(f"locked_dropout: expected a Tensor or a PackedSequence, got {type(x).__name__}")
    if x.ndim not in (2, 3):
        layout = "(batch, seq_len, features)" if batch_first else "(seq_len, batch, features)"
        raise ShapeError(f"locked_dropout: expected input of shape {layout} or (seq_len, features) unbatched, "
                         f"got {x.ndim}-D shape {fmt_shape(x.shape)}")
    if not training or p == 0.0:
        return x
    shape = list(x.shape)
    shape[1 if batch_first and x.ndim == 3 else 0] = 1  # the time axis: one mask for all steps
    return _masked(x, p, tuple(shape))


class LockedDropout(Module):
    """locked_dropout as a module: one mask per sequence, shared across time steps, in
    training; the identity in eval mode. LockedDropout(p=0.5, batch_first=False)."""

    def __init__(self, p=0.5, batch_first=False, dtype=None, device=None):
        super().__init__()
        _check_p("LockedDropout", p)
        self.p, self.batch_first = float(p), bool(batch_first)

    def forward(self, x):
        return locked_dropout(x, self.p, self.training, self.batch_first)

    def extra_repr(self):
        return f"p={self.p}" + (", batch_first=True" if self.batch_first else "")


def embedding_dropout(embed, words, p=0.1, training=True):
    """Embedding dropout (Gal & Ghahramani 2016, AWD-LSTM's embedded_dropout): whole rows of
    the embedding matrix dropped (a dropped word is all zeros wherever it occurs), the rest
    scaled by 1/(1-p), with one mask per call. `embed` is an nn.Embedding, `words` its
    indices; the result is embed(words) with the masked matrix, and the gradient reaches the
    matrix's kept rows. Plain embed(words) unless training."""
    _check_p("embedding_dropout", p)
    if not isinstance(embed, Embedding):
        raise TypeError(f"embedding_dropout: embed must be an nn.Embedding, got {type(embed).__name__}")
    weight = embed.weight
    if not training or p == 0.0:
        return embed(words)
    if isinstance(words, Tensor) and words.device is not weight.device:
        raise RuntimeError(f"embedding_dropout: words are on {words.device.name} but the embedding is on "
                           f"{weight.device.name}; move one with .to(device)")
    masked = _masked(weight, p, (weight.shape[0], 1))
    return F.embedding(words, masked, padding_idx=embed.padding_idx)
