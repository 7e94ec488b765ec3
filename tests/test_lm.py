"""The char-LM: model, sampling, checkpoints, the training loop, the n-gram baseline."""
import math
import os
import zipfile

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.text import CharVocab, UnknownCharError
from tinygrad_rnn.lm import checkpoint as C
from tinygrad_rnn.lm import CharLM, NGramModel, TrainConfig, available_cells, evaluate, load_model, train
from tinygrad_rnn.lm.model import detach_state
from tinygrad_rnn.lm.ngram import evaluate as ngram_evaluate
from tinygrad_rnn.lm.sample import next_distribution, sample_next

TEXT = ("the cat sat on the mat. the dog sat on the log. " * 40
        + "a bird sang in the tree; the cat did not. " * 20)


@pytest.fixture
def vocab():
    return CharVocab.from_text(TEXT)


def tiny(vocab, cell="lstm", **kw):
    return CharLM(vocab, cell=cell, hidden=kw.pop("hidden", 16), layers=kw.pop("layers", 1), **kw)


# ----------------------------------------------------------------------------- model
@pytest.mark.parametrize("cell", available_cells())
def test_forward_shapes_and_state_for_every_cell(vocab, cell):
    m = tiny(vocab, cell, layers=2)
    x = np.random.default_rng(0).integers(0, len(vocab), (7, 3))
    logits, state = m(x)
    assert logits.shape == (7, 3, len(vocab))
    # carrying the state across a cut gives the same logits as one long window
    a, s = m(x[:4])
    b, _ = m(x[4:], s)
    np.testing.assert_allclose(np.concatenate([a.numpy(), b.numpy()]), logits.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("embed_dim", [None, 8])
def test_loss_backward_reaches_every_parameter(vocab, embed_dim):
    m = tiny(vocab, embed_dim=embed_dim)
    x = np.random.default_rng(1).integers(0, len(vocab), (5, 2))
    loss, state = m.loss(x, np.roll(x, -1, axis=0))
    assert abs(loss.item() - math.log(len(vocab))) < 0.5  # untrained: near uniform
    loss.backward()
    assert all(p.grad is not None for p in m.parameters())
    assert (m.embed is None) == (embed_dim is None)
    for s in detach_state(state):
        assert s._ctx is None


def test_unknown_cell(vocab):
    with pytest.raises(ValueError, match="unknown cell 'tcn'"):
        CharLM(vocab, cell="tcn")


# ----------------------------------------------------------------------------- sampling
def test_seeded_generation_is_reproducible(vocab):
    m = tiny(vocab)
    a = m.generate("the ", 40, seed=123)
    assert isinstance(a, str) and len(a) == 40 and set(a) <= set(vocab.chars)
    assert m.generate("the ", 40, seed=123) == a
    assert m.generate("the ", 40, seed=124) != a
    assert m.training  # generate restores the mode


def test_top_k_1_is_greedy(vocab):
    m = tiny(vocab)
    out = m.generate("the c", 15, top_k=1, seed=1)
    assert out == m.generate("the c", 15, top_k=1, seed=99) == m.generate("the c", 15, temperature=0)
    # the same rollout by hand: argmax of the last logits, fed back in
    ids = list(vocab.encode("the c"))
    with tg.no_grad():
        m.eval()
        logits, state = m(np.array(ids).reshape(-1, 1))
        want = []
        for _ in range(15):
            nxt = int(np.argmax(logits.numpy()[-1, 0]))
            want.append(nxt)
            logits, state = m(np.array([[nxt]]), state)
    assert out == vocab.decode(want)


def test_generate_with_ids_and_empty_prompt(vocab):
    m = tiny(vocab)
    ids = m.generate([1, 2, 3], 5, seed=0)
    assert isinstance(ids, list) and len(ids) == 5
    assert len(m.generate("", 5, seed=0)) == 5


def test_prompt_with_unknown_char(vocab):
    with pytest.raises(UnknownCharError, match="'Z'.*position 4"):
        tiny(vocab).generate("the Zebra", 5)


def test_temperature_sharpens_and_flattens():
    logits = np.array([2.0, 1.0, 0.5, -1.0])
    entropy = lambda p: -(p[p > 0] * np.log(p[p > 0])).sum()  # noqa: E731
    ps = [next_distribution(logits, t) for t in (0.25, 0.5, 1.0, 2.0, 8.0)]
    ents = [entropy(p) for p in ps]
    assert all(a < b for a, b in zip(ents, ents[1:]))
    np.testing.assert_allclose(ps[2], np.exp(logits) / np.exp(logits).sum())
    np.testing.assert_array_equal(next_distribution(logits, 0.0), [1, 0, 0, 0])
    with pytest.raises(ValueError):
        next_distribution(logits, -1.0)


def test_top_k_keeps_k_and_empirical_frequencies_match():
    logits = np.log(np.array([0.1, 0.4, 0.2, 0.3]))
    p = next_distribution(logits, 1.0, top_k=2)
    np.testing.assert_allclose(p, [0, 4 / 7, 0, 3 / 7])
    rng = np.random.default_rng(0)
    draws = np.bincount([sample_next(logits, rng) for _ in range(20000)], minlength=4) / 20000
    np.testing.assert_allclose(draws, [0.1, 0.4, 0.2, 0.3], atol=0.015)
    with pytest.raises(ValueError):
        next_distribution(logits, 1.0, top_k=0)


# ----------------------------------------------------------------------------- checkpoints
def test_optimizer_state_round_trips_through_a_checkpoint_bit_for_bit(tmp_path):
    # the checkpoint stores the optimizer's state in its own flat form (one serializer)
    import tinygrad_rnn as tg
    from tinygrad_rnn import optim
    w = tg.tensor(np.arange(4.0), requires_grad=True)
    opt = optim.Adam([w], lr=2e-3, betas=(0.8, 0.99))
    for _ in range(3):
        opt.zero_grad()
        (w * w).sum().backward()
        opt.step()
    C.save(tmp_path / "c.npz", meta={"step": 3, "config": {}}, model_state={"w": w.numpy()},
           optim_state=opt.state_dict())
    back = C.load(tmp_path / "c.npz")
    w2 = tg.tensor(w.numpy(), requires_grad=True)
    opt2 = optim.Adam([w2], lr=1.0)
    opt2.load_state_dict(back.optim_state)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.99) and opt2.param_groups[0]["lr"] == 2e-3
    for o, t in ((opt, w), (opt2, w2)):
        o.zero_grad()
        (t * t).sum().backward()
        o.step()
    np.testing.assert_array_equal(w.numpy(), w2.numpy())


def test_a_version_1_checkpoint_still_loads_its_model_but_cannot_resume(tmp_path, corpus_file):
    import json as _json
    from tinygrad_rnn.lm.train import TrainError, train
    out = tmp_path / "run"
    train(_cfg(corpus_file, steps=3), str(out), echo=lambda *a: None, progress="none", final_sample_length=0)
    # rewrite it as version 1 wrote it: the optimizer state as JSON with array references
    with np.load(out / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files if not k.startswith("optim/")}
    meta = _json.loads(arrays["meta"].tobytes().decode())
    meta["optimizer_state"] = {"state": {}, "param_groups": []}
    arrays["meta"] = np.frombuffer(_json.dumps(meta).encode(), dtype=np.uint8)
    arrays["version"] = np.array(1)
    np.savez(out / "checkpoint.npz", **arrays)
    c = C.load(out)
    assert c.optim_state is None and c.model_state  # the model is all there
    with pytest.raises(TrainError, match=r"layout of checkpoint format version 1.*cannot continue"):
        train(_cfg(corpus_file, steps=6), str(out), resume=True, explicit={"steps"}, echo=lambda *a: None,
              progress="none")


def _save_one(path, step=1):
    C.save(path, meta={"step": step, "config": {}}, model_state={"w": np.arange(6.0).reshape(2, 3)},
           optim_state={"state": {0: {"m": np.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
           hidden=(np.zeros((1, 2, 3), np.float32), np.ones((1, 2, 3), np.float32)))


def test_checkpoint_round_trip(tmp_path):
    p = tmp_path / "c.npz"
    _save_one(p, step=7)
    c = C.load(p)
    assert c.meta["step"] == 7
    np.testing.assert_array_equal(c.model_state["w"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(c.optim_state["state"][0]["m"], np.ones(3))
    assert isinstance(c.hidden, tuple) and c.hidden[1].sum() == 6
    assert [n for n in os.listdir(tmp_path)] == ["c.npz"]  # no temporary file left behind
    with zipfile.ZipFile(p) as z:  # plain arrays only: nothing pickled
        assert all(n.endswith(".npy") for n in z.namelist())


def test_truncated_checkpoint_is_refused(tmp_path):
    p = tmp_path / "c.npz"
    _save_one(p)
    raw = p.read_bytes()
    for cut in (len(raw) // 2, len(raw) - 10, 30):
        p.write_bytes(raw[:cut])
        with pytest.raises(C.CheckpointError, match="truncated or corrupted|not a tinygrad_rnn"):
            C.load(p)


def test_corrupted_checkpoint_is_refused(tmp_path):
    p = tmp_path / "c.npz"
    _save_one(p)
    raw = bytearray(p.read_bytes())
    i = raw.index(b"\x93NUMPY") + 200  # inside the first member's data
    raw[i:i + 8] = b"\xff" * 8
    p.write_bytes(bytes(raw))
    with pytest.raises(C.CheckpointError, match="truncated or corrupted"):
        C.load(p)


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_text("hello"), "not an .npz"),
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: np.savez(p, weights=np.ones(3)), "without the format tag"),
    (lambda p: np.savez(p, format=np.array("something.else"), version=np.array(1)), "format tag is 'something.else'"),
    (lambda p: np.savez(p, format=np.array(C.FORMAT), version=np.array(99), meta=np.zeros(1, np.uint8)), "newer"),
])
def test_foreign_files_are_refused(tmp_path, make, match):
    p = tmp_path / "x.npz"
    make(p)
    with open(p, "rb"):
        pass
    with pytest.raises(C.CheckpointError, match=match):
        C.load(p)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(C.CheckpointError, match="no such checkpoint"):
        C.load(tmp_path / "none.npz")
    with pytest.raises(C.CheckpointError, match="no checkpoint.npz"):
        C.load(tmp_path)


def test_a_crash_mid_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    p = tmp_path / "c.npz"
    _save_one(p, step=1)
    before = p.read_bytes()

    def crash(f, arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(C, "_write_npz", crash)
    with pytest.raises(OSError, match="disk full"):
        _save_one(p, step=2)
    assert p.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]
    monkeypatch.undo()
    assert C.load(p).meta["step"] == 1


# ----------------------------------------------------------------------------- training (library API)
def _cfg(path, **kw):
    base = dict(data=str(path), hidden=24, layers=1, seq_len=16, batch=4, steps=40, eval_every=20,
                log_every=1, sample_length=20, eval_chars=None)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def test_train_learns_and_writes_everything(tmp_path, corpus_file):
    out = tmp_path / "run"
    lines = []
    r = train(_cfg(corpus_file, steps=60, lr=1e-2), out, echo=lines.append, progress="none")
    assert r.status == "done" and r.step == 60
    assert np.mean(r.losses[-10:]) < np.mean(r.losses[:5]) - 0.5
    assert r.val_loss is not None and r.val_bpc == pytest.approx(r.val_loss / math.log(2))
    assert os.path.exists(out / "checkpoint.npz") and os.path.exists(out / "metrics.jsonl")
    assert r.sample and any("--- sample ---" in s for s in lines)
    model, vocab, c = load_model(out)
    assert c.meta["step"] == 60
    loss, n = evaluate(model, vocab.encode(TEXT[-len(TEXT) // 10:]))
    assert loss == pytest.approx(r.val_loss, rel=1e-4)


def test_train_refuses_to_clobber_and_to_resume_nothing(tmp_path, corpus_file):
    from tinygrad_rnn.lm import TrainError
    out = tmp_path / "run"
    with pytest.raises(TrainError, match="no checkpoint"):
        train(_cfg(corpus_file, steps=2), out, resume=True, echo=lambda s: None, progress="none")
    train(_cfg(corpus_file, steps=2), out, echo=lambda s: None, progress="none")
    with pytest.raises(TrainError, match="already holds a checkpoint"):
        train(_cfg(corpus_file, steps=2), out, echo=lambda s: None, progress="none")
    with pytest.raises(TrainError, match="hidden is 24"):
        train(_cfg(corpus_file, steps=4, hidden=32), out, resume=True, explicit={"hidden"},
              echo=lambda s: None, progress="none")


@pytest.mark.parametrize("cell, dropout, optimizer", [("lstm", 0.3, "adam"), ("gru", 0.0, "adagrad"),
                                                      ("rnn", 0.0, "sgd")])
def test_resume_equals_uninterrupted(tmp_path, corpus_file, cell, dropout, optimizer):
    quiet = dict(echo=lambda s: None, progress="none", final_sample_length=0)
    kw = dict(cell=cell, dropout=dropout, layers=2, optimizer=optimizer, eval_every=7)
    full = train(_cfg(corpus_file, steps=30, **kw), tmp_path / "a", **quiet)
    part = train(_cfg(corpus_file, steps=13, **kw), tmp_path / "b", **quiet)
    rest = train(_cfg(corpus_file, steps=30, **kw), tmp_path / "b", resume=True, explicit={"steps"}, **quiet)
    assert part.losses + rest.losses == full.losses  # exactly, loss for loss
    assert rest.val_loss == full.val_loss


def test_resume_across_an_epoch_boundary_with_lr_decay(tmp_path, corpus_file):
    quiet = dict(echo=lambda s: None, progress="none", final_sample_length=0)
    # 2484 chars of train in 4 rows of 621: 39 windows of 16 per epoch
    kw = dict(batch=4, seq_len=16, eval_every=1000, lr_decay=0.5)
    full = train(_cfg(corpus_file, steps=50, **kw), tmp_path / "a", **quiet)
    part = train(_cfg(corpus_file, steps=39, **kw), tmp_path / "b", **quiet)
    rest = train(_cfg(corpus_file, steps=50, **kw), tmp_path / "b", resume=True, explicit={"steps"}, **quiet)
    assert part.losses + rest.losses == full.losses
    const = train(_cfg(corpus_file, steps=50, **dict(kw, lr_decay=1.0)), tmp_path / "c", **quiet)
    # the same until the first window of epoch 1 has been trained on with half the rate
    assert const.losses[:40] == full.losses[:40] and const.losses[40:] != full.losses[40:]


def test_checkpoint_with_weights_of_another_model_is_refused(tmp_path, corpus_file):
    out = tmp_path / "run"
    train(_cfg(corpus_file, steps=2), out, echo=lambda s: None, progress="none", final_sample_length=0)
    c = C.load(out / "checkpoint.npz")
    c.model_state["head.weight"] = np.zeros((3, 3), np.float32)
    C.save(out / "checkpoint.npz", meta=c.meta, model_state=c.model_state, optim_state=c.optim_state,
           hidden=c.hidden)
    with pytest.raises(C.CheckpointError, match="cannot continue.*head.weight"):
        train(_cfg(corpus_file, steps=4), out, resume=True, explicit={"steps"}, echo=lambda s: None,
              progress="none")
    with pytest.raises(C.CheckpointError, match="do not fit.*head.weight"):
        load_model(out)


# ----------------------------------------------------------------------------- n-gram baseline
def test_ngram_known_probabilities():
    ids = np.array([0, 1] * 50)  # "abab...": after a always b, after b always a
    m = NGramModel(order=2, k=1.0).fit(ids, vocab_size=2)
    lp = m.log_probs(np.array([0, 1, 1]), context=np.array([1]))
    # counts: a->b 50 times, b->a 49 times, b->b never; add-1 over 2 characters
    np.testing.assert_allclose(lp, np.log([50 / 51, 51 / 52, 1 / 51]))
    uni = NGramModel(order=1, k=0.5).fit(np.array([0, 0, 0, 1]), vocab_size=3)
    np.testing.assert_allclose(np.exp(uni.log_probs(np.array([0, 1, 2]))),
                               [3.5 / 5.5, 1.5 / 5.5, 0.5 / 5.5])


def test_ngram_unseen_context_is_uniform_and_probabilities_sum_to_one():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, 500)
    m = NGramModel(order=3, k=0.1).fit(ids, 4)
    for ctx in ([0, 1], [3, 3], [2, 0]):
        p = [math.exp(m.log_probs(np.array([c]), context=np.array(ctx))[0]) for c in range(4)]
        assert sum(p) == pytest.approx(1.0)
    m2 = NGramModel(order=3, k=0.1).fit(np.array([0, 1, 0, 1, 0, 1]), 4)
    assert m2.log_probs(np.array([2]), context=np.array([3, 3]))[0] == pytest.approx(-math.log(4))


def test_ngram_beats_unigram_on_structured_text(vocab):
    ids = vocab.encode(TEXT)
    n = len(ids) * 9 // 10
    r5 = ngram_evaluate(ids[:n], ids[n:], len(vocab), order=5, k=0.01)
    r1 = ngram_evaluate(ids[:n], ids[n:], len(vocab), order=1, k=0.01)
    assert r5["val_loss"] < r1["val_loss"] / 2
    assert r5["bpc"] == pytest.approx(r5["val_loss"] / math.log(2))
    with pytest.raises(ValueError):
        NGramModel(order=0)
    with pytest.raises(ValueError):
        NGramModel(k=0)


# ----------------------------------------------------------------------------- learning-rate schedules
def _sched_cfg(corpus_file, **kw):
    from tinygrad_rnn.lm.train import TrainConfig
    base = dict(data=str(corpus_file), hidden=8, batch=2, seq_len=8, steps=20, eval_every=1000, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step", "exp", "onecycle"])
def test_train_schedule_sets_the_rate_of_each_step(tmp_path, corpus_file, schedule):
    from tinygrad_rnn.lm.train import Run
    cfg = _sched_cfg(corpus_file, schedule=schedule, warmup=4, lr=0.01)
    run = Run.start(cfg, str(tmp_path / schedule))
    rates = []
    for _ in range(20):
        run.step()
        rates.append(run.opt.param_groups[0]["lr"])
    for t in range(4):  # linear warm-up: (t + 1) / (w + 1)
        assert rates[t] == pytest.approx(0.01 * (t + 1) / 5, rel=1e-12)
    main = [r / 0.01 for r in rates[4:]]  # the schedule over the remaining 16 steps
    want = {"constant": [1.0] * 16, "cosine": [(1 + math.cos(math.pi * k / 16)) / 2 for k in range(16)],
            "step": [0.5 ** (k // 4) for k in range(16)], "exp": [0.01 ** (k / 16) for k in range(16)]}
    if schedule in want:
        np.testing.assert_allclose(main, want[schedule], rtol=1e-12)
    else:  # onecycle: from max/25 up to the max at 30%, then down towards max/25/1e4
        assert main[0] == pytest.approx(1 / 25) and 0.99 < max(main) <= 1.0 and main[-1] < main[-2] and main[-1] < 0.05


def test_a_scheduled_run_resumes_exactly(tmp_path, corpus_file):
    # the schedule is a function of the step over --steps: a run of 20 steps cut after 9 (as an
    # interrupt leaves it: a checkpoint at step 9) and resumed takes the same 11 steps as one never cut
    from tinygrad_rnn.lm.train import Run, train
    kw = dict(schedule="cosine", warmup=3)
    quiet = dict(echo=lambda *a: None, progress="none", final_sample_length=0)
    straight = train(_sched_cfg(corpus_file, **kw), str(tmp_path / "a"), **quiet)
    cut = Run.start(_sched_cfg(corpus_file, **kw), str(tmp_path / "b"))
    for _ in range(9):
        cut.step()
    cut.save()
    resumed = train(_sched_cfg(corpus_file, **kw), str(tmp_path / "b"), resume=True, **quiet)
    assert resumed.losses == straight.losses[9:]


def test_schedule_errors(tmp_path, corpus_file):
    from tinygrad_rnn.lm.train import TrainConfig, TrainError, train
    with pytest.raises(TrainError, match=r"schedule 'cosine' needs a number of steps \(--steps\) or a time budget"):
        train(TrainConfig(data=str(corpus_file), schedule="cosine"), str(tmp_path / "x"))
    with pytest.raises(TrainError, match=r"warmup \(20 steps\) must be shorter than the run \(20 steps\)"):
        train(_sched_cfg(corpus_file, warmup=20), str(tmp_path / "y"))
    with pytest.raises(TrainError, match=r"schedule 'linear' is not one of constant, cosine"):
        train(_sched_cfg(corpus_file, schedule="linear"), str(tmp_path / "z"))


def test_top_p_keeps_the_nucleus():
    logits = np.log(np.array([0.2, 0.5, 0.3]))
    np.testing.assert_allclose(next_distribution(logits, 1.0, top_p=0.6), [0, 0.625, 0.375], rtol=1e-12)
    np.testing.assert_allclose(next_distribution(logits, 1.0, top_p=0.5), [0, 1, 0], rtol=1e-12)
    np.testing.assert_allclose(next_distribution(logits, 1.0, top_p=1.0), [0.2, 0.5, 0.3], rtol=1e-12)
    np.testing.assert_allclose(next_distribution(logits, 1.0, top_k=2, top_p=0.99), [0, 0.625, 0.375], rtol=1e-12)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
            next_distribution(logits, 1.0, top_p=bad)
