"""Feed-forward layers: Linear, Embedding, Dropout and the activation modules.

Names, parameter shapes and default initialisation follow PyTorch, so a PyTorch state
dict converted to NumPy arrays loads as is and gives the same outputs.
"""
from __future__ import annotations

import math

from .. import backend as B
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor, zeros
from . import functional as F
from . import init
from .module import Module, Parameter


def _empty_param(shape, dtype, device):
    dev = B.get_device(device)
    dt = B.to_dtype(dtype) if dtype is not None else B.get_default_dtype()
    if not dt.is_floating:
        raise DTypeError(f"parameters must be floating point, got dtype {dt.name}")
    return Parameter(zeros(shape, dtype=dt, device=dev))


def _check_input(layer, x, weight):
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer}: expected a Tensor input, got {type(x).__name__}")
    if x.device is not weight.device:
        raise RuntimeError(f"{layer}: input is on {x.device.name} but the weights are on {weight.device.name}; "
                           f"move one with .to(device)")


class Linear(Module):
    """y = x @ weight.T + bias, over the last axis of x.

    weight: (out_features, in_features); bias: (out_features,). Both start as
    U(-1/sqrt(in_features), 1/sqrt(in_features)) (PyTorch's kaiming_uniform_ with a=sqrt(5)).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None, device=None):
        super().__init__()
        for name, n in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"Linear: {name} must be a non-negative int, got {n!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.weight = _empty_param((out_features, in_features), dtype, device)
        if bias:
            self.bias = _empty_param((out_features,), dtype, device)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        _check_input("Linear", x, self.weight)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ShapeError(f"Linear({self.in_features}, {self.out_features}): input of shape {fmt_shape(x.shape)} "
                             f"does not end in in_features={self.in_features} (weight has shape "
                             f"{fmt_shape(self.weight.shape)})")
        if x.dtype is not self.weight.dtype:
            raise DTypeError(f"Linear: input is {x.dtype.name} but the weight is {self.weight.dtype.name}; "
                             f"convert one with .to(dtype)")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A lookup table: row i of weight (num_embeddings, embedding_dim) for index i.

    weight starts as N(0, 1), with the padding_idx row (if any) zero; that row gets no
    gradient, so it stays what it is set to.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype=None, device=None, _weight=None):
        super().__init__()
        for name, n in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"Embedding: {name} must be a non-negative int, got {n!r}")
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx {padding_idx} is out of range for "
                                 f"{num_embeddings} embeddings")
            padding_idx %= num_embeddings
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        if _weight is None:
            self.weight = _empty_param((num_embeddings, embedding_dim), dtype, device)
            self.reset_parameters()
        else:
            if tuple(_weight.shape) != (num_embeddings, embedding_dim):
                raise ShapeError(f"Embedding: weight of shape {fmt_shape(_weight.shape)} does not match "
                                 f"({num_embeddings}, {embedding_dim})")
            self.weight = _weight

    def reset_parameters(self):
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx, ...] = 0.0

    @classmethod
    def from_pretrained(cls, embeddings, freeze=True, padding_idx=None):
        """An Embedding whose weight is (a copy of) the 2-D `embeddings`; frozen unless freeze=False."""
        t = embeddings if isinstance(embeddings, Tensor) else Tensor(embeddings)
        if t.ndim != 2:
            raise ShapeError(f"Embedding.from_pretrained: embeddings must be 2-D, got shape {fmt_shape(t.shape)}")
        w = Parameter(t.numpy(), requires_grad=not freeze, device=t.device)  # numpy() copies
        return cls(t.shape[0], t.shape[1], padding_idx=padding_idx, _weight=w)

    def forward(self, indices):
        if isinstance(indices, Tensor) and indices.device is not self.weight.device:
            raise RuntimeError(f"Embedding: indices are on {indices.device.name} but the weight is on "
                               f"{self.weight.device.name}; move one with .to(device)")
        return F.embedding(indices, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s if self.padding_idx is None else s + f", padding_idx={self.padding_idx}"


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale the
    rest by 1/(1-p); in eval mode, the identity."""

    def __init__(self, p=0.5, dtype=None, device=None):
        # dtype/device are accepted so every module takes them; Dropout holds no state.
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: probability p must be a number in [0, 1], got {p!r}")
        self.p = float(p)

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class _Activation(Module):
    def __init__(self, dtype=None, device=None):
        super().__init__()


class Tanh(_Activation):
    def forward(self, x):
        return x.tanh()


class ReLU(_Activation):
    def forward(self, x):
        return x.relu()


class Sigmoid(_Activation):
    def forward(self, x):
        return x.sigmoid()


class Identity(_Activation):
    def forward(self, x):
        return x


__all__ = ["Linear", "Embedding", "Dropout", "Tanh", "ReLU", "Sigmoid", "Identity"]


class LayerNorm(Module):
    """Normalise over the trailing normalized_shape axes (biased variance, eps inside the square
    root), then scale by weight and shift by bias (each of shape normalized_shape, starting at
    ones and zeros), as PyTorch's LayerNorm."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive int or a non-empty tuple of them, "
                             f"got {normalized_shape!r}")
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        affine = {"weight": elementwise_affine, "bias": elementwise_affine and bias}
        for name, on in affine.items():
            if on:
                setattr(self, name, _empty_param(shape, dtype, device))
            else:
                self.register_parameter(name, None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.weight is not None:
            init.ones_(self.weight)
        if self.bias is not None:
            init.zeros_(self.bias)

    def forward(self, x):
        if self.weight is not None:
            _check_input("LayerNorm", x, self.weight)
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Flatten(Module):
    """x.flatten(start_dim, end_dim): by default every axis but the batch axis into one."""

    def __init__(self, start_dim=1, end_dim=-1, *, dtype=None, device=None):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return x.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


__all__ += ["LayerNorm", "Flatten"]
