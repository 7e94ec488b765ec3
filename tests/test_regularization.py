"""The AWD-LSTM regularisers: DropConnect on the recurrent weights (weight_dropout), locked
dropout, embedding dropout, weight tying; in the layers, in CharLM and on the command line."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import kernels, nn
from tinygrad_rnn.errors import ShapeError
from tinygrad_rnn.lm import CharLM, TrainConfig, load_model
from tinygrad_rnn.lm import checkpoint as C
from tinygrad_rnn.lm.train import TrainError
from tinygrad_rnn.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from tinygrad_rnn.ops import rnn as rnnops
from tinygrad_rnn.testing import strategies as tgst

F64 = tg.float64
CPU = tg.get_device("cpu")
LAYERS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rng = np.random.default_rng(0)


def randn(*shape, requires_grad=True):
    return tg.Tensor(rng.standard_normal(shape), dtype=F64, requires_grad=requires_grad)


def seeded(seed, fn):
    """fn with the device's generator reset before each call: the same masks every call, as a
    numerical gradient check needs."""
    def run(*args):
        tg.manual_seed(seed)
        return fn(*args)
    return run


def out_of(result):
    return result[0]


# ----------------------------------------------------------------------------- locked dropout
@settings(max_examples=15, deadline=None)
@given(x=tgst.tensors(shape=st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4))),
       p=st.floats(0.1, 0.8), seed=st.integers(0, 2 ** 16), batch_first=st.booleans())
def test_locked_dropout_gradcheck(x, p, seed, batch_first):
    assert tg.gradcheck(seeded(seed, lambda t: nn.locked_dropout(t, p, batch_first=batch_first)), [x])


@pytest.mark.parametrize("batch_first", [False, True])
def test_locked_dropout_shares_one_mask_across_time(batch_first):
    T, B, F_ = 9, 5, 40
    x = tg.ones(B, T, F_) if batch_first else tg.ones(T, B, F_)
    tg.manual_seed(1)
    y = nn.locked_dropout(x, 0.5, batch_first=batch_first).numpy()
    if batch_first:
        y = y.transpose(1, 0, 2)
    assert np.array_equal(y, np.broadcast_to(y[:1], y.shape))  # every step the same mask
    assert set(np.unique(y)) == {0.0, 2.0}  # dropped, or kept and scaled by 1/(1-p)
    assert not np.array_equal(y[0, 0], y[0, 1])  # each batch row its own mask (40 features: p < 1e-12)


def test_locked_dropout_unbatched_and_eval_and_extremes():
    x = tg.ones(6, 30)
    tg.manual_seed(0)
    y = nn.locked_dropout(x, 0.5).numpy()
    assert np.array_equal(y, np.broadcast_to(y[:1], y.shape))
    assert nn.locked_dropout(x, 0.5, training=False) is x
    assert nn.locked_dropout(x, 0.0) is x
    assert not nn.locked_dropout(x, 1.0).numpy().any()
    m = nn.LockedDropout(0.5)
    m.eval()
    assert m(x) is x
    assert repr(nn.LockedDropout(0.25, batch_first=True)) == "LockedDropout(p=0.25, batch_first=True)"


def test_locked_dropout_packed_one_mask_per_sequence():
    T, B, F_ = 5, 3, 30
    lengths = [5, 3, 2]
    packed = pack_padded_sequence(tg.ones(T, B, F_), lengths)
    tg.manual_seed(4)
    out, _ = pad_packed_sequence(nn.locked_dropout(packed, 0.5))
    y = out.numpy()
    for b, n in enumerate(lengths):
        assert np.array_equal(y[:n, b], np.broadcast_to(y[:1, b], (n, F_)))
        assert not y[n:, b].any()
    assert not np.array_equal(y[0, 0], y[0, 1])


def test_locked_dropout_bad_input_errors():
    with pytest.raises(ValueError, match=r"locked_dropout: dropout probability p must be a number in \[0, 1\]"):
        nn.locked_dropout(tg.ones(2, 2, 2), 1.5)
    with pytest.raises(ValueError, match="LockedDropout: dropout probability"):
        nn.LockedDropout(-0.1)
    with pytest.raises(ShapeError, match=r"locked_dropout: expected input of shape \(seq_len, batch, features\).*"
                                         r"got 1-D shape \(4,\)"):
        nn.locked_dropout(tg.ones(4), 0.5)
    with pytest.raises(TypeError, match="locked_dropout: expected a Tensor or a PackedSequence, got ndarray"):
        nn.locked_dropout(np.ones((2, 2, 2)), 0.5)


# ----------------------------------------------------------------------------- embedding dropout
def test_embedding_dropout_gradcheck():
    emb = nn.Embedding(7, 3, dtype=F64)
    ids = np.array([[0, 1, 2], [1, 6, 0], [3, 3, 5]])
    for seed in range(3):
        assert tg.gradcheck(seeded(seed, lambda w: nn.embedding_dropout(emb, ids, 0.4)), [emb.weight])


def test_embedding_dropout_drops_whole_rows():
    emb = nn.Embedding(20, 8, dtype=F64)
    ids = np.tile(np.arange(20), (4, 1))  # every word at 4 places
    tg.manual_seed(2)
    y = nn.embedding_dropout(emb, ids, 0.5).numpy()
    w = emb.weight.numpy()
    dropped = []
    for v in range(20):
        rows = y[:, v]  # the 4 places of word v
        if not rows.any():
            dropped.append(v)
        else:
            np.testing.assert_allclose(rows, np.broadcast_to(w[v] * 2.0, rows.shape), rtol=1e-15)
    assert 0 < len(dropped) < 20  # P(none or all of 20 dropped) = 2^-19
    assert np.array_equal(nn.embedding_dropout(emb, ids, 0.5, training=False).numpy(), w[ids])


def test_embedding_dropout_errors():
    emb = nn.Embedding(5, 2)
    with pytest.raises(ValueError, match=r"embedding_dropout: dropout probability p must be a number in \[0, 1\]"):
        nn.embedding_dropout(emb, [1], 2.0)
    with pytest.raises(TypeError, match="embedding_dropout: embed must be an nn.Embedding.*got Linear"):
        nn.embedding_dropout(nn.Linear(2, 2), [1], 0.1)


# ----------------------------------------------------------------------------- weight drop (DropConnect)
@pytest.mark.parametrize("impl", nn.rnn.IMPLS)
@pytest.mark.parametrize("mode", list(LAYERS))
def test_weight_drop_gradcheck(mode, impl):
    m = LAYERS[mode](3, 3, num_layers=2, weight_dropout=0.4, impl=impl, dtype=F64)
    x = randn(4, 2, 3)
    fn = seeded(5, lambda x, *p: out_of(m(x)))
    assert tg.gradcheck(fn, (x,) + tuple(m.parameters()), fast_mode=impl != "sequence")


def _masked_copy(m, seed, p):
    """A plain layer whose weight_hh_l{k} are m's times the masks m draws after manual_seed(seed),
    in the order it draws them (layer by layer, direction by direction)."""
    plain = type(m)(m.input_size, m.hidden_size, num_layers=m.num_layers, bidirectional=m.bidirectional,
                    dtype=F64)
    plain.load_state_dict(m.state_dict())
    tg.manual_seed(seed)
    for names in m._flat_names:
        w = getattr(plain, names[1])
        w.data = w.data * CPU.dropout_mask(w.shape, p, F64)
    return plain


@pytest.mark.parametrize("mode", list(LAYERS))
def test_weight_drop_is_one_mask_per_forward(mode):
    p = 0.5
    m = LAYERS[mode](3, 4, num_layers=1, bidirectional=True, weight_dropout=p, dtype=F64)
    x = randn(6, 2, 3)
    # the same numbers as a plain layer given the masked weights for the whole sequence:
    # one mask for every time step of the forward
    want = out_of(_masked_copy(m, 11, p)(x)).numpy()
    tg.manual_seed(11)
    got = out_of(m(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    again = out_of(m(x)).numpy()  # the next forward draws a new mask
    assert not np.allclose(again, got)


@pytest.mark.parametrize("mode", list(LAYERS))
def test_weight_drop_is_off_in_eval_and_keeps_state_dict_keys(mode):
    m = LAYERS[mode](3, 4, num_layers=2, weight_dropout=0.5, dtype=F64)
    plain = LAYERS[mode](3, 4, num_layers=2, dtype=F64)
    assert list(m.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(m.state_dict())
    x = randn(5, 2, 3)
    m.eval()
    np.testing.assert_array_equal(out_of(m(x)).numpy(), out_of(plain(x)).numpy())
    assert "weight_dropout=0.5" in repr(m)


def test_weight_drop_gradient_reaches_the_raw_weight():
    p = 0.5
    m = nn.LSTM(3, 4, weight_dropout=p, dtype=F64)
    x = randn(5, 2, 3)
    plain = _masked_copy(m, 3, p)
    tg.manual_seed(3)
    mask = CPU.dropout_mask(m.weight_hh_l0.shape, p, F64)
    tg.manual_seed(3)
    out_of(m(x)).sum().backward()
    out_of(plain(x)).sum().backward()
    # d/dW (W * mask) = mask: the raw weight's gradient is the masked weight's, masked
    np.testing.assert_allclose(m.weight_hh_l0.grad.numpy(), plain.weight_hh_l0.grad.numpy() * mask, rtol=1e-12)
    assert not m.weight_hh_l0.grad.numpy()[mask == 0].any()


CXX = kernels.cpu.find_compiler()


@pytest.mark.skipif(CXX is None, reason="no host C++ compiler to build the kernels with")
@pytest.mark.parametrize("mode", list(LAYERS))
def test_weight_drop_and_locked_dropout_run_in_the_host_loop(mode, monkeypatch):
    dev = tg.get_device("cpu")
    assert dev.use_kernels and rnnops.device_kernels(dev) is not None, "the CPU kernels did not build"
    calls = []
    real = rnnops._host_loop

    def spy(dev, name, dtype):
        loop = real(dev, name, dtype)
        calls.append(loop is not None)
        return loop
    monkeypatch.setattr(rnnops, "_host_loop", spy)
    m = LAYERS[mode](3, 4, num_layers=2, dropout=0.3, dropout_mode="locked", weight_dropout=0.4, dtype=F64)
    x = randn(6, 2, 3)
    tg.manual_seed(0)
    out_of(m(x)).sum().backward()
    assert calls and all(calls)  # both layers, forward and backward, in C++
    monkeypatch.setattr(rnnops, "_host_loop", lambda dev, name, dtype: None)
    g_c = m.weight_hh_l1.grad.numpy().copy()
    m.zero_grad()
    tg.manual_seed(0)
    out_of(m(x)).sum().backward()  # the Python loop, the same masks
    np.testing.assert_allclose(g_c, m.weight_hh_l1.grad.numpy(), rtol=1e-12, atol=1e-13)


# ----------------------------------------------------------------------------- locked dropout between layers
@pytest.mark.parametrize("mode", list(LAYERS))
def test_locked_between_layers_gradcheck_and_shared_mask(mode):
    m = LAYERS[mode](3, 3, num_layers=2, dropout=0.5, dropout_mode="locked", dtype=F64)
    x = randn(4, 2, 3)
    assert tg.gradcheck(seeded(7, lambda x, *p: out_of(m(x))), (x,) + tuple(m.parameters()), fast_mode=True)
    # the second layer sees layer 1's output times one (1, B, H) mask: as a 1-layer model would
    first = LAYERS[mode](3, 3, dtype=F64)
    second = LAYERS[mode](3, 3, dtype=F64)
    sd = m.state_dict()
    first.load_state_dict({k: v for k, v in sd.items() if k.endswith("_l0")}, strict=False)
    second.load_state_dict({k.replace("_l1", "_l0"): v for k, v in sd.items() if k.endswith("_l1")}, strict=False)
    tg.manual_seed(7)
    mask = CPU.dropout_mask((1, 2, 3), 0.5, F64)
    want = out_of(second(out_of(first(x)) * tg.Tensor(mask))).numpy()
    tg.manual_seed(7)
    np.testing.assert_allclose(out_of(m(x)).numpy(), want, rtol=1e-12, atol=1e-12)
    m.eval()
    np.testing.assert_allclose(out_of(m(x)).numpy(), out_of(second(out_of(first(x)))).numpy(), rtol=1e-12)


def test_locked_between_layers_packed_matches_padded():
    m = nn.LSTM(3, 4, num_layers=2, dropout=0.5, dropout_mode="locked", weight_dropout=0.3, dtype=F64)
    x = randn(5, 3, 3)
    lengths = [5, 4, 2]
    tg.manual_seed(9)
    padded = out_of(m(x)).numpy()
    tg.manual_seed(9)
    packed, _ = pad_packed_sequence(out_of(m(pack_padded_sequence(x, lengths))))
    for b, n in enumerate(lengths):  # the same masks, drawn in the same order
        np.testing.assert_allclose(packed.numpy()[:n, b], padded[:n, b], rtol=1e-12, atol=1e-12)


def test_layer_regulariser_errors():
    with pytest.raises(ValueError, match=r"LSTM: weight_dropout must be a number in \[0, 1\), got 1.0"):
        nn.LSTM(2, 2, weight_dropout=1.0)
    with pytest.raises(ValueError, match=r"GRU: weight_dropout must be a number in \[0, 1\), got True"):
        nn.GRU(2, 2, weight_dropout=True)
    with pytest.raises(ValueError, match="RNN: dropout_mode must be one of 'elementwise', 'locked', got 'lock'"):
        nn.RNN(2, 2, dropout_mode="lock")


# ----------------------------------------------------------------------------- CharLM
AWD = dict(dropout_input=0.2, dropout_hidden=0.3, dropout_output=0.4, locked_dropout=True, weight_drop=0.3,
           embed_dropout=0.2, tie_weights=True)


def test_charlm_defaults_are_todays_model():
    m = CharLM(11, hidden=8, layers=2, embed_dim=4, dropout=0.1)
    assert list(m.state_dict()) == ["embed.weight"] + [f"rnn.{k}" for k in nn.LSTM(4, 8, 2).state_dict()] + [
        "head.weight", "head.bias"]
    assert m.rnn.weight_dropout == 0.0 and m.rnn.dropout_mode == "elementwise" and m.rnn.dropout == 0.1
    assert m.drop_in is None and type(m.drop) is nn.Dropout and m.drop.p == 0.1
    cfg = m.config()
    assert cfg["tie_weights"] is False and cfg["dropout_hidden"] is None and cfg["proj_size"] == 0


def test_charlm_regularisers_are_off_in_eval():
    m = CharLM(11, hidden=8, layers=2, embed_dim=8, dtype=F64, **AWD)
    plain = CharLM(11, hidden=8, layers=2, embed_dim=8, dtype=F64)
    plain.load_state_dict(m.state_dict())
    ids = rng.integers(0, 11, (6, 3))
    tg.manual_seed(0)
    a = m(ids)[0].numpy()
    b = m(ids)[0].numpy()
    assert not np.allclose(a, b)  # in training: new masks each forward
    m.eval()
    plain.eval()
    np.testing.assert_allclose(m(ids)[0].numpy(), plain(ids)[0].numpy(), rtol=1e-12)


def test_charlm_gradcheck_through_every_regulariser():
    m = CharLM(6, hidden=4, layers=2, embed_dim=4, dtype=F64, **AWD)
    ids = np.array([[0, 1], [2, 5], [4, 4]])
    params = tuple(m.parameters())
    assert tg.gradcheck(seeded(13, lambda *p: m(ids)[0]), params, fast_mode=True)


def test_tied_weights_share_storage_and_gradient():
    m = CharLM(9, hidden=6, layers=1, embed_dim=6, dtype=F64, tie_weights=True)
    assert m.head.weight is m.embed.weight
    names = [n for n, _ in m.named_parameters()]
    assert "embed.weight" in names and "head.weight" not in names and len(names) == len(set(names))
    untied = CharLM(9, hidden=6, layers=1, embed_dim=6, dtype=F64)
    untied.load_state_dict(m.state_dict())  # both keys there, as in PyTorch's state dict of a tied model
    ids = rng.integers(0, 9, (5, 2))
    m.loss(ids, ids)[0].backward()
    untied.loss(ids, ids)[0].backward()
    np.testing.assert_allclose(m.embed.weight.grad.numpy(),
                               untied.embed.weight.grad.numpy() + untied.head.weight.grad.numpy(), rtol=1e-12)
    opt = tg.optim.SGD(m.parameters(), lr=0.1)
    assert len(opt.param_groups[0]["params"]) == len(list(untied.parameters())) - 1
    before = m.embed.weight.numpy()
    opt.step()
    assert not np.allclose(before, m.head.weight.numpy())


def test_tied_state_dict_round_trip_and_mismatch():
    m = CharLM(9, hidden=4, layers=2, embed_dim=4, proj_size=0, tie_weights=True)
    sd = m.state_dict()
    assert np.array_equal(sd["head.weight"], sd["embed.weight"])
    other = CharLM(9, hidden=4, layers=2, embed_dim=4, tie_weights=True)
    other.load_state_dict(sd)
    assert other.head.weight is other.embed.weight
    np.testing.assert_array_equal(other.embed.weight.numpy(), sd["embed.weight"])
    bad = dict(sd, **{"head.weight": sd["head.weight"] + 1})
    with pytest.raises(nn.StateDictError, match="ties its head to its embedding.*head.weight and embed.weight differ"):
        other.load_state_dict(bad)


def test_tie_with_proj_size():
    m = CharLM(9, hidden=8, layers=2, embed_dim=3, proj_size=3, tie_weights=True)
    assert m.rnn.proj_size == 3 and m.head.weight.shape == (9, 3) and m.head.weight is m.embed.weight
    logits, _ = m(rng.integers(0, 9, (4, 2)))
    assert logits.shape == (4, 2, 9)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tie_weights=True), "tie_weights needs a learned embedding"),
    (dict(embed_dim=5, tie_weights=True), r"embed_dim equal to the last layer's output size \(hidden=8\), got "
                                          r"embed_dim=5"),
    (dict(embed_dim=8, proj_size=4, tie_weights=True), r"\(proj_size=4\), got embed_dim=8"),
    (dict(cell="gru", proj_size=4), "proj_size needs cell 'lstm'"),
    (dict(cell="mingru", weight_drop=0.2), r"weight_drop needs a cell with hidden-to-hidden weights"),
    (dict(cell="mingru", layers=2, dropout=0.2, locked_dropout=True), "locked dropout between layers needs"),
    (dict(embed_dropout=0.1), "embed_dropout needs a learned embedding"),
    (dict(weight_drop=1.0), r"weight_drop must be a number in \[0, 1\), got 1.0"),
    (dict(dropout_hidden=-0.1), r"dropout_hidden must be a number in \[0, 1\)"),
])
def test_charlm_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match) as e:
        CharLM(9, **{"hidden": 8, **kwargs})
    assert str(e.value).startswith("CharLM: ")


def test_train_config_validates_the_regularisers():
    TrainConfig(embed_dim=128, tie_weights=True, weight_drop=0.5, locked_dropout=True).validate()
    with pytest.raises(TrainError, match=r"weight_drop must be in \[0, 1\).*tie_weights needs embed_dim "
                                                     r"\(64\) equal to the last layer's output size \(hidden 128\)"):
        TrainConfig(embed_dim=64, tie_weights=True, weight_drop=1.5).validate()
    kw = TrainConfig(embed_dim=8, hidden=8, embed_dropout=0.1, tie_weights=True).model_kwargs()
    assert kw["tie_weights"] is True and kw["embed_dropout"] == 0.1
    assert CharLM(10, **kw).head.weight is not None


# ----------------------------------------------------------------------------- command line
def run_cli(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "tinygrad_rnn", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


TINY = ["--hidden", "16", "--layers", "2", "--embed-dim", "16", "--seq-len", "8", "--batch", "4",
        "--progress", "none", "--eval-every", "2"]


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("the cat sat on the mat. the dog sat on the log. " * 30, encoding="utf-8")
    return str(p)


def test_cli_trains_and_samples_with_every_regulariser(corpus, tmp_path):
    run = str(tmp_path / "run")
    r = run_cli("train", "--data", corpus, *TINY, "--steps", "3", "--out", run, "--dropout-input", "0.1",
                "--dropout-hidden", "0.2", "--dropout-output", "0.3", "--locked-dropout", "--weight-drop", "0.4",
                "--embed-dropout", "0.1", "--tie-weights")
    assert r.returncode == 0, r.stderr
    model, _, c = load_model(run)
    assert model.tie_weights and model.head.weight is model.embed.weight and model.locked_dropout
    assert model.rnn.weight_dropout == 0.4 and model.rnn.dropout_mode == "locked" and model.rnn.dropout == 0.2
    assert c.meta["config"]["embed_dropout"] == 0.1
    r = run_cli("sample", run, "--length", "10", "--seed", "1")
    assert r.returncode == 0 and len(r.stdout.strip()) > 0, r.stderr
    r = run_cli("train", "--data", corpus, *TINY, "--steps", "4", "--out", run, "--resume")
    assert r.returncode == 0, r.stderr


def test_checkpoint_from_before_the_regularisers_loads(corpus, tmp_path):
    run = str(tmp_path / "old")
    r = run_cli("train", "--data", corpus, *TINY, "--steps", "2", "--out", run)
    assert r.returncode == 0, r.stderr
    c = C.load(run)
    meta = dict(c.meta)
    meta["config"] = {k: v for k, v in meta["config"].items() if k not in TrainConfig.REGULARISERS}
    C.save(c.path, meta=meta, model_state=c.model_state, optim_state=c.optim_state, hidden=c.hidden)
    model, _, _ = load_model(run)
    assert not model.tie_weights and model.rnn.weight_dropout == 0.0
    r = run_cli("sample", run, "--length", "5")
    assert r.returncode == 0, r.stderr


def test_cli_bad_regulariser_arguments(corpus, tmp_path):
    r = run_cli("train", "--data", corpus, "--weight-drop", "1.5", "--out", str(tmp_path / "a"))
    assert r.returncode == 2 and "--weight-drop" in r.stderr and "a number in [0, 1)" in r.stderr
    r = run_cli("train", "--data", corpus, "--hidden", "16", "--tie-weights", "--steps", "1",
                "--out", str(tmp_path / "b"))
    assert r.returncode == 1 and "tie_weights needs a learned embedding (embed_dim)" in r.stderr
    assert "Traceback" not in r.stderr


# ----------------------------------------------------------------------------- on every device
def test_regularisers_on_device(device):
    m = nn.GRU(3, 3, num_layers=2, dropout=0.5, dropout_mode="locked", weight_dropout=0.3, dtype=F64, device=device)
    x = tg.Tensor(rng.standard_normal((4, 2, 3)), dtype=F64, device=device, requires_grad=True)
    assert tg.gradcheck(seeded(1, lambda x, *p: out_of(m(x))), (x,) + tuple(m.parameters()), fast_mode=True)
    packed = pack_padded_sequence(x, [4, 2])
    assert tg.gradcheck(seeded(2, lambda x, *p: out_of(m(pack_padded_sequence(x, [4, 2]))).data),
                        (x,) + tuple(m.parameters()), fast_mode=True)
    y = nn.locked_dropout(packed, 0.5)
    assert y.data.device is x.device and y.data.shape == packed.data.shape
    emb = nn.Embedding(5, 3, dtype=F64, device=device)
    ids = tg.Tensor(np.array([[0, 4], [2, 2]]), device=device)
    assert tg.gradcheck(seeded(3, lambda w: nn.embedding_dropout(emb, ids, 0.5)), [emb.weight])


# ----------------------------------------------------------------------------- layer-normalised LSTM
def _ln(a, g, b=0.0, eps=1e-5):
    mu = a.mean(-1, keepdims=True)
    return (a - mu) / np.sqrt(((a - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


def _ln_lstm_reference(m, x, h0, c0):
    """Ba et al. 2016's LN-LSTM in NumPy, from the equations, layer by layer."""
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    P = {k: v for k, v in m.state_dict().items()}
    hs, cs = [], []
    for k in range(m.num_layers):
        h, c, outs = h0[k], c0[k], []
        for x_t in x:
            a = (_ln(x_t @ P[f"weight_ih_l{k}"].T, P[f"ln_ih_weight_l{k}"])
                 + _ln(h @ P[f"weight_hh_l{k}"].T, P[f"ln_hh_weight_l{k}"]) + P[f"bias_l{k}"])
            i, f, g, o = np.split(a, 4, axis=1)
            c = sig(f) * c + sig(i) * np.tanh(g)
            h = sig(o) * np.tanh(_ln(c, P[f"ln_c_weight_l{k}"], P[f"ln_c_bias_l{k}"]))
            outs.append(h)
        x = np.stack(outs)
        hs.append(h)
        cs.append(c)
    return x, np.stack(hs), np.stack(cs)


def _randomise(m):
    """Gains and shifts moved off their ones and zeros, so a test sees where each one goes."""
    for name, p in m.named_parameters():
        gain = name.startswith("ln_") and "_weight_" in name
        p.data = p.device.from_host(rng.standard_normal(p.shape) * 0.5 + (1.0 if gain else 0.0), p.dtype)


def test_layer_norm_lstm_against_the_equations():
    m = nn.LayerNormLSTM(3, 5, num_layers=2, dtype=F64)
    _randomise(m)
    x, h0, c0 = randn(6, 2, 3), randn(2, 2, 5), randn(2, 2, 5)
    out, (h, c) = m(x, (h0, c0))
    want = _ln_lstm_reference(m, x.numpy(), h0.numpy(), c0.numpy())
    for got, ref in zip((out, h, c), want):
        np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    bf = nn.LayerNormLSTM(3, 5, num_layers=2, batch_first=True, dtype=F64)
    bf.load_state_dict(m.state_dict())
    np.testing.assert_allclose(out_of(bf(x.transpose(0, 1), (h0, c0))).numpy(), out.numpy().transpose(1, 0, 2),
                               rtol=1e-12)


def test_layer_norm_lstm_gradcheck_with_its_regularisers():
    m = nn.LayerNormLSTM(2, 3, num_layers=2, dropout=0.3, dropout_mode="locked", weight_dropout=0.3, dtype=F64)
    _randomise(m)
    x, h0, c0 = randn(4, 2, 2), randn(2, 2, 3), randn(2, 2, 3)
    fn = seeded(8, lambda x, h0, c0, *p: m(x, (h0, c0))[0])
    assert tg.gradcheck(fn, (x, h0, c0) + tuple(m.parameters()), fast_mode=True)
    m.eval()
    plain = nn.LayerNormLSTM(2, 3, num_layers=2, dtype=F64)
    plain.load_state_dict(m.state_dict())
    np.testing.assert_array_equal(out_of(m(x)).numpy(), out_of(plain(x)).numpy())


def test_layer_norm_lstm_errors():
    m = nn.LayerNormLSTM(3, 4)
    with pytest.raises(ShapeError, match=r"LayerNormLSTM: expected input of shape \(seq_len, batch, input_size\) "
                                         r"with input_size=3, got shape \(5, 2, 2\)"):
        m(tg.ones(5, 2, 2))
    with pytest.raises(ShapeError, match=r"LayerNormLSTM: c0 must have shape \(1, 2, 4\).*got \(1, 3, 4\)"):
        m(tg.ones(5, 2, 3), (tg.zeros(1, 2, 4), tg.zeros(1, 3, 4)))
    with pytest.raises(TypeError, match="LayerNormLSTM: takes a padded"):
        m(pack_padded_sequence(tg.ones(2, 1, 3), [2]))
    with pytest.raises(ValueError, match=r"LayerNormLSTM: weight_dropout must be a number in \[0, 1\)"):
        nn.LayerNormLSTM(3, 4, weight_dropout=-1)
    with pytest.raises(ValueError, match="LayerNormLSTM: num_layers must be a positive integer, got 0"):
        nn.LayerNormLSTM(3, 4, num_layers=0)


def test_charlm_with_layer_norm_lstm_and_awd_options():
    m = CharLM(7, cell="lnlstm", hidden=4, layers=2, embed_dim=4, dtype=F64, **AWD)
    assert isinstance(m.rnn, nn.LayerNormLSTM) and m.rnn.dropout_mode == "locked" and m.rnn.weight_dropout == 0.3
    ids = np.array([[0, 1], [2, 6]])
    assert tg.gradcheck(seeded(4, lambda *p: m(ids)[0]), tuple(m.parameters()), fast_mode=True)
    out = m.generate([1, 2], length=3, seed=0)
    assert len(out) == 3
