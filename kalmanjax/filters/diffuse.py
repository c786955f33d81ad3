r"""The exact diffuse Kalman filter: initial directions of unknown value.

State-space users start directions whose initial value is unknown (a level, a
trend, a regression coefficient) *diffuse*, with infinite prior variance, rather
than with a large finite variance that costs accuracy (in float32, a vague
:math:`P_0 = 10^8 I` puts the covariance update's cancellation at 100% of the
result). The prior here is

.. math::

    x_0 = m_0 + A_0 \beta + u, \qquad u \sim N(0, P_0), \qquad
    \beta \in \mathbb R^{k} \text{ with a flat prior},

with the diffuse directions the ``k`` columns of :math:`A_0`. The augmented filter
(de Jong 1991) runs the ordinary Kalman recursion for :math:`\beta = 0`, whose
covariance stays finite, and carries how the state depends on :math:`\beta`:
:math:`x_t = a_t + A_t \beta + (\text{error with covariance } P_t)`, with

.. math::

    A^-_t = F A_{t-1}, \quad E_t = H A^-_t, \quad A_t = A^-_t - K_t E_t,
    \quad S_t = S_{t-1} + E_t^\top S_{y,t}^{-1} E_t, \quad
    s_t = s_{t-1} + E_t^\top S_{y,t}^{-1} e_t,

where :math:`e_t, S_{y,t}, K_t` are the innovation, its covariance and the gain
of the :math:`\beta = 0` filter. Once :math:`S_t` is definite (the diffuse
directions are identified), :math:`\beta \mid y_{1:t} \sim N(S_t^{-1} s_t,
S_t^{-1})` and :func:`collapse` gives the filtered belief
:math:`N(a_t + A_t S_t^{-1} s_t,\ P_t + A_t S_t^{-1} A_t^\top)`: exactly the limit
:math:`\kappa \to \infty` of the filter with prior covariance
:math:`P_0 + \kappa A_0 A_0^\top`.

The diffuse log-likelihood is :math:`\lim_{\kappa\to\infty} \log p_\kappa(y_{1:T})
+ \tfrac{k}{2}\log\kappa = \sum_t \ell_t - \tfrac12 \log\det S_T + \tfrac12
s_T^\top S_T^{-1} s_T`, with :math:`\ell_t` the :math:`\beta = 0` filter's terms.
Each step reports its share: :math:`\ell_t` plus the change of
:math:`g_t = -\tfrac12 \log\det S_t + \tfrac12 s_t^\top S_t^{-1} s_t`, where
:math:`g_t = 0` until :math:`S_t` is definite, so the sum over the steps is the
diffuse log-likelihood as soon as the directions are identified (before that, a
step's share is not a conditional density).
"""

from __future__ import annotations

from typing import NamedTuple, cast

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core import checks
from ..core.batching import batched, lapack_flops
from ..core.beliefs import Gaussian, to_dense
from ..core.filter import Filter
from ..core.linalg import GENERAL, choose_ops, logdet_from_chol, mT, symmetrize
from ..core.models import (
    DynamicsLike,
    LinearDynamics,
    LinearObservation,
    ObservationLike,
    get_obs,
    resolve,
    with_checked_covariance,
)
from ..steps.linear import linear_predict, linear_update, observation_arrays

__all__ = ["DiffuseBelief", "collapse", "diffuse_kalman_filter"]


class DiffuseBelief(NamedTuple):
    r"""The state of :func:`diffuse_kalman_filter`.

    Attributes:
        belief: :math:`N(a_t, P_t)`, the filter for :math:`\beta = 0`.
        basis: :math:`A_t`, how the state depends on :math:`\beta`,
            ``(state, diffuse)``.
        information: :math:`S_t`, the information about :math:`\beta`,
            ``(diffuse, diffuse)``.
        score: :math:`s_t`, ``(diffuse,)``.
        diffuse_term: :math:`g_t` (0 until :math:`S_t` is definite), ``()``.
    """

    belief: Gaussian
    basis: Float[Array, "state diffuse"]
    information: Float[Array, "diffuse diffuse"]
    score: Float[Array, " diffuse"]
    diffuse_term: Float[Array, ""]


def _identified(information, ops=GENERAL):
    """``(definite, chol)``: whether :math:`S` is numerically definite, its factor."""
    k = information.shape[-1]
    chol = ops.cholesky(information)
    pivots = jnp.diagonal(chol, axis1=-2, axis2=-1) ** 2
    scale = jnp.max(jnp.diagonal(information, axis1=-2, axis2=-1), axis=-1)
    tol = 100 * k * jnp.finfo(information.dtype).eps * scale
    definite = jnp.all(jnp.isfinite(chol), axis=(-2, -1)) & jnp.all(
        pivots > tol[..., None], axis=-1
    )
    return definite, chol


def _collapse_one(state: DiffuseBelief) -> Gaussian:
    definite, chol = _identified(state.information)
    chol = jnp.where(definite, chol, jnp.eye(chol.shape[-1], dtype=chol.dtype))
    A = state.basis
    W = GENERAL.solve_lower(chol, mT(A))  # L^{-1} A^T, so A S^{-1} A^T = W^T W
    w = GENERAL.solve_lower(chol, state.score)
    mean = state.belief.mean + GENERAL.matmul(mT(W), w)
    cov = symmetrize(state.belief.cov + GENERAL.matmul(mT(W), W))
    nan = jnp.asarray(jnp.nan, mean.dtype)
    return Gaussian(
        mean=jnp.where(definite, mean, nan), cov=jnp.where(definite, cov, nan)
    )


def collapse(state: DiffuseBelief) -> Gaussian:
    r"""The filtered belief :math:`N(a + A S^{-1} s,\ P + A S^{-1} A^\top)`.

    Works on one state or a stack over time (``run(...).states``). Where
    :math:`S` is not yet definite the diffuse directions are not identified and
    the mean and covariance are NaN.
    """
    fn = _collapse_one
    k = state.information.shape[-1]
    for _ in range(state.score.ndim - 1):  # one vmap per leading (time, batch) axis
        fn = batched(fn, lapack_flops(k))
    return fn(state)


def diffuse_kalman_filter(
    dynamics: DynamicsLike,
    observation: ObservationLike,
    diffuse: Float[Array, "state diffuse"],
    *,
    missing: bool = True,
    fast: bool | None = None,
) -> Filter:
    r"""The exact diffuse Kalman filter (``diffuse``: directions of infinite variance).

    Args:
        dynamics: as for :func:`kalmanjax.kalman_filter`.
        observation: as for :func:`kalmanjax.kalman_filter`.
        diffuse: :math:`A_0`, shape ``(state, diffuse)``: the directions of
            unknown initial value (e.g. ``jnp.eye(state)[:, :2]`` for the first
            two coordinates).
        missing: NaN observations are missing (see :func:`kalmanjax.kalman_filter`).
        fast: small-state kernels (``None``: chosen from the shapes).

    Returns:
        A ``Filter`` whose ``init(prior)`` takes the proper part
        :math:`N(m_0, P_0)` of the prior (``P_0`` may be zero in the diffuse
        directions) and whose state is a :class:`DiffuseBelief`; :func:`collapse`
        turns states into filtered beliefs, and the infos' ``log_likelihood``
        sums to the diffuse log-likelihood (module docstring; the other info
        fields are those of the :math:`\beta = 0` filter). The covariance update
        is the Joseph form.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> level = kj.LinearDynamics(F=jnp.eye(1), Q=0.1 * jnp.eye(1))
        >>> obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> filt = kj.diffuse_kalman_filter(level, obs, diffuse=jnp.eye(1))
        >>> prior = kj.Gaussian(jnp.zeros(1), jnp.zeros((1, 1)))
        >>> out = kj.run(filt, prior, jnp.array([[3.0], [3.2]]))
        >>> kj.collapse(out.states).mean[0].round(4).tolist()  # the first reading
        [3.0]
    """
    owner = "diffuse_kalman_filter"
    if not hasattr(diffuse, "shape"):
        raise TypeError(f"{owner}: diffuse must be an array, got {type(diffuse)}")
    if diffuse.ndim != 2:
        raise ValueError(
            f"{owner}: diffuse must have shape (state, diffuse), got "
            f"{jnp.shape(diffuse)}"
        )
    if isinstance(dynamics, LinearDynamics):
        n = checks.check_square(dynamics.F, "dynamics.F", owner)
        if diffuse.shape[0] != n:
            raise ValueError(
                f"{owner}: diffuse must have shape (state, diffuse) = ({n}, k), got "
                f"{tuple(diffuse.shape)}"
            )
    if isinstance(observation, LinearObservation):
        checks.check_square(observation.R, "observation.R", owner)
    dynamics = with_checked_covariance(dynamics)  # as kalman_filter reads them
    observation = with_checked_covariance(observation)

    def init(prior) -> DiffuseBelief:
        n, dtype = checks.check_belief(prior, f"{owner}.init")
        checks.check_array(
            diffuse, "diffuse", (n, diffuse.shape[1]), dtype, "(state, diffuse)", owner
        )
        k = diffuse.shape[1]
        return DiffuseBelief(
            belief=to_dense(prior),
            basis=diffuse,
            information=jnp.zeros((k, k), dtype),
            score=jnp.zeros((k,), dtype),
            diffuse_term=jnp.zeros((), dtype),
        )

    def step(state: DiffuseBelief, inputs):
        step_owner = f"{owner}.step"
        n, dtype = checks.check_belief(state.belief, step_owner)
        obs = get_obs(inputs)
        dyn = resolve(dynamics, inputs)
        obs_model = resolve(observation, inputs)
        checks.check_dynamics(dyn, n, dtype, step_owner)
        m = checks.check_observation(obs_model, n, dtype, step_owner)
        checks.check_obs(obs, m, dtype, step_owner)
        ops = choose_ops(fast, n, m)
        predicted = linear_predict(state.belief, dyn, ops, sym=False)
        basis = ops.matmul(dyn.F, state.basis)
        belief, info = linear_update(predicted, obs, obs_model, ops, True, missing)
        _, H, _, _, _ = observation_arrays(obs, obs_model, dtype, missing)
        E = ops.matmul(H, basis)  # (obs, diffuse); zero rows where missing
        # the infos' innovation and its covariance are those of the masked update
        innovation = cast(Array, info.innovation)
        chol_s = ops.cholesky(cast(Array, info.innovation_cov))
        Z = ops.solve_lower(chol_s, E)  # L_S^{-1} E
        z = ops.solve_lower(chol_s, innovation)
        K_E = ops.matmul(
            mT(ops.solve_lower(chol_s, ops.matmul(H, predicted.cov))), Z
        )  # K E = P^- H^T S^{-1} E
        information = symmetrize(state.information + ops.matmul(mT(Z), Z))
        score = state.score + ops.matmul(mT(Z), z)
        # g = -1/2 log det S + 1/2 s^T S^{-1} s once S is definite, else 0
        k = information.shape[0]
        ops_k = choose_ops(fast, k)  # (diffuse, diffuse): small kernels when small
        definite, chol_info = _identified(information, ops_k)
        chol_info = jnp.where(definite, chol_info, jnp.eye(k, dtype=dtype))
        w = ops_k.solve_lower(chol_info, score)
        g = -0.5 * logdet_from_chol(chol_info) + 0.5 * jnp.sum(w * w)
        term = jnp.where(definite, g, 0.0)
        new = DiffuseBelief(
            belief=cast(Gaussian, belief),
            basis=basis - K_E,
            information=information,
            score=score,
            diffuse_term=term.astype(dtype),
        )
        share = info.log_likelihood + term - state.diffuse_term
        return new, info._replace(log_likelihood=share.astype(dtype))

    return Filter(init=init, step=step)
