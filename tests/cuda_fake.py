"""A stand-in for CuPy on a machine without a GPU, for the CUDA device's host tests.

`install(monkeypatch, gpus=2, version="14.2.0")` puts fake `cupy` and `cupyx` modules in
sys.modules and gives tinygrad_rnn's backend a fresh device registry. The fake computes with
NumPy, but keeps what CuPy keeps per thread, a current GPU, and records on every array the
GPU it was allocated on. Like CuPy, an operation on an array of another GPU than the current
one raises (CuPy: "The device where the array resides (1) is different from the current
device (0)"), so a test that runs an op on cuda:1 while GPU 0 is current fails loudly.
`fake.log` holds (what, GPU) for every allocation, kernel, matmul and copy (an assignment
into an array) launched from Python, and every graph capture and launch; `fake.syncs` counts
the device values read back to the host (item, float, int, bool, asnumpy).

Stream capture, as CUDA and CuPy do it (cupy.cuda.Stream.begin_capture/end_capture,
cupy.cuda.graph.Graph.launch): between begin_capture and end_capture every operation is
RECORDED, not executed: an operation with out= (or an assignment) records itself, one that
makes a new array returns one filled with NaN and records the computation into it, and a
view is only a view. Graph.launch() replays the record on the arrays' contents at that time.
A device value read during capture raises (CUDA: "operation not permitted when stream is
capturing"), and so does an allocation, unless it comes from a private pool made current
with cupy.cuda.using_allocator(cupy.cuda.MemoryPool().malloc): CuPy's shared pool could hand
a block freed during capture to another array while the graph still writes it; what the
library relies on is a pool that only the graph uses (kernels/cuda.py's GraphCache)."""
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
        self.capture = None      # the operations recorded while a stream captures, else None
        self.allocator = None    # the allocator of cupy.cuda.using_allocator, if any
        self.captures = 0        # graphs captured
        self.launches = 0        # graphs launched


class CaptureError(RuntimeError):
    """What CUDA and CuPy raise for an operation a stream capture cannot take."""


_state: _State | None = None


class FakeArray(np.ndarray):
    """A NumPy array that says which fake GPU holds it."""

    def __array_finalize__(self, obj):
        owner = _owner(obj)
        if owner is not None:
            self._gpu = owner._gpu  # a view: the same memory
        else:
            if _state.capture is not None and not isinstance(_state.allocator, _PoolMalloc):
                raise CaptureError("cudaErrorStreamCaptureUnsupported: an allocation from CuPy's shared memory pool "
                                   "while a stream captures (use a private pool: cupy.cuda.using_allocator)")
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
        f = getattr(ufunc, method)
        if kwargs.get("out"):
            outs = kwargs["out"]
            kwargs["out"] = tuple(_unwrap(o) for o in outs)
            _run(lambda: f(*plain, **kwargs))
            return outs[0] if len(outs) == 1 else outs
        return _compute(lambda: f(*plain, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        for a in _flatten(args) + _flatten(tuple(kwargs.values())):
            if isinstance(a, FakeArray):
                a._check(func.__name__)
        _state.log.append(("kernel", _state.current))
        a, kw = _unwrap(args), _unwrap_kw(kwargs)
        return _compute(lambda: func(*a, **kw))

    def copy(self, order="C"):
        plain = self.view(np.ndarray)
        _state.log.append(("kernel", _state.current))
        return _compute(lambda: np.array(plain, order=order, copy=True))  # on the current GPU

    def __getitem__(self, key):
        res = super().__getitem__(key)
        if isinstance(res, np.generic):  # CuPy gives a 0-d array, whose value is read only when asked
            return super().__getitem__((key if isinstance(key, tuple) else (key,)) + (Ellipsis,))
        return res

    def __setitem__(self, key, value):
        if isinstance(value, FakeArray):
            value._check("setitem")
        self._check("setitem")
        _state.log.append(("copy", _state.current))
        plain, k, v = self.view(np.ndarray), _unwrap(key), _unwrap(value)
        _run(lambda: plain.__setitem__(k, v))

    # reading a value back: a host synchronisation on a real GPU
    def item(self, *args):
        _read("item")
        return self.view(np.ndarray).item(*args)

    def __float__(self):
        _read("float")
        return float(self.view(np.ndarray))

    def __int__(self):
        _read("int")
        return int(self.view(np.ndarray))

    def __bool__(self):
        _read("bool")
        return bool(self.view(np.ndarray))

    def __index__(self):
        _read("index")
        return self.view(np.ndarray).__index__()

    def tolist(self):
        _read("tolist")
        return self.view(np.ndarray).tolist()


def _read(what):
    if _state.capture is not None:
        raise CaptureError(f"cudaErrorStreamCaptureUnsupported: {what}() reads a device value back while a stream "
                           "captures (operation not permitted when stream is capturing)")
    _state.syncs.append(what)


def _owner(obj):
    """The FakeArray whose memory obj (an array) is a view of, or None."""
    while isinstance(obj, np.ndarray):
        if isinstance(obj, FakeArray) and getattr(obj, "_gpu", None) is not None:
            return obj
        obj = obj.base
    return None


def _run(op):
    """An operation writing into existing arrays: done now, or recorded while a stream captures."""
    if _state.capture is not None:
        _state.capture.append(op)
    else:
        op()


def _compute(make):
    """An operation making a new array: done now; while a stream captures, a new array (so an
    allocation) of the result's shape, NaN until a launch of the graph computes it."""
    if _state.capture is None:
        return _wrap(make())
    shape = np.errstate(all="ignore")
    with shape:
        res = make()  # for the shape and dtype only: a capture executes nothing
    if not isinstance(res, np.ndarray):
        return _wrap(res)
    if _owner(res) is not None:  # a view: nothing to launch
        return res if isinstance(res, FakeArray) else res.view(FakeArray)
    out = np.empty(res.shape, dtype=res.dtype).view(FakeArray)  # allocates: checked against the pool
    plain = out.view(np.ndarray)
    if plain.dtype.kind in "fc":
        plain[...] = np.nan

    def replay():
        with np.errstate(all="ignore"):
            np.copyto(plain, make())
    _state.capture.append(replay)
    return out


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
        a, kw = _unwrap(args), _unwrap_kw(kwargs)
        if kw.get("out") is not None:
            out = kwargs["out"]
            _run(lambda: f(*a, **kw))
            return out
        if name == "empty":  # an allocation, nothing to launch
            return _wrap(f(*a, **kw))
        return _compute(lambda: f(*a, **kw))
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


_streams = []  # the streams made current with `with stream:`, innermost last


def _current_stream():
    return _streams[-1] if _streams else types.SimpleNamespace(ptr=1000 + _state.current, device_id=_state.current)


class _Stream:
    """cupy.cuda.Stream: capture records into a graph (see the module docstring)."""

    _next = 2000

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        _Stream._next += 1
        self.ptr, self.device_id, self.non_blocking = _Stream._next, _state.current, non_blocking
        self._capturing = False

    def __enter__(self):
        _streams.append(self)
        return self

    def __exit__(self, *exc):
        _streams.remove(self)

    def begin_capture(self, mode=None):
        if _state.capture is not None:
            raise CaptureError("cudaErrorIllegalState: a stream is already capturing")
        if _current_stream() is not self:
            raise CaptureError("the fake records the current stream's work: capture on the stream made current")
        self._capturing, _state.capture = True, []

    def is_capturing(self):
        return self._capturing

    def end_capture(self):
        if not self._capturing:
            raise CaptureError("cudaErrorIllegalState: the stream is not capturing")
        ops, _state.capture, self._capturing = _state.capture, None, False
        _state.captures += 1
        _state.log.append(("capture", _state.current))
        return _Graph(ops, _state.current)

    def synchronize(self):
        pass


class _Graph:
    """cupy.cuda.graph.Graph: launch() replays the recorded operations, in order."""

    def __init__(self, ops, gpu):
        self._ops, self._gpu = ops, gpu

    def launch(self, stream=None):
        if _state.current != self._gpu:
            raise ValueError(f"a graph captured on device {self._gpu} launched on device {_state.current}")
        _state.launches += 1
        _state.log.append(("graph_launch", _state.current))
        for op in self._ops:
            op()


class _PoolMalloc:
    def __init__(self, pool):
        self.pool = pool

    def __call__(self, size):
        raise NotImplementedError("the fake allocates with NumPy: it only checks which allocator is current")


class _MemoryPool:
    """cupy.cuda.MemoryPool: its malloc is what using_allocator takes."""

    def __init__(self, allocator=None):
        self.malloc = _PoolMalloc(self)


class _UsingAllocator:
    def __init__(self, allocator=None):
        self.allocator = allocator

    def __enter__(self):
        self._prev, _state.allocator = _state.allocator, self.allocator

    def __exit__(self, *exc):
        _state.allocator = self._prev



def _asarray(a, dtype=None, **kw):
    if isinstance(a, FakeArray):
        return a if dtype is None else a.astype(dtype)
    return np.array(a, dtype=dtype, copy=True).view(FakeArray)


def _asnumpy(a):
    _read("asnumpy")
    return np.array(a.view(np.ndarray) if isinstance(a, FakeArray) else a, copy=True)


def _make_modules(version):
    cupy = types.ModuleType("cupy")
    cupy.__version__ = version
    cupy.ndarray = FakeArray
    cupy.bool = np.bool_
    cupy.int64 = np.int64
    cupy.asarray = _asarray
    cupy.asnumpy = _asnumpy
    cupy.ascontiguousarray = _fn("ascontiguousarray")
    cupy.random = types.SimpleNamespace(RandomState=_RandomState)
    runtime = types.SimpleNamespace(getDevice=lambda: _state.current, setDevice=_set_device,
                                    getDeviceCount=lambda: _state.gpus)
    cupy.cuda = types.ModuleType("cupy.cuda")
    cupy.cuda.runtime, cupy.cuda.Device = runtime, _Device
    cupy.cuda.get_current_stream = _current_stream
    cupy.cuda.Stream = _Stream
    cupy.cuda.MemoryPool = _MemoryPool
    cupy.cuda.using_allocator = _UsingAllocator
    cupy.cuda.graph = types.SimpleNamespace(Graph=_Graph)
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
    _streams.clear()
    from tinygrad_rnn.kernels import cuda as cuda_kernels
    cuda_kernels.GRAPHS.clear()  # graphs of an earlier fake's arrays
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
