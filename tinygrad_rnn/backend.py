"""The only module that names NumPy or CuPy.

A `Device` owns an array namespace (`device.xp`), moves data to and from the host,
draws random numbers, and provides the few kernels that the Python Array API
standard does not have (scatter-add). Everything above this module does array math
through `device.xp` with names from the standard, so the same op code runs on NumPy,
CuPy and `array_api_strict` (a test-only device that refuses anything outside the
standard, as CuPy would refuse a stray NumPy call).

Devices:
  "cpu"                 NumPy
  "cuda", "cuda:N"      CuPy on GPU N
  "strict"              array_api_strict (tests only; computes with NumPy underneath)
"""
from __future__ import annotations

import numpy as np


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
_seed = 0  # the last tg.manual_seed; devices created later start from it too


class Device:
    """One array library on one device. Subclasses differ only where the standard is silent."""

    kind = "?"

    def __init__(self, name: str, xp):
        self.name = name
        self.xp = xp
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

    # random numbers: one generator per device, reseeded by tg.manual_seed
    def manual_seed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def randn(self, shape, dtype: DType):
        return self.from_host(self._rng.standard_normal(shape), dtype)

    def rand(self, shape, dtype: DType):
        return self.from_host(self._rng.random(shape), dtype)

    def randint(self, low, high, shape):
        return self.from_host(self._rng.integers(low, high, size=shape), int64)

    def get_rng_state(self) -> dict:
        return self._rng.bit_generator.state

    def set_rng_state(self, state: dict) -> None:
        self._rng.bit_generator.state = state

    # kernels outside the standard
    def scatter_add(self, target, index, values) -> None:
        """target[index] += values, in place, with repeated indices accumulating."""
        raise NotImplementedError

    def synchronize(self) -> None:
        pass

    # fused recurrent cells (ops/rnn.py): the gate nonlinearities and the state update of
    # one timestep. These portable versions use only the array API; CUDADevice replaces
    # each with one elementwise kernel per direction. Gate pre-activations come in two
    # parts, gx (input side, biases folded in) and gh (h @ W_hh^T), laid out in PyTorch's
    # blocked gate order. `saved` is whatever the backward needs, opaque to the op.
    def rnn_cell_forward(self, gx, gh, nonlinearity):
        """h' = act(gx + gh); returns (h', saved)."""
        pre = gx + gh
        h = self.xp.tanh(pre) if nonlinearity == "tanh" else self.xp.where(pre > 0, pre, 0.0)
        return h, (h,)

    def rnn_cell_backward(self, saved, dh, nonlinearity):
        """d(pre-activation) from dh'."""
        h = saved[0]
        if nonlinearity == "tanh":
            return dh * (1.0 - h * h)
        return self.xp.where(h > 0, dh, 0.0)  # h > 0 exactly where the pre-activation is

    def _lstm_consts(self, hidden, arr):
        # Per-column constants that let one tanh serve all four gates:
        # sigmoid(x) = 0.5 tanh(0.5 x) + 0.5 (the engine's Sigmoid, bit for bit) on the
        # i, f, o blocks and tanh(x) on the g block, i.e. act = tanh(s x) s + b; and the
        # local derivative act (alpha - act) + beta (s(1 - s) or 1 - t^2).
        key = ("lstm", hidden, arr.dtype)
        cache = self.__dict__.setdefault("_cell_consts", {})
        if key not in cache:
            dt = self.dtype_of(arr)
            block = lambda vals: self.from_host(np.repeat(np.asarray(vals, dtype=np.float64), hidden), dt)
            cache[key] = (block([0.5, 0.5, 1.0, 0.5]), block([0.5, 0.5, 0.0, 0.5]),
                          block([1.0, 1.0, 0.0, 1.0]), block([0.0, 0.0, 1.0, 0.0]))
        return cache[key]

    def lstm_cell_forward(self, gx, gh, c):
        """Gates i, f, g, o of gx + gh; c' = f c + i g, h' = o tanh(c'). Returns (h', c', saved)."""
        H = c.shape[-1]
        s, b, _, _ = self._lstm_consts(H, gx)
        act = self.xp.tanh((gx + gh) * s) * s + b
        i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
        c_new = f * c + i * g
        tc = self.xp.tanh(c_new)
        return o * tc, c_new, (act, c, tc)

    def lstm_cell_backward(self, saved, dh, dc):
        """(d gates, dc) from dh', dc'. The same d gates serves gx and gh."""
        act, c, tc = saved
        H = c.shape[-1]
        _, _, alpha, beta = self._lstm_consts(H, act)
        i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
        dct = dc + dh * o * (1.0 - tc * tc)  # c' feeds both the next step and h'
        dact = self.xp.concat([dct * g, dct * c, dct * i, dh * tc], axis=-1)
        return dact * (act * (alpha - act) + beta), dct * f

    def gru_cell_forward(self, gx, gh, b_hh, h):
        """PyTorch's GRU step. gx = W_ih x + b_ih; gh = W_hh h (no bias); b_hh may be None.

        r, z = sigmoid(gx_rz + gh_rz + b_hrz); hn = gh_n + b_hn; n = tanh(gx_n + r hn);
        h' = n + z (h - n)  (= (1 - z) n + z h). Returns (h', saved).
        """
        xp, H = self.xp, h.shape[-1]
        if b_hh is not None:
            gh = gh + b_hh
        rz = xp.tanh((gx[:, :2 * H] + gh[:, :2 * H]) * 0.5) * 0.5 + 0.5
        r, z = rz[:, :H], rz[:, H:]
        hn = gh[:, 2 * H:]
        n = xp.tanh(gx[:, 2 * H:] + r * hn)
        return n + z * (h - n), (rz, n, hn, h)

    def gru_cell_backward(self, saved, dh):
        """(d gx, d gh, dh) from dh'; d b_hh is d gh summed over the batch."""
        xp = self.xp
        rz, n, hn, h = saved
        H = h.shape[-1]
        r, z = rz[:, :H], rz[:, H:]
        dn = dh * (1.0 - z) * (1.0 - n * n)  # through n's tanh: d(pre-activation of n)
        drz = xp.concat([dn * hn, dh * (h - n)], axis=-1) * (rz * (1.0 - rz))
        return xp.concat([drz, dn], axis=-1), xp.concat([drz, dn * r], axis=-1), dh * z


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

    def scatter_add(self, target, index, values):
        if (isinstance(index, np.ndarray) and index.ndim == 1 and values.ndim == target.ndim
                and values.shape[0] == index.shape[0] and index.shape[0]):
            # rows (embedding backward): sorting once and summing runs of equal indices with
            # reduceat is 2-4x faster than np.add.at, which handles one element at a time
            order = np.argsort(index, kind="stable")
            rows = index[order]
            starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
            target[rows[starts]] += np.add.reduceat(values[order], starts, axis=0)
        else:
            np.add.at(target, index, values)


class StrictDevice(Device):
    """array_api_strict: the standard and nothing else. Test-only."""

    kind = "strict"

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


class CUDADevice(Device):
    kind = "cuda"

    def __init__(self, index: int):
        import cupy
        import cupyx

        self.index = index
        self._cupy = cupy
        self._cupyx = cupyx
        super().__init__(f"cuda:{index}", cupy)

    def _on(self):
        return self._cupy.cuda.Device(self.index)

    def from_host(self, data, dtype=None):
        arr = np.asarray(data) if not isinstance(data, self._cupy.ndarray) else data
        with self._on():
            out = self._cupy.asarray(arr)
            if dtype is not None and out.dtype != self._native[dtype]:
                out = out.astype(self._native[dtype])
            return out

    def to_host(self, arr):
        return self._cupy.asnumpy(arr)

    def is_native(self, arr):
        return isinstance(arr, self._cupy.ndarray)

    def manual_seed(self, seed):
        with self._on():
            self._rng = self._cupy.random.default_rng(seed)
        self._seed = seed

    def randn(self, shape, dtype):
        with self._on():
            return self._rng.standard_normal(shape, dtype=self._native[dtype])

    def rand(self, shape, dtype):
        with self._on():
            return self._rng.random(shape, dtype=self._native[dtype])

    def randint(self, low, high, shape):
        with self._on():
            return self._rng.integers(low, high, size=shape, dtype=self._cupy.int64)

    def get_rng_state(self):
        # CuPy's generators have no portable state object: record the seed only.
        return {"seed": self._seed}

    def set_rng_state(self, state):
        self.manual_seed(state["seed"])

    def scatter_add(self, target, index, values):
        self._cupyx.scatter_add(target, index, values)

    # fused recurrent cells: one elementwise kernel each way, one thread per (batch, unit)
    # element of the state; the thread reads and writes its four (or three) gate columns
    # through raw indexing (b * G * H + j + k * H, PyTorch's blocked gate layout), as
    # Chainer's functions/activation/lstm.py does. Same equations and saved values as the
    # portable versions on Device, which the CUDA tests compare them against.
    _kernels = None

    def _kernel(self, name):
        cls = CUDADevice
        if cls._kernels is None:
            cls._kernels = {}
        k = cls._kernels.get(name)
        if k is None:
            params, outs, body = _CUDA_CELL_KERNELS[name]
            k = cls._kernels[name] = self._cupy.ElementwiseKernel(
                params, outs, body, f"tinygrad_rnn_{name}", preamble=_CUDA_CELL_PREAMBLE)
        return k

    def rnn_cell_forward(self, gx, gh, nonlinearity):
        with self._on():
            h = self._kernel(f"rnn_{nonlinearity}_fwd")(gx, gh)
        return h, (h,)

    def rnn_cell_backward(self, saved, dh, nonlinearity):
        with self._on():
            return self._kernel(f"rnn_{nonlinearity}_bwd")(saved[0], dh)

    def lstm_cell_forward(self, gx, gh, c):
        cp = self._cupy
        with self._on():
            gx, gh, c = cp.ascontiguousarray(gx), cp.ascontiguousarray(gh), cp.ascontiguousarray(c)
            B, H = c.shape
            h, c_new = cp.empty_like(c), cp.empty_like(c)
            act = cp.empty((B, 4 * H), dtype=c.dtype)
            self._kernel("lstm_fwd")(gx, gh, c, H, h, c_new, act)
        return h, c_new, (act, c, c_new)

    def lstm_cell_backward(self, saved, dh, dc):
        cp = self._cupy
        act, c, c_new = saved
        with self._on():
            dh, dc = cp.ascontiguousarray(dh), cp.ascontiguousarray(dc)
            B, H = c.shape
            dgates, dc_prev = cp.empty_like(act), cp.empty_like(c)
            self._kernel("lstm_bwd")(act, c, c_new, dh, dc, H, dgates, dc_prev)
        return dgates, dc_prev

    def gru_cell_forward(self, gx, gh, b_hh, h):
        cp = self._cupy
        with self._on():
            gx, gh, h = cp.ascontiguousarray(gx), cp.ascontiguousarray(gh), cp.ascontiguousarray(h)
            B, H = h.shape
            if b_hh is None:
                b_hh = cp.zeros((3 * H,), dtype=h.dtype)
            h_new = cp.empty_like(h)
            act = cp.empty((B, 4 * H), dtype=h.dtype)  # r, z, n, hn
            self._kernel("gru_fwd")(gx, gh, b_hh, h, H, h_new, act)
        return h_new, (act, h)

    def gru_cell_backward(self, saved, dh):
        cp = self._cupy
        act, h = saved
        with self._on():
            dh = cp.ascontiguousarray(dh)
            B, H = h.shape
            dgx = cp.empty((B, 3 * H), dtype=h.dtype)
            dgh = cp.empty((B, 3 * H), dtype=h.dtype)
            dh_prev = cp.empty_like(h)
            self._kernel("gru_bwd")(act, h, dh, H, dgx, dgh, dh_prev)
        return dgx, dgh, dh_prev

    def synchronize(self):
        self._cupy.cuda.Device(self.index).synchronize()


# CUDA sources of the fused cells (see CUDADevice._kernel). `i` is the thread's element
# of the (B, H) state; b, j its batch row and unit; k the same unit's first gate column.
_CUDA_CELL_PREAMBLE = r"""
template <typename T> __device__ __forceinline__ T tg_sigmoid(T x) {
  const T half = 0.5;
  return tanh(x * half) * half + half;  // the engine's Sigmoid: no overflow for large |x|
}
"""

_CUDA_CELL_KERNELS = {
    "rnn_tanh_fwd": ("T gx, T gh", "T h", "h = tanh(gx + gh);"),
    "rnn_tanh_bwd": ("T h, T dh", "T dpre", "dpre = dh * (1 - h * h);"),
    "rnn_relu_fwd": ("T gx, T gh", "T h", "const T p = gx + gh; h = p > 0 ? p : T(0);"),
    "rnn_relu_bwd": ("T h, T dh", "T dpre", "dpre = h > 0 ? dh : T(0);"),
    "lstm_fwd": (
        "raw T gx, raw T gh, T c_prev, int32 H",
        "T h, T c, raw T act",
        """
        const ptrdiff_t b = i / H, j = i % H;
        const ptrdiff_t k = b * 4 * H + j;
        const T ig = tg_sigmoid(gx[k] + gh[k]);
        const T fg = tg_sigmoid(gx[k + H] + gh[k + H]);
        const T gg = tanh(gx[k + 2 * H] + gh[k + 2 * H]);
        const T og = tg_sigmoid(gx[k + 3 * H] + gh[k + 3 * H]);
        act[k] = ig; act[k + H] = fg; act[k + 2 * H] = gg; act[k + 3 * H] = og;
        const T cn = fg * c_prev + ig * gg;
        c = cn;
        h = og * tanh(cn);
        """),
    "lstm_bwd": (
        "raw T act, T c_prev, T c, T dh, T dc, int32 H",
        "raw T dgates, T dc_prev",
        """
        const ptrdiff_t b = i / H, j = i % H;
        const ptrdiff_t k = b * 4 * H + j;
        const T ig = act[k], fg = act[k + H], gg = act[k + 2 * H], og = act[k + 3 * H];
        const T tc = tanh(c);
        const T dct = dc + dh * og * (1 - tc * tc);
        dgates[k] = dct * gg * ig * (1 - ig);
        dgates[k + H] = dct * c_prev * fg * (1 - fg);
        dgates[k + 2 * H] = dct * ig * (1 - gg * gg);
        dgates[k + 3 * H] = dh * tc * og * (1 - og);
        dc_prev = dct * fg;
        """),
    "gru_fwd": (
        "raw T gx, raw T gh, raw T bh, T h_prev, int32 H",
        "T h, raw T act",
        """
        const ptrdiff_t b = i / H, j = i % H;
        const ptrdiff_t k = b * 3 * H + j, s = b * 4 * H + j;
        const T rg = tg_sigmoid(gx[k] + gh[k] + bh[j]);
        const T zg = tg_sigmoid(gx[k + H] + gh[k + H] + bh[j + H]);
        const T hn = gh[k + 2 * H] + bh[j + 2 * H];
        const T ng = tanh(gx[k + 2 * H] + rg * hn);
        act[s] = rg; act[s + H] = zg; act[s + 2 * H] = ng; act[s + 3 * H] = hn;
        h = ng + zg * (h_prev - ng);
        """),
    "gru_bwd": (
        "raw T act, T h_prev, T dh, int32 H",
        "raw T dgx, raw T dgh, T dh_prev",
        """
        const ptrdiff_t b = i / H, j = i % H;
        const ptrdiff_t k = b * 3 * H + j, s = b * 4 * H + j;
        const T rg = act[s], zg = act[s + H], ng = act[s + 2 * H], hn = act[s + 3 * H];
        const T dn = dh * (1 - zg) * (1 - ng * ng);
        const T dr = dn * hn * rg * (1 - rg);
        const T dz = dh * (h_prev - ng) * zg * (1 - zg);
        dgx[k] = dr; dgx[k + H] = dz; dgx[k + 2 * H] = dn;
        dgh[k] = dr; dgh[k + H] = dz; dgh[k + 2 * H] = dn * rg;
        dh_prev = dh * zg;
        """),
}


# ----------------------------------------------------------------------------- registry
_devices: dict[str, Device] = {}
_default_device_name = "cpu"


def cuda_available() -> tuple[bool, str]:
    """(True, "") when CuPy imports and sees a GPU, else (False, why not)."""
    try:
        import cupy
    except ImportError as e:
        return False, f"CuPy is not installed ({e}); install it with pip install -e '.[cuda]'"
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
