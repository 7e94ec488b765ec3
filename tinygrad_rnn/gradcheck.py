"""Numerical gradient checks: the public tool for testing ops, cells and layers.

`gradcheck(fn, inputs)` compares the gradient that backward computes with central
differences, in float64:

- full mode (default): for one random upstream gradient v, every element of
  v^T J (the vector-Jacobian product backward computes) against
  (f(x + eps e_i) - f(x - eps e_i)) / 2 eps, where f(x) = <v, fn(x)>;
- fast mode (`fast_mode=True`, Chainer's check_backward, PyTorch's fast_mode): one
  random direction u for all inputs at once: <backward, u> against
  (f(x + eps u) - f(x - eps u)) / 2 eps. Two extra forward passes, whatever the size.

`gradgradcheck(fn, inputs)` checks second derivatives, after first comparing the first
derivative that create_graph=True computes (each backward rule run on Tensors) with the
plain one (the same rules on arrays); `create_graph_disagreements(fn, inputs)` names the
ops whose rule gives other numbers one way than the other.
"""
from __future__ import annotations

import numpy as np

from .autograd import enable_grad, grad, no_grad, unbroadcast
from .backend import float64
from .tensor import Tensor
from .tensor_xp import backward_with_graph


class GradcheckError(AssertionError):
    pass


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _outputs(fn, inputs):
    outs = _as_tuple(fn(*inputs))
    for i, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: output {i} of fn is a {type(o).__name__}, not a Tensor")
    return outs


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
              fast_mode=False, seed=0) -> bool:
    """Check the gradients of fn(*inputs) w.r.t. every input Tensor that requires grad.

    inputs: a Tensor or a sequence (non-Tensors are passed through). The checked
    inputs must be float64 leaves. On a mismatch, raises GradcheckError naming the
    input, the element, the analytic and numeric values (or returns False when
    raise_exception=False).
    """
    inputs = _as_tuple(inputs)
    checked = _checked_inputs(inputs)
    rng = np.random.default_rng(seed)
    vs, analytic = _analytic_vjp(fn, inputs, checked, rng)
    f = _projected(fn, inputs, vs)
    if fast_mode:
        failures = _fast_mode_failures(f, inputs, checked, analytic, rng, eps, atol, rtol)
    else:
        failures = _full_mode_failures(f, inputs, checked, analytic, eps, atol, rtol)
    if failures:
        if raise_exception:
            raise GradcheckError("gradcheck failed: " + " | ".join(failures) +
                                 f" (eps={eps}, atol={atol}, rtol={rtol})")
        return False
    return True


def _checked_inputs(inputs):
    """The indices of the inputs that require grad, each a float64 leaf (or an error saying why not)."""
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; nothing to check")
    for i in checked:
        x = inputs[i]
        if x.dtype is not float64:
            raise TypeError(f"gradcheck: input {i} is {x.dtype.name}; numerical checks need float64 "
                            f"(make it with dtype=tg.float64)")
        if not x.is_leaf:
            raise ValueError(f"gradcheck: input {i} is not a leaf tensor; pass leaves (e.g. x.detach().requires_grad_())")
    return checked


def _analytic_vjp(fn, inputs, checked, rng):
    """(vs, {i: the gradient of <v, fn(x)> w.r.t. input i, by backward}) for random vs, one per
    output; the inputs' own .grad are put back as they were."""
    outs = _outputs(fn, inputs)
    vs = [rng.standard_normal(o.shape) for o in outs]
    saved = {i: inputs[i].grad for i in checked}
    for i in checked:
        inputs[i].grad = None
    try:
        live = [(o, v) for o, v in zip(outs, vs) if o.requires_grad]
        for k, (o, v) in enumerate(live):
            o.backward(Tensor(v, dtype=o.dtype, device=o.device), retain_graph=k < len(live) - 1)
        analytic = {i: (inputs[i].grad.numpy() if inputs[i].grad is not None else np.zeros(inputs[i].shape))
                    for i in checked}
    finally:
        for i in checked:
            inputs[i].grad = saved[i]
    return vs, analytic


def _projected(fn, inputs, vs):
    """f() = <v, fn(inputs)> at the inputs' current values, as a float, without a graph."""
    def f():
        with no_grad():
            return sum(float(np.sum(o.numpy().astype(np.float64) * v)) for o, v in zip(_outputs(fn, inputs), vs))
    return f


def _shifted(x, delta):
    """Move x's values by delta in place; returns the original data, to put back."""
    orig = x.data
    x.data = x.device.from_host(x.numpy() + delta, x.dtype)
    return orig


def _difference(f, inputs, plus, minus):
    """f(x + plus) - f(x + minus): every inputs[i] named in plus (then in minus) moved by its
    delta at once, and put back after each evaluation."""
    origs = {i: _shifted(inputs[i], d) for i, d in plus.items()}
    fp = f()
    for i in plus:
        inputs[i].data = origs[i]
    origs = {i: _shifted(inputs[i], d) for i, d in minus.items()}
    fm = f()
    for i in minus:
        inputs[i].data = origs[i]
    return fp - fm


def _fast_mode_failures(f, inputs, checked, analytic, rng, eps, atol, rtol):
    """The derivative along one random direction u of all inputs together: <analytic, u> against
    central differences of f along u."""
    us = {i: rng.standard_normal(inputs[i].shape) for i in checked}
    numeric = _difference(f, inputs, {i: eps * us[i] for i in checked},
                                  {i: -eps * us[i] for i in checked}) / (2 * eps)
    a = float(sum(np.sum(analytic[i] * us[i]) for i in checked))
    if not abs(a - numeric) <= atol + rtol * abs(numeric):
        return [f"directional derivative along a random direction: analytic {a:.10g}, "
                f"numeric {numeric:.10g}, |diff| {abs(a - numeric):.3g}"]
    return []


def _full_mode_failures(f, inputs, checked, analytic, eps, atol, rtol):
    """Every element of every checked input's gradient against its own central difference;
    one message per input with mismatches, naming the five worst elements."""
    failures = []
    for i in checked:
        x = inputs[i]
        num = np.zeros(x.shape)
        for j in np.ndindex(*x.shape):
            e = np.zeros(x.shape)
            e[j] = eps
            num[j] = _difference(f, inputs, {i: e}, {i: -e}) / (2 * eps)
        a = analytic[i]
        bad = ~(np.abs(a - num) <= atol + rtol * np.abs(num))
        if bad.any():
            idx = [tuple(int(k) for k in t) for t in np.argwhere(bad)]
            worst = sorted(idx, key=lambda t: -abs(a[t] - num[t]))[:5]
            rows = "; ".join(f"element {t}: analytic {a[t]:.10g}, numeric {num[t]:.10g}" for t in worst)
            failures.append(f"input {i} (shape {x.shape}): {len(idx)} of {num.size} elements differ; {rows}")
    return failures


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
                  fast_mode=False, seed=0) -> bool:
    """Check second derivatives of fn(*inputs): gradcheck of the first derivatives.

    The first derivatives are the vector-Jacobian product G(x) = v^T J_fn(x) for fixed
    random v (or grad_outputs), computed by backward with create_graph=True. Trust first:
    G is compared with the same product from a plain backward (which gradcheck holds to
    central differences), with gradcheck's tolerances; where they differ, the error names
    the ops whose backward rule gives other numbers on Tensors than on arrays (a wrong
    mapping in the tensor namespace, or a composed form that is not the op). Numerically
    differentiating a wrong G would agree with its own wrong derivative, so this comes
    first. Then G's own backward (the second-order pass) is checked against central
    differences of G, every element or (fast_mode) along one random direction, as in
    gradcheck. An op whose first derivative is right but whose backward is not
    differentiable as written (it used a value computed in forward as if it were a
    constant) fails there.
    """
    inputs = _as_tuple(inputs)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradgradcheck: no input requires grad; nothing to check")
    rng = np.random.default_rng(seed + 1)
    outs = _outputs(fn, inputs)
    if grad_outputs is None:
        vs = [Tensor(rng.standard_normal(o.shape), dtype=o.dtype, device=o.device) for o in outs]
    else:
        vs = list(_as_tuple(grad_outputs))
        if len(vs) != len(outs) or any(tuple(v.shape) != o.shape for v, o in zip(vs, outs)):
            raise ValueError(f"gradgradcheck: grad_outputs must be one tensor per output of fn, shaped like it: "
                             f"outputs {[o.shape for o in outs]}, got {[tuple(v.shape) for v in vs]}")

    def first_derivatives(*xs, create_graph=True):
        with enable_grad():
            os_ = _outputs(fn, xs)
            live = [(o, v) for o, v in zip(os_, vs) if o.requires_grad]
            targets = [xs[i] for i in checked]
            if not live:
                gs = [None] * len(targets)
            else:
                gs = grad([o for o, _ in live], targets, grad_outputs=[v for _, v in live],
                          create_graph=create_graph, allow_unused=True)
        # an input the outputs do not reach has a zero first derivative, with no graph
        return tuple(g if g is not None else Tensor(np.zeros(t.shape), dtype=t.dtype, device=t.device)
                     for g, t in zip(gs, targets))

    failures = _first_derivative_failures(fn, inputs, checked, first_derivatives, atol, rtol, seed)
    if failures:
        if raise_exception:
            raise GradcheckError("gradgradcheck (first derivatives, create_graph=True against the plain "
                                 "backward): " + " | ".join(failures) + f" (atol={atol}, rtol={rtol})")
        return False
    try:
        return gradcheck(first_derivatives, inputs, eps=eps, atol=atol, rtol=rtol, raise_exception=True,
                         fast_mode=fast_mode, seed=seed)
    except GradcheckError as e:
        if raise_exception:
            raise GradcheckError("gradgradcheck (second derivatives): " + str(e)) from None
        return False


def _differ(a, b, atol, rtol):
    """Where b is not within atol + rtol |a| of a (NaN in both places counts as agreeing)."""
    return ~((np.abs(b - a) <= atol + rtol * np.abs(a)) | (np.isnan(a) & np.isnan(b)))


def _worst(a, b, bad):
    """The element where a and b differ most, among those marked bad."""
    flat = int(np.argmax(np.where(bad, np.nan_to_num(np.abs(b - a), nan=np.inf), -1.0)))
    return tuple(int(k) for k in np.unravel_index(flat, a.shape))


def _first_derivative_failures(fn, inputs, checked, first_derivatives, atol, rtol, seed):
    """The first derivatives with create_graph=True against those of a plain backward, for the
    same v; where they differ, one message per input and one naming the ops that disagree."""
    graphed = first_derivatives(*inputs)
    plain = first_derivatives(*inputs, create_graph=False)
    failures = []
    for i, p, g in zip(checked, plain, graphed):
        p, g = p.numpy().astype(np.float64), g.numpy().astype(np.float64)
        bad = _differ(p, g, atol, rtol)
        if bad.any():
            w = _worst(p, g, bad)
            failures.append(f"input {i} (shape {inputs[i].shape}): {int(bad.sum())} of {p.size} elements differ; "
                            f"element {w}: create_graph {g[w]:.10g}, plain {p[w]:.10g}")
    if failures:
        culprits = create_graph_disagreements(fn, inputs, atol=atol, rtol=rtol, seed=seed)
        failures.append("the backward rules that give other numbers on Tensors than on arrays: " +
                        ("; ".join(culprits) if culprits else "none, node by node (the difference comes from "
                         "how the walk combines them)"))
    return failures


def create_graph_disagreements(fn, inputs, atol=1e-5, rtol=1e-3, seed=0) -> list:
    """Each op in the graph of fn(*inputs) whose backward rule gives other numbers as
    create_graph=True runs it (on Tensors, through tensor_xp's namespace, or the op's
    composed form) than as a plain backward runs it (on arrays), for the same random output
    gradients: one line per input gradient that differs, naming the op, the input and the
    worst element. An empty list: every rule agrees. Ops that refuse create_graph raise
    CreateGraphError, as create_graph itself would.
    """
    inputs = _as_tuple(inputs)
    rng = np.random.default_rng(seed)
    with enable_grad():
        outs = _outputs(fn, inputs)
        found = []
        for node, produced in _nodes_behind(outs):
            found += _rule_disagreements(node, produced, rng, atol, rtol)
    return found


def _nodes_behind(outs):
    """The nodes of the graph behind outs, each with those of its output Tensors the graph
    shows ({output index: Tensor}): a rule's saved outputs map back to them."""
    produced, order = {}, []
    stack = [o for o in outs if o._ctx is not None]
    while stack:
        t = stack.pop()
        node = t._ctx
        if node not in produced:
            produced[node] = {}
            order.append(node)
            stack.extend(i for i in node.inputs or () if isinstance(i, Tensor) and i._ctx is not None)
        produced[node].setdefault(t._index, t)
    return [(n, produced[n]) for n in order]


def _output_gradients(node, produced, rng):
    """Random gradients for the node's outputs (zeros for an output nobody used, or one that
    is not floating), as arrays and as Tensors holding the same values."""
    metas = node.out_meta or ((produced[0].shape, produced[0].data.dtype),)
    arrays, tensors = [], []
    for i, (shape, native) in enumerate(metas):
        dev = produced[i].device if i in produced else node.device
        g = dev.xp.zeros(shape, dtype=native)
        dt = dev.dtype_of(g)
        if i in produced and dt.is_floating:
            g = dev.from_host(rng.standard_normal(shape), dt)
        arrays.append(g)
        tensors.append(Tensor(g, dtype=dt, device=dev))
    return arrays, tensors


def _as_host(g, inp):
    """A rule's gradient for input inp as float64 NumPy in inp's shape (None: zeros), undoing
    broadcasting as the engine does."""
    shape = tuple(inp.shape)
    if g is None:
        return np.zeros(shape)
    a = g.numpy() if isinstance(g, Tensor) else np.asarray(inp.device.to_host(g) if hasattr(g, "shape") else g)
    a = a.astype(np.float64)
    if a.shape != shape:
        a = unbroadcast(np, np.broadcast_to(a, np.broadcast_shapes(a.shape, shape)), shape)
    return a


def _rule_disagreements(node, produced, rng, atol, rtol):
    """One node's backward rule run both ways on the same output gradients, compared."""
    arrays, tensors = _output_gradients(node, produced, rng)
    on_arrays = node.fn.backward(node, *arrays) if node.out_meta is not None else node.fn.backward(node, arrays[0])
    on_tensors = backward_with_graph(node, tensors, [produced.get(i) for i in range(len(tensors))])
    on_arrays = on_arrays if type(on_arrays) is tuple else (on_arrays,)
    on_tensors = on_tensors if type(on_tensors) is tuple else (on_tensors,)
    found = []
    for k, (need, inp) in enumerate(zip(node.needs_input_grad, node.inputs)):
        if not need:
            continue
        a, b = _as_host(on_arrays[k], inp), _as_host(on_tensors[k], inp)
        bad = _differ(a, b, atol, rtol)
        if bad.any():
            w = _worst(a, b, bad)
            found.append(f"{node.fn.__name__}: input {k} (shape {tuple(inp.shape)}): on Tensors {b[w]:.10g}, "
                         f"on arrays {a[w]:.10g} at element {w} ({int(bad.sum())} of {a.size} elements differ)")
    return found
