"""nn.functional's everyday vocabulary: losses, activations, layer_norm, normalize,
cosine_similarity, pad, scaled_dot_product_attention, cross_entropy's class weights and
label smoothing, and the erf op under GELU.

Each: forward against a NumPy formula written here from PyTorch's documentation, the
gradient of every float argument against central differences (float64, hypothesis), the
second derivatives (gradgradcheck), on every device; then the errors for bad input.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
import tinygrad_rnn.nn.functional as F
from tinygrad_rnn.ops.elementwise import Erf
from tinygrad_rnn.testing import far_from
from tinygrad_rnn.testing import strategies as tgst

FEW = settings(max_examples=10)
SMALL = dict(min_dims=1, max_dims=3, max_side=3)
np_erf = np.vectorize(math.erf, otypes=[np.float64])


def T(a, device, requires_grad=True):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64, device=device, requires_grad=requires_grad)


def close(out, expected, rtol=1e-10, atol=1e-12):
    expected = np.asarray(expected, dtype=np.float64)
    assert out.shape == expected.shape, f"shape {out.shape}, NumPy says {expected.shape}"
    np.testing.assert_allclose(out.numpy(), expected, rtol=rtol, atol=atol)


def _off_zero(data, shape):
    """Values of magnitude 0.1 to 3, all different, of either sign (|x| has a kink at 0)."""
    size = data.draw(tgst.arrays(shape, 0.1, 3.0, unique=True))
    return np.where(data.draw(tgst.arrays(shape, -1, 1)) < 0, -size, size)


def checks(fn, ts):
    assert tg.gradcheck(fn, ts)
    assert tg.gradgradcheck(fn, ts, fast_mode=True)


def np_reduce(loss, reduction):
    return {"none": loss, "sum": loss.sum(), "mean": loss.mean()}[reduction]


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


# ============================================================================ erf
def test_erf_forward_and_derivatives(device):
    x = np.linspace(-4, 4, 17).reshape(17)
    close(Erf.apply(T(x, device)), np_erf(x), atol=0)  # the C library's erf, bit for bit
    assert Erf.apply(tg.tensor([0.5, -1.0], device=device)).dtype is tg.float32
    assert Erf.apply(T(0.3, device)).shape == ()
    checks(Erf.apply, [T(x[1:-1:2], device)])


def test_erf_is_a_device_primitive(device):
    dev = tg.device(device)
    arr = dev.from_host(np.array([[-1.0, 0.0, 2.0]]), tg.float64)
    assert dev.is_native(dev.erf(arr))
    np.testing.assert_array_equal(dev.to_host(dev.erf(arr)), np_erf([[-1.0, 0.0, 2.0]]))


# ============================================================================ regression losses
def _pair(data, device, shape, lo=-3.0, hi=3.0):
    x = data.draw(tgst.tensors(shape=shape, device=device, min_value=lo, max_value=hi))
    t = data.draw(tgst.tensors(shape=shape, device=device, min_value=lo, max_value=hi))
    return x, t


def np_smooth_l1(d, beta):
    a = np.abs(d)
    return np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta)


def np_huber(d, delta):
    a = np.abs(d)
    return np.where(a < delta, 0.5 * a * a, delta * (a - 0.5 * delta))


REGRESSION = {
    "mse_loss": (lambda x, t, r: F.mse_loss(x, t, reduction=r), lambda d: d * d, []),
    "l1_loss": (lambda x, t, r: F.l1_loss(x, t, reduction=r), np.abs, [0.0]),
    "smooth_l1_loss": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.45),
                       lambda d: np_smooth_l1(d, 0.45), [0.0, 0.45, -0.45]),
    "smooth_l1_loss_beta0": (lambda x, t, r: F.smooth_l1_loss(x, t, reduction=r, beta=0.0), np.abs, [0.0]),
    "huber_loss": (lambda x, t, r: F.huber_loss(x, t, reduction=r, delta=0.7),
                   lambda d: np_huber(d, 0.7), [0.0, 0.7, -0.7]),
}


@pytest.mark.parametrize("name", sorted(REGRESSION))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@FEW
@given(shape=tgst.shapes(**SMALL), data=st.data())
def test_regression_losses(device, name, reduction, shape, data):
    fn, np_fn, kinks = REGRESSION[name]
    x, t = _pair(data, device, shape)
    if kinks:  # x - t off the kinks
        d = _off_zero(data, shape)
        assume(far_from(d, kinks))
        x = T(t.numpy() + d, device)
    close(fn(x, t, reduction), np_reduce(np_fn(x.numpy() - t.numpy()), reduction))
    checks(lambda a, b: fn(a, b, reduction), [x, t])


def test_regression_defaults_are_pytorchs(device):
    x, t = T([[0.0, 3.0]], device), T([[0.2, 0.0]], device)
    close(F.mse_loss(x, t), (0.04 + 9) / 2)
    close(F.smooth_l1_loss(x, t), (0.5 * 0.04 + 2.5) / 2)   # beta 1
    close(F.huber_loss(x, t), (0.5 * 0.04 + 2.5) / 2)       # delta 1
    close(F.huber_loss(x, t, delta=2.0), (0.02 + 2 * (3 - 1)) / 2)
    close(F.huber_loss(x, t, delta=2.0), 2.0 * F.smooth_l1_loss(x, t, beta=2.0).numpy())


# ============================================================================ binary cross-entropy
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@FEW
@given(shape=tgst.shapes(**SMALL), data=st.data(), weighted=st.booleans())
def test_binary_cross_entropy(device, reduction, shape, data, weighted):
    x, t = _pair(data, device, shape, 0.05, 0.95)
    w = data.draw(tgst.tensors(shape=shape[-1:], device=device, min_value=0.1, max_value=2)) if weighted else None
    xn, tn = x.numpy(), t.numpy()
    ref = -(tn * np.log(xn) + (1 - tn) * np.log(1 - xn)) * (1.0 if w is None else w.numpy())
    close(F.binary_cross_entropy(x, t, w, reduction=reduction), np_reduce(ref, reduction))
    checks(lambda *a: F.binary_cross_entropy(*a, reduction=reduction), [x, t] + ([w] if weighted else []))


def test_binary_cross_entropy_clamps_its_logs_at_minus_100(device):
    x = T([0.0, 1.0, 0.5], device)
    t = T([1.0, 0.0, 1.0], device)
    loss = F.binary_cross_entropy(x, t, reduction="none")
    close(loss, [100.0, 100.0, math.log(2)])
    loss.sum().backward()
    assert np.all(np.isfinite(x.grad.numpy()))
    close(F.binary_cross_entropy(T([0.0], device), T([0.0], device)), 0.0)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@FEW
@given(shape=tgst.shapes(**SMALL), data=st.data(), weighted=st.booleans(), positive=st.booleans())
def test_binary_cross_entropy_with_logits(device, reduction, shape, data, weighted, positive):
    x, t = _pair(data, device, shape)
    t = tg.tensor(t.sigmoid().numpy(), dtype=tg.float64, device=device, requires_grad=True)
    side = shape[-1:]
    w = data.draw(tgst.tensors(shape=side, device=device, min_value=0.1, max_value=2)) if weighted else None
    pw = data.draw(tgst.tensors(shape=side, device=device, min_value=0.1, max_value=3)) if positive else None
    xn, tn = x.numpy(), t.numpy()
    p = 1.0 if pw is None else pw.numpy()
    ref = -(p * tn * np_log_sigmoid(xn) + (1 - tn) * np_log_sigmoid(-xn)) * (1.0 if w is None else w.numpy())
    fn = lambda x, t, w, pw: F.binary_cross_entropy_with_logits(x, t, w, reduction=reduction, pos_weight=pw)  # noqa: E731
    close(fn(x, t, w, pw), np_reduce(ref, reduction))
    checks(fn, [x, t, w, pw])


def test_binary_cross_entropy_with_logits_is_stable(device):
    x = T([-800.0, 800.0, 40.0], device)
    loss = F.binary_cross_entropy_with_logits(x, T([1.0, 0.0, 1.0], device), reduction="none")
    close(loss, [800.0, 800.0, math.log1p(math.exp(-40.0))])
    loss.sum().backward()
    close(x.grad, [-1.0, 1.0, -1.0 / (1.0 + math.exp(40.0))])


# ============================================================================ kl_div
@pytest.mark.parametrize("reduction", ["none", "batchmean", "mean", "sum"])
@pytest.mark.parametrize("log_target", [False, True])
@FEW
@given(shape=tgst.shapes(**SMALL), data=st.data())
def test_kl_div(device, reduction, log_target, shape, data):
    x = data.draw(tgst.tensors(shape=shape, device=device))
    t = data.draw(tgst.tensors(shape=shape, device=device, min_value=0.1 if not log_target else -3.0,
                               max_value=1.0))
    xn, tn = x.numpy(), t.numpy()
    ref = np.exp(tn) * (tn - xn) if log_target else tn * (np.log(tn) - xn)
    want = ref.sum() / shape[0] if reduction == "batchmean" else np_reduce(ref, reduction)
    fn = lambda x, t: F.kl_div(x, t, reduction=reduction, log_target=log_target)  # noqa: E731
    close(fn(x, t), want)
    checks(fn, [x, t])


def test_kl_div_counts_nothing_where_the_target_is_zero(device):
    x = T([[-1.0, -2.0, -0.5]], device)
    t = T([[0.0, 0.25, 0.75]], device)
    loss = F.kl_div(x, t, reduction="none")
    close(loss, [[0.0, 0.25 * (math.log(0.25) + 2), 0.75 * (math.log(0.75) + 0.5)]])
    loss.sum().backward()
    close(x.grad, [[0.0, -0.25, -0.75]])
    assert np.all(np.isfinite(t.grad.numpy()))
    close(F.kl_div(x, t), loss.numpy().mean())  # PyTorch's default 'mean' is over elements


# ============================================================================ activations
ACTIVATIONS = {
    "gelu": (F.gelu, lambda x: 0.5 * x * (1 + np_erf(x / math.sqrt(2))), []),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), []),
    "silu": (F.silu, lambda x: x / (1 + np.exp(-x)), []),
    "elu": (F.elu, lambda x: np.where(x > 0, x, np.expm1(x)), [0.0]),
    "elu_alpha": (lambda x: F.elu(x, alpha=1.7), lambda x: np.where(x > 0, x, 1.7 * np.expm1(x)), [0.0]),
    "leaky_relu": (F.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), [0.0]),
    "leaky_relu_slope": (lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x), [0.0]),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@FEW
@given(data=st.data())
def test_activations(device, name, data):
    fn, np_fn, kinks = ACTIVATIONS[name]
    shape = data.draw(tgst.shapes(max_dims=3))
    x = T(_off_zero(data, shape), device) if kinks else data.draw(tgst.tensors(shape=shape, device=device))
    close(fn(x), np_fn(x.numpy()))
    checks(fn, [x])


def test_activations_at_the_kink_and_far_out(device):
    x = T([0.0, -1000.0, 1000.0], device)
    for fn, slope_at_0 in ((F.elu, 1.0), (F.leaky_relu, 0.01)):  # PyTorch's one-sided slopes
        x.grad = None
        fn(x).sum().backward()
        assert np.all(np.isfinite(x.grad.numpy())) and x.grad.numpy()[0] == slope_at_0
    close(F.elu(x), [0.0, -1.0, 1000.0])
    close(F.silu(x), [0.0, 0.0, 1000.0])
    close(F.gelu(x), [0.0, 0.0, 1000.0])


# ============================================================================ layer_norm
def np_layer_norm(x, k, w, b, eps):
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    out = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)
    return out * (1 if w is None else w) + (0 if b is None else b)


@FEW
@given(shape=tgst.shapes(min_dims=1, max_dims=3, min_side=2, max_side=3), data=st.data(), affine=st.booleans())
def test_layer_norm(device, shape, data, affine):
    k = data.draw(st.integers(1, len(shape)))
    norm = shape[len(shape) - k:]
    x = data.draw(tgst.tensors(shape=shape, device=device))
    w = data.draw(tgst.tensors(shape=norm, device=device)) if affine else None
    b = data.draw(tgst.tensors(shape=norm, device=device)) if affine else None
    fn = lambda x, w, b: F.layer_norm(x, norm, w, b, eps=1e-3)  # noqa: E731
    close(fn(x, w, b), np_layer_norm(x.numpy(), k, None if w is None else w.numpy(),
                                     None if b is None else b.numpy(), 1e-3), rtol=1e-9)
    checks(fn, [x, w, b])


# ============================================================================ normalize, cosine_similarity
def np_norm(x, p, dim):
    a = np.abs(x)
    if p == math.inf:
        return a.max(axis=dim, keepdims=True)
    return (a ** p).sum(axis=dim, keepdims=True) ** (1 / p)


@pytest.mark.parametrize("p", [1, 2.0, 3, math.inf])
@FEW
@given(shape=tgst.shapes(min_dims=2, max_dims=3, max_side=3), data=st.data())
def test_normalize(device, p, shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = T(_off_zero(data, shape), device)
    if p == math.inf:
        assume(tgst.well_separated(np.abs(x.numpy()), axis=dim))
    close(F.normalize(x, p=p, dim=dim), x.numpy() / np_norm(x.numpy(), p, dim), rtol=1e-9)
    checks(lambda x: F.normalize(x, p=p, dim=dim), [x])


def test_normalize_defaults_and_eps(device):
    x = T([[3.0, 4.0], [0.0, 0.0]], device)
    close(F.normalize(x), [[0.6, 0.8], [0.0, 0.0]])         # p=2, dim=1; a zero row stays zero
    close(F.normalize(x, eps=10.0), x.numpy() / 10.0)


@FEW
@given(shapes=tgst.mutually_broadcastable_shapes(2, min_dims=1, max_dims=3, max_side=3), data=st.data())
def test_cosine_similarity(device, shapes, data):
    (s1, s2), out = shapes
    dim = data.draw(st.integers(-len(out), len(out) - 1))
    x1 = data.draw(tgst.tensors(shape=s1, device=device))
    x2 = data.draw(tgst.tensors(shape=s2, device=device))
    a, b = np.broadcast_arrays(x1.numpy(), x2.numpy())
    n1, n2 = np.linalg.norm(a, axis=dim), np.linalg.norm(b, axis=dim)
    assume(np.all(n1 > 0.1) and np.all(n2 > 0.1))
    close(F.cosine_similarity(x1, x2, dim=dim), (a * b).sum(axis=dim) / (n1 * n2), rtol=1e-9)
    checks(lambda a, b: F.cosine_similarity(a, b, dim=dim), [x1, x2])


def test_cosine_similarity_eps(device):
    close(F.cosine_similarity(T([[1.0, 0.0]], device), T([[0.0, 0.0]], device)), [0.0])
    close(F.cosine_similarity(T([[2.0, 0.0]], device), T([[3.0, 0.0]], device), eps=10.0), [0.06])


# ============================================================================ pad
@FEW
@given(shape=tgst.shapes(min_dims=1, max_dims=3, max_side=3), data=st.data())
def test_pad(device, shape, data):
    k = data.draw(st.integers(1, len(shape)))
    pads = []
    for i in range(k):
        n = shape[len(shape) - 1 - i]
        lo = data.draw(st.integers(-n, 2))
        pads += [lo, data.draw(st.integers(-(n + min(lo, 0)), 2))]
    value = data.draw(st.sampled_from([None, 0.0, -1.5]))
    x = data.draw(tgst.tensors(shape=shape, device=device))
    ref = x.numpy()
    for i in range(k):  # PyTorch's order: the last axis first
        d, lo, hi = len(shape) - 1 - i, pads[2 * i], pads[2 * i + 1]
        ref = np.take(ref, range(max(-lo, 0), ref.shape[d] - max(-hi, 0)), axis=d)
        width = [(0, 0)] * len(shape)
        width[d] = (max(lo, 0), max(hi, 0))
        ref = np.pad(ref, width, constant_values=0.0 if value is None else value)
    close(F.pad(x, tuple(pads), value=value), ref)
    checks(lambda x: F.pad(x, pads, value=value), [x])


# ============================================================================ attention
def np_softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("mask", ["none", "bool", "float", "causal"])
@FEW
@given(batch=tgst.shapes(max_dims=2, max_side=2), L=st.integers(1, 3), S=st.integers(1, 3), data=st.data(),
       scale=st.sampled_from([None, 0.3]))
def test_scaled_dot_product_attention(device, mask, batch, L, S, data, scale):
    E, Ev = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    q = data.draw(tgst.tensors(shape=batch + (L, E), device=device))
    k = data.draw(tgst.tensors(shape=batch + (S, E), device=device))
    v = data.draw(tgst.tensors(shape=batch + (S, Ev), device=device))
    scores = q.numpy() @ np.swapaxes(k.numpy(), -1, -2) * (1 / math.sqrt(E) if scale is None else scale)
    m = None
    if mask == "bool":
        m = data.draw(tgst.arrays((L, S), 0, 1)) > 0.5
        m[:, 0] = True  # a query with nothing to attend to is NaN, as in PyTorch
        scores = np.where(m, scores, -np.inf)
    elif mask == "float":
        m = data.draw(tgst.tensors(shape=(L, S), device=device))
        scores = scores + m.numpy()
    elif mask == "causal":
        scores = np.where(np.tril(np.ones((L, S), dtype=bool)), scores, -np.inf)
    fn = lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=scale,  # noqa: E731
                                                           is_causal=mask == "causal")
    close(fn(q, k, v, m), np_softmax(scores) @ v.numpy(), rtol=1e-9)
    checks(fn, [q, k, v, m])


def test_attention_dropout(device):
    q, k, v = (tg.randn(2, 3, 4, dtype=tg.float64, device=device) for _ in range(3))
    tg.manual_seed(5)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    tg.manual_seed(5)
    keep = tg.device(device).dropout_mask((2, 3, 3), 0.5, tg.float64)
    w = np_softmax(q.numpy() @ np.swapaxes(k.numpy(), -1, -2) / 2.0) * tg.device(device).to_host(keep)
    close(out, w @ v.numpy())
    close(F.scaled_dot_product_attention(q, k, v, dropout_p=1.0), np.zeros((2, 3, 4)))


# ============================================================================ cross_entropy, nll_loss
def np_cross_entropy(x, t, w, ignore, reduction, eps):
    """PyTorch's formulas, on logits (N, C, d...) with classes on axis 1."""
    C = x.shape[1]
    logp = x - x.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    logp = np.moveaxis(logp, 1, -1).reshape(-1, C)
    t = t.reshape(-1)
    w = np.ones(C) if w is None else w
    valid = t != ignore if ignore is not None else np.ones(t.shape, dtype=bool)
    safe = np.where(valid, t, 0)
    wt = w[safe] * valid
    nll = -logp[np.arange(len(t)), safe] * wt
    smooth = -(logp * w).sum(axis=1) * valid
    loss = (1 - eps) * nll + eps / C * smooth
    if reduction == "none":
        return loss.reshape((x.shape[0],) + x.shape[2:])
    return loss.sum() if reduction == "sum" else loss.sum() / wt.sum()


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@FEW
@given(N=st.integers(1, 3), C=st.integers(2, 4), extra=tgst.shapes(max_dims=1, max_side=2), data=st.data(),
       smoothing=st.sampled_from([0.0, 0.2, 1.0]), weighted=st.booleans(), ignore=st.sampled_from([None, -100, 1]))
def test_cross_entropy_weight_and_label_smoothing(device, reduction, N, C, extra, data, smoothing, weighted,
                                                  ignore):
    assume(weighted or smoothing)
    x = data.draw(tgst.tensors(shape=(N, C) + extra, device=device))
    t = data.draw(tgst.arrays((N,) + extra, 0, C - 1)).round().astype(np.int64)
    if ignore == -100:
        t.reshape(-1)[0] = -100
    if ignore is not None and reduction == "mean":
        assume(np.any(t != ignore))
    w = data.draw(tgst.tensors(shape=(C,), device=device, min_value=0.2, max_value=2)) if weighted else None
    fn = lambda x, w: F.cross_entropy(x, t, w, reduction=reduction, ignore_index=ignore,  # noqa: E731
                                      label_smoothing=smoothing)
    close(fn(x, w), np_cross_entropy(x.numpy(), t, None if w is None else w.numpy(), ignore, reduction,
                                     smoothing), rtol=1e-9)
    checks(fn, [x, w])


def test_cross_entropy_options_agree_with_the_fused_loss(device):
    x = tg.randn(5, 4, dtype=tg.float64, device=device)
    t = np.array([0, 3, 1, 1, 2])
    plain = F.cross_entropy(x, t).item()
    assert F.cross_entropy(x, t).grad_fn is None  # nothing requires grad; the fused op ran
    assert np.isclose(F.cross_entropy(x, t, T(np.ones(4), device)).item(), plain, rtol=1e-12)
    assert np.isclose(F.cross_entropy(x, t, label_smoothing=0.0).item(), plain, rtol=1e-12)
    assert np.isclose(F.cross_entropy(x, np.array([0, 3, -100, 1, 2]), ignore_index=-100).item(),
                      F.cross_entropy(T(x.numpy()[[0, 1, 3, 4]], device), np.array([0, 3, 1, 2])).item(),
                      rtol=1e-12)
    logp = x.log_softmax(-1)
    assert np.isclose(F.nll_loss(logp, t).item(), plain, rtol=1e-12)


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@FEW
@given(N=st.integers(1, 3), C=st.integers(2, 4), extra=tgst.shapes(max_dims=1, max_side=2), data=st.data(),
       ignore=st.sampled_from([None, 0]))
def test_nll_loss_weight(device, reduction, N, C, extra, data, ignore):
    x = data.draw(tgst.tensors(shape=(N, C) + extra, device=device))
    t = data.draw(tgst.arrays((N,) + extra, 0, C - 1)).round().astype(np.int64)
    if ignore is not None and reduction == "mean":
        assume(np.any(t != ignore))
    w = data.draw(tgst.tensors(shape=(C,), device=device, min_value=0.2, max_value=2))
    fn = lambda x, w: F.nll_loss(x, t, w, reduction=reduction, ignore_index=ignore)  # noqa: E731
    logp = np.moveaxis(x.numpy(), 1, -1).reshape(-1, C)
    tf, wn = t.reshape(-1), w.numpy()
    valid = tf != ignore if ignore is not None else np.ones(tf.shape, dtype=bool)
    safe = np.where(valid, tf, 0)
    loss = -logp[np.arange(len(tf)), safe] * wn[safe] * valid
    want = {"none": lambda: loss.reshape((N,) + extra), "sum": loss.sum,
            "mean": lambda: loss.sum() / (wn[safe] * valid).sum()}[reduction]()
    close(fn(x, w), want, rtol=1e-9)
    checks(fn, [x, w])


# ============================================================================ errors
@pytest.fixture
def xy(device):
    return T(np.full((2, 3), 0.5), device), T(np.full((2, 3), 0.25), device)


LOSSES = [F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.binary_cross_entropy,
          F.binary_cross_entropy_with_logits, F.kl_div]


@pytest.mark.parametrize("fn", LOSSES, ids=lambda f: f.__name__)
def test_loss_errors(device, xy, fn):
    x, y = xy
    name = fn.__name__
    with pytest.raises(tg.ShapeError, match=rf"{name}: target of shape \(2, 1\) does not match the input's "
                                            rf"shape \(2, 3\)"):
        fn(x, T(np.full((2, 1), 0.5), device))
    with pytest.raises(ValueError, match=rf"{name}: reduction must be .*'none', got 'avg'"):
        fn(x, y, reduction="avg")
    with pytest.raises(tg.DTypeError, match=rf"{name}: target is float32 but the input is float64"):
        fn(x, tg.full((2, 3), 0.5, device=device))
    other = "cpu" if device != "cpu" else "strict"
    with pytest.raises(RuntimeError, match=rf"{name}: target is on {other} but the input is on {device}"):
        fn(x, T(np.full((2, 3), 0.5), other))
    with pytest.raises(TypeError, match=rf"{name}: input must be a Tensor"):
        fn(np.zeros((2, 3)), y)
    assert fn(x, y.numpy()).shape == ()  # an array target is taken in the input's dtype


def test_other_bad_input(device, xy):
    x, y = xy
    with pytest.raises(ValueError, match=r"kl_div: reduction must be 'mean', 'batchmean', 'sum' or 'none'"):
        F.kl_div(x, y, reduction="batch")
    with pytest.raises(ValueError, match=r"binary_cross_entropy: every element of the input must be a "
                                         r"probability in \[0, 1\]"):
        F.binary_cross_entropy(x * 3, y)
    with pytest.raises(tg.ShapeError, match=r"binary_cross_entropy_with_logits: pos_weight of shape \(2,\) "
                                            r"does not broadcast to the input's shape \(2, 3\)"):
        F.binary_cross_entropy_with_logits(x, y, pos_weight=T([1.0, 2.0], device))
    with pytest.raises(tg.ShapeError, match=r"binary_cross_entropy: weight of shape \(4,\)"):
        F.binary_cross_entropy(x, y, T(np.ones(4), device))
    with pytest.raises(ValueError, match=r"smooth_l1_loss: beta must be non-negative, got -1"):
        F.smooth_l1_loss(x, y, beta=-1)
    with pytest.raises(ValueError, match=r"huber_loss: delta must be positive, got 0"):
        F.huber_loss(x, y, delta=0)
    with pytest.raises(ValueError, match=r"gelu: approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(x, approximate="erf")
    with pytest.raises(tg.ShapeError, match=r"layer_norm: input of shape \(2, 3\) does not end in "
                                            r"normalized_shape \(2,\)"):
        F.layer_norm(x, 2)
    with pytest.raises(tg.ShapeError, match=r"layer_norm: weight of shape \(2,\) must have normalized_shape \(3,\)"):
        F.layer_norm(x, [3], T([1.0, 2.0], device))
    with pytest.raises(ValueError, match=r"normalize: p must be a positive number or inf, got -1"):
        F.normalize(x, p=-1)
    with pytest.raises(tg.AxisError, match=r"axis 2 is out of range"):
        F.normalize(x, dim=2)
    with pytest.raises(tg.ShapeError, match=r"cosine_similarity: shapes \(2, 3\) and \(2,\) do not broadcast"):
        F.cosine_similarity(x, T([1.0, 2.0], device))


def test_pad_errors(device, xy):
    x, _ = xy
    with pytest.raises(tg.ShapeError, match=r"pad: pad must be an even number of ints, two per padded axis, "
                                            r"at most 4 for a tensor of shape \(2, 3\), got \(1, 2, 3\)"):
        F.pad(x, (1, 2, 3))
    with pytest.raises(tg.ShapeError, match=r"at most 4"):
        F.pad(x, (1, 1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match=r"pad: mode 'reflect' is not supported \(only 'constant'\)"):
        F.pad(x, (1, 1), mode="reflect")
    with pytest.raises(tg.ShapeError, match=r"pad: padding \(-2, -2\) leaves axis 1 of size 3 with a negative"):
        F.pad(x, (-2, -2))


def test_attention_errors(device):
    q, k = T(np.zeros((2, 3)), device), T(np.zeros((4, 3)), device)
    with pytest.raises(tg.ShapeError, match=r"scaled_dot_product_attention: query \(\.\.\., L, E\), key .* "
                                            r"got \(2, 3\), \(4, 3\) and \(3, 3\)"):
        F.scaled_dot_product_attention(q, k, T(np.zeros((3, 3)), device))
    v = T(np.zeros((4, 5)), device)
    with pytest.raises(tg.ShapeError, match=r"attn_mask of shape \(3, 4\) does not broadcast to the attention "
                                            r"scores' shape \(2, 4\)"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"pass attn_mask or is_causal=True, not both"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((2, 4), dtype=bool), is_causal=True)
    with pytest.raises(tg.DTypeError, match=r"attn_mask must be bool or float64 like the query, got float32"):
        F.scaled_dot_product_attention(q, k, v, attn_mask=tg.zeros(2, 4, device=device))


def test_cross_entropy_and_nll_errors(device, xy):
    x, _ = xy
    t = np.array([0, 2])
    with pytest.raises(ValueError, match=r"cross_entropy: label_smoothing must be in \[0, 1\], got 1.5"):
        F.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(tg.ShapeError, match=r"cross_entropy: weight must have shape \(3,\), one per class, "
                                            r"got \(2,\)"):
        F.cross_entropy(x, t, T([1.0, 2.0], device))
    with pytest.raises(tg.IndexOutOfRange, match=r"cross_entropy: target 3 is out of range for 3 classes"):
        F.cross_entropy(x, np.array([0, 3]), label_smoothing=0.1)
    with pytest.raises(tg.IndexOutOfRange, match=r"nll_loss: target -1 is out of range for 3 classes"):
        F.nll_loss(x, np.array([-1, 0]))
    with pytest.raises(tg.ShapeError, match=r"nll_loss: log-probabilities of shape \(2, 3\) need targets of "
                                            r"shape \(2,\), got \(3,\)"):
        F.nll_loss(x, np.array([0, 1, 2]))
    with pytest.raises(tg.DTypeError, match=r"nll_loss: weight is float32 but the input is float64"):
        F.nll_loss(x, t, tg.ones(3, device=device))
    with pytest.raises(TypeError, match=r"takes 2 positional arguments but 3|positional"):
        F.cross_entropy(x, t, None, "sum")


# ============================================================================ against PyTorch (optional)
def test_against_pytorch():
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    p, q = 1 / (1 + np.exp(-x)), 1 / (1 + np.exp(-y))
    t = np.array([0, 3, 1])
    w = np.array([0.5, 1.0, 2.0, 1.5])
    ours, theirs = tg.tensor(x, dtype=tg.float64), torch.tensor(x)
    pairs = [
        (F.gelu(ours), TF.gelu(theirs)), (F.gelu(ours, approximate="tanh"), TF.gelu(theirs, approximate="tanh")),
        (F.elu(ours, 0.5), TF.elu(theirs, 0.5)), (F.layer_norm(ours, (4,)), TF.layer_norm(theirs, (4,))),
        (F.binary_cross_entropy(tg.tensor(p), tg.tensor(q)), TF.binary_cross_entropy(torch.tensor(p), torch.tensor(q))),
        (F.binary_cross_entropy_with_logits(ours, tg.tensor(q), pos_weight=tg.tensor(w)),
         TF.binary_cross_entropy_with_logits(theirs, torch.tensor(q), pos_weight=torch.tensor(w))),
        (F.cross_entropy(ours, t, tg.tensor(w), label_smoothing=0.3),
         TF.cross_entropy(theirs, torch.tensor(t), torch.tensor(w), label_smoothing=0.3)),
        (F.kl_div(ours, tg.tensor(q), reduction="batchmean"), TF.kl_div(theirs, torch.tensor(q), reduction="batchmean")),
        (F.pad(ours, (1, -1, 2, 0), value=3.0), TF.pad(theirs, (1, -1, 2, 0), value=3.0)),
        (F.cosine_similarity(ours, tg.tensor(y)), TF.cosine_similarity(theirs, torch.tensor(y))),
    ]
    for a, b in pairs:
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
