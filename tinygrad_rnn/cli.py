"""The command line: `python -m tinygrad_rnn` or `tinygrad-rnn`.

    train   train a character-level language model (the default corpus needs no download)
    sample  generate text from a checkpoint
    eval    validation loss and bits per character of a checkpoint
    plot    the train and validation loss curves of a run, as a PNG
    ngram   the count-based n-gram baseline on the same split

Exit codes: 0 done, 1 a file or run problem (message on stderr, no traceback),
2 bad arguments (argparse's), 130 interrupted (a checkpoint was saved).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

_IMPORTED = time.perf_counter()  # process_age's fallback where /proc is not there

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _number(kind, ok, what):
    """An argparse type: `kind` (int or float) parsed from the text and checked by `ok`."""
    def parse(s):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if not (math.isfinite(v) and ok(v)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return v
    parse.__name__ = what  # argparse names the type by it in some messages
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonneg_int = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_top_p = _number(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
_nonneg_float = _number(float, lambda v: v >= 0, "a non-negative number")
_fraction = _number(float, lambda v: 0.0 < v < 1.0, "a number between 0 and 1 (exclusive)")
_dropout = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
_decay = _number(float, lambda v: 0.0 < v <= 1.0, "a number in (0, 1]")


def _device(s):
    if s == "cpu" or s == "cuda" or (s.startswith("cuda:") and s[5:].isdigit()):
        return s
    raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {s!r}")


# The training defaults: a model that learns visibly on two CPU cores in two minutes. On
# the stdlib corpus, measured on a shared 2-core machine: 1x128 with Adam at 1e-2 reached
# 1.51 nats/char in 2 minutes; 1x128 at 2e-3 1.91, 2x128 at 3e-3 2.01, and the larger
# 2x256 at 2e-3 had done under 200 steps (2.8). Bigger models want a lower --lr.
DEFAULT_MINUTES = 2.0


def _train_defaults():
    """TrainConfig's field defaults: the one place they are set."""
    import dataclasses
    from .lm.train import TrainConfig
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)}


def _add_regularisers(p):
    """The AWD-LSTM regularisers (Merity et al. 2017), each off by default; docs/charlm.md."""
    g = p.add_argument_group("regularisers (AWD-LSTM's)")
    g.add_argument("--dropout-input", type=_dropout, metavar="P",
                   help="dropout on the recurrent layers' input (AWD's dropouti; default 0)")
    g.add_argument("--dropout-hidden", type=_dropout, metavar="P",
                   help="dropout between stacked layers (dropouth; default: --dropout)")
    g.add_argument("--dropout-output", type=_dropout, metavar="P",
                   help="dropout before the output layer (default: --dropout)")
    g.add_argument("--locked-dropout", action="store_true",
                   help="make the three dropouts above variational: one mask per sequence for all time steps")
    g.add_argument("--weight-drop", type=_dropout, metavar="P",
                   help="DropConnect on the hidden-to-hidden weights, one mask per step (wdrop; lstm, gru, rnn, "
                        "lnlstm; default 0)")
    g.add_argument("--embed-dropout", type=_dropout, metavar="P",
                   help="drop whole rows of the embedding (whole characters; dropoute; needs --embed-dim; "
                        "default 0)")
    g.add_argument("--tie-weights", action="store_true",
                   help="the output layer's weight is the embedding matrix (needs --embed-dim equal to "
                        "--hidden, or to --proj-size)")
    g.add_argument("--proj-size", type=_nonneg_int, metavar="N",
                   help="LSTM with projections: each layer's output has N features (default 0: none)")


def _add_train(sub):
    from .lm.model import available_cells
    from .lm.train import OPTIMIZERS
    d = _train_defaults()
    p = sub.add_parser(
        "train", help="train a character-level language model",
        description="Train a character-level language model. With no options: an LSTM on the source of "
                    "this Python's standard library, for 2 minutes on the CPU, ending with a sample.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="PATH", help="a UTF-8 text file or a directory of them "
                   "(default: the Python standard library's sources)")
    g.add_argument("--max-chars", type=_positive_int, metavar="N",
                   help="use at most N characters of the corpus (default for the stdlib corpus: 1000000)")
    g.add_argument("--val-fraction", type=_fraction, metavar="F", help="the last F of the text is validation "
                   f"(default {d['val_fraction']})")
    g = p.add_argument_group("model")
    g.add_argument("--cell", choices=available_cells(), help=f"recurrent layer (default {d['cell']})")
    g.add_argument("--hidden", type=_positive_int, metavar="N", help=f"hidden size (default {d['hidden']})")
    g.add_argument("--layers", type=_positive_int, metavar="N", help=f"stacked layers (default {d['layers']})")
    g.add_argument("--embed-dim", type=_positive_int, metavar="N",
                   help="learned character embedding of N dims (default: one-hot input); the first layer "
                        "folds it into its input projection, which makes larger models' steps faster")
    g.add_argument("--dropout", type=_dropout, metavar="P", help=f"dropout (default {d['dropout']})")
    g.add_argument("--dtype", choices=["float32", "float64"], help=f"weights and arithmetic (default {d['dtype']})")
    _add_regularisers(p)
    g = p.add_argument_group("optimisation")
    g.add_argument("--seq-len", type=_positive_int, metavar="T",
                   help=f"BPTT window: characters per step and row (default {d['seq_len']})")
    g.add_argument("--batch", type=_positive_int, metavar="B", help=f"parallel rows (default {d['batch']})")
    g.add_argument("--optimizer", choices=list(OPTIMIZERS), help=f"(default {d['optimizer']})")
    g.add_argument("--lr", type=_positive_float, help="learning rate (default: 1e-2 for adam and adamw, "
                   "2e-3 for rmsprop, 0.1 for adagrad, 1.0 for sgd; larger models learn better with less, "
                   "e.g. 2e-3 for 2x256)")
    g.add_argument("--lr-decay", type=_decay, metavar="G",
                   help="multiply the learning rate by G after each pass over the training text "
                   "(default 1: constant)")
    g.add_argument("--schedule", choices=["constant", "cosine", "step", "exp", "onecycle"],
                   help="learning-rate schedule over the --steps of the run: cosine to 0, step (halved each "
                   "quarter), exp (to 1%%), onecycle (PyTorch's OneCycleLR, max_lr = --lr); with --minutes and no "
                   "--steps, the run measures its step time and fixes the steps that fit "
                   f"(default {d['schedule']})")
    g.add_argument("--warmup", type=_nonneg_int, metavar="N",
                   help="N steps of linear warm-up to --lr before the schedule (default 0)")
    g.add_argument("--clip", type=_nonneg_float, metavar="NORM",
                   help=f"clip the global gradient norm; 0 turns it off (default {d['clip']})")
    g.add_argument("--seed", type=_nonneg_int, help=f"(default {d['seed']})")
    g = p.add_argument_group("budget (totals for the run; with neither, 2 minutes; with both, whichever "
                             "comes first, e.g. a schedule over --steps capped at --minutes)")
    g.add_argument("--steps", type=_positive_int, metavar="N", help="train until step N")
    g.add_argument("--minutes", type=_positive_float, metavar="M",
                   help="train for M minutes of wall time; with a --schedule and no --steps, the number of steps "
                   "is fixed after 40 steps from their measured time, so that the schedule, the evaluations and "
                   "the final one end inside M minutes (recorded in the checkpoint for --resume)")
    g = p.add_argument_group("running")
    g.add_argument("--device", type=_device, help=f"cpu, cuda or cuda:N (default {d['device']})")
    g.add_argument("--out", metavar="DIR", help="run directory for checkpoint.npz and metrics.jsonl "
                   "(default runs/charlm)")
    g.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    g.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds a run")
    g.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help=f"validation loss (and a checkpoint) every N steps (default {d['eval_every']})")
    g.add_argument("--eval-chars", type=_nonneg_int, metavar="N",
                   help="the periodic evaluations estimate the validation loss from N characters, in 32 "
                   "windows spread evenly over the validation text (the same at every evaluation; logged as "
                   "val~ ... est.), to save time with large models (default: all; the final evaluation "
                   "always scores all)")
    g.add_argument("--sample-every", type=_positive_int, metavar="N",
                   help="print a short sample every N steps (default: with each evaluation)")
    g.add_argument("--log-every", type=_positive_int, metavar="N",
                   help=f"a metrics.jsonl line every N steps (default {d['log_every']})")
    g.add_argument("--save-every", type=_positive_int, metavar="N",
                   help="a checkpoint every N steps (default: with each evaluation)")
    g.add_argument("--progress", choices=["auto", "bar", "lines", "none"],
                   help="tqdm bar (auto: when tqdm is installed and stderr is a terminal), "
                   "plain lines every 10 s, or none (default auto)")
    p.set_defaults(func=cmd_train)


def process_age() -> float:
    """Seconds since this process started (Linux's /proc: interpreter start-up and imports
    included), or since this module was imported where /proc is not there."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return time.perf_counter() - _IMPORTED


def cmd_train(args):
    from .lm.train import TrainConfig, train
    given = {k: v for k, v in vars(args).items() if k not in ("func", "command", "startup_s")}
    out = given.pop("out", os.path.join("runs", "charlm"))
    resume = given.pop("resume", False)
    overwrite = given.pop("overwrite", False)
    progress = given.pop("progress", "auto")
    if resume and overwrite:
        raise _UsageError("train: --resume and --overwrite contradict each other")
    if given.get("eval_chars") == 0:
        given["eval_chars"] = None
    if given.get("clip") == 0:
        given["clip"] = None
    fields = dict(given)  # TrainConfig's defaults for the rest
    if "steps" not in given and "minutes" not in given and not resume:
        fields["minutes"] = DEFAULT_MINUTES
    cfg = TrainConfig(**fields)
    result = train(cfg, out, resume=resume, overwrite=overwrite, progress=progress, explicit=set(given),
                   startup_s=getattr(args, "startup_s", 0.0))
    return EXIT_INTERRUPTED if result.status == "interrupted" else 0


def _add_sample(sub):
    p = sub.add_parser("sample", help="generate text from a checkpoint",
                       description="Generate text from a checkpoint (a file or a run directory).")
    p.add_argument("checkpoint", metavar="CKPT")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", default="", help="text to continue (default: start of a line)")
    g.add_argument("--prompt-file", metavar="PATH", default=None, help="continue the text of this UTF-8 file "
                   "(a prompt of many lines)")
    p.add_argument("--length", type=_nonneg_int, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=_nonneg_float, default=None,
                   help="<1 sharper, >1 wilder, 0 greedy (default 0.8)")
    p.add_argument("--top-k", type=_positive_int, default=None, help="sample among the K likeliest characters")
    p.add_argument("--top-p", type=_top_p, default=None, metavar="P",
                   help="nucleus sampling: among the likeliest characters holding P of the probability")
    p.add_argument("--num-samples", type=_positive_int, default=1, metavar="N",
                   help="N samples (with --seed S, the seeds S, S+1, ...), each under a header line")
    p.add_argument("--seed", type=_nonneg_int, default=None, help="make the sample reproducible")
    g = p.add_argument_group("beam search (instead of sampling)")
    g.add_argument("--beam", type=_positive_int, default=None, metavar="K",
                   help="the likeliest continuation a beam of K hypotheses finds (1: greedy), written at the end; "
                   "ranks by the model's log-probabilities, so it takes no --temperature, --top-k, --top-p or --seed")
    g.add_argument("--stop", default=None, metavar="CHAR",
                   help="a character that ends a hypothesis (\\n for a newline)")
    g.add_argument("--length-norm", type=_nonneg_float, default=None, metavar="ALPHA",
                   help="rank hypotheses ended by --stop by log P / ((5 + length) / 6)^ALPHA, GNMT's length "
                   "penalty (default 0: the plain log-probability; without --stop all have the same length)")
    p.add_argument("--device", type=_device, default="cpu", help="(default cpu)")
    p.set_defaults(func=cmd_sample)


def _beam_options(args):
    """The beam-search keywords of generate, or {} to sample; refuses options of the other kind."""
    if args.beam is None:
        if args.length_norm is not None or args.stop is not None:
            raise _UsageError("sample: --length-norm and --stop go with --beam")
        return {}
    given = {"--temperature": args.temperature, "--top-k": args.top_k, "--top-p": args.top_p, "--seed": args.seed,
             "--num-samples": None if args.num_samples == 1 else args.num_samples}
    for flag, v in given.items():
        if v is not None:
            raise _UsageError(f"sample: --beam searches for the likeliest continuation; {flag} is for sampling")
    stop = args.stop
    if stop is not None:
        stop = {"\\n": "\n", "\\t": "\t"}.get(stop, stop)
        if len(stop) != 1:
            raise _UsageError(f"sample: --stop takes one character, got {args.stop!r}")
    return {"beam": args.beam, "length_norm": args.length_norm or 0.0, "stop": stop}


def cmd_sample(args):
    from .text import UnknownCharError, read_text_file
    from .lm.train import load_model
    model, vocab, _ = load_model(args.checkpoint, device=args.device)
    prompt, what = args.prompt, "--prompt"
    if args.prompt_file is not None:
        prompt, what = read_text_file(args.prompt_file), f"--prompt-file {args.prompt_file}"
    beam = _beam_options(args)
    sampling = {} if beam else {"temperature": 0.8 if args.temperature is None else args.temperature,
                                "top_k": args.top_k, "top_p": args.top_p}
    if beam and beam["stop"] is not None and beam["stop"] not in vocab:
        raise _UserError(f"--stop {args.stop!r}: the model has never seen that character")
    out = sys.stdout

    def stream(ch):  # as it is drawn: a long --length shows its progress
        out.write(ch)
        out.flush()

    for k in range(args.num_samples):
        if args.num_samples > 1:
            out.write(f"{'' if k == 0 else chr(10)}=== sample {k + 1} of {args.num_samples} ===\n")
        out.write(prompt)
        out.flush()
        try:
            model.generate(prompt, args.length, seed=None if args.seed is None else args.seed + k, stream=stream,
                           **sampling, **beam)
        except UnknownCharError as e:
            raise _UserError(f"{what}: {e} of this checkpoint") from None
        out.write("\n")
    out.flush()
    return 0


def _add_eval(sub):
    p = sub.add_parser("eval", help="validation loss and bits per character of a checkpoint",
                       description="Score a checkpoint on the validation part of its corpus, or of --data.")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--data", metavar="PATH", default=None,
                   help="a text file or directory; its last --val-fraction is scored (default: the run's corpus)")
    p.add_argument("--val-fraction", type=_fraction, default=None, help="(default: the run's)")
    p.add_argument("--skip-unknown", action="store_true",
                   help="leave out the characters the model has never seen (reported) instead of refusing the text")
    p.add_argument("--device", type=_device, default="cpu", help="(default cpu)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args):
    from .text import UnknownCharError, corpus_text, validation_text
    from .lm.train import TrainConfig, evaluate, load_model
    model, vocab, c = load_model(args.checkpoint, device=args.device)
    cfg = TrainConfig.from_dict(c.meta["config"])
    frac = args.val_fraction or cfg.val_fraction
    if args.data is not None:
        text, name = corpus_text(args.data)
    else:
        text, name = corpus_text(cfg.data, cfg.max_chars)
    val = validation_text(text, frac)
    if len(val) < 2:
        raise _UserError(f"{name}: its validation part ({len(val)} characters) is too short to score")
    unknown = vocab.unknown(val)
    record = {}
    if unknown:
        listed = ", ".join(f"{ch!r} x{n}" for ch, n in sorted(unknown.items(), key=lambda kv: -kv[1])[:20])
        count = sum(unknown.values())
        record["unknown_chars"] = {"count": count, "distinct": len(unknown), "chars": "".join(sorted(unknown))}
        if not args.skip_unknown:
            try:
                vocab.encode(val)
            except UnknownCharError as e:
                raise _UserError(f"{name}: its validation part has {count} character(s) the model has never seen, "
                                 f"{len(unknown)} distinct ({listed}); the first: {e} of this checkpoint; pass "
                                 f"--skip-unknown to score the text without them") from None
        print(f"note: skipping {count} character(s) the model has never seen, {len(unknown)} distinct: {listed}",
              file=sys.stderr)
        val = "".join(ch for ch in val if ch not in unknown)
        if len(val) < 2:
            raise _UserError(f"{name}: nothing is left to score once the unknown characters are skipped")
    ids = vocab.encode(val)
    loss, n = evaluate(model, ids)
    print(json.dumps({"checkpoint": c.path, "step": c.meta.get("step"), "data": name, "chars": n,
                      "val_loss": round(loss, 6), "val_bpc": round(loss / math.log(2), 6), **record}))
    return 0


def _add_export(sub):
    p = sub.add_parser("export", help="write a checkpoint's weights as safetensors, for PyTorch",
                       description="Write a checkpoint's weights as a .safetensors file with PyTorch's parameter "
                                   "names (embed.weight, rnn.weight_ih_l0, ..., head.weight, head.bias) and the "
                                   "model's configuration and vocabulary as metadata (needs the export extra).")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("out", metavar="OUT.safetensors")
    p.set_defaults(func=cmd_export)


def cmd_export(args):
    from .lm.export import ExportError, export_safetensors
    try:
        meta = export_safetensors(args.checkpoint, args.out)
    except ExportError as e:
        raise _UserError(str(e)) from None
    print(f"wrote {args.out}: {meta['cell']} {meta['layers']}x{meta['hidden']}, "
          f"{len(json.loads(meta['vocab']))} characters")
    return 0


def _add_plot(sub):
    p = sub.add_parser("plot", help="plot a run's loss curves as a PNG (needs matplotlib)",
                       description="Plot the train and validation loss of a run (its metrics.jsonl) as a PNG.")
    p.add_argument("run_dir", metavar="DIR")
    p.add_argument("--out", metavar="PNG", default=None, help="(default DIR/loss.png)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args):
    path = os.path.join(args.run_dir, "metrics.jsonl") if os.path.isdir(args.run_dir) else args.run_dir
    if not os.path.exists(path):
        raise _UserError(f"{args.run_dir}: no metrics.jsonl there (is it a run directory of `train`?)")
    steps, train, vsteps, val = [], [], [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                r = json.loads(line)
            except ValueError:
                raise _UserError(f"{path}: line {i} is not JSON") from None
            if r.get("train_loss") is not None and not r.get("final"):
                steps.append(r["step"])
                train.append(r["train_loss"])
            if r.get("val_loss") is not None:
                vsteps.append(r["step"])
                val.append(r["val_loss"])
    if not steps and not vsteps:
        raise _UserError(f"{path}: no losses recorded yet")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise _UserError("plot needs matplotlib, which is not installed: pip install 'tinygrad_rnn[plot]' "
                         "(or pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    if steps:
        ax.plot(steps, train, label="train", linewidth=1)
    if vsteps:
        ax.plot(vsteps, val, "o-", label="validation", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per character)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(os.path.basename(os.path.abspath(args.run_dir)))
    out = args.out or os.path.join(os.path.dirname(path), "loss.png")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(out)
    return 0


def _add_ngram(sub):
    p = sub.add_parser("ngram", help="the count-based n-gram baseline (add-k smoothing)",
                       description="Fit a character n-gram model with add-k smoothing on the training part "
                                   "and report validation loss in nats and bits per character.")
    p.add_argument("--data", metavar="PATH", default=None, help="(default: the stdlib corpus, as train uses)")
    p.add_argument("--max-chars", type=_positive_int, default=None, metavar="N")
    p.add_argument("--val-fraction", type=_fraction, default=0.1)
    p.add_argument("--order", type=_positive_int, default=5, help="n (default 5)")
    p.add_argument("--k", type=_positive_float, default=0.03, help="add-k smoothing constant (default 0.03)")
    p.set_defaults(func=cmd_ngram)


def cmd_ngram(args):
    from .text import load_corpus
    from .lm.ngram import evaluate
    corpus = load_corpus(args.data, args.max_chars, args.val_fraction)
    try:
        r = evaluate(corpus.train, corpus.val, len(corpus.vocab), args.order, args.k)
    except ValueError as e:
        raise _UserError(f"ngram: {e}") from None
    r = {"data": corpus.name, **r}
    print(f"{args.order}-gram, add-{args.k:g}: validation loss {r['val_loss']:.4f} nats/char = "
          f"{r['bpc']:.4f} bits/char ({r['n_val']:,} chars; trained on {r['n_train']:,})")
    return 0


class _UserError(Exception):
    """A problem to report in one line, exit code 1."""


class _UsageError(Exception):
    """Contradictory arguments that argparse cannot express: exit code 2."""


def build_parser():
    p = argparse.ArgumentParser(prog="tinygrad-rnn" if os.path.basename(sys.argv[0]) == "tinygrad-rnn"
                                else "python -m tinygrad_rnn",
                                description="Character-level language models on tinygrad_rnn: train, sample, "
                                            "evaluate, plot, and compare with an n-gram baseline.")
    from ._version import __version__
    p.add_argument("--version", action="version", version=f"tinygrad_rnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    _add_export(sub)
    _add_plot(sub)
    _add_ngram(sub)
    return p


def _abort_other_ranks(message):
    """Under mpiexec with several processes, an error in one would leave the others waiting in a
    collective for ever: end the whole job, naming this rank (a single process just returns)."""
    from . import distributed
    w = distributed._world
    if w is not None and w.size > 1:
        distributed.abort(message, EXIT_ERROR)


def main(argv=None) -> int:
    from .text import DataError
    from .lm.checkpoint import CheckpointError
    from .lm.train import TrainError
    parser = build_parser()
    args = parser.parse_args(argv)
    # as a command (python -m tinygrad_rnn, tinygrad-rnn: argv from sys.argv) a --minutes budget is
    # the whole process's wall time; main([...]) called from Python counts from here
    args.startup_s = process_age() if argv is None else 0.0
    prog = f"{parser.prog} {args.command}"
    from .backend import hold_freed_memory
    hold_freed_memory()  # this process is ours: keep freed buffers for the next step
    try:
        return args.func(args)
    except _UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    except (_UserError, DataError, CheckpointError, TrainError) as e:
        _abort_other_ranks(f"{prog}: error: {e}")
        print(f"{prog}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as e:  # e.g. --device cuda without CuPy or a GPU
        if "device" in str(e):
            print(f"{prog}: error: {e}", file=sys.stderr)
            return EXIT_ERROR
        raise
    except KeyboardInterrupt:
        _abort_other_ranks(f"{prog}: interrupted twice; the last checkpoint written (if any) is intact")
        print(f"\n{prog}: interrupted; the last checkpoint written (if any) is intact", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `... sample | head`
        try:
            sys.stdout = None
        finally:
            return 0


if __name__ == "__main__":
    sys.exit(main())
