"""nn.Linear, nn.Embedding, nn.Dropout and the activation modules: shapes, forward
against NumPy, gradient checks in float64, PyTorch-layout state dicts, dtype=/device=,
and the errors a user gets for bad input."""
import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn

F64 = tg.float64


# ----------------------------------------------------------------------------- Linear
def test_linear_shapes_dtype_device_and_repr(device):
    lin = nn.Linear(4, 3, dtype=F64, device=device)
    assert lin.weight.shape == (3, 4) and lin.bias.shape == (3,)
    assert lin.weight.dtype is F64 and lin.weight.device is tg.device(device)
    assert [n for n, _ in lin.named_parameters()] == ["weight", "bias"]
    x = tg.randn(2, 5, 4, dtype=F64, device=device)
    y = lin(x)
    assert y.shape == (2, 5, 3) and y.dtype is F64 and y.device is tg.device(device)
    assert repr(lin) == "Linear(in_features=4, out_features=3, bias=True)"
    nob = nn.Linear(4, 3, bias=False, device=device)
    assert nob.bias is None and [n for n, _ in nob.named_parameters()] == ["weight"]
    assert nob.weight.dtype is tg.float32
    assert repr(nob) == "Linear(in_features=4, out_features=3, bias=False)"


def test_linear_forward_equals_numpy(device):
    lin = nn.Linear(6, 5, dtype=F64, device=device)
    x = np.random.default_rng(1).standard_normal((7, 6))
    y = lin(tg.tensor(x, device=device)).numpy()
    W, b = lin.weight.numpy(), lin.bias.numpy()
    np.testing.assert_allclose(y, x @ W.T + b, rtol=1e-13, atol=1e-13)
    v = lin(tg.tensor(x[0], device=device)).numpy()  # a single vector, as in PyTorch
    np.testing.assert_allclose(v, x[0] @ W.T + b, rtol=1e-13, atol=1e-13)


def test_linear_default_init_is_pytorchs():
    lin = nn.Linear(64, 400)
    bound = 1 / math.sqrt(64)
    w, b = lin.weight.numpy(), lin.bias.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert np.abs(b).max() <= bound and np.abs(b).max() > 0.95 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)


def test_linear_reproducible_and_same_on_cpu_and_strict():
    tg.manual_seed(5)
    a = nn.Linear(3, 4)
    tg.manual_seed(5)
    s = nn.Linear(3, 4, device="strict")
    np.testing.assert_array_equal(a.weight.numpy(), s.weight.numpy())
    np.testing.assert_array_equal(a.bias.numpy(), s.bias.numpy())


def test_linear_gradcheck(device):
    lin = nn.Linear(3, 2, dtype=F64, device=device)
    x = tg.randn(4, 3, dtype=F64, device=device, requires_grad=True)
    assert tg.gradcheck(lambda x, w, b: lin(x), (x, lin.weight, lin.bias))
    nob = nn.Linear(3, 2, bias=False, dtype=F64, device=device)
    x3 = tg.randn(2, 2, 3, dtype=F64, device=device, requires_grad=True)
    assert tg.gradcheck(lambda x, w: nob(x), (x3, nob.weight))


def test_linear_loads_pytorch_layout_state_dict(device):
    rng = np.random.default_rng(2)
    W, b = rng.standard_normal((3, 4)), rng.standard_normal(3)
    lin = nn.Linear(4, 3, dtype=F64, device=device)
    lin.load_state_dict({"weight": W, "bias": b})
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(lin(tg.tensor(x, device=device)).numpy(), x @ W.T + b, rtol=1e-13)
    with pytest.raises(nn.StateDictError, match=r"weight expects \(3, 4\) but got \(4, 3\)"):
        lin.load_state_dict({"weight": W.T, "bias": b})


def test_linear_errors():
    lin = nn.Linear(4, 3)
    with pytest.raises(tg.ShapeError, match=r"Linear\(4, 3\): input of shape \(2, 5\) does not end in "
                                            r"in_features=4 \(weight has shape \(3, 4\)\)"):
        lin(tg.randn(2, 5))
    with pytest.raises(tg.ShapeError, match=r"Linear\(4, 3\): input of shape \(\)"):
        lin(tg.tensor(1.0))
    with pytest.raises(tg.DTypeError, match="Linear: input is float64 but the weight is float32"):
        lin(tg.randn(2, 4, dtype=F64))
    with pytest.raises(RuntimeError, match="Linear: input is on strict but the weights are on cpu"):
        lin(tg.randn(2, 4, device="strict"))
    with pytest.raises(TypeError, match="Linear: expected a Tensor input, got ndarray"):
        lin(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="Linear: in_features must be a non-negative int, got 2.5"):
        nn.Linear(2.5, 3)
    with pytest.raises(tg.DTypeError, match="parameters must be floating point, got dtype int64"):
        nn.Linear(2, 3, dtype=tg.int64)


# ----------------------------------------------------------------------------- Embedding
def test_embedding_shapes_init_and_repr(device):
    emb = nn.Embedding(200, 300, dtype=F64, device=device)
    assert emb.weight.shape == (200, 300) and emb.weight.device is tg.device(device)
    w = emb.weight.numpy()
    assert abs(w.mean()) < 0.01 and w.std() == pytest.approx(1.0, rel=0.01)
    idx = tg.tensor(np.array([[0, 5, 5], [199, 1, 2]]), device=device)
    out = emb(idx)
    assert out.shape == (2, 3, 300) and out.dtype is F64
    np.testing.assert_array_equal(out.numpy(), w[np.array([[0, 5, 5], [199, 1, 2]])])
    assert repr(emb) == "Embedding(200, 300)"
    assert repr(nn.Embedding(5, 2, padding_idx=-1)) == "Embedding(5, 2, padding_idx=4)"


def test_embedding_padding_row_zero_and_gets_no_grad(device):
    emb = nn.Embedding(6, 3, padding_idx=2, dtype=F64, device=device)
    np.testing.assert_array_equal(emb.weight.numpy()[2], 0.0)
    idx = np.array([2, 1, 2, 1, 4])
    (emb(idx) * tg.randn(5, 3, dtype=F64, device=device)).sum().backward()
    g = emb.weight.grad.numpy()
    np.testing.assert_array_equal(g[2], 0.0)
    assert np.all(g[1] != 0) and np.all(g[4] != 0)
    np.testing.assert_array_equal(g[[0, 3, 5]], 0.0)


def test_embedding_gradcheck_with_repeated_indices(device):
    # (the padding row's gradient is zero by definition, not by calculus: tested above)
    emb = nn.Embedding(5, 3, dtype=F64, device=device)
    idx = tg.tensor(np.array([[1, 0, 3], [3, 3, 4]]), device=device)
    assert tg.gradcheck(lambda w: emb(idx), (emb.weight,))


def test_embedding_loads_pytorch_layout_state_dict_and_from_pretrained():
    W = np.arange(12, dtype=np.float64).reshape(4, 3)
    emb = nn.Embedding(4, 3, dtype=F64)
    emb.load_state_dict({"weight": W})
    np.testing.assert_array_equal(emb(np.array([3, 0])).numpy(), W[[3, 0]])
    W[3] = -1  # the module holds its own copy
    assert emb.weight.numpy()[3, 0] == 9
    pre = nn.Embedding.from_pretrained(tg.tensor(W), freeze=True)
    assert not pre.weight.requires_grad and pre.weight.shape == (4, 3)
    np.testing.assert_array_equal(pre(np.array([3])).numpy(), W[[3]])


def test_embedding_errors():
    emb = nn.Embedding(4, 2)
    with pytest.raises(tg.IndexOutOfRange, match="embedding: index 4 is out of range for 4 embeddings"):
        emb(np.array([0, 4]))
    with pytest.raises(TypeError, match="embedding: indices must be integers, got dtype float64"):
        emb(np.array([0.0, 1.0]))
    with pytest.raises(RuntimeError, match="Embedding: indices are on strict but the weight is on cpu"):
        emb(tg.tensor(np.array([0]), device="strict"))
    with pytest.raises(ValueError, match="Embedding: padding_idx 4 is out of range for 4 embeddings"):
        nn.Embedding(4, 2, padding_idx=4)


# ----------------------------------------------------------------------------- Dropout and activations
def test_dropout_train_and_eval(device):
    d = nn.Dropout(0.25)
    x = tg.ones(400, 500, device=device)
    y = d(x).numpy()
    kept = y != 0
    assert kept.mean() == pytest.approx(0.75, abs=0.01)
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    d.eval()
    assert d(x) is x
    assert repr(d) == "Dropout(p=0.25)"
    seq = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    seq.eval()
    assert not seq[1].training


def test_dropout_gradcheck_with_fixed_mask(device):
    d = nn.Dropout(0.5)
    x = tg.randn(4, 5, dtype=F64, device=device, requires_grad=True)

    def f(x):
        tg.manual_seed(3)  # the same mask on every evaluation
        return d(x)
    assert tg.gradcheck(f, (x,))


def test_dropout_errors():
    for bad in (-0.1, 1.5, "0.5", True):
        with pytest.raises(ValueError, match="Dropout: probability p must be a number in"):
            nn.Dropout(bad)


def test_activation_modules_and_gradcheck(device):
    x = tg.randn(3, 4, dtype=F64, device=device, requires_grad=True)
    xn = x.numpy()
    np.testing.assert_allclose(nn.Tanh()(x).numpy(), np.tanh(xn), rtol=1e-13)
    np.testing.assert_allclose(nn.ReLU()(x).numpy(), np.maximum(xn, 0))
    np.testing.assert_allclose(nn.Sigmoid()(x).numpy(), 1 / (1 + np.exp(-xn)), rtol=1e-13)
    assert nn.Identity()(x) is x
    assert repr(nn.Tanh()) == "Tanh()"
    for m in (nn.Tanh(), nn.Sigmoid()):
        assert tg.gradcheck(m, (x,))
    xr = tg.tensor(np.array([[-1.5, 0.7], [0.3, -0.2]]), dtype=F64, device=device, requires_grad=True)
    assert tg.gradcheck(nn.ReLU(), (xr,))


def test_every_layer_takes_dtype_and_device(device):
    dev = tg.device(device)
    mods = [nn.Linear(2, 3, dtype=F64, device=device), nn.Embedding(4, 2, dtype=F64, device=device),
            nn.Dropout(0.1, dtype=F64, device=device), nn.Tanh(dtype=F64, device=device),
            nn.ReLU(dtype=F64, device=device), nn.Sigmoid(dtype=F64, device=device)]
    for m in mods:
        for p in m.parameters():
            assert p.dtype is F64 and p.device is dev


def test_mlp_trains_on_strict_device():
    """A Sequential of these layers, end to end on the strict device (no NumPy leaks)."""
    model = nn.Sequential(nn.Linear(3, 8, device="strict"), nn.Tanh(), nn.Dropout(0.1),
                          nn.Linear(8, 2, device="strict"))
    x = tg.randn(16, 3, device="strict")
    y = tg.tensor(np.arange(16) % 2, device="strict")
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.5 * p.grad.data
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_sequential_and_module_list_index_count_iterate_and_register():
    a, b = nn.Linear(3, 4), nn.Linear(4, 2)
    seq = nn.Sequential(a, nn.Tanh(), b)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is b and list(seq)[1].__class__ is nn.Tanh
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    x = tg.randn(5, 3)
    np.testing.assert_allclose(seq(x).numpy(), b(a(x).tanh()).numpy(), rtol=1e-6)

    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)]).append(nn.Linear(2, 1))
    assert len(layers) == 4 and layers[3].weight.shape == (1, 2)
    assert len(list(layers.parameters())) == 8
    assert [n for n, _ in layers.named_parameters()][-2:] == ["3.weight", "3.bias"]
