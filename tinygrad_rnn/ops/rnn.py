"""Recurrent ops, each kind (RNN, LSTM, GRU) whole in one place: its cell math in a
portable array-API form and as elementwise kernels side by side, one saved layout for
both, and the two fused ops built on that math:

- `LSTMCellFn` & co. ("step"): one timestep's gate math as one graph node; the matmuls
  around it stay ordinary engine ops.
- `LSTMSequence` & co. ("sequence", what the layers run by default): a layer's entire
  sequence in one direction as one node, as cuDNN and oneDNN do. Forward: the input
  projection of all timesteps as one GEMM, then per step only the recurrent GEMM and the
  cell math, written into buffers allocated once. Backward through time by hand: per step
  only what the recurrence needs (d gates_t, then dh_{t-1} = d gates_t @ W_hh); after the
  loop dW_hh, dW_ih, dx and the biases as one GEMM (or sum) each over all timesteps.
  On the CPU with its kernels built, that loop over time runs in C++ (rnn.cpp: the
  same steps and kernels, the recurrent GEMM on W_hh packed once per call, the batch rows
  or the hidden units split over the threads NumPy's BLAS runs on), as a step of Python
  costs ~15 us.

The cell math writes into the arrays it is given (`out=` on NumPy and CuPy; the strict
device assigns instead, `Device.xp_out`). Where the device builds kernels (CUDA through
CuPy; the CPU through the host C++ compiler, see the kernels package) each cell function is
one elementwise kernel each way (`kernels.for_device`), one thread or SIMD lane per
(batch, unit) element of the state reading and writing that unit's gate columns
(b * G * H + j + k * H, PyTorch's blocked gate layout), as Chainer's
functions/activation/lstm.py does; elsewhere (the strict device, a CPU without a
compiler) the portable form runs. The kernels compute sigmoid(x) as 0.5 tanh(0.5 x) + 0.5
like the portable form, but in the device's own tanh (the GPU's; on the CPU a vectorised
one within 1.5 ulp in float32, the C library's in float64): the forms agree to rounding
(a few ulp), not bit for bit, and the tests hold them to that.

Derivations (s' = s(1 - s) for a sigmoid s, t' = 1 - t^2 for a tanh t; d. = dLoss/d.):

RNN:  h = act(p), p = gx + gh.
      dp = dh (1 - h^2) for tanh, dh [h > 0] for relu; dgx = dgh = dp.
      saved: h.

LSTM: a = gx + gh = [a_i, a_f, a_g, a_o]; i, f, o = sigmoid(a_i, a_f, a_o), g = tanh(a_g);
      c' = f c + i g;  h' = o tanh(c').
      c' reaches the loss directly (dc' from the next step) and through h':
        dc~ = dc' + dh' o (1 - tanh(c')^2)
      then  da_i = dc~ g i',  da_f = dc~ c f',  da_g = dc~ i (1 - g^2),
            da_o = dh' tanh(c') o',  dc = dc~ f;  dgx = dgh = da.
      saved: act = [i, f, g, o] (B, 4H), c, c'.

GRU (PyTorch's): gh = W_hh h excludes b_hh, which comes in separately because its n part
      sits inside r * (...):  r = sigmoid(gx_r + gh_r + b_hr), z = sigmoid(gx_z + gh_z + b_hz),
      hn = gh_n + b_hn,  n = tanh(gx_n + r hn),  h' = (1 - z) n + z h = n + z (h - n).
        dn~ = dh' (1 - z) (1 - n^2)          (d of n's pre-activation)
        dr~ = dn~ hn r',   dz~ = dh' (h - n) z',   dh = dh' z
      dgx = [dr~, dz~, dn~],  dgh = [dr~, dz~, dn~ r],  db_hh = dgh summed over the batch.
      saved: act = [r, z, n, hn] (B, 4H), h.  d gates come out as [dr~, dz~, dn~ r, dn~]
      (B, 4H), so dgh is the first 3H columns and dgx the first 2H and the last H.

Through time (one direction, h_t = cell(gx_t, h_{t-1} W_hh^T)): dh_t is the gradient from
the output at t plus the one flowing back from step t + 1 (dh_{t} = d gates_{t+1} W_hh,
and, for the GRU, + dh_{t+1} z_{t+1}); the LSTM's dc_t flows back the same way. With every
step's d gates in one (T, B, G) buffer, the weight gradients are sums over t of rank-B
products, i.e. single GEMMs over T * B rows: dW_hh = dG^T H_prev, dW_ih = dG_x^T X,
dX = dG_x W_ih, and the biases are column sums of dG.
"""
from __future__ import annotations

import itertools
from importlib import resources

from .. import backend, kernels
from ..autograd import Function
from ..errors import DTypeError, ShapeError, fmt_shape
from ..kernels import HostCode, Kernel
from ..kernels import cuda as cuda_kernels

# ----------------------------------------------------------------------------- kernels
# Each cell's math as elementwise kernels (kernels.Kernel), which the device builds: CuPy on
# CUDA, the host C++ compiler on the CPU (kernels/cpu.py). One thread or SIMD lane per
# (batch, unit) element of the state: `b`, `j` its batch row and unit, `k` the same unit's
# first gate column. A `T x` parameter is the element, a `raw T x` the whole array indexed
# by hand. tests/test_rnn_kernels.py runs the CPU build, and the CUDA form of the bodies
# compiled as host C++, against the portable forms below.
KERNELS = {
    "rnn_tanh_fwd": Kernel("T gx, T gh", "T h", "h = tg_tanh(gx + gh);"),
    "rnn_tanh_bwd": Kernel("T h, T dh", "T dpre", "dpre = dh * (1 - h * h);"),
    "rnn_relu_fwd": Kernel("T gx, T gh", "T h", "const T p = gx + gh; h = p > 0 ? p : T(0);"),
    "rnn_relu_bwd": Kernel("T h, T dh", "T dpre", "dpre = h > 0 ? dh : T(0);"),
    "lstm_fwd": Kernel(
        "raw T gx, raw T gh, T c_prev, int32 H",
        "T h, T c, raw T act",
        """
        const ptrdiff_t k = b * 4 * H + j;
        const T ig = tg_sigmoid(gx[k] + gh[k]);
        const T fg = tg_sigmoid(gx[k + H] + gh[k + H]);
        const T gg = tg_tanh(gx[k + 2 * H] + gh[k + 2 * H]);
        const T og = tg_sigmoid(gx[k + 3 * H] + gh[k + 3 * H]);
        act[k] = ig; act[k + H] = fg; act[k + 2 * H] = gg; act[k + 3 * H] = og;
        const T cn = fg * c_prev + ig * gg;
        c = cn;
        h = og * tg_tanh(cn);
        """, row="H"),
    "lstm_bwd": Kernel(
        "raw T act, T c_prev, T c, T dh, T dc, int32 H",
        "raw T dgates, T dc_prev",
        """
        const ptrdiff_t k = b * 4 * H + j;
        const T ig = act[k], fg = act[k + H], gg = act[k + 2 * H], og = act[k + 3 * H];
        const T tc = tg_tanh(c);
        const T dct = dc + dh * og * (1 - tc * tc);
        dgates[k] = dct * gg * ig * (1 - ig);
        dgates[k + H] = dct * c_prev * fg * (1 - fg);
        dgates[k + 2 * H] = dct * ig * (1 - gg * gg);
        dgates[k + 3 * H] = dh * tc * og * (1 - og);
        dc_prev = dct * fg;
        """, row="H"),
    "gru_fwd": Kernel(
        "raw T gx, raw T gh, raw T bh, T h_prev, int32 H",
        "T h, raw T act",
        """
        const ptrdiff_t k = b * 3 * H + j, s = b * 4 * H + j;
        const T rg = tg_sigmoid(gx[k] + gh[k] + bh[j]);
        const T zg = tg_sigmoid(gx[k + H] + gh[k + H] + bh[j + H]);
        const T hn = gh[k + 2 * H] + bh[j + 2 * H];
        const T ng = tg_tanh(gx[k + 2 * H] + rg * hn);
        act[s] = rg; act[s + H] = zg; act[s + 2 * H] = ng; act[s + 3 * H] = hn;
        h = ng + zg * (h_prev - ng);
        """, row="H"),
    "gru_bwd": Kernel(
        "raw T act, T h_prev, T dh, int32 H",
        "raw T dgh, raw T dgx, T dh_z",
        """
        const ptrdiff_t s = b * 4 * H + j, k = b * 3 * H + j;
        const T rg = act[s], zg = act[s + H], ng = act[s + 2 * H], hn = act[s + 3 * H];
        const T dn = dh * (1 - zg) * (1 - ng * ng);
        const T dr = dn * hn * rg * (1 - rg);
        const T dz = dh * (h_prev - ng) * zg * (1 - zg);
        dgh[k] = dr; dgh[k + H] = dz; dgh[k + 2 * H] = dn * rg;
        dgx[k] = dr; dgx[k + H] = dz; dgx[k + 2 * H] = dn;
        dh_z = dh * zg;
        """, row="H"),
}


# The sequence ops' loops over time in C++ for the CPU (kernels.HostCode): rnn.cpp beside this
# file, the same steps as _Sequence.forward and .backward below, without the ~15 us of Python a
# step costs there. Each cell's functions share one parameter list, unused pointers null.
HOST = HostCode(resources.files(__package__) / "rnn.cpp", {
    "seq_fwd": "int cell, int T_, int B, int H, int reverse, int zero_h0, int relu, int threads, "
               "const T* gx, const T* w_hh, const T* b_step, T* gh, T* hs, T* cs, T* act, const int* bs, T* pk",
    "seq_bwd": "int cell, int T_, int B, int H, int reverse, int need_dh0, int relu, int threads, "
               "const T* w_hh, const T* act, const T* hs, const T* cs, const T* d_out, T* dh, T* dc, T* scratch, "
               "T* dgh, T* dgx, const int* bs, T* pk",
    # LSTMProjSequence's loops (an LSTM with projections; always packed steps)
    "proj_fwd": "int T_, int B, int H, int P, int reverse, int threads, const T* w_hh, const T* w_hr, T* gx, "
                "T* gh, T* hs, T* cs, T* raw, const int* bs",
    "proj_bwd": "int T_, int B, int H, int P, int reverse, int need_dh0, int threads, const T* w_hh, const T* w_hr, "
                "const T* act, const T* cs, const T* d_out, T* dh, T* dc, T* draw, T* scratch, T* dhs, T* dg, "
                "const int* bs",
})


# Threads for the loops: 0 follows NumPy's BLAS (its thread count at each call, as
# threadpoolctl or OPENBLAS_NUM_THREADS set it), split by rows with 2 rows a thread at least,
# else by 32 hidden units a thread at least; a positive number is used as given (by rows where
# there are as many, else by units).
HOST_THREADS = 0


def device_kernels(dev):
    """The device's build of this module's kernels and host loops ({name: callable}), or None;
    the one way to ask for them, so that the family is built with its host loops."""
    return kernels.for_device(dev, "rnn", KERNELS, host=HOST)


def _kernel(dev, name):
    """The device's build of kernel `name`, or None where the portable form runs."""
    ks = device_kernels(dev)
    return None if ks is None else ks[name]


# ----------------------------------------------------------------------------- cell math
# Each function writes its results into the arrays it is given and returns nothing. Inputs
# are never written, except where a docstring says an output may be the same array.

def rnn_forward(dev, gx, gh, h, nonlinearity):
    """h <- act(gx + gh)."""
    k = _kernel(dev, f"rnn_{nonlinearity}_fwd")
    if k is not None:
        k(gx, gh, h)
        return
    xo = dev.xp_out
    xo.add(gx, gh, out=h)
    if nonlinearity == "tanh":
        xo.tanh(h, out=h)
    else:
        xo.maximum(h, 0.0, out=h)


def rnn_backward(dev, h, dh, dpre, nonlinearity):
    """dpre <- d(pre-activation) from dh and the saved output h."""
    k = _kernel(dev, f"rnn_{nonlinearity}_bwd")
    if k is not None:
        k(h, dh, dpre)
        return
    if nonlinearity == "tanh":
        xo = dev.xp_out
        xo.multiply(h, h, out=dpre)
        xo.subtract(1.0, dpre, out=dpre)
        dpre *= dh
    else:  # h > 0 exactly where the pre-activation is (where has no out=)
        dpre[...] = dev.xp.where(h > 0, dh, 0.0)


_lstm_consts_cache = {}


def _lstm_consts(dev, H, dtype):
    # Per-column constants that let one tanh serve all four gates: act = s tanh(s a) + b,
    # sigmoid(a) = 0.5 tanh(0.5 a) + 0.5 on the i, f, o blocks and tanh(a) on g; and the
    # local derivative act (alpha - act) + beta (s(1 - s) or 1 - t^2).
    key = (dev.name, H, dtype)
    c = _lstm_consts_cache.get(key)
    if c is None:
        xp = dev.xp

        def block(vals):
            parts = [xp.full((H,), v, dtype=dtype) for v in vals]
            return xp.concat(parts)
        c = _lstm_consts_cache[key] = (block([0.5, 0.5, 1.0, 0.5]), block([0.5, 0.5, 0.0, 0.5]),
                                       block([1.0, 1.0, 0.0, 1.0]), block([0.0, 0.0, 1.0, 0.0]))
    return c


def lstm_forward(dev, gx, gh, c_prev, act, h, c):
    """act <- gates [i, f, g, o] of gx + gh (act may be gx itself); c <- f c_prev + i g;
    h <- o tanh(c)."""
    H = c_prev.shape[-1]
    k = _kernel(dev, "lstm_fwd")
    if k is not None:
        k(gx, gh, c_prev, H, h, c, act)
        return
    xo = dev.xp_out
    s, b, _, _ = _lstm_consts(dev, H, act.dtype)
    xo.add(gx, gh, out=act)
    act *= s
    xo.tanh(act, out=act)
    act *= s
    act += b
    i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    xo.multiply(f, c_prev, out=c)
    xo.multiply(i, g, out=h)  # h as scratch
    c += h
    xo.tanh(c, out=h)
    h *= o


def lstm_backward(dev, act, c_prev, c, dh, dc, dgates, dc_prev):
    """dgates <- d[a_i, a_f, a_g, a_o]; dc_prev <- dc~ f, from dh', dc' and the saved act, c, c'."""
    H = c_prev.shape[-1]
    k = _kernel(dev, "lstm_bwd")
    if k is not None:
        k(act, c_prev, c, dh, dc, H, dgates, dc_prev)
        return
    xp, xo = dev.xp, dev.xp_out
    _, _, alpha, beta = _lstm_consts(dev, H, act.dtype)
    i, f, g, o = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    tc = xp.tanh(c)
    dct = tc * tc
    xo.subtract(1.0, dct, out=dct)
    dct *= o
    dct *= dh
    dct += dc  # c' feeds both the next step and h'
    xo.subtract(alpha, act, out=dgates)
    dgates *= act
    dgates += beta  # the gates' local derivatives
    for col, factor in ((slice(0, H), g), (slice(H, 2 * H), c_prev), (slice(2 * H, 3 * H), i)):
        d = dgates[:, col]
        d *= factor
        d *= dct
    d = dgates[:, 3 * H:]
    d *= tc
    d *= dh
    xo.multiply(dct, f, out=dc_prev)


def gru_forward(dev, gx, gh, b_hh, h_prev, act, h):
    """act <- [r, z, n, hn]; h <- n + z (h_prev - n). gh = h_prev W_hh^T without its bias b_hh
    (which may be None)."""
    H = h_prev.shape[-1]
    k = _kernel(dev, "gru_fwd")
    if k is not None:
        if b_hh is None:
            b_hh = dev.xp.zeros((3 * H,), dtype=h.dtype)
        k(gx, gh, b_hh, h_prev, H, h, act)
        return
    xo = dev.xp_out
    rz, n, hn = act[:, :2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    xo.add(gx[:, :2 * H], gh[:, :2 * H], out=rz)
    if b_hh is not None:
        rz += b_hh[:2 * H]
        xo.add(gh[:, 2 * H:], b_hh[2 * H:], out=hn)
    else:
        hn[...] = gh[:, 2 * H:]
    rz *= 0.5
    xo.tanh(rz, out=rz)
    rz *= 0.5
    rz += 0.5
    xo.multiply(act[:, :H], hn, out=n)
    n += gx[:, 2 * H:]
    xo.tanh(n, out=n)
    xo.subtract(h_prev, n, out=h)
    h *= act[:, H:2 * H]
    h += n


def gru_backward(dev, act, h_prev, dh, dgh, dgx, dh_z):
    """The gates' gradients, each side in its own (B, 3H) buffer so that each is one GEMM's
    operand: dgh <- [dr~, dz~, dn~ r] on the hidden side (n's hidden part is multiplied by
    r), dgx <- [dr~, dz~, dn~] on the input side; dh_z <- dh' z, the part of dh that skips W_hh."""
    H = h_prev.shape[-1]
    k = _kernel(dev, "gru_bwd")
    if k is not None:
        k(act, h_prev, dh, H, dgh, dgx, dh_z)
        return
    xo = dev.xp_out
    r, z, n, hn = act[:, :H], act[:, H:2 * H], act[:, 2 * H:3 * H], act[:, 3 * H:]
    dr, dz, dnr, dn = dgh[:, :H], dgh[:, H:2 * H], dgh[:, 2 * H:], dgx[:, 2 * H:]
    xo.multiply(dh, z, out=dh_z)
    xo.multiply(n, n, out=dn)
    xo.subtract(1.0, dn, out=dn)
    xo.subtract(dh, dh_z, out=dnr)  # dh (1 - z), in a block not yet written
    dn *= dnr
    xo.subtract(1.0, r, out=dr)
    dr *= r
    dr *= hn
    dr *= dn
    xo.subtract(1.0, z, out=dz)
    dz *= dh_z
    xo.subtract(h_prev, n, out=dnr)
    dz *= dnr
    xo.multiply(dn, r, out=dnr)
    dgx[:, :2 * H] = dgh[:, :2 * H]


# ----------------------------------------------------------------------------- one step, composed
# The reference: each kind's step from primitive ops exactly as its equations read. gx is the
# input side of the gate pre-activations, gh the hidden side (both with their biases), each
# (batch, gates * hidden) in PyTorch's gate order. The layers' impl="composed" runs these;
# under create_graph the fused ops below differentiate them in place of their own backward.

def rnn_step(gx, gh, nonlinearity="tanh"):
    """h' = tanh(gx + gh) (or relu)."""
    pre = gx + gh
    return pre.tanh() if nonlinearity == "tanh" else pre.relu()


def lstm_step(gx, gh, c):
    """i, f, g, o = split(gx + gh); c' = sigmoid(f) c + sigmoid(i) tanh(g); h' = sigmoid(o) tanh(c')."""
    i, f, g, o = (gx + gh).chunk(4, axis=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    c = f * c + i * g
    h = o * c.tanh()
    return h, c


def gru_step(gx, gh, h):
    """PyTorch's GRU: r = sigmoid(x_r + h_r), z = sigmoid(x_z + h_z), n = tanh(x_n + r * h_n),
    h' = (1 - z) * n + z * h, where x_* = W_i* x + b_i* and h_* = W_h* h + b_h*."""
    x_r, x_z, x_n = gx.chunk(3, axis=1)
    h_r, h_z, h_n = gh.chunk(3, axis=1)
    r = (x_r + h_r).sigmoid()
    z = (x_z + h_z).sigmoid()
    n = (x_n + r * h_n).tanh()
    return (1 - z) * n + z * h


# ----------------------------------------------------------------------------- checks
def _check_step(op, gx, gh, state, gates):
    if state.ndim != 2:
        raise ShapeError(f"{op}: the state must be 2-D (batch, hidden), got shape {fmt_shape(state.shape)}")
    B, H = state.shape
    want = (B, gates * H)
    if tuple(gx.shape) != want or tuple(gh.shape) != want:
        raise ShapeError(f"{op}: gate pre-activations must have shape {fmt_shape(want)} (batch, {gates} * hidden) "
                         f"for a state of shape {fmt_shape(state.shape)}, got gx {fmt_shape(gx.shape)} "
                         f"and gh {fmt_shape(gh.shape)}")


def _check_nonlinearity(op, nonlinearity):
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"{op}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")


# ----------------------------------------------------------------------------- one step
class RNNCellFn(Function):
    """h' = tanh(gx + gh) or relu(gx + gh)."""

    @staticmethod
    def forward(ctx, gx, gh, nonlinearity="tanh"):
        _check_nonlinearity("rnn_cell", nonlinearity)
        if tuple(gx.shape) != tuple(gh.shape):
            raise ShapeError(f"rnn_cell: gx {fmt_shape(gx.shape)} and gh {fmt_shape(gh.shape)} must have the same shape")
        h = ctx.xp.empty(gx.shape, dtype=gx.dtype)
        rnn_forward(ctx.device, gx, gh, h, nonlinearity)
        ctx.nonlinearity = nonlinearity
        ctx.save_for_backward(h)
        return h

    @staticmethod
    def backward(ctx, dh):
        (h,) = ctx.saved_tensors
        dp = ctx.xp.empty(h.shape, dtype=h.dtype)
        rnn_backward(ctx.device, h, dh, dp, ctx.nonlinearity)
        return dp, dp

    @staticmethod
    def composed(ctx, gx, gh, nonlinearity="tanh"):
        return rnn_step(gx, gh, nonlinearity)


class LSTMCellFn(Function):
    """(h', c') from gx, gh (batch, 4H) and c (batch, H)."""

    @staticmethod
    def forward(ctx, gx, gh, c):
        _check_step("lstm_cell", gx, gh, c, 4)
        xp = ctx.xp
        act = xp.empty(gx.shape, dtype=gx.dtype)
        h, c_new = xp.empty(c.shape, dtype=c.dtype), xp.empty(c.shape, dtype=c.dtype)
        lstm_forward(ctx.device, gx, gh, c, act, h, c_new)
        ctx.save_for_backward(act, c, c_new)
        return h, c_new

    @staticmethod
    def backward(ctx, dh, dc):
        act, c, c_new = ctx.saved_tensors
        xp = ctx.xp
        da, dc_prev = xp.empty(act.shape, dtype=act.dtype), xp.empty(c.shape, dtype=c.dtype)
        lstm_backward(ctx.device, act, c, c_new, dh, dc, da, dc_prev)
        return da, da, dc_prev

    @staticmethod
    def composed(ctx, gx, gh, c):
        return lstm_step(gx, gh, c)


class GRUCellFn(Function):
    """h' from gx, gh (batch, 3H), b_hh (3H,) or None, and h (batch, H)."""

    @staticmethod
    def forward(ctx, gx, gh, b_hh, h):
        _check_step("gru_cell", gx, gh, h, 3)
        if b_hh is not None and tuple(b_hh.shape) != (gx.shape[1],):
            raise ShapeError(f"gru_cell: b_hh must have shape ({gx.shape[1]},), got {fmt_shape(b_hh.shape)}")
        xp = ctx.xp
        B, H = h.shape
        act = xp.empty((B, 4 * H), dtype=h.dtype)
        h_new = xp.empty(h.shape, dtype=h.dtype)
        gru_forward(ctx.device, gx, gh, b_hh, h, act, h_new)
        ctx.save_for_backward(act, h)
        return h_new

    @staticmethod
    def backward(ctx, dh):
        act, h = ctx.saved_tensors
        xp = ctx.xp
        H = h.shape[-1]
        dgh, dgx = xp.empty((h.shape[0], 3 * H), dtype=h.dtype), xp.empty((h.shape[0], 3 * H), dtype=h.dtype)
        dh_z = xp.empty(h.shape, dtype=h.dtype)
        gru_backward(ctx.device, act, h, dh, dgh, dgx, dh_z)
        return dgx, dgh, (dgh if ctx.needs_input_grad[2] else None), dh_z

    @staticmethod
    def composed(ctx, gx, gh, b_hh, h):
        return gru_step(gx, gh if b_hh is None else gh + b_hh, h)


# ----------------------------------------------------------------------------- whole sequence
def _host_loop(dev, name, dt):
    """The device's C++ loop over time `name` (rnn.cpp) for arrays of dtype dt, or None."""
    ks = device_kernels(dev)
    if ks is None or getattr(dt, "name", None) not in ("float32", "float64"):
        return None
    return ks.get(name)


def _time_loop(ctx, key, loop, arrays, parts):
    """loop(*arrays): a sequence op's loop over time on its buffers (a tuple of arrays or None).
    On a CUDA device in cuda_loop "graph" mode it runs as a CUDA graph captured once per key
    (what the loop does: op, direction, flags, a packed batch's batch sizes) and shapes, at
    the key's second call (the first runs the plain loop), and replayed from the third
    (kernels/cuda.py's GraphCache): one launch from Python per call, not a few a timestep.
    parts = (what the loop reads: ((i, index or None), ...), what the caller keeps of what it
    writes: (i, ...)), the copies in and out of the graph's own buffers.

    Packed batches are keyed by their batch sizes, the graph running exactly the packed
    loop: a padded batch is the packed one of equal lengths, so one mechanism serves both,
    and a graph per distinct batch_sizes costs nothing where they repeat (a char-LM's fixed
    T, bucketed or fixed datasets, evaluation). Running the full batch every step with the
    finished rows masked would make one graph per (T, B) but does T * B rows of work where
    packing does N, and needs masking kernels of its own in both directions; where every
    batch has new lengths, no key comes back, so none is captured and each call costs what
    the Python loop does (a key met twice pays one extra loop and a capture at its second
    call; measure with bench/rnn_step.py --cuda-loop both)."""
    dev = ctx.device
    if dev.kind == "cuda" and dev.cuda_loop == "graph":
        present = lambda i: arrays[i] is not None  # noqa: E731
        copy_in = tuple((i, index) for i, index in parts[0] if present(i))
        copy_out = tuple(i for i in parts[1] if present(i))
        return cuda_kernels.GRAPHS.run(dev, key, loop, arrays, copy_in, copy_out)
    return loop(*arrays)


def _forward_parts(first):
    """_time_loop's parts of a forward (gx, w_hh, b_step, hs, cs, act): the initial states in
    slot `first`; out come every state and activation."""
    return ((0, None), (1, None), (2, None), (3, (first,)), (4, (first,))), (3, 4, 5)


# a backward's (w_hh, act, hs, cs, d_out, dh, dc, scratch, dgh, dgx): in come the saved
# buffers and the final states' gradients; out the d gates and the initial states' gradients
_BACKWARD_PARTS = (tuple((i, None) for i in range(7)), (5, 6, 7, 8, 9))


def _column_sums(xp, a):
    """a (N, G) summed over its rows, as a matrix-vector product: on BLAS's threads, and on
    (2048, 768) float32 25% faster than NumPy's sum (0.20 against 0.27 ms; a strided block of
    columns 0.13 against 0.21)."""
    return xp.matmul(xp.ones((a.shape[0],), dtype=a.dtype), a)


def _views(a):
    return None if a is None else [a[t, ...] for t in range(a.shape[0])]


def lengths_of(batch_sizes, batch):
    """The sequences' lengths, in decreasing order, from a packed batch's batch_sizes (a list):
    row r runs at every step whose batch size is over r."""
    lengths, t = [], len(batch_sizes)
    for r in range(batch):
        while t and batch_sizes[t - 1] <= r:
            t -= 1
        lengths.append(t)
    return lengths


class PackedSteps:
    """A packed batch's timesteps (nn.utils.rnn), made once per layer call from the sequences'
    lengths in decreasing order: step t runs the first bs[t] rows, whose packed rows start at
    off[t] (N in all). The sequence ops take it as `steps=`; the index arrays they gather
    with are made on each device once, when first asked for.

    `order`, where the batch came unsorted, is the sorted rows' original indices (a
    PackedSequence's sorted_indices): the ops then take the initial states and give the final
    states (and their gradients) in the batch's original order, reordering them with the
    gathers they make anyway."""

    def __init__(self, lengths, order=None):
        lengths = [int(n) for n in lengths]
        if any(n < 0 for n in lengths) or any(a < b for a, b in zip(lengths, lengths[1:])):
            raise ValueError(f"packed steps: lengths must be non-negative and in decreasing order, got {lengths}")
        self.order = self.inverse = None  # inverse[i]: the sorted row of the batch's row i
        if order is not None:
            self.order = [int(i) for i in order]
            if sorted(self.order) != list(range(len(lengths))):
                raise ValueError(f"packed steps: order must be a permutation of the {len(lengths)} rows, "
                                 f"got {self.order}")
            self.inverse = [0] * len(lengths)
            for r, i in enumerate(self.order):
                self.inverse[i] = r
        self.lengths, self.B, self.T = tuple(lengths), len(lengths), (lengths[0] if lengths else 0)
        self.bs, k = [], self.B
        for t in range(self.T):
            while lengths[k - 1] <= t:
                k -= 1
            self.bs.append(k)
        self.off = [0]
        for m in self.bs:
            self.off.append(self.off[-1] + m)
        self.N = self.off[-1]
        self._index = {}

    def __repr__(self):
        return f"PackedSteps(lengths={list(self.lengths)})"

    def index(self, dev, which):
        """On dev: "bs" (int32, for the C++ loops); the int64 rows of the (T + 1) * B state slots
        holding each packed row's step: "t" (slot t), "t1" (slot t + 1), "last" (each row's
        slot after its last step: its length; in the original order where there is one);
        "order" and "inv" (int64: the order and its inverse, where there is one)."""
        key = (dev.name, which)
        a = self._index.get(key)
        if a is None:
            B = self.B
            if which == "bs":
                a = dev.from_host(self.bs, backend.int32)
            elif which in ("order", "inv"):
                a = dev.from_host(self.order if which == "order" else self.inverse, backend.int64)
            elif which == "last":
                rows = range(B) if self.inverse is None else self.inverse
                a = dev.from_host([self.lengths[r] * B + r for r in rows], backend.int64)
            else:
                shift = 1 if which == "t1" else 0
                # ranges, chained: the rows of a step are consecutive slots (a layer call makes these)
                vals = list(itertools.chain.from_iterable(range((t + shift) * B, (t + shift) * B + m)
                                                          for t, m in enumerate(self.bs)))
                a = dev.from_host(vals, backend.int64)
            self._index[key] = a
        return a


class _Shaped:
    """Only a shape and a dtype, for _check of a packed input as the (T, B, I) it stands for."""

    def __init__(self, shape, dtype):
        self.shape, self.ndim, self.dtype = shape, len(shape), dtype


class _Sequence(Function):
    """One layer, one direction, all timesteps.

    apply(x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse=False[, nonlinearity]) with x (T, B, I),
    w_ih (G, I), w_hh (G, H), biases (G,) or None, h0 and c0 (B, H) or None (zeros; c0 is
    the LSTM's and None for the others). With w_ih None, x is the input projection
    x W_ih^T itself (T, B, G), made by the caller (the layers fold an embedding lookup into it). Returns (out (T, B, H), h_n[, c_n]), out[t] being
    the state at time t whichever way the direction runs.

    Buffers: `hs` (T + 1, B, H) holds every hidden state in time order, the initial one
    at the end the direction starts from (hs[0] forward, hs[T] reverse), so the previous
    states of all steps are one contiguous slice; `out` is a view of the other slice. The
    LSTM's `cs` likewise. `act` (T, B, A) keeps every step's gate activations.
    """

    gates = 1   # G = gates * H
    name = "?"
    has_cell = False             # the LSTM's second state c
    state_skips_weights = False  # the GRU's dh_{t-1} has a term (dh z) that bypasses W_hh

    @classmethod
    def _check(cls, x, w_ih, w_hh, b_ih, b_hh, h0, c0, nonlinearity):
        op = cls.name
        if x.ndim != 3:
            raise ShapeError(f"{op}: the input must be 3-D (seq_len, batch, input_size), got shape {fmt_shape(x.shape)}")
        T, B, I = x.shape
        if T == 0:
            raise ShapeError(f"{op}: the input sequence is empty (shape {fmt_shape(x.shape)}, seq_len 0)")
        if w_hh.ndim != 2 or w_hh.shape[0] != cls.gates * w_hh.shape[1]:
            raise ShapeError(f"{op}: weight_hh must have shape ({cls.gates} * hidden, hidden), "
                             f"got {fmt_shape(w_hh.shape)}")
        G, H = w_hh.shape
        if w_ih is None:
            if I != G:
                raise ShapeError(f"{op}: without weight_ih the input is the input projection and must have "
                                 f"{G} features ({cls.gates} * hidden), got shape {fmt_shape(x.shape)}")
        elif tuple(w_ih.shape) != (G, I):
            raise ShapeError(f"{op}: weight_ih must have shape {fmt_shape((G, I))} for input of shape "
                             f"{fmt_shape(x.shape)} and weight_hh {fmt_shape(w_hh.shape)}, got {fmt_shape(w_ih.shape)}")
        for what, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
            if b is not None and tuple(b.shape) != (G,):
                raise ShapeError(f"{op}: {what} must have shape ({G},), got {fmt_shape(b.shape)}")
        for what, s in (("h0", h0), ("c0", c0)):
            if s is not None and tuple(s.shape) != (B, H):
                raise ShapeError(f"{op}: {what} must have shape {fmt_shape((B, H))} (batch, hidden), "
                                 f"got {fmt_shape(s.shape)}")
        for what, a in (("weight_ih", w_ih), ("weight_hh", w_hh), ("bias_ih", b_ih), ("bias_hh", b_hh),
                        ("h0", h0), ("c0", c0)):
            if a is not None and a.dtype != x.dtype:
                raise DTypeError(f"{op}: {what} is {a.dtype} but the input is {x.dtype}; all must share one dtype")
        return T, B, I, G, H

    @classmethod
    def forward(cls, ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse=False, nonlinearity="tanh", steps=None):
        ctx.steps = steps
        if steps is not None:
            return cls._forward_packed(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse, nonlinearity, steps)
        T, B, I, G, H = cls._check(x, w_ih, w_hh, b_ih, b_hh, h0, c0, nonlinearity)
        dev, xp = ctx.device, ctx.xp
        dt = x.dtype
        bias = cls._input_bias(b_ih, b_hh)
        if w_ih is not None:  # one GEMM for all timesteps, into an array this op owns
            gx = xp.reshape(xp.matmul(xp.reshape(x, (T * B, I)), xp.permute_dims(w_ih, (1, 0))), (T, B, G))
            if bias is not None:
                gx += bias
        elif bias is not None:
            gx = x + bias
        else:
            gx = x  # the caller's projection: read, never written
        owned = gx is not x
        hs = xp.empty((T + 1, B, H), dtype=dt)
        first = T if reverse else 0
        if h0 is None:
            hs[first, ...] = 0
        else:
            hs[first, ...] = h0
        cs = None
        if cls.has_cell:
            cs = xp.empty((T + 1, B, H), dtype=dt)
            if c0 is None:
                cs[first, ...] = 0
            else:
                cs[first, ...] = c0
        act = cls._act_buffer(xp, gx, owned, T, B, H)
        b_step = cls._step_bias(dev, b_hh, G, dt)
        ctx.nonlinearity, ctx.reverse = nonlinearity, reverse
        loop = _host_loop(dev, "seq_fwd", dt)
        if loop is not None:  # the loop below, in C++
            loop(cls.host_cell, T, B, H, reverse, h0 is None, nonlinearity == "relu", HOST_THREADS,
                 dev.contiguous(gx), dev.contiguous(w_hh), b_step if cls.host_cell == 1 else None,
                 xp.empty((B, G), dtype=dt), hs, cs, act, None, None)
        else:
            zero_h0 = h0 is None
            _time_loop(ctx, ("fwd", cls.name, reverse, nonlinearity, zero_h0, None),
                       lambda *a: cls._padded_loop_forward(ctx, zero_h0, *a),
                       (gx, w_hh, b_step, hs, cs, act), _forward_parts(first))
        ctx.save_for_backward(x if w_ih is not None else None, w_ih, w_hh, act, hs, cs)
        last = 0 if reverse else T
        out = hs[:T, ...] if reverse else hs[1:, ...]
        finals = (dev.copy(hs[last, ...]),) + ((dev.copy(cs[last, ...]),) if cls.has_cell else ())
        return (out,) + finals

    @classmethod
    def _padded_loop_forward(cls, ctx, zero_h0, gx, w_hh, b_step, hs, cs, act):
        """The forward's loop over time, where no C++ loop runs (rnn.cpp's seq_fwd)."""
        dev, xp, xo = ctx.device, ctx.xp, ctx.device.xp_out
        T, reverse = gx.shape[0], ctx.reverse
        w_hh_t = dev.contiguous(xp.permute_dims(w_hh, (1, 0)))  # once per call, for every step's GEMM
        gh = xp.empty((gx.shape[1], w_hh.shape[0]), dtype=gx.dtype)
        # per-timestep views, made once (the array API indexes a leading axis as a[t, ...])
        hv, cv, gxv, av = _views(hs), _views(cs), _views(gx), _views(act)
        for n, t in enumerate(range(T - 1, -1, -1) if reverse else range(T)):
            p, q = (t + 1, t) if reverse else (t, t + 1)  # previous and new state's slot
            if n == 0 and zero_h0:
                gh[...] = 0
            else:
                xo.matmul(hv[p], w_hh_t, out=gh)
            cls._step_forward(ctx, gxv[t], gh, b_step, hv, cv, av, t, p, q)

    @classmethod
    def backward(cls, ctx, d_out, d_hn, d_cn=None):
        if ctx.steps is not None:
            return cls._backward_packed(ctx, d_out, d_hn, d_cn)
        x, w_ih, w_hh, act, hs, cs = ctx.saved_tensors
        dev, xp = ctx.device, ctx.xp
        need = ctx.needs_input_grad
        reverse = ctx.reverse
        T, B = hs.shape[0] - 1, hs.shape[1]
        G, H = w_hh.shape
        dt = hs.dtype
        dgh, dgx = cls._dgate_buffers(xp, T, B, G, dt)
        dh = dev.copy(d_hn)
        dc = dev.copy(d_cn) if cls.has_cell else None
        scratch = xp.empty((B, H), dtype=dt)  # a second state-sized buffer to write into
        loop = _host_loop(dev, "seq_bwd", dt)
        if loop is not None:  # the loop below, in C++
            swapped = loop(cls.host_cell, T, B, H, reverse, need[5], ctx.nonlinearity == "relu",
                           HOST_THREADS, dev.contiguous(w_hh), act, hs, cs, dev.contiguous(d_out),
                           dh, dc, scratch, dgh, None if dgx is dgh else dgx, None, None)
            if swapped:
                dc, scratch = scratch, dc
        else:
            swapped = _time_loop(ctx, ("bwd", cls.name, reverse, ctx.nonlinearity, need[5], None),
                                 lambda *a: cls._padded_loop_backward(ctx, need[5], *a),
                                 (w_hh, act, hs, cs, d_out, dh, dc, scratch, dgh, dgx), _BACKWARD_PARTS)
            if swapped:
                dc, scratch = scratch, dc
        # the weight gradients of all timesteps: one GEMM each over T * B rows
        dgh2 = xp.reshape(dgh, (T * B, G))
        h_prev = hs[1:, ...] if reverse else hs[:T, ...]
        dw_hh = xp.matmul(xp.permute_dims(dgh2, (1, 0)), xp.reshape(h_prev, (T * B, H))) if need[2] else None
        db_hh = _column_sums(xp, dgh2) if need[4] else None
        dgx2 = xp.reshape(dgx, (T * B, G))
        if w_ih is None:  # the input was the projection itself
            dx, dw_ih = (dgx if need[0] else None), None
        else:
            dx = xp.reshape(xp.matmul(dgx2, w_ih), (T, B, x.shape[2])) if need[0] else None
            dw_ih = xp.matmul(xp.permute_dims(dgx2, (1, 0)), xp.reshape(x, (T * B, x.shape[2]))) if need[1] else None
        db_ih = cls._input_bias_grad(dev, dgx2, dgx is dgh, db_hh, H) if need[3] else None
        dh0 = dh if need[5] else None
        dc0 = dc if need[6] else None
        return dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0

    @classmethod
    def _padded_loop_backward(cls, ctx, need_dh0, w_hh, act, hs, cs, d_out, dh, dc, scratch, dgh, dgx):
        """The backward's loop over time, where no C++ loop runs (rnn.cpp's seq_bwd); returns
        whether dc_0 ended in scratch's buffer (the two swap every step)."""
        xo = ctx.device.xp_out
        T, reverse, swapped = hs.shape[0] - 1, ctx.reverse, False
        hv, cv, av, dghv, dov = (_views(a) for a in (hs, cs, act, dgh, d_out))
        dgxv = dghv if dgx is dgh else _views(dgx)
        for n, t in enumerate(range(T) if reverse else range(T - 1, -1, -1)):
            p, q = (t + 1, t) if reverse else (t, t + 1)
            dh += dov[t]
            cls._step_backward(ctx, av, hv, cv, dh, dc, dghv, dgxv, scratch, t, p, q)
            if cls.has_cell:  # scratch got dc_{t-1}; dc's buffer is free for the next step
                dc, scratch, swapped = scratch, dc, not swapped
            if n == T - 1 and not need_dh0:
                break  # dh0 is not wanted: skip the last recurrent GEMM
            xo.matmul(dghv[t], w_hh, out=dh)
            if cls.state_skips_weights:  # the GRU's dh' z, in scratch
                dh += scratch
        return swapped

    @classmethod
    def composed(cls, ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None):
        """The same sequence from the composed steps (what create_graph differentiates)."""
        if ctx.steps is not None:
            return cls._composed_packed(ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0)
        T, B = x.shape[0], x.shape[1]
        G, H = w_hh.shape
        gx = x if w_ih is None else x @ w_ih.T
        if b_ih is not None:
            gx = gx + b_ih
        xp = ctx.xp  # the tensor namespace: this runs on Tensors, recording a graph
        h = h0 if h0 is not None else xp.zeros((B, H), dtype=x.dtype)
        c = (c0 if c0 is not None else xp.zeros((B, H), dtype=x.dtype)) if cls.has_cell else None
        outs = [None] * T
        w_t = w_hh.T
        for t in (range(T - 1, -1, -1) if ctx.reverse else range(T)):
            gh = h @ w_t
            if b_hh is not None:
                gh = gh + b_hh
            if cls.has_cell:
                h, c = lstm_step(gx[t], gh, c)
            elif cls.gates == 3:
                h = gru_step(gx[t], gh, h)
            else:
                h = rnn_step(gx[t], gh, ctx.nonlinearity)
            outs[t] = h
        return (xp.stack(outs, axis=0), h) + ((c,) if cls.has_cell else ())

    # packed batches (nn.utils.rnn): the rows sorted by length, step t running the first
    # steps.bs[t] rows; x, out and every per-step buffer packed (N rows), the states in their
    # (T + 1, B, H) slots as above, each step reading and writing only its rows
    @classmethod
    def _forward_packed(cls, ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse, nonlinearity, steps):
        """forward over a packed batch: x (N, I) (or the projection (N, G)), states (B, H) of the
        sorted rows; returns (out (N, H) packed, h_n[, c_n]), each final state taken at its own
        sequence's last step (reverse: first), a length 0's being its initial state."""
        N, B, T = steps.N, steps.B, steps.T
        if x.ndim != 2 or x.shape[0] != N:
            raise ShapeError(f"{cls.name}: packed input must be 2-D (sum of lengths = {N}, features), "
                             f"got shape {fmt_shape(x.shape)}")
        _, _, I, G, H = cls._check(_Shaped((max(T, 1), B, x.shape[1]), x.dtype), w_ih, w_hh, b_ih, b_hh, h0, c0,
                                   nonlinearity)
        dev, xp = ctx.device, ctx.xp
        dt = x.dtype
        bias = cls._input_bias(b_ih, b_hh)
        if w_ih is not None:  # the packed rows only: no padding projected
            gx = xp.matmul(x, xp.permute_dims(w_ih, (1, 0)))
            if bias is not None:
                gx += bias
        else:
            gx = x if bias is None else x + bias
        hs = xp.empty((T + 1, B, H), dtype=dt)
        cs = xp.empty((T + 1, B, H), dtype=dt) if cls.has_cell else None
        first = T if reverse else 0
        for buf, s in ((hs, h0), (cs, c0)):
            if buf is not None:
                buf[first, ...] = 0 if s is None else _reorder(xp, dev, steps, s, "order")
        act = cls._act_buffer(xp, gx, gx is not x, 1, N, H)
        act = None if act is None else xp.reshape(act, (N, act.shape[-1]))
        b_step = cls._step_bias(dev, b_hh, G, dt)
        ctx.nonlinearity, ctx.reverse = nonlinearity, reverse
        loop = _host_loop(dev, "seq_fwd", dt)
        out = None
        if T and loop is not None:  # the loop below, in C++, which also writes the packed output
            out = xp.empty((N, H), dtype=dt)
            loop(cls.host_cell, T, B, H, reverse, h0 is None, nonlinearity == "relu", HOST_THREADS,
                 dev.contiguous(gx), dev.contiguous(w_hh), b_step if cls.host_cell == 1 else None,
                 xp.empty((B, G), dtype=dt), hs, cs, act, steps.index(dev, "bs"), out)
        elif T:
            zero_h0 = h0 is None
            _time_loop(ctx, ("fwd", cls.name, reverse, nonlinearity, zero_h0, tuple(steps.bs)),
                       lambda *a: cls._packed_loop_forward(ctx, steps, *a, zero_h0),
                       (gx, w_hh, b_step, hs, cs, act), _forward_parts(first))
        ctx.save_for_backward(x if w_ih is not None else None, w_ih, w_hh, act, hs, cs)
        if out is None:
            out = xp.take(xp.reshape(hs, ((T + 1) * B, H)), steps.index(dev, "t" if reverse else "t1"), axis=0)
        return (out,) + tuple(_packed_final(dev, steps, buf, reverse) for buf in ((hs, cs) if cls.has_cell else (hs,)))

    @classmethod
    def _packed_loop_forward(cls, ctx, steps, gx, w_hh, b_step, hs, cs, act, zero_h0):
        """The packed forward's loop over time, where no C++ loop runs (rnn.cpp's seq_fwd with bs)."""
        dev, xp, xo = ctx.device, ctx.xp, ctx.device.xp_out
        T, reverse = steps.T, ctx.reverse
        w_hh_t = dev.contiguous(xp.permute_dims(w_hh, (1, 0)))
        gh = xp.empty((steps.B, w_hh.shape[0]), dtype=gx.dtype)
        hv, cv = _views(hs), _views(cs)
        for n, t in enumerate(range(T - 1, -1, -1) if reverse else range(T)):
            p, q = (t + 1, t) if reverse else (t, t + 1)
            m, o = steps.bs[t], steps.off[t]
            if reverse and n > 0 and m > steps.bs[t + 1]:
                k = steps.bs[t + 1]  # the rows whose sequences end here start from their initial state
                hv[p][k:m, ...] = hv[T][k:m, ...]
                if cv is not None:
                    cv[p][k:m, ...] = cv[T][k:m, ...]
            ghm = gh[:m, ...]
            if n == 0 and zero_h0:
                ghm[...] = 0
            else:
                xo.matmul(hv[p][:m, ...], w_hh_t, out=ghm)
            hd = {p: hv[p][:m, ...], q: hv[q][:m, ...]}
            cd = None if cv is None else {p: cv[p][:m, ...], q: cv[q][:m, ...]}
            ad = None if act is None else {t: act[o:o + m, ...]}
            cls._step_forward(ctx, gx[o:o + m, ...], ghm, b_step, hd, cd, ad, t, p, q)

    @classmethod
    def _backward_packed(cls, ctx, d_out, d_hn, d_cn=None):
        x, w_ih, w_hh, act, hs, cs = ctx.saved_tensors
        dev, xp = ctx.device, ctx.xp
        need, steps, reverse = ctx.needs_input_grad, ctx.steps, ctx.reverse
        N, B, T = steps.N, steps.B, steps.T
        G, H = w_hh.shape
        dt = hs.dtype
        dgh, dgx = cls._dgate_buffers(xp, 1, N, G, dt)
        dgh, dgx = (xp.reshape(dgh, (N, G)),) * 2 if dgx is dgh else (xp.reshape(dgh, (N, G)), xp.reshape(dgx, (N, G)))
        dh = _sorted_rows(dev, steps, d_hn)
        dc = _sorted_rows(dev, steps, d_cn) if cls.has_cell else None
        scratch = xp.empty((B, H), dtype=dt)
        loop = _host_loop(dev, "seq_bwd", dt)
        h_prev = None
        if T and loop is not None:  # the loop below, in C++, which also packs each step's previous states
            h_prev = xp.empty((N, H), dtype=dt) if need[2] else None
            loop(cls.host_cell, T, B, H, reverse, need[5], ctx.nonlinearity == "relu", HOST_THREADS,
                 dev.contiguous(w_hh), act, hs, cs, dev.contiguous(d_out), dh, dc, scratch, dgh,
                 None if dgx is dgh else dgx, steps.index(dev, "bs"), h_prev)
        elif T:
            _time_loop(ctx, ("bwd", cls.name, reverse, ctx.nonlinearity, need[5], tuple(steps.bs)),
                       lambda *a: cls._packed_loop_backward(ctx, steps, *a),
                       (w_hh, act, hs, cs, d_out, dh, dc, scratch, dgh, dgx), _BACKWARD_PARTS)
        # the weight gradients of all timesteps: one GEMM each over the N packed rows
        if h_prev is None and need[2]:
            h_prev = xp.take(xp.reshape(hs, ((T + 1) * B, H)), steps.index(dev, "t1" if reverse else "t"), axis=0)
        dw_hh = xp.matmul(xp.permute_dims(dgh, (1, 0)), h_prev) if need[2] else None
        db_hh = _column_sums(xp, dgh) if need[4] else None
        if w_ih is None:
            dx, dw_ih = (dgx if need[0] else None), None
        else:
            dx = xp.matmul(dgx, w_ih) if need[0] else None
            dw_ih = xp.matmul(xp.permute_dims(dgx, (1, 0)), x) if need[1] else None
        db_ih = cls._input_bias_grad(dev, dgx, dgx is dgh, db_hh, H) if need[3] else None
        dh0 = _reorder(xp, dev, steps, dh, "inv") if need[5] else None
        dc0 = _reorder(xp, dev, steps, dc, "inv") if need[6] else None
        return dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0

    @classmethod
    def _packed_loop_backward(cls, ctx, steps, w_hh, act, hs, cs, d_out, dh, dc, scratch, dgh, dgx):
        """The packed backward's loop over time, where no C++ loop runs (rnn.cpp's seq_bwd with bs):
        the rows not running at a step keep their dh and dc."""
        xo = ctx.device.xp_out
        T, reverse = steps.T, ctx.reverse
        hv, cv = _views(hs), _views(cs)
        for n, t in enumerate(range(T) if reverse else range(T - 1, -1, -1)):
            p, q = (t + 1, t) if reverse else (t, t + 1)
            m, o = steps.bs[t], steps.off[t]
            dhm, sm = dh[:m, ...], scratch[:m, ...]
            dhm += d_out[o:o + m, ...]
            hd = {p: hv[p][:m, ...], q: hv[q][:m, ...]}
            cd = None if cv is None else {p: cv[p][:m, ...], q: cv[q][:m, ...]}
            ad = None if act is None else {t: act[o:o + m, ...]}
            dgd = {t: dgh[o:o + m, ...]}
            dgxd = dgd if dgx is dgh else {t: dgx[o:o + m, ...]}
            dcm = None if dc is None else dc[:m, ...]
            cls._step_backward(ctx, ad, hd, cd, dhm, dcm, dgd, dgxd, sm, t, p, q)
            if dcm is not None:
                dcm[...] = sm
            if n == T - 1 and not ctx.needs_input_grad[5]:
                break
            xo.matmul(dgd[t], w_hh, out=dhm)
            if cls.state_skips_weights:
                dhm += sm

    @classmethod
    def _composed_packed(cls, ctx, x, w_ih, w_hh, b_ih, b_hh, h0, c0=None):
        """The packed sequence from the composed steps, on Tensors (what create_graph differentiates)."""
        steps, xp = ctx.steps, ctx.xp
        B, T, H = steps.B, steps.T, w_hh.shape[1]
        gx = x if w_ih is None else x @ w_ih.T
        if b_ih is not None:
            gx = gx + b_ih
        h = _reorder(xp, ctx.device, steps, h0, "order") if h0 is not None else xp.zeros((B, H), dtype=x.dtype)
        c = (_reorder(xp, ctx.device, steps, c0, "order") if c0 is not None else xp.zeros((B, H), dtype=x.dtype)) if cls.has_cell else None
        outs = [None] * T
        w_t = w_hh.T
        for t in (range(T - 1, -1, -1) if ctx.reverse else range(T)):
            m, o = steps.bs[t], steps.off[t]
            hm = h if m == B else h[:m]
            gh = hm @ w_t
            if b_hh is not None:
                gh = gh + b_hh
            gx_t = gx[o:o + m]
            if cls.has_cell:
                hn, cn = lstm_step(gx_t, gh, c if m == B else c[:m])
                c = cn if m == B else xp.concat([cn, c[m:]], axis=0)
            elif cls.gates == 3:
                hn = gru_step(gx_t, gh, hm)
            else:
                hn = rnn_step(gx_t, gh, ctx.nonlinearity)
            outs[t] = hn
            h = hn if m == B else xp.concat([hn, h[m:]], axis=0)
        out = xp.concat(outs, axis=0) if T else xp.zeros((0, H), dtype=x.dtype)
        return (out, _reorder(xp, ctx.device, steps, h, "inv")) + ((_reorder(xp, ctx.device, steps, c, "inv"),) if cls.has_cell else ())

    # per-kind parts
    @staticmethod
    def _input_bias(b_ih, b_hh):
        """The bias folded into the input projection (RNN, LSTM: both, added once, not per step)."""
        if b_ih is None:
            return None
        return b_ih + b_hh

    @staticmethod
    def _input_bias_grad(dev, dgx2, shared, db_hh, H):
        """b_ih's gradient from the input side's d gates (T * B, G); where both sides share
        them, so do the two biases (as separate arrays)."""
        return dev.copy(db_hh) if shared and db_hh is not None else _column_sums(dev.xp, dgx2)

    @staticmethod
    def _dgate_buffers(xp, T, B, G, dt):
        """(d gates on the hidden side, on the input side), each (T, B, G): one array where
        the two are the same numbers (RNN, LSTM)."""
        dg = xp.empty((T, B, G), dtype=dt)
        return dg, dg

    @staticmethod
    def _step_bias(dev, b_hh, G, dt):
        """The bias each step adds on the hidden side (the GRU's b_hh; the others fold theirs)."""
        return b_hh


class RNNSequence(_Sequence):
    """An Elman RNN layer's sequence in one direction: h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)."""

    gates = 1
    name = "rnn_sequence"
    host_cell = 0  # rnn.cpp's number for the kind

    @classmethod
    def _check(cls, x, w_ih, w_hh, b_ih, b_hh, h0, c0, nonlinearity):
        _check_nonlinearity(cls.name, nonlinearity)
        return super()._check(x, w_ih, w_hh, b_ih, b_hh, h0, c0, nonlinearity)

    @staticmethod
    def _act_buffer(xp, gx, owned, T, B, H):
        return None  # the saved outputs are the states themselves

    @staticmethod
    def _step_forward(ctx, gx_t, gh, b_hh, hs, cs, act, t, p, q):
        rnn_forward(ctx.device, gx_t, gh, hs[q], ctx.nonlinearity)

    @staticmethod
    def _step_backward(ctx, act, hs, cs, dh, dc, dg, dgx, scratch, t, p, q):
        rnn_backward(ctx.device, hs[q], dh, dg[t], ctx.nonlinearity)


class LSTMSequence(_Sequence):
    """An LSTM layer's sequence in one direction (gates i, f, g, o; see LSTMCellFn)."""

    gates = 4
    name = "lstm_sequence"
    host_cell = 2
    has_cell = True

    @staticmethod
    def _act_buffer(xp, gx, owned, T, B, H):
        # the projection's buffer becomes the activations', step by step, if it is this op's
        return gx if owned else xp.empty(gx.shape, dtype=gx.dtype)

    @staticmethod
    def _step_forward(ctx, gx_t, gh, b_hh, hs, cs, act, t, p, q):
        lstm_forward(ctx.device, gx_t, gh, cs[p], act[t], hs[q], cs[q])

    @staticmethod
    def _step_backward(ctx, act, hs, cs, dh, dc, dg, dgx, scratch, t, p, q):
        lstm_backward(ctx.device, act[t], cs[p], cs[q], dh, dc, dg[t], scratch)


class GRUSequence(_Sequence):
    """A GRU layer's sequence in one direction, PyTorch's equations (gates r, z, n; see GRUCellFn).

    b_hh stays out of the input projection (its n part is multiplied by r); the d gates
    differ by side in n's block, so each side has its own (T, B, 3H) buffer (gru_backward)."""

    gates = 3
    name = "gru_sequence"
    host_cell = 1
    state_skips_weights = True

    @staticmethod
    def _input_bias(b_ih, b_hh):
        return b_ih

    @staticmethod
    def _act_buffer(xp, gx, owned, T, B, H):
        return xp.empty((T, B, 4 * H), dtype=gx.dtype)

    @staticmethod
    def _step_forward(ctx, gx_t, gh, b_hh, hs, cs, act, t, p, q):
        gru_forward(ctx.device, gx_t, gh, b_hh, hs[p], act[t], hs[q])

    @staticmethod
    def _step_backward(ctx, act, hs, cs, dh, dc, dg, dgx, scratch, t, p, q):
        gru_backward(ctx.device, act[t], hs[p], dh, dg[t], dgx[t], scratch)

    @staticmethod
    def _step_bias(dev, b_hh, G, dt):
        if b_hh is None and _kernel(dev, "gru_fwd") is not None:
            return dev.xp.zeros((G,), dtype=dt)  # the kernel always adds one: zeros, made once per call
        return b_hh

    @staticmethod
    def _dgate_buffers(xp, T, B, G, dt):
        return xp.empty((T, B, G), dtype=dt), xp.empty((T, B, G), dtype=dt)

    @staticmethod
    def _input_bias_grad(dev, dgx2, shared, db_hh, H):
        xp = dev.xp
        if db_hh is None:
            return _column_sums(xp, dgx2)
        # the sides differ in n's block only: r's and z's sums are db_hh's
        db = xp.empty(db_hh.shape, dtype=db_hh.dtype)
        db[:2 * H] = db_hh[:2 * H]
        db[2 * H:] = _column_sums(xp, dgx2[:, 2 * H:])
        return db


class LSTMProjSequence(Function):
    """An LSTM layer with a projection (PyTorch's proj_size, LSTMP) in one direction:
    h_t = W_hr (o_t * tanh(c_t)), of size P < H; W_hh is (4H, P), c stays of size H.

    apply(x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, reverse=False, steps=None): x (T, B, I),
    or packed (N, I) with steps (PackedSteps) as the other sequence ops; h0 (B, P), c0 (B, H).
    Returns (out (T, B, P) or (N, P), h_n (B, P), c_n (B, H)). Unpacked, the batch runs as
    a packed one of equal lengths (time-major rows are that packing). The loop over time runs
    in C++ on the CPU (rnn.cpp's proj_fwd/proj_bwd, split over threads by rows), in Python
    elsewhere: per step the recurrent GEMM, the LSTM cell kernel and the projection's GEMM,
    each way; dW_hr, dW_hh and dW_ih are one GEMM each after the loop."""

    name = "lstm_proj_sequence"

    @classmethod
    def forward(cls, ctx, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0, reverse=False, steps=None):
        dev, xp = ctx.device, ctx.xp
        ctx.shape = tuple(x.shape) if steps is None else None
        if steps is None:
            if x.ndim != 3:
                raise ShapeError(f"{cls.name}: the input must be 3-D (seq_len, batch, input_size), "
                                 f"got shape {fmt_shape(x.shape)}")
            steps = PackedSteps([x.shape[0]] * x.shape[1])
            x = xp.reshape(x, (x.shape[0] * x.shape[1], x.shape[2]))
        N, B, T = steps.N, steps.B, steps.T
        G, P = w_hh.shape
        H = G // 4
        if x.ndim != 2 or x.shape[0] != N or tuple(w_ih.shape) != (G, x.shape[1]) or tuple(w_hr.shape) != (P, H):
            raise ShapeError(f"{cls.name}: input {fmt_shape(x.shape)} ({N} rows), weight_ih {fmt_shape(w_ih.shape)}, "
                             f"weight_hh {fmt_shape(w_hh.shape)} and weight_hr {fmt_shape(w_hr.shape)} do not fit: "
                             f"want weight_hh (4 * hidden, proj), weight_ih (4 * hidden, input), weight_hr (proj, hidden)")
        for what, s, n in (("h0", h0, P), ("c0", c0, H)):
            if s is not None and tuple(s.shape) != (B, n):
                raise ShapeError(f"{cls.name}: {what} must have shape {fmt_shape((B, n))}, got {fmt_shape(s.shape)}")
        ctx.steps, ctx.reverse = steps, reverse
        gx = xp.matmul(x, xp.permute_dims(w_ih, (1, 0)))  # becomes the activations, step by step
        if b_ih is not None:
            gx += b_ih + b_hh
        hs, cs = xp.empty((T + 1, B, P), dtype=x.dtype), xp.empty((T + 1, B, H), dtype=x.dtype)
        raw = xp.empty((N, H), dtype=x.dtype)  # o tanh(c), before the projection
        first = T if reverse else 0
        hs[first, ...] = 0 if h0 is None else _reorder(xp, dev, steps, h0, "order")
        cs[first, ...] = 0 if c0 is None else _reorder(xp, dev, steps, c0, "order")
        loop = _host_loop(dev, "proj_fwd", x.dtype)
        if T and loop is not None:  # the loop below, in C++
            loop(T, B, H, P, reverse, HOST_THREADS, dev.contiguous(w_hh), dev.contiguous(w_hr), gx,
                 xp.empty((B, G), dtype=x.dtype), hs, cs, raw, steps.index(dev, "bs"))
        elif T:
            # (gx, w_hh, w_hr, hs, cs, raw): in the projection, weights and initial states; out
            # the activations (written over gx), the states and o tanh(c)
            _time_loop(ctx, ("fwd", cls.name, reverse, tuple(steps.bs)), lambda *a: cls._loop_forward(ctx, *a),
                       (gx, w_hh, w_hr, hs, cs, raw),
                       (((0, None), (1, None), (2, None), (3, (first,)), (4, (first,))), (0, 3, 4, 5)))
        ctx.save_for_backward(x, w_ih, w_hh, w_hr, gx, hs, cs, raw)
        out = xp.take(xp.reshape(hs, ((T + 1) * B, P)), steps.index(dev, "t" if reverse else "t1"), axis=0)
        if ctx.shape is not None:
            out = xp.reshape(out, (ctx.shape[0], B, P))
        return (out,) + tuple(_packed_final(dev, steps, buf, reverse) for buf in (hs, cs))

    @classmethod
    def backward(cls, ctx, d_out, d_hn, d_cn):
        x, w_ih, w_hh, w_hr, act, hs, cs, raw = ctx.saved_tensors
        dev, xp = ctx.device, ctx.xp
        need, steps, reverse = ctx.needs_input_grad, ctx.steps, ctx.reverse
        N, B, T = steps.N, steps.B, steps.T
        G, P = w_hh.shape
        H = G // 4
        if ctx.shape is not None:
            d_out = xp.reshape(d_out, (N, P))
        dh, dc = _sorted_rows(dev, steps, d_hn), _sorted_rows(dev, steps, d_cn)
        dhs = xp.empty((N, P), dtype=hs.dtype)  # every step's dh, for dW_hr
        draw, scratch = xp.empty((B, H), dtype=hs.dtype), xp.empty((B, H), dtype=hs.dtype)
        dg = xp.empty((N, G), dtype=hs.dtype)
        loop = _host_loop(dev, "proj_bwd", hs.dtype)
        if T and loop is not None:  # the loop below, in C++
            loop(T, B, H, P, reverse, need[6], HOST_THREADS, dev.contiguous(w_hh), dev.contiguous(w_hr), act, cs,
                 dev.contiguous(d_out), dh, dc, draw, scratch, dhs, dg, steps.index(dev, "bs"))
        elif T:
            # (w_hh, w_hr, act, cs, d_out, dh, dc, draw, scratch, dhs, dg): in the saved buffers and
            # the final states' gradients; out the initial states' gradients, every dh and d gates
            _time_loop(ctx, ("bwd", cls.name, reverse, need[6], tuple(steps.bs)),
                       lambda *a: cls._loop_backward(ctx, need[6], *a),
                       (w_hh, w_hr, act, cs, d_out, dh, dc, draw, scratch, dhs, dg),
                       (tuple((i, None) for i in range(7)), (5, 6, 9, 10)))
        h_prev = xp.take(xp.reshape(hs, ((T + 1) * B, P)), steps.index(dev, "t1" if reverse else "t"), axis=0)
        tr = (1, 0)
        dw_hh = xp.matmul(xp.permute_dims(dg, tr), h_prev) if need[2] else None
        db = _column_sums(xp, dg) if need[3] or need[4] else None
        dx = xp.matmul(dg, w_ih) if need[0] else None
        if dx is not None and ctx.shape is not None:
            dx = xp.reshape(dx, ctx.shape)
        dw_ih = xp.matmul(xp.permute_dims(dg, tr), x) if need[1] else None
        dw_hr = xp.matmul(xp.permute_dims(dhs, tr), raw) if need[5] else None
        return (dx, dw_ih, dw_hh, db if need[3] else None, (dev.copy(db) if need[3] else db) if need[4] else None,
                dw_hr, _reorder(xp, dev, steps, dh, "inv") if need[6] else None,
                _reorder(xp, dev, steps, dc, "inv") if need[7] else None)

    @staticmethod
    def _loop_forward(ctx, gx, w_hh, w_hr, hs, cs, raw):
        """The forward's loop over time, where no C++ loop runs (rnn.cpp's proj_fwd)."""
        dev, xp, xo = ctx.device, ctx.xp, ctx.device.xp_out
        steps, reverse, T = ctx.steps, ctx.reverse, ctx.steps.T
        w_hh_t, w_hr_t = (dev.contiguous(xp.permute_dims(w, (1, 0))) for w in (w_hh, w_hr))
        gh = xp.empty((steps.B, w_hh.shape[0]), dtype=gx.dtype)
        hv, cv = _views(hs), _views(cs)
        for n, t in enumerate(range(T - 1, -1, -1) if reverse else range(T)):
            p, q = (t + 1, t) if reverse else (t, t + 1)
            m, o = steps.bs[t], steps.off[t]
            if reverse and n > 0 and m > steps.bs[t + 1]:
                k = steps.bs[t + 1]
                hv[p][k:m, ...] = hv[T][k:m, ...]
                cv[p][k:m, ...] = cv[T][k:m, ...]
            xo.matmul(hv[p][:m, ...], w_hh_t, out=gh[:m, ...])
            lstm_forward(dev, gx[o:o + m, ...], gh[:m, ...], cv[p][:m, ...], gx[o:o + m, ...], raw[o:o + m, ...],
                         cv[q][:m, ...])
            xo.matmul(raw[o:o + m, ...], w_hr_t, out=hv[q][:m, ...])

    @staticmethod
    def _loop_backward(ctx, need_dh0, w_hh, w_hr, act, cs, d_out, dh, dc, draw, scratch, dhs, dg):
        """The backward's loop over time, where no C++ loop runs (rnn.cpp's proj_bwd)."""
        dev, xo = ctx.device, ctx.device.xp_out
        steps, reverse, T = ctx.steps, ctx.reverse, ctx.steps.T
        cv = _views(cs)
        for n, t in enumerate(range(T) if reverse else range(T - 1, -1, -1)):
            p, q = (t + 1, t) if reverse else (t, t + 1)
            m, o = steps.bs[t], steps.off[t]
            dhm = dh[:m, ...]
            dhm += d_out[o:o + m, ...]
            dhs[o:o + m, ...] = dhm
            xo.matmul(dhm, w_hr, out=draw[:m, ...])
            lstm_backward(dev, act[o:o + m, ...], cv[p][:m, ...], cv[q][:m, ...], draw[:m, ...], dc[:m, ...],
                          dg[o:o + m, ...], scratch[:m, ...])
            dc[:m, ...] = scratch[:m, ...]
            if n == T - 1 and not need_dh0:
                break
            xo.matmul(dg[o:o + m, ...], w_hh, out=dhm)

    @classmethod
    def composed(cls, ctx, x, w_ih, w_hh, b_ih, b_hh, w_hr, h0, c0):
        """The same from the composed LSTM step and a matmul, on Tensors (for create_graph)."""
        steps, xp = ctx.steps, ctx.xp
        B, T, P, H = steps.B, steps.T, w_hh.shape[1], w_hr.shape[1]
        if ctx.shape is not None:
            x = x.reshape(ctx.shape[0] * ctx.shape[1], ctx.shape[2])
        gx = x @ w_ih.T
        if b_ih is not None:
            gx = gx + (b_ih + b_hh)
        h = _reorder(xp, ctx.device, steps, h0, "order") if h0 is not None else xp.zeros((B, P), dtype=x.dtype)
        c = _reorder(xp, ctx.device, steps, c0, "order") if c0 is not None else xp.zeros((B, H), dtype=x.dtype)
        outs = [None] * T
        for t in (range(T - 1, -1, -1) if ctx.reverse else range(T)):
            m, o = steps.bs[t], steps.off[t]
            raw, cn = lstm_step(gx[o:o + m], (h if m == B else h[:m]) @ w_hh.T, c if m == B else c[:m])
            hn = raw @ w_hr.T
            outs[t] = hn
            h = hn if m == B else xp.concat([hn, h[m:]], axis=0)
            c = cn if m == B else xp.concat([cn, c[m:]], axis=0)
        out = xp.concat(outs, axis=0) if T else xp.zeros((0, P), dtype=x.dtype)
        if ctx.shape is not None:
            out = out.reshape(ctx.shape[0], B, P)
        return out, _reorder(xp, ctx.device, steps, h, "inv"), _reorder(xp, ctx.device, steps, c, "inv")


def _packed_final(dev, steps, buf, reverse):
    """Each row's state after its own last step (reverse: its first; length 0: its initial
    state, which a reverse direction keeps in slot T), from the (T + 1, B, n) slots; in the
    batch's original order where steps has one."""
    xp, T, B = dev.xp, steps.T, steps.B
    if not reverse:
        return xp.take(xp.reshape(buf, ((T + 1) * B, buf.shape[2])), steps.index(dev, "last"), axis=0)
    f = dev.copy(buf[0, ...])
    k = steps.bs[0] if T else 0
    if k < B:
        f[k:, ...] = buf[T, k:, ...]
    return _reorder(xp, dev, steps, f, "inv")


def _reorder(xp, dev, steps, s, which):
    """A state (B, n) with its rows taken by steps.index(dev, which): "order" from the batch's
    order to the sorted rows' (an initial state, a final state's gradient), "inv" back; s
    itself where the batch came sorted. xp is s's namespace (Tensors in the composed forms)."""
    return s if steps.order is None else xp.take(s, steps.index(dev, which), axis=0)


def _sorted_rows(dev, steps, s):
    """A final state's gradient (B, n), given in the batch's order, in the sorted rows' order as
    a new array (the backward loops write into it)."""
    return dev.copy(s) if steps.order is None else _reorder(dev.xp, dev, steps, s, "order")
