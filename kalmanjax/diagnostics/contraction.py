r"""Contraction: how fast :math:`\Sigma_t` shrinks, fitted and tested.

One least-squares line fit, :math:`y \approx a + b x` with its :math:`R^2`
(:class:`LinearFit`), on transformed data:

* exponential: :math:`v_t - v_\infty \approx C e^{-\lambda t}`, a line in
  :math:`(t, \log(v_t - v_\infty))` (:func:`fit_exponential_rate`);
* power law: :math:`v_t \approx C t^{p}`, a line in :math:`(\log t, \log v_t)`
  (:func:`tail_exponent`, and :func:`loglog_slope` for a limit's order along a
  path, host-side);

and two tests of the regimes: :math:`t\operatorname{tr}\Sigma_t / (d r /
\mathbb E[x^2]) \to 1` in the :math:`Q = 0` tail (:func:`inverse_t_ratio`), and
the affine-invariant distance :math:`\delta(A, B) = \|\log\lambda(A^{-1}B)\|_2`
(:func:`riccati_distance`), in which the Riccati map contracts geometrically
when :math:`Q \succ 0`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import solve_triangular
from jaxtyping import Array, ArrayLike, Float, Real

from ..core.checks import no_type_check
from ..core.linalg import mT, symmetrize
from .arrays import as_covariance, per_matrix

__all__ = [
    "LinearFit",
    "fit_exponential_rate",
    "inverse_t_ratio",
    "loglog_slope",
    "riccati_distance",
    "tail_exponent",
]


class LinearFit(NamedTuple):
    """A least-squares line through transformed data.

    Attributes:
        slope: the fitted rate or exponent (see the function that returned it).
        intercept: the fitted intercept.
        r_squared: the fraction of variance the line explains (1 = a perfect
            fit); a poor fit means the assumed law does not describe the data.
    """

    slope: Float[Array, ""]
    intercept: Float[Array, ""]
    r_squared: Float[Array, ""]


def _line(x: Any, y: Any) -> LinearFit:
    """Least-squares line ``y ~ slope * x + intercept``; the one line fit.

    Written with array methods only, so it runs on JAX arrays (traceable, in
    their dtype) and on NumPy arrays (on the host, in float64 for
    :func:`loglog_slope`). ``x`` and ``y`` have one shape ``(L,)``.
    """
    xm, ym = x.mean(), y.mean()
    dx, dy = x - xm, y - ym
    sxx = (dx * dx).sum()
    slope = (dx * dy).sum() / sxx
    resid = dy - slope * dx
    r2 = 1.0 - (resid * resid).sum() / (dy * dy).sum()
    return LinearFit(slope=slope, intercept=ym - slope * xm, r_squared=r2)


def _time_axis(values: Array, t: Any) -> Array:
    """``t`` as an array of the values' shape and dtype; default ``1..T``."""
    if t is None:
        return jnp.arange(1, values.shape[0] + 1, dtype=values.dtype)
    t = jnp.asarray(t, dtype=values.dtype)
    if t.shape != values.shape:
        raise ValueError(
            f"t must have the shape of values {values.shape}, got {t.shape}"
        )
    return t


def fit_exponential_rate(
    values: Float[Array, " time"],
    t: Float[Array, " time"] | None = None,
    *,
    floor: float | Array = 0.0,
    start: int = 0,
    stop: int | None = None,
) -> LinearFit:
    r"""Fit :math:`v_t - v_\infty \approx C e^{-\lambda t}`; return the rate.

    The slope returned is the rate :math:`\lambda`.

    Least squares of :math:`\log(v_t - v_\infty)` on :math:`t` over
    ``values[start:stop]``. :math:`\lambda > 0` means geometric contraction by
    :math:`e^{-\lambda}` per token. Use ``floor`` for convergence towards a
    steady state (:math:`Q > 0`). A 1/t law fitted this way gives a rate that
    drifts with the window and a poor ``r_squared``; compare
    :func:`tail_exponent`.

    Args:
        values: a positive sequence, e.g. :func:`covariance_trace` or
            :func:`riccati_distance` over tokens, shape ``(T,)``.
        t: the token index of each value, ``(T,)``; default ``1..T``.
        floor: :math:`v_\infty`, subtracted first (must lie below the window's
            values).
        start: first index of the window (static).
        stop: one past the last index (static); default the end.

    Returns:
        ``LinearFit(slope=rate, intercept=log C, r_squared)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> v = 2.0 + 3.0 * jnp.exp(-0.5 * jnp.arange(1.0, 21.0))
        >>> round(float(kd.fit_exponential_rate(v, floor=2.0).slope), 4)
        0.5
    """
    values = jnp.asarray(values)
    t = _time_axis(values, t)
    fit = _line(t[start:stop], jnp.log(values[start:stop] - floor))
    return fit._replace(slope=-fit.slope)


def tail_exponent(
    values: Float[Array, " time"],
    t: Float[Array, " time"] | None = None,
    *,
    start: int = 0,
    stop: int | None = None,
) -> LinearFit:
    r"""Log-log slope: fit :math:`v_t \approx C t^{p}` on a window; return :math:`p`.

    With :math:`Q = 0` and i.i.d. tokens :math:`\operatorname{tr}\Sigma_t` has
    :math:`p = -1` for :math:`t \gg d` (no exponential contraction: an
    exponential law would show as a slope that keeps steepening with the window).

    Args:
        values: a positive sequence ``(T,)``.
        t: token indices ``(T,)``; default ``1..T``.
        start: first index of the window (static).
        stop: one past the last index (static).

    Returns:
        ``LinearFit(slope=p, intercept=log C, r_squared)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> t = jnp.arange(1.0, 101.0)
        >>> round(float(kd.tail_exponent(3.0 / t).slope), 4)
        -1.0
    """
    values = jnp.asarray(values)
    t = _time_axis(values, t)
    return _line(jnp.log(t[start:stop]), jnp.log(values[start:stop]))


@no_type_check
def loglog_slope(
    path: Float[ArrayLike, " batch"], gap: Float[ArrayLike, " batch"]
) -> float:
    r"""Least-squares slope of log(gap) against log(path).

    A limit of order :math:`q` has :math:`\text{gap} \approx C\,\text{path}^q`,
    so the slope estimates :math:`q`. The line fit of :func:`tail_exponent`
    (``tail_exponent(gap, path).slope``, in the arrays' dtype), here on the host
    in float64 after checking the inputs (not traceable).

    Args:
        path: the path variable, positive, shape ``(L,)`` with ``L >= 2``.
        gap: the gaps, positive, shape ``(L,)``.

    Returns:
        The fitted slope (a Python float); ``nan`` when every ``path`` value is
        the same (no slope to fit).

    Raises:
        ValueError: on fewer than two points, mismatched shapes or a
            non-positive value.

    Examples:
        >>> import numpy as np
        >>> from kalmanjax import diagnostics as kd
        >>> x = np.array([1e-1, 1e-2, 1e-3])
        >>> round(kd.loglog_slope(x, 3.0 * x**2), 6)
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
    # quiet 0/0: r_squared of a flat gap, the slope of a constant path (nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(_line(np.log(x), np.log(y)).slope)


def inverse_t_ratio(
    traces: Float[Array, " time"],
    dim: int,
    noise_var: Real[ArrayLike, ""],
    input_second_moment: Real[ArrayLike, ""] = 1.0,
    t: Float[Array, " time"] | None = None,
) -> Float[Array, " time"]:
    r"""The 1/t tail test: :math:`t\operatorname{tr}\Sigma_t / (d\,r / \mathbb E[x^2])`.

    It tends to 1 in the :math:`Q = 0` tail.

    With i.i.d. inputs of covariance :math:`s I` (:math:`s = \mathbb E[x_i^2]`),
    :math:`\Sigma_t^{-1} = \Sigma_0^{-1} + X^\top X / r \approx t s I / r`, so
    :math:`t\operatorname{tr}\Sigma_t \to d r / s`. For Gaussian inputs the exact
    mean is :math:`\mathbb E\,t\operatorname{tr}(X^\top X/r)^{-1} = d r t /
    (s(t - d - 1))` (inverse Wishart), so the ratio approaches 1 from above
    like :math:`1 + (d+1)/t` (less the prior's pull).

    Args:
        traces: :math:`\operatorname{tr}\Sigma_t`, ``(T,)``.
        dim: :math:`d`.
        noise_var: :math:`r`.
        input_second_moment: :math:`s = \mathbb E[x_i^2]`.
        t: token indices; default ``1..T``.

    Returns:
        The ratio, shape ``(T,)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> t = jnp.arange(1.0, 5.0)
        >>> kd.inverse_t_ratio(0.2 / t, dim=2, noise_var=0.1).round(4).tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    traces = jnp.asarray(traces)
    t = _time_axis(traces, t)
    return t * traces * input_second_moment / (dim * noise_var)


def riccati_distance(cov_a: Any, cov_b: Any) -> Float[Array, "*batch"]:
    r"""Riemannian (affine-invariant) distance between covariances.

    :math:`\delta(A, B) = \big(\sum_i \log^2 \lambda_i(A^{-1}B)\big)^{1/2}`.

    The metric in which the Riccati map is a strict contraction under
    observability and controllability (Bougerol 1993): run one filter from two
    initial covariances and :math:`\delta(\Sigma_t, \Sigma'_t)` decays
    geometrically when :math:`Q \succ 0`; fit its rate with
    :func:`fit_exponential_rate`. With :math:`Q = 0` the two information
    matrices keep a constant difference while both grow linearly, so the
    distance decays only like :math:`1/t`.

    Args:
        cov_a: beliefs or covariances ``(..., state, state)``, positive definite.
        cov_b: the same shape.

    Returns:
        Shape ``(...)``.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax import diagnostics as kd
        >>> a, b = jnp.eye(2), jnp.diag(jnp.array([jnp.e, 1.0]))
        >>> round(float(kd.riccati_distance(a, b)), 4)
        1.0
    """
    a = as_covariance(cov_a, "cov_a", "riccati_distance")
    b = as_covariance(cov_b, "cov_b", "riccati_distance")
    if a.shape != b.shape:
        raise ValueError(
            f"riccati_distance: cov_a and cov_b must have the same shape, got "
            f"{a.shape} and {b.shape}"
        )

    def one(a, b):
        chol = jnp.linalg.cholesky(symmetrize(a))
        w = solve_triangular(chol, b, lower=True)
        m = solve_triangular(chol, mT(w), lower=True)
        lam = jnp.linalg.eigvalsh(symmetrize(m))
        return jnp.sqrt(jnp.sum(jnp.log(lam) ** 2))

    if a.ndim == 2:
        return one(a, b)
    return per_matrix(one, a, b)
