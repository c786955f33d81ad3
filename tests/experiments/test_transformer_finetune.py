"""transformer_finetune's pieces against closed forms: the EKF over prompts with a
full noise covariance, online fine-tuning over several passes, the checkpoints and
the verdict rules."""

import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.experiments import _transformer as T
from kalmanjax.experiments import transformer_finetune as tf

pytest.importorskip("optax")


def _linear_model(rng, T_, n, d, k):
    W = rng.normal(size=(d, k))
    x = rng.normal(size=(T_, n, d))
    theta = rng.normal(size=k)
    y = x @ W @ theta + 0.3 * rng.normal(size=(T_, n))

    def predict(th, a, b):  # b (the outputs) is unused, as for a network's head
        return a @ (jnp.asarray(W) @ th)

    return W, x, y, predict


def test_ekf_over_prompts_is_the_joint_gaussian(x64):
    # predict linear in theta: the EKF is exact, so its mean, covariance trace and
    # log marginal likelihood are those of the joint Gaussian of all outputs
    rng = np.random.default_rng(0)
    T_, n, d, k, s2 = 5, 4, 3, 6, 0.7
    W, x, y, predict = _linear_model(rng, T_, n, d, k)
    A = rng.normal(size=(n, n))
    R = 0.1 * (A @ A.T + n * np.eye(n))  # correlated within a prompt
    means, trace, log_lik = T.ekf_over_prompts(
        predict, k, s2, jnp.asarray(R), jnp.asarray(x), jnp.asarray(y)
    )
    H = (x @ W).reshape(T_ * n, k)
    S = s2 * H @ H.T + np.kron(np.eye(T_), R)
    v = y.ravel()
    want = -0.5 * (v @ np.linalg.solve(S, v) + np.linalg.slogdet(2 * np.pi * S)[1])
    np.testing.assert_allclose(log_lik, want, rtol=1e-10)
    Rinv = np.kron(np.eye(T_), np.linalg.inv(R))
    cov = np.linalg.inv(H.T @ Rinv @ H + np.eye(k) / s2)
    np.testing.assert_allclose(means[-1], cov @ H.T @ Rinv @ v, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(trace[-1], np.trace(cov), rtol=1e-9)


def test_online_paths_are_sgd_over_the_passes(x64):
    rng = np.random.default_rng(1)
    T_, n, d, k = 4, 3, 2, 3
    W, x, y, predict = _linear_model(rng, T_, n, d, k)
    lrs = np.array([0.01, 0.05])
    paths = T.online_paths(
        predict, k, "sgd", 2, jnp.asarray(lrs), jnp.ones(2), jnp.asarray(x), y
    )
    assert paths.shape == (2, 2 * T_, k)
    for c, lr in enumerate(lrs):
        theta = np.zeros(k)
        for step in range(2 * T_):
            H = x[step % T_] @ W
            grad = 2 * H.T @ (H @ theta - y[step % T_]) / n
            theta = theta - lr * grad
            np.testing.assert_allclose(paths[c, step], theta, rtol=1e-10, atol=1e-13)


def test_ridge_refits_are_numpy_ridge_on_the_prompts_seen(x64):
    # an affine predict (offset p + J theta): the refit after t prompts is the ridge
    # solution of the stacked outputs minus the offsets, for every penalty
    rng = np.random.default_rng(2)
    T_, n, d, k = 6, 3, 2, 5
    W, x, y, _ = _linear_model(rng, T_, n, d, k)

    def predict(th, a, b):  # the offset is found from the inputs, as in a network
        return a @ (jnp.asarray(W) @ th) + jnp.sum(a, axis=1)

    offset = x.sum(axis=2)
    lambdas, steps = np.array([1e-3, 0.5, 4.0]), np.array([1, 2, 6])
    got = T.ridge_refits(
        predict, k, jnp.asarray(lambdas), jnp.asarray(steps), jnp.asarray(x), y
    )
    assert got.shape == (3, 3, k)
    for c, lam in enumerate(lambdas):
        for p, t in enumerate(steps):
            H = (x[:t] @ W).reshape(t * n, k)
            v = (y[:t] - offset[:t]).ravel()
            want = np.linalg.solve(H.T @ H + lam * np.eye(k), H.T @ v)
            np.testing.assert_allclose(got[c, p], want, rtol=1e-8, atol=1e-11)


def test_fit_scales_maximises_the_joint_gaussian_likelihood(x64):
    rng = np.random.default_rng(3)
    T_, n, d, k, s2 = 6, 3, 2, 4, 0.5
    W, x, y, predict = _linear_model(rng, T_, n, d, k)
    R = 0.09 * np.eye(n)
    noise, prior = (0.25, 1.0, 4.0), (0.1, 1.0, 10.0)
    fit = T.fit_scales(
        predict, k, s2, jnp.asarray(R), noise, prior, jnp.asarray(x), jnp.asarray(y)
    )
    H = (x @ W).reshape(T_ * n, k)
    v = y.ravel()

    def log_lik(a, b):
        S = b * s2 * H @ H.T + a * np.kron(np.eye(T_), R)
        return -0.5 * (v @ np.linalg.solve(S, v) + np.linalg.slogdet(2 * np.pi * S)[1])

    grid = np.array([[log_lik(a, b) for b in prior] for a in noise])
    i, j = np.unravel_index(np.argmax(grid), grid.shape)
    assert (fit.noise_scale, fit.prior_scale) == (noise[i], prior[j])
    np.testing.assert_allclose(fit.log_lik_per_prompt, grid.max() / T_, rtol=1e-9)


def test_checkpoints_every_eight_prompts():
    np.testing.assert_array_equal(T.checkpoints(40, 8), [1, 2, 4, 8, 16, 24, 32, 40])
    np.testing.assert_array_equal(T.checkpoints(20, 8), [1, 2, 4, 8, 16, 20])
    np.testing.assert_array_equal(T.checkpoints(20), [1, 2, 4, 8, 16, 20])


def test_interior_is_per_axis():
    assert tf._interior(5, (3, 4))  # (1, 1)
    assert not tf._interior(4, (3, 4))  # (1, 0): the horizon at its edge
    assert not tf._interior(2, (3,)) and tf._interior(1, (3,))


def test_prefix_ridge_is_the_ridge_refit_of_the_tokens_before_each(x64):
    rng = np.random.default_rng(8)
    n, k = 6, 9  # k > n: the primal systems are k x k, the code's dual ones n x n
    base, jac, y = rng.normal(size=n), rng.normal(size=(n, k)), rng.normal(size=n)
    lambdas = np.array([1e-3, 0.5, 4.0])
    got = np.asarray(
        tf._prefix_ridge(*(jnp.asarray(a) for a in (base, jac, y, lambdas)))
    )
    assert got.shape == (3, n)
    for c, lam in enumerate(lambdas):
        for i in range(n):
            J, r = jac[:i], (y - base)[:i]
            theta = np.linalg.solve(J.T @ J + lam * np.eye(k), J.T @ r)
            np.testing.assert_allclose(got[c, i], base[i] + jac[i] @ theta, rtol=1e-9)


def test_within_and_why_not_verdicts():
    assert tf._within_verdict({"ekf": "holds", "best": "holds"}) == "holds"
    assert tf._within_verdict({"ekf": "fails (x)", "best": "holds"}) == (
        "holds only for the rival"
    )
    assert tf._within_verdict({"ekf": "fails (x)", "best": "fails (x)"}) == "fails"
    assert tf._within_verdict(
        {"ekf": "fails (x)", "best": "inconclusive (y)"}
    ).startswith("fails (for the filter")
    assert tf._within_verdict(
        {"ekf": "inconclusive (y)", "best": "inconclusive (y)"}
    ).startswith("inconclusive")

    def ratio(shifted, control, se=0.01):
        return {"shifted": {"ekf": (shifted, se)}, "control": {"ekf": (control, se)}}

    assert tf._why_not_verdict(ratio(1.2, 1.18), 0.02, 0.01) == "holds"
    assert tf._why_not_verdict(ratio(1.4, 1.1), 0.3, 0.01) == "fails"
    assert tf._why_not_verdict(ratio(0.9, 1.0), -0.1 + 0.05, 0.01) == "fails"
    assert tf._why_not_verdict(ratio(1.2, 1.12), 0.08, 0.02).startswith("inconclusive")


def test_equivalence_verdict():
    assert tf._equivalence_verdict(-0.01, 0.004, 0.03) == "holds"
    assert tf._equivalence_verdict(0.1, 0.01, 0.03) == "fails"
    assert tf._equivalence_verdict(-0.02, 0.01, 0.03).startswith("inconclusive")


def test_quick_verdict_leaves_the_decision_to_the_default_run():
    from kalmanjax.experiments._result import quick_verdict

    assert (
        quick_verdict("holds", True, "2 seeds")
        == "inconclusive (quick: 2 seeds; holds)"
    )
    assert (
        quick_verdict("fails (b is better)", False, "2 seeds") == "fails (b is better)"
    )
    assert quick_verdict("inconclusive (within 2 standard errors)", True, "x") == (
        "inconclusive (within 2 standard errors)"
    )
