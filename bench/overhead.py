"""Engine overhead: microseconds per op (forward + backward) on a tiny tensor, against
the same math written directly in NumPy.

    python bench/overhead.py                 # all measurements, ~1 minute
    python bench/overhead.py --quick         # fewer repeats

On a (4, 4) tensor the arithmetic costs well under a microsecond, so what is left is the
engine's own Python work per op: wrapping arrays in Tensors, recording the graph node,
ordering the graph, routing gradients. Overhead = our time - NumPy's time for the same
math (forward and the backward formulas, by hand). Prints one JSON line per
measurement, then a table. The budget is 10 us of overhead per op.

Timing is wall clock (time.perf_counter), R repeats of N iterations each; the median
repeat is reported, with the fastest alongside (the least disturbed by other work on
the machine). The garbage collector stays on, as it is in a training loop.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinygrad_rnn as tg  # noqa: E402

SHAPE = (4, 4)


def timeit(fn, number, repeat):
    """Seconds per call of fn: (median, min) over `repeat` runs of `number` calls."""
    fn()  # warm up: first calls pay for imports, caches, allocations
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - t0) / number)
    return statistics.median(runs), min(runs)


# ---------------------------------------------------------------------------- single ops
def single_op_cases():
    rng = np.random.default_rng(0)
    an = rng.standard_normal(SHAPE).astype(np.float32)
    bn = rng.standard_normal(SHAPE).astype(np.float32)
    gn = np.ones(SHAPE, np.float32)
    a = tg.tensor(an, requires_grad=True)
    b = tg.tensor(bn, requires_grad=True)
    g = tg.tensor(gn)

    def ours(op):
        def run():
            a.grad = b.grad = None
            op().backward(g)
        return run

    def ours_fwd(op):
        def run():
            with tg.no_grad():
                op()
        return run

    # the same math by hand: forward, then each input's gradient
    def np_add():
        _ = an + bn
        return gn, gn

    def np_mul():
        _ = an * bn
        return gn * bn, gn * an

    def np_matmul():
        _ = an @ bn
        return gn @ bn.T, an.T @ gn

    def np_tanh():
        y = np.tanh(an)
        return gn * (1.0 - y * y)

    return [
        ("add", ours(lambda: a + b), ours_fwd(lambda: a + b), np_add, lambda: an + bn),
        ("mul", ours(lambda: a * b), ours_fwd(lambda: a * b), np_mul, lambda: an * bn),
        ("matmul", ours(lambda: a @ b), ours_fwd(lambda: a @ b), np_matmul, lambda: an @ bn),
        ("tanh", ours(lambda: a.tanh()), ours_fwd(lambda: a.tanh()), np_tanh, lambda: np.tanh(an)),
    ]


# ---------------------------------------------------------------------------- chains
def chain_case(n_ops):
    """h <- tanh(h * w), n_ops / 2 times, with w shared by every step (as an RNN's weight
    is), then backward from h.sum(): n_ops + 1 nodes."""
    steps = n_ops // 2
    rng = np.random.default_rng(1)
    xn = rng.standard_normal(SHAPE).astype(np.float32)
    wn = (rng.standard_normal(SHAPE) * 0.5 + 1.0).astype(np.float32)
    x = tg.tensor(xn, requires_grad=True)
    w = tg.tensor(wn, requires_grad=True)

    def ours():
        x.grad = w.grad = None
        h = x
        for _ in range(steps):
            h = (h * w).tanh()
        h.sum().backward()

    def numpy_by_hand():
        hs = [xn]
        for _ in range(steps):
            hs.append(np.tanh(hs[-1] * wn))
        g = np.ones(SHAPE, np.float32)
        gw = np.zeros(SHAPE, np.float32)
        for i in range(steps, 0, -1):
            y = hs[i]
            g = g * (1.0 - y * y)
            gw = gw + g * hs[i - 1]
            g = g * wn
        return g, gw

    return ours, numpy_by_hand


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats (a rough number in seconds)")
    p.add_argument("--chain-100k", type=int, default=100_000, help="nodes in the long chain")
    args = p.parse_args(argv)
    number, repeat = (2000, 5) if args.quick else (10000, 11)

    tg.set_default_device("cpu")
    env = {"python": platform.python_version(), "numpy": np.__version__, "cpus": os.cpu_count(),
           "load_avg_1m": round(os.getloadavg()[0], 2), "machine": platform.machine()}
    rows = []

    def emit(name, what, ours, base, n_ops):
        med, best = ours
        bmed, bbest = base
        row = {"bench": name, "what": what, "shape": list(SHAPE), "dtype": "float32", "ops": n_ops,
               "ours_us_per_op": round(med / n_ops * 1e6, 3), "ours_min_us_per_op": round(best / n_ops * 1e6, 3),
               "numpy_us_per_op": round(bmed / n_ops * 1e6, 3), "numpy_min_us_per_op": round(bbest / n_ops * 1e6, 3),
               "overhead_us_per_op": round((med - bmed) / n_ops * 1e6, 3),
               "overhead_min_us_per_op": round((best - bbest) / n_ops * 1e6, 3), **env}
        rows.append(row)
        print(json.dumps(row), flush=True)

    for name, ours_fb, ours_f, np_fb, np_f in single_op_cases():
        emit(name, "forward", timeit(ours_f, number, repeat), timeit(np_f, number, repeat), 1)
        emit(name, "forward+backward", timeit(ours_fb, number, repeat), timeit(np_fb, number, repeat), 1)

    ours, base = chain_case(1000)
    n_chain = max(number // 1000, 3)
    emit("chain_1000", "forward+backward", timeit(ours, n_chain, repeat), timeit(base, n_chain, repeat), 1001)

    # The long chain twice: as is, and with the cyclic garbage collector off. A graph of
    # 100,000 nodes is ~300,000 live container objects, which each collection of the
    # oldest generation walks; the graph has no reference cycles (tests/test_engine.py),
    # so a training loop may switch the collector off and lose nothing.
    ours, base = chain_case(args.chain_100k)
    long_rows = []
    for gc_on in (True, False):
        if not gc_on:
            gc.disable()
        try:
            t_ours = timeit(ours, 1, 3)
            t_np = timeit(base, 1, 3)
        finally:
            gc.enable()
        name = f"chain_{args.chain_100k}" + ("" if gc_on else "_gc_off")
        emit(name, "forward+backward", t_ours, t_np, args.chain_100k + 1)
        rows[-1].update(gc=gc_on, total_s=round(t_ours[0], 3), total_min_s=round(t_ours[1], 3),
                        numpy_total_s=round(t_np[0], 3))
        long_rows.append(rows[-1])

    print()
    print(f"tinygrad_rnn engine overhead, shape {SHAPE} float32, median of {repeat} repeats "
          f"(min in brackets); python {env['python']}, numpy {env['numpy']}, {env['cpus']} CPUs, "
          f"load average {env['load_avg_1m']} at start")
    head = f"{'op':<20} {'pass':<17} {'ours us/op':>16} {'numpy us/op':>16} {'overhead us/op':>18}"
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['bench']:<20} {r['what']:<17} "
              f"{r['ours_us_per_op']:>7.2f} ({r['ours_min_us_per_op']:>6.2f}) "
              f"{r['numpy_us_per_op']:>7.2f} ({r['numpy_min_us_per_op']:>6.2f}) "
              f"{r['overhead_us_per_op']:>9.2f} ({r['overhead_min_us_per_op']:>6.2f})")
    print()
    for long in long_rows:
        print(f"{long['bench']}: forward + backward of {long['ops']} nodes in {long['total_s']:.2f} s "
              f"(fastest {long['total_min_s']:.2f} s; NumPy by hand: {long['numpy_total_s']:.2f} s), "
              f"garbage collector {'on' if long['gc'] else 'off'}")
    worst = max(rows[:-1], key=lambda r: r["overhead_min_us_per_op"] if r["what"] == "forward+backward" else -1)
    print(f"largest forward+backward overhead (fastest repeats, collector on): "
          f"{worst['overhead_min_us_per_op']:.2f} us/op, {worst['bench']} (budget: 10 us)")


if __name__ == "__main__":
    main()
