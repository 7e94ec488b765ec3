"""Gradient clipping, shown: one vanilla RNN trained twice, with and without clipping.

The network: a ReLU RNN whose recurrent weights start as the identity (Le, Jaitly and
Hinton's IRNN, 2015), trained by plain SGD on the adding problem (Hochreiter and
Schmidhuber, 1997): a sequence of (value, marker) pairs with exactly two markers set,
and the target is the sum of the two marked values. Predicting the mean, 1.0, scores an
MSE of 1/6; anything lower has learned something.

With ReLU units and W_hh near the identity nothing squashes the backward pass, so the
gradient can grow by orders of magnitude in a single step, and one SGD step along it
throws the weights far away (Pascanu, Mikolov and Bengio, 2013: the "cliffs" of an RNN's
loss surface). Clipping rescales the whole gradient to norm at most 1 whenever it is
larger (nn.utils.clip_grad_norm_), keeping its direction: the same run then trains.

Writes gradient_clipping.png (the two loss curves side by side) where matplotlib is
installed, and prints them as a table always.

    python examples/gradient_clipping.py --quick     # ~10 s
"""
import argparse
import math
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

BASELINE = 1.0 / 6.0  # the MSE of always answering 1.0 (the variance of a sum of two U(0, 1))


def adding_problem(rng, T, batch):
    values = rng.random((T, batch))
    markers = np.zeros((T, batch))
    cols = np.arange(batch)
    markers[rng.integers(0, T // 2, size=batch), cols] = 1.0  # one in each half
    markers[rng.integers(T // 2, T, size=batch), cols] = 1.0
    x = np.stack([values, markers], axis=-1).astype(np.float32)
    return x, (values * markers).sum(0).astype(np.float32)


class IRNN(nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.rnn = nn.RNN(2, hidden, nonlinearity="relu")
        self.rnn.load_state_dict({**self.rnn.state_dict(), "weight_hh_l0": np.eye(hidden, dtype=np.float32),
                                  "bias_ih_l0": np.zeros(hidden, np.float32),
                                  "bias_hh_l0": np.zeros(hidden, np.float32)})
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[-1]).reshape(-1)


def train(clip, args):
    """Losses and gradient norms (before clipping) of every step; the run is cut short when
    the loss stops being a finite number (it can: that is what this example is about)."""
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)  # the same batches in both runs
    model = IRNN(args.hidden)
    opt = optim.SGD(model.parameters(), lr=args.lr)
    losses, norms = [], []
    for step in range(args.steps):
        x, y = adding_problem(rng, args.T, args.batch)
        loss = ((model(tg.tensor(x)) - tg.tensor(y)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        # with max_norm = inf, clip_grad_norm_ only measures
        norm = nn.utils.clip_grad_norm_(model.parameters(), args.max_norm if clip else math.inf,
                                        error_if_nonfinite=False)
        losses.append(loss.item())
        norms.append(norm)
        if not (math.isfinite(losses[-1]) and math.isfinite(norm)):
            break
        opt.step()
    return np.array(losses), np.array(norms)


def plot(curves, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib is not installed: skipping the plot; pip install matplotlib to get {path})")
        return
    fig, ax = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for a, (title, losses) in zip(ax, curves.items()):
        a.semilogy(np.arange(1, len(losses) + 1), losses)
        a.axhline(BASELINE, color="gray", linestyle="--", label="predict the mean")
        a.set(title=title, xlabel="step", ylabel="training MSE")
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description="the same RNN trained with and without gradient clipping")
    p.add_argument("--quick", action="store_true", help="2000 steps per run (~10 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="gradient_clipping.png", help="where the plot goes (with matplotlib)")
    args = p.parse_args(argv)
    args.T, args.hidden, args.batch, args.lr, args.max_norm = 20, 32, 32, 0.03, 1.0
    args.steps = 2000 if args.quick else 8000
    t0 = time.perf_counter()
    print(f"adding problem, T = {args.T}; ReLU RNN with identity W_hh, {args.hidden} units; SGD lr {args.lr}; "
          f"{args.steps} steps of {args.batch}")
    raw_loss, raw_norm = train(False, args)
    clip_loss, clip_norm = train(True, args)

    print("  steps          no clipping: MSE  |grad|      clipped to norm 1: MSE  |grad|")
    edges = [0, 1, 10, 50, 200, 500, 1000, 2000, 4000, 8000]
    for lo, hi in zip(edges, edges[1:]):
        if lo >= args.steps:
            break
        def cell(a):
            part = a[lo:hi]
            return f"{np.mean(part):10.3g}" if len(part) else f"{'-':>10s}"
        print(f"  {lo + 1:5d}-{hi:<5d}  {cell(raw_loss)} {cell(raw_norm)}          {cell(clip_loss)} {cell(clip_norm)}")
    plot({"no clipping": raw_loss, f"clip_grad_norm_(max_norm={args.max_norm})": clip_loss}, args.out)

    last = max(1, args.steps // 10)
    res = {"raw_final_mse": float(np.mean(raw_loss[-last:])), "clip_final_mse": float(np.mean(clip_loss[-last:])),
           "raw_max_mse": float(np.max(raw_loss)), "raw_max_grad_norm": float(np.max(raw_norm)),
           "clip_max_grad_norm": float(np.max(clip_norm)), "baseline_mse": BASELINE,
           "seconds": time.perf_counter() - t0}
    print(f"last {last} steps: MSE {res['raw_final_mse']:.3f} without clipping (largest gradient norm "
          f"{res['raw_max_grad_norm']:.3g}, largest MSE {res['raw_max_mse']:.3g}), {res['clip_final_mse']:.3f} with "
          f"clipping; predicting the mean scores {BASELINE:.3f} ({res['seconds']:.1f} s)")
    assert res["raw_max_grad_norm"] > 1000, "without clipping the gradient should explode"
    assert res["clip_final_mse"] < 0.7 * BASELINE, "with clipping the network should learn the task"
    assert res["clip_final_mse"] < res["raw_final_mse"]
    return res


if __name__ == "__main__":
    main()
