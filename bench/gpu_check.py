"""GPU acceptance check of the CUDA (CuPy) path, in one command and one report file.

    bash bench/gpu_check.sh [REPORT]      (or: python bench/gpu_check.py [REPORT])

Stages, each a subprocess with its own timeout (they add up to under 8 minutes), its
output streamed to the terminal and its command, exit status, time and output tail
written to the report:

1. environment: nvidia-smi's GPUs and driver, CuPy (and whether it is new enough) and its
   CUDA runtime and driver versions, NumPy, Python, PyTorch and whether it has CUDA (cuDNN);
2. cuda tests: the pytest suite restricted to the cuda device (`-k cuda`: the `device`
   fixture's [cuda] parameter and the tests named for cuda); a cuda test skipped while a
   GPU is present counts as a failure, since then the suite did not really run there;
3. resume: a 40-step char-LM with dropout on cuda, and the same cut at step 20 and resumed
   (--resume), whose losses must equal the straight run's; the CUDA checkpoint sampled on
   the CPU, its logits against cuda's, and the CPU copy moved back to cuda and sampled;
4. mpiexec -n 2: two ranks, each on cuda:{local rank} (one GPU: shared, the host-staged
   all-reduce; two or more: NCCL), their all-reduced gradients against the host's mean;
5. step benchmarks: bench/rnn_step.py at H=128 and 512, B=32 and 256, LSTM, on cuda (with
   PyTorch's cuDNN layers beside ours when a CUDA PyTorch is importable) and on the cpu. On
   cuda ours runs with the Python loop over time and without it (`--cuda-loop both`: the
   loop as a replayed CUDA graph, "@graph", against "@python"; python/graph > 1: the graph
   is faster);
6. counts: the kernel launches and device values read back by a CUDA training step, with
   the loop over time as a CUDA graph and as the Python loop, counted on the host through
   the test suite's stand-in CuPy (tests/cuda_fake.py);
7. char-LM: `python -m tinygrad_rnn train --device cuda --minutes 0.5` on the default corpus
   (the stdlib's sources); then `sample` from its checkpoint on cuda.

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
    # each timeout leaves room for a fresh machine's first CuPy kernel compilations; together 455 s
    me = os.path.abspath(__file__)
    bench = ["env", "-u", "OPENBLAS_CORETYPE", "-u", "OPENBLAS_L2_SIZE", py, "bench/rnn_step.py", "--hidden", "128",
             "512", "--batch", "32", "256", "--seq", "64", "--cell", "lstm", "--rounds", "2"]
    return [
        Stage("environment", [py, me, "--env"], 15),
        Stage("cuda tests", [py, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", "-rsfE", "tests"],
              110, reject=r"^SKIPPED .*: cuda: ", why_rejected="cuda tests were skipped although a GPU is here"),
        Stage("resume", [py, me, "--resume-check", run_dir + "_resume"], 70),
        Stage("mpiexec -n 2", ["mpiexec", "-n", "2", py, me, "--mpi-check"], 40),
        Stage("bench cuda", bench + ["--device", "cuda", "--cuda-loop", "both"], 70),
        Stage("bench cpu", bench + ["--device", "cpu", "--no-torch"], 50),
        Stage("counts", [py, me, "--counts"], 15),
        # a model sized for a GPU rather than the CPU default (1x128, batch 32)
        Stage("char-LM train", [py, "-m", "tinygrad_rnn", "train", "--device", "cuda", "--minutes", "0.5",
                                "--hidden", "512", "--layers", "2", "--embed-dim", "64", "--batch", "64",
                                "--seq-len", "128", "--lr", "2e-3", "--eval-every", "500",
                                "--progress", "lines", "--out", run_dir, "--overwrite"], 80),
        Stage("sample", [py, "-m", "tinygrad_rnn", "sample", run_dir, "--device", "cuda", "--prompt", "def ",
                         "--length", "300", "--seed", "0"], 20),
    ]


def _package():
    if ROOT not in sys.path:  # the checkout's package, installed or not
        sys.path.insert(0, ROOT)


def resume_check(run_dir, device="cuda"):
    """Stage 3: a straight 40-step run with dropout against one cut at 20 and resumed; the
    checkpoint on the CPU and back. Returns 0 when the losses are equal and the logits agree."""
    _package()
    import numpy as np
    import tinygrad_rnn as tg
    from tinygrad_rnn.lm import TrainConfig, load_model, train

    def cfg(steps):
        return TrainConfig(hidden=128, layers=2, dropout=0.3, seq_len=64, batch=32, steps=steps, eval_every=20,
                           log_every=10, sample_length=50, device=device, max_chars=400_000)
    quiet = dict(echo=lambda *a: None, progress="none", final_sample_length=0)
    full = train(cfg(40), run_dir + "_a", overwrite=True, **quiet)
    part = train(cfg(20), run_dir + "_b", overwrite=True, **quiet)
    rest = train(cfg(40), run_dir + "_b", resume=True, explicit={"steps"}, **quiet)
    got = part.losses + rest.losses
    diff = max(abs(a - b) for a, b in zip(got, full.losses))
    equal = got == full.losses
    print(f"resume on {device}: 40 steps with dropout 0.3; straight {full.losses[-1]:.6f}, resumed "
          f"{got[-1]:.6f}; {'equal, loss for loss' if equal else f'NOT equal: largest difference {diff:.3g}'}")
    on_dev, _, _ = load_model(run_dir + "_b", device=device)
    on_cpu, _, _ = load_model(run_dir + "_b", device="cpu")
    ids = np.arange(64).reshape(16, 4) % len(on_cpu.vocab)
    with tg.no_grad():
        a, b = on_dev.eval()(ids)[0].numpy(), on_cpu.eval()(ids)[0].numpy()
    close = np.allclose(a, b, rtol=1e-4, atol=1e-4)
    print(f"logits of the {device} checkpoint, {device} against cpu: largest difference {np.abs(a - b).max():.3g}")
    print(f"sampled on cpu: {on_cpu.generate('def ', 80, seed=0)!r}")
    back = on_cpu.to(device)
    print(f"moved back to {device} and sampled: {back.generate('def ', 80, seed=0)!r}")
    return 0 if equal and close else 1


def mpi_check(device="cuda"):
    """Stage 4, in each of two ranks: the rank's own GPU, gradients all-reduced (NCCL or the host),
    checked against the mean of the ranks' own gradients gathered on the host."""
    _package()
    import numpy as np
    import tinygrad_rnn as tg
    from tinygrad_rnn import distributed as dist
    w = dist.init()
    device, note = dist.rank_device(device)
    tg.manual_seed(0)
    model = tg.nn.LSTM(8, 16).to(device)
    tg.manual_seed(1 + w.rank)  # each rank its own data
    out, _ = model(tg.randn(5, 3, 8, device=device))
    out.sum().backward()
    own = [p.grad.numpy().copy() for p in model.parameters()]
    mean = [np.mean(gs, axis=0) for gs in zip(*w.comm.allgather(own))] if w.size > 1 else own
    dist.all_reduce_gradients(model.parameters())
    ok = all(np.allclose(p.grad.numpy(), m, rtol=1e-5, atol=1e-6) for p, m in zip(model.parameters(), mean))
    via = "NCCL" if device.startswith("cuda") and w.nccl.get(int(device.split(":")[1])) else "the host"
    print(f"rank {w.rank}/{w.size} (local {w.local_rank}) on {device} via {via}: "
          f"{'OK' if ok else 'WRONG gradients'}" + (f"; {note}" if note and w.rank == 0 else ""), flush=True)
    return 0 if ok else 1


def counts(steps=6):
    """Stage 6: launches and reads of lazy CUDA training steps, on the stand-in CuPy (no GPU
    needed): per step between metrics lines, with the loop over time as a CUDA graph and as
    the Python loop (two runs alternating), then the graph run's metrics line's read."""
    _package()
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import tempfile as tf
    import cuda_fake
    from tinygrad_rnn.lm import TrainConfig
    from tinygrad_rnn.lm.train import Run

    class Patch:  # what cuda_fake.install asks of pytest's monkeypatch
        def setitem(self, d, k, v):
            d[k] = v

        def setattr(self, o, k, v):
            setattr(o, k, v)
    fake = cuda_fake.install(Patch(), gpus=1)
    dev = cuda_fake.cuda("cuda:0")
    seq = 32
    with tf.TemporaryDirectory() as tmp:
        cfg = TrainConfig(hidden=64, layers=2, dropout=0.2, seq_len=seq, batch=8, steps=steps, clip=1.0, device="cuda",
                          max_chars=50_000, eval_every=1000, log_every=1000)
        runs = {loop: Run.start(cfg, os.path.join(tmp, loop)) for loop in ("graph", "python")}
        for i in range(steps):
            calls, r0 = {}, len(fake.syncs)
            for loop, run in runs.items():
                dev.cuda_loop = loop
                k0 = len(fake.log)
                run.step()
                calls[loop] = sum(what in ("kernel", "matmul", "copy", "graph_launch") for what, _ in fake.log[k0:])
            print(f"step {i + 1}: {calls['graph']} array calls with the loop over time as a CUDA graph, "
                  f"{calls['python']} with the Python loop ({(calls['python'] - calls['graph']) / seq:.1f} more per "
                  f"timestep; kernels in their portable form), {len(fake.syncs) - r0} device values read back")
        dev.cuda_loop = "graph"
        r0 = len(fake.syncs)
        runs["graph"].flush()
        print(f"metrics line: {len(fake.syncs) - r0} read(s) back for the {steps} steps' losses and norms")
    return 0


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

    names = ", ".join(f"{i}: {rt.getDeviceProperties(i)['name'].decode()}" for i in range(rt.getDeviceCount()))
    print(f"cupy: {cupy.__version__}; CUDA runtime {v(rt.runtimeGetVersion())}, "
          f"driver supports {v(rt.driverGetVersion())}; {rt.getDeviceCount()} device(s): {names}")


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
    _package()
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
    if argv[:1] == ["--resume-check"]:
        return resume_check(argv[1])
    if argv[:1] == ["--mpi-check"]:
        return mpi_check(*argv[1:2])
    if argv[:1] == ["--counts"]:
        return counts()
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
