"""Every op's backward rule, run both ways: on arrays (a plain backward) and as create_graph
runs it (on Tensors through tensor_xp's namespace, or the op's composed form), for the same
output gradients. They must agree: a wrong mapping in the tensor namespace, or a composed
form that is not the op, would otherwise give a wrong first derivative whose second
derivative checks out against its own numerical derivative.

The ops are found by introspection (every `Function` subclass defined in a module of
`tinygrad_rnn.ops`; names starting with "_" are shared base classes), so a new op fails
here until it has a case. To add one: put its name in CASES with a function that, given
`d` (draws inputs on the test's device, see Draw), returns (fn, inputs) where fn(*inputs)
calls the op; ops that refuse create_graph by design (a `create_graph_error` attribute)
go in REFUSES instead. docs/ops.md says the same for users' own ops.
"""
import importlib
import inspect
import pkgutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
import tinygrad_rnn.ops
from tinygrad_rnn.autograd import CreateGraphError, Function
from tinygrad_rnn.gradcheck import create_graph_disagreements
from tinygrad_rnn.ops import elementwise as ew, linalg, nn as nnops, reduce as red, rnn, scan, shape as sh
from tinygrad_rnn.testing import strategies as tgst


def discover_ops():
    """{name: class} of every Function subclass defined in tinygrad_rnn.ops.*, bases excepted."""
    found = {}
    for info in pkgutil.iter_modules(tinygrad_rnn.ops.__path__):
        mod = importlib.import_module(f"tinygrad_rnn.ops.{info.name}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if issubclass(cls, Function) and cls.__module__ == mod.__name__ and not name.startswith("_"):
                found[name] = cls
    return found


OPS = discover_ops()


class Draw:
    """Inputs for a case, drawn by hypothesis on the test's device."""

    def __init__(self, data, device):
        self.data, self.device = data, device

    def __call__(self, strategy):
        return self.data.draw(strategy)

    def t(self, shape, lo=-2.0, hi=2.0):
        """A float64 leaf that requires grad."""
        return self.data.draw(tgst.tensors(shape=shape, device=self.device, min_value=lo, max_value=hi))

    def raw(self, host):
        """A raw array on the device (indices, masks: what ops take as constants)."""
        return tg.device(self.device).from_host(np.asarray(host))

    def index(self, size, shape):
        return self.raw(self.data.draw(tgst.index_arrays(size, shape=shape)))

    def shape(self, min_dims=1, max_dims=3):
        return self.data.draw(tgst.shapes(min_dims=min_dims, max_dims=max_dims, max_side=3))

    def axis(self, ndim):
        return self.data.draw(st.integers(-ndim, ndim - 1))

    def one_of(self, *options):
        return self.data.draw(st.sampled_from(options))


def unary(op, lo=-2.0, hi=2.0):
    return lambda d: (op.apply, [d.t(d.shape(0), lo, hi)])


def binary(op, lo=-2.0, hi=2.0):
    def case(d):
        (sa, sb), _ = d(tgst.mutually_broadcastable_shapes(2, max_dims=3, max_side=3))
        return op.apply, [d.t(sa), d.t(sb, lo, hi)]
    return case


def reduction(op):
    def case(d):
        x = d.t(d.shape())
        axis = d.one_of(None, d.axis(x.ndim), tuple(sorted({0, x.ndim - 1})))
        keepdims = d.one_of(False, True)
        return (lambda a: op.apply(a, axis=axis, keepdims=keepdims)), [x]
    return case


def softmax_like(op):
    def case(d):
        x = d.t(d.shape())
        return (lambda a: op.apply(a, d.axis(x.ndim))), [x]
    return case


def matmul(d):
    m, k, n = (d(st.integers(1, 3)) for _ in range(3))
    sa, sb = d.one_of(((m, k), (k, n)), ((k,), (k, n)), ((m, k), (k,)), ((2, m, k), (k, n)), ((m, k), (2, k, n)))
    return linalg.MatMul.apply, [d.t(sa), d.t(sb)]


def where(d):
    shape = d.shape(0)
    cond = d.raw(d(tgst.arrays(shape)) > 0)
    return (lambda a, b: ew.Where.apply(cond, a, b)), [d.t(shape), d.t(shape)]


def cross_entropy(d):
    n, c = d(st.integers(1, 4)), d(st.integers(1, 4))
    targets = d(tgst.index_arrays(c, shape=(n,)))
    ignore = d.one_of(None, 0, -100)
    if ignore == -100:
        targets = np.where(d(tgst.arrays((n,))) > 1.0, -100, targets)
    reduction_ = d.one_of("mean", "sum", "none")
    if reduction_ == "mean" and ignore is not None and not np.any(targets != ignore):
        reduction_ = "sum"  # a mean over no target is 0/0
    t = d.raw(targets)
    return (lambda a: nnops.CrossEntropy.apply(a, t, reduction=reduction_, ignore_index=ignore)), [d.t((n, c))]


def embedding(d):
    v, dim = d(st.integers(1, 4)), d(st.integers(1, 3))
    idx = d.index(v, d.shape(1, 2))
    pad = d.one_of(None, 0)
    return (lambda w: nnops.Embedding.apply(idx, w, padding_idx=pad)), [d.t((v, dim))]


def dropout(d):
    shape = d.shape(0)
    mask = d.raw(np.where(d(tgst.arrays(shape)) > 0, 2.0, 0.0))  # p = 0.5: 0 or 1 / (1 - p)
    return (lambda a: nnops.Dropout.apply(a, mask)), [d.t(shape)]


def cell(kind):
    def case(d):
        b, h = d(st.integers(1, 3)), d(st.integers(1, 3))
        g = {"RNN": 1, "LSTM": 4, "GRU": 3}[kind] * h
        gx, gh, state = d.t((b, g)), d.t((b, g)), d.t((b, h))
        if kind == "RNN":
            nl = d.one_of("tanh", "relu")
            return (lambda x, y: rnn.RNNCellFn.apply(x, y, nl)), [gx, gh]
        if kind == "LSTM":
            return rnn.LSTMCellFn.apply, [gx, gh, state]
        return rnn.GRUCellFn.apply, [gx, gh, d.t((g,)), state]
    return case


def sequence(kind):
    op = {"RNN": rnn.RNNSequence, "LSTM": rnn.LSTMSequence, "GRU": rnn.GRUSequence}[kind]

    def case(d):
        T, b, i, h = (d(st.integers(1, 3)) for _ in range(4))
        g = op.gates * h
        reverse, nl = d.one_of(False, True), d.one_of("tanh", "relu")
        ins = [d.t((T, b, i)), d.t((g, i), -1, 1), d.t((g, h), -1, 1), d.t((g,)), d.t((g,)), d.t((b, h))]
        c0 = [d.t((b, h))] if op.has_cell else []

        def fn(x, w_ih, w_hh, b_ih, b_hh, h0, c=None):
            kw = {"nonlinearity": nl} if kind == "RNN" else {}
            return op.apply(x, w_ih, w_hh, b_ih, b_hh, h0, c, reverse=reverse, **kw)
        return fn, ins + c0
    return case


def lstm_proj_sequence(d):
    T, b, i, h, p = (d(st.integers(1, 3)) for _ in range(5))
    reverse = d.one_of(False, True)
    ins = [d.t((T, b, i)), d.t((4 * h, i), -1, 1), d.t((4 * h, p), -1, 1), d.t((4 * h,)), d.t((4 * h,)),
           d.t((p, h), -1, 1), d.t((b, p)), d.t((b, h))]
    return (lambda *a: rnn.LSTMProjSequence.apply(*a, reverse=reverse)), ins


def split(d):
    x = d.t(d.shape())
    axis = d.axis(x.ndim)
    n = x.shape[axis]
    sizes = [1, n - 1] if n > 1 else [n]
    keep = d.one_of(slice(None), slice(0, 1))  # an unused output gets zeros
    return (lambda a: sh.Split.apply(a, sizes, axis)[keep]), [x]


def unbind(d):
    x = d.t(d.shape())
    axis = d.axis(x.ndim)
    return (lambda a: sh.Unbind.apply(a, axis)), [x]


def concat_or_stack(op, stack):
    def case(d):
        s = d.shape()
        axis = d.axis(s and len(s) + stack)
        other = list(s)
        if not stack:
            other[axis] = d(st.integers(1, 3))
        return (lambda a, b: op.apply(a, b, axis=axis)), [d.t(s), d.t(tuple(other))]
    return case


def permute(d):
    x = d.t(d.shape())
    axes = tuple(d(st.permutations(range(x.ndim))))
    return (lambda a: sh.Permute.apply(a, axes)), [x]


def reshape(d):
    x = d.t(d.shape())
    return (lambda a: sh.Reshape.apply(a, (-1,) + (1,) * d(st.integers(0, 1)))), [x]


def expand(d):
    s = d.shape()
    target = (2,) + tuple(3 if n == 1 else n for n in s)
    return (lambda a: sh.Expand.apply(a, target)), [d.t(s)]


def getitem(d):
    cols = d(st.integers(1, 3))
    x = d.t((3, cols))
    # basic keys, and integer arrays on every axis (the standard's form; repeats accumulate)
    key = d.one_of((slice(1, None), Ellipsis), (None, slice(None, None, 2), Ellipsis),
                   (d.index(3, (4,)), d.index(cols, (4,))))
    return (lambda a: sh.GetItem.apply(a, key)), [x]


def index_add(d):
    tail = d.one_of((), (2,))
    if d.one_of(True, False):
        idx = d(tgst.index_arrays(3, shape=(4,)))
        return (lambda v: sh.IndexAdd.apply(v, (3,) + tail, d.raw(idx), True)), [d.t((4,) + tail)]
    return (lambda v: sh.IndexAdd.apply(v, (3,) + tail, (slice(1, 3), Ellipsis), False)), [d.t((2,) + tail)]


def to_device(d):
    other = "strict" if d.device != "strict" else "cpu"
    return (lambda a: a.to(other) * 1.5), [d.t(d.shape(0))]


def extremum_at(op):
    def case(d):
        x = d.t(d.shape())
        axis, keepdims = d.axis(x.ndim) % x.ndim, d.one_of(False, True)
        xp = tg.device(d.device).xp
        pick = xp.argmax if op.reduce == "max" else xp.argmin
        index = xp.reshape(pick(x.data, axis=axis), tuple(1 if i == axis else n for i, n in enumerate(x.shape)))
        return (lambda a: op.apply(a, axis, keepdims, index=index)), [x]
    return case


def norm(d):
    x = d.t(d.shape())
    axis = d.one_of(None, d.axis(x.ndim) % x.ndim)
    p, keepdims = d.one_of(1.0, 2.0, 3.0), d.one_of(False, True)
    return (lambda a: red.Norm.apply(a, p=p, axis=axis, keepdims=keepdims)), [x]


def flip(d):
    x = d.t(d.shape())
    axes = tuple(sorted({d.axis(x.ndim) % x.ndim, d.axis(x.ndim) % x.ndim}))
    return (lambda a: sh.Flip.apply(a, axes)), [x]


def gather(d):
    x = d.t((3, 2))
    key = sh.along_axis_key(tg.device(d.device).xp, d.index(3, (4, 2)), 0)
    return (lambda a: sh.Gather.apply(a, key)), [x]


CASES = {
    "Abs": unary(ew.Abs), "Add": binary(ew.Add), "Sub": binary(ew.Sub), "Mul": binary(ew.Mul),
    "Div": binary(ew.Div, 0.5, 2.0), "Neg": unary(ew.Neg), "Exp": unary(ew.Exp), "Log": unary(ew.Log, 0.5, 3.0),
    "Sqrt": unary(ew.Sqrt, 0.5, 3.0), "Tanh": unary(ew.Tanh), "Sigmoid": unary(ew.Sigmoid), "Relu": unary(ew.Relu),
    "Pow": lambda d: (ew.Pow.apply, [d.t((2, 3), 0.5, 2.0), d.t((3,))]),
    "Maximum": binary(ew.Maximum), "Minimum": binary(ew.Minimum),
    "Clip": lambda d: ((lambda a: ew.Clip.apply(a, d.one_of(None, -0.5), 0.5)), [d.t(d.shape(0))]),
    "Where": where,
    "Cast": lambda d: ((lambda a: ew.Cast.apply(a, tg.float32)), [d.t(d.shape(0))]),
    "MatMul": matmul,
    "Sum": reduction(red.Sum), "Mean": reduction(red.Mean), "Max": reduction(red.Max), "Min": reduction(red.Min),
    "LogSumExp": reduction(red.LogSumExp),
    "Softmax": softmax_like(nnops.Softmax), "LogSoftmax": softmax_like(nnops.LogSoftmax),
    "CrossEntropy": cross_entropy, "Embedding": embedding, "Dropout": dropout,
    "RNNCellFn": cell("RNN"), "LSTMCellFn": cell("LSTM"), "GRUCellFn": cell("GRU"),
    "RNNSequence": sequence("RNN"), "LSTMSequence": sequence("LSTM"), "GRUSequence": sequence("GRU"),
    "LSTMProjSequence": lstm_proj_sequence,
    "CumSum": lambda d: (lambda x: ((lambda a: scan.CumSum.apply(a, d.axis(x.ndim))), [x]))(d.t(d.shape())),
    "Softplus": unary(scan.Softplus), "LogSigmoid": unary(scan.LogSigmoid),
    "Alias": lambda d: ((lambda a: sh.Alias.apply(a) * a), [d.t(d.shape(0))]),
    "Concat": concat_or_stack(sh.Concat, False), "Stack": concat_or_stack(sh.Stack, True),
    "Split": split, "Unbind": unbind, "Permute": permute, "Reshape": reshape, "Expand": expand,
    "GetItem": getitem, "IndexAdd": index_add, "ToDevice": to_device,
    "Sin": unary(ew.Sin), "Cos": unary(ew.Cos), "Erf": unary(ew.Erf), "Expm1": unary(ew.Expm1),
    "Log1p": unary(ew.Log1p, -0.5, 2.0), "Rsqrt": unary(ew.Rsqrt, 0.5, 3.0), "Square": unary(ew.Square),
    "MaxAt": extremum_at(red.MaxAt), "MinAt": extremum_at(red.MinAt), "Norm": norm, "Prod": reduction(red.Prod),
    "Clone": unary(sh.Clone), "Flip": flip, "Gather": gather,
}

# ops that refuse create_graph by design (their `create_graph_error` says why), each with a case
# that reaches it: the refusal itself is checked
REFUSES = {
    "LogCumSumExp": lambda d: (lambda x: ((lambda a: scan.LogCumSumExp.apply(a, 0)), [x]))(d.t((3, 2))),
}

# the same rule in two namespaces differs by rounding only; a composed form by a few roundings
TOLERANCE = dict(atol=1e-10, rtol=1e-8)
EXAMPLES = settings(max_examples=max(3, settings.default.max_examples // 5))


def ops_in_graph(outs):
    seen, stack = set(), [o for o in (outs if isinstance(outs, (tuple, list)) else (outs,))]
    while stack:
        t = stack.pop()
        if t._ctx is not None and t._ctx not in seen:
            seen.add(t._ctx)
            stack.extend(i for i in t._ctx.inputs if isinstance(i, tg.Tensor))
    return {n.fn for n in seen}


def test_every_op_has_a_case_or_refuses_by_design():
    missing = sorted(set(OPS) - set(CASES) - set(REFUSES))
    assert not missing, (f"add a case for {', '.join(missing)} to CASES in tests/test_create_graph_agreement.py "
                         f"(or, if it refuses create_graph by design, to REFUSES): see docs/ops.md")
    assert not set(CASES) - set(OPS), f"CASES names ops that do not exist: {sorted(set(CASES) - set(OPS))}"
    refusing = {n for n, c in OPS.items() if getattr(c, "create_graph_error", None)}
    assert refusing == set(REFUSES), (f"ops with a create_graph_error: {sorted(refusing)}; REFUSES lists "
                                      f"{sorted(REFUSES)}: list each one that refuses by design, and no other")


@pytest.mark.parametrize("name", sorted(set(OPS) - set(REFUSES)))
@EXAMPLES
@given(data=st.data())
def test_every_backward_rule_agrees_on_arrays_and_on_tensors(device, name, data):
    if name not in CASES:
        pytest.fail(f"add a case for {name} to CASES in tests/test_create_graph_agreement.py (see docs/ops.md)")
    fn, inputs = CASES[name](Draw(data, device))
    assert OPS[name] in ops_in_graph(fn(*inputs)), f"the case for {name} does not reach a {name} node"
    assert create_graph_disagreements(fn, inputs, **TOLERANCE) == []


@pytest.mark.parametrize("name", sorted(REFUSES))
@EXAMPLES
@given(data=st.data())
def test_ops_that_refuse_create_graph_say_so_naming_themselves(device, name, data):
    fn, inputs = REFUSES[name](Draw(data, device))
    with pytest.raises(CreateGraphError, match=rf"{name}: create_graph=True: "):
        create_graph_disagreements(fn, inputs)


def test_a_planted_mapping_fails_here_naming_the_ops(monkeypatch):
    # every value of the tensor namespace's exp 1% too large: each op whose rule calls xp.exp
    # gets another first derivative under create_graph, and is named
    from tinygrad_rnn import tensor_xp
    monkeypatch.setattr(tensor_xp.TensorNamespace, "exp", staticmethod(lambda x: x.exp() * 1.01))
    x = tg.tensor(np.random.default_rng(0).standard_normal((2, 3)), dtype=tg.float64, requires_grad=True)
    for op, name in ((red.LogSumExp, "LogSumExp"), (nnops.LogSoftmax, "LogSoftmax")):
        found = create_graph_disagreements(lambda a: op.apply(a, axis=1), [x], **TOLERANCE)
        assert len(found) == 1 and found[0].startswith(f"{name}: input 0 (shape (2, 3)): on Tensors")
    assert create_graph_disagreements(lambda a: ew.Exp.apply(a), [x], **TOLERANCE) == []  # its rule: grad * out
