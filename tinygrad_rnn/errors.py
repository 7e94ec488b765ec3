"""Errors raised by tinygrad_rnn itself, already phrased for the user.

`Function.apply` annotates any other error raised inside a forward (NumPy's, CuPy's)
with the op's name, shapes, dtypes and device; errors of these classes pass through
untouched because they already say all that.
"""


class TinygradError(Exception):
    pass


class ShapeError(TinygradError, ValueError):
    pass


class AxisError(TinygradError, IndexError):
    pass


class IndexOutOfRange(TinygradError, IndexError):
    pass


class DTypeError(TinygradError, TypeError):
    pass


class StateDictError(TinygradError, KeyError):
    """load_state_dict found missing, unexpected or mis-shaped keys (all listed in the message),
    of a module's weights or an optimizer's state (the one error for both, so neither layer
    imports the other)."""

    def __str__(self):
        return str(self.args[0])


class CreateGraphError(TinygradError, RuntimeError):
    """create_graph=True reached an op whose backward cannot be differentiated again."""


class AnomalyError(TinygradError, RuntimeError):
    """A backward rule produced NaN or infinity under detect_anomaly()."""


def annotate(err, op, args, device):
    """A backend's error inside op's forward, restated with the op's name and what it was given."""
    parts = []
    for a in args:
        if isinstance(a, (int, float)):
            parts.append(repr(a))
        elif hasattr(a, "requires_grad"):  # a Tensor: its dtype is the package's DType
            parts.append(f"tensor {fmt_shape(a.shape)} {a.dtype.name}")
        elif hasattr(a, "shape") and hasattr(a, "dtype"):
            parts.append(f"array {fmt_shape(a.shape)} {a.dtype}")
    kind = next(k for k in (ValueError, TypeError, IndexError) if isinstance(err, k))
    return kind(f"{op.lower()}: {err} (inputs: {', '.join(parts)}; device {device.name})")


def fmt_shape(shape) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def normalize_axes(op: str, axis, ndim: int, shape=None):
    """axis: None | int | tuple -> a sorted tuple of non-negative axes, or an AxisError naming op."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not isinstance(a, int) or not -ndim <= a < max(ndim, 1):
            where = f"shape {fmt_shape(shape)}" if shape is not None else f"{ndim} dims"
            raise AxisError(f"{op}: axis {a} is out of range for a tensor of {where} "
                            f"(valid: {-ndim} to {ndim - 1})")
        out.append(a % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise AxisError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))
