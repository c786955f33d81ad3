"""Layer 3, drivers: filtering, smoothing, simulation, fitting, scale-out."""

from .distributed import batch_map, batch_mesh, shard_batch
from .em import EM_PARAMETERS, EMResult, fit_em
from .filtering import log_marginal_likelihood, run, run_batch
from .fitting import MarginalLikelihoodFit, fit_marginal_likelihood
from .iterated import IteratedSmootherResult, iterated_extended_smoother
from .particle_smoothing import backward_simulation
from .posterior_linearization import (
    PosteriorLinearizationResult,
    iterated_sigma_point_smoother,
)
from .simulation import Forecast, Simulation, forecast, simulate
from .smoothing import (
    SmootherResult,
    kalman_smoother,
    lag_one_covariances,
    rts_smoother,
    sample_posterior,
)

__all__ = [
    "EM_PARAMETERS",
    "EMResult",
    "Forecast",
    "IteratedSmootherResult",
    "MarginalLikelihoodFit",
    "PosteriorLinearizationResult",
    "Simulation",
    "SmootherResult",
    "backward_simulation",
    "batch_map",
    "batch_mesh",
    "fit_em",
    "fit_marginal_likelihood",
    "forecast",
    "iterated_extended_smoother",
    "iterated_sigma_point_smoother",
    "kalman_smoother",
    "lag_one_covariances",
    "log_marginal_likelihood",
    "rts_smoother",
    "run",
    "run_batch",
    "sample_posterior",
    "shard_batch",
    "simulate",
]
