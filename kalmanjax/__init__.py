"""kalmanjax: Bayesian filtering in JAX as composable pure functions.

The layers: beliefs and models (:class:`Gaussian`, :class:`SqrtGaussian`,
:class:`LinearDynamics`, :class:`LinearObservation`); the math layer
(:func:`predict`, :func:`update`); filters as ``Filter(init, step)`` pairs
(:func:`kalman_filter`, :func:`extended_kalman_filter`); and drivers (:func:`run`,
:func:`log_marginal_likelihood`, :func:`rts_smoother`, :func:`kalman_smoother`). The
degenerate limits (gradient descent, natural gradient, meta-learning, optax bridges)
live in :mod:`kalmanjax.limits`, which needs ``optax`` and is not imported here.
"""

from . import diagnostics
from ._base import (
    Belief,
    Filter,
    FilterResult,
    Gaussian,
    SqrtGaussian,
    UpdateInfo,
    to_dense,
    to_sqrt,
)
from .categorical import CategoricalObservation, categorical_update
from .distributed import batch_map, batch_mesh, shard_batch
from .ekf import (
    NonlinearDynamics,
    NonlinearObservation,
    ekf_predict,
    ekf_update,
    extended_kalman_filter,
)
from .filtering import log_marginal_likelihood, run
from .kalman import FORMS, kalman_filter, predict, update
from .linearize import linearize
from .models import LinearDynamics, LinearObservation, get_obs
from .parallel import parallel_filter, parallel_smoother
from .smoothing import SmootherResult, kalman_smoother, rts_smoother

__version__ = "0.1.0"

__all__ = [
    "FORMS",
    "Belief",
    "CategoricalObservation",
    "Filter",
    "FilterResult",
    "Gaussian",
    "LinearDynamics",
    "LinearObservation",
    "NonlinearDynamics",
    "NonlinearObservation",
    "SmootherResult",
    "SqrtGaussian",
    "UpdateInfo",
    "__version__",
    "batch_map",
    "diagnostics",
    "batch_mesh",
    "categorical_update",
    "ekf_predict",
    "ekf_update",
    "extended_kalman_filter",
    "get_obs",
    "kalman_filter",
    "kalman_smoother",
    "linearize",
    "log_marginal_likelihood",
    "parallel_filter",
    "parallel_smoother",
    "predict",
    "rts_smoother",
    "run",
    "shard_batch",
    "to_dense",
    "to_sqrt",
    "update",
]
