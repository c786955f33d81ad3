"""NumPy float64 oracles for the degenerate limits (no jax import).

Observation models are given as ``(h, jac)`` pairs of NumPy functions
``h(theta, u) -> (p,)`` and ``jac(theta, u) -> (p, k)`` (analytic Jacobians), where
``u`` is one step's dict of NumPy arrays. Every recursion is written the way an
optimisation textbook writes it, not the way a Kalman filter does.
"""

import numpy as np


def linear_model():
    """``h(theta, u) = X theta`` with ``u["x"]`` of shape ``(p, k)``."""
    return (lambda th, u: u["x"] @ th), (lambda th, u: u["x"])


def nonlinear_model():
    """``h = (tanh(a.theta), 0.5 (b.theta)^2 + 0.3 b.theta)`` with rows a, b of
    ``u["x"]`` (shape ``(2, k)``) and its analytic Jacobian."""

    def h(th, u):
        a, b = u["x"][0], u["x"][1]
        return np.array([np.tanh(a @ th), 0.5 * (b @ th) ** 2 + 0.3 * (b @ th)])

    def jac(th, u):
        a, b = u["x"][0], u["x"][1]
        return np.stack([(1.0 - np.tanh(a @ th) ** 2) * a, (b @ th + 0.3) * b])

    return h, jac


def steps(xs):
    """Split a dict of stacked arrays into a list of per-step dicts."""
    T = len(xs["obs"])
    return [{k: np.asarray(v[t], np.float64) for k, v in xs.items()} for t in range(T)]


def sgd(model, m0, xs, lr):
    """theta <- theta - lr * grad 1/2 |y - h(theta)|^2 = theta + lr J^T e."""
    h, jac = model
    th = np.asarray(m0, np.float64)
    for u in steps(xs):
        th = th + lr * jac(th, u).T @ (u["obs"] - h(th, u))
    return th


def frozen_kalman(model, m0, xs, P, R):
    """Kalman mean update with the same prior covariance P at every step."""
    h, jac = model
    th = np.asarray(m0, np.float64)
    for u in steps(xs):
        J = jac(th, u)
        S = J @ P @ J.T + R
        th = th + P @ J.T @ np.linalg.solve(S, u["obs"] - h(th, u))
    return th


def kaczmarz(X, y, sweeps, m0=None):
    """Cyclic Kaczmarz: theta <- theta + x (y - x.theta) / |x|^2, row by row."""
    th = np.zeros(X.shape[1]) if m0 is None else np.asarray(m0, np.float64)
    for _ in range(sweeps):
        for x, yy in zip(X, y, strict=True):
            th = th + x * (yy - x @ th) / (x @ x)
    return th


def online_natural_gradient(model, m0, xs, Sigma0, R):
    """Online NGD: F_t = (Sigma0^-1 + sum_s J_s^T R^-1 J_s) / t with J_s at the
    iterate theta_{s-1}; theta_t = theta_{t-1} - (1/t) F_t^-1 grad l_t, where
    l_t = 1/2 (y_t - h)^T R^-1 (y_t - h). Returns the iterates (T, k)."""
    h, jac = model
    th = np.asarray(m0, np.float64)
    Rinv = np.linalg.inv(R)
    acc = np.linalg.inv(Sigma0)
    out = []
    for t, u in enumerate(steps(xs), start=1):
        J = jac(th, u)
        grad = -J.T @ Rinv @ (u["obs"] - h(th, u))
        acc = acc + J.T @ Rinv @ J
        fisher = acc / t
        th = th - (1.0 / t) * np.linalg.solve(fisher, grad)
        out.append(th)
    return np.stack(out)


def fixed_natural_gradient(model, m0, xs, lr, fisher):
    """theta <- theta - lr F^-1 grad 1/2 |y - h|^2, F fixed."""
    h, jac = model
    th = np.asarray(m0, np.float64)
    for u in steps(xs):
        grad = -jac(th, u).T @ (u["obs"] - h(th, u))
        th = th - lr * np.linalg.solve(fisher, grad)
    return th
