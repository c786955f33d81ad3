"""Layer 1, pure steps: predict, update, linearise, backward kernels, elements.

Each function maps a belief (and a model, an observation) to a belief; nothing
here scans over time. The public, checked steps are re-exported by
:mod:`kalmanjax`; the unchecked ones (``linear_update``, ...) are the pieces the
filters layer composes.
"""

from . import resampling
from .categorical import categorical_update
from .linear import FORMS, predict, update
from .linearize import linearize
from .nonlinear import ekf_predict, ekf_update
from .sigma_points import (
    SigmaPointRule,
    cubature,
    gauss_hermite,
    sigma_points,
    statistical_linearize,
    unscented,
)

__all__ = [
    "FORMS",
    "SigmaPointRule",
    "categorical_update",
    "cubature",
    "ekf_predict",
    "ekf_update",
    "gauss_hermite",
    "linearize",
    "predict",
    "resampling",
    "sigma_points",
    "statistical_linearize",
    "unscented",
    "update",
]
