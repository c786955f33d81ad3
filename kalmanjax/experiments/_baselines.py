r"""Baselines and statistics shared by the experiments.

* :func:`online_fit`: online fine-tuning, one optimiser step per token, in the
  four variants a referee names: constant-rate SGD, SGD on a :math:`1/t`
  schedule, Polyak averaging of constant-rate SGD, and Adam.
* :func:`choose`: the configuration with the least calibration score, and whether
  it is interior to its grid (a best rate at the grid's edge means the grid was
  too narrow).
* :func:`first_below` and :func:`bootstrap_se`: tokens-to-threshold on a mean
  curve and the standard error of a statistic of resampled tasks.
* :func:`importance_posterior`: a sampled reference posterior for a filter's
  Gaussian (self-normalised importance sampling from a widened proposal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

#: online fine-tuning variants: constant-rate SGD, SGD at rate lr / (1 + t / h),
#: the running (Polyak-Ruppert) average of constant-rate SGD, Adam
ONLINE = ("sgd", "sgd_1/t", "polyak", "adam")


def online_fit(
    loss: Callable[[jax.Array, Any], jax.Array],
    theta0: jax.Array,
    xs: Any,
    name: str,
    lr,
    horizon=1.0,
) -> jax.Array:
    r"""The estimate after each step of online fine-tuning.

    One step per token :math:`u_t` (a leaf-wise slice of ``xs``) on
    ``loss(theta, u_t)``: ``"sgd"`` moves :math:`\theta \leftarrow \theta - \eta
    g_t`; ``"sgd_1/t"`` uses :math:`\eta / (1 + t / h)` (``horizon`` :math:`h`;
    :math:`t` counts earlier steps); ``"polyak"`` reports the running mean of the
    constant-rate SGD iterates :math:`\theta_1..\theta_t`; ``"adam"`` steps by
    :math:`\eta` times optax's Adam direction.

    Args:
        loss: ``loss(theta, u) -> ()``.
        theta0: the start, ``(state,)``.
        xs: a pytree of per-token inputs with a leading time axis ``T``.
        name: one of :data:`ONLINE`.
        lr: :math:`\eta` (a float or a traced scalar).
        horizon: :math:`h` of the ``"sgd_1/t"`` schedule.

    Returns:
        ``(T, state)``: the estimate after each token.
    """
    import optax  # noqa: PLC0415  (optional dependency)

    if name not in ONLINE:
        raise ValueError(f"name must be one of {ONLINE}; got {name!r}")
    transform = optax.scale_by_adam() if name == "adam" else optax.identity()

    def body(carry, u):
        theta, state, avg, t = carry
        direction, state = transform.update(jax.grad(loss)(theta, u), state)
        rate = lr / (1.0 + t / horizon) if name == "sgd_1/t" else lr
        theta = theta - rate * direction
        avg = avg + (theta - avg) / (t + 1.0)
        return (theta, state, avg, t + 1.0), avg if name == "polyak" else theta

    zero = jnp.zeros((), theta0.dtype)
    carry = (theta0, transform.init(theta0), theta0, zero)
    # optax mixes its int32 step count with floats (Adam's bias correction), which
    # strict dtype promotion rejects: standard promotion inside this scan only
    with jax.numpy_dtype_promotion("standard"):
        return jax.lax.scan(body, carry, xs)[1]


def choose(scores: Sequence[Any]) -> tuple[int, bool]:
    """The least score's index, and whether it is interior to the grid.

    Scores compare as Python values (tuples lexicographically); interior means
    neither end of the grid.
    """
    best = min(range(len(scores)), key=lambda i: scores[i])
    return best, 0 < best < len(scores) - 1


def first_below(curve: np.ndarray, level: float) -> float:
    """First token (1-based) with ``curve <= level``; ``inf`` if none."""
    below = np.flatnonzero(np.asarray(curve) <= level)
    return float(below[0] + 1) if len(below) else float("inf")


def bootstrap_se(
    statistic: Callable[[np.ndarray], float], n: int, draws: int, seed: int
) -> float:
    """The bootstrap standard error of a statistic of ``n`` tasks.

    ``statistic(indices)`` is evaluated on ``draws`` resamples of the tasks with
    replacement; ``statistic(np.arange(n))`` is the estimate itself.
    """
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, n)) for _ in range(draws)]
    return float(np.std(values, ddof=1))


def importance_posterior(
    log_lik: Callable[[np.ndarray], np.ndarray],
    mean,
    cov,
    prior_var: float,
    key,
    samples: int,
    widen: float = 4.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    r"""The posterior's mean and covariance by self-normalised importance sampling.

    Target: the prior :math:`N(0, s^2 I)` times the likelihood; proposal
    :math:`N(m, c\,S)` (``mean``, ``widen`` times ``cov``: a Gaussian
    approximation, widened so that its tails cover the target's).

    Args:
        log_lik: ``draws (samples, k) -> (samples,)`` log-likelihoods.
        mean: :math:`m`, ``(k,)``.
        cov: :math:`S`, ``(k, k)``.
        prior_var: :math:`s^2`.
        key: a JAX random key for the draws.
        samples: the number of draws.
        widen: :math:`c`.

    Returns:
        ``(mean (k,), cov (k, k), effective sample size)``, NumPy float64.
    """
    m, S = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
    chol = np.linalg.cholesky(widen * S)
    eps = np.asarray(jax.random.normal(key, (samples, m.shape[0])), np.float64)
    draws = m + eps @ chol.T
    log_prior = -0.5 * np.sum(draws**2, axis=1) / prior_var
    log_q = -0.5 * np.sum(eps**2, axis=1)  # up to a constant shared by all draws
    log_w = np.asarray(log_lik(draws), np.float64) + log_prior - log_q
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    m_is = w @ draws
    centred = draws - m_is
    return m_is, centred.T @ (centred * w[:, None]), float(1.0 / np.sum(w**2))
