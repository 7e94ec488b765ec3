"""Reverse-mode autodiff: `Function`, the graph it records, and the backward walk.

An op is a subclass of `Function` with two static methods on raw backend arrays:

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            return grad * b, grad * a

`Mul.apply(x, y)` unwraps the tensors, runs `forward`, and -- when grad mode is on and
some input requires grad -- returns tensors whose `_ctx` is that call's `Context`: the
graph node. A node knows its inputs (the edges), what forward saved, and how many
outputs it has. `backward` gets one gradient per output and returns one per input
(None where `ctx.needs_input_grad[i]` is False). It may return a gradient of the
*output's* broadcast shape: `run_backward` reduces it to the input's shape in one place
(`unbroadcast`), so no op repeats that logic.
"""
from __future__ import annotations

import contextlib
import weakref

from .errors import TinygradError, fmt_shape

_grad_enabled = True


def is_grad_enabled() -> bool:
    return _grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        global _grad_enabled
        self.prev = _grad_enabled
        _grad_enabled = self.enabled

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self.prev
        return False


def no_grad():
    """Context manager and decorator: ops inside record no graph."""
    return _GradMode(False)


def enable_grad():
    return _GradMode(True)


class Context:
    """One recorded op call: the node of the graph. `ctx` in forward/backward."""

    __slots__ = ("fn", "inputs", "needs_input_grad", "saved_tensors", "xp", "device",
                 "out_meta", "retained", "__dict__", "__weakref__")

    def __init__(self, device, needs_input_grad):
        self.device = device
        self.xp = device.xp
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()
        self.retained = None

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays

    @property
    def name(self) -> str:
        return self.fn.__name__

    def __repr__(self):
        return f"<{self.fn.__name__} node>"


class Function:
    """Base class of every differentiable op. See the module docstring."""

    @staticmethod
    def forward(ctx, *args, **kwargs):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grads):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        device = None
        raw = []
        needs = []
        for a in args:
            if isinstance(a, Tensor):
                if device is None:
                    device = a.device
                elif a.device is not device:
                    raise RuntimeError(
                        f"{cls.__name__.lower()}: inputs are on different devices ({device.name} and "
                        f"{a.device.name}); move them with .to(device) first")
                raw.append(a.data)
                needs.append(a.requires_grad)
            else:
                raw.append(a)
                needs.append(False)
        if device is None:
            raise TypeError(f"{cls.__name__}.apply needs at least one Tensor argument")
        track = _grad_enabled and True in needs
        ctx = Context(device, tuple(needs))
        try:
            out = cls.forward(ctx, *raw, **kwargs)
        except TinygradError:
            raise
        except (ValueError, TypeError, IndexError) as e:
            raise _annotate(e, cls, args, device) from e
        if not track:
            ctx = None
        else:
            ctx.fn = cls
            ctx.inputs = args
        if type(out) is tuple:
            if ctx is not None:
                ctx.out_meta = tuple((o.shape, o.dtype) for o in out)
            return tuple(Tensor._make(o, device, ctx, i) for i, o in enumerate(out))
        if ctx is not None:
            ctx.out_meta = None
        return Tensor._make(out, device, ctx, 0)


def _annotate(err, fn, args, device):
    """The backend's error, restated with the op's name and what it was given."""
    parts = []
    for a in args:
        if isinstance(a, Tensor):
            parts.append(f"tensor {fmt_shape(a.shape)} {a.dtype.name}")
        elif isinstance(a, (int, float)):
            parts.append(repr(a))
        elif hasattr(a, "shape") and hasattr(a, "dtype"):
            parts.append(f"array {fmt_shape(a.shape)} {a.dtype}")
    kind = type(err) if type(err) in (ValueError, TypeError, IndexError) else \
        next(k for k in (ValueError, TypeError, IndexError) if isinstance(err, k))
    return kind(f"{fn.__name__.lower()}: {err} (inputs: {', '.join(parts)}; device {device.name})")


def unbroadcast(xp, grad, shape):
    """Sum `grad` down to `shape`, undoing NumPy broadcasting."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra < 0:
        return xp.reshape(grad, shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    if axes:
        grad = xp.sum(grad, axis=axes, keepdims=True)
    if extra:
        grad = xp.reshape(grad, shape)
    return grad


def _topological_order(root_ctx):
    """Nodes reachable from root_ctx, each after every node that consumes it.

    Iterative depth-first post-order: a BPTT graph of 100,000 steps would overflow
    Python's recursion limit.
    """
    order = []
    seen = set()
    stack = [(root_ctx, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        # marked when expanded, not when pushed: a node pushed early by a shallow consumer
        # must still finish after a deeper consumer that reaches it later (a + (b - a))
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        if node.inputs is None:
            continue
        for inp in node.inputs:
            if isinstance(inp, Tensor):
                c = inp._ctx
                if c is not None and c not in seen:
                    stack.append((c, False))
    order.reverse()  # consumers first
    return order


def run_backward(root, grad, retain_graph=False):
    """Propagate `grad` (an array shaped like root) from `root` to every leaf that requires grad."""
    root_ctx = root._ctx
    if root_ctx is None:  # a leaf: its gradient is the seed itself
        root._accumulate(grad)
        return
    # pending[node]: the gradient of its output so far; for a multi-output node, a list
    # with one slot per output. Single-output nodes (nearly all) skip the list.
    if root_ctx.out_meta is None:
        pending = {root_ctx: grad}
    else:
        pending = {root_ctx: _empty_slots(root_ctx)}
        pending[root_ctx][root._index] = grad
    # leaf gradients are summed as raw arrays and wrapped in a Tensor once at the end: a
    # weight shared by T timesteps would otherwise allocate T throwaway Tensors
    leaf_grads = {}
    for node in _topological_order(root_ctx):
        grads = pending.pop(node, None)
        if grads is None:  # reachable, but no gradient flows into it from root
            continue
        if node.inputs is None:
            raise RuntimeError(
                f"backward through {node.fn.__name__} a second time: its saved arrays were "
                f"freed after the first backward; pass retain_graph=True to the first call")
        xp = node.xp
        if node.out_meta is None:
            in_grads = node.fn.backward(node, grads)
            if node.retained:
                grads = (grads,)
        else:
            for i, g in enumerate(grads):
                if g is None:  # an output nobody used: its gradient is zero
                    shape, dtype = node.out_meta[i]
                    grads[i] = xp.zeros(shape, dtype=dtype)
            in_grads = node.fn.backward(node, *grads)
        if node.retained:
            for i, ref in node.retained.items():
                t = ref()
                if t is not None and grads[i] is not None:
                    t._accumulate(grads[i])  # like a leaf's, .grad adds up over backward calls
        if type(in_grads) is not tuple:
            in_grads = (in_grads,)
        for inp, g, need in zip(node.inputs, in_grads, node.needs_input_grad):
            if not need or g is None:
                continue
            data = inp.data
            if g.shape != data.shape:
                g = unbroadcast(xp, g, data.shape)
            dt = data.dtype
            if g.dtype != dt:
                g = xp.astype(g, dt)
            c = inp._ctx
            # sums are out of place: g may be the very array another branch holds
            if c is None:
                prev = leaf_grads.get(inp)  # keyed by identity: Tensor hashes as an object
                leaf_grads[inp] = g if prev is None else prev + g
            elif c.out_meta is None:
                prev = pending.get(c)
                pending[c] = g if prev is None else prev + g
            else:
                slots = pending.get(c)
                if slots is None:
                    slots = pending[c] = _empty_slots(c)
                prev = slots[inp._index]
                slots[inp._index] = g if prev is None else prev + g
        if not retain_graph:
            node.inputs = None
            node.saved_tensors = None
            node.__dict__.clear()
    for leaf, g in leaf_grads.items():
        leaf._accumulate(g)


def _empty_slots(ctx):
    return [None] if ctx.out_meta is None else [None] * len(ctx.out_meta)


def retain(tensor):
    """Ask the engine to store tensor.grad for a non-leaf tensor (see Tensor.retain_grad)."""
    ctx = tensor._ctx
    if ctx.retained is None:
        ctx.retained = {}
    ctx.retained[tensor._index] = weakref.ref(tensor)


from .tensor import Tensor  # noqa: E402  (Tensor and Function refer to each other)
