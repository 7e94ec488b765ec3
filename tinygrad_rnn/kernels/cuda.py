"""Elementwise kernels on CUDA: CuPy's ElementwiseKernel, with cuda_prelude.cuh's math as
the preamble of every kernel. CuPy compiles each kernel for a dtype at its first call and
caches it on disk, keyed by the source (prelude included)."""
from __future__ import annotations

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
