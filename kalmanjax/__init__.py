"""kalmanjax: Bayesian filtering in JAX as composable pure functions.

The layers: beliefs and models (:class:`Gaussian`, :class:`SqrtGaussian`,
:class:`LinearDynamics`, :class:`LinearObservation`); the math layer
(:func:`predict`, :func:`update`); filters as ``Filter(init, step)`` pairs
(:func:`kalman_filter`); and drivers (:func:`run`, :func:`log_marginal_likelihood`,
:func:`rts_smoother`, :func:`kalman_smoother`).
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
from .distributed import batch_map, batch_mesh, shard_batch
from .filtering import log_marginal_likelihood, run
from .kalman import FORMS, kalman_filter, predict, update
from .models import LinearDynamics, LinearObservation, get_obs
from .parallel import parallel_filter, parallel_smoother
from .smoothing import SmootherResult, kalman_smoother, rts_smoother

__version__ = "0.1.0"

__all__ = [
    "FORMS",
    "Belief",
    "Filter",
    "FilterResult",
    "Gaussian",
    "LinearDynamics",
    "LinearObservation",
    "SmootherResult",
    "SqrtGaussian",
    "UpdateInfo",
    "__version__",
    "batch_map",
    "diagnostics",
    "batch_mesh",
    "get_obs",
    "kalman_filter",
    "kalman_smoother",
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
