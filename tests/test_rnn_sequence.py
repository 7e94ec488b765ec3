"""The whole-sequence recurrent ops (ops/rnn.py's LSTMSequence & co., the layers' default
impl): against the composed and step layers as a hypothesis property, gradient checks of
the ops themselves, their errors, and the memory they hold."""
import gc
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.ops import rnn as rnnops

F64 = tg.float64
MODES = ["RNN_TANH", "RNN_RELU", "LSTM", "GRU"]
SEQUENCE_OPS = {"RNN_TANH": rnnops.RNNSequence, "RNN_RELU": rnnops.RNNSequence,
                "LSTM": rnnops.LSTMSequence, "GRU": rnnops.GRUSequence}


def make_layer(mode, *args, **kw):
    if mode.startswith("RNN"):
        return nn.RNN(*args, nonlinearity=mode[4:].lower(), **kw)
    return {"LSTM": nn.LSTM, "GRU": nn.GRU}[mode](*args, **kw)


def _forward_backward(m, mode, x, state, seeds):
    """Outputs and the gradients of every input, state, weight and bias for loss = sum(out_k * seed_k)."""
    m.zero_grad()
    leaves = [x] + list(state or ())
    for t in leaves:
        t.grad = None
    arg = None if state is None else (tuple(state) if mode == "LSTM" else state[0])
    out, fin = m(x, arg)
    outs = [out] + (list(fin) if mode == "LSTM" else [fin])
    loss = sum((o * tg.tensor(s, dtype=F64, device=x.device)).sum() for o, s in zip(outs, seeds))
    loss.backward()
    return ([o.numpy() for o in outs] + [t.grad.numpy() for t in leaves]
            + [p.grad.numpy() for p in m.parameters()])


@st.composite
def layer_cases(draw):
    return dict(mode=draw(st.sampled_from(MODES)), T=draw(st.integers(1, 6)), B=draw(st.integers(1, 3)),
                I=draw(st.integers(1, 4)), H=draw(st.integers(1, 4)), L=draw(st.integers(1, 2)),
                bi=draw(st.booleans()), bf=draw(st.booleans()), given_state=draw(st.booleans()),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


@pytest.mark.parametrize("device", ["cpu", "strict"])
@given(case=layer_cases())
def test_sequence_matches_composed_and_step(device, case):
    mode, T, B, I, H, L = (case[k] for k in ("mode", "T", "B", "I", "H", "L"))
    D = 2 if case["bi"] else 1
    tg.manual_seed(case["seed"])
    m = make_layer(mode, I, H, num_layers=L, bidirectional=case["bi"], batch_first=case["bf"], bias=case["bias"],
                   dtype=F64, device=device)
    x = tg.randn(*((B, T, I) if case["bf"] else (T, B, I)), dtype=F64, device=device, requires_grad=True)
    n_states = 2 if mode == "LSTM" else 1
    state = None
    if case["given_state"]:
        state = [tg.randn(L * D, B, H, dtype=F64, device=device, requires_grad=True) for _ in range(n_states)]
    rng = np.random.default_rng(case["seed"])
    seeds = [rng.standard_normal((B, T, D * H) if case["bf"] else (T, B, D * H))]
    seeds += [rng.standard_normal((L * D, B, H)) for _ in range(n_states)]
    results = {}
    for impl in ("composed", "step", "sequence"):
        m.impl = impl
        results[impl] = _forward_backward(m, mode, x, state, seeds)
    for impl in ("step", "sequence"):
        for k, (a, b) in enumerate(zip(results[impl], results["composed"])):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"{impl}, array {k}")


def _op_inputs(mode, T, B, I, H, bias=True, states=True, device="cpu"):
    G = {"LSTM": 4, "GRU": 3}.get(mode, 1) * H
    r = lambda *s: tg.randn(*s, dtype=F64, device=device, requires_grad=True)  # noqa: E731
    x, w_ih, w_hh = r(T, B, I), r(G, I), r(G, H)
    b_ih, b_hh = (r(G), r(G)) if bias else (None, None)
    h0 = r(B, H) if states else None
    c0 = r(B, H) if states and mode == "LSTM" else None
    return [x, w_ih, w_hh, b_ih, b_hh, h0, c0]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_sequence_op(mode, T, reverse, device):
    nl = mode[4:].lower() if mode.startswith("RNN") else "tanh"
    op = SEQUENCE_OPS[mode]
    args = _op_inputs(mode, T, 2, 3, 3, device=device)
    idx = [i for i, a in enumerate(args) if a is not None]

    def fn(*ts):
        full = list(args)
        for i, t in zip(idx, ts):
            full[i] = t
        return op.apply(*full, reverse=reverse, nonlinearity=nl)

    assert tg.gradcheck(fn, [args[i] for i in idx], fast_mode=True)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_sequence_op_without_bias_or_states_elementwise(mode):
    nl = mode[4:].lower() if mode.startswith("RNN") else "tanh"
    op = SEQUENCE_OPS[mode]
    x, w_ih, w_hh, *_ = _op_inputs(mode, 3, 2, 2, 2, bias=False, states=False)
    assert tg.gradcheck(lambda a, b, c: op.apply(a, b, c, None, None, None, None, nonlinearity=nl), [x, w_ih, w_hh])


@pytest.mark.parametrize("mode", MODES)
def test_retain_graph_second_backward_gives_the_same_gradients(mode):
    m = make_layer(mode, 3, 4, dtype=F64)
    x = tg.randn(5, 2, 3, dtype=F64, requires_grad=True)
    out = m(x)[0].sum()
    out.backward(retain_graph=True)
    first = [p.grad.numpy().copy() for p in m.parameters()] + [x.grad.numpy().copy()]
    m.zero_grad()
    x.grad = None
    out.backward()
    for a, b in zip(first, [p.grad.numpy() for p in m.parameters()] + [x.grad.numpy()]):
        np.testing.assert_array_equal(a, b)


def test_only_the_wanted_gradients_are_computed():
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = _op_inputs("LSTM", 4, 2, 3, 3)
    x, h0 = x.detach(), h0.detach()
    out, h, c = rnnops.LSTMSequence.apply(x, w_ih, w_hh, b_ih, b_hh, h0, c0)
    (out.sum() + c.sum()).backward()
    assert x.grad is None and h0.grad is None
    assert all(t.grad is not None for t in (w_ih, w_hh, b_ih, b_hh, c0))
    assert b_ih.grad.data is not b_hh.grad.data  # the same values, but never one shared array


def test_sequence_buffers_are_freed_after_backward():
    m = nn.LSTM(3, 4)
    out, (h, c) = m(tg.randn(6, 2, 3))
    node = out._ctx
    assert node.fn is rnnops.LSTMSequence
    x, w_ih, w_hh, act, hs, cs = node.saved_tensors  # the weights live on in the module
    saved = [weakref.ref(a) for a in (x, act, hs, cs)]
    del x, w_ih, w_hh, act, hs, cs
    (out.sum() + h.sum() + c.sum()).backward()
    assert node.saved_tensors is None
    del out, h, c
    gc.collect()
    assert all(r() is None for r in saved)  # the act, states and input buffers are gone


def test_final_states_do_not_pin_the_sequence_buffers():
    # truncated BPTT carries h_n.detach() for ever: it must be a small array of its own
    m = nn.GRU(3, 4)
    out, h = m(tg.randn(6, 2, 3))
    assert h.data.base is None or h.data.base.size == h.data.size


# ----------------------------------------------------------------------------- errors
def test_empty_sequence_is_refused_by_the_op():
    args = _op_inputs("LSTM", 1, 2, 3, 4)
    args[0] = tg.zeros(0, 2, 3, dtype=F64)
    with pytest.raises(tg.ShapeError, match=r"lstm_sequence: the input sequence is empty \(shape \(0, 2, 3\)"):
        rnnops.LSTMSequence.apply(*args)
    with pytest.raises(tg.ShapeError, match=r"LSTM: the input sequence is empty"):
        nn.LSTM(3, 4)(tg.zeros(0, 2, 3))


def test_sequence_op_bad_shapes_and_dtypes():
    x, w_ih, w_hh, b_ih, b_hh, h0, c0 = _op_inputs("LSTM", 3, 2, 3, 4)
    op = rnnops.LSTMSequence.apply
    with pytest.raises(tg.ShapeError, match=r"lstm_sequence: the input must be 3-D \(seq_len, batch, input_size\), "
                                            r"got shape \(2, 3\)"):
        op(x[0], w_ih, w_hh, b_ih, b_hh, h0, c0)
    with pytest.raises(tg.ShapeError, match=r"lstm_sequence: weight_hh must have shape \(4 \* hidden, hidden\), "
                                            r"got \(12, 4\)"):
        op(x, w_ih, w_hh[:12], b_ih, b_hh, h0, c0)
    with pytest.raises(tg.ShapeError, match=r"lstm_sequence: weight_ih must have shape \(16, 3\) for input of "
                                            r"shape \(3, 2, 3\) and weight_hh \(16, 4\), got \(16, 2\)"):
        op(x, w_ih[:, :2], w_hh, b_ih, b_hh, h0, c0)
    with pytest.raises(tg.ShapeError, match=r"lstm_sequence: bias_hh must have shape \(16,\), got \(15,\)"):
        op(x, w_ih, w_hh, b_ih, b_hh[:15], h0, c0)
    with pytest.raises(tg.ShapeError, match=r"lstm_sequence: c0 must have shape \(2, 4\) \(batch, hidden\), "
                                            r"got \(1, 4\)"):
        op(x, w_ih, w_hh, b_ih, b_hh, h0, c0[:1])
    with pytest.raises(tg.DTypeError, match=r"lstm_sequence: weight_hh is float32 but the input is float64"):
        op(x, w_ih, w_hh.float(), b_ih, b_hh, h0, c0)
    with pytest.raises(ValueError, match=r"rnn_sequence: nonlinearity must be 'tanh' or 'relu', got 'gelu'"):
        rnnops.RNNSequence.apply(*_op_inputs("RNN", 3, 2, 3, 4), nonlinearity="gelu")


def test_bad_impl_is_refused():
    with pytest.raises(ValueError, match=r"GRU: impl must be one of 'sequence', 'step', 'composed', got 'cudnn'"):
        nn.GRU(3, 4, impl="cudnn")
    m = nn.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"LSTM: impl must be one of"):
        m.impl = "fused"
    assert m.impl == "sequence"


# ----------------------------------------------------------------------------- embedding fold
def _folded(out):
    """Whether the sequence op behind out read its projection from an embedding lookup."""
    seen, stack = set(), [out._ctx]
    while stack:
        n = stack.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        if n.fn.__name__.endswith("Sequence") and n.inputs[1] is None:
            return True
        stack.extend(i._ctx for i in n.inputs if isinstance(i, tg.Tensor))
    return False


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("mode", MODES)
def test_embedding_fold_matches_composed(mode, bias, device):
    V, E, H, T, B = 5, 3, 4, 6, 2  # V < T * B: folded
    emb = nn.Embedding(V, E, dtype=F64, device=device)
    m = make_layer(mode, E, H, num_layers=2, bidirectional=True, bias=bias, dtype=F64, device=device)
    ids = tg.tensor(np.random.default_rng(0).integers(0, V, (T, B)), device=device)
    res = {}
    for impl in ("composed", "sequence"):
        m.impl = impl
        m.zero_grad()
        emb.zero_grad()
        out, _ = m(emb(ids))
        assert _folded(out) == (impl == "sequence")
        (out * out).sum().backward()
        res[impl] = [out.numpy(), emb.weight.grad.numpy()] + [p.grad.numpy() for p in m.parameters()]
    for a, b in zip(res["sequence"], res["composed"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_embedding_is_not_folded_where_it_would_change_or_cost_something():
    T, B, E, H = 4, 2, 3, 5
    ids = tg.tensor(np.arange(T * B).reshape(T, B) % 6)
    m = nn.GRU(E, H, dtype=F64)
    big = nn.Embedding(T * B, E, dtype=F64)  # as many rows as the sequence: no gain
    assert not _folded(m(big(ids))[0])
    pad = nn.Embedding(6, E, padding_idx=0, dtype=F64)
    out, _ = m(pad(ids))
    assert not _folded(out)
    out.sum().backward()
    assert np.all(pad.weight.grad.numpy()[0] == 0)
    small = nn.Embedding(6, E, dtype=F64)
    x = small(ids)
    x.retain_grad()  # its gradient is asked for, so it must flow through x
    out, _ = m(x)
    assert not _folded(out)
    out.sum().backward()
    assert x.grad is not None
    assert _folded(m(small(ids))[0])
