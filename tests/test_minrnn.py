"""nn.MinGRU / nn.MinLSTM: the paper's equations re-done in NumPy, parallel (log-space scan)
against sequential mode (outputs and every gradient), gradient checks of both modes,
generation by step(), long sequences in float32, and the errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import nn

LAYERS = [nn.MinGRU, nn.MinLSTM]


# ----------------------------------------------------------------------------- the paper, in NumPy
def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_g(x):
    return np.where(x >= 0, x + 0.5, np_sigmoid(x))


def np_min_rnn(kind, params, x, h0, num_layers, hidden):
    """Sequential equations of Feng et al. (2024), sec. 3 with the log-space g, one step at a time.
    x (T, B, I), h0 (L, B, H) or None. Returns (output, h_n)."""
    out_layers = x
    finals = []
    for k in range(num_layers):
        w, b = params[f"weight_ih_l{k}"], params.get(f"bias_ih_l{k}")
        h = np.zeros((x.shape[1], hidden)) if h0 is None else h0[k]
        outs = []
        for x_t in out_layers:
            pre = x_t @ w.T + (0.0 if b is None else b)
            if kind == "MinGRU":
                z = np_sigmoid(pre[:, :hidden])
                h_tilde = np_g(pre[:, hidden:])
                h = (1.0 - z) * h + z * h_tilde
            else:
                f = np_sigmoid(pre[:, :hidden])
                i = np_sigmoid(pre[:, hidden:2 * hidden])
                h_tilde = np_g(pre[:, 2 * hidden:])
                f_, i_ = f / (f + i), i / (f + i)
                h = f_ * h + i_ * h_tilde
            outs.append(h)
        out_layers = np.stack(outs)
        finals.append(h)
    return out_layers, np.stack(finals)


def make(layer, device, input_size=3, hidden=4, num_layers=1, **kw):
    m = layer(input_size, hidden, num_layers=num_layers, dtype=tg.float64, device=device, **kw)
    return m


# ----------------------------------------------------------------------------- forward vs the paper
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
@pytest.mark.parametrize("num_layers,bias,with_h0", [(1, True, False), (2, True, True), (3, False, True)])
def test_matches_numpy_equations(device, layer, mode, num_layers, bias, with_h0):
    rng = np.random.default_rng(1)
    m = make(layer, device, num_layers=num_layers, bias=bias)
    x = rng.standard_normal((6, 2, 3)) * 2.0
    h0 = rng.standard_normal((num_layers, 2, 4)) if with_h0 else None
    out, h_n = m(tg.tensor(x, device=device), None if h0 is None else tg.tensor(h0, device=device), mode=mode)
    ref_out, ref_h = np_min_rnn(layer.__name__, m.state_dict(), x, h0, num_layers, 4)
    np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), ref_h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layer", LAYERS)
def test_batch_first_and_unbatched(device, layer):
    rng = np.random.default_rng(2)
    m = make(layer, device, num_layers=2)
    x = rng.standard_normal((5, 3, 3))
    h0 = rng.standard_normal((2, 3, 4))
    ref_out, ref_h = np_min_rnn(layer.__name__, m.state_dict(), x, h0, 2, 4)
    m.batch_first = True
    out, h_n = m(tg.tensor(x.transpose(1, 0, 2), device=device), tg.tensor(h0, device=device))
    np.testing.assert_allclose(out.numpy(), ref_out.transpose(1, 0, 2), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), ref_h, rtol=1e-10, atol=1e-12)
    m.batch_first = False
    out, h_n = m(tg.tensor(x[:, 0], device=device), tg.tensor(h0[:, 0], device=device))
    assert out.shape == (5, 4) and h_n.shape == (2, 4)
    np.testing.assert_allclose(out.numpy(), ref_out[:, 0], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- parallel == sequential
@settings(max_examples=10)
@given(data=st.data())
def test_parallel_equals_sequential_outputs_and_gradients(device, data):
    layer = data.draw(st.sampled_from(LAYERS))
    T, batch, n_in, hidden = (data.draw(st.integers(1, n)) for n in (9, 3, 4, 5))
    num_layers = data.draw(st.integers(1, 2))
    with_h0 = data.draw(st.booleans())
    seed = data.draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    m = make(layer, device, n_in, hidden, num_layers)
    x_np = rng.standard_normal((T, batch, n_in)) * 2.0
    h0_np = rng.standard_normal((num_layers, batch, hidden)) if with_h0 else None
    upstream = rng.standard_normal((T, batch, hidden))
    results = {}
    for mode in ("parallel", "sequential"):
        m.zero_grad()
        x = tg.tensor(x_np, device=device, requires_grad=True)
        h0 = None if h0_np is None else tg.tensor(h0_np, device=device, requires_grad=True)
        out, h_n = m(x, h0, mode=mode)
        ((out * tg.tensor(upstream, device=device)).sum() + h_n.sum()).backward()
        grads = {k: p.grad.numpy() for k, p in m.named_parameters()}
        grads["x"] = x.grad.numpy()
        if h0 is not None:
            grads["h0"] = h0.grad.numpy()
        results[mode] = out.numpy(), h_n.numpy(), grads
    (po, ph, pg), (so, sh, sg) = results["parallel"], results["sequential"]
    np.testing.assert_allclose(po, so, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ph, sh, rtol=1e-10, atol=1e-12)
    assert pg.keys() == sg.keys()
    for k in pg:
        np.testing.assert_allclose(pg[k], sg[k], rtol=1e-9, atol=1e-11, err_msg=k)


# ----------------------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_gradcheck(device, layer, mode):
    rng = np.random.default_rng(3)
    m = make(layer, device, input_size=2, hidden=3, num_layers=2)
    x = tg.tensor(rng.standard_normal((5, 2, 2)) * 2.0, device=device, requires_grad=True)
    h0 = tg.tensor(rng.standard_normal((2, 2, 3)), device=device, requires_grad=True)
    params = [p for _, p in m.named_parameters()]

    def run(x, h0, *ps):
        return m(x, h0, mode=mode)

    assert tg.gradcheck(run, [x, h0, *params])


@settings(max_examples=8)
@given(data=st.data())
def test_gradcheck_drawn_shapes_parallel(device, data):
    layer = data.draw(st.sampled_from(LAYERS))
    T, batch, n_in, hidden = (data.draw(st.integers(1, n)) for n in (8, 2, 3, 3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    m = make(layer, device, n_in, hidden)
    x = tg.tensor(rng.standard_normal((T, batch, n_in)) * 2.0, device=device, requires_grad=True)
    assert tg.gradcheck(lambda x, *ps: m(x), [x, *m.parameters()])


# ----------------------------------------------------------------------------- generation
@pytest.mark.parametrize("layer", LAYERS)
def test_step_matches_forward(device, layer):
    rng = np.random.default_rng(4)
    m = make(layer, device, num_layers=2)
    x = tg.tensor(rng.standard_normal((6, 2, 3)), device=device)
    out, h_n = m(x)
    h = None
    for t, x_t in enumerate(x.unbind(0)):
        y, h = m.step(x_t, h)
        np.testing.assert_allclose(y.numpy(), out[t].numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h.numpy(), h_n.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layer", LAYERS)
def test_chunks_carry_state(device, layer):
    # truncated BPTT: the state at the end of one chunk starts the next
    rng = np.random.default_rng(5)
    m = make(layer, device, num_layers=2)
    x = tg.tensor(rng.standard_normal((10, 2, 3)), device=device)
    whole, h_whole = m(x)
    first, h = m(x[:4])
    second, h = m(x[4:], h)
    np.testing.assert_allclose(np.concatenate([first.numpy(), second.numpy()]), whole.numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(h.numpy(), h_whole.numpy(), rtol=1e-11, atol=1e-13)


# ----------------------------------------------------------------------------- long sequences
def _long_run(layer, dtype, mode, x_np, state):
    m = layer(4, 8, dtype=dtype)
    m.load_state_dict(state)
    x = tg.tensor(x_np, dtype=dtype, requires_grad=True)
    out, _ = m(x, mode=mode)
    out.sum().backward()
    return out.numpy().astype(np.float64), x.grad.numpy().astype(np.float64), m


@pytest.mark.parametrize("layer", LAYERS)
def test_long_sequence_float64_modes_agree(layer):
    # 2048 steps with saturating gates: a_1 a_2 ... a_t underflows any float, so only a
    # stable scan can give these numbers at all
    rng = np.random.default_rng(6)
    x_np = rng.standard_normal((2048, 2, 4)) * 3.0
    state = layer(4, 8).state_dict()
    out_p, g_p, _ = _long_run(layer, tg.float64, "parallel", x_np, state)
    out_s, g_s, _ = _long_run(layer, tg.float64, "sequential", x_np, state)
    np.testing.assert_allclose(out_p, out_s, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g_p, g_s, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("layer", LAYERS)
def test_long_sequence_float32_error_follows_the_log_space_bound(layer):
    # Heinsen's form adds two large terms of opposite sign, a*_t and
    # logcumsumexp(log b - a*)_t, each about |a*_t| (here ~2000, with a float32 ulp of
    # ~1e-4), to get log h_t of order 1. So in float32 the parallel mode's relative error
    # is a few eps32 * max|a*|, growing with length and gate saturation, while the
    # sequential mode stays near eps32. The test states that model, against float64.
    rng = np.random.default_rng(6)
    x_np = (rng.standard_normal((2048, 2, 4)) * 3.0).astype(np.float32)
    state = layer(4, 8).state_dict()
    ref_out, ref_g, m64 = _long_run(layer, tg.float64, "parallel", x_np, state)
    with tg.no_grad():
        log_a, _ = m64._log_coeffs(m64._project(tg.tensor(x_np, dtype=tg.float64), 0))
        a_star = float(np.abs(log_a.cumsum(0).numpy()).max())
    assert a_star > 1000
    bound = float(np.finfo(np.float32).eps) * a_star
    out_p, g_p, _ = _long_run(layer, tg.float32, "parallel", x_np, state)
    out_s, g_s, _ = _long_run(layer, tg.float32, "sequential", x_np, state)
    rel = lambda a, b: float(np.max(np.abs(a - b) / np.abs(b)))  # noqa: E731
    norm_rel = lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b))  # noqa: E731
    assert np.isfinite(out_p).all() and np.isfinite(g_p).all()
    assert rel(out_p, ref_out) < 4 * bound
    # backward goes through the same cancellation twice more (logcumsumexp's backward,
    # then the reversed cumsum of a*'s gradient)
    assert norm_rel(g_p, ref_g) < 16 * bound
    assert rel(out_s, ref_out) < 1e-5
    assert norm_rel(g_s, ref_g) < 1e-6


# ----------------------------------------------------------------------------- module behaviour
def test_parameter_names_and_shapes():
    m = nn.MinGRU(3, 5, num_layers=2)
    assert {k: v.shape for k, v in m.state_dict().items()} == {
        "weight_ih_l0": (10, 3), "bias_ih_l0": (10,), "weight_ih_l1": (10, 5), "bias_ih_l1": (10,)}
    m = nn.MinLSTM(3, 5, bias=False)
    assert {k: v.shape for k, v in m.state_dict().items()} == {"weight_ih_l0": (15, 3)}
    assert "mode='parallel'" in repr(m)


def test_dropout_only_between_layers_and_only_in_training():
    m = nn.MinGRU(3, 4, num_layers=2, dropout=0.5, dtype=tg.float64)
    x = tg.randn(5, 2, 3, dtype=tg.float64)
    m.eval()
    a, _ = m(x)
    b, _ = m(x, mode="sequential")
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    m.train()
    c, _ = m(x)
    assert not np.allclose(a.numpy(), c.numpy())


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("layer", LAYERS)
def test_errors_name_layer_and_shapes(layer):
    name = layer.__name__
    m = layer(3, 4, num_layers=2)
    with pytest.raises(tg.ShapeError, match=rf"{name}: expected input of shape \(T, B, 3\) .* got \(5, 2, 7\)"):
        m(tg.zeros(5, 2, 7))
    with pytest.raises(tg.ShapeError, match=rf"{name}: h0 must have shape \(2, 2, 4\) .* got \(1, 2, 4\)"):
        m(tg.zeros(5, 2, 3), tg.zeros(1, 2, 4))
    with pytest.raises(tg.ShapeError, match=rf"{name}: the input sequence is empty"):
        m(tg.zeros(0, 2, 3))
    with pytest.raises(ValueError, match=rf"{name}: mode must be 'parallel' or 'sequential', got 'fast'"):
        m(tg.zeros(5, 2, 3), mode="fast")
    with pytest.raises(tg.ShapeError, match=rf"{name}.step: expected x_t of shape \(B, 3\), got \(2, 5\)"):
        m.step(tg.zeros(2, 5))
    with pytest.raises(tg.ShapeError, match=rf"{name}.step: h must have shape \(2, 2, 4\), got \(2, 4\)"):
        m.step(tg.zeros(2, 3), tg.zeros(2, 4))
    with pytest.raises(ValueError, match=rf"{name}: input_size and hidden_size must be positive ints"):
        layer(0, 4)
    with pytest.raises(ValueError, match=rf"{name}: num_layers must be an int >= 1"):
        layer(3, 4, num_layers=0)
