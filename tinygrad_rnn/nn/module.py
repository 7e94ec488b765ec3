"""`Module` and `Parameter`, with PyTorch's registration rules and state dicts.

Assigning a `Parameter` or a `Module` to an attribute registers it, so
`named_parameters()` finds every weight by its dotted name (`rnn.weight_ih_l0`).
State dicts hold NumPy arrays: a PyTorch state dict converted with `.numpy()` loads as is.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backend as B
from ..errors import StateDictError, fmt_shape  # noqa: F401  (StateDictError: re-exported by nn)
from ..tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that a Module registers as a learnable weight (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, dtype=None, device=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype, device=device)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        for store in (self._parameters, self._modules, self._buffers):
            store.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        # only called when normal lookup fails: registered parameters, modules and buffers
        d = self.__dict__
        for store in ("_parameters", "_modules", "_buffers"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' has no attribute '{name}'")

    def __delattr__(self, name):
        for store in (self._parameters, self._modules, self._buffers):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register a Parameter, or None for an absent one (e.g. bias=False)."""
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def register_buffer(self, name, tensor):
        """A tensor that is state but not a parameter (saved in state_dict, moved by .to)."""
        self._buffers[name] = tensor

    def add_module(self, name, module):
        self._modules[name] = module

    # ------------------------------------------------------------------ traversal
    def named_modules(self, prefix=""):
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, m = stack.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            yield name, m
            children = [(f"{name}.{k}" if name else k, c) for k, c in m._modules.items() if c is not None]
            stack.extend(reversed(children))

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_children(self):
        for k, m in self._modules.items():
            if m is not None:
                yield k, m

    def children(self):
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in mods:
            for k, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{k}" if mname else k), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix=""):
        for mname, m in self.named_modules(prefix):
            for k, b in m._buffers.items():
                if b is not None:
                    yield (f"{mname}.{k}" if mname else k), b

    def apply(self, fn):
        for m in list(self.modules()):
            fn(m)
        return self

    # ------------------------------------------------------------------ modes
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    # ------------------------------------------------------------------ devices and dtypes
    def to(self, target):
        """Move (or cast) every parameter and buffer in place; returns self."""
        is_dtype = isinstance(target, B.DType) or (isinstance(target, str) and target in B.DTYPES)
        for m in self.modules():
            for store in (m._parameters, m._buffers):
                for k, t in store.items():
                    if t is None:
                        continue
                    if is_dtype and not t.dtype.is_floating:
                        continue  # integer buffers keep their dtype
                    moved = t.detach().to(target)
                    # a gradient moves with its parameter (as in PyTorch), so an optimizer
                    # step after .to() still sees it
                    grad = None if t.grad is None else t.grad.to(target)
                    t.data, t.device, t.grad = moved.data, moved.device, grad
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def float(self):
        return self.to(B.float32)

    def double(self):
        return self.to(B.float64)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Every parameter and buffer by dotted name, as host NumPy copies."""
        out = OrderedDict()
        for k, p in self.named_parameters():
            out[k] = p.numpy()
        for k, b in self.named_buffers():
            out[k] = b.numpy()
        return out

    def load_state_dict(self, state, strict=True):
        """Copy arrays (NumPy or Tensors) into the existing parameters, keeping their dtype and device.

        With strict=True any missing key, unexpected key or wrong shape is an error that
        lists every offender; nothing is copied unless everything fits. Returns
        (missing_keys, unexpected_keys).
        """
        own = OrderedDict(list(self.named_parameters()) + list(self.named_buffers()))
        # np.array copies: from_host keeps a NumPy array as is on the CPU, and optimizers update
        # parameters in place, so sharing would write into the caller's dict (and tie two
        # modules loaded from it)
        given = {k: (v.numpy() if isinstance(v, Tensor) else np.array(v)) for k, v in state.items()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        wrong = [(k, own[k].shape, tuple(given[k].shape)) for k in own
                 if k in given and tuple(given[k].shape) != own[k].shape]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if wrong:
            problems.append("wrong shapes: " + ", ".join(
                f"{k} expects {fmt_shape(a)} but got {fmt_shape(b)}" for k, a, b in wrong))
        if problems:
            raise StateDictError(f"load_state_dict for {type(self).__name__}: " + "; ".join(problems))
        for k, t in own.items():
            if k in given:
                t.data = t.device.from_host(given[k], t.dtype)
                t.grad = None
        return missing, unexpected

    # ------------------------------------------------------------------ calling and printing
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} has no forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        kids = list(self.named_children())
        if not kids:
            return lines[0] + ")"
        for k, m in kids:
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({k}): {sub}")
        return "\n".join(lines) + "\n)"


class _Container(Module):
    """Submodules registered under "0", "1", ...: indexed, counted and iterated in order."""

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(_Container):
    """Modules applied in order; each one's output is the next one's input."""

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(_Container):
    """A list of submodules, registered under "0", "1", ... (for stacked layers)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, m):
        self.add_module(str(len(self._modules)), m)
        return self

