"""nn.init: statistics of each initialiser, PyTorch's fans and gains, orthogonality,
reproducibility under tg.manual_seed, and errors."""
import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.nn import init


def _t(shape, device="cpu", dtype=tg.float64):
    return tg.zeros(*shape, dtype=dtype, device=device)


# n = 200k samples: the sample std of U or N is within 1% of the truth with huge margin
# (its relative standard error is ~0.2%), so these tolerances are not loose to pass.
BIG = (400, 500)


@pytest.mark.parametrize("dtype", [tg.float32, tg.float64])
def test_uniform_bounds_mean_std(device, dtype):
    t = _t(BIG, device, dtype)
    out = init.uniform_(t, -2.0, 3.0)
    assert out is t and t.dtype is dtype and t.device is tg.device(device)
    x = t.numpy()
    assert x.min() >= -2.0 and x.max() <= 3.0
    assert abs(x.mean() - 0.5) < 0.02
    assert x.std() == pytest.approx(5 / math.sqrt(12), rel=0.01)


def test_normal_mean_std(device):
    t = init.normal_(_t(BIG, device), mean=1.5, std=0.3)
    x = t.numpy()
    assert abs(x.mean() - 1.5) < 0.003
    assert x.std() == pytest.approx(0.3, rel=0.01)


def test_constant_zeros_ones_eye(device):
    t = _t((3, 4), device)
    assert np.all(init.constant_(t, 2.5).numpy() == 2.5)
    assert np.all(init.zeros_(t).numpy() == 0)
    assert np.all(init.ones_(t).numpy() == 1)
    np.testing.assert_array_equal(init.eye_(t).numpy(), np.eye(3, 4))
    i = tg.zeros(2, 2, dtype=tg.int64, device=device)
    assert np.all(init.constant_(i, 7).numpy() == 7) and i.dtype is tg.int64


def test_calculate_gain_matches_pytorch_table():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")


def test_fans_follow_pytorch_convention():
    assert init._calculate_fan_in_and_fan_out(_t((7, 3))) == (3, 7)
    assert init._calculate_fan_in_and_fan_out(_t((8, 4, 3, 5))) == (4 * 15, 8 * 15)
    with pytest.raises(tg.ShapeError, match=r"at least 2 dimensions, got shape \(5,\)"):
        init.xavier_uniform_(_t((5,)))


def test_xavier_uniform_and_normal(device):
    fan_in, fan_out = 500, 400
    a = math.sqrt(6 / (fan_in + fan_out))
    x = init.xavier_uniform_(_t(BIG, device), gain=2.0).numpy()
    assert np.abs(x).max() <= 2.0 * a
    assert x.std() == pytest.approx(2.0 * a / math.sqrt(3), rel=0.01)
    y = init.xavier_normal_(_t(BIG, device), gain=0.5).numpy()
    assert y.std() == pytest.approx(0.5 * math.sqrt(2 / (fan_in + fan_out)), rel=0.01)


@pytest.mark.parametrize("mode,fan", [("fan_in", 500), ("fan_out", 400)])
def test_kaiming_uniform_and_normal(device, mode, fan):
    bound = math.sqrt(2) * math.sqrt(3 / fan)  # relu gain
    x = init.kaiming_uniform_(_t(BIG, device), mode=mode, nonlinearity="relu").numpy()
    assert np.abs(x).max() <= bound
    assert x.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    y = init.kaiming_normal_(_t(BIG, device), mode=mode, nonlinearity="relu").numpy()
    assert y.std() == pytest.approx(math.sqrt(2 / fan), rel=0.01)


def test_kaiming_uniform_a_sqrt5_is_linear_default_bound():
    x = init.kaiming_uniform_(_t((50, 64)), a=math.sqrt(5)).numpy()
    assert np.abs(x).max() <= 1 / 8 and np.abs(x).max() > 0.95 / 8


@pytest.mark.parametrize("shape", [(6, 6), (4, 9), (9, 4), (6, 2, 3)])
def test_orthogonal(device, shape):
    t = init.orthogonal_(_t(shape, device), gain=1.0)
    q = t.numpy().reshape(shape[0], -1)
    rows, cols = q.shape
    if rows <= cols:
        np.testing.assert_allclose(q @ q.T, np.eye(rows), atol=1e-12)
    else:
        np.testing.assert_allclose(q.T @ q, np.eye(cols), atol=1e-12)


def test_orthogonal_gain_and_float32():
    t = init.orthogonal_(_t((5, 5), dtype=tg.float32), gain=3.0)
    q = t.numpy()
    assert q.dtype == np.float32
    np.testing.assert_allclose(q.T @ q, 9 * np.eye(5), atol=1e-5)


@pytest.mark.parametrize("fn", [lambda t: init.uniform_(t, -1, 1), init.normal_, init.xavier_uniform_,
                                init.xavier_normal_, init.kaiming_uniform_, init.kaiming_normal_, init.orthogonal_])
def test_reproducible_under_manual_seed_and_same_on_cpu_and_strict(fn):
    tg.manual_seed(123)
    a = fn(_t((5, 7))).numpy()
    b = fn(_t((5, 7))).numpy()
    tg.manual_seed(123)
    c = fn(_t((5, 7))).numpy()
    tg.manual_seed(123)
    s = fn(_t((5, 7), "strict")).numpy()
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(a, s)
    assert not np.array_equal(a, b)


def test_init_records_no_graph_and_keeps_parameter_a_leaf():
    p = tg.nn.Parameter(tg.zeros(3, 4))
    arr = p.data
    init.kaiming_uniform_(p)
    assert p.is_leaf and p.requires_grad and p.grad is None
    assert p.data is arr  # written into the existing array, not rebound


def test_zero_element_tensor_is_a_no_op():
    t = _t((0, 3))
    assert init.kaiming_uniform_(t) is t and init.orthogonal_(t) is t


def test_errors():
    with pytest.raises(tg.DTypeError, match=r"normal_: needs a floating-point tensor, got int64 of shape \(2, 2\)"):
        init.normal_(tg.zeros(2, 2, dtype=tg.int64))
    with pytest.raises(ValueError, match="uniform_: needs a <= b"):
        init.uniform_(_t((2,)), 1.0, 0.0)
    with pytest.raises(ValueError, match="std must be non-negative"):
        init.normal_(_t((2,)), std=-1.0)
    with pytest.raises(ValueError, match="mode 'fan_avg' not supported"):
        init.kaiming_uniform_(_t((2, 2)), mode="fan_avg")
    with pytest.raises(tg.ShapeError, match=r"orthogonal_: only tensors with 2 or more dimensions.*\(4,\)"):
        init.orthogonal_(_t((4,)))
    with pytest.raises(TypeError, match="expected a Tensor, got ndarray"):
        init.zeros_(np.zeros(3))


# ----------------------------------------------------------------------------- orthogonal_ and the QR under it
def _pytorch_orthogonal(draw, gain, xp_qr):
    """torch.nn.init.orthogonal_'s steps on a given (rows, cols) Gaussian draw, with a given QR."""
    rows, cols = draw.shape
    flat = draw.T if rows < cols else draw
    q, r = xp_qr(flat)
    q = q * np.sign(np.diag(r))
    return gain * (q.T if rows < cols else q)


@pytest.mark.parametrize("shape", [(5, 5), (3, 8), (8, 3), (4, 2, 3), (2, 3, 2, 2)])
def test_orthogonal_is_pytorchs_algorithm_on_the_same_draw(device, shape):
    rows, cols = shape[0], int(np.prod(shape[1:]))
    tg.manual_seed(7)
    draw = tg.get_device(device).to_host(tg.get_device(device).randn((rows, cols), tg.float64))
    tg.manual_seed(7)
    t = init.orthogonal_(_t(shape, device), gain=0.5)
    want = _pytorch_orthogonal(draw, 0.5, np.linalg.qr).reshape(shape)
    np.testing.assert_allclose(t.numpy(), want, rtol=0, atol=1e-14)


def test_orthogonal_against_pytorch_qr():
    torch = pytest.importorskip("torch")
    draw = np.random.default_rng(0).standard_normal((4, 9))
    want = _pytorch_orthogonal(draw, 2.0, lambda a: tuple(x.numpy() for x in torch.linalg.qr(torch.from_numpy(a))))
    got = _pytorch_orthogonal(draw, 2.0, tg.get_device("cpu").qr)  # the QR orthogonal_ uses on the cpu
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("shape,gain", [((6, 4, 2), 1.0), ((3, 2, 5), 2.5), ((64, 16), 5 / 3)])
def test_orthogonal_gain_and_float32_tolerance(device, shape, gain):
    q = init.orthogonal_(_t(shape, device, tg.float32), gain=gain).numpy().reshape(shape[0], -1)
    assert q.dtype == np.float32
    gram = q @ q.T if q.shape[0] <= q.shape[1] else q.T @ q
    np.testing.assert_allclose(gram, gain ** 2 * np.eye(len(gram)), atol=gain ** 2 * 5e-6)


@pytest.mark.parametrize("shape", [(5, 3), (3, 5), (4, 4)])
def test_device_qr(device, shape):
    dev = tg.get_device(device)
    a = np.random.default_rng(1).standard_normal(shape)
    q, r = dev.qr(dev.from_host(a))
    assert dev.is_native(q) and dev.is_native(r)
    q, r = dev.to_host(q), dev.to_host(r)
    k = min(shape)
    assert q.shape == (shape[0], k) and r.shape == (k, shape[1])
    np.testing.assert_allclose(q @ r, a, atol=1e-13)
    np.testing.assert_allclose(q.T @ q, np.eye(k), atol=1e-13)
    np.testing.assert_array_equal(np.tril(r, -1), 0)
