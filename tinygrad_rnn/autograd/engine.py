"""The heart of reverse-mode autodiff: `Function`, the graph it records, and the backward walk.

This file imports no op and no Tensor class: a node (`Context`) links to the tensors it
was given, a tensor (`TensorBase`) to the node that made it, and `run_backward` walks
those links. Read it top to bottom; tools.py adds what users call around it.

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

from ..errors import ShapeError, TinygradError, fmt_shape

_grad_enabled = True
_anomaly = False  # detect_anomaly(): record where each node was made, check every backward rule


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


class TensorBase:
    """What the engine knows of a tensor: its array, its device, and where in the graph it
    came from (`_ctx`, the node that made it, and `_index`, which of that node's outputs it
    is; a leaf has no node). tensor.Tensor adds the operator sugar and the methods."""

    __slots__ = ("data", "device", "requires_grad", "grad", "_ctx", "_index", "_hooks", "__weakref__")


def _tensor(data, device, ctx, index):
    """A new tensor of the package's Tensor class (tensor.py puts Tensor._make here)."""
    raise RuntimeError("tinygrad_rnn.tensor was not imported")


def _set_tensor_factory(make):
    global _tensor
    _tensor = make


class CreateGraphError(TinygradError, RuntimeError):
    """create_graph=True reached an op whose backward cannot be differentiated again."""


class AnomalyError(TinygradError, RuntimeError):
    """A backward rule produced NaN or infinity under detect_anomaly()."""


def _caller_outside_package():
    """'file:line in function' of the innermost frame that is not tinygrad_rnn's own code."""
    import os
    import sys
    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # tinygrad_rnn/
    f = sys._getframe(2)
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(pkg):
        f = f.f_back
    if f is None:
        return "an unknown place"
    return f"{f.f_code.co_filename}:{f.f_lineno} in {f.f_code.co_name}"


class Context:
    """One recorded op call: the node of the graph. `ctx` in forward/backward."""

    __slots__ = ("fn", "inputs", "needs_input_grad", "saved_tensors", "xp", "device",
                 "out_meta", "retained", "hooks", "__dict__", "__weakref__")

    def __init__(self, device, needs_input_grad):
        self.device = device
        self.xp = device.xp
        self.needs_input_grad = needs_input_grad
        self.saved_tensors = ()
        self.retained = None
        self.hooks = None  # {output index: {handle id: fn}}, from Tensor.register_hook

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
            if isinstance(a, TensorBase):
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
            if _anomaly:
                ctx.trace = _caller_outside_package()
        if type(out) is tuple:
            if ctx is not None:
                ctx.out_meta = tuple((o.shape, o.dtype) for o in out)
            return tuple(_tensor(o, device, ctx, i) for i, o in enumerate(out))
        if ctx is not None:
            ctx.out_meta = None
        return _tensor(out, device, ctx, 0)


def _annotate(err, fn, args, device):
    """The backend's error, restated with the op's name and what it was given."""
    parts = []
    for a in args:
        if isinstance(a, TensorBase):
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


def _topological_order(root_ctxs):
    """Nodes reachable from the root nodes, each after every node that consumes it.

    Iterative depth-first post-order: a BPTT graph of 100,000 steps would overflow
    Python's recursion limit. This is the order in which backward visits the nodes.
    """
    order = []
    seen = set()
    stack = [(c, False) for c in reversed(root_ctxs)]
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
            if isinstance(inp, TensorBase):
                c = inp._ctx
                if c is not None and c not in seen:
                    stack.append((c, False))
    order.reverse()  # consumers first
    return order


def run_backward(roots, grads, retain_graph=False, inputs=None, create_graph=False):
    """Propagate grads (arrays shaped like roots) from the root tensors through the graph.

    inputs None (Tensor.backward): accumulate into the .grad of every leaf that requires
    grad. inputs a sequence of tensors (autograd.grad): return {id(tensor): gradient}
    for those alone, leaving every .grad as it was.

    create_graph: run each backward rule on Tensors (tensor_xp.py), so that the gradients
    are Tensors with a graph of their own, differentiable again. Gradients are then Tensors
    throughout this walk instead of arrays.
    """
    if create_graph:
        from ..tensor_xp import backward_with_graph
        grads = [_tensor(g, r.device, None, 0) if not isinstance(g, TensorBase) else g
                 for r, g in zip(roots, grads)]
        produced = {}  # (node, output index) -> the output Tensor, as consumers show it
        for r in roots:
            if r._ctx is not None:
                produced[(r._ctx, r._index)] = r
    # pending[node]: the gradient of its output so far; for a multi-output node, a list
    # with one slot per output. Single-output nodes (nearly all) skip the list.
    pending = {}
    leaf_grads = {}  # summed as raw arrays, wrapped once at the end: a weight shared by T steps
    for root, grad in zip(roots, grads):
        c = root._ctx
        if c is None:
            if inputs is None or any(root is t for t in inputs):
                prev = leaf_grads.get(root)
                leaf_grads[root] = grad if prev is None else prev + grad
        elif c.out_meta is None and c not in pending:  # the usual root: a single-output node
            pending[c] = grad
        else:
            _add_pending(pending, c, root._index, grad)
    wanted = wanted_leaves = None
    if inputs is not None:
        wanted = {}  # node -> [(output index, tensor)]: the intermediate tensors asked for
        wanted_leaves = set()
        for t in inputs:
            if t._ctx is not None:
                wanted.setdefault(t._ctx, []).append((t._index, t))
            else:
                wanted_leaves.add(t)
    found = {} if inputs is not None else None
    order = _topological_order([r._ctx for r in roots if r._ctx is not None])
    needed = None
    if wanted is not None:
        # only the nodes on a path to an input asked for: the rest of the graph is not walked
        needed = set()
        for node in reversed(order):  # producers first
            if node in wanted or node.inputs is None or any(  # a freed node: walk it, to say so
                    isinstance(i, TensorBase) and ((i._ctx is None and i in wanted_leaves) or i._ctx in needed)
                    for i in node.inputs):
                needed.add(node)
    for node in order:
        grads_in = pending.pop(node, None)
        if grads_in is None or (needed is not None and node not in needed):
            continue  # reachable, but no gradient flows into it from the roots (or none is wanted from it)
        if node.inputs is None:
            raise RuntimeError(
                f"backward through {node.fn.__name__} a second time: its saved arrays were "
                f"freed after the first backward; pass retain_graph=True to the first call")
        xp = node.xp
        if node.out_meta is not None:
            for i, g in enumerate(grads_in):
                if g is None:  # an output nobody used: its gradient is zero
                    shape, dtype = node.out_meta[i]
                    grads_in[i] = xp.zeros(shape, dtype=dtype)
        if create_graph and node.out_meta is not None:
            grads_in = [g if isinstance(g, TensorBase) else _tensor(g, node.device, None, 0) for g in grads_in]
        if node.hooks or node.retained or wanted:
            grads_in = _observe(node, grads_in, wanted, found)
        if create_graph:
            outs = [produced.get((node, i)) for i in range(1 if node.out_meta is None else len(node.out_meta))]
            in_grads = backward_with_graph(node, [grads_in] if node.out_meta is None else grads_in, outs)
        elif node.out_meta is None:
            in_grads = node.fn.backward(node, grads_in)
        else:
            in_grads = node.fn.backward(node, *grads_in)
        if type(in_grads) is not tuple:
            in_grads = (in_grads,)
        if _anomaly:
            _check_finite(node, in_grads)
        for inp, g, need in zip(node.inputs, in_grads, node.needs_input_grad):
            if not need or g is None:
                continue
            data = inp.data
            if create_graph:
                if tuple(g.shape) != tuple(data.shape):
                    g = unbroadcast(TensorNamespace(node.device), g, tuple(data.shape))
                if g.dtype is not inp.dtype:
                    g = g.to(inp.dtype)
                if inp._ctx is not None:
                    produced[(inp._ctx, inp._index)] = inp
            else:
                if g.shape != data.shape:
                    g = unbroadcast(xp, g, data.shape)
                dt = data.dtype
                if g.dtype != dt:
                    g = xp.astype(g, dt)
            c = inp._ctx
            # sums are out of place: g may be the very array another branch holds
            if c is None:
                if wanted is None or inp in wanted_leaves:
                    prev = leaf_grads.get(inp)  # keyed by identity: Tensor hashes as an object
                    leaf_grads[inp] = g if prev is None else prev + g
            else:
                _add_pending(pending, c, inp._index, g)
        if not retain_graph:
            node.inputs = None
            node.saved_tensors = None
            node.__dict__.clear()
    for leaf, g in leaf_grads.items():
        if leaf._hooks:
            g = _run_hooks(leaf._hooks, g, leaf.device, "a leaf")
        if wanted is None:
            leaf._accumulate(g)
        else:
            found[id(leaf)] = g
    return found


def TensorNamespace(device):  # noqa: N802  (a class, imported lazily: tensor_xp imports the ops)
    from ..tensor_xp import TensorNamespace as cls
    return cls(device)


def _observe(node, grads_in, wanted, found):
    """What watches a node's output gradients before its backward runs: hooks (which may
    replace them), retain_grad, and autograd.grad's intermediate inputs."""
    single = node.out_meta is None
    gs = [grads_in] if single else grads_in
    if node.hooks:
        for i, fns in node.hooks.items():
            gs[i] = _run_hooks(fns, gs[i], node.device, node.fn.__name__)
    if node.retained and wanted is None:
        for i, ref in node.retained.items():
            t = ref()
            if t is not None:
                t._accumulate(gs[i])  # like a leaf's, .grad adds up over backward calls
    if wanted and node in wanted:
        for i, t in wanted[node]:
            found[id(t)] = gs[i]
    return gs[0] if single else gs


def _add_pending(pending, c, index, g):
    if c.out_meta is None:
        prev = pending.get(c)
        pending[c] = g if prev is None else prev + g
    else:
        slots = pending.get(c)
        if slots is None:
            slots = pending[c] = _empty_slots(c)
        prev = slots[index]
        slots[index] = g if prev is None else prev + g


def _run_hooks(fns, g, device, where):
    """Each hook in registration order sees the gradient so far and may return a replacement."""
    for fn in list(fns.values()):
        res = fn(g if isinstance(g, TensorBase) else _tensor(g, device, None, 0))
        if res is None:
            continue
        if not isinstance(res, TensorBase):
            raise TypeError(f"hook {getattr(fn, '__name__', fn)!r} on the gradient of {where} returned a "
                            f"{type(res).__name__}; a hook returns a Tensor or None")
        if tuple(res.shape) != tuple(g.shape) or res.device is not device:
            raise ShapeError(f"hook {getattr(fn, '__name__', fn)!r} on the gradient of {where} returned shape "
                             f"{fmt_shape(res.shape)} on {res.device.name}; the gradient has shape "
                             f"{fmt_shape(g.shape)} on {device.name}")
        g = res if isinstance(g, TensorBase) else res.data
    return g


def _check_finite(node, in_grads):
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


def _empty_slots(ctx):
    return [None] if ctx.out_meta is None else [None] * len(ctx.out_meta)


def retain(tensor):
    """Ask the engine to store tensor.grad for a non-leaf tensor (see Tensor.retain_grad)."""
    ctx = tensor._ctx
    if ctx.retained is None:
        ctx.retained = {}
    ctx.retained[tensor._index] = weakref.ref(tensor)


