"""Training a CharLM with truncated BPTT: the loop, evaluation, checkpoints and resuming.

Resuming is exact on the CPU: a run interrupted at step k and resumed computes the same
losses, bit for bit, as one that never stopped. A checkpoint therefore holds everything
the next step depends on: the weights, the optimizer's state, the data position, the
hidden state carried into the next window, and the device's random generator (dropout
masks). Evaluation and the samples printed along the way draw nothing from that
generator (evaluation runs without dropout; samples use their own NumPy Generator
seeded from the run's seed and the step), so how often they run does not change
training.

Ctrl-C finishes the step in flight, writes a checkpoint and returns with
`status == "interrupted"`; a second Ctrl-C stops at once, leaving the last checkpoint
(written atomically) as it was.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .._version import __version__
from .. import backend as B
from .. import distributed as dist
from .. import nn
from ..nn.utils import NonFiniteNormError, clip_grad_norm_
from .. import optim as optim_mod
from ..autograd import no_grad
from ..text import BPTTStream, CharVocab, DataError, batchify, load_corpus
from ..nn import functional as F
from . import checkpoint as ckpt
from .model import CharLM, detach_state, state_from_host, state_to_host

CHECKPOINT_NAME = "checkpoint.npz"
METRICS_NAME = "metrics.jsonl"
LN2 = math.log(2.0)

SCHEDULES = ("constant", "cosine", "step", "exp", "onecycle")
OPTIMIZERS = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop", "adagrad": "Adagrad", "sgd": "SGD"}
DEFAULT_LR = {"adam": 1e-2, "adamw": 1e-2, "rmsprop": 2e-3, "adagrad": 0.1, "sgd": 1.0}


class TrainError(Exception):
    """A run could not start or continue; the message says why in user terms."""


@dataclass
class TrainConfig:
    # data
    data: str | None = None            # a UTF-8 file or a directory; None: the stdlib corpus
    max_chars: int | None = None       # cap on the corpus (the stdlib corpus defaults to 1e6)
    val_fraction: float = 0.1
    # model
    cell: str = "lstm"
    hidden: int = 128                  # these defaults are also the command line's
    layers: int = 1
    embed_dim: int | None = None
    dropout: float = 0.0
    dtype: str = "float32"             # of the weights and the arithmetic: float32 or float64
    # the AWD-LSTM regularisers (CharLM's arguments of the same names; these defaults: off)
    proj_size: int = 0                 # LSTM projections: the last layer's output size, if > 0
    dropout_input: float = 0.0         # on the recurrent layers' input
    dropout_hidden: float | None = None  # between layers; None: dropout
    dropout_output: float | None = None  # before the head; None: dropout
    locked_dropout: bool = False       # the three above with one mask per sequence for all steps
    weight_drop: float = 0.0           # DropConnect on the hidden-to-hidden weights
    embed_dropout: float = 0.0         # whole embedding rows (characters)
    tie_weights: bool = False          # the head's weight is the embedding matrix
    # optimisation
    seq_len: int = 64
    batch: int = 32
    optimizer: str = "adam"
    lr: float | None = None            # None: DEFAULT_LR[optimizer]
    clip: float | None = 5.0           # max global gradient norm; None or 0: no clipping
    lr_decay: float = 1.0              # the learning rate is lr * lr_decay ** epoch (epochs of the train text)
    schedule: str = "constant"         # constant, cosine, step, exp, onecycle: a function of the step
    warmup: int = 0                    # steps of linear warm-up before the schedule
    seed: int = 0
    # budget: totals for the run (a resumed run counts what it did before)
    steps: int | None = None
    minutes: float | None = None
    schedule_steps: int | None = None  # the steps a --minutes run fixed for its schedule (see _SchedulePlan)
    # where and how often
    device: str = "cpu"
    eval_every: int = 200
    eval_chars: int | None = None      # periodic evaluations score this much of validation (None: all)
    sample_every: int | None = None    # None: with each evaluation
    sample_length: int = 200
    log_every: int = 10
    save_every: int | None = None      # None: with each evaluation

    # what a resumed run must keep (changing them would make it a different run)
    FROZEN = ("data", "max_chars", "val_fraction", "cell", "hidden", "layers", "embed_dim", "dropout",
              "seq_len", "batch", "optimizer", "lr", "clip", "lr_decay", "seed", "dtype", "schedule", "warmup",
              "proj_size", "dropout_input", "dropout_hidden", "dropout_output", "locked_dropout", "weight_drop",
              "embed_dropout", "tie_weights", "schedule_steps")
    REGULARISERS = ("proj_size", "dropout_input", "dropout_hidden", "dropout_output", "locked_dropout",
                    "weight_drop", "embed_dropout", "tie_weights")

    def model_kwargs(self) -> dict:
        return {"cell": self.cell, "hidden": self.hidden, "layers": self.layers, "dropout": self.dropout,
                "embed_dim": self.embed_dim, **{k: getattr(self, k) for k in self.REGULARISERS}}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def _regulariser_problems(self) -> list:
        out = []
        for name in ("dropout_input", "dropout_hidden", "dropout_output", "weight_drop", "embed_dropout"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0):
                out.append(f"{name} must be in [0, 1), got {v!r}")
        if not isinstance(self.proj_size, int) or isinstance(self.proj_size, bool) or self.proj_size < 0:
            out.append(f"proj_size must be a non-negative integer, got {self.proj_size!r}")
        elif self.proj_size and (self.cell != "lstm" or self.proj_size >= self.hidden):
            out.append(f"proj_size needs cell 'lstm' and a size below hidden ({self.hidden}), got "
                       f"proj_size={self.proj_size} with cell {self.cell!r}")
        if self.weight_drop and self.cell not in ("lstm", "gru", "rnn", "lnlstm"):
            out.append(f"weight_drop needs cell lstm, gru, rnn or lnlstm (hidden-to-hidden weights), not {self.cell!r}")
        for name in ("embed_dropout", "tie_weights"):
            if getattr(self, name) and not self.embed_dim:
                out.append(f"{name} needs a learned embedding (embed_dim); one-hot input has none")
        if self.tie_weights and self.embed_dim and self.embed_dim != (self.proj_size or self.hidden):
            out.append(f"tie_weights needs embed_dim ({self.embed_dim}) equal to the last layer's output size "
                       f"({'proj_size' if self.proj_size else 'hidden'} {self.proj_size or self.hidden})")
        return out

    def validate(self) -> None:
        from .model import available_cells
        problems = []
        if self.cell not in available_cells():
            problems.append(f"cell {self.cell!r} is not one of {', '.join(available_cells())}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer {self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        for name in ("hidden", "layers", "seq_len", "batch", "eval_every", "log_every", "sample_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                problems.append(f"{name} must be a positive integer, got {v!r}")
        for name in ("embed_dim", "steps", "max_chars", "sample_every", "save_every", "eval_chars", "schedule_steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                problems.append(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        problems += self._regulariser_problems()
        if self.dtype not in ("float32", "float64"):
            problems.append(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not 0.0 < self.val_fraction < 1.0:
            problems.append(f"val_fraction must be between 0 and 1, got {self.val_fraction}")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if not 0.0 < self.lr_decay <= 1.0:
            problems.append(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule {self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        elif self.schedule != "constant" and self.steps is None and self.minutes is None \
                and self.schedule_steps is None:
            problems.append(f"schedule {self.schedule!r} needs a number of steps (--steps) or a time budget "
                            f"(--minutes) to fit its steps into: it is a function of the step, over the whole run")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            problems.append(f"warmup must be a non-negative integer, got {self.warmup!r}")
        elif self.steps is not None and self.warmup >= self.steps:
            problems.append(f"warmup ({self.warmup} steps) must be shorter than the run ({self.steps} steps)")
        if self.clip is not None and self.clip < 0:
            problems.append(f"clip must be non-negative, got {self.clip}")
        if self.minutes is not None and not self.minutes > 0:
            problems.append(f"minutes must be positive, got {self.minutes}")
        if problems:
            raise TrainError("bad training configuration: " + "; ".join(problems))

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]


class _OneGroup:
    """A stand-in optimizer of one group at rate 1: what the schedulers' closed forms run on,
    to give the run's rate factor as a function of the step."""

    def __init__(self):
        self.param_groups = [{"lr": 1.0}]


def lr_factor(cfg):
    """step -> the factor on the learning rate at that step (0-based): --warmup w steps rising
    linearly, (t + 1) / (w + 1), then --schedule over the remaining steps (lr_scheduler's formulas):
    cosine to 0; step halves it at each quarter; exp falls to 1% by the end; onecycle is
    OneCycleLR with max_lr = --lr. None for a constant rate without warm-up.

    The run's length is cfg.schedule_steps where a time budget fixed it, else cfg.steps. While
    neither is known (a --minutes run still measuring its step time) the factor after the
    warm-up is the schedule's starting value, which every schedule's formula gives whatever
    its length."""
    from ..optim import lr_scheduler as L
    if cfg.schedule == "constant" and not cfg.warmup:
        return None
    w = cfg.warmup
    total = cfg.schedule_steps if cfg.schedule_steps is not None else cfg.steps
    span = (total - w) if total is not None else None
    o = _OneGroup()
    n = span if span is not None else 1000  # only its value at 0 is used, the same for any length
    main = {"constant": lambda: L.LambdaLR(o, lambda t: 1.0),
            "cosine": lambda: L.CosineAnnealingLR(o, T_max=n),
            "step": lambda: L.StepLR(o, step_size=max(1, n // 4), gamma=0.5),
            "exp": lambda: L.ExponentialLR(o, gamma=0.01 ** (1.0 / n)),
            "onecycle": lambda: L.OneCycleLR(o, max_lr=1.0, total_steps=n + 1)}[cfg.schedule]()
    after = (lambda t: main.lr_at(t)[0]) if span is not None else (lambda t, f0=main.lr_at(0)[0]: f0)
    if not w:
        return after
    warm = L.LinearLR(_OneGroup(), start_factor=1.0 / (w + 1), end_factor=1.0, total_iters=w)  # (t + 1) / (w + 1)
    return lambda t: warm.lr_at(t)[0] if t < w else after(t - w)


def make_optimizer(name, params, lr):
    cls = getattr(optim_mod, OPTIMIZERS[name], None)
    if cls is None:
        raise TrainError(f"optimizer {name!r} needs tinygrad_rnn.optim.{OPTIMIZERS[name]}, which this version lacks")
    return cls(params, lr=lr)


# ----------------------------------------------------------------------------- evaluation
def evaluate(model, ids, batch=32, seq_len=128, should_stop=None):
    """Mean cross-entropy (nats/char) of the model over `ids`, and the number of chars scored.

    The ids are cut into at most `batch` rows (each at least 128 characters long when the
    text allows), read window by window with the state carried, in eval mode under
    no_grad. Under MPI the rows are shared out over the ranks and the sums reduced, so
    every rank returns the same figure as one process would. Returns (None, n) if
    `should_stop()` turns true midway.
    """
    ids = np.asarray(ids)
    batch = max(1, min(batch, len(ids) // 128))
    return _score_rows(model, batchify(ids, batch), 0, seq_len, should_stop)


def spread_windows(n, chars, rows=32, context=64):
    """Where the periodic validation estimate reads a validation text of n ids: `rows` windows
    of `length` predicted characters (rows * length >= chars), evenly spaced from the start of
    the text to its end, each read after the `context` characters before it (run through the
    model, not scored), so that its first characters are predicted with the context they have
    in the text rather than from a cold state. Returns (the windows' first positions, length),
    or None where the windows would leave nothing out (then score the whole text)."""
    rows = max(1, min(rows, chars))
    length = -(-chars // rows)
    span = n - 1 - context  # the positions that can be predicted after a full context
    if rows * length >= span:
        return None
    gap = span - length  # the last window ends at the text's last character
    starts = [context + (i * gap) // (rows - 1) if rows > 1 else context for i in range(rows)]
    return starts, length


def evaluate_windows(model, ids, starts, length, context=64, seq_len=128, should_stop=None):
    """evaluate() over the windows of spread_windows: (mean nats/char, chars scored), or (None, n)."""
    ids = np.asarray(ids)
    rows = np.stack([ids[s - context:s + length + 1] for s in starts])
    return _score_rows(model, rows, context, seq_len, should_stop)


def _score_rows(model, rows, skip, seq_len, should_stop):
    """The mean cross-entropy of predicting rows[:, t + 1] from rows[:, :t + 1] for t >= skip
    (the first `skip` positions only carry the state), each row from a zero state, read in
    windows of seq_len in eval mode under no_grad, the rows shared out over MPI ranks."""
    n, r = dist.world_size(), dist.rank()
    B, W = rows.shape
    mine = rows[B * r // n:B * (r + 1) // n]
    starts = ([0] if skip else []) + list(range(skip, W - 1, seq_len))
    was_training = model.training
    model.eval()
    total, count, state, stopped = 0.0, 0, None, False
    try:
        with no_grad():
            for a, b in zip(starts, starts[1:] + [W - 1]):
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                if mine.shape[0] == 0:  # more ranks than rows
                    continue
                x, y = np.ascontiguousarray(mine[:, a:b].T), np.ascontiguousarray(mine[:, a + 1:b + 1].T)
                logits, state = model(x, state)
                if a < skip:
                    continue
                T, Bn, V = logits.shape
                loss = F.cross_entropy(logits.reshape(T * Bn, V), y.reshape(-1), reduction="sum")
                total += float(loss.item())
                count += T * Bn
    finally:
        model.train(was_training)
    if n > 1:
        total, count = dist.all_reduce_scalar(total), dist.all_reduce_scalar(count)
        stopped = bool(dist.all_reduce_scalar(int(stopped), op="max"))
    if stopped:
        return None, count
    return total / count, count


# ----------------------------------------------------------------------------- progress display
class _Progress:
    """A tqdm bar when tqdm is installed and stderr is a terminal, else a plain line now and then."""

    def __init__(self, total, initial, mode="auto", echo=print):
        self.echo = echo
        self.bar = None
        self.last_line = time.perf_counter()
        if mode in ("auto", "bar"):
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None and (mode == "bar" or sys.stderr.isatty()):
                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                                leave=True)
        self.quiet = mode == "none"

    def update(self, step, loss, tok_s, elapsed):
        # loss None: the step left it on the device (Run.lazy), read at the next metrics line
        if self.bar is not None:
            shown = "loss ..." if loss is None else f"loss {loss:.3f}"
            self.bar.set_postfix_str(f"{shown}, {tok_s:,.0f} tok/s", refresh=False)
            self.bar.update(1)
        elif not self.quiet and time.perf_counter() - self.last_line >= 10.0:
            self.last_line = time.perf_counter()
            shown = "   ..." if loss is None else f"{loss:.4f}"
            self.echo(f"step {step:>6} | loss {shown} | {tok_s:>8,.0f} tok/s | {_fmt_time(elapsed)}")

    def write(self, msg):
        if self.bar is not None:
            self.bar.write(msg, file=sys.stdout)
        else:
            self.echo(msg)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _fmt_time(s):
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


# ----------------------------------------------------------------------------- Ctrl-C
class _StopFlag:
    """The first SIGINT asks the loop to stop after the step in flight; the second one raises."""

    def __init__(self, echo):
        self.requested = False
        self.echo = echo
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.echo("\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to quit without saving)")

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False

    def __call__(self):
        return self.requested


# ----------------------------------------------------------------------------- checkpoints
def load_model(path, device=None):
    """(model, vocab, checkpoint) from a checkpoint file or a run directory, on `device`
    (default: the device it was trained on, or the CPU if that one is not available)."""
    c = ckpt.load(path)
    meta = c.meta
    try:
        cfg = TrainConfig.from_dict(meta["config"])
        vocab = CharVocab.from_dict(meta["vocab"])
    except (KeyError, TypeError, DataError) as e:
        raise ckpt.CheckpointError(f"{c.path}: the checkpoint's metadata is incomplete ({e})") from None
    if device is None:
        device = "cpu"
    B.get_device(device)
    model = CharLM(vocab, dtype=meta.get("dtype"), device=device, **cfg.model_kwargs())
    try:
        model.load_state_dict(c.model_state)
    except nn.StateDictError as e:
        raise ckpt.CheckpointError(f"{c.path}: the weights do not fit the model it describes ({e})") from None
    return model, vocab, c


def _write_metrics(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path, step):
    """Keep the lines up to `step`: a run that died after its last checkpoint logged steps
    the resumed run will do again."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except ValueError:
                continue
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(keep)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    status: str                       # "done", "interrupted"
    step: int
    out_dir: str
    checkpoint: str
    train_loss: float | None = None
    val_loss: float | None = None
    val_bpc: float | None = None
    tok_s: float | None = None       # average over this invocation's training steps
    elapsed: float = 0.0
    sample: str | None = None
    losses: list = field(default_factory=list)


class _Mean:
    """A running mean of the training losses since the last metrics line."""

    def __init__(self, total=0.0, count=0):
        self.total, self.count = float(total), int(count)

    def add(self, v):
        self.total += v
        self.count += 1

    def take(self):
        """The mean so far (None if empty), and start again."""
        m = self.total / self.count if self.count else None
        self.total, self.count = 0.0, 0
        return m

    def to_list(self):
        return [self.total, self.count]


def _check_loss(lv, n):
    if not math.isfinite(lv):
        raise TrainError(f"the loss became {lv} at step {n}; the last checkpoint is intact: "
                         f"lower --lr (or use --clip) and start again")


def _check_norm(norm, lv, n):
    if not math.isfinite(norm):
        raise TrainError(f"the gradients became infinite or NaN at step {n} (loss {lv:.4g}); the last "
                         f"checkpoint is intact: lower --lr, or --clip, and start again")


class Run:
    """One training run: the model, its optimizer, the data stream and the counters, with
    the steps a reader expects: Run.start or Run.resume, step(), evaluate(), save().
    train() drives it: the budget, progress lines, metrics, samples and checkpoints."""

    clock = staticmethod(time.perf_counter)  # the run's wall clock (tests give it a fake one)

    def __init__(self, cfg: TrainConfig, out_dir: str, saved=None, echo=print):
        self.cfg, self.out_dir, self.echo = cfg, out_dir, echo
        self.ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
        self.metrics_path = os.path.join(out_dir, METRICS_NAME)
        self.corpus = corpus = load_corpus(cfg.data, cfg.max_chars, cfg.val_fraction)
        if saved is not None and saved.meta.get("corpus_sha256") != corpus.fingerprint:
            raise TrainError(f"--resume: the corpus ({corpus.name}) is not the text the run was trained on "
                             f"(its SHA-256 differs from the checkpoint's)")
        self.vocab = corpus.vocab
        # data parallel under mpiexec: each rank takes its rows of every window (a world of one
        # takes them all); the gradients are averaged, so every rank takes the same step
        self.world = dist.init()
        device, note = dist.rank_device(cfg.device)  # under mpiexec, 'cuda' is this rank's own GPU
        self.device = B.get_device(device)
        if note and dist.is_main():
            echo(f"note: {note}")
        n, r = self.world.size, self.world.rank
        if cfg.batch % n:
            raise TrainError(f"--batch {cfg.batch} is not divisible by the {n} processes of this MPI job: each "
                             f"process takes batch / {n} rows; give a multiple of {n}")
        self.rows = slice(cfg.batch // n * r, cfg.batch // n * (r + 1))
        B.manual_seed(cfg.seed + r)  # the weights come from rank 0 below; dropout draws differ per rank
        self.model = CharLM(self.vocab, device=self.device, dtype=cfg.dtype, **cfg.model_kwargs())
        self.lr = cfg.learning_rate
        self.lr_factor = lr_factor(cfg)
        self.params = list(self.model.parameters())
        dist.broadcast_parameters(self.params)
        self.opt = make_optimizer(cfg.optimizer, self.params, self.lr)
        try:
            self.stream = BPTTStream(corpus.train, cfg.batch, cfg.seq_len)
        except DataError as e:
            raise TrainError(f"{corpus.name}: {e}") from None
        self.step_count, self.elapsed_before, self.tokens_seen, self.state = 0, 0.0, 0, None
        self.window = _Mean()
        self.losses = []  # of this invocation's steps, in order (TrainResult.losses)
        # on a device where reading a value back is a host synchronisation (CUDA), each step's
        # loss and clipping norm stay on the device until the next metrics line or checkpoint
        # reads them all at once (flush): one synchronisation per metrics line, not ~8 a step
        self.lazy = self.device.reads_sync
        self._pending = []  # (step, loss, clipping norm or None): device scalars not read yet
        self.side_seconds = 0.0  # spent in evaluations, samples and checkpoints (not steps): _SchedulePlan
        self.reserve_s = 0.0  # what the end of the run will take once the steps stop (priced by _SchedulePlan)
        self._windows = None  # the periodic estimate's rows of validation (estimate_val), made once
        if saved is not None:
            self._restore(saved)
        self.t_start = self.clock()
        self._spent = self._budget_spent()

    # ------------------------------------------------------------------ start or resume
    @classmethod
    def start(cls, cfg, out_dir, overwrite=False, echo=print):
        ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
        if os.path.exists(ckpt_path) and not overwrite:
            raise TrainError(f"{out_dir} already holds a checkpoint; pass --resume to continue it, "
                             f"--overwrite to start afresh there, or --out DIR for a new run")
        cls._check(cfg)
        run = cls(cfg, out_dir, None, echo)
        if dist.is_main():
            os.makedirs(out_dir, exist_ok=True)
            if os.path.exists(run.metrics_path):
                os.remove(run.metrics_path)
        return run

    @classmethod
    def resume(cls, cfg, out_dir, explicit=(), echo=print):
        """The run saved in out_dir, with the settings given now (explicit) where they may change."""
        ckpt_path = os.path.join(out_dir, CHECKPOINT_NAME)
        if not os.path.exists(ckpt_path):
            raise TrainError(f"--resume: {out_dir} holds no checkpoint ({CHECKPOINT_NAME}) to continue")
        saved = ckpt.load(ckpt_path)
        if saved.meta.get("optimizer_state_unreadable"):
            raise TrainError(f"--resume: {ckpt_path} keeps its optimizer state in the layout of "
                             f"{saved.meta['optimizer_state_unreadable']}, which this tinygrad_rnn no longer reads: "
                             f"the model still samples, evaluates and exports, but the run cannot continue")
        try:
            old = TrainConfig.from_dict(saved.meta["config"])
        except (KeyError, TypeError) as e:
            raise ckpt.CheckpointError(f"{ckpt_path}: the checkpoint's metadata is incomplete ({e})") from None
        changed = [k for k in TrainConfig.FROZEN if k in explicit and getattr(cfg, k) != getattr(old, k)]
        if changed:
            raise TrainError("--resume continues the saved run, whose " + ", ".join(
                f"{k} is {getattr(old, k)!r} (not {getattr(cfg, k)!r})" for k in changed)
                + "; leave those options out, or start a new run with another --out")
        # the saved run's settings, except those given now (and allowed to change)
        for f in dataclasses.fields(TrainConfig):
            if f.name in TrainConfig.FROZEN or f.name not in explicit:
                setattr(cfg, f.name, getattr(old, f.name))
        if "steps" in explicit and "minutes" not in explicit:
            cfg.minutes = None
        if "minutes" in explicit and "steps" not in explicit:
            cfg.steps = None
        cls._check(cfg)
        run = cls(cfg, out_dir, saved, echo)
        if dist.is_main():
            _truncate_metrics(run.metrics_path, run.step_count)
        return run

    @staticmethod
    def _check(cfg):
        cfg.validate()
        if cfg.steps is None and cfg.minutes is None:
            raise TrainError("give the run a budget: steps or minutes")

    def _restore(self, saved):
        m = saved.meta
        try:
            self.model.load_state_dict(saved.model_state)
            if saved.optim_state is not None:
                self.opt.load_state_dict(saved.optim_state)
            self.step_count, self.elapsed_before = int(m["step"]), float(m["elapsed"])
            self.tokens_seen = int(m["tokens_seen"])
            self.stream.position = m["data_position"]
            self.window = _Mean(*m.get("loss_acc", [0.0, 0]))
            hidden = saved.hidden  # the whole batch's rows: this rank takes its own
            if hidden is not None:
                hidden = tuple(h[:, self.rows] for h in hidden) if isinstance(hidden, tuple) else hidden[:, self.rows]
            self.state = state_from_host(hidden, self.device, self.model.dtype)
        except (KeyError, TypeError, ValueError, DataError, nn.StateDictError) as e:
            raise ckpt.CheckpointError(f"{self.ckpt_path}: cannot continue from this checkpoint "
                                       f"({type(e).__name__}: {e})") from None
        rng = m.get("rng", {})
        states = rng.get("ranks", [rng.get("state")])  # one random state per process of the saved run
        n = self.world.size
        if len(states) != n and self.cfg.dropout > 0:
            raise TrainError(f"--resume: this run was trained by {len(states)} process(es) with dropout, whose masks "
                             f"come from each process's own random state; resume it with {len(states)} "
                             f"(mpiexec -n {len(states)}), not {n}")
        if self.device.per_step_rng and str(rng.get("device", "")).split(":")[0] == self.device.kind:
            pass  # each step reseeds from (seed, rank, step): nothing to restore, on whichever GPU
        elif rng.get("device") == self.device.name and len(states) == n:
            self.device.set_rng_state(states[self.world.rank])
        elif self.cfg.dropout > 0:
            self.echo(f"note: the checkpoint's random state is for {rng.get('device')}, not {self.device.name}: "
                      f"dropout masks will not repeat the interrupted run's")

    # ------------------------------------------------------------------ the steps
    def elapsed(self):
        return self.elapsed_before + self.clock() - self.t_start

    def _budget_spent(self):
        cfg = self.cfg
        spent = (cfg.steps is not None and self.step_count >= cfg.steps) or \
            (cfg.schedule_steps is not None and self.step_count >= cfg.schedule_steps) or \
            (cfg.minutes is not None and self.elapsed() + self.reserve_s >= cfg.minutes * 60)
        # one decision for all ranks (their clocks differ), taken once per step
        return bool(dist.all_reduce_scalar(int(spent), op="max")) if self.world.size > 1 else spent

    def out_of_budget(self):
        """Whether the budget was spent as of the last step (the same answer on every rank)."""
        return self._spent

    def step(self):
        """One optimizer step on the next window; returns (its loss, the tokens it read)."""
        cfg = self.cfg
        if cfg.lr_decay != 1.0 or self.lr_factor is not None:
            # a function of the step and the data position alone, so a resumed run follows the same schedule
            lr = self.lr * cfg.lr_decay ** self.stream.epoch
            if self.lr_factor is not None:
                lr *= self.lr_factor(self.step_count)
            for group in self.opt.param_groups:
                group["lr"] = lr
        x, y, reset = self.stream.next()
        if reset:
            self.state = None
        tokens = x.size  # the whole batch's, over all ranks
        x, y = x[:, self.rows], y[:, self.rows]
        self.device.step_seed(cfg.seed, self.world.rank, self.step_count)  # CUDA: this step's dropout draws
        n = self.step_count + 1
        if self.lazy:
            return self._lazy_step(x, y, n, tokens)
        loss, state = self.model.loss(x, y, self.state)
        lv = float(loss.item())
        if self.world.size > 1:  # equal shares: the mean of the ranks' means is the batch mean
            lv = dist.all_reduce_scalar(lv) / self.world.size
        _check_loss(lv, n)
        self.opt.zero_grad()
        loss.backward()
        dist.all_reduce_gradients(self.params)  # a no-op in a world of one
        if cfg.clip:
            try:
                clip_grad_norm_(self.params, cfg.clip)
            except NonFiniteNormError:
                raise TrainError(f"the gradients became infinite or NaN at step {n} (loss {lv:.4g}); the last "
                                 f"checkpoint is intact: lower --lr, or --clip, and start again") from None
        self.opt.step()
        self.state = detach_state(state)
        self.step_count = n
        self.tokens_seen += tokens
        self.window.add(lv)
        self.losses.append(lv)
        self._spent = self._budget_spent()
        return lv, tokens

    def _lazy_step(self, x, y, n, tokens):
        """step() where reading a value back synchronises: the ids checked on the host, the
        loss and the clipping norm (clipped without a read) left on the device for flush();
        the loss returned is None."""
        cfg, V = self.cfg, len(self.vocab)
        for ids in (x, y):
            if ids.size and (ids.min() < 0 or ids.max() >= V):
                raise TrainError(f"step {n}: an id of the window is outside the vocabulary of {V}")
        with B.indices_checked(self.device):
            loss, state = self.model.loss(x, y, self.state)
        self.opt.zero_grad()
        loss.backward()
        dist.all_reduce_gradients(self.params)
        norm = None
        if cfg.clip:
            norm = clip_grad_norm_(self.params, cfg.clip, error_if_nonfinite=False, sync=False).data
        self.opt.step()
        self.state = detach_state(state)
        self.step_count = n
        self.tokens_seen += tokens
        self._pending.append((n, loss.data, norm))
        self._spent = self._budget_spent()
        return None, tokens

    def flush(self):
        """Read the losses and norms that lazy steps left on the device, in one transfer, into
        the metrics window and self.losses, checking each as step() does on the CPU. A NaN
        found here may already be in the weights, but no checkpoint has them: save() flushes
        first. Returns the last loss (None if nothing was pending)."""
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        dev = self.device
        xp = dev.xp
        arrays = [a for _, loss, norm in pending for a in ((loss,) if norm is None else (loss, norm))]
        host = iter(np.asarray(dev.to_host(xp.astype(xp.stack(arrays), dev.native(B.float64))), np.float64).tolist())
        lv = None
        for n, _, norm in pending:
            lv = next(host)
            gn = None if norm is None else next(host)
            if self.world.size > 1:
                lv = dist.all_reduce_scalar(lv) / self.world.size
            _check_loss(lv, n)
            if gn is not None:
                _check_norm(gn, lv, n)
            self.window.add(lv)
            self.losses.append(lv)
        return lv

    def _side(self, fn, *args, **kw):
        t = self.clock()
        try:
            return fn(*args, **kw)
        finally:
            self.side_seconds += self.clock() - t

    def evaluate(self, ids=None, should_stop=None):
        """(mean loss in nats/char, chars scored) over ids (default: all of validation)."""
        return self._side(evaluate, self.model, self.corpus.val if ids is None else ids, EVAL_BATCH,
                          should_stop=should_stop)

    def estimate_val(self, should_stop=None):
        """The periodic validation: (mean loss, chars scored, whether it is an estimate). With
        --eval-chars, windows spread evenly over the whole validation text (spread_windows),
        the same ones at every evaluation; without, or where they would cover it, all of it."""
        val, chars = self.corpus.val, self.cfg.eval_chars
        if self._windows is None:
            self._windows = (chars is not None and spread_windows(len(val), chars, EVAL_BATCH, EVAL_CONTEXT)) or ()
        if not self._windows:
            return (*self.evaluate(should_stop=should_stop), False)
        starts, length = self._windows
        vl, n = self._side(evaluate_windows, self.model, val, starts, length, EVAL_CONTEXT, should_stop=should_stop)
        return vl, n, True

    def sample(self, length, seed):
        return self._side(self.model.generate, "", length, temperature=0.8, seed=seed)

    def save(self):
        """Write the checkpoint (atomically, by rank 0 alone): under MPI it holds what every
        rank needs, the whole batch's hidden state and each rank's random state."""
        self.flush()  # a NaN still on the device must stop the run before it reaches a checkpoint
        self._side(self._save)

    def _save(self):
        hidden, rng_state = state_to_host(self.state), self.device.get_rng_state()
        if self.world.size > 1:  # collective: every rank hands its rows and random state to rank 0
            hiddens = self.world.comm.gather(hidden, root=0)
            rng_states = self.world.comm.gather(rng_state, root=0)
            if not dist.is_main():
                return
            if hidden is not None:
                hidden = (tuple(np.concatenate([h[k] for h in hiddens], axis=1) for k in range(len(hidden)))
                          if isinstance(hidden, tuple) else np.concatenate(hiddens, axis=1))
        else:
            rng_states = [rng_state]
        meta = {"config": self.cfg.to_dict(), "vocab": self.vocab.to_dict(), "corpus": self.corpus.name,
                "corpus_sha256": self.corpus.fingerprint, "step": self.step_count, "elapsed": self.elapsed(),
                "tokens_seen": self.tokens_seen, "data_position": self.stream.position,
                "loss_acc": self.window.to_list(),
                "rng": {"device": self.device.name, "state": rng_states[0], "ranks": rng_states},
                "processes": self.world.size,
                "dtype": self.model.dtype.name, "tinygrad_rnn": __version__,
                "sampler": "samples during training draw from numpy default_rng([seed, step])"}
        ckpt.save(self.ckpt_path, meta=meta, model_state=self.model.state_dict(), optim_state=self.opt.state_dict(),
                  hidden=hidden)

    def describe(self, resumed):
        cfg, corpus = self.cfg, self.corpus
        n_params = sum(p.numel() for p in self.params)
        self.echo(f"corpus: {corpus.name}: {len(corpus.text):,} chars, {len(self.vocab)} distinct; "
                  f"train {len(corpus.train):,} / validation {len(corpus.val):,}")
        procs = f" x {self.world.size} processes (data parallel)" if self.world.size > 1 else ""
        self.echo(f"model: {cfg.cell} {cfg.layers}x{cfg.hidden}, {n_params:,} parameters on {self.device.name}{procs}; "
                  f"{cfg.optimizer} lr {self.lr:g}" + (f" x {cfg.lr_decay:g}^epoch" if cfg.lr_decay != 1.0 else "")
                  + (f", {cfg.schedule} schedule" if cfg.schedule != "constant" else "")
                  + (f" after {cfg.warmup} warm-up steps" if cfg.warmup else "")
                  + f", batch {cfg.batch} x seq_len {cfg.seq_len}")
        budget = []
        if cfg.steps is not None:
            budget.append(f"{cfg.steps} steps")
        if cfg.schedule_steps is not None:
            budget.append(f"the {cfg.schedule_steps} steps the time budget fixed for the schedule")
        if cfg.minutes is not None:
            budget.append(f"{cfg.minutes:g} minutes")
        self.echo(("resuming at step %d; " % self.step_count if resumed else "") + "budget: " + " or ".join(budget)
                  + f"; writing to {self.out_dir}")


EVAL_BATCH = 32
EVAL_CONTEXT = 64  # characters read before each window of the periodic estimate, unscored


def train(cfg: TrainConfig, out_dir: str, resume: bool = False, overwrite: bool = False, echo=print,
          progress: str = "auto", final_sample_length: int = 300, explicit=(), startup_s: float = 0.0) -> TrainResult:
    """Train (or, with resume, continue) a CharLM as `cfg` says, writing into out_dir:
    checkpoint.npz and metrics.jsonl. `explicit` names the config fields the caller set:
    a resumed run takes every other field from the checkpoint, and refuses changes to
    those that shape the model, the data or the optimizer (TrainConfig.FROZEN).
    startup_s: seconds spent before this call (the command line: since its process
    started), counted against --minutes with the time train() spends reading the corpus
    and building the model, so a budget is the whole invocation's wall time."""
    out_dir = os.fspath(out_dir)
    if not dist.is_main():  # under MPI, rank 0 alone prints and writes metrics
        echo, progress = (lambda *a, **k: None), "none"
    called = Run.clock()
    run = Run.resume(cfg, out_dir, explicit, echo) if resume else Run.start(cfg, out_dir, overwrite, echo)
    run.t_start = called - max(0.0, startup_s)
    cfg = run.cfg
    run.describe(resumed=resume)
    result = TrainResult("done", run.step_count, out_dir, run.ckpt_path)
    result.losses = run.losses  # filled by each step, or by run.flush() where steps keep them on the device
    prog = _Progress(cfg.steps or cfg.schedule_steps, run.step_count, progress, echo)
    plan = _SchedulePlan(run, final_sample_length) if _SchedulePlan.needed(cfg) else None
    with _StopFlag(prog.write) as local_stop:
        def stop():  # Ctrl-C in any rank stops them all, after the same step
            s = local_stop()
            return bool(dist.all_reduce_scalar(int(s), op="max")) if run.world.size > 1 else s
        try:
            speed = _run_steps(run, prog, result, stop, local_stop, plan)
        finally:
            prog.close()
        interrupted = stop()
        step = result.step = run.step_count
        run.save()
        if interrupted:
            result.status = "interrupted"
            echo(f"checkpoint saved at step {step}: {run.ckpt_path}\n"
                 f"continue with: --resume --out {out_dir}")
            result.elapsed = run.elapsed()
            return result
        _final_evaluation(run, result, speed, stop, echo)
        if dist.is_main() and final_sample_length and not local_stop():
            result.sample = run.sample(final_sample_length, [cfg.seed, step, 1])
            echo("--- sample ---\n" + result.sample + "\n---")
        echo(f"checkpoint: {run.ckpt_path}")
    return result


def _run_steps(run, prog, result, stop, local_stop, plan=None):
    """Step until the budget is spent or a stop is asked for, with the progress display, the
    metrics lines (and evaluations), samples and checkpoints along the way. Returns the
    tokens and seconds of this invocation's steps, for the average speed."""
    cfg = run.cfg
    sample_every = cfg.sample_every or cfg.eval_every
    save_every = cfg.save_every or cfg.eval_every
    window_tokens, window_time = 0, 0.0  # since the last metrics line
    run_tokens, run_train_time = 0, 0.0
    main = dist.is_main()
    while not run.out_of_budget() and not stop():
        t0 = run.clock()
        lv, tokens = run.step()
        dt = run.clock() - t0
        step = run.step_count
        window_tokens += tokens
        window_time += dt
        run_tokens += tokens
        run_train_time += dt
        tok_s = window_tokens / window_time if window_time > 0 else 0.0
        prog.update(step, lv, tok_s, run.elapsed())
        is_eval = step % cfg.eval_every == 0
        if step % cfg.log_every == 0 or is_eval:
            _log_metrics(run, prog, step, tok_s, is_eval, stop)
            window_tokens, window_time = 0, 0.0
        if main and step % sample_every == 0 and not run.out_of_budget() and not local_stop():
            prog.write("--- sample ---\n" + run.sample(cfg.sample_length, [cfg.seed, step]) + "\n---")
        if step % save_every == 0 and not run.out_of_budget():
            run.save()
        if plan is not None and plan.after_step(prog, stop):
            plan = None
    return run_tokens, run_train_time


def _log_metrics(run, prog, step, tok_s, is_eval, stop):
    """A metrics line: the mean training loss since the previous one and, at an evaluation
    step, the validation loss (skipped once the budget is spent: the final evaluation follows)."""
    cfg = run.cfg
    run.flush()
    rec = {"step": step, "train_loss": run.window.take(), "val_loss": None, "val_bpc": None,
           "tok_s": tok_s, "elapsed": round(run.elapsed(), 3), "tokens": run.tokens_seen,
           "lr": run.opt.param_groups[0]["lr"]}
    if is_eval and not run.out_of_budget():
        vl, n, est = run.estimate_val(should_stop=stop)
        if vl is not None:
            # an estimate says so, in the log and in the metrics: the final line scores all of validation
            rec["val_loss"], rec["val_bpc"], rec["val_chars"], rec["val_estimate"] = vl, vl / LN2, n, est
            what = f"val~ {vl:.4f} nats (est., {_kchars(n)} chars)" if est else f"val loss {vl:.4f} nats"
            prog.write(f"step {step}: train loss {rec['train_loss']:.4f} | {what}"
                       f" = {vl / LN2:.4f} bits/char | {tok_s:,.0f} tok/s")
    if dist.is_main():
        _write_metrics(run.metrics_path, rec)


def _kchars(n):
    return f"{n / 1000:.0f}k" if n >= 10000 else f"{n:,}"


class _SchedulePlan:
    """--minutes without --steps under a schedule: the run fixes its number of steps itself.

    The first SKIP steps of the invocation (kernel builds, warm caches) are not timed; the next
    MEASURE are, in wall time less what evaluations, samples and checkpoints took among them.
    Then one periodic evaluation, one sample and one checkpoint are timed, the final evaluation
    of all of validation is priced from the periodic one by the characters it reads, and the
    steps are fixed so that the steps, the periodic work at its cadence, the final evaluation,
    the final sample and the last checkpoint all end inside --minutes, less MARGIN of what is
    left for the step time's wobble. The number goes into the config (schedule_steps), which
    the checkpoint holds, so a resumed run follows the same schedule; --minutes still stops
    the run if it runs over, early enough to leave the time the end of the run was priced at
    (a run whose steps slow down ends a few steps short of its schedule, not after
    --minutes). The measured steps are training steps: at the schedule's starting
    rate (exactly the schedule's where --warmup covers them)."""

    SKIP, MEASURE, MARGIN = 20, 100, 0.01

    @staticmethod
    def needed(cfg):
        return cfg.schedule != "constant" and cfg.steps is None and cfg.schedule_steps is None \
            and cfg.minutes is not None

    def __init__(self, run, final_sample_length):
        self.run, self.final_sample_length = run, final_sample_length
        self.first = run.step_count
        self.t0 = self.side0 = None

    def after_step(self, prog, stop):
        """Called after each step's evaluation, sample and checkpoint; True once the steps are fixed."""
        run = self.run
        k = run.step_count - self.first
        if k == self.SKIP:
            run.flush()  # on a GPU: the steps so far are finished before the clock starts
            self.t0, self.side0 = run.clock(), run.side_seconds
        if k < self.SKIP + self.MEASURE:
            return False
        run.flush()
        step_s = (run.clock() - self.t0 - (run.side_seconds - self.side0)) / self.MEASURE
        n, costs, run.reserve_s = self._fit(step_s, stop)
        cfg = run.cfg
        prog.write(f"schedule fixed at {max(n, cfg.warmup + 1)} steps from {step_s * 1000:.1f} ms/step measured "
                   f"over {self.MEASURE} steps ({costs}), to end inside {cfg.minutes:g} minutes")
        if n <= cfg.warmup:  # the schedule needs a step after its warm-up
            prog.write(f"note: {cfg.minutes:g} minutes fit only {n} steps, not more than --warmup {cfg.warmup}: "
                       f"--minutes will stop the run before its schedule ends")
        cfg.schedule_steps = max(n, cfg.warmup + 1)
        run.lr_factor = lr_factor(cfg)
        run._spent = run._budget_spent()
        if prog.bar is not None:
            prog.bar.total = cfg.schedule_steps
            prog.bar.refresh()
        run.save()  # the fixed number is in the checkpoint from now on
        return True

    def _fit(self, step_s, stop):
        """(the number of steps, a line on the costs) from the measured step time."""
        run, cfg = self.run, self.run.cfg
        t = run.side_seconds
        _, est_chars, _ = run.estimate_val(should_stop=stop)
        t_eval = run.side_seconds - t
        if run._windows:  # priced by the characters read, the windows' unscored context included
            est_chars = len(run._windows[0]) * (EVAL_CONTEXT + run._windows[1])
        t_final = t_eval * len(run.corpus.val) / max(1, est_chars)
        t_sample = 0.0
        if dist.is_main():  # samples come with the evaluations, or at --sample-every
            t = run.side_seconds
            run.sample(cfg.sample_length, [cfg.seed, run.step_count, 2])
            t_sample = (run.side_seconds - t) / cfg.sample_length  # per character
        t = run.side_seconds
        run.save()
        t_save = run.side_seconds - t
        per_step = (step_s + t_eval / cfg.eval_every
                    + t_sample * cfg.sample_length / (cfg.sample_every or cfg.eval_every)
                    + t_save / (cfg.save_every or cfg.eval_every))
        ending = t_final + t_sample * self.final_sample_length + 2 * t_save  # this checkpoint's rewrite, the last
        left = cfg.minutes * 60 - run.elapsed()
        n = run.step_count + max(0, int((left * (1 - self.MARGIN) - ending) // per_step))
        if run.world.size > 1:  # one schedule for all ranks (their clocks differ)
            n = int(dist.all_reduce_scalar(n, op="min"))
        costs = (f"evaluation {t_eval:.2f} s every {cfg.eval_every} steps, final evaluation ~{t_final:.2f} s, "
                 f"checkpoint {t_save:.2f} s")
        return n, costs, ending


def _final_evaluation(run, result, speed, stop, echo):
    """The budget is spent: score all of validation into result, the metrics and the output."""
    step = run.step_count
    run_tokens, run_train_time = speed
    vl, n = run.evaluate(should_stop=stop)
    result.elapsed = run.elapsed()
    result.tok_s = run_tokens / run_train_time if run_train_time else None
    run.flush()
    result.train_loss = run.window.take()
    if vl is None:
        return
    result.val_loss, result.val_bpc = vl, vl / LN2
    if dist.is_main():
        _write_metrics(run.metrics_path, {"step": step, "train_loss": result.train_loss, "val_loss": vl,
                                          "val_bpc": vl / LN2, "tok_s": result.tok_s,
                                          "elapsed": round(result.elapsed, 3), "tokens": run.tokens_seen,
                                          "final": True})
    echo(f"final (step {step}, {_fmt_time(result.elapsed)}): validation loss {vl:.4f} nats/char = "
         f"{vl / LN2:.4f} bits/char over {n:,} chars"
         + (f"; {result.tok_s:,.0f} tok/s on average" if result.tok_s else ""))
