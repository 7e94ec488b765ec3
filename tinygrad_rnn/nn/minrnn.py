"""minGRU and minLSTM ("Were RNNs All We Needed?", Feng et al., 2024).

Strip the hidden state out of the gates of a GRU or an LSTM and the recurrence becomes
linear in h:

    minGRU:   z_t = sigmoid(W_z x_t),  h~_t = g(W_h x_t)
              h_t = (1 - z_t) * h_{t-1} + z_t * h~_t
    minLSTM:  f_t = sigmoid(W_f x_t),  i_t = sigmoid(W_i x_t),  h~_t = g(W_h x_t)
              f'_t, i'_t = f_t / (f_t + i_t), i_t / (f_t + i_t)
              h_t = f'_t * h_{t-1} + i'_t * h~_t

with g(x) = x + 0.5 for x >= 0, sigmoid(x) otherwise (keeps h~ positive, so the
recurrence can be run in log space). Every coefficient depends on the input only, so
h_t = a_t h_{t-1} + b_t can be solved for all t at once. In log space (Heinsen, 2023):

    a*_t  = cumsum(log a_t)                              (log of a_1 a_2 ... a_t)
    h_t   = exp(a*_t) h_0 + exp(a*_t + logcumsumexp(log b_t - a*_t))

Both terms are bounded (a_t <= 1, so exp(a*_t) <= 1), and the whole sequence costs a
handful of whole-array ops instead of T small ones: the *parallel* mode, for training.
The *sequential* mode runs the same equations one step at a time, in linear space: the
reference the parallel mode is tested against, and what generation uses (`step`).

The h_0 term is kept outside the logarithm (the paper takes log h_0), so any h_0 works,
zero and negative included.

Precision: log h_t is the sum of two large terms of opposite sign, a*_t and the
logcumsumexp, each about |a*_t| (which grows with length and with how often the gates
saturate). In float32 the parallel mode's relative error is therefore a few
eps32 * max|a*_t|: about 3e-4 after 2,048 strongly gated steps (|a*| ~ 2,000), against
~1e-6 for the sequential mode (tests/test_minrnn.py states this bound). In float64, or
for sequences of a few hundred steps, the two modes agree to rounding.
"""
from __future__ import annotations

import math

from .. import backend as B
from ..errors import ShapeError, fmt_shape
from ..tensor import Tensor, stack, where
from . import functional as F
from .module import Module, Parameter

__all__ = ["MinGRU", "MinLSTM", "g", "log_g"]

MODES = ("parallel", "sequential")


def g(x: Tensor) -> Tensor:
    """The paper's positive activation: x + 0.5 for x >= 0, sigmoid(x) below (continuous at 0)."""
    return where(x >= 0, x.relu() + 0.5, x.sigmoid())


def log_g(x: Tensor) -> Tensor:
    """log(g(x)), computed without ever forming a sigmoid that underflows to 0."""
    return where(x >= 0, (x.relu() + 0.5).log(), x.log_sigmoid())


class _MinRNN(Module):
    """Shared by MinGRU and MinLSTM: parameters, shapes, layers, modes. Subclasses give the
    gate count and the two forms (log-space coefficients; linear-space coefficients)."""

    n_gates = 0

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 mode="parallel", device=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        if not (isinstance(input_size, int) and input_size > 0 and isinstance(hidden_size, int) and hidden_size > 0):
            raise ValueError(f"{name}: input_size and hidden_size must be positive ints, "
                             f"got {input_size!r} and {hidden_size!r}")
        if not (isinstance(num_layers, int) and num_layers >= 1):
            raise ValueError(f"{name}: num_layers must be an int >= 1, got {num_layers!r}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1], got {dropout}")
        self._check_mode(mode)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.mode = bias, batch_first, dropout, mode
        dev = B.get_device(device)
        dt = B.to_dtype(dtype) if dtype is not None else B.get_default_dtype()
        bound = 1.0 / math.sqrt(hidden_size)  # PyTorch's RNN default: U(-1/sqrt(H), 1/sqrt(H))
        for k in range(num_layers):
            n_in = input_size if k == 0 else hidden_size
            w = (dev.rand((self.n_gates * hidden_size, n_in), dt) * 2.0 - 1.0) * bound
            setattr(self, f"weight_ih_l{k}", Parameter(Tensor._make(w, dev, None, 0)))
            if bias:
                b = (dev.rand((self.n_gates * hidden_size,), dt) * 2.0 - 1.0) * bound
                setattr(self, f"bias_ih_l{k}", Parameter(Tensor._make(b, dev, None, 0)))
            else:
                self.register_parameter(f"bias_ih_l{k}", None)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s + f", mode='{self.mode}'"

    def _check_mode(self, mode):
        if mode not in MODES:
            raise ValueError(f"{type(self).__name__}: mode must be 'parallel' or 'sequential', got {mode!r}")

    # ------------------------------------------------------------------ the two forms of the recurrence
    def _log_coeffs(self, gates):
        """(log a_t, log b_t) for h_t = a_t h_{t-1} + b_t, from the projected gates."""
        raise NotImplementedError

    def _coeffs(self, gates):
        """(a_t, b_t) in linear space: the equations exactly as the paper's sequential mode reads."""
        raise NotImplementedError

    def _project(self, x, k):
        """All timesteps' gate pre-activations in one matmul: (..., I) -> (..., n_gates * H)."""
        w = getattr(self, f"weight_ih_l{k}")
        b = getattr(self, f"bias_ih_l{k}")
        lead = x.shape[:-1]
        out = x.reshape(-1, x.shape[-1]) @ w.T
        if b is not None:
            out = out + b
        return out.reshape(*lead, w.shape[0])

    # ------------------------------------------------------------------ checking
    def _check_input(self, x, h0):
        name = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: input must be a Tensor, got {type(x).__name__}")
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_size:
            want = "(B, T, {0})" if self.batch_first else "(T, B, {0})"
            raise ShapeError(f"{name}: expected input of shape {want.format(self.input_size)} or unbatched "
                             f"(T, {self.input_size}), got {fmt_shape(x.shape)}")
        if h0 is not None:
            batch = () if x.ndim == 2 else (x.shape[0] if self.batch_first else x.shape[1],)
            want = (self.num_layers,) + batch + (self.hidden_size,)
            if not isinstance(h0, Tensor) or h0.shape != want:
                got = fmt_shape(h0.shape) if isinstance(h0, Tensor) else type(h0).__name__
                raise ShapeError(f"{name}: h0 must have shape {fmt_shape(want)} (num_layers, batch, hidden_size) "
                                 f"for input of shape {fmt_shape(x.shape)}, got {got}")

    # ------------------------------------------------------------------ running
    def forward(self, x, h0=None, mode=None):
        """x: (T, B, I) ((B, T, I) with batch_first, or unbatched (T, I)); h0: (num_layers, B, H)
        or None for zeros. Returns (output (T, B, H), h_n (num_layers, B, H)), as nn.GRU does.
        mode overrides the layer's mode for this call ('parallel' or 'sequential')."""
        mode = self.mode if mode is None else mode
        self._check_mode(mode)
        self._check_input(x, h0)
        unbatched = x.ndim == 2
        if unbatched:
            x = x.unsqueeze(1)
            h0 = None if h0 is None else h0.unsqueeze(1)
        elif self.batch_first:
            x = x.transpose(0, 1)
        if x.shape[0] == 0:
            raise ShapeError(f"{type(self).__name__}: the input sequence is empty (shape {fmt_shape(x.shape)})")
        run = self._parallel if mode == "parallel" else self._sequential
        finals = []
        for k in range(self.num_layers):
            if k > 0 and self.dropout and self.training:
                x = F.dropout(x, self.dropout, training=True)
            x = run(self._project(x, k), None if h0 is None else h0[k])
            finals.append(x[-1])
        h_n = stack(finals, axis=0)
        if unbatched:
            return x.squeeze(1), h_n.squeeze(1)
        if self.batch_first:
            x = x.transpose(0, 1)
        return x, h_n

    def _parallel(self, gates, h0):
        log_a, log_b = self._log_coeffs(gates)
        a_star = log_a.cumsum(0)
        h = (a_star + (log_b - a_star).logcumsumexp(0)).exp()
        if h0 is not None:
            h = h + a_star.exp() * h0
        return h

    def _sequential(self, gates, h0):
        a, b = self._coeffs(gates)
        h = h0
        out = []
        for a_t, b_t in zip(a.unbind(0), b.unbind(0)):
            h = b_t if h is None else a_t * h + b_t
            out.append(h)
        return stack(out, axis=0)

    def step(self, x_t, h=None):
        """One timestep for generation: x_t (B, I) and h (num_layers, B, H) or None ->
        (top layer's h_t (B, H), new h (num_layers, B, H))."""
        name = type(self).__name__
        if not isinstance(x_t, Tensor) or x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            got = fmt_shape(x_t.shape) if isinstance(x_t, Tensor) else type(x_t).__name__
            raise ShapeError(f"{name}.step: expected x_t of shape (B, {self.input_size}), got {got}")
        want = (self.num_layers, x_t.shape[0], self.hidden_size)
        if h is not None and (not isinstance(h, Tensor) or h.shape != want):
            got = fmt_shape(h.shape) if isinstance(h, Tensor) else type(h).__name__
            raise ShapeError(f"{name}.step: h must have shape {fmt_shape(want)}, got {got}")
        out = []
        inp = x_t
        for k in range(self.num_layers):
            if k > 0 and self.dropout and self.training:
                inp = F.dropout(inp, self.dropout, training=True)
            a, b = self._coeffs(self._project(inp, k))
            inp = b if h is None else a * h[k] + b
            out.append(inp)
        return inp, stack(out, axis=0)


class MinGRU(_MinRNN):
    """minGRU: h_t = (1 - z_t) h_{t-1} + z_t g(W_h x_t), z_t = sigmoid(W_z x_t).

    Parameters as nn.GRU names them: weight_ih_l{k} (2H, I) with the gates stacked (z, h),
    bias_ih_l{k} (2H,). No hidden-to-hidden weights: that is the point of the model.

        rnn = nn.MinGRU(8, 32)
        out, h_n = rnn(x)                        # x (T, B, 8), the log-space parallel scan
        out, h_n = rnn(x, mode="sequential")     # the same numbers, a loop over time
        y, h = rnn.step(x_t, h)                  # one step, for generation
    """

    n_gates = 2

    def _log_coeffs(self, gates):
        k, pre = gates.chunk(2, axis=-1)
        # log(1 - sigmoid(k)) = log_sigmoid(-k);  log z = log_sigmoid(k)
        return (-k).log_sigmoid(), k.log_sigmoid() + log_g(pre)

    def _coeffs(self, gates):
        k, pre = gates.chunk(2, axis=-1)
        z = k.sigmoid()
        return 1.0 - z, z * g(pre)


class MinLSTM(_MinRNN):
    """minLSTM: h_t = f'_t h_{t-1} + i'_t g(W_h x_t), with f_t, i_t = sigmoid(W_f x_t), sigmoid(W_i x_t)
    normalised to f'_t + i'_t = 1 (the paper's length-independent scaling).

    weight_ih_l{k} (3H, I) with the gates stacked (f, i, h); otherwise as MinGRU.
    """

    n_gates = 3

    def _log_coeffs(self, gates):
        f, i, pre = gates.chunk(3, axis=-1)
        # log f' = log(sf / (sf + si)) = -softplus(log si - log sf), with log s(x) = -softplus(-x)
        diff = (-f).softplus() - (-i).softplus()
        return -diff.softplus(), -(-diff).softplus() + log_g(pre)

    def _coeffs(self, gates):
        f, i, pre = gates.chunk(3, axis=-1)
        f, i = f.sigmoid(), i.sigmoid()
        total = f + i
        return f / total, i / total * g(pre)
