"""tinygrad_rnn.text.words: tokenizer, WordVocab, padded sliding windows (with the loss ignoring
the padding), nearest neighbours."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.text import PAD, UNK, WordVocab, nearest_words, sliding_windows, tokenize


def test_tokenize():
    assert tokenize("The cat, the DOG; don't stop!") == ["the", "cat", ",", "the", "dog", ";", "don't", "stop", "!"]
    assert tokenize("") == []


def test_vocab_order_specials_unknowns():
    sents = [["b", "a", "c"], ["a", "b", "a"], ["rare"]]
    v = WordVocab.build(sents)
    assert v.itos == [PAD, UNK, "a", "b", "c", "rare"]
    assert (v.pad_id, v.unk_id) == (0, 1)
    v2 = WordVocab.build(sents, min_freq=2)
    assert v2.itos == [PAD, UNK, "a", "b"]
    assert v2.encode(["a", "c", "zebra"]).tolist() == [2, 1, 1]
    assert v2["c"] == v2.unk_id and "c" not in v2
    assert v2.decode([2, 3, 0]) == ["a", "b", PAD]
    assert WordVocab.build(sents, max_size=1).itos == [PAD, UNK, "a"]
    assert WordVocab.build(["x", "y", "x"]).itos == [PAD, UNK, "x", "y"]  # a flat token list works too


def test_vocab_errors():
    with pytest.raises(ValueError, match="added by the vocabulary itself"):
        WordVocab([PAD, "a"])
    with pytest.raises(ValueError, match="listed twice"):
        WordVocab(["a", "a"])
    with pytest.raises(IndexError, match="id 9 is out of range for a vocabulary of 3"):
        WordVocab(["a"]).decode([9])
    with pytest.raises(ValueError, match="min_freq must be >= 1"):
        WordVocab.build([["a"]], min_freq=0)


def test_sliding_windows_pad_and_never_cross_sequences():
    x, y = sliding_windows([np.array([5, 6, 7, 8, 9]), np.array([3, 4])], size=3, pad_id=0)
    assert x.tolist() == [[5, 6, 7], [8, 9, 0], [3, 4, 0]]
    assert y.tolist() == [[6, 7, 8], [9, 0, 0], [4, 0, 0]]
    x, y = sliding_windows(np.array([1, 2, 3, 4]), size=2, pad_id=0, step=1)
    assert x.tolist() == [[1, 2], [2, 3], [3, 4]]
    assert y.tolist() == [[2, 3], [3, 4], [4, 0]]
    x, y = sliding_windows([np.array([7])], size=4, pad_id=0)  # nothing to predict
    assert x.shape == (0, 4) and y.shape == (0, 4)
    with pytest.raises(ValueError, match="size must be a positive int"):
        sliding_windows([np.array([1, 2])], size=0, pad_id=0)


def test_every_real_next_word_counted_once_and_padding_never():
    rng = np.random.default_rng(0)
    seqs = [rng.integers(2, 9, size=n) for n in (1, 2, 5, 7, 12)]
    x, y = sliding_windows(seqs, size=4, pad_id=0)
    real = sorted(int(t) for s in seqs for t in s[1:])
    assert sorted(y[y != 0].tolist()) == real
    # the loss with ignore_index averages over exactly those targets
    logits = tg.tensor(rng.standard_normal((y.size, 9)), dtype=tg.float64)
    lp = logits.numpy() - np.log(np.exp(logits.numpy()).sum(1, keepdims=True))
    flat = y.reshape(-1)
    want = -lp[np.arange(flat.size), flat][flat != 0].mean()
    got = F.cross_entropy(logits, flat, ignore_index=0).item()
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_nearest_words():
    v = WordVocab(["cat", "dog", "car", "bus"])
    vecs = np.array([[5, 5], [9, 9], [1, 0], [0.9, 0.1], [0, 1], [0.1, 1]], dtype=float)
    assert [w for w, _ in nearest_words(v, vecs, "cat", k=2)] == ["dog", "bus"]
    (w, s), = nearest_words(v, tg.tensor(vecs), "car", k=1)
    assert w == "bus" and s == pytest.approx(np.dot([0, 1], [0.1, 1]) / np.linalg.norm([0.1, 1]))
    with pytest.raises(KeyError, match="'emu' is not in the vocabulary"):
        nearest_words(v, vecs, "emu")
    with pytest.raises(ValueError, match="one row per vocabulary entry"):
        nearest_words(v, vecs[:3], "cat")
