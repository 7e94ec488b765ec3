"""Export a CharLM checkpoint's weights for PyTorch and other tools, as safetensors.

The format, so that others can rely on it:
- tensors: `embed.weight` (absent for one-hot input), `rnn.<PyTorch's nn.LSTM/GRU/RNN
  parameter name>` (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, ..., _reverse for a
  second direction), `head.weight`, `head.bias`; in the checkpoint's dtype.
- metadata (strings): cell, hidden, layers, embed_dim (empty for one-hot input), dropout,
  vocab (the characters in id order, a JSON list).
minGRU/minLSTM checkpoints have no PyTorch layer to load into, and are refused.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .train import load_model

EXPORTABLE = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


class ExportError(Exception):
    pass


def export_safetensors(checkpoint, out_path) -> dict:
    """Write the checkpoint's weights to out_path (.safetensors); returns the metadata written."""
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise ExportError("export needs the safetensors package: pip install -e '.[export]'") from None
    out_path = os.fspath(out_path)
    _check_destination(out_path)
    model, vocab, c = load_model(checkpoint)
    cfg = c.meta["config"]
    cell = cfg["cell"]
    if cell not in EXPORTABLE:
        raise ExportError(f"{c.path}: a {cell} model has no PyTorch equivalent (PyTorch has no minGRU/minLSTM "
                          f"layer to load it into); export takes lstm, gru and rnn models")
    tensors = {k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}
    meta = {"cell": cell, "hidden": str(cfg["hidden"]), "layers": str(cfg["layers"]),
            "embed_dim": "" if not cfg.get("embed_dim") else str(cfg["embed_dim"]),
            "dropout": str(cfg.get("dropout", 0.0)), "vocab": json.dumps(list(vocab.chars)),
            "format": "tinygrad_rnn.charlm"}
    tmp = out_path + ".tmp"
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, out_path)  # never a half-written file at out_path
    except Exception as e:  # OSError, or safetensors' own SafetensorError for the same causes
        if os.path.exists(tmp):
            os.remove(tmp)
        raise ExportError(f"{out_path}: cannot write it ({type(e).__name__}: {e})") from None
    return meta


def _check_destination(out_path):
    """The causes of a failed write a user can fix, said before the checkpoint is even read."""
    if not out_path.endswith(".safetensors"):
        raise ExportError(f"{out_path}: the file name must end in .safetensors (export writes safetensors)")
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise ExportError(f"{out_path}: the directory {folder} does not exist")
    if os.path.isdir(out_path):
        raise ExportError(f"{out_path}: is a directory")
    if not os.access(folder, os.W_OK):
        raise ExportError(f"{out_path}: the directory {folder} is not writable")
