"""What an op family declares for the devices to build: its elementwise `Kernel`s and, for
the CPU, its `HostCode` (a C++ file of loops beside the op)."""
from __future__ import annotations

from typing import NamedTuple


class Kernel(NamedTuple):
    """An elementwise kernel in CuPy's ElementwiseKernel form, which every device builds.

    in_params/out_params: "T x, raw T y, raw int64 k, int32 n, float64 s": a `T x` is the
    current element of x (an output: a reference to it, which may be read too), a `raw T y`
    the whole array indexed by hand, `raw int64` an index array likewise, an `int32` or
    `float64` a number. The body runs for each element index `i` of the non-raw arrays, and
    may call tg_tanh, tg_sigmoid, tg_exp and tg_log (the device's own: CUDA's, see
    cuda_prelude.cuh; on the CPU vectorised float32 ones, see runtime.h), and
    tg_atomic_add(&y[k], v) where rows add into the same places of a raw output (atomic on
    CUDA; on the CPU rows run in order and one row's elements together, so one row must not
    add twice into one place). With `row` naming an int32 parameter, the elements form rows of
    that length and the body also gets the row `b` and column `j` of element i. `work` may name
    an int32 parameter that the body loops over for each element (a row of that length): the
    CPU splits a call over its threads by elements times that, not elements alone.
    """
    in_params: str
    out_params: str
    body: str
    row: str | None = None
    work: str | None = None


class HostCode(NamedTuple):
    """C++ that the CPU device compiles into a family's kernel library, for loops that
    would pay Python's per-call overhead at every step (the recurrent layers' loop over
    time). `source` is the C++ file (a path, or an importlib.resources file of the op's
    package: ops/rnn.cpp beside ops/rnn.py), compiled after runtime.h and the family's
    kernels. It defines each function NAME as a static function template over the element
    type T returning int (the exports are generated), which may call the family's kernels
    (`KERNEL_impl<T>(inputs, outputs, n)`, parameters in declared order; a kernel with a row
    length also as `KERNEL_cols<T>(..., rows, j0, j1)`, columns j0 .. j1 - 1 of each row) and
    runtime.h's packed GEMM and thread pool.
    `functions` maps each NAME to its C parameter list ("int n, const T* x, T* y"); it is
    exported for float32 and float64 and appears in the family's kernel dict under NAME,
    called with arrays (one float dtype, row-major), None for a null pointer, and ints. Other
    devices ignore it: an op looks the name up and runs its portable loop where it is missing."""
    source: object
    functions: dict


def parse_params(spec):
    """'T a, raw T b, raw int64 k, int32 n, float64 s' -> [(kind, name)], kind 'elem', 'raw',
    'index' (a raw int64 array), 'int' or 'scalar'."""
    out = []
    for p in spec.split(","):
        toks = p.split()
        if toks[0] == "raw" and len(toks) == 3 and toks[1] == "T":
            out.append(("raw", toks[2]))
        elif toks[0] == "raw" and len(toks) == 3 and toks[1] == "int64":
            out.append(("index", toks[2]))
        elif toks[0] == "int32" and len(toks) == 2:
            out.append(("int", toks[1]))
        elif toks[0] == "float64" and len(toks) == 2:
            out.append(("scalar", toks[1]))
        elif toks[0] == "T" and len(toks) == 2:
            out.append(("elem", toks[1]))
        else:
            raise ValueError(f"kernel parameter {p.strip()!r}: expected 'T name', 'raw T name', "
                             f"'raw int64 name', 'int32 name' or 'float64 name'")
    return out
