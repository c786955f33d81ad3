"""kalmanjax: Bayesian filtering in JAX as composable pure functions.

The package is layered; each layer imports only the layers below it:

0. :mod:`kalmanjax.core`, the atoms: beliefs (:class:`Gaussian`,
   :class:`SqrtGaussian`), models (:class:`LinearDynamics`, ...), the filter
   types (:class:`Filter`, :class:`AssociativeForm`), linear algebra, checks
   and the batching guard;
1. :mod:`kalmanjax.steps`, pure steps: :func:`predict`, :func:`update`,
   :func:`linearize`, :func:`ekf_update`, :func:`categorical_update`, backward
   kernels, associative elements and their combines;
2. :mod:`kalmanjax.filters`, filter factories: :func:`kalman_filter`,
   :func:`extended_kalman_filter`, :func:`regression_filter`, and for large
   states :func:`diagonal_filter` and :func:`low_rank_filter`;
3. :mod:`kalmanjax.drivers`: :func:`run`, :func:`run_batch`,
   :func:`log_marginal_likelihood`, :func:`rts_smoother`, :func:`kalman_smoother`,
   :func:`iterated_extended_smoother`, :func:`lag_one_covariances`,
   :func:`sample_posterior`, :func:`simulate`, :func:`forecast`, :func:`fit_em`,
   :func:`fit_marginal_likelihood` (with the reparametrisations of
   :mod:`kalmanjax.constraints`), :func:`batch_map`;
4. instruments: :mod:`kalmanjax.diagnostics` (imported here),
   :mod:`kalmanjax.limits` (its optax bridges need ``optax``) and
   :mod:`kalmanjax.nn` (needs ``flax``), not imported here;
5. :mod:`kalmanjax.experiments` and the command line (:mod:`kalmanjax.cli`).

Everything below is re-exported here; this namespace is the public API.
"""

from . import diagnostics
from .core import (
    AssociativeForm,
    Belief,
    CategoricalObservation,
    DiagonalDynamics,
    DiagonalGaussian,
    Filter,
    FilterResult,
    Gaussian,
    LinearDynamics,
    LinearObservation,
    LowRankGaussian,
    NonlinearDynamics,
    NonlinearObservation,
    SqrtGaussian,
    UpdateInfo,
    constraints,
    get_obs,
    to_dense,
    to_sqrt,
    validate,
)
from .drivers import (
    EM_PARAMETERS,
    EMResult,
    Forecast,
    IteratedSmootherResult,
    MarginalLikelihoodFit,
    Simulation,
    SmootherResult,
    batch_map,
    batch_mesh,
    fit_em,
    fit_marginal_likelihood,
    forecast,
    iterated_extended_smoother,
    kalman_smoother,
    lag_one_covariances,
    log_marginal_likelihood,
    rts_smoother,
    run,
    run_batch,
    sample_posterior,
    shard_batch,
    simulate,
)
from .filters import (
    DiffuseBelief,
    collapse,
    diagonal_filter,
    diffuse_kalman_filter,
    extended_kalman_filter,
    kalman_filter,
    low_rank_filter,
    regression_filter,
)
from .steps import (
    FORMS,
    categorical_update,
    ekf_predict,
    ekf_update,
    linearize,
    predict,
    update,
)

__version__ = "0.1.0"

__all__ = [
    "EM_PARAMETERS",
    "FORMS",
    "AssociativeForm",
    "Belief",
    "CategoricalObservation",
    "DiagonalDynamics",
    "DiagonalGaussian",
    "DiffuseBelief",
    "EMResult",
    "Filter",
    "FilterResult",
    "Forecast",
    "Gaussian",
    "IteratedSmootherResult",
    "MarginalLikelihoodFit",
    "LinearDynamics",
    "LinearObservation",
    "LowRankGaussian",
    "NonlinearDynamics",
    "NonlinearObservation",
    "Simulation",
    "SmootherResult",
    "SqrtGaussian",
    "UpdateInfo",
    "__version__",
    "batch_map",
    "batch_mesh",
    "categorical_update",
    "collapse",
    "constraints",
    "diagnostics",
    "diagonal_filter",
    "diffuse_kalman_filter",
    "ekf_predict",
    "ekf_update",
    "extended_kalman_filter",
    "fit_em",
    "fit_marginal_likelihood",
    "forecast",
    "get_obs",
    "iterated_extended_smoother",
    "kalman_filter",
    "kalman_smoother",
    "lag_one_covariances",
    "linearize",
    "log_marginal_likelihood",
    "low_rank_filter",
    "predict",
    "regression_filter",
    "rts_smoother",
    "run",
    "run_batch",
    "sample_posterior",
    "shard_batch",
    "simulate",
    "to_dense",
    "to_sqrt",
    "update",
    "validate",
]
