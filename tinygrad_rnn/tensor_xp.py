"""Differentiating backward itself (create_graph=True): the same backward rules, on Tensors.

A backward rule is written once, with `ctx.xp` and operators (autograd.py). A first-order
backward runs it on raw arrays. Under create_graph the engine runs the very same rule with
Tensors instead: `ctx.xp` is `TensorNamespace` below (the Array API names the rules use,
each an ordinary differentiable op), the incoming gradients are Tensors, and each array
the op saved becomes the Tensor it came from:

- an input's data -> that input Tensor; an output's -> that output Tensor (still linked to
  the node, so the new graph reaches back through it);
- an integer or boolean array (indices, masks) -> a constant;
- any other array the forward computed -> a constant too, which is right only where the
  rule's result does not depend on it smoothly (a dropout mask, the arg-max of a max):
  such ops say so with `saved_constants = True`. Every other op refuses create_graph with
  an error naming it, rather than return a silently wrong second derivative.

Ops whose backward is fused raw-array code (the recurrent cells and sequences, the fused
cross-entropy) provide `composed(ctx, *inputs)` (ctx.xp the tensor namespace): the same
outputs from primitive ops, whose graph is then differentiated (with create_graph) in
place of the fused rule. The numbers are the same to rounding: gradcheck's
create_graph_disagreements and tests/test_create_graph_agreement.py hold both ways of
running every rule to that.
"""
from __future__ import annotations

from . import backend as B
from .autograd import engine, enable_grad, grad, unbroadcast
from .errors import CreateGraphError
from .ops.nn import Embedding
from .ops.shape import Alias, IndexAdd
from .tensor import Tensor, concat, full, stack, where


def _dt(dtype, device):
    """A DType from what a rule passes: a DType (Tensor.dtype) or a native dtype, which may
    be one NumPy does not know (array-api-strict's arr.dtype: Cast's ctx.in_dtype there)."""
    if isinstance(dtype, B.DType):
        return dtype
    try:
        return B.to_dtype(dtype)
    except TypeError:
        return device.dtype_of(device.xp.zeros((0,), dtype=dtype))


class TensorNamespace:
    """The Array API functions backward rules call, on Tensors, recording the graph."""

    def __init__(self, device):
        self.device = device

    def __getattr__(self, name):  # only for names not defined below
        raise CreateGraphError(f"create_graph=True: a backward rule called xp.{name}, which the tensor "
                               f"namespace (tensor_xp.TensorNamespace) does not provide")

    # creation: constants
    def zeros(self, shape, dtype=None):
        dt = _dt(dtype, self.device) if dtype is not None else B.get_default_dtype()
        return _Scratch.zeros(tuple(shape), dt, self.device)

    def full(self, shape, value, dtype=None):
        dt = _dt(dtype, self.device) if dtype is not None else None
        return full(tuple(shape), value, dtype=dt, device=self.device)

    def arange(self, *args, dtype=None):
        kw = {} if dtype is None else {"dtype": self.device.native(_dt(dtype, self.device))}
        arr = self.device.xp.arange(*args, **kw)
        return Tensor._make(arr, self.device, None, 0)

    # elementwise
    @staticmethod
    def exp(x):
        return x.exp()

    @staticmethod
    def log(x):
        return x.log()

    @staticmethod
    def sqrt(x):
        return x.sqrt()

    @staticmethod
    def tanh(x):
        return x.tanh()

    @staticmethod
    def abs(x):
        return x.abs()

    @staticmethod
    def sin(x):
        return x.sin()

    @staticmethod
    def cos(x):
        return x.cos()

    @staticmethod
    def sign(x):  # piecewise constant: no gradient
        return Tensor._make(x.device.xp.sign(x.data), x.device, None, 0)

    @staticmethod
    def where(cond, a, b):
        return where(cond, a, b)

    @staticmethod
    def maximum(a, b):
        return a.maximum(b) if isinstance(a, Tensor) else b.maximum(a)

    @staticmethod
    def minimum(a, b):
        return a.minimum(b) if isinstance(a, Tensor) else b.minimum(a)

    @staticmethod
    def astype(x, dtype):
        dt = _dt(dtype, x.device)
        if not dt.is_floating or not x.dtype.is_floating:  # masks and indices: constants
            return Tensor._make(x.device.xp.astype(x.data, x.device.native(dt)), x.device, None, 0)
        return x.to(dt)

    # reductions and shapes
    @staticmethod
    def sum(x, axis=None, keepdims=False):
        return x.sum(axis=axis, keepdims=keepdims)

    @staticmethod
    def max(x, axis=None, keepdims=False):  # the Array API's max is PyTorch's amax
        return x.amax(axis=axis, keepdims=keepdims)

    @staticmethod
    def reshape(x, shape):
        return x.reshape(tuple(shape))

    @staticmethod
    def permute_dims(x, axes):
        return x.permute(*axes)

    @staticmethod
    def expand_dims(x, axis=0):
        return x.unsqueeze(axis)

    @staticmethod
    def broadcast_to(x, shape):
        return x.expand(*shape)

    @staticmethod
    def matmul(a, b):
        return a @ b

    @staticmethod
    def concat(xs, axis=0):
        return concat(list(xs), axis=axis)

    @staticmethod
    def stack(xs, axis=0):
        return stack(list(xs), axis=axis)

    @staticmethod
    def take(x, index, axis=0):
        if axis != 0 or x.ndim == 0:
            raise CreateGraphError("take under create_graph: only along axis 0")
        rest = x.shape[1:]
        rows = Embedding.apply(index, x if x.ndim == 2 else x.reshape(x.shape[0], -1))
        return rows.reshape(tuple(index.shape) + rest)

    @staticmethod
    def cumulative_sum(x, axis=None):
        return x.cumsum(axis=axis)

    @staticmethod
    def flip(x, axis=None):
        axes = range(x.ndim) if axis is None else ([axis] if isinstance(axis, int) else axis)
        key = [slice(None)] * x.ndim
        for a in axes:
            key[a % x.ndim] = slice(None, None, -1)
        return x[tuple(key)]


class _Scratch(Tensor):
    """A zeros tensor that a backward rule fills in place (GetItem's `full[key] = grad`,
    the device's scatter-add): each write rebinds it to an out-of-place, differentiable
    sum with the values scattered by IndexAdd."""

    __slots__ = ()

    @staticmethod
    def zeros(shape, dtype, device):
        t = object.__new__(_Scratch)
        t.data = device.xp.zeros(shape, dtype=device.native(dtype))
        t.device, t._ctx, t._index, t.requires_grad, t.grad, t._hooks = device, None, 0, False, None, None
        return t

    def _current(self):
        """The value so far as a Tensor object of its own: the new node must not take `self`
        as its input, since `self` is then rebound to that node's output (a cycle)."""
        return Tensor._make(self.data, self.device, self._ctx, self._index) if self._ctx is not None else \
            Tensor._make(self.data, self.device, None, 0)

    def _rebind(self, new):
        self.data, self._ctx, self._index, self.requires_grad = new.data, new._ctx, new._index, new.requires_grad

    def add_at(self, key, values, accumulate):
        old = self._current()
        if not isinstance(values, Tensor):  # a number: setting a region to it, as `gw[pad] = 0.0`
            keep = self.device.xp.ones(self.shape, dtype=self.data.dtype)
            keep[key] = 0.0
            filled = self.device.xp.zeros(self.shape, dtype=self.data.dtype)
            filled[key] = values
            self._rebind(old * Tensor._make(keep, self.device, None, 0) + Tensor._make(filled, self.device, None, 0))
            return
        self._rebind(old + IndexAdd.apply(values, self.shape, key, accumulate))

    def __setitem__(self, key, values):
        self.add_at(key, values, accumulate=False)


class _GraphDevice:
    """ctx.device for a rule running on Tensors: the device, with scatter-add made differentiable."""

    use_kernels = False  # kernels compute on arrays, not on a graph: the rule takes its portable form

    def __init__(self, device):
        self._device = device

    def scatter_add(self, target, index, values):
        if not isinstance(target, _Scratch):
            raise CreateGraphError("scatter_add under create_graph: the target must come from xp.zeros in the rule")
        target.add_at(index, values, accumulate=True)

    def __getattr__(self, name):
        return getattr(self._device, name)


class _GraphCtx:
    """What a backward rule sees as ctx under create_graph: Tensors in place of arrays."""

    def __init__(self, node, saved):
        self._node = node
        self.saved_tensors = saved
        self.xp = TensorNamespace(node.device)
        self.device = _GraphDevice(node.device)
        self.needs_input_grad = node.needs_input_grad

    def __getattr__(self, name):  # what forward stored: ctx.axis, ctx.in_shape, ...
        return getattr(self._node, name)


def _saved_as_tensors(node, outputs):
    """Each saved array as the Tensor it came from (see the module docstring)."""
    out = []
    inputs = [t for t in node.inputs if isinstance(t, Tensor)]
    for k, s in enumerate(node.saved_tensors or ()):
        if s is None:
            out.append(s)
            continue
        # by identity first: a 0-d result can be a NumPy scalar, which is also a float
        src = next((t for t in inputs if t.data is s), None)
        if src is None:
            src = next((t for t in outputs if t is not None and t.data is s), None)
        # a number the op was given: a Python one, or a NumPy scalar passed in (x / np.float64(n)),
        # told from a NumPy scalar its forward computed by being one of the op's arguments
        if src is None and (type(s) in (int, float, bool) or any(s is a for a in node.inputs)):
            out.append(s)
            continue
        if src is None:
            dt = node.device.dtype_of(s)
            if dt.is_floating and not getattr(node.fn, "saved_constants", False):
                hint = getattr(node.fn, "create_graph_hint", "")
                raise CreateGraphError(
                    f"{node.fn.__name__}: create_graph=True: its backward uses a value its forward computed "
                    f"(saved value {k}, shape {tuple(s.shape)}), which a second differentiation would treat "
                    f"as a constant and get wrong; this op has no second derivative" + (f"; {hint}" if hint else ""))
            src = Tensor._make(s, node.device, None, 0)
        out.append(src)
    return tuple(out)


def backward_with_graph(node, grads, outputs):
    """The node's input gradients as Tensors with history. grads: one Tensor per output;
    outputs: the node's output Tensors where known (None elsewhere)."""
    refusal = getattr(node.fn, "create_graph_error", None)
    if refusal:
        raise CreateGraphError(f"{node.fn.__name__}: create_graph=True: {refusal}")
    composed = getattr(node.fn, "composed", None)
    if composed is not None:
        with enable_grad():
            # each input through an alias node of its own: the gradient is then the partial
            # derivative for that input alone (the GRU's h and gh = h W^T are both inputs)
            args = [Alias.apply(t) if isinstance(t, Tensor) and node.needs_input_grad[k] else t
                    for k, t in enumerate(node.inputs)]
            tensors = [(k, a) for k, a in enumerate(args) if isinstance(a, Tensor) and node.needs_input_grad[k]]
            outs = composed(_GraphCtx(node, ()), *args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        pairs = [(o, g) for o, g in zip(outs, grads) if o.requires_grad]
        res = [None] * len(node.inputs)
        if tensors and pairs:
            got = grad([o for o, _ in pairs], [t for _, t in tensors], grad_outputs=[g for _, g in pairs],
                       create_graph=True, allow_unused=True)
            for (k, _), g in zip(tensors, got):
                res[k] = g
        return tuple(res)
    view = _GraphCtx(node, _saved_as_tensors(node, outputs))
    return node.fn.backward(view, *grads)


class GraphRules:
    """How the engine's walk runs under create_graph=True: every gradient is a Tensor, and
    each node's rule runs on Tensors (backward_with_graph), recording a graph of its own."""

    def __init__(self, roots):
        # (node, output index) -> that output Tensor, as its consumers show it: a rule's
        # saved outputs map back to these (_saved_as_tensors)
        self.produced = {(r._ctx, r._index): r for r in roots if r._ctx is not None}

    @staticmethod
    def seed(grad, owner):  # owner: the root or node the gradient belongs to
        return grad if isinstance(grad, Tensor) else Tensor._make(grad, owner.device, None, 0)

    def call(self, node, grads_in):
        gs = [grads_in] if node.out_meta is None else grads_in
        gs = [g if isinstance(g, Tensor) else Tensor._make(g, node.device, None, 0) for g in gs]
        outs = [self.produced.get((node, i)) for i in range(len(gs))]
        out = backward_with_graph(node, gs, outs)
        return out if type(out) is tuple else (out,)

    def fit(self, g, inp):
        """The gradient in its input's shape and dtype, differentiably."""
        if tuple(g.shape) != tuple(inp.data.shape):
            g = unbroadcast(TensorNamespace(inp.device), g, tuple(inp.data.shape))
        if g.dtype is not inp.dtype:
            g = g.to(inp.dtype)
        if inp._ctx is not None:
            self.produced[(inp._ctx, inp._index)] = inp
        return g


engine.register(graph_rules=GraphRules)
