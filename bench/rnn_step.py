"""One training step of a character-level language model, ours against PyTorch's.

The step: embedding -> recurrent layer(s) -> linear -> cross-entropy -> backward -> Adam,
on random tokens (sequence 64, vocabulary 65, embedding size = hidden size, float32 by
default). Each configuration (cell, hidden, batch, layers) is timed for every `--impl`
of our layers ("sequence": one op per layer and direction, the default; "step": one
fused op per timestep; "composed": the cell equations as primitive ops) and, when
PyTorch is importable (never required), for the same model in PyTorch.

Timing, so that the figures are honest on a shared 2-core machine: the libraries run in
alternating blocks (`--rounds` rounds of `--steps` timed steps each), and the first
`--warmup` steps after every switch are dropped, since both libraries keep thread pools
spinning and interleaving step by step slows both. A configuration's figure is the
median of all its timed steps; torch ms / ours ms is the median over rounds of the ratio
within each round (a slow spell of a shared machine that spans a round cancels). Run it as

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/rnn_step.py --preset issue

(those variables, set on some machines for old OpenBLAS builds, halve current NumPy's
GEMM speed). It prints the CPU, NumPy's BLAS (kernel and threads) and PyTorch's threads,
then one JSON object per measurement, then a table of ms per step, tokens per second and
torch ms / ours ms (above 1: we are faster).

    python bench/rnn_step.py --cell lstm --hidden 256 --batch 32 --layers 1
    python bench/rnn_step.py --cell gru lstm --hidden 512 --impl sequence step --no-torch
    python bench/rnn_step.py --device cuda --hidden 512 --batch 64 --seq 128

On CUDA each of our runners runs with the sequence ops' loop over time as a replayed CUDA
graph ("<impl>@graph") and as the Python loop ("<impl>@python"), `--cuda-loop both` (the
default there; or `graph` or `python` alone); python/graph is the paired ratio of the two
(above 1: the graph is faster).

Variable lengths (issue 22): `--lengths uniform` draws each sequence's length in 1..seq
(fixed seed) and times, for every impl, our packed step (pack_padded_sequence, the layer on
the packed batch, the loss on the real tokens: "<impl>/packed") beside our padded step (the
whole padded batch through the layer, the padding's loss ignored: "<impl>/padded"), and
PyTorch's packed step (pack_padded_sequence + nn.LSTM/GRU: "torch/packed") beside its padded
one. tok/s then counts the real tokens; packed/padded is set against mean length / seq:

    python bench/rnn_step.py --lengths uniform --preset packed
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time

# run from a checkout without installing: the repository root is one level up
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# the rows of the table in issue 9: (cell, hidden, batch, layers)
PRESETS = {
    "issue": [("lstm", 128, 32, 1), ("lstm", 256, 32, 1), ("lstm", 512, 32, 1), ("lstm", 256, 32, 2),
              ("lstm", 256, 1, 1), ("gru", 256, 32, 1), ("gru", 256, 32, 2), ("rnn", 256, 32, 1)],
    # issue 22's rows, with --lengths uniform
    "packed": [("lstm", 256, 32, 1), ("lstm", 512, 32, 1), ("gru", 256, 32, 1)],
}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cell", nargs="+", default=["lstm"], choices=["lstm", "gru", "rnn"])
    ap.add_argument("--hidden", type=int, nargs="+", default=[256])
    ap.add_argument("--batch", type=int, nargs="+", default=[32])
    ap.add_argument("--layers", type=int, nargs="+", default=[1])
    ap.add_argument("--preset", choices=sorted(PRESETS), help="a fixed list of configurations instead")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--lengths", default="full", choices=["full", "uniform"],
                    help="full: every sequence seq long; uniform: lengths drawn in 1..seq, packed against padded")
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--embed", type=int, default=None, help="embedding size (default: the hidden size)")
    ap.add_argument("--impl", nargs="+", default=["sequence"], choices=["sequence", "step", "composed"])
    ap.add_argument("--portable", action="store_true",
                    help="also time each impl with the CPU kernels off (the portable NumPy cell math), "
                         "as '<impl>/numpy'")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per block")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps after every switch of library")
    ap.add_argument("--rounds", type=int, default=3, help="alternating blocks per library")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--cuda-loop", default="both", choices=["graph", "python", "both"],
                    help="on CUDA: the sequence ops' loop over time as a CUDA graph, the Python loop, or both "
                         "side by side (default); ignored on the CPU, whose loop is C++")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads for both libraries (NumPy's through threadpoolctl)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--profile", action="store_true", help="cProfile one step of our first impl per configuration")
    ap.add_argument("--phases", action="store_true",
                    help="also split our first impl's step (CPU) into the time inside NumPy's matmul (BLAS), "
                         "inside the CPU kernels, inside the layers' C++ loops over time, and the rest")
    return ap.parse_args(argv)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def blas_pool():
    """Whose threads run NumPy's BLAS jobs: tinygrad_rnn's pool takes them over (OpenBLAS's
    threading callback) once the CPU kernels of the recurrent ops are built."""
    from tinygrad_rnn.kernels import cpu
    return "tinygrad_rnn's" if cpu._shared_pool is not None else "its own"


def blas_info():
    """NumPy's BLAS: library, kernel (architecture) and threads, as threadpoolctl reports them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {"blas": "unknown (pip install threadpoolctl to see it)"}
    for lib in threadpool_info():
        if lib.get("user_api") == "blas":
            return {"blas": lib.get("internal_api"), "blas_version": lib.get("version"),
                    "blas_kernel": lib.get("architecture"), "blas_threads": lib.get("num_threads")}
    return {"blas": "none found"}


KERNELS_DEFAULT = {}  # device name -> use_kernels as the process started (TINYGRAD_RNN_CPU_KERNELS)


def cpu_kernels_info(device):
    """Whether the recurrent cells run compiled CPU kernels (tinygrad_rnn.kernels) or the portable form."""
    import tinygrad_rnn as tg
    from tinygrad_rnn.ops import rnn as rnnops
    dev = tg.get_device(device)
    if dev.kind != "cpu":
        return "n/a"
    if not dev.use_kernels:
        return "off (TINYGRAD_RNN_CPU_KERNELS=0)"
    return "built" if rnnops.device_kernels(dev) is not None else "unavailable (portable form)"


def draw_lengths(args, batch):
    """The sequences' lengths: all seq, or (--lengths uniform) drawn in 1..seq, the same for both libraries."""
    import numpy as np
    if args.lengths == "full":
        return np.full(batch, args.seq, dtype=np.int64)
    return np.random.default_rng(1).integers(1, args.seq + 1, size=batch)


def packed_order(lengths, targets):
    """targets (T, B) in packed order: timestep by timestep, the sequences still running
    sorted by length (stably, as pack_padded_sequence sorts them)."""
    import numpy as np
    order = np.argsort(-lengths, kind="stable")
    return np.concatenate([targets[t, order[lengths[order] > t]] for t in range(int(lengths.max()))])


def ours(args, cell, hidden, batch, layers, impl, portable=False, packed=False, cuda_loop=None):
    import numpy as np

    import tinygrad_rnn as tg
    from tinygrad_rnn import nn, optim
    from tinygrad_rnn.nn import functional as F
    from tinygrad_rnn.nn.utils.rnn import pack_padded_sequence

    dev = tg.get_device(args.device)
    dt = getattr(tg, args.dtype)
    tg.manual_seed(0)
    E = args.embed or hidden
    layer_cls = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
    emb = nn.Embedding(args.vocab, E, dtype=dt, device=dev)
    rnn = layer_cls(E, hidden, num_layers=layers, impl=impl, dtype=dt, device=dev)
    head = nn.Linear(hidden, args.vocab, dtype=dt, device=dev)
    params = list(emb.parameters()) + list(rnn.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=1e-3)
    rng = np.random.default_rng(0)
    data = rng.integers(0, args.vocab, (args.seq + 1, batch))
    x = tg.tensor(data[:-1], device=dev)
    T = args.seq
    lengths = draw_lengths(args, batch)
    targets = np.where(np.arange(T)[:, None] < lengths[None, :], data[1:], -1)  # -1: padding, ignored
    y = tg.tensor(packed_order(lengths, targets) if packed else targets.reshape(-1), device=dev)

    kernels = False if portable else KERNELS_DEFAULT.setdefault(dev.name, dev.use_kernels)

    def step():
        dev.use_kernels = kernels  # runners alternate in one process, so each sets its own
        if cuda_loop:
            dev.cuda_loop = cuda_loop
        if packed:
            out, _ = rnn(pack_padded_sequence(emb(x), lengths, enforce_sorted=False))
            logits = head(out.data)
        else:
            out, _ = rnn(emb(x))
            logits = head(out.reshape(T * batch, hidden))
        loss = F.cross_entropy(logits, y, ignore_index=-1 if args.lengths != "full" else None)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, dev.synchronize


def pytorch(args, torch, cell, hidden, batch, layers, packed=False):
    torch.manual_seed(0)
    dev = torch.device(args.device if args.device.startswith("cuda") else "cpu")  # cuDNN's nn.LSTM on a GPU
    dt = getattr(torch, args.dtype)
    E = args.embed or hidden
    layer_cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    emb = torch.nn.Embedding(args.vocab, E).to(dev, dt)
    rnn = layer_cls(E, hidden, num_layers=layers).to(dev, dt)
    head = torch.nn.Linear(hidden, args.vocab).to(dev, dt)
    params = list(emb.parameters()) + list(rnn.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.randint(0, args.vocab, (args.seq, batch), device=dev)
    y = torch.randint(0, args.vocab, (args.seq, batch), device=dev)
    lengths = torch.as_tensor(draw_lengths(args, batch))  # on the CPU, as pack_padded_sequence wants them
    y[torch.arange(args.seq)[:, None] >= lengths[None, :]] = -1  # padding: ignored
    pack = torch.nn.utils.rnn.pack_padded_sequence
    y = pack(y, lengths, enforce_sorted=False).data if packed else y.reshape(-1)

    def step():
        if packed:
            out, _ = rnn(pack(emb(x), lengths, enforce_sorted=False))
            out = out.data
        else:
            out, _ = rnn(emb(x))
        loss = torch.nn.functional.cross_entropy(head(out.reshape(-1, hidden)), y, ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()

    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    return step, sync


def time_blocks(runners, steps, warmup, rounds):
    """{name: [[seconds per step] per round]}: each runner in turn, `rounds` times, `warmup`
    steps dropped per block."""
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, (step, sync) in runners.items():
            for _ in range(warmup):
                step()
            sync()
            block = []
            for _ in range(steps):
                t0 = time.perf_counter()
                step()
                sync()
                block.append(time.perf_counter() - t0)
            times[name].append(block)
    return times


def paired_ratio(times, a, b):
    """The median over rounds of (a's block median / b's block median): a slow spell of the
    machine that spans a round slows both blocks of that round, and cancels."""
    return statistics.median(statistics.median(x) / statistics.median(y) for x, y in zip(times[a], times[b]))


def phases(step, steps):
    """Where our CPU step's time goes: inside numpy.matmul (BLAS, with the GFLOP/s it ran at),
    inside the compiled kernels, inside the layers' C++ loops over time (the recurrent GEMMs
    and the cell kernels of every step, ops/rnn.cpp), and the rest (NumPy's other
    calls, Python, the engine). All are wrapped for the measurement only (a microsecond a
    call), then restored."""
    import numpy as np
    from tinygrad_rnn.kernels import cpu
    spent = {"gemm": 0.0, "kernels": 0.0, "loops": 0.0, "flop": 0}
    matmul, call, loop = np.matmul, cpu.HostKernel.__call__, cpu.HostFunction.__call__

    def timed_matmul(a, b, *rest, **kw):
        t0 = time.perf_counter()
        r = matmul(a, b, *rest, **kw)
        spent["gemm"] += time.perf_counter() - t0
        spent["flop"] += 2 * a.size * b.shape[-1]
        return r

    def timed_call(self, *args):
        t0 = time.perf_counter()
        r = call(self, *args)
        spent["kernels"] += time.perf_counter() - t0
        return r

    def timed_loop(self, *args):
        t0 = time.perf_counter()
        r = loop(self, *args)
        spent["loops"] += time.perf_counter() - t0
        return r

    step()
    np.matmul, cpu.HostKernel.__call__, cpu.HostFunction.__call__ = timed_matmul, timed_call, timed_loop
    try:
        step()
        spent.update(gemm=0.0, kernels=0.0, loops=0.0, flop=0)
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        total = (time.perf_counter() - t0) / steps
    finally:
        np.matmul, cpu.HostKernel.__call__, cpu.HostFunction.__call__ = matmul, call, loop
    gemm, kernels, loops = spent["gemm"] / steps, spent["kernels"] / steps, spent["loops"] / steps
    return {"step_ms": round(total * 1e3, 2), "gemm_ms": round(gemm * 1e3, 2),
            "gemm_gflop": round(spent["flop"] / steps / 1e9, 6),
            "gemm_gflop_per_s": round(spent["flop"] / steps / gemm / 1e9, 1) if gemm else None,
            "kernels_ms": round(kernels * 1e3, 2), "loops_ms": round(loops * 1e3, 2),
            "rest_ms": round((total - gemm - kernels - loops) * 1e3, 2)}


def main(argv=None):
    args = parse_args(argv)
    torch = None
    if not args.no_torch:
        try:
            import torch  # noqa: F811  (optional: a benchmark-only comparison)
        except ImportError:
            torch = None
    if torch is not None and args.device.startswith("cuda") and not torch.cuda.is_available():
        # a CPU-only PyTorch beside our GPU would compare two different machines
        print(f"rnn_step: PyTorch {torch.__version__} has no CUDA here; no PyTorch comparison", file=sys.stderr)
        torch = None
    limiter = None
    if args.threads:
        try:
            from threadpoolctl import threadpool_limits
            limiter = threadpool_limits(limits=args.threads, user_api="blas")
        except ImportError:
            sys.exit("--threads needs threadpoolctl (pip install threadpoolctl)")
        if torch is not None:
            torch.set_num_threads(args.threads)
    import numpy  # noqa: F401  (loaded first, so that threadpoolctl sees its BLAS)
    env = {"bench": "rnn_step_env", "cpu": cpu_model(), "cores": os.cpu_count(), **blas_info(),
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "unset"),
           "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "unset")}
    try:
        env["load1"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    env["cpu_kernels"] = cpu_kernels_info(args.device)
    from tinygrad_rnn.backend import hold_freed_memory
    env["freed_memory_held"] = hold_freed_memory()  # as `train` runs (both libraries' allocations)
    if torch is not None:
        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
        if args.device.startswith("cuda"):
            env["torch_cuda"], env["torch_cudnn"] = torch.version.cuda, torch.backends.cudnn.version()
    print(json.dumps(env), flush=True)
    configs = PRESETS[args.preset] if args.preset else list(
        itertools.product(args.cell, args.hidden, args.batch, args.layers))
    rows = []
    for cell, hidden, batch, layers in configs:
        loops = cuda_loops(args)
        if args.lengths == "full":
            runners = {impl + at: ours(args, cell, hidden, batch, layers, impl, cuda_loop=loop)
                       for impl in args.impl for at, loop in loops}
        else:  # our packed step beside our padded one
            runners = {f"{impl}/{how}{at}": ours(args, cell, hidden, batch, layers, impl, packed=how == "packed",
                                                 cuda_loop=loop)
                       for impl in args.impl for how in ("packed", "padded") for at, loop in loops}
        if args.portable:
            runners.update({f"{impl}/numpy": ours(args, cell, hidden, batch, layers, impl, portable=True)
                            for impl in args.impl})
        if torch is not None:
            runners["torch"] = pytorch(args, torch, cell, hidden, batch, layers)
            if args.lengths != "full":
                runners["torch/packed"] = pytorch(args, torch, cell, hidden, batch, layers, packed=True)
        if args.profile:
            import cProfile
            import pstats
            step, sync = next(iter(runners.values()))
            step()
            pr = cProfile.Profile()
            pr.enable()
            step()
            sync()
            pr.disable()
            pstats.Stats(pr, stream=sys.stderr).sort_stats("tottime").print_stats(15)
        if args.phases and args.device == "cpu":
            ph = phases(next(iter(runners.values()))[0], args.steps * args.rounds)
            print(json.dumps({"bench": "rnn_step_phases", "impl": args.impl[0], "cell": cell, "hidden": hidden,
                              "batch": batch, "layers": layers, **ph}), flush=True)
        times = time_blocks(runners, args.steps, args.warmup, args.rounds)
        row = {"cell": cell, "hidden": hidden, "batch": batch, "layers": layers}
        tokens = int(draw_lengths(args, batch).sum())  # the real ones
        for name, blocks in times.items():
            ts = [t for block in blocks for t in block]
            ms = statistics.median(ts) * 1e3
            row[name] = ms
            is_torch = name.startswith("torch")
            if torch is not None and not is_torch:
                row["ratio " + name] = paired_ratio(times, torch_reference(name), name)
            if base(name).endswith("/packed") and not is_torch:
                row["packed/padded " + name] = paired_ratio(times, name, name.replace("/packed", "/padded"))
            if name.endswith("@graph") and name.replace("@graph", "@python") in times:
                row["python/graph " + name] = paired_ratio(times, name.replace("@graph", "@python"), name)
            lib = "torch " + torch.__version__ if is_torch else "tinygrad_rnn"
            rec = {"bench": "rnn_step", "library": lib, "impl": None if is_torch else base(name).split("/")[0],
                   "lengths": args.lengths, "real_tokens": tokens,
                   "packed": base(name).endswith("/packed") if args.lengths != "full" else None,
                   "cuda_loop": name.split("@")[1] if "@" in name else None,
                   "cell_math": None if is_torch else ("portable" if name.endswith("/numpy") else env["cpu_kernels"]),
                   "cell": cell,
                   "hidden": hidden, "batch": batch, "layers": layers, "seq": args.seq, "vocab": args.vocab,
                   "device": args.device, "dtype": args.dtype, "ms_per_step": round(ms, 3),
                   "ms_min": round(min(ts) * 1e3, 3), "tokens_per_s": round(tokens / ms * 1e3, 1),
                   "timed_steps": len(ts)}
            if not is_torch:
                rec["blas_jobs_on"] = blas_pool()
            if "ratio " + name in row:
                rec["torch_over_ours_paired"] = round(row["ratio " + name], 3)
            if "python/graph " + name in row:
                rec["python_loop_over_graph_paired"] = round(row["python/graph " + name], 3)
            if "packed/padded " + name in row:
                rec["packed_over_padded_paired"] = round(row["packed/padded " + name], 3)
                rec["mean_length_over_seq"] = round(tokens / (batch * args.seq), 3)
            print(json.dumps(rec), flush=True)
        rows.append(row)
    if limiter is not None:
        limiter.restore_original_limits()

    pool = blas_pool()
    print(f"\nchar-LM training step: seq {args.seq}, vocab {args.vocab}, {args.dtype}, device {args.device}; "
          f"{env['cpu']}, {env.get('blas')} {env.get('blas_kernel', '')} x{env.get('blas_threads', '?')} threads "
          f"(its jobs on {pool} threads), "
          f"OPENBLAS_CORETYPE={env['OPENBLAS_CORETYPE']}, CPU kernels {env['cpu_kernels']}" + (f", torch {env['torch']} x{env['torch_threads']}"
                                                              if torch is not None else ""))
    names = [n for n in rows[0] if n not in ("cell", "hidden", "batch", "layers") and " " not in n
             and not n.startswith("torch")] if rows else []
    torches = ["torch"] + (["torch/packed"] if args.lengths != "full" else [])
    head = f"{'cell':>4} {'H':>4} {'B':>3} {'L':>2}"
    for impl in names:
        head += f" | {impl + ' ms':>12} {'tok/s':>8}"
    if torch is not None:
        head += " | " + " ".join(f"{t + ' ms':>15}" for t in torches)
        head += " | " + " ".join(f"{torch_reference(impl).replace('torch', 't') + '/' + impl:>17}" for impl in names)
    packed = [n for n in names if base(n).endswith("/packed")]
    if packed:
        head += " | " + " ".join(f"{n + '/padded':>22}" for n in packed) + f" | {'mean len/T':>10}"
    graphs = [n for n in names if "python/graph " + n in rows[0]] if rows else []
    if graphs:
        head += " | " + " ".join(f"{'python/' + n:>22}" for n in graphs)
    print(head)
    print("-" * len(head))
    for r in rows:
        tokens = int(draw_lengths(args, r["batch"]).sum())
        line = f"{r['cell']:>4} {r['hidden']:>4} {r['batch']:>3} {r['layers']:>2}"
        for impl in names:
            line += f" | {r[impl]:>12.1f} {tokens / r[impl] * 1e3:>8,.0f}"
        if torch is not None:
            line += " | " + " ".join(f"{r[t]:>15.1f}" for t in torches)
            line += " | " + " ".join(f"{r['ratio ' + impl]:>17.2f}" for impl in names)
        if packed:
            line += " | " + " ".join(f"{r['packed/padded ' + n]:>22.2f}" for n in packed)
            line += f" | {tokens / (r['batch'] * args.seq):>10.2f}"
        if graphs:
            line += " | " + " ".join(f"{r['python/graph ' + n]:>22.2f}" for n in graphs)
        print(line)


def torch_reference(name):
    """PyTorch's runner that one of ours is set against: its packed step for our packed one."""
    return "torch/packed" if base(name).endswith("/packed") else "torch"


def base(name):
    """A runner's name without its CUDA loop ("sequence/packed@graph" -> "sequence/packed")."""
    return name.split("@")[0]


def cuda_loops(args):
    """(name suffix, cuda_loop) of each of our runners: on CUDA one per loop asked for, else one."""
    if not args.device.startswith("cuda"):
        return [("", None)]
    modes = ["graph", "python"] if args.cuda_loop == "both" else [args.cuda_loop]
    return [("@" + m, m) for m in modes]


if __name__ == "__main__":
    main()
