r"""Shared pieces of the experiments on the trained in-context transformer.

The adaptation state :math:`\theta \in \mathbb R^k` is a low-rank adapter on the
network's output head (:class:`~kalmanjax.nn.LowRankAdapter` at ``"head.proj"``).
Its prior is normalised so that the predicted output variance it induces is ~1 per
position, :math:`\Sigma_0 = s^2 I` with :math:`s^2 = n / \operatorname{E}\lVert J
\rVert_F^2` (``J`` the ``(n, k)`` Jacobian of a prompt's ``n`` predictions); the
optimisers' learning rates are quoted in the same units (``lr = c * s^2``, the
gradient-descent limit's :math:`\eta = \sigma^2 / r` with :math:`r = 1`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .. import Gaussian, LinearDynamics, NonlinearObservation, extended_kalman_filter
from .. import run as run_filter
from ..nn import LowRankAdapter, observation_fn
from ..nn.icl import (
    ICLConfig,
    bayes_predictions,
    load_pretrained,
    network_predictions,
    sample_prompts,
)
from ._baselines import online_fit

SITE = "head.proj"


def load():
    """The shipped model and its config."""
    model, config, _ = load_pretrained()
    return model, config


def adapted_predictions(model, k: int, seed: int = 0) -> Callable:
    """``predict(theta, x, y) -> (n,)``: the adapted network's predictions."""
    fn = observation_fn(model, LowRankAdapter(model, SITE, k, rngs=nnx.Rngs(seed)))

    def predict(theta, x, y):
        return network_predictions(lambda tokens: fn(theta, tokens), x, y)

    return predict


def prior_scale(predict, k: int, x, y) -> float:
    """:math:`s^2` with ``n / E ||J||_F^2`` over the given prompts (at theta = 0)."""

    @jax.jit
    def mean_sq_jacobian(x, y):
        jac = jax.vmap(lambda a, b: jax.jacfwd(predict)(jnp.zeros(k), a, b))(x, y)
        return jnp.mean(jnp.sum(jac**2, axis=(1, 2)))

    return float(x.shape[1] / mean_sq_jacobian(x, y))


@functools.partial(jax.jit, static_argnums=0)
def _bayes_moments(config: ICLConfig, x, y, weight_mean):
    pred, var = jax.vmap(lambda a, b: bayes_predictions(a, b, config, weight_mean))(
        x, y
    )
    return jnp.mean((pred - y) ** 2, axis=0), jnp.mean(var, axis=0)


def predictive_noise(config: ICLConfig, x, y, weight_mean) -> np.ndarray:
    """Per-position observation variance: the Bayes predictive variance (mean)."""
    return np.asarray(_bayes_moments(config, x, y, weight_mean)[1])


def bayes_error(config, x, y, weight_mean) -> np.ndarray:
    """Per-position squared error of the Bayes predictor (correct prior)."""
    return np.asarray(_bayes_moments(config, x, y, weight_mean)[0])


@functools.partial(jax.jit, static_argnums=0)
def _heldout_errors(predict, thetas, x, y):
    def one(theta):
        pred = jax.vmap(lambda a, b: predict(theta, a, b))(x, y)
        return jnp.mean((pred - y) ** 2, axis=0)

    return jax.lax.map(one, thetas)


def heldout_errors(predict, thetas, x, y) -> np.ndarray:
    """Per-position mean squared error on held-out prompts for each of ``thetas``.

    Args:
        predict: ``predict(theta, x, y) -> (n,)`` (one compilation per function).
        thetas: ``(C, k)``.
        x: ``(B, n, d)`` held-out inputs.
        y: ``(B, n)`` held-out outputs.

    Returns:
        ``(C, n)``.
    """
    return np.asarray(_heldout_errors(predict, jnp.asarray(thetas), x, y))


@functools.partial(jax.jit, static_argnums=(0, 1))
def ekf_over_prompts(predict, k: int, prior_var, noise_cov, x, y):
    r"""Filter theta over a stream of prompts with the EKF, one prompt per step.

    Step ``t`` observes the prompt's outputs ``y[t]`` (``(n,)``) as
    ``predict(theta, x[t], y[t])`` plus noise :math:`N(0, R)`; ``F = I``, ``Q = 0``,
    prior :math:`N(0, s^2 I)`. ``prior_var`` and ``noise_cov`` are traced (a grid
    of them compiles once, and ``vmap`` maps over them).

    Args:
        predict: ``predict(theta, x, y) -> (n,)``.
        k: the size of theta.
        prior_var: :math:`s^2`, a scalar.
        noise_cov: :math:`R`, ``(n, n)`` (a full matrix: a prompt's residuals may
            be correlated).
        x: ``(T, n, d)`` inputs.
        y: ``(T, n)`` outputs.

    Returns:
        The filtered means ``(T, k)``, covariance traces ``(T,)`` and the log
        marginal likelihood of the stream (a scalar).
    """
    observation = NonlinearObservation(
        fn=lambda th, u: predict(th, u["x"], u["y"]), R=noise_cov
    )
    filt = extended_kalman_filter(
        LinearDynamics(F=jnp.eye(k), Q=jnp.zeros((k, k))), observation, form="sqrt"
    )
    prior = Gaussian(mean=jnp.zeros(k), cov=prior_var * jnp.eye(k))
    out = run_filter(filt, prior, {"obs": y, "x": x, "y": y})
    trace = jnp.sum(out.states.chol**2, axis=(1, 2))
    return out.states.mean, trace, jnp.sum(out.infos.log_likelihood)


def residual_covariance(predict, k: int, prior_var: float, x, y, hx, hy):
    """The ``(n, n)`` second moment of held-out residuals at a first filter fit.

    The EKF over the stream ``(x, y)`` with noise the frozen network's
    per-position squared error (diagonal) and prior :math:`N(0, s^2 I)`; its last
    mean predicts the held-out prompts ``(hx, hy)``, whose residuals give the
    moment (full: a prompt's residuals share its task and may be correlated).
    """
    zero = jnp.zeros(k, y.dtype)
    frozen = jax.vmap(lambda a, b: predict(zero, a, b))(x, y)
    first = jnp.diag(jnp.mean((frozen - y) ** 2, axis=0))
    theta = ekf_over_prompts(predict, k, prior_var, first, x, y)[0][-1]
    resid = hy - jax.vmap(lambda a, b: predict(theta, a, b))(hx, hy)
    return resid.T @ resid / resid.shape[0]


class ScaleFit(NamedTuple):
    """The grid point of :func:`fit_scales`."""

    noise_scale: float
    prior_scale: float
    #: its flat index in the ``shape`` grid (noise scales x prior scales)
    flat_index: int
    shape: tuple[int, int]
    log_lik_per_prompt: float


def fit_scales(
    predict, k: int, prior_var, noise_cov, noise_scales, prior_scales, x, y
) -> ScaleFit:
    """Noise and prior multipliers maximising the stream's marginal likelihood.

    The EKF with noise ``a * noise_cov`` and prior ``b * prior_var * I`` over the
    grid ``noise_scales x prior_scales`` (one compilation, ``vmap``).

    Returns:
        A :class:`ScaleFit`: the best pair, its flat index in the
        ``(len(noise_scales), len(prior_scales))`` grid, and its log-likelihood
        per prompt.
    """
    shape = (len(noise_scales), len(prior_scales))
    a, b = (
        v.ravel()
        for v in jnp.meshgrid(
            jnp.asarray(noise_scales, y.dtype),
            jnp.asarray(prior_scales, y.dtype),
            indexing="ij",
        )
    )
    log_lik = jax.vmap(
        lambda ra, pb: ekf_over_prompts(
            predict, k, pb * prior_var, ra * noise_cov, x, y
        )[2]
    )(a, b)
    best = int(jnp.argmax(log_lik))
    return ScaleFit(
        noise_scale=float(a[best]),
        prior_scale=float(b[best]),
        flat_index=best,
        shape=shape,
        log_lik_per_prompt=float(log_lik[best]) / y.shape[0],
    )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def online_paths(predict, k: int, name: str, passes: int, lrs, horizons, x, y):
    """Fine-tune theta online, one step per prompt in order, for every configuration.

    :func:`._baselines.online_fit` (``name`` one of its variants) on the prompt's
    mean squared error, over ``passes`` passes of the stream; the configurations
    ``(lrs[c], horizons[c])`` are mapped with ``vmap`` (one compilation).

    Returns:
        theta after every step, ``(C, passes * T, k)``.
    """

    def loss(theta, u):
        return jnp.mean((predict(theta, *u) - u[1]) ** 2)

    xs = (jnp.concatenate([x] * passes), jnp.concatenate([y] * passes))
    theta0 = jnp.zeros(k, x.dtype)
    return jax.vmap(lambda lr, h: online_fit(loss, theta0, xs, name, lr, h))(
        lrs, horizons
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def ridge_refits(predict, k: int, lambdas, steps, x, y):
    r"""Refit theta on all prompts seen so far, by ridge on the linearisation at 0.

    After ``t`` prompts, :math:`\hat\theta_t(\lambda) = \arg\min_\theta
    \sum_{s \le t} \lVert y_s - p_s - J_s \theta \rVert^2 + \lambda \lVert
    \theta \rVert^2` with :math:`p_s` and :math:`J_s` the prompt's predictions and
    ``(n, k)`` Jacobian at :math:`\theta = 0`: one Gauss-Newton step from 0, the
    exact least-squares refit when ``predict`` is affine in theta (as the head
    adapter is). A small ``lambda`` is least squares (minimum norm while the
    prompts do not yet determine theta).

    Args:
        predict: ``predict(theta, x, y) -> (n,)``.
        k: the size of theta.
        lambdas: ``(C,)`` ridge penalties.
        steps: ``(P,)`` prompt counts to refit at (1-based).
        x: ``(T, n, d)`` inputs.
        y: ``(T, n)`` outputs.

    Returns:
        ``(C, P, k)``: the refit after ``steps[p]`` prompts, for each penalty.
    """
    zero = jnp.zeros(k, y.dtype)

    def normal_equations(a, b):
        jac = jax.jacfwd(predict)(zero, a, b)
        return jac.T @ jac, jac.T @ (b - predict(zero, a, b))

    gram, moment = jax.vmap(normal_equations)(x, y)
    gram = jnp.cumsum(gram, axis=0)[steps - 1]
    moment = jnp.cumsum(moment, axis=0)[steps - 1]
    eye = jnp.eye(k, dtype=y.dtype)

    def refit(lam):  # lax.map, not vmap: one LAPACK solve at a time on CPU
        return jax.lax.map(
            lambda gm: jnp.linalg.solve(gm[0] + lam * eye, gm[1]), (gram, moment)
        )

    return jax.lax.map(refit, lambdas)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _draw(config, key, num, weight_mean):
    return sample_prompts(key, num, config, weight_mean=weight_mean)[1:]


def draw(config: ICLConfig, seed: int, num: int, weight_mean=None):
    """``(x, y)`` for ``num`` prompts (the weights are dropped)."""
    return _draw(config, jax.random.key(seed), num, weight_mean)


def checkpoints(total: int, every: int | None = None) -> np.ndarray:
    """Prompt counts to evaluate at: the powers of two up to ``total``, and it.

    With ``every``: the powers of two below it, then every ``every`` prompts.
    """
    top = total if every is None else min(total, every)
    c = 2 ** np.arange(int(np.log2(top)) + 1)
    if every is not None:
        c = np.append(c, np.arange(every, total + 1, every))
    return np.unique(np.append(c, total))
