"""Data-parallel training of a character-level LSTM with tinygrad_rnn.distributed.

The three calls a training loop adds (marked 1, 2, 3 below): broadcast the initial weights
from rank 0, average the gradients after backward, and reduce the metrics. Each rank
trains on its own rows of every batch; with the gradients averaged, all ranks take the
same step, and the run follows the single-process run with the same global batch (to
float rounding). Only rank 0 prints.

    python examples/data_parallel.py --quick                  # a world of one
    mpiexec -n 2 python examples/data_parallel.py --quick     # two processes (pip install -e '.[mpi]')
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
from tinygrad_rnn import distributed as dist
from tinygrad_rnn.nn import functional as F


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 steps")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16, help="the global batch, shared out over the ranks")
    args = ap.parse_args(argv)
    steps = 60 if args.quick else args.steps
    dist.init()
    n, r = dist.world_size(), dist.rank()
    if args.batch % n:
        raise SystemExit(f"--batch {args.batch} does not divide among {n} processes")
    text = stdlib_text(max_chars=50_000)
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    tg.manual_seed(r)  # different on each rank on purpose: the broadcast below makes them equal
    emb, lstm, head = nn.Embedding(len(vocab), 32), nn.LSTM(32, 64), nn.Linear(64, len(vocab))
    params = list(emb.parameters()) + list(lstm.parameters()) + list(head.parameters())
    dist.broadcast_parameters(params)                                  # 1. everyone starts from rank 0
    opt = optim.Adam(params, lr=1e-2)
    rng = np.random.default_rng(0)  # the same batches on every rank; each takes its rows
    T, mine = 32, slice(r * args.batch // n, (r + 1) * args.batch // n)
    for step in range(1, steps + 1):
        starts = rng.integers(0, len(ids) - T - 1, args.batch)[mine]
        x = tg.tensor(np.stack([ids[s:s + T] for s in starts], axis=1))
        y = tg.tensor(np.stack([ids[s + 1:s + T + 1] for s in starts], axis=1))
        out, _ = lstm(emb(x))
        loss = F.cross_entropy(head(out).reshape(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        dist.all_reduce_gradients(params)                              # 2. the mean gradient
        opt.step()
        mean_loss = dist.all_reduce_scalar(loss.item()) / n            # 3. metrics over all ranks
        if dist.is_main() and (step % 20 == 0 or step == steps):
            print(f"step {step:4d}  loss {mean_loss:.4f}  ({n} process{'es' if n > 1 else ''})", flush=True)
    return {"loss": mean_loss, "world_size": n}


if __name__ == "__main__":
    main()
