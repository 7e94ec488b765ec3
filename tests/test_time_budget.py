"""train --minutes M --schedule S without --steps: the run measures its step time, fixes its
number of steps so that the whole run (final evaluation included) ends inside M minutes, and
records it so that a resumed run follows the same schedule. And the periodic validation
estimate: windows spread evenly over the whole validation text, the same at every evaluation."""
import importlib
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_rnn as tg
from tinygrad_rnn.cli import main
from tinygrad_rnn.lm import CharLM, TrainConfig, TrainError, train
from tinygrad_rnn.lm import checkpoint as C
T = importlib.import_module("tinygrad_rnn.lm.train")  # the module: tinygrad_rnn.lm.train is also the function
from tinygrad_rnn.lm.sample import log_softmax_rows
from tinygrad_rnn.text import CharVocab

TEXT = ("the cat sat on the mat. the dog sat on the log. " * 60
        + "a bird sang in the tree; the cat did not. " * 40)
BUDGET_S = 3.0  # minutes=0.05 on the fake clock


@pytest.fixture
def corpus_file(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


def _cfg(path, **kw):
    base = dict(data=str(path), hidden=8, seq_len=16, batch=4, minutes=BUDGET_S / 60, schedule="cosine",
                warmup=5, eval_every=50, eval_chars=200, log_every=1, sample_length=20, lr=0.01)
    base.update(kw)
    return TrainConfig(**base)


class FakeClock:
    """Time that moves only by what the run's work costs here: a step 10 ms (or `slow` after
    step `slow_after`), evaluation 10 us a character read, a sampled character 0.1 ms, a
    checkpoint 20 ms; `jump` seconds at step `jump_at`. The same run then takes the same time."""

    def __init__(self, monkeypatch, jump_at=None, jump=0.0, slow_after=None, slow=0.03):
        self.now = 0.0
        monkeypatch.setattr(T.Run, "clock", staticmethod(lambda: self.now))
        step, score, save, generate = T.Run.step, T._score_rows, T.Run._save, CharLM.generate

        def timed_step(run):  # the work comes before the step's own look at the clock, as in a real one
            n = run.step_count + 1
            self.now += slow if slow_after is not None and n > slow_after else 0.01
            if n == jump_at:
                self.now += jump
            return step(run)

        def timed_score(model, rows, *a, **k):
            self.now += rows.size * 1e-5
            return score(model, rows, *a, **k)

        def timed_save(run):
            self.now += 0.02
            return save(run)

        def timed_generate(model, prompt, length, *a, **k):
            self.now += length * 1e-4
            return generate(model, prompt, length, *a, **k)

        monkeypatch.setattr(T.Run, "step", timed_step)
        monkeypatch.setattr(T, "_score_rows", timed_score)
        monkeypatch.setattr(T.Run, "_save", timed_save)
        monkeypatch.setattr(CharLM, "generate", timed_generate)


def _train(cfg, out, lines=None, **kw):
    echo = (lambda *a, **k: None) if lines is None else (lambda s="", **k: lines.append(str(s)))
    return train(cfg, str(out), progress="none", echo=echo, **kw)


def _metrics(out):
    with open(out / "metrics.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_the_budget_fixes_the_steps_and_the_whole_run_ends_inside_it(tmp_path, corpus_file, monkeypatch):
    clock = FakeClock(monkeypatch)
    lines = []
    res = _train(_cfg(corpus_file), tmp_path / "a", lines)
    n = C.load(tmp_path / "a" / "checkpoint.npz").meta["config"]["schedule_steps"]
    fixed = [s for s in lines if s.startswith("schedule fixed")]
    assert fixed == [f"schedule fixed at {n} steps from 10.0 ms/step measured over 100 steps "
                     f"(evaluation 0.02 s every 50 steps, final evaluation ~0.00 s, checkpoint 0.02 s), "
                     f"to end inside 0.05 minutes"]
    assert res.status == "done" and res.step == n
    # everything, the final evaluation and the final sample too, inside the budget and not far under it
    assert (1 - 2 * T._SchedulePlan.MARGIN) * BUDGET_S <= clock.now <= BUDGET_S
    assert res.elapsed <= clock.now
    # the schedule runs over those n steps: cosine from the end of the warm-up down to (almost) 0 at n
    lrs = [r["lr"] for r in _metrics(tmp_path / "a") if "lr" in r]
    assert len(lrs) == n
    factor = T.lr_factor(_cfg(corpus_file, schedule_steps=n))
    np.testing.assert_allclose(lrs[120:], [0.01 * factor(t) for t in range(120, n)], rtol=1e-12)
    np.testing.assert_allclose(lrs[:5], [0.01 * (t + 1) / 6 for t in range(5)], rtol=1e-12)  # the warm-up
    assert lrs[5:120] == [0.01] * 115  # measuring: the schedule's starting rate
    assert lrs[-1] < 1e-3 * 0.01


def test_time_before_train_counts_against_the_budget(tmp_path, corpus_file, monkeypatch):
    """startup_s (the command line's process age: interpreter start-up, imports) is spent budget:
    the steps fixed shrink by what it takes, and the whole invocation still ends inside M minutes."""
    FakeClock(monkeypatch)
    n0 = _train(_cfg(corpus_file), tmp_path / "a", final_sample_length=0).step
    monkeypatch.undo()
    clock = FakeClock(monkeypatch)
    res = _train(_cfg(corpus_file), tmp_path / "b", final_sample_length=0, startup_s=1.0)
    assert res.elapsed <= BUDGET_S and clock.now + 1.0 <= BUDGET_S
    assert n0 - 110 <= res.step <= n0 - 85  # 1 s of 10 ms steps (and their share of evaluations) fewer


def test_process_age_is_the_time_since_the_process_started():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.3); "
                          "from tinygrad_rnn.cli import process_age; print(process_age())"],
                         capture_output=True, text=True, check=True).stdout
    assert 0.3 <= float(out) < 30.0


def test_a_resumed_budget_run_follows_the_same_schedule(tmp_path, corpus_file, monkeypatch):
    FakeClock(monkeypatch)
    straight = _train(_cfg(corpus_file), tmp_path / "a", final_sample_length=0)
    n = straight.step
    monkeypatch.undo()
    FakeClock(monkeypatch, jump_at=150, jump=1000.0)  # the --minutes cap stops this one at step 150
    cut = _train(_cfg(corpus_file), tmp_path / "b", final_sample_length=0)
    assert cut.step == 150 and C.load(tmp_path / "b" / "checkpoint.npz").meta["config"]["schedule_steps"] == n
    lines = []
    rest = _train(TrainConfig(minutes=100.0), tmp_path / "b", lines, resume=True, explicit={"minutes"},
                  final_sample_length=0)
    assert rest.step == n and not any(s.startswith("schedule fixed") for s in lines)
    assert any(f"the {n} steps the time budget fixed for the schedule" in s for s in lines)
    assert cut.losses + rest.losses == straight.losses  # exactly, step for step
    lr = lambda out: [(r["step"], r["lr"]) for r in _metrics(out) if "lr" in r]
    assert lr(tmp_path / "b") == lr(tmp_path / "a")


def test_the_minutes_cap_still_stops_a_run_whose_steps_slow_down(tmp_path, corpus_file, monkeypatch):
    clock = FakeClock(monkeypatch, slow_after=150, slow=0.05)
    res = _train(_cfg(corpus_file), tmp_path / "a")
    n = C.load(tmp_path / "a" / "checkpoint.npz").meta["config"]["schedule_steps"]
    assert res.step < n and res.val_loss is not None
    # it stops where what is left of the budget is what the end of the run was priced at: the whole
    # run, final evaluation and sample included, ends at most one (slow) step after the budget
    assert BUDGET_S - 0.05 < clock.now <= BUDGET_S + 0.05 + 1e-9


def test_with_steps_given_the_schedule_is_over_them(tmp_path, corpus_file, monkeypatch):
    FakeClock(monkeypatch)
    lines = []
    res = _train(_cfg(corpus_file, steps=80), tmp_path / "a", lines)
    assert res.step == 80 and not any(s.startswith("schedule fixed") for s in lines)
    assert C.load(tmp_path / "a" / "checkpoint.npz").meta["config"]["schedule_steps"] is None


def test_a_budget_too_short_for_the_warmup_says_so(tmp_path, corpus_file, monkeypatch):
    FakeClock(monkeypatch)
    lines = []
    res = _train(_cfg(corpus_file, warmup=400), tmp_path / "a", lines)
    assert any(s.startswith("note: 0.05 minutes fit only") and "--warmup 400" in s for s in lines)
    assert res.step < 401 and C.load(tmp_path / "a" / "checkpoint.npz").meta["config"]["schedule_steps"] == 401


def test_a_schedule_needs_steps_or_minutes(tmp_path, corpus_file):
    with pytest.raises(TrainError, match=r"schedule 'cosine' needs a number of steps \(--steps\) or a time "
                                         r"budget \(--minutes\)"):
        TrainConfig(data=str(corpus_file), schedule="cosine").validate()
    with pytest.raises(TrainError, match="schedule_steps must be a positive integer, got 0"):
        TrainConfig(data=str(corpus_file), schedule="cosine", minutes=1.0, schedule_steps=0).validate()


def test_cli_minutes_with_a_schedule_and_no_steps(tmp_path, corpus_file, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(corpus_file), "--hidden", "8", "--batch", "4", "--seq-len", "16",
                 "--minutes", "0.02", "--schedule", "cosine", "--warmup", "3", "--out", str(out),
                 "--progress", "none"]) == 0
    text = capsys.readouterr().out
    assert "schedule fixed at " in text and " ms/step measured over 100 steps" in text
    assert C.load(out / "checkpoint.npz").meta["config"]["schedule_steps"] > 120


# ----------------------------------------------------------------------------- the periodic estimate
@settings(max_examples=60, deadline=None)
@given(n=st.integers(100, 200_000), frac=st.floats(0.001, 1.2), rows=st.integers(1, 40))
def test_spread_windows_cover_the_text_evenly(n, frac, rows):
    chars = max(1, int(n * frac))
    got = T.spread_windows(n, chars, rows, context=64)
    if got is None:  # they would leave nothing out: the whole text is scored instead
        assert min(rows, chars) * -(-chars // min(rows, chars)) >= n - 65
        return
    starts, length = got
    assert got == T.spread_windows(n, chars, rows, context=64)  # deterministic
    assert len(starts) * length >= chars and length == -(-chars // len(starts))
    assert starts[0] == 64  # from just after the first context...
    assert len(starts) == 1 or starts[-1] + length == n - 1  # ...to the last character
    gaps = np.diff(starts)
    assert (gaps >= length).all()  # the scored parts do not overlap
    assert len(starts) < 2 or gaps.max() - gaps.min() <= 1  # evenly spaced


def test_window_scores_match_scoring_each_window_alone():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 5, 3000)
    tg.manual_seed(0)
    model = CharLM(5, cell="gru", hidden=8, layers=2, dtype="float64")
    starts, length = T.spread_windows(len(ids), 500, rows=6, context=64)
    loss, n = T.evaluate_windows(model, ids, starts, length, context=64, seq_len=32)
    want = []
    model.eval()
    with tg.no_grad():
        for s in starts:  # the context then the window, in one pass; only the window's predictions count
            logits, _ = model(ids[s - 64:s + length].reshape(-1, 1))
            lp = log_softmax_rows(logits.numpy()[:, 0])
            want += [-lp[64 + t, ids[s + 1 + t]] for t in range(length)]
    assert n == len(want) == 6 * length
    np.testing.assert_allclose(loss, np.mean(want), rtol=1e-10)


def test_periodic_evaluations_say_they_are_estimates(tmp_path, corpus_file):
    lines = []
    cfg = _cfg(corpus_file, minutes=None, schedule="constant", steps=40, eval_every=20, eval_chars=200)
    _train(cfg, tmp_path / "a", lines, final_sample_length=0)
    evals = [r for r in _metrics(tmp_path / "a") if r.get("val_loss") is not None and not r.get("final")]
    assert [r["step"] for r in evals] == [20]  # the one at the last step gives way to the final evaluation
    assert evals[0]["val_estimate"] is True and evals[0]["val_chars"] == 224  # 32 windows of 7
    assert any(s.startswith("step 20: ") and "| val~ " in s and "(est., 224 chars)" in s for s in lines)
    final = _metrics(tmp_path / "a")[-1]
    assert final["final"] and "val_estimate" not in final
    assert any(s.startswith("final (step 40") and "over " in s for s in lines)
    run = T.Run.start(cfg, str(tmp_path / "b"))  # the same windows at every evaluation
    assert run.estimate_val() == run.estimate_val()
    whole = T.Run.start(_cfg(corpus_file, steps=4, warmup=0, eval_chars=None), str(tmp_path / "c"))
    vl, n, est = whole.estimate_val()
    assert not est and n > 0 and (vl, n) == whole.evaluate()


def test_a_budget_run_on_a_cuda_device_fixes_its_steps(tmp_path, corpus_file, monkeypatch):
    # CuPy stood in for: the lazy steps' losses are read (flush) before and after the timed steps
    import cuda_fake
    cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    FakeClock(monkeypatch)
    lines = []
    res = _train(_cfg(corpus_file, device="cuda", minutes=1.5 / 60), tmp_path / "a", lines)
    n = C.load(tmp_path / "a" / "checkpoint.npz").meta["config"]["schedule_steps"]
    assert res.step == n and len(res.losses) == n
    assert any(s.startswith(f"schedule fixed at {n} steps from 10.0 ms/step") for s in lines)
