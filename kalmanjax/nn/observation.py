r"""The adapted network as a pure function of :math:`\theta`: the EKF's observation.

:func:`observation_fn` turns a frozen :class:`~kalmanjax.nn.Transformer` and an
:class:`~kalmanjax.nn.Adapter` into ``fn(theta, inputs) -> outputs`` with outputs at
every position, a plain JAX function (no Flax state), so ``jax.jacfwd(fn)`` gives
the token Jacobians :math:`J_t = \partial h_t / \partial\theta` and
:func:`kalmanjax.extended_kalman_filter` can filter :math:`\theta` over a prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flax import nnx
from jaxtyping import Array, Float

from .adapters import Adapter
from .transformer import Transformer

__all__ = ["observation_fn"]


def observation_fn(
    model: Transformer, adapter: Adapter | None = None
) -> Callable[[Float[Array, " state"] | None, Any], Array]:
    r"""Freeze ``model`` and ``adapter`` into a pure ``fn(theta, inputs)``.

    Args:
        model: the network (its current parameters are captured, by value).
        adapter: where :math:`\theta` enters; ``None`` ignores ``theta``.

    Returns:
        ``fn(theta, inputs) -> outputs`` of shape ``(T, output_dim)``, with
        ``theta`` of shape ``(adapter.dim,)``; jit-, vmap- and grad-friendly.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> from kalmanjax.nn import LowRankAdapter, Transformer, observation_fn
        >>> net = Transformer(output_dim=1, input_dim=3, width=16, depth=1, heads=2,
        ...                   max_len=8, rngs=nnx.Rngs(0))
        >>> fn = observation_fn(net, LowRankAdapter(net, "head.proj", 4,
        ...                                         rngs=nnx.Rngs(1)))
        >>> jax.jacfwd(fn)(jnp.zeros(4), jnp.ones((5, 3))).shape
        (5, 1, 4)
    """
    graphdef, state = nnx.split((model, adapter))

    def fn(theta, inputs):
        net, adapt = nnx.merge(graphdef, state)
        return net(inputs, adapter=adapt, theta=theta)

    return fn
