"""What users call around the engine: grad mode, gradients as values (grad), tensor hooks
and retain_grad, and anomaly mode. The engine's walk calls back into these only through
the objects they hand it: a hook table's `run`, grad's `Wanted`, anomaly mode's checks."""
from __future__ import annotations

import contextlib
import os
import sys
import weakref

from ..errors import AnomalyError, ShapeError, fmt_shape
from . import engine
from .engine import TensorBase, run_backward


# ----------------------------------------------------------------------------- grad mode
def is_grad_enabled() -> bool:
    return engine._grad_enabled


class _GradMode(contextlib.ContextDecorator):
    # a class, not a generator: a training loop enters no_grad often, and this is 4x cheaper
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self):
        self.prev, engine._grad_enabled = engine._grad_enabled, self.enabled

    def __exit__(self, *exc):
        engine._grad_enabled = self.prev
        return False


def no_grad():
    """Context manager and decorator: ops inside record no graph."""
    return _GradMode(False)


def enable_grad():
    return _GradMode(True)


# ----------------------------------------------------------------------------- anomaly mode
class detect_anomaly(contextlib.ContextDecorator):
    """Context manager and decorator: while it is on, every op records the file and line of
    the forward call that made it, and the first backward rule whose gradient holds a NaN
    or an infinity raises AnomalyError naming the op and that line. It costs a stack walk per
    op and a finiteness check per gradient, so it is for debugging, not for training."""

    def __enter__(self):
        self.prev = engine._anomaly
        engine._anomaly = _AnomalyChecks
        return self

    def __exit__(self, *exc):
        engine._anomaly = self.prev
        return False


def is_anomaly_enabled() -> bool:
    return engine._anomaly is not None


class _AnomalyChecks:
    """What the engine calls while anomaly mode is on."""

    _package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # tinygrad_rnn/

    @classmethod
    def where(cls):
        """'file:line in function' of the innermost frame that is not tinygrad_rnn's own code."""
        f = sys._getframe(2)
        while f is not None and os.path.abspath(f.f_code.co_filename).startswith(cls._package):
            f = f.f_back
        if f is None:
            return "an unknown place"
        return f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"

    @staticmethod
    def check(node, in_grads):
        """Raise AnomalyError if a gradient the rule produced holds a NaN or an infinity."""
        xp = node.xp
        for k, g in enumerate(in_grads):
            if g is None or not node.needs_input_grad[k]:
                continue
            if not bool(xp.all(xp.isfinite(g))):
                n_nan = int(xp.sum(xp.astype(xp.isnan(g), xp.int64)))
                what = f"{n_nan} NaN" if n_nan else "infinity"
                where = node.__dict__.get("trace", "an unknown place (made before detect_anomaly was on)")
                raise AnomalyError(f"detect_anomaly: the backward of {node.fn.__name__} produced {what} in the "
                                   f"gradient of its input {k} (shape {fmt_shape(g.shape)}); the op was called "
                                   f"at {where}")


# ----------------------------------------------------------------------------- gradients as values
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
    found = run_backward(outputs, seeds, bool(retain_graph), want=Wanted(inputs), create_graph=create_graph)
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


class Wanted:
    """autograd.grad's inputs, as the engine's walk asks about them: which leaves to sum,
    which nodes to walk at all, and where the intermediate inputs' gradients go."""

    def __init__(self, inputs):
        self.nodes = {}  # node -> [(output index, tensor)]: the intermediate tensors asked for
        self.leaves = set()
        self.found = {}  # id(tensor) -> its gradient
        for t in inputs:
            if t._ctx is not None:
                self.nodes.setdefault(t._ctx, []).append((t._index, t))
            else:
                self.leaves.add(t)

    def prune(self, order):
        """Only the nodes on a path to an input asked for: the rest of the graph is not walked."""
        needed = set()
        for node in reversed(order):  # producers first
            if node in self.nodes or node.inputs is None or any(  # a freed node: walk it, to say so
                    isinstance(i, TensorBase) and ((i._ctx is None and i in self.leaves) or i._ctx in needed)
                    for i in node.inputs):
                needed.add(node)
        return [node for node in order if node in needed]

    def take(self, node, grads):
        """The gradients of a node's outputs, seen before its rule runs."""
        for i, t in self.nodes.get(node, ()):
            self.found[id(t)] = grads[i]


# ----------------------------------------------------------------------------- hooks and retain_grad
class HookTable(dict):
    """A tensor's hooks, {handle id: fn}; the walk calls `run` with its gradient."""

    def run(self, g, device, where):
        """Each hook in registration order sees the gradient so far and may return a replacement."""
        for fn in list(self.values()):
            res = fn(g if isinstance(g, TensorBase) else engine._tensor(g, device, None, 0))
            if res is None:
                continue
            name = getattr(fn, "__name__", fn)
            if not isinstance(res, TensorBase):
                raise TypeError(f"hook {name!r} on the gradient of {where} returned a {type(res).__name__}; "
                                f"a hook returns a Tensor or None")
            if tuple(res.shape) != tuple(g.shape) or res.device is not device:
                raise ShapeError(f"hook {name!r} on the gradient of {where} returned shape "
                                 f"{fmt_shape(res.shape)} on {res.device.name}; the gradient has shape "
                                 f"{fmt_shape(g.shape)} on {device.name}")
            g = res if isinstance(g, TensorBase) else res.data
        return g


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
            tensor._hooks = HookTable()
        table = tensor._hooks
    else:
        if ctx.hooks is None:
            ctx.hooks = {}
        table = ctx.hooks.setdefault(tensor._index, HookTable())
    handle = RemovableHandle(table)
    table[handle.id] = fn
    return handle




def retain(tensor):
    """Ask the engine to store tensor.grad for a non-leaf tensor (see Tensor.retain_grad)."""
    ctx = tensor._ctx
    if ctx.retained is None:
        ctx.retained = {}
    ctx.retained[tensor._index] = weakref.ref(tensor)
