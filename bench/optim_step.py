"""One optimizer step over a char-LM's parameters: the compiled kernel against the portable form.

The parameters of an embedding -> LSTM (one layer) -> linear model with vocabulary 65 and
embedding = hidden size H (weights 2 x (4H, H), 2 x (65, H), biases), float32, gradients
set once. Each optimizer runs its update with the device's elementwise kernel (the default
where one is built, see tinygrad_rnn/kernels) and with the portable array-API form, in
alternating blocks; the figure is the median block's time per step. Prints one JSON object
per measurement, then a table. Run it as

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/optim_step.py --hidden 256 512
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--optimizer", nargs="+", default=["adam", "adamw"], choices=["adam", "adamw"])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per block")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)

    import tinygrad_rnn as tg
    from tinygrad_rnn import kernels, nn, optim

    dev = tg.get_device("cpu")
    default = dev.use_kernels
    built = kernels.for_device(dev, "optim", optim._KERNELS) is not None
    rows = []
    for H in args.hidden:
        for name in args.optimizer:
            tg.manual_seed(0)
            shapes = [(4 * H, H), (4 * H, H), (65, H), (65, H), (4 * H,), (4 * H,), (65,)]
            params = [nn.Parameter(tg.randn(*s)) for s in shapes]
            for p in params:
                p.grad = tg.randn(*p.shape)
            opt = {"adam": optim.Adam, "adamw": optim.AdamW}[name](params, lr=1e-3)
            times = {"kernel": [], "portable": []}
            for _ in range(args.rounds):
                for label, on in (("kernel", default), ("portable", False)):
                    dev.use_kernels = on
                    opt.step()
                    t0 = time.perf_counter()
                    for _ in range(args.steps):
                        opt.step()
                    times[label].append((time.perf_counter() - t0) / args.steps)
            dev.use_kernels = default
            row = {"bench": "optim_step", "optimizer": name, "hidden": H,
                   "parameters": sum(p.numel() for p in params), "kernel_built": built}
            for label, ts in times.items():
                row[f"{label}_ms"] = round(statistics.median(ts) * 1e3, 3)
            print(json.dumps(row), flush=True)
            rows.append(row)
    print(f"\nfloat32, device cpu, CPU kernels {'built' if built and default else 'not used'}")
    print(f"{'optimizer':>9} {'H':>5} {'params':>10} | {'kernel ms':>9} {'portable ms':>11} {'speed-up':>8}")
    for r in rows:
        print(f"{r['optimizer']:>9} {r['hidden']:>5} {r['parameters']:>10,} | {r['kernel_ms']:>9.2f} "
              f"{r['portable_ms']:>11.2f} {r['portable_ms'] / r['kernel_ms']:>8.2f}")


if __name__ == "__main__":
    main()
