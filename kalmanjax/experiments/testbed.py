r"""The experiments' shared testbed: in-context linear regression tasks.

A task is a weight vector :math:`\theta^* \sim N(0, \tau^2 I_d)`; the prompt's
tokens are pairs :math:`(x_t, y_t)` with :math:`x_t \sim N(0, I_d)` and
:math:`y_t = x_t^\top \theta^* + v_t`, :math:`v_t \sim N(0, r)`. The exact
posterior over :math:`\theta^*` is :func:`kalmanjax.regression_filter` (``F = I,
Q = 0, H_t = x_t^T, R = r``) run from :math:`N(0, \tau^2 I)`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, Real

__all__ = ["simulate_tasks"]


def simulate_tasks(
    key: PRNGKeyArray,
    dim: int,
    num_tokens: int,
    num_tasks: int,
    noise_var: Real[ArrayLike, ""],
    prior_var: Real[ArrayLike, ""],
) -> tuple[
    Float[Array, "batch state"],
    Float[Array, "batch time state"],
    Float[Array, "batch time"],
]:
    r"""Draw tasks and prompts.

    Args:
        key: a JAX random key.
        dim: :math:`d`, the number of weights.
        num_tokens: :math:`T`, the tokens per prompt.
        num_tasks: the number of tasks (one prompt each).
        noise_var: :math:`r`, the observation noise variance.
        prior_var: :math:`\tau^2`, the prior variance of each weight.

    Returns:
        ``theta (tasks, dim)``, ``x (tasks, T, dim)`` and ``y (tasks, T)``.

    Examples:
        >>> import jax
        >>> theta, x, y = simulate_tasks(jax.random.key(0), 3, 5, 2, 0.1, 1.0)
        >>> theta.shape, x.shape, y.shape
        ((2, 3), (2, 5, 3), (2, 5))
    """
    k_theta, k_x, k_v = jax.random.split(key, 3)
    theta = jnp.sqrt(prior_var) * jax.random.normal(k_theta, (num_tasks, dim))
    x = jax.random.normal(k_x, (num_tasks, num_tokens, dim))
    noise = jnp.sqrt(noise_var) * jax.random.normal(k_v, (num_tasks, num_tokens))
    return theta, x, jnp.einsum("ntd,nd->nt", x, theta) + noise
