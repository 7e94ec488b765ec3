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
