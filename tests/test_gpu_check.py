"""bench/gpu_check.sh, the GPU acceptance check, as far as a machine without a GPU can see
it: it says there is none and exits 0; its stage runner records failures, timeouts and
skipped cuda tests in the report; its stage commands still parse. Nothing timed is asserted."""
import importlib.util
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "bench", "gpu_check.sh")


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(ROOT, "bench", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


check = _load("gpu_check")


def _script(tmp_path, nvidia_smi, *args):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_CHECK_INSTALL")}
    env.update(GPU_REPORT=str(tmp_path / "report.txt"), GPU_CHECK_NVIDIA_SMI=nvidia_smi)
    return subprocess.run(["bash", SCRIPT, *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_without_nvidia_smi_it_says_no_gpu_and_exits_0(tmp_path):
    r = _script(tmp_path, str(tmp_path / "no-such-nvidia-smi"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == ("gpu_check: no GPU: nvidia-smi is not on PATH, "
                                        "so there is no NVIDIA GPU to check here")
    report = (tmp_path / "report.txt").read_text()
    assert "no GPU: nvidia-smi is not on PATH" in report and "== stage" not in report


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed here")
def test_with_a_gpu_but_no_cupy_it_says_how_to_install(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'GPU 0: Fake'\n")
    fake.chmod(0o755)
    r = _script(tmp_path, str(fake), "mine.txt")  # the argument names the report, relative to the cwd
    assert r.returncode == 0, r.stderr
    assert "CuPy is not installed" in r.stdout and 'pip install -e ".[cuda]"' in r.stdout
    assert 'pip install -e ".[cuda]"' in (tmp_path / "mine.txt").read_text()
    assert not (tmp_path / "report.txt").exists()


def test_the_report_path(monkeypatch):
    monkeypatch.delenv("GPU_REPORT", raising=False)
    monkeypatch.delenv("OUT", raising=False)
    assert check.report_path([]) == "gpu_report.txt"
    monkeypatch.setenv("OUT", "/lent/out")
    assert check.report_path([]) == os.path.join("/lent/out", "gpu_report.txt")
    monkeypatch.setenv("GPU_REPORT", "/x/r.txt")
    assert check.report_path([]) == "/x/r.txt"
    assert check.report_path(["given.txt"]) == "given.txt"


def _py(code):
    return [sys.executable, "-c", code]


def test_every_stage_runs_and_each_failure_is_recorded(tmp_path, capsys):
    stages = [
        check.Stage("fine", _py("print('all good')"), 30),
        check.Stage("broken", _py("import sys; print('boom'); sys.exit(3)"), 30),
        # the timeout ends the stage's whole process group, so the backgrounded sleep does
        # not hold its output open (this test would hang for 60 s if it did)
        check.Stage("stuck", ["bash", "-c", "echo started; sleep 60 & wait"], 1),
        check.Stage("skips", _py("print('SKIPPED [3] tests/x.py:1: cuda: no GPU')"), 30,
                 reject=r"^SKIPPED .*: cuda: ", why_rejected="cuda tests were skipped"),
        check.Stage("missing", [str(tmp_path / "no-such-program")], 30),
        check.Stage("after", _py("print('still ran')"), 30),
    ]
    path = tmp_path / "sub" / "report.txt"
    results = check.run_stages(stages, str(path), "header")
    assert [r.rc for r in results] == [0, 3, 124, 0, 127, 0]
    assert [r.failed for r in results] == [False, True, True, True, True, False]
    assert "boom" in results[1].tail and "started" in results[2].tail
    assert "all good" in capsys.readouterr().out  # streamed as it runs
    report = path.read_text()
    for i, s in enumerate(stages, 1):
        assert f"== stage {i}: {s.name}: " in report
        assert f"command: {check.shlex.join(s.cmd)}" in report
    assert "== stage 2: broken: FAILED (exit status 3)" in report
    assert "== stage 3: stuck: FAILED (timed out after 1 s)" in report
    assert "== stage 4: skips: FAILED (cuda tests were skipped)" in report
    assert "exit status: 3; elapsed: " in report and "still ran" in report
    summary = report.split("== summary\n")[1]
    assert summary.splitlines()[0].split()[:2] == ["fine", "passed"]
    assert summary.rstrip().endswith("4 of 6 stages failed: broken, stuck, skips, missing")


@pytest.mark.parametrize("fail", [False, True])
def test_main_exits_1_when_a_stage_failed(tmp_path, monkeypatch, capsys, fail):
    monkeypatch.setattr(check, "find_gpu", lambda: (True, ""))
    monkeypatch.setattr(check, "stages", lambda py, run_dir: [
        check.Stage("one", _py("pass"), 30), check.Stage("two", _py(f"raise SystemExit({int(fail)})"), 30)])
    path = tmp_path / "r.txt"
    assert check.main([str(path)]) == int(fail)
    out = capsys.readouterr().out
    assert ("FAILED: two" if fail else "all stages passed") in out
    assert path.read_text().rstrip().endswith("1 of 2 stages failed: two" if fail else "all 2 stages passed")


def test_the_real_stages_parse_and_fit_in_8_minutes():
    from tinygrad_rnn.cli import build_parser
    stages = {s.name: s for s in check.stages(sys.executable, "/tmp/run")}
    assert list(stages) == ["environment", "cuda tests", "resume", "mpiexec -n 2", "bench cuda", "bench cpu", "counts",
                            "char-LM train", "sample"]
    assert sum(s.timeout for s in stages.values()) < 8 * 60
    for name, device in (("bench cuda", "cuda"), ("bench cpu", "cpu")):
        bench = stages[name].cmd
        args = _load("rnn_step").parse_args(bench[bench.index("bench/rnn_step.py") + 1:])
        assert (args.device, args.hidden, args.batch, args.seq, args.cell) == (device, [128, 512], [32, 256], 64,
                                                                               ["lstm"])
    for name in ("char-LM train", "sample"):
        cmd = stages[name].cmd
        args = build_parser().parse_args(cmd[cmd.index("tinygrad_rnn") + 1:])
        assert args.device == "cuda"
    assert build_parser().parse_args(stages["char-LM train"].cmd[3:]).minutes == 0.5
    # the script's own modes: each stage that runs gpu_check.py names one that main() handles
    for name, mode in (("environment", "--env"), ("resume", "--resume-check"), ("mpiexec -n 2", "--mpi-check"),
                       ("counts", "--counts")):
        cmd = stages[name].cmd
        assert cmd[cmd.index(os.path.abspath(check.__file__)) + 1] == mode
    assert stages["mpiexec -n 2"].cmd[:3] == ["mpiexec", "-n", "2"]


def test_the_counts_stage_runs_without_a_gpu_and_finds_no_reads_within_a_step():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"), "--counts"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    steps = [ln for ln in lines if ln.startswith("step ")]
    assert len(steps) == 6 and all(ln.endswith(", 0 device values read back") for ln in steps)
    assert lines[-1] == "metrics line: 1 read(s) back for the 6 steps' losses and norms"


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or shutil.which("mpiexec") is None,
                    reason="the mpi extra (mpi4py and mpich's mpiexec) is not installed")
def test_the_mpi_stage_checks_the_all_reduce_of_two_ranks():
    # on the CPU here (no GPU): the same check the GPU stage runs with each rank on its own GPU
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                                              "PMIX_RANK", "MPI_LOCALNRANKS")}
    r = subprocess.run(["mpiexec", "-n", "2", sys.executable, os.path.join(ROOT, "bench", "gpu_check.py"),
                        "--mpi-check", "cpu"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for rank in (0, 1):
        assert f"rank {rank}/2 (local {rank}) on cpu via the host: OK" in r.stdout


@pytest.mark.slow
def test_the_resume_stage_on_the_cpu(tmp_path):
    # the stage's own check, on the device this machine has: 40 steps with dropout, cut and resumed
    assert check.resume_check(str(tmp_path / "run"), device="cpu") == 0


def test_the_environment_stage_prints_every_part(capsys):
    check.print_env()
    out = capsys.readouterr().out
    for part in ("python:", "nvidia-smi:", "numpy:", "cupy:", "torch:", "tinygrad_rnn: cuda_available()"):
        assert part in out


def test_the_script_is_clean_bash():
    subprocess.run(["bash", "-n", SCRIPT], check=True)
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", SCRIPT], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout
