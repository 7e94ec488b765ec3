"""Minimal character-level vanilla RNN language model, on tinygrad_rnn.

Andrej Karpathy's min-char-rnn (https://gist.github.com/karpathy/d4dee566867f8291f086),
rebuilt on the engine: the same model, sizes and training (hidden 100, 25 steps of
truncated BPTT, Adagrad with lr 0.1, gradients clipped to [-5, 5]), but the
hand-written backward pass is gone. The forward loop over 25 timesteps records the
graph, and loss.backward() is the backpropagation through time.

    python examples/min_char_rnn.py                       # a few stdlib modules as text
    python examples/min_char_rnn.py --data input.txt --steps 20000 --device cuda
"""
import argparse
import math
import os
import sysconfig
import time

import sys

import numpy as np

try:
    import tinygrad_rnn as tg
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_rnn as tg
import tinygrad_rnn.nn.functional as F


def default_text():
    """Some Python standard library source: text that is always there, no download."""
    stdlib = sysconfig.get_paths()["stdlib"]
    parts = []
    for name in ("textwrap.py", "fnmatch.py", "glob.py", "bisect.py", "colorsys.py"):
        try:
            with open(os.path.join(stdlib, name), encoding="utf-8") as f:
                parts.append(f.read())
        except OSError:
            pass
    if not parts:  # a stripped-down Python: fall back to this very file
        with open(__file__, encoding="utf-8") as f:
            parts.append(f.read())
    return "".join(parts)


def init_params(vocab_size, hidden_size=100, dtype=None, device=None):
    """Wxh, Whh, Why ~ N(0, 0.01^2) and zero biases, as in the original."""
    def weight(*shape):
        return tg.nn.Parameter(tg.randn(*shape, dtype=dtype, device=device) * 0.01)

    def zero(*shape):
        return tg.nn.Parameter(tg.zeros(*shape, dtype=dtype, device=device))
    return {"Wxh": weight(hidden_size, vocab_size), "Whh": weight(hidden_size, hidden_size),
            "Why": weight(vocab_size, hidden_size), "bh": zero(hidden_size), "by": zero(vocab_size)}


def loss_fun(params, inputs, targets, hprev):
    """Summed cross-entropy of the targets, and the last hidden state (still in the graph).

    inputs, targets: lists of character indices; hprev: the (hidden,) state to start from.
    """
    Wxh, Whh, Why, bh, by = (params[k] for k in ("Wxh", "Whh", "Why", "bh", "by"))
    xs = F.one_hot(inputs, Wxh.shape[1], dtype=Wxh.dtype, device=Wxh.device)  # (T, vocab)
    h, hs = hprev, []
    for xw in (xs @ Wxh.T).unbind(0):  # Wxh @ x_t for every t in one matmul, cut into steps by one node
        h = (xw + Whh @ h + bh).tanh()
        hs.append(h)
    ys = tg.stack(hs) @ Why.T + by  # (T, vocab): unnormalised log-probabilities of the next chars
    return F.cross_entropy(ys, targets, reduction="sum"), h


def sample(params, h, seed_ix, n, rng):
    """n character indices drawn from the model, starting from state h after char seed_ix."""
    Wxh, Whh, Why, bh, by = (params[k] for k in ("Wxh", "Whh", "Why", "bh", "by"))
    vocab, ixes, ix = Wxh.shape[1], [], seed_ix
    with tg.no_grad():
        for _ in range(n):
            x = F.one_hot(ix, vocab, dtype=Wxh.dtype, device=Wxh.device)
            h = (Wxh @ x + Whh @ h + bh).tanh()
            p = (Why @ h + by).softmax(-1).numpy().astype(np.float64)
            ix = int(rng.choice(vocab, p=p / p.sum()))
            ixes.append(ix)
    return ixes


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="a UTF-8 text file (default: a few Python stdlib modules)")
    ap.add_argument("--steps", type=int, default=10_000, help="training steps of 25 characters (default 10000)")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--seq-length", type=int, default=25)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--sample-every", type=int, default=1000, help="print a 200-character sample every N steps")
    ap.add_argument("--print-every", type=int, default=100, help="print the smoothed loss every N steps")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or strict")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.data:
        with open(args.data, encoding="utf-8") as f:
            data = f.read()
    else:
        data = default_text()
    seq_length = args.seq_length
    if len(data) < seq_length + 2:
        raise SystemExit(f"min_char_rnn: the text has {len(data)} characters; it needs at least {seq_length + 2}")
    chars = sorted(set(data))
    vocab_size = len(chars)
    char_to_ix = {ch: i for i, ch in enumerate(chars)}
    ix_to_char = dict(enumerate(chars))
    print(f"data has {len(data)} characters, {vocab_size} unique.")

    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    dtype = tg.float32 if args.dtype == "float32" else tg.float64
    params = init_params(vocab_size, args.hidden, dtype=dtype, device=args.device)
    plist = list(params.values())
    # PyTorch's Adagrad adds eps after the square root; the original adds 1e-8 inside it
    opt = tg.optim.Adagrad(plist, lr=args.lr, eps=1e-8)

    smooth_loss = -math.log(1.0 / vocab_size) * seq_length  # the loss at iteration 0
    history = [(0, smooth_loss, smooth_loss)]
    p, hprev = 0, None
    start = time.perf_counter()
    for n in range(args.steps):
        if p + seq_length + 1 >= len(data) or n == 0:
            hprev = tg.zeros(args.hidden, dtype=dtype, device=args.device)  # reset the memory
            p = 0  # go from the start of the data
        inputs = [char_to_ix[ch] for ch in data[p:p + seq_length]]
        targets = [char_to_ix[ch] for ch in data[p + 1:p + seq_length + 1]]

        if args.sample_every and n % args.sample_every == 0:
            txt = "".join(ix_to_char[ix] for ix in sample(params, hprev, inputs[0], 200, rng))
            print(f"----\n {txt} \n----")

        loss, hprev = loss_fun(params, inputs, targets, hprev)
        opt.zero_grad()
        loss.backward()  # BPTT through the 25 steps
        tg.nn.utils.clip_grad_value_(plist, 5)  # mitigate exploding gradients
        opt.step()
        hprev = hprev.detach()  # carry the state into the next chunk, but not the graph

        loss_value = loss.item()
        smooth_loss = smooth_loss * 0.999 + loss_value * 0.001
        history.append((n + 1, smooth_loss, loss_value))
        if args.print_every and n % args.print_every == 0:
            print(f"iter {n}, loss: {smooth_loss:f}")
        p += seq_length

    wall = time.perf_counter() - start
    print(f"{args.steps} steps in {wall:.1f} s ({1e3 * wall / max(args.steps, 1):.2f} ms/step); smoothed loss "
          f"{history[0][1]:.2f} -> {smooth_loss:.2f} (last chunk {history[-1][2]:.2f})")
    return history


if __name__ == "__main__":
    main()
