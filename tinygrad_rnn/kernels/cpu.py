"""Elementwise kernels on the CPU: the same kernel source the GPU runs, built by the host C++ compiler.

An op writes each elementwise kernel once, in CuPy's ElementwiseKernel form (typed
parameter lists and a C body run for every element `i`, see `kernels.Kernel`), and the
device builds it: CuPy on CUDA (kernels/cuda.py), this module on the CPU. Here every body is
wrapped in a loop that the compiler vectorises (cpu_glue.cpp.in's OpenMP simd loops; a
kernel with a row length runs a (rows, row length) grid and its body gets `b` and `j` as well
as `i`), both float32 and float64 forms of all the kernels of an op family go into one shared
library, built once per machine and source and kept in a cache directory, and calls go
through ctypes. A family's translation unit is generated here, and #includes the real files
by absolute path: runtime.h (the math, thread pool, BLAS hook and packed GEMM every library
has) and the family's own C++, so that the compiler's errors name those files and lines.

An op family may also bring host functions (kernels.HostCode): C++ loops over its kernels
and GEMMs on a weight packed once for many calls (tg_pgemm), which the recurrent layers use
for their loop over time (ops/rnn.cpp), split over a pool of threads (tg_parallel). The process has one
such pool: the first kernel library loaded hands it to NumPy's BLAS too, where that is
OpenBLAS with a threading callback (found in the process by `numpy_blas`), and every later
library runs its threads' work on it, so that one thread per core is ever busy. A loop then
runs on as many threads as BLAS is set to, and so does a kernel call with enough elements
(32K: TG_SPLIT_WORK); without that callback, on one.

Why: one fused loop per step instead of twenty NumPy passes, and a tanh that runs eight
lanes at a time (NumPy's float32 tanh runs one element at a time on CPUs without AVX-512:
6.5 ns an element, measured on an AMD EPYC; this one 2.7 ns, within 1.4 ulp of the exact
value). Float64 kernels call the C library's tanh, so the gradient checks, which run in
float64, see the same numbers as the portable form to rounding.

Where no C++ compiler is found, or the build fails (a warning says why), or the variable
TINYGRAD_RNN_CPU_KERNELS=0 is set, the device reports no kernels and the op runs its
portable array-API form instead; the tests hold the two to agree. The cache lives in
$TINYGRAD_RNN_CACHE, else $XDG_CACHE_HOME/tinygrad_rnn, else ~/.cache/tinygrad_rnn, one
file per source (the generated unit and the content of every file it includes), compiler
flags and CPU (the code is built for this CPU's instructions).
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pathlib
import platform
import shutil
import string
import subprocess
import tempfile
import threading
import typing
import warnings
from importlib import resources

import numpy as np

from ..backend import CPU_KERNELS_ENV as ENV_SWITCH
from ..errors import DTypeError, ShapeError
from .spec import parse_params


class KernelBuildWarning(UserWarning):
    """The CPU kernels could not be built; the portable NumPy form runs instead."""


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


def _host_params(signature):
    """'int n, const T* x, T* y, const int* k' -> [('int', 'ptr' or 'iptr' (int32 array), name)]."""
    out = []
    for p in signature.split(","):
        p = p.strip()
        name = p.replace("*", " ").split()[-1]
        out.append(("iptr" if "int*" in p.replace(" ", "") else "ptr" if "*" in p else "int", name))
    return out


# The files of every CPU kernel library: the runtime and the glue's sections (cpu_glue.cpp.in)
RUNTIME = resources.files(__package__) / "runtime.h"
GLUE = resources.files(__package__) / "cpu_glue.cpp.in"
_glue = None


def _sections():
    """{section name: string.Template} of cpu_glue.cpp.in, read once."""
    global _glue
    if _glue is None:
        sections, name = {}, None
        for line in GLUE.read_text().splitlines():
            if line.startswith("//@ "):
                name = line[4:].strip()
                sections[name] = []
            elif name is not None:
                sections[name].append(line)
        _glue = {k: string.Template("\n".join(v)) for k, v in sections.items()}
    return _glue


# A kernel parameter in the C signature, by kind (and for elements and raw arrays, by role:
# inputs are const), and an element's read into the local the body names
_C_PARAM = {"int": "int {p}", "scalar": "double {p}", "index": "const int64_t* {p}",
            ("raw", "in"): "const T* {p}", ("raw", "out"): "T* {p}",
            ("elem", "in"): "const T* {p}_p", ("elem", "out"): "T* {p}_p"}
_C_LOAD = {"in": "const T {p} = {p}_p[i];", "out": "T& {p} = {p}_p[i];"}


def _files(host):
    """The files a family's translation unit includes: runtime.h, then its host code's."""
    if host is None:
        return [RUNTIME]
    return [RUNTIME, host.source if hasattr(host.source, "read_text") else pathlib.Path(host.source)]


def host_source(family, kernels, preamble="", host=None, includes=None):
    """The C++ translation unit of an op family: runtime.h, its kernels in cpu_glue.cpp.in's
    loops, each exported as extern "C" NAME_f32 and NAME_f64, and its host code (the file of
    a HostCode) with its functions exported likewise. `includes`: the paths the unit's
    #include lines name for _files(host) (default: the files' names alone, the text that the
    cache key is made from)."""
    g = _sections()
    includes = includes or [f.name for f in _files(host)]
    parts = [g["unit"].substitute(family=family, runtime=includes[0]), preamble]
    for name, k in kernels.items():
        ins, outs = parse_params(k.in_params), parse_params(k.out_params)
        sig, loads = [], []
        for role, params in (("in", ins), ("out", outs)):
            for kind, p in params:
                sig.append((_C_PARAM.get((kind, role)) or _C_PARAM[kind]).format(p=p))
                if kind == "elem":
                    loads.append(_C_LOAD[role].format(p=p))
        names = [p + "_p" if kind == "elem" else p for kind, p in ins + outs]
        fill = dict(name=name, sig=", ".join(sig), loads=" ".join(loads), body=k.body, args=", ".join(names),
                    row=k.row)
        # NAME_part: elements i0 .. i1 - 1, or rows and columns (host loops split them over threads)
        shape = "flat" if k.row is None else "rows"
        parts.append(g[shape].substitute(fill) + "\n")
        # the exported entry: a call with enough work runs on the pool's threads, each its share
        # of the elements (rows); not a kernel whose rows add into shared places (tg_atomic_add)
        if "tg_atomic_add" in k.body:
            parts.append(g["entry_serial"].substitute(fill) + "\n")
        else:
            work = "n" if k.work is None else g["work_param"].substitute(param=k.work)
            parts.append(g["entry_parallel"].substitute(fill, work=work, split=g["split_" + shape].substitute(fill))
                         + "\n")
        for sfx, ctype in _C_TYPE.items():
            csig = ", ".join(s.replace("T*", f"{ctype}*") for s in sig)
            parts.append(g["export"].substitute(fill, suffix=sfx, ctype=ctype, sig=csig) + "\n")
    if host is not None:
        parts.append(g["include"].substitute(path=includes[1]))
        for name, signature in host.functions.items():
            names = ", ".join(p for _, p in _host_params(signature))
            for sfx, ctype in _C_TYPE.items():
                csig = signature.replace("T*", f"{ctype}*")
                parts.append(g["export_host"].substitute(name=name, suffix=sfx, ctype=ctype, sig=csig, args=names)
                             + "\n")
    return "\n".join(parts)


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


class HostFunction:
    """One compiled host function (kernels.HostCode): arrays (row-major, of one float dtype,
    which picks the float32 or float64 build), None for a null pointer, and ints."""

    def __init__(self, family, name, signature, lib):
        self.name = f"{family}.{name}"
        self.params = _host_params(signature)
        self._fns = {}
        for dt, sfx in _SUFFIX.items():
            fn = getattr(lib, name + sfx)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_int if kind == "int" else ctypes.c_void_p for kind, _ in self.params]
            self._fns[dt] = fn

    def __repr__(self):
        return f"<CPU host function {self.name}>"

    def __call__(self, *args):
        if len(args) != len(self.params):
            raise TypeError(f"host function {self.name}: takes {len(self.params)} arguments, got {len(args)}")
        dt = next(a.dtype for a, (kind, _) in zip(args, self.params) if kind == "ptr" and isinstance(a, np.ndarray))
        conv = list(args)
        for k, (kind, p) in enumerate(self.params):
            a = args[k]
            if kind == "iptr" and a is not None:
                if type(a) is not np.ndarray or a.dtype != np.int32 or not a.flags.c_contiguous:
                    raise DTypeError(f"host function {self.name}: argument {p} must be a contiguous int32 NumPy "
                                     f"array, got {getattr(a, 'dtype', type(a).__name__)}")
                conv[k] = _data_pointer(a)
            if kind == "ptr" and a is not None:
                if type(a) is not np.ndarray or a.dtype != dt or not a.flags.c_contiguous:
                    raise DTypeError(f"host function {self.name}: argument {p} must be a row-major {dt} NumPy "
                                     f"array, got {getattr(a, 'dtype', type(a).__name__)}")
                conv[k] = _data_pointer(a)
        return self._fns[dt](*conv)


_blas = False


class Blas(typing.NamedTuple):
    """What host code takes from the BLAS library NumPy's matmul calls: function addresses."""
    path: str
    get_num_threads: typing.Optional[int]  # OpenBLAS's; None elsewhere
    set_threads_callback: typing.Optional[int]  # OpenBLAS >= 0.3.27's, to run its jobs on our pool


def numpy_blas():
    """The Blas of the library NumPy's matmul calls (found by its cblas_sgemm, whose integer
    width must match NumPy's build configuration); None where it cannot be found for certain
    (not Linux, an unknown library, older NumPy). Host loops then run on one thread."""
    global _blas
    if _blas is not False:
        return _blas
    _blas = None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}
    except OSError:
        return None
    paths = sorted(p for p in paths if "blas" in os.path.basename(p).lower())
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        cfg = " ".join(str(v) for v in cfg.values())
    except Exception:  # noqa: BLE001  (older NumPy: no configuration to check against)
        return None
    cfg_ilp64 = "USE64BITINT" in cfg or "ilp64" in cfg.lower()
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already loaded by NumPy: the same library
        except OSError:
            continue

        def address(*names):
            for name in names:
                if hasattr(lib, name):
                    return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            return None
        for prefix in ("scipy_", ""):
            for suffix, ilp64 in (("64_", True), ("", False)):
                if address(f"{prefix}cblas_sgemm{suffix}") is None:
                    continue
                if ilp64 != cfg_ilp64:
                    continue  # another BLAS in the process (SciPy's, say), not the one NumPy was built with
                _blas = Blas(path, address(f"{prefix}openblas_get_num_threads{suffix}", "openblas_get_num_threads"),
                             address(f"{prefix}openblas_set_threads_callback_function{suffix}",
                                     "openblas_set_threads_callback_function"))
                return _blas
    return None


# Set to "0" to leave NumPy's BLAS on its own threads (host loops then run on one thread:
# beside BLAS's idle threads, which spin ~0.1 s after every call, a second one gains nothing).
SHARE_ENV = "TINYGRAD_RNN_SHARE_BLAS_THREADS"
_shared_pool = None  # the library whose pool runs NumPy's BLAS jobs, once handed over


def _share_blas_threads(blas, lib):
    """Hands NumPy's BLAS jobs to lib's thread pool (tg_blas_jobs), so that BLAS calls, host
    loops and kernels share one set of threads: True where lib's pool is the one (the first
    kernel library loaded; every later one runs its threads' work on that pool, _join_pool)."""
    global _shared_pool
    if _shared_pool is not None:
        return _shared_pool is lib
    if (blas.set_threads_callback is None or blas.get_num_threads is None
            or os.environ.get(SHARE_ENV, "1").strip().lower() in ("0", "false", "no", "off")):
        return False
    threads = ctypes.CFUNCTYPE(ctypes.c_int)(blas.get_num_threads)()
    if not lib.tg_start_workers(threads):
        return False
    ctypes.CFUNCTYPE(None, ctypes.c_void_p)(blas.set_threads_callback)(
        ctypes.cast(lib.tg_blas_jobs, ctypes.c_void_p).value)
    _shared_pool = lib  # kept loaded: BLAS calls into it from now on
    return True


def _join_pool(lib):
    """Where the process's pool runs NumPy's BLAS jobs (lib's own, if lib is the first library
    loaded, else the owner's, handed to lib), lib learns BLAS's thread count for its host loops
    and kernels; else they run on one thread, beside BLAS's own."""
    blas = numpy_blas()
    shared = blas is not None and _share_blas_threads(blas, lib)
    if blas is not None and not shared and _shared_pool is not None:
        lib.tg_set_pool(ctypes.cast(_shared_pool.tg_pool_run, ctypes.c_void_p))
        shared = True
    lib.tg_set_blas_threads(ctypes.c_void_p(blas.get_num_threads if shared else None))


def _host_functions(family, host, lib):
    """{name: HostFunction}"""
    return {name: HostFunction(family, name, sig, lib) for name, sig in host.functions.items()}


# ----------------------------------------------------------------------------- building
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


def build(family, kernels, preamble="", host=None):
    """{name: HostKernel} for the family (and its host functions, see kernels.HostCode), or
    None (with a KernelBuildWarning if a compiler was there but the build failed)."""
    cxx = find_compiler()
    if cxx is None:
        if os.environ.get("CXX"):
            warnings.warn(f"tinygrad_rnn: CXX={os.environ['CXX']!r} is not a program on the PATH, so the CPU "
                          f"kernels of {family!r} are not built and the portable NumPy form runs",
                          KernelBuildWarning, stacklevel=3)
        return None  # no compiler: the portable form, silently (it is a supported setup)
    files = _files(host)
    errors = []
    try:  # the key: the unit as the file names read, and every file it includes
        key_src = "\0".join([host_source(family, kernels, preamble, host)] + [f.read_text() for f in files])
    except OSError as e:  # an install without the package's C++ files
        errors.append(f"cannot read {e.filename or e}: {e.strerror or e}")
        files = None
    with _lock:
        for flags in FLAG_SETS if files is not None else ():
            key = hashlib.sha256("\0".join([key_src, cxx, " ".join(flags), _cpu_identity()]).encode()).hexdigest()[:20]
            path = os.path.join(cache_dir(), f"{family}-{key}.so")
            failed = path[:-3] + ".failed"  # remembered, so later runs do not retry flags that failed
            if os.path.exists(failed):
                with open(failed) as f:
                    errors.append(f.read())
                continue
            if not os.path.exists(path):
                # the real files compiled, by absolute path: errors name them and their lines
                with contextlib.ExitStack() as stack:
                    includes = [os.path.abspath(stack.enter_context(resources.as_file(f))) for f in files]
                    err = _compile(cxx, flags, family, host_source(family, kernels, preamble, host, includes), path)
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
                built = {name: HostKernel(family, name, k, lib) for name, k in kernels.items()}
                _join_pool(lib)
                if host is not None:
                    built.update(_host_functions(family, host, lib))
                return built
            except (OSError, AttributeError) as e:
                errors.append(f"loading {path}: {e}")
        warnings.warn(f"tinygrad_rnn: could not build the CPU kernels of {family!r}, so the portable NumPy "
                      f"form runs (slower, same results); set {ENV_SWITCH}=0 to stop trying. "
                      + " | ".join(errors), KernelBuildWarning, stacklevel=3)
        return None


def _compile(cxx, flags, family, src, path):
    """Compile src (the family's translation unit) into path (atomically: a finished file or none); None, or what went wrong."""
    d = os.path.dirname(path)
    try:
        os.makedirs(d, exist_ok=True)
    except OSError as e:
        return f"cannot create the cache directory {d}: {e}"
    with tempfile.TemporaryDirectory(prefix="tg-kernels-") as tmp:
        cpp, so = os.path.join(tmp, f"{family}.cpp"), os.path.join(tmp, "k.so")
        with open(cpp, "w") as f:
            f.write(src)
        try:
            r = subprocess.run([cxx, *flags, "-shared", "-fPIC", "-o", so, cpp], capture_output=True, text=True,
                               timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e)
        if r.returncode != 0:
            lines = (r.stderr or r.stdout).strip().splitlines()
            said = lines[:3]  # and the first error, with its file and line, where those lines end before it
            said += [line for line in lines if ": error:" in line][:1] if not any(": error:" in x for x in said) else []
            return " / ".join(said) or f"exit status {r.returncode}"
        try:  # another process may be building the same file: the rename is atomic either way
            fd, part = tempfile.mkstemp(dir=d, suffix=".part")
            os.close(fd)
            shutil.copyfile(so, part)
            os.replace(part, path)
        except OSError as e:
            return f"cannot write {path}: {e}"
    return None
