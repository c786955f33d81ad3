r"""Resampling of weighted particles: multinomial, stratified, systematic.

Each scheme maps normalised weights :math:`w \in \Delta^{N-1}` to ancestor
indices :math:`a_1..a_N` with :math:`E[\#\{j : a_j = i\}] = N w_i` (unbiased),
by inverting the cumulative weights at :math:`N` uniforms:

- multinomial: :math:`N` independent uniforms;
- stratified: one uniform in each stratum, :math:`u_j = (j + U_j) / N`;
- systematic: one shared uniform, :math:`u_j = (j + U) / N` (each count is
  :math:`\lfloor N w_i \rfloor` or :math:`\lceil N w_i \rceil`).

Stratified and systematic resampling add less variance than multinomial. The
indices are integers, so no gradient flows through them; see
:func:`kalmanjax.particle_filter` for the differentiable option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

__all__ = [
    "RESAMPLING",
    "Resampling",
    "effective_sample_size",
    "multinomial",
    "resampler",
    "stratified",
    "systematic",
]

Resampling = Literal["multinomial", "stratified", "systematic"]
#: The schemes :func:`resampler` knows.
RESAMPLING = ("multinomial", "stratified", "systematic")


def _invert(weights: Array, u: Array) -> Array:
    """Indices ``i`` with ``cdf[i-1] <= u < cdf[i]``.

    A ``u`` that rounds up to the total (the last stratum's, in float32) would
    fall past the end; it takes the last particle of positive weight instead.
    """
    cdf = jnp.cumsum(weights)
    idx = jnp.searchsorted(cdf, u * cdf[-1], side="right")
    last = jnp.argmax(cdf >= cdf[-1])  # the first index reaching the total
    return jnp.minimum(idx.astype(jnp.int32), last.astype(jnp.int32))


def multinomial(
    key: Array, weights: Float[Array, " particles"]
) -> Int[Array, " particles"]:
    """Ancestors from ``N`` independent draws of ``Categorical(weights)``.

    Args:
        key: a PRNG key.
        weights: normalised weights, shape ``(particles,)``.

    Returns:
        ``int32`` ancestor indices, shape ``(particles,)``, sorted.
    """
    n = weights.shape[0]
    u = jnp.sort(jax.random.uniform(key, (n,), dtype=weights.dtype))
    return _invert(weights, u)


def stratified(
    key: Array, weights: Float[Array, " particles"]
) -> Int[Array, " particles"]:
    """Ancestors from one uniform in each of the ``N`` strata of ``[0, 1)``.

    Args:
        key: a PRNG key.
        weights: normalised weights, shape ``(particles,)``.

    Returns:
        ``int32`` ancestor indices, shape ``(particles,)``, sorted.
    """
    n = weights.shape[0]
    u = jax.random.uniform(key, (n,), dtype=weights.dtype)
    return _invert(weights, (jnp.arange(n, dtype=weights.dtype) + u) / n)


def systematic(
    key: Array, weights: Float[Array, " particles"]
) -> Int[Array, " particles"]:
    """Ancestors from one uniform shifted through the ``N`` strata.

    Args:
        key: a PRNG key.
        weights: normalised weights, shape ``(particles,)``.

    Returns:
        ``int32`` ancestor indices, shape ``(particles,)``, sorted.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> w = jnp.array([0.5, 0.25, 0.25, 0.0])
        >>> kj.resampling.systematic(jax.random.key(0), w).tolist()
        [0, 0, 1, 2]
    """
    n = weights.shape[0]
    u = jax.random.uniform(key, (), dtype=weights.dtype)
    return _invert(weights, (jnp.arange(n, dtype=weights.dtype) + u) / n)


def resampler(
    scheme: Resampling, owner: str = "resampler"
) -> Callable[[Array, Array], Array]:
    """The resampling function named ``scheme``.

    Raises:
        ValueError: on an unknown scheme.
    """
    if scheme not in RESAMPLING:
        raise ValueError(
            f"{owner}: resampling must be one of {RESAMPLING}, got {scheme!r}"
        )
    return {
        "multinomial": multinomial,
        "stratified": stratified,
        "systematic": systematic,
    }[scheme]


def effective_sample_size(log_weights: Float[Array, " particles"]) -> Float[Array, ""]:
    r""":math:`1 / \sum_i w_i^2` of the weights :math:`w \propto e^{\log w}`.

    Between 1 (one particle holds all the weight) and ``N`` (equal weights).
    """
    w = jax.nn.softmax(log_weights)
    return 1.0 / jnp.sum(w**2)
