"""What users call around the engine: gradients as values (grad), tensor hooks, and anomaly
mode. Everything here goes through engine.run_backward."""
from __future__ import annotations

import contextlib
import weakref

from ..errors import fmt_shape
from . import engine
from .engine import TensorBase, run_backward


class detect_anomaly(contextlib.ContextDecorator):
    """Context manager and decorator: while it is on, every op records the file and line of
    the forward call that made it, and the first backward rule whose gradient holds a NaN
    or an infinity raises AnomalyError naming the op and that line. It costs a stack walk per
    op and a finiteness check per gradient, so it is for debugging, not for training."""

    def __enter__(self):
        self.prev = engine._anomaly
        engine._anomaly = True
        return self

    def __exit__(self, *exc):
        engine._anomaly = self.prev
        return False


def is_anomaly_enabled() -> bool:
    return engine._anomaly


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """d(outputs)/d(inputs) as a tuple of Tensors, PyTorch's torch.autograd.grad.

    outputs: a Tensor or a sequence; grad_outputs: one gradient per output (Tensors, arrays
    or None; None is allowed for a one-element output, meaning 1). inputs: tensors that
    require grad, leaves or intermediates. Nothing is accumulated into any .grad. An input
    the outputs do not depend on is an error, unless allow_unused=True, and then its entry
    is None. retain_graph (default: create_graph) keeps the graph for another backward;
    create_graph=True records the backward pass itself, so the gradients returned can be
    differentiated again (to any order).
    """
    outputs = _seq("grad", "outputs", outputs)
    inputs = _seq("grad", "inputs", inputs)
    for k, t in enumerate(inputs):
        if not t.requires_grad:
            raise RuntimeError(f"grad: input {k} (shape {fmt_shape(t.shape)}) does not require grad, so no "
                               f"gradient flows to it; make it with requires_grad=True")
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    elif isinstance(grad_outputs, TensorBase) or not isinstance(grad_outputs, (list, tuple)):
        grad_outputs = [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} output(s) but {len(grad_outputs)} grad_outputs")
    seeds = []
    for k, (o, g) in enumerate(zip(outputs, grad_outputs)):
        if not o.requires_grad:
            raise RuntimeError(f"grad: output {k} does not require grad and has no graph behind it")
        seeds.append(g if create_graph and isinstance(g, TensorBase) and tuple(g.shape) == o.shape
                     and g.device is o.device else o._seed_grad(g, f"grad: output {k}", "grad_outputs"))
    if retain_graph is None:
        retain_graph = create_graph
    found = run_backward(outputs, seeds, bool(retain_graph), inputs=inputs, create_graph=create_graph)
    result = []
    for k, t in enumerate(inputs):
        g = found.get(id(t))
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: input {k} (shape {fmt_shape(t.shape)}) was not used to compute the "
                               f"outputs; pass allow_unused=True to get None for it")
        if g is not None and not isinstance(g, TensorBase):
            g = engine._tensor(g, t.device, None, 0)
        result.append(g)
    return tuple(result)


def _seq(op, what, x):
    items = [x] if isinstance(x, TensorBase) else list(x)
    for k, t in enumerate(items):
        if not isinstance(t, TensorBase):
            raise TypeError(f"{op}: {what}[{k}] is a {type(t).__name__}, not a Tensor")
    if not items:
        raise ValueError(f"{op}: {what} is empty")
    return items


class RemovableHandle:
    """What register_hook returns: .remove() unregisters the hook (calling it twice is harmless)."""

    _next = 0

    def __init__(self, table):
        self._table = weakref.ref(table) if hasattr(table, "__weakref__") else (lambda: table)
        RemovableHandle._next += 1
        self.id = RemovableHandle._next

    def remove(self):
        table = self._table()
        if table is not None:
            table.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


def register_hook(tensor, fn):
    """See Tensor.register_hook."""
    if not callable(fn):
        raise TypeError(f"register_hook: the hook must be callable, got {type(fn).__name__}")
    if not tensor.requires_grad:
        raise RuntimeError("register_hook: this tensor does not require grad, so no gradient will reach the hook")
    ctx = tensor._ctx
    if ctx is None:
        if tensor._hooks is None:
            tensor._hooks = {}
        table = tensor._hooks
    else:
        if ctx.hooks is None:
            ctx.hooks = {}
        table = ctx.hooks.setdefault(tensor._index, {})
    handle = RemovableHandle(table)
    table[handle.id] = fn
    return handle


