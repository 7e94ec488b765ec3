"""Tools for looking inside backward: autograd.grad, tensor hooks, anomaly mode, and the
graph pictures with backward's visiting order."""
import inspect
import os
import shutil
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import autograd, nn

F64 = tg.float64


def leaf(*shape, seed=0):
    return tg.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=F64, requires_grad=True)


# ----------------------------------------------------------------------------- autograd.grad
def test_grad_matches_backward_and_touches_no_grad_attribute():
    x, w = leaf(3, 4), leaf(4, 2, seed=1)
    x.grad = tg.ones(3, 4, dtype=F64)  # must stay as it is
    loss = ((x @ w).tanh() ** 2).sum()
    gx, gw = autograd.grad(loss, (x, w), retain_graph=True)
    np.testing.assert_array_equal(x.grad.numpy(), np.ones((3, 4)))
    assert w.grad is None and gx._ctx is None and not gx.requires_grad
    x.grad = None
    loss.backward()
    np.testing.assert_allclose(gx.numpy(), x.grad.numpy(), rtol=1e-15)
    np.testing.assert_allclose(gw.numpy(), w.grad.numpy(), rtol=1e-15)


def test_grad_of_an_intermediate_and_of_several_outputs():
    x = leaf(5)
    h = x.tanh()
    y1, y2 = (h * 3.0).sum(), (h * h).sum()
    (gh,) = autograd.grad([y1, y2], h)  # d(y1 + y2)/dh = 3 + 2h
    np.testing.assert_allclose(gh.numpy(), 3.0 + 2.0 * np.tanh(x.numpy()), rtol=1e-14)
    v = leaf(5, seed=3)
    y = x * x
    (gx,) = autograd.grad(y, x, grad_outputs=v, retain_graph=True)  # a vector-Jacobian product
    np.testing.assert_allclose(gx.numpy(), 2.0 * x.numpy() * v.numpy(), rtol=1e-14)
    (gx,) = autograd.grad(y, x, grad_outputs=np.ones(5))  # arrays are fine too
    np.testing.assert_allclose(gx.numpy(), 2.0 * x.numpy(), rtol=1e-14)


def test_grad_through_an_lstm_equals_backward():
    m = nn.LSTM(3, 4, dtype=F64)
    x = leaf(6, 2, 3)
    out, _ = m(x)
    g = autograd.grad(out.sum(), [x] + list(m.parameters()))
    out, _ = m(x)
    out.sum().backward()
    for a, t in zip(g, [x] + list(m.parameters())):
        np.testing.assert_allclose(a.numpy(), t.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_grad_unused_input_and_allow_unused():
    x, z = leaf(3), leaf(3, seed=1)
    y = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"grad: input 1 \(shape \(3,\)\) was not used to compute the outputs; "
                                           r"pass allow_unused=True"):
        autograd.grad(y, (x, z), retain_graph=True)
    gx, gz = autograd.grad(y, (x, z), allow_unused=True)
    assert gz is None
    np.testing.assert_array_equal(gx.numpy(), [2.0, 2.0, 2.0])


def test_grad_bad_inputs():
    x = leaf(2, 3)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"grad: output 0: a gradient can be created implicitly only for a "
                                           r"one-element tensor; this one has shape \(2, 3\), so pass grad_outputs"):
        autograd.grad(y, x)
    with pytest.raises(RuntimeError, match=r"grad: input 0 \(shape \(2, 3\)\) does not require grad"):
        autograd.grad(y.sum(), tg.zeros(2, 3, dtype=F64))
    with pytest.raises(tg.ShapeError, match=r"grad: output 0: grad has shape \(3,\) but the tensor has shape "
                                            r"\(2, 3\)"):
        autograd.grad(y, x, grad_outputs=tg.ones(3, dtype=F64))
    with pytest.raises(ValueError, match=r"grad: 1 output\(s\) but 2 grad_outputs"):
        autograd.grad(y, x, grad_outputs=[tg.ones(2, 3, dtype=F64)] * 2)
    with pytest.raises(TypeError, match=r"grad: inputs\[0\] is a ndarray, not a Tensor"):
        autograd.grad(y.sum(), [np.zeros(3)])
    with pytest.raises(RuntimeError, match=r"grad: output 0 does not require grad"):
        autograd.grad(tg.zeros(2, dtype=F64).sum(), x)


def test_grad_frees_the_graph_unless_retained():
    x = leaf(3)
    y = (x.exp() * x).sum()
    autograd.grad(y, x, retain_graph=True)
    autograd.grad(y, x)  # the graph was kept for this one, which frees it
    with pytest.raises(RuntimeError, match=r"backward through .* a second time.*retain_graph=True"):
        autograd.grad(y, x)


# ----------------------------------------------------------------------------- hooks
def test_hook_on_a_leaf_sees_the_total_gradient_and_can_replace_it():
    x = leaf(3)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy()))
    x.register_hook(lambda g: g * 10)  # hooks run in registration order; this one replaces
    ((x * 2).sum() + (x * 3).sum()).backward()
    assert len(seen) == 1  # once per backward, with both uses summed
    np.testing.assert_array_equal(seen[0], [5.0, 5.0, 5.0])
    np.testing.assert_array_equal(x.grad.numpy(), [50.0, 50.0, 50.0])


def test_hook_on_an_intermediate_changes_what_flows_on():
    x = leaf(4)
    h = x.tanh()
    calls = []

    def clip(g):
        calls.append(g.numpy())
        return g * 0.0 + 1.0  # replace dL/dh by ones

    handle = h.register_hook(clip)
    (h * h).sum().backward()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], 2 * np.tanh(x.numpy()), rtol=1e-14)
    np.testing.assert_allclose(x.grad.numpy(), 1 - np.tanh(x.numpy()) ** 2, rtol=1e-14)
    handle.remove()
    handle.remove()  # harmless twice
    x.grad = None
    h = x.tanh()
    (h * h).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.tanh(x.numpy()) * (1 - np.tanh(x.numpy()) ** 2), rtol=1e-14)


def test_hooks_on_the_outputs_of_a_multi_output_node_and_in_grad():
    x = leaf(3, 2)
    a, b, c = x.unbind(0)
    norms = {}
    for name, t in (("a", a), ("c", c)):
        t.register_hook(lambda g, name=name: norms.__setitem__(name, float(np.abs(g.numpy()).sum())))
    (a * 2 + c * 3).sum().backward()
    assert norms == {"a": 4.0, "c": 6.0}
    norms.clear()
    a, b, c = x.unbind(0)
    a.register_hook(lambda g: norms.__setitem__("a", 1))
    autograd.grad((a * b).sum(), x)  # hooks run under autograd.grad too
    assert norms == {"a": 1}


def test_removing_a_hook_on_a_leaf():
    x = leaf(2)
    h = x.register_hook(lambda g: g * 0)
    h.remove()
    x.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])
    with x.register_hook(lambda g: g * 0):  # a handle is also a context manager
        pass
    x.grad = None
    x.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0])


def test_bad_hooks():
    x = leaf(3)
    with pytest.raises(TypeError, match=r"register_hook: the hook must be callable, got int"):
        x.register_hook(3)
    with pytest.raises(RuntimeError, match=r"register_hook: this tensor does not require grad"):
        tg.zeros(3).register_hook(lambda g: g)
    x.register_hook(lambda g: g.sum())
    with pytest.raises(tg.ShapeError, match=r"hook '<lambda>' on the gradient of a leaf returned shape \(\) on cpu; "
                                            r"the gradient has shape \(3,\) on cpu"):
        (x * 2).sum().backward()
    y = leaf(3)
    z = y * 2
    z.register_hook(lambda g: g.numpy())
    with pytest.raises(TypeError, match=r"hook '<lambda>' on the gradient of Mul returned a ndarray"):
        z.sum().backward()


def test_hooks_trace_bptt_through_the_composed_cells():
    # the gradient reaching each timestep's state, as the BPTT example prints it
    cell = nn.RNNCell(2, 3, dtype=F64)
    x = leaf(6, 1, 2)
    h, norms = None, {}
    for t, x_t in enumerate(x.unbind(0)):
        h = cell(x_t, h)
        h.register_hook(lambda g, t=t: norms.__setitem__(t, float(np.linalg.norm(g.numpy()))))
    h.sum().backward()
    assert sorted(norms) == list(range(6))
    assert norms[5] == pytest.approx(np.sqrt(3))


# ----------------------------------------------------------------------------- anomaly mode
def test_detect_anomaly_names_the_op_and_the_line_that_made_it():
    x = tg.tensor([1.0, 0.0, 4.0], dtype=F64, requires_grad=True)
    with autograd.detect_anomaly():
        line = inspect.currentframe().f_lineno + 1
        y = x.sqrt()  # d sqrt(x)/dx = 0.5 / sqrt(x): infinite at 0
        with np.errstate(divide="ignore"), pytest.raises(autograd.AnomalyError) as e:
            y.sum().backward()
    msg = str(e.value)
    assert "the backward of Sqrt produced infinity in the gradient of its input 0 (shape (3,))" in msg
    assert f"{os.path.basename(__file__)}:{line} in test_detect_anomaly_names_the_op_and_the_line_that_made_it" in msg


def test_detect_anomaly_names_a_layer_call_and_counts_nans():
    m = nn.GRU(2, 3, dtype=F64)
    x = leaf(4, 1, 2)
    with autograd.detect_anomaly():
        line = inspect.currentframe().f_lineno + 1
        out, _ = m(x)
        g = np.zeros(out.shape)
        g[0, 0, 0] = np.nan
        with np.errstate(invalid="ignore"), pytest.raises(autograd.AnomalyError) as e:
            out.backward(g)
    msg = str(e.value)
    assert "the backward of GRUSequence produced" in msg and " NaN in the gradient of its input 0 (shape (4, 1, 2))" in msg
    assert f"{os.path.basename(__file__)}:{line} in test_detect_anomaly_names_a_layer_call" in msg


def test_without_anomaly_mode_nan_gradients_pass_silently():
    x = tg.tensor([0.0], dtype=F64, requires_grad=True)
    with np.errstate(divide="ignore"):
        x.sqrt().sum().backward()
    assert np.isinf(x.grad.numpy()[0])


def test_detect_anomaly_as_decorator_restores_the_mode():
    @autograd.detect_anomaly()
    def f():
        return autograd.is_anomaly_enabled()

    assert f() is True and autograd.is_anomaly_enabled() is False


# ----------------------------------------------------------------------------- graph pictures
def _visit_labels(dot):
    out = {}
    for line in dot.splitlines():
        if 'label="#' in line:
            label = line.split('label="#', 1)[1]
            k, name = label.split(" ", 1)
            out[int(k)] = name.split("\\n")[0]
    return out


def test_to_dot_numbers_nodes_in_the_order_backward_visits_them():
    x, w = leaf(2, 3), leaf(3, 3, seed=1)
    h = (x @ w).tanh()
    y = (h * h + h).sum()
    labels = _visit_labels(tg.viz.to_dot(y))
    assert labels[1] == "Sum" and labels[len(labels)] == "MatMul"
    # and that is the order in which gradients really arrive: hooks fire node by node
    arrived = []
    for name, t in (("Tanh", h), ("MatMul", h._ctx.inputs[0])):
        t.register_hook(lambda g, name=name: arrived.append(name))
    y.backward()
    assert arrived == ["Tanh", "MatMul"]
    pos = {v: k for k, v in labels.items()}
    assert pos["Tanh"] < pos["MatMul"]
    # a freed graph is drawn without numbers
    assert "#" not in tg.viz.to_dot(y).split("rankdir")[1]


def test_to_dot_visit_order_covers_a_bptt_graph():
    m = nn.LSTM(2, 3, impl="composed", dtype=F64)
    out, _ = m(leaf(4, 1, 2))
    labels = _visit_labels(tg.viz.to_dot(out.sum()))
    assert sorted(labels) == list(range(1, len(labels) + 1)) and len(labels) > 40


def test_render_writes_svg_and_png(tmp_path):
    pytest.importorskip("graphviz", reason="the viz extra (graphviz package) is not installed")
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program is not installed (apt-get install graphviz)")
    y = (leaf(2) * 3).sum()
    svg = tg.viz.render(y, tmp_path / "g.svg")
    assert open(svg, "rb").read().lstrip().startswith((b"<?xml", b"<svg"))
    png = tg.viz.render(y, str(tmp_path / "g.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_render_errors_say_how_to_install(tmp_path, monkeypatch):
    y = (leaf(2) * 3).sum()
    with pytest.raises(ValueError, match=r"viz.render: path must end in .svg or .png, got '.*g.pdf'"):
        tg.viz.render(y, tmp_path / "g.pdf")
    monkeypatch.setitem(sys.modules, "graphviz", None)  # as if the package were missing
    with pytest.raises(RuntimeError, match=r"needs the graphviz Python package.*pip install -e '.\[viz\]'"):
        tg.viz.render(y, tmp_path / "g.svg")
    monkeypatch.delitem(sys.modules, "graphviz")
    pytest.importorskip("graphviz", reason="the viz extra (graphviz package) is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot program on it
    with pytest.raises(RuntimeError, match=r"Graphviz's dot program was not found on PATH.*apt-get install graphviz"):
        tg.viz.render(y, tmp_path / "g.svg")
