"""Layer 3, drivers: run a filter over time, likelihoods, smoothers, scale-out."""

from .distributed import batch_map, batch_mesh, shard_batch
from .filtering import log_marginal_likelihood, run
from .smoothing import SmootherResult, kalman_smoother, rts_smoother

__all__ = [
    "SmootherResult",
    "batch_map",
    "batch_mesh",
    "kalman_smoother",
    "log_marginal_likelihood",
    "rts_smoother",
    "run",
    "shard_batch",
]
