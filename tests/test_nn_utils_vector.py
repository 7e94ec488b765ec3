"""nn.utils.parameters_to_vector / vector_to_parameters: forward against NumPy, gradients and
second derivatives of the flattening against central differences, round trips that write in
place without a graph, and every error."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn.nn.utils import parameters_to_vector, vector_to_parameters
from tinygrad_rnn.testing import strategies as tgst

SMALL = dict(max_dims=3, max_side=3)


@given(data=st.data(), n=st.integers(1, 3))
def test_parameters_to_vector_gradients(device, data, n):
    ps = [data.draw(tgst.tensors(tgst.shapes(**SMALL), device=device)) for _ in range(n)]
    v = parameters_to_vector(ps)
    np.testing.assert_array_equal(v.numpy(), np.concatenate([p.numpy().reshape(-1) for p in ps]))
    assert tg.gradcheck(lambda *xs: parameters_to_vector(xs) ** 2, ps)
    assert tg.gradgradcheck(lambda *xs: parameters_to_vector(xs) ** 2, ps)


def test_round_trip_in_place_without_a_graph(device):
    tg.manual_seed(0)
    m = tg.nn.Sequential(tg.nn.Linear(3, 4, device=device), tg.nn.LSTM(4, 2, device=device))
    params = list(m.parameters())
    arrays = [p.data for p in params]
    n = sum(p.numel() for p in params)
    v = parameters_to_vector(m.parameters())
    assert v.shape == (n,) and v.dtype is tg.float32 and v.device is tg.device(device) and v.requires_grad
    new = tg.tensor(np.arange(n, dtype=np.float64) / 7, requires_grad=True, device=device)
    vector_to_parameters(new, m.parameters())
    assert all(p.data is a for p, a in zip(params, arrays))  # written into, not rebound
    assert all(p.is_leaf and p.requires_grad and p.grad is None and p.dtype is tg.float32 for p in params)
    np.testing.assert_allclose(parameters_to_vector(params).numpy(), (np.arange(n) / 7).astype(np.float32))
    start = 0
    for p in params:  # each slice lands in its own parameter, in order, shaped like it
        np.testing.assert_allclose(p.numpy(), (np.arange(start, start + p.numel()) / 7).reshape(p.shape)
                                   .astype(np.float32))
        start += p.numel()


def test_mixed_dtypes_and_a_single_tensor():
    a = tg.ones(2, dtype=tg.float32, requires_grad=True)
    b = tg.zeros(1, 2, dtype=tg.float64, requires_grad=True)
    v = parameters_to_vector([a, b])
    assert v.dtype is tg.float64 and v.numpy().tolist() == [1, 1, 0, 0]
    vector_to_parameters(tg.tensor([0.5, 1.5, 2.5, 3.5], dtype=tg.float64), [a, b])
    assert a.dtype is tg.float32 and a.numpy().tolist() == [0.5, 1.5] and b.numpy().tolist() == [[2.5, 3.5]]
    vector_to_parameters(tg.tensor([9.0, 8.0]), a)
    assert parameters_to_vector(a).numpy().tolist() == [9.0, 8.0]


def test_errors():
    a, b = tg.ones(2, 3), tg.ones(4)
    with pytest.raises(tg.ShapeError, match=r"vector_to_parameters: vec must be 1-D with 10 elements \(the parameters' "
                                            r"\(2, 3\), \(4,\)\), got shape \(9,\)"):
        vector_to_parameters(tg.zeros(9), [a, b])
    with pytest.raises(tg.ShapeError, match=r"1-D with 10 elements.*got shape \(2, 5\)"):
        vector_to_parameters(tg.zeros(2, 5), [a, b])
    with pytest.raises(TypeError, match="vector_to_parameters: expected a Tensor for vec, got ndarray"):
        vector_to_parameters(np.zeros(10), [a, b])
    with pytest.raises(TypeError, match="parameters_to_vector: parameter 1 is a list, not a Tensor"):
        parameters_to_vector([a, [1.0]])
    with pytest.raises(ValueError, match="parameters_to_vector: no parameters given"):
        parameters_to_vector([])
    s = tg.ones(4, device="strict")
    with pytest.raises(RuntimeError, match=r"parameters_to_vector: parameter 1 of shape \(4,\) is on strict, "
                                           r"but parameter 0 is on cpu"):
        parameters_to_vector([a, s])
    with pytest.raises(RuntimeError, match=r"vector_to_parameters: parameter 0 of shape \(2, 3\) is on cpu, "
                                           r"but vec is on strict"):
        vector_to_parameters(tg.zeros(6, device="strict"), [a])
    assert a.numpy().tolist() == [[1.0] * 3] * 2  # nothing written on any error
