"""The largest Hessian eigenvalue of a GRU language model's loss, by power iteration.

Trains a small character-level GRU language model (Python source), then estimates the
largest eigenvalue of the Hessian of its loss with respect to all the weights (the
sharpness of the minimum, which bounds the stable learning rate of gradient descent at
2 / lambda_max) without ever forming the Hessian: power iteration on Hessian-vector
products, each one the vjp of the gradient (tg.func.hvp; double backward through the
recurrent layer). The estimate is checked against the Rayleigh quotient v^T H v / v^T v
of its own vector and, for a tiny model, against the exact eigenvalue of the full
Hessian built with tg.func.hessian.

    python examples/hessian_eigenvalue.py --quick
"""
import argparse
import os
import sys

import numpy as np

try:
    import tinygrad_rnn as tg
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim
from tinygrad_rnn.text import CharVocab, stdlib_text
from tinygrad_rnn.nn import functional as F


class TinyLM(nn.Module):
    def __init__(self, vocab, hidden, embed=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed, dtype=tg.float64)
        self.rnn = nn.GRU(embed, hidden, dtype=tg.float64)
        self.head = nn.Linear(hidden, vocab, dtype=tg.float64)

    def loss(self, ids, targets):
        out, _ = self.rnn(self.embed(ids))
        logits = self.head(out).reshape(-1, self.head.out_features)
        # nll_loss(log_softmax): the loss written from ops that differentiate twice
        return F.nll_loss(F.log_softmax(logits, -1), targets.reshape(-1))


def functional_loss(model, ids, targets):
    """The loss as a function of one flat weight vector (what tg.func differentiates)."""
    params = list(model.parameters())
    shapes = [p.shape for p in params]
    sizes = [int(np.prod(s)) for s in shapes]
    names = [n for n, _ in model.named_parameters()]

    def f(w):
        pieces, start = [], 0
        for s, n in zip(shapes, sizes):
            pieces.append(w[start:start + n].reshape(*s))
            start += n
        return functional_forward(model, names, pieces, ids, targets)
    flat = tg.concat([p.detach().reshape(-1) for p in params])
    return f, flat


def functional_forward(model, names, pieces, ids, targets):
    p = dict(zip(names, pieces))
    x = F.embedding(ids, p["embed.weight"])
    rnn = model.rnn
    res = rnn.kind.sequence.apply(x, p["rnn.weight_ih_l0"], p["rnn.weight_hh_l0"], p["rnn.bias_ih_l0"],
                                  p["rnn.bias_hh_l0"], None, None)
    logits = F.linear(res[0], p["head.weight"], p["head.bias"]).reshape(-1, model.head.out_features)
    return F.nll_loss(F.log_softmax(logits, -1), targets.reshape(-1))


def power_iteration(f, w, iters, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(w.shape)
    v /= np.linalg.norm(v)
    lam = 0.0
    for _ in range(iters):
        _, (hv,) = tg.func.hvp(f, (w,), (tg.tensor(v, dtype=tg.float64),))
        hv = hv.numpy()
        lam = float(v @ hv)  # the Rayleigh quotient of the current unit vector
        v = hv / np.linalg.norm(hv)
    return lam, v


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a smaller model, fewer steps")
    ap.add_argument("--hidden", type=int, default=24)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--iters", type=int, default=30, help="power iterations")
    args = ap.parse_args(argv)
    embed = 8
    text = stdlib_text(max_chars=20_000)
    if args.quick:  # lower-case letters only: a small vocabulary, so the full Hessian is cheap to check
        args.hidden, args.steps, args.iters, embed = 6, 60, 20, 4
        text = "".join(c for c in text.lower() if c in "abcdefghijklmnopqrstuvwxyz _.\n")
    tg.manual_seed(0)
    vocab = CharVocab.from_text(text)
    ids = np.asarray(vocab.encode(text), dtype=np.int64)
    T, B = 32, 8
    model = TinyLM(len(vocab), args.hidden, embed)
    opt = optim.Adam(list(model.parameters()), lr=1e-2)
    rng = np.random.default_rng(0)

    def batch():
        starts = rng.integers(0, len(ids) - T - 1, B)
        x = np.stack([ids[s:s + T] for s in starts], axis=1)
        y = np.stack([ids[s + 1:s + T + 1] for s in starts], axis=1)
        return tg.tensor(x), tg.tensor(y)

    for step in range(args.steps):
        x, y = batch()
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch()
    f, w = functional_loss(model, x, y)
    lam, v = power_iteration(f, w, args.iters)
    _, (hv,) = tg.func.hvp(f, (w,), (tg.tensor(v, dtype=tg.float64),))
    rayleigh = float(v @ hv.numpy())
    print(f"GRU LM ({w.shape[0]} weights) after {args.steps} Adam steps: loss {f(w).item():.3f} nats/char")
    print(f"largest Hessian eigenvalue by {args.iters} power iterations on HVPs: {lam:.4f} "
          f"(Rayleigh quotient of its vector {rayleigh:.4f}); stable GD step < 2/lambda = {2 / lam:.4f}")
    res = {"lambda": lam, "rayleigh": rayleigh, "n_weights": int(w.shape[0])}
    if args.quick or w.shape[0] <= 1500:
        H = tg.func.hessian(f)(w).numpy()
        exact = float(np.max(np.abs(np.linalg.eigvalsh(0.5 * (H + H.T)))))
        print(f"exact largest |eigenvalue| of the full {H.shape[0]}x{H.shape[0]} Hessian: {exact:.4f}")
        res["exact"] = exact
        assert abs(abs(lam) - exact) <= 1e-3 * exact, "power iteration did not find the largest eigenvalue"
    assert abs(lam - rayleigh) <= 1e-6 * abs(lam), "the power iteration has not converged"
    return res


if __name__ == "__main__":
    main()
