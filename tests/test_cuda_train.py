"""Training on CUDA, on the host with CuPy stood in for (tests/cuda_fake.py): a resumed run's
dropout masks are the straight run's, because each step's generator comes from (seed, rank,
step) (Device.step_seed), not from a generator state CuPy cannot save."""
import numpy as np
import pytest

from tinygrad_rnn import backend as B
from tinygrad_rnn.lm import TrainConfig, train

import cuda_fake

TEXT = ("the cat sat on the mat. the dog sat on the log. " * 40
        + "a bird sang in the tree; the cat did not. " * 20)
QUIET = dict(echo=lambda s: None, progress="none", final_sample_length=0)


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def _cfg(path, **kw):
    base = dict(data=str(path), hidden=16, layers=2, seq_len=8, batch=4, steps=12, eval_every=5, log_every=1,
                sample_length=20, eval_chars=None, dropout=0.3, device="cuda", dtype="float64")
    base.update(kw)
    return TrainConfig(**base)


def _runs(tmp_path, corpus_file):
    full = train(_cfg(corpus_file), tmp_path / "a", **QUIET)
    part = train(_cfg(corpus_file, steps=5), tmp_path / "b", **QUIET)
    rest = train(_cfg(corpus_file), tmp_path / "b", resume=True, explicit={"steps"}, **QUIET)
    return full, part, rest


def test_a_resumed_cuda_run_with_dropout_equals_the_straight_run(monkeypatch, tmp_path, corpus_file):
    fake = cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    full, part, rest = _runs(tmp_path, corpus_file)
    assert part.losses + rest.losses == full.losses  # exactly, loss for loss
    assert rest.val_loss == full.val_loss
    assert sum(what == "seed" for what, _ in fake.log) >= 12 + 12  # reseeded every step of both runs


def test_without_the_per_step_seed_the_resumed_run_would_differ(monkeypatch, tmp_path, corpus_file):
    # the control: restoring the seed alone replays the start of the random stream
    cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    monkeypatch.setattr(B.CUDADevice, "step_seed", lambda self, seed, rank, step: None)
    full, part, rest = _runs(tmp_path, corpus_file)
    assert part.losses == full.losses[:5] and rest.losses != full.losses[5:]


def test_derived_seeds_are_fixed_and_distinct():
    seeds = {(r, s): B.derive_seed(7, r, s) for r in range(3) for s in range(50)}
    assert len(set(seeds.values())) == len(seeds)
    assert all(0 <= v < 2 ** 63 for v in seeds.values())
    assert B.derive_seed(7, 1, 3) == seeds[1, 3] and B.derive_seed(8, 1, 3) != seeds[1, 3]
    assert B.derive_seed(-1, 0, 0) == B.derive_seed(2 ** 64 - 1, 0, 0)  # a negative seed is taken mod 2**64


def test_the_cpu_keeps_its_saved_generator_state():
    dev = B.get_device("cpu")
    before = dev.get_rng_state()
    assert not dev.per_step_rng and dev.step_seed(0, 0, 5) is None
    assert dev.get_rng_state() == before  # the CPU's stream (and every result of it) is unchanged


@pytest.mark.parametrize("seed", [0, 5, -1, 2 ** 64 - 1])
def test_cuda_seeds_reach_curand_as_uint64(monkeypatch, seed):
    # CuPy's RandomState.seed casts to uint64 with casting='safe', refusing a Python int
    # under NumPy 2: the device hands it NumPy uint64s (the fake casts as CuPy does)
    import tinygrad_rnn as tg
    cuda_fake.install(monkeypatch, gpus=1)
    dev = cuda_fake.cuda("cuda:0")
    tg.manual_seed(seed)
    a = dev.to_host(dev.randn((4,), B.float32))
    tg.manual_seed(seed)
    np.testing.assert_array_equal(dev.to_host(dev.randn((4,), B.float32)), a)
    dev.step_seed(seed, 1, 2)
    b = dev.to_host(dev.rand((4,), B.float32))
    dev.step_seed(seed, 1, 2)
    np.testing.assert_array_equal(dev.to_host(dev.rand((4,), B.float32)), b)
