"""The only module that names NumPy or CuPy, besides the kernels package above it, which
builds the ops' compiled kernels for these devices.

A `Device` owns an array namespace (`device.xp`), moves data to and from the host,
draws random numbers, and provides the few primitives that the Python Array API
standard does not have (scatter-add, `out=`), and says whether ops may use compiled
kernels on it (`use_kernels`; the kernels package builds them).
Everything above this module does array math through `device.xp` with names from the
standard, so the same op code runs on NumPy, CuPy and `array_api_strict` (a test-only
device that refuses anything outside the standard, as CuPy would refuse a stray NumPy
call).

Devices:
  "cpu"                 NumPy
  "cuda", "cuda:N"      CuPy on GPU N
  "strict"              array_api_strict (tests only; computes with NumPy underneath)
"""
from __future__ import annotations

import contextlib
import math
import os
import re

import numpy as np

CPU_KERNELS_ENV = "TINYGRAD_RNN_CPU_KERNELS"  # "0": the CPU device's use_kernels starts off
CUDA_LOOP_ENV = "TINYGRAD_RNN_CUDA_LOOP"  # "python": CUDA devices start with the sequence ops' Python loop
CUDA_LOOPS = ("graph", "python")


# ----------------------------------------------------------------------------- dtypes
class DType:
    """A dtype name shared by all backends (`tg.float32`, ...)."""

    __slots__ = ("name", "is_floating")

    def __init__(self, name: str, is_floating: bool):
        self.name = name
        self.is_floating = is_floating

    def __repr__(self):
        return f"tinygrad_rnn.{self.name}"

    def __reduce__(self):
        return (_dtype_by_name, (self.name,))


float32 = DType("float32", True)
float64 = DType("float64", True)
int32 = DType("int32", False)
int64 = DType("int64", False)
bool_ = DType("bool", False)
DTYPES = {d.name: d for d in (float32, float64, int32, int64, bool_)}


def _dtype_by_name(name):
    return DTYPES[name]


_default_float = float32


def get_default_dtype() -> DType:
    return _default_float


def set_default_dtype(dtype) -> None:
    """The dtype of tensors made from Python numbers and lists (float32 unless set)."""
    global _default_float
    dtype = to_dtype(dtype)
    if not dtype.is_floating:
        raise TypeError(f"set_default_dtype: the default must be a floating dtype, got {dtype.name}")
    _default_float = dtype


def to_dtype(d) -> DType:
    """Accept a DType, a name ('float32'), or a NumPy dtype-like."""
    if isinstance(d, DType):
        return d
    if isinstance(d, str) and d in DTYPES:
        return DTYPES[d]
    try:
        return DTYPES[np.dtype(d).name]
    except (TypeError, KeyError):
        raise TypeError(f"unsupported dtype {d!r}; use one of {sorted(DTYPES)}") from None


# ----------------------------------------------------------------------------- devices
def derive_seed(seed: int, rank: int, step: int) -> int:
    """The seed of training step `step` in process `rank` of a run seeded `seed` (Device.step_seed):
    NumPy's SeedSequence mixes the three, so neighbouring steps and ranks draw unrelated numbers."""
    mask = (1 << 64) - 1
    state = np.random.SeedSequence([seed & mask, rank, step]).generate_state(1, np.uint64)[0]
    return int(state) >> 1  # below 2**63: a signed 64-bit seed anywhere


def _uint64(seed: int):
    """A seed as NumPy's uint64: RandomState.seed casts what it is given to uint64 with
    casting='safe', which refuses a Python int (int64 under NumPy 2)."""
    return np.uint64(int(seed) & ((1 << 64) - 1))


_seed = 0  # the last tg.manual_seed; devices created later start from it too


class Device:
    """One array library on one device. Subclasses differ only where the standard is silent."""

    kind = "?"
    has_out = True  # the namespace's elementwise functions and matmul accept out=

    def __init__(self, name: str, xp):
        self.name = name
        self.xp = xp
        # the same namespace, for code that writes into preallocated buffers: NumPy's and
        # CuPy's ufuncs and matmul take out=; the strict device gets a shim that assigns
        self.xp_out = xp if self.has_out else _OutShim(xp)
        # DType -> native dtype object, and back. NumPy and CuPy arrays report np.dtype
        # instances, which hash differently from the scalar types np.float32 & co.
        self._native = {d: self._native_dtype(getattr(xp, "bool" if d is bool_ else d.name))
                        for d in DTYPES.values()}
        self._from_native = {v: k for k, v in self._native.items()}
        self.manual_seed(_seed)

    def __repr__(self):
        return f"device('{self.name}')"

    __str__ = lambda self: self.name  # noqa: E731

    # dtypes
    @staticmethod
    def _native_dtype(t):
        return np.dtype(t)

    def native(self, dtype: DType):
        return self._native[dtype]

    def dtype_of(self, arr) -> DType:
        try:
            return self._from_native[arr.dtype]
        except KeyError:
            raise TypeError(f"unsupported array dtype {arr.dtype} on {self.name}") from None

    # host <-> device
    def from_host(self, data, dtype: DType | None = None):
        """A NumPy array (or anything np.asarray takes) -> an array on this device."""
        raise NotImplementedError

    def to_host(self, arr) -> np.ndarray:
        raise NotImplementedError

    def is_native(self, arr) -> bool:
        raise NotImplementedError

    def copy(self, arr):
        """A new array with the same contents (no memory shared)."""
        return arr.copy()

    def contiguous(self, arr):
        """arr in row-major (C) order, copied only if it is not already: BLAS runs a product
        with a row-major right operand faster than with a transposed view (30% for the
        recurrent GEMM of an LSTM step)."""
        return arr

    # random numbers: one generator per device, reseeded by tg.manual_seed
    def manual_seed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def randn(self, shape, dtype: DType):
        return self.from_host(self._rng.standard_normal(shape), dtype)

    def rand(self, shape, dtype: DType):
        return self.from_host(self._rng.random(shape), dtype)

    def dropout_mask(self, shape, p: float, dtype: DType):
        """0 where an element is dropped (each with probability p), 1/(1-p) where it is kept."""
        keep = self.rand(shape, dtype) >= p
        return self.xp.astype(keep, self.native(dtype)) / (1.0 - p)

    def randint(self, low, high, shape):
        return self.from_host(self._rng.integers(low, high, size=shape), int64)

    def get_rng_state(self) -> dict:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    # Whether step_seed reseeds: a device whose generator state cannot be saved whole (CUDA)
    # draws each training step's numbers from a generator seeded by (seed, rank, step), so a
    # resumed run draws what the straight run drew. The CPU's state is saved and restored
    # exactly, so its stream (and every result of it) is as before, and step_seed costs a call.
    per_step_rng = False

    def step_seed(self, seed: int, rank: int, step: int) -> None:
        """Before training step `step` of process `rank`: reseed where per_step_rng (see there)."""

    # kernels outside the standard
    def scatter_add(self, target, index, values) -> None:
        """target[index] += values, in place, with repeated indices accumulating."""
        raise NotImplementedError

    def erf(self, arr):
        """The error function, elementwise, in arr's dtype (not in the Array API standard)."""
        raise NotImplementedError

    def synchronize(self) -> None:
        pass

    def qr(self, a):
        """(Q, R) of a 2-D array, reduced as numpy.linalg.qr gives them: (m, k) and (k, n) with
        k = min(m, n). The standard's linalg extension is optional, so here it is computed on
        the host (the cpu and strict devices); a device with a QR of its own overrides it."""
        q, r = np.linalg.qr(self.to_host(a))
        return self.from_host(q), self.from_host(r)

    # Whether reading a value back (item, int, float, bool of an array) waits for the device to
    # finish its queued work: on CUDA each is a host synchronisation, so a training loop keeps
    # such values on the device and reads them in batches (lm.train); on the CPU it is free.
    reads_sync = False

    # Whether ops check their integer indices against their bounds on the device (a read back:
    # see reads_sync); off within indices_checked(), for callers that checked them on the host.
    check_indices = True

    # Whether ops may run the compiled kernels that the kernels package builds for this device
    # (CuPy's on CUDA, the host C++ compiler's on the CPU); False: their portable array-API
    # form, even where kernels exist (see kernels_off).
    use_kernels = True


class _OutShim:
    """`xp_out` for an array-API namespace whose functions take no `out=` (array-api-strict):
    each function computes a new array and assigns it into `out`, giving the same numbers
    that NumPy and CuPy write in place."""

    def __init__(self, xp):
        self._xp = xp

    def __getattr__(self, name):
        fn = getattr(self._xp, name)

        def into(*args, out=None):
            res = fn(*args)
            if out is None:
                return res
            out[...] = res
            return out
        into.__name__ = name
        setattr(self, name, into)  # looked up once per name
        return into


class CPUDevice(Device):
    kind = "cpu"

    def __init__(self):
        super().__init__("cpu", np)

    def from_host(self, data, dtype=None):
        arr = np.asarray(data)
        if dtype is not None and arr.dtype != self._native[dtype]:
            arr = arr.astype(self._native[dtype])
        return arr

    def to_host(self, arr):
        return arr

    def is_native(self, arr):
        return isinstance(arr, np.ndarray)

    def contiguous(self, arr):
        return np.ascontiguousarray(arr)

    @property
    def use_kernels(self):
        """As for every device, plus the default from TINYGRAD_RNN_CPU_KERNELS (on unless 0)."""
        if self._use_kernels is None:
            self._use_kernels = os.environ.get(CPU_KERNELS_ENV, "1").strip().lower() not in ("0", "false", "no", "off")
        return self._use_kernels

    @use_kernels.setter
    def use_kernels(self, on):
        self._use_kernels = bool(on)

    _use_kernels = None

    def dropout_mask(self, shape, p, dtype):
        # 32 random bits an element against round(p * 2^32) (a drop probability within 2^-33 of
        # p): half the generator's work of a float64 uniform, which was 60% of a dropout's time
        n = math.prod(shape)
        bits = self._rng.bit_generator.random_raw((n + 1) // 2).view(np.uint32)[:n].reshape(shape)
        mask = (bits >= round(p * 2.0 ** 32)).astype(self.native(dtype))
        mask /= 1.0 - p  # as the portable form divides
        return mask

    def scatter_add(self, target, index, values):
        if (isinstance(index, np.ndarray) and index.ndim == 1 and values.ndim == target.ndim
                and values.shape[0] == index.shape[0] and index.shape[0]):
            # rows (embedding backward). Into a small table (a character vocabulary) the sum is
            # one GEMM with the one-hot matrix of the indices, 4-5x faster than sorting (measured
            # at V = 65, 2,048 rows of 256 to 2,048 columns); past a few hundred rows the sort
            # wins: sorting once and summing runs of equal indices with reduceat is 2-4x faster
            # than np.add.at, which handles one element at a time
            V, N = target.shape[0], index.shape[0]
            if V <= 256 and V * N <= 1 << 22 and target.dtype.kind == "f" and values.dtype == target.dtype:
                onehot = (index[None, :] == np.arange(V)[:, None]).astype(target.dtype)
                flat = values.reshape(N, -1)
                target.reshape(V, -1)[...] += onehot @ flat
                return
            order = np.argsort(index, kind="stable")
            rows = index[order]
            starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
            target[rows[starts]] += np.add.reduceat(values[order], starts, axis=0)
        else:
            np.add.at(target, index, values)

    def erf(self, arr):
        return _host_erf(arr)


class StrictDevice(Device):
    """array_api_strict: the standard and nothing else. Test-only."""

    kind = "strict"
    has_out = False

    def __init__(self):
        import array_api_strict

        super().__init__("strict", array_api_strict)

    def from_host(self, data, dtype=None):
        arr = np.asarray(data)
        if dtype is not None:
            arr = arr.astype(self._native_np(dtype))
        return self.xp.asarray(arr)

    @staticmethod
    def _native_dtype(t):
        return t

    @staticmethod
    def _native_np(dtype):
        return np.dtype(dtype.name)

    def to_host(self, arr):
        return np.asarray(arr)

    def copy(self, arr):
        return self.xp.asarray(arr, copy=True)

    def is_native(self, arr):
        return isinstance(arr, self.xp.asarray(0.0).__class__)

    def scatter_add(self, target, index, values):
        # The standard has no scatter-add. Do it on the host and write back through
        # the standard's __setitem__; the strict device is for tests, so speed is moot.
        host = np.asarray(target).copy()
        if isinstance(index, tuple):
            idx = tuple(np.asarray(i) if not isinstance(i, (slice, int, type(None), type(Ellipsis))) else i
                        for i in index)
        else:
            idx = np.asarray(index)
        np.add.at(host, idx, np.asarray(values))
        target[...] = self.xp.asarray(host)

    def erf(self, arr):
        return self.xp.asarray(_host_erf(np.asarray(arr)))


class CUDADevice(Device):
    """CuPy on GPU `index`.

    Which GPU: CuPy allocates, launches kernels and runs cuBLAS on the thread's *current*
    device, whatever device the array says it is on. The device is made current where work
    for it starts, and left current: every op's engine node reads `device.xp` once
    (autograd's Context), optimizers and creation functions read it too, and `from_host`
    (Tensor.to, the gradient moving back through it) and the random draws make their GPU
    current the same way. That is one cudaGetDevice (~0.1 us, no synchronisation) per op,
    and a cudaSetDevice only when the device changes; a namespace wrapper entering
    `cupy.cuda.Device(n)` around every call would cost a context switch per array function
    and still miss Python operators (`a + b`), which CuPy runs on the current device. The
    CPU device keeps `xp` a plain attribute: nothing of this runs there.
    What it does not cover: one backward walk through a graph whose branches interleave two
    GPUs runs each node on the GPU current when the walk reaches it; move such tensors to
    one device first (CuPy raises where an array is not on the current device)."""

    kind = "cuda"

    def __init__(self, index: int):
        import cupy
        import cupyx

        self.index = index
        self._cupy = cupy
        self._cupyx = cupyx
        self._runtime = cupy.cuda.runtime
        super().__init__(f"cuda:{index}", cupy)

    @property
    def xp(self):
        self._activate()
        return self._xp

    @xp.setter
    def xp(self, xp):
        self._xp = xp

    @property
    def cuda_loop(self):
        """How the whole-sequence ops run their loop over time here: "graph" (a CUDA graph
        captured once per shape and replayed: ops/rnn.py, kernels/cuda.py) or "python" (a
        Python step per timestep, kept to compare). Starts from $TINYGRAD_RNN_CUDA_LOOP, else
        "graph"; `backend.cuda_loop(device, mode)` changes it within a block."""
        if self._cuda_loop is None:
            self.cuda_loop = os.environ.get(CUDA_LOOP_ENV, "graph").strip().lower() or "graph"
        return self._cuda_loop

    @cuda_loop.setter
    def cuda_loop(self, mode):
        if mode not in CUDA_LOOPS:
            raise ValueError(f"{self.name}: cuda_loop must be one of {', '.join(map(repr, CUDA_LOOPS))} "
                             f"(also ${CUDA_LOOP_ENV}), got {mode!r}")
        self._cuda_loop = mode

    _cuda_loop = None

    def _activate(self):
        """Make this GPU the current one, if it is not already (see the class docstring)."""
        if self._runtime.getDevice() != self.index:
            self._runtime.setDevice(self.index)

    def _on(self):
        return self._cupy.cuda.Device(self.index)

    def from_host(self, data, dtype=None):
        self._activate()
        cupy = self._cupy
        if isinstance(data, cupy.ndarray):
            # cupy.asarray hands back an array of another GPU as it is: copy it onto this one
            out = data if data.device.id == self.index else data.copy()
        else:
            out = cupy.asarray(np.asarray(data))
        if dtype is not None and out.dtype != self._native[dtype]:
            out = out.astype(self._native[dtype])
        return out

    def to_host(self, arr):
        return self._cupy.asnumpy(arr)

    def is_native(self, arr):
        return isinstance(arr, self._cupy.ndarray)

    def contiguous(self, arr):
        self._activate()
        return self._cupy.ascontiguousarray(arr)

    # cuRAND's Philox4x32-10 through CuPy's RandomState: a counter-based generator, so
    # reseeding is setting two numbers (step_seed does it every training step), where CuPy's
    # default_rng (XORWOW) initialises 256,000 states with a kernel each time it is seeded.
    reads_sync = True
    CURAND_PHILOX = 161  # curandRngType CURAND_RNG_PSEUDO_PHILOX4_32_10 (curand.h)
    per_step_rng = True  # CuPy exposes no generator state to save: see Device.per_step_rng

    def manual_seed(self, seed):
        with self._on():  # scoped: tg.manual_seed reseeds every device, and changes no current one
            self._rng = self._cupy.random.RandomState(_uint64(seed), method=self.CURAND_PHILOX)
        self._seed = seed

    def step_seed(self, seed, rank, step):
        with self._on():
            self._rng.seed(_uint64(derive_seed(seed, rank, step)))

    def randn(self, shape, dtype):
        self._activate()
        return self._rng.standard_normal(shape, dtype=self._native[dtype])

    def rand(self, shape, dtype):
        self._activate()
        return self._rng.random_sample(shape, dtype=self._native[dtype])

    def randint(self, low, high, shape):
        self._activate()
        return self._rng.randint(low, high, size=shape, dtype=self._cupy.int64)

    def get_rng_state(self):
        # CuPy's generators have no state object to save: the seed, and training reseeds per step
        return {"seed": self._seed, "per_step": "derive_seed(seed, rank, step)"}

    def set_rng_state(self, state):
        self.manual_seed(state["seed"])

    def scatter_add(self, target, index, values):
        self._activate()
        self._cupyx.scatter_add(target, index, values)

    def qr(self, a):
        with self._on():
            return self._cupy.linalg.qr(a)

    def synchronize(self):
        self._cupy.cuda.Device(self.index).synchronize()

    def erf(self, arr):
        from cupyx.scipy import special
        with self._on():
            return special.erf(arr)


# NumPy has no erf: the C library's, one element at a time (exact to the last bit, about
# 0.1 us an element; GELU's exact form is the only user)
_erf_f64 = np.vectorize(math.erf, otypes=[np.float64])


def _host_erf(arr):
    return _erf_f64(arr).astype(arr.dtype, copy=False)


def hold_freed_memory() -> bool:
    """Ask the C library's allocator to keep the memory NumPy frees for the next arrays,
    instead of handing it back to the operating system (glibc only; a no-op elsewhere).

    A training step frees and reallocates the same few-megabyte buffers every time, and
    glibc returns those to the system and faults them back in page by page: about 2,000
    page faults a char-LM step, which in a virtual machine cost ~4.5 us each (measured: a
    GRU 2x256 step 10% faster held). The price is that the process keeps its peak memory.
    This changes the whole process's allocator, so the library never calls it on its own;
    the command line does, for the process it owns. Returns whether it took effect."""
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    # 32 MB is the largest mmap threshold glibc takes; larger arrays still come from mmap
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


@contextlib.contextmanager
def kernels_off(device):
    """Within the block, ops on `device` run their portable array-API form instead of its
    compiled kernels (use_kernels off): to compare the two, or to time what the kernels save."""
    dev = get_device(device)
    was = dev.use_kernels
    dev.use_kernels = False
    try:
        yield dev
    finally:
        dev.use_kernels = was


@contextlib.contextmanager
def cuda_loop(device, mode):
    """Within the block, the whole-sequence ops on the CUDA `device` run their loop over time
    as `mode`: "graph" (captured and replayed) or "python" (one Python step per timestep)."""
    dev = get_device(device)
    if dev.kind != "cuda":
        raise ValueError(f"cuda_loop: {dev.name} is not a CUDA device (the CPU's loop over time is C++)")
    was = dev.cuda_loop
    dev.cuda_loop = mode
    try:
        yield dev
    finally:
        dev.cuda_loop = was


@contextlib.contextmanager
def indices_checked(device):
    """Within the block, ops on `device` (embedding, cross_entropy) skip the bounds check of their
    indices, which the caller has done on the host before uploading them: on a GPU that check
    reads the indices' minimum and maximum back, two host synchronisations an op."""
    dev = get_device(device)
    was = dev.check_indices
    dev.check_indices = False
    try:
        yield dev
    finally:
        dev.check_indices = was


# ----------------------------------------------------------------------------- registry
_devices: dict[str, Device] = {}
_default_device_name = "cpu"


# The ops use cupy.astype, permute_dims and concat (new in CuPy 14.0) and cumulative_sum (14.2),
# and the CUDA device asks for cupy.bool (14.0): an older CuPy fails inside the first op
CUPY_NEEDED = (14, 2)
_CUPY_INSTALL = "pip install -U -e '.[cuda]' (CUDA 12) or -e '.[cuda13]' (CUDA 13)"


def cupy_version_problem(version: str) -> str:
    """"" when CuPy `version` (its __version__) is new enough, else what to say about it."""
    m = re.match(r"(\d+)\.(\d+)", str(version))
    if m and (int(m.group(1)), int(m.group(2))) >= CUPY_NEEDED:
        return ""
    need = ".".join(map(str, CUPY_NEEDED))
    return (f"CuPy {version} is installed, but tinygrad_rnn needs CuPy >= {need} (its ops use cupy.astype, "
            f"permute_dims, concat, cumulative_sum and cupy.bool); upgrade it: {_CUPY_INSTALL}")


def cuda_available() -> tuple[bool, str]:
    """(True, "") when CuPy imports, is new enough and sees a GPU, else (False, why not)."""
    try:
        import cupy
    except ImportError as e:
        return False, f"CuPy is not installed ({e}); install it with pip install -e '.[cuda]'"
    problem = cupy_version_problem(getattr(cupy, "__version__", "(unknown version)"))
    if problem:
        return False, problem
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDA driver missing or broken
        return False, f"CuPy is installed but no CUDA GPU is usable ({type(e).__name__}: {e})"
    if n == 0:
        return False, "CuPy is installed but no CUDA GPU was found"
    return True, ""


def get_device(device=None) -> Device:
    """'cpu', 'cuda', 'cuda:N', 'strict', a Device, or None for the default device."""
    if isinstance(device, Device):
        return device
    if device is None:
        device = _default_device_name
    name = str(device)
    if name == "cuda":
        name = "cuda:0"
    dev = _devices.get(name)
    if dev is not None:
        return dev
    if name == "cpu":
        dev = CPUDevice()
    elif name == "strict":
        try:
            dev = StrictDevice()
        except ImportError:
            raise RuntimeError("device 'strict' needs the array-api-strict package "
                               "(pip install -e '.[test]')") from None
    elif name.startswith("cuda:"):
        ok, why = cuda_available()
        if not ok:
            raise RuntimeError(f"device '{name}' is not available: {why}")
        try:
            index = int(name[5:])
        except ValueError:
            raise ValueError(f"bad device name {device!r}: expected 'cuda' or 'cuda:N'") from None
        import cupy
        count = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= index < count:
            raise RuntimeError(f"device '{name}' does not exist: {count} GPU(s) found")
        dev = CUDADevice(index)
    else:
        raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda', 'cuda:N' or 'strict'")
    _devices[name] = dev
    return dev


def set_default_device(device) -> None:
    """The device of new tensors when `device=` is not given."""
    global _default_device_name
    _default_device_name = get_device(device).name


def get_default_device() -> Device:
    return get_device(None)


def manual_seed(seed: int) -> None:
    """Seed the generator of every device (those made later start from `seed` too)."""
    global _seed
    _seed = int(seed)
    for dev in _devices.values():
        dev.manual_seed(_seed)


def device_of_array(arr) -> Device:
    """The device a raw array lives on (NumPy arrays -> cpu)."""
    if isinstance(arr, np.ndarray):
        return get_device("cpu")
    mod = type(arr).__module__
    if mod.startswith("cupy"):
        return get_device(f"cuda:{arr.device.id}")
    if mod.startswith("array_api_strict"):
        return get_device("strict")
    raise TypeError(f"not an array of a known backend: {type(arr).__name__}")
