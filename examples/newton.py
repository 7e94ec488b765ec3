"""Newton's method with second derivatives against gradient descent.

Minimises the Rosenbrock function f(x, y) = (1 - x)^2 + 100 (y - x^2)^2 from (-1.2, 1), the
classic banana-shaped valley, two ways:
- gradient descent, x <- x - lr * grad f(x), with the largest step size that does not
  diverge here (lr = 1e-3);
- Newton's method, x <- x - H(x)^-1 grad f(x), with the Hessian from tg.func.hessian (the
  engine's reverse mode run twice: gradients of gradients) and a backtracking line search.
Prints the iterations each needs to bring the gradient norm under 1e-8, and checks the
Hessian at the start against the hand-derived one.

    python examples/newton.py --quick
"""
import argparse
import os
import sys

import numpy as np

try:
    import tinygrad_rnn as tg
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tinygrad_rnn as tg


def rosenbrock(p):
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def hessian_by_hand(p):
    x, y = p
    return np.array([[2 - 400 * (y - x * x) + 800 * x * x, -400 * x], [-400 * x, 200.0]])


def gradient_descent(p0, lr, tol, max_iter):
    p = tg.tensor(p0, dtype=tg.float64)
    grad = tg.func.grad(rosenbrock)
    for k in range(max_iter):
        g = grad(p)
        if np.linalg.norm(g.numpy()) < tol:
            return k, p.numpy()
        p = p - lr * g
    return max_iter, p.numpy()


def newton(p0, tol, max_iter):
    p = tg.tensor(p0, dtype=tg.float64)
    grad, hess = tg.func.grad(rosenbrock), tg.func.hessian(rosenbrock)
    for k in range(max_iter):
        g = grad(p).numpy()
        if np.linalg.norm(g) < tol:
            return k, p.numpy()
        step = np.linalg.solve(hess(p).numpy(), g)
        t, f0 = 1.0, rosenbrock(p).item()
        while rosenbrock(tg.tensor(p.numpy() - t * step, dtype=tg.float64)).item() > f0 - 1e-4 * t * g @ step:
            t *= 0.5  # backtrack until the step decreases f enough
        p = tg.tensor(p.numpy() - t * step, dtype=tg.float64)
    return max_iter, p.numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="stop gradient descent after 20,000 iterations")
    ap.add_argument("--tol", type=float, default=1e-8, help="gradient norm to stop at")
    args = ap.parse_args(argv)
    p0 = [-1.2, 1.0]
    H = tg.func.hessian(rosenbrock)(tg.tensor(p0, dtype=tg.float64)).numpy()
    err = float(np.abs(H - hessian_by_hand(p0)).max())
    assert err < 1e-9, f"Hessian off by {err}"
    n_newton, p_newton = newton(p0, args.tol, 100)
    gd_cap = 20_000 if args.quick else 200_000
    n_gd, p_gd = gradient_descent(p0, 1e-3, args.tol, gd_cap)
    print(f"Rosenbrock from {p0}: Hessian at the start matches the hand-derived one (max error {err:.1e})")
    print(f"Newton's method (tg.func.hessian): {n_newton} iterations to |grad| < {args.tol:g}, at {p_newton}")
    print(f"gradient descent (lr 1e-3):       {'more than ' if n_gd >= gd_cap else ''}{n_gd} iterations, at {p_gd}")
    assert np.allclose(p_newton, [1.0, 1.0], atol=1e-6)
    assert n_newton < 50 and n_gd > 100 * n_newton
    return {"newton": n_newton, "gd": n_gd, "hessian_err": err, "gd_capped": n_gd >= gd_cap}


if __name__ == "__main__":
    main()
