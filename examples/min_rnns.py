"""minGRU and minLSTM ("Were RNNs All We Needed?", Feng et al., 2024).

Take the hidden state out of the gates of a GRU and the recurrence becomes linear:

    z_t = sigmoid(W_z x_t),  h~_t = g(W_h x_t),  h_t = (1 - z_t) * h_{t-1} + z_t * h~_t

Every coefficient is known from the input alone, so the whole sequence can be solved at
once with a log-space scan (cumulative sums and log-cumsum-exp, nn.MinGRU's parallel
mode) instead of a loop over time, and still be run one step at a time for generation
(its sequential mode and `step`). This program:

1. checks that the two modes give the same outputs and gradients (float64, 512 steps);
2. times them, forward + backward, against nn.GRU on this machine;
3. trains small character-level language models (tinygrad_rnn.lm.CharLM) with a minGRU, a
   minLSTM and a GRU on the same text for the same number of steps, and compares
   validation bits per character and time per step, then samples from the minGRU;
4. runs the same thing through the train command: python -m tinygrad_rnn train --cell mingru.

    python examples/min_rnns.py --quick      # ~30 s: 2 layers of 64, 150 steps
    python examples/min_rnns.py              # 2 layers of 128, 1500 steps (many minutes on a CPU)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

try:
    import tinygrad_rnn as tg
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim
from tinygrad_rnn.text import load_corpus
from tinygrad_rnn.lm import CharLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modes_agree():
    """Largest |parallel - sequential| over outputs and every gradient (each relative to the
    largest magnitude of that array), for both layers."""
    worst = 0.0
    for layer in (nn.MinGRU, nn.MinLSTM):
        m = layer(8, 16, num_layers=2, dtype=tg.float64)
        x = tg.randn(512, 4, 8, dtype=tg.float64) * 2.0
        outs = []
        for mode in ("parallel", "sequential"):
            m.zero_grad()
            xi = x.detach().requires_grad_()
            y, h = m(xi, mode=mode)
            (y.sum() + h.sum()).backward()
            outs.append([y.numpy(), xi.grad.numpy()] + [p.grad.numpy() for p in m.parameters()])
        worst = max(worst, max(float(np.max(np.abs(a - b)) / np.max(np.abs(b))) for a, b in zip(*outs)))
    return worst


def time_modes(lengths, batch=16, size=64, repeat=3):
    """ms for one forward + backward at each length: minGRU parallel, minGRU sequential, GRU."""
    rows = []
    for T in lengths:
        x = tg.randn(T, batch, size, requires_grad=True)
        row = [T]
        for make, mode in ((nn.MinGRU, "parallel"), (nn.MinGRU, "sequential"), (nn.GRU, None)):
            m = make(size, size)
            best = float("inf")
            for _ in range(repeat):
                t0 = time.perf_counter()
                y, _ = m(x, mode=mode) if mode else m(x)
                y.sum().backward()
                best = min(best, time.perf_counter() - t0)
            row.append(best * 1e3)
        rows.append(row)
    return rows


def train_lm(cell, corpus, args):
    """A CharLM with `cell`, trained on random windows; (model, validation bits/char, ms per step)."""
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = CharLM(corpus.vocab, cell=cell, hidden=args.hidden, layers=2, embed_dim=32)
    opt = optim.Adam(model.parameters(), lr=args.lr)
    ids = corpus.train
    t0 = time.perf_counter()
    for step in range(args.steps):
        start = rng.integers(0, len(ids) - args.seq_len - 1, size=args.batch)
        idx = start[None, :] + np.arange(args.seq_len + 1)[:, None]
        loss, _ = model.loss(ids[idx[:-1]], ids[idx[1:]])
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    ms = (time.perf_counter() - t0) / args.steps * 1e3
    model.eval()
    val = corpus.val[: 64 * 256 + 1]
    x, y = val[:-1].reshape(64, 256).T, val[1:].reshape(64, 256).T
    with tg.no_grad():
        loss, _ = model.loss(x, y)
    return model, loss.item() / np.log(2), ms


def unigram_bits(corpus):
    p = np.bincount(corpus.train, minlength=len(corpus.vocab)) + 1.0
    p /= p.sum()
    return float(-np.mean(np.log2(p[corpus.val])))


def train_command(args):
    """`python -m tinygrad_rnn train --cell mingru` in a fresh process; its final validation bits/char."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "tinygrad_rnn", "train", "--cell", "mingru", "--steps", str(args.cli_steps),
               "--hidden", "64", "--layers", "2", "--seq-len", "64", "--batch", "16", "--max-chars", "200000",
               "--lr", "0.005", "--progress", "none", "--out", out]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        print("   $ " + " ".join(["python"] + cmd[1:-2] + ["--out", "RUN_DIR"]))
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            final = [json.loads(line) for line in f if '"final": true' in line][-1]
    return final["val_bpc"]


def main(argv=None):
    p = argparse.ArgumentParser(description="minGRU and minLSTM: parallel scan, sequential steps, a char-LM")
    p.add_argument("--quick", action="store_true", help="small models, short runs (~30 s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.lr = 5e-3
    if args.quick:
        args.hidden, args.seq_len, args.batch, args.steps, args.cli_steps = 64, 64, 16, 150, 100
    else:
        args.hidden, args.seq_len, args.batch, args.steps, args.cli_steps = 128, 128, 32, 1500, 1000
    lengths = [64, 256, 1024] if args.quick else [64, 256, 1024, 4096]
    t0 = time.perf_counter()
    res = {}

    res["max_mode_difference"] = worst = modes_agree()
    print(f"1. parallel vs sequential mode, minGRU and minLSTM, 2 layers, 512 steps, float64: largest "
          f"relative difference in outputs and gradients {worst:.1e}")

    print("2. one forward + backward (batch 16, 64 units, float32, this CPU), ms:")
    print("        T   minGRU parallel   minGRU sequential    GRU")
    for T, par, seq, gru in time_modes(lengths):
        print(f"   {T:6d}   {par:15.1f}   {seq:17.1f}   {gru:6.1f}")
    print("   (the scan replaces T small steps by a few dozen whole-sequence array operations but does more"
          " arithmetic\n    (logs and exps). With 16 x 64 numbers per step NumPy's loop steps are cheap and the"
          " loop wins; with tiny\n    steps, where the cost of launching each operation dominates, the scan wins even"
          " here (batch 1, 16 units:\n    ~5x at T = 4096, bench/minrnn_scan.py). A GPU is in that regime at far"
          " larger sizes; not measured here.)")

    corpus = load_corpus(max_chars=300_000)
    print(f"3. character LMs on {len(corpus.text):,} characters of Python source (2 layers of {args.hidden}, "
          f"{args.steps} Adam steps of {args.batch} x {args.seq_len}); validation bits/char "
          f"(a unigram model: {unigram_bits(corpus):.2f}):")
    for cell in ("mingru", "minlstm", "gru"):
        model, bpc, ms = train_lm(cell, corpus, args)
        res[f"{cell}_bpc"], res[f"{cell}_ms_per_step"] = bpc, ms
        print(f"   {cell:8s} {bpc:.3f} bits/char   {ms:6.1f} ms/step")
        if cell == "mingru":
            sample_model = model
    res["unigram_bpc"] = unigram_bits(corpus)
    text = sample_model.generate("def ", length=120, temperature=0.7, seed=args.seed)
    print("   minGRU sample (one character at a time, state carried):\n   | def " +
          text.replace("\n", "\n   | "))

    print(f"4. the same through the train command ({args.cli_steps} steps):")
    res["cli_mingru_bpc"] = train_command(args)
    print(f"   final validation {res['cli_mingru_bpc']:.3f} bits/char")
    res["seconds"] = time.perf_counter() - t0
    print(f"({res['seconds']:.1f} s)")
    assert worst < 1e-10, "the two modes must agree"
    assert res["mingru_bpc"] < res["unigram_bpc"] and res["minlstm_bpc"] < res["unigram_bpc"], \
        "the min-RNN language models should beat a unigram model"
    assert res["cli_mingru_bpc"] < res["unigram_bpc"], "the train command's minGRU should beat a unigram model too"
    return res


if __name__ == "__main__":
    main()
