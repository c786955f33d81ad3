r"""Token selection: order candidate tokens by the information each adds.

Greedy maximisation of :math:`\tfrac12\log\det(\Sigma_0^{-1} + \sum_{i \in A}
H_i^\top R^{-1} H_i) + \text{const}`, the information of a set :math:`A` of
tokens, one token at a time (:func:`greedy_token_order`); the log-determinant is
monotone submodular in :math:`A`, so the greedy set is within :math:`1 - 1/e`
of the best set of its size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, Int

from ..core.checks import no_type_check
from .information import condition_covariance, token_information

__all__ = ["greedy_token_order"]


@no_type_check
def greedy_token_order(
    H_candidates: Float[Array, "batch obs state"],
    prior_cov: Float[Array, "state state"],
    R: Float[Array, "obs obs"],
    num_select: int | None = None,
) -> tuple[Int[Array, " select"], Float[Array, " select"]]:
    r"""Order candidate tokens greedily by the information each adds.

    Step :math:`k` picks, among the tokens not yet chosen, the one with the
    largest :func:`token_information` under the current covariance, then
    conditions the covariance on it (no observed values are needed). The
    log-determinant is submodular in the chosen set, so the greedy set's total
    information is within :math:`1 - 1/e` of the best set of that size
    (Nemhauser, Wolsey & Fisher 1978).

    Args:
        H_candidates: the candidates' observation matrices ``(n, obs, state)``.
        prior_cov: :math:`\Sigma_0`, ``(state, state)``.
        R: the noise covariance shared by the candidates, ``(obs, obs)``.
        num_select: how many to pick (static); default all ``n``.

    Returns:
        ``(order, gains)``: the chosen indices ``(k,)`` (``int32``) and the
        information each added when chosen ``(k,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> H = jnp.array([[[1.0, 0.0]], [[0.0, 2.0]], [[0.0, 1.9]]])
        >>> order, gains = kd.greedy_token_order(H, jnp.eye(2), jnp.eye(1))
        >>> order.tolist()
        [1, 0, 2]
    """
    H_candidates = jnp.asarray(H_candidates)
    if H_candidates.ndim != 3:
        raise ValueError(
            "greedy_token_order: H_candidates must have shape (n, obs, state), got "
            f"{H_candidates.shape}"
        )
    n = H_candidates.shape[0]
    k = n if num_select is None else num_select
    if not 1 <= k <= n:
        raise ValueError(
            f"greedy_token_order: num_select must be in 1..{n}, got {num_select}"
        )
    dtype = H_candidates.dtype

    def body(carry, _):
        cov, taken = carry
        gains = jax.vmap(lambda h: token_information(cov, h, R))(H_candidates)
        gains = jnp.where(taken, -jnp.inf, gains)
        best = jnp.argmax(gains).astype(jnp.int32)
        cov = condition_covariance(cov, H_candidates[best], R)
        return (cov, taken.at[best].set(True)), (best, gains[best])

    init = (jnp.asarray(prior_cov, dtype), jnp.zeros((n,), bool))
    _, (order, gains) = lax.scan(body, init, None, length=k)
    return order, gains
