"""gradcheck itself: it passes on correct gradients, and catches wrong ones, loudly."""
import re

import numpy as np
import pytest

import tinygrad_rnn as tg


def T(a, device="cpu", requires_grad=True):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64, device=device,
                     requires_grad=requires_grad)


# ---------------------------------------------------------------------------- user ops, in the documented style
class Hypot(tg.Function):
    """sqrt(a^2 + b^2), written the way the docs tell users to write an op."""

    @staticmethod
    def forward(ctx, a, b):
        out = ctx.xp.sqrt(a * a + b * b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved_tensors
        na, nb = ctx.needs_input_grad
        return (grad * a / out if na else None), (grad * b / out if nb else None)


class SinCos(tg.Function):
    """Two outputs from one node."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return ctx.xp.sin(a), ctx.xp.cos(a)

    @staticmethod
    def backward(ctx, g_sin, g_cos):
        a = ctx.saved_tensors[0]
        return g_sin * ctx.xp.cos(a) - g_cos * ctx.xp.sin(a)


class WrongCube(tg.Function):
    """x**3 with a deliberately wrong backward: 2x^2 instead of 3x^2."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return a * a * a

    @staticmethod
    def backward(ctx, grad):
        a = ctx.saved_tensors[0]
        return grad * 2.0 * a * a


class WrongSecondInput(tg.Function):
    """a * b with the gradient of b off by a sign."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        return grad * b, -grad * a


class Scaled(tg.Function):
    """a * k for a Python-number k passed to apply (no gradient for it)."""

    @staticmethod
    def forward(ctx, a, k):
        ctx.k = k
        return a * k

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.k, None


# ---------------------------------------------------------------------------- passing
@pytest.mark.parametrize("fast_mode", [False, True])
def test_passes_on_correct_builtin_ops(device, fast_mode):
    rng = np.random.default_rng(0)
    a = T(rng.standard_normal((3, 4)), device)
    b = T(rng.standard_normal((4,)), device)
    assert tg.gradcheck(lambda x, y: (x * y).tanh() @ y, [a, b], fast_mode=fast_mode)
    assert tg.gradcheck(lambda x: x.softmax(-1), a, fast_mode=fast_mode)  # a single Tensor is fine too
    assert tg.gradcheck(lambda x: x.split(2, axis=1), [a], fast_mode=fast_mode)  # several outputs


@pytest.mark.parametrize("fast_mode", [False, True])
def test_passes_on_user_defined_functions(device, fast_mode):
    a = T([[0.5, -1.0], [2.0, 0.3]], device)
    b = T([1.5, -0.7], device)  # broadcast: the engine sums the gradient back to (2,)
    assert tg.gradcheck(Hypot.apply, [a, b], fast_mode=fast_mode)
    assert tg.gradcheck(SinCos.apply, [a], fast_mode=fast_mode)
    assert tg.gradcheck(lambda x: Scaled.apply(x, 3.0), [a], fast_mode=fast_mode)


def test_only_inputs_that_require_grad_are_checked():
    a = T([0.5, 1.0])
    c = T([2.0, 3.0], requires_grad=False)
    # a wrong gradient for c would not matter: c is a constant here
    assert tg.gradcheck(WrongSecondInput.apply, [a, c])
    assert tg.gradcheck(lambda x, k: x * k, [a, 2.5])  # non-Tensors pass through


def test_needs_input_grad_reaches_backward():
    seen = []

    class Probe(tg.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, grad):
            seen.append(ctx.needs_input_grad)
            return grad, grad

    a, b = T([1.0]), T([2.0], requires_grad=False)
    Probe.apply(a, b).backward()
    assert seen == [(True, False)]


def test_leaves_grad_is_left_as_it_was():
    a = T([0.5, 1.0])
    a.grad = T([7.0, 7.0], requires_grad=False)
    tg.gradcheck(lambda x: x * x, [a])
    np.testing.assert_array_equal(a.grad.numpy(), [7.0, 7.0])


def test_large_input_fast_mode(device):
    x = T(np.random.default_rng(1).standard_normal((40, 50)), device)
    w = T(np.random.default_rng(2).standard_normal((50, 30)) * 0.1, device)
    assert tg.gradcheck(lambda a, b: (a @ b).tanh().sum(axis=0), [x, w], fast_mode=True)


# ---------------------------------------------------------------------------- failing
def test_full_mode_catches_a_wrong_backward(device):
    x = T([[1.0, -2.0], [0.5, 3.0]], device)
    with pytest.raises(tg.GradcheckError) as info:
        tg.gradcheck(WrongCube.apply, [x])
    msg = str(info.value)
    assert "input 0" in msg and "(shape (2, 2))" in msg
    assert "4 of 4 elements differ" in msg
    assert "element (1, 1)" in msg  # the worst one, |3x^2 - 2x^2| largest at x = 3, is listed
    assert "analytic" in msg and "numeric" in msg
    # the values: v * 2x^2 against v * 3x^2 for gradcheck's upstream gradient v (seed 0)
    v = np.random.default_rng(0).standard_normal((2, 2))
    m = re.search(r"element \(1, 1\): analytic (\S+), numeric (\S+?)[;| ]", msg)
    assert float(m.group(1)) == pytest.approx(v[1, 1] * 2 * 9, rel=1e-9)
    assert float(m.group(2)) == pytest.approx(v[1, 1] * 3 * 9, rel=1e-6)


def test_full_mode_names_the_wrong_input(device):
    a, b = T([0.5, 1.0], device), T([2.0, 3.0], device)
    with pytest.raises(tg.GradcheckError, match=r"input 1 \(shape \(2,\)\): 2 of 2 elements differ; element \(\d,\): "
                                                r"analytic -?[\d.]+, numeric -?[\d.]+"):
        tg.gradcheck(WrongSecondInput.apply, [a, b])


def test_fast_mode_catches_a_wrong_backward(device):
    x = T([[1.0, -2.0], [0.5, 3.0]], device)
    with pytest.raises(tg.GradcheckError, match=r"directional derivative .*analytic -?[\d.]+.*numeric -?[\d.]+"):
        tg.gradcheck(WrongCube.apply, [x], fast_mode=True)
    a, b = T([0.5, 1.0], device), T([2.0, 3.0], device)
    with pytest.raises(tg.GradcheckError, match=r"analytic .* numeric"):
        tg.gradcheck(WrongSecondInput.apply, [a, b], fast_mode=True)


@pytest.mark.parametrize("fast_mode", [False, True])
def test_raise_exception_false_returns_false(fast_mode):
    x = T([1.0, 2.0])
    assert tg.gradcheck(WrongCube.apply, [x], raise_exception=False, fast_mode=fast_mode) is False
    assert tg.gradcheck(lambda t: t * t * t, [x], raise_exception=False, fast_mode=fast_mode) is True


def test_a_gradient_that_is_slightly_off_is_caught():
    # a 1% error is far outside rtol=1e-3: the check is not so loose that it lets this through
    class OffByOnePercent(tg.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return ctx.xp.exp(a)

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.xp.exp(ctx.saved_tensors[0]) * 1.01

    assert not tg.gradcheck(OffByOnePercent.apply, [T([0.5, 1.0, 1.5])], raise_exception=False)


def test_a_missing_gradient_is_caught():
    class Forgets(tg.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a + b

        @staticmethod
        def backward(ctx, grad):
            return grad, None  # b's gradient dropped

    with pytest.raises(tg.GradcheckError, match="input 1"):
        tg.gradcheck(Forgets.apply, [T([1.0]), T([2.0])])


# ---------------------------------------------------------------------------- what it refuses
def test_rejects_float32_inputs():
    x = tg.tensor([1.0, 2.0], requires_grad=True)  # the default float32
    with pytest.raises(TypeError, match=r"gradcheck: input 0 is float32; numerical checks need float64"):
        tg.gradcheck(lambda t: t * t, [x])


def test_rejects_non_leaf_inputs():
    x = T([1.0]) * 2.0
    with pytest.raises(ValueError, match=r"gradcheck: input 0 is not a leaf"):
        tg.gradcheck(lambda t: t * t, [x])


def test_needs_something_to_check():
    with pytest.raises(ValueError, match=r"gradcheck: no input requires grad"):
        tg.gradcheck(lambda t: t * t, [T([1.0], requires_grad=False)])


def test_outputs_must_be_tensors():
    with pytest.raises(TypeError, match=r"gradcheck: output 0 of fn is a float"):
        tg.gradcheck(lambda t: 1.0, [T([1.0])])


# ---------------------------------------------------------------------------- gradgradcheck: trust first
# Under create_graph the same backward rules run on Tensors (tensor_xp's namespace) or as an
# op's composed form; a wrong mapping there makes a wrong first derivative whose numerical and
# analytic derivatives still agree. gradgradcheck compares it with the plain one first.
def planted_exp(monkeypatch, factor=1.01):
    from tinygrad_rnn import tensor_xp
    monkeypatch.setattr(tensor_xp.TensorNamespace, "exp", staticmethod(lambda x: x.exp() * factor))


@pytest.mark.parametrize("fast_mode", [False, True])
def test_gradgradcheck_names_the_op_behind_a_wrong_namespace_mapping(monkeypatch, fast_mode):
    x = T(np.random.default_rng(3).standard_normal((3, 4)))
    lse = lambda a: a.logsumexp(axis=1)
    assert tg.gradgradcheck(lse, [x], fast_mode=fast_mode)
    planted_exp(monkeypatch)
    with pytest.raises(tg.GradcheckError, match=r"gradgradcheck \(first derivatives, create_graph=True against the "
                                                r"plain backward\): input 0 \(shape \(3, 4\)\): 12 of 12 elements "
                                                r"differ.*on Tensors than on arrays: LogSumExp: input 0"):
        tg.gradgradcheck(lse, [x], fast_mode=fast_mode)
    assert tg.gradgradcheck(lse, [x], fast_mode=fast_mode, raise_exception=False) is False
    # with the plant, the second-order check alone passes: the blind spot this comparison closes
    def first(a):
        with tg.enable_grad():  # gradcheck's numerical side runs fn under no_grad
            return tg.autograd.grad(lse(a), a, grad_outputs=T(np.ones(3), requires_grad=False), create_graph=True)

    assert tg.gradcheck(first, [x], fast_mode=fast_mode)


def test_create_graph_disagreements_lists_each_op_that_uses_the_wrong_mapping(monkeypatch):
    from tinygrad_rnn.gradcheck import create_graph_disagreements
    x = T(np.random.default_rng(4).standard_normal((2, 3)))
    fn = lambda a: (a.log_softmax(-1) * a.tanh()).logsumexp(axis=0)
    assert create_graph_disagreements(fn, [x]) == []
    planted_exp(monkeypatch, 1.1)
    found = create_graph_disagreements(fn, [x])
    # LogSoftmax's and LogSumExp's rules call xp.exp; Tanh's, Mul's do not
    assert [f.split(":")[0] for f in found] == ["LogSumExp", "LogSoftmax"]
    assert re.match(r"LogSumExp: input 0 \(shape \(2, 3\)\): on Tensors -?[\d.]+, on arrays -?[\d.]+ at element "
                    r"\(\d, \d\) \(\d of 6 elements differ\)", found[0])


class FusedSquare(tg.Function):
    """x^2 with a fused first-order rule and a composed form for create_graph."""

    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(2.0 * a)  # the derivative, computed in forward
        return a * a

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.saved_tensors[0]

    @staticmethod
    def composed(ctx, a):
        return a * a


class WrongComposedSquare(FusedSquare):
    @staticmethod
    def composed(ctx, a):
        return a * a * 1.5  # not the op: the first derivative under create_graph is 3x, not 2x


def test_gradgradcheck_compares_an_ops_composed_form_with_its_fused_rule():
    x = T([0.5, -1.0, 2.0])
    assert tg.gradgradcheck(FusedSquare.apply, [x])
    with pytest.raises(tg.GradcheckError, match=r"first derivatives.*WrongComposedSquare: input 0 \(shape \(3,\)\)"):
        tg.gradgradcheck(WrongComposedSquare.apply, [x])
