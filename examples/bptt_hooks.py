"""Backpropagation through time, watched with tensor hooks.

A vanilla RNN cell and an LSTM cell each run over the same random sequence, one step at
a time, and a hook on every step's hidden state h_t records the norm of the gradient
that reaches it, ||dL/dh_t||, where L is a loss on the last step only. Read from the
last step back, the trace is BPTT itself: the gradient enters at t = T - 1 and every step
back multiplies it by that step's Jacobian. The RNN's shrinks geometrically (each step
multiplies by W_hh^T diag(tanh')); the LSTM's falls much more slowly (its cell state
passes the gradient back through the forget gates alone, here with forget bias 1).

The hooks' numbers are checked against tg.autograd.grad of L with respect to every h_t.
Prints the trace as a table; writes bptt_hooks.png where matplotlib is installed.

    python examples/bptt_hooks.py --quick        # T = 30, a second
    python examples/bptt_hooks.py --steps 100 --out trace.png
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
from tinygrad_rnn import nn


def trace(cell, xs, lstm):
    """Run the cell over xs with a hook on each h_t: (norms by t, the h_t tensors, the loss)."""
    norms, states = {}, []
    h = c = None
    for t, x_t in enumerate(xs.unbind(0)):
        if lstm:
            h, c = cell(x_t, None if h is None else (h, c))
        else:
            h = cell(x_t, h)
        h.register_hook(lambda g, t=t: norms.__setitem__(t, float(np.linalg.norm(g.numpy()))))
        states.append(h)
    loss = (h * h).sum()  # the last step's state only
    return norms, states, loss


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="T = 30")
    ap.add_argument("--steps", type=int, default=60, help="sequence length T")
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bptt_hooks.png", help="where to draw the trace (needs matplotlib)")
    args = ap.parse_args(argv)
    T = 30 if args.quick else args.steps
    tg.manual_seed(args.seed)
    F64 = tg.float64
    xs = tg.randn(T, 1, 8, dtype=F64)
    res = {}
    for name, cell, lstm in (("rnn", nn.RNNCell(8, args.hidden, dtype=F64), False),
                             ("lstm", nn.LSTMCell(8, args.hidden, dtype=F64), True)):
        if lstm:  # the usual forget-gate bias of 1 (gates i, f, g, o)
            H = args.hidden
            b = cell.bias_ih.numpy()
            b[H:2 * H] = 1.0
            cell.bias_ih.data = tg.tensor(b, dtype=F64).data
        norms, states, loss = trace(cell, xs, lstm)
        loss.backward(retain_graph=True)
        norms = dict(norms)  # what the hooks saw during backward (autograd.grad runs them again)
        exact = [float(np.linalg.norm(g.numpy())) for g in tg.autograd.grad(loss, states)]
        worst = max(abs(norms[t] - exact[t]) / exact[t] for t in range(T))
        assert worst < 1e-12, f"{name}: hooks and autograd.grad disagree by {worst:.2g}"
        res[name] = [norms[t] for t in range(T)]
        res[name + "_decay"] = norms[0] / norms[T - 1]  # how much of the gradient reaches step 0
    print(f"||dL/dh_t|| for L = ||h_(T-1)||^2, T = {T}, hidden {args.hidden} (hooks, checked against autograd.grad)")
    print(f"{'t':>4} {'RNN':>12} {'LSTM':>12}")
    for t in range(T - 1, -1, -max(1, T // 15)):
        print(f"{t:>4} {res['rnn'][t]:>12.3e} {res['lstm'][t]:>12.3e}")
    print(f"reaching t = 0: RNN {res['rnn_decay']:.2e} of the last step's, LSTM {res['lstm_decay']:.2e}")
    assert res["lstm_decay"] > 100 * res["rnn_decay"], "the LSTM should carry the gradient much further back"
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot)")
    else:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name in ("rnn", "lstm"):
            ax.semilogy(range(T), res[name], label=name.upper())
        ax.set_xlabel("timestep t")
        ax.set_ylabel("||dL / dh_t||")
        ax.set_title("BPTT: the gradient reaching each step")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.out, dpi=110)
        plt.close(fig)
        print(f"wrote {args.out}")
        res["plot"] = args.out
    return res


if __name__ == "__main__":
    main()
