"""Data parallelism (tinygrad_rnn.distributed): a world of one without MPI, and two real
processes under mpiexec (skipped, with the reason, without the mpi extra)."""
import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import distributed as dist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "mpi", "worker.py")
MPIEXEC = shutil.which("mpiexec")
HAVE_MPI = importlib.util.find_spec("mpi4py") is not None and MPIEXEC is not None
needs_mpi = pytest.mark.skipif(not HAVE_MPI, reason="the mpi extra (mpi4py and mpich's mpiexec) is not installed: "
                                                    "pip install -e '.[mpi]'")


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in dist._LAUNCHER_VARS}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_without_mpiexec_a_world_of_one_that_imports_nothing():
    code = ("import sys; from tinygrad_rnn import distributed as d; w = d.init(); assert d.init() is w; "
            "assert (d.rank(), d.world_size(), d.is_main()) == (0, 1, True); d.barrier(); "
            "assert d.all_reduce_scalar(2.5) == 2.5; print('mpi4py' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_clean_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"  # no MPI was touched


def test_world_of_one_calls_leave_everything_as_it_is():
    if dist.launched_by_mpi():
        pytest.skip("this test process itself runs under an MPI launcher")
    m = tg.nn.Linear(3, 2)
    m(tg.randn(4, 3)).sum().backward()
    before = [p.grad.numpy().copy() for p in m.parameters()]
    dist.broadcast_parameters(m)
    dist.all_reduce_gradients(m.parameters())
    for b, p in zip(before, m.parameters()):
        np.testing.assert_array_equal(b, p.grad.numpy())
    with pytest.raises(ValueError, match=r"all_reduce_scalar: op must be 'sum', 'max' or 'min', got 'prod'"):
        dist.all_reduce_scalar(1.0, op="prod")


def _mpiexec(check, timeout=120):
    return subprocess.run([MPIEXEC, "-n", "2", sys.executable, WORKER, check], capture_output=True, text=True,
                          env=_clean_env(), timeout=timeout)


@needs_mpi
def test_two_processes_all_reduced_gradients_equal_the_full_batch_gradients():
    out = _mpiexec("gradients")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK gradients rank 0" in out.stdout and "OK gradients rank 1" in out.stdout


@needs_mpi
def test_an_exception_in_one_rank_ends_the_job_with_a_message_in_bounded_time():
    out = _mpiexec("raise", timeout=60)  # a hang would be a TimeoutExpired here
    assert out.returncode != 0
    assert "[rank 1/2] ValueError: rank 1 fails on purpose; aborting the MPI job" in out.stderr
    assert "passed the barrier" not in out.stdout


@needs_mpi
def test_the_example_under_two_processes_follows_the_one_process_run():
    example = os.path.join(ROOT, "examples", "data_parallel.py")
    one = subprocess.run([sys.executable, example, "--quick"], capture_output=True, text=True, env=_clean_env(),
                         timeout=300)
    two = subprocess.run([MPIEXEC, "-n", "2", sys.executable, example, "--quick"], capture_output=True, text=True,
                         env=_clean_env(), timeout=300)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    last = lambda out: float(out.strip().splitlines()[-1].split("loss")[1].split()[0])  # noqa: E731
    assert "(2 processes)" in two.stdout and two.stdout.count("step   60") == 1  # rank 0 alone prints
    assert abs(last(one.stdout) - last(two.stdout)) < 2e-3  # the same run, to float32 summation order


# ----------------------------------------------------------------------------- the train command
def _corpus(tmp_path):
    rng = np.random.default_rng(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "and", "runs", "away"]
    path = tmp_path / "corpus.txt"
    path.write_text(" ".join(rng.choice(words, 4000)))
    return str(path)


def _train_args(corpus, out, steps, *extra):
    return ["-m", "tinygrad_rnn", "train", "--data", corpus, "--out", str(out), "--steps", str(steps),
            "--batch", "4", "--seq-len", "16", "--hidden", "16", "--dtype", "float64", "--log-every", "1",
            "--eval-every", "5", "--sample-every", "1000", "--progress", "none", *extra]


def _run(args, n=None, timeout=240):
    cmd = ([MPIEXEC, "-n", str(n), sys.executable] if n else [sys.executable]) + args
    return subprocess.run(cmd, capture_output=True, text=True, env=_clean_env(), timeout=timeout, cwd=ROOT)


def _losses(out):
    """[(step, train loss)] of every step's line, and the last final validation loss (a run cut
    and resumed evaluates where the cut fell instead of at its periodic step, and keeps that line)."""
    import json
    with open(os.path.join(out, "metrics.jsonl")) as f:
        recs = [json.loads(line) for line in f]
    return [(r["step"], r["train_loss"]) for r in recs if not r.get("final")], \
        [r["val_loss"] for r in recs if r.get("final")][-1]


def _assert_same_run(a, b):
    (steps_a, final_a), (steps_b, final_b) = a, b
    assert [s for s, _ in steps_a] == [s for s, _ in steps_b]
    for (s, x), (_, y) in zip(steps_a + [("final", final_a)], steps_b + [("final", final_b)]):
        assert abs(x - y) <= 1e-12 * abs(x), (s, x, y)


@needs_mpi
def test_two_process_train_follows_the_one_process_run_step_for_step(tmp_path):
    corpus = _corpus(tmp_path)
    one, two = _run(_train_args(corpus, tmp_path / "one", 10)), _run(_train_args(corpus, tmp_path / "two", 10), n=2)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert "x 2 processes (data parallel)" in two.stdout and two.stdout.count("final (step 10") == 1
    _assert_same_run(_losses(tmp_path / "one"), _losses(tmp_path / "two"))  # float64: equal to 1e-12


@needs_mpi
def test_resume_under_two_processes_is_exact_and_under_another_count_with_dropout_is_refused(tmp_path):
    corpus = _corpus(tmp_path)
    drop = ("--layers", "2", "--dropout", "0.3")
    straight = _run(_train_args(corpus, tmp_path / "straight", 10, *drop), n=2)
    first = _run(_train_args(corpus, tmp_path / "cut", 5, *drop), n=2)
    again = _run(_train_args(corpus, tmp_path / "cut", 10, "--resume"), n=2)
    assert straight.returncode == first.returncode == again.returncode == 0, straight.stderr + again.stderr
    _assert_same_run(_losses(tmp_path / "straight"), _losses(tmp_path / "cut"))  # dropout masks too
    alone = _run(_train_args(corpus, tmp_path / "cut", 12, "--resume"))
    assert alone.returncode != 0
    assert "trained by 2 process(es) with dropout" in alone.stderr and "mpiexec -n 2" in alone.stderr
    # without dropout the random state does not matter: a 2-process run resumed by one process
    # carries on exactly (the checkpoint holds the whole batch's hidden state)
    _run(_train_args(corpus, tmp_path / "s2", 10), n=2)
    _run(_train_args(corpus, tmp_path / "c2", 5), n=2)
    one = _run(_train_args(corpus, tmp_path / "c2", 10, "--resume"))
    assert one.returncode == 0, one.stderr
    _assert_same_run(_losses(tmp_path / "s2"), _losses(tmp_path / "c2"))


@needs_mpi
def test_a_batch_that_does_not_divide_among_the_processes_is_refused(tmp_path):
    out = _run(_train_args(_corpus(tmp_path), tmp_path / "r", 3) + ["--batch", "3"], n=2, timeout=120)
    assert out.returncode != 0
    assert "--batch 3 is not divisible by the 2 processes of this MPI job" in out.stderr


@needs_mpi
def test_a_rank_failing_mid_run_ends_the_train_job(tmp_path):
    args = _train_args(_corpus(tmp_path), tmp_path / "f", 20)
    out = subprocess.run([MPIEXEC, "-n", "2", sys.executable, os.path.join(ROOT, "tests", "mpi", "train_fault.py"),
                          *args[2:]], capture_output=True, text=True, env=_clean_env(), timeout=120, cwd=ROOT)
    assert out.returncode != 0  # and it returned: no rank hangs in a collective
    assert "[rank 1/2] RuntimeError: rank 1 breaks at step 3 on purpose; aborting the MPI job" in out.stderr


# ----------------------------------------------------------------------------- one GPU per rank (issue 24)
@pytest.mark.parametrize("local_size, gpus, expected, shared", [
    (1, 1, [0], False), (2, 2, [0, 1], False), (4, 8, [0, 1, 2, 3], False),
    (2, 1, [0, 0], True), (5, 2, [0, 1, 0, 1, 0], True)])
def test_each_rank_takes_its_own_gpu_wrapping_round(local_size, gpus, expected, shared):
    got = [dist.gpu_for_rank(r, local_size, gpus) for r in range(local_size)]
    assert [g for g, _ in got] == expected and {s for _, s in got} == {shared}


def test_gpu_for_rank_refuses_what_cannot_be():
    with pytest.raises(dist.DistributedError, match="no CUDA GPU on this node"):
        dist.gpu_for_rank(0, 1, 0)
    with pytest.raises(ValueError, match=r"gpu_for_rank: local rank 2 is not in 0\.\.1"):
        dist.gpu_for_rank(2, 2, 2)


def test_nccl_is_used_by_all_ranks_or_none():
    assert dist.nccl_agreed([True, True, True])
    assert not dist.nccl_agreed([True, False, True])
    assert not dist.nccl_agreed([False])


def test_a_world_of_one_keeps_the_device_given(monkeypatch):
    monkeypatch.setattr(dist, "_world", dist._World(None, 0, 1))
    assert dist.rank_device("cuda") == ("cuda", None) and dist.rank_device("cpu") == ("cpu", None)


def test_under_mpi_cuda_means_the_local_ranks_gpu(monkeypatch):
    monkeypatch.setattr(dist, "_world", dist._World(object(), 5, 8, local_rank=1, local_size=4))
    assert dist.rank_device("cuda", gpu_count=4) == ("cuda:1", None)
    assert dist.rank_device("cuda:3", gpu_count=4) == ("cuda:3", None)  # an explicit index is kept
    assert dist.rank_device("cpu", gpu_count=4) == ("cpu", None)
    device, note = dist.rank_device("cuda", gpu_count=3)
    assert device == "cuda:1" and note.startswith("4 processes on a node with 3 GPU(s): GPUs are shared")


class _FakeComm:
    """One rank's view of a collective world: the other ranks' NCCL verdicts are given."""

    def __init__(self, rank, others_ok=True, other_uuids=("gpu-b",)):
        self.rank, self.others_ok, self.other_uuids = rank, others_ok, list(other_uuids)
        self.votes = []

    def allgather(self, x):
        if not isinstance(x, bool):  # the GPUs' uuids
            return [x] + self.other_uuids
        self.votes.append(int(x))
        return [x, self.others_ok if not isinstance(self.others_ok, list) else self.others_ok.pop(0)]

    def bcast(self, x, root=0):
        return x if self.rank == root else "uid-from-0"


def _nccl_fake(monkeypatch, fail_make=False, fail_import=False):
    import types
    import cuda_fake
    fake = cuda_fake.install(monkeypatch, gpus=2)
    made = []

    class Comm:
        def __init__(self, n, uid, rank):
            if fail_make:
                raise RuntimeError("NCCL failed to initialise")
            self.device, self.destroyed = fake.current, False
            made.append(self)

        def destroy(self):
            self.destroyed = True

    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.get_unique_id = lambda: "uid-0"
    nccl.NcclCommunicator = Comm
    cupy = sys.modules["cupy"]
    cupy.cuda.runtime.getDeviceProperties = lambda i: {"uuid": f"gpu-{'ab'[i]}"}
    if not fail_import:
        cupy.cuda.nccl = nccl
        monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    else:
        monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", None)
    return fake, made


def test_nccl_set_up_on_the_ranks_gpu_when_every_rank_agrees(monkeypatch):
    fake, made = _nccl_fake(monkeypatch)
    w = dist._World(_FakeComm(0), 0, 2, 0, 2)
    dev = type("D", (), {"index": 0, "kind": "cuda"})()
    comm, stream = dist._nccl(w, dev)
    assert made == [comm] and comm.device == 0 and stream.ptr == 1000 and w.comm.votes == [1, 1]
    assert dist._nccl(w, dev) == (comm, stream)  # made once
    # rank 1, on GPU 1: its communicator and stream are GPU 1's, whatever GPU was current
    w1 = dist._World(_FakeComm(1, other_uuids=("gpu-a",)), 1, 2, 1, 2)
    comm1, stream1 = dist._nccl(w1, type("D", (), {"index": 1, "kind": "cuda"})())
    assert comm1.device == 1 and stream1.ptr == 1001 and fake.current == 0


def test_one_ranks_failure_sends_every_rank_to_the_host(monkeypatch):
    fake, made = _nccl_fake(monkeypatch)
    dev = type("D", (), {"index": 0, "kind": "cuda"})()
    # another rank could not set NCCL up: this one never makes a communicator
    w = dist._World(_FakeComm(0, others_ok=False), 0, 2, 0, 2)
    assert dist._nccl(w, dev) is None and made == [] and w.comm.votes == [1]
    # another rank's communicator failed after ours was made: ours is destroyed
    w = dist._World(_FakeComm(0, others_ok=[True, False]), 0, 2, 0, 2)
    assert dist._nccl(w, dev) is None and len(made) == 1 and made[0].destroyed
    # two ranks on one GPU: refused by the ranks together
    w = dist._World(_FakeComm(0, other_uuids=("gpu-a",)), 0, 2, 0, 2)
    assert dist._nccl(w, dev) is None and w.comm.votes == [0]


def test_a_rank_without_nccl_votes_for_the_host(monkeypatch):
    fake, made = _nccl_fake(monkeypatch, fail_import=True)
    w = dist._World(_FakeComm(0), 0, 2, 0, 2)
    assert dist._nccl(w, type("D", (), {"index": 0, "kind": "cuda"})()) is None and w.comm.votes == [0]
    fake, made = _nccl_fake(monkeypatch, fail_make=True)
    w = dist._World(_FakeComm(0), 0, 2, 0, 2)
    assert dist._nccl(w, type("D", (), {"index": 0, "kind": "cuda"})()) is None and w.comm.votes == [1, 0]


@needs_mpi
def test_two_processes_on_one_node_have_local_ranks_and_their_own_gpu():
    out = _mpiexec("local")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK local rank 0" in out.stdout and "OK local rank 1" in out.stdout
