"""Every bad input raises an error that names the op and says what was wrong, in the
forward pass of the op that got it (not later, inside NumPy)."""
import numpy as np
import pytest

import tinygrad_rnn as tg
import tinygrad_rnn.nn.functional as F


@pytest.fixture
def x(device):
    return tg.ones(2, 3, device=device, requires_grad=True)


def ones(*shape, device):
    return tg.ones(*shape, device=device)


# ============================================================================ shapes
def test_matmul_mismatched_shapes(device, x):
    with pytest.raises(tg.ShapeError, match=r"matmul: shapes \(2, 3\) and \(4, 5\) do not align: 3 .* != 4"):
        x @ ones(4, 5, device=device)
    with pytest.raises(ValueError, match=r"matmul: shapes \(3,\) and \(4,\)"):  # ShapeError is a ValueError
        ones(3, device=device) @ ones(4, device=device)
    with pytest.raises(tg.ShapeError, match=r"matmul: .*at least 1 dimension.*\(\)"):
        tg.tensor(1.0, device=device) @ x


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "maximum", "minimum"])
def test_broadcasting_failure_names_op_and_shapes(device, x, op):
    other = ones(4, device=device)
    with pytest.raises(ValueError, match=rf"{op}: .*\(2, ?3\).*\(4,\)"):
        getattr(x, op)(other)


def test_broadcasting_failure_in_where(device, x):
    with pytest.raises(ValueError, match=r"where: .*\(4,\)"):
        tg.where(np.ones((2, 3), dtype=bool), x, ones(4, device=device))


def test_bad_reshape(device, x):
    with pytest.raises(tg.ShapeError, match=r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) "
                                            r"into shape \(4, 2\)"):
        x.reshape(4, 2)
    with pytest.raises(tg.ShapeError, match=r"reshape: .*\(-1, 4\)"):
        x.reshape(-1, 4)


def test_bad_expand(device, x):
    with pytest.raises(tg.ShapeError, match=r"expand: cannot broadcast a tensor of shape \(2, 3\) to shape \(3, 3\)"):
        x.expand(3, 3)


def test_squeeze_of_an_axis_that_is_not_1(device, x):
    with pytest.raises(tg.ShapeError, match=r"squeeze: axis 0 has size 2, not 1"):
        x.squeeze(0)


def test_concat_shape_mismatch(device, x):
    with pytest.raises(tg.ShapeError, match=r"concat: tensor 1 has shape \(3, 3\) but tensor 0 has shape \(2, 3\); "
                                            r"shapes must match except along axis 1"):
        tg.concat([x, ones(3, 3, device=device)], axis=1)
    with pytest.raises(tg.ShapeError, match=r"concat: tensor 1 has shape \(3,\)"):
        tg.concat([x, ones(3, device=device)])
    with pytest.raises(tg.ShapeError, match=r"concat: needs at least one tensor"):
        tg.concat([])


def test_stack_shape_mismatch(device, x):
    with pytest.raises(tg.ShapeError, match=r"stack: tensor 2 has shape \(3, 2\) but tensor 0 has shape \(2, 3\); "
                                            r"all shapes must match"):
        tg.stack([x, x, ones(3, 2, device=device)])
    with pytest.raises(tg.ShapeError, match=r"stack: needs at least one tensor"):
        tg.stack([])


def test_split_sizes_that_do_not_add_up(device, x):
    with pytest.raises(tg.ShapeError, match=r"split: sizes \[1, 1\] do not add up to 3"):
        x.split([1, 1], axis=1)
    with pytest.raises(ValueError, match=r"split: split size must be positive"):
        x.split(0)
    with pytest.raises(ValueError, match=r"chunk: .*positive"):
        x.chunk(0)


def test_backward_gradient_of_the_wrong_shape(device, x):
    with pytest.raises(tg.ShapeError, match=r"backward: grad has shape \(3,\) but the tensor has shape \(2, 3\)"):
        (x * 2.0).backward(np.ones(3))


# ============================================================================ axes
@pytest.mark.parametrize("call, op, axis", [
    (lambda t: t.sum(axis=2), "sum", "2"),
    (lambda t: t.mean(dim=-3), "mean", "-3"),
    (lambda t: t.amax(axis=(0, 5)), "amax", "5"),
    (lambda t: t.max(dim=3), "max", "3"),
    (lambda t: t.min(axis=2), "min", "2"),
    (lambda t: t.logsumexp(axis=-3), "logsumexp", "-3"),
    (lambda t: t.softmax(5), "softmax", "5"),
    (lambda t: t.log_softmax(dim=-3), "log_softmax", "-3"),
    (lambda t: t.transpose(0, 2), "transpose", "2"),
    (lambda t: t.unsqueeze(4), "unsqueeze", "4"),
    (lambda t: t.squeeze(2), "squeeze", "2"),
    (lambda t: t.split(1, axis=3), "split", "3"),
    (lambda t: t.chunk(2, axis=2), "chunk", "2"),
    (lambda t: t.unbind(-3), "unbind", "-3"),
    (lambda t: tg.concat([t, t], axis=2), "concat", "2"),
    (lambda t: tg.stack([t, t], axis=4), "stack", "4"),
])
def test_bad_axis(device, x, call, op, axis):
    with pytest.raises(tg.AxisError, match=rf"{op}: axis {axis} is out of range"):
        call(x)


def test_repeated_axis(device, x):
    with pytest.raises(tg.AxisError, match=r"sum: repeated axis in \(1, -1\)"):
        x.sum(axis=(1, -1))


def test_bad_permutation(device, x):
    with pytest.raises(tg.AxisError, match=r"permute: \(0, 0\) is not a permutation of the axes of a tensor "
                                           r"of shape \(2, 3\)"):
        x.permute(0, 0)
    with pytest.raises(tg.AxisError, match=r"permute: \(1,\) is not a permutation"):
        x.permute(1)


def test_axis_errors_are_index_errors_too(x):
    # code written against NumPy catches IndexError for a bad axis; it still works
    with pytest.raises(IndexError):
        x.sum(axis=7)


# ============================================================================ indices
@pytest.mark.parametrize("key, bad, axis, size", [
    (2, 2, 0, 2),
    ((slice(None), -4), -4, 1, 3),
    ((0, 3), 3, 1, 3),
])
def test_out_of_range_int_index(device, x, key, bad, axis, size):
    with pytest.raises(tg.IndexOutOfRange, match=rf"getitem: index {bad} is out of range for axis {axis} "
                                                 rf"of size {size} \(tensor of shape \(2, 3\)\)"):
        x[key]


def test_out_of_range_index_array(device, x):
    # CuPy would wrap these around silently: the engine checks them on every backend
    with pytest.raises(tg.IndexOutOfRange, match=r"getitem: index 2 is out of range for axis 0 of size 2"):
        x[np.array([0, 2]), np.array([0, 1])]
    with pytest.raises(tg.IndexOutOfRange, match=r"getitem: index -4 is out of range for axis 1 of size 3"):
        x[tg.tensor(np.array([0, 1]), device=device), tg.tensor(np.array([-4, 1]), device=device)]


def test_too_many_indices(device, x):
    with pytest.raises(tg.IndexOutOfRange, match=r"getitem: too many indices for a tensor of shape \(2, 3\)"):
        x[0, 0, 0]


def test_non_integer_index_arrays(device, x):
    with pytest.raises(tg.DTypeError, match=r"getitem: index arrays must be integer, got float64"):
        x[np.array([0.5])]
    with pytest.raises(tg.DTypeError, match=r"getitem: a boolean mask must be the only index"):
        x[np.array([True, False]), 0]  # x[mask] alone selects (tests/test_ops_index.py)
    with pytest.raises(tg.DTypeError, match=r"getitem: index tensors must be integer, got float32"):
        x[tg.tensor([0.0], device=device)]


# ============================================================================ devices and dtypes
def test_mixed_devices_name_op_and_both_devices(device):
    other = "cpu" if device != "cpu" else "strict"
    a = tg.ones(2, device=device, requires_grad=True)
    b = tg.ones(2, device=other)
    with pytest.raises(RuntimeError, match=rf"add: inputs are on different devices \({device}.* and {other}\)"):
        a + b
    with pytest.raises(RuntimeError, match=rf"matmul: inputs are on different devices"):
        a @ b
    with pytest.raises(RuntimeError, match=rf"concat: inputs are on different devices"):
        tg.concat([a, b])
    with pytest.raises(RuntimeError, match=r"comparison: tensors are on different devices"):
        a < b
    with pytest.raises(RuntimeError, match=rf"getitem: index is on {other}"):
        a[tg.tensor(np.array([0]), device=other)]
    with pytest.raises(RuntimeError, match=rf"embedding: indices are on {other}"):
        F.embedding(tg.tensor(np.array([0]), device=other), tg.ones(3, 2, device=device))
    with pytest.raises(RuntimeError, match=rf"backward: grad is on {other}"):
        (a * 2.0).backward(tg.ones(2, device=other))


def test_integer_tensors_cannot_require_grad(device):
    with pytest.raises(tg.DTypeError, match=r"requires_grad: only floating-point tensors can require gradients, "
                                            r"this one is int64"):
        tg.tensor(np.array([1, 2]), requires_grad=True, device=device)
    with pytest.raises(tg.DTypeError, match=r"int64"):
        tg.arange(3, device=device).requires_grad_()
    with pytest.raises(tg.DTypeError, match=r"bool"):
        tg.tensor(np.array([True]), device=device).requires_grad_()


def test_backward_on_a_non_scalar_without_gradient(device, x):
    with pytest.raises(RuntimeError, match=r"backward: a gradient can be created implicitly only for a one-element "
                                           r"tensor; this one has shape \(2, 3\)"):
        (x * 2.0).backward()


def test_backward_on_a_tensor_without_graph(device):
    with pytest.raises(RuntimeError, match=r"backward: this tensor does not require grad"):
        tg.ones(2, device=device).sum().backward()
    with pytest.raises(RuntimeError, match=r"backward: this tensor does not require grad"):
        with tg.no_grad():
            y = tg.ones(2, device=device, requires_grad=True).sum()
        y.backward()


def test_cuda_without_cupy_or_gpu_says_which_is_missing():
    ok, why = tg.cuda_available()
    if ok:
        pytest.skip("a GPU is present: nothing is missing")
    pattern = r"device 'cuda:0' is not available: CuPy is (not installed|installed but no CUDA GPU)"
    with pytest.raises(RuntimeError, match=pattern):
        tg.ones(2, device="cuda")
    with pytest.raises(RuntimeError, match=pattern):
        tg.ones(2).to("cuda")
    with pytest.raises(RuntimeError, match=pattern):
        tg.ones(2).cuda()
    assert "CuPy" in why


def test_unknown_device_and_dtype():
    with pytest.raises(ValueError, match=r"unknown device 'tpu': expected 'cpu', 'cuda', 'cuda:N' or 'strict'"):
        tg.ones(2, device="tpu")
    with pytest.raises(TypeError, match=r"unsupported dtype 'complex64'"):
        tg.ones(2, dtype="complex64")
    with pytest.raises(TypeError, match=r"tensor: cannot make a tensor from str"):
        tg.tensor("abc")


def test_item_of_a_big_tensor(device, x):
    with pytest.raises(tg.ShapeError, match=r"item: only a one-element tensor .* shape \(2, 3\)"):
        x.item()


# ============================================================================ nn.functional
def test_cross_entropy_bad_targets(device, x):
    with pytest.raises(tg.IndexOutOfRange, match=r"cross_entropy: target 3 is out of range for 3 classes "
                                                 r"\(logits of shape \(2, 3\)\)"):
        F.cross_entropy(x, np.array([0, 3]))
    with pytest.raises(tg.IndexOutOfRange, match=r"cross_entropy: target -1 is out of range"):
        F.cross_entropy(x, np.array([-1, 0]))
    with pytest.raises(tg.ShapeError, match=r"cross_entropy: logits of shape \(2, 3\) need targets of shape "
                                            r"\(2,\), got \(3,\)"):
        F.cross_entropy(x, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match=r"cross_entropy: .*integer"):
        F.cross_entropy(x, np.array([0.0, 1.0]))
    with pytest.raises(tg.DTypeError, match=r"cross_entropy: targets must be an integer array"):
        F.cross_entropy(x, tg.tensor([0.0, 1.0], device=device))
    with pytest.raises(ValueError, match=r"cross_entropy: reduction must be 'mean', 'sum' or 'none', got 'avg'"):
        F.cross_entropy(x, np.array([0, 1]), reduction="avg")
    with pytest.raises(tg.ShapeError, match=r"cross_entropy: logits must have a class axis"):
        F.cross_entropy(tg.tensor(1.0, device=device), np.array(0))


def test_cross_entropy_ignored_targets_may_be_out_of_range(device, x):
    # an ignored target is no class at all, so -100 must not trip the range check
    F.cross_entropy(x, np.array([-100, 1]), ignore_index=-100).backward()


def test_embedding_index_out_of_range(device):
    w = tg.ones(4, 2, device=device, requires_grad=True)
    with pytest.raises(tg.IndexOutOfRange, match=r"embedding: index 4 is out of range for 4 embeddings"):
        F.embedding(np.array([0, 4]), w)
    with pytest.raises(tg.IndexOutOfRange, match=r"embedding: index -1 is out of range"):
        F.embedding(np.array([[-1]]), w)
    with pytest.raises(TypeError, match=r"embedding: indices must be integers"):
        F.embedding(np.array([0.0]), w)
    with pytest.raises(tg.ShapeError, match=r"embedding: weight must be 2-D"):
        F.embedding(np.array([0]), tg.ones(3, device=device))


def test_dropout_probability_out_of_range(device, x):
    with pytest.raises(ValueError, match=r"dropout: p must be in \[0, 1\], got 1.5"):
        F.dropout(x, 1.5)


# ============================================================================ user-defined ops
class Double(tg.Function):
    @staticmethod
    def forward(ctx, a):
        return a * 2


def test_function_apply_needs_a_tensor():
    with pytest.raises(TypeError, match=r"Double.apply needs at least one Tensor argument"):
        Double.apply(np.ones(2))


def test_backend_errors_in_a_user_op_are_annotated_with_the_op():
    class Bad(tg.Function):
        @staticmethod
        def forward(ctx, a, b):
            return ctx.xp.matmul(a, b)  # no shape check of its own

    with pytest.raises(ValueError, match=r"bad: .*\(inputs: tensor \(2, 3\) float32, tensor \(2, 3\) float32; "
                                         r"device cpu\)"):
        Bad.apply(tg.ones(2, 3), tg.ones(2, 3))
