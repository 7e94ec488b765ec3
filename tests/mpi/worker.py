"""Run by tests/test_distributed.py under `mpiexec -n 2`: each check prints one line
'OK name' (or raises, which aborts the job)."""
import sys

import numpy as np

import tinygrad_rnn as tg
from tinygrad_rnn import distributed as dist
from tinygrad_rnn import nn
from tinygrad_rnn.nn import functional as F

F64 = tg.float64


def model(seed):
    tg.manual_seed(seed)
    return nn.Embedding(7, 4, dtype=F64), nn.LSTM(4, 5, num_layers=2, dtype=F64), nn.Linear(5, 7, dtype=F64)


def params(mods):
    return [p for m in mods for p in m.parameters()]


def loss_of(mods, ids, targets):
    emb, lstm, head = mods
    out, _ = lstm(emb(ids))
    T, B, _ = out.shape
    return F.cross_entropy(head(out).reshape(T * B, 7), targets.reshape(T * B))


def main(check):
    w = dist.init()
    assert dist.world_size() == 2 and dist.rank() == w.rank
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, (6, 4))
    targets = rng.integers(0, 7, (6, 4))
    if check == "gradients":
        mods = model(seed=1 + dist.rank())  # different on purpose: broadcast makes them equal
        dist.broadcast_parameters(params(mods))
        ref = model(seed=1)  # rank 0's weights, everywhere
        for p, q in zip(params(mods), params(ref)):
            np.testing.assert_array_equal(p.numpy(), q.numpy())
        # the full batch here, for reference; this rank's half of the batch (columns) below
        loss_of(ref, tg.tensor(ids), tg.tensor(targets)).backward()
        half = slice(2 * dist.rank(), 2 * dist.rank() + 2)
        loss_of(mods, tg.tensor(ids[:, half]), tg.tensor(targets[:, half])).backward()
        dist.all_reduce_gradients(params(mods))  # the mean of the two halves' mean losses
        for p, q in zip(params(mods), params(ref)):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-12, atol=1e-14)
        assert w.allreduce_calls == 1  # every gradient in one buffer: one Allreduce
        assert dist.all_reduce_scalar(dist.rank() + 1) == 3
        assert dist.all_reduce_scalar(float(dist.rank()), op="max") == 1.0
        dist.barrier()
        print(f"OK gradients rank {dist.rank()}", flush=True)
    elif check == "local":  # one node: the local ranks are the ranks, and 'cuda' is each rank's own GPU
        assert (dist.local_rank(), w.local_size) == (dist.rank(), 2)
        assert dist.rank_device("cuda", gpu_count=2) == (f"cuda:{dist.rank()}", None)
        device, note = dist.rank_device("cuda", gpu_count=1)
        assert device == "cuda:0" and "GPUs are shared" in note
        assert dist.rank_device("cuda:1", gpu_count=2) == ("cuda:1", None)
        assert dist._agree(w, dist.rank() == 0) is False and dist._agree(w, True) is True
        print(f"OK local rank {dist.rank()}", flush=True)
    elif check == "raise":
        if dist.rank() == 1:
            raise ValueError("rank 1 fails on purpose")
        dist.barrier()  # rank 0 would wait here for ever without the abort
        print("rank 0 passed the barrier: the abort did not happen", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
