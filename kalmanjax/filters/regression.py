r"""In-context linear regression as a Kalman filter over the regression weights.

The testbed of the paper's claims: a task :math:`w \in \mathbb R^{d}` drifts as
:math:`w_t = w_{t-1} + \omega_t`, :math:`\omega_t \sim N(0, q I)` (:math:`q = 0`:
a fixed task), and token :math:`t` shows a design :math:`X_t` and
:math:`y_t = X_t w_t + v_t`, :math:`v_t \sim N(0, r I)`. With one scalar per
token, :math:`X_t = x_t^\top` and the filter's mean is the ridge / Bayesian
linear-regression posterior mean of the tokens so far.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Real

from ..core.filter import Filter
from ..core.models import LinearDynamics, LinearObservation
from ..steps.linear import Form
from .kalman import kalman_filter

__all__ = ["regression_design", "regression_filter"]


def regression_design(inputs: Any) -> Float[Array, "obs state"]:
    r"""The default design: ``inputs["x"]`` as one row ``(1, state)``, or as it is.

    A vector ``x`` of shape ``(state,)`` is one scalar observation
    :math:`y = x^\top w`; a matrix of shape ``(obs, state)`` is ``obs`` of them.
    """
    x = inputs["x"]
    return x[None, :] if x.ndim == 1 else x


def regression_filter(
    dim: int,
    noise_var: Real[ArrayLike, ""],
    process_var: Real[ArrayLike, ""] = 0.0,
    *,
    dtype: Any = None,
    design: Callable[[Any], Array] = regression_design,
    form: Form = "joseph",
) -> Filter:
    r"""The Kalman filter over regression weights (:math:`F = I, Q = qI, H_t = X_t`).

    The observation noise is :math:`R = rI`.

    Args:
        dim: :math:`d`, the number of weights (the state).
        noise_var: :math:`r` (a float or a traced scalar, e.g. a learned one).
        process_var: :math:`q`; 0 (default) is a fixed task.
        dtype: the state's dtype; default the default float dtype.
        design: ``design(inputs) -> X_t`` of shape ``(obs, state)``; default
            :func:`regression_design` (reads ``inputs["x"]``).
        form: the covariance form (see :func:`kalmanjax.kalman_filter`).

    Returns:
        A ``Filter`` whose per-step inputs hold ``"obs"`` (shape ``(obs,)``) and
        what ``design`` reads.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> filt = kj.regression_filter(2, noise_var=0.01)
        >>> x = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> xs = {"obs": (x @ jnp.array([1.0, -2.0]))[:, None], "x": x}
        >>> prior = kj.Gaussian(jnp.zeros(2), jnp.eye(2))
        >>> [round(v, 2) for v in kj.run(filt, prior, xs).final.mean.tolist()]
        [0.99, -1.98]
    """
    dtype = jnp.result_type(float) if dtype is None else dtype
    eye = jnp.eye(dim, dtype=dtype)
    dynamics = LinearDynamics(F=eye, Q=jnp.asarray(process_var, dtype) * eye)
    r = jnp.asarray(noise_var, dtype)

    def observation(inputs: Any) -> LinearObservation:
        H = design(inputs)
        return LinearObservation(H=H, R=r * jnp.eye(H.shape[0], dtype=dtype))

    return kalman_filter(dynamics, observation, form=form)
