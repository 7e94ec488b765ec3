"""tinygrad_rnn.text.chars: vocabulary, corpora and their errors, the train/validation split, BPTT batching."""
import numpy as np
import pytest

from tinygrad_rnn.text import chars as D
from tinygrad_rnn.text import BPTTStream, CharVocab, DataError, UnknownCharError


# ----------------------------------------------------------------------------- vocabulary
def test_vocab_is_sorted_and_round_trips():
    text = "hello, wörld!\n\ttabs ✓"
    v = CharVocab.from_text(text)
    assert v.chars == sorted(set(text))
    ids = v.encode(text)
    assert ids.dtype == np.int64 and ids.shape == (len(text),)
    assert [v.chars[i] for i in ids] == list(text)
    assert v.decode(ids) == text
    assert v.decode(ids.tolist()) == text


def test_vocab_plain_data_round_trip():
    v = CharVocab.from_text("the quick brown fox ✓\n")
    assert CharVocab.from_dict(v.to_dict()) == v
    assert CharVocab.from_array(v.to_array()) == v
    assert isinstance(v.to_dict()["chars"], str)


def test_unknown_char_names_char_and_position():
    v = CharVocab.from_text("abc ")
    with pytest.raises(UnknownCharError) as e:
        v.encode("ab cab zab")
    assert e.value.char == "z" and e.value.position == 7
    assert "'z'" in str(e.value) and "position 7" in str(e.value)
    with pytest.raises(UnknownCharError, match="position 0"):
        v.encode("\U0001F600")  # beyond every code point in the vocabulary


def test_decode_rejects_out_of_range_ids():
    v = CharVocab.from_text("ab")
    with pytest.raises(DataError, match="out of range"):
        v.decode([0, 2])


def test_empty_vocab_is_an_error():
    with pytest.raises(DataError):
        CharVocab.from_text("")


# ----------------------------------------------------------------------------- corpora and their errors
def test_read_text_file(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("\ufeffhi there\n", encoding="utf-8")
    assert D.read_text_file(p) == "hi there\n"  # a BOM is not text


@pytest.mark.parametrize("content, match", [
    (b"", "empty"),
    (b"caf\xe9 au lait", "not UTF-8 text .*offset 3"),
    (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
])
def test_bad_files_give_clear_errors(tmp_path, content, match):
    p = tmp_path / "f.txt"
    p.write_bytes(content)
    with pytest.raises(DataError, match=match) as e:
        D.read_text_file(p)
    assert str(p) in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        D.read_text_file(tmp_path / "nope.txt")


def test_directory_reader_sorted_and_skips_non_text(tmp_path):
    (tmp_path / "b.txt").write_text("second", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("third", encoding="utf-8")
    (tmp_path / "z.bin").write_bytes(b"\x00\x01\x02")
    (tmp_path / ".hidden").write_text("secret", encoding="utf-8")
    assert D.read_text_dir(tmp_path) == "first\nsecond\nthird"
    assert D.read_text_file(tmp_path) == "first\nsecond\nthird"  # a directory path reads as one
    assert D.read_text_dir(tmp_path, max_chars=8) == "first\nse"


def test_directory_without_text(tmp_path):
    (tmp_path / "z.bin").write_bytes(b"\x00\x01")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="no non-empty UTF-8 text"):
        D.read_text_dir(tmp_path)


def test_stdlib_corpus_is_deterministic_and_capped():
    a = D.stdlib_text(50_000)
    assert len(a) == 50_000
    assert a == D.stdlib_text(50_000)
    assert "def " in a and "import " in a
    assert D.stdlib_text(20_000) == a[:20_000]  # a smaller cap is a prefix: fixed file order


def test_load_corpus_default_and_split():
    c = D.load_corpus(None, max_chars=30_000)
    assert "standard library" in c.name
    assert len(c.train) == 27_000 and len(c.val) == 3_000
    assert c.vocab.decode(c.val) == c.text[27_000:]
    assert c.vocab.decode(c.train) == c.text[:27_000]
    assert D.validation_text(c.text, 0.1) == c.text[27_000:]


def test_load_corpus_with_a_foreign_vocab(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("abcabcabcxyz", encoding="utf-8")
    with pytest.raises(DataError, match="'x'"):
        D.load_corpus(p, vocab=CharVocab("abc"))


def test_split_needs_enough_text():
    with pytest.raises(DataError, match="too few"):
        D.split_train_val(np.arange(5), 0.1)
    with pytest.raises(ValueError):
        D.split_train_val(np.arange(100), 1.5)


# ----------------------------------------------------------------------------- batching
def test_batchify_rows_are_contiguous_slices():
    ids = np.arange(103)
    rows = D.batchify(ids, 4)
    assert rows.shape == (4, 25)
    for b in range(4):
        np.testing.assert_array_equal(rows[b], ids[b * 25:(b + 1) * 25])
    with pytest.raises(DataError, match="lower --batch"):
        D.batchify(np.arange(5), 4)


def test_windows_continue_rows_and_targets_are_shifted():
    ids = np.arange(1000) * 7 % 1009  # distinct values, so positions are recoverable
    s = BPTTStream(ids, batch=4, seq_len=16)
    rows = s.rows
    width = rows.shape[1]
    seen = [[] for _ in range(4)]
    first = True
    while True:
        x, y, reset = s.next()
        assert reset == first
        first = False
        assert x.shape == y.shape and x.shape[1] == 4  # time-major (T, B)
        np.testing.assert_array_equal(x[1:], y[:-1])  # targets are the inputs shifted by one
        for b in range(4):
            seen[b].extend(x[:, b].tolist())
            # the target after the window's last input is the next element of the row
            pos = len(seen[b]) - 1
            assert y[-1, b] == rows[b, pos + 1]
        if s.offset == 0:
            break
    for b in range(4):  # each row was read exactly once, in order, window after window
        assert seen[b] == rows[b, :width - 1].tolist()
    assert s.epoch == 1
    x, y, reset = s.next()  # the next epoch starts over, with a reset of the state
    assert reset and x[0, 0] == rows[0, 0]


def test_last_window_may_be_short():
    s = BPTTStream(np.arange(41), batch=2, seq_len=8)  # rows of 20: windows of 8, 8, 3
    lengths = [s.next()[0].shape[0] for _ in range(s.windows_per_epoch)]
    assert lengths == [8, 8, 3]
    assert s.position == {"epoch": 1, "offset": 0}


def test_position_restores_the_stream():
    ids = np.arange(500)
    a = BPTTStream(ids, 3, 10)
    for _ in range(7):
        a.next()
    b = BPTTStream(ids, 3, 10)
    b.position = a.position
    for _ in range(20):
        xa, ya, ra = a.next()
        xb, yb, rb = b.next()
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
        assert ra == rb
    with pytest.raises(DataError, match="does not fit"):
        b.position = {"epoch": 0, "offset": 10_000}


def test_batches_are_host_arrays():
    x, y, _ = BPTTStream(np.arange(100), 2, 5).next()
    assert type(x) is np.ndarray and x.dtype == np.int64 and x.flags.c_contiguous


# ----------------------------------------------------------------------------- layering
def test_the_text_package_imports_nothing_else_of_the_package():
    # lm builds on text; an import from text upward (function-level ones included) would
    # make the two layers one again
    import ast
    import os

    import tinygrad_rnn.text as T
    root = os.path.dirname(T.__file__)
    for name in sorted(os.listdir(root)):
        if not name.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(open(os.path.join(root, name), encoding="utf-8").read())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1 and not (node.module or "").startswith("tinygrad_rnn"), \
                    f"text/{name}:{node.lineno} imports from {'.' * node.level}{node.module or ''}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("tinygrad_rnn") for a in node.names), \
                    f"text/{name}:{node.lineno} imports {[a.name for a in node.names]}"


def test_the_package_re_exports_both_halves():
    import tinygrad_rnn.text as T
    from tinygrad_rnn.text import chars, words
    for mod in (chars, words):
        for name in mod.__all__:
            assert getattr(T, name) is getattr(mod, name) and name in T.__all__
