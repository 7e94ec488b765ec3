"""The heart of reverse-mode autodiff: `Function`, the graph it records, and the backward walk.

This file imports nothing above it: a node (`Context`) links to the tensors it was given, a
tensor (`TensorBase`) to the node that made it, and `run_backward` walks those links. What
the walk needs from above is registered here from above (tensor.py's Tensor factory,
tensor_xp.py's rules for create_graph) or handed in (autograd.grad's inputs, tools.py).

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

`Mul.apply(x, y)` runs `forward` on the arrays and, when grad mode is on and some input
requires grad, returns tensors whose `_ctx` is that call's `Context`: the graph node.
`backward` gets one gradient per output and returns one per input (None where
`ctx.needs_input_grad[i]` is False), possibly of the output's broadcast shape: the walk
reduces it to the input's shape in one place (`unbroadcast`).
"""
from __future__ import annotations

from ..errors import TinygradError, annotate

_grad_enabled = True  # no_grad() turns it off (tools.py)
_anomaly = None  # detect_anomaly() puts its checks here (tools.py): where each node was made, finite gradients


class TensorBase:
    """What the engine knows of a tensor: its array, its device, and where in the graph it
    came from (`_ctx`, the node that made it, and `_index`, which of that node's outputs it
    is; a leaf has no node). tensor.Tensor adds the operator sugar and the methods."""

    __slots__ = ("data", "device", "requires_grad", "grad", "_ctx", "_index", "_hooks", "__weakref__")


def _tensor(data, device, ctx, index):
    """A new Tensor (tensor.py registers Tensor._make here)."""
    raise RuntimeError("tinygrad_rnn.tensor was not imported")


def _graph_rules(roots):
    """The rules of a create_graph walk, on Tensors (tensor_xp.py registers GraphRules here)."""
    raise RuntimeError("create_graph=True needs tinygrad_rnn.tensor_xp, which was not imported")


def register(tensor_factory=None, graph_rules=None):
    """How the layers above hand the engine what it needs of them (see the two above)."""
    global _tensor, _graph_rules
    _tensor = tensor_factory or _tensor
    _graph_rules = graph_rules or _graph_rules


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
        ctx = Context(device, tuple(needs))
        try:
            out = cls.forward(ctx, *raw, **kwargs)
        except TinygradError:
            raise
        except (ValueError, TypeError, IndexError) as e:
            raise annotate(e, cls.__name__, args, device) from e
        if not (_grad_enabled and True in needs):
            ctx = None  # nothing to differentiate: no node is recorded
        else:
            ctx.fn = cls
            ctx.inputs = args
            if _anomaly is not None:
                ctx.trace = _anomaly.where()
        if type(out) is tuple:
            if ctx is not None:
                ctx.out_meta = tuple((o.shape, o.dtype) for o in out)
            return tuple(_tensor(o, device, ctx, i) for i, o in enumerate(out))
        if ctx is not None:
            ctx.out_meta = None
        return _tensor(out, device, ctx, 0)


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


# ----------------------------------------------------------------------------- the backward walk
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
        for inp in node.inputs or ():
            if isinstance(inp, TensorBase):
                c = inp._ctx
                if c is not None and c not in seen:
                    stack.append((c, False))
    order.reverse()  # consumers first
    return order


def run_backward(roots, grads, retain_graph=False, want=None, create_graph=False):
    """Propagate grads (arrays shaped like roots) from the root tensors through the graph.

    want None (Tensor.backward): accumulate into the .grad of every leaf that requires grad.
    want given (autograd.grad's inputs, tools.Wanted): return {id(tensor): gradient} for
    those alone, leaving every .grad as it was. create_graph: gradients are Tensors and each
    rule runs on them (tensor_xp.GraphRules), so the result can be differentiated again.
    """
    rules = _graph_rules(roots) if create_graph else _ArrayRules
    pending, leaves = {}, {}  # node -> its output gradient(s) so far; leaf -> its gradient so far
    for root, g in zip(roots, grads):
        _send(pending, leaves, root, rules.seed(g, root) if create_graph else g)
    order = _topological_order([r._ctx for r in roots if r._ctx is not None])
    if want is not None:
        order = want.prune(order)
    for node in order:  # consumers first: all of a node's output gradient has arrived
        grads_in = pending.pop(node, None)
        if grads_in is None:
            continue  # reachable, but no gradient flows into it from the roots
        if node.out_meta is not None:
            _fill_unused(node, grads_in, rules)
        if node.hooks or node.retained or want is not None:
            grads_in = _observe(node, grads_in, want)
        in_grads = rules.call(node, grads_in)
        if _anomaly is not None:
            _anomaly.check(node, in_grads)
        for inp, g, need in zip(node.inputs, in_grads, node.needs_input_grad):
            if need and g is not None:
                if create_graph or g.shape != inp.data.shape or g.dtype != inp.data.dtype:
                    g = rules.fit(g, inp)  # to the input's shape and dtype (undo broadcasting)
                _send(pending, leaves, inp, g)
        if not retain_graph:  # free what forward saved as soon as it has served
            node.inputs = node.saved_tensors = None
            node.__dict__.clear()
    return _deliver(leaves, want)


class _ArrayRules:
    """A first-order walk: each rule runs on raw arrays, with no graph and no overhead."""

    @staticmethod
    def seed(grad, owner):  # owner: the root or node the gradient belongs to
        return grad

    @staticmethod
    def call(node, grads_in):
        out = node.fn.backward(node, grads_in) if node.out_meta is None else node.fn.backward(node, *grads_in)
        return out if type(out) is tuple else (out,)

    @staticmethod
    def fit(g, inp):  # the gradient in its input's shape and dtype
        data = inp.data
        if g.shape != data.shape:
            g = unbroadcast(inp.device.xp, g, data.shape)
        if g.dtype != data.dtype:
            g = inp.device.xp.astype(g, data.dtype)
        return g


def _send(pending, leaves, t, g):
    """Add g to the gradient tensor t has received so far: its node's slot, or its own as a
    leaf. Sums are out of place: g may be the very array another branch holds."""
    c = t._ctx
    if c is None:
        prev = leaves.get(t)  # keyed by identity: Tensor hashes as an object
        leaves[t] = g if prev is None else prev + g
        return
    if c.inputs is None:
        raise RuntimeError(f"backward through {c.fn.__name__} a second time: its saved arrays were freed "
                           f"after the first backward; pass retain_graph=True to the first call")
    if c.out_meta is None:  # nearly every node has one output: no slot list
        prev = pending.get(c)
        pending[c] = g if prev is None else prev + g
    else:
        slots = pending.get(c)
        if slots is None:
            slots = pending[c] = [None] * len(c.out_meta)
        prev = slots[t._index]
        slots[t._index] = g if prev is None else prev + g


def _fill_unused(node, grads_in, rules):  # an output nobody used has gradient zero
    for i, g in enumerate(grads_in):
        if g is None:
            shape, dtype = node.out_meta[i]
            grads_in[i] = rules.seed(node.xp.zeros(shape, dtype=dtype), node)


def _deliver(leaves, want):
    """The leaves' gradients, after their hooks: into .grad, or those asked for to autograd.grad."""
    for leaf, g in leaves.items():
        if want is not None and leaf not in want.leaves:
            continue
        if leaf._hooks:
            g = leaf._hooks.run(g, leaf.device, "a leaf")
        if want is None:
            leaf._accumulate(g)
        else:
            want.found[id(leaf)] = g
    return None if want is None else want.found


def _observe(node, grads_in, want):
    """What watches a node's output gradients before its rule runs: hooks (tools.HookTable;
    they may replace them), retain_grad, and autograd.grad's intermediate inputs."""
    gs = [grads_in] if node.out_meta is None else grads_in
    for i, table in (node.hooks or {}).items():
        gs[i] = table.run(gs[i], node.device, node.fn.__name__)
    if node.retained and want is None:
        for i, ref in node.retained.items():
            t = ref()
            if t is not None:
                t._accumulate(gs[i])  # like a leaf's, .grad adds up over backward calls
    if want is not None:
        want.take(node, gs)
    return gs[0] if node.out_meta is None else gs
