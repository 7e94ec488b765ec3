"""The elementwise kernels of the recurrent cells (ops/rnn.py's KERNELS) and of the fused
softmax cross-entropy (ops/nn.py's), checked without a GPU.

- The CPU build (kernels/cpu.py: the kernel bodies in vectorised loops, built by the host
  C++ compiler) against the portable array-API forms: float64 to 1e-13, float32 to a few
  ulp, at sizes that leave vector remainders; and its math (tanh, sigmoid) against float64.
- The CUDA form of the same bodies (kernels.cuda_body, with CUDA's own math prelude, cuda_prelude.cuh),
  wrapped in a flat loop over the element index `i` as a CuPy ElementwiseKernel runs it and
  compiled as host C++: that checks the index arithmetic the GPU compiles; the GPU test in
  test_rnn.py (skipped where no GPU is) checks the rest.
- The build machinery: cache, the switch, a missing or failing compiler, argument errors.
"""
import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import backend, kernels, optim
from tinygrad_rnn.errors import DTypeError, ShapeError
from tinygrad_rnn.kernels import Kernel
from tinygrad_rnn.ops import nn as nnops
from tinygrad_rnn.ops import rnn as rnnops

CXX = kernels.cpu.find_compiler()
needs_cxx = pytest.mark.skipif(CXX is None, reason="no host C++ compiler to build the kernels with")

CPU = tg.get_device("cpu")
rng = np.random.default_rng(0)


def _device(name):
    """The device, with its kernels built (skipped where it has none)."""
    if name == "cuda":
        ok, why = tg.cuda_available()
        if not ok:
            pytest.skip(f"cuda: {why}")
    elif CXX is None:
        pytest.skip("no host C++ compiler to build the CPU kernels with")
    dev = tg.get_device(name)
    assert dev.use_kernels, "the kernels are switched off (TINYGRAD_RNN_CPU_KERNELS=0?)"
    assert rnnops.device_kernels(dev) is not None, f"the {name} kernels did not build"
    return dev


@pytest.fixture
def cpu_kernels_on():
    return _device("cpu")


def R(dt, *shape):
    return (rng.standard_normal(shape) * 2).astype(dt)


def E(dt, *shape):
    return np.full(shape, np.nan, dtype=dt)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("B,H", [(1, 1), (3, 5), (2, 37)])  # 37: a vector body and a remainder
def test_kernels_match_the_portable_forms(device, dt, B, H):
    dev = _device(device)
    tol = dict(rtol=1e-13, atol=1e-14) if dt == np.float64 else dict(rtol=2e-6, atol=2e-6)

    def both(fn, args, outs):
        """fn run by the kernels and by the portable form, each into its own fresh outputs (host arrays)."""
        res = []
        for off in (False, True):
            o = [dev.from_host(E(dt, *s)) for s in outs]
            with contextlib.ExitStack() as stack:
                if off:
                    stack.enter_context(backend.kernels_off(dev))
                fn(dev, *[dev.from_host(a) if isinstance(a, np.ndarray) else a for a in args(o)])
            res.append([dev.to_host(a) for a in o])
        for k, p in zip(*res):
            np.testing.assert_allclose(k, p, err_msg=f"{fn.__name__} {np.dtype(dt).name} on {device}", **tol)
        return res[1]

    for nl in ("tanh", "relu"):
        gx, gh, dh = R(dt, B, H), R(dt, B, H), R(dt, B, H)
        (h,) = both(rnnops.rnn_forward, lambda o: (gx, gh, o[0], nl), [(B, H)])
        both(rnnops.rnn_backward, lambda o: (h, dh, o[0], nl), [(B, H)])
    gx, gh, c, dh, dc = R(dt, B, 4 * H), R(dt, B, 4 * H), R(dt, B, H), R(dt, B, H), R(dt, B, H)
    h, c_new, act = both(rnnops.lstm_forward, lambda o: (gx, gh, c, o[2], o[0], o[1]), [(B, H), (B, H), (B, 4 * H)])
    both(rnnops.lstm_backward, lambda o: (act, c, c_new, dh, dc, o[0], o[1]), [(B, 4 * H), (B, H)])
    for b_hh in (R(dt, 3 * H), None):
        gx, gh, hp, dh = R(dt, B, 3 * H), R(dt, B, 3 * H), R(dt, B, H), R(dt, B, H)
        h, act = both(rnnops.gru_forward, lambda o: (gx, gh, b_hh, hp, o[1], o[0]), [(B, H), (B, 4 * H)])
        both(rnnops.gru_backward, lambda o: (act, hp, dh, o[0], o[1], o[2]), [(B, 3 * H), (B, 3 * H), (B, H)])


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("N,C,scale", [(1, 1, 1.0), (3, 5, 1.0), (7, 65, 1.0), (4, 9, 80.0)])
def test_cross_entropy_kernels_match_the_portable_form(device, dt, N, C, scale):
    from tinygrad_rnn.nn import functional as F
    dev = _device(device)
    rng_ = np.random.default_rng(N * C)
    logits = (rng_.standard_normal((C, N)) * scale).astype(dt).T  # a transposed view, as a head may give
    targets = rng_.integers(0, C, N).astype(np.int32)  # int32 targets are widened for the kernel
    padded = np.where(np.arange(N) % 3 == 1, -100, targets)  # padding's rows, as a padded batch has
    tol = dict(rtol=1e-13, atol=1e-13) if dt == np.float64 else dict(rtol=3e-6, atol=3e-6)
    # ignore_index: none; PyTorch's -100 on every third row; class 0, which some targets are
    for tgt, ignore in ((targets, None), (padded, -100), (targets, 0)):
        for reduction in ("mean", "sum", "none"):
            if reduction == "mean" and ignore is not None and np.all(tgt == ignore):
                continue  # a mean over no row at all: 0/0
            res = []
            for off in (False, True):
                x = tg.tensor(logits, device=dev, requires_grad=True)
                with (backend.kernels_off(dev) if off else contextlib.nullcontext()):
                    loss = F.cross_entropy(x, tg.tensor(tgt, device=dev), reduction=reduction, ignore_index=ignore)
                    (loss * 1.5).sum().backward()
                res.append((loss.numpy(), x.grad.numpy()))
            for a, b in zip(*res):
                np.testing.assert_allclose(a, b, err_msg=f"{reduction} ignore {ignore} {np.dtype(dt).name} on {device}",
                                           **tol)
            if ignore is not None:  # the ignored rows: no loss, no gradient
                assert np.all(res[0][1][tgt == ignore] == 0)
                if reduction == "none":
                    assert np.all(res[0][0][tgt == ignore] == 0)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("V,D,shape", [(1, 1, (1,)), (5, 7, (4, 3)), (65, 33, (16, 9)), (3, 256, (40,))])
def test_embedding_backward_kernel_matches_the_portable_form(device, dt, V, D, shape):
    # repeated indices accumulate (every V is smaller than the lookup but the first); D with
    # vector remainders; int32 indices are widened for the kernel
    dev = _device(device)
    rng_ = np.random.default_rng(V * D)
    ids = rng_.integers(0, V, shape).astype(np.int32)
    table = rng_.standard_normal((V, D)).astype(dt)
    g = rng_.standard_normal(shape + (D,)).astype(dt)
    ref = np.zeros((V, D))
    np.add.at(ref, ids.reshape(-1), g.reshape(-1, D).astype(np.float64))
    res = []
    for off in (False, True):
        w = tg.tensor(table, device=dev, requires_grad=True)
        with (backend.kernels_off(dev) if off else contextlib.nullcontext()):
            out = tg.nn.functional.embedding(tg.tensor(ids, device=dev), w)
            (out * tg.tensor(g, device=dev)).sum().backward()
        res.append(w.grad.numpy())
    tol = dict(rtol=1e-13, atol=1e-13) if dt == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for got in res:
        np.testing.assert_allclose(got, ref, **tol)
    if dt == np.float64 and device == "cpu":  # in index order, as np.add.at adds: the same bits
        np.testing.assert_array_equal(res[0], ref)


def test_lstm_activations_may_overwrite_the_projection(cpu_kernels_on):
    # the sequence op passes one buffer as gx and act: the kernel reads a unit's gate
    # columns before it writes them
    B, H = 3, 9
    gx, gh, c = R(np.float64, B, 4 * H), R(np.float64, B, 4 * H), R(np.float64, B, H)
    ref = [E(np.float64, B, H), E(np.float64, B, H), E(np.float64, B, 4 * H)]
    with backend.kernels_off(CPU):
        rnnops.lstm_forward(CPU, gx, gh, c, ref[2], ref[0], ref[1])
    buf = gx.copy()
    h, c_new = E(np.float64, B, H), E(np.float64, B, H)
    rnnops.lstm_forward(CPU, buf, gh, c, buf, h, c_new)
    for a, b in zip((h, c_new, buf), ref):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("layer", [tg.nn.LSTM, tg.nn.GRU, tg.nn.RNN])
def test_float32_layers_with_and_without_cpu_kernels(cpu_kernels_on, layer):
    # what training runs: float32 through the vectorised math, against the portable form
    tg.manual_seed(0)
    m = layer(6, 9, num_layers=2, bidirectional=True)
    x = tg.randn(11, 3, 6)
    res = []
    for off in (False, True):
        with contextlib.ExitStack() as stack:
            if off:
                stack.enter_context(backend.kernels_off(CPU))
            m.zero_grad()
            out, _ = m(x)
            (out * out).sum().backward()
            res.append([out.numpy()] + [p.grad.numpy() for p in m.parameters()])
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the math
def _math_kernels():
    return kernels.for_device(CPU, "test_math", {f: Kernel("T x", "T y", f"y = tg_{f}(x);")
                                                 for f in ("tanh", "sigmoid", "exp", "log")})


def _ulp_errors(y, x, exact):
    ref = exact(x.astype(np.float64))
    f32 = np.finfo(np.float32)
    normal = np.isfinite(x) & (np.abs(ref) >= f32.tiny) & (np.abs(ref) <= f32.max)
    ulp = np.spacing(np.abs(ref[normal]).astype(np.float32)).astype(np.float64)
    return np.abs(y[normal] - ref[normal]) / ulp


def test_float32_tanh_and_sigmoid_within_a_few_ulp(cpu_kernels_on):
    ks = _math_kernels()
    x = np.concatenate([np.linspace(-100, 100, 400001), np.logspace(-40, 2, 100000),
                        -np.logspace(-40, 2, 100000)]).astype(np.float32)
    for name, exact, bound in (("tanh", np.tanh, 2.0), ("sigmoid", lambda v: 1 / (1 + np.exp(-v)), 3.0),
                               ("exp", np.exp, 1.0)):
        y = np.empty_like(x)
        ks[name](x, y)
        err = _ulp_errors(y, x, exact)
        assert err.max() <= bound, f"{name}: {err.max():.2f} ulp at x = {x[np.argmax(err)]}"
    y = np.empty_like(x)
    ks["tanh"](x, y)
    tiny = np.abs(x) < 1e-30  # tanh(x) = x there, subnormals included
    np.testing.assert_array_equal(y[tiny], x[tiny])


def test_float32_math_special_values(cpu_kernels_on):
    ks = _math_kernels()
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, -87.5, -200.0], dtype=np.float32)
    t, s = np.empty_like(x), np.empty_like(x)
    ks["tanh"](x, t)
    ks["sigmoid"](x, s)
    np.testing.assert_array_equal(t, [0.0, -0.0, 1.0, -1.0, np.nan, 1.0, -1.0, -1.0, -1.0])
    assert np.signbit(t[1])
    np.testing.assert_array_equal(s, [0.5, 0.5, 1.0, 0.0, np.nan, 1.0, 0.0, 0.0, 0.0])  # under FLT_MIN: 0
    e = np.empty_like(x)
    ks["exp"](x, e)
    np.testing.assert_array_equal(e, [1.0, 1.0, np.inf, 0.0, np.nan, np.inf, 0.0, 0.0, 0.0])
    edge = np.array([88.72283, np.nextafter(np.float32(88.72283), np.float32(100))], dtype=np.float32)
    ks["exp"](edge, e[:2])
    assert np.isfinite(e[0]) and e[0] == np.float32(np.exp(np.float64(edge[0]))) and e[1] == np.inf  # FLT_MAX's edge


def test_float64_math_is_the_portable_forms(cpu_kernels_on):
    ks = _math_kernels()
    x = np.concatenate([np.linspace(-40, 40, 10001), [0.0, np.inf, -np.inf]])
    t, s = np.empty_like(x), np.empty_like(x)
    ks["tanh"](x, t)
    ks["sigmoid"](x, s)
    # to a rounding or two: the compiler may fuse the sigmoid's multiply-add
    np.testing.assert_allclose(t, np.tanh(x), rtol=4.5e-16, atol=0)
    np.testing.assert_allclose(s, 0.5 * np.tanh(0.5 * x) + 0.5, rtol=4.5e-16, atol=1.2e-16)


# ----------------------------------------------------------------------------- calling
def test_kernel_arguments_any_strides_like_cupy(cpu_kernels_on):
    k = rnnops.device_kernels(CPU)["rnn_tanh_fwd"]
    a, b = R(np.float64, 6, 4), R(np.float64, 4, 6)
    out = np.zeros((4, 6)).T  # a transposed (not C-contiguous) output is written through a copy
    k(a, b.T, out)
    np.testing.assert_allclose(out, np.tanh(a + b.T), rtol=1e-15)


def test_kernel_argument_errors(cpu_kernels_on):
    ks = rnnops.device_kernels(CPU)
    a = R(np.float64, 2, 3)
    with pytest.raises(TypeError, match=r"kernel rnn\.rnn_tanh_fwd: takes 3 arguments \(gx, gh, h\), got 2"):
        ks["rnn_tanh_fwd"](a, a)
    with pytest.raises(DTypeError, match=r"argument gh must be a float64 NumPy array like the others, got float32"):
        ks["rnn_tanh_fwd"](a, a.astype(np.float32), np.empty_like(a))
    with pytest.raises(DTypeError, match=r"runs on float32 or float64 arrays, got int64"):
        ks["rnn_tanh_fwd"](a.astype(np.int64), a, np.empty_like(a))
    with pytest.raises(ShapeError, match=r"gx has 6 elements, h 4"):
        ks["rnn_tanh_fwd"](a, a, np.empty(4))
    with pytest.raises(ShapeError, match=r"6 elements are not whole rows of H=4"):
        ks["lstm_fwd"](R(np.float64, 2, 16), R(np.float64, 2, 16), a, 4, np.empty_like(a), np.empty_like(a),
                       np.empty((2, 16)))


# ----------------------------------------------------------------------------- building
@needs_cxx
def test_the_build_is_cached_per_source(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_RNN_CACHE", str(tmp_path))
    ks = kernels.cpu.build("rnn", rnnops.KERNELS)
    assert ks is not None
    (so,) = [p for p in tmp_path.iterdir() if p.suffix == ".so"]
    stamp = so.stat().st_mtime_ns
    assert kernels.cpu.build("rnn", rnnops.KERNELS) is not None
    assert [p for p in tmp_path.iterdir() if p.suffix == ".so"] == [so] and so.stat().st_mtime_ns == stamp
    other = dict(rnnops.KERNELS, extra=Kernel("T x", "T y", "y = x + 1;"))
    assert kernels.cpu.build("rnn", other) is not None  # another source: another file
    assert len([p for p in tmp_path.iterdir() if p.suffix == ".so"]) == 2


@needs_cxx
def test_a_failing_compiler_warns_and_the_portable_form_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_RNN_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", shutil.which("false"))
    with pytest.warns(kernels.cpu.KernelBuildWarning, match=r"could not build the CPU kernels of 'rnn', so the "
                                                             r"portable NumPy form runs"):
        assert kernels.cpu.build("rnn", rnnops.KERNELS) is None
    # remembered: the next process does not try those flags again, and says why once more
    with pytest.warns(kernels.cpu.KernelBuildWarning, match="exit status 1"):
        assert kernels.cpu.build("rnn", rnnops.KERNELS) is None


def test_a_missing_named_compiler_warns(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.warns(kernels.cpu.KernelBuildWarning, match=r"CXX='no-such-compiler-here' is not a program"):
        assert kernels.cpu.build("rnn", rnnops.KERNELS) is None


def test_no_compiler_at_all_is_silent(monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", "")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.cpu.build("rnn", rnnops.KERNELS) is None


@needs_cxx
def test_a_layer_without_kernels_gives_the_same_numbers(tmp_path):
    # a fresh process with a failing compiler: the layers run the portable form, same results
    code = (
        "import numpy as np, warnings, tinygrad_rnn as tg\n"
        "warnings.simplefilter('ignore')\n"
        "tg.manual_seed(0)\n"
        "m = tg.nn.LSTM(3, 4, dtype=tg.float64)\n"
        "x = tg.randn(5, 2, 3, dtype=tg.float64)\n"
        "out, _ = m(x); out.sum().backward()\n"
        "from tinygrad_rnn.ops.rnn import device_kernels\n"
        "print(device_kernels(tg.get_device('cpu')) is not None)\n"
        "np.save(__import__('sys').argv[1], np.concatenate([out.numpy().ravel(), m.weight_hh_l0.grad.numpy().ravel()]))\n")
    res = {}
    for label, extra in (("built", {}), ("off", {"TINYGRAD_RNN_CPU_KERNELS": "0"}),
                         ("failed", {"CXX": shutil.which("false"), "TINYGRAD_RNN_CACHE": str(tmp_path)})):
        env = {**os.environ, **extra}
        path = str(tmp_path / f"{label}.npy")
        r = subprocess.run([os.sys.executable, "-c", code, path], env=env, capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(label == "built")
        res[label] = np.load(path)
    np.testing.assert_allclose(res["built"], res["off"], rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(res["off"], res["failed"])


@needs_cxx
def test_the_switch_turns_the_kernels_off(monkeypatch):
    monkeypatch.setenv("TINYGRAD_RNN_CPU_KERNELS", "0")
    dev = backend.CPUDevice()
    assert dev.use_kernels is False and rnnops.device_kernels(dev) is None
    dev.use_kernels = True
    assert rnnops.device_kernels(dev) is not None


# ----------------------------------------------------------------------------- host loops
# ops/rnn.cpp: the sequence ops' loops over time in C++ on the CPU, on a pool of
# threads that NumPy's OpenBLAS shares; the Python loop beside them stays the form every other
# device runs.
needs_host_loops = needs_cxx


@needs_host_loops
def test_numpys_blas_is_found_and_the_host_loops_are_built(cpu_kernels_on):
    blas = kernels.cpu.numpy_blas()
    if blas is not None:  # Linux with NumPy's own OpenBLAS, as CI has
        assert os.path.exists(blas.path) and blas.get_num_threads and blas.set_threads_callback
    ks = rnnops.device_kernels(CPU)
    assert {"seq_fwd", "seq_bwd"} <= set(ks)
    assert repr(ks["seq_fwd"]) == "<CPU host function rnn.seq_fwd>"


def _layer_results(case, dt):
    mode = case["mode"]
    tg.manual_seed(case["seed"])
    kw = {"nonlinearity": mode[4:].lower()} if mode.startswith("RNN") else {}
    cls = {"LSTM": tg.nn.LSTM, "GRU": tg.nn.GRU}.get(mode, tg.nn.RNN)
    m = cls(case["I"], case["H"], num_layers=case["L"], bidirectional=case["bi"], bias=case["bias"], dtype=dt, **kw)
    D = 2 if case["bi"] else 1
    x = tg.randn(case["T"], case["B"], case["I"], dtype=dt, requires_grad=True)
    state = None
    if case["given_state"]:
        state = [tg.randn(case["L"] * D, case["B"], case["H"], dtype=dt, requires_grad=True)
                 for _ in range(2 if mode == "LSTM" else 1)]
    out, fin = m(x, None if state is None else tuple(state) if mode == "LSTM" else state[0])
    fins = list(fin) if mode == "LSTM" else [fin]
    loss = (out * out).sum() + sum((f * f * 0.5).sum() for f in fins)
    loss.backward()
    return ([out.numpy()] + [f.numpy() for f in fins] + [x.grad.numpy()]
            + [s.grad.numpy() for s in state or ()] + [p.grad.numpy() for p in m.parameters()])


@needs_host_loops
@settings(deadline=None)
@given(case=st.fixed_dictionaries(dict(
    mode=st.sampled_from(["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]), T=st.integers(1, 6), B=st.integers(1, 11),
    I=st.integers(1, 5), H=st.integers(1, 9), L=st.integers(1, 2), bi=st.booleans(), given_state=st.booleans(),
    bias=st.booleans(), seed=st.integers(0, 2 ** 16))), dt=st.sampled_from([tg.float64, tg.float32]),
    threads=st.sampled_from([0, 1, 2, 3]))
def test_host_loops_match_the_python_loop(case, dt, threads):
    # the packed GEMM's row blocks and column panels, whole and cut, as B and H vary; the rows
    # (B >= threads) or hidden units split over `threads` threads (0: as many as NumPy's BLAS)
    calls = []
    real = rnnops._host_loop

    def spy(dev, name, dtype):
        loop = real(dev, name, dtype)
        calls.append(loop is not None)
        return loop
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rnnops, "HOST_THREADS", threads)
        mp.setattr(rnnops, "_host_loop", spy)
        in_c = _layer_results(case, dt)
        mp.setattr(rnnops, "_host_loop", lambda dev, name, dtype: None)
        in_python = _layer_results(case, dt)
    assert calls and all(calls)  # every layer and direction, both ways, ran in C++
    tol = 1e-13 if dt == tg.float64 else 1e-5  # the same steps; the GEMMs may sum in another order
    for k, (a, b) in enumerate(zip(in_c, in_python)):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"array {k}")


def _threaded_layer_results(cls, dt, threads, T=9, B=29, lengths=None):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rnnops, "HOST_THREADS", threads)
        tg.manual_seed(0)
        m = cls(7, 37, num_layers=2, bidirectional=True, dtype=dt)
        x = tg.randn(T, B, 7, dtype=dt, requires_grad=True)
        states = []
        if lengths is None:
            out, _ = m(x)
        else:  # with initial states: each thread's rows take theirs (reverse: at their own last step)
            states = [tg.randn(4, B, 37, dtype=dt, requires_grad=True) for _ in range(2 if cls is tg.nn.LSTM else 1)]
            packed = tg.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            out = m(packed, tuple(states) if len(states) == 2 else states[0])[0].data
        (out * out).sum().backward()
        return [out.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in list(m.parameters()) + states]


@needs_host_loops
@pytest.mark.parametrize("cls", [tg.nn.LSTM, tg.nn.GRU, tg.nn.RNN])
@pytest.mark.parametrize("dt", [tg.float32, tg.float64])
@pytest.mark.parametrize("B", [29, 2])
def test_the_host_loops_results_do_not_depend_on_the_thread_count(cpu_kernels_on, cls, dt, B):
    # every element of the GEMM is one sum over k in order, whichever thread, register block
    # or column panel it falls in; B=2 splits the 37 hidden units (some threads get none)
    one = _threaded_layer_results(cls, dt, 1, B=B)
    for threads in (0, 2, 3, 7):
        for k, (a, b) in enumerate(zip(one, _threaded_layer_results(cls, dt, threads, B=B))):
            assert np.array_equal(a, b), f"{threads} threads, array {k}"


@needs_host_loops
@pytest.mark.parametrize("cls", [tg.nn.LSTM, tg.nn.GRU, tg.nn.RNN])
def test_the_packed_host_loops_results_do_not_depend_on_the_thread_count(cpu_kernels_on, cls):
    # a packed batch's steps run every row count from 29 down to 1, so the GEMM's row blocks
    # take every size (tg_pgemm evens them out), and each thread's rows (runs of them, dealt
    # longest first) run out at different steps; rows of length 0 never run
    lengths = np.random.default_rng(3).permutation(np.arange(29) % 10)
    one = _threaded_layer_results(cls, tg.float64, 1, lengths=lengths)
    for threads in (0, 2, 3, 5):
        for k, (a, b) in enumerate(zip(one, _threaded_layer_results(cls, tg.float64, threads, lengths=lengths))):
            assert np.array_equal(a, b), f"{threads} threads, array {k}"


needs_blas_callback = pytest.mark.skipif(
    CXX is None or kernels.cpu.numpy_blas() is None or kernels.cpu.numpy_blas().set_threads_callback is None,
    reason="NumPy's BLAS takes no threading callback (not OpenBLAS >= 0.3.27)")


@needs_blas_callback
def test_numpys_blas_runs_its_jobs_on_the_host_loops_threads(cpu_kernels_on):
    lib = rnnops.device_kernels(CPU) and kernels.cpu._shared_pool
    assert lib is not None
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 400)), rng.standard_normal((400, 500))
    before = lib.tg_blas_pool_calls()
    np.testing.assert_allclose(a @ b, np.einsum("ik,kj->ij", a, b), rtol=1e-12, atol=1e-12)
    threads = ctypes.CFUNCTYPE(ctypes.c_int)(kernels.cpu.numpy_blas().get_num_threads)()
    assert (lib.tg_blas_pool_calls() > before) == (threads > 1)  # one thread: BLAS calls no jobs
    # LAPACK's blocked routines call the threaded GEMM many times over (none nests in a job)
    spd = a[:, :300] @ a[:, :300].T + 300 * np.eye(300)
    x = np.linalg.solve(spd, b[:300])
    np.testing.assert_allclose(spd @ x, b[:300], atol=1e-9)
    lo = np.linalg.cholesky(spd)
    np.testing.assert_allclose(lo @ lo.T, spd, atol=1e-9)
    u, s, vt = np.linalg.svd(a)
    np.testing.assert_allclose((u[:, :300] * s) @ vt[:300], a, atol=1e-9)


@needs_blas_callback
def test_large_kernel_calls_split_over_the_one_pool(cpu_kernels_on):
    # every kernel library runs its threads' work on the pool that runs NumPy's BLAS jobs;
    # elementwise, the split changes no result
    from threadpoolctl import threadpool_limits
    owner = rnnops.device_kernels(CPU) and kernels.cpu._shared_pool
    opt_ks, nn_ks = kernels.for_device(CPU, "optim", optim._KERNELS), kernels.for_device(CPU, "nn", nnops.KERNELS)
    r = np.random.default_rng(3)
    n, N, C, V, D = 100_003, 3001, 65, 50, 70  # not multiples of the split's grain
    p0, g, m0, v0 = r.standard_normal(n), r.standard_normal(n), r.standard_normal(n), r.random(n)
    logits, target = r.standard_normal((N, C)).astype(np.float32), r.integers(0, C, N)
    table, ids = r.standard_normal((V, D)).astype(np.float32), r.integers(0, V, 2000)

    def run():
        p, m, v = p0.copy(), m0.copy(), v0.copy()
        opt_ks["adam"](g, 0.9, 0.999, 0.01, 0.5, 1e-8, 0.1, 1.0, p, m, v)
        nll, logp = np.empty(N, np.float32), np.empty((N, C), np.float32)
        nn_ks["xent_fwd"](logits, target, C, nll, logp)
        out = np.empty((2000, D), np.float32)
        nn_ks["embed_fwd"](table, ids, D, out)
        return p, m, v, nll, logp, out
    with threadpool_limits(1, user_api="blas"):
        before = owner.tg_pool_jobs()
        one = run()
        assert owner.tg_pool_jobs() == before  # one thread: no jobs
    before = owner.tg_pool_jobs()
    split = run()
    threads = ctypes.CFUNCTYPE(ctypes.c_int)(kernels.cpu.numpy_blas().get_num_threads)()
    assert owner.tg_pool_jobs() - before == (3 if threads > 1 else 0)
    for k, (a, b) in enumerate(zip(one, split)):
        assert np.array_equal(a, b), f"array {k}"
    gg = g + 0.1 * p0
    m_ref = m0 * 0.9 + gg * 0.1
    v_ref = v0 * 0.999 + gg * gg * 0.001
    np.testing.assert_allclose(split[0], p0 - m_ref / (np.sqrt(v_ref) / 0.5 + 1e-8) * 0.01, rtol=1e-12)
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    ref_logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(split[4], ref_logp, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(split[3], -ref_logp[np.arange(N), target], rtol=1e-5, atol=1e-5)
    assert np.array_equal(split[5], table[ids])


def _lstm_loops(T=5, B=9, H=40, seed=0):
    """An LSTM layer's C++ loops forward and backward on fixed inputs: (hs, dh0)."""
    ks = rnnops.device_kernels(CPU)
    rng = np.random.default_rng(seed)
    gx, w = rng.standard_normal((T, B, 4 * H)), rng.standard_normal((4 * H, H)) * 0.2  # W_hh
    hs, cs, act = np.zeros((T + 1, B, H)), np.zeros((T + 1, B, H)), np.empty((T, B, 4 * H))
    ks["seq_fwd"](2, T, B, H, 0, 1, 0, 0, gx, w, None, np.empty((B, 4 * H)), hs, cs, act, None, None)
    dh, dc, dgh = np.zeros((B, H)), np.zeros((B, H)), np.empty((T, B, 4 * H))
    ks["seq_bwd"](2, T, B, H, 0, 1, 0, 0, w, act, hs, cs, rng.standard_normal((T, B, H)),
                  dh, dc, np.empty((B, H)), dgh, None, None, None)
    return hs, dh


@needs_host_loops
def test_host_loops_and_blas_from_many_python_threads(cpu_kernels_on):
    # ctypes lets go of the GIL: loops and BLAS calls from 4 threads at once share one pool
    # (a loop finding it busy runs on its caller alone; a BLAS call waits for it)
    import threading
    want = _lstm_loops(B=16)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((200, 300)), rng.standard_normal((300, 200))
    ab = np.einsum("ik,kj->ij", a, b)
    errors = []

    def work(k):
        try:
            for _ in range(20):
                if k % 2:
                    got = _lstm_loops(B=16)
                    assert all(np.array_equal(x, y) for x, y in zip(got, want))
                else:
                    np.testing.assert_allclose(a @ b, ab, rtol=1e-12, atol=1e-12)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlocked"
    assert not errors, errors


@needs_host_loops
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # Python 3.12+
def test_host_loops_and_blas_in_a_forked_child(cpu_kernels_on):
    # the child has none of the parent's pool threads: it makes its own
    import multiprocessing
    want = _threaded_layer_results(tg.nn.GRU, tg.float64, 0, T=4, B=12)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_threaded_layer_results, (tg.nn.GRU, tg.float64, 0, 4, 12)).get(timeout=120)
        a = np.arange(120000.0).reshape(300, 400) % 7
        np.testing.assert_array_equal(pool.apply_async(np.matmul, (a, a.T)).get(timeout=120), a @ a.T)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)


@needs_blas_callback
def test_blas_keeps_its_own_threads_when_told(tmp_path):
    code = ("import numpy as np, tinygrad_rnn as tg\n"
            "from tinygrad_rnn.kernels import cpu\n"
            "from tinygrad_rnn.ops import rnn\n"
            "assert rnn.device_kernels(tg.get_device('cpu')) is not None\n"
            "print(cpu._shared_pool is None)\n")
    env = dict(os.environ, TINYGRAD_RNN_SHARE_BLAS_THREADS="0", TINYGRAD_RNN_CPU_KERNELS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


@needs_host_loops
def test_host_function_argument_errors(cpu_kernels_on):
    loop = rnnops.device_kernels(CPU)["seq_fwd"]
    a = np.zeros((2, 3))
    with pytest.raises(TypeError, match=r"host function rnn\.seq_fwd: takes 17 arguments, got 2"):
        loop(0, a)
    args = [0, 1, 2, 3, 0, 1, 0, 0, a, a, None, a, a, None, None, None, None]
    with pytest.raises(DTypeError, match=r"argument w_hh must be a row-major float64 NumPy array, got float32"):
        loop(*args[:9], a.astype(np.float32), *args[10:])
    with pytest.raises(DTypeError, match=r"argument gh must be a row-major float64"):
        loop(*args[:11], np.zeros((3, 2)).T, *args[12:])
    with pytest.raises(DTypeError, match=r"argument bs must be a contiguous int32 NumPy array, got int64"):
        loop(*args[:15], np.zeros(2, dtype=np.int64), None)


@needs_cxx
def test_without_numpys_blas_the_host_loops_run_on_one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYGRAD_RNN_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels.cpu, "numpy_blas", lambda: None)
    ks = kernels.cpu.build("rnn", rnnops.KERNELS, host=rnnops.HOST)
    assert ks is not None and {"lstm_fwd", "seq_fwd", "seq_bwd"} <= set(ks)
    dev = backend.CPUDevice()
    monkeypatch.setitem(kernels._built, dev, {"rnn": ks})
    assert rnnops._host_loop(dev, "seq_fwd", np.dtype(np.float64)) is not None
    assert rnnops._host_loop(CPU, "seq_fwd", np.dtype(np.float16)) is None  # float32 and float64 builds only
    want = _lstm_loops()  # the same numbers as the build that shares NumPy's BLAS threads
    monkeypatch.setattr(rnnops, "device_kernels", lambda dev: ks)
    got = _lstm_loops()
    assert all(np.array_equal(x, y) for x, y in zip(got, want)) and np.abs(got[0][1:]).min() > 0
# ----------------------------------------------------------------------------- the CUDA form
_HEADER = r"""
#include <cmath>
#include <cstddef>
using std::tanh;
using std::exp;
using std::log;
using std::sqrt;
#define __device__
#define __forceinline__ inline
typedef double T;
template <typename U> inline U atomicAdd(U* p, U v) { U old = *p; *p += v; return old; }
template <typename U> struct Raw { U* p; U& operator[](ptrdiff_t k) const { return p[k]; } };
"""


def _wrap_flat(name, k):
    sig, outer, inner = [], [], []
    for role, spec in (("in", k.in_params), ("out", k.out_params)):
        for kind, p in kernels.parse_params(spec):
            if kind in ("raw", "index"):
                ty = "T" if kind == "raw" else "long long"
                sig.append(f"{ty}* {p}_p")
                outer.append(f"Raw<{ty}> {p}{{{p}_p}};")
            elif kind == "scalar":
                sig.append(f"double {p}")
            elif kind == "int":
                sig.append(f"int {p}")
            else:
                sig.append(f"T* {p}_p")
                inner.append(f"const T {p} = {p}_p[i];" if role == "in" else f"T& {p} = {p}_p[i];")
    return (f'extern "C" void {name}({", ".join(sig)}, long n) {{\n  {" ".join(outer)}\n'
            f'  for (ptrdiff_t i = 0; i < n; ++i) {{\n    {" ".join(inner)}\n{kernels.cuda_body(k)}\n  }}\n}}\n')


@pytest.fixture(scope="module")
def cuda_form(tmp_path_factory):
    if CXX is None:
        pytest.skip("no host C++ compiler to build the kernel sources with")
    d = tmp_path_factory.mktemp("kernels")
    every = {**rnnops.KERNELS, **nnops.KERNELS, **optim._KERNELS}
    src = _HEADER + kernels.cuda_prelude() + "".join(_wrap_flat(name, k) for name, k in every.items())
    (d / "k.cpp").write_text(src)
    r = subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(d / "k.so"), str(d / "k.cpp")],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"the CUDA form of the kernels does not compile as C++:\n{r.stderr}\n{src}"
    lib = ctypes.CDLL(str(d / "k.so"))

    def run(name, n, *args):
        conv = []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.dtype in (np.float64, np.int64) and a.flags.c_contiguous
                conv.append(a.ctypes.data_as(ctypes.c_void_p))
            elif isinstance(a, float):
                conv.append(ctypes.c_double(a))
            else:
                conv.append(ctypes.c_int(a))
        getattr(lib, name)(*conv, ctypes.c_long(n))
    with backend.kernels_off(CPU):  # the reference: the portable form
        yield run


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("nl", ["tanh", "relu"])
def test_cuda_form_rnn(cuda_form, nl):
    B, H = 4, 6
    gx, gh, dh = R(np.float64, B, H), R(np.float64, B, H), R(np.float64, B, H)
    h, ref_h = E(np.float64, B, H), E(np.float64, B, H)
    cuda_form(f"rnn_{nl}_fwd", B * H, gx, gh, h)
    rnnops.rnn_forward(CPU, gx, gh, ref_h, nl)
    close(h, ref_h)
    dp, ref_dp = E(np.float64, B, H), E(np.float64, B, H)
    cuda_form(f"rnn_{nl}_bwd", B * H, h, dh, dp)
    rnnops.rnn_backward(CPU, ref_h, dh, ref_dp, nl)
    close(dp, ref_dp)


def test_cuda_form_lstm(cuda_form):
    B, H = 3, 5
    f64 = np.float64
    gx, gh, c, dh, dc = R(f64, B, 4 * H), R(f64, B, 4 * H), R(f64, B, H), R(f64, B, H), R(f64, B, H)
    h, c_new, act = E(f64, B, H), E(f64, B, H), E(f64, B, 4 * H)
    cuda_form("lstm_fwd", B * H, gx, gh, c, H, h, c_new, act)
    ref_h, ref_c, ref_act = E(f64, B, H), E(f64, B, H), E(f64, B, 4 * H)
    rnnops.lstm_forward(CPU, gx, gh, c, ref_act, ref_h, ref_c)
    close(h, ref_h)
    close(c_new, ref_c)
    close(act, ref_act)  # one saved layout: the activations, in PyTorch's gate order
    dgates, dc_prev = E(f64, B, 4 * H), E(f64, B, H)
    cuda_form("lstm_bwd", B * H, act, c, c_new, dh, dc, H, dgates, dc_prev)
    ref_da, ref_dc = E(f64, B, 4 * H), E(f64, B, H)
    rnnops.lstm_backward(CPU, ref_act, c, ref_c, dh, dc, ref_da, ref_dc)
    close(dgates, ref_da)
    close(dc_prev, ref_dc)


def test_cuda_form_cross_entropy(cuda_form):
    N, C = 4, 7
    logits, target = R(np.float64, N, C), rng.integers(0, C, N).astype(np.int64)
    nll, logp = E(np.float64, N), E(np.float64, N, C)
    cuda_form("xent_fwd", N, logits, target, C, nll, logp)
    shifted = logits - logits.max(axis=1, keepdims=True)
    ref_logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    close(logp, ref_logp)
    close(nll, -ref_logp[np.arange(N), target])
    g = E(np.float64, N, C)
    cuda_form("xent_bwd", N * C, logp, target, np.array([2.0]), 0.25, C, g)
    close(g, (np.exp(ref_logp) - np.eye(C)[target]) * 0.5)


def test_cuda_form_embedding_forward(cuda_form):
    V, D, N = 4, 6, 9
    ids, table = rng.integers(0, V, N).astype(np.int64), R(np.float64, V, D)
    out = E(np.float64, N, D)
    cuda_form("embed_fwd", N * D, table, ids, D, out)
    close(out, table[ids])


def test_cuda_form_embedding_backward(cuda_form):
    V, D, N = 4, 6, 9
    ids, g = rng.integers(0, V, N).astype(np.int64), R(np.float64, N, D)
    table = np.zeros((V, D))
    cuda_form("embed_bwd", N * D, g, ids, D, table)
    ref = np.zeros((V, D))
    np.add.at(ref, ids, g)
    close(table, ref)


@pytest.mark.parametrize("decoupled", [False, True])
def test_cuda_form_adam(cuda_form, decoupled):
    n = 11
    p0, g, m0, v0 = R(np.float64, n), R(np.float64, n), R(np.float64, n), np.abs(R(np.float64, n))
    b1, b2, lr, wd, eps, t = 0.9, 0.999, 1e-2, 0.1, 1e-8, 3
    step, bias2 = lr / (1 - b1 ** t), np.sqrt(1 - b2 ** t)
    l2, decay = (0.0, 1 - lr * wd) if decoupled else (wd, 1.0)
    p, m, v = p0.copy(), m0.copy(), v0.copy()
    cuda_form("adam", n, g, b1, b2, step, bias2, eps, l2, decay, p, m, v)
    gg = g + l2 * p0
    m_ref, v_ref = m0 * b1 + gg * (1 - b1), v0 * b2 + gg * gg * (1 - b2)
    close(m, m_ref)
    close(v, v_ref)
    close(p, p0 * decay - m_ref / (np.sqrt(v_ref) / bias2 + eps) * step)


@pytest.mark.parametrize("with_bias", [True, False])
def test_cuda_form_gru(cuda_form, with_bias):
    B, H = 3, 5
    f64 = np.float64
    gx, gh, h, dh = R(f64, B, 3 * H), R(f64, B, 3 * H), R(f64, B, H), R(f64, B, H)
    b = R(f64, 3 * H) if with_bias else None
    h_new, act = E(f64, B, H), E(f64, B, 4 * H)
    cuda_form("gru_fwd", B * H, gx, gh, b if with_bias else np.zeros(3 * H), h, H, h_new, act)
    ref_h, ref_act = E(f64, B, H), E(f64, B, 4 * H)
    rnnops.gru_forward(CPU, gx, gh, b, h, ref_act, ref_h)
    close(h_new, ref_h)
    close(act, ref_act)  # [r, z, n, hn]
    dgh, dgx, dh_z = E(f64, B, 3 * H), E(f64, B, 3 * H), E(f64, B, H)
    cuda_form("gru_bwd", B * H, act, h, dh, H, dgh, dgx, dh_z)
    ref_dgh, ref_dgx, ref_dhz = E(f64, B, 3 * H), E(f64, B, 3 * H), E(f64, B, H)
    rnnops.gru_backward(CPU, ref_act, h, dh, ref_dgh, ref_dgx, ref_dhz)
    close(dgh, ref_dgh)  # [dr, dz, dn r]
    close(dgx, ref_dgx)  # [dr, dz, dn]
    close(dh_z, ref_dhz)

