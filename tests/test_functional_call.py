"""tg.func.functional_call: the module run with given tensors in place of its parameters and
buffers (nested names, partial dicts, tuples of dicts, tied weights, strict), its own tensors
put back afterwards (after an exception too), and gradients that reach the given tensors: equal
to the module's normal .grad, checked against finite differences, per example through
tg.func.grad, and in a functional training step."""
import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.func import functional_call

F64 = tg.float64


class Net(nn.Module):
    """An LSTM and a linear head: nested names ('lstm.weight_ih_l0', 'head.weight') and a buffer."""

    def __init__(self, device="cpu"):
        super().__init__()
        self.lstm = nn.LSTM(3, 4, dtype=F64, device=device)
        self.head = nn.Linear(4, 2, dtype=F64, device=device)
        self.register_buffer("scale", tg.full((2,), 2.0, dtype=F64, device=device))

    def forward(self, x, h=None, *, shift=0.0):
        out, _ = self.lstm(x, h)
        return self.head(out) * self.scale + shift


def _copies(module):
    return {k: p.detach().to(F64) * 1.0 for k, p in module.named_parameters()}


def _leaves(d):
    return {k: tg.tensor(v.numpy(), dtype=v.dtype, device=v.device, requires_grad=True) for k, v in d.items()}


def _state(module):
    return [(k, id(p)) for k, p in module.named_parameters()] + [(k, id(b)) for k, b in module.named_buffers()]


def test_gradients_reach_the_given_tensors_equal_to_the_modules_own(device):
    tg.manual_seed(3)
    net = Net(device)
    x = tg.randn(5, 2, 3, dtype=F64, device=device)
    before = _state(net)
    params = _leaves(_copies(net))
    out = functional_call(net, params, (x,))
    (out ** 2).sum().backward()
    assert _state(net) == before and all(p.grad is None for p in net.parameters())
    ref = net(x)
    (ref ** 2).sum().backward()
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=0)
    for k, p in net.named_parameters():
        np.testing.assert_allclose(params[k].grad.numpy(), p.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_substituted_values_are_the_ones_used(device):
    net = Net(device)
    x = tg.randn(2, 1, 3, dtype=F64, device=device)
    zeros = {"head.weight": tg.zeros(2, 4, dtype=F64, device=device),
             "head.bias": tg.full((2,), 0.5, dtype=F64, device=device)}
    np.testing.assert_array_equal(functional_call(net, zeros, x).numpy(), np.full((2, 1, 2), 1.0))
    # a buffer, a tuple of dicts, keyword arguments
    out = functional_call(net, (zeros, {"scale": tg.full((2,), 3.0, dtype=F64, device=device)}), (x,),
                          {"shift": 1.0})
    np.testing.assert_array_equal(out.numpy(), np.full((2, 1, 2), 2.5))
    assert net.scale.numpy().tolist() == [2.0, 2.0]


def test_gradcheck_through_functional_call():
    tg.manual_seed(0)
    net = Net()
    x = tg.randn(3, 2, 3, dtype=F64)
    names = ["lstm.weight_hh_l0", "head.weight", "head.bias"]
    ws = [getattr_dotted(net, n).detach() * 1.0 for n in names]
    for w in ws:
        w.requires_grad_()
    assert tg.gradcheck(lambda *w: functional_call(net, dict(zip(names, w)), (x,)), ws)


def getattr_dotted(m, name):
    for part in name.split("."):
        m = getattr(m, part)
    return m


def test_originals_restored_after_an_exception():
    net = Net()
    before = _state(net)
    names = [k for k, _ in net.named_parameters()]
    with pytest.raises(tg.ShapeError):
        functional_call(net, _copies(net), (tg.randn(2, 1, 7, dtype=F64),))  # wrong input size
    assert _state(net) == before and [k for k, _ in net.named_parameters()] == names

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(tg.ones(2))

        def forward(self):
            raise RuntimeError("boom")
    b = Boom()
    w = b.w
    with pytest.raises(RuntimeError, match="boom"):
        functional_call(b, {"w": tg.zeros(2), "extra": tg.zeros(1)}, ())
    assert b.w is w and not hasattr(b, "extra")


def test_per_example_gradients_with_func_grad():
    tg.manual_seed(1)
    lin = nn.Linear(3, 1, dtype=F64)
    X, Y = tg.randn(4, 3, dtype=F64), tg.randn(4, 1, dtype=F64)

    def loss(w, b, x, y):
        pred = functional_call(lin, {"weight": w, "bias": b}, (x.reshape(1, 3),))
        return ((pred - y.reshape(1, 1)) ** 2).sum()
    g = tg.func.grad(loss, argnums=(0, 1))
    w, b = lin.weight.detach(), lin.bias.detach()
    for i in range(4):
        gw, gb = g(w, b, X[i], Y[i])
        lin.zero_grad()
        ((lin(X[i:i + 1]) - Y[i:i + 1]) ** 2).sum().backward()
        np.testing.assert_allclose(gw.numpy(), lin.weight.grad.numpy(), rtol=1e-12)
        np.testing.assert_allclose(gb.numpy(), lin.bias.grad.numpy(), rtol=1e-12)
    assert lin.weight.grad is not None  # the module's own backward above, not the transform


def test_functional_training_step_matches_sgd():
    tg.manual_seed(2)
    net = Net()
    x, target = tg.randn(4, 2, 3, dtype=F64), tg.randn(4, 2, 2, dtype=F64)
    params = _leaves(_copies(net))
    names = list(params)

    def loss(*ws):
        return ((functional_call(net, dict(zip(names, ws)), (x,)) - target) ** 2).mean()
    grads = tg.func.grad(loss, argnums=tuple(range(len(names))))(*params.values())
    new = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
    opt = tg.optim.SGD(net.parameters(), lr=0.1)
    ((net(x) - target) ** 2).mean().backward()
    opt.step()
    for k, p in net.named_parameters():
        np.testing.assert_allclose(new[k].numpy(), p.numpy(), rtol=1e-12, atol=1e-15)


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 3, dtype=F64)
        self.out = nn.Linear(3, 5, bias=False, dtype=F64)
        self.out.weight = self.emb.weight  # tied

    def forward(self, i):
        return self.out(self.emb(i))


def test_tied_weights():
    m = Tied()
    assert [k for k, _ in m.named_parameters()] == ["emb.weight"]
    i = tg.tensor([0, 2], dtype=tg.int64)
    w = tg.randn(5, 3, dtype=F64, requires_grad=True)
    out = functional_call(m, {"emb.weight": w}, (i,))
    wn = w.numpy()
    np.testing.assert_allclose(out.numpy(), wn[[0, 2]] @ wn.T, rtol=1e-13)
    assert m.out.weight is m.emb.weight
    loose = functional_call(m, {"emb.weight": w}, (i,), tie_weights=False)
    np.testing.assert_allclose(loose.numpy(), wn[[0, 2]] @ m.emb.weight.numpy().T, rtol=1e-13)
    assert functional_call(m, {"emb.weight": w, "out.weight": w}, (i,)).shape == (2, 5)
    with pytest.raises(ValueError, match="'emb.weight' and 'out.weight' name one tensor of the module "
                                         r"\(tied\) but were given two different tensors.*tie_weights=False"):
        functional_call(m, {"emb.weight": w, "out.weight": w * 1.0}, (i,))
    both = functional_call(m, {"emb.weight": w, "out.weight": w * 0.0}, (i,), tie_weights=False)
    np.testing.assert_array_equal(both.numpy(), np.zeros((2, 5)))


def test_strict_and_errors():
    net = Net()
    full = _copies(net)
    full["scale"] = net.scale
    x = tg.randn(1, 1, 3, dtype=F64)
    functional_call(net, full, (x,), strict=True)
    partial = {k: v for k, v in full.items() if k != "head.bias"}
    with pytest.raises(tg.nn.StateDictError, match=r"functional_call for Net with strict=True: missing 'head.bias'; "
                                                  r"unexpected 'head.nope'; unexpected 'rnn.weight'"):
        functional_call(net, {**partial, "head.nope": tg.ones(1), "rnn.weight": tg.ones(1)}, (x,), strict=True)
    with pytest.raises(AttributeError, match="Net has no submodule 'rnn' \\(for 'rnn.weight'\\)"):
        functional_call(net, {"rnn.weight": tg.ones(1)}, (x,))
    with pytest.raises(TypeError, match=r"'head.bias' is given a ndarray; give Tensors"):
        functional_call(net, {"head.bias": np.zeros(2)}, (x,))
    with pytest.raises(TypeError, match="expected a dict of tensors by name"):
        functional_call(net, [("head.bias", tg.zeros(2))], (x,))
    with pytest.raises(ValueError, match="'head.bias' is given in more than one dict"):
        functional_call(net, ({"head.bias": tg.zeros(2)}, {"head.bias": tg.zeros(2)}), (x,))
    assert [k for k, _ in net.named_parameters()] == list(_copies(net))
