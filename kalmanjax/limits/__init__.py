r"""Degenerate limits of the filter: gradient descent, natural gradient, meta-learning.

Claim 6 of docs/theory.md ("gradient descent, natural gradient and meta-learning
updates are singular, noise-free limits of the filter") made runnable. Each limit
is a property of the *core* filter (the EKF update of
:mod:`kalmanjax.steps.nonlinear` on an observation ``h(theta, inputs)``, linearised
by ``jax.jacfwd`` with the library's one convention), shown by taking its parameters
along a path; a ``*_gap_path`` function returns the distance to the limit along
that path, and :func:`loglog_slope` measures its order.

Each of the limits in docs/theory.md and where it lives:

* Gradient descent (frozen :math:`\sigma^2 I`, :math:`R = rI`,
  :math:`\sigma^2|J|^2/r \to 0` at :math:`\eta = \sigma^2/r`):
  :func:`frozen_covariance_filter` (the path) -> :func:`gd_limit_filter` (the
  limit, O(k)); the gap to ``optax.sgd`` along the path: :func:`gd_gap_path`
  (relative gap of order 1 in :math:`\eta|J|^2`). Module
  :mod:`~kalmanjax.limits.gradient_descent`.
* Noise-free projection (:math:`R \to 0`): :func:`projection_filter` (Kaczmarz /
  normalised LMS when frozen; cumulatively the minimum-norm interpolant with a
  singular covariance); :func:`projection_gap_path` (order 1 in :math:`r`).
  Module :mod:`~kalmanjax.limits.projection`.
* Natural gradient (:math:`Q = 0`): :func:`natural_gradient_filter` (an exact
  identity with online NGD); :func:`fixed_natural_gradient_filter` and
  :func:`natural_gradient_gap_path` (frozen preconditioner, order 1). Module
  :mod:`~kalmanjax.limits.natural_gradient`.
* Meta-learning: :func:`fit_meta_prior` (type-II maximum likelihood of
  :math:`(m_0, \Sigma_0, Q, R)` with optax), :func:`adapt` (a GD-limit step from
  :math:`m_0`: the MAML inner step), :func:`meta_sgd_learning_rates` (diagonal
  :math:`\Sigma_0 / r`: Meta-SGD). Module :mod:`~kalmanjax.limits.meta_learning`.
* optax bridges: :func:`gd_limit_transformation`,
  :func:`natural_gradient_transformation`, :func:`frozen_filter_transformation`,
  :func:`kalman_transformation`, :func:`precondition`. Module
  :mod:`~kalmanjax.limits.optax_bridge`.

Conventions: ``h(theta, inputs) -> (obs,)`` is the observation function, called
per step on that step's slice of ``xs`` (observation under ``xs["obs"]``); the
filters are static (:math:`F = I`), the state a flat vector.

The filters and the meta-learning likelihood import without ``optax``. The names
that need it (the optax bridges, the gap paths measured against ``optax.sgd``,
:func:`fit_meta_prior`) are imported on first access from
:mod:`~kalmanjax.limits.optax_bridge`, :mod:`~kalmanjax.limits.gaps` and
:mod:`~kalmanjax.limits.meta_fit`; without optax that access raises an
``ImportError`` naming the extra to install (``kalmanjax[experiments]``).
"""

from typing import TYPE_CHECKING, Any

from ..diagnostics.contraction import loglog_slope
from .gradient_descent import LimitInfo, frozen_covariance_filter, gd_limit_filter
from .meta_learning import (
    MetaParams,
    adapt,
    init_meta_params,
    meta_log_likelihood,
    meta_prior,
    meta_sgd_learning_rates,
)
from .natural_gradient import fixed_natural_gradient_filter, natural_gradient_filter
from .projection import projection_filter

if TYPE_CHECKING:  # for type checkers; at run time __getattr__ imports them
    from .gaps import (
        GapPath,
        gd_gap_path,
        natural_gradient_gap_path,
        projection_gap_path,
    )
    from .meta_fit import MetaFit, fit_meta_prior
    from .optax_bridge import (
        KalmanTransformationState,
        NaturalGradientState,
        frozen_filter_transformation,
        gd_limit_transformation,
        kalman_transformation,
        natural_gradient_transformation,
        precondition,
    )

#: name -> the submodule that holds it, for the names that need optax
_NEEDS_OPTAX = {
    "GapPath": "gaps",
    "gd_gap_path": "gaps",
    "natural_gradient_gap_path": "gaps",
    "projection_gap_path": "gaps",
    "MetaFit": "meta_fit",
    "fit_meta_prior": "meta_fit",
    "KalmanTransformationState": "optax_bridge",
    "NaturalGradientState": "optax_bridge",
    "frozen_filter_transformation": "optax_bridge",
    "gd_limit_transformation": "optax_bridge",
    "kalman_transformation": "optax_bridge",
    "natural_gradient_transformation": "optax_bridge",
    "precondition": "optax_bridge",
}


def __getattr__(name: str) -> Any:
    """Import the optax-dependent names on first access (PEP 562)."""
    where = _NEEDS_OPTAX.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        if where == "gaps":
            from . import gaps as module
        elif where == "meta_fit":
            from . import meta_fit as module
        else:
            from . import optax_bridge as module
    except ModuleNotFoundError as err:
        if err.name != "optax":
            raise
        raise ImportError(
            f"kalmanjax.limits.{name} needs optax: pip install 'kalmanjax[experiments]'"
        ) from err
    return getattr(module, name)


def __dir__() -> list[str]:
    """Every public name, the lazily imported ones included."""
    return sorted(__all__)


__all__ = [
    "GapPath",
    "KalmanTransformationState",
    "LimitInfo",
    "MetaFit",
    "MetaParams",
    "NaturalGradientState",
    "adapt",
    "fit_meta_prior",
    "fixed_natural_gradient_filter",
    "frozen_covariance_filter",
    "frozen_filter_transformation",
    "gd_gap_path",
    "gd_limit_filter",
    "gd_limit_transformation",
    "init_meta_params",
    "kalman_transformation",
    "loglog_slope",
    "meta_log_likelihood",
    "meta_prior",
    "meta_sgd_learning_rates",
    "natural_gradient_filter",
    "natural_gradient_gap_path",
    "natural_gradient_transformation",
    "precondition",
    "projection_filter",
    "projection_gap_path",
]
