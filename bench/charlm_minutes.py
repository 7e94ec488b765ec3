"""PyTorch's plain char-LM recipe, trained for a fixed wall time on our data pipeline.

The issues compare `python -m tinygrad_rnn train` on Tiny Shakespeare for 10 minutes with
what PyTorch reaches in the same 10 minutes on the same machine. This runs PyTorch's side:
a plain `nn.LSTM` char-LM (by default LSTM 2x256 on one-hot input, dropout 0.25 between
the layers and before the head, Adam 2e-3, batch 32, windows of 64 with the state carried,
gradient norm clipped at 5) on exactly the split, the batches and the evaluation our
`train` uses (tinygrad_rnn.text's 90/10 split and BPTT windows; the whole validation tenth
read as `tinygrad_rnn.lm.train.evaluate` reads it: 32 rows, windows of 128, the state
carried, in eval mode). PyTorch is a benchmark-only extra (`pip install torch==2.13.0`).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/charlm_minutes.py \\
        --data ../shared/data/tinyshakespeare.txt --minutes 10

Prints the environment, one JSON object for the run, and a one-row table. Our side is the
README's command, run on the same machine with it otherwise idle.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                      "shared", "data", "tinyshakespeare.txt")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=None, help=f"a text file (default: {SHARED} when present)")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--cell", choices=["lstm", "gru"], default="lstm")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.25)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: its own)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("charlm_minutes: PyTorch is not importable (pip install torch==2.13.0); nothing to run")
        return 0
    from tinygrad_rnn.text import BPTTStream, load_corpus

    data = args.data or (SHARED if os.path.exists(SHARED) else None)
    if data is None:
        print(f"charlm_minutes: no --data and {SHARED} is absent; give a text file")
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    corpus = load_corpus(data)
    V = len(corpus.vocab)

    class CharLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[args.cell]
            self.rnn = layer(V, args.hidden, args.layers, dropout=args.dropout if args.layers > 1 else 0.0)
            self.drop = torch.nn.Dropout(args.dropout)
            self.head = torch.nn.Linear(args.hidden, V)

        def forward(self, ids, state=None):
            x = torch.nn.functional.one_hot(ids, V).float()
            out, state = self.rnn(x, state)
            return self.head(self.drop(out)), state

    def detach(s):
        return tuple(t.detach() for t in s) if isinstance(s, tuple) else s.detach()

    model = CharLM()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    stream = BPTTStream(corpus.train, args.batch, args.seq_len)
    state, steps, tokens = None, 0, 0
    print(json.dumps({"bench": "charlm_minutes_env", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "data": data, "train_chars": int(len(corpus.train)), "val_chars": int(len(corpus.val))}))
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < args.minutes * 60:
        x, y, reset = stream.next()
        if reset:
            state = None
        logits, state = model(torch.from_numpy(x), state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        state = detach(state)
        steps, tokens = steps + 1, tokens + x.size
        if steps % 200 == 0:
            print(f"step {steps}  loss {loss.item():.4f}  {tokens / (time.perf_counter() - t0):,.0f} tok/s",
                  flush=True)
    train_s = time.perf_counter() - t0

    # the validation tenth as tinygrad_rnn.lm.train.evaluate reads it
    model.eval()
    rows = max(1, min(32, len(corpus.val) // 128))
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for x, y in BPTTStream(corpus.val, rows, 128).epoch_windows():
            logits, state = model(torch.from_numpy(x), state)
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).reshape(-1),
                                                             reduction="sum"))
            count += x.size
    val = total / count
    rec = {"bench": "charlm_minutes", "library": f"torch {torch.__version__}", "cell": args.cell,
           "hidden": args.hidden, "layers": args.layers, "dropout": args.dropout, "lr": args.lr,
           "batch": args.batch, "seq_len": args.seq_len, "minutes": args.minutes, "steps": steps,
           "tokens_per_s": round(tokens / train_s, 1), "val_nats_per_char": round(val, 4),
           "val_bits_per_char": round(val / math.log(2), 4), "val_chars": count,
           "params": int(sum(p.numel() for p in model.parameters()))}
    print(json.dumps(rec))
    print()
    print(f"{'library':18s} {'model':14s} {'steps':>6s} {'tok/s':>8s} {'val nats/char':>14s}")
    print(f"{rec['library']:18s} {args.cell + ' ' + str(args.layers) + 'x' + str(args.hidden):14s} {steps:6d} "
          f"{rec['tokens_per_s']:8,.0f} {val:14.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
