"""Characters for character-level language models: vocabularies, corpora, and BPTT batches.

Everything here lives on the host as NumPy integer arrays; a batch moves to the
model's device only when the training loop hands it to the model.

The default corpus needs no download: the source of the running interpreter's
standard library, read in a fixed sorted order and capped at `max_chars`, so the
same interpreter always yields the same text.
"""
from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from dataclasses import dataclass

import numpy as np

__all__ = ["DataError", "UnknownCharError", "CharVocab", "Corpus", "read_text_file", "read_text_dir",
           "stdlib_dir", "stdlib_text", "corpus_text", "load_corpus", "validation_text", "split_train_val", "batchify", "BPTTStream", "DEFAULT_MAX_CHARS"]

DEFAULT_MAX_CHARS = 1_000_000


class DataError(Exception):
    """A corpus could not be read or used; the message says which file and why."""


class UnknownCharError(DataError, ValueError):
    """Text holds a character the vocabulary does not have."""

    def __init__(self, char: str, position: int, text_len: int):
        self.char, self.position = char, position
        super().__init__(f"character {char!r} (U+{ord(char):04X}) at position {position} of the "
                         f"{text_len}-character text is not in the vocabulary")


# ----------------------------------------------------------------------------- vocabulary
class CharVocab:
    """Characters <-> integer ids; id order is the sorted order of the characters."""

    def __init__(self, chars):
        chars = sorted(set(chars))
        if not chars:
            raise DataError("a vocabulary needs at least one character")
        if any(len(c) != 1 for c in chars):
            raise DataError("a character vocabulary holds single characters only")
        self.chars = chars
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)  # sorted, for searchsorted
        self._index = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        if not text:
            raise DataError("cannot build a vocabulary from empty text")
        return cls(set(text))

    def __len__(self):
        return len(self.chars)

    def __contains__(self, c):
        return c in self._index

    def __eq__(self, other):
        return isinstance(other, CharVocab) and self.chars == other.chars

    def __repr__(self):
        return f"CharVocab({len(self)} chars)"

    def encode(self, text: str) -> np.ndarray:
        """Text -> int64 ids; a character outside the vocabulary raises UnknownCharError."""
        # UTF-32 gives one code point per 4 bytes, so a megabyte encodes in one vectorised pass
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)
        bad = (ids >= len(self._codes)) | (self._codes[np.minimum(ids, len(self._codes) - 1)] != codes)
        if bad.any():
            pos = int(np.argmax(bad))
            raise UnknownCharError(text[pos], pos, len(text))
        return ids.astype(np.int64)

    def unknown(self, text: str) -> dict:
        """{character: count} of the characters of text that are not in the vocabulary."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)
        bad = (ids >= len(self._codes)) | (self._codes[np.minimum(ids, len(self._codes) - 1)] != codes)
        chars, counts = np.unique(codes[bad], return_counts=True)
        return {chr(int(c)): int(n) for c, n in zip(chars, counts)}

    def decode(self, ids) -> str:
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.chars)):
            bad = ids[(ids < 0) | (ids >= len(self.chars))][0]
            raise DataError(f"id {int(bad)} is out of range for a vocabulary of {len(self.chars)} characters")
        return "".join(self.chars[i] for i in ids.tolist())

    # Checkpoints store the vocabulary as plain data: a string of its characters.
    def to_dict(self) -> dict:
        return {"chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: dict) -> "CharVocab":
        try:
            chars = d["chars"]
        except (KeyError, TypeError):
            raise DataError("vocabulary data has no 'chars' entry") from None
        if not isinstance(chars, str) or len(set(chars)) != len(chars):
            raise DataError("vocabulary data is not a string of distinct characters")
        return cls(chars)

    def to_array(self) -> np.ndarray:
        """The code points as a uint32 array (for storing without JSON)."""
        return self._codes.copy()

    @classmethod
    def from_array(cls, arr) -> "CharVocab":
        return cls(chr(int(c)) for c in np.asarray(arr).reshape(-1))


# ----------------------------------------------------------------------------- corpora
def _decode(raw: bytes, path: str) -> str:
    if b"\x00" in raw:
        raise DataError(f"{path}: looks like a binary file (it contains NUL bytes), not UTF-8 text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start} "
                        f"cannot be decoded)") from None
    return text.lstrip("\ufeff")


def read_text_file(path) -> str:
    """A UTF-8 file's text; missing, unreadable, empty or non-text files raise DataError."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return read_text_dir(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read it ({e.strerror or e})") from None
    text = _decode(raw, path)
    if not text:
        raise DataError(f"{path}: the file is empty")
    return text


def _walk_sorted(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield os.path.join(dirpath, name)


def read_text_dir(path, max_chars: int | None = None) -> str:
    """The UTF-8 text files under a directory, in sorted path order, joined by newlines.

    Files that are not UTF-8 text are skipped; a directory with no text at all raises.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise DataError(f"{path}: no such directory")
    parts, total = [], 0
    for f in _walk_sorted(path):
        try:
            text = read_text_file(f)
        except DataError:
            continue
        parts.append(text)
        total += len(text) + 1
        if max_chars is not None and total >= max_chars:
            break
    if not parts:
        raise DataError(f"{path}: the directory holds no non-empty UTF-8 text files")
    text = "\n".join(parts)
    return text if max_chars is None else text[:max_chars]


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]


def stdlib_text(max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Source of the interpreter's standard library: the public top-level modules in sorted
    order (private `_*.py` ones hold generated tables more than code), cut at max_chars."""
    root = stdlib_dir()
    try:
        names = sorted(n for n in os.listdir(root) if n.endswith(".py") and not n.startswith("_"))
    except OSError as e:
        raise DataError(f"the default corpus reads the standard library's sources, but {root} "
                        f"cannot be listed ({e.strerror or e}); pass --data PATH") from None
    parts, total = [], 0
    for n in names:
        try:
            parts.append(read_text_file(os.path.join(root, n)))
        except DataError:
            continue
        total += len(parts[-1])
        if total >= max_chars:
            break
    if not parts:
        raise DataError(f"no Python sources were found in {root} for the default corpus; pass --data PATH")
    return "".join(parts)[:max_chars]


def split_train_val(ids, val_fraction: float = 0.1):
    """(train, val): the last `val_fraction` of the stream is validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n = len(ids)
    n_val = int(round(n * val_fraction))
    if n_val < 2 or n - n_val < 2:
        raise DataError(f"the corpus has {n} characters: too few to split into training and "
                        f"validation parts of at least 2 characters each")
    return ids[: n - n_val], ids[n - n_val:]


@dataclass
class Corpus:
    """A text, its vocabulary and its train/validation ids."""

    name: str
    text: str
    vocab: CharVocab
    train: np.ndarray
    val: np.ndarray
    fingerprint: str

    @classmethod
    def from_text(cls, text: str, name: str = "<text>", val_fraction: float = 0.1, vocab=None):
        if not text:
            raise DataError(f"{name}: the text is empty")
        vocab = vocab or CharVocab.from_text(text)
        ids = vocab.encode(text)
        train, val = split_train_val(ids, val_fraction)
        fp = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return cls(name, text, vocab, train, val, fp)


def corpus_text(data=None, max_chars: int | None = None) -> tuple[str, str]:
    """(text, name) of the corpus at `data` (a UTF-8 file or a directory), or of the stdlib
    corpus when data is None; max_chars caps it (the stdlib one at DEFAULT_MAX_CHARS unless told)."""
    if data is None:
        v = sys.version_info
        return stdlib_text(max_chars or DEFAULT_MAX_CHARS), f"Python {v[0]}.{v[1]} standard library"
    data = os.fspath(data)
    text = read_text_dir(data, max_chars) if os.path.isdir(data) else read_text_file(data)
    return (text[:max_chars] if max_chars else text), data


def load_corpus(data=None, max_chars: int | None = None, val_fraction: float = 0.1, vocab=None) -> Corpus:
    """The corpus of `corpus_text(data, max_chars)`, split, with its vocabulary.

    With `vocab`, the text is encoded with it (an unknown character raises DataError)
    instead of building a new one.
    """
    text, name = corpus_text(data, max_chars)
    try:
        return Corpus.from_text(text, name, val_fraction, vocab)
    except UnknownCharError as e:
        raise DataError(f"{name}: {e} of the checkpoint") from None


def validation_text(text: str, val_fraction: float = 0.1) -> str:
    """The characters split_train_val puts in validation."""
    n = len(text)
    return text[n - int(round(n * val_fraction)):]


# ----------------------------------------------------------------------------- batching
def batchify(ids, batch: int) -> np.ndarray:
    """Cut a token stream into `batch` contiguous rows: shape (batch, len(ids) // batch).

    Row b is ids[b*L:(b+1)*L]; the tail that does not fill a row is dropped (as in
    PyTorch's word-language-model example, but rows rather than columns).
    """
    ids = np.asarray(ids)
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    n = len(ids) // batch
    if n < 2:
        raise DataError(f"{len(ids)} tokens are too few for {batch} parallel rows of at least 2 tokens "
                        f"(lower --batch)")
    return np.ascontiguousarray(ids[: n * batch].reshape(batch, n))


class BPTTStream:
    """Windows for truncated BPTT over batchified rows, endlessly, epoch after epoch.

    `next()` returns (x, y, reset): x and y of shape (seq_len, batch) -- time-major, as
    the recurrent layers take it -- with y the next character of each x, and `reset`
    True at the first window of an epoch, where the carried hidden state must start
    afresh. Window k of an epoch covers columns [k*seq_len, k*seq_len + T) of every row,
    so each row continues exactly where its previous window ended; the last window of
    an epoch may be shorter. `position` (epoch, offset) is all that resuming needs.
    """

    def __init__(self, ids, batch: int, seq_len: int):
        if seq_len < 1:
            raise ValueError(f"seq_len must be at least 1, got {seq_len}")
        self.rows = batchify(ids, batch)
        self.batch, self.seq_len = batch, seq_len
        self.epoch, self.offset = 0, 0

    @property
    def width(self) -> int:
        return self.rows.shape[1]

    @property
    def windows_per_epoch(self) -> int:
        return -(-(self.width - 1) // self.seq_len)

    @property
    def position(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    @position.setter
    def position(self, pos: dict):
        epoch, offset = int(pos["epoch"]), int(pos["offset"])
        if not 0 <= offset < self.width - 1 or epoch < 0:
            raise DataError(f"data position (epoch {epoch}, offset {offset}) does not fit this corpus "
                            f"({self.width} tokens per row)")
        self.epoch, self.offset = epoch, offset

    def next(self):
        i = self.offset
        reset = i == 0
        t = min(self.seq_len, self.width - 1 - i)
        x = self.rows[:, i:i + t].T
        y = self.rows[:, i + 1:i + 1 + t].T
        self.offset = i + t
        if self.offset >= self.width - 1:
            self.epoch, self.offset = self.epoch + 1, 0
        return np.ascontiguousarray(x), np.ascontiguousarray(y), reset

    def epoch_windows(self):
        """One pass over the rows from the start (for evaluation); does not move `position`."""
        for i in range(0, self.width - 1, self.seq_len):
            t = min(self.seq_len, self.width - 1 - i)
            yield (np.ascontiguousarray(self.rows[:, i:i + t].T),
                   np.ascontiguousarray(self.rows[:, i + 1:i + 1 + t].T))
