r"""Iterated posterior linearisation: the sigma-point counterpart of the IEKS.

For :math:`x_0 \sim N(m_0, P_0)`, :math:`x_t = f_t(x_{t-1}) + w_t`,
:math:`y_t = h_t(x_t) + v_t`, one iteration takes the current smoothed
marginals :math:`N(m^s_t, P^s_t)`, replaces every nonlinearity by its
statistical linear regression under them (:mod:`kalmanjax.steps.sigma_points`),

.. math::

    f_t(x) \approx A^f_t x + b^f_t + e^f_t,\ e^f_t \sim N(0, \Omega^f_t)
    \ \text{under } N(m^s_{t-1}, P^s_{t-1}), \qquad
    h_t(x) \approx A^h_t x + b^h_t + e^h_t,\ e^h_t \sim N(0, \Omega^h_t)
    \ \text{under } N(m^s_t, P^s_t),

and runs the Kalman filter and RTS smoother on the affine model
:math:`(F, Q, b) = (A^f, Q + \Omega^f, b^f)`, :math:`(H, R, d) = (A^h,
R + \Omega^h, b^h)`; its smoothed marginals are the next iterate (the IPLS,
Garcia-Fernandez, Svensson & Sarkka 2017). Linearising under the posterior
rather than the prior is what makes the iterate better than the sigma-point
smoother it starts from; the fixed point is reached when the marginals used to
linearise are those the linearised model smooths to. With ``parallel=True`` the
filter and smoother of every iteration are the parallel prefix scans (Yaghoobi
et al. 2022). The iteration is undamped, as published.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ..core import checks
from ..core.batching import batched, lapack_flops
from ..core.beliefs import Gaussian, SqrtGaussian, to_dense, to_sqrt
from ..core.likelihoods import ConditionalMomentObservation
from ..core.linalg import GENERAL
from ..core.models import (
    DynamicsLike,
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
    ObservationLike,
    get_obs,
    resolve,
)
from ..core.scan import Parallel
from ..filters.kalman import kalman_filter
from ..filters.sigma_point import sigma_point_kalman_filter
from ..steps.linear import Form
from ..steps.nonlinear import conditional_noise
from ..steps.sigma_points import SigmaPointRule, default_rule, slr
from .filtering import run
from .smoothing import rts_smoother

__all__ = ["PosteriorLinearizationResult", "iterated_sigma_point_smoother"]


class PosteriorLinearizationResult(NamedTuple):
    r"""What :func:`iterated_sigma_point_smoother` returns.

    Attributes:
        filtered: filtered beliefs of the last linearised model, ``t = 1..T``.
        smoothed: its smoothed beliefs, ``t = 1..T``: the IPLS posterior.
        initial: the smoothed belief over :math:`x_0`.
        linearized: the last linearised dynamics, a ``LinearDynamics`` stacked
            over the ``T`` steps (``F (T, state, state)``, ``Q`` with
            :math:`\Omega^f` added, ``b (T, state)``); with ``filtered`` it is
            what :func:`kalmanjax.sample_posterior` needs (``dynamics=lambda u:
            u``, ``xs=linearized``).
        linearized_observations: the last linearised observations, a
            ``LinearObservation`` stacked over the steps (``R`` with
            :math:`\Omega^h` added).
        changes: :math:`\max_t \lVert m^{s,(k)}_t - m^{s,(k-1)}_t\rVert_\infty`
            after each iteration :math:`k`, shape ``(num_iters,)``; it falls to
            rounding at the fixed point.
    """

    filtered: Gaussian | SqrtGaussian
    smoothed: Gaussian | SqrtGaussian
    initial: Gaussian | SqrtGaussian
    linearized: LinearDynamics
    linearized_observations: LinearObservation
    changes: jax.Array


def iterated_sigma_point_smoother(
    dynamics: DynamicsLike | NonlinearDynamics | Any,
    observation: ObservationLike
    | NonlinearObservation
    | ConditionalMomentObservation
    | Any,
    prior: Gaussian | SqrtGaussian,
    xs: Any,
    *,
    rule: SigmaPointRule | None = None,
    num_iters: int = 5,
    parallel: Parallel = False,
    form: Form = "joseph",
) -> PosteriorLinearizationResult:
    r"""The iterated posterior linearisation smoother (IPLS).

    Iteration 0 is the sigma-point filter and RTS smoother with ``rule``
    (:func:`kalmanjax.sigma_point_kalman_filter`, sequential); each of the
    ``num_iters`` iterations then relinearises the whole model under the
    current smoothed marginals (module docstring). Linear models pass through
    exactly, so on a linear model the result is the RTS smoother.

    Args:
        dynamics: ``NonlinearDynamics`` or ``LinearDynamics``, or a function
            ``inputs -> model``.
        observation: ``NonlinearObservation``, ``LinearObservation``, a
            :class:`~kalmanjax.ConditionalMomentObservation`, or a function
            ``inputs -> model``.
        prior: the belief over :math:`x_0`.
        xs: per-step inputs with a leading time axis (see :func:`kalmanjax.run`);
            NaN observations are missing.
        rule: :func:`kalmanjax.unscented` (default), :func:`kalmanjax.cubature`
            or :func:`kalmanjax.gauss_hermite`.
        num_iters: posterior-linearisation iterations after the first pass
            (static, >= 1).
        parallel: the parallel Kalman filter and RTS smoother in every iteration.
        form: ``"joseph"`` (default), ``"dense"`` or ``"sqrt"`` (returns
            ``SqrtGaussian`` beliefs, and draws the sigma points from factors).

    Returns:
        A :class:`PosteriorLinearizationResult`.

    Raises:
        ValueError: on a bad ``rule`` or ``num_iters``, or on model shape
            mismatches.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.NonlinearDynamics(fn=lambda x, u: jnp.sin(x), Q=0.1 * jnp.eye(1))
        >>> obs = kj.NonlinearObservation(fn=lambda x, u: x**3, R=0.1 * jnp.eye(1))
        >>> prior = kj.Gaussian(mean=jnp.ones(1), cov=jnp.eye(1))
        >>> out = kj.iterated_sigma_point_smoother(dyn, obs, prior, jnp.ones((20, 1)))
        >>> out.smoothed.mean.shape, out.changes.shape
        ((20, 1), (5,))
    """
    owner = "iterated_sigma_point_smoother"
    rule = default_rule(rule, owner)
    if not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(
            f"{owner}: num_iters must be an integer >= 1, got {num_iters!r}"
        )
    n, _ = checks.check_belief(to_dense(prior), owner)
    start = to_sqrt(prior) if form == "sqrt" else to_dense(prior)
    ahead = _with_dummy_first(xs)  # slot 0 smooths x_0 with step 1's dynamics

    # iteration 0: the sigma-point filter and smoother (it also checks the model)
    first = sigma_point_kalman_filter(dynamics, observation, rule=rule, form=form)
    filtered = run(first, start, xs).states
    marginals = rts_smoother(
        dynamics, _with_prior(start, filtered), ahead, parallel=parallel, method=rule
    )

    def iterate(about):
        """Filter and smooth the model linearised under the marginals ``about``."""
        lin_dyn, lin_obs = _linearize(dynamics, observation, xs, about, rule, n)
        filt = kalman_filter(lambda u: u["dyn"], lambda u: u["obs_model"], form=form)
        inputs = {"obs": get_obs(xs), "dyn": lin_dyn, "obs_model": lin_obs}
        filtered = run(filt, start, inputs, parallel=parallel).states
        smoothed = rts_smoother(
            lambda u: u,
            _with_prior(start, filtered),
            _with_dummy_first(lin_dyn),
            parallel=parallel,
        )
        return smoothed, filtered, lin_dyn, lin_obs

    def body(about, _):
        smoothed = iterate(about)[0]
        return smoothed, _change(smoothed, about)

    marginals, changes = lax.scan(body, marginals, None, length=num_iters - 1)
    smoothed, filtered, lin_dyn, lin_obs = iterate(marginals)
    changes = jnp.concatenate([changes, _change(smoothed, marginals)[None]])
    return PosteriorLinearizationResult(
        filtered=filtered,
        smoothed=jax.tree_util.tree_map(lambda a: a[1:], smoothed),
        initial=jax.tree_util.tree_map(lambda a: a[0], smoothed),
        linearized=lin_dyn,
        linearized_observations=lin_obs,
        changes=changes,
    )


def _with_prior(prior, filtered):
    """The beliefs over ``x_0..x_T``: ``prior`` stacked before ``filtered``."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a[None], b], axis=0), prior, filtered
    )


def _with_dummy_first(tree):
    """``tree`` with its first time slice repeated in front (an unused slot 0)."""
    return jax.tree_util.tree_map(lambda a: jnp.concatenate([a[:1], a], axis=0), tree)


def _change(new, old):
    return jnp.max(jnp.abs(new.mean - old.mean))


def _linearize(dynamics, observation, xs, marginals, rule, n):
    """Each step's SLR: ``f_t`` under ``marginals[t - 1]``, ``h_t`` under ``[t]``."""
    before = jax.tree_util.tree_map(lambda a: a[:-1], marginals)
    at = jax.tree_util.tree_map(lambda a: a[1:], marginals)

    def one(inputs, prev, here):
        dyn, obs_model = resolve(dynamics, inputs), resolve(observation, inputs)
        if isinstance(dyn, LinearDynamics):
            b = jnp.zeros_like(prev.mean) if dyn.b is None else dyn.b
            lin_dyn = LinearDynamics(F=dyn.F, Q=dyn.Q, b=b)
        else:
            fx, A, omega = slr(lambda x: dyn.fn(x, inputs), prev, rule, GENERAL)
            lin_dyn = LinearDynamics(F=A, Q=dyn.Q + omega, b=fx - A @ prev.mean)
        if isinstance(obs_model, LinearObservation):
            m = obs_model.H.shape[0]
            d = jnp.zeros(m, prev.mean.dtype) if obs_model.d is None else obs_model.d
            lin_obs = LinearObservation(H=obs_model.H, R=obs_model.R, d=d)
        else:
            moments = isinstance(obs_model, ConditionalMomentObservation)
            fn = obs_model.mean if moments else obs_model.fn
            hx, A, omega = slr(lambda x: fn(x, inputs), here, rule, GENERAL)
            noise = (
                conditional_noise(obs_model.cov, here, inputs, rule, GENERAL)
                if moments
                else obs_model.R
            )
            lin_obs = LinearObservation(H=A, R=noise + omega, d=hx - A @ here.mean)
        return lin_dyn, lin_obs

    m = get_obs(xs).shape[-1]
    return batched(one, 2 * lapack_flops(max(n, m)))(xs, before, at)
