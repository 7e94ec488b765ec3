"""`CharLM`: characters in, next-character logits out.

    ids (T, B) -> embedding (or one-hot) -> recurrent layer(s) -> dropout -> linear head -> (T, B, V)

Time-major like the recurrent layers. The recurrent state goes in and comes out, so a
training loop carries it from one window to the next (truncated BPTT) and generation
carries it from one character to the next.
"""
from __future__ import annotations

import numpy as np

import importlib

from .. import nn
from ..autograd import no_grad
from ..nn import functional as F
from ..nn.layers import Dropout, Embedding, Linear
from ..nn.regularization import LockedDropout, embedding_dropout
from ..tensor import Tensor
from .sample import BeamSearch, log_softmax_rows, sample_next

# cell name -> class name in tinygrad_rnn.nn. A new recurrent layer with nn.GRU's
# forward contract (forward(x, h0) -> (output, h_n)) is one line here.
CELLS = {
    "lstm": "LSTM",
    "gru": "GRU",
    "rnn": "RNN",
    "mingru": "MinGRU",
    "minlstm": "MinLSTM",
    "lnlstm": "LayerNormLSTM",
}


def _find_layer(cls_name):
    found = getattr(nn, cls_name, None)
    for mod in ("rnn", "minrnn"):
        if found is not None:
            break
        try:
            found = getattr(importlib.import_module(f"tinygrad_rnn.nn.{mod}"), cls_name, None)
        except ImportError:
            pass
    return found


def available_cells() -> list[str]:
    """The cell names whose layer exists in this installation of tinygrad_rnn.nn."""
    return [name for name, cls in CELLS.items() if _find_layer(cls) is not None]


def _cell_class(cell):
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; choose one of {', '.join(available_cells())}")
    cls = _find_layer(CELLS[cell])
    if cls is None:
        raise ValueError(f"cell {cell!r} needs tinygrad_rnn.nn.{CELLS[cell]}, which this version lacks")
    return cls


def detach_state(state):
    """Cut the carried state from the graph: BPTT stops at the window boundary."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state.detach()


def state_to_host(state):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(s.numpy() for s in state)
    return state.numpy()


def state_from_host(state, device, dtype=None):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(Tensor(np.asarray(s), device=device, dtype=dtype) for s in state)
    return Tensor(np.asarray(state), device=device, dtype=dtype)


_WEIGHT_DROP_CELLS = ("lstm", "gru", "rnn", "lnlstm")  # the layers with a weight_hh to DropConnect


def _check_options(cell, rates, embed_dim, proj_size, tie_weights, hidden, locked_between):
    """CharLM's arguments past the sizes, each problem named in user terms."""
    for name, p in rates.items():
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"CharLM: {name} must be a number in [0, 1), got {p!r}")
    if not isinstance(proj_size, int) or isinstance(proj_size, bool) or proj_size < 0:
        raise ValueError(f"CharLM: proj_size must be a non-negative integer, got {proj_size!r}")
    if proj_size and cell != "lstm":
        raise ValueError(f"CharLM: proj_size needs cell 'lstm' (nn.LSTM's projections), not {cell!r}")
    if rates["weight_drop"] and cell not in _WEIGHT_DROP_CELLS:
        raise ValueError(f"CharLM: weight_drop needs a cell with hidden-to-hidden weights "
                         f"({', '.join(_WEIGHT_DROP_CELLS)}), not {cell!r}")
    if locked_between and cell not in _WEIGHT_DROP_CELLS:
        raise ValueError(f"CharLM: locked dropout between layers needs cell {', '.join(_WEIGHT_DROP_CELLS)}, "
                         f"not {cell!r} (its layers have no dropout_mode); set dropout_hidden=0 or use one layer")
    if rates["embed_dropout"] and not embed_dim:
        raise ValueError("CharLM: embed_dropout needs a learned embedding (embed_dim); one-hot input has none")
    if tie_weights:
        if not embed_dim:
            raise ValueError("CharLM: tie_weights needs a learned embedding (embed_dim); one-hot input has none")
        out = proj_size or hidden
        if embed_dim != out:
            what = f"proj_size={proj_size}" if proj_size else f"hidden={out}"
            raise ValueError(f"CharLM: tie_weights needs embed_dim equal to the last layer's output size "
                             f"({what}), got embed_dim={embed_dim}")


def _rnn_options(proj_size, weight_drop, locked_between):
    """The recurrent layer's AWD arguments, passed only where set, so a layer without them
    (mingru, minlstm) is built as before."""
    kw = {}
    if proj_size:
        kw["proj_size"] = proj_size
    if weight_drop:
        kw["weight_dropout"] = weight_drop
    if locked_between:
        kw["dropout_mode"] = "locked"
    return kw


class CharLM(nn.Module):
    """A character-level language model.

    vocab_size: the number of characters (an int), or a CharVocab, which `generate` then
        uses to take and return strings.
    cell: "lstm", "gru", "rnn", "lnlstm" (layer-normalised LSTM, composed from ops: slower), and
        "mingru"/"minlstm" where tinygrad_rnn.nn has them.
    embed_dim: size of a learned embedding; None feeds one-hot vectors to the recurrent layer.
    dropout: between stacked recurrent layers and before the head.

    The AWD-LSTM regularisers (keyword-only; their defaults leave the model as without them):
    dropout_input: dropout on the recurrent layers' input (AWD's dropouti).
    dropout_hidden, dropout_output: between layers (dropouth) and before the head; None: `dropout`.
    locked_dropout: these three as variational dropout, one mask per sequence for all time steps.
    weight_drop: DropConnect on the hidden-to-hidden weights, one mask per forward (lstm, gru, rnn, lnlstm).
    embed_dropout: drop whole rows of the embedding matrix (whole characters), one mask per forward.
    tie_weights: the head's weight is the embedding matrix (needs embed_dim == the last layer's
        output size: hidden, or proj_size). proj_size: an LSTM with projections (nn.LSTM's).
    """

    def __init__(self, vocab_size, cell="lstm", hidden=256, layers=2, dropout=0.0, embed_dim=None,
                 dtype=None, device=None, *, proj_size=0, dropout_input=0.0, dropout_hidden=None,
                 dropout_output=None, locked_dropout=False, weight_drop=0.0, embed_dropout=0.0, tie_weights=False):
        super().__init__()
        vocab = None
        if not isinstance(vocab_size, int):
            vocab, vocab_size = vocab_size, len(vocab_size)
        if vocab_size < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"CharLM: vocab_size, hidden and layers must be positive, got "
                             f"{vocab_size}, {hidden}, {layers}")
        rates = {"dropout": dropout, "dropout_input": dropout_input, "weight_drop": weight_drop,
                 "embed_dropout": embed_dropout,
                 "dropout_hidden": dropout if dropout_hidden is None else dropout_hidden,
                 "dropout_output": dropout if dropout_output is None else dropout_output}
        locked_between = bool(locked_dropout) and layers > 1 and rates["dropout_hidden"] > 0
        _check_options(cell, rates, embed_dim, proj_size, tie_weights, hidden, locked_between)
        rnn_cls = _cell_class(cell)
        self.vocab = vocab
        self.vocab_size, self.cell, self.hidden, self.layers = vocab_size, cell, hidden, layers
        self.embed_dim, self.dropout_p, self.proj_size = embed_dim, dropout, int(proj_size)
        self.dropout_input, self.dropout_hidden, self.dropout_output = dropout_input, dropout_hidden, dropout_output
        self.locked_dropout, self.weight_drop, self.embed_dropout = bool(locked_dropout), weight_drop, embed_dropout
        self.tie_weights = bool(tie_weights)
        kw = {"dtype": dtype, "device": device}
        self.embed = Embedding(vocab_size, embed_dim, **kw) if embed_dim else None
        self.rnn = rnn_cls(embed_dim or vocab_size, hidden, num_layers=layers,
                           dropout=rates["dropout_hidden"] if layers > 1 else 0.0,
                           **_rnn_options(proj_size, weight_drop, locked_between), **kw)
        drop = LockedDropout if locked_dropout else Dropout
        self.drop_in = drop(dropout_input) if dropout_input else None
        self.drop = drop(rates["dropout_output"])
        self.head = Linear(self.proj_size or hidden, vocab_size, **kw)
        if tie_weights:
            # one Parameter in both places (listed once, as embed.weight), with the head's
            # U(-1/sqrt(E), 1/sqrt(E)) start: the embedding's N(0, 1) would give the head
            # logits of standard deviation ~sqrt(E)/2 at the start
            self.embed.weight = self.head.weight

    def config(self) -> dict:
        return {"vocab_size": self.vocab_size, "cell": self.cell, "hidden": self.hidden, "layers": self.layers,
                "dropout": self.dropout_p, "embed_dim": self.embed_dim, "proj_size": self.proj_size,
                "dropout_input": self.dropout_input, "dropout_hidden": self.dropout_hidden,
                "dropout_output": self.dropout_output, "locked_dropout": self.locked_dropout,
                "weight_drop": self.weight_drop, "embed_dropout": self.embed_dropout,
                "tie_weights": self.tie_weights}

    def state_dict(self):
        out = super().state_dict()
        if self.tie_weights:
            # the shared matrix under both names, as PyTorch's state dict of a tied model has it,
            # so the dict loads into an untied CharLM, and exports (head.weight) as any other
            out["head.weight"] = out["embed.weight"].copy()
        return out

    def load_state_dict(self, state, strict=True):
        if self.tie_weights and "head.weight" in state:
            state = dict(state)
            head = state.pop("head.weight")
            head = head.numpy() if isinstance(head, Tensor) else np.asarray(head)
            if "embed.weight" not in state:
                state["embed.weight"] = head
            else:
                emb = state["embed.weight"]
                emb = emb.numpy() if isinstance(emb, Tensor) else np.asarray(emb)
                if emb.shape != head.shape or not np.array_equal(emb, head):
                    raise nn.StateDictError("load_state_dict for CharLM: the model ties its head to its "
                                            "embedding (one matrix), but head.weight and embed.weight differ")
        return super().load_state_dict(state, strict)

    def extra_repr(self):
        return f"vocab_size={self.vocab_size}, cell={self.cell!r}, hidden={self.hidden}, layers={self.layers}"

    @property
    def device(self):
        return self.head.weight.device

    @property
    def dtype(self):
        return self.head.weight.dtype

    def forward(self, ids, state=None):
        """ids (T, B) integers (NumPy array or Tensor) -> (logits (T, B, V), new state)."""
        if not isinstance(ids, Tensor):
            ids = Tensor(np.asarray(ids, dtype=np.int64), device=self.device)
        if self.embed is None:
            x = F.one_hot(ids, self.vocab_size, dtype=self.dtype)
        elif self.embed_dropout and self.training:
            x = embedding_dropout(self.embed, ids, self.embed_dropout)
        else:
            x = self.embed(ids)
        if self.drop_in is not None:
            x = self.drop_in(x)
        out, state = self.rnn(x, state)
        return self.head(self.drop(out)), state

    def loss(self, ids, targets, state=None):
        """(mean cross-entropy in nats, new state) for one window."""
        logits, state = self(ids, state)
        T, Bn, V = logits.shape
        t = targets if isinstance(targets, Tensor) else Tensor(np.asarray(targets, dtype=np.int64),
                                                                 device=self.device)
        return F.cross_entropy(logits.reshape(T * Bn, V), t.reshape(T * Bn)), state

    def generate(self, prompt="", length=200, temperature=1.0, top_k=None, seed=None, top_p=None, stream=None,
                 beam=None, length_norm=0.0, stop=None):
        """Continue `prompt` by `length` sampled characters (returns only the continuation).

        The prompt runs through the network once; then each sampled character is fed back
        in, one step at a time, carrying the state. Runs under no_grad in eval mode (no
        dropout) on the model's device. Sampling draws from a NumPy Generator seeded with
        `seed` on the host, so a seed reproduces the text; top_k=1 (or temperature=0) is
        greedy; top_p keeps the nucleus of that much probability (1: all, tiny: greedy).
        stream, if given, is called with each new character (or id) as soon as it is drawn.
        The prompt may be a string (with a vocabulary) or a sequence of ids; the result is
        of the same kind. An empty prompt starts from a newline (or id 0).

        beam=K searches instead of sampling: the most likely continuation that a beam of K
        hypotheses finds (beam_search), given to stream at the end; K=1 is greedy. It ranks by
        the model's own log-probabilities, so temperature, top_k and top_p are refused with it.
        stop (a character, or an id) ends a hypothesis early, and length_norm (GNMT's alpha)
        then weighs the ended ones by length.
        """
        if length < 0:
            raise ValueError(f"generate: length must be non-negative, got {length}")
        as_text = isinstance(prompt, str)
        if beam is not None and (temperature != 1.0 or top_k is not None or top_p is not None):
            raise ValueError(f"generate: beam search (beam={beam}) ranks continuations by the model's "
                             f"log-probabilities; temperature ({temperature}), top_k ({top_k}) and top_p ({top_p}) "
                             f"are for sampling: leave them at 1.0, None and None")
        if as_text:
            if self.vocab is None:
                raise ValueError("generate: a text prompt needs a model built with a CharVocab; pass ids instead")
            ids = self.vocab.encode(prompt)
            if not len(ids):
                ids = self.vocab.encode("\n") if "\n" in self.vocab else np.zeros(1, dtype=np.int64)
        else:
            ids = np.asarray(prompt, dtype=np.int64).reshape(-1)
            if not len(ids):
                ids = np.zeros(1, dtype=np.int64)
            if ids.min() < 0 or ids.max() >= self.vocab_size:
                raise ValueError(f"generate: prompt ids must be in [0, {self.vocab_size})")
        if beam is not None:
            if as_text and stop is not None:
                if not isinstance(stop, str) or len(stop) != 1:
                    raise ValueError(f"generate: stop must be one character, got {stop!r}")
                stop = int(self.vocab.encode(stop)[0])
            found = self.beam_search(ids, length, beam, length_norm, stop)
            out = found[0][2] if found else []
            for i in out if stream is not None else ():
                stream(self.vocab.decode([i]) if as_text else i)
            return self.vocab.decode(out) if as_text else out
        rng = np.random.default_rng(seed)
        was_training = self.training
        self.eval()
        out = []
        try:
            with no_grad():
                logits, state = self(ids.reshape(-1, 1))
                for _ in range(length):
                    last = logits[-1, 0].numpy().astype(np.float64)
                    nxt = sample_next(last, rng, temperature, top_k, top_p)
                    out.append(nxt)
                    if stream is not None:
                        stream(self.vocab.decode([nxt]) if as_text else nxt)
                    logits, state = self(np.array([[nxt]], dtype=np.int64), state)
        finally:
            self.train(was_training)
        return self.vocab.decode(out) if as_text else out

    def beam_search(self, ids, length, width, length_norm=0.0, stop=None):
        """Beam search for the likeliest continuation of the prompt ids, up to `length` ids:
        every kept hypothesis as (normalised score, log-probability, ids), the best first
        (sample.BeamSearch says how they are kept and ranked). The live hypotheses are the
        batch of one forward per character, each carrying its own recurrent state, which is
        reordered along the batch as hypotheses are kept or dropped. Under no_grad, in eval mode."""
        search = BeamSearch(width, length_norm, stop)
        if length == 0:
            return []
        ids = np.asarray(ids, dtype=np.int64).reshape(-1, 1)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                logits, state = self(ids)
                for t in range(length):
                    chosen = search.step(log_softmax_rows(logits[-1].numpy()))
                    if chosen is None or t == length - 1:
                        break
                    parents, nxt = chosen
                    logits, state = self(nxt.reshape(1, -1), _take_rows(state, parents))
        finally:
            self.train(was_training)
        return search.results()


def _take_rows(state, rows):
    """The recurrent state (layers, batch, hidden), or a tuple of them, at these batch rows."""
    if isinstance(state, (tuple, list)):
        return type(state)(_take_rows(s, rows) for s in state)
    return state[:, rows]
