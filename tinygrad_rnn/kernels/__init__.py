"""The kernel machinery: an op family's elementwise kernels (`Kernel`, CuPy's
ElementwiseKernel form) and host loops (`HostCode`), built for a device on request.

An op asks `for_device(device, family, kernels, preamble, host)` for its family and gets
{name: callable}, built once per device and family (CuPy on CUDA, cuda.py; the host C++
compiler on the CPU, cpu.py), or None where the device builds none or its `use_kernels` is
off (`backend.kernels_off`): the op then runs its portable array-API form.

The C++ lives in real files shipped with the package: runtime.h (the CPU's math, thread
pool, BLAS hook and packed GEMM), cuda_prelude.cuh (CUDA's math), cpu_glue.cpp.in (the loops
the CPU build wraps a kernel body in), and an op family's own loops beside it (ops/rnn.cpp).
"""
from __future__ import annotations

from . import cpu, cuda
from .cpu import KernelBuildWarning
from .cuda import body as cuda_body
from .cuda import prelude as cuda_prelude
from .spec import HostCode, Kernel, parse_params

# device -> {family: {name: callable} or None}, keyed by the device object (devices compare by
# identity). Looked up at every kernel call, so a plain dict: a weak one makes a reference each time
_built: dict = {}


def for_device(device, family, kernels, preamble="", host=None):
    """{name: callable} for a family of `Kernel`s (and, on the CPU, its `HostCode`
    functions) on `device`, built once per device and family, or None (no kernels there, or
    the device's `use_kernels` is off: see `backend.kernels_off`)."""
    if not device.use_kernels:
        return None
    families = _built.get(device)
    if families is None:
        families = _built[device] = {}
    built = families.get(family, False)
    if built is False:
        built = families[family] = _build(device, family, kernels, preamble, host)
    return built


def _build(device, family, kernels, preamble, host):
    if device.kind == "cpu":
        return cpu.build(family, kernels, preamble, host)
    if device.kind == "cuda":
        return cuda.build(device, family, kernels, preamble)
    return None


__all__ = ["Kernel", "HostCode", "for_device", "KernelBuildWarning", "cuda_body", "cuda_prelude", "parse_params"]
