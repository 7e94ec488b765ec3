"""Additive attention (Bahdanau, Cho and Bengio, 2015), time-major like the recurrent layers.

For a decoder state q and encoder outputs k_1..k_S:

    e_s     = v^T tanh(W_q q + W_k k_s + b)        (one score per source position)
    alpha   = softmax(e) over s                     (masked positions get exactly 0)
    context = sum_s alpha_s value_s                 (values default to the keys)

The key projection W_k k_s + b does not depend on the decoder step, so a decoding loop
computes it once (`project_keys`) and passes it to every step (`keys_proj=`).
"""
from __future__ import annotations

import math

from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor, where
from .layers import Linear
from .module import Module

__all__ = ["AdditiveAttention"]


class AdditiveAttention(Module):
    """score(q, k_s) = v^T tanh(W_q q + W_k k_s + b); returns (context, weights).

        attn = nn.AdditiveAttention(query_size=64, key_size=128, hidden_size=64)
        keys_proj = attn.project_keys(enc_out)          # enc_out (S, B, 128), once per batch
        context, weights = attn(h, enc_out, keys_proj=keys_proj, mask=src_mask)
        # h (B, 64) -> context (B, 128), weights (S, B) summing to 1 over S

    mask: (S, B) booleans, True where the source position may be attended to (False on
    padding). Parameters: query_proj.weight (H, Dq), key_proj.weight (H, Dk),
    key_proj.bias (H,), score.weight (1, H).
    """

    def __init__(self, query_size, key_size, hidden_size, dtype=None, device=None):
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.query_size, self.key_size, self.hidden_size = query_size, key_size, hidden_size
        self.query_proj = Linear(query_size, hidden_size, bias=False, **kw)
        self.key_proj = Linear(key_size, hidden_size, bias=True, **kw)
        self.score = Linear(hidden_size, 1, bias=False, **kw)

    def extra_repr(self):
        return f"query_size={self.query_size}, key_size={self.key_size}, hidden_size={self.hidden_size}"

    def project_keys(self, keys):
        """W_k k_s + b for every source position: (S, B, Dk) -> (S, B, H)."""
        self._check_keys(keys)
        return self.key_proj(keys)

    def _check_keys(self, keys):
        if not isinstance(keys, Tensor) or keys.ndim != 3 or keys.shape[-1] != self.key_size:
            got = fmt_shape(keys.shape) if isinstance(keys, Tensor) else type(keys).__name__
            raise ShapeError(f"AdditiveAttention: keys must have shape (S, B, {self.key_size}) "
                             f"(source length, batch, key_size), got {got}")

    def forward(self, query, keys, values=None, mask=None, keys_proj=None):
        """query (B, Dq), keys (S, B, Dk), values (S, B, Dv) or None -> (context (B, Dv), weights (S, B))."""
        self._check_keys(keys)
        S, batch = keys.shape[0], keys.shape[1]
        if not isinstance(query, Tensor) or query.shape != (batch, self.query_size):
            got = fmt_shape(query.shape) if isinstance(query, Tensor) else type(query).__name__
            raise ShapeError(f"AdditiveAttention: query must have shape ({batch}, {self.query_size}) "
                             f"(batch, query_size) for keys of shape {fmt_shape(keys.shape)}, got {got}")
        if values is None:
            values = keys
        elif values.ndim != 3 or values.shape[:2] != (S, batch):
            raise ShapeError(f"AdditiveAttention: values must have shape ({S}, {batch}, Dv) to match keys "
                             f"of shape {fmt_shape(keys.shape)}, got {fmt_shape(values.shape)}")
        if keys_proj is None:
            keys_proj = self.key_proj(keys)
        elif keys_proj.shape != (S, batch, self.hidden_size):
            raise ShapeError(f"AdditiveAttention: keys_proj must have shape ({S}, {batch}, {self.hidden_size}) "
                             f"(from project_keys), got {fmt_shape(keys_proj.shape)}")
        scores = self.score((keys_proj + self.query_proj(query)).tanh()).reshape(S, batch)
        if mask is not None:
            mask = self._check_mask(mask, S, batch, keys.device)
            scores = where(mask, scores, -math.inf)
        weights = scores.softmax(axis=0)
        context = (weights.unsqueeze(2) * values).sum(axis=0)
        return context, weights

    @staticmethod
    def _check_mask(mask, S, batch, device):
        if not isinstance(mask, Tensor):
            mask = Tensor(mask, device=device)
        if mask.dtype.name != "bool":
            raise DTypeError(f"AdditiveAttention: mask must be boolean (True = attend), got {mask.dtype.name}")
        if mask.shape != (S, batch):
            raise ShapeError(f"AdditiveAttention: mask must have shape ({S}, {batch}) (source length, batch), "
                             f"got {fmt_shape(mask.shape)}")
        if not bool(mask.device.xp.all(mask.device.xp.any(mask.data, axis=0))):
            raise ValueError("AdditiveAttention: a batch column of the mask is all False: "
                             "there is nothing to attend to in that sequence")
        return mask
