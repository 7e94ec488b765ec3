"""Recurrent cells and layers against an independent NumPy implementation of the equations
with a hand-written backward through time (tests/rnn_reference.py), and PyTorch's
naming conventions."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.nn import functional as F

import rnn_reference as ref

TOL = dict(rtol=1e-10, atol=1e-12)

LAYERS = {"RNN_TANH": lambda *a, **k: nn.RNN(*a, nonlinearity="tanh", **k),
          "RNN_RELU": lambda *a, **k: nn.RNN(*a, nonlinearity="relu", **k),
          "LSTM": nn.LSTM, "GRU": nn.GRU}


def _t(a, requires_grad=False):
    return tg.tensor(a, dtype=tg.float64, requires_grad=requires_grad)


CONFIGS = [
    # num_layers, bidirectional, batch_first, bias, with_initial_state
    (1, False, False, True, False),
    (1, False, False, True, True),
    (2, False, False, True, True),
    (1, True, False, True, True),
    (2, True, True, True, True),
    (2, True, False, False, False),
]


@pytest.mark.parametrize("impl", ["sequence", "step", "composed"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "L{}{}{}{}{}".format(
    c[0], "-bi" if c[1] else "", "-bf" if c[2] else "", "" if c[3] else "-nobias", "-h0" if c[4] else ""))
@pytest.mark.parametrize("mode", list(LAYERS))
def test_layer_matches_numpy_reference(mode, cfg, impl):
    L, bi, batch_first, bias, given = cfg
    T, B, I, H = 6, 3, 4, 5
    D = 2 if bi else 1
    rng = np.random.default_rng(1)
    params = ref.init_params(mode, I, H, L, bias, bi, seed=2)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((L * D, B, H)) * 0.5 if given else None
    c0 = rng.standard_normal((L * D, B, H)) * 0.5 if (given and mode == "LSTM") else None
    out_r, hn_r, cn_r, tape = ref.layer_forward(mode, params, x, h0, c0, L, bi)
    # upstream gradients for every output, so every path is exercised
    g_out = rng.standard_normal(out_r.shape)
    g_hn = rng.standard_normal(hn_r.shape)
    g_cn = rng.standard_normal(hn_r.shape) if mode == "LSTM" else None
    dx_r, grads_r, dh0_r, dc0_r = ref.layer_backward(mode, params, tape, g_out, g_hn, g_cn, L, bi)

    m = LAYERS[mode](I, H, num_layers=L, bias=bias, batch_first=batch_first, bidirectional=bi, impl=impl,
                     dtype=tg.float64)
    m.load_state_dict(params)
    xt = _t(x.transpose(1, 0, 2) if batch_first else x, requires_grad=True)
    h0t = _t(h0, True) if given else None
    c0t = _t(c0, True) if c0 is not None else None
    state = (h0t, c0t) if (mode == "LSTM" and given) else h0t
    out, hn = m(xt, state)
    if mode == "LSTM":
        hn, cn = hn
    out_np = out.numpy().transpose(1, 0, 2) if batch_first else out.numpy()
    np.testing.assert_allclose(out_np, out_r, **TOL)
    np.testing.assert_allclose(hn.numpy(), hn_r, **TOL)
    g_out_t = g_out.transpose(1, 0, 2) if batch_first else g_out
    loss = (out * _t(g_out_t)).sum() + (hn * _t(g_hn)).sum()
    if mode == "LSTM":
        np.testing.assert_allclose(cn.numpy(), cn_r, **TOL)
        loss = loss + (cn * _t(g_cn)).sum()
    loss.backward()
    dx = xt.grad.numpy().transpose(1, 0, 2) if batch_first else xt.grad.numpy()
    np.testing.assert_allclose(dx, dx_r, **TOL)
    named = dict(m.named_parameters())
    assert set(named) == set(grads_r)
    for k, g in grads_r.items():
        np.testing.assert_allclose(named[k].grad.numpy(), g, err_msg=k, **TOL)
    if given:
        np.testing.assert_allclose(h0t.grad.numpy(), dh0_r, **TOL)
        if mode == "LSTM":
            np.testing.assert_allclose(c0t.grad.numpy(), dc0_r, **TOL)


CELLS = {"RNN_TANH": lambda *a, **k: nn.RNNCell(*a, nonlinearity="tanh", **k),
         "RNN_RELU": lambda *a, **k: nn.RNNCell(*a, nonlinearity="relu", **k),
         "LSTM": nn.LSTMCell, "GRU": nn.GRUCell}


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", list(CELLS))
def test_cell_matches_numpy_reference_through_time(mode, bias):
    """A cell looped over 6 steps by hand: outputs and BPTT gradients against the reference."""
    T, B, I, H = 6, 3, 4, 5
    rng = np.random.default_rng(3)
    p = ref.init_params(mode, I, H, 1, bias, False, seed=4)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((1, B, H))
    c0 = rng.standard_normal((1, B, H)) if mode == "LSTM" else None
    out_r, hn_r, cn_r, tape = ref.layer_forward(mode, p, x, h0, c0)
    g_out = rng.standard_normal(out_r.shape)
    dx_r, grads_r, dh0_r, dc0_r = ref.layer_backward(mode, p, tape, g_out, np.zeros_like(hn_r),
                                                     np.zeros_like(hn_r) if mode == "LSTM" else None)

    cell = CELLS[mode](I, H, bias=bias, dtype=tg.float64)
    cell.load_state_dict({k[:-3]: v for k, v in p.items()})  # weight_ih_l0 -> weight_ih
    xt, h = _t(x, True), _t(h0[0], True)
    c = _t(c0[0], True) if mode == "LSTM" else None
    hh, cc = h, c
    loss = 0
    for t, x_t in enumerate(xt.unbind(0)):
        if mode == "LSTM":
            hh, cc = cell(x_t, (hh, cc))
        else:
            hh = cell(x_t, hh)
        np.testing.assert_allclose(hh.numpy(), out_r[t], **TOL)
        loss = loss + (hh * _t(g_out[t])).sum()
    loss.backward()
    np.testing.assert_allclose(xt.grad.numpy(), dx_r, **TOL)
    np.testing.assert_allclose(h.grad.numpy(), dh0_r[0], **TOL)
    if mode == "LSTM":
        np.testing.assert_allclose(c.grad.numpy(), dc0_r[0], **TOL)
    for k, g in grads_r.items():
        np.testing.assert_allclose(getattr(cell, k[:-3]).grad.numpy(), g, err_msg=k, **TOL)


def test_min_char_rnn_hand_written_bptt():
    """Karpathy's min-char-rnn lossFun (one-hot input, tanh RNN, softmax loss summed over
    the sequence, hand-written BPTT) against nn.RNN + linear + cross_entropy."""
    V, H, T = 7, 6, 9
    rng = np.random.default_rng(5)
    Wxh, Whh, Why = rng.standard_normal((H, V)) * 0.1, rng.standard_normal((H, H)) * 0.1, \
        rng.standard_normal((V, H)) * 0.1
    bh, by = rng.standard_normal((H, 1)) * 0.1, rng.standard_normal((V, 1)) * 0.1
    inputs, targets = rng.integers(0, V, T), rng.integers(0, V, T)
    hprev = rng.standard_normal((H, 1)) * 0.1

    # --- min-char-rnn, verbatim in spirit
    xs, hs, ps = {}, {-1: hprev}, {}
    loss = 0.0
    for t in range(T):
        xs[t] = np.zeros((V, 1))
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(Wxh @ xs[t] + Whh @ hs[t - 1] + bh)
        ys = Why @ hs[t] + by
        ps[t] = np.exp(ys - ys.max()) / np.sum(np.exp(ys - ys.max()))
        loss += -np.log(ps[t][targets[t], 0])
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(T)):
        dy = ps[t].copy()
        dy[targets[t]] -= 1
        dWhy += dy @ hs[t].T
        dby += dy
        dh = Why.T @ dy + dhnext
        dhraw = (1 - hs[t] * hs[t]) * dh
        dbh += dhraw
        dWxh += dhraw @ xs[t].T
        dWhh += dhraw @ hs[t - 1].T
        dhnext = Whh.T @ dhraw

    # --- the same model on the engine (bias_hh held at zero: min-char-rnn has one bias)
    for impl in ("sequence", "step", "composed"):
        rnn = nn.RNN(V, H, dtype=tg.float64, impl=impl)
        rnn.load_state_dict({"weight_ih_l0": Wxh, "weight_hh_l0": Whh, "bias_ih_l0": bh[:, 0],
                             "bias_hh_l0": np.zeros(H)})
        W_y, b_y = _t(Why, True), _t(by[:, 0], True)
        x = F.one_hot(tg.tensor(inputs), V, dtype=tg.float64).reshape(T, 1, V)
        h0 = _t(hprev.reshape(1, 1, H))
        out, h_n = rnn(x, h0)
        logits = F.linear(out.reshape(T, H), W_y, b_y)
        lt = F.cross_entropy(logits, tg.tensor(targets), reduction="sum")
        lt.backward()
        assert abs(lt.item() - loss) < 1e-12
        np.testing.assert_allclose(h_n.numpy().reshape(H, 1), hs[T - 1], **TOL)
        np.testing.assert_allclose(rnn.weight_ih_l0.grad.numpy(), dWxh, **TOL)
        np.testing.assert_allclose(rnn.weight_hh_l0.grad.numpy(), dWhh, **TOL)
        np.testing.assert_allclose(rnn.bias_ih_l0.grad.numpy(), dbh[:, 0], **TOL)
        np.testing.assert_allclose(rnn.bias_hh_l0.grad.numpy(), dbh[:, 0], **TOL)
        np.testing.assert_allclose(W_y.grad.numpy(), dWhy, **TOL)
        np.testing.assert_allclose(b_y.grad.numpy(), dby[:, 0], **TOL)


# ----------------------------------------------------------------------------- PyTorch conventions
def _torch_keys(num_layers, bidirectional, bias=True):
    keys = []
    for layer in range(num_layers):
        for sfx in ([""] + (["_reverse"] if bidirectional else [])):
            keys += [f"weight_ih_l{layer}{sfx}", f"weight_hh_l{layer}{sfx}"]
            if bias:
                keys += [f"bias_ih_l{layer}{sfx}", f"bias_hh_l{layer}{sfx}"]
    return keys


def test_state_dict_keys_order_and_shapes_match_pytorch():
    # Written out by hand from torch.nn.LSTM(10, 20, num_layers=2, bidirectional=True).state_dict()
    expected = [
        ("weight_ih_l0", (80, 10)), ("weight_hh_l0", (80, 20)), ("bias_ih_l0", (80,)), ("bias_hh_l0", (80,)),
        ("weight_ih_l0_reverse", (80, 10)), ("weight_hh_l0_reverse", (80, 20)),
        ("bias_ih_l0_reverse", (80,)), ("bias_hh_l0_reverse", (80,)),
        ("weight_ih_l1", (80, 40)), ("weight_hh_l1", (80, 20)), ("bias_ih_l1", (80,)), ("bias_hh_l1", (80,)),
        ("weight_ih_l1_reverse", (80, 40)), ("weight_hh_l1_reverse", (80, 20)),
        ("bias_ih_l1_reverse", (80,)), ("bias_hh_l1_reverse", (80,)),
    ]
    sd = nn.LSTM(10, 20, num_layers=2, bidirectional=True).state_dict()
    assert [(k, v.shape) for k, v in sd.items()] == expected
    # GRU: 3 gates; RNN: 1; 3 layers, one direction, no bias
    sd = nn.GRU(7, 5, num_layers=3).state_dict()
    assert list(sd) == _torch_keys(3, False)
    assert sd["weight_ih_l0"].shape == (15, 7) and sd["weight_ih_l2"].shape == (15, 5)
    sd = nn.RNN(7, 5, num_layers=3, bias=False, nonlinearity="relu").state_dict()
    assert list(sd) == _torch_keys(3, False, bias=False)
    assert sd["weight_hh_l1"].shape == (5, 5)
    # cells: torch.nn.LSTMCell(4, 3).state_dict()
    sd = nn.LSTMCell(4, 3).state_dict()
    assert [(k, v.shape) for k, v in sd.items()] == [("weight_ih", (12, 4)), ("weight_hh", (12, 3)),
                                                     ("bias_ih", (12,)), ("bias_hh", (12,))]
    assert list(nn.GRUCell(4, 3, bias=False).state_dict()) == ["weight_ih", "weight_hh"]


def test_default_init_is_uniform_in_one_over_sqrt_hidden_and_seeded():
    tg.manual_seed(3)
    a = nn.LSTM(6, 16, num_layers=2, dtype=tg.float64).state_dict()
    tg.manual_seed(3)
    b = nn.LSTM(6, 16, num_layers=2, dtype=tg.float64).state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        assert np.abs(a[k]).max() <= 0.25  # 1/sqrt(16)
        assert np.abs(a[k]).max() > 0.2 and abs(a[k].mean()) < 0.05  # spread over the whole range
    assert not np.array_equal(a["weight_ih_l0"], a["weight_ih_l1"][:, :6])
    c = nn.GRUCell(3, 4).state_dict()
    assert all(np.abs(v).max() <= 0.5 for v in c.values())
    assert nn.GRUCell(3, 4).weight_ih.dtype is tg.float32


def test_optional_against_real_pytorch():
    torch = pytest.importorskip("torch")
    T, B, I, H = 5, 3, 4, 6
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I))
    for tcls, ours in ((torch.nn.LSTM, nn.LSTM), (torch.nn.GRU, nn.GRU), (torch.nn.RNN, nn.RNN)):
        tm = tcls(I, H, num_layers=2, bidirectional=True).double()
        m = ours(I, H, num_layers=2, bidirectional=True, dtype=tg.float64)
        m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
        assert list(m.state_dict()) == list(tm.state_dict())
        h0 = rng.standard_normal((4, B, H))
        ts0 = (torch.tensor(h0), torch.tensor(h0 * 0.5)) if tcls is torch.nn.LSTM else torch.tensor(h0)
        s0 = (_t(h0), _t(h0 * 0.5)) if ours is nn.LSTM else _t(h0)
        xt, ours_x = torch.tensor(x, requires_grad=True), _t(x, True)
        to, ts = tm(xt, ts0)
        o, s = m(ours_x, s0)
        np.testing.assert_allclose(o.numpy(), to.detach().numpy(), rtol=1e-10, atol=1e-12)
        for a, b in zip(s if ours is nn.LSTM else (s,), ts if ours is nn.LSTM else (ts,)):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
        (to.sum() + (ts[0] if ours is nn.LSTM else ts).pow(2).sum()).backward()
        (o.sum() + ((s[0] if ours is nn.LSTM else s) ** 2).sum()).backward()
        np.testing.assert_allclose(ours_x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        for k, p in tm.named_parameters():
            np.testing.assert_allclose(getattr(m, k).grad.numpy(), p.grad.numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=k)
    for tcls, ours in ((torch.nn.LSTMCell, nn.LSTMCell), (torch.nn.GRUCell, nn.GRUCell), (torch.nn.RNNCell, nn.RNNCell)):
        tc = tcls(I, H).double()
        c = ours(I, H, dtype=tg.float64)
        c.load_state_dict({k: v.detach().numpy() for k, v in tc.state_dict().items()})
        to = tc(torch.tensor(x[0]))
        o = c(_t(x[0]))
        for a, b in zip(o if ours is nn.LSTMCell else (o,), to if ours is nn.LSTMCell else (to,)):
            np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
