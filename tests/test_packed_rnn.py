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


def make_layer(kind, device, num_layers, bidirectional, batch_first, impl, seed=0, proj_size=0):
    tg.manual_seed(seed)
    extra = {"proj_size": proj_size} if proj_size else {}
    return KINDS[kind](I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                       impl=impl, dtype=tg.float64, device=device, **extra)


def states_of(out):
    return list(out) if isinstance(out, tuple) else [out]


@given(lengths=st.lists(st.integers(0, 4), min_size=1, max_size=4), kind=st.sampled_from(sorted(KINDS)),
       num_layers=st.integers(1, 2), bidirectional=st.booleans(), batch_first=st.booleans(),
       with_states=st.booleans(), impl=st.sampled_from(["sequence", "step", "composed"]),
       enforce_sorted=st.booleans(), proj=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_packed_against_each_sequence_alone(device, lengths, kind, num_layers, bidirectional, batch_first,
                                            with_states, impl, enforce_sorted, proj, seed):
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    rng = np.random.default_rng(seed)
    B, T = len(lengths), max(max(lengths), 1)
    P = 2 if proj and kind == "LSTM" else 0  # an LSTM with projections: h of size P
    layer = make_layer(kind, device, num_layers, bidirectional, batch_first, impl, seed, proj_size=P)
    LD = num_layers * (2 if bidirectional else 1)
    n_states = 2 if kind == "LSTM" else 1
    sizes = [P or H, H][:n_states]
    x_np = rng.standard_normal((T, B, I))
    s_np = [rng.standard_normal((LD, B, n)) * 0.5 for n in sizes]
    w_out = rng.standard_normal((int(sum(lengths)), layer.num_directions * (P or H)))
    w_fin = [rng.standard_normal((LD, B, n)) for n in sizes]

    # packed: one call for the whole batch
    x = f64(np.swapaxes(x_np, 0, 1) if batch_first else x_np, device, True)
    s0 = [f64(s, device, True) for s in s_np] if with_states else None
    packed = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=enforce_sorted)
    out, fin = layer(packed, None if s0 is None else (tuple(s0) if kind == "LSTM" else s0[0]))
    assert isinstance(out, PackedSequence) and out.data.shape == (sum(lengths), layer.num_directions * (P or H))
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
    ds = [np.zeros((LD, B, n)) for n in sizes]
    layer.batch_first = False
    for b, n in enumerate(lengths):
        s_b = [s[:, b:b + 1] for s in s_np] if with_states else [np.zeros((LD, 1, n)) for n in sizes]
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
    want_dx = np.swapaxes(dx, 0, 1) if batch_first else dx
    np.testing.assert_allclose(0 * want_dx if x.grad is None else x.grad.numpy(), want_dx, rtol=1e-9, atol=1e-11)
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


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU", "proj"])
@pytest.mark.parametrize("reverse", [False, True])
def test_packed_sequence_op_in_the_batchs_order(device, kind, reverse):
    """With an order (the batch came unsorted) the op takes h0/c0 and gives h_n/c_n in the
    batch's original order: the same numbers as the sorted op with the states permuted by
    hand, and its gradients (first and second) check out."""
    lengths, order = [3, 2, 2, 0], [2, 0, 3, 1]  # sorted row r is the batch's row order[r]
    sorted_steps, steps = rnnops.PackedSteps(lengths), rnnops.PackedSteps(lengths, order=order)
    rng = np.random.default_rng(4)
    P = 3
    if kind == "proj":
        op, G = rnnops.LSTMProjSequence, 4 * H
        shapes = [(steps.N, I), (G, I), (G, P), (G,), (G,), (P, H), (4, P), (4, H)]
    else:
        op = {"RNN": rnnops.RNNSequence, "LSTM": rnnops.LSTMSequence, "GRU": rnnops.GRUSequence}[kind]
        G = op.gates * H
        shapes = [(steps.N, I), (G, I), (G, H), (G,), (G,), (4, H)] + ([(4, H)] if op.has_cell else [])
    args = [f64(rng.standard_normal(s) * 0.5, device, True) for s in shapes]
    n_states = 2 if kind in ("LSTM", "proj") else 1

    def f(*a, steps=steps):
        return op.apply(*a, *([None] if kind in ("RNN", "GRU") else []), reverse=reverse, steps=steps)

    got = f(*args)
    inv = np.argsort(order)
    by_hand = f(*args[:-n_states], *[f64(s.numpy()[order], device) for s in args[-n_states:]], steps=sorted_steps)
    np.testing.assert_allclose(got[0].numpy(), by_hand[0].numpy(), rtol=1e-12, atol=1e-14)
    for a, b in zip(got[1:], by_hand[1:]):
        np.testing.assert_allclose(a.numpy(), b.numpy()[inv], rtol=1e-12, atol=1e-14)
    assert tg.gradcheck(f, args)
    assert tg.gradgradcheck(f, args, fast_mode=True)


def test_packed_steps_order_must_be_a_permutation():
    with pytest.raises(ValueError, match=r"packed steps: order must be a permutation of the 3 rows, got \[0, 0, 2\]"):
        rnnops.PackedSteps([2, 1, 1], order=[0, 0, 2])


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


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "LSTMP"])
@pytest.mark.parametrize("lengths", [[5, 2, 0], [5, 5, 4, 3, 2, 2, 1, 0]])
def test_packed_host_loops_split_over_threads(kind, lengths):
    """The C++ loops on 4 threads against the portable loop (kernels off): fewer rows than
    threads split the hidden units, with a barrier a step; more split the rows, by work (the
    projected LSTM's loops always split rows)."""
    x_np = np.random.default_rng(3).standard_normal((5, len(lengths), I))
    res = []
    for kernels in (True, False):
        old = rnnops.HOST_THREADS
        rnnops.HOST_THREADS = 4
        try:
            tg.manual_seed(0)
            extra = {"proj_size": 7} if kind == "LSTMP" else {}
            layer = KINDS[kind.replace("LSTMP", "LSTM")](I, 40, bidirectional=True, dtype=tg.float64, **extra)
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


# ----------------------------------------------------------------------------- proj_size
def np_lstm_proj(x, p, h, c, reverse):
    """One direction of PyTorch's LSTM with projections, from its equations: x (T, B, I)."""
    def sig(a):
        return 1 / (1 + np.exp(-a))
    outs = [None] * len(x)
    for t in (range(len(x) - 1, -1, -1) if reverse else range(len(x))):
        a = x[t] @ p["w_ih"].T + p["b_ih"] + h @ p["w_hh"].T + p["b_hh"]
        i, f, g, o = np.split(a, 4, axis=1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = (sig(o) * np.tanh(c)) @ p["w_hr"].T
        outs[t] = h
    return np.stack(outs), h, c


@pytest.mark.parametrize("impl", ["sequence", "step", "composed"])
def test_lstm_proj_against_equations(device, impl):
    rng = np.random.default_rng(5)
    layer = make_layer("LSTM", device, 2, True, False, impl, proj_size=2)
    names = [n for n, _ in layer.named_parameters()]
    assert names[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"]
    sd = {n: np.asarray(v) for n, v in layer.state_dict().items()}
    assert sd["weight_hh_l1_reverse"].shape == (4 * H, 2) and sd["weight_ih_l1"].shape == (4 * H, 4)
    assert sd["weight_hr_l1_reverse"].shape == (2, H)
    x_np, h0, c0 = rng.standard_normal((4, 3, I)), rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, H))
    out, (h, c) = layer(f64(x_np, device), (f64(h0, device), f64(c0, device)))
    assert out.shape == (4, 3, 4) and h.shape == (4, 3, 2) and c.shape == (4, 3, H)
    inp, hs, cs = x_np, [], []
    for layer_k in range(2):
        outs = []
        for d, sfx in enumerate(["", "_reverse"]):
            p = {k: sd[f"{w}_l{layer_k}{sfx}"] for k, w in [("w_ih", "weight_ih"), ("w_hh", "weight_hh"),
                                                            ("b_ih", "bias_ih"), ("b_hh", "bias_hh"),
                                                            ("w_hr", "weight_hr")]}
            o, hn, cn = np_lstm_proj(inp, p, h0[2 * layer_k + d], c0[2 * layer_k + d], d == 1)
            outs.append(o)
            hs.append(hn)
            cs.append(cn)
        inp = np.concatenate(outs, axis=2)
    np.testing.assert_allclose(out.numpy(), inp, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.numpy(), np.stack(hs), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.numpy(), np.stack(cs), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_lstm_proj_op_gradcheck(device, packed, reverse):
    rng = np.random.default_rng(6)
    steps = rnnops.PackedSteps([3, 2, 0]) if packed else None
    xshape = (steps.N, I) if packed else (3, 3, I)
    args = [f64(rng.standard_normal(s) * 0.5, device, True)
            for s in [xshape, (4 * H, I), (4 * H, 2), (4 * H,), (4 * H,), (2, H), (3, 2), (3, H)]]

    def f(*a):
        return rnnops.LSTMProjSequence.apply(*a, reverse=reverse, steps=steps)

    assert tg.gradcheck(f, args)
    assert tg.gradgradcheck(f, args, fast_mode=True)


def test_proj_size_errors():
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        nn.LSTM(2, 3, proj_size=3)
    with pytest.raises(ValueError, match="only supported for LSTM, not RNN or GRU"):
        nn.GRU(2, 3, proj_size=1)
    with pytest.raises(ValueError, match="non-negative integer"):
        nn.LSTM(2, 3, proj_size=-1)
    layer = nn.LSTM(2, 3, proj_size=2)
    with pytest.raises(ShapeError, match=r"h0 must have shape \(1, 4, 2\) \(num_layers \* num_directions, batch, proj_size\)"):
        layer(tg.randn(5, 4, 2), (tg.zeros(1, 4, 3), tg.zeros(1, 4, 3)))
    with pytest.raises(ShapeError, match=r"c0 must have shape \(1, 2, 3\)"):
        layer(pack_sequence([tg.randn(2, 2), tg.randn(1, 2)]), (tg.zeros(1, 2, 2), tg.zeros(1, 2, 2)))


def test_lstm_proj_against_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    ref = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2).double()
    layer = nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, dtype=tg.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x_np = rng.standard_normal((4, 3, I))
    xt = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x_np), [2, 4, 1], enforce_sorted=False)
    want, (wh, wc) = ref(xt)
    got, (h, c) = layer(pack_padded_sequence(f64(x_np, "cpu"), [2, 4, 1], enforce_sorted=False))
    np.testing.assert_allclose(got.data.numpy(), want.data.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h.numpy(), wh.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.numpy(), wc.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["RNN", "LSTM", "GRU"])
def test_packed_against_pytorch(kind):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    ref = getattr(torch.nn, kind)(I, H, num_layers=2, bidirectional=True).double()
    layer = KINDS[kind](I, H, num_layers=2, bidirectional=True, dtype=tg.float64)
    layer.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x_np, lengths = rng.standard_normal((4, 3, I)), [2, 4, 1]
    xt = torch.tensor(x_np, requires_grad=True)
    want, want_h = ref(torch.nn.utils.rnn.pack_padded_sequence(xt, lengths, enforce_sorted=False))
    x = f64(x_np, "cpu", True)
    got, got_h = layer(pack_padded_sequence(x, lengths, enforce_sorted=False))
    np.testing.assert_allclose(got.data.numpy(), want.data.detach().numpy(), rtol=1e-10, atol=1e-12)
    for g, w in zip(states_of(got_h), want_h if isinstance(want_h, tuple) else [want_h]):
        np.testing.assert_allclose(g.numpy(), w.detach().numpy(), rtol=1e-10, atol=1e-12)
    (want.data.sum() + (want_h[0] if isinstance(want_h, tuple) else want_h).sum()).backward()
    (got.data.sum() + states_of(got_h)[0].sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(dict(layer.named_parameters())[name].grad.numpy(), p.grad.numpy(),
                                   rtol=1e-9, atol=1e-11, err_msg=name)


@pytest.mark.parametrize("kind, extra", [("RNN", {}), ("RNN", {"nonlinearity": "relu"}), ("LSTM", {}),
                                         ("GRU", {}), ("LSTM", {"proj_size": 2})])
def test_packed_impls_agree_without_bias(device, kind, extra):
    """bias=False (the GRU's kernel then adds a zero b_hh), relu, proj_size: the three impls
    on one packed batch, outputs, h_n and every gradient."""
    res = []
    for impl in ("sequence", "step", "composed"):
        tg.manual_seed(0)
        layer = KINDS[kind](I, H, num_layers=2, bias=False, bidirectional=True, impl=impl, dtype=tg.float64,
                            device=device, **extra)
        x = f64(np.random.default_rng(0).standard_normal((4, 3, I)), device, True)
        out, fin = layer(pack_padded_sequence(x, [4, 1, 3], enforce_sorted=False))
        h_n = states_of(fin)[0]
        (out.data.tanh().sum() + (h_n * h_n).sum()).backward()
        res.append([out.data.numpy(), h_n.numpy(), x.grad.numpy()] + [p.grad.numpy() for p in layer.parameters()])
    for other in res[1:]:
        for a, b in zip(res[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- an embedding into a packed layer
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("batch_first", [False, True])
def test_a_packed_embedding_folds_into_the_input_projection(kind, batch_first):
    # pack_padded_sequence(emb(ids)) packs the ids, so the layer sees an embedding lookup and
    # gathers its input projection from (E W_ih^T)^T: the same outputs and gradients as the
    # packed rows multiplied out (`* 1.0` hides the lookup from both)
    rng = np.random.default_rng(3)
    T, B, V, E, H = 6, 4, 5, 3, 4
    ids = rng.integers(0, V, (B, T) if batch_first else (T, B))
    lengths = [6, 2, 0, 4]
    results = []
    for hide in (False, True):
        tg.manual_seed(0)
        emb = nn.Embedding(V, E, dtype=tg.float64)
        layer = getattr(nn, kind)(E, H, num_layers=2, bidirectional=True, batch_first=batch_first, dtype=tg.float64)
        x = emb(tg.tensor(ids))
        packed = pack_padded_sequence(x * 1.0 if hide else x, lengths, batch_first=batch_first, enforce_sorted=False)
        if not hide:  # the packed rows are themselves a lookup of the packed ids
            node = packed.data._ctx
            assert node.fn.__name__ == "Embedding" and node.inputs[0].shape == (sum(lengths),)
        out, state = layer(packed)
        final = state[0] if kind == "LSTM" else state
        (out.data.sum() + (final * final).sum()).backward()
        results.append([out.data.numpy(), final.numpy(), emb.weight.grad.numpy()]
                       + [p.grad.numpy() for p in layer.parameters()])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
