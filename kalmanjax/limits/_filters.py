"""Private: the Kalman filter of a linearised observation, built on ``kj.update``.

Every limit in :mod:`kalmanjax.limits` is this one filter with its parameters taken
along a path (static state, :math:`F = I`, :math:`Q = 0`):

* ``frozen=True``: the covariance is not propagated; every step conditions the
  *same* prior covariance :math:`P` (the gradient-descent and Kaczmarz limits);
* ``frozen=False``: the covariance is propagated (the Q = 0 extended Kalman filter,
  whose mean recursion is online natural gradient; with :math:`R = 0` the
  cumulative projection).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ..core import checks as _checks
from ..core.beliefs import Gaussian, to_dense
from ..core.filter import Filter
from ..core.models import get_obs
from ..steps.linear import update
from ._linearize import ObservationFn, linearized_observation


def linearized_filter(
    h: ObservationFn,
    noise_cov: Any,
    *,
    frozen: bool,
    owner: str,
    noise_free: bool = False,
) -> Filter:
    """The filter described in the module docstring (state: a dense ``Gaussian``)."""

    def init(prior: Any) -> Gaussian:
        _checks.check_belief(prior, f"{owner}.init")
        return to_dense(prior)

    def step(belief: Gaussian, inputs: Any):
        step_owner = f"{owner}.step"
        _checks.check_belief(belief, step_owner)
        obs_model = linearized_observation(
            h, belief.mean, inputs, noise_cov, step_owner
        )
        post, info = update(belief, get_obs(inputs), obs_model)
        if frozen:  # no covariance propagation: the next step sees the same P
            post = Gaussian(mean=post.mean, cov=belief.cov)
        if noise_free:  # 1/2 log det S - 1/2 log det 0: a noise-free token is
            # worth infinitely many nats (the core reports NaN from log det 0)
            gain = jnp.full_like(info.information_gain, jnp.inf)
            info = info._replace(information_gain=gain)
        return post, info

    return Filter(init=init, step=step)
