r"""Backward-simulation smoothing of a particle filter's output.

Given the filtered particle sets :math:`\{x^i_t, w^i_t\}` of
:func:`kalmanjax.particle_filter` for :math:`t = 1..T`, one trajectory from the
particle approximation of :math:`p(x_{1:T} \mid y_{1:T})` is drawn backwards
(Godsill, Doucet & West 2004):

.. math::

    \tilde x_T = x^j_T,\ j \sim w_T; \qquad
    \tilde x_t = x^j_t,\ j \sim w^i_t\, N(\tilde x_{t+1}; f_{t+1}(x^i_t), Q),

which needs the transition density (``Q`` positive definite). Each draw costs
:math:`O(N)` per step; unlike the filter's ancestral lines, the draws do not
collapse onto a few early particles.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float

from ..core.models import resolve
from ..filters.particle import ParticleState
from ..steps.densities import transition_log_densities

__all__ = ["backward_simulation"]


def backward_simulation(
    key: Array,
    dynamics: Any,
    filtered: ParticleState,
    xs: Any = None,
    *,
    num_samples: int = 100,
) -> Float[Array, "samples time state"]:
    r"""Draw smoothed trajectories from a particle filter's filtered sets.

    Args:
        key: a PRNG key.
        dynamics: the filter's ``NonlinearDynamics`` / ``LinearDynamics`` (``Q``
            positive definite), or the same function ``inputs -> dynamics``.
        filtered: ``run(particle_filter(...), ...).states``: particles
            ``(T, N, state)`` and log-weights ``(T, N)``.
        xs: the filter's per-step inputs (``filtered`` row ``t`` is smoothed
            with the dynamics of ``xs[t + 1]``, and ``fn(x, inputs)`` gets that
            slice); needed when ``dynamics`` is a function or its ``fn`` reads
            the inputs (without ``xs`` it gets ``None``).
        num_samples: trajectories to draw (static).

    Returns:
        ``(num_samples, T, state)`` trajectories :math:`\tilde x_{1:T}`.

    Raises:
        ValueError: if ``filtered`` is not a stacked ``ParticleState`` or
            ``dynamics`` is a function and ``xs`` is missing.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=0.9 * jnp.eye(1), Q=0.1 * jnp.eye(1))
        >>> obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> start = kj.sample_particles(
        ...     jax.random.key(0), kj.Gaussian(jnp.zeros(1), jnp.eye(1)), 200)
        >>> pf = kj.particle_filter(dyn, obs)
        >>> states = kj.run(pf, start, jnp.ones((10, 1))).states
        >>> kj.backward_simulation(jax.random.key(1), dyn, states, num_samples=5).shape
        (5, 10, 1)
    """
    owner = "backward_simulation"
    if not isinstance(filtered, ParticleState) or filtered.particles.ndim != 3:
        raise ValueError(
            f"{owner}: filtered must be a ParticleState stacked over time, "
            "particles (T, particles, state) (run(...).states)"
        )
    if callable(dynamics) and xs is None:
        raise ValueError(f"{owner}: dynamics is a function of the inputs; pass xs")
    num_steps = filtered.particles.shape[0]
    keys = jax.random.split(key, num_steps)
    last = jax.random.categorical(
        keys[-1], filtered.log_weights[-1], shape=(num_samples,)
    )
    x_last = filtered.particles[-1][last]
    # None (no leaves) scans as None: a fixed model's fn then sees inputs=None
    next_inputs = None if xs is None else jax.tree_util.tree_map(lambda a: a[1:], xs)

    def body(x_next, step_in):
        particles, log_weights, inputs, step_key = step_in
        dyn = resolve(dynamics, inputs)

        def one(target, draw_key):
            logits = log_weights + transition_log_densities(
                dyn, particles, target, inputs
            )
            return particles[jax.random.categorical(draw_key, logits)]

        x = jax.vmap(one)(x_next, jax.random.split(step_key, num_samples))
        return x, x

    _, earlier = lax.scan(
        body,
        x_last,
        (filtered.particles[:-1], filtered.log_weights[:-1], next_inputs, keys[:-1]),
        reverse=True,
    )
    trajectories = jnp.concatenate([earlier, x_last[None]], axis=0)
    return jnp.swapaxes(trajectories, 0, 1)
