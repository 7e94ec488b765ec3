"""Every example's --quick run, asserting the result it states.

Each example's main(argv) returns its numbers (and asserts its own claim too); these
tests restate the claims so a regression names the number that moved. Runs that take
more than ~10 s on a laptop CPU are marked slow (python -m pytest -m slow).
"""
import importlib.util
import os

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run_example(name, *args):
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--quick", *args])


def test_hand_wired_rnns_right_on_every_string_up_to_length_10():
    res = run_example("hand_wired_rnns")
    assert res["sum"] and res["compare"] and res["parity"] and res["mod3"]


def test_vanishing_gradients(tmp_path):
    res = run_example("vanishing_gradients", "--out", str(tmp_path / "vg.png"))
    assert res["fd_err"] < 1e-6  # backward agrees with central differences
    assert res["linear_1_1"] == pytest.approx(1.1 ** 50) and round(res["linear_1_1"], 2) == 117.39
    assert res["linear_0_9"] == pytest.approx(0.9 ** 50) and round(res["linear_0_9"], 5) == 0.00515
    assert 0.9 <= abs(res["w_max"]) <= 1.1
    assert res["lstm_decay"] > 10 * res["rnn_decay"]


def test_bptt_hooks_trace(tmp_path):
    res = run_example("bptt_hooks", "--out", str(tmp_path / "trace.png"))
    assert len(res["rnn"]) == len(res["lstm"]) == 30
    assert res["rnn_decay"] < 1e-3 and res["lstm_decay"] > 100 * res["rnn_decay"]


def test_newton_beats_gradient_descent_with_the_engines_hessian():
    res = run_example("newton")
    assert res["hessian_err"] < 1e-9
    assert res["newton"] < 50 and res["gd_capped"]  # gradient descent still short after 20,000 steps


def test_hessian_eigenvalue_by_power_iteration_matches_the_full_hessian():
    res = run_example("hessian_eigenvalue")
    assert res["lambda"] > 0
    assert abs(abs(res["lambda"]) - res["exact"]) <= 1e-3 * res["exact"]


def test_gradient_penalty_through_an_lstm_shrinks_the_input_gradient():
    res = run_example("gradient_penalty")
    assert res["penalty"]["input_grad_norm"] < 0.5 * res["plain"]["input_grad_norm"]
    assert res["penalty"]["accuracy"] >= 0.8 and res["plain"]["accuracy"] >= 0.85


def test_data_parallel_example_in_a_world_of_one():
    res = run_example("data_parallel")
    assert res["world_size"] == 1 and res["loss"] < 2.6


def test_many_to_one_parity():
    res = run_example("many_to_one")
    assert res["lstm"]["all_trained_strings_right"] and res["gru"]["all_trained_strings_right"]
    assert res["lstm"]["mixed"] == res["gru"]["mixed"] == 1.0  # one packed batch of lengths 1..10


def test_one_to_many_spells_every_word():
    res = run_example("one_to_many")
    assert res["right"] == res["total"] == 20


def test_bidirectional_tagger_needs_both_sides():
    res = run_example("bidirectional_tagger")
    assert res["bidirectional"] >= 0.99
    assert res["unidirectional"] <= res["one_way_ceiling"] + 0.02


def test_teacher_forcing_gap():
    res = run_example("teacher_forcing")
    assert res["teacher_forced_mse"] < 0.01 * res["target_variance"]
    assert res["free_running_mse"] > 5 * res["teacher_forced_mse"]


@pytest.mark.slow
def test_seq2seq_exact_match():
    res = run_example("seq2seq")
    assert res["fwd_attn"] >= 0.95
    assert res["fwd_attn"] > res["fwd_noattn"] and res["rev_attn"] > res["rev_noattn"]


def test_word_lm_perplexity_and_neighbours():
    res = run_example("word_lm")
    assert res["val_perplexity"] < 0.5 * res["unigram_perplexity"]
    assert res["neighbour_share"] >= 0.75


@pytest.mark.slow
def test_min_rnns():
    res = run_example("min_rnns")
    assert res["max_mode_difference"] < 1e-10
    assert res["mingru_bpc"] < res["unigram_bpc"] and res["minlstm_bpc"] < res["unigram_bpc"]
    assert np.isfinite(res["cli_mingru_bpc"]) and res["cli_mingru_bpc"] < res["unigram_bpc"]


def test_gradient_clipping(tmp_path):
    res = run_example("gradient_clipping", "--out", str(tmp_path / "clip.png"))
    assert res["raw_max_grad_norm"] > 1000
    assert res["clip_max_grad_norm"] < res["raw_max_grad_norm"]
    assert res["clip_final_mse"] < 0.7 * res["baseline_mse"] < res["raw_final_mse"]
