"""Recurrent cells and layers: numerical gradient checks through time, the three
implementations (sequence, step, composed) against each other, truncated BPTT, long
sequences, shapes, dropout, and bad inputs."""
import gc
import warnings

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.autograd import Context
from tinygrad_rnn.ops import rnn as rnnops

F64 = tg.float64
MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]


def make_layer(mode, *args, **kw):
    if mode.startswith("RNN"):
        return nn.RNN(*args, nonlinearity=mode[4:].lower(), **kw)
    return {"LSTM": nn.LSTM, "GRU": nn.GRU}[mode](*args, **kw)


def make_cell(mode, *args, **kw):
    if mode.startswith("RNN"):
        return nn.RNNCell(*args, nonlinearity=mode[4:].lower(), **kw)
    return {"LSTM": nn.LSTMCell, "GRU": nn.GRUCell}[mode](*args, **kw)


def randn(*shape, device="cpu", requires_grad=True):
    return tg.randn(*shape, dtype=F64, device=device, requires_grad=requires_grad)


def flat_outputs(mode, result):
    out, state = result
    return (out,) + (tuple(state) if mode == "LSTM" else (state,))


# ----------------------------------------------------------------------------- gradcheck
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_cell_through_5_steps(mode, device):
    T, B, I, H = 5, 2, 3, 3
    cell = make_cell(mode, I, H, dtype=F64, device=device)
    x = randn(T, B, I, device=device)
    h0 = randn(B, H, device=device)
    c0 = randn(B, H, device=device)

    def fn(x, h0, c0, *params):
        h, c = h0, c0
        outs = []
        for x_t in x.unbind(0):
            if mode == "LSTM":
                h, c = cell(x_t, (h, c))
            else:
                h = cell(x_t, h)
            outs.append(h)
        return (tg.stack(outs), c) if mode == "LSTM" else tg.stack(outs)

    inputs = (x, h0, c0 if mode == "LSTM" else c0.detach()) + tuple(cell.parameters())
    assert tg.gradcheck(fn, inputs)


LAYER_CASES = [
    # (num_layers, bidirectional, batch_first, initial state given)
    (1, False, False, False),
    (1, False, False, True),
    (2, False, False, True),
    (1, True, False, True),
    (2, True, True, True),
]


def _case_id(c):
    return "L{}{}{}{}".format(c[0], "-bi" if c[1] else "", "-batch_first" if c[2] else "", "-h0" if c[3] else "")


@pytest.mark.parametrize("impl", nn.rnn.IMPLS)
@pytest.mark.parametrize("case", LAYER_CASES, ids=_case_id)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_layer_through_5_steps(mode, case, impl):
    L, bi, bf, given = case
    T, B, I, H = 5, 2, 3, 3
    D = 2 if bi else 1
    m = make_layer(mode, I, H, num_layers=L, bidirectional=bi, batch_first=bf, impl=impl, dtype=F64)
    x = randn(*((B, T, I) if bf else (T, B, I)))
    h0, c0 = randn(L * D, B, H), randn(L * D, B, H)

    def fn(x, h0, c0, *params):
        if not given:
            state = None
        else:
            state = (h0, c0) if mode == "LSTM" else h0
        return flat_outputs(mode, m(x, state))

    inputs = (x, h0, c0) + tuple(m.parameters())
    small = L == 1 and not bi
    # the small cases elementwise; the bigger ones along a random direction (two forwards)
    assert tg.gradcheck(fn, inputs, fast_mode=not small)


@pytest.mark.parametrize("impl", nn.rnn.IMPLS)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_layer_on_device(mode, impl, device):
    T, B, I, H = 5, 2, 3, 2
    m = make_layer(mode, I, H, num_layers=2, bidirectional=True, impl=impl, dtype=F64, device=device)
    x = randn(T, B, I, device=device)
    h0 = randn(4, B, H, device=device)
    c0 = randn(4, B, H, device=device)
    state = (h0, c0) if mode == "LSTM" else h0
    assert tg.gradcheck(lambda x, h0, c0, *p: flat_outputs(mode, m(x, state)),
                        (x, h0, c0) + tuple(m.parameters()), fast_mode=True)


@pytest.mark.parametrize("fn,gates", [(rnnops.LSTMCellFn, 4), (rnnops.GRUCellFn, 3), (rnnops.RNNCellFn, 1)])
def test_gradcheck_fused_functions_directly(fn, gates, device):
    B, H = 3, 4
    gx, gh = randn(B, gates * H, device=device), randn(B, gates * H, device=device)
    s = randn(B, H, device=device)
    if fn is rnnops.LSTMCellFn:
        assert tg.gradcheck(fn.apply, (gx, gh, s))
    elif fn is rnnops.GRUCellFn:
        b = randn(gates * H, device=device)
        assert tg.gradcheck(fn.apply, (gx, gh, b, s))
        assert tg.gradcheck(fn.apply, (gx, gh, None, s))
    else:
        assert tg.gradcheck(lambda a, b: fn.apply(a, b, "tanh"), (gx, gh))
        assert tg.gradcheck(lambda a, b: fn.apply(a, b, "relu"), (gx, gh))


# ----------------------------------------------------------------------------- the three implementations
def _run(m, mode, x, state, seeds):
    m.zero_grad()
    for t in (x,) + tuple(s for s in (state if isinstance(state, tuple) else (state,)) if s is not None):
        t.grad = None
    outs = flat_outputs(mode, m(x, state))
    loss = sum((o * tg.tensor(g, dtype=F64, device=x.device)).sum() for o, g in zip(outs, seeds))
    loss.backward()
    grads = [p.grad.numpy() for p in m.parameters()] + [x.grad.numpy()]
    if state is not None:
        grads += [s.grad.numpy() for s in (state if isinstance(state, tuple) else (state,))]
    return [o.numpy() for o in outs], grads


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("case", LAYER_CASES, ids=_case_id)
@pytest.mark.parametrize("mode", MODES)
def test_step_and_sequence_match_composed(mode, case, bias, device):
    L, bi, bf, given = case
    T, B, I, H = 7, 3, 4, 5
    D = 2 if bi else 1
    m = make_layer(mode, I, H, num_layers=L, bidirectional=bi, batch_first=bf, bias=bias, dtype=F64, device=device)
    x = randn(*((B, T, I) if bf else (T, B, I)), device=device)
    state = None
    if given:
        h0 = randn(L * D, B, H, device=device)
        state = (h0, randn(L * D, B, H, device=device)) if mode == "LSTM" else h0
    rng = np.random.default_rng(0)
    shapes = [(B, T, D * H) if bf else (T, B, D * H)] + [(L * D, B, H)] * (2 if mode == "LSTM" else 1)
    seeds = [rng.standard_normal(s) for s in shapes]
    m.impl = "composed"
    out_c, g_c = _run(m, mode, x, state, seeds)
    for impl in ("step", "sequence"):
        m.impl = impl
        out_f, g_f = _run(m, mode, x, state, seeds)
        for a, b in zip(out_f + g_f, out_c + g_c):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=impl)


def test_cuda_layers_match_the_cpu():
    # the kernels themselves against the portable forms: test_rnn_kernels.py
    ok, why = tg.cuda_available()
    if not ok:
        pytest.skip(f"cuda: {why}")
    rng = np.random.default_rng(0)
    B, H = 5, 7
    for dt in (tg.float64, tg.float32):
        tol = 1e-12 if dt is tg.float64 else 1e-5
        for mode in MODES:
            for impl in nn.rnn.IMPLS:
                tg.manual_seed(0)
                m_gpu = make_layer(mode, 4, H, num_layers=2, bidirectional=True, impl=impl, dtype=dt, device="cuda")
                m_cpu = make_layer(mode, 4, H, num_layers=2, bidirectional=True, impl=impl, dtype=dt)
                m_cpu.load_state_dict(m_gpu.state_dict())
                x = rng.standard_normal((6, B, 4))
                og = m_gpu(tg.tensor(x, dtype=dt, device="cuda"))[0]
                oc = m_cpu(tg.tensor(x, dtype=dt))[0]
                og.sum().backward()
                oc.sum().backward()
                np.testing.assert_allclose(og.numpy(), oc.numpy(), rtol=tol * 10, atol=tol * 10)
                for (k, pg_), (_, pc_) in zip(m_gpu.named_parameters(), m_cpu.named_parameters()):
                    np.testing.assert_allclose(pg_.grad.numpy(), pc_.grad.numpy(), rtol=tol * 100,
                                               atol=tol * 100, err_msg=f"{mode} {impl} {k}")


# ----------------------------------------------------------------------------- graph shape
def _node_counts(*outputs):
    counts, seen = {}, set()
    stack = [o._ctx for o in outputs if o._ctx is not None]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        counts[n.fn.__name__] = counts.get(n.fn.__name__, 0) + 1
        stack.extend(i._ctx for i in n.inputs if isinstance(i, tg.Tensor) and i._ctx is not None)
    return counts


def test_step_layer_graph_is_one_projection_one_split_two_nodes_per_step_one_stack():
    T = 9
    m = nn.LSTM(3, 4, impl="step")
    h0, c0 = tg.randn(1, 2, 4, requires_grad=True), tg.randn(1, 2, 4, requires_grad=True)
    out, (h, c) = m(tg.randn(T, 2, 3), (h0, c0))
    n = _node_counts(out, h, c)
    assert n["LSTMCellFn"] == T
    assert n["MatMul"] == T + 1  # the input projection, then h @ W_hh^T per step
    assert n["Unbind"] == 3 and n["Stack"] == 3  # x-projection, h0, c0 in; output, h_n, c_n out
    assert n["Permute"] == 2  # W_ih^T and W_hh^T, once per call
    assert "GetItem" not in n and "Split" not in n
    m = nn.GRU(3, 4, impl="step")
    n = _node_counts(*m(tg.randn(T, 2, 3)))
    assert n["GRUCellFn"] == T and n["MatMul"] == T + 1


def test_sequence_layer_graph_is_one_node_per_layer_and_direction():
    m = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    h0, c0 = tg.randn(4, 2, 4, requires_grad=True), tg.randn(4, 2, 4, requires_grad=True)
    out, (h, c) = m(tg.randn(9, 2, 3), (h0, c0))
    n = _node_counts(out, h, c)
    assert n.pop("LSTMSequence") == 4
    assert n.pop("Concat") == 2  # the two directions' outputs, per layer
    assert set(n) <= {"Unbind", "Stack"}  # the states split per layer in, joined out
    assert "MatMul" not in n and "LSTMCellFn" not in n


# ----------------------------------------------------------------------------- truncated BPTT
@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_detached_state_cuts_the_graph(mode):
    T, B, I, H = 4, 2, 3, 5
    m = make_layer(mode, I, H, dtype=F64)
    x1, x2 = randn(T, B, I), randn(T, B, I)
    _, s1 = m(x1)
    carried = tuple(s.detach() for s in s1) if mode == "LSTM" else s1.detach()
    out2, _ = m(x2, carried)
    out2.sum().backward()
    assert x1.grad is None  # nothing flowed back into the first chunk
    grads_cut = [p.grad.numpy() for p in m.parameters()]
    # the same as running chunk 2 alone from a fresh leaf holding the same values
    m.zero_grad()
    fresh = tuple(tg.tensor(s.numpy(), dtype=F64) for s in (s1 if mode == "LSTM" else (s1,)))
    m(x2, fresh if mode == "LSTM" else fresh[0])[0].sum().backward()
    for a, b in zip(grads_cut, (p.grad.numpy() for p in m.parameters())):
        np.testing.assert_array_equal(a, b)
    # and without the detach, the gradient does reach chunk 1
    m.zero_grad()
    _, s1 = m(x1)
    m(x2, s1)[0].sum().backward()
    assert x1.grad is not None and np.abs(x1.grad.numpy()).max() > 0


def _live_contexts():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Context))


@pytest.mark.parametrize("impl", nn.rnn.IMPLS)
def test_truncated_bptt_memory_does_not_grow_over_1000_chunks(impl):
    m = nn.LSTM(3, 8, impl=impl)
    x = tg.randn(4, 2, 3)
    state = None
    counts = []
    for i in range(1000):
        out, state = m(x, state)
        out.sum().backward()
        state = tuple(s.detach() for s in state)
        if i in (9, 999):
            counts.append(_live_contexts())
    del out
    assert counts[0] == counts[1], counts
    assert state[0]._ctx is None and state[0].shape == (1, 2, 8)


def test_lstm_over_5000_timesteps_backpropagates():
    T = 5000
    for impl in nn.rnn.IMPLS:
        m = nn.LSTM(2, 3, impl=impl)
        x = tg.randn(T, 1, 2, requires_grad=True)
        out, (h, c) = m(x)
        (out.sum() + c.sum()).backward()
        g = x.grad.numpy()
        assert g.shape == (T, 1, 2) and np.isfinite(g).all()
        assert np.abs(g[0]).max() > 0  # reached the first step


# ----------------------------------------------------------------------------- shapes and modes
@pytest.mark.parametrize("mode", MODES)
def test_output_shapes_match_pytorch(mode):
    T, B, I, H, L = 6, 3, 4, 5, 3
    for bi in (False, True):
        D = 2 if bi else 1
        m = make_layer(mode, I, H, num_layers=L, bidirectional=bi)
        out, s = m(tg.randn(T, B, I))
        states = s if mode == "LSTM" else (s,)
        assert out.shape == (T, B, D * H) and all(t.shape == (L * D, B, H) for t in states)
        m.batch_first = True
        out, s = m(tg.randn(B, T, I))
        states = s if mode == "LSTM" else (s,)
        assert out.shape == (B, T, D * H) and all(t.shape == (L * D, B, H) for t in states)
        out, s = m(tg.randn(T, I))  # unbatched: batch_first does not apply
        states = s if mode == "LSTM" else (s,)
        assert out.shape == (T, D * H) and all(t.shape == (L * D, H) for t in states)


@pytest.mark.parametrize("mode", MODES)
def test_unbatched_and_batch_first_agree_with_the_plain_layout(mode):
    T, B, I, H = 5, 3, 4, 2
    m = make_layer(mode, I, H, num_layers=2, bidirectional=True, dtype=F64)
    x = randn(T, B, I, requires_grad=False)
    h0 = randn(4, B, H, requires_grad=False)
    state = (h0, h0 * 0.5) if mode == "LSTM" else h0
    out, s = m(x, state)
    states = s if mode == "LSTM" else (s,)
    # batch element 1 alone, unbatched
    st1 = tuple(t[:, 1] for t in (state if mode == "LSTM" else (state,)))
    out1, s1 = m(x[:, 1], st1 if mode == "LSTM" else st1[0])
    np.testing.assert_allclose(out1.numpy(), out.numpy()[:, 1], rtol=1e-13, atol=1e-14)
    for a, b in zip(s1 if mode == "LSTM" else (s1,), states):
        np.testing.assert_allclose(a.numpy(), b.numpy()[:, 1], rtol=1e-13, atol=1e-14)
    m.batch_first = True
    out_bf, _ = m(x.transpose(0, 1), state)
    np.testing.assert_allclose(out_bf.numpy(), out.numpy().transpose(1, 0, 2), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("mode", MODES)
def test_cells_match_one_layer_step_by_step(mode):
    T, B, I, H = 4, 2, 3, 5
    layer = make_layer(mode, I, H, dtype=F64)
    cell = make_cell(mode, I, H, dtype=F64)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = randn(T, B, I, requires_grad=False)
    out, _ = layer(x)
    h = c = None
    for t in range(T):
        if mode == "LSTM":
            h, c = cell(x[t], None if h is None else (h, c))
        else:
            h = cell(x[t], h)
        np.testing.assert_allclose(h.numpy(), out.numpy()[t], rtol=1e-13, atol=1e-14)
    # unbatched cell input
    h1 = cell(x[0, 0])
    h1 = h1[0] if mode == "LSTM" else h1
    np.testing.assert_allclose(h1.numpy(), out.numpy()[0, 0], rtol=1e-13, atol=1e-14)


def test_dropout_between_layers_only_in_training():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = nn.LSTM(3, 4, num_layers=2, dropout=0.5, dtype=F64)
    plain = nn.LSTM(3, 4, num_layers=2, dtype=F64)
    plain.load_state_dict(m.state_dict())
    x = randn(6, 2, 3, requires_grad=False)
    m.eval()
    np.testing.assert_array_equal(m(x)[0].numpy(), plain(x)[0].numpy())
    m.train()
    a, (h_a, _) = m(x)
    assert not np.allclose(a.numpy(), plain(x)[0].numpy())
    # not after the last layer: layer 0's final state is untouched, and with p=1 the last
    # layer sees zeros but its own output is not zeroed
    np.testing.assert_array_equal(h_a.numpy()[0], plain(x)[1][0].numpy()[0])
    m.dropout = 1.0
    out, _ = m(x)
    assert np.abs(out.numpy()).min() > 0
    zero_in = nn.LSTM(4, 4, dtype=F64)  # layer 1 alone, fed zeros
    zero_in.load_state_dict({k.replace("l1", "l0"): v for k, v in m.state_dict().items() if "l1" in k})
    np.testing.assert_allclose(out.numpy(), zero_in(tg.zeros(6, 2, 4, dtype=F64))[0].numpy(), rtol=1e-13)
    with pytest.warns(UserWarning, match="no effect with num_layers=1"):
        nn.GRU(3, 4, dropout=0.2)


def test_module_to_dtype_and_float32_forward():
    m = nn.GRU(3, 4, num_layers=2)
    x = tg.randn(5, 2, 3)
    out, h = m(x)
    assert out.dtype is tg.float32 and h.dtype is tg.float32
    m.to(tg.float64)
    out64, _ = m(x.double())
    np.testing.assert_allclose(out64.numpy(), out.numpy(), rtol=1e-5, atol=1e-6)


def test_no_grad_builds_no_graph():
    m = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    with tg.no_grad():
        out, (h, c) = m(tg.randn(5, 2, 3))
    assert out._ctx is None and h._ctx is None and not out.requires_grad


def test_repr():
    assert repr(nn.LSTM(3, 4, num_layers=2, bidirectional=True)) == "LSTM(3, 4, num_layers=2, bidirectional=True)"
    assert repr(nn.RNN(3, 4, nonlinearity="relu", impl="composed")) == "RNN(3, 4, nonlinearity='relu', impl='composed')"
    assert repr(nn.GRUCell(3, 4, bias=False)) == "GRUCell(3, 4, bias=False)"


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("mode", MODES)
def test_wrong_input_feature_size(mode):
    m = make_layer(mode, 4, 5)
    name = "LSTM" if mode == "LSTM" else "GRU" if mode == "GRU" else "RNN"
    with pytest.raises(tg.ShapeError, match=rf"{name}: input has 3 features \(shape \(6, 2, 3\)\).*input_size=4"):
        m(tg.randn(6, 2, 3))


@pytest.mark.parametrize("shape", [(4,), (6, 2, 3, 4)])
def test_wrong_input_ndim(shape):
    m = nn.GRU(4, 5)
    with pytest.raises(tg.ShapeError, match=r"GRU: expected input of shape \(seq_len, batch, input_size\).*"
                                            rf"got {len(shape)}-D shape"):
        m(tg.randn(*shape))
    m = nn.LSTM(4, 5, batch_first=True)
    with pytest.raises(tg.ShapeError, match=r"LSTM: expected input of shape \(batch, seq_len, input_size\)"):
        m(tg.randn(*shape))


def test_empty_sequence():
    with pytest.raises(tg.ShapeError, match=r"RNN: the input sequence is empty"):
        nn.RNN(3, 4)(tg.zeros(0, 2, 3))


@pytest.mark.parametrize("mode", MODES)
def test_wrong_h0_shape(mode):
    m = make_layer(mode, 3, 4, num_layers=2)
    name = "LSTM" if mode == "LSTM" else "GRU" if mode == "GRU" else "RNN"
    x = tg.randn(5, 2, 3)
    bad = tg.zeros(1, 2, 4)  # one layer's worth for a two-layer net
    good = tg.zeros(2, 2, 4)
    state = (bad, good) if mode == "LSTM" else bad
    with pytest.raises(tg.ShapeError, match=rf"{name}: h0 must have shape \(2, 2, 4\) \(num_layers \* "
                                            rf"num_directions, batch, hidden_size\), got \(1, 2, 4\) "
                                            rf"\(input of shape \(5, 2, 3\)\)"):
        m(x, state)
    # batched state with unbatched input
    with pytest.raises(tg.ShapeError, match=rf"{name}: h0 must have shape \(2, 4\).*unbatched input, got \(2, 2, 4\)"):
        m(tg.randn(5, 3), (good, good) if mode == "LSTM" else good)


def test_lstm_state_must_be_a_pair_with_right_c0():
    m = nn.LSTM(3, 4)
    x = tg.randn(5, 2, 3)
    with pytest.raises(TypeError, match=r"LSTM: the initial state must be a tuple \(h0, c0\), got Tensor"):
        m(x, tg.zeros(1, 2, 4))
    with pytest.raises(tg.ShapeError, match=r"LSTM: c0 must have shape \(1, 2, 4\).*got \(1, 3, 4\)"):
        m(x, (tg.zeros(1, 2, 4), tg.zeros(1, 3, 4)))
    with pytest.raises(TypeError, match=r"LSTM: c0 must be a Tensor, got ndarray"):
        m(x, (tg.zeros(1, 2, 4), np.zeros((1, 2, 4))))


def test_wrong_dtype_device_and_type():
    m = nn.LSTM(3, 4, dtype=F64)
    with pytest.raises(tg.DTypeError, match=r"LSTM: input is float32 but the parameters are float64"):
        m(tg.randn(5, 2, 3))
    with pytest.raises(TypeError, match=r"LSTM: input must be a Tensor, got ndarray"):
        m(np.zeros((5, 2, 3)))
    with pytest.raises(RuntimeError, match=r"LSTM: input is on strict but the parameters are on cpu"):
        m(tg.randn(5, 2, 3, dtype=F64, device="strict"))
    with pytest.raises(tg.DTypeError, match=r"GRU: h0 is float32 but the parameters are float64"):
        nn.GRU(3, 4, dtype=F64)(tg.randn(5, 2, 3, dtype=F64), tg.zeros(1, 2, 4))


@pytest.mark.parametrize("mode", MODES)
def test_cell_bad_inputs(mode):
    cell = make_cell(mode, 3, 4)
    name = type(cell).__name__
    with pytest.raises(tg.ShapeError, match=rf"{name}: input has 5 features \(shape \(2, 5\)\).*input_size=3"):
        cell(tg.randn(2, 5))
    with pytest.raises(tg.ShapeError, match=rf"{name}: expected input of shape \(batch, input_size\).*"
                                            r"got 3-D shape \(1, 2, 3\)"):
        cell(tg.randn(1, 2, 3))
    bad = tg.zeros(3, 4)
    state = (bad, tg.zeros(2, 4)) if mode == "LSTM" else bad
    with pytest.raises(tg.ShapeError, match=rf"{name}: h must have shape \(2, 4\) \(batch, hidden_size\) for "
                                            r"an input of batch 2, got \(3, 4\)"):
        cell(tg.randn(2, 3), state)
    if mode == "LSTM":
        with pytest.raises(TypeError, match=r"LSTMCell: the state must be a tuple \(h, c\)"):
            cell(tg.randn(2, 3), tg.zeros(2, 4))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"LSTM: hidden_size must be a positive integer, got 0"):
        nn.LSTM(3, 0)
    with pytest.raises(ValueError, match=r"GRU: input_size must be a positive integer, got 2.5"):
        nn.GRU(2.5, 4)
    with pytest.raises(ValueError, match=r"RNN: nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"):
        nn.RNN(3, 4, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match=r"RNNCell: nonlinearity must be 'tanh' or 'relu'"):
        nn.RNNCell(3, 4, nonlinearity="gelu")
    with pytest.raises(ValueError, match=r"LSTM: num_layers must be a positive integer, got 0"):
        nn.LSTM(3, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"GRU: dropout must be a number in \[0, 1\], got 1.5"):
        nn.GRU(3, 4, num_layers=2, dropout=1.5)
    with pytest.raises(tg.DTypeError, match=r"must be floating point, got dtype int64"):
        nn.LSTMCell(3, 4, dtype=tg.int64)


def test_fused_functions_check_shapes():
    with pytest.raises(tg.ShapeError, match=r"lstm_cell: gate pre-activations must have shape \(2, 16\).*"
                                            r"got gx \(2, 12\) and gh \(2, 12\)"):
        rnnops.LSTMCellFn.apply(tg.zeros(2, 12), tg.zeros(2, 12), tg.zeros(2, 4))
    with pytest.raises(tg.ShapeError, match=r"gru_cell: b_hh must have shape \(12,\), got \(4,\)"):
        rnnops.GRUCellFn.apply(tg.zeros(2, 12), tg.zeros(2, 12), tg.zeros(4), tg.zeros(2, 4))
    with pytest.raises(ValueError, match=r"rnn_cell: nonlinearity must be 'tanh' or 'relu'"):
        rnnops.RNNCellFn.apply(tg.zeros(2, 4), tg.zeros(2, 4), "sigmoid")


def test_module_to_moves_gradients_with_parameters(device):
    m = nn.GRU(3, 4)
    m(tg.randn(5, 2, 3))[0].sum().backward()
    before = {k: p.grad.numpy() for k, p in m.named_parameters()}
    m.to(tg.float64).to(device)
    for k, p in m.named_parameters():
        assert p.grad.dtype is tg.float64 and p.grad.device is p.device is tg.device(device), k
        assert p.grad.requires_grad is False and p.grad._ctx is None, k
        np.testing.assert_allclose(p.grad.numpy(), before[k], rtol=1e-7, err_msg=k)
