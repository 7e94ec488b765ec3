"""An independent reference for RNN/LSTM/GRU layers, in plain NumPy, from the equations.

Forward loops over time keeping every intermediate; backward is written by hand,
through time, from the chain rule -- no engine involved. Parameters are a dict with
PyTorch's names (weight_ih_l0, ..., ..._reverse), so the same dict loads into a layer.
"""
import numpy as np

GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ----------------------------------------------------------------------------- one step
def cell_forward(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One timestep: (h', c' or None, cache)."""
    H = h.shape[1]
    gi = x @ w_ih.T + (b_ih if b_ih is not None else 0.0)
    gh = h @ w_hh.T + (b_hh if b_hh is not None else 0.0)
    if mode == "RNN_TANH":
        hn = np.tanh(gi + gh)
        return hn, None, (x, h, hn)
    if mode == "RNN_RELU":
        pre = gi + gh
        hn = np.maximum(pre, 0.0)
        return hn, None, (x, h, pre)
    if mode == "LSTM":
        a = gi + gh
        i, f = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H])
        g, o = np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
        cn = f * c + i * g
        hn = o * np.tanh(cn)
        return hn, cn, (x, h, c, i, f, g, o, cn)
    # GRU
    r = sigmoid(gi[:, :H] + gh[:, :H])
    z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = np.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    hn = (1 - z) * n + z * h
    return hn, None, (x, h, r, z, n, gh[:, 2 * H:])


def cell_backward(mode, cache, dh, dc, w_ih, w_hh):
    """Gradients of one timestep: (dx, dh_prev, dc_prev, dW_ih, dW_hh, db_ih, db_hh)."""
    if mode == "RNN_TANH":
        x, h, hn = cache
        da = dh * (1 - hn ** 2)
        dgi = dgh = da
        dc_prev = None
    elif mode == "RNN_RELU":
        x, h, pre = cache
        da = dh * (pre > 0)
        dgi = dgh = da
        dc_prev = None
    elif mode == "LSTM":
        x, h, c, i, f, g, o, cn = cache
        tc = np.tanh(cn)
        do = dh * tc
        dcn = dc + dh * o * (1 - tc ** 2)
        di, df, dg = dcn * g, dcn * c, dcn * i
        dc_prev = dcn * f
        da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
        dgi = dgh = da
    else:  # GRU
        x, h, r, z, n, ghn = cache
        dn = dh * (1 - z)
        dz = dh * (h - n)
        dh_direct = dh * z
        dan = dn * (1 - n ** 2)
        dar = dan * ghn * r * (1 - r)
        daz = dz * z * (1 - z)
        dgi = np.concatenate([dar, daz, dan], axis=1)
        dgh = np.concatenate([dar, daz, dan * r], axis=1)
        dc_prev = None
    dx = dgi @ w_ih
    dh_prev = dgh @ w_hh
    if mode == "GRU":
        dh_prev = dh_prev + dh_direct
    return dx, dh_prev, dc_prev, dgi.T @ x, dgh.T @ h, dgi.sum(0), dgh.sum(0)


# ----------------------------------------------------------------------------- whole layers
def _names(layer, d):
    s = f"_l{layer}" + ("_reverse" if d else "")
    return f"weight_ih{s}", f"weight_hh{s}", f"bias_ih{s}", f"bias_hh{s}"


def layer_forward(mode, params, x, h0=None, c0=None, num_layers=1, bidirectional=False):
    """x (T, B, I) -> (output (T, B, D*H), h_n, c_n or None, tape)."""
    T, B, _ = x.shape
    D = 2 if bidirectional else 1
    H = params["weight_hh_l0"].shape[1]
    is_lstm = mode == "LSTM"
    h_n, c_n, tape = [], [], []
    inp = x
    for layer in range(num_layers):
        outs = []
        for d in range(D):
            k = layer * D + d
            w_ih, w_hh, b_ih, b_hh = (params.get(n) for n in _names(layer, d))
            h = h0[k] if h0 is not None else np.zeros((B, H))
            c = (c0[k] if c0 is not None else np.zeros((B, H))) if is_lstm else None
            out = np.zeros((T, B, H))
            caches = [None] * T
            for t in (range(T - 1, -1, -1) if d else range(T)):
                h, c, caches[t] = cell_forward(mode, inp[t], h, c, w_ih, w_hh, b_ih, b_hh)
                out[t] = h
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
            tape.append(caches)
        inp = np.concatenate(outs, axis=2)
    return inp, np.stack(h_n), (np.stack(c_n) if is_lstm else None), tape


def layer_backward(mode, params, tape, dout, dh_n, dc_n=None, num_layers=1, bidirectional=False):
    """Backward through time and layers: (dx, grads by parameter name, dh0, dc0)."""
    D = 2 if bidirectional else 1
    H = params["weight_hh_l0"].shape[1]
    T, B = dout.shape[:2]
    is_lstm = mode == "LSTM"
    grads = {}
    dh0 = np.zeros_like(dh_n)
    dc0 = np.zeros_like(dh_n) if is_lstm else None
    d_layer_out = dout
    for layer in range(num_layers - 1, -1, -1):
        d_in = None
        for d in range(D):
            k = layer * D + d
            names = _names(layer, d)
            w_ih, w_hh = params[names[0]], params[names[1]]
            caches = tape[k]
            dout_dir = d_layer_out[:, :, d * H:(d + 1) * H]
            dh = dh_n[k].copy()
            dc = dc_n[k].copy() if is_lstm else None
            gW_ih, gW_hh = np.zeros_like(w_ih), np.zeros_like(w_hh)
            gb_ih, gb_hh = np.zeros(w_ih.shape[0]), np.zeros(w_ih.shape[0])
            I = w_ih.shape[1]
            dx = np.zeros((T, B, I))
            # time runs backwards for the forward direction, forwards for the reverse one
            for t in (range(T) if d else range(T - 1, -1, -1)):
                dh = dh + dout_dir[t]
                dx[t], dh, dc, a, b, c, e = cell_backward(mode, caches[t], dh, dc, w_ih, w_hh)
                gW_ih += a
                gW_hh += b
                gb_ih += c
                gb_hh += e
            dh0[k] = dh
            if is_lstm:
                dc0[k] = dc
            grads[names[0]], grads[names[1]] = gW_ih, gW_hh
            if names[2] in params:
                grads[names[2]], grads[names[3]] = gb_ih, gb_hh
            d_in = dx if d_in is None else d_in + dx
        d_layer_out = d_in
    return d_layer_out, grads, dh0, dc0


def init_params(mode, input_size, hidden_size, num_layers=1, bias=True, bidirectional=False, seed=0):
    """Random parameters with PyTorch's names and shapes, in PyTorch's order."""
    rng = np.random.default_rng(seed)
    G = GATES[mode] * hidden_size
    D = 2 if bidirectional else 1
    k = 1.0 / np.sqrt(hidden_size)
    params = {}
    for layer in range(num_layers):
        in_size = input_size if layer == 0 else hidden_size * D
        for d in range(D):
            names = _names(layer, d)
            params[names[0]] = rng.uniform(-k, k, (G, in_size))
            params[names[1]] = rng.uniform(-k, k, (G, hidden_size))
            if bias:
                params[names[2]] = rng.uniform(-k, k, (G,))
                params[names[3]] = rng.uniform(-k, k, (G,))
    return params
