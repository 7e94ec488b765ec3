"""Gradients of gradients: create_graph, gradgradcheck, third derivatives, and double
backward through every recurrent layer configuration. (Every op's second derivative is
checked by tests/test_ops.py, whose check() runs gradgradcheck beside gradcheck.)"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import autograd, nn
from tinygrad_rnn.testing import strategies as tgst

F64 = tg.float64


def leaf(*shape, seed=0, device="cpu"):
    return tg.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=F64, device=device,
                     requires_grad=True)


def test_second_and_third_derivatives_of_a_polynomial_and_tanh():
    x = leaf(4)
    xs = x.numpy()
    y = (x ** 3 * x.tanh()).sum()
    (g1,) = autograd.grad(y, x, create_graph=True)
    (g2,) = autograd.grad(g1.sum(), x, create_graph=True)
    (g3,) = autograd.grad(g2.sum(), x)
    t = np.tanh(xs)
    s = 1 - t ** 2  # tanh'
    d1 = 3 * xs ** 2 * t + xs ** 3 * s
    d2 = 6 * xs * t + 6 * xs ** 2 * s - 2 * xs ** 3 * t * s
    d3 = (6 * t + 18 * xs * s - 18 * xs ** 2 * t * s + xs ** 3 * (-2 * s * s + 4 * t * t * s))
    np.testing.assert_allclose(g1.numpy(), d1, rtol=1e-12)
    np.testing.assert_allclose(g2.numpy(), d2, rtol=1e-12)
    np.testing.assert_allclose(g3.numpy(), d3, rtol=1e-11)


@pytest.mark.parametrize("fn", [
    lambda x: (x.sigmoid() * x).sum(axis=0),
    lambda x: x.softmax(-1)[:, :2],
    lambda x: (x @ x.T).logsumexp(axis=1),
    lambda x: x.exp().cumsum(axis=1),
], ids=["sigmoid", "softmax", "matmul-logsumexp", "cumsum"])
def test_third_order(fn, device):
    x = leaf(3, 3, device=device)
    # gradgradcheck of the first derivative: the third derivatives against differences of the second
    v = tg.tensor(np.random.default_rng(5).standard_normal(fn(x).shape), dtype=F64, device=device)

    def first(x):
        return autograd.grad(fn(x), x, grad_outputs=v, create_graph=True)

    assert tg.gradgradcheck(first, (x,), fast_mode=True)


def test_backward_create_graph_leaves_a_differentiable_grad():
    x = leaf(3)
    (x * x * x).sum().backward(create_graph=True)
    g = x.grad
    assert g.requires_grad and g._ctx is not None
    np.testing.assert_allclose(g.numpy(), 3 * x.numpy() ** 2, rtol=1e-14)
    x.grad = None
    g.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.numpy(), rtol=1e-14)


def test_retain_graph_defaults_to_create_graph():
    x = leaf(3)
    y = (x.exp() * x).sum()
    autograd.grad(y, x, create_graph=True)
    autograd.grad(y, x)  # the graph was kept by create_graph; this first-order call frees it
    with pytest.raises(RuntimeError, match=r"backward through .* a second time"):
        autograd.grad(y, x)
    z = (x.exp() * x).sum()
    z.backward(create_graph=True, retain_graph=False)
    with pytest.raises(RuntimeError, match=r"a second time"):
        z.backward()


def test_hessian_vector_product_by_double_backward():
    A = np.random.default_rng(1).standard_normal((4, 4))
    A = A + A.T
    a = tg.tensor(A, dtype=F64)
    x = leaf(4)
    f = 0.5 * (x @ (a @ x))  # Hessian = A
    (g,) = autograd.grad(f, x, create_graph=True)
    v = tg.tensor([1.0, 0.0, 2.0, -1.0], dtype=F64)
    (hv,) = autograd.grad(g, x, grad_outputs=v)
    np.testing.assert_allclose(hv.numpy(), A @ v.numpy(), rtol=1e-13)


# ----------------------------------------------------------------------------- gradgradcheck itself
class SavedDerivativeAsConstant(tg.Function):
    """x^2 with a right first derivative (2x) computed in forward and saved: the second
    derivative through it would be 0 instead of 2. The op claims that is fine (wrongly)."""

    saved_constants = True

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(2.0 * x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]


class SavedDerivativeHonest(SavedDerivativeAsConstant):
    saved_constants = False


def test_gradgradcheck_catches_a_right_first_and_wrong_second_derivative():
    x = leaf(3)
    assert tg.gradcheck(SavedDerivativeAsConstant.apply, (x,))
    for fast in (False, True):
        with pytest.raises(tg.GradcheckError, match=r"gradgradcheck \(second derivatives\)"):
            tg.gradgradcheck(SavedDerivativeAsConstant.apply, (x,), fast_mode=fast)
        assert tg.gradgradcheck(SavedDerivativeAsConstant.apply, (x,), fast_mode=fast, raise_exception=False) is False
    # without the false claim, the engine refuses instead of computing a wrong answer
    with pytest.raises(autograd.CreateGraphError, match=r"SavedDerivativeHonest: create_graph=True: its backward "
                                                       r"uses a value its forward computed \(saved value 0"):
        tg.gradgradcheck(SavedDerivativeHonest.apply, (x,))


@given(x=tgst.tensors(shape=tgst.shapes(max_dims=2, max_side=3), min_value=-2, max_value=2))
def test_gradgradcheck_passes_a_user_op_written_with_xp(x):
    class Cube(tg.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a * a

        @staticmethod
        def backward(ctx, grad):
            (a,) = ctx.saved_tensors
            return 3.0 * grad * a * a

    assert tg.gradgradcheck(Cube.apply, (x,))


def test_gradgradcheck_bad_inputs():
    x = leaf(2)
    with pytest.raises(ValueError, match=r"gradgradcheck: no input requires grad"):
        tg.gradgradcheck(lambda a: a * 2, (tg.zeros(2, dtype=F64),))
    with pytest.raises(ValueError, match=r"gradgradcheck: grad_outputs must be one tensor per output"):
        tg.gradgradcheck(lambda a: a * 2, (x,), grad_outputs=(tg.zeros(3, dtype=F64),))
    assert tg.gradgradcheck(lambda a: a * a, (x,), grad_outputs=(tg.ones(2, dtype=F64),))


# ----------------------------------------------------------------------------- recurrent layers
LAYER_CASES = [(1, False, False, False), (2, False, False, True), (1, True, True, True), (2, True, False, False)]


@pytest.mark.parametrize("case", LAYER_CASES, ids=lambda c: f"L{c[0]}{'-bi' if c[1] else ''}"
                         f"{'-bf' if c[2] else ''}{'-h0' if c[3] else ''}")
@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
def test_double_backward_through_every_layer_config_matches_composed(mode, case, device):
    L, bi, bf, given_state = case
    T, B, I, H = 4, 2, 3, 3
    D = 2 if bi else 1
    kw = dict(num_layers=L, bidirectional=bi, batch_first=bf, dtype=F64, device=device)
    m = (nn.RNN(I, H, nonlinearity=mode[4:].lower(), **kw) if mode.startswith("RNN")
         else {"LSTM": nn.LSTM, "GRU": nn.GRU}[mode](I, H, **kw))
    x = leaf(*((B, T, I) if bf else (T, B, I)), device=device)
    h0 = leaf(L * D, B, H, seed=1, device=device)
    c0 = leaf(L * D, B, H, seed=2, device=device)
    state = None if not given_state else ((h0, c0) if mode == "LSTM" else h0)
    leaves = [x] + ([h0, c0] if mode == "LSTM" else [h0] if given_state else []) + list(m.parameters())
    leaves = leaves if given_state or mode != "LSTM" else [x] + list(m.parameters())

    def gradient_penalty():
        out, _ = m(x, state)
        (gx,) = autograd.grad((out * out).sum(), x, create_graph=True)
        return (gx * gx).sum()  # the norm of d loss / d input, as a gradient penalty

    results = {}
    for impl in ("composed", "step", "sequence"):
        m.impl = impl
        results[impl] = [g.numpy() for g in autograd.grad(gradient_penalty(), leaves, allow_unused=True)]
    for impl in ("step", "sequence"):
        for k, (a, b) in enumerate(zip(results[impl], results["composed"])):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{impl}, leaf {k}")


@pytest.mark.parametrize("impl", ["sequence", "step", "composed"])
def test_gradgradcheck_through_lstm_layers(impl):
    m = nn.LSTM(2, 2, num_layers=2, bidirectional=True, impl=impl, dtype=F64)
    x = leaf(3, 2, 2)
    assert tg.gradgradcheck(lambda a, *p: m(a)[0], (x,) + tuple(m.parameters()), fast_mode=True)


@given(seed=st.integers(0, 2 ** 16))
def test_gradgradcheck_through_an_embedding_and_gru(seed):
    tg.manual_seed(seed)
    emb = nn.Embedding(4, 3, dtype=F64)
    m = nn.GRU(3, 2, dtype=F64)
    ids = tg.tensor(np.random.default_rng(seed).integers(0, 4, (5, 2)))
    assert tg.gradgradcheck(lambda w, *p: m(tg.nn.functional.embedding(ids, w))[0],
                            (emb.weight,) + tuple(m.parameters()), fast_mode=True)


def test_min_rnns_sequential_mode_differentiates_twice_and_the_scan_says_it_does_not():
    m = nn.MinGRU(2, 3, dtype=F64)
    x = leaf(4, 2, 2)
    assert tg.gradgradcheck(lambda a, *p: m(a, mode="sequential")[0], (x,) + tuple(m.parameters()), fast_mode=True)
    with pytest.raises(autograd.CreateGraphError, match=r"LogCumSumExp: create_graph=True: its backward works in "
                                                       r"log space.*sequential mode"):
        tg.gradgradcheck(lambda a, *p: m(a, mode="parallel")[0], (x,) + tuple(m.parameters()), fast_mode=True)


def test_a_rule_calling_a_function_the_namespace_lacks_gets_a_clear_error():
    class UsesCosh(tg.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return ctx.xp.sinh(a)

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.xp.cosh(ctx.saved_tensors[0])

    x = leaf(3)
    assert tg.gradcheck(UsesCosh.apply, (x,))
    with pytest.raises(autograd.CreateGraphError, match=r"a backward rule called xp.cosh, which the tensor namespace"):
        tg.gradgradcheck(UsesCosh.apply, (x,))


@given(ids=st.lists(st.integers(0, 4), min_size=1, max_size=8), pad=st.sampled_from([None, 0, 3]))
def test_embedding_second_derivatives_with_and_without_padding(ids, pad):
    # two writes into one gradient buffer (the scatter, then the padding row set to zero):
    # the graph of the second derivative must keep both
    w = leaf(5, 3, seed=len(ids))
    idx = np.asarray(ids)
    assert tg.gradgradcheck(lambda a: tg.nn.functional.embedding(idx, a, padding_idx=pad) ** 3, (w,))


# ----------------------------------------------------------------------------- Hessians of the losses
def softmax_rows(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def block_hessian(p, scale):
    """sum_i scale_i * (diag(p_i) - p_i p_i^T) placed on the diagonal blocks: the Hessian of
    sum_i scale_i * (logsumexp(x_i) - x_i[t_i]) w.r.t. x (N, C), shaped (N, C, N, C)."""
    n, c = p.shape
    H = np.zeros((n, c, n, c))
    for i in range(n):
        H[i, :, i, :] = scale[i] * (np.diag(p[i]) - np.outer(p[i], p[i]))
    return H


def test_hessian_of_logsumexp_is_diag_p_minus_p_p_transposed(device):
    x = leaf(5, device=device)
    H = tg.func.hessian(lambda a: a.logsumexp(axis=0))(x).numpy()
    p = softmax_rows(x.numpy())
    np.testing.assert_allclose(H, np.diag(p) - np.outer(p, p), rtol=1e-10, atol=1e-13)


@st.composite
def classification(draw):
    n, c = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    logits = draw(tgst.arrays((n, c)))
    targets = draw(tgst.index_arrays(c, shape=(n,)))
    ignore_index = draw(st.sampled_from([None, -100, 0]))
    if ignore_index == -100:  # some rows ignored, their target no class at all
        targets = np.where(draw(tgst.arrays((n,))) > 1.0, -100, targets)
    return logits, targets, ignore_index


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss(log_softmax)"])
@given(case=classification())
def test_hessian_of_cross_entropy_against_the_formula(device, reduction, loss, case):
    logits, targets, ignore_index = case
    keep = np.ones(len(targets)) if ignore_index is None else (targets != ignore_index).astype(float)
    if reduction == "mean" and not keep.any():
        return  # a mean over no target is 0/0, as in PyTorch
    u = np.random.default_rng(len(targets)).standard_normal(len(targets))  # weights the rows of "none"
    ut = tg.tensor(u, dtype=F64, device=device)

    def f(x):
        if loss == "cross_entropy":
            out = nn.functional.cross_entropy(x, targets, reduction=reduction, ignore_index=ignore_index)
        else:
            out = nn.functional.nll_loss(nn.functional.log_softmax(x, -1), targets, reduction=reduction,
                                         ignore_index=ignore_index)
        return (out * ut).sum() if reduction == "none" else out

    x = tg.tensor(logits, dtype=F64, device=device, requires_grad=True)
    H = tg.func.hessian(f)(x).numpy()
    scale = keep / keep.sum() if reduction == "mean" else keep if reduction == "sum" else u * keep
    np.testing.assert_allclose(H, block_hessian(softmax_rows(logits), scale), rtol=1e-10, atol=1e-12)
    if loss == "cross_entropy":
        assert tg.gradgradcheck(lambda a: nn.functional.cross_entropy(
            a, targets, reduction=reduction, ignore_index=ignore_index), (x,))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_hessian_of_cross_entropy_against_pytorch(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    logits, targets = rng.standard_normal((4, 5)), np.array([1, -100, 4, 0])

    def ours(x):
        return nn.functional.cross_entropy(x, targets, reduction=reduction, ignore_index=-100).sum()

    def theirs(x):
        return torch.nn.functional.cross_entropy(x, torch.tensor(targets), reduction=reduction,
                                                 ignore_index=-100).sum()

    H = tg.func.hessian(ours)(tg.tensor(logits, dtype=F64)).numpy()
    expected = torch.autograd.functional.hessian(theirs, torch.tensor(logits)).numpy()
    np.testing.assert_allclose(H, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_gradgradcheck_through_the_char_lm_loss(cell):
    # the whole char-LM path: embedding, recurrent layers, linear head, fused cross-entropy
    from tinygrad_rnn.lm import CharLM
    tg.manual_seed(1)
    m = CharLM(5, cell=cell, hidden=3, layers=2, embed_dim=2, dtype=F64)
    rng = np.random.default_rng(2)
    ids, targets = rng.integers(0, 5, (3, 2)), rng.integers(0, 5, (3, 2))
    params = tuple(m.parameters())
    assert tg.gradgradcheck(lambda *p: m.loss(ids, targets)[0], params, fast_mode=True)


def test_constants_an_op_was_given_stay_constants_under_create_graph(device):
    x = leaf(3, device=device)
    if device == "cpu":  # a NumPy scalar divisor (np.sum's result, a count): given to Div, not computed by it
        assert tg.gradgradcheck(lambda a: a * a / np.float64(2.0), (x,))
    # Cast's saved input dtype is the device's own (array-api-strict's is none NumPy knows)
    (g,) = autograd.grad((x.to(tg.float32) ** 2).sum(), x, create_graph=True)
    assert g.dtype is F64 and g.requires_grad
    np.testing.assert_allclose(g.numpy(), 2 * x.numpy(), rtol=1e-6)
