r"""Statistical linear regression (SLR) of a function under a Gaussian, by cubature.

The second way to linearise, beside the Taylor expansion of
:mod:`kalmanjax.steps.linearize`. For :math:`x \sim N(m, P)` and a function
:math:`g`, the SLR is the affine model :math:`g(x) \approx A x + b + e`,
:math:`e \sim N(0, \Omega)`, that matches the first two moments of
:math:`(x, g(x))`:

.. math::

    \bar g = E[g(x)], \quad \Psi = \operatorname{Cov}(x, g(x)), \quad
    S = \operatorname{Cov}(g(x))

    A = \Psi^\top P^{-1}, \qquad b = \bar g - A m, \qquad
    \Omega = S - A P A^\top.

The expectations are cubature sums over sigma points
:math:`X_i = m + L \xi_i` (:math:`L L^\top = P`) with weights :math:`w_i`; every
rule here has :math:`\sum_i w_i \xi_i = 0` and
:math:`\sum_i w_i \xi_i \xi_i^\top = I`, so with
:math:`C = \sum_i w_i \xi_i (g(X_i) - \bar g)^\top`,

.. math::

    \Psi = L C, \qquad A = C^\top L^{-1}, \qquad A P A^\top = C^\top C, \qquad
    \Omega = S - C^\top C :

one triangular solve, no inverse of :math:`P` (zero pivots of :math:`L`, a
deterministic direction, are skipped). A filter that predicts and conditions with
``(A, b, Q + Omega)`` and ``(A, b, R + Omega)`` is the unscented, cubature or
Gauss-Hermite Kalman filter (Sarkka 2013, ch. 5-6); linearised about the
posterior instead of the prior, iterated posterior linearisation
(Garcia-Fernandez et al. 2015). On an affine :math:`g` every rule is exact:
:math:`A` is its matrix and :math:`\Omega = 0`.

The rules (unit points :math:`\xi_i` for a state of size :math:`n`):

* :func:`unscented` (``alpha``, ``beta``, ``kappa``): :math:`2n + 1` points,
  :math:`0` and :math:`\pm\sqrt{n + \lambda}\, e_j` with
  :math:`\lambda = \alpha^2 (n + \kappa) - n`; mean weights
  :math:`\lambda / (n + \lambda)` and :math:`1 / (2(n + \lambda))`, covariance
  weight at the centre :math:`\lambda / (n + \lambda) + 1 - \alpha^2 + \beta`.
* :func:`cubature`: the third-order spherical-radial rule, :math:`2n` points
  :math:`\pm\sqrt n\, e_j`, weights :math:`1 / (2n)`.
* :func:`gauss_hermite` (``order`` :math:`p`): the tensor product of the
  :math:`p`-point Gauss-Hermite rule, :math:`p^n` points, exact for polynomials
  of degree :math:`2p - 1` in each coordinate.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.linalg import GENERAL, LinalgOps, mT, skip_zero_pivots, symmetrize

__all__ = [
    "SigmaPointRule",
    "cubature",
    "default_rule",
    "expectation",
    "gauss_hermite",
    "sigma_points",
    "slr",
    "statistical_linearize",
    "unscented",
]

#: the most points :func:`gauss_hermite` builds (``order ** state``)
MAX_POINTS = 1 << 16


@dataclasses.dataclass(frozen=True)
class SigmaPointRule:
    """A cubature rule for Gaussian expectations (hashable: a static argument).

    Build one with :func:`unscented`, :func:`cubature` or :func:`gauss_hermite`;
    :meth:`unit_points` gives its points and weights for a standard normal.
    """

    name: str
    alpha: float = 1.0
    beta: float = 0.0
    kappa: float = 0.0
    order: int = 0

    def unit_points(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""``(xi, mean_weights, cov_weights)`` for :math:`N(0, I_n)` (float64).

        ``xi`` is ``(points, n)``; the weights ``(points,)``.
        """
        if self.name == "unscented":
            lam = self.alpha**2 * (n + self.kappa) - n
            scale = math.sqrt(n + lam)
            eye = np.eye(n)
            xi = np.concatenate([np.zeros((1, n)), scale * eye, -scale * eye])
            wm = np.full(2 * n + 1, 0.5 / (n + lam))
            wm[0] = lam / (n + lam)
            wc = wm.copy()
            wc[0] += 1.0 - self.alpha**2 + self.beta
            return xi, wm, wc
        if self.name == "cubature":
            eye = np.eye(n)
            xi = math.sqrt(n) * np.concatenate([eye, -eye])
            w = np.full(2 * n, 0.5 / n)
            return xi, w, w
        if self.name != "gauss_hermite" or self.order < 1:
            raise ValueError(
                f"SigmaPointRule: unknown rule {self!r}; build one with "
                "kj.unscented(), kj.cubature() or kj.gauss_hermite(order)"
            )
        nodes, weights = np.polynomial.hermite_e.hermegauss(self.order)
        weights = weights / weights.sum()
        grids = np.meshgrid(*([nodes] * n), indexing="ij")
        xi = np.stack([g.reshape(-1) for g in grids], axis=1)
        w = np.ones(1)
        for _ in range(n):
            w = np.outer(w, weights).reshape(-1)
        return xi, w, w


def unscented(
    alpha: float | int = math.sqrt(3.0),
    beta: float | int = 2.0,
    kappa: float | int = 1.0,
) -> SigmaPointRule:
    r"""The unscented transform's :math:`2n + 1` points (see the module docstring).

    The defaults (:math:`\alpha = \sqrt3, \beta = 2, \kappa = 1`) are dynamax's;
    they keep every weight positive. A small :math:`\alpha` (1e-3, Wan & van der
    Merwe) gives a large negative centre weight and an :math:`\Omega` that may
    be indefinite.

    Raises:
        ValueError: if ``alpha`` is not positive (and, where the rule is used,
            if :math:`\alpha^2 (n + \kappa) \le 0` for the state size).
    """
    if not alpha > 0:
        raise ValueError(f"unscented: alpha must be positive, got {alpha}")
    return SigmaPointRule(
        "unscented", alpha=float(alpha), beta=float(beta), kappa=float(kappa)
    )


def cubature() -> SigmaPointRule:
    """The third-order spherical-radial cubature rule (the CKF's): ``2n`` points."""
    return SigmaPointRule("cubature")


def gauss_hermite(order: int = 3) -> SigmaPointRule:
    """The tensor Gauss-Hermite rule with ``order`` points per axis (``order ** n``).

    Raises:
        ValueError: if ``order`` is not a positive integer.
    """
    if not isinstance(order, int) or isinstance(order, bool) or order < 1:
        raise ValueError(f"gauss_hermite: order must be a positive int, got {order!r}")
    return SigmaPointRule("gauss_hermite", order=order)


def default_rule(rule: Any, owner: str) -> SigmaPointRule:
    """``rule``, or :func:`unscented` for ``None``; refuses anything else.

    Raises:
        ValueError: if ``rule`` is not a :class:`SigmaPointRule`.
    """
    rule = unscented() if rule is None else rule
    if not isinstance(rule, SigmaPointRule):
        raise ValueError(
            f"{owner}: rule must be a SigmaPointRule (kj.unscented(), kj.cubature(), "
            f"kj.gauss_hermite(order)), got {rule!r}"
        )
    return rule


def _check_size(rule: SigmaPointRule, n: int, owner: str) -> None:
    if rule.name == "unscented" and not rule.alpha**2 * (n + rule.kappa) > 0:
        raise ValueError(
            f"{owner}: the unscented rule needs alpha^2 (state + kappa) > 0, got "
            f"alpha={rule.alpha}, kappa={rule.kappa}, state={n}"
        )
    if rule.name == "gauss_hermite" and rule.order**n > MAX_POINTS:
        raise ValueError(
            f"{owner}: gauss_hermite(order={rule.order}) at state={n} has "
            f"{rule.order}**{n} points, more than {MAX_POINTS}; use a lower order, "
            "cubature() or unscented()"
        )


def _factor(belief: Gaussian | SqrtGaussian, ops: LinalgOps) -> Array:
    if isinstance(belief, SqrtGaussian):
        return belief.chol
    return ops.psd_cholesky(symmetrize(belief.cov))


def sigma_points(
    belief: Gaussian | SqrtGaussian, rule: SigmaPointRule
) -> tuple[Array, Array, Array]:
    r"""The points :math:`X_i = m + L \xi_i` and weights of ``rule`` for ``belief``.

    Returns:
        ``(points, mean_weights, cov_weights)``: ``(K, state)``, ``(K,)``,
        ``(K,)`` in the belief's dtype.
    """
    n, dtype = belief.mean.shape[0], belief.mean.dtype
    _check_size(rule, n, "sigma_points")
    xi, wm, wc = (jnp.asarray(a, dtype) for a in rule.unit_points(n))
    L = _factor(belief, GENERAL)
    return belief.mean[None] + xi @ mT(L), wm, wc


def slr(
    fn: Callable[[Array], Array],
    belief: Gaussian | SqrtGaussian,
    rule: SigmaPointRule,
    ops: LinalgOps,
    owner: str = "statistical_linearize",
) -> tuple[Array, Array, Array]:
    """:func:`statistical_linearize` of ``fn(x)``, ``ops`` chosen by the caller."""
    n, dtype = belief.mean.shape[0], belief.mean.dtype
    _check_size(rule, n, owner)
    xi, wm, wc = (jnp.asarray(a, dtype) for a in rule.unit_points(n))
    L = _factor(belief, ops)
    values = jax.vmap(fn)(belief.mean[None] + xi @ mT(L))  # (K, out)
    mean = wm @ values
    centred = values - mean[None]
    C = mT(xi * wm[:, None]) @ centred  # (state, out); wm = wc off the centre
    S = mT(centred * wc[:, None]) @ centred
    omega = symmetrize(S - mT(C) @ C)
    chol, rhs = skip_zero_pivots(L, C)
    A = mT(ops.solve_lower_t(chol, rhs))  # C^T L^{-1}
    return mean, A, omega


def expectation(
    fn: Callable[[Array], Array],
    belief: Gaussian | SqrtGaussian,
    rule: SigmaPointRule,
    ops: LinalgOps,
) -> Array:
    r""":math:`E[g(x)] \approx \sum_i w_i g(X_i)` under ``belief`` (any shape).

    With the mean weights :math:`w_i`: for an unscented rule with a small
    :math:`\alpha` the centre weight is negative, and the expectation of a PSD
    ``g`` need not be PSD (the defaults keep every weight positive).
    """
    n, dtype = belief.mean.shape[0], belief.mean.dtype
    xi, wm, _ = (jnp.asarray(a, dtype) for a in rule.unit_points(n))
    values = jax.vmap(fn)(belief.mean[None] + xi @ mT(_factor(belief, ops)))
    return jnp.tensordot(wm, values, axes=1)


def statistical_linearize(
    fn: Callable[..., Array],
    belief: Gaussian | SqrtGaussian,
    *args: Any,
    rule: SigmaPointRule | None = None,
) -> tuple[Array, Array, Array]:
    r"""The statistical linear regression of ``fn(x, *args)`` for ``x ~ belief``.

    Args:
        fn: a function ``(state,) -> (out,)`` of ``x`` (and of ``args``, fixed).
        belief: ``Gaussian`` or ``SqrtGaussian``, mean ``(state,)``.
        *args: further arguments of ``fn``.
        rule: the cubature rule (default :func:`cubature`).

    Returns:
        ``(mean, A, omega)``: :math:`\bar g = E[g(x)]` ``(out,)``, the SLR matrix
        :math:`A` ``(out, state)`` and the residual covariance :math:`\Omega`
        ``(out, out)``; the affine model predicts
        :math:`\bar g + A (x - m)`.

    Raises:
        ValueError: on a rule that does not fit the state size.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> belief = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> mean, A, omega = kj.statistical_linearize(
        ...     lambda x: x**2, belief, rule=kj.gauss_hermite(3))
        >>> [round(float(v), 6) for v in (mean[0], A[0, 0], omega[0, 0])]
        [1.0, 0.0, 2.0]
    """
    return slr(lambda x: fn(x, *args), belief, rule or cubature(), GENERAL)
