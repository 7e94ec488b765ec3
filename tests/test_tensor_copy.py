"""tg.tensor / Tensor(...) copy their input, as torch.tensor does: in-place optimizer
steps on a parameter must never write into the array it was made from."""
import numpy as np

import tinygrad_rnn as tg


def test_tensor_from_numpy_does_not_alias(device):
    a = np.ones(3)
    t = tg.tensor(a, device=device)
    t.data[0, ...] = 5.0
    assert a[0] == 1.0


def test_tensor_from_tensor_does_not_alias(device):
    s = tg.tensor([1.0, 2.0], device=device)
    u = tg.Tensor(s)
    u.data[0, ...] = 9.0
    assert s.numpy()[0] == 1.0


def test_optimizer_step_leaves_source_array_alone():
    w = np.ones((2, 2))
    p = tg.nn.Parameter(w)
    (p * p).sum().backward()
    tg.optim.SGD([p], lr=0.1).step()
    assert np.all(w == 1.0) and np.allclose(p.numpy(), 0.8)
