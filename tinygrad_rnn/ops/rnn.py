"""Fused recurrent cells: the gate nonlinearities and state update of one timestep as
one graph node with a hand-derived backward.

The matmuls stay ordinary engine ops; these take the gate pre-activations in two parts,
`gx` (the input side, with the biases folded in, one row of the layer's single input
projection) and `gh` (h @ W_hh^T), in PyTorch's blocked gate order. The elementwise math
lives on the device (`Device.lstm_cell_forward` & co. in backend.py: array-API code, one
CUDA kernel each way on CuPy), so these classes only check shapes and route gradients.

Derivations (s' = s(1 - s) for a sigmoid s, t' = 1 - t^2 for a tanh t; d. = dLoss/d.):

RNN:  h = act(p), p = gx + gh.
      dp = dh (1 - h^2) for tanh, dh [h > 0] for relu; dgx = dgh = dp.

LSTM: a = gx + gh = [a_i, a_f, a_g, a_o]; i, f, o = sigmoid(a_i, a_f, a_o), g = tanh(a_g);
      c' = f c + i g;  h' = o tanh(c').
      c' reaches the loss directly (dc' from the next step) and through h':
        dc~ = dc' + dh' o (1 - tanh(c')^2)
      then  da_i = dc~ g i',  da_f = dc~ c f',  da_g = dc~ i (1 - g^2),
            da_o = dh' tanh(c') o',  dc = dc~ f;  dgx = dgh = da.

GRU (PyTorch's): gh excludes b_hh, which comes in separately because its n part sits
      inside r * (...):  r = sigmoid(gx_r + gh_r + b_hr), z = sigmoid(gx_z + gh_z + b_hz),
      hn = gh_n + b_hn,  n = tanh(gx_n + r hn),  h' = (1 - z) n + z h = n + z (h - n).
        dn~ = dh' (1 - z) (1 - n^2)          (d of n's pre-activation)
        dr~ = dn~ hn r',   dz~ = dh' (h - n) z',   dh = dh' z
      dgx = [dr~, dz~, dn~],  dgh = [dr~, dz~, dn~ r],  db_hh = dgh summed over the batch
      (the engine's unbroadcast does that sum, since b_hh has shape (3H,)).
"""
from ..autograd import Function
from ..errors import ShapeError, fmt_shape


def _check(op, gx, gh, state, gates):
    if state.ndim != 2:
        raise ShapeError(f"{op}: the state must be 2-D (batch, hidden), got shape {fmt_shape(state.shape)}")
    B, H = state.shape
    want = (B, gates * H)
    if tuple(gx.shape) != want or tuple(gh.shape) != want:
        raise ShapeError(f"{op}: gate pre-activations must have shape {fmt_shape(want)} (batch, {gates} * hidden) "
                         f"for a state of shape {fmt_shape(state.shape)}, got gx {fmt_shape(gx.shape)} "
                         f"and gh {fmt_shape(gh.shape)}")


class RNNCellFn(Function):
    """h' = tanh(gx + gh) or relu(gx + gh)."""

    @staticmethod
    def forward(ctx, gx, gh, nonlinearity="tanh"):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"rnn_cell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        if tuple(gx.shape) != tuple(gh.shape):
            raise ShapeError(f"rnn_cell: gx {fmt_shape(gx.shape)} and gh {fmt_shape(gh.shape)} must have the same shape")
        h, saved = ctx.device.rnn_cell_forward(gx, gh, nonlinearity)
        ctx.nonlinearity = nonlinearity
        ctx.save_for_backward(*saved)
        return h

    @staticmethod
    def backward(ctx, dh):
        dp = ctx.device.rnn_cell_backward(ctx.saved_tensors, dh, ctx.nonlinearity)
        return dp, dp


class LSTMCellFn(Function):
    """(h', c') from gx, gh (batch, 4H) and c (batch, H)."""

    @staticmethod
    def forward(ctx, gx, gh, c):
        _check("lstm_cell", gx, gh, c, 4)
        h, c_new, saved = ctx.device.lstm_cell_forward(gx, gh, c)
        ctx.save_for_backward(*saved)
        return h, c_new

    @staticmethod
    def backward(ctx, dh, dc):
        da, dc_prev = ctx.device.lstm_cell_backward(ctx.saved_tensors, dh, dc)
        return da, da, dc_prev


class GRUCellFn(Function):
    """h' from gx, gh (batch, 3H), b_hh (3H,) or None, and h (batch, H)."""

    @staticmethod
    def forward(ctx, gx, gh, b_hh, h):
        _check("gru_cell", gx, gh, h, 3)
        if b_hh is not None and tuple(b_hh.shape) != (gx.shape[1],):
            raise ShapeError(f"gru_cell: b_hh must have shape ({gx.shape[1]},), got {fmt_shape(b_hh.shape)}")
        h_new, saved = ctx.device.gru_cell_forward(gx, gh, b_hh, h)
        ctx.save_for_backward(*saved)
        return h_new

    @staticmethod
    def backward(ctx, dh):
        dgx, dgh, dh_prev = ctx.device.gru_cell_backward(ctx.saved_tensors, dh)
        return dgx, dgh, (dgh if ctx.needs_input_grad[2] else None), dh_prev
