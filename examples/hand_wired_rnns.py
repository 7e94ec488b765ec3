"""RNNs wired by hand: weights set by inspection, no training, checked on every input.

Three nn.RNN layers with ReLU units whose weights we write down:

(a) Sum of the inputs. One ReLU unit can only hold a non-negative running total, so use
    two: p = relu(s) and q = relu(-s) for the running sum s, which is then p - q. Each
    step rebuilds both from p - q + x_t:
        p_t = relu( p_{t-1} - q_{t-1} + x_t),  q_t = relu(-p_{t-1} + q_{t-1} - x_t)
(b) Which of two streams has the larger total: the same pair of units summing a_t - b_t;
    the sign of p - q at the end says "first", "second" or "tie".
(c) Parity of a bit string, from a finite-state machine. Give the RNN one unit per
    transition (state q, symbol a) of the FSM; that unit fires at step t exactly when the
    machine was in q and read a. With 0/1 values, AND is relu(u + v - 1), and "the machine
    is in q" is the sum of the units of the transitions that lead into q, so
        unit_(q,a) at t = relu( sum_{(q',a') -> q} unit_(q',a') at t-1 + [x_t = a] - 1 ).
    The same construction turns any FSM into an RNN; we also build "binary number
    divisible by 3".

Every string up to a length (all of them, not a sample) goes through each network as
one batch, and each output at every step is compared with the exact answer.

    python examples/hand_wired_rnns.py             # all strings up to length 10
    python examples/hand_wired_rnns.py --quick     # the same (it takes a second)
"""
import argparse
import itertools
import os
import sys
import time

import numpy as np

try:
    import tinygrad_rnn as tg
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_rnn as tg
from tinygrad_rnn import nn


def wired_rnn(w_ih, w_hh, b):
    """An nn.RNN with ReLU units and the given weights (no bias on the hidden side)."""
    w_ih, w_hh = np.asarray(w_ih, dtype=np.float64), np.asarray(w_hh, dtype=np.float64)
    rnn = nn.RNN(w_ih.shape[1], w_ih.shape[0], nonlinearity="relu", dtype=tg.float64)
    rnn.load_state_dict({"weight_ih_l0": w_ih, "weight_hh_l0": w_hh,
                         "bias_ih_l0": np.asarray(b, dtype=np.float64), "bias_hh_l0": np.zeros(len(b))})
    return rnn


def all_strings(alphabet, length):
    """Every string of `length` symbols as a (length, count) array: one batch column each."""
    return np.array(list(itertools.product(alphabet, repeat=length)), dtype=np.float64).T.reshape(length, -1)


# ----------------------------------------------------------------------------- (a) summing
SUM_RNN = dict(w_ih=[[1.0], [-1.0]], w_hh=[[1.0, -1.0], [-1.0, 1.0]], b=[0.0, 0.0])
SUM_READOUT = np.array([1.0, -1.0])  # s = p - q


def check_sum(max_len, alphabet=(-2, -1, 0, 1, 3)):
    rnn = wired_rnn(**SUM_RNN)
    checked = 0
    for n in range(1, max_len + 1):
        x = all_strings(alphabet, n)
        with tg.no_grad():
            h, _ = rnn(tg.tensor(x[:, :, None]))
        got = h.numpy() @ SUM_READOUT  # (n, batch): the running sum after every step
        if not np.array_equal(got, np.cumsum(x, axis=0)):
            return False, checked
        checked += x.shape[1]
    return True, checked


# ----------------------------------------------------------------------------- (b) comparing
COMPARE_RNN = dict(w_ih=[[1.0, -1.0], [-1.0, 1.0]], w_hh=[[1.0, -1.0], [-1.0, 1.0]], b=[0.0, 0.0])


def check_compare(max_len):
    rnn = wired_rnn(**COMPARE_RNN)
    checked = 0
    for n in range(1, max_len + 1):
        pairs = all_strings((0, 1, 2, 3), n)  # each symbol codes a pair of bits (a_t, b_t)
        x = np.stack([pairs // 2, pairs % 2], axis=-1)
        with tg.no_grad():
            h, _ = rnn(tg.tensor(x))
        d = h.numpy()[-1] @ SUM_READOUT
        verdict = np.sign(d)  # +1: the first stream has the larger total, -1: the second, 0: a tie
        truth = np.sign(x[:, :, 0].sum(0) - x[:, :, 1].sum(0))
        if not np.array_equal(verdict, truth):
            return False, checked
        checked += x.shape[1]
    return True, checked


# ----------------------------------------------------------------------------- (c) FSM -> RNN
def fsm_to_rnn(states, symbols, delta, start):
    """An RNN that runs the FSM: one ReLU unit per transition (q, a), firing when the
    machine was in q and read a. Returns (rnn, h0, units) where units lists the (q, a)."""
    units = [(q, a) for q in states for a in symbols]
    idx = {u: i for i, u in enumerate(units)}
    n = len(units)
    w_hh = np.zeros((n, n))
    w_ih = np.zeros((n, len(symbols)))
    for (q, a), i in idx.items():
        for (q2, a2), j in idx.items():
            if delta[q2, a2] == q:  # unit j's transition leads into q: "the machine is in q"
                w_hh[i, j] = 1.0
        w_ih[i, symbols.index(a)] = 1.0
    rnn = wired_rnn(w_ih, w_hh, b=-np.ones(n))
    # before any input the machine is in `start`: light one transition that leads there
    into_start = next(u for u in units if delta[u] == start)
    h0 = np.zeros(n)
    h0[idx[into_start]] = 1.0
    return rnn, h0, units


def run_fsm_rnn(rnn, h0, units, symbols, x_sym):
    """State of the machine after every step, read off the RNN: (T, batch) state labels."""
    onehot = (x_sym[:, :, None] == np.array(symbols)).astype(np.float64)
    batch = x_sym.shape[1]
    with tg.no_grad():
        h, _ = rnn(tg.tensor(onehot), tg.tensor(np.tile(h0, (1, batch, 1))))
    fired = h.numpy()
    assert np.isin(fired, (0.0, 1.0)).all() and (fired.sum(-1) == 1).all()  # exactly one unit per step
    return fired.argmax(-1), units


def check_fsm(name, states, symbols, delta, start, truth_fn, max_len):
    rnn, h0, units = fsm_to_rnn(states, symbols, delta, start)
    checked = 0
    for n in range(1, max_len + 1):
        x = all_strings(symbols, n).astype(np.int64)
        which, units = run_fsm_rnn(rnn, h0, units, symbols, x)
        state_after = np.vectorize(lambda i: delta[units[i]])(which)  # where each fired transition leads
        truth = truth_fn(x)
        if not np.array_equal(state_after, truth):
            return False, checked
        checked += x.shape[1]
    return True, checked


PARITY = dict(states=["even", "odd"], symbols=[0, 1], start="even",
              delta={("even", 0): "even", ("even", 1): "odd", ("odd", 0): "odd", ("odd", 1): "even"})


def parity_truth(x):
    return np.where(np.cumsum(x, axis=0) % 2 == 1, "odd", "even")


MOD3 = dict(states=[0, 1, 2], symbols=[0, 1], start=0,
            delta={(r, b): (2 * r + b) % 3 for r in range(3) for b in (0, 1)})


def mod3_truth(x):
    value = np.zeros(x.shape[1], dtype=np.int64)
    out = []
    for row in x:  # the number read so far, most significant bit first
        value = (2 * value + row) % 3
        out.append(value.copy())
    return np.stack(out)


def main(argv=None):
    p = argparse.ArgumentParser(description="RNNs with weights set by hand, checked on every string")
    p.add_argument("--quick", action="store_true", help="(the same checks: they are fast)")
    p.add_argument("--max-len", type=int, default=10, help="check all strings up to this length (default 10)")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    L = args.max_len
    results = {}
    ok, n = check_sum(min(L, 7))  # 5 symbols: 5^7 = 78,125 strings of the longest length
    print(f"(a) sum of inputs over {{-2,-1,0,1,3}}: right at every step of all {n} strings up to length "
          f"{min(L, 7)}: {ok}")
    results["sum"] = ok
    ok, n = check_compare(min(L, 8))
    print(f"(b) larger of two bit streams (or tie): right on all {n} pairs of strings up to length "
          f"{min(L, 8)}: {ok}")
    results["compare"] = ok
    ok, n = check_fsm("parity", **PARITY, truth_fn=parity_truth, max_len=L)
    print(f"(c) parity FSM as a 4-unit ReLU RNN: right at every step of all {n} bit strings up to length {L}: {ok}")
    results["parity"] = ok
    ok, n = check_fsm("mod3", **MOD3, truth_fn=mod3_truth, max_len=L)
    print(f"    (and divisible-by-3 FSM as a 6-unit RNN: all {n} binary numbers up to {L} bits: {ok})")
    results["mod3"] = ok
    results["seconds"] = time.perf_counter() - t0
    assert all(results[k] for k in ("sum", "compare", "parity", "mod3")), "a hand-wired RNN got a string wrong"
    print(f"all hand-wired networks are exact ({results['seconds']:.1f} s)")
    return results


if __name__ == "__main__":
    main()
