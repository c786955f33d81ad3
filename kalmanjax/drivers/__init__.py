"""Layer 3, drivers: filtering, likelihoods, smoothing, simulation, scale-out."""

from .distributed import batch_map, batch_mesh, shard_batch
from .filtering import log_marginal_likelihood, run
from .simulation import Forecast, Simulation, forecast, simulate
from .smoothing import SmootherResult, kalman_smoother, rts_smoother, sample_posterior

__all__ = [
    "Forecast",
    "Simulation",
    "SmootherResult",
    "batch_map",
    "batch_mesh",
    "forecast",
    "kalman_smoother",
    "log_marginal_likelihood",
    "rts_smoother",
    "run",
    "sample_posterior",
    "shard_batch",
    "simulate",
]
