"""Optimizers with PyTorch's names, arguments and update formulas.

`step()` updates each parameter's backend array (`p.data`) in place through the array
namespace of the parameter's own device (`p.device.xp`): no graph is recorded, nothing
leaves the device, and the same code runs on NumPy, CuPy and array-api-strict.
Gradients are only read, never written: the engine may share one gradient array
between several leaves.

Because the update writes into `p.data`, any array that aliases it changes too (a
tensor made by `p.detach()`, or the NumPy array a CPU tensor was built from without
a copy), and a graph recorded before the step must not be backpropagated after it.

State dicts follow PyTorch's layout,
    {"state": {index: {"step": int, "exp_avg": ndarray, ...}},
     "param_groups": [{"lr": 0.001, ..., "params": [index, ...]}]},
holding only NumPy arrays and Python numbers. `flatten_state_dict` turns one into
{"state.0.exp_avg": ndarray, "param_groups.0.lr": 0.001, ...}, which `np.savez` stores
without pickle; `load_state_dict` accepts either form and restores the state exactly,
so training on the CPU resumes bit for bit.
"""
from __future__ import annotations

import math

import numpy as np

from ..autograd import enable_grad
from ..kernels import Kernel, for_device
from ..errors import DTypeError, StateDictError, fmt_shape
from ..tensor import Tensor


class Optimizer:
    """Base class: parameter groups, zero_grad, step, and state dicts.

    A subclass passes its hyperparameter defaults to __init__ and defines the update
    `_update(xp, p, g, group, state)` on raw arrays; where it keeps state, also the
    state a parameter starts with (`_init_state`) and the state keys that
    load_state_dict must find (`_state_keys(group)`); where it has extra constraints on
    hyperparameters, `_validate(group)`.
    """

    def __init__(self, params, defaults):
        name = type(self).__name__
        self.defaults = dict(defaults)
        self.state = {}  # Parameter -> {"step": int, name: backend array}
        self.param_groups = []
        # optimizers need parameters, not modules: a module is recognised by its parameters() alone
        if isinstance(params, Tensor) or hasattr(params, "named_parameters") or not hasattr(params, "__iter__"):
            raise TypeError(f"{name}: params must be an iterable of Tensors or of dicts (param groups), "
                            f"e.g. model.parameters(); got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if all(isinstance(g, dict) for g in groups):
            for g in groups:
                self.add_param_group(g)
        elif any(isinstance(g, dict) for g in groups):
            raise TypeError(f"{name}: params mixes Tensors and dicts; give a list of one kind")
        else:
            self.add_param_group({"params": groups})

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group):
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a param group must be a dict, got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{name}: a param group needs a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(f"{name}: params must be an ordered collection, not a set (the order "
                            f"of a set changes between runs, and state dicts refer to parameters by position)")
        else:
            params = list(params)
        gi = len(self.param_groups)
        for i, p in enumerate(params):
            where = f"parameter {i} of param group {gi}"
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: {where} is a {type(p).__name__}, not a Tensor/Parameter")
            if not p.is_leaf:
                raise ValueError(f"{name}: {where} (shape {fmt_shape(p.shape)}) is not a leaf: it was computed "
                                 f"by {p.grad_fn.name}; optimize the leaves it came from")
            if not p.dtype.is_floating:
                raise DTypeError(f"{name}: {where} is {p.dtype.name}; only floating-point tensors can be optimized")
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name}: param group {gi} lists the same parameter more than once")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if seen & set(ids):
            raise ValueError(f"{name}: some parameters of param group {gi} are already in another group")
        group = dict(self.defaults)
        group.update({k: v for k, v in param_group.items() if k != "params"})
        self._validate(group)
        group["params"] = params
        self.param_groups.append(group)

    def _validate(self, group):
        name = type(self).__name__
        for key in ("lr", "weight_decay", "eps", "momentum", "dampening", "alpha",
                    "lr_decay", "initial_accumulator_value"):
            if key in group:
                v = group[key]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                    raise ValueError(f"{name}: invalid {key} {v!r} (must be a number >= 0)")

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none=True):
        """Forget every parameter's gradient (or, with set_to_none=False, make it zeros)."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:  # a new array: the old one may be shared with another leaf
                    xp = p.device.xp
                    p.grad = Tensor._make(xp.zeros_like(p.grad.data), p.device, None, 0)

    def step(self, closure=None):
        """One update of every parameter that has a gradient (the others are skipped).

        closure: an optional function that re-evaluates the model and returns the loss
        (it runs with grad mode on); step returns its result.
        """
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        name = type(self).__name__
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.device is not p.device or g.shape != p.shape:
                    raise ValueError(f"{name}: parameter of shape {fmt_shape(p.shape)} on {p.device.name} has a "
                                     f"gradient of shape {fmt_shape(g.shape)} on {g.device.name}")
                xp = p.device.xp
                state = self.state.get(p)
                if state is None:
                    state = self.state[p] = self._init_state(xp, p, group)
                self._update(xp, p, g.data, group, state)
        return loss

    def _init_state(self, xp, p, group):
        return {}

    def _state_keys(self, group):
        return set()

    def _update(self, xp, p, g, group, state):
        raise NotImplementedError

    # ------------------------------------------------------------------ state dicts
    def state_dict(self) -> dict:
        """Hyperparameters and per-parameter state as Python numbers and host NumPy copies."""
        index, groups, i = {}, [], 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = list(range(i, i + len(group["params"])))
            for p in group["params"]:
                index[id(p)] = i
                i += 1
            groups.append(packed)
        state = {}
        for p, s in self.state.items():
            if not s:
                continue
            state[index[id(p)]] = {k: (np.array(p.device.to_host(v), copy=True) if p.device.is_native(v) else v)
                                   for k, v in s.items()}
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyperparameters and state saved by state_dict() (nested or flattened).

        Everything is checked before anything is changed; every problem found is listed
        in one StateDictError. Arrays are copied into the parameters' devices and dtypes.
        """
        name = type(self).__name__
        sd = state_dict
        if "param_groups" not in sd and any(str(k).startswith("param_groups.") for k in sd):
            sd = unflatten_state_dict(sd)
        if "param_groups" not in sd or "state" not in sd:
            raise StateDictError(f"load_state_dict for {name}: expected the keys 'state' and 'param_groups' "
                                 f"(or a flattened state dict), got {sorted(map(str, sd))[:6]}")
        saved_groups = list(sd["param_groups"])
        problems = []
        if len(saved_groups) != len(self.param_groups):
            raise StateDictError(f"load_state_dict for {name}: the state dict has {len(saved_groups)} param "
                                 f"group(s) but this optimizer has {len(self.param_groups)}")
        id_map, new_hyper = self._load_groups(saved_groups, problems)
        new_state = self._load_state(sd["state"], id_map, new_hyper, problems)
        if problems:
            raise StateDictError(f"load_state_dict for {name}: " + "; ".join(problems))
        for own, hyper in zip(self.param_groups, new_hyper):
            own.update(hyper)
        self.state = new_state

    def _load_groups(self, saved_groups, problems):
        """For load_state_dict: ({saved parameter id: own parameter}, each group's restored
        hyperparameters), with what does not fit appended to problems."""
        id_map, new_hyper = {}, []
        for gi, (saved, own) in enumerate(zip(saved_groups, self.param_groups)):
            saved_params = [int(k) for k in _py_list(saved.get("params", []))]
            if len(saved_params) != len(own["params"]):
                problems.append(f"param group {gi} has {len(saved_params)} parameter(s) in the state dict but "
                                f"{len(own['params'])} here")
            id_map.update(zip(saved_params, own["params"]))
            # initial_lr: what a learning-rate scheduler keeps in the group (see lr_scheduler), on
            # either side; it is not one of the optimizer's hyperparameters
            own_keys = set(own) - {"params", "initial_lr"}
            saved_keys = set(saved) - {"params", "initial_lr"}
            if own_keys - saved_keys:
                problems.append(f"param group {gi} lacks hyperparameter(s) {sorted(own_keys - saved_keys)}")
            if saved_keys - own_keys:
                problems.append(f"param group {gi} has unexpected hyperparameter(s) {sorted(saved_keys - own_keys)}")
            hyper = {k: _restore_hyper(own[k], saved[k]) for k in own_keys & saved_keys}
            if "initial_lr" in saved:
                hyper["initial_lr"] = float(np.asarray(saved["initial_lr"]))
            new_hyper.append(hyper)
            try:
                self._validate(dict(own, **hyper))
            except ValueError as e:
                problems.append(f"param group {gi}: {e}")
        return id_map, new_hyper

    def _load_state(self, saved_state, id_map, new_hyper, problems):
        """For load_state_dict: {own parameter: its state, on its device and in its dtype}, with
        what does not fit appended to problems."""
        name = type(self).__name__
        new_state = {}
        for key, st in saved_state.items():
            try:
                p = id_map[int(key)]
            except (KeyError, ValueError):
                problems.append(f"state for parameter {key!r}, which no param group lists")
                continue
            group = next(g for g, own in zip(new_hyper, self.param_groups) if any(q is p for q in own["params"]))
            expected = self._state_keys(dict(self.defaults, **group))
            if set(st) != expected:
                problems.append(f"state of parameter {key} has keys {sorted(st)} but {name} expects {sorted(expected)}")
                continue
            restored = {}
            for k, v in st.items():
                if k == "step":
                    restored[k] = int(np.asarray(v).item())
                    continue
                arr = np.array(v.numpy() if isinstance(v, Tensor) else v, copy=True)  # never alias the caller's
                if tuple(arr.shape) != p.shape:
                    problems.append(f"state {k!r} of parameter {key} has shape {fmt_shape(arr.shape)} but the "
                                    f"parameter has shape {fmt_shape(p.shape)}")
                    continue
                restored[k] = p.device.from_host(arr, p.dtype)
            new_state[p] = restored
        return new_state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for k in sorted(group):
                if k != "params":
                    lines.append(f"    {k}: {group[k]}")
        return "\n".join(lines) + "\n)"


def _py_list(v):
    return np.asarray(v).reshape(-1).tolist() if isinstance(v, np.ndarray) else list(v)


def _py(v):
    if isinstance(v, (np.ndarray, np.generic)):
        return v.item() if np.ndim(v) == 0 else tuple(np.asarray(v).tolist())
    return tuple(v) if isinstance(v, list) else v


def _restore_hyper(own_value, saved_value):
    v = _py(saved_value)
    return bool(v) if isinstance(own_value, bool) else v


def flatten_state_dict(state_dict) -> dict:
    """{"state.<i>.<name>": value, "param_groups.<g>.<key>": value}: only NumPy arrays and
    numbers, ready for np.savez(path, **flat) (no pickle). load_state_dict takes it back."""
    flat = {}
    for i, st in state_dict["state"].items():
        for k, v in st.items():
            flat[f"state.{i}.{k}"] = v
    for g, group in enumerate(state_dict["param_groups"]):
        for k, v in group.items():
            flat[f"param_groups.{g}.{k}"] = (np.asarray(v, dtype=np.int64) if k == "params"
                                             else np.asarray(v) if isinstance(v, (tuple, list)) else v)
    return flat


def unflatten_state_dict(flat) -> dict:
    """The nested state dict back from flatten_state_dict's form (or an np.load of it)."""
    state, groups = {}, {}
    for key in flat:
        kind, idx, name = str(key).split(".", 2)
        v = flat[key]
        if kind == "state":
            state.setdefault(int(idx), {})[name] = v
        elif kind == "param_groups":
            groups.setdefault(int(idx), {})[name] = (
                [int(x) for x in np.asarray(v).reshape(-1).tolist()] if name == "params" else _py(v))
        else:
            raise StateDictError(f"unflatten_state_dict: unexpected key {key!r}")
    return {"state": dict(sorted(state.items())), "param_groups": [groups[g] for g in sorted(groups)]}


def _check_betas(name, betas):
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)):
        raise ValueError(f"{name}: invalid betas {betas!r} (two numbers in [0, 1))")


# ============================================================================ optimizers
class SGD(Optimizer):
    """Stochastic gradient descent, with optional momentum, Nesterov momentum and L2 weight decay.

        d = g + weight_decay * p
        buf = d (first step), else momentum * buf + (1 - dampening) * d
        d = d + momentum * buf (nesterov) or buf (momentum > 0)
        p -= lr * d
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov,
                                      weight_decay=weight_decay))

    def _validate(self, group):
        super()._validate(group)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum requires momentum > 0 and dampening = 0")

    def _state_keys(self, group):
        return {"momentum_buffer"} if group["momentum"] else set()

    def _update(self, xp, p, g, group, state):
        lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
        d = g + wd * p.data if wd else g
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = xp.empty_like(d)
                buf[...] = d  # a copy: d may be the (shared) gradient array itself
            else:
                buf *= momentum
                buf += (1.0 - group["dampening"]) * d
            d = d + momentum * buf if group["nesterov"] else buf
        p.data -= lr * d


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011), PyTorch's form; min-char-rnn's optimizer.

        g = g + weight_decay * p
        sum += g * g
        p -= clr * g / (sqrt(sum) + eps),   clr = lr / (1 + (step - 1) * lr_decay)

    eps is added after the square root, as PyTorch does; min-char-rnn adds 1e-8 inside
    it (g / sqrt(sum + 1e-8)). The two agree once sum is far above eps.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value, eps=eps))

    def _state_keys(self, group):
        return {"step", "sum"}

    def _init_state(self, xp, p, group):
        return {"step": 0, "sum": xp.full(p.data.shape, group["initial_accumulator_value"], dtype=p.data.dtype)}

    def _update(self, xp, p, g, group, state):
        state["step"] += 1
        wd = group["weight_decay"]
        if wd:
            g = g + wd * p.data
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        s = state["sum"]
        s += g * g
        p.data -= clr * g / (xp.sqrt(s) + group["eps"])


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), PyTorch's form.

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g^2
        avg = sqrt(v - gbar^2) + eps   (centered; gbar = alpha * gbar + (1 - alpha) * g)
              sqrt(v) + eps            (otherwise)
        buf = momentum * buf + g / avg;  p -= lr * buf     (momentum > 0)
        p -= lr * g / avg                                  (otherwise)
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                                      centered=centered))

    def _state_keys(self, group):
        keys = {"step", "square_avg"}
        if group["momentum"] > 0:
            keys.add("momentum_buffer")
        if group["centered"]:
            keys.add("grad_avg")
        return keys

    def _init_state(self, xp, p, group):
        return {"step": 0, **{k: xp.zeros_like(p.data) for k in sorted(self._state_keys(group)) if k != "step"}}

    def _update(self, xp, p, g, group, state):
        state["step"] += 1
        alpha, wd = group["alpha"], group["weight_decay"]
        if wd:
            g = g + wd * p.data
        v = state["square_avg"]
        v *= alpha
        v += (1.0 - alpha) * g * g
        if group["centered"]:
            gbar = state["grad_avg"]
            gbar *= alpha
            gbar += (1.0 - alpha) * g
            avg = xp.sqrt(v - gbar * gbar) + group["eps"]
        else:
            avg = xp.sqrt(v) + group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += g / avg
            p.data -= group["lr"] * buf
        else:
            p.data -= group["lr"] * g / avg


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015), PyTorch's form, with L2 weight decay added to the gradient.

        g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g^2         (amsgrad: vmax = max(vmax, v), used for v below)
        p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        _check_betas(type(self).__name__, betas)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad))

    def _validate(self, group):
        super()._validate(group)
        _check_betas(type(self).__name__, group["betas"])

    def _state_keys(self, group):
        return {"step", "exp_avg", "exp_avg_sq"} | ({"max_exp_avg_sq"} if group["amsgrad"] else set())

    def _init_state(self, xp, p, group):
        return {"step": 0, **{k: xp.zeros_like(p.data) for k in sorted(self._state_keys(group)) if k != "step"}}

    def _update(self, xp, p, g, group, state):
        state["step"] += 1
        t = state["step"]
        lr, wd = group["lr"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        amsgrad = group["amsgrad"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        step_size, bias2 = lr / (1.0 - beta1 ** t), math.sqrt(1.0 - beta2 ** t)
        l2, decay = (0.0, 1.0 - lr * wd) if self._decoupled else (wd, 1.0)
        ks = for_device(p.device, "optim", _KERNELS)
        if ks is not None:  # one pass over the five arrays instead of a dozen
            if amsgrad:
                ks["adam_amsgrad"](g, beta1, beta2, step_size, bias2, group["eps"], l2, decay,
                                   p.data, m, v, state["max_exp_avg_sq"])
            else:
                ks["adam"](g, beta1, beta2, step_size, bias2, group["eps"], l2, decay, p.data, m, v)
            return
        if decay != 1.0:
            p.data *= decay
        if l2:
            g = g + l2 * p.data
        # in place, through one temporary: an LSTM's weights are millions of numbers, and a
        # fresh array per term costs more than the arithmetic
        xo = p.device.xp_out
        m *= beta1
        tmp = g * (1.0 - beta1)
        m += tmp
        xo.multiply(g, g, out=tmp)
        tmp *= 1.0 - beta2
        v *= beta2
        v += tmp
        if amsgrad:
            vmax = state["max_exp_avg_sq"]
            xo.maximum(vmax, v, out=vmax)
            v = vmax
        xo.sqrt(v, out=tmp)
        tmp /= bias2
        tmp += group["eps"]  # the denominator
        xo.divide(m, tmp, out=tmp)
        tmp *= step_size
        p.data -= tmp


# Adam's update as one elementwise kernel (kernels.Kernel), the same arithmetic in the same
# order as the portable form above; l2 is Adam's weight decay into the gradient, decay
# AdamW's (1 - lr * wd) on the weights. Scalars are cast to T first, as NumPy does.
_ADAM_BODY = """
    const T b1 = beta1, b2 = beta2;
    const T gg = l2 != 0 ? g + (T)l2 * p : g;
    if (decay != 1) p = p * (T)decay;
    m = m * b1 + gg * (T)(1 - beta1);
    v = v * b2 + gg * gg * (T)(1 - beta2);
    {VMAX}
    p = p - m / (sqrt({V}) / (T)bias2 + (T)eps) * (T)step_size;
"""
_ADAM_IN = "T g, float64 beta1, float64 beta2, float64 step_size, float64 bias2, float64 eps, float64 l2, float64 decay"
_KERNELS = {
    "adam": Kernel(_ADAM_IN, "T p, T m, T v", _ADAM_BODY.replace("{VMAX}", "").replace("{V}", "v")),
    "adam_amsgrad": Kernel(_ADAM_IN, "T p, T m, T v, T vmax",
                           _ADAM_BODY.replace("{VMAX}", "vmax = vmax > v ? vmax : v;").replace("{V}", "vmax")),
}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), PyTorch's form:
    p *= 1 - lr * weight_decay, then the Adam step without weight decay in the gradient."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


from . import lr_scheduler  # noqa: E402  (PyTorch's optim.lr_scheduler, reachable as an attribute)

__all__ = ["Optimizer", "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "flatten_state_dict", "unflatten_state_dict"]
