"""The sequence ops' loop over time on CUDA as a captured CUDA graph (kernels/cuda.py's
GraphCache, ops/rnn.py's _time_loop), on the host with CuPy stood in for (tests/cuda_fake.py,
whose stream capture records operations and replays them at launch). Graph mode against the
Python loop, capture counts (a key's first call runs the plain loop, its second captures, the
later ones replay), launches per call, the switch, and the fake's capture model."""
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
    """A replayed call (the third: the first runs the plain loop, the second runs uncaptured on
    the staging, then captures) gives the same outputs, final states and gradients as the
    Python loop, bit for bit: the same operations on the same numbers, only launched from a
    graph. The third call's inputs differ from the second's, so the replay computes on the
    contents of its launch, not of the capture."""
    np_dt = np.float64 if dtype is tg.float64 else np.float32
    rng = np.random.default_rng(1)
    T = 4 if lengths is None else lengths[0]
    first, second, third = (_inputs(kind, rng, T, 3, lengths, np_dt) for _ in range(3))
    _run(kind, "graph", first, lengths, reverse, dtype, seed=4)
    assert fake.captures == 0  # a first sighting: the plain loop
    _run(kind, "graph", second, lengths, reverse, dtype, seed=5)
    captured = fake.captures
    assert captured == 2 and fake.launches == 0  # the forward's loop and the backward's
    got = _run(kind, "graph", third, lengths, reverse, dtype, seed=6)
    assert fake.captures == captured and fake.launches == 2  # replayed, not captured again
    want = _run(kind, "python", third, lengths, reverse, dtype, seed=6)
    assert fake.captures == captured
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_the_first_and_second_calls_of_a_shape_are_right_too(fake):
    """The first (the plain loop on the caller's arrays) and the second (the loop on the
    staging, whose result is that call's, then the capture)."""
    rng = np.random.default_rng(2)
    for captures in (0, 2):
        a = _inputs("GRU", rng, 5, 2, None, np.float64)
        got = _run("GRU", "graph", a, None, False, tg.float64, seed=1)
        assert fake.captures == captures and fake.launches == 0
        want = _run("GRU", "python", a, None, False, tg.float64, seed=1)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_a_new_shape_or_packing_captures_anew(fake):
    rng = np.random.default_rng(3)

    def twice(T, lengths, reverse, dtype):
        """Two calls of a key: the first runs plainly, the second captures its two loops."""
        np_dt = np.float64 if dtype is tg.float64 else np.float32
        before = fake.captures
        _run("LSTM", "graph", _inputs("LSTM", rng, T, 3, lengths, np_dt), lengths, reverse, dtype, 1)
        assert fake.captures == before
        _run("LSTM", "graph", _inputs("LSTM", rng, T, 3, lengths, np_dt), lengths, reverse, dtype, 1)
        return fake.captures - before

    assert twice(4, None, False, tg.float64) == 2
    assert twice(5, None, False, tg.float64) == 2  # T differs
    assert twice(4, None, True, tg.float64) == 2  # the direction differs
    assert twice(4, None, False, tg.float32) == 2  # the dtype differs
    assert twice(0, [4, 2, 1], False, tg.float64) == 2
    assert twice(0, [4, 3, 1], False, tg.float64) == 2  # the batch sizes differ
    assert twice(0, [4, 2, 1], False, tg.float64) == 0  # seen before: replayed, both calls
    assert twice(4, None, False, tg.float64) == 0
    assert fake.captures == 12 and fake.launches == 8


def test_batch_sizes_never_seen_again_capture_nothing_and_run_as_the_python_loop(fake):
    """Training on sequences of random lengths: every batch's batch sizes are new, so a graph
    would never be replayed. Each call runs the plain loop on its own arrays: the same
    allocations, kernels, GEMMs and copies, in the same order, as the Python loop, and the
    same numbers; nothing is staged or captured."""
    rng = np.random.default_rng(10)
    batches = ([5, 5, 1], [5, 4, 2], [5, 3, 3], [5, 4, 1], [5, 2, 2], [5, 3, 1])
    assert len({tuple(rnnops.PackedSteps(n).bs) for n in batches}) == len(batches)
    for lengths in batches:
        a = _inputs("LSTM", rng, 0, 0, lengths, np.float32)
        k0 = len(fake.log)
        got = _run("LSTM", "graph", a, lengths, False, tg.float32, 1)
        k1 = len(fake.log)
        want = _run("LSTM", "python", a, lengths, False, tg.float32, 1)
        assert fake.log[k0:k1] == fake.log[k1:]
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    assert fake.captures == 0 and fake.launches == 0 and not cuda_kernels.GRAPHS.entries
    assert len(cuda_kernels.GRAPHS.seen) == 2 * len(batches)  # each batch's forward and backward


def test_a_key_seen_twice_is_captured_then_replayed_among_new_ones(fake):
    """Batch sizes [4, 3, 1] come back among new ones: captured at their second call, replayed
    at their third, each call equal to the Python loop, and the replay launches fewer."""
    rng = np.random.default_rng(11)
    calls = []
    for lengths, captures, launches in (([4, 3, 1], 0, 0), ([4, 2, 2], 0, 0), ([4, 3, 1], 2, 0),
                                        ([4, 4, 1], 0, 0), ([4, 3, 1], 0, 2)):
        a = _inputs("GRU", rng, 0, 0, lengths, np.float64)
        c0, l0, k0 = fake.captures, fake.launches, len(fake.log)
        got = _run("GRU", "graph", a, lengths, True, tg.float64, 2)
        assert (fake.captures - c0, fake.launches - l0) == (captures, launches), lengths
        k1 = len(fake.log)
        want = _run("GRU", "python", a, lengths, True, tg.float64, 2)
        calls.append([sum(what in ("kernel", "matmul", "copy", "graph_launch") for what, _ in fake.log[i:j])
                      for i, j in ((k0, k1), (k1, len(fake.log)))])
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
    assert calls[0][0] == calls[0][1] and calls[4][0] < calls[4][1]


def _launches(fake, kind, T, lengths, mode):
    """Python-level launches (kernels, GEMMs, copies, graph launches) of a forward and backward
    after two calls of the same shape (in graph mode: the plain loop, then the capture)."""
    rng = np.random.default_rng(4)
    a = _inputs(kind, rng, T, 3, lengths, np.float32)
    for _ in range(2):
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
    for _ in range(3):  # the plain loop, the capture, a replay
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
    assert not cuda_kernels.GRAPHS.seen


def _rnn(rng, T):
    _run("RNN_TANH", "graph", _inputs("RNN_TANH", rng, T, 2, None, np.float64), None, False, tg.float64, 1)


def test_the_cache_is_bounded(fake, monkeypatch):
    monkeypatch.setattr(cuda_kernels.GRAPHS, "size", 3)
    rng = np.random.default_rng(7)
    for T in (2, 3, 4, 5):
        _rnn(rng, T)
        _rnn(rng, T)
    assert fake.captures == 8 and len(cuda_kernels.GRAPHS.entries) == 3
    _rnn(rng, 5)
    assert fake.captures == 8 and fake.launches == 2  # the most recent stayed
    _rnn(rng, 2)
    assert fake.captures == 8 and fake.launches == 2  # the oldest went, and was forgotten: a first sighting
    _rnn(rng, 2)
    assert fake.captures == 10


def test_the_keys_seen_once_are_bounded_too(fake, monkeypatch):
    monkeypatch.setattr(cuda_kernels.GRAPHS, "size", 1)  # 4 keys seen once: two calls' forward and backward
    rng = np.random.default_rng(9)
    for T in (2, 3, 4):
        _rnn(rng, T)
    assert len(cuda_kernels.GRAPHS.seen) == 4 and fake.captures == 0
    _rnn(rng, 2)
    assert fake.captures == 0  # the oldest went: a first sighting again
    _rnn(rng, 4)
    assert fake.captures == 2 and len(cuda_kernels.GRAPHS.entries) == 1  # remembered: captured


def test_a_graph_on_cuda_1_runs_on_gpu_1(monkeypatch):
    fake = cuda_fake.install(monkeypatch, gpus=2)
    cuda_fake.cuda("cuda:1")
    rng = np.random.default_rng(8)
    a = _inputs("GRU", rng, 3, 2, None, np.float64)
    for _ in range(3):
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
        if len(calls) == 3:  # the capture (the first call ran plainly, the second on the staging)
            float(x[0])

    cache.run(B.get_device("cuda:0"), "k", loop, (a,), ((0, None),), ())
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
    # three steps: a graph runner's first runs the plain loop, its second captures, its third replays
    bench.main(["--device", "cuda", "--hidden", "8", "--batch", "2", "--seq", "4", "--vocab", "11", "--steps", "3",
                "--warmup", "0", "--rounds", "1", "--no-torch", "--lengths", "uniform"])
    recs = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith('{"bench": "rnn_step"')]
    assert {(r["impl"], r["packed"], r["cuda_loop"]) for r in recs} == {
        ("sequence", p, loop) for p in (True, False) for loop in ("graph", "python")}
    assert all("python_loop_over_graph_paired" in r for r in recs if r["cuda_loop"] == "graph")
    assert fake.launches > 0
