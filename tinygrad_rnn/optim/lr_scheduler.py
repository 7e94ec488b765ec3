"""Learning-rate schedules, with PyTorch's names, arguments and formulas.

Each scheduler sets `group["lr"]` of every param group of any optimizer here. It is stepped
with `.step()` after `optimizer.step()`; `get_last_lr()` gives the rates in force. Every rate
is computed in closed form from the step count (`last_epoch`), so a schedule restored from
its `state_dict()` continues exactly, whatever stepped it before.

    opt = optim.Adam(params, lr=1e-3)
    sched = lr_scheduler.SequentialLR(opt, [lr_scheduler.LinearLR(opt, 0.1, total_iters=100),
                                            lr_scheduler.CosineAnnealingLR(opt, T_max=900)],
                                      milestones=[100])
    for batch in data:
        ...; opt.step(); sched.step()

A schedule that would set a negative or non-finite rate raises ValueError naming it.
"""
from __future__ import annotations

import bisect
import math
import numbers

__all__ = ["LRScheduler", "LambdaLR", "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR",
           "SequentialLR", "OneCycleLR"]


def _check_optimizer(name, optimizer):
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(f"{name}: the first argument must be an optimizer, got {type(optimizer).__name__}")


def _positive_int(name, what, v):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
        raise ValueError(f"{name}: {what} must be a positive integer, got {v!r}")
    return int(v)


class LRScheduler:
    """The base: the rate of each group as a function of the step count, last_epoch."""

    def __init__(self, optimizer, last_epoch=-1):
        name = type(self).__name__
        _check_optimizer(name, optimizer)
        self.optimizer = optimizer
        if last_epoch == -1:
            for g in optimizer.param_groups:
                g.setdefault("initial_lr", g["lr"])
        else:
            missing = [i for i, g in enumerate(optimizer.param_groups) if "initial_lr" not in g]
            if missing:
                raise KeyError(f"{name}: last_epoch={last_epoch} resumes a schedule, but param group(s) "
                               f"{missing} have no 'initial_lr' (made by a scheduler started at -1)")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._last_lr = None
        self.step()

    def lr_at(self, epoch):
        """The rates (one per group) at step count epoch: each subclass's formula."""
        raise NotImplementedError

    def step(self):
        self.last_epoch += 1
        self._apply(self.lr_at(self.last_epoch))

    def _apply(self, lrs):
        name = type(self).__name__
        for i, lr in enumerate(lrs):
            if not math.isfinite(lr) or lr < 0:
                raise ValueError(f"{name}: the schedule would set the learning rate of param group {i} to {lr!r} "
                                 f"at step {self.last_epoch}; a rate must be finite and non-negative")
        for g, lr in zip(self.optimizer.param_groups, lrs):
            g["lr"] = lr
        self._last_lr = list(lrs)

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        """Everything but the optimizer (and, for LambdaLR, the functions): numbers and lists."""
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas", "_schedulers")}

    def load_state_dict(self, state_dict):
        self.__dict__.update({k: v for k, v in state_dict.items() if k not in ("optimizer", "lr_lambdas")})


class LambdaLR(LRScheduler):
    """lr = base_lr * lr_lambda(step); one function, or one per param group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        _check_optimizer("LambdaLR", optimizer)
        n = len(optimizer.param_groups)
        fns = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(fns) != n or not all(callable(f) for f in fns):
            raise ValueError(f"LambdaLR: lr_lambda must be a function or a list of {n} functions (one per "
                             f"param group), got {lr_lambda!r}")
        self.lr_lambdas = fns
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [base * f(epoch) for base, f in zip(self.base_lrs, self.lr_lambdas)]


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (step // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size = _positive_int("StepLR", "step_size", step_size)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [base * self.gamma ** (epoch // self.step_size) for base in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** step."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        return [base * self.gamma ** epoch for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) (1 + cos(pi step / T_max)) / 2 (SGDR without restarts,
    PyTorch's closed form)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):  # noqa: N803 (PyTorch's name)
        self.T_max = _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        c = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * c for base in self.base_lrs]


class LinearLR(LRScheduler):
    """The factor goes linearly from start_factor to end_factor over total_iters steps, then
    stays: lr = base_lr * (start + (end - start) min(step, total_iters) / total_iters)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        if not 0 < start_factor <= 1 or not 0 <= end_factor <= 1:
            raise ValueError(f"LinearLR: start_factor must be in (0, 1] and end_factor in [0, 1], got "
                             f"{start_factor!r} and {end_factor!r}")
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_iters = _positive_int("LinearLR", "total_iters", total_iters)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        f = self.start_factor + (self.end_factor - self.start_factor) * min(epoch, self.total_iters) / self.total_iters
        return [base * f for base in self.base_lrs]


class SequentialLR(LRScheduler):
    """schedulers[i] from milestone i-1 on (counting its steps from 0 there): warm-up, then decay."""

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        _check_optimizer("SequentialLR", optimizer)
        schedulers, milestones = list(schedulers), list(milestones)
        if not schedulers:
            raise ValueError("SequentialLR: needs at least one scheduler")
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(f"SequentialLR: {len(schedulers)} schedulers need {len(schedulers) - 1} milestone(s) "
                             f"(where each after the first takes over), got {len(milestones)}: {milestones}")
        if any(not isinstance(m, numbers.Integral) or m < 1 for m in milestones) or milestones != sorted(milestones) \
                or len(set(milestones)) != len(milestones):
            raise ValueError(f"SequentialLR: milestones must be increasing positive integers, got {milestones}")
        for i, s in enumerate(schedulers):
            if s.optimizer is not optimizer:
                raise ValueError(f"SequentialLR: scheduler {i} ({type(s).__name__}) steps another optimizer")
        self._schedulers, self.milestones = schedulers, [int(m) for m in milestones]
        for g in optimizer.param_groups:  # the sub-schedulers stepped once on construction: start over
            g["lr"] = g["initial_lr"]
        super().__init__(optimizer, last_epoch)

    def lr_at(self, epoch):
        k = bisect.bisect_right(self.milestones, epoch)
        start = self.milestones[k - 1] if k else 0
        s = self._schedulers[k]
        s.last_epoch = epoch - start
        return s.lr_at(epoch - start)

    def state_dict(self):
        d = super().state_dict()
        d["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return d

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        for s, sd in zip(self._schedulers, state_dict.pop("_schedulers", [])):
            s.load_state_dict(sd)
        super().load_state_dict(state_dict)


class OneCycleLR(LRScheduler):
    """Smith's 1cycle, PyTorch's form: from max_lr / div_factor up to max_lr over pct_start of
    total_steps, then down to max_lr / div_factor / final_div_factor (cosine or linear
    annealing; three_phase: up, back down to the start, then to the minimum)."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        _check_optimizer("OneCycleLR", optimizer)
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
            total_steps = _positive_int("OneCycleLR", "epochs", epochs) * \
                _positive_int("OneCycleLR", "steps_per_epoch", steps_per_epoch)
        self.total_steps = _positive_int("OneCycleLR", "total_steps", total_steps)
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        n = len(optimizer.param_groups)
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * n
        if len(max_lrs) != n:
            raise ValueError(f"OneCycleLR: {len(max_lrs)} max_lr values for {n} param groups")
        self.max_lrs = [float(m) for m in max_lrs]
        self.initial_lrs = [m / div_factor for m in self.max_lrs]
        self.min_lrs = [i / final_div_factor for i in self.initial_lrs]
        up = float(pct_start * self.total_steps) - 1
        if three_phase:
            self.phases = [(up, "initial", "max"), (2 * up, "max", "initial"), (self.total_steps - 1, "initial", "min")]
        else:
            self.phases = [(up, "initial", "max"), (self.total_steps - 1, "max", "min")]
        if last_epoch == -1:
            for g, lr in zip(optimizer.param_groups, self.initial_lrs):
                g["initial_lr"] = lr
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _anneal(strategy, start, end, pct):
        if strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def lr_at(self, epoch):
        if epoch > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {epoch} times, past total_steps = {self.total_steps}")
        out = []
        for i in range(len(self.max_lrs)):
            values = {"initial": self.initial_lrs[i], "max": self.max_lrs[i], "min": self.min_lrs[i]}
            start_step, lr = 0.0, None
            for k, (end_step, a, b) in enumerate(self.phases):
                if epoch <= end_step or k == len(self.phases) - 1:
                    pct = (epoch - start_step) / (end_step - start_step) if end_step > start_step else 1.0
                    lr = self._anneal(self.anneal_strategy, values[a], values[b], pct)
                    break
                start_step = end_step
            out.append(lr)
        return out
