"""examples/min_char_rnn.py: the engine's BPTT against min-char-rnn's hand-written
backward (written out below in plain NumPy, as in the original), and the example
training end to end."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_rnn as tg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "min_char_rnn.py")


@pytest.fixture(scope="module")
def mcr():
    spec = importlib.util.spec_from_file_location("min_char_rnn", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def ref_loss_fun(inputs, targets, hprev, Wxh, Whh, Why, bh, by, clip=True):
    """min-char-rnn's lossFun, as Karpathy wrote it (column vectors, dicts over t)."""
    vocab_size = Wxh.shape[1]
    xs, hs, ys, ps = {}, {}, {}, {}
    hs[-1] = np.copy(hprev)
    loss = 0
    for t in range(len(inputs)):
        xs[t] = np.zeros((vocab_size, 1))
        xs[t][inputs[t]] = 1
        hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
        ys[t] = np.dot(Why, hs[t]) + by
        ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
        loss += -np.log(ps[t][targets[t], 0])
    dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    dbh, dby = np.zeros_like(bh), np.zeros_like(by)
    dhnext = np.zeros_like(hs[0])
    for t in reversed(range(len(inputs))):
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1  # backprop into y
        dWhy += np.dot(dy, hs[t].T)
        dby += dy
        dh = np.dot(Why.T, dy) + dhnext  # backprop into h
        dhraw = (1 - hs[t] * hs[t]) * dh  # backprop through tanh
        dbh += dhraw
        dWxh += np.dot(dhraw, xs[t].T)
        dWhh += np.dot(dhraw, hs[t - 1].T)
        dhnext = np.dot(Whh.T, dhraw)
    if clip:
        for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
            np.clip(dparam, -5, 5, out=dparam)  # mitigate exploding gradients
    return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]


def _case(scale, vocab=13, hidden=100, seq_length=25, seed=0):
    rng = np.random.default_rng(seed)
    W = {"Wxh": rng.standard_normal((hidden, vocab)) * scale, "Whh": rng.standard_normal((hidden, hidden)) * scale,
         "Why": rng.standard_normal((vocab, hidden)) * scale, "bh": rng.standard_normal((hidden, 1)) * scale,
         "by": rng.standard_normal((vocab, 1)) * scale}
    seq = rng.integers(0, vocab, seq_length + 1)
    hprev = np.tanh(rng.standard_normal((hidden, 1)))
    return W, list(seq[:-1]), list(seq[1:]), hprev


def _engine(mcr, W, inputs, targets, hprev, clip):
    params = {k: tg.nn.Parameter(tg.tensor(v.reshape(v.shape[0]) if k in ("bh", "by") else v.copy(),
                                           dtype=tg.float64)) for k, v in W.items()}
    loss, h = mcr.loss_fun(params, inputs, targets, tg.tensor(hprev[:, 0], dtype=tg.float64))
    loss.backward()
    if clip:
        tg.nn.utils.clip_grad_value_(params.values(), 5)
    return loss.item(), {k: p.grad.numpy() for k, p in params.items()}, h.numpy()


@pytest.mark.parametrize("scale,clip", [(0.01, False), (0.3, False), (0.3, True)],
                         ids=["original-init", "large-weights", "large-weights-clipped"])
def test_bptt_equals_hand_written_backward(mcr, scale, clip):
    W, inputs, targets, hprev = _case(scale)
    ref = ref_loss_fun(inputs, targets, hprev, **W, clip=clip)
    loss, grads, h = _engine(mcr, W, inputs, targets, hprev, clip)
    assert loss == pytest.approx(ref[0], rel=1e-12)
    np.testing.assert_allclose(h, ref[6][:, 0], rtol=1e-10, atol=1e-12)
    for name, r in zip(("Wxh", "Whh", "Why", "bh", "by"), ref[1:6]):
        np.testing.assert_allclose(grads[name], r.reshape(grads[name].shape), rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    if clip:  # the clipped case must actually clip something, or it tests nothing
        unclipped = ref_loss_fun(inputs, targets, hprev, **W, clip=False)
        assert any(np.abs(g).max() > 5 for g in unclipped[1:6])


def test_training_reduces_smoothed_loss(mcr, tmp_path, capsys):
    text = tmp_path / "tiny.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\n" * 40, encoding="utf-8")
    hist = mcr.main(["--data", str(text), "--steps", "300", "--sample-every", "150", "--print-every", "100"])
    out = capsys.readouterr().out
    assert "iter 0, loss:" in out and "iter 200, loss:" in out and out.count("----\n") == 4
    steps, smooth, raw = zip(*hist)
    assert steps[-1] == 300
    # 0.999-smoothing keeps 74% of the starting value after 300 steps, so the smoothed loss
    # moves slowly (84.2 -> 79.4 at seed 0) while the loss itself falls from ~84 to ~15
    assert smooth[-1] < smooth[0] - 3
    assert np.mean(raw[-25:]) < 0.5 * raw[1]
    assert all(b < a for a, b in zip(smooth[150::50], smooth[200::50]))  # falling, step after step


def test_runs_on_strict_device(mcr, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abcabcabd" * 20, encoding="utf-8")
    hist = mcr.main(["--data", str(text), "--steps", "3", "--device", "strict", "--dtype", "float64",
                     "--sample-every", "2", "--hidden", "8"])
    assert len(hist) == 4


def test_command_line(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 30, encoding="utf-8")
    r = subprocess.run([sys.executable, EXAMPLE, "--data", str(text), "--steps", "20", "--print-every", "10",
                        "--sample-every", "0"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "data has 360 characters, 9 unique." in r.stdout and "iter 10, loss:" in r.stdout
    short = tmp_path / "short.txt"
    short.write_text("abc", encoding="utf-8")
    r = subprocess.run([sys.executable, EXAMPLE, "--data", str(short), "--steps", "1"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "the text has 3 characters; it needs at least 27" in r.stderr
