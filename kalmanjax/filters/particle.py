r"""Particle filters: bootstrap and guided proposals, adaptive resampling.

The state is a weighted particle set :math:`\{x_i, w_i\}_{i=1}^N` (normalised
log-weights) with the PRNG key that drives it, so the filter is a
:class:`~kalmanjax.Filter` that :func:`kalmanjax.run` scans like any other.
Step :math:`t`:

1. if the effective sample size :math:`1/\sum_i w_i^2` is below
   ``ess_threshold * N``, resample ancestors :math:`a_i`
   (:mod:`kalmanjax.steps.resampling`) and set :math:`w_i = 1/N`;
2. propose :math:`x'_i \sim q(\cdot \mid x_{a_i}, y_t)`: the dynamics (the
   bootstrap filter), or a Gaussian per particle (a guided filter; ``"extended"``
   is the EKF update of :math:`N(f(x_{a_i}), Q)` on :math:`y_t`, the locally
   optimal proposal when the observation is linear-Gaussian);
3. weight :math:`\tilde w_i = w_i\, p(y_t \mid x'_i)\,
   p(x'_i \mid x_{a_i}) / q(x'_i \mid x_{a_i}, y_t)` (for the bootstrap, just
   :math:`w_i p(y_t \mid x'_i)`), and report
   :math:`\log \hat p(y_t \mid y_{1:t-1}) = \log \sum_i \tilde w_i`.

The product of these estimates, :math:`\hat p(y_{1:T})`, is unbiased for
:math:`p(y_{1:T})` with any of the resampling schemes (so
:math:`\log \hat p` is biased low). Proposals are sampled by
reparametrisation, so gradients flow through the particles. Resampling is
discrete: by default the resampled weights are the constant :math:`1/N`, and
the gradient of :math:`\log \hat p` ignores the resampling (it is biased). With
``differentiable=True`` the resampled log-weights are :math:`\log w_{a_i} -
\operatorname{stop\_gradient}(\log w_{a_i}) - \log N`: the same values (to
rounding), but
their gradient carries each ancestor's score (Scibior & Wood 2021), so
:math:`\nabla \log \hat p` is a consistent estimate of the score
:math:`\nabla \log p(y_{1:T})` (the path-space estimator; its variance grows
with :math:`T`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..core import checks
from ..core.batching import batched, lapack_flops
from ..core.beliefs import Gaussian, SqrtGaussian, to_dense
from ..core.filter import Filter
from ..core.linalg import GENERAL, choose_ops, logdet_from_chol, mT
from ..core.models import (
    CategoricalObservation,
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
    get_obs,
    resolve,
)
from ..steps.densities import (
    observation_log_likelihoods,
    sample_transition,
    transition_log_densities,
    transition_means,
)
from ..steps.linear import LOG_2PI
from ..steps.nonlinear import nonlinear_update
from ..steps.resampling import Resampling, effective_sample_size, resampler

__all__ = [
    "ParticleInfo",
    "ParticleState",
    "particle_filter",
    "particle_moments",
    "sample_particles",
]


class ParticleState(NamedTuple):
    r"""A weighted particle set and the key that moves it.

    Attributes:
        particles: :math:`x_i`, shape ``(particles, state)``.
        log_weights: normalised :math:`\log w_i` (:math:`\sum_i w_i = 1`),
            shape ``(particles,)``.
        key: the PRNG key of the next step.
    """

    particles: Float[Array, "particles state"]
    log_weights: Float[Array, " particles"]
    key: Array


class ParticleInfo(NamedTuple):
    r"""What one particle-filter step reports.

    Attributes:
        log_likelihood: :math:`\log \hat p(y_t \mid y_{1:t-1})`, shape ``()``.
        ess: the effective sample size of the new weights, shape ``()``.
        resampled: whether the step resampled before proposing, shape ``()``.
        ancestors: the ancestor index of each new particle, ``(particles,)``
            (``arange`` when the step did not resample).
    """

    log_likelihood: Float[Array, ""]
    ess: Float[Array, ""]
    resampled: Bool[Array, ""]
    ancestors: Int[Array, " particles"]


Proposal = Callable[[Array, Any], Gaussian]


def sample_particles(
    key: Array, prior: Gaussian | SqrtGaussian, num_particles: int
) -> ParticleState:
    r"""Equally weighted draws from a Gaussian: the initial particle state.

    Args:
        key: a PRNG key; the state keeps a key split from it.
        prior: the belief over :math:`x_0`, mean ``(state,)``.
        num_particles: :math:`N` (static).

    Returns:
        A :class:`ParticleState` with ``N`` particles drawn by reparametrisation
        (differentiable in the prior's mean and covariance).

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> prior = kj.Gaussian(mean=jnp.zeros(2), cov=jnp.eye(2))
        >>> kj.sample_particles(jax.random.key(0), prior, 100).particles.shape
        (100, 2)
    """
    owner = "sample_particles"
    n, dtype = checks.check_belief(prior, owner)
    if not isinstance(num_particles, int | np.integer) or num_particles < 1:
        raise ValueError(
            f"{owner}: num_particles must be an integer >= 1, got {num_particles!r}"
        )
    key, draw = jax.random.split(key)
    chol = (
        prior.chol
        if isinstance(prior, SqrtGaussian)
        else GENERAL.psd_cholesky(prior.cov)
    )
    noise = jax.random.normal(draw, (num_particles, n), dtype=dtype)
    return ParticleState(
        particles=prior.mean[None] + noise @ mT(chol),
        log_weights=jnp.full((num_particles,), -np.log(num_particles), dtype),
        key=key,
    )


def particle_moments(state: ParticleState) -> Gaussian:
    r"""The weighted mean and covariance of a particle set (any leading axes).

    :math:`m = \sum_i w_i x_i`, :math:`P = \sum_i w_i (x_i - m)(x_i - m)^\top`;
    for a run's stacked states the result is stacked the same way.
    """
    w = jnp.exp(state.log_weights)
    mean = jnp.einsum("...i,...ij->...j", w, state.particles)
    centred = state.particles - mean[..., None, :]
    cov = jnp.einsum("...i,...ij,...ik->...jk", w, centred, centred)
    return Gaussian(mean=mean, cov=cov)


def particle_filter(
    dynamics: NonlinearDynamics | LinearDynamics | Callable,
    observation: Any,
    *,
    proposal: Literal["extended"] | Proposal | None = None,
    resampling: Resampling = "systematic",
    ess_threshold: float = 0.5,
    differentiable: bool = False,
) -> Filter:
    r"""Build a bootstrap or guided particle filter (module docstring).

    Start it from :func:`kalmanjax.sample_particles`; run it with
    :func:`kalmanjax.run` (vmap over keys for independent runs), read the
    filtered moments with :func:`kalmanjax.particle_moments`, the log marginal
    likelihood estimate with :func:`kalmanjax.log_marginal_likelihood`, and
    smooth with :func:`kalmanjax.backward_simulation`. The time convention is
    that of :func:`kalmanjax.run`.

    Args:
        dynamics: ``NonlinearDynamics`` or ``LinearDynamics`` (a Gaussian
            transition; ``Q`` may be singular for the bootstrap filter, must be
            positive definite for a guided one), or a function ``inputs ->
            model``.
        observation: ``LinearObservation``, ``NonlinearObservation`` (Gaussian;
            NaN entries missing), ``CategoricalObservation`` (token ids), a
            :class:`~kalmanjax.ConditionalMomentObservation` with ``log_prob``
            (e.g. :func:`kalmanjax.poisson_likelihood`), or a function
            ``inputs -> model``.
        proposal: ``None`` (bootstrap), ``"extended"`` (each particle's EKF
            update on :math:`y_t`; Gaussian or conditional-moment observations),
            or a function ``(x_prev, inputs) -> Gaussian`` giving each
            particle's proposal.
        resampling: ``"systematic"`` (default), ``"stratified"`` or
            ``"multinomial"``.
        ess_threshold: resample when the effective sample size is below
            ``ess_threshold * N``: 0 never resamples (sequential importance
            sampling), 1 at essentially every step.
        differentiable: resampled log-weights carry their ancestors' gradients
            (module docstring); the values are unchanged (to rounding).

    Returns:
        A ``Filter`` whose state is a :class:`ParticleState` and whose info is a
        :class:`ParticleInfo`.

    Raises:
        ValueError: on an unknown ``resampling`` or ``proposal``, or an
            ``ess_threshold`` outside ``[0, 1]``.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.NonlinearDynamics(fn=lambda x, u: jnp.sin(x), Q=0.1 * jnp.eye(1))
        >>> obs = kj.poisson_likelihood(lambda x, u: x)
        >>> pf = kj.particle_filter(dyn, obs)
        >>> start = kj.sample_particles(
        ...     jax.random.key(0), kj.Gaussian(jnp.zeros(1), jnp.eye(1)), 500)
        >>> out = kj.run(pf, start, jnp.array([[1.0], [0.0], [2.0]]))
        >>> out.states.particles.shape, out.infos.log_likelihood.shape
        ((3, 500, 1), (3,))
    """
    owner = "particle_filter"
    resample_fn = resampler(resampling, owner)
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(
            f"{owner}: ess_threshold must be in [0, 1], got {ess_threshold}"
        )
    if proposal is not None and proposal != "extended" and not callable(proposal):
        raise ValueError(
            f"{owner}: proposal must be None, 'extended' or a function "
            f"(x_prev, inputs) -> Gaussian, got {proposal!r}"
        )

    def init(state):
        if not isinstance(state, ParticleState):
            raise ValueError(
                f"{owner}.init: the prior must be a ParticleState (from "
                f"kj.sample_particles(key, gaussian, num_particles)), got "
                f"{type(state).__name__}"
            )
        checks.check_mean(state.particles[0], f"{owner}.init")
        num = state.particles.shape[0]
        checks.check_array(
            state.log_weights,
            "state.log_weights",
            (num,),
            state.particles.dtype,
            "(particles,)",
            f"{owner}.init",
        )
        return state

    def weigh(log_weights, log_increments, ancestors, resampled):
        total = log_weights + log_increments
        log_likelihood = jax.nn.logsumexp(total)
        normalised = total - log_likelihood
        info = ParticleInfo(
            log_likelihood=log_likelihood,
            ess=effective_sample_size(normalised),
            resampled=resampled,
            ancestors=ancestors,
        )
        return normalised, info

    def step(state, inputs):
        step_owner = f"{owner}.step"
        x, log_weights = state.particles, state.log_weights
        num, dtype = x.shape[0], x.dtype
        key, k_resample, k_propose = jax.random.split(state.key, 3)
        resampled = effective_sample_size(log_weights) < ess_threshold * num
        ancestors = jax.lax.cond(  # a select under vmap; skipped when not needed
            resampled,
            lambda: resample_fn(k_resample, jnp.exp(log_weights)),
            lambda: jnp.arange(num, dtype=jnp.int32),
        )
        picked = log_weights[ancestors]
        uniform = jnp.full_like(picked, -np.log(num))
        if differentiable:  # the value 1/N, the gradient of log w_a
            uniform = uniform + picked - jax.lax.stop_gradient(picked)
        log_weights = jnp.where(resampled, uniform, picked)
        x_prev = x[ancestors]
        y = get_obs(inputs)
        dyn, obs_model = resolve(dynamics, inputs), resolve(observation, inputs)
        _check_models(dyn, obs_model, y, x.shape[1], dtype, proposal, step_owner)
        if proposal is None:
            x_new = sample_transition(k_propose, dyn, x_prev, inputs)
            log_inc = observation_log_likelihoods(
                obs_model, y, x_new, inputs, step_owner
            )
        else:
            q = _propose(proposal, dyn, obs_model, x_prev, y, inputs)
            x_new, log_q = _sample_gaussians(k_propose, q, dtype)
            log_inc = (
                observation_log_likelihoods(obs_model, y, x_new, inputs, step_owner)
                + transition_log_densities(dyn, x_prev, x_new, inputs)
                - log_q
            )
        log_weights, info = weigh(log_weights, log_inc, ancestors, resampled)
        return ParticleState(x_new, log_weights, key), info

    def update(state, inputs):
        x = state.particles
        y = get_obs(inputs)
        obs_model = resolve(observation, inputs)
        _check_observation(obs_model, y, x.shape[1], x.dtype, f"{owner}.update")
        log_inc = observation_log_likelihoods(
            obs_model, y, x, inputs, f"{owner}.update"
        )
        ancestors = jnp.arange(x.shape[0], dtype=jnp.int32)
        log_weights, info = weigh(
            state.log_weights, log_inc, ancestors, jnp.asarray(False)
        )
        return state._replace(log_weights=log_weights), info

    return Filter(init=init, step=step, update=update)


def _check_observation(obs_model, y, n, dtype, owner) -> None:
    """The reading and the observation's fixed arrays against the particles."""
    if isinstance(obs_model, CategoricalObservation):
        checks.check_token(y, owner)
        return
    m = checks.check_vector(y, "obs", dtype, owner)
    if isinstance(obs_model, LinearObservation):
        checks.check_observation(obs_model, n, dtype, owner)
    elif isinstance(obs_model, NonlinearObservation):
        checks.check_array(
            obs_model.R, "observation.R", (m, m), dtype, "(obs, obs)", owner
        )


def _check_models(dyn, obs_model, y, n, dtype, proposal, owner) -> None:
    """Trace-time checks of one step's models (dtypes preserved, shapes named)."""
    if isinstance(dyn, LinearDynamics):
        checks.check_dynamics(dyn, n, dtype, owner, ref="the particles")
    else:
        checks.check_array(dyn.Q, "dynamics.Q", (n, n), dtype, "(state, state)", owner)
    _check_observation(obs_model, y, n, dtype, owner)
    if proposal == "extended" and isinstance(obs_model, CategoricalObservation):
        raise ValueError(
            f"{owner}: proposal='extended' needs a Gaussian or conditional-moment "
            "observation, not a CategoricalObservation (use the bootstrap filter)"
        )


def _propose(proposal, dyn, obs_model, x_prev, y, inputs) -> Gaussian:
    """Each particle's Gaussian proposal, stacked: ``mean (N, state)``."""
    n = x_prev.shape[1]
    if proposal != "extended":
        return batched(lambda x: to_dense(proposal(x, inputs)), lapack_flops(n))(x_prev)
    m = np.shape(y)[0]
    ops = choose_ops(None, n, m)
    means = transition_means(dyn, x_prev, inputs)

    def one(mean):
        predicted = Gaussian(mean=mean, cov=dyn.Q)
        return nonlinear_update(
            predicted,
            y,
            obs_model,
            inputs,
            ops,
            True,
            True,
            "jacfwd",
            1,
            "particle_filter.step",
        )[0]

    return batched(one, lapack_flops(max(n, m)), lapack=ops is GENERAL)(means)


def _sample_gaussians(key, q: Gaussian, dtype):
    r"""One draw from each ``N(q.mean[i], q.cov[i])`` and its log-density."""
    n = q.mean.shape[1]
    chol = batched(GENERAL.cholesky, lapack_flops(n))(q.cov)
    noise = jax.random.normal(key, q.mean.shape, dtype=dtype)
    x = q.mean + jnp.einsum("nij,nj->ni", chol, noise)
    log_q = (
        -0.5 * (jnp.sum(noise**2, axis=1) + n * LOG_2PI)
        - jax.vmap(logdet_from_chol)(chol) * 0.5
    )
    return x, log_q
