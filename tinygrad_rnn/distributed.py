"""Data parallelism on MPI (mpi4py), with NCCL through CuPy for GPU gradients.

Every process (rank) holds the whole model, takes its share of each batch, and after
backward the ranks average their gradients, so each takes the same optimizer step:

    from tinygrad_rnn import distributed as dist
    dist.init()                                   # a plain `python` run is a world of one
    dist.broadcast_parameters(model)              # 1. every rank starts from rank 0's weights
    ...
    loss.backward()
    dist.all_reduce_gradients(model.parameters()) # 2. the mean gradient over the ranks
    opt.step()
    total = dist.all_reduce_scalar(loss.item())   # 3. metrics summed (or max, min) over the ranks

Started as `mpiexec -n N python train.py`. Without mpiexec nothing here imports mpi4py:
init() sees no MPI launcher in the environment and makes a world of one, where every call
is a no-op. The gradients are packed into one flat buffer per dtype and device and reduced
with one Allreduce each (through mpi4py's buffer interface, no pickling); CUDA gradients go
through NCCL when CuPy has it (the NCCL id is broadcast over MPI), else through the host.

Under MPI, an uncaught exception in one rank aborts the whole job (MPI Abort) after
printing the rank and the error, so the others never wait for it in a collective. On the
CPU each rank keeps one BLAS thread unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is set:
N ranks share the machine's cores.
"""
from __future__ import annotations

import os
import sys
import time
import traceback

from .tensor import Tensor

__all__ = ["init", "rank", "world_size", "is_main", "barrier", "all_reduce_gradients", "broadcast_parameters",
           "all_reduce_scalar", "abort", "DistributedError"]

# the variables MPI launchers set for their processes (MPICH/Hydra, Open MPI, PMIx)
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    pass


class _World:
    def __init__(self, comm, rank, size):
        self.comm, self.rank, self.size = comm, rank, size
        self.allreduce_calls = 0  # gradient Allreduce calls so far (one per dtype and device per step)
        self.nccl = {}            # device index -> NCCL communicator


_world = None


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (mpiexec, mpirun, srun with PMI)."""
    return any(v in os.environ for v in _LAUNCHER_VARS)


def init():
    """Join the MPI world (idempotent). Outside an MPI launcher: a world of one, without
    importing mpi4py. Returns the world (rank, size)."""
    global _world
    if _world is not None:
        return _world
    if not launched_by_mpi():
        _world = _World(None, 0, 1)
        return _world
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise DistributedError(f"this process was started by an MPI launcher, but mpi4py cannot be imported "
                               f"({e}); install the mpi extra: pip install -e '.[mpi]'") from None
    comm = MPI.COMM_WORLD
    _world = _World(comm, comm.Get_rank(), comm.Get_size())
    if _world.size > 1:
        _abort_on_uncaught_exceptions()
        _one_blas_thread()
    return _world


def _get():
    return _world if _world is not None else init()


def rank() -> int:
    return _get().rank


def world_size() -> int:
    return _get().size


def is_main() -> bool:
    """Rank 0: the one that prints, samples, writes metrics and checkpoints."""
    return _get().rank == 0


def barrier() -> None:
    w = _get()
    if w.size > 1:
        w.comm.Barrier()


def abort(message: str, code: int = 1) -> None:
    """Print message (with this rank) and end every process of the job."""
    w = _get()
    sys.stderr.write(f"[rank {w.rank}/{w.size}] {message}\n")
    sys.stderr.flush()
    if w.size > 1:
        w.comm.Abort(code)
    raise SystemExit(code)


def _abort_on_uncaught_exceptions():
    # an exception (or Ctrl-C) in one rank would leave the others blocked in a collective for
    # ever: report it and abort the job instead
    previous = sys.excepthook

    def hook(kind, value, tb):
        if kind is SystemExit and (value.code in (0, None)):
            return previous(kind, value, tb)
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"[rank {_world.rank}/{_world.size}] {kind.__name__}: {value}; aborting the MPI job\n"
                         f"{text}")
        sys.stderr.flush()
        # mpiexec forwards a rank's output through its proxy, and an abort tears the proxies
        # down: give it a moment, or the one line that says why can be lost (seen once in CI)
        time.sleep(0.2)
        _world.comm.Abort(1)

    sys.excepthook = hook


def _one_blas_thread():
    if any(v in os.environ for v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return  # told otherwise
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=1, user_api="blas")


def _op(name):
    from mpi4py import MPI
    ops = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}
    if name not in ops:
        raise ValueError(f"all_reduce: op must be one of {sorted(ops)}, got {name!r}")
    return ops[name]


def all_reduce_scalar(x, op="sum"):
    """A Python number (or one-element tensor) reduced over the ranks: 'sum', 'max' or 'min'."""
    if hasattr(x, "item"):
        x = x.item()
    w = _get()
    if op not in ("sum", "max", "min"):
        raise ValueError(f"all_reduce_scalar: op must be 'sum', 'max' or 'min', got {op!r}")
    if w.size == 1:
        return x
    return w.comm.allreduce(x, op=_op(op))


def _params(module_or_params):
    ps = module_or_params.parameters() if hasattr(module_or_params, "parameters") else module_or_params
    return list(ps)


def broadcast_parameters(module_or_params, root=0) -> None:
    """Every rank's parameters set to rank root's (in place), e.g. once before training."""
    w = _get()
    if w.size == 1:
        return
    if not 0 <= root < w.size:
        raise ValueError(f"broadcast_parameters: root {root} is not a rank of a world of {w.size}")
    for p in _params(module_or_params):
        host = p.device.to_host(p.data).copy()  # contiguous, on the host: one Bcast each, once
        w.comm.Bcast(host, root=root)
        p.data[...] = p.device.from_host(host, p.dtype)


def all_reduce_gradients(params, average=True) -> None:
    """Sum (average=True: the mean) of every parameter's .grad over the ranks, in place.

    The gradients are packed into one flat buffer per dtype and device and reduced with one
    Allreduce each. A parameter without a gradient counts as zeros (and gets them), so that
    every rank sends the same buffer layout."""
    params = [p for p in params]
    w = _get()
    if w.size == 1:
        return
    groups = {}
    for p in params:
        groups.setdefault((p.device.name, p.dtype.name), []).append(p)
    for (_, _), ps in sorted(groups.items()):
        dev = ps[0].device
        xp = dev.xp
        flats = []
        for p in ps:
            g = p.grad.data if p.grad is not None else xp.zeros(p.data.shape, dtype=p.data.dtype)
            flats.append(xp.reshape(g, (-1,)))
        buf = xp.concat(flats)  # a new array, also for one gradient: the reduction writes into it
        _allreduce_buffer(w, dev, buf)
        w.allreduce_calls += 1
        if average:
            buf /= w.size
        start = 0
        for p in ps:
            n = 1
            for s in p.data.shape:
                n *= s
            p.grad = Tensor._make(xp.reshape(buf[start:start + n], p.data.shape), dev, None, 0)
            start += n


def _allreduce_buffer(w, dev, buf):
    from mpi4py import MPI
    if dev.kind == "cpu":
        w.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        return
    if dev.kind == "cuda":
        comm = _nccl(w, dev)
        if comm is not None:
            import cupy
            from cupy.cuda import nccl
            kind = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}[str(buf.dtype)]
            comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, kind, nccl.NCCL_SUM,
                           cupy.cuda.get_current_stream().ptr)
            return
    # host-staged: the strict device, or CUDA without NCCL (or several ranks on one GPU)
    host = dev.to_host(buf).copy()
    w.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
    buf[...] = dev.from_host(host)


def _nccl(w, dev):
    """The NCCL communicator for dev's GPU, made once (the id broadcast over MPI), or None
    where NCCL is not usable: not in this CuPy, or two ranks on one GPU."""
    if dev.index in w.nccl:
        return w.nccl[dev.index]
    comm = None
    try:
        from cupy.cuda import nccl
        import cupy
        uid = nccl.get_unique_id() if w.rank == 0 else None
        uid = w.comm.bcast(uid, root=0)
        # one GPU per rank: NCCL cannot put two ranks on the same device
        devices = w.comm.allgather(cupy.cuda.runtime.getDeviceProperties(dev.index)["uuid"])
        if len(set(devices)) == len(devices):
            with cupy.cuda.Device(dev.index):
                comm = nccl.NcclCommunicator(w.size, uid, w.rank)
    except Exception:  # NCCL missing or unusable: the host-staged path
        comm = None
    w.nccl[dev.index] = comm
    return comm
