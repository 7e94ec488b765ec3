"""nn's everyday modules: LayerNorm, Flatten, the activation modules (GELU, SiLU, ELU,
LeakyReLU, Softmax, LogSoftmax) and the loss modules, with PyTorch's constructor
arguments, parameter names and defaults. Each module against its functional form and a
NumPy formula, gradients against central differences (float64), on every device."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn import nn
from tinygrad_rnn.testing import far_from
from tinygrad_rnn.testing import strategies as tgst

F64 = tg.float64
FEW = settings(max_examples=10)


def _off_zero(data, shape):
    """Values of magnitude 0.1 to 3, all different, of either sign (away from kinks at 0)."""
    size = data.draw(tgst.arrays(shape, 0.1, 3.0, unique=True))
    return np.where(data.draw(tgst.arrays(shape, -1, 1)) < 0, -size, size)


def T(a, device, requires_grad=True):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=F64, device=device, requires_grad=requires_grad)


# ============================================================================ LayerNorm
def test_layer_norm_parameters_init_and_repr(device):
    m = nn.LayerNorm((3, 4), dtype=F64, device=device)
    assert [(k, p.shape) for k, p in m.named_parameters()] == [("weight", (3, 4)), ("bias", (3, 4))]
    assert np.all(m.weight.numpy() == 1) and np.all(m.bias.numpy() == 0)
    assert m.weight.dtype is F64 and m.weight.device is tg.device(device)
    assert repr(m) == "LayerNorm((3, 4), eps=1e-05, elementwise_affine=True)"
    assert nn.LayerNorm(5).normalized_shape == (5,)
    assert list(nn.LayerNorm(5, elementwise_affine=False).parameters()) == []
    no_bias = nn.LayerNorm(5, bias=False)
    assert no_bias.bias is None and [k for k, _ in no_bias.named_parameters()] == ["weight"]


@FEW
@given(shape=tgst.shapes(min_dims=2, max_dims=3, min_side=2, max_side=3), data=st.data())
def test_layer_norm_module(device, shape, data):
    m = nn.LayerNorm(shape[-1], eps=1e-3, dtype=F64, device=device)
    m.load_state_dict({"weight": data.draw(tgst.arrays(shape[-1:])), "bias": data.draw(tgst.arrays(shape[-1:]))})
    x = data.draw(tgst.tensors(shape=shape, device=device))
    xn, w, b = x.numpy(), m.weight.numpy(), m.bias.numpy()
    mu, var = xn.mean(-1, keepdims=True), xn.var(-1, keepdims=True)
    y = m(x)
    np.testing.assert_allclose(y.numpy(), (xn - mu) / np.sqrt(var + 1e-3) * w + b, rtol=1e-9, atol=1e-12)
    assert tg.gradcheck(m, (x,)) and tg.gradgradcheck(m, (x,), fast_mode=True)
    g = data.draw(tgst.arrays(shape))
    m.zero_grad()  # the checks above ran backward through the parameters too
    y.backward(g)
    xhat = (xn - mu) / np.sqrt(var + 1e-3)
    np.testing.assert_allclose(m.weight.grad.numpy(), (g * xhat).reshape(-1, shape[-1]).sum(0), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_allclose(m.bias.grad.numpy(), g.reshape(-1, shape[-1]).sum(0), rtol=1e-9, atol=1e-12)


def test_layer_norm_errors(device):
    with pytest.raises(ValueError, match=r"LayerNorm: normalized_shape must be a positive int"):
        nn.LayerNorm(0)
    with pytest.raises(tg.ShapeError, match=r"layer_norm: input of shape \(2, 3\) does not end in "
                                            r"normalized_shape \(4,\)"):
        nn.LayerNorm(4, dtype=F64, device=device)(T(np.zeros((2, 3)), device))
    with pytest.raises(tg.DTypeError, match=r"layer_norm: weight is float32 but the input is float64"):
        nn.LayerNorm(3, device=device)(T(np.zeros((2, 3)), device))


# ============================================================================ Flatten
def test_flatten(device):
    x = T(np.arange(24.0).reshape(2, 3, 4), device)
    assert nn.Flatten()(x).shape == (2, 12)
    assert nn.Flatten(0, 1)(x).shape == (6, 4)
    assert nn.Flatten(start_dim=0)(x).shape == (24,)
    np.testing.assert_array_equal(nn.Flatten()(x).numpy(), x.numpy().reshape(2, 12))
    assert repr(nn.Flatten()) == "Flatten(start_dim=1, end_dim=-1)"
    assert tg.gradcheck(nn.Flatten(), (x,))


# ============================================================================ activations
MODULES = {
    "GELU": (nn.GELU(), F.gelu),
    "GELU_tanh": (nn.GELU("tanh"), lambda x: F.gelu(x, approximate="tanh")),
    "SiLU": (nn.SiLU(), F.silu),
    "ELU": (nn.ELU(0.5), lambda x: F.elu(x, 0.5)),
    "LeakyReLU": (nn.LeakyReLU(0.1), lambda x: F.leaky_relu(x, 0.1)),
    "Softmax": (nn.Softmax(dim=1), lambda x: x.softmax(1)),
    "LogSoftmax": (nn.LogSoftmax(dim=-1), lambda x: x.log_softmax(-1)),
}


@pytest.mark.parametrize("name", sorted(MODULES))
@FEW
@given(data=st.data())
def test_activation_modules(device, name, data):
    m, fn = MODULES[name]
    x = T(_off_zero(data, data.draw(tgst.shapes(min_dims=2, max_dims=3))), device)
    np.testing.assert_array_equal(m(x).numpy(), fn(x).numpy())
    assert tg.gradcheck(m, (x,)) and tg.gradgradcheck(m, (x,), fast_mode=True)


def test_activation_modules_defaults_and_repr(device):
    x = T([[-2.0, 3.0]], device)
    np.testing.assert_allclose(nn.LeakyReLU()(x).numpy(), [[-0.02, 3.0]])
    np.testing.assert_allclose(nn.ELU()(x).numpy(), [[math.expm1(-2.0), 3.0]])
    np.testing.assert_allclose(nn.SiLU(inplace=True)(x).numpy(), [[-2 / (1 + math.exp(2)), 3 / (1 + math.exp(-3))]])
    assert x.numpy().tolist() == [[-2.0, 3.0]]  # inplace changes nothing
    assert repr(nn.GELU()) == "GELU(approximate='none')" and repr(nn.ELU()) == "ELU(alpha=1.0)"
    assert repr(nn.LeakyReLU(0.2)) == "LeakyReLU(negative_slope=0.2)" and repr(nn.Softmax(0)) == "Softmax(dim=0)"
    with pytest.raises(ValueError, match=r"GELU: approximate must be 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")


def test_softmax_implicit_dim_is_pytorchs_and_warns(device):
    x = T(np.arange(6.0).reshape(2, 3), device)
    with pytest.warns(UserWarning, match=r"Softmax: implicit dimension choice"):
        y = nn.Softmax()(x)
    np.testing.assert_allclose(y.numpy(), x.softmax(1).numpy())   # 2-D: dim 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = T(np.arange(6.0).reshape(1, 2, 3), device)
        np.testing.assert_allclose(nn.LogSoftmax()(z).numpy(), z.log_softmax(0).numpy())  # 3-D: dim 0


# ============================================================================ losses
def _regression(device, data, shape, lo=-3.0, hi=3.0):
    return (data.draw(tgst.tensors(shape=shape, device=device, min_value=lo, max_value=hi)),
            data.draw(tgst.tensors(shape=shape, device=device, min_value=lo, max_value=hi)))


LOSS_MODULES = {
    "MSELoss": (lambda r: nn.MSELoss(reduction=r), lambda x, t, r: F.mse_loss(x, t, reduction=r), None),
    "L1Loss": (lambda r: nn.L1Loss(reduction=r), lambda x, t, r: F.l1_loss(x, t, reduction=r), [0.0]),
    "SmoothL1Loss": (lambda r: nn.SmoothL1Loss(reduction=r, beta=0.45),
                     lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.45), [0.0, 0.45, -0.45]),
    "HuberLoss": (lambda r: nn.HuberLoss(reduction=r, delta=1.3),
                  lambda x, t, r: F.huber_loss(x, t, reduction=r, delta=1.3), [0.0, 1.3, -1.3]),
    "BCELoss": (lambda r: nn.BCELoss(reduction=r), lambda x, t, r: F.binary_cross_entropy(x, t, reduction=r),
                "prob"),
    "BCEWithLogitsLoss": (lambda r: nn.BCEWithLogitsLoss(reduction=r),
                          lambda x, t, r: F.binary_cross_entropy_with_logits(x, t, reduction=r), None),
    "KLDivLoss": (lambda r: nn.KLDivLoss(reduction=r, log_target=True),
                  lambda x, t, r: F.kl_div(x, t, reduction=r, log_target=True), None),
}


@pytest.mark.parametrize("name", sorted(LOSS_MODULES))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@FEW
@given(shape=tgst.shapes(min_dims=1, max_dims=3, max_side=3), data=st.data())
def test_loss_modules(device, name, reduction, shape, data):
    make, fn, kinks = LOSS_MODULES[name]
    x, t = _regression(device, data, shape, *((0.05, 0.95) if kinks == "prob" else (-3.0, 3.0)))
    if isinstance(kinks, list):  # x - t off the kinks
        d = _off_zero(data, shape)
        assume(far_from(d, kinks))
        x = T(t.numpy() + d, device)
    m = make(reduction)
    np.testing.assert_array_equal(m(x, t).numpy(), fn(x, t, reduction).numpy())
    assert tg.gradcheck(m, (x, t)) and tg.gradgradcheck(m, (x, t), fast_mode=True)


@FEW
@given(N=st.integers(1, 3), C=st.integers(2, 4), data=st.data(), smoothing=st.sampled_from([0.0, 0.1]),
       reduction=st.sampled_from(["none", "mean", "sum"]))
def test_cross_entropy_and_nll_modules(device, N, C, data, smoothing, reduction):
    x = data.draw(tgst.tensors(shape=(N, C), device=device))
    t = data.draw(tgst.arrays((N,), 0, C - 1)).round().astype(np.int64)
    w = T(data.draw(tgst.arrays((C,), 0.2, 2.0)), device, requires_grad=False)
    ce = nn.CrossEntropyLoss(w, reduction=reduction, label_smoothing=smoothing)
    np.testing.assert_array_equal(ce(x, t).numpy(),
                                  F.cross_entropy(x, t, w, reduction=reduction, label_smoothing=smoothing).numpy())
    nll = nn.NLLLoss(w, reduction=reduction)
    np.testing.assert_array_equal(nll(x.log_softmax(1), t).numpy(),
                                  F.nll_loss(x.log_softmax(1), t, w, reduction=reduction).numpy())
    assert tg.gradcheck(lambda x: ce(x, t), (x,)) and tg.gradgradcheck(lambda x: ce(x, t), (x,), fast_mode=True)
    assert tg.gradcheck(lambda x: nll(x, t), (x,))


def test_cross_entropy_loss_ignores_minus_100_by_default(device):
    x = T([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0]], device)
    got = nn.CrossEntropyLoss()(x, np.array([-100, 2])).item()
    assert np.isclose(got, F.cross_entropy(x[1:], np.array([2])).item(), rtol=1e-12)
    assert nn.CrossEntropyLoss()(x, np.array([1, 2]))._ctx.fn.__name__ == "CrossEntropy"  # the fused op
    assert np.isclose(nn.NLLLoss()(x, np.array([1, -100])).item(), -2.0)


def test_loss_module_weights_are_buffers(device):
    w = tg.tensor([1.0, 2.0, 3.0], dtype=F64)
    m = nn.CrossEntropyLoss(weight=w)
    assert list(m.state_dict()) == ["weight"] and list(m.parameters()) == []
    m.to(device)
    assert m.weight.device is tg.device(device)
    b = nn.BCEWithLogitsLoss(pos_weight=[2.0, 1.0])
    assert list(b.state_dict()) == ["pos_weight"] and b.weight is None
    assert nn.MSELoss().state_dict() == {}


def test_loss_module_defaults_legacy_arguments_and_errors():
    assert nn.MSELoss().reduction == "mean" and nn.KLDivLoss().reduction == "mean"
    assert nn.L1Loss(size_average=False).reduction == "sum"
    assert nn.L1Loss(reduce=False).reduction == "none"
    assert nn.SmoothL1Loss().beta == 1.0 and nn.HuberLoss().delta == 1.0
    ce = nn.CrossEntropyLoss()
    assert (ce.ignore_index, ce.label_smoothing, ce.weight) == (-100, 0.0, None)
    assert repr(nn.MSELoss()) == "MSELoss()" and repr(nn.L1Loss(reduction="sum")) == "L1Loss(reduction='sum')"
    with pytest.raises(ValueError, match=r"MSELoss: reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: reduction must be"):
        nn.CrossEntropyLoss(reduction="batchmean")
    assert nn.KLDivLoss(reduction="batchmean").reduction == "batchmean"
    with pytest.raises(ValueError, match=r"HuberLoss: delta must be positive, got -1"):
        nn.HuberLoss(delta=-1)
    with pytest.raises(ValueError, match=r"SmoothL1Loss: beta must be non-negative, got -1"):
        nn.SmoothL1Loss(beta=-1)
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: label_smoothing must be in \[0, 1\], got 2"):
        nn.CrossEntropyLoss(label_smoothing=2)
    with pytest.raises(tg.ShapeError, match=r"mse_loss: target of shape \(3, 1\) does not match the input's "
                                            r"shape \(3,\)"):
        nn.MSELoss()(tg.zeros(3), tg.zeros(3, 1))


def test_a_small_classifier_trains(device):
    tg.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 8, dtype=F64, device=device), nn.LayerNorm(8, dtype=F64, device=device),
                          nn.GELU(), nn.Linear(8, 3, dtype=F64, device=device))
    x = tg.randn(12, 2, 3, dtype=F64, device=device)
    y = np.arange(12) % 3
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    opt = tg.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first


# ============================================================================ against PyTorch (optional)
def test_modules_against_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5))
    ours, theirs = nn.LayerNorm(5, dtype=F64), torch.nn.LayerNorm(5, dtype=torch.float64)
    assert set(ours.state_dict()) == set(theirs.state_dict())
    w = {k: rng.standard_normal(v.shape) for k, v in theirs.state_dict().items()}
    ours.load_state_dict(w)
    theirs.load_state_dict({k: torch.tensor(v) for k, v in w.items()})
    np.testing.assert_allclose(ours(tg.tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10)
    t = np.array([[0, 2, 1, 1, 0]] * 4)
    ce = nn.CrossEntropyLoss(weight=tg.tensor([1.0, 2.0, 0.5], dtype=F64), label_smoothing=0.2)
    tce = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64), label_smoothing=0.2)
    np.testing.assert_allclose(ce(tg.tensor(x), t).numpy(),
                               tce(torch.tensor(x), torch.tensor(t)).numpy(), rtol=1e-10)
