"""Many-to-many, synced: one tag per input token, where the right tag needs both sides.

The task: a random bit string x_1..x_n; the tag of position t is x_{t-1} XOR x_{t+1}
(a missing neighbour counts as 0). A left-to-right network at step t has seen x_{t-1}
but not x_{t+1}, which is an independent fair coin, so at every position but the last
(where x_{n+1} = 0 is known) it can do no better than guessing: its best possible
accuracy is ((n - 1) * 1/2 + 1) / n. A bidirectional network reads the string both ways
and concatenates the two states at each position, so both neighbours are in view.

The strings in a batch have mixed lengths n in 1..T, padded with random bits: packed
(pack_padded_sequence), the backward direction starts at each string's own end, where
x_{n+1} = 0, not in the padding; the outputs are padded back (pad_packed_sequence) and the
loss skips the padding (ignore_index).

    bits (T, B) -> one-hot -> pack -> LSTM (one way, or both ways) -> pad -> MLP -> a tag per step

The one-way model gets twice the hidden units, so it is not smaller than the two-way one.

    python examples/bidirectional_tagger.py --quick     # ~10 s
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
from tinygrad_rnn.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD = -1  # the tag of a padding position, which the loss skips


def make_batch(rng, T, batch):
    """bits (T, batch) (random in the padding too), tags (T, batch) (PAD in the padding), lengths."""
    lengths = rng.integers(1, T + 1, size=batch)
    x = rng.integers(0, 2, size=(T, batch))
    inside = np.arange(T)[:, None] < lengths[None, :]
    real = np.pad(np.where(inside, x, 0), ((1, 1), (0, 0)))  # x_0 = x_{n+1} = 0
    return x, np.where(inside, real[:-2] ^ real[2:], PAD), lengths


class Tagger(nn.Module):
    def __init__(self, hidden, bidirectional):
        super().__init__()
        self.lstm = nn.LSTM(2, hidden, bidirectional=bidirectional)
        # XOR of something only the forward state knows and something only the backward
        # state knows is not linear in the two: the head needs a hidden layer
        self.head = nn.Sequential(nn.Linear(hidden * (2 if bidirectional else 1), hidden), nn.Tanh(),
                                  nn.Linear(hidden, 2))

    def forward(self, bits, lengths):
        packed = pack_padded_sequence(F.one_hot(bits, 2), lengths, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, total_length=bits.shape[0])  # (T, B, H) or (T, B, 2H)
        return self.head(out)


def train_and_test(bidirectional, args):
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Tagger(args.hidden if bidirectional else 2 * args.hidden, bidirectional)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    for step in range(args.steps):
        x, tags, lengths = make_batch(rng, args.T, args.batch)
        loss = F.cross_entropy(model(x, lengths).reshape(-1, 2), tags.reshape(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, tags, lengths = make_batch(np.random.default_rng(args.seed + 1), args.T, 4000)
    with tg.no_grad():
        pred = model(x, lengths).argmax(-1).numpy()
    inside = tags != PAD
    last = np.arange(args.T)[:, None] == lengths[None, :] - 1
    return float((pred == tags)[inside].mean()), float((pred == tags)[last].mean())


def main(argv=None):
    p = argparse.ArgumentParser(description="a bidirectional tagger on a task that needs both sides")
    p.add_argument("--quick", action="store_true", help="400 steps per model (~10 s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.T, args.hidden, args.batch, args.lr = 16, 16, 32, 1e-2
    args.steps = 400 if args.quick else 1500
    t0 = time.perf_counter()
    # the one-way best: a coin toss at every position but each string's last (the same test strings)
    n = make_batch(np.random.default_rng(args.seed + 1), args.T, 4000)[2]
    ceiling = float(((n - 1) * 0.5 + 1).sum() / n.sum())
    print(f"tag_t = x_(t-1) XOR x_(t+1) on strings of 1..{args.T} bits; {args.steps} Adam steps per model; "
          f"accuracy on 4,000 new strings:")
    uni, uni_last = train_and_test(False, args)
    bi, bi_last = train_and_test(True, args)
    print(f"  unidirectional LSTM ({2 * args.hidden} units): {uni:6.1%}   (best possible one-way: {ceiling:.1%}; "
          f"last position {uni_last:.1%})")
    print(f"  bidirectional LSTM  ({args.hidden}+{args.hidden} units): {bi:6.1%}")
    seconds = time.perf_counter() - t0
    res = {"unidirectional": uni, "bidirectional": bi, "one_way_ceiling": ceiling, "seconds": seconds}
    assert bi >= 0.99, "the bidirectional tagger should get (nearly) every tag"
    assert uni <= ceiling + 0.02, "no one-way tagger can beat the ceiling (beyond sampling noise)"
    print(f"bidirectional {bi:.1%} vs unidirectional {uni:.1%} (ceiling {ceiling:.1%}) ({seconds:.1f} s)")
    return res


if __name__ == "__main__":
    main()
