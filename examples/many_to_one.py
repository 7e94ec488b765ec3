"""Many-to-one: a sequence classifier for the parity of a bit string.

The whole sequence goes in; only the last hidden state comes out, through a linear layer
to two logits (even, odd) and a softmax cross-entropy loss:

    bits (T, B) -> one-hot -> pack -> RNN / LSTM / GRU -> h_n -> Linear(H, 2) -> softmax

Every sequence in a training batch has its own length, drawn from 1..--train-len: the batch
is padded to the longest with random bits (which would flip the answer if they were read),
packed with pack_padded_sequence, and the layer's h_n holds each sequence's state after its
own last bit, so the network has to work for every length, not a fixed one. Afterwards: accuracy against sequence length, on
every bit string for the trained lengths and on random strings up to 4x longer. Parity is
the classic hard case for a sequence model: flipping any one bit flips the answer, so
nothing short of tracking the whole sequence works.

    python examples/many_to_one.py --quick     # ~10 s: lengths 1..10, 800 steps per cell
    python examples/many_to_one.py             # lengths 1..20, 3000 steps per cell
"""
import argparse
import itertools
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
from tinygrad_rnn.nn.utils.rnn import pack_padded_sequence

LAYERS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class ParityClassifier(nn.Module):
    def __init__(self, cell, hidden):
        super().__init__()
        self.rnn = LAYERS[cell](2, hidden)
        self.head = nn.Linear(hidden, 2)

    def forward(self, bits, lengths=None):
        """bits (T, B) of 0/1, sequence b being bits[:lengths[b], b] (all T without lengths) ->
        logits (B, 2) from each sequence's own final hidden state."""
        T, B = bits.shape
        lengths = [T] * B if lengths is None else lengths
        _, state = self.rnn(pack_padded_sequence(F.one_hot(bits, 2), lengths, enforce_sorted=False))
        h_n = state[0] if isinstance(state, tuple) else state  # the LSTM's is (h_n, c_n)
        return self.head(h_n[-1])


def train(cell, args):
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = ParityClassifier(cell, args.hidden)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    for step in range(args.steps):
        lengths = rng.integers(1, args.train_len + 1, size=args.batch)
        bits = rng.integers(0, 2, size=(int(lengths.max()), args.batch))  # random past each end too
        labels = np.array([bits[:n, b].sum() % 2 for b, n in enumerate(lengths)])
        loss = F.cross_entropy(model(bits, lengths), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def accuracy(model, bits, lengths=None):
    lengths = [bits.shape[0]] * bits.shape[1] if lengths is None else lengths
    labels = np.array([bits[:n, b].sum() % 2 for b, n in enumerate(lengths)])
    with tg.no_grad():
        return float((model(bits, lengths).argmax(-1).numpy() == labels).mean())


def all_bit_strings(T):
    return np.array(list(itertools.product((0, 1), repeat=T)), dtype=np.int64).T


def main(argv=None):
    p = argparse.ArgumentParser(description="many-to-one: parity of a bit string")
    p.add_argument("--quick", action="store_true", help="lengths 1..10, 800 steps per cell (~10 s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.hidden, args.batch, args.lr = 16, 64, 1e-2
    args.train_len, args.steps = (10, 800) if args.quick else (20, 3000)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed + 1)
    test_lengths = sorted({1, 2, 3, 5, args.train_len // 2, args.train_len} | {
        args.train_len + 1, 2 * args.train_len, 3 * args.train_len, 4 * args.train_len})
    exhaustive = min(args.train_len, 12)  # every string of these lengths; random ones above
    res = {"lengths": test_lengths}
    print(f"parity, trained on lengths 1..{args.train_len} ({args.steps} Adam steps, batch {args.batch}, "
          f"hidden {args.hidden}); accuracy by length (all strings up to length {exhaustive}, "
          f"2,000 random ones above):")
    print("  length " + " ".join(f"{T:>6d}" for T in test_lengths))
    for cell in ("rnn", "lstm", "gru"):
        model = train(cell, args)
        accs = [accuracy(model, all_bit_strings(T) if T <= exhaustive else rng.integers(0, 2, size=(T, 2000)))
                for T in test_lengths]
        every = all(accuracy(model, all_bit_strings(T)) == 1.0 for T in range(1, exhaustive + 1))
        lengths = rng.integers(1, args.train_len + 1, size=2000)  # one packed batch of mixed lengths
        mixed = accuracy(model, rng.integers(0, 2, size=(args.train_len, 2000)), lengths)
        res[cell] = {"accuracy": accs, "all_trained_strings_right": every, "mixed": mixed}
        print(f"  {cell:6s} " + " ".join(f"{a:6.1%}" for a in accs) +
              f"   right on every string up to length {exhaustive}: {every}; mixed batch {mixed:.1%}")
    res["seconds"] = time.perf_counter() - t0
    n_strings = 2 ** (exhaustive + 1) - 2
    assert res["lstm"]["all_trained_strings_right"] and res["gru"]["all_trained_strings_right"], \
        f"the LSTM and the GRU should classify all {n_strings} strings of the trained lengths"
    print(f"LSTM and GRU: parity right on all {n_strings} bit strings of lengths 1..{exhaustive} "
          f"({res['seconds']:.1f} s)")
    return res


if __name__ == "__main__":
    main()
