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


def length_penalty(n, alpha) -> float:
    """GNMT's length penalty (Wu et al., 2016): lp(n) = ((5 + n) / 6) ** alpha. A beam search with
    length normalisation ranks finished hypotheses by log P / lp(|Y|); alpha = 0 is the plain sum
    of log-probabilities, larger alpha favours longer hypotheses (alpha = 1 is close to the mean)."""
    return ((5.0 + n) / 6.0) ** alpha


def log_softmax_rows(logits) -> np.ndarray:
    """log softmax over the last axis, in float64 on the host."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class BeamSearch:
    """The host side of a beam search over characters: which hypotheses live on, and which ended.

    Each step extends every live hypothesis by every character and keeps the `width` best by
    their summed log-probability (ties to the lower parent, then the lower id, so width 1 is
    greedy decoding); a hypothesis whose new character is `stop` ends there, and the `width`
    best ended ones are kept by their score normalised with length_penalty(alpha). All
    hypotheses that run to the full length have the same length, so alpha only matters
    when `stop` lets them end early.
    """

    def __init__(self, width, alpha=0.0, stop=None):
        if int(width) != width or width < 1:
            raise ValueError(f"beam width must be a positive integer, got {width}")
        if alpha is None or not np.isfinite(alpha) or alpha < 0:
            raise ValueError(f"length normalisation alpha must be a non-negative number, got {alpha}")
        self.width, self.alpha, self.stop = int(width), float(alpha), stop
        self.scores = np.zeros(1)   # summed log-probabilities of the live hypotheses
        self.seqs = [[]]
        self.ended = []             # (normalised score, log-probability, ids), the best first

    def step(self, logp):
        """logp: (live hypotheses, V) log-probabilities of their next character. Returns (parents,
        ids): the row of the live hypotheses each kept one extends and its new character (the
        recurrent state is reordered by parents), or None when no hypothesis is left alive."""
        cand = self.scores[:, None] + np.asarray(logp, dtype=np.float64)
        V = cand.shape[1]
        parents, ids, scores = [], [], []
        for flat in np.argsort(-cand, axis=None, kind="stable"):
            p, c = divmod(int(flat), V)
            if c == self.stop:
                self._end(cand[p, c], self.seqs[p] + [c])
                continue
            parents.append(p)
            ids.append(c)
            scores.append(cand[p, c])
            if len(parents) == self.width:
                break
        if not parents:
            return None
        self.seqs = [self.seqs[p] + [c] for p, c in zip(parents, ids)]
        self.scores = np.array(scores)
        return np.array(parents, dtype=np.int64), np.array(ids, dtype=np.int64)

    def _end(self, logp, seq):
        self.ended.append((float(logp) / length_penalty(len(seq), self.alpha), float(logp), seq))
        self.ended.sort(key=lambda e: -e[0])  # stable: among equals the first ended stays first
        del self.ended[self.width:]

    def results(self):
        """Every kept hypothesis, ended or still live, as (normalised score, log-probability, ids),
        the best first."""
        live = [(float(s) / length_penalty(len(q), self.alpha), float(s), q) for s, q in zip(self.scores, self.seqs)
                if q]
        return sorted(self.ended + live, key=lambda e: -e[0])
