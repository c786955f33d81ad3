"""Core data types: Gaussian beliefs, update infos and the ``Filter`` pair.

Everything carried through a filter is a NamedTuple of arrays, so it is a pytree
that ``jax.jit``, ``jax.vmap`` and ``jax.lax.scan`` accept as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._linalg import GENERAL

__all__ = [
    "Belief",
    "Filter",
    "FilterResult",
    "Gaussian",
    "SqrtGaussian",
    "UpdateInfo",
    "to_dense",
    "to_sqrt",
]


class Gaussian(NamedTuple):
    r"""A Gaussian belief :math:`\mathcal N(m, P)` in covariance form.

    Attributes:
        mean: :math:`m`, shape ``(state,)``.
        cov: :math:`P`, shape ``(state, state)``, symmetric positive semi-definite.
    """

    mean: Float[Array, " state"]
    cov: Float[Array, "state state"]


class SqrtGaussian(NamedTuple):
    r"""A Gaussian belief :math:`\mathcal N(m, L L^\top)` in square-root form.

    Attributes:
        mean: :math:`m`, shape ``(state,)``.
        chol: :math:`L`, shape ``(state, state)``, lower triangular with a
            non-negative diagonal.
    """

    mean: Float[Array, " state"]
    chol: Float[Array, "state state"]

    @property
    def cov(self) -> Float[Array, "state state"]:
        r"""The covariance :math:`L L^\top` (computed on access)."""
        return self.chol @ jnp.swapaxes(self.chol, -1, -2)


Belief = Gaussian | SqrtGaussian


class UpdateInfo(NamedTuple):
    r"""What one Kalman update reports besides the new belief.

    With innovation :math:`e = y - (H m^- + d)` and innovation covariance
    :math:`S = H P^- H^\top + R`, restricted to the observed dimensions:

    Attributes:
        log_likelihood: :math:`\log \mathcal N(y \mid H m^- + d, S)`, shape ``()``.
        information_gain: :math:`\tfrac12 \log\det S - \tfrac12 \log\det R`, the
            mutual information between the state and this observation (nats),
            shape ``()``; equal to :math:`\tfrac12\log\det P^- -
            \tfrac12\log\det P` when :math:`P^-` is invertible.
        innovation: :math:`e`, shape ``(obs,)``; zero in missing dimensions.
        innovation_cov: :math:`S`, shape ``(obs, obs)``; a missing dimension has
            a unit diagonal entry and no correlation with the others.
    """

    log_likelihood: Float[Array, ""]
    information_gain: Float[Array, ""]
    innovation: Float[Array, " obs"] | None
    innovation_cov: Float[Array, "obs obs"] | None


class Filter(NamedTuple):
    """A filter as a pair of pure functions (the optax ``init``/``update`` idiom).

    Attributes:
        init: ``init(prior) -> state``: the filter's state before the first step.
            For the Kalman filters the state is the belief itself.
        step: ``step(state, inputs) -> (state, info)``: one predict-then-update
            step on one time slice of the inputs (see :func:`kalmanjax.run`).
        parallel: optional ``parallel(prior, xs) -> FilterResult``, the same filter
            over a whole sequence with a temporally parallel scan; used by
            ``run(..., parallel=True)``. ``None`` when the filter has none.
    """

    init: Callable[[Any], Any]
    step: Callable[[Any, Any], tuple[Any, Any]]
    parallel: Callable[[Any, Any], Any] | None = None


class FilterResult(NamedTuple):
    """What :func:`kalmanjax.run` returns.

    Attributes:
        final: the state after the last step (for Kalman filters: the belief over
            :math:`x_T` given :math:`y_{1:T}`).
        states: the states after every step, stacked on a leading time axis of
            length ``T`` (filtered beliefs for :math:`t = 1..T`); ``None`` in lean
            mode.
        infos: the per-step infos stacked on a leading time axis; in lean mode only
            the scalar fields are kept and the others are ``None``.
    """

    final: Any
    states: Any
    infos: Any


def to_sqrt(belief: Belief) -> SqrtGaussian:
    """Convert a belief to square-root form.

    The factor is the Cholesky factor of the covariance, or for a singular
    covariance a lower-triangular factor from its eigendecomposition.
    """
    if isinstance(belief, SqrtGaussian):
        return belief
    return SqrtGaussian(mean=belief.mean, chol=GENERAL.psd_cholesky(belief.cov))


def to_dense(belief: Belief) -> Gaussian:
    """Convert a belief to covariance form."""
    if isinstance(belief, Gaussian):
        return belief
    return Gaussian(mean=belief.mean, cov=belief.cov)
