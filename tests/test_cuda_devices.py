"""The CUDA device on the host, with CuPy stood in for (tests/cuda_fake.py): the CuPy version it
needs, and that every op on cuda:N allocates, launches and multiplies on GPU N."""
import configparser
import os

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import backend as B

import cuda_fake

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- versions
def test_the_extras_ask_for_a_cupy_the_ops_run_on():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    extras = cfg["options.extras_require"]
    assert extras["cuda"].split() == ["cupy-cuda12x>=14.2"]
    assert extras["cuda13"].split() == ["cupy-cuda13x>=14.2"]
    assert B.CUPY_NEEDED == (14, 2)


@pytest.mark.parametrize("version", ["13.6.0", "14.0.0", "14.1.1", "12.3.0", "garbage"])
def test_an_older_cupy_is_named_with_the_version_needed(monkeypatch, version):
    cuda_fake.install(monkeypatch, version=version)
    ok, why = B.cuda_available()
    assert not ok
    assert f"CuPy {version} is installed, but tinygrad_rnn needs CuPy >= 14.2" in why
    assert "'.[cuda]' (CUDA 12) or -e '.[cuda13]' (CUDA 13)" in why  # the extras that bring a new enough one
    with pytest.raises(RuntimeError, match=rf"device 'cuda:0' is not available: CuPy {version} is installed, "
                                           r"but tinygrad_rnn needs CuPy >= 14\.2 \(its ops use cupy\.astype"):
        tg.ones(2, device="cuda")


@pytest.mark.parametrize("version", ["14.2.0", "14.10.0", "15.0.0rc1"])
def test_a_new_enough_cupy_makes_a_device(monkeypatch, version):
    cuda_fake.install(monkeypatch, version=version)
    assert B.cuda_available() == (True, "")
    dev = cuda_fake.cuda("cuda")
    assert dev.name == "cuda:0" and dev.dtype_of(dev.xp.ones(2, dtype=dev.native(tg.float32))) is tg.float32


# ----------------------------------------------------------------------------- devices
def _all_on(fake, gpu, since=0):
    wrong = [(what, g) for what, g in fake.log[since:] if g != gpu]
    assert not wrong, f"work on another GPU than {gpu}: {wrong[:5]}"


def test_every_op_of_a_training_step_on_cuda_1_runs_on_gpu_1(monkeypatch):
    fake = cuda_fake.install(monkeypatch, gpus=2)
    dev = cuda_fake.cuda("cuda:1")
    assert fake.current == 0  # making the device changed nothing current
    tg.manual_seed(0)
    model = tg.nn.LSTM(3, 4, num_layers=2, dropout=0.5).to("cuda:1")
    head = tg.nn.Linear(4, 5).to("cuda:1")
    opt = tg.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-2)
    since = len(fake.log)
    fake.current = 0  # as if the user's last work was on GPU 0
    x = tg.randn(6, 2, 3, device="cuda:1")
    target = tg.tensor(np.arange(12) % 5, device="cuda:1")
    out, _ = model(x)
    loss = tg.nn.functional.cross_entropy(head(out).reshape(12, 5), target)
    fake.current = 0
    loss.backward()
    fake.current = 0
    opt.step()
    opt.zero_grad()
    _all_on(fake, 1, since)
    assert {what for what, _ in fake.log[since:]} >= {"alloc", "kernel", "matmul"}
    assert all(p.data.device.id == 1 for p in model.parameters())
    assert dev.name == "cuda:1"


def test_the_device_is_set_only_when_it_changes(monkeypatch):
    fake = cuda_fake.install(monkeypatch, gpus=2)
    cuda_fake.cuda("cuda:1")
    x = tg.randn(4, 4, device="cuda:1")
    calls = fake.set_device_calls
    for _ in range(5):
        x = (x @ x).tanh() + 1.0
    assert fake.set_device_calls == calls  # already current: read, not set, per op


def test_to_cuda_1_and_back(monkeypatch):
    fake = cuda_fake.install(monkeypatch, gpus=2)
    cuda_fake.cuda("cuda:0")
    cuda_fake.cuda("cuda:1")
    a = tg.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    b = a.to("cuda:1")
    assert b.device.name == "cuda:1" and b.data.device.id == 1
    c = b.to("cuda:0")  # GPU to GPU
    assert c.device.name == "cuda:0" and c.data.device.id == 0
    d = c.to("cuda:1") * 2.0
    assert d.data.device.id == 1
    back = d.cpu()
    np.testing.assert_array_equal(back.numpy(), 2 * np.arange(6.0).reshape(2, 3))
    fake.current = 0
    back.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 3), 2.0))
    # a GPU array handed to another GPU's device is copied there, not aliased
    other = B.get_device("cuda:0").from_host(b.data)
    assert other.device.id == 0 and other is not b.data
    same = B.get_device("cuda:1").from_host(b.data)
    assert same is b.data


def test_an_array_on_the_wrong_gpu_fails_like_cupy(monkeypatch):
    # the fake is strict where CuPy is, which is what makes the tests above mean something
    fake = cuda_fake.install(monkeypatch, gpus=2)
    x = cuda_fake.cuda("cuda:1").xp.ones(3)
    fake.current = 0
    with pytest.raises(ValueError, match=r"resides \(1\) is different from the current device \(0\)"):
        x + x
