r"""Calibration: the realised squared error against the covariance's prediction.

For a correctly specified linear-Gaussian model the posterior covariance is the
conditional error covariance, so :math:`\mathbb E\,|\theta^* - m_t|^2 =
\mathbb E\operatorname{tr}\Sigma_t`. :func:`mse_calibration` estimates
:math:`\rho = \mathbb E\,e / \mathbb E\,c` over independent tasks (:math:`e` the
squared error, :math:`c` the trace) with a delta-method standard error; a ratio
above 1 marks an over-confident filter (e.g. one that double counts
duplicated tokens).
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["Calibration", "mse_calibration"]


class Calibration(NamedTuple):
    r"""Mean squared error over its predicted value, with its standard error.

    Attributes:
        ratio: :math:`\widehat\rho = \overline{e^2} / \overline{\operatorname{tr}
            \Sigma}`; 1 for a calibrated filter, above 1 for an over-confident
            one.
        stderr: its standard error (delta method over the tasks).
    """

    ratio: Float[Array, "*batch"]
    stderr: Float[Array, "*batch"]


def mse_calibration(
    sq_errors: Float[Array, " batch *time"], traces: Float[Array, " ..."]
) -> Calibration:
    r"""Calibration of the posterior covariance against the realised errors.

    For a correctly specified linear-Gaussian model,
    :math:`\mathbb E\,|\theta^* - m_t|^2 = \mathbb E\operatorname{tr}\Sigma_t`
    (the posterior covariance is the conditional error covariance). Over
    :math:`n` independent tasks the estimate is :math:`\widehat\rho =
    \sum_i e_i / \sum_i c_i` with :math:`e_i = |\theta_i^* - m_{t,i}|^2` and
    :math:`c_i = \operatorname{tr}\Sigma_{t,i}`, and its standard error by the
    delta method is

    .. math::

        \operatorname{se}(\widehat\rho) = \frac{\operatorname{sd}(e_i -
        \widehat\rho\, c_i)}{\sqrt n\;\bar c}

    (sample standard deviation, ``ddof = 1``).

    Args:
        sq_errors: :math:`e_i`, one row per task, ``(tasks, ...)`` (e.g.
            ``(tasks, T)`` for every token).
        traces: :math:`c_i`, the same shape, or without the task axis when the
            covariance does not depend on the task.

    Returns:
        ``Calibration(ratio, stderr)``, each of shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> cal = kd.mse_calibration(jnp.array([0.5, 1.5, 1.0, 1.0]), jnp.array(1.0))
        >>> float(cal.ratio), round(float(cal.stderr), 4)
        (1.0, 0.2041)
    """
    e = jnp.asarray(sq_errors)
    c = jnp.broadcast_to(jnp.asarray(traces, e.dtype), e.shape)
    n = e.shape[0]
    if n < 2:
        raise ValueError(
            f"mse_calibration: need at least 2 tasks (rows of sq_errors), got {n}"
        )
    cbar = jnp.mean(c, axis=0)
    ratio = jnp.mean(e, axis=0) / cbar
    resid = e - ratio[None] * c
    stderr = jnp.std(resid, axis=0, ddof=1) / (jnp.sqrt(jnp.asarray(n, e.dtype)) * cbar)
    return Calibration(ratio=ratio, stderr=stderr)
