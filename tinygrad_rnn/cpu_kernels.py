"""Elementwise kernels on the CPU: the same kernel source the GPU runs, built by the host C++ compiler.

An op writes each elementwise kernel once, in CuPy's ElementwiseKernel form (typed
parameter lists and a C body run for every element `i`, see `backend.Kernel`), and the
device builds it: CuPy on CUDA, this module on the CPU. Here every body is wrapped in a
loop that the compiler vectorises (`#pragma omp simd`; a kernel with a row length runs a
(rows, row length) grid and its body gets `b` and `j` as well as `i`), both float32 and
float64 forms of all the kernels of an op family go into one shared library, built once
per machine and source and kept in a cache directory, and calls go through ctypes.

Why: one fused loop per step instead of twenty NumPy passes, and a tanh that runs eight
lanes at a time (NumPy's float32 tanh runs one element at a time on CPUs without AVX-512:
6.5 ns an element, measured on an AMD EPYC; this one 2.7 ns, within 1.4 ulp of the exact
value). Float64 kernels call the C library's tanh, so the gradient checks, which run in
float64, see the same numbers as the portable form to rounding.

Where no C++ compiler is found, or the build fails (a warning says why), or the variable
TINYGRAD_RNN_CPU_KERNELS=0 is set, the device reports no kernels and the op runs its
portable array-API form instead; the tests hold the two to agree. The cache lives in
$TINYGRAD_RNN_CACHE, else $XDG_CACHE_HOME/tinygrad_rnn, else ~/.cache/tinygrad_rnn, one
file per source, compiler flags and CPU (the code is built for this CPU's instructions).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings

import numpy as np

from .errors import DTypeError, ShapeError

ENV_SWITCH = "TINYGRAD_RNN_CPU_KERNELS"


class KernelBuildWarning(UserWarning):
    """The CPU kernels could not be built; the portable NumPy form runs instead."""


# Math that kernel bodies call, in the host's form. The float32 functions are written so
# that the compiler vectorises them (plain arithmetic and selects, no calls):
# - exp(y) = 2^n exp(r), n = round(y / ln 2), r = y - n ln 2 in two parts (|r| <= ln 2 / 2),
#   exp(r) by its Taylor series to r^7 (truncation 6e-9), 2^n built from its bits;
# - tanh: for |x| < 0.55, x + x^3 P(x^2), P of degree 4 fitted by weighted least squares at
#   4,000 Chebyshev points (relative error 1.1e-9 before rounding); otherwise
#   1 - 2 / (exp(2|x|) + 1), |x| clamped at 10 (tanh(10) rounds to 1), the sign put back;
# - sigmoid: 1 / (1 + exp(-x)), 0 where the exact value is below FLT_MIN (x < -87.3365);
#   exp itself likewise 0 below that, and inf above FLT_MAX's log;
# - NaN passes through both.
# Measured over 2.5 million float32 inputs from 1e-40 to 100 against float64: tanh within
# 1.4 ulp (NumPy's float32 tanh: 1.4), sigmoid within 2.5; tests/test_rnn_kernels.py holds
# them to 2 and 3. The float64 functions are the C library's tanh and the portable form's
# sigmoid, so float64 results (what the gradient checks see) match the portable ones.
HOST_PRELUDE = r"""
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
using std::sqrt;  // sqrt(float) in float, as CUDA's

static inline float tg_exp_reduced(float y) {  // exp(y) for -87.4 <= y <= 88.7
  const float shift = 12582912.f;  // 1.5 * 2^23: adding it rounds y / ln 2 to an integer
  const float n = (y * 1.44269504088896341f + shift) - shift;
  const float r = (y - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  const float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120
                  + r * (1.f / 720 + r * (1.f / 5040)))))));
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float tg_tanh(float x) {
  float a = std::fabs(x);
  a = a < 10.f ? a : 10.f;
  const float s = a * a;
  const float small = a + a * s * (-0.33333318652081173f + s * (0.13332616866544073f
                      + s * (-0.05385511984902351f + s * (0.021082059476184557f + s * -0.006287662851785189f))));
  const float big = 1.f - 2.f / (tg_exp_reduced(2.f * a) + 1.f);
  const float r = std::copysign(a < 0.55f ? small : big, x);
  return x != x ? x : r;
}

static inline double tg_tanh(double x) { return std::tanh(x); }

static inline float tg_exp(float x) {  // 0 below the float32 range (as sigmoid), inf above
  const float y = x < -87.3365f ? -87.3365f : (x > 88.7228317f ? 88.7228317f : x);
  const float shift = 12582912.f;
  const float n = (y * 1.44269504088896341f + shift) - shift;
  const float r = (y - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  const float p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * (1.f / 24 + r * (1.f / 120
                  + r * (1.f / 720 + r * (1.f / 5040)))))));
  const int32_t top = n > 127.f ? 1 : 0;  // 2^128 has no exponent field: 2 x 2^127
  const int32_t bits = ((int32_t)n - top + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float v = p * scale * (top ? 2.f : 1.f);
  const float res = x < -87.3365f ? 0.f : (x > 88.7228317f ? INFINITY : v);  // past FLT_MAX
  return x != x ? x : res;
}

static inline double tg_exp(double x) { return std::exp(x); }
template <typename T> static inline T tg_log(T x) { return std::log(x); }
// one thread runs a kernel here, in element order: a plain add (CUDA's is atomicAdd)
template <typename T> static inline void tg_atomic_add(T* p, T v) { *p += v; }

static inline float tg_sigmoid(float x) {  // 1 / (1 + exp(-x)): less work than through tanh
  float y = -x;
  y = y < 87.3365f ? y : 87.3365f;   // sigmoid(-87.3365) is FLT_MIN: below that the result is 0
  y = y > -87.3365f ? y : -87.3365f;  // and exp(y) stays a normal float32
  const float r = x < -87.3365f ? 0.f : 1.f / (1.f + tg_exp_reduced(y));
  return x != x ? x : r;
}

static inline double tg_sigmoid(double x) {
  return std::tanh(x * 0.5) * 0.5 + 0.5;  // as the portable form, to rounding
}
"""

# Flags tried in order: the first set the compiler accepts is used. -fno-trapping-math and
# -fno-math-errno let the compiler vectorise selects and sqrt (results do not change: no
# code here reads errno or traps); -march=native builds for this CPU's vector width,
# which is why the cache key names the CPU. Not -ffast-math: it would drop NaN checks.
# Not OpenMP threads: they spin against OpenBLAS's own on the same cores (measured 10x
# slower training steps on 2 cores).
_SAFE = ["-O3", "-fno-trapping-math", "-fno-math-errno"]
FLAG_SETS = (
    _SAFE + ["-march=native", "-mprefer-vector-width=256", "-fopenmp-simd"],
    _SAFE + ["-march=native", "-fopenmp-simd"],
    _SAFE,
)
_SUFFIX = {np.dtype(np.float32): "_f32", np.dtype(np.float64): "_f64"}
_C_ARG = {"int": ctypes.c_int, "scalar": ctypes.c_double}
_INT64 = np.dtype(np.int64)
_C_TYPE = {"_f32": "float", "_f64": "double"}


def parse_params(spec):
    """'T a, raw T b, raw int64 k, int32 n, float64 s' -> [(kind, name)], kind 'elem', 'raw',
    'index' (a raw int64 array), 'int' or 'scalar'."""
    out = []
    for p in spec.split(","):
        toks = p.split()
        if toks[0] == "raw" and len(toks) == 3 and toks[1] == "T":
            out.append(("raw", toks[2]))
        elif toks[0] == "raw" and len(toks) == 3 and toks[1] == "int64":
            out.append(("index", toks[2]))
        elif toks[0] == "int32" and len(toks) == 2:
            out.append(("int", toks[1]))
        elif toks[0] == "float64" and len(toks) == 2:
            out.append(("scalar", toks[1]))
        elif toks[0] == "T" and len(toks) == 2:
            out.append(("elem", toks[1]))
        else:
            raise ValueError(f"kernel parameter {p.strip()!r}: expected 'T name', 'raw T name', "
                             f"'raw int64 name', 'int32 name' or 'float64 name'")
    return out


def host_source(family, kernels, preamble=""):
    """The C++ source of an op family's kernels, each as extern "C" NAME_f32 and NAME_f64."""
    parts = [HOST_PRELUDE, preamble]
    for name, k in kernels.items():
        ins, outs = parse_params(k.in_params), parse_params(k.out_params)
        sig, loads = [], []
        for role, params in (("in", ins), ("out", outs)):
            for kind, p in params:
                if kind == "int":
                    sig.append(f"int {p}")
                elif kind == "scalar":
                    sig.append(f"double {p}")
                elif kind == "index":
                    sig.append(f"const int64_t* {p}")
                elif kind == "raw":
                    sig.append(f"{'const ' if role == 'in' else ''}T* {p}")
                else:
                    sig.append(f"{'const ' if role == 'in' else ''}T* {p}_p")
                    loads.append(f"const T {p} = {p}_p[i];" if role == "in" else f"T& {p} = {p}_p[i];")
        loads = " ".join(loads)
        if k.row is None:
            loop = (f"#pragma omp simd\n  for (ptrdiff_t i = 0; i < n; ++i) {{\n    {loads}\n{k.body}\n  }}")
        else:
            loop = (f"const ptrdiff_t rows = n / {k.row};\n"
                    f"  for (ptrdiff_t b = 0; b < rows; ++b) {{\n"
                    f"#pragma omp simd\n"
                    f"    for (ptrdiff_t j = 0; j < {k.row}; ++j) {{\n"
                    f"      const ptrdiff_t i = b * {k.row} + j;\n      {loads}\n{k.body}\n    }}\n  }}")
        parts.append(f"template <typename T>\nstatic void {name}_impl({', '.join(sig)}, ptrdiff_t n) {{\n"
                     f"  {loop}\n}}\n")
        names = [p + "_p" if kind == "elem" else p for kind, p in ins + outs]
        for sfx, ctype in _C_TYPE.items():
            csig = ", ".join(s.replace("T*", f"{ctype}*") for s in sig)
            parts.append(f'extern "C" void {name}{sfx}({csig}, ptrdiff_t n) '
                         f'{{ {name}_impl<{ctype}>({", ".join(names)}, n); }}\n')
    return f"// {family}: elementwise kernels, built by tinygrad_rnn/cpu_kernels.py\n" + "\n".join(parts)


# ----------------------------------------------------------------------------- calling
def _data_pointer_reader():
    """A fast `array -> address of its first element`. NumPy's own (`a.ctypes.data`) costs
    3 us (0.5 us this way), which at six arrays a call and two calls a timestep is 6% of an
    LSTM H=128 step; CPython's array object keeps the pointer right after the object header,
    read here directly, and checked once against `.ctypes.data` (anything else uses that)."""
    if platform.python_implementation() == "CPython":
        off = object.__basicsize__
        at = ctypes.c_void_p.from_address
        probe = np.empty(3)
        try:
            if at(id(probe) + off).value == probe.ctypes.data and at(id(probe[1:]) + off).value == probe[1:].ctypes.data:
                return lambda a: at(id(a) + off).value
        except (ValueError, OverflowError):
            pass
    return lambda a: a.ctypes.data


_data_pointer = _data_pointer_reader()


class HostKernel:
    """One compiled kernel: called like CuPy's ElementwiseKernel, with the inputs and then
    the outputs in declared order (arrays and numbers). Arrays are NumPy arrays of one float
    dtype (other strides go through a row-major copy); the size of the loop is that of the
    first non-raw array."""

    def __init__(self, family, name, kernel, lib):
        self.name = f"{family}.{name}"
        self.params = parse_params(kernel.in_params) + parse_params(kernel.out_params)
        self.row = kernel.row
        self._fns = {}
        for dt, sfx in _SUFFIX.items():
            fn = getattr(lib, name + sfx)
            fn.restype = None
            fn.argtypes = [_C_ARG.get(kind, ctypes.c_void_p) for kind, _ in self.params] + [ctypes.c_ssize_t]
            self._fns[dt] = fn
        self._elems = [k for k, (kind, _) in enumerate(self.params) if kind == "elem"]
        self._arrays = [k for k, (kind, _) in enumerate(self.params) if kind in ("elem", "raw")]
        self._indices = [k for k, (kind, _) in enumerate(self.params) if kind == "index"]
        self._n_in = len(parse_params(kernel.in_params))
        self._row_arg = None if kernel.row is None else [p for _, p in self.params].index(kernel.row)

    def __repr__(self):
        return f"<CPU kernel {self.name}>"

    def __call__(self, *args):
        # called twice a timestep: the usual case (row-major arrays of one dtype) checks each
        # argument once and reads its pointer; anything else goes the long way round
        if len(args) != len(self.params):
            raise TypeError(f"kernel {self.name}: takes {len(self.params)} arguments "
                            f"({', '.join(p for _, p in self.params)}), got {len(args)}")
        first = args[self._elems[0]]
        dt = first.dtype
        fn = self._fns.get(dt)
        if fn is None:
            raise DTypeError(f"kernel {self.name}: runs on float32 or float64 arrays, got {dt}")
        conv = list(args)
        ptr = _data_pointer
        for k in self._arrays:
            a = args[k]
            if type(a) is not np.ndarray or a.dtype != dt or not a.flags.c_contiguous:
                return self._call_general(fn, dt, args)
            conv[k] = ptr(a)
        for k in self._indices:
            a = args[k]
            if type(a) is not np.ndarray or a.dtype != _INT64 or not a.flags.c_contiguous:
                return self._call_general(fn, dt, args)
            conv[k] = ptr(a)
        n = first.size
        self._check_sizes(args, n)
        fn(*conv, n)

    def _call_general(self, fn, dt, args):
        conv, write_back = list(args), []
        for k in self._arrays:
            a, p = args[k], self.params[k][1]
            if type(a) is not np.ndarray or a.dtype != dt:
                raise DTypeError(f"kernel {self.name}: argument {p} must be a {dt} NumPy array like the "
                                 f"others, got {getattr(a, 'dtype', type(a).__name__)}")
            if not a.flags.c_contiguous:  # as CuPy takes any strides: through a row-major copy
                c = np.ascontiguousarray(a)
                if k >= self._n_in:
                    write_back.append((a, c))
                a = c
            conv[k] = _data_pointer(a)
        for k in self._indices:
            a, p = args[k], self.params[k][1]
            if type(a) is not np.ndarray or a.dtype.kind not in "iu":
                raise DTypeError(f"kernel {self.name}: argument {p} must be an integer NumPy array, got "
                                 f"{getattr(a, 'dtype', type(a).__name__)}")
            a = np.ascontiguousarray(a, dtype=_INT64)
            conv[k] = _data_pointer(a)
            args = args[:k] + (a,) + args[k + 1:]  # kept alive through the call
        n = args[self._elems[0]].size
        self._check_sizes(args, n)
        fn(*conv, n)
        for a, c in write_back:
            a[...] = c

    def _check_sizes(self, args, n):
        for k in self._elems[1:]:
            if args[k].size != n:
                raise ShapeError(f"kernel {self.name}: the elementwise arguments must have one size; "
                                 f"{self.params[self._elems[0]][1]} has {n} elements, {self.params[k][1]} "
                                 f"{args[k].size}")
        if self._row_arg is not None:
            row = args[self._row_arg]
            if row <= 0 or n % row:
                raise ShapeError(f"kernel {self.name}: {n} elements are not whole rows of {self.row}={row}")


# ----------------------------------------------------------------------------- building
def enabled_by_env():
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def find_compiler():
    """The host C++ compiler: $CXX if set (None if it names nothing runnable), else c++, g++
    or clang++ on the PATH; None if there is none."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    for c in ("c++", "g++", "clang++"):
        p = shutil.which(c)
        if p:
            return p
    return None


def cache_dir():
    d = os.environ.get("TINYGRAD_RNN_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "tinygrad_rnn")
    return d


def _cpu_identity():
    """What the compiled code depends on: the machine and its instruction set extensions."""
    ident = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    ident.append(line.strip())
                if line.strip() == "":
                    break  # the first processor says it for all
    except OSError:
        ident.append(platform.processor())
    return "\n".join(ident)


_lock = threading.Lock()


def build(family, kernels, preamble=""):
    """{name: HostKernel} for the family, or None (with a KernelBuildWarning if a compiler
    was there but the build failed)."""
    cxx = find_compiler()
    if cxx is None:
        if os.environ.get("CXX"):
            warnings.warn(f"tinygrad_rnn: CXX={os.environ['CXX']!r} is not a program on the PATH, so the CPU "
                          f"kernels of {family!r} are not built and the portable NumPy form runs",
                          KernelBuildWarning, stacklevel=3)
        return None  # no compiler: the portable form, silently (it is a supported setup)
    src = host_source(family, kernels, preamble)
    with _lock:
        errors = []
        for flags in FLAG_SETS:
            key = hashlib.sha256("\0".join([src, cxx, " ".join(flags), _cpu_identity()]).encode()).hexdigest()[:20]
            path = os.path.join(cache_dir(), f"{family}-{key}.so")
            failed = path[:-3] + ".failed"  # remembered, so later runs do not retry flags that failed
            if os.path.exists(failed):
                with open(failed) as f:
                    errors.append(f.read())
                continue
            if not os.path.exists(path):
                err = _compile(cxx, flags, src, path)
                if err is not None:
                    errors.append(f"{os.path.basename(cxx)} {' '.join(flags)}: {err}")
                    try:
                        with open(failed, "w") as f:
                            f.write(errors[-1])
                    except OSError:
                        pass
                    continue
            try:
                lib = ctypes.CDLL(path)
                return {name: HostKernel(family, name, k, lib) for name, k in kernels.items()}
            except (OSError, AttributeError) as e:
                errors.append(f"loading {path}: {e}")
        warnings.warn(f"tinygrad_rnn: could not build the CPU kernels of {family!r}, so the portable NumPy "
                      f"form runs (slower, same results); set {ENV_SWITCH}=0 to stop trying. "
                      + " | ".join(errors), KernelBuildWarning, stacklevel=3)
        return None


def _compile(cxx, flags, src, path):
    """Compile src into path (atomically: a finished file or none); None, or what went wrong."""
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        return f"cannot create the cache directory {d}: {e}"
    with tempfile.TemporaryDirectory(prefix="tg-kernels-") as tmp:
        cpp, so = os.path.join(tmp, "k.cpp"), os.path.join(tmp, "k.so")
        with open(cpp, "w") as f:
            f.write(src)
        try:
            r = subprocess.run([cxx, *flags, "-shared", "-fPIC", "-o", so, cpp], capture_output=True, text=True,
                               timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines()
            return " / ".join(lines[:3]) or f"exit status {r.returncode}"
        try:  # another process may be building the same file: the rename is atomic either way
            fd, part = tempfile.mkstemp(dir=d, suffix=".part")
            os.close(fd)
            shutil.copyfile(so, part)
            os.replace(part, path)
        except OSError as e:
            return f"cannot write {path}: {e}"
    return None
