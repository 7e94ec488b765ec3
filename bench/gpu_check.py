"""GPU acceptance check of the CUDA (CuPy) path, in one command and one report file.

    bash bench/gpu_check.sh [REPORT]      (or: python bench/gpu_check.py [REPORT])

Stages, each a subprocess with its own timeout (they add up to under 8 minutes), its
output streamed to the terminal and its command, exit status, time and output tail
written to the report:

1. environment: nvidia-smi's GPU and driver, CuPy and its CUDA runtime, NumPy, Python,
   PyTorch and whether it has CUDA (and cuDNN);
2. cuda tests: the pytest suite restricted to the cuda device (`-k cuda`: the `device`
   fixture's [cuda] parameter and the tests named for cuda); a cuda test skipped while a
   GPU is present counts as a failure, since then the suite did not really run there;
3. step benchmark: bench/rnn_step.py on cuda at H=512, B=64, T=128, LSTM and GRU, with
   PyTorch's cuDNN layers beside ours when a CUDA PyTorch is importable;
4. char-LM: `python -m tinygrad_rnn train --device cuda --minutes 2` on the default corpus
   (the stdlib's sources), which ends with a sample; then `sample` from its checkpoint on cuda.

A failing stage is recorded and the next one runs; the exit status is 1 when any stage
failed. Without a GPU (no nvidia-smi, CuPy missing, or no device) it prints one line
saying so, writes it to the report, and exits 0. GPU_CHECK_INSTALL=1 installs CuPy
(`pip install -e ".[cuda]"`) first when nvidia-smi is there but CuPy is not.

The report: the REPORT argument, else $GPU_REPORT, else $OUT/gpu_report.txt when OUT is
set (the lending machine's folder whose files come back), else ./gpu_report.txt.
"""

import collections
import importlib
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL = 'pip install -e ".[cuda]"'
TAIL_LINES = 60


@dataclass
class Stage:
    name: str
    cmd: list
    timeout: float  # seconds
    reject: str = ""  # a stage with an output line matching this regex fails even with exit status 0
    why_rejected: str = ""


@dataclass
class Result:
    stage: Stage
    rc: int  # 124 when it timed out, as coreutils' timeout says it
    seconds: float
    tail: str
    note: str = ""  # why it failed, in words

    @property
    def failed(self):
        return bool(self.note)


def nvidia_smi():
    # an override only so that the tests can stand in a machine without (or with a fake) nvidia-smi
    return os.environ.get("GPU_CHECK_NVIDIA_SMI", "nvidia-smi")


def report_path(argv):
    if argv:
        return argv[0]
    if os.environ.get("GPU_REPORT"):
        return os.environ["GPU_REPORT"]
    if os.environ.get("OUT"):
        return os.path.join(os.environ["OUT"], "gpu_report.txt")
    return "gpu_report.txt"


def find_gpu():
    """(True, "") when there is a GPU to check, else (False, one line saying why not)."""
    if shutil.which(nvidia_smi()) is None:
        return False, "no GPU: nvidia-smi is not on PATH, so there is no NVIDIA GPU to check here"
    try:
        import cupy
    except Exception as e:  # ImportError, or a CuPy that cannot find its CUDA libraries
        return False, (f"no GPU check: nvidia-smi is here but CuPy is not installed ({e}); "
                       f"install it with {INSTALL}, or rerun with GPU_CHECK_INSTALL=1")
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # a missing or broken driver raises here
        return False, f"no GPU: CuPy sees no usable CUDA device ({type(e).__name__}: {e})"
    if n == 0:
        return False, "no GPU: CuPy sees no CUDA device (getDeviceCount() == 0)"
    return True, ""


def run_stage(stage: Stage) -> Result:
    """Run one stage in its own process group (so a timeout also ends what it started),
    streaming its output and keeping its tail."""
    print(f"\n== {stage.name}: {shlex.join(stage.cmd)}", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    try:
        p = subprocess.Popen(stage.cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, errors="replace", start_new_session=True)
    except OSError as e:
        return Result(stage, 127, time.perf_counter() - t0, "", f"could not start: {e}")
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    timer = threading.Timer(stage.timeout, kill)
    timer.start()
    tail = collections.deque(maxlen=TAIL_LINES)
    rejected = False
    try:
        for line in p.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line)
            rejected = rejected or bool(stage.reject and re.search(stage.reject, line))
        rc = p.wait()
    finally:
        timer.cancel()
    seconds = time.perf_counter() - t0
    note = ""
    if timed_out.is_set():
        rc, note = 124, f"timed out after {stage.timeout:g} s"
    elif rc != 0:
        note = f"exit status {rc}"
    elif rejected:
        note = stage.why_rejected or f"its output matches {stage.reject!r}"
    return Result(stage, rc, seconds, "".join(tail), note)


def format_report(header, results, skipped_line=""):
    out = [header, ""]
    if skipped_line:
        out += [skipped_line, ""]
    for i, r in enumerate(results, 1):
        status = f"FAILED ({r.note})" if r.failed else "passed"
        out += [f"== stage {i}: {r.stage.name}: {status}",
                f"command: {shlex.join(r.stage.cmd)}",
                f"exit status: {r.rc}; elapsed: {r.seconds:.1f} s (timeout {r.stage.timeout:g} s)",
                f"output (last {TAIL_LINES} lines):", r.tail.rstrip("\n"), ""]
    if results:
        out.append("== summary")
        for r in results:
            out.append(f"{r.stage.name:<16} {'FAILED' if r.failed else 'passed':<7} {r.seconds:7.1f} s"
                       + (f"  {r.note}" if r.failed else ""))
        failed = [r.stage.name for r in results if r.failed]
        out.append(f"{len(failed)} of {len(results)} stages failed: {', '.join(failed)}" if failed
                   else f"all {len(results)} stages passed")
    return "\n".join(out) + "\n"


def write_report(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def run_stages(stages, path, header, results=()):
    """Run every stage (a failure does not stop the next), rewriting the report after each,
    so that a run cut short still leaves what it did. Returns all results, `results` first."""
    results = list(results)
    for stage in stages:
        results.append(run_stage(stage))
        write_report(path, format_report(header, results))
    return results


def stages(py, run_dir):
    # each timeout leaves room for a fresh machine's first CuPy kernel compilations; together 450 s
    return [
        Stage("environment", [py, os.path.abspath(__file__), "--env"], 30),
        Stage("cuda tests", [py, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", "-rsfE", "tests"],
              150, reject=r"^SKIPPED .*: cuda: ", why_rejected="cuda tests were skipped although a GPU is here"),
        Stage("step benchmark", ["env", "-u", "OPENBLAS_CORETYPE", "-u", "OPENBLAS_L2_SIZE", py, "bench/rnn_step.py",
                                 "--device", "cuda", "--hidden", "512", "--batch", "64", "--seq", "128",
                                 "--cell", "lstm", "gru"], 75),
        # a model sized for a GPU rather than the CPU default (1x128, batch 32)
        Stage("char-LM train", [py, "-m", "tinygrad_rnn", "train", "--device", "cuda", "--minutes", "2",
                                "--hidden", "512", "--layers", "2", "--embed-dim", "64", "--batch", "64",
                                "--seq-len", "128", "--lr", "2e-3", "--eval-every", "500",
                                "--progress", "lines", "--out", run_dir, "--overwrite"], 165),
        Stage("sample", [py, "-m", "tinygrad_rnn", "sample", run_dir, "--device", "cuda", "--prompt", "def ",
                         "--length", "300", "--seed", "0"], 30),
    ]


def print_env():
    """Stage 1: what ran. Every part guarded, so one broken library does not hide the rest."""
    print(f"python: {sys.version.split()[0]} ({sys.executable}) on {platform.platform()}")
    try:
        q = subprocess.run([nvidia_smi(), "--query-gpu=index,name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        print("nvidia-smi:", q.stdout.strip() or q.stderr.strip())
    except (OSError, subprocess.TimeoutExpired) as e:
        print(f"nvidia-smi: {e}")
    for part in (_numpy, _cupy, _torch, _ours):
        try:
            part()
        except Exception as e:
            print(f"{part.__name__[1:]}: {type(e).__name__}: {e}")


def _numpy():
    import numpy
    print(f"numpy: {numpy.__version__}")


def _cupy():
    import cupy
    rt = cupy.cuda.runtime

    def v(n):
        return f"{n // 1000}.{n % 1000 // 10}"

    print(f"cupy: {cupy.__version__}; CUDA runtime {v(rt.runtimeGetVersion())}, "
          f"driver supports {v(rt.driverGetVersion())}; "
          f"{rt.getDeviceCount()} device(s), 0: {rt.getDeviceProperties(0)['name'].decode()}")


def _torch():
    try:
        import torch
    except ImportError:
        print("torch: not importable (the benchmark runs without its comparison)")
        return
    cuda = torch.cuda.is_available()
    print(f"torch: {torch.__version__}; CUDA " + (f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                                                  f"{torch.cuda.get_device_name(0)}" if cuda else "not available"))


def _ours():
    if ROOT not in sys.path:  # the checkout's package, installed or not
        sys.path.insert(0, ROOT)
    import tinygrad_rnn as tg
    ok, why = tg.cuda_available()
    print(f"tinygrad_rnn: cuda_available() = {ok}{'' if ok else ': ' + why}")


def commit():
    try:
        r = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True,
                           timeout=10)
        return f"commit {r.stdout.strip()}" if r.returncode == 0 else "commit unknown (no git repository)"
    except (OSError, subprocess.TimeoutExpired):
        return "commit unknown (no git)"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--env"]:
        print_env()
        return 0
    path = report_path(argv)
    header = f"tinygrad_rnn GPU check, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {platform.node()}, {commit()}"
    install = []
    ok, why = find_gpu()
    if not ok and os.environ.get("GPU_CHECK_INSTALL") == "1" and shutil.which(nvidia_smi()):
        install = [run_stage(Stage("install CuPy", [sys.executable, "-m", "pip", "install", "-e", ".[cuda]"], 600))]
        importlib.invalidate_caches()  # so that the import sees the new package
        ok, why = find_gpu()
    if not ok:
        print(f"gpu_check: {why}")
        write_report(path, format_report(header, install, skipped_line=why))
        print(f"gpu_check: report in {path}")
        return 0
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        results = run_stages(stages(sys.executable, os.path.join(tmp, "charlm")), path, header, install)
    failed = [r.stage.name for r in results if r.failed]
    print(f"\ngpu_check: {'FAILED: ' + ', '.join(failed) if failed else 'all stages passed'}; report in {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
