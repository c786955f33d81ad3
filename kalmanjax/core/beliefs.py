r"""Beliefs: the Gaussian forms a filter carries, and the contract a new form meets.

Dimension names (used in every shape in kalmanjax): ``state`` (the latent state or
adaptation vector, :math:`k` or :math:`d`), ``obs`` (one observation), ``time``
(a leading axis of stacked steps, length ``T``), ``param`` (a flat parameter
vector), ``vocab`` (a token vocabulary) and ``batch``.

Four forms exist: :class:`Gaussian` (mean and covariance), :class:`SqrtGaussian`
(mean and a lower-triangular factor :math:`L`, :math:`P = L L^\top`), and for
states too large for a ``state x state`` matrix :class:`DiagonalGaussian` (mean
and variances) and :class:`LowRankGaussian` (mean and a precision
:math:`D + W W^\top`). All are NamedTuples of arrays, so a belief, and a stack
of beliefs with a leading ``time`` axis, is a pytree that ``jit``, ``vmap`` and
``lax.scan`` accept.

**What a new belief form provides** (a diagonal or low-rank-plus-diagonal
covariance, say). The drivers (:mod:`kalmanjax.drivers`) never look inside a
belief, so a new form touches no driver. It provides:

1. *Here, in the atoms layer*: a NamedTuple with a ``mean`` field of shape
   ``(state,)`` and the arrays of its covariance structure (each with the state
   axis first, so a stack over ``time`` is ``(time, state, ...)``); a ``cov``
   property returning the dense ``(state, state)`` covariance (for tests and
   diagnostics at small ``state``; a large form may document that it is costly);
   and a branch in :func:`to_dense` (and in :func:`to_sqrt` where it converts).
   :func:`kalmanjax.core.checks.check_belief` validates ``mean`` and the factor
   field (``cov`` or ``chol`` here; a new form adds its own).
2. *In the steps layer* (:mod:`kalmanjax.steps`): ``predict(belief, dynamics)``
   and an update ``(belief, obs, model) -> (belief, UpdateInfo)`` for that form,
   reporting the :class:`~kalmanjax.UpdateInfo` fields (log-likelihood and
   information gain at least) in the belief's dtype; NaN observations are missing
   and leave the belief unchanged in those dimensions.
3. *In the filters layer*: a factory returning ``Filter(init, step)`` whose
   ``init`` converts a prior to the form and whose ``step`` predicts then updates;
   optionally an :class:`~kalmanjax.AssociativeForm` for ``run(parallel=True)``.

Every filter factory is run through one contract (``tests/filters/test_contract.py``):
stable tree structure, dtype in = dtype out, symmetric PSD covariances, one trace
under ``jit``, ``vmap`` equal to a loop, finite gradients of the log-likelihood.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

from .linalg import GENERAL, nan_unless_psd, symmetrize

__all__ = [
    "Belief",
    "DiagonalGaussian",
    "Gaussian",
    "LowRankGaussian",
    "SqrtGaussian",
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
    def cov(self) -> Float[Array, "*batch state state"]:
        r"""The covariance :math:`L L^\top`, computed on access (stacked as chol)."""
        return self.chol @ jnp.swapaxes(self.chol, -1, -2)


#: ``diag`` over the last axis (a stack of vectors gives a stack of matrices)
_diag = jnp.vectorize(jnp.diag, signature="(n)->(n,n)")


class DiagonalGaussian(NamedTuple):
    r"""A Gaussian belief :math:`\mathcal N(m, \operatorname{diag}(v))`.

    The belief of the diagonal (fully decoupled) filter: memory :math:`O(k)`.

    Attributes:
        mean: :math:`m`, shape ``(state,)``.
        var: :math:`v`, the variances, shape ``(state,)``, non-negative.
    """

    mean: Float[Array, " state"]
    var: Float[Array, " state"]

    @property
    def cov(self) -> Float[Array, "*batch state state"]:
        r"""The dense covariance :math:`\operatorname{diag}(v)` (``state^2`` memory)."""
        return _diag(self.var)


class LowRankGaussian(NamedTuple):
    r"""A Gaussian belief in precision form :math:`\mathcal N(m, (D + W W^\top)^{-1})`.

    The belief of the low-rank filter (LoFi, Chang et al. 2023): a positive
    diagonal :math:`D = \operatorname{diag}(u)` plus a rank-``r`` factor
    :math:`W`, memory :math:`O(k r)`. Covariance products go through the Woodbury
    identity, :math:`O(k r^2)`; no ``state x state`` matrix is formed.

    Attributes:
        mean: :math:`m`, shape ``(state,)``.
        precision_diag: :math:`u`, shape ``(state,)``, positive.
        precision_factor: :math:`W`, shape ``(state, rank)``.
    """

    mean: Float[Array, " state"]
    precision_diag: Float[Array, " state"]
    precision_factor: Float[Array, "state rank"]

    @property
    def precision(self) -> Float[Array, "*batch state state"]:
        r"""The dense precision :math:`D + W W^\top` (``state^2`` memory)."""
        W = self.precision_factor
        return _diag(self.precision_diag) + W @ jnp.swapaxes(W, -1, -2)

    @property
    def cov(self) -> Float[Array, "*batch state state"]:
        r"""The dense covariance :math:`(D + W W^\top)^{-1}` (``state^3`` time)."""
        return symmetrize(jnp.linalg.inv(self.precision))


Belief = Gaussian | SqrtGaussian | DiagonalGaussian | LowRankGaussian


def to_sqrt(belief: Belief) -> SqrtGaussian:
    """Convert a belief to square-root form.

    The factor is the Cholesky factor of the covariance, or for a singular
    covariance a lower-triangular factor from its eigendecomposition; a
    covariance that is not positive semi-definite gives an all-NaN factor (as
    :func:`to_dense` gives an all-NaN covariance).
    """
    if isinstance(belief, SqrtGaussian):
        return belief
    cov = nan_unless_psd(belief.cov)
    return SqrtGaussian(mean=belief.mean, chol=GENERAL.psd_cholesky(cov))


def to_dense(belief: Belief) -> Gaussian:
    r"""Convert a belief to covariance form, read as :math:`(P + P^\top)/2`.

    Every form reads a covariance the same way: the square-root form's factor is
    that of :math:`(P + P^\top)/2`, so the covariance form symmetrises too, and a
    covariance that is not positive semi-definite (to rounding) is all NaN in
    both (:func:`~kalmanjax.core.linalg.nan_unless_psd`). The structured forms
    give their dense ``cov`` (``state^2`` memory).
    """
    if isinstance(belief, Gaussian):
        return Gaussian(mean=belief.mean, cov=nan_unless_psd(symmetrize(belief.cov)))
    return Gaussian(mean=belief.mean, cov=belief.cov)
