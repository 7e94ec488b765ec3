"""The command line, end to end: train, sample, eval, plot, ngram; exit codes and messages."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = ("the cat sat on the mat. the dog sat on the log. " * 40
        + "a bird sang in the tree; the cat did not. " * 20)
TINY = ["--hidden", "24", "--layers", "1", "--seq-len", "16", "--batch", "4", "--progress", "none"]


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return str(p)


def metrics(run):
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def train_losses(run):
    return [(r["step"], r["train_loss"]) for r in metrics(run) if not r.get("final")]


def run_cli(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OPENBLAS_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "tinygrad_rnn", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


# ----------------------------------------------------------------------------- the happy path
def test_train_end_to_end(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    rc = main(["train", "--data", corpus, *TINY, "--steps", "60", "--lr", "1e-2", "--eval-every", "20",
               "--log-every", "5", "--out", out])
    assert rc == 0
    text = capsys.readouterr().out
    assert "val loss" in text and "bits/char" in text and "--- sample ---" in text and "final (step 60" in text
    m = metrics(out)
    assert [r["step"] for r in m if not r.get("final")] == list(range(5, 61, 5))
    assert {"step", "train_loss", "val_loss", "val_bpc", "tok_s", "elapsed"} <= set(m[0])
    train = [r["train_loss"] for r in m if r["train_loss"] is not None]
    assert train[-1] < train[0] - 0.5  # it learns
    vals = [r["val_loss"] for r in m if r["val_loss"] is not None]
    assert len(vals) == 3 and vals[-1] < vals[0]  # steps 20, 40 and the final
    assert os.path.exists(os.path.join(out, "checkpoint.npz"))

    assert main(["sample", out, "--prompt", "the ", "--length", "30", "--seed", "3"]) == 0
    s1 = capsys.readouterr().out
    assert s1.startswith("the ") and len(s1) == 4 + 30 + 1
    assert main(["sample", os.path.join(out, "checkpoint.npz"), "--prompt", "the ", "--length", "30",
                 "--seed", "3"]) == 0
    assert capsys.readouterr().out == s1  # a seed reproduces the sample
    assert main(["sample", out, "--length", "10", "--top-k", "1"]) == 0
    capsys.readouterr()

    assert main(["eval", out]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["val_loss"] == pytest.approx(vals[-1], rel=1e-5) and e["step"] == 60
    assert e["val_bpc"] == pytest.approx(e["val_loss"] / np.log(2), rel=1e-5)


def test_steps_and_minutes_together_stop_at_whichever_comes_first(tmp_path, corpus, capsys):
    # a schedule is a function of --steps; --minutes caps the wall time of the same run
    out = str(tmp_path / "a")
    argv = ["train", "--data", corpus, *TINY, "--schedule", "cosine", "--eval-every", "1000", "--progress", "none"]
    assert main([*argv, "--steps", "4", "--minutes", "10", "--out", out]) == 0
    assert "final (step 4" in capsys.readouterr().out
    out = str(tmp_path / "b")
    assert main([*argv, "--steps", "1000000", "--minutes", "0.001", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "1000000 steps or 0.001 minutes" in text and "final (step 1000000" not in text
    step = json.loads(open(os.path.join(out, "metrics.jsonl")).read().splitlines()[-1])["step"]
    assert 1 <= step < 1000


def test_python_dash_m_runs(tmp_path, corpus):
    out = str(tmp_path / "run")
    r = run_cli("train", "--data", corpus, *TINY, "--steps", "5", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "final (step 5" in r.stdout
    r = run_cli("--help")
    assert r.returncode == 0 and "train" in r.stdout and "ngram" in r.stdout


def test_ngram_command(corpus, capsys):
    assert main(["ngram", "--data", corpus, "--order", "3"]) == 0
    assert "3-gram" in capsys.readouterr().out


# ----------------------------------------------------------------------------- resume
def test_resume_equals_uninterrupted(tmp_path, corpus):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ["--data", corpus, *TINY, "--layers", "2", "--dropout", "0.2", "--log-every", "1",
              "--eval-every", "6"]
    assert main(["train", *common, "--steps", "24", "--out", a]) == 0
    assert main(["train", *common, "--steps", "11", "--out", b]) == 0
    assert main(["train", "--resume", "--steps", "24", "--out", b, "--progress", "none"]) == 0
    assert train_losses(a) == train_losses(b)
    assert len(train_losses(a)) == 24


def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path, corpus):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    common = ["--data", corpus, *TINY, "--hidden", "48", "--log-every", "1", "--eval-every", "1000"]
    env = dict(os.environ, PYTHONPATH=ROOT, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tinygrad_rnn", "train", *common, "--steps", "100000",
                             "--out", b], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            path = os.path.join(b, "metrics.jsonl")
            if os.path.exists(path) and len(open(path).read().splitlines()) >= 8:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "checkpoint saved at step" in out and "Traceback" not in err
    from tinygrad_rnn.lm.checkpoint import load
    stopped = load(os.path.join(b, "checkpoint.npz")).meta["step"]
    assert stopped >= 8 and train_losses(b)[-1][0] == stopped
    total = stopped + 6
    assert main(["train", "--resume", "--steps", str(total), "--out", b, "--progress", "none"]) == 0
    assert main(["train", *common, "--steps", str(total), "--out", a]) == 0
    assert train_losses(a) == train_losses(b)


# ----------------------------------------------------------------------------- bad arguments: exit 2
@pytest.mark.parametrize("argv, needle", [
    ([], "COMMAND"),
    (["fly"], "invalid choice"),
    (["train", "--hidden", "0"], "--hidden"),
    (["train", "--hidden", "big"], "--hidden"),
    (["train", "--cell", "transformer"], "--cell"),
    (["train", "--optimizer", "lbfgs"], "--optimizer"),
    (["train", "--dropout", "1.5"], "--dropout"),
    (["train", "--lr", "-1"], "--lr"),
    (["train", "--lr-decay", "0"], "--lr-decay"),
    (["train", "--device", "tpu"], "--device"),
    (["train", "--val-fraction", "1"], "--val-fraction"),
    (["sample"], "CKPT"),
    (["sample", "x.npz", "--temperature", "-0.5"], "--temperature"),
    (["sample", "x.npz", "--top-k", "0"], "--top-k"),
])
def test_bad_arguments_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--steps", "1.5"], "argument --steps: expected a positive integer, got '1.5'"),
    (["train", "--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'"),
    (["train", "--lr", "nan"], "argument --lr: expected a positive number, got 'nan'"),
    (["train", "--minutes", "inf"], "argument --minutes: expected a positive number, got 'inf'"),
    (["train", "--clip", "-0.1"], "argument --clip: expected a non-negative number, got '-0.1'"),
    (["train", "--dropout", "1"], "argument --dropout: expected a number in [0, 1), got '1'"),
    (["train", "--lr-decay", "1.01"], "argument --lr-decay: expected a number in (0, 1], got '1.01'"),
    (["ngram", "--val-fraction", "0"], "argument --val-fraction: expected a number between 0 and 1 (exclusive), got '0'"),
])
def test_number_arguments_say_what_they_expect(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_resume_and_overwrite_together(tmp_path, capsys):
    assert main(["train", "--resume", "--overwrite", "--out", str(tmp_path)]) == 2
    assert "contradict" in capsys.readouterr().err


# ----------------------------------------------------------------------------- bad files: exit 1, no traceback
def _expect_error(argv, capsys, *needles):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err and "error:" in err
    for n in needles:
        assert n in err, err


def test_bad_data_files(tmp_path, capsys):
    _expect_error(["train", "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "r")], capsys,
                  "missing.txt", "no such file")
    (tmp_path / "empty.txt").write_bytes(b"")
    _expect_error(["train", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "r")], capsys, "empty")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1") * 100)
    _expect_error(["train", "--data", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "r")], capsys,
                  "not UTF-8")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"\x00\x01")
    _expect_error(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r")], capsys, "no non-empty")
    _expect_error(["ngram", "--data", str(tmp_path / "missing.txt")], capsys, "no such file")
    (tmp_path / "short.txt").write_text("abcdefghij" * 3)
    _expect_error(["train", "--data", str(tmp_path / "short.txt"), "--batch", "32", "--out", str(tmp_path / "r")],
                  capsys, "lower --batch")


def test_bad_checkpoints(tmp_path, corpus, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--data", corpus, *TINY, "--steps", "3", "--out", out]) == 0
    capsys.readouterr()
    ck = os.path.join(out, "checkpoint.npz")
    raw = open(ck, "rb").read()
    bad = tmp_path / "truncated.npz"
    bad.write_bytes(raw[: len(raw) // 2])
    _expect_error(["sample", str(bad)], capsys, "truncated or corrupted")
    _expect_error(["eval", str(bad)], capsys, "truncated or corrupted")
    txt = tmp_path / "notes.npz"
    txt.write_text("not a checkpoint")
    _expect_error(["sample", str(txt)], capsys, "not a tinygrad_rnn checkpoint")
    _expect_error(["sample", str(tmp_path / "nothing.npz")], capsys, "no such checkpoint")
    _expect_error(["sample", out, "--prompt", "Zebra"], capsys, "'Z'", "position 0")
    # a run directory is not clobbered, and resuming nothing is an error
    _expect_error(["train", "--data", corpus, *TINY, "--steps", "3", "--out", out], capsys, "--resume")
    _expect_error(["train", "--resume", "--out", str(tmp_path / "empty_run")], capsys, "no checkpoint")
    _expect_error(["train", "--resume", "--hidden", "99", "--out", out], capsys, "hidden is 24")
    (tmp_path / "other.txt").write_text(TEXT.upper(), encoding="utf-8")
    _expect_error(["eval", out, "--data", str(tmp_path / "other.txt")], capsys, "not in the vocabulary")


def test_resume_refuses_a_changed_corpus(tmp_path, capsys):
    p = tmp_path / "c.txt"
    p.write_text(TEXT, encoding="utf-8")
    out = str(tmp_path / "run")
    assert main(["train", "--data", str(p), *TINY, "--steps", "2", "--out", out]) == 0
    p.write_text(TEXT[::-1], encoding="utf-8")
    _expect_error(["train", "--resume", "--steps", "4", "--out", out], capsys, "SHA-256")


# ----------------------------------------------------------------------------- plot
def test_plot_without_matplotlib(tmp_path, corpus, capsys, monkeypatch):
    out = str(tmp_path / "run")
    assert main(["train", "--data", corpus, *TINY, "--steps", "4", "--log-every", "1", "--out", out]) == 0
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    _expect_error(["plot", out], capsys, "matplotlib", "pip install")
    _expect_error(["plot", str(tmp_path / "nowhere")], capsys, "no metrics.jsonl")


def test_plot_writes_a_png(tmp_path, corpus, capsys):
    pytest.importorskip("matplotlib")
    out = str(tmp_path / "run")
    assert main(["train", "--data", corpus, *TINY, "--steps", "6", "--log-every", "1", "--eval-every", "3",
                 "--out", out]) == 0
    assert main(["plot", out]) == 0
    png = os.path.join(out, "loss.png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- progress display
def test_progress_bar_with_tqdm(tmp_path, corpus, capsys):
    pytest.importorskip("tqdm")
    out = str(tmp_path / "run")
    args = [a for a in TINY if a not in ("--progress", "none")]
    assert main(["train", "--data", corpus, *args, "--steps", "5", "--progress", "bar", "--out", out]) == 0
    err = capsys.readouterr().err
    assert "tok/s" in err and "5/5" in err


def test_progress_without_tqdm(tmp_path, corpus, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if it were not installed
    out = str(tmp_path / "run")
    args = [a for a in TINY if a not in ("--progress", "none")]
    assert main(["train", "--data", corpus, *args, "--steps", "5", "--progress", "bar", "--out", out]) == 0
    assert "final (step 5" in capsys.readouterr().out


# ----------------------------------------------------------------------------- sampling options
@pytest.fixture
def trained(tmp_path):
    corpus = tmp_path / "lines.txt"  # with newlines, for prompts of many lines
    corpus.write_text(TEXT.replace(". ", ".\n"), encoding="utf-8")
    out = str(tmp_path / "s")
    assert main(["train", "--data", str(corpus), *TINY, "--steps", "30", "--lr", "1e-2", "--eval-every", "1000",
                 "--out", out]) == 0
    return out


def test_sampling_options(tmp_path, trained, capsys):
    from tinygrad_rnn.lm.train import load_model
    capsys.readouterr()
    model, _, _ = load_model(trained)
    plain = model.generate("the ", 40, temperature=1.0, seed=5)
    assert model.generate("the ", 40, temperature=1.0, seed=5, top_p=1.0) == plain  # p = 1: plain sampling
    greedy = model.generate("the ", 40, temperature=0)
    assert model.generate("the ", 40, temperature=1.0, seed=5, top_p=1e-9) == greedy  # tiny p: greedy
    assert model.generate("the ", 40, top_k=1) == greedy
    # several samples, each under its header, seeds S, S+1, ...
    assert main(["sample", trained, "--prompt", "the ", "--length", "20", "--seed", "7", "--num-samples", "2"]) == 0
    text = capsys.readouterr().out
    assert "=== sample 1 of 2 ===\nthe " in text and "=== sample 2 of 2 ===\nthe " in text
    second = text.split("=== sample 2 of 2 ===\n")[1].rstrip("\n")
    assert second == "the " + model.generate("the ", 20, seed=8, temperature=0.8)
    # a prompt of many lines from a file; a character the model never saw is named with its position
    pf = tmp_path / "prompt.txt"
    pf.write_text("the cat\nsat on ", encoding="utf-8")
    assert main(["sample", trained, "--prompt-file", str(pf), "--length", "10", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("the cat\nsat on ")
    pf.write_text("the cat\nsQuat", encoding="utf-8")
    _expect_error(["sample", trained, "--prompt-file", str(pf)], capsys, "--prompt-file", "'Q'", "position 9")


def test_sample_streams_as_it_generates(trained, monkeypatch):
    events = []

    class Out:
        def write(self, s):
            events.append(("write", s))

        def flush(self):
            events.append(("flush", None))

    monkeypatch.setattr(sys, "stdout", Out())
    assert main(["sample", trained, "--prompt", "the ", "--length", "25", "--seed", "2"]) == 0
    writes = [s for kind, s in events if kind == "write"]
    assert writes[0] == "the " and len(writes) >= 25 + 2  # the prompt, then one write per character
    flushes_between = sum(1 for kind, _ in events[1:-1] if kind == "flush")
    assert flushes_between >= 25  # each character is flushed as it comes, before the end


def _as_saved_on(src, dst, device, rng_state):
    """A copy of the checkpoint src as the same run saves it on another device: a checkpoint
    holds host arrays whatever the device, and names the device in its configuration and
    random state (CUDA's random state is its seed, see CUDADevice.get_rng_state)."""
    with np.load(os.path.join(src, "checkpoint.npz")) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    meta["config"]["device"] = device
    meta["rng"] = {"device": device, "state": rng_state, "ranks": [rng_state]}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    os.makedirs(dst)
    np.savez(os.path.join(dst, "checkpoint.npz"), **arrays)
    return dst


def test_a_cuda_checkpoint_samples_evaluates_and_resumes_on_the_cpu(tmp_path, trained, capsys):
    gpu = _as_saved_on(trained, str(tmp_path / "gpu"), "cuda:0", {"seed": 0})
    capsys.readouterr()
    for argv in (["sample", "--prompt", "the ", "--length", "40", "--seed", "3"], ["eval"]):
        outs = []
        for ckpt in (trained, gpu):
            assert main([argv[0], ckpt, "--device", "cpu", *argv[1:]]) == 0
            out = capsys.readouterr().out
            outs.append(out if argv[0] == "sample" else json.loads(out)["val_loss"])
        assert outs[0] == outs[1] and outs[0]
    # and training carries on there (without dropout the GPU's random state is not needed)
    assert main(["train", "--resume", "--out", gpu, "--device", "cpu", "--steps", "32", "--progress", "none"]) == 0
    assert "final (step 32" in capsys.readouterr().out


def test_a_cpu_checkpoint_samples_on_cuda_and_back(tmp_path, trained, capsys):
    ok, why = tg.cuda_available()
    if not ok:
        pytest.skip(f"cuda: {why}")
    capsys.readouterr()
    outs = []
    for dev in ("cpu", "cuda"):
        assert main(["sample", trained, "--device", dev, "--prompt", "the ", "--length", "40", "--temperature", "0"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]  # greedy: the same characters from the same weights
    gpu = str(tmp_path / "on_gpu")  # a run trained on the GPU, sampled on the CPU
    assert main(["train", "--data", str(tmp_path / "lines.txt"), *TINY, "--steps", "5", "--device", "cuda",
                 "--out", gpu]) == 0
    capsys.readouterr()
    assert main(["sample", gpu, "--device", "cpu", "--prompt", "the ", "--length", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("the ")


def test_top_p_is_checked(capsys):
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit):
            main(["sample", "x.npz", "--top-p", bad])
        assert "--top-p" in capsys.readouterr().err


def test_eval_on_other_text_with_unknown_characters_both_ways(tmp_path, trained, capsys):
    other = tmp_path / "other.txt"
    other.write_text(("the cat sat. " * 30) + "ZZ the Q dog. " * 10, encoding="utf-8")  # Z and Q: never seen
    capsys.readouterr()
    _expect_error(["eval", trained, "--data", str(other), "--val-fraction", "0.5"], capsys,
                  "character(s) the model has never seen", "'Z' x20", "'Q' x10", "--skip-unknown")
    assert main(["eval", trained, "--data", str(other), "--val-fraction", "0.5", "--skip-unknown"]) == 0
    cap = capsys.readouterr()
    rec = json.loads(cap.out)
    assert rec["unknown_chars"] == {"count": 30, "distinct": 2, "chars": "QZ"}
    assert "skipping 30 character(s)" in cap.err and rec["val_loss"] > 0 and rec["chars"] > 0
    clean = tmp_path / "clean.txt"
    clean.write_text("the dog sat on the cat. " * 40, encoding="utf-8")
    assert main(["eval", trained, "--data", str(clean)]) == 0  # nothing unknown: nothing reported
    assert "unknown_chars" not in json.loads(capsys.readouterr().out)


# ----------------------------------------------------------------------------- export
def _torch_charlm(torch, path):
    """The README's dozen lines: PyTorch's same model from the exported file."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    vocab, H, L, E = json.loads(meta["vocab"]), int(meta["hidden"]), int(meta["layers"]), int(meta["embed_dim"] or 0)

    class CharLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            V = len(vocab)
            self.embed = torch.nn.Embedding(V, E) if E else None
            self.rnn = getattr(torch.nn, meta["cell"].upper())(E or V, H, num_layers=L)
            self.head = torch.nn.Linear(H, V)

        def forward(self, ids, state=None):
            x = self.embed(ids) if self.embed is not None else torch.nn.functional.one_hot(ids, len(vocab)).float()
            out, state = self.rnn(x, state)
            return self.head(out), state

    m = CharLM()
    m.load_state_dict(load_file(path), strict=True)
    return m.eval(), vocab


@pytest.mark.parametrize("extra", [["--cell", "gru", "--embed-dim", "8"], ["--cell", "lstm", "--layers", "2"],
                                   ["--cell", "rnn"]], ids=["gru-embed", "lstm-2-onehot", "rnn"])
def test_export_round_trip(tmp_path, corpus, capsys, extra):
    pytest.importorskip("safetensors", reason="the export extra (safetensors) is not installed")
    from safetensors import safe_open
    from safetensors.numpy import load_file
    from tinygrad_rnn.lm.train import load_model
    out = str(tmp_path / "run")
    assert main(["train", "--data", corpus, *TINY, "--steps", "5", "--eval-every", "1000", "--out", out, *extra]) == 0
    path = str(tmp_path / "m.safetensors")
    assert main(["export", out, path]) == 0
    model, vocab, _ = load_model(out)
    tensors = load_file(path)
    assert set(tensors) == set(model.state_dict())
    assert all(k.split(".")[0] in ("embed", "rnn", "head") for k in tensors)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(tensors[k], v)
    with safe_open(path, "np") as f:
        meta = f.metadata()
    assert meta["cell"] == extra[1] and json.loads(meta["vocab"]) == list(vocab.chars)
    assert meta["embed_dim"] == ("8" if "--embed-dim" in extra else "")


@pytest.mark.parametrize("extra", [["--cell", "gru", "--embed-dim", "8"], ["--cell", "lstm", "--layers", "2"],
                                   ["--cell", "rnn"]], ids=["gru-embed", "lstm-2-onehot", "rnn"])
def test_exported_weights_give_pytorch_the_same_logits(tmp_path, corpus, extra):
    pytest.importorskip("safetensors", reason="the export extra (safetensors) is not installed")
    torch = pytest.importorskip("torch", reason="PyTorch is not installed (an optional comparison)")
    from tinygrad_rnn.lm.train import load_model
    out, path = str(tmp_path / "run"), str(tmp_path / "m.safetensors")
    assert main(["train", "--data", corpus, *TINY, "--steps", "5", "--eval-every", "1000", "--out", out, *extra]) == 0
    assert main(["export", out, path]) == 0
    model, vocab, _ = load_model(out)
    tm, tvocab = _torch_charlm(torch, path)
    ids = np.array([vocab.encode("the cat sat on the mat")]).T
    ours, _ = model(ids)
    with torch.no_grad():
        theirs, _ = tm(torch.tensor(ids))
    np.testing.assert_allclose(theirs.numpy(), ours.numpy(), rtol=1e-4, atol=1e-5)


def test_export_refusals(tmp_path, corpus, capsys, monkeypatch):
    out = str(tmp_path / "min")
    assert main(["train", "--data", corpus, *TINY, "--steps", "3", "--eval-every", "1000", "--out", out,
                 "--cell", "mingru"]) == 0
    capsys.readouterr()
    pytest.importorskip("safetensors", reason="the export extra (safetensors) is not installed")
    _expect_error(["export", out, str(tmp_path / "m.safetensors")], capsys, "a mingru model has no PyTorch equivalent")
    assert not os.path.exists(tmp_path / "m.safetensors")
    _expect_error(["export", str(tmp_path / "none"), str(tmp_path / "n.safetensors")], capsys, "no such checkpoint")
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)  # as if the extra were missing
    _expect_error(["export", out, str(tmp_path / "m.safetensors")], capsys, "pip install -e '.[export]'")
