"""Optimizers: each against its update formula written out in NumPy for two steps (and
its variants), parameter groups, skipped parameters, state dict round trips that
resume bit for bit, and errors."""
import contextlib
import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import kernels, optim
from tinygrad_rnn.nn import StateDictError

F64 = tg.float64
RTOL = 1e-12  # float64 throughout; the only differences are the order of roundings


def _setup(device, n_steps=2, seed=0):
    """Two parameters, their start values, and a gradient per step for each."""
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    grads = [[rng.standard_normal(p.shape) for p in p0] for _ in range(n_steps)]
    params = [tg.nn.Parameter(tg.tensor(p.copy(), dtype=F64, device=device)) for p in p0]
    return params, p0, grads


def _run(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = tg.tensor(g, dtype=F64, device=p.device)
        opt.step()


def _check(params, expected):
    for p, e in zip(params, expected):
        np.testing.assert_allclose(p.numpy(), e, rtol=RTOL, atol=1e-14)


# ----------------------------------------------------------------------------- reference formulas
def ref_sgd(p, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    p, buf = p.copy(), None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
    return p


def ref_adagrad(p, grads, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    p, s = p.copy(), np.full(p.shape, initial_accumulator_value)
    for t, g in enumerate(grads, 1):
        g = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s = s + g * g
        p = p - clr * g / (np.sqrt(s) + eps)
    return p


def ref_rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    p, v, gbar, buf = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:
            gbar = alpha * gbar + (1 - alpha) * g
            avg = np.sqrt(v - gbar ** 2) + eps
        else:
            avg = np.sqrt(v) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


def ref_adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    p, m, v, vmax = p.copy(), np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vhat = (vmax if amsgrad else v) / (1 - b2 ** t)
        mhat = m / (1 - b1 ** t)
        p = p - lr * mhat / (np.sqrt(vhat) + eps)
    return p


CASES = [
    (optim.SGD, ref_sgd, dict(lr=0.1)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.9)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.9, dampening=0.3)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.9, nesterov=True)),
    (optim.SGD, ref_sgd, dict(lr=0.1, weight_decay=0.05)),
    (optim.SGD, ref_sgd, dict(lr=0.1, momentum=0.8, nesterov=True, weight_decay=0.05)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1, weight_decay=0.05, initial_accumulator_value=0.2, lr_decay=0.1)),
    (optim.Adagrad, ref_adagrad, dict(lr=0.1, eps=0.5)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, momentum=0.9)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, alpha=0.9, centered=True, weight_decay=0.05)),
    (optim.RMSprop, ref_rmsprop, dict(lr=0.01, momentum=0.5, centered=True, eps=1e-3)),
    (optim.Adam, ref_adam, dict(lr=0.01)),
    (optim.Adam, ref_adam, dict(lr=0.01, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.05)),
    (optim.Adam, ref_adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, lambda p, g, **k: ref_adam(p, g, decoupled=True, weight_decay=1e-2, **k), dict(lr=0.01)),
    (optim.AdamW, lambda p, g, **k: ref_adam(p, g, decoupled=True, **k), dict(lr=0.1, weight_decay=0.5, amsgrad=True)),
]
IDS = [f"{c.__name__}-" + "-".join(f"{k}={v}" for k, v in kw.items()) for c, _, kw in CASES]


@pytest.mark.parametrize("cls,ref,kw", CASES, ids=IDS)
def test_two_steps_against_formula(device, cls, ref, kw):
    params, p0, grads = _setup(device, n_steps=2)
    datas = [p.data for p in params]
    opt = cls(params, **kw)
    _run(opt, params, grads)
    _check(params, [ref(p0[i], [gs[i] for gs in grads], **kw) for i in range(2)])
    assert all(p.data is d for p, d in zip(params, datas))  # updated in place
    assert all(p.is_leaf and p.grad_fn is None for p in params)


ADAM_CASES = [(c, kw) for c, _, kw in CASES if c in (optim.Adam, optim.AdamW)]


@pytest.mark.parametrize("dtype", [tg.float64, tg.float32])
@pytest.mark.parametrize("cls,kw", ADAM_CASES, ids=[f"{c.__name__}-{kw}" for c, kw in ADAM_CASES])
def test_adam_kernel_equals_the_portable_update(dtype, cls, kw):
    # the CPU builds Adam as one elementwise kernel (where a compiler is); the portable form beside it
    if kernels.for_device(tg.get_device("cpu"), "optim", optim._KERNELS) is None:
        pytest.skip("no CPU kernels here (no C++ compiler)")
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((7, 33))
    grads = [rng.standard_normal(p0.shape) for _ in range(6)]
    res = []
    for off in (False, True):
        p = tg.nn.Parameter(tg.tensor(p0, dtype=dtype))
        opt = cls([p], **kw)
        with (tg.backend.kernels_off("cpu") if off else contextlib.nullcontext()):
            for g in grads:
                p.grad = tg.tensor(g, dtype=dtype)
                opt.step()
        res.append([p.numpy()] + [opt.state[p][k] for k in sorted(opt.state[p]) if k != "step"])
    tol = 1e-14 if dtype is tg.float64 else 2e-6
    for a, b in zip(*res):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adagrad, optim.RMSprop, optim.Adam, optim.AdamW])
def test_float32_step_keeps_dtype(device, cls):
    p = tg.nn.Parameter(tg.ones(3, device=device))
    opt = cls([p], lr=0.1)
    p.grad = tg.ones(3, device=device)
    opt.step()
    assert p.dtype is tg.float32 and np.all(p.numpy() < 1.0)
    for v in opt.state.get(p, {}).values():
        if not isinstance(v, int):
            assert tg.device(device).dtype_of(v) is tg.float32


def test_params_without_grad_are_skipped(device):
    params, p0, grads = _setup(device)
    opt = optim.Adam(params, lr=0.01)
    params[0].grad = tg.tensor(grads[0][0], device=device)
    opt.step()
    assert params[1] not in opt.state
    np.testing.assert_array_equal(params[1].numpy(), p0[1])
    _check(params[:1], [ref_adam(p0[0], [grads[0][0]], lr=0.01)])
    assert list(opt.state_dict()["state"]) == [0]


def test_grads_are_never_written(device):
    params, _, grads = _setup(device)
    for cls in (optim.SGD, optim.Adam, optim.RMSprop, optim.Adagrad):
        opt = cls(params, lr=0.1, **({"momentum": 0.9} if cls is optim.SGD else {}))
        gts = [tg.tensor(g, device=device) for g in grads[0]]
        for p, g in zip(params, gts):
            p.grad = g
        opt.step()
        opt.step()
        for g, ref in zip(gts, grads[0]):
            np.testing.assert_array_equal(g.numpy(), ref)


def test_param_groups_and_settable_lr(device):
    params, p0, grads = _setup(device)
    opt = optim.SGD([{"params": [params[0]]}, {"params": params[1], "lr": 0.5, "momentum": 0.9}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.1 and opt.param_groups[1]["momentum"] == 0.9
    _run(opt, params, grads[:1])
    opt.param_groups[0]["lr"] = 0.01
    _run(opt, params, grads[1:])
    g0 = [gs[0] for gs in grads]
    e0 = ref_sgd(ref_sgd(p0[0], g0[:1], lr=0.1), g0[1:], lr=0.01)
    e1 = ref_sgd(p0[1], [gs[1] for gs in grads], lr=0.5, momentum=0.9)
    _check(params, [e0, e1])


def test_zero_grad(device):
    params, _, grads = _setup(device)
    opt = optim.SGD(params, lr=0.1)
    for p, g in zip(params, grads[0]):
        p.grad = tg.tensor(g, device=device)
    old = params[0].grad
    opt.zero_grad(set_to_none=False)
    assert params[0].grad is not old and np.all(params[0].grad.numpy() == 0)
    np.testing.assert_array_equal(old.numpy(), grads[0][0])  # a new array, the old one untouched
    opt.zero_grad()
    assert all(p.grad is None for p in params)


def test_step_with_closure():
    w = tg.nn.Parameter(tg.tensor([2.0], dtype=F64))
    opt = optim.SGD([w], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (w * w).sum()
        loss.backward()
        return loss
    with tg.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 4.0 and w.numpy()[0] == 1.0


def test_adam_trains_linear_regression_on_device(device):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.3
    lin = tg.nn.Linear(3, 1, dtype=F64, device=device)
    opt = optim.Adam(lin.parameters(), lr=0.05)
    Xt, yt = tg.tensor(X, device=device), tg.tensor(y[:, None], device=device)
    for _ in range(300):
        opt.zero_grad()
        loss = ((lin(Xt) - yt) ** 2).mean()
        loss.backward()
        opt.step()
    assert loss.item() < 1e-3
    np.testing.assert_allclose(lin.weight.numpy()[0], [1.0, -2.0, 0.5], atol=0.03)


def test_repr():
    p = tg.nn.Parameter(tg.zeros(2))
    text = repr(optim.Adam([p]))
    assert text.startswith("Adam (\nParameter Group 0\n") and "    betas: (0.9, 0.999)" in text


# ----------------------------------------------------------------------------- state dicts
ROUND_TRIP = [(optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
              (optim.Adagrad, dict(lr=0.1, lr_decay=0.01)),
              (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
              (optim.Adam, dict(lr=0.01, amsgrad=True)),
              (optim.AdamW, dict(lr=0.01))]


def _resume_matches(device, cls, kw, transform):
    params, _, grads = _setup(device, n_steps=5)
    opt = cls(params, **kw)
    _run(opt, params, grads[:3])
    sd = transform(opt.state_dict())
    clones = [tg.nn.Parameter(tg.tensor(p.numpy(), device=device)) for p in params]
    fresh = cls(clones, **{k: (0.123 if k == "lr" else v) for k, v in kw.items()})
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == kw["lr"]  # hyperparameters restored too
    _run(opt, params, grads[3:])
    _run(fresh, clones, grads[3:])
    for a, b in zip(params, clones):
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # bit for bit
    return sd


@pytest.mark.parametrize("cls,kw", ROUND_TRIP, ids=[c.__name__ for c, _ in ROUND_TRIP])
def test_state_dict_round_trip_resumes_bit_identically(device, cls, kw):
    sd = _resume_matches(device, cls, kw, lambda sd: sd)
    assert set(sd) == {"state", "param_groups"}
    assert sd["param_groups"][0]["params"] == [0, 1]
    for st in sd["state"].values():
        for k, v in st.items():
            assert isinstance(v, int) if k == "step" else isinstance(v, np.ndarray)


@pytest.mark.parametrize("cls,kw", ROUND_TRIP, ids=[c.__name__ for c, _ in ROUND_TRIP])
def test_state_dict_through_npz_without_pickle(tmp_path, cls, kw):
    def via_npz(sd):
        path = tmp_path / "opt.npz"
        np.savez(path, **optim.flatten_state_dict(sd))
        with np.load(path, allow_pickle=False) as f:
            return dict(f)
    _resume_matches("cpu", cls, kw, via_npz)


def test_state_dict_is_a_copy_both_ways():
    params, _, grads = _setup("cpu", n_steps=2)
    opt = optim.Adam(params, lr=0.01)
    _run(opt, params, grads[:1])
    sd = opt.state_dict()
    saved = sd["state"][0]["exp_avg"].copy()
    _run(opt, params, grads[1:])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)  # later steps do not write into it
    opt.load_state_dict(sd)
    _run(opt, params, grads[1:])
    np.testing.assert_array_equal(sd["state"][0]["exp_avg"], saved)  # nor after loading it


def test_load_state_dict_errors():
    params, _, grads = _setup("cpu")
    opt = optim.Adam(params, lr=0.01)
    _run(opt, params, grads[:1])
    sd = opt.state_dict()

    other = optim.Adam([params[0]], lr=0.01)
    with pytest.raises(StateDictError, match=r"load_state_dict for Adam: param group 0 has 2 parameter\(s\) "
                                             r"in the state dict but 1 here"):
        other.load_state_dict(sd)
    two = optim.Adam([{"params": [params[0]]}, {"params": [params[1]]}])
    with pytest.raises(StateDictError, match=r"the state dict has 1 param group\(s\) but this optimizer has 2"):
        two.load_state_dict(sd)
    wrong = [tg.nn.Parameter(tg.zeros(4, 3, dtype=F64)), params[1]]
    with pytest.raises(StateDictError, match=r"state 'exp_avg' of parameter 0 has shape \(3, 4\) but the "
                                             r"parameter has shape \(4, 3\)"):
        optim.Adam(wrong).load_state_dict(sd)
    with pytest.raises(StateDictError, match=r"load_state_dict for SGD: param group 0 lacks hyperparameter\(s\) "
                                             r"\['dampening', 'momentum', 'nesterov'\]; param group 0 has unexpected "
                                             r"hyperparameter\(s\) \['amsgrad', 'betas', 'eps'\]"):
        optim.SGD(params, lr=0.1).load_state_dict(sd)
    bad = {"state": {0: {"step": 1}}, "param_groups": sd["param_groups"]}
    with pytest.raises(StateDictError, match=r"state of parameter 0 has keys \['step'\] but Adam expects "
                                             r"\['exp_avg', 'exp_avg_sq', 'step'\]"):
        optim.Adam(params).load_state_dict(bad)
    with pytest.raises(StateDictError, match="state for parameter 7, which no param group lists"):
        optim.Adam(params).load_state_dict({"state": {7: sd["state"][0]}, "param_groups": sd["param_groups"]})
    with pytest.raises(StateDictError, match="expected the keys 'state' and 'param_groups'"):
        optim.Adam(params).load_state_dict({"weight": np.zeros(3)})
    fresh = optim.Adam(params, lr=0.5)
    with pytest.raises(StateDictError):
        fresh.load_state_dict(dict(sd, param_groups=[dict(sd["param_groups"][0], betas=(0.9, 1.5))]))
    assert fresh.param_groups[0]["lr"] == 0.5 and not fresh.state  # nothing changed by a failed load


# ----------------------------------------------------------------------------- constructor errors
def test_constructor_errors():
    p = tg.nn.Parameter(tg.zeros(2))
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"Adam: params must be an iterable of Tensors or of dicts.*got Linear"):
        optim.Adam(tg.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="Adam: params must be an iterable.*got Parameter"):
        optim.Adam(p)
    with pytest.raises(TypeError, match=r"SGD: parameter 1 of param group 0 is a ndarray, not a Tensor/Parameter"):
        optim.SGD([p, np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match=r"Adam: parameter 0 of param group 0 \(shape \(2,\)\) is not a leaf: it "
                                         r"was computed by Mul"):
        optim.Adam([p * 2])
    with pytest.raises(tg.DTypeError, match="Adagrad: parameter 0 of param group 0 is int64"):
        optim.Adagrad([tg.zeros(2, dtype=tg.int64)])
    with pytest.raises(ValueError, match="param group 0 lists the same parameter more than once"):
        optim.SGD([p, p], lr=0.1)
    with pytest.raises(ValueError, match="already in another group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)
    with pytest.raises(TypeError, match="not a set"):
        optim.SGD([{"params": {p}}], lr=0.1)
    with pytest.raises(TypeError, match="mixes Tensors and dicts"):
        optim.SGD([p, {"params": [p]}], lr=0.1)
    with pytest.raises(ValueError, match="SGD: invalid lr -0.1"):
        optim.SGD([p], lr=-0.1)
    with pytest.raises(ValueError, match="RMSprop: invalid momentum -1"):
        optim.RMSprop([p], momentum=-1)
    with pytest.raises(ValueError, match=r"Adam: invalid betas \(0.9, 1.0\)"):
        optim.Adam([p], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="Nesterov momentum requires momentum > 0 and dampening = 0"):
        optim.SGD([p], lr=0.1, nesterov=True)


def test_step_rejects_mismatched_grad():
    p = tg.nn.Parameter(tg.zeros(2))
    opt = optim.SGD([p], lr=0.1)
    p.grad = tg.zeros(3)
    with pytest.raises(ValueError, match=r"SGD: parameter of shape \(2,\) on cpu has a gradient of shape \(3,\)"):
        opt.step()


def test_exported_as_tg_optim():
    assert tg.optim is optim and math.isclose(optim.AdamW([tg.nn.Parameter(tg.zeros(1))]).defaults["weight_decay"],
                                              1e-2)
