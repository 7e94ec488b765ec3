"""Variable-length sequences, PyTorch's `torch.nn.utils.rnn`: `PackedSequence`,
`pack_padded_sequence`, `pad_packed_sequence`, `pack_sequence`, `pad_sequence`,
`unpad_sequence`, `unpack_sequence`.

A packed batch keeps only the real timesteps: its rows sorted by length (longest first),
`data` holds timestep 0 of every sequence, then timestep 1 of those that have one, and so
on; `batch_sizes[t]` is how many sequences are longer than t. The recurrent layers run step
t on the first `batch_sizes[t]` rows only (as cuDNN does), so padding costs nothing.

Every move between the padded and the packed form is one row gather (the embedding op: its
backward scatter-adds, and runs on Tensors under create_graph), so gradients flow through
packing and padding, twice if asked. The index of each gather is made on the host from the
lengths, which are read from their device once.

Beyond PyTorch: a sequence of length 0 is allowed (it has no rows in `data`; a recurrent
layer hands back its initial state as its final one, and padding gives it padding only).
Where one is in the batch, `sorted_indices` is always set (even with enforce_sorted=True),
as the batch size could not be told from `batch_sizes` otherwise.
"""
from __future__ import annotations

import numbers
from typing import NamedTuple, Optional

import numpy as np

from ... import backend as B
from ...errors import DTypeError, ShapeError, fmt_shape
from ...ops import nn as nnops
from ...tensor import Tensor, concat, full

__all__ = ["PackedSequence", "pack_padded_sequence", "pad_packed_sequence", "pack_sequence", "pad_sequence",
           "unpad_sequence", "unpack_sequence", "invert_permutation"]

_UNSORTED = ("`lengths` array must be sorted in decreasing order when `enforce_sorted` is True. You can pass "
             "`enforce_sorted=False` to pack_padded_sequence and/or pack_sequence to sidestep this issue.")


class _Fields(NamedTuple):
    data: Tensor
    batch_sizes: Tensor
    sorted_indices: Optional[Tensor]
    unsorted_indices: Optional[Tensor]


class PackedSequence(_Fields):
    """A packed batch (see the module docstring): `data` (sum of lengths, *), `batch_sizes`
    (an int64 CPU tensor, one entry a timestep), `sorted_indices` (the original batch index
    of each sorted row, or None where the batch came sorted) and `unsorted_indices` (its
    inverse). Made by pack_padded_sequence or pack_sequence; the recurrent layers take one
    and return one."""

    def __new__(cls, data, batch_sizes=None, sorted_indices=None, unsorted_indices=None):
        if not isinstance(data, Tensor):
            raise TypeError(f"PackedSequence: data must be a Tensor, got {type(data).__name__}")
        if batch_sizes is None:
            raise TypeError("PackedSequence: batch_sizes is required")
        if not isinstance(batch_sizes, Tensor):
            batch_sizes = Tensor(np.asarray(batch_sizes, dtype=np.int64), device="cpu")
        if sorted_indices is not None and unsorted_indices is None:
            unsorted_indices = invert_permutation(sorted_indices)
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    @property
    def is_cuda(self):
        return self.data.device.name.startswith("cuda")

    def to(self, target):
        """The same batch with data on another device or in another dtype (the indices
        follow the data to its device; batch_sizes stay on the CPU, as in PyTorch)."""
        data = self.data.to(target)
        if data is self.data:
            return self
        dev = data.device
        idx = [None if i is None else i.to(dev) for i in (self.sorted_indices, self.unsorted_indices)]
        return type(self)(data, self.batch_sizes, *idx)

    def cpu(self):
        return self.to("cpu")

    def cuda(self, index=0):
        return self.to(f"cuda:{index}")

    def double(self):
        return self.to(B.float64)

    def float(self):
        return self.to(B.float32)

    # the host copies the layers and pad_packed_sequence build their gathers from
    def host_batch_sizes(self):
        return np.asarray(self.batch_sizes.numpy(), dtype=np.int64)

    def host_sorted_indices(self):
        """The sorted rows' original indices on the host (identity where the batch came sorted),
        read from their device once per PackedSequence."""
        if self.sorted_indices is None:
            bs = self.host_batch_sizes()
            return np.arange(int(bs[0]) if bs.size else 0, dtype=np.int64)
        host = self.__dict__.get("_host_sorted")
        if host is None:
            host = self.__dict__["_host_sorted"] = np.asarray(self.sorted_indices.numpy(), dtype=np.int64)
        return host

    @property
    def batch_size(self):
        if self.sorted_indices is not None:
            return int(self.sorted_indices.shape[0])
        return int(self.batch_sizes.shape[0] and self.host_batch_sizes()[0])


def invert_permutation(permutation):
    """The inverse permutation, on the same device (None for None)."""
    if permutation is None:
        return None
    host = np.asarray(permutation.numpy() if isinstance(permutation, Tensor) else permutation, dtype=np.int64)
    inv = np.empty_like(host)
    inv[host] = np.arange(host.size, dtype=np.int64)
    dev = permutation.device if isinstance(permutation, Tensor) else B.get_device("cpu")
    return Tensor(inv, device=dev)


# ----------------------------------------------------------------------------- helpers
def host_lengths(op, lengths, batch=None, max_len=None):
    """lengths (list, NumPy array, or a Tensor on any device: read once) as a host int64
    array, checked: integers, one a sequence, none negative, none longer than max_len."""
    if isinstance(lengths, Tensor):
        host = np.asarray(lengths.numpy())
    elif isinstance(lengths, numbers.Number):
        raise TypeError(f"{op}: lengths must be a 1-D sequence of integers (one a sequence), got a scalar")
    else:
        try:
            host = np.asarray(lengths)
        except (TypeError, ValueError):
            raise TypeError(f"{op}: lengths must be a 1-D sequence of integers, got {type(lengths).__name__}") from None
        if host.dtype == object:
            raise TypeError(f"{op}: lengths must be a 1-D sequence of integers, got {lengths!r}")
    if host.ndim != 1:
        raise ShapeError(f"{op}: lengths must be 1-D (one a sequence), got shape {fmt_shape(host.shape)}")
    if host.dtype.kind == "b" or host.dtype.kind not in "iuf":
        raise DTypeError(f"{op}: lengths must be integers, got dtype {host.dtype}")
    if host.dtype.kind == "f":  # tg.tensor([3, 2]) is float by default: whole numbers are fine
        if not np.all(np.isfinite(host)) or np.any(host != np.round(host)):
            raise DTypeError(f"{op}: lengths must be integers, got {host.tolist()}")
    host = host.astype(np.int64)
    if batch is not None and host.shape[0] != batch:
        raise ShapeError(f"{op}: got {host.shape[0]} lengths for a batch of {batch} sequences")
    if host.size and host.min() < 0:
        raise ValueError(f"{op}: lengths must be non-negative, got {host.tolist()}")
    if max_len is not None and host.size and host.max() > max_len:
        raise ShapeError(f"{op}: a length of {int(host.max())} is longer than the sequences ({max_len} timesteps)")
    return host


def _batch_sizes(sorted_lengths):
    """batch_sizes from lengths sorted in decreasing order: [#(lengths > t) for t < max]."""
    T = int(sorted_lengths[0]) if sorted_lengths.size else 0
    return (sorted_lengths[None, :] > np.arange(T)[:, None]).sum(axis=1).astype(np.int64)


def _rows(x, index):
    """x's rows (along its first axis) at the host index array `index` (any shape): one gather,
    differentiable (twice too). x (N, *) -> index.shape + (*)."""
    rest = tuple(x.shape[1:])
    index = np.asarray(index, dtype=np.int64)
    flat = x.reshape(x.shape[0], int(np.prod(rest, dtype=np.int64)))
    idx = x.device.from_host(np.ascontiguousarray(index), B.int64)
    out = nnops.Embedding.apply(idx, flat)
    return out.reshape(tuple(index.shape) + rest)


def _packed_lookup(x, positions):
    """Where x = E[ids] comes straight from an embedding (nothing else watching its gradient),
    the packed rows as E[packed ids]: the same values and gradients, and the layer sees an
    embedding lookup it can fold into its input projection (nn.rnn._folded_projection)."""
    node = x._ctx
    if node is None or node.fn is not nnops.Embedding or node.retained or node.hooks \
            or node.padding_idx is not None or x.ndim != 3:
        return None
    ids, weight = node.inputs
    flat = ids.data if isinstance(ids, Tensor) else ids
    xp = x.device.xp
    packed_ids = xp.take(xp.reshape(flat, (-1,)), x.device.from_host(np.ascontiguousarray(positions, dtype=np.int64),
                                                                      B.int64), axis=0)
    return nnops.Embedding.apply(Tensor._make(packed_ids, x.device, None, 0), weight)


def _check_input(op, x, min_dims=2):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(x).__name__}")
    if x.ndim < min_dims:
        raise ShapeError(f"{op}: input must have at least {min_dims} dimensions (seq_len, batch, *), "
                         f"got shape {fmt_shape(x.shape)}")


def packed_positions(batch_sizes, sorted_indices, T, batch, batch_first):
    """For padded (T, batch) (or (batch, T)) positions flattened, the packed row of each,
    or -1 for padding: the index behind packing and padding."""
    offsets = np.concatenate([[0], np.cumsum(batch_sizes)[:-1]]).astype(np.int64)
    pos = np.full((T, batch), -1, dtype=np.int64)
    for t, n in enumerate(batch_sizes.tolist()):
        if t >= T:
            break
        pos[t, sorted_indices[:n]] = offsets[t] + np.arange(n)
    return pos.T if batch_first else pos


# ----------------------------------------------------------------------------- the API
def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):  # noqa: A002 (PyTorch's name)
    """Pack a padded batch (T, B, *) ((B, T, *) with batch_first) of sequences of the given
    lengths (a list, a NumPy array or a Tensor on any device). With enforce_sorted=True the
    lengths must be in decreasing order; with False they are sorted here (stably) and the
    permutation kept in sorted_indices. Lengths may be 0 (see the module docstring)."""
    op = "pack_padded_sequence"
    _check_input(op, input)
    T, batch = (input.shape[1], input.shape[0]) if batch_first else (input.shape[0], input.shape[1])
    lens = host_lengths(op, lengths, batch=batch, max_len=T)
    if enforce_sorted:
        if np.any(np.diff(lens) > 0):
            raise ValueError(_UNSORTED)
        order = np.arange(batch, dtype=np.int64)
    else:
        order = np.argsort(-lens, kind="stable").astype(np.int64)
    bs = _batch_sizes(lens[order])
    t_idx, r_idx = np.nonzero(np.arange(batch)[None, :] < bs[:, None])  # timestep-major, as packed
    rows = order[r_idx]
    positions = rows * T + t_idx if batch_first else t_idx * batch + rows
    data = _packed_lookup(input, positions)
    if data is None:
        data = _rows(input.reshape((batch * T,) + tuple(input.shape[2:])), positions)
    dev = input.device
    keep = not enforce_sorted or (lens.size and lens.min() == 0)
    sorted_indices = Tensor(order, device=dev) if keep else None
    packed = PackedSequence(data, Tensor(bs, device="cpu"), sorted_indices,
                            Tensor(np.argsort(order).astype(np.int64), device=dev) if keep else None)
    if keep:
        packed.__dict__["_host_sorted"] = order  # known here: never read back from the device
    return packed


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """The inverse of pack_padded_sequence: (padded (T, B, *) or (B, T, *), lengths), the
    batch in its original order, T the longest length (or total_length, which must not be
    shorter); lengths an int64 CPU tensor."""
    op = "pad_packed_sequence"
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"{op}: expected a PackedSequence, got {type(sequence).__name__}")
    bs = sequence.host_batch_sizes()
    order = sequence.host_sorted_indices()
    batch = order.shape[0]
    T = bs.shape[0]
    if total_length is not None:
        if int(total_length) < T:
            raise ValueError(f"{op}: total_length={total_length} is shorter than the longest sequence ({T})")
        T = int(total_length)
    pos = packed_positions(bs, order, T, batch, batch_first)
    data = sequence.data
    N = data.shape[0]
    pad = full((1,) + tuple(data.shape[1:]), padding_value, dtype=data.dtype, device=data.device)
    padded = _rows(concat([data, pad], axis=0), np.where(pos < 0, N, pos))
    lengths = np.zeros(batch, dtype=np.int64)
    lengths[order] = (bs[None, :] > np.arange(batch)[:, None]).sum(axis=1)
    return padded, Tensor(lengths, device="cpu")


def pad_sequence(sequences, batch_first=False, padding_value=0.0):
    """A list of (L_i, *) tensors as one padded (max L, B, *) tensor ((B, max L, *) with batch_first)."""
    op = "pad_sequence"
    seqs = list(sequences)
    if not seqs:
        raise ValueError(f"{op}: got no sequences")
    first = seqs[0]
    for i, s in enumerate(seqs):
        if not isinstance(s, Tensor):
            raise TypeError(f"{op}: sequence {i} is a {type(s).__name__}, not a Tensor")
        if s.ndim < 1 or tuple(s.shape[1:]) != tuple(first.shape[1:]):
            raise ShapeError(f"{op}: sequence {i} has shape {fmt_shape(s.shape)}, but every sequence must be "
                             f"(length, *) with the trailing shape of sequence 0, {fmt_shape(first.shape)}")
        if s.device is not first.device or s.dtype is not first.dtype:
            raise DTypeError(f"{op}: sequence {i} is {s.dtype.name} on {s.device.name}, sequence 0 "
                             f"{first.dtype.name} on {first.device.name}: all must match")
    lens = np.array([s.shape[0] for s in seqs], dtype=np.int64)
    T, batch = int(lens.max()), len(seqs)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    N = int(lens.sum())
    t = np.arange(T)[:, None]
    index = np.where(t < lens[None, :], starts[None, :] + t, N)  # (T, B); N: the padding row
    pad = full((1,) + tuple(first.shape[1:]), padding_value, dtype=first.dtype, device=first.device)
    padded = _rows(concat(seqs + [pad], axis=0), index.T if batch_first else index)
    return padded


def pack_sequence(sequences, enforce_sorted=True):
    """A list of (L_i, *) tensors as a PackedSequence (sorted by length unless enforce_sorted)."""
    seqs = list(sequences)
    lengths = [s.shape[0] if isinstance(s, Tensor) else 0 for s in seqs]
    return pack_padded_sequence(pad_sequence(seqs), lengths, enforce_sorted=enforce_sorted)


def unpad_sequence(padded_sequences, lengths, batch_first=False):
    """A padded batch back into a list of (L_i, *) tensors."""
    op = "unpad_sequence"
    _check_input(op, padded_sequences)
    x = padded_sequences
    T, batch = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    lens = host_lengths(op, lengths, batch=batch, max_len=T)
    return [x[i, :n] if batch_first else x[:n, i] for i, n in enumerate(lens.tolist())]


def unpack_sequence(packed_sequences):
    """A PackedSequence back into the list of its (L_i, *) sequences, in the original order."""
    padded, lengths = pad_packed_sequence(packed_sequences)
    return unpad_sequence(padded, lengths)
