"""A layer-normalised LSTM (Ba, Kiros and Hinton 2016, "Layer Normalization", section 3.1):

    gates = LN(W_hh h; g_hh) + LN(W_ih x; g_ih) + b        (the 4H pre-activations, i f g o)
    c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
    h' = sigmoid(o) * tanh(LN(c'; g_c, b_c))

Composed from Tensor ops, so BPTT is the engine's: the input part of all time steps is one
matmul and one layer norm, then one step of ops per time step. The paper's shifts of the two
gate norms add to b, so they are b alone here.
"""
from __future__ import annotations

import math
import numbers

from ..errors import ShapeError, fmt_shape
from ..tensor import Tensor, stack
from . import functional as F
from .module import Module
from .regularization import locked_dropout
from .rnn import _check_regularisers, _check_sizes, _check_tensor, _new_param
from .utils.rnn import PackedSequence

__all__ = ["LayerNormLSTM"]


class LayerNormLSTM(Module):
    """A multi-layer layer-normalised LSTM with nn.LSTM's forward contract:
    forward(x, (h0, c0)=None) -> (output, (h_n, c_n)); x (T, B, input_size), or (B, T, ...) if
    batch_first; states (num_layers, B, hidden_size).

    LayerNormLSTM(input_size, hidden_size, num_layers=1, batch_first=False, dropout=0.0,
                  eps=1e-5, dtype=None, device=None, *, weight_dropout=0.0, dropout_mode="elementwise")
    Per layer k: weight_ih_l{k} (4H, I), weight_hh_l{k} (4H, H), bias_l{k} (4H) (U(-1/sqrt(H),
    1/sqrt(H)), as nn.LSTM's), the gains ln_ih_weight_l{k}, ln_hh_weight_l{k} (4H) and
    ln_c_weight_l{k} (H) (ones) and ln_c_bias_l{k} (H) (zeros). dropout, dropout_mode and
    weight_dropout as in nn.LSTM.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, batch_first=False, dropout=0.0, eps=1e-5,
                 dtype=None, device=None, *, weight_dropout=0.0, dropout_mode="elementwise"):
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size, hidden_size)
        _check_regularisers(name, weight_dropout, dropout_mode)
        if not isinstance(num_layers, numbers.Integral) or isinstance(num_layers, bool) or num_layers < 1:
            raise ValueError(f"{name}: num_layers must be a positive integer, got {num_layers!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = int(input_size), int(hidden_size), int(num_layers)
        self.batch_first, self.dropout, self.eps = bool(batch_first), float(dropout), float(eps)
        self.weight_dropout, self.dropout_mode = float(weight_dropout), dropout_mode
        H, G = self.hidden_size, 4 * self.hidden_size
        for k in range(self.num_layers):
            I = self.input_size if k == 0 else H
            for pname, shape in ((f"weight_ih_l{k}", (G, I)), (f"weight_hh_l{k}", (G, H)), (f"bias_l{k}", (G,)),
                                 (f"ln_ih_weight_l{k}", (G,)), (f"ln_hh_weight_l{k}", (G,)),
                                 (f"ln_c_weight_l{k}", (H,)), (f"ln_c_bias_l{k}", (H,))):
                setattr(self, pname, _new_param(shape, dtype, device))
        self.reset_parameters()

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for name, p in self.named_parameters():
            if name.startswith(("weight_", "bias_")):
                p.data = (p.device.rand(p.shape, p.dtype) * 2.0 - 1.0) * bound
            else:
                xp = p.device.xp
                p.data = (xp.zeros_like(p.data) if "_bias_" in name else xp.ones_like(p.data))
            p.grad = None

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}" + (", dropout_mode='locked'" if self.dropout_mode == "locked" else "")
        return s + (f", weight_dropout={self.weight_dropout}" if self.weight_dropout else "")

    def _prepare(self, x, hx):
        name, w = type(self).__name__, self.weight_ih_l0
        if isinstance(x, PackedSequence):
            raise TypeError(f"{name}: takes a padded (seq_len, batch, input_size) Tensor, not a PackedSequence; "
                            f"pad it with pad_packed_sequence")
        _check_tensor(name, "input", x, w)
        if x.ndim != 3 or x.shape[-1] != self.input_size:
            layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
            raise ShapeError(f"{name}: expected input of shape {layout} with input_size={self.input_size}, "
                             f"got shape {fmt_shape(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        if hx is None:
            return x, [None] * self.num_layers, [None] * self.num_layers
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"{name}: the initial state must be a tuple (h0, c0), got {type(hx).__name__}")
        want = (self.num_layers, x.shape[1], self.hidden_size)
        for label, s in zip(("h0", "c0"), hx):
            _check_tensor(name, label, s, w)
            if s.shape != want:
                raise ShapeError(f"{name}: {label} must have shape {fmt_shape(want)} (num_layers, batch, "
                                 f"hidden_size), got {fmt_shape(s.shape)}")
        return x, list(hx[0].unbind(0)), list(hx[1].unbind(0))

    def forward(self, x, hx=None):
        x, h0, c0 = self._prepare(x, hx)
        hs, cs = [], []
        for k in range(self.num_layers):
            x, h, c = self._layer(x, k, h0[k], c0[k])
            hs.append(h)
            cs.append(c)
            if self.dropout and self.training and k < self.num_layers - 1:
                x = (locked_dropout(x, self.dropout) if self.dropout_mode == "locked"
                     else F.dropout(x, self.dropout, training=True))
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, (stack(hs, axis=0), stack(cs, axis=0))

    def _layer(self, x, k, h, c):
        """Layer k over x (T, B, I): (outputs (T, B, H), h_T, c_T)."""
        p = self._parameters
        T, B, I = x.shape
        H = self.hidden_size
        w_hh = p[f"weight_hh_l{k}"]
        if self.weight_dropout and self.training:
            w_hh = F.dropout(w_hh, self.weight_dropout, training=True)  # one mask per forward
        gx = F.layer_norm((x.reshape(T * B, I) @ p[f"weight_ih_l{k}"].T), 4 * H, p[f"ln_ih_weight_l{k}"],
                          p[f"bias_l{k}"], self.eps)
        xs = gx.reshape(T, B, 4 * H).unbind(0)
        w_hh_t, g_hh = w_hh.T, p[f"ln_hh_weight_l{k}"]
        g_c, b_c = p[f"ln_c_weight_l{k}"], p[f"ln_c_bias_l{k}"]
        zeros = self.weight_ih_l0.device.xp.zeros((B, H), dtype=self.weight_ih_l0.data.dtype)
        h = Tensor._make(zeros, self.weight_ih_l0.device, None, 0) if h is None else h
        c = Tensor._make(zeros, self.weight_ih_l0.device, None, 0) if c is None else c
        outs = []
        for t in range(T):
            i, f, g, o = (xs[t] + F.layer_norm(h @ w_hh_t, 4 * H, g_hh, None, self.eps)).chunk(4, axis=1)
            c = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h = o.sigmoid() * F.layer_norm(c, H, g_c, b_c, self.eps).tanh()
            outs.append(h)
        return stack(outs, axis=0), h, c
