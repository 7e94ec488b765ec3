"""Recurrent layers on packed batches: against each sequence run alone through the same layer
(outputs, final states, every gradient), as a property over lengths (0 and 1 included),
batch, layers, directions, states, the three impls and every device; gradcheck of the packed
sequence ops; double backward through packed layers against the composed cells."""
import contextlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.errors import ShapeError
from tinygrad_rnn.nn.utils.rnn import PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence
from tinygrad_rnn.ops import rnn as rnnops

KINDS = {"RNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
I, H = 2, 3


def f64(a, device, requires_grad=False):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64, device=device, requires_grad=requires_grad)


def make_layer(kind, device, num_layers, bidirectional, batch_first, impl, seed=0):
    tg.manual_seed(seed)
    return KINDS[kind](I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                       impl=impl, dtype=tg.float64, device=device)


def states_of(out):
    return list(out) if isinstance(out, tuple) else [out]


@given(lengths=st.lists(st.integers(0, 4), min_size=1, max_size=4), kind=st.sampled_from(sorted(KINDS)),
       num_layers=st.integers(1, 2), bidirectional=st.booleans(), batch_first=st.booleans(),
       with_states=st.booleans(), impl=st.sampled_from(["sequence", "step", "composed"]),
       enforce_sorted=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_packed_against_each_sequence_alone(device, lengths, kind, num_layers, bidirectional, batch_first,
                                            with_states, impl, enforce_sorted, seed):
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    rng = np.random.default_rng(seed)
    B, T = len(lengths), max(max(lengths), 1)
    layer = make_layer(kind, device, num_layers, bidirectional, batch_first, impl, seed)
    LD = num_layers * (2 if bidirectional else 1)
    n_states = 2 if kind == "LSTM" else 1
    x_np = rng.standard_normal((T, B, I))
    s_np = [rng.standard_normal((LD, B, H)) * 0.5 for _ in range(n_states)]
    w_out = rng.standard_normal((int(sum(lengths)), layer.num_directions * H))
    w_fin = [rng.standard_normal((LD, B, H)) for _ in range(n_states)]

    # packed: one call for the whole batch
    x = f64(np.swapaxes(x_np, 0, 1) if batch_first else x_np, device, True)
    s0 = [f64(s, device, True) for s in s_np] if with_states else None
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    out, fin = layer(packed, None if s0 is None else (tuple(s0) if kind == "LSTM" else s0[0]))
    assert isinstance(out, PackedSequence) and out.data.shape == (sum(lengths), layer.num_directions * H)
    padded, got_lengths = pad_packed_sequence(out, total_length=T)
    assert got_lengths.numpy().tolist() == lengths
    fin = states_of(fin)
    loss = (out.data * f64(w_out, device)).sum()
    for f, w in zip(fin, w_fin):
        loss = loss + (f * f64(w, device)).sum()
    if loss.requires_grad:  # not where every length is 0 and no state is given
        loss.backward()
    params = dict(layer.named_parameters())
    # a weight no step used (every length 0, impl step/composed) has no gradient: it is zero
    grads = {n: np.zeros(p.shape) if p.grad is None else p.grad.numpy() for n, p in params.items()}
    for p in params.values():
        p.grad = None

    # each sequence alone, through the same layer (unpacked, batch 1); the same loss piece by piece
    order = np.argsort(-np.array(lengths), kind="stable")
    row_of = {b: i for i, b in enumerate(order)}
    offsets = np.concatenate([[0], np.cumsum([(np.array(lengths) > t).sum() for t in range(T)])])
    ref_grads = {n: np.zeros(p.shape) for n, p in params.items()}
    dx = np.zeros_like(x_np)
    ds = [np.zeros((LD, B, H)) for _ in range(n_states)]
    layer.batch_first = False
    for b, n in enumerate(lengths):
        s_b = [s[:, b:b + 1] for s in s_np] if with_states else [np.zeros((LD, 1, H))] * n_states
        if n == 0:  # no step: the final state is the initial one
            for k in range(n_states):
                np.testing.assert_allclose(fin[k].numpy()[:, b], s_b[k][:, 0], rtol=0, atol=0)
                ds[k][:, b] = w_fin[k][:, b]
            assert np.all(padded.numpy()[:, b] == 0)
            continue
        xb = f64(x_np[:n, b:b + 1], device, True)
        sb = [f64(s, device, True) for s in s_b]
        o, f = layer(xb, tuple(sb) if kind == "LSTM" else sb[0])
        rows = [offsets[t] + row_of[b] for t in range(n)]
        np.testing.assert_allclose(out.data.numpy()[rows], o.numpy()[:, 0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(padded.numpy()[:n, b], o.numpy()[:, 0], rtol=1e-10, atol=1e-12)
        lb = (o[:, 0] * f64(w_out[rows], device)).sum()
        for k, fk in enumerate(states_of(f)):
            np.testing.assert_allclose(fin[k].numpy()[:, b], fk.numpy()[:, 0], rtol=1e-10, atol=1e-12)
            lb = lb + (fk[:, 0] * f64(w_fin[k][:, b], device)).sum()
        lb.backward()
        for name, p in params.items():
            ref_grads[name] += p.grad.numpy()
            p.grad = None
        dx[:n, b] = xb.grad.numpy()[:, 0]
        for k in range(n_states):
            ds[k][:, b] = sb[k].grad.numpy()[:, 0]
    for name in params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-9, atol=1e-11, err_msg=name)
    np.testing.assert_allclose(0 * x_np if x.grad is None else x.grad.numpy(), np.swapaxes(dx, 0, 1) if batch_first else dx, rtol=1e-9, atol=1e-11)
    if with_states:
        for k in range(n_states):
            np.testing.assert_allclose(s0[k].grad.numpy(), ds[k], rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("reverse", [False, True])
def test_packed_sequence_op_gradcheck(device, kind, reverse):
    op = {"RNN": rnnops.RNNSequence, "LSTM": rnnops.LSTMSequence, "GRU": rnnops.GRUSequence}[kind]
    steps = rnnops.PackedSteps([3, 2, 2, 0])
    rng = np.random.default_rng(1)
    G = op.gates * H
    args = [f64(rng.standard_normal(s) * 0.5, device, True)
            for s in [(steps.N, I), (G, I), (G, H), (G,), (G,), (4, H)] + ([(4, H)] if op.has_cell else [])]

    def f(x, w_ih, w_hh, b_ih, b_hh, h0, c0=None):
        return op.apply(x, w_ih, w_hh, b_ih, b_hh, h0, c0, reverse=reverse, steps=steps)

    assert tg.gradcheck(f, args)
    assert tg.gradgradcheck(f, args, fast_mode=True)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_packed_double_backward_against_composed(device, kind):
    """A gradient penalty through a packed bidirectional layer: the sequence op's second
    derivative (through its composed form) against the composed cells'."""
    rng = np.random.default_rng(2)
    x_np = rng.standard_normal((3, 3, I))
    got = {}
    for impl in ("sequence", "composed"):
        layer = make_layer(kind, device, 2, True, False, impl)
        x = f64(x_np, device, True)
        out, _ = layer(pack_padded_sequence(x, [1, 3, 2], enforce_sorted=False))
        (g,) = tg.autograd.grad(out.data.tanh().sum(), [x], create_graph=True)
        (g * g).sum().backward()
        got[impl] = {n: p.grad.numpy() for n, p in layer.named_parameters()}
    for n in got["composed"]:
        np.testing.assert_allclose(got["sequence"][n], got["composed"][n], rtol=1e-9, atol=1e-11, err_msg=n)
    layer = make_layer(kind, device, 1, False, False, "sequence")
    x = f64(x_np, device, True)
    assert tg.gradgradcheck(lambda x: layer(pack_padded_sequence(x, [3, 2, 0]))[0].data, [x], fast_mode=True)


def test_packed_dropout_between_layers():
    tg.manual_seed(0)
    layer = nn.LSTM(I, H, num_layers=2, dropout=0.5, dtype=tg.float64)
    x = pack_sequence([tg.randn(3, I, dtype=tg.float64), tg.randn(1, I, dtype=tg.float64)])
    out, (h, c) = layer(x)
    out.data.sum().backward()
    assert layer.weight_ih_l0.grad is not None and h.shape == (2, 2, H)
    layer.eval()
    a, _ = layer(x)
    layer.dropout = 0.0
    b, _ = layer(x)
    np.testing.assert_array_equal(a.data.numpy(), b.data.numpy())


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("lengths", [[5, 2, 0], [5, 5, 4, 3, 2, 2, 1, 0]])
def test_packed_host_loops_split_over_threads(kind, lengths):
    """The C++ loops on 4 threads against the portable loop (kernels off): fewer rows than
    threads split the hidden units, with a barrier a step; more split the rows, by work."""
    x_np = np.random.default_rng(3).standard_normal((5, len(lengths), I))
    res = []
    for kernels in (True, False):
        old = rnnops.HOST_THREADS
        rnnops.HOST_THREADS = 4
        try:
            tg.manual_seed(0)
            layer = KINDS[kind](I, 40, bidirectional=True, dtype=tg.float64)
            x = f64(x_np, "cpu", True)
            with contextlib.ExitStack() as stack:
                if not kernels:
                    stack.enter_context(tg.backend.kernels_off(tg.device("cpu")))
                out, fin = layer(pack_padded_sequence(x, lengths))
                (out.data.sum() + sum(f.sum() for f in states_of(fin))).backward()
            res.append([out.data.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()])
        finally:
            rnnops.HOST_THREADS = old
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_packed_errors():
    layer = nn.GRU(I, H)
    x = pack_sequence([tg.randn(3, I), tg.randn(2, I)])
    with pytest.raises(TypeError, match="GRUCell: a cell takes one timestep .* not a PackedSequence"):
        nn.GRUCell(I, H)(x)
    with pytest.raises(ShapeError, match=r"h0 must have shape \(1, 2, 3\)"):
        layer(x, tg.zeros(1, 3, H))
    with pytest.raises(ShapeError, match="input_size=2"):
        layer(pack_sequence([tg.randn(3, 5)]))
    with pytest.raises(TypeError, match=r"tuple \(h0, c0\)"):
        nn.LSTM(I, H)(x, tg.zeros(1, 2, H))
