"""One training step of a character LSTM language model, fused cells against composed.

The step: embedding -> LSTM -> linear -> cross-entropy -> backward -> Adam, on random
tokens, for each hidden size (default 128, 256, 512; batch 32, sequence 64, vocabulary
65, embedding size = hidden size, float32). `fused` is nn.LSTM's default (one graph node
per step for the gate math); `composed` runs the same layer with fused=False (the cell
equations as primitive ops, about 14 nodes per step).

Prints one JSON object per measurement as it goes, then a table: milliseconds per step
(median of --steps timed steps after --warmup untimed ones) and tokens per second
(batch * sequence / step time). If PyTorch happens to be importable, the same model in
PyTorch is timed too and shown beside ours as a ratio; PyTorch is never required.

    python bench/rnn_step.py
    python bench/rnn_step.py --hidden 256 --steps 5 --device cuda
    OPENBLAS_NUM_THREADS=1 python bench/rnn_step.py --threads 1   # one core, for both libraries
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

# run from a checkout without installing: the repository root is one level up
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--embed", type=int, default=None, help="embedding size (default: the hidden size)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--modes", nargs="+", default=["fused", "composed"], choices=["fused", "composed"])
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads for PyTorch (set OPENBLAS_NUM_THREADS too, for NumPy)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--profile", action="store_true", help="cProfile one fused step per hidden size")
    return ap.parse_args(argv)


def _median_ms(step, n, warmup, sync):
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def ours(args, hidden, fused):
    import numpy as np

    import tinygrad_rnn as tg
    from tinygrad_rnn import nn, optim
    from tinygrad_rnn.nn import functional as F

    dev = tg.get_device(args.device)
    dt = getattr(tg, args.dtype)
    tg.manual_seed(0)
    E = args.embed or hidden
    emb = nn.Embedding(args.vocab, E, dtype=dt, device=dev)
    lstm = nn.LSTM(E, hidden, fused=fused, dtype=dt, device=dev)
    head = nn.Linear(hidden, args.vocab, dtype=dt, device=dev)
    params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=1e-3)
    rng = np.random.default_rng(0)
    data = rng.integers(0, args.vocab, (args.seq + 1, args.batch))
    x = tg.tensor(data[:-1], device=dev)
    y = tg.tensor(data[1:].reshape(-1), device=dev)
    T, B = args.seq, args.batch

    def step():
        out, _ = lstm(emb(x))
        loss = F.cross_entropy(head(out.reshape(T * B, hidden)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step, dev.synchronize


def pytorch(args, hidden, torch):
    torch.manual_seed(0)
    dev = torch.device("cuda" if args.device.startswith("cuda") else "cpu")
    dt = getattr(torch, args.dtype)
    E = args.embed or hidden
    emb = torch.nn.Embedding(args.vocab, E).to(dev, dt)
    lstm = torch.nn.LSTM(E, hidden).to(dev, dt)
    head = torch.nn.Linear(hidden, args.vocab).to(dev, dt)
    params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.randint(0, args.vocab, (args.seq, args.batch), device=dev)
    y = torch.randint(0, args.vocab, (args.seq * args.batch,), device=dev)

    def step():
        out, _ = lstm(emb(x))
        loss = torch.nn.functional.cross_entropy(head(out.reshape(-1, hidden)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return step, sync


def main(argv=None):
    args = parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811  (optional: a benchmark-only comparison)
            if args.threads:
                torch.set_num_threads(args.threads)
        except ImportError:
            torch = None
    tokens = args.batch * args.seq
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    rows = []
    for hidden in args.hidden:
        row = {"hidden": hidden}
        for mode in args.modes:
            step, sync = ours(args, hidden, fused=(mode == "fused"))
            ms, ms_min = _median_ms(step, args.steps, args.warmup, sync)
            row[mode] = ms
            rec = {"bench": "rnn_step", "library": "tinygrad_rnn", "mode": mode, "hidden": hidden,
                   "batch": args.batch, "seq": args.seq, "vocab": args.vocab, "device": args.device,
                   "dtype": args.dtype, "ms_per_step": round(ms, 3), "ms_min": round(ms_min, 3),
                   "tokens_per_s": round(tokens / ms * 1e3, 1), "load1": round(load, 2)}
            print(json.dumps(rec), flush=True)
        if args.profile:
            import cProfile
            import pstats
            step, sync = ours(args, hidden, fused=True)
            step()
            pr = cProfile.Profile()
            pr.enable()
            step()
            sync()
            pr.disable()
            pstats.Stats(pr, stream=sys.stderr).sort_stats("tottime").print_stats(15)
        if torch is not None:
            step, sync = pytorch(args, hidden, torch)
            ms, ms_min = _median_ms(step, args.steps, args.warmup, sync)
            row["torch"] = ms
            print(json.dumps({"bench": "rnn_step", "library": "torch " + torch.__version__, "hidden": hidden,
                              "batch": args.batch, "seq": args.seq, "vocab": args.vocab, "device": args.device,
                              "dtype": args.dtype, "ms_per_step": round(ms, 3), "ms_min": round(ms_min, 3),
                              "tokens_per_s": round(tokens / ms * 1e3, 1),
                              "threads": torch.get_num_threads()}), flush=True)
        rows.append(row)

    print(f"\nLSTM LM training step: batch {args.batch}, seq {args.seq}, vocab {args.vocab}, {args.dtype}, "
          f"device {args.device}, {platform.processor() or platform.machine()}, load {load:.2f}, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}")
    head = f"{'hidden':>6}"
    for mode in args.modes:
        head += f" | {mode + ' ms':>12} {mode + ' tok/s':>15}"
    if "fused" in args.modes and "composed" in args.modes:
        head += f" | {'composed/fused':>14}"
    if torch is not None:
        head += f" | {'torch ms':>9} {'ours/torch':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        line = f"{r['hidden']:>6}"
        for mode in args.modes:
            line += f" | {r[mode]:>12.1f} {tokens / r[mode] * 1e3:>15,.0f}"
        if "fused" in args.modes and "composed" in args.modes:
            line += f" | {r['composed'] / r['fused']:>13.2f}x"
        if torch is not None:
            best = r.get("fused", r.get("composed"))
            line += f" | {r['torch']:>9.1f} {best / r['torch']:>9.2f}x"
        print(line)


if __name__ == "__main__":
    main()
