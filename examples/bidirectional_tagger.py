"""Many-to-many, synced: one tag per input token, where the right tag needs both sides.

The task: a random bit string x_1..x_T; the tag of position t is x_{t-1} XOR x_{t+1}
(a missing neighbour counts as 0). A left-to-right network at step t has seen x_{t-1}
but not x_{t+1}, which is an independent fair coin, so at every position but the last
(where x_{T+1} = 0 is known) it can do no better than guessing: its best possible
accuracy is ((T - 1) * 1/2 + 1) / T. A bidirectional network reads the string both ways
and concatenates the two states at each position, so both neighbours are in view.

    bits (T, B) -> one-hot -> LSTM (one way, or both ways) -> MLP -> a tag per step

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


def make_batch(rng, T, batch):
    x = rng.integers(0, 2, size=(T, batch))
    padded = np.pad(x, ((1, 1), (0, 0)))  # x_0 = x_{T+1} = 0
    return x, padded[:-2] ^ padded[2:]


class Tagger(nn.Module):
    def __init__(self, hidden, bidirectional):
        super().__init__()
        self.lstm = nn.LSTM(2, hidden, bidirectional=bidirectional)
        # XOR of something only the forward state knows and something only the backward
        # state knows is not linear in the two: the head needs a hidden layer
        self.head = nn.Sequential(nn.Linear(hidden * (2 if bidirectional else 1), hidden), nn.Tanh(),
                                  nn.Linear(hidden, 2))

    def forward(self, bits):
        out, _ = self.lstm(F.one_hot(bits, 2))  # (T, B, H) or (T, B, 2H): both directions per step
        return self.head(out)


def train_and_test(bidirectional, args):
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = Tagger(args.hidden if bidirectional else 2 * args.hidden, bidirectional)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    for step in range(args.steps):
        x, tags = make_batch(rng, args.T, args.batch)
        loss = F.cross_entropy(model(x).reshape(-1, 2), tags.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, tags = make_batch(np.random.default_rng(args.seed + 1), args.T, 4000)
    with tg.no_grad():
        pred = model(x).argmax(-1).numpy()
    return float((pred == tags).mean()), float((pred == tags).mean(axis=1)[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description="a bidirectional tagger on a task that needs both sides")
    p.add_argument("--quick", action="store_true", help="400 steps per model (~10 s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.T, args.hidden, args.batch, args.lr = 16, 16, 32, 1e-2
    args.steps = 400 if args.quick else 1500
    t0 = time.perf_counter()
    ceiling = ((args.T - 1) * 0.5 + 1) / args.T
    print(f"tag_t = x_(t-1) XOR x_(t+1) on {args.T}-bit strings; {args.steps} Adam steps per model; "
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
