r"""Filters for large states: the diagonal and the low-rank (LoFi) extended filters.

``diagonal_filter`` carries a :class:`~kalmanjax.DiagonalGaussian` (memory
:math:`O(k)`), ``low_rank_filter`` a :class:`~kalmanjax.LowRankGaussian`
(precision :math:`D + W W^\top`, memory :math:`O(k r)`); the steps are in
:mod:`kalmanjax.steps.structured`. A nonlinear observation is linearised at the
predicted mean by reverse mode (one vector-Jacobian product per output, so
:math:`p` backward passes and a ``(obs, state)`` Jacobian, never
``state x state``); a ``CategoricalObservation`` (next tokens) is conditioned on
in information form, exactly or with the observed-token Fisher (``fisher``). Both
run through :func:`kalmanjax.run` and :func:`kalmanjax.log_marginal_likelihood`
like every filter, with missing data.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ..core import checks
from ..core.beliefs import DiagonalGaussian, Gaussian, LowRankGaussian, SqrtGaussian
from ..core.filter import Filter
from ..core.linalg import nan_unless_psd
from ..core.models import (
    CategoricalObservation,
    DiagonalDynamics,
    LinearDynamics,
    LinearObservation,
    NonlinearObservation,
    get_obs,
    resolve,
    with_checked_covariance,
)
from ..steps.structured import (
    FISHERS,
    diagonal_categorical_update,
    diagonal_predict,
    diagonal_update,
    jacobian_by_vjps,
    low_rank_categorical_update,
    low_rank_predict,
    low_rank_update,
)

__all__ = ["diagonal_filter", "low_rank_filter"]

StructuredDynamics = DiagonalDynamics | LinearDynamics | Callable[[Any], Any]
StructuredObservation = (
    LinearObservation
    | NonlinearObservation
    | CategoricalObservation
    | Callable[[Any], Any]
)


def _check_dynamics(dyn, n: int, dtype, owner: str, general: bool) -> None:
    if isinstance(dyn, LinearDynamics) and general:
        checks.check_dynamics(dyn, n, dtype, owner)
        return
    if not isinstance(dyn, DiagonalDynamics):
        allowed = (
            "DiagonalDynamics or LinearDynamics" if general else "DiagonalDynamics"
        )
        raise TypeError(f"{owner}: dynamics must be a {allowed}, got {type(dyn)}")
    for name, value in (("dynamics.F", dyn.F), ("dynamics.Q", dyn.Q)):
        checks.check_dtype(value, name, dtype, owner)
        if jnp.shape(value) not in ((), (n,)):
            raise ValueError(
                f"{owner}: {name} must have shape () or ({n},) (state,), got "
                f"{jnp.shape(value)}"
            )
    if dyn.b is not None:
        checks.check_array(dyn.b, "dynamics.b", (n,), dtype, "(state,)", owner)


def _checked_dynamics(dynamics):
    """Fixed dynamics whose variances are not all >= 0 read as NaN.

    As ``nan_unless_psd`` reads a covariance; a ``LinearDynamics``' ``Q`` is read
    by its diagonal here, so only the diagonal is checked (an eigendecomposition
    would cost ``state^3``).
    """
    if isinstance(dynamics, LinearDynamics):
        bad = jnp.any(jnp.isnan(nan_unless_psd(jnp.diagonal(dynamics.Q))))
        return dynamics._replace(Q=jnp.where(bad, jnp.nan, dynamics.Q))
    return with_checked_covariance(dynamics)


def _linear_observation(obs_model, mean, inputs, n: int, dtype, owner: str):
    """The observation as a ``LinearObservation`` (linearised at ``mean``)."""
    if isinstance(obs_model, LinearObservation):
        checks.check_observation(obs_model, n, dtype, owner)
        return obs_model
    if not isinstance(obs_model, NonlinearObservation):
        raise TypeError(
            f"{owner}: observation must be a LinearObservation, NonlinearObservation "
            f"or CategoricalObservation, got {type(obs_model)}"
        )
    m = checks.check_square(obs_model.R, "observation.R", owner)
    fn = lambda x: obs_model.fn(x, inputs)
    checks.check_fn_output(
        jax.eval_shape(fn, mean), (m,), "observation.fn", "(obs,)", dtype, owner
    )
    predicted, H = jacobian_by_vjps(fn, mean)
    return LinearObservation(H=H, R=obs_model.R, d=predicted - H @ mean)


def _steps(dynamics, observation, steps, check_belief, missing, fisher, owner):
    """The filter's ``step`` (predict, then update) and its ``update`` alone."""
    predict, update, categorical_update = steps

    def advance(belief, inputs, step_owner, predicts=True):
        n, dtype = check_belief(belief, step_owner)
        predicted = belief
        if predicts:
            dyn = resolve(dynamics, inputs)
            _check_dynamics(dyn, n, dtype, step_owner, predict is diagonal_predict)
            predicted = predict(belief, dyn)
        obs = get_obs(inputs)
        model = resolve(observation, inputs)
        if isinstance(model, CategoricalObservation):
            checks.check_token(obs, step_owner)
            logits = jax.eval_shape(model.fn, predicted.mean, inputs)
            checks.check_fn_output(
                logits, None, "observation.fn", "(vocab,)", dtype, step_owner
            )
            return categorical_update(predicted, obs, model, inputs, fisher)
        obs_model = _linear_observation(model, predicted.mean, inputs, n, dtype, owner)
        checks.check_obs(obs, obs_model.H.shape[0], dtype, step_owner)
        return update(predicted, obs, obs_model, missing)

    def step(belief, inputs):
        return advance(belief, inputs, f"{owner}.step")

    def update_only(belief, inputs):
        return advance(belief, inputs, f"{owner}.update", predicts=False)

    return step, update_only


def _check_fisher(fisher, owner: str) -> None:
    if fisher not in FISHERS:
        raise ValueError(f"{owner}: fisher must be one of {FISHERS}, got {fisher!r}")


def _prior_variances(prior, owner: str):
    checks.check_mean(prior.mean, f"{owner}.init")
    # variances that are not >= 0 are NaN (as nan_unless_psd reads a covariance)
    if isinstance(prior, DiagonalGaussian):
        return nan_unless_psd(prior.var)
    if isinstance(prior, SqrtGaussian):
        return jnp.sum(prior.chol * prior.chol, axis=1)
    if isinstance(prior, Gaussian):
        return nan_unless_psd(jnp.diagonal(prior.cov))
    raise TypeError(
        f"{owner}.init: prior must be a DiagonalGaussian, Gaussian or SqrtGaussian, "
        f"got {type(prior)}"
    )


def diagonal_filter(
    dynamics: StructuredDynamics,
    observation: StructuredObservation,
    *,
    missing: bool = True,
    fisher: str = "exact",
) -> Filter:
    r"""The diagonal (fully decoupled) extended Kalman filter.

    Each step predicts and updates as the dense filter would from a diagonal
    covariance and keeps the diagonal of the result (see
    :mod:`kalmanjax.steps.structured`): :math:`O(k p^2)` time and :math:`O(k p)`
    memory per step for :math:`p` outputs.

    Args:
        dynamics: a ``DiagonalDynamics`` (elementwise decay and drift), a
            ``LinearDynamics`` (its diagonal is propagated, :math:`O(k^2)`), or a
            function of the inputs returning either.
        observation: a ``LinearObservation`` or ``NonlinearObservation`` (linearised
            at the predicted mean by one reverse pass per output), a
            ``CategoricalObservation`` (the observation is a token id), or a
            function of the inputs returning one.
        missing: NaN entries of the observations are not observed (default).
        fisher: for a ``CategoricalObservation``, ``"exact"`` (the moment-matched
            update, :math:`V` reverse passes and :math:`O(k V^2)` per token) or
            ``"observed"`` (the observed-token Fisher :math:`s s^\top`,
            :math:`s = \nabla \log p_y`: one reverse pass, independent of
            :math:`V` beyond the forward pass; its log-likelihood is the plug-in
            :math:`\log p_y`). See :mod:`kalmanjax.steps.structured`.

    Returns:
        A ``Filter`` whose state is a :class:`~kalmanjax.DiagonalGaussian`. Its
        ``init`` takes a ``DiagonalGaussian``, or a ``Gaussian`` / ``SqrtGaussian``
        read by its variances (its correlations are dropped).

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(1e-4))
        >>> obs = kj.NonlinearObservation(
        ...     fn=lambda x, u: jnp.tanh(u["x"] @ x)[None], R=0.1 * jnp.eye(1)
        ... )
        >>> prior = kj.DiagonalGaussian(mean=jnp.zeros(1000), var=jnp.ones(1000))
        >>> xs = {"obs": jnp.ones((5, 1)), "x": jnp.ones((5, 1000)) / 30}
        >>> kj.run(kj.diagonal_filter(dyn, obs), prior, xs).states.var.shape
        (5, 1000)
    """
    owner = "diagonal_filter"
    _check_fisher(fisher, owner)
    dynamics = _checked_dynamics(dynamics)
    observation = with_checked_covariance(observation)

    def init(prior) -> DiagonalGaussian:
        return DiagonalGaussian(mean=prior.mean, var=_prior_variances(prior, owner))

    def check(belief, where):
        n, dtype = checks.check_mean(belief.mean, where)
        checks.check_array(belief.var, "belief.var", (n,), dtype, "(state,)", where)
        return n, dtype

    steps = (diagonal_predict, diagonal_update, diagonal_categorical_update)
    step, update = _steps(dynamics, observation, steps, check, missing, fisher, owner)
    return Filter(init=init, step=step, update=update)


def low_rank_filter(
    dynamics: StructuredDynamics,
    observation: StructuredObservation,
    *,
    rank: int,
    missing: bool = True,
    fisher: str = "exact",
) -> Filter:
    r"""The low-rank extended Kalman filter (LoFi, Chang et al. 2023).

    The belief's precision is :math:`D + W W^\top` with :math:`W` of shape
    ``(state, rank)``. Each step predicts exactly (elementwise dynamics), adds the
    observation's information as new columns and truncates back to ``rank``
    columns, folding the diagonal of what is dropped into :math:`D` (see
    :mod:`kalmanjax.steps.structured`): :math:`O(k (r + p)^2)` time and
    :math:`O(k (r + p))` memory per step. With ``rank >= state`` it is the dense
    extended filter.

    Args:
        dynamics: a ``DiagonalDynamics`` with nonzero ``F``, or a function of the
            inputs returning one. (A general ``F`` is not offered: the predicted
            precision :math:`(F \Lambda^{-1} F^\top + Q)^{-1}` needs
            :math:`F^{-1}`, ``state^3``; ``diagonal_filter`` takes a
            ``LinearDynamics``.)
        observation: a ``LinearObservation`` or ``NonlinearObservation``
            (linearised at the predicted mean by one reverse pass per output; ``R``
            positive definite), a ``CategoricalObservation`` (the observation is a
            token id), or a function of the inputs returning one.
        rank: the number of columns of :math:`W` kept (static, >= 1).
        missing: NaN entries of the observations are not observed (default).
        fisher: for a ``CategoricalObservation``, ``"exact"`` or ``"observed"``
            (see :func:`diagonal_filter`).

    Returns:
        A ``Filter`` whose state is a :class:`~kalmanjax.LowRankGaussian`. Its
        ``init`` takes a ``LowRankGaussian`` with ``rank`` columns, or a
        ``DiagonalGaussian`` / ``Gaussian`` / ``SqrtGaussian`` read by its
        (positive) variances, with :math:`W = 0`.

    Raises:
        ValueError: on a ``rank`` that is not a positive integer.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(1e-4))
        >>> obs = kj.NonlinearObservation(
        ...     fn=lambda x, u: jnp.tanh(u["x"] @ x)[None], R=0.1 * jnp.eye(1)
        ... )
        >>> prior = kj.DiagonalGaussian(mean=jnp.zeros(1000), var=jnp.ones(1000))
        >>> xs = {"obs": jnp.ones((5, 1)), "x": jnp.ones((5, 1000)) / 30}
        >>> out = kj.run(kj.low_rank_filter(dyn, obs, rank=4), prior, xs)
        >>> out.final.precision_factor.shape
        (1000, 4)
    """
    owner = "low_rank_filter"
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"{owner}: rank must be a positive int, got {rank!r}")
    _check_fisher(fisher, owner)
    dynamics = _checked_dynamics(dynamics)
    observation = with_checked_covariance(observation)

    def init(prior) -> LowRankGaussian:
        if isinstance(prior, LowRankGaussian):
            check(prior, f"{owner}.init")
            return prior
        var = _prior_variances(prior, owner)
        return LowRankGaussian(
            mean=prior.mean,
            precision_diag=1.0 / var,
            precision_factor=jnp.zeros((var.shape[0], rank), var.dtype),
        )

    def check(belief, where):
        n, dtype = checks.check_mean(belief.mean, where)
        checks.check_array(
            belief.precision_diag,
            "belief.precision_diag",
            (n,),
            dtype,
            "(state,)",
            where,
        )
        checks.check_array(
            belief.precision_factor,
            "belief.precision_factor",
            (n, rank),
            dtype,
            "(state, rank)",
            where,
        )
        return n, dtype

    # the predicted factor stays implicit: the update reads it without forming it
    predict = functools.partial(low_rank_predict, implicit=True)
    steps = (predict, low_rank_update, low_rank_categorical_update)
    step, update = _steps(dynamics, observation, steps, check, missing, fisher, owner)
    return Filter(init=init, step=step, update=update)
