"""Layer 0, the atoms: beliefs, models, filter types, linear algebra, checks, batching.

Parameter constraints (reparametrisations for fitting) are in
:mod:`kalmanjax.core.constraints`, exposed as ``kalmanjax.constraints``.

Nothing here imports another layer. See :mod:`kalmanjax.core.beliefs` for what a
new belief form provides.
"""

from .beliefs import (
    Belief,
    DiagonalGaussian,
    Gaussian,
    LowRankGaussian,
    SqrtGaussian,
    to_dense,
    to_sqrt,
)
from .filter import AssociativeForm, Filter, FilterResult, UpdateInfo
from .models import (
    CategoricalObservation,
    DiagonalDynamics,
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
    get_obs,
)
from .validation import validate

__all__ = [
    "AssociativeForm",
    "Belief",
    "CategoricalObservation",
    "DiagonalDynamics",
    "DiagonalGaussian",
    "Filter",
    "FilterResult",
    "Gaussian",
    "LinearDynamics",
    "LinearObservation",
    "LowRankGaussian",
    "NonlinearDynamics",
    "NonlinearObservation",
    "SqrtGaussian",
    "UpdateInfo",
    "get_obs",
    "to_dense",
    "to_sqrt",
    "validate",
]
