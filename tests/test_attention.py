"""nn.AdditiveAttention: against Bahdanau's equations in NumPy, gradient checks, masking,
the cached key projection, and errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.nn.attention import AdditiveAttention


def np_attention(params, q, keys, values, mask):
    wq, wk, bk, v = params["query_proj.weight"], params["key_proj.weight"], params["key_proj.bias"], \
        params["score.weight"]
    e = np.tanh(keys @ wk.T + bk + (q @ wq.T)[None]) @ v[0]  # (S, B)
    if mask is not None:
        e = np.where(mask, e, -np.inf)
    a = np.exp(e - e.max(axis=0))
    a = a / a.sum(axis=0)
    return (a[:, :, None] * values).sum(axis=0), a


def setup(device, S=5, B=3, dq=4, dk=6, h=7, seed=0):
    rng = np.random.default_rng(seed)
    attn = AdditiveAttention(dq, dk, h, dtype=tg.float64, device=device)
    q = rng.standard_normal((B, dq))
    keys = rng.standard_normal((S, B, dk))
    return attn, q, keys, rng


def test_exported_from_nn():
    assert nn.AdditiveAttention is AdditiveAttention


@pytest.mark.parametrize("with_values,with_mask", [(False, False), (True, False), (False, True)])
def test_matches_numpy(device, with_values, with_mask):
    attn, q, keys, rng = setup(device)
    values = rng.standard_normal((5, 3, 2)) if with_values else keys
    mask = None
    if with_mask:
        mask = rng.random((5, 3)) < 0.6
        mask[0] = True  # every column keeps at least one position
    ctx, w = attn(tg.tensor(q, device=device), tg.tensor(keys, device=device),
                  values=tg.tensor(values, device=device) if with_values else None,
                  mask=None if mask is None else tg.tensor(mask, device=device))
    ref_ctx, ref_w = np_attention(attn.state_dict(), q, keys, values, mask)
    np.testing.assert_allclose(ctx.numpy(), ref_ctx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(w.numpy(), ref_w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(w.numpy().sum(axis=0), 1.0, rtol=1e-12)
    if mask is not None:
        assert (w.numpy()[~mask] == 0.0).all()


def test_gradcheck(device):
    attn, q, keys, rng = setup(device, S=4, B=2, dq=3, dk=3, h=4)
    qt = tg.tensor(q, device=device, requires_grad=True)
    kt = tg.tensor(keys, device=device, requires_grad=True)
    vt = tg.tensor(rng.standard_normal((4, 2, 2)), device=device, requires_grad=True)
    params = list(attn.parameters())
    assert tg.gradcheck(lambda q, k, v, *ps: attn(q, k, values=v), [qt, kt, vt, *params])
    assert tg.gradgradcheck(lambda q, k, v, *ps: attn(q, k, values=v), [qt, kt, vt, *params], fast_mode=True)


@settings(max_examples=10)
@given(data=st.data())
def test_gradcheck_drawn_shapes(device, data):
    S, B, dq, dk, h, dv = (data.draw(st.integers(1, n)) for n in (5, 3, 3, 3, 4, 3))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    attn = AdditiveAttention(dq, dk, h, dtype=tg.float64, device=device)
    q = tg.tensor(rng.standard_normal((B, dq)), device=device, requires_grad=True)
    k = tg.tensor(rng.standard_normal((S, B, dk)), device=device, requires_grad=True)
    v = tg.tensor(rng.standard_normal((S, B, dv)), device=device, requires_grad=True)
    mask = rng.random((S, B)) < 0.7
    mask[rng.integers(S, size=B), np.arange(B)] = True  # something to attend to in every column
    m = tg.tensor(mask, device=device)
    assert tg.gradcheck(lambda q, k, v, *ps: attn(q, k, values=v, mask=m), [q, k, v, *attn.parameters()])


def test_gradcheck_masked_and_masked_keys_get_no_gradient(device):
    attn, q, keys, rng = setup(device, S=4, B=2, dq=3, dk=3, h=4)
    mask = np.array([[True, True], [True, False], [False, True], [True, False]])
    qt = tg.tensor(q, device=device, requires_grad=True)
    kt = tg.tensor(keys, device=device, requires_grad=True)
    m = tg.tensor(mask, device=device)
    assert tg.gradcheck(lambda q, k, *ps: attn(q, k, mask=m), [qt, kt, *attn.parameters()])
    ctx, _ = attn(qt, kt, mask=m)
    kt.grad = None
    ctx.sum().backward()
    assert (kt.grad.numpy()[~mask] == 0.0).all()


def test_cached_key_projection_gives_the_same_result(device):
    attn, q, keys, _ = setup(device)
    qt, kt = tg.tensor(q, device=device), tg.tensor(keys, device=device)
    a, wa = attn(qt, kt)
    b, wb = attn(qt, kt, keys_proj=attn.project_keys(kt))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(wa.numpy(), wb.numpy())


def test_errors_name_the_layer_and_shapes():
    attn = AdditiveAttention(4, 6, 7)
    keys = tg.zeros(5, 3, 6)
    with pytest.raises(tg.ShapeError, match=r"keys must have shape \(S, B, 6\) .* got \(5, 3, 2\)"):
        attn(tg.zeros(3, 4), tg.zeros(5, 3, 2))
    with pytest.raises(tg.ShapeError, match=r"query must have shape \(3, 4\) .* got \(2, 4\)"):
        attn(tg.zeros(2, 4), keys)
    with pytest.raises(tg.ShapeError, match=r"values must have shape \(5, 3, Dv\)"):
        attn(tg.zeros(3, 4), keys, values=tg.zeros(4, 3, 2))
    with pytest.raises(tg.ShapeError, match=r"mask must have shape \(5, 3\)"):
        attn(tg.zeros(3, 4), keys, mask=np.ones((3, 5), dtype=bool))
    with pytest.raises(tg.DTypeError, match=r"mask must be boolean"):
        attn(tg.zeros(3, 4), keys, mask=np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"a batch column of the mask is all False"):
        m = np.ones((5, 3), dtype=bool)
        m[:, 1] = False
        attn(tg.zeros(3, 4), keys, mask=m)
    with pytest.raises(tg.ShapeError, match=r"keys_proj must have shape \(5, 3, 7\)"):
        attn(tg.zeros(3, 4), keys, keys_proj=tg.zeros(5, 3, 6))
