"""Drawing the next character from a model's logits, on the host.

The logits of one step are a vector of V numbers, so moving them to the host costs
nothing next to the step itself, and a NumPy Generator there makes sampling
reproducible from a seed on every device.
"""
from __future__ import annotations

import numpy as np


def next_distribution(logits, temperature=1.0, top_k=None, top_p=None) -> np.ndarray:
    """The probabilities sampling draws from: softmax(logits / T) kept to the top k and then
    to the nucleus of mass top_p (the fewest likeliest entries whose probabilities add up to
    at least top_p; top_p=1 keeps all), renormalised.

    temperature=0 (or top_k=1) puts all the mass on the argmax. Ties at the k-th largest
    logit are broken toward the lower id, so exactly k entries stay non-zero; the nucleus
    breaks ties the same way.
    """
    logits = np.asarray(logits, dtype=np.float64).reshape(-1)
    V = logits.shape[0]
    if temperature is None or temperature < 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a non-negative number, got {temperature}")
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k}")
    if top_p is not None and not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if temperature == 0 or top_k == 1:
        p = np.zeros(V)
        p[int(np.argmax(logits))] = 1.0
        return p
    z = logits / temperature
    if top_k is not None and top_k < V:
        keep = np.argsort(-z, kind="stable")[: int(top_k)]
        masked = np.full(V, -np.inf)
        masked[keep] = z[keep]
        z = masked
    z = z - z.max()
    p = np.exp(z)
    p = p / p.sum()
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, kind="stable")
        c = np.cumsum(p[order])
        n = int(np.searchsorted(c, top_p, side="left")) + 1  # the fewest whose mass reaches top_p
        kept = np.zeros(V)
        kept[order[:n]] = p[order[:n]]
        p = kept / kept.sum()
    return p


def sample_next(logits, rng: np.random.Generator, temperature=1.0, top_k=None, top_p=None) -> int:
    """One id drawn from next_distribution(...) with `rng`."""
    p = next_distribution(logits, temperature, top_k, top_p)
    # inverse-CDF with one uniform draw: the same rng state gives the same id everywhere
    c = np.cumsum(p)
    return int(min(np.searchsorted(c, rng.random() * c[-1], side="right"), len(p) - 1))
