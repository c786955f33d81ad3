"""Layer 0, the atoms: beliefs, models, likelihoods, filter types, linalg, checks.

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
from .likelihoods import (
    ConditionalMomentObservation,
    bernoulli_likelihood,
    categorical_likelihood,
    poisson_likelihood,
    student_t_likelihood,
)
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
    "ConditionalMomentObservation",
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
    "bernoulli_likelihood",
    "categorical_likelihood",
    "get_obs",
    "poisson_likelihood",
    "student_t_likelihood",
    "to_dense",
    "to_sqrt",
    "validate",
]
