"""A word-level language model: tokens, a vocabulary with <PAD> and <UNK>, padded sliding
windows whose padding the loss ignores, an Embedding layer, and what the embedding learned.

The corpus is made up on the spot from a small grammar ("the red cat sleeps in the
garden .", "a doctor buys the cheese at the market ."), so it is always there and we know
which words play the same part: words that fill the same slots should end up close
together in the embedding space, and the nearest neighbours printed at the end show it.
A few names occur only once; with min_freq=2 they become <UNK>.

    sentence -> tokenize -> WordVocab ids -> windows of j tokens, padded with <PAD>
    ids (j, B) -> Embedding -> LSTM -> Linear -> next-word logits
    loss = cross_entropy(logits, targets, ignore_index=<PAD>)    # padding counts for nothing

    python examples/word_lm.py --quick      # ~15 s
"""
import argparse
import os
import sys
import time

import numpy as np

try:
    import tinygrad_rnn as tg
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim
from tinygrad_rnn.nn import functional as F
from tinygrad_rnn.text import WordVocab, nearest_words, sliding_windows, tokenize

CATEGORIES = {
    "animal": ["cat", "dog", "horse", "bird", "cow", "sheep"],
    "person": ["man", "woman", "boy", "girl", "teacher", "doctor"],
    "food": ["bread", "apple", "cheese", "soup", "rice", "cake"],
    "place": ["park", "garden", "house", "school", "market", "kitchen"],
    "colour": ["red", "blue", "green", "yellow", "black", "white"],
}
TEMPLATES = [
    "the {colour} {animal} sleeps in the {place} .",
    "the {animal} runs to the {place} .",
    "a {person} buys the {food} at the {place} .",
    "the {person} eats {food} with the {person} .",
    "a {person} sees the {colour} {animal} .",
    "the {person} walks to the {place} with a {animal} .",
    "my {animal} likes {food} .",
]
NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


def make_corpus(rng, n):
    """n sentences from the grammar; about 1 in 50 names someone (each name once at most)."""
    names = list(NAMES)
    out = []
    for _ in range(n):
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        sentence = template.format(**{k: v[rng.integers(len(v))] for k, v in CATEGORIES.items()})
        if names and rng.random() < 0.02:
            sentence = f"{names.pop()} says {sentence}"
        out.append(sentence)
    return out


class WordLM(nn.Module):
    def __init__(self, vocab_size, embed=16, hidden=64, pad_id=0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed, padding_idx=pad_id)
        # start the vectors small, N(0, 0.1^2) instead of N(0, 1): otherwise their random
        # starting part outweighs what they learn from the words' contexts, and the nearest
        # neighbours below mostly reflect the initialisation
        nn.init.normal_(self.embed.weight, std=0.1)
        self.embed.weight.data[pad_id] = 0.0
        self.lstm = nn.LSTM(embed, hidden)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids):
        out, _ = self.lstm(self.embed(ids))
        return self.head(out)


def evaluate(model, x, y, pad_id, vocab_size):
    with tg.no_grad():
        return F.cross_entropy(model(x.T).reshape(-1, vocab_size), y.T.reshape(-1), ignore_index=pad_id).item()


def main(argv=None):
    p = argparse.ArgumentParser(description="a word-level LSTM language model and its embeddings")
    p.add_argument("--quick", action="store_true", help="600 steps (~15 s)")
    p.add_argument("--window", type=int, default=6, help="window size j (default 6)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    steps = 600 if args.quick else 3000
    t0 = time.perf_counter()
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    sentences = [tokenize(s) for s in make_corpus(rng, 3000)]
    train, val = sentences[:2700], sentences[2700:]
    vocab = WordVocab.build(train, min_freq=2)
    n_unk = sum(t not in vocab for s in train for t in s)
    print(f"{len(train)} training sentences, {sum(map(len, train))} tokens; vocabulary {len(vocab)} "
          f"(with {vocab.itos[0]} and {vocab.itos[1]}); {n_unk} rare training tokens mapped to {vocab.itos[1]}")
    pad = vocab.pad_id
    x_tr, y_tr = sliding_windows([vocab.encode(s) for s in train], args.window, pad)
    x_va, y_va = sliding_windows([vocab.encode(s) for s in val], args.window, pad)
    print(f"windows of {args.window}: {len(x_tr)} for training; {np.mean(y_tr == pad):.0%} of the target "
          f"slots are {vocab.itos[pad]} padding, which the loss ignores")
    print("  e.g. input  " + " ".join(vocab.decode(x_tr[1])) + "\n       target " + " ".join(vocab.decode(y_tr[1])))

    # a unigram model: the baseline any sequence model should beat
    counts = np.bincount(y_tr[y_tr != pad], minlength=len(vocab)) + 1.0
    unigram = float(-np.mean(np.log(counts / counts.sum())[y_va[y_va != pad]]))

    model = WordLM(len(vocab), pad_id=pad)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for step in range(1, steps + 1):
        idx = rng.integers(0, len(x_tr), size=64)
        xb, yb = x_tr[idx].T, y_tr[idx].T  # time-major (j, B)
        loss = F.cross_entropy(model(xb).reshape(-1, len(vocab)), yb.reshape(-1), ignore_index=pad)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0:
            print(f"step {step:5d}  train loss {loss.item():.3f}")
    val_loss = evaluate(model, x_va, y_va, pad, len(vocab))
    print(f"validation perplexity {np.exp(val_loss):.2f} (unigram baseline {np.exp(unigram):.2f})")

    category = {w: c for c, ws in CATEGORIES.items() for w in ws}
    same = {w: sum(category.get(n) == category[w] for n, _ in nearest_words(vocab, model.embed.weight, w, k=3))
            for w in category}
    print("nearest neighbours in the learned embedding (cosine similarity):")
    for w in ["cat", "teacher", "cheese", "garden", "blue"]:
        near = nearest_words(vocab, model.embed.weight, w, k=3)
        print(f"  {w:8s} -> " + ", ".join(f"{n} ({s:.2f})" for n, s in near) +
              f"   [{same[w]}/3 also {category[w]}s]")
    share = sum(same.values()) / (3 * len(same))
    seconds = time.perf_counter() - t0
    res = {"val_perplexity": float(np.exp(val_loss)), "unigram_perplexity": float(np.exp(unigram)),
           "neighbour_share": share, "seconds": seconds}
    print(f"over all {len(same)} grammar words, {share:.0%} of the 3 nearest neighbours are of the same kind "
          f"(chance: {5 / (len(vocab) - 3):.0%}) ({seconds:.1f} s)")
    assert res["val_perplexity"] < 0.5 * res["unigram_perplexity"], "the LSTM should beat the unigram model"
    assert share >= 0.75, "neighbours should mostly be words of the same kind"
    return res


if __name__ == "__main__":
    main()
