r"""Expectation-maximisation for linear-Gaussian state-space models.

The model is :math:`x_0 \sim N(m_0, P_0)`, :math:`x_{t+1} = F x_t + b + w_t`,
:math:`y_t = H x_t + d + v_t` with :math:`w_t \sim N(0, Q)`,
:math:`v_t \sim N(0, R)`, in either time convention (:func:`kalmanjax.run`).
Each iteration of :func:`fit_em`

* **E-step**: runs the Kalman filter and RTS smoother (with :math:`x_0`) under
  the current parameters, and from the smoothed marginals and the lag-one
  cross-covariances (:func:`kalmanjax.lag_one_covariances`) forms the expected
  sufficient statistics :math:`\sum E[x_t x_t^\top]`,
  :math:`\sum E[x_{t+1} x_t^\top]`, :math:`\sum E[y_t x_t^\top]`, ...;
* **M-step**: maximises the expected complete-data log-likelihood in closed form:
  :math:`[F\ b]` and :math:`[H\ d]` by least squares on those statistics,
  :math:`Q` and :math:`R` as the expected residual covariances, and
  :math:`(m_0, P_0)` as the smoothed moments of :math:`x_0` (averaged over
  sequences).

Missing data (NaN entries of ``y``) are latent like the states: given the
observed entries and :math:`x_t`, the missing ones are Gaussian under the current
:math:`(H, d, R)`, so the statistics include their conditional moments. With a
full :math:`R` these couple to the observed entries, which the statistics keep;
the iteration stays an exact EM, whose likelihood never decreases.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import cho_factor, cho_solve

from ..core import checks
from ..core.batching import batched, lapack_flops
from ..core.beliefs import Gaussian, to_dense
from ..core.linalg import symmetrize
from ..core.models import LinearDynamics, LinearObservation
from ..filters.kalman import kalman_filter
from ..steps.linear import Form
from .filtering import run
from .smoothing import lag_one_covariances, rts_smoother

__all__ = ["EM_PARAMETERS", "EMResult", "fit_em"]

#: the names :func:`fit_em` can hold fixed
EM_PARAMETERS = ("prior_mean", "prior_cov", "F", "b", "Q", "H", "d", "R")


class EMResult(NamedTuple):
    r"""What :func:`fit_em` returns.

    Attributes:
        prior: the fitted belief over :math:`x_0`.
        dynamics: the fitted ``LinearDynamics`` (``b`` is ``None`` if it was).
        observation: the fitted ``LinearObservation`` (``d`` likewise).
        log_likelihoods: :math:`\log p(y \mid \theta_i)` summed over sequences,
            for the parameters *before* iteration ``i``, shape ``(num_iters,)``;
            non-decreasing up to rounding.
    """

    prior: Gaussian
    dynamics: LinearDynamics
    observation: LinearObservation
    log_likelihoods: jax.Array


class _Moments(NamedTuple):
    """Summed first and second moments of a regression of ``y`` on ``x``."""

    x: jax.Array  # sum E[x]              (n,)
    xx: jax.Array  # sum E[x x^T]         (n, n)
    y: jax.Array  # sum E[y]              (m,)
    yy: jax.Array  # sum E[y y^T]         (m, m)
    yx: jax.Array  # sum E[y x^T]         (m, n)
    num: jax.Array  # number of terms     ()


class _Statistics(NamedTuple):
    initial_mean: jax.Array  # E[x_0]          (n,)
    initial_outer: jax.Array  # E[x_0 x_0^T]  (n, n)
    dynamics: _Moments  # x_{t+1} on x_t
    emissions: _Moments  # y_t on x_t
    log_likelihood: jax.Array


def fit_em(
    prior: Gaussian,
    dynamics: LinearDynamics,
    observation: LinearObservation,
    observations: jax.Array,
    *,
    num_iters: int = 50,
    fixed: Collection[str] = (),
    update_first: bool = False,
    form: Form = "joseph",
    missing: bool = True,
) -> EMResult:
    r"""Fit a time-invariant linear-Gaussian model by EM (closed-form M-step).

    Offsets are learned when the model has them: pass ``b`` or ``d`` (zeros, say)
    to learn a dynamics or observation offset, ``None`` to have none. The
    iterations run in one ``lax.scan``; jit the call (``num_iters``, ``fixed``,
    ``update_first``, ``form`` and ``missing`` static) to compile it once.

    Args:
        prior: the initial belief over :math:`x_0` (a ``Gaussian``, or any belief
            :func:`kalmanjax.to_dense` reads).
        dynamics: the initial ``LinearDynamics`` ``(F, Q, b)``.
        observation: the initial ``LinearObservation`` ``(H, R, d)``.
        observations: ``(T, obs)`` or a batch ``(B, T, obs)`` of sequences of
            one length; NaN entries are missing.
        num_iters: the number of EM iterations.
        fixed: names from :data:`EM_PARAMETERS` held at their initial values.
        update_first: ``y_0`` observes :math:`x_0` (dynamax's and pykalman's
            convention; see :func:`kalmanjax.run`).
        form: the E-step's filter form (see :func:`kalmanjax.kalman_filter`).
        missing: NaN entries are missing data (default). ``False`` promises
            there are none and skips their imputation and masking, which saves
            a solve per step; a NaN then makes the fit NaN.

    Returns:
        An :class:`EMResult`: the parameters after ``num_iters`` iterations and
        the log-likelihood before each.

    Raises:
        ValueError: on unknown names in ``fixed``, or shapes or dtypes that do not
            match the model.

    Examples:
        >>> import jax, jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> dyn = kj.LinearDynamics(F=0.5 * jnp.eye(1), Q=jnp.eye(1))
        >>> obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> sim = kj.simulate(jax.random.key(0), prior, dyn, obs, num_steps=200)
        >>> fit = kj.fit_em(prior, dyn, obs, sim.observations, num_iters=20)
        >>> bool(jnp.all(jnp.diff(fit.log_likelihoods) > -1e-3))
        True
    """
    owner = "fit_em"
    unknown = sorted(set(fixed) - set(EM_PARAMETERS))
    if unknown:
        raise ValueError(
            f"{owner}: unknown names in fixed: {unknown}; use {EM_PARAMETERS}"
        )
    prior = to_dense(prior)
    n, dtype = checks.check_belief(prior, owner)
    checks.check_dynamics(dynamics, n, dtype, owner)
    m = checks.check_observation(observation, n, dtype, owner)
    ys = jnp.asarray(observations)
    if ys.ndim == 2:
        ys = ys[None]
    if ys.ndim != 3 or ys.shape[-1] != m or ys.dtype != dtype:
        raise ValueError(
            f"{owner}: observations must be (T, {m}) or (B, T, {m}) in {dtype}, "
            f"got {jnp.shape(observations)} in {jnp.result_type(observations)}"
        )
    learn = frozenset(EM_PARAMETERS) - frozenset(fixed)

    def iteration(params, _):
        prior, dyn, obs_model = params
        stats = batched(
            lambda y: _expected_statistics(
                prior, dyn, obs_model, y, update_first, form, missing
            ),
            lapack_flops(max(n, m)),
        )(ys)
        return _maximise(params, stats, learn), jnp.sum(stats.log_likelihood)

    (prior, dynamics, observation), lls = lax.scan(
        iteration, (prior, dynamics, observation), None, length=num_iters
    )
    return EMResult(prior, dynamics, observation, lls)


def _expected_statistics(prior, dyn, obs_model, ys, update_first, form, missing):
    """The E-step of one sequence ``ys`` ``(T, obs)``: a :class:`_Statistics`."""
    filt = kalman_filter(dyn, obs_model, form=form, missing=missing)
    result = run(filt, prior, ys, update_first=update_first)
    filtered = result.states
    if not update_first:  # smooth x_0 too: the prior is its "filtered" belief
        first = filt.init(prior)
        filtered = jax.tree_util.tree_map(
            lambda a, b: jnp.concatenate([a[None], b], axis=0), first, filtered
        )
    smoothed = rts_smoother(dyn, filtered)
    cross = lag_one_covariances(dyn, filtered, smoothed)  # Cov(x_{k+1}, x_k)
    mean, cov = smoothed.mean, smoothed.cov
    outer = cov + mean[:, :, None] * mean[:, None, :]  # E[x_k x_k^T]
    transitions = _Moments(
        x=jnp.sum(mean[:-1], 0),
        xx=jnp.sum(outer[:-1], 0),
        y=jnp.sum(mean[1:], 0),
        yy=jnp.sum(outer[1:], 0),
        yx=jnp.sum(cross + mean[1:, :, None] * mean[:-1, None, :], 0),
        num=jnp.asarray(mean.shape[0] - 1, mean.dtype),
    )
    num_obs = ys.shape[0]  # the observed states are the last T of the trajectory
    mean_obs, cov_obs, outer_obs = mean[-num_obs:], cov[-num_obs:], outer[-num_obs:]
    if missing:
        emissions = _emission_moments(mean_obs, cov_obs, outer_obs, ys, obs_model)
    else:  # every y_t is observed: its moments are the data's
        emissions = _Moments(
            x=jnp.sum(mean_obs, 0),
            xx=jnp.sum(outer_obs, 0),
            y=jnp.sum(ys, 0),
            yy=ys.T @ ys,
            yx=ys.T @ mean_obs,
            num=jnp.asarray(num_obs, ys.dtype),
        )
    return _Statistics(
        initial_mean=mean[0],
        initial_outer=outer[0],
        dynamics=transitions,
        emissions=emissions,
        log_likelihood=jnp.sum(result.infos.log_likelihood),
    )


def _emission_moments(mean, cov, outer, ys, obs_model) -> _Moments:
    r"""Moments of :math:`y_t` on :math:`x_t`, the missing entries imputed.

    With :math:`D` the diagonal of the observed entries, :math:`W = D (D R D +
    I - D)^{-1} D` (:math:`R_{oo}^{-1}` on the observed block) and :math:`K = R W`,
    the missing entries given the observed ones and :math:`x` are
    :math:`N(H x + d + K (y - H x - d), R - K R)`, so :math:`y = A x + a + e`
    with :math:`A = (I - D)(I - K) H` and :math:`a = D y + (I - D)(d + K (y - d))`.
    """
    H, R = obs_model.H, obs_model.R
    m = H.shape[0]
    eye = jnp.eye(m, dtype=R.dtype)
    d = jnp.zeros(m, R.dtype) if obs_model.d is None else obs_model.d
    observed = ~jnp.isnan(ys)
    y0 = jnp.where(observed, ys, 0.0)

    def per_step(o, y):
        D = jnp.diag(o.astype(R.dtype))
        masked = D @ R @ D + (eye - D)
        W = D @ cho_solve(cho_factor(masked, lower=True), D)
        K = R @ W
        A = (eye - D) @ (eye - K) @ H
        a = D @ y + (eye - D) @ (d + K @ (y - d))
        return A, a, R - K @ R

    A, a, resid = batched(per_step, lapack_flops(m))(observed, y0)
    Ey = jnp.einsum("tij,tj->ti", A, mean) + a
    APA = jnp.einsum("tij,tjk,tlk->til", A, cov, A)
    return _Moments(
        x=jnp.sum(mean, 0),
        xx=jnp.sum(outer, 0),
        y=jnp.sum(Ey, 0),
        yy=jnp.sum(Ey[:, :, None] * Ey[:, None, :] + APA + resid, 0),
        yx=jnp.sum(Ey[:, :, None] * mean[:, None, :] + A @ cov, 0),
        num=jnp.asarray(ys.shape[0], R.dtype),
    )


def _maximise(params, stats: _Statistics, learn: frozenset[str]):
    """The M-step: the statistics of all sequences to new parameters."""
    prior, dyn, obs_model = params
    total = jax.tree_util.tree_map(lambda a: jnp.sum(a, 0), stats)
    num_seq = stats.initial_mean.shape[0]
    m0 = total.initial_mean / num_seq if "prior_mean" in learn else prior.mean
    P0 = prior.cov
    if "prior_cov" in learn:  # E[(x_0 - m0)(x_0 - m0)^T], averaged over sequences
        mean0 = total.initial_mean / num_seq
        P0 = total.initial_outer / num_seq - jnp.outer(mean0, mean0)
        P0 = symmetrize(P0 + jnp.outer(mean0 - m0, mean0 - m0))
    F, b = _regression(dyn.F, dyn.b, total.dynamics, "F" in learn, "b" in learn)
    Q = _residual_cov(F, b, total.dynamics) if "Q" in learn else dyn.Q
    H, d = _regression(
        obs_model.H, obs_model.d, total.emissions, "H" in learn, "d" in learn
    )
    R = _residual_cov(H, d, total.emissions) if "R" in learn else obs_model.R
    return (
        Gaussian(mean=m0, cov=P0),
        LinearDynamics(F=F, Q=Q, b=b),
        LinearObservation(H=H, R=R, d=d),
    )


def _solve_right(B, A):
    """``B A^{-1}`` for a symmetric positive definite ``A``."""
    return cho_solve(cho_factor(A, lower=True), B.T).T


def _regression(W, c, s: _Moments, learn_w: bool, learn_c: bool):
    r"""Least squares for :math:`E[y] = W x + c` from the summed moments.

    An offset ``c`` of ``None`` stays ``None`` (there is none to learn).
    """
    learn_c = learn_c and c is not None
    if learn_w and learn_c:
        n = W.shape[1]
        gram = jnp.block([[s.xx, s.x[:, None]], [s.x[None, :], s.num[None, None]]])
        Wc = _solve_right(jnp.concatenate([s.yx, s.y[:, None]], axis=1), gram)
        return Wc[:, :n], Wc[:, n]
    if learn_w:
        shift = s.yx if c is None else s.yx - jnp.outer(c, s.x)
        return _solve_right(shift, s.xx), c
    if learn_c:
        return W, (s.y - W @ s.x) / s.num
    return W, c


def _residual_cov(W, c, s: _Moments):
    r""":math:`\frac1N \sum E[(y - W x - c)(y - W x - c)^\top]`."""
    Wyx = W @ s.yx.T
    total = s.yy - Wyx - Wyx.T + W @ s.xx @ W.T
    if c is not None:
        cross = jnp.outer(c, s.y - W @ s.x)
        total = total - cross - cross.T + s.num * jnp.outer(c, c)
    return symmetrize(total / s.num)
