"""Regression: backward must run a node only after every consumer of its outputs.

The walk once marked nodes as seen when first *pushed*, so a node reached early from a
shallow consumer was ordered before a deeper consumer that reaches it too, and that
consumer's gradient was dropped: d/dx of a + (b - a) with a = 2x came out 2, not 0.
"""
import numpy as np

import tinygrad_rnn as tg


def test_paths_of_unequal_depth_both_reach_the_shared_node(device):
    x = tg.tensor([0.3, -1.2], dtype=tg.float64, device=device, requires_grad=True)
    b = tg.tensor([0.5, 2.0], dtype=tg.float64, device=device, requires_grad=True)
    a = x * 2.0
    (a + (b - a)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0])
    np.testing.assert_allclose(b.grad.numpy(), [1.0, 1.0])


def test_gradcheck_of_a_graph_with_skip_connections(device):
    x = tg.tensor([0.3, -0.7, 1.1], dtype=tg.float64, device=device, requires_grad=True)

    def f(x):
        h0 = x.tanh()
        h1 = (h0 * 1.5).sigmoid()
        h2 = (h1 + h0).tanh() * h0  # h0 reached through paths of depth 1, 2 and 3
        return h2 + h1.exp() - h0

    assert tg.gradcheck(f, [x])


def test_long_chain_with_a_skip_over_every_step():
    # deep and shared: each step uses h twice, once through a longer path
    x = tg.tensor([0.5], dtype=tg.float64, requires_grad=True)
    h = x
    for _ in range(2000):
        h = h * 0.5 + (h * 0.25 + 0.0) * 2.0  # = h, via two paths
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0])
