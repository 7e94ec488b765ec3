"""The CUDA sources of the recurrent cells (ops/rnn.py's CUDA_KERNELS), checked without a GPU.

Each kernel body is wrapped in a plain C++ loop over the element index `i`, the way a
CuPy ElementwiseKernel runs it (a `T x` input is the i-th element, a `T x` output a
reference to it, a `raw T x` the whole array indexed by hand), compiled with the host
C++ compiler, and run on NumPy arrays against the portable array-API forms beside them.
That checks the index arithmetic, gate layout and equations of the very source text the
GPU compiles; the GPU test in test_rnn.py (skipped where no GPU is) checks the rest.
"""
import ctypes
import shutil
import subprocess

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.ops import rnn as rnnops

CXX = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler to build the kernel sources with")

_HEADER = r"""
#include <cmath>
#include <cstddef>
using std::tanh;
#define __device__
#define __forceinline__ inline
typedef double T;
template <typename U> struct Raw { U* p; U& operator[](ptrdiff_t k) const { return p[k]; } };
"""


def _params(spec):
    return [p.split() for p in spec.split(",")]


def _wrap(name, ins, outs, body):
    sig, outer, inner = [], [], []
    for role, spec in (("in", ins), ("out", outs)):
        for toks in _params(spec):
            if toks[0] == "raw":
                sig.append(f"T* {toks[2]}_p")
                outer.append(f"Raw<T> {toks[2]}{{{toks[2]}_p}};")
            elif toks[0] == "int32":
                sig.append(f"int {toks[1]}")
            else:
                sig.append(f"T* {toks[1]}_p")
                inner.append(f"const T {toks[1]} = {toks[1]}_p[i];" if role == "in" else f"T& {toks[1]} = {toks[1]}_p[i];")
    return (f'extern "C" void {name}({", ".join(sig)}, long n) {{\n  {" ".join(outer)}\n'
            f'  for (ptrdiff_t i = 0; i < n; ++i) {{\n    {" ".join(inner)}\n{body}\n  }}\n}}\n')


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    d = tmp_path_factory.mktemp("kernels")
    src = _HEADER + rnnops.CUDA_PREAMBLE + "".join(
        _wrap(name, *spec) for name, spec in rnnops.CUDA_KERNELS.items())
    (d / "k.cpp").write_text(src)
    r = subprocess.run([CXX, "-O1", "-shared", "-fPIC", "-o", str(d / "k.so"), str(d / "k.cpp")],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"kernel sources do not compile as C++:\n{r.stderr}\n{src}"
    lib = ctypes.CDLL(str(d / "k.so"))

    def run(name, n, *args):
        conv = []
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.dtype == np.float64 and a.flags.c_contiguous
                conv.append(a.ctypes.data_as(ctypes.c_void_p))
            else:
                conv.append(ctypes.c_int(a))
        getattr(lib, name)(*conv, ctypes.c_long(n))
    return run


CPU = tg.get_device("cpu")
rng = np.random.default_rng(0)


def R(*shape):
    return rng.standard_normal(shape) * 2


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def E(*shape):
    return np.empty(shape)


@pytest.mark.parametrize("nl", ["tanh", "relu"])
def test_rnn_kernels(kernels, nl):
    B, H = 4, 6
    gx, gh, dh = R(B, H), R(B, H), R(B, H)
    h, ref_h = E(B, H), E(B, H)
    kernels(f"rnn_{nl}_fwd", B * H, gx, gh, h)
    rnnops.rnn_forward(CPU, gx, gh, ref_h, nl)
    close(h, ref_h)
    dp, ref_dp = E(B, H), E(B, H)
    kernels(f"rnn_{nl}_bwd", B * H, h, dh, dp)
    rnnops.rnn_backward(CPU, ref_h, dh, ref_dp, nl)
    close(dp, ref_dp)


def test_lstm_kernels(kernels):
    B, H = 3, 5
    gx, gh, c, dh, dc = R(B, 4 * H), R(B, 4 * H), R(B, H), R(B, H), R(B, H)
    h, c_new, act = E(B, H), E(B, H), E(B, 4 * H)
    kernels("lstm_fwd", B * H, gx, gh, c, H, h, c_new, act)
    ref_h, ref_c, ref_act = E(B, H), E(B, H), E(B, 4 * H)
    rnnops.lstm_forward(CPU, gx, gh, c, ref_act, ref_h, ref_c)
    close(h, ref_h)
    close(c_new, ref_c)
    close(act, ref_act)  # one saved layout: the activations, in PyTorch's gate order
    dgates, dc_prev = E(B, 4 * H), E(B, H)
    kernels("lstm_bwd", B * H, act, c, c_new, dh, dc, H, dgates, dc_prev)
    ref_da, ref_dc = E(B, 4 * H), E(B, H)
    rnnops.lstm_backward(CPU, ref_act, c, ref_c, dh, dc, ref_da, ref_dc)
    close(dgates, ref_da)
    close(dc_prev, ref_dc)


@pytest.mark.parametrize("with_bias", [True, False])
def test_gru_kernels(kernels, with_bias):
    B, H = 3, 5
    gx, gh, h, dh = R(B, 3 * H), R(B, 3 * H), R(B, H), R(B, H)
    b = R(3 * H) if with_bias else None
    h_new, act = E(B, H), E(B, 4 * H)
    kernels("gru_fwd", B * H, gx, gh, b if with_bias else np.zeros(3 * H), h, H, h_new, act)
    ref_h, ref_act = E(B, H), E(B, 4 * H)
    rnnops.gru_forward(CPU, gx, gh, b, h, ref_act, ref_h)
    close(h_new, ref_h)
    close(act, ref_act)  # [r, z, n, hn]
    dgates, dh_z = E(B, 4 * H), E(B, H)
    kernels("gru_bwd", B * H, act, h, dh, H, dgates, dh_z)
    ref_dg, ref_dhz = E(B, 4 * H), E(B, H)
    rnnops.gru_backward(CPU, ref_act, h, dh, ref_dg, ref_dhz)
    close(dgates, ref_dg)  # [dr, dz, dn r, dn]
    close(dh_z, ref_dhz)
