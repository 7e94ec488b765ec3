"""Elementwise kernels on CUDA: CuPy's ElementwiseKernel, with cuda_prelude.cuh's math as
the preamble of every kernel. CuPy compiles each kernel for a dtype at its first call and
caches it on disk, keyed by the source (prelude included). And `GraphCache`: a loop of
launches (the sequence ops' loop over time) captured once as a CUDA graph and replayed."""
from __future__ import annotations

from collections import OrderedDict
from importlib import resources

PRELUDE = resources.files(__package__) / "cuda_prelude.cuh"
_prelude = None


def prelude() -> str:
    """The text of cuda_prelude.cuh, read once."""
    global _prelude
    if _prelude is None:
        _prelude = PRELUDE.read_text()
    return _prelude


def body(kernel) -> str:
    """The body CuPy compiles: the row and column of element i first, where the kernel has rows."""
    if kernel.row is None:
        return kernel.body
    return f"const ptrdiff_t b = i / {kernel.row}, j = i % {kernel.row};\n{kernel.body}"


def build(device, family, kernels, preamble=""):
    """{name: cupy.ElementwiseKernel} for the family on a CUDA device."""
    import cupy  # only here: a CUDA device exists, so CuPy imports
    pre = prelude() + preamble
    return {name: cupy.ElementwiseKernel(k.in_params, k.out_params, body(k), f"tinygrad_rnn_{family}_{name}",
                                         preamble=pre)
            for name, k in kernels.items()}


# ----------------------------------------------------------------------------- CUDA graphs
class GraphCache:
    """Loops over time captured as CUDA graphs and replayed: a bounded LRU of entries, one per
    key (what the loop does: op, direction, flags, a packed batch's batch sizes) and the
    shapes, dtypes and aliasing of the arrays it runs on, on the current GPU.

    When a key is captured: at its second sighting, not its first. A key that never comes
    back (a packed batch whose batch sizes are new every time, as in training on sequences
    of random lengths) would pay the Python loop and a capture, twice the host time of the
    plain loop, for a graph never replayed. So:
    - first sighting: the loop runs plainly on the caller's own arrays (no staging buffers,
      no capture), exactly as with cuda_loop "python", and the key goes into `seen`, a
      bounded LRU of keys met once (`seen_size()`: 4x the entries' limit);
    - second sighting: the entry is made and captured (below), its result that call's;
    - later sightings: the graph is replayed.
    Where keys repeat (a char-LM's fixed shapes) nothing changes from the third call on;
    where they never repeat, the cost is exactly the Python loop's. An entry that leaves the
    LRU is forgotten: its key starts again as a first sighting.

    Why a graph, and these rules (CuPy 14, cupy/cuda/stream.pyx, memory.pyx):
    - A graph bakes in the pointers of every array its kernels and GEMMs touched, so each
      entry owns *staging buffers*, allocated once, with the shapes of the call's arrays. A
      call copies its inputs in (one device-to-device copy each), launches the graph (one
      call from Python, whatever T is) and copies the outputs back into its own arrays, which
      stay the caller's (saved for backward, handed out as results) while the next call
      reuses the staging. Capturing over the call's own arrays with their pointers in the
      key would never hit: every call allocates new ones.
    - CuPy captures in relaxed mode, where its memory pool may allocate during capture; but
      a block the loop frees during capture goes back to the shared pool, which can hand it
      to another array while the graph still writes it at every replay. So the capture runs
      with a private `cupy.cuda.MemoryPool` as the allocator, kept alive by the entry and
      used by nothing else: the loop's temporaries (a transposed weight, the portable cell
      forms' scratch) get addresses only that graph uses.
    - The capturing call (a key's second sighting) runs the loop uncaptured on the staging
      buffers (its result is that call's), then captures it. That run initialises what must
      not first happen inside a capture: the cuBLAS handle and its default workspace (cuBLAS
      before 12.2 allocates one with cudaMalloc at first use; PyTorch sets one per handle for
      this reason, and from 12.2 cuBLAS allocates stream-ordered, which capture records),
      cuBLAS's heuristics, CuPy's compilation and loading of the cell kernels, and cached
      constants. The first sighting's plain run does not make that run redundant, though
      capturing and launching straight away would save a loop: it ran on the caller's
      arrays, whose layouts the key does not hold (an upstream gradient may be a broadcast
      or a strided view, the staging is always contiguous), and CuPy compiles an elementwise
      kernel per argument layout (ndim after merging axes, contiguity) while cuBLAS picks its
      kernels by strides and alignment. Only a run on the staging itself initialises exactly
      what the capture records, so the simpler rule is also the one that is right.
    - Nothing in a loop reads a device value back (a capture cannot: CuPy raises), and what
      the loop returns to Python (the backward's final dc buffer) depends only on the key.
    The price: per replayed call a copy in and out of what the loop reads and writes (a few
    times the states' and gates' size, bandwidth-bound), and per entry its buffers, held
    until it leaves the LRU (`GRAPHS.size`; `GRAPHS.clear()` frees them all and forgets the
    keys seen).
    """

    def __init__(self, size=16):
        self.size = size
        self.entries = OrderedDict()
        self.seen = OrderedDict()  # keys met once and run plainly: {key: None}, least recent first
        self.captures = 0  # graphs captured
        self.launches = 0  # graph launches (replays)

    def seen_size(self):
        """How many once-met keys `seen` holds: a key that comes back after up to this many
        other new keys is still captured at its return; each is a small tuple, no arrays."""
        return 4 * self.size

    def clear(self):
        self.entries.clear()
        self.seen.clear()

    def run(self, device, key, loop, arrays, copy_in, copy_out):
        """loop(*arrays): plainly at a key's first sighting, through a graph from its second
        (see the class docstring). arrays a tuple of device arrays or None; copy_in
        ((i, index or None), ...) the parts of arrays[i] the loop reads (index: a part such
        as one state slot); copy_out (i, ...) the arrays it writes that the caller keeps.
        Returns what loop returns (the same for every call of a key)."""
        import cupy
        xp = device.xp  # the device's GPU current
        alias = tuple(None if a is None else next(j for j, b in enumerate(arrays) if b is a) for a in arrays)
        full = (key, device.name, device.use_kernels, alias,  # use_kernels: the kernels' graph or the portable one
                tuple(None if a is None else (tuple(a.shape), str(a.dtype)) for a in arrays))
        entry = self.entries.get(full)
        if entry is not None:
            self.entries.move_to_end(full)
            bufs = entry[0]
            _copy(arrays, bufs, copy_in)
            entry[1].launch(stream=cupy.cuda.get_current_stream())
            self.launches += 1
            _copy_back(arrays, bufs, copy_out)
            return entry[2]
        if full not in self.seen:  # a first sighting: the plain loop on the caller's arrays, remembered
            self.seen[full] = None
            while len(self.seen) > self.seen_size():
                self.seen.popitem(last=False)
            return loop(*arrays)
        del self.seen[full]  # the second: captured now, an entry from here on
        bufs = []
        for a, j in zip(arrays, alias):
            bufs.append(None if a is None else bufs[j] if j < len(bufs) else xp.zeros(a.shape, dtype=a.dtype))
        bufs = tuple(bufs)
        _copy(arrays, bufs, copy_in)
        result = loop(*bufs)  # this call's result, and first-use initialisation outside the capture
        graph, pool = self._capture(cupy, loop, bufs)
        self.entries[full] = (bufs, graph, result, pool)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)
        _copy_back(arrays, bufs, copy_out)
        return result

    def _capture(self, cupy, loop, bufs):
        pool = cupy.cuda.MemoryPool()
        stream = cupy.cuda.Stream(non_blocking=True)
        with stream, cupy.cuda.using_allocator(pool.malloc):
            stream.begin_capture()
            try:
                loop(*bufs)
            except BaseException:
                stream.end_capture()  # leave capture mode; the error is the loop's
                raise
            graph = stream.end_capture()
        self.captures += 1
        return graph, pool


def _copy(arrays, bufs, parts):
    for i, index in parts:
        if index is None:
            bufs[i][...] = arrays[i]
        else:
            bufs[i][index] = arrays[i][index]


def _copy_back(arrays, bufs, which):
    for i in which:
        arrays[i][...] = bufs[i]


GRAPHS = GraphCache()
