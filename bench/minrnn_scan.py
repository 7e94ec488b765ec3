"""minGRU/minLSTM: the log-space parallel scan against the sequential loop and nn.GRU.

For each sequence length, times one forward pass (no graph) and one forward + backward
(sum of the outputs) of:

    mingru-parallel    nn.MinGRU, log-space scan over the whole sequence (log2(T) array steps)
    mingru-sequential  nn.MinGRU, the same equations one step at a time
    minlstm-parallel   nn.MinLSTM, scan
    minlstm-sequential nn.MinLSTM, loop
    gru                nn.GRU (PyTorch's GRU; its default fused step), for reference

Writes one JSON object per measurement to stdout as it goes (or to --json FILE), then a
table of milliseconds and the speed-up of the scan over the loop. Timings are the best
of --repeat runs after one warm-up run (the median is in the JSON too): the best is the
least disturbed by whatever else the machine is doing.

    python bench/minrnn_scan.py                       # T = 64 .. 4096, batch 16, hidden 64, cpu
    python bench/minrnn_scan.py --batch 1 --input 16 --hidden 16     # tiny steps: overhead-bound
    python bench/minrnn_scan.py --device cuda --lengths 64,512,4096
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# benchmark the checkout this file is in, installed or not
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tinygrad_rnn as tg  # noqa: E402
from tinygrad_rnn import nn  # noqa: E402


def build(kind, args, device):
    if kind.startswith("mingru"):
        return nn.MinGRU(args.input, args.hidden, device=device)
    if kind.startswith("minlstm"):
        return nn.MinLSTM(args.input, args.hidden, device=device)
    if not hasattr(nn, "GRU"):
        return None
    return nn.GRU(args.input, args.hidden, device=device)


def run_once(model, kind, x, backward):
    mode = "sequential" if kind.endswith("sequential") else "parallel"
    call = (lambda: model(x, mode=mode)) if kind != "gru" else (lambda: model(x))
    if backward:
        out, _ = call()
        out.sum().backward()
    else:
        with tg.no_grad():
            call()


def measure(model, kind, x, backward, repeat, dev):
    run_once(model, kind, x, backward)  # warm-up
    times = []
    for _ in range(repeat):
        model.zero_grad()
        dev.synchronize()
        t0 = time.perf_counter()
        run_once(model, kind, x, backward)
        dev.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--lengths", default="64,128,256,512,1024,2048,4096")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--kinds", default="mingru-parallel,mingru-sequential,minlstm-parallel,minlstm-sequential,gru")
    p.add_argument("--json", default=None, help="write the JSON lines here instead of stdout")
    args = p.parse_args(argv)
    lengths = [int(t) for t in args.lengths.split(",")]
    kinds = args.kinds.split(",")
    dev = tg.get_device(args.device)
    tg.manual_seed(0)
    sink = open(args.json, "w") if args.json else sys.stdout
    results = {}
    for T in lengths:
        x = tg.randn(T, args.batch, args.input, device=dev, requires_grad=True)
        for kind in kinds:
            model = build(kind, args, dev)
            if model is None:
                print(f"skipping {kind}: nn.GRU is not available", file=sys.stderr)
                continue
            for backward in (False, True):
                best, median = measure(model, kind, x, backward, args.repeat, dev)
                rec = {"bench": "minrnn_scan", "model": kind, "T": T, "batch": args.batch, "input": args.input,
                       "hidden": args.hidden, "device": dev.name, "pass": "fwd+bwd" if backward else "fwd",
                       "ms": round(best * 1e3, 3), "ms_median": round(median * 1e3, 3), "repeat": args.repeat}
                results[(kind, T, rec["pass"])] = rec["ms"]
                print(json.dumps(rec), file=sink, flush=True)
    if args.json:
        sink.close()
    print_table(results, kinds, lengths, args, dev)


def print_table(results, kinds, lengths, args, dev):
    print(f"\nms per call (best of {args.repeat}), batch {args.batch}, input {args.input}, hidden {args.hidden}, "
          f"float32, {dev.name}")
    for pas in ("fwd", "fwd+bwd"):
        print(f"\n{pas}")
        print(f"{'T':>6} " + " ".join(f"{k:>19}" for k in kinds) + f" {'scan speed-up (mingru/minlstm)':>28}")
        for T in lengths:
            row = [results.get((k, T, pas)) for k in kinds]
            cells = " ".join(f"{v:>19.2f}" if v is not None else f"{'-':>19}" for v in row)
            ups = []
            for fam in ("mingru", "minlstm"):
                par, seq = results.get((f"{fam}-parallel", T, pas)), results.get((f"{fam}-sequential", T, pas))
                if par and seq:
                    ups.append(f"{seq / par:.1f}x")
            print(f"{T:>6} {cells} {'/'.join(ups):>28}")


if __name__ == "__main__":
    main()
