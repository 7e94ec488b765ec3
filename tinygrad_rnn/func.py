"""Function transforms with torch.func's shapes and semantics: grad, vjp, jvp, jacobian,
hessian and hvp, built on the engine's reverse mode (autograd.grad) and its gradients of
gradients (create_graph).

    import tinygrad_rnn as tg
    f = lambda x: (x.tanh() ** 2).sum()
    tg.func.grad(f)(x)                   # df/dx, shaped like x
    tg.func.hessian(f)(x)                # x.shape + x.shape
    out, jvp_out = tg.func.jvp(f, (x,), (v,))

Each transform takes the function's inputs as they are: they need not require grad, and
nothing is accumulated into any `.grad`. The result is differentiable with respect to an
input that an enclosing transform (or the caller) tracks, so transforms nest:
hessian(f) is jacobian(grad(f)). jvp uses the double-vjp trick (reverse mode twice).
"""
from __future__ import annotations

import numbers

from . import autograd
from .autograd import enable_grad
from .errors import ShapeError, StateDictError, fmt_shape
from .ops.shape import Alias
from .tensor import Tensor, stack, zeros_like

__all__ = ["grad", "grad_and_value", "vjp", "jvp", "jacobian", "jacrev", "hessian", "hvp"]


def _argnums(op, argnums, n):
    single = isinstance(argnums, numbers.Integral)
    nums = (argnums,) if single else tuple(argnums)
    if not nums:
        raise ValueError(f"{op}: argnums is empty")
    for a in nums:
        if not isinstance(a, numbers.Integral) or not -n <= a < n:
            raise ValueError(f"{op}: argnums {argnums!r} is out of range for a function called with {n} argument(s)")
    return single, tuple(a % n for a in nums)


def _track(op, args, nums):
    """(args with the differentiated ones as tensors of their own, still linked to any
    graph they have, so an outer transform differentiates through this one; whether any is
    so tracked)."""
    out = list(args)
    for a in nums:
        x = args[a]
        if not isinstance(x, Tensor):
            raise TypeError(f"{op}: argument {a} is a {type(x).__name__}; the differentiated arguments must be Tensors")
        if not x.dtype.is_floating:
            raise TypeError(f"{op}: argument {a} is {x.dtype.name}; only floating-point tensors can be differentiated")
        out[a] = Alias.apply(x) if x.requires_grad else x.detach().requires_grad_()
    # keep the graph of the result only where someone outside can differentiate it
    nested = autograd.is_grad_enabled() and any(args[a].requires_grad for a in nums)
    return out, nested


def _vjp_at(outs, inputs, cotangents, create_graph):
    live = [(o, c) for o, c in zip(outs, cotangents) if o.requires_grad]
    if not live:
        return tuple(zeros_like(x) for x in inputs)
    gs = autograd.grad([o for o, _ in live], inputs, grad_outputs=[c for _, c in live], retain_graph=True,
                       create_graph=create_graph, allow_unused=True)
    return tuple(g if g is not None else zeros_like(x) for g, x in zip(gs, inputs))


def grad_and_value(f, argnums=0, has_aux=False):
    """Like grad, returning (gradient, value) (or ((gradient), (value, aux)) with has_aux)."""
    def wrapper(*args):
        single, nums = _argnums("grad", argnums, len(args))
        xs, nested = _track("grad", args, nums)
        with enable_grad():
            res = f(*xs)
        out, aux = (res if has_aux else (res, None))
        if has_aux and not (isinstance(res, tuple) and len(res) == 2):
            raise TypeError("grad: with has_aux=True, f must return a pair (output, aux)")
        if not isinstance(out, Tensor) or out.numel() != 1:
            shape = fmt_shape(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(f"grad: f must return a one-element tensor (a scalar), got {shape}; "
                             f"use jacobian or vjp for other outputs")
        gs = _vjp_at([out], [xs[a] for a in nums], [None], nested) if out.requires_grad else \
            tuple(zeros_like(xs[a]) for a in nums)
        value = out if nested else out.detach()
        g = gs[0] if single else gs
        return (g, (value, aux)) if has_aux else (g, value)
    return wrapper


def grad(f, argnums=0, has_aux=False):
    """The gradient of a scalar-valued f with respect to its argument(s) argnums, as a
    function of the same arguments: shaped like that argument (a tuple for several)."""
    gv = grad_and_value(f, argnums, has_aux)

    def wrapper(*args):
        g, value = gv(*args)
        return (g, value[1]) if has_aux else g
    return wrapper


def vjp(f, *primals):
    """(f(*primals), vjp_fn), where vjp_fn(cotangents) returns one gradient per primal:
    the vector-Jacobian products. vjp_fn may be called any number of times."""
    nums = tuple(range(len(primals)))
    xs, nested = _track("vjp", primals, nums)
    with enable_grad():
        out = f(*xs)
    outs = out if isinstance(out, tuple) else (out,)

    def vjp_fn(*cotangents):
        if len(cotangents) == 1 and isinstance(cotangents[0], tuple) and isinstance(out, tuple):
            cotangents = cotangents[0]
        if len(cotangents) != len(outs):
            raise ValueError(f"vjp: {len(outs)} output(s) but {len(cotangents)} cotangent(s)")
        for k, (o, c) in enumerate(zip(outs, cotangents)):
            if not isinstance(c, Tensor) or tuple(c.shape) != o.shape:
                raise ShapeError(f"vjp: cotangent {k} must be a tensor of the output's shape {fmt_shape(o.shape)}, "
                                 f"got {fmt_shape(c.shape) if isinstance(c, Tensor) else type(c).__name__}")
        return _vjp_at(outs, xs, cotangents, nested or any(c.requires_grad for c in cotangents))

    shown = out if nested else (tuple(o.detach() for o in outs) if isinstance(out, tuple) else out.detach())
    return shown, vjp_fn


def jvp(f, primals, tangents):
    """(f(*primals), J @ tangents): the Jacobian-vector product, forward-mode's answer,
    computed by reverse mode twice (the vjp is linear in its cotangent u, so the vjp of
    u -> vjp(u) with the tangents is J t)."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primal(s) but {len(tangents)} tangent(s)")
    for k, (p, t) in enumerate(zip(primals, tangents)):
        if not isinstance(t, Tensor) or not isinstance(p, Tensor) or t.shape != p.shape:
            raise ShapeError(f"jvp: tangent {k} must be a tensor shaped like primal {k} "
                             f"{fmt_shape(p.shape) if isinstance(p, Tensor) else ''}, got "
                             f"{fmt_shape(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    nums = tuple(range(len(primals)))
    xs, nested = _track("jvp", primals, nums)
    nested = nested or any(t.requires_grad for t in tangents)
    with enable_grad():
        out = f(*xs)
    outs = out if isinstance(out, tuple) else (out,)
    us = [zeros_like(o).requires_grad_() for o in outs]  # dummy cotangents
    with enable_grad():
        gs = _vjp_at(outs, xs, us, True)  # linear in us
        pairs = [(g, t) for g, t in zip(gs, tangents) if g.requires_grad]
        if pairs:
            jts = autograd.grad([g for g, _ in pairs], us, grad_outputs=[t for _, t in pairs],
                                create_graph=nested, allow_unused=True)
        else:
            jts = [None] * len(us)
    jts = tuple(j if j is not None else zeros_like(o) for j, o in zip(jts, outs))
    shown = outs if nested else tuple(o.detach() for o in outs)
    return (shown, jts) if isinstance(out, tuple) else (shown[0], jts[0])


def jacobian(f, argnums=0):
    """The Jacobian of f with respect to argument(s) argnums, shaped output.shape +
    input.shape (reverse mode: one vjp per output element), like torch.func.jacrev."""
    def wrapper(*args):
        single, nums = _argnums("jacobian", argnums, len(args))
        xs, nested = _track("jacobian", args, nums)
        with enable_grad():
            out = f(*xs)
        if not isinstance(out, Tensor):
            raise TypeError(f"jacobian: f must return a Tensor, got {type(out).__name__}")
        inputs = [xs[a] for a in nums]
        xp, n = out.device.xp, out.numel()
        rows = []
        for i in range(n):
            e = xp.zeros((n,), dtype=out.data.dtype)
            e[i] = 1
            cot = Tensor._make(xp.reshape(e, out.data.shape), out.device, None, 0)
            rows.append(_vjp_at([out], inputs, [cot], nested))
        jac = []
        for k, x in enumerate(inputs):
            J = stack([r[k] for r in rows], axis=0) if rows else zeros_like(x).reshape(0, *x.shape)
            jac.append(J.reshape(*(out.shape + x.shape)) if out.shape + x.shape else J.reshape(()))
        jac = [j if nested else j.detach() for j in jac]
        return jac[0] if single else tuple(jac)
    return wrapper


jacrev = jacobian


def hessian(f, argnums=0):
    """The Hessian of a scalar-valued f: input.shape + input.shape (for several argnums, a
    nested tuple of blocks, as torch.func.hessian gives)."""
    def scalar_f(*args):
        out = f(*args)
        if not isinstance(out, Tensor) or out.numel() != 1:
            shape = fmt_shape(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(f"hessian: f must return a one-element tensor (a scalar), got {shape}")
        return out.reshape(())

    def wrapper(*args):
        single, nums = _argnums("hessian", argnums, len(args))
        g = grad(scalar_f, argnums=nums[0] if single else nums)
        if single:
            return jacobian(g, argnums=nums[0])(*args)
        return tuple(jacobian(lambda *a, k=k: g(*a)[k], argnums=nums)(*args) for k in range(len(nums)))
    return wrapper


def hvp(f, primals, tangents):
    """(f(*primals), H @ tangents) for a scalar-valued f, the second shaped like the primals
    (a tuple): the vjp of its gradient (the Hessian is symmetric), without forming H."""
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"hvp: {len(primals)} primal(s) but {len(tangents)} tangent(s)")
    nums = tuple(range(len(primals)))
    xs, nested = _track("hvp", primals, nums)
    with enable_grad():
        out = f(*xs)
        if not isinstance(out, Tensor) or out.numel() != 1:
            shape = fmt_shape(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ShapeError(f"hvp: f must return a one-element tensor (a scalar), got {shape}")
        gs = _vjp_at([out], xs, [None], True)
        for k, (g, t) in enumerate(zip(gs, tangents)):
            if not isinstance(t, Tensor) or t.shape != g.shape:
                raise ShapeError(f"hvp: tangent {k} must be a tensor shaped like primal {k} {fmt_shape(g.shape)}")
        pairs = [(g, t) for g, t in zip(gs, tangents) if g.requires_grad]
        hv = autograd.grad([g for g, _ in pairs], xs, grad_outputs=[t for _, t in pairs], create_graph=nested,
                           allow_unused=True) if pairs else [None] * len(xs)
    hv = tuple(h if h is not None else zeros_like(x) for h, x in zip(hv, xs))
    return (out if nested else out.detach()), hv  # like the primals: a tuple



# ----------------------------------------------------------------------------- functional_call
_ABSENT = object()


def functional_call(module, parameter_and_buffer_dicts, args=(), kwargs=None, *, tie_weights=True, strict=False):
    """module(*args, **kwargs) with the given tensors in place of its parameters and buffers,
    named as by named_parameters() ('lstm.weight_ih_l0'), as torch.func.functional_call does.
    The module's own tensors are put back afterwards, even when the call raises; gradients
    flow to the given tensors, and nothing reaches the module's own .grad.

    parameter_and_buffer_dicts: a dict {name: Tensor}, or a tuple of them (no name in two).
    args: a tuple of positional arguments, or a single one. tie_weights: a tensor that the
    module registers under several names (a tied embedding and output weight) is replaced
    under all of them by the one given; two different tensors for it are an error. strict:
    every parameter and buffer must be given, and nothing else; without it a given name that
    the module does not register is set as a plain attribute for the call.

    The module is duck-typed (named_modules, named_parameters, named_buffers and each
    module's _parameters and _buffers dicts, as both this package's nn and PyTorch have them),
    so func needs nothing from nn."""
    given = _given_tensors(parameter_and_buffer_dicts)
    every = _registered(module)
    assigned, unexpected = {}, []  # (id of store, key) -> (store, key, tensor, given name)
    for name, t in given.items():
        try:
            store, key, registered = _resolve(module, name)
        except AttributeError:
            if not strict:
                raise
            unexpected.append(name)
            continue
        if not registered:
            unexpected.append(name)
        orig = store.get(key, _ABSENT)
        targets = [(s, k) for s, k in every.values() if s[k] is orig] if registered and tie_weights else [(store, key)]
        for s, k in targets:
            prev = assigned.setdefault((id(s), k), (s, k, t, name))
            if prev[2] is not t:
                raise ValueError(f"functional_call: {prev[3]!r} and {name!r} name one tensor of the module (tied) "
                                 f"but were given two different tensors; give one of them"
                                 + (", or pass tie_weights=False" if tie_weights else ""))
    if strict:
        required = [n for n, _ in list(module.named_parameters()) + list(module.named_buffers())]
        problems = ([f"missing {n!r}" for n in required if (id(every[n][0]), every[n][1]) not in assigned]
                    + [f"unexpected {n!r}" for n in unexpected])
        if problems:
            raise StateDictError(f"functional_call for {type(module).__name__} with strict=True: " + "; ".join(problems))
    swaps = [(s, k, s.get(k, _ABSENT), t) for s, k, t, _ in assigned.values()]
    args = args if isinstance(args, tuple) else (args,)
    try:
        for s, k, _, t in swaps:
            s[k] = t
        return module(*args, **(kwargs or {}))
    finally:
        for s, k, orig, _ in reversed(swaps):
            if orig is _ABSENT:
                s.pop(k, None)
            else:
                s[k] = orig  # the key is still there: the dict keeps its order, so named_parameters() does


def _given_tensors(dicts):
    ds = (dicts,) if isinstance(dicts, dict) else tuple(dicts) if isinstance(dicts, (tuple, list)) else None
    if ds is None or not all(isinstance(d, dict) for d in ds):
        raise TypeError(f"functional_call: expected a dict of tensors by name (or a tuple of dicts), "
                        f"got {type(dicts).__name__}")
    out = {}
    for d in ds:
        for name, t in d.items():
            if name in out:
                raise ValueError(f"functional_call: {name!r} is given in more than one dict")
            if not isinstance(name, str) or not isinstance(t, Tensor):
                raise TypeError(f"functional_call: {name!r} is given a {type(t).__name__}; give Tensors by "
                                f"their dotted names (tg.tensor(array) makes a Tensor of an array)")
            out[name] = t
    return out


def _registered(module):
    """{dotted name: (store, key)} of every parameter and buffer, under each name it is
    reachable by (a tensor tied between two modules appears under both)."""
    out = {}
    for prefix, m in module.named_modules():
        for store in (m._parameters, m._buffers):
            for k, v in store.items():
                if v is not None:
                    out[f"{prefix}.{k}" if prefix else k] = (store, k)
    return out


def _resolve(module, name):
    """(store, key, registered): the dict that holds `name`'s tensor (a _parameters or
    _buffers dict, or for an unregistered name the owning module's attribute dict)."""
    owner = module
    *path, key = name.split(".")
    for i, part in enumerate(path):
        sub = owner._modules.get(part) if hasattr(owner, "_modules") else None
        if sub is None:
            raise AttributeError(f"functional_call: {type(module).__name__} has no submodule "
                                 f"{'.'.join(path[:i + 1])!r} (for {name!r})")
        owner = sub
    for store in (owner._parameters, owner._buffers):
        if store.get(key) is not None:
            return store, key, True
    return vars(owner), key, False


__all__ += ["functional_call"]
