"""A gradient penalty trained through an LSTM: double backward through nn.LSTM.

A many-to-one LSTM classifier (the sign of the sum of a sequence) is trained twice on the
same data, once on the cross-entropy alone and once with the penalty
lambda * mean_i ||d loss_i / d x_i||^2, the squared norm of each example's loss gradient with
respect to its input sequence (input-gradient regularisation, as in WGAN-GP and double backpropagation,
Drucker & LeCun 1992). The penalty is itself a gradient, so training on it differentiates
backward: tg.autograd.grad(..., create_graph=True) through the whole-sequence LSTM op,
which PyTorch's cuDNN LSTM cannot do. The penalised model ends with a much smaller input
gradient (it is smoother in its input) at a similar accuracy.

    python examples/gradient_penalty.py --quick
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
from tinygrad_rnn.nn import functional as F


def make_data(n, T, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, n, 1))
    y = (x.sum(axis=(0, 2)) > 0).astype(np.int64)
    return tg.tensor(x, dtype=tg.float64), y


def run(penalty, steps, x, y, x_test, y_test, seed=0):
    tg.manual_seed(seed)
    lstm, head = nn.LSTM(1, 16, dtype=tg.float64), nn.Linear(16, 2, dtype=tg.float64)
    params = list(lstm.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=1e-2)

    def loss_and_input_grad(x, y, create_graph):
        x = x.detach().requires_grad_()
        out, _ = lstm(x)
        logits = head(out[-1])
        loss = F.nll_loss(F.log_softmax(logits, -1), y)  # twice-differentiable form of cross-entropy
        (gx,) = tg.autograd.grad(loss, x, create_graph=create_graph, retain_graph=True)
        return loss, gx

    for _ in range(steps):
        loss, gx = loss_and_input_grad(x, y, create_graph=penalty > 0)
        n = x.shape[1]  # gx holds d(mean loss)/dx = d loss_i/dx_i / n: per example, times n
        total = loss + penalty * n * (gx * gx).sum() if penalty > 0 else loss
        opt.zero_grad()
        total.backward()
        opt.step()
    loss, gx = loss_and_input_grad(x_test, y_test, create_graph=False)
    with tg.no_grad():
        out, _ = lstm(x_test)
        acc = float((head(out[-1]).numpy().argmax(-1) == y_test).mean())
    per_example = float(np.sqrt(x_test.shape[1] * np.sum(gx.numpy() ** 2)))  # RMS of ||d loss_i / d x_i||
    return {"loss": loss.item(), "input_grad_norm": per_example, "accuracy": acc}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--penalty", type=float, default=1.0, help="lambda")
    args = ap.parse_args(argv)
    steps = 80 if args.quick else args.steps
    x, y = make_data(64, 10, 0)
    x_test, y_test = make_data(256, 10, 1)
    plain = run(0.0, steps, x, y, x_test, y_test)
    pen = run(args.penalty, steps, x, y, x_test, y_test)
    print(f"LSTM, sign of a sum over 10 steps, {steps} Adam steps; on 256 test sequences:")
    for name, r in (("cross-entropy", plain), (f"+ {args.penalty:g} ||dL_i/dx_i||^2", pen)):
        print(f"  {name:<24} loss {r['loss']:.3f}  accuracy {r['accuracy']:.3f}  "
              f"RMS ||dL_i/dx_i|| {r['input_grad_norm']:.4f}")
    assert pen["input_grad_norm"] < 0.5 * plain["input_grad_norm"], "the penalty should shrink the input gradient"
    assert pen["accuracy"] >= 0.8
    return {"plain": plain, "penalty": pen}


if __name__ == "__main__":
    main()
