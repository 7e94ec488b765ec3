"""Host synchronisations of a CUDA training step, counted on the host with CuPy stood in for
(tests/cuda_fake.py counts every device value read back: item, int, float, bool, asnumpy),
and the clipping that needs none: clip_grad_norm_(sync=False), one fused pass."""
import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend as B
from tinygrad_rnn.lm import TrainConfig, train
from tinygrad_rnn.lm.train import Run, TrainError
from tinygrad_rnn.nn.utils import clip_grad_norm_

import cuda_fake

TEXT = "the cat sat on the mat. the dog sat on the log. " * 40


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def _cfg(path, **kw):
    base = dict(data=str(path), hidden=16, layers=2, seq_len=8, batch=4, steps=12, eval_every=6, log_every=6,
                sample_length=20, eval_chars=None, dropout=0.2, device="cuda", clip=1.0)
    base.update(kw)
    return TrainConfig(**base)


# ----------------------------------------------------------------------------- a training step's reads
@pytest.mark.parametrize("embed_dim", [None, 8])
def test_a_cuda_training_step_reads_nothing_back_between_metrics_lines(monkeypatch, tmp_path, corpus_file,
                                                                       embed_dim):
    fake = cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    run = Run.start(_cfg(corpus_file, embed_dim=embed_dim), str(tmp_path / "run"))
    assert run.lazy and run.device.kind == "cuda"
    reads = []
    for _ in range(5):
        before = len(fake.syncs)
        assert run.step()[0] is None  # the loss stays on the device
        reads.append(fake.syncs[before:])
    assert reads == [[]] * 5, reads  # no item/int/float/bool of a device array within a step
    before = len(fake.syncs)
    last = run.flush()  # a metrics line: the five losses and norms in one transfer
    assert fake.syncs[before:] == ["asnumpy"]
    assert len(run.losses) == 5 and run.losses[-1] == last and all(math.isfinite(v) for v in run.losses)


def test_the_lazy_losses_are_the_ones_a_step_by_step_read_gives(monkeypatch, tmp_path, corpus_file):
    cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    quiet = dict(echo=lambda s: None, progress="none", final_sample_length=0)
    lazy = train(_cfg(corpus_file, dtype="float64"), tmp_path / "a", **quiet)
    monkeypatch.setattr(B.CUDADevice, "reads_sync", False)  # read every loss at once, as on the CPU
    eager = train(_cfg(corpus_file, dtype="float64"), tmp_path / "b", **quiet)
    assert len(lazy.losses) == 12
    np.testing.assert_allclose(lazy.losses, eager.losses, rtol=1e-12)  # the clipping differs in rounding only
    assert lazy.train_loss == pytest.approx(eager.train_loss, rel=1e-12)


def test_a_nan_found_at_the_metrics_line_stops_the_run_before_a_checkpoint(monkeypatch, tmp_path, corpus_file):
    cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    run = Run.start(_cfg(corpus_file), str(tmp_path / "run"))
    run.step()
    with tg.no_grad():
        for p in run.params:
            p.data[...] = math.nan
    run.step()
    with pytest.raises(TrainError, match=r"the loss became nan at step 2; the last checkpoint is intact"):
        run.save()
    assert not (tmp_path / "run" / "checkpoint.npz").exists()


def test_ids_outside_the_vocabulary_are_refused_on_the_host(monkeypatch, tmp_path, corpus_file):
    cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    run = Run.start(_cfg(corpus_file), str(tmp_path / "run"))
    real = run.stream.next
    monkeypatch.setattr(run.stream, "next", lambda: (lambda x, y, r: (x + 1000, y, r))(*real()))
    with pytest.raises(TrainError, match=r"step 1: an id of the window is outside the vocabulary of \d+"):
        run.step()


def test_indices_checked_skips_the_ops_device_check_only_within_the_block():
    w = tg.randn(4, 3)
    with pytest.raises(tg.IndexOutOfRange):
        tg.nn.functional.embedding(tg.tensor(np.array([5])), w)
    with B.indices_checked("cpu") as dev:
        assert dev.check_indices is False
        tg.nn.functional.cross_entropy(tg.randn(2, 4), tg.tensor(np.array([1, 3])))
    assert B.get_device("cpu").check_indices is True
    with pytest.raises(tg.IndexOutOfRange):
        tg.nn.functional.cross_entropy(tg.randn(2, 4), tg.tensor(np.array([1, 4])))


# ----------------------------------------------------------------------------- clipping without a read
def _grads(device, shapes, scale, dtypes=None, seed=0):
    rng = np.random.default_rng(seed)
    ps = []
    for i, s in enumerate(shapes):
        dt = (dtypes or ["float64"] * len(shapes))[i]
        p = tg.zeros(*s, dtype=dt, device=device, requires_grad=True)
        p.grad = tg.tensor(rng.standard_normal(s) * scale, dtype=dt, device=device)
        ps.append(p)
    return ps


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, "inf"])
@pytest.mark.parametrize("scale", [0.01, 10.0])
def test_fused_clipping_equals_the_reading_one(device, norm_type, scale):
    shapes = [(3, 4), (5,), (2, 2, 2), (0,)]
    a, b = _grads(device, shapes, scale), _grads(device, shapes, scale)
    total = clip_grad_norm_(a, 1.5, norm_type)
    norm = clip_grad_norm_(b, 1.5, norm_type, error_if_nonfinite=False, sync=False)
    assert isinstance(norm, tg.Tensor) and norm.shape == () and norm.device.name == b[0].device.name
    assert norm.item() == pytest.approx(total, rel=1e-12)
    for p, q in zip(a, b):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-12, atol=1e-15)
        assert q.grad.shape == p.grad.shape and q.grad.dtype == p.grad.dtype


def test_fused_clipping_keeps_each_gradients_dtype_and_never_writes_into_the_old_arrays():
    ps = _grads("cpu", [(3,), (4,)], 10.0, dtypes=["float32", "float64"])
    old = [p.grad for p in ps]
    copies = [g.numpy().copy() for g in old]
    clip_grad_norm_(ps, 1.0, error_if_nonfinite=False, sync=False)
    assert [p.grad.dtype for p in ps] == [tg.float32, tg.float64]
    for g, c in zip(old, copies):
        np.testing.assert_array_equal(g.numpy(), c)
    total = math.sqrt(sum(float(np.sum(p.grad.numpy().astype(np.float64) ** 2)) for p in ps))
    assert total == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_fused_clipping_of_a_nonfinite_norm_leaves_the_gradients(bad):
    ps = _grads("cpu", [(3,), (2,)], 10.0)
    ps[1].grad.data[0] = bad
    before = [p.grad.numpy().copy() for p in ps]
    norm = clip_grad_norm_(ps, 1.0, error_if_nonfinite=False, sync=False)
    assert not math.isfinite(norm.item())
    for p, b in zip(ps, before):
        np.testing.assert_array_equal(p.grad.numpy(), b)


def test_fused_clipping_arguments():
    ps = _grads("cpu", [(3,)], 1.0)
    with pytest.raises(ValueError, match=r"sync=False reads no value back, so it cannot raise on a non-finite norm"):
        clip_grad_norm_(ps, 1.0, sync=False)
    mixed = ps + _grads("strict", [(2,)], 1.0)
    with pytest.raises(ValueError, match=r"sync=False needs every gradient on one device, they are on cpu, strict"):
        clip_grad_norm_(mixed, 1.0, error_if_nonfinite=False, sync=False)
    empty = clip_grad_norm_([tg.zeros(2, requires_grad=True)], 1.0, error_if_nonfinite=False, sync=False)
    assert empty.item() == 0.0


def test_fused_clipping_reads_nothing_and_runs_the_same_kernels_for_any_number_of_parameters(monkeypatch):
    fake = cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    launches = []
    for n in (3, 30):
        ps = _grads("cuda:0", [(4, 5)] * n, 10.0)
        before, reads = len(fake.log), len(fake.syncs)
        clip_grad_norm_(ps, 1.0, error_if_nonfinite=False, sync=False)
        assert fake.syncs[reads:] == []
        launches.append(sum(what in ("kernel", "matmul") for what, _ in fake.log[before:]))
    # the per-gradient reshapes and slices are views; the work is on the one flat buffer
    assert launches[0] == launches[1] and launches[0] <= 24, launches
