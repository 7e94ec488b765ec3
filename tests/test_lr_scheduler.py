"""optim.lr_scheduler: each schedule against its formula, state round trips, the errors, and
(where PyTorch happens to be importable, never required) PyTorch's own schedulers."""
import math

import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import optim
from tinygrad_rnn.optim import lr_scheduler as L


def opt(lr=0.5, groups=1):
    ps = [{"params": [tg.zeros(2, requires_grad=True)], "lr": lr * (k + 1)} for k in range(groups)]
    return optim.SGD(ps, lr=lr)


def trace(o, s, n):
    out = [s.get_last_lr()]
    for _ in range(n):
        o.step()
        s.step()
        out.append(s.get_last_lr())
        assert [g["lr"] for g in o.param_groups] == out[-1]  # the optimizer really uses them
    return out


FORMULAS = {
    "StepLR": (lambda o: L.StepLR(o, step_size=7, gamma=0.5), lambda b, t: b * 0.5 ** (t // 7)),
    "ExponentialLR": (lambda o: L.ExponentialLR(o, gamma=0.9), lambda b, t: b * 0.9 ** t),
    "CosineAnnealingLR": (lambda o: L.CosineAnnealingLR(o, T_max=30, eta_min=0.01),
                          lambda b, t: 0.01 + (b - 0.01) * (1 + math.cos(math.pi * t / 30)) / 2),
    "LinearLR": (lambda o: L.LinearLR(o, start_factor=0.2, end_factor=1.0, total_iters=10),
                 lambda b, t: b * (0.2 + 0.8 * min(t, 10) / 10)),
    "LambdaLR": (lambda o: L.LambdaLR(o, lambda e: 1 / (1 + e)), lambda b, t: b / (1 + t)),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_schedule_follows_its_formula_on_every_group(name):
    make, formula = FORMULAS[name]
    o = opt(groups=2)
    got = trace(o, make(o), 30)
    for t, lrs in enumerate(got):
        for base, lr in zip((0.5, 1.0), lrs):
            assert lr == pytest.approx(formula(base, t), rel=1e-12, abs=1e-15), (name, t)


def test_one_cycle_formula():
    o = opt()
    s = L.OneCycleLR(o, max_lr=1.0, total_steps=40, pct_start=0.25)
    got = [lrs[0] for lrs in trace(o, s, 39)]
    lo, hi, end = 1.0 / 25, 1.0, 1.0 / 25 / 1e4
    up = 0.25 * 40 - 1
    for t, lr in enumerate(got):
        if t <= up:
            want = hi + (lo - hi) / 2 * (math.cos(math.pi * t / up) + 1)
        else:
            want = end + (hi - end) / 2 * (math.cos(math.pi * (t - up) / (39 - up)) + 1)
        assert lr == pytest.approx(want, rel=1e-12), t
    assert got[0] == pytest.approx(lo) and max(got) == pytest.approx(hi) and got[-1] == pytest.approx(end)
    with pytest.raises(ValueError, match=r"OneCycleLR: stepped 41 times, past total_steps = 40"):
        s.step()
        s.step()


def test_sequential_warmup_then_cosine():
    o = opt()
    s = L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=5), L.CosineAnnealingLR(o, T_max=20)], milestones=[5])
    got = [lrs[0] for lrs in trace(o, s, 24)]
    for t, lr in enumerate(got):
        want = 0.5 * (0.1 + 0.9 * t / 5) if t < 5 else 0.5 * (1 + math.cos(math.pi * (t - 5) / 20)) / 2
        assert lr == pytest.approx(want, rel=1e-12, abs=1e-15), t


@pytest.mark.parametrize("make", [
    lambda o: L.StepLR(o, 3, 0.5), lambda o: L.CosineAnnealingLR(o, 25), lambda o: L.OneCycleLR(o, 2.0, 30),
    lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.5, total_iters=4), L.ExponentialLR(o, 0.8)], [4]),
    lambda o: L.LambdaLR(o, lambda e: 0.95 ** e)], ids=["step", "cosine", "onecycle", "sequential", "lambda"])
def test_state_round_trip_continues_exactly(make):
    o1 = opt()
    s1 = make(o1)
    trace(o1, s1, 9)
    sd = s1.state_dict()
    assert "optimizer" not in sd
    o2 = opt()
    o2.load_state_dict(o1.state_dict())
    s2 = make(o2)
    s2.load_state_dict(sd)
    assert trace(o1, s1, 15) == trace(o2, s2, 15)


def test_errors():
    o = opt()
    with pytest.raises(ValueError, match=r"ExponentialLR: the schedule would set the learning rate of param group 0 "
                                         r"to -0.5 at step 1; a rate must be finite and non-negative"):
        L.ExponentialLR(o, gamma=-1.0).step()
    with pytest.raises(ValueError, match=r"LambdaLR: the schedule would set the learning rate .* to inf"):
        L.LambdaLR(opt(), lambda e: math.inf)
    with pytest.raises(ValueError, match=r"SequentialLR: 2 schedulers need 1 milestone\(s\).*got 2"):
        o = opt()
        L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(o, 3)], milestones=[3, 5])
    with pytest.raises(ValueError, match=r"SequentialLR: milestones must be increasing positive integers"):
        o = opt()
        L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(o, 3), L.StepLR(o, 4)], milestones=[5, 3])
    with pytest.raises(ValueError, match=r"SequentialLR: scheduler 1 \(StepLR\) steps another optimizer"):
        o = opt()
        L.SequentialLR(o, [L.StepLR(o, 2), L.StepLR(opt(), 3)], milestones=[3])
    with pytest.raises(ValueError, match=r"StepLR: step_size must be a positive integer, got 0"):
        L.StepLR(opt(), 0)
    with pytest.raises(TypeError, match=r"CosineAnnealingLR: the first argument must be an optimizer, got Tensor"):
        L.CosineAnnealingLR(tg.zeros(2), 10)
    with pytest.raises(ValueError, match=r"LinearLR: start_factor must be in \(0, 1\]"):
        L.LinearLR(opt(), start_factor=0.0)
    with pytest.raises(ValueError, match=r"OneCycleLR: give total_steps, or epochs and steps_per_epoch"):
        L.OneCycleLR(opt(), 1.0)
    with pytest.raises(KeyError, match=r"StepLR: last_epoch=4 resumes a schedule, but param group\(s\) \[0\] "
                                       r"have no 'initial_lr'"):
        L.StepLR(opt(), 2, last_epoch=4)


def test_optimizers_take_parameters_not_modules():
    with pytest.raises(TypeError, match=r"Adam: params must be an iterable of Tensors or of dicts"):
        optim.Adam(tg.nn.Linear(2, 2), lr=1e-3)


def test_against_pytorch_when_importable():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (an optional comparison)")
    TL = torch.optim.lr_scheduler
    cases = [(lambda o: L.StepLR(o, 7, 0.5), lambda o: TL.StepLR(o, 7, 0.5)),
             (lambda o: L.CosineAnnealingLR(o, 30, 0.01), lambda o: TL.CosineAnnealingLR(o, 30, 0.01)),
             (lambda o: L.LinearLR(o, 0.2, 1.0, 10), lambda o: TL.LinearLR(o, 0.2, 1.0, 10)),
             (lambda o: L.OneCycleLR(o, 1.0, total_steps=31, three_phase=True),
              lambda o: TL.OneCycleLR(o, 1.0, total_steps=31, three_phase=True)),
             (lambda o: L.SequentialLR(o, [L.LinearLR(o, 0.1, total_iters=5), L.ExponentialLR(o, 0.9)], [5]),
              lambda o: TL.SequentialLR(o, [TL.LinearLR(o, 0.1, total_iters=5), TL.ExponentialLR(o, 0.9)], [5]))]
    for ours, theirs in cases:
        o = opt()
        s = ours(o)
        w = torch.zeros(2, requires_grad=True)
        to = torch.optim.SGD([w], lr=0.5)
        ts = theirs(to)
        for _ in range(30):
            assert s.get_last_lr()[0] == pytest.approx(ts.get_last_lr()[0], rel=1e-12, abs=1e-15)
            o.step()
            s.step()
            to.step()
            ts.step()
