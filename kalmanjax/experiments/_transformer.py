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


def ekf_over_observations(predict, k, s2, noise_var, obs, x, y):
    """Filter theta over a stream of vector observations with the EKF.

    Step ``t`` observes ``obs[t]`` (shape ``(p,)``) as ``predict(theta, x[t],
    y[t])`` plus noise of variance ``noise_var`` (``(p,)``); ``F = I``, ``Q = 0``.

    Returns:
        The filtered means ``(T, k)`` and covariance traces ``(T,)``.
    """
    observation = NonlinearObservation(
        fn=lambda th, u: predict(th, u["x"], u["y"]), R=jnp.diag(noise_var)
    )
    filt = extended_kalman_filter(
        LinearDynamics(F=jnp.eye(k), Q=jnp.zeros((k, k))), observation, form="sqrt"
    )
    prior = Gaussian(mean=jnp.zeros(k), cov=s2 * jnp.eye(k))
    out = jax.jit(lambda xs: run_filter(filt, prior, xs))({"obs": obs, "x": x, "y": y})
    trace = jnp.sum(out.states.chol**2, axis=(1, 2))
    return out.states.mean, trace


def finetune_paths(predict, k, transform, lrs, x, y, passes: int = 1):
    """Fine-tune theta, one step per prompt in order, for every learning rate.

    ``transform`` is an optax transformation giving a direction (``optax.identity()``
    for SGD, ``optax.scale_by_adam()`` for Adam); the step is ``-lr`` times it, and
    the learning rates are mapped with ``vmap`` (one compilation for the grid). The
    loss of a prompt is the mean squared error of its ``n`` predictions.

    Returns:
        theta after every step, shape ``(len(lrs), passes * T, k)``.
    """

    def loss(theta, a, b):
        return jnp.mean((predict(theta, a, b) - b) ** 2)

    def path(lr):
        def step(carry, batch):
            theta, state = carry
            direction, state = transform.update(jax.grad(loss)(theta, *batch), state)
            theta = theta - lr * direction
            return (theta, state), theta

        theta0 = jnp.zeros(k)
        xs = (jnp.concatenate([x] * passes), jnp.concatenate([y] * passes))
        return jax.lax.scan(step, (theta0, transform.init(theta0)), xs)[1]

    return jax.jit(jax.vmap(path))(jnp.asarray(lrs))


@functools.partial(jax.jit, static_argnums=(0, 2))
def _draw(config, key, num, weight_mean):
    return sample_prompts(key, num, config, weight_mean=weight_mean)[1:]


def draw(config: ICLConfig, seed: int, num: int, weight_mean=None):
    """``(x, y)`` for ``num`` prompts (the weights are dropped)."""
    return _draw(config, jax.random.key(seed), num, weight_mean)


def checkpoints(total: int) -> np.ndarray:
    """Prompt counts to evaluate at: the powers of two up to ``total``, and it."""
    c = 2 ** np.arange(int(np.log2(total)) + 1)
    return np.unique(np.append(c, total))


def tokens_to_reach(errors: np.ndarray, tokens: np.ndarray, target: float) -> float:
    """The first token count at which ``errors <= target`` (NaN: never)."""
    hit = np.nonzero(errors <= target)[0]
    return float(tokens[hit[0]]) if hit.size else float("nan")
