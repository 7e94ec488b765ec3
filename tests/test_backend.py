"""Backend kernels outside the Array API standard, against their NumPy definitions."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tinygrad_rnn.backend import get_device


# a small table takes the CPU's one-hot GEMM path, a large one (over 256 rows) the sort path
@given(rows=st.one_of(st.integers(1, 6), st.integers(257, 300)), n=st.integers(1, 30),
       tail=st.sampled_from([(), (3,), (2, 4)]), seed=st.integers(0, 2**16))
def test_scatter_add_rows_matches_add_at(rows, n, tail, seed):
    rng = np.random.default_rng(seed)
    index = rng.integers(0, rows, n)  # repeats are likely: they must accumulate
    values = rng.standard_normal((n,) + tail)
    start = rng.standard_normal((rows,) + tail)  # added to, not overwritten
    expected = start.copy()
    np.add.at(expected, index, values)
    for name in ("cpu", "strict"):
        dev = get_device(name)
        target = dev.from_host(start.copy())
        dev.scatter_add(target, dev.from_host(index), dev.from_host(values))
        np.testing.assert_allclose(dev.to_host(target), expected, rtol=1e-12, atol=1e-12)


def test_hold_freed_memory_stops_the_page_faults_of_reallocated_buffers():
    # in a process of its own: it changes the allocator of the whole process
    import subprocess
    import sys
    code = (
        "import resource, sys, numpy as np, tinygrad_rnn as tg\n"
        "def faults():\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "def churn():\n"
        "    f0 = faults()\n"
        "    for _ in range(20):\n"
        "        a = np.ones(1 << 19, np.float32); b = np.ones(1 << 19, np.float32); del a, b\n"
        "    return faults() - f0\n"
        "churn()\n"
        "before = churn()\n"
        "held = tg.backend.hold_freed_memory()\n"
        "churn()\n"
        "print(held, before, churn())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    held, before, after = r.stdout.split()
    if held != "True":
        pytest.skip("not glibc: the allocator has no such setting here")
    assert int(before) > 500 and int(after) < 20, (before, after)  # two 2 MB arrays, 20 times
