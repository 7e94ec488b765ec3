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
           "all_reduce_scalar", "abort", "DistributedError", "local_rank", "rank_device", "gpu_for_rank",
           "nccl_agreed"]

# the variables MPI launchers set for their processes (MPICH/Hydra, Open MPI, PMIx)
_LAUNCHER_VARS = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    pass


class _World:
    def __init__(self, comm, rank, size, local_rank=0, local_size=1):
        self.comm, self.rank, self.size = comm, rank, size
        self.local_rank, self.local_size = local_rank, local_size  # among the ranks of this node
        self.allreduce_calls = 0  # gradient Allreduce calls so far (one per dtype and device per step)
        self.nccl = {}            # device index -> (NCCL communicator, its stream), or None: host-staged


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
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)  # the ranks sharing this node's memory (and GPUs)
    _world = _World(comm, comm.Get_rank(), comm.Get_size(), node.Get_rank(), node.Get_size())
    node.Free()
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


def local_rank() -> int:
    """This rank's index among the ranks on its node (0 without MPI)."""
    return _get().local_rank


def gpu_for_rank(local_rank: int, local_size: int, gpu_count: int) -> tuple[int, bool]:
    """(the GPU of the rank with index local_rank among local_size ranks on a node with
    gpu_count GPUs, whether GPUs are shared): one GPU per rank, wrapping round when there are
    more ranks than GPUs, and then two ranks share a GPU, which NCCL refuses (host-staged)."""
    if gpu_count < 1:
        raise DistributedError("no CUDA GPU on this node")
    if not 0 <= local_rank < local_size:
        raise ValueError(f"gpu_for_rank: local rank {local_rank} is not in 0..{local_size - 1}")
    return local_rank % gpu_count, local_size > gpu_count


def rank_device(device: str, gpu_count=None) -> tuple[str, str | None]:
    """(the device this rank runs on, a note for the log or None) for the --device given.

    Under mpiexec, 'cuda' means this rank's own GPU, cuda:{local rank} (modulo the node's GPUs);
    'cuda:N' is taken as given, and so is everything in a world of one. gpu_count: the node's
    GPUs (asked of CuPy when None)."""
    w = _get()
    if str(device) != "cuda" or w.size == 1:
        return str(device), None
    if gpu_count is None:
        import cupy
        gpu_count = cupy.cuda.runtime.getDeviceCount()
    index, shared = gpu_for_rank(w.local_rank, w.local_size, gpu_count)
    note = None
    if shared:
        note = (f"{w.local_size} processes on a node with {gpu_count} GPU(s): GPUs are shared, so the gradients "
                f"are averaged through the host instead of NCCL")
    return f"cuda:{index}", note


def nccl_agreed(ok_flags) -> bool:
    """Whether the ranks use NCCL, from every rank's own verdict: all of them, or none (a rank
    on the host path while another waits in NCCL would hang the job)."""
    return min(int(bool(f)) for f in ok_flags) == 1


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
        nccl_comm = _nccl(w, dev)
        if nccl_comm is not None:
            from cupy.cuda import nccl
            comm, stream = nccl_comm
            kind = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}[str(buf.dtype)]
            comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, kind, nccl.NCCL_SUM, stream.ptr)
            return
    # host-staged: the strict device, or CUDA without NCCL (or several ranks on one GPU)
    host = dev.to_host(buf).copy()
    w.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
    buf[...] = dev.from_host(host)


def _agree(w, ok) -> bool:
    """nccl_agreed over every rank's flag: one collective, the same answer everywhere."""
    return nccl_agreed(w.comm.allgather(bool(ok)))


def _nccl(w, dev):
    """(NCCL communicator, stream) for dev's GPU, made once, or None for the host-staged path.

    Every step that can fail on one rank alone (importing NCCL, two ranks on one GPU, making
    the id, making the communicator) ends in an agreement of all ranks (_agree), so no rank
    takes NCCL while another takes the host. The communicator is made with dev's GPU current,
    and the reduction runs on that GPU's stream, the one the gradients were computed on."""
    if dev.index in w.nccl:
        return w.nccl[dev.index]
    w.nccl[dev.index] = None
    ok, uid = True, None
    try:
        import cupy
        from cupy.cuda import nccl
        uuid = cupy.cuda.runtime.getDeviceProperties(dev.index)["uuid"]
        if w.rank == 0:
            uid = nccl.get_unique_id()
    except Exception:  # NCCL missing or unusable: the host-staged path
        ok, uuid = False, None
    uuids = w.comm.allgather(uuid)
    ok = ok and len(set(uuids)) == len(uuids)  # NCCL cannot put two ranks on one GPU
    if not _agree(w, ok):
        return None
    uid = w.comm.bcast(uid, root=0)
    comm = None
    try:
        with cupy.cuda.Device(dev.index):
            comm = nccl.NcclCommunicator(w.size, uid, w.rank)
            stream = cupy.cuda.get_current_stream()
    except Exception:
        comm = None
    if not _agree(w, comm is not None):
        if comm is not None:
            comm.destroy()
        return None
    w.nccl[dev.index] = (comm, stream)
    return w.nccl[dev.index]
