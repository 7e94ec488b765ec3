"""Output-to-hidden recurrence (a Jordan network) trained with teacher forcing.

The network's only memory is its own previous output: no hidden-to-hidden weights.

    h_t = tanh(W_u u_t + W_y y_{t-1} + b)        y_t = V h_t + c

It learns a driven, damped pendulum: y = (angle, angular velocity), u = the applied
torque. With teacher forcing, training feeds the *true* y_{t-1}, not the network's own
output. Then no step depends on another, so all T x B steps are one batch: one matmul
per layer, no loop over time at all. At test time there are no true outputs to feed:
the network runs free, fed back its own y_{t-1}, and its small one-step errors compound.
The gap between the two errors is the price of teacher forcing (exposure bias).

    python examples/teacher_forcing.py --quick      # ~6 s
"""
import argparse
import os
import sys
import time

import numpy as np

try:
    import tinygrad_rnn as tg
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_rnn as tg
from tinygrad_rnn import nn, optim

DT, GRAVITY, DAMPING = 0.1, 4.0, 0.3


def pendulum(rng, T, batch):
    """Trajectories (T + 1, B, 2) of (angle, velocity) and torques u (T, B, 1) driving them."""
    y = np.zeros((T + 1, batch, 2))
    y[0, :, 0] = rng.uniform(-2.0, 2.0, batch)
    y[0, :, 1] = rng.uniform(-1.0, 1.0, batch)
    # smooth random torque: a random walk, pulled back towards zero
    u = np.zeros((T, batch, 1))
    for t in range(1, T):
        u[t] = 0.9 * u[t - 1] + rng.normal(0.0, 0.5, (batch, 1))
    for t in range(T):
        theta, omega = y[t, :, 0], y[t, :, 1]
        omega = omega + DT * (-GRAVITY * np.sin(theta) - DAMPING * omega + u[t, :, 0])
        y[t + 1, :, 0] = theta + DT * omega
        y[t + 1, :, 1] = omega
    return y.astype(np.float32), u.astype(np.float32)


class JordanNet(nn.Module):
    def __init__(self, n_in, n_out, hidden):
        super().__init__()
        self.hidden = nn.Linear(n_in + n_out, hidden)  # [W_u W_y] and b, acting on [u_t, y_(t-1)]
        self.out = nn.Linear(hidden, n_out)

    def step(self, u_t, y_prev):
        return self.out(self.hidden(tg.cat([u_t, y_prev], axis=-1)).tanh())

    def teacher_forced(self, u, y_true_prev):
        """All steps at once: u (T, B, n_in) and the true y_(t-1) (T, B, n_out) -> y (T, B, n_out)."""
        return self.step(u, y_true_prev)

    def free_running(self, u, y0):
        """One step at a time from y_0, each step fed the previous *prediction*."""
        y, out = y0, []
        for u_t in u.unbind(0):
            y = self.step(u_t, y)
            out.append(y)
        return tg.stack(out)


def main(argv=None):
    p = argparse.ArgumentParser(description="a Jordan network trained with teacher forcing")
    p.add_argument("--quick", action="store_true", help="1000 steps (~6 s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    steps, T, batch = (1000, 50, 32) if args.quick else (6000, 50, 64)
    t0 = time.perf_counter()
    tg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = JordanNet(1, 2, hidden=64)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    for step in range(1, steps + 1):
        y, u = pendulum(rng, T, batch)
        pred = model.teacher_forced(tg.tensor(u), tg.tensor(y[:-1]))
        loss = ((pred - tg.tensor(y[1:])) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(f"step {step:5d}  teacher-forced MSE {loss.item():.2e}")

    y, u = pendulum(np.random.default_rng(args.seed + 1), 100, 256)  # new trajectories, twice as long
    y_t, u_t = tg.tensor(y), tg.tensor(u)
    with tg.no_grad():
        tf = ((model.teacher_forced(u_t, y_t[:-1]) - y_t[1:]) ** 2).numpy().mean(axis=(1, 2))
        fr = ((model.free_running(u_t, y_t[0]) - y_t[1:]) ** 2).numpy().mean(axis=(1, 2))
    var = float(y[1:].var(axis=(0, 1)).mean())
    print("test MSE by step (256 new trajectories; the variance of the targets is "
          f"{var:.2f}):")
    print("   step   teacher-forced   free-running")
    for t in (1, 5, 10, 25, 50, 100):
        print(f"   {t:4d}   {tf[t - 1]:14.2e}   {fr[t - 1]:12.2e}")
    tf_mean, fr_mean = float(tf.mean()), float(fr.mean())
    seconds = time.perf_counter() - t0
    print(f"over 100 steps: teacher-forced MSE {tf_mean:.2e}, free-running MSE {fr_mean:.2e}: "
          f"a gap of {fr_mean / tf_mean:.0f}x ({seconds:.1f} s)")
    res = {"teacher_forced_mse": tf_mean, "free_running_mse": fr_mean, "gap": fr_mean / tf_mean,
           "target_variance": var, "seconds": seconds}
    assert tf_mean < 0.01 * var, "teacher-forced one-step predictions should be accurate"
    assert fr_mean > 5 * tf_mean, "errors should compound when the network runs free"
    return res


if __name__ == "__main__":
    main()
