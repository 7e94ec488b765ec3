"""`Tensor`: an array on a device, plus the link to the op that made it.

A tensor made by an op while grad mode is on, from inputs that require grad, holds
`_ctx` (that op's graph node) and `_index` (which of the node's outputs it is). Leaves
(`_ctx is None`) that require grad receive `.grad` from `backward()`.
"""
from __future__ import annotations

import collections
import contextlib
import math
import numbers

import numpy as np

from . import autograd
from . import backend as B
from .autograd import engine
from .autograd.engine import TensorBase
from .errors import AxisError, DTypeError, ShapeError, TinygradError, fmt_shape, normalize_axes
from .ops import elementwise as ew
from .ops import linalg, nn as nnops, reduce as red, scan as scan_ops, shape as shape_ops


class Tensor(TensorBase):
    __slots__ = ()  # the engine's TensorBase holds them

    # NumPy would otherwise take `ndarray + tensor` (and -, *, @, ...) for itself and
    # build an object array of one-element Tensors; this makes it defer to __radd__ & co.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        dev = B.get_device(device) if device is not None else None
        if isinstance(data, Tensor):
            src_dev, arr = data.device, data.data
        else:
            src_dev, arr = _native_device(data), data
        # Always a copy, as torch.tensor makes: optimizers update parameters in place,
        # and must never write into the caller's array.
        if src_dev is None:  # Python numbers, lists, NumPy arrays, NumPy scalars
            dev = dev or B.get_default_device()
            host = np.array(arr)
            if dtype is None:
                dtype = _host_dtype(host, arr)
            self.data = dev.from_host(host, B.to_dtype(dtype))
        else:
            dev = dev or src_dev
            if dev is not src_dev:
                arr = dev.from_host(src_dev.to_host(arr))
            elif dtype is None or dev.dtype_of(arr) is B.to_dtype(dtype):
                arr = dev.copy(arr)
            if dtype is not None and dev.dtype_of(arr) is not B.to_dtype(dtype):
                arr = dev.xp.astype(arr, dev.native(B.to_dtype(dtype)))
            self.data = arr
        self.device = dev
        self.grad = None
        self._ctx = None
        self._index = 0
        self._hooks = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _make(data, device, ctx, index):
        """The fast constructor used by ops: no conversion, no checks."""
        t = object.__new__(Tensor)
        t.data = data
        t.device = device
        t._ctx = ctx
        t._index = index
        t.requires_grad = ctx is not None
        t.grad = None
        t._hooks = None
        return t

    # ------------------------------------------------------------------ properties
    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> B.DType:
        return self.device.dtype_of(self.data)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        n = 1
        for s in self.data.shape:
            n *= s
        return n

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    @property
    def grad_fn(self):
        """The graph node that made this tensor (None for leaves)."""
        return self._ctx

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    # ------------------------------------------------------------------ conversion
    def numpy(self) -> np.ndarray:
        """A host NumPy copy (never shares memory with this tensor)."""
        return np.array(self.device.to_host(self.data), copy=True)

    def item(self):
        if self.numel() != 1:
            raise ShapeError(f"item: only a one-element tensor converts to a Python number, "
                             f"this one has shape {fmt_shape(self.shape)}")
        return self.device.to_host(self.data).reshape(()).item()

    def tolist(self):
        return self.device.to_host(self.data).tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (the graph stops here)."""
        return Tensor._make(self.data, self.device, None, 0)

    def to(self, target) -> "Tensor":
        """A copy on another device ('cpu', 'cuda', ...) or in another dtype; differentiable."""
        if isinstance(target, B.DType) or (isinstance(target, str) and target in B.DTYPES):
            dtype = B.to_dtype(target)
            if dtype is self.dtype:
                return self
            return ew.Cast.apply(self, dtype)
        dev = B.get_device(target)
        if dev is self.device:
            return self
        out = shape_ops.ToDevice.apply(self, dev)
        out.device = dev
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(B.float32)

    def double(self):
        return self.to(B.float64)

    def long(self):
        return Tensor._make(self.device.xp.astype(self.data, self.device.native(B.int64)), self.device, None, 0)

    # ------------------------------------------------------------------ autograd
    def requires_grad_(self, flag=True) -> "Tensor":
        if flag and not self.dtype.is_floating:
            raise DTypeError(f"requires_grad: only floating-point tensors can require gradients, "
                             f"this one is {self.dtype.name}")
        if not flag and self._ctx is not None:
            raise RuntimeError("requires_grad_(False) on a tensor made by an op: use .detach()")
        self.requires_grad = flag
        return self

    def retain_grad(self) -> None:
        """Keep .grad on this intermediate tensor after backward (leaves always keep it)."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: this tensor does not require grad")
        if self._ctx is not None:
            autograd.retain(self)

    def backward(self, grad=None, retain_graph=None, create_graph=False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's .grad that requires grad.

        create_graph=True records the backward pass, so the .grad it leaves (Tensors with a
        graph) can be differentiated again; retain_graph defaults to create_graph."""
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph behind it "
                               "(no input of the ops that made it requires grad, or it was made under no_grad)")
        if create_graph and isinstance(grad, Tensor) and grad.shape == self.shape and grad.device is self.device:
            seed = grad  # kept as a Tensor: its own graph joins the one recorded
        else:
            seed = self._seed_grad(grad, "backward")
        autograd.run_backward([self], [seed], bool(create_graph if retain_graph is None else retain_graph),
                              None, create_graph)

    def _seed_grad(self, grad, who, arg="grad="):
        """The gradient backward starts from, as an array: ones for a one-element tensor."""
        if grad is None:
            if self.numel() != 1:
                raise RuntimeError(f"{who}: a gradient can be created implicitly only for a one-element "
                                   f"tensor; this one has shape {fmt_shape(self.shape)}, so pass {arg} of "
                                   f"that shape")
            return self.device.xp.ones(self.data.shape, dtype=self.data.dtype)
        if isinstance(grad, Tensor) and grad.device is not self.device:
            raise RuntimeError(f"{who}: grad is on {grad.device.name} but the tensor is on {self.device.name}")
        g = grad.data if isinstance(grad, Tensor) else self.device.from_host(np.asarray(grad), self.dtype)
        if tuple(g.shape) != self.shape:
            raise ShapeError(f"{who}: grad has shape {fmt_shape(g.shape)} but the tensor has shape "
                             f"{fmt_shape(self.shape)}")
        return g

    def register_hook(self, fn):
        """fn(grad) runs when the gradient of this tensor has been computed (for a leaf, before
        it is added to .grad) and may return a Tensor of the same shape to replace it. Works on
        leaves and intermediates; returns a handle whose .remove() unregisters the hook."""
        return autograd.register_hook(self, fn)

    def _accumulate(self, g):
        # never in place: g may be the same array another leaf received
        if isinstance(g, Tensor):  # create_graph: .grad keeps the graph that made it
            self.grad = g if self.grad is None else self.grad + g
            return
        if self.grad is None:
            # row-major, whatever layout the op handed back (W's gradient through x @ W.T is a
            # transposed view): optimizers run many passes over .grad beside row-major state,
            # and mixed layouts ran Adam 8x slower on an LSTM's weights
            self.grad = Tensor._make(self.device.contiguous(g), self.device, None, 0)
        else:
            self.grad = Tensor._make(self.grad.data + g, self.device, None, 0)

    def zero_grad(self) -> None:
        self.grad = None

    # ------------------------------------------------------------------ printing
    def __repr__(self):
        body = np.array2string(self.device.to_host(self.data), separator=", ", prefix="tensor(")
        extra = []
        if self.dtype is not B.get_default_dtype() and self.dtype is not B.int64:
            extra.append(f"dtype={self.dtype.name}")
        if self.device.name != "cpu":
            extra.append(f"device='{self.device.name}'")
        if self._ctx is not None:
            extra.append(f"grad_fn=<{self._ctx.fn.__name__}>")
        elif self.requires_grad:
            extra.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extra) + ")"

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __bool__(self):
        if self.numel() != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {fmt_shape(self.shape)} is ambiguous")
        return bool(self.item())

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))

    __hash__ = object.__hash__

    # ------------------------------------------------------------------ arithmetic
    def _operand(self, other):
        """A Python number stays a number (no graph edge); anything else becomes a Tensor here."""
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (bool, np.bool_)):
            return float(other)
        if isinstance(other, numbers.Number):
            return other if isinstance(other, (int, float)) else float(other)
        return Tensor(other, dtype=self.dtype if _is_float_like(other) else None, device=self.device)

    def __add__(self, o):
        return ew.Add.apply(self, self._operand(o))

    def __radd__(self, o):
        return ew.Add.apply(self._operand(o), self)

    def __sub__(self, o):
        return ew.Sub.apply(self, self._operand(o))

    def __rsub__(self, o):
        return ew.Sub.apply(self._operand(o), self)

    def __mul__(self, o):
        return ew.Mul.apply(self, self._operand(o))

    def __rmul__(self, o):
        return ew.Mul.apply(self._operand(o), self)

    def __truediv__(self, o):
        return ew.Div.apply(self, self._operand(o))

    def __rtruediv__(self, o):
        return ew.Div.apply(self._operand(o), self)

    def __neg__(self):
        return ew.Neg.apply(self)

    def __pow__(self, o):
        return ew.Pow.apply(self, self._operand(o))

    def __rpow__(self, o):
        return ew.Pow.apply(self._operand(o), self)

    def __matmul__(self, o):
        return linalg.MatMul.apply(self, self._operand(o))

    def __rmatmul__(self, o):
        return linalg.MatMul.apply(self._operand(o), self)

    def _compare(self, o, fn):
        o = self._operand(o)
        if isinstance(o, Tensor) and o.device is not self.device:
            raise RuntimeError(f"comparison: tensors are on different devices ({self.device.name} and {o.device.name})")
        return Tensor._make(fn(self.data, o.data if isinstance(o, Tensor) else o), self.device, None, 0)

    def __lt__(self, o):
        return self._compare(o, lambda a, b: a < b)

    def __le__(self, o):
        return self._compare(o, lambda a, b: a <= b)

    def __gt__(self, o):
        return self._compare(o, lambda a, b: a > b)

    def __ge__(self, o):
        return self._compare(o, lambda a, b: a >= b)

    def __eq__(self, o):
        return self._compare(o, lambda a, b: a == b)

    def __ne__(self, o):
        return self._compare(o, lambda a, b: a != b)

    add = __add__
    sub = __sub__
    mul = __mul__
    div = __truediv__
    neg = __neg__
    pow = __pow__
    matmul = __matmul__

    def exp(self):
        return ew.Exp.apply(self)

    def log(self):
        return ew.Log.apply(self)

    def sqrt(self):
        return ew.Sqrt.apply(self)

    def tanh(self):
        return ew.Tanh.apply(self)

    def sigmoid(self):
        return ew.Sigmoid.apply(self)

    def relu(self):
        return ew.Relu.apply(self)

    def abs(self):
        return ew.Abs.apply(self)

    def maximum(self, o):
        return ew.Maximum.apply(self, self._operand(o))

    def minimum(self, o):
        return ew.Minimum.apply(self, self._operand(o))

    def softplus(self):
        """log(1 + exp(x)), stably."""
        return scan_ops.Softplus.apply(self)

    def log_sigmoid(self):
        """log(sigmoid(x)) = -softplus(-x), stably (finite where sigmoid underflows to 0)."""
        return scan_ops.LogSigmoid.apply(self)

    def clip(self, min=None, max=None):  # noqa: A002 (PyTorch's names)
        return ew.Clip.apply(self, min, max)

    clamp = clip

    def sin(self):
        return ew.Sin.apply(self)

    def cos(self):
        return ew.Cos.apply(self)

    def log1p(self):
        """log(1 + x), exact for tiny x."""
        return ew.Log1p.apply(self)

    def expm1(self):
        """exp(x) - 1, exact for tiny x."""
        return ew.Expm1.apply(self)

    def square(self):
        return ew.Square.apply(self)

    def rsqrt(self):
        """1 / sqrt(x)."""
        return ew.Rsqrt.apply(self)

    # ------------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return red.Sum.apply(self, axis=_axis(axis, dim), keepdims=_keep(keepdims, keepdim))

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return red.Mean.apply(self, axis=_axis(axis, dim), keepdims=_keep(keepdims, keepdim))

    def max(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """PyTorch's three forms: x.max() the largest value (ties share the gradient evenly);
        x.max(dim) the named tuple (values, indices), the gradient going to the index returned;
        x.max(other) the elementwise maximum."""
        return self._extremum("max", axis, keepdims, dim, keepdim)

    def min(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """As max: x.min(), x.min(dim) -> (values, indices), x.min(other)."""
        return self._extremum("min", axis, keepdims, dim, keepdim)

    def amax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The largest values over dim (an int, a tuple, or None for all); ties share the gradient evenly."""
        return red.Max.apply(self, axis=_axis(axis, dim), keepdims=_keep(keepdims, keepdim), op="amax")

    def amin(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The smallest values over dim (an int, a tuple, or None for all); ties share the gradient evenly."""
        return red.Min.apply(self, axis=_axis(axis, dim), keepdims=_keep(keepdims, keepdim), op="amin")

    def _extremum(self, name, axis, keepdims, dim, keepdim):
        if isinstance(axis, Tensor):
            return self.maximum(axis) if name == "max" else self.minimum(axis)
        axis, keep = _axis(axis, dim), _keep(keepdims, keepdim)
        if axis is None:
            return (red.Max if name == "max" else red.Min).apply(self, axis=None, keepdims=keep)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise AxisError(f"{name}: dim must be one int when (values, indices) are returned, got {axis!r}; "
                            f"a{name} reduces over several dims")
        (axis,) = normalize_axes(name, axis, self.ndim, self.shape)
        if self.ndim == 0:
            return self.reshape(1)._extremum(name, 0, False, None, None)
        if self.shape[axis] == 0:
            raise ShapeError(f"{name}: cannot reduce axis {axis} of size 0 (tensor of shape {fmt_shape(self.shape)})")
        xp = self.device.xp
        index = getattr(xp, "arg" + name)(self.data, axis=axis, keepdims=True)
        values = (red.MaxAt if name == "max" else red.MinAt).apply(self, axis, keepdims=keep, index=index)
        if not keep:
            index = xp.reshape(index, values.shape)
        return _RETURN_TYPES[name](values, Tensor._make(index, self.device, None, 0))

    def logsumexp(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        return red.LogSumExp.apply(self, axis=_axis(axis, dim), keepdims=_keep(keepdims, keepdim))

    def cumsum(self, axis=None, *, dim=None):
        """Inclusive cumulative sum along one axis."""
        return scan_ops.CumSum.apply(self, _axis(axis, dim))

    def logcumsumexp(self, axis=None, *, dim=None):
        """log(cumsum(exp(x))) along one axis, stably (a log-space prefix scan)."""
        return scan_ops.LogCumSumExp.apply(self, _axis(axis, dim))

    def argmax(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Indices of the maxima (int64, no gradient; the first of any tie); axis=None: of the flattened tensor."""
        return self._arg("argmax", _axis(axis, dim), _keep(keepdims, keepdim))

    def argmin(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """Indices of the minima (int64, no gradient; the first of any tie); axis=None: of the flattened tensor."""
        return self._arg("argmin", _axis(axis, dim), _keep(keepdims, keepdim))

    def _arg(self, name, axis, keepdims):
        xp = self.device.xp
        if axis is not None:
            (axis,) = normalize_axes(name, axis, self.ndim, self.shape)
        if self.numel() == 0:
            raise ShapeError(f"{name}: cannot reduce an empty tensor of shape {fmt_shape(self.shape)}")
        data = xp.reshape(self.data, (-1,)) if axis is None or self.ndim == 0 else self.data
        axis = None if self.ndim == 0 else axis
        return Tensor._make(getattr(xp, name)(data, axis=axis, keepdims=keepdims and axis is not None),
                            self.device, None, 0)

    def softmax(self, axis=-1, *, dim=None):
        return nnops.Softmax.apply(self, axis=_axis(axis, dim))

    def log_softmax(self, axis=-1, *, dim=None):
        return nnops.LogSoftmax.apply(self, axis=_axis(axis, dim))

    def var(self, axis=None, unbiased=None, keepdims=False, *, dim=None, correction=None, keepdim=None):
        """The variance over dim (None: all), dividing by n - correction: correction=1 by default
        (Bessel's, as PyTorch), unbiased=False for correction=0. x.var(1, True, True) works as in PyTorch."""
        axis = _axis(axis, dim)
        if isinstance(axis, bool):  # PyTorch's var(unbiased)
            axis, unbiased = None, axis
        if unbiased is not None and correction is not None:
            raise ValueError("var: pass correction or unbiased, not both")
        c = correction if correction is not None else 0 if unbiased is False else 1
        axes = normalize_axes("var", axis, self.ndim, self.shape)
        n = 1
        for a in axes:
            n *= self.shape[a]
        d = self - self.mean(axis=axes, keepdims=True)
        return d.square().sum(axis=axes, keepdims=_keep(keepdims, keepdim)) / max(n - c, 0)

    def std(self, axis=None, unbiased=None, keepdims=False, *, dim=None, correction=None, keepdim=None):
        """sqrt(var(...)), with var's arguments."""
        return self.var(axis, unbiased, keepdims, dim=dim, correction=correction, keepdim=keepdim).sqrt()

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None, *, axis=None, keepdims=None):
        """The vector p-norm over dim (None: all elements), as torch.norm/linalg.vector_norm: p any
        finite number but 0, inf (max |x|), -inf (min |x|), or 'fro' (2). The gradient at a zero
        norm is 0; at p=inf ties share it evenly."""
        axes = normalize_axes("norm", _axis(axis, dim), self.ndim, self.shape)
        keep = _keep(keepdim, keepdims)
        if p == "fro":
            p = 2
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or p == 0 or p != p:
            raise ValueError(f"norm: p must be a nonzero number, inf, -inf or 'fro', got {p!r}")
        x = self if dtype is None else self.to(dtype)
        if math.isinf(p):
            a = x.abs()
            return (red.Max if p > 0 else red.Min).apply(a, axis=axes, keepdims=keep, op="norm")
        return red.Norm.apply(x, p=float(p), axis=axes, keepdims=keep)

    def prod(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        """The product over dim (None: all); its gradient is right where the input has zeros."""
        return red.Prod.apply(self, axis=_axis(axis, dim), keepdims=_keep(keepdims, keepdim))

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape):
        shape = _shape_args(shape)
        if tuple(shape) == self.shape:
            return self
        return shape_ops.Reshape.apply(self, shape)

    view = reshape

    def flatten(self, start_dim=0, end_dim=-1):
        nd = self.ndim
        s, e = start_dim % max(nd, 1), end_dim % max(nd, 1)
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:]) if nd else self.reshape(1)

    def permute(self, *axes):
        axes = tuple(_shape_args(axes))
        axes = tuple(a % self.ndim if isinstance(a, int) and -self.ndim <= a < self.ndim else a for a in axes)
        return shape_ops.Permute.apply(self, axes)

    def transpose(self, dim0=0, dim1=1):
        """Swap two axes (PyTorch's meaning)."""
        nd = self.ndim
        for d in (dim0, dim1):
            if not -nd <= d < nd:
                raise AxisError(f"transpose: axis {d} is out of range for a tensor of shape "
                                          f"{fmt_shape(self.shape)}")
        axes = list(range(nd))
        axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        return shape_ops.Permute.apply(self, tuple(axes))

    def expand(self, *shape):
        shape = tuple(_shape_args(shape))
        lead = len(shape) - self.ndim
        shape = tuple(self.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(shape))
        return shape_ops.Expand.apply(self, shape)

    broadcast_to = expand

    def squeeze(self, axis=None, *, dim=None):
        axis = _axis(axis, dim)
        if axis is None:
            new = tuple(n for n in self.shape if n != 1)
        else:
            axes = normalize_axes("squeeze", axis, self.ndim, self.shape)
            for a in axes:
                if self.shape[a] != 1:
                    raise ShapeError(f"squeeze: axis {a} has size {self.shape[a]}, not 1 "
                                     f"(tensor of shape {fmt_shape(self.shape)})")
            new = tuple(n for i, n in enumerate(self.shape) if i not in axes)
        return self.reshape(new)

    def unsqueeze(self, axis=None, *, dim=None):
        axis = _axis(axis, dim)
        nd = self.ndim + 1
        if not isinstance(axis, int) or not -nd <= axis < nd:
            raise AxisError(f"unsqueeze: axis {axis} is out of range for a result of {nd} dims")
        axis %= nd
        return self.reshape(self.shape[:axis] + (1,) + self.shape[axis:])

    def __getitem__(self, key):
        mask = self._bool_key(key)
        if mask is not None:  # x[mask]: the selected elements, in row-major order
            shape_ops.check_mask("getitem", tuple(mask.shape), self.shape)
            return shape_ops.Gather.apply(self, shape_ops.mask_key(self.device.xp, mask, self.shape))
        return shape_ops.GetItem.apply(self, _normalize_key(self, key))

    def split(self, split_size_or_sections, axis=0, *, dim=None):
        """Pieces of size split_size (the last may be smaller), or of the listed sizes. One node."""
        axis = _axis(axis, dim)
        n = self.shape[axis] if -self.ndim <= axis < self.ndim else 0
        if isinstance(split_size_or_sections, int):
            k = split_size_or_sections
            if k <= 0:
                raise ValueError(f"split: split size must be positive, got {k}")
            sizes = [k] * (n // k) + ([n % k] if n % k else [])
        else:
            sizes = list(split_size_or_sections)
        return shape_ops.Split.apply(self, sizes, axis=axis)

    def chunk(self, chunks, axis=0, *, dim=None):
        """`chunks` pieces of equal size (PyTorch's rule: ceil(n / chunks) each)."""
        axis = _axis(axis, dim)
        if not isinstance(chunks, int) or chunks < 1:
            raise ValueError(f"chunk: the number of chunks must be a positive int, got {chunks!r}")
        if not -self.ndim <= axis < self.ndim:
            raise AxisError(f"chunk: axis {axis} is out of range for a tensor of shape {fmt_shape(self.shape)}")
        n = self.shape[axis]
        k = max(-(-n // chunks), 1)  # an empty axis still splits (into one empty piece)
        return self.split(k, axis=axis)

    def unbind(self, axis=0, *, dim=None):
        return shape_ops.Unbind.apply(self, axis=_axis(axis, dim))

    # ------------------------------------------------------------------ indexing and shape vocabulary (PyTorch's)
    def dim(self) -> int:
        return self.ndim

    @property
    def mT(self):
        """The last two axes swapped: each matrix of a batch transposed."""
        if self.ndim < 2:
            raise ShapeError(f"mT: needs a tensor of at least 2 dims (a matrix or a batch of them), "
                             f"got shape {fmt_shape(self.shape)}")
        return self.transpose(-2, -1)

    def clone(self):
        """A copy with its own memory; differentiable (the gradient passes through)."""
        return shape_ops.Clone.apply(self)

    def contiguous(self):
        """This tensor if its memory is already row-major, else a row-major copy."""
        return self if self.device.contiguous(self.data) is self.data else shape_ops.Clone.apply(self)

    def type_as(self, other):
        """This tensor in other's dtype (to an integer dtype: without a gradient)."""
        dt = other.dtype
        if dt is self.dtype:
            return self
        if not dt.is_floating:
            return Tensor._make(self.device.xp.astype(self.data, self.device.native(dt)), self.device, None, 0)
        return self.to(dt)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return zeros(*size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return ones(*size, dtype=dtype or self.dtype, device=device or self.device, requires_grad=requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return full(size, fill_value, dtype=dtype or self.dtype, device=device or self.device,
                    requires_grad=requires_grad)

    def flip(self, *dims):
        """Elements in reverse order along dims (x.flip(0), x.flip(0, 1), x.flip([0, 1]))."""
        axes = normalize_axes("flip", _shape_args(dims), self.ndim, self.shape)
        return shape_ops.Flip.apply(self, axes)

    def roll(self, shifts, dims=None):
        """Elements shifted along dims, those pushed off one end coming back at the other;
        without dims, over the flattened tensor (PyTorch's roll). Split and concat: one node each."""
        if dims is None:
            if not isinstance(shifts, int):
                if len(shifts) != 1:
                    raise ShapeError(f"roll: without dims, shifts must be one int, got {tuple(shifts)}")
                (shifts,) = shifts
            return self.reshape(-1).roll(shifts, 0).reshape(self.shape)
        shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
        dims = (dims,) if isinstance(dims, int) else tuple(dims)
        if len(shifts) != len(dims):
            raise ShapeError(f"roll: {len(shifts)} shifts for {len(dims)} dims; give one shift per dim")
        out = self
        for s, d in zip(shifts, dims):
            (a,) = normalize_axes("roll", d, self.ndim, self.shape)
            n = self.shape[a]
            s = s % n if n else 0
            if s:
                head, tail = out.split([n - s, s], dim=a)
                out = shape_ops.Concat.apply(tail, head, axis=a)
        return self.clone() if out is self else out

    def repeat(self, *sizes):
        """This tensor repeated sizes[i] times along axis i (PyTorch's repeat: NumPy's tile,
        with at least as many sizes as dims; extra sizes add leading axes)."""
        sizes = _shape_args(sizes)
        if len(sizes) < self.ndim or any(r < 0 for r in sizes):
            raise ShapeError(f"repeat: sizes {sizes} for a tensor of shape {fmt_shape(self.shape)}: give one "
                             f"non-negative size per dim at least ({self.ndim})")
        shape = (1,) * (len(sizes) - self.ndim) + self.shape
        # (1, s0, 1, s1, ...) expanded to (r0, s0, r1, s1, ...): Expand's backward sums the copies
        paired = tuple(n for s in shape for n in (1, s))
        spread = tuple(n for r, s in zip(sizes, shape) for n in (r, s))
        out = self.reshape(paired).expand(spread).reshape(tuple(r * s for r, s in zip(sizes, shape)))
        return out.clone()  # a broadcast view repeats memory: a copy of its own, as PyTorch's repeat

    def tile(self, *dims):
        """repeat, with fewer dims than the tensor's allowed (leading ones are 1): torch.tile."""
        dims = _shape_args(dims)
        return self.repeat((1,) * (self.ndim - len(dims)) + tuple(dims))

    def masked_fill(self, mask, value):
        """value where mask holds, this tensor elsewhere. mask: a bool tensor broadcastable to
        this one's shape; value: a number or a 0-d tensor (which gets the filled elements'
        gradient). No gradient reaches the filled elements of this tensor."""
        m = self._mask_arg("masked_fill", mask)
        try:
            fits = np.broadcast_shapes(tuple(m.shape), self.shape) == self.shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"masked_fill: a mask of shape {fmt_shape(m.shape)} does not broadcast to the "
                             f"tensor's shape {fmt_shape(self.shape)}")
        if isinstance(value, Tensor):
            if value.ndim:
                raise ShapeError(f"masked_fill: value must be a number or a 0-d tensor, got a tensor of shape "
                                 f"{fmt_shape(value.shape)}")
            value = value if value.dtype is self.dtype else value.type_as(self)
        else:
            value = Tensor._make(self.device.from_host(np.asarray(value), self.dtype), self.device, None, 0)
        return ew.Where.apply(m, value, self)

    def gather(self, dim, index):
        """out[i][j] = self[index[i][j]][j] for dim=0, out[i][j] = self[i][index[i][j]] for dim=1
        (PyTorch's gather): index has this tensor's number of dims, sides no larger than its
        except along dim, entries in [0, size of dim). The gradient adds up at repeated indices."""
        if self.ndim == 0:
            return self.reshape(1).gather(dim, index.reshape(1)).reshape(())
        (axis,) = normalize_axes("gather", dim, self.ndim, self.shape)
        idx = self._index_arg("gather", index)
        shape_ops.check_along_axis("gather", self.device.xp, self.shape, idx, axis)
        return shape_ops.Gather.apply(self, shape_ops.along_axis_key(self.device.xp, idx, axis))

    def take_along_dim(self, indices, dim=None):
        """gather with indices and this tensor broadcast against each other except along dim;
        without dim, over both flattened (torch.take_along_dim)."""
        idx = self._index_arg("take_along_dim", indices)
        xp = self.device.xp
        if dim is None:
            return self.reshape(-1).gather(0, xp.reshape(idx, (-1,)))
        (axis,) = normalize_axes("take_along_dim", dim, self.ndim, self.shape)
        if idx.ndim != self.ndim:
            raise ShapeError(f"take_along_dim: indices of shape {fmt_shape(idx.shape)} and a tensor of shape "
                             f"{fmt_shape(self.shape)} must have the same number of dims")
        try:
            common = [m if d == axis else np.broadcast_shapes((m,), (n,))[0]
                      for d, (m, n) in enumerate(zip(self.shape, idx.shape))]
        except ValueError:
            raise ShapeError(f"take_along_dim: indices of shape {fmt_shape(idx.shape)} do not broadcast against "
                             f"the tensor's shape {fmt_shape(self.shape)} (axis {axis} aside)") from None
        x_shape = tuple(n if d != axis else self.shape[d] for d, n in enumerate(common))
        i_shape = tuple(n if d != axis else idx.shape[d] for d, n in enumerate(common))
        x = self if x_shape == self.shape else self.expand(x_shape)
        return x.gather(axis, xp.broadcast_to(idx, i_shape))

    def scatter_add(self, dim, index, src):
        """A copy of this tensor with src[i][j] added at [index[i][j]][j] for dim=0 (PyTorch's
        scatter_add, out of place); repeated indices add up. Gradients reach self and src."""
        (axis,) = normalize_axes("scatter_add", dim, self.ndim, self.shape)
        idx = self._index_arg("scatter_add", index)
        if not isinstance(src, Tensor):
            src = Tensor(src, dtype=self.dtype, device=self.device)
        if src.device is not self.device:
            raise RuntimeError(f"scatter_add: src is on {src.device.name} but the tensor is on {self.device.name}")
        if src.dtype is not self.dtype:
            raise DTypeError(f"scatter_add: src is {src.dtype.name} but the tensor is {self.dtype.name}; "
                             f"they must match")
        xp = self.device.xp
        shape_ops.check_along_axis("scatter_add", xp, self.shape, idx, axis, src.shape)
        if tuple(idx.shape) != src.shape:  # only the index-shaped corner of src is used
            src = src[tuple(slice(0, n) for n in idx.shape)]
        key = shape_ops.along_axis_key(xp, idx, axis)
        return self + shape_ops.IndexAdd.apply(src, self.shape, key, True)

    def sort(self, dim=-1, descending=False, *, stable=False):
        """(values, indices) along dim, ascending unless descending; equal elements keep their
        order (always: `stable` is accepted for PyTorch's signature). values carry the gradient."""
        if self.ndim == 0:
            return shape_ops.SortResult(self.clone(), zeros((), dtype=B.int64, device=self.device))
        (axis,) = normalize_axes("sort", dim, self.ndim, self.shape)
        order = shape_ops.stable_argsort(self.device.xp, self._sort_key(descending), axis)
        return shape_ops.SortResult(*self._picked(order, axis))

    def topk(self, k, dim=-1, largest=True, sorted=True):  # noqa: A002 (PyTorch's name)
        """The k largest (or smallest) elements along dim as (values, indices), in order; values
        carry the gradient. Always sorted (PyTorch leaves the order free when sorted=False)."""
        if self.ndim == 0:  # a scalar is a one-element row
            shape_ops.check_k(k, 1, dim, self.shape)
            v, i = self.reshape(1).topk(k, 0, largest)
            return shape_ops.TopKResult(v.reshape(()), i.reshape(())) if k else shape_ops.TopKResult(v, i)
        (axis,) = normalize_axes("topk", dim, self.ndim, self.shape)
        shape_ops.check_k(k, self.shape[axis], dim, self.shape)
        order = shape_ops.stable_argsort(self.device.xp, self._sort_key(largest), axis)
        return shape_ops.TopKResult(*self._picked(order[shape_ops._axis_slice(axis, slice(0, k))], axis))

    def _sort_key(self, descending):
        xp, data = self.device.xp, self.data
        if self.dtype is B.bool_:
            data = xp.astype(data, self.device.native(B.int64))
        return -data if descending else data

    def _picked(self, order, axis):
        """(self's values at order along axis, order as an int64 tensor without gradient)."""
        values = shape_ops.Gather.apply(self, shape_ops.along_axis_key(self.device.xp, order, axis))
        return values, Tensor._make(order, self.device, None, 0)

    def _index_arg(self, op, index):
        """An integer index (a Tensor, array or list) as a native array on this tensor's device."""
        if isinstance(index, Tensor):
            if index.device is not self.device:
                raise RuntimeError(f"{op}: index is on {index.device.name} but the tensor is on {self.device.name}")
            if index.dtype.is_floating or index.dtype is B.bool_:
                raise DTypeError(f"{op}: index must be an integer tensor, got {index.dtype.name} "
                                 f"(shape {fmt_shape(index.shape)})")
            return index.data
        if self.device.is_native(index) and index.dtype in (self.device.native(B.int64), self.device.native(B.int32)):
            return index
        host = self.device.to_host(index) if self.device.is_native(index) else np.asarray(index)
        if host.dtype.kind not in "iu":
            raise DTypeError(f"{op}: index must be integer, got {host.dtype} (shape {fmt_shape(host.shape)})")
        return self.device.from_host(host.astype(np.int64))

    def _mask_arg(self, op, mask):
        """A boolean mask (a bool Tensor or NumPy array) as a native array on this tensor's device."""
        if isinstance(mask, Tensor):
            if mask.device is not self.device:
                raise RuntimeError(f"{op}: mask is on {mask.device.name} but the tensor is on {self.device.name}")
            if mask.dtype is not B.bool_:
                raise DTypeError(f"{op}: mask must be a bool tensor, got {mask.dtype.name} "
                                 f"(shape {fmt_shape(mask.shape)})")
            return mask.data
        if self.device.is_native(mask) and mask.dtype == self.device.native(B.bool_):
            return mask
        host = self.device.to_host(mask) if self.device.is_native(mask) else np.asarray(mask)
        if host.dtype.kind != "b":
            raise DTypeError(f"{op}: mask must be bool, got {host.dtype} (shape {fmt_shape(host.shape)})")
        return self.device.from_host(host, B.bool_)

    def _bool_key(self, key):
        """key as a native boolean mask when it is one, as the sole index (x[mask]), else None."""
        if isinstance(key, tuple):
            if len(key) != 1:
                return None
            key = key[0]
        if isinstance(key, Tensor):
            is_mask = key.dtype is B.bool_
        elif isinstance(key, (list, np.ndarray)):
            is_mask = np.asarray(key).dtype.kind == "b"
        else:
            is_mask = self.device.is_native(key) and key.dtype == self.device.native(B.bool_)
        return self._mask_arg("getitem", key) if is_mask else None

    def __setitem__(self, key, value):
        """x[key] = value in place, outside autograd: on a tensor that does not require grad, or
        under no_grad (PyTorch refuses it on leaves that require grad; here on any tensor
        that does, since the write would not be recorded). key: as for x[key], masks included.
        Nothing tracks versions as PyTorch does: a write into a tensor that a graph saved for its
        backward (x in x * w) changes the gradients that graph computes later."""
        if self.requires_grad and autograd.is_grad_enabled():
            raise RuntimeError(f"setitem: the tensor (shape {fmt_shape(self.shape)}) requires grad, and an in-place "
                               f"write is not recorded by autograd; write under tg.no_grad(), into x.detach(), or "
                               f"make a new tensor with masked_fill or tg.where")
        mask = self._bool_key(key)
        if mask is not None:
            shape_ops.check_mask("setitem", tuple(mask.shape), self.shape)
            key = mask
        else:
            key = _normalize_key(self, key)
            shape_ops.check_index_bounds("setitem", self.device.xp, self.shape, key)
        if isinstance(value, Tensor):
            if value.device is not self.device:
                raise RuntimeError(f"setitem: value is on {value.device.name} but the tensor is on {self.device.name}")
            value = value.data if value.dtype is self.dtype else \
                self.device.xp.astype(value.data, self.device.native(self.dtype))
        elif not isinstance(value, (int, float, bool)):
            value = self.device.from_host(np.asarray(value), self.dtype)
        try:
            self.data[key] = value
        except (ValueError, TypeError, IndexError) as e:
            raise type(e)(f"setitem: {e} (tensor {fmt_shape(self.shape)} {self.dtype.name}; device "
                          f"{self.device.name})") from e


def _native_device(data):
    if isinstance(data, (np.ndarray, np.generic, numbers.Number, list, tuple)):
        return None
    try:
        return B.device_of_array(data)
    except TypeError:
        raise TypeError(f"tensor: cannot make a tensor from {type(data).__name__}") from None


def _host_dtype(host, original):
    if host.dtype.kind == "f":
        if isinstance(original, np.ndarray) or isinstance(original, np.floating):
            if host.dtype.name in B.DTYPES:
                return B.to_dtype(host.dtype)
        return B.get_default_dtype()
    if host.dtype.kind in "iu":
        if isinstance(original, (np.ndarray, np.integer)):
            return B.int64
        return B.get_default_dtype()  # Python ints and lists of them: the default float
    if host.dtype.kind == "b":
        return B.bool_ if isinstance(original, (np.ndarray, np.bool_)) else B.get_default_dtype()
    raise DTypeError(f"tensor: unsupported data of dtype {host.dtype}")


def _is_float_like(x):
    return not (isinstance(x, np.ndarray) and x.dtype.kind in "iub")


def _axis(axis, dim):
    return dim if dim is not None else axis


def _keep(keepdims, keepdim):
    return keepdim if keepdim is not None else keepdims


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _normalize_key(t, key):
    """A tuple of ints/slices/None/Ellipsis/native int arrays, ending in Ellipsis when the
    standard would otherwise refuse a partial index."""
    if not isinstance(key, tuple):
        key = (key,)
    dev = t.device
    out = []
    for k in key:
        if isinstance(k, Tensor):
            if k.device is not dev:
                raise RuntimeError(f"getitem: index is on {k.device.name} but the tensor is on {dev.name}")
            if k.dtype.is_floating or k.dtype is B.bool_:
                raise DTypeError(f"getitem: index tensors must be integer, got {k.dtype.name}")
            k = k.data
        elif isinstance(k, (list, np.ndarray)):
            host = np.asarray(k)
            if host.dtype.kind == "b":
                raise DTypeError("getitem: a boolean mask must be the only index (x[mask]); "
                                 "combine it with other indices as x[mask][...] instead")
            if host.dtype.kind not in "iu" and host.size:
                raise DTypeError(f"getitem: index arrays must be integer, got {host.dtype}")
            k = dev.from_host(host.astype(np.int64))
        elif isinstance(k, np.integer):
            k = int(k)
        elif not isinstance(k, (int, slice, type(None), type(Ellipsis))):
            if dev.is_native(k):
                pass
            else:
                raise TypeError(f"getitem: unsupported index of type {type(k).__name__}")
        out.append(k)
    if not any(k is Ellipsis for k in out) and not any(shape_ops._is_index_array(k) for k in out):
        out.append(Ellipsis)
    return tuple(out)


# ------------------------------------------------------------------ creation
def tensor(data, requires_grad=False, dtype=None, device=None) -> Tensor:
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def _creator(make):
    def create(*shape, dtype=None, device=None, requires_grad=False):
        dev = B.get_device(device)
        dt = B.to_dtype(dtype) if dtype is not None else B.get_default_dtype()
        t = Tensor._make(make(dev, tuple(_shape_args(shape)), dt), dev, None, 0)
        return t.requires_grad_(True) if requires_grad else t
    return create


zeros = _creator(lambda d, s, t: d.xp.zeros(s, dtype=d.native(t)))
ones = _creator(lambda d, s, t: d.xp.ones(s, dtype=d.native(t)))
randn = _creator(lambda d, s, t: d.randn(s, t))
rand = _creator(lambda d, s, t: d.rand(s, t))
zeros.__doc__ = "A tensor of zeros: zeros(2, 3) or zeros((2, 3))."
ones.__doc__ = "A tensor of ones."
randn.__doc__ = "Standard normal samples from the device's seeded generator (see manual_seed)."
rand.__doc__ = "Uniform [0, 1) samples from the device's seeded generator."


def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    dev = B.get_device(device)
    dt = B.to_dtype(dtype) if dtype is not None else B.get_default_dtype()
    t = Tensor._make(dev.xp.full(tuple(_shape_args((shape,))), fill_value, dtype=dev.native(dt)), dev, None, 0)
    return t.requires_grad_(True) if requires_grad else t


def zeros_like(t: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def ones_like(t: Tensor, dtype=None, device=None, requires_grad=False) -> Tensor:
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device, requires_grad=requires_grad)


def arange(start, stop=None, step=1, dtype=None, device=None) -> Tensor:
    """Like torch.arange: int64 for integer arguments, the default float otherwise."""
    if stop is None:
        start, stop = 0, start
    if dtype is None:
        dtype = B.int64 if all(isinstance(v, int) for v in (start, stop, step)) else B.get_default_dtype()
    dev = B.get_device(device)
    return Tensor._make(dev.xp.arange(start, stop, step, dtype=dev.native(B.to_dtype(dtype))), dev, None, 0)


def eye(n, m=None, dtype=None, device=None) -> Tensor:
    dev = B.get_device(device)
    dt = B.to_dtype(dtype) if dtype is not None else B.get_default_dtype()
    return Tensor._make(dev.xp.eye(n, m, dtype=dev.native(dt)), dev, None, 0)


def randint(low, high, shape, device=None) -> Tensor:
    dev = B.get_device(device)
    return Tensor._make(dev.randint(low, high, tuple(_shape_args((shape,)))), dev, None, 0)


def _tensors(op, tensors):
    tensors = list(tensors)
    if not tensors:
        raise ShapeError(f"{op}: needs at least one tensor")
    dev = next((t.device for t in tensors if isinstance(t, Tensor)), None)
    return [t if isinstance(t, Tensor) else Tensor(t, device=dev) for t in tensors]


def concat(tensors, axis=0, *, dim=None) -> Tensor:
    return shape_ops.Concat.apply(*_tensors("concat", tensors), axis=_axis(axis, dim))


cat = concat


def stack(tensors, axis=0, *, dim=None) -> Tensor:
    return shape_ops.Stack.apply(*_tensors("stack", tensors), axis=_axis(axis, dim))


def where(condition, x, y) -> Tensor:
    """Elements of x where condition holds, else of y; condition gets no gradient."""
    ref = x if isinstance(x, Tensor) else y if isinstance(y, Tensor) else None
    if ref is None:
        raise TypeError("where: x or y must be a Tensor")
    cond = condition.data if isinstance(condition, Tensor) else ref.device.from_host(np.asarray(condition, dtype=bool))
    if isinstance(condition, Tensor) and condition.device is not ref.device:
        raise RuntimeError(f"where: condition is on {condition.device.name} but x/y on {ref.device.name}")
    return ew.Where.apply(cond, ref._operand(x), ref._operand(y))


def maximum(a, b) -> Tensor:
    return a.maximum(b) if isinstance(a, Tensor) else b.maximum(a)


def minimum(a, b) -> Tensor:
    return a.minimum(b) if isinstance(a, Tensor) else b.minimum(a)


# ------------------------------------------------------------------ max/min results, module-level math
_RETURN_TYPES = {"max": collections.namedtuple("max", ["values", "indices"]),
                 "min": collections.namedtuple("min", ["values", "indices"])}


def method_function(name):
    """tg.<name>(x, ...) as PyTorch has it: x.<name>(...) (tinygrad_rnn/__init__.py makes one per
    elementwise op and reduction). A binary op takes a number first too: tg.pow(2, x)."""
    method = getattr(Tensor, name)
    reflected = _REFLECTED.get(name)

    def function(input, *args, **kwargs):  # noqa: A002 (PyTorch's name)
        if isinstance(input, Tensor):
            return method(input, *args, **kwargs)
        if reflected and args and isinstance(args[0], Tensor) and not kwargs:
            return getattr(args[0], reflected)(input, *args[1:])
        raise TypeError(f"{name}: expected a Tensor, got {type(input).__name__}")
    function.__name__ = function.__qualname__ = name
    function.__doc__ = f"tg.{name}(x, ...) is x.{name}(...)." + (f"\n\n{method.__doc__}" if method.__doc__ else "")
    return function


_REFLECTED = {"add": "__radd__", "sub": "__rsub__", "mul": "__rmul__", "div": "__rtruediv__", "pow": "__rpow__",
              "matmul": "__rmatmul__", "maximum": "maximum", "minimum": "minimum"}


def matmul(a, b) -> Tensor:
    """a @ b (NumPy's and PyTorch's matmul: 1-D operands, broadcast batch dims)."""
    return a @ b if isinstance(a, Tensor) else b.__rmatmul__(a)


def bmm(a, b) -> Tensor:
    """Batched matrix product of two 3-D tensors: (B, n, m) @ (B, m, p) -> (B, n, p), no broadcasting."""
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        raise TypeError(f"bmm: expected two Tensors, got {type(a).__name__} and {type(b).__name__}")
    if a.ndim != 3 or b.ndim != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ShapeError(f"bmm: expected (B, n, m) and (B, m, p), got shapes {fmt_shape(a.shape)} and "
                         f"{fmt_shape(b.shape)}")
    return a @ b


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    """`steps` evenly spaced values from start to end, both included (PyTorch's linspace)."""
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"linspace: steps must be an int >= 0, got {steps!r}")
    dev = B.get_device(device)
    dt = B.to_dtype(dtype) if dtype is not None else B.get_default_dtype()
    t = Tensor._make(dev.xp.linspace(float(start), float(end), int(steps), dtype=dev.native(dt)), dev, None, 0)
    return t.requires_grad_(True) if requires_grad else t


def from_numpy(array) -> Tensor:
    """A CPU tensor sharing memory with a NumPy array, in its dtype (as torch.from_numpy):
    writing into one shows in the other."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    dev = B.get_device("cpu")
    try:
        dev.dtype_of(array)
    except TypeError:
        raise DTypeError(f"from_numpy: unsupported dtype {array.dtype} (supported: "
                         f"{', '.join(B.DTYPES)})") from None
    return Tensor._make(array, dev, None, 0)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """data as a Tensor, without a copy where none is needed (as torch.as_tensor): a Tensor of
    that dtype and device comes back itself, a NumPy array on the CPU shares its memory."""
    dt = B.to_dtype(dtype) if dtype is not None else None
    dev = B.get_device(device) if device is not None else None
    if isinstance(data, Tensor):
        out = data if dt is None else data.to(dt)
        return out if dev is None else out.to(dev)
    if isinstance(data, np.ndarray) and (dev is None or dev.name == "cpu") and dt is None \
            and data.dtype.name in B.DTYPES:
        return from_numpy(data)
    return Tensor(data, dtype=dt, device=dev)


class _InferenceMode(contextlib.ContextDecorator):
    def __init__(self, mode):
        self.mode = bool(mode)
        self._inner = []  # one per entry: a decorated function may recurse

    def __enter__(self):
        inner = autograd.no_grad() if self.mode else contextlib.nullcontext()
        self._inner.append(inner)
        inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self._inner.pop().__exit__(*exc)


def inference_mode(mode=True):
    """Context manager and decorator (with or without parentheses), as torch.inference_mode:
    no graph is recorded inside. Here it is no_grad (the engine has no separate inference
    tensors); inference_mode(False) changes nothing."""
    if callable(mode):
        return _InferenceMode(True)(mode)
    return _InferenceMode(mode)


def einsum(equation, *operands) -> Tensor:
    """Einstein summation, as torch.einsum: einsum("bij,bjk->bik", a, b), einsum("ii", a)
    (a trace), einsum("ij->j", a), implicit outputs ("ij,jk"). Operands may also come as one
    list. Each pair is contracted by one matmul (through permute and reshape), a letter
    repeated in one operand takes its diagonal; differentiable like the ops it uses. Ellipsis
    ('...') is not supported."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    ins, out, sizes = _einsum_parse(equation, operands)
    terms = [_einsum_diagonals(t, s) for t, s in zip(operands, ins)]
    t, s = terms[0]
    for k in range(1, len(terms)):
        later = set(out).union(*(sub for _, sub in terms[k + 1:]))
        t, s = _einsum_pair(t, s, *terms[k], later, sizes)
    t, s = _einsum_sum_out(t, s, set(out))
    return t.permute(*[s.index(c) for c in out]) if s != out else t


def _einsum_parse(equation, operands):
    """(input subscripts, output subscripts, {letter: size}), each subscript a string."""
    eq = equation.replace(" ", "") if isinstance(equation, str) else None
    if eq is None or eq.count("->") > 1:
        raise ValueError(f"einsum: expected an equation like 'ij,jk->ik', got {equation!r}")
    if "." in eq:
        raise ValueError(f"einsum: ellipsis ('...') is not supported, in {equation!r}")
    lhs, arrow, out = eq.partition("->")
    ins = lhs.split(",")
    if not operands or len(ins) != len(operands):
        raise ValueError(f"einsum: {equation!r} has {len(ins)} operand(s) but {len(operands)} tensor(s) were given")
    bad = sorted({c for c in lhs + out if c != "," and not (c.isascii() and c.isalpha())})
    if bad:
        raise ValueError(f"einsum: subscripts must be letters a-z, A-Z; {equation!r} has {', '.join(map(repr, bad))}")
    sizes = {}
    for k, (sub, t) in enumerate(zip(ins, operands)):
        if not isinstance(t, Tensor):
            raise TypeError(f"einsum: operand {k} is a {type(t).__name__}, not a Tensor")
        if len(sub) != t.ndim:
            raise ShapeError(f"einsum: operand {k} has shape {fmt_shape(t.shape)} ({t.ndim} dims) but "
                             f"subscripts {sub!r} ({len(sub)})")
        for c, n in zip(sub, t.shape):
            if sizes.setdefault(c, n) != n:
                raise ShapeError(f"einsum: subscript {c!r} has size {sizes[c]} and {n} (operand {k}, shape "
                                 f"{fmt_shape(t.shape)}) in {equation!r}")
    if not arrow:  # implicit output: the letters used once, in alphabetical order
        out = "".join(sorted(c for c in sizes if lhs.count(c) == 1))
    if len(set(out)) != len(out) or any(c not in sizes for c in out):
        raise ValueError(f"einsum: the output {out!r} of {equation!r} repeats a letter or has one no input has")
    return ins, out, sizes


def _einsum_diagonals(t, sub):
    """A letter twice in one operand ('ii'): keep the diagonal, once."""
    while len(set(sub)) != len(sub):
        c = next(c for c in sub if sub.count(c) > 1)
        i, j = sub.index(c), sub.index(c, sub.index(c) + 1)
        shape = [1] * t.ndim
        shape[i] = shape[j] = t.shape[i]
        mask = eye(t.shape[i], dtype=t.dtype, device=t.device).reshape(shape)
        t, sub = (t * mask).sum(axis=j), sub[:j] + sub[j + 1:]
    return t, sub


def _einsum_sum_out(t, sub, keep):
    axes = tuple(i for i, c in enumerate(sub) if c not in keep)
    if not axes:
        return t, sub
    return t.sum(axis=axes), "".join(c for c in sub if c in keep)


def _einsum_pair(a, sa, b, sb, later, sizes):
    """a and b contracted into one term: letters of both that `later` needs are batch dims,
    those it does not are summed by the matmul, the rest are a's rows and b's columns."""
    a, sa = _einsum_sum_out(a, sa, later | set(sb))
    b, sb = _einsum_sum_out(b, sb, later | set(sa))
    batch = [c for c in sa if c in sb and c in later]
    inner = [c for c in sa if c in sb and c not in later]
    left = [c for c in sa if c not in sb]
    right = [c for c in sb if c not in sa]

    def n(letters):
        return math.prod(sizes[c] for c in letters)

    a = a.permute(*[sa.index(c) for c in batch + left + inner]).reshape(n(batch), n(left), n(inner))
    b = b.permute(*[sb.index(c) for c in batch + inner + right]).reshape(n(batch), n(inner), n(right))
    out = (a @ b).reshape(tuple(sizes[c] for c in batch + left + right))
    return out, "".join(batch + left + right)


__all__ = ["Tensor", "tensor", "zeros", "ones", "full", "zeros_like", "ones_like", "arange", "randn",
           "rand", "randint", "eye", "concat", "cat", "stack", "where", "maximum", "minimum", "TinygradError"]

# the engine makes each op's outputs with this class
engine.register(tensor_factory=Tensor._make)
