"""A count-based character n-gram model with add-k smoothing: the baseline a recurrent
model has to beat.

P(c | the previous n-1 chars) = (count(context, c) + k) / (count(context) + k * V)

with V the vocabulary size. A context never seen in training gets the uniform 1/V.
There is no backoff, on purpose: this is the plain textbook baseline. Counting is done
with NumPy over integer-coded n-grams, so a megabyte of text takes a second or so.
"""
from __future__ import annotations

import math

import numpy as np


class NGramModel:
    def __init__(self, order: int = 5, k: float = 0.1):
        if order < 1:
            raise ValueError(f"order must be at least 1, got {order}")
        if not k > 0:
            raise ValueError(f"k must be positive (add-k smoothing with k=0 gives unseen characters "
                             f"probability 0), got {k}")
        self.order, self.k = int(order), float(k)
        self.vocab_size = None

    def _codes(self, ids, n):
        """Each n-gram of ids as one integer in base V; code[j] covers ids[j:j+n]."""
        ids = np.asarray(ids, dtype=np.int64)
        m = len(ids) - n + 1
        code = np.zeros(max(m, 0), dtype=np.int64)
        for j in range(n):
            code = code * self.vocab_size + ids[j:j + m]
        return code

    def fit(self, ids, vocab_size: int) -> "NGramModel":
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < self.order:
            raise ValueError(f"{len(ids)} training characters are too few for a {self.order}-gram model")
        if vocab_size ** self.order >= 2 ** 62:
            raise ValueError(f"order {self.order} with {vocab_size} characters is too large to count "
                             f"with 64-bit codes; lower the order")
        self.vocab_size = int(vocab_size)
        n = self.order
        full = self._codes(ids, n)
        self._full_keys, self._full_counts = np.unique(full, return_counts=True)
        if n > 1:
            # contexts counted over the same positions as the full n-grams, so the
            # counts of a context's continuations sum to the context's count
            ctx = full // self.vocab_size
            self._ctx_keys, self._ctx_counts = np.unique(ctx, return_counts=True)
        else:
            self._total = len(full)
        return self

    @staticmethod
    def _lookup(keys, counts, query):
        pos = np.searchsorted(keys, query)
        pos = np.minimum(pos, len(keys) - 1)
        hit = keys[pos] == query
        return np.where(hit, counts[pos], 0)

    def log_probs(self, ids, context=None) -> np.ndarray:
        """Natural-log probability of each character of ids given the n-1 before it.

        `context` (ids that precede the text, e.g. the end of the training text) gives
        the first n-1 characters their full context; without it they score as an unseen
        context would, 1/V, which matters only for tiny texts.
        """
        if self.vocab_size is None:
            raise RuntimeError("NGramModel: call fit() first")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError("ids outside the vocabulary the model was fitted on")
        n, V, k = self.order, self.vocab_size, self.k
        ctx_ids = np.zeros(0, dtype=np.int64)
        if context is not None and n > 1:
            ctx_ids = np.asarray(context, dtype=np.int64)[-(n - 1):]
        stream = np.concatenate([ctx_ids, ids])
        lead = len(ctx_ids)
        out = np.full(len(ids), -math.log(V))  # positions without a full context
        full = self._codes(stream, n)  # full[j] ends at stream[j + n - 1]
        if len(full):
            first = max(0, lead - (n - 1))  # n-grams ending inside ids
            full = full[first:]
            c_full = self._lookup(self._full_keys, self._full_counts, full)
            if n > 1:
                c_ctx = self._lookup(self._ctx_keys, self._ctx_counts, full // V)
            else:
                c_ctx = np.full(len(full), self._total)
            lp = np.log((c_full + k) / (c_ctx + k * V))
            out[len(ids) - len(lp):] = lp
        return out

    def nll(self, ids, context=None) -> float:
        """Mean negative log-likelihood in nats per character."""
        return float(-self.log_probs(ids, context).mean())


def evaluate(train_ids, val_ids, vocab_size, order=5, k=0.1) -> dict:
    """Fit on train, score val (its first characters see the end of train as context)."""
    m = NGramModel(order, k).fit(train_ids, vocab_size)
    nats = m.nll(val_ids, context=train_ids)
    return {"order": order, "k": k, "val_loss": nats, "bpc": nats / math.log(2),
            "n_train": int(len(train_ids)), "n_val": int(len(val_ids)), "vocab_size": int(vocab_size)}
