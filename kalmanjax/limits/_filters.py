"""The Kalman filter of a linearised observation, on the EKF update.

Every limit in :mod:`kalmanjax.limits` is this one filter with its parameters taken
along a path (static state, :math:`F = I`, :math:`Q = 0`, so there is no predict):

* ``frozen=True``: the covariance is not propagated; every step conditions the
  *same* prior covariance :math:`P` (the gradient-descent and Kaczmarz limits);
* ``frozen=False``: the covariance is propagated (the Q = 0 extended Kalman filter,
  whose mean recursion is online natural gradient; with :math:`R = 0` the
  cumulative projection).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ..core import checks
from ..core.beliefs import Gaussian, to_dense
from ..core.filter import Filter
from ..core.linalg import choose_ops
from ..core.models import NonlinearObservation, get_obs
from ..steps.nonlinear import nonlinear_update
from ._common import ObservationFn, as_matrix, checked

__all__ = ["linearized_filter"]


def linearized_filter(
    h: ObservationFn,
    noise_cov: Any,
    *,
    frozen: bool,
    owner: str,
    noise_free: bool = False,
) -> Filter:
    """The filter described in the module docstring (state: a dense ``Gaussian``)."""
    fn = checked(h, owner)

    def init(prior: Any) -> Gaussian:
        checks.check_belief(prior, f"{owner}.init")
        return to_dense(prior)

    def step(belief: Gaussian, inputs: Any):
        step_owner = f"{owner}.step"
        n, dtype = checks.check_belief(belief, step_owner)
        y = get_obs(inputs)
        m = checks.check_vector(y, "obs", dtype, step_owner)
        R = as_matrix(noise_cov, m, dtype, "noise_cov", step_owner)
        post, info = nonlinear_update(
            belief,
            y,
            NonlinearObservation(fn=fn, R=R),
            inputs,
            choose_ops(None, n, m),
            joseph=False,
            missing=True,
            method="jacfwd",
            num_iter=1,
            owner=step_owner,
        )
        if frozen:  # no covariance propagation: the next step sees the same P
            post = Gaussian(mean=post.mean, cov=belief.cov)
        if noise_free:  # 1/2 log det S - 1/2 log det 0: a noise-free token is
            # worth infinitely many nats (the core reports NaN from log det 0)
            gain = jnp.full_like(info.information_gain, jnp.inf)
            info = info._replace(information_gain=gain)
        return post, info

    return Filter(init=init, step=step)
