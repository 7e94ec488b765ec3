"""Word-level text: tokens, a vocabulary with <PAD> and <UNK>, padded sliding windows for a
word language model, and nearest neighbours in an embedding space.

    tokens = [tokenize(line) for line in lines]
    vocab = WordVocab.build(tokens, min_freq=2)            # rarer words become <UNK>
    x, y = sliding_windows([vocab.encode(s) for s in tokens], size=8, pad_id=vocab.pad_id)
    loss = F.cross_entropy(logits, y, ignore_index=vocab.pad_id)   # padding counts for nothing
    nearest_words(vocab, model.embed.weight, "cat", k=3)   # [("dog", 0.93), ...]

(`chars.py` beside it holds the character-level counterparts used by the char-LM.)
"""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

PAD = "<PAD>"
UNK = "<UNK>"

__all__ = ["PAD", "UNK", "tokenize", "WordVocab", "sliding_windows", "nearest_words"]

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with an apostrophe suffix: "don't") and single punctuation marks."""
    return _TOKEN.findall(text.lower())


class WordVocab:
    """Words <-> ids. Id 0 is <PAD>, id 1 is <UNK>; then the words, most frequent first.

    Encoding maps any word outside the vocabulary to <UNK>'s id.
    """

    pad_id = 0
    unk_id = 1

    def __init__(self, words):
        words = list(words)
        if PAD in words or UNK in words:
            raise ValueError(f"WordVocab: {PAD} and {UNK} are added by the vocabulary itself; "
                             f"leave them out of the word list")
        if len(set(words)) != len(words):
            dup = next(w for w, n in Counter(words).items() if n > 1)
            raise ValueError(f"WordVocab: the word {dup!r} is listed twice")
        self.itos = [PAD, UNK] + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def build(cls, sentences, min_freq: int = 1, max_size: int | None = None) -> "WordVocab":
        """From token lists (or one flat list of tokens): words seen at least min_freq times,
        most frequent first (ties alphabetically), at most max_size of them (specials not counted)."""
        if min_freq < 1:
            raise ValueError(f"WordVocab.build: min_freq must be >= 1, got {min_freq}")
        counts = Counter()
        for s in sentences:
            counts.update([s] if isinstance(s, str) else s)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        words = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size]
        return cls(words)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, word):
        return word in self.stoi

    def __getitem__(self, word) -> int:
        return self.stoi.get(word, self.unk_id)

    def __repr__(self):
        return f"WordVocab({len(self) - 2} words + {PAD}, {UNK})"

    def encode(self, tokens) -> np.ndarray:
        """Tokens -> int64 ids (unknown words -> <UNK>)."""
        return np.array([self.stoi.get(t, self.unk_id) for t in tokens], dtype=np.int64)

    def decode(self, ids) -> list[str]:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.itos)):
            bad = ids[(ids < 0) | (ids >= len(self.itos))][0]
            raise IndexError(f"WordVocab.decode: id {int(bad)} is out of range for a vocabulary of {len(self)}")
        return [self.itos[i] for i in ids.tolist()]


def sliding_windows(sequences, size: int, pad_id: int, step: int | None = None):
    """Next-word windows that never cross a sequence boundary: (inputs, targets), each (N, size).

    Window k of a sequence s starts at k*step (step defaults to size): inputs are
    s[start : start+size] and targets s[start+1 : start+size+1], both padded on the right
    with pad_id where the sequence runs out. A loss with ignore_index=pad_id then counts
    every real next-word prediction exactly once (with step == size) and padding never.
    sequences: one 1-D id array or a list of them.
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"sliding_windows: size must be a positive int, got {size!r}")
    step = size if step is None else step
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"sliding_windows: step must be a positive int, got {step!r}")
    if isinstance(sequences, np.ndarray) and sequences.ndim == 1:
        sequences = [sequences]
    xs, ys = [], []
    for seq in sequences:
        seq = np.asarray(seq, dtype=np.int64).reshape(-1)
        padded = np.concatenate([seq, np.full(size + 1, pad_id, dtype=np.int64)])
        for start in range(0, max(len(seq) - 1, 0), step):  # a window needs a next word to predict
            xs.append(padded[start:start + size])
            ys.append(padded[start + 1:start + size + 1])
    if not xs:
        empty = np.zeros((0, size), dtype=np.int64)
        return empty, empty.copy()
    return np.stack(xs), np.stack(ys)


def nearest_words(vocab: WordVocab, vectors, word: str, k: int = 5) -> list[tuple[str, float]]:
    """The k words whose vectors (rows of `vectors`, e.g. an Embedding's weight) have the
    highest cosine similarity to `word`'s, with the similarities; <PAD>, <UNK> and the word
    itself are left out."""
    if word not in vocab:
        raise KeyError(f"nearest_words: {word!r} is not in the vocabulary")
    m = vectors.numpy() if hasattr(vectors, "numpy") else np.asarray(vectors)
    if m.ndim != 2 or m.shape[0] != len(vocab):
        raise ValueError(f"nearest_words: vectors must have one row per vocabulary entry ({len(vocab)}), "
                         f"got shape {m.shape}")
    unit = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
    i = vocab.stoi[word]
    sims = unit @ unit[i]
    order = [j for j in np.argsort(-sims, kind="stable") if j not in (i, vocab.pad_id, vocab.unk_id)]
    return [(vocab.itos[j], float(sims[j])) for j in order[:k]]
