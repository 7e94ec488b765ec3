"""The engine: graph recording, the backward walk, gradient bookkeeping, memory, dtypes."""
import gc
import time

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.autograd import Context


def T(a, device="cpu", requires_grad=True):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64, device=device,
                     requires_grad=requires_grad)


# ============================================================================ graph shapes
def test_diamond(device):
    # x feeds two paths that meet again: both contributions reach x
    x = T([0.5, -1.0, 2.0], device)
    a = x * 2.0
    b = x.exp()
    (a * b).sum().backward()
    xn = x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp(xn) + 2 * xn * np.exp(xn), rtol=1e-12)


def test_diamond_of_unequal_depth(device):
    # the shared node is reached directly and through a longer path
    x = T([0.3, -1.2], device)
    a = x * 2.0
    ((a + (a.tanh() - a)) * 1.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * (1 - np.tanh(2 * x.numpy()) ** 2), rtol=1e-12)


def test_stacked_diamonds_gradcheck(device):
    def f(x):
        h = x
        for _ in range(4):
            h = (h * 0.5).tanh() + h.sigmoid() * h
        return h

    assert tg.gradcheck(f, [T([0.1, -0.4, 0.9], device)])


def test_tensor_used_many_times_accumulates(device):
    x = T([1.0, 2.0], device)
    total = x * 0.0
    for i in range(1, 51):
        total = total + x * float(i)
    total.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [sum(range(1, 51))] * 2)


def test_shared_weight_across_timesteps(device):
    # an RNN's weight is used at every step: its gradient sums over the steps
    w = T([[0.5]], device)
    h = T([[1.0]], device, requires_grad=False)
    for _ in range(3):
        h = h @ w
    h.sum().backward()  # h = w^3
    np.testing.assert_allclose(w.grad.numpy(), [[3 * 0.5 ** 2]])


def test_same_tensor_twice_in_one_op(device):
    x = T([3.0], device)
    (x * x).backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0])
    x.grad = None
    (x + x + x).backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0])


def test_grad_accumulates_across_backward_calls_until_zeroed(device):
    x = T([1.0, 2.0], device)
    (x * 3.0).sum().backward()
    (x * 4.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [7.0, 7.0])
    x.zero_grad()
    assert x.grad is None


def test_backward_with_explicit_gradient(device):
    x = T([1.0, 2.0, 3.0], device)
    y = x * x
    y.backward(tg.tensor(np.array([1.0, 0.5, -1.0]), dtype=tg.float64, device=device))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0, -6.0])
    x.grad = None
    (x * x).backward(np.array([1.0, 1.0, 1.0]))  # a host array works too
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0, 6.0])


def test_backward_of_a_leaf_seeds_its_grad():
    x = T(5.0)
    x.backward()
    assert x.grad.item() == 1.0


def test_inputs_not_requiring_grad_get_nothing(device):
    x = T([1.0, 2.0], device)
    c = T([3.0, 4.0], device, requires_grad=False)
    (x * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 4.0])


def test_ops_without_grad_inputs_record_nothing(device):
    a = T([1.0], device, requires_grad=False)
    b = (a * 2.0).exp()
    assert not b.requires_grad and b.grad_fn is None and b.is_leaf


# ============================================================================ no_grad and detach
def test_no_grad_context_manager(device):
    x = T([1.0, 2.0], device)
    assert tg.is_grad_enabled()
    with tg.no_grad():
        assert not tg.is_grad_enabled()
        y = x * 2.0
    assert tg.is_grad_enabled()
    assert not y.requires_grad and y.grad_fn is None
    np.testing.assert_allclose(y.numpy(), [2.0, 4.0])


def test_no_grad_decorator_and_restore_after_error():
    x = T([1.0])

    @tg.no_grad()
    def f(t):
        assert not tg.is_grad_enabled()
        return t * 2.0

    assert not f(x).requires_grad
    assert tg.is_grad_enabled()

    @tg.no_grad()
    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        boom()
    assert tg.is_grad_enabled()


def test_enable_grad_inside_no_grad():
    x = T([1.0])
    with tg.no_grad():
        with tg.enable_grad():
            y = x * 2.0
        z = x * 2.0
    assert y.requires_grad and not z.requires_grad


def test_detach_cuts_the_graph(device):
    x = T([1.0, 2.0], device)
    h = x * 3.0
    d = h.detach()
    assert d.is_leaf and not d.requires_grad
    assert d.data is h.data  # same memory, no copy
    (h * d).sum().backward()  # only the h path carries gradient
    np.testing.assert_allclose(x.grad.numpy(), 3.0 * d.numpy())


# ============================================================================ retain_graph
def test_retain_graph_allows_a_second_backward(device):
    x = T([1.0, 2.0], device)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_second_backward_without_retain_graph_is_a_clear_error(device):
    x = T([1.0, 2.0], device)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"second time.*retain_graph=True"):
        y.backward()


def test_backward_frees_saved_arrays_unless_retained():
    x = T([1.0, 2.0])
    y = x * x
    node = y.grad_fn
    assert len(node.saved_tensors) == 2
    y.sum().backward(retain_graph=True)
    assert node.saved_tensors is not None and node.inputs is not None
    y.sum().backward()
    assert node.saved_tensors is None and node.inputs is None


# ============================================================================ multi-output ops
def test_multi_output_some_outputs_unused(device):
    x = T(np.arange(6.0).reshape(3, 2), device)
    a, b, c = x.unbind(0)
    assert a.grad_fn is b.grad_fn is c.grad_fn  # one node, three outputs
    (b * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, 0], [2, 2], [0, 0]])


def test_multi_output_outputs_through_different_paths(device):
    x = T(np.arange(1.0, 7.0), device)
    p, q = x.split([2, 4])
    ((p * p).sum() + q.sum() * 3.0 + p[(np.array([0]),)].sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 * 1 + 1, 2 * 2, 3, 3, 3, 3])


def test_chunk_into_gates_is_one_node(device):
    x = T(np.ones((2, 8)), device)
    gates = x.chunk(4, axis=1)
    assert len(gates) == 4 and len({id(g.grad_fn) for g in gates}) == 1
    (gates[0].sigmoid() * gates[2].tanh()).sum().backward()
    assert np.all(x.grad.numpy()[:, 2:4] == 0) and np.all(x.grad.numpy()[:, 6:] == 0)


# ============================================================================ who gets .grad
def test_only_leaves_get_grad(device):
    x = T([1.0, 2.0], device)
    h = x * 2.0
    y = (h * h).sum()
    y.backward()
    assert h.grad is None and y.grad is None
    assert x.grad is not None


def test_retain_grad_keeps_intermediate_grad(device):
    x = T([1.0, 2.0], device)
    h = x * 2.0
    h.retain_grad()
    y = (h * h).sum()
    y.retain_grad()
    y.backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())
    np.testing.assert_allclose(y.grad.numpy(), 1.0)
    assert h.grad.grad_fn is None and not h.grad.requires_grad


def test_retained_grad_accumulates_like_a_leafs(device):
    x = T([1.0, 2.0], device)
    h = x * 2.0
    h.retain_grad()
    y = (h * h).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * (2 * h.numpy()))
    np.testing.assert_allclose(x.grad.numpy(), 2 * (8 * x.numpy()))


def test_retain_grad_on_one_output_of_a_multi_output_node(device):
    x = T(np.arange(4.0), device)
    a, b = x.split(2)
    b.retain_grad()
    (a.sum() + (b * 5.0).sum()).backward()
    np.testing.assert_allclose(b.grad.numpy(), [5.0, 5.0])
    assert a.grad is None


def test_leaf_grad_is_a_tensor_without_history(device):
    x = T([1.0, 2.0], device)
    (x * x).sum().backward()
    g = x.grad
    assert isinstance(g, tg.Tensor)
    assert g.is_leaf and g.grad_fn is None and not g.requires_grad
    assert g.device is x.device and g.dtype is x.dtype and g.shape == x.shape


# ============================================================================ depth and memory
def test_100k_node_chain_needs_no_recursion():
    # a BPTT graph is a long chain: walking it recursively would blow Python's stack
    x = tg.tensor([1.0], dtype=tg.float64, requires_grad=True)
    h = x
    t0 = time.perf_counter()
    for _ in range(50_000):
        h = h * 1.0
        h = h + 0.0
    h.sum().backward()
    seconds = time.perf_counter() - t0
    np.testing.assert_allclose(x.grad.numpy(), [1.0])
    print(f"100,000-node chain, forward + backward: {seconds:.2f} s")  # seen with -s; never asserted


def _live_contexts():
    return sum(1 for o in gc.get_objects() if type(o) is Context)


def test_graph_memory_is_freed_after_backward_and_drop():
    gc.collect()
    before = _live_contexts()
    w = T(np.ones((4, 4)) * 0.1)
    h = T(np.ones((2, 4)), requires_grad=False)
    for _ in range(100):
        h = (h @ w).tanh()
    loss = h.sum()
    assert _live_contexts() >= before + 200
    loss.backward()
    del loss, h
    gc.collect()
    assert _live_contexts() == before
    assert w.grad is not None


def test_graph_has_no_reference_cycles():
    # freed by reference counting alone: a training loop never waits for the collector
    gc.collect()
    before = _live_contexts()
    gc.disable()
    try:
        x = T(np.ones(3))
        parts = x.unbind(0)
        h = parts[0]
        for p in parts[1:]:
            h = (h * p).sigmoid()
        h.retain_grad()
        y = (h + x.sum()).exp()
        y.backward(retain_graph=True)
        del y, h, parts, p
        assert _live_contexts() == before
    finally:
        gc.enable()


def test_dropping_the_output_without_backward_frees_the_graph():
    gc.collect()
    before = _live_contexts()
    x = T(np.ones(5))
    y = x
    for _ in range(50):
        y = y * 2.0
    del y
    gc.collect()
    assert _live_contexts() == before


# ============================================================================ dtypes
@pytest.fixture
def restore_default_dtype():
    saved = tg.get_default_dtype()
    yield
    tg.set_default_dtype(saved)


def test_python_numbers_and_lists_become_the_default_float():
    assert tg.get_default_dtype() is tg.float32
    assert tg.tensor(1.5).dtype is tg.float32
    assert tg.tensor(3).dtype is tg.float32  # as in tinygrad: ints from Python are data, not indices
    assert tg.tensor([1, 2, 3]).dtype is tg.float32
    assert tg.tensor([[1.0, 2.0]]).dtype is tg.float32
    assert tg.zeros(2, 3).dtype is tg.float32 and tg.randn(2).dtype is tg.float32


def test_set_default_dtype(restore_default_dtype):
    tg.set_default_dtype(tg.float64)
    assert tg.tensor([1.0]).dtype is tg.float64
    assert tg.ones(2).dtype is tg.float64
    tg.set_default_dtype("float32")
    assert tg.tensor([1.0]).dtype is tg.float32
    with pytest.raises(TypeError, match="floating"):
        tg.set_default_dtype(tg.int64)


def test_numpy_arrays_keep_their_dtype():
    assert tg.tensor(np.zeros(2, dtype=np.float64)).dtype is tg.float64
    assert tg.tensor(np.zeros(2, dtype=np.float32)).dtype is tg.float32
    assert tg.tensor(np.float64(1.0)).dtype is tg.float64
    assert tg.tensor(np.arange(3)).dtype is tg.int64
    assert tg.tensor(np.arange(3, dtype=np.int32)).dtype is tg.int64
    assert tg.tensor(np.array([True])).dtype is tg.bool_
    assert tg.tensor([1.0], dtype=tg.float64).dtype is tg.float64
    assert tg.arange(4).dtype is tg.int64 and tg.arange(0.0, 1.0, 0.5).dtype is tg.float32


@pytest.mark.parametrize("op", [
    lambda x: x * 2.0 + 1, lambda x: x.sigmoid(), lambda x: x.tanh(), lambda x: (x ** 2).sqrt(),
    lambda x: x.relu(), lambda x: x.softmax(-1), lambda x: x.logsumexp(-1), lambda x: x.mean(0),
    lambda x: x @ x.T, lambda x: x.clip(-0.5, 0.5), lambda x: tg.where(x > 0, x, 0.0),
    lambda x: x.amax(1) / 3, lambda x: x.max(1).values / 3, lambda x: x.abs().log(), lambda x: 2.0 ** x, lambda x: x.exp() - x,
])
def test_float32_stays_float32_through_ops_and_gradients(device, op):
    x = tg.tensor(np.random.default_rng(0).uniform(0.5, 1.5, (3, 3)).astype(np.float32), device=device,
                  requires_grad=True)
    y = op(x)
    assert y.dtype is tg.float32
    y.sum().backward()
    assert x.grad.dtype is tg.float32


def test_mixed_precision_gradient_comes_back_in_each_inputs_dtype(device):
    a = tg.tensor(np.ones(3, dtype=np.float32), device=device, requires_grad=True)
    b = tg.tensor(np.ones(3), dtype=tg.float64, device=device, requires_grad=True)
    y = a * b
    assert y.dtype is tg.float64  # NumPy's promotion
    y.sum().backward()
    assert a.grad.dtype is tg.float32 and b.grad.dtype is tg.float64


def test_to_dtype_is_differentiable(device):
    x = T([0.5, 1.5], device)
    y = x.to(tg.float32)
    assert y.dtype is tg.float32 and y.grad_fn is not None
    (y * y).sum().backward()
    assert x.grad.dtype is tg.float64
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 3.0])
    assert x.to("float64") is x


def test_to_device_is_differentiable():
    x = T([0.5, 1.5])
    y = x.to("strict")
    assert y.device.name == "strict" and y.grad_fn is not None
    z = (y * y).exp().to("cpu")
    assert z.device.name == "cpu"
    z.sum().backward()
    assert x.grad.device.name == "cpu"
    xn = x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), 2 * xn * np.exp(xn ** 2), rtol=1e-12)
    assert x.to("cpu") is x
    assert tg.gradcheck(lambda t: (t.to("strict").tanh() * 2.0).to("cpu"), [T([0.1, -0.3])])
    assert tg.gradgradcheck(lambda t: (t.to("strict").tanh() * 2.0).to("cpu"), [T([0.1, -0.3])])


# ============================================================================ randomness
def test_manual_seed_makes_cpu_random_numbers_bit_reproducible():
    tg.manual_seed(123)
    a, r = tg.randn(4, 5).numpy(), tg.rand(3).numpy()
    tg.manual_seed(123)
    b, s = tg.randn(4, 5).numpy(), tg.rand(3).numpy()
    assert a.tobytes() == b.tobytes() and r.tobytes() == s.tobytes()
    tg.manual_seed(124)
    assert tg.randn(4, 5).numpy().tobytes() != a.tobytes()


def test_manual_seed_reaches_devices_made_later_and_each_device_has_its_own_stream():
    tg.manual_seed(9)
    cpu1 = tg.randn(3).numpy()
    strict1 = tg.randn(3, device="strict").numpy()
    tg.manual_seed(9)
    strict2 = tg.randn(3, device="strict").numpy()  # drawn first this time: same numbers
    cpu2 = tg.randn(3).numpy()
    np.testing.assert_array_equal(cpu1, cpu2)
    np.testing.assert_array_equal(strict1, strict2)


# ============================================================================ graph drawing
def test_to_dot_names_ops_and_shapes():
    w = T(np.ones((3, 2)))
    x = T(np.ones((4, 3)), requires_grad=False)
    parts = (x @ w).tanh().split(2, axis=0)
    loss = (parts[0] * parts[1]).sum()
    dot = tg.viz.to_dot(loss, params={"w": w})
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")
    for name in ["MatMul", "Tanh", "Split", "Mul", "Sum"]:
        assert name in dot
    assert "(4, 2)" in dot and "(3, 2)" in dot and "(2, 2)" in dot
    assert '"w\\n(3, 2) float64"' in dot or "w\\n(3, 2)" in dot
    assert "->" in dot
    loss.backward()
    assert "(freed)" in tg.viz.to_dot(loss)  # the drawing shows what backward released


def test_to_dot_of_a_long_chain_and_of_a_leaf():
    x = T([1.0])
    h = x
    for _ in range(5000):
        h = h * 1.0
    dot = tg.viz.to_dot(h)
    assert dot.count("Mul") == 5000
    assert "digraph" in tg.viz.to_dot(x)


def test_leaf_grad_is_row_major_whatever_the_op_returned():
    # x @ W.T hands W a transposed view as its gradient; .grad is stored row-major, so that an
    # optimizer's passes over it and its row-major state do not run at strided speed
    x = tg.randn(5, 3, dtype=tg.float64)
    w = tg.randn(4, 3, dtype=tg.float64, requires_grad=True)
    (x @ w.T).sum().backward()
    g = w.grad.numpy()
    assert g.flags.c_contiguous
    np.testing.assert_allclose(g, np.ones((5, 4)).T @ x.numpy(), rtol=1e-14)
    (x @ w.T).sum().backward()  # accumulated: still row-major
    assert w.grad.numpy().flags.c_contiguous
