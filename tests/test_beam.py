"""Beam search in CharLM.generate / beam_search and `sample --beam`, held to exhaustive search
on models small enough to score every continuation."""
import itertools

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn.cli import main
from tinygrad_rnn.lm import CharLM, TrainConfig, train
from tinygrad_rnn.lm.sample import BeamSearch, length_penalty, log_softmax_rows
from tinygrad_rnn.text import CharVocab


def _model(cell, V, seed):
    tg.manual_seed(seed)
    m = CharLM(V, cell=cell, hidden=6, layers=2, dtype="float64")
    for p in m.parameters():  # larger weights than the default init: peaked, unequal next-char laws
        p.data[...] = p.data * 4
    return m


def _logp(model, prompt, seq):
    """log P(seq | prompt), from one forward pass over the whole sequence."""
    ids = np.array(list(prompt) + list(seq[:-1]), dtype=np.int64).reshape(-1, 1)
    model.eval()
    with tg.no_grad():
        logits, _ = model(ids)
    lp = log_softmax_rows(logits.numpy()[:, 0])
    return sum(lp[len(prompt) - 1 + t, c] for t, c in enumerate(seq))


def _exhaustive(model, prompt, V, L, stop=None, alpha=0.0):
    """Every continuation of up to L ids (ending at `stop` or at L), by normalised score."""
    found = []
    for n in range(1, L + 1):
        for seq in itertools.product(range(V), repeat=n):
            if stop is not None and stop in seq[:-1]:
                continue
            if n < L and seq[-1] != stop:
                continue
            lp = _logp(model, prompt, seq)
            found.append((lp / length_penalty(n, alpha), lp, list(seq)))
    return sorted(found, key=lambda e: -e[0])


@pytest.mark.parametrize("cell, V, L, seed", [("lstm", 3, 4, 0), ("gru", 4, 3, 1), ("rnn", 3, 3, 2),
                                              ("gru", 3, 4, 3)])
def test_a_beam_as_wide_as_every_continuation_finds_the_exhaustive_best(cell, V, L, seed):
    model = _model(cell, V, seed)
    prompt = [1, 0]
    best = _exhaustive(model, prompt, V, L)
    found = model.beam_search(prompt, L, V ** L)
    assert len(found) == V ** L
    assert found[0][2] == best[0][2]
    np.testing.assert_allclose(found[0][1], best[0][1], rtol=1e-12)
    # every kept hypothesis carries its own state: all V**L scores are right, not only the best
    np.testing.assert_allclose([f[1] for f in found], [b[1] for b in best], rtol=1e-12)
    assert model.generate(prompt, L, beam=V ** L) == best[0][2]


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
def test_with_a_stop_id_length_normalisation_ranks_as_exhaustive_search(alpha):
    V, L, stop = 3, 4, 2
    model = _model("gru", V, 4)
    best = _exhaustive(model, [0], V, L, stop=stop, alpha=alpha)
    found = model.beam_search([0], L, V ** L, length_norm=alpha, stop=stop)
    assert found[0][2] == best[0][2]
    np.testing.assert_allclose(found[0][0], best[0][0], rtol=1e-12)


def test_length_normalisation_changes_the_winner_when_hypotheses_end_early():
    # one of these models' best ended hypotheses is short under the plain sum and long under alpha=1
    V, L, stop = 3, 4, 2
    winners = {}
    for seed in range(20):
        model = _model("gru", V, seed)
        a = model.generate([0], L, beam=V ** L, stop=stop)
        b = model.generate([0], L, beam=V ** L, stop=stop, length_norm=2.0)
        if len(a) < len(b):
            winners[seed] = (a, b)
    assert winners, "alpha never favoured a longer continuation in 20 models"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_beam_of_one_is_greedy_and_wider_beams_do_no_worse(cell):
    model = _model(cell, 4, 5)
    greedy = model.generate([3, 1], 6, temperature=0)
    assert model.generate([3, 1], 6, beam=1) == greedy
    scores = [model.beam_search([3, 1], 6, k)[0][1] for k in (1, 2, 4, 16)]
    np.testing.assert_allclose(scores[0], _logp(model, [3, 1], greedy), rtol=1e-12)
    assert all(b >= a - 1e-12 for a, b in zip(scores, scores[1:]))


def test_beam_text_prompt_stop_character_and_stream():
    vocab = CharVocab.from_text("ab\n")
    tg.manual_seed(0)
    model = CharLM(vocab, cell="gru", hidden=8, layers=1)
    seen = []
    text = model.generate("a", 5, beam=3, stop="\n", stream=seen.append)
    assert "".join(seen) == text and 1 <= len(text) <= 5 and "\n" not in text[:-1]
    assert model.generate("a", 0, beam=3) == ""


def test_beam_refuses_sampling_options_and_bad_widths():
    model = _model("gru", 3, 0)
    for kw in ({"temperature": 0.8}, {"top_k": 2}, {"top_p": 0.9}):
        with pytest.raises(ValueError, match=r"generate: beam search \(beam=2\) ranks .*for sampling"):
            model.generate([0], 3, beam=2, **kw)
    with pytest.raises(ValueError, match="beam width must be a positive integer, got 0"):
        model.generate([0], 3, beam=0)
    with pytest.raises(ValueError, match="alpha must be a non-negative number, got -1"):
        model.generate([0], 3, beam=2, length_norm=-1)
    vocab = CharVocab.from_text("ab")
    with pytest.raises(ValueError, match="stop must be one character, got 'ab'"):
        CharLM(vocab, hidden=4, layers=1).generate("a", 3, beam=2, stop="ab")


def test_beam_search_keeps_the_width_best_and_ends_hypotheses_at_stop():
    s = BeamSearch(2, stop=1)
    parents, ids = s.step(np.log([[0.5, 0.3, 0.2]]))  # id 1 (stop) ends; 0 and 2 live on
    assert parents.tolist() == [0, 0] and ids.tolist() == [0, 2]
    assert [e[2] for e in s.ended] == [[1]]
    parents, ids = s.step(np.log([[0.1, 0.1, 0.8], [0.9, 0.05, 0.05]]))
    assert parents.tolist() == [0, 1] and ids.tolist() == [2, 0]  # 0.5*0.8=0.4, 0.2*0.9=0.18
    assert [e[2] for e in s.results()][:2] == [[0, 2], [1]]


@pytest.fixture
def run_dir(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("the cat sat on the mat. " * 30, encoding="utf-8")
    cfg = TrainConfig(data=str(p), hidden=16, seq_len=16, batch=4, steps=20, eval_every=1000)
    train(cfg, str(tmp_path / "run"), progress="none", echo=lambda *a, **k: None, final_sample_length=0)
    return str(tmp_path / "run")


def test_sample_command_beam(run_dir, capsys):
    assert main(["sample", run_dir, "--prompt", "the ", "--length", "12", "--beam", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the ") and len(out) == len("the ") + 12 + 1
    assert main(["sample", run_dir, "--prompt", "the ", "--length", "12", "--beam", "4", "--stop", ".",
                 "--length-norm", "0.6"]) == 0
    out = capsys.readouterr().out
    assert "." not in out[4:-2]


def test_sample_command_refuses_beam_with_sampling_options(run_dir, capsys):
    for extra in (["--temperature", "0.5"], ["--top-k", "3"], ["--top-p", "0.5"], ["--seed", "1"]):
        assert main(["sample", run_dir, "--beam", "2", *extra]) == 2
        err = capsys.readouterr().err
        assert f"sample: --beam searches for the likeliest continuation; {extra[0]} is for sampling" in err
    assert main(["sample", run_dir, "--length-norm", "0.6"]) == 2
    assert "sample: --length-norm and --stop go with --beam" in capsys.readouterr().err


def test_beam_search_on_a_cuda_device_matches_the_cpu(monkeypatch):
    # CuPy stood in for (tests/cuda_fake.py): the state's rows are reordered on the device
    import cuda_fake
    cpu = _model("lstm", 4, 6)
    state = {k: v.copy() for k, v in cpu.state_dict().items()}
    cuda_fake.install(monkeypatch, gpus=1)
    cuda_fake.cuda("cuda:0")
    gpu = CharLM(4, cell="lstm", hidden=6, layers=2, dtype="float64", device="cuda")
    gpu.load_state_dict(state)
    want = cpu.beam_search([1, 2], 5, 6)
    got = gpu.beam_search([1, 2], 5, 6)
    assert [g[2] for g in got] == [w[2] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=1e-12)
