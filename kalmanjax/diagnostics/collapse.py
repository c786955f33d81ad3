r"""Covariance collapse: the size of :math:`\Sigma_t` token by token.

Three summaries of the filtered covariance :math:`\Sigma_t` (or of a stack of
them, leading axes kept):

* :math:`\operatorname{tr}\Sigma_t` (:func:`covariance_trace`), the expected
  squared error of the mean; for a ``SqrtGaussian`` :math:`\Sigma = LL^\top` it
  is :math:`\sum_{ij} L_{ij}^2`, with no product formed;
* :math:`\log\det\Sigma_t = 2\sum_i \log L_{ii}` (:func:`covariance_logdet`),
  the log volume; it falls by :math:`2\,\Delta I_t` per token with :math:`Q = 0`
  (:mod:`kalmanjax.diagnostics.information`);
* the eigenvalues :math:`\lambda_1 \le \dots \le \lambda_d`
  (:func:`covariance_eigenvalues`), squared singular values of :math:`L` in
  square-root form; with :math:`t < d` scalar tokens, :math:`d - t` of them
  are still the prior's.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core.beliefs import SqrtGaussian
from ..core.linalg import symmetrize
from .arrays import as_covariance, per_matrix

__all__ = ["covariance_eigenvalues", "covariance_logdet", "covariance_trace"]


def covariance_trace(beliefs: Any) -> Float[Array, "*batch"]:
    r""":math:`\operatorname{tr}\Sigma_t` for every leading index.

    Args:
        beliefs: a ``Gaussian`` (cov of shape ``(..., state, state)``), a
            ``SqrtGaussian`` (``chol`` of that shape; the trace is
            :math:`\sum_{ij} L_{ij}^2`) or a covariance array.

    Returns:
        Shape ``(...)``, e.g. ``(T,)`` for stacked filtered beliefs.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> b = kj.Gaussian(mean=jnp.zeros((3, 2)), cov=jnp.stack([jnp.eye(2)] * 3))
        >>> kj.diagnostics.covariance_trace(b).tolist()
        [2.0, 2.0, 2.0]
    """
    if isinstance(beliefs, SqrtGaussian):
        return jnp.sum(beliefs.chol * beliefs.chol, axis=(-2, -1))
    c = as_covariance(beliefs, "beliefs", "covariance_trace")
    return jnp.trace(c, axis1=-2, axis2=-1)


def covariance_logdet(beliefs: Any) -> Float[Array, "*batch"]:
    r""":math:`\log\det\Sigma_t` for every leading index.

    From the Cholesky factor: :math:`2\sum_i \log L_{ii}` (for a ``SqrtGaussian``
    its own factor, else a Cholesky factorisation of the covariance). A singular
    covariance gives ``-inf`` (square-root form) or ``nan`` (covariance form).

    Args:
        beliefs: a ``Gaussian``, ``SqrtGaussian`` or covariance array
            ``(..., state, state)``.

    Returns:
        Shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> b = kj.SqrtGaussian(mean=jnp.zeros(2), chol=2.0 * jnp.eye(2))
        >>> round(float(kj.diagnostics.covariance_logdet(b)), 4)  # log 16
        2.7726
    """
    if isinstance(beliefs, SqrtGaussian):
        chol = beliefs.chol
    else:
        c = as_covariance(beliefs, "beliefs", "covariance_logdet")
        chol = per_matrix(jnp.linalg.cholesky, c)
    diag = jnp.abs(jnp.diagonal(chol, axis1=-2, axis2=-1))
    return 2.0 * jnp.sum(jnp.log(diag), axis=-1)


def covariance_eigenvalues(beliefs: Any) -> Float[Array, "*batch state"]:
    r"""Eigenvalues of :math:`\Sigma_t` in ascending order.

    For a ``SqrtGaussian`` they are the squared singular values of :math:`L`
    (accurate down to :math:`\epsilon\,\|L\|^2` rather than
    :math:`\epsilon\,\|\Sigma\|`).

    Args:
        beliefs: a ``Gaussian``, ``SqrtGaussian`` or covariance array
            ``(..., state, state)``.

    Returns:
        Shape ``(..., state)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> c = jnp.diag(jnp.array([3.0, 1.0]))
        >>> kj.diagnostics.covariance_eigenvalues(c).tolist()
        [1.0, 3.0]
    """
    if isinstance(beliefs, SqrtGaussian):
        s = per_matrix(lambda L: jnp.linalg.svd(L, compute_uv=False), beliefs.chol)
        return jnp.flip(s * s, axis=-1)
    c = as_covariance(beliefs, "beliefs", "covariance_eigenvalues")
    return per_matrix(lambda a: jnp.linalg.eigvalsh(symmetrize(a)), c)
