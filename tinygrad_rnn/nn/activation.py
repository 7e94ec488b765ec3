"""Activation modules with PyTorch's names and constructor arguments, each calling its
`nn.functional` form. `inplace` is accepted for PyTorch code and changes nothing: the
result is always a new tensor (the graph needs the input). `dtype`/`device` are accepted,
as by every module here; activations hold no state."""
from __future__ import annotations

import warnings

from . import functional as F
from .module import Module

__all__ = ["GELU", "SiLU", "ELU", "LeakyReLU", "Softmax", "LogSoftmax"]


class GELU(Module):
    """x Phi(x): exact (approximate='none', with erf) or approximate='tanh'."""

    def __init__(self, approximate="none", *, dtype=None, device=None):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """x sigmoid(x)."""

    def __init__(self, inplace=False, *, dtype=None, device=None):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.silu(x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class ELU(Module):
    """x where x > 0, else alpha (exp(x) - 1)."""

    def __init__(self, alpha=1.0, inplace=False, *, dtype=None, device=None):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class LeakyReLU(Module):
    """x where x > 0, else negative_slope x."""

    def __init__(self, negative_slope=0.01, inplace=False, *, dtype=None, device=None):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


def _implicit_dim(name, ndim):
    # PyTorch's legacy choice for dim=None, with its warning: code that relies on it must
    # not silently normalise over another axis here
    warnings.warn(f"{name}: implicit dimension choice (dim=None) is deprecated; pass dim", UserWarning,
                  stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """softmax along dim."""

    def __init__(self, dim=None, *, dtype=None, device=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.softmax(self.dim if self.dim is not None else _implicit_dim("Softmax", x.ndim))

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log_softmax along dim."""

    def __init__(self, dim=None, *, dtype=None, device=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return x.log_softmax(self.dim if self.dim is not None else _implicit_dim("LogSoftmax", x.ndim))

    def extra_repr(self):
        return f"dim={self.dim}"
