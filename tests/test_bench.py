"""The benchmarks run (tiny sizes, nothing timed is asserted): their instrumentation leaves
NumPy and the kernels as it found them, and their JSON lines parse."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rnn_step_phases_split_a_step_and_restore_what_they_wrap():
    from tinygrad_rnn.kernels import cpu
    rs = _load("rnn_step")
    args = rs.parse_args(["--no-torch", "--seq", "8"])
    step, _ = rs.ours(args, "gru", 16, 4, 2, "sequence")
    matmul, call, loop = np.matmul, cpu.HostKernel.__call__, cpu.HostFunction.__call__
    ph = rs.phases(step, 2)
    assert np.matmul is matmul and cpu.HostKernel.__call__ is call
    assert cpu.HostFunction.__call__ is loop
    # per step: the head (32 x 16 x 65) and layer 2's input projection (32 x 16 x 48) forward,
    # at least; every figure a share of the step
    assert ph["gemm_gflop"] * 1e9 >= 0.99 * 2 * 32 * 16 * (65 + 48)
    for part in ("gemm_ms", "kernels_ms", "loops_ms"):
        assert 0 <= ph[part] <= ph["step_ms"]
    assert ph["rest_ms"] == pytest.approx(ph["step_ms"] - ph["gemm_ms"] - ph["kernels_ms"] - ph["loops_ms"], abs=0.02)


def test_rnn_step_prints_json_lines_and_a_table():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "rnn_step.py"), "--cell", "rnn", "--hidden", "8",
                        "--batch", "2", "--seq", "4", "--steps", "1", "--rounds", "1", "--warmup", "0", "--no-torch",
                        "--phases"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    kinds = [rec["bench"] for rec in records]
    assert kinds == ["rnn_step_env", "rnn_step_phases", "rnn_step"]
    assert records[2]["ms_per_step"] > 0 and "torch/" not in r.stdout


def test_rnn_step_lengths_uniform_times_packed_beside_padded():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "rnn_step.py"), "--cell", "lstm", "gru",
                        "--hidden", "8", "--batch", "3", "--seq", "5", "--steps", "1", "--rounds", "1", "--warmup",
                        "0", "--no-torch", "--lengths", "uniform"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{"bench": "rnn_step"')]
    assert [(rec["cell"], rec["packed"]) for rec in records] == [("lstm", True), ("lstm", False),
                                                                  ("gru", True), ("gru", False)]
    assert all(rec["lengths"] == "uniform" and 3 <= rec["real_tokens"] <= 15 for rec in records)
    assert records[0]["packed_over_padded_paired"] > 0 and 0 < records[0]["mean_length_over_seq"] <= 1
    assert "sequence/packed/padded" in r.stdout and "mean len/T" in r.stdout


def test_charlm_minutes_runs_or_says_why_not(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("to be or not to be, that is the question.\n" * 60)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "charlm_minutes.py"), "--data", str(text),
                        "--minutes", "0.01", "--hidden", "8", "--layers", "1", "--batch", "2", "--seq-len", "8"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    if importlib.util.find_spec("torch") is None:
        assert "PyTorch is not importable" in r.stdout
        return
    rec = [json.loads(line) for line in r.stdout.splitlines() if line.startswith('{"bench": "charlm_minutes"')][0]
    assert rec["steps"] >= 1 and 0 < rec["val_nats_per_char"] < 10
