"""Gap-along-a-path records and the log-log slope that measures a limit's order."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import Array, ArrayLike, Float

__all__ = ["GapPath", "loglog_slope"]


class GapPath(NamedTuple):
    r"""A filter's distance to its limit along a path of parameters.

    Attributes:
        parameter: the raw parameter of each path point (a learning rate
            :math:`\eta` or a noise variance :math:`r`), shape ``(L,)``.
        path: the dimensionless path variable that goes to 0 at the limit
            (e.g. :math:`\eta |J|^2` or :math:`r / \lambda_{\min}(J \Sigma_0
            J^\top)`), shape ``(L,)``.
        gap: :math:`|m_{\rm filter} - m_{\rm limit}|` after the last step,
            shape ``(L,)``.
        relative_gap: ``gap`` divided by the size of the limit's own move
            :math:`|m_{\rm limit} - m_0|`, shape ``(L,)``.
        spectrum: where it applies, the eigenvalues (ascending) of the filter's
            final covariance at each path point, shape ``(L, state)``; else
            ``None``.
    """

    parameter: Float[Array, " L"]
    path: Float[Array, " L"]
    gap: Float[Array, " L"]
    relative_gap: Float[Array, " L"]
    spectrum: Float[Array, "L state"] | None = None


def loglog_slope(path: Float[ArrayLike, " L"], gap: Float[ArrayLike, " L"]) -> float:
    r"""Least-squares slope of log(gap) against log(path).

    A limit of order :math:`q` has :math:`\text{gap} \approx C\,\text{path}^q`,
    so the slope estimates :math:`q`.

    Args:
        path: the path variable, positive, shape ``(L,)`` with ``L >= 2``.
        gap: the gaps, positive, shape ``(L,)``.

    Returns:
        The fitted slope (a Python float).

    Raises:
        ValueError: on fewer than two points, mismatched shapes or a
            non-positive value.

    Examples:
        >>> import numpy as np
        >>> x = np.array([1e-1, 1e-2, 1e-3])
        >>> round(loglog_slope(x, 3.0 * x**2), 6)
        2.0
    """
    x = np.asarray(path, dtype=np.float64)
    y = np.asarray(gap, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise ValueError(
            "loglog_slope: path and gap must be vectors of one length >= 2, got "
            f"shapes {x.shape} and {y.shape}"
        )
    if np.any(x <= 0) or np.any(y <= 0):
        raise ValueError("loglog_slope: path and gap must be positive")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])
