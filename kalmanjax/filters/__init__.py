"""Layer 2, filter factories: ``Filter(init, step)`` pairs built from the steps."""

from .diffuse import DiffuseBelief, collapse, diffuse_kalman_filter
from .extended import extended_kalman_filter
from .kalman import kalman_filter
from .particle import (
    ParticleInfo,
    ParticleState,
    particle_filter,
    particle_moments,
    sample_particles,
)
from .regression import regression_design, regression_filter
from .sigma_point import sigma_point_kalman_filter
from .structured import diagonal_filter, low_rank_filter

__all__ = [
    "DiffuseBelief",
    "ParticleInfo",
    "ParticleState",
    "collapse",
    "diagonal_filter",
    "diffuse_kalman_filter",
    "extended_kalman_filter",
    "kalman_filter",
    "low_rank_filter",
    "particle_filter",
    "particle_moments",
    "regression_design",
    "regression_filter",
    "sample_particles",
    "sigma_point_kalman_filter",
]
