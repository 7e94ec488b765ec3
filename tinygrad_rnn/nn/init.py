"""Weight initialisation, with PyTorch's names, fan computation and gains (`torch.nn.init`).

Every function overwrites `tensor.data` in place, records no graph, and returns the
tensor. Random numbers come from the tensor's device generator, so `tg.manual_seed`
makes every initialisation reproducible (and cpu and strict, seeded alike, agree).
"""
from __future__ import annotations

import math

from .. import backend as B
from ..errors import DTypeError, ShapeError, fmt_shape
from ..tensor import Tensor


def calculate_gain(nonlinearity, param=None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    linear/identity/conv*/sigmoid 1, tanh 5/3, relu sqrt(2),
    leaky_relu sqrt(2 / (1 + slope^2)) with slope `param` (default 0.01), selu 3/4.
    """
    linear_fns = ("linear", "identity", "conv1d", "conv2d", "conv3d",
                  "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
    if nonlinearity in linear_fns or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    # PyTorch's convention: weight (out, in, *kernel); the kernel's size multiplies both fans
    shape = tensor.shape
    if len(shape) < 2:
        raise ShapeError(f"init: fan in and fan out need a tensor of at least 2 dimensions, "
                         f"got shape {fmt_shape(shape)}")
    receptive = 1
    for n in shape[2:]:
        receptive *= n
    return shape[1] * receptive, shape[0] * receptive


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode {mode!r} not supported, use 'fan_in' or 'fan_out'")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _check(op, tensor, floating=True):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{op}: expected a Tensor, got {type(tensor).__name__}")
    if floating and not tensor.dtype.is_floating:
        raise DTypeError(f"{op}: needs a floating-point tensor, got {tensor.dtype.name} "
                         f"of shape {fmt_shape(tensor.shape)}")


def _write(tensor, new):
    # Write into the existing array rather than rebinding .data, so anything that
    # shares the array (a tied weight, a view) sees the new values, as in PyTorch.
    tensor.data[...] = new
    return tensor


def uniform_(tensor, a=0.0, b=1.0):
    """Fill with samples of U(a, b)."""
    _check("uniform_", tensor)
    if not a <= b:
        raise ValueError(f"uniform_: needs a <= b, got a={a}, b={b}")
    u = tensor.device.rand(tensor.shape, tensor.dtype)
    return _write(tensor, a + (b - a) * u)


def normal_(tensor, mean=0.0, std=1.0):
    """Fill with samples of N(mean, std^2)."""
    _check("normal_", tensor)
    if not std >= 0:
        raise ValueError(f"normal_: std must be non-negative, got {std}")
    z = tensor.device.randn(tensor.shape, tensor.dtype)
    return _write(tensor, mean + std * z)


def constant_(tensor, val):
    """Fill with the value val."""
    _check("constant_", tensor, floating=False)
    dev = tensor.device
    return _write(tensor, dev.xp.full(tensor.shape, val, dtype=tensor.data.dtype))


def zeros_(tensor):
    return constant_(tensor, 0)


def ones_(tensor):
    return constant_(tensor, 1)


def eye_(tensor):
    """Fill a 2-D tensor with the identity matrix (ones on the diagonal)."""
    _check("eye_", tensor, floating=False)
    if tensor.ndim != 2:
        raise ShapeError(f"eye_: needs a 2-D tensor, got shape {fmt_shape(tensor.shape)}")
    n, m = tensor.shape
    return _write(tensor, tensor.device.xp.eye(n, m, dtype=tensor.data.dtype))


def xavier_uniform_(tensor, gain=1.0):
    """Glorot: U(-a, a) with a = gain * sqrt(6 / (fan_in + fan_out))."""
    _check("xavier_uniform_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    a = gain * math.sqrt(2.0 / float(fan_in + fan_out)) * math.sqrt(3.0)
    return uniform_(tensor, -a, a)


def xavier_normal_(tensor, gain=1.0):
    """Glorot: N(0, std^2) with std = gain * sqrt(2 / (fan_in + fan_out))."""
    _check("xavier_normal_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def _kaiming_std(op, tensor, a, mode, nonlinearity):
    _check(op, tensor)
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan) if fan else 0.0


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He: U(-bound, bound) with bound = gain * sqrt(3 / fan); a is leaky_relu's negative slope.

    With a=sqrt(5) (nn.Linear's default) the bound is 1 / sqrt(fan_in).
    """
    std = _kaiming_std("kaiming_uniform_", tensor, a, mode, nonlinearity)
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu"):
    """He: N(0, std^2) with std = gain / sqrt(fan)."""
    std = _kaiming_std("kaiming_normal_", tensor, a, mode, nonlinearity)
    return normal_(tensor, 0.0, std)


def orthogonal_(tensor, gain=1.0):
    """A (semi-)orthogonal matrix, scaled by gain (Saxe et al. 2013; PyTorch's algorithm).

    The tensor is viewed as (rows, everything else). A Gaussian matrix drawn from the
    device's generator (transposed to be tall) is factored by the device's QR; multiplying
    Q's columns by the signs of R's diagonal makes Q unique, so it is Haar-distributed.
    Rows are orthonormal when rows <= cols, columns otherwise.
    """
    _check("orthogonal_", tensor)
    if tensor.ndim < 2:
        raise ShapeError(f"orthogonal_: only tensors with 2 or more dimensions are supported, "
                         f"got shape {fmt_shape(tensor.shape)}")
    if tensor.numel() == 0:
        return tensor
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    dev, xp = tensor.device, tensor.device.xp
    flat = dev.randn((rows, cols), B.float64)
    if rows < cols:
        flat = xp.permute_dims(flat, (1, 0))
    q, r = dev.qr(flat)
    k = min(rows, cols)
    # R's diagonal without an indexing extension: the first k sums down the columns of R * I
    diag = xp.sum(r * xp.eye(k, r.shape[1], dtype=r.dtype), axis=0)[:k]
    q = q * xp.sign(diag)
    if rows < cols:
        q = xp.permute_dims(q, (1, 0))
    q = gain * xp.reshape(q, tensor.shape)
    return _write(tensor, xp.astype(q, tensor.data.dtype))


__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_"]
