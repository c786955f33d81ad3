r"""Gaps along a path to a limit, against independent references (needs optax).

Each function runs the filter on a path of its parameter and measures how far
its final mean is from the limit's, with the limit computed independently:

* :func:`gd_gap_path`: the frozen-covariance filter against ``optax.sgd`` (and
  preconditioned SGD) along a path of learning rates :math:`\eta`;
* :func:`natural_gradient_gap_path`: the frozen :math:`\eta F^{-1}` filter against
  fixed-step natural gradient;
* :func:`projection_gap_path`: the filter with :math:`R = rI` against its
  :math:`R = 0` limit.

A limit of order :math:`q` has ``gap`` :math:`\approx C\,\text{path}^q`;
:func:`kalmanjax.diagnostics.loglog_slope` measures :math:`q`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float

from ..core import checks
from ..core.beliefs import Gaussian
from ..core.models import get_obs
from ..drivers.filtering import run
from ._common import ObservationFn, as_matrix, check_state, value_and_jacobian
from ._filters import linearized_filter
from .gradient_descent import frozen_covariance_filter
from .optax_bridge import precondition
from .projection import projection_filter

__all__ = [
    "GapPath",
    "gd_gap_path",
    "natural_gradient_gap_path",
    "projection_gap_path",
]


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

    parameter: Float[Array, " batch"]
    path: Float[Array, " batch"]
    gap: Float[Array, " batch"]
    relative_gap: Float[Array, " batch"]
    spectrum: Float[Array, "batch state"] | None = None


def _sgd_reference(h, m0, xs, tx, precond):
    """Run an optax transformation over the stream on the per-token loss."""

    def loss(theta, inputs):
        return 0.5 * jnp.sum((get_obs(inputs) - h(theta, inputs)) ** 2)

    def body(carry, inputs):
        theta, state = carry
        g = jax.grad(loss)(theta, inputs)
        J = jax.jacfwd(h)(theta, inputs)
        gain = jnp.trace(J @ precond @ J.T)  # |J|^2 in the metric of P-bar
        upd, state = tx.update(g, state, theta)
        return (optax.apply_updates(theta, upd), state), gain

    (theta, _), gains = jax.lax.scan(body, (m0, tx.init(m0)), xs)
    theta = cast(jax.Array, theta)
    return theta, jnp.mean(gains)


def gd_gap_path(
    h: ObservationFn,
    prior_mean: ArrayLike,
    xs: Any,
    learning_rates: ArrayLike,
    *,
    preconditioner: Any = None,
) -> GapPath:
    r"""Gap between the frozen-covariance filter and ``optax.sgd`` along a path.

    For each :math:`\eta` in ``learning_rates`` the filter runs over ``xs`` from
    ``prior_mean`` with frozen covariance :math:`P = \eta \bar P` and
    :math:`R = I` (any :math:`r` gives the same means for
    :math:`P = \eta r \bar P`), and ``optax.sgd(eta)`` (chained after
    :func:`~kalmanjax.limits.optax_bridge.precondition` when :math:`\bar P \ne I`)
    runs over the same tokens on :math:`\tfrac12|y_t - h(\theta, u_t)|^2`. The
    path variable is :math:`\eta\,\overline{|J|^2}`, the mean over tokens of
    :math:`\operatorname{tr}(J_t \bar P J_t^\top)` along the SGD iterates.
    Predicted: ``relative_gap`` of order 1 in the path, ``gap`` of order 2 in
    :math:`\eta`.

    Args:
        h: ``h(theta, inputs) -> (obs,)``.
        prior_mean: :math:`m_0`, shape ``(k,)``.
        xs: the per-step inputs (leading time axis ``T``; ``"obs"`` of shape
            ``(T, obs)``).
        learning_rates: the path :math:`\eta`, shape ``(L,)``.
        preconditioner: :math:`\bar P` (scalar, ``(k,)`` or ``(k, k)``); ``None``
            is :math:`I` (plain SGD).

    Returns:
        A :class:`~kalmanjax.limits.GapPath` with ``parameter`` = :math:`\eta`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax.limits import loglog_slope
        >>> h = lambda th, u: u["x"] @ th
        >>> xs = {"obs": jnp.ones((4, 1)), "x": jnp.ones((4, 1, 2))}
        >>> p = gd_gap_path(h, jnp.zeros(2), xs, jnp.array([1e-2, 1e-3]))
        >>> round(loglog_slope(p.path, p.relative_gap))
        1
    """
    owner = "gd_gap_path"
    m0 = jnp.asarray(prior_mean)
    n, dtype = check_state(m0, owner)
    etas = jnp.asarray(learning_rates, dtype)
    if etas.ndim != 1:
        raise ValueError(
            f"{owner}: learning_rates must be a vector (L,), got {etas.shape}"
        )
    pbar = as_matrix(
        1.0 if preconditioner is None else preconditioner,
        n,
        dtype,
        "preconditioner",
        owner,
    )
    filt = frozen_covariance_filter(h, noise_cov=1.0)

    def one(eta):
        out = run(filt, Gaussian(mean=m0, cov=eta * pbar), xs, lean=True)
        tx = optax.sgd(eta)
        if preconditioner is not None:
            tx = optax.chain(precondition(pbar), tx)
        ref, mean_gain = _sgd_reference(h, m0, xs, tx, pbar)
        gap = jnp.linalg.norm(out.final.mean - ref)
        return eta * mean_gain, gap, gap / jnp.linalg.norm(ref - m0)

    path, gap, rel = jax.vmap(one)(etas)
    return GapPath(parameter=etas, path=path, gap=gap, relative_gap=rel)


def natural_gradient_gap_path(
    h: ObservationFn,
    prior_mean: ArrayLike,
    xs: Any,
    learning_rates: ArrayLike,
    fisher: Float[ArrayLike, "state state"],
) -> GapPath:
    r"""Gap between the frozen-:math:`\eta F^{-1}` filter and fixed-step NGD.

    :func:`~kalmanjax.limits.gd_gap_path` with preconditioner :math:`F^{-1}`:
    the reference is ``optax.sgd(eta)`` chained after multiplying the gradient by
    :math:`F^{-1}`; the path variable is :math:`\eta\,\overline{\operatorname{tr}
    (J F^{-1} J^\top)}`. Predicted order of ``relative_gap``: 1.

    Args:
        h: ``h(theta, inputs) -> (obs,)``.
        prior_mean: :math:`m_0`, shape ``(k,)``.
        xs: the per-step inputs.
        learning_rates: the path :math:`\eta`, shape ``(L,)``.
        fisher: :math:`F`, positive definite, shape ``(k, k)``.

    Returns:
        A :class:`~kalmanjax.limits.GapPath`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax.limits import loglog_slope
        >>> h = lambda th, u: u["x"] @ th
        >>> xs = {"obs": jnp.ones((4, 1)), "x": jnp.ones((4, 1, 2))}
        >>> F = jnp.array([[2.0, 0.5], [0.5, 1.0]])
        >>> etas = jnp.array([1e-2, 1e-3])
        >>> p = natural_gradient_gap_path(h, jnp.zeros(2), xs, etas, F)
        >>> round(loglog_slope(p.path, p.relative_gap))
        1
    """
    F = jnp.asarray(fisher)
    inv = jnp.linalg.solve(F, jnp.eye(F.shape[0], dtype=F.dtype))
    return gd_gap_path(h, prior_mean, xs, learning_rates, preconditioner=inv)


def _gram_floor(h, prior, xs, frozen):
    """Smallest eigenvalue of J Sigma0 J^T (per token if frozen, else stacked)."""
    jac = jax.vmap(
        lambda u: value_and_jacobian(h, prior.mean, u, "projection_gap_path")[1]
    )(xs)
    if frozen:
        grams = jnp.einsum("tpk,kl,tql->tpq", jac, prior.cov, jac)
        return jnp.min(jnp.linalg.eigvalsh(grams))
    stacked = jac.reshape(-1, jac.shape[-1])
    return jnp.linalg.eigvalsh(stacked @ prior.cov @ stacked.T)[0]


def projection_gap_path(
    h: ObservationFn,
    prior: Gaussian,
    xs: Any,
    noise_vars: Any,
    *,
    frozen: bool = False,
) -> GapPath:
    r"""Gap between the filter with :math:`R = rI` and its :math:`R = 0` limit.

    For each :math:`r` the filter (``frozen`` or propagated, as in
    :func:`projection_filter`) runs over ``xs``; the gap is to the noise-free
    filter's final mean. The path variable is :math:`r / \lambda`, with
    :math:`\lambda` the smallest eigenvalue of :math:`J \Sigma_0 J^\top`: per
    token when ``frozen``, else of the stacked Jacobians of all tokens (both at
    the prior mean, exact for a linear ``h``). Predicted order: 1.

    Args:
        h: ``h(theta, inputs) -> (obs,)``.
        prior: the ``Gaussian`` prior :math:`(m_0, \Sigma_0)`.
        xs: the per-step inputs (leading time axis ``T``).
        noise_vars: the path :math:`r`, shape ``(L,)``.
        frozen: the frozen-covariance (Kaczmarz) path instead of the cumulative.

    Returns:
        A :class:`~kalmanjax.limits.GapPath` with ``parameter`` = :math:`r` and
        ``spectrum`` = the ascending eigenvalues of the final covariance at
        every :math:`r` (the prior's when ``frozen``).

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> from kalmanjax.limits import loglog_slope
        >>> h = lambda th, u: u["x"] @ th
        >>> xs = {"obs": jnp.array([[1.0], [2.0]]),
        ...       "x": jnp.array([[[1.0, 0.5, 0.0]], [[0.0, 1.0, 0.3]]])}
        >>> prior = kj.Gaussian(mean=jnp.zeros(3), cov=jnp.eye(3))
        >>> p = projection_gap_path(h, prior, xs, jnp.array([1e-2, 1e-3]))
        >>> round(loglog_slope(p.path, p.gap))
        1
    """
    owner = "projection_gap_path"
    _, dtype = checks.check_belief(prior, owner)
    rs = jnp.asarray(noise_vars, dtype)
    if rs.ndim != 1:
        raise ValueError(f"{owner}: noise_vars must be a vector (L,), got {rs.shape}")
    limit = run(projection_filter(h, frozen=frozen), prior, xs, lean=True).final.mean
    floor = _gram_floor(h, prior, xs, frozen)
    move = jnp.linalg.norm(limit - prior.mean)

    def one(r):
        filt = linearized_filter(h, r, frozen=frozen, owner=owner)
        final = run(filt, prior, xs, lean=True).final
        gap = jnp.linalg.norm(final.mean - limit)
        return r / floor, gap, gap / move, jnp.linalg.eigvalsh(final.cov)

    path, gap, rel, spectrum = jax.vmap(one)(rs)
    return GapPath(
        parameter=rs, path=path, gap=gap, relative_gap=rel, spectrum=spectrum
    )
