"""Gradient clipping: `clip_grad_norm_` and `clip_grad_value_` (PyTorch's `torch.nn.utils`).

Both replace `p.grad` with a new tensor instead of writing into `p.grad.data`: the
engine may hand the same gradient array to several leaves (see Tensor._accumulate),
so an in-place write would clip one parameter's gradient through another's.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend as B
from ...errors import ShapeError, TinygradError, fmt_shape
from ...tensor import Tensor, concat
from . import rnn  # noqa: F401  (nn.utils.rnn, as in PyTorch)


class NonFiniteNormError(TinygradError, RuntimeError):
    """clip_grad_norm_ found a NaN or infinite gradient norm (the message names the parameters)."""


def _with_grads(op, parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    out = []
    for i, p in enumerate(parameters):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: parameter {i} is a {type(p).__name__}, not a Tensor")
        if p.grad is not None:
            out.append((i, p))
    return out


def _norm_type(norm_type):
    if isinstance(norm_type, str) and norm_type.lower() == "inf":
        return math.inf
    p = float(norm_type)
    if not (p > 0):
        raise ValueError(f"clip_grad_norm_: norm_type must be positive or inf, got {norm_type!r}")
    return p


def _tensor_norm(xp, g, p):
    """The p-norm of one array, on its device, scaled by its largest magnitude so that
    squaring a float32 gradient above ~1e19 does not overflow. NaN and inf propagate:
    a NaN anywhere gives NaN, otherwise an inf gives inf."""
    a = xp.abs(g)
    m = xp.max(a) if g.size else xp.zeros((), dtype=g.dtype)
    if p == math.inf:
        return m
    ok = xp.logical_and(xp.isfinite(m), m > 0)
    scale = xp.where(ok, m, xp.ones((), dtype=g.dtype))
    s = a / scale
    inner = xp.sum(s * s) if p == 2.0 else xp.sum(s) if p == 1.0 else xp.sum(s ** p)
    rooted = xp.sqrt(inner) if p == 2.0 else inner if p == 1.0 else inner ** (1.0 / p)
    return xp.where(ok, scale * rooted, m)


def _combine(norms, p):
    """The p-norm of the per-tensor norms (host floats), scaled against overflow."""
    if not norms:
        return 0.0
    if any(math.isnan(n) for n in norms):
        return math.nan
    m = max(norms)
    if p == math.inf or m == 0.0 or math.isinf(m):
        return m
    return m * sum((n / m) ** p for n in norms) ** (1.0 / p)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=True, *, sync=True):
    """Scale the gradients of `parameters` together so that their total norm is at most max_norm.

    The total norm is the norm_type-norm of all gradients concatenated into one vector
    (norm_type: any p > 0, or inf). Where it exceeds max_norm, every gradient is
    multiplied by max_norm / (total_norm + 1e-6), as in PyTorch. Parameters without a
    gradient are skipped. Returns the total norm before clipping, as a Python float.

    A NaN or infinite total norm raises NonFiniteNormError naming the parameters whose
    gradients are not finite, so NaN never reaches the weights. With
    error_if_nonfinite=False the non-finite norm is returned and the gradients are
    left untouched (unlike PyTorch, which scales them by it and so writes NaN); the
    caller decides whether to skip the step.

    sync=False (the project's own; for GPUs, where reading a number back waits for the
    device): nothing is read back. The gradients are clipped in one fused pass (_clip_fused)
    and the total norm is returned as a 0-d Tensor on their device, for the caller to read
    when it synchronises anyway. A non-finite norm then leaves the gradients untouched, as
    error_if_nonfinite=False does, which therefore must be passed: checking is the caller's.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm >= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be a non-negative number, got {max_norm!r}")
    p = _norm_type(norm_type)
    items = _with_grads("clip_grad_norm_", parameters)
    if not sync:
        if error_if_nonfinite:
            raise ValueError("clip_grad_norm_: sync=False reads no value back, so it cannot raise on a non-finite "
                             "norm; pass error_if_nonfinite=False and check the norm it returns yourself")
        return _clip_fused(items, float(max_norm), p)
    # one host transfer per device, not one per parameter (each is a GPU sync)
    per_device = {}
    for i, t in items:
        per_device.setdefault(t.device, []).append((i, t))
    norms = {}
    for dev, group in per_device.items():
        xp, f64 = dev.xp, dev.native(B.float64)
        vals = xp.stack([xp.astype(_tensor_norm(xp, t.grad.data, p), f64) for _, t in group])
        for (i, _), v in zip(group, np.asarray(dev.to_host(vals), dtype=np.float64).tolist()):
            norms[i] = v
    total = _combine([norms[i] for i, _ in items], p)
    if not math.isfinite(total):
        if error_if_nonfinite:
            bad = [f"parameter {i} of shape {fmt_shape(t.shape)} ({'nan' if math.isnan(norms[i]) else 'inf'})"
                   for i, t in items if not math.isfinite(norms[i])]
            raise NonFiniteNormError(
                f"clip_grad_norm_: the total {_norm_name(p)} of the gradients is {total}, so they cannot be "
                f"clipped; non-finite gradients in: {', '.join(bad)}. The weights were not touched. Look "
                f"for an overflow or a log/division of zero in the forward pass, or pass "
                f"error_if_nonfinite=False to get the norm back and skip the step yourself.")
        return total
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for _, t in items:
            g = t.grad
            t.grad = Tensor._make(g.data * coef, g.device, None, 0)
    return total


def _clip_fused(items, max_norm, p):
    """clip_grad_norm_(sync=False): every gradient copied into one flat buffer, its norm, and
    the buffer scaled by min(1, max_norm / (norm + 1e-6)) (1 where the norm is not finite)
    as one product; the new gradients are views of it. A fixed handful of kernels whatever
    the number of parameters, where the per-parameter form runs about ten each, and no value
    leaves the device. Returns the total norm as a 0-d Tensor."""
    devices = {t.device for _, t in items}
    if len(devices) > 1:
        raise ValueError(f"clip_grad_norm_: sync=False needs every gradient on one device, they are on "
                         f"{', '.join(sorted(d.name for d in devices))}")
    if not items:
        dev = B.get_default_device()
        return Tensor._make(dev.xp.zeros((), dtype=dev.native(B.get_default_dtype())), dev, None, 0)
    dev = items[0][1].device
    xp = dev.xp
    grads = [t.grad.data for _, t in items]
    flat = xp.concat([xp.reshape(g, (-1,)) for g in grads])  # a new array: written in place below
    total = _tensor_norm(xp, flat, p)
    coef = xp.minimum(max_norm / (total + 1e-6), xp.ones((), dtype=flat.dtype))
    coef = xp.where(xp.isfinite(total), coef, xp.ones((), dtype=flat.dtype))
    flat *= coef
    start = 0
    for (_, t), g in zip(items, grads):
        view = xp.reshape(flat[start:start + g.size], g.shape)
        start += g.size
        if view.dtype != g.dtype:
            view = xp.astype(view, g.dtype)
        t.grad = Tensor._make(view, dev, None, 0)
    return Tensor._make(total, dev, None, 0)


def _norm_name(p):
    return "inf-norm" if p == math.inf else f"{p:g}-norm"


def clip_grad_value_(parameters, clip_value) -> None:
    """Clip every gradient elementwise into [-clip_value, clip_value] (min-char-rnn's np.clip).

    Parameters without a gradient are skipped. NaN stays NaN (as in np.clip and PyTorch).
    """
    if isinstance(clip_value, bool) or not isinstance(clip_value, (int, float)) or not clip_value >= 0:
        raise ValueError(f"clip_grad_value_: clip_value must be a non-negative number, got {clip_value!r}")
    c = float(clip_value)
    for _, t in _with_grads("clip_grad_value_", parameters):
        g = t.grad
        t.grad = Tensor._make(g.device.xp.clip(g.data, -c, c), g.device, None, 0)


__all__ = ["clip_grad_norm_", "clip_grad_value_", "NonFiniteNormError", "parameters_to_vector",
           "vector_to_parameters"]


# ----------------------------------------------------------------------------- parameters as one vector


def parameters_to_vector(parameters) -> Tensor:
    """All parameters flattened and concatenated into one 1-D tensor, in order (PyTorch's
    parameters_to_vector). Differentiable: a reshape and a concat, so a gradient with respect
    to the vector reaches each parameter. All must be on one device."""
    params = _vector_params("parameters_to_vector", parameters)
    if not params:
        raise ValueError("parameters_to_vector: no parameters given")
    return concat([p.reshape(-1) for p in params], axis=0)


def vector_to_parameters(vec, parameters) -> None:
    """Copy the consecutive slices of the 1-D tensor vec into the parameters, in place, each
    cast to its parameter's dtype (PyTorch's vector_to_parameters). No graph is recorded and
    the parameters' arrays stay the same objects, so an optimizer or a tied weight sees the
    new values. vec must hold exactly as many elements as the parameters together."""
    op = "vector_to_parameters"
    if not isinstance(vec, Tensor):
        raise TypeError(f"{op}: expected a Tensor for vec, got {type(vec).__name__}")
    params = _vector_params(op, parameters, vec.device)
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.shape[0] != total:
        raise ShapeError(f"{op}: vec must be 1-D with {total} elements (the parameters' "
                         f"{', '.join(fmt_shape(p.shape) for p in params) or 'none'}), got shape {fmt_shape(vec.shape)}")
    xp, start = vec.device.xp, 0
    for p in params:
        n = p.numel()
        piece = xp.reshape(vec.data[start:start + n], p.shape)
        p.data[...] = xp.astype(piece, p.data.dtype)
        start += n


def _vector_params(op, parameters, device=None):
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for i, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: parameter {i} is a {type(p).__name__}, not a Tensor")
        device = device or p.device
        if p.device is not device:
            raise RuntimeError(f"{op}: parameter {i} of shape {fmt_shape(p.shape)} is on {p.device.name}, "
                              f"but {'vec' if op == 'vector_to_parameters' else 'parameter 0'} is on "
                              f"{device.name}; move them to one device first")
    return params


