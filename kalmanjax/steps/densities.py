r"""Model pieces as samplers and log-densities over a set of particles.

What a particle filter needs of a model, for ``N`` particles at once
(``particles`` of shape ``(N, state)``):

- the transition :math:`x' = f(x) + w`, :math:`w \sim N(0, Q)` (``Q`` may be
  singular for sampling), sampled by reparametrisation :math:`x' = f(x) + L
  \varepsilon`, :math:`L L^\top = Q`, and its log-density (``Q`` positive
  definite);
- the observation's :math:`\log p(y \mid x)`: Gaussian for
  ``LinearObservation`` / ``NonlinearObservation`` (NaN entries of ``y`` are
  dropped), :math:`\log\operatorname{softmax}(z(x))_y` for a
  ``CategoricalObservation`` (a token id outside ``0..vocab-1`` is not
  observed), ``log_prob`` for a ``ConditionalMomentObservation``.

The factor of ``Q`` or ``R`` is computed once per step, not per particle.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core.likelihoods import ConditionalMomentObservation
from ..core.linalg import GENERAL, logdet_from_chol, mT
from ..core.models import (
    CategoricalObservation,
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
)
from .linear import LOG_2PI

__all__ = [
    "observation_log_likelihoods",
    "sample_transition",
    "transition_log_densities",
    "transition_means",
]


def transition_means(
    dyn: LinearDynamics | NonlinearDynamics,
    particles: Float[Array, "particles state"],
    inputs: Any,
) -> Float[Array, "particles state"]:
    """:math:`f(x_i)` for every particle."""
    if isinstance(dyn, LinearDynamics):
        b = 0.0 if dyn.b is None else dyn.b
        return particles @ mT(dyn.F) + b
    return jax.vmap(lambda x: dyn.fn(x, inputs))(particles)


def sample_transition(
    key: Array,
    dyn: LinearDynamics | NonlinearDynamics,
    particles: Float[Array, "particles state"],
    inputs: Any,
) -> Float[Array, "particles state"]:
    r""":math:`x'_i = f(x_i) + L \varepsilon_i`, one standard normal draw each."""
    means = transition_means(dyn, particles, inputs)
    chol = GENERAL.psd_cholesky(dyn.Q)
    noise = jax.random.normal(key, means.shape, dtype=means.dtype)
    return means + noise @ mT(chol)


def _gaussian_log_densities(residuals, cov, observed):
    r""":math:`\log N(r_i; 0, C)` over the entries marked ``observed``, ``(N,)``."""
    D = jnp.diag(observed.astype(cov.dtype))
    eye = jnp.eye(cov.shape[0], dtype=cov.dtype)
    chol = GENERAL.cholesky(D @ cov @ D + (eye - D))  # C_oo on the observed block
    # one small inverse, then a matrix product over the particles (a triangular
    # solve with N right-hand sides is several times slower on CPU)
    inv_chol = GENERAL.solve_lower(chol, eye)
    white = jnp.where(observed, residuals, 0.0) @ mT(inv_chol)
    k = jnp.sum(observed).astype(cov.dtype)
    return -0.5 * (jnp.sum(white**2, axis=1) + k * LOG_2PI) - 0.5 * logdet_from_chol(
        chol
    )


def transition_log_densities(
    dyn: LinearDynamics | NonlinearDynamics,
    particles: Float[Array, "particles state"],
    x_next: Float[Array, "*particles state"],
    inputs: Any,
) -> Float[Array, " particles"]:
    r""":math:`\log N(x'; f(x_i), Q)` for every particle ``x_i`` (``Q`` definite).

    ``x_next`` is one state ``(state,)``, scored against every particle (a
    backward-simulation step), or one per particle ``(particles, state)``.
    """
    nexts = x_next if x_next.ndim == 2 else x_next[None]
    residuals = nexts - transition_means(dyn, particles, inputs)
    observed = jnp.ones(x_next.shape[-1:], bool)
    return _gaussian_log_densities(residuals, dyn.Q, observed)


def observation_log_likelihoods(
    obs_model: Any,
    y: Array,
    particles: Float[Array, "particles state"],
    inputs: Any,
    owner: str,
) -> Float[Array, " particles"]:
    r""":math:`\log p(y \mid x_i)` for every particle (module docstring).

    Raises:
        ValueError: for a ``ConditionalMomentObservation`` without ``log_prob``,
            or a model this module does not know.
    """
    if isinstance(obs_model, CategoricalObservation):
        logits = jax.vmap(lambda x: obs_model.fn(x, inputs))(particles)
        vocab = logits.shape[-1]
        observed = (y >= 0) & (y < vocab)
        picked = jax.nn.log_softmax(logits)[:, jnp.clip(y, 0, vocab - 1)]
        return jnp.where(observed, picked, 0.0)
    if isinstance(obs_model, ConditionalMomentObservation):
        log_prob = obs_model.log_prob
        if log_prob is None:
            raise ValueError(
                f"{owner}: this ConditionalMomentObservation has no log_prob; a "
                "particle filter needs the exact log-density (the constructors "
                "kj.poisson_likelihood, ... provide one)"
            )
        return jax.vmap(lambda x: log_prob(y, x, inputs))(particles)
    if isinstance(obs_model, LinearObservation):
        d = 0.0 if obs_model.d is None else obs_model.d
        predicted = particles @ mT(obs_model.H) + d
    elif isinstance(obs_model, NonlinearObservation):
        predicted = jax.vmap(lambda x: obs_model.fn(x, inputs))(particles)
    else:
        raise ValueError(f"{owner}: unknown observation model {type(obs_model)}")
    m = np.shape(y)[0]
    if predicted.shape[1:] != (m,):
        raise ValueError(
            f"{owner}: the observation model predicts {predicted.shape[1:]}, "
            f"expected (obs,) = ({m},) to match obs"
        )
    observed = ~jnp.isnan(y)
    residuals = jnp.where(observed, y, 0.0)[None] - predicted
    return _gaussian_log_densities(residuals, obs_model.R, observed)
