"""nn.utils.rnn: packing and padding against loops written here from PyTorch's definitions,
their gradients against central differences (twice), and the errors bad lengths raise."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn.ops.rnn import PackedSteps, lengths_of
from tinygrad_rnn.errors import DTypeError, ShapeError
from tinygrad_rnn.nn.utils.rnn import (PackedSequence, pack_padded_sequence, pack_sequence, pad_packed_sequence,
                                       pad_sequence, unpack_sequence, unpad_sequence)

lengths_st = st.lists(st.integers(0, 4), min_size=1, max_size=4)


def T(a, device, requires_grad=True):
    return tg.tensor(np.asarray(a, dtype=np.float64), dtype=tg.float64, device=device, requires_grad=requires_grad)


def np_pack(x, lengths, batch_first):
    """PyTorch's packing from its definition: sort stably by decreasing length, then timestep-major."""
    if batch_first:
        x = np.swapaxes(x, 0, 1)
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])
    rows, bs = [], []
    for t in range(max(lengths)):
        active = [b for b in order if lengths[b] > t]
        bs.append(len(active))
        rows += [x[t, b] for b in active]
    return np.array(rows).reshape((-1,) + x.shape[2:]), np.array(bs, dtype=np.int64), np.array(order)


@given(lengths=lengths_st, batch_first=st.booleans(), extra=st.integers(0, 1), feat=st.integers(1, 2),
       data=st.data())
def test_pack_pad_against_definition(device, lengths, batch_first, extra, feat, data):
    Tm, B = max(lengths) + extra, len(lengths)
    if Tm == 0:
        Tm = 1
    shape = (B, Tm, feat) if batch_first else (Tm, B, feat)
    x_np = data.draw(st.builds(lambda s: np.random.default_rng(s).standard_normal(shape), st.integers(0, 99)))
    x = T(x_np, device)
    lens = data.draw(st.sampled_from([lengths, np.array(lengths), tg.tensor(np.array(lengths), device=device)]))
    p = pack_padded_sequence(x, lens, batch_first=batch_first, enforce_sorted=False)
    want, bs, order = np_pack(x_np, lengths, batch_first)
    np.testing.assert_array_equal(p.batch_sizes.numpy(), bs)
    np.testing.assert_array_equal(p.sorted_indices.numpy(), order)
    np.testing.assert_array_equal(p.unsorted_indices.numpy()[order], np.arange(B))
    assert p.data.device.name == tg.device(device).name
    np.testing.assert_array_equal(p.data.numpy(), want.reshape(p.data.shape))
    padded, out_lens = pad_packed_sequence(p, batch_first=batch_first, padding_value=-7.0, total_length=Tm)
    np.testing.assert_array_equal(out_lens.numpy(), lengths)
    mask = np.arange(Tm)[:, None] < np.array(lengths)[None, :]
    if batch_first:
        mask = mask.T
    np.testing.assert_array_equal(padded.numpy(), np.where(mask[..., None], x_np, -7.0))
    for seq, n, b in zip(unpack_sequence(p), lengths, range(B)):
        np.testing.assert_array_equal(seq.numpy(), (x_np[b] if batch_first else x_np[:, b])[:n])


@given(lengths=lengths_st, batch_first=st.booleans())
def test_pack_and_pad_gradients(device, lengths, batch_first):
    Tm, B = max(max(lengths), 1), len(lengths)
    x = T(np.random.default_rng(len(lengths)).standard_normal((B, Tm, 2) if batch_first else (Tm, B, 2)), device)

    def round_trip(x):
        p = pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False)
        return pad_packed_sequence(p, batch_first=batch_first, padding_value=0.5, total_length=Tm)[0] * x

    assert tg.gradcheck(round_trip, [x])
    assert tg.gradgradcheck(round_trip, [x], fast_mode=True)


def test_pad_packed_gradient_to_data(device):
    x = T(np.random.default_rng(1).standard_normal((3, 3, 2)), device)
    p = pack_padded_sequence(x, [3, 1, 2], enforce_sorted=False)
    data = T(p.data.numpy(), device)
    assert tg.gradcheck(lambda d: pad_packed_sequence(PackedSequence(d, *p[1:]))[0], [data])


def test_pad_sequence_and_unpad(device):
    seqs_np = [np.random.default_rng(i).standard_normal((n, 2)) for i, n in enumerate([2, 0, 3])]
    seqs = [T(s, device) for s in seqs_np]
    for batch_first in (False, True):
        padded = pad_sequence(seqs, batch_first=batch_first, padding_value=1.5)
        want = np.full((3, 3, 2), 1.5)
        for b, s in enumerate(seqs_np):
            want[b, :len(s)] = s
        np.testing.assert_array_equal(padded.numpy(), want if batch_first else np.swapaxes(want, 0, 1))
        for got, s in zip(unpad_sequence(padded, [2, 0, 3], batch_first=batch_first), seqs_np):
            np.testing.assert_array_equal(got.numpy(), s)
    assert tg.gradcheck(lambda a, b, c: pad_sequence([a, b, c]), seqs)


def test_pack_sequence_sorted_like_pytorch(device):
    a, b, c = (T(np.full((n, 1), n), device) for n in (3, 2, 1))
    p = pack_sequence([a, b, c])
    assert p.sorted_indices is None and p.unsorted_indices is None
    np.testing.assert_array_equal(p.batch_sizes.numpy(), [3, 2, 1])
    np.testing.assert_array_equal(p.data.numpy().ravel(), [3, 2, 1, 3, 2, 3])
    assert p.batch_size == 3
    with pytest.raises(ValueError, match="must be sorted in decreasing order when `enforce_sorted` is True"):
        pack_sequence([c, a])


def test_zero_length_keeps_batch_size(device):
    x = T(np.ones((2, 3, 1)), device)
    p = pack_padded_sequence(x, [2, 1, 0])  # sorted: still the indices, as the batch size needs them
    assert p.batch_size == 3
    padded, lens = pad_packed_sequence(p)
    assert padded.shape == (2, 3, 1) and lens.numpy().tolist() == [2, 1, 0]
    empty = pack_padded_sequence(x, [0, 0, 0])
    assert empty.data.shape == (0, 1) and empty.batch_size == 3
    assert pad_packed_sequence(empty, total_length=2)[0].shape == (2, 3, 1)


def test_to_moves_data_and_indices():
    x = T(np.ones((2, 2, 1)), "cpu")
    p = pack_padded_sequence(x, [1, 2], enforce_sorted=False)
    q = p.to("strict")
    assert q.data.device.name == "strict" and q.sorted_indices.device.name == "strict"
    assert q.batch_sizes.device.name == "cpu"
    assert p.to(tg.float32).data.dtype is tg.float32
    assert isinstance(q, PackedSequence) and q.to("strict") is q


@pytest.mark.parametrize("lengths, err, match", [
    ([3, 5], ShapeError, "longer than the sequences"),
    ([3, -1], ValueError, "non-negative"),
    ([2.5, 1], DTypeError, "integers"),
    (["a", "b"], DTypeError, "integers"),
    ([3, 2, 1], ShapeError, "3 lengths for a batch of 2"),
    ([1, 3], ValueError, "You can pass `enforce_sorted=False`"),
    (3, TypeError, "scalar"),
])
def test_bad_lengths(lengths, err, match):
    x = T(np.ones((4, 2, 1)), "cpu")
    with pytest.raises(err, match=match):
        pack_padded_sequence(x, lengths)


def test_bad_inputs():
    with pytest.raises(TypeError, match="PackedSequence"):
        pad_packed_sequence(tg.ones(2, 2))
    with pytest.raises(ShapeError, match="trailing shape"):
        pad_sequence([tg.ones(2, 2), tg.ones(2, 3)])
    with pytest.raises(ValueError, match="total_length=1 is shorter"):
        pad_packed_sequence(pack_sequence([tg.ones(2, 1)]), total_length=1)
    with pytest.raises(ShapeError, match="at least 2 dimensions"):
        pack_padded_sequence(tg.ones(3), [3])


@given(st.lists(st.integers(0, 6), max_size=8))
def test_the_lengths_come_back_from_the_batch_sizes(lengths):
    lengths = sorted(lengths, reverse=True)
    steps = PackedSteps(lengths)
    assert lengths_of(steps.bs, len(lengths)) == lengths
    assert steps.bs == [sum(n > t for n in lengths) for t in range(steps.T)]
