r"""Linear Kalman steps (dense, Joseph and square-root forms) and ``kalman_filter``.

One step of the filter is predict, then update:

.. math::

    m^- = F m + b, \qquad P^- = F P F^\top + Q

    e = y - (H m^- + d), \quad S = H P^- H^\top + R, \quad
    K = P^- H^\top S^{-1}

    m = m^- + K e, \qquad P = P^- - K S K^\top
    \quad\text{or (Joseph)}\quad (I - K H) P^- (I - K H)^\top + K R K^\top

The square-root form carries :math:`P = L L^\top` and never forms :math:`P`: the
predict triangularises :math:`[F L,\ L_Q]` and the update triangularises
:math:`\begin{bmatrix} L_R & H L \\ 0 & L \end{bmatrix}` (QR), with no inverse.

Missing data: NaN entries of ``y`` are not observed. Their rows of :math:`H` and
:math:`d` are zeroed and their rows and columns of :math:`R` replaced by the
identity, which gives exactly the update that drops those dimensions, with static
shapes and finite gradients; a fully missing ``y`` leaves the belief unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import jax.numpy as jnp

from . import _checks
from ._base import Filter, Gaussian, SqrtGaussian, UpdateInfo, to_dense, to_sqrt
from ._linalg import GENERAL, LinalgOps, choose_ops, logdet_from_chol, mT, symmetrize
from .models import (
    DynamicsLike,
    LinearDynamics,
    LinearObservation,
    ObservationLike,
    get_obs,
    resolve,
)

__all__ = ["FORMS", "kalman_filter", "predict", "update"]

Form = Literal["dense", "joseph", "sqrt"]
#: The covariance forms :func:`kalman_filter` accepts.
FORMS = ("dense", "joseph", "sqrt")

_LOG_2PI = math.log(2.0 * math.pi)


def _zeros_if_none(v, n, dtype):
    return jnp.zeros((n,), dtype) if v is None else v


# ------------------------------------------------------------------------ predict


def _predict(belief, dyn: LinearDynamics, ops: LinalgOps, chol_q=None, sym=True):
    F = dyn.F
    mean = ops.matmul(F, belief.mean)
    if dyn.b is not None:
        mean = mean + dyn.b
    if isinstance(belief, SqrtGaussian):
        if chol_q is None:
            chol_q = ops.psd_cholesky(dyn.Q)
        chol = ops.tria(jnp.concatenate([ops.matmul(F, belief.chol), chol_q], axis=1))
        return SqrtGaussian(mean=mean, chol=chol)
    cov = ops.matmul(ops.matmul(F, belief.cov), mT(F)) + dyn.Q
    # inside a filter step the update symmetrises once; at d = 128 every extra
    # d x d symmetrisation cost ~10% of the step
    return Gaussian(mean=mean, cov=symmetrize(cov) if sym else cov)


def predict(
    belief: Gaussian | SqrtGaussian,
    dynamics: LinearDynamics,
    *,
    fast: bool | None = None,
) -> Gaussian | SqrtGaussian:
    r"""Propagate a belief through linear dynamics.

    :math:`m^- = Fm + b` and :math:`P^- = FPF^\top + Q`.

    Args:
        belief: a ``Gaussian`` (covariance form) or ``SqrtGaussian`` (the result
            keeps the form), mean of shape ``(state,)``.
        dynamics: ``LinearDynamics`` with ``F, Q`` of shape ``(state, state)``.
        fast: use the elementwise small-state kernels; ``None`` chooses them when
            ``state <= 8``.

    Returns:
        The predicted belief, same form and dtype.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> b = kj.Gaussian(mean=jnp.ones(2), cov=jnp.eye(2))
        >>> dyn = kj.LinearDynamics(F=2.0 * jnp.eye(2), Q=jnp.eye(2))
        >>> kj.predict(b, dyn).cov.diagonal().tolist()
        [5.0, 5.0]
    """
    owner = "kalmanjax.predict"
    n, dtype = _checks.check_belief(belief, owner)
    _checks.check_dynamics(dynamics, n, dtype, owner)
    return _predict(belief, dynamics, choose_ops(fast, n))


# ------------------------------------------------------------------------- update


def _mask_missing(obs, model: LinearObservation, dtype):
    """Zero out NaN dimensions so the update equals dropping them."""
    m = model.H.shape[0]
    observed = ~jnp.isnan(obs)
    y = jnp.where(observed, obs, 0.0).astype(dtype)
    H = jnp.where(observed[:, None], model.H, 0.0).astype(dtype)
    d = jnp.where(observed, _zeros_if_none(model.d, m, dtype), 0.0).astype(dtype)
    both = observed[:, None] & observed[None, :]
    R = jnp.where(both, model.R, jnp.eye(m, dtype=dtype)).astype(dtype)
    num_observed = jnp.sum(observed).astype(dtype)
    return y, H, R, d, num_observed


def _update(
    belief,
    obs,
    model: LinearObservation,
    ops: LinalgOps,
    joseph: bool,
    missing: bool,
    predicted=None,
):
    """The linear update.

    ``predicted`` (if given) replaces :math:`H m^- + d`: the EKF passes
    :math:`h(m^-)` itself rather than ``d = h(m^-) - H m^-``.
    """
    dtype = belief.mean.dtype
    m = model.H.shape[0]
    if missing:
        y, H, R, d, num_observed = _mask_missing(obs, model, dtype)
    else:
        y, H, R = obs, model.H, model.R
        d, num_observed = _zeros_if_none(model.d, m, dtype), m
    chol_r = ops.cholesky(R)
    if predicted is None:
        innovation = y - ops.matmul(H, belief.mean) - d
    else:
        innovation = y - (
            jnp.where(jnp.isnan(obs), 0.0, predicted) if missing else predicted
        )

    if isinstance(belief, SqrtGaussian):
        n = belief.mean.shape[0]
        L = belief.chol
        top = jnp.concatenate([chol_r, ops.matmul(H, L)], axis=1)
        bottom = jnp.concatenate([jnp.zeros((n, m), dtype), L], axis=1)
        tri = ops.tria(jnp.concatenate([top, bottom], axis=0))
        chol_s, gain_factor, chol_new = tri[:m, :m], tri[m:, :m], tri[m:, m:]
        z = ops.solve_lower(chol_s, innovation)
        new = SqrtGaussian(mean=belief.mean + ops.matmul(gain_factor, z), chol=chol_new)
        innovation_cov = ops.matmul(chol_s, mT(chol_s))
    else:
        P = belief.cov
        HP = ops.matmul(H, P)
        innovation_cov = symmetrize(ops.matmul(HP, mT(H)) + R)
        chol_s = ops.cholesky(innovation_cov)
        z = ops.solve_lower(chol_s, innovation)
        W = ops.solve_lower(chol_s, HP)  # L_S^{-1} H P; K = W^T L_S^{-T}
        mean = belief.mean + ops.matmul(mT(W), z)
        if joseph:
            K = mT(ops.solve_lower_t(chol_s, W))
            A = jnp.eye(P.shape[0], dtype=dtype) - ops.matmul(K, H)
            cov = ops.matmul(ops.matmul(A, P), mT(A)) + ops.matmul(
                ops.matmul(K, R), mT(K)
            )
        else:
            cov = P - ops.matmul(mT(W), W)
        new = Gaussian(mean=mean, cov=symmetrize(cov))

    logdet_s = logdet_from_chol(chol_s)
    info = UpdateInfo(
        log_likelihood=-0.5 * (jnp.sum(z * z) + logdet_s + num_observed * _LOG_2PI),
        information_gain=0.5 * (logdet_s - logdet_from_chol(chol_r)),
        innovation=innovation,
        innovation_cov=innovation_cov,
    )
    return new, info


def update(
    belief: Gaussian | SqrtGaussian,
    obs,
    observation: LinearObservation,
    *,
    joseph: bool = False,
    missing: bool = True,
    fast: bool | None = None,
) -> tuple[Gaussian | SqrtGaussian, UpdateInfo]:
    r"""Condition a belief on one observation :math:`y = Hx + d + v`.

    Args:
        belief: the predicted belief (``Gaussian`` or ``SqrtGaussian``; the result
            keeps the form), mean of shape ``(state,)``.
        obs: the observation, shape ``(obs,)``; NaN entries are missing.
        observation: ``LinearObservation`` with ``H`` of shape ``(obs, state)`` and
            positive-definite ``R`` of shape ``(obs, obs)``.
        joseph: for a covariance-form belief, use the Joseph update
            :math:`(I-KH)P(I-KH)^\top + KRK^\top` instead of :math:`P - KSK^\top`.
        missing: treat NaN entries of ``obs`` as not observed (default). With
            ``False`` a NaN propagates into the result.
        fast: use the elementwise small-state kernels; ``None`` chooses them when
            ``state`` and ``obs`` are at most 8.

    Returns:
        ``(belief, info)``: the posterior belief and an :class:`UpdateInfo`.

    Raises:
        ValueError: on shapes that do not match the belief.
        TypeError: on mixed dtypes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> obs_model = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> post, info = kj.update(prior, jnp.array([2.0]), obs_model)
        >>> post.mean.round(4).tolist(), post.cov.round(4).tolist()
        ([1.0], [[0.5]])
    """
    owner = "kalmanjax.update"
    n, dtype = _checks.check_belief(belief, owner)
    m = _checks.check_observation(observation, n, dtype, owner)
    _checks.check_obs(obs, m, dtype, owner)
    return _update(belief, obs, observation, choose_ops(fast, n, m), joseph, missing)


# ------------------------------------------------------------------------ filters


def kalman_filter(
    dynamics: DynamicsLike,
    observation: ObservationLike,
    *,
    form: Form = "dense",
    missing: bool = True,
    fast: bool | None = None,
) -> Filter:
    r"""Build the linear Kalman filter as a :class:`Filter` ``(init, step)``.

    ``step(belief, inputs)`` predicts from :math:`x_{t-1}` to :math:`x_t` and then
    conditions on :math:`y_t`; ``init(prior)`` returns the prior over :math:`x_0`
    in the chosen form. See :func:`kalmanjax.run` for the time convention.

    Args:
        dynamics: a ``LinearDynamics``, or a function ``inputs -> LinearDynamics``
            called on every step (time-varying models; see :mod:`kalmanjax.models`).
        observation: a ``LinearObservation`` or a function ``inputs ->
            LinearObservation``.
        form: ``"dense"`` (:math:`P - KSK^\top`), ``"joseph"`` or ``"sqrt"``
            (Cholesky factors and QR triangularisation; the most robust in float32).
        missing: treat NaN entries of the observations as not observed (default).
            Pass ``False`` only for data without NaNs (a NaN then propagates): the
            covariance recursion then no longer depends on the data, so ``vmap``
            over sequences of one model computes it once for the whole batch
            (see the benchmarks), and the step drops the masking work.
        fast: use the elementwise small-state kernels; ``None`` (default) chooses
            them from the static shapes when ``state`` and ``obs`` are at most 8.

    Returns:
        A ``Filter``. Its state is the belief (``Gaussian``, or ``SqrtGaussian``
        for ``form="sqrt"``); its info is an :class:`UpdateInfo`.

    Raises:
        ValueError: on an unknown ``form`` or inconsistent model shapes.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=jnp.eye(2), Q=0.01 * jnp.eye(2))
        >>> obs = kj.LinearObservation(H=jnp.eye(1, 2), R=jnp.eye(1))
        >>> filt = kj.kalman_filter(dyn, obs, form="sqrt")
        >>> prior = kj.Gaussian(mean=jnp.zeros(2), cov=jnp.eye(2))
        >>> result = kj.run(filt, prior, jnp.ones((10, 1)))
        >>> result.states.mean.shape, result.infos.log_likelihood.shape
        ((10, 2), (10,))
    """
    if form not in FORMS:
        raise ValueError(f"kalman_filter: form must be one of {FORMS}, got {form!r}")
    owner = "kalman_filter"
    sqrt = form == "sqrt"
    chol_q = None
    if isinstance(dynamics, LinearDynamics):
        n = _checks.check_square(dynamics.F, "dynamics.F", owner)
        dtype = jnp.result_type(dynamics.F)
        _checks.check_dynamics(dynamics, n, dtype, owner, ref="dynamics.F")
        if sqrt:  # time-invariant Q: factor it once, outside the scan
            chol_q = GENERAL.psd_cholesky(dynamics.Q)
    if isinstance(observation, LinearObservation):
        _checks.check_square(observation.R, "observation.R", owner)

    def init(prior: Gaussian | SqrtGaussian) -> Gaussian | SqrtGaussian:
        _checks.check_belief(prior, "kalman_filter.init")
        return to_sqrt(prior) if sqrt else to_dense(prior)

    def step(belief, inputs):
        step_owner = "kalman_filter.step"
        n, dtype = _checks.check_belief(belief, step_owner)
        obs = get_obs(inputs)
        dyn = resolve(dynamics, inputs)
        obs_model = resolve(observation, inputs)
        _checks.check_dynamics(dyn, n, dtype, step_owner)
        m = _checks.check_observation(obs_model, n, dtype, step_owner)
        _checks.check_obs(obs, m, dtype, step_owner)
        ops = choose_ops(fast, n, m)
        predicted = _predict(belief, dyn, ops, chol_q, sym=False)
        return _update(predicted, obs, obs_model, ops, form == "joseph", missing)

    def parallel(prior, xs):
        from .parallel import parallel_filter  # noqa: PLC0415  (parallel imports us)

        n = prior.mean.shape[-1]
        m = jnp.shape(get_obs(xs))[-1]
        return parallel_filter(
            dynamics,
            observation,
            prior,
            xs,
            form=form,
            missing=missing,
            ops=choose_ops(fast, n, m),
        )

    return Filter(init=init, step=step, parallel=parallel)
