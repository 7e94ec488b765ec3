"""Recurrent cells and layers: RNN, LSTM and GRU with PyTorch's names, shapes, gate
order, equations and default initialisation.

The cells (`RNNCell`, `LSTMCell`, `GRUCell`) are written from primitive ops exactly as
their equations read, so backpropagation through time is nothing but the engine: they
are the reference. The layers (`RNN`, `LSTM`, `GRU`) run a whole sequence, in one of
three ways (`impl=`): "sequence" (the default) runs each layer and direction as one op
(`ops/rnn.py`: the input projection of all timesteps as one GEMM, the time loop into
preallocated buffers, backward through time by hand with the weight gradients as one
GEMM each); "step" runs the input projection as one matmul, cuts it into timesteps with
one multi-output node and loops over time with one fused node per step for the gate
math; "composed" does the same with the cell equations as primitive ops. The tests hold
the three to agree to rounding.
"""
from __future__ import annotations

import math
import numbers
import warnings

from .. import backend as B
from ..errors import DTypeError, ShapeError, fmt_shape
from ..ops import nn as nnops
from ..ops import rnn as rnnops
from ..ops.rnn import gru_step, lstm_step, rnn_step
from ..ops.linalg import MatMul
from ..tensor import Tensor, concat, stack
from . import functional as F
from .module import Module, Parameter
from .regularization import locked_dropout
from .utils.rnn import PackedSequence, _rows

__all__ = ["RNNCell", "LSTMCell", "GRUCell", "RNN", "LSTM", "GRU"]


# the composed step of each kind (rnn_step, lstm_step, gru_step) lives with its fused ops in
# ops/rnn.py, which also differentiates it twice in their place under create_graph


# ----------------------------------------------------------------------------- shared helpers
def _check_sizes(name, input_size, hidden_size):
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name}: {what} must be a positive integer, got {v!r}")


def _check_nonlinearity(name, nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{name}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


def _new_param(shape, dtype, device):
    dev = B.get_device(device)
    dt = B.to_dtype(dtype) if dtype is not None else B.get_default_dtype()
    if not dt.is_floating:
        raise DTypeError(f"recurrent parameters must be floating point, got dtype {dt.name}")
    return Parameter(dev.xp.zeros(shape, dtype=dev.native(dt)), device=dev)


def _reset_uniform(module, hidden_size):
    """PyTorch's default: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), drawn in registration order."""
    k = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        u = p.device.rand(p.shape, p.dtype)
        p.data = (u * 2.0 - 1.0) * k
        p.grad = None


def _check_regularisers(name, weight_dropout, dropout_mode):
    if isinstance(weight_dropout, bool) or not isinstance(weight_dropout, numbers.Real) \
            or not 0.0 <= weight_dropout < 1.0:
        raise ValueError(f"{name}: weight_dropout must be a number in [0, 1), got {weight_dropout!r}")
    if dropout_mode not in DROPOUT_MODES:
        raise ValueError(f"{name}: dropout_mode must be one of {', '.join(map(repr, DROPOUT_MODES))}, "
                         f"got {dropout_mode!r}")


def _check_tensor(name, what, t, like):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: {what} must be a Tensor, got {type(t).__name__}")
    if t.device is not like.device:
        raise RuntimeError(f"{name}: {what} is on {t.device.name} but the parameters are on {like.device.name}; "
                           f"move one with .to(...)")
    if t.dtype is not like.dtype:
        raise DTypeError(f"{name}: {what} is {t.dtype.name} but the parameters are {like.dtype.name}; "
                         f"convert one with .to(...)")


# ----------------------------------------------------------------------------- cells
class _Cell(Module):
    _gates = 1

    def __init__(self, input_size, hidden_size, bias=True, dtype=None, device=None):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size, hidden_size)
        self.input_size, self.hidden_size, self.bias = int(input_size), int(hidden_size), bool(bias)
        G = self._gates * self.hidden_size
        self.weight_ih = _new_param((G, self.input_size), dtype, device)
        self.weight_hh = _new_param((G, self.hidden_size), dtype, device)
        if bias:
            self.bias_ih = _new_param((G,), dtype, device)
            self.bias_hh = _new_param((G,), dtype, device)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_uniform(self, self.hidden_size)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s

    def _input(self, x):
        """x as (batch, input_size), and whether it came unbatched."""
        name = type(self).__name__
        if isinstance(x, PackedSequence):
            raise TypeError(f"{name}: a cell takes one timestep (batch, input_size), not a PackedSequence; run "
                            f"packed sequences through nn.{name[:-4]}, or pad them with pad_packed_sequence "
                            f"and step through the timesteps")
        _check_tensor(name, "input", x, self.weight_ih)
        if x.ndim not in (1, 2):
            raise ShapeError(f"{name}: expected input of shape (batch, input_size) or unbatched (input_size,), "
                             f"got {x.ndim}-D shape {fmt_shape(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: input has {x.shape[-1]} features (shape {fmt_shape(x.shape)}) but the cell "
                             f"was built with input_size={self.input_size}")
        return (x, True) if x.ndim == 2 else (x.unsqueeze(0), False)

    def _state(self, what, s, batch, batched):
        name = type(self).__name__
        if s is None:
            w = self.weight_ih
            return Tensor._make(w.device.xp.zeros((batch, self.hidden_size), dtype=w.data.dtype), w.device, None, 0)
        _check_tensor(name, what, s, self.weight_ih)
        want = (batch, self.hidden_size) if batched else (self.hidden_size,)
        if s.shape != want:
            raise ShapeError(f"{name}: {what} must have shape {fmt_shape(want)} "
                             f"({'batch, hidden_size' if batched else 'hidden_size,'}) for an input of batch "
                             f"{batch if batched else '(unbatched)'}, got {fmt_shape(s.shape)}")
        return s if batched else s.unsqueeze(0)

    def _gx_gh(self, x, h):
        return F.linear(x, self.weight_ih, self.bias_ih), F.linear(h, self.weight_hh, self.bias_hh)


class RNNCell(_Cell):
    """An Elman RNN cell:  h' = tanh(W_ih x + b_ih + W_hh h + b_hh)  (or relu).

    forward(x, h=None): x (batch, input_size) or (input_size,); h defaults to zeros.
    Returns h' (batch, hidden_size).
    """

    _gates = 1

    def __init__(self, input_size, hidden_size, bias=True, nonlinearity="tanh", dtype=None, device=None):
        _check_nonlinearity("RNNCell", nonlinearity)
        super().__init__(input_size, hidden_size, bias, dtype, device)
        self.nonlinearity = nonlinearity

    def extra_repr(self):
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")

    def forward(self, x, h=None):
        x, batched = self._input(x)
        h = self._state("h", h, x.shape[0], batched)
        gx, gh = self._gx_gh(x, h)
        out = rnn_step(gx, gh, self.nonlinearity)
        return out if batched else out.squeeze(0)


class LSTMCell(_Cell):
    """A long short-term memory cell, PyTorch's gate order i, f, g, o:

        i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)
        f = sigmoid(W_if x + b_if + W_hf h + b_hf)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        o = sigmoid(W_io x + b_io + W_ho h + b_ho)
        c' = f * c + i * g
        h' = o * tanh(c')

    weight_ih (4H, I) stacks W_ii, W_if, W_ig, W_io; weight_hh (4H, H) likewise.
    forward(x, (h, c)=None) -> (h', c'); missing states are zeros.
    """

    _gates = 4

    def forward(self, x, hx=None):
        x, batched = self._input(x)
        if hx is None:
            hx = (None, None)
        elif not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"LSTMCell: the state must be a tuple (h, c), got {type(hx).__name__}")
        h = self._state("h", hx[0], x.shape[0], batched)
        c = self._state("c", hx[1], x.shape[0], batched)
        gx, gh = self._gx_gh(x, h)
        h, c = lstm_step(gx, gh, c)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))


class GRUCell(_Cell):
    """A gated recurrent unit with PyTorch's equations, gate order r, z, n:

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
        z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
        h' = (1 - z) * n + z * h

    forward(x, h=None) -> h'; a missing h is zeros.
    """

    _gates = 3

    def forward(self, x, h=None):
        x, batched = self._input(x)
        h = self._state("h", h, x.shape[0], batched)
        gx, gh = self._gx_gh(x, h)
        out = gru_step(gx, gh, h)
        return out if batched else out.squeeze(0)


# ----------------------------------------------------------------------------- layers
IMPLS = ("sequence", "step", "composed")
DROPOUT_MODES = ("elementwise", "locked")


class _Kind:
    """What tells one recurrent kind from another: its gate count, whether it carries a cell
    state, and its three implementations over one layer and direction."""

    def __init__(self, name, gates, has_cell, sequence, cell, composed):
        self.name, self.gates, self.has_cell = name, gates, has_cell
        self.sequence = sequence  # ops/rnn.py: the whole sequence as one node
        self.cell = cell          # step: (gx_t, gh, b_hh, h, c, nonlinearity) -> (h, c), one fused node
        self.composed = composed  # the same signature, from primitive ops as the equations read

    def __repr__(self):
        return f"<recurrent kind {self.name}>"


_RNN = _Kind("RNN", 1, False, rnnops.RNNSequence,
             cell=lambda gx, gh, b_hh, h, c, nl: (rnnops.RNNCellFn.apply(gx, gh, nl), None),
             composed=lambda gx, gh, b_hh, h, c, nl: (rnn_step(gx, gh if b_hh is None else gh + b_hh, nl), None))
_LSTM = _Kind("LSTM", 4, True, rnnops.LSTMSequence,
              cell=lambda gx, gh, b_hh, h, c, nl: rnnops.LSTMCellFn.apply(gx, gh, c),
              composed=lambda gx, gh, b_hh, h, c, nl: lstm_step(gx, gh if b_hh is None else gh + b_hh, c))
_GRU = _Kind("GRU", 3, False, rnnops.GRUSequence,
             cell=lambda gx, gh, b_hh, h, c, nl: (rnnops.GRUCellFn.apply(gx, gh, b_hh, h), None),
             composed=lambda gx, gh, b_hh, h, c, nl: (gru_step(gx, gh if b_hh is None else gh + b_hh, h), None))


def _embedding_lookup(x):
    """(ids, weight) when x is the output of an embedding lookup whose table is smaller than
    the lookup (fewer rows than timesteps * batch) and nothing else watches x's gradient
    (retain_grad) or shapes it (padding_idx); else None."""
    node = x._ctx
    if node is None or node.fn is not nnops.Embedding or node.retained or node.padding_idx is not None:
        return None
    ids, weight = node.inputs
    rows = x.shape[0] * x.shape[1] if x.ndim == 3 else x.shape[0]  # padded (T, B, E) or packed (N, E)
    if not isinstance(weight, Tensor) or weight.shape[0] >= rows or ids.ndim != x.ndim - 1:
        return None
    return ids, weight


def _folded_projection(kind, w_ih, b_ih, b_hh, lookup):
    """x W_ih^T (+ the input bias) for x = E[ids] straight from an embedding, as a row gather:
    x W_ih^T = (E W_ih^T)[ids], so the input projection of all timesteps gathers from a (V, G)
    table, and backward sums d gates into V rows instead of two GEMMs over every row. The same
    numbers to rounding; used where the table has fewer rows than the sequence."""
    ids, emb_w = lookup
    # as (W_ih E^T)^T: W_ih, the large one, then gets a row-major gradient (E W_ih^T hands it a
    # transposed one, which .grad copies: 0.1 ms a step at (768, 256))
    table = (w_ih @ emb_w.T).T
    bias = kind.sequence._input_bias(b_ih, b_hh)
    if bias is not None:
        table = table + bias
    return nnops.Embedding.apply(ids, table)


class _RNNBase(Module):
    kind = _RNN

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, impl="sequence", dtype=None, device=None, *, proj_size=0,
                 weight_dropout=0.0, dropout_mode="elementwise"):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size, hidden_size)
        _check_regularisers(name, weight_dropout, dropout_mode)
        self.weight_dropout, self.dropout_mode = float(weight_dropout), dropout_mode
        if not isinstance(proj_size, numbers.Integral) or isinstance(proj_size, bool) or proj_size < 0:
            raise ValueError(f"{name}: proj_size must be a non-negative integer, got {proj_size!r}")
        if proj_size and self.kind is not _LSTM:
            raise ValueError(f"{name}: proj_size argument is only supported for LSTM, not RNN or GRU")
        if proj_size >= hidden_size:
            raise ValueError(f"{name}: proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                             f"and hidden_size={hidden_size}")
        self.proj_size = int(proj_size)
        if not isinstance(num_layers, numbers.Integral) or isinstance(num_layers, bool) or num_layers < 1:
            raise ValueError(f"{name}: num_layers must be a positive integer, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"{name}: dropout={dropout} has no effect with num_layers=1 (dropout is applied "
                          f"between layers, not after the last)", stacklevel=3)
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.bias, self.batch_first, self.bidirectional = bool(bias), bool(batch_first), bool(bidirectional)
        self.dropout = float(dropout)
        self.impl = impl
        D = 2 if bidirectional else 1
        G = self.kind.gates * self.hidden_size
        # PyTorch's registration order (so state_dict keys come out in its order):
        # per layer, per direction: weight_ih, weight_hh, bias_ih, bias_hh
        names = []
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else self._h_size * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                group = (f"weight_ih{sfx}", f"weight_hh{sfx}", f"bias_ih{sfx}", f"bias_hh{sfx}")
                setattr(self, group[0], _new_param((G, in_size), dtype, device))
                setattr(self, group[1], _new_param((G, self._h_size), dtype, device))
                if bias:
                    setattr(self, group[2], _new_param((G,), dtype, device))
                    setattr(self, group[3], _new_param((G,), dtype, device))
                if self.proj_size:  # after the biases, PyTorch's order
                    setattr(self, f"weight_hr{sfx}", _new_param((self.proj_size, self.hidden_size), dtype, device))
                names.append(group)
        self._flat_names = names
        self.reset_parameters()

    @property
    def impl(self):
        """How each layer and direction runs: "sequence" (default: one fused op for the whole
        sequence), "step" (one fused op per timestep) or "composed" (the cell equations as
        primitive ops: BPTT by the engine alone, the reference). All three give the same
        numbers to rounding; the tests hold them to that."""
        return self._impl

    @impl.setter
    def impl(self, impl):
        if impl not in IMPLS:
            raise ValueError(f"{type(self).__name__}: impl must be one of {', '.join(map(repr, IMPLS))}, "
                             f"got {impl!r}")
        self._impl = impl

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def _h_size(self):
        """The size of h (the output's features a direction): proj_size where there is one."""
        return self.proj_size or self.hidden_size

    def _w_hr(self, k):
        """Layer and direction k's projection weight_hr (proj_size, hidden_size), or None."""
        if not self.proj_size:
            return None
        return self._parameters[self._flat_names[k][0].replace("weight_ih", "weight_hr")]

    def reset_parameters(self):
        _reset_uniform(self, self.hidden_size)

    def _weights(self, k):
        """Layer and direction k's (w_ih, w_hh, b_ih, b_hh). In training with weight_dropout,
        w_hh is DropConnected here (AWD-LSTM's WeightDrop): one mask per forward, as this runs
        once per layer and direction, and the masked weight goes into the sequence op as its
        w_hh, so the C++/CUDA loop runs as ever and the gradient reaches the raw parameter,
        whose name (and so the state dict) is unchanged."""
        p = self._parameters
        w_ih, w_hh, b_ih, b_hh = (p.get(n) for n in self._flat_names[k])
        if self.weight_dropout and self.training:
            w_hh = F.dropout(w_hh, self.weight_dropout, training=True)
        return w_ih, w_hh, b_ih, b_hh

    def _drop_between(self, x, packed=None):
        """Dropout between stacked layers on x, (T, B, F) or a packed batch's data (N, F):
        a new mask per element, or with dropout_mode="locked" one per sequence for all steps."""
        if self.dropout_mode == "elementwise":
            return F.dropout(x, self.dropout, training=True)
        if packed is None:
            return locked_dropout(x, self.dropout, training=True)
        return locked_dropout(PackedSequence(x, packed.batch_sizes), self.dropout, training=True).data

    def flatten_parameters(self):
        """No-op, for code written against PyTorch (cuDNN's weight packing has no counterpart here)."""

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            s += f", nonlinearity='{self.nonlinearity}'"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
            if self.dropout_mode != "elementwise":
                s += f", dropout_mode='{self.dropout_mode}'"
        if self.weight_dropout:
            s += f", weight_dropout={self.weight_dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.impl != "sequence":
            s += f", impl='{self.impl}'"
        return s

    # ------------------------------------------------------------------ input checks
    def _prepare(self, x, hx):
        """x as (T, B, I), the initial states as lists of L*D (B, H) tensors (or None), and batched-ness."""
        name = type(self).__name__
        w = self.weight_ih_l0
        _check_tensor(name, "input", x, w)
        given = x.shape
        layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
        if x.ndim not in (2, 3):
            raise ShapeError(f"{name}: expected input of shape {layout}, or (seq_len, input_size) unbatched, "
                             f"got {x.ndim}-D shape {fmt_shape(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ShapeError(f"{name}: input has {x.shape[-1]} features (shape {fmt_shape(x.shape)}) but the layer "
                             f"was built with input_size={self.input_size}")
        batched = x.ndim == 3
        if not batched:
            x = x.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        T, batch = x.shape[0], x.shape[1]
        if T == 0:
            raise ShapeError(f"{name}: the input sequence is empty (shape {fmt_shape(x.shape)}, seq_len 0)")
        LD = self.num_layers * self.num_directions
        sizes = {"h0": self._h_size, "c0": self.hidden_size}
        what = ("h0", "c0") if self.kind.has_cell else ("h0",)
        if hx is None:
            return x, [None] * len(what), batched
        if self.kind.has_cell:
            if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                raise TypeError(f"{name}: the initial state must be a tuple (h0, c0), got {type(hx).__name__}")
            states = list(hx)
        else:
            states = [hx]
        out = []
        for label, s in zip(what, states):
            _check_tensor(name, label, s, w)
            want = (LD, batch, sizes[label]) if batched else (LD, sizes[label])
            size = "proj_size" if label == "h0" and self.proj_size else "hidden_size"
            if s.shape != want:
                dims = f"(num_layers * num_directions, batch, {size})" if batched else \
                    f"(num_layers * num_directions, {size}) for unbatched input"
                raise ShapeError(f"{name}: {label} must have shape {fmt_shape(want)} {dims}, "
                                 f"got {fmt_shape(s.shape)} (input of shape {fmt_shape(given)})")
            out.append((s if batched else s.unsqueeze(1)).unbind(0))
        return x, out, batched

    # ------------------------------------------------------------------ forward
    def forward(self, x, hx=None):
        if isinstance(x, PackedSequence):
            return self._forward_packed(x, hx)
        x, states, batched = self._prepare(x, hx)
        D = self.num_directions
        finals = [[] for _ in states]
        layer_in = x
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                init = [None if s is None else s[k] for s in states]
                out, last = self._direction(layer_in, k, init, reverse=d == 1)
                outs.append(out)
                for f, s in zip(finals, last):
                    f.append(s)
            layer_in = outs[0] if D == 1 else concat(outs, axis=2)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = self._drop_between(layer_in)
        output = layer_in
        finals = [stack(f, axis=0) for f in finals]
        if not batched:
            output = output.squeeze(1)
            finals = [f.squeeze(1) for f in finals]
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, (tuple(finals) if self.kind.has_cell else finals[0])

    def _direction(self, x, k, init, reverse):
        """One layer in one direction over x (T, B, I): (outputs (T, B, H), [final states])."""
        w_ih, w_hh, b_ih, b_hh = self._weights(k)
        kind, nl = self.kind, getattr(self, "nonlinearity", "tanh")
        h, c = init[0], (init[1] if kind.has_cell else None)
        w_hr = self._w_hr(k)
        if w_hr is not None and self._impl == "sequence":
            res = rnnops.LSTMProjSequence.apply(x, w_ih, w_hh, b_ih, b_hh, w_hr, h, c, reverse=reverse)
            return res[0], list(res[1:])
        if self._impl == "sequence":
            lookup = _embedding_lookup(x) if k < self.num_directions else None
            if lookup is not None:
                gx = _folded_projection(kind, w_ih, b_ih, b_hh, lookup)
                res = kind.sequence.apply(gx, None, w_hh, None, b_hh if kind is _GRU else None, h, c,
                                          reverse=reverse, nonlinearity=nl)
            else:
                res = kind.sequence.apply(x, w_ih, w_hh, b_ih, b_hh, h, c, reverse=reverse, nonlinearity=nl)
            return res[0], list(res[1:])
        T, batch, I = x.shape
        H, G = self.hidden_size, kind.gates * self.hidden_size
        # The fused RNN/LSTM steps take one bias: fold b_hh into the projection once per call
        # instead of adding it at every step. The GRU cannot, since b_hn sits inside r * (...).
        step, bias, b_step = kind.composed, b_ih, b_hh
        if self._impl == "step":
            step = kind.cell
            if kind is not _GRU:
                bias = b_ih if b_ih is None else b_ih + b_hh
                b_step = None
        proj = x.reshape(T * batch, I) @ w_ih.T  # all timesteps in one matmul
        if bias is not None:
            proj = proj + bias
        xs = proj.reshape(T, batch, G).unbind(0)  # one node, T outputs
        w_hh_t = w_hh.T  # transposed once per call, not once per step
        w_hr_t = None if w_hr is None else w_hr.T
        if h is None:
            h = self._zeros((batch, self._h_size))
        if kind.has_cell and c is None:
            c = self._zeros((batch, H))
        outs = [None] * T
        for t in range(T - 1, -1, -1) if reverse else range(T):
            # even from a zero initial state: W_hh then gets a zero gradient, not none, as in PyTorch
            h, c = step(xs[t], MatMul.apply(h, w_hh_t), b_step, h, c, nl)
            if w_hr_t is not None:
                h = h @ w_hr_t
            outs[t] = h
        return stack(outs, axis=0), ([h, c] if kind.has_cell else [h])

    # ------------------------------------------------------------------ packed sequences
    def _forward_packed(self, packed, hx):
        """forward over a PackedSequence: the same layers, each step on the rows still running
        (rnnops.PackedSteps); h0/c0 and h_n/c_n in the batch's original order, as PyTorch's."""
        name = type(self).__name__
        data = packed.data
        _check_tensor(name, "input", data, self.weight_ih_l0)
        if data.ndim != 2 or data.shape[1] != self.input_size:
            raise ShapeError(f"{name}: a packed input's data must be (sum of lengths, input_size="
                             f"{self.input_size}), got shape {fmt_shape(data.shape)}")
        bs = packed.host_batch_sizes()
        if data.shape[0] != int(bs.sum()):
            raise ShapeError(f"{name}: the packed data has {data.shape[0]} rows but its batch_sizes add up to "
                             f"{int(bs.sum())}")
        order = None if packed.sorted_indices is None else packed.host_sorted_indices()
        batch = packed.batch_size
        # the states stay in the batch's order: the steps reorder them (order: the sorted rows')
        steps = rnnops.PackedSteps(rnnops.lengths_of(bs.tolist(), batch), order)
        states = self._packed_states(hx, batch)
        D = self.num_directions
        finals = [[] for _ in states]
        layer_in = data
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                out, last = self._direction_packed(layer_in, k, [None if s is None else s[k] for s in states],
                                                   d == 1, steps)
                outs.append(out)
                for f, s in zip(finals, last):
                    f.append(s)
            layer_in = outs[0] if D == 1 else concat(outs, axis=1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_in = self._drop_between(layer_in, packed)
        finals = [stack(f, axis=0) for f in finals]
        output = PackedSequence(layer_in, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        return output, (tuple(finals) if self.kind.has_cell else finals[0])

    def _packed_states(self, hx, batch):
        """The initial states as lists of L*D (B, H) tensors, in the batch's order (or None)."""
        name, w = type(self).__name__, self.weight_ih_l0
        what = ("h0", "c0") if self.kind.has_cell else ("h0",)
        if hx is None:
            return [None] * len(what)
        if self.kind.has_cell and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{name}: the initial state must be a tuple (h0, c0), got {type(hx).__name__}")
        out = []
        for label, s in zip(what, hx if self.kind.has_cell else [hx]):
            _check_tensor(name, label, s, w)
            want = (self.num_layers * self.num_directions, batch, self._h_size if label == "h0" else self.hidden_size)
            if s.shape != want:
                raise ShapeError(f"{name}: {label} must have shape {fmt_shape(want)} (num_layers * num_directions, "
                                 f"batch, {'proj_size' if label == 'h0' and self.proj_size else 'hidden_size'}) "
                                 f"for a packed batch of {batch}, got {fmt_shape(s.shape)}")
            out.append(list(s.unbind(0)))
        return out

    def _direction_packed(self, x, k, init, reverse, steps):
        """One layer in one direction over packed x (N, I): (outputs (N, H) packed, [final states]),
        the states in the batch's order (the sequence ops reorder them themselves)."""
        w_ih, w_hh, b_ih, b_hh = self._weights(k)
        kind, nl = self.kind, getattr(self, "nonlinearity", "tanh")
        h, c = init[0], (init[1] if kind.has_cell else None)
        w_hr = self._w_hr(k)
        if self._impl == "sequence":
            lookup = _embedding_lookup(x) if k < self.num_directions and w_hr is None else None
            if w_hr is not None:
                res = rnnops.LSTMProjSequence.apply(x, w_ih, w_hh, b_ih, b_hh, w_hr, h, c, reverse=reverse,
                                                    steps=steps)
            elif lookup is not None:
                gx = _folded_projection(kind, w_ih, b_ih, b_hh, lookup)
                res = kind.sequence.apply(gx, None, w_hh, None, b_hh if kind is _GRU else None, h, c,
                                          reverse=reverse, nonlinearity=nl, steps=steps)
            else:
                res = kind.sequence.apply(x, w_ih, w_hh, b_ih, b_hh, h, c, reverse=reverse, nonlinearity=nl,
                                          steps=steps)
            return res[0], list(res[1:])
        B, H = steps.B, self.hidden_size
        order = steps.order
        if order is not None:  # the sorted rows' states
            h, c = (None if s is None else _rows(s, order) for s in (h, c))
        step, bias, b_step = kind.composed, b_ih, b_hh
        if self._impl == "step":
            step = kind.cell
            if kind is not _GRU:
                bias = b_ih if b_ih is None else b_ih + b_hh
                b_step = None
        proj = x @ w_ih.T  # the packed rows only
        if bias is not None:
            proj = proj + bias
        xs = proj.split(steps.bs, axis=0) if steps.T else ()  # one node, one block a step
        w_hh_t, w_hr_t = w_hh.T, (None if w_hr is None else w_hr.T)
        h = self._zeros((B, self._h_size)) if h is None else h
        if kind.has_cell and c is None:
            c = self._zeros((B, H))
        outs = [None] * steps.T
        for t in range(steps.T - 1, -1, -1) if reverse else range(steps.T):
            m = steps.bs[t]  # the rows still running; the others keep their states
            hm, cm = (h, c) if m == B else (h[:m], None if c is None else c[:m])
            hn, cn = step(xs[t], MatMul.apply(hm, w_hh_t), b_step, hm, cm, nl)
            if w_hr_t is not None:
                hn = hn @ w_hr_t
            outs[t] = hn
            h = hn if m == B else concat([hn, h[m:]], axis=0)
            if c is not None:
                c = cn if m == B else concat([cn, c[m:]], axis=0)
        out = concat(outs, axis=0) if outs else self._zeros((0, self._h_size))
        last = [h, c] if kind.has_cell else [h]
        return out, (last if order is None else [_rows(s, steps.inverse) for s in last])

    def _zeros(self, shape):
        w = self.weight_ih_l0
        return Tensor._make(w.device.xp.zeros(shape, dtype=w.data.dtype), w.device, None, 0)


class RNN(_RNNBase):
    """A multi-layer Elman RNN over a sequence, PyTorch's nn.RNN:

        h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)   (or relu)

    RNN(input_size, hidden_size, num_layers=1, nonlinearity='tanh', bias=True,
        batch_first=False, dropout=0.0, bidirectional=False, impl='sequence', dtype=None, device=None)
    forward(x, h0=None) -> (output, h_n): x (T, B, I) ((B, T, I) if batch_first, or (T, I)
    unbatched), h0 (num_layers * num_directions, B, H); output (T, B, num_directions * H),
    h_n like h0. Layer k > 0 takes the previous layer's output; dropout (training only)
    goes between layers. Parameters weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k},
    bias_hh_l{k}, and ..._reverse for the backward direction. `impl` picks the
    implementation (see `impl`).

    The AWD-LSTM regularisers, all three kinds, every impl, padded or packed input, training
    only: weight_dropout=p DropConnects weight_hh_l{k} with one mask per forward;
    dropout_mode="locked" makes the dropout between layers variational (one mask per
    sequence, shared across time steps) instead of elementwise.
    """

    kind = _RNN

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, impl="sequence", dtype=None, device=None, *,
                 weight_dropout=0.0, dropout_mode="elementwise"):
        _check_nonlinearity("RNN", nonlinearity)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, impl,
                         dtype, device, weight_dropout=weight_dropout, dropout_mode=dropout_mode)
        self.nonlinearity = nonlinearity


class LSTM(_RNNBase):
    """A multi-layer LSTM over a sequence, PyTorch's nn.LSTM (gates i, f, g, o; see LSTMCell):

        i, f, g, o = sigmoid/sigmoid/tanh/sigmoid(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)
        c_t = f * c_(t-1) + i * g,    h_t = o * tanh(c_t)

    LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
         bidirectional=False, proj_size=0, impl='sequence', dtype=None, device=None)
    forward(x, (h0, c0)=None) -> (output, (h_n, c_n)), shapes as in RNN.

    proj_size > 0 (PyTorch's LSTM with projections): h_t = W_hr (o_t * tanh(c_t)) has
    proj_size features, through weight_hr_l{k} (proj_size, hidden_size); weight_hh_l{k} is
    (4 * hidden_size, proj_size), layers past the first take num_directions * proj_size
    inputs, h0/h_n are (num_layers * num_directions, B, proj_size), c0/c_n stay hidden_size.
    """

    kind = _LSTM

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, impl="sequence", dtype=None, device=None, *,
                 weight_dropout=0.0, dropout_mode="elementwise"):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional, impl,
                         dtype, device, proj_size=proj_size, weight_dropout=weight_dropout,
                         dropout_mode=dropout_mode)


class GRU(_RNNBase):
    """A multi-layer GRU over a sequence, PyTorch's nn.GRU (gates r, z, n; see GRUCell):

        r = sigmoid(W_ir x_t + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x_t + b_iz + W_hz h + b_hz)
        n = tanh(W_in x_t + b_in + r * (W_hn h + b_hn)),  h_t = (1 - z) * n + z * h

    GRU(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
        bidirectional=False, impl='sequence', dtype=None, device=None)
    forward(x, h0=None) -> (output, h_n), shapes as in RNN.
    """

    kind = _GRU
