"""A stand-in for CuPy on a machine without a GPU, for the CUDA device's host tests.

`install(monkeypatch, gpus=2, version="14.2.0")` puts fake `cupy` and `cupyx` modules in
sys.modules and gives tinygrad_rnn's backend a fresh device registry. The fake computes with
NumPy, but keeps what CuPy keeps per thread, a current GPU, and records on every array the
GPU it was allocated on. Like CuPy, an operation on an array of another GPU than the current
one raises (CuPy: "The device where the array resides (1) is different from the current
device (0)"), so a test that runs an op on cuda:1 while GPU 0 is current fails loudly.
`fake.log` holds (what, GPU) for every allocation, kernel and matmul; `fake.syncs` counts the
device values read back to the host (item, float, int, bool, asnumpy)."""
from __future__ import annotations

import sys
import types

import numpy as np

from tinygrad_rnn import backend as B


class _State:
    def __init__(self, gpus):
        self.gpus = gpus
        self.current = 0
        self.log = []      # (what, GPU)
        self.syncs = []    # what read a device value back
        self.set_device_calls = 0


_state: _State | None = None


class FakeArray(np.ndarray):
    """A NumPy array that says which fake GPU holds it."""

    def __array_finalize__(self, obj):
        if isinstance(obj, FakeArray) and getattr(obj, "_gpu", None) is not None:
            self._gpu = obj._gpu  # a view: the same memory
        else:
            self._gpu = _state.current
            _state.log.append(("alloc", _state.current))

    @property
    def device(self):
        return types.SimpleNamespace(id=self._gpu)

    @property
    def data(self):  # CuPy's MemoryPointer: only .ptr is read
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])

    def _check(self, what):
        if self._gpu != _state.current:
            raise ValueError(f"{what}: the device where the array resides ({self._gpu}) is different from the "
                             f"current device ({_state.current})")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        for a in inputs + tuple(kwargs.get("out", ()) or ()):
            if isinstance(a, FakeArray):
                a._check(ufunc.__name__)
        _state.log.append(("matmul" if ufunc is np.matmul else "kernel", _state.current))
        plain = [a.view(np.ndarray) if isinstance(a, FakeArray) else a for a in inputs]
        if kwargs.get("out"):
            outs = kwargs["out"]
            kwargs["out"] = tuple(_unwrap(o) for o in outs)
            getattr(ufunc, method)(*plain, **kwargs)
            return outs[0] if len(outs) == 1 else outs
        return _wrap(getattr(ufunc, method)(*plain, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        for a in _flatten(args) + _flatten(tuple(kwargs.values())):
            if isinstance(a, FakeArray):
                a._check(func.__name__)
        _state.log.append(("kernel", _state.current))
        res = func(*_unwrap(args), **_unwrap_kw(kwargs))
        return _wrap(res)

    def copy(self, order="C"):
        out = np.array(self.view(np.ndarray), order=order, copy=True).view(FakeArray)  # on the current GPU
        return out

    # reading a value back: a host synchronisation on a real GPU
    def item(self, *args):
        _state.syncs.append("item")
        return self.view(np.ndarray).item(*args)

    def __float__(self):
        _state.syncs.append("float")
        return float(self.view(np.ndarray))

    def __int__(self):
        _state.syncs.append("int")
        return int(self.view(np.ndarray))

    def __bool__(self):
        _state.syncs.append("bool")
        return bool(self.view(np.ndarray))

    def __index__(self):
        _state.syncs.append("index")
        return self.view(np.ndarray).__index__()

    def tolist(self):
        _state.syncs.append("tolist")
        return self.view(np.ndarray).tolist()


def _flatten(seq):
    out = []
    for a in seq:
        if isinstance(a, (list, tuple)):
            out.extend(_flatten(a))
        else:
            out.append(a)
    return tuple(out)


def _unwrap(a):
    if isinstance(a, FakeArray):
        return a.view(np.ndarray)
    if isinstance(a, (list, tuple)):
        return type(a)(_unwrap(x) for x in a)
    return a


def _unwrap_kw(kw):
    return {k: _unwrap(v) for k, v in kw.items()}


def _wrap(res):
    if isinstance(res, FakeArray):
        return res
    if isinstance(res, np.ndarray):
        return res.view(FakeArray)
    if isinstance(res, tuple):
        return tuple(_wrap(r) for r in res)
    if isinstance(res, np.generic):  # CuPy returns 0-d arrays, never scalars
        return np.asarray(res).view(FakeArray)
    return res


_VIEWS = {"reshape", "permute_dims", "expand_dims", "squeeze", "broadcast_to"}  # no kernel on a GPU


def _fn(name):
    f = getattr(np, name)
    if isinstance(f, type) or not callable(f):  # dtypes, constants
        return f

    def call(*args, **kwargs):
        for a in _flatten(args):
            if isinstance(a, FakeArray):
                a._check(name)
        _state.log.append(("matmul" if name == "matmul" else "view" if name in _VIEWS else "kernel", _state.current))
        return _wrap(f(*_unwrap(args), **_unwrap_kw(kwargs)))
    call.__name__ = name
    return call


class _Device:
    def __init__(self, index=None):
        self.id = _state.current if index is None else index

    def use(self):
        _set_device(self.id)

    def __enter__(self):
        self._prev = _state.current
        _set_device(self.id)
        return self

    def __exit__(self, *exc):
        _set_device(self._prev)

    def synchronize(self):
        pass


def _set_device(i):
    if not 0 <= i < _state.gpus:
        raise ValueError(f"invalid device ordinal {i}")
    _state.set_device_calls += 1
    _state.current = i


class _RandomState:
    """cupy.random.RandomState: a cuRAND generator on the GPU current when it was made, whose
    whole state is its seed (no state to save, as with CuPy's)."""

    def __init__(self, seed=None, method=None):
        self.method = method
        self._gpu = _state.current
        self.seed(seed)

    def seed(self, seed=None):
        if seed is not None:  # as CuPy's RandomState.seed takes it
            seed = int(np.asarray(seed).astype(np.uint64, casting="safe"))
        self._rng = np.random.default_rng(seed)
        _state.log.append(("seed", _state.current))

    def _on(self):
        if self._gpu != _state.current:
            raise ValueError(f"the generator of device {self._gpu} used on device {_state.current}")

    def standard_normal(self, size=None, dtype=np.float64):
        self._on()
        return self._rng.standard_normal(size).astype(dtype).view(FakeArray)

    def random_sample(self, size=None, dtype=np.float64):
        self._on()
        return self._rng.random(size).astype(dtype).view(FakeArray)

    def randint(self, low, high=None, size=None, dtype=np.int64):
        self._on()
        return self._rng.integers(low, high, size=size).astype(dtype).view(FakeArray)


def _asarray(a, dtype=None, **kw):
    if isinstance(a, FakeArray):
        return a if dtype is None else a.astype(dtype)
    return np.array(a, dtype=dtype, copy=True).view(FakeArray)


def _asnumpy(a):
    _state.syncs.append("asnumpy")
    return np.array(a.view(np.ndarray) if isinstance(a, FakeArray) else a, copy=True)


def _make_modules(version):
    cupy = types.ModuleType("cupy")
    cupy.__version__ = version
    cupy.ndarray = FakeArray
    cupy.bool = np.bool_
    cupy.int64 = np.int64
    cupy.asarray = _asarray
    cupy.asnumpy = _asnumpy
    cupy.ascontiguousarray = lambda a: _wrap(np.ascontiguousarray(_unwrap(a)))
    cupy.random = types.SimpleNamespace(RandomState=_RandomState)
    runtime = types.SimpleNamespace(getDevice=lambda: _state.current, setDevice=_set_device,
                                    getDeviceCount=lambda: _state.gpus)
    cupy.cuda = types.ModuleType("cupy.cuda")
    cupy.cuda.runtime, cupy.cuda.Device = runtime, _Device
    cupy.cuda.get_current_stream = lambda: types.SimpleNamespace(ptr=1000 + _state.current)
    cupy.__getattr__ = _fn  # every other name: NumPy's function of that name, on the current GPU
    cupyx = types.ModuleType("cupyx")

    def scatter_add(target, index, values):
        for a in (target, index, values):
            if isinstance(a, FakeArray):
                a._check("scatter_add")
        _state.log.append(("kernel", _state.current))
        np.add.at(target.view(np.ndarray), _unwrap(index), _unwrap(values))
    cupyx.scatter_add = scatter_add
    return cupy, cupyx


def install(monkeypatch, gpus=2, version="14.2.0"):
    """The fake CuPy in sys.modules and a fresh device registry; returns the fake's state."""
    global _state
    _state = _State(gpus)
    cupy, cupyx = _make_modules(version)
    monkeypatch.setitem(sys.modules, "cupy", cupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", cupy.cuda)
    monkeypatch.setitem(sys.modules, "cupyx", cupyx)
    monkeypatch.setattr(B, "_devices", {})
    return _state


def cuda(name="cuda:0"):
    """The fake CUDA device `name`, running its ops' portable form (the fake builds no kernels)."""
    dev = B.get_device(name)
    dev.use_kernels = False
    return dev
