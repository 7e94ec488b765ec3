"""Vanishing and exploding gradients, measured with the engine's backward pass.

1. The one-unit network h_t = tanh(w h_{t-1}), run for T = 10 steps from h_0 = 0.5, for
   every w in [-4, 4]: its final state h_T and d h_T / d h_0. The derivative is what
   backward() returns for h_0 (checked against central differences), not a formula.
   Away from |w| ~ 1 it is tiny: for small |w| because each step multiplies by |w| < 1,
   for large |w| because tanh saturates and each step multiplies by tanh' ~ 0.
2. The linear case h_t = w h_{t-1} over T = 50: d h_T / d h_0 = w^50, i.e. 117.39 for
   w = 1.1 (explodes) and 0.00515 for w = 0.9 (vanishes).
3. A trained vanilla RNN against a trained LSTM (small character-level language models
   on Python source): the norm of the gradient of the loss at the last step T with
   respect to the state at step t, as T - t grows. Both fall off exponentially, the RNN's
   much faster: the LSTM's cell state (c_t = f_t c_{t-1} + ...) passes the gradient back
   multiplied only by its forget gates, the RNN's through W_hh and tanh' at every step.

Writes vanishing_gradients.png where matplotlib is installed; prints the numbers always.

    python examples/vanishing_gradients.py --quick      # ~10 s
    python examples/vanishing_gradients.py              # longer training, T = 60
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
from tinygrad_rnn.text import CharVocab, stdlib_text
from tinygrad_rnn.nn import functional as F


# ----------------------------------------------------------------------------- 1. one tanh unit
def tanh_unit(ws, h0=0.5, T=10):
    """Final state and d h_T / d h_0 for each w, all at once: each w is its own batch element."""
    w = tg.tensor(ws, dtype=tg.float64)
    h_start = tg.full((len(ws),), h0, dtype=tg.float64, requires_grad=True)
    h = h_start
    for _ in range(T):
        h = (w * h).tanh()
    h.sum().backward()  # the elements are independent, so this is each d h_T[i] / d h_0[i]
    return h.numpy(), h_start.grad.numpy()


def finite_difference(ws, h0=0.5, T=10, eps=1e-6):
    def run(start):
        h = np.full(len(ws), start)
        for _ in range(T):
            h = np.tanh(ws * h)
        return h
    return (run(h0 + eps) - run(h0 - eps)) / (2 * eps)


# ----------------------------------------------------------------------------- 2. linear
def linear_unit(w, T=50):
    h0 = tg.tensor(1.0, dtype=tg.float64, requires_grad=True)
    h = h0
    for _ in range(T):
        h = w * h
    h.backward()
    return h0.grad.item()


# ----------------------------------------------------------------------------- 3. trained RNN vs LSTM
class CharModel(nn.Module):
    """One-hot characters -> nn.RNN or nn.LSTM -> linear head: a small character-level LM."""

    def __init__(self, cell, vocab_size, hidden):
        super().__init__()
        self.cell, self.vocab_size, self.hidden = cell, vocab_size, hidden
        self.rnn = (nn.LSTM if cell == "lstm" else nn.RNN)(vocab_size, hidden)
        if cell == "lstm":
            # forget gates start near sigmoid(1) = 0.73 rather than 0.5, the usual practice
            # (Gers et al. 2000; Jozefowicz et al. 2015); gate order i, f, g, o
            self.rnn.bias_hh_l0.data[hidden:2 * hidden] += 1.0
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, ids):
        out, _ = self.rnn(F.one_hot(ids, self.vocab_size))
        return self.head(out)

    def unrolled(self, ids):
        """The same network as a cell stepped by hand, keeping every step's state so that
        backward can report d loss / d state_t (a layer's stacked output cannot: its
        gradient holds only the direct path to each output, not the path through time)."""
        cell = (nn.LSTMCell if self.cell == "lstm" else nn.RNNCell)(self.vocab_size, self.hidden)
        cell.load_state_dict({k[:-3]: v for k, v in self.rnn.state_dict().items()})  # weight_ih_l0 -> weight_ih
        state, states = None, []
        for x_t in F.one_hot(ids, self.vocab_size).unbind(0):
            state = cell(x_t, state)
            for s in (state if self.cell == "lstm" else (state,)):
                s.retain_grad()
            states.append(state)
        return self.head(states[-1][0] if self.cell == "lstm" else states[-1]), states


def windows(ids, rng, T, batch):
    start = rng.integers(0, len(ids) - T - 1, size=batch)
    idx = start[None, :] + np.arange(T + 1)[:, None]
    return ids[idx[:-1]], ids[idx[1:]]


def train_lm(cell, ids, vocab_size, args):
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = CharModel(cell, vocab_size, args.hidden)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    for step in range(args.steps):
        x, y = windows(ids, rng, args.seq_len, args.batch)
        loss = F.cross_entropy(model(x).reshape(-1, vocab_size), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return model, loss.item()


def gradient_through_time(model, ids, T, seed, batch=64):
    """||d loss_T / d state_t|| (mean over a batch) for T - t = 0, 1, ..., T - 1, where
    loss_T is the loss of the last prediction only; the LSTM's state is (h_t, c_t)."""
    x, y = windows(ids, np.random.default_rng(seed + 1), T, batch)
    logits, states = model.unrolled(x)
    F.cross_entropy(logits, y[-1]).backward()
    norms = []
    for state in states:
        parts = state if model.cell == "lstm" else (state,)
        norms.append(float(np.sqrt(sum((p.grad.numpy() ** 2).sum(-1) for p in parts)).mean()))
    return np.array(norms[::-1])


def plot(ws, h_T, dh, distances, rnn_norms, lstm_norms, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: skipping the plot; pip install matplotlib to get "
              f"{os.path.basename(path)})")
        return None
    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    ax[0].plot(ws, h_T)
    ax[0].set(title="h_10 of h_t = tanh(w h_{t-1}), h_0 = 0.5", xlabel="w", ylabel="h_10")
    ax[1].semilogy(ws, np.abs(dh) + 1e-30)
    ax[1].set(title="|d h_10 / d h_0| (engine backward)", xlabel="w")
    ax[2].semilogy(distances, rnn_norms, label="vanilla RNN")
    ax[2].semilogy(distances, lstm_norms, label="LSTM")
    ax[2].set(title="gradient reaching step t from the loss at T", xlabel="T - t", ylabel="||d L_T / d state_t||")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description="vanishing and exploding gradients, measured")
    p.add_argument("--quick", action="store_true", help="short training (about 10 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="vanishing_gradients.png", help="where the plot goes (with matplotlib)")
    args = p.parse_args(argv)
    args.hidden, args.batch, args.seq_len, args.lr = 64, 32, 40, 3e-3
    args.steps = 300 if args.quick else 2000
    measure_T = 40 if args.quick else 60
    t0 = time.perf_counter()
    res = {}

    ws = np.linspace(-4, 4, 161)
    h_T, dh = tanh_unit(ws)
    fd_err = float(np.max(np.abs(dh - finite_difference(ws))))
    print("1. h_t = tanh(w h_{t-1}), h_0 = 0.5, T = 10 (derivative by backward; max |backward - central "
          f"difference| = {fd_err:.1e})")
    print("      w    h_10      d h_10 / d h_0")
    for w in (-4, -2, -1, -0.5, 0.5, 1, 1.5, 2, 4):
        i = int(np.argmin(np.abs(ws - w)))
        print(f"   {w:5.1f}  {h_T[i]:+.4f}   {dh[i]: .3e}")
    i_max = int(np.argmax(np.abs(dh)))
    print(f"   largest |d h_10 / d h_0| = {abs(dh[i_max]):.3f} at w = {ws[i_max]:+.2f}")
    res.update(fd_err=fd_err, dh_at_w05=float(dh[np.argmin(np.abs(ws - 0.5))]),
               dh_at_w4=float(dh[np.argmin(np.abs(ws - 4))]), dh_max=float(abs(dh[i_max])), w_max=float(ws[i_max]))

    g11, g09 = linear_unit(1.1), linear_unit(0.9)
    print(f"2. linear h_t = w h_(t-1), T = 50: d h_50 / d h_0 = {g11:.2f} for w = 1.1 and {g09:.5f} for w = 0.9")
    res.update(linear_1_1=g11, linear_0_9=g09)

    text = stdlib_text(max_chars=100_000)  # always there: the standard library's sources
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    print(f"3. character LMs on {len(text):,} characters of Python source ({args.steps} Adam steps of "
          f"{args.batch} x {args.seq_len} characters each), then the gradient of the loss of the last "
          f"prediction (step T = {measure_T}) w.r.t. the state at step t:")
    norms = {}
    for cell in ("rnn", "lstm"):
        model, loss = train_lm(cell, ids, len(vocab), args)
        norms[cell] = gradient_through_time(model, ids, measure_T, args.seed)
        res[f"{cell}_train_loss"] = loss
        print(f"   {cell:4s}: training loss {loss:.3f} nats/char")
    rnn_norms, lstm_norms = norms["rnn"], norms["lstm"]
    distances = np.arange(measure_T)
    print("   T - t   vanilla RNN    LSTM       (each relative to its own value at T - t = 0)")
    for d in (0, 5, 10, 20, 30, 40, 50, measure_T - 1):
        if d < measure_T:
            print(f"   {d:5d}   {rnn_norms[d] / rnn_norms[0]:.2e}     {lstm_norms[d] / lstm_norms[0]:.2e}")
    far = measure_T - 1
    res["rnn_decay"] = float(rnn_norms[far] / rnn_norms[0])
    res["lstm_decay"] = float(lstm_norms[far] / lstm_norms[0])
    plot(ws, h_T, dh, distances, rnn_norms, lstm_norms, args.out)
    res["seconds"] = time.perf_counter() - t0

    assert fd_err < 1e-6
    assert abs(g11 - 117.39) < 0.01 and abs(g09 - 0.00515) < 1e-5
    # the derivative peaks near |w| = 1 and is tiny on both sides: shrinking or saturating
    assert 0.9 <= abs(res["w_max"]) <= 1.1 and res["dh_max"] > 0.1
    assert abs(res["dh_at_w05"]) < 1e-2 and abs(res["dh_at_w4"]) < 1e-2
    assert res["lstm_decay"] > 10 * res["rnn_decay"], "the LSTM should carry the gradient further back"
    print(f"the gradient reaching {far} steps back: vanilla RNN x{res['rnn_decay']:.1e}, LSTM x{res['lstm_decay']:.1e} "
          f"({res['seconds']:.1f} s)")
    return res


if __name__ == "__main__":
    main()
