"""The sequence ops' loop over time on CUDA as a captured CUDA graph (kernels/cuda.py's
GraphCache, ops/rnn.py's _time_loop), on the host with CuPy stood in for (tests/cuda_fake.py,
whose stream capture records operations and replays them at launch). Graph mode against the
Python loop, capture counts, launches per call, the switch, and the fake's capture model."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend as B
from tinygrad_rnn.kernels import cuda as cuda_kernels
from tinygrad_rnn.ops import rnn as rnnops

import cuda_fake

KINDS = {"RNN_TANH": (rnnops.RNNSequence, 1), "RNN_RELU": (rnnops.RNNSequence, 1),
         "LSTM": (rnnops.LSTMSequence, 4), "GRU": (rnnops.GRUSequence, 3), "PROJ": (rnnops.LSTMProjSequence, 4)}
I, H, P = 3, 4, 2


@pytest.fixture
def fake(monkeypatch):
    state = cuda_fake.install(monkeypatch, gpus=2)
    cuda_fake.cuda("cuda:0")
    return state


def _inputs(kind, rng, T, Bn, lengths, dtype):
    """Numpy arrays for the op's tensor arguments (x, weights, biases, initial states)."""
    gates = KINDS[kind][1]
    G, hid = gates * H, (P if kind == "PROJ" else H)
    xs = (sum(lengths), I) if lengths is not None else (T, Bn, I)
    b = len(lengths) if lengths is not None else Bn
    shapes = [xs, (G, I), (G, hid), (G,), (G,)]
    if kind == "PROJ":
        shapes += [(P, H), (b, P), (b, H)]
    else:
        shapes += [(b, H)] + ([(b, H)] if kind == "LSTM" else [])
    return [(rng.standard_normal(s) * 0.5).astype(dtype) for s in shapes]


def _run(kind, mode, arrays, lengths, reverse, dtype, seed):
    """Outputs and every input's gradient of loss = sum(out_k * w_k), on cuda:0 with `mode`."""
    op = KINDS[kind][0]
    steps = rnnops.PackedSteps(lengths) if lengths is not None else None
    ts = [tg.tensor(a, dtype=dtype, device="cuda:0", requires_grad=True) for a in arrays]
    args = ts if kind in ("LSTM", "PROJ") else ts + [None]
    kw = dict(reverse=reverse, steps=steps)
    if kind.startswith("RNN"):
        kw["nonlinearity"] = kind[4:].lower()
    with B.cuda_loop("cuda:0", mode):
        outs = op.apply(*args, **kw)
        rng = np.random.default_rng(seed)
        loss = sum((o * tg.tensor(rng.standard_normal(o.shape).astype(o.numpy().dtype), dtype=dtype,
                                  device="cuda:0")).sum() for o in outs)
        loss.backward()
    return [o.numpy() for o in outs] + [t.grad.numpy() for t in ts]


CASES = [(kind, lengths, reverse) for kind in KINDS for lengths in (None, [4, 3, 3, 1])
         for reverse in (False, True)]


@pytest.mark.parametrize("dtype", [tg.float64, tg.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("kind, lengths, reverse", CASES)
def test_graph_mode_equals_the_python_loop(fake, kind, lengths, reverse, dtype):
    """A replayed call (the second: the first runs uncaptured, then captures) gives the same
    outputs, final states and gradients as the Python loop, bit for bit: the same operations
    on the same numbers, only launched from a graph. The second call's inputs differ from the
    first's, so the replay computes on the contents of its launch, not of the capture."""
    np_dt = np.float64 if dtype is tg.float64 else np.float32
    rng = np.random.default_rng(1)
    T = 4 if lengths is None else lengths[0]
    first, second = (_inputs(kind, rng, T, 3, lengths, np_dt) for _ in range(2))
    _run(kind, "graph", first, lengths, reverse, dtype, seed=5)
    captured = fake.captures
    assert captured == 2  # the forward's loop and the backward's
    got = _run(kind, "graph", second, lengths, reverse, dtype, seed=6)
    assert fake.captures == captured and fake.launches == 2  # replayed, not captured again
    want = _run(kind, "python", second, lengths, reverse, dtype, seed=6)
    assert fake.captures == captured
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_the_first_call_of_a_shape_is_right_too(fake):
    rng = np.random.default_rng(2)
    a = _inputs("GRU", rng, 5, 2, None, np.float64)
    got = _run("GRU", "graph", a, None, False, tg.float64, seed=1)
    want = _run("GRU", "python", a, None, False, tg.float64, seed=1)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_new_shape_or_packing_captures_anew(fake):
    rng = np.random.default_rng(3)
    _run("LSTM", "graph", _inputs("LSTM", rng, 4, 3, None, np.float64), None, False, tg.float64, 1)
    assert fake.captures == 2
    _run("LSTM", "graph", _inputs("LSTM", rng, 5, 3, None, np.float64), None, False, tg.float64, 1)
    assert fake.captures == 4  # T differs
    _run("LSTM", "graph", _inputs("LSTM", rng, 4, 3, None, np.float64), None, True, tg.float64, 1)
    assert fake.captures == 6  # the direction differs
    _run("LSTM", "graph", _inputs("LSTM", rng, 4, 3, None, np.float32), None, False, tg.float32, 1)
    assert fake.captures == 8  # the dtype differs
    _run("LSTM", "graph", _inputs("LSTM", rng, 0, 0, [4, 2, 1], np.float64), [4, 2, 1], False, tg.float64, 1)
    assert fake.captures == 10
    _run("LSTM", "graph", _inputs("LSTM", rng, 0, 0, [4, 3, 1], np.float64), [4, 3, 1], False, tg.float64, 1)
    assert fake.captures == 12  # the batch sizes differ
    _run("LSTM", "graph", _inputs("LSTM", rng, 0, 0, [4, 2, 1], np.float64), [4, 2, 1], False, tg.float64, 1)
    _run("LSTM", "graph", _inputs("LSTM", rng, 4, 3, None, np.float64), None, False, tg.float64, 1)
    assert fake.captures == 12  # seen before: replayed


def _launches(fake, kind, T, lengths, mode):
    """Python-level launches (kernels, GEMMs, copies, graph launches) of a forward and backward
    after a first call of the same shape."""
    rng = np.random.default_rng(4)
    a = _inputs(kind, rng, T, 3, lengths, np.float32)
    _run(kind, mode, a, lengths, False, tg.float32, 1)
    before = len(fake.log)
    _run(kind, mode, a, lengths, False, tg.float32, 1)
    return sum(what in ("kernel", "matmul", "copy", "graph_launch") for what, _ in fake.log[before:])


@pytest.mark.parametrize("kind, packed", [("LSTM", False), ("GRU", True), ("PROJ", True), ("RNN_TANH", False)])
def test_launches_per_call_do_not_grow_with_the_sequence(fake, kind, packed):
    counts = {}
    for T in (3, 12):
        lengths = [T, T - 1, 2] if packed else None
        counts[T] = {mode: _launches(fake, kind, T, lengths, mode) for mode in ("graph", "python")}
    assert counts[3]["graph"] == counts[12]["graph"]  # O(1) in T
    assert counts[12]["python"] - counts[3]["python"] >= 9 * 3  # the Python loop: a few a step
    assert counts[12]["graph"] < counts[12]["python"]


def test_the_switch_from_the_environment(monkeypatch):
    monkeypatch.setenv(B.CUDA_LOOP_ENV, "python")
    fake = cuda_fake.install(monkeypatch, gpus=1)
    dev = cuda_fake.cuda("cuda:0")
    assert dev.cuda_loop == "python"
    rng = np.random.default_rng(5)
    a = _inputs("RNN_TANH", rng, 3, 2, None, np.float64)
    for _ in range(2):
        x, w_ih, w_hh, b_ih, b_hh, h0 = (tg.tensor(v, dtype=tg.float64, device="cuda:0") for v in a)
        rnnops.RNNSequence.apply(x, w_ih, w_hh, b_ih, b_hh, h0, None)
    assert fake.captures == 0 and fake.launches == 0
    dev.cuda_loop = "graph"
    for _ in range(2):
        rnnops.RNNSequence.apply(x, w_ih, w_hh, b_ih, b_hh, h0, None)
    assert fake.captures == 1 and fake.launches == 1


def test_graph_is_the_default(monkeypatch):
    monkeypatch.delenv(B.CUDA_LOOP_ENV, raising=False)
    cuda_fake.install(monkeypatch, gpus=1)
    assert cuda_fake.cuda("cuda:0").cuda_loop == "graph"


def test_a_bad_switch_value_is_named(monkeypatch):
    monkeypatch.setenv(B.CUDA_LOOP_ENV, "fast")
    cuda_fake.install(monkeypatch, gpus=1)
    dev = cuda_fake.cuda("cuda:0")
    with pytest.raises(ValueError, match=r"cuda:0: cuda_loop must be one of 'graph', 'python' "
                                         r"\(also \$TINYGRAD_RNN_CUDA_LOOP\), got 'fast'"):
        dev.cuda_loop
    with pytest.raises(ValueError, match="got 'graphs'"):
        dev.cuda_loop = "graphs"


def test_the_switch_is_for_cuda_devices_only():
    with pytest.raises(ValueError, match=r"cuda_loop: cpu is not a CUDA device"):
        with B.cuda_loop("cpu", "graph"):
            pass


def test_the_cpu_path_captures_nothing():
    before = cuda_kernels.GRAPHS.captures
    cuda_kernels.GRAPHS.clear()
    rng = np.random.default_rng(6)
    for kind, lengths in (("LSTM", None), ("GRU", [3, 2]), ("PROJ", [3, 1])):
        a = _inputs(kind, rng, 3, 2, lengths, np.float64)
        ts = [tg.tensor(v, dtype=tg.float64, requires_grad=True) for v in a]
        steps = rnnops.PackedSteps(lengths) if lengths else None
        args = ts if kind in ("LSTM", "PROJ") else ts + [None]
        out = KINDS[kind][0].apply(*args, steps=steps)
        out[0].sum().backward()
    assert cuda_kernels.GRAPHS.captures == before and not cuda_kernels.GRAPHS.entries


def test_the_cache_is_bounded(fake, monkeypatch):
    monkeypatch.setattr(cuda_kernels.GRAPHS, "size", 3)
    rng = np.random.default_rng(7)
    for T in (2, 3, 4, 5):
        _run("RNN_TANH", "graph", _inputs("RNN_TANH", rng, T, 2, None, np.float64), None, False, tg.float64, 1)
    assert len(cuda_kernels.GRAPHS.entries) == 3
    captures = fake.captures
    _run("RNN_TANH", "graph", _inputs("RNN_TANH", rng, 5, 2, None, np.float64), None, False, tg.float64, 1)
    assert fake.captures == captures  # the most recent stayed
    _run("RNN_TANH", "graph", _inputs("RNN_TANH", rng, 2, 2, None, np.float64), None, False, tg.float64, 1)
    assert fake.captures == captures + 2  # the oldest went


def test_a_graph_on_cuda_1_runs_on_gpu_1(monkeypatch):
    fake = cuda_fake.install(monkeypatch, gpus=2)
    cuda_fake.cuda("cuda:1")
    rng = np.random.default_rng(8)
    a = _inputs("GRU", rng, 3, 2, None, np.float64)
    for _ in range(2):
        x, w_ih, w_hh, b_ih, b_hh, h0 = (tg.tensor(v, dtype=tg.float64, device="cuda:1") for v in a)
        B.get_device("cuda:0").xp  # GPU 0 current, as another op might leave it
        rnnops.GRUSequence.apply(x, w_ih, w_hh, b_ih, b_hh, h0, None)
    assert fake.launches == 1
    assert {g for what, g in fake.log if what in ("capture", "graph_launch")} == {1}


# ----------------------------------------------------------------------------- the fake's capture model
def test_the_fake_records_during_capture_and_replays_on_launch(fake):
    import cupy
    a = cupy.asarray(np.arange(4.0))
    out = cupy.zeros((4,))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream, cupy.cuda.using_allocator(cupy.cuda.MemoryPool().malloc):
        stream.begin_capture()
        t = cupy.tanh(a)             # a new array: NaN until a launch
        cupy.multiply(t, 2.0, out=out)
        out += a
        out[0] = -1.0
        assert np.isnan(t.view(np.ndarray)).all()
        graph = stream.end_capture()
    np.testing.assert_array_equal(out.view(np.ndarray), np.zeros(4))  # nothing ran
    graph.launch()
    np.testing.assert_allclose(out.view(np.ndarray), np.r_[-1.0, 2 * np.tanh(np.arange(1.0, 4.0)) + np.arange(1, 4)])
    a[...] = 1.0
    graph.launch()  # on the contents at launch
    np.testing.assert_allclose(out.view(np.ndarray), np.r_[-1.0, [2 * np.tanh(1.0) + 1.0] * 3])


def test_the_fake_refuses_an_allocation_from_the_shared_pool_during_capture(fake):
    import cupy
    a = cupy.asarray(np.arange(4.0))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        with pytest.raises(cuda_fake.CaptureError, match="allocation from CuPy's shared memory pool"):
            cupy.tanh(a)
        with pytest.raises(cuda_fake.CaptureError, match="allocation"):
            a.copy()
        a[1:]  # a view allocates nothing
        stream.end_capture()


@pytest.mark.parametrize("read", [lambda a: a.sum().item(), lambda a: float(a[0]), lambda a: bool(a[0]),
                                  lambda a: int(a[0]), lambda a: a.tolist()])
def test_the_fake_refuses_a_read_during_capture(fake, read):
    import cupy
    a = cupy.asarray(np.arange(4.0))
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream, cupy.cuda.using_allocator(cupy.cuda.MemoryPool().malloc):
        stream.begin_capture()
        with pytest.raises(cuda_fake.CaptureError, match="while a stream captures"):
            read(a)
        stream.end_capture()
    assert fake.syncs == []


def test_a_loop_that_fails_during_capture_ends_the_capture(fake):
    import cupy
    cache = cuda_kernels.GraphCache()
    a = cupy.asarray(np.arange(3.0))
    calls = []

    def loop(x):
        calls.append(1)
        if len(calls) == 2:  # the capture
            float(x[0])

    with pytest.raises(cuda_fake.CaptureError):
        cache.run(B.get_device("cuda:0"), "k", loop, (a,), ((0, None),), ())
    assert fake.capture is None and not cache.entries


def test_the_step_benchmark_runs_both_loops_on_cuda(fake, capsys):
    """bench/rnn_step.py --device cuda: a runner per loop and their ratio (a tiny smoke run on
    the fake, not a timing)."""
    import importlib.util
    import json
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "rnn_step.py")
    spec = importlib.util.spec_from_file_location("rnn_step_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--device", "cuda", "--hidden", "8", "--batch", "2", "--seq", "4", "--vocab", "11", "--steps", "2",
                "--warmup", "0", "--rounds", "1", "--no-torch", "--lengths", "uniform"])
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith('{"bench": "rnn_step"')]
    assert {(r["impl"], r["packed"], r["cuda_loop"]) for r in recs} == {
        ("sequence", p, loop) for p in (True, False) for loop in ("graph", "python")}
    assert all("python_loop_over_graph_paired" in r for r in recs if r["cuda_loop"] == "graph")
    assert fake.launches > 0
