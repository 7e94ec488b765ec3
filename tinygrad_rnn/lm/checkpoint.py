"""Checkpoints: one `.npz` of plain arrays, written atomically, read without pickle.

Layout (every entry is a NumPy array; nothing executes on load):

    format            str   "tinygrad_rnn.charlm"
    version           int   FORMAT_VERSION
    meta              uint8 UTF-8 JSON: config, vocabulary, step, data position, RNG
                            states, counters, and the non-array parts of the optimizer state
    model/<name>      the model's state dict
    optim/<key>       the optimizer's state dict in its flat form (optim.flatten_state_dict)
    hidden/<n>        the recurrent state carried into the next window (absent at an epoch start)

The optimizer's state goes in through its own serializer (optim.flatten_state_dict,
the flat {"state.<i>.<name>", "param_groups.<g>.<key>"} form that load_state_dict takes
back), the one serializer of optimizer state in the package.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..optim import flatten_state_dict, unflatten_state_dict
from ..serialization import atomic_write, read_npz

FORMAT = "tinygrad_rnn.charlm"
FORMAT_VERSION = 2  # 2: the optimizer state in its flat form (1 held it as JSON with array references)


class CheckpointError(Exception):
    """A checkpoint could not be written or read; the message names the file and the reason."""


# ----------------------------------------------------------------------------- writing
def save(path, *, meta: dict, model_state: dict, optim_state=None, hidden=None) -> None:
    """Write a checkpoint atomically: a temporary file in the same directory, then os.replace.

    A crash (or an error) at any point leaves the previous file at `path` untouched.
    """
    path = os.fspath(path)
    arrays = {"format": np.array(FORMAT), "version": np.array(FORMAT_VERSION)}
    for k, v in model_state.items():
        arrays[f"model/{k}"] = np.asarray(v)
    meta = dict(meta)
    if optim_state is not None:  # the optimizer's own flat form: arrays and numbers under optim/<key>
        meta["optimizer_state"] = True
        for k, v in flatten_state_dict(optim_state).items():
            arrays[f"optim/{k}"] = np.asarray(v)
    if hidden is not None:
        hs = hidden if isinstance(hidden, (tuple, list)) else (hidden,)
        meta["hidden"] = {"n": len(hs), "tuple": isinstance(hidden, (tuple, list))}
        for i, h in enumerate(hs):
            arrays[f"hidden/{i}"] = np.asarray(h)
    try:
        # allow_nan: a diverged run's losses are NaN; JSON's Infinity/NaN round-trip in Python
        arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=True).encode("utf-8"), dtype=np.uint8)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the checkpoint metadata is not JSON-able ({e})") from None
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda f: _write_npz(f, arrays))


def _write_npz(f, arrays):
    # a seam for tests that simulate a crash in the middle of writing
    np.savez(f, **arrays)


# ----------------------------------------------------------------------------- reading
class Checkpoint:
    """What `load` returns: meta (dict), model_state, optim_state (or None), hidden (or None)."""

    def __init__(self, path, meta, model_state, optim_state, hidden):
        self.path, self.meta = path, meta
        self.model_state, self.optim_state, self.hidden = model_state, optim_state, hidden

    def __repr__(self):
        return f"Checkpoint({self.path!r}, step={self.meta.get('step')})"


def load(path) -> Checkpoint:
    """Read a checkpoint written by `save`; anything else raises CheckpointError saying why."""
    path = os.fspath(path)
    if os.path.isdir(path):
        cand = os.path.join(path, "checkpoint.npz")
        if not os.path.exists(cand):
            raise CheckpointError(f"{path}: a directory with no checkpoint.npz in it")
        path = cand
    what = f"{path}: not a tinygrad_rnn checkpoint"
    arrays = read_npz(path, CheckpointError, "checkpoint file", "not a tinygrad_rnn checkpoint")
    try:
        fmt = str(arrays["format"][()])
        version = int(arrays["version"][()])
    except (KeyError, ValueError, TypeError, IndexError):
        raise CheckpointError(f"{what} (an .npz archive without the format tag)") from None
    if fmt != FORMAT:
        raise CheckpointError(f"{what} (its format tag is {fmt!r})")
    if version < 1:
        raise CheckpointError(f"{path}: checkpoint format version {version} is not one this tinygrad_rnn reads")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this tinygrad_rnn "
                              f"understands ({FORMAT_VERSION}); upgrade tinygrad_rnn")
    try:
        meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
        model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
        optim_state = None
        if version == 1:
            # the weights, vocabulary and states read as before (sample, eval and export work); the
            # optimizer state was in a layout this version no longer reads: such a run cannot resume
            if meta.pop("optimizer_state", None) is not None:
                meta["optimizer_state_unreadable"] = f"checkpoint format version 1"
        elif meta.pop("optimizer_state", None):
            optim_state = unflatten_state_dict({k[len("optim/"):]: v for k, v in arrays.items()
                                                if k.startswith("optim/")})
        hidden = None
        if "hidden" in meta:
            h = meta.pop("hidden")
            hs = tuple(arrays[f"hidden/{i}"] for i in range(h["n"]))
            hidden = hs if h["tuple"] else hs[0]
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: the checkpoint is corrupted (bad metadata: {type(e).__name__}: {e})") from None
    return Checkpoint(path, meta, model_state, optim_state, hidden)
